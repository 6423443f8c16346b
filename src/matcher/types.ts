// The contract every secret-matcher engine implements: the pure-TypeScript reference
// (the oracle), the WebAssembly engine, and the worker pool that runs the WASM engine off the
// main thread. It must never hold I/O, logging or globals: engines are pure byte transformers.
//
// Semantics (shared by every engine, tested by test/vectors/matcher-vectors.ts):
// - Every occurrence of every pattern is replaced by that pattern's replacement.
// - Overlaps resolve leftmost-first, then longest at the same start; matching resumes at the
//   end of the chosen match (no match overlaps another).
// - Output equals what replacing those matches in the whole concatenated input gives,
//   whatever the chunking. A stream holds back at most `maxPatternLength - 1` input bytes
//   (`heldBackBound`: more for a set matched on decoded views, whose tokens are longer).
// - A set compiled with `views` also replaces the matches of its decoded view (./views.ts),
//   mapped back to raw bytes: after the bytes as written are matched, or — views on its first
//   patterns only, a set whose other patterns swap — before.

import { MAX_RAW_PER_VIEW_BYTE, MAX_VIEW_TOKEN } from "./views.ts";

/** Limits every engine enforces when a pattern set is compiled. */
export const PATTERN_MIN_LENGTH = 8;
export const PATTERN_MAX_LENGTH = 512;
export const PATTERN_MAX_COUNT = 65_536;

export interface PatternSpec {
  /** The bytes to find. */
  readonly pattern: Uint8Array;
  /** What each occurrence becomes (any length, may be empty). */
  readonly replacement: Uint8Array;
}

export type MatcherErrorCode =
  | "empty-set"
  | "too-many-patterns"
  | "pattern-empty"
  | "pattern-too-short"
  | "pattern-too-long"
  | "pattern-duplicate"
  | "stream-closed"
  | "set-disposed"
  | "engine-failure";

/**
 * The one error type matchers throw. Its message names the offending pattern by index and
 * length, never by content: patterns are secrets.
 */
export class MatcherError extends Error {
  override readonly name = "MatcherError";
  constructor(
    readonly code: MatcherErrorCode,
    message: string,
    /** Index of the offending pattern in the input list, when there is one. */
    readonly index?: number,
  ) {
    super(message);
  }
}

/** How a set is compiled. */
export interface CompileOptions {
  /**
   * Also match on the decoded view of the input (./views.ts): JSON escapes and HTML character
   * references decoded, line breaks dropped, each match mapped back to the raw bytes that
   * spell it. For redaction and DLP patterns; never for swaps (a dummy is swapped as written):
   * a number says only that many leading patterns take part (a set that also swaps).
   */
  readonly views?: boolean | number;
}

/** A compiled, immutable pattern set. */
export interface CompiledSet {
  readonly patternCount: number;
  readonly maxPatternLength: number;
  /** Compiled with `views` (see CompileOptions). */
  readonly views: boolean;
  /** Zero every table and byte the set holds; the set is unusable afterwards. */
  dispose(): void;
}

/** One streaming pass over a body. Not reusable: after `end()` or `abort()` it is closed. */
export interface MatchStream {
  /**
   * Feed a chunk (any size, may be empty); returns the output that is now safe to emit, in an
   * array the caller owns (the engine never touches it again).
   */
  push(chunk: Uint8Array): Uint8Array;
  /** Flush the held-back window through the matcher; returns the rest of the output (owned). */
  end(): Uint8Array;
  /** Drop the stream and zero its state without emitting anything. */
  abort(): void;
  /** Matches replaced so far. */
  readonly replacements: number;
}

/**
 * A stream that can also lend its output instead of allocating it: the hot path of a caller
 * that copies the output on at once (a worker into its reply buffer, a counter that drops it).
 */
export interface LendingMatchStream extends MatchStream {
  /**
   * `push`, but the output is a view of the engine's one reused output buffer, valid only
   * until the next call on any stream of the same engine: read or copy it before that. The
   * engine zeroes that buffer when any of its streams ends, aborts or is released, when a set
   * is disposed under an open stream, and on a wipe.
   */
  pushLent(chunk: Uint8Array): Uint8Array;
}

export interface MatcherEngine {
  /** Validate and compile; throws MatcherError naming the bad pattern by index. */
  compile(specs: readonly PatternSpec[], options?: CompileOptions): CompiledSet;
  openStream(set: CompiledSet): MatchStream;
  /** Whole-buffer convenience: identical to one push + end. */
  replaceAll(set: CompiledSet, input: Uint8Array): { output: Uint8Array; replacements: number };
}

/** The most input bytes a stream on `set` may hold back (see ./views.ts for the view term). */
export function heldBackBound(set: CompiledSet): number {
  const raw = set.maxPatternLength - 1;
  // The bytes as written, then two decoded views (nested and flat), each holding its own.
  return set.views ? raw + 2 * (raw * MAX_RAW_PER_VIEW_BYTE + MAX_VIEW_TOKEN) : raw;
}

/** Validation shared by every engine, so they reject exactly the same inputs. */
export function validatePatternSpecs(specs: readonly PatternSpec[]): number {
  if (specs.length === 0) throw new MatcherError("empty-set", "pattern set is empty");
  if (specs.length > PATTERN_MAX_COUNT) {
    throw new MatcherError(
      "too-many-patterns",
      `pattern set has ${specs.length} patterns; at most ${PATTERN_MAX_COUNT} are allowed`,
    );
  }
  let maxLen = 0;
  const seen = new Map<string, number>();
  for (let i = 0; i < specs.length; i++) {
    const p = specs[i]!.pattern;
    if (p.length === 0) throw new MatcherError("pattern-empty", `pattern #${i} is empty`, i);
    if (p.length < PATTERN_MIN_LENGTH) {
      throw new MatcherError(
        "pattern-too-short",
        `pattern #${i} is ${p.length} bytes; the minimum is ${PATTERN_MIN_LENGTH}`,
        i,
      );
    }
    if (p.length > PATTERN_MAX_LENGTH) {
      throw new MatcherError(
        "pattern-too-long",
        `pattern #${i} is ${p.length} bytes; the maximum is ${PATTERN_MAX_LENGTH}`,
        i,
      );
    }
    // Keyed by a hash-free latin1 view; the key never leaves this function.
    const key = latin1(p);
    const first = seen.get(key);
    if (first !== undefined) {
      throw new MatcherError(
        "pattern-duplicate",
        `pattern #${i} duplicates pattern #${first} (${p.length} bytes)`,
        i,
      );
    }
    seen.set(key, i);
    if (p.length > maxLen) maxLen = p.length;
  }
  seen.clear();
  return maxLen;
}

function latin1(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i += 4096) {
    s += String.fromCharCode.apply(null, bytes.subarray(i, i + 4096) as unknown as number[]);
  }
  return s;
}
