// One of the proxy's event loops in a Worker (src/server/worker-loops.ts starts it): serves
// agents on the shared port (SO_REUSEPORT) with the request path of src/server/loop.ts, and
// answers the composition root's messages (src/server/loop-wire.ts). Its audit lines, the
// violations it sees and the exchanges it serves go to the root, which writes one stream and
// decides quarantine; its copy of the quarantine is what the root last told it.

import { fromWire } from "../src/config/proxy-config.ts";
import { secretsFromWire } from "../src/credentials/secrets.ts";
import { heldVerdict, type QuarantineEntry } from "../src/guard/quarantine.ts";
import { AuditLog, internalError } from "../src/observe/audit.ts";
import { ProxyMetrics } from "../src/observe/metrics.ts";
import type { LeafMaterial, LeafSource } from "../src/pki/leaf-cache.ts";
import { type Loop, type Prepared, startLoop } from "../src/server/loop.ts";
import { type FromLoop, type ToLoop, toWireError } from "../src/server/loop-wire.ts";

declare const self: Worker;

// What the loop tells the main thread leaves in batches, one message per turn of the event loop
// (a request's audit line and its exchange travel together), in the order written; a reply
// flushes what came before it, so the main thread has it first.
let outbox: FromLoop[] = [];
let lines: string[] = [];
function post(m: FromLoop): void {
  if (outbox.length === 0 && lines.length === 0) queueMicrotask(flush);
  takeLines();
  outbox.push(m);
}
function takeLines(): void {
  if (lines.length === 0) return;
  outbox.push({ op: "audit", text: lines.join("") });
  lines = [];
}
function flush(): void {
  takeLines();
  if (outbox.length === 0) return;
  const events = outbox;
  outbox = [];
  self.postMessage(events.length === 1 ? events[0] : { op: "batch", events });
}
const auditOut = {
  write(text: string) {
    if (outbox.length === 0 && lines.length === 0) queueMicrotask(flush);
    lines.push(text);
  },
};

// As src/main.ts does for the process: an error that escaped every handler is audited and
// counted, and the loop serves on (a Worker would otherwise end with it).
const internal = (kind: string) => (e: unknown) => internalError(audit, loop?.metrics, kind, e);
process.on("uncaughtException", internal("exception"));
process.on("unhandledRejection", internal("rejection"));

const quarantine = new Map<string, QuarantineEntry>();
const prepared = new Map<number, Prepared[]>();
let nextPrepared = 1;
let loop: Loop | undefined;
let audit: AuditLog | undefined;
let statsTimer: ReturnType<typeof setInterval> | undefined;

/** The proxy's one leaf cache, in the main thread: asked for each leaf this loop lacks. */
const leafAsks = new Map<number, { ok(l: LeafMaterial): void; fail(e: Error): void }>();
let nextLeafAsk = 1;
function rootLeaves(keyPem: string): LeafSource {
  return {
    keyPem,
    leaf: (host, owner) =>
      new Promise<LeafMaterial>((ok, fail) => {
        const ref = nextLeafAsk++;
        leafAsks.set(ref, { ok, fail });
        post({ op: "leaf", ref, host, owner });
      }),
  };
}
function leafIs(m: Extract<ToLoop, { op: "leafIs" }>): void {
  const asked = leafAsks.get(m.ref);
  leafAsks.delete(m.ref);
  if (!asked) return;
  if (!m.leaf) {
    asked.fail(Object.assign(new Error(m.error?.message ?? "no leaf"), { name: m.error?.name }));
    return;
  }
  asked.ok(m.leaf);
}

/** Resolves only `names` (tests), telling the root each name asked for. */
function staticLookup(names: Readonly<Record<string, string>>) {
  return async (host: string) => {
    post({ op: "lookup", host });
    const address = names[host];
    if (address === undefined) throw new Error("ENOTFOUND");
    return [{ address, family: address.includes(":") ? 6 : 4 }];
  };
}

