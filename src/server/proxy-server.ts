// Assembles a running proxy from configuration: certificates (embedded CA or Step-CA files),
// credentials, policy, the matcher pool, the upstream client, the agent-facing front door and
// the admin listener. Start-up validates everything before listening and fails with an error
// that names what is wrong; it never prints a credential. Tests start it in-process.

import { readFileSync } from "node:fs";
import { resolve } from "node:path";
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
  revocationsPath,
} from "../config/proxy-config.ts";
import {
  disposeSources,
  loadSecrets,
  type SecretsConfig,
  type SourceValues,
} from "../credentials/secrets.ts";
import { CredentialSources, type SourceEvent } from "../credentials/sources/source-manager.ts";
import type { MemoryProbe } from "../guard/cgroup-probe.ts";
import { Quarantine } from "../guard/quarantine.ts";
import { QuarantineClaims } from "../guard/quarantine-claims.ts";
import type { ViolationKind } from "../guard/violations.ts";
import type { MatcherPool } from "../matcher/pool/pool.ts";
import { listenAdmin } from "../net/admin-listener.ts";
import { connectionDigest, type ServerCredentials } from "../net/agent/front-door.ts";
import type { Lookup } from "../net/upstream/dialer.ts";
import { Activity } from "../observe/activity.ts";
import { createAdminApp } from "../observe/admin-app.ts";
import { AuditLog } from "../observe/audit.ts";
import { ProxyMetrics } from "../observe/metrics.ts";
import { RefusalDigest } from "../observe/refusal-digest.ts";
import { requestDigest } from "../observe/request-log.ts";
import { EmbeddedCa } from "../pki/embedded-ca.ts";
import { exportPrivateKeyPem, importPrivateKeyPem, x509 } from "../pki/x509.ts";
import { PASS } from "../policy/verdict.ts";
import { ensureAdminToken } from "./admin-token.ts";
import { watchConfigFiles } from "./config-watch.ts";
import type { LoopSinks, LoopStats, Prepared } from "./loop.ts";
import { startLoops } from "./loop-set.ts";

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
  /** The matcher pool of the one event loop (absent with several: each Worker has its own). */
  readonly pool: MatcherPool | undefined;
  /** How many event loops serve agents. */
  readonly loops: number;
  /** Ends Worker loop `index` as a crash would (tests; nothing with one loop). */
  crashLoopForTest(index: number): void;
  /** Re-read TOKENS_JSON / the environment; the old values are zeroed once unused. */
  reloadSecrets(env?: Record<string, string | undefined>): Promise<void>;
  /**
   * Put a new policy (allowlists, denylist) in force: new requests and handshakes are decided
   * by it at once, and open connections whose agent or certificate it denies are closed.
   * Returns how many were.
   */
  reloadPolicy(next: LivePolicy): Promise<number>;
  /**
   * Read the configuration file, the environment's files and the secrets again and put what
   * changed in force, all or nothing: an error leaves everything as it was and is thrown.
   */
  reload(): Promise<ReloadReport>;
  /**
   * Swap server certificate / agent CA without dropping open connections; resolves once every
   * loop's new handshakes use them.
   */
  reloadCredentials(c: ServerCredentials): Promise<void>;
  /** Resolves once every audit line written so far, in any event loop, is in the stream. */
  settled(): Promise<void>;
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
  /** Matcher worker threads (default: cores; with several event loops, per loop). */
  readonly workers?: number;
  /** Event loops serving agents (default: the configuration's `loops`). */
  readonly loops?: number;
  /** Name resolution for upstreams (tests map their own names to loopback). */
  readonly lookup?: Lookup;
  /**
   * Names and their addresses, the only ones that resolve: `lookup` for Worker loops (a
   * function cannot be sent to one); each name asked for is told to `onLookup` (tests).
   */
  readonly staticNames?: Readonly<Record<string, string>>;
  readonly onLookup?: (host: string) => void;
  /**
   * An event loop Worker ended unasked (audited as `loop-exited`): main.ts stops the proxy, as a
   * one-loop proxy whose thread died would be, to start again with clean shared tables.
   */
  readonly onLoopEnded?: (index: number, reason: string) => void;
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
  // The proxy's own counts (sources, violations, quarantine); with one loop, its loop's too.
  const metrics = new ProxyMetrics();
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
  let sources = await startSources(template, onSourceChange, (e) => sourceEvent(audit, metrics, e));
  const first = template.withValues(sources?.snapshot() ?? new Map());
  const pki = await loadPki(config);
  // A real value in a request is a violation: the agent goes into quarantine at once (its
  // connections closed, new ones refused) and stays until released, across restarts.
  const quarantine = config.quarantine
    ? Quarantine.load(config.quarantine.file, config.quarantine.holdMs)
    : null;
  // Who is held, as every loop sees it at once: the file's record, and each new quarantine.
  const claims = new QuarantineClaims();
  for (const e of quarantine?.list() ?? []) claims.claim(e.agent, e.until);
  // Violations and reflections are audited one line per kind, agent and host per window (an
  // agent or an echoing upstream can repeat them at full speed); the metrics count each.
  const notices = new RefusalDigest<{
    evt: string;
    fields: Record<string, string | number | boolean>;
    msg: string;
  }>((r, repeated) => audit.event(r.evt, repeated ? { ...r.fields, repeated } : r.fields, r.msg));
  /** What the status view shows about traffic (observe/activity.ts). */
  const activity = new Activity();
  // Refused connections and requests, digested once for every event loop.
  const refusals = { connections: connectionDigest(audit), requests: requestDigest(audit) };
  /** Violations of one agent's request (or WebSocket message): audited, counted, quarantined. */
  const violated: LoopSinks["violated"] = (agent, host, port, kinds, redactions) => {
    const where = `${agent}\n${host}:${port}`;
    for (const kind of kinds) {
      activity.violation(agent, Date.now());
      metrics.violations.inc({ agent, kind });
      const fields = { agent, kind, host, port };
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
    claims.claim(agent, quarantine.entry(agent)?.until ?? null);
    loops.quarantined(agent, quarantine.entry(agent) ?? null);
  };
  const loops = await startLoops({
    count: options.loops ?? config.loops,
    config,
    secrets: first,
    pki: {
      credentials: pki.credentials,
      interceptionCertPem: pki.interception.certPem,
      interceptionKeyPem: await exportPrivateKeyPem(pki.interception.key),
    },
    audit,
    metrics,
    refusals,
    claims: claims.memory,
    sinks: {
      admitAgent: (agent) => quarantine?.check(agent) ?? PASS,
      violated,
      identified: (name, serial, notAfterMs, atMs) =>
        activity.identified(name, serial, notAfterMs, atMs),
      exchanged: (r, code, atMs, swapped) => activity.exchange(r, code, atMs, swapped),
    },
    hooks: {
      ...(options.shedding ? { shedding: options.shedding } : {}),
      ...(options.lookup ? { lookup: options.lookup } : {}),
      ...(options.memoryProbe ? { memoryProbe: options.memoryProbe } : {}),
      ...(options.guardClock ? { guardClock: options.guardClock } : {}),
      ...(options.identityClock ? { identityClock: options.identityClock } : {}),
      ...(options.rateClock ? { rateClock: options.rateClock } : {}),
    },
    ...(options.workers ? { workers: options.workers } : {}),
    ...(options.staticNames ? { staticNames: options.staticNames } : {}),
    ...(options.onLookup ? { onLookup: options.onLookup } : {}),
    ...(options.onLoopEnded ? { onLoopEnded: options.onLoopEnded } : {}),
    quarantine: quarantine?.list() ?? [],
  }).catch((e) => {
    sources?.stop();
    cannotListen(e, config.listen.host, config.listen.port, "SLAPENIR_LISTEN");
  });

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
    const build = (promoted?: typeof token) => {
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
    await loops.install(phase1, false);
    if (token.size === 0) return;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const drainedAll = await Promise.race([
      loops.olderDrained().then(() => true),
      new Promise<boolean>((ok) => {
        timer = setTimeout(() => ok(false), options.sourceSwitchMs ?? 30_000);
      }),
    ]);
    clearTimeout(timer);
    if (mgr !== sources) return;
    // Cut in every loop before any swaps the new value (an older answer elsewhere could show it).
    if (!drainedAll) await loops.cutOlder();
    const phase2 = build(token);
    if (!phase2) return;
    if (mgr.promote(token)) await loops.install(phase2, false);
    else phase2.dispose();
  }
  let port = loops.port;
  const selfPorts = new Set<number>([port]);
  let serverNotAfter = notAfterOf(pki.credentials.certPem);
  metrics.watchCertificate(() => serverNotAfter);
  const startedAt = Date.now();
  let ready = true;
  switchReady = true;
  if (changedEarly) sourcesChanged();
  /** Read the secrets again (the file, or `e`'s variables) and put them in force. */
  const reloadSecrets = async (e: Record<string, string | undefined> = env): Promise<void> => {
    await applySecrets(await loadSecrets(e, configFileFromEnv(e, cwd)));
    audit.event("reload", { credentials: credentialCount() }, "secrets reloaded");
  };
  const credentialCount = () => template.redacted().length;
  /**
   * New secrets, in two steps so no loop swaps a new value before every loop redacts it: first
   * every loop keeps swapping the values in force and redacts the new ones too, then every
   * loop swaps the new ones. Each step cuts what streams on older secrets (a reload is not a
   * source refresh: those answers cannot learn the new values).
   */
  const applySecrets = async (nextTemplate: SecretsConfig): Promise<void> => {
    const nextSources = await startSources(nextTemplate, onSourceChange, (ev) =>
      sourceEvent(audit, metrics, ev),
    );
    const oldTemplate = template;
    let built: SecretsConfig | undefined;
    let before: SecretsConfig;
    try {
      const oldValues = sources?.snapshot() ?? new Map();
      // What the old sources gave stays redacted under the new ones (a reload is no way to
      // make a replaced value readable again).
      if (sources && nextSources) sources.handOver(nextSources);
      built = nextTemplate.withValues(nextSources?.snapshot() ?? new Map());
      before = withPending(oldTemplate, oldValues, built);
    } catch (e) {
      // Nothing changed: the old sources and template stay in force.
      built?.dispose();
      nextSources?.stop();
      throw e;
    }
    sources?.stop();
    disposeSources(oldTemplate);
    template = nextTemplate;
    sources = nextSources;
    await loops.install(before, true);
    await loops.install(fresher(nextTemplate, nextSources, built), true);
    oldTemplate.dispose();
  };
  /** Put a new policy in force; connections it no longer admits are closed (how many). */
  const applyPolicy = async (next: LivePolicy): Promise<number> => {
    live = { ...live, policy: next };
    return loops.applyPolicy(next);
  };
  const reloadPolicy = async (next: LivePolicy): Promise<number> => {
    const closed = await applyPolicy(next);
    audit.event(
      "reload",
      {
        what: "policy",
        rules: loops.stats().rules,
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
    const out: Prepared[] = [];
    const none = () => {};
    const changed = (name: string) => applied.includes(name);
    try {
      if (changed("console.tokenFile")) {
        const t = ensureAdminToken(next.adminTokenFile);
        out.push({ commit: () => (adminToken = t), abort: none });
      }
      const c = next.certificates;
      let credentials: ServerCredentials | undefined;
      if (changed("serverNames") && c.mode === "embedded") {
        // The same home, other names: the server certificate is issued again for them.
        const ca = await EmbeddedCa.open({ home: c.home, serverNames: c.serverNames });
        credentials = { ...pki.credentials, certPem: ca.server.certPem, keyPem: ca.server.keyPem };
        const notAfter = notAfterOf(credentials.certPem);
        out.push({ commit: () => (serverNotAfter = notAfter), abort: none });
      }
      out.push(...(await loops.prepare(next, applied, credentials)));
      if (changed("listen")) {
        out.push({
          commit: () => {
            port = loops.port;
            selfPorts.add(port);
          },
          abort: none,
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
      const ready: Prepared[] = [];
      try {
        ready.push(...(await prepareRebinding(next, changes.applied)));
        await applySecrets(nextTemplate);
      } catch (e) {
        for (const r of ready) r.abort();
        nextTemplate.dispose();
        throw e;
      }
      for (const r of ready) r.commit();
      const closed = await applyPolicy(next.policy);
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
      loops.configure(
        live,
        changes.applied.some((k) => k.endsWith("Rate") || k === "rateLimit"),
      );
      // Every loop has put the listeners, limits and rates in force when the reload resolves.
      await loops.flush();
      audit.setLevel(next.logLevel);
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
          credentials: credentialCount(),
          rules: loops.stats().rules,
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
    ...(loops.metricsText ? { metricsText: loops.metricsText } : {}),
    ...(quarantine
      ? {
          quarantine: {
            list: () => quarantine.list(),
            release: (agent: string) => {
              const released = quarantine.release(agent);
              if (released) {
                audit.event("release", { agent }, "agent released from quarantine");
                claims.release(agent);
                loops.quarantined(agent, null);
              }
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
        const open = new Map(loops.stats().perAgent);
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
    summary: () => {
      const s = loops.stats();
      return {
        version: VERSION,
        listen: `${config.listen.host}:${port}`,
        "event loops": loops.count,
        "agent connections": `${s.connections} (at most ${config.limits.maxConnections} in all, ${config.limits.maxAgentConnections} per agent)`,
        memory: memorySummary(s, config.limits.memoryShedAt),
        credentials: credentialCount(),
        "egress rules": s.rules,
        "matcher workers": s.matcherWorkers,
        "leaf certificates cached": s.leaves,
        "certificate mode": config.certificates.mode,
        "agents in quarantine": quarantine ? quarantine.list().length : "off",
      };
    },
  });
  let adminServer: ReturnType<typeof listenAdmin>;
  try {
    adminServer = listenAdmin(config.adminListen.host, config.adminListen.port, admin.fetch);
  } catch (e) {
    await loops.close(0);
    sources?.stop();
    cannotListen(e, config.adminListen.host, config.adminListen.port, "SLAPENIR_ADMIN_LISTEN");
  }
  selfPorts.add(adminServer.port);
  loops.selfPorts([...selfPorts]);
  audit.event(
    "start",
    {
      listen: `${config.listen.host}:${port}`,
      admin: `${config.adminListen.host}:${adminServer.port}`,
      loops: loops.count,
      credentials: credentialCount(),
      rules: loops.stats().rules,
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
    pool: loops.local?.pool,
    loops: loops.count,
    crashLoopForTest: (index) => loops.crashForTest?.(index),
    reloadSecrets,
    reloadPolicy,
    reload,
    settled: () => loops.flush(),
    async reloadCredentials(c) {
      await loops.reloadCredentials(c);
      serverNotAfter = notAfterOf(c.certPem);
      audit.event("reload", { what: "tls" }, "TLS credentials reloaded");
    },
    async close() {
      ready = false;
      watcher?.close();
      await loops.close(live.limits.shutdownGraceMs);
      notices.close();
      refusals.connections.close();
      refusals.requests.close();
      adminServer.stop();
      sources?.stop();
      disposeSources(template);
      template.dispose();
      audit.event("stop", {}, "proxy stopped");
      await audit.flush();
    },
  };
}

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

/** Both embedded, in one home: only the server's names can differ (issued again live). */
function sameHome(a: ProxyConfig["certificates"], b: ProxyConfig["certificates"]): boolean {
  return a.mode === "embedded" && b.mode === "embedded" && a.home === b.home;
}

function memorySummary(s: LoopStats, shedAt: number): string {
  if (s.memoryUsed === null) return "no guard (SLAPENIR_MEMORY_LIMIT=off)";
  if (s.memoryLimit === null) return "no limit known (not in a memory-limited container)";
  const mib = (n: number) => `${Math.round(n / 1048576)} MiB`;
  return `${mib(s.memoryUsed)} of ${mib(s.memoryLimit)}; stalled connections are shed at ${Math.round(shedAt * 100)} %`;
}

/** When the first certificate of a PEM chain expires (ms since the epoch), or NaN. */
function notAfterOf(certPem: string): number {
  try {
    return new x509.X509Certificate(certPem).notAfter.getTime();
  } catch {
    return Number.NaN;
  }
}

/**
 * `built` again from what `sources` hold now: a source that changed while a reload's first step
 * was on its way to the loops has a pending value, which the second step must redact (a source
 * switch already in flight waits for the answers older than it, not for those begun on this
 * step). `built` itself when nothing is sourced, or when the new value does not fit (the
 * source's own switch refuses it).
 */
function fresher(
  template: SecretsConfig,
  sources: CredentialSources | null,
  built: SecretsConfig,
): SecretsConfig {
  if (!sources) return built;
  try {
    const again = template.withValues(sources.snapshot());
    built.dispose();
    return again;
  } catch {
    return built;
  }
}

/**
 * The configuration in force (`template` with `values`) that also redacts and blocks every real
 * value of `next` it does not hold already: a reload's first step.
 */
function withPending(
  template: SecretsConfig,
  values: ReadonlyMap<string, SourceValues>,
  next: SecretsConfig,
): SecretsConfig {
  const now = template.withValues(values);
  try {
    const held = [
      ...now.entries().flatMap((e) => (e.real ? [e.real] : [])),
      ...now.retired.map((r) => r.value),
    ];
    const fresh = [
      ...next.entries().flatMap((e) => (e.real ? [e.real] : [])),
      ...next.retired.map((r) => r.value),
    ].filter((v) => !held.some((h) => h.equals(v)));
    if (fresh.length === 0) return template.withValues(values);
    return template.withValues(
      new Map([...values, [RELOAD_PENDING, { current: null, redactOnly: fresh }]]),
    );
  } finally {
    now.dispose();
  }
}

/** The name a reload's new values are redacted under before they are swapped. */
const RELOAD_PENDING = "reload";
