// A compiled pattern set: the pattern and replacement bytes, the skip-scan prefilter tables and
// the Aho-Corasick automaton, all in blocks from ./heap. Built once, read-only while streams
// scan with it, zeroed block by block on free. It must never be changed after `buildSet`
// succeeds (streams on other sets and this one rely on it), and never outlive `freeSet`.
//
// Two search structures share the set (see docs/MATCHER.md):
// - the skip prefilter (Wu-Manber style): a shift table over hashed 3-byte groups of the first
//   `window` bytes of every pattern, plus buckets of patterns keyed by the group that ends that
//   window. Contract: a pattern that occurs starting at position s is never skipped over (no
//   false negatives); a zero shift only says "verify here".
// - the automaton: a trie with failure links. When states x byte-classes fit a budget it is
//   turned into a dense DFA (one u32 per state and class); otherwise the scan walks the trie
//   and its failure links (still linear, slower).

import { alloc, free } from "./heap";

/** Set on a DFA transition whose target state ends at least one pattern. */
export const FLAG: u32 = 0x80000000;
export const MASK: u32 = 0x7fffffff;
/**
 * The shift table has 2^hashBits one-byte slots, sized per set: about 64 slots per 3-byte group
 * of the patterns' windows, within [2^16, 2^19]. Measured here: smaller tables fit L1 but fill
 * up and shift less (10 patterns: 8.5 vs 12 GB/s at 2^12); 1000 patterns gain from 2^19.
 */
const HASH_BITS_MIN: u32 = 16;
const HASH_BITS_MAX: u32 = 19;
const SLOTS_PER_GROUP: u64 = 64;
/** The prefilter window never exceeds this; longer windows fill the shift table faster. */
const WINDOW_MAX: i32 = 32;
/** Largest dense DFA, in u32 entries (32 MiB). Bigger automata are walked as a trie. */
const DENSE_MAX_ENTRIES: u64 = 8 << 20;
/** Below this average shift (over all table slots) the prefilter costs more than it saves. */
const MIN_AVERAGE_SHIFT: u32 = 3;

/**
 * Test knobs (bit set; 0 in production): 1 = never build the dense DFA (walk the trie),
 * 2 = never use the skip prefilter, 4 = switch between prefilter and automaton very often.
 * They change speed only, never output, which is exactly what the shared suite checks.
 */
export let tuning: i32 = 0;
export function setTuning(bits: i32): void {
  tuning = bits;
}

/** Bytes per pattern-table row: patPtr, patLen, replPtr, replLen (u32 each). */
export const PAT_ROW: usize = 16;
/** Bytes per bucket entry: the pattern's first 8 bytes (u64), its index and its length. */
export const BUCKET_ROW: usize = 16;

@unmanaged
export class PatternSet {
  count: i32;
  minLen: i32;
  maxLen: i32;
  window: i32;
  hashBits: u32;
  patTable: usize;
  data: usize;
  dataLen: i32;
  useSkip: i32;
  shift: usize;
  bucketStart: usize;
  bucketEntries: usize;
  nodeCount: i32;
  rootNext: usize;
  firstChild: usize;
  nextSibling: usize;
  nodeByte: usize;
  fail: usize;
  depth: usize;
  outPat: usize;
  liveDepth: usize;
  dense: i32;
  classes: i32;
  classMap: usize;
  delta: usize;
}

@inline
export function hash3(word: u32, bits: u32): u32 {
  return ((word & 0xffffff) * 0x9e3779b1) >>> (32 - bits);
}

@inline
export function patPtr(set: PatternSet, i: i32): usize {
  return <usize>load<u32>(set.patTable + <usize>i * PAT_ROW);
}

@inline
export function patLen(set: PatternSet, i: i32): i32 {
  return load<i32>(set.patTable + <usize>i * PAT_ROW, 4);
}

/** A set with room for `count` patterns and `dataLen` bytes of patterns + replacements. */
export function newSet(count: i32, dataLen: i32): usize {
  const ptr = alloc(offsetof<PatternSet>());
  if (ptr == 0) return 0;
  const set = changetype<PatternSet>(ptr);
  set.count = count;
  set.dataLen = dataLen;
  set.patTable = alloc(<usize>count * PAT_ROW);
  // 8 spare bytes: the prefilter reads whole u32 words at the end of the shortest pattern.
  set.data = alloc(<usize>dataLen + 8);
  if (set.patTable == 0 || set.data == 0) {
    freeSet(ptr);
    return 0;
  }
  return ptr;
}

