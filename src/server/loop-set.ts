// The proxy's event loops as the composition root drives them: one in its own thread, or one
// per Worker (loop-worker.ts) sharing the listening port. Everything the root changes — secrets,
// policy, listeners, limits, quarantine — it changes through this, in every loop; what it
// shows — connections, caches, memory — it reads through this, summed.

import type { LivePolicy, ProxyConfig } from "../config/proxy-config.ts";
import type { SecretsConfig } from "../credentials/secrets.ts";
import type { QuarantineEntry } from "../guard/quarantine.ts";
import type { ServerCredentials } from "../net/agent/front-door.ts";
import {
  type Loop,
  type LoopHooks,
  type LoopInputs,
  type LoopStats,
  type Prepared,
  startLoop,
} from "./loop.ts";
import { startWorkerLoops } from "./worker-loops.ts";

export interface LoopSet {
  readonly count: number;
  /** The port the loops listen on (a reload may move it). */
  readonly port: number;
  /** The loop in this thread (one loop): tests reach its matcher pool. */
  readonly local: Loop | undefined;
  /** Renders /metrics when the loops keep counts of their own (Workers). */
  readonly metricsText?: () => Promise<{ body: string; contentType: string }>;
  /**
   * Takes `built` (checked by the caller) and puts it in force in every loop for new exchanges;
   * with `cut`, at the same moment in each loop, cuts what streams on older secrets.
   */
  install(built: SecretsConfig, cut: boolean): Promise<void>;
  olderDrained(): Promise<void>;
  /** Cuts what streams on secrets older than those in force, in every loop. */
  cutOlder(): Promise<void>;
  applyPolicy(next: LivePolicy): Promise<number>;
  prepare(
    next: ProxyConfig,
    applied: readonly string[],
    credentials: ServerCredentials | undefined,
  ): Promise<Prepared[]>;
  configure(next: ProxyConfig, ratesChanged: boolean): void;
  /** An agent put in quarantine (its connections closed) or let out (`null`). */
  quarantined(agent: string, entry: QuarantineEntry | null): void;
  /** Resolves once every loop's new handshakes use `c`. */
  reloadCredentials(c: ServerCredentials): Promise<void>;
  /** Ports of the proxy's own the upstream leg must never dial. */
  selfPorts(ports: readonly number[]): void;
  /** Resolves once every audit line the loops wrote so far has reached the audit stream. */
  flush(): Promise<void>;
  /** Every loop's figures, summed (per-agent counts merged). */
  stats(): LoopStats;
  /** Ends Worker loop `index` as a crash would (tests; absent with one loop). */
  readonly crashForTest?: (index: number) => void;
  close(graceMs: number): Promise<void>;
}

export interface LoopSetOptions
  extends Pick<
    LoopInputs,
    "config" | "secrets" | "pki" | "audit" | "metrics" | "sinks" | "refusals" | "workers" | "claims"
  > {
  readonly count: number;
  readonly hooks: LoopHooks;
  /** The only names Worker loops resolve, and who hears of each lookup (tests). */
  readonly staticNames?: Readonly<Record<string, string>>;
  readonly onLookup?: (host: string) => void;
  /** Who is in quarantine now (a Worker loop keeps a copy; the root tells it of changes). */
  readonly quarantine: readonly QuarantineEntry[];
  /**
   * A Worker loop ended that was not asked to (audited as `loop-exited` first). Its connections
   * are gone, and what it held in the shared tables (connection counts, stalls, perhaps their
   * lock) cannot be given back: main.ts stops the proxy, to be started again clean.
   */
  readonly onLoopEnded?: (index: number, reason: string) => void;
}

export async function startLoops(o: LoopSetOptions): Promise<LoopSet> {
  if (o.count > 1) return startWorkerLoops(o);
  const loop = await startLoop({
    config: o.config,
    secrets: o.secrets,
    pki: o.pki,
    audit: o.audit,
    metrics: o.metrics,
    sinks: o.sinks,
    refusals: o.refusals,
    claims: o.claims,
    hooks: o.hooks,
    ...(o.workers ? { workers: o.workers } : {}),
  });
  return {
    count: 1,
    get port() {
      return loop.port;
    },
    local: loop,
    async install(built, cut) {
      loop.install(built);
      if (cut) loop.cutOlder();
    },
    olderDrained: () => loop.olderDrained(),
    cutOlder: async () => loop.cutOlder(),
    applyPolicy: async (next) => loop.applyPolicy(next),
    prepare: (next, applied, credentials) => loop.prepare(next, applied, credentials),
    configure: (next, ratesChanged) => loop.configure(next, ratesChanged),
    // The sinks read the proxy's quarantine itself: only the connections need closing.
    quarantined(agent, entry) {
      if (entry) loop.closeAgent(agent);
    },
    reloadCredentials: async (c) => loop.reloadCredentials(c),
    selfPorts: (ports) => loop.addSelfPorts(ports),
    flush: async () => {},
    stats: () => loop.stats(),
    close: (graceMs) => loop.close(graceMs),
  };
}

/** Figures of several loops as one (the shared ones once, the rest summed). */
export function sumStats(all: readonly LoopStats[]): LoopStats {
  const sum = (f: (s: LoopStats) => number) => all.reduce((t, s) => t + f(s), 0);
  const first = all[0];
  return {
    connections: sum((s) => s.connections),
    // Counted in the caps' shared table: every loop has the same counts.
    perAgent: first?.perAgent ?? [],
    upstreamIdle: sum((s) => s.upstreamIdle),
    matcherWorkers: sum((s) => s.matcherWorkers),
    leaves: sum((s) => s.leaves),
    rules: first?.rules ?? 0,
    // Every loop reads the one process's memory.
    memoryUsed: first?.memoryUsed ?? null,
    memoryLimit: first?.memoryLimit ?? null,
  };
}
