// One event loop's share of the proxy: the agent listener, the request path, the upstream
// client and its idle pool, the matcher pool, and the per-connection guards. The composition
// root (proxy-server.ts) runs one in its own thread, or one per Worker (loop-worker.ts), all
// listening on the same port; what must be the same for every loop — configuration, secrets,
// quarantine, the audit stream — it hands in and changes through `Loop`, and what a loop sees
// that the proxy as a whole acts on (violations, identities, exchanges) goes out through
// `LoopSinks`.

import { readFileSync } from "node:fs";
import { DEFAULT_DECODE_LIMITS } from "../body/content-coding.ts";
import { InlineScanner, passThroughStream } from "../body/inline-scanner.ts";
import { PoolScanner } from "../body/scan-pipelines.ts";
import { ConfigError } from "../config/config-error.ts";
import type { LivePolicy, ProxyConfig, Rate } from "../config/proxy-config.ts";
import { REDACT_COMPILE, SecretState } from "../credentials/secret-state.ts";
import type { SecretsConfig } from "../credentials/secrets.ts";
import type { Stage } from "../exchange/exchange.ts";
import { createPipeline, type WebSocketRelay } from "../exchange/pipeline.ts";
import { egress } from "../exchange/stages/egress.ts";
import { inbound } from "../exchange/stages/inbound.ts";
import { outbound } from "../exchange/stages/outbound.ts";
import { rateLimit } from "../exchange/stages/rate-limit.ts";
import { signAws } from "../exchange/stages/sign.ts";
import { upgrades } from "../exchange/stages/upgrade.ts";
import { ByteBudget } from "../guard/byte-budget.ts";
import { cgroupProbe, configuredProbe, type MemoryProbe } from "../guard/cgroup-probe.ts";
import { ConnectionCaps } from "../guard/connection-caps.ts";
import { LoadShedder } from "../guard/load-shed.ts";
import { MemoryGuard } from "../guard/memory-guard.ts";
import { QuarantineClaims } from "../guard/quarantine-claims.ts";
import { RateLimiter } from "../guard/rate-limit.ts";
import { capacityFor } from "../guard/shared-table.ts";
import { StallCounts, StallRegistry } from "../guard/stall-registry.ts";
import { type ViolationKind, violationsOf } from "../guard/violations.ts";
import type { OutgoingResponse } from "../http/message.ts";
import type { ProxyErrorCode } from "../http/proxy-error.ts";
import { MatcherPool } from "../matcher/pool/pool.ts";
import { FrontDoor, type ServerCredentials } from "../net/agent/front-door.ts";
import { UpstreamClient } from "../net/upstream/client.ts";
import { type Lookup, trustAnchors } from "../net/upstream/dialer.ts";
import { relayWebSocket } from "../net/ws-relay.ts";
import type { AuditLog, RefusedConnectionRecord, RequestRecord } from "../observe/audit.ts";
import type { ProxyMetrics } from "../observe/metrics.ts";
import type { RefusalSink } from "../observe/refusal-digest.ts";
import { type RequestFacts, RequestLog } from "../observe/request-log.ts";
import type { Trace, TraceOutcome } from "../observe/trace.ts";
import {
  AgentIdentityCache,
  denylistSets,
  type IdentityRules,
  interceptionCaMarker,
} from "../pki/agent-identity.ts";
import { interceptionIssuer, LeafCache, type LeafSource } from "../pki/leaf-cache.ts";
import { x509 } from "../pki/x509.ts";
import { addressVerdict } from "../policy/address-class.ts";
import { compileLivePolicy } from "../policy/egress-policy.ts";
import { PASS, refuse, type Verdict } from "../policy/verdict.ts";

/**
 * The proxy's own TLS material, as a loop needs it: the interception CA's key (PKCS#8 PEM) to
 * sign leaves with, or, for a Worker loop, `leaves`, the proxy's one cache it asks instead.
 */
export type LoopPki = {
  readonly credentials: ServerCredentials;
  readonly interceptionCertPem: string;
} & ({ readonly interceptionKeyPem: string } | { readonly leaves: LeafSource });

