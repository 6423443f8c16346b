// Decides which host a request really goes to, and refuses requests whose names disagree
// (THREATS 2): inside an intercepted CONNECT tunnel the CONNECT target, the TLS SNI, the
// absolute-form authority (if any) and the Host field must all name the same canonical host
// and port; for plain-HTTP absolute-form requests the target's authority and Host must agree.
// Policy and credential bindings then use only the returned host. It must never pick one of
// two disagreeing names: a mismatch is 421, an unparseable name 400, and nothing is swapped.

import { type CanonicalAuthority, canonicalHost, formatAuthority, parseAuthority } from "./host.ts";
import { allow, refuse, type Verdict } from "./verdict.ts";

export interface HostAgreementInput {
  /** The CONNECT request-target (`host:port`), when the request came through a tunnel. */
  readonly connectTarget?: string;
  /** The SNI the agent sent in the intercepted TLS handshake (absent for some IP targets). */
  readonly sni?: string;
  /** The request's absolute-form authority, if it used absolute-form. */
  readonly absoluteAuthority?: string;
  /** The scheme of an absolute-form target (sets the default port). */
  readonly absoluteScheme?: "http" | "https";
  /** The Host field value (absent only on HTTP/1.0). */
  readonly hostHeader?: string;
}

/** Where a request goes: the one host all its names agreed on, and the scheme towards it. */
export interface Destination {
  readonly target: CanonicalAuthority;
  readonly scheme: "http" | "https";
}

/** Refused: `bad-request` (400) for a name that cannot be read, `misdirected` (421) for disagreement. */
export type HostAgreement = Verdict<Destination>;

const same = (a: CanonicalAuthority, b: CanonicalAuthority) =>
  a.host === b.host && a.port === b.port;

export function resolveRequestHost(input: HostAgreementInput): HostAgreement {
  const tunnel = input.connectTarget !== undefined;
  let target: CanonicalAuthority;
  let scheme: "http" | "https";
  if (tunnel) {
    const t = parseAuthority(input.connectTarget!);
    if (!t.ok) return refuse("bad-request", `invalid CONNECT target (${t.error.code})`);
    target = t.value;
    scheme = "https";
    if (input.sni !== undefined && input.sni !== "") {
      const s = canonicalHost(input.sni);
      if (!s.ok) return refuse("bad-request", `invalid SNI (${s.error.code})`);
      if (s.value.host !== target.host) {
        return refuse(
          "misdirected",
          `SNI does not match CONNECT target ${formatAuthority(target, target.port)}`,
        );
      }
    }
    if (input.absoluteAuthority !== undefined) {
      if (input.absoluteScheme !== "https") {
        return refuse("misdirected", "plain http:// target inside a TLS tunnel");
      }
      const a = parseAuthority(input.absoluteAuthority, 443);
      if (!a.ok) return refuse("bad-request", `invalid request target authority (${a.error.code})`);
      if (!same(a.value, target)) {
        return refuse("misdirected", "request target does not match CONNECT target");
      }
    }
  } else {
    if (input.absoluteAuthority === undefined) {
      return refuse("bad-request", "no destination: neither CONNECT nor absolute-form");
    }
    scheme = input.absoluteScheme ?? "http";
    const a = parseAuthority(input.absoluteAuthority, scheme === "https" ? 443 : 80);
    if (!a.ok) return refuse("bad-request", `invalid request target authority (${a.error.code})`);
    target = a.value;
  }
  if (input.hostHeader !== undefined) {
    const h = parseAuthority(input.hostHeader, scheme === "https" ? 443 : 80);
    if (!h.ok) return refuse("bad-request", `invalid Host (${h.error.code})`);
    if (!same(h.value, target)) {
      return refuse(
        "misdirected",
        `Host does not match the destination ${formatAuthority(target, target.port)}`,
      );
    }
  }
  return allow({ target, scheme });
}
