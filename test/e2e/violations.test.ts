// Violations and reflections are audited and counted per agent (issue 15, class 3): another
// agent's dummy in a request (it was read from somewhere they share), a request the rules deny
// on a host a credential is bound to, and — on the upstream's side — real values an upstream
// sent back (redacted), so an operator sees an echoing upstream. Quarantine is off here: these
// kinds are signals, and the DLP kind's quarantine has its own test (quarantine.test.ts).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { join } from "node:path";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const A_DUMMY = "sk-dummy-agent-a-000000000000000001";
const A_REAL = "sk-R3aL-agent-a-9f8e7d6c5b4a39281";

let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness({
    agents: ["agent-a", "agent-b"],
    allow: ["GET|POST localhost:*/api/**"],
    credentials: [
      { name: "a-only", dummy: A_DUMMY, real: A_REAL, hosts: ["localhost:*"], agents: ["agent-a"] },
    ],
    env: { SLAPENIR_RATE_LIMIT: "off", SLAPENIR_QUARANTINE: "off" },
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

const url = (path: string) => `https://localhost:${up.port}${path}`;

const metric = (line: string) => h.metric(line);

describe("violations", () => {
  test("another agent's dummy: it travels as the dummy, and is audited once per window, counted each time", async () => {
    for (let i = 0; i < 3; i++) {
      const r = await h.curl(["-H", `Authorization: Bearer ${A_DUMMY}`, url("/api/x")], "agent-b");
      expect(r.status).toBe(200);
    }
    expect(up.received.at(-1)!.headers).toContainEqual(["authorization", `Bearer ${A_DUMMY}`]);
    expect(await metric(`slapenir_violations_total{agent="agent-b",kind="foreign-dummy"}`)).toBe(3);
    const lines = await h.auditWhere((l) => l.evt === "violation" && l.kind === "foreign-dummy");
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatchObject({ agent: "agent-b", host: "localhost", port: up.port });
  });

  test("another agent's dummy in a request body: forwarded as written, counted", async () => {
    const counter = `slapenir_violations_total{agent="agent-b",kind="foreign-dummy"}`;
    const before = await metric(counter);
    const body = JSON.stringify({ note: `pasted from a shared file: ${A_DUMMY}` });
    const r = await h.curl(
      ["-H", "content-type: application/json", "--data-binary", body, url("/api/notes")],
      "agent-b",
    );
    expect(r.status).toBe(200);
    expect(Buffer.from(up.received.at(-1)!.body).toString()).toBe(body);
    expect(await metric(counter)).toBe(before + 1);
  });

  test("another agent's dummy in a streamed request body (chunked, 300 KB): forwarded as written, counted", async () => {
    const counter = `slapenir_violations_total{agent="agent-b",kind="foreign-dummy"}`;
    const before = await metric(counter);
    const body = `${"x".repeat(150_000)} ${A_DUMMY} ${"y".repeat(150_000)}`;
    const file = join(h.dir, "streamed-body.txt");
    await Bun.write(file, body);
    const r = await h.curl(
      ["-H", "transfer-encoding: chunked", "--data-binary", `@${file}`, url("/api/upload")],
      "agent-b",
    );
    expect(r.status).toBe(200);
    expect(Buffer.from(up.received.at(-1)!.body).toString()).toBe(body);
    expect(await metric(counter)).toBe(before + 1);
  });

  test("a request the rules deny on a bound host", async () => {
    const r = await h.curl(["-X", "DELETE", url("/api/x")], "agent-b");
    expect(r.status).toBe(403);
    expect(await metric(`slapenir_violations_total{agent="agent-b",kind="rules"}`)).toBe(1);
    await h.auditWhere((l) => l.evt === "violation" && l.kind === "rules" && l.agent === "agent-b");
  });

  test("the agent's own dummy where it belongs is no violation", async () => {
    const r = await h.curl(["-H", `Authorization: Bearer ${A_DUMMY}`, url("/api/own")], "agent-a");
    expect(r.status).toBe(200);
    expect(await metric(`slapenir_violations_total{agent="agent-a",kind="foreign-dummy"}`)).toBe(0);
  });
});

describe("reflections", () => {
  test("an upstream echoing the real value: redacted for the agent, audited and counted as a reflection", async () => {
    const reflected = `slapenir_violations_total{agent="agent-a",kind="reflection"}`;
    const before = await metric(reflected);
    const r = await h.curl(["-H", `Authorization: Bearer ${A_DUMMY}`, url("/api/echo")], "agent-a");
    expect(r.status).toBe(200);
    expect(r.body.toString()).not.toContain(A_REAL);
    expect(r.body.toString()).toContain("[REDACTED]");
    const [line] = await h.auditWhere((l) => l.evt === "violation" && l.kind === "reflection");
    expect(line).toMatchObject({ agent: "agent-a", host: "localhost", port: up.port });
    expect(line!.redactions).toBeGreaterThan(0);
    expect(await metric(reflected)).toBe(before + 1);
    expect(JSON.stringify(h.auditLines)).not.toContain(A_REAL);
  });
});
