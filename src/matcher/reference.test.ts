import { describe, expect, test } from "bun:test";
import { referenceEngine } from "./reference.ts";
import { MatcherError } from "./types.ts";

const enc = new TextEncoder();
const dec = new TextDecoder();

describe("reference matcher validation", () => {
  const cases: [string, string[], string][] = [
    ["empty set", [], "empty-set"],
    ["empty pattern", ["abcdefgh", ""], "pattern-empty"],
    ["short pattern", ["abcdefg"], "pattern-too-short"],
    ["duplicate", ["abcdefgh", "12345678", "abcdefgh"], "pattern-duplicate"],
  ];
  for (const [name, pats, code] of cases) {
    test(name, () => {
      const specs = pats.map((p) => ({ pattern: enc.encode(p), replacement: enc.encode("X") }));
      let err: unknown;
      try {
        referenceEngine.compile(specs);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(MatcherError);
      expect((err as MatcherError).code).toBe(code as MatcherError["code"]);
      // Messages name the pattern by index, never by content.
      for (const p of pats) if (p) expect((err as Error).message).not.toContain(p);
    });
  }
});

test("reference replaces leftmost-longest across chunks", () => {
  const set = referenceEngine.compile([
    { pattern: enc.encode("secret-abc"), replacement: enc.encode("[A]") },
    { pattern: enc.encode("secret-abcdef"), replacement: enc.encode("[B]") },
    { pattern: enc.encode("cdef-0123"), replacement: enc.encode("[C]") },
  ]);
  const input = "x secret-abcdef-0123 secret-abc cdef-0123";
  const s = referenceEngine.openStream(set);
  let out = "";
  for (const ch of enc.encode(input)) out += dec.decode(s.push(Uint8Array.of(ch)));
  out += dec.decode(s.end());
  expect(out).toBe("x [B]-0123 [A] [C]");
  expect(s.replacements).toBe(3);
});
