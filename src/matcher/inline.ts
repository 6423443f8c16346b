// Small-input find-and-replace for header values and request targets, on the main thread: the
// same leftmost-longest, non-overlapping semantics as the matcher (src/matcher/types.ts), with
// an index on the first byte so a header costs one table lookup per byte when nothing matches.
// Bodies never come here (they stream through the worker pool). With `views` it also matches
// the decoded view (./views.ts) first, as the engines do. It must never format its inputs or
// patterns into a string other than the returned value.

import {
  decodeView,
  MAX_VIEW_TOKEN,
  rawStartOf,
  replaceViewMatches,
  type ViewMatch,
  viewPatterns,
} from "./views.ts";

export interface InlinePattern {
  /** Credential name, reported when this pattern matched (names are not secret). */
  readonly name: string;
  readonly from: Uint8Array;
  readonly to: Uint8Array;
}

export interface InlineResult {
  readonly output: Uint8Array;
  readonly count: number;
  readonly names: ReadonlySet<string>;
}

const NONE: ReadonlySet<string> = new Set();

export class InlineReplacer {
  /** Patterns by first byte, longest first. */
  readonly #byFirst: (InlinePattern[] | undefined)[] = new Array(256);
  readonly #empty: boolean;
  readonly #longest: number;
  /** The view's patterns (views on), matched before the raw ones. */
  readonly #view: InlineReplacer | null;

  constructor(patterns: readonly InlinePattern[], options: { views?: boolean } = {}) {
    this.#view = options.views
      ? new InlineReplacer(
          viewPatterns(patterns.map((p) => p.from)).map(({ pattern, source }) => ({
            ...patterns[source]!,
            from: pattern,
          })),
        )
      : null;
    for (const p of patterns) {
      if (p.from.length === 0) continue;
      const b = p.from[0]!;
      const list = this.#byFirst[b] ?? [];
      list.push(p);
      this.#byFirst[b] = list;
    }
    for (const list of this.#byFirst) list?.sort((a, b) => b.from.length - a.from.length);
    this.#longest = patterns.reduce((m, p) => Math.max(m, p.from.length), 0);
    this.#empty = patterns.length === 0;
  }

  get empty(): boolean {
    return this.#empty;
  }

  /** The longest pattern's length (what a streaming reader must hold back, less one). */
  get longest(): number {
    return this.#longest;
  }

  /**
   * How many trailing bytes of `text` a streaming reader must still hold: the longest
   * pattern's length less one, or with views as many as spell that many view bytes, and a
   * token that may not have ended. Depends on the decoding of the text, never on a pattern.
   */
  holdFor(text: Uint8Array): number {
    const raw = Math.min(text.length, Math.max(0, this.#longest - 1));
    if (!this.#view) return raw;
    let hold = raw;
    for (const flat of [false, true]) {
      const d = decodeView(text, true, flat);
      const v = Math.max(0, d.view.length - Math.max(0, this.#view.#longest - 1));
      hold = Math.max(hold, text.length - rawStartOf(d, v));
      if (d.view !== text) d.view.fill(0);
    }
    return Math.min(text.length, hold + MAX_VIEW_TOKEN);
  }

  apply(input: Uint8Array): InlineResult {
    if (this.#empty) return { output: input, count: 0, names: NONE };
    const first = this.#applyRaw(input);
    if (!this.#view) return first;
    // Then the nested and the flat decoded views of what was left (as the engines do).
    let output = first.output;
    let count = first.count;
    let names: Set<string> | null = null;
    for (const flat of [false, true]) {
      const d = decodeView(output, true, flat);
      const found = this.#view.#find(d.view);
      if (d.view !== output) d.view.fill(0);
      if (found.length === 0) continue;
      const next = replaceViewMatches(output, d, found);
      if (output !== input) output.fill(0);
      output = next;
      count += found.length;
      names ??= new Set(first.names);
      for (const m of found) names.add(m.name);
    }
    return names ? { output, count, names } : first;
  }

  /** Leftmost-longest, non-overlapping matches in `input`. */
  #find(input: Uint8Array): (ViewMatch & { name: string })[] {
    const found: (ViewMatch & { name: string })[] = [];
    let i = 0;
    const n = input.length;
    while (i < n) {
      const hit = this.#hitAt(input, i);
      if (hit) {
        found.push({ start: i, end: i + hit.from.length, replacement: hit.to, name: hit.name });
        i += hit.from.length;
      } else i++;
    }
    return found;
  }

  #hitAt(input: Uint8Array, i: number): InlinePattern | undefined {
    const list = this.#byFirst[input[i]!];
    if (!list) return undefined;
    for (const p of list) {
      const f = p.from;
      if (i + f.length > input.length) continue;
      let k = 1;
      while (k < f.length && input[i + k] === f[k]) k++;
      if (k === f.length) return p;
    }
    return undefined;
  }

  #applyRaw(input: Uint8Array): InlineResult {
    let parts: Uint8Array[] | null = null;
    let names: Set<string> | null = null;
    let count = 0;
    let last = 0;
    let i = 0;
    const n = input.length;
    while (i < n) {
      const hit = this.#hitAt(input, i);
      if (hit) {
        parts ??= [];
        names ??= new Set();
        parts.push(input.subarray(last, i), hit.to);
        names.add(hit.name);
        count++;
        i += hit.from.length;
        last = i;
      } else {
        i++;
      }
    }
    if (!parts) return { output: input, count: 0, names: NONE };
    parts.push(input.subarray(last));
    const output = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
    let at = 0;
    for (const p of parts) {
      output.set(p, at);
      at += p.length;
    }
    return { output, count, names: names ?? NONE };
  }

  /** Header values and targets are latin1 strings (one char per byte). */
  applyLatin1(value: string): { value: string; count: number; names: ReadonlySet<string> } {
    if (this.#empty) return { value, count: 0, names: NONE };
    const bytes = Buffer.from(value, "latin1");
    const r = this.apply(bytes);
    if (r.count === 0) return { value, count: 0, names: NONE };
    const out = Buffer.from(r.output.buffer, r.output.byteOffset, r.output.length).toString(
      "latin1",
    );
    r.output.fill(0);
    bytes.fill(0);
    return { value: out, count: r.count, names: r.names };
  }
}
