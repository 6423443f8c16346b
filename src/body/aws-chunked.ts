// The aws-chunked body framing (a request whose `x-amz-content-sha256` is a STREAMING- mode):
//   chunk      = hex-size [";chunk-signature=" 64HEX] CRLF data CRLF
//   last-chunk = "0" [";chunk-signature=" 64HEX] CRLF
//   trailers   = *( name ":" value CRLF ) ["x-amz-trailer-signature:" 64HEX CRLF] CRLF
// The proxy takes the framing off so DLP reads the payload as what it is, then puts it back on
// with the same chunk sizes and trailers, so the same Content-Length. Nothing in the framing
// that leaves is the agent's free choice: sizes must be spelled canonically, each trailing
// checksum must be the payload's (recomputed here), and signatures are the real chain
// (credentials/sigv4-chunked.ts) — the agent's are verified on the dummy chain as its chunks
// arrive, before the payload is scanned. A body with signed chunks therefore needs a signer:
// it goes only to a host an AWS credential is bound to. One chunk of a re-signed body is held
// (its signature comes before its data); its size is capped.

import { createHash, type Hash } from "node:crypto";
import zlib from "node:zlib";
import type { StreamingMode } from "../credentials/sigv4-chunked.ts";
import { EMPTY_SHA256, STREAMING_MODES } from "../credentials/sigv4-chunked.ts";
import { ProxyError } from "../http/proxy-error.ts";
import type { Verdict } from "../policy/verdict.ts";

/** Longest chunk of a body whose chunks are signed again (each is held whole once). */
export const MAX_SIGNED_CHUNK = 8 * 1024 * 1024;
const MAX_LINE = 256;
const MAX_TRAILERS = 8;

/** Malformed framing: the agent's request is bad (a ProxyError, so its reason is shown). */
const malformed = (reason: string) => new ProxyError("bad-request", reason);

interface Frame {
  readonly sizeText: string;
  readonly size: number;
  readonly signature: string | null;
  /** SHA-256 (hex) of the chunk's data as the agent sent it, once it has all arrived. */
  hash: string | null;
}

export interface AwsChunkedOptions {
  readonly mode: StreamingMode;
  /** `x-amz-decoded-content-length`: the payload's length. */
  readonly decodedLength: number;
  /** The trailer names `x-amz-trailer` declares (lower-case). */
  readonly trailers: readonly string[];
}

/** The two chains of a chunk-signed body (credentials/sigv4-chunked.ts ChunkResigner). */
export interface ChunkSigner {
  verifyChunk(dataHash: string, agentSignature: string): Verdict<null, string>;
  signChunk(dataHash: string): string;
  verifyTrailer(canonical: string, agentSignature: string): Verdict<null, string>;
  signTrailer(canonical: string): string;
  wipe(): void;
}

/** A running checksum of the payload, as a trailer spells it (base64 of the digest). */
interface Checksum {
  update(b: Uint8Array): void;
  value(): string;
}

const CRC32C_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[i] = c >>> 0;
  }
  return t;
})();

function crcOf(kind: "crc32" | "crc32c"): Checksum {
  let crc = 0;
  let c = 0xffffffff;
  return {
    update(b) {
      if (kind === "crc32") crc = zlib.crc32(b, crc);
      else for (let i = 0; i < b.length; i++) c = CRC32C_TABLE[(c ^ b[i]!) & 0xff]! ^ (c >>> 8);
    },
    value() {
      const out = Buffer.alloc(4);
      out.writeUInt32BE((kind === "crc32" ? crc : c ^ 0xffffffff) >>> 0);
      return out.toString("base64");
    },
  };
}

function hashOf(algorithm: "sha1" | "sha256"): Checksum {
  const h: Hash = createHash(algorithm);
  return {
    update: (b) => h.update(b),
    value: () => h.digest("base64"),
  };
}

