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
    const stop = lf === -1 ? input.length : lf;
    // The verdict must not depend on how the bytes were split, so problems are reported in
    // one order: a bare CR (a CR followed by anything but LF) within the first `cap` bytes of
    // the line, then the cap, then a bare LF.
    if (this.#bareCrAhead(input, pos, stop, cap)) return BARE_CR;
    if (lf === -1) {
      if (this.#len + (input.length - pos) > cap) return TOO_LONG;
      this.#append(input, pos, input.length);
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
    return { kind: "line", line: line.subarray(0, line.length - 1), next: lf + 1, size };
  }

  /**
   * Whether a CR at line position < cap is followed by a byte other than LF, looking at the
   * buffered bytes (whose last byte may be a CR) and input[pos, stop) (stop = the LF or end).
   */
  #bareCrAhead(input: Uint8Array, pos: number, stop: number, cap: number): boolean {
    if (
      this.#len > 0 &&
      this.#buf[this.#len - 1] === CR &&
      pos < input.length &&
      input[pos] !== LF
    ) {
      return true;
    }
    let i = input.indexOf(CR, pos);
    while (i !== -1 && i < stop) {
      if (this.#len + (i - pos) >= cap) return false;
      if (i + 1 < input.length && input[i + 1] !== LF) return true;
      i = input.indexOf(CR, i + 1);
    }
    return false;
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
