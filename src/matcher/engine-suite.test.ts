// The shared suite every matcher engine runs: the vector table (whole, 1-byte chunks, random
// chunkings), the validation errors, and a property suite that compares each engine with the
// reference on random pattern sets, planted inputs and random chunkings. Adding an engine is
// one line in `engines`; an engine that only replaces whole buffers (the inline replacer heads
// go through) is one line in `wholeOnly` and runs the vectors and properties whole. It must
// never print a pattern or an input (they model secrets).

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { rng } from "../../bench/matcher-fixtures.ts";
import { matcherVectors, viewVectors } from "../../test/vectors/matcher-vectors.ts";
import { InlineReplacer } from "./inline.ts";
import { referenceEngine } from "./reference.ts";
import {
  type CompileOptions,
  heldBackBound,
  type LendingMatchStream,
  type MatcherEngine,
  MatcherError,
  type PatternSpec,
} from "./types.ts";
import { createWasmEngine, type WasmEngine } from "./wasm-engine.ts";

const engines: [string, MatcherEngine][] = [
  ["reference", referenceEngine],
  ["wasm", createWasmEngine()],
  // Same module, test knobs that only change the search path, never the output.
  ["wasm trie-walk", createWasmEngine(undefined, { forceTrieWalk: true })],
  ["wasm dfa-only", createWasmEngine(undefined, { disableSkip: true })],
  ["wasm switching", createWasmEngine(undefined, { frequentSwitching: true })],
];
const fastEngines = engines.filter(([name]) => name !== "reference");

type WholeEngine = (
  specs: readonly PatternSpec[],
  input: Uint8Array,
  options?: CompileOptions,
) => { output: Uint8Array; replacements: number };

const wholeOnly: [string, WholeEngine][] = [
  [
    "inline",
    (specs, input, options = {}) => {
      const r = new InlineReplacer(
        specs.map((s, i) => ({ name: String(i), from: s.pattern, to: s.replacement })),
        { views: options.views === true },
      ).apply(input);
      return { output: r.output, replacements: r.count };
    },
  ],
];

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** Run `input` through a stream cut at `cuts` (sorted offsets); checks the holdback bound. */
function streamed(
  engine: MatcherEngine,
  specs: PatternSpec[],
  input: Uint8Array,
  cuts: number[],
  options: CompileOptions = {},
): { output: Uint8Array; replacements: number } {
  const set = engine.compile(specs, options);
  const bound = heldBackBound(set);
  const s = engine.openStream(set);
  const parts: Uint8Array[] = [];
  let inBytes = 0;
  let prev = 0;
  for (const c of [...cuts, input.length]) {
    parts.push(s.push(input.subarray(prev, c)));
    inBytes = c;
    prev = c;
    // Output so far covers every input byte but at most the bound held back (maxLen-1 without
    // views): we can only check it for chunks without replacements, where lengths line up.
    // The reference holds a view set's whole input (it is the oracle, not a stream).
    if (s.replacements === 0 && !(set.views && engine === referenceEngine)) {
      const emitted = parts.reduce((n, p) => n + p.length, 0);
      if (emitted < inBytes - bound) throw new Error("stream held back too much");
    }
  }
  parts.push(s.end());
  const replacements = s.replacements;
  set.dispose();
  return { output: concat(parts), replacements };
}

/**
 * `streamed` through `pushLent` where the engine lends (each lent view copied at once, as its
 * contract asks), so the reused output buffer meets every vector and chunking too.
 */
function streamedLent(
  engine: MatcherEngine,
  specs: PatternSpec[],
  input: Uint8Array,
  cuts: number[],
): { output: Uint8Array; replacements: number } {
  const set = engine.compile(specs);
  const s = engine.openStream(set);
  const parts: Uint8Array[] = [];
  let prev = 0;
  for (const c of [...cuts, input.length]) {
    const chunk = input.subarray(prev, c);
    parts.push("pushLent" in s ? (s as LendingMatchStream).pushLent(chunk).slice() : s.push(chunk));
    prev = c;
  }
  parts.push(s.end());
  const replacements = s.replacements;
  set.dispose();
  return { output: concat(parts), replacements };
}

/** Reused output buffers for `replaceAllInto`: one too small (it grows), one kept dirty. */
const intoBuffers = [new Uint8Array(16), new Uint8Array(64 * 1024)];
let intoTurn = 0;

/**
 * `replaceAll`, and where the engine has it `replaceAllInto` into a reused buffer, which must
 * agree with it: `input` itself when nothing matched (no views), never touching the input.
 */
