// The decoded view a redaction set is also matched on (issue 15, item 4). Real servers escape
// some characters of a string and not others (.NET writes `+` as `\u002B`, Go's html/template
// `&#43;`, PHP `&lowbar;`) and wrap base64 in lines (LF, CRLF, JSON `\n`), so the spellings of a
// value are 2^n: no pattern list can hold them. Instead the input is decoded once, left to
// right, into a view — JSON escapes and HTML character references replaced by the bytes they
// stand for, line breaks (raw or as JSON escapes) dropped — the view is matched, and each match
// is mapped back to the raw bytes that produced it, which are replaced. This file is the
// specification: the WebAssembly engine (wasm/assembly/view.ts) decodes exactly the same way,
// and the shared suite checks both against the reference built from these functions.
//
// Tokens, read left to right (the first rule that applies):
//   CR, LF, \n, \r (line breaks), with     dropped, unless two more line breaks follow it
//   up to 16 spaces or tabs after them   (then it stands for itself: CR or LF), so one view
//   (indentation, as in YAML)            byte never stands for more than a few raw bytes
//   \"  \\  \/  \b  \f  \t               the character
//   \uXXXX (either hex case)             the code point in UTF-8; a surrogate pair when both
//                                        halves are there, a lone surrogate is not decoded
//   \xHH (JavaScript)                    the code point in UTF-8
//   &#DIGITS;  &#xHEX; &#XHEX;           1–10 digits, a Unicode scalar value other than 0;
//                                        the `;` may be missing (browsers decode `&#43` too)
//   &NAME;                               an HTML5 named reference (case-sensitive, with `;`)
//   %HH (either hex case)                the byte (percent-encoding of any subset)
//   any other byte                       itself
// A token that stands for `&`, `\` or `%` is read once more with the bytes after it, so one
// level of nesting decodes too (`\u0026#43;` is `+`, `&amp;lowbar;` is `_`, `%5Cu002B` is `+`).
// Reading on is ambiguous: the bytes after a `%25` or `&#x` may be the value itself
// (`100%25ab9Z%2B…` is Python's quote of "100%" and a value starting "ab"). So there are two
// views, each matched: the nested one above, and a flat one — no nesting, references only with
// their `;` — in which a token never reaches past what its own syntax closes.
// A token is never longer than MAX_VIEW_TOKEN bytes, so a stream decides a token once it has
// that many bytes after its start (or the input ended): decoding is the same for any chunking.

import { characterEntities } from "character-entities";
import type { PatternSpec } from "./types.ts";

/** The longest token: a nested one (`&#x0000000026;` then `&` + a 32-byte name + `;`). */
export const MAX_VIEW_TOKEN = 64;
const MAX_INDENT = 16;
/** Raw bytes behind one view byte at most: its token and two dropped line breaks before it. */
export const MAX_RAW_PER_VIEW_BYTE = MAX_VIEW_TOKEN + 2 * (2 + MAX_INDENT);
const MAX_NAME = 32;
const MAX_DIGITS = 10;
const PERCENT = 0x25;

const BACKSLASH = 0x5c;
const AMP = 0x26;
const CR = 0x0d;
const LF = 0x0a;

const utf8 = new TextEncoder();

/** Every HTML5 named reference (without its `;`) → its UTF-8 bytes. */
export const NAMED_REFERENCES: ReadonlyMap<string, Uint8Array> = new Map(
  Object.entries(characterEntities as Record<string, string>)
    .filter(([name]) => name.length <= MAX_NAME)
    .map(([name, value]) => [name, utf8.encode(value)]),
);

/**
 * The table the WebAssembly engine loads: per reference a length byte, the name, a length
 * byte, the value. Not secret.
 */
export function packNamedReferences(): Uint8Array {
  const parts: number[] = [];
  for (const [name, value] of NAMED_REFERENCES) {
    parts.push(name.length, ...Buffer.from(name, "latin1"), value.length, ...value);
  }
  return Uint8Array.from(parts);
}

