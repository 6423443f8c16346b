// A credential value (dummy or real) held as bytes that no formatter can reveal: toString,
// template strings, JSON.stringify, util.inspect / console.log and Bun.inspect all show
// `[secret N bytes]`. The bytes are reached only through the explicitly named `reveal*`
// methods, so every place that handles a secret value is greppable.
//
// It must never expose its bytes through enumeration or a default formatter, and it zeroes
// them on `dispose()` (strings returned by revealText cannot be zeroed: a GC runtime limit).

import { inspect } from "node:util";

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

export class SecretValue {
  readonly #bytes: Uint8Array;
  #disposed = false;

  private constructor(bytes: Uint8Array) {
    this.#bytes = bytes;
  }

  static fromText(text: string): SecretValue {
    return new SecretValue(encoder.encode(text));
  }

  /** Takes ownership of a copy; the caller may zero its own buffer afterwards. */
  static fromBytes(bytes: Uint8Array): SecretValue {
    return new SecretValue(new Uint8Array(bytes));
  }

  /** Length in bytes (safe to log). */
  get length(): number {
    return this.#bytes.length;
  }

  /** A copy of the bytes; the caller owns it and should `fill(0)` it when done. */
  revealBytes(): Uint8Array {
    this.#assertLive();
    return new Uint8Array(this.#bytes);
  }

  /** The value as text (UTF-8). Strings cannot be zeroed: use only where a string is needed. */
  revealText(): string {
    this.#assertLive();
    return decoder.decode(this.#bytes);
  }

  /** A value of its own with the same bytes (disposing one leaves the other whole). */
  copy(): SecretValue {
    this.#assertLive();
    return new SecretValue(new Uint8Array(this.#bytes));
  }

  /** Constant-time-ish equality without revealing either value. */
  equals(other: SecretValue): boolean {
    const a = this.#bytes;
    const b = other.#bytes;
    if (a.length !== b.length) return false;
    let diff = 0;
    for (let i = 0; i < a.length; i++) diff |= a[i]! ^ b[i]!;
    return diff === 0;
  }

  /** True when `other`'s bytes occur inside this value (for configuration conflicts). */
  contains(other: SecretValue): boolean {
    return Buffer.from(this.#bytes.buffer, this.#bytes.byteOffset, this.#bytes.length).includes(
      Buffer.from(other.#bytes.buffer, other.#bytes.byteOffset, other.#bytes.length),
    );
  }

  /** Zero the bytes; the value is unusable afterwards. */
  dispose(): void {
    this.#bytes.fill(0);
    this.#disposed = true;
  }

  get disposed(): boolean {
    return this.#disposed;
  }

  toString(): string {
    return `[secret ${this.#bytes.length} bytes]`;
  }

  toJSON(): string {
    return this.toString();
  }

  [Symbol.toPrimitive](): string {
    return this.toString();
  }

  [inspect.custom](): string {
    return this.toString();
  }

  #assertLive(): void {
    if (this.#disposed) throw new Error("secret value was disposed");
  }
}
