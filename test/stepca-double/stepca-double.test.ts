// The Step-CA double checked against the behaviours its header cites from smallstep/
// certificates: status codes, JSON shapes, token validation (signature, kid, iss, aud,
// nbf/exp with one minute of leeway, sub, single-use jti) and CSR/token agreement. A double
// that accepted what step-ca refuses would make the enrollment tests worthless.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createKeyAndCsr } from "../../src/enroll/csr.ts";
import { x509 } from "../../src/pki/x509.ts";
import { createProvisionerKey, signOneTimeToken, type TokenClaims } from "./one-time-token.ts";
import { issueFromDouble, type StepCaDouble, startStepCaDouble } from "./stepca-double.ts";

let ca: StepCaDouble;
beforeAll(async () => {
  ca = await startStepCaDouble({ backdateMs: 0 });
});
afterAll(async () => {
  await ca.close();
});

async function call(
  method: string,
  path: string,
  body?: unknown,
  client?: { cert: string; key: string },
): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${ca.url}${path}`, {
    method,
    body: body === undefined ? undefined : JSON.stringify(body),
    headers: body === undefined ? {} : { "content-type": "application/json" },
    tls: { ca: ca.rootPem, ...(client ?? {}) },
  } as RequestInit);
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

async function signWith(claims: Partial<TokenClaims>, csrFor = { cn: "svc", sans: ["svc"] }) {
  const ott = await signOneTimeToken(ca.provisioner, {
    aud: ca.signAudience,
    sub: "svc",
    sans: ["svc"],
    ...claims,
  });
  const { csrPem } = await createKeyAndCsr(csrFor.cn, csrFor.sans);
  return call("POST", "/1.0/sign", { csr: csrPem, ott });
}

const now = () => Math.floor(Date.now() / 1000);

describe("read-only endpoints", () => {
  test("/health, /roots, /root/{sha256} (hex, any case, dashes), unknown root 404", async () => {
    expect(await call("GET", "/health")).toEqual({ status: 200, json: { status: "ok" } });
    expect(await call("GET", "/roots")).toEqual({ status: 200, json: { crts: [ca.rootPem] } });
    const dashed = ca.rootFingerprint
      .toUpperCase()
      .replace(/(.{8})/g, "$1-")
      .replace(/-$/, "");
    expect(await call("GET", `/root/${dashed}`)).toEqual({ status: 200, json: { ca: ca.rootPem } });
    expect((await call("GET", `/root/${"00".repeat(32)}`)).status).toBe(404);
  });
});

describe("POST /1.0/sign", () => {
  test("201 with crt, ca = certChain[1], certChain = [leaf, intermediate]", async () => {
    const r = await signWith({});
    expect(r.status).toBe(201);
    const chain = r.json.certChain as string[];
    expect(chain).toHaveLength(2);
    expect(r.json.crt).toBe(chain[0]);
    expect(r.json.ca).toBe(chain[1]);
    const leaf = new x509.X509Certificate(chain[0]!);
    expect(leaf.getExtension(x509.ExtendedKeyUsageExtension)!.usages.sort()).toEqual(
      ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"].sort(),
    );
  });

  const cases: [string, Partial<TokenClaims>, number][] = [
    ["wrong audience", { aud: "https://elsewhere/1.0/sign" }, 401],
    ["expired beyond the one-minute leeway", { nbf: now() - 600, exp: now() - 61 }, 401],
    ["expired within the leeway", { nbf: now() - 600, exp: now() - 30 }, 201],
    ["not yet valid beyond the leeway", { nbf: now() + 90, exp: now() + 400 }, 401],
    ["not yet valid within the leeway", { nbf: now() + 30, exp: now() + 400 }, 201],
    ["another issuer (provisioner name)", { iss: "someone-else" }, 401],
    ["empty subject", { sub: "" }, 401],
  ];
  test.each(cases.map(([n, c, s]) => [`${n} → ${s}`, c, s] as const))(
    "token %s",
    async (_name, claims, status) => {
      const csrFor = claims.sub === "" ? { cn: "", sans: ["svc"] } : undefined;
      expect((await signWith(claims, csrFor)).status).toBe(status);
    },
  );

  test("a token signed by another key under the provisioner's kid → 401", async () => {
    const impostor = await createProvisionerKey(ca.provisioner.name);
    const ott = await signOneTimeToken(
      impostor,
      { aud: ca.signAudience, sub: "svc" },
      { kid: ca.provisioner.kid },
    );
    const { csrPem } = await createKeyAndCsr("svc", ["svc"]);
    expect((await call("POST", "/1.0/sign", { csr: csrPem, ott })).status).toBe(401);
  });

  test("the same jti twice → 401, the reason logged as step-ca does", async () => {
    expect((await signWith({ jti: "once" })).status).toBe(201);
    const again = await signWith({ jti: "once" });
    expect(again.status).toBe(401);
    expect(ca.rejections.at(-1)).toContain("token already used");
    // The client sees the CA's generic text, not the reason.
    expect(String(again.json.message)).not.toContain("already used");
  });

  test("CSR must match the token: CN ≠ sub or other SANs → 403", async () => {
    expect((await signWith({}, { cn: "other", sans: ["svc"] })).status).toBe(403);
    expect((await signWith({}, { cn: "svc", sans: ["svc", "extra"] })).status).toBe(403);
  });

  test("malformed requests → 400: no csr, tampered csr, no ott", async () => {
    const { csrPem } = await createKeyAndCsr("svc", ["svc"]);
    const ott = await signOneTimeToken(ca.provisioner, { aud: ca.signAudience, sub: "svc" });
    expect((await call("POST", "/1.0/sign", { ott })).status).toBe(400);
    const der = new Uint8Array(new x509.Pkcs10CertificateRequest(csrPem).rawData);
    der[der.length - 5]! ^= 0xff; // corrupt the signature
    const tampered = x509.PemConverter.encode(der.buffer, "CERTIFICATE REQUEST");
    expect((await call("POST", "/1.0/sign", { csr: tampered, ott })).status).toBe(400);
    expect((await call("POST", "/1.0/sign", { csr: csrPem })).status).toBe(400);
  });
});

describe("POST /1.0/renew", () => {
  test("no client certificate → 400; one from another CA → 401; ours → 201 same key", async () => {
    expect((await call("POST", "/1.0/renew", "")).status).toBe(400);
    const other = await startStepCaDouble();
    try {
      const foreign = await issueFromDouble(other.state.intermediate, "x", ["x"], 60_000);
      const r = await call("POST", "/1.0/renew", "", {
        cert: foreign.certPem + foreign.chainPem,
        key: foreign.keyPem,
      });
      expect(r.status).toBe(401);
    } finally {
      await other.close();
    }
    const mine = await issueFromDouble(ca.state.intermediate, "x", ["x"], 60_000);
    const r = await call("POST", "/1.0/renew", "", {
      cert: mine.certPem + mine.chainPem,
      key: mine.keyPem,
    });
    expect(r.status).toBe(201);
    const renewed = new x509.X509Certificate(r.json.crt as string);
    const old = new x509.X509Certificate(mine.certPem);
    expect(Buffer.from(renewed.publicKey.rawData).equals(Buffer.from(old.publicKey.rawData))).toBe(
      true,
    );
    expect(renewed.serialNumber).not.toBe(old.serialNumber);
  });
});
