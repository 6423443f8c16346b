// What happened to one request, as it happened: each decision taken on it (a verdict, by the
// stage or rule that took it) and what its bodies carried. The audit line and the request
// metrics are written from it, once (request-log.ts). The rule that makes an outcome out of the
// entries lives here and nowhere else: the first refusal or failure decides; with none, the
// request was allowed, for the reasons the allowing decisions gave.

import { decisionOf, type ProxyError, type ProxyErrorCode } from "../http/proxy-error.ts";
import type { Verdict } from "../policy/verdict.ts";

export type Decision = "allow" | "deny" | "error";

export interface TraceEntry {
  /** Who decided: a stage of the exchange, a rule of the listener. */
  readonly stage: string;
  readonly decision: Decision;
  readonly code?: ProxyErrorCode;
  readonly reason: string;
}

export interface TraceOutcome {
  readonly decision: Decision;
  readonly reason: string;
  /** The code of the refusal or failure that decided, if one did. */
  readonly code?: ProxyErrorCode;
}

export class Trace {
  readonly #entries: TraceEntry[] = [];
  /** Dummies swapped for real values, in the head and the body. */
  swaps = 0;
  /** The credentials whose dummy was swapped (metrics count requests per credential). */
  readonly swapped = new Set<string>();
  /** Real values redacted from the answer, head and body. */
  redactions = 0;
  /** Dummies of credentials this agent may not use, seen in its request's head. */
  foreignDummies = 0;
  /** Body bytes the agent sent, and the agent was sent. */
  bytesIn = 0;
  bytesOut = 0;

  get entries(): readonly TraceEntry[] {
    return this.#entries;
  }

  /** Record a verdict (its code decides deny or error) and hand it back. */
  record<T, V extends Verdict<T>>(stage: string, v: V): V {
    this.#entries.push(
      v.ok
        ? { stage, decision: "allow", reason: v.reason }
        : { stage, decision: decisionOf(v.code), code: v.code, reason: v.reason },
    );
    return v;
  }

  /** Record a refusal or failure raised as an error. */
  fail(stage: string, err: ProxyError): void {
    this.#entries.push({
      stage,
      decision: decisionOf(err.code),
      code: err.code,
      reason: err.reason,
    });
  }

  /** Record a failure after the answer was under way (no code: the agent is told by a cut). */
  broke(stage: string, reason: string): void {
    this.#entries.push({ stage, decision: "error", reason });
  }

  outcome(): TraceOutcome {
    const first = this.#entries.find((e) => e.decision !== "allow");
    if (first) {
      return first.code
        ? { decision: first.decision, reason: first.reason, code: first.code }
        : { decision: first.decision, reason: first.reason };
    }
    const reasons = this.#entries.map((e) => e.reason).filter((r) => r !== "");
    return { decision: "allow", reason: reasons.join("; ") };
  }
}
