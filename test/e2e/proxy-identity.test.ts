// End-to-end: who may use the proxy. Every bad agent certificate is refused at the handshake
// (or right after it, by the proxy's own identity rules) — many times over, since Bun has had
// intermittent client-certificate bugs — and each refusal is audited. A good certificate's
// identity is what the audit log records.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { agentUri } from "../../src/pki/embedded-ca.ts";
import {
  DAY_MS,
  exportPrivateKeyPem,
  generateP256KeyPair,
  OID_CLIENT_AUTH,
  OID_SERVER_AUTH,
  P256_ALGORITHM,
  randomSerialHex,
  x509,
} from "../../src/pki/x509.ts";
import { type AgentFiles, curl, type Harness, startHarness } from "../support/proxy-harness.ts";
import { createTestCa } from "../support/test-pki.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

let h: Harness;
let up: EchoServer;
const bad: Record<string, AgentFiles> = {};
let denylistedSerial = "";

interface Signer {
  cert: x509.X509Certificate;
  key: CryptoKey;
}

async function forge(
  name: string,
  signer: Signer,
  opts: { notBefore: Date; notAfter: Date; eku: string[]; serial?: string },
): Promise<AgentFiles> {
  const keys = await generateP256KeyPair();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: opts.serial ?? randomSerialHex(),
    subject: `CN=${name}`,
    issuer: signer.cert.subject,
    notBefore: opts.notBefore,
    notAfter: opts.notAfter,
    signingAlgorithm: P256_ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: signer.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension(opts.eku, false),
      new x509.SubjectAlternativeNameExtension([{ type: "url", value: agentUri(name) }], false),
    ],
  });
  const dir = join(h.dir, "forged");
  await mkdir(dir, { recursive: true });
  const certPath = join(dir, `${name}.crt`);
  const keyPath = join(dir, `${name}.key`);
  // The chain the agent presents: its certificate plus the signer (so an intermediate-signed
  // certificate is judged on its issuer, not on a missing link).
  await writeFile(certPath, `${cert.toString("pem")}\n${signer.cert.toString("pem")}\n`);
  await writeFile(keyPath, await exportPrivateKeyPem(keys.privateKey));
  return { name, certPath, keyPath };
}

beforeAll(async () => {
  denylistedSerial = randomSerialHex();
  h = await startHarness({
    agents: ["agent-a", "agent-b"],
    allow: ["localhost:*"],
    env: { SLAPENIR_AGENT_DENYLIST: `serial:${denylistedSerial}` },
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
  const now = Date.now();
  const root = { cert: h.ca.root.cert, key: h.ca.root.key };
  const valid = { notBefore: new Date(now - DAY_MS), notAfter: new Date(now + DAY_MS) };
  bad.expired = await forge("expired", root, {
    notBefore: new Date(now - 3 * DAY_MS),
    notAfter: new Date(now - DAY_MS),
    eku: [OID_CLIENT_AUTH],
  });
  bad.notYetValid = await forge("future", root, {
    notBefore: new Date(now + DAY_MS),
    notAfter: new Date(now + 3 * DAY_MS),
    eku: [OID_CLIENT_AUTH],
  });
  bad.serverEku = await forge("server-eku", root, { ...valid, eku: [OID_SERVER_AUTH] });
  bad.denylisted = await forge("denied", root, {
    ...valid,
    eku: [OID_CLIENT_AUTH],
    serial: denylistedSerial,
  });
  bad.interception = await forge(
    "via-interception",
    { cert: h.ca.interception.cert, key: h.ca.interception.key },
    { ...valid, eku: [OID_CLIENT_AUTH] },
  );
  const other = await createTestCa("Another Root");
  const otherKey = await crypto.subtle.importKey(
    "pkcs8",
    Buffer.from(other.keyPem.replace(/-----[^-]+-----|\s/g, ""), "base64"),
    { name: "ECDSA", namedCurve: "P-256" },
    false,
    ["sign"],
  );
  bad.otherCa = await forge(
    "other-ca",
    { cert: new x509.X509Certificate(other.certPem), key: otherKey },
    { ...valid, eku: [OID_CLIENT_AUTH] },
  );
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

describe("agent certificates the proxy refuses", () => {
  const cases = ["expired", "notYetValid", "serverEku", "denylisted", "interception", "otherCa"];
  for (const name of cases) {
    test(`${name}: refused every time (10 handshakes), NODE_TLS_REJECT_UNAUTHORIZED notwithstanding`, async () => {
      process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
      try {
        const before = up.received.length;
        for (let i = 0; i < 10; i++) {
          const r = await curl(h.port, h.caBundlePath, bad[name], [
            `https://localhost:${up.port}/`,
          ]);
          expect({ i, code: r.code === 0, status: r.status }).toEqual({
            i,
            code: false,
            status: 0,
          });
        }
        expect(up.received.length).toBe(before);
      } finally {
        delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
      }
    });
  }

  test("no certificate: refused every time, counted every time, audited", async () => {
    const handshakeRefusals = async () => {
      const text = await (await fetch(`http://127.0.0.1:${h.proxy.adminPort}/metrics`)).text();
      const line = text
        .split("\n")
        .find((l) => l.startsWith('slapenir_connections_refused_total{reason="handshake"} '));
      return Number(line?.split(" ")[1] ?? 0);
    };
    const before = await handshakeRefusals();
    for (let i = 0; i < 10; i++) {
      const r = await curl(h.port, h.caBundlePath, undefined, [`https://localhost:${up.port}/`]);
      expect(r.status).toBe(0);
    }
    expect((await handshakeRefusals()) - before).toBe(10);
    // Ten refusals of one kind from one address within seconds: the audit has the first at
    // once; the others become one line with their count when the window ends (RefusalDigest).
    await h.settled();
    const refused = h.auditLines.filter(
      (l) => l.includes('"evt":"refused"') && l.includes("no client certificate"),
    );
    expect(refused.length).toBe(1);
  });

  test("certificates the TLS stack accepts are still refused by the proxy's own rules", async () => {
    // The denylist and the EKU check are the proxy's, not OpenSSL's: their refusals carry
    // the proxy's reasons (the test above would also pass if OpenSSL refused them).
    await h.settled();
    const refused = h.auditLines.filter((l) => l.includes('"evt":"refused"')).join("\n");
    expect(refused).toContain("denylist");
  });
});

describe("agent identity", () => {
  test("each agent is audited under its own certificate name", async () => {
    const a = await h.curl([`https://localhost:${up.port}/as-a`], "agent-a");
    const b = await h.curl([`https://localhost:${up.port}/as-b`], "agent-b");
    expect([a.status, b.status]).toEqual([200, 200]);
    const lines = h.auditLines.map((l) => JSON.parse(l)).filter((l) => l.evt === "request");
    expect(lines.find((l) => l.path === "/as-a")?.agent).toBe("agent-a");
    expect(lines.find((l) => l.path === "/as-b")?.agent).toBe("agent-b");
  });
});
