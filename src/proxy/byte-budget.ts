// A process-wide budget of bytes: request bodies the proxy must hold whole (small bodies
// scanned inline, bodies whose length a swap changes) draw on it for as long as they are held,
// so many parallel uploads cannot exhaust memory; a request that does not fit is refused (503)
// instead of queued. Small answers are held for redaction only when it has room.

export class ByteBudget {
  #used = 0;
  constructor(readonly capacity: number) {
    if (!(capacity > 0)) throw new TypeError("byte budget must be positive");
  }

  get used(): number {
    return this.#used;
  }

  /** Reserve `n` bytes; false (nothing reserved) when they do not fit. */
  acquire(n: number): boolean {
    if (n < 0 || this.#used + n > this.capacity) return false;
    this.#used += n;
    return true;
  }

  release(n: number): void {
    this.#used = Math.max(0, this.#used - n);
  }
}
