// Request heads through the real proxy: a refused HEAD is answered (without a body) and
// audited like any request; lower-case spellings of known methods are refused (an upstream may
// read `head` as HEAD and frame differently, `trace` as TRACE and echo credentials); an
// HTTP/1.0 request without Host reaches the HTTP/1.1 upstream with one.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { exchangeRaw, openProxyConnection, openTunnel } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "dummy-heads-0000000000000000000000001";
const REAL = "real-heads-8d7c6b5a4f3e2d1c0b9a8f7e6d";

let h: Harness;
let up: EchoServer;
let plain: ReturnType<typeof Bun.serve>;
const plainSeen: { host: string | null }[] = [];

beforeAll(async () => {
  h = await startHarness({
    credentials: [{ name: "svc", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] }],
    allow: ["localhost:*"],
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
  plain = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    fetch(req) {
      plainSeen.push({ host: req.headers.get("host") });
      return new Response("plain ok");
    },
  });
});

afterAll(async () => {
  plain?.stop(true);
  await up?.stop();
  await h?.close();
});

const agentOpts = () => ({
  port: h.port,
  caBundlePath: h.caBundlePath,
  agent: h.agents["agent-a"]!,
});
/** The request lines so far, every loop's included (they reach this thread as messages). */
const audits = async () => {
  await h.settled();
  return h.auditLines.map((l) => JSON.parse(l)).filter((l) => l.evt === "request") as {
    method: string;
    status: number;
    decision: string;
    host: string;
  }[];
};

describe("request heads: refused, completed and audited", () => {
  test("a denied HEAD is answered 403 and audited", async () => {
    const before = (await audits()).length;
    const conn = await openProxyConnection(agentOpts());
    const reply = await exchangeRaw(
      conn,
      "HEAD http://denied.example/x HTTP/1.1\r\nHost: denied.example\r\n\r\n",
      ["HEAD"],
    );
    conn.destroy();
    expect(reply.toString("latin1")).toStartWith("HTTP/1.1 403");
    const added = (await audits()).slice(before);
    expect(added.map((a) => [a.method, a.status, a.decision])).toContainEqual([
      "HEAD",
      403,
      "deny",
    ]);
  });

  test("a HEAD carrying a real value is blocked and audited", async () => {
    const before = (await audits()).length;
    const t = await openTunnel(agentOpts(), { connect: `localhost:${up.port}` });
    const reply = await exchangeRaw(
      t,
      `HEAD /?k=${REAL} HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`,
      ["HEAD"],
    );
    t.destroy();
    expect(reply.toString("latin1")).toStartWith("HTTP/1.1 403");
    expect(
      (await audits()).slice(before).some((a) => a.method === "HEAD" && a.status === 403),
    ).toBe(true);
  });

  for (const method of ["head", "trace", "Get"]) {
    test(`"${method}" (a known method in the wrong case) is refused with 400`, async () => {
      const seen = up.received.length;
      const t = await openTunnel(agentOpts(), { connect: `localhost:${up.port}` });
      const reply = await exchangeRaw(
        t,
        `${method} / HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`,
      );
      t.destroy();
      expect(reply.toString("latin1")).toStartWith("HTTP/1.1 400");
      expect(up.received.length).toBe(seen);
    });
  }

  test("an HTTP/1.0 request without Host reaches the upstream with one", async () => {
    const conn = await openProxyConnection(agentOpts());
    const reply = await exchangeRaw(conn, `GET http://localhost:${plain.port}/ HTTP/1.0\r\n\r\n`);
    conn.destroy();
    expect(reply.toString("latin1")).toStartWith("HTTP/1.1 200");
    expect(plainSeen.at(-1)).toEqual({ host: `localhost:${plain.port}` });
  });
});
