// The chunked transfer coding (RFC 9112 7.1): a streaming decoder shared by the request and
// response parsers, and a streaming encoder the proxy uses to re-frame bodies it forwards.
// The decoder must never guess: a size it cannot read exactly, a missing CRLF after chunk
// data, an over-long extension or a framing field in the trailers is fatal. The encoder must
// never emit an empty chunk for empty data (that would end the body early) and never forward
// chunk extensions (they are dropped on decode, so nothing ambiguous is re-sent).

import { parseFieldLine } from "./field-line.ts";
import { HeaderList } from "./header-list.ts";
import type { HttpErrorCode, ParseFailure } from "./http-error.ts";
import { failure } from "./http-error.ts";
import { LineReader } from "./line-reader.ts";
import { serializeFields } from "./serialize.ts";
import { CR, HTAB, hexValue, LF, SP, TCHAR } from "./syntax.ts";

export type BodyEvent =
  | { readonly type: "body"; readonly data: Uint8Array }
  | { readonly type: "trailers"; readonly trailers: HeaderList }
  | { readonly type: "end" }
  | { readonly type: "error"; readonly error: ParseFailure };

/** Where the decoder appends events: any array whose element type includes BodyEvent. */
export interface EventSink {
  push(event: BodyEvent): number;
}

export interface ChunkedDecoderOptions {
  /** Cap on one chunk-size line including extensions and CRLF. */
  readonly maxChunkLineBytes: number;
  /** Cap on the trailer section in bytes (including the final CRLF). */
  readonly maxTrailerBytes: number;
  readonly maxTrailerCount: number;
  /** Cap on decoded body bytes (413 for requests). */
  readonly maxBodyBytes: number;
  /** Status for framing errors: 400 when decoding a request, 502 for an upstream response. */
  readonly errorStatus: 400 | 502;
}

/**
 * Fields a sender must not put in trailers (RFC 9110 6.5.1: framing, routing, request
 * modifiers, authentication, content handling). A peer that tries is treated as hostile.
 */
export const FORBIDDEN_TRAILERS: ReadonlySet<string> = new Set([
  "content-length",
  "transfer-encoding",
  "host",
  "connection",
  "keep-alive",
  "proxy-connection",
  "upgrade",
  "trailer",
  "te",
  "expect",
  "authorization",
  "proxy-authorization",
  "www-authenticate",
  "proxy-authenticate",
  "cookie",
  "set-cookie",
  "content-encoding",
  "content-type",
  "content-range",
  "location",
]);

/** Largest chunk-size digit count accepted (leading zeros included). */
export const MAX_CHUNK_SIZE_DIGITS = 16;

type State = "size" | "data" | "data-cr" | "data-lf" | "trailers" | "done" | "failed";

export class ChunkedDecoder {
  readonly #opts: ChunkedDecoderOptions;
  readonly #lines = new LineReader();
  #state: State = "size";
  #remaining = 0;
  #total = 0;
  #trailerBytes = 0;
  #trailers: [string, string][] = [];

  constructor(opts: ChunkedDecoderOptions) {
    this.#opts = opts;
  }

  /** True once the last chunk and trailer section have been read. */
  get done(): boolean {
    return this.#state === "done";
  }

  get failed(): boolean {
    return this.#state === "failed";
  }

  /** True while no byte of the body has been consumed yet (for EOF classification). */
  get midBody(): boolean {
    return this.#state !== "done" && this.#state !== "failed";
  }

