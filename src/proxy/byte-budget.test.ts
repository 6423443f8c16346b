import { expect, test } from "bun:test";
import { ByteBudget } from "./byte-budget.ts";

test("acquire within capacity, refuse beyond it, release returns bytes", () => {
  const b = new ByteBudget(100);
  expect([b.acquire(60), b.acquire(50), b.acquire(40)]).toEqual([true, false, true]);
  expect(b.used).toBe(100);
  b.release(60);
  expect([b.acquire(60), b.used]).toEqual([true, 100]);
  expect(b.acquire(-1)).toBe(false);
  expect(() => new ByteBudget(0)).toThrow(TypeError);
});
