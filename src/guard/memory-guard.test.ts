import { describe, expect, test } from "bun:test";
import { totalmem } from "node:os";
import { clock } from "../../test/support/fake-clock.ts";
import { ProxyMetrics } from "../observe/metrics.ts";
import type { MemoryProbe } from "./cgroup-probe.ts";
import { MemoryGuard, shedNeed } from "./memory-guard.ts";
import { StallRegistry } from "./stall-registry.ts";

const MiB = 1048576;

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

describe("shedNeed (pure)", () => {
  test("enough stalled connections to get back under the threshold, and one more", () => {
    expect(shedNeed(80 * MiB, 100 * MiB, 0.8, 0.9)).toEqual({ critical: false, need: 1 });
    expect(shedNeed(85 * MiB, 100 * MiB, 0.8, 0.9)).toEqual({ critical: false, need: 4 });
    expect(shedNeed(95 * MiB, 100 * MiB, 0.8, 0.9)).toEqual({ critical: true, need: 9 });
    // Two event loops, each with its guard reading the one process: each sheds half.
    expect(shedNeed(95 * MiB, 100 * MiB, 0.8, 0.9, 2)).toEqual({ critical: true, need: 5 });
  });
});
