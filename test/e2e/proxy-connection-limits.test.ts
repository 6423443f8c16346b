// End-to-end: caps on open agent connections (SLAPENIR_MAX_AGENT_CONNECTIONS per agent,
// SLAPENIR_MAX_CONNECTIONS in all). Every open connection costs the proxy memory, so before the
// caps one agent that opened thousands of idle tunnels got the proxy OOM-killed in its
// container (6 000 in five seconds under a 256 MiB limit; streaming-memory-limit.test.ts tries
// that in the cgroup) and every other agent lost it.
// Here the caps are small: an agent at its cap gets a 429 naming the cap for one more
// connection, while another agent is still served; the slot comes back when a connection
// closes. Beyond the total, a new connection is closed before its TLS handshake. A peer that
// holds connections open without finishing a handshake (it needs no certificate for that) is
// capped by its address, so it cannot take the whole total and lock every agent out: before
// that cap, 1 100 such connections from one address did. Peers are told apart by their source
// address on the loopback (127.0.0.1, .2, .3).

import { afterAll, beforeAll, expect, test } from "bun:test";
import net from "node:net";
import type tls from "node:tls";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import {
  closeTunnel,
  exchangeRaw,
  openProxyConnection,
  openTunnel,
  readToClose,
} from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const PER_AGENT = 3;
/** Above what one agent can hold: its cap, its refusals being told (≤ cap), its handshakes. */
const TOTAL = 12;
const HANDSHAKES = 3;

let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness({
    agents: ["agent-a", "agent-b"],
    env: {
      SLAPENIR_MAX_AGENT_CONNECTIONS: String(PER_AGENT),
      SLAPENIR_MAX_CONNECTIONS: String(TOTAL),
      SLAPENIR_MAX_HANDSHAKES_PER_ADDRESS: String(HANDSHAKES),
      SLAPENIR_RATE_LIMIT: "off",
    },
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

let closed = false;

afterAll(async () => {
  up?.stop();
  if (!closed) await h?.close();
});

const raw = (agent: string, localAddress = "127.0.0.1") => ({
  port: h.port,
  caBundlePath: h.caBundlePath,
  agent: h.agents[agent]!,
  localAddress,
});
const target = () => `localhost:${up.port}`;

const metric = (line: string) => h.metric(line);

/** Waits until the proxy has seen `n` authenticated connections close and counts what is open. */
async function untilOpen(n: number): Promise<void> {
  for (let i = 0; i < 200 && (await metric("slapenir_connections_open")) !== n; i++) {
    await Bun.sleep(10);
  }
  expect(await metric("slapenir_connections_open")).toBe(n);
}

function closeAll(sockets: readonly net.Socket[]): void {
  for (const s of sockets) closeTunnel(s);
}

test("an agent at its cap gets 429 for one more connection; another agent is still served", async () => {
  const tunnels = await Promise.all(
    Array.from({ length: PER_AGENT }, () => openTunnel(raw("agent-a"), { connect: target() })),
  );
  try {
    await untilOpen(PER_AGENT);
    // An operator sees who is at the cap.
    expect(await metric('slapenir_agent_connections_open{agent="agent-a"}')).toBe(PER_AGENT);
    // One more, as curl: its CONNECT is answered 429 and no tunnel opens.
    const refused = await h.curl([`https://${target()}/over`], "agent-a");
    expect(refused.stderr).toContain("CONNECT tunnel failed, response 429");
    expect(up.received.some((r) => r.target === "/over")).toBe(false);
    // Raw: the answer names the cap, and the connection ends after it.
    const s = await openProxyConnection(raw("agent-a"));
    const closed = readToClose(s);
    s.write(`CONNECT ${target()} HTTP/1.1\r\n\r\n`);
    const answer = (await closed).toString();
    expect(answer.split("\r\n")[0]).toBe("HTTP/1.1 429 Too Many Requests");
    expect(answer).toContain("x-slapenir-error: connection-limit");
    expect(answer).toEndWith(
      `\r\n\r\nslapenir: too many open connections for this agent (limit ${PER_AGENT})\n`,
    );
    expect(s.destroyed || s.readableEnded).toBe(true);
    // Another agent is not held to agent-a's count.
    const other = await h.curl([`https://${target()}/other`], "agent-b");
    expect([other.code, other.status]).toEqual([0, 200]);
    // Its upstream connection stays open for the next request, and shows.
    expect(await metric("slapenir_upstream_idle_connections")).toBeGreaterThanOrEqual(1);
    // The tunnels agent-a already had still work.
    const inside = await exchangeRaw(
      tunnels[0]!,
      `GET /inside HTTP/1.1\r\nHost: ${target()}\r\n\r\n`,
    );
    expect(inside.toString().split("\r\n")[0]).toBe("HTTP/1.1 200 OK");
    await h.settled();
    const refusals = h.auditLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.evt === "refused" && l.agent === "agent-a");
    // Refused twice: the audit writes the first at once, and repeats within ten seconds as one
    // line with a count later (src/observe/refusal-digest.ts); the metric counts both.
    expect(refusals.map((l) => [l.reason, l.repeated])).toEqual([
      [`too many open connections for this agent (limit ${PER_AGENT})`, undefined],
    ]);
    expect(
      await metric('slapenir_connections_refused_total{reason="agent-connection-limit"}'),
    ).toBe(2);
  } finally {
    closeAll(tunnels);
  }
  // Its connections closed, the agent gets its slots back.
  await untilOpen(0);
  expect(await metric('slapenir_agent_connections_open{agent="agent-a"}')).toBe(0);
  const again = await h.curl([`https://${target()}/again`], "agent-a");
  expect([again.code, again.status]).toEqual([0, 200]);
});

/** `n` TCP connections from `localAddress` that never start TLS. */
function silentPeers(n: number, localAddress: string): Promise<net.Socket[]> {
  return Promise.all(
    Array.from(
      { length: n },
      () =>
        new Promise<net.Socket>((resolve, reject) => {
          const s = net.connect({ port: h.port, host: "127.0.0.1", localAddress }, () =>
            resolve(s),
          );
          s.once("error", reject);
        }),
    ),
  );
}

/** Whether a TLS connection as `agent` from `localAddress` completes its handshake. */
function handshakeFrom(agent: string, localAddress: string): Promise<string> {
  return openProxyConnection(raw(agent, localAddress)).then(
    (s) => {
      s.destroy();
      return "handshake completed";
    },
    () => "refused",
  );
}

function refusedWith(reason: string): Record<string, unknown>[] {
  return h.auditLines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.evt === "refused" && l.reason === reason);
}

