// Memory pressure: when the proxy's memory use nears its container's limit, connections whose
// agents have stopped reading are closed, only as many as it takes, before the kernel's OOM
// killer ends the proxy for every agent. A stalled download is the cheapest way to hold the
// proxy's memory (1.5–2 MiB a tunnel, in buffers the proxy cannot shrink: docs/SECURITY.md);
// per-agent caps bound one agent, not several acting together.
//
// A round, when use is at the shed threshold: collect garbage first (a busy proxy's use swings
// by tens of MiB of garbage), read again, and if still over, close stalled connections — at the
// first threshold those that took no byte for the grace period, at the second any — until the
// estimate of what they hold brings use back under the threshold. Who loses one is decided by
// agent, not by connection: always the agent that has the most stalled connections (its
// longest-stalled first). The proxy cannot tell a slow reader from one that reads nothing in
// less than tens of seconds (the agent's kernel reopens its receive window in steps of up to a
// megabyte), but it knows which agent holds the memory: an agent with one slow download keeps
// it while others hold dozens. While use is at the threshold, an agent holding many stalled
// connections is refused new ones (proxy-server.ts).
//
// Use is the cgroup's (what the OOM killer counts, less the page cache it can reclaim) at every
// level of the cgroup tree that has a limit, the one closest to its limit counting; outside a
// limited cgroup, the process's resident set against SLAPENIR_MEMORY_LIMIT.

import { existsSync, readFileSync } from "node:fs";
import { totalmem } from "node:os";
import { dirname, join } from "node:path";

/** What counts against a limit now, and that limit, in bytes. */
export interface MemoryReading {
  readonly used: number;
  readonly limit: number;
}

export interface MemoryProbe {
  readonly source: string;
  /**
   * The level closest to its limit, or null when no level has one. Reclaimable page cache is
   * subtracted where use is at least `near` of the limit (below that it cannot matter).
   */
  read(near: number): MemoryReading | null;
}

/** At most one full collection per this many ms (over the critical threshold: the second). */
const COLLECT_GAP_MS = 250;
const CRITICAL_COLLECT_GAP_MS = 100;
/** What a stalled connection holds, for how many to shed (measured: 1.5–2 MiB). */
const STALL_BYTES = 2 * 1024 * 1024;
/** Shed connections are counted as freed for this long (until a collection has returned it). */
const PENDING_MS = 1_000;

interface Level {
  readonly dir: string;
  readonly usageFile: string;
  readonly limitFile: string;
  readonly statKey: string;
}

/** A parsed cgroup limit, or null for none ("max", v1's near-2^63, unreadable, 0, junk). */
function parseLimit(text: string): number | null {
  const t = text.trim();
  if (!/^\d+$/.test(t)) return null;
  const n = Number(t);
  // v1 writes "no limit" as a page-rounded 2^63-1; a limit above the machine's memory never
  // binds before the machine does (the machine's own OOM handling is not the proxy's to do).
  return n > 0 && n < totalmem() ? n : null;
}

function statField(text: string, key: string): number {
  const m = new RegExp(`^${key} (\\d+)$`, "m").exec(text);
  return m ? Number(m[1]) : 0;
}

/** A level's use, less its inactive page cache once use reaches `subtractFrom` bytes. */
function useOf(l: Level, subtractFrom: number): number {
  const used = Number(readFileSync(join(l.dir, l.usageFile), "utf8"));
  if (!(used >= subtractFrom)) return used;
  const stat = readFileSync(join(l.dir, "memory.stat"), "utf8");
  return Math.max(0, used - statField(stat, l.statKey));
}

class CgroupProbe implements MemoryProbe {
  readonly source: string;
  readonly #levels: readonly Level[];
  #limits: (number | null)[] = [];
  #limitsAt = Number.NEGATIVE_INFINITY;

  constructor(source: string, levels: readonly Level[]) {
    this.source = source;
    this.#levels = levels;
  }