/** The result of decoding: the view, and where each non-literal token came from. */
export interface ViewDecoding {
  readonly view: Uint8Array;
  /**
   * One entry per token that is not a byte copied as itself: view start, raw start, raw end,
   * view length (0 for a dropped line break), in that order, four numbers per entry.
   */
  readonly tokens: Int32Array;
  readonly tokenCount: number;
  /** Raw bytes decoded: all of them when `final`, else up to an undecided token's start. */
  readonly consumed: number;
}

const isHex = (c: number) =>
  (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= 0x66);
const hexValue = (c: number) => (c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57);
const isAlpha = (c: number) => (c >= 0x41 && c <= 0x5a) || (c >= 0x61 && c <= 0x7a);
const isDigit = (c: number) => c >= 0x30 && c <= 0x39;

function utf8Bytes(cp: number): number[] {
  if (cp < 0x80) return [cp];
  if (cp < 0x800) return [0xc0 | (cp >> 6), 0x80 | (cp & 0x3f)];
  if (cp < 0x10000) return [0xe0 | (cp >> 12), 0x80 | ((cp >> 6) & 0x3f), 0x80 | (cp & 0x3f)];
  return [
    0xf0 | (cp >> 18),
    0x80 | ((cp >> 12) & 0x3f),
    0x80 | ((cp >> 6) & 0x3f),
    0x80 | (cp & 0x3f),
  ];
}

/** `n` hex digits at `at` (inside `end`) as a number, or -1. */
function hexN(b: Uint8Array, at: number, end: number, n: number): number {
  if (at + n > end) return -1;
  let v = 0;
  for (let k = 0; k < n; k++) {
    const c = b[at + k]!;
    if (!isHex(c)) return -1;
    v = (v << 4) | hexValue(c);
  }
  return v;
}

/** A token at `i`: its raw length and the bytes it stands for; null = the byte is itself. */
type Token = { len: number; bytes: readonly number[] } | null;

function backslashToken(b: Uint8Array, i: number, end: number): Token {
  if (i + 1 >= end) return null;
  const d = b[i + 1]!;
  switch (d) {
    case 0x22: // "
    case 0x5c: // \
    case 0x2f: // /
      return { len: 2, bytes: [d] };
    case 0x62: // b
      return { len: 2, bytes: [0x08] };
    case 0x66: // f
      return { len: 2, bytes: [0x0c] };
    case 0x74: // t
      return { len: 2, bytes: [0x09] };
    case 0x6e: // n
      return { len: 2, bytes: [LF] };
    case 0x72: // r
      return { len: 2, bytes: [CR] };
    case 0x78: {
      // x
      const x = hexN(b, i + 2, end, 2);
      return x < 0 ? null : { len: 4, bytes: utf8Bytes(x) };
    }
    case 0x75: {
      // u
      const u = hexN(b, i + 2, end, 4);
      if (u < 0) return null;
      if (u >= 0xdc00 && u < 0xe000) return null;
      if (u < 0xd800) return { len: 6, bytes: utf8Bytes(u) };
      if (i + 12 > end || b[i + 6] !== BACKSLASH || b[i + 7] !== 0x75) return null;
      const lo = hexN(b, i + 8, end, 4);
      if (lo < 0xdc00 || lo >= 0xe000) return null;
      return { len: 12, bytes: utf8Bytes(0x10000 + ((u - 0xd800) << 10) + (lo - 0xdc00)) };
    }
    default:
      return null;
  }
}

function ampersandToken(b: Uint8Array, i: number, end: number, flat = false): Token {
  let j = i + 1;
  if (j < end && b[j] === 0x23) {
    // &#
    j++;
    const hex = j < end && (b[j] === 0x78 || b[j] === 0x58);
    if (hex) j++;
    const from = j;
    let cp = 0;
    while (j < end && j - from < MAX_DIGITS && (hex ? isHex(b[j]!) : isDigit(b[j]!))) {
      cp = cp * (hex ? 16 : 10) + (hex ? hexValue(b[j]!) : b[j]! - 0x30);
      j++;
    }
    if (j === from) return null;
    // Ended by `;` (taken), or by any byte that is not another digit (left).
    const semi = j < end && b[j] === 0x3b;
    if (!semi && (flat || (j < end && (hex ? isHex(b[j]!) : isDigit(b[j]!))))) return null;
    if (cp === 0 || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000)) return null;
    return { len: j + (semi ? 1 : 0) - i, bytes: utf8Bytes(cp) };
  }
  if (j >= end || !isAlpha(b[j]!)) return null;
  const from = j;
  while (j < end && j - from < MAX_NAME && (isAlpha(b[j]!) || isDigit(b[j]!))) j++;
  if (j >= end || b[j] !== 0x3b) return null;
  const value = NAMED_REFERENCES.get(String.fromCharCode(...b.subarray(from, j)));
  return value ? { len: j + 1 - i, bytes: [...value] } : null;
}

