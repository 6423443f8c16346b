// Several event loops (issue 19): Workers listening on one port, the kernel spreading agent
// connections over them. What must not depend on which loop an agent's connection landed in is
// tried through the real proxy: swapping and redaction in every loop, one audit stream with a
// line per exchange, quarantine decided once and enforced in every loop, a reload reaching every
// loop all or nothing, and /metrics counting every loop's traffic.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type tls from "node:tls";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import {
  closeTunnel,
  connectAnswer,
  exchangeRaw,
  openProxyConnection,
  openTunnel,
  proxyErrorCode,
  readAnswers,
} from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-loops-00000000000000";
const REAL = "sk-real-loops-7d41c09e2b6fa3";
const DUMMY2 = "sk-dummy-loops-22222222222222";
const REAL2 = "sk-real-loops-2e9b5c7a1f0d64";

let h: Harness;
let up: EchoServer;
let file: string;

const yaml = (extra = "") =>
  `allow: ["localhost:*"]\nloops: 2\nrateLimit: "off"\nquarantine: "on"\ncredentials:
  - name: model-api
    dummy: ${DUMMY}
    real: ${REAL}
    hosts: ["localhost:*"]
    in: [header:x-api-key]
${extra}`;

beforeAll(async () => {
  h = await startHarness({
    agents: ["agent-a", "agent-b"],
    allow: [],
    configYaml: yaml(),
    env: { SLAPENIR_QUARANTINE: "" },
  });
  file = join(h.dir, "slapenir.yaml");
  // Echoes what it received, the real value included: the proxy must redact it on the way back.
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

const agentOpts = (agent: string) => ({
  port: h.port,
  caBundlePath: h.caBundlePath,
  agent: h.agents[agent]!,
});
const tunnel = (agent = "agent-a") =>
  openTunnel(agentOpts(agent), { connect: `localhost:${up.port}` });
const ask = async (t: tls.TLSSocket, path: string, key = DUMMY) =>
  (
    await exchangeRaw(
      t,
      `GET ${path} HTTP/1.1\r\nHost: localhost:${up.port}\r\nx-api-key: ${key}\r\n\r\n`,
    )
  ).toString("latin1");
/** The request lines so far, every loop's included (they reach this thread as messages). */
const requestLines = async () => {
  await h.settled();
  return h.auditLines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.evt === "request");
};

describe("two event loops", () => {
  test("the proxy says how many loops serve", async () => {
    expect(h.proxy.loops).toBe(2);
    const start = await h.auditWhere((l) => l.evt === "start");
    expect(start[0]).toMatchObject({ loops: 2 });
  });

  test("connections land in both loops; each swaps the dummy and redacts the echoed value", async () => {
    const before = (await requestLines()).length;
    const tunnels = await Promise.all(Array.from({ length: 24 }, () => tunnel()));
    const answers = await Promise.all(tunnels.map((t, i) => ask(t, `/spread/${i}`)));
    for (const t of tunnels) closeTunnel(t);
    for (const a of answers) {
      expect(a).toStartWith("HTTP/1.1 200");
      expect(a).not.toContain(REAL);
    }
    const got = up.received.filter((r) => r.target.startsWith("/spread/"));
    expect(got).toHaveLength(24);
    for (const r of got) expect(r.headers).toContainEqual(["x-api-key", REAL]);
    // One line per exchange, in one stream; connection numbers say the loop (odd: the first).
    const lines = await h.auditWhere(
      (l) => l.evt === "request" && String(l.path).startsWith("/spread/"),
      24,
    );
    expect((await requestLines()).length - before).toBe(24);
    const loopsSeen = new Set(lines.map((l) => Number(l.conn) % 2));
    expect(loopsSeen).toEqual(new Set([0, 1]));
    expect(JSON.stringify(h.auditLines)).not.toContain(REAL);
  });

  test("a host's leaf is minted once for the proxy: every loop presents the same one", async () => {
    const serials = new Map<number, Set<string>>();
    for (let i = 0; i < 40 && (serials.size < 2 || i < 8); i++) {
      const t = await tunnel();
      const serial = t.getPeerCertificate().serialNumber;
      expect(await ask(t, `/leaf/${i}`)).toStartWith("HTTP/1.1 200");
      closeTunnel(t);
      const [line] = await h.auditWhere((l) => l.evt === "request" && l.path === `/leaf/${i}`);
      const loop = Number(line!.conn) % 2;
      serials.set(loop, (serials.get(loop) ?? new Set()).add(serial));
    }
    expect(serials.size).toBe(2);
    expect(new Set([...serials.values()].flatMap((s) => [...s])).size).toBe(1);
  });

  test("/metrics counts the exchanges of every loop", async () => {
    const swapsBefore = await h.metric(
      'slapenir_swaps_total{agent="agent-a",credential="model-api"}',
    );
    const tunnels = await Promise.all(Array.from({ length: 10 }, () => tunnel()));
    await Promise.all(tunnels.map((t, i) => ask(t, `/count/${i}`)));
    for (const t of tunnels) closeTunnel(t);
    expect(await h.metric('slapenir_swaps_total{agent="agent-a",credential="model-api"}')).toBe(
      swapsBefore + 10,
    );
  });

  test("a credential added by a reload is swapped in every loop", async () => {
    writeFileSync(
      file,
      yaml(
        `  - name: second\n    dummy: ${DUMMY2}\n    real: ${REAL2}\n    hosts: ["localhost:*"]\n    in: [header:x-api-key]\n`,
      ),
    );
    const report = await h.proxy.reload();
    expect(report.credentials.added).toEqual(["second"]);
    const tunnels = await Promise.all(Array.from({ length: 12 }, () => tunnel()));
    const answers = await Promise.all(tunnels.map((t, i) => ask(t, `/second/${i}`, DUMMY2)));
    for (const t of tunnels) closeTunnel(t);
    for (const a of answers) expect(a).not.toContain(REAL2);
    const got = up.received.filter((r) => r.target.startsWith("/second/"));
    expect(got).toHaveLength(12);
    for (const r of got) expect(r.headers).toContainEqual(["x-api-key", REAL2]);
  });

  test("a violation in one loop quarantines the agent in every loop; others are served", async () => {
    const tunnels = await Promise.all(Array.from({ length: 8 }, () => tunnel("agent-a")));
    const closed = tunnels.map((t) => new Promise<void>((r) => t.once("close", () => r())));
    // A real value in a request: DLP refuses it, and the agent goes into quarantine.
    const hit = await ask(tunnels[0]!, "/leak", REAL);
    expect(hit).toStartWith("HTTP/1.1 403");
    await Promise.all(closed);
    const a = await connectAnswer(agentOpts("agent-a"), `localhost:${up.port}`);
    expect(`${a.status} ${a.error}`).toBe("403 quarantined");
    // Whichever loop a new connection of agent-a lands in refuses it.
    for (let i = 0; i < 6; i++) {
      const again = await connectAnswer(agentOpts("agent-a"), `localhost:${up.port}`);
      expect(again.status).toBe(403);
    }
    const b = await tunnel("agent-b");
    expect(await ask(b, "/b")).toStartWith("HTTP/1.1 200");
    closeTunnel(b);
    // Released by the operator: served again, in any loop.
    expect((await h.adminPost("/quarantine/agent-a/release")).status).toBe(200);
    const back = await Promise.all(Array.from({ length: 6 }, () => tunnel("agent-a")));
    for (const t of back) {
      expect(await ask(t, "/back")).toStartWith("HTTP/1.1 200");
      closeTunnel(t);
    }
  });
});

// Counted once for the proxy, whichever loop a connection landed in: with counts per loop, 20
// connections spread over two loops would pass a cap of 3 (or a burst of 6) in each — that a
// loop got fewer than 3 (6) of them has odds under 1 in 2,000 (under 1 in 40).
describe("caps and rates across two loops", () => {
  let g: Harness;
  beforeAll(async () => {
    g = await startHarness({
      agents: ["capped", "rated"],
      allow: [],
      configYaml: `allow: ["localhost:*"]\nloops: 2\nrateLimit: "1/m,burst=6"\nlimits:\n  maxAgentConnections: 3\n`,
    });
  });
  afterAll(async () => {
    await g?.close();
  });
  const opts = (agent: string) => ({
    port: g.port,
    caBundlePath: g.caBundlePath,
    agent: g.agents[agent]!,
  });
  const target = () => `localhost:${up.port}`;

  test("an agent's connection cap counts its connections in every loop", async () => {
    const held: tls.TLSSocket[] = [];
    const refused: string[] = [];
    for (let i = 0; i < 20; i++) {
      const s = await openProxyConnection(opts("capped"));
      const head = (
        await exchangeRaw(s, `CONNECT ${target()} HTTP/1.1\r\nHost: ${target()}\r\n\r\n`, [
          "CONNECT",
        ])
      ).toString("latin1");
      if (head.startsWith("HTTP/1.1 200")) held.push(s);
      else {
        refused.push(proxyErrorCode(head) ?? head.split("\r\n")[0]!);
        s.destroy();
      }
    }
    expect(held).toHaveLength(3);
    expect(new Set(refused)).toEqual(new Set(["connection-limit"]));
    for (const s of held) closeTunnel(s);
  });

  test("an agent's request bucket is one, whichever loop takes from it", async () => {
    const answers: string[] = [];
    for (let i = 0; i < 20; i++) {
      const a = await connectAnswer(opts("rated"), target());
      answers.push(a.status === 200 ? "200" : `${a.status} ${a.error}`);
    }
    expect(answers.filter((a) => a === "200")).toHaveLength(6);
    expect(new Set(answers.filter((a) => a !== "200"))).toEqual(new Set(["429 rate-limited"]));
  });
});

describe("the shared port", () => {
  test("held by another listener, even one that shares its port: refused as for one loop, naming it", async () => {
    const net = await import("node:net");
    for (const reusePort of [false, true]) {
      const other = net.createServer();
      await new Promise<void>((r) => other.listen({ host: "127.0.0.1", port: 0, reusePort }, r));
      const port = (other.address() as { port: number }).port;
      const err = await startHarness({
        allow: ["localhost:*"],
        env: { SLAPENIR_LOOPS: "2", SLAPENIR_LISTEN: `127.0.0.1:${port}` },
      }).then(
        async (g) => {
          await g.close();
          return null;
        },
        (e: Error) => e.message,
      );
      other.close();
      expect(err).toBe(
        `SLAPENIR_LISTEN: cannot listen on 127.0.0.1:${port}: the address is already in use (another proxy, or another service on that port); choose another with SLAPENIR_LISTEN`,
      );
    }
  });
});

// A DLP refusal confirms a guess; quarantine makes the first one the last answer. With several
// loops, requests in flight in the other loops would each be answered before the main thread
// heard of the first (an attacker's review: 3 to 24 answers for 24 hits at once).
describe("quarantine across two loops under parallel probes", () => {
  test("24 hits at once, one per connection: exactly one is answered, every time", async () => {
    await using g = await startHarness({
      agents: ["agent-a"],
      allow: [],
      configYaml: yaml(),
      env: { SLAPENIR_QUARANTINE: "" },
      loops: 2,
    });
    const opts = { port: g.port, caBundlePath: g.caBundlePath, agent: g.agents["agent-a"]! };
    for (let round = 0; round < 3; round++) {
      if (round > 0) expect((await g.adminPost("/quarantine/agent-a/release")).status).toBe(200);
      const ts = await Promise.all(
        Array.from({ length: 24 }, () => openTunnel(opts, { connect: `localhost:${up.port}` })),
      );
      const answers = ts.map((t) => readAnswers(t));
      for (const [i, t] of ts.entries()) {
        t.write(`GET /p${i} HTTP/1.1\r\nHost: localhost:${up.port}\r\nx-api-key: ${REAL}\r\n\r\n`);
      }
      const got = (await Promise.all(answers)).map((b) => b.toString("latin1"));
      expect(got.filter((a) => a.startsWith("HTTP/1.1 403"))).toHaveLength(1);
      expect(got.filter((a) => a.startsWith("HTTP/1.1 "))).toHaveLength(1);
      for (const t of ts) closeTunnel(t);
    }
  });
});