function whole(
  engine: MatcherEngine,
  specs: PatternSpec[],
  input: Uint8Array,
  options: CompileOptions = {},
) {
  const set = engine.compile(specs, options);
  const r = engine.replaceAll(set, input);
  if ("replaceAllInto" in engine) {
    const before = input.slice();
    const into = intoBuffers[intoTurn++ % intoBuffers.length]!;
    const i = (engine as WasmEngine).replaceAllInto(set, input, into);
    expect(i).toEqual(r);
    expect(input).toEqual(before);
    if (r.replacements === 0 && !set.views) expect(i.output).toBe(input);
    else expect(i.output).not.toBe(input);
  }
  set.dispose();
  return r;
}

/** Deterministic random cut points (mulberry32), so a failure names a reproducible seed. */
function randomCuts(length: number, seed: number, maxPiece: number): number[] {
  let a = seed >>> 0;
  const rnd = () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const cuts: number[] = [];
  let at = 0;
  for (;;) {
    at += 1 + Math.floor(rnd() * maxPiece);
    if (at >= length) return cuts;
    cuts.push(at);
  }
}

const allVectors = [...matcherVectors, ...viewVectors];

for (const [engineName, engine] of engines) {
  describe(`${engineName}: vectors`, () => {
    for (const v of allVectors) {
      const specs = v.patterns.map((pattern, i) => ({
        pattern,
        replacement: v.replacements[i]!,
      }));
      const options = { views: v.views === true };
      const expected = { output: v.output, replacements: v.replacements_made };
      test(`${v.name} (whole)`, () => {
        expect(whole(engine, specs, v.input, options)).toEqual(expected);
      });
      test(`${v.name} (1-byte chunks)`, () => {
        const cuts = Array.from({ length: Math.max(0, v.input.length - 1) }, (_, i) => i + 1);
        expect(streamed(engine, specs, v.input, cuts, options)).toEqual(expected);
      });
      test(`${v.name} (random chunkings)`, () => {
        for (let seed = 1; seed <= 20; seed++) {
          const cuts = randomCuts(v.input.length, seed, 1 + (seed % 5) * 7);
          expect(streamed(engine, specs, v.input, cuts, options)).toEqual(expected);
        }
      });
    }
  });
}

for (const [engineName, replace] of wholeOnly) {
  describe(`${engineName}: vectors`, () => {
    for (const v of allVectors) {
      const specs = v.patterns.map((pattern, i) => ({ pattern, replacement: v.replacements[i]! }));
      test(`${v.name} (whole)`, () => {
        expect(replace(specs, v.input, { views: v.views === true })).toEqual({
          output: v.output,
          replacements: v.replacements_made,
        });
      });
    }
  });
}

describe("validation errors are identical", () => {
  const enc = new TextEncoder();
  const cases: [string, PatternSpec[]][] = [
    ["empty set", []],
    ["empty pattern", [{ pattern: new Uint8Array(0), replacement: enc.encode("x") }]],
    ["short pattern", [{ pattern: enc.encode("1234567"), replacement: enc.encode("x") }]],
    ["long pattern", [{ pattern: new Uint8Array(513).fill(7), replacement: enc.encode("x") }]],
    [
      "duplicate",
      [
        { pattern: enc.encode("abcdefgh"), replacement: enc.encode("1") },
        { pattern: enc.encode("12345678"), replacement: enc.encode("2") },
        { pattern: enc.encode("abcdefgh"), replacement: enc.encode("3") },
      ],
    ],
  ];
  const errorOf = (engine: MatcherEngine, specs: PatternSpec[]) => {
    try {
      engine.compile(specs);
    } catch (e) {
      if (!(e instanceof MatcherError)) throw e;
      return { code: e.code, message: e.message, index: e.index };
    }
    throw new Error("compile did not throw");
  };
  for (const [name, specs] of cases) {
    for (const [engineName, engine] of fastEngines) {
      test(`${name}: ${engineName} == reference`, () => {
        expect(errorOf(engine, specs)).toEqual(errorOf(referenceEngine, specs));
      });
    }
  }
  for (const [engineName, engine] of engines) {
    test(`${engineName}: closed stream and disposed set`, () => {
      const set = engine.compile([
        { pattern: enc.encode("abcdefgh"), replacement: enc.encode("") },
      ]);
      const s = engine.openStream(set);
      s.end();
      expect(() => s.push(enc.encode("x"))).toThrow(MatcherError);
      const s2 = engine.openStream(set);
      set.dispose();
      let code: string | undefined;
      try {
        s2.push(enc.encode("x"));
      } catch (e) {
        code = (e as MatcherError).code;
      }
      expect(code).toBe("set-disposed");
    });
  }
});

