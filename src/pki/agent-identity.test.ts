import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtemp, readFile, rm } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";
import {
  AgentIdentityCache,
  denylistSets,
  deriveAgentIdentity,
  type IdentityRules,
  interceptionCaMarker,
} from "./agent-identity.ts";
import { agentUri, type CertAndKey, EmbeddedCa } from "./embedded-ca.ts";
import {
  DAY_MS,
  exportPrivateKeyPem,
  generateP256KeyPair,
  OID_CLIENT_AUTH,
  OID_SERVER_AUTH,
  P256_ALGORITHM,
  randomSerialHex,
  sha256Fingerprint,
  x509,
} from "./x509.ts";

let dir: string;
let ca: EmbeddedCa;
let otherCa: EmbeddedCa;
let rules: IdentityRules;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "slapenir-id-"));
  ca = await EmbeddedCa.open({ home: join(dir, "home") });
  otherCa = await EmbeddedCa.open({ home: join(dir, "other") });
  rules = {
    interceptionCa: interceptionCaMarker(ca.interception.cert),
    deniedAgents: new Set(),
    deniedSerials: new Set(),
    deniedFingerprints: new Set(),
    now: new Date(),
  };
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Crafted {
  readonly certPem: string;
  readonly keyPem: string;
  readonly der: Uint8Array;
}

/** Signs whatever a test needs, as an attacker holding a CA key could. */
async function craft(
  issuer: CertAndKey,
  o: {
    subject?: string;
    eku?: string[] | null;
    uris?: string[];
    ca?: boolean;
    notBefore?: Date;
    notAfter?: Date;
  } = {},
): Promise<Crafted> {
  const keys = await generateP256KeyPair();
  const now = Date.now();
  const extensions: x509.Extension[] = [
    new x509.BasicConstraintsExtension(o.ca ?? false, undefined, true),
    await x509.AuthorityKeyIdentifierExtension.create(issuer.cert.publicKey),
  ];
  const eku = o.eku === undefined ? [OID_CLIENT_AUTH] : o.eku;
  if (eku) extensions.push(new x509.ExtendedKeyUsageExtension(eku));
  if (o.uris)
    extensions.push(
      new x509.SubjectAlternativeNameExtension(o.uris.map((value) => ({ type: "url", value }))),
    );
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: o.subject ?? "CN=agent-x",
    issuer: issuer.cert.subject,
    notBefore: o.notBefore ?? new Date(now - 60_000),
    notAfter: o.notAfter ?? new Date(now + DAY_MS),
    signingAlgorithm: P256_ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: issuer.key,
    extensions,
  });
  return {
    certPem: cert.toString("pem"),
    keyPem: await exportPrivateKeyPem(keys.privateKey),
    der: new Uint8Array(cert.rawData),
  };
}