/** Retries until a curl from agent-b gets through (the proxy sees closed peers go async). */
async function servedAgain(): Promise<number> {
  let status = 0;
  for (let i = 0; i < 50 && status !== 200; i++) {
    status = (await h.curl([`https://${target()}/after`], "agent-b")).status;
    if (status !== 200) await Bun.sleep(20);
  }
  return status;
}

test("a peer holding handshakes open is capped by its address; other addresses are served", async () => {
  await untilOpen(0);
  const silent = await silentPeers(HANDSHAKES, "127.0.0.2");
  try {
    const failedBefore = await metric('slapenir_connections_refused_total{reason="handshake"}');
    expect(await handshakeFrom("agent-b", "127.0.0.2")).toBe("refused");
    // Counted once, as what it was: not also as a failed handshake.
    expect(await metric('slapenir_connections_refused_total{reason="handshake"}')).toBe(
      failedBefore,
    );
    expect(await handshakeFrom("agent-b", "127.0.0.3")).toBe("handshake completed");
    const served = await h.curl([`https://${target()}/elsewhere`], "agent-b");
    expect([served.code, served.status]).toEqual([0, 200]);
    const refused = refusedWith(
      `too many handshakes in progress from this address (limit ${HANDSHAKES})`,
    );
    expect(refused.map((l) => String(l.remote).split(":")[0])).toEqual(["127.0.0.2"]);
    expect(await metric('slapenir_connections_refused_total{reason="handshake-limit"}')).toBe(1);
  } finally {
    closeAll(silent);
  }
  // Its silent connections gone, the address may connect again.
  let again = "refused";
  for (let i = 0; i < 50 && again !== "handshake completed"; i++) {
    again = await handshakeFrom("agent-b", "127.0.0.2");
    if (again !== "handshake completed") await Bun.sleep(20);
  }
  expect(again).toBe("handshake completed");
});

test("beyond the total, a new connection is closed before TLS, audited; the slot comes back", async () => {
  await untilOpen(0);
  // Connections count against the total as soon as they are accepted, handshake or not.
  const silent: net.Socket[] = [];
  for (let i = 0; silent.length < TOTAL; i++) {
    silent.push(
      ...(await silentPeers(Math.min(HANDSHAKES, TOTAL - silent.length), `127.0.1.${i + 1}`)),
    );
  }
  // Accepted by the proxy (in whichever loop), not only connected.
  for (let i = 0; i < 500 && (await metric("slapenir_connections_accepted")) < TOTAL; i++) {
    await Bun.sleep(10);
  }
  try {
    expect(await handshakeFrom("agent-b", "127.0.0.1")).toBe("refused");
    await h.settled();
    expect(refusedWith(`too many open connections (limit ${TOTAL})`).length).toBe(1);
    expect(await metric('slapenir_connections_refused_total{reason="connection-limit"}')).toBe(1);
  } finally {
    closeAll(silent);
  }
  expect(await servedAgain()).toBe(200);
});

test("an agent opening connections past its cap as fast as it can does not fill the total", async () => {
  await untilOpen(0);
  const tunnels = await Promise.all(
    Array.from({ length: PER_AGENT }, () => openTunnel(raw("agent-a"), { connect: target() })),
  );
  // From another address (so its handshakes do not count against agent-b's), forty more
  // connections, one after the other, none of them reading or closing its 429. Each refusal
  // being told used to stay open for a second: forty of them filled the total of twelve.
  const hammer: tls.TLSSocket[] = [];
  try {
    for (let i = 0; i < 40; i++) {
      const s = await openProxyConnection(raw("agent-a", "127.0.0.9")).catch(() => null);
      if (s) hammer.push(s);
    }
    expect(await handshakeFrom("agent-b", "127.0.0.1")).toBe("handshake completed");
    const served = await h.curl([`https://${target()}/while-hammered`], "agent-b");
    expect([served.code, served.status]).toEqual([0, 200]);
  } finally {
    closeAll(hammer);
    closeAll(tunnels);
  }
});

test("on shutdown, handshakes in progress are not waited for; held-back refusals are written", async () => {
  // Silent connections would hold the shutdown until their handshake deadline (10 s, past
  // this test's 5 s timeout) if it waited for them.
  const silent = await silentPeers(2, "127.0.0.4");
  closed = true;
  await h.close();
  closeAll(silent);
  const repeated = h.auditLines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.evt === "refused" && l.agent === "agent-a" && l.repeated !== undefined);
  // One line per kind and peer per window — each event loop keeps its own window.
  expect(repeated.length).toBeGreaterThanOrEqual(1);
  expect(repeated.length).toBeLessThanOrEqual(h.proxy.loops);
  expect(new Set(repeated.map((l) => `${l.reason} ${(l.repeated as number) > 0}`))).toEqual(
    new Set([`too many open connections for this agent (limit ${PER_AGENT}) true`]),
  );
});
