// End-to-end: request-body deadlines through the real proxy with curl as the agent. An upload
// that lasts far longer than the upstream response timeout but keeps flowing must arrive
// whole (the response timeout only starts once the body is sent); an upstream that stops
// reading mid-upload must fail the request within the body idle limit, and the proxy must go
// on serving.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createHash, randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

/** Short enough that every upload below outlasts it many times over. */
const RESPONSE_TIMEOUT_MS = 300;
const BODY_IDLE_MS = 2000;

let h: Harness;
let echo: EchoServer;
/** Takes the TLS handshake and the first bytes of a request, then never reads again. */
let stalled: tls.Server;
let stalledPort: number;
let dir: string;

beforeAll(async () => {
  h = await startHarness({
    env: {
      SLAPENIR_UPSTREAM_RESPONSE_TIMEOUT_MS: String(RESPONSE_TIMEOUT_MS),
      SLAPENIR_BODY_IDLE_TIMEOUT_MS: String(BODY_IDLE_MS),
    },
  });
  const cert = await h.upstreamCa.issue(["localhost", "127.0.0.1"]);
  // Answers with exactly the bytes it received.
  echo = startEchoServer(cert, (_req, r) => new Response(r.body));
  stalled = tls.createServer({ cert: cert.certPem, key: cert.keyPem }, (s) => {
    s.once("data", () => s.pause());
    s.on("error", () => {});
  });
  await new Promise<void>((r) => stalled.listen(0, "127.0.0.1", r));
  stalledPort = (stalled.address() as { port: number }).port;
  dir = await mkdtemp(join(tmpdir(), "slapenir-slow-upload-"));
});

afterAll(async () => {
  stalled?.close();
  await echo?.stop();
  await h?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

describe("slow uploads", () => {
  // Bodies of known length up to 256 KiB are held whole before the upstream is dialled, so
  // the slow leg would be the agent's alone: these bodies stream through instead.
  for (const [framing, size, rate, extra] of [
    ["content-length", 768 * 1024, "384k", []],
    ["chunked", 200 * 1024, "100k", ["-H", "transfer-encoding: chunked"]],
  ] as const) {
    test(`a ${framing} upload slower than the response timeout but still flowing arrives whole`, async () => {
      // About two seconds of sending against a 300 ms response timeout.
      const body = randomBytes(size);
      const path = join(dir, `slow-${framing}.bin`);
      await writeFile(path, body);
      const r = await h.curl([
        "--limit-rate",
        rate,
        "-H",
        "Expect:",
        "-H",
        "content-type: application/octet-stream",
        ...extra,
        "--data-binary",
        `@${path}`,
        `https://localhost:${echo.port}/echo`,
      ]);
      expect({ code: r.code, status: r.status, stderr: r.stderr }).toEqual({
        code: 0,
        status: 200,
        stderr: "",
      });
      expect(r.body.length).toBe(body.length);
      expect(sha(r.body)).toBe(sha(body));
    });
  }

  test("an upstream that stops reading mid-upload fails the request; the proxy serves on", async () => {
    // Far more than the socket buffers between curl, the proxy and the upstream can hold.
    const path = join(dir, "big.bin");
    await writeFile(path, Buffer.alloc(48 * 1024 * 1024, 0x61));
    const r = await h.curl([
      "-X",
      "POST",
      "-H",
      "Expect:",
      "-T",
      path,
      `https://localhost:${stalledPort}/upload`,
    ]);
    // The harness gives curl 20 s; exit 28 would mean the proxy never gave up (limit: 2 s).
    expect(r.code).not.toBe(28);
    expect(r.status === 504 || r.code !== 0).toBe(true);
    if (r.status !== 0) expect(r.status).toBe(504);
    // It was the body idle limit that ended it (not the response timeout, which does not
    // run while the body is still being sent).
    const audit = h.auditLines
      .map((l) => JSON.parse(l) as { path?: string; reason?: string })
      .filter((e) => e.path === "/upload");
    expect(audit.map((e) => e.reason)).toEqual(["upstream stopped reading the request body"]);

    const after = await h.curl(["--data-binary", "still here", `https://localhost:${echo.port}/`]);
    expect({ status: after.status, body: after.body.toString() }).toEqual({
      status: 200,
      body: "still here",
    });
  });
});
