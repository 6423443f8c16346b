// Benchmark of the matcher worker pool: a 64 MiB JSON-like body with 100 random 20–64-byte
// secrets, streamed through the pool in 64 KiB chunks (one stream, two concurrent streams) and
// as one whole buffer, beside memcpy and the engine on the main thread from the same run.
// Run: `bun bench/pool.bench.ts` (BENCH_MIB=16 for a quicker, smaller run).
// It must never print pattern bytes; it prints sizes, counts and speeds only.

import { bench, run } from "mitata";
import { type EngineName, MatcherPool } from "../src/matcher/pool.ts";
import type { MatcherEngine, PatternSpec } from "../src/matcher/types.ts";
import { createWasmEngine } from "../src/matcher/wasm-engine.ts";

const MIB = 1 << 20;
const SIZE = Number(process.env.BENCH_MIB ?? 64) * MIB;
const CHUNK = 64 * 1024;
const PATTERNS = 100;

/** Deterministic PRNG (xorshift32) so every run scans the same bytes. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5;
    s >>>= 0;
    return s;
  };
}

const rand = rng(0x5eed);
const ALNUM = new TextEncoder().encode(
  "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789",
);

function randomSecret(): Uint8Array {
  const len = 20 + (rand() % 45);
  return Uint8Array.from({ length: len }, () => ALNUM[rand() % ALNUM.length]!);
}

const specs: PatternSpec[] = Array.from({ length: PATTERNS }, () => ({
  pattern: randomSecret(),
  replacement: new TextEncoder().encode("[REDACTED]"),
}));

/** JSON-like text: objects of keys, words, numbers and ids, with a few secrets planted. */
function haystack(size: number): Uint8Array {
  const words = ["alpha", "beta", "gamma", "delta", "token", "value", "items", "user", "id"];
  const parts: string[] = [];
  let n = 0;
  while (n < size) {
    const key = words[rand() % words.length]!;
    const word = words[rand() % words.length]!;
    const piece = `{"${key}":"${word}-${rand() % 100000}","n":${rand() % 1000},"ok":true},\n`;
    parts.push(piece);
    n += piece.length;
  }
  const out = new TextEncoder().encode(parts.join("")).subarray(0, size);
  const copy = out.slice();
  // About one planted secret per MiB: the normal case is text that almost never matches.
  for (let at = 4096; at + 64 < size; at += MIB) copy.set(specs[rand() % PATTERNS]!.pattern, at);
  return copy;
}

const input = haystack(SIZE);
const memcpyTarget = new Uint8Array(SIZE);

async function drain(readable: ReadableStream<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const c of readable) n += c.length;
  return n;
}

/** Streams the whole haystack through one pool stream in CHUNK-sized views. */
async function streamThrough(pool: MatcherPool): Promise<number> {
  const stream = pool.openStream();
  const reading = drain(stream.readable);
  const writer = stream.writable.getWriter();
  for (let at = 0; at < input.length; at += CHUNK) {
    await writer.ready;
    writer.write(input.subarray(at, Math.min(at + CHUNK, input.length)));
  }
  await writer.close();
  const out = await reading;
  await stream.result;
  return out;
}

const engineName = (process.env.BENCH_ENGINE ?? "wasm") as EngineName;
const pool = await MatcherPool.start({ engine: engineName, specs });
const engine: MatcherEngine | undefined = engineName === "wasm" ? createWasmEngine() : undefined;
const set = engine?.compile(specs);

// Correctness first: the pool's output must equal the main-thread engine's.
const check = await pool.replaceAll(input);
if (engine && set) {
  const direct = engine.replaceAll(set, input);
  if (
    direct.replacements !== check.replacements ||
    !Buffer.from(direct.output).equals(check.output)
  ) {
    throw new Error("pool output differs from the engine's");
  }
}
const streamedLen = await streamThrough(pool);
if (streamedLen !== check.output.length) throw new Error("streamed output length differs");
console.log(
  `haystack ${SIZE / MIB} MiB, ${PATTERNS} patterns of 20–64 bytes, ${check.replacements} matches; ` +
    `pool: ${pool.stats().workers} workers (${engineName}), chunks ${CHUNK / 1024} KiB`,
);

/** Bytes each benchmark scans per iteration, for MB/s. */
const bytesPer: Record<string, number> = {};
function scanBench(name: string, bytes: number, fn: () => unknown): void {
  bytesPer[name] = bytes;
  bench(name, fn).gc("once");
}

scanBench("memcpy (Uint8Array.prototype.set)", SIZE, () => memcpyTarget.set(input));
if (engine && set) {
  scanBench("engine, main thread, whole buffer", SIZE, () => engine.replaceAll(set, input));
  scanBench("engine, main thread, 64 KiB chunks", SIZE, () => {
    const s = engine.openStream(set);
    let n = 0;
    for (let at = 0; at < input.length; at += CHUNK) {
      n += s.push(input.subarray(at, Math.min(at + CHUNK, input.length))).length;
    }
    return n + s.end().length;
  });
}
scanBench("pool, 1 stream, 64 KiB chunks", SIZE, () => streamThrough(pool));
scanBench("pool, 2 concurrent streams, 64 KiB chunks", 2 * SIZE, () =>
  Promise.all([streamThrough(pool), streamThrough(pool)]),
);
scanBench("pool, replaceAll (whole buffer)", SIZE, () => pool.replaceAll(input));

const { benchmarks } = await run();

const rows: { name: string; mbs: number }[] = [];
for (const trial of benchmarks) {
  for (const r of trial.runs) {
    if (!r.stats) continue;
    const bytes = bytesPer[r.name] ?? SIZE;
    rows.push({ name: r.name, mbs: bytes / 1e6 / (r.stats.avg / 1e9) });
  }
}
const memcpy = rows.find((r) => r.name.startsWith("memcpy"))?.mbs ?? Number.NaN;
console.log("\n| benchmark | MB/s | ratio to memcpy |\n| --- | ---: | ---: |");
for (const r of rows) {
  console.log(`| ${r.name} | ${r.mbs.toFixed(0)} | ${(r.mbs / memcpy).toFixed(3)} |`);
}

set?.dispose();
await pool.close();
