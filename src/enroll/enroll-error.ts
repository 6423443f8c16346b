// The one error type of the Step-CA enrollment client. `code` says what failed so the proxy
// can decide (retry, give up, alert) without parsing messages. Messages name the CA endpoint
// and status, never a token, key or certificate body.

export type EnrollErrorCode =
  /** Bad options or files (missing token, unreadable key): fix the deployment. */
  | "bad-config"
  /** The CA could not be reached or the TLS handshake failed: retry later. */
  | "ca-unreachable"
  /** The CA answered with an error status (401 token refused/reused, 403 CSR refused…). */
  | "ca-rejected"
  /** The CA answered 2xx with something that is not the expected JSON/PEM. */
  | "bad-response"
  /** The root fetched for bootstrap does not have the pinned fingerprint. */
  | "fingerprint-mismatch"
  /** The certificate expired before it could be renewed. */
  | "expired";

export class EnrollError extends Error {
  override readonly name = "EnrollError";
  constructor(
    readonly code: EnrollErrorCode,
    message: string,
    /** HTTP status for "ca-rejected". */
    readonly status?: number,
  ) {
    super(message);
  }
}
