import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { type ResponseEvent, ResponseParser } from "./response-parser.ts";

const enc = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

interface Outcome {
  heads: { status: number; framing: unknown; keepAlive: boolean; interim: boolean }[];
  body: string;
  trailers: [string, string][][];
  ends: number;
  error: string | null;
  state: string;
}

function run(methods: string[], chunks: Uint8Array[], eof = true): Outcome {
  const p = new ResponseParser();
  for (const m of methods) p.expect(m);
  const events: ResponseEvent[] = [];
  for (const c of chunks) events.push(...p.feed(c));
  if (eof) events.push(...p.finish());
  const o: Outcome = { heads: [], body: "", trailers: [], ends: 0, error: null, state: "" };
  for (const e of events) {
    if (e.type === "head") {
      const { status, framing, keepAlive, interim } = e.head;
      o.heads.push({ status, framing, keepAlive, interim });
    } else if (e.type === "body") o.body += Buffer.from(e.data).toString("latin1");
    else if (e.type === "trailers") o.trailers.push(e.trailers.toJSON());
    else if (e.type === "end") o.ends++;
    else o.error = e.error.code;
  }
  o.state = p.state;
  return o;
}

const cases: {
  name: string;
  methods: string[];
  raw: string;
  eof?: boolean;
  want: Partial<Outcome>;
}[] = [
  {
    name: "content-length body, keep-alive",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    want: {
      heads: [
        { status: 200, framing: { kind: "length", length: 5 }, keepAlive: true, interim: false },
      ],
      body: "hello",
      ends: 1,
      error: null,
      state: "closed",
    },
  },
  {
    name: "chunked body with trailers",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-Digest: z\r\n\r\n",
    want: { body: "hello", trailers: [[["X-Digest", "z"]]], ends: 1, error: null },
  },
  {
    name: "close-delimited body ends cleanly at EOF",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\n\r\nstream until close",
    want: {
      heads: [{ status: 200, framing: { kind: "close" }, keepAlive: false, interim: false }],
      body: "stream until close",
      ends: 1,
      error: null,
      state: "closed",
    },
  },
  {
    name: "HEAD response has no body despite Content-Length",
    methods: ["HEAD", "GET"],
    raw: "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
    want: {
      heads: [
        { status: 200, framing: { kind: "none" }, keepAlive: true, interim: false },
        { status: 204, framing: { kind: "none" }, keepAlive: true, interim: false },
      ],
      ends: 2,
      error: null,
    },
  },
  {
    name: "304 has no body",
    methods: ["GET"],
    raw: "HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
    want: { ends: 1, body: "", error: null },
  },
  {
    name: "interim 100 then final",
    methods: ["POST"],
    raw: "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\nok",
    want: {
      heads: [
        { status: 100, framing: { kind: "none" }, keepAlive: true, interim: true },
        { status: 201, framing: { kind: "length", length: 2 }, keepAlive: true, interim: false },
      ],
      body: "ok",
      ends: 1,
      error: null,
    },
  },
  {
    name: "status line without reason",
    methods: ["GET"],
    raw: "HTTP/1.1 204\r\n\r\n",
    want: { ends: 1, error: null },
  },
  {
    name: "HTTP/1.0 without keep-alive closes",
    methods: ["GET", "GET"],
    raw: "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx",
    want: {
      heads: [
        { status: 200, framing: { kind: "length", length: 1 }, keepAlive: false, interim: false },
      ],
      ends: 1,
      state: "closed",
    },
  },
  {
    name: "truncated length body",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nhello",
    want: { body: "hello", ends: 0, error: "truncated" },
  },
  {
    name: "truncated chunked body",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
    want: { body: "hel", ends: 0, error: "truncated" },
  },
  {
    name: "truncated before last chunk CRLF",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n",
    want: { ends: 0, error: "truncated" },
  },
  {
    name: "truncated head",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nContent-Le",
    want: { ends: 0, error: "truncated" },
  },
  {
    name: "CL + TE",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    want: { error: "content-length-and-transfer-encoding" },
  },
  {
    name: "duplicate CL",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
    want: { error: "duplicate-content-length" },
  },
  {
    name: "signed CL",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    want: { error: "bad-content-length" },
  },
  {
    name: "obs-fold",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nSet-Cookie: a\r\n b\r\n\r\n",
    want: { error: "obs-fold" },
  },
  {
    name: "bare LF",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\nContent-Length: 0\r\n\r\n",
    want: { error: "bare-lf" },
  },
  {
    name: "TE on 204",
    methods: ["GET"],
    raw: "HTTP/1.1 204 No Content\r\nTransfer-Encoding: chunked\r\n\r\n",
    want: { error: "bad-transfer-encoding" },
  },
  {
    name: "CL on 1xx",
    methods: ["GET"],
    raw: "HTTP/1.1 100 Continue\r\nContent-Length: 3\r\n\r\n",
    want: { error: "bad-content-length" },
  },
  {
    name: "TE not ending in chunked",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nxx",
    want: { error: "bad-transfer-encoding" },
  },
  {
    name: "bad status line",
    methods: ["GET"],
    raw: "HTTP/1.1 2000 OK\r\n\r\n",
    want: { error: "bad-status-line" },
  },
  {
    name: "lower-case version",
    methods: ["GET"],
    raw: "http/1.1 200 OK\r\n\r\n",
    want: { error: "bad-status-line" },
  },
  {
    name: "control byte in reason",
    methods: ["GET"],
    raw: "HTTP/1.1 200 O\x00K\r\n\r\n",
    want: { error: "bad-status-line" },
  },
  {
    name: "response with no request outstanding",
    methods: [],
    raw: "HTTP/1.1 200 OK\r\n\r\n",
    want: { error: "unexpected-data" },
  },
  {
    name: "data after a closing response",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 0\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
    want: { ends: 1, error: "unexpected-data" },
  },
  {
    name: "forbidden trailer",
    methods: ["GET"],
    raw: "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nSet-Cookie: a=b\r\n\r\n",
    want: { error: "forbidden-trailer" },
  },
];

