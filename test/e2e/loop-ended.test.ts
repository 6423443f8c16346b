// An event loop Worker that ends unasked (issue 19). Its connections are gone with it and what it
// held in the shared tables cannot be given back, so the proxy is told (main.ts then stops it,
// exit 70, for its supervisor to start it again clean). Until it stops, the loops left serve
// their agents and every new connection, swapping and redacting as before, and the proxy still
// closes cleanly.

import { afterAll, beforeAll, expect, test } from "bun:test";
import type tls from "node:tls";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, exchangeRaw, openTunnel, readUntilClosed } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-ended-00000000000000";
const REAL = "sk-real-ended-5c1e9a7b3d20f4";

let h: Harness;
let up: EchoServer;
const ended: { index: number; reason: string }[] = [];
let endedOnce: () => void;
const endedSeen = new Promise<void>((r) => {
  endedOnce = r;
});

beforeAll(async () => {
  h = await startHarness({
    agents: ["agent-a"],
    allow: [],
    configYaml: `allow: ["localhost:*"]\nloops: 2\ncredentials:
  - name: model-api
    dummy: ${DUMMY}
    real: ${REAL}
    hosts: ["localhost:*"]
    in: [header:x-api-key]
`,
    onLoopEnded: (index, reason) => {
      ended.push({ index, reason });
      endedOnce();
    },
  });
  // Echoes what it received, the real value included: the proxy must redact it on the way back.
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

const tunnel = () =>
  openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
    { connect: `localhost:${up.port}` },
  );
const ask = async (t: tls.TLSSocket, path: string) =>
  (
    await exchangeRaw(
      t,
      `GET ${path} HTTP/1.1\r\nHost: localhost:${up.port}\r\nx-api-key: ${DUMMY}\r\n\r\n`,
    )
  ).toString("latin1");

test("a loop that ends is reported once; the other loop keeps its agents and takes every new one", async () => {
  // Tunnels until each loop holds some (the kernel spreads them by their addresses): which loop
  // holds one is in its connection number, odd in the first loop, even in the second.
  const tunnels: tls.TLSSocket[] = [];
  const loopOf = new Map<string, number>();
  while (tunnels.length < 12 || new Set(loopOf.values()).size < 2) {
    const i = tunnels.length;
    const t = await tunnel();
    tunnels.push(t);
    expect(await ask(t, `/before/${i}`)).toStartWith("HTTP/1.1 200");
    const [line] = await h.auditWhere((l) => l.evt === "request" && l.path === `/before/${i}`);
    loopOf.set(`/before/${i}`, (Number(line!.conn) + 1) % 2);
  }
  const inSecond = tunnels.filter((_, i) => loopOf.get(`/before/${i}`) === 1);
  const closed = inSecond.map((t) => readUntilClosed(t));

  h.proxy.crashLoopForTest(1);
  await endedSeen;
  expect(ended).toEqual([{ index: 1, reason: "event loop worker exited" }]);
  const exited = await h.auditWhere((l) => l.evt === "loop-exited");
  expect(exited).toHaveLength(1);
  expect(exited[0]).toMatchObject({ loop: 1 });
  // The second loop's connections are gone with it; the first loop's still answer.
  await Promise.all(closed);
  for (const [i, t] of tunnels.entries()) {
    if (loopOf.get(`/before/${i}`) !== 0) continue;
    const a = await ask(t, `/after/${i}`);
    expect(a).toStartWith("HTTP/1.1 200");
    expect(a).not.toContain(REAL);
  }
  // The kernel gives every new connection to the loop still listening.
  const fresh = await Promise.all(Array.from({ length: 10 }, () => tunnel()));
  const answers = await Promise.all(fresh.map((t, i) => ask(t, `/new/${i}`)));
  for (const a of answers) {
    expect(a).toStartWith("HTTP/1.1 200");
    expect(a).not.toContain(REAL);
  }
  const got = up.received.filter((r) => r.target.startsWith("/new/"));
  expect(got).toHaveLength(10);
  for (const r of got) expect(r.headers).toContainEqual(["x-api-key", REAL]);
  for (const t of [...tunnels, ...fresh]) closeTunnel(t);
  expect(ended).toHaveLength(1);
  expect(JSON.stringify(h.auditLines)).not.toContain(REAL);
});
