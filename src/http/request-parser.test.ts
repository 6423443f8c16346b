import { describe, expect, test } from "bun:test";
import { type RequestEvent, RequestParser, type RequestParserOptions } from "./request-parser.ts";

const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const H = "Host: api.example.com\r\n";

/** Parse everything, then EOF; events as plain data with bodies merged. */
function parse(raw: string, options?: RequestParserOptions) {
  const p = new RequestParser(options);
  const events = [...p.feed(enc(raw)), ...p.finish()];
  return { events: plain(events), state: p.state };
}

function plain(events: RequestEvent[]): unknown[] {
  const out: unknown[] = [];
  for (const e of events) {
    if (e.type === "body") {
      const last = out[out.length - 1] as { type: string; data: string } | undefined;
      const text = Buffer.from(e.data).toString("latin1");
      if (last?.type === "body") last.data += text;
      else out.push({ type: "body", data: text });
    } else if (e.type === "head")
      out.push({ type: "head", ...e.head, headers: e.head.headers.toJSON() });
    else if (e.type === "trailers") out.push({ type: "trailers", trailers: e.trailers.toJSON() });
    else out.push(e);
  }
  return out;
}

describe("request heads", () => {
  const cases: [string, string, Record<string, unknown>][] = [
    [
      "origin-form GET keeps raw names and order",
      `GET /a?b=c HTTP/1.1\r\nhOsT: api.example.com\r\nX-Dup: 1\r\nx-dup: 2\r\n\r\n`,
      {
        type: "head",
        method: "GET",
        target: "/a?b=c",
        targetForm: "origin",
        authority: "api.example.com",
        host: "api.example.com",
        version: "1.1",
        headers: [
          ["hOsT", "api.example.com"],
          ["X-Dup", "1"],
          ["x-dup", "2"],
        ],
        framing: { kind: "none" },
        keepAlive: true,
        expectContinue: false,
        connection: [],
      },
    ],
    [
      "absolute-form takes the authority from the target",
      `GET https://API.example.com:8443/x HTTP/1.1\r\nHost: other.example\r\n\r\n`,
      {
        type: "head",
        method: "GET",
        target: "https://API.example.com:8443/x",
        targetForm: "absolute",
        scheme: "https",
        authority: "API.example.com:8443",
        host: "other.example",
        version: "1.1",
        headers: [["Host", "other.example"]],
        framing: { kind: "none" },
        keepAlive: true,
        expectContinue: false,
        connection: [],
      },
    ],
    [
      "HTTP/1.0 defaults to close; expect ignored on 1.0",
      "POST /u HTTP/1.0\r\nContent-Length: 0\r\nExpect: 100-continue\r\n\r\n",
      {
        type: "head",
        method: "POST",
        target: "/u",
        targetForm: "origin",
        version: "1.0",
        headers: [
          ["Content-Length", "0"],
          ["Expect", "100-continue"],
        ],
        framing: { kind: "length", length: 0 },
        keepAlive: false,
        expectContinue: false,
        connection: [],
      },
    ],
    [
      "Expect, Connection tokens and Upgrade",
      `POST /ws HTTP/1.1\r\n${H}Connection: keep-alive, Upgrade\r\nUpgrade: h2c, websocket/13\r\nExpect: 100-Continue\r\nContent-Length: 0\r\n\r\n`,
      {
        type: "head",
        method: "POST",
        target: "/ws",
        targetForm: "origin",
        authority: "api.example.com",
        host: "api.example.com",
        version: "1.1",
        headers: [
          ["Host", "api.example.com"],
          ["Connection", "keep-alive, Upgrade"],
          ["Upgrade", "h2c, websocket/13"],
          ["Expect", "100-Continue"],
          ["Content-Length", "0"],
        ],
        framing: { kind: "length", length: 0 },
        keepAlive: true,
        expectContinue: true,
        connection: ["keep-alive", "upgrade"],
        upgrade: ["h2c", "websocket/13"],
      },
    ],
  ];
  for (const [name, raw, head] of cases) {
    test(name, () => {
      expect(parse(raw).events[0]).toEqual(head);
    });
  }

  test("Upgrade without Connection: upgrade is not reported", () => {
    const { events } = parse(`GET / HTTP/1.1\r\n${H}Upgrade: websocket\r\n\r\n`);
    expect((events[0] as { upgrade?: unknown }).upgrade).toBeUndefined();
  });
});

describe("bodies", () => {
  test("chunked body, extensions dropped, trailers reported", () => {
    const raw = `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\nX-Sum: 9\r\n\r\n`;
    expect(parse(raw).events.slice(1)).toEqual([
      { type: "body", data: "abcde" },
      { type: "trailers", trailers: [["X-Sum", "9"]] },
      { type: "end" },
    ]);
  });
  test("body chunks are zero-copy views of the input", () => {
    const input = enc(`POST / HTTP/1.1\r\n${H}Content-Length: 4\r\n\r\nbody`);
    const events = new RequestParser().feed(input);
    const body = events.find((e) => e.type === "body") as { data: Uint8Array };
    expect(body.data.buffer).toBe(input.buffer);
  });
});

