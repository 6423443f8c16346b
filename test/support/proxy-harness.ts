// Starts a real SLAPENIR proxy in-process for end-to-end tests: a temporary SLAPENIR_HOME with
// the embedded PKI, agent certificates, a test upstream CA the proxy trusts, a secrets file,
// and an allowlist. Captures audit lines in memory so tests can assert on them (and on the
// absence of secrets in them). Also drives curl as a real agent. Test-only.

import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { autoLoops, loadLivePolicy, loadProxyConfig } from "../../src/config/proxy-config.ts";
import type { MemoryProbe } from "../../src/guard/cgroup-probe.ts";
import { EmbeddedCa } from "../../src/pki/embedded-ca.ts";
import { readAdminToken } from "../../src/server/admin-token.ts";
import { type RunningProxy, startProxy } from "../../src/server/proxy-server.ts";
import { createTestCa, type TestCa } from "./test-pki.ts";

export interface CredentialSpec {
  readonly name: string;
  readonly dummy: string;
  readonly real: string;
  readonly hosts: readonly string[];
  readonly agents?: readonly string[];
  readonly require?: boolean;
  readonly inUrl?: "allow" | "deny";
  /** Surfaces (`header:NAME`, `query:NAME`, `body`); default `header:authorization`. */
  readonly in?: readonly string[];
}

/** An AWS credential (`kind: "aws"`): SigV4 keys, each a dummy and a real value. */
export interface AwsCredentialSpec {
  readonly name: string;
  readonly kind: "aws";
  readonly accessKeyId: { readonly dummy: string; readonly real: string };
  readonly secretAccessKey: { readonly dummy: string; readonly real: string };
  readonly sessionToken?: { readonly dummy: string; readonly real: string };
  readonly hosts: readonly string[];
  readonly agents?: readonly string[];
  readonly regions?: readonly string[];
  readonly services?: readonly string[];
}

/** A credential whose real value comes from a source (`file`, `command`, `oauth`). */
export interface SourcedCredentialSpec extends Omit<CredentialSpec, "real"> {
  readonly source: Record<string, unknown>;
}

export interface HarnessOptions {
  readonly credentials?: readonly (CredentialSpec | AwsCredentialSpec | SourcedCredentialSpec)[];
  readonly allow?: readonly string[];
  readonly agents?: readonly string[];
  readonly env?: Record<string, string>;
  readonly workers?: number;
  /** Event loops (default: the configuration's, or SLAPENIR_TEST_LOOPS). */
  readonly loops?: number;
  /** Names that resolve to 127.0.0.1 (besides localhost). */
  readonly names?: readonly string[];
  /** Names that resolve to a given address (internal/metadata destination tests). */
  readonly addresses?: Readonly<Record<string, string>>;
  /** Memory use and limit as the memory guard sees them (memory-pressure tests). */
  readonly memoryProbe?: MemoryProbe;
  /** The clock the memory guard times stalls by (the test moves it). */
  readonly guardClock?: () => number;
  /** The time agent certificates are judged at (the test moves it). */
  readonly identityClock?: () => Date;
  /** The clock rate limits refill by (a frozen one makes a bucket's count exact). */
  readonly rateClock?: () => number;
  /** How long a source's new value waits for older answers before they are cut. */
  readonly sourceSwitchMs?: number;
  /** A configuration file (YAML) written to `dir/slapenir.yaml` and named by SLAPENIR_CONFIG. */
  readonly configYaml?: string;
  /** Reload when a configuration file changes, as `npm start` does. */
  readonly watchConfig?: boolean;
  /** The load shedder's decision (default: never — see below); overload without loading the machine. */
  readonly shedding?: () => boolean;
  /** Told when a Worker loop ends unasked (main.ts stops the proxy then). */
  readonly onLoopEnded?: (index: number, reason: string) => void;
}

export interface AgentFiles {
  readonly name: string;
  readonly certPath: string;
  readonly keyPath: string;
}

export interface Harness extends AsyncDisposable {
  readonly dir: string;
  readonly proxy: RunningProxy;
  readonly port: number;
  readonly caBundlePath: string;
  readonly upstreamCa: TestCa;
  readonly agents: Record<string, AgentFiles>;
  readonly auditLines: string[];
  /**
   * The audit lines (parsed) that `match`, once at least `count` of them were written: a
   * request's line follows the last byte of its answer, so a test waits for it, not a time.
   */
  auditWhere(
    match: (line: Record<string, unknown>) => boolean,
    count?: number,
  ): Promise<Record<string, unknown>[]>;
  /** An operator action on the admin listener (`POST path` with the operator's token). */
  adminPost(path: string): Promise<Response>;
  /** The value of one metric line from /metrics (`name{labels}`), 0 when it is not there. */
  metric(line: string): Promise<number>;
  /** Every name the proxy asked to resolve, in order (DNS-exfiltration tests). */
  readonly lookups: string[];
  readonly ca: EmbeddedCa;
  /** Reads the policy again as SIGHUP does (the file as it is now); how many connections closed. */
  reloadPolicy(): Promise<number>;
  /** Every audit line of what happened so far is in `auditLines` (event loops in Workers). */
  settled(): Promise<void>;
  curl(args: readonly string[], agent?: string): Promise<CurlResult>;
  close(): Promise<void>;
}

