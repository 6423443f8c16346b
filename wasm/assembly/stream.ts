// One streaming scan over a body: its carry (the undecided tail, at most maxLen-1 bytes) and
// its scan state, plus the engine-wide work buffer and match records it scans into. It decides
// matches exactly as the reference does (leftmost start, then longest) and must never emit a
// byte whose fate could still change, never keep a byte of a closed stream, and never allocate
// while scanning (the host keeps views of linear memory across a push).
//
// Protocol for one push (driven by src/matcher/wasm-engine.ts):
//   carry = streamBegin(st)          -> the carry is copied to the work buffer at 0
//   host writes n new bytes at workPtr() + carry
//   streamScan(st, n, final)         -> (records << 2) | DONE or FULL; records in recordPtr()
//     host copies work bytes and replacements out; on FULL it calls streamScan(st, 0, final)
//     on DONE the undecided tail is already back in the carry; output ends at lastDecidedNow()
//   workClear(bytes)                 -> after the last piece, wipes the work buffer

import { alloc, free } from "./heap";
import {
  automatonStep,
  BUCKET_ROW,
  FLAG,
  GROUP,
  hashGroup,
  MASK,
  PAT_ROW,
  PatternSet,
  patLen,
  patPtr,
  tuning,
} from "./pattern-set";

/** Bytes of new input per scan call; the host splits bigger chunks. Sized to stay in L2. */
export const PIECE: i32 = 128 * 1024;
/** Match records per scan call; 16 bytes each: start, end, replacement pointer and length. */
export const RECORD_CAP: i32 = 4096;
/** How far the automaton runs after the prefilter gave up, before it is tried again. */
const AUTO_STRETCH: i32 = 32 * 1024;
/** Prefilter work allowed: a quarter unit per scanned byte plus this; then the automaton. */
const SKIP_WORK_BASE: i32 = 256;

export const DONE: i32 = 1;
export const FULL: i32 = 2;

const MODE_SKIP: i32 = 0;
const MODE_AUTO: i32 = 1;

@unmanaged
export class Stream {
  set: usize;
  carry: usize;
  carryLen: i32;
  len: i32;
  mode: i32;
  /** SKIP: start of the next window. AUTO: index of the next byte to feed the automaton. */
  pos: i32;
  state: u32;
  best: i32;
  bestStart: i32;
  autoUntil: i32;
  skipStart: i32;
  work: i32;
  decided: i32;
}

let workBuf: usize = 0;
let records: usize = 0;
let recordCount: i32 = 0;
let lastDecided: i32 = 0;

/** Forget the shared buffers (after the heap was wiped). */
export function resetShared(): void {
  workBuf = 0;
  records = 0;
  recordCount = 0;
}

function ensureShared(): bool {
  if (workBuf == 0) workBuf = alloc(<usize>PIECE + 1024 + 16);
  if (records == 0) records = alloc(<usize>RECORD_CAP * 16);
  return workBuf != 0 && records != 0;
}

export function workPtr(): usize {
  return workBuf;
}
export function recordPtr(): usize {
  return records;
}
export function recordCountNow(): i32 {
  return recordCount;
}

export function workClear(bytes: i32): void {
  if (workBuf != 0) memory.fill(workBuf, 0, <usize>bytes);
}

export function newStream(setPtr: usize): usize {
  if (!ensureShared()) return 0;
  const set = changetype<PatternSet>(setPtr);
  const ptr = alloc(offsetof<Stream>());
  if (ptr == 0) return 0;
  const st = changetype<Stream>(ptr);
  st.set = setPtr;
  st.carry = alloc(<usize>set.maxLen);
  if (st.carry == 0) {
    free(ptr);
    return 0;
  }
  st.mode = set.useSkip != 0 ? MODE_SKIP : MODE_AUTO;
  st.best = -1;
  st.autoUntil = 0x7fffffff;
  return ptr;
}

/** Back to a fresh scan on the same set (the carry zeroed): for a view stream's inner scan. */
export function resetStream(ptr: usize): void {
  const st = changetype<Stream>(ptr);
  const set = changetype<PatternSet>(st.set);
  memory.fill(st.carry, 0, <usize>set.maxLen);
  st.carryLen = 0;
  st.len = 0;
  st.mode = set.useSkip != 0 ? MODE_SKIP : MODE_AUTO;
  st.pos = 0;
  st.state = 0;
  st.best = -1;
  st.bestStart = 0;
  st.autoUntil = 0x7fffffff;
  st.skipStart = 0;
  st.work = 0;
  st.decided = 0;
}

/** Zero and release the carry and the state. */
export function freeStream(ptr: usize): void {
  if (ptr == 0) return;
  free(changetype<Stream>(ptr).carry);
  free(ptr);
}