/** The checksum a trailer name stands for, or null for one the proxy does not compute. */
function checksumFor(trailer: string): Checksum | null {
  switch (trailer) {
    case "x-amz-checksum-crc32":
      return crcOf("crc32");
    case "x-amz-checksum-crc32c":
      return crcOf("crc32c");
    case "x-amz-checksum-sha1":
      return hashOf("sha1");
    case "x-amz-checksum-sha256":
      return hashOf("sha256");
    default:
      return null;
  }
}

/** The trailers whose checksums the proxy computes (others are refused: they would be free). */
const CHECKED_TRAILERS = [
  "x-amz-checksum-crc32",
  "x-amz-checksum-crc32c",
  "x-amz-checksum-sha1",
  "x-amz-checksum-sha256",
];

// Sizes as the SDKs write them: lower-case hex, no leading zeros.
const SIZE_SIGNED = /^(0|[1-9a-f][0-9a-f]{0,14});chunk-signature=([0-9a-f]{64})$/;
const SIZE_UNSIGNED = /^(0|[1-9a-f][0-9a-f]{0,14})$/;
const TRAILER = /^([a-z0-9-]{1,64}):([A-Za-z0-9+/]{1,128}={0,2})$/;
const TRAILER_SIGNATURE = /^x-amz-trailer-signature:([0-9a-f]{64})$/;

/**
 * Reads the framing incrementally: payload bytes out as they come, each chunk's size,
 * signature and data hash into a queue the re-framer reads, the trailing checksums checked
 * against the payload. Throws a ProxyError (bad-request) naming what is wrong.
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
  #chunk: Hash | null = null;
  readonly #signed: boolean;
  readonly #trailer: boolean;
  readonly #sums = new Map<string, Checksum>();

  constructor(private readonly opts: AwsChunkedOptions) {
    this.#signed = STREAMING_MODES[opts.mode].signed;
    this.#trailer = STREAMING_MODES[opts.mode].trailer;
    for (const t of opts.trailers) {
      const sum = checksumFor(t);
      if (!sum)
        throw malformed(
          `x-amz-trailer ${t} is not a checksum the proxy can verify (${CHECKED_TRAILERS.join(", ")})`,
        );
      this.#sums.set(t, sum);
    }
    if (this.#trailer && this.#sums.size === 0) {
      throw malformed("a trailer mode needs x-amz-trailer to name its checksum");
    }
  }

  push(bytes: Uint8Array, onData: (b: Uint8Array) => void): void {
    let i = 0;
    while (i < bytes.length) {
      if (this.done) throw malformed("bytes after the end of the aws-chunked body");
      if (this.#state === "data") {
        const n = Math.min(this.#left, bytes.length - i);
        const piece = bytes.subarray(i, i + n);
        this.#chunk?.update(piece);
        for (const s of this.#sums.values()) s.update(piece);
        onData(piece);
        this.#left -= n;
        i += n;
        if (this.#left === 0) {
          this.#state = "data-end";
          const frame = this.frames.at(-1)!;
          if (this.#chunk) frame.hash = this.#chunk.digest("hex");
          this.#chunk = null;
        }
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
      if (!m)
        throw malformed(
          "aws-chunked chunk header is malformed (sizes in lower-case hex, no leading zeros)",
        );
      const size = Number.parseInt(m[1]!, 16);
      if (this.#signed && size > MAX_SIGNED_CHUNK) {
        throw malformed(`aws-chunked chunk larger than ${MAX_SIGNED_CHUNK} bytes`);
      }
      this.#total += size;
      if (this.#total > this.opts.decodedLength) {
        throw malformed("aws-chunked body longer than x-amz-decoded-content-length");
      }
      this.frames.push({
        sizeText: m[1]!,
        size,
        signature: m[2] ?? null,
        hash: size === 0 ? EMPTY_SHA256 : null,
      });
      if (size > 0) {
        this.#left = size;
        this.#state = "data";
        if (this.#signed) this.#chunk = createHash("sha256");
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
    if (!m || !this.#sums.has(m[1]!)) {
      throw malformed("aws-chunked trailer is malformed or not declared in x-amz-trailer");
    }
    if (this.trailers.some((t) => t.startsWith(`${m[1]}:`))) {
      throw malformed("aws-chunked trailer sent twice");
    }
    if (this.trailers.length >= MAX_TRAILERS) throw malformed("too many trailers");
    if (m[2] !== this.#sums.get(m[1]!)!.value()) {
      throw malformed(`${m[1]} does not match the payload`);
    }
    this.trailers.push(line);
  }

  #finish(): void {
    if (this.#total !== this.opts.decodedLength) {
      throw malformed("aws-chunked body shorter than x-amz-decoded-content-length");
    }
    if (this.#trailer && this.trailers.length !== this.#sums.size) {
      throw malformed("a trailer declared in x-amz-trailer is missing");
    }
    if (this.#trailer && this.#signed && this.trailerSignature === null) {
      throw malformed("the trailer signature is missing");
    }
    this.done = true;
  }
}

/** Trailers as the trailer signature signs them: each `name:value\n`. */
const canonicalTrailers = (trailers: readonly string[]) => trailers.map((t) => `${t}\n`).join("");

