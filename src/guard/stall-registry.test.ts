import { describe, expect, test } from "bun:test";
import { clock } from "../../test/support/fake-clock.ts";
import { chooseVictims, LINGER_MS, StallCounts, StallRegistry } from "./stall-registry.ts";

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
    a.close();
    expect([r.stalledBy("a"), r.any(100), r.any(101)]).toEqual([1, true, false]);
  });

  test("a connection that trickles bytes between stalls counts as one stall throughout", () => {
    const c = clock();
    const r = new StallRegistry(c.now);
    const shed: string[] = [];
    const a = r.begin("a", () => shed.push("a"));
    c.advance(3000);
    a.end(); // its agent's kernel took a gulp
    // Not waiting now: not in the gauge, not shed, but still one of the agent's stalls.
    expect([r.size, r.any(0), r.stalledBy("a")]).toEqual([0, false, 1]);
    expect([...r.shed(0)]).toEqual([]);
    c.advance(LINGER_MS - 1);
    a.again(); // waiting again: the same entry, its grace from now
    expect([r.size, r.stalledBy("a"), r.any(1)]).toEqual([1, 1, false]);
    c.advance(500);
    a.again(); // a second wait while still waiting does not restart the grace
    expect(r.any(500)).toBe(true);
    a.end();
    c.advance(LINGER_MS);
    expect([r.size, r.stalledBy("a")]).toEqual([0, 0]); // forgotten after the linger
    a.again(); // and counted again when it waits again
    expect([r.size, r.stalledBy("a")]).toEqual([1, 1]);
    a.close();
    expect([r.size, r.stalledBy("a"), shed]).toEqual([0, 0, []]);
  });
});

describe("several event loops: one registry each, counts shared", () => {
  test("an agent's stalls count in every loop, for admission and for rank", () => {
    const c = clock();
    const counts = StallCounts.create(64);
    // Each loop attaches to the same memory, as a Worker does.
    const one = new StallRegistry(c.now, new StallCounts(counts.memory));
    const two = new StallRegistry(c.now, new StallCounts(counts.memory));
    const shed: string[] = [];
    for (let i = 0; i < 5; i++) one.begin("many", () => shed.push(`many-${i}`));
    two.begin("many", () => shed.push("many-two"));
    const reader = two.begin("slow-reader", () => shed.push("slow-reader"));
    expect([one.stalledBy("many"), two.stalledBy("many"), two.stalledBy("slow-reader")]).toEqual([
      6, 6, 1,
    ]);
    c.advance(5000);
    // Loop two alone would see one stall each and might shed the reader's: the agent holding six
    // across the loops goes first.
    expect([...two.shed(1000, 1)]).toEqual([["many", 1]]);
    expect(shed).toEqual(["many-two"]);
    // Still five elsewhere: the reader, holding one, is not touched in loop two.
    expect([...two.shed(1000)]).toEqual([]);
    expect([...one.shed(1000, 4)]).toEqual([["many", 4]]);
    // One each now, in different loops: each loop sheds its own (they cannot compare ages).
    expect([...two.shed(1000, 1)]).toEqual([["slow-reader", 1]]);
    expect([...one.shed(1000, 1)]).toEqual([["many", 1]]);
    expect([one.stalledBy("many"), two.stalledBy("slow-reader")]).toEqual([0, 0]);
    reader.close(); // closing a shed stall is harmless
    expect(one.stalledBy("slow-reader")).toBe(0);
  });

  test("a lingering stall stays counted in every loop until it is forgotten", () => {
    const c = clock();
    const counts = StallCounts.create(64);
    const one = new StallRegistry(c.now, new StallCounts(counts.memory));
    const two = new StallRegistry(c.now, new StallCounts(counts.memory));
    const s = one.begin("a", () => {});
    s.end();
    s.again();
    s.end(); // ended twice, begun twice: one connection
    expect(two.stalledBy("a")).toBe(1);
    c.advance(LINGER_MS);
    one.prune(); // a loop's own rounds forget what lingered long enough
    expect(two.stalledBy("a")).toBe(0);
  });
});

