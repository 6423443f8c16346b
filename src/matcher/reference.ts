// The reference matcher: the simplest implementation of the semantics in ./types.ts, used as
// the oracle that every fast engine is tested against. It is deliberately naive (quadratic in
// the worst case) and must never be used on the proxy's hot path.

import {
  type CompiledSet,
  type CompileOptions,
  type MatcherEngine,
  MatcherError,
  type MatchStream,
  type PatternSpec,
  validatePatternSpecs,
} from "./types.ts";
import { decodeView, replaceViewMatches, type ViewMatch, viewCount, viewSpecs } from "./views.ts";

class ReferenceSet implements CompiledSet {
  disposed = false;
  constructor(
    /** Sorted longest first, so the first hit at a position is the longest. */
    readonly specs: { pattern: Uint8Array; replacement: Uint8Array }[],
    readonly maxPatternLength: number,
    /** With views: the view's patterns (./views.ts), longest first; else null. */
    readonly viewSpecs: { pattern: Uint8Array; replacement: Uint8Array }[] | null,
    /** Views on the first patterns only (the rest swap): the view stage runs first. */
    readonly viewsFirst = false,
  ) {}
  get views(): boolean {
    return this.viewSpecs !== null;
  }
  get patternCount(): number {
    return this.specs.length;
  }
  dispose(): void {
    for (const s of [...this.specs, ...(this.viewSpecs ?? [])]) {
      s.pattern.fill(0);
      s.replacement.fill(0);
    }
    this.specs.length = 0;
    if (this.viewSpecs) this.viewSpecs.length = 0;
    this.disposed = true;
  }
}

function matchesAt(buf: Uint8Array, at: number, pattern: Uint8Array): boolean {
  if (at + pattern.length > buf.length) return false;
  for (let k = 0; k < pattern.length; k++) if (buf[at + k] !== pattern[k]) return false;
  return true;
}

class ReferenceStream implements MatchStream {
  private pending: Uint8Array = new Uint8Array(0);
  private closed = false;
  replacements = 0;
  constructor(private readonly set: ReferenceSet) {}

  push(chunk: Uint8Array): Uint8Array {
    this.check();
    const joined = new Uint8Array(this.pending.length + chunk.length);
    joined.set(this.pending);
    joined.set(chunk, this.pending.length);
    this.pending.fill(0);
    this.pending = joined;
    return this.drain(false);
  }

  end(): Uint8Array {
    this.check();
    const out = this.drain(true);
    this.closed = true;
    return out;
  }

  abort(): void {
    this.pending.fill(0);
    this.pending = new Uint8Array(0);
    this.closed = true;
  }

  private check(): void {
    if (this.closed) throw new MatcherError("stream-closed", "stream is closed");
    if (this.set.disposed) throw new MatcherError("set-disposed", "pattern set was disposed");
  }

  /**
   * Decide every position whose longest possible match lies wholly inside `pending`. With
   * views the reference simply holds everything to the end and runs the stages on it: the
   * bytes as written, then the nested view of what that left, then the flat view of what that
   * left (each view's matches mapped back and replaced) — or, for a set that also swaps, the
   * two views first.
   */
  private drain(final: boolean): Uint8Array {
    const views = this.set.viewSpecs;
    if (views === null) return this.drainRaw(final);
    if (!final) return new Uint8Array(0);
    const bothViews = (input: Uint8Array) => {
      const nested = this.viewStage(input, views, false);
      const flat = this.viewStage(nested, views, true);
      nested.fill(0);
      return flat;
    };
    if (this.set.viewsFirst) {
      const viewed = bothViews(this.pending);
      this.pending.fill(0);
      this.pending = viewed;
      return this.drainRaw(true);
    }
    const written = this.drainRaw(true);
    const out = bothViews(written);
    written.fill(0);
    return out;
  }

  /** `input` with the raw spelling of each match of its decoded view replaced. */
  private viewStage(
    input: Uint8Array,
    views: { pattern: Uint8Array; replacement: Uint8Array }[],
    flat: boolean,
  ): Uint8Array {
    const d = decodeView(input, true, flat);
    const matches: ViewMatch[] = [];
    let i = 0;
    while (i < d.view.length) {
      const hit = views.find((s) => matchesAt(d.view, i, s.pattern));
      if (hit) {
        matches.push({ start: i, end: i + hit.pattern.length, replacement: hit.replacement });
        i += hit.pattern.length;
      } else i++;
    }
    this.replacements += matches.length;
    const out = Uint8Array.from(replaceViewMatches(input, d, matches));
    if (d.view !== input) d.view.fill(0);
    return out;
  }

  private drainRaw(final: boolean): Uint8Array {
    const buf = this.pending;
    const maxLen = this.set.maxPatternLength;
    const out: number[] = [];
    let i = 0;
    while (i < buf.length && (final || i + maxLen <= buf.length)) {
      const hit = this.set.specs.find((s) => matchesAt(buf, i, s.pattern));
      if (hit) {
        for (const b of hit.replacement) out.push(b);
        i += hit.pattern.length;
        this.replacements++;
      } else {
        out.push(buf[i]!);
        i++;
      }
    }
    this.pending = buf.slice(i);
    buf.fill(0);
    return Uint8Array.from(out);
  }
}

export const referenceEngine: MatcherEngine = {
  compile(specs: readonly PatternSpec[], options: CompileOptions = {}): CompiledSet {
    const maxLen = validatePatternSpecs(specs);
    const copy = (list: readonly PatternSpec[]) =>
      list
        .map((s) => ({
          pattern: Uint8Array.from(s.pattern),
          replacement: Uint8Array.from(s.replacement),
        }))
        .sort((a, b) => b.pattern.length - a.pattern.length);
    const n = viewCount(options.views, specs.length);
    return new ReferenceSet(
      copy(specs),
      maxLen,
      n > 0 ? copy(viewSpecs(specs, n)) : null,
      n > 0 && n < specs.length,
    );
  },
  openStream(set: CompiledSet): MatchStream {
    if (!(set instanceof ReferenceSet)) throw new TypeError("not a reference pattern set");
    return new ReferenceStream(set);
  },
  replaceAll(set: CompiledSet, input: Uint8Array) {
    const s = this.openStream(set);
    const a = s.push(input);
    const b = s.end();
    const output = new Uint8Array(a.length + b.length);
    output.set(a);
    output.set(b, a.length);
    return { output, replacements: s.replacements };
  },
};
