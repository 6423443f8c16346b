// A process-wide budget of bytes: request bodies the proxy must hold whole (small bodies
// scanned inline, bodies whose length a swap changes) draw on it for as long as they are held,
// so many parallel uploads cannot exhaust memory; a request that does not fit is refused (503)
// instead of queued. Small answers are held for redaction only when it has room. Each owner (an
// agent) may take at most `ownerShare` of it, so one agent parking bodies at a slow upstream
// cannot make every other agent's uploads fail.

export class ByteBudget {
  #used = 0;
  readonly #owners = new Map<string, number>();
  #capacity = 0;
  #ownerShare = 0;

  constructor(capacity: number, ownerShare = capacity) {
    this.resize(capacity, ownerShare);
  }

  get capacity(): number {
    return this.#capacity;
  }

  get ownerShare(): number {
    return this.#ownerShare;
  }

  /** New bounds for what is acquired next (a reload); what is held stays held. */
  resize(capacity: number, ownerShare = capacity): void {
    if (!(capacity > 0)) throw new TypeError("byte budget must be positive");
    if (!(ownerShare > 0 && ownerShare <= capacity))
      throw new TypeError("an owner's share must be positive and within the budget");
    this.#capacity = capacity;
    this.#ownerShare = ownerShare;
  }

  get used(): number {
    return this.#used;
  }

  /** Bytes `owner` holds now. */
  usedBy(owner: string): number {
    return this.#owners.get(owner) ?? 0;
  }

  /** Every owner holding bytes now, with how many. */
  holders(): [string, number][] {
    return [...this.#owners];
  }

  /** Reserve `n` bytes for `owner`; false (nothing reserved) when they do not fit. */
  acquire(n: number, owner = ""): boolean {
    const mine = this.usedBy(owner);
    if (n < 0 || this.#used + n > this.capacity || mine + n > this.ownerShare) return false;
    this.#used += n;
    if (n > 0) this.#owners.set(owner, mine + n);
    return true;
  }

  /** Give back `n` bytes `owner` reserved. */
  release(n: number, owner = ""): void {
    if (n <= 0) return;
    this.#used = Math.max(0, this.#used - n);
    const left = this.usedBy(owner) - n;
    if (left > 0) this.#owners.set(owner, left);
    else this.#owners.delete(owner);
  }
}
