// The matcher's own allocator over WebAssembly linear memory. Every pattern, replacement, table
// and stream buffer lives in blocks handed out here, so the engine knows exactly which bytes may
// ever have held a secret. It must never hand out a block that is not all zeros, and never keep
// a freed block's contents: `free` zeroes before it recycles.
//
// Design: power-of-two size classes (64 B .. 1 GiB) with one free list each and a bump pointer
// above them. Wasm memory never shrinks, so recycling blocks by class keeps long-running workers
// from growing when pattern sets and streams come and go. The AssemblyScript runtime is "stub"
// and this module never uses managed objects, so nothing else allocates from the heap.

const MIN_CLASS: u32 = 6;
const MAX_CLASS: u32 = 30;
/** Bytes in front of each block: its size class (u32), padded so payloads stay 16-aligned. */
const HEADER: usize = 16;

let heads: usize = 0; // (MAX_CLASS + 1) u32 free-list heads
let top: usize = 0; // first byte never handed out
let ready = false;

function init(): void {
  heads = (__heap_base + 15) & ~(<usize>15);
  memory.fill(heads, 0, (MAX_CLASS + 1) * 4);
  top = (heads + (MAX_CLASS + 1) * 4 + 15) & ~(<usize>15);
  ready = true;
}

/** First byte of the heap: everything from here up may hold secret data. */
export function heapStart(): usize {
  return (__heap_base + 15) & ~(<usize>15);
}

/** A zeroed block of at least `size` bytes, 16-aligned; 0 when memory cannot grow. */
export function alloc(size: usize): usize {
  if (!ready) init();
  const need = size + HEADER;
  let k: u32 = 32 - clz<u32>(<u32>need - 1);
  if (k < MIN_CLASS) k = MIN_CLASS;
  if (k > MAX_CLASS || size > (<usize>1 << MAX_CLASS)) return 0;
  const slot = heads + k * 4;
  const head = <usize>load<u32>(slot);
  if (head != 0) {
    // The free-list link sits in the first payload word; clear it so the block is all zeros.
    store<u32>(slot, load<u32>(head + HEADER));
    store<u32>(head + HEADER, 0);
    return head + HEADER;
  }
  const block = top;
  const end = <u64>block + (<u64>1 << k);
  const have = <u64>memory.size() << 16;
  if (end > have) {
    const pages = <i32>((end - have + 0xffff) >> 16);
    if (memory.grow(pages) < 0) return 0;
  }
  store<u32>(block, k);
  top = <usize>end;
  return block + HEADER;
}

/** Usable bytes of a block returned by `alloc`. */
export function blockSize(ptr: usize): usize {
  return ((<usize>1) << load<u32>(ptr - HEADER)) - HEADER;
}

/** Zero the whole block and recycle it. `free(0)` does nothing. */
export function free(ptr: usize): void {
  if (ptr == 0) return;
  const block = ptr - HEADER;
  const k = load<u32>(block);
  memory.fill(ptr, 0, ((<usize>1) << k) - HEADER);
  const slot = heads + k * 4;
  store<u32>(ptr, load<u32>(slot));
  store<u32>(slot, <u32>block);
}

/** Zero every heap byte and forget every block: all sets and streams become invalid. */
export function wipeHeap(): void {
  const start = heapStart();
  const end = (<u64>memory.size()) << 16;
  memory.fill(start, 0, <usize>(end - <u64>start));
  ready = false;
}