  /**
   * Consume from `input` at `pos`, appending events to `out`. Returns the position after the
   * last consumed byte: it stops right after the body's final CRLF (what follows belongs to
   * the next message) or at the first error.
   */
  decode(input: Uint8Array, pos: number, out: EventSink): number {
    while (pos < input.length) {
      switch (this.#state) {
        case "size": {
          const r = this.#lines.read(input, pos, this.#opts.maxChunkLineBytes);
          if (r.kind === "more") return input.length;
          if (r.kind === "too-long") {
            return this.#fail(out, "chunk-extension-too-long", "chunk size line too long");
          }
          if (r.kind === "bare-lf") return this.#fail(out, "bare-lf", "bare LF in a chunk line");
          if (r.kind === "bare-cr") return this.#fail(out, "bare-cr", "bare CR in a chunk line");
          const size = parseChunkLine(r.line);
          if (typeof size === "string") return this.#fail(out, size, chunkLineReason(size));
          pos = r.next;
          if (size === 0) {
            this.#state = "trailers";
          } else {
            if (this.#total + size > this.#opts.maxBodyBytes) {
              return this.#fail(out, "body-too-large", "body exceeds the size limit", 413);
            }
            this.#total += size;
            this.#remaining = size;
            this.#state = "data";
          }
          break;
        }
        case "data": {
          const n = Math.min(this.#remaining, input.length - pos);
          out.push({ type: "body", data: input.subarray(pos, pos + n) });
          pos += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#state = "data-cr";
          break;
        }
        case "data-cr":
          if (input[pos] !== CR) {
            return this.#fail(out, "missing-chunk-crlf", "chunk data not followed by CRLF");
          }
          pos++;
          this.#state = "data-lf";
          break;
        case "data-lf":
          if (input[pos] !== LF) {
            return this.#fail(out, "missing-chunk-crlf", "chunk data not followed by CRLF");
          }
          pos++;
          this.#state = "size";
          break;
        case "trailers": {
          const budget = this.#opts.maxTrailerBytes - this.#trailerBytes;
          const r = this.#lines.read(input, pos, budget);
          if (r.kind === "more") return input.length;
          if (r.kind === "too-long") {
            return this.#fail(out, "headers-too-large", "trailer section too large", 431);
          }
          if (r.kind === "bare-lf") return this.#fail(out, "bare-lf", "bare LF in trailers");
          if (r.kind === "bare-cr") return this.#fail(out, "bare-cr", "bare CR in trailers");
          pos = r.next;
          this.#trailerBytes += r.size;
          if (r.line.length === 0) {
            if (this.#trailers.length > 0) {
              out.push({ type: "trailers", trailers: new HeaderList(this.#trailers) });
              this.#trailers = [];
            }
            out.push({ type: "end" });
            this.#state = "done";
            return pos;
          }
          const f = parseFieldLine(r.line);
          if (!f.ok) return this.#fail(out, "bad-trailer", `invalid trailer: ${f.reason}`);
          if (FORBIDDEN_TRAILERS.has(f.name.toLowerCase())) {
            return this.#fail(
              out,
              "forbidden-trailer",
              `field ${f.name} is not allowed in trailers`,
            );
          }
          if (this.#trailers.length >= this.#opts.maxTrailerCount) {
            return this.#fail(out, "too-many-headers", "too many trailer fields", 431);
          }
          this.#trailers.push([f.name, f.value]);
          break;
        }
        case "done":
        case "failed":
          return pos;
      }
    }
    return pos;
  }

  #fail(out: EventSink, code: HttpErrorCode, reason: string, requestStatus?: 413 | 431): number {
    this.#state = "failed";
    const status = this.#opts.errorStatus === 502 ? 502 : (requestStatus ?? 400);
    out.push({ type: "error", error: failure(code, status, reason) });
    return Number.POSITIVE_INFINITY;
  }
}

/** chunk-size [ chunk-ext ]: the size, or the error code. Extensions are validated, then dropped. */
function parseChunkLine(line: Uint8Array): number | HttpErrorCode {
  let i = 0;
  let size = 0;
  while (i < line.length && hexValue(line[i]!) !== -1) {
    if (i >= MAX_CHUNK_SIZE_DIGITS) return "chunk-size-overflow";
    size = size * 16 + hexValue(line[i]!);
    i++;
  }
  if (i === 0) return "bad-chunk-size";
  if (size > Number.MAX_SAFE_INTEGER) return "chunk-size-overflow";
  // chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
  for (;;) {
    const wsStart = i;
    while (i < line.length && (line[i] === SP || line[i] === HTAB)) i++;
    if (i === line.length) return i === wsStart ? size : "bad-chunk-extension";
    if (line[i] !== 0x3b /* ; */) return i === wsStart ? "bad-chunk-size" : "bad-chunk-extension";
    i++;
    while (i < line.length && (line[i] === SP || line[i] === HTAB)) i++;
    const nameStart = i;
    while (i < line.length && TCHAR[line[i]!] === 1) i++;
    if (i === nameStart) return "bad-chunk-extension";
    let j = i;
    while (j < line.length && (line[j] === SP || line[j] === HTAB)) j++;
    if (j < line.length && line[j] === 0x3d /* = */) {
      i = j + 1;
      while (i < line.length && (line[i] === SP || line[i] === HTAB)) i++;
      if (i < line.length && line[i] === 0x22 /* " */) {
        i = skipQuotedString(line, i);
        if (i === -1) return "bad-chunk-extension";
      } else {
        const valStart = i;
        while (i < line.length && TCHAR[line[i]!] === 1) i++;
        if (i === valStart) return "bad-chunk-extension";
      }
    }
  }
}

/** quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE; returns the index after it or -1. */
function skipQuotedString(line: Uint8Array, start: number): number {
  let i = start + 1;
  while (i < line.length) {
    const c = line[i]!;
    if (c === 0x22) return i + 1;
    if (c === 0x5c /* \ */) {
      const n = line[i + 1];
      if (n === undefined || !(n === HTAB || (n >= 0x20 && n !== 0x7f))) return -1;
      i += 2;
      continue;
    }
    if (!(c === HTAB || c === SP || c === 0x21 || (c >= 0x23 && c !== 0x7f))) return -1;
    i++;
  }
  return -1;
}

function chunkLineReason(code: HttpErrorCode): string {
  switch (code) {
    case "chunk-size-overflow":
      return "chunk size too large";
    case "bad-chunk-extension":
      return "malformed chunk extension";
    default:
      return "malformed chunk size";
  }
}

const CRLF = Uint8Array.of(CR, LF);
const LAST_CHUNK = Uint8Array.of(0x30, CR, LF);

/**
 * Streaming chunked encoder. `encode` returns the pieces to write in order (size line, the
 * caller's bytes untouched, CRLF) so a large body is never copied.
 */
export class ChunkedEncoder {
  #ended = false;

  encode(data: Uint8Array): Uint8Array[] {
    if (this.#ended) throw new RangeError("chunked encoder already ended");
    if (data.length === 0) return [];
    const sizeLine = new TextEncoder().encode(`${data.length.toString(16)}\r\n`);
    return [sizeLine, data, CRLF];
  }

  /** One chunk as a single array (size line, data, CRLF): one write per chunk. */
  frame(data: Uint8Array): Uint8Array {
    const [size, body, crlf] = this.encode(data) as [Uint8Array, Uint8Array, Uint8Array];
    const out = new Uint8Array(size.length + body.length + crlf.length);
    out.set(size, 0);
    out.set(body, size.length);
    out.set(crlf, size.length + body.length);
    return out;
  }

  /** The last chunk, optional trailers (validated like headers), and the final CRLF. */
  end(trailers: readonly (readonly [string, string])[] = []): Uint8Array {
    if (this.#ended) throw new RangeError("chunked encoder already ended");
    this.#ended = true;
    if (trailers.length === 0) return Uint8Array.of(...LAST_CHUNK, CR, LF);
    const fields = serializeFields(trailers);
    const out = new Uint8Array(LAST_CHUNK.length + fields.length + 2);
    out.set(LAST_CHUNK, 0);
    out.set(fields, LAST_CHUNK.length);
    out.set(CRLF, LAST_CHUNK.length + fields.length);
    return out;
  }
}
