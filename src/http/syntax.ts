// Byte-level grammar of RFC 9110/9112 shared by the request and response parsers and the
// serializer: token characters, field values, list splitting. Pure tables and functions; it
// must never be lenient "for compatibility" — a byte one parser accepts and another rejects
// is how request smuggling starts.

/** tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA (RFC 9110 5.6.2). */
export const TCHAR: Uint8Array = (() => {
  const t = new Uint8Array(256);
  for (let c = 0x30; c <= 0x39; c++) t[c] = 1;
  for (let c = 0x41; c <= 0x5a; c++) t[c] = 1;
  for (let c = 0x61; c <= 0x7a; c++) t[c] = 1;
  for (const ch of "!#$%&'*+-.^_`|~") t[ch.charCodeAt(0)] = 1;
  return t;
})();

/**
 * Bytes allowed inside a field value: field-vchar (VCHAR / obs-text) plus SP and HTAB
 * (RFC 9110 5.5). Everything else — NUL, CR, LF, other controls, DEL — is rejected, never
 * replaced with SP (the RFC allows either; rejecting leaves nothing to disagree about).
 */
export const FIELD_VALUE_BYTE: Uint8Array = (() => {
  const t = new Uint8Array(256);
  t[0x09] = 1;
  for (let c = 0x20; c <= 0x7e; c++) t[c] = 1;
  for (let c = 0x80; c <= 0xff; c++) t[c] = 1;
  return t;
})();

export const SP = 0x20;
export const HTAB = 0x09;
export const CR = 0x0d;
export const LF = 0x0a;
export const COLON = 0x3a;

export function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff || TCHAR[c] !== 1) return false;
  }
  return true;
}

export function isTokenBytes(b: Uint8Array, start: number, end: number): boolean {
  if (end <= start) return false;
  for (let i = start; i < end; i++) if (TCHAR[b[i]!] !== 1) return false;
  return true;
}

/** A field value the serializer may write: field-content bytes only, no leading/trailing OWS. */
export function isSafeFieldValue(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff || FIELD_VALUE_BYTE[c] !== 1) return false;
  }
  if (s.length > 0) {
    const first = s.charCodeAt(0);
    const last = s.charCodeAt(s.length - 1);
    if (first === SP || first === HTAB || last === SP || last === HTAB) return false;
  }
  return true;
}

/**
 * Bytes → string one char per byte (latin1). Field values may hold obs-text (0x80–0xFF);
 * latin1 round-trips every byte exactly, so a value can be re-serialized byte-identical and
 * the swapper can search it for dummies without a UTF-8 decoder changing anything.
 */
export function latin1(b: Uint8Array, start = 0, end = b.length): string {
  // Node's "latin1" is the byte-exact ISO-8859-1 mapping (unlike TextDecoder's windows-1252).
  return Buffer.from(b.buffer, b.byteOffset + start, end - start).toString("latin1");
}

/** String (latin1, one char per byte) → bytes. Chars above 0xFF are a caller bug. */
export function latin1Bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new RangeError(`character at index ${i} is not a single byte`);
    out[i] = c;
  }
  return out;
}

/**
 * Split a comma-separated list (RFC 9110 5.6.1) into trimmed elements. Empty elements are
 * dropped, as the RFC requires recipients to do; callers validate each element.
 */
export function splitList(value: string): string[] {
  const out: string[] = [];
  for (const part of value.split(",")) {
    const t = trimOws(part);
    if (t.length > 0) out.push(t);
  }
  return out;
}

export function trimOws(s: string): string {
  let a = 0;
  let b = s.length;
  while (a < b && (s.charCodeAt(a) === SP || s.charCodeAt(a) === HTAB)) a++;
  while (b > a && (s.charCodeAt(b - 1) === SP || s.charCodeAt(b - 1) === HTAB)) b--;
  return s.slice(a, b);
}

const HEX = new Int8Array(256).fill(-1);
for (let c = 0; c < 10; c++) HEX[0x30 + c] = c;
for (let c = 0; c < 6; c++) {
  HEX[0x41 + c] = 10 + c;
  HEX[0x61 + c] = 10 + c;
}
export function hexValue(byte: number): number {
  return HEX[byte]!;
}
