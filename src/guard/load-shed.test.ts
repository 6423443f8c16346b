import { expect, test } from "bun:test";
import { LoadShedder } from "./load-shed.ts";

const opts = { shedAtMs: 250, resumeAtMs: 100, windowMs: 1_000 };

test("sheds once the loop is late for most of the window, resumes only well under it", () => {
  const s = new LoadShedder(opts);
  let t = 0;
  const feed = (lag: number, n: number) => {
    for (let i = 0; i < n; i++) {
      t += 50;
      s.sample(lag, t);
    }
  };
  feed(5, 20);
  expect(s.shedding).toBe(false);
  expect(s.lateMs).toBe(5);
  // One long pause (a GC, a big handshake) is not overload.
  feed(900, 1);
  expect(s.shedding).toBe(false);
  feed(300, 12);
  expect(s.shedding).toBe(true);
  // Between the two marks nothing changes: no flapping.
  feed(180, 25);
  expect(s.shedding).toBe(true);
  feed(20, 25);
  expect(s.shedding).toBe(false);
});

test("old samples leave the window", () => {
  const s = new LoadShedder(opts);
  s.sample(400, 0);
  s.sample(400, 10);
  expect(s.shedding).toBe(true);
  s.sample(10, 5_000);
  expect(s.shedding).toBe(false);
});
