// Host patterns as written in configuration (credential bindings and the egress allowlist):
// `api.openai.com`, `*.github.com`, `10.0.0.5`, `[::1]:8443`, `example.com:*`. This module
// parses and validates them into one immutable shape; it does not decide whether a host
// matches (src/policy/ does). It must never build a second host canonicaliser: spelling rules
// (case, trailing dot, IDNA, numeric IPv4 forms, mapped IPv6) come from src/policy/host.ts.

import { ConfigError } from "../config/config-error.ts";
import { canonicalHost } from "./host.ts";

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

/**
 * Puts one host into canonical form with the same code requests go through
 * (src/policy/host.ts), so a pattern and a dialled host can be compared as strings.
 */
export function normalizeHostPattern(
  host: string,
): { host: string; kind: "dns" | "ipv4" | "ipv6" } | { problem: string } {
  const r = canonicalHost(host);
  return r.ok ? { host: r.value.host, kind: r.value.kind } : { problem: r.error.reason };
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
  if (hostPart === "*") {
    if (!rules.allowAny) {
      throw new ConfigError("bad-host-pattern", "'*' (every host) is not allowed here", where);
    }
    return Object.freeze({ pattern: text, kind: "any", host: "", hostKind: "any", port });
  }
  const wildcard = hostPart.startsWith("*.");
  const bare = wildcard ? hostPart.slice(2) : hostPart;
  if (bare.includes("*")) {
    throw new ConfigError(
      "bad-host-pattern",
      "'*' is only allowed as a whole leading label ('*.example.com')",
      where,
    );
  }
  const canonical = normalizeHostPattern(bare);
  if ("problem" in canonical) {
    throw new ConfigError("bad-host-pattern", `is not a valid host (${canonical.problem})`, where);
  }
  const { host, kind } = canonical;
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
