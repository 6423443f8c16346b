// The operator's command line: `bun run slapenir -- <command>`. It creates the embedded PKI,
// issues and lists agent certificates, prints the CA bundle agents must trust and the
// environment an agent's tools need, runs the local forwarder, and checks a configuration.
// It must never print a credential value or key material (certificate and key files are
// written to disk; only their paths are printed), and exits non-zero with a one-line reason.

import { existsSync } from "node:fs";
import { mkdir, readdir, readFile, rename, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { dirname, join, resolve } from "node:path";
import { ConfigError } from "./config/config-error.ts";
import { configFileFromEnv } from "./config/config-file.ts";
import {
  loadProxyConfig,
  type ProxyConfig,
  parseListenAddress,
  readRevocationFile,
  revocationsPath,
} from "./config/proxy-config.ts";
import { SecretState } from "./credentials/secret-state.ts";
import { disposeSources, loadSecrets, loadSecretsFile } from "./credentials/secrets.ts";
import { fetcherFor, SourceError } from "./credentials/sources/fetch-source.ts";
import { startForwarder } from "./net/forwarder.ts";
import {
  AGENT_DEFAULT_DAYS,
  AGENT_DIR_FILES,
  EMBEDDED_CA_FILES,
  EmbeddedCa,
} from "./pki/embedded-ca.ts";
import { PkiError } from "./pki/pki-error.ts";
import { normalizeSerialHex, x509 } from "./pki/x509.ts";
import { AGENT_NAME_RE } from "./policy/agent-name.ts";
import { compileLivePolicy } from "./policy/egress-policy.ts";
import { explainRequest } from "./policy/policy-test.ts";
import { readAdminToken } from "./server/admin-token.ts";
import type { ReloadReport } from "./server/proxy-server.ts";

type Env = Readonly<Record<string, string | undefined>>;

const COMMANDS: Record<string, string> = {
  init: `init
  Create (or check) the embedded PKI under SLAPENIR_HOME: the root CA agents and the proxy
  trust, the interception CA, the proxy's server certificate.`,
  check: `check
  Validate the configuration as the proxy would read it at start (the configuration file,
  the environment, the policy and secrets files) without starting it; prints a summary, or the
  first error and where it is. Exit 0 when it would start.`,
  "agent issue": `agent issue NAME [--days N] [--out DIR] [--force]
  Issue an agent client certificate (default ${AGENT_DEFAULT_DAYS} days) into SLAPENIR_HOME/agents, or
  --out DIR as one agent's certificate directory, the agent container's layout: agent.crt,
  agent.key, root_ca.crt, ca-bundle.pem (what forward --certs and the container read). An agent that already has one is refused unless --force: the old certificate stays
  valid until it expires or is revoked (SLAPENIR_AGENT_DENYLIST serial:…).`,
  "agent renew": `agent renew NAME [--days N]
  A new certificate for NAME's key (default ${AGENT_DEFAULT_DAYS} days), written over its old one; the key
  stays, so the agent only re-reads its certificate. The old certificate stays valid until it
  expires: revoke it (agent revoke, before renewing) if it must stop now.`,
  "agent list": `agent list
  The agents with a certificate under SLAPENIR_HOME/agents: name, serial, expiry and state
  (valid, expired, revoked, or denied by SLAPENIR_AGENT_DENYLIST or the policy file).`,
  "agent revoke": `agent revoke NAME
  Revoke NAME's current certificate: its serial is recorded in SLAPENIR_HOME/revoked.json
  (SLAPENIR_REVOKED_FILE) and the running proxy reloads its policy at once (its connections
  close, new ones are refused); a proxy started later reads the file.`,
  "agent release": `agent release NAME
  Let an agent out of quarantine (the same as quarantine release NAME).`,
  "agent env": `agent env NAME [--forward HOST:PORT] [--certs DIR]
  The environment an agent's tools need to go through the proxy by the local forwarder
  (\`slapenir forward NAME\`, default 127.0.0.1:3128): curl, git, pip, Python requests, Node, Bun;
  --certs DIR as for forward.`,
  forward: `forward NAME [--listen HOST:PORT] [--proxy HOST:PORT] [--name SERVERNAME] [--certs DIR]
  A local forwarder for tools that cannot present a client certificate to an HTTPS proxy: a
  plain proxy address on loopback (default 127.0.0.1:3128) whose connections are wrapped in
  NAME's mTLS to the proxy (default: SLAPENIR_LISTEN; the name checked: localhost). NAME's
  files: SLAPENIR_HOME/agents, or --certs DIR, one agent's certificate directory (agent issue --out).`,
  reload: `reload
  Ask the running proxy to read its configuration again — the file, the policy, revocations and
  secrets — as a change of the file or SIGHUP does: all or nothing. Prints what changed and
  what waits for a restart; a file that does not read is refused with its error.`,
  doctor: `doctor
  Check what a proxy here needs, without changing anything: the configuration, the listen and
  admin ports (free, or held by a running proxy that answers), the embedded PKI and every agent
  certificate (missing, expired, or expiring within 7 days), upstream trust, the allowlist.
  Exit 1 when something would stop the proxy or an agent.`,
  "policy test": `policy test AGENT METHOD URL
  What the proxy would decide for one request, with no traffic sent: the allow rule that admits
  it or the refusal, the path as the rules read it, and which credentials would be swapped
  where (names only). Exit 0 when it would be allowed, 1 when refused.`,
  "ca bundle": `ca bundle
  Print the CA bundle PEM an agent must trust (the proxy's and the interception CA's roots).`,
  "secrets check": `secrets check FILE
  Validate a secrets file, read each credential source once, print a log-safe summary.`,
  "quarantine list": `quarantine list
  The agents in quarantine (asks the running proxy's admin API, SLAPENIR_ADMIN_LISTEN).`,
  "quarantine release": `quarantine release NAME
  Let an agent out of quarantine (asks the running proxy's admin API).`,
};

export const USAGE = `usage: bun run slapenir -- [--config FILE] <command>   (--version; <command> --help)

${Object.values(COMMANDS)
  .map((c) => `  ${c.split("\n")[0]}`)
  .join("\n")}

--config FILE: the configuration file (as SLAPENIR_CONFIG); the environment overrides it:
SLAPENIR_HOME (default ./.slapenir), SLAPENIR_LISTEN, SLAPENIR_ADMIN_LISTEN (where the running
proxy's admin API is), …; docs/CONFIG.md lists every setting`;

/** The help of the command `args` names (its first one or two words), if it names one. */
function helpFor(args: readonly string[]): string | undefined {
  const words = args.filter((a) => a !== "--help" && a !== "-h" && a !== "help");
  return COMMANDS[words.slice(0, 2).join(" ")] ?? COMMANDS[words[0] ?? ""];
}

export interface CliIo {
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
}

class UsageError extends Error {}

export async function runCli(
  argv: readonly string[],
  env: Env,
  io: CliIo,
  cwd: string = process.cwd(),
): Promise<number> {
  const args = argv[0] === "--" ? argv.slice(1) : [...argv];
  const at = args.findIndex((a) => a === "--config" || a.startsWith("--config="));
  if (at >= 0) {
    const file = args[at]!.startsWith("--config=") ? args[at]!.slice(9) : args[at + 1];
    args.splice(at, args[at]!.startsWith("--config=") ? 1 : 2);
    if (!file) {
      io.err("error: --config needs a FILE");
      return 2;
    }
    env = { ...env, SLAPENIR_CONFIG: file };
  }
  try {
    const [cmd, sub, ...rest] = args;
    if (cmd === "--version" || cmd === "version") {
      io.out(`slapenir ${await version()}`);
      return 0;
    }
    const wantsHelp = args.some((a) => a === "--help" || a === "-h") || cmd === "help";
    if (cmd === undefined || (wantsHelp && args.length === 1)) {
      io.out(USAGE);
      return cmd === undefined ? 2 : 0;
    }
    if (wantsHelp) {
      const help = helpFor(args);
      if (!help)
        throw new UsageError(`no command '${args.filter((a) => !a.startsWith("-")).join(" ")}'`);
      io.out(`usage: bun run slapenir -- ${help}`);
      return 0;
    }
    if (cmd === "secrets" && sub === "check") return await secretsCheck(rest, io, cwd);
    const config = loadProxyConfig(env, cwd);
    if (cmd === "init" && sub === undefined) return await init(config, io);
    if (cmd === "ca" && sub === "bundle" && rest.length === 0) return await caBundle(config, io);
    if (cmd === "agent" && sub === "issue") return await agentIssue(rest, config, io, cwd);
    if (cmd === "agent" && sub === "renew") return await agentRenew(rest, config, io);
    if (cmd === "agent" && sub === "list" && rest.length === 0)
      return await agentList(config, io, env, cwd);
    if (cmd === "agent" && sub === "env") return await agentEnv(rest, config, io, cwd);
    if (cmd === "agent" && sub === "revoke") return await agentRevoke(rest, config, io, env, cwd);
    if (cmd === "agent" && sub === "release") {
      return await quarantineCommand("release", rest, config, io);
    }
    if (cmd === "forward")
      return await forward(
        [sub, ...rest].filter((a) => a !== undefined),
        config,
        io,
        cwd,
      );
    if (cmd === "check" && sub === undefined) return await check(config, io, env, cwd);
    if (cmd === "reload" && sub === undefined) return await reload(config, io);
    if (cmd === "doctor" && sub === undefined) return await doctor(config, io, env, cwd);
    if (cmd === "policy" && sub === "test") return await policyTest(rest, config, io, env, cwd);
    if (cmd === "quarantine") return await quarantineCommand(sub, rest, config, io);
    throw new UsageError(`unknown command '${args.join(" ")}'`);
  } catch (err) {
    if (err instanceof UsageError) {
      io.err(`error: ${err.message}`);
      io.err(USAGE);
      return 2;
    }
    if (err instanceof ConfigError || err instanceof PkiError) {
      io.err(`error: ${err.message}`);
      return 1;
    }
    // Unknown failures: the class name only; a foreign message could quote file contents.
    io.err(`error: unexpected ${(err as Error)?.name ?? "failure"}; nothing was printed from it`);
    return 1;
  }
}

async function secretsCheck(rest: readonly string[], io: CliIo, cwd: string): Promise<number> {
  if (rest.length !== 1) throw new UsageError("secrets check takes exactly one FILE");
  const secrets = await loadSecretsFile(resolve(cwd, rest[0]!));
  const summary = secrets.redacted();
  // Each source read once, as the proxy would at start: what it says, never what it gave.
  const read = new Map<string, string>();
  let failed = 0;
  for (const src of secrets.sources) {
    const fetcher = fetcherFor(src.spec, src.shape);
    try {
      const got = await fetcher.fetch();
      for (const v of got.values.values()) v.dispose();
      const left = got.expiresAt === null ? null : Math.round((got.expiresAt - Date.now()) / 1000);
      read.set(src.name, left === null ? "read ok" : `read ok, expires in ${left} s`);
    } catch (e) {
      failed += 1;
      read.set(src.name, `FAILED: ${e instanceof SourceError ? e.message : "the source failed"}`);
    } finally {
      fetcher.dispose();
    }
  }
  disposeSources(secrets);
  secrets.dispose();
  io.out(
    `${failed === 0 ? "ok" : "error"}: ${summary.length} credential${summary.length === 1 ? "" : "s"}`,
  );
  for (const c of summary) {
    const agents = c.agents === "any" ? "any agent" : `agents ${c.agents.join(",")}`;
    const group = c.name.includes(".") ? c.name.slice(0, c.name.lastIndexOf(".")) : c.name;
    const real =
      c.from === "value"
        ? `real ${c.realLength} B`
        : `real from ${c.from} (${read.get(group) ?? read.get(c.name) ?? "not read"})`;
    io.out(
      `  ${c.name} (${c.kind}): dummy ${c.dummyLength} B, ${real}, hosts ${c.hosts.join(",")}, ${agents}` +
        `, in ${c.in.join(",") || "nothing (signed)"}${c.require ? ", require" : ""}${c.inUrl === "deny" ? ", not in URLs" : ""}`,
    );
  }
  return failed === 0 ? 0 : 1;
}

/** Asks the running proxy's admin API: its quarantine is in its memory (and its file). */
async function quarantineCommand(
  sub: string | undefined,
  rest: readonly string[],
  config: ProxyConfig,
  io: CliIo,
): Promise<number> {
  if (sub === "list" && rest.length === 0) {
    const res = await askProxy(config, io, "/quarantine", "GET", "error");
    if (!res) return 1;
    if (res.status === 404) {
      io.err("error: quarantine is off in the running proxy");
      return 1;
    }
    const { agents } = (await res.json()) as {
      agents: { agent: string; kind: string; since: number }[];
    };
    io.out(`${agents.length} agent${agents.length === 1 ? "" : "s"} in quarantine`);
    for (const a of agents)
      io.out(`  ${a.agent}: ${a.kind} since ${new Date(a.since).toISOString()}`);
    return 0;
  }
  if (sub === "release" && rest.length === 1 && AGENT_NAME_RE.test(rest[0]!)) {
    const res = await askProxy(config, io, `/quarantine/${rest[0]}/release`, "POST", "error");
    if (!res) return 1;
    if (!res.ok) {
      io.err(`error: ${rest[0]} is not in quarantine`);
      return 1;
    }
    io.out(`released ${rest[0]}`);
    return 0;
  }
  throw new UsageError("quarantine takes 'list' or 'release NAME'");
}

async function openCa(config: ProxyConfig): Promise<EmbeddedCa> {
  const c = config.certificates;
  return EmbeddedCa.open({ home: c.home, serverNames: c.mode === "embedded" ? c.serverNames : [] });
}

async function init(config: ProxyConfig, io: CliIo): Promise<number> {
  if (config.certificates.mode === "step-ca") {
    io.err(
      "note: CERT_PATH is set (Step-CA mode); only the interception CA is taken from SLAPENIR_HOME",
    );
  }
  const ca = await openCa(config);
  io.out(
    ca.created.length > 0
      ? `created: ${ca.created.join(", ")}`
      : "embedded PKI is present and valid",
  );
  io.out(`home: ${ca.home}`);
  io.out(`agents must trust: ${ca.caBundlePath}`);
  io.out("next: bun run slapenir -- agent issue NAME");
  return 0;
}

async function caBundle(config: ProxyConfig, io: CliIo): Promise<number> {
  const c = config.certificates;
  if (c.mode === "step-ca") {
    // The proxy's server certificate chains to the Step-CA root; intercepted sites chain to
    // the interception CA's root (embedded unless provided in CERT_PATH).
    let pem = await readFile(c.rootCaFile, "utf8");
    if (c.interceptionCertFile === undefined) pem += (await openCa(config)).caBundlePem;
    io.out(pem.trimEnd());
    return 0;
  }
  io.out((await openCa(config)).caBundlePem.trimEnd());
  return 0;
}

async function agentIssue(
  rest: readonly string[],
  config: ProxyConfig,
  io: CliIo,
  cwd: string,
): Promise<number> {
  embeddedOnly(config, "agents enroll with `step ca certificate` and a one-time token");
  let name: string | undefined;
  let days: number | undefined;
  let outDir: string | undefined;
  let force = false;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a === "--force") force = true;
    else if (a === "--days" || a === "--out") {
      const v = rest[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      if (a === "--days") {
        if (!/^[0-9]+$/.test(v)) throw new UsageError("--days must be a whole number");
        days = Number(v);
      } else outDir = resolve(cwd, v);
    } else if (a.startsWith("-")) throw new UsageError(`unknown option ${a}`);
    else if (name === undefined) name = a;
    else throw new UsageError("agent issue takes one NAME");
  }
  if (name === undefined) throw new UsageError("agent issue needs a NAME");
  const ca = await openCa(config);
  const existing = outDir
    ? join(outDir, AGENT_DIR_FILES.cert)
    : join(ca.home, EMBEDDED_CA_FILES.agentsDir, `${name}.crt`);
  if (!force && existsSync(existing)) {
    throw new ConfigError(
      "conflict",
      `${name} already has a certificate (${existing}); its key would be replaced while the old certificate stays valid — --force to issue anyway, and deny the old serial (agent list shows it)`,
    );
  }
  const issued = await ca.issueAgentCert(name, { days, outDir });
  const { host, port } = proxyAddress(config);
  const proxyHost = host.includes(":") ? `[${host}]` : host;
  io.out(`agent: ${issued.name}`);
  io.out(`certificate: ${issued.certPath}`);
  io.out(`key: ${issued.keyPath}`);
  io.out(`ca bundle: ${issued.caBundlePath}`);
  io.out(`serial: ${issued.serial}`);
  io.out(`sha256: ${issued.fingerprint256}`);
  io.out(`expires: ${issued.notAfter.toISOString()}`);
  io.out("try it (with the proxy running and the host allowed):");
  io.out(
    `  curl --proxy https://${proxyHost}:${port} --proxy-cacert ${issued.caBundlePath} ` +
      `--proxy-cert ${issued.certPath} --proxy-key ${issued.keyPath} ` +
      `--cacert ${issued.caBundlePath} https://example.com/`,
  );
  return 0;
}

