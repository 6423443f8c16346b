// Incremental, strict HTTP/1.1 request parser (RFC 9110/9112), sans I/O: the proxy feeds it
// the bytes of the agent's (decrypted) connection and acts on the events that come out. It
// must never recover from a malformed request: the first error is the only event it ever
// reports again — it goes dead and parses nothing after it, so no byte a peer crafted to
// desynchronise a parser is ever read as a request. It never performs I/O, logging or timing.
//
// Pipelining: after one message ends it parses the next from the bytes that follow. After a
// CONNECT request or an accepted-looking Upgrade request it *pauses*: what follows is not
// necessarily HTTP, so the caller decides — `resume()` (e.g. the upgrade was refused) or
// `detach()` (take the buffered bytes and tunnel them).

import { type BodyEvent, ChunkedDecoder } from "./chunked.ts";
import { parseFieldLine } from "./field-line.ts";
import { decideFraming, type Framing } from "./framing.ts";
import { HeaderList } from "./header-list.ts";
import {
  failure,
  HttpError,
  type HttpErrorCode,
  type ParseFailure,
  type RequestRejectStatus,
} from "./http-error.ts";
import { LineReader } from "./line-reader.ts";
import { checkAuthority, parseRequestTarget, type TargetForm } from "./request-target.ts";
import { isToken, isTokenBytes, latin1, SP, splitList } from "./syntax.ts";

export interface RequestParserOptions {
  /** Request-line cap in bytes including CRLF (and any empty lines before it) → 414. */
  readonly maxRequestLineBytes?: number;
  /** Header section cap in bytes including every CRLF and the final empty line → 431. */
  readonly maxHeaderBytes?: number;
  /** Header field count cap → 431. */
  readonly maxHeaderCount?: number;
  /** Cap on one chunk-size line with its extensions → 400. */
  readonly maxChunkLineBytes?: number;
  /** Cap on a request body → 413. Default: unlimited (the proxy streams). */
  readonly maxBodyBytes?: number;
}

export const REQUEST_PARSER_DEFAULTS = {
  maxRequestLineBytes: 8 * 1024,
  maxHeaderBytes: 32 * 1024,
  maxHeaderCount: 100,
  maxChunkLineBytes: 4 * 1024,
  maxBodyBytes: Number.POSITIVE_INFINITY,
} as const;

export interface RequestHead {
  readonly method: string;
  /** The request-target exactly as received. */
  readonly target: string;
  readonly targetForm: TargetForm;
  /** absolute-form only. */
  readonly scheme?: "http" | "https";
  /** The authority the request names: the CONNECT target, the absolute-form authority, or the
   *  Host field (in that order of precedence, RFC 9112 3.2.2). Absent only for HTTP/1.0
   *  origin-form requests without Host. Syntax-checked, not canonicalised. */
  readonly authority?: string;
  /** The Host field value, when present (the proxy compares it with the dialled host). */
  readonly host?: string;
  readonly version: "1.0" | "1.1";
  readonly headers: HeaderList;
  readonly framing: Exclude<Framing, { kind: "close" }>;
  readonly keepAlive: boolean;
  /** `Expect: 100-continue` on HTTP/1.1. */
  readonly expectContinue: boolean;
  /** Lower-cased tokens of every Connection field. */
  readonly connection: readonly string[];
  /** Protocols offered by `Upgrade` when `Connection` lists "upgrade" (the proxy decides;
   *  h2c is always refused). */
  readonly upgrade?: readonly string[];
}

export type RequestEvent = { readonly type: "head"; readonly head: RequestHead } | BodyEvent;

type State = "start" | "headers" | "length" | "chunked" | "paused" | "closed" | "dead" | "detached";

export class RequestParser {
  readonly #o: Required<RequestParserOptions>;
  readonly #lines = new LineReader();
  #state: State = "start";
  /** Bytes of the current request-line budget used (including skipped empty lines). */
  #startBytes = 0;
  /** Whether any byte of the next/current message has been seen. */
  #inMessage = false;
  #headerBytes = 0;
  #method = "";
  #target = "";
  #version: "1.0" | "1.1" = "1.1";
  #fields: [string, string][] = [];
  #framingTab = false;
  #remaining = 0;
  #decoder: ChunkedDecoder | null = null;
  #pauseAfter = false;
  #closeAfter = false;
  #pending: Uint8Array[] = [];

