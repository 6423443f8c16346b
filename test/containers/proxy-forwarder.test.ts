// The agent's proxy-forwarder (s6 run script, socat) outside a container: it listens on
// loopback and wraps each connection in mTLS to a local stand-in for the proxy (a node:tls
// server that requires a client certificate and echoes). Checks that the agent's certificate
// is presented, that a certificate renewed on disk is used by the next connection while an
// open one continues, and that a proxy with the wrong name or a client the proxy does not
// trust gets no tunnel. Certificates come from the Step-CA double's PKI.
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, renameSync, rmSync, writeFileSync } from "node:fs";
import { type Socket, connect as tcpConnect } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { x509 } from "../../src/pki/x509.ts";
import {
  createStepCaState,
  issueFromDouble,
  type StepCaState,
} from "../stepca-double/stepca-double.ts";
import { freePort } from "../support/free-port.ts";
import { missingTools, s6RcDir, waitFor } from "./tool-paths.ts";

const skip = missingTools(["socat"]).length > 0;
const PROXY_NAME = "proxy.slapenir.internal";

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

/** The stand-in proxy: mTLS required; answers each line with "<serial of client cert>:<line>". */
async function startProxy(state: StepCaState): Promise<{ port: number; rootPem: string }> {
  const server = await issueFromDouble(state.intermediate, PROXY_NAME, [PROXY_NAME], 3_600_000);
  const rootPem = state.roots.map((r) => r.cert.toString("pem")).join("\n");
  const srv = tls.createServer(
    {
      cert: server.certPem + server.chainPem,
      key: server.keyPem,
      ca: rootPem,
      requestCert: true,
      rejectUnauthorized: true,
      minVersion: "TLSv1.2",
    },
    (s) => {
      const serial = s.getPeerCertificate().serialNumber?.toLowerCase() ?? "none";
      s.on("data", (d: Buffer) => s.write(`${serial}:${d.toString()}`));
      s.on("error", () => {});
    },
  );
  const sockets = new Set<Socket>();
  srv.on("connection", (s: Socket) => {
    sockets.add(s);
    s.on("close", () => sockets.delete(s));
  });
  await new Promise<void>((r) => srv.listen(0, "127.0.0.1", () => r()));
  cleanups.push(
    () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        srv.close(() => r());
      }),
  );
  return { port: (srv.address() as { port: number }).port, rootPem };
}

function writeAgentCert(dir: string, c: { certPem: string; keyPem: string; chainPem: string }) {
  // As step writes them: replace by rename, so a connection never reads half a file.
  writeFileSync(join(dir, "agent.key.tmp"), c.keyPem, { mode: 0o600 });
  writeFileSync(join(dir, "agent.crt.tmp"), c.certPem + c.chainPem);
  renameSync(join(dir, "agent.key.tmp"), join(dir, "agent.key"));
  renameSync(join(dir, "agent.crt.tmp"), join(dir, "agent.crt"));
}

function serialOf(certPem: string): string {
  return new x509.X509Certificate(certPem).serialNumber.toLowerCase().replace(/^0+/, "");
}

async function startForwarder(certDir: string, proxyPort: number, proxyName = PROXY_NAME) {
  const listen = await freePort();
  const proc = Bun.spawn(["sh", join(s6RcDir, "proxy-forwarder", "run")], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      SLAPENIR_CERT_DIR: certDir,
      SLAPENIR_FORWARD_LISTEN: `127.0.0.1:${listen}`,
      SLAPENIR_PROXY_ADDR: `127.0.0.1:${proxyPort}`,
      SLAPENIR_PROXY_NAME: proxyName,
    },
    stdout: "ignore",
    stderr: "pipe",
  });
  cleanups.push(async () => {
    proc.kill("SIGTERM");
    await proc.exited;
  });
  // Ready when it accepts TCP.
  await waitFor("forwarder listening", async () => {
    const ok = await new Promise<boolean>((r) => {
      const s = tcpConnect(listen, "127.0.0.1", () => {
        s.destroy();
        r(true);
      });
      s.on("error", () => r(false));
    });
    return ok ? true : null;
  });
  return { listen, proc };
}

/** A plain TCP client of the forwarder (what pip or curl does with HTTP_PROXY). */
async function client(port: number) {
  const s = tcpConnect(port, "127.0.0.1");
  await new Promise<void>((r, j) => {
    s.once("connect", () => r());
    s.once("error", j);
  });
  cleanups.push(() => void s.destroy());
  let buf = "";
  let closed = false;
  s.on("data", (d: Buffer) => {
    buf += d.toString();
  });
  s.on("close", () => {
    closed = true;
  });
  s.on("error", () => {});
  return {
    async say(line: string): Promise<string> {
      const before = buf.length;
      s.write(line);
      return waitFor(`echo of ${line}`, () =>
        buf.length > before ? buf.slice(before) : closed ? "" : null,
      );
    },
    closedSoon: () => waitFor("close", () => (closed ? true : null)),
  };
}

// Skipped only on a machine without the tool, with a warning; under CI missingTools throws.
describe.skipIf(skip)("proxy-forwarder (socat)", () => {
  test("presents the agent certificate; a renewed one is used by the next connection", async () => {
    const state = await createStepCaState();
    const proxy = await startProxy(state);
    const dir = mkdtempSync(join(tmpdir(), "slapenir-fwd-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, "root_ca.crt"), proxy.rootPem);
    const first = await issueFromDouble(state.intermediate, "agent-1", ["agent-1"], 3_600_000);
    writeAgentCert(dir, first);
    const fwd = await startForwarder(dir, proxy.port);

    const a = await client(fwd.listen);
    expect(await a.say("one")).toBe(`${serialOf(first.certPem)}:one`);

    const renewed = await issueFromDouble(state.intermediate, "agent-1", ["agent-1"], 3_600_000);
    writeAgentCert(dir, renewed);
    const b = await client(fwd.listen);
    expect(await b.say("two")).toBe(`${serialOf(renewed.certPem)}:two`);
    // The connection opened before the renewal keeps its TLS session and keeps working.
    expect(await a.say("three")).toBe(`${serialOf(first.certPem)}:three`);
    expect(fwd.proc.exitCode).toBeNull();
  }, 30_000);

  test("no tunnel when the proxy's certificate is not for the configured name", async () => {
    const state = await createStepCaState();
    const proxy = await startProxy(state);
    const dir = mkdtempSync(join(tmpdir(), "slapenir-fwd-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, "root_ca.crt"), proxy.rootPem);
    writeAgentCert(
      dir,
      await issueFromDouble(state.intermediate, "agent-1", ["agent-1"], 3_600_000),
    );
    const fwd = await startForwarder(dir, proxy.port, "evil.example");
    const c = await client(fwd.listen);
    expect(await c.say("hello")).toBe("");
  }, 30_000);

  test("no tunnel when the agent's certificate is from a CA the proxy does not trust", async () => {
    const state = await createStepCaState();
    const other = await createStepCaState();
    const proxy = await startProxy(state);
    const dir = mkdtempSync(join(tmpdir(), "slapenir-fwd-"));
    cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
    writeFileSync(join(dir, "root_ca.crt"), proxy.rootPem);
    writeAgentCert(
      dir,
      await issueFromDouble(other.intermediate, "agent-1", ["agent-1"], 3_600_000),
    );
    const fwd = await startForwarder(dir, proxy.port);
    const c = await client(fwd.listen);
    expect(await c.say("hello")).toBe("");
  }, 30_000);
});
