// Tests of the WASM engine beyond the shared suite (engine-suite.test.ts): memory hygiene read
// straight from linear memory, several sets and many streams alive at once, big bodies with
// matches on every internal piece boundary, record-buffer overflow, adversarial text and huge
// sets. Expected outputs come from the reference or are built so the answer is obvious. It must
// never print a pattern or replacement (they stand for secrets).

import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { adversarialHaystack, randomPatterns, rng } from "../../bench/matcher-fixtures.ts";
import { referenceEngine } from "./reference.ts";
import type { MatcherEngine, PatternSpec } from "./types.ts";
import { createWasmEngine, type WasmEngine } from "./wasm-engine.ts";

/** The engine splits pushes into pieces of this size (wasm/assembly/stream.ts PIECE). */
const PIECE = 128 * 1024;

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function randomBytes(n: number): Uint8Array {
  return crypto.getRandomValues(new Uint8Array(n));
}

/** Does linear memory contain `needle` anywhere? */
function inMemory(engine: WasmEngine, needle: Uint8Array): boolean {
  return Buffer.from(engine.memory.buffer).indexOf(needle) >= 0;
}

function leftovers(engine: WasmEngine, secrets: Uint8Array[]): number {
  return secrets.filter((s) => inMemory(engine, s)).length;
}

function streamAll(
  engine: MatcherEngine,
  set: ReturnType<MatcherEngine["compile"]>,
  input: Uint8Array,
  chunk: number,
) {
  const s = engine.openStream(set);
  const parts: Uint8Array[] = [];
  for (let off = 0; off < input.length; off += chunk)
    parts.push(s.push(input.subarray(off, off + chunk)));
  parts.push(s.end());
  return { output: concat(parts), replacements: s.replacements };
}

/** Distinctive secrets: random bytes, 16+ long, so a hit in memory is never a coincidence. */
function secretSpecs(n: number): PatternSpec[] {
  return Array.from({ length: n }, (_, i) => ({
    pattern: randomBytes(16 + (i % 24)),
    replacement: randomBytes(16 + (i % 9)),
  }));
}

function bodyWith(specs: PatternSpec[], size: number): Uint8Array {
  const parts: Uint8Array[] = [];
  let n = 0;
  let i = 0;
  while (n < size) {
    const filler = randomBytes(1 + (i % 300));
    const p = specs[i % specs.length]!.pattern;
    parts.push(filler, p);
    n += filler.length + p.length;
    i++;
  }
  return concat(parts);
}

