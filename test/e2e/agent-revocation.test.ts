// Revocation by identity (issue 21, item 4). A denylist entry names an agent, or one of its
// certificates by serial or fingerprint; it is part of the live policy, so a reload puts it in
// force at once: the agent's open connections close, tunnels and all, and no certificate naming
// it is accepted — a renewal (new serial, same name) included. Every audit line about an
// authenticated agent carries its certificate's serial, so the line of a misbehaving agent says
// what to deny. A certificate that expires while its connection is open is caught the same way.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type tls from "node:tls";
import { normalizeSerialHex, x509 } from "../../src/pki/x509.ts";
import { type AgentFiles, curl, type Harness, startHarness } from "../support/proxy-harness.ts";
import { startProxyProcess } from "../support/proxy-process.ts";
import { exchangeRaw, openTunnel } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

let h: Harness;
let up: EchoServer;
let dir: string;
let policyPath: string;
/** How far the identity clock runs ahead of the wall clock (certificate expiry). */
let aheadMs = 0;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "slapenir-revoke-"));
  policyPath = join(dir, "policy.json");
  await writeFile(policyPath, "{}");
  h = await startHarness({
    agents: ["agent-a", "agent-b"],
    env: { SLAPENIR_POLICY: policyPath, SLAPENIR_RATE_LIMIT: "off" },
    identityClock: () => new Date(Date.now() + aheadMs),
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
  await rm(dir, { recursive: true, force: true });
});

const policy = (doc: unknown) => writeFile(policyPath, JSON.stringify(doc));

async function serialOf(agent: AgentFiles): Promise<string> {
  const pem = await readFile(agent.certPath, "utf8");
  return normalizeSerialHex(new x509.X509Certificate(pem).serialNumber);
}

/** A renewal: another certificate for the same agent name, from the same CA. */
async function renew(name: string, tag: string): Promise<AgentFiles> {
  const issued = await h.ca.issueAgentCert(name, { outDir: join(dir, tag) });
  return { name, certPath: issued.certPath, keyPath: issued.keyPath };
}

const tunnelFor = (agent: AgentFiles) =>
  openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent },
    { connect: `localhost:${up.port}` },
  );

async function get(t: tls.TLSSocket, path: string): Promise<string> {
  const reply = await exchangeRaw(t, `GET ${path} HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`);
  return reply.toString("latin1").split("\r\n")[0]!;
}

/** Resolves when the socket has closed (the agent's side of a connection the proxy ended). */
const closed = (s: tls.TLSSocket) =>
  new Promise<void>((resolve) => {
    if (s.destroyed) resolve();
    else s.once("close", () => resolve());
  });

const viaCurl = (agent: AgentFiles, path: string) =>
  curl(h.port, h.caBundlePath, agent, [`https://localhost:${up.port}${path}`]);

describe("denying an agent by name", () => {
  test("its open tunnels close at once; no certificate naming it gets in, a renewal included; others are untouched", async () => {
    const a = h.agents["agent-a"]!;
    const b = h.agents["agent-b"]!;
    const ta = await tunnelFor(a);
    const tb = await tunnelFor(b);
    expect(await get(ta, "/a-before")).toBe("HTTP/1.1 200 OK");
    expect(await get(tb, "/b-before")).toBe("HTTP/1.1 200 OK");
    const renewed = await renew("agent-a", "renewed-a");

    const gone = closed(ta);
    await policy({ denyAgents: ["agent-a"] });
    expect(await h.reloadPolicy()).toBe(1);
    await gone;
    // agent-b's tunnel, open across the reload, still serves.
    expect(await get(tb, "/b-after")).toBe("HTTP/1.1 200 OK");
    tb.destroy();
    const seen = up.received.length;
    // The renewal first: its refusal is the one written at once (more of the same reason from
    // the same address within the digest window are summed into one later line).
    for (const agent of [renewed, a]) expect((await viaCurl(agent, "/a-after")).status).toBe(0);
    expect(up.received.length).toBe(seen);
    expect(up.received.map((r) => r.target)).not.toContain("/a-after");

    const [revoked] = await h.auditWhere((l) => l.evt === "revoked" && l.agent === "agent-a");
    expect(revoked).toMatchObject({ serial: await serialOf(a) });
    const renewedSerial = await serialOf(renewed);
    const [refused] = await h.auditWhere(
      (l) => l.evt === "refused" && l.agent === "agent-a" && l.serial === renewedSerial,
    );
    expect(refused!.reason).toBe("agent agent-a is on the local denylist");

    // Lifting it is live too.
    await policy({});
    expect(await h.reloadPolicy()).toBe(0);
    expect((await viaCurl(renewed, "/a-lifted")).status).toBe(200);
  });
});

