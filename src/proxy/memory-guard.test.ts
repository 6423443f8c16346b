import { afterAll, describe, expect, test } from "bun:test";
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir, totalmem } from "node:os";
import { join } from "node:path";
import {
  cgroupProbe,
  configuredProbe,
  MemoryGuard,
  type MemoryProbe,
  StallRegistry,
} from "./memory-guard.ts";
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

/** A connection of `agent` for the registry. */
function conn(agent: string, tcp: string | null = null) {
  return { agent, tcp, reader: false };
}

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
    const a = r.begin(conn("agent-a"), () => order.push("a"));
    c.advance(100);
    r.begin(conn("agent-b"), () => order.push("b"));
    c.advance(100);
    const fresh = r.begin(conn("agent-b"), () => order.push("fresh"));
    const gone = r.begin(conn("agent-c"), () => order.push("gone"));
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
      r.begin(conn("a"), () => order.push(i));
      c.advance(10);
    }
    expect([...r.shed(0, 2)]).toEqual([["a", 2]]);
    expect([order, r.size]).toEqual([[0, 1], 3]);
  });

  test("a kernel send queue that shrank is progress; one that did not, or unknown, is not", () => {
    const c = clock();
    const r = new StallRegistry(c.now);
    const order: string[] = [];
    r.begin(conn("reader", "k1"), () => order.push("reader"));
    r.begin(conn("stuck", "k2"), () => order.push("stuck"));
    r.begin(conn("unknown"), () => order.push("unknown"));
    r.observe(
      new Map([
        ["k1", 4000000],
        ["k2", 4000000],
      ]),
    );
    c.advance(3000);
    r.observe(
      new Map([
        ["k1", 3934464],
        ["k2", 4000000],
      ]),
    );
    c.advance(100);
    expect([...r.shed(2000)].map(([a]) => a)).toEqual(["stuck", "unknown"]);
    expect(r.size).toBe(1);
  });

  test("a connection that came out of a long stall is a reader: shed after those never seen to read", () => {
    const c = clock();
    const r = new StallRegistry(c.now);
    const order: string[] = [];
    const slow = conn("slow");
    const quick = conn("quick");
    // Short stalls (buffers filling) say nothing; a long one that ends in progress does.
    r.begin(quick, () => order.push("quick")).end();
    c.advance(10);
    const s1 = r.begin(slow, () => order.push("slow"));
    c.advance(600);
    s1.end();
    expect([slow.reader, quick.reader]).toEqual([true, false]);
    r.begin(slow, () => order.push("slow")); // its next stall: the oldest now
    c.advance(100);
    r.begin(conn("never"), () => order.push("never"));
    r.begin(quick, () => order.push("quick"));
    c.advance(1000);
    expect([...r.shed(0, 2)].map(([a]) => a)).toEqual(["never", "quick"]);
    expect([...r.shed(0)].map(([a]) => a)).toEqual(["slow"]);
  });
});

/** A probe the test sets: use and limit; `afterCollect` is what use becomes after a collection. */
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
    const queues = new Map<string, number>();
    let queueReads = 0;
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
      sendQueues: () => {
        queueReads++;
        return queues;
      },
      now: c.now,
    });
    const closed: string[] = [];
    const stall = (name: string, tcp: string | null = null) =>
      stalls.begin(conn(name, tcp), () => closed.push(name));
    return {
      c,
      stalls,
      m,
      rounds,
      guard,
      closed,
      stall,
      queues,
      collections: () => collections,
      queueReads: () => queueReads,
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

  test("near the threshold the kernel's send queues are read, and a reader they show keeps its connection", () => {
    const s = setup(100 * MiB);
    s.stall("reader", "k-reader");
    s.stall("stuck", "k-stuck");
    s.m.used = 60 * MiB; // below the watch level (65 %): read every 250 ms
    s.queues.set("k-reader", 4 * MiB).set("k-stuck", 4 * MiB);
    s.guard.check();
    s.c.advance(100);
    s.guard.check();
    expect(s.queueReads()).toBe(1);
    s.m.used = 70 * MiB; // above it: every 50 ms
    s.c.advance(50);
    s.guard.check();
    expect(s.queueReads()).toBe(2);
    s.c.advance(850);
    s.queues.set("k-reader", 4 * MiB - 65536);
    s.guard.check();
    s.c.advance(300); // the reader took bytes 300 ms ago (its socket still not writable), the other 1.3 s
    s.m.used = 81 * MiB;
    expect(s.guard.check()).toBe(1);
    expect([s.closed, s.queueReads()]).toEqual([["stuck"], 4]);
  });

  test("no limit: nothing is read from the kernel, nothing is shed", () => {
    const s = setup(null);
    s.stall("agent-a", "k");
    s.c.advance(600);
    s.m.used = 10 * totalmem();
    expect([s.guard.check(), s.closed, s.guard.limitBytes, s.queueReads()]).toEqual([
      0,
      [],
      null,
      0,
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
