// Decides how a message body is delimited: on the way in, from its Content-Length and
// Transfer-Encoding fields (RFC 9112 6), shared by the request and response parsers; on the way
// out, from what the proxy holds of the body and who it sends it to (outgoingFraming). It must never pick one of
// two conflicting framings: CL with TE, several CL fields, CL lists, signs, hex, spaces or
// tabs in a length, a TE where chunked is not the single final coding — all are refused,
// because every one of them has been used to make two parsers see different messages.

import type { HttpErrorCode } from "./http-error.ts";
import { isToken, splitList } from "./syntax.ts";

export type Framing =
  | { readonly kind: "none" }
  | { readonly kind: "length"; readonly length: number }
  | { readonly kind: "chunked" }
  /** Responses only: the body runs until the connection closes. */
  | { readonly kind: "close" };

/** Longest Content-Length accepted, in digits (keeps every value an exact JS integer). */
export const MAX_CONTENT_LENGTH_DIGITS = 15;

export type FramingProblem = { readonly code: HttpErrorCode; readonly reason: string };

export interface FramingFields {
  readonly contentLength: readonly string[];
  readonly transferEncoding: readonly string[];
  /** Whether any CL/TE field line had an HTAB in its raw value. */
  readonly hasTab: boolean;
  readonly http10: boolean;
}

/** Known codings other than chunked: understood names the proxy still does not decode (501). */
const KNOWN_CODINGS = new Set([
  "gzip",
  "x-gzip",
  "deflate",
  "compress",
  "x-compress",
  "br",
  "zstd",
]);

/**
 * Framing from the fields. `null` Transfer-Encoding means absent. Returns a problem for any
 * ambiguity; the caller maps it to 400/501 (requests) or 502 (responses).
 */
export function decideFraming(f: FramingFields): Framing | FramingProblem {
  const hasCl = f.contentLength.length > 0;
  const hasTe = f.transferEncoding.length > 0;
  if (f.hasTab) {
    return {
      code: hasTe ? "bad-transfer-encoding" : "bad-content-length",
      reason: "tab character in a framing header",
    };
  }
  if (hasCl && hasTe) {
    return {
      code: "content-length-and-transfer-encoding",
      reason: "both Content-Length and Transfer-Encoding present",
    };
  }
  if (hasTe) {
    if (f.http10) {
      return { code: "transfer-encoding-on-http10", reason: "Transfer-Encoding in HTTP/1.0" };
    }
    if (f.transferEncoding.length > 1) {
      return { code: "bad-transfer-encoding", reason: "more than one Transfer-Encoding field" };
    }
    return decideTransferEncoding(f.transferEncoding[0]!);
  }
  if (hasCl) {
    if (f.contentLength.length > 1) {
      return { code: "duplicate-content-length", reason: "more than one Content-Length field" };
    }
    const n = parseContentLength(f.contentLength[0]!);
    if (n === null) return { code: "bad-content-length", reason: "invalid Content-Length" };
    return { kind: "length", length: n };
  }
  return { kind: "none" };
}

function decideTransferEncoding(value: string): Framing | FramingProblem {
  const raw = value.split(",");
  const codings = splitList(value);
  // An empty element ("chunked,", ", chunked") is legal list syntax but has no business in a
  // framing field: a strict reader refuses what others might read differently.
  if (codings.length !== raw.length || codings.length === 0) {
    return { code: "bad-transfer-encoding", reason: "malformed Transfer-Encoding list" };
  }
  const lower = codings.map((c) => c.toLowerCase());
  for (const c of lower) {
    if (!isToken(c)) return { code: "bad-transfer-encoding", reason: "invalid transfer coding" };
  }
  const chunkedCount = lower.filter((c) => c === "chunked").length;
  if (lower[lower.length - 1] !== "chunked" || chunkedCount !== 1) {
    return {
      code: "bad-transfer-encoding",
      reason: "chunked must be the single, final transfer coding",
    };
  }
  if (lower.length > 1) {
    const unknown = lower.slice(0, -1).some((c) => !KNOWN_CODINGS.has(c));
    return {
      code: unknown ? "bad-transfer-encoding" : "unsupported-transfer-encoding",
      reason: unknown ? "unknown transfer coding" : "transfer codings other than chunked",
    };
  }
  return { kind: "chunked" };
}

/** 1*DIGIT only, at most MAX_CONTENT_LENGTH_DIGITS digits; null for anything else. */
export function parseContentLength(value: string): number | null {
  if (value.length === 0 || value.length > MAX_CONTENT_LENGTH_DIGITS) return null;
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return null;
    n = n * 10 + (c - 0x30);
  }
  return n;
}

/** What the proxy has of a body it is about to send. */
export type OutgoingBody =
  | { readonly kind: "none" }
  | { readonly kind: "held"; readonly length: number }
  /** `length`: what the body will add up to, when that is known. */
  | { readonly kind: "stream"; readonly length: number | null };

/**
 * How the proxy frames a body it sends. To an upstream: its length when known, else chunked; no
 * body, no field. To an agent: a streamed answer is chunked (a redaction may change its length)
 * or, for an HTTP/1.0 agent, delimited by closing the connection; no body is a length of 0.
 */
export function outgoingFraming(
  body: OutgoingBody,
  to: "upstream" | "agent-1.1" | "agent-1.0",
): Framing {
  if (body.kind === "none")
    return to === "upstream" ? { kind: "none" } : { kind: "length", length: 0 };
  if (body.kind === "held") return { kind: "length", length: body.length };
  if (to === "upstream") {
    return body.length === null ? { kind: "chunked" } : { kind: "length", length: body.length };
  }
  return to === "agent-1.1" ? { kind: "chunked" } : { kind: "close" };
}

/** The header fields that announce a framing (a close-delimited body announces nothing). */
export function framingFields(f: Framing): [string, string][] {
  if (f.kind === "length") return [["content-length", String(f.length)]];
  if (f.kind === "chunked") return [["transfer-encoding", "chunked"]];
  return [];
}