async function version(): Promise<string> {
  const pkg = JSON.parse(await readFile(resolve(import.meta.dir, "../package.json"), "utf8"));
  return String(pkg.version);
}

/** `HOST:PORT` (IPv6 in brackets) read from a command-line option. */
function hostPort(text: string, option: string, lowest = 1): { host: string; port: number } {
  try {
    const a = parseListenAddress(text, option);
    if (a.port >= lowest) return a;
  } catch {}
  throw new UsageError(`${option} must be HOST:PORT`);
}

/** Agent certificates are the embedded CA's to issue; in Step-CA mode, what to do instead. */
function embeddedOnly(config: ProxyConfig, instead: string): void {
  if (config.certificates.mode === "step-ca") {
    throw new ConfigError("conflict", `CERT_PATH is set (Step-CA mode): ${instead}`);
  }
}

/** The name agents reach the proxy by: its listener, or localhost for a wildcard address. */
function proxyAddress(config: ProxyConfig): { host: string; port: number } {
  const { host, port } = config.listen;
  return { host: host === "0.0.0.0" || host === "::" ? "localhost" : host, port };
}

async function agentRenew(
  rest: readonly string[],
  config: ProxyConfig,
  io: CliIo,
): Promise<number> {
  embeddedOnly(config, "agents renew with `step ca renew`");
  const { opts, words } = options(rest, ["--days"]);
  if (words.length !== 1) throw new UsageError("agent renew takes one NAME");
  const days = opts.get("--days");
  if (days !== undefined && !/^[0-9]+$/.test(days))
    throw new UsageError("--days must be a whole number");
  const ca = await openCa(config);
  const before = agentFiles(config, words[0]!).cert;
  const old = existsSync(before) ? new x509.X509Certificate(await readFile(before, "utf8")) : null;
  const issued = await ca.issueAgentCert(words[0]!, {
    renew: true,
    ...(days !== undefined ? { days: Number(days) } : {}),
  });
  io.out(`renewed ${issued.name}: ${issued.certPath} (same key)`);
  io.out(
    `serial: ${normalizeSerialHex(issued.serial)} (was ${old ? normalizeSerialHex(old.serialNumber) : "?"})`,
  );
  io.out(`expires: ${issued.notAfter.toISOString()}`);
  return 0;
}

