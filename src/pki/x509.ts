// The one place that wires @peculiar/x509 to the runtime's WebCrypto, plus the small
// certificate helpers every PKI module shares (P-256 keys, PEM, serials, DER for the one
// extension the library has no class for). It must never log, write files or hold state
// beyond the crypto provider it installs once.

import "reflect-metadata"; // @peculiar/x509 2.x resolves its parsers through tsyringe.
import { createHash, randomBytes } from "node:crypto";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(crypto);

export { x509 };

/** ECDSA P-256 with SHA-256: every key and signature the PKI makes. */
export const P256_ALGORITHM = { name: "ECDSA", namedCurve: "P-256", hash: "SHA-256" } as const;

export const OID_SERVER_AUTH = "1.3.6.1.5.5.7.3.1";
export const OID_CLIENT_AUTH = "1.3.6.1.5.5.7.3.2";
export const OID_NAME_CONSTRAINTS = "2.5.29.30";

/** SAN URI prefix of agent certificates the embedded CA issues (SPIFFE-style). */
export const AGENT_URI_PREFIX = "spiffe://slapenir/agent/";
/** Host part of that URI; the interception CA excludes it by name constraint. */
export const AGENT_URI_HOST = "slapenir";

export const DAY_MS = 86_400_000;

export async function generateP256KeyPair(): Promise<CryptoKeyPair> {
  // Extractable: the embedded CA writes keys to disk and node:tls wants PEM.
  return (await crypto.subtle.generateKey(P256_ALGORITHM, true, [
    "sign",
    "verify",
  ])) as CryptoKeyPair;
}

export async function exportPrivateKeyPem(key: CryptoKey): Promise<string> {
  const der = await crypto.subtle.exportKey("pkcs8", key);
  const pem = x509.PemConverter.encode(der, "PRIVATE KEY");
  new Uint8Array(der).fill(0);
  return pem.endsWith("\n") ? pem : `${pem}\n`;
}

/** Imports a PKCS#8 P-256 private key; throws a plain Error without any key bytes in it. */
export async function importPrivateKeyPem(pem: string): Promise<CryptoKey> {
  const blocks = x509.PemConverter.decodeWithHeaders(pem);
  const block = blocks.find((b) => b.type === "PRIVATE KEY");
  if (!block) throw new Error("no PKCS#8 'PRIVATE KEY' PEM block");
  const der = new Uint8Array(block.rawData);
  try {
    return await crypto.subtle.importKey("pkcs8", der, P256_ALGORITHM, true, ["sign"]);
  } catch {
    throw new Error("the PKCS#8 key is not a valid P-256 private key");
  } finally {
    der.fill(0);
  }
}

export function certToPem(cert: x509.X509Certificate): string {
  const pem = cert.toString("pem");
  return pem.endsWith("\n") ? pem : `${pem}\n`;
}

/** A random positive 128-bit serial, hex, as RFC 5280 asks (unique, ≤ 20 octets). */
export function randomSerialHex(): string {
  const bytes = randomBytes(16);
  bytes[0] = (bytes[0]! & 0x7f) | 0x40; // positive, and no leading zero octet to strip
  return bytes.toString("hex");
}

/** SHA-256 of the DER encoding, lower-case hex without separators. */
export function sha256Fingerprint(der: Uint8Array | ArrayBuffer): string {
  return createHash("sha256")
    .update(der instanceof Uint8Array ? der : new Uint8Array(der))
    .digest("hex");
}

/** Normalises a serial written by humans or tools (colons, case, leading zeros) for comparison. */
export function normalizeSerialHex(serial: string): string {
  const hex = serial
    .replace(/[:\s]/g, "")
    .toLowerCase()
    .replace(/^0+(?=.)/, "");
  return hex;
}

/** Normalises a fingerprint (colons, case, optional `sha256:` prefix) for comparison. */
export function normalizeFingerprint(fp: string): string {
  return fp
    .replace(/^sha256:/i, "")
    .replace(/[:\s]/g, "")
    .toLowerCase();
}

// DER, just enough for NameConstraints (x509 has no extension class for it).
function derLength(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  for (let v = n; v > 0; v >>= 8) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}

function derTlv(tag: number, content: readonly number[]): number[] {
  return [tag, ...derLength(content.length), ...content];
}

/**
 * NameConstraints { excludedSubtrees [1] { GeneralSubtree { base uniformResourceIdentifier } } }
 * for the given URI hosts. RFC 5280 §4.2.1.10: a URI constraint names the host part.
 */
export function nameConstraintsExcludingUriHosts(hosts: readonly string[]): x509.Extension {
  const subtrees: number[] = [];
  for (const host of hosts) {
    const ia5 = [...Buffer.from(host, "ascii")];
    subtrees.push(...derTlv(0x30, derTlv(0x86, ia5))); // GeneralSubtree { [6] IA5String }
  }
  const value = derTlv(0x30, derTlv(0xa1, subtrees));
  return new x509.Extension(OID_NAME_CONSTRAINTS, true, new Uint8Array(value));
}
