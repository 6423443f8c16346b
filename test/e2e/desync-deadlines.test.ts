// Deadlines and caps of the proxy's own (THREATS 24, 25): slowloris heads, slow bodies, slow
// readers and half-open peers are dropped after the configured deadlines (short ones here, via
// the environment), nothing incomplete reaches the upstream, and while 50 such peers hang on
// the proxy keeps serving a normal agent. Oversized or over-numerous header fields get 431.
// Assertions are about what happened (closed, refused, served), never about how fast.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import net from "node:net";
import type tls from "node:tls";
import { HostileAgent } from "../support/hostile-agent.ts";
import {
  type HostileUpstream,
  headBytes,
  sendLength,
  startHostileUpstream,
} from "../support/hostile-upstream.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";

const HEADER_MS = 300;
const BODY_IDLE_MS = 300;
const IDLE_MS = 400;

let h: Harness;
let up: HostileUpstream;
let agent: HostileAgent;
let target: string;

beforeAll(async () => {
  h = await startHarness({
    allow: ["slow.test:*"],
    names: ["slow.test"],
    env: {
      SLAPENIR_RATE_LIMIT: "off",
      SLAPENIR_HEADER_TIMEOUT_MS: String(HEADER_MS),
      SLAPENIR_BODY_IDLE_TIMEOUT_MS: String(BODY_IDLE_MS),
      SLAPENIR_IDLE_TIMEOUT_MS: String(IDLE_MS),
      SLAPENIR_MAX_HEADER_COUNT: "50",
      SLAPENIR_MAX_HEADER_BYTES: "8192",
    },
  });
  up = await startHostileUpstream(await h.upstreamCa.issue(["slow.test"]));
  up.on("/", (_r, w) => sendLength(w, [], Buffer.from("ok\n")));
  up.on("/big", async (_r, w) => {
    const size = 64 << 20;
    await w.write(headBytes(200, "OK", [["content-length", String(size)]]));
    const block = Buffer.alloc(1 << 20, 0x61);
    for (let i = 0; i < 64; i++) await w.write(block);
  });
  agent = new HostileAgent(h);
  target = `slow.test:${up.port}`;
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

/** Resolves when the socket closes; `closedEarly()` says whether it already did. */
function watchClose(s: net.Socket | tls.TLSSocket) {
  let closed = false;
  const done = new Promise<void>((r) => {
    s.once("close", () => {
      closed = true;
      r();
    });
  });
  s.on("error", () => {});
  return { done, closed: () => closed };
}

/** Trickle `lines` one per `gapMs` until the peer closes; returns how many were written. */
async function trickle(s: tls.TLSSocket, lines: readonly string[], gapMs: number): Promise<number> {
  const w = watchClose(s);
  let n = 0;
  for (const l of lines) {
    if (w.closed()) break;
    s.write(l);
    n++;
    await Bun.sleep(gapMs);
  }
  return n;
}

describe("deadlines", () => {
  test("slowloris: a head trickled byte by byte is dropped before it completes", async () => {
    const before = up.received.length;
    const s = await agent.tunnel(target);
    const lines = [
      `GET / HTTP/1.1\r\n`,
      `Host: ${target}\r\n`,
      ...Array.from({ length: 40 }, (_, i) => `X-${i}: ${"a".repeat(i)}\r\n`),
      "\r\n",
    ];
    const written = await trickle(s, lines, 50);
    expect(written).toBeLessThan(lines.length);
    expect(up.received.length).toBe(before);
  });

  test("slowloris on the outer connection (before CONNECT) is dropped too", async () => {
    const s = await agent.outer();
    const lines = [
      `CONNECT ${target} HTTP/1.1\r\n`,
      ...Array.from({ length: 40 }, (_, i) => `X-${i}: 1\r\n`),
      "\r\n",
    ];
    const written = await trickle(s, lines, 50);
    expect(written).toBeLessThan(lines.length);
  });

  test("slow body: a body that stops arriving is dropped, the upstream never gets it whole", async () => {
    const before = up.received.length;
    const s = await agent.tunnel(target);
    const w = watchClose(s);
    // Part of the body, then nothing: the body idle deadline drops the connection.
    s.write(`POST / HTTP/1.1\r\nHost: ${target}\r\nContent-Length: 1000\r\n\r\n${"b".repeat(100)}`);
    await w.done;
    expect(up.received.length).toBe(before);
  });

  test("slow reader: an agent that stops reading a large response is dropped", async () => {
    const { inner, outer } = await agent.tunnelPair(target);
    const w = watchClose(outer);
    inner.write(`GET /big HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    // Stop reading at the TCP level; the proxy's write deadline must fire and close the
    // connection (64 MiB never fit in socket buffers, so the proxy must give up, not buffer).
    outer.pause();
    await Bun.sleep(BODY_IDLE_MS * 8);
    outer.resume();
    let got = 0;
    inner.on("data", (d: Buffer) => {
      got += d.length;
    });
    await w.done;
    expect(got).toBeLessThan(64 << 20);
  });

  test("half-open: a tunnel that never sends a request is closed after the idle deadline", async () => {
    const s = await agent.tunnel(target);
    const w = watchClose(s);
    await w.done;
    expect(w.closed()).toBe(true);
  });

  test("half-open: a kept-alive connection idle after a response is closed", async () => {
    const s = await agent.tunnel(target);
    const w = watchClose(s);
    let got = "";
    s.on("data", (d: Buffer) => {
      got += d.toString("latin1");
    });
    s.write(`GET / HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
    await w.done;
    expect(got.startsWith("HTTP/1.1 200")).toBe(true);
  });

  test("half-open: a raw TCP peer that never starts TLS is dropped", async () => {
    const s = net.connect({ host: "127.0.0.1", port: h.port });
    const w = watchClose(s);
    await w.done;
    expect(w.closed()).toBe(true);
  });

  test("50 slow peers hang on; a normal agent is still served", async () => {
    const slow: net.Socket[] = [];
    for (let i = 0; i < 25; i++) {
      slow.push(net.connect({ host: "127.0.0.1", port: h.port })); // no TLS at all
    }
    // Watched from the start: on a busy machine their deadlines may pass before curl is done.
    const closes = slow.map((s) => watchClose(s).done);
    await Promise.all(
      Array.from({ length: 25 }, async () => {
        const t = await agent.tunnel(target);
        closes.push(watchClose(t).done);
        t.write("GET / HTTP/1.1\r\n"); // a head that never ends
      }),
    );
    const r = await h.curl([`https://${target}/`]);
    expect(r.code).toBe(0);
    expect(r.status).toBe(200);
    expect(r.body.toString()).toBe("ok\n");
    await Promise.all(closes);
  });
});

describe("header caps", () => {
  test("too many header fields: 431, nothing forwarded", async () => {
    const before = up.received.length;
    const fields = Array.from({ length: 60 }, (_, i) => `X-F${i}: v\r\n`).join("");
    const a = await agent.send(
      await agent.tunnel(target),
      `GET / HTTP/1.1\r\nHost: ${target}\r\n${fields}\r\n`,
    );
    expect(a.status).toBe(431);
    expect(up.received.length).toBe(before);
  });

  test("a header section over the byte cap: 431, nothing forwarded", async () => {
    const before = up.received.length;
    const a = await agent.send(
      await agent.tunnel(target),
      `GET / HTTP/1.1\r\nHost: ${target}\r\nX-Big: ${"x".repeat(9000)}\r\n\r\n`,
    );
    expect(a.status).toBe(431);
    expect(up.received.length).toBe(before);
  });

  test("the same caps on the outer connection (CONNECT head)", async () => {
    const fields = Array.from({ length: 60 }, (_, i) => `X-F${i}: v\r\n`).join("");
    const a = await agent.send(
      await agent.outer(),
      `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n${fields}\r\n`,
    );
    expect(a.status).toBe(431);
  });
});
