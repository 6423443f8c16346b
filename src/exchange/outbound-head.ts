// The head a request goes upstream with, planned from the head the agent sent: pure, no body.
//   1. DLP: a real value, in any encoding the redactor knows, anywhere in the method, the target
//      (also percent- and form-decoded), a header name or value, or the destination host itself
//      (in any case: DNS folds it), refuses the request before anything leaves.
//   2. A credential marked `inUrl: deny` may not appear in the URL, even as its dummy.
//   3. Dummies are swapped for real values only where their credential is presented
//      (credentials/surfaces.ts): a header field it names whose value is the dummy (alone, or
//      in Authorization after Bearer or token, or as a Basic user or password); a query
//      parameter it names whose value is, decoded, exactly the dummy (as the percent-encoded
//      real value). A dummy anywhere else goes out as it came.
//   4. Fields the proxy owns are dropped (hop-by-hop.ts), `Accept-Encoding` narrowed to what
//      the proxy can decode, `Host` added for an HTTP/1.0 agent that sent none.

import { filterAcceptEncoding } from "../body/content-coding.ts";
import { swapBasicAuth } from "../credentials/basic-auth.ts";
import type { RequestPlan, SecretState } from "../credentials/secret-state.ts";
import { swapHeaderValue, swapQueryValues } from "../credentials/surfaces.ts";
import { forwardableRequestFields } from "../http/hop-by-hop.ts";
import type { RequestHead } from "../http/request-parser.ts";
import type { InlineReplacer } from "../matcher/inline.ts";
import type { Destination } from "../policy/host-agreement.ts";
import { allow, refuse, type Verdict } from "../policy/verdict.ts";

export interface OutboundHead {
  /** origin-form, swapped. */
  readonly target: string;
  readonly headers: [string, string][];
  readonly swaps: number;
  /** Names of the credentials swapped in the head. */
  readonly swapped: ReadonlySet<string>;
  /** Dummies of credentials the agent may not use, seen in the head (a violation). */
  readonly foreign: number;
}

export function planOutboundHead(
  head: RequestHead,
  destination: Destination,
  secrets: SecretState,
  plan: RequestPlan,
  /** Dummies the agent may not use (secrets.foreignDummies), counted, never swapped. */
  foreignDummies: InlineReplacer | null = null,
): Verdict<OutboundHead> {
  const targetText = originForm(head);
  if (secrets.carriesReal(head.method) || secrets.carriesReal(targetText)) return dlpRefusal();
  for (const [name, value] of head.headers.fields) {
    if (secrets.carriesReal(name) || secrets.carriesReal(value)) return dlpRefusal();
  }
  // A real value as a DNS label would leak through name resolution.
  if (secrets.carriesReal(destination.target.host)) return dlpRefusal();
  if (!secrets.urlDenied.empty && secrets.urlDenied.applyLatin1(targetText).count > 0) {
    return refuse("policy-denied", "credential not allowed in URLs");
  }

  const swapped = new Set<string>();
  let swaps = 0;
  const q = swapQueryValues(targetText, plan.querySwap);
  const target = q.target;
  swaps += q.swapped.length;
  for (const n of q.swapped) swapped.add(n);
  const headers: [string, string][] = [];
  for (const [name, value] of forwardableRequestFields(head.headers.fields)) {
    const field = name.toLowerCase();
    const pairs = plan.headerSwap.get(field);
    if (!pairs) {
      headers.push([name, value]);
      continue;
    }
    if (plan.basicPairs.length > 0 && field === "authorization") {
      const b = swapBasicAuth(value, plan.basicPairs);
      if (b.swapped.length > 0) {
        swaps += b.swapped.length;
        for (const n of b.swapped) swapped.add(n);
        headers.push([name, b.value]);
        continue;
      }
    }
    const r = swapHeaderValue(value, pairs, field);
    if (r.swapped !== undefined) {
      swaps++;
      swapped.add(r.swapped);
    }
    headers.push([name, r.value]);
  }
  headers.push(["accept-encoding", filterAcceptEncoding(head.headers.get("accept-encoding"))]);
  // The upstream leg is HTTP/1.1, which requires Host; an HTTP/1.0 agent may have sent none.
  if (!head.headers.has("host")) headers.unshift(["host", hostField(destination)]);
  let foreign = 0;
  if (foreignDummies) {
    foreign += foreignDummies.applyLatin1(targetText).count;
    for (const [, value] of head.headers.fields) foreign += foreignDummies.applyLatin1(value).count;
  }
  return allow({ target, headers, swaps, swapped, foreign });
}

function dlpRefusal() {
  return refuse("dlp-blocked", "real credential in request");
}

/** The request-target as origin-form: an absolute-form target keeps its path and query. */
export function originForm(head: RequestHead): string {
  if (head.targetForm !== "absolute") return head.target;
  const m = /^[a-zA-Z][a-zA-Z0-9+.-]*:\/\/[^/?#]*/.exec(head.target);
  const rest = m ? head.target.slice(m[0].length) : head.target;
  return rest === "" ? "/" : rest.startsWith("?") ? `/${rest}` : rest;
}

/** `Host` for the dialled destination: the port only when it is not the scheme's default. */
function hostField(d: Destination): string {
  const h = d.target.kind === "ipv6" ? `[${d.target.host}]` : d.target.host;
  const dflt = d.scheme === "https" ? 443 : 80;
  return d.target.port === dflt ? h : `${h}:${d.target.port}`;
}
