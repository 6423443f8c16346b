// A resettable deadline backed by at most one timer: pushing the deadline later (every body
// chunk does) only records the new time; the timer, when it fires early, re-arms itself for
// the rest. Moving it earlier reschedules. This replaces a clearTimeout + setTimeout (and a
// closure) per chunk on the streaming paths. It never calls `onExpire` after clear(), and
// never more than once per set().

export class Deadline {
  readonly #onExpire: () => void;
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the deadline is (performance.now() clock); 0 when cleared. */
  #due = 0;
  /** When the pending timer fires. */
  #fireAt = 0;

  constructor(onExpire: () => void) {
    this.#onExpire = onExpire;
  }

  /** Expire `ms` from now, replacing any earlier setting. */
  set(ms: number): void {
    const now = performance.now();
    this.#due = now + ms;
    // A timer that fires no later than the new deadline will find it moved and re-arm.
    if (this.#timer !== undefined && this.#fireAt <= this.#due) return;
    this.#schedule(ms, now);
  }

  clear(): void {
    this.#due = 0;
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#timer = undefined;
  }

  get armed(): boolean {
    return this.#due !== 0;
  }

  #schedule(ms: number, now: number): void {
    if (this.#timer !== undefined) clearTimeout(this.#timer);
    this.#fireAt = now + ms;
    this.#timer = setTimeout(() => this.#fire(), ms);
    this.#timer.unref?.();
  }

  #fire(): void {
    this.#timer = undefined;
    if (this.#due === 0) return;
    const now = performance.now();
    // Timers may fire a little early; only a deadline more than 1 ms away re-arms.
    if (this.#due - now > 1) {
      this.#schedule(this.#due - now, now);
      return;
    }
    this.#due = 0;
    this.#onExpire();
  }
}
