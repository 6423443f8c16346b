// The connections waiting for their agents to take bytes, and since when each made no progress:
// what the memory guard may shed. Which of them to shed is a pure choice (chooseVictims): by
// agent, not by connection — always the agent holding the most stalled connections, its
// longest-stalled first — because the proxy cannot tell a slow reader from one that reads
// nothing in less than tens of seconds, but it knows which agent holds the memory.
// With several event loops each has its own registry, and every agent's count across them lives
// in shared memory (StallCounts): ranks and admission are the agent's across the proxy.

import { capacityFor, SharedTable } from "./shared-table.ts";

/** One connection waiting for its agent to take bytes. */
export interface Stall {
  /** The agent took some: the stall starts over. */
  progress(): void;
  /**
   * The write finished: no longer waiting. For LINGER_MS the connection still counts towards its
   * agent's stalled connections (`stalledBy`), so one that trickles a few bytes between stalls
   * is not let off between them; it is not shed meanwhile.
   */
  end(): void;
  /** Waiting again after `end`: the same connection, without progress from now. */
  again(): void;
  /** The connection is gone: forgotten at once. */
  close(): void;
}

/**
 * How long an ended stall still counts towards its agent: just after an agent stops reading its
 * kernel keeps taking bytes for a while, and each gulp ends one stall and begins the next.
 */
export const LINGER_MS = 1000;

interface StallEntry {
  since: number;
  /** When the write finished (the entry lingers), or null while waiting. */
  endedAt: number | null;
  readonly agent: string;
  readonly shed: () => void;
}

/** The connections currently waiting on their agents, and since when they made no progress. */
export class StallRegistry {
  readonly #open = new Set<StallEntry>();
  readonly #now: () => number;
  readonly #counts: StallCounts | null;
  /** Told (after the current call) when a connection starts waiting: memory may be rising. */
  onBegin: (() => void) | null = null;

  /**
   * `counts`: every loop's stalls by agent, this registry's included (several loops). `now`: the
   * clock, in ms; with `counts`, one every thread reads alike (the default is the wall clock's
   * milliseconds: performance.now() has an origin per thread).
   */
  constructor(
    now: () => number = () => performance.timeOrigin + performance.now(),
    counts: StallCounts | null = null,
  ) {
    this.#now = now;
    this.#counts = counts;
  }

