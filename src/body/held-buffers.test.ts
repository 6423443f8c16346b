import { describe, expect, test } from "bun:test";
import net from "node:net";
import {
  allocWithHeadroom,
  HEAD_ROOM,
  heldPoolIdle,
  POOLED_MAX_BYTES,
  pinHeld,
  prependHead,
  releaseHeld,
} from "./held-buffers.ts";

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

/** Twenty allocations of `size` later, `body`'s buffer was handed out to none of them. */
function expectNeverReused(body: Uint8Array, size: number): void {
  const seen = new Set<ArrayBufferLike>();
  for (let i = 0; i < 20; i++) seen.add(allocWithHeadroom(size).buffer);
  expect(seen.has(body.buffer)).toBe(false);
}

describe("held buffers are reused, never while in use, and always zeroed first", () => {
  test("a released body is zeroed, and its buffer serves the next body of its size", () => {
    const a = allocWithHeadroom(100_000);
    a.fill(0x41);
    const buffer = a.buffer;
    releaseHeld(a);
    expect(a.every((x) => x === 0)).toBe(true);
    const b = allocWithHeadroom(90_000);
    expect(b.buffer).toBe(buffer);
    expect(b.every((x) => x === 0)).toBe(true);
    releaseHeld(b);
  });

  test("a body a write still refers to is neither zeroed nor reused until that write is done", () => {
    const a = allocWithHeadroom(50_000);
    a.fill(0x42);
    const r = prependHead(enc.encode("HEAD\r\n\r\n"), a);
    expect(r.shared).toBe(true);
    const done = pinHeld(a);
    releaseHeld(a); // the owner is done, the socket is not
    expect(a[0]).toBe(0x42);
    const other = allocWithHeadroom(50_000);
    expect(other.buffer).not.toBe(a.buffer);
    done(true);
    expect(a.every((x) => x === 0)).toBe(true);
    expect(r.bytes.every((x) => x === 0)).toBe(true); // the head in the room too
    const next = allocWithHeadroom(50_000);
    expect(next.buffer).toBe(a.buffer);
    releaseHeld(other);
    releaseHeld(next);
  });

  test("a buffer whose write failed is zeroed and never handed out again", () => {
    const a = allocWithHeadroom(20_000);
    a.fill(0x43);
    const done = pinHeld(a);
    releaseHeld(a);
    done(false);
    expect(a.every((x) => x === 0)).toBe(true);
    expectNeverReused(a, 20_000);
  });

  test("a stale view of a reused buffer can neither release nor pin its new owner's bytes", () => {
    const old = allocWithHeadroom(30_000);
    releaseHeld(old);
    const mine = allocWithHeadroom(30_000);
    expect(mine.buffer).toBe(old.buffer);
    mine.fill(0x44);
    releaseHeld(old); // a confused former owner
    pinHeld(old)(false);
    expect(mine.every((x) => x === 0x44)).toBe(true);
    expect(prependHead(enc.encode("H\r\n\r\n"), old).shared).toBe(false);
    const another = allocWithHeadroom(30_000);
    expect(another.buffer).not.toBe(mine.buffer);
    releaseHeld(mine);
    releaseHeld(another);
  });

  test("released twice while written: zeroed when the write ends, never reused", () => {
    const a = allocWithHeadroom(40_000);
    a.fill(0x45);
    const done = pinHeld(a);
    releaseHeld(a);
    releaseHeld(a);
    expect(a[0]).toBe(0x45);
    done(true);
    expect(a.every((x) => x === 0)).toBe(true);
    expectNeverReused(a, 40_000);
  });

  test("a released body no longer takes a head in its room", () => {
    const a = allocWithHeadroom(10);
    releaseHeld(a);
    expect(prependHead(enc.encode("H\r\n\r\n"), a).shared).toBe(false);
  });

  test("bodies over the pooled size are zeroed on release and not kept", () => {
    const big = allocWithHeadroom(POOLED_MAX_BYTES + 1);
    big.fill(0x46);
    const before = heldPoolIdle().reduce((x, y) => x + y, 0);
    releaseHeld(big);
    expect(big.every((x) => x === 0)).toBe(true);
    expect(heldPoolIdle().reduce((x, y) => x + y, 0)).toBe(before);
  });

  test("an array not made here is zeroed at once", () => {
    const plain = new Uint8Array(8).fill(7);
    releaseHeld(plain);
    expect(plain.every((x) => x === 0)).toBe(true);
  });
});

test("a write queued behind another still reads the held bytes: the pin is what keeps them", async () => {
  // The runtime keeps a reference to a write queued behind an unfinished one (it does not
  // copy it), so zeroing or reusing the buffer before that write's callback would change the
  // bytes that go out. This is the case pinHeld exists for.
  const FILL = 8 << 20;
  const SIZE = 200_000;
  let peer!: net.Socket;
  let accepted!: () => void;
  const acceptedP = new Promise<void>((r) => {
    accepted = r;
  });
  const server = net.createServer((s) => {
    peer = s;
    s.pause();
    accepted();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const sock = net.connect((server.address() as net.AddressInfo).port, "127.0.0.1");
  await new Promise((r) => sock.once("connect", r));
  await acceptedP;
  try {
    sock.write(new Uint8Array(FILL)); // the peer is not reading: this one stays unfinished
    const body = allocWithHeadroom(SIZE).fill(0x47);
    const { bytes, shared } = prependHead(enc.encode("H\r\n\r\n"), body);
    expect(shared).toBe(true);
    const unpin = pinHeld(body);
    sock.write(bytes, (err) => unpin(!err));
    releaseHeld(body); // the owner lets go while the write is queued
    const next = allocWithHeadroom(SIZE).fill(0x58); // another exchange wants a buffer now
    expect(next.buffer).not.toBe(body.buffer);
    let got = 0;
    let tail = Buffer.alloc(0);
    await new Promise<void>((done) => {
      peer.on("data", (d: Buffer) => {
        got += d.length;
        if (got > FILL)
          tail = Buffer.concat([tail, d.subarray(Math.max(0, d.length - (got - FILL)))]);
        if (got >= FILL + bytes.length) done();
      });
      peer.resume();
    });
    expect(tail.subarray(0, 5).toString("latin1")).toBe("H\r\n\r\n");
    expect(tail.subarray(5).every((x) => x === 0x47)).toBe(true);
    await Bun.sleep(10);
    expect(body.every((x) => x === 0)).toBe(true); // zeroed once the write was done
    releaseHeld(next);
  } finally {
    sock.destroy();
    peer?.destroy();
    server.close();
  }
});
