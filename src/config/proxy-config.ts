// Everything except the credentials: listeners, certificate mode, egress allowlist, limits,
// rate limit, log level — read from the environment (and an optional policy JSON file) over
// embedded defaults, validated once at start and returned deeply frozen. A bad value is an
// error naming the variable (or JSON path) and the problem. The policy (allowlists and
// denylist) is the live part: `loadLivePolicy` reads it again on SIGHUP, the rest needs a
// restart.
//
// It must never read credentials (secrets.ts does) and never decide a request (src/policy/
// does, from the patterns parsed here).
//
// Certificate modes:
// - embedded (default): the embedded CA under SLAPENIR_HOME (see src/pki/embedded-ca.ts).
// - step-ca (CERT_PATH set): CERT_PATH holds
//     root_ca.crt           the CA that signs agent certificates (trusted for mTLS clients)
//     proxy.crt, proxy.key  the proxy's server certificate chain and key (renewed in place)
//     interception-ca.crt, interception-ca.key   optional; when absent the embedded
//                           interception CA under SLAPENIR_HOME is used, and agents must trust
//                           SLAPENIR_HOME/ca-bundle.pem as well as root_ca.crt.
//
// Policy file (SLAPENIR_POLICY), every field optional:
//   { "allow": ["api.openai.com", "*.github.com:443", "localhost:*"],
//     "agents": { "agent-a": { "allow": ["pypi.org"] } },
//     "denyAgents": ["agent-c"],
//     "denyCertificates": { "serials": ["4f…"], "fingerprints": ["sha256:ab…"] } }
// Allow patterns without a port mean port 443; `:*` means any port. A denied agent name
// refuses every certificate that names it (a renewal makes a new serial, the name stays).

import { existsSync, readFileSync, statSync } from "node:fs";
import { isIP } from "node:net";
import { join, resolve } from "node:path";
import { availableCores, cgroupProbe } from "../guard/cgroup-probe.ts";
import { VIOLATION_KINDS, type ViolationKind } from "../guard/violations.ts";
import { AGENT_NAME_RE } from "../policy/agent-name.ts";
import type { HostPattern } from "../policy/host-pattern.ts";
import { parseRequestRule, type RequestScope } from "../policy/request-rule.ts";
import { ConfigError, safeKey, showableName } from "./config-error.ts";
import {
  type ConfigFile,
  configFileFromEnv,
  inFileTerms,
  overlay,
  type PolicyDoc,
} from "./config-file.ts";

export const DEFAULT_ALLOW_PORT = 443;

export const STEP_CA_FILES = {
  rootCa: "root_ca.crt",
  serverCert: "proxy.crt",
  serverKey: "proxy.key",
  interceptionCert: "interception-ca.crt",
  interceptionKey: "interception-ca.key",
} as const;

export type LogLevel = "fatal" | "error" | "warn" | "info" | "debug" | "trace" | "silent";
const LOG_LEVELS: readonly LogLevel[] = [
  "fatal",
  "error",
  "warn",
  "info",
  "debug",
  "trace",
  "silent",
];

export interface ListenAddress {
  readonly host: string;
  readonly port: number;
}

export type CertificateSource =
  | { readonly mode: "embedded"; readonly home: string; readonly serverNames: readonly string[] }
  | {
      readonly mode: "step-ca";
      readonly dir: string;
      readonly rootCaFile: string;
      readonly serverCertFile: string;
      readonly serverKeyFile: string;
      /** Both set, or both undefined (then the embedded interception CA is used). */
      readonly interceptionCertFile: string | undefined;
      readonly interceptionKeyFile: string | undefined;
      readonly home: string;
    };

export interface AllowRule {
  readonly pattern: HostPattern;
  /** Ports this rule admits. */
  readonly ports: readonly number[] | "any";
  /** Methods and path it is narrowed to (`GET api.github.com/repos/**`). */
  readonly scope: RequestScope;
}

