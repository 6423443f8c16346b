// Derives an agent's identity from the client certificate the TLS stack accepted, and refuses
// certificates that chain correctly but must still not act as an agent: no clientAuth EKU, a
// CA certificate, anything the interception CA signed, a locally denylisted serial,
// fingerprint or agent name, or outside its validity window (the TLS stack checks dates too; we check again
// because Bun has had bugs in client-certificate verification).
//
// Pure decisions: no I/O, no clock (the caller passes `now`), no logging; AgentIdentityCache
// only memoises the parse. It must never accept a
// certificate without a name, and never let the subject CN override the agent SAN URI.

import type { PeerCertificate } from "node:tls";
import { AGENT_NAME_RE } from "../policy/agent-name.ts";
import type { Allowed, Refused } from "../policy/verdict.ts";
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

/**
 * Refused: a log-safe reason (certificates are not secret), the certificate's ids if it was
 * read, and the agent it names if that is known (a denied name).
 */
export type IdentityDecision =
  | Allowed<AgentIdentity>
  | (Refused<IdentityRejectCode> & {
      readonly serial?: string;
      readonly fingerprint256?: string;
      readonly agent?: string;
    });

/** How to recognise the interception CA: its subject and key identifier. */
export interface InterceptionCaMarker {
  readonly subject: string;
  readonly keyId: string | undefined;
}

export interface IdentityRules {
  readonly interceptionCa: InterceptionCaMarker | undefined;
  /** Agent names refused whatever certificate carries them (a renewal keeps the name). */
  readonly deniedAgents: ReadonlySet<string>;
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

/** Builds the denylist sets from configured strings (names, serials, SHA-256 fingerprints). */
export function denylistSets(list: {
  agents: readonly string[];
  serials: readonly string[];
  fingerprints: readonly string[];
}): Pick<IdentityRules, "deniedAgents" | "deniedSerials" | "deniedFingerprints"> {
  return {
    deniedAgents: new Set(list.agents),
    deniedSerials: new Set(list.serials.map(normalizeSerialHex)),
    deniedFingerprints: new Set(list.fingerprints.map(normalizeFingerprint)),
  };
}

/** What node:tls gives, raw DER, or PEM. */
export type PeerCertificateInput = PeerCertificate | Uint8Array | string | null | undefined;

/** What a certificate says, read once (parsing is the expensive part: ~1 ms in @peculiar/x509). */
export interface CertFacts {
  readonly serial: string;
  readonly fingerprint256: string;
  readonly subject: string;
  readonly issuer: string;
  readonly authorityKeyId: string | undefined;
  readonly notBefore: Date;
  readonly notAfter: Date;
  readonly isCa: boolean;
  readonly hasClientAuth: boolean;
  /** Names after the agent URI prefix, in SAN order. */
  readonly agentUris: readonly string[];
  readonly commonNames: readonly string[];
}

/** Parses a DER certificate into the facts identity decisions need; null when unparseable. */
export function readCertFacts(der: Uint8Array): CertFacts | null {
  let cert: x509.X509Certificate;
  try {
    cert = new x509.X509Certificate(der);
  } catch {
    return null;
  }
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  return Object.freeze({
    serial: normalizeSerialHex(cert.serialNumber),
    fingerprint256: sha256Fingerprint(der),
    subject: cert.subject,
    issuer: cert.issuer,
    authorityKeyId: cert.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId?.toLowerCase(),
    notBefore: cert.notBefore,
    notAfter: cert.notAfter,
    isCa: cert.getExtension(x509.BasicConstraintsExtension)?.ca === true,
    hasClientAuth:
      cert
        .getExtension(x509.ExtendedKeyUsageExtension)
        ?.usages.map(String)
        .includes(OID_CLIENT_AUTH) ?? false,
    agentUris: (san?.names.items ?? [])
      .filter((g) => g.type === "url" && g.value.startsWith(AGENT_URI_PREFIX))
      .map((g) => g.value.slice(AGENT_URI_PREFIX.length)),
    commonNames: cert.subjectName.getField("CN"),
  });
}

export function deriveAgentIdentity(
  peer: PeerCertificateInput,
  rules: IdentityRules,
): IdentityDecision {
  const der = toDer(peer);
  if (der === null) return reject("no-certificate", "no client certificate was presented");
  if (der === "garbled") return reject("garbled", "the client certificate cannot be parsed");
  const facts = readCertFacts(der);
  if (facts === null) return reject("garbled", "the client certificate cannot be parsed");
  return decideAgentIdentity(facts, rules);
}

/**
 * Memoises `readCertFacts` by certificate fingerprint (agents reconnect with the same
 * certificate for its whole lifetime), then decides afresh every time: dates and the denylist
 * are always checked against the current rules. Bounded; oldest entries go first.
 */
export class AgentIdentityCache {
  private readonly facts = new Map<string, CertFacts>();
  constructor(private readonly capacity = 1024) {}

