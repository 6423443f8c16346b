// Collects one CRLF-terminated line from bytes that may arrive split at any offset, enforcing
// a byte cap as it goes. It must never accept a bare LF as a line end or let a CR appear
// anywhere but right before the LF: lenient line endings are a classic desync source.

import { CR, LF } from "./syntax.ts";

export type LineResult =
  /** `line` excludes the CRLF; it is only valid until the next call (the buffer is reused). */
  | {
      readonly kind: "line";
      readonly line: Uint8Array;
      readonly next: number;
      readonly size: number;
    }
  | { readonly kind: "more" }
  | { readonly kind: "too-long" }
  | { readonly kind: "bare-lf" }
  | { readonly kind: "bare-cr" };

const MORE: LineResult = { kind: "more" };
const TOO_LONG: LineResult = { kind: "too-long" };
const BARE_LF: LineResult = { kind: "bare-lf" };
const BARE_CR: LineResult = { kind: "bare-cr" };

export class LineReader {
  #buf = new Uint8Array(128);
  #len = 0;

  /** Bytes of an unfinished line held so far. */
  get pending(): number {
    return this.#len;
  }

  reset(): void {
    this.#len = 0;
  }

  /**
   * Read from `input` at `pos`. `cap` bounds the whole line including its CRLF. On "more" every
   * byte from `pos` has been consumed into the internal buffer.
   */
  read(input: Uint8Array, pos: number, cap: number): LineResult {
    const lf = input.indexOf(LF, pos);
    if (lf === -1) {
      const n = input.length - pos;
      if (this.#len + n > cap) return TOO_LONG;
      this.#append(input, pos, input.length);
      // A CR that is not the last byte so far can never become part of a CRLF.
      const crAt = this.#buf.subarray(0, this.#len).indexOf(CR);
      if (crAt !== -1 && crAt !== this.#len - 1) return BARE_CR;
      return MORE;
    }
    const size = this.#len + (lf + 1 - pos);
    if (size > cap) return TOO_LONG;
    let line: Uint8Array;
    if (this.#len === 0) {
      line = input.subarray(pos, lf);
    } else {
      this.#append(input, pos, lf);
      line = this.#buf.subarray(0, this.#len);
    }
    this.#len = 0;
    if (line.length === 0 || line[line.length - 1] !== CR) return BARE_LF;
    const content = line.subarray(0, line.length - 1);
    if (content.indexOf(CR) !== -1) return BARE_CR;
    return { kind: "line", line: content, next: lf + 1, size };
  }

  #append(src: Uint8Array, start: number, end: number): void {
    const need = this.#len + (end - start);
    if (need > this.#buf.length) {
      let cap = this.#buf.length * 2;
      while (cap < need) cap *= 2;
      const next = new Uint8Array(cap);
      next.set(this.#buf.subarray(0, this.#len));
      this.#buf = next;
    }
    this.#buf.set(src.subarray(start, end), this.#len);
    this.#len = need;
  }
}
