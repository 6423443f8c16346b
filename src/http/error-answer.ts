// The one builder of the answers the proxy gives in its own name: a refusal or failure before
// any byte of an upstream's answer was sent. Every such answer is `text/plain`, carries the
// standard Proxy-Status field (RFC 9209: the error type and, in `details`, the code and the
// reason — which clients that hide a refused CONNECT's body still show), names its code in
// `x-slapenir-error`, and closes the connection. The reason phrase table lives here too.

import { type ProxyError, proxyStatusError } from "./proxy-error.ts";
import { serializeResponseHead } from "./serialize.ts";

/** A response the proxy writes itself: its body held whole, the connection closed after it. */
export interface ErrorAnswer {
  readonly status: number;
  readonly reason: string;
  readonly headers: readonly (readonly [string, string])[];
  readonly body: Uint8Array;
  readonly close: true;
}

const encoder = new TextEncoder();

export function errorAnswer(err: ProxyError): ErrorAnswer {
  return {
    status: err.status,
    reason: reasonPhrase(err.status),
    headers: [
      ["content-type", "text/plain; charset=utf-8"],
      ["proxy-status", proxyStatus(err)],
      ["x-slapenir-error", err.code],
      ["connection", "close"],
    ],
    body: encoder.encode(`slapenir: ${err.reason}\n`),
    close: true,
  };
}

/**
 * `slapenir; error=TYPE; details="CODE: REASON"` — details as a structured-field string
 * (RFC 8941: printable ASCII, `"` and `\` escaped; anything else dropped).
 */
export function proxyStatus(err: ProxyError): string {
  const details = `${err.code}: ${err.reason}`
    .replace(/[^\x20-\x7e]/g, "")
    .replace(/["\\]/g, (c) => `\\${c}`);
  return `slapenir; error=${proxyStatusError(err.code)}; details="${details}"`;
}

/** The answer as bytes, head and body, for a connection the proxy writes to directly. */
export function errorAnswerBytes(err: ProxyError): Uint8Array {
  const a = errorAnswer(err);
  const head = serializeResponseHead({
    status: a.status,
    reason: a.reason,
    headers: [...a.headers, ["content-length", String(a.body.length)]],
  });
  const out = new Uint8Array(head.length + a.body.length);
  out.set(head, 0);
  out.set(a.body, head.length);
  return out;
}

const REASONS: Record<number, string> = {
  100: "Continue",
  200: "OK",
  400: "Bad Request",
  403: "Forbidden",
  405: "Method Not Allowed",
  408: "Request Timeout",
  413: "Content Too Large",
  414: "URI Too Long",
  421: "Misdirected Request",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

/** The standard reason phrase for the statuses the proxy answers with itself ("" otherwise). */
export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "";
}
