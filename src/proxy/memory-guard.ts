// Memory pressure: when the proxy's memory use nears its container's limit, the connections
// whose agents have stopped reading are closed, longest-stalled first, before the kernel's OOM
// killer ends the proxy for every agent. A stalled download is the cheapest way to hold the
// proxy's memory (1.5–2 MiB a tunnel, in buffers the proxy cannot shrink: docs/SECURITY.md);
// per-agent caps bound one agent, not several acting together. At the first threshold only a
// connection whose agent has taken no byte for the grace period is shed, so an agent that is
// reading, even slowly, keeps its connections; at the second, every connection waiting on its
// agent goes, since a burst of stalls fills its buffers faster than any grace runs out.
//
// Use is the cgroup's (what the OOM killer counts, less the page cache it can reclaim), or the
// process's resident set when it runs in no memory cgroup; the limit is the cgroup's, or the one
// configured (SLAPENIR_MEMORY_LIMIT).

import { existsSync, readFileSync } from "node:fs";
import { totalmem } from "node:os";
import { dirname, join } from "node:path";

/** Reads memory in bytes: what counts against the limit now, and the limit (null: none). */
export interface MemoryProbe {
  readonly source: string;
  /** Use as the limit counts it, page cache included (cheap: one small file). */
  usage(): number;
  /** The part of `usage` the kernel can take back before it kills (inactive page cache). */
  reclaimable(): number;
  limit(): number | null;
}

const NO_LIMIT_V1 = 2 ** 62;
/** At most one full collection per this many ms after shedding. */
const COLLECT_GAP_MS = 250;

/**
 * The memory cgroup this process runs in (v2 unified, or v1 `memory` controller), from
 * `/proc/self/cgroup` and the mounts under `root`; null when there is none. Inside a container
 * the cgroup is usually mounted as the root itself, so the mount root is tried last.
 */
export function cgroupProbe(
  root = "/sys/fs/cgroup",
  self = "/proc/self/cgroup",
): MemoryProbe | null {
  let lines: string[];
  try {
    lines = readFileSync(self, "utf8").split("\n");
  } catch {
    return null;
  }
  const v1 = lines
    .map((l) => /^\d+:([^:]*):(.*)$/.exec(l))
    .find((m) => m?.[1]?.split(",").includes("memory"));
  if (v1) {
    const base = join(root, "memory");
    const dir = [join(base, v1[2]!), base].find((d) =>
      existsSync(join(d, "memory.usage_in_bytes")),
    );
    if (dir) return v1Probe(dir);
  }
  const v2 = lines.map((l) => /^0::(.*)$/.exec(l)).find((m) => m);
  if (v2) {
    const dir = [join(root, v2[1]!), root].find((d) => existsSync(join(d, "memory.current")));
    if (dir) return v2Probe(dir, root);
  }
  return null;
}

