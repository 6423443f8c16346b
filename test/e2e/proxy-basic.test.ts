// End-to-end: curl as the agent, through the real proxy (in-process), to a loopback HTTPS
// upstream with its own CA. Checks the normal path: mTLS, CONNECT interception, policy,
// credential swap on bound hosts only, redaction of everything that comes back, audit.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-0000000000000000000000000001";
const REAL = "sk-real-9f8e7d6c5b4a39281706f5e4d3c2b1a0";

let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness({
    credentials: [
      {
        name: "openai",
        dummy: DUMMY,
        real: REAL,
        hosts: ["localhost:*"],
        in: ["header:authorization", "query:token", "body"],
      },
    ],
    allow: ["localhost:*", "127.0.0.1:*"],
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost", "127.0.0.1"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

describe("normal path", () => {
  test("GET through an intercepted tunnel reaches the upstream and returns", async () => {
    const r = await h.curl([`https://localhost:${up.port}/hello?x=1`]);
    expect(r.stderr).toBe("");
    expect(r.status).toBe(200);
    const echo = JSON.parse(r.body.toString());
    expect(echo.target).toBe("/hello?x=1");
  });

  test("the bound host receives the real value; the agent gets it back redacted", async () => {
    const before = up.received.length;
    const r = await h.curl([
      "-H",
      `Authorization: Bearer ${DUMMY}`,
      "--data-binary",
      `{"key":"${DUMMY}"}`,
      `https://localhost:${up.port}/v1/chat?token=${DUMMY}`,
    ]);
    expect(r.status).toBe(200);
    const got = up.received[before]!;
    expect(got.headers).toContainEqual(["authorization", `Bearer ${REAL}`]);
    expect(Buffer.from(got.body).toString()).toBe(`{"key":"${REAL}"}`);
    expect(got.target).toBe(`/v1/chat?token=${REAL}`);
    // The echo carries the real value three times; the agent sees none of it.
    expect(r.body.toString()).not.toContain(REAL);
    expect(r.body.toString()).toContain("[REDACTED]");
  });

  test("an unbound host receives the dummy, never the real value", async () => {
    const before = up.received.length;
    const r = await h.curl([
      "-H",
      `Authorization: Bearer ${DUMMY}`,
      `https://127.0.0.1:${up.port}/exfil?t=${DUMMY}`,
    ]);
    expect(r.status).toBe(200);
    const got = up.received[before]!;
    expect(got.headers).toContainEqual(["authorization", `Bearer ${DUMMY}`]);
    expect(got.target).toBe(`/exfil?t=${DUMMY}`);
  });

  test("a denied destination gets 403 and is never dialled", async () => {
    const r = await h.curl([`https://denied.example:${up.port}/`]);
    expect(r.code).not.toBe(0);
    expect(r.stderr).toContain("403");
  });

  test("no client certificate: refused at the handshake", async () => {
    const { curl } = await import("../support/proxy-harness.ts");
    const r = await curl(h.port, h.caBundlePath, undefined, [`https://localhost:${up.port}/`]);
    expect(r.code).not.toBe(0);
    expect(r.status).toBe(0);
  });

  test("audit lines carry the agent and never a secret", async () => {
    await h.settled();
    const joined = h.auditLines.join("\n");
    expect(joined).toContain('"agent":"agent-a"');
    expect(joined).not.toContain(REAL);
    expect(joined).not.toContain(DUMMY);
  });
});
