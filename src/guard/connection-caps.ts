// How many agent connections may be open, counted without sockets: the listener tells it what
// opens and closes and asks before it admits. Four caps:
//   - accepted connections in all, handshakes in progress included;
//   - handshakes in progress per peer address: before its handshake ends a peer has no
//     identity, so its address is the only key (one peer opening connections that never finish
//     a handshake would otherwise take every slot and lock every agent out);
//   - authenticated connections per agent;
//   - refusals of one agent being told (a 429 kept open up to a second to be read): at most
//     TELLING_PER_AGENT (or the agent cap, if lower), beyond them a connection is closed at once,
//     so an agent opening connections as fast as it can cannot fill the total with refusals.
// The counts live in a shared table (shared-table.ts), so every event loop that attached to its
// memory decides against the same numbers; the limits are this thread's, read per use (a reload
// changes them). A table with no room for another address or agent refuses: fail closed.

import { formatIPv4, formatIPv6, mappedIPv4, parseIPv6 } from "../policy/ip-address.ts";
import { PASS, type Refused, refuse, type Verdict } from "../policy/verdict.ts";
import { capacityFor, SharedTable } from "./shared-table.ts";

const TELLING_PER_AGENT = 8;

// Key spaces: an agent's name and an address are kept apart; the total is the one key of its own.
const TOTAL_SPACE = 0;
const TOTAL = "";
const PEER = 1;
const AGENT = 2;
// Counters per key: connections (accepted, in handshake or open, by key) and refusals told.
const COUNT = 0;
const TELLING = 1;

export interface CapLimits {
  readonly perAgent: number;
  readonly handshakesPerAddress: number;
  /** Accepted connections in all (absent: not capped here). */
  readonly total?: number;
}

enum Counted {
  Yes,
  OverCap,
  TableFull,
}

export class ConnectionCaps {
  readonly #limits: CapLimits;
  readonly #table: SharedTable;

