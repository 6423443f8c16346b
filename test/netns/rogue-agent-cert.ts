// An impostor's client certificate: a well-formed agent certificate (EKU clientAuth, the
// agent's CN and SPIFFE URI) signed by a CA the proxy has never seen. The proxy must refuse it
// at the TLS handshake exactly as it refuses a client with no certificate. Test-only.

import {
  AGENT_URI_PREFIX,
  DAY_MS,
  exportPrivateKeyPem,
  generateP256KeyPair,
  OID_CLIENT_AUTH,
  P256_ALGORITHM,
  randomSerialHex,
  x509,
} from "../../src/pki/x509.ts";

export interface RogueCert {
  readonly certPem: string;
  readonly keyPem: string;
}

export async function createRogueAgentCert(agentName: string): Promise<RogueCert> {
  const now = Date.now();
  const caKeys = await generateP256KeyPair();
  const ca = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: "CN=SLAPENIR Root CA",
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + DAY_MS),
    signingAlgorithm: P256_ALGORITHM,
    keys: caKeys,
    extensions: [
      new x509.BasicConstraintsExtension(true, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign, true),
    ],
  });
  const keys = await generateP256KeyPair();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: `CN=${agentName}`,
    issuer: ca.subject,
    notBefore: new Date(now - DAY_MS),
    notAfter: new Date(now + DAY_MS),
    signingAlgorithm: P256_ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: caKeys.privateKey,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([OID_CLIENT_AUTH], false),
      new x509.SubjectAlternativeNameExtension(
        [{ type: "url", value: `${AGENT_URI_PREFIX}${agentName}` }],
        false,
      ),
    ],
  });
  return {
    certPem: `${cert.toString("pem")}\n${ca.toString("pem")}\n`,
    keyPem: await exportPrivateKeyPem(keys.privateKey),
  };
}
