// Hot reload without a restart: the agent CA and server certificate are swapped while a tunnel
// stays open (the open tunnel keeps working, new handshakes use the new trust), and secrets are
// reloaded (proxy-secrets-reload.test.ts).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import { EmbeddedCa } from "../../src/pki/embedded-ca.ts";
import { curl, type Harness, startHarness } from "../support/proxy-harness.ts";
import { exchangeRaw, openTunnel } from "../support/raw-agent.ts";
import { createTestCa } from "../support/test-pki.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness();
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

describe("TLS credential rotation", () => {
  test("open tunnels survive; new handshakes use the new agent CA", async () => {
    const agent = h.agents["agent-a"]!;
    const tunnel = await openTunnel(
      { port: h.port, caBundlePath: h.caBundlePath, agent },
      { connect: `localhost:${up.port}` },
    );
    const req = `GET /before HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`;
    expect((await exchangeRaw(tunnel, req)).toString("latin1")).toStartWith("HTTP/1.1 200");

    // A second, independent CA becomes the only agent CA; the server certificate is re-issued
    // by it too. (The tunnel's inner leaf still comes from the old interception CA.)
    const otherHome = await mkdtemp(join(tmpdir(), "slapenir-rot-"));
    try {
      const next = await EmbeddedCa.open({ home: otherHome });
      const nextAgent = await next.issueAgentCert("agent-next");
      await h.proxy.reloadCredentials({
        certPem: next.server.certPem,
        keyPem: next.server.keyPem,
        agentCaPem: next.root.certPem,
      });
      // The open tunnel is not dropped.
      const again = `GET /after HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`;
      expect((await exchangeRaw(tunnel, again)).toString("latin1")).toStartWith("HTTP/1.1 200");
      tunnel.destroy();

      const nextBundle = join(otherHome, "bundle.pem");
      await writeFile(nextBundle, `${next.root.certPem}\n${await Bun.file(h.caBundlePath).text()}`);
      // Old agent certificate: refused by the new trust.
      const old = await curl(h.port, nextBundle, agent, [`https://localhost:${up.port}/old`]);
      expect(old.status).toBe(0);
      // New agent certificate: accepted.
      const fresh = await curl(
        h.port,
        nextBundle,
        { name: "agent-next", certPath: nextAgent.certPath, keyPath: nextAgent.keyPath },
        [`https://localhost:${up.port}/new`],
      );
      expect(fresh.stderr).toBe("");
      expect(fresh.status).toBe(200);
    } finally {
      await rm(otherHome, { recursive: true, force: true });
    }
  });
});

/** Agent-a's connection options, trusting the proxy and the CA a rotation will bring (`next`). */
async function rotationCase(h2: Harness, home: string) {
  const agent = h2.agents["agent-a"]!;
  const next = await EmbeddedCa.open({ home });
  const base = {
    port: h2.port,
    host: "127.0.0.1",
    servername: "localhost",
    cert: await Bun.file(agent.certPath).text(),
    key: await Bun.file(agent.keyPath).text(),
    ca: `${await Bun.file(h2.caBundlePath).text()}\n${next.root.certPem}`,
  };
  return { next, base };
}

/** One mTLS connection offering `session`; says whether it resumed and how CONNECT was answered. */
function connectOnce(
  opts: tls.ConnectionOptions,
): Promise<{ reused: boolean; answer: string; session?: Buffer }> {
  return new Promise((resolve) => {
    let session: Buffer | undefined;
    let done = false;
    const finish = (r: { reused: boolean; answer: string; session?: Buffer }) => {
      if (!done) {
        done = true;
        resolve(r);
      }
    };
    const s = tls.connect(opts);
    s.on("session", (x: Buffer) => {
      session = x;
    });
    s.once("secureConnect", () => {
      s.write("CONNECT localhost:1 HTTP/1.1\r\nHost: localhost:1\r\n\r\n");
      let buf = "";
      s.on("data", (d: Buffer) => {
        buf += d.toString("latin1");
        if (!buf.includes("\r\n")) return;
        const reused = s.isSessionReused();
        s.destroy();
        finish({ reused, answer: buf.split("\r\n")[0]!, ...(session ? { session } : {}) });
      });
    });
    s.on("error", () => finish({ reused: false, answer: "refused" }));
    s.on("close", () => finish({ reused: false, answer: "refused" }));
  });
}

