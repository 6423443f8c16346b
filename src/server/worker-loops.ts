// Several event loops, one per Worker (workers/loop-worker.ts), listening on one port with
// SO_REUSEPORT: the kernel spreads new connections over them. This thread keeps what is the
// proxy's as a whole — configuration and reloads, credential sources, quarantine, the audit
// stream, the console and metrics — and drives every loop through messages. The first loop
// binds the configured port (0: the system chooses) and the others join it.

import { createServer } from "node:net";
import { AggregatorRegistry } from "prom-client";
import { ConfigError, type ConfigErrorCode } from "../config/config-error.ts";
import { toWire } from "../config/proxy-config.ts";
import { wipeSecretsWire } from "../credentials/secrets.ts";
import { availableCores } from "../guard/cgroup-probe.ts";
import { interceptionIssuer, LeafCache, type LeafSource } from "../pki/leaf-cache.ts";
import {
  LEAF_CACHE_OPTIONS,
  type LoopStats,
  type Prepared,
  sharedGuards,
  sharedRates,
} from "./loop.ts";
import type { LoopSet, LoopSetOptions } from "./loop-set.ts";
import { sumStats } from "./loop-set.ts";
import { type FromLoop, type ToLoop, toWireError, type WireError } from "./loop-wire.ts";

const WORKER_URL = new URL("../../workers/loop-worker.ts", import.meta.url);

/** Requests and their answers to one Worker loop. */
class LoopWorker {
  readonly #worker: Worker;
  readonly #pending = new Map<number, { ok(v: unknown): void; fail(e: Error): void }>();
  #nextId = 1;
  stats: LoopStats = EMPTY_STATS;
  #dead: Error | null = null;
  #closing = false;
  readonly #audit: LoopSetOptions["audit"];
  readonly #ended: LoopSetOptions["onLoopEnded"];

  readonly #leaves: LeafSource;