export function streamBegin(ptr: usize): i32 {
  const st = changetype<Stream>(ptr);
  memory.copy(workBuf, st.carry, <usize>st.carryLen);
  st.len = st.carryLen;
  if (st.mode == MODE_SKIP) {
    st.skipStart = st.pos;
    st.work = 0;
  }
  return st.carryLen;
}

/** Where the last DONE scan decided up to (work-buffer offset): output is [.., decided). */
export function lastDecidedNow(): i32 {
  return lastDecided;
}

/**
 * Keep the undecided tail [decided, len) as the carry; positions become carry-relative. The
 * work buffer is left as it is, so the host can still copy output from it.
 */
function streamSave(st: Stream): void {
  const d = st.decided;
  const keep = st.len - d;
  memory.copy(st.carry, workBuf + <usize>d, <usize>keep);
  if (keep < st.carryLen) memory.fill(st.carry + <usize>keep, 0, <usize>(st.carryLen - keep));
  st.carryLen = keep;
  st.len = keep;
  st.pos -= d;
  st.bestStart -= d;
  st.decided = 0;
  st.skipStart = st.pos;
  st.work = 0;
  if (st.autoUntil != 0x7fffffff) st.autoUntil = st.autoUntil - d < 0 ? 0 : st.autoUntil - d;
}

@inline
function record(set: PatternSet, start: i32, pat: i32): bool {
  const row = records + (<usize>recordCount << 4);
  const prow = set.patTable + <usize>pat * PAT_ROW;
  store<i32>(row, start);
  store<i32>(row, start + load<i32>(prow, 4), 4);
  store<u32>(row, load<u32>(prow, 8), 8);
  store<i32>(row, load<i32>(prow, 12), 12);
  recordCount++;
  return recordCount >= RECORD_CAP;
}

/**
 * Scan after appending `added` bytes. Returns (records << 2) | status: FULL (drain the records,
 * call again with 0) or DONE (the tail is saved as the carry; see lastDecidedNow).
 */
export function streamScan(ptr: usize, added: i32, final: bool): i32 {
  const st = changetype<Stream>(ptr);
  st.len += added;
  recordCount = 0;
  const r = scanOnce(st, final);
  if (r == DONE) {
    lastDecided = st.decided;
    streamSave(st);
  }
  return (recordCount << 2) | r;
}

function scanOnce(st: Stream, final: bool): i32 {
  const set = changetype<PatternSet>(st.set);
  while (true) {
    if (st.mode == MODE_SKIP) {
      const r = runSkip(st, set);
      if (r == FULL) return FULL;
      if (r == DONE) {
        if (!final) {
          st.decided = st.pos;
          return DONE;
        }
        // The tail is shorter than the longest pattern: the automaton finishes it exactly.
        st.mode = MODE_AUTO;
        st.state = 0;
        st.best = -1;
        st.autoUntil = 0x7fffffff;
      }
    } else {
      const r = runAuto(st, set, final);
      if (r == FULL) return FULL;
      if (r == DONE) return DONE;
    }
  }
}

const SWITCH: i32 = 3;

@inline
function memEq(a: usize, b: usize, n: i32): bool {
  // n >= 8: compare whole words, the last one overlapping.
  let k: i32 = 8;
  while (k + 8 <= n) {
    if (load<u64>(a + <usize>k) != load<u64>(b + <usize>k)) return false;
    k += 8;
  }
  if (k < n) return load<u64>(a + <usize>(n - 8)) == load<u64>(b + <usize>(n - 8));
  return true;
}

