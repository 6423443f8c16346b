// Loader for the raw HTTP request corpus (test/corpus/http-requests/cases.ts), shared by the
// parser unit test and the live-proxy test. Expectations: "accept" = the bytes are complete,
// valid requests; "reject" = the strict parser reports an error (400 unless `status` says
// otherwise) within the first request, after which nothing may be parsed or forwarded. Every
// reject case is judged on the whole input followed by end-of-stream (three cases only fail
// at EOF: they are truncated).

import { HTTP_REQUEST_CASES } from "./http-requests/cases.ts";

export interface HttpCorpusEntry {
  readonly name: string;
  readonly bytes: Uint8Array;
  readonly expect: "accept" | "reject";
  readonly note: string;
  /** reject: the parser's error code. */
  readonly code?: string;
  /** reject: the status the proxy should answer with. */
  readonly status?: number;
  /** accept: number of complete requests in `bytes`. */
  readonly messages?: number;
}

/** Latin1 string → bytes (one char per byte). */
function bytesOf(raw: string): Uint8Array {
  const out = new Uint8Array(raw.length);
  for (let i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
  return out;
}

export function loadHttpCorpus(): HttpCorpusEntry[] {
  return HTTP_REQUEST_CASES.map(({ raw, ...rest }) => ({ ...rest, bytes: bytesOf(raw) }));
}
