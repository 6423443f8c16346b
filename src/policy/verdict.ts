// The one shape of every decision the proxy makes: allowed, with the value the decision produced
// and why; or refused, with a code and why. Policy functions return it, exchange stages return
// it, the trace records it, the audit line is written from it. Reasons are short, fixed and
// log-safe: never a credential, never upstream text.

import type { ProxyErrorCode } from "../http/proxy-error.ts";

export interface Allowed<T> {
  readonly ok: true;
  readonly value: T;
  /** Why, for the audit log ("" when the decision has nothing to add). */
  readonly reason: string;
}

export interface Refused<C extends string = ProxyErrorCode> {
  readonly ok: false;
  readonly code: C;
  readonly reason: string;
}

export type Verdict<T = null, C extends string = ProxyErrorCode> = Allowed<T> | Refused<C>;

export function allow<T>(value: T, reason = ""): Allowed<T> {
  return { ok: true, value, reason };
}

export function refuse<C extends string>(code: C, reason: string): Refused<C> {
  return { ok: false, code, reason };
}

/** Allowed with nothing to carry. */
export const PASS: Allowed<null> = Object.freeze(allow(null));
