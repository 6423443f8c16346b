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

test("an owner takes at most its share; others keep the rest", () => {
  const b = new ByteBudget(100, 50);
  expect([b.acquire(30, "a"), b.acquire(30, "a"), b.acquire(20, "a")]).toEqual([true, false, true]);
  expect([b.usedBy("a"), b.used]).toEqual([50, 50]);
  // "a" is at its share; "b" still gets what is left of the budget, up to its own share.
  expect([b.acquire(1, "a"), b.acquire(50, "b"), b.acquire(1, "c")]).toEqual([false, true, false]);
  b.release(30, "a");
  expect([b.usedBy("a"), b.used, b.acquire(30, "c")]).toEqual([20, 70, true]);
  b.release(20, "a");
  b.release(50, "b");
  b.release(30, "c");
  expect([b.used, b.usedBy("a"), b.usedBy("b"), b.usedBy("c")]).toEqual([0, 0, 0, 0]);
  expect(() => new ByteBudget(100, 101)).toThrow(TypeError);
  expect(() => new ByteBudget(100, 0)).toThrow(TypeError);
});

test("holders lists who holds bytes now, and no one once all is given back", () => {
  const b = new ByteBudget(100, 60);
  b.acquire(10, "a");
  b.acquire(20, "b");
  b.acquire(5, "a");
  expect(b.holders().sort()).toEqual([
    ["a", 15],
    ["b", 20],
  ]);
  b.release(15, "a");
  b.release(20, "b");
  expect(b.holders()).toEqual([]);
});

test("budgets on one memory (event loops) draw on the same bytes and shares", () => {
  const a = new ByteBudget(100, 60);
  const b = new ByteBudget(100, 60, a.memory);
  expect(a.acquire(50, "x")).toBe(true);
  // The agent's share is counted across both: 50 + 20 > 60.
  expect(b.acquire(20, "x")).toBe(false);
  expect(b.acquire(10, "x")).toBe(true);
  expect(b.acquire(45, "y")).toBe(false); // 60 held of 100
  expect(b.acquire(40, "y")).toBe(true);
  expect(a.used).toBe(100);
  expect(a.holders().sort()).toEqual([
    ["x", 60],
    ["y", 40],
  ]);
  a.release(60, "x");
  expect(b.usedBy("x")).toBe(0);
  expect(b.used).toBe(40);
  expect(() => new ByteBudget(100, 60, new SharedArrayBuffer(64))).toThrow();
});
