// An ordered list of header fields as received: raw names (case preserved, for faithful
// re-serialization) and latin1 values (one char per byte, so nothing is re-encoded), plus a
// lower-cased index for lookups. Immutable once built; it must never merge or reorder fields,
// because duplicates are evidence the parsers need (duplicate Host, Content-Length, TE).

export type HeaderField = readonly [name: string, value: string];

export class HeaderList {
  readonly #fields: readonly HeaderField[];
  readonly #index: ReadonlyMap<string, readonly number[]>;

  constructor(fields: readonly HeaderField[]) {
    // Copied, not frozen: Object.freeze dominated header parsing time; the list is private
    // and only exposed through readonly types.
    this.#fields = fields.map((f) => [f[0], f[1]] as const);
    const index = new Map<string, number[]>();
    this.#fields.forEach(([name], i) => {
      const key = name.toLowerCase();
      const list = index.get(key);
      if (list) list.push(i);
      else index.set(key, [i]);
    });
    this.#index = index;
  }

  /** Fields in wire order with raw names. */
  get fields(): readonly HeaderField[] {
    return this.#fields;
  }

  get size(): number {
    return this.#fields.length;
  }

  has(name: string): boolean {
    return this.#index.has(name.toLowerCase());
  }

  /** Number of field lines with this name. */
  count(name: string): number {
    return this.#index.get(name.toLowerCase())?.length ?? 0;
  }

  /** First value for the name (case-insensitive), or undefined. */
  get(name: string): string | undefined {
    const idx = this.#index.get(name.toLowerCase());
    return idx === undefined ? undefined : this.#fields[idx[0]!]![1];
  }

  /** Every value for the name, in wire order. */
  getAll(name: string): string[] {
    const idx = this.#index.get(name.toLowerCase());
    return idx === undefined ? [] : idx.map((i) => this.#fields[i]![1]);
  }

  /** A new list without the fields whose lower-cased name is in `names`. */
  without(names: ReadonlySet<string>): HeaderList {
    return new HeaderList(this.#fields.filter(([n]) => !names.has(n.toLowerCase())));
  }

  /** Plain pairs, e.g. for `expect(...).toEqual`. */
  toJSON(): [string, string][] {
    return this.#fields.map(([n, v]) => [n, v]);
  }
}
