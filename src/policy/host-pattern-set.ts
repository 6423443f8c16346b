// Compiled host patterns shared by the egress allowlist and credential bindings:
// `api.example.com`, `*.example.com` (strict subdomains only, never the apex), `*` (any host,
// only where the caller allows it), each with an optional `:port` or `:*`. Hosts in patterns
// go through the same canonicaliser as the hosts being checked (host.ts), so `127.1`,
// `[::ffff:7f00:1]` and `127.0.0.1` are one pattern. Built once, read-only afterwards; it must
// never match on a non-canonical host string.

import { type CanonicalHost, canonicalHost } from "./host.ts";

export interface HostPattern {
  /** The pattern as written (for audit reasons and error paths). */
  readonly text: string;
  readonly kind: "exact" | "wildcard" | "any";
  /** Canonical host (exact) or suffix (wildcard); "" for any. */
  readonly host: string;
  readonly port: number | "any";
}

export interface PatternRules {
  /** Port for a pattern written without one. */
  readonly defaultPort: number | "any";
  readonly allowAny: boolean;
}

/** Parse one pattern; returns the reason text when it is invalid. */
export function compileHostPattern(text: string, rules: PatternRules): HostPattern | string {
  if (typeof text !== "string" || text.length === 0) return "empty host pattern";
  let hostText = text;
  let portText: string | undefined;
  if (text.startsWith("[")) {
    const close = text.indexOf("]");
    if (close === -1) return "unterminated IPv6 literal";
    hostText = text.slice(0, close + 1);
    const rest = text.slice(close + 1);
    if (rest !== "") {
      if (!rest.startsWith(":")) return "junk after IPv6 literal";
      portText = rest.slice(1);
    }
  } else if (text.split(":").length === 2) {
    const i = text.indexOf(":");
    hostText = text.slice(0, i);
    portText = text.slice(i + 1);
  }
  let port: number | "any" = rules.defaultPort;
  if (portText !== undefined) {
    if (portText === "*") port = "any";
    else if (/^[0-9]{1,5}$/.test(portText) && Number(portText) >= 1 && Number(portText) <= 65535) {
      port = Number(portText);
    } else return "port must be 1..65535 or *";
  }
  if (hostText === "*") {
    if (!rules.allowAny) return "'*' (every host) is not allowed here";
    return { text, kind: "any", host: "", port };
  }
  const wildcard = hostText.startsWith("*.");
  const c = canonicalHost(wildcard ? hostText.slice(2) : hostText);
  if (!c.ok) return `invalid host: ${c.error.reason}`;
  if (wildcard) {
    if (c.value.kind !== "dns") return "a wildcard cannot apply to an IP address";
    if (!c.value.host.includes(".")) return "a wildcard needs at least two labels after '*.'";
  }
  return { text, kind: wildcard ? "wildcard" : "exact", host: c.value.host, port };
}

/** A set of patterns, each with a payload; `match` returns the payloads in insertion order. */
export class HostPatternSet<T> {
  readonly #exact = new Map<string, number[]>();
  readonly #wildcard = new Map<string, number[]>();
  readonly #any: number[] = [];
  readonly #entries: readonly { readonly pattern: HostPattern; readonly payload: T }[];

  constructor(entries: readonly { readonly pattern: HostPattern; readonly payload: T }[]) {
    this.#entries = entries.slice();
    this.#entries.forEach(({ pattern }, i) => {
      if (pattern.kind === "any") this.#any.push(i);
      else {
        const map = pattern.kind === "exact" ? this.#exact : this.#wildcard;
        const list = map.get(pattern.host);
        if (list) list.push(i);
        else map.set(pattern.host, [i]);
      }
    });
  }

  /** Entries whose pattern matches the canonical host and port, in insertion order. */
  match(host: CanonicalHost, port: number): { pattern: HostPattern; payload: T }[] {
    const hits: number[] = [...this.#any, ...(this.#exact.get(host.host) ?? [])];
    if (host.kind === "dns") {
      // "*.example.com" is stored under "example.com"; try every proper suffix of the host.
      let at = host.host.indexOf(".");
      while (at !== -1) {
        hits.push(...(this.#wildcard.get(host.host.slice(at + 1)) ?? []));
        at = host.host.indexOf(".", at + 1);
      }
    }
    hits.sort((a, b) => a - b);
    const out: { pattern: HostPattern; payload: T }[] = [];
    for (const i of hits) {
      const e = this.#entries[i]!;
      if (e.pattern.port === "any" || e.pattern.port === port) out.push(e);
    }
    return out;
  }
}
