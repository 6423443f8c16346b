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
// Use is read by a probe (cgroup-probe.ts); the stalls and the choice of whom to shed are the
// registry's (stall-registry.ts).

import type { MemoryProbe, MemoryReading } from "./cgroup-probe.ts";
import type { StallRegistry } from "./stall-registry.ts";

/** At most one full collection per this many ms (over the critical threshold: the second). */
const COLLECT_GAP_MS = 250;
const CRITICAL_COLLECT_GAP_MS = 100;
/** What a stalled connection holds, for how many to shed (measured: 1.5–2 MiB). */
const STALL_BYTES = 2 * 1024 * 1024;
/** Shed connections are counted as freed for this long (until a collection has returned it). */
const PENDING_MS = 1_000;

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
  /** Event loops in the process, each with its guard: each sheds its share of the excess. */
  readonly loops?: number;
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
    // Every round, pressed or not: another loop's admission reads what lingers here.
    this.#o.stalls.prune();
    let r: MemoryReading | null;
    try {
      r = this.#read();
    } catch {
      return 0;
    }
    if (!r) {
      this.#pressed = false;
      return 0;
    }
    const { limit } = r;
    const threshold = limit * this.#o.shedAt;
    let seen = r.used;
    let used = seen - this.#pendingBytes(now);
    // Pressed whether or not this loop holds stalls: an agent's may be in another loop.
    this.#pressed = used >= threshold;
    if (!this.#pressed || this.#o.stalls.size === 0) return 0;
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
    const { critical, need } = shedNeed(
      used,
      limit,
      this.#o.shedAt,
      this.#o.criticalAt,
      this.#o.loops ?? 1,
    );
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

/**
 * What a round over the threshold sheds: how many stalled connections it takes to bring `used`
 * back under `shedAt` of `limit` (each counted at what a stalled connection holds, one more for
 * the estimate's error) — of `loops` event loops each its share —, and whether use is critical
 * (young stalls may go too).
 */
export function shedNeed(
  used: number,
  limit: number,
  shedAt: number,
  criticalAt: number,
  loops = 1,
): { readonly critical: boolean; readonly need: number } {
  const over = Math.max(0, used - limit * shedAt);
  return {
    critical: used >= limit * criticalAt,
    need: Math.ceil(over / STALL_BYTES / loops) + 1,
  };
}
