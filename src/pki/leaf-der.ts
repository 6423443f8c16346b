// Hand-built DER for the one certificate shape the interception path mints: a TLS server leaf
// (v3, ECDSA P-256/SHA-256, CN + one SAN, basicConstraints CA:false, keyUsage
// digitalSignature, EKU serverAuth, authority key id). @peculiar/x509 takes about 1 ms per
// certificate (generic ASN.1 schema work and a re-parse); this takes one signature plus a few
// microseconds of byte copying. Everything invariant (issuer name, leaf public key, fixed
// extensions) is encoded once per template.
//
// It must never mint anything but this leaf shape: no CA bit, no clientAuth, exactly one
// SAN. Tests parse its output with @peculiar/x509 and OpenSSL and complete TLS handshakes.

import { parseDottedQuad, parseIPv6 } from "../policy/ip-address.ts";
import { randomSerialHex } from "./x509.ts";

const ECDSA_SHA256_ALG = [0x30, 0x0a, 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x04, 0x03, 0x02];
const OID_CN = [0x06, 0x03, 0x55, 0x04, 0x03];
// Extensions whose bytes never change.
const EXT_BASIC_CONSTRAINTS_LEAF = [
  0x30, 0x0c, 0x06, 0x03, 0x55, 0x1d, 0x13, 0x01, 0x01, 0xff, 0x04, 0x02, 0x30, 0x00,
];
const EXT_KEY_USAGE_DIGITAL_SIGNATURE = [
  0x30, 0x0e, 0x06, 0x03, 0x55, 0x1d, 0x0f, 0x01, 0x01, 0xff, 0x04, 0x04, 0x03, 0x02, 0x07, 0x80,
];
const EXT_EKU_SERVER_AUTH = [
  0x30, 0x13, 0x06, 0x03, 0x55, 0x1d, 0x25, 0x04, 0x0c, 0x30, 0x0a, 0x06, 0x08, 0x2b, 0x06, 0x01,
  0x05, 0x05, 0x07, 0x03, 0x01,
];
const OID_SAN = [0x06, 0x03, 0x55, 0x1d, 0x11];
const OID_AKI = [0x06, 0x03, 0x55, 0x1d, 0x23];

function len(n: number): number[] {
  if (n < 0x80) return [n];
  const out: number[] = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) out.unshift(v & 0xff);
  return [0x80 | out.length, ...out];
}

function tlv(tag: number, content: ArrayLike<number>): number[] {
  return [tag, ...len(content.length), ...Array.from(content)];
}

function ascii(s: string): number[] {
  const out: number[] = new Array(s.length);
  for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i) & 0x7f;
  return out;
}

/** UTCTime through 2049, GeneralizedTime after (RFC 5280 §4.1.2.5), whole seconds, Z. */
function time(d: Date): number[] {
  const iso = d.toISOString(); // YYYY-MM-DDTHH:MM:SS.sssZ
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  const year = d.getUTCFullYear();
  return year < 2050 ? tlv(0x17, ascii(digits.slice(2))) : tlv(0x18, ascii(digits));
}

/** Positive INTEGER from unsigned big-endian bytes (minimal, with a 0x00 pad when needed). */
function unsignedInteger(bytes: Uint8Array): number[] {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const body = Array.from(bytes.subarray(i));
  if ((body[0] ?? 0) & 0x80) body.unshift(0);
  return tlv(0x02, body);
}

/** WebCrypto gives ECDSA signatures as r‖s; X.509 wants ECDSA-Sig-Value DER. */
function ecdsaSignatureDer(p1363: Uint8Array): number[] {
  const half = p1363.length / 2;
  return tlv(0x30, [
    ...unsignedInteger(p1363.subarray(0, half)),
    ...unsignedInteger(p1363.subarray(half)),
  ]);
}

export interface LeafTemplateInput {
  /** DER of the issuer's subject Name. */
  readonly issuerNameDer: Uint8Array;
  /** The issuer's subject key identifier (for the authority key identifier), if it has one. */
  readonly issuerKeyId: Uint8Array | undefined;
  /** DER SubjectPublicKeyInfo of the shared leaf key. */
  readonly leafSpkiDer: Uint8Array;
  /** The issuer's private key (ECDSA P-256). */
  readonly issuerKey: CryptoKey;
}

export interface LeafSpec {
  /** A canonical host: DNS name (ASCII), dotted quad or IPv6 text. */
  readonly host: string;
  readonly kind: "dns" | "ip";
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export class LeafTemplate {
  private readonly issuer: number[];
  private readonly spki: number[];
  private readonly fixedExtensions: number[];

  constructor(private readonly input: LeafTemplateInput) {
    this.issuer = Array.from(input.issuerNameDer);
    this.spki = Array.from(input.leafSpkiDer);
    const aki = input.issuerKeyId
      ? tlv(0x30, [...OID_AKI, ...tlv(0x04, tlv(0x30, tlv(0x80, input.issuerKeyId)))])
      : [];
    this.fixedExtensions = [
      ...EXT_BASIC_CONSTRAINTS_LEAF,
      ...EXT_KEY_USAGE_DIGITAL_SIGNATURE,
      ...EXT_EKU_SERVER_AUTH,
      ...aki,
    ];
  }

  /** Returns the DER certificate and its serial (lower-case hex). */
  async mint(spec: LeafSpec): Promise<{ der: Uint8Array; serial: string }> {
    const serial = randomSerialHex();
    let sanName: number[];
    let cn: string;
    if (spec.kind === "dns") {
      sanName = tlv(0x82, ascii(spec.host)); // dNSName [2] IA5String
      cn = spec.host.length <= 64 ? spec.host : "SLAPENIR intercepted";
    } else {
      const bytes = spec.host.includes(":") ? parseIPv6(spec.host) : parseDottedQuad(spec.host);
      if (!bytes) throw new TypeError("not an IP address");
      sanName = tlv(0x87, bytes); // iPAddress [7] OCTET STRING
      cn = "SLAPENIR intercepted";
    }
    const san = tlv(0x30, [...OID_SAN, ...tlv(0x04, tlv(0x30, sanName))]);
    const subject = tlv(0x30, tlv(0x31, tlv(0x30, [...OID_CN, ...tlv(0x0c, ascii(cn))])));
    const tbs = Uint8Array.from(
      tlv(0x30, [
        0xa0,
        0x03,
        0x02,
        0x01,
        0x02, // [0] EXPLICIT version v3
        ...tlv(0x02, hexBytes(serial)),
        ...ECDSA_SHA256_ALG,
        ...this.issuer,
        ...tlv(0x30, [...time(spec.notBefore), ...time(spec.notAfter)]),
        ...subject,
        ...this.spki,
        ...tlv(0xa3, tlv(0x30, [...this.fixedExtensions, ...san])),
      ]),
    );
    const sig = new Uint8Array(
      await crypto.subtle.sign({ name: "ECDSA", hash: "SHA-256" }, this.input.issuerKey, tbs),
    );
    const cert = tlv(0x30, [
      ...tbs,
      ...ECDSA_SHA256_ALG,
      ...tlv(0x03, [0x00, ...ecdsaSignatureDer(sig)]),
    ]);
    return { der: Uint8Array.from(cert), serial };
  }
}

function hexBytes(hex: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < hex.length; i += 2) out.push(Number.parseInt(hex.slice(i, i + 2), 16));
  return out;
}

/** PEM with 64-character lines, as OpenSSL writes it. */
export function derToPem(der: Uint8Array, label = "CERTIFICATE"): string {
  const b64 = Buffer.from(der).toString("base64");
  const lines = b64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}