/** What a loop tells the proxy as a whole. */
export interface LoopSinks {
  /** Whether `agent` may connect now (quarantine); a refusal is told to the agent. */
  admitAgent(agent: string): Verdict;
  /** Violations of one request or WebSocket message; `host` already scrubbed of real values. */
  violated(
    agent: string,
    host: string,
    port: number,
    kinds: readonly ViolationKind[],
    redactions: number,
  ): void;
  /** An agent's handshake derived this identity (the console's agents view). */
  identified(name: string, serial: string, notAfterMs: number, atMs: number): void;
  /** One exchange's audit record, for the console's live view. */
  exchanged(
    record: RequestRecord,
    code: ProxyErrorCode | undefined,
    atMs: number,
    swapped: readonly string[],
  ): void;
}

export interface LoopRefusals {
  readonly connections: RefusalSink<RefusedConnectionRecord>;
  readonly requests: RefusalSink<RequestRecord>;
}

/** What only a test or the embedding process can give a loop (never crosses to a Worker). */
export interface LoopHooks {
  readonly shedding?: () => boolean;
  readonly lookup?: Lookup;
  readonly memoryProbe?: MemoryProbe;
  readonly guardClock?: () => number;
  readonly identityClock?: () => Date;
  readonly rateClock?: () => number;
}

export interface LoopInputs {
  readonly config: ProxyConfig;
  /** Owned by the loop from now on (disposed when replaced). */
  readonly secrets: SecretsConfig;
  readonly pki: LoopPki;
  readonly audit: AuditLog;
  readonly metrics: ProxyMetrics;
  readonly sinks: LoopSinks;
  readonly hooks?: LoopHooks;
  /** Matcher worker threads (default: cores). */
  readonly workers?: number;
  /** Share the listening port with the proxy's other loops (SO_REUSEPORT). */
  readonly reusePort?: boolean;
  /** The port to listen on instead of the configuration's (the first loop's, when it chose). */
  readonly port?: number;
  /** Who is in quarantine, as every loop and the main thread see it at once (its memory). */
  readonly claims: SharedArrayBuffer;
  /** Where refusals are digested: the proxy's digests, one line per kind and peer for all loops. */
  readonly refusals: LoopRefusals;
  /** Counts and buckets every loop shares (several loops); default: this loop's own. */
  readonly shared?: SharedGuards;
  /** This loop's number and how many there are (connection numbers stay unique). */
  readonly index?: number;
  readonly count?: number;
}

/**
 * The guards' state in shared memory (guard/shared-table.ts): connection caps, and a bucket
 * table per rate that is on. A reload that changes a rate hands new tables.
 */
export interface SharedGuards {
  readonly caps: SharedArrayBuffer;
  readonly rates: SharedRates;
  /** The held-body budget's holdings. */
  readonly held: SharedArrayBuffer;
  /** Each agent's stalled connections (the memory guard's ranks and admission). */
  readonly stalls: SharedArrayBuffer;
}

export interface SharedRates {
  readonly request?: SharedArrayBuffer;
  readonly handshake?: SharedArrayBuffer;
  readonly mint?: SharedArrayBuffer;
}

/**
 * The held-body budget and one agent's share: half the budget (or the largest held body, if
 * that is more) — one agent parking bodies at a slow upstream leaves the other half to others.
 */
function heldShares(l: ProxyConfig["limits"]): [number, number] {
  return [
    l.heldBodyBudgetBytes,
    Math.min(
      l.heldBodyBudgetBytes,
      Math.max(Math.floor(l.heldBodyBudgetBytes / 2), l.maxHeldBodyBytes),
    ),
  ];
}

/** Tables for the guards of `c`, made here for every loop to attach. */
export function sharedGuards(c: ProxyConfig): SharedGuards {
  return {
    caps: ConnectionCaps.create(
      {
        total: c.limits.maxConnections,
        perAgent: c.limits.maxAgentConnections,
        handshakesPerAddress: c.limits.maxHandshakesPerAddress,
      },
      { capacity: capacityFor(2 * c.limits.maxConnections + 1) },
    ).memory,
    rates: sharedRates(c),
    held: new ByteBudget(...heldShares(c.limits)).memory,
    stalls: StallCounts.create(c.limits.maxConnections).memory,
  };
}

