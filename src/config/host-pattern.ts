// Host patterns as written in configuration (credential bindings and the egress allowlist):
// `api.openai.com`, `*.github.com`, `10.0.0.5`, `[::1]:8443`, `example.com:*`. This module
// parses and validates them into one immutable shape; it does not decide whether a host
// matches (src/policy/ does). It must never build a second host canonicaliser: spelling rules
// (IDNA, numeric IPv4 forms, mapped IPv6) belong to src/policy/host.ts.

import { isIP } from "node:net";
import { ConfigError } from "./config-error.ts";

export interface HostPattern {
  /** The canonical written form, e.g. `*.github.com` or `[::1]:8443`. */
  readonly pattern: string;
  /** `*.suffix` matches names under suffix (not suffix itself); `any` is the bare `*`. */
  readonly kind: "exact" | "wildcard" | "any";
  /** The host (exact) or suffix (wildcard) in canonical form; "" for `any`. */
  readonly host: string;
  readonly hostKind: "dns" | "ipv4" | "ipv6" | "any";
  /** A port; `undefined` when none was written (the consumer applies its default). */
  readonly port: number | "any" | undefined;
}

export interface HostPatternRules {
  /** Accept the bare `*` (every host). Never for credential bindings. */
  readonly allowAny: boolean;
  /** Accept a `:port` / `:*` suffix. */
  readonly allowPort: boolean;
}

const DNS_LABEL = "[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?";
const DNS_NAME_RE = new RegExp(`^(?=.{1,253}$)${DNS_LABEL}(\\.${DNS_LABEL})*$`);

/**
 * Puts one host into canonical form.
 * TODO(policy): delegate to `canonicalHost()` from src/policy/host.ts once it lands, so
 * configuration and requests are canonicalised by the same code. Until then: lower-case,
 * drop one trailing dot and IPv6 brackets — nothing more.
 */
export function normalizeHostPattern(host: string): {
  host: string;
  kind: "dns" | "ipv4" | "ipv6";
} {
  let h = host.trim().toLowerCase();
  if (h.startsWith("[") && h.endsWith("]")) h = h.slice(1, -1);
  if (h.endsWith(".")) h = h.slice(0, -1);
  const ip = isIP(h);
  return { host: h, kind: ip === 4 ? "ipv4" : ip === 6 ? "ipv6" : "dns" };
}

/** Parses one pattern; `where` names it in errors (patterns are not secret). */
export function parseHostPattern(
  input: unknown,
  where: string,
  rules: HostPatternRules,
): HostPattern {
  if (typeof input !== "string" || input.trim() === "") {
    throw new ConfigError("bad-host-pattern", "must be a non-empty host pattern string", where);
  }
  const text = input.trim();
  if (text.length > 300)
    throw new ConfigError("bad-host-pattern", "host pattern is too long", where);
  let hostPart = text;
  let port: HostPattern["port"];
  // Split a port off: `[v6]:p`, `name:p`; a bare IPv6 literal has several colons and no port.
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  if (bracketed) {
    hostPart = `[${bracketed[1]}]`;
    if (bracketed[2] !== undefined) port = parsePort(bracketed[2], where, rules);
  } else if ((text.match(/:/g) ?? []).length === 1) {
    const i = text.indexOf(":");
    hostPart = text.slice(0, i);
    port = parsePort(text.slice(i + 1), where, rules);
  }
  if (hostPart.startsWith("[") && normalizeHostPattern(hostPart).kind !== "ipv6") {
    throw new ConfigError("bad-host-pattern", "brackets are only for IPv6 literals", where);
  }
  if (hostPart === "*") {
    if (!rules.allowAny) {
      throw new ConfigError("bad-host-pattern", "'*' (every host) is not allowed here", where);
    }
    return Object.freeze({ pattern: text, kind: "any", host: "", hostKind: "any", port });
  }
  const wildcard = hostPart.startsWith("*.");
  const { host, kind } = normalizeHostPattern(wildcard ? hostPart.slice(2) : hostPart);
  if (host.includes("*")) {
    throw new ConfigError(
      "bad-host-pattern",
      "'*' is only allowed as a whole leading label ('*.example.com')",
      where,
    );
  }
  if (kind === "dns" && !DNS_NAME_RE.test(host)) {
    throw new ConfigError("bad-host-pattern", "is neither a DNS name nor an IP address", where);
  }
  if (wildcard) {
    if (kind !== "dns") {
      throw new ConfigError("bad-host-pattern", "a wildcard cannot apply to an IP address", where);
    }
    if (!host.includes(".")) {
      throw new ConfigError(
        "bad-host-pattern",
        "a wildcard needs at least two labels after '*.' (not '*.com')",
        where,
      );
    }
  }
  const hostText = kind === "ipv6" ? `[${host}]` : host;
  const portText = port === undefined ? "" : port === "any" ? ":*" : `:${port}`;
  return Object.freeze({
    pattern: `${wildcard ? "*." : ""}${hostText}${portText}`,
    kind: wildcard ? "wildcard" : "exact",
    host,
    hostKind: kind,
    port,
  });
}

function parsePort(text: string, where: string, rules: HostPatternRules): number | "any" {
  if (!rules.allowPort)
    throw new ConfigError("bad-host-pattern", "a port is not allowed here", where);
  if (text === "*") return "any";
  if (!/^[0-9]{1,5}$/.test(text) || Number(text) < 1 || Number(text) > 65535) {
    throw new ConfigError("bad-host-pattern", "port must be 1..65535 or '*'", where);
  }
  return Number(text);
}