/** Each agent certificate under SLAPENIR_HOME/agents: name, serial, expiry, state. */
async function agentList(config: ProxyConfig, io: CliIo, env: Env, cwd: string): Promise<number> {
  const dir = join(config.certificates.home, EMBEDDED_CA_FILES.agentsDir);
  const files = existsSync(dir) ? (await readdir(dir)).filter((f) => f.endsWith(".crt")) : [];
  const deny = config.policy.deny;
  const revoked = new Set(readRevocationFile(revocationsPath(env, cwd)).map((r) => r.serial));
  const now = Date.now();
  io.out(`${files.length} agent${files.length === 1 ? "" : "s"} in ${dir}`);
  for (const f of files.sort()) {
    const cert = new x509.X509Certificate(await readFile(join(dir, f), "utf8"));
    const name = f.slice(0, -".crt".length);
    const serial = normalizeSerialHex(cert.serialNumber);
    const fingerprint = Buffer.from(await cert.getThumbprint("SHA-256")).toString("hex");
    const state = revoked.has(serial)
      ? "revoked"
      : deny.agents.includes(name)
        ? "denied (agent)"
        : deny.serials.includes(serial) || deny.fingerprints.includes(fingerprint)
          ? "denied (certificate)"
          : cert.notAfter.getTime() < now
            ? "expired"
            : "valid";
    io.out(`  ${name}  serial ${serial}  expires ${cert.notAfter.toISOString()}  ${state}`);
  }
  return 0;
}

