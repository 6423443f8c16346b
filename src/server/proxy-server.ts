// Assembles a running proxy from configuration: certificates (embedded CA or Step-CA files),
// credentials, policy, the matcher pool, the upstream client, the agent-facing front door and
// the admin listener. Start-up validates everything before listening and fails with an error
// that names what is wrong; it never prints a credential. Tests start it in-process.

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
import { DEFAULT_DECODE_LIMITS } from "../body/content-coding.ts";
import { InlineScanner, passThroughStream } from "../body/inline-scanner.ts";
import { PoolScanner } from "../body/scan-pipelines.ts";
import {
  type ConfigChanges,
  type CredentialChanges,
  configChanges,
  credentialChanges,
} from "../config/config-diff.ts";
import { ConfigError } from "../config/config-error.ts";
import { type ConfigFile, configFileFromEnv, overlay } from "../config/config-file.ts";
import {
  type LivePolicy,
  loadLivePolicy,
  loadProxyConfig,
  type ProxyConfig,
  type Rate,
  revocationsPath,
} from "../config/proxy-config.ts";
import { REDACT_COMPILE, SecretState } from "../credentials/secret-state.ts";
import { disposeSources, loadSecrets, type SecretsConfig } from "../credentials/secrets.ts";
import { CredentialSources, type SourceEvent } from "../credentials/sources/source-manager.ts";
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
import { LoadShedder } from "../guard/load-shed.ts";
import { MemoryGuard } from "../guard/memory-guard.ts";
import { Quarantine } from "../guard/quarantine.ts";
import { RateLimiter } from "../guard/rate-limit.ts";
import { StallRegistry } from "../guard/stall-registry.ts";
import { type ViolationKind, violationsOf } from "../guard/violations.ts";
import { MatcherPool } from "../matcher/pool/pool.ts";
import { listenAdmin } from "../net/admin-listener.ts";
import { FrontDoor, type ServerCredentials } from "../net/agent/front-door.ts";
import { UpstreamClient } from "../net/upstream/client.ts";
import { type Lookup, trustAnchors } from "../net/upstream/dialer.ts";
import { relayWebSocket } from "../net/ws-relay.ts";
import { Activity } from "../observe/activity.ts";
import { createAdminApp } from "../observe/admin-app.ts";
import { AuditLog } from "../observe/audit.ts";
import { ProxyMetrics } from "../observe/metrics.ts";
import { RefusalDigest } from "../observe/refusal-digest.ts";
import { type RequestFacts, RequestLog } from "../observe/request-log.ts";
import type { Trace, TraceOutcome } from "../observe/trace.ts";
import {
  AgentIdentityCache,
  denylistSets,
  type IdentityRules,
  interceptionCaMarker,
} from "../pki/agent-identity.ts";
import { EmbeddedCa } from "../pki/embedded-ca.ts";
import { LeafCache } from "../pki/leaf-cache.ts";
import { importPrivateKeyPem, x509 } from "../pki/x509.ts";
import { addressVerdict } from "../policy/address-class.ts";
import { compileLivePolicy } from "../policy/egress-policy.ts";
import { PASS, refuse } from "../policy/verdict.ts";
import { ensureAdminToken } from "./admin-token.ts";
import { watchConfigFiles } from "./config-watch.ts";

export const VERSION = "0.1.0";

export interface RunningProxy {
  readonly port: number;
  readonly adminPort: number;
  readonly config: ProxyConfig;
  /** PEM an agent must trust (proxy certificate and interception leaves chain to it). */
  readonly caBundlePem: string;
  readonly embeddedCa: EmbeddedCa | undefined;
  readonly audit: AuditLog;
  readonly metrics: ProxyMetrics;
  readonly pool: MatcherPool;
  /** Re-read TOKENS_JSON / the environment; the old values are zeroed once unused. */
  reloadSecrets(env?: Record<string, string | undefined>): Promise<void>;
  /**
   * Put a new policy (allowlists, denylist) in force: new requests and handshakes are decided
   * by it at once, and open connections whose agent or certificate it denies are closed.
   * Returns how many were.
   */
  reloadPolicy(next: LivePolicy): number;
  /**
   * Read the configuration file, the environment's files and the secrets again and put what
   * changed in force, all or nothing: an error leaves everything as it was and is thrown.
   */
  reload(): Promise<ReloadReport>;
  /** Swap server certificate / agent CA without dropping open connections. */
  reloadCredentials(c: ServerCredentials): void;
  close(): Promise<void>;
}

/** What a reload changed, by name (config-diff.ts). */
export interface ReloadReport extends ConfigChanges {
  readonly credentials: CredentialChanges;
  /** Connections the new policy no longer admits, closed. */
  readonly closed: number;
}