export function sharedRates(c: ProxyConfig): SharedRates {
  const table = (r: Rate | undefined) =>
    r
      ? RateLimiter.create(r.perSecond, r.burst, { capacity: RATE_TABLE_CAPACITY }).memory
      : undefined;
  const rates = {
    request: table(c.rateLimit),
    handshake: table(c.handshakeRate),
    mint: table(c.mintRate),
  };
  return Object.fromEntries(Object.entries(rates).filter(([, m]) => m !== undefined));
}

/** A change a reload has made ready in one loop: put in force, or let go. */
export interface Prepared {
  commit(): void;
  abort(): void;
  /** The port a new listener bound. */
  readonly port?: number;
}

/** One event loop serving agents, as the composition root drives it. */
export interface Loop {
  readonly port: number;
  readonly metrics: ProxyMetrics;
  readonly pool: MatcherPool;
  /** Secrets for new exchanges; those under way keep theirs until they end. */
  install(next: SecretsConfig): void;
  /** Resolves once no exchange uses secrets older than those in force. */
  olderDrained(): Promise<void>;
  /** Cuts what still streams on secrets older than those in force. */
  cutOlder(): void;
  /** The new allowlists and denylist; connections they refuse are closed (how many). */
  applyPolicy(next: LivePolicy): number;
  /**
   * Binds and reads what a reload's `applied` changes need, with the server certificate the
   * proxy issued again for new names; nothing in force yet.
   */
  prepare(
    next: ProxyConfig,
    applied: readonly string[],
    credentials?: ServerCredentials,
  ): Promise<Prepared[]>;
  /** The reload's limits, rates (in `rates`' tables, when shared) and settings for what comes next. */
  configure(next: ProxyConfig, ratesChanged: boolean, rates?: SharedRates): void;
  closeAgent(agent: string): number;
  reloadCredentials(c: ServerCredentials): void;
  /** Ports of the proxy's own (the admin listener's) the upstream leg must never dial. */
  addSelfPorts(ports: readonly number[]): void;
  stats(): LoopStats;
  close(graceMs: number): Promise<void>;
}

export interface LoopStats {
  readonly connections: number;
  readonly perAgent: readonly (readonly [string, number])[];
  readonly upstreamIdle: number;
  readonly matcherWorkers: number;
  readonly leaves: number;
  readonly rules: number;
  readonly memoryUsed: number | null;
  readonly memoryLimit: number | null;
}