describe("deriveAgentIdentity (pure)", () => {
  test("an issued agent certificate, in every input form", async () => {
    const issued = await ca.issueAgentCert("agent-a", { outDir: join(dir, "out") });
    const pem = await readFile(issued.certPath, "utf8");
    const der = new Uint8Array(new x509.X509Certificate(pem).rawData);
    for (const input of [pem, der, { raw: Buffer.from(der) } as unknown as tls.PeerCertificate]) {
      const d = deriveAgentIdentity(input, rules);
      expect(d).toEqual({
        ok: true,
        reason: "",
        value: {
          name: "agent-a",
          nameSource: "san-uri",
          subject: "CN=agent-a",
          issuer: ca.root.cert.subject,
          serial: issued.serial,
          fingerprint256: issued.fingerprint256,
          notBefore: expect.any(Date),
          notAfter: issued.notAfter,
        },
      });
    }
  });

  test("Step-CA style: CN only (no agent URI) names the agent", async () => {
    const c = await craft(ca.root, {
      subject: "CN=agent-b",
      eku: [OID_SERVER_AUTH, OID_CLIENT_AUTH],
    });
    const d = deriveAgentIdentity(c.der, rules);
    expect(d.ok && d.value.name).toBe("agent-b");
    expect(d.ok && d.value.nameSource).toBe("subject-cn");
  });

  test("the SAN URI wins over the CN", async () => {
    const c = await craft(ca.root, {
      subject: "CN=someone-else",
      uris: ["spiffe://slapenir/agent/real-name"],
    });
    const d = deriveAgentIdentity(c.der, rules);
    expect(d.ok && d.value.name).toBe("real-name");
  });

  const rejections: [
    string,
    () => Promise<Crafted | string | null | undefined | object>,
    string,
  ][] = [
    ["no certificate (undefined)", async () => undefined, "no-certificate"],
    ["no certificate (node:tls gives {})", async () => ({}), "no-certificate"],
    [
      "garbled PEM",
      async () => "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----",
      "garbled",
    ],
    ["no EKU at all", () => craft(ca.root, { eku: null }), "wrong-eku"],
    ["serverAuth only", () => craft(ca.root, { eku: [OID_SERVER_AUTH] }), "wrong-eku"],
    ["a CA certificate", () => craft(ca.root, { ca: true }), "ca-certificate"],
    ["issued by the interception CA", () => craft(ca.interception), "interception-issued"],
    [
      "expired",
      () =>
        craft(ca.root, {
          notBefore: new Date(Date.now() - 2 * DAY_MS),
          notAfter: new Date(Date.now() - DAY_MS),
        }),
      "expired",
    ],
    [
      "not yet valid",
      () => craft(ca.root, { notBefore: new Date(Date.now() + DAY_MS) }),
      "not-yet-valid",
    ],
    ["no usable name", () => craft(ca.root, { subject: "O=nobody" }), "no-name"],
    ["a name that is not an agent name", () => craft(ca.root, { subject: "CN=../etc" }), "no-name"],
    [
      "two agent URIs",
      () => craft(ca.root, { uris: ["spiffe://slapenir/agent/a", "spiffe://slapenir/agent/b"] }),
      "ambiguous-name",
    ],
    ["two CNs", () => craft(ca.root, { subject: "CN=a, CN=b" }), "ambiguous-name"],
  ];
  for (const [label, make, code] of rejections) {
    test(`rejects: ${label}`, async () => {
      const made = await make();
      const input =
        made && typeof made === "object" && "der" in made ? (made as Crafted).der : made;
      const d = deriveAgentIdentity(input as Uint8Array, rules);
      expect(d.ok ? "accepted" : d.code).toBe(code);
      // The memoising path decides the same, the first time and when the parse is cached.
      const cache = new AgentIdentityCache();
      for (let i = 0; i < 2; i++) expect(cache.derive(input as Uint8Array, rules)).toEqual(d);
    });
  }

  test("AgentIdentityCache re-checks dates and the denylist on every call; it is bounded", async () => {
    const cache = new AgentIdentityCache(2);
    const c = await craft(ca.root, { subject: "CN=agent-c" });
    expect(cache.derive(c.der, rules).ok).toBe(true);
    const later = { ...rules, now: new Date(Date.now() + 2 * DAY_MS) };
    expect(cache.derive(c.der, later)).toMatchObject({ ok: false, code: "expired" });
    const serial = new x509.X509Certificate(c.der).serialNumber;
    const denied = {
      ...rules,
      ...denylistSets({ agents: [], serials: [serial], fingerprints: [] }),
    };
    expect(cache.derive(c.der, denied)).toMatchObject({ ok: false, code: "denylisted" });
    expect(cache.derive(c.der, rules).ok).toBe(true);
    for (let i = 0; i < 3; i++) cache.derive((await craft(ca.root)).der, rules);
    expect(cache.size).toBe(2);
  });

  test("rejects denylisted serials and fingerprints in any spelling", async () => {
    const c = await craft(ca.root);
    const cert = new x509.X509Certificate(c.der);
    const serialColons = cert.serialNumber.toUpperCase().match(/../g)!.join(":");
    const fp = `SHA256:${sha256Fingerprint(c.der).toUpperCase().match(/../g)!.join(":")}`;
    for (const list of [
      { agents: [], serials: [serialColons], fingerprints: [] },
      { agents: [], serials: [], fingerprints: [fp] },
    ]) {
      const d = deriveAgentIdentity(c.der, { ...rules, ...denylistSets(list) });
      expect(d.ok ? "accepted" : d.code).toBe("denylisted");
    }
    expect(deriveAgentIdentity(c.der, rules).ok).toBe(true);
  });

  test("a denied agent name refuses every certificate naming it, by SAN URI or by CN", async () => {
    const deny = {
      ...rules,
      ...denylistSets({ agents: ["agent-d"], serials: [], fingerprints: [] }),
    };
    const renewals = [
      await craft(ca.root, { subject: "CN=agent-d" }),
      await craft(ca.root, { subject: "CN=anything", uris: [agentUri("agent-d")] }),
      await craft(ca.root, { subject: "CN=agent-d" }),
    ];
    for (const c of renewals) {
      const d = deriveAgentIdentity(c.der, deny);
      expect(d).toMatchObject({
        ok: false,
        code: "denylisted",
        agent: "agent-d",
        serial: new x509.X509Certificate(c.der).serialNumber.replace(/^0+(?=.)/, "").toLowerCase(),
      });
      expect(deriveAgentIdentity(c.der, rules).ok).toBe(true);
    }
    // Only that name: a name it is a prefix of, or differs from in case, is another agent.
    for (const other of ["agent-d2", "Agent-D"]) {
      const c = await craft(ca.root, { subject: `CN=${other}` });
      expect(deriveAgentIdentity(c.der, deny).ok).toBe(true);
    }
  });
});

