// Derives an agent's identity from the client certificate the TLS stack accepted, and refuses
// certificates that chain correctly but must still not act as an agent: no clientAuth EKU, a
// CA certificate, anything the interception CA signed, a locally denylisted serial or
// fingerprint, or outside its validity window (the TLS stack checks dates too; we check again
// because Bun has had bugs in client-certificate verification).
//
// Pure: no I/O, no clock (the caller passes `now`), no logging. It must never accept a
// certificate without a name, and never let the subject CN override the agent SAN URI.

import type { PeerCertificate } from "node:tls";
import { AGENT_NAME_RE } from "./embedded-ca.ts";
import {
  AGENT_URI_PREFIX,
  normalizeFingerprint,
  normalizeSerialHex,
  OID_CLIENT_AUTH,
  sha256Fingerprint,
  x509,
} from "./x509.ts";

export interface AgentIdentity {
  /** The agent name policy, bindings and the audit log key on. */
  readonly name: string;
  /** Where the name came from. */
  readonly nameSource: "san-uri" | "subject-cn";
  readonly subject: string;
  readonly issuer: string;
  /** Lower-case hex, no leading zeros. */
  readonly serial: string;
  /** SHA-256 of the DER, lower-case hex. */
  readonly fingerprint256: string;
  readonly notBefore: Date;
  readonly notAfter: Date;
}

export type IdentityRejectCode =
  | "no-certificate"
  | "garbled"
  | "ca-certificate"
  | "wrong-eku"
  | "interception-issued"
  | "denylisted"
  | "expired"
  | "not-yet-valid"
  | "no-name"
  | "ambiguous-name";

export type IdentityDecision =
  | { readonly ok: true; readonly identity: AgentIdentity }
  | {
      readonly ok: false;
      readonly code: IdentityRejectCode;
      /** Short, log-safe explanation (certificates are not secret; no key material exists here). */
      readonly reason: string;
      readonly serial?: string;
      readonly fingerprint256?: string;
    };

/** How to recognise the interception CA: its subject and key identifier. */
export interface InterceptionCaMarker {
  readonly subject: string;
  readonly keyId: string | undefined;
}

export interface IdentityRules {
  readonly interceptionCa: InterceptionCaMarker | undefined;
  readonly deniedSerials: ReadonlySet<string>;
  readonly deniedFingerprints: ReadonlySet<string>;
  readonly now: Date;
}

/** Build the marker once at start from the interception CA certificate. */
export function interceptionCaMarker(cert: x509.X509Certificate): InterceptionCaMarker {
  return {
    subject: cert.subject,
    keyId: cert.getExtension(x509.SubjectKeyIdentifierExtension)?.keyId.toLowerCase(),
  };
}

/** Builds the denylist sets from configured strings (serials and SHA-256 fingerprints). */
export function denylistSets(list: {
  serials: readonly string[];
  fingerprints: readonly string[];
}): {
  deniedSerials: ReadonlySet<string>;
  deniedFingerprints: ReadonlySet<string>;
} {
  return {
    deniedSerials: new Set(list.serials.map(normalizeSerialHex)),
    deniedFingerprints: new Set(list.fingerprints.map(normalizeFingerprint)),
  };
}

/** What node:tls gives, raw DER, or PEM. */
export type PeerCertificateInput = PeerCertificate | Uint8Array | string | null | undefined;

export function deriveAgentIdentity(
  peer: PeerCertificateInput,
  rules: IdentityRules,
): IdentityDecision {
  const der = toDer(peer);
  if (der === null) return reject("no-certificate", "no client certificate was presented");
  if (der === "garbled") return reject("garbled", "the client certificate cannot be parsed");
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(der);
  } catch {
    return reject("garbled", "the client certificate cannot be parsed");
  }
  const serial = normalizeSerialHex(cert.serialNumber);
  const fingerprint256 = sha256Fingerprint(der);
  const ids = { serial, fingerprint256 };

  if (rules.deniedSerials.has(serial) || rules.deniedFingerprints.has(fingerprint256)) {
    return reject("denylisted", "the client certificate is on the local denylist", ids);
  }
  const now = rules.now.getTime();
  if (cert.notAfter.getTime() <= now) {
    return reject(
      "expired",
      `the client certificate expired at ${cert.notAfter.toISOString()}`,
      ids,
    );
  }
  if (cert.notBefore.getTime() > now) {
    return reject(
      "not-yet-valid",
      `the client certificate is valid from ${cert.notBefore.toISOString()}`,
      ids,
    );
  }
  if (cert.getExtension(x509.BasicConstraintsExtension)?.ca === true) {
    return reject("ca-certificate", "a CA certificate cannot be an agent identity", ids);
  }
  const eku = cert.getExtension(x509.ExtendedKeyUsageExtension);
  if (!eku?.usages.map(String).includes(OID_CLIENT_AUTH)) {
    return reject(
      "wrong-eku",
      "the client certificate lacks the clientAuth extended key usage",
      ids,
    );
  }
  const ica = rules.interceptionCa;
  if (ica) {
    const aki = cert.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId?.toLowerCase();
    if (cert.issuer === ica.subject || (ica.keyId !== undefined && aki === ica.keyId)) {
      return reject(
        "interception-issued",
        "the client certificate was issued by the interception CA",
        ids,
      );
    }
  }

  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  const agentUris = (san?.names.items ?? [])
    .filter((g) => g.type === "url" && g.value.startsWith(AGENT_URI_PREFIX))
    .map((g) => g.value.slice(AGENT_URI_PREFIX.length));
  let name: string;
  let nameSource: AgentIdentity["nameSource"];
  if (agentUris.length > 1) {
    return reject("ambiguous-name", "the client certificate carries more than one agent URI", ids);
  }
  if (agentUris.length === 1) {
    name = agentUris[0]!;
    nameSource = "san-uri";
  } else {
    const cns = cert.subjectName.getField("CN");
    if (cns.length > 1) {
      return reject("ambiguous-name", "the client certificate subject has more than one CN", ids);
    }
    name = cns[0] ?? "";
    nameSource = "subject-cn";
  }
  if (!AGENT_NAME_RE.test(name)) {
    return reject("no-name", "the client certificate names no valid agent (SAN URI or CN)", ids);
  }
  return {
    ok: true,
    identity: {
      name,
      nameSource,
      subject: cert.subject,
      issuer: cert.issuer,
      serial,
      fingerprint256,
      notBefore: cert.notBefore,
      notAfter: cert.notAfter,
    },
  };
}

function reject(
  code: IdentityRejectCode,
  reason: string,
  ids: { serial?: string; fingerprint256?: string } = {},
): IdentityDecision {
  return { ok: false, code, reason, ...ids };
}

function toDer(peer: PeerCertificateInput): Uint8Array | null | "garbled" {
  if (peer === null || peer === undefined) return null;
  if (typeof peer === "string") {
    try {
      const block = x509.PemConverter.decodeWithHeaders(peer).find((b) => b.type === "CERTIFICATE");
      return block ? new Uint8Array(block.rawData) : "garbled";
    } catch {
      return "garbled";
    }
  }
  if (peer instanceof Uint8Array) return peer.length > 0 ? peer : null;
  // node:tls returns {} (no `raw`) when the peer sent no certificate.
  const raw = (peer as Partial<PeerCertificate>).raw;
  return raw && raw.length > 0 ? new Uint8Array(raw) : null;
}
