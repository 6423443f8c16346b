import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import { ProxyMetrics } from "../observe/metrics.ts";
import {
  cgroupProbe,
  configuredProbe,
  MemoryGuard,
  type MemoryProbe,
  StallRegistry,
} from "./memory-guard.ts";

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

  test("sheds at most as many as asked, longest first", () => {
    const c = clock();
    const r = new StallRegistry(c.now);
    const order: number[] = [];
    for (let i = 0; i < 5; i++) {
      r.begin("a", () => order.push(i));
      c.advance(10);
    }
    expect([...r.shed(0, 2)]).toEqual([["a", 2]]);
    expect([order, r.size]).toEqual([[0, 1], 3]);
  });

  test("sheds from the agent with the most stalled connections first, its longest-stalled first", () => {
    const c = clock();
    const r = new StallRegistry(c.now);
    const order: string[] = [];
    r.begin("slow-reader", () => order.push("slow-reader")); // the oldest stall of all
    c.advance(100);
    for (let i = 0; i < 4; i++) r.begin("many", () => order.push(`many-${i}`));
    c.advance(10);
    for (let i = 0; i < 2; i++) r.begin("two", () => order.push(`two-${i}`));
    c.advance(1000);
    // many 4 → 3 → 2; then many and two have 2 each: many's stall is older; then two.
    expect([...r.shed(500, 4)]).toEqual([
      ["many", 3],
      ["two", 1],
    ]);
    expect(order).toEqual(["many-0", "many-1", "many-2", "two-0"]);
    // One each left: the longest-stalled first.
    expect([...r.shed(500)].map(([a]) => a)).toEqual(["slow-reader", "many", "two"]);
    expect(order.slice(4)).toEqual(["slow-reader", "many-3", "two-1"]);
  });

  test("an agent's young stalls count for its rank, though only those past the grace go", () => {
    const c = clock();
    const r = new StallRegistry(c.now);
    const order: string[] = [];
    r.begin("slow-reader", () => order.push("slow-reader"));
    r.begin("burst", () => order.push("burst-old"));
    c.advance(1000);
    for (let i = 0; i < 5; i++) r.begin("burst", () => order.push(`burst-${i}`)); // within grace
    // Past the grace: one stall of each. The burst holds six, the reader one.
    expect([...r.shed(500)]).toEqual([["burst", 1]]);
    expect(order).toEqual(["burst-old"]);
    // The burst still holds five, all within their grace: the reader, holding fewer, keeps its
    // one until they are due (or any stall is, at the critical level).
    expect([...r.shed(500)]).toEqual([]);
    expect([...r.shed(0, 4)]).toEqual([["burst", 4]]);
    // Down to one each: as many as the most, the longest-stalled goes.
    expect([...r.shed(0, 1)]).toEqual([["slow-reader", 1]]);
  });

  test("counts an agent's stalls; knows whether any is past a grace", () => {
    const c = clock();
    const r = new StallRegistry(c.now);
    const a = r.begin("a", () => {});
    r.begin("a", () => {});
    r.begin("b", () => {});
    expect([r.stalledBy("a"), r.stalledBy("b"), r.stalledBy("c"), r.any(100)]).toEqual([
      2,
      1,
      0,
      false,
    ]);
    c.advance(100);
    a.end();
    expect([r.stalledBy("a"), r.any(100), r.any(101)]).toEqual([1, true, false]);
  });
});

/** A probe whose use and limit the test sets (a collection takes `garbage` off, see setup). */
function fakeProbe(m: { used: number; limit: number | null }): MemoryProbe {
  return {
    source: "fake",
    read: () => (m.limit === null ? null : { used: m.used, limit: m.limit }),
  };
}

