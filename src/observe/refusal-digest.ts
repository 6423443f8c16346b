// Audit lines for refused connections, digested: the first refusal of a kind (its reason, and
// the agent or the address it came from) is written at once; more of the same kind within the
// window are counted and written as one line with `repeated` when the window ends. A peer that
// retries at full speed (against a cap, without a certificate, with a refused one) would
// otherwise make the proxy write a line per attempt; the metrics still count each one. Keys
// are bounded: past `maxKeys` kinds, refusals share one key per reason.

import type { RefusedConnectionRecord } from "./audit.ts";

interface Window {
  until: number;
  repeated: number;
  last: RefusedConnectionRecord;
}

export class RefusalDigest {
  readonly #write: (r: RefusedConnectionRecord) => void;
  readonly #windowMs: number;
  readonly #maxKeys: number;
  readonly #now: () => number;
  readonly #windows = new Map<string, Window>();
  #timer: ReturnType<typeof setInterval> | null = null;

  constructor(
    write: (r: RefusedConnectionRecord) => void,
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

  /** One refusal of kind `who` (an agent or an address) for `r.reason`. */
  refuse(who: string, r: RefusedConnectionRecord): void {
    const now = this.#now();
    let key = `${r.reason}\n${who}`;
    if (!this.#windows.has(key) && this.#windows.size >= this.#maxKeys) {
      this.flush(now);
      if (this.#windows.size >= this.#maxKeys) key = `${r.reason}\n*`;
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

  #summarise(w: Window): void {
    if (w.repeated > 0) this.#write({ ...w.last, repeated: w.repeated });
    w.repeated = 0;
  }
}
