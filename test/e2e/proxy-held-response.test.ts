// End-to-end: small answers of known length are redacted whole and written to the agent with
// their head in one write (framed by Content-Length); larger ones stream (chunked). Either way
// the agent gets exactly the redacted bytes, the connection stays usable, and the audit line
// counts the bytes and redactions the agent actually received.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type tls from "node:tls";
import { InlineScanner } from "../../src/body/inline-scanner.ts";
import { type Harness, harnessLoops, startHarness } from "../support/proxy-harness.ts";
import { openTunnel } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-held-00000000000000000000001";
const REAL = "sk-real-held-9f8e7d6c5b4a39281706f5e4d3";

let h: Harness;
let up: EchoServer;
/** Answers every request with the body it received. */
let mirror: EchoServer;

/** `/answer?bytes=N&plant=K`: N bytes of filler with the real value planted K times. */
function answer(req: Request): Response {
  const url = new URL(req.url);
  const size = Number(url.searchParams.get("bytes") ?? 0);
  const plant = Number(url.searchParams.get("plant") ?? 0);
  const body = Buffer.alloc(size, 0x61);
  for (let i = 0; i < plant; i++)
    body.write(REAL, Math.floor(((i + 0.5) * size) / plant), "latin1");
  return new Response(body, { headers: { "content-type": "application/octet-stream" } });
}

function expected(size: number, plant: number): string {
  const body = Buffer.alloc(size, 0x61);
  for (let i = 0; i < plant; i++)
    body.write(REAL, Math.floor(((i + 0.5) * size) / plant), "latin1");
  return body.toString("latin1").replaceAll(REAL, "[REDACTED]");
}

interface AuditLine {
  path?: string;
  status?: number;
  bytesIn?: number;
  bytesOut?: number;
  redactions?: number;
  decision?: string;
}

function auditFor(path: string): AuditLine[] {
  return h.auditLines.map((l) => JSON.parse(l) as AuditLine).filter((e) => e.path === path);
}

beforeAll(async () => {
  h = await startHarness({
    credentials: [
      {
        name: "svc",
        dummy: DUMMY,
        real: REAL,
        hosts: ["localhost:*"],
        in: ["header:authorization", "body"],
      },
    ],
    allow: ["localhost:*"],
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]), answer);
  mirror = startEchoServer(
    await h.upstreamCa.issue(["localhost"]),
    (_req, r) => new Response(r.body, { headers: { "content-type": "application/octet-stream" } }),
  );
});

afterAll(async () => {
  await mirror?.stop();
  await up?.stop();
  await h?.close();
});

describe("answers held whole and streamed", () => {
  for (const [label, size, plant, framing] of [
    ["a small answer (held whole)", 100_000, 3, "content-length"],
    ["a clean small answer (held whole, nothing to redact)", 20_000, 0, "content-length"],
    ["an answer over the inline limit (streamed)", 600_000, 5, "chunked"],
  ] as const) {
    test(`${label}: redacted bytes, ${framing} framing, audited as received`, async () => {
      const path = `/answer-${size}-${plant}`;
      const r = await h.curl([
        "--data-binary",
        `{"k":"${DUMMY}"}`,
        `https://localhost:${up.port}${path}?bytes=${size}&plant=${plant}`,
      ]);
      expect(r.status).toBe(200);
      const text = r.body.toString("latin1");
      expect(text).not.toContain(REAL);
      expect(text === expected(size, plant)).toBe(true);
      const head = r.headers.toLowerCase();
      if (framing === "content-length") {
        expect(head).toContain(`content-length: ${r.body.length}`);
        expect(head).not.toContain("transfer-encoding");
      } else {
        expect(head).toContain("transfer-encoding: chunked");
      }
      // The audit line follows the last byte written.
      await h.auditWhere((l) => l.path === path);
      expect(auditFor(path)).toEqual([
        expect.objectContaining({
          status: 200,
          decision: "allow",
          bytesIn: `{"k":"${DUMMY}"}`.length,
          bytesOut: r.body.length,
          redactions: plant,
        }),
      ]);
    });
  }

  test("one kept-alive tunnel carries held answers back to back", async () => {
    const sizes = [1000, 2000, 3000];
    const urls = sizes.map(
      (n, i) => `https://localhost:${up.port}/answer-seq-${i}?bytes=${n}&plant=1`,
    );
    const r = await h.curl(urls);
    expect(r.status).toBe(200);
    // The harness keeps the first answer's body (curl's -o names one file); the audit shows
    // all three went out whole on one connection.
    expect(r.body.toString("latin1")).toBe(expected(sizes[0]!, 1));
    await h.auditWhere((l) => String(l.path).startsWith("/answer-seq-"), sizes.length);
    const lines = sizes.map(
      (_, i) => auditFor(`/answer-seq-${i}`)[0] as AuditLine & { conn?: number },
    );
    expect(lines.map((l) => [l.status, l.bytesOut, l.redactions])).toEqual(
      sizes.map((n) => [200, expected(n, 1).length, 1]),
    );
    expect(lines[0]!.conn).toBeNumber();
    expect(new Set(lines.map((l) => l.conn)).size).toBe(1);
  });

  test("HEAD on an answer that would be held keeps its length and sends no body", async () => {
    const r = await h.curl(["-I", `https://localhost:${up.port}/answer-head?bytes=5000&plant=1`]);
    expect(r.status).toBe(200);
    // With -I curl prints the head as its output: the length is announced, no body follows.
    const out = r.body.toString("latin1").toLowerCase();
    expect(out).toContain("content-length: 5000");
    expect(out).not.toContain("aaaa");
  });
});