export interface ProxyLimits {
  readonly maxHeaderBytes: number;
  readonly maxHeaderCount: number;
  readonly headerTimeoutMs: number;
  readonly idleTimeoutMs: number;
  /** Longest gap between two body chunks (slow body / slow reader). */
  readonly bodyIdleTimeoutMs: number;
  readonly upstreamConnectTimeoutMs: number;
  /** Time until the upstream's response headers arrive. */
  readonly upstreamResponseTimeoutMs: number;
  /** Cap for bodies the proxy must hold whole (never for streamed bodies). */
  readonly maxHeldBodyBytes: number;
  /** Bytes all request bodies held whole at once may take (beyond it: 503). */
  readonly heldBodyBudgetBytes: number;
  /** Agent connections open at once, counted from TCP accept (the handshake included). */
  readonly maxConnections: number;
  /** Authenticated connections one agent may have open at once. */
  readonly maxAgentConnections: number;
  /** Connections from one address that may be in their TLS handshake at once. */
  readonly maxHandshakesPerAddress: number;
  readonly shutdownGraceMs: number;
  /**
   * Memory pressure (src/guard/memory-guard.ts): the limit ("auto": the container's cgroup
   * limit, if any; "off": no guard) and the fraction of it at which stalled connections are shed.
   */
  readonly memoryLimit: number | "auto" | "off";
  readonly memoryShedAt: number;
  /** Largest WebSocket message, inflated (streamed through the matcher, never held whole). */
  readonly wsMaxMessageBytes: number;
  /** A WebSocket side silent this long is pinged, and closed if it does not answer as fast. */
  readonly wsPingMs: number;
  /** A WebSocket with no message either way for this long is closed. */
  readonly wsIdleMs: number;
}

/** Who is refused outright: agents by name, certificates by serial or SHA-256 fingerprint. */
export interface Denylist {
  readonly agents: readonly string[];
  /** Lower-case hex, no leading zeros. */
  readonly serials: readonly string[];
  /** Lower-case hex. */
  readonly fingerprints: readonly string[];
}

/** The part of the configuration a running proxy reloads (SIGHUP). */
export interface LivePolicy {
  readonly allow: readonly AllowRule[];
  readonly agentAllow: ReadonlyMap<string, readonly AllowRule[]>;
  readonly deny: Denylist;
}

export interface Rate {
  readonly perSecond: number;
  readonly burst: number;
}

export interface ProxyConfig {
  /** The configuration file read (SLAPENIR_CONFIG), if any. */
  readonly configFile: string | undefined;
  readonly listen: ListenAddress;
  readonly adminListen: ListenAddress;
  readonly home: string;
  readonly certificates: CertificateSource;
  readonly tokensJson: string | undefined;
  readonly policy: LivePolicy;
  /** Permit private, loopback and link-local destinations (tests only). */
  readonly allowPrivate: boolean;
  /** Extra PEM trusted for upstream TLS (besides the system store and NODE_EXTRA_CA_CERTS). */
  readonly upstreamCaFile: string | undefined;
  /** Informational: the runtime reads NODE_EXTRA_CA_CERTS itself. */
  readonly nodeExtraCaCerts: string | undefined;
  readonly limits: ProxyLimits;
  /**
   * Token bucket per agent for requests and CONNECTs; undefined when disabled
   * (`SLAPENIR_RATE_LIMIT=off`).
   */
  readonly rateLimit: Rate | undefined;
  /** Token bucket per source address for new connections, taken before TLS. */
  readonly handshakeRate: Rate | undefined;
  /** Token bucket per agent for leaf certificates minted (a CONNECT to a host not cached). */
  readonly mintRate: Rate | undefined;
  /**
   * Quarantine on a violation (a real value in a request): `holdMs` null keeps an agent in until
   * an operator releases it; undefined when off (`SLAPENIR_QUARANTINE=off`).
   */
  readonly quarantine:
    | {
        readonly holdMs: number | null;
        readonly file: string;
        /** The violation kinds that quarantine (`SLAPENIR_QUARANTINE_ON`). */
        readonly on: readonly ViolationKind[];
      }
    | undefined;
  readonly logLevel: LogLevel;
  /** The bearer token the console's actions need (made on first start when absent). */
  readonly adminTokenFile: string;
  /** Event loops serving agents (`SLAPENIR_LOOPS`; `auto`: the cores this process may use). */
  readonly loops: number;
}

type Env = Readonly<Record<string, string | undefined>>;

/**
 * The configuration: the file SLAPENIR_CONFIG names (read here unless the caller read it, so
 * that one reading serves the configuration and the secrets), under the environment.
 */
export function loadProxyConfig(
  env: Env = process.env,
  cwd: string = process.cwd(),
  file: ConfigFile | undefined = configFileFromEnv(env, cwd),
): ProxyConfig {
  try {
    return fromEnv(overlay(env, file), cwd, file);
  } catch (e) {
    throw inFileTerms(e, env, file);
  }
}