  /** Limits may be changed on a running container: re-read every few seconds. */
  #currentLimits(): (number | null)[] {
    const now = performance.now();
    if (now - this.#limitsAt >= 5_000) {
      this.#limitsAt = now;
      this.#limits = this.#levels.map((l) => {
        try {
          return parseLimit(readFileSync(join(l.dir, l.limitFile), "utf8"));
        } catch {
          return null;
        }
      });
    }
    return this.#limits;
  }

  read(near: number): MemoryReading | null {
    const limits = this.#currentLimits();
    let best: MemoryReading | null = null;
    for (let i = 0; i < this.#levels.length; i++) {
      const limit = limits[i];
      if (limit == null) continue;
      let used: number;
      try {
        used = useOf(this.#levels[i]!, limit * near);
      } catch {
        continue;
      }
      if (!Number.isFinite(used)) continue;
      if (!best || used / limit > best.used / best.limit) best = { used, limit };
    }
    return best;
  }

  /** The innermost level's use (less reclaimable page cache), for a configured limit. */
  ownUse(): number {
    return useOf(this.#levels[0]!, 0);
  }

  get hasLimit(): boolean {
    return this.#currentLimits().some((l) => l !== null);
  }
}

/** The cgroup levels from `dir` up to `top` (inclusive), innermost first. */
function levelsUp(dir: string, top: string, make: (d: string) => Level): Level[] {
  const out: Level[] = [];
  for (let d = dir; ; d = dirname(d)) {
    out.push(make(d));
    if (d === top || !d.startsWith(top) || d === dirname(d)) break;
  }
  return out;
}

/**
 * The memory cgroup this process runs in (v2 unified, or the v1 `memory` controller), from
 * `/proc/self/cgroup` and the mounts under `root`, with every level above it to the mount's
 * root; null when there is none. Inside a container the cgroup is usually mounted as the root
 * itself, so the mount root is tried when the named path is not there.
 */
export function cgroupProbe(
  root = "/sys/fs/cgroup",
  self = "/proc/self/cgroup",
): CgroupProbe | null {
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
    // Co-mounted controllers ("cpu,memory") keep a "memory" link to their mount in practice.
    const base = join(root, "memory");
    const dir = [join(base, v1[2]!), base].find((d) =>
      existsSync(join(d, "memory.usage_in_bytes")),
    );
    if (dir) {
      return new CgroupProbe(
        `cgroup v1 ${dir}`,
        levelsUp(dir, base, (d) => ({
          dir: d,
          usageFile: "memory.usage_in_bytes",
          limitFile: "memory.limit_in_bytes",
          // Counts the level's descendants too, as its usage does.
          statKey: "total_inactive_file",
        })),
      );
    }
  }
  const v2 = lines.map((l) => /^0::(.*)$/.exec(l)).find((m) => m);
  if (v2) {
    const dir = [join(root, v2[1]!), root].find((d) => existsSync(join(d, "memory.current")));
    if (dir) {
      // The root of the hierarchy has no memory.max: levels stop below it.
      const levels = levelsUp(dir, root, (d) => ({
        dir: d,
        usageFile: "memory.current",
        limitFile: "memory.max",
        statKey: "inactive_file",
      })).filter((l) => existsSync(join(l.dir, "memory.max")));
      if (levels.length > 0) return new CgroupProbe(`cgroup v2 ${dir}`, levels);
    }
  }
  return null;
}

/** This process's resident set, from /proc/self/statm. */
export function residentUse(): number {
  return Number(readFileSync("/proc/self/statm", "utf8").split(" ")[1]) * 4096;
}

/**
 * A configured limit (SLAPENIR_MEMORY_LIMIT): against the proxy's own cgroup when that is a
 * limited one (a container), else against its resident set (an unlimited cgroup may hold a
 * whole desktop session).
 */
