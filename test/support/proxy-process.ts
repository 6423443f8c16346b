// Runs the real proxy as a child process (`bun src/main.ts`, configured only through its
// environment, exactly as in production) so tests and benchmarks can measure what the proxy
// process itself uses: its RSS is sampled from /proc while traffic flows. Prepares a
// temporary SLAPENIR_HOME with the embedded PKI, an agent certificate, a test upstream CA and a
// secrets file. Test and bench only; it never prints a credential.

import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { loadProxyConfig } from "../../src/config/proxy-config.ts";
import { EmbeddedCa } from "../../src/pki/embedded-ca.ts";
import type { AgentFiles, AwsCredentialSpec, CredentialSpec } from "./proxy-harness.ts";
import { createTestCa, type TestCa } from "./test-pki.ts";

export interface ProxyProcessOptions {
  readonly credentials?: readonly (CredentialSpec | AwsCredentialSpec)[];
  readonly allow?: readonly string[];
  readonly env?: Record<string, string>;
  /** Extra runtime flags before the entry point (e.g. `--smol`). */
  readonly runtimeArgs?: readonly string[];
  /** A command prefix that starts the proxy (it must exec it, keeping the PID), e.g. a cgroup's. */
  readonly launcher?: readonly string[];
}

export interface ProxyProcess extends AsyncDisposable {
  readonly pid: number;
  /** The event loops its configuration gives it (a launcher's cgroup aside). */
  readonly loops: number;
  readonly port: number;
  readonly dir: string;
  readonly caBundlePath: string;
  readonly agent: AgentFiles;
  readonly upstreamCa: TestCa;
  /** Issues another agent certificate from the proxy's own PKI. */
  issueAgent(name: string): Promise<AgentFiles>;
  /** Audit lines the proxy wrote so far (stdout; the first 10 000 kept). */
  readonly auditLines: string[];
  /** Audit lines of failed exchanges (`decision: error`), past the first 10 000 too. */
  readonly failedLines: string[];
  /** How many audit lines the proxy wrote so far, kept or not. */
  readonly auditCount: number;
  /** What the proxy wrote to stderr so far (start-up banner, reload errors). */
  readonly stderrLines: string[];
  /** Current resident set size of the proxy process, in bytes. */
  rss(): Promise<number>;
  /** Start sampling RSS every `ms`; the returned stop() gives the peak seen. */
  sampleRss(ms?: number): { stop(): Promise<number> };
  close(): Promise<void>;
}

const ROOT = resolve(import.meta.dir, "../..");

