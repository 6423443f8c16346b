// Audit lines for refusals that a peer can repeat at full speed, digested: the first refusal of
// a kind (what was refused, and who — an agent, an address, an agent and a host) is written at
// once; more of the same within the window are counted and written as one line, the last one's,
// with `repeated` when the window ends. A peer that retries against a cap, without a
// certificate, with a refused one, or with CONNECTs the policy or its rate refuses would
// otherwise make the proxy write a line per attempt; the metrics still count each one. Keys are
// bounded: past `maxKeys`, refusals of one kind share one key whoever they came from, so the
// caller keeps kinds to a fixed set (a code, a fixed reason) and puts what varies in `who`.

interface Window<R> {
  until: number;
  repeated: number;
  last: R;
}

/** Where refusals go to be digested: a digest, or one in another thread (an event loop's). */
export interface RefusalSink<R> {
  refuse(kind: string, who: string, r: R): void;
}

export class RefusalDigest<R> implements RefusalSink<R> {
  readonly #write: (r: R, repeated?: number) => void;
  readonly #windowMs: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window<R>>();
  #timer: ReturnType<typeof setInterval> | null = null;

  /** `write(r)` for a first refusal, `write(r, n)` for the last of n more in its window. */
  constructor(
    write: (r: R, repeated?: number) => void,
    options: { windowMs?: number; maxKeys?: number; now?: () => number; timer?: boolean } = {},
  ) {
    this.#write = write;
    this.#windowMs = options.windowMs ?? 10_000;
    this.#maxKeys = options.maxKeys ?? 1_024;
    this.#now = options.now ?? Date.now;
    if (options.timer ?? true) {
      this.#timer = setInterval(() => this.flush(), this.#windowMs);
      this.#timer.unref?.();
    }
  }

  /** One refusal of `kind` (from a fixed set) by `who`. */
  refuse(kind: string, who: string, r: R): void {
    const now = this.#now();
    let key = `${kind}\n${who}`;
    if (!this.#windows.has(key) && this.#windows.size >= this.#maxKeys) {
      this.flush(now);
      if (this.#windows.size >= this.#maxKeys) key = `${kind}\n*`;
    }
    const w = this.#windows.get(key);
    if (w && now < w.until) {
      w.repeated++;
      w.last = r;
      return;
    }
    if (w) this.#summarise(w);
    this.#write(r);
    this.#windows.set(key, { until: now + this.#windowMs, repeated: 0, last: r });
  }

  /** Writes the summaries of windows that ended, and forgets them. */
  flush(now: number = this.#now()): void {
    for (const [key, w] of this.#windows) {
      if (now < w.until) continue;
      this.#summarise(w);
      this.#windows.delete(key);
    }
  }

  /** Writes every pending summary and stops the timer. */
  close(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    for (const w of this.#windows.values()) this.#summarise(w);
    this.#windows.clear();
  }

  #summarise(w: Window<R>): void {
    if (w.repeated > 0) this.#write(w.last, w.repeated);
    w.repeated = 0;
  }
}
