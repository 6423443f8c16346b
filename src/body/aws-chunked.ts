// The aws-chunked body framing (a request whose `x-amz-content-sha256` is a STREAMING- mode):
//   chunk      = hex-size [";chunk-signature=" 64HEX] CRLF data CRLF
//   last-chunk = "0" [";chunk-signature=" 64HEX] CRLF
//   trailers   = *( name ":" value CRLF ) ["x-amz-trailer-signature:" 64HEX CRLF] CRLF
// The proxy takes the framing off so DLP reads the payload as what it is, then puts it back on
// as the agent sent it — same chunk sizes, same trailers, so the same Content-Length — with
// the agent's chunk signatures, or with the real chain when the request is signed again
// (credentials/sigv4-chunked.ts). Nothing is held but one chunk of a re-signed body (its
// signature comes before its data); its size is capped.

import { createHash } from "node:crypto";
import type { StreamingMode } from "../credentials/sigv4-chunked.ts";
import { STREAMING_MODES } from "../credentials/sigv4-chunked.ts";
import { ProxyError } from "../http/proxy-error.ts";
import type { Verdict } from "../policy/verdict.ts";

/** Longest chunk of a body whose chunks are signed again (each is held whole once). */
export const MAX_SIGNED_CHUNK = 8 * 1024 * 1024;
const MAX_LINE = 256;
const MAX_TRAILERS = 8;

/** Malformed framing: the agent's request is bad (a ProxyError, so its reason is shown). */
const malformed = (reason: string) => new ProxyError("bad-request", reason);

interface Frame {
  /** The size as the agent spelled it (re-sent as is). */
  readonly sizeText: string;
  readonly size: number;
  readonly signature: string | null;
}

export interface AwsChunkedOptions {
  readonly mode: StreamingMode;
  /** `x-amz-decoded-content-length`: the payload's length. */
  readonly decodedLength: number;
  /** The trailer names `x-amz-trailer` declares (lower-case). */
  readonly trailers: readonly string[];
}

/** How a chunk's signature is replaced: the real chain, or a refusal. */
export interface ChunkSigner {
  chunk(dataHash: string, agentSignature: string): Verdict<string, string>;
  trailer(canonical: string, agentSignature: string): Verdict<string, string>;
  wipe(): void;
}

const SIZE_SIGNED = /^([0-9a-fA-F]{1,15});chunk-signature=([0-9a-f]{64})$/;
const SIZE_UNSIGNED = /^([0-9a-fA-F]{1,15})$/;
const TRAILER = /^([a-z0-9-]{1,64}):([A-Za-z0-9+/]{1,128}={0,2})$/;
const TRAILER_SIGNATURE = /^x-amz-trailer-signature:([0-9a-f]{64})$/;

/**
 * Reads the framing incrementally: payload bytes out as they come, each chunk's size and
 * signature into a queue the reframer reads. Throws a ProxyError (bad-request) naming what is wrong.
 */
export class AwsChunkedParser {
  readonly frames: Frame[] = [];
  /** The trailers as sent (`name:value`), and the trailer signature, once the body ended. */
  readonly trailers: string[] = [];
  trailerSignature: string | null = null;
  done = false;
  #state: "size" | "data" | "data-end" | "trailer" = "size";
  #line: number[] = [];
  #left = 0;
  #total = 0;
  readonly #signed: boolean;
  readonly #trailer: boolean;

  constructor(private readonly opts: AwsChunkedOptions) {
    this.#signed = STREAMING_MODES[opts.mode].signed;
    this.#trailer = STREAMING_MODES[opts.mode].trailer;
  }

