// Tests of the matcher worker pool against the reference oracle: random chunkings, concurrent
// streams, huge and tiny chunks, backpressure and bounded memory, set changes mid-stream, worker
// crashes (fail closed) and close(). Runs on every engine the workers can load.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import fc from "fast-check";
import { referenceEngine } from "../reference.ts";
import { MatcherError, type PatternSpec } from "../types.ts";
import { type EngineName, MatcherPool, type ScanStream } from "./pool.ts";

const enc = new TextEncoder();
const dec = (bytes: Uint8Array) => new TextDecoder().decode(bytes);

function spec(pattern: string, replacement: string): PatternSpec {
  return { pattern: enc.encode(pattern), replacement: enc.encode(replacement) };
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function oracle(specs: readonly PatternSpec[], input: Uint8Array) {
  const set = referenceEngine.compile(specs);
  try {
    return referenceEngine.replaceAll(set, input);
  } finally {
    set.dispose();
  }
}

/** Cuts `input` at the given sizes (cycled); every piece is a fresh, transferable buffer. */
function cut(input: Uint8Array, sizes: readonly number[]): Uint8Array[] {
  const out: Uint8Array[] = [];
  let at = 0;
  let i = 0;
  while (at < input.length) {
    const n = Math.max(1, sizes[i++ % sizes.length] ?? 1);
    out.push(input.slice(at, at + n));
    at += n;
  }
  return out;
}

/** Writes `chunks` while reading concurrently; resolves with the output and the result. */
async function run(stream: ScanStream, chunks: readonly Uint8Array[]) {
  const parts: Uint8Array[] = [];
  const reading = (async () => {
    for await (const c of stream.readable) parts.push(c);
  })();
  // A failed stream rejects `reading` while the writes are still awaited; report it below.
  reading.catch(() => {});
  const writer = stream.writable.getWriter();
  for (const c of chunks) await writer.write(c);
  await writer.close();
  await reading;
  return { output: concat(parts), result: await stream.result };
}

/**
 * The rejection reason of `p` (or a marker if it fulfilled). Used instead of
 * `expect(p).rejects`, which under bun 1.4.5 sometimes never settled for promises that a
 * worker's message rejects.
 */
async function failureOf(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => "fulfilled",
    (e: unknown) => e,
  );
}

/** Resolves when `p` is still pending after the event loop has drained once. */
async function isPending(p: Promise<unknown>): Promise<boolean> {
  let settled = false;
  p.then(
    () => {
      settled = true;
    },
    () => {
      settled = true;
    },
  );
  await new Promise((r) => setImmediate(r));
  return !settled;
}

/** Polls until `cond` holds (liveness wait, not a timing assertion). */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; i < 2000 && !cond(); i++) await Bun.sleep(5);
  expect(cond()).toBe(true);
}

// Random sets over a small alphabet so patterns overlap, share prefixes and occur by chance.
const alphabet = enc.encode("ab-_x");
const byteFrom = fc.constantFrom(...alphabet);
const patternArb = fc.uint8Array({ minLength: 8, maxLength: 24 }).map((raw) => {
  return Uint8Array.from(raw, (b) => alphabet[b % alphabet.length]!);
});
const specsArb = fc
  .uniqueArray(patternArb, {
    minLength: 1,
    maxLength: 6,
    selector: (p) => Array.from(p).join(","),
  })
  .chain((patterns) =>
    fc.tuple(
      fc.constant(patterns),
      fc.array(fc.uint8Array({ maxLength: 12 }), {
        minLength: patterns.length,
        maxLength: patterns.length,
      }),
    ),
  )
  .map(([patterns, reps]) =>
    patterns.map((pattern, i) => ({ pattern, replacement: reps[i] ?? new Uint8Array(0) })),
  );

