// The proxy in Step-CA mode against the real step-ca (0.19, built from Debian's packages): the
// proxy process enrolls from its compose environment (pinned fingerprint, one-time token),
// agents enroll through the documented flow (the agent's init-certs script; `step` is the
// stand-in that forwards to the CA's API), the proxy accepts them, one the CA revoked and the
// proxy's denylist names is refused while the other keeps its service, and the proxy's own
// short-lived certificate renews by itself (at 2/3 of its lifetime) while a tunnel stays open.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type tls from "node:tls";
import { normalizeSerialHex, x509 } from "../../src/pki/x509.ts";
import { s6ScriptsDir, waitFor } from "../containers/tool-paths.ts";
import { decimalSerial } from "../stepca/ca-under-test.ts";
import { signOneTimeToken } from "../stepca-double/one-time-token.ts";
import { buildStepCa } from "../stepca-real/build.ts";
import { type RealStepCa, startRealStepCa } from "../stepca-real/stepca-real.ts";
import type { AgentFiles } from "../support/proxy-harness.ts";
import { type ProxyProcess, startProxyProcess } from "../support/proxy-process.ts";
import { exchangeRaw, openProxyConnection, openTunnel } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const built = buildStepCa();
if ("skip" in built) {
  if (process.env.CI) throw new Error(`missing in CI: ${built.skip}`);
  console.warn(`SKIP: the proxy against the real step-ca: ${built.skip}`);
}
/** Long enough for no agent certificate to expire during the file; the proxy's is short. */
const AGENT_LIFETIME_MS = 3_600_000;
const PROXY_LIFETIME_MS = 8_000;