export async function startLoop(inputs: LoopInputs): Promise<Loop> {
  const { audit, metrics, sinks } = inputs;
  const hooks = inputs.hooks ?? {};
  let live = inputs.config;
  const config = inputs.config;
  let secrets = inputs.secrets;
  let state = SecretState.compile(secrets);
  const interceptionCert = new x509.X509Certificate(inputs.pki.interceptionCertPem);
  const pkiIn = inputs.pki;
  const leaves =
    "leaves" in pkiIn
      ? new LeafCache(pkiIn.leaves, LEAF_CACHE_OPTIONS)
      : await LeafCache.create(
          await interceptionIssuer(pkiIn.interceptionCertPem, pkiIn.interceptionKeyPem),
          LEAF_CACHE_OPTIONS,
        );
  const marker = interceptionCaMarker(interceptionCert);
  // The live policy: replaced whole by applyPolicy; every decision reads the current one.
  let deny = denylistSets(config.policy.deny);
  let policy = compileLivePolicy(config.policy);
  const identities = new AgentIdentityCache();
  const now = hooks.identityClock ?? (() => new Date());
  const rules = (): IdentityRules => ({ interceptionCa: marker, ...deny, now: now() });

  const pool = await MatcherPool.start({
    specs: [],
    // Output queue smaller than the pool's default (1 MiB): an answer whose agent stops
    // reading keeps it full, for every such tunnel; 128 KiB streams as fast on two cores.
    // (Bytes in flight to a worker stay at 1 MiB: 512 KiB cost ~5 % of a single stream's
    // MB/s and saved nothing measurable on stalled ones.)
    readableHighWaterMark: 128 * 1024,
    ...(inputs.workers ? { size: inputs.workers } : {}),
  });
  metrics.watchPool({
    stats: () => {
      const s = pool.stats();
      return {
        queueDepth: s.queueDepth,
        inFlightBytes: s.inFlightBytes,
        streamsOpen: s.streamsOpen,
      };
    },
  });
  const scanner = new PoolScanner(pool);
  const inline = new InlineScanner();
  const held = new ByteBudget(...heldShares(config.limits), inputs.shared?.held);
  metrics.watchCaches(leaves, held);
  /** States replaced but still used by exchanges: how to retire each now, and when it was. */
  const draining = new Map<SecretState, { retire: () => void; drained: Promise<void> }>();

  /**
   * Put `next` in force for new exchanges. Exchanges that started on the old state swap and
   * redact with it until they are over: once the last one is, its copies are zeroed and its
   * sets retired (streams still open finish on them; the pool zeroes a set once its last
   * stream ends).
   */
  function install(next: SecretsConfig): void {
    const nextState = SecretState.compile(next);
    const old = state;
    const oldSecrets = secrets;
    state = nextState;
    secrets = next;
    let done!: () => void;
    const drained = new Promise<void>((ok) => {
      done = ok;
    });
    const retire = () => {
      if (!draining.delete(old)) return;
      scanner.drop((n) => old.ownsSet(n));
      inline.drop((n) => old.ownsSet(n));
      old.dispose();
      oldSecrets.dispose();
      done();
    };
    draining.set(old, { retire, drained });
    old.whenUnused(retire);
  }

  const extraCa = (c: ProxyConfig): string[] => {
    const pems: string[] = [];
    if (c.upstreamCaFile) pems.push(readFileSync(c.upstreamCaFile, "utf8"));
    if (c.nodeExtraCaCerts) {
      try {
        pems.push(readFileSync(c.nodeExtraCaCerts, "utf8"));
      } catch {
        // The runtime reports an unreadable NODE_EXTRA_CA_CERTS itself.
      }
    }
    return pems;
  };
  const selfPorts = new Set<number>();
  // The event loop's lateness, measured every 50 ms: what the load shedder decides by.
  const shedder = new LoadShedder();
  const shedding = hooks.shedding ?? (() => shedder.shedding);
  // Busy (late by a twentieth of a second) is less than shedding: upstream deadlines that come
  // due then wait another period (net/upstream/dialer.ts).
  const busy = hooks.shedding ?? (() => shedder.lateMs >= BUSY_LATE_MS);
  // Deadlines and caps the parts read per use, from these objects: a reload assigns them
  // (the memory guard's limits alone are read at start).
  const sessionLimits = {
    maxHeaderBytes: config.limits.maxHeaderBytes,
    maxHeaderCount: config.limits.maxHeaderCount,
    headerTimeoutMs: config.limits.headerTimeoutMs,
    idleTimeoutMs: config.limits.idleTimeoutMs,
    bodyIdleTimeoutMs: config.limits.bodyIdleTimeoutMs,
  };
  const outboundDeps = {
    scanner,
    inline,
    held,
    maxHeldBodyBytes: config.limits.maxHeldBodyBytes,
  };
  const upstreamOptions = {
    addressCheck: (ip: string) => addressVerdict(ip, live.allowPrivate),
    busy,
    selfPorts: () => selfPorts,
    connectTimeoutMs: config.limits.upstreamConnectTimeoutMs,
    responseTimeoutMs: config.limits.upstreamResponseTimeoutMs,
    bodyIdleTimeoutMs: config.limits.bodyIdleTimeoutMs,
    ca: trustAnchors(extraCa(config)),
    maxIdlePerHost: 16,
    // However many destinations the agents' allowlist lets them reach — and as many as agent
    // connections may be open: below that, a thousand busy tunnels each lost its upstream
    // connection between two requests and paid a TLS handshake for the next (load bench).
    maxIdleTotal: Math.max(256, config.limits.maxConnections),
    idleSocketTimeoutMs: 30_000,
    ...(hooks.lookup ? { lookup: hooks.lookup } : {}),
  };
  const upstream = new UpstreamClient(upstreamOptions);
  const onOutcome = (facts: RequestFacts, outcome: TraceOutcome, trace: Trace) => {
    const { agent, host, port } = facts;
    if (agent === "-") return;
    const kinds = violationsOf(outcome, {
      foreignDummies: trace.foreignDummies,
      // Asked only when it decides (a denied request), not for every request.
      boundHost:
        outcome.code === "policy-denied" && host !== "-" && state.bindings.boundAt(host, port),
      redactions: trace.redactions,
    });
    if (kinds.length > 0) sinks.violated(agent, state.scrub(host), port, kinds, trace.redactions);
  };
  const log = new RequestLog(audit, metrics, () => state, {
    refusals: inputs.refusals.requests,
    onOutcome,
    onRecord: (r, outcome, trace) =>
      sinks.exchanged(r, outcome.code, Date.now(), [...trace.swapped]),
  });
  // Every way in draws on a bucket: requests and CONNECTs on the agent's one, new connections
  // on their address's (before TLS), leaf mints on the agent's.
  // A reload that changes a rate starts it with full buckets.
  const bucket = (r: Rate | undefined, memory: SharedArrayBuffer | undefined) => {
    if (!r) return undefined;
    return memory
      ? RateLimiter.attach(memory, r.perSecond, r.burst, hooks.rateClock)
      : new RateLimiter(r.perSecond, r.burst, hooks.rateClock);
  };
  const buckets = (c: ProxyConfig, shared: SharedRates | undefined) => ({
    request: bucket(c.rateLimit, shared?.request),
    handshake: bucket(c.handshakeRate, shared?.handshake),
    mint: bucket(c.mintRate, shared?.mint),
  });
  let rates = buckets(config, inputs.shared?.rates);
  const stages: Stage[] = [
    rateLimit(() => rates.request),
    egress(() => policy),
    upgrades(),
    outbound(outboundDeps),
    signAws(),
    inbound({ scanner, inline, held, decodeLimits: DEFAULT_DECODE_LIMITS, secrets: () => state }),
  ];
  // A WebSocket is relayed frame by frame, scanned with its handshake's secrets; one audit
  // line when it closes.
  const relay: WebSocketRelay = (ex, agentSide, upstreamSide, hold, deflate) => {
    const { host, port } = ex.destination.target;
    metrics.websockets.inc({ agent: ex.agent, event: "opened" });
    const secrets = ex.secrets;
    const redact = secrets.setName("redact");
    const reals = secrets.redactSpecs.length > 0;
    const foreign = secrets.foreignSpecs(ex.agent);
    const foreignSet = secrets.setName(`foreign:${ex.agent}`);
    const plan = secrets.plan(ex.agent, host, port, ex.route);
    relayWebSocket(secrets, agentSide, upstreamSide, hold, {
      maxMessageBytes: live.limits.wsMaxMessageBytes,
      deflate,
      idleMs: live.limits.wsIdleMs,
      pingMs: live.limits.wsPingMs,
      scanner: {
        // No real value configured: nothing to find (an empty set does not compile).
        whole: (p) =>
          reals
            ? inline.rewrite(redact, secrets.redactSpecs, p, undefined, REDACT_COMPILE)
            : { output: p, replacements: 0 },
        stream: () =>
          reals ? inline.stream(redact, secrets.redactSpecs, REDACT_COMPILE) : passThroughStream(),
        foreign: foreign && {
          whole: (p) => inline.count(foreignSet, foreign, p),
          stream: () => inline.counter(foreignSet, foreign),
        },
      },
      frameSwaps: plan.frameSwap,
      stalled: (shed) => stalls.begin(ex.agent, shed),
      // As on the HTTP path: a real value from the agent is `dlp`, one the upstream showed it
      // (redacted) a `reflection` — quarantine decides which it acts on.
      onViolation: (kind, count) =>
        sinks.violated(
          ex.agent,
          secrets.scrub(host),
          port,
          [kind],
          kind === "reflection" ? count : 0,
        ),
      onClose: (s) => {
        metrics.websockets.inc({ agent: ex.agent, event: "closed" });
        if (s.redactions > 0) metrics.redactions.inc({ agent: ex.agent }, s.redactions);
        audit.event(
          "websocket",
          {
            agent: ex.agent,
            host: ex.secrets.scrub(host),
            port,
            framesIn: s.framesFromAgent,
            framesOut: s.framesFromUpstream,
            bytesIn: s.bytesFromAgent,
            bytesOut: s.bytesFromUpstream,
            redactions: s.redactions,
            swaps: s.swaps,
            foreignDummies: s.foreignDummies,
            agentClose: s.agentClose ?? "none",
            upstreamClose: s.upstreamClose ?? "none",
            ...(s.reason ? { reason: s.reason } : {}),
          },
          "websocket closed",
        );
      },
    });
  };
  const exchange = createPipeline({ stages, upstream, log, secrets: () => state, relay });
  const stalls = new StallRegistry(
    hooks.guardClock,
    inputs.shared ? new StallCounts(inputs.shared.stalls) : null,
  );
  const claims = new QuarantineClaims(inputs.claims);
  let due = performance.now() + LAG_SAMPLE_MS;
  const lagTimer = setInterval(() => {
    const t = performance.now();
    shedder.sample(Math.max(0, t - due), t);
    due = t + LAG_SAMPLE_MS;
  }, LAG_SAMPLE_MS);
  lagTimer.unref?.();
  const guard = memoryGuard(
    config,
    stalls,
    metrics,
    audit,
    inputs.count ?? 1,
    hooks.memoryProbe,
    hooks.guardClock,
  );
  const front = new FrontDoor({
    stalls,
    // While memory is short, an agent holding many connections that wait on it opens no more:
    // they are what the guard sheds first, and new ones would take their place. A few are
    // left alone (an agent with a slow download or two keeps connecting).
    admit: (agent: string) => {
      const held = sinks.admitAgent(agent);
      if (!held.ok) return held;
      return guard?.pressed && stalls.stalledBy(agent) >= REFUSE_AT_STALLED
        ? refuse(
            "overloaded",
            "memory is short and this agent has many connections that stopped reading; read them or close them, then retry",
          )
        : PASS;
    },
    shedding,
    host: config.listen.host,
    port: inputs.port ?? config.listen.port,
    reusePort: inputs.reusePort ?? false,
    connIds: { first: (inputs.index ?? 0) + 1, step: inputs.count ?? 1 },
    sessionTickets: (inputs.count ?? 1) === 1,
    credentials: inputs.pki.credentials,
    identify: (peer) => {
      const d = identities.derive(peer, rules());
      if (d.ok) {
        const { name, serial, notAfter } = d.value;
        sinks.identified(name, serial, notAfter.getTime(), Date.now());
      }
      return d;
    },
    leaves,
    policy: () => policy,
    exchange,
    log,
    audit,
    metrics,
    logSafe: (text) => state.scrub(text),
    carriesReal: (text) => state.carriesReal(text),
    limits: sessionLimits,
    rates: {
      connect: (agent: string) => rates.request?.admit(agent, "rate limit exceeded") ?? PASS,
      handshake: (address: string) =>
        rates.handshake?.admit(address, "new connection rate exceeded") ?? PASS,
      mint: (agent: string) =>
        rates.mint?.admit(agent, "certificate mint rate exceeded (new hosts)") ?? PASS,
    },
    ...(inputs.shared ? { capsMemory: inputs.shared.caps } : {}),
    refusals: inputs.refusals.connections,
    // A refusal that quarantines is answered only if its claim is the first; nothing more is
    // answered to a held agent in any loop (a guess confirmed per answer otherwise).
    beforeAnswer: (agent, response) => {
      const q = live.quarantine;
      if (!q) return true;
      if (q.on.includes("dlp") && errorCodeOf(response) === "dlp-blocked") {
        return claims.claim(agent, q.holdMs === null ? null : Date.now() + q.holdMs);
      }
      return !claims.holds(agent);
    },
    connections: {
      total: config.limits.maxConnections,
      perAgent: config.limits.maxAgentConnections,
      handshakesPerAddress: config.limits.maxHandshakesPerAddress,
    },
  });
  metrics.watchConnections({
    perAgent: () => front.perAgentConnections(),
    upstreamIdle: () => upstream.idleCount,
    accepted: () => front.accepted,
  });
  if (guard) {
    metrics.watchMemory({
      used: () => guard.usedBytes,
      limit: () => guard.limitBytes,
      stalled: () => stalls.size,
    });
    guard.start();
  }
  const cleanup = async () => {
    clearInterval(lagTimer);
    guard?.stop();
    upstream.close();
    await pool.close();
  };
  let port: number;
  try {
    port = await front.listen();
  } catch (e) {
    await cleanup();
    throw e;
  }
  selfPorts.add(port);
  // A connection outlives the handshake that checked its certificate: without this, one opened
  // before the certificate expired would keep serving its agent after it did.
  const recheck = setInterval(() => front.recheck(), IDENTITY_RECHECK_MS);
  recheck.unref?.();

  return {
    get port() {
      return port;
    },
    metrics,
    pool,
    install,
    olderDrained: () =>
      Promise.all([...draining].filter(([s]) => s !== state).map(([, d]) => d.drained)).then(
        () => {},
      ),
    cutOlder: () => {
      for (const s of draining.keys()) if (s !== state) s.replace();
    },
    applyPolicy(next) {
      deny = denylistSets(next.deny);
      policy = compileLivePolicy(next);
      live = { ...live, policy: next };
      return front.recheck();
    },
    async prepare(next, applied, credentials) {
      const out: Prepared[] = [];
      const none = () => {};
      const changed = (name: string) => applied.includes(name);
      try {
        if (changed("upstreamCa")) {
          const ca = trustAnchors(extraCa(next));
          out.push({ commit: () => Object.assign(upstreamOptions, { ca }), abort: none });
        }
        if (credentials) {
          out.push({ commit: () => front.reloadCredentials(credentials), abort: none });
        }
        if (changed("listen")) {
          const l = await front.openListener(next.listen.host, next.listen.port);
          out.push({
            port: l.port,
            commit: () => {
              l.commit();
              port = l.port;
              selfPorts.add(l.port);
            },
            abort: l.abort,
          });
        }
      } catch (e) {
        for (const r of out) r.abort();
        throw e instanceof ConfigError ? e : new ConfigError("listen-failed", (e as Error).message);
      }
      return out;
    },
    configure(next, ratesChanged, shared) {
      if (ratesChanged) rates = buckets(next, shared);
      live = { ...next, limits: { ...next.limits, memoryLimit: live.limits.memoryLimit } };
      const l = next.limits;
      Object.assign(upstreamOptions, {
        connectTimeoutMs: l.upstreamConnectTimeoutMs,
        responseTimeoutMs: l.upstreamResponseTimeoutMs,
        bodyIdleTimeoutMs: l.bodyIdleTimeoutMs,
      });
      Object.assign(sessionLimits, {
        maxHeaderBytes: l.maxHeaderBytes,
        maxHeaderCount: l.maxHeaderCount,
        headerTimeoutMs: l.headerTimeoutMs,
        idleTimeoutMs: l.idleTimeoutMs,
        bodyIdleTimeoutMs: l.bodyIdleTimeoutMs,
      });
      outboundDeps.maxHeldBodyBytes = l.maxHeldBodyBytes;
      held.resize(...heldShares(l));
      front.resize({
        total: l.maxConnections,
        perAgent: l.maxAgentConnections,
        handshakesPerAddress: l.maxHandshakesPerAddress,
      });
    },
    closeAgent: (agent) => front.closeAgent(agent),
    reloadCredentials: (c) => front.reloadCredentials(c),
    addSelfPorts(ports) {
      for (const p of ports) selfPorts.add(p);
    },
    stats: () => ({
      connections: front.connections,
      perAgent: [...front.perAgentConnections()],
      upstreamIdle: upstream.idleCount,
      matcherWorkers: pool.stats().workers,
      leaves: leaves.stats().size,
      rules: policy.ruleCount,
      memoryUsed: guard ? guard.usedBytes : null,
      memoryLimit: guard ? guard.limitBytes : null,
    }),
    async close(graceMs) {
      clearInterval(lagTimer);
      clearInterval(recheck);
      guard?.stop();
      await front.close(graceMs);
      log.close();
      upstream.close();
      for (const d of [...draining.values()]) d.retire();
      await pool.close();
      inline.reset();
      state.dispose();
      secrets.dispose();
      leaves.clear();
    },
  };
}