// ---- property suite -------------------------------------------------------------------------

/** A pattern set plus an input built from filler, whole patterns and pattern fragments. */
const scenario = fc
  .record({
    alphabet: fc.constantFrom("ab", "abc", "abcd", "xyz01", "bytes"),
    patternCount: fc.integer({ min: 1, max: 6 }),
    maxLen: fc.constantFrom(9, 12, 20, 40),
    seed: fc.integer(),
  })
  .chain(({ alphabet, patternCount, maxLen, seed }) => {
    const byte =
      alphabet === "bytes"
        ? fc.constantFrom(0, 1, 0x7f, 0x80, 0xfe, 0xff)
        : fc.constantFrom(...[...alphabet].map((c) => c.charCodeAt(0)));
    const pattern = fc
      .uint8Array({ minLength: 8, maxLength: maxLen })
      .chain((shape) => fc.array(byte, { minLength: shape.length, maxLength: shape.length }));
    return fc
      .record({
        patterns: fc.uniqueArray(pattern, {
          minLength: patternCount,
          maxLength: patternCount,
          selector: (p) => p.join(","),
        }),
        replacements: fc.array(fc.uint8Array({ maxLength: 12 }), {
          minLength: patternCount,
          maxLength: patternCount,
        }),
        plan: fc.array(
          fc.oneof(
            fc.record({
              kind: fc.constant("filler" as const),
              bytes: fc.array(byte, { maxLength: 12 }),
            }),
            fc.record({ kind: fc.constant("whole" as const), which: fc.nat() }),
            fc.record({ kind: fc.constant("prefix" as const), which: fc.nat(), cut: fc.nat() }),
            fc.record({ kind: fc.constant("suffix" as const), which: fc.nat(), cut: fc.nat() }),
          ),
          { maxLength: 14 },
        ),
        cutSeed: fc.integer(),
        maxPiece: fc.constantFrom(1, 2, 3, 7, 16, 64),
      })
      .map((r) => ({ ...r, seed }));
  })
  .map(({ patterns, replacements, plan, cutSeed, maxPiece }) => {
    const pats = patterns.map((p) => Uint8Array.from(p));
    const parts: Uint8Array[] = [];
    for (const step of plan) {
      if (step.kind === "filler") {
        parts.push(Uint8Array.from(step.bytes));
        continue;
      }
      const p = pats[step.which % pats.length]!;
      if (step.kind === "whole") parts.push(p);
      else if (step.kind === "prefix") parts.push(p.subarray(0, step.cut % p.length));
      else parts.push(p.subarray(step.cut % p.length));
    }
    const specs = pats.map((pattern, i) => ({ pattern, replacement: replacements[i]! }));
    return { specs, input: concat(parts), cutSeed, maxPiece };
  });

describe("property: engines agree with the reference whatever the chunking", () => {
  // 2,600 scenarios x 4 WASM configurations x (whole + chunked) comparisons = 20,800 checks.
  for (const [engineName, engine] of fastEngines) {
    test(`${engineName}`, () => {
      fc.assert(
        fc.property(scenario, ({ specs, input, cutSeed, maxPiece }) => {
          const want = whole(referenceEngine, specs, input);
          expect(whole(engine, specs, input)).toEqual(want);
          const cuts = randomCuts(input.length, cutSeed, maxPiece);
          expect(streamed(engine, specs, input, cuts)).toEqual(want);
          expect(streamedLent(engine, specs, input, cuts)).toEqual(want);
        }),
        { numRuns: 2600 },
      );
    });
  }
  for (const [engineName, replace] of wholeOnly) {
    test(`${engineName} (whole buffers)`, () => {
      fc.assert(
        fc.property(scenario, ({ specs, input }) => {
          expect(replace(specs, input)).toEqual(whole(referenceEngine, specs, input));
        }),
        { numRuns: 2600 },
      );
    });
  }
});

/**
 * Bigger sets (10..150 patterns) and longer inputs (up to ~4 KB) than the scenarios above, so
 * the prefilter's buckets, shift table and mode switches are exercised with many candidates.
 */