const NO_TOKENS = new Int32Array(0);
const isTrigger = (c: number) =>
  c === BACKSLASH || c === AMP || c === CR || c === LF || c === PERCENT;

/** The raw length of a line break at `at` (CR, LF, `\n`, `\r`), without indentation, or 0. */
function breakAt(b: Uint8Array, at: number, end: number): number {
  if (at >= end) return 0;
  const c = b[at]!;
  if (c === CR || c === LF) return 1;
  if (c === BACKSLASH && at + 1 < end && (b[at + 1] === 0x6e || b[at + 1] === 0x72)) return 2;
  return 0;
}

/** The raw length of a line break at `at` with the indentation after it, or 0. */
function lineBreakAt(b: Uint8Array, at: number, end: number): number {
  const n = breakAt(b, at, end);
  if (n === 0) return 0;
  let j = at + n;
  while (j < end && j - at - n < MAX_INDENT && (b[j] === 0x20 || b[j] === 0x09)) j++;
  return j - at;
}

function percentToken(b: Uint8Array, i: number, end: number): Token {
  const x = hexN(b, i + 1, end, 2);
  return x < 0 ? null : { len: 3, bytes: [x] };
}

function tokenAt(b: Uint8Array, i: number, end: number, flat = false): Token {
  const c = b[i]!;
  return c === BACKSLASH
    ? backslashToken(b, i, end)
    : c === AMP
      ? ampersandToken(b, i, end, flat)
      : percentToken(b, i, end);
}

/**
 * The token at `i`, read once more when it stands for `&`, `\` or `%` and that character with
 * the bytes after it makes a token (one level of nesting, never longer than MAX_VIEW_TOKEN).
 */
function nestedTokenAt(b: Uint8Array, i: number, end: number): Token {
  const t = tokenAt(b, i, end);
  if (t === null || t.bytes.length !== 1 || !isTrigger(t.bytes[0]!)) return t;
  const c = t.bytes[0]!;
  if (c === CR || c === LF) return t;
  const stop = Math.min(end, i + MAX_VIEW_TOKEN);
  const again = Uint8Array.of(c, ...b.subarray(i + t.len, stop));
  const inner = tokenAt(again, 0, again.length);
  if (inner === null || t.len + inner.len - 1 > MAX_VIEW_TOKEN) return t;
  return { len: t.len + inner.len - 1, bytes: inner.bytes };
}

/**
 * Decode `input` into its view. When not `final`, decoding stops at a `\`, `&`, CR or LF with
 * fewer than MAX_VIEW_TOKEN bytes after it (the token, or the line breaks after it, might
 * still grow): `consumed` says where.
 */
export function decodeView(input: Uint8Array, final: boolean, flat = false): ViewDecoding {
  const end = input.length;
  if (!input.some(isTrigger))
    return { view: input, tokens: NO_TOKENS, tokenCount: 0, consumed: end };
  const view: number[] = [];
  const tokens: number[] = [];
  let i = 0;
  while (i < end) {
    const c = input[i]!;
    if (!isTrigger(c)) {
      view.push(c);
      i++;
      continue;
    }
    if (!final && i + MAX_VIEW_TOKEN > end) break;
    const br = lineBreakAt(input, i, end);
    if (br > 0) {
      const next = lineBreakAt(input, i + br, end);
      const kept = next > 0 && lineBreakAt(input, i + br + next, end) > 0;
      if (!kept) {
        tokens.push(view.length, i, i + br, 0);
        i += br;
        continue;
      }
      if (breakAt(input, i, end) === 1) {
        view.push(c);
        i++;
        continue;
      }
    }
    const t = flat ? tokenAt(input, i, end, true) : nestedTokenAt(input, i, end);
    if (t === null) {
      view.push(c);
      i++;
      continue;
    }
    tokens.push(view.length, i, i + t.len, t.bytes.length);
    for (const x of t.bytes) view.push(x);
    i += t.len;
  }
  return {
    view: Uint8Array.from(view),
    tokens: Int32Array.from(tokens),
    tokenCount: tokens.length / 4,
    consumed: i,
  };
}