  constructor(
    o: LoopSetOptions,
    readonly index: number,
    leaves: LeafSource,
  ) {
    this.#leaves = leaves;
    this.#worker = new Worker(WORKER_URL);
    this.#worker.onmessage = (ev: MessageEvent<FromLoop>) => this.#received(ev.data, o);
    this.#worker.onerror = (ev) => {
      ev.preventDefault?.();
      this.#died(new Error(`event loop worker failed: ${ev.message}`));
    };
    this.#worker.addEventListener("close", () => this.#died(new Error("event loop worker exited")));
    this.#audit = o.audit;
    this.#ended = o.onLoopEnded;
  }

  #died(e: Error): void {
    if (this.#dead) return;
    this.#dead = e;
    // Its connections are gone; the other loops keep the port.
    for (const p of this.#pending.values()) p.fail(e);
    this.#pending.clear();
    if (!this.#closing) {
      this.#audit.event(
        "loop-exited",
        { loop: this.index },
        `event loop ${this.index} ended: ${e.message}`,
      );
      this.#ended?.(this.index, e.message);
    }
  }

  #received(m: FromLoop, o: LoopSetOptions): void {
    switch (m.op) {
      case "reply": {
        const p = this.#pending.get(m.id);
        this.#pending.delete(m.id);
        if (!p) return;
        if (m.ok) {
          this.stats = m.stats;
          p.ok(m.value);
        } else p.fail(fromWireError(m.error));
        return;
      }
      case "audit":
        o.audit.writeLines(m.text);
        return;
      case "violated":
        o.sinks.violated(m.agent, m.host, m.port, m.kinds, m.redactions);
        return;
      case "identified":
        o.sinks.identified(m.name, m.serial, m.notAfterMs, m.atMs);
        return;
      case "exchanged":
        o.sinks.exchanged(m.record, m.code, m.atMs, m.swapped);
        return;
      case "stats":
        this.stats = m.stats;
        return;
      case "lookup":
        o.onLookup?.(m.host);
        return;
      case "leaf":
        this.#leaves.leaf(m.host, m.owner).then(
          (leaf) => this.tell({ op: "leafIs", ref: m.ref, leaf }),
          (e: unknown) =>
            this.tell({ op: "leafIs", ref: m.ref, leaf: null, error: toWireError(e) }),
        );
        return;
      case "batch":
        for (const e of m.events) this.#received(e, o);
        return;
      case "refused":
        if (m.of === "connection") o.refusals.connections.refuse(m.kind, m.who, m.record);
        else o.refusals.requests.refuse(m.kind, m.who, m.record);
        return;
    }
  }

  /** Sends `m` with a fresh id; resolves with the loop's answer. */
  ask<T>(m: DistributiveOmit<Extract<ToLoop, { id: number }>, "id">): Promise<T> {
    if (this.#dead) return Promise.reject(this.#dead);
    const id = this.#nextId++;
    return new Promise<T>((ok, fail) => {
      this.#pending.set(id, { ok: ok as (v: unknown) => void, fail });
      this.#worker.postMessage({ ...m, id });
    });
  }

  tell(m: Exclude<ToLoop, { id: number }>): void {
    if (!this.#dead) this.#worker.postMessage(m);
  }

  /** From now on its end is the root's doing, not a crash. */
  closing(): void {
    this.#closing = true;
  }

  terminate(): void {
    this.#closing = true;
    this.#worker.terminate();
  }

  /** Ends the Worker as a crash would (tests): not a close the root asked for. */
  crashForTest(): void {
    this.#worker.terminate();
  }
}

type DistributiveOmit<T, K extends PropertyKey> = T extends unknown ? Omit<T, K> : never;

export async function startWorkerLoops(o: LoopSetOptions): Promise<LoopSet> {
  const loops: LoopWorker[] = [];
  let port = o.config.listen.port;
  await portIsFree(o.config.listen.host, port);
  const config = toWire(o.config);
  // The proxy's one leaf cache: every loop asks it for the leaves it lacks, so a host's leaf is
  // minted once and the interception CA's key stays in this thread.
  if (!("interceptionKeyPem" in o.pki)) throw new Error("Worker loops need the interception key");
  const leafCache = await LeafCache.create(
    await interceptionIssuer(o.pki.interceptionCertPem, o.pki.interceptionKeyPem),
    { ...LEAF_CACHE_OPTIONS, secureContext: false },
  );
  const leaves = leafCache.asSource();
  const pki = {
    credentials: o.pki.credentials,
    interceptionCertPem: o.pki.interceptionCertPem,
    leafKeyPem: leaves.keyPem,
  };
  // The matcher's workers shared out: each loop its part of the cores.
  const workers = o.workers ?? Math.max(1, Math.floor(availableCores() / o.count));
  const s = o.secrets.toWire();
  const shared = sharedGuards(o.config);
  try {
    for (let index = 0; index < o.count; index++) {
      const l = new LoopWorker(o, index, leaves);
      loops.push(l);
      // The first binds (the port it chose, when configured 0); the others join it.
      port = await l.ask<number>({
        op: "init",
        index,
        count: o.count,
        config,
        secrets: s,
        pki,
        port,
        workers,
        quarantine: [...o.quarantine],
        staticNames: o.staticNames,
        shared,
        claims: o.claims,
      });
    }
  } catch (e) {
    for (const l of loops) l.terminate();
    throw e;
  } finally {
    wipeSecretsWire(s);
    o.secrets.dispose();
  }
  const all = <T>(f: (l: LoopWorker) => Promise<T>) => Promise.all(loops.map(f));

  return {
    count: o.count,
    get port() {
      return port;
    },
    local: undefined,
    metricsText: async () => {
      const own = await o.metrics.registry.getMetricsAsJSON();
      const theirs = await all((l) => l.ask<object[]>({ op: "metrics" }));
      const registry = AggregatorRegistry.aggregate([own, ...theirs] as never);
      return { body: await registry.metrics(), contentType: registry.contentType };
    },
    // The copies made here are zeroed once every loop has its own.
    async install(built, cut) {
      const secrets = built.toWire();
      try {
        await all((l) => l.ask({ op: "install", secrets, cut }));
      } finally {
        wipeSecretsWire(secrets);
        built.dispose();
      }
    },
    olderDrained: () => all((l) => l.ask({ op: "olderDrained" })).then(() => {}),
    cutOlder: () => all((l) => l.ask({ op: "cutOlder" })).then(() => {}),
    applyPolicy: async (policy) => {
      const closed = await all((l) => l.ask<number>({ op: "applyPolicy", policy: toWire(policy) }));
      return closed.reduce((a, b) => a + b, 0);
    },
    async prepare(next, applied, credentials) {
      // The first loop binds a new address first: the port it chose is the one the others join.
      const ready: Prepared[] = [];
      let nextPort = next.listen.port;
      if (applied.includes("listen")) await portIsFree(next.listen.host, nextPort);
      try {
        for (const l of loops) {
          const cfg = toWire({ ...next, listen: { ...next.listen, port: nextPort } });
          const r = await l.ask<{ prepared: number; port: number }>({
            op: "prepare",
            config: cfg,
            applied: [...applied],
            credentials,
          });
          nextPort = r.port;
          ready.push({
            commit: () => l.tell({ op: "commit", prepared: r.prepared }),
            abort: () => l.tell({ op: "abort", prepared: r.prepared }),
          });
        }
      } catch (e) {
        for (const r of ready) r.abort();
        throw e;
      }
      const moved = applied.includes("listen");
      ready.push({
        commit: () => {
          if (moved) port = nextPort;
        },
        abort: () => {},
      });
      return ready;
    },
    configure: (next, ratesChanged) => {
      const cfg = toWire(next);
      // A changed rate starts with full buckets: new tables, the same for every loop.
      const rates = ratesChanged ? sharedRates(next) : {};
      for (const l of loops) l.tell({ op: "configure", config: cfg, ratesChanged, rates });
    },
    quarantined: (agent, entry) => {
      for (const l of loops) l.tell({ op: "quarantined", agent, entry });
    },
    reloadCredentials: (credentials) =>
      all((l) => l.ask({ op: "reloadCredentials", credentials })).then(() => {}),
    selfPorts: (ports) => {
      for (const l of loops) l.tell({ op: "selfPorts", ports: [...ports] });
    },
    flush: () => all((l) => l.ask({ op: "flush" })).then(() => {}),
    stats: () => sumStats(loops.map((l) => l.stats)),
    crashForTest: (index) => loops[index]?.crashForTest(),
    async close(graceMs) {
      for (const l of loops) l.closing();
      await all((l) => l.ask({ op: "close", graceMs }).catch(() => {}));
      for (const l of loops) l.terminate();
      leafCache.clear();
    },
  };
}

/**
 * Rejects with the bind error when `host:port` is held. SO_REUSEPORT would let the loops join a
 * port another process of this user holds with it (another proxy left running): a bind without
 * it first fails as a single listener's would. Port 0 is always a new one.
 */
function portIsFree(host: string, port: number): Promise<void> {
  if (port === 0) return Promise.resolve();
  return new Promise((ok, fail) => {
    const probe = createServer();
    probe.once("error", fail);
    probe.listen({ host, port, exclusive: true }, () => probe.close(() => ok()));
  });
}

/** An error a loop reported, as its kind again (a ConfigError keeps its code and field). */
function fromWireError(w: WireError): Error {
  if (w.name === "ConfigError") {
    return new ConfigError(w.code as ConfigErrorCode, w.detail ?? w.message, w.where);
  }
  const e = new Error(w.message) as Error & { code?: string };
  e.name = w.name;
  if (w.code) e.code = w.code;
  return e;
}

const EMPTY_STATS: LoopStats = {
  connections: 0,
  perAgent: [],
  upstreamIdle: 0,
  matcherWorkers: 0,
  leaves: 0,
  rules: 0,
  memoryUsed: null,
  memoryLimit: null,
};