describe.skipIf("skip" in built)("the proxy against the real step-ca", () => {
  let ca: RealStepCa;
  let proxy: ProxyProcess;
  let up: EchoServer;
  let dir: string;
  /** Step-CA root (the proxy's chain) and the proxy's interception CA, for the raw agent. */
  let bundle: string;
  let policyPath: string;
  const agents: Record<string, AgentFiles> = {};

  /** The agent's own first boot: init-certs with a token for NAME, as ca-init writes it. */
  async function enrollAgent(name: string): Promise<AgentFiles> {
    const d = join(dir, name);
    mkdirSync(d, { recursive: true });
    const token = await signOneTimeToken(ca.provisioner, {
      aud: ca.signAudience,
      sub: name,
      sans: [name, `spiffe://slapenir/agent/${name}`],
    });
    writeFileSync(join(d, "token"), token, { mode: 0o600 });
    writeFileSync(join(d, "root_fingerprint"), `${ca.rootFingerprint}\n`);
    const p = Bun.spawn(["sh", join(s6ScriptsDir, "init-certs.sh")], {
      env: {
        PATH: `${join(dir, "bin")}:${process.env.PATH ?? "/usr/bin:/bin"}`,
        HOME: d,
        SLAPENIR_CERT_DIR: join(d, "certs"),
        SLAPENIR_AGENT_NAME: name,
        SLAPENIR_CA_URL: ca.url,
        SLAPENIR_ENROLL_TOKEN_FILE: join(d, "token"),
        SLAPENIR_CA_FINGERPRINT_FILE: join(d, "root_fingerprint"),
        SLAPENIR_SYSTEM_CA_BUNDLE: "/nonexistent",
      },
      stdout: "pipe",
      stderr: "pipe",
    });
    const [err, code] = await Promise.all([new Response(p.stderr).text(), p.exited]);
    expect(err).not.toContain(token);
    expect(code).toBe(0);
    return {
      name,
      certPath: join(d, "certs", "agent.crt"),
      keyPath: join(d, "certs", "agent.key"),
    };
  }

  beforeAll(async () => {
    if ("skip" in built) return;
    ca = await startRealStepCa(built.path, {
      certLifetimeMs: AGENT_LIFETIME_MS,
      // step-ca's default backdate would make an 8-second certificate 68 seconds long.
      backdateMs: 0,
      more: [{ name: "proxy", certLifetimeMs: PROXY_LIFETIME_MS }],
    });
    const { mkdtemp } = await import("node:fs/promises");
    const { tmpdir } = await import("node:os");
    dir = await mkdtemp(join(tmpdir(), "slapenir-stepca-e2e-"));
    mkdirSync(join(dir, "bin"));
    writeFileSync(
      join(dir, "bin", "step"),
      `#!/bin/sh\nexec "${process.execPath}" "${join(import.meta.dir, "..", "containers", "fixtures", "step-standin.ts")}" "$@"\n`,
    );
    chmodSync(join(dir, "bin", "step"), 0o755);
    // What ca-init writes for the proxy: its token (from the short-lived provisioner) and the
    // fingerprint it pins.
    writeFileSync(
      join(dir, "proxy-token"),
      await signOneTimeToken(ca.more.proxy!, {
        aud: ca.signAudience,
        sub: "localhost",
        sans: ["localhost"],
      }),
      { mode: 0o600 },
    );
    writeFileSync(join(dir, "proxy-fingerprint"), `${ca.rootFingerprint}\n`);
    policyPath = join(dir, "policy.json");
    writeFileSync(policyPath, "{}");
    proxy = await startProxyProcess({
      env: {
        SLAPENIR_CA_URL: ca.url,
        CERT_PATH: join(dir, "proxy-certs"),
        SLAPENIR_CA_FINGERPRINT_FILE: join(dir, "proxy-fingerprint"),
        SLAPENIR_ENROLL_TOKEN_FILE: join(dir, "proxy-token"),
        SLAPENIR_SERVER_NAMES: "localhost",
        SLAPENIR_POLICY: policyPath,
      },
    });
    bundle = join(dir, "agent-bundle.pem");
    writeFileSync(bundle, ca.rootPem + readFileSync(proxy.caBundlePath, "utf8"));
    up = startEchoServer(await proxy.upstreamCa.issue(["localhost"]));
    agents["agent-1"] = await enrollAgent("agent-1");
    agents["agent-2"] = await enrollAgent("agent-2");
  });

  afterAll(async () => {
    await up?.stop();
    await proxy?.close();
    await ca?.close();
    if (dir) (await import("node:fs")).rmSync(dir, { recursive: true, force: true });
  });

  const tunnel = (agent: AgentFiles) =>
    openTunnel(
      { port: proxy.port, caBundlePath: bundle, agent },
      { connect: `localhost:${up.port}` },
    );
  const get = async (t: tls.TLSSocket, path: string) =>
    (await exchangeRaw(t, `GET ${path} HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`))
      .toString("latin1")
      .split("\r\n")[0];
  /** The serial of the certificate the proxy serves now (a new connection's view). */
  const servedSerial = async () => {
    const s = await openProxyConnection({ port: proxy.port, caBundlePath: bundle });
    const serial = s.getPeerCertificate().serialNumber;
    s.destroy();
    return normalizeSerialHex(serial);
  };
  const renewals = () => proxy.stderrLines.filter((l) => l.includes("enrollment renewed")).length;

  test("agents enrolled by the real CA are served; the proxy's own certificate comes from it", async () => {
    const leaf = new x509.X509Certificate(
      readFileSync(join(dir, "proxy-certs", "proxy.crt"), "utf8"),
    );
    expect(leaf.issuer).toBe(ca.state.intermediate.cert.subject);
    for (const name of ["agent-1", "agent-2"]) {
      const t = await tunnel(agents[name]!);
      expect(await get(t, `/${name}`)).toBe("HTTP/1.1 200 OK");
      t.destroy();
    }
  });

  test("the proxy's 8-second certificate renews by itself; a tunnel open across the renewal keeps working", async () => {
    const t = await tunnel(agents["agent-1"]!);
    expect(await get(t, "/before-renewal")).toBe("HTTP/1.1 200 OK");
    const before = await servedSerial();
    const seen = renewals();
    await waitFor(
      "the proxy renewing its certificate",
      () => (renewals() > seen ? true : null),
      50_000,
    );
    expect(await servedSerial()).not.toBe(before);
    expect(await get(t, "/after-renewal")).toBe("HTTP/1.1 200 OK");
    // The audit log has the proxy's enrollment too: its first certificate and each renewal.
    const enrollment = proxy.auditLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.evt === "enrollment");
    expect(enrollment.map((l) => l.type)).toContain("enrolled");
    expect(enrollment.find((l) => l.type === "renewed")?.notAfter).toMatch(/^\d{4}-/);
    t.destroy();
  }, 60_000);

  test("a certificate the CA revoked and the proxy's denylist names is refused; the other agent is not", async () => {
    const pem = readFileSync(agents["agent-2"]!.certPath, "utf8");
    const serial = decimalSerial(pem);
    const ott = await signOneTimeToken(ca.provisioner, {
      aud: ca.revokeAudience,
      sub: serial,
      sans: [],
    });
    const res = await fetch(`${ca.url}/1.0/revoke`, {
      method: "POST",
      body: JSON.stringify({ serial, ott, passive: true, reasonCode: 0 }),
      tls: { ca: ca.rootPem },
    } as RequestInit);
    expect(res.status).toBe(200);
    // step-ca 0.19 revokes passively (no CRL, no OCSP): the CA only stops renewing it, and
    // the proxy learns of it through its own denylist.
    const cert = new x509.X509Certificate(pem);
    writeFileSync(
      policyPath,
      JSON.stringify({ denyCertificates: { serials: [normalizeSerialHex(cert.serialNumber)] } }),
    );
    process.kill(proxy.pid, "SIGHUP");
    await waitFor("agent-2 refused", async () => {
      try {
        const t = await tunnel(agents["agent-2"]!);
        t.destroy();
        return null;
      } catch (e) {
        return String(e);
      }
    });
    const t = await tunnel(agents["agent-1"]!);
    expect(await get(t, "/still-served")).toBe("HTTP/1.1 200 OK");
    t.destroy();
    const renew = Bun.spawn(
      [
        "step",
        "ca",
        "renew",
        "--ca-url",
        ca.url,
        "--root",
        join(dir, "agent-2", "certs", "root_ca.crt"),
        agents["agent-2"]!.certPath,
        agents["agent-2"]!.keyPath,
      ],
      {
        env: { PATH: `${join(dir, "bin")}:${process.env.PATH ?? ""}`, HOME: dir },
        stderr: "pipe",
      },
    );
    const [err, code] = await Promise.all([new Response(renew.stderr).text(), renew.exited]);
    expect(code).toBe(1);
    expect(err).toContain("status 401");
    await ca.refused("certificate has been revoked");
  });
});
