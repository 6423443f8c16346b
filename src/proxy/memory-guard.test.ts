import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { cgroupProbe, MemoryGuard, type MemoryProbe, StallRegistry } from "./memory-guard.ts";
import { ProxyMetrics } from "./metrics.ts";

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
  test("v1: use less inactive page cache; the lower of its own and the hierarchy's limit", () => {
    const f = fakeCgroup("5:cpu:/\n4:memory:/docker/abc\n0::/\n", {
      "memory/docker/abc/memory.usage_in_bytes": `${300 * MiB}\n`,
      "memory/docker/abc/memory.limit_in_bytes": "9223372036854771712\n",
      "memory/docker/abc/memory.stat": `cache 1\ninactive_file 7\nhierarchical_memory_limit ${384 * MiB}\ntotal_inactive_file ${20 * MiB}\n`,
    });
    const p = cgroupProbe(f.root, f.self)!;
    expect(p.source).toContain("cgroup v1");
    expect([p.usage(), p.reclaimable(), p.limit()]).toEqual([300 * MiB, 20 * MiB, 384 * MiB]);
  });

  test("v1 in a container (its cgroup mounted as the root), no limit", () => {
    const f = fakeCgroup("4:memory:/docker/abc\n", {
      "memory/memory.usage_in_bytes": "1000",
      "memory/memory.limit_in_bytes": "9223372036854771712",
      "memory/memory.stat": "hierarchical_memory_limit 9223372036854771712\n",
    });
    const p = cgroupProbe(f.root, f.self)!;
    expect([p.usage(), p.reclaimable(), p.limit()]).toEqual([1000, 0, null]);
  });

  test("v2: memory.current less inactive_file; the lowest memory.max up the tree", () => {
    const f = fakeCgroup("0::/system.slice/proxy\n", {
      "memory.max": "max\n",
      "system.slice/memory.max": `${512 * MiB}\n`,
      "system.slice/proxy/memory.max": "max\n",
      "system.slice/proxy/memory.current": `${100 * MiB}\n`,
      "system.slice/proxy/memory.stat": `anon 5\ninactive_file ${3 * MiB}\nactive_file 9\n`,
    });
    const p = cgroupProbe(f.root, f.self)!;
    expect(p.source).toContain("cgroup v2");
    expect([p.usage(), p.reclaimable(), p.limit()]).toEqual([100 * MiB, 3 * MiB, 512 * MiB]);
  });

  test("no memory cgroup: null", () => {
    const f = fakeCgroup("0::/\n", {});
    expect(cgroupProbe(f.root, f.self)).toBeNull();
    expect(cgroupProbe(f.root, join(f.root, "missing"))).toBeNull();
  });
});

/** A clock the test moves. */
function clock() {
  let t = 1000;
  return {
    now: () => t,
    advance(ms: number): void {
      t += ms;
    },
  };
}

describe("StallRegistry", () => {
  test("sheds only stalls without progress for the grace period, longest first", () => {
    const c = clock();
    const r = new StallRegistry(c.now);
    const order: string[] = [];
    const a = r.begin("agent-a", () => order.push("a"));
    c.advance(100);
    r.begin("agent-b", () => order.push("b"));
    c.advance(100);
    const fresh = r.begin("agent-b", () => order.push("fresh"));
    const gone = r.begin("agent-c", () => order.push("gone"));
    gone.end();
    c.advance(50);
    a.progress(); // took bytes: starts over
    c.advance(400);
    // a: 400 ms since progress; b: 650; fresh: 450; gone: ended.
    expect([...r.shed(450)]).toEqual([["agent-b", 2]]);
    expect(order).toEqual(["b", "fresh"]);
    expect(r.size).toBe(1);
    fresh.end(); // ending a shed stall is harmless
    c.advance(100);
    expect([...r.shed(450)]).toEqual([["agent-a", 1]]);
    expect(r.size).toBe(0);
  });
});

function fakeProbe(used: { n: number }, limit: number | null, reclaimable = 0): MemoryProbe {
  return {
    source: "fake",
    usage: () => used.n,
    reclaimable: () => reclaimable,
    limit: () => limit,
  };
}

