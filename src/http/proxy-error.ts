// The one error type of the proxy's request path: a code, the status it maps to, and whether
// the audit log counts it as the proxy refusing (deny) or something failing (error). Every
// refusal and failure the agent can be told about is one of these codes; the table below is the
// only place a code gets its status. A ProxyError's reason is shown to the agent and written to
// the audit log, so it must never carry a secret, a substituted URL or upstream-provided text.

/** Status, and whether the code is the proxy deciding not to serve (true) or a failure. */
const CODES = {
  "bad-request": [400, true],
  "uri-too-long": [414, true],
  "headers-too-large": [431, true],
  "not-implemented": [501, true],
  "version-not-supported": [505, true],
  misdirected: [421, true],
  "policy-denied": [403, true],
  "address-denied": [403, true],
  "dlp-blocked": [403, true],
  quarantined: [403, true],
  "required-dummy-missing": [403, true],
  // A request to an AWS credential's host not signed with the agent's (dummy) key.
  "bad-signature": [403, true],
  "upgrade-refused": [501, true],
  "rate-limited": [429, true],
  "connection-limit": [429, true],
  "body-too-large": [413, true],
  // The agent left or stalled mid-request: a failure on its side, not a refusal.
  "agent-gone": [400, false],
  "agent-timeout": [408, false],
  "dns-failed": [502, false],
  "connect-failed": [502, false],
  "connect-timeout": [504, false],
  "upstream-tls": [502, false],
  "upstream-protocol": [502, false],
  "upstream-reset": [502, false],
  "upstream-timeout": [504, false],
  "scan-failed": [502, false],
  "decode-failed": [502, false],
  "shutting-down": [503, false],
  overloaded: [503, false],
  // A credential the request presents has no value now (its source failed past its expiry,
  // or has not answered yet): named, retried later; everything else is served.
  "credential-unavailable": [503, false],
  internal: [500, false],
} as const satisfies Record<string, readonly [number, boolean]>;

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
