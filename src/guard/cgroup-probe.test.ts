import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { availableParallelism, tmpdir } from "node:os";
import { join } from "node:path";
import { availableCores, cgroupProbe, configuredProbe, coresFromCpuMax } from "./cgroup-probe.ts";

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A fake /sys/fs/cgroup and /proc/self/cgroup: files given relative to the fake root. */
function fakeCgroup(
  selfLines: string,
  files: Record<string, string>,
): { root: string; self: string } {
  const d = mkdtempSync(join(tmpdir(), "slapenir-cgroup-"));
  dirs.push(d);
  const root = join(d, "sys");
  for (const [rel, text] of Object.entries(files)) {
    mkdirSync(join(root, rel, ".."), { recursive: true });
    writeFileSync(join(root, rel), text);
  }
  const self = join(d, "self-cgroup");
  writeFileSync(self, selfLines);
  return { root, self };
}

const MiB = 1048576;

describe("cgroupProbe", () => {
  const NO_LIMIT = "9223372036854771712\n";

  test("v1: use less inactive page cache (only where it can matter); no limit: null", () => {
    const f = fakeCgroup("5:cpu:/\n4:memory:/docker/abc\n0::/\n", {
      "memory/docker/abc/memory.usage_in_bytes": `${300 * MiB}\n`,
      "memory/docker/abc/memory.limit_in_bytes": `${384 * MiB}\n`,
      "memory/docker/abc/memory.stat": `cache 1\ninactive_file 7\ntotal_inactive_file ${20 * MiB}\n`,
      "memory/docker/memory.usage_in_bytes": `${301 * MiB}\n`,
      "memory/docker/memory.limit_in_bytes": NO_LIMIT,
      "memory/memory.usage_in_bytes": `${900 * MiB}\n`,
      "memory/memory.limit_in_bytes": NO_LIMIT,
    });
    const p = cgroupProbe(f.root, f.self)!;
    expect(p.source).toContain("cgroup v1");
    expect(p.read(0.5)).toEqual({ used: 280 * MiB, limit: 384 * MiB });
    expect(p.read(0.9)).toEqual({ used: 300 * MiB, limit: 384 * MiB });
  });

  test("v1: a parent's limit counts against the parent's use (a pod shared with a sidecar)", () => {
    const f = fakeCgroup("4:memory:/pod/proxy\n", {
      "memory/pod/proxy/memory.usage_in_bytes": `${33 * MiB}\n`,
      "memory/pod/proxy/memory.limit_in_bytes": NO_LIMIT,
      "memory/pod/proxy/memory.stat": "total_inactive_file 0\n",
      "memory/pod/memory.usage_in_bytes": `${263 * MiB}\n`,
      "memory/pod/memory.limit_in_bytes": `${384 * MiB}\n`,
      "memory/pod/memory.stat": `total_inactive_file ${3 * MiB}\n`,
    });
    expect(cgroupProbe(f.root, f.self)!.read(0.5)).toEqual({ used: 260 * MiB, limit: 384 * MiB });
  });

  test("v1 in a container (its cgroup mounted as the root), no limit", () => {
    const f = fakeCgroup("4:memory:/docker/abc\n", {
      "memory/memory.usage_in_bytes": "1000",
      "memory/memory.limit_in_bytes": NO_LIMIT,
      "memory/memory.stat": "total_inactive_file 0\n",
    });
    expect(cgroupProbe(f.root, f.self)!.read(0.5)).toBeNull();
  });

  test("v2: the level closest to its limit up the tree; 'max', empty and junk are no limit", () => {
    const f = fakeCgroup("0::/system.slice/proxy\n", {
      "memory.current": `${5000 * MiB}\n`,
      "system.slice/memory.max": `${512 * MiB}\n`,
      "system.slice/memory.current": `${110 * MiB}\n`,
      "system.slice/memory.stat": "inactive_file 0\n",
      "system.slice/proxy/memory.max": `${200 * MiB}\n`,
      "system.slice/proxy/memory.current": `${100 * MiB}\n`,
      "system.slice/proxy/memory.stat": `anon 5\ninactive_file ${3 * MiB}\nactive_file 9\n`,
    });
    const p = cgroupProbe(f.root, f.self)!;
    expect(p.source).toContain("cgroup v2");
    expect(p.read(0.4)).toEqual({ used: 97 * MiB, limit: 200 * MiB });
    for (const none of ["max\n", "", "12ab"]) {
      writeFileSync(join(f.root, "system.slice/proxy/memory.max"), none);
      // Limits are re-read every few seconds: a fresh probe sees the change at once.
      expect(cgroupProbe(f.root, f.self)!.read(0.4)).toEqual({ used: 110 * MiB, limit: 512 * MiB });
    }
  });

  test("no memory cgroup: null", () => {
    const f = fakeCgroup("0::/\n", {});
    expect(cgroupProbe(f.root, f.self)).toBeNull();
    expect(cgroupProbe(f.root, join(f.root, "missing"))).toBeNull();
  });

  test("a configured limit: against a limited cgroup's own use, else the resident set", () => {
    const f = fakeCgroup("4:memory:/docker/abc\n", {
      "memory/docker/abc/memory.usage_in_bytes": `${100 * MiB}\n`,
      "memory/docker/abc/memory.limit_in_bytes": `${384 * MiB}\n`,
      "memory/docker/abc/memory.stat": `total_inactive_file ${10 * MiB}\n`,
    });
    expect(configuredProbe(256 * MiB, cgroupProbe(f.root, f.self)).read(0)).toEqual({
      used: 90 * MiB,
      limit: 256 * MiB,
    });
    writeFileSync(join(f.root, "memory/docker/abc/memory.limit_in_bytes"), NO_LIMIT);
    const own = configuredProbe(256 * MiB, cgroupProbe(f.root, f.self)).read(0)!;
    expect(own.limit).toBe(256 * MiB);
    // This test process's resident set, not the 100 MiB its (fake, unlimited) cgroup holds.
    expect(Math.abs(own.used - process.memoryUsage().rss)).toBeLessThan(64 * MiB);
    expect(own.used).not.toBe(90 * MiB);
  });
});

test("cores a cgroup CPU limit allows: rounded up, none for max, at least one", () => {
  expect(coresFromCpuMax("max 100000\n")).toBeNull();
  expect(coresFromCpuMax("-1 100000")).toBeNull();
  expect(coresFromCpuMax("200000 100000")).toBe(2);
  expect(coresFromCpuMax("150000 100000")).toBe(2);
  expect(coresFromCpuMax("10000 100000")).toBe(1);
  expect(coresFromCpuMax("garbage")).toBeNull();
});

test("availableCores: a cgroup v2 limit lowers the CPUs, a missing cgroup leaves them", () => {
  const dir = mkdtempSync(join(tmpdir(), "cpu-"));
  mkdirSync(join(dir, "box"));
  writeFileSync(join(dir, "box", "cpu.max"), "100000 100000\n");
  writeFileSync(join(dir, "self"), "0::/box\n");
  expect(availableCores(dir, join(dir, "self"))).toBe(1);
  expect(availableCores(dir, join(dir, "absent"))).toBe(availableParallelism());
  rmSync(dir, { recursive: true });
});
