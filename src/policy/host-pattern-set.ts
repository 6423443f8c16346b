// A set of parsed host patterns (host-pattern.ts), each with a payload, for the egress allowlist
// and credential bindings: `*.example.com` matches strict subdomains only, never the apex. Built
// once, read-only afterwards; it must never match on a non-canonical host string.

import type { CanonicalHost } from "./host.ts";
import type { HostPattern } from "./host-pattern.ts";

/** A set of patterns, each with a payload; `match` returns the payloads in insertion order. */
export class HostPatternSet<T> {
  readonly #exact = new Map<string, number[]>();
  readonly #wildcard = new Map<string, number[]>();
  readonly #any: number[] = [];
  readonly #entries: readonly { readonly pattern: HostPattern; readonly payload: T }[];
  readonly #defaultPort: number | "any";

  /** `defaultPort`: the port a pattern written without one matches. */
  constructor(
    entries: readonly { readonly pattern: HostPattern; readonly payload: T }[],
    defaultPort: number | "any",
  ) {
    this.#defaultPort = defaultPort;
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
      const p = e.pattern.port ?? this.#defaultPort;
      if (p === "any" || p === port) out.push(e);
    }
    return out;
  }
}
