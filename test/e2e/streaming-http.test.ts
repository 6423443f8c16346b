// End-to-end HTTP/1.1 behaviour of the intercepted tunnel with real clients (curl, and a raw
// TLS agent where curl will not misbehave on purpose): chunked uploads, gzip/br responses that
// must be decoded to be redacted, real values cut across upstream writes, many requests on one
// kept-alive tunnel, HEAD/204/304 without bodies, Expect: 100-continue, and pipelined requests
// answered in order.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import zlib from "node:zlib";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { exchangeRaw, openTunnel, readAnswers, readHead } from "../support/raw-agent.ts";
import { createTestCa } from "../support/test-pki.ts";
import { type EchoServer, echoResponse, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-http-0000000000000000000000001";
const REAL = "sk-real-http-9f8e7d6c5b4a39281706f5e4d3c2b1";

let h: Harness;
let up: EchoServer;

/**
 * A body of `size` bytes of pseudo-random letters (compressible about 1.6x, like text, so the
 * decoder's bomb guard does not trip) with REAL every `every` bytes.
 */
function bodyWithReal(size: number, every: number): { text: string; count: number } {
  const letters = "abcdefghijklmnopqrstuvwxyz ";
  let x = 12345;
  const filler = (n: number) => {
    let s = "";
    for (let i = 0; i < n; i++) {
      x = (x * 1103515245 + 12345) >>> 0;
      s += letters[(x >>> 16) % letters.length];
    }
    return s;
  };
  const parts: string[] = [];
  let n = 0;
  let count = 0;
  while (n + every <= size) {
    parts.push(filler(every - REAL.length), REAL);
    n += every;
    count++;
  }
  parts.push(filler(size - n));
  return { text: parts.join(""), count };
}

/** A stream that sends `text` in pieces cut inside every REAL, pausing between writes. */
function cutStream(text: string): ReadableStream<Uint8Array> {
  const enc = new TextEncoder();
  const pieces: string[] = [];
  let at = 0;
  for (;;) {
    const i = text.indexOf(REAL, at);
    if (i < 0) break;
    const cut = i + 7; // inside the value
    pieces.push(text.slice(at, cut));
    at = cut;
  }
  pieces.push(text.slice(at));
  let k = 0;
  return new ReadableStream<Uint8Array>({
    async pull(c) {
      if (k >= pieces.length) {
        c.close();
        return;
      }
      if (k % 16 === 0) await Bun.sleep(1); // separate writes, not one coalesced buffer
      c.enqueue(enc.encode(pieces[k++]!));
    },
  });
}

const LARGE = bodyWithReal(8 * 1024 * 1024, 100_003);

beforeAll(async () => {
  h = await startHarness({
    credentials: [
      {
        name: "http",
        dummy: DUMMY,
        real: REAL,
        hosts: ["localhost:*"],
        in: ["header:authorization", "body"],
      },
    ],
    allow: ["localhost:*", "127.0.0.1:*"],
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost", "127.0.0.1"]), (req, r) => {
    const path = new URL(req.url).pathname;
    const plain = `{"token":"${REAL}","note":"upstream echoes the real value"}`;
    switch (path) {
      case "/gzip":
        return new Response(zlib.gzipSync(plain), {
          headers: { "content-encoding": "gzip", "content-type": "application/json" },
        });
      case "/br":
        return new Response(zlib.brotliCompressSync(plain), {
          headers: { "content-encoding": "br", "content-type": "application/json" },
        });
      case "/large-cut":
        return new Response(cutStream(LARGE.text));
      case "/large-gzip":
        return new Response(zlib.gzipSync(LARGE.text), {
          headers: { "content-encoding": "gzip" },
        });
      case "/head":
        return new Response(req.method === "HEAD" ? null : "twelve bytes", {
          headers: { "content-length": "12", "x-token": REAL },
        });
      case "/204":
        return new Response(null, { status: 204, headers: { "x-token": REAL } });
      case "/304":
        return new Response(null, { status: 304, headers: { etag: '"v1"' } });
      default:
        return echoResponse(req, r);
    }
  });
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

const url = (path: string) => `https://localhost:${up.port}${path}`;

function requestLines(): Record<string, unknown>[] {
  return h.auditLines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.evt === "request");
}

describe("bodies", () => {
  test("a chunked upload is swapped and forwarded chunked", async () => {
    const before = up.received.length;
    const dir = `${h.dir}/upload.txt`;
    await Bun.write(dir, `head ${DUMMY} middle ${DUMMY} tail`);
    const r = await h.curl(["-T", dir, "-H", "Transfer-Encoding: chunked", url("/echo")]);
    expect(r.status).toBe(200);
    const got = up.received[before]!;
    expect(Buffer.from(got.body).toString()).toBe(`head ${REAL} middle ${REAL} tail`);
    expect(got.headers.find(([n]) => n === "transfer-encoding")?.[1]).toBe("chunked");
    expect(r.body.toString()).not.toContain(REAL);
  });

  for (const coding of ["gzip", "br"]) {
    test(`a ${coding} response is decoded, redacted, and sent without its coding`, async () => {
      const r = await h.curl(["-H", `Accept-Encoding: ${coding}`, url(`/${coding}`)]);
      expect(r.status).toBe(200);
      expect(r.headers.toLowerCase()).not.toContain("content-encoding");
      expect(r.body.toString()).toBe(
        '{"token":"[REDACTED]","note":"upstream echoes the real value"}',
      );
    });
  }

  test("real values cut across upstream writes in an 8 MiB body are all redacted", async () => {
    const r = await h.curl([url("/large-cut")]);
    expect(r.status).toBe(200);
    const text = r.body.toString("latin1");
    expect(text).not.toContain(REAL);
    expect(text.split("[REDACTED]").length - 1).toBe(LARGE.count);
    expect(text).toBe(LARGE.text.replaceAll(REAL, "[REDACTED]"));
  });

  test("an 8 MiB gzip body is decoded and every real value redacted", async () => {
    const r = await h.curl(["-H", "Accept-Encoding: gzip", url("/large-gzip")]);
    expect(r.status).toBe(200);
    const text = r.body.toString("latin1");
    expect(text.length).toBe(LARGE.text.length - LARGE.count * (REAL.length - 10));
    expect(text).toBe(LARGE.text.replaceAll(REAL, "[REDACTED]"));
  });
});

describe("one kept-alive tunnel", () => {
  test("twenty requests by one curl share one tunnel and one connection", async () => {
    const tunnelsBefore = h.auditLines.filter((l) => l.includes('"evt":"tunnel"')).length;
    const before = requestLines().length;
    const urls = Array.from({ length: 20 }, (_, i) => url(`/n${i}`));
    const r = await h.curl(urls);
    expect(r.code).toBe(0);
    const tunnels = h.auditLines.filter((l) => l.includes('"evt":"tunnel"')).length;
    expect(tunnels - tunnelsBefore).toBe(1);
    const lines = requestLines().slice(before);
    expect(lines.map((l) => l.path)).toEqual(urls.map((_, i) => `/n${i}`));
    expect(new Set(lines.map((l) => l.conn)).size).toBe(1);
  });
});

describe("raw agent", () => {
  const agent = () => ({ port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! });

  test("HEAD, 204 and 304 carry no body and the tunnel carries the next request", async () => {
    const s = await openTunnel(agent(), { connect: `localhost:${up.port}` });
    const host = `Host: localhost:${up.port}\r\n`;
    const ask = async (line: string, extra = "") =>
      (
        await exchangeRaw(s, `${line} HTTP/1.1\r\n${host}${extra}\r\n`, [line.split(" ")[0]!])
      ).toString("latin1");
    const head = await ask("HEAD /head");
    const noContent = await ask("GET /204");
    const notModified = await ask("GET /304", 'If-None-Match: "v1"\r\n');
    const after = await ask("GET /after");
    s.destroy();
    // Each answer is a head alone (nothing after the blank line), with the upstream's
    // Content-Length kept for HEAD and a redacted header value.
    expect(head).toStartWith("HTTP/1.1 200");
    expect(head.toLowerCase()).toContain("content-length: 12\r\n");
    expect(head).toContain("x-token: [REDACTED]\r\n");
    expect(head).toEndWith("\r\n\r\n");
    expect(noContent).toStartWith("HTTP/1.1 204");
    expect(noContent).toContain("x-token: [REDACTED]\r\n");
    expect(noContent).toEndWith("\r\n\r\n");
    expect(notModified).toStartWith("HTTP/1.1 304");
    expect(notModified).toEndWith("\r\n\r\n");
    expect(after).toStartWith("HTTP/1.1 200");
    expect(after).toContain('"target":"/after"');
    expect([head, noContent, notModified, after].join("")).not.toContain(REAL);
  });

  test("Expect: 100-continue gets 100 before the body is sent, then the answer", async () => {
    const before = up.received.length;
    const s = await openTunnel(agent(), { connect: `localhost:${up.port}` });
    const body = `{"key":"${DUMMY}"}`;
    const interim = readHead(s);
    s.write(
      `POST /expect HTTP/1.1\r\nHost: localhost:${up.port}\r\nContent-Length: ${body.length}\r\nExpect: 100-continue\r\n\r\n`,
    );
    // The proxy asks for the body (and answers nothing else) before it has it.
    expect(await interim).toBe("HTTP/1.1 100 Continue");
    expect(up.received.length).toBe(before);
    const rest = await exchangeRaw(s, body, ["POST"]);
    s.destroy();
    expect(rest.toString("latin1")).toStartWith("HTTP/1.1 200");
    expect(Buffer.from(up.received[before]!.body).toString()).toBe(`{"key":"${REAL}"}`);
  });

  test("pipelined requests are answered in order on one tunnel", async () => {
    const s = await openTunnel(agent(), { connect: `localhost:${up.port}` });
    const host = `localhost:${up.port}`;
    const reqs = ["/p1", "/p2", "/p3", "/p4"]
      .map((p) => `GET ${p} HTTP/1.1\r\nHost: ${host}\r\n\r\n`)
      .join("");
    const reply = readAnswers(s, ["GET", "GET", "GET", "GET", "POST"]);
    s.write(`${reqs}POST /p5 HTTP/1.1\r\nHost: ${host}\r\nContent-Length: 3\r\n\r\nabc`);
    const text = (await reply).toString("latin1");
    s.destroy();
    const statuses = text.match(/HTTP\/1\.1 \d{3}/g) ?? [];
    expect([...statuses]).toEqual(Array<string>(5).fill("HTTP/1.1 200"));
    const order = ["/p1", "/p2", "/p3", "/p4", "/p5"].map((p) => text.indexOf(`"target":"${p}"`));
    expect(order.every((at) => at > 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
  });
});

describe("upstream connections", () => {
  test("requests with bodies reuse the kept-alive upstream connection", async () => {
    const cert = await h.upstreamCa.issue(["localhost"]);
    const ports: number[] = [];
    const bodies: string[] = [];
    using peer = Bun.serve({
      hostname: "127.0.0.1",
      port: 0,
      tls: { cert: cert.certPem, key: cert.keyPem },
      async fetch(req, server) {
        ports.push(server.requestIP(req)?.port ?? 0);
        bodies.push(await req.text());
        return new Response("ok");
      },
    });
    for (let i = 0; i < 5; i++) {
      const r = await h.curl([
        "--data-binary",
        `{"n":${i},"key":"${DUMMY}"}`,
        `https://localhost:${peer.port}/post${i}`,
      ]);
      expect(r.status).toBe(200);
    }
    // Five agent connections, one upstream connection (each event loop keeps its own).
    expect(ports).toHaveLength(5);
    expect(new Set(ports).size).toBeLessThanOrEqual(h.proxy.loops);
    expect(bodies[4]).toBe(`{"n":4,"key":"${REAL}"}`);
  });

  test("an upstream certificate from an untrusted CA is refused with 502", async () => {
    const stranger = await createTestCa("Stranger Root");
    await using other = startEchoServer(await stranger.issue(["localhost"]));
    const r = await h.curl([`https://localhost:${other.port}/`]);
    expect(r.status).toBe(502);
    expect(other.received).toHaveLength(0);
  });
});
