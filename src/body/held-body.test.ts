import { expect, test } from "bun:test";
import { ByteBudget } from "../guard/byte-budget.ts";
import { HeldBody, holdWhole } from "./held-body.ts";
import { allocWithHeadroom } from "./held-buffers.ts";

const streamOf = (...parts: string[]) =>
  new ReadableStream<Uint8Array>({
    start(c) {
      for (const p of parts) c.enqueue(new TextEncoder().encode(p));
      c.close();
    },
  });

test("released once: the bytes are wiped and the hold's duty done, a second release does nothing", () => {
  const bytes = allocWithHeadroom(8).fill(0x52);
  let done = 0;
  const h = new HeldBody(bytes, () => done++);
  h.release();
  h.release();
  expect(done).toBe(1);
  expect(bytes.every((b) => b === 0)).toBe(true);
});

test("replaced: the old bytes are wiped now, the new ones carry the hold on", () => {
  const first = allocWithHeadroom(4).fill(1);
  const second = allocWithHeadroom(6).fill(2);
  let done = 0;
  const h = new HeldBody(first, () => done++).replace(second);
  expect(first.every((b) => b === 0)).toBe(true);
  expect(h.bytes).toBe(second);
  expect(done).toBe(0);
  h.release();
  expect(done).toBe(1);
});

test("holdWhole charges the budget until released, and refuses (503) beyond it", async () => {
  const budget = new ByteBudget(10, 10);
  const h = await holdWhole(budget, "agent-a", streamOf("hel", "lo"), 8, 100);
  expect(new TextDecoder().decode(h.bytes)).toBe("hello");
  expect(budget.acquire(3, "agent-b")).toBe(false);
  let cancelled = false;
  const over = new ReadableStream({
    cancel() {
      cancelled = true;
    },
  });
  await expect(holdWhole(budget, "agent-b", over, 5, 100)).rejects.toMatchObject({
    code: "overloaded",
  });
  expect(cancelled).toBe(true);
  h.release();
  expect(budget.acquire(10, "agent-b")).toBe(true);
});

test("a body over the cap is refused and its share given back", async () => {
  const budget = new ByteBudget(100, 100);
  await expect(holdWhole(budget, "a", streamOf("0123456789"), 20, 4)).rejects.toMatchObject({
    code: "body-too-large",
  });
  expect(budget.acquire(100, "a")).toBe(true);
});
