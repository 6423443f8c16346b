// Token buckets by key (an agent, a peer address): a hijacked agent cannot flood upstreams
// through the proxy. Pure arithmetic on an injectable clock. The buckets live in a shared table
// (shared-table.ts), so every event loop attached to its memory draws on the same tokens; the
// rate and burst are this thread's. When the table has no room for a new key, buckets idle long
// enough to be full again are dropped (a full bucket and none decide alike); if that frees
// nothing the take is refused, saying the table is full — never admitted unmetered.

import { PASS, refuse, type Verdict } from "../policy/verdict.ts";
import { capacityFor, SharedTable } from "./shared-table.ts";

// Fields per key: the tokens left, and when they were counted.
const TOKENS = 0;
const AT = 1;
/** Room for as many keys as were kept before a sweep when buckets lived in a Map. */
const DEFAULT_CAPACITY = capacityFor(4096);

/**
 * Milliseconds on one origin for every thread: `performance.now()` starts at each thread's own
 * origin, so a bucket written by one thread would be read as from the future by another.
 */
export function sharedNow(): number {
  return performance.timeOrigin + performance.now();
}

const TAKEN = 0;
const OVER_RATE = 1;
const TABLE_FULL = 2;
type Taken = typeof TAKEN | typeof OVER_RATE | typeof TABLE_FULL;

export class RateLimiter {
  readonly #table: SharedTable;

  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = sharedNow,
    table?: SharedTable,
  ) {
    if (!(perSecond > 0) || !(burst >= 1)) throw new TypeError("rate limit must be positive");
    this.#table = table ?? bucketTable(DEFAULT_CAPACITY);
    if (this.#table.ints !== 0 || this.#table.floats !== 2) {
      throw new TypeError("not a rate limit table");
    }
  }

  /** Buckets in a new table of `capacity` slots, to hand to other threads (`memory`). */
  static create(
    perSecond: number,
    burst: number,
    options: { capacity: number; now?: () => number },
  ): RateLimiter {
    return new RateLimiter(perSecond, burst, options.now, bucketTable(options.capacity));
  }

  /** Buckets in the table another thread created; the rate and burst are this thread's. */
  static attach(
    memory: SharedArrayBuffer,
    perSecond: number,
    burst: number,
    now?: () => number,
  ): RateLimiter {
    return new RateLimiter(perSecond, burst, now, SharedTable.attach(memory));
  }

  /** The shared memory the buckets live in. */
  get memory(): SharedArrayBuffer {
    return this.#table.buffer;
  }

  /** Take one token for `agent`; false when the agent is over its rate (or no bucket fits). */
  take(agent: string): boolean {
    return this.#take(agent) === TAKEN;
  }

  /** `take`, as a verdict: refused with `overRate`, or with why no bucket could be kept. */
  admit(key: string, overRate: string): Verdict {
    const taken = this.#take(key);
    if (taken === TAKEN) return PASS;
    return refuse(
      "rate-limited",
      taken === OVER_RATE
        ? overRate
        : `too many keys metered at once (rate table full, ${this.#table.limit})`,
    );
  }

  #take(key: string): Taken {
    const t = this.now();
    const table = this.#table;
    table.lock();
    try {
      let s = table.find(key);
      if (s < 0) {
        s = table.findOrAdd(key);
        if (s < 0 && table.sweep((slot) => this.#isFull(slot, t)) > 0) s = table.findOrAdd(key);
        if (s < 0) return TABLE_FULL;
        table.setFloat(s, TOKENS, this.burst);
        table.setFloat(s, AT, t);
      }
      const at = table.float(s, AT);
      // Another thread's clock may be a little behind the one that wrote `at`: time never
      // runs backwards for a bucket, so a late reader neither takes tokens away nor moves it.
      const tokens = Math.min(
        this.burst,
        table.float(s, TOKENS) + (Math.max(0, t - at) / 1000) * this.perSecond,
      );
      table.setFloat(s, AT, Math.max(at, t));
      if (tokens < 1) {
        table.setFloat(s, TOKENS, tokens);
        return OVER_RATE;
      }
      table.setFloat(s, TOKENS, tokens - 1);
      return TAKEN;
    } finally {
      table.unlock();
    }
  }

  /** Whether the bucket in `slot` has refilled to its burst by `t` (the same as no bucket). */
  #isFull(slot: number, t: number): boolean {
    const table = this.#table;
    const idle = Math.max(0, t - table.float(slot, AT));
    return table.float(slot, TOKENS) + (idle / 1000) * this.perSecond >= this.burst;
  }
}

function bucketTable(capacity: number): SharedTable {
  return SharedTable.create({ capacity, ints: 0, floats: 2 });
}