describe("several event loops: what lingers counts for admission, never for rank (an attacker's review)", () => {
  const loops = (now: () => number) => {
    const counts = StallCounts.create(64);
    return [
      new StallRegistry(now, new StallCounts(counts.memory)),
      new StallRegistry(now, new StallCounts(counts.memory)),
    ] as const;
  };

  test("an agent's lingering stall in this loop does not hide its waiting ones elsewhere", () => {
    const c = clock();
    const [a, b] = loops(c.now);
    const shed: string[] = [];
    for (let i = 0; i < 10; i++) a.begin("x", () => shed.push("x"));
    b.begin("reader", () => shed.push("reader"));
    c.advance(2500);
    const trickle = b.begin("x", () => shed.push("x-in-b"));
    c.advance(100);
    trickle.end(); // x's connection in b took a gulp: it lingers
    c.advance(400);
    expect(b.stalledBy("x")).toBe(11);
    // x holds ten waiting in a: the reader, holding one, does not pay in b.
    expect([...b.shed(2000, 1)]).toEqual([]);
    expect(shed).toEqual([]);
  });

  test("stalls that only linger do not rank their agent above one that holds memory", () => {
    const c = clock();
    const [a, b] = loops(c.now);
    const shed: string[] = [];
    // x reads in gulps: fourteen connections that each ended their stall a moment ago.
    for (let i = 0; i < 14; i++) a.begin("x", () => shed.push("x")).end();
    for (let i = 0; i < 12; i++) b.begin("y", () => shed.push("y"));
    c.advance(500);
    expect([b.stalledBy("x"), b.stalledBy("y")]).toEqual([14, 12]);
    // Critical (no grace): y's waiting stalls go; x's lingering ones hold nothing to shed.
    expect([...b.shed(0, 3)]).toEqual([["y", 3]]);
  });

  test("what lingered past its time in a loop that has not pruned it is not counted", () => {
    const c = clock();
    const [a, b] = loops(c.now);
    for (let i = 0; i < 8; i++) a.begin("honest", () => {}).end(); // idle keep-alive tunnels
    expect(b.stalledBy("honest")).toBe(8);
    c.advance(LINGER_MS);
    // Loop a has not run a round since: its entries are still in the shared table.
    expect(b.stalledBy("honest")).toBe(0);
    a.begin("honest", () => {});
    expect(b.stalledBy("honest")).toBe(1);
    a.prune();
    expect(b.stalledBy("honest")).toBe(1);
  });
});

describe("chooseVictims (pure)", () => {
  const s = (agent: string, since: number) => ({ agent, since });

  test("the agent holding the most stalls loses them first, its longest-stalled first", () => {
    const stalls = [s("a", 300), s("b", 100), s("a", 200), s("a", 250)];
    expect(chooseVictims(stalls, 1000, 500, 2)).toEqual([s("a", 200), s("a", 250)]);
  });

  test("once agents hold as many, the longer-stalled goes", () => {
    const stalls = [s("a", 300), s("b", 100), s("a", 200)];
    expect(chooseVictims(stalls, 1000, 500, 3)).toEqual([s("a", 200), s("b", 100), s("a", 300)]);
  });

  test("stalls in other loops rank an agent, but only this loop's are chosen", () => {
    const stalls = [s("a", 100), s("b", 300), s("b", 400)];
    // b holds two here and one elsewhere; c holds four elsewhere: nobody here holds as many.
    expect(chooseVictims(stalls, 1000, 500, 5, { of: new Map([["b", 1]]), most: 4 })).toEqual([]);
    // Another agent holds two elsewhere: b (three with the one elsewhere) goes down to two,
    // then one; a, holding one, does not pay while the other holds two.
    expect(chooseVictims(stalls, 1000, 500, 5, { of: new Map([["b", 1]]), most: 2 })).toEqual([
      s("b", 300),
      s("b", 400),
    ]);
  });

  test("nobody holding fewer pays for an agent whose stalls are all within their grace", () => {
    const stalls = [s("a", 900), s("a", 950), s("b", 100)];
    expect(chooseVictims(stalls, 1000, 500, 5)).toEqual([]);
    // Past the critical level every stall is due: the burst goes first, then the ranks even out.
    expect(chooseVictims(stalls, 1000, 0, 2)).toEqual([s("a", 900), s("b", 100)]);
  });
});