function fromEnv(env: Env, cwd: string, file: ConfigFile | undefined): ProxyConfig {
  const home = resolve(cwd, nonEmpty(env, "SLAPENIR_HOME") ?? ".slapenir");
  const policy = livePolicy(env, cwd, file);

  const certPath = nonEmpty(env, "CERT_PATH");
  const certificates: CertificateSource = certPath
    ? stepCaSource(resolve(cwd, certPath), home)
    : { mode: "embedded", home, serverNames: splitList(env.SLAPENIR_SERVER_NAMES ?? "") };
  if (!certPath) {
    (certificates as { serverNames: readonly string[] }).serverNames.forEach((n, i) => {
      const bare = n.replace(/^\[(.*)\]$/, "$1");
      if (isIP(bare) === 0 && !/^[A-Za-z0-9_]([A-Za-z0-9_.-]{0,252})$/.test(bare)) {
        throw new ConfigError(
          "bad-value",
          "is neither a DNS name nor an IP address",
          `SLAPENIR_SERVER_NAMES[${i}]`,
        );
      }
    });
  }

  const upstreamCaFile = nonEmpty(env, "SLAPENIR_UPSTREAM_CA");
  if (upstreamCaFile !== undefined)
    checkPemFile(resolve(cwd, upstreamCaFile), "SLAPENIR_UPSTREAM_CA");

  const maxHeldBodyBytes = int(
    env,
    "SLAPENIR_MAX_HELD_BODY_BYTES",
    10_485_760,
    1_024,
    1_073_741_824,
  );

  const config: ProxyConfig = {
    configFile: file?.path,
    listen: listenAddress(env, "SLAPENIR_LISTEN", "127.0.0.1:8443"),
    adminListen: listenAddress(env, "SLAPENIR_ADMIN_LISTEN", "127.0.0.1:8081"),
    home,
    certificates,
    tokensJson: nonEmpty(env, "TOKENS_JSON") && resolve(cwd, env.TOKENS_JSON!),
    policy,
    allowPrivate: bool(env, "SLAPENIR_ALLOW_PRIVATE", false),
    upstreamCaFile: upstreamCaFile && resolve(cwd, upstreamCaFile),
    nodeExtraCaCerts: nonEmpty(env, "NODE_EXTRA_CA_CERTS"),
    limits: {
      maxHeaderBytes: int(env, "SLAPENIR_MAX_HEADER_BYTES", 16_384, 1_024, 1_048_576),
      maxHeaderCount: int(env, "SLAPENIR_MAX_HEADER_COUNT", 100, 8, 10_000),
      headerTimeoutMs: int(env, "SLAPENIR_HEADER_TIMEOUT_MS", 10_000, 100, 600_000),
      idleTimeoutMs: int(env, "SLAPENIR_IDLE_TIMEOUT_MS", 60_000, 100, 3_600_000),
      bodyIdleTimeoutMs: int(env, "SLAPENIR_BODY_IDLE_TIMEOUT_MS", 30_000, 100, 3_600_000),
      upstreamConnectTimeoutMs: int(
        env,
        "SLAPENIR_UPSTREAM_CONNECT_TIMEOUT_MS",
        10_000,
        100,
        600_000,
      ),
      upstreamResponseTimeoutMs: int(
        env,
        "SLAPENIR_UPSTREAM_RESPONSE_TIMEOUT_MS",
        120_000,
        100,
        3_600_000,
      ),
      maxHeldBodyBytes,
      heldBodyBudgetBytes: heldBodyBudget(env, maxHeldBodyBytes),
      ...connectionCaps(env),
      shutdownGraceMs: int(env, "SLAPENIR_SHUTDOWN_GRACE_MS", 10_000, 0, 600_000),
      memoryLimit: memoryLimit(env),
      memoryShedAt: int(env, "SLAPENIR_MEMORY_SHED_PERCENT", 80, 50, 95) / 100,
      wsMaxMessageBytes: int(
        env,
        "SLAPENIR_WS_MAX_MESSAGE_BYTES",
        67_108_864,
        1_024,
        1_073_741_824,
      ),
      wsPingMs: int(env, "SLAPENIR_WS_PING_MS", 30_000, 100, 3_600_000),
      wsIdleMs: int(env, "SLAPENIR_WS_IDLE_TIMEOUT_MS", 300_000, 100, 86_400_000),
    },
    rateLimit: rate(env, "SLAPENIR_RATE_LIMIT", "50/s"),
    handshakeRate: rate(env, "SLAPENIR_HANDSHAKE_RATE", "50/s"),
    mintRate: rate(env, "SLAPENIR_MINT_RATE", "10/s,burst=50"),
    quarantine: quarantine(env, resolve(home, "quarantine.json"), cwd),
    logLevel: logLevel(env),
    loops: loops(env, memoryLimit(env)),
    adminTokenFile: resolve(
      cwd,
      nonEmpty(env, "SLAPENIR_ADMIN_TOKEN_FILE") ?? join(home, "admin-token"),
    ),
  };
  return deepFreeze(config);
}

/**
 * The allowlists and the denylist, from the environment (SLAPENIR_ALLOW,
 * SLAPENIR_AGENT_DENYLIST) and the policy file (SLAPENIR_POLICY), deeply frozen. Called at
 * start and again on each reload: a bad file throws, and the caller keeps what it had.
 */