  /**
   * Caps counted in `table` (by default a new one with room for twice the total's connections,
   * each of which is counted under at most one address or agent key at a time).
   */
  constructor(limits: CapLimits, table?: SharedTable) {
    this.#limits = limits;
    this.#table = table ?? capsTable(capacityFor(2 * (limits.total ?? 1024) + 1));
    if (this.#table.ints !== 2 || this.#table.floats !== 0) {
      throw new TypeError("not a connection caps table");
    }
    // The total's key never leaves, so accepting never waits on room in the table.
    this.#table.lock();
    try {
      if (this.#table.findOrAdd(TOTAL, TOTAL_SPACE) < 0)
        throw new TypeError("connection caps table full");
    } finally {
      this.#table.unlock();
    }
  }

  /** Caps counted in a new table of `capacity` slots, to hand to other threads (`memory`). */
  static create(limits: CapLimits, options: { capacity: number }): ConnectionCaps {
    return new ConnectionCaps(limits, capsTable(options.capacity));
  }

  /** Caps counted in the table another thread created; `limits` are this thread's. */
  static attach(memory: SharedArrayBuffer, limits: CapLimits): ConnectionCaps {
    return new ConnectionCaps(limits, SharedTable.attach(memory));
  }

  /** The shared memory the counts live in. */
  get memory(): SharedArrayBuffer {
    return this.#table.buffer;
  }

  /** A TCP connection is accepted (counted when admitted), before anything else is known. */
  accept(): Verdict {
    const cap = this.#limits.total ?? Number.POSITIVE_INFINITY;
    const counted = this.#countUp(TOTAL_SPACE, TOTAL, COUNT, cap);
    return counted === Counted.Yes
      ? PASS
      : this.#refused(counted, `too many open connections (limit ${cap})`);
  }

  acceptClosed(): void {
    this.#countDown(TOTAL_SPACE, TOTAL, COUNT);
  }

  /** Accepted connections still open, across every thread counting in this table. */
  get accepted(): number {
    const t = this.#table;
    t.lock();
    try {
      return t.int(t.find(TOTAL, TOTAL_SPACE), COUNT);
    } finally {
      t.unlock();
    }
  }

  /** A connection from `address` begins its handshake (counted when admitted). */
  handshake(address: string): Verdict {
    const cap = this.#limits.handshakesPerAddress;
    const counted = this.#countUp(PEER, peerKey(address), COUNT, cap);
    return counted === Counted.Yes
      ? PASS
      : this.#refused(counted, `too many handshakes in progress from this address (limit ${cap})`);
  }

  handshakeOver(address: string): void {
    this.#countDown(PEER, peerKey(address), COUNT);
  }

  /** An authenticated connection of `agent` opens (counted when admitted). */
  open(agent: string): Verdict {
    const cap = this.#limits.perAgent;
    const counted = this.#countUp(AGENT, agent, COUNT, cap);
    return counted === Counted.Yes
      ? PASS
      : this.#refused(counted, `too many open connections for this agent (limit ${cap})`);
  }

  closed(agent: string): void {
    this.#countDown(AGENT, agent, COUNT);
  }

  /** Whether one more refusal of `agent` may be told (counted when true). */
  tell(agent: string): boolean {
    const room = Math.min(TELLING_PER_AGENT, this.#limits.perAgent);
    return this.#countUp(AGENT, agent, TELLING, room) === Counted.Yes;
  }

  told(agent: string): void {
    this.#countDown(AGENT, agent, TELLING);
  }

  /** Open authenticated connections by agent, by name (a snapshot of every thread's). */
  perAgent(): Iterable<readonly [string, number]> {
    const t = this.#table;
    const open: [string, number][] = [];
    t.lock();
    try {
      for (const s of t.slots()) {
        const n = t.int(s, COUNT);
        // An agent's name always fits (at most 64 bytes), so it is never stored as a digest.
        if (t.spaceOf(s) === AGENT && n > 0) open.push([t.keyOf(s)!, n]);
      }
    } finally {
      t.unlock();
    }
    return open.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }

  #refused(counted: Counted, overCap: string): Refused {
    return refuse(
      "connection-limit",
      counted === Counted.OverCap
        ? overCap
        : `too many agents and addresses counted at once (connection table full, ${this.#table.limit})`,
    );
  }

  /** Counts one more under `key` unless that would pass `cap`. */
  #countUp(space: number, key: string, field: number, cap: number): Counted {
    const t = this.#table;
    t.lock();
    try {
      const s = t.findOrAdd(key, space);
      if (s < 0) return Counted.TableFull;
      const n = t.int(s, field);
      if (n >= cap) {
        this.#forgetIfNone(s, space);
        return Counted.OverCap;
      }
      t.setInt(s, field, n + 1);
      return Counted.Yes;
    } finally {
      t.unlock();
    }
  }

  /** Counts one less under `key`, forgetting it at none. */
  #countDown(space: number, key: string, field: number): void {
    const t = this.#table;
    t.lock();
    try {
      const s = t.find(key, space);
      if (s < 0) return;
      t.setInt(s, field, Math.max(0, t.int(s, field) - 1));
      this.#forgetIfNone(s, space);
    } finally {
      t.unlock();
    }
  }

  #forgetIfNone(s: number, space: number): void {
    const t = this.#table;
    if (space !== TOTAL_SPACE && t.int(s, COUNT) === 0 && t.int(s, TELLING) === 0) t.remove(s);
  }
}

function capsTable(capacity: number): SharedTable {
  return SharedTable.create({ capacity, ints: 2, floats: 0 });
}

/**
 * Who a connection comes from, for the per-address handshake cap: an IPv4 address (also when
 * written IPv4-mapped), or an IPv6 address's /64 — one host is usually given a whole /64, so
 * counting single IPv6 addresses would let it pick a new one per connection.
 */
export function peerKey(address: string | undefined): string {
  if (address === undefined) return "?";
  const v6 = parseIPv6(address.replace(/%.*$/, ""));
  if (!v6) return address;
  const v4 = mappedIPv4(v6);
  if (v4) return formatIPv4(v4);
  const prefix = new Uint8Array(16);
  prefix.set(v6.subarray(0, 8));
  return `${formatIPv6(prefix)}/64`;
}