describe("mTLS handshake on loopback with the proxy's server certificate", () => {
  /** What one client saw: the server's verdict line, or "refused" when the handshake failed. */
  async function handshake(
    port: number,
    client: { certPem?: string; keyPem?: string },
  ): Promise<string> {
    return new Promise((resolve) => {
      const socket = tls.connect({
        host: "127.0.0.1",
        port,
        servername: "localhost",
        ca: ca.caBundlePem,
        cert: client.certPem,
        key: client.keyPem,
        minVersion: "TLSv1.2",
      });
      let data = "";
      socket.on("data", (d) => {
        data += d;
      });
      socket.on("close", () => resolve(data === "" ? "refused" : data));
      socket.on("error", () => {});
    });
  }

  test("accepted: agent cert; refused: none, other root, expired, interception-issued, wrong EKU", async () => {
    let denied = new Set<string>();
    const server = tls.createServer(
      {
        cert: ca.server.certPem,
        key: ca.server.keyPem,
        ca: ca.root.certPem,
        requestCert: true,
        rejectUnauthorized: true,
        minVersion: "TLSv1.2",
      },
      (socket) => {
        const d = deriveAgentIdentity(socket.getPeerCertificate(), {
          ...rules,
          deniedSerials: denied,
          now: new Date(),
        });
        socket.end(d.ok ? `ok:${d.value.name}` : `rejected:${d.code}`);
      },
    );
    server.on("tlsClientError", () => {});
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    const saved = process.env.NODE_TLS_REJECT_UNAUTHORIZED;
    try {
      const agent = await ca.issueAgentCert("agent-a", { outDir: join(dir, "hs") });
      const other = await otherCa.issueAgentCert("agent-a", { outDir: join(dir, "hs-other") });
      const expired = await craft(ca.root, {
        subject: "CN=agent-a",
        notBefore: new Date(Date.now() - 2 * DAY_MS),
        notAfter: new Date(Date.now() - DAY_MS),
      });
      const fromInterception = await craft(ca.interception, { subject: "CN=agent-a" });
      const serverOnly = await craft(ca.root, { subject: "CN=agent-a", eku: [OID_SERVER_AUTH] });

      for (let i = 0; i < 10; i++) expect(await handshake(port, agent)).toBe("ok:agent-a");

      // Run the refusals many times (Bun has had intermittent client-certificate bugs) and with
      // NODE_TLS_REJECT_UNAUTHORIZED=0, which must not matter on the server side.
      process.env.NODE_TLS_REJECT_UNAUTHORIZED = "0";
      const outcomes = new Map<string, Set<string>>();
      const cases: [string, { certPem?: string; keyPem?: string }][] = [
        ["none", {}],
        ["other root", other],
        ["expired", expired],
        ["interception-issued", fromInterception],
        ["serverAuth only", serverOnly],
      ];
      for (let i = 0; i < 10; i++) {
        for (const [label, cred] of cases) {
          const seen = outcomes.get(label) ?? new Set<string>();
          seen.add(await handshake(port, cred));
          outcomes.set(label, seen);
        }
      }
      const summary = Object.fromEntries([...outcomes].map(([k, v]) => [k, [...v].sort()]));
      const allowed = (label: string, ok: string[]) =>
        summary[label]!.filter((o) => !ok.includes(o));
      expect({
        none: summary.none,
        "other root": summary["other root"],
        expired: summary.expired,
        // The TLS stack may refuse these (EKU of the interception CA, of the leaf); if it lets
        // one through, agent identity must reject it. Nothing else is acceptable.
        "interception-issued": allowed("interception-issued", [
          "refused",
          "rejected:interception-issued",
        ]),
        "serverAuth only": allowed("serverAuth only", ["refused", "rejected:wrong-eku"]),
      }).toEqual({
        none: ["refused"],
        "other root": ["refused"],
        expired: ["refused"],
        "interception-issued": [],
        "serverAuth only": [],
      });
      // A denylisted certificate completes the handshake but gets no identity.
      denied = new Set([agent.serial]);
      expect(await handshake(port, agent)).toBe("rejected:denylisted");
    } finally {
      if (saved === undefined) delete process.env.NODE_TLS_REJECT_UNAUTHORIZED;
      else process.env.NODE_TLS_REJECT_UNAUTHORIZED = saved;
      server.close();
    }
  });
});
