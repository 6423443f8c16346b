// Decodes upstream response bodies so the redactor sees plaintext, whatever the upstream's
// Content-Encoding: gzip, x-gzip, deflate (zlib or raw), br, zstd, stacked in any order.
// Unknown codings fail closed (the body is never forwarded unscanned), and decoding is capped
// in output size and in expansion ratio so a decompression bomb is refused, not expanded.

import type { Transform } from "node:stream";
import zlib from "node:zlib";
import { ProxyError } from "./errors.ts";

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

/**
 * One decoding stage as a TransformStream. Errors (corrupt data, truncated stream) surface as
 * a ProxyError on the readable side, so the consumer fails closed.
 */
function decodeStage(
  coding: Coding,
  onOutput?: (n: number) => ProxyError | undefined,
): TransformStream<Uint8Array, Uint8Array> {
  let dec: Transform | undefined;
  let failed: ProxyError | undefined;
  let controllerRef: TransformStreamDefaultController<Uint8Array> | undefined;
  const attach = (first: number) => {
    dec = decoderFor(coding, first);
    dec.on("data", (d: Buffer) => {
      if (failed) return;
      // Checked here, as output is produced, so one small input chunk cannot expand into an
      // unbounded queue before a later stage sees it.
      const over = onOutput?.(d.byteLength);
      if (over) {
        failed = over;
        dec?.destroy();
        return;
      }
      controllerRef?.enqueue(new Uint8Array(d.buffer, d.byteOffset, d.byteLength));
    });
    dec.on("error", () => {
      failed = new ProxyError("decode-failed", "upstream body could not be decoded");
    });
  };
  const write = (chunk: Uint8Array) =>
    new Promise<void>((resolve, reject) => {
      if (failed || !dec) return reject(failed ?? decodeError());
      const d = dec;
      // A decoder that fails or is destroyed may never call the write callback.
      const onFail = () => {
        cleanup();
        reject(failed ?? decodeError());
      };
      const cleanup = () => {
        d.off("error", onFail);
        d.off("close", onFail);
      };
      d.once("error", onFail);
      d.once("close", onFail);
      d.write(chunk, (err) => {
        cleanup();
        if (err || failed) reject(failed ?? decodeError());
        else resolve();
      });
    });
  return new TransformStream<Uint8Array, Uint8Array>({
    start(controller) {
      controllerRef = controller;
    },
    async transform(chunk) {
      if (chunk.length === 0) return;
      if (!dec) attach(chunk[0]!);
      await write(chunk);
    },
    flush() {
      if (!dec) return; // empty body: nothing to decode
      return new Promise<void>((resolve, reject) => {
        dec!.once("end", () => (failed ? reject(failed) : resolve()));
        dec!.once("close", () => (failed ? reject(failed) : undefined));
        dec!.once("error", () => reject(failed ?? decodeError()));
        dec!.end();
      });
    },
  });
}

function decodeError(): ProxyError {
  return new ProxyError("decode-failed", "upstream body could not be decoded");
}

/** Decode a body encoded with `codings` (in application order), capped per DecodeLimits. */
export function decodeBody(
  body: ReadableStream<Uint8Array>,
  codings: readonly Coding[],
  limits: DecodeLimits = DEFAULT_DECODE_LIMITS,
): ReadableStream<Uint8Array> {
  if (codings.length === 0) return body;
  let encoded = 0;
  let decoded = 0;
  const check = (n: number): ProxyError | undefined => {
    decoded += n;
    if (decoded > limits.maxOutputBytes) {
      return new ProxyError("decode-failed", "decoded body exceeds the size limit");
    }
    if (decoded > limits.ratioGraceBytes && decoded > encoded * limits.maxRatio) {
      return new ProxyError("decode-failed", "decoded body exceeds the expansion-ratio limit");
    }
    return undefined;
  };
  let s = body.pipeThrough(
    new TransformStream<Uint8Array, Uint8Array>({
      transform(chunk, controller) {
        encoded += chunk.length;
        controller.enqueue(chunk);
      },
    }),
  );
  // Only the last stage (the outermost coding applied first) produces the final plaintext.
  for (let i = codings.length - 1; i >= 0; i--) {
    s = s.pipeThrough(decodeStage(codings[i]!, i === 0 ? check : undefined));
  }
  return s;
}
