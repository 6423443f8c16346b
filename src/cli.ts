// The operator's command line: `bun run slapenir -- <command>`. It creates the embedded PKI,
// issues agent certificates, prints the CA bundle agents must trust and checks a secrets file.
// It must never print a credential value or key material (certificate and key files are
// written to disk; only their paths are printed), and exits non-zero with a one-line reason.

import { readFile } from "node:fs/promises";
import { resolve } from "node:path";
import { ConfigError } from "./config/config-error.ts";
import { loadProxyConfig, type ProxyConfig } from "./config/proxy-config.ts";
import { disposeSources, loadSecretsFile } from "./credentials/secrets.ts";
import { fetcherFor, SourceError } from "./credentials/sources/fetch-source.ts";
import { AGENT_DEFAULT_DAYS, EmbeddedCa } from "./pki/embedded-ca.ts";
import { PkiError } from "./pki/pki-error.ts";
import { AGENT_NAME_RE } from "./policy/agent-name.ts";

export const USAGE = `usage: bun run slapenir -- <command>

  init                                   create (or check) the embedded PKI under SLAPENIR_HOME
  agent issue NAME [--days N] [--out DIR] issue an agent client certificate (default ${AGENT_DEFAULT_DAYS} days)
  ca bundle                              print the CA bundle PEM an agent must trust
  secrets check FILE                     validate a secrets file and print its log-safe summary
  quarantine list                        the agents in quarantine (asks the running proxy)
  quarantine release NAME                let an agent out of quarantine

environment: SLAPENIR_HOME (default ./.slapenir), SLAPENIR_LISTEN, SLAPENIR_SERVER_NAMES, CERT_PATH,
SLAPENIR_ADMIN_LISTEN (where the running proxy's admin API is)`;

export interface CliIo {
  readonly out: (line: string) => void;
  readonly err: (line: string) => void;
}

class UsageError extends Error {}

export async function runCli(
  argv: readonly string[],
  env: Readonly<Record<string, string | undefined>>,
  io: CliIo,
  cwd: string = process.cwd(),
): Promise<number> {
  const args = argv[0] === "--" ? argv.slice(1) : [...argv];
  try {
    const [cmd, sub, ...rest] = args;
    if (cmd === undefined || cmd === "help" || cmd === "--help" || cmd === "-h") {
      io.out(USAGE);
      return cmd === undefined ? 2 : 0;
    }
    if (cmd === "secrets" && sub === "check") return await secretsCheck(rest, io, cwd);
    const config = loadProxyConfig(env, cwd);
    if (cmd === "init" && sub === undefined) return await init(config, io);
    if (cmd === "ca" && sub === "bundle" && rest.length === 0) return await caBundle(config, io);
    if (cmd === "agent" && sub === "issue") return await agentIssue(rest, config, io, cwd);
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
  const { host, port } = config.adminListen;
  const base = `http://${host.includes(":") ? `[${host}]` : host}:${port}/quarantine`;
  const ask = async (url: string, method: string) => {
    try {
      return await fetch(url, { method });
    } catch {
      io.err(`error: no proxy answers at ${base} (SLAPENIR_ADMIN_LISTEN)`);
      return null;
    }
  };
  if (sub === "list" && rest.length === 0) {
    const res = await ask(base, "GET");
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
    const res = await ask(`${base}/${rest[0]}/release`, "POST");
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
  if (config.certificates.mode === "step-ca") {
    throw new ConfigError(
      "conflict",
      "CERT_PATH is set (Step-CA mode): agents enroll with `step ca certificate` and a one-time token",
    );
  }
  let name: string | undefined;
  let days: number | undefined;
  let outDir: string | undefined;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i]!;
    if (a === "--days" || a === "--out") {
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
  const issued = await ca.issueAgentCert(name, { days, outDir });
  const { host, port } = config.listen;
  const proxyHost =
    host === "0.0.0.0" || host === "::" ? "localhost" : host.includes(":") ? `[${host}]` : host;
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

if (import.meta.main) {
  const code = await runCli(process.argv.slice(2), process.env, {
    out: (line) => process.stdout.write(`${line}\n`),
    err: (line) => process.stderr.write(`${line}\n`),
  });
  process.exitCode = code;
}
