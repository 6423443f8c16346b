// What counts as a violation of the credential rules (issue 15, class 3), decided from a
// request's outcome: a real value in it (`dlp`: the agent held what it must not, and DLP's
// answers are an oracle), a request the rules deny on a host a credential is bound to
// (`rules`: probing a credential's host beyond its endpoints), another agent's dummy in it
// (`foreign-dummy`: read from a store they share), a real value in its answer (`reflection`:
// an upstream echoing a credential — or an agent using one that transforms what it is sent,
// a reversing LLM, to turn the redactor into an oracle). Each is audited and counted per
// agent; the first of the kinds configured (default `dlp`; `reflection` opt-in) quarantines
// the agent (quarantine.ts). Pure.

import type { TraceOutcome } from "../observe/trace.ts";

export const VIOLATION_KINDS = ["dlp", "rules", "foreign-dummy", "reflection"] as const;
export type ViolationKind = (typeof VIOLATION_KINDS)[number];

export function violationsOf(
  outcome: TraceOutcome,
  facts: {
    readonly foreignDummies: number;
    readonly boundHost: boolean;
    readonly redactions: number;
  },
): ViolationKind[] {
  const out: ViolationKind[] = [];
  if (outcome.code === "dlp-blocked") out.push("dlp");
  if (outcome.code === "policy-denied" && facts.boundHost) out.push("rules");
  if (facts.foreignDummies > 0) out.push("foreign-dummy");
  if (facts.redactions > 0) out.push("reflection");
  return out;
}
