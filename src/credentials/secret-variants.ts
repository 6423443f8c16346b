// Derives, from each secret value, the encoded forms the matcher must look for (THREATS 5,
// 11; issue 4): the raw bytes, base64 and base64url in all three alignments, hex (lower and
// upper), percent-encoding (every byte, or only non-unreserved bytes; upper- and lower-case
// hex digits), form-urlencoding, JSON string escapes (`\"`-style and every char as `\uXXXX`),
// and HTML numeric character references — each with the replacement it gets. Pure: bytes in,
// pattern specs out. It must never emit a pattern shorter than PATTERN_MIN_LENGTH (a short
// pattern would redact innocent bytes) and never lose a long one silently.
//
// Minimum length rules: a variant shorter than 8 bytes is dropped and listed in `skipped`
// (only a secret under ~8 bytes can produce one: base64 inner forms are the shortest, about
// 4n/3 − 2 chars for an n-byte secret, so any secret of 8 bytes or more yields ≥ 8-byte
// variants; the config loader refuses secrets under 8 bytes). A redaction variant longer than
// PATTERN_MAX_LENGTH is cut into consecutive segments of 256–512 bytes; the first segment
// carries the replacement, the rest are replaced by nothing, so the whole encoded secret still
// disappears. Swap (outbound) variants are never split: an over-long one is skipped.
//
// Base64 alignment: base64 maps 3 bytes to 4 chars, so the text a secret produces depends on
// how many bytes precede it modulo 3 (0, 1 or 2 unknown bytes) and its first and last chars
// mix in bits of the neighbouring unknown bytes. For each alignment k the stable part is the
// chars whose 6 bits all come from the secret: indices ceil(8k/6) … floor(8(k+n)/6) − 1 of
// base64(k bytes ‖ secret ‖ …). Those three substrings catch the secret wherever it sits in a
// base64 text. Replacement: base64 letters (`W1JFREFDVEVEXQ`, the unpadded base64 of
// "[REDACTED]"), so a base64 document stays in its alphabet and decodes to "[REDACTED]" when
// aligned.
//
// Outbound (dummy → real) only substring-stable encodings are swapped: raw, percent, form,
// JSON escapes, hex. Base64 is NOT: a dummy inside base64 (e.g. `Authorization: Basic
// base64(user:dummy)`) shares its boundary chars with its neighbours, and unless lengths agree
// modulo 3 the real value's base64 does not even fit the same char grid. Basic auth is
// therefore handled by decoding the header, swapping in the decoded bytes and re-encoding
// (basic-auth.ts). A dummy in any other base64 carrier reaches the upstream as the dummy
// (fail-safe: nothing real leaves).

import { PATTERN_MAX_LENGTH, PATTERN_MIN_LENGTH, type PatternSpec } from "../matcher/types.ts";

export type VariantEncoding =
  | "raw"
  | "base64-0"
  | "base64-1"
  | "base64-2"
  | "base64url-0"
  | "base64url-1"
  | "base64url-2"
  | "hex-lower"
  | "hex-upper"
  | "hex-spaced-lower"
  | "hex-spaced-upper"
  | "percent-all-upper"
  | "percent-all-lower"
  | "percent-reserved-upper"
  | "percent-reserved-lower"
  | "form"
  | "json-escaped"
  | "json-escaped-slash"
  | "json-unicode-lower"
  | "json-unicode-upper"
  | "html-decimal"
  | "html-hex";

export interface SecretVariant {
  readonly encoding: VariantEncoding;
  readonly pattern: Uint8Array;
  readonly replacement: Uint8Array;
}

export interface VariantSet {
  readonly variants: readonly SecretVariant[];
  /** Encodings not produced, and why (never the bytes). */
  readonly skipped: readonly { readonly encoding: VariantEncoding; readonly reason: string }[];
}

