// Writes request and response heads the proxy sends. It must never write a byte that could end a line or a field early
// (CR, LF, NUL, other controls) or a name that is not a token: whatever the agent or upstream
// put in a value, the proxy cannot be made to inject a header or a second message. Errors
// name the field, never its value (values can carry credentials).

import { HttpError } from "./http-error.ts";
import { isSafeFieldValue, isToken, latin1Bytes } from "./syntax.ts";

export type HeaderPairs = readonly (readonly [string, string])[];

/** `name: value\r\n` for each field; throws HttpError("unsafe-header") naming the bad field. */
export function serializeFields(headers: HeaderPairs): Uint8Array {
  let text = "";
  headers.forEach(([name, value], i) => {
    if (!isToken(name)) {
      throw new HttpError("unsafe-header", `header #${i} has an invalid name`);
    }
    if (!isSafeFieldValue(value)) {
      throw new HttpError("unsafe-header", `header #${i} (${name}) has an unsafe value`);
    }
    text += `${name}: ${value}\r\n`;
  });
  return latin1Bytes(text);
}

export interface RequestHeadOut {
  readonly method: string;
  readonly target: string;
  readonly headers: HeaderPairs;
}

/** `METHOD target HTTP/1.1\r\n` + fields + `\r\n`. */
export function serializeRequestHead(head: RequestHeadOut): Uint8Array {
  if (!isToken(head.method)) {
    throw new HttpError("unsafe-start-line", "request method is not a token");
  }
  if (!isSafeTarget(head.target)) {
    throw new HttpError("unsafe-start-line", "request target has an unsafe byte");
  }
  return join(latin1Bytes(`${head.method} ${head.target} HTTP/1.1\r\n`), head.headers);
}

export interface ResponseHeadOut {
  readonly status: number;
  readonly reason?: string;
  readonly headers: HeaderPairs;
}

/** `HTTP/1.1 status reason\r\n` + fields + `\r\n`. */
export function serializeResponseHead(head: ResponseHeadOut): Uint8Array {
  if (!Number.isInteger(head.status) || head.status < 100 || head.status > 999) {
    throw new HttpError("unsafe-start-line", "status code must be three digits");
  }
  const reason = head.reason ?? "";
  if (!isSafeFieldValue(reason)) {
    throw new HttpError("unsafe-start-line", "reason phrase has an unsafe byte");
  }
  return join(latin1Bytes(`HTTP/1.1 ${head.status} ${reason}\r\n`), head.headers);
}

/** request-target bytes: visible ASCII only (no SP, CTL, DEL, non-ASCII, no fragment). */
function isSafeTarget(t: string): boolean {
  if (t.length === 0) return false;
  for (let i = 0; i < t.length; i++) {
    const c = t.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || c === 0x23) return false;
  }
  return true;
}

function join(startLine: Uint8Array, headers: HeaderPairs): Uint8Array {
  const fields = serializeFields(headers);
  const out = new Uint8Array(startLine.length + fields.length + 2);
  out.set(startLine, 0);
  out.set(fields, startLine.length);
  out[out.length - 2] = 0x0d;
  out[out.length - 1] = 0x0a;
  return out;
}