const LEAF_CACHE_CAPACITY = 1000;
/**
 * One agent's mints hold at most a quarter of the cache: naming ever-new hosts under a wildcard
 * evicts its own leaves, not the ones other agents use.
 */
export const LEAF_CACHE_OPTIONS = {
  capacity: LEAF_CACHE_CAPACITY,
  ownerCapacity: LEAF_CACHE_CAPACITY / 4,
} as const;
/** The proxy's own error code of an answer it made (`x-slapenir-error`), if it is one. */
function errorCodeOf(r: OutgoingResponse): string | undefined {
  return r.headers.find(([k]) => k.toLowerCase() === "x-slapenir-error")?.[1];
}

/** Keys a shared rate table holds (agents, or peer addresses); refilled buckets make room. */
const RATE_TABLE_CAPACITY = capacityFor(4096);
const LAG_SAMPLE_MS = 50;
const BUSY_LATE_MS = 50;
/**
 * How often memory use is read (and at most how often a new stall reads it), how long an agent
 * may take no bytes before its connection may be shed below the critical level, and how many
 * of an agent's connections must be waiting on it for it to be refused new ones under pressure.
 */
const GUARD_INTERVAL_MS = 50;
const GUARD_MIN_GAP_MS = 10;
const STALL_GRACE_MS = 2000;
const REFUSE_AT_STALLED = 8;
/** How often open connections' identities are decided again (certificates expire). */
const IDENTITY_RECHECK_MS = 30_000;