/** The payload of an aws-chunked body, and the means to frame it again. */
export class AwsChunkedBody {
  readonly #parser: AwsChunkedParser;
  #signer: ChunkSigner | null = null;
  /** Chunks whose agent signature was verified, and whether the trailer's was. */
  #verified = 0;
  #trailerVerified = false;
  readonly signed: boolean;

  /** Throws a ProxyError (bad-request) when the options cannot be read (a trailer's checksum). */
  constructor(
    opts: AwsChunkedOptions,
    /** Told why a body failed mid-way (malformed framing, a signature, a real value). */
    private readonly onFailed: (e: ProxyError) => void,
  ) {
    this.#parser = new AwsChunkedParser(opts);
    this.signed = STREAMING_MODES[opts.mode].signed;
  }

  #failed(c: TransformStreamDefaultController<Uint8Array>, e: ProxyError): void {
    this.#signer?.wipe();
    this.onFailed(e);
    c.error(e);
  }

  /** The agent's signatures of the chunks (and trailers) read so far, on the dummy chain. */
  #verify(): ProxyError | null {
    const signer = this.#signer;
    if (!this.signed || !signer) return null;
    const frames = this.#parser.frames;
    while (this.#verified < frames.length && frames[this.#verified]!.hash !== null) {
      const f = frames[this.#verified]!;
      const v = signer.verifyChunk(f.hash!, f.signature!);
      if (!v.ok) return new ProxyError("bad-signature", v.reason);
      this.#verified += 1;
    }
    const p = this.#parser;
    if (p.done && p.trailerSignature !== null && !this.#trailerVerified) {
      const v = signer.verifyTrailer(canonicalTrailers(p.trailers), p.trailerSignature);
      if (!v.ok) return new ProxyError("bad-signature", v.reason);
      this.#trailerVerified = true;
    }
    return null;
  }

  /** The payload: the framing read off `framed` and its signatures verified as they come. */
  decode(framed: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
    const parser = this.#parser;
    return framed.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform: (chunk, c) => {
          const out: Uint8Array[] = [];
          try {
            parser.push(chunk, (b) => out.push(b.slice()));
          } catch (e) {
            return this.#failed(c, e as ProxyError);
          }
          // With the signer known, a chunk's last bytes go on only once its signature verified
          // (before, a small body is read whole to be scanned: resignWith verifies it); the
          // re-framer signs nothing it has not seen verified.
          const bad = this.#verify();
          if (bad) return this.#failed(c, bad);
          for (const b of out) c.enqueue(b);
        },
        flush: (c) => {
          if (!parser.done) this.#failed(c, malformed("aws-chunked body ended early"));
        },
      }),
    );
  }

  /**
   * Sign the chunks again with `signer` (before the framed stream is read). What was read of
   * the body already (a small one is held whole to be scanned) is verified now: the refusal,
   * if a signature is off the agent's chain.
   */
  resignWith(signer: ChunkSigner): ProxyError | null {
    if (!this.signed) {
      signer.wipe();
      return null;
    }
    this.#signer?.wipe();
    this.#signer = signer;
    const bad = this.#verify();
    if (bad) signer.wipe();
    return bad;
  }

  /** `payload` (the scanned payload) framed again: each chunk as the agent framed it. */
  frame(payload: ReadableStream<Uint8Array>): ReadableStream<Uint8Array> {
    const parser = this.#parser;
    const self = this;
    const enc = new TextEncoder();
    let index = 0;
    let left = -1; // bytes still due in frame `index`; -1: its header not yet written
    let held: Uint8Array[] = [];
    let heldLength = 0;
    const fail = (c: TransformStreamDefaultController<Uint8Array>, e: ProxyError) =>
      self.#failed(c, e);
    // The scan passes the payload through unchanged unless it found a real value (it puts its
    // marker there): then the hash differs from the agent's, and the request is DLP's.
    const changed = () => new ProxyError("dlp-blocked", "real credential in request body");
    const mismatch = () => new ProxyError("internal", "payload does not match its framing");
    const unsigned = () => new ProxyError("internal", "a chunk-signed body without its signer");
    const header = (frame: Frame, sig: string | null) =>
      enc.encode(
        sig === null ? `${frame.sizeText}\r\n` : `${frame.sizeText};chunk-signature=${sig}\r\n`,
      );
    return payload.pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, c) {
          // The signer is given after this stream is made (the sign stage), before it is read.
          if (self.signed && !self.#signer) return fail(c, unsigned());
          let at = 0;
          while (at < chunk.length) {
            const frame = parser.frames[index];
            if (!frame || frame.size === 0) return fail(c, mismatch());
            if (left < 0) {
              left = frame.size;
              if (!self.signed) c.enqueue(header(frame, null));
            }
            const n = Math.min(left, chunk.length - at);
            const piece = chunk.subarray(at, at + n);
            at += n;
            left -= n;
            if (self.signed) {
              held.push(piece);
              heldLength += n;
            } else c.enqueue(piece);
            if (left > 0) continue;
            if (self.signed) {
              const bad = self.#verify();
              if (bad) return fail(c, bad);
              if (self.#verified <= index) return fail(c, mismatch());
              const hash = createHash("sha256");
              for (const h of held) hash.update(h);
              const digest = hash.digest("hex");
              if (digest !== frame.hash)
                return fail(c, frame.hash === null ? mismatch() : changed());
              const data = Buffer.concat(held, heldLength);
              held = [];
              heldLength = 0;
              c.enqueue(header(frame, self.#signer!.signChunk(digest)));
              c.enqueue(data);
            }
            c.enqueue(enc.encode("\r\n"));
            index += 1;
            left = -1;
          }
        },
        flush(c) {
          if (self.signed && !self.#signer) return fail(c, unsigned());
          const last = parser.frames[index];
          if (!parser.done || left >= 0 || !last || last.size !== 0) return fail(c, mismatch());
          const bad = self.#verify();
          if (bad) return fail(c, bad);
          if (
            self.signed &&
            (self.#verified <= index ||
              (parser.trailerSignature !== null && !self.#trailerVerified))
          ) {
            return fail(c, mismatch());
          }
          const signer = self.#signer;
          c.enqueue(header(last, self.signed ? signer!.signChunk(EMPTY_SHA256) : null));
          let text = "";
          for (const t of parser.trailers) text += `${t}\r\n`;
          if (parser.trailerSignature !== null) {
            text += `x-amz-trailer-signature:${signer!.signTrailer(canonicalTrailers(parser.trailers))}\r\n`;
          }
          c.enqueue(enc.encode(`${text}\r\n`));
          signer?.wipe();
        },
      }),
    );
  }
}