export async function startProxyProcess(opts: ProxyProcessOptions = {}): Promise<ProxyProcess> {
  const dir = await mkdtemp(join(tmpdir(), "slapenir-proc-"));
  const home = join(dir, "home");
  const upstreamCa = await createTestCa();
  const upstreamCaPath = join(dir, "upstream-ca.pem");
  await writeFile(upstreamCaPath, upstreamCa.certPem);
  const ca = await EmbeddedCa.open({ home });
  const issueAgent = async (name: string): Promise<AgentFiles> => {
    const issued = await ca.issueAgentCert(name);
    return { name, certPath: issued.certPath, keyPath: issued.keyPath };
  };
  const agent = await issueAgent("agent-a");
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? dir,
    SLAPENIR_HOME: home,
    SLAPENIR_LISTEN: "127.0.0.1:0",
    SLAPENIR_ADMIN_LISTEN: "127.0.0.1:0",
    SLAPENIR_ALLOW_PRIVATE: "true",
    SLAPENIR_UPSTREAM_CA: upstreamCaPath,
    SLAPENIR_ALLOW: (opts.allow ?? ["localhost:*", "127.0.0.1:*"]).join(","),
    SLAPENIR_RATE_LIMIT: "off",
    SLAPENIR_HANDSHAKE_RATE: "off",
    SLAPENIR_MINT_RATE: "off",
    SLAPENIR_QUARANTINE: "off",
    SLAPENIR_LOG_LEVEL: "info",
    // A bench run may pick the event loops (bench/README.md); tests say it in `env`.
    ...(process.env.SLAPENIR_LOOPS ? { SLAPENIR_LOOPS: process.env.SLAPENIR_LOOPS } : {}),
    ...opts.env,
  };
  if (opts.credentials && opts.credentials.length > 0) {
    const path = join(dir, "tokens.json");
    await writeFile(path, JSON.stringify({ credentials: opts.credentials }), { mode: 0o600 });
    env.TOKENS_JSON = path;
  }
  const proc = Bun.spawn(
    [
      ...(opts.launcher ?? []),
      process.execPath,
      ...(opts.runtimeArgs ?? []),
      join(ROOT, "src/main.ts"),
    ],
    {
      cwd: ROOT,
      env,
      stdout: "pipe",
      stderr: "pipe",
    },
  );
  const auditLines: string[] = [];
  let auditCount = 0;
  const failures: string[] = [];
  void collectLines(proc.stdout, (l) => {
    auditCount++;
    if (auditLines.length < 10_000) auditLines.push(l);
    // Failed exchanges are kept beyond the first lines (benches report them by reason).
    else if (failures.length < 10_000 && l.includes('"decision":"error"')) failures.push(l);
  });
  let port = 0;
  const stderrLines: string[] = [];
  const ready = new Promise<number>((resolveReady, reject) => {
    const timer = setTimeout(() => reject(new Error("proxy did not start in 30 s")), 30_000);
    void collectLines(proc.stderr, (l) => {
      if (stderrLines.length < 200) stderrLines.push(l);
      const m = /listening on https:\/\/[^\s]+:(\d+) /.exec(l);
      if (m) {
        clearTimeout(timer);
        resolveReady(Number(m[1]));
      }
    }).then(() => {
      clearTimeout(timer);
      reject(new Error(`proxy exited before listening:\n${stderrLines.join("\n")}`));
    });
  });
  try {
    port = await ready;
  } catch (e) {
    proc.kill();
    await rm(dir, { recursive: true, force: true });
    throw e;
  }
  const rss = () => readRss(proc.pid);
  const close = async () => {
    proc.kill("SIGTERM");
    const exited = await Promise.race([proc.exited, Bun.sleep(5_000).then(() => null)]);
    if (exited === null) proc.kill("SIGKILL");
    await proc.exited;
    await rm(dir, { recursive: true, force: true });
  };
  return {
    pid: proc.pid,
    loops: loadProxyConfig(env, ROOT).loops,
    port,
    dir,
    caBundlePath: join(home, "ca-bundle.pem"),
    agent,
    upstreamCa,
    issueAgent,
    auditLines,
    get failedLines() {
      return [...auditLines.filter((l) => l.includes('"decision":"error"')), ...failures];
    },
    get auditCount() {
      return auditCount;
    },
    stderrLines,
    rss,
    sampleRss: (ms = 50) => sampleRss(proc.pid, ms),
    close,
    [Symbol.asyncDispose]: close,
  };
}

/** Resident set size of process `pid` in bytes (0 once it is gone). */
export async function readRss(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, "utf8").catch(() => "");
  const m = /^VmRSS:\s+(\d+) kB/m.exec(status);
  return m ? Number(m[1]) * 1024 : 0;
}

/** Sample a process's RSS every `ms` until stop(), which resolves with the peak seen. */
export function sampleRss(pid: number, ms = 50): { stop(): Promise<number> } {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      peak = Math.max(peak, await readRss(pid));
      await Bun.sleep(ms);
    }
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return Math.max(peak, await readRss(pid));
    },
  };
}

async function collectLines(
  stream: ReadableStream<Uint8Array>,
  onLine: (line: string) => void,
): Promise<void> {
  const dec = new TextDecoder();
  let rest = "";
  for await (const chunk of stream) {
    rest += dec.decode(chunk, { stream: true });
    let i = rest.indexOf("\n");
    while (i >= 0) {
      const line = rest.slice(0, i);
      if (line) onLine(line);
      rest = rest.slice(i + 1);
      i = rest.indexOf("\n");
    }
  }
  if (rest) onLine(rest);
}

/**
 * The most RSS a proxy process may reach while a 256 MiB body streams through it: 256 MiB with
 * one event loop, 64 MiB more for each further loop (each its own heap and buffers: an idle
 * proxy is 96 MiB with one loop, 152 with two; bench/README.md "Event loops").
 */
export function streamingRssBound(loops: number): number {
  return (256 + 64 * (loops - 1)) * 1024 * 1024;
}