function statField(text: string, key: string): number {
  const m = new RegExp(`^${key} (\\d+)$`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

function v1Probe(dir: string): MemoryProbe {
  const read = (f: string) => readFileSync(join(dir, f), "utf8");
  return {
    source: `cgroup v1 ${dir}`,
    usage: () => Number(read("memory.usage_in_bytes")),
    reclaimable: () => statField(read("memory.stat"), "total_inactive_file"),
    limit: () => {
      const own = Number(read("memory.limit_in_bytes"));
      const stat = read("memory.stat");
      // An ancestor's limit applies too: the hierarchy's is in memory.stat.
      const hier = statField(stat, "hierarchical_memory_limit") || own;
      const l = Math.min(own, hier);
      return l >= NO_LIMIT_V1 ? null : l;
    },
  };
}

function v2Probe(dir: string, root: string): MemoryProbe {
  return {
    source: `cgroup v2 ${dir}`,
    usage: () => Number(readFileSync(join(dir, "memory.current"), "utf8")),
    reclaimable: () => statField(readFileSync(join(dir, "memory.stat"), "utf8"), "inactive_file"),
    limit: () => {
      // The lowest memory.max from this cgroup up to the mount's root.
      let l: number | null = null;
      for (let d = dir; d.startsWith(root); d = dirname(d)) {
        const f = join(d, "memory.max");
        if (existsSync(f)) {
          const t = readFileSync(f, "utf8").trim();
          if (t !== "max") l = Math.min(l ?? Number.POSITIVE_INFINITY, Number(t));
        }
        if (d === root) break;
      }
      return l;
    },
  };
}

/** This process's resident set, from /proc/self/statm (for a proxy in no memory cgroup). */
export function residentProbe(): MemoryProbe {
  const page = 4096;
  return {
    source: "resident set (/proc/self/statm)",
    usage: () => Number(readFileSync("/proc/self/statm", "utf8").split(" ")[1]) * page,
    reclaimable: () => 0,
    limit: () => null,
  };
}

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

  /** Closes every connection that made no progress for `graceMs`; counts them by agent. */
  shed(graceMs: number): Map<string, number> {
    const now = this.#now();
    const by = new Map<string, number>();
    const due = [...this.#open]
      .filter((e) => now - e.since >= graceMs)
      .sort((a, b) => a.since - b.since);
    for (const e of due) {
      this.#open.delete(e);
      by.set(e.agent, (by.get(e.agent) ?? 0) + 1);
      try {
        e.shed();
      } catch {}
    }
    return by;
  }
}

export interface MemoryGuardOptions {
  readonly probe: MemoryProbe;
  /** Bytes; the probe's limit when undefined. */
  readonly limitBytes?: number;
  /** Shed the stalls past their grace when use reaches this fraction of the limit... */
  readonly shedAt: number;
  /** ...and every stall, however young, at this one (a burst must not outrun the grace). */
  readonly criticalAt: number;
  readonly stalls: StallRegistry;
  /** A stall younger than this is left alone. */
  readonly graceMs: number;
  readonly intervalMs: number;
  /** A new stall triggers a round when the last one is at least this old. */
  readonly minGapMs: number;
  /** Told after each round that shed connections (counts by agent). */
  readonly onShed: (
    shed: ReadonlyMap<string, number>,
    usedBytes: number,
    limitBytes: number,
  ) => void;
  /** Collects garbage after a round that shed (defaults to a full collection). */
  readonly collect?: () => void;
}

export class MemoryGuard {
  readonly #o: MemoryGuardOptions;
  #timer: ReturnType<typeof setInterval> | null = null;
  #used = 0;
  #limit: number | null = null;
  #limitReadAt = Number.NEGATIVE_INFINITY;
  #checkedAt = Number.NEGATIVE_INFINITY;
  #collectedAt = Number.NEGATIVE_INFINITY;

  constructor(o: MemoryGuardOptions) {
    this.#o = o;
  }

  /** The limit in force (null: none known, the guard does nothing). */
  get limitBytes(): number | null {
    return this.#currentLimit();
  }

  /** Use at the last round, in bytes. */
  get usedBytes(): number {
    return this.#used;
  }

  start(): void {
    if (this.#timer) return;
    this.#timer = setInterval(() => this.check(), this.#o.intervalMs);
    this.#timer.unref?.();
    // Stalled tunnels fill their buffers within milliseconds: between two timer rounds a burst
    // of them can take more than the room left, so a new stall also starts a round.
    this.#o.stalls.onBegin = () => {
      if (performance.now() - this.#checkedAt >= this.#o.minGapMs) this.check();
    };
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    this.#o.stalls.onBegin = null;
  }

  /** One round: read use; at or over a threshold, shed stalled connections. */
  check(): number {
    this.#checkedAt = performance.now();
    const limit = this.#currentLimit();
    if (limit === null) return 0;
    const threshold = limit * this.#o.shedAt;
    let used: number;
    try {
      used = this.#o.probe.usage();
      // The page cache is only subtracted when it matters (memory.stat is the larger read).
      if (used >= threshold) used = Math.max(0, used - this.#o.probe.reclaimable());
    } catch {
      return 0;
    }
    this.#used = used;
    if (used < threshold || this.#o.stalls.size === 0) return 0;
    const critical = used >= limit * this.#o.criticalAt;
    const shed = this.#o.stalls.shed(critical ? 0 : this.#o.graceMs);
    let n = 0;
    for (const c of shed.values()) n += c;
    if (n === 0) return 0;
    // What the closed connections held is garbage now; without a collection the runtime keeps
    // it until its own schedule, and use stays at the threshold. A full collection stops the
    // proxy for tens of milliseconds: not more than one per COLLECT_GAP_MS, however fast
    // stalls come (an agent opening them nonstop must not keep the proxy collecting).
    const now = performance.now();
    if (now - this.#collectedAt >= COLLECT_GAP_MS) {
      this.#collectedAt = now;
      (this.#o.collect ?? (() => Bun.gc(true)))();
    }
    this.#o.onShed(shed, used, limit);
    return n;
  }

  /** The configured limit, or the cgroup's, re-read every few seconds (it may be changed). */
  #currentLimit(): number | null {
    if (this.#o.limitBytes !== undefined) return this.#o.limitBytes;
    const now = performance.now();
    if (now - this.#limitReadAt < 5_000) return this.#limit;
    this.#limitReadAt = now;
    try {
      const l = this.#o.probe.limit();
      // A cgroup "limit" above the machine's memory is none.
      this.#limit = l !== null && l < totalmem() ? l : null;
    } catch {
      this.#limit = null;
    }
    return this.#limit;
  }
}