export const REDACTED = "[REDACTED]";
const REDACTED_BASE64 = "W1JFREFDVEVEXQ";
const REDACTED_PERCENT = "%5BREDACTED%5D";

const ascii = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));

/** The encoders, each bytes → text (all outputs are ASCII). */
export const ENCODERS: Readonly<
  Record<Exclude<VariantEncoding, `base64${string}`>, (b: Uint8Array) => string>
> = {
  raw: (b) => String.fromCharCode(...b),
  "hex-lower": (b) => Buffer.from(b).toString("hex"),
  "hex-upper": (b) => Buffer.from(b).toString("hex").toUpperCase(),
  // Bytes as hex pairs with spaces between: how AWS spells a canonical request in its
  // SignatureDoesNotMatch errors (`CanonicalRequestBytes`), a real token included.
  "hex-spaced-lower": (b) => Array.from(b, (c) => hex2(c, false)).join(" "),
  "hex-spaced-upper": (b) => Array.from(b, (c) => hex2(c, true)).join(" "),
  "percent-all-upper": (b) => percent(b, () => true, true),
  "percent-all-lower": (b) => percent(b, () => true, false),
  "percent-reserved-upper": (b) => percent(b, (c) => !isUnreserved(c), true),
  "percent-reserved-lower": (b) => percent(b, (c) => !isUnreserved(c), false),
  // WHATWG application/x-www-form-urlencoded: keep alnum and *-._, space → +, rest %XX.
  form: (b) =>
    Array.from(b, (c) =>
      c === 0x20 ? "+" : isFormSafe(c) ? String.fromCharCode(c) : `%${hex2(c, true)}`,
    ).join(""),
  "json-escaped": (b) => jsonEscape(b, false),
  "json-escaped-slash": (b) => jsonEscape(b, true),
  "json-unicode-lower": (b) => jsonUnicode(b, false),
  "json-unicode-upper": (b) => jsonUnicode(b, true),
  "html-decimal": (b) =>
    codePoints(b)
      .map((cp) => `&#${cp};`)
      .join(""),
  "html-hex": (b) =>
    codePoints(b)
      .map((cp) => `&#x${cp.toString(16)};`)
      .join(""),
};

const REDACTION_REPLACEMENT: Readonly<Record<VariantEncoding, string>> = {
  raw: REDACTED,
  "base64-0": REDACTED_BASE64,
  "base64-1": REDACTED_BASE64,
  "base64-2": REDACTED_BASE64,
  "base64url-0": REDACTED_BASE64,
  "base64url-1": REDACTED_BASE64,
  "base64url-2": REDACTED_BASE64,
  "hex-lower": Buffer.from(REDACTED).toString("hex"),
  "hex-upper": Buffer.from(REDACTED).toString("hex").toUpperCase(),
  "hex-spaced-lower": ENCODERS["hex-spaced-lower"](ascii(REDACTED)),
  "hex-spaced-upper": ENCODERS["hex-spaced-upper"](ascii(REDACTED)),
  "percent-all-upper": REDACTED_PERCENT,
  "percent-all-lower": REDACTED_PERCENT,
  "percent-reserved-upper": REDACTED_PERCENT,
  "percent-reserved-lower": REDACTED_PERCENT,
  form: REDACTED_PERCENT,
  "json-escaped": REDACTED,
  "json-escaped-slash": REDACTED,
  "json-unicode-lower": REDACTED,
  "json-unicode-upper": REDACTED,
  "html-decimal": REDACTED,
  "html-hex": REDACTED,
};

/** The stable base64 (or base64url) text of `secret` preceded by `k` unknown bytes (k = 0, 1, 2). */
export function base64Inner(secret: Uint8Array, k: 0 | 1 | 2, url: boolean): string {
  const buf = new Uint8Array(k + secret.length + 2);
  buf.set(secret, k);
  const full = Buffer.from(buf).toString(url ? "base64url" : "base64");
  return full.slice(Math.ceil((8 * k) / 6), Math.floor((8 * (k + secret.length)) / 6));
}

