// The pool's recycled message buffers: the main thread copies a stream's input into one, it is
// transferred to a worker, and the worker hands it back zeroed with the push's answer, so a
// message costs no allocation on the main thread (a fresh buffer per message was most of its
// time: zeroing, and the first write to pages the allocator had just mapped). It must never
// hand out a buffer that is not all zeros: a buffer comes back only from a worker that zeroed
// what the message put in it, and a buffer the pool itself abandons is zeroed before it is kept.

export class MessageBuffers {
  private readonly free: ArrayBuffer[] = [];

  constructor(
    /** Bytes per buffer: the largest message the pool builds. */
    readonly size: number,
    /** Free buffers kept at most; more are left to the collector (the rest stay in flight). */
    readonly keep: number,
  ) {}

  /** An all-zero buffer of `size` bytes, recycled when one is free. */
  take(): ArrayBuffer {
    return this.free.pop() ?? new ArrayBuffer(this.size);
  }

  /**
   * Keep `buf` for reuse if it is one of ours (its size, not detached, not resizable) and
   * there is room; the caller vouches that it is all zeros. Returns whether it was kept.
   */
  give(buf: ArrayBuffer): boolean {
    if (!keepable(buf, this.size) || this.free.length >= this.keep) return false;
    this.free.push(buf);
    return true;
  }

  /** Free buffers held now. */
  get held(): number {
    return this.free.length;
  }

  /** Forget every free buffer (they are all zeros already). */
  clear(): void {
    this.free.length = 0;
  }
}

/** A buffer the ring may hand out again: exactly `size` bytes, usable, of fixed length. */
export function keepable(buf: ArrayBuffer, size: number): boolean {
  return buf.byteLength === size && !buf.detached && !buf.resizable;
}
