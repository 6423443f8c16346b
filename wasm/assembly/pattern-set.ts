// A compiled pattern set: the pattern and replacement bytes, the skip-scan prefilter tables and
// the Aho-Corasick automaton, all in blocks from ./heap. Built once, read-only while streams
// scan with it, zeroed block by block on free. It must never be changed after `buildSet`
// succeeds (streams on other sets and this one rely on it), and never outlive `freeSet`.
//
// Two search structures share the set (see docs/MATCHER.md):
// - the skip prefilter (Wu-Manber style): a shift table over hashed 4-byte groups of the first
//   `window` bytes of every pattern, plus buckets of patterns keyed by the group that ends that
//   window. Contract: a pattern that occurs starting at position s is never skipped over (no
//   false negatives); a zero shift only says "verify here".
// - the automaton: a trie with failure links, laid out as compact 8-byte node records plus a
//   dense row (failure links resolved) for the root and every branching node; see
//   buildAutomaton. Linear time whatever the input.

import { alloc, free } from "./heap";

/** Set on an automaton transition whose target node ends at least one pattern. */
export const FLAG: u32 = 0x80000000;
export const MASK: u32 = 0x7fffffff;
/**
 * The shift table has 2^hashBits one-byte slots, sized per set: about 64 slots per 4-byte group
 * of the patterns' windows, within [2^16, 2^19]. Measured here: smaller tables fit L1 but fill
 * up and shift less (10 patterns: 8.5 vs 12 GB/s at 2^12); 1000 patterns gain from 2^19.
 */
const HASH_BITS_MIN: u32 = 16;
const HASH_BITS_MAX: u32 = 19;
const SLOTS_PER_GROUP: u64 = 64;
/** The prefilter window never exceeds this; longer windows fill the shift table faster. */
const WINDOW_MAX: i32 = 32;
/** Dense rows allowed, in u32 entries (32 MiB); past it branching nodes walk sibling lists. */
const DENSE_MAX_ENTRIES: u64 = 8 << 20;
/** Below this average shift (over all table slots) the prefilter costs more than it saves. */
const MIN_AVERAGE_SHIFT: u32 = 3;

/**
 * Test knobs (bit set; 0 in production): 1 = no dense rows below the root (walk sibling lists),
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
  nodes: usize;
  rows: usize;
}

/**
 * Bytes per hashed group of the skip prefilter. Four, not three: with 1000 random tokens, one
 * window in sixteen of the bench's JSON shifted less than the maximum with 3-byte groups, half
 * of them on a trigram some token really has; with four, one in twenty-eight, nearly all table
 * collisions (100 tokens: one in 40 and one in 50). The largest shift is a byte shorter.
 */
export const GROUP: i32 = 4;

