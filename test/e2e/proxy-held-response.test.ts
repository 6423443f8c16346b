// End-to-end: small answers of known length are redacted whole and written to the agent with
// their head in one write (framed by Content-Length); larger ones stream (chunked). Either way
// the agent gets exactly the redacted bytes, the connection stays usable, and the audit line
// counts the bytes and redactions the agent actually received.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-held-00000000000000000000001";
const REAL = "sk-real-held-9f8e7d6c5b4a39281706f5e4d3";

let h: Harness;
let up: EchoServer;

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
    credentials: [{ name: "svc", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] }],
    allow: ["localhost:*"],
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]), answer);
});

afterAll(async () => {
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
      await Bun.sleep(50); // the audit line follows the last byte written
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
    await Bun.sleep(50);
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
