// Canonical form of a host as dialled, so that the allowlist, credential bindings and the
// CONNECT/SNI/Host agreement check all compare one spelling (THREATS 2, 3). Lower-case, one
// trailing dot dropped, IDN → punycode (node:url domainToASCII), IPv6 without brackets in
// RFC 5952 form, every numeric IPv4 spelling (2130706433, 0177.0.0.1, 0x7f.1, 127.1) and
// IPv4-mapped IPv6 as a dotted quad. It must never guess: userinfo, zone ids, percent-escapes,
// empty labels and other junk are typed errors, not "best effort" hosts.

import { domainToASCII } from "node:url";
import {
  endsInNumber,
  formatIPv4,
  formatIPv6,
  mappedIPv4,
  parseIPv6,
  parseLegacyIPv4,
} from "./ip-address.ts";

export type HostKind = "dns" | "ipv4" | "ipv6";

export interface CanonicalHost {
  /** DNS name (ASCII, lower-case, no trailing dot), dotted quad, or RFC 5952 IPv6 (no brackets). */
  readonly host: string;
  readonly kind: HostKind;
}

export interface CanonicalAuthority extends CanonicalHost {
  readonly port: number;
}

export type HostErrorCode =
  | "empty"
  | "too-long"
  | "userinfo"
  | "invalid-character"
  | "invalid-ipv4"
  | "invalid-ipv6"
  | "zone-id"
  | "invalid-idn"
  | "invalid-label"
  | "bad-port"
  | "missing-port";

export interface HostProblem {
  readonly code: HostErrorCode;
  /** Short text for audit logs; never echoes the input. */
  readonly reason: string;
}

export type HostResult<T> =
  | { readonly ok: true; readonly value: T }
  | { readonly ok: false; readonly error: HostProblem };

const MAX_HOST_LENGTH = 253;
const LABEL_RE = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

function fail<T>(code: HostErrorCode, reason: string): HostResult<T> {
  return { ok: false, error: { code, reason } };
}

/** Canonicalise a host without a port (a bare IPv6 address is accepted with or without brackets). */
export function canonicalHost(input: string): HostResult<CanonicalHost> {
  if (input.length === 0) return fail("empty", "empty host");
  if (input.length > MAX_HOST_LENGTH + 2) return fail("too-long", "host too long");
  if (input.includes("@")) return fail("userinfo", "userinfo is not allowed in a host");
  if (input.startsWith("[") || input.includes(":")) {
    const inner = input.startsWith("[")
      ? input.slice(1, input.endsWith("]") ? -1 : undefined)
      : input;
    if (input.startsWith("[") && !input.endsWith("]"))
      return fail("invalid-ipv6", "unterminated IPv6 literal");
    if (inner.includes("%")) return fail("zone-id", "IPv6 zone identifiers are not allowed");
    const bytes = parseIPv6(inner);
    if (!bytes) return fail("invalid-ipv6", "invalid IPv6 address");
    const v4 = mappedIPv4(bytes);
    if (v4) return { ok: true, value: { host: formatIPv4(v4), kind: "ipv4" } };
    return { ok: true, value: { host: formatIPv6(bytes), kind: "ipv6" } };
  }
  let name = input;
  if (/[^\x00-\x7f]/.test(name)) {
    // IDNA (UTS 46 mapping + punycode). It also maps full-width digits and dots, so the
    // numeric-IPv4 check below runs on what a resolver would really see.
    const ascii = domainToASCII(name);
    if (ascii === "") return fail("invalid-idn", "invalid internationalised domain name");
    name = ascii;
  }
  name = name.toLowerCase();
  if (!/^[a-z0-9._-]+$/.test(name)) return fail("invalid-character", "invalid character in host");
  if (name.endsWith(".")) name = name.slice(0, -1);
  if (name.length === 0) return fail("empty", "empty host");
  if (endsInNumber(name)) {
    const v4 = parseLegacyIPv4(name);
    if (!v4) return fail("invalid-ipv4", "number-like host is not a valid IPv4 address");
    return { ok: true, value: { host: formatIPv4(v4), kind: "ipv4" } };
  }
  if (name.length > MAX_HOST_LENGTH) return fail("too-long", "host too long");
  for (const label of name.split(".")) {
    if (!LABEL_RE.test(label)) return fail("invalid-label", "empty or malformed DNS label");
  }
  // Punycode labels must decode; domainToASCII returns "" for a broken xn-- label.
  if (name.includes("xn--") && domainToASCII(name) !== name) {
    return fail("invalid-idn", "invalid punycode label");
  }
  return { ok: true, value: { host: name, kind: "dns" } };
}

/**
 * Canonicalise `host[:port]` (CONNECT targets, Host fields, absolute-form authorities).
 * IPv6 must be bracketed when a port may follow. Without a port, `defaultPort` is used, or
 * the result is `missing-port`.
 */
export function parseAuthority(
  input: string,
  defaultPort?: number,
): HostResult<CanonicalAuthority> {
  if (input.includes("@")) return fail("userinfo", "userinfo is not allowed in an authority");
  let hostText: string;
  let portText: string | undefined;
  if (input.startsWith("[")) {
    const close = input.indexOf("]");
    if (close === -1) return fail("invalid-ipv6", "unterminated IPv6 literal");
    hostText = input.slice(0, close + 1);
    const rest = input.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return fail("invalid-character", "junk after IPv6 literal");
      portText = rest.slice(1);
    }
  } else {
    const colons = input.split(":").length - 1;
    if (colons > 1) return fail("invalid-ipv6", "IPv6 addresses must be bracketed in an authority");
    const colon = input.indexOf(":");
    hostText = colon === -1 ? input : input.slice(0, colon);
    if (colon !== -1) portText = input.slice(colon + 1);
  }
  let port: number;
  if (portText === undefined) {
    if (defaultPort === undefined) return fail("missing-port", "a port is required");
    port = defaultPort;
  } else {
    if (!/^[0-9]{1,5}$/.test(portText)) return fail("bad-port", "port must be 1..65535");
    port = Number(portText);
    if (port < 1 || port > 65535) return fail("bad-port", "port must be 1..65535");
  }
  const h = canonicalHost(hostText);
  if (!h.ok) return h;
  return { ok: true, value: { ...h.value, port } };
}

/** `host:port`, IPv6 bracketed: the form audit logs and CONNECT targets use. */
export function formatAuthority(host: CanonicalHost, port: number): string {
  return host.kind === "ipv6" ? `[${host.host}]:${port}` : `${host.host}:${port}`;
}
