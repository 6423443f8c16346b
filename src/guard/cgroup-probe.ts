// Where the memory guard reads memory use and its limit: the cgroup the proxy runs in (v2
// `memory.current`/`memory.max`, or v1's `memory` controller) at every level of the tree that
// has a limit, the level closest to its limit counting, less the page cache the kernel can
// reclaim (what the OOM killer counts); or, with a configured limit outside a limited cgroup,
// the process's resident set. File reads only: what to do about the figures is memory-guard.ts's.

import { existsSync, readFileSync } from "node:fs";
import { availableParallelism, totalmem } from "node:os";
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

/**
 * The cores this process may use: the CPUs it may run on, lowered to its cgroup's CPU limit
 * (v2 `cpu.max`, or v1 `cpu.cfs_quota_us` / `cpu.cfs_period_us`), rounded up; at least one.
 */
export function availableCores(root = "/sys/fs/cgroup", self = "/proc/self/cgroup"): number {
  const cpus = availableParallelism();
  let quota: number | null = null;
  try {
    const lines = readFileSync(self, "utf8").split("\n");
    const v2 = lines.map((l) => /^0::(.*)$/.exec(l)).find((m) => m);
    const v1 = lines
      .map((l) => /^\d+:([^:]*):(.*)$/.exec(l))
      .find((m) => m?.[1]?.split(",").includes("cpu"));
    const read = (f: string) => {
      try {
        return readFileSync(f, "utf8");
      } catch {
        return null;
      }
    };
    if (v2) {
      for (const dir of [join(root, v2[1]!), root]) {
        const text = read(join(dir, "cpu.max"));
        if (text !== null) {
          quota = coresFromCpuMax(text);
          break;
        }
      }
    } else if (v1) {
      const base = join(root, "cpu");
      for (const dir of [join(base, v1[2]!), base]) {
        const q = read(join(dir, "cpu.cfs_quota_us"));
        const p = read(join(dir, "cpu.cfs_period_us"));
        if (q !== null && p !== null) {
          quota = coresFromCpuMax(`${q.trim()} ${p.trim()}`);
          break;
        }
      }
    }
  } catch {
    // No cgroup information: the CPUs alone.
  }
  return Math.max(1, Math.min(cpus, quota ?? cpus));
}

/** Cores a CPU limit allows (`"200000 100000"` → 2, `"150000 100000"` → 2); null: no limit. */
export function coresFromCpuMax(text: string): number | null {
  const [quota, period] = text.trim().split(/\s+/);
  const q = Number(quota);
  const p = Number(period ?? "100000");
  if (quota === "max" || quota === "-1" || !(q > 0) || !(p > 0)) return null;
  return Math.max(1, Math.ceil(q / p));
}