/**
 * The memory guard, unless SLAPENIR_MEMORY_LIMIT is "off" (with "auto" and no container limit
 * it watches nothing until one appears). Each round that sheds writes one audit line.
 */
function memoryGuard(
  config: ProxyConfig,
  stalls: StallRegistry,
  metrics: ProxyMetrics,
  audit: AuditLog,
  loops: number,
  probe?: MemoryProbe,
  now?: () => number,
): MemoryGuard | null {
  const limit = config.limits.memoryLimit;
  if (limit === "off") return null;
  const mib = (n: number) => Math.round(n / 1048576);
  return new MemoryGuard({
    probe: probe ?? memoryProbe(limit),
    shedAt: config.limits.memoryShedAt,
    // Halfway from the shed threshold to the limit: 90 % with the default 80 %.
    criticalAt: (1 + config.limits.memoryShedAt) / 2,
    stalls,
    graceMs: STALL_GRACE_MS,
    intervalMs: GUARD_INTERVAL_MS,
    minGapMs: GUARD_MIN_GAP_MS,
    loops,
    ...(now ? { now } : {}),
    onShed(shed, used, lim) {
      let total = 0;
      for (const [agent, n] of shed) {
        metrics.shed.inc({ agent }, n);
        total += n;
      }
      audit.event(
        "shed",
        {
          connections: total,
          agents: [...shed].map(([a, n]) => `${a}:${n}`).join(","),
          usedMiB: mib(used),
          limitMiB: mib(lim),
        },
        "memory pressure: closed connections whose agents stopped reading",
      );
    },
  });
}

/** The container's limit (`auto`), or a configured one; a probe that knows no limit outside both. */
function memoryProbe(limit: number | "auto"): MemoryProbe {
  const cgroup = cgroupProbe();
  if (typeof limit === "number") return configuredProbe(limit, cgroup);
  return cgroup ?? { source: "no memory cgroup", read: () => null };
}
