// Prometheus metrics for operators. Labels are agent identities, decisions and status classes
// only — never hosts from agent input beyond the canonical allowlisted host, never values.

import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";

export interface PoolStatsSource {
  stats(): { queueDepth: number; inFlightBytes: number; streamsOpen: number };
}

export interface HeldBudgetSource {
  readonly capacity: number;
  holders(): [string, number][];
}

export interface LeafStatsSource {
  stats(): { hits: number; misses: number; size: number; mints: number; evictions: number };
}

export class ProxyMetrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: "slapenir_requests_total",
    help: "Requests handled, by agent, decision, status class and reason (the refusal's or failure's code; none when served)",
    labelNames: ["agent", "decision", "status", "reason"] as const,
    registers: [this.registry],
  });
  readonly swaps = new Counter({
    name: "slapenir_swaps_total",
    help: "Requests in which a credential's dummy was replaced by its real value (or its signature made again), by agent and credential",
    labelNames: ["agent", "credential"] as const,
    registers: [this.registry],
  });
  readonly redactions = new Counter({
    name: "slapenir_redactions_total",
    help: "Real credentials redacted from responses",
    labelNames: ["agent"] as const,
    registers: [this.registry],
  });
  readonly bytes = new Counter({
    name: "slapenir_bytes_total",
    help: "Body bytes through the proxy, by direction (in = agent to upstream)",
    labelNames: ["agent", "direction"] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: "slapenir_request_duration_seconds",
    help: "Time from request head to response end",
    labelNames: ["agent"] as const,
    buckets: [0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers: [this.registry],
  });
  readonly refused = new Counter({
    name: "slapenir_connections_refused_total",
    help: "Agent connections refused, by reason (handshake, identity, a connection cap)",
    labelNames: ["reason"] as const,
    registers: [this.registry],
  });
  readonly violations = new Counter({
    name: "slapenir_violations_total",
    help: "Requests that broke the credential rules, by agent and kind (dlp, rules, foreign-dummy)",
    labelNames: ["agent", "kind"] as const,
    registers: [this.registry],
  });
  readonly connections = new Gauge({
    name: "slapenir_connections_open",
    help: "Agent connections currently open",
    registers: [this.registry],
  });
  readonly internalErrors = new Counter({
    name: "slapenir_internal_errors_total",
    help: "Errors that escaped every handler (the proxy kept serving)",
    labelNames: ["kind"] as const,
    registers: [this.registry],
  });
  readonly shed = new Counter({
    name: "slapenir_connections_shed_total",
    help: "Connections closed under memory pressure because their agent stopped reading, by agent",
    labelNames: ["agent"] as const,
    registers: [this.registry],
  });
  readonly websockets = new Counter({
    name: "slapenir_websockets_total",
    help: "WebSockets relayed, by agent and event (opened, closed)",
    labelNames: ["agent", "event"] as const,
    registers: [this.registry],
  });
  readonly sources = new Counter({
    name: "slapenir_credential_source_total",
    help: "Credential source readings, by credential and result (fetched, unchanged, failed, expired)",
    labelNames: ["credential", "result"] as const,
    registers: [this.registry],
  });
  readonly certCache = new Counter({
    name: "slapenir_leaf_cert_cache_total",
    help: "Interception leaf certificate lookups by result",
    labelNames: ["result"] as const,
    registers: [this.registry],
  });

  /**
   * `process: false` for a Worker's loop: the process's own figures (CPU, memory, event loop)
   * are the composition root's to report, once.
   */
  constructor(o: { process?: boolean } = {}) {
    if (o.process === false) return;
    collectDefaultMetrics({ register: this.registry, prefix: "slapenir_" });
    // prom-client names three gauges `_total`, which Prometheus reserves for counters
    // (promtool check metrics refuses them): the process's handle counts are not kept.
    for (const n of ["active_handles", "active_requests", "active_resources"]) {
      this.registry.removeSingleMetric(`slapenir_nodejs_${n}_total`);
    }
  }

  /** The matcher pool's queue, bytes in flight and open streams, read when scraped. */
  watchPool(pool: PoolStatsSource): void {
    new Gauge({
      name: "slapenir_matcher_queue_depth",
      help: "Chunks queued or in flight in the matcher worker pool",
      registers: [this.registry],
      collect() {
        this.set(pool.stats().queueDepth);
      },
    });
    new Gauge({
      name: "slapenir_matcher_inflight_bytes",
      help: "Bytes in flight in the matcher worker pool",
      registers: [this.registry],
      collect() {
        this.set(pool.stats().inFlightBytes);
      },
    });
    new Gauge({
      name: "slapenir_matcher_streams_open",
      help: "Scan streams open in the matcher worker pool",
      registers: [this.registry],
      collect() {
        this.set(pool.stats().streamsOpen);
      },
    });
  }

  /** The held-body budget and the leaf-certificate cache, read when scraped. */
  watchCaches(leaves?: LeafStatsSource, held?: HeldBudgetSource): void {
    if (held) {
      new Gauge({
        name: "slapenir_held_body_bytes",
        help: "Bytes of request bodies held whole, charged to the held-body budget, by agent",
        labelNames: ["agent"] as const,
        registers: [this.registry],
        // One budget for every event loop (a shared table): each reads the same holdings.
        aggregator: "first",
        collect() {
          this.reset();
          for (const [agent, bytes] of held.holders()) this.set({ agent }, bytes);
        },
      });
      new Gauge({
        name: "slapenir_held_body_budget_bytes",
        help: "The held-body budget (SLAPENIR_HELD_BODY_BUDGET_BYTES); beyond it requests get 503",
        registers: [this.registry],
        aggregator: "first",
        collect() {
          this.set(held.capacity);
        },
      });
    }
    if (leaves) {
      new Gauge({
        name: "slapenir_leaf_cert_cache_entries",
        help: "Interception leaf certificates cached",
        registers: [this.registry],
        collect() {
          this.set(leaves.stats().size);
        },
      });
      // Counts the cache keeps itself, exposed as counters (one type per name).
      for (const [figure, help] of [
        ["mints", "Interception leaf certificates minted"],
        ["evictions", "Interception leaf certificates evicted from the cache"],
      ] as const) {
        let seen = 0;
        new Counter({
          name: `slapenir_leaf_cert_${figure}_total`,
          help,
          registers: [this.registry],
          collect() {
            const now = leaves.stats()[figure];
            if (now > seen) this.inc(now - seen);
            seen = now;
          },
        });
      }
    }
  }

  /**
   * Gauges read when scraped: each agent's open connections (against
   * SLAPENIR_MAX_AGENT_CONNECTIONS) and the idle upstream connections kept alive.
   */
  watchConnections(src: {
    perAgent(): Iterable<readonly [string, number]>;
    upstreamIdle(): number;
    accepted(): number;
  }): void {
    new Gauge({
      name: "slapenir_connections_accepted",
      help: "Agent connections accepted and open, handshakes included (capped by SLAPENIR_MAX_CONNECTIONS)",
      registers: [this.registry],
      // Counted in the caps' shared table: every event loop reads the same count.
      aggregator: "first",
      collect() {
        this.set(src.accepted());
      },
    });
    new Gauge({
      name: "slapenir_agent_connections_open",
      help: "Authenticated connections open, by agent (capped by SLAPENIR_MAX_AGENT_CONNECTIONS)",
      labelNames: ["agent"] as const,
      registers: [this.registry],
      // Counted in the caps' shared table: every event loop reads the same counts.
      aggregator: "first",
      collect() {
        this.reset();
        for (const [agent, n] of src.perAgent()) this.set({ agent }, n);
      },
    });
    new Gauge({
      name: "slapenir_upstream_idle_connections",
      help: "Idle keep-alive connections to upstreams",
      registers: [this.registry],
      collect() {
        this.set(src.upstreamIdle());
      },
    });
  }

  /** The memory the guard watches and its limit (bytes), read when scraped; 0: no limit known. */
  watchMemory(src: { used(): number; limit(): number | null; stalled?(): number }): void {
    if (src.stalled) {
      const stalled = src.stalled;
      new Gauge({
        name: "slapenir_connections_stalled",
        help: "Connections waiting for their agents to take bytes (what the memory guard may shed)",
        registers: [this.registry],
        collect() {
          this.set(stalled());
        },
      });
    }
    new Gauge({
      name: "slapenir_memory_used_bytes",
      // Every event loop reads the one process's memory.
      aggregator: "max",
      help: "Memory counted against the proxy's limit (its cgroup's use less reclaimable page cache); 0 without a limit",
      registers: [this.registry],
      collect() {
        this.set(src.limit() === null ? 0 : src.used());
      },
    });
    new Gauge({
      name: "slapenir_memory_limit_bytes",
      aggregator: "max",
      help: "The proxy's memory limit (its container's, or SLAPENIR_MEMORY_LIMIT); 0 when none is known",
      registers: [this.registry],
      collect() {
        this.set(src.limit() ?? 0);
      },
    });
  }

  /** Seconds until the proxy's own server certificate expires, read when scraped. */
  watchCertificate(notAfterMs: () => number): void {
    new Gauge({
      name: "slapenir_certificate_expiry_seconds",
      help: "Seconds until the proxy's server certificate expires (renewal replaces it)",
      registers: [this.registry],
      collect() {
        const t = notAfterMs();
        if (Number.isFinite(t)) this.set((t - Date.now()) / 1000);
      },
    });
  }
}