/** One request on a kept-alive tunnel; resolves with the answer's status and body. */
function roundTrip(
  s: tls.TLSSocket,
  path: string,
  body: Uint8Array,
): Promise<{ status: number; body: Buffer }> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const head = buf.subarray(0, end).toString("latin1");
      const length = Number(/content-length: *(\d+)/i.exec(head)?.[1] ?? Number.NaN);
      if (buf.length < end + 4 + length) return;
      s.off("data", onData);
      s.off("error", reject);
      resolve({
        status: Number(head.split(" ")[1]),
        body: buf.subarray(end + 4, end + 4 + length),
      });
    };
    s.on("data", onData);
    s.once("error", reject);
    s.write(
      `POST ${path} HTTP/1.1\r\nHost: localhost:${mirror.port}\r\nContent-Length: ${body.length}\r\n\r\n`,
    );
    s.write(body);
  });
}

describe("held bodies reuse their buffers", () => {
  test("many agents at once, back to back: each gets exactly its own bytes, swapped out and redacted back", async () => {
    // The proxy reuses the buffers that hold small bodies. Twelve tunnels each send four 100 KB
    // bodies at once — more held bodies in flight than the free lists keep, so buffers are
    // handed from one exchange to the next all the time — each filled with its own byte and
    // carrying the dummy at its own place. The mirror upstream sends each body back: the
    // request held whole (swap: a longer real value), the answer held whole (redaction: a
    // shorter output). A buffer reused while a write still read it, or zeroed too early,
    // would show up as another agent's bytes or as zeros in somebody's answer.
    const TUNNELS = 12;
    const ROUNDS = 4;
    const tunnels = await Promise.all(
      Array.from({ length: TUNNELS }, () =>
        openTunnel(
          { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"] },
          { connect: `localhost:${mirror.port}` },
        ),
      ),
    );
    try {
      await Promise.all(
        tunnels.map(async (s, t) => {
          for (let round = 0; round < ROUNDS; round++) {
            const fill = 0x41 + ((t * ROUNDS + round) % 26);
            const body = Buffer.alloc(100_000, fill);
            const at = 1000 + ((t * 7919 + round * 104_729) % 90_000);
            body.write(DUMMY, at, "latin1");
            const r = await roundTrip(s, `/mirror-${t}-${round}`, body);
            expect(r.status).toBe(200);
            const want = Buffer.concat([
              body.subarray(0, at),
              Buffer.from("[REDACTED]"),
              body.subarray(at + DUMMY.length),
            ]);
            expect(r.body.equals(want)).toBe(true);
          }
        }),
      );
    } finally {
      for (const s of tunnels) s.destroy();
    }
    // The upstream got each body with the real value in place of the dummy, intact.
    const got = mirror.received.filter((r) => r.target.startsWith("/mirror-"));
    expect(got.length).toBe(TUNNELS * ROUNDS);
    for (const r of got) {
      const [t, round] = r.target.slice("/mirror-".length).split("-").map(Number) as [
        number,
        number,
      ];
      const fill = 0x41 + ((t * ROUNDS + round) % 26);
      const at = 1000 + ((t * 7919 + round * 104_729) % 90_000);
      const text = Buffer.from(r.body).toString("latin1");
      expect(text.length).toBe(100_000 - DUMMY.length + REAL.length);
      expect(text.slice(at, at + REAL.length)).toBe(REAL);
      const rest = Buffer.from(text.replace(REAL, ""), "latin1");
      expect(rest.equals(Buffer.alloc(100_000 - DUMMY.length, fill))).toBe(true);
    }
  });
});

// Fault injection reaches only a loop in this thread: the one-loop pass runs it.
test.skipIf(harnessLoops() > 1)(
  "a request body whose scan fails is wiped, and the agent gets an error",
  async () => {
    // Fault injection: the proxy runs in this process, so the next swap pass over a held body
    // fails. The body it was given (the agent's bytes) must not stay behind in memory.
    const original = InlineScanner.prototype.rewrite;
    let given: Uint8Array | null = null;
    InlineScanner.prototype.rewrite = function (this: InlineScanner, name, specs, input, alloc) {
      if (given === null && name.startsWith("swap:")) {
        given = input;
        throw new Error("injected scan failure");
      }
      return original.call(this, name, specs, input, alloc);
    };
    try {
      const r = await h.curl([
        "--data-binary",
        `{"k":"${DUMMY}","pad":"${"p".repeat(5000)}"}`,
        `https://localhost:${mirror.port}/scan-fails`,
      ]);
      expect(r.status).toBeGreaterThanOrEqual(500);
      expect(given).not.toBeNull();
      expect(given!.length).toBeGreaterThan(5000);
      expect(given!.every((x) => x === 0)).toBe(true);
      expect(mirror.received.some((x) => x.target === "/scan-fails")).toBe(false);
    } finally {
      InlineScanner.prototype.rewrite = original;
    }
  },
);