  push(bytes: Uint8Array, onData: (b: Uint8Array) => void): void {
    let i = 0;
    while (i < bytes.length) {
      if (this.done) throw malformed("bytes after the end of the aws-chunked body");
      if (this.#state === "data") {
        const n = Math.min(this.#left, bytes.length - i);
        onData(bytes.subarray(i, i + n));
        this.#left -= n;
        i += n;
        if (this.#left === 0) this.#state = "data-end";
        continue;
      }
      const b = bytes[i++]!;
      if (this.#line.length > MAX_LINE) throw malformed("aws-chunked line too long");
      this.#line.push(b);
      const n = this.#line.length;
      if (n < 2 || this.#line[n - 2] !== 13 || b !== 10) continue;
      const line = String.fromCharCode(...this.#line.slice(0, n - 2));
      this.#line = [];
      this.#onLine(line);
    }
  }

  #onLine(line: string): void {
    if (this.#state === "data-end") {
      if (line !== "") throw malformed("aws-chunked data longer than its chunk size");
      this.#state = "size";
      return;
    }
    if (this.#state === "size") {
      const m = (this.#signed ? SIZE_SIGNED : SIZE_UNSIGNED).exec(line);
      if (!m) throw malformed("aws-chunked chunk header is malformed");
      const size = Number.parseInt(m[1]!, 16);
      if (this.#signed && size > MAX_SIGNED_CHUNK) {
        throw malformed(`aws-chunked chunk larger than ${MAX_SIGNED_CHUNK} bytes`);
      }
      this.#total += size;
      if (this.#total > this.opts.decodedLength) {
        throw malformed("aws-chunked body longer than x-amz-decoded-content-length");
      }
      this.frames.push({ sizeText: m[1]!, size, signature: m[2] ?? null });
      if (size > 0) {
        this.#left = size;
        this.#state = "data";
      } else this.#state = "trailer";
      return;
    }
    // Trailers, then an empty line ends the body.
    if (line === "") {
      this.#finish();
      return;
    }
    if (!this.#trailer) throw malformed("aws-chunked trailers in a mode without them");
    if (this.trailerSignature !== null) {
      throw malformed("aws-chunked trailer after the trailer signature");
    }
    const sig = TRAILER_SIGNATURE.exec(line);
    if (sig) {
      if (!this.#signed) throw malformed("a trailer signature in an unsigned body");
      this.trailerSignature = sig[1]!;
      return;
    }
    const m = TRAILER.exec(line);
    if (!m || !this.opts.trailers.includes(m[1]!)) {
      throw malformed("aws-chunked trailer is malformed or not declared in x-amz-trailer");
    }
    if (this.trailers.some((t) => t.startsWith(`${m[1]}:`))) {
      throw malformed("aws-chunked trailer sent twice");
    }
    if (this.trailers.length >= MAX_TRAILERS) throw malformed("too many trailers");
    this.trailers.push(line);
  }

  #finish(): void {
    if (this.#total !== this.opts.decodedLength) {
      throw malformed("aws-chunked body shorter than x-amz-decoded-content-length");
    }
    if (this.#trailer && this.trailers.length !== this.opts.trailers.length) {
      throw malformed("a trailer declared in x-amz-trailer is missing");
    }
    if (this.#trailer && this.#signed && this.trailerSignature === null) {
      throw malformed("the trailer signature is missing");
    }
    this.done = true;
  }
}

/** The payload of an aws-chunked body, and the means to frame it again. */
export class AwsChunkedBody {
  readonly #parser: AwsChunkedParser;
  #signer: ChunkSigner | null = null;
  readonly #signed: boolean;

  constructor(
    opts: AwsChunkedOptions,
    /** Told why a body failed mid-way (malformed framing, a signature that does not verify). */
    private readonly onFailed: (e: ProxyError) => void,
  ) {
    this.#parser = new AwsChunkedParser(opts);
    this.#signed = STREAMING_MODES[opts.mode].signed;
  }

  /** The payload: the framing read off `framed` (an error names what was malformed). */
  decode(framed: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
    const parser = this.#parser;
    return framed.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform: (chunk, c) => {
          try {
            parser.push(chunk, (b) => c.enqueue(b.slice()));
          } catch (e) {
            this.#failed(c, e as ProxyError);
          }
        },
        flush: (c) => {
          if (!parser.done) this.#failed(c, malformed("aws-chunked body ended early"));
        },
      }),
    );
  }

  #failed(c: TransformStreamDefaultController<Uint8Array>, e: ProxyError): void {
    this.#signer?.wipe();
    this.onFailed(e);
    c.error(e);
  }

  /** Sign the chunks again with `signer` (before the framed stream is read). */
  resignWith(signer: ChunkSigner): void {
    if (!this.#signed) {
      signer.wipe();
      return;
    }
    this.#signer?.wipe();
    this.#signer = signer;
  }

  /** `payload` (the scanned payload) framed again; each chunk as the agent framed it. */
  frame(payload: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
    const parser = this.#parser;
    const self = this;
    const enc = new TextEncoder();
    let index = 0;
    let left = -1; // bytes still due in frame `index`; -1: its header not yet written
    let held: Uint8Array[] = [];
    let heldLength = 0;
    const fail = (c: TransformStreamDefaultController<Uint8Array>, reason: string) =>
      self.#failed(c, new ProxyError("bad-signature", reason));
    // The scan passes the payload through unchanged; anything else is the proxy's own fault.
    const mismatch = (c: TransformStreamDefaultController<Uint8Array>) =>
      self.#failed(c, new ProxyError("internal", "payload does not match its framing"));
    const signed = (
      c: TransformStreamDefaultController<Uint8Array>,
      frame: Frame,
      hash: string,
    ): string | null => {
      if (!self.#signer) return frame.signature;
      const v = self.#signer.chunk(hash, frame.signature!);
      if (!v.ok) {
        fail(c, v.reason);
        return null;
      }
      return v.value;
    };
    const header = (frame: Frame, sig: string | null) =>
      enc.encode(
        sig === null ? `${frame.sizeText}\r\n` : `${frame.sizeText};chunk-signature=${sig}\r\n`,
      );
    return payload.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, c) {
          let at = 0;
          while (at < chunk.length) {
            const frame = parser.frames[index];
            if (!frame || frame.size === 0) return mismatch(c);
            if (left < 0) {
              left = frame.size;
              if (!self.#signer) c.enqueue(header(frame, frame.signature));
            }
            const n = Math.min(left, chunk.length - at);
            const piece = chunk.subarray(at, at + n);
            at += n;
            left -= n;
            if (self.#signer) {
              held.push(piece);
              heldLength += n;
            } else c.enqueue(piece);
            if (left > 0) continue;
            if (self.#signer) {
              const hash = createHash("sha256");
              for (const h of held) hash.update(h);
              const sig = signed(c, frame, hash.digest("hex"));
              if (sig === null) return;
              const data = new Uint8Array(heldLength);
              let o = 0;
              for (const h of held) {
                data.set(h, o);
                o += h.length;
              }
              held = [];
              heldLength = 0;
              c.enqueue(header(frame, sig));
              c.enqueue(data);
            }
            c.enqueue(enc.encode("\r\n"));
            index += 1;
            left = -1;
          }
        },
        flush(c) {
          const last = parser.frames[index];
          if (!parser.done || left >= 0 || !last || last.size !== 0) return mismatch(c);
          const sig = self.#signed ? signed(c, last, createHash("sha256").digest("hex")) : null;
          if (self.#signed && sig === null) return;
          c.enqueue(header(last, sig));
          let text = "";
          for (const t of parser.trailers) text += `${t}\r\n`;
          if (parser.trailerSignature !== null) {
            let ts = parser.trailerSignature;
            if (self.#signer) {
              const canonical = parser.trailers.map((t) => `${t}\n`).join("");
              const v = self.#signer.trailer(canonical, ts);
              if (!v.ok) return fail(c, v.reason);
              ts = v.value;
            }
            text += `x-amz-trailer-signature:${ts}\r\n`;
          }
          c.enqueue(enc.encode(`${text}\r\n`));
          self.#signer?.wipe();
        },
      }),
    );
  }
}
