// The Hyperscan baseline for bench/matcher.bench.ts and bench/pool.bench.ts: builds
// bench/hyperscan-scan.c with the system's C compiler and libhyperscan (Debian:
// libhyperscan-dev, in scripts/install-test-deps.sh) and runs it on the same patterns and
// haystack, whole and in the same chunk sizes. Bench only. It must never print pattern bytes;
// the files it writes for the harness are zeroed and removed after each run.

import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export interface HyperscanFigures {
  /** MB/s, block mode over the whole buffer. */
  readonly whole: number;
  /** MB/s, stream mode, by chunk size. */
  readonly streamed: ReadonlyMap<number, number>;
  /** Matches Hyperscan reported whole (every end of every pattern, overlaps included). */
  readonly matches: number;
}

let built: string | null | undefined;

/** The harness binary, compiled once per process; null (with a reason on stderr) if it cannot be. */
export function hyperscanHarness(): string | null {
  if (built !== undefined) return built;
  const dir = mkdtempSync(join(tmpdir(), "slapenir-hs-"));
  const out = join(dir, "hyperscan-scan");
  const cc = Bun.spawnSync(
    ["cc", "-O2", "-o", out, join(import.meta.dir, "hyperscan-scan.c"), "-lhs"],
    { stderr: "pipe" },
  );
  if (cc.exitCode === 0) built = out;
  else {
    process.stderr.write(
      `Hyperscan harness not built (needs cc and libhyperscan-dev): ${cc.stderr.toString().split("\n")[0]}\n`,
    );
    built = null;
  }
  return built;
}

/** Hyperscan's speed on `haystack` for `patterns`, whole and in `chunks`; null without it. */
export function hyperscanFigures(
  patterns: readonly Uint8Array[],
  haystack: Uint8Array,
  chunks: readonly number[],
  minMs = 600,
): HyperscanFigures | null {
  const bin = hyperscanHarness();
  if (!bin) return null;
  const dir = mkdtempSync(join(tmpdir(), "slapenir-hs-run-"));
  const patFile = join(dir, "patterns");
  const hayFile = join(dir, "haystack");
  let size = 0;
  for (const p of patterns) size += 4 + p.length;
  const packed = new Uint8Array(size);
  const view = new DataView(packed.buffer);
  let at = 0;
  for (const p of patterns) {
    view.setUint32(at, p.length, true);
    packed.set(p, at + 4);
    at += 4 + p.length;
  }
  try {
    writeFileSync(patFile, packed);
    writeFileSync(hayFile, haystack);
    const run = Bun.spawnSync([bin, patFile, hayFile, String(minMs), ...chunks.map(String)], {
      stderr: "pipe",
    });
    if (run.exitCode !== 0) {
      process.stderr.write(`Hyperscan harness failed: ${run.stderr.toString().trim()}\n`);
      return null;
    }
    let whole = Number.NaN;
    let matches = 0;
    const streamed = new Map<number, number>();
    for (const line of run.stdout.toString().trim().split("\n")) {
      const f = line.split(" ");
      if (f[0] === "whole") {
        whole = Number(f[1]);
        matches = Number(f[2]);
      } else if (f[0] === "stream") streamed.set(Number(f[1]), Number(f[2]));
    }
    return { whole, streamed, matches };
  } finally {
    // Bench patterns are random, but the files are treated like any pattern file.
    packed.fill(0);
    writeFileSync(patFile, packed);
    rmSync(dir, { recursive: true, force: true });
  }
}