export function loadLivePolicy(
  env: Env = process.env,
  cwd: string = process.cwd(),
  file: ConfigFile | undefined = configFileFromEnv(env, cwd),
): LivePolicy {
  try {
    return livePolicy(overlay(env, file), cwd, file);
  } catch (e) {
    throw inFileTerms(e, env, file);
  }
}

function livePolicy(env: Env, cwd: string, configFile: ConfigFile | undefined): LivePolicy {
  const file = readPolicyFile(env, cwd);
  if (configFile) {
    const own = policyFromDoc(configFile.policy, configFile.path);
    file.allow.unshift(...own.allow);
    for (const [agent, rules] of own.agentAllow) {
      file.agentAllow.set(agent, Object.freeze([...rules, ...(file.agentAllow.get(agent) ?? [])]));
    }
    for (const k of ["agents", "serials", "fingerprints"] as const) {
      file.deny[k].push(...own.deny[k]);
    }
  }
  const revoked = readRevocations(revocationsPath(env, cwd));
  const allow: AllowRule[] = [];
  const allowEnv = nonEmpty(env, "SLAPENIR_ALLOW");
  if (allowEnv !== undefined) {
    splitList(allowEnv).forEach((p, i) => {
      allow.push(allowRule(p, `SLAPENIR_ALLOW[${i}]`));
    });
  }
  allow.push(...file.allow);
  const denyEnv = parseDenylist(env.SLAPENIR_AGENT_DENYLIST ?? "");
  const unique = (a: readonly string[], b: readonly string[]) => [...new Set([...a, ...b])];
  return deepFreeze({
    allow,
    agentAllow: file.agentAllow,
    deny: {
      agents: unique(denyEnv.agents, file.deny.agents),
      serials: unique(unique(denyEnv.serials, file.deny.serials), revoked),
      fingerprints: unique(denyEnv.fingerprints, file.deny.fingerprints),
    },
  });
}

/** Where `slapenir agent revoke` records revoked certificates (SLAPENIR_REVOKED_FILE). */
export function revocationsPath(env: Env, cwd: string): string {
  const home = resolve(cwd, nonEmpty(env, "SLAPENIR_HOME") ?? ".slapenir");
  return resolve(cwd, nonEmpty(env, "SLAPENIR_REVOKED_FILE") ?? join(home, "revoked.json"));
}

export interface Revocation {
  readonly agent: string;
  /** Lower-case hex, no leading zeros. */
  readonly serial: string;
  readonly revokedAt: string;
}

/** A JSON file a variable names: a file that does not read, or is not JSON, is named. */
function readJsonFile(path: string, variable: string): unknown {
  try {
    return JSON.parse(readFileSync(path, "utf8"));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new ConfigError(
      code ? "file-unreadable" : "bad-json",
      code ? `${path} cannot be read (${code})` : `${path} is not valid JSON`,
      variable,
    );
  }
}

/** The revocations file: `{"revoked": [{agent, serial, revokedAt}]}`; none when it is absent. */
export function readRevocationFile(path: string): Revocation[] {
  if (!existsSync(path)) return [];
  const doc = readJsonFile(path, "SLAPENIR_REVOKED_FILE");
  const list = isObject(doc) ? doc.revoked : undefined;
  if (!Array.isArray(list)) {
    throw new ConfigError(
      "bad-shape",
      'must be {"revoked": [...]}',
      `SLAPENIR_REVOKED_FILE ${path}`,
    );
  }
  return list.map((r, i) => {
    const where = `SLAPENIR_REVOKED_FILE ${path}: revoked[${i}]`;
    if (!isObject(r) || typeof r.serial !== "string" || !/^[0-9a-f]{1,40}$/.test(r.serial)) {
      throw new ConfigError("bad-value", "needs a serial in lower-case hex", where);
    }
    return {
      agent: typeof r.agent === "string" ? r.agent : "",
      serial: r.serial,
      revokedAt: typeof r.revokedAt === "string" ? r.revokedAt : "",
    };
  });
}

const readRevocations = (path: string): string[] => readRevocationFile(path).map((r) => r.serial);

