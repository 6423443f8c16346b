// Body scanning for the request path: named pattern sets ("redact", one per swap plan) run in
// the matcher worker pool, plus the two body pipelines built from them. Fail closed: a scan
// that cannot complete errors the stream, so neither side ever receives unscanned bytes, and
// the outbound pipeline holds the body's last chunk until DLP has ruled on the whole body.

import { ProxyError } from "../http/proxy-error.ts";
import type { MatcherPool, ScanStream } from "../matcher/pool/pool.ts";
import type { CompileOptions, PatternSpec } from "../matcher/types.ts";

export interface BodyScanner {
  /** Open a stream on the named set, compiling it from `specs` on first use. */
  open(
    name: string,
    specs: () => readonly PatternSpec[],
    options?: CompileOptions,
  ): Promise<ScanStream>;
}

/** Named sets on one shared worker pool. */
export class PoolScanner implements BodyScanner {
  readonly #loaded = new Map<string, Promise<void>>();
  constructor(private readonly pool: MatcherPool) {}

  async open(
    name: string,
    specs: () => readonly PatternSpec[],
    options: CompileOptions = {},
  ): Promise<ScanStream> {
    let ready = this.#loaded.get(name);
    if (!ready) {
      ready = this.pool.setPatterns(specs(), name, options);
      this.#loaded.set(name, ready);
      ready.catch(() => this.#loaded.delete(name));
    }
    try {
      await ready;
      return this.pool.openStream(name);
    } catch {
      throw new ProxyError("scan-failed", "body scanner is unavailable");
    }
  }

  /** Forget compiled sets matching `which`; the pool zeroes them once no stream uses them. */
  drop(which: (name: string) => boolean): void {
    for (const k of [...this.#loaded.keys()]) {
      if (which(k)) {
        this.#loaded.delete(k);
        this.pool.dropPatterns(k);
      }
    }
  }
}

export function scanFailure(e: unknown): ProxyError {
  return e instanceof ProxyError ? e : new ProxyError("scan-failed", "body scan failed");
}

/**
 * Response direction: every real value (and its encodings) → [REDACTED]. `onRedacted` is told
 * of replacements as the output carrying them passes, before the reader gets it: an answer the
 * agent abandons once it has seen a redaction is still known to have had one.
 */
export function redactBody(
  body: ReadableStream<Uint8Array>,
  scan: ScanStream,
  onRedacted: (n: number) => void,
): ReadableStream<Uint8Array> {
  let told = 0;
  const tell = (total: number) => {
    if (total > told) onRedacted(total - told);
    told = Math.max(told, total);
  };
  scan.result.then(
    (r) => tell(r.replacements),
    () => {},
  );
  return guard(body.pipeThrough(scan)).pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, c) {
        tell(scan.replacedSoFar());
        c.enqueue(chunk);
      },
    }),
  );
}

/**
 * Request direction: first DLP (real values neutralised to [REDACTED], counted), then the
 * swap of bound dummies. The last chunk is held until DLP has seen the whole body; a hit
 * fails the stream so the upstream never receives a complete request.
 */
export function outboundBody(
  body: ReadableStream<Uint8Array>,
  dlp: ScanStream | null,
  swap: ScanStream | null,
  onResult: (r: { dlpHits: number; swaps: number }) => void,
  /** Fail the stream at its end when the swap found no dummy (`require` not met in the head). */
  requireSwap = false,
  /**
   * When `swap` is the combined one-pass set, real values come out of it as this marker
   * (random per secrets generation): its presence in the output is a DLP hit.
   */
  marker?: Uint8Array,
): ReadableStream<Uint8Array> {
  let s = body;
  if (dlp) s = s.pipeThrough(dlp);
  if (swap) s = s.pipeThrough(swap);
  const reader = s.getReader();
  const find = marker ? markerFinder(marker) : null;
  let held: Uint8Array | null = null;
  let reported = false;
  const report = (dlpHits: number, swaps: number) => {
    if (reported) return;
    reported = true;
    onResult({ dlpHits, swaps });
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        try {
          for (;;) {
            const { done, value } = await reader.read();
            if (done) {
              const d = dlp ? await dlp.result : { replacements: 0 };
              const w = swap ? await swap.result : { replacements: 0 };
              const hits = d.replacements + (find?.hits ?? 0);
              const swaps = w.replacements - (find?.hits ?? 0);
              report(hits, swaps);
              if (hits > 0) {
                held?.fill(0);
                throw new ProxyError("dlp-blocked", "request body carries a real credential");
              }
              if (requireSwap && swaps === 0) {
                held?.fill(0);
                throw new ProxyError(
                  "required-dummy-missing",
                  "this host only accepts the agent's dummy credential",
                );
              }
              if (held) c.enqueue(held);
              c.close();
              return;
            }
            if (value.length === 0) continue;
            if (find?.scan(value)) {
              // A real value in the body: stop here, before this chunk is forwarded.
              held?.fill(0);
              value.fill(0);
              report(find.hits, 0);
              reader.cancel().catch(() => {});
              throw new ProxyError("dlp-blocked", "request body carries a real credential");
            }
            const out = held;
            held = value;
            if (out) {
              c.enqueue(out);
              return;
            }
          }
        } catch (e) {
          c.error(scanFailure(e));
        }
      },
      cancel(reason) {
        held?.fill(0);
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

/** Counts a marker's occurrences across chunk boundaries (it may be split between chunks). */
function markerFinder(marker: Uint8Array): { hits: number; scan(chunk: Uint8Array): boolean } {
  const m = Buffer.from(marker);
  let tail = Buffer.alloc(0);
  const state = {
    hits: 0,
    scan(chunk: Uint8Array): boolean {
      const b = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.length);
      // Across the boundary: the previous chunk's last bytes and this chunk's first ones.
      if (tail.length > 0) {
        const edge = Buffer.concat([tail, b.subarray(0, m.length - 1)]);
        if (edge.indexOf(m) >= 0) state.hits++;
      }
      for (let at = b.indexOf(m); at >= 0; at = b.indexOf(m, at + m.length)) state.hits++;
      tail = Buffer.from(b.subarray(Math.max(0, b.length - (m.length - 1))));
      return state.hits > 0;
    },
  };
  return state;
}

/** Map any scan error to a ProxyError so the consumer fails closed with a known reason. */
function guard(s: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
  const reader = s.getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        try {
          const { done, value } = await reader.read();
          if (done) c.close();
          else c.enqueue(value);
        } catch (e) {
          c.error(scanFailure(e));
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
