import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { referenceEngine } from "../matcher/reference.ts";
import {
  base64Inner,
  ENCODERS,
  redactionVariants,
  swapVariants,
  toPatternSpecs,
} from "./secret-variants.ts";

const b = (s: string) => Uint8Array.from(s, (c) => c.charCodeAt(0));
const s = (u: Uint8Array) => String.fromCharCode(...u);
const view = (set: ReturnType<typeof redactionVariants>) => ({
  variants: set.variants.map((v) => [v.encoding, s(v.pattern), s(v.replacement)]),
  skipped: set.skipped,
});

test("redaction variants of a typical API key (base64 checked by hand against Buffer)", () => {
  // base64("sk-Ab/9+z~?") = c2stQWIvOSt6fj8=; with 1 zero byte before: AHNrLUFiLzkren4/;
  // with 2: AABzay1BYi85K3p+Pw== — the variants are the chars owned by the secret alone.
  // base64url-0 equals base64-0 here (no + or /), so it is deduplicated away.
  expect(view(redactionVariants(b("sk-Ab/9+z~?")))).toEqual({
    variants: [
      ["raw", "sk-Ab/9+z~?", "[REDACTED]"],
      ["base64-0", "c2stQWIvOSt6fj", "W1JFREFDVEVEXQ"],
      ["base64-1", "NrLUFiLzkren4/", "W1JFREFDVEVEXQ"],
      ["base64-2", "zay1BYi85K3p+P", "W1JFREFDVEVEXQ"],
      ["base64url-1", "NrLUFiLzkren4_", "W1JFREFDVEVEXQ"],
      ["base64url-2", "zay1BYi85K3p-P", "W1JFREFDVEVEXQ"],
      ["hex-lower", "736b2d41622f392b7a7e3f", "5b52454441435445445d"],
      ["hex-upper", "736B2D41622F392B7A7E3F", "5B52454441435445445D"],
      ["hex-spaced-lower", "73 6b 2d 41 62 2f 39 2b 7a 7e 3f", "5b 52 45 44 41 43 54 45 44 5d"],
      ["hex-spaced-upper", "73 6B 2D 41 62 2F 39 2B 7A 7E 3F", "5B 52 45 44 41 43 54 45 44 5D"],
      ["percent-all-upper", "%73%6B%2D%41%62%2F%39%2B%7A%7E%3F", "%5BREDACTED%5D"],
      ["percent-all-lower", "%73%6b%2d%41%62%2f%39%2b%7a%7e%3f", "%5BREDACTED%5D"],
      ["percent-reserved-upper", "sk-Ab%2F9%2Bz~%3F", "%5BREDACTED%5D"],
      ["percent-reserved-lower", "sk-Ab%2f9%2bz~%3f", "%5BREDACTED%5D"],
      ["form", "sk-Ab%2F9%2Bz%7E%3F", "%5BREDACTED%5D"],
      ["json-escaped-slash", "sk-Ab\\/9+z~?", "[REDACTED]"],
      [
        "json-unicode-lower",
        "\\u0073\\u006b\\u002d\\u0041\\u0062\\u002f\\u0039\\u002b\\u007a\\u007e\\u003f",
        "[REDACTED]",
      ],
      [
        "json-unicode-upper",
        "\\u0073\\u006B\\u002D\\u0041\\u0062\\u002F\\u0039\\u002B\\u007A\\u007E\\u003F",
        "[REDACTED]",
      ],
      ["html-decimal", "&#115;&#107;&#45;&#65;&#98;&#47;&#57;&#43;&#122;&#126;&#63;", "[REDACTED]"],
      [
        "html-hex",
        "&#x73;&#x6b;&#x2d;&#x41;&#x62;&#x2f;&#x39;&#x2b;&#x7a;&#x7e;&#x3f;",
        "[REDACTED]",
      ],
    ],
    skipped: [],
  });
});

test("variants are deduplicated, not repeated (a secret with only unreserved bytes)", () => {
  const encodings = redactionVariants(b("abcdefgh12345678")).variants.map((v) => v.encoding);
  expect(encodings).not.toContain("percent-reserved-upper");
  expect(encodings).not.toContain("form");
  expect(encodings).not.toContain("json-escaped");
  expect(new Set(encodings).size).toBe(encodings.length);
});

test("minimum length: a short secret's short variants are skipped and listed", () => {
  const set = redactionVariants(b("abc12"));
  expect(set.variants.every((v) => v.pattern.length >= 8)).toBe(true);
  expect(set.skipped.map((x) => x.encoding)).toEqual(["raw", "base64-0", "base64-1", "base64-2"]);
  expect(JSON.stringify(set.skipped)).not.toContain("abc12");
});

