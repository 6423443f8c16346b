// Host patterns, the one parser: `api.openai.com`, `*.github.com`, `10.0.0.5`, `[::1]:8443`,
// `example.com:*`, `*` where every host is allowed. The egress allowlist, credential bindings and
// the configuration loaders all read patterns here, once; the parsed value travels on, never
// its text. Hosts go through the canonicaliser requests go through (host.ts), so `127.1`,
// `[::ffff:7f00:1]` and `127.0.0.1` are one pattern. Pure: a problem is a refused verdict whose
// reason names what is wrong (patterns are not secret).

import { canonicalHost } from "./host.ts";
import { allow, refuse, type Verdict } from "./verdict.ts";

export interface HostPattern {
  /** As written (trimmed), for audit reasons and error messages. */
  readonly written: string;
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

export type HostPatternVerdict = Verdict<HostPattern, "bad-host-pattern">;

const bad = (reason: string) => refuse("bad-host-pattern" as const, reason);

export function parseHostPattern(input: unknown, rules: HostPatternRules): HostPatternVerdict {
  if (typeof input !== "string" || input.trim() === "") {
    return bad("must be a non-empty host pattern string");
  }
  const text = input.trim();
  if (text.length > 300) return bad("host pattern is too long");
  let hostPart = text;
  let portText: string | undefined;
  // Split a port off: `[v6]:p`, `name:p`; a bare IPv6 literal has several colons and no port.
  const bracketed = /^\[([^\]]*)\](?::(.*))?$/.exec(text);
  if (bracketed) {
    hostPart = `[${bracketed[1]}]`;
    portText = bracketed[2];
  } else if ((text.match(/:/g) ?? []).length === 1) {
    const i = text.indexOf(":");
    hostPart = text.slice(0, i);
    portText = text.slice(i + 1);
  }
  let port: HostPattern["port"];
  if (portText !== undefined) {
    if (!rules.allowPort) return bad("a port is not allowed here");
    if (portText === "*") port = "any";
    else if (/^[0-9]{1,5}$/.test(portText) && Number(portText) >= 1 && Number(portText) <= 65535) {
      port = Number(portText);
    } else return bad("port must be 1..65535 or '*'");
  }
  if (hostPart === "*") {
    if (!rules.allowAny) return bad("'*' (every host) is not allowed here");
    return allow(
      Object.freeze({ written: text, pattern: text, kind: "any", host: "", hostKind: "any", port }),
    );
  }
  const wildcard = hostPart.startsWith("*.");
  const bare = wildcard ? hostPart.slice(2) : hostPart;
  if (bare.includes("*")) {
    return bad("'*' is only allowed as a whole leading label ('*.example.com')");
  }
  const c = canonicalHost(bare);
  if (!c.ok) return bad(`is not a valid host (${c.error.reason})`);
  const { host, kind } = c.value;
  if (wildcard) {
    if (kind !== "dns") return bad("a wildcard cannot apply to an IP address");
    if (!host.includes("."))
      return bad("a wildcard needs at least two labels after '*.' (not '*.com')");
  }
  const hostText = kind === "ipv6" ? `[${host}]` : host;
  const portSuffix = port === undefined ? "" : port === "any" ? ":*" : `:${port}`;
  return allow(
    Object.freeze({
      written: text,
      pattern: `${wildcard ? "*." : ""}${hostText}${portSuffix}`,
      kind: wildcard ? "wildcard" : "exact",
      host,
      hostKind: kind,
      port,
    }),
  );
}
