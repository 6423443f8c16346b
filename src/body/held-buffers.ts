// Bodies the proxy holds whole are collected into a buffer with free room in front of them, so
// the HTTP head can later be written into that room and head + body leave in one write without
// another copy of the body (at 100 KB per exchange, those copies were a fifth of what the
// proxy's main heap collected).
//
// The buffers are also reused. Every held body used to be a fresh ~100 KB array, and arrays that
// size are what triggers the engine's collections (JavaScriptCore counts them as "oversized"
// allocations: 30 MB of them per eden collection, against 3 MB of ordinary objects). Buffers of
// up to POOLED_MAX_BYTES come from small per-size free lists instead. The rules that keep one
// exchange's bytes out of another's:
//   - the owner hands a buffer back with `releaseHeld` when it is done with it; the buffer is
//     zeroed then, whether or not it is reused (a held body may carry a real credential);
//   - a write that still refers to the buffer pins it (`pinHeld`); it goes back to its free
//     list only once the owner has released it and every such write has completed;
//   - a buffer whose write failed, or that was released twice, is zeroed and left to the
//     collector, never reused.

/** Room kept in front of a held body: more than any ordinary head needs. */
export const HEAD_ROOM = 8 * 1024;

/** Held bodies up to this size come from (and go back to) the free lists. */
export const POOLED_MAX_BYTES = 256 * 1024;
const SMALLEST_CLASS = 16 * 1024;
/** Idle buffers kept per size class (16, 32, 64, 128, 256 KiB): at most ~4 MiB in all. */
const FREE_PER_CLASS = 8;

interface Slab {
  /** The whole buffer, room included. */
  readonly all: Uint8Array;
  /** Size class index, or -1 for a buffer too large to pool. */
  readonly cls: number;
  /** Bytes from the start that may hold data (room + body): what zeroing covers. */
  used: number;
  /** Writes in flight that refer to the buffer. */
  pins: number;
  released: boolean;
  /** A write failed or the buffer was released twice: zero it, never reuse it. */
  spoiled: boolean;
  /** Zeroed and done with: this record no longer speaks for the buffer. */
  recycled: boolean;
}

// Keyed by the body view handed out, not by the buffer: a reused buffer gets a new view and a
// new record, so a stale view of its previous use can neither pin nor release it.
const slabs = new WeakMap<Uint8Array, Slab>();
const free: Uint8Array[][] = [[], [], [], [], []];

function classOf(length: number): number {
  if (length > POOLED_MAX_BYTES) return -1;
  let cls = 0;
  for (let size = SMALLEST_CLASS; size < length; size *= 2) cls++;
  return cls;
}

/**
 * A zero-filled body of `length` bytes with HEAD_ROOM free bytes in front of it, reused from a
 * free list when one of its size is idle. Hand it back with `releaseHeld` when done.
 */
export function allocWithHeadroom(length: number): Uint8Array {
  const cls = classOf(length);
  let all = cls >= 0 ? free[cls]!.pop() : undefined;
  if (all === undefined) {
    all = new Uint8Array(HEAD_ROOM + (cls >= 0 ? SMALLEST_CLASS << cls : length));
  }
  const body = all.subarray(HEAD_ROOM, HEAD_ROOM + length);
  slabs.set(body, {
    all,
    cls,
    used: HEAD_ROOM + length,
    pins: 0,
    released: false,
    spoiled: false,
    recycled: false,
  });
  return body;
}

/**
 * The owner is done with `body`: it is zeroed now, or — while a write still refers to it — as
 * soon as the last such write completes, and then reused. An array not made by
 * allocWithHeadroom is zeroed at once.
 */
export function releaseHeld(body: Uint8Array): void {
  const slab = slabs.get(body);
  if (slab === undefined) {
    body.fill(0);
    return;
  }
  if (slab.recycled) return; // already zeroed; the buffer may be somebody else's by now
  if (slab.released) {
    // Released twice while a write still refers to it: a confused owner. Never reuse it.
    slab.spoiled = true;
    return;
  }
  slab.released = true;
  if (slab.pins === 0) recycle(slab);
}

/**
 * A write that refers to `body`'s buffer is starting: the buffer is not zeroed or reused until
 * the returned function is called (`ok`: the write completed; false: it failed). Calls after the
 * first do nothing.
 */
export function pinHeld(body: Uint8Array): (ok: boolean) => void {
  const slab = slabs.get(body);
  if (slab === undefined || slab.released) return () => {};
  slab.pins++;
  let done = false;
  return (ok) => {
    if (done) return;
    done = true;
    if (!ok) slab.spoiled = true;
    slab.pins--;
    if (slab.pins === 0 && slab.released) recycle(slab);
  };
}

function recycle(slab: Slab): void {
  slab.all.fill(0, 0, slab.used);
  slab.recycled = true;
  if (slab.spoiled || slab.cls < 0) return;
  const list = free[slab.cls]!;
  if (list.length < FREE_PER_CLASS) list.push(slab.all);
}

/**
 * `head` followed by `body` as one array. When `body` is a body allocWithHeadroom made (the
 * very array it returned, still held) and the head fits the room, the head is written into the room and the result shares `body`'s
 * memory (pin it while a write refers to it); otherwise it is a fresh copy. `shared` says which.
 */
export function prependHead(
  head: Uint8Array,
  body: Uint8Array,
): { bytes: Uint8Array; shared: boolean } {
  const slab = slabs.get(body);
  if (slab !== undefined && !slab.released && head.length <= HEAD_ROOM) {
    const bytes = new Uint8Array(body.buffer, HEAD_ROOM - head.length, head.length + body.length);
    bytes.set(head, 0);
    return { bytes, shared: true };
  }
  const bytes = new Uint8Array(head.length + body.length);
  bytes.set(head, 0);
  bytes.set(body, head.length);
  return { bytes, shared: false };
}

/**
 * `head` followed by `body`, ready for one socket write, and the callback that write must get:
 * when the bytes share the held body's buffer, that buffer stays pinned until it is called;
 * when they are a copy (a swapped body carries real values), the copy is wiped then.
 */
export function headFirst(
  head: Uint8Array,
  body: Uint8Array,
): { bytes: Uint8Array; written: (ok: boolean) => void } {
  const { bytes, shared } = prependHead(head, body);
  return { bytes, written: shared ? pinHeld(body) : () => bytes.fill(0) };
}

/** Idle buffers per size class (for tests). */
export function heldPoolIdle(): number[] {
  return free.map((l) => l.length);
}
