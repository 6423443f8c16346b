// Decodes upstream response bodies so the redactor sees plaintext, whatever the upstream's
// Content-Encoding: gzip, x-gzip, deflate (zlib or raw), br, zstd, stacked in any order.
// Unknown codings fail closed (the body is never forwarded unscanned), and decoding is capped
// in output size and in expansion ratio so a decompression bomb is refused, not expanded.

import type { Transform } from "node:stream";
import zlib from "node:zlib";
import { ProxyError } from "../http/proxy-error.ts";

export type Coding = "gzip" | "deflate" | "br" | "zstd";

export interface DecodeLimits {
  /** Most decoded bytes one body may produce. */
  readonly maxOutputBytes: number;
  /** Most decoded bytes per encoded byte, checked once output passes `ratioGraceBytes`. */
  readonly maxRatio: number;
  readonly ratioGraceBytes: number;
}

export const DEFAULT_DECODE_LIMITS: DecodeLimits = {
  maxOutputBytes: 1 << 30,
  maxRatio: 200,
  ratioGraceBytes: 1 << 20,
};

/** Codings the proxy may advertise upstream in Accept-Encoding. */
export const SUPPORTED_CODINGS: readonly Coding[] = ["gzip", "deflate", "br", "zstd"];

/**
 * Parse a Content-Encoding field (possibly several lines) into the codings applied, in order of
 * application. `identity` entries are dropped. Throws decode-failed for anything unknown.
 */
export function parseContentEncoding(values: readonly string[]): Coding[] {
  const out: Coding[] = [];
  for (const v of values) {
    for (const raw of v.split(",")) {
      const t = raw.trim().toLowerCase();
      if (t === "" || t === "identity") continue;
      if (t === "gzip" || t === "x-gzip") out.push("gzip");
      else if (t === "deflate") out.push("deflate");
      else if (t === "br") out.push("br");
      else if (t === "zstd") out.push("zstd");
      else throw new ProxyError("decode-failed", "upstream used an unsupported content coding");
    }
  }
  if (out.length > 4) throw new ProxyError("decode-failed", "too many stacked content codings");
  return out;
}

/** Rewrite an agent's Accept-Encoding to the codings the proxy can decode. */
export function filterAcceptEncoding(value: string | undefined): string {
  if (value === undefined) return "identity";
  const keep: string[] = [];
  for (const raw of value.split(",")) {
    const name = raw.split(";")[0]!.trim().toLowerCase();
    if ((SUPPORTED_CODINGS as readonly string[]).includes(name) || name === "identity") {
      keep.push(raw.trim());
    }
  }
  return keep.length > 0 ? keep.join(", ") : "identity";
}

function decoderFor(coding: Coding, firstByte: number): Transform {
  // Default finishFlush: a stream that ends mid-body is an error, never a clean short body.
  const opts = {};
  switch (coding) {
    case "gzip":
      return zlib.createGunzip(opts) as never;
    case "deflate":
      // RFC 9110 says zlib-wrapped; some servers send raw deflate. A zlib header's first byte
      // has 8 in its low nibble (CM=8) — anything else is treated as raw deflate.
      return (
        (firstByte & 0x0f) === 8 ? zlib.createInflate(opts) : zlib.createInflateRaw(opts)
      ) as never;
    case "br":
      return zlib.createBrotliDecompress() as never;
    case "zstd":
      return (
        zlib as unknown as { createZstdDecompress(): unknown }
      ).createZstdDecompress() as never;
  }
}

/** Cumulative byte counts a stage's cap is judged on. */
interface StageCounts {
  readonly inBytes: number;
  readonly outBytes: number;
}

/**
 * One decoding stage, pull-driven: it reads an input chunk only while its consumer wants output,
 * pauses its decoder while its own queue is full, and caps its cumulative output with `cap`, so
 * no stage of a stacked coding can expand ahead of the stage after it. Errors (corrupt data,
 * truncated stream, a cap) surface as a ProxyError on the returned stream; once the stage has
 * failed, closed or been cancelled its decoder is destroyed and nothing is enqueued again, so no
 * late decoder event can throw.
 */
