// A loopback HTTPS upstream for streaming tests and benchmarks that never holds a body: it
// generates downloads on the fly (`GET /download?bytes=N[&plant=1][&chunked=1]`, bytes from
// stream-source.ts) and consumes uploads chunk by chunk (`POST|PUT /upload[?hash=0]`), answering
// with the byte count and SHA-256 it saw. `GET|POST /echo-size?bytes=N` answers N filler bytes
// after reading the request body (the latency benchmark's 100 KB exchange). Test and bench only.

import { generatedStream, type StreamSpec } from "./stream-source.ts";
import type { TestCert } from "./test-pki.ts";

export interface StreamUpstreamOptions {
  readonly cert: TestCert;
  /** Marker planted into downloads that ask for it (`plant=1`). */
  readonly plantText?: string;
  readonly plantEvery?: number;
}

export interface UploadReport {
  readonly bytes: number;
  readonly sha256: string;
  readonly contentLength: string | null;
  readonly transferEncoding: string | null;
}

export interface StreamUpstream extends AsyncDisposable {
  readonly port: number;
  /** The spec a download of `bytes` (planted or not) is generated from. */
  spec(bytes: number, planted: boolean): StreamSpec;
  stop(): Promise<void>;
}

export function startStreamUpstream(o: StreamUpstreamOptions): StreamUpstream {
  const spec = (bytes: number, planted: boolean): StreamSpec => ({
    totalBytes: bytes,
    ...(planted && o.plantText
      ? { plant: { text: o.plantText, every: o.plantEvery ?? 1 << 20 } }
      : {}),
  });
  const fixed = new Map<number, Uint8Array>();
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: o.cert.certPem, key: o.cert.keyPem },
    maxRequestBodySize: Number.MAX_SAFE_INTEGER,
    idleTimeout: 120,
    async fetch(req) {
      const url = new URL(req.url);
      const bytes = Number(url.searchParams.get("bytes") ?? "0");
      if (url.pathname === "/download") {
        const s = spec(bytes, url.searchParams.get("plant") === "1");
        const headers: Record<string, string> = { "content-type": "application/octet-stream" };
        // A pull stream is sent chunked; a known length is announced unless asked not to.
        if (url.searchParams.get("chunked") !== "1") headers["content-length"] = String(bytes);
        return new Response(generatedStream(s), { headers });
      }
      if (url.pathname === "/upload") {
        // `hash=0` only counts (benchmarks: the upstream must not be the bottleneck).
        const h = url.searchParams.get("hash") === "0" ? null : new Bun.CryptoHasher("sha256");
        let n = 0;
        if (req.body) {
          for await (const c of req.body) {
            h?.update(c);
            n += c.length;
          }
        }
        const report: UploadReport = {
          bytes: n,
          sha256: h ? h.digest("hex") : "",
          contentLength: req.headers.get("content-length"),
          transferEncoding: req.headers.get("transfer-encoding"),
        };
        return Response.json(report);
      }
      if (url.pathname === "/echo-size") {
        if (req.body) for await (const _ of req.body) void _;
        let body = fixed.get(bytes);
        if (!body) {
          body = new Uint8Array(bytes).fill(0x61);
          fixed.set(bytes, body);
        }
        return new Response(body, { headers: { "content-type": "application/octet-stream" } });
      }
      return new Response("not found", { status: 404 });
    },
  });
  const stop = async () => {
    server.stop(true);
  };
  return { port: server.port!, spec, stop, [Symbol.asyncDispose]: stop };
}
