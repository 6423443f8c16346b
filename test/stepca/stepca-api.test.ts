// The Step-CA HTTP API as the enrollment uses it, checked against the real step-ca (0.19, from
// Debian's packages) and the project's double alike: status codes, JSON shapes, JWK token
// validation (signature, kid, iss, aud, nbf/exp with one minute of leeway, iat after the CA's
// start, sub, single-use jti), CSR/token agreement, renewal over mTLS, passive revocation, and
// what survives a restart. A double that accepted what step-ca refuses would make every
// enrollment test built on it worthless; a case here failing for the double alone means the
// double is wrong.
import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { connect } from "node:tls";
import { createKeyAndCsr } from "../../src/enroll/csr.ts";
import { x509 } from "../../src/pki/x509.ts";
import {
  createProvisionerKey,
  signOneTimeToken,
  type TokenClaims,
} from "../stepca-double/one-time-token.ts";
import { issueFromDouble, makeCa } from "../stepca-double/stepca-double.ts";
import { afterSecond, type CaUnderTest, decimalSerial } from "./ca-under-test.ts";
import { CA_IMPLEMENTATIONS } from "./implementations.ts";

const now = () => Math.floor(Date.now() / 1000);

for (const impl of CA_IMPLEMENTATIONS) {
  describe.skipIf(impl.skip !== null)(`Step-CA API (${impl.name})`, () => {
    let ca: CaUnderTest;
    beforeAll(async () => {
      ca = await impl.start({ backdateMs: 0 });
    });
    afterAll(async () => {
      await ca?.close();
    });

    async function call(
      method: string,
      path: string,
      body?: unknown,
      client?: { cert: string; key: string },
    ): Promise<{ status: number; json: Record<string, unknown> }> {
      // keepalive: false — Bun 1.4's fetch pools connections by host alone, so a request with a
      // client certificate could ride a connection opened with another one (or none).
      const res = await fetch(`${ca.url}${path}`, {
        method,
        keepalive: false,
        body: body === undefined ? undefined : JSON.stringify(body),
        headers: body === undefined ? {} : { "content-type": "application/json" },
        tls: { ca: ca.rootsBundlePem(), ...(client ?? {}) },
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
      const { csrPem, keyPem } = await createKeyAndCsr(csrFor.cn, csrFor.sans);
      return { ...(await call("POST", "/1.0/sign", { csr: csrPem, ott })), keyPem };
    }

    test("/health, /roots, /root/{sha256} (hex, any case), unknown root 404", async () => {
      expect(await call("GET", "/health")).toEqual({ status: 200, json: { status: "ok" } });
      // 0.19 answers /roots with 201; releases since answer 200 (the client takes both).
      expect(await call("GET", "/roots")).toEqual({
        status: impl.name === "real" ? 201 : 200,
        json: { crts: [ca.rootPem] },
      });
      expect(await call("GET", `/root/${ca.rootFingerprint.toUpperCase()}`)).toEqual({
        status: 200,
        json: { ca: ca.rootPem },
      });
      expect((await call("GET", `/root/${"00".repeat(32)}`)).status).toBe(404);
    });

    describe("POST /1.0/sign", () => {
      test("201 with crt, ca = certChain[1], certChain = [leaf, intermediate], both EKUs", async () => {
        const r = await signWith({});
        expect(r.status).toBe(201);
        const chain = r.json.certChain as string[];
        expect(chain).toHaveLength(2);
        expect(r.json.crt).toBe(chain[0]);
        expect(r.json.ca).toBe(chain[1]);
        const leaf = new x509.X509Certificate(chain[0]!);
        expect({
          issuer: leaf.issuer,
          eku: leaf.getExtension(x509.ExtendedKeyUsageExtension)!.usages.sort(),
        }).toEqual({
          issuer: ca.state.intermediate.cert.subject,
          eku: ["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"].sort(),
        });
      });

      const cases: [string, () => Partial<TokenClaims>, number][] = [
        ["wrong audience", () => ({ aud: "https://elsewhere/1.0/sign" }), 401],
        // step-ca compares audiences without their port (provisioner/collection.go stripPort).
        ["the CA's name with another port", () => ({ aud: "https://127.0.0.1:1/1.0/sign" }), 201],
        [
          "expired beyond the one-minute leeway",
          () => ({ nbf: now() - 600, exp: now() - 61 }),
          401,
        ],
        ["expired within the leeway", () => ({ nbf: now() - 600, exp: now() - 30 }), 201],
        ["not yet valid beyond the leeway", () => ({ nbf: now() + 90, exp: now() + 400 }), 401],
        ["not yet valid within the leeway", () => ({ nbf: now() + 30, exp: now() + 400 }), 201],
        ["another issuer (provisioner name)", () => ({ iss: "someone-else" }), 401],
        ["empty subject", () => ({ sub: "" }), 401],
      ];
      test.each(cases.map(([n, c, s]) => [`${n} → ${s}`, c, s] as const))(
        "token %s",
        async (_name, claims, status) => {
          const c = claims();
          const csrFor = c.sub === "" ? { cn: "", sans: ["svc"] } : undefined;
          expect((await signWith(c, csrFor)).status).toBe(status);
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

      test("the same jti twice → 401, the reason in the CA's log only", async () => {
        const jti = `once-${crypto.randomUUID()}`;
        expect((await signWith({ jti })).status).toBe(201);
        const again = await signWith({ jti });
        expect(again.status).toBe(401);
        await ca.refused("token already used");
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
      test("ours → 201: same key and subject, new serial, the lifetime kept", async () => {
        const signed = await signWith({});
        const crt = signed.json.crt as string;
        const r = await call("POST", "/1.0/renew", "", {
          cert: crt + (signed.json.ca as string),
          key: signed.keyPem,
        });
        expect(r.status).toBe(201);
        const renewed = new x509.X509Certificate(r.json.crt as string);
        const old = new x509.X509Certificate(crt);
        const life = (c: x509.X509Certificate) => c.notAfter.getTime() - c.notBefore.getTime();
        expect({
          key: Buffer.from(renewed.publicKey.rawData).toString("hex"),
          subject: renewed.subject,
          newSerial: renewed.serialNumber !== old.serialNumber,
          lifetime: life(renewed),
        }).toEqual({
          key: Buffer.from(old.publicKey.rawData).toString("hex"),
          subject: old.subject,
          newSerial: true,
          lifetime: life(old),
        });
      });

      test("no client certificate → 400", async () => {
        expect((await call("POST", "/1.0/renew", "")).status).toBe(400);
      });

      test("a client certificate of another CA: the TLS handshake fails (never an answer)", async () => {
        const otherRoot = await makeCa("Another Root", null, 1);
        const foreign = await issueFromDouble(otherRoot, "svc", ["svc"], 60_000);
        const outcome = await new Promise<string>((resolve) => {
          const s = connect({
            host: "127.0.0.1",
            port: ca.port,
            ca: ca.rootsBundlePem(),
            cert: foreign.certPem + foreign.chainPem,
            key: foreign.keyPem,
            checkServerIdentity: () => undefined,
          });
          let answer = "";
          s.on("secureConnect", () =>
            s.write("POST /1.0/renew HTTP/1.1\r\nhost: ca\r\ncontent-length: 0\r\n\r\n"),
          );
          s.on("data", (d: Buffer) => {
            answer += d.toString();
          });
          s.on("error", () => resolve(answer === "" ? "refused" : answer.split("\r\n")[0]!));
          s.on("close", () => resolve(answer === "" ? "refused" : answer.split("\r\n")[0]!));
        });
        expect(outcome).toBe("refused");
      });
    });

    describe("POST /1.0/revoke (passive)", () => {
      test("with a provisioner token: revoked, then its renewal → 401; the token single use", async () => {
        const signed = await signWith({});
        const crt = signed.json.crt as string;
        const serial = decimalSerial(crt);
        const ott = await signOneTimeToken(ca.provisioner, {
          aud: ca.revokeAudience,
          sub: serial,
          sans: [],
        });
        const body = { serial, ott, passive: true, reasonCode: 0, reason: "test" };
        expect(await call("POST", "/1.0/revoke", body)).toEqual({
          status: 200,
          json: { status: "ok" },
        });
        expect((await call("POST", "/1.0/revoke", body)).status).toBe(401);
        const r = await call("POST", "/1.0/renew", "", {
          cert: crt + (signed.json.ca as string),
          key: signed.keyPem,
        });
        expect(r.status).toBe(401);
        await ca.refused("certificate has been revoked");
      });

      test("over mTLS by the certificate itself; another serial → 400; active → 501", async () => {
        const signed = await signWith({});
        const crt = signed.json.crt as string;
        const client = { cert: crt + (signed.json.ca as string), key: signed.keyPem };
        const serial = decimalSerial(crt);
        expect((await call("POST", "/1.0/revoke", { serial, passive: false }, client)).status).toBe(
          501,
        );
        expect(
          (await call("POST", "/1.0/revoke", { serial: `${serial}1`, passive: true }, client))
            .status,
        ).toBe(400);
        expect((await call("POST", "/1.0/revoke", { serial, passive: true }, client)).status).toBe(
          200,
        );
        expect((await call("POST", "/1.0/renew", "", client)).status).toBe(401);
      });
    });

    describe("a restart", () => {
      test("keeps revocations; refuses every token issued before it", async () => {
        const signed = await signWith({});
        const client = {
          cert: (signed.json.crt as string) + (signed.json.ca as string),
          key: signed.keyPem,
        };
        const serial = decimalSerial(signed.json.crt as string);
        expect((await call("POST", "/1.0/revoke", { serial, passive: true }, client)).status).toBe(
          200,
        );
        // step-ca refuses a token whose iat is before its own start (authority/authorize.go):
        // tokens ca-init wrote are void once the CA restarts.
        const early = await signOneTimeToken(ca.provisioner, { aud: ca.signAudience, sub: "svc" });
        await ca.stop();
        // step-ca keeps its start time in whole seconds: a token of that same second passes.
        await afterSecond(now());
        await ca.start();
        const { csrPem } = await createKeyAndCsr("svc", ["svc"]);
        expect((await call("POST", "/1.0/sign", { csr: csrPem, ott: early })).status).toBe(401);
        await ca.refused("token issued before the bootstrap of certificate authority");
        expect((await call("POST", "/1.0/renew", "", client)).status).toBe(401);
        expect((await signWith({})).status).toBe(201);
      });
    });
  });
}