export function defineSet(
  ptr: usize,
  i: i32,
  patOff: i32,
  patLength: i32,
  replOff: i32,
  replLength: i32,
): void {
  const set = changetype<PatternSet>(ptr);
  const row = set.patTable + <usize>i * PAT_ROW;
  store<u32>(row, <u32>(set.data + <usize>patOff));
  store<i32>(row, patLength, 4);
  store<u32>(row, <u32>(set.data + <usize>replOff), 8);
  store<i32>(row, replLength, 12);
}

/** Zero and release every block of the set, then the set itself. */
export function freeSet(ptr: usize): void {
  if (ptr == 0) return;
  const set = changetype<PatternSet>(ptr);
  free(set.patTable);
  free(set.data);
  free(set.shift);
  free(set.bucketStart);
  free(set.bucketEntries);
  freeTrie(set);
  free(set.outPat);
  free(set.liveDepth);
  free(set.classMap);
  free(set.delta);
  free(ptr);
}

function freeTrie(set: PatternSet): void {
  free(set.rootNext);
  free(set.firstChild);
  free(set.nextSibling);
  free(set.nodeByte);
  free(set.fail);
  free(set.depth);
  set.rootNext = 0;
  set.firstChild = 0;
  set.nextSibling = 0;
  set.nodeByte = 0;
  set.fail = 0;
  set.depth = 0;
}

/** The child of trie node `node` on byte `b`, or 0. Only valid while the trie is kept. */
@inline
export function trieChild(set: PatternSet, node: u32, b: u32): u32 {
  if (node == 0) return load<u32>(set.rootNext + (<usize>b << 2));
  let c = load<u32>(set.firstChild + (<usize>node << 2));
  while (c != 0 && <u32>load<u8>(set.nodeByte + <usize>c) != b) {
    c = load<u32>(set.nextSibling + (<usize>c << 2));
  }
  return c;
}

/** Build every table; 0 on success, 1 when memory ran out (the caller frees the set). */
export function buildSet(ptr: usize): i32 {
  const set = changetype<PatternSet>(ptr);
  let minLen: i32 = 0x7fffffff;
  let maxLen: i32 = 0;
  let total: u64 = 0;
  for (let i = 0; i < set.count; i++) {
    const l = patLen(set, i);
    if (l < minLen) minLen = l;
    if (l > maxLen) maxLen = l;
    total += <u64>l;
  }
  set.minLen = minLen;
  set.maxLen = maxLen;
  if (total + 1 > 0x7fffffff) return 1;
  if (buildTrie(set, <u32>total + 1) != 0) return 1;
  if (buildFailureLinks(set) != 0) return 1;
  if (buildDense(set) != 0) return 1;
  if (buildPrefilter(set) != 0) return 1;
  return 0;
}

function buildTrie(set: PatternSet, cap: u32): i32 {
  const bytes = <usize>cap << 2;
  set.rootNext = alloc(256 * 4);
  set.firstChild = alloc(bytes);
  set.nextSibling = alloc(bytes);
  set.nodeByte = alloc(<usize>cap);
  set.fail = alloc(bytes);
  set.depth = alloc(bytes);
  set.outPat = alloc(bytes);
  set.liveDepth = alloc(bytes);
  if (
    set.rootNext == 0 ||
    set.firstChild == 0 ||
    set.nextSibling == 0 ||
    set.nodeByte == 0 ||
    set.fail == 0 ||
    set.depth == 0 ||
    set.outPat == 0 ||
    set.liveDepth == 0
  ) {
    return 1;
  }
  memory.fill(set.outPat, 0xff, bytes); // -1: no pattern ends here
  let n: u32 = 1;
  for (let i = 0; i < set.count; i++) {
    const p = patPtr(set, i);
    const l = patLen(set, i);
    let cur: u32 = 0;
    for (let k = 0; k < l; k++) {
      const b = <u32>load<u8>(p + <usize>k);
      let c = trieChild(set, cur, b);
      if (c == 0) {
        c = n++;
        store<u8>(set.nodeByte + <usize>c, <u8>b);
        store<u32>(set.depth + (<usize>c << 2), <u32>k + 1);
        if (cur == 0) {
          store<u32>(set.rootNext + (<usize>b << 2), c);
        } else {
          const head = set.firstChild + (<usize>cur << 2);
          store<u32>(set.nextSibling + (<usize>c << 2), load<u32>(head));
          store<u32>(head, c);
        }
      }
      cur = c;
    }
    store<i32>(set.outPat + (<usize>cur << 2), i);
  }
  set.nodeCount = <i32>n;
  return 0;
}