export function configuredProbe(limit: number, cgroup: CgroupProbe | null): MemoryProbe {
  const own = cgroup?.hasLimit ? cgroup : null;
  return {
    source: own ? `${own.source}, limit ${limit}` : `resident set, limit ${limit}`,
    read: () => ({ used: own ? own.ownUse() : residentUse(), limit }),
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
   * Closes up to `max` connections that made no progress for `graceMs`, one at a time from
   * the agent with the most stalled connections left (young ones counted too: an agent's
   * burst is not hidden by its grace), its longest-stalled first; between agents with as many,
   * the longer-stalled one. Counts them by agent.
   */
  shed(graceMs: number, max = Number.POSITIVE_INFINITY): Map<string, number> {
    const now = this.#now();
    const byAgent = new Map<string, { held: number; due: StallEntry[] }>();
    for (const e of this.#open) {
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
    const out = new Map<string, number>();
    for (let n = 0; n < max; n++) {
      // Only an agent holding as many as the most any agent holds: if that agent's stalls are
      // all within their grace, nobody holding fewer pays for it (the critical level has none).
      let most = 0;
      for (const a of byAgent.values()) most = Math.max(most, a.held);
      let pick: { held: number; due: StallEntry[] } | undefined;
      for (const a of byAgent.values()) {
        if (a.due.length === 0 || a.held < most) continue;
        if (!pick || a.due.at(-1)!.since < pick.due.at(-1)!.since) pick = a;
      }
      const e = pick?.due.pop();
      if (!pick || !e) break;
      pick.held--;
      this.#open.delete(e);
      out.set(e.agent, (out.get(e.agent) ?? 0) + 1);
      try {
        e.shed();
      } catch {}
    }
    return out;
  }
}

export interface MemoryGuardOptions {
  readonly probe: MemoryProbe;
  /** Shed the stalls past their grace when use reaches this fraction of the limit... */
  readonly shedAt: number;
  /** ...and any stall, however young, at this one (a burst must not outrun the grace). */
  readonly criticalAt: number;
  readonly stalls: StallRegistry;
  /** A stall younger than this is left alone below `criticalAt`. */
  readonly graceMs: number;
  readonly intervalMs: number;
  /** A new stall triggers a round when the last one is at least this old. */
  readonly minGapMs: number;
  /** Told after each round that shed connections (counts by agent, use as read, limit). */
  readonly onShed: (
    shed: ReadonlyMap<string, number>,
    usedBytes: number,
    limitBytes: number,
  ) => void;
  /** Collects garbage (defaults to a full collection). */
  readonly collect?: () => void;
  readonly now?: () => number;
}

export class MemoryGuard {
  readonly #o: MemoryGuardOptions;
  readonly #now: () => number;
  #timer: ReturnType<typeof setInterval> | null = null;
  #used = 0;
  #limit: number | null = null;
  #checkedAt = Number.NEGATIVE_INFINITY;
  #pressed = false;
  #collectedAt = Number.NEGATIVE_INFINITY;
  #collectTimer: ReturnType<typeof setTimeout> | null = null;
  /** Bytes the connections shed lately held, not yet visible in the use read. */
  readonly #pending: { at: number; bytes: number }[] = [];

  constructor(o: MemoryGuardOptions) {
    this.#o = o;
    this.#now = o.now ?? (() => performance.now());
  }

  /** The limit at the last round (null: none known, the guard does nothing). */
  get limitBytes(): number | null {
    return this.#limit;
  }

  /** Use at the last round, in bytes. */
  get usedBytes(): number {
    return this.#used;
  }

  /** Use was at the shed threshold at the last round, after a collection if one was due. */
  get pressed(): boolean {
    return this.#pressed;
  }

  start(): void {
    if (this.#timer) return;
    this.check();
    this.#timer = setInterval(() => this.check(), this.#o.intervalMs);
    this.#timer.unref?.();
    // Stalled tunnels fill their buffers within milliseconds: between two timer rounds a burst
    // of them can take more than the room left, so a new stall also starts a round.
    this.#o.stalls.onBegin = () => {
      if (this.#now() - this.#checkedAt >= this.#o.minGapMs) this.check();
    };
  }

  stop(): void {
    if (this.#timer) clearInterval(this.#timer);
    this.#timer = null;
    if (this.#collectTimer) clearTimeout(this.#collectTimer);
    this.#collectTimer = null;
    this.#o.stalls.onBegin = null;
  }

  #read(): MemoryReading | null {
    // Page cache is subtracted from well below the threshold, where it may start to matter.
    const r = this.#o.probe.read(Math.max(0, this.#o.shedAt - 0.15));
    this.#limit = r?.limit ?? null;
    if (r) this.#used = r.used;
    return r;
  }

  #pendingBytes(now: number): number {
    while (this.#pending.length > 0 && now - this.#pending[0]!.at > PENDING_MS)
      this.#pending.shift();
    let sum = 0;
    for (const p of this.#pending) sum += p.bytes;
    return sum;
  }

  /** One round; returns how many connections it shed. */
  check(): number {
    const now = this.#now();
    this.#checkedAt = now;
    let r: MemoryReading | null;
    try {
      r = this.#read();
    } catch {
      return 0;
    }
    if (!r || this.#o.stalls.size === 0) {
      this.#pressed = false;
      return 0;
    }
    const { limit } = r;
    const threshold = limit * this.#o.shedAt;
    let seen = r.used;
    let used = seen - this.#pendingBytes(now);
    this.#pressed = used >= threshold;
    if (!this.#pressed) return 0;
    // Nothing to shed (every stall within its grace, below the critical level): no collection
    // either, or a busy proxy running near its threshold would collect four times a second.
    const overCritical = r.used >= limit * this.#o.criticalAt;
    if (!this.#o.stalls.any(overCritical ? 0 : this.#o.graceMs)) return 0;
    // Garbage first: a proxy streaming at full speed swings by tens of MiB of it. Near the
    // limit a collection is allowed sooner: what shed connections held only returns with one.
    const gap = overCritical ? CRITICAL_COLLECT_GAP_MS : COLLECT_GAP_MS;
    if (now - this.#collectedAt >= gap) {
      this.#collect(now);
      const again = this.#read();
      if (!again) return 0;
      seen = again.used;
      used = seen;
      this.#pressed = used >= threshold;
      if (!this.#pressed) return 0;
    }
    const critical = used >= limit * this.#o.criticalAt;
    const need = Math.ceil((used - threshold) / STALL_BYTES) + 1;
    const shed = this.#o.stalls.shed(critical ? 0 : this.#o.graceMs, need);
    let n = 0;
    for (const c of shed.values()) n += c;
    if (n === 0) return 0;
    this.#pending.push({ at: now, bytes: n * STALL_BYTES });
    this.#o.onShed(shed, seen, limit);
    // What they held is garbage now: collect it as soon as the gap allows.
    this.#collectSoon(now, critical ? CRITICAL_COLLECT_GAP_MS : COLLECT_GAP_MS);
    return n;
  }

  #collectSoon(now: number, gap: number): void {
    if (this.#collectTimer !== null) return;
    const wait = Math.max(0, this.#collectedAt + gap - now);
    this.#collectTimer = setTimeout(() => {
      this.#collectTimer = null;
      this.#collect(this.#now());
    }, wait);
    this.#collectTimer.unref?.();
  }

  /**
   * A full collection stops the proxy for tens of milliseconds: at most one per
   * COLLECT_GAP_MS, however fast stalls come.
   */
  #collect(now: number): void {
    this.#collectedAt = now;
    // What was shed before is garbage this collection returns: the next read shows it.
    this.#pending.length = 0;
    (this.#o.collect ?? (() => Bun.gc(true)))();
  }
}
