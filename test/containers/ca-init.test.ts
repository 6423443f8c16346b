// docker/ca/ca-init.sh outside a container, with the stand-in `step` (step-cli cannot be
// installed here) against the real step-ca (0.19, Debian's packages) and the double. Checks what the script decides: one token per
// consumer in that consumer's directory only, the pinned fingerprint, the interception CA's
// restrictions — and, end to end, that the tokens it wrote enroll the proxy and an agent, and
// that no certificate the interception CA signs can pass as an agent (at the TLS layer and in
// the proxy's identity check).
import { afterEach, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { proxyEnrollmentConfig, startProxyEnrollment } from "../../src/enroll/proxy-enrollment.ts";
import { deriveAgentIdentity, interceptionCaMarker } from "../../src/pki/agent-identity.ts";
import {
  exportPrivateKeyPem,
  generateP256KeyPair,
  importPrivateKeyPem,
  OID_CLIENT_AUTH,
  OID_NAME_CONSTRAINTS,
  OID_SERVER_AUTH,
  P256_ALGORITHM,
  randomSerialHex,
  x509,
} from "../../src/pki/x509.ts";
import type { CaUnderTest } from "../stepca/ca-under-test.ts";
import { CA_IMPLEMENTATIONS } from "../stepca/implementations.ts";
import { issueFromDouble } from "../stepca-double/stepca-double.ts";
import { repoRoot, s6ScriptsDir } from "./tool-paths.ts";

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

const uid = String(process.getuid?.() ?? 0);

interface Setup {
  ca: CaUnderTest;
  dir: string;
  out: string;
  env: Record<string, string>;
}

async function setup(
  impl: (typeof CA_IMPLEMENTATIONS)[number],
  agents = "agent-1",
): Promise<Setup> {
  const ca = await impl.start({ backdateMs: 0 });
  cleanups.push(() => ca.close());
  const dir = mkdtempSync(join(tmpdir(), "slapenir-cainit-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, "bin");
  const caHome = join(dir, "step");
  const out = join(dir, "enroll");
  for (const d of [bin, join(caHome, "certs"), join(caHome, "secrets"), join(out, "agent-1")]) {
    mkdirSync(d, { recursive: true });
  }
  writeFileSync(
    join(bin, "step"),
    `#!/bin/sh\nexec "${process.execPath}" "${join(import.meta.dir, "fixtures", "step-standin.ts")}" "$@"\n`,
    { mode: 0o755 },
  );
  writeFileSync(join(caHome, "certs", "root_ca.crt"), ca.rootPem);
  writeFileSync(
    join(caHome, "secrets", "root_ca_key"),
    await exportPrivateKeyPem(ca.state.roots[0]!.keys.privateKey),
  );
  writeFileSync(join(dir, "ca_password"), "not-a-real-password\n");
  writeFileSync(
    join(dir, "provisioner.json"),
    JSON.stringify({
      name: ca.provisioner.name,
      privateJwk: await crypto.subtle.exportKey("jwk", ca.provisioner.privateKey),
    }),
  );
  return {
    ca,
    dir,
    out,
    env: {
      PATH: `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}`,
      HOME: dir,
      SLAPENIR_CA_URL: ca.url,
      SLAPENIR_PROVISIONER: ca.provisioner.name,
      SLAPENIR_CA_PASSWORD_FILE: join(dir, "ca_password"),
      SLAPENIR_CA_HOME: caHome,
      SLAPENIR_ENROLL_DIR: out,
      SLAPENIR_AGENTS: agents,
      SLAPENIR_PROXY_UID: uid,
      SLAPENIR_AGENT_UID: uid,
      STEP_STANDIN_PROVISIONER_KEY: join(dir, "provisioner.json"),
    },
  };
}

async function run(script: string, env: Record<string, string>) {
  const p = Bun.spawn(["sh", script], { env, stdout: "pipe", stderr: "pipe" });
  const [o, e, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, output: o + e };
}

const caInit = join(repoRoot, "docker", "ca", "ca-init.sh");
const read = (p: string) => readFileSync(p, "utf8");

for (const impl of CA_IMPLEMENTATIONS) {
  describe.skipIf(impl.skip !== null)(`ca-init against the ${impl.name} Step-CA`, () => {
    test("writes one token per consumer, the fingerprint, and a restricted interception CA", async () => {
      const s = await setup(impl);
      const r = await run(caInit, s.env);
      expect(r.code).toBe(0);
      const proxyToken = read(join(s.out, "proxy", "token")).trim();
      const agentToken = read(join(s.out, "agent-1", "token")).trim();
      expect(r.output).not.toContain(proxyToken);
      expect(r.output).not.toContain(agentToken);
      const claims = (t: string) =>
        JSON.parse(Buffer.from(t.split(".")[1]!, "base64url").toString());
      expect({ sub: claims(proxyToken).sub, sans: claims(proxyToken).sans }).toEqual({
        sub: "proxy.slapenir.internal",
        sans: ["proxy.slapenir.internal", "proxy"],
      });
      expect({ sub: claims(agentToken).sub, sans: claims(agentToken).sans }).toEqual({
        sub: "agent-1",
        sans: ["agent-1", "spiffe://slapenir/agent/agent-1"],
      });
      for (const d of ["proxy", "agent-1"]) {
        expect(read(join(s.out, d, "root_fingerprint")).trim()).toBe(s.ca.rootFingerprint);
        expect(statSync(join(s.out, d)).mode & 0o777).toBe(0o700);
      }
      // The interception CA lives only in the proxy's directory.
      expect(statSync(join(s.out, "proxy", "interception-ca.key")).mode & 0o777).toBe(0o600);
      const ic = new x509.X509Certificate(read(join(s.out, "proxy", "interception-ca.crt")));
      const bc = ic.getExtension(x509.BasicConstraintsExtension)!;
      const nc = ic.getExtension(OID_NAME_CONSTRAINTS)!;
      expect({
        issuer: ic.issuer,
        signedByRoot: await ic.verify({
          publicKey: s.ca.state.roots[0]!.keys.publicKey,
          signatureOnly: true,
        }),
        ca: bc.ca,
        pathLength: bc.pathLength,
        eku: ic.getExtension(x509.ExtendedKeyUsageExtension)!.usages,
        ncCritical: nc.critical,
      }).toEqual({
        issuer: s.ca.state.roots[0]!.cert.subject,
        signedByRoot: true,
        ca: true,
        pathLength: 0,
        eku: [OID_SERVER_AUTH],
        ncCritical: true,
      });
      const ncBytes = Buffer.from(nc.value).toString("latin1");
      expect(ncBytes).toContain("slapenir.internal");
      expect(ncBytes).toContain("\x86\x08slapenir"); // URI subtree: the agent identity host
    }, 30_000);

    test("the tokens it wrote enroll the proxy and the agent", async () => {
      const s = await setup(impl);
      expect((await run(caInit, s.env)).code).toBe(0);
      // Agent: the real init-certs script with those files.
      const certDir = join(s.dir, "agent-certs");
      const agent = await run(join(s6ScriptsDir, "init-certs.sh"), {
        PATH: s.env.PATH!,
        HOME: s.dir,
        SLAPENIR_CERT_DIR: certDir,
        SLAPENIR_AGENT_NAME: "agent-1",
        SLAPENIR_CA_URL: s.ca.url,
        SLAPENIR_ENROLL_TOKEN_FILE: join(s.out, "agent-1", "token"),
        SLAPENIR_CA_FINGERPRINT_FILE: join(s.out, "agent-1", "root_fingerprint"),
        SLAPENIR_SYSTEM_CA_BUNDLE: "/nonexistent",
      });
      expect(agent.code).toBe(0);
      const leaf = new x509.X509Certificate(read(join(certDir, "agent.crt")));
      expect(leaf.subjectName.getField("CN")).toEqual(["agent-1"]);
      // Proxy: src/enroll from the compose environment.
      const proxy = await startProxyEnrollment(
        proxyEnrollmentConfig({
          SLAPENIR_CA_URL: s.ca.url,
          CERT_PATH: join(s.dir, "proxy-certs"),
          SLAPENIR_CA_FINGERPRINT_FILE: join(s.out, "proxy", "root_fingerprint"),
          SLAPENIR_ENROLL_TOKEN_FILE: join(s.out, "proxy", "token"),
          SLAPENIR_INTERCEPT_CA_CERT: join(s.out, "proxy", "interception-ca.crt"),
          SLAPENIR_INTERCEPT_CA_KEY: join(s.out, "proxy", "interception-ca.key"),
        }),
        { onRenewed: () => {} },
      );
      proxy.enrollment.stop();
      const p = new x509.X509Certificate(proxy.credentials.certPem);
      expect(p.subjectName.getField("CN")).toEqual(["proxy.slapenir.internal"]);
    }, 30_000);

    test("nothing the interception CA signs passes as an agent (TLS layer and identity check)", async () => {
      const s = await setup(impl);
      expect((await run(caInit, s.env)).code).toBe(0);
      const restricted = {
        certPem: read(join(s.out, "proxy", "interception-ca.crt")),
        keyPem: read(join(s.out, "proxy", "interception-ca.key")),
      };
      // Control: the same CA without the restrictions (what ca-init would make without its
      // template), so a refusal below is known to come from EKU and name constraints.
      writeFileSync(
        join(s.dir, "open.tpl"),
        JSON.stringify({
          keyUsage: ["certSign", "crlSign"],
          basicConstraints: { isCA: true, maxPathLen: 0 },
        }),
      );
      const made = Bun.spawn(
        [
          "step",
          "certificate",
          "create",
          "Open CA",
          join(s.dir, "open.crt"),
          join(s.dir, "open.key"),
          "--template",
          join(s.dir, "open.tpl"),
          "--ca",
          join(s.dir, "step", "certs", "root_ca.crt"),
          "--ca-key",
          join(s.dir, "step", "secrets", "root_ca_key"),
          "--no-password",
          "--insecure",
        ],
        { env: s.env },
      );
      expect(await made.exited).toBe(0);
      const open = {
        certPem: read(join(s.dir, "open.crt")),
        keyPem: read(join(s.dir, "open.key")),
      };

      /** The most agent-like certificate a CA could be made to sign. */
      const forge = async (issuer: { certPem: string; keyPem: string }) => {
        const ic = new x509.X509Certificate(issuer.certPem);
        const keys = await generateP256KeyPair();
        const leaf = await x509.X509CertificateGenerator.create({
          serialNumber: randomSerialHex(),
          subject: "CN=agent-1",
          issuer: ic.subject,
          notBefore: new Date(Date.now() - 60_000),
          notAfter: new Date(Date.now() + 3_600_000),
          publicKey: keys.publicKey,
          signingKey: await importPrivateKeyPem(issuer.keyPem),
          signingAlgorithm: P256_ALGORITHM,
          extensions: [
            new x509.BasicConstraintsExtension(false),
            new x509.ExtendedKeyUsageExtension([OID_CLIENT_AUTH, OID_SERVER_AUTH]),
            new x509.SubjectAlternativeNameExtension([
              { type: "url", value: "spiffe://slapenir/agent/agent-1" },
            ]),
            await x509.AuthorityKeyIdentifierExtension.create(await ic.publicKey.export()),
          ],
        });
        return {
          certPem: leaf.toString("pem"),
          chainPem: `\n${issuer.certPem}`,
          keyPem: await exportPrivateKeyPem(keys.privateKey),
        };
      };
      const forgedCred = await forge(restricted);
      const controlCred = await forge(open);
      const genuine = await issueFromDouble(
        s.ca.state.intermediate,
        "agent-1",
        ["spiffe://slapenir/agent/agent-1"],
        3_600_000,
      );

      const serverCred = await issueFromDouble(
        s.ca.state.intermediate,
        "proxy",
        ["proxy"],
        3_600_000,
      );
      const server = tls.createServer(
        {
          cert: serverCred.certPem + serverCred.chainPem,
          key: serverCred.keyPem,
          ca: s.ca.rootPem,
          requestCert: true,
          rejectUnauthorized: true,
        },
        (sock) => {
          sock.on("data", (d: Buffer) => sock.write(d));
          sock.on("error", () => {});
        },
      );
      await new Promise<void>((res) => server.listen(0, "127.0.0.1", () => res()));
      cleanups.push(() => new Promise<void>((res) => server.close(() => res())));
      const port = (server.address() as { port: number }).port;
      const accepted = (c: { certPem: string; chainPem: string; keyPem: string }) =>
        new Promise<boolean>((resolve) => {
          const sock = tls.connect({
            host: "127.0.0.1",
            port,
            ca: s.ca.rootPem,
            cert: c.certPem + c.chainPem,
            key: c.keyPem,
            checkServerIdentity: () => undefined,
          });
          sock.once("secureConnect", () => sock.write("ping"));
          sock.once("data", () => {
            sock.destroy();
            resolve(true);
          });
          sock.once("error", () => resolve(false));
          sock.once("close", () => resolve(false));
        });
      expect(await accepted(genuine)).toBe(true);
      expect(await accepted(controlCred)).toBe(true);
      expect(await accepted(forgedCred)).toBe(false);

      const decision = deriveAgentIdentity(forgedCred.certPem, {
        interceptionCa: interceptionCaMarker(new x509.X509Certificate(restricted.certPem)),
        deniedAgents: new Set(),
        deniedSerials: new Set(),
        deniedFingerprints: new Set(),
        now: new Date(),
      });
      expect(decision).toMatchObject({ ok: false, code: "interception-issued" });
    }, 30_000);

    test("a second run issues fresh tokens and keeps the interception CA unless asked to rotate", async () => {
      const s = await setup(impl);
      expect((await run(caInit, s.env)).code).toBe(0);
      const token1 = read(join(s.out, "agent-1", "token"));
      const ic1 = read(join(s.out, "proxy", "interception-ca.crt"));
      expect((await run(caInit, s.env)).code).toBe(0);
      expect(read(join(s.out, "agent-1", "token"))).not.toBe(token1);
      expect(read(join(s.out, "proxy", "interception-ca.crt"))).toBe(ic1);
      expect((await run(caInit, { ...s.env, SLAPENIR_ROTATE_INTERCEPTION_CA: "1" })).code).toBe(0);
      expect(read(join(s.out, "proxy", "interception-ca.crt"))).not.toBe(ic1);
    }, 30_000);

    test.each([
      ["agent-1,../proxy", "refusing agent name"],
      ["agent-1,agent-2", "no volume mounted at"],
    ])(
      "SLAPENIR_AGENTS=%s fails: %s",
      async (agents, message) => {
        const s = await setup(impl, agents);
        const r = await run(caInit, s.env);
        expect(r.code).toBe(1);
        expect(r.output).toContain(message);
      },
      30_000,
    );
  });
}