function decodeStage(
  input: ReadableStream<Uint8Array>,
  coding: Coding,
  cap: (c: StageCounts) => ProxyError | undefined,
): ReadableStream<Uint8Array> {
  const reader = input.getReader();
  let dec: Transform | undefined;
  let ctrl!: ReadableStreamDefaultController<Uint8Array>;
  let finished = false; // failed, closed or cancelled: no enqueue, no close, no error after this
  let reading = false; // an input chunk is being read or is still inside the decoder
  let inputDone = false;
  let inBytes = 0;
  let outBytes = 0;
  // Resolves the pending pull(); the stream calls pull again only when it wants more.
  let wake: (() => void) | undefined;
  const settle = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const fail = (err: unknown) => {
    if (finished) return;
    finished = true;
    dec?.destroy();
    try {
      ctrl.error(err);
    } catch {
      // already errored by the runtime: nothing further to report
    }
    reader.cancel(err).catch(() => {});
    settle();
  };
  const close = () => {
    if (finished) return;
    finished = true;
    try {
      ctrl.close();
    } catch {
      // cancelled meanwhile
    }
    settle();
  };
  const attach = (first: number) => {
    const d = decoderFor(coding, first);
    dec = d;
    d.on("data", (b: Buffer) => {
      if (finished) return;
      outBytes += b.byteLength;
      // Checked as output is produced, so one small input chunk cannot expand past the cap.
      const over = cap({ inBytes, outBytes });
      if (over) return fail(over);
      try {
        ctrl.enqueue(new Uint8Array(b.buffer, b.byteOffset, b.byteLength));
      } catch {
        return fail(decodeError());
      }
      // Our queue is full: stop the decoder; zlib then stops inflating once its own buffer
      // fills, and resumes on the next pull.
      if ((ctrl.desiredSize ?? 0) <= 0) d.pause();
      settle();
    });
    // Stays attached for the decoder's whole life, so a late error is never unhandled.
    d.on("error", () => fail(decodeError()));
    d.on("end", close);
  };
  const feed = () => {
    if (finished || reading || inputDone) return;
    reading = true;
    reader.read().then(
      (r) => {
        if (finished) return;
        if (r.done) {
          inputDone = true;
          reading = false;
          if (dec) dec.end();
          else close(); // empty body: nothing to decode
          return;
        }
        const chunk = r.value;
        if (chunk.length === 0) {
          reading = false;
          return feed();
        }
        inBytes += chunk.length;
        if (!dec) attach(chunk[0]!);
        // The callback runs once the decoder has taken the whole chunk, which it defers while
        // its output is backed up. It may never run if the decoder fails; fail() settles then.
        dec!.write(chunk, (err) => {
          reading = false;
          if (err) return fail(decodeError());
          if (wake) feed(); // the consumer still waits: more input is needed for output
        });
      },
      (err) => fail(err),
    );
  };
  return new ReadableStream<Uint8Array>(
    {
      start(controller) {
        ctrl = controller;
      },
      pull() {
        if (finished) return;
        return new Promise<void>((resolve) => {
          wake = resolve;
          dec?.resume();
          feed();
        });
      },
      cancel(reason) {
        finished = true;
        dec?.destroy();
        settle();
        return reader.cancel(reason);
      },
    },
    // A few decoder chunks (16–64 KiB each) per stage: enough to keep the pipe busy, bounded.
    { highWaterMark: 4 },
  );
}

function decodeError(): ProxyError {
  return new ProxyError("decode-failed", "upstream body could not be decoded");
}

/** The cap for one stage: absolute size, and expansion of this stage's own input. */
function stageCap(limits: DecodeLimits, c: StageCounts): ProxyError | undefined {
  if (c.outBytes > limits.maxOutputBytes) {
    return new ProxyError("decode-failed", "decoded body exceeds the size limit");
  }
  if (c.outBytes > limits.ratioGraceBytes && c.outBytes > c.inBytes * limits.maxRatio) {
    return new ProxyError("decode-failed", "decoded body exceeds the expansion-ratio limit");
  }
  return undefined;
}

/** Decode a body encoded with `codings` (in application order), capped per DecodeLimits. */
export function decodeBody(
  body: ReadableStream<Uint8Array>,
  codings: readonly Coding[],
  limits: DecodeLimits = DEFAULT_DECODE_LIMITS,
): ReadableStream<Uint8Array> {
  if (codings.length === 0) return body;
  let wireBytes = 0;
  const finalCap = (c: StageCounts): ProxyError | undefined =>
    stageCap(limits, c) ??
    // The plaintext is also judged against the bytes on the wire, so stacking codings cannot
    // multiply the allowed ratio.
    stageCap(limits, { inBytes: wireBytes, outBytes: c.outBytes });
  let s = body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        wireBytes += chunk.length;
        controller.enqueue(chunk);
      },
    }),
  );
  // Decode outermost first: the last coding applied is the first removed.
  for (let i = codings.length - 1; i >= 0; i--) {
    s = decodeStage(s, codings[i]!, i === 0 ? finalCap : (c) => stageCap(limits, c));
  }
  return s;
}
