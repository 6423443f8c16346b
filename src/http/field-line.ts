// Parses one header or trailer field line (RFC 9112 5): `field-name ":" OWS field-value OWS`.
// It must never accept obs-fold, whitespace before the colon, an empty or non-token name, or
// a control byte in a value — each is a known smuggling primitive; all are rejected.

import type { HttpErrorCode } from "./http-error.ts";
import { COLON, FIELD_VALUE_BYTE, HTAB, isTokenBytes, latin1, SP } from "./syntax.ts";

export type FieldLineResult =
  | {
      readonly ok: true;
      readonly name: string;
      readonly value: string;
      /** An HTAB occurred anywhere in the raw value (including its surrounding OWS). */
      readonly hasTab: boolean;
    }
  | { readonly ok: false; readonly code: HttpErrorCode; readonly reason: string };

export function parseFieldLine(line: Uint8Array): FieldLineResult {
  const first = line[0];
  if (first === SP || first === HTAB) {
    return { ok: false, code: "obs-fold", reason: "line folding (obs-fold) is not accepted" };
  }
  const colon = line.indexOf(COLON);
  if (colon === -1) {
    return { ok: false, code: "bad-header-name", reason: "header line without a colon" };
  }
  if (colon === 0) return { ok: false, code: "bad-header-name", reason: "empty header name" };
  const last = line[colon - 1];
  if (last === SP || last === HTAB) {
    return { ok: false, code: "space-before-colon", reason: "whitespace before a header colon" };
  }
  if (!isTokenBytes(line, 0, colon)) {
    return { ok: false, code: "bad-header-name", reason: "invalid character in a header name" };
  }
  let a = colon + 1;
  let b = line.length;
  let hasTab = false;
  for (let i = a; i < b; i++) {
    const c = line[i]!;
    if (FIELD_VALUE_BYTE[c] !== 1) {
      return {
        ok: false,
        code: "bad-header-value",
        reason: `invalid byte 0x${c.toString(16).padStart(2, "0")} in the value of a header`,
      };
    }
    if (c === HTAB) hasTab = true;
  }
  while (a < b && (line[a] === SP || line[a] === HTAB)) a++;
  while (b > a && (line[b - 1] === SP || line[b - 1] === HTAB)) b--;
  return { ok: true, name: latin1(line, 0, colon), value: latin1(line, a, b), hasTab };
}
