// Benchmark of the WebAssembly matcher engine on the main thread (no worker pool): a 64 MiB
// JSON-like haystack that almost never matches, 1/10/100/1000 random 20-64-byte token-like
// patterns, whole-buffer and streamed (16 KiB, 64 KiB chunks), with decoded views on (plain
// JSON lines, and JSON whose strings escape a third of their characters), and adversarial
// text dense with near-matches; beside them, in the same run, memcpy (Uint8Array.prototype.set into a reused
// buffer), a fresh copy (slice), Buffer.indexOf per pattern, a RegExp alternation and Hyperscan
// (bench/hyperscan.ts: the same patterns and haystacks, whole and in the same chunk sizes).
// Streams run both ways: `push` (a fresh output array per push, as before issue 19) and
// `pushLent` (the engine's reused output buffer).
// Run: `bun bench/matcher.bench.ts` (BENCH_MIB=16 for a quicker run). Results: bench/README.md.
// It must never print pattern bytes: only names, sizes and speeds.

import { do_not_optimize, measure } from "mitata";
import type { CompiledSet, PatternSpec } from "../src/matcher/types.ts";
import { createWasmEngine } from "../src/matcher/wasm-engine.ts";
import { hyperscanFigures } from "./hyperscan.ts";
import {
  adversarialHaystack,
  escapedHaystack,
  jsonHaystack,
  randomPatterns,
} from "./matcher-fixtures.ts";

const MIB = 1 << 20;
const SIZE = Number(process.env.BENCH_MIB ?? 64) * MIB;
/** Slow baselines (indexOf x patterns, RegExp) run on a slice; MB/s is per byte either way. */
const SLOW_SIZE = Math.min(SIZE, 4 * MIB);
const COUNTS = [1, 10, 100, 1000];
const REDACTED = new TextEncoder().encode("[REDACTED]");

interface Row {
  name: string;
  bytes: number;
  ns: number;
  /** Hyperscan's MB/s for the same patterns, input and chunking (same run), when measured. */
  hs?: number;
}
const rows: Row[] = [];

async function time(
  name: string,
  bytes: number,
  fn: () => unknown,
  slow = false,
  hs?: number,
): Promise<void> {
  const stats = await measure(
    () => {
      do_not_optimize(fn());
    },
    {
      min_samples: slow ? 2 : 5,
      max_samples: slow ? 4 : 30,
      min_cpu_time: (slow ? 200 : 600) * 1e6,
      warmup_samples: 1,
      gc: () => Bun.gc(true),
    },
  );
  rows.push({ name, bytes, ns: stats.p50, ...(hs !== undefined ? { hs } : {}) });
  process.stderr.write(`  ${name}: ${mbps(bytes, stats.p50).toFixed(0)} MB/s\n`);
}

function mbps(bytes: number, ns: number): number {
  return bytes / 1e6 / (ns / 1e9);
}

function streamed(
  engine: ReturnType<typeof createWasmEngine>,
  set: CompiledSet,
  chunk: number,
  lent = true,
) {
  return (input: Uint8Array) => {
    const s = engine.openStream(set);
    let out = 0;
    for (let off = 0; off < input.length; off += chunk) {
      const piece = input.subarray(off, off + chunk);
      out += (lent ? s.pushLent(piece) : s.push(piece)).length;
    }
    return out + s.end().length;
  };
}

/** A row for Hyperscan itself, so its figure stands in the table beside the engine's. */
function hsRow(name: string, mbs: number | undefined): void {
  if (mbs === undefined || !Number.isFinite(mbs)) return;
  rows.push({ name, bytes: SIZE, ns: (SIZE / 1e6 / mbs) * 1e9 });
  process.stderr.write(`  ${name}: ${mbs.toFixed(0)} MB/s\n`);
}

const t0 = performance.now();
process.stderr.write(`building a ${SIZE / MIB} MiB JSON-like haystack...\n`);
const hay = jsonHaystack(SIZE, 7);
const escaped = escapedHaystack(SIZE, 7);
const haySlow = hay.subarray(0, SLOW_SIZE);
const hayString = Buffer.from(haySlow).toString("latin1");
const reused = new Uint8Array(SIZE + 4096);

await time("memcpy (set into reused buffer)", SIZE, () => reused.set(hay));
await time("fresh copy (slice)", SIZE, () => hay.slice());