/** The admin API of the running proxy, or null (said at `level`) when none answers. */
async function askProxy(
  config: ProxyConfig,
  io: CliIo,
  path: string,
  method = "POST",
  level: "note" | "error" = "note",
) {
  const { host, port } = config.adminListen;
  const url = `http://${host.includes(":") ? `[${host}]` : host}:${port}${path}`;
  // Actions carry the operator's token, which the proxy made in its home on first start.
  const headers: Record<string, string> =
    method === "POST" ? { authorization: `Bearer ${readAdminToken(config.adminTokenFile)}` } : {};
  try {
    return await fetch(url, { method, headers });
  } catch {
    io.err(`${level}: no proxy answers at ${url} (SLAPENIR_ADMIN_LISTEN)`);
    return null;
  }
}

async function agentRevoke(
  rest: readonly string[],
  config: ProxyConfig,
  io: CliIo,
  env: Env,
  cwd: string,
): Promise<number> {
  if (rest.length !== 1) throw new UsageError("agent revoke takes one NAME");
  const files = agentFiles(config, rest[0]!);
  if (!existsSync(files.cert)) {
    throw new ConfigError(
      "missing",
      `${files.cert} does not exist: no certificate of ${rest[0]} to revoke`,
    );
  }
  const cert = new x509.X509Certificate(await readFile(files.cert, "utf8"));
  const serial = normalizeSerialHex(cert.serialNumber);
  const path = revocationsPath(env, cwd);
  const list = readRevocationFile(path);
  if (list.some((r) => r.serial === serial))
    io.out(`${rest[0]} (serial ${serial}) was already revoked`);
  else {
    list.push({ agent: rest[0]!, serial, revokedAt: new Date().toISOString() });
    await mkdir(dirname(path), { recursive: true });
    const tmp = `${path}.${process.pid}.tmp`;
    await writeFile(tmp, `${JSON.stringify({ revoked: list }, null, 2)}\n`, { mode: 0o600 });
    await rename(tmp, path);
    io.out(`revoked ${rest[0]} (serial ${serial}) in ${path}`);
  }
  const res = await askProxy(config, io, "/policy/reload");
  if (!res) {
    io.out("the proxy is not running here: it refuses the certificate when it starts");
    return 0;
  }
  const body = (await res.json()) as { closed?: number; error?: string };
  if (!res.ok) {
    io.err(`error: the running proxy kept its policy: ${body.error ?? res.status}`);
    return 1;
  }
  io.out(`in force in the running proxy: ${body.closed ?? 0} connection(s) closed`);
  return 0;
}