function stepCaSource(dir: string, home: string): CertificateSource {
  if (!existsSync(dir) || !statSync(dir).isDirectory()) {
    throw new ConfigError("missing", `directory ${dir} does not exist`, "CERT_PATH");
  }
  const f = (name: string) => join(dir, name);
  for (const name of [STEP_CA_FILES.rootCa, STEP_CA_FILES.serverCert, STEP_CA_FILES.serverKey]) {
    if (!existsSync(f(name))) {
      throw new ConfigError(
        "missing",
        `${f(name)} does not exist (expected in Step-CA mode)`,
        "CERT_PATH",
      );
    }
  }
  const hasCert = existsSync(f(STEP_CA_FILES.interceptionCert));
  const hasKey = existsSync(f(STEP_CA_FILES.interceptionKey));
  if (hasCert !== hasKey) {
    throw new ConfigError(
      "missing",
      `${STEP_CA_FILES.interceptionCert} and ${STEP_CA_FILES.interceptionKey} must be provided together`,
      "CERT_PATH",
    );
  }
  return {
    mode: "step-ca",
    dir,
    rootCaFile: f(STEP_CA_FILES.rootCa),
    serverCertFile: f(STEP_CA_FILES.serverCert),
    serverKeyFile: f(STEP_CA_FILES.serverKey),
    interceptionCertFile: hasCert ? f(STEP_CA_FILES.interceptionCert) : undefined,
    interceptionKeyFile: hasKey ? f(STEP_CA_FILES.interceptionKey) : undefined,
    home,
  };
}

function allowRule(text: unknown, where: string): AllowRule {
  const rule = parseRequestRule(text, { allowAny: true });
  if (!rule.ok) throw new ConfigError("bad-host-pattern", rule.reason, where);
  const pattern = rule.value.host;
  const scope = rule.value.scope;
  const ports =
    pattern.port === "any"
      ? "any"
      : [pattern.port === undefined ? DEFAULT_ALLOW_PORT : pattern.port];
  return Object.freeze({ pattern, ports, scope });
}

interface PolicyFile {
  allow: AllowRule[];
  agentAllow: Map<string, readonly AllowRule[]>;
  deny: { agents: string[]; serials: string[]; fingerprints: string[] };
}

function readPolicyFile(env: Env, cwd: string): PolicyFile {
  const file = nonEmpty(env, "SLAPENIR_POLICY");
  if (file === undefined) return policyFromDoc({}, "");
  const path = resolve(cwd, file);
  const doc = readJsonFile(path, "SLAPENIR_POLICY");
  const where = `SLAPENIR_POLICY ${path}`;
  if (!isObject(doc)) throw new ConfigError("bad-shape", "must be a JSON object", where);
  for (const key of Object.keys(doc)) {
    if (!["allow", "agents", "denyAgents", "denyCertificates"].includes(key)) {
      throw new ConfigError("bad-shape", `unknown field ${safeKey(key)}`, where);
    }
  }
  return policyFromDoc(doc, where);
}

/** The policy fields of the policy file or the configuration file; `where` names the file. */
function policyFromDoc(doc: PolicyDoc, where: string): PolicyFile {
  const out: PolicyFile = {
    allow: [],
    agentAllow: new Map(),
    deny: { agents: [], serials: [], fingerprints: [] },
  };
  if (doc.allow !== undefined) out.allow = patternList(doc.allow, `${where}: allow`);
  if (doc.agents !== undefined) {
    if (!isObject(doc.agents))
      throw new ConfigError(
        "bad-shape",
        "must be an object keyed by agent name",
        `${where}: agents`,
      );
    for (const [agent, rules] of Object.entries(doc.agents)) {
      if (!AGENT_NAME_RE.test(agent))
        throw new ConfigError(
          "bad-value",
          "has a key that is not a valid agent name",
          `${where}: agents`,
        );
      const w = `${where}: agents.${showableName(agent) ? agent : "(a name not shown)"}`;
      if (!isObject(rules) || Object.keys(rules).some((k) => k !== "allow")) {
        throw new ConfigError("bad-shape", 'must be { "allow": [...] }', w);
      }
      out.agentAllow.set(agent, Object.freeze(patternList(rules.allow ?? [], `${w}.allow`)));
    }
  }
  if (doc.denyAgents !== undefined) {
    const w = `${where}: denyAgents`;
    if (!Array.isArray(doc.denyAgents))
      throw new ConfigError("bad-shape", "must be an array of agent names", w);
    out.deny.agents = doc.denyAgents.map((a, i) => agentName(a, `${w}[${i}]`));
  }
  if (doc.denyCertificates !== undefined) {
    const d = doc.denyCertificates;
    const w = `${where}: denyCertificates`;
    if (!isObject(d)) throw new ConfigError("bad-shape", "must be an object", w);
    out.deny.serials = hexList(d.serials, `${w}.serials`, "serial");
    out.deny.fingerprints = hexList(d.fingerprints, `${w}.fingerprints`, "fingerprint");
  }
  return out;
}

