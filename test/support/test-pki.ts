// A throwaway PKI for test upstreams: its own root (which the proxy trusts through
// SLAPENIR_UPSTREAM_CA) and server certificates for the names tests dial. Test-only.

import {
  DAY_MS,
  exportPrivateKeyPem,
  generateP256KeyPair,
  OID_SERVER_AUTH,
  P256_ALGORITHM,
  randomSerialHex,
  x509,
} from "../../src/pki/x509.ts";

export interface TestCert {
  readonly certPem: string;
  readonly keyPem: string;
}

export interface TestCa extends TestCert {
  issue(names: readonly string[], opts?: { notBefore?: Date; notAfter?: Date }): Promise<TestCert>;
}

export async function createTestCa(name = "Test Upstream Root"): Promise<TestCa> {
  const keys = await generateP256KeyPair();
  const now = Date.now();
  const root = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: `CN=${name}`,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 30 * DAY_MS),
    signingAlgorithm: P256_ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  const certPem = root.toString("pem");
  const keyPem = await exportPrivateKeyPem(keys.privateKey);
  return {
    certPem,
    keyPem,
    async issue(names, opts = {}) {
      const leafKeys = await generateP256KeyPair();
      const sans = names.map((n) =>
        /^[0-9.]+$/.test(n) || n.includes(":")
          ? { type: "ip" as const, value: n }
          : { type: "dns" as const, value: n },
      );
      const cert = await x509.X509CertificateGenerator.create({
        serialNumber: randomSerialHex(),
        subject: `CN=${names[0]}`,
        issuer: root.subject,
        notBefore: opts.notBefore ?? new Date(now - DAY_MS),
        notAfter: opts.notAfter ?? new Date(now + 30 * DAY_MS),
        signingAlgorithm: P256_ALGORITHM,
        publicKey: leafKeys.publicKey,
        signingKey: keys.privateKey,
        extensions: [
          new x509.BasicConstraintsExtension(false, undefined, true),
          new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
          new x509.ExtendedKeyUsageExtension([OID_SERVER_AUTH], false),
          new x509.SubjectAlternativeNameExtension(sans, false),
        ],
      });
      return {
        certPem: cert.toString("pem"),
        keyPem: await exportPrivateKeyPem(leafKeys.privateKey),
      };
    },
  };
}

/** A self-signed server certificate (no CA behind it), for "untrusted upstream" tests. */
export async function createSelfSignedServer(names: readonly string[]): Promise<TestCert> {
  const keys = await generateP256KeyPair();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: `CN=${names[0]}`,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + 30 * DAY_MS),
    signingAlgorithm: P256_ALGORITHM,
    keys,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([OID_SERVER_AUTH], false),
      new x509.SubjectAlternativeNameExtension(
        names.map((n) => ({ type: "dns" as const, value: n })),
        false,
      ),
    ],
  });
  return { certPem: cert.toString("pem"), keyPem: await exportPrivateKeyPem(keys.privateKey) };
}
