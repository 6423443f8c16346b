// Process helpers for the network-namespace tests: every command runs with a hard time limit
// (a hung client or server must fail the test, never hang the suite), and long-running
// daemons (proxy, upstreams, forwarder) run in their own process group so they and their
// forked children can be killed as one. Test-only.
//
// It must never leave a daemon running after `stop()` or process exit, and never print the
// environment it passes (it may hold test credentials).

import { openSync } from "node:fs";

/** The caller's PATH plus the sbin directories (ip, tc, sysctl live there; CI shells may omit them). */
export const TOOL_PATH = [
  process.env.PATH ?? "",
  "/usr/local/sbin",
  "/usr/sbin",
  "/sbin",
  "/usr/bin",
  "/bin",
]
  .filter((p) => p !== "")
  .join(":");

/** Where a tool is on TOOL_PATH, or null. */
export function whichTool(name: string): string | null {
  return Bun.which(name, { PATH: TOOL_PATH });
}

export interface RunResult {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
  /** True when the time limit killed the command. */
  readonly timedOut: boolean;
  readonly elapsedMs: number;
}

export interface RunOptions {
  readonly timeoutMs: number;
  readonly env?: Record<string, string>;
  readonly cwd?: string;
  readonly stdin?: string | Uint8Array;
}

/** Runs a command to completion, killing it (SIGKILL) when `timeoutMs` passes. */
export async function run(cmd: readonly string[], opts: RunOptions): Promise<RunResult> {
  const started = performance.now();
  const proc = Bun.spawn([...cmd], {
    stdin: opts.stdin === undefined ? "ignore" : new Blob([opts.stdin]),
    stdout: "pipe",
    stderr: "pipe",
    env: opts.env ?? { PATH: TOOL_PATH },
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  });
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    proc.kill("SIGKILL");
  }, opts.timeoutMs);
  try {
    const [stdout, stderr, code] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    return { code, stdout, stderr, timedOut, elapsedMs: performance.now() - started };
  } finally {
    clearTimeout(timer);
  }
}

/** Runs a command that must succeed; the error names the command, its code and stderr. */
export async function runOk(cmd: readonly string[], opts: RunOptions): Promise<RunResult> {
  const r = await run(cmd, opts);
  if (r.code !== 0 || r.timedOut) {
    throw new Error(
      `${cmd.join(" ")} failed (${r.timedOut ? "timed out" : `exit ${r.code}`}): ${r.stderr.trim().slice(0, 800)}`,
    );
  }
  return r;
}

export interface Daemon {
  readonly name: string;
  readonly pid: number;
  /** Resolves with the exit code once the process ends. */
  readonly exited: Promise<number>;
  alive(): boolean;
  /** SIGTERM to the whole group, SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<void>;
  /** Immediate SIGKILL of the whole group (synchronous; for exit hooks). */
  killNow(): void;
}

/**
 * Starts a long-running command in a new session (`setsid`, so its process group id is its
 * pid) with stdout and stderr appended to files.
 */
export function startDaemon(
  name: string,
  cmd: readonly string[],
  opts: { env: Record<string, string>; stdoutPath: string; stderrPath: string; cwd?: string },
): Daemon {
  const proc = Bun.spawn(["setsid", ...cmd], {
    stdin: "ignore",
    stdout: openSync(opts.stdoutPath, "a"),
    stderr: openSync(opts.stderrPath, "a"),
    env: opts.env,
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
  });
  let done = false;
  const exited = proc.exited.then((c) => {
    done = true;
    return c;
  });
  const signalGroup = (sig: NodeJS.Signals) => {
    try {
      process.kill(-proc.pid, sig);
    } catch {
      // Already gone.
    }
  };
  return {
    name,
    pid: proc.pid,
    exited,
    alive: () => !done,
    async stop(graceMs = 3_000) {
      if (done) {
        signalGroup("SIGKILL"); // forked children may outlive the leader
        return;
      }
      signalGroup("SIGTERM");
      const timer = setTimeout(() => signalGroup("SIGKILL"), graceMs);
      await exited;
      clearTimeout(timer);
      signalGroup("SIGKILL");
    },
    killNow: () => signalGroup("SIGKILL"),
  };
}

/** Polls `probe` until it returns a value; fails naming `what` after `limitMs`. */
export async function waitFor<T>(
  what: string,
  probe: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  limitMs: number,
  everyMs = 25,
): Promise<T> {
  const deadline = Date.now() + limitMs;
  for (;;) {
    const v = await probe();
    if (v !== null && v !== undefined && v !== false) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${limitMs} ms waiting for ${what}`);
    await Bun.sleep(everyMs);
  }
}
