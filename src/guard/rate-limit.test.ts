import { expect, test } from "bun:test";
import { RateLimiter, sharedNow } from "./rate-limit.ts";

test("token bucket: burst, refill, per-agent isolation", () => {
  let now = 0;
  const rl = new RateLimiter(2, 3, () => now);
  expect([rl.take("a"), rl.take("a"), rl.take("a"), rl.take("a")]).toEqual([
    true,
    true,
    true,
    false,
  ]);
  expect(rl.take("b")).toBe(true); // another agent has its own bucket
  now += 500; // one token back at 2/s
  expect([rl.take("a"), rl.take("a")]).toEqual([true, false]);
  now += 10_000; // refills to burst, not beyond
  expect([rl.take("a"), rl.take("a"), rl.take("a"), rl.take("a")]).toEqual([
    true,
    true,
    true,
    false,
  ]);
});

test("bad limits are refused", () => {
  expect(() => new RateLimiter(0, 1)).toThrow(TypeError);
  expect(() => new RateLimiter(1, 0)).toThrow(TypeError);
});

test("limiters attached to one memory draw on the same buckets, each at its own rate", () => {
  let now = 0;
  const a = RateLimiter.create(1, 2, { capacity: 16, now: () => now });
  const b = RateLimiter.attach(a.memory, 4, 2, () => now);
  expect([a.take("x"), b.take("x"), a.take("x"), b.take("x")]).toEqual([true, true, false, false]);
  expect([b.take("y"), b.take("y"), b.take("y")]).toEqual([true, true, false]);
  now += 250; // a quarter of a token back at 1/s, one at 4/s
  expect([a.take("x"), b.take("y")]).toEqual([false, true]);
});

test("a clock behind the one that last counted a bucket neither refills nor drains it", () => {
  let now = 1000;
  const a = RateLimiter.create(1, 2, { capacity: 16, now: () => now });
  let late = 900;
  const b = RateLimiter.attach(a.memory, 1, 2, () => late);
  expect([a.take("x"), b.take("x"), b.take("x")]).toEqual([true, true, false]);
  late = 1999; // still before a's 1000 + 1 s
  now = 2000;
  expect([b.take("x"), a.take("x"), a.take("x")]).toEqual([false, true, false]);
});

test("a full table first drops buckets that have refilled; if none has, it refuses, saying so", () => {
  let now = 0;
  const rl = RateLimiter.create(1, 2, { capacity: 8, now: () => now });
  for (let i = 0; i < 7; i++) expect(rl.take(`agent${i}`)).toBe(true);
  expect(rl.admit("agent7", "rate limit exceeded")).toEqual({
    ok: false,
    code: "rate-limited",
    reason: "too many keys metered at once (rate table full, 7)",
  });
  expect(rl.take("agent0")).toBe(true); // a held bucket goes on
  now += 1000; // every bucket but agent0's is full again (and dropped as if never taken)
  expect(rl.admit("agent7", "rate limit exceeded").ok).toBe(true);
  expect([rl.take("agent7"), rl.take("agent7")]).toEqual([true, false]);
  expect(rl.take("agent0")).toBe(true); // kept: a token short of its burst
  expect(rl.admit("agent0", "rate limit exceeded")).toEqual({
    ok: false,
    code: "rate-limited",
    reason: "rate limit exceeded",
  });
});

test("the default clock is on one origin for every thread", () => {
  const before = performance.timeOrigin + performance.now();
  expect(sharedNow()).toBeGreaterThanOrEqual(before);
  expect(sharedNow()).toBeGreaterThan(1e12); // wall-clock milliseconds, not this thread's
});

test("memory that is not a rate table is refused", () => {
  const caps = new SharedArrayBuffer(64);
  expect(() => RateLimiter.attach(caps, 1, 1)).toThrow(TypeError);
});