const bigScenario = fc
  .record({
    seed: fc.integer(),
    count: fc.integer({ min: 10, max: 150 }),
    alphabet: fc.constantFrom("ab", "abcd", "0123456789abcdef"),
    minLen: fc.constantFrom(8, 12, 20),
    extra: fc.constantFrom(0, 8, 40),
    plants: fc.integer({ min: 0, max: 80 }),
    cutSeed: fc.integer(),
    maxPiece: fc.constantFrom(1, 5, 64, 1000),
  })
  .map(({ seed, count, alphabet, minLen, extra, plants, cutSeed, maxPiece }) => {
    const r = rng(seed);
    const letter = () => alphabet.charCodeAt(r() % alphabet.length);
    const seen = new Set<string>();
    const pats: Uint8Array[] = [];
    for (let tries = 0; pats.length < count && tries < count * 20; tries++) {
      const p = Uint8Array.from({ length: minLen + (r() % (extra + 1)) }, letter);
      const key = p.join();
      if (!seen.has(key)) {
        seen.add(key);
        pats.push(p);
      }
    }
    const parts: Uint8Array[] = [];
    for (let i = 0; i < plants; i++) {
      parts.push(Uint8Array.from({ length: r() % 30 }, letter));
      const p = pats[r() % pats.length]!;
      const kind = r() % 3;
      parts.push(
        kind === 0 ? p : kind === 1 ? p.subarray(0, r() % p.length) : p.subarray(r() % p.length),
      );
    }
    const specs = pats.map((pattern, i) => ({ pattern, replacement: Uint8Array.of(i & 0xff) }));
    return { specs, input: concat(parts), cutSeed, maxPiece };
  });

describe("property: bigger sets and inputs", () => {
  for (const [engineName, engine] of fastEngines.filter(
    ([n]) => n === "wasm" || n === "wasm switching",
  )) {
    test(engineName, () => {
      fc.assert(
        fc.property(bigScenario, ({ specs, input, cutSeed, maxPiece }) => {
          const want = whole(referenceEngine, specs, input);
          expect(whole(engine, specs, input)).toEqual(want);
          expect(
            streamed(engine, specs, input, randomCuts(input.length, cutSeed, maxPiece)),
          ).toEqual(want);
        }),
        { numRuns: 150 },
      );
    });
  }
  for (const [engineName, replace] of wholeOnly) {
    test(`${engineName} (whole buffers)`, () => {
      fc.assert(
        fc.property(bigScenario, ({ specs, input }) => {
          expect(replace(specs, input)).toEqual(whole(referenceEngine, specs, input));
        }),
        { numRuns: 150 },
      );
    });
  }
});

// ---- decoded views ---------------------------------------------------------------------------

const enc = new TextEncoder();

/** Ways to spell one byte as real servers do (JSON and HTML escapes), chosen per byte. */
const NAMED: Record<number, string[]> = {
  38: ["&amp;", "&AMP;"],
  43: ["&plus;"],
  46: ["&period;"],
  95: ["&lowbar;", "&UnderBar;"],
};
function spell(byte: number, how: number): string {
  const hex = byte.toString(16).padStart(4, "0");
  switch (how % 10) {
    case 0:
      return `\\u${hex}`;
    case 1:
      return `\\u${hex.toUpperCase()}`;
    case 2:
      return `&#${byte};`;
    case 3:
      return `&#x${byte.toString(16)};`;
    case 4:
      return `&#X${byte.toString(16).toUpperCase()};`;
    case 5: {
      const names = NAMED[byte];
      return names ? names[how % names.length]! : String.fromCharCode(byte);
    }
    case 6:
      return `%${byte.toString(16).padStart(2, "0").toUpperCase()}`;
    case 7:
      return `\\x${byte.toString(16).padStart(2, "0")}`;
    case 8:
      return `\\u0026#${byte};`;
    default:
      return String.fromCharCode(byte);
  }
}
const BREAKS = ["\n", "\r\n", "\\n", "\\r\\n", "\r", "\n    ", "\r\n\t"];

/** A pattern (bytes under 0x80) in a random spelling: some bytes escaped, line breaks inside. */
const spelling = (p: Uint8Array) =>
  fc
    .array(fc.record({ how: fc.nat(), brk: fc.nat({ max: 12 }) }), {
      minLength: p.length,
      maxLength: p.length,
    })
    .map((choices) =>
      [...p]
        .map((byte, i) => {
          const c = choices[i]!;
          const br = i > 0 && c.brk < BREAKS.length ? BREAKS[c.brk]! : "";
          return br + spell(byte, c.how);
        })
        .join(""),
    );

// Fragments that start escapes, and tokens that stand for two characters (`&fjlig;` is "fj",
// `&nGt;` two code points, `\u00e9` two UTF-8 bytes): a match may end inside one.
const VIEW_BITS = [
  "\\",
  "&",
  "\\u00",
  "&#",
  "&#x",
  "&amp",
  ";",
  "\n",
  "\\n",
  "\r\n",
  "\\\\",
  "x",
  "&fjlig;",
  "&nGt;",
  "\\u00e9",
  "&eacute;",
  "%",
  "%5C",
  "%2",
  "\\x2",
  "\\u0026",
  "&#43",
  "  ",
];

