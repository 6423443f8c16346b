// A WebSocket whose agent stops reading is a stall like an HTTP answer's (issue 17, limits):
// the relay stops reading the upstream, registers the stall with the memory guard, and when
// memory is short past the stall's grace the guard sheds it — both legs closed. Memory use and
// the guard's clock are the test's (as in proxy-memory-pressure): each state is reached on
// purpose, and the grace passes when the test says.

import { afterAll, beforeAll, expect, test } from "bun:test";
import type tls from "node:tls";
import type { MemoryProbe } from "../../src/guard/cgroup-probe.ts";
import { encodeFrame, OP } from "../../src/http/ws-frames.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, openTunnel, readHead, readUntilClosed } from "../support/raw-agent.ts";
import { startWsFlood } from "../support/ws-flood.ts";

const MiB = 1024 * 1024;
const memory = { used: 10 * MiB, limit: 100 * MiB };
const probe: MemoryProbe = { source: "test", read: () => ({ ...memory }) };
let clock = 0;
let h: Harness;
let server: ReturnType<typeof Bun.serve>;

beforeAll(async () => {
  h = await startHarness({
    allow: ["ws.test:*"],
    names: ["ws.test"],
    memoryProbe: probe,
    guardClock: () => clock,
  });
  const cert = await h.upstreamCa.issue(["ws.test"]);
  // 4096 of them asked for: 256 MiB, far more than any buffer on the way holds.
  const chunk = new Uint8Array(64 * 1024).fill(0x61);
  server = startWsFlood(cert, chunk);
});

afterAll(async () => {
  memory.used = 10 * MiB;
  server?.stop(true);
  await h?.close();
});

async function gauge(name: string): Promise<number> {
  const text = await h.proxy.metrics.registry.getSingleMetricAsString(name);
  return Number(new RegExp(`^${name} (\\S+)$`, "m").exec(text)?.[1] ?? Number.NaN);
}

test("an agent that stops reading a WebSocket stalls it; short of memory past the grace, it is shed", async () => {
  const t: tls.TLSSocket = await openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
    { connect: `ws.test:${server.port}` },
  );
  try {
    t.write(
      `GET / HTTP/1.1\r\nHost: ws.test:${server.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
    );
    expect(await readHead(t)).toStartWith("HTTP/1.1 101");
    // Ask for the flood, then stop reading: the tunnel and the connection under it.
    t.write(
      Buffer.from(
        encodeFrame(
          { fin: true, opcode: OP.text },
          new TextEncoder().encode("4096"),
          new Uint8Array([9, 9, 9, 9]),
        ),
      ),
    );
    t.pause();
    (t as unknown as { _parent?: tls.TLSSocket })._parent?.pause();
    for (let i = 0; (await gauge("slapenir_connections_stalled")) < 1; i++) {
      expect(i).toBeLessThan(1000);
      await Bun.sleep(20);
    }
    // Not short of memory: nothing is shed, however long it waits.
    clock += 10_000;
    await Bun.sleep(200);
    expect(h.auditLines.some((l) => l.includes('"evt":"shed"'))).toBe(false);
    memory.used = 95 * MiB;
    clock += 10_000;
    for (let i = 0; !h.auditLines.some((l) => l.includes('"evt":"shed"')); i++) {
      expect(i).toBeLessThan(1000);
      clock += 100;
      await Bun.sleep(20);
    }
    const closed = await readUntilClosed(t);
    expect(closed).not.toBeNull();
    const ws = await h.auditWhere((l) => l.evt === "websocket");
    expect(ws.at(-1)?.reason).toBe("shed under memory pressure");
    expect(await gauge("slapenir_connections_stalled")).toBe(0);
  } finally {
    memory.used = 10 * MiB;
    closeTunnel(t);
  }
}, 60_000);