async function policyTest(
  rest: readonly string[],
  config: ProxyConfig,
  io: CliIo,
  env: Env,
  cwd: string,
): Promise<number> {
  if (rest.length !== 3) throw new UsageError("policy test takes AGENT METHOD URL");
  const [agent, method, url] = rest as [string, string, string];
  const secrets = await loadSecrets(env, configFileFromEnv(env, cwd));
  const state = secrets.redacted().length > 0 ? SecretState.compile(secrets) : null;
  try {
    const r = explainRequest(
      { agent, method, url },
      compileLivePolicy(config.policy),
      state,
      config.policy.deny,
    );
    for (const line of r.lines) io.out(line);
    return r.allowed ? 0 : 1;
  } finally {
    state?.dispose();
    disposeSources(secrets);
    secrets.dispose();
  }
}

const DAY_MS = 86_400_000;

/** A certificate's expiry judged: expired fails, within `warnDays` warns. */
export function judgeExpiry(notAfter: Date, now: number, warnDays = 7): "ok" | "warn" | "fail" {
  const left = notAfter.getTime() - now;
  return left <= 0 ? "fail" : left < warnDays * DAY_MS ? "warn" : "ok";
}

/** Whether host:port can be bound now (false: something holds it). */
function portFree(host: string, port: number): Promise<boolean> {
  return new Promise((ok) => {
    const srv = createServer();
    srv.once("error", () => ok(false));
    srv.listen(port, host, () => srv.close(() => ok(true)));
  });
}