function encode(encoding: VariantEncoding, b: Uint8Array): string {
  const m = /^base64(url)?-([012])$/.exec(encoding);
  if (m) return base64Inner(b, Number(m[2]) as 0 | 1 | 2, m[1] === "url");
  return ENCODERS[encoding as keyof typeof ENCODERS](b);
}

const REDACTION_ORDER: readonly VariantEncoding[] = [
  "raw",
  "base64-0",
  "base64-1",
  "base64-2",
  "base64url-0",
  "base64url-1",
  "base64url-2",
  "hex-lower",
  "hex-upper",
  "hex-spaced-lower",
  "hex-spaced-upper",
  "percent-all-upper",
  "percent-all-lower",
  "percent-reserved-upper",
  "percent-reserved-lower",
  "form",
  "json-escaped",
  "json-escaped-slash",
  "json-unicode-lower",
  "json-unicode-upper",
  "html-decimal",
  "html-hex",
];

/**
 * Every encoding of a real secret to redact in responses and to block in requests (DLP),
 * deduplicated (an encoding identical to an earlier one is left out, not skipped).
 */
export function redactionVariants(secret: Uint8Array): VariantSet {
  const variants: SecretVariant[] = [];
  const skipped: { encoding: VariantEncoding; reason: string }[] = [];
  const seen = new Set<string>();
  for (const encoding of REDACTION_ORDER) {
    const text = encode(encoding, secret);
    if (seen.has(text)) continue;
    seen.add(text);
    if (text.length < PATTERN_MIN_LENGTH) {
      skipped.push({ encoding, reason: `shorter than ${PATTERN_MIN_LENGTH} bytes` });
      continue;
    }
    variants.push({
      encoding,
      pattern: ascii(text),
      replacement: ascii(REDACTION_REPLACEMENT[encoding]),
    });
  }
  return { variants, skipped };
}

/** Where a dummy is being swapped: URLs get a percent-encoded real for a raw dummy. */
export type SwapContext = "url" | "text";

const SWAP_ORDER: readonly Exclude<VariantEncoding, `base64${string}`>[] = [
  "raw",
  "percent-all-upper",
  "percent-all-lower",
  "percent-reserved-upper",
  "percent-reserved-lower",
  "form",
  "json-escaped",
  "json-escaped-slash",
  "json-unicode-lower",
  "json-unicode-upper",
  "hex-lower",
  "hex-upper",
];

/**
 * Outbound pairs: each substring-stable encoding of `dummy` → the same encoding of `real`.
 * In a URL a raw dummy becomes the percent-encoded (reserved bytes only) real so a real value
 * with `&`, `=` or `/` cannot change the URL's structure.
 */
export function swapVariants(
  dummy: Uint8Array,
  real: Uint8Array,
  context: SwapContext,
): VariantSet {
  const variants: SecretVariant[] = [];
  const skipped: { encoding: VariantEncoding; reason: string }[] = [];
  const seen = new Set<string>();
  for (const encoding of SWAP_ORDER) {
    const text = ENCODERS[encoding](dummy);
    if (seen.has(text)) continue;
    seen.add(text);
    if (text.length < PATTERN_MIN_LENGTH) {
      skipped.push({ encoding, reason: `shorter than ${PATTERN_MIN_LENGTH} bytes` });
      continue;
    }
    if (text.length > PATTERN_MAX_LENGTH) {
      skipped.push({ encoding, reason: `longer than ${PATTERN_MAX_LENGTH} bytes` });
      continue;
    }
    const replacement =
      encoding === "raw" && context === "url"
        ? ENCODERS["percent-reserved-upper"](real)
        : encoding === "raw"
          ? null
          : ENCODERS[encoding](real);
    variants.push({
      encoding,
      pattern: ascii(text),
      replacement: replacement === null ? real.slice() : ascii(replacement),
    });
  }
  return { variants, skipped };
}

