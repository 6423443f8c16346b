import { expect, test } from "bun:test";
import { RateLimiter } from "./rate-limit.ts";

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