export interface StartOptions {
  readonly env?: Record<string, string | undefined>;
  /** The configuration file as read with `config` (default: read again from SLAPENIR_CONFIG). */
  readonly configFile?: ConfigFile;
  /** Directory relative paths of the environment are read from on reload (default: cwd). */
  readonly cwd?: string;
  /** Overrides the load shedder's decision (tests drive overload without loading a machine). */
  readonly shedding?: () => boolean;
  /** Reload when a configuration, secrets, policy or revocations file changes (main.ts). */
  readonly watchConfig?: boolean;
  /** Where audit lines go (default stdout). */
  readonly auditDestination?: import("pino").DestinationStream;
  /** Matcher worker threads (default: cores). */
  readonly workers?: number;
  /** Name resolution for upstreams (tests map their own names to loopback). */
  readonly lookup?: Lookup;
  /** Where the memory guard reads use and limit (tests); default from SLAPENIR_MEMORY_LIMIT. */
  readonly memoryProbe?: MemoryProbe;
  /** The clock stalls are timed by (tests move it; default performance.now). */
  readonly guardClock?: () => number;
  /** The time agent certificates are judged at (tests move it; default the wall clock). */
  readonly identityClock?: () => Date;
  /** The clock rate limits refill by, in ms (tests freeze it; default performance.now). */
  readonly rateClock?: () => number;
  /**
   * Longest wait, after a credential source gave a new value, for the answers that started
   * before it (they cannot redact it) to end before it is swapped; those still streaming are
   * then cut (default 30 s).
   */
  readonly sourceSwitchMs?: number;
  /**
   * Reads the live policy again (allowlists, denylist, revocations), for the admin API's
   * reload; default: from `env` and the working directory, as SIGHUP reads it.
   */
  readonly policySource?: () => LivePolicy;
}

interface Pki {
  credentials: ServerCredentials;
  caBundlePem: string;
  interception: { cert: x509.X509Certificate; certPem: string; key: CryptoKey };
  embedded: EmbeddedCa | undefined;
}

async function loadPki(config: ProxyConfig): Promise<Pki> {
  const src = config.certificates;
  if (src.mode === "embedded") {
    const ca = await EmbeddedCa.open({ home: src.home, serverNames: src.serverNames });
    return {
      credentials: {
        certPem: ca.server.certPem,
        keyPem: ca.server.keyPem,
        agentCaPem: ca.root.certPem,
      },
      caBundlePem: ca.caBundlePem,
      interception: ca.interception,
      embedded: ca,
    };
  }
  const read = (f: string) => readFileSync(f, "utf8");
  const rootPem = read(src.rootCaFile);
  let interception: Pki["interception"];
  let embedded: EmbeddedCa | undefined;
  let bundle = rootPem;
  if (src.interceptionCertFile && src.interceptionKeyFile) {
    const certPem = read(src.interceptionCertFile);
    interception = {
      cert: new x509.X509Certificate(certPem),
      certPem,
      key: await importPrivateKeyPem(read(src.interceptionKeyFile)),
    };
  } else {
    embedded = await EmbeddedCa.open({ home: src.home });
    interception = embedded.interception;
    bundle = `${rootPem.trim()}\n${embedded.caBundlePem.trim()}\n`;
  }
  return {
    credentials: {
      certPem: read(src.serverCertFile),
      keyPem: read(src.serverKeyFile),
      agentCaPem: rootPem,
    },
    caBundlePem: bundle,
    interception,
    embedded,
  };
}

