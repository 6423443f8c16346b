// The one error type of the proxy's request path: a code, the status it maps to, and whether
// the audit log counts it as the proxy refusing (deny) or something failing (error). Every
// refusal and failure the agent can be told about is one of these codes; the table below is the
// only place a code gets its status. A ProxyError's reason is shown to the agent and written to
// the audit log, so it must never carry a secret, a substituted URL or upstream-provided text.

/**
 * Status; whether the code is the proxy deciding not to serve (true) or a failure; and the
 * RFC 9209 error type its Proxy-Status field names.
 */
const CODES = {
  "bad-request": [400, true, "http_request_error"],
  "uri-too-long": [414, true, "http_request_error"],
  "headers-too-large": [431, true, "http_request_error"],
  "not-implemented": [501, true, "http_request_error"],
  "version-not-supported": [505, true, "http_protocol_error"],
  misdirected: [421, true, "http_request_denied"],
  "policy-denied": [403, true, "http_request_denied"],
  "address-denied": [403, true, "destination_ip_prohibited"],
  "dlp-blocked": [403, true, "http_request_denied"],
  quarantined: [403, true, "http_request_denied"],
  // A verified agent certificate the proxy's own rules refuse (revoked, denied, expired).
  "identity-refused": [403, true, "http_request_denied"],
  "required-dummy-missing": [403, true, "http_request_denied"],
  // A request to an AWS credential's host not signed with the agent's (dummy) key.
  "bad-signature": [403, true, "http_request_denied"],
  "upgrade-refused": [501, true, "http_upgrade_failed"],
  "rate-limited": [429, true, "http_request_denied"],
  "connection-limit": [429, true, "connection_limit_reached"],
  "body-too-large": [413, true, "http_request_error"],
  // The agent left or stalled mid-request: a failure on its side, not a refusal.
  "agent-gone": [400, false, "http_request_error"],
  "agent-timeout": [408, false, "http_request_error"],
  "dns-failed": [502, false, "dns_error"],
  "connect-failed": [502, false, "connection_refused"],
  "connect-timeout": [504, false, "connection_timeout"],
  "upstream-tls": [502, false, "tls_protocol_error"],
  "upstream-protocol": [502, false, "http_protocol_error"],
  "upstream-reset": [502, false, "connection_terminated"],
  "upstream-timeout": [504, false, "http_response_timeout"],
  "scan-failed": [502, false, "proxy_internal_error"],
  "decode-failed": [502, false, "http_response_content_coding"],
  "shutting-down": [503, false, "proxy_internal_response"],
  overloaded: [503, false, "proxy_internal_response"],
  // A credential the request presents has no value now (its source failed past its expiry,
  // or has not answered yet): named, retried later; everything else is served.
  "credential-unavailable": [503, false, "proxy_internal_response"],
  internal: [500, false, "proxy_internal_error"],
} as const satisfies Record<string, readonly [number, boolean, string]>;

export type ProxyErrorCode = keyof typeof CODES;

export class ProxyError extends Error {
  override readonly name = "ProxyError";
  readonly status: number;
  constructor(
    readonly code: ProxyErrorCode,
    /** A short, fixed, secret-free reason shown to the agent and logged. */
    readonly reason: string,
  ) {
    super(`${code}: ${reason}`);
    this.status = CODES[code][0];
  }
}

/** The audit decision for a refusal or failure with this code. */
export function decisionOf(code: ProxyErrorCode): "deny" | "error" {
  return CODES[code][1] ? "deny" : "error";
}

/** The RFC 9209 error type of a code (`Proxy-Status: slapenir; error=…`). */
export function proxyStatusError(code: ProxyErrorCode): string {
  return CODES[code][2];
}

/** The status a code is answered with. */
export function statusOf(code: ProxyErrorCode): number {
  return CODES[code][0];
}

/** The code for a status a request parser refused a message with (http-error.ts). */
export function codeForRejectStatus(status: number): ProxyErrorCode {
  switch (status) {
    case 413:
      return "body-too-large";
    case 414:
      return "uri-too-long";
    case 431:
      return "headers-too-large";
    case 501:
      return "not-implemented";
    case 505:
      return "version-not-supported";
    default:
      return "bad-request";
  }
}

/** Anything thrown on the request path becomes a ProxyError; unknown errors say nothing. */
export function toProxyError(err: unknown): ProxyError {
  if (err instanceof ProxyError) return err;
  return new ProxyError("internal", "internal proxy error");
}