describe("certificate serials", () => {
  test("every audit line about an authenticated agent carries its serial; denying it revokes that certificate only", async () => {
    const b = h.agents["agent-b"]!;
    const serial = await serialOf(b);
    expect((await viaCurl(b, "/b-serial")).status).toBe(200);
    const [line] = await h.auditWhere((l) => l.evt === "request" && l.path === "/b-serial");
    expect(line).toMatchObject({ agent: "agent-b", serial });
    const [tunnel] = await h.auditWhere((l) => l.evt === "tunnel" && l.agent === "agent-b");
    expect(tunnel!.serial).toBe(serial);
    // What a line says is what the denylist takes.
    const t = await tunnelFor(b);
    expect(await get(t, "/b-open")).toBe("HTTP/1.1 200 OK");
    const gone = closed(t);
    await policy({ denyCertificates: { serials: [line!.serial] } });
    expect(await h.reloadPolicy()).toBe(1);
    await gone;
    expect((await viaCurl(b, "/b-denied")).status).toBe(0);
    const renewed = await renew("agent-b", "renewed-b");
    expect((await viaCurl(renewed, "/b-renewed")).status).toBe(200);
    await policy({});
    await h.reloadPolicy();
  });
});

describe("certificates that expire while connected", () => {
  test("the connection is closed at the next check", async () => {
    const a = h.agents["agent-a"]!;
    const t = await tunnelFor(a);
    expect(await get(t, "/a-live")).toBe("HTTP/1.1 200 OK");
    const pem = await readFile(a.certPath, "utf8");
    const notAfter = new x509.X509Certificate(pem).notAfter.getTime();
    const gone = closed(t);
    aheadMs = notAfter - Date.now() + 60_000;
    try {
      // A reload runs the check every 30 s would (the identity clock is past notAfter now).
      expect(await h.reloadPolicy()).toBeGreaterThanOrEqual(1);
      await gone;
      const [line] = await h.auditWhere(
        (l) => l.evt === "revoked" && l.agent === "agent-a" && /expired/.test(String(l.reason)),
      );
      expect(line!.serial).toBe(await serialOf(a));
    } finally {
      aheadMs = 0;
    }
  });
});

describe("SIGHUP in a running proxy", () => {
  test("reloads the policy file; a bad file keeps the policy in force and says why", async () => {
    const file = join(dir, "process-policy.json");
    await writeFile(file, "{}");
    const p = await startProxyProcess({ env: { SLAPENIR_POLICY: file } });
    const echo = startEchoServer(await p.upstreamCa.issue(["localhost"]));
    try {
      const fetch = async () =>
        (await curl(p.port, p.caBundlePath, p.agent, [`https://localhost:${echo.port}/`])).status;
      const reloads = async (n: number) => {
        for (;;) {
          // The file is also watched: its change or the signal, whichever comes first, reloads.
          const done = p.auditLines.filter((l) => /"evt":"reload".*"changed":"denyAgents"/.test(l));
          if (done.length >= n) return;
          await Bun.sleep(20);
        }
      };
      expect(await fetch()).toBe(200);

      await writeFile(file, JSON.stringify({ denyAgents: ["agent-a"] }));
      process.kill(p.pid, "SIGHUP");
      await reloads(1);
      expect(await fetch()).toBe(0);

      await writeFile(file, "{not json");
      process.kill(p.pid, "SIGHUP");
      for (;;) {
        if (p.stderrLines.some((l) => l.includes("keeping the running configuration"))) break;
        await Bun.sleep(20);
      }
      expect(p.stderrLines.find((l) => l.includes("keeping the running"))).toContain(
        `SLAPENIR_POLICY: ${file} is not valid JSON`,
      );
      expect(await fetch()).toBe(0);

      await writeFile(file, "{}");
      process.kill(p.pid, "SIGHUP");
      await reloads(2);
      expect(await fetch()).toBe(200);
    } finally {
      await echo.stop();
      await p.close();
    }
  });
});