/**
 * Breadth-first: failure links, then for each node the longest pattern that is a suffix of
 * its string (`outPat`) and the depth of the longest suffix that can still grow (`liveDepth`).
 * The scan uses liveDepth to know when no match can start at or before a position any more.
 */
function buildFailureLinks(set: PatternSet): i32 {
  const n = <u32>set.nodeCount;
  const queue = alloc(<usize>n << 2);
  if (queue == 0) return 1;
  let qt: u32 = 0;
  for (let b: u32 = 0; b < 256; b++) {
    const c = load<u32>(set.rootNext + (<usize>b << 2));
    if (c != 0) store<u32>(queue + (<usize>(qt++) << 2), c);
  }
  for (let qh: u32 = 0; qh < qt; qh++) {
    const u = load<u32>(queue + (<usize>qh << 2));
    const fu = load<u32>(set.fail + (<usize>u << 2));
    const ou = set.outPat + (<usize>u << 2);
    if (load<i32>(ou) < 0) store<i32>(ou, load<i32>(set.outPat + (<usize>fu << 2)));
    const hasChild = load<u32>(set.firstChild + (<usize>u << 2)) != 0;
    store<u32>(
      set.liveDepth + (<usize>u << 2),
      hasChild
        ? load<u32>(set.depth + (<usize>u << 2))
        : load<u32>(set.liveDepth + (<usize>fu << 2)),
    );
    let v = load<u32>(set.firstChild + (<usize>u << 2));
    while (v != 0) {
      const b = <u32>load<u8>(set.nodeByte + <usize>v);
      let f = fu;
      let t: u32 = 0;
      while (true) {
        t = trieChild(set, f, b);
        if (t != 0 || f == 0) break;
        f = load<u32>(set.fail + (<usize>f << 2));
      }
      store<u32>(set.fail + (<usize>v << 2), t);
      store<u32>(queue + (<usize>(qt++) << 2), v);
      v = load<u32>(set.nextSibling + (<usize>v << 2));
    }
  }
  // Keep the BFS order for the dense build: it needs every failure target's row first.
  set.delta = queue;
  return 0;
}

/** Byte classes (bytes no pattern uses share class 0) and, if small enough, the dense DFA. */
function buildDense(set: PatternSet): i32 {
  const order = set.delta; // BFS order from buildFailureLinks
  set.delta = 0;
  const n = <u32>set.nodeCount;
  set.classMap = alloc(256);
  if (set.classMap == 0) {
    free(order);
    return 1;
  }
  for (let c: u32 = 1; c < n; c++) store<u8>(set.classMap + <usize>load<u8>(set.nodeByte + c), 1);
  let classes: u32 = 1;
  for (let b: u32 = 0; b < 256; b++) {
    if (load<u8>(set.classMap + b) != 0) store<u8>(set.classMap + b, <u8>(classes++));
  }
  set.classes = <i32>classes;
  if (<u64>n * <u64>classes > DENSE_MAX_ENTRIES || (tuning & 1) != 0) {
    free(order);
    set.dense = 0;
    return 0;
  }
  const delta = alloc(<usize>n * <usize>classes * 4);
  if (delta == 0) {
    free(order);
    return 1;
  }
  for (let b: u32 = 0; b < 256; b++) {
    const c = load<u32>(set.rootNext + (<usize>b << 2));
    if (c != 0) store<u32>(delta + (<usize>load<u8>(set.classMap + b) << 2), withFlag(set, c));
  }
  const rowBytes = <usize>classes << 2;
  for (let qh: u32 = 0; qh + 1 < n; qh++) {
    const u = load<u32>(order + (<usize>qh << 2));
    const row = delta + <usize>u * rowBytes;
    memory.copy(row, delta + <usize>load<u32>(set.fail + (<usize>u << 2)) * rowBytes, rowBytes);
    let v = load<u32>(set.firstChild + (<usize>u << 2));
    while (v != 0) {
      const cls = <usize>load<u8>(set.classMap + <usize>load<u8>(set.nodeByte + <usize>v));
      store<u32>(row + (cls << 2), withFlag(set, v));
      v = load<u32>(set.nextSibling + (<usize>v << 2));
    }
  }
  free(order);
  set.delta = delta;
  set.dense = 1;
  return 0;
}

