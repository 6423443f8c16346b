// The messages the matcher pool (src/matcher/pool/pool.ts) and its worker threads
// (workers/matcher-worker.ts) exchange, and the packed form a pattern set travels in.
// It must never put pattern or replacement bytes anywhere but a packed ArrayBuffer that is
// transferred (never cloned into a string, a log line or an error message).

import {
  type CompileOptions,
  MatcherError,
  type MatcherErrorCode,
  type PatternSpec,
} from "../types.ts";
import { viewCount } from "../views.ts";

/** Which engine a worker runs: the WebAssembly engine, or the pure-TypeScript oracle. */
export type EngineName = "wasm" | "reference";

/** How a test asks a worker to fail: die (throw, exit) or stop answering (hang). */
export type CrashMode = "throw" | "exit" | "hang";

/** Main thread → worker. Every ArrayBuffer named `buf`/`packed` is transferred, not copied. */
export type ToWorker =
  | { readonly t: "init"; readonly engine: EngineName }
  /** Compile a set under a new generation number (unique across all named sets). */
  | { readonly t: "compile"; readonly gen: number; readonly packed: ArrayBuffer }
  /**
   * No new stream will open on `gen` (it was replaced, dropped, or never committed because
   * another worker rejected it): zero it as soon as no stream uses it.
   */
  | { readonly t: "retire"; readonly gen: number }
  | { readonly t: "open"; readonly sid: number; readonly gen: number }
  | { readonly t: "push"; readonly sid: number; readonly buf: ArrayBuffer; readonly len: number }
  | { readonly t: "end"; readonly sid: number }
  | { readonly t: "abort"; readonly sid: number }
  | { readonly t: "crash"; readonly mode: CrashMode }
  /** Test hook: report which sets are loaded and how many engine instances were wiped. */
  | { readonly t: "inspect" }
  /** Zero every set and stream, then answer `closed`. */
  | { readonly t: "close" };

/** Worker → main thread. */
export type FromWorker =
  | { readonly t: "ready" }
  | { readonly t: "init-failed"; readonly message: string }
  | { readonly t: "compiled"; readonly gen: number }
  | {
      readonly t: "compile-failed";
      readonly gen: number;
      readonly code: MatcherErrorCode;
      readonly message: string;
      readonly index?: number;
    }
  /** The output for one `push`; `consumed` is the push's input length (for flow control). */
  | {
      readonly t: "out";
      readonly sid: number;
      readonly buf: ArrayBuffer;
      readonly len: number;
      /**
       * The buffer that carried the push's input, for the pool to reuse: the worker zeroes the
       * push's `consumed` bytes at its start, the only bytes the pool wrote into it.
       */
      readonly spent: ArrayBuffer;
      readonly consumed: number;
      /** Replacements made in the stream's output so far, this piece's included. */
      readonly replacements: number;
    }
  | {
      readonly t: "ended";
      readonly sid: number;
      readonly buf: ArrayBuffer;
      readonly len: number;
      readonly replacements: number;
    }
  | {
      readonly t: "stream-failed";
      readonly sid: number;
      readonly code: MatcherErrorCode;
      readonly message: string;
    }
  | { readonly t: "closed" }
  | { readonly t: "inspected"; readonly state: WorkerState };

/** What a worker holds, for tests: no bytes, only generations and counts. */
export interface WorkerState {
  /** Generations of the pattern sets loaded, oldest first. */
  readonly gens: readonly number[];
  readonly streams: number;
  /** Engine instances zeroed (`wipeAll`) since the worker started. */
  readonly wiped: number;
}

/**
 * Packs a pattern set into one ArrayBuffer: u32 count, u32 how many leading patterns take part
 * in the decoded view (CompileOptions.views; 0 = none), then per spec u32 pattern length,
 * u32 replacement length, pattern bytes, replacement bytes (little-endian). One buffer can be
 * transferred to a worker and zeroed in one call, which a list of arrays cannot.
 */
export function packSpecs(
  specs: readonly PatternSpec[],
  options: CompileOptions = {},
): ArrayBuffer {
  let size = 8;
  for (const s of specs) size += 8 + s.pattern.length + s.replacement.length;
  const buf = new ArrayBuffer(size);
  const view = new DataView(buf);
  const bytes = new Uint8Array(buf);
  view.setUint32(0, specs.length, true);
  view.setUint32(4, viewCount(options.views, specs.length), true);
  let at = 8;
  for (const s of specs) {
    view.setUint32(at, s.pattern.length, true);
    view.setUint32(at + 4, s.replacement.length, true);
    at += 8;
    bytes.set(s.pattern, at);
    at += s.pattern.length;
    bytes.set(s.replacement, at);
    at += s.replacement.length;
  }
  return buf;
}

/**
 * The specs inside a packed set, as views into `buf` (no copy, so zeroing `buf` zeroes them),
 * and how to compile them. Throws MatcherError("engine-failure") on a malformed buffer; the
 * message holds lengths only.
 */
export function unpackSpecs(buf: ArrayBuffer): { specs: PatternSpec[]; options: CompileOptions } {
  const malformed = (): MatcherError =>
    new MatcherError("engine-failure", `packed pattern set is malformed (${buf.byteLength} bytes)`);
  if (buf.byteLength < 8) throw malformed();
  const view = new DataView(buf);
  const count = view.getUint32(0, true);
  const views = view.getUint32(4, true);
  if (views > count) throw malformed();
  const specs: PatternSpec[] = [];
  let at = 8;
  for (let i = 0; i < count; i++) {
    if (at + 8 > buf.byteLength) throw malformed();
    const pl = view.getUint32(at, true);
    const rl = view.getUint32(at + 4, true);
    at += 8;
    if (at + pl + rl > buf.byteLength) throw malformed();
    specs.push({
      pattern: new Uint8Array(buf, at, pl),
      replacement: new Uint8Array(buf, at + pl, rl),
    });
    at += pl + rl;
  }
  if (at !== buf.byteLength) throw malformed();
  return { specs, options: views > 0 ? { views } : {} };
}