async function doctor(config: ProxyConfig, io: CliIo, env: Env, cwd: string): Promise<number> {
  let failed = 0;
  const say = (state: "ok" | "warn" | "fail", what: string) => {
    if (state === "fail") failed += 1;
    io.out(`${state.padEnd(4)}  ${what}`);
  };
  const now = Date.now();
  say(
    "ok",
    `configuration reads (${config.configFile ?? "no file, environment only"}; ${config.policy.allow.length} allow rule(s))`,
  );
  try {
    const n = await credentialCount(env, cwd);
    if (n > 0) say("ok", `credentials: ${n}`);
    else say("warn", "credentials: none configured: nothing is swapped or redacted");
  } catch (e) {
    say("fail", `credentials: ${e instanceof ConfigError ? e.message : "they do not read"}`);
  }
  if (config.policy.allow.length === 0)
    say("warn", "egress: no allow rule, every destination denied (SLAPENIR_ALLOW)");
  // A running proxy holds the ports it listens on: that is no fault.
  const health = await askProxy(config, { out: () => {}, err: () => {} }, "/health", "GET");
  const running = health?.ok === true;
  if (running)
    say(
      "ok",
      `a proxy is running here (admin ${config.adminListen.host}:${config.adminListen.port} answers)`,
    );
  for (const [name, l] of [
    ["SLAPENIR_LISTEN", config.listen],
    ["SLAPENIR_ADMIN_LISTEN", config.adminListen],
  ] as const) {
    if (running) continue;
    if (await portFree(l.host, l.port)) say("ok", `${name} ${l.host}:${l.port} is free`);
    else say("fail", `${name} ${l.host}:${l.port} is in use by something else`);
  }
  const home = config.certificates.home;
  if (config.certificates.mode === "embedded") {
    for (const [file, warnDays] of [
      [EMBEDDED_CA_FILES.rootCert, 30],
      [EMBEDDED_CA_FILES.interceptionCert, 14],
      [EMBEDDED_CA_FILES.serverCert, 7],
    ] as const) {
      const path = join(home, file);
      if (!existsSync(path)) {
        say(
          running ? "fail" : "warn",
          `${path} missing (bun run slapenir -- init, or the proxy's start, creates it)`,
        );
        continue;
      }
      const cert = new x509.X509Certificate(await readFile(path, "utf8"));
      say(
        judgeExpiry(cert.notAfter, now, warnDays),
        `${file} expires ${cert.notAfter.toISOString()}`,
      );
    }
  } else say("ok", `certificates from Step-CA (${config.certificates.dir})`);
  const agents = join(home, EMBEDDED_CA_FILES.agentsDir);
  const certs = existsSync(agents) ? (await readdir(agents)).filter((f) => f.endsWith(".crt")) : [];
  if (certs.length === 0) say("warn", "no agent certificate yet (agent issue NAME)");
  for (const f of certs.sort()) {
    const cert = new x509.X509Certificate(await readFile(join(agents, f), "utf8"));
    say(
      judgeExpiry(cert.notAfter, now),
      `agent ${f.slice(0, -4)} expires ${cert.notAfter.toISOString()}`,
    );
  }
  if (config.upstreamCaFile)
    say("ok", `upstream trust: the system store and ${config.upstreamCaFile}`);
  else say("ok", "upstream trust: the system store");
  io.out(failed === 0 ? "doctor: nothing stops the proxy here" : `doctor: ${failed} problem(s)`);
  return failed === 0 ? 0 : 1;
}

