// Reading bodies as they pass: counting their bytes, holding one whole (bounded), and reading the
// first chunk of one before the answer is committed. None of them ever keeps bytes it read
// after a failure: what was read may carry a real value, and is wiped.

import { ProxyError } from "../http/proxy-error.ts";
import { scanFailure } from "./scan-pipelines.ts";

/** Counts bytes through a stream and reports the total at the end (or on failure). */
export function countBytes(
  body: ReadableStream<Uint8Array>,
  onDone: (bytes: number, ok: boolean) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  let n = 0;
  let reported = false;
  const report = (ok: boolean) => {
    if (reported) return;
    reported = true;
    onDone(n, ok);
  };
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            report(true);
            c.close();
            return;
          }
          n += value.length;
          c.enqueue(value);
        } catch (e) {
          report(false);
          c.error(e);
        }
      },
      cancel(reason) {
        report(false);
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

/** Something that counts matches in the chunks it is shown (InlineScanner.counter). */
export interface MatchCounter {
  push(chunk: Uint8Array): void;
  /** The matches in everything pushed. */
  end(): number;
  abort(): void;
}

/**
 * Shows every chunk of a stream to `counter` as it passes (the chunks are not changed) and
 * reports its count at the end; nothing on a failure or a cancel.
 */
export function countMatches(
  body: ReadableStream<Uint8Array>,
  counter: MatchCounter,
  onDone: (matches: number) => void,
): ReadableStream<Uint8Array> {
  const reader = body.getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            onDone(counter.end());
            c.close();
            return;
          }
          counter.push(value);
          c.enqueue(value);
        } catch (e) {
          counter.abort();
          c.error(e);
        }
      },
      cancel(reason) {
        counter.abort();
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}

/** Read a whole (bounded) body; used when a length-changing swap needs a new Content-Length. */
export async function collectBounded(
  body: ReadableStream<Uint8Array>,
  max: number,
  alloc: (length: number) => Uint8Array = (n) => new Uint8Array(n),
): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  let n = 0;
  const reader = body.getReader();
  try {
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      parts.push(value);
      n += value.length;
      if (n > max) {
        await reader.cancel();
        throw new ProxyError("body-too-large", "request body exceeds the held-body limit");
      }
    }
  } catch (e) {
    // Too big, or the stream failed part-way: what was read may hold real values (a swapped
    // request, an unredacted answer) and is wiped.
    for (const p of parts) p.fill(0);
    throw e;
  }
  const out = alloc(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
    p.fill(0);
  }
  return out;
}

/**
 * Read a stream's first chunk now; resolve with a stream that yields it and then the rest.
 * A failure on that first read rejects (the caller can still answer with an error status).
 */
export async function primeStream(
  body: ReadableStream<Uint8Array>,
): Promise<ReadableStream<Uint8Array>> {
  const reader = body.getReader();
  let first: ReadableStreamReadResult_;
  try {
    first = await reader.read();
  } catch (e) {
    reader.cancel().catch(() => {});
    throw scanFailure(e);
  }
  let pending: ReadableStreamReadResult_ | null = first;
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        try {
          const r = pending ?? (await reader.read());
          pending = null;
          if (r.done || !r.value) c.close();
          else c.enqueue(r.value);
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

type ReadableStreamReadResult_ = { done: boolean; value?: Uint8Array | undefined };