describe("memory hygiene", () => {
  test("no pattern or replacement byte remains after streams end and the set is disposed", () => {
    const engine = createWasmEngine();
    const specs = secretSpecs(40);
    const secrets = specs.flatMap((s) => [s.pattern, s.replacement]);
    const set = engine.compile(specs);
    // The scan can fail: while the set is alive its bytes are in memory.
    expect(leftovers(engine, secrets)).toBe(secrets.length);
    const body = bodyWith(specs, 300_000);
    const want = referenceEngine.replaceAll(referenceEngine.compile(specs), body);
    expect(engine.replaceAll(set, body)).toEqual(want);
    expect(streamAll(engine, set, body, 1000)).toEqual(want);
    expect(streamAll(engine, set, body.subarray(0, 5000), 1)).toEqual(
      referenceEngine.replaceAll(referenceEngine.compile(specs), body.subarray(0, 5000)),
    );
    set.dispose();
    expect(leftovers(engine, secrets)).toBe(0);
  });

  test("the body's bytes do not outlive a push, and abort zeroes the carry", () => {
    const engine = createWasmEngine();
    const specs = [{ pattern: randomBytes(300), replacement: randomBytes(20) }];
    const set = engine.compile(specs);
    const middle = randomBytes(64);
    const tail = randomBytes(64);
    const s = engine.openStream(set);
    s.push(concat([randomBytes(5000), middle, randomBytes(5000), tail]));
    // Decided bytes are wiped from the work buffer; the undecided tail is held as the carry.
    expect(inMemory(engine, middle)).toBe(false);
    expect(inMemory(engine, tail)).toBe(true);
    s.abort();
    expect(inMemory(engine, tail)).toBe(false);
    set.dispose();
  });

  test("end() zeroes the carry", () => {
    const engine = createWasmEngine();
    const set = engine.compile([{ pattern: randomBytes(200), replacement: randomBytes(20) }]);
    const tail = randomBytes(100);
    const s = engine.openStream(set);
    s.push(concat([randomBytes(1000), tail]));
    expect(inMemory(engine, tail)).toBe(true);
    s.end();
    expect(inMemory(engine, tail)).toBe(false);
    set.dispose();
  });

  test("wipeAll zeroes everything, invalidates sets and streams, and the engine keeps working", () => {
    const engine = createWasmEngine();
    const specs = secretSpecs(30);
    const secrets = specs.flatMap((s) => [s.pattern, s.replacement]);
    const a = engine.compile(specs);
    const b = engine.compile(secretSpecs(5));
    const open = engine.openStream(a);
    open.push(bodyWith(specs, 10_000));
    engine.wipeAll();
    expect(leftovers(engine, secrets)).toBe(0);
    // Only the module's static data (no secrets) may be non-zero: the heap is all zeros.
    const heapStart = (engine as unknown as { heapStart(): number }).heapStart();
    expect(heapStart).toBeLessThan(4096);
    expect(new Uint8Array(engine.memory.buffer, heapStart).some((x) => x !== 0)).toBe(false);
    expect(() => open.push(new Uint8Array(10))).toThrow("pattern set was disposed");
    expect(() => engine.openStream(b)).toThrow("pattern set was disposed");
    const again = engine.compile(specs);
    const body = bodyWith(specs, 20_000);
    expect(engine.replaceAll(again, body)).toEqual(
      referenceEngine.replaceAll(referenceEngine.compile(specs), body),
    );
    again.dispose();
    expect(leftovers(engine, secrets)).toBe(0);
  });

  test("a set disposed under an open stream wipes that stream's carry", () => {
    const engine = createWasmEngine();
    const set = engine.compile([{ pattern: randomBytes(200), replacement: randomBytes(20) }]);
    const tail = randomBytes(100);
    const s = engine.openStream(set);
    s.push(concat([randomBytes(1000), tail]));
    set.dispose();
    expect(inMemory(engine, tail)).toBe(false);
    expect(() => s.end()).toThrow("pattern set was disposed");
  });
});