function patternList(value: unknown, where: string): AllowRule[] {
  if (!Array.isArray(value))
    throw new ConfigError("bad-shape", "must be an array of host patterns", where);
  return value.map((p, i) => allowRule(p, `${where}[${i}]`));
}

function hexList(value: unknown, where: string, kind: "serial" | "fingerprint"): string[] {
  if (value === undefined) return [];
  if (!Array.isArray(value))
    throw new ConfigError("bad-shape", "must be an array of hex strings", where);
  return value.map((v, i) => checkHex(v, `${where}[${i}]`, kind));
}

function checkHex(v: unknown, where: string, kind: "serial" | "fingerprint"): string {
  if (typeof v !== "string") throw new ConfigError("bad-value", "must be a hex string", where);
  const hex = v
    .replace(/^sha256:/i, "")
    .replace(/:/g, "")
    .toLowerCase();
  if (kind === "fingerprint" && !/^[0-9a-f]{64}$/.test(hex)) {
    throw new ConfigError(
      "bad-value",
      "must be a SHA-256 fingerprint (64 hex digits, colons allowed)",
      where,
    );
  }
  if (kind === "serial" && !/^[0-9a-f]{1,40}$/.test(hex)) {
    throw new ConfigError(
      "bad-value",
      "must be a certificate serial (1..40 hex digits, colons allowed)",
      where,
    );
  }
  return hex;
}

/** `agent:NAME`, `serial:HEX` or `sha256:HEX`, comma-separated. */
function parseDenylist(text: string): Denylist {
  const out = { agents: [] as string[], serials: [] as string[], fingerprints: [] as string[] };
  splitList(text).forEach((entry, i) => {
    const where = `SLAPENIR_AGENT_DENYLIST[${i}]`;
    const m = /^(agent|serial|sha256):(.+)$/i.exec(entry);
    if (!m) {
      throw new ConfigError(
        "bad-value",
        "entries must be 'agent:NAME', 'serial:HEX' or 'sha256:HEX'",
        where,
      );
    }
    const kind = m[1]!.toLowerCase();
    if (kind === "agent") out.agents.push(agentName(m[2], where));
    else if (kind === "serial") out.serials.push(checkHex(m[2], where, "serial"));
    else out.fingerprints.push(checkHex(m[2], where, "fingerprint"));
  });
  return out;
}

function agentName(v: unknown, where: string): string {
  if (typeof v !== "string" || !AGENT_NAME_RE.test(v)) {
    throw new ConfigError(
      "bad-value",
      `is not a valid agent name (${AGENT_NAME_RE.source})`,
      where,
    );
  }
  return v;
}

function listenAddress(env: Env, name: string, fallback: string): ListenAddress {
  return parseListenAddress(nonEmpty(env, name) ?? fallback, name);
}

/** `host:port` (IPv6 in brackets); a ConfigError naming `name` otherwise. */
export function parseListenAddress(text: string, name: string): ListenAddress {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]]+)):([0-9]{1,5})$/.exec(text);
  const host = m?.[1] ?? m?.[2];
  const port = Number(m?.[3]);
  if (!m || host === undefined || port > 65535) {
    throw new ConfigError(
      "bad-value",
      "must be host:port (e.g. 127.0.0.1:8443, [::]:443, 0.0.0.0:443)",
      name,
    );
  }
  if (m[1] !== undefined && isIP(host) !== 6)
    throw new ConfigError("bad-value", "bracketed host must be an IPv6 address", name);
  return { host, port };
}

function int(env: Env, name: string, fallback: number, min: number, max: number): number {
  const text = nonEmpty(env, name);
  if (text === undefined) return fallback;
  if (!/^[0-9]+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new ConfigError("bad-value", `must be an integer from ${min} to ${max}`, name);
  }
  return Number(text);
}

/**
 * The held-body budget, never below the largest body one request may have held. 32 MiB by
 * default: a held body costs up to about three times its size while it is collected and
 * written, and the proxy container's memory must also carry the runtime and every streaming
 * agent (measured in test/e2e/streaming-memory-limit.test.ts; docs/DEPLOY.md).
 */
function heldBodyBudget(env: Env, maxHeldBodyBytes: number): number {
  const name = "SLAPENIR_HELD_BODY_BUDGET_BYTES";
  const budget = int(env, name, 33_554_432, 1_024, 17_179_869_184);
  if (budget < maxHeldBodyBytes) {
    throw new ConfigError(
      "bad-value",
      `must be at least SLAPENIR_MAX_HELD_BODY_BYTES (${maxHeldBodyBytes}), or a body that size could never be held`,
      name,
    );
  }
  return budget;
}