/**
 * Turn variant sets into matcher pattern specs: duplicates across secrets dropped (first
 * wins), over-long redaction patterns split into segments (see the header), over-long swap
 * patterns left out by swapVariants already.
 */
export function toPatternSpecs(sets: readonly VariantSet[]): PatternSpec[] {
  const specs: PatternSpec[] = [];
  const seen = new Set<string>();
  const add = (pattern: Uint8Array, replacement: Uint8Array) => {
    const key = Buffer.from(pattern).toString("latin1");
    if (seen.has(key)) return;
    seen.add(key);
    specs.push({ pattern, replacement });
  };
  for (const set of sets) {
    for (const v of set.variants) {
      if (v.pattern.length <= PATTERN_MAX_LENGTH) {
        add(v.pattern, v.replacement);
        continue;
      }
      const parts = Math.ceil(v.pattern.length / PATTERN_MAX_LENGTH);
      const size = Math.ceil(v.pattern.length / parts);
      for (let i = 0; i < parts; i++) {
        add(v.pattern.slice(i * size, (i + 1) * size), i === 0 ? v.replacement : new Uint8Array(0));
      }
    }
  }
  return specs;
}

// ---- helpers ---------------------------------------------------------------------------

function hex2(c: number, upper: boolean): string {
  const h = c.toString(16).padStart(2, "0");
  return upper ? h.toUpperCase() : h;
}

/** RFC 3986 unreserved: ALPHA / DIGIT / "-" / "." / "_" / "~". */
function isUnreserved(c: number): boolean {
  return (
    (c >= 0x30 && c <= 0x39) ||
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    c === 0x2d ||
    c === 0x2e ||
    c === 0x5f ||
    c === 0x7e
  );
}

function isFormSafe(c: number): boolean {
  return (
    (c >= 0x30 && c <= 0x39) ||
    (c >= 0x41 && c <= 0x5a) ||
    (c >= 0x61 && c <= 0x7a) ||
    c === 0x2a ||
    c === 0x2d ||
    c === 0x2e ||
    c === 0x5f
  );
}

function percent(b: Uint8Array, encodeIt: (c: number) => boolean, upper: boolean): string {
  return Array.from(b, (c) => (encodeIt(c) ? `%${hex2(c, upper)}` : String.fromCharCode(c))).join(
    "",
  );
}

/** Code points of the secret: UTF-8 decoded when valid, else one per byte (latin1). */
function codePoints(b: Uint8Array): number[] {
  try {
    const text = new TextDecoder("utf-8", { fatal: true }).decode(b);
    return Array.from(text, (ch) => ch.codePointAt(0)!);
  } catch {
    return Array.from(b);
  }
}

function utf16Units(b: Uint8Array): number[] {
  const units: number[] = [];
  for (const cp of codePoints(b)) {
    if (cp > 0xffff) {
      const v = cp - 0x10000;
      units.push(0xd800 + (v >> 10), 0xdc00 + (v & 0x3ff));
    } else units.push(cp);
  }
  return units;
}

function jsonUnicode(b: Uint8Array, upper: boolean): string {
  return utf16Units(b)
    .map((u) => {
      const h = u.toString(16).padStart(4, "0");
      return `\\u${upper ? h.toUpperCase() : h}`;
    })
    .join("");
}

/** What a JSON serializer writes inside a string: `"` and `\` escaped, controls as \u00xx. */
function jsonEscape(b: Uint8Array, escapeSlash: boolean): string {
  // Non-ASCII stays as UTF-8 bytes (as JSON.stringify + UTF-8 encoding would produce).
  const text = new TextDecoder("utf-8", { fatal: false }).decode(b);
  const inner = JSON.stringify(text).slice(1, -1);
  const escaped = escapeSlash ? inner.replaceAll("/", "\\/") : inner;
  return String.fromCharCode(...new TextEncoder().encode(escaped));
}
