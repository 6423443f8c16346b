// End-to-end: the memory guard's decisions, with memory use set by the test (a probe the proxy
// reads instead of its cgroup), so each state is reached on purpose rather than by filling a
// cgroup (test/e2e/streaming-memory-limit.test.ts does that, with real stalls and a real
// limit). While use is at the shed threshold, an agent whose connection stopped reading gets
// no new connection (503, `x-slapenir-error: overloaded`) and another agent does; the stalled
// connection is closed once its grace has passed; then the agent may connect again.

import { afterAll, beforeAll, expect, test } from "bun:test";
import type tls from "node:tls";
import type { MemoryProbe } from "../../src/proxy/memory-guard.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, openTunnel, resumeTunnel, stallAfterHead } from "../support/raw-agent.ts";
import { type StreamUpstream, startStreamUpstream } from "../support/stream-upstream.ts";

const MiB = 1024 * 1024;
const memory = { used: 10 * MiB, limit: 100 * MiB };
const probe: MemoryProbe = {
  source: "test",
  read: () => ({ used: memory.used, limit: memory.limit }),
};

let h: Harness;
let up: StreamUpstream;

beforeAll(async () => {
  h = await startHarness({ agents: ["agent-a", "agent-b"], memoryProbe: probe });
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

test("while memory is short, an agent with a stalled connection gets 503, another is served; the stall is shed after its grace", async () => {
  const big = `GET /download?bytes=${256 * MiB} HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`;
  const stalled = await openTunnel(raw("agent-a"), { connect: `localhost:${up.port}` });
  const tunnels: tls.TLSSocket[] = [stalled];
  try {
    stallAfterHead(stalled, big);
    const t0 = performance.now();
    while ((await gauge("slapenir_connections_stalled")) < 1) {
      if (performance.now() - t0 > 10_000) throw new Error("the download never stalled");
      await Bun.sleep(20);
    }
    const stalledAt = performance.now();
    // Not short of memory yet: agent-a may still connect.
    const before = await openTunnel(raw("agent-a"), { connect: `localhost:${up.port}` });
    tunnels.push(before);
    memory.used = 85 * MiB; // over the 80 % threshold, under 90 %
    await Bun.sleep(120); // a guard round (every 50 ms)
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
    // All of that within the stall's 2 s grace: it is still open.
    expect(performance.now() - stalledAt).toBeLessThan(2_000);
    expect(h.auditLines.some((l) => l.includes('"evt":"shed"'))).toBe(false);
    // Past the grace it is shed (the idle tunnel opened before is not: it waits on nobody).
    while (!h.auditLines.some((l) => l.includes('"evt":"shed"'))) {
      if (performance.now() - stalledAt > 10_000) throw new Error("never shed");
      await Bun.sleep(50);
    }
    const shed = JSON.parse(h.auditLines.find((l) => l.includes('"evt":"shed"'))!);
    expect([shed.connections, shed.agents, shed.usedMiB, shed.limitMiB]).toEqual([
      1,
      "agent-a:1",
      85,
      100,
    ]);
    expect(await gauge("slapenir_connections_stalled")).toBe(0);
    const gone = await new Promise<number>((done) => {
      let got = 0;
      stalled.on("data", (d: Buffer) => {
        got += d.length;
      });
      stalled.once("close", () => done(got));
      resumeTunnel(stalled);
    });
    expect(gone).toBeLessThan(256 * MiB);
    expect(before.destroyed).toBe(false);
    // Nothing of agent-a's is stalled now: it may connect, memory still short.
    const after = await openTunnel(raw("agent-a"), { connect: `localhost:${up.port}` });
    tunnels.push(after);
    const metrics = await h.proxy.metrics.registry.metrics();
    expect(metrics).toMatch(/^slapenir_connections_refused_total\{reason="overloaded"\} 2$/m);
    expect(metrics).toMatch(/^slapenir_connections_shed_total\{agent="agent-a"\} 1$/m);
    expect(metrics).toMatch(new RegExp(`^slapenir_memory_used_bytes ${85 * MiB}$`, "m"));
  } finally {
    memory.used = 10 * MiB;
    for (const t of tunnels) closeTunnel(t);
  }
}, 30_000);
