// The connections waiting for their agents to take bytes, and since when each made no progress:
// what the memory guard may shed. Which of them to shed is a pure choice (chooseVictims): by
// agent, not by connection — always the agent holding the most stalled connections, its
// longest-stalled first — because the proxy cannot tell a slow reader from one that reads
// nothing in less than tens of seconds, but it knows which agent holds the memory.

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
  /** Told (after the current call) when a connection starts waiting: memory may be rising. */
  onBegin: (() => void) | null = null;

  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
  }

  /** How many connections are waiting now. */
  get size(): number {
    this.#prune();
    let n = 0;
    for (const e of this.#open) if (e.endedAt === null) n++;
    return n;
  }

  /** Forgets stalls that ended more than LINGER_MS ago. */
  #prune(): void {
    const now = this.#now();
    for (const e of this.#open)
      if (e.endedAt !== null && now - e.endedAt >= LINGER_MS) this.#open.delete(e);
  }

  begin(agent: string, shed: () => void): Stall {
    const e: StallEntry = { since: this.#now(), endedAt: null, agent, shed };
    this.#open.add(e);
    if (this.onBegin) queueMicrotask(this.onBegin);
    return {
      progress: () => {
        e.since = this.#now();
      },
      end: () => {
        if (this.#open.has(e) && e.endedAt === null) e.endedAt = this.#now();
      },
      again: () => {
        const lingering = this.#open.has(e);
        if (lingering && e.endedAt === null) return; // still waiting: its grace runs on
        e.since = this.#now();
        e.endedAt = null;
        this.#open.add(e);
        if (!lingering && this.onBegin) queueMicrotask(this.onBegin);
      },
      close: () => {
        this.#open.delete(e);
      },
    };
  }

  /** Whether any connection waiting now made no progress for `graceMs`. */
  any(graceMs: number): boolean {
    const now = this.#now();
    for (const e of this.#open) if (e.endedAt === null && now - e.since >= graceMs) return true;
    return false;
  }

  /** How many of `agent`'s connections are waiting on it, or were within LINGER_MS. */
  stalledBy(agent: string): number {
    this.#prune();
    let n = 0;
    for (const e of this.#open) if (e.agent === agent) n++;
    return n;
  }

  /**
   * Closes up to `max` connections that made no progress for `graceMs` (chooseVictims says
   * which) and counts them by agent.
   */
  shed(graceMs: number, max = Number.POSITIVE_INFINITY): Map<string, number> {
    const waiting = [...this.#open].filter((e) => e.endedAt === null);
    const victims = chooseVictims(waiting, this.#now(), graceMs, max);
    const out = new Map<string, number>();
    for (const e of victims) {
      this.#open.delete(e);
      out.set(e.agent, (out.get(e.agent) ?? 0) + 1);
      try {
        e.shed();
      } catch {}
    }
    return out;
  }
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
): S[] {
  const byAgent = new Map<string, { held: number; due: S[] }>();
  for (const e of stalls) {
    let a = byAgent.get(e.agent);
    if (!a) {
      a = { held: 0, due: [] };
      byAgent.set(e.agent, a);
    }
    a.held++;
    if (now - e.since >= graceMs) a.due.push(e);
  }
  // Each agent's due list, longest-stalled last (of as long, the first begun): pop() takes it.
  for (const a of byAgent.values()) a.due.sort((x, y) => x.since - y.since).reverse();
  const out: S[] = [];
  while (out.length < max) {
    let most = 0;
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