/** The prefilter scan. DONE when the next window would need bytes not yet seen. */
function runSkip(st: Stream, set: PatternSet): i32 {
  const buf = workBuf;
  const limit = st.len - set.maxLen;
  const shift = set.shift;
  const tail = <usize>(set.window - GROUP);
  const m = set.window - GROUP + 1; // the largest shift
  const bits = set.hashBits;
  const base = buf + tail;
  let pos = st.pos;
  while (pos <= limit) {
    // Almost every window shifts by the maximum. Look up four windows m apart at once: the
    // loads overlap instead of forming one long dependency chain (load, hash, load, add).
    if (pos + 3 * m <= limit) {
      const s0 = <i32>load<u8>(shift + <usize>hashGroup(load<u32>(base + <usize>pos), bits));
      const s1 = <i32>load<u8>(shift + <usize>hashGroup(load<u32>(base + <usize>(pos + m)), bits));
      const s2 = <i32>load<u8>(shift + <usize>hashGroup(load<u32>(base + <usize>(pos + 2 * m)), bits));
      const s3 = <i32>load<u8>(shift + <usize>hashGroup(load<u32>(base + <usize>(pos + 3 * m)), bits));
      if (s0 + s1 + s2 + s3 == 4 * m) {
        pos += 4 * m;
        continue;
      }
      // Move through the windows that shift by m to the first that does not, and apply its
      // shift: the lookups are already done. A zero shift leaves pos on a candidate.
      let s = s0;
      if (s0 == m) {
        pos += m;
        s = s1;
        if (s1 == m) {
          pos += m;
          s = s2;
          if (s2 == m) {
            pos += m;
            s = s3;
          }
        }
      }
      if (s != 0) {
        pos += s;
        continue;
      }
    } else {
      const s = <i32>load<u8>(shift + <usize>hashGroup(load<u32>(base + <usize>pos), bits));
      if (s != 0) {
        pos += s;
        continue;
      }
    }
    const h = <usize>hashGroup(load<u32>(buf + <usize>pos + tail), bits);
    const e1 = load<u32>(set.bucketStart + ((h + 1) << 2));
    const at = buf + <usize>pos;
    const first = load<u64>(at);
    const budget = (tuning & 4) != 0 ? 2 : ((pos - st.skipStart) >> 2) + SKIP_WORK_BASE;
    let hit: i32 = -1;
    for (let e = load<u32>(set.bucketStart + (h << 2)); e < e1; e++) {
      const row = set.bucketEntries + <usize>e * BUCKET_ROW;
      st.work++;
      if (load<u64>(row) == first) {
        const id = load<i32>(row, 8);
        const l = load<i32>(row, 12);
        st.work += l >> 3;
        if (memEq(at, patPtr(set, id), l)) {
          hit = id;
          break;
        }
      }
      if (st.work > budget) break;
    }
    if (hit >= 0) {
      const full = record(set, pos, hit);
      pos += patLen(set, hit);
      if (full) {
        st.pos = pos;
        return FULL;
      }
    } else if (st.work <= budget) {
      pos++;
    }
    if (st.work > budget) {
      // Dense candidates (adversarial text, a crowded table): the automaton is linear.
      st.mode = MODE_AUTO;
      st.pos = pos;
      st.state = 0;
      st.best = -1;
      st.autoUntil = pos + ((tuning & 4) != 0 ? 600 : AUTO_STRETCH);
      return SWITCH;
    }
  }
  st.pos = pos;
  return DONE;
}

/**
 * The automaton scan. A pending match (best, bestStart) is final once no partial match that
 * started at or before bestStart is alive: pos - liveDepth[state] > bestStart. After a match
 * the automaton restarts at its end, so matches never overlap.
 */
function runAuto(st: Stream, set: PatternSet, final: bool): i32 {
  const buf = workBuf;
  const len = st.len;
  const nodes = set.nodes;
  const outPat = set.outPat;
  let p = st.pos;
  let s = st.state;
  let best = st.best;
  let bestStart = st.bestStart;
  while (true) {
    if (best < 0) {
      if (p >= st.autoUntil) {
        if (set.useSkip != 0) {
          st.mode = MODE_SKIP;
          st.pos = p - <i32>load<u16>(nodes + (<usize>s << 3), 4);
          st.skipStart = st.pos;
          st.work = 0;
          return SWITCH;
        }
        st.autoUntil = 0x7fffffff;
      }
      const stop = len < st.autoUntil ? len : st.autoUntil;
      while (p < stop) {
        const t = automatonStep(set, s, <u32>load<u8>(buf + <usize>p));
        p++;
        s = t & MASK;
        if ((t & FLAG) != 0) {
          best = load<i32>(outPat + (<usize>s << 2));
          bestStart = p - patLen(set, best);
          break;
        }
      }
      if (best < 0) {
        if (p >= len) break;
        continue;
      }
    } else {
      while (p < len) {
        const t = automatonStep(set, s, <u32>load<u8>(buf + <usize>p));
        p++;
        s = t & MASK;
        if ((t & FLAG) != 0) {
          const o = load<i32>(outPat + (<usize>s << 2));
          const o0 = p - patLen(set, o);
          if (o0 <= bestStart) {
            best = o;
            bestStart = o0;
          }
        }
        if (p - <i32>load<u16>(nodes + (<usize>s << 3), 4) > bestStart) break;
      }
    }
    // best >= 0 here: finalize it if nothing alive can start at or before it, or at the end.
    if (p - <i32>load<u16>(nodes + (<usize>s << 3), 4) > bestStart || (p >= len && final)) {
      const full = record(set, bestStart, best);
      p = bestStart + patLen(set, best);
      s = 0;
      best = -1;
      if (full) {
        st.pos = p;
        st.state = s;
        st.best = best;
        return FULL;
      }
      continue;
    }
    if (p < len) continue; // still pending: keep feeding the automaton
    break; // p == len, not final, best pending
  }
  st.pos = p;
  st.state = s;
  st.best = best;
  st.bestStart = bestStart;
  // At the end of the body every byte is decided; otherwise the live tail stays undecided.
  if (final) st.decided = len;
  // With a match pending, p - liveDepth <= bestStart (else it would be final): an earlier
  // start may still win, so the undecided tail begins at the earliest live partial match.
  else st.decided = p - <i32>load<u16>(nodes + (<usize>s << 3), 4);
  return DONE;
}
