// A WebSocket whose agent stops reading is a stall like an HTTP answer's (issue 17, limits):
// the relay stops reading the upstream, registers the stall with the memory guard, and when
// memory is short past the stall's grace the guard sheds it — both legs closed. Memory use and
// the guard's clock are the test's (as in proxy-memory-pressure): each state is reached on
// purpose, and the grace passes when the test says.

import { afterAll, beforeAll, expect, test } from "bun:test";
import type tls from "node:tls";
import { InlineScanner } from "../../src/body/inline-scanner.ts";
import type { MemoryProbe } from "../../src/guard/cgroup-probe.ts";
import { encodeFrame, FrameReader, OP } from "../../src/http/ws-frames.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, openTunnel, readHead, readUntilClosed } from "../support/raw-agent.ts";
import { wsAgent } from "../support/ws-agent.ts";
import { startWsFlood } from "../support/ws-flood.ts";
import { ok101, startRawWsUpstream } from "../support/ws-raw-upstream.ts";

// Matcher streams the relay has open, counted where the relay opens them (the proxy runs in
// this process): one per message being scanned, let go of when it is scanned or cut.
let streamsOpen = 0;
let streamsPeak = 0;
const stream = InlineScanner.prototype.stream;
InlineScanner.prototype.stream = function (
  this: InlineScanner,
  ...args: Parameters<typeof stream>
) {
  const s = stream.apply(this, args);
  streamsPeak = Math.max(streamsPeak, ++streamsOpen);
  let open = true;
  const done = () => {
    if (open) streamsOpen -= 1;
    open = false;
  };
  return {
    push: (c: Uint8Array) => s.push(c),
    end: () => {
      try {
        return s.end();
      } finally {
        done();
      }
    },
    abort: () => {
      done();
      s.abort();
    },
    get replacements() {
      return s.replacements;
    },
  };
};

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
    credentials: [
      {
        name: "t",
        dummy: "mem-dummy-000000000000001",
        real: "mem-R3aL-0000000000000001",
        hosts: ["ws.test:*"],
      },
    ],
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
    // A guard round after the clock moved: it reads this use, which the gauge then shows.
    memory.used = 11 * MiB;
    while ((await gauge("slapenir_memory_used_bytes")) !== 11 * MiB) await Bun.sleep(20);
    await h.settled();
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

test("messages queued behind a side that stopped reading hold no matcher stream; all let go when the WebSocket ends (found by an attacker's review)", async () => {
  // An upstream that answers the handshake and then reads nothing.
  const cert = await h.upstreamCa.issue(["ws.test"]);
  const raw = await startRawWsUpstream(cert, (s, key) => {
    s.pause();
    s.write(ok101(key));
  });
  try {
    const port = raw.port;
    const mask = new Uint8Array([1, 2, 3, 4]);
    const empty = Buffer.from(encodeFrame({ fin: true, opcode: OP.text }, new Uint8Array(0), mask));
    const big = Buffer.from(
      encodeFrame({ fin: true, opcode: OP.binary }, new Uint8Array(100_000), mask),
    );
    // A message too big to scan whole (a stream), then 900 empty ones: each TCP read holds
    // hundreds of message heads.
    const unit = Buffer.concat([big, ...Array<Buffer>(900).fill(empty)]);
    await h.settled();
    const before = (await h.auditWhere(() => true, 0)).filter((l) => l.evt === "websocket").length;
    const c = await wsAgent(h, { target: `ws.test:${port}`, offer: null });
    expect(c.head).toStartWith("HTTP/1.1 101");
    // Until the relay waits on the upstream (a stall) and the agent's bytes back up behind it.
    for (let i = 0; (await gauge("slapenir_connections_stalled")) < 1; i++) {
      expect(i).toBeLessThan(2000);
      if (c.t.writableLength < 1 << 20) c.t.write(unit);
      await Bun.sleep(5);
    }
    for (let k = 0; k < 20; k++) c.t.write(unit);
    await Bun.sleep(50);
    // A scan is open only for the message being passed on, one per side at most.
    expect(streamsPeak).toBeLessThanOrEqual(2);
    // Both go: the relay ends with hundreds of messages still queued.
    closeTunnel(c.t);
    for (const s of raw.sockets) s.destroy();
    await h.auditWhere((l) => l.evt === "websocket", before + 1);
    expect(streamsOpen).toBe(0);
  } finally {
    raw.close();
  }
}, 60_000);

test("a message sent a byte per frame costs its bytes, not an object per frame (found by an attacker's review)", async () => {
  // An upstream that reads frames and says when the agent's ping, sent after them, arrived:
  // by then the proxy has taken in every frame before it.
  const cert = await h.upstreamCa.issue(["ws.test"]);
  const pings: (() => void)[] = [];
  const raw = await startRawWsUpstream(cert, (s, key) => {
    s.write(ok101(key));
    const reader = new FrameReader({ from: "client", maxFrameBytes: 1 << 20, deflate: false });
    s.on("data", (x: Buffer) => {
      for (const e of reader.push(new Uint8Array(x))) {
        if (e.type === "end" && e.head.opcode === OP.ping) pings.shift()?.();
      }
    });
  });
  const SOCKETS = 20;
  const BYTES = 64 * 1024 - 1;
  const mask = new Uint8Array([1, 2, 3, 4]);
  const frames: Uint8Array[] = [];
  for (let i = 0; i < BYTES; i++) {
    const op = i === 0 ? OP.binary : OP.continuation;
    frames.push(encodeFrame({ fin: false, opcode: op }, new Uint8Array([0x61]), mask));
  }
  const trickle = Buffer.concat(frames);
  const ping = Buffer.from(encodeFrame({ fin: true, opcode: OP.ping }, new Uint8Array(0), mask));
  try {
    const port = raw.port;
    const agents = [];
    for (let i = 0; i < SOCKETS; i++) {
      agents.push(await wsAgent(h, { target: `ws.test:${port}`, offer: null }));
    }
    Bun.gc(true);
    const before = process.memoryUsage().heapUsed;
    const arrived = agents.map(() => new Promise<void>((r) => pings.push(r)));
    for (const c of agents) c.t.write(Buffer.concat([trickle, ping]));
    await Promise.all(arrived);
    Bun.gc(true);
    const grown = process.memoryUsage().heapUsed - before;
    // Each socket holds its 64 KiB message (in a buffer of at most twice that): ~2.5 MiB in
    // all. An object per frame held ~4.6 MiB per socket (93 MiB for these 20).
    expect(grown).toBeLessThan(16 * MiB);
    for (const c of agents) closeTunnel(c.t);
  } finally {
    raw.close();
  }
}, 60_000);
