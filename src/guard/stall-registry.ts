// The connections waiting for their agents to take bytes, and since when each made no progress:
// what the memory guard may shed. Which of them to shed is a pure choice (chooseVictims): by
// agent, not by connection — always the agent holding the most stalled connections, its
// longest-stalled first — because the proxy cannot tell a slow reader from one that reads
// nothing in less than tens of seconds, but it knows which agent holds the memory.

/** One connection waiting for its agent to take bytes. */
export interface Stall {
  /** The agent took some: the stall starts over. */
  progress(): void;
  /** The write finished or failed: no longer stalled. */
  end(): void;
}

interface StallEntry {
  since: number;
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

  get size(): number {
    return this.#open.size;
  }

  begin(agent: string, shed: () => void): Stall {
    const e: StallEntry = { since: this.#now(), agent, shed };
    this.#open.add(e);
    if (this.onBegin) queueMicrotask(this.onBegin);
    return {
      progress: () => {
        e.since = this.#now();
      },
      end: () => {
        this.#open.delete(e);
      },
    };
  }

  /** Whether any connection made no progress for `graceMs`. */
  any(graceMs: number): boolean {
    const now = this.#now();
    for (const e of this.#open) if (now - e.since >= graceMs) return true;
    return false;
  }

  /** How many of `agent`'s connections are stalled. */
  stalledBy(agent: string): number {
    let n = 0;
    for (const e of this.#open) if (e.agent === agent) n++;
    return n;
  }

  /**
   * Closes up to `max` connections that made no progress for `graceMs` (chooseVictims says
   * which) and counts them by agent.
   */
  shed(graceMs: number, max = Number.POSITIVE_INFINITY): Map<string, number> {
    const victims = chooseVictims([...this.#open], this.#now(), graceMs, max);
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
