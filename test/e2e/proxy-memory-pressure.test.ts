// End-to-end: the memory guard's decisions, with memory use set by the test (a probe the proxy
// reads instead of its cgroup), so each state is reached on purpose rather than by filling a
// cgroup (test/e2e/streaming-memory-limit.test.ts does that, with real stalls and a real
// limit). While use is at the shed threshold, an agent holding many connections that stopped
// reading gets no new connection (503, `x-slapenir-error: overloaded`) and another agent does;
// the stalled connections are closed once their grace has passed, as many per round as the
// excess needs; then the agent may connect again. The guard's clock is the test's: the grace
// passes when the test says, however long the machine takes to get there.

import { afterAll, beforeAll, expect, test } from "bun:test";
import type tls from "node:tls";
import type { MemoryProbe } from "../../src/guard/cgroup-probe.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, openTunnel, readUntilClosed, stallAfterHead } from "../support/raw-agent.ts";
import { type StreamUpstream, startStreamUpstream } from "../support/stream-upstream.ts";

const MiB = 1024 * 1024;
const memory = { used: 10 * MiB, limit: 100 * MiB };
const probe: MemoryProbe = {
  source: "test",
  read: () => ({ used: memory.used, limit: memory.limit }),
};

/** The guard's clock, in ms: it moves only when the test moves it. */
let clock = 0;

let h: Harness;
let up: StreamUpstream;

beforeAll(async () => {
  h = await startHarness({
    agents: ["agent-a", "agent-b"],
    memoryProbe: probe,
    guardClock: () => clock,
  });
  up = startStreamUpstream({ cert: await h.upstreamCa.issue(["localhost", "127.0.0.1"]) });
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

async function gauge(name: string): Promise<number> {
  const text = await h.proxy.metrics.registry.getSingleMetricAsString(name);
  return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
}

const raw = (agent: string) => ({
  port: h.port,
  caBundlePath: h.caBundlePath,
  agent: h.agents[agent]!,
});

test("while memory is short, an agent with many stalled connections gets 503, another is served; the stalls are shed after their grace", async () => {
  const big = `GET /download?bytes=${256 * MiB} HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`;
  const STALLS = 8; // proxy-server.ts: REFUSE_AT_STALLED
  const stalled: tls.TLSSocket[] = [];
  const tunnels: tls.TLSSocket[] = [];
  try {
    for (let i = 0; i < STALLS; i++) {
      const t = await openTunnel(raw("agent-a"), { connect: `localhost:${up.port}` });
      stalled.push(t);
      tunnels.push(t);
      stallAfterHead(t, big);
    }
    while ((await gauge("slapenir_connections_stalled")) < STALLS) await Bun.sleep(20);
    // Not short of memory yet: agent-a may still connect.
    const before = await openTunnel(raw("agent-a"), { connect: `localhost:${up.port}` });
    tunnels.push(before);
    memory.used = 85 * MiB; // over the 80 % threshold, under 90 %
    // A guard round (every 50 ms) has seen it.
    while ((await gauge("slapenir_memory_used_bytes")) !== 85 * MiB) await Bun.sleep(20);
    await expect(openTunnel(raw("agent-a"), { connect: `localhost:${up.port}` })).rejects.toThrow(
      "CONNECT refused: HTTP/1.1 503 Service Unavailable",
    );
    const refused = await h.curl(
      ["-sS", `https://localhost:${up.port}/download?bytes=10`],
      "agent-a",
    );
    // curl reads it as the answer to its CONNECT.
    expect(refused.headers).toContain("HTTP/1.1 503 Service Unavailable");
    expect(refused.headers).toContain("x-slapenir-error: overloaded");
    const served = await h.curl(
      ["-sS", `https://localhost:${up.port}/download?bytes=10`],
      "agent-b",
    );
    expect([served.status, served.body.length]).toEqual([200, 10]);
    // The guard's clock has not moved: all of that within the stalls' 2 s grace, nothing shed.
    const sheds = () =>
      h.auditLines.filter((l) => l.includes('"evt":"shed"')).map((l) => JSON.parse(l));
    expect(sheds()).toEqual([]);
    // Past the grace they are shed: 5 MiB over the threshold needs three of ~2 MiB and one
    // more per round; what was shed counts as freed for a second, then the rest go.
    clock += 2_500;
    while (sheds().reduce((n, l) => n + l.connections, 0) < STALLS) {
      clock += 100;
      await Bun.sleep(50);
    }
    // Rounds as the stalls come past their grace (they began one after the other), each at most
    // what the excess needs.
    for (const l of sheds()) {
      expect([l.agents, l.usedMiB, l.limitMiB]).toEqual([`agent-a:${l.connections}`, 85, 100]);
      expect(l.connections).toBeLessThanOrEqual(4);
    }
    expect(await gauge("slapenir_connections_stalled")).toBe(0);
    const got = await Promise.all(stalled.map((t) => readUntilClosed(t)));
    expect(got.every((n) => n !== null && n < 256 * MiB)).toBe(true);
    // The idle tunnel opened before waits on nobody: not shed.
    expect(before.destroyed).toBe(false);
    // Nothing of agent-a's is stalled now: it may connect, memory still short.
    const after = await openTunnel(raw("agent-a"), { connect: `localhost:${up.port}` });
    tunnels.push(after);
    const metrics = await h.proxy.metrics.registry.metrics();
    expect(metrics).toMatch(/^slapenir_connections_refused_total\{reason="overloaded"\} 2$/m);
    expect(metrics).toMatch(/^slapenir_connections_shed_total\{agent="agent-a"\} 8$/m);
    expect(metrics).toMatch(new RegExp(`^slapenir_memory_used_bytes ${85 * MiB}$`, "m"));
  } catch (e) {
    // What the guard saw and did, so a failure under CI can be read from its log.
    console.error(
      "memory-pressure state at failure:",
      JSON.stringify({ clock, memory }),
      h.auditLines.filter((l) => /"evt":"(shed|refuse|connect)"|overloaded/.test(l)).slice(-30),
      (await h.proxy.metrics.registry.metrics())
        .split("\n")
        .filter((l) => /^slapenir_(connections|memory)/.test(l)),
    );
    throw e;
  } finally {
    memory.used = 10 * MiB;
    for (const t of tunnels) closeTunnel(t);
  }
}, 30_000);