  constructor(options: RequestParserOptions = {}) {
    this.#o = { ...REQUEST_PARSER_DEFAULTS, ...options };
  }

  /**
   * "idle" between messages, "message" inside one, "paused" after CONNECT/Upgrade, "closed"
   * after a message that ends the connection (Connection: close, HTTP/1.0), "dead" after an
   * error, "detached" after `detach()`.
   */
  get state(): "idle" | "message" | "paused" | "closed" | "dead" | "detached" {
    const s = this.#state;
    if (s === "paused" || s === "closed" || s === "dead" || s === "detached") return s;
    return this.#inMessage ? "message" : "idle";
  }

  feed(input: Uint8Array): RequestEvent[] {
    const out: RequestEvent[] = [];
    if (this.#state === "detached") {
      throw new HttpError("parser-detached", "parser was detached; feed the tunnel instead");
    }
    // RFC 9112 9.6: nothing after a request that closes the connection is processed.
    if (this.#state === "dead" || this.#state === "closed" || input.length === 0) return out;
    if (this.#state === "paused") {
      this.#pending.push(input.slice());
      return out;
    }
    this.#run(input, 0, out);
    return out;
  }

  /** End of input from the peer. Mid-message → error (400, nothing to forward). */
  finish(): RequestEvent[] {
    const s = this.#state;
    if (s === "dead" || s === "closed" || s === "detached" || s === "paused") return [];
    if (!this.#inMessage) {
      this.#state = "closed";
      return [];
    }
    const out: RequestEvent[] = [];
    this.#fail(out, "incomplete-request", 400, "connection closed in the middle of a request");
    return out;
  }

  /** Continue parsing HTTP after a pause (e.g. the proxy refused the upgrade). */
  resume(): RequestEvent[] {
    if (this.#state !== "paused") throw new HttpError("parser-not-paused", "parser is not paused");
    this.#state = "start";
    const pending = this.#pending;
    this.#pending = [];
    const out: RequestEvent[] = [];
    for (const chunk of pending) {
      const s = this.#state as State;
      if (s === "paused") this.#pending.push(chunk);
      else if (s !== "dead" && s !== "closed") this.#run(chunk, 0, out);
    }
    return out;
  }

  /** Stop parsing for good and take the bytes received after the paused message. */
  detach(): Uint8Array {
    if (this.#state !== "paused") throw new HttpError("parser-not-paused", "parser is not paused");
    this.#state = "detached";
    const total = this.#pending.reduce((n, c) => n + c.length, 0);
    const rest = new Uint8Array(total);
    let at = 0;
    for (const c of this.#pending) {
      rest.set(c, at);
      at += c.length;
    }
    this.#pending = [];
    return rest;
  }

  #run(input: Uint8Array, pos: number, out: RequestEvent[]): void {
    while (pos < input.length) {
      switch (this.#state as State) {
        case "start":
          pos = this.#readStartLine(input, pos, out);
          break;
        case "headers":
          pos = this.#readHeaderLine(input, pos, out);
          break;
        case "length": {
          const n = Math.min(this.#remaining, input.length - pos);
          out.push({ type: "body", data: input.subarray(pos, pos + n) });
          pos += n;
          this.#remaining -= n;
          if (this.#remaining === 0) this.#endMessage(out);
          break;
        }
        case "chunked": {
          const decoder = this.#decoder!;
          pos = decoder.decode(input, pos, out);
          if (decoder.failed) {
            this.#state = "dead";
            return;
          }
          if (decoder.done) {
            out.pop(); // the decoder's "end"; #endMessage emits it with the state change
            this.#endMessage(out);
          }
          break;
        }
        case "paused":
          this.#pending.push(input.slice(pos));
          return;
        case "closed":
        case "dead":
        case "detached":
          return;
      }
    }
  }

  #readStartLine(input: Uint8Array, pos: number, out: RequestEvent[]): number {
    this.#inMessage = true;
    const r = this.#lines.read(input, pos, this.#o.maxRequestLineBytes - this.#startBytes);
    switch (r.kind) {
      case "more":
        return input.length;
      case "too-long":
        return this.#fail(out, "request-line-too-long", 414, "request line too long");
      case "bare-lf":
        return this.#fail(out, "bare-lf", 400, "bare LF in the request line");
      case "bare-cr":
        return this.#fail(out, "bare-cr", 400, "bare CR in the request line");
    }
    this.#startBytes += r.size;
    // RFC 9112 2.2: a server SHOULD ignore empty lines before a request-line (they count
    // against the request-line cap, so they cannot be used to stall the parser for free).
    if (r.line.length === 0) return r.next;
    const problem = this.#parseRequestLine(r.line);
    if (problem) {
      return this.#fail(out, problem.code, problem.status as RequestRejectStatus, problem.reason);
    }
    this.#state = "headers";
    this.#headerBytes = 0;
    this.#fields = [];
    this.#framingTab = false;
    return r.next;
  }

  #parseRequestLine(line: Uint8Array): ParseFailure | null {
    const sp1 = line.indexOf(SP);
    const sp2 = sp1 === -1 ? -1 : line.indexOf(SP, sp1 + 1);
    if (sp1 === -1 || sp2 === -1 || line.indexOf(SP, sp2 + 1) !== -1) {
      return failure("bad-request-line", 400, "request line must be METHOD SP target SP version");
    }
    if (!isTokenBytes(line, 0, sp1)) return failure("bad-method", 400, "invalid method");
    if (sp2 === sp1 + 1) return failure("bad-target", 400, "empty request target");
    const version = latin1(line, sp2 + 1);
    const vm = /^HTTP\/([0-9])\.([0-9])$/.exec(version);
    if (!vm) return failure("bad-version", 400, "malformed HTTP version");
    if (vm[1] !== "1" || (vm[2] !== "0" && vm[2] !== "1")) {
      return failure("unsupported-version", 505, "HTTP version not supported");
    }
    this.#method = latin1(line, 0, sp1);
    this.#target = latin1(line, sp1 + 1, sp2);
    this.#version = vm[2] === "1" ? "1.1" : "1.0";
    return null;
  }

  #readHeaderLine(input: Uint8Array, pos: number, out: RequestEvent[]): number {
    const r = this.#lines.read(input, pos, this.#o.maxHeaderBytes - this.#headerBytes);
    switch (r.kind) {
      case "more":
        return input.length;
      case "too-long":
        return this.#fail(out, "headers-too-large", 431, "header section too large");
      case "bare-lf":
        return this.#fail(out, "bare-lf", 400, "bare LF in the header section");
      case "bare-cr":
        return this.#fail(out, "bare-cr", 400, "bare CR in the header section");
    }
    this.#headerBytes += r.size;
    if (r.line.length === 0) return this.#completeHead(out, r.next);
    const f = parseFieldLine(r.line);
    if (!f.ok) return this.#fail(out, f.code, 400, f.reason);
    if (this.#fields.length >= this.#o.maxHeaderCount) {
      return this.#fail(out, "too-many-headers", 431, "too many header fields");
    }
    const lname = f.name.toLowerCase();
    if (f.hasTab && (lname === "content-length" || lname === "transfer-encoding")) {
      this.#framingTab = true;
    }
    if (f.hasTab && lname === "host") {
      return this.#fail(out, "bad-host", 400, "tab character in Host");
    }
    this.#fields.push([f.name, f.value]);
    return r.next;
  }

  #completeHead(out: RequestEvent[], next: number): number {
    const headers = new HeaderList(this.#fields);
    this.#fields = [];
    const method = this.#method;
    const http10 = this.#version === "1.0";

    const target = parseRequestTarget(method, this.#target);
    if ("code" in target) return this.#fail(out, target.code, 400, target.reason);

    const hosts = headers.getAll("host");
    if (hosts.length > 1) return this.#fail(out, "duplicate-host", 400, "more than one Host");
    if (hosts.length === 0 && !http10) return this.#fail(out, "missing-host", 400, "missing Host");
    const host = hosts[0];
    if (host !== undefined && (host === "" || checkAuthority(host, false) !== null)) {
      return this.#fail(out, "bad-host", 400, "invalid Host");
    }

    const framing = decideFraming({
      contentLength: headers.getAll("content-length"),
      transferEncoding: headers.getAll("transfer-encoding"),
      hasTab: this.#framingTab,
      http10,
    });
    if ("code" in framing) {
      const status = framing.code === "unsupported-transfer-encoding" ? 501 : 400;
      return this.#fail(out, framing.code, status, framing.reason);
    }
    if (framing.kind === "close") {
      return this.#fail(
        out,
        "bad-transfer-encoding",
        400,
        "request body cannot be close-delimited",
      );
    }
    if (framing.kind === "length" && framing.length > this.#o.maxBodyBytes) {
      return this.#fail(out, "body-too-large", 413, "body exceeds the size limit");
    }
    if (
      method === "CONNECT" &&
      (framing.kind === "chunked" || (framing.kind === "length" && framing.length > 0))
    ) {
      return this.#fail(out, "connect-with-body", 400, "CONNECT request with a body");
    }

    const connection: string[] = [];
    for (const v of headers.getAll("connection")) {
      for (const t of splitList(v)) {
        if (!isToken(t)) return this.#fail(out, "bad-connection", 400, "invalid Connection token");
        connection.push(t.toLowerCase());
      }
    }
    let upgrade: string[] | undefined;
    if (connection.includes("upgrade")) {
      const offered = headers.getAll("upgrade").flatMap(splitList);
      if (offered.length === 0) {
        return this.#fail(out, "bad-upgrade", 400, "Connection: upgrade without Upgrade");
      }
      for (const p of offered) {
        const slash = p.indexOf("/");
        const ok =
          slash === -1 ? isToken(p) : isToken(p.slice(0, slash)) && isToken(p.slice(slash + 1));
        if (!ok) return this.#fail(out, "bad-upgrade", 400, "invalid Upgrade protocol");
      }
      upgrade = offered;
    }
    const close = connection.includes("close");
    const keepAlive = http10 ? connection.includes("keep-alive") && !close : !close;
    const expectContinue =
      !http10 &&
      headers
        .getAll("expect")
        .some((v) => splitList(v).some((e) => e.toLowerCase() === "100-continue"));

    const authority = target.authority ?? host;
    const head: RequestHead = {
      method,
      target: this.#target,
      targetForm: target.form,
      ...(target.scheme ? { scheme: target.scheme } : {}),
      ...(authority !== undefined ? { authority } : {}),
      ...(host !== undefined ? { host } : {}),
      version: this.#version,
      headers,
      framing,
      keepAlive,
      expectContinue,
      connection,
      ...(upgrade ? { upgrade } : {}),
    };
    out.push({ type: "head", head });
    this.#pauseAfter = method === "CONNECT" || upgrade !== undefined;
    this.#closeAfter = !keepAlive;
    if (framing.kind === "chunked") {
      this.#decoder = new ChunkedDecoder({
        maxChunkLineBytes: this.#o.maxChunkLineBytes,
        maxTrailerBytes: this.#o.maxHeaderBytes,
        maxTrailerCount: this.#o.maxHeaderCount,
        maxBodyBytes: this.#o.maxBodyBytes,
        errorStatus: 400,
      });
      this.#state = "chunked";
    } else if (framing.kind === "length" && framing.length > 0) {
      this.#remaining = framing.length;
      this.#state = "length";
    } else {
      this.#endMessage(out);
    }
    return next;
  }

  #endMessage(out: RequestEvent[]): void {
    out.push({ type: "end" });
    this.#decoder = null;
    this.#inMessage = false;
    this.#startBytes = 0;
    this.#state = this.#pauseAfter ? "paused" : this.#closeAfter ? "closed" : "start";
    this.#pauseAfter = false;
  }

  #fail(
    out: RequestEvent[],
    code: HttpErrorCode,
    status: RequestRejectStatus,
    reason: string,
  ): number {
    this.#state = "dead";
    this.#fields = [];
    this.#pending = [];
    out.push({ type: "error", error: failure(code, status, reason) });
    return Number.POSITIVE_INFINITY;
  }
}