describe("response parser", () => {
  for (const c of cases) {
    test(c.name, () => {
      const got = run(c.methods, [enc(c.raw)], c.eof ?? true);
      expect(got).toMatchObject(c.want);
    });
  }

  test("every error reports status 502", () => {
    const p = new ResponseParser();
    p.expect("GET");
    const [e] = p.feed(enc("HTTP/1.1 200 OK\r\nX : y\r\n\r\n"));
    expect(e).toEqual({
      type: "error",
      error: {
        code: "space-before-colon",
        status: 502,
        reason: "whitespace before a header colon",
      },
    });
  });

  test("101 switches protocols: leftover bytes belong to the tunnel", () => {
    const p = new ResponseParser();
    p.expect("GET");
    const events = p.feed(
      enc(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x02hi",
      ),
    );
    expect(events.map((e) => e.type)).toEqual(["head", "end"]);
    expect(p.state).toBe("detached");
    expect(Buffer.from(p.takeLeftover()).toString("latin1")).toBe("\x81\x02hi");
  });

  test("chunking invariance over all cases (fast-check)", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: cases.length - 1 }),
        fc.array(fc.nat(), { maxLength: 10 }),
        (i, cuts) => {
          const c = cases[i]!;
          const bytes = enc(c.raw);
          const points = [...new Set(cuts.map((x) => x % (bytes.length + 1)))].sort(
            (a, b) => a - b,
          );
          const chunks: Uint8Array[] = [];
          let at = 0;
          for (const p of points) {
            chunks.push(bytes.slice(at, p));
            at = p;
          }
          chunks.push(bytes.slice(at));
          expect(run(c.methods, chunks, c.eof ?? true)).toEqual(
            run(c.methods, [bytes], c.eof ?? true),
          );
        },
      ),
      { numRuns: 500, seed: 7 },
    );
  });
});
