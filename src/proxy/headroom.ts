// Bodies the proxy holds whole are collected into a buffer with free room in front of them, so
// the HTTP head can later be written into that room and head + body leave in one write without
// another copy of the body (at 100 KB per exchange, those copies were a fifth of what the
// proxy's main heap collected). Only buffers made here have that room; anything else is joined
// by copying, as before.

/** Room kept in front of a held body: more than any ordinary head needs. */
export const HEAD_ROOM = 8 * 1024;

/** Buffers allocated here → the offset at which their body starts (the room before it). */
const room = new WeakMap<ArrayBufferLike, number>();

/** A zero-filled body of `length` bytes with HEAD_ROOM free bytes in front of it. */
export function allocWithHeadroom(length: number): Uint8Array {
  const all = new Uint8Array(HEAD_ROOM + length);
  room.set(all.buffer, HEAD_ROOM);
  return all.subarray(HEAD_ROOM);
}

/**
 * `head` followed by `body` as one array. When `body` was made by allocWithHeadroom (and is
 * still the whole of it), the head is written into the room in front of it and the result
 * shares `body`'s memory; otherwise it is a fresh copy. `shared` says which.
 */
export function prependHead(
  head: Uint8Array,
  body: Uint8Array,
): { bytes: Uint8Array; shared: boolean } {
  const start = room.get(body.buffer);
  if (
    start !== undefined &&
    body.byteOffset === start &&
    body.byteOffset + body.length === body.buffer.byteLength &&
    head.length <= start
  ) {
    const bytes = new Uint8Array(body.buffer, start - head.length, head.length + body.length);
    bytes.set(head, 0);
    return { bytes, shared: true };
  }
  const bytes = new Uint8Array(head.length + body.length);
  bytes.set(head, 0);
  bytes.set(body, head.length);
  return { bytes, shared: false };
}
