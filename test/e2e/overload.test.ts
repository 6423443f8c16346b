// Overload sheds new work, not accepted work (issue 19, item 2): while the proxy's event loop
// is late (guard/load-shed.ts decides; the test sets its verdict instead of loading the
// machine), a new tunnel is answered 503 at once with a Proxy-Status the agent can read — no
// leaf minted, no upstream dialled — and the tunnels already open keep being served.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, connectAnswer, exchangeRaw, openTunnel } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

let h: Harness;
let up: EchoServer;
let overloaded = false;

beforeAll(async () => {
  h = await startHarness({ shedding: () => overloaded });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

test("a new tunnel is refused 503 while overloaded; an open one goes on; then tunnels open again", async () => {
  const o = { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! };
  const open = await openTunnel(o, { connect: `localhost:${up.port}` });
  const get = (path: string) =>
    exchangeRaw(open, `GET ${path} HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`).then((b) =>
      b.toString("latin1"),
    );
  expect(await get("/before")).toStartWith("HTTP/1.1 200");

  overloaded = true;
  const dialled = up.received.length;
  expect(await connectAnswer(o, `localhost:${up.port}`)).toEqual({
    status: 503,
    error: "overloaded",
  });
  const r = await h.curl([`https://localhost:${up.port}/shed`]);
  expect(r.status).toBe(0); // curl: the CONNECT was answered 503
  expect(r.stderr).toContain("503");
  expect(await get("/during")).toStartWith("HTTP/1.1 200");
  expect(up.received.length).toBe(dialled + 1); // only the open tunnel's request arrived
  const [line] = await h.auditWhere(
    (l) => l.reason === "the proxy is overloaded: retry in a moment",
  );
  expect(line).toMatchObject({ method: "CONNECT", status: 503, decision: "error" });
  expect(
    await h.metric(
      'slapenir_requests_total{agent="agent-a",decision="error",status="5xx",reason="overloaded"}',
    ),
  ).toBeGreaterThan(0);

  overloaded = false;
  expect((await h.curl([`https://localhost:${up.port}/after`])).status).toBe(200);
  closeTunnel(open);
});