describe("lent output (pushLent)", () => {
  const allZero = (view: Uint8Array) => !new Uint8Array(view.buffer).some((x) => x !== 0);

  /** A stream that has lent a view holding a replacement (a real value on the swap path). */
  function lentWithSecret(engine: WasmEngine) {
    const spec = { pattern: randomBytes(24), replacement: randomBytes(40) };
    const set = engine.compile([spec]);
    const s = engine.openStream(set);
    const view = s.pushLent(concat([randomBytes(500), spec.pattern, randomBytes(500)]));
    expect(Buffer.from(view).indexOf(spec.replacement)).toBeGreaterThanOrEqual(0);
    return { spec, set, s, view };
  }

  test("end, abort, a disposed set and wipeAll each zero the lent buffer", () => {
    const engine = createWasmEngine();
    for (const finish of [
      (x: ReturnType<typeof lentWithSecret>) => x.s.end(),
      (x: ReturnType<typeof lentWithSecret>) => x.s.abort(),
      (x: ReturnType<typeof lentWithSecret>) => x.set.dispose(),
      () => engine.wipeAll(),
    ]) {
      const x = lentWithSecret(engine);
      expect(allZero(x.view)).toBe(false);
      finish(x);
      expect(allZero(x.view)).toBe(true);
      x.set.dispose();
    }
  });

  test("another stream ending zeroes what a stream still open left in the lent buffer", () => {
    const engine = createWasmEngine();
    const x = lentWithSecret(engine);
    const other = engine.openStream(x.set);
    other.pushLent(randomBytes(10));
    other.end();
    expect(allZero(x.view)).toBe(true);
    // The open stream goes on, its carry untouched: a pattern split across the pushes.
    const [head, rest] = [x.spec.pattern.subarray(0, 10), x.spec.pattern.subarray(10)];
    const out = concat([x.s.pushLent(head).slice(), x.s.pushLent(rest).slice(), x.s.end()]);
    expect(Buffer.from(out).indexOf(x.spec.replacement)).toBeGreaterThanOrEqual(0);
    expect(Buffer.from(out).indexOf(x.spec.pattern)).toBe(-1);
    x.set.dispose();
  });

  test("an output too big for the lent buffer grows it and zeroes the old one", () => {
    const engine = createWasmEngine();
    const x = lentWithSecret(engine);
    const big = x.s.pushLent(randomBytes(1 << 20));
    expect(big.buffer).not.toBe(x.view.buffer);
    expect(allZero(x.view)).toBe(true);
    x.s.end();
    expect(allZero(big)).toBe(true);
    x.set.dispose();
  });

  test("property: owned output never changes under a slow consumer while lent output is reused", () => {
    // One stream's owned chunks are kept unread while another stream on the same engine lends
    // its output chunk after chunk; every kept chunk must still hold what it held when made.
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 8 }),
        fc.array(fc.integer({ min: 0, max: 3000 }), { minLength: 1, maxLength: 30 }),
        fc.integer(),
        (count, sizes, seed) => {
          const engine = createWasmEngine();
          const r = rng(seed);
          const specs = Array.from({ length: count }, () => ({
            pattern: randomBytes(8 + (r() % 40)),
            replacement: randomBytes(r() % 80),
          }));
          const set = engine.compile(specs);
          const owned = engine.openStream(set);
          const lending = engine.openStream(set);
          const inputs = sizes.map((n) =>
            concat([randomBytes(n), specs[r() % count]!.pattern, randomBytes(r() % 50)]),
          );
          const kept: { chunk: Uint8Array; snapshot: Uint8Array }[] = [];
          const lentCopies: Uint8Array[] = [];
          for (const input of inputs) {
            const chunk = owned.push(input);
            kept.push({ chunk, snapshot: chunk.slice() });
            lentCopies.push(lending.pushLent(input).slice());
          }
          const last = owned.end();
          kept.push({ chunk: last, snapshot: last.slice() });
          lentCopies.push(lending.end());
          for (const k of kept) expect(k.chunk).toEqual(k.snapshot);
          const want = referenceEngine.replaceAll(referenceEngine.compile(specs), concat(inputs));
          expect(concat(kept.map((k) => k.chunk))).toEqual(want.output);
          expect(concat(lentCopies)).toEqual(want.output);
          expect(lending.replacements).toBe(want.replacements);
          set.dispose();
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("every byte value in the patterns", () => {
  test("a value starting with 0xff is found after a branching node that has no 0xff child", () => {
    // 257 byte classes (256 values and "in no pattern"): the class table once held them in a
    // byte, so 0xff fell into class 0, whose entry in a dense row was never filled from the
    // failure links. Found by random sets of 500 values (about one in 400 missed one).
    const every = Array.from({ length: 16 }, (_, i) => ({
      pattern: Uint8Array.from({ length: 16 }, (_, j) => 16 * i + j),
      replacement: new Uint8Array(16),
    }));
    const branch = [1, 2].map((b) => ({
      pattern: Uint8Array.from([0x41, b, ...new Array(14).fill(0x42)]),
      replacement: new Uint8Array(16).fill(0x2a),
    }));
    const value = Uint8Array.from([0xff, ...new Array(15).fill(0x43)]);
    const specs = [
      ...every,
      ...branch,
      { pattern: value, replacement: new TextEncoder().encode("[REDACTED]") },
    ];
    const input = concat([new TextEncoder().encode("xA"), value, new TextEncoder().encode("y")]);
    const want = referenceEngine.replaceAll(referenceEngine.compile(specs), input);
    expect(new TextDecoder().decode(want.output)).toBe("xA[REDACTED]y");
    // Both ways a scan runs: the automaton over every byte, and the skip scan that starts it
    // only where a value may begin.
    for (const engine of [createWasmEngine(undefined, { disableSkip: true }), createWasmEngine()]) {
      const set = engine.compile(specs);
      expect(engine.replaceAll(set, input)).toEqual(want);
      const s = engine.openStream(set);
      expect(concat([s.push(input), s.end()])).toEqual(want.output);
      set.dispose();
    }
  });
});

describe("concurrency inside one instance", () => {
  test("several sets alive at once, streams interleaved, one disposed midway", () => {
    const engine = createWasmEngine();
    const specsList = [secretSpecs(5), secretSpecs(50), secretSpecs(500)];
    const sets = specsList.map((s) => engine.compile(s));
    const bodies = specsList.map((s) => bodyWith(s, 200_000));
    const streams = sets.map((set) => engine.openStream(set));
    const outs: Uint8Array[][] = [[], [], []];
    for (let off = 0; off < 200_000; off += 7777) {
      for (let k = 0; k < 3; k++)
        outs[k]!.push(streams[k]!.push(bodies[k]!.subarray(off, off + 7777)));
      if (off > 100_000 && !streams[1]!.replacements) throw new Error("stream 1 found nothing");
    }
    // Finish the rest of every body, then dispose set 1 while 0 and 2 keep streaming.
    for (let k = 0; k < 3; k++) {
      const done = Math.ceil(200_000 / 7777) * 7777;
      outs[k]!.push(streams[k]!.push(bodies[k]!.subarray(done)));
    }
    outs[1]!.push(streams[1]!.end());
    sets[1]!.dispose();
    for (const k of [0, 2]) outs[k]!.push(streams[k]!.end());
    for (let k = 0; k < 3; k++) {
      const want = referenceEngine.replaceAll(referenceEngine.compile(specsList[k]!), bodies[k]!);
      expect({ output: concat(outs[k]!), replacements: streams[k]!.replacements }).toEqual(want);
    }
    sets[0]!.dispose();
    sets[2]!.dispose();
  });

  test("300 streams open at once on one set, pushed round-robin with ragged chunks", () => {
    const engine = createWasmEngine();
    const specs = secretSpecs(20);
    const set = engine.compile(specs);
    const ref = referenceEngine.compile(specs);
    const bodies = Array.from({ length: 300 }, (_, i) => bodyWith(specs, 500 + i * 7));
    const streams = bodies.map(() => engine.openStream(set));
    const outs: Uint8Array[][] = bodies.map(() => []);
    const offs = bodies.map(() => 0);
    const r = rng(99);
    while (offs.some((o, i) => o < bodies[i]!.length)) {
      for (let i = 0; i < bodies.length; i++) {
        const n = 1 + (r() % 97);
        outs[i]!.push(streams[i]!.push(bodies[i]!.subarray(offs[i]!, offs[i]! + n)));
        offs[i] = Math.min(bodies[i]!.length, offs[i]! + n);
      }
    }
    for (let i = 0; i < bodies.length; i++) {
      outs[i]!.push(streams[i]!.end());
      const want = referenceEngine.replaceAll(ref, bodies[i]!);
      expect({ output: concat(outs[i]!), replacements: streams[i]!.replacements }).toEqual(want);
    }
    set.dispose();
  });
});

describe("big bodies", () => {
  // Tokens use A-Z0-9 only and the filler a-z, space and JSON punctuation, so the expected
  // output is the input with each planted token swapped for its replacement.
  const TOKEN = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const FILLER = 'abcdefghijklmnopqrstuvwxyz ":,{}';
  function tokens(n: number, seed: number, minLen: number, maxLen: number): Uint8Array[] {
    const r = rng(seed);
    const seen = new Set<string>();
    const out: Uint8Array[] = [];
    while (out.length < n) {
      const len = minLen + (r() % (maxLen - minLen + 1));
      const t = Uint8Array.from({ length: len }, () => TOKEN.charCodeAt(r() % TOKEN.length));
      const k = t.join();
      if (!seen.has(k)) {
        seen.add(k);
        out.push(t);
      }
    }
    return out;
  }
  function filler(n: number, r: () => number): Uint8Array {
    return Uint8Array.from({ length: n }, () => FILLER.charCodeAt(r() % FILLER.length));
  }

  test("8 MiB body, tokens straddling every internal piece boundary and chunk boundary", () => {
    const engine = createWasmEngine();
    const pats = tokens(50, 1, 20, 64);
    const repl = pats.map((_, i) => new TextEncoder().encode(`<${i}>`));
    const set = engine.compile(pats.map((pattern, i) => ({ pattern, replacement: repl[i]! })));
    const r = rng(2);
    const inParts: Uint8Array[] = [];
    const outParts: Uint8Array[] = [];
    let at = 0;
    let count = 0;
    const size = 8 * 1024 * 1024;
    // Boundaries of the engine's pieces (whole buffer) and of 64 KiB + 1 chunks (streamed).
    const marks = new Set<number>();
    for (let m = PIECE; m < size; m += PIECE) marks.add(m);
    for (let m = 65537; m < size; m += 65537) marks.add(m);
    const sorted = [...marks].sort((a, b) => a - b);
    for (const m of sorted) {
      const i = r() % pats.length;
      const p = pats[i]!;
      const start = m - 1 - (r() % (p.length - 1)); // p covers bytes m-1 and m
      if (start < at) continue;
      const f = filler(start - at, r);
      inParts.push(f, p);
      outParts.push(f, repl[i]!);
      at = start + p.length;
      count++;
    }
    const tail = filler(size - at, r);
    inParts.push(tail);
    outParts.push(tail);
    const input = concat(inParts);
    const want = { output: concat(outParts), replacements: count };
    expect(count).toBeGreaterThan(150);
    expect(engine.replaceAll(set, input)).toEqual(want);
    expect(engine.replaceAllInto(set, input, new Uint8Array(PIECE))).toEqual(want);
    expect(streamAll(engine, set, input, 65537)).toEqual(want);
    expect(streamAll(engine, set, input, 16 * 1024)).toEqual(want);
    set.dispose();
  });

  test("whole into a reused buffer: a clean body comes back uncopied, a late match copies what it kept", () => {
    const engine = createWasmEngine();
    const [token] = tokens(1, 3, 24, 24);
    for (const replacement of [new TextEncoder().encode("[REDACTED]"), new Uint8Array(0)]) {
      const set = engine.compile([{ pattern: token!, replacement }]);
      const clean = filler(3 * PIECE + 1000, rng(4));
      const into = new Uint8Array(4 * PIECE);
      const r = engine.replaceAllInto(set, clean, into);
      expect(r.output).toBe(clean);
      expect(r.replacements).toBe(0);
      expect(into.every((b) => b === 0)).toBe(true);
      // A match on the last piece's boundary: everything before it was kept uncopied.
      for (const at of [0, 3 * PIECE - 5, clean.length - token!.length]) {
        const input = clean.slice();
        input.set(token!, at);
        const want = concat([
          input.subarray(0, at),
          replacement,
          input.subarray(at + token!.length),
        ]);
        expect(engine.replaceAllInto(set, input, into)).toEqual({ output: want, replacements: 1 });
      }
      set.dispose();
    }
  });

  for (const [name, options] of [
    ["skip prefilter", {}],
    ["automaton only", { disableSkip: true }],
    ["trie walk", { forceTrieWalk: true, disableSkip: true }],
  ] as const) {
    test(`${name}: more matches per piece than the record buffer holds`, () => {
      const engine = createWasmEngine(undefined, options);
      const set = engine.compile([
        {
          pattern: new TextEncoder().encode("QQQQQQQQ"),
          replacement: new TextEncoder().encode("x"),
        },
      ]);
      const input = new Uint8Array(1024 * 1024).fill(0x51); // 131,072 back-to-back matches
      const want = { output: new Uint8Array(131072).fill(0x78), replacements: 131072 };
      expect(engine.replaceAll(set, input)).toEqual(want);
      expect(streamAll(engine, set, input, 300_001)).toEqual(want);
      set.dispose();
    });
  }

  test("replacements larger than a piece", () => {
    const engine = createWasmEngine();
    const big = randomBytes(PIECE * 2 + 5);
    const set = engine.compile([
      { pattern: new TextEncoder().encode("EXPAND-ME"), replacement: big },
    ]);
    const input = new TextEncoder().encode("a EXPAND-ME b EXPAND-ME c");
    const r = engine.replaceAll(set, input);
    const enc = new TextEncoder();
    expect(r).toEqual({
      output: concat([enc.encode("a "), big, enc.encode(" b "), big, enc.encode(" c")]),
      replacements: 2,
    });
    set.dispose();
  });
});

describe("adversarial and huge sets", () => {
  const engines: [string, WasmEngine][] = [
    ["default", createWasmEngine()],
    ["trie-walk", createWasmEngine(undefined, { forceTrieWalk: true })],
  ];
  for (const [name, engine] of engines) {
    test(`${name}: text dense with near-matches and some matches agrees with the reference`, () => {
      const pats = randomPatterns(100, 5);
      const specs = pats.map((pattern, i) => ({ pattern, replacement: Uint8Array.of(i) }));
      const near = adversarialHaystack(96 * 1024, pats, 11);
      // Sprinkle whole patterns in so the pending/restart logic runs too.
      const parts: Uint8Array[] = [];
      for (let off = 0; off < near.length; off += 4000)
        parts.push(near.subarray(off, off + 4000), pats[(off / 4000) % 100]!);
      const input = concat(parts);
      const want = referenceEngine.replaceAll(referenceEngine.compile(specs), input);
      const set = engine.compile(specs);
      expect(want.replacements).toBeGreaterThanOrEqual(parts.length / 2);
      expect(engine.replaceAll(set, input)).toEqual(want);
      expect(streamAll(engine, set, input, 4093)).toEqual(want);
      set.dispose();
    });
  }

  for (const [name, engine] of engines) {
    test(`${name}: 20,000 random binary patterns (256 byte classes) stay exact`, () => {
      const r = rng(123);
      // Every pattern starts with 0xff and has no other 0xff; the filler has none either, so each
      // planted pattern is the only match at its position.
      const pats: Uint8Array[] = [];
      const seen = new Set<string>();
      while (pats.length < 20_000) {
        const p = Uint8Array.from({ length: 30 }, (_, k) => (k === 0 ? 0xff : r() % 0xff));
        const key = p.join();
        if (!seen.has(key)) {
          seen.add(key);
          pats.push(p);
        }
      }
      const set = engine.compile(
        pats.map((pattern) => ({ pattern, replacement: Uint8Array.of(0xff, 0xff) })),
      );
      const inParts: Uint8Array[] = [];
      const outParts: Uint8Array[] = [];
      for (let i = 0; i < 2000; i++) {
        const f = Uint8Array.from({ length: r() % 50 }, () => r() % 0xff);
        const p = pats[r() % pats.length]!;
        inParts.push(f, p);
        outParts.push(f, Uint8Array.of(0xff, 0xff));
      }
      const input = concat(inParts);
      const want = { output: concat(outParts), replacements: 2000 };
      expect(engine.replaceAll(set, input)).toEqual(want);
      expect(streamAll(engine, set, input, 1001)).toEqual(want);
      set.dispose();
    });
  }

  test("1,000 short patterns (8..15 bytes) agree with the reference", () => {
    const engine = createWasmEngine();
    const pats = randomPatterns(1000, 77, 8, 15);
    const specs = pats.map((pattern) => ({ pattern, replacement: new Uint8Array(0) }));
    const parts: Uint8Array[] = [];
    const r = rng(8);
    for (let i = 0; i < 400; i++) {
      const p = pats[r() % pats.length]!;
      parts.push(p.subarray(0, r() % p.length), pats[r() % pats.length]!);
    }
    const input = concat(parts);
    const want = referenceEngine.replaceAll(referenceEngine.compile(specs), input);
    const set = engine.compile(specs);
    expect(engine.replaceAll(set, input)).toEqual(want);
    expect(streamAll(engine, set, input, 333)).toEqual(want);
    set.dispose();
  });
});

describe("bounded memory", () => {
  test("linear memory does not grow with body size or with compile/dispose cycles", () => {
    const engine = createWasmEngine();
    const specs = secretSpecs(100);
    const first = engine.compile(specs);
    const s = engine.openStream(first);
    s.push(randomBytes(300_000));
    const settled = engine.memory.buffer.byteLength;
    const chunk = randomBytes(1024 * 1024);
    for (let i = 0; i < 32; i++) s.push(chunk); // 32 MiB through one stream
    s.end();
    first.dispose();
    for (let i = 0; i < 100; i++) {
      const set = engine.compile(secretSpecs(100));
      const streams = Array.from({ length: 20 }, () => engine.openStream(set));
      for (const st of streams) st.push(randomBytes(1000));
      for (const st of streams) st.end();
      set.dispose();
    }
    expect(engine.memory.buffer.byteLength).toBe(settled);
  });
});

test("engines are independent instances", () => {
  const a = createWasmEngine();
  const b = createWasmEngine();
  expect(a.memory).not.toBe(b.memory);
  const set = a.compile([
    { pattern: new TextEncoder().encode("abcdefgh"), replacement: new Uint8Array(0) },
  ]);
  expect(() => b.openStream(set)).toThrow(TypeError);
  set.dispose();
});

describe("decoded views", () => {
  const enc = new TextEncoder();
  // Filler that cannot start an escape (a `\` or `&` before an escaped value changes it).
  const letters = (n: number) => randomBytes(n).map((b) => 0x41 + (b % 26));
  const escaped = (p: Uint8Array) =>
    enc.encode(Array.from(p, (b) => `\\u${b.toString(16).padStart(4, "0")}`).join(""));

  test("the raw carry, the view and the work buffers hold no body byte after end or abort", () => {
    const engine = createWasmEngine();
    const value = enc.encode("tok-Q7f3Zp9Lx2Vb8Nc4");
    const set = engine.compile([{ pattern: value, replacement: enc.encode("[R]") }], {
      views: true,
    });
    const marker = enc.encode("marker-never-a-match-0123456789");
    // A body ending in an escaped, unfinished value: held as the raw carry.
    const body = concat([enc.encode("x".repeat(5000)), marker, escaped(value.subarray(0, 10))]);
    const s = engine.openStream(set);
    const out = s.push(body);
    expect(inMemory(engine, escaped(value.subarray(0, 10)).subarray(0, 40))).toBe(true);
    expect(inMemory(engine, marker)).toBe(false);
    s.abort();
    expect(inMemory(engine, escaped(value.subarray(0, 10)).subarray(0, 40))).toBe(false);
    out.fill(0);
    const whole = engine.replaceAll(set, concat([body, escaped(value.subarray(10))]));
    expect(whole.replacements).toBe(1);
    expect(inMemory(engine, marker)).toBe(false);
    set.dispose();
    expect(inMemory(engine, value)).toBe(false);
  });

  test("replacements much longer than what they replace (more than a piece of output)", () => {
    const engine = createWasmEngine();
    const specs = [{ pattern: enc.encode("short-pat"), replacement: randomBytes(4096) }];
    const input = concat(
      Array.from({ length: 60 }, (_, i) =>
        concat([letters(50 + i), i % 2 ? escaped(specs[0]!.pattern) : specs[0]!.pattern]),
      ),
    );
    const want = referenceEngine.replaceAll(referenceEngine.compile(specs, { views: true }), input);
    expect(want.replacements).toBe(60);
    const set = engine.compile(specs, { views: true });
    expect(engine.replaceAll(set, input)).toEqual(want);
    expect(streamAll(engine, set, input, 7000)).toEqual(want);
    set.dispose();
  });

  test("a megabyte of line breaks is not held (two at most are dropped in a row)", () => {
    const engine = createWasmEngine();
    const set = engine.compile(
      [{ pattern: enc.encode("abcdefghij"), replacement: enc.encode("") }],
      {
        views: true,
      },
    );
    const s = engine.openStream(set);
    let emitted = s.push(enc.encode("abcdefghi")).length;
    const breaks = new Uint8Array(1 << 20).fill(0x0a);
    for (let i = 0; i < 4; i++) emitted += s.push(breaks).length;
    expect(emitted).toBeGreaterThan(4 * breaks.length - 1024);
    const rest = s.end();
    expect(emitted + rest.length).toBe(9 + 4 * breaks.length);
    set.dispose();
  });

  test("the longest carry (a 512-byte value's prefix spelled with long tokens) fits and agrees", () => {
    const engine = createWasmEngine();
    const value = new Uint8Array(512).fill(0x6b); // "kkk…"
    const specs = [{ pattern: value, replacement: enc.encode("[K]") }];
    const spelled =
      "\n                \n                &#x0000000026;CounterClockwiseContourIntegral;&#x000000006B;";
    // 511 characters of the value, each behind two indented line breaks and long tokens: the
    // view holds a 511-byte partial match, so the raw carry is as long as it can be.
    const unit = "\n                \n                &#x000000006B;";
    const input = enc.encode(`${spelled.repeat(3)}${unit.repeat(511)}`);
    const set = engine.compile(specs, { views: true });
    const want = referenceEngine.replaceAll(referenceEngine.compile(specs, { views: true }), input);
    expect(engine.replaceAll(set, input)).toEqual(want);
    expect(streamAll(engine, set, input, 4096)).toEqual(want);
    expect(streamAll(engine, set, concat([input, enc.encode("k")]), 50_000).replacements).toBe(1);
    set.dispose();
  });

  test("linear memory does not grow with view streams", () => {
    const engine = createWasmEngine();
    const cycle = () => {
      const set = engine.compile(secretSpecs(50), { views: true });
      const streams = Array.from({ length: 20 }, () => engine.openStream(set));
      for (const st of streams) st.push(randomBytes(1000));
      for (const st of streams) st.end();
      set.dispose();
    };
    const first = engine.compile(secretSpecs(50), { views: true });
    const s = engine.openStream(first);
    s.push(randomBytes(300_000));
    // Sets differ in size (random patterns holding escapes gain decoded spellings): let the
    // size classes fill once, then nothing may grow.
    for (let i = 0; i < 20; i++) cycle();
    const settled = engine.memory.buffer.byteLength;
    for (let i = 0; i < 16; i++) s.push(randomBytes(1 << 20));
    s.end();
    first.dispose();
    for (let i = 0; i < 50; i++) cycle();
    expect(engine.memory.buffer.byteLength).toBe(settled);
  });
});