describe("TLS session resumption on the agent's connection", () => {
  test("a resumed session is identified as before; a ticket does not outlive an agent-CA rotation", async () => {
    // One loop: Bun 1.4 keeps each listener's ticket keys its own (`ticketKeys` is not
    // implemented), so a session resumes only in the loop that issued its ticket.
    await using h2 = await startHarness({ allow: ["localhost:*"], loops: 1 });
    const otherHome = await mkdtemp(join(tmpdir(), "slapenir-rot-"));
    try {
      const { next, base } = await rotationCase(h2, otherHome);
      const first = await connectOnce(base);
      expect(first).toMatchObject({ reused: false, answer: "HTTP/1.1 200 Connection Established" });
      const resumed = await connectOnce({ ...base, session: first.session });
      expect(resumed).toMatchObject({
        reused: true,
        answer: "HTTP/1.1 200 Connection Established",
      });
      await h2.settled();
      const lines = h2.auditLines.map((l) => JSON.parse(l) as { evt?: string; agent?: string });
      expect(lines.filter((l) => l.evt === "tunnel").map((l) => l.agent)).toEqual([
        "agent-a",
        "agent-a",
      ]);

      // The agent CA is replaced: the old certificate must not get back in on its ticket.
      await h2.proxy.reloadCredentials({
        certPem: next.server.certPem,
        keyPem: next.server.keyPem,
        agentCaPem: next.root.certPem,
      });
      const after = await connectOnce({ ...base, session: resumed.session ?? first.session });
      expect(after).toEqual({ reused: false, answer: "refused" });
    } finally {
      await rm(otherHome, { recursive: true, force: true });
    }
  });
});

describe("TLS sessions with several event loops", () => {
  test("no session resumes (tickets are off), so none outlives an agent-CA rotation", async () => {
    await using h2 = await startHarness({ allow: ["localhost:*"], loops: 2 });
    const otherHome = await mkdtemp(join(tmpdir(), "slapenir-rot-"));
    try {
      const { next, base } = await rotationCase(h2, otherHome);
      const first = await connectOnce(base);
      expect(first.answer).toBe("HTTP/1.1 200 Connection Established");
      // Whichever loop each lands in: a full handshake, the certificate checked again.
      for (let i = 0; i < 6; i++) {
        expect(await connectOnce({ ...base, session: first.session })).toMatchObject({
          reused: false,
          answer: "HTTP/1.1 200 Connection Established",
        });
      }
      await h2.proxy.reloadCredentials({
        certPem: next.server.certPem,
        keyPem: next.server.keyPem,
        agentCaPem: next.root.certPem,
      });
      await h2.settled();
      for (let i = 0; i < 6; i++) {
        expect(await connectOnce({ ...base, session: first.session })).toEqual({
          reused: false,
          answer: "refused",
        });
      }
    } finally {
      await rm(otherHome, { recursive: true, force: true });
    }
  });
});

describe("the certificate expiry gauge", () => {
  test("follows the server certificate a reload puts in place", async () => {
    await using h3 = await startHarness({ allow: ["localhost:*"] });
    const expiry = async () => {
      const text = await (await fetch(`http://127.0.0.1:${h3.proxy.adminPort}/metrics`)).text();
      const line = text
        .split("\n")
        .find((l) => l.startsWith("slapenir_certificate_expiry_seconds "));
      return Number(line?.split(" ")[1]);
    };
    // The embedded PKI's proxy certificate: about 397 days.
    expect(await expiry()).toBeGreaterThan(390 * 86_400);
    // A renewal (as Step-CA mode does) with a certificate of two days left.
    const ca = await createTestCa();
    const short = await ca.issue(["localhost"], {
      notAfter: new Date(Date.now() + 2 * 86_400_000),
    });
    await h3.proxy.reloadCredentials({
      certPem: short.certPem,
      keyPem: short.keyPem,
      agentCaPem: h3.ca.root.certPem,
    });
    const left = await expiry();
    expect(left).toBeGreaterThan(86_400);
    expect(left).toBeLessThanOrEqual(2 * 86_400);
  });
});
