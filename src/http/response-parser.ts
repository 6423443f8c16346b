// Incremental, strict HTTP/1.1 response parser for what upstreams send back, sans I/O. It
// needs to know the request method of each response (HEAD and CONNECT change framing), given
// in order with `expect(method)`. It must never pass on an ambiguous message (CL with TE,
// bad lengths, obs-fold, bare CR/LF …: error, status 502) and never let a body cut short look
// complete: EOF before the framing is satisfied is the `truncated` error, distinct from the
// clean end of a close-delimited body. No I/O, logging or timers.

import { type BodyEvent, ChunkedDecoder } from "./chunked.ts";
import { parseFieldLine } from "./field-line.ts";
import { decideFraming, type Framing } from "./framing.ts";
import { HeaderList } from "./header-list.ts";
import { failure, HttpError, type HttpErrorCode } from "./http-error.ts";
import { LineReader } from "./line-reader.ts";
import { FIELD_VALUE_BYTE, isToken, latin1, splitList } from "./syntax.ts";

export interface ResponseParserOptions {
  readonly maxStatusLineBytes?: number;
  readonly maxHeaderBytes?: number;
  readonly maxHeaderCount?: number;
  readonly maxChunkLineBytes?: number;
  readonly maxBodyBytes?: number;
}

export const RESPONSE_PARSER_DEFAULTS = {
  maxStatusLineBytes: 8 * 1024,
  maxHeaderBytes: 64 * 1024,
  maxHeaderCount: 200,
  maxChunkLineBytes: 4 * 1024,
  maxBodyBytes: Number.POSITIVE_INFINITY,
} as const;

export interface ResponseHead {
  readonly status: number;
  /** Reason phrase, latin1 (may be empty). */
  readonly reason: string;
  readonly version: "1.0" | "1.1";
  readonly headers: HeaderList;
  readonly framing: Framing;
  /** 1xx other than 101: an interim response; the final one follows. */
  readonly interim: boolean;
  /** Whether the connection can carry another response after this one. */
  readonly keepAlive: boolean;
  readonly connection: readonly string[];
  /** 101 or a 2xx answer to CONNECT: the connection stops being HTTP after this head. */
  readonly switchesProtocol: boolean;
}

export type ResponseEvent = { readonly type: "head"; readonly head: ResponseHead } | BodyEvent;

type State = "start" | "headers" | "length" | "chunked" | "close" | "closed" | "dead" | "detached";

export class ResponseParser {
  readonly #o: Required<ResponseParserOptions>;
  readonly #lines = new LineReader();
  readonly #methods: string[] = [];
  #state: State = "start";
  #inMessage = false;
  #headerBytes = 0;
  #status = 0;
  #reason = "";
  #version: "1.0" | "1.1" = "1.1";
  #fields: [string, string][] = [];
  #framingTab = false;
  #remaining = 0;
  #decoder: ChunkedDecoder | null = null;
  #after: "start" | "closed" | "detached" = "start";
  #leftover: Uint8Array = new Uint8Array(0);

  constructor(options: ResponseParserOptions = {}) {
    this.#o = { ...RESPONSE_PARSER_DEFAULTS, ...options };
  }

  /** Register the method of the next request sent on this connection (FIFO). */
  expect(method: string): void {
    this.#methods.push(method);
  }

  get state(): "idle" | "message" | "closed" | "dead" | "detached" {
    const s = this.#state;
    if (s === "closed" || s === "dead" || s === "detached") return s;
    return this.#inMessage ? "message" : "idle";
  }

