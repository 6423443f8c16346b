// A process-wide budget of bytes: request bodies the proxy must hold whole (small bodies
// scanned inline, bodies whose length a swap changes) draw on it for as long as they are held,
// so many parallel uploads cannot exhaust memory; a request that does not fit is refused (503)
// instead of queued. Small answers are held for redaction only when it has room. Each owner (an
// agent) may take at most `ownerShare` of it, so one agent parking bodies at a slow upstream
// cannot make every other agent's uploads fail. What is held is counted in a shared table
// (guard/shared-table.ts), so every event loop draws on the one budget; the bounds are this
// thread's, read per use.

import { capacityFor, SharedTable } from "./shared-table.ts";

const TOTAL = "";
const [TOTAL_SPACE, OWNER_SPACE] = [0, 1];
const BYTES = 0;

export class ByteBudget {
  readonly #table: SharedTable;
  #capacity = 0;
  #ownerShare = 0;

  /** `table`: the memory of another thread's budget (`memory`); default a table of its own. */
  constructor(capacity: number, ownerShare = capacity, memory?: SharedArrayBuffer) {
    this.resize(capacity, ownerShare);
    this.#table = memory
      ? SharedTable.attach(memory)
      : SharedTable.create({ capacity: capacityFor(OWNERS + 1), ints: 0, floats: 1 });
    if (this.#table.ints !== 0 || this.#table.floats !== 1) {
      throw new TypeError("not a byte budget table");
    }
    this.#table.locked(() => {
      // The total's key never leaves, so releasing never waits on room in the table.
      if (this.#table.findOrAdd(TOTAL, TOTAL_SPACE) < 0) throw new TypeError("budget table full");
    });
  }

  /** The shared memory the holdings live in, to hand to other threads. */
  get memory(): SharedArrayBuffer {
    return this.#table.buffer;
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
    return this.#table.locked(() => this.#bytes(this.#table.find(TOTAL, TOTAL_SPACE)));
  }

  /** Bytes `owner` holds now. */
  usedBy(owner: string): number {
    return this.#table.locked(() => this.#bytes(this.#table.find(owner, OWNER_SPACE)));
  }

  /** Every owner holding bytes now, with how many. */
  holders(): [string, number][] {
    const t = this.#table;
    return this.#table.locked(() => {
      const out: [string, number][] = [];
      for (const s of t.slots()) {
        if (t.spaceOf(s) === OWNER_SPACE) out.push([t.keyOf(s)!, t.float(s, BYTES)]);
      }
      return out;
    });
  }

  /**
   * Reserve `n` bytes for `owner`; false (nothing reserved) when they do not fit — or when the
   * table has no room for another owner (as many as agent connections can be: never in use).
   */
  acquire(n: number, owner = ""): boolean {
    if (n < 0) return false;
    const t = this.#table;
    return this.#table.locked(() => {
      const total = t.find(TOTAL, TOTAL_SPACE);
      const s = t.findOrAdd(owner, OWNER_SPACE);
      if (s < 0) return false;
      const mine = t.float(s, BYTES);
      const used = t.float(total, BYTES);
      if (used + n > this.#capacity || mine + n > this.#ownerShare) {
        if (mine === 0) t.remove(s);
        return false;
      }
      t.setFloat(total, BYTES, used + n);
      if (n > 0) t.setFloat(s, BYTES, mine + n);
      else if (mine === 0) t.remove(s);
      return true;
    });
  }

  /** Give back `n` bytes `owner` reserved. */
  release(n: number, owner = ""): void {
    if (n <= 0) return;
    const t = this.#table;
    this.#table.locked(() => {
      const total = t.find(TOTAL, TOTAL_SPACE);
      t.setFloat(total, BYTES, Math.max(0, t.float(total, BYTES) - n));
      const s = t.find(owner, OWNER_SPACE);
      if (s < 0) return;
      const left = t.float(s, BYTES) - n;
      if (left > 0) t.setFloat(s, BYTES, left);
      else t.remove(s);
    });
  }

  #bytes(slot: number): number {
    return slot < 0 ? 0 : this.#table.float(slot, BYTES);
  }
}

/** Owners holding bytes at once: agents, at most one per agent connection the proxy allows. */
const OWNERS = 4096;
