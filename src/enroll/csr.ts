// The proxy's key pair and certificate signing request for Step-CA's /1.0/sign, made with
// @peculiar/x509: ECDSA P-256, CN = the token's subject, SANs = the token's sans (step-ca
// refuses a CSR whose CN or SAN set differs from the token). Must never log or return the
// private key other than as the PEM the caller asked for.
import { exportPrivateKeyPem, generateP256KeyPair, P256_ALGORITHM, x509 } from "../pki/x509.ts";

export interface KeyAndCsr {
  keyPem: string;
  csrPem: string;
}

/** Classifies a SAN string as step-cli does: IP, URI (has a scheme), e-mail, else DNS. */
export function generalName(value: string): x509.JsonGeneralName {
  if (
    /^\d{1,3}(\.\d{1,3}){3}$/.test(value) ||
    (/^[0-9a-f:]+$/i.test(value) && value.includes(":"))
  ) {
    return { type: "ip", value };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(value)) return { type: "url", value };
  if (value.includes("@")) return { type: "email", value };
  return { type: "dns", value };
}

export async function createKeyAndCsr(
  subject: string,
  sans: readonly string[],
): Promise<KeyAndCsr> {
  const keys = await generateP256KeyPair();
  const csr = await x509.Pkcs10CertificateRequestGenerator.create({
    name: [{ CN: [subject] }],
    keys,
    signingAlgorithm: P256_ALGORITHM,
    extensions:
      sans.length > 0 ? [new x509.SubjectAlternativeNameExtension(sans.map(generalName))] : [],
  });
  return { keyPem: await exportPrivateKeyPem(keys.privateKey), csrPem: csr.toString("pem") };
}
