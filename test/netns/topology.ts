// Builds and tears down the three-namespace test network:
//
//   agent ──veth── gateway ──veth── internet
//   10.213.0.2/30  .1 | .5          10.213.0.6/30
//   fd00:213::2/126 ::1
//
// The agent link is dual-stack like a Docker network with IPv6: socat 1.7.4 (the forwarder)
// checks a server certificate's IP SANs by resolving the proxy's name in that address family
// and fails the connection when an IPv6 lookup of the name returns nothing — and the embedded
// CA's server certificate carries the IP SAN ::1. With an IPv6 address for the proxy's name
// the check proceeds to the DNS SAN as it should.
//
// `agent` has only its link to the gateway and no default route; `gateway` never forwards
// (net.ipv4.ip_forward=0); `internet` hosts the test upstreams. Names carry the test's PID so
// parallel runs never collide, and a run finds and removes what a killed earlier run left.
// Per-namespace hosts/resolv.conf live in /etc/netns/NAME/ (bind-mounted by `ip netns exec`).
// Test-only.
//
// It must never touch a namespace, link or file it did not create (or that a dead run of this
// suite created), and never give any namespace a path off this machine: every address lives
// on a link between two of our own namespaces.

import { existsSync, mkdirSync, rmdirSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { run, runOk, TOOL_PATH, whichTool } from "./bounded-process.ts";

const PREFIX = "slpn";
const NETNS_ETC = "/etc/netns";
const CMD_TIMEOUT_MS = 10_000;

export type Role = "agent" | "gateway" | "internet";

export interface Topology {
  readonly id: string;
  readonly ns: Readonly<Record<Role, string>>;
  readonly addr: {
    readonly agent: string;
    readonly agent6: string;
    readonly gatewayAgentSide6: string;
    readonly gatewayAgentSide: string;
    readonly gatewayInternetSide: string;
    readonly internet: string;
  };
  /** The gateway's link toward `internet` (where link loss is injected). */
  readonly gatewayInternetDev: string;
  /** `ip netns exec NS …cmd`. */
  exec(role: Role, cmd: readonly string[]): string[];
  /** Writes /etc/netns/NS/<file> (e.g. hosts, resolv.conf). */
  writeEtc(role: Role, file: "hosts" | "resolv.conf", text: string): void;
  destroy(): Promise<void>;
  /** Synchronous best-effort teardown for process-exit hooks. */
  destroySync(): void;
}

const ADDR = {
  agent: "10.213.0.2",
  agent6: "fd00:213::2",
  gatewayAgentSide6: "fd00:213::1",
  gatewayAgentSide: "10.213.0.1",
  gatewayInternetSide: "10.213.0.5",
  internet: "10.213.0.6",
} as const;

/** Why this machine cannot run the suite, or null when it can. */
export async function netnsUnavailableReason(): Promise<string | null> {
  if (process.platform !== "linux") return "not Linux";
  if (typeof process.getuid === "function" && process.getuid() !== 0) {
    return "not root (network namespaces need CAP_SYS_ADMIN/CAP_NET_ADMIN)";
  }
  for (const tool of ["ip", "setsid"]) {
    if (!whichTool(tool)) return `'${tool}' is not installed (scripts/install-test-deps.sh)`;
  }
  const probe = `${PREFIX}-probe-${process.pid}`;
  const r = await run(["ip", "netns", "add", probe], { timeoutMs: CMD_TIMEOUT_MS });
  if (r.code !== 0) return `'ip netns add' fails here: ${r.stderr.trim().slice(0, 200)}`;
  await run(["ip", "netns", "del", probe], { timeoutMs: CMD_TIMEOUT_MS });
  return null;
}

function nsNames(id: string): Record<Role, string> {
  return {
    agent: `${PREFIX}-agent-${id}`,
    gateway: `${PREFIX}-gateway-${id}`,
    internet: `${PREFIX}-internet-${id}`,
  };
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Removes namespaces (and their /etc/netns dirs) left by runs whose process is gone. */
async function sweepStale(): Promise<void> {
  const r = await run(["ip", "netns", "list"], { timeoutMs: CMD_TIMEOUT_MS });
  const re = new RegExp(`^(${PREFIX}-(?:agent|gateway|internet|probe)-(\\d+))\\b`);
  for (const line of r.stdout.split("\n")) {
    const m = re.exec(line.trim());
    if (!m || pidAlive(Number(m[2]))) continue;
    // A killed run leaves its daemons running inside; a namespace outlives its name while
    // processes are in it, so end them first.
    const pids = await run(["ip", "netns", "pids", m[1]!], { timeoutMs: CMD_TIMEOUT_MS });
    for (const pid of pids.stdout.split("\n").filter((p) => /^\d+$/.test(p))) {
      try {
        process.kill(Number(pid), "SIGKILL");
      } catch {
        // Already gone.
      }
    }
    await run(["ip", "netns", "del", m[1]!], { timeoutMs: CMD_TIMEOUT_MS });
    rmSync(join(NETNS_ETC, m[1]!), { recursive: true, force: true });
  }
}

export async function buildTopology(): Promise<Topology> {
  await sweepStale();
  const id = String(process.pid);
  const ns = nsNames(id);
  // Interface names: at most 15 bytes; the PID keeps them unique per run.
  const dev = {
    agent: `sl${id}ag`,
    gatewayToAgent: `sl${id}ga`,
    gatewayToInternet: `sl${id}gi`,
    internet: `sl${id}ig`,
  };
  const createdEtc = new Set<string>();
  const etcRootExisted = existsSync(NETNS_ETC);

  const exec = (role: Role, cmd: readonly string[]) => ["ip", "netns", "exec", ns[role], ...cmd];

  const destroySync = () => {
    for (const name of Object.values(ns)) {
      Bun.spawnSync(["ip", "netns", "del", name], {
        stderr: "ignore",
        stdout: "ignore",
        env: { PATH: TOOL_PATH },
      });
    }
    for (const dir of createdEtc) rmSync(dir, { recursive: true, force: true });
    if (!etcRootExisted) {
      try {
        rmdirSync(NETNS_ETC); // only if empty: another run may be using it
      } catch {
        // Not empty or already gone.
      }
    }
  };

  const topo: Topology = {
    id,
    ns,
    addr: ADDR,
    gatewayInternetDev: dev.gatewayToInternet,
    exec,
    writeEtc(role, file, text) {
      const dir = join(NETNS_ETC, ns[role]);
      mkdirSync(dir, { recursive: true });
      createdEtc.add(dir);
      writeFileSync(join(dir, file), text);
    },
    async destroy() {
      destroySync();
    },
    destroySync,
  };

  const ip = (args: readonly string[]) => runOk(["ip", ...args], { timeoutMs: CMD_TIMEOUT_MS });
  try {
    for (const name of Object.values(ns)) await ip(["netns", "add", name]);
    await ip([
      "link",
      "add",
      dev.agent,
      "netns",
      ns.agent,
      "type",
      "veth",
      "peer",
      "name",
      dev.gatewayToAgent,
      "netns",
      ns.gateway,
    ]);
    await ip([
      "link",
      "add",
      dev.gatewayToInternet,
      "netns",
      ns.gateway,
      "type",
      "veth",
      "peer",
      "name",
      dev.internet,
      "netns",
      ns.internet,
    ]);
    const links: [Role, string, string][] = [
      ["agent", dev.agent, `${ADDR.agent}/30`],
      ["gateway", dev.gatewayToAgent, `${ADDR.gatewayAgentSide}/30`],
      ["gateway", dev.gatewayToInternet, `${ADDR.gatewayInternetSide}/30`],
      ["internet", dev.internet, `${ADDR.internet}/30`],
    ];
    for (const [role, d, cidr] of links) {
      await ip(["-n", ns[role], "addr", "add", cidr, "dev", d]);
      await ip(["-n", ns[role], "link", "set", d, "up"]);
    }
    // nodad: usable at once (duplicate detection would hold them "tentative" for a second).
    await ip(["-n", ns.agent, "addr", "add", `${ADDR.agent6}/126`, "dev", dev.agent, "nodad"]);
    await ip([
      "-n",
      ns.gateway,
      "addr",
      "add",
      `${ADDR.gatewayAgentSide6}/126`,
      "dev",
      dev.gatewayToAgent,
      "nodad",
    ]);
    for (const role of ["agent", "gateway", "internet"] as const) {
      await ip(["-n", ns[role], "link", "set", "lo", "up"]);
    }
    // New namespaces start with forwarding off; set it explicitly so the claim does not rest
    // on a kernel default.
    await runOk(exec("gateway", ["sysctl", "-q", "-w", "net.ipv4.ip_forward=0"]), {
      timeoutMs: CMD_TIMEOUT_MS,
    });
    await runOk(exec("gateway", ["sysctl", "-q", "-w", "net.ipv6.conf.all.forwarding=0"]), {
      timeoutMs: CMD_TIMEOUT_MS,
    });
    return topo;
  } catch (e) {
    destroySync();
    throw e;
  }
}