/**
 * Caps on open agent connections: 1024 in all, 64 per agent, 64 handshakes in progress per
 * address by default. Each open connection costs the proxy memory: about 45 KB for an idle
 * tunnel, 1.5–2 MiB for one whose agent stopped reading a large answer (measured in a memory
 * cgroup, test/e2e/streaming-memory-limit.test.ts). Without a cap one agent opening thousands
 * of tunnels got the proxy OOM-killed and every agent lost it; compose's 384M is sized for
 * one agent stalling 64. Without the per-address cap one peer holding handshakes open could
 * take the whole total without any certificate.
 */
function connectionCaps(env: Env): {
  maxConnections: number;
  maxAgentConnections: number;
  maxHandshakesPerAddress: number;
} {
  const total = "SLAPENIR_MAX_CONNECTIONS";
  const maxConnections = int(env, total, 1_024, 1, 1_000_000);
  const within = (name: string, fallback: number): number => {
    const value = int(env, name, Math.min(fallback, maxConnections), 1, 1_000_000);
    if (value > maxConnections) {
      throw new ConfigError(
        "bad-value",
        `must not exceed ${total} (${maxConnections}), which every connection counts against`,
        name,
      );
    }
    return value;
  };
  return {
    maxConnections,
    maxAgentConnections: within("SLAPENIR_MAX_AGENT_CONNECTIONS", 64),
    maxHandshakesPerAddress: within("SLAPENIR_MAX_HANDSHAKES_PER_ADDRESS", 64),
  };
}

/** Docker's memory size notation ("384M", "1g", "512m", "1048576"): binary units. */
export function parseByteSize(text: string): number | null {
  const m = /^(\d+(?:\.\d+)?)\s*([bkmg]?)b?$/i.exec(text.trim());
  if (!m) return null;
  const scale = { "": 1, b: 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[m[2]!.toLowerCase()]!;
  return Math.round(Number(m[1]) * scale);
}

function memoryLimit(env: Env): ProxyLimits["memoryLimit"] {
  const name = "SLAPENIR_MEMORY_LIMIT";
  const text = nonEmpty(env, name) ?? "auto";
  if (/^(auto|off)$/i.test(text)) return text.toLowerCase() as "auto" | "off";
  const bytes = parseByteSize(text);
  if (bytes === null || bytes < 32 * 1024 * 1024) {
    throw new ConfigError(
      "bad-value",
      "must be 'auto', 'off' or a size of at least 32M like '384M' or '1g'",
      name,
    );
  }
  return bytes;
}

function bool(env: Env, name: string, fallback: boolean): boolean {
  const text = nonEmpty(env, name);
  if (text === undefined) return fallback;
  if (/^(1|true|yes|on)$/i.test(text)) return true;
  if (/^(0|false|no|off)$/i.test(text)) return false;
  throw new ConfigError("bad-value", "must be true or false", name);
}

/** `on` (until released), `off`, or how long it lasts: `900s`, `30m`, `12h`. */
function quarantine(env: Env, inHome: string, cwd: string): ProxyConfig["quarantine"] {
  const text = nonEmpty(env, "SLAPENIR_QUARANTINE") ?? "on";
  const named = nonEmpty(env, "SLAPENIR_QUARANTINE_FILE");
  const file = named ? resolve(cwd, named) : inHome;
  // `reflection` is opt-in: it closes the redactor as an oracle, but an upstream that stores a
  // presented credential (a request log) then lets one agent get its readers quarantined.
  const on = splitList(nonEmpty(env, "SLAPENIR_QUARANTINE_ON") ?? "dlp").map((k, i) => {
    if (!(VIOLATION_KINDS as readonly string[]).includes(k)) {
      throw new ConfigError(
        "bad-value",
        `must be kinds among ${VIOLATION_KINDS.join(", ")}`,
        `SLAPENIR_QUARANTINE_ON[${i}]`,
      );
    }
    return k as ViolationKind;
  });
  if (/^on$/i.test(text)) return { holdMs: null, file, on };
  if (/^off$/i.test(text)) return undefined;
  const m = /^([0-9]{1,6})(s|m|h)$/.exec(text);
  if (!m || Number(m[1]) === 0) {
    throw new ConfigError(
      "bad-value",
      "must be 'on' (until released), 'off', or a time like '900s', '30m', '12h'",
      "SLAPENIR_QUARANTINE",
    );
  }
  const unit = { s: 1000, m: 60_000, h: 3_600_000 }[m[2] as "s" | "m" | "h"];
  return { holdMs: Number(m[1]) * unit, file, on };
}

/** `off`, or `N/s` / `N/m` with an optional burst `N/s,burst=M` (burst defaults to 2×N/s, at least 1). */
function rate(env: Env, name: string, fallback: string): Rate | undefined {
  const text = nonEmpty(env, name) ?? fallback;
  if (/^off$/i.test(text)) return undefined;
  const m = /^([0-9]+(?:\.[0-9]+)?)\/(s|m)(?:,burst=([0-9]+))?$/.exec(text);
  const n = Number(m?.[1]);
  if (!m || !(n > 0) || n > 1_000_000) {
    throw new ConfigError(
      "bad-value",
      "must be 'off' or like '50/s', '600/m', '50/s,burst=100'",
      name,
    );
  }
  const perSecond = m[2] === "m" ? n / 60 : n;
  const burst = m[3] !== undefined ? Number(m[3]) : Math.max(1, Math.ceil(perSecond * 2));
  if (burst < 1) throw new ConfigError("bad-value", "burst must be at least 1", name);
  return { perSecond, burst };
}

function loops(env: Env, memory: ProxyLimits["memoryLimit"]): number {
  const text = nonEmpty(env, "SLAPENIR_LOOPS") ?? "auto";
  if (text === "auto") return autoLoops(memory);
  return int({ SLAPENIR_LOOPS: text }, "SLAPENIR_LOOPS", 1, 1, 64);
}

/**
 * `auto` (the default): a loop per core the process may use (its cgroup's CPU limit included),
 * and at most one per LOOP_MEMORY of its memory limit (the configured one, else its container's).
 */
export function autoLoops(memory: ProxyLimits["memoryLimit"] = "auto"): number {
  const limit = typeof memory === "number" ? memory : (cgroupProbe()?.read(0)?.limit ?? null);
  return loopsFor(availableCores(), limit);
}

/** The loops `auto` gives `cores` cores under a memory limit (null: none). */
export function loopsFor(cores: number, memoryLimit: number | null): number {
  const byMemory = memoryLimit === null ? cores : Math.floor(memoryLimit / LOOP_MEMORY);
  return Math.max(1, Math.min(cores, byMemory, 64));
}

/**
 * Memory a loop is given under a limit. Each loop keeps its own heap, matcher workers, leaf
 * cache and buffers: ~55 MiB idle and 150–280 MiB more under a thousand busy tunnels
 * (bench/README.md); compose's 384M runs one, as it was sized for.
 */
const LOOP_MEMORY = 256 * 1024 * 1024;

function logLevel(env: Env): LogLevel {
  const text = (nonEmpty(env, "SLAPENIR_LOG_LEVEL") ?? "info").toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(text)) {
    throw new ConfigError(
      "bad-value",
      `must be one of ${LOG_LEVELS.join(", ")}`,
      "SLAPENIR_LOG_LEVEL",
    );
  }
  return text as LogLevel;
}

