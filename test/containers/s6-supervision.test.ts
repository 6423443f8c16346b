// The agent's s6 service directories (docker/agent/rootfs/etc/s6-overlay/s6-rc.d) run under
// Debian's s6-svscan/s6-supervise, with the agent command replaced by a test program that
// records each start. Checks R4.2: a killed agent runs again without the supervisor being
// touched, an ordinary failure restarts it, and the configured fatal code runs the halt path
// (an injected script) instead. The restart delay is measured and reported, not asserted:
// timing bounds flake on a shared 2-core machine, the restart count and pids do not.
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { cpSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { missingTools, s6RcDir, waitFor } from "./tool-paths.ts";

const skip = missingTools(["s6-svscan", "s6-supervise", "s6-svstat", "s6-svc"]).length > 0;
const FATAL = 86;

interface Rig {
  dir: string;
  scan: string;
  svc: string;
  svscan: ReturnType<typeof Bun.spawn>;
}

let rig: Rig | undefined;

/** Starts s6-svscan on a scan directory holding a copy of the real agent-svc directory. */
function startRig(agentScript: string, extraEnv: Record<string, string> = {}): Rig {
  const dir = mkdtempSync(join(tmpdir(), "slapenir-s6-"));
  const scan = join(dir, "scan");
  const svc = join(scan, "agent-svc");
  cpSync(join(s6RcDir, "agent-svc"), svc, { recursive: true });
  writeFileSync(join(dir, "agent.sh"), agentScript, { mode: 0o755 });
  writeFileSync(join(dir, "halt.sh"), `#!/bin/sh\necho halted >> "${join(dir, "halt-called")}"\n`, {
    mode: 0o755,
  });
  const svscan = Bun.spawn(["s6-svscan", scan], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      AGENT_WORKDIR: dir,
      AGENT_COMMAND: `exec ${join(dir, "agent.sh")}`,
      AGENT_FATAL_EXIT_CODE: String(FATAL),
      SLAPENIR_HALT_CMD: join(dir, "halt.sh"),
      SLAPENIR_EXITCODE_FILE: join(dir, "exitcode"),
      STARTS: join(dir, "starts"),
      ...extraEnv,
    },
    stdout: "ignore",
    stderr: "pipe",
  });
  return { dir, scan, svc, svscan };
}

function svstat(svc: string): { up: boolean; pid: number } | null {
  const r = Bun.spawnSync(["s6-svstat", "-o", "up,pid", svc]);
  if (r.exitCode !== 0) return null;
  const [up, pid] = r.stdout.toString().trim().split(/\s+/);
  return { up: up === "true", pid: Number(pid) };
}

/** One line per start of the test program: "<epoch ms> <pid>". */
function starts(r: Rig): { at: number; pid: number }[] {
  const f = join(r.dir, "starts");
  if (!existsSync(f)) return [];
  return readFileSync(f, "utf8")
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((l) => {
      const [at, pid] = l.split(" ").map(Number);
      return { at: at ?? 0, pid: pid ?? 0 };
    });
}

function supervisePid(r: Rig): number | null {
  const r2 = Bun.spawnSync(["sh", "-c", `pgrep -f "^s6-supervise agent-svc$" -P ${r.svscan.pid}`]);
  const pid = Number(r2.stdout.toString().trim().split("\n")[0]);
  return Number.isFinite(pid) && pid > 0 ? pid : null;
}

// The test program: records its start (ms clock and pid), then behaves as told by $MODE_FILE.
const agentProgram = (exitAfterStart: string) => `#!/bin/sh
echo "$(date +%s%3N) $$" >> "$STARTS"
${exitAfterStart}
exec sleep 1000
`;

beforeEach(() => {
  rig = undefined;
});

afterEach(async () => {
  if (!rig) return;
  Bun.spawnSync(["s6-svscanctl", "-t", rig.scan]);
  const exited = await Promise.race([rig.svscan.exited, Bun.sleep(3000).then(() => null)]);
  if (exited === null) rig.svscan.kill("SIGKILL");
  Bun.spawnSync(["sh", "-c", `pkill -9 -f "${rig.dir}/agent.sh" || true`]);
  rmSync(rig.dir, { recursive: true, force: true });
});

// Skipped only on a machine without the tool, with a warning; under CI missingTools throws.
describe.skipIf(skip)("agent-svc under s6-supervise", () => {
  test("kill -9 of the agent: restarted, supervisor untouched; delay reported", async () => {
    const r = startRig(agentProgram(""));
    rig = r;
    const first = await waitFor("first start", () => starts(r)[0]);
    const supervisor = await waitFor("s6-supervise", () => supervisePid(r));
    // s6-supervise waits out the rest of the second for a run that lived under 1 s; let the
    // first run pass that mark so what is measured is the restart path itself.
    await Bun.sleep(1100);
    const before = svstat(r.svc);
    expect(before?.up).toBe(true);
    const killedAt = Date.now();
    process.kill(before!.pid, "SIGKILL");
    const second = await waitFor("restart", () => starts(r)[1]);
    const delay = second.at - killedAt;
    console.log(`agent-svc restart after kill -9: ${delay} ms (s6-supervise + finish + sh)`);
    expect(second.pid).not.toBe(first.pid);
    expect(starts(r)).toHaveLength(2);
    expect(supervisePid(r)).toBe(supervisor);
    expect(r.svscan.exitCode).toBeNull();
    expect(existsSync(join(r.dir, "halt-called"))).toBe(false);
    // The restart went through finish's fast path (s6-svc -u), not s6's one-second pause.
    expect(existsSync(join(r.svc, "fast-restart-stamp"))).toBe(true);
  });

  test("with AGENT_FAST_RESTART=0, plain s6-supervise still restarts it (delay reported)", async () => {
    const r = startRig(agentProgram(""), { AGENT_FAST_RESTART: "0" });
    rig = r;
    await waitFor("first start", () => starts(r)[0]);
    await Bun.sleep(1100);
    const before = svstat(r.svc)!;
    const killedAt = Date.now();
    process.kill(before.pid, "SIGKILL");
    const second = await waitFor("restart", () => starts(r)[1]);
    console.log(
      `agent-svc restart after kill -9 without the fast path: ${second.at - killedAt} ms`,
    );
    expect(second.pid).not.toBe(before.pid);
    expect(existsSync(join(r.svc, "fast-restart-stamp"))).toBe(false);
  });

  test("an ordinary non-zero exit restarts the agent and never halts", async () => {
    const r = startRig(agentProgram('[ -f "$STARTS.once" ] || { touch "$STARTS.once"; exit 3; }'));
    rig = r;
    await waitFor("second start", () => starts(r)[1]);
    const st = await waitFor("up again", () => {
      const s = svstat(r.svc);
      return s?.up ? s : null;
    });
    expect(st.up).toBe(true);
    expect(existsSync(join(r.dir, "halt-called"))).toBe(false);
  });

  test("the fatal exit code invokes the halt path, records the code, and stops restarting", async () => {
    const r = startRig(agentProgram(`exit ${FATAL}`));
    rig = r;
    await waitFor("halt", () => (existsSync(join(r.dir, "halt-called")) ? true : null));
    expect(readFileSync(join(r.dir, "exitcode"), "utf8").trim()).toBe(String(FATAL));
    // finish exited 125: s6-supervise must leave the service down rather than loop.
    await waitFor("down", () => (svstat(r.svc)?.up === false ? true : null));
    await Bun.sleep(1500);
    expect(starts(r)).toHaveLength(1);
    expect(svstat(r.svc)?.up).toBe(false);
  });
});
