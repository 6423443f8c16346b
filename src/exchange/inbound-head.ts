// The head an upstream's answer reaches the agent with, from the head the upstream sent: pure.
// Every real value is redacted from the reason phrase and every field value (Set-Cookie
// included); a field *named* after a real value, in any case, is dropped whole (any
// token-shaped value can be a name, and names are case-insensitive); hop-by-hop fields and the
// framing go (the agent leg frames the body itself), so do the proxy's own `x-slapenir-*`
// fields, and so does Content-Encoding when the proxy decodes the body to scan it.

import type { SecretState } from "../credentials/secret-state.ts";
import { forwardableResponseFields } from "../http/hop-by-hop.ts";
import type { HeaderPairs } from "../http/serialize.ts";

export interface InboundHead {
  readonly reason: string;
  readonly headers: [string, string][];
  readonly redactions: number;
}

export function redactResponseHead(
  reason: string,
  fields: HeaderPairs,
  secrets: SecretState,
  /** `headRequest`: an answer to HEAD keeps its Content-Length; `decoded`: drop Content-Encoding. */
  how: { readonly headRequest: boolean; readonly decoded: boolean },
): InboundHead {
  const redact = secrets.redactInline;
  let redactions = 0;
  const headers: [string, string][] = [];
  for (const [name, value] of forwardableResponseFields(fields, how.headRequest)) {
    const lower = name.toLowerCase();
    if (how.decoded && lower === "content-encoding") continue;
    // The proxy's own fields: an upstream must not pass its answer off as the proxy's refusal.
    if (lower.startsWith("x-slapenir-")) continue;
    if (
      redact.applyLatin1(name).count > 0 ||
      secrets.redactFolded.applyLatin1(name.toLowerCase()).count > 0
    ) {
      redactions++;
      continue;
    }
    const r = redact.applyLatin1(value);
    redactions += r.count;
    headers.push([name, r.value]);
  }
  const phrase = redact.applyLatin1(reason);
  return { reason: phrase.value, headers, redactions: redactions + phrase.count };
}
