// The one error type of the proxy's request path, and the one place it maps to an HTTP answer.
// A ProxyError's message is shown to the agent and written to the audit log, so it must never
// carry a secret, a substituted URL or upstream-provided text.

export type ProxyErrorCode =
  | "bad-request"
  | "misdirected"
  | "policy-denied"
  | "address-denied"
  | "dlp-blocked"
  | "required-dummy-missing"
  | "upgrade-refused"
  | "rate-limited"
  | "connection-limit"
  | "dns-failed"
  | "connect-failed"
  | "connect-timeout"
  | "upstream-tls"
  | "upstream-protocol"
  | "upstream-reset"
  | "upstream-timeout"
  | "scan-failed"
  | "body-too-large"
  | "decode-failed"
  | "shutting-down"
  | "overloaded"
  | "internal";

const STATUS: Record<ProxyErrorCode, number> = {
  "bad-request": 400,
  misdirected: 421,
  "policy-denied": 403,
  "address-denied": 403,
  "dlp-blocked": 403,
  "required-dummy-missing": 403,
  "upgrade-refused": 501,
  "rate-limited": 429,
  "connection-limit": 429,
  "dns-failed": 502,
  "connect-failed": 502,
  "connect-timeout": 504,
  "upstream-tls": 502,
  "upstream-protocol": 502,
  "upstream-reset": 502,
  "upstream-timeout": 504,
  "scan-failed": 502,
  "body-too-large": 413,
  "decode-failed": 502,
  "shutting-down": 503,
  overloaded: 503,
  internal: 500,
};

export class ProxyError extends Error {
  override readonly name = "ProxyError";
  readonly status: number;
  constructor(
    readonly code: ProxyErrorCode,
    /** A short, fixed, secret-free reason shown to the agent and logged. */
    readonly reason: string,
  ) {
    super(`${code}: ${reason}`);
    this.status = STATUS[code];
  }
}

/** Anything thrown on the request path becomes a ProxyError; unknown errors say nothing. */
export function toProxyError(err: unknown): ProxyError {
  if (err instanceof ProxyError) return err;
  return new ProxyError("internal", "internal proxy error");
}

/** The answer the agent gets for an error that happened before any response byte was sent. */
export function errorResponse(err: ProxyError): Response {
  return new Response(`slapenir: ${err.reason}\n`, {
    status: err.status,
    headers: {
      "content-type": "text/plain; charset=utf-8",
      "x-slapenir-error": err.code,
      connection: "close",
    },
  });
}
