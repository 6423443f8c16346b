// `slapenir agent revoke NAME` against a running proxy (issue 18): the CLI records the agent's
// certificate serial in SLAPENIR_HOME/revoked.json and asks the proxy's admin API to reload its
// policy, so the revocation is in force at once — the agent's open tunnel closes, a new
// connection is refused, another agent is served — with no restart. A revocations file that
// does not read is refused with its error and the running policy stays.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { loadLivePolicy } from "../../src/config/proxy-config.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import {
  openProxyConnection,
  openTunnel,
  readToClose,
  readUntilClosed,
} from "../support/raw-agent.ts";
import { runProcess } from "../support/run-process.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const CLI = join(import.meta.dir, "../../src/cli.ts");
let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness({ agents: ["agent-a", "agent-b"], env: { SLAPENIR_RATE_LIMIT: "off" } });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

const cli = (args: string[]) =>
  runProcess(["bun", CLI, ...args], {
    env: {
      PATH: process.env.PATH ?? "",
      SLAPENIR_HOME: dirname(h.caBundlePath),
      SLAPENIR_ADMIN_LISTEN: `127.0.0.1:${h.proxy.adminPort}`,
    },
  });

test("agent revoke: in force at once in the running proxy, recorded for the next start", async () => {
  const target = `localhost:${up.port}`;
  const tunnel = await openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
    { connect: target },
  );
  const closed = readUntilClosed(tunnel);
  const r = await cli(["agent", "revoke", "agent-a"]);
  expect(r.err).toBe("");
  expect(r.code).toBe(0);
  expect(r.out).toMatch(/^revoked agent-a \(serial [0-9a-f]+\) in .*revoked\.json$/m);
  expect(r.out).toContain("in force in the running proxy: 1 connection(s) closed");
  expect(await closed).not.toBeNull();
  // A new connection as agent-a is refused — told why, in HTTP, not reset; agent-b is served.
  const again = await h.curl([`https://${target}/after`], "agent-a");
  expect(again.stderr).toContain("CONNECT tunnel failed, response 403");
  const raw = await openProxyConnection({
    port: h.port,
    caBundlePath: h.caBundlePath,
    agent: h.agents["agent-a"]!,
  });
  const told = (await readToClose(raw)).toString("latin1");
  expect(told).toStartWith("HTTP/1.1 403 Forbidden\r\n");
  expect(told).toContain(
    'proxy-status: slapenir; error=http_request_denied; details="identity-refused: ',
  );
  const b = await h.curl([`https://${target}/b`], "agent-b");
  expect(b.status).toBe(200);
  expect(up.received.some((x) => x.target === "/after")).toBe(false);
  // The list says so; revoking again changes nothing.
  expect((await cli(["agent", "list"])).out).toMatch(/^ {2}agent-a .* revoked$/m);
  expect((await cli(["agent", "revoke", "agent-a"])).out).toContain("was already revoked");
  const reloads = await h.auditWhere((l) => l.evt === "reload" && l.what === "policy");
  expect(reloads.length).toBeGreaterThan(0);
  // A proxy started later reads the same denial from the file.
  const serial = /serial ([0-9a-f]+)/.exec(r.out)![1]!;
  const next = loadLivePolicy({ SLAPENIR_HOME: dirname(h.caBundlePath) }, "/");
  expect(next.deny.serials).toContain(serial);
});

test("a revocations file that does not read: the reload is refused with its error, the running policy stays", async () => {
  const file = join(dirname(h.caBundlePath), "revoked.json");
  await writeFile(file, "{not json");
  const r = await h.adminPost("/policy/reload");
  expect(r.status).toBe(400);
  expect(((await r.json()) as { error: string }).error).toContain("is not valid JSON");
  // agent-b still served, agent-a still refused (the policy in force did not change).
  expect((await h.curl([`https://localhost:${up.port}/b2`], "agent-b")).status).toBe(200);
  expect((await h.curl([`https://localhost:${up.port}/a2`], "agent-a")).status).not.toBe(200);
});

test("reload: what SIGHUP reloads, through the admin API, all or nothing", async () => {
  const file = join(dirname(h.caBundlePath), "revoked.json");
  await writeFile(file, "{not json");
  const bad = await cli(["reload"]);
  expect(bad.code).toBe(1);
  // Named with its file (the CLI reads the configuration as the proxy would, first).
  expect(bad.err).toContain("revoked.json is not valid JSON");
  await writeFile(file, JSON.stringify({ revoked: [] }));
  const before = (await h.auditWhere((l) => l.evt === "reload", 0)).length;
  const ok = await cli(["reload"]);
  expect(ok).toMatchObject({ code: 0, err: "" });
  // One reload, all or nothing, naming what changed: agent-a's certificate no longer revoked.
  expect(ok.out).toContain("reloaded: changed denyCertificates");
  const lines = await h.auditWhere((l) => l.evt === "reload", before + 1);
  expect(lines.at(-1)).toMatchObject({
    msg: "configuration reloaded",
    changed: "denyCertificates",
  });
  expect((await h.curl([`https://localhost:${up.port}/a3`], "agent-a")).status).toBe(200);
});
