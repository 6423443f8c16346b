// Scans small bodies whole on the main thread with its own WebAssembly engine instance: a
// request or response body of known length up to `maxBytes` costs one engine call (tens of
// microseconds) instead of several worker round trips, which is most of the proxy's added
// latency on small API calls. Same engine, same pattern sets, same semantics as the pool; the
// engine's linear memory is wiped when the secrets change or the proxy stops. It must never be
// used for a body of unknown or large length (those stream through the pool).

import { ProxyError } from "../http/proxy-error.ts";
import type {
  CompiledSet,
  CompileOptions,
  LendingMatchStream,
  MatchStream,
  PatternSpec,
} from "../matcher/types.ts";
import { createWasmEngine, type WasmEngine } from "../matcher/wasm-engine.ts";
import type { MatchCounter } from "./collect.ts";

/** Bodies up to this size with a known length are scanned inline (whole). */
export const INLINE_SCAN_MAX_BYTES = 256 * 1024;

export class InlineScanner {
  readonly #engine: WasmEngine;
  readonly #sets = new Map<string, CompiledSet>();
  /** Reused engine output buffer; zeroed after every pass. */
  #scratch: Uint8Array = new Uint8Array(0);

  constructor(
    readonly maxBytes: number = INLINE_SCAN_MAX_BYTES,
    engine?: WasmEngine,
  ) {
    this.#engine = engine ?? createWasmEngine();
  }

  /**
   * Replace every match of the named set (compiled from `specs` on first use) in `input`,
   * reusing `input` where it can: the result is `input` itself when nothing matched, or when
   * the output has its length (written back in place: a dummy swapped for a real value of the
   * same length); otherwise a fresh array from `alloc`. The engine writes into the reused
   * scratch buffer, which is zeroed afterwards; a clean body is not even copied (the engine
   * hands `input` back), so it costs no allocation and no copy.
   */
  rewrite(
    name: string,
    specs: readonly PatternSpec[],
    input: Uint8Array,
    alloc: (length: number) => Uint8Array = (n) => new Uint8Array(n),
    options: CompileOptions = {},
  ): { output: Uint8Array; replacements: number } {
    const r = this.#into(name, specs, input, options);
    try {
      if (r.replacements === 0) return { output: input, replacements: 0 };
      if (r.output.length === input.length) {
        input.set(r.output);
        return { output: input, replacements: r.replacements };
      }
      const output = alloc(r.output.length);
      output.set(r.output);
      return { output, replacements: r.replacements };
    } finally {
      if (r.output !== input) r.output.fill(0); // the scratch copy, never the caller's input
    }
  }

  /** Count the matches of the named set in `input` (no output is kept, nothing allocated). */
  count(
    name: string,
    specs: readonly PatternSpec[],
    input: Uint8Array,
    options: CompileOptions = {},
  ): number {
    const r = this.#into(name, specs, input, options);
    if (r.output !== input) r.output.fill(0);
    return r.replacements;
  }

  /**
   * A count of the named set's matches over a stream of chunks, on the main thread (for sets
   * whose replacements are the patterns themselves: only the count matters). The output is
   * lent and dropped (no allocation per chunk); the engine zeroes its lent buffer when the
   * stream ends or aborts.
   */
  counter(name: string, specs: readonly PatternSpec[]): MatchCounter {
    let stream: LendingMatchStream | null;
    try {
      stream = this.#engine.openStream(this.#set(name, specs, {}));
    } catch {
      throw new ProxyError("scan-failed", "body scan failed");
    }
    const fail = () => {
      stream?.abort();
      stream = null;
      return new ProxyError("scan-failed", "body scan failed");
    };
    return {
      push(chunk) {
        if (!stream) throw fail();
        try {
          stream.pushLent(chunk);
        } catch {
          throw fail();
        }
      },
      end() {
        if (!stream) throw fail();
        try {
          stream.end().fill(0);
          return stream.replacements;
        } catch {
          throw fail();
        } finally {
          stream = null;
        }
      },
      abort() {
        stream?.abort();
        stream = null;
      },
    };
  }

  /**
   * A stream of the named set on the main thread, for input that comes in pieces too small to
   * send to the pool one at a time (WebSocket messages): each push returns the output that is
   * safe to pass on, the engine holding back only its carry. A failure is a ProxyError. Its
   * output is owned by the caller (`push`, not `pushLent`): the MatchStream contract says so,
   * and a caller that queues a chunk must not see the next push overwrite it.
   */
  stream(name: string, specs: readonly PatternSpec[], options: CompileOptions = {}): MatchStream {
    let stream: MatchStream;
    try {
      stream = this.#engine.openStream(this.#set(name, specs, options));
    } catch {
      throw new ProxyError("scan-failed", "scan failed");
    }
    const guard = <T>(run: () => T): T => {
      try {
        return run();
      } catch {
        stream.abort();
        throw new ProxyError("scan-failed", "scan failed");
      }
    };
    return {
      push: (chunk) => guard(() => stream.push(chunk)),
      end: () => guard(() => stream.end()),
      abort: () => stream.abort(),
      get replacements() {
        return stream.replacements;
      },
    };
  }

  /** One engine pass of `input` into the scratch buffer (grown when too small). */
  #into(
    name: string,
    specs: readonly PatternSpec[],
    input: Uint8Array,
    options: CompileOptions,
  ): { output: Uint8Array; replacements: number } {
    try {
      const set = this.#set(name, specs, options);
      if (this.#scratch.length < input.length * 2 + 1024) {
        this.#scratch.fill(0);
        this.#scratch = new Uint8Array(Math.max(input.length * 2 + 1024, 64 * 1024));
      }
      return this.#engine.replaceAllInto(set, input, this.#scratch);
    } catch {
      this.#scratch.fill(0); // a pass that failed part-way may have written output already
      throw new ProxyError("scan-failed", "body scan failed");
    }
  }

  /** The named set, compiled on first use (a name always comes with the same specs and options). */
  #set(name: string, specs: readonly PatternSpec[], options: CompileOptions): CompiledSet {
    let set = this.#sets.get(name);
    if (!set) {
      set = this.#engine.compile(specs, options);
      this.#sets.set(name, set);
    }
    return set;
  }

  /** Dispose (zeroing) the compiled sets whose name matches `which`. */
  drop(which: (name: string) => boolean): void {
    for (const [name, set] of [...this.#sets]) {
      if (which(name)) {
        set.dispose();
        this.#sets.delete(name);
      }
    }
  }

  /** Forget every compiled set and zero the engine's memory (stopping). */
  reset(): void {
    this.#scratch.fill(0);
    this.#sets.clear();
    this.#engine.wipeAll();
  }
}

/** A stream of an empty set: everything passes at once, nothing is replaced. */
export function passThroughStream(): MatchStream {
  return {
    push: (chunk) => chunk,
    end: () => new Uint8Array(0),
    abort: () => {},
    replacements: 0,
  };
}