describe("MemoryGuard", () => {
  function setup(limit: number | null, opts: { limitBytes?: number; reclaimable?: number } = {}) {
    const c = clock();
    const stalls = new StallRegistry(c.now);
    const used = { n: 0 };
    const rounds: [string, number][][] = [];
    let collections = 0;
    const guard = new MemoryGuard({
      probe: fakeProbe(used, limit, opts.reclaimable),
      ...(opts.limitBytes !== undefined ? { limitBytes: opts.limitBytes } : {}),
      shedAt: 0.8,
      criticalAt: 0.9,
      stalls,
      graceMs: 500,
      intervalMs: 100,
      minGapMs: 10,
      onShed: (shed) => rounds.push([...shed]),
      collect: () => void collections++,
    });
    return { c, stalls, used, rounds, guard, collections: () => collections };
  }

  test("below the threshold nothing is shed; at it, the stalled past their grace are", () => {
    const s = setup(100 * MiB);
    let closed = 0;
    s.stalls.begin("agent-a", () => closed++);
    s.c.advance(600);
    s.stalls.begin("agent-b", () => closed++); // within its grace
    s.used.n = 79 * MiB;
    expect(s.guard.check()).toBe(0);
    s.used.n = 80 * MiB;
    expect(s.guard.check()).toBe(1);
    expect([closed, s.collections(), s.rounds]).toEqual([1, 1, [[["agent-a", 1]]]]);
    expect(s.guard.usedBytes).toBe(80 * MiB);
    // Nothing past its grace: no round, no collection.
    expect(s.guard.check()).toBe(0);
    expect(s.collections()).toBe(1);
    // Critical at once (the stall within its grace goes too): no second collection so soon.
    s.stalls.begin("agent-c", () => closed++);
    s.used.n = 95 * MiB;
    expect([s.guard.check(), closed, s.collections()]).toEqual([2, 3, 1]);
  });

  test("at the critical threshold every stall is shed, however young", () => {
    const s = setup(100 * MiB);
    let closed = 0;
    s.stalls.begin("agent-a", () => closed++);
    s.used.n = 89 * MiB;
    expect(s.guard.check()).toBe(0);
    s.used.n = 90 * MiB;
    expect([s.guard.check(), closed]).toEqual([1, 1]);
  });

  test("once started, a new stall starts a round; stopped, it does not", async () => {
    const s = setup(100 * MiB);
    s.used.n = 95 * MiB;
    s.guard.start();
    let closed = 0;
    s.stalls.begin("agent-a", () => closed++);
    expect(closed).toBe(0); // not from inside begin(): the caller is still setting up
    await Promise.resolve();
    expect(closed).toBe(1);
    s.guard.stop();
    s.stalls.begin("agent-b", () => closed++);
    await Bun.sleep(150);
    expect([closed, s.stalls.size]).toEqual([1, 1]);
  });

  test("reclaimable page cache does not count", () => {
    const s = setup(100 * MiB, { reclaimable: 30 * MiB });
    let closed = 0;
    s.stalls.begin("agent-a", () => closed++);
    s.c.advance(600);
    s.used.n = 95 * MiB;
    expect([s.guard.check(), closed, s.guard.usedBytes]).toEqual([0, 0, 65 * MiB]);
  });

  test("no limit, or a cgroup limit above the machine's memory: nothing is shed", () => {
    for (const limit of [null, totalmem() + 1]) {
      const s = setup(limit);
      let closed = 0;
      s.stalls.begin("agent-a", () => closed++);
      s.c.advance(600);
      s.used.n = 10 * totalmem();
      expect([s.guard.check(), closed, s.guard.limitBytes]).toEqual([0, 0, null]);
    }
  });

  test("a configured limit applies without a cgroup limit", () => {
    const s = setup(null, { limitBytes: 64 * MiB });
    let closed = 0;
    s.stalls.begin("agent-a", () => closed++);
    s.c.advance(600);
    s.used.n = 60 * MiB;
    expect([s.guard.limitBytes, s.guard.check(), closed]).toEqual([64 * MiB, 1, 1]);
  });
});

test("metrics: memory use and limit (0 without a limit), and shed connections by agent", async () => {
  const m = new ProxyMetrics();
  let limit: number | null = null;
  m.watchMemory({ used: () => 200 * MiB, limit: () => limit });
  m.shed.inc({ agent: "agent-a" }, 3);
  let text = await m.registry.metrics();
  expect(text).toContain('slapenir_connections_shed_total{agent="agent-a"} 3');
  expect(text).toMatch(/^slapenir_memory_used_bytes 0$/m);
  expect(text).toMatch(/^slapenir_memory_limit_bytes 0$/m);
  limit = 384 * MiB;
  text = await m.registry.metrics();
  expect(text).toMatch(new RegExp(`^slapenir_memory_used_bytes ${200 * MiB}$`, "m"));
  expect(text).toMatch(new RegExp(`^slapenir_memory_limit_bytes ${384 * MiB}$`, "m"));
});