@inline
export function hashGroup(word: u32, bits: u32): u32 {
  return (word * 0x9e3779b1) >>> (32 - bits);
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
  free(set.nodes);
  free(set.rows);
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
  const order = buildFailureLinks(set);
  if (order == 0) return 1;
  const failed = buildAutomaton(set, order);
  free(order);
  if (failed != 0) return 1;
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
function buildFailureLinks(set: PatternSet): usize {
  const n = <u32>set.nodeCount;
  const queue = alloc(<usize>n << 2);
  if (queue == 0) return 0;
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
  // The BFS order, for the automaton build: it needs every failure target's row first.
  return queue;
}

/**
 * The automaton the scan walks: one 8-byte "hot" record per trie node, in trie numbering:
 *   +0  u32  kind DENSE: address of its row; kind SINGLE: child | FLAG-if-child-ends-a-pattern;
 *            kind LIST: unused (children are in the kept sibling lists)
 *   +4  u16  liveDepth, +6 u8 the single child's byte, +7 u8 kind
 * and two "cold" arrays read only on a mismatch or a match: `fail` (u32) and `outPat` (i32,
 * the longest pattern ending at the node, -1 for none). Hot records stay in L1/L2 longer.
 * Nodes with two or more children (and the root) get a dense row: one u32 per byte class with
 * the failure links already resolved, so text that keeps falling back to shallow states costs
 * one lookup per byte. Deep single-child chains (most of a random secret's bytes) cost one
 * compare. This keeps the walked memory small: about 16 bytes per node plus a row per branch,
 * where a full DFA would need a row per node (megabytes at 1000 patterns, all cache misses).
 * Linear time: a failure step always lands on a shallower node, so failures per byte are
 * amortised O(1), and a dense row resolves any byte in one step.
 */
export const KIND_LEAF: u8 = 0;
export const KIND_SINGLE: u8 = 1;
export const KIND_DENSE: u8 = 2;
export const KIND_LIST: u8 = 3;
export const NODE_BYTES: usize = 8;

/** One automaton step from node `s` on byte `b`: the next node, with FLAG if it ends a pattern. */
@inline
export function automatonStep(set: PatternSet, s: u32, b: u32): u32 {
  const nodes = set.nodes;
  while (true) {
    const rec = nodes + (<usize>s << 3);
    const kind = load<u8>(rec, 7);
    if (kind == KIND_DENSE) {
      return load<u32>(<usize>load<u32>(rec) + (classOf(set, b) << 2));
    }
    if (kind == KIND_SINGLE) {
      if (<u32>load<u8>(rec, 6) == b) return load<u32>(rec);
    } else if (kind == KIND_LIST) {
      const c = trieChild(set, s, b);
      if (c != 0) return load<i32>(set.outPat + (<usize>c << 2)) >= 0 ? c | FLAG : c;
    }
    s = load<u32>(set.fail + (<usize>s << 2));
  }
}

/**
 * The class of byte `b` in a dense row. The table is u16: with every byte value in the patterns
 * there are 257 classes (0 is "in no pattern"), and a u8 one sent 0xff to class 0.
 */
@inline
function classOf(set: PatternSet, b: u32): usize {
  return <usize>load<u16>(set.classMap + (<usize>b << 1));
}

@inline
function setClass(set: PatternSet, b: u32, cls: u32): void {
  store<u16>(set.classMap + (<usize>b << 1), <u16>cls);
}

function buildAutomaton(set: PatternSet, order: usize): i32 {
  const n = <u32>set.nodeCount;
  set.classMap = alloc(256 * 2);
  const rep = alloc(257 * 4); // a representative byte per class
  const kids = alloc(<usize>n << 2); // child count per node
  set.nodes = alloc(<usize>n * NODE_BYTES);
  if (set.classMap == 0 || rep == 0 || kids == 0 || set.nodes == 0) {
    free(rep);
    free(kids);
    return 1;
  }
  for (let c: u32 = 1; c < n; c++) setClass(set, load<u8>(set.nodeByte + c), 1);
  let classes: u32 = 1;
  for (let b: u32 = 0; b < 256; b++) {
    if (classOf(set, b) != 0) {
      store<u32>(rep + (<usize>classes << 2), b);
      setClass(set, b, classes++);
    }
  }
  set.classes = <i32>classes;
  const rowBytes = <usize>classes << 2;
  let branching: u64 = 0;
  for (let u: u32 = 1; u < n; u++) {
    let k: u32 = 0;
    let v = load<u32>(set.firstChild + (<usize>u << 2));
    while (v != 0) {
      k++;
      v = load<u32>(set.nextSibling + (<usize>v << 2));
    }
    store<u32>(kids + (<usize>u << 2), k);
    if (k >= 2) branching++;
  }
  // Dense rows for every branching node when they fit the budget (and the test knob allows);
  // otherwise only the root, and branching nodes walk their sibling lists.
  const denseBranches = (tuning & 1) == 0 && (branching + 1) * <u64>classes <= DENSE_MAX_ENTRIES;
  set.rows = alloc(<usize>(denseBranches ? branching + 1 : 1) * rowBytes);
  if (set.rows == 0) {
    free(rep);
    free(kids);
    return 1;
  }
  let nextRow = set.rows + rowBytes;
  let lists = 0;
  for (let u: u32 = 0; u < n; u++) {
    const rec = set.nodes + (<usize>u << 3);
    const k = u == 0 ? 2 : load<u32>(kids + (<usize>u << 2));
    store<u16>(rec, <u16>load<u32>(set.liveDepth + (<usize>u << 2)), 4);
    if (u == 0) {
      store<u32>(rec, <u32>set.rows);
      store<u8>(rec, KIND_DENSE, 7);
    } else if (k == 1) {
      const c = load<u32>(set.firstChild + (<usize>u << 2));
      store<u32>(rec, withFlag(set, c));
      store<u8>(rec, load<u8>(set.nodeByte + <usize>c), 6);
      store<u8>(rec, KIND_SINGLE, 7);
    } else if (k >= 2 && denseBranches) {
      store<u32>(rec, <u32>nextRow);
      store<u8>(rec, KIND_DENSE, 7);
      nextRow += rowBytes;
    } else if (k >= 2) {
      store<u8>(rec, KIND_LIST, 7);
      lists++;
    }
  }
  // Rows in BFS order: a row's failure target is shallower, so its steps are already final.
  for (let b: u32 = 0; b < 256; b++) {
    const c = load<u32>(set.rootNext + (<usize>b << 2));
    if (c != 0) store<u32>(set.rows + (classOf(set, b) << 2), withFlag(set, c));
  }
  for (let qh: u32 = 0; qh + 1 < n; qh++) {
    const u = load<u32>(order + (<usize>qh << 2));
    const rec = set.nodes + (<usize>u << 3);
    if (load<u8>(rec, 7) != KIND_DENSE) continue;
    const row = <usize>load<u32>(rec);
    const f = load<u32>(set.fail + (<usize>u << 2));
    for (let cls: u32 = 1; cls < classes; cls++) {
      const b = load<u32>(rep + (<usize>cls << 2));
      store<u32>(row + (<usize>cls << 2), automatonStep(set, f, b));
    }
    let v = load<u32>(set.firstChild + (<usize>u << 2));
    while (v != 0) {
      const cls = classOf(set, load<u8>(set.nodeByte + <usize>v));
      store<u32>(row + (cls << 2), withFlag(set, v));
      v = load<u32>(set.nextSibling + (<usize>v << 2));
    }
  }
  free(rep);
  free(kids);
  set.dense = denseBranches ? 1 : 0;
  // The scan needs the records, `fail` and `outPat`; sibling lists only for LIST nodes.
  free(set.liveDepth);
  free(set.depth);
  free(set.rootNext);
  set.liveDepth = 0;
  set.depth = 0;
  set.rootNext = 0;
  if (lists == 0) {
    free(set.firstChild);
    free(set.nextSibling);
    free(set.nodeByte);
    set.firstChild = 0;
    set.nextSibling = 0;
    set.nodeByte = 0;
  }
  return 0;
}

@inline
function withFlag(set: PatternSet, state: u32): u32 {
  return load<i32>(set.outPat + (<usize>state << 2)) >= 0 ? state | FLAG : state;
}

function buildPrefilter(set: PatternSet): i32 {
  const w = set.minLen < WINDOW_MAX ? set.minLen : WINDOW_MAX;
  set.window = w;
  const maxShift = <u8>(w - GROUP + 1);
  const groups = <u64>set.count * <u64>(w - GROUP + 1) * SLOTS_PER_GROUP;
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
    for (let j = 0; j <= w - GROUP; j++) {
      const h = <usize>hashGroup(load<u32>(p + <usize>j), bits);
      const s = <u8>(w - GROUP - j);
      if (s < load<u8>(set.shift + h)) store<u8>(set.shift + h, s);
    }
    const h = <usize>hashGroup(load<u32>(p + <usize>(w - GROUP)), bits);
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
    const h = <usize>hashGroup(load<u32>(p + <usize>(w - GROUP)), bits);
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
  return 0;
}
