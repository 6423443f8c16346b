// Every way in is metered (issue 21, item 2). A CONNECT draws on its agent's request rate
// whether the policy allows it or not; a new connection draws on its source address's rate
// before any TLS work; a leaf minted for a host not cached draws on the agent's mint rate.
// Refusals an agent can repeat at full speed are audited through the digest: one line per
// kind, agent and destination, the rest counted (in metrics at once, in the line's `repeated`
// when its window ends). The rate clock is frozen, so a bucket holds exactly its burst and the
// counts below do not depend on how fast the machine is.

import { afterAll, beforeAll, beforeEach, describe, expect, test } from "bun:test";
import type tls from "node:tls";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import {
  closeTunnel,
  connectAnswer,
  exchangeRaw,
  openProxyConnection,
  openTunnel,
} from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const REQUEST_BURST = 12;
const HANDSHAKE_BURST = 16;
const MINT_BURST = 4;

let h: Harness;
let up: EchoServer;
/** The rate clock: frozen within a test (exact counts), moved on between tests (full buckets). */
let rateNow = 0;

beforeAll(async () => {
  h = await startHarness({
    agents: ["agent-a", "agent-b"],
    allow: ["localhost:*", "*.mint.localhost:443"],
    env: {
      SLAPENIR_RATE_LIMIT: `1/s,burst=${REQUEST_BURST}`,
      SLAPENIR_HANDSHAKE_RATE: `1/s,burst=${HANDSHAKE_BURST}`,
      SLAPENIR_MINT_RATE: `1/s,burst=${MINT_BURST}`,
    },
    rateClock: () => rateNow,
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

beforeEach(() => {
  rateNow += 3_600_000;
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

/** Each test's agent comes from its own address: handshake buckets are per address. */
const peer = (agent: string, localAddress: string) => ({
  port: h.port,
  caBundlePath: h.caBundlePath,
  agent: h.agents[agent]!,
  localAddress,
});

/** A CONNECT on a new connection: the status line and error code of the answer. */
const connect = (agent: string, from: string, target: string) =>
  connectAnswer(peer(agent, from), target);

/** Whether a TLS connection to the proxy from `from` completes its handshake. */
async function handshakes(agent: string, from: string): Promise<boolean> {
  try {
    (await openProxyConnection(peer(agent, from))).destroy();
    return true;
  } catch {
    return false;
  }
}

async function get(t: tls.TLSSocket, path: string): Promise<string> {
  const reply = await exchangeRaw(t, `GET ${path} HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`);
  return reply.toString("latin1").split("\r\n")[0]!;
}

const metric = (line: string) => h.metric(line);

/** The audit lines so far, every loop's included (they reach this thread as messages). */
const audit = async () => {
  await h.settled();
  return h.auditLines.map((l) => JSON.parse(l) as Record<string, unknown>);
};

describe("a flood of denied CONNECTs", () => {
  test("draws on the agent's rate, then its address's: 403, then 429, then no TLS; another agent is served throughout", async () => {
    const from = "127.0.0.2";
    const denied = "denied.example:443";
    const b = await openTunnel(peer("agent-b", "127.0.0.3"), { connect: `localhost:${up.port}` });
    expect(await get(b, "/b-before")).toBe("HTTP/1.1 200 OK");

    const answers: string[] = [];
    for (let i = 0; i < HANDSHAKE_BURST; i++) {
      const a = await connect("agent-a", from, denied);
      answers.push(`${a.status} ${a.error}`);
    }
    expect(answers).toEqual([
      ...Array(REQUEST_BURST).fill("403 policy-denied"),
      ...Array(HANDSHAKE_BURST - REQUEST_BURST).fill("429 rate-limited"),
    ]);
    // The address's budget is spent: the next connection is closed before any TLS.
    expect(await handshakes("agent-a", from)).toBe(false);
    expect(await handshakes("agent-a", from)).toBe(false);

    // The other agent, from its address, is untouched: its tunnel and a new one both serve.
    expect(await get(b, "/b-during")).toBe("HTTP/1.1 200 OK");
    closeTunnel(b);
    const b2 = await openTunnel(peer("agent-b", "127.0.0.3"), { connect: `localhost:${up.port}` });
    expect(await get(b2, "/b-after")).toBe("HTTP/1.1 200 OK");
    closeTunnel(b2);

    // Metrics count each refusal, by its reason; the audit log has one line per kind (the rest
    // are summed into it when its window ends).
    const refusedFor = (reason: string) =>
      metric(
        `slapenir_requests_total{agent="agent-a",decision="deny",status="4xx",reason="${reason}"}`,
      );
    expect(await refusedFor("policy-denied")).toBe(REQUEST_BURST);
    expect(await refusedFor("rate-limited")).toBe(HANDSHAKE_BURST - REQUEST_BURST);
    expect(await metric(`slapenir_connections_refused_total{reason="handshake-rate"}`)).toBe(2);
    const lines = await audit();
    const aConnects = lines.filter((l) => l.agent === "agent-a" && l.method === "CONNECT");
    expect(aConnects.map((l) => l.reason)).toEqual([
      "no allow rule matches https://denied.example:443",
      "rate limit exceeded",
    ]);
    const rated = lines.filter((l) => l.reason === "new connection rate exceeded");
    expect(rated).toHaveLength(1);
    expect(rated[0]!.remote).toStartWith(`${from}:`);
  });
});

describe("leaf mints", () => {
  test("a host not cached draws on the agent's mint rate; cached hosts and other agents do not", async () => {
    const from = "127.0.0.4";
    const opened = async (agent: string, host: string, address = from) => {
      try {
        closeTunnel(await openTunnel(peer(agent, address), { connect: `${host}:443` }));
        return "200";
      } catch (e) {
        return String((e as Error).message);
      }
    };
    const hosts = Array.from({ length: MINT_BURST }, (_, i) => `h${i}.mint.localhost`);
    for (const host of hosts) expect(await opened("agent-a", host)).toBe("200");
    expect(await opened("agent-a", "one-more.mint.localhost")).toBe(
      "CONNECT refused: HTTP/1.1 429 Too Many Requests",
    );
    // Already minted: no mint, so no refusal.
    expect(await opened("agent-a", hosts[0]!)).toBe("200");
    // agent-b's mints are its own (and the host agent-a was refused is minted for it).
    expect(await opened("agent-b", "one-more.mint.localhost", "127.0.0.5")).toBe("200");
    const [line] = (await audit()).filter(
      (l) => l.agent === "agent-a" && l.reason === "certificate mint rate exceeded (new hosts)",
    );
    expect(line).toMatchObject({ method: "CONNECT", host: "one-more.mint.localhost", status: 429 });
  });
});

describe("the digest at shutdown", () => {
  test("writes what it counted: every refusal is in the audit log, as a line or in one's `repeated`", async () => {
    const own = await startHarness({
      agents: ["agent-a"],
      env: { SLAPENIR_RATE_LIMIT: "1/s,burst=3", SLAPENIR_HANDSHAKE_RATE: "off" },
      rateClock: () => 0,
    });
    const tries = 9;
    try {
      for (let i = 0; i < tries; i++) {
        const s = await openProxyConnection({
          port: own.port,
          caBundlePath: own.caBundlePath,
          agent: own.agents["agent-a"]!,
        });
        await exchangeRaw(s, "CONNECT denied.example:443 HTTP/1.1\r\nHost: x\r\n\r\n", ["CONNECT"]);
        s.destroy();
      }
      // Before shutdown: one line per kind.
      await own.settled();
      const before = own.auditLines.filter((l) => l.includes('"method":"CONNECT"'));
      expect(before).toHaveLength(2);
    } finally {
      await own.close();
    }
    const lines = own.auditLines
      .map((l) => JSON.parse(l) as { method?: string; status?: number; repeated?: number })
      .filter((l) => l.method === "CONNECT");
    const total = (status: number) =>
      // A summary line stands for the `repeated` refusals after the first line of its kind.
      lines.filter((l) => l.status === status).reduce((n, l) => n + (l.repeated ?? 1), 0);
    expect(total(403)).toBe(3);
    expect(total(429)).toBe(tries - 3);
  });
});