describe("MemoryGuard", () => {
  function setup(limit: number | null, garbage = 0) {
    const c = clock();
    const stalls = new StallRegistry(c.now);
    const m = { used: 0, limit };
    const rounds: [string, number][][] = [];
    let collections = 0;
    const guard = new MemoryGuard({
      probe: fakeProbe(m),
      shedAt: 0.8,
      criticalAt: 0.9,
      stalls,
      graceMs: 500,
      intervalMs: 100,
      minGapMs: 10,
      onShed: (shed) => rounds.push([...shed]),
      collect: () => {
        collections++;
        m.used -= garbage;
      },
      now: c.now,
    });
    const closed: string[] = [];
    const stall = (name: string) => stalls.begin(name, () => closed.push(name));
    return {
      c,
      stalls,
      m,
      rounds,
      guard,
      closed,
      stall,
      collections: () => collections,
    };
  }

  test("below the threshold nothing is shed; at it, the stalled past their grace are", () => {
    const s = setup(100 * MiB);
    s.stall("agent-a");
    s.c.advance(600);
    s.stall("agent-b"); // within its grace
    s.m.used = 79 * MiB;
    expect([s.guard.check(), s.collections()]).toEqual([0, 0]);
    s.m.used = 80 * MiB;
    expect(s.guard.check()).toBe(1);
    expect([s.closed, s.collections(), s.rounds]).toEqual([["agent-a"], 1, [[["agent-a", 1]]]]);
    expect([s.guard.usedBytes, s.guard.limitBytes]).toEqual([80 * MiB, 100 * MiB]);
  });

  test("nothing past its grace below the critical level: no collection either", () => {
    const s = setup(100 * MiB);
    s.stall("agent-a");
    s.m.used = 85 * MiB;
    expect([s.guard.check(), s.collections(), s.guard.pressed]).toEqual([0, 0, true]);
    s.c.advance(600);
    expect([s.guard.check(), s.collections()]).toEqual([1, 1]);
  });

  test("garbage first: when a collection brings use under the threshold, nothing is shed", () => {
    const s = setup(100 * MiB, 10 * MiB);
    s.stall("agent-a");
    s.c.advance(600);
    s.m.used = 85 * MiB;
    expect([s.guard.check(), s.collections(), s.closed]).toEqual([0, 1, []]);
    // A second round within the gap does not collect again; use is under the threshold.
    expect([s.guard.check(), s.collections()]).toEqual([0, 1]);
  });

  test("only as many as the use over the threshold needs (~2 MiB each), counted until collected", () => {
    const s = setup(100 * MiB);
    for (let i = 0; i < 10; i++) s.stall(`agent-${i}`);
    s.c.advance(600);
    s.m.used = 83 * MiB; // 3 MiB over: two stalls' worth, and one more
    expect(s.guard.check()).toBe(3);
    expect(s.closed).toEqual(["agent-0", "agent-1", "agent-2"]);
    // The next round, before a collection shows it: the 6 MiB shed count as freed.
    s.c.advance(20);
    expect(s.guard.check()).toBe(0);
    // A second later, use unchanged (nothing came back): shed again.
    s.c.advance(1100);
    expect(s.guard.check()).toBe(3);
  });

  test("at the critical threshold any stall is shed, however young — still only as needed", () => {
    const s = setup(100 * MiB);
    s.stall("old");
    s.c.advance(100);
    for (let i = 0; i < 20; i++) s.stall(`young-${i}`);
    s.m.used = 89 * MiB;
    expect(s.guard.check()).toBe(0); // under critical, nothing past its grace
    s.c.advance(300);
    s.m.used = 90 * MiB;
    expect(s.guard.check()).toBe(Math.ceil((10 * MiB) / (2 * MiB)) + 1);
    expect(s.closed[0]).toBe("old");
  });

  test("no limit: nothing is shed", () => {
    const s = setup(null);
    s.stall("agent-a");
    s.c.advance(600);
    s.m.used = 10 * totalmem();
    expect([s.guard.check(), s.closed, s.guard.limitBytes, s.guard.pressed]).toEqual([
      0,
      [],
      null,
      false,
    ]);
  });

  test("once started, a new stall starts a round; stopped, it does not", async () => {
    const s = setup(100 * MiB);
    s.m.used = 95 * MiB;
    s.guard.start();
    s.c.advance(20); // past the gap since start()'s own round
    s.stall("agent-a");
    expect(s.closed).toEqual([]); // not from inside begin(): the caller is still setting up
    await Promise.resolve();
    expect(s.closed).toEqual(["agent-a"]);
    s.guard.stop();
    s.c.advance(20);
    s.stall("agent-b");
    await Bun.sleep(150);
    expect([s.closed, s.stalls.size]).toEqual([["agent-a"], 1]);
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
