// Small-input find-and-replace for header values and request targets, on the main thread: the
// same leftmost-longest, non-overlapping semantics as the matcher (src/matcher/types.ts), with
// an index on the first byte so a header costs one table lookup per byte when nothing matches.
// Bodies never come here (they stream through the worker pool). It must never format its
// inputs or patterns into a string other than the returned value.

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

  constructor(patterns: readonly InlinePattern[]) {
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

  apply(input: Uint8Array): InlineResult {
    if (this.#empty) return { output: input, count: 0, names: NONE };
    let parts: Uint8Array[] | null = null;
    let names: Set<string> | null = null;
    let count = 0;
    let last = 0;
    let i = 0;
    const n = input.length;
    while (i < n) {
      const list = this.#byFirst[input[i]!];
      let hit: InlinePattern | undefined;
      if (list) {
        for (const p of list) {
          const f = p.from;
          if (i + f.length > n) continue;
          let k = 1;
          while (k < f.length && input[i + k] === f[k]) k++;
          if (k === f.length) {
            hit = p;
            break;
          }
        }
      }
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