export interface CurlResult {
  readonly code: number;
  readonly status: number;
  readonly headers: string;
  readonly body: Buffer;
  readonly stderr: string;
}

const TEST_LOOPS = process.env.SLAPENIR_TEST_LOOPS
  ? Number(process.env.SLAPENIR_TEST_LOOPS)
  : undefined;

/**
 * The event loops harness proxies run with when a test does not say: SLAPENIR_TEST_LOOPS, else
 * the configuration's default (`auto`).
 */
export const harnessLoops = (): number => TEST_LOOPS ?? autoLoops();

export async function startHarness(opts: HarnessOptions = {}): Promise<Harness> {
  const dir = await mkdtemp(join(tmpdir(), "slapenir-e2e-"));
  const home = join(dir, "home");
  const upstreamCa = await createTestCa();
  const upstreamCaPath = join(dir, "upstream-ca.pem");
  await writeFile(upstreamCaPath, upstreamCa.certPem);
  const ca = await EmbeddedCa.open({ home });
  const agents: Record<string, AgentFiles> = {};
  for (const name of opts.agents ?? ["agent-a"]) {
    const issued = await ca.issueAgentCert(name);
    agents[name] = { name, certPath: issued.certPath, keyPath: issued.keyPath };
  }
  const env: Record<string, string> = {
    SLAPENIR_HOME: home,
    SLAPENIR_LISTEN: "127.0.0.1:0",
    SLAPENIR_ADMIN_LISTEN: "127.0.0.1:0",
    SLAPENIR_ALLOW_PRIVATE: "true",
    SLAPENIR_UPSTREAM_CA: upstreamCaPath,
    SLAPENIR_ALLOW: (opts.allow ?? ["localhost:*"]).join(","),
    SLAPENIR_LOG_LEVEL: "info",
    // Every test's peers share 127.0.0.1 and open connections as fast as the test runs: the
    // per-address and mint rates are off unless a test sets them (test/e2e/metering.test.ts).
    SLAPENIR_HANDSHAKE_RATE: "off",
    SLAPENIR_MINT_RATE: "off",
    // Leak tests try one DLP refusal after another as one agent: quarantine is off unless a
    // test turns it on (test/e2e/quarantine.test.ts).
    SLAPENIR_QUARANTINE: "off",
    ...opts.env,
  };
  if (opts.credentials && opts.credentials.length > 0) {
    const path = join(dir, "tokens.json");
    await writeFile(path, JSON.stringify({ credentials: opts.credentials }));
    env.TOKENS_JSON = path;
  }
  if (opts.configYaml !== undefined) {
    env.SLAPENIR_CONFIG = join(dir, "slapenir.yaml");
    await writeFile(env.SLAPENIR_CONFIG, opts.configYaml);
  }
  const auditLines: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      for (const line of String(chunk).split("\n")) if (line) auditLines.push(line);
      cb();
    },
  });
  const names = new Set(["localhost", ...(opts.names ?? [])]);
  const addresses = new Map(Object.entries(opts.addresses ?? {}));
  const lookups: string[] = [];
  const config = loadProxyConfig(env, dir);
  // SLAPENIR_TEST_LOOPS=N runs every harness proxy with N event loops (CI's second pass runs
  // one, the first the default), but for those a test drives through a clock or probe of its
  // own: those live in this thread and cannot reach a Worker.
  const inThreadOnly =
    opts.memoryProbe || opts.guardClock || opts.identityClock || opts.rateClock || opts.shedding;
  // A test whose configuration names its loops keeps them.
  const configured =
    opts.env?.SLAPENIR_LOOPS !== undefined || /^loops:/m.test(opts.configYaml ?? "");
  const loops = opts.loops ?? (inThreadOnly ? 1 : configured ? undefined : TEST_LOOPS);
  const proxy = await startProxy(config, {
    ...(loops !== undefined ? { loops } : {}),
    staticNames: Object.fromEntries([...[...names].map((n) => [n, "127.0.0.1"]), ...addresses]),
    onLookup: (host) => lookups.push(host),
    env,
    auditDestination: sink,
    workers: opts.workers ?? 1,
    ...(opts.memoryProbe ? { memoryProbe: opts.memoryProbe } : {}),
    ...(opts.guardClock ? { guardClock: opts.guardClock } : {}),
    ...(opts.identityClock ? { identityClock: opts.identityClock } : {}),
    ...(opts.rateClock ? { rateClock: opts.rateClock } : {}),
    ...(opts.sourceSwitchMs !== undefined ? { sourceSwitchMs: opts.sourceSwitchMs } : {}),
    policySource: () => loadLivePolicy(env, dir),
    cwd: dir,
    ...(opts.watchConfig ? { watchConfig: true } : {}),
    ...(opts.onLoopEnded ? { onLoopEnded: opts.onLoopEnded } : {}),
    // In-process, the event loop the shedder measures is the test runner's too (curl spawned
    // and awaited, assertions): a test that wants shedding says when.
    shedding: opts.shedding ?? (() => false),
    lookup: async (host) => {
      lookups.push(host);
      const fixed = addresses.get(host);
      if (fixed !== undefined) return [{ address: fixed, family: fixed.includes(":") ? 6 : 4 }];
      if (names.has(host)) return [{ address: "127.0.0.1", family: 4 }];
      throw new Error("ENOTFOUND");
    },
  });
  const caBundlePath = join(home, "ca-bundle.pem");
  const close = async () => {
    await proxy.close();
    await rm(dir, { recursive: true, force: true });
  };
  return {
    dir,
    proxy,
    port: proxy.port,
    caBundlePath,
    upstreamCa,
    agents,
    auditLines,
    async auditWhere(match, count = 1) {
      for (;;) {
        const found = auditLines.map((l) => JSON.parse(l) as Record<string, unknown>).filter(match);
        if (found.length >= count) return found;
        await Bun.sleep(10);
      }
    },
    adminPost: async (path) =>
      fetch(`http://127.0.0.1:${proxy.adminPort}${path}`, {
        method: "POST",
        headers: { authorization: `Bearer ${readAdminToken(config.adminTokenFile)}` },
      }),
    async metric(line) {
      const text = await (await fetch(`http://127.0.0.1:${proxy.adminPort}/metrics`)).text();
      const found = text.split("\n").find((l) => l.startsWith(`${line} `));
      return found === undefined ? 0 : Number(found.slice(line.length + 1));
    },
    lookups,
    ca,
    reloadPolicy: () => proxy.reloadPolicy(loadLivePolicy(env, dir)),
    settled: () => proxy.settled(),
    // Its audit line is in by the time curl's answer is.
    curl: async (args, agent = Object.keys(agents)[0]!) => {
      const r = await curl(proxy.port, caBundlePath, agents[agent], args);
      await proxy.settled();
      return r;
    },
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** curl's options for reaching a target as the agent: mTLS to the proxy, trusting its CA. */
export function curlProxyArgs(
  proxyPort: number,
  caBundlePath: string,
  agent: Pick<AgentFiles, "certPath" | "keyPath"> | undefined,
): string[] {
  return [
    "--proxy",
    `https://localhost:${proxyPort}`,
    "--proxy-cacert",
    caBundlePath,
    ...(agent ? ["--proxy-cert", agent.certPath, "--proxy-key", agent.keyPath] : []),
    "--cacert",
    caBundlePath,
  ];
}

/** curl as the agent: mTLS to the proxy, trusting the proxy's CA for intercepted sites. */
export async function curl(
  proxyPort: number,
  caBundlePath: string,
  agent: AgentFiles | undefined,
  args: readonly string[],
): Promise<CurlResult> {
  const dir = await mkdtemp(join(tmpdir(), "slapenir-curl-"));
  const headersPath = join(dir, "headers");
  const bodyPath = join(dir, "body");
  const cmd = [
    "curl",
    "-sS",
    "--max-time",
    "20",
    ...curlProxyArgs(proxyPort, caBundlePath, agent),
    "-D",
    headersPath,
    "-o",
    bodyPath,
    "-w",
    "%{http_code}",
    ...args,
  ];
  await using proc = Bun.spawn(cmd, {
    stdout: "pipe",
    stderr: "pipe",
    env: { PATH: process.env.PATH ?? "" },
  });
  const [out, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  const headers = await Bun.file(headersPath)
    .text()
    .catch(() => "");
  const body = Buffer.from(
    await Bun.file(bodyPath)
      .arrayBuffer()
      .catch(() => new ArrayBuffer(0)),
  );
  await rm(dir, { recursive: true, force: true });
  return { code, status: Number(out.trim().slice(-3)) || 0, headers, body, stderr };
}