  feed(input: Uint8Array): ResponseEvent[] {
    const out: ResponseEvent[] = [];
    if (this.#state === "detached") {
      throw new HttpError("parser-detached", "parser was detached after a protocol switch");
    }
    if (this.#state === "dead" || input.length === 0) return out;
    if (this.#state === "closed") {
      // A response after one that said the connection ends is not trusted as HTTP.
      this.#fail(out, "unexpected-data", "data after the final response");
      return out;
    }
    let pos = 0;
    while (pos < input.length) {
      switch (this.#state as State) {
        case "start":
          if (this.#methods.length === 0) {
            this.#fail(out, "unexpected-data", "response without a request");
            return out;
          }
          pos = this.#readLine(input, pos, out, true);
          break;
        case "headers":
          pos = this.#readLine(input, pos, out, false);
          break;
        case "length": {
          const n = Math.min(this.#remaining, input.length - pos);
          out.push({ type: "body", data: input.subarray(pos, pos + n) });
          pos += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#endMessage(out);
          break;
        }
        case "close":
          out.push({ type: "body", data: input.subarray(pos) });
          pos = input.length;
          break;
        case "chunked": {
          const d = this.#decoder!;
          pos = d.decode(input, pos, out);
          if (d.failed) {
            this.#state = "dead";
            return out;
          }
          if (d.done) {
            out.pop();
            this.#endMessage(out);
          }
          break;
        }
        case "detached":
          this.#leftover = input.slice(pos);
          return out;
        case "closed":
          this.#fail(out, "unexpected-data", "data after the final response");
          return out;
        case "dead":
          return out;
      }
    }
    return out;
  }

  /**
   * The upstream closed its side. A close-delimited body ends cleanly here; anything else
   * unfinished (head, length or chunked body) is the `truncated` error.
   */
  finish(): ResponseEvent[] {
    const out: ResponseEvent[] = [];
    if (this.#state === "close") {
      this.#endMessage(out);
      this.#state = "closed";
      return out;
    }
    if (this.#state === "dead" || this.#state === "detached" || this.#state === "closed")
      return out;
    if (this.#inMessage) this.#fail(out, "truncated", "upstream closed before the response ended");
    else this.#state = "closed";
    return out;
  }

  /** After a protocol switch: the bytes that followed the head (they belong to the tunnel). */
  takeLeftover(): Uint8Array {
    if (this.#state !== "detached") throw new HttpError("parser-not-paused", "no protocol switch");
    const l = this.#leftover;
    this.#leftover = new Uint8Array(0);
    return l;
  }

  #readLine(input: Uint8Array, pos: number, out: ResponseEvent[], start: boolean): number {
    this.#inMessage = true;
    const cap = start ? this.#o.maxStatusLineBytes : this.#o.maxHeaderBytes - this.#headerBytes;
    const r = this.#lines.read(input, pos, cap);
    switch (r.kind) {
      case "more":
        return input.length;
      case "too-long":
        return this.#fail(out, start ? "bad-status-line" : "headers-too-large", "head too large");
      case "bare-lf":
        return this.#fail(out, "bare-lf", "bare LF in the response head");
      case "bare-cr":
        return this.#fail(out, "bare-cr", "bare CR in the response head");
    }
    if (start) {
      const problem = this.#parseStatusLine(r.line);
      if (problem) return this.#fail(out, "bad-status-line", problem);
      this.#state = "headers";
      this.#headerBytes = 0;
      this.#fields = [];
      this.#framingTab = false;
      return r.next;
    }
    this.#headerBytes += r.size;
    if (r.line.length === 0) return this.#completeHead(out, r.next);
    const f = parseFieldLine(r.line);
    if (!f.ok) return this.#fail(out, f.code, f.reason);
    if (this.#fields.length >= this.#o.maxHeaderCount) {
      return this.#fail(out, "too-many-headers", "too many header fields");
    }
    const lname = f.name.toLowerCase();
    if (f.hasTab && (lname === "content-length" || lname === "transfer-encoding")) {
      this.#framingTab = true;
    }
    this.#fields.push([f.name, f.value]);
    return r.next;
  }

  /** status-line = HTTP-version SP 3DIGIT SP [ reason-phrase ]; returns a problem or null. */
  #parseStatusLine(line: Uint8Array): string | null {
    const text = latin1(line);
    // The SP after the code is required by RFC 9112 4 but commonly omitted when the reason is
    // empty; accepting "HTTP/1.1 204" creates no framing ambiguity.
    const m = /^HTTP\/1\.([01]) ([1-9][0-9]{2})(?: (.*))?$/s.exec(text);
    if (!m) return "malformed status line";
    const reason = m[3] ?? "";
    for (let i = 0; i < reason.length; i++) {
      if (FIELD_VALUE_BYTE[reason.charCodeAt(i)] !== 1) return "invalid byte in reason phrase";
    }
    this.#version = m[1] === "1" ? "1.1" : "1.0";
    this.#status = Number(m[2]);
    this.#reason = reason;
    return null;
  }

  #completeHead(out: ResponseEvent[], next: number): number {
    const headers = new HeaderList(this.#fields);
    this.#fields = [];
    const status = this.#status;
    const http10 = this.#version === "1.0";
    const method = this.#methods[0]!;
    const interim = status >= 100 && status < 200 && status !== 101;
    const switches = status === 101 || (method === "CONNECT" && status >= 200 && status < 300);

    const connection: string[] = [];
    for (const v of headers.getAll("connection")) {
      for (const t of splitList(v)) {
        if (!isToken(t)) return this.#fail(out, "bad-connection", "invalid Connection token");
        connection.push(t.toLowerCase());
      }
    }
    const te = headers.getAll("transfer-encoding");
    const noBody =
      status < 200 || status === 204 || status === 304 || method === "HEAD" || switches;
    if (te.length > 0 && (status < 200 || status === 204)) {
      return this.#fail(out, "bad-transfer-encoding", "Transfer-Encoding on a 1xx or 204");
    }
    const decided = decideFraming({
      contentLength: headers.getAll("content-length"),
      transferEncoding: te,
      hasTab: this.#framingTab,
      http10,
    });
    if ("code" in decided) return this.#fail(out, decided.code, decided.reason);
    if (decided.kind === "length" && decided.length > this.#o.maxBodyBytes) {
      return this.#fail(out, "body-too-large", "response body exceeds the size limit");
    }
    if ((status < 200 || status === 204) && decided.kind === "length" && decided.length !== 0) {
      return this.#fail(out, "bad-content-length", "Content-Length on a 1xx or 204");
    }
    const framing: Framing = noBody
      ? { kind: "none" }
      : decided.kind === "none"
        ? { kind: "close" }
        : decided;
    const close = connection.includes("close");
    const keepAlive =
      framing.kind !== "close" &&
      !switches &&
      (http10 ? connection.includes("keep-alive") && !close : !close);

    out.push({
      type: "head",
      head: {
        status,
        reason: this.#reason,
        version: this.#version,
        headers,
        framing,
        interim,
        keepAlive,
        connection,
        switchesProtocol: switches,
      },
    });
    if (interim) {
      this.#state = "start";
      return next;
    }
    this.#methods.shift();
    this.#after = switches ? "detached" : keepAlive ? "start" : "closed";
    if (framing.kind === "chunked") {
      this.#decoder = new ChunkedDecoder({
        maxChunkLineBytes: this.#o.maxChunkLineBytes,
        maxTrailerBytes: this.#o.maxHeaderBytes,
        maxTrailerCount: this.#o.maxHeaderCount,
        maxBodyBytes: this.#o.maxBodyBytes,
        errorStatus: 502,
      });
      this.#state = "chunked";
    } else if (framing.kind === "length" && framing.length > 0) {
      this.#remaining = framing.length;
      this.#state = "length";
    } else if (framing.kind === "close") {
      this.#state = "close";
    } else {
      this.#endMessage(out);
    }
    return next;
  }

  #endMessage(out: ResponseEvent[]): void {
    out.push({ type: "end" });
    this.#decoder = null;
    this.#inMessage = false;
    this.#state = this.#after;
  }

  #fail(out: ResponseEvent[], code: HttpErrorCode, reason: string): number {
    this.#state = "dead";
    out.push({ type: "error", error: failure(code, 502, reason) });
    return Number.POSITIVE_INFINITY;
  }
}