async function reload(config: ProxyConfig, io: CliIo): Promise<number> {
  const res = await askProxy(config, io, "/reload");
  if (!res) return 1;
  const body = (await res.json()) as Partial<ReloadReport> & { error?: string };
  if (!res.ok) {
    io.err(`error: the proxy kept what it had: ${body.error ?? res.status}`);
    return 1;
  }
  const list = (names: readonly string[] | undefined) => (names?.length ? names.join(", ") : "-");
  io.out(`reloaded: changed ${list(body.applied)}`);
  const c = body.credentials;
  io.out(
    `  credentials added ${list(c?.added)}, removed ${list(c?.removed)}, changed ${list(c?.changed)}`,
  );
  if (body.restart?.length) io.out(`  at the next start: ${list(body.restart)}`);
  io.out(`  ${body.closed ?? 0} connection(s) the policy no longer admits closed`);
  return 0;
}

/** Where `forward` and `agent env` find an agent's files (as `agent issue` wrote them). */
function agentFiles(config: ProxyConfig, name: string, certsDir?: string) {
  if (!AGENT_NAME_RE.test(name)) throw new UsageError(`not an agent name: ${name}`);
  if (certsDir !== undefined) {
    return {
      cert: join(certsDir, AGENT_DIR_FILES.cert),
      key: join(certsDir, AGENT_DIR_FILES.key),
      ca: join(certsDir, AGENT_DIR_FILES.bundle),
    };
  }
  const home = config.certificates.home;
  const agents = join(home, EMBEDDED_CA_FILES.agentsDir);
  return {
    cert: join(agents, `${name}.crt`),
    key: join(agents, `${name}.key`),
    ca: existsSync(join(agents, EMBEDDED_CA_FILES.caBundle))
      ? join(agents, EMBEDDED_CA_FILES.caBundle)
      : join(home, EMBEDDED_CA_FILES.caBundle),
  };
}

const DEFAULT_FORWARD = "127.0.0.1:3128";

/** Options of the form `--flag VALUE`, and the positional words. */
function options(rest: readonly string[], known: readonly string[]) {
  const opts = new Map<string, string>();
  const words: string[] = [];
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (known.includes(a)) {
      const v = rest[++i];
      if (v === undefined) throw new UsageError(`${a} needs a value`);
      opts.set(a, v);
    } else if (a.startsWith("-")) throw new UsageError(`unknown option ${a}`);
    else words.push(a);
  }
  return { opts, words };
}

async function agentEnv(
  rest: readonly string[],
  config: ProxyConfig,
  io: CliIo,
  cwd: string,
): Promise<number> {
  const { opts, words } = options(rest, ["--forward", "--certs"]);
  if (words.length !== 1) throw new UsageError("agent env takes one NAME");
  const certs = opts.get("--certs");
  const files = agentFiles(config, words[0]!, certs && resolve(cwd, certs));
  const fwd = hostPort(opts.get("--forward") ?? DEFAULT_FORWARD, "--forward");
  const url = `http://${fwd.host.includes(":") ? `[${fwd.host}]` : fwd.host}:${fwd.port}`;
  const q = (v: string) => `'${v.replaceAll("'", "'\\''")}'`;
  io.out(
    `# agent ${words[0]}: start the forwarder first — bun run slapenir -- forward ${words[0]}${certs ? ` --certs ${certs}` : ""}`,
  );
  io.out("# every tool: the proxy, through the forwarder");
  io.out(`export HTTPS_PROXY=${url} HTTP_PROXY=${url} https_proxy=${url} http_proxy=${url}`);
  io.out("# and the CA that signs the sites it intercepts");
  io.out(`export SSL_CERT_FILE=${q(files.ca)}            # OpenSSL-based tools, Python's ssl`);
  io.out(`export CURL_CA_BUNDLE=${q(files.ca)}           # curl`);
  io.out(`export GIT_SSL_CAINFO=${q(files.ca)}           # git`);
  io.out(`export REQUESTS_CA_BUNDLE=${q(files.ca)}       # Python requests`);
  io.out(`export PIP_CERT=${q(files.ca)}                 # pip`);
  io.out(`export NODE_EXTRA_CA_CERTS=${q(files.ca)}      # Node and Bun`);
  io.out(
    "export NODE_USE_ENV_PROXY=1                    # Node 24+: fetch and https honour HTTPS_PROXY",
  );
  return 0;
}