const viewScenario = fc
  .record({
    alphabet: fc.constantFrom("ab_", "ab.+", "a&;b", "ab\\n", "fjB", "jf\u00e9"),
    patternCount: fc.integer({ min: 1, max: 4 }),
  })
  .chain(({ alphabet, patternCount }) =>
    fc
      .uniqueArray(fc.string({ unit: fc.constantFrom(...alphabet), minLength: 8, maxLength: 14 }), {
        minLength: patternCount,
        maxLength: patternCount,
      })
      .chain((texts) => {
        const pats = texts.map((t) => enc.encode(t));
        return fc.record({
          pats: fc.constant(pats),
          parts: fc.array(
            fc.oneof(
              fc.constantFrom(...VIEW_BITS, ...alphabet),
              fc.nat().chain((k) => spelling(pats[k % pats.length]!)),
              fc
                .tuple(fc.nat(), fc.nat())
                .chain(([k, cut]) =>
                  spelling(pats[k % pats.length]!).map((t) => t.slice(0, cut % (t.length + 1))),
                ),
              // A value whose last (or first) character is half of a two-character token:
              // the match ends (or starts) inside the token.
              fc.nat().map((k) => {
                const t = new TextDecoder().decode(pats[k % pats.length]!);
                if (t.endsWith("f")) return `${t.slice(0, -1)}&fjlig;`;
                if (t.startsWith("j")) return `&fjlig;${t.slice(1)}`;
                return t;
              }),
            ),
            { maxLength: 10 },
          ),
          cutSeed: fc.integer(),
          maxPiece: fc.constantFrom(1, 2, 5, 17, 64),
        });
      }),
  )
  .map(({ pats, parts, cutSeed, maxPiece }) => ({
    specs: pats.map((pattern, i) => ({ pattern, replacement: enc.encode(`<${i}>`) })),
    input: enc.encode(parts.join("")),
    cutSeed,
    maxPiece,
  }));

/** Each engine against the reference on view scenarios, whole and in random chunkings. */
function agreesOnViews(engine: MatcherEngine, views: CompileOptions, numRuns: number): void {
  fc.assert(
    fc.property(viewScenario, ({ specs, input, cutSeed, maxPiece }) => {
      const want = whole(referenceEngine, specs, input, views);
      expect(whole(engine, specs, input, views)).toEqual(want);
      const cuts = randomCuts(input.length, cutSeed, maxPiece);
      expect(streamed(engine, specs, input, cuts, views)).toEqual(want);
    }),
    { numRuns },
  );
}

describe("property: decoded views agree with the reference whatever the chunking", () => {
  const views = { views: true } as const;
  for (const [engineName, engine] of fastEngines) {
    test(engineName, () => agreesOnViews(engine, views, 800));
  }
  for (const [engineName, replace] of wholeOnly) {
    test(`${engineName} (whole buffers)`, () => {
      fc.assert(
        fc.property(viewScenario, ({ specs, input }) => {
          expect(replace(specs, input, views)).toEqual(whole(referenceEngine, specs, input, views));
        }),
        { numRuns: 800 },
      );
    });
  }
});

describe("property: a set that also swaps (views on its first pattern only) agrees too", () => {
  // The outbound pass: real values (matched on the view, first) and dummies swapped as written.
  for (const [engineName, engine] of fastEngines.filter(
    ([n]) => n === "wasm" || n === "wasm switching",
  )) {
    test(engineName, () => agreesOnViews(engine, { views: 1 }, 400));
  }
});

describe("property: any spelling of a value is redacted", () => {
  // The reference itself, against the promise: a token-shaped value with any subset of its
  // characters JSON- or HTML-escaped and up to two line breaks anywhere, between text that
  // shares no character with it, leaves nothing but the replacement.
  const value = enc.encode("ghp_Ab+c_D.eF0123&x");
  test("reference and wasm", () => {
    const wasm = engines[1]![1];
    fc.assert(
      fc.property(
        spelling(value),
        fc.string({ unit: fc.constantFrom("Q", "W", " ", "\t", "<", ">") }),
        fc.string({ unit: fc.constantFrom("Q", "W", " ", "\t", "<", ">") }),
        (spelled, before, after) => {
          const input = enc.encode(`${before}${spelled}${after}`);
          const want = { output: enc.encode(`${before}[R]${after}`), replacements: 1 };
          const specs = [{ pattern: value, replacement: enc.encode("[R]") }];
          expect(whole(referenceEngine, specs, input, { views: true })).toEqual(want);
          expect(whole(wasm, specs, input, { views: true })).toEqual(want);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