export async function startProxy(
  config: ProxyConfig,
  options: StartOptions = {},
): Promise<RunningProxy> {
  const env = options.env ?? process.env;
  const audit = new AuditLog(config.logLevel, options.auditDestination);
  // Metrics exist once the pool does; a source reading before that is only audited.
  const metricsRef: { current?: ProxyMetrics } = {};
  /** As loaded: sourced credentials without values. Installed configs are copies. */
  const cwd = options.cwd ?? process.cwd();
  let template: SecretsConfig = await loadSecrets(
    env,
    options.configFile ?? configFileFromEnv(env, cwd),
  );
  /** The settings in force: those a reload can change (config-diff.ts) follow the file. */
  let live = config;
  // A source's change before the request path below exists is handled once it does.
  let switchReady = false;
  let changedEarly = false;
  const onSourceChange = () => {
    if (switchReady) sourcesChanged();
    else changedEarly = true;
  };
  let sources = await startSources(template, onSourceChange, (e) =>
    sourceEvent(audit, metricsRef.current, e),
  );
  let secrets: SecretsConfig = template.withValues(sources?.snapshot() ?? new Map());
  let state = SecretState.compile(secrets);
  const pki = await loadPki(config);
  // One agent's mints hold at most a quarter of the cache: naming ever-new hosts under a
  // wildcard evicts its own leaves, not the ones other agents use.
  const leaves = await LeafCache.create(pki.interception, {
    capacity: LEAF_CACHE_CAPACITY,
    ownerCapacity: LEAF_CACHE_CAPACITY / 4,
  });
  const marker = interceptionCaMarker(pki.interception.cert);
  // The live policy: replaced whole by reloadPolicy; every decision reads the current one.
  let deny = denylistSets(config.policy.deny);
  let policy = compileLivePolicy(config.policy);
  const identities = new AgentIdentityCache();
  const now = options.identityClock ?? (() => new Date());
  const rules = (): IdentityRules => ({ interceptionCa: marker, ...deny, now: now() });

  const pool = await MatcherPool.start({
    specs: [],
    // Output queue smaller than the pool's default (1 MiB): an answer whose agent stops
    // reading keeps it full, for every such tunnel; 128 KiB streams as fast on two cores.
    // (Bytes in flight to a worker stay at 1 MiB: 512 KiB cost ~5 % of a single stream's
    // MB/s and saved nothing measurable on stalled ones.)
    readableHighWaterMark: 128 * 1024,
    ...(options.workers ? { size: options.workers } : {}),
  });
  const scanner = new PoolScanner(pool);
  const inline = new InlineScanner();
  // An agent may hold half the budget (or the largest held body, if that is more): one agent
  // parking bodies at a slow upstream leaves the other half to the others.
  const heldShares = (l: ProxyConfig["limits"]) =>
    [
      l.heldBodyBudgetBytes,
      Math.min(
        l.heldBodyBudgetBytes,
        Math.max(Math.floor(l.heldBodyBudgetBytes / 2), l.maxHeldBodyBytes),
      ),
    ] as const;
  const held = new ByteBudget(...heldShares(config.limits));
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

  // A source's new value: first redacted by every new exchange (pending), then — once every
  // exchange older than that is over, or the switch deadline has passed and what still streams
  // on an older state is cut — swapped (promoted). One switch at a time.
  let switching: Promise<void> | null = null;
  let switchAgain = false;
  function sourcesChanged(): void {
    if (switching) {
      switchAgain = true;
      return;
    }
    switching = switchSources()
      .catch((e) =>
        audit.event(
          "source",
          { result: "error" },
          `credential source switch failed: ${String((e as Error)?.name)}`,
        ),
      )
      .finally(() => {
        switching = null;
        if (switchAgain) {
          switchAgain = false;
          sourcesChanged();
        }
      });
  }
  async function switchSources(): Promise<void> {
    const mgr = sources;
    if (!mgr) return;
    // The pending values this switch puts in the redaction set, and later swaps — only these:
    // one that replaces them meanwhile starts a switch of its own.
    const token = mgr.pendingToken();
    const build = (promoted?: typeof token): SecretsConfig | null => {
      try {
        return template.withValues(mgr.snapshot(promoted));
      } catch (e) {
        // A value that conflicts with another credential (never shown): dropped, and the
        // configuration without it put in force.
        mgr.reject(token, (e as Error).message);
        switchAgain = true;
        return null;
      }
    };
    const phase1 = build();
    if (!phase1) return;
    install(phase1);
    if (token.size === 0) return;
    const older = [...draining.values()].map((d) => d.drained);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const drainedAll = await Promise.race([
      Promise.all(older).then(() => true),
      new Promise<boolean>((ok) => {
        timer = setTimeout(() => ok(false), options.sourceSwitchMs ?? 30_000);
      }),
    ]);
    clearTimeout(timer);
    if (mgr !== sources) return;
    if (!drainedAll) {
      for (const s of draining.keys()) if (s !== state) s.replace();
    }
    const phase2 = build(token);
    if (!phase2) return;
    if (mgr.promote(token)) install(phase2);
    else phase2.dispose();
  }
  const metrics = new ProxyMetrics(
    {
      stats: () => {
        const s = pool.stats();
        return {
          queueDepth: s.queueDepth,
          inFlightBytes: s.inFlightBytes,
          streamsOpen: s.streamsOpen,
        };
      },
    },
    leaves,
    held,
  );
  metricsRef.current = metrics;
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
  const shedding = options.shedding ?? (() => shedder.shedding);
  // Busy (late by a twentieth of a second) is less than shedding: upstream deadlines that come
  // due then wait another period (net/upstream/dialer.ts).
  const busy = options.shedding ?? (() => shedder.lateMs >= BUSY_LATE_MS);
  // Deadlines and caps the parts read per use, from these objects: a reload assigns them
  // (the memory guard's limits alone are read at start).
  const upstreamTimes = {
    connectTimeoutMs: config.limits.upstreamConnectTimeoutMs,
    responseTimeoutMs: config.limits.upstreamResponseTimeoutMs,
    bodyIdleTimeoutMs: config.limits.bodyIdleTimeoutMs,
  };
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
    ...upstreamTimes,
    ca: trustAnchors(extraCa(config)),
    maxIdlePerHost: 16,
    // However many destinations the agents' allowlist lets them reach — and as many as agent
    // connections may be open: below that, a thousand busy tunnels each lost its upstream
    // connection between two requests and paid a TLS handshake for the next (load bench).
    maxIdleTotal: Math.max(256, config.limits.maxConnections),
    idleSocketTimeoutMs: 30_000,
    ...(options.lookup ? { lookup: options.lookup } : {}),
  };
  const upstream = new UpstreamClient(upstreamOptions);
  // A real value in a request is a violation: the agent goes into quarantine at once (its
  // connections closed, new ones refused) and stays until released, across restarts.
  const quarantine = config.quarantine
    ? Quarantine.load(config.quarantine.file, config.quarantine.holdMs)
    : null;
  // Violations and reflections are audited one line per kind, agent and host per window (an
  // agent or an echoing upstream can repeat them at full speed); the metrics count each.
  const notices = new RefusalDigest<{
    evt: string;
    fields: Record<string, string | number | boolean>;
    msg: string;
  }>((r, repeated) => audit.event(r.evt, repeated ? { ...r.fields, repeated } : r.fields, r.msg));
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
    violated(agent, host, port, kinds, trace.redactions);
  };
  /** Violations of one agent's request (or WebSocket message): audited, counted, quarantined. */
  /** What the status view shows about traffic (observe/activity.ts). */
  const activity = new Activity();
  const violated = (
    agent: string,
    host: string,
    port: number,
    kinds: readonly ViolationKind[],
    redactions: number,
  ) => {
    const where = `${agent}\n${host}:${port}`;
    for (const kind of kinds) {
      activity.violation(agent, Date.now());
      metrics.violations.inc({ agent, kind });
      const fields = { agent, kind, host: state.scrub(host), port };
      notices.refuse(`violation ${kind}`, where, {
        evt: "violation",
        fields: kind === "reflection" ? { ...fields, redactions } : fields,
        msg: VIOLATION_TEXT[kind],
      });
    }
    const kind = kinds.find((k) => live.quarantine?.on.includes(k));
    if (!quarantine || kind === undefined || !quarantine.add(agent, kind)) return;
    metrics.refused.inc({ reason: "quarantined" });
    audit.event(
      "quarantine",
      { agent, kind },
      `agent quarantined: ${VIOLATION_TEXT[kind]}; its connections are closed`,
    );
    front.closeAgent(agent);
  };
  const log = new RequestLog(audit, metrics, () => state, {
    onOutcome,
    onRecord: (r, outcome, trace) => activity.exchange(r, outcome.code, Date.now(), trace.swapped),
  });
  // Every way in draws on a bucket: requests and CONNECTs on the agent's one, new connections
  // on their address's (before TLS), leaf mints on the agent's.
  // A reload that changes a rate starts it with full buckets.
  const bucket = (r: Rate | undefined) =>
    r ? new RateLimiter(r.perSecond, r.burst, options.rateClock) : undefined;
  const buckets = (c: ProxyConfig) => ({
    request: bucket(c.rateLimit),
    handshake: bucket(c.handshakeRate),
    mint: bucket(c.mintRate),
  });
  let rates = buckets(config);
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
        violated(ex.agent, host, port, [kind], kind === "reflection" ? count : 0),
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
  const stalls = new StallRegistry(options.guardClock);
  let due = performance.now() + LAG_SAMPLE_MS;
  const lagTimer = setInterval(() => {
    const now = performance.now();
    shedder.sample(Math.max(0, now - due), now);
    due = now + LAG_SAMPLE_MS;
  }, LAG_SAMPLE_MS);
  lagTimer.unref?.();
  const guard = memoryGuard(
    config,
    stalls,
    metrics,
    audit,
    options.memoryProbe,
    options.guardClock,
  );
  const front = new FrontDoor({
    stalls,
    // While memory is short, an agent holding many connections that wait on it opens no more:
    // they are what the guard sheds first, and new ones would take their place. A few are
    // left alone (an agent with a slow download or two keeps connecting).
    admit: (agent: string) => {
      const held = quarantine?.check(agent);
      if (held && !held.ok) return held;
      return guard?.pressed && stalls.stalledBy(agent) >= REFUSE_AT_STALLED
        ? refuse(
            "overloaded",
            "memory is short and this agent has many connections that stopped reading; read them or close them, then retry",
          )
        : PASS;
    },
    shedding,
    host: config.listen.host,
    port: config.listen.port,
    credentials: pki.credentials,
    identify: (peer) => {
      const d = identities.derive(peer, rules());
      if (d.ok) {
        const { name, serial, notAfter } = d.value;
        activity.identified(name, serial, notAfter.getTime(), Date.now());
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
    connections: {
      total: config.limits.maxConnections,
      perAgent: config.limits.maxAgentConnections,
      handshakesPerAddress: config.limits.maxHandshakesPerAddress,
    },
  });
  let serverNotAfter = notAfterOf(pki.credentials.certPem);
  metrics.watchCertificate(() => serverNotAfter);
  metrics.watchConnections({
    perAgent: () => front.perAgentConnections(),
    upstreamIdle: () => upstream.idleCount,
  });
  if (guard) {
    metrics.watchMemory({
      used: () => guard.usedBytes,
      limit: () => guard.limitBytes,
      stalled: () => stalls.size,
    });
    guard.start();
  }
  let port = await front
    .listen()
    .catch((e) => cannotListen(e, config.listen.host, config.listen.port, "SLAPENIR_LISTEN"));
  // A connection outlives the handshake that checked its certificate: without this, one opened
  // before the certificate expired would keep serving its agent after it did.
  const recheck = setInterval(() => front.recheck(), IDENTITY_RECHECK_MS);
  recheck.unref?.();
  const startedAt = Date.now();
  let ready = true;
  switchReady = true;
  if (changedEarly) sourcesChanged();
  /** Read the secrets again (the file, or `e`'s variables) and put them in force. */
  const reloadSecrets = async (e: Record<string, string | undefined> = env): Promise<void> => {
    await applySecrets(await loadSecrets(e, configFileFromEnv(e, cwd)));
    audit.event("reload", { credentials: state.credentialCount }, "secrets reloaded");
  };
  const applySecrets = async (nextTemplate: SecretsConfig): Promise<void> => {
    const nextSources = await startSources(nextTemplate, onSourceChange, (ev) =>
      sourceEvent(audit, metrics, ev),
    );
    const oldTemplate = template;
    let built: SecretsConfig;
    try {
      // What the old sources gave stays redacted under the new ones (a reload is no way to
      // make a replaced value readable again).
      if (sources && nextSources) sources.handOver(nextSources);
      built = nextTemplate.withValues(nextSources?.snapshot() ?? new Map());
    } catch (e) {
      // Nothing changed: the old sources and template stay in force.
      nextSources?.stop();
      throw e;
    }
    sources?.stop();
    disposeSources(oldTemplate);
    template = nextTemplate;
    sources = nextSources;
    // A reload is not a source refresh: whatever streams on older secrets — the state in
    // force, and any a source switch was waiting on — is cut at once.
    install(built);
    for (const s of draining.keys()) s.replace();
    oldTemplate.dispose();
  };
  /** Put a new policy in force; connections it no longer admits are closed (how many). */
  const applyPolicy = (next: LivePolicy): number => {
    deny = denylistSets(next.deny);
    policy = compileLivePolicy(next);
    live = { ...live, policy: next };
    return front.recheck();
  };
  const reloadPolicy = (next: LivePolicy): number => {
    const closed = applyPolicy(next);
    audit.event(
      "reload",
      {
        what: "policy",
        rules: policy.ruleCount,
        deniedAgents: next.deny.agents.length,
        deniedCertificates: next.deny.serials.length + next.deny.fingerprints.length,
        closed,
      },
      "policy reloaded",
    );
    return closed;
  };
  /** Listeners, trust and certificates a reload changes: bound and read, not yet in force. */
  const prepareRebinding = async (next: ProxyConfig, applied: readonly string[]) => {
    const out: { commit(): void; abort(): void }[] = [];
    const none = () => {};
    const changed = (name: string) => applied.includes(name);
    try {
      if (changed("upstreamCa")) {
        const ca = trustAnchors(extraCa(next));
        out.push({ commit: () => Object.assign(upstreamOptions, { ca }), abort: none });
      }
      if (changed("console.tokenFile")) {
        const t = ensureAdminToken(next.adminTokenFile);
        out.push({ commit: () => (adminToken = t), abort: none });
      }
      const c = next.certificates;
      if (changed("serverNames") && c.mode === "embedded") {
        // The same home, other names: the server certificate is issued again for them.
        const ca = await EmbeddedCa.open({ home: c.home, serverNames: c.serverNames });
        const creds = { ...pki.credentials, certPem: ca.server.certPem, keyPem: ca.server.keyPem };
        out.push({
          commit: () => {
            front.reloadCredentials(creds);
            serverNotAfter = notAfterOf(creds.certPem);
          },
          abort: none,
        });
      }
      if (changed("listen")) {
        const l = await front.openListener(next.listen.host, next.listen.port);
        out.push({
          commit: () => {
            l.commit();
            port = l.port;
            selfPorts.add(l.port);
          },
          abort: l.abort,
        });
      }
      if (changed("adminListen")) {
        const a = listenAdmin(next.adminListen.host, next.adminListen.port, admin.fetch);
        out.push({
          commit: () => {
            const old = adminServer;
            adminServer = a;
            selfPorts.add(a.port);
            // Requests in flight on the old one (this reload's own) are answered first.
            old.stop(false);
          },
          abort: () => a.stop(),
        });
      }
    } catch (e) {
      for (const r of out) r.abort();
      throw e instanceof ConfigError ? e : new ConfigError("listen-failed", (e as Error).message);
    }
    return out;
  };
  // One reload at a time (a file change, SIGHUP and the admin action may meet); each reads
  // everything before it changes anything.
  let reloading: Promise<unknown> = Promise.resolve();
  /** Runs `step` after every reload before it (policy reloads too: none undoes another). */
  const queued = <T>(step: () => Promise<T> | T): Promise<T> => {
    const run = reloading.then(step);
    reloading = run.catch(() => {});
    return run;
  };
  const reload = (): Promise<ReloadReport> => {
    const run = queued(async (): Promise<ReloadReport> => {
      const file = configFileFromEnv(env, cwd);
      const next = loadProxyConfig(env, cwd, file);
      const nextTemplate = await loadSecrets(env, file);
      const changes = configChanges(live, next);
      const credentials = credentialChanges(template.entries(), nextTemplate.entries());
      // Whatever can fail is made ready first (files read, addresses bound); then it is all
      // put in force, or all let go.
      const ready: { commit(): void; abort(): void }[] = [];
      try {
        ready.push(...(await prepareRebinding(next, changes.applied)));
        await applySecrets(nextTemplate);
      } catch (e) {
        for (const r of ready) r.abort();
        nextTemplate.dispose();
        throw e;
      }
      for (const r of ready) r.commit();
      const closed = applyPolicy(next.policy);
      if (changes.applied.some((k) => k.endsWith("Rate") || k === "rateLimit"))
        rates = buckets(next);
      // The new configuration, but for what is read only at start (config-diff.ts).
      live = {
        ...next,
        home: live.home,
        certificates: sameHome(live.certificates, next.certificates)
          ? next.certificates
          : live.certificates,
        quarantine: live.quarantine &&
          next.quarantine && { ...live.quarantine, on: next.quarantine.on },
        limits: {
          ...next.limits,
          memoryLimit: live.limits.memoryLimit,
          memoryShedAt: live.limits.memoryShedAt,
        },
      };
      audit.setLevel(next.logLevel);
      const l = next.limits;
      Object.assign(upstreamOptions, {
        connectTimeoutMs: l.upstreamConnectTimeoutMs,
        responseTimeoutMs: l.upstreamResponseTimeoutMs,
        bodyIdleTimeoutMs: l.bodyIdleTimeoutMs,
      });
      Object.assign(
        sessionLimits,
        pick(l, Object.keys(sessionLimits) as (keyof typeof sessionLimits)[]),
      );
      outboundDeps.maxHeldBodyBytes = l.maxHeldBodyBytes;
      held.resize(...heldShares(l));
      front.resize({
        total: l.maxConnections,
        perAgent: l.maxAgentConnections,
        handshakesPerAddress: l.maxHandshakesPerAddress,
      });
      const report = { ...changes, credentials, closed };
      audit.event(
        "reload",
        {
          ...(next.configFile ? { file: next.configFile } : {}),
          changed: changes.applied.join(",") || "-",
          restartNeeded: changes.restart.join(",") || "-",
          credentialsAdded: credentials.added.join(",") || "-",
          credentialsRemoved: credentials.removed.join(",") || "-",
          credentialsChanged: credentials.changed.join(",") || "-",
          credentials: state.credentialCount,
          rules: policy.ruleCount,
          closed,
        },
        changes.restart.length > 0
          ? "configuration reloaded; some changes take effect at the next start"
          : "configuration reloaded",
      );
      return report;
    });
    run.catch((e) => {
      // A ConfigError names the file and field, never a value; anything else only its kind.
      const error = e instanceof ConfigError ? e.message : `reload failed (${(e as Error)?.name})`;
      audit.event("reload-failed", { error }, "reload refused; the running configuration stays");
    });
    return run;
  };
  const watcher = options.watchConfig
    ? watchConfigFiles(
        [
          live.configFile,
          env.TOKENS_JSON,
          env.SLAPENIR_POLICY,
          revocationsPath(overlay(env, options.configFile), cwd),
        ]
          .filter((p): p is string => !!p)
          .map((p) => resolve(cwd, p)),
        reload,
        () => {},
      )
    : undefined;
  let adminToken = ensureAdminToken(config.adminTokenFile);
  const admin = createAdminApp(metrics, {
    startedAt,
    version: VERSION,
    ready: () => ready,
    reloadPolicy: () =>
      queued(() =>
        reloadPolicy(
          (options.policySource ?? (() => loadLivePolicy(options.env ?? process.env)))(),
        ),
      ),
    reload,
    ...(quarantine
      ? {
          quarantine: {
            list: () => quarantine.list(),
            release: (agent: string) => {
              const released = quarantine.release(agent);
              if (released) audit.event("release", { agent }, "agent released from quarantine");
              return released;
            },
          },
        }
      : {}),
    token: () => adminToken,
    activity: {
      recent: (f) => activity.recent(f),
      watch: (fn) => activity.watch(fn),
      agents: () => {
        const open = new Map(front.perAgentConnections());
        const held = new Map((quarantine?.list() ?? []).map((q) => [q.agent, q]));
        return activity.agents().map((a) => {
          const q = held.get(a.agent);
          return {
            ...a,
            connections: open.get(a.agent) ?? 0,
            quarantined: q !== undefined,
            ...(q ? { quarantinedFor: q.kind } : {}),
          };
        });
      },
      reasons: () => activity.reasons(),
      certificateExpiresAt: () =>
        Number.isFinite(serverNotAfter) ? new Date(serverNotAfter).toISOString() : null,
    },
    credentials: () => {
      const uses = activity.uses();
      const status = sources?.status();
      return template.redacted().map((c) => {
        const group = c.name.replace(/\.(accessKeyId|secretAccessKey|sessionToken)$/, "");
        const s = status?.get(group);
        return {
          name: c.name,
          kind: c.kind,
          hosts: c.hosts,
          in: c.in,
          agents: c.agents,
          from: c.from,
          available: s ? s.available : true,
          expiresAt: s?.expiresAt ? new Date(s.expiresAt).toISOString() : null,
          uses: uses.get(c.name) ?? 0,
        };
      });
    },
    summary: () => ({
      version: VERSION,
      listen: `${config.listen.host}:${port}`,
      "agent connections": `${front.connections} (at most ${config.limits.maxConnections} in all, ${config.limits.maxAgentConnections} per agent)`,
      memory: memorySummary(guard, config.limits.memoryShedAt),
      credentials: state.credentialCount,
      "egress rules": policy.ruleCount,
      "matcher workers": pool.stats().workers,
      "leaf certificates cached": leaves.stats().size,
      "certificate mode": config.certificates.mode,
      "agents in quarantine": quarantine ? quarantine.list().length : "off",
    }),
  });
  let adminServer: ReturnType<typeof listenAdmin>;
  try {
    adminServer = listenAdmin(config.adminListen.host, config.adminListen.port, admin.fetch);
  } catch (e) {
    await front.close(0);
    cannotListen(e, config.adminListen.host, config.adminListen.port, "SLAPENIR_ADMIN_LISTEN");
  }
  selfPorts.add(port);
  selfPorts.add(adminServer.port);
  audit.event(
    "start",
    {
      listen: `${config.listen.host}:${port}`,
      admin: `${config.adminListen.host}:${adminServer.port}`,
      credentials: state.credentialCount,
      rules: policy.ruleCount,
    },
    "proxy started",
  );

  return {
    // A reload may move either listener.
    get port() {
      return port;
    },
    get adminPort() {
      return adminServer.port;
    },
    config,
    caBundlePem: pki.caBundlePem,
    embeddedCa: pki.embedded,
    audit,
    metrics,
    pool,
    reloadSecrets,
    reloadPolicy,
    reload,
    reloadCredentials(c) {
      front.reloadCredentials(c);
      serverNotAfter = notAfterOf(c.certPem);
      audit.event("reload", { what: "tls" }, "TLS credentials reloaded");
    },
    async close() {
      ready = false;
      clearInterval(lagTimer);
      watcher?.close();
      guard?.stop();
      clearInterval(recheck);
      await front.close(live.limits.shutdownGraceMs);
      log.close();
      notices.close();
      upstream.close();
      adminServer.stop();
      for (const d of [...draining.values()]) d.retire();
      await pool.close();
      inline.reset();
      sources?.stop();
      state.dispose();
      secrets.dispose();
      disposeSources(template);
      template.dispose();
      leaves.clear();
      audit.event("stop", {}, "proxy stopped");
      await audit.flush();
    },
  };
}

/**
 * How often memory use is read (and at most how often a new stall reads it), how long an agent
 * may take no bytes before its connection may be shed below the critical level, and how many
 * of an agent's connections must be waiting on it for it to be refused new ones under pressure.
 */
const VIOLATION_TEXT: Record<ViolationKind, string> = {
  dlp: "a real credential in the agent's request",
  rules: "a request the rules deny, on a host a credential is bound to",
  "foreign-dummy": "another agent's dummy in the agent's request",
  reflection: "a real value in the answer to the agent's request (redacted)",
};

/** A listener that could not be opened: which address, why, and the variable that sets it. */
function cannotListen(e: unknown, host: string, port: number, variable: string): never {
  const code = (e as NodeJS.ErrnoException | undefined)?.code;
  const why =
    code === "EADDRINUSE"
      ? "the address is already in use (another proxy, or another service on that port)"
      : code === "EACCES"
        ? "permission denied (ports below 1024 need privileges)"
        : code === "EADDRNOTAVAIL"
          ? "no local interface has that address"
          : (code ?? "the system refused it");
  throw new ConfigError(
    "listen-failed",
    `cannot listen on ${host}:${port}: ${why}; choose another with ${variable}`,
    variable,
  );
}

/**
 * The sources of a configuration, read once (each bounded by its own timeout) with what they
 * gave put in force at once — nothing is in flight yet; null when no credential has one.
 */
async function startSources(
  config: SecretsConfig,
  onChange: () => void,
  onEvent: (e: SourceEvent) => void,
): Promise<CredentialSources | null> {
  if (config.sources.length === 0) return null;
  let started = false;
  const mgr = new CredentialSources(config.sources, {
    onChange: () => {
      if (started) onChange();
    },
    onEvent,
  });
  await mgr.start();
  mgr.promote();
  started = true;
  return mgr;
}

/** A source's news: an audit event and a count (names and reasons, never a value). */
function sourceEvent(audit: AuditLog, metrics: ProxyMetrics | undefined, e: SourceEvent): void {
  metrics?.sources.inc({ credential: e.credential, result: e.result });
  const fields: Record<string, string | number> = { credential: e.credential, result: e.result };
  if (e.reason) fields.reason = e.reason;
  if (e.expiresAt) fields.expiresAt = new Date(e.expiresAt).toISOString();
  audit.event(
    "source",
    fields,
    e.result === "failed"
      ? `credential source for ${e.credential} failed: ${e.reason}`
      : `credential source for ${e.credential}: ${e.result}`,
  );
}

const GUARD_INTERVAL_MS = 50;
const LEAF_CACHE_CAPACITY = 1000;

/** Both embedded, in one home: only the server's names can differ (issued again live). */
function sameHome(a: ProxyConfig["certificates"], b: ProxyConfig["certificates"]): boolean {
  return a.mode === "embedded" && b.mode === "embedded" && a.home === b.home;
}

function pick<T, K extends keyof T>(o: T, keys: readonly K[]): Pick<T, K> {
  return Object.fromEntries(keys.map((k) => [k, o[k]])) as Pick<T, K>;
}

const GUARD_MIN_GAP_MS = 10;
const LAG_SAMPLE_MS = 50;
const BUSY_LATE_MS = 50;
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

function memorySummary(guard: MemoryGuard | null, shedAt: number): string {
  const limit = guard?.limitBytes ?? null;
  if (!guard) return "no guard (SLAPENIR_MEMORY_LIMIT=off)";
  if (limit === null) return "no limit known (not in a memory-limited container)";
  const mib = (n: number) => `${Math.round(n / 1048576)} MiB`;
  return `${mib(guard.usedBytes)} of ${mib(limit)}; stalled connections are shed at ${Math.round(shedAt * 100)} %`;
}

/** When the first certificate of a PEM chain expires (ms since the epoch), or NaN. */
function notAfterOf(certPem: string): number {
  try {
    return new x509.X509Certificate(certPem).notAfter.getTime();
  } catch {
    return Number.NaN;
  }
}