@inline
function withFlag(set: PatternSet, state: u32): u32 {
  return load<i32>(set.outPat + (<usize>state << 2)) >= 0 ? state | FLAG : state;
}

function buildPrefilter(set: PatternSet): i32 {
  const w = set.minLen < WINDOW_MAX ? set.minLen : WINDOW_MAX;
  set.window = w;
  const maxShift = <u8>(w - 2);
  const groups = <u64>set.count * <u64>(w - 2) * SLOTS_PER_GROUP;
  let bits = HASH_BITS_MIN;
  while (bits < HASH_BITS_MAX && (<u64>1 << bits) < groups) bits++;
  set.hashBits = bits;
  const HASH_SIZE = (<usize>1) << bits;
  set.shift = alloc(HASH_SIZE);
  set.bucketStart = alloc((HASH_SIZE + 1) << 2);
  set.bucketEntries = alloc(<usize>set.count * BUCKET_ROW);
  const cursor = alloc(HASH_SIZE << 2);
  const byLength = alloc(<usize>set.count << 2);
  const lengthCount = alloc(514 << 2);
  if (
    set.shift == 0 ||
    set.bucketStart == 0 ||
    set.bucketEntries == 0 ||
    cursor == 0 ||
    byLength == 0 ||
    lengthCount == 0
  ) {
    free(cursor);
    free(byLength);
    free(lengthCount);
    return 1;
  }
  memory.fill(set.shift, maxShift, HASH_SIZE);
  for (let i = 0; i < set.count; i++) {
    const p = patPtr(set, i);
    for (let j = 0; j <= w - 3; j++) {
      const h = <usize>hash3(load<u32>(p + <usize>j), bits);
      const s = <u8>(w - 3 - j);
      if (s < load<u8>(set.shift + h)) store<u8>(set.shift + h, s);
    }
    const h = <usize>hash3(load<u32>(p + <usize>(w - 3)), bits);
    store<u32>(set.bucketStart + (h << 2), load<u32>(set.bucketStart + (h << 2)) + 1);
    const l = <usize>patLen(set, i);
    store<u32>(lengthCount + (l << 2), load<u32>(lengthCount + (l << 2)) + 1);
  }
  // Exclusive prefix sums: bucketStart[h] .. bucketStart[h + 1] are bucket h's entries.
  let sum: u32 = 0;
  for (let h: usize = 0; h <= HASH_SIZE; h++) {
    const c = h < HASH_SIZE ? load<u32>(set.bucketStart + (h << 2)) : 0;
    store<u32>(set.bucketStart + (h << 2), sum);
    if (h < HASH_SIZE) store<u32>(cursor + (h << 2), sum);
    sum += c;
  }
  // Longest first, so the first pattern that matches at a position is the longest there.
  let at: u32 = 0;
  for (let l = 513; l >= 0; l--) {
    const c = load<u32>(lengthCount + (<usize>l << 2));
    store<u32>(lengthCount + (<usize>l << 2), at);
    at += c;
  }
  for (let i = 0; i < set.count; i++) {
    const slot = lengthCount + (<usize>patLen(set, i) << 2);
    const k = load<u32>(slot);
    store<u32>(slot, k + 1);
    store<i32>(byLength + (<usize>k << 2), i);
  }
  for (let k = 0; k < set.count; k++) {
    const i = load<i32>(byLength + (<usize>k << 2));
    const p = patPtr(set, i);
    const h = <usize>hash3(load<u32>(p + <usize>(w - 3)), bits);
    const e = load<u32>(cursor + (h << 2));
    store<u32>(cursor + (h << 2), e + 1);
    const row = set.bucketEntries + <usize>e * BUCKET_ROW;
    store<u64>(row, load<u64>(p));
    store<i32>(row, i, 8);
    store<i32>(row, patLen(set, i), 12);
  }
  let shiftSum: u64 = 0;
  for (let h: usize = 0; h < HASH_SIZE; h++) shiftSum += <u64>load<u8>(set.shift + h);
  set.useSkip = shiftSum >= <u64>MIN_AVERAGE_SHIFT * <u64>HASH_SIZE ? 1 : 0;
  if ((tuning & 2) != 0) set.useSkip = 0;
  if ((tuning & 4) != 0) set.useSkip = 1;
  free(cursor);
  free(byLength);
  free(lengthCount);
  if (set.dense != 0) freeTrie(set);
  return 0;
}