const engine = createWasmEngine();
// The guaranteed-linear path alone (prefilter off): what adversarial text costs at worst.
const automatonOnly = createWasmEngine(undefined, { disableSkip: true });
for (const n of COUNTS) {
  process.stderr.write(`${n} pattern(s)\n`);
  const patterns = randomPatterns(n, 42 + n);
  const specs: PatternSpec[] = patterns.map((pattern) => ({ pattern, replacement: REDACTED }));
  const set = engine.compile(specs);
  const hs = hyperscanFigures(patterns, hay, [16 * 1024, 64 * 1024]);
  hsRow(`Hyperscan whole (hs_scan)     n=${n}`, hs?.whole);
  hsRow(`Hyperscan streamed 16 KiB     n=${n}`, hs?.streamed.get(16 * 1024));
  hsRow(`Hyperscan streamed 64 KiB     n=${n}`, hs?.streamed.get(64 * 1024));
  await time(
    `engine whole, fresh output   n=${n}`,
    SIZE,
    () => engine.replaceAll(set, hay),
    false,
    hs?.whole,
  );
  await time(
    `engine whole, reused output  n=${n}`,
    SIZE,
    () => engine.replaceAllInto(set, hay, reused),
    false,
    hs?.whole,
  );
  for (const kib of [16, 64]) {
    const hsMbs = hs?.streamed.get(kib * 1024);
    const fresh = streamed(engine, set, kib * 1024, false);
    const lent = streamed(engine, set, kib * 1024, true);
    await time(`engine streamed ${kib} KiB, push n=${n}`, SIZE, () => fresh(hay), false, hsMbs);
    await time(`engine streamed ${kib} KiB, lent n=${n}`, SIZE, () => lent(hay), false, hsMbs);
  }
  // Decoded views on (as the proxy compiles its redaction set): every line break is a token.
  const setV = engine.compile(specs, { views: true });
  await time(`views: whole, reused output  n=${n}`, SIZE, () =>
    engine.replaceAllInto(setV, hay, reused),
  );
  const v64 = streamed(engine, setV, 64 * 1024);
  await time(`views: streamed 64 KiB       n=${n}`, SIZE, () => v64(hay));
  if (n === 100) {
    await time(`views: escape-dense, 64 KiB  n=${n}`, SIZE, () => v64(escaped));
  }
  setV.dispose();
  const adversarial = adversarialHaystack(SIZE, patterns, 3);
  const hsAdv = hyperscanFigures(patterns, adversarial, [])?.whole;
  hsRow(`Hyperscan adversarial whole   n=${n}`, hsAdv);
  await time(
    `engine adversarial, reused   n=${n}`,
    SIZE,
    () => engine.replaceAllInto(set, adversarial, reused),
    false,
    hsAdv,
  );
  const setA = automatonOnly.compile(specs);
  await time(`automaton only, adversarial  n=${n}`, SIZE, () =>
    automatonOnly.replaceAll(setA, adversarial),
  );
  setA.dispose();
  await time(
    `Buffer.indexOf per pattern   n=${n}`,
    SLOW_SIZE,
    () => {
      const b = Buffer.from(haySlow.buffer, haySlow.byteOffset, haySlow.length);
      let hits = 0;
      for (const p of patterns) hits += b.indexOf(p) >= 0 ? 1 : 0;
      return hits;
    },
    true,
  );
  const re = new RegExp(
    patterns
      .map((p) =>
        Buffer.from(p)
          .toString("latin1")
          .replace(/[.*+?^${}()|[\]\\-]/g, "\\$&"),
      )
      .join("|"),
    "g",
  );
  await time(
    `RegExp alternation replace   n=${n}`,
    SLOW_SIZE,
    () => hayString.replace(re, "[REDACTED]"),
    true,
  );
  set.dispose();
}

const memcpy = rows[0]!;
const memcpyMBps = mbps(memcpy.bytes, memcpy.ns);
const lines = [
  "| benchmark | MB/s | x memcpy | x Hyperscan |",
  "| --- | ---: | ---: | ---: |",
  ...rows.map((r) => {
    const v = mbps(r.bytes, r.ns);
    const hs = r.hs !== undefined ? (v / r.hs).toFixed(2) : "";
    return `| ${r.name.replace(/\s+/g, " ")} | ${v.toFixed(0)} | ${(v / memcpyMBps).toFixed(3)} | ${hs} |`;
  }),
];
console.log(
  `\nMatcher engine, ${SIZE / MIB} MiB haystack (slow baselines on ${SLOW_SIZE / MIB} MiB),`,
);
console.log(`${navigator.hardwareConcurrency} cores, Bun ${Bun.version}; median of samples.\n`);
console.log(lines.join("\n"));
console.log(`\n(total ${((performance.now() - t0) / 1000).toFixed(0)} s)`);