  derive(peer: PeerCertificateInput, rules: IdentityRules): IdentityDecision {
    const der = toDer(peer);
    if (der === null) return reject("no-certificate", "no client certificate was presented");
    if (der === "garbled") return reject("garbled", "the client certificate cannot be parsed");
    const key = sha256Fingerprint(der);
    let facts = this.facts.get(key);
    if (!facts) {
      const read = readCertFacts(der);
      if (read === null) return reject("garbled", "the client certificate cannot be parsed");
      facts = read;
      this.facts.set(key, facts);
      if (this.facts.size > this.capacity)
        this.facts.delete(this.facts.keys().next().value as string);
    }
    return decideAgentIdentity(facts, rules);
  }

  get size(): number {
    return this.facts.size;
  }
}

export function decideAgentIdentity(facts: CertFacts, rules: IdentityRules): IdentityDecision {
  const ids = { serial: facts.serial, fingerprint256: facts.fingerprint256 };
  if (rules.deniedSerials.has(facts.serial) || rules.deniedFingerprints.has(facts.fingerprint256)) {
    return reject("denylisted", "the client certificate is on the local denylist", ids);
  }
  const now = rules.now.getTime();
  if (facts.notAfter.getTime() <= now) {
    return reject(
      "expired",
      `the client certificate expired at ${facts.notAfter.toISOString()}`,
      ids,
    );
  }
  if (facts.notBefore.getTime() > now) {
    return reject(
      "not-yet-valid",
      `the client certificate is valid from ${facts.notBefore.toISOString()}`,
      ids,
    );
  }
  if (facts.isCa)
    return reject("ca-certificate", "a CA certificate cannot be an agent identity", ids);
  if (!facts.hasClientAuth) {
    return reject(
      "wrong-eku",
      "the client certificate lacks the clientAuth extended key usage",
      ids,
    );
  }
  const ica = rules.interceptionCa;
  if (
    ica &&
    (facts.issuer === ica.subject ||
      (ica.keyId !== undefined && facts.authorityKeyId === ica.keyId))
  ) {
    return reject(
      "interception-issued",
      "the client certificate was issued by the interception CA",
      ids,
    );
  }
  let name: string;
  let nameSource: AgentIdentity["nameSource"];
  if (facts.agentUris.length > 1) {
    return reject("ambiguous-name", "the client certificate carries more than one agent URI", ids);
  }
  if (facts.agentUris.length === 1) {
    name = facts.agentUris[0]!;
    nameSource = "san-uri";
  } else {
    if (facts.commonNames.length > 1) {
      return reject("ambiguous-name", "the client certificate subject has more than one CN", ids);
    }
    name = facts.commonNames[0] ?? "";
    nameSource = "subject-cn";
  }
  if (!AGENT_NAME_RE.test(name)) {
    return reject("no-name", "the client certificate names no valid agent (SAN URI or CN)", ids);
  }
  if (rules.deniedAgents.has(name)) {
    return reject("denylisted", `agent ${name} is on the local denylist`, { ...ids, agent: name });
  }
  return {
    ok: true,
    reason: "",
    value: {
      name,
      nameSource,
      subject: facts.subject,
      issuer: facts.issuer,
      serial: facts.serial,
      fingerprint256: facts.fingerprint256,
      notBefore: facts.notBefore,
      notAfter: facts.notAfter,
    },
  };
}

function reject(
  code: IdentityRejectCode,
  reason: string,
  ids: { serial?: string; fingerprint256?: string; agent?: string } = {},
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