/** An input made of random filler and planted patterns (whole, adjacent or cut short). */
function inputArb(specs: readonly PatternSpec[]) {
  const piece = fc.oneof(
    fc.array(byteFrom, { maxLength: 40 }).map((b) => Uint8Array.from(b)),
    fc.constantFrom(...specs.map((s) => s.pattern)),
    fc
      .tuple(fc.constantFrom(...specs.map((s) => s.pattern)), fc.nat())
      .map(([p, k]) => p.subarray(0, k % p.length)),
  );
  return fc.array(piece, { maxLength: 30 }).map(concat);
}

const engines: EngineName[] = ["wasm", "reference"];

for (const engine of engines) {
  describe(`MatcherPool (${engine} engine)`, () => {
    let pool: MatcherPool;
    const base = [spec("SECRET-aaaaaaaa", "[A]"), spec("TOKEN-bbbbbbbbbbbb", "")];

    beforeAll(async () => {
      pool = await MatcherPool.start({ engine, size: 2, specs: base });
    });
    afterAll(async () => {
      await pool.close();
    });

    test("output equals the reference for random sets, inputs and chunkings", async () => {
      await fc.assert(
        fc.asyncProperty(
          specsArb.chain((specs) =>
            fc.tuple(
              fc.constant(specs),
              inputArb(specs),
              fc.array(fc.integer({ min: 1, max: 64 }), { minLength: 1, maxLength: 8 }),
            ),
          ),
          async ([specs, input, sizes]) => {
            await pool.setPatterns(specs);
            const expected = oracle(specs, input);
            const got = await run(pool.openStream(), cut(input, sizes));
            expect(got.output).toEqual(expected.output);
            expect(got.result.replacements).toBe(expected.replacements);
            const whole = await pool.replaceAll(input);
            expect(whole).toEqual(expected);
          },
        ),
        { numRuns: 60 },
      );
      await pool.setPatterns(base);
    });

    test("property: a slow reader never sees a chunk it holds change, with another stream running", async () => {
      // A reader that keeps every chunk it was given, reads at its own pace (the writer waits on
      // backpressure) while a second stream keeps the same worker's engine busy: whatever buffers
      // the engine and the pool reuse, a chunk once handed over must keep its bytes.
      const slow = await MatcherPool.start({
        engine,
        size: 1,
        readableHighWaterMark: 16 * 1024,
        streamInFlightBytes: 128 * 1024,
        maxMessageBytes: 64 * 1024,
      });
      const most = engine === "wasm" ? 400_000 : 12_000;
      try {
        await fc.assert(
          fc.asyncProperty(
            specsArb,
            fc.integer({ min: 1, max: most }),
            fc.array(fc.integer({ min: 1, max: 90_000 }), { minLength: 1, maxLength: 6 }),
            fc.integer(),
            async (specs, size, sizes, seed) => {
              await slow.setPatterns(specs);
              let x = seed >>> 0 || 1;
              const next = () => {
                x ^= x << 13;
                x ^= x >>> 17;
                x ^= x << 5;
                return x >>> 0;
              };
              // One spare byte: a view of the whole input never spans its buffer (not handed over).
              const input = new Uint8Array(new ArrayBuffer(size + 1), 0, size);
              for (let at = 0; at < size; ) {
                const p = specs[next() % specs.length]!.pattern;
                if (next() % 4 === 0 && at + p.length <= size) {
                  input.set(p, at);
                  at += p.length;
                } else input[at++] = alphabet[next() % alphabet.length]!;
              }
              const stream = slow.openStream();
              const busy = slow.openStream();
              const kept: { chunk: Uint8Array; snapshot: Uint8Array }[] = [];
              const reading = (async () => {
                for await (const chunk of stream.readable) {
                  kept.push({ chunk, snapshot: chunk.slice() });
                  // Read at a slow, uneven pace: queued output waits, the writer is held back.
                  if (next() % 3 === 0) await Bun.sleep(1);
                  else await new Promise((r) => setImmediate(r));
                }
              })();
              const other = run(busy, cut(input, [4096, 70_000]));
              const writer = stream.writable.getWriter();
              let at = 0;
              for (let i = 0; at < size; i++) {
                const n = Math.min(sizes[i % sizes.length]!, size - at);
                // Alternate views into the caller's buffer (copied) and whole buffers (handed over).
                await writer.write(
                  i % 2 === 0 ? input.subarray(at, at + n) : input.slice(at, at + n),
                );
                at += n;
              }
              await writer.close();
              await reading;
              const expected = oracle(specs, input);
              for (const k of kept) expect(k.chunk).toEqual(k.snapshot);
              expect(concat(kept.map((k) => k.chunk))).toEqual(expected.output);
              expect((await stream.result).replacements).toBe(expected.replacements);
              expect((await other).output).toEqual(expected.output);
            },
          ),
          { numRuns: engine === "wasm" ? 25 : 10 },
        );
      } finally {
        await slow.close();
      }
    });

    test("many concurrent streams, interleaved, stay independent", async () => {
      const inputs = Array.from({ length: 24 }, (_, i) =>
        enc.encode(
          `stream ${i}: ${"SECRET-aaaaaaaa ".repeat(i % 5)}xx${"TOKEN-bbbbbbbbbbbb".repeat(i % 3)}` +
            `${"filler ".repeat(50 * i)}SECRET-aaaa`,
        ),
      );
      const streams = inputs.map(() => pool.openStream());
      const writers = streams.map((s) => s.writable.getWriter());
      const outputs = streams.map((s) => Array.fromAsync(s.readable));
      const chunked = inputs.map((input, i) => cut(input, [1 + (i % 7), 3, 17 + i]));
      // Round-robin: one chunk of each stream in turn.
      for (let round = 0; chunked.some((c) => round < c.length); round++) {
        for (let i = 0; i < chunked.length; i++) {
          const c = chunked[i]![round];
          if (c) await writers[i]!.write(c);
        }
      }
      await Promise.all(writers.map((w) => w.close()));
      for (let i = 0; i < inputs.length; i++) {
        const expected = oracle(base, inputs[i]!);
        expect(concat(await outputs[i]!)).toEqual(expected.output);
        expect((await streams[i]!.result).replacements).toBe(expected.replacements);
      }
      expect(pool.stats().streamsOpen).toBe(0);
      expect(pool.stats().inFlightBytes).toBe(0);
    });

    test("a multi-MiB stream of tiny and huge chunks", async () => {
      const size = 3 << 20;
      const input = new Uint8Array(size);
      for (let i = 0; i < size; i++) input[i] = 97 + ((i * 7919) % 26);
      for (let at = 1000; at + 40 < size; at += 65_521) {
        input.set(base[(at >> 4) % 2]!.pattern, at);
      }
      const sizes = [1, 3, 2 << 20, 5, 70_000, 1, 300_000, 9];
      const expected = oracle(base, input);
      const got = await run(pool.openStream(), cut(input, sizes));
      expect(got.output.length).toBe(expected.output.length);
      expect(got.output).toEqual(expected.output);
      expect(got.result).toEqual({
        replacements: expected.replacements,
        bytesIn: size,
        bytesOut: expected.output.length,
      });
      // Views into a larger buffer are copied (never detached) and cut into messages.
      const views = await run(pool.openStream(), [
        input.subarray(0, 1_500_000),
        input.subarray(1_500_000),
      ]);
      expect(views.output).toEqual(expected.output);
      expect(input.length).toBe(size);
    });

    test("a whole-buffer chunk is handed over (detached); replaceAll never detaches", async () => {
      const chunk = enc.encode("x SECRET-aaaaaaaa y".repeat(2000));
      const stream = pool.openStream();
      const got = run(stream, [chunk]);
      expect((await got).result.replacements).toBe(2000);
      expect(chunk.byteLength).toBe(0);
      // Small chunks are coalesced (copied) but handed over all the same.
      const small = enc.encode("SECRET-aaaaaaaa");
      const view = enc.encode("xxSECRET-aaaaaaaaxx").subarray(2, 17);
      const both = await run(pool.openStream(), [small, view]);
      expect(dec(both.output)).toBe("[A][A]");
      expect(small.byteLength).toBe(0);
      expect(dec(view)).toBe("SECRET-aaaaaaaa");
      const input = enc.encode("SECRET-aaaaaaaa");
      expect((await pool.replaceAll(input)).output).toEqual(enc.encode("[A]"));
      expect(input).toEqual(enc.encode("SECRET-aaaaaaaa"));
    });

    test("message buffers come back from the worker zeroed and are reused; a failed stream's is zeroed", async () => {
      const solo = await MatcherPool.start({ engine, size: 1, specs: base });
      try {
        const secret = "SECRET-aaaaaaaa";
        const body = enc.encode(`${secret} x `.repeat(40_000));
        // Views (copied into message buffers) small enough to be coalesced, and big ones.
        const views = (size: number) => {
          const out: Uint8Array[] = [];
          for (let at = 0; at < body.length; at += size) out.push(body.subarray(at, at + size));
          return out;
        };
        for (const size of [4096, 200_000]) {
          const got = await run(solo.openStream(), views(size));
          expect(got.result.replacements).toBe(40_000);
        }
        const held = solo.buffers.held;
        expect(held).toBeGreaterThan(0);
        // Every free buffer is all zeros, and the next stream runs on them again.
        const free = Array.from({ length: held }, () => solo.buffers.take());
        for (const b of free) expect(new Uint8Array(b).every((x) => x === 0)).toBe(true);
        for (const b of free) solo.buffers.give(b);
        const again = await run(solo.openStream(), views(4096));
        expect(again.result.replacements).toBe(40_000);
        expect(solo.buffers.held).toBe(held);

        // A stream that fails with bytes coalesced (the first chunk in flight, the second
        // waiting for its answer): that buffer is zeroed before it is kept.
        const failing = solo.openStream();
        const writer = failing.writable.getWriter();
        await writer.write(enc.encode(`${secret} in flight`));
        await writer.write(enc.encode(`${secret} coalesced`));
        expect(solo.stats().pendingBytes).toBeGreaterThan(0);
        const before = solo.buffers.held;
        solo.crashWorkerForTest(0, "terminate");
        expect(await failureOf(failing.result)).toMatchObject({ code: "engine-failure" });
        expect(solo.buffers.held).toBe(before + 1);
        const after = Array.from({ length: solo.buffers.held }, () => solo.buffers.take());
        for (const b of after) expect(new Uint8Array(b).every((x) => x === 0)).toBe(true);
      } finally {
        await solo.close();
      }
      expect(solo.buffers.held).toBe(0);
    });

    test("the set in use when a stream opened stays its set; new streams get the new set", async () => {
      const old = pool.openStream();
      const oldOut = Array.fromAsync(old.readable);
      const oldWriter = old.writable.getWriter();
      await oldWriter.write(enc.encode("one SECRET-aaaaaaaa two NEW-PATTERN-1 SECR"));
      const next = [spec("NEW-PATTERN-1", "<n>"), spec("SECRET-aaaaaaaa", "<a>")];
      const genBefore = pool.stats().generation;
      await pool.setPatterns(next);
      expect(pool.stats().generation).toBe(genBefore + 1);
      const fresh = pool.openStream();
      const freshRun = run(fresh, [enc.encode("SECRET-aaaaaaaa NEW-PATTERN-1")]);
      await oldWriter.write(enc.encode("ET-aaaaaaaa end"));
      await oldWriter.close();
      expect(new TextDecoder().decode(concat(await oldOut))).toBe(
        "one [A] two NEW-PATTERN-1 [A] end",
      );
      expect(new TextDecoder().decode((await freshRun).output)).toBe("<a> <n>");
      await pool.setPatterns(base);
    });

    test("each worker zeroes an old set once its last stream ends, and never before", async () => {
      const solo = await MatcherPool.start({ engine, size: 1, specs: base });
      try {
        const first = solo.stats().generation;
        expect(await solo.inspectWorkerForTest(0)).toEqual({ gens: [first], streams: 0, wiped: 0 });
        const old = solo.openStream();
        const oldOut = Array.fromAsync(old.readable);
        const writer = old.writable.getWriter();
        await writer.write(enc.encode("SECRET-aaaa"));
        await solo.setPatterns([spec("ANOTHER-SECRET", "[B]")]);
        // The old set stays loaded for the stream that uses it.
        expect(await solo.inspectWorkerForTest(0)).toEqual({
          gens: [first, first + 1],
          streams: 1,
          wiped: 0,
        });
        await writer.write(enc.encode("aaaa ANOTHER-SECRET"));
        await writer.close();
        expect(dec(concat(await oldOut))).toBe("[A] ANOTHER-SECRET");
        expect(await solo.inspectWorkerForTest(0)).toEqual({
          gens: [first + 1],
          streams: 0,
          wiped: 1,
        });
        // A rejected set leaves nothing behind; an idle swap retires the old set at once.
        expect(await failureOf(solo.setPatterns([spec("tiny", "")]))).toBeInstanceOf(MatcherError);
        await solo.setPatterns(base);
        const state = await solo.inspectWorkerForTest(0);
        expect(state.gens).toEqual([solo.stats().generation]);
        expect(state.wiped).toBeGreaterThanOrEqual(2);
      } finally {
        await solo.close();
      }
    });

    test("named sets live side by side, can be dropped, and survive a worker crash", async () => {
      const solo = await MatcherPool.start({ engine, size: 1, specs: [] });
      try {
        expect(solo.patternSetNames()).toEqual([]);
        expect(() => solo.openStream()).toThrow(MatcherError);
        expect(await failureOf(solo.setPatterns([]))).toMatchObject({ code: "empty-set" });
        await solo.setPatterns([spec("dummy-token-0001", "REAL-SECRET-0001")], "swap:api");
        await solo.setPatterns([spec("REAL-SECRET-0001", "[REDACTED]")], "redact");
        expect(solo.patternSetNames().sort()).toEqual(["redact", "swap:api"]);
        const text = enc.encode("auth dummy-token-0001 echo REAL-SECRET-0001");
        expect(dec((await solo.replaceAll(text, "swap:api")).output)).toBe(
          "auth REAL-SECRET-0001 echo REAL-SECRET-0001",
        );
        expect(dec((await run(solo.openStream("redact"), [text.slice()])).output)).toBe(
          "auth dummy-token-0001 echo [REDACTED]",
        );
        // A crash: the replacement worker gets every named set back.
        const doomed = solo.openStream("redact");
        const doomedOut = Array.fromAsync(doomed.readable).then(
          () => "clean end",
          (e: unknown) => (e as MatcherError).code,
        );
        await doomed.writable.getWriter().write(enc.encode("REAL-SECRET-0001"));
        solo.crashWorkerForTest(0, "exit");
        expect(await doomedOut).toBe("engine-failure");
        expect(dec((await solo.replaceAll(text, "redact")).output)).toBe(
          "auth dummy-token-0001 echo [REDACTED]",
        );
        expect(dec((await solo.replaceAll(text, "swap:api")).output)).toBe(
          "auth REAL-SECRET-0001 echo REAL-SECRET-0001",
        );
        // Dropping a name: a stream already on it finishes; no new stream opens on it.
        const running = solo.openStream("swap:api");
        const runningOut = Array.fromAsync(running.readable);
        const writer = running.writable.getWriter();
        await writer.write(enc.encode("dummy-token-"));
        await solo.dropPatterns("swap:api");
        expect(() => solo.openStream("swap:api")).toThrow(MatcherError);
        expect((await solo.inspectWorkerForTest(0)).gens.length).toBe(2);
        await writer.write(enc.encode("0001"));
        await writer.close();
        expect(dec(concat(await runningOut))).toBe("REAL-SECRET-0001");
        expect((await solo.inspectWorkerForTest(0)).gens.length).toBe(1);
        expect(solo.stats().patternSets).toBe(1);
      } finally {
        await solo.close();
      }
    });

    test("setPatterns rejects an invalid set with the engine's error and keeps the old set", async () => {
      const bad = [
        [],
        [spec("short", "x")],
        [spec("DUPLICATE-1", "x"), spec("DUPLICATE-1", "y")],
        [{ pattern: new Uint8Array(513).fill(65), replacement: new Uint8Array(0) }],
      ];
      for (const specs of bad) {
        let expected: unknown;
        try {
          referenceEngine.compile(specs);
        } catch (e) {
          expected = e;
        }
        expect(expected).toBeInstanceOf(MatcherError);
        const err = await pool.setPatterns(specs).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(MatcherError);
        const { code, message, index } = err as MatcherError;
        const want = expected as MatcherError;
        expect({ code, message, index }).toEqual({
          code: want.code,
          message: want.message,
          index: want.index,
        });
        for (const s of specs) {
          if (s.pattern.length > 0)
            expect(message).not.toContain(new TextDecoder().decode(s.pattern));
        }
      }
      expect((await pool.replaceAll(enc.encode("SECRET-aaaaaaaa"))).output).toEqual(
        enc.encode("[A]"),
      );
    });

    test("backpressure: a reader that does not read holds the writer back; memory stays bounded", async () => {
      const chunkSize = 32 * 1024;
      const capped = await MatcherPool.start({
        engine,
        size: 1,
        specs: base,
        streamInFlightBytes: 64 * 1024,
        readableHighWaterMark: 64 * 1024,
      });
      try {
        const stream = capped.openStream();
        const writer = stream.writable.getWriter();
        const input = new Uint8Array(4 << 20).fill(120);
        input.set(base[0]!.pattern, 100_000);
        const chunks = cut(input, [chunkSize]);
        let accepted = 0;
        const writes: Promise<void>[] = [];
        for (const c of chunks) {
          await until(
            () => capped.stats().inFlightBytes === 0 || capped.stats().waitingWriters > 0,
          );
          if (await isPending(writer.ready)) break;
          writes.push(writer.write(c));
          accepted += chunkSize;
        }
        // Everything posted has come back and sits unread; the writer is still held back.
        await until(() => capped.stats().inFlightBytes === 0);
        expect(await isPending(writer.ready)).toBe(true);
        // The documented bound: in flight (64 KiB, which also caps a coalesced batch) + the
        // readable queue (64 KiB) + one coalescing batch (64 KiB) + the chunk being
        // transformed + one queued write; the engine's held-back window is < one chunk.
        const bound = 3 * 64 * 1024 + 3 * chunkSize;
        expect(accepted).toBeLessThanOrEqual(bound);
        expect(accepted).toBeLessThan(input.length);
        // Now read: everything flows and the output is right.
        const reading = Array.fromAsync(stream.readable);
        for (const c of chunks.slice(writes.length)) await writer.write(c);
        await writer.close();
        expect(concat(await reading)).toEqual(oracle(base, input).output);
      } finally {
        await capped.close();
      }
    });

    test("the pool-wide in-flight cap holds across streams", async () => {
      const cap = 96 * 1024;
      const capped = await MatcherPool.start({
        engine,
        size: 2,
        specs: base,
        poolInFlightBytes: cap,
        streamInFlightBytes: 64 * 1024,
      });
      try {
        let peak = 0;
        const input = new Uint8Array(1 << 20).fill(121);
        const runs = Array.from({ length: 6 }, async () => {
          const stream = capped.openStream();
          const reading = Array.fromAsync(stream.readable);
          const writer = stream.writable.getWriter();
          for (const c of cut(input, [16 * 1024])) {
            await writer.write(c);
            peak = Math.max(peak, capped.stats().inFlightBytes);
          }
          await writer.close();
          return concat(await reading);
        });
        for (const out of await Promise.all(runs)) expect(out).toEqual(input);
        expect(peak).toBeGreaterThan(0);
        expect(peak).toBeLessThanOrEqual(cap);
      } finally {
        await capped.close();
      }
    });

    for (const mode of ["throw", "exit", "terminate", "hang"] as const) {
      test(`a worker that ${mode === "hang" ? "hangs" : `dies (${mode})`} fails its streams closed and is replaced`, async () => {
        const solo = await MatcherPool.start({
          engine,
          size: 1,
          specs: base,
          // Only the hang needs the watchdog; the others must not depend on it.
          stallTimeoutMs: mode === "hang" ? 1000 : 60_000,
        });
        try {
          const stream = solo.openStream();
          const writer = stream.writable.getWriter();
          const reader = stream.readable.getReader();
          await writer.write(enc.encode("before the crash SECRET-aaaaaaaa and more"));
          solo.crashWorkerForTest(0, mode);
          // A hung worker is noticed only when it owes an answer.
          if (mode === "hang") void writer.write(enc.encode("more bytes")).catch(() => {});
          let clean = false;
          let failure: unknown;
          try {
            for (;;) {
              const { done } = await reader.read();
              if (done) {
                clean = true;
                break;
              }
            }
          } catch (e) {
            failure = e;
          }
          expect(clean).toBe(false);
          expect(failure).toBeInstanceOf(MatcherError);
          expect((failure as MatcherError).code).toBe("engine-failure");
          expect(await stream.result.catch((e: unknown) => e)).toBe(failure);
          expect(await failureOf(writer.write(enc.encode("more")))).toBeInstanceOf(MatcherError);
          expect(solo.stats().restarts).toBe(1);
          expect(solo.stats().inFlightBytes).toBe(0);
          // The replacement runs the current set.
          const next = await run(solo.openStream(), [enc.encode("after SECRET-aaaaaaaa")]);
          expect(next.output).toEqual(enc.encode("after [A]"));
          expect(solo.stats().workers).toBe(1);
        } finally {
          await solo.close();
        }
      });
    }

    test("a crash with several streams in flight fails every one of them", async () => {
      const solo = await MatcherPool.start({ engine, size: 1, specs: base });
      try {
        const streams = Array.from({ length: 4 }, () => solo.openStream());
        const outcomes = streams.map((s) =>
          Array.fromAsync(s.readable).then(
            () => "clean end",
            (e: unknown) => (e instanceof MatcherError ? e.code : "other error"),
          ),
        );
        const writers = streams.map((s) => s.writable.getWriter());
        for (const w of writers) w.write(new Uint8Array(200_000).fill(122)).catch(() => {});
        solo.crashWorkerForTest(0, "throw");
        expect(await Promise.all(outcomes)).toEqual([
          "engine-failure",
          "engine-failure",
          "engine-failure",
          "engine-failure",
        ]);
        expect(solo.stats().streamsOpen).toBe(0);
      } finally {
        await solo.close();
      }
    });

    test("a cancelled reader or an aborted writer drops the stream in its worker", async () => {
      const solo = await MatcherPool.start({ engine, size: 1, specs: base });
      try {
        const cancelled = solo.openStream();
        const writer = cancelled.writable.getWriter();
        for (let i = 0; i < 8; i++)
          void writer.write(new Uint8Array(64 * 1024).fill(97)).catch(() => {});
        await cancelled.readable.cancel("client went away");
        const aborted = solo.openStream();
        const abortWriter = aborted.writable.getWriter();
        await abortWriter.write(enc.encode("half a body SECRET-aaaa"));
        await abortWriter.abort("upstream reset");
        for (const s of [cancelled, aborted]) {
          expect(await failureOf(s.result)).toMatchObject({ code: "stream-closed" });
        }
        // The worker released both streams (and their set references); the pool still works.
        expect((await solo.inspectWorkerForTest(0)).streams).toBe(0);
        expect(solo.stats()).toMatchObject({ streamsOpen: 0, inFlightBytes: 0, queueDepth: 0 });
        expect((await solo.replaceAll(enc.encode("SECRET-aaaaaaaa"))).output).toEqual(
          enc.encode("[A]"),
        );
      } finally {
        await solo.close();
      }
    });

    test("a crash fails only the streams pinned to that worker; the others finish correctly", async () => {
      const duo = await MatcherPool.start({ engine, size: 2, specs: base });
      try {
        const input = enc.encode(`${"x".repeat(5000)}SECRET-aaaaaaaa${"y".repeat(5000)}`);
        const expected = oracle(base, input).output;
        const streams = Array.fromAsync({ length: 6 }, () => duo.openStream());
        const opened = await streams;
        const onCrashed = duo.stats().perWorker[0]!.streams;
        expect(onCrashed).toBe(3); // least-loaded placement alternates
        let crashed!: () => void;
        const afterCrash = new Promise<void>((r) => {
          crashed = r;
        });
        const outcomes = opened.map(async (s) => {
          const reading = Array.fromAsync(s.readable);
          reading.catch(() => {});
          const w = s.writable.getWriter();
          try {
            await w.write(input.slice(0, 6000));
            await afterCrash;
            await w.write(input.slice(6000));
            await w.close();
            const out = concat(await reading);
            return Buffer.from(out).equals(Buffer.from(expected)) ? "correct" : "WRONG OUTPUT";
          } catch (e) {
            return e instanceof MatcherError ? e.code : "other error";
          }
        });
        await until(() => duo.stats().inFlightBytes === 0 && duo.stats().pendingBytes === 0);
        duo.crashWorkerForTest(0, "throw");
        await until(() => duo.stats().streamsOpen === 3);
        crashed();
        const results = (await Promise.all(outcomes)).sort();
        expect(results).toEqual([
          "correct",
          "correct",
          "correct",
          "engine-failure",
          "engine-failure",
          "engine-failure",
        ]);
      } finally {
        await duo.close();
      }
    });

    test("close() fails open streams and rejects further use", async () => {
      const p = await MatcherPool.start({ engine, size: 1, specs: base });
      const open = p.openStream();
      const outcome = Array.fromAsync(open.readable).then(
        () => "clean end",
        (e: unknown) => (e as MatcherError).code,
      );
      await open.writable.getWriter().write(enc.encode("pending SECRET-aaaa"));
      await p.close();
      expect(await outcome).toBe("set-disposed");
      expect(p.stats().workers).toBe(0);
      expect(() => p.openStream()).toThrow(MatcherError);
      expect(await failureOf(p.setPatterns(base))).toBeInstanceOf(MatcherError);
      expect(await failureOf(p.replaceAll(enc.encode("x")))).toBeInstanceOf(MatcherError);
      await p.dropPatterns("default"); // a cleanup call on a closed pool is a no-op
      await p.close(); // idempotent
    });

    test("stats report streams, queue depth and in-flight bytes while data moves", async () => {
      const stream = pool.openStream();
      expect(pool.stats().streamsOpen).toBe(1);
      const writer = stream.writable.getWriter();
      await writer.write(new Uint8Array(100_000).fill(97));
      // The reply is a later event-loop message: right after the write it is still in flight.
      const during = pool.stats();
      expect(during.inFlightBytes).toBe(100_000);
      expect(during.queueDepth).toBe(1);
      expect(during.perWorker.reduce((n, w) => n + w.streams, 0)).toBe(1);
      const reading = Array.fromAsync(stream.readable);
      await writer.close();
      expect(concat(await reading).length).toBe(100_000);
      expect(pool.stats()).toMatchObject({ streamsOpen: 0, inFlightBytes: 0, queueDepth: 0 });
    });
  });
}

test("start() rejects an invalid first set and bad options", async () => {
  const bad = await failureOf(
    MatcherPool.start({ engine: "reference", size: 1, specs: [spec("short", "")] }),
  );
  expect(bad).toMatchObject({ code: "pattern-too-short" });
  expect(await failureOf(MatcherPool.start({ size: 0, specs: [] }))).toBeInstanceOf(TypeError);
});