async function handle(m: ToLoop): Promise<unknown> {
  switch (m.op) {
    case "init": {
      const config = fromWire(m.config);
      audit = new AuditLog(config.logLevel, auditOut as never);
      for (const e of m.quarantine) quarantine.set(e.agent, e);
      const secrets = secretsFromWire(m.secrets);
      loop = await startLoop({
        config,
        secrets,
        pki: {
          credentials: m.pki.credentials,
          interceptionCertPem: m.pki.interceptionCertPem,
          leaves: rootLeaves(m.pki.leafKeyPem),
        },
        audit,
        metrics: new ProxyMetrics({ process: false }),
        sinks: {
          admitAgent: (agent) => heldVerdict(quarantine.get(agent), Date.now()),
          violated: (agent, host, port, kinds, redactions) =>
            post({ op: "violated", agent, host, port, kinds: [...kinds], redactions }),
          identified: (name, serial, notAfterMs, atMs) =>
            post({ op: "identified", name, serial, notAfterMs, atMs }),
          exchanged: (record, code, atMs, swapped) =>
            post({ op: "exchanged", record, code, atMs, swapped: [...swapped] }),
        },
        ...(m.staticNames ? { hooks: { lookup: staticLookup(m.staticNames) } } : {}),
        shared: m.shared,
        claims: m.claims,
        // Digested once for the proxy, in the main thread.
        refusals: {
          connections: {
            refuse: (kind, who, record) =>
              post({ op: "refused", of: "connection", kind, who, record }),
          },
          requests: {
            refuse: (kind, who, record) =>
              post({ op: "refused", of: "request", kind, who, record }),
          },
        },
        reusePort: true,
        port: m.port,
        index: m.index,
        count: m.count,
        ...(m.workers ? { workers: m.workers } : {}),
      });
      const l = loop;
      statsTimer = setInterval(() => post({ op: "stats", stats: l.stats() }), STATS_MS);
      statsTimer.unref?.();
      return loop.port;
    }
  }
  const l = loop;
  if (!l) throw new Error("event loop not started");
  switch (m.op) {
    case "install":
      // Both at one moment: no answer in this loop starts between the two.
      l.install(secretsFromWire(m.secrets));
      if (m.cut) l.cutOlder();
      return;
    case "olderDrained":
      return l.olderDrained();
    case "cutOlder":
      return l.cutOlder();
    case "applyPolicy":
      return l.applyPolicy(fromWire(m.policy));
    case "prepare": {
      const ready = await l.prepare(fromWire(m.config), m.applied, m.credentials);
      const id = nextPrepared++;
      prepared.set(id, ready);
      return { prepared: id, port: ready.find((r) => r.port !== undefined)?.port ?? l.port };
    }
    case "commit":
    case "abort": {
      const ready = prepared.get(m.prepared) ?? [];
      prepared.delete(m.prepared);
      for (const r of ready) m.op === "commit" ? r.commit() : r.abort();
      return;
    }
    case "configure": {
      const config = fromWire(m.config);
      audit?.setLevel(config.logLevel);
      return l.configure(config, m.ratesChanged, m.rates);
    }
    case "quarantined":
      if (m.entry) {
        quarantine.set(m.agent, m.entry);
        l.closeAgent(m.agent);
      } else quarantine.delete(m.agent);
      return;
    case "reloadCredentials":
      return l.reloadCredentials(m.credentials);
    case "selfPorts":
      return l.addSelfPorts(m.ports);
    case "metrics":
      return l.metrics.registry.getMetricsAsJSON();
    case "flush":
      // What was written so far leaves before the answer (a Worker's messages keep their order).
      return;
    case "close":
      clearInterval(statsTimer);
      await l.close(m.graceMs);
      return;
  }
}

// Messages are handled in order: a reload's prepare, commit and configure reach the loop as the
// root sent them.
// Waiting for old exchanges to end holds nothing up (the root may cut them meanwhile).
let queue: Promise<unknown> = Promise.resolve();
self.onmessage = (ev: MessageEvent<ToLoop>) => {
  const m = ev.data;
  // A leaf a handshake waits for: not behind a reload's steps.
  if (m.op === "leafIs") return leafIs(m);
  const run = async () => {
    try {
      const value = await handle(m);
      if ("id" in m && loop) post({ op: "reply", id: m.id, ok: true, value, stats: loop.stats() });
    } catch (e) {
      if ("id" in m) post({ op: "reply", id: m.id, ok: false, error: toWireError(e) });
    } finally {
      flush();
    }
  };
  if (m.op === "olderDrained") void run();
  else queue = queue.then(run);
};

const STATS_MS = 1000;