describe("caps passed as options", () => {
  const cases: [string, string, RequestParserOptions, unknown][] = [
    [
      "request line cap",
      `GET /${"a".repeat(20)} HTTP/1.1\r\n${H}\r\n`,
      { maxRequestLineBytes: 20 },
      { code: "request-line-too-long", status: 414 },
    ],
    [
      "request line exactly at cap",
      `GET /${"a".repeat(5)} HTTP/1.1\r\n${H}\r\n`,
      { maxRequestLineBytes: 21 },
      null,
    ],
    [
      "header bytes cap",
      `GET / HTTP/1.1\r\n${H}X: ${"a".repeat(40)}\r\n\r\n`,
      { maxHeaderBytes: 40 },
      { code: "headers-too-large", status: 431 },
    ],
    [
      "header bytes exactly at cap",
      `GET / HTTP/1.1\r\n${H}\r\n`,
      { maxHeaderBytes: H.length + 2 },
      null,
    ],
    [
      "header count cap",
      `GET / HTTP/1.1\r\n${H}A: 1\r\nB: 2\r\n\r\n`,
      { maxHeaderCount: 2 },
      { code: "too-many-headers", status: 431 },
    ],
    ["header count at cap", `GET / HTTP/1.1\r\n${H}A: 1\r\n\r\n`, { maxHeaderCount: 2 }, null],
    [
      "body cap by length",
      `POST / HTTP/1.1\r\n${H}Content-Length: 11\r\n\r\n`,
      { maxBodyBytes: 10 },
      { code: "body-too-large", status: 413 },
    ],
    [
      "body cap by chunks",
      `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n6\r\nabcdef\r\n5\r\nabcde\r\n`,
      { maxBodyBytes: 10 },
      { code: "body-too-large", status: 413 },
    ],
    [
      "chunk line cap",
      `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n1;abcdefghij\r\n`,
      { maxChunkLineBytes: 8 },
      { code: "chunk-extension-too-long", status: 400 },
    ],
    [
      "trailer section uses the header cap",
      `POST / HTTP/1.1\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\nX: ${"a".repeat(60)}\r\n\r\n`,
      { maxHeaderBytes: 60 },
      { code: "headers-too-large", status: 431 },
    ],
  ];
  for (const [name, raw, opts, want] of cases) {
    test(name, () => {
      const err = parse(raw, opts).events.find((e) => (e as { type: string }).type === "error") as
        | { error: { code: string; status: number } }
        | undefined;
      expect(err ? { code: err.error.code, status: err.error.status } : null).toEqual(
        want as never,
      );
    });
  }
  test("a long request line fails before its end arrives (no unbounded buffering)", () => {
    const p = new RequestParser({ maxRequestLineBytes: 64 });
    expect(p.feed(enc(`GET /${"a".repeat(40)}`))).toEqual([]);
    const events = p.feed(enc("a".repeat(40)));
    expect(events).toEqual([
      {
        type: "error",
        error: { code: "request-line-too-long", status: 414, reason: "request line too long" },
      },
    ]);
  });
});

describe("connection lifecycle", () => {
  test("nothing after Connection: close is parsed", () => {
    const { events, state } = parse(
      `GET / HTTP/1.1\r\n${H}Connection: close\r\n\r\nGET /2 HTTP/1.1\r\n${H}\r\n`,
    );
    expect(events.map((e) => (e as { type: string }).type)).toEqual(["head", "end"]);
    expect(state).toBe("closed");
  });

  test("CONNECT pauses; detach hands over the tunnel bytes", () => {
    const p = new RequestParser();
    const events = p.feed(
      enc("CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n\x16\x03\x01"),
    );
    expect(events.map((e) => e.type)).toEqual(["head", "end"]);
    expect(p.state).toBe("paused");
    expect(p.feed(enc("\x00\x05"))).toEqual([]);
    expect(Array.from(p.detach())).toEqual([0x16, 0x03, 0x01, 0x00, 0x05]);
    expect(p.state).toBe("detached");
    expect(() => p.feed(enc("x"))).toThrow("detached");
  });

  test("refused upgrade: resume parses what was buffered", () => {
    const p = new RequestParser();
    const first = p.feed(
      enc(`GET /ws HTTP/1.1\r\n${H}Connection: upgrade\r\nUpgrade: h2c\r\n\r\nGET /a HT`),
    );
    expect(first.map((e) => e.type)).toEqual(["head", "end"]);
    expect(p.state).toBe("paused");
    expect(p.feed(enc(`TP/1.1\r\n${H}\r\n`))).toEqual([]);
    const resumed = p.resume();
    expect(resumed.map((e) => e.type)).toEqual(["head", "end"]);
    expect((resumed[0] as { head: { target: string } }).head.target).toBe("/a");
    expect(p.state).toBe("idle");
  });

  test("resume/detach outside a pause are API errors", () => {
    const p = new RequestParser();
    expect(() => p.resume()).toThrow("not paused");
    expect(() => p.detach()).toThrow("not paused");
  });

  test("EOF between messages is clean; inside one it is an error", () => {
    const idle = new RequestParser();
    idle.feed(enc(`GET / HTTP/1.1\r\n${H}\r\n`));
    expect(idle.finish()).toEqual([]);
    const mid = new RequestParser();
    mid.feed(enc("GET / HT"));
    expect(plain(mid.finish())).toEqual([
      {
        type: "error",
        error: {
          code: "incomplete-request",
          status: 400,
          reason: "connection closed in the middle of a request",
        },
      },
    ]);
  });

  test("a dead parser stays silent whatever it is fed", () => {
    const p = new RequestParser();
    expect(p.feed(enc("GET / HTTP/1.1\r\nX : y\r\n\r\n")).map((e) => e.type)).toEqual(["error"]);
    expect(p.feed(enc(`GET / HTTP/1.1\r\n${H}\r\n`))).toEqual([]);
    expect(p.finish()).toEqual([]);
    expect(p.state).toBe("dead");
  });
});
