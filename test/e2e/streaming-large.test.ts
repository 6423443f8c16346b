// End-to-end: 256 MiB bodies through the real proxy running as its own process (`bun
// src/main.ts`), curl as the agent, a loopback upstream that generates and consumes the bytes
// on the fly. Credentials are configured, so every byte passes the redactor (downloads) or
// DLP plus the swap (uploads), and markers planted across chunk and record boundaries prove
// the scanners really ran. Both ends are compared by SHA-256 — the test never holds a body —
// and the proxy's RSS is sampled from /proc during each transfer: it must stay bounded
// (a memory bound, not a timing threshold).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { curlTransfer } from "../support/curl-transfer.ts";
import {
  type ProxyProcess,
  startProxyProcess,
  streamingRssBound,
} from "../support/proxy-process.ts";
import { digestOf, plantedCount, type StreamSpec } from "../support/stream-source.ts";
import {
  type StreamUpstream,
  startStreamUpstream,
  type UploadReport,
} from "../support/stream-upstream.ts";

const DUMMY = "sk-dummy-stream-000000000000000000001";
const REAL = "sk-real-stream-9f8e7d6c5b4a39281706f5e4d3c2";
const SIZE = 256 * 1024 * 1024;

let proxy: ProxyProcess;
let up: StreamUpstream;

beforeAll(async () => {
  proxy = await startProxyProcess({
    credentials: [
      {
        name: "stream",
        dummy: DUMMY,
        real: REAL,
        hosts: ["localhost:*"],
        in: ["header:authorization", "body"],
      },
    ],
  });
  up = startStreamUpstream({
    cert: await proxy.upstreamCa.issue(["localhost", "127.0.0.1"]),
    plantText: REAL,
    plantEvery: 1 << 20,
  });
});

afterAll(async () => {
  await up?.stop();
  await proxy?.close();
});

/** Let the proxy settle (GC, freed buffers) so one transfer's garbage is not the next one's. */
async function settle(): Promise<void> {
  await Bun.sleep(500);
}

describe("256 MiB bodies stream through the proxy byte-exact with bounded memory", () => {
  test("download: every planted real value is redacted, the rest arrives unchanged", async () => {
    const spec = up.spec(SIZE, true);
    expect(plantedCount(spec)).toBeGreaterThan(200);
    const expected = digestOf(spec, "[REDACTED]");
    const r = await curlTransfer(proxy, [
      `https://localhost:${up.port}/download?bytes=${SIZE}&plant=1`,
    ]);
    expect({ exit: r.exit, stderr: r.stderr }).toEqual({ exit: 0, stderr: "" });
    const shrink = (REAL.length - "[REDACTED]".length) * plantedCount(spec);
    expect(r.bytes).toBe(SIZE - shrink);
    expect(r.sha256).toBe(expected);
    expect(r.peakRss).toBeLessThan(streamingRssBound(proxy.loops));
  }, 90_000);

  test("chunked upload to the bound host: every planted dummy arrives as the real value", async () => {
    await settle();
    const spec: StreamSpec = { totalBytes: SIZE, plant: { text: DUMMY, every: 1 << 20 } };
    const expected = digestOf(spec, REAL);
    const r = await curlTransfer(proxy, ["-T", "-", `https://localhost:${up.port}/upload`], spec);
    expect({ exit: r.exit, stderr: r.stderr }).toEqual({ exit: 0, stderr: "" });
    const report = JSON.parse(r.text) as UploadReport;
    const grow = (REAL.length - DUMMY.length) * plantedCount(spec);
    expect(report).toEqual({
      bytes: SIZE + grow,
      sha256: expected,
      contentLength: null,
      transferEncoding: "chunked",
    });
    expect(r.peakRss).toBeLessThan(streamingRssBound(proxy.loops));
  }, 90_000);

  test("Content-Length upload to an unbound host: DLP-scanned, byte-exact, length kept", async () => {
    await settle();
    // 127.0.0.1 is not bound to the credential: the dummy stays a dummy, DLP still scans.
    const spec: StreamSpec = { totalBytes: SIZE, plant: { text: DUMMY, every: 1 << 20 } };
    const r = await curlTransfer(
      proxy,
      [
        "-T",
        "-",
        "-H",
        `Content-Length: ${SIZE}`,
        "-H",
        "Transfer-Encoding:",
        `https://127.0.0.1:${up.port}/upload`,
      ],
      spec,
    );
    expect({ exit: r.exit, stderr: r.stderr }).toEqual({ exit: 0, stderr: "" });
    const report = JSON.parse(r.text) as UploadReport;
    expect(report).toEqual({
      bytes: SIZE,
      sha256: digestOf(spec),
      contentLength: String(SIZE),
      transferEncoding: null,
    });
    expect(r.peakRss).toBeLessThan(streamingRssBound(proxy.loops));
  }, 90_000);

  test("the audit log saw the redactions and swaps, and no value", () => {
    const requests = proxy.auditLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.evt === "request");
    const spec = up.spec(SIZE, true);
    expect(requests.map((l) => [l.method, l.status, l.decision])).toEqual([
      ["GET", 200, "allow"],
      ["PUT", 200, "allow"],
      ["PUT", 200, "allow"],
    ]);
    expect(requests[0]!.redactions).toBe(plantedCount(spec));
    expect(requests[1]!.swaps).toBe(
      plantedCount({ ...spec, plant: { text: DUMMY, every: 1 << 20 } }),
    );
    expect(requests[1]!.bytesIn).toBe(SIZE);
    const joined = proxy.auditLines.join("\n");
    expect(joined).not.toContain(REAL);
    expect(joined).not.toContain(DUMMY);
  });
});