  /** `e`, not in the registry, waits (again). */
  #add(e: StallEntry): void {
    this.#open.add(e);
    this.#counts?.add(e.agent, 1, 1);
  }

  #delete(e: StallEntry): void {
    if (this.#open.delete(e)) this.#counts?.add(e.agent, -1, e.endedAt === null ? -1 : 0);
  }

  /** How many connections are waiting now. */
  get size(): number {
    let n = 0;
    for (const e of this.#open) if (e.endedAt === null) n++;
    return n;
  }

  /**
   * Forgets stalls that ended LINGER_MS ago or more. Run by every guard round as well, so what
   * lingers here leaves the other loops' counts too.
   */
  prune(): void {
    const now = this.#now();
    for (const e of this.#open)
      if (e.endedAt !== null && now - e.endedAt >= LINGER_MS) this.#delete(e);
  }

  begin(agent: string, shed: () => void): Stall {
    const e: StallEntry = { since: this.#now(), endedAt: null, agent, shed };
    this.#add(e);
    if (this.onBegin) queueMicrotask(this.onBegin);
    return {
      progress: () => {
        e.since = this.#now();
      },
      end: () => {
        if (!this.#open.has(e) || e.endedAt !== null) return;
        e.endedAt = this.#now();
        this.#counts?.add(e.agent, 0, -1, e.endedAt + LINGER_MS);
      },
      again: () => {
        const known = this.#open.has(e);
        if (known && e.endedAt === null) return; // still waiting: its grace runs on
        e.since = this.#now();
        e.endedAt = null;
        if (known) this.#counts?.add(e.agent, 0, 1);
        else {
          this.#add(e);
          if (this.onBegin) queueMicrotask(this.onBegin);
        }
      },
      close: () => {
        this.#delete(e);
      },
    };
  }

  /** Whether any connection waiting now made no progress for `graceMs`. */
  any(graceMs: number): boolean {
    const now = this.#now();
    for (const e of this.#open) if (e.endedAt === null && now - e.since >= graceMs) return true;
    return false;
  }

  /** How many of `agent`'s connections (in every loop) wait on it, or did within LINGER_MS. */
  stalledBy(agent: string): number {
    this.prune();
    if (this.#counts) return this.#counts.of(agent, this.#now());
    let n = 0;
    for (const e of this.#open) if (e.agent === agent) n++;
    return n;
  }

  /** Other loops' waiting stalls, for the ranks (none with one loop). */
  #elsewhere(waiting: readonly StallEntry[]): Elsewhere | undefined {
    if (!this.#counts) return undefined;
    const mine = new Map<string, number>();
    for (const e of waiting) mine.set(e.agent, (mine.get(e.agent) ?? 0) + 1);
    return this.#counts.elsewhere(mine);
  }

  /**
   * Closes up to `max` connections that made no progress for `graceMs` (chooseVictims says
   * which) and counts them by agent.
   */
  shed(graceMs: number, max = Number.POSITIVE_INFINITY): Map<string, number> {
    const waiting = [...this.#open].filter((e) => e.endedAt === null);
    const victims = chooseVictims(waiting, this.#now(), graceMs, max, this.#elsewhere(waiting));
    const out = new Map<string, number>();
    for (const e of victims) {
      this.#delete(e);
      out.set(e.agent, (out.get(e.agent) ?? 0) + 1);
      try {
        e.shed();
      } catch {}
    }
    return out;
  }
}

/**
 * Stalls in the other event loops, which only rank agents (a loop sheds its own): the count of
 * each agent that has stalls here, and the most any other agent holds.
 */
export interface Elsewhere {
  readonly of: ReadonlyMap<string, number>;
  readonly most: number;
}

/** A stalled connection as the choice sees it: whose, and since when without progress. */
export interface StallFacts {
  readonly agent: string;
  readonly since: number;
}

/**
 * Which stalls to shed, at most `max`, of those without progress for `graceMs` at `now`: one at
 * a time from the agent with the most stalled connections left (young ones counted too: an
 * agent's burst is not hidden by its grace), its longest-stalled first; between agents holding
 * as many, the longer-stalled one. Only an agent holding as many as the most any agent holds
 * loses one: if that agent's stalls are all within their grace, nobody holding fewer pays for it.
 */
export function chooseVictims<S extends StallFacts>(
  stalls: readonly S[],
  now: number,
  graceMs: number,
  max: number,
  elsewhere?: Elsewhere,
): S[] {
  const byAgent = new Map<string, { held: number; due: S[] }>();
  for (const e of stalls) {
    let a = byAgent.get(e.agent);
    if (!a) {
      a = { held: elsewhere?.of.get(e.agent) ?? 0, due: [] };
      byAgent.set(e.agent, a);
    }
    a.held++;
    if (now - e.since >= graceMs) a.due.push(e);
  }
  // Each agent's due list, longest-stalled last (of as long, the first begun): pop() takes it.
  for (const a of byAgent.values()) a.due.sort((x, y) => x.since - y.since).reverse();
  const out: S[] = [];
  while (out.length < max) {
    let most = elsewhere?.most ?? 0;
    for (const a of byAgent.values()) most = Math.max(most, a.held);
    let pick: { held: number; due: S[] } | undefined;
    for (const a of byAgent.values()) {
      if (a.due.length === 0 || a.held < most) continue;
      if (!pick || a.due.at(-1)!.since < pick.due.at(-1)!.since) pick = a;
    }
    const e = pick?.due.pop();
    if (!pick || !e) break;
    pick.held--;
    out.push(e);
  }
  return out;
}

/**
 * Each agent's stalled connections in every event loop, in shared memory (shared-table.ts): those
 * waiting now (what ranks an agent for shedding, as with one loop) and those with the ones that
 * lingered (what admission counts).
 */
export class StallCounts {
  readonly #t: SharedTable;

  /** A new table with room for `connections` agents (no more can stall than are connected). */
  static create(connections: number): StallCounts {
    return new StallCounts(
      SharedTable.create({ capacity: capacityFor(connections), ints: 2, floats: 1 }).buffer,
    );
  }

  constructor(memory: SharedArrayBuffer) {
    this.#t = SharedTable.attach(memory);
    if (this.#t.ints !== 2 || this.#t.floats !== 1) throw new TypeError("not a stall table");
  }

  get memory(): SharedArrayBuffer {
    return this.#t.buffer;
  }

  /**
   * Changes `agent`'s counts: all its stalls (lingering ones too), and those waiting;
   * `lingerUntil`: a stall of it ended, and lingers until then.
   */
  add(agent: string, all: number, waiting: number, lingerUntil?: number): void {
    const t = this.#t;
    t.locked(() => {
      const s = all > 0 ? t.findOrAdd(agent) : t.find(agent);
      // Full (it cannot be: an agent stalls only while connected) or never counted.
      if (s < 0) return;
      const n = Math.max(0, t.int(s, ALL) + all);
      if (n === 0) t.remove(s);
      else {
        t.setInt(s, ALL, n);
        t.setInt(s, WAITING, Math.min(n, Math.max(0, t.int(s, WAITING) + waiting)));
        if (lingerUntil !== undefined && lingerUntil > t.float(s, LINGERING_UNTIL)) {
          t.setFloat(s, LINGERING_UNTIL, lingerUntil);
        }
      }
    });
  }

  /**
   * `agent`'s stalls in every loop at `now`, lingering ones included — but none that lingered
   * past their time in a loop that has not pruned them yet.
   */
  of(agent: string, now: number): number {
    const t = this.#t;
    return t.locked(() => {
      const s = t.find(agent);
      if (s < 0) return 0;
      return now < t.float(s, LINGERING_UNTIL) ? t.int(s, ALL) : t.int(s, WAITING);
    });
  }

  /** What the loop waiting on `mine` (stalls by agent) sees of the others' waiting stalls. */
  elsewhere(mine: ReadonlyMap<string, number>): Elsewhere {
    const t = this.#t;
    return t.locked(() => {
      const of = new Map<string, number>();
      const own = new Set<number>();
      for (const [agent, n] of mine) {
        const s = t.find(agent);
        if (s >= 0) own.add(s);
        of.set(agent, Math.max(0, (s < 0 ? 0 : t.int(s, WAITING)) - n));
      }
      // Every other agent, those with only lingering stalls in this loop included.
      let most = 0;
      for (const s of t.slots()) if (!own.has(s)) most = Math.max(most, t.int(s, WAITING));
      return { of, most };
    });
  }
}

const ALL = 0;
const WAITING = 1;
/** The float field: when the last of the agent's ended stalls stops lingering. */
const LINGERING_UNTIL = 0;