async function forward(
  rest: readonly string[],
  config: ProxyConfig,
  io: CliIo,
  cwd: string,
): Promise<number> {
  const { opts, words } = options(rest, ["--listen", "--proxy", "--name", "--certs"]);
  if (words.length !== 1) throw new UsageError("forward takes one agent NAME");
  const certs = opts.get("--certs");
  const files = agentFiles(config, words[0]!, certs && resolve(cwd, certs));
  for (const f of [files.cert, files.key, files.ca]) {
    if (!existsSync(f)) {
      throw new ConfigError("missing", `${f} does not exist (agent issue ${words[0]} writes it)`);
    }
  }
  // Port 0: any free port (printed).
  const listen = hostPort(opts.get("--listen") ?? DEFAULT_FORWARD, "--listen", 0);
  const proxy = opts.has("--proxy")
    ? hostPort(opts.get("--proxy")!, "--proxy")
    : proxyAddress(config);
  let running: Awaited<ReturnType<typeof startForwarder>>;
  try {
    running = await startForwarder({
      listen,
      proxy,
      servername: opts.get("--name") ?? (/^[\d.:]+$/.test(proxy.host) ? "localhost" : proxy.host),
      cert: await readFile(files.cert, "utf8"),
      key: await readFile(files.key, "utf8"),
      ca: await readFile(files.ca, "utf8"),
      onError: (reason) => io.err(`forward: the proxy at ${reason}`),
    });
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new ConfigError(
      "listen-failed",
      code === "EADDRINUSE"
        ? `${listen.host}:${listen.port} is in use (--listen another)`
        : `cannot forward on ${listen.host}:${listen.port}: ${code ?? (e as Error).message}`,
    );
  }
  io.out(
    `forwarding http://${listen.host}:${running.port} → https://${proxy.host}:${proxy.port} as ${words[0]} (Ctrl-C stops)`,
  );
  io.out(`environment for the agent's tools: bun run slapenir -- agent env ${words[0]}`);
  await new Promise<void>((done) => {
    const stop = () => running.close().then(done);
    process.once("SIGINT", stop);
    process.once("SIGTERM", stop);
  });
  return 0;
}

/** The credentials read as the proxy reads them (errors thrown), counted, and let go of. */
async function credentialCount(env: Env, cwd: string): Promise<number> {
  const secrets = await loadSecrets(env, configFileFromEnv(env, cwd));
  const n = secrets.redacted().length;
  disposeSources(secrets);
  secrets.dispose();
  return n;
}

/** As the proxy reads its configuration at start, without starting it (nginx -t). */
async function check(config: ProxyConfig, io: CliIo, env: Env, cwd: string): Promise<number> {
  const n = await credentialCount(env, cwd);
  const creds = n === 0 ? "none configured" : `${n} credential${n === 1 ? "" : "s"}`;
  const rules = config.policy.allow.length;
  io.out("ok: the proxy would start with this configuration");
  io.out(`  configuration file: ${config.configFile ?? "none (environment only)"}`);
  io.out(
    `  listen ${config.listen.host}:${config.listen.port}, admin ${config.adminListen.host}:${config.adminListen.port}`,
  );
  io.out(`  certificates: ${config.certificates.mode} (${config.certificates.home})`);
  io.out(
    `  egress: ${rules === 0 ? "no allow rule — every destination denied" : `${rules} allow rule(s)`}, ${config.policy.agentAllow.size} agent-specific`,
  );
  io.out(`  credentials: ${creds}`);
  io.out(`  quarantine: ${config.quarantine ? `on ${config.quarantine.on.join(",")}` : "off"}`);
  return 0;
}

if (import.meta.main) {
  const code = await runCli(process.argv.slice(2), process.env, {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
  });
  process.exitCode = code;
}
