// Which requests the agent leg serves at all, and where they go: the rules the listener applies
// before an exchange starts (a CONNECT) or as its first decision (any other request). Pure: the
// parsed head and what the connection knows in, one verdict out.
//   - Methods are case-sensitive, but servers differ: `head` might be HEAD to an upstream and not
//     to the proxy (framing), `trace` a TRACE that echoes credentials. A known method written in
//     another case is refused, and TRACE/TRACK (echo) and CONNECT inside a tunnel never pass.
//   - Outside a tunnel the proxy serves only absolute-form `http://` requests; `https://` must
//     come through CONNECT, so its TLS is the proxy's to intercept.
//   - A body on a method whose semantics define none (GET, HEAD, DELETE, OPTIONS) is refused:
//     servers disagree on whether to read it, and one that does not reads it as the next
//     request on its connection — another agent's, or this agent's with a real value in it.
//   - All the names a request carries must agree (host-agreement.ts).
//   - A CONNECT opens a tunnel only to a destination the egress policy allows.

import type { RequestHead } from "../http/request-parser.ts";
import type { EgressPolicy } from "./egress-policy.ts";
import { type CanonicalAuthority, parseAuthority } from "./host.ts";
import { type Destination, resolveRequestHost } from "./host-agreement.ts";
import { allow, refuse, type Verdict } from "./verdict.ts";

/** Methods the proxy refuses outright (TRACE echoes headers back: credentials included). */
export const REFUSED_METHODS: ReadonlySet<string> = new Set(["TRACE", "TRACK", "CONNECT"]);

/** Methods whose lower- or mixed-case spelling is refused: upstreams disagree on case. */
export const KNOWN_METHODS: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "POST",
  "PUT",
  "DELETE",
  "OPTIONS",
  "PATCH",
  "TRACE",
  "TRACK",
  "CONNECT",
]);

/** Methods whose semantics define no request body (RFC 9110 9.3). */
export const BODYLESS_METHODS: ReadonlySet<string> = new Set(["GET", "HEAD", "DELETE", "OPTIONS"]);

/** What the connection a request came on knows about where it leads. */
export interface TunnelFacts {
  /** The CONNECT request-target the tunnel was opened for. */
  readonly connectTarget: string;
  /** The SNI of the intercepted handshake, when the agent sent one. */
  readonly sni?: string;
}

/** A request other than an outer CONNECT: may it be served, and to which destination. */
export function admitRequest(head: RequestHead, tunnel: TunnelFacts | null): Verdict<Destination> {
  if (head.method === "CONNECT" && tunnel) {
    return refuse("bad-request", "CONNECT inside a tunnel is not supported");
  }
  const upper = head.method.toUpperCase();
  if (upper !== head.method && KNOWN_METHODS.has(upper)) {
    return refuse("bad-request", "method names must be upper-case");
  }
  if (REFUSED_METHODS.has(upper)) {
    return refuse("bad-request", `method ${head.method} is not allowed`);
  }
  const f = head.framing;
  if (
    BODYLESS_METHODS.has(head.method) &&
    (f.kind === "chunked" || (f.kind === "length" && f.length > 0))
  ) {
    return refuse("bad-request", `a ${head.method} request may not carry a body`);
  }
  if (!tunnel) {
    if (head.targetForm !== "absolute") {
      return refuse("bad-request", "this is a proxy: use CONNECT or an absolute http:// URL");
    }
    if (head.scheme !== "http") return refuse("bad-request", "https:// targets must use CONNECT");
  }
  return resolveRequestHost({
    ...(tunnel ? { connectTarget: tunnel.connectTarget } : {}),
    ...(tunnel?.sni !== undefined ? { sni: tunnel.sni } : {}),
    ...(head.targetForm === "absolute" && head.authority !== undefined
      ? { absoluteAuthority: head.authority }
      : {}),
    ...(head.scheme !== undefined ? { absoluteScheme: head.scheme } : {}),
    ...(head.host !== undefined ? { hostHeader: head.host } : {}),
  });
}

/** A CONNECT on the outer connection: the destination its tunnel may lead to. */
export function admitConnect(
  head: RequestHead,
  agent: string,
  policy: EgressPolicy,
): Verdict<CanonicalAuthority> {
  const parsed = parseAuthority(head.target);
  if (!parsed.ok) return refuse("bad-request", `invalid CONNECT target (${parsed.error.code})`);
  const target = parsed.value;
  const v = policy.decide({ agent, host: target.host, port: target.port, scheme: "https" });
  return v.ok ? allow(target, v.reason) : v;
}
