import { expect, test } from "bun:test";
import { DialGate } from "./dial-gate.ts";

const never = new AbortController().signal;

test("at most `limit` at once; the rest in the order they came", async () => {
  const g = new DialGate(8); // two per owner
  const order: string[] = [];
  const releases: (() => void)[] = [];
  const take = (owner: string, n: number) =>
    g.acquire(owner, never).then((release) => {
      order.push(`${owner}${n}`);
      releases.push(release);
    });
  const all = [take("a", 1), take("b", 1), take("c", 1), take("d", 1)];
  all.push(take("a", 2), take("b", 2), take("c", 2), take("d", 2), take("e", 1), take("f", 1));
  await Bun.sleep(0);
  expect(order).toEqual(["a1", "b1", "c1", "d1", "a2", "b2", "c2", "d2"]);
  expect([g.active, g.waiting]).toEqual([8, 2]);
  releases[0]!();
  releases[0]!(); // twice is once
  await Bun.sleep(0);
  expect(order.at(-1)).toBe("e1");
  releases[1]!();
  await Bun.sleep(0);
  await Promise.all(all);
  expect(order.at(-1)).toBe("f1");
  for (const r of releases) r();
  expect([g.active, g.waiting]).toEqual([0, 0]);
});

test("an owner holds a quarter of the places: its own extra dials wait, others go ahead", async () => {
  const g = new DialGate(8);
  const mine = await Promise.all([g.acquire("slow", never), g.acquire("slow", never)]);
  let third = false;
  const later = g.acquire("slow", never).then((r) => {
    third = true;
    return r;
  });
  // Another agent is not held up by the first one's stalled dials.
  const other = await g.acquire("other", never);
  await Bun.sleep(0);
  expect(third).toBe(false);
  mine[0]!();
  (await later)();
  expect(third).toBe(true);
  mine[1]!();
  other();
  expect([g.active, g.waiting]).toEqual([0, 0]);
});

test("one that leaves while waiting gives up its place; one that left before never enters", async () => {
  const g = new DialGate(1);
  const first = await g.acquire("a", never);
  const leaving = new AbortController();
  const waiting = g.acquire("b", leaving.signal);
  const after = g.acquire("c", never);
  leaving.abort(new Error("agent left"));
  await expect(waiting).rejects.toThrow("agent left");
  expect(g.waiting).toBe(1);
  first();
  (await after)();
  expect([g.active, g.waiting]).toEqual([0, 0]);
  await expect(g.acquire("b", leaving.signal)).rejects.toThrow("agent left");
  expect(g.active).toBe(0);
});