describe("every variant is found in the encoded text around it (fast-check)", () => {
  const printable = fc.string({
    minLength: 8,
    maxLength: 80,
    unit: fc.integer({ min: 0x21, max: 0x7e }).map((c) => String.fromCharCode(c)),
  });
  const context = fc.string({
    maxLength: 10,
    unit: fc.integer({ min: 0x20, max: 0x7e }).map((c) => String.fromCharCode(c)),
  });

  test("base64 and base64url in every alignment, arbitrary bytes", () => {
    fc.assert(
      fc.property(
        fc.uint8Array({ minLength: 8, maxLength: 64 }),
        fc.uint8Array({ maxLength: 8 }),
        fc.uint8Array({ maxLength: 8 }),
        (secret, pre, post) => {
          const whole = Buffer.concat([pre, secret, post]);
          const k = (pre.length % 3) as 0 | 1 | 2;
          expect(whole.toString("base64")).toContain(base64Inner(secret, k, false));
          expect(whole.toString("base64url")).toContain(base64Inner(secret, k, true));
          expect(base64Inner(secret, k, false).length).toBeGreaterThanOrEqual(8);
        },
      ),
      { numRuns: 800, seed: 21 },
    );
  });

  test("hex, percent, form, JSON and HTML forms of printable secrets", () => {
    fc.assert(
      fc.property(printable, context, context, (secret, pre, post) => {
        const whole = b(pre + secret + post);
        const sec = b(secret);
        for (const [name, enc] of Object.entries(ENCODERS)) {
          expect({ name, found: enc(whole).includes(enc(sec)) }).toEqual({ name, found: true });
        }
        // The encodings decode back to the secret.
        expect(decodeURIComponent(ENCODERS["percent-all-upper"](sec))).toBe(secret);
        expect(JSON.parse(`"${ENCODERS["json-unicode-lower"](sec)}"`)).toBe(secret);
        expect(JSON.parse(`"${ENCODERS["json-escaped"](sec)}"`)).toBe(secret);
        expect(new URLSearchParams(`k=${ENCODERS.form(sec)}`).get("k")).toBe(secret);
      }),
      { numRuns: 500, seed: 22 },
    );
  });
});

describe("toPatternSpecs with the reference matcher", () => {
  test("every encoded form of the secret is gone after redaction, in any context", () => {
    const secret = b("sk-proj-Zx9/+_~ab'\"<>&%: tail");
    const set = referenceEngine.compile(toPatternSpecs([redactionVariants(secret)]));
    for (const enc of Object.values(ENCODERS)) {
      const out = s(referenceEngine.replaceAll(set, b(`before ${enc(secret)} after`)).output);
      expect(out).not.toContain(enc(secret));
    }
    for (let k = 0; k < 3; k++) {
      const doc = Buffer.concat([new Uint8Array(k).fill(7), secret, b("xyz")]).toString("base64");
      const out = s(referenceEngine.replaceAll(set, b(doc)).output);
      expect(out).toContain("W1JFREFDVEVEXQ");
      expect(out).not.toContain(base64Inner(secret, k as 0 | 1 | 2, false));
    }
  });

  test("over-long variants are split and still removed entirely", () => {
    const secret = b("k".repeat(100) + "/".repeat(100));
    const specs = toPatternSpecs([redactionVariants(secret)]);
    expect(specs.every((x) => x.pattern.length >= 8 && x.pattern.length <= 512)).toBe(true);
    const set = referenceEngine.compile(specs);
    const unicode = ENCODERS["json-unicode-lower"](secret); // 1200 bytes → 3 segments
    const out = s(referenceEngine.replaceAll(set, b(`{"k":"${unicode}"}`)).output);
    expect(out).toBe('{"k":"[REDACTED]"}');
  });

  test("duplicates across secrets are dropped (first wins)", () => {
    const a = redactionVariants(b("same-secret-1"));
    const specs = toPatternSpecs([a, a]);
    expect(specs.length).toBe(a.variants.length);
  });
});

describe("swapVariants (outbound dummy → real)", () => {
  const dummy = b("dummy-key-000001");
  const real = b("real/key+000&01");
  test("text context: each encoding of the dummy becomes the same encoding of the real", () => {
    const set = swapVariants(dummy, real, "text");
    expect(set.variants.map((v) => [v.encoding, s(v.pattern), s(v.replacement)])).toEqual([
      ["raw", "dummy-key-000001", "real/key+000&01"],
      [
        "percent-all-upper",
        ENCODERS["percent-all-upper"](dummy),
        ENCODERS["percent-all-upper"](real),
      ],
      [
        "percent-all-lower",
        ENCODERS["percent-all-lower"](dummy),
        ENCODERS["percent-all-lower"](real),
      ],
      [
        "json-unicode-lower",
        ENCODERS["json-unicode-lower"](dummy),
        ENCODERS["json-unicode-lower"](real),
      ],
      [
        "json-unicode-upper",
        ENCODERS["json-unicode-upper"](dummy),
        ENCODERS["json-unicode-upper"](real),
      ],
      ["hex-lower", ENCODERS["hex-lower"](dummy), ENCODERS["hex-lower"](real)],
      ["hex-upper", ENCODERS["hex-upper"](dummy), ENCODERS["hex-upper"](real)],
    ]);
    expect(set.variants.some((v) => v.encoding.startsWith("base64"))).toBe(false);
  });
  test("url context: a raw dummy becomes the percent-encoded real", () => {
    const raw = swapVariants(dummy, real, "url").variants[0]!;
    expect([raw.encoding, s(raw.replacement)]).toEqual(["raw", "real%2Fkey%2B000%2601"]);
  });
  test("over-long swap variants are skipped, never split", () => {
    const set = swapVariants(b("d".repeat(100)), b("r".repeat(100)), "text");
    // percent forms are 300 bytes; \u0064 ×100 is 600 (upper = lower for digits, deduplicated).
    expect(set.skipped).toEqual([
      { encoding: "json-unicode-lower", reason: "longer than 512 bytes" },
    ]);
  });
});
