// Scans small bodies whole on the main thread with its own WebAssembly engine instance: a
// request or response body of known length up to `maxBytes` costs one engine call (tens of
// microseconds) instead of several worker round trips, which is most of the proxy's added
// latency on small API calls. Same engine, same pattern sets, same semantics as the pool; the
// engine's linear memory is wiped when the secrets change or the proxy stops. It must never be
// used for a body of unknown or large length (those stream through the pool).

import type { CompiledSet, PatternSpec } from "../matcher/types.ts";
import { createWasmEngine, type WasmEngine } from "../matcher/wasm-engine.ts";
import { ProxyError } from "./errors.ts";

/** Bodies up to this size with a known length are scanned inline (whole). */
export const INLINE_SCAN_MAX_BYTES = 256 * 1024;

export class InlineScanner {
  readonly #engine: WasmEngine;
  readonly #sets = new Map<string, CompiledSet>();
  /** Reused output buffer for passes whose output is only counted (DLP). */
  #scratch: Uint8Array = new Uint8Array(0);

  constructor(
    readonly maxBytes: number = INLINE_SCAN_MAX_BYTES,
    engine?: WasmEngine,
  ) {
    this.#engine = engine ?? createWasmEngine();
  }

  /** Replace every match of the named set (compiled from `specs` on first use) in `input`. */
  replace(
    name: string,
    specs: readonly PatternSpec[],
    input: Uint8Array,
  ): { output: Uint8Array; replacements: number } {
    try {
      return this.#engine.replaceAll(this.#set(name, specs), input);
    } catch {
      throw new ProxyError("scan-failed", "body scan failed");
    }
  }

  /**
   * Count the matches of the named set in `input` without keeping the output: it goes to a
   * reused buffer that is zeroed afterwards (no fresh allocation per request).
   */
  count(name: string, specs: readonly PatternSpec[], input: Uint8Array): number {
    try {
      const set = this.#set(name, specs);
      if (this.#scratch.length < input.length * 2 + 1024) {
        this.#scratch.fill(0);
        this.#scratch = new Uint8Array(Math.max(input.length * 2 + 1024, 64 * 1024));
      }
      const r = this.#engine.replaceAllInto(set, input, this.#scratch);
      r.output.fill(0);
      return r.replacements;
    } catch {
      throw new ProxyError("scan-failed", "body scan failed");
    }
  }

  #set(name: string, specs: readonly PatternSpec[]): CompiledSet {
    let set = this.#sets.get(name);
    if (!set) {
      set = this.#engine.compile(specs);
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

/** A one-chunk body stream. */
export function streamOf(bytes: Uint8Array): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    start(c) {
      if (bytes.length > 0) c.enqueue(bytes);
      c.close();
    },
  });
}
