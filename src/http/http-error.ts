// The one error type of the HTTP codec (src/http). Parsers never throw on bad input: they
// report a ParseFailure value; HttpError is thrown only for programming errors and for heads
// the proxy itself tries to serialize with unsafe bytes. Messages name header fields, never
// header values: values can carry credentials.

/** Statuses a request parser can ask the proxy to answer with before closing. */
export type RequestRejectStatus = 400 | 413 | 414 | 431 | 501 | 505;

export type HttpErrorCode =
  // request-line / status-line
  | "bad-request-line"
  | "bad-method"
  | "bad-target"
  | "bad-version"
  | "unsupported-version"
  | "request-line-too-long"
  | "bad-status-line"
  // line endings and bytes
  | "bare-lf"
  | "bare-cr"
  // fields
  | "bad-header-name"
  | "bad-header-value"
  | "obs-fold"
  | "space-before-colon"
  | "headers-too-large"
  | "too-many-headers"
  | "bad-host"
  | "missing-host"
  | "duplicate-host"
  | "bad-connection"
  | "bad-upgrade"
  // framing
  | "bad-content-length"
  | "duplicate-content-length"
  | "content-length-and-transfer-encoding"
  | "bad-transfer-encoding"
  | "unsupported-transfer-encoding"
  | "transfer-encoding-on-http10"
  | "body-too-large"
  | "bad-chunk-size"
  | "chunk-size-overflow"
  | "bad-chunk-extension"
  | "chunk-extension-too-long"
  | "missing-chunk-crlf"
  | "bad-trailer"
  | "forbidden-trailer"
  | "connect-with-body"
  // end of input
  | "incomplete-request"
  | "truncated"
  | "unexpected-data"
  // API misuse and serialization
  | "parser-detached"
  | "parser-not-paused"
  | "unsafe-header"
  | "unsafe-start-line";

/** A fatal parse result: the connection must be answered (requests) or aborted, then closed. */
export interface ParseFailure {
  readonly code: HttpErrorCode;
  /** For requests: what to answer the agent. For responses: always 502 (bad gateway). */
  readonly status: RequestRejectStatus | 502;
  /** Short human text, safe to log and to send: never contains message bytes. */
  readonly reason: string;
}

export class HttpError extends Error {
  override readonly name = "HttpError";
  constructor(
    readonly code: HttpErrorCode,
    message: string,
  ) {
    super(message);
  }
}

export function failure(
  code: HttpErrorCode,
  status: RequestRejectStatus | 502,
  reason: string,
): ParseFailure {
  return { code, status, reason };
}
