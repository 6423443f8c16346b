import { expect, test } from "bun:test";
import { allocWithHeadroom, HEAD_ROOM, prependHead } from "./headroom.ts";

const enc = new TextEncoder();
const text = (b: Uint8Array) => new TextDecoder().decode(b);

test("a head goes into the room in front of a held body: one array, no copy of the body", () => {
  const body = allocWithHeadroom(5);
  body.set(enc.encode("hello"));
  const r = prependHead(enc.encode("HEAD\r\n\r\n"), body);
  expect(r.shared).toBe(true);
  expect(text(r.bytes)).toBe("HEAD\r\n\r\nhello");
  expect(r.bytes.buffer).toBe(body.buffer);
  // Again with another head (a retry): still right, the body untouched.
  const again = prependHead(enc.encode("H2\r\n\r\n"), body);
  expect(text(again.bytes)).toBe("H2\r\n\r\nhello");
  expect(text(body)).toBe("hello");
});

test("anything else is joined by copying", () => {
  const head = enc.encode("HEAD\r\n\r\n");
  const plain = enc.encode("plain");
  const a = prependHead(head, plain);
  expect(a.shared).toBe(false);
  expect(text(a.bytes)).toBe("HEAD\r\n\r\nplain");

  // A part of a held body is not the whole of it: its room is not its own.
  const held = allocWithHeadroom(10);
  held.set(enc.encode("0123456789"));
  const part = held.subarray(2);
  const b = prependHead(head, part);
  expect(b.shared).toBe(false);
  expect(text(held)).toBe("0123456789");

  // A head bigger than the room.
  const big = new Uint8Array(HEAD_ROOM + 1).fill(0x48);
  const c = prependHead(big, held);
  expect(c.shared).toBe(false);
  expect(c.bytes.length).toBe(HEAD_ROOM + 11);
  expect(text(c.bytes.subarray(HEAD_ROOM + 1))).toBe("0123456789");
});

test("an empty held body takes its head in the room too", () => {
  const r = prependHead(enc.encode("HEAD\r\n\r\n"), allocWithHeadroom(0));
  expect(r.shared).toBe(true);
  expect(text(r.bytes)).toBe("HEAD\r\n\r\n");
});
