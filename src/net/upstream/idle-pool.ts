// Kept-alive upstream connections between exchanges, by destination: at most `perKey` per
// destination and `total` in all (the oldest closed first), each closed after `idleMs`, or as
// soon as its upstream sends a byte, ends or fails while it rests here. A destination left with
// none is forgotten: an agent allowed a wildcard whose names all resolve (`*.s3.amazonaws.com`)
// must not make the proxy keep an entry, or a connection, for each of thousands of hosts.

/** What the pool keeps: a connection that can rest and be woken. */
export interface Poolable {
  readonly usable: boolean;
  /** The longest it may rest, as its upstream announced (undefined: the pool's own). */
  readonly restLimitMs?: number | undefined;
  /** Rest; `broken` is told if the connection breaks while resting. */
  park(broken: () => void): void;
  unpark(): void;
  destroy(): void;
}

interface Entry<C> {
  readonly key: string;
  readonly conn: C;
  readonly timer: ReturnType<typeof setTimeout>;
  /** When it went idle (performance.now()). */
  readonly since: number;
}

export class IdlePool<C extends Poolable> {
  readonly #byKey = new Map<string, Entry<C>[]>();
  /** Every idle connection, oldest first (for the total cap). */
  readonly #order = new Set<Entry<C>>();
  #closed = false;

  constructor(private readonly o: { perKey: number; total: number; idleMs: number }) {}

  get size(): number {
    return this.#order.size;
  }

  get keys(): number {
    return this.#byKey.size;
  }

  /** The most recently parked usable connection for `key`, with how long it rested (ms). */
  take(key: string): { conn: C; idleMs: number } | undefined {
    const list = this.#byKey.get(key);
    while (list && list.length > 0) {
      const e = list.pop()!;
      this.#order.delete(e);
      if (list.length === 0) this.#byKey.delete(key);
      clearTimeout(e.timer);
      e.conn.unpark();
      if (e.conn.usable) return { conn: e.conn, idleMs: performance.now() - e.since };
      e.conn.destroy();
    }
    return undefined;
  }

  /** Keep `conn` for `key`, or close it when the pool is full or closed. */
  put(key: string, conn: C): void {
    if (this.#closed || !conn.usable) {
      conn.destroy();
      return;
    }
    const list = this.#byKey.get(key) ?? [];
    if (list.length >= this.o.perKey || this.o.total <= 0) {
      conn.destroy();
      return;
    }
    while (this.#order.size >= this.o.total) this.#drop(this.#order.values().next().value!);
    const entry: Entry<C> = {
      key,
      conn,
      // The deadline drops the entry made just here: the pool's, or sooner if the upstream
      // said it closes idle connections sooner (http/keep-alive.ts).
      timer: setTimeout(
        () => this.#drop(entry),
        Math.min(this.o.idleMs, conn.restLimitMs ?? Infinity),
      ),
      since: performance.now(),
    };
    entry.timer.unref?.();
    list.push(entry);
    this.#byKey.set(key, list);
    this.#order.add(entry);
    conn.park(() => this.#drop(entry));
  }

  close(): void {
    this.#closed = true;
    for (const e of [...this.#order]) this.#drop(e);
  }

  /** Forgets an idle connection (its destination too, once it has none) and closes it. */
  #drop(e: Entry<C>): void {
    if (!this.#order.delete(e)) return;
    clearTimeout(e.timer);
    const list = this.#byKey.get(e.key);
    const at = list?.indexOf(e) ?? -1;
    if (list && at >= 0) list.splice(at, 1);
    if (list && list.length === 0) this.#byKey.delete(e.key);
    e.conn.unpark();
    e.conn.destroy();
  }
}
