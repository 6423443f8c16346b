// The one list of hop-by-hop fields, and what the proxy removes from a message before it
// crosses to the other leg. A field named in `Connection` goes too, except the few that decide
// where a message goes and how it is framed (a peer must not make the proxy drop those). The
// proxy frames every body itself, so framing fields never cross either; on the request leg it
// also owns `Expect` (it reads the body itself) and `Accept-Encoding` (it offers only codings
// it can decode, content-coding.ts).

import type { HeaderPairs } from "./serialize.ts";
import { splitList } from "./syntax.ts";

/**
 * Hop-by-hop fields (RFC 9110 7.6.1) plus the proxy-only ones. Transfer-Encoding is included
 * because the proxy always re-frames bodies itself (chunked.ts or a known length).
 */
export const HOP_BY_HOP: ReadonlySet<string> = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "proxy-authorization",
  "proxy-authenticate",
  "te",
  "trailer",
  "transfer-encoding",
  "upgrade",
]);

/**
 * Names a `Connection` header may not remove: stripping them would let a peer change how the
 * proxy routes or frames the message (the "hop-by-hop header abuse" trick).
 */
export const PROTECTED_FROM_CONNECTION: ReadonlySet<string> = new Set([
  "host",
  "content-length",
  "content-type",
  "content-encoding",
]);

/**
 * Remove hop-by-hop fields and every field named in `Connection` (except the protected ones),
 * and any in `also`. `keep` lets the caller retain some (e.g. `upgrade` when it accepted a
 * WebSocket upgrade). One pass; no set is built unless `Connection` names a field.
 */
export function stripHopByHop(
  headers: HeaderPairs,
  keep?: ReadonlySet<string>,
  also?: ReadonlySet<string>,
): [string, string][] {
  let named: Set<string> | null = null;
  for (const [name, value] of headers) {
    if (name.length !== 10 || name.toLowerCase() !== "connection") continue;
    for (const token of splitList(value)) {
      const t = token.toLowerCase();
      if (PROTECTED_FROM_CONNECTION.has(t)) continue;
      named ??= new Set();
      named.add(t);
    }
  }
  const out: [string, string][] = [];
  for (const [name, value] of headers) {
    const n = name.toLowerCase();
    const drop = HOP_BY_HOP.has(n) || named?.has(n) || also?.has(n);
    if (!drop || keep?.has(n)) out.push([name, value]);
  }
  return out;
}

/** Fields of an agent's request that never reach the upstream as the agent wrote them. */
const REQUEST_OWNED: ReadonlySet<string> = new Set(["content-length", "expect", "accept-encoding"]);

/** The agent's request fields that may be forwarded (the proxy adds framing and its own coding list). */
export function forwardableRequestFields(headers: HeaderPairs): [string, string][] {
  return stripHopByHop(headers, undefined, REQUEST_OWNED);
}

/**
 * The upstream's response fields that may reach the agent. `keepLength`: a response to HEAD,
 * whose Content-Length describes the body it did not send (the agent may rely on it).
 */
export function forwardableResponseFields(
  headers: HeaderPairs,
  keepLength: boolean,
): [string, string][] {
  return stripHopByHop(headers, undefined, keepLength ? undefined : LENGTH);
}

const LENGTH: ReadonlySet<string> = new Set(["content-length"]);
