// Tests of the pool's recycled message buffers: what is kept, what is handed out, the cap.

import { expect, test } from "bun:test";
import { keepable, MessageBuffers } from "./message-buffers.ts";

test("take hands out a buffer of the ring's size, recycled when one was given back", () => {
  const ring = new MessageBuffers(1024, 2);
  const a = ring.take();
  expect(a.byteLength).toBe(1024);
  expect(new Uint8Array(a).every((b) => b === 0)).toBe(true);
  expect(ring.give(a)).toBe(true);
  expect(ring.held).toBe(1);
  expect(ring.take()).toBe(a);
  expect(ring.held).toBe(0);
  expect(ring.take()).not.toBe(a);
});

test("give keeps only buffers of the ring's size that are usable, up to the cap", () => {
  const ring = new MessageBuffers(1024, 2);
  expect(ring.give(new ArrayBuffer(1023))).toBe(false);
  expect(ring.give(new ArrayBuffer(1024, { maxByteLength: 2048 }))).toBe(false);
  const detached = new ArrayBuffer(1024);
  detached.transfer();
  expect(ring.give(detached)).toBe(false);
  expect(ring.give(new ArrayBuffer(1024))).toBe(true);
  expect(ring.give(new ArrayBuffer(1024))).toBe(true);
  expect(ring.give(new ArrayBuffer(1024))).toBe(false);
  expect(ring.held).toBe(2);
  ring.clear();
  expect(ring.held).toBe(0);
});

test.each([
  [1024, 1024, true],
  [1000, 1024, false],
  [2048, 1024, false],
])("keepable(%i bytes, size %i) is %p", (bytes, size, want) => {
  expect(keepable(new ArrayBuffer(bytes), size)).toBe(want);
});
