// Benchmark of the matcher worker pool: a 64 MiB JSON-like body with 100 random 20–64-byte
// secrets, streamed through the pool in 64 KiB chunks (one stream, two concurrent streams) and
// as one whole buffer, beside memcpy, the engine on the main thread and Hyperscan (the same
// patterns and body, whole and in 64 KiB chunks: bench/hyperscan.ts) from the same run; and the
// CPU the pool's streams cost per 64 MiB, on the main thread and on the other threads (the
// workers, with the runtime's JIT and GC threads), which holds still when other work on the
// host moves the MB/s.
// Run: `bun bench/pool.bench.ts` (BENCH_MIB=16 for a quicker, smaller run).
// It must never print pattern bytes; it prints sizes, counts and speeds only.

import { bench, run } from "mitata";
import { type EngineName, MatcherPool } from "../src/matcher/pool/pool.ts";
import type { PatternSpec } from "../src/matcher/types.ts";
import { createWasmEngine, type WasmEngine } from "../src/matcher/wasm-engine.ts";
import { hyperscanFigures } from "./hyperscan.ts";
import { jsonHaystack, randomPatterns, rng } from "./matcher-fixtures.ts";

const MIB = 1 << 20;
const SIZE = Number(process.env.BENCH_MIB ?? 64) * MIB;
const CHUNK = 64 * 1024;
const PATTERNS = 100;

// The same haystack and patterns as bench/matcher.bench.ts at 100 patterns, so the pool's
// figures compare with the engine's; plus about one planted secret per MiB, so replacements
// happen (the normal case is text that almost never matches).
const REDACTED = new TextEncoder().encode("[REDACTED]");
const specs: PatternSpec[] = randomPatterns(PATTERNS, 42 + PATTERNS).map((pattern) => ({
  pattern,
  replacement: REDACTED,
}));

function haystack(size: number): Uint8Array {
  const hay = jsonHaystack(size, 7);
  const pick = rng(99);
  for (let at = 4096; at + 64 < size; at += MIB) hay.set(specs[pick() % PATTERNS]!.pattern, at);
  return hay;
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
const engine: WasmEngine | undefined = engineName === "wasm" ? createWasmEngine() : undefined;
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

const hs = hyperscanFigures(
  specs.map((s) => s.pattern),
  input,
  [CHUNK],
);

/** Bytes each benchmark scans per iteration, for MB/s; the Hyperscan figure it is set against. */
const bytesPer: Record<string, number> = {};
const hsFor: Record<string, number | undefined> = {};
function scanBench(name: string, bytes: number, fn: () => unknown, hsMbs?: number): void {
  bytesPer[name] = bytes;
  hsFor[name] = hsMbs;
  bench(name, fn).gc("once");
}

scanBench("memcpy (Uint8Array.prototype.set)", SIZE, () => memcpyTarget.set(input));
if (engine && set) {
  scanBench(
    "engine, main thread, whole buffer",
    SIZE,
    () => engine.replaceAll(set, input),
    hs?.whole,
  );
  scanBench(
    "engine, main thread, 64 KiB chunks (push)",
    SIZE,
    () => {
      const s = engine.openStream(set);
      let n = 0;
      for (let at = 0; at < input.length; at += CHUNK) {
        n += s.push(input.subarray(at, Math.min(at + CHUNK, input.length))).length;
      }
      return n + s.end().length;
    },
    hs?.streamed.get(CHUNK),
  );
  scanBench(
    "engine, main thread, 64 KiB chunks (pushLent)",
    SIZE,
    () => {
      const s = engine.openStream(set);
      let n = 0;
      for (let at = 0; at < input.length; at += CHUNK) {
        n += s.pushLent(input.subarray(at, Math.min(at + CHUNK, input.length))).length;
      }
      return n + s.end().length;
    },
    hs?.streamed.get(CHUNK),
  );
}
scanBench(
  "pool, 1 stream, 64 KiB chunks",
  SIZE,
  () => streamThrough(pool),
  hs?.streamed.get(CHUNK),
);
// Two streams on two workers against one Hyperscan thread: the ratio says what the pool adds
// over a single-threaded scanner, not a like-for-like thread count.
scanBench(
  "pool, 2 concurrent streams, 64 KiB chunks",
  2 * SIZE,
  () => Promise.all([streamThrough(pool), streamThrough(pool)]),
  hs?.streamed.get(CHUNK),
);
scanBench("pool, replaceAll (whole buffer)", SIZE, () => pool.replaceAll(input), hs?.whole);

const { benchmarks } = await run();

const rows: { name: string; mbs: number; hs?: number }[] = [];
for (const trial of benchmarks) {
  for (const r of trial.runs) {
    if (!r.stats) continue;
    const bytes = bytesPer[r.name] ?? SIZE;
    // The median: other processes share this machine's two cores, and the mean would
    // mostly measure their bursts.
    rows.push({ name: r.name, mbs: bytes / 1e6 / (r.stats.p50 / 1e9), hs: hsFor[r.name] });
  }
}
const memcpy = rows.find((r) => r.name.startsWith("memcpy"))?.mbs ?? Number.NaN;
if (hs) {
  rows.push({ name: "Hyperscan, whole buffer (hs_scan)", mbs: hs.whole });
  rows.push({ name: "Hyperscan, 64 KiB chunks (hs_scan_stream)", mbs: hs.streamed.get(CHUNK)! });
}
console.log(
  "\n| benchmark (median) | MB/s | ratio to memcpy | ratio to Hyperscan |\n| --- | ---: | ---: | ---: |",
);
for (const r of rows) {
  const ratio = r.hs !== undefined ? (r.mbs / r.hs).toFixed(2) : "";
  console.log(`| ${r.name} | ${r.mbs.toFixed(0)} | ${(r.mbs / memcpy).toFixed(3)} | ${ratio} |`);
}

/** CPU ms per 64 MiB scanned, main thread and the rest of the process, over a few passes. */
async function cpuPer64MiB(streams: number, passes = 5): Promise<{ main: number; other: number }> {
  const main0 = process.threadCpuUsage();
  const all0 = process.cpuUsage();
  for (let i = 0; i < passes; i++) {
    await Promise.all(Array.from({ length: streams }, () => streamThrough(pool)));
  }
  const main = process.threadCpuUsage(main0);
  const all = process.cpuUsage(all0);
  const per = (us: number) => us / 1000 / ((passes * streams * SIZE) / (64 * MIB));
  const mainUs = main.user + main.system;
  return { main: per(mainUs), other: per(all.user + all.system - mainUs) };
}
console.log(
  "\n| pool CPU per 64 MiB | main thread ms | other threads ms (workers, JIT, GC) |\n| --- | ---: | ---: |",
);
for (const streams of [1, 2]) {
  const cpu = await cpuPer64MiB(streams);
  console.log(`| ${streams} stream(s) | ${cpu.main.toFixed(1)} | ${cpu.other.toFixed(1)} |`);
}

set?.dispose();
await pool.close();