function checkPemFile(path: string, name: string): void {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new ConfigError(
      "file-unreadable",
      `${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`,
      name,
    );
  }
  if (!text.includes("-----BEGIN CERTIFICATE-----")) {
    throw new ConfigError("bad-value", `${path} holds no PEM certificate`, name);
  }
}

function nonEmpty(env: Env, name: string): string | undefined {
  const v = env[name]?.trim();
  return v === undefined || v === "" ? undefined : v;
}

function splitList(text: string): string[] {
  return text
    .split(",")
    .map((s) => s.trim())
    .filter((s) => s !== "");
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function deepFreeze<T>(value: T): T {
  // Frozen already (the live policy inside the whole configuration): done, and its Map's
  // methods are blocked already.
  if (Object.isFrozen(value)) return value;
  if (value instanceof Map) {
    for (const v of value.values()) deepFreeze(v);
    // A frozen Map can still be mutated through set/delete: block them.
    const map = value as Map<unknown, unknown>;
    map.set = () => {
      throw new TypeError("configuration is immutable");
    };
    map.delete = () => {
      throw new TypeError("configuration is immutable");
    };
    map.clear = () => {
      throw new TypeError("configuration is immutable");
    };
  } else if (typeof value === "object" && value !== null) {
    for (const v of Object.values(value)) deepFreeze(v);
  }
  return Object.freeze(value);
}

/**
 * A copy of a configuration (or a live policy) that can be posted to a Worker: the immutable
 * Maps become plain ones (their blocked methods cannot be cloned). `fromWire` freezes it again.
 */
export function toWire<T>(value: T): T {
  if (value instanceof Map) {
    return new Map([...value].map(([k, v]) => [k, toWire(v)])) as T;
  }
  if (value instanceof Set) return new Set([...value].map(toWire)) as T;
  if (Array.isArray(value)) return value.map(toWire) as T;
  if (typeof value === "object" && value !== null) {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, toWire(v)])) as T;
  }
  return value;
}

/** A configuration or policy as a Worker received it, immutable again. */
export function fromWire<T>(value: T): T {
  return deepFreeze(value);
}