/** Index of the last token whose view start is ≤ v, or -1. */
function lastTokenAt(d: ViewDecoding, v: number): number {
  let lo = 0;
  let hi = d.tokenCount - 1;
  let found = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (d.tokens[mid * 4]! <= v) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

/** The raw offset where the token producing view byte `v` starts (`v` = view length: the end). */
export function rawStartOf(d: ViewDecoding, v: number): number {
  if (v >= d.view.length) return d.consumed;
  const k = lastTokenAt(d, v);
  if (k < 0) return v;
  const t = d.tokens;
  const vs = t[k * 4]!;
  const vl = t[k * 4 + 3]!;
  return v < vs + vl ? t[k * 4 + 1]! : t[k * 4 + 2]! + (v - vs - vl);
}

/** The raw offset just past the token producing view byte `v`. */
export function rawEndOf(d: ViewDecoding, v: number): number {
  const k = lastTokenAt(d, v);
  if (k >= 0) {
    const t = d.tokens;
    const vs = t[k * 4]!;
    if (v < vs + t[k * 4 + 3]!) return t[k * 4 + 2]!;
  }
  return rawStartOf(d, v) + 1;
}

/**
 * The patterns a view is matched with, by the index of the pattern they come from: each of
 * the first `count` patterns as written, and as it decodes (a value holding `&amp;` or `\n`
 * is decoded in the view like its surroundings); the first of equal patterns wins.
 */
export function viewPatterns(
  patterns: readonly Uint8Array[],
  count: number = patterns.length,
): { pattern: Uint8Array; source: number }[] {
  const out: { pattern: Uint8Array; source: number }[] = [];
  const seen = new Set<string>();
  const add = (pattern: Uint8Array, source: number) => {
    const key = Buffer.from(pattern.buffer, pattern.byteOffset, pattern.length).toString("latin1");
    if (seen.has(key)) return;
    seen.add(key);
    out.push({ pattern, source });
  };
  for (let i = 0; i < count; i++) add(patterns[i]!, i);
  for (const flat of [false, true]) {
    for (let i = 0; i < count; i++) {
      const d = decodeView(patterns[i]!, true, flat);
      if (d.tokenCount > 0 && d.view.length >= 8) add(d.view, i);
    }
  }
  seen.clear();
  return out;
}

/** viewPatterns for pattern specs, each with its source's replacement. */
export function viewSpecs(specs: readonly PatternSpec[], count?: number): PatternSpec[] {
  return viewPatterns(
    specs.map((s) => s.pattern),
    count,
  ).map(({ pattern, source }) => ({ pattern, replacement: specs[source]!.replacement }));
}

/** How many leading patterns of a set take part in its view (CompileOptions.views). */
export function viewCount(views: boolean | number | undefined, patterns: number): number {
  if (views === true) return patterns;
  if (typeof views === "number") return Math.max(0, Math.min(views, patterns));
  return 0;
}

/** A match found in a view: [start, end) in view bytes and what replaces it. */
export interface ViewMatch {
  readonly start: number;
  readonly end: number;
  readonly replacement: Uint8Array;
}

/**
 * Replace the raw bytes behind each view match (found on the whole input, already decided
 * leftmost-longest and non-overlapping); a match that would reach back into the raw bytes of
 * the previous one starts where that one ended.
 */
export function replaceViewMatches(
  input: Uint8Array,
  d: ViewDecoding,
  matches: readonly ViewMatch[],
): Uint8Array {
  if (matches.length === 0) return input;
  const parts: Uint8Array[] = [];
  let last = 0;
  for (const m of matches) {
    const rs = Math.max(rawStartOf(d, m.start), last);
    const re = rawEndOf(d, m.end - 1);
    parts.push(input.subarray(last, rs), m.replacement);
    last = Math.max(re, rs);
  }
  parts.push(input.subarray(last));
  const out = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
