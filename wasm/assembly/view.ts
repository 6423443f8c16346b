// A view stream: matching on the decoded view of a body (src/matcher/views.ts is the
// specification this decoder follows byte for byte). Each push decodes the raw carry and the
// new bytes into the shared work buffer, runs a fresh scan of the view set over it, maps every
// decided match back to the raw bytes that spell it, and keeps the raw bytes from the first
// undecided view byte on as the next carry. Restarting from a decided point gives the same
// matches as one scan over everything (every rule looks only forward), so the inner scan needs
// no state between pushes. It must never keep a body byte past a push except in the carry.
//
// Protocol for one push (driven by src/matcher/wasm-engine.ts):
//   carry = viewBegin(vs)            -> the raw carry is copied to rawWork at 0
//   host writes n new raw bytes at rawWorkPtr() + carry
//   v = viewDecode(vs, n, final)     -> the view is in the work buffer, [0, v)
//   viewScan(vs, v, final), then viewScan(vs, 0, final) while FULL: records in raw offsets
//   viewDecided()                    -> output covers rawWork up to here
//   viewSave(vs)                     -> the rest becomes the carry; host wipes rawWork

import { alloc, blockSize, free } from "./heap";
import { PatternSet } from "./pattern-set";
import {
  DONE,
  freeStream,
  Stream,
  lastDecidedNow,
  newStream,
  recordCountNow,
  recordPtr,
  resetStream,
  streamBegin,
  streamScan,
  workPtr,
} from "./stream";

/** Raw bytes per push piece: with the longest carry, its view (at most 1.2× as long) fits. */
export const VIEW_PIECE: i32 = 48 * 1024;
const MAX_TOKEN: i32 = 64;
const MAX_INDENT: i32 = 16;
const MAX_NAME: i32 = 32;
const MAX_DIGITS: i32 = 10;
/**
 * The longest raw carry: 511 view bytes of at most 100 raw bytes each (a token and two
 * dropped line breaks with their indentation), two more dropped line breaks after the last,
 * and an unfinished token.
 */
const CARRY_MAX: i32 = 511 * (MAX_TOKEN + 2 * (2 + MAX_INDENT)) + 2 * (2 + MAX_INDENT) + MAX_TOKEN;
export const RAW_CAP: i32 = VIEW_PIECE + CARRY_MAX;
const REF_SLOTS: i32 = 8192;

@unmanaged
export class ViewStream {
  inner: usize;
  carry: usize;
  carryLen: i32;
  rawLen: i32;
  viewLen: i32;
  consumed: i32;
  lastEnd: i32;
  /** View bytes at the carry's start already decided (a token a match ended inside). */
  skipView: i32;
  /** Raw bytes at the carry's start already output (that token, replaced). */
  emitted: i32;
  /** 1: the flat view (no nesting, references only with `;`); 0: the nested one. */
  flat: i32;
}

let rawWork: usize = 0;
let tokens: usize = 0; // i32 × 4 per token: view start, raw start, raw end, view length
let tokenCount: i32 = 0;
let refSlots: usize = 0; // u32 per slot: entry offset + 1 in refData, 0 = empty
let refData: usize = 0;
let refLen: i32 = 0;

export function resetViewShared(): void {
  rawWork = 0;
  nestBuf = 0;
  tokens = 0;
  tokenCount = 0;
  refSlots = 0;
  refData = 0;
  refLen = 0;
}

export function rawWorkPtr(): usize {
  return rawWork;
}

export function rawClear(bytes: i32): void {
  if (rawWork != 0) memory.fill(rawWork, 0, <usize>bytes);
}

/** Where the host writes the named-reference table (see packNamedReferences); 0 = no memory. */
export function refsAlloc(len: i32): usize {
  if (refData != 0) free(refData);
  if (refSlots == 0) refSlots = alloc(<usize>REF_SLOTS * 4);
  refData = alloc(<usize>len);
  refLen = len;
  return refSlots == 0 ? 0 : refData;
}

@inline
function nameHash(p: usize, n: i32): u32 {
  let h: u32 = 2166136261;
  for (let k = 0; k < n; k++) h = (h ^ load<u8>(p + <usize>k)) * 16777619;
  return h;
}

export function refsBuild(): void {
  memory.fill(refSlots, 0, <usize>REF_SLOTS * 4);
  let at: i32 = 0;
  while (at < refLen) {
    const n = <i32>load<u8>(refData + <usize>at);
    let slot = nameHash(refData + <usize>at + 1, n) & <u32>(REF_SLOTS - 1);
    while (load<u32>(refSlots + (<usize>slot << 2)) != 0) slot = (slot + 1) & <u32>(REF_SLOTS - 1);
    store<u32>(refSlots + (<usize>slot << 2), <u32>at + 1);
    at += 1 + n;
    at += 1 + <i32>load<u8>(refData + <usize>at);
  }
}

/** The entry of the reference named by [p, p+n), or -1. */
function refFind(p: usize, n: i32): i32 {
  if (refSlots == 0) return -1;
  let slot = nameHash(p, n) & <u32>(REF_SLOTS - 1);
  while (true) {
    const e = <i32>load<u32>(refSlots + (<usize>slot << 2));
    if (e == 0) return -1;
    const at = e - 1;
    if (<i32>load<u8>(refData + <usize>at) == n && memory.compare(refData + <usize>at + 1, p, n) == 0) {
      return at;
    }
    slot = (slot + 1) & <u32>(REF_SLOTS - 1);
  }
}

function ensureViewShared(): bool {
  if (rawWork == 0) rawWork = alloc(<usize>RAW_CAP + 16);
  // A token is at least 2 raw bytes, unless it is a dropped line break, and at most two of
  // those come in a row before a view byte: never more than 3 tokens per 4 raw bytes.
  if (tokens == 0) tokens = alloc(<usize>((RAW_CAP / 4) * 3 + 4) * 16 + 16);
  if (nestBuf == 0) nestBuf = alloc(<usize>MAX_TOKEN + 16);
  return rawWork != 0 && tokens != 0 && nestBuf != 0;
}

export function newViewStream(viewSet: usize, flat: bool): usize {
  if (!ensureViewShared()) return 0;
  const ptr = alloc(offsetof<ViewStream>());
  if (ptr == 0) return 0;
  const vs = changetype<ViewStream>(ptr);
  vs.flat = flat ? 1 : 0;
  vs.inner = newStream(viewSet);
  vs.carry = alloc(<usize>changetype<PatternSet>(viewSet).maxLen + 64);
  if (vs.inner == 0 || vs.carry == 0) {
    freeViewStream(ptr);
    return 0;
  }
  return ptr;
}

export function freeViewStream(ptr: usize): void {
  if (ptr == 0) return;
  const vs = changetype<ViewStream>(ptr);
  if (vs.inner != 0) freeStream(vs.inner);
  free(vs.carry);
  free(ptr);
}

export function viewBegin(ptr: usize): i32 {
  const vs = changetype<ViewStream>(ptr);
  memory.copy(rawWork, vs.carry, <usize>vs.carryLen);
  return vs.carryLen;
}

// ---- the decoder (src/matcher/views.ts, byte for byte) ----

@inline
function isHex(c: u32): bool {
  return (c - 0x30 < 10) || ((c | 0x20) - 0x61 < 6);
}
@inline
function hexValue(c: u32): u32 {
  return c <= 0x39 ? c - 0x30 : (c | 0x20) - 0x57;
}
@inline
function isAlpha(c: u32): bool {
  return (c | 0x20) - 0x61 < 26;
}
@inline
function isDigit(c: u32): bool {
  return c - 0x30 < 10;
}

let out: usize = 0; // next view byte
let flatMode: bool = false; // the stream being decoded reads the flat view
let vlen: i32 = 0;

@inline
function emit(b: u32): void {
  store<u8>(out + <usize>vlen, <u8>b);
  vlen++;
}

function emitUtf8(cp: u32): void {
  if (cp < 0x80) emit(cp);
  else if (cp < 0x800) {
    emit(0xc0 | (cp >> 6));
    emit(0x80 | (cp & 0x3f));
  } else if (cp < 0x10000) {
    emit(0xe0 | (cp >> 12));
    emit(0x80 | ((cp >> 6) & 0x3f));
    emit(0x80 | (cp & 0x3f));
  } else {
    emit(0xf0 | (cp >> 18));
    emit(0x80 | ((cp >> 12) & 0x3f));
    emit(0x80 | ((cp >> 6) & 0x3f));
    emit(0x80 | (cp & 0x3f));
  }
}

@inline
function byteAt(b: usize, i: i32): u32 {
  return <u32>load<u8>(b + <usize>i);
}

/** `n` hex digits at `at` (inside `end`) as a number, or -1. */
function hexN(b: usize, at: i32, end: i32, n: i32): i32 {
  if (at + n > end) return -1;
  let v: i32 = 0;
  for (let k = 0; k < n; k++) {
    const c = byteAt(b, at + k);
    if (!isHex(c)) return -1;
    v = (v << 4) | <i32>hexValue(c);
  }
  return v;
}

/** A line break at `at` (CR, LF, `\n`, `\r`), without indentation: its raw length, or 0. */
function breakAt(b: usize, at: i32, end: i32): i32 {
  if (at >= end) return 0;
  const c = byteAt(b, at);
  if (c == 0x0d || c == 0x0a) return 1;
  if (c == 0x5c && at + 1 < end) {
    const d = byteAt(b, at + 1);
    if (d == 0x6e || d == 0x72) return 2;
  }
  return 0;
}

/** A line break with the indentation after it: its raw length, or 0. */
function lineBreakAt(b: usize, at: i32, end: i32): i32 {
  const n = breakAt(b, at, end);
  if (n == 0) return 0;
  let j = at + n;
  while (j < end && j - at - n < MAX_INDENT) {
    const c = byteAt(b, j);
    if (c != 0x20 && c != 0x09) break;
    j++;
  }
  return j - at;
}

/** Decode a `%` token at i: 3 (the byte emitted), or 0 = the byte is itself. */
function percentToken(b: usize, i: i32, end: i32): i32 {
  const x = hexN(b, i + 1, end, 2);
  if (x < 0) return 0;
  emit(<u32>x);
  return 3;
}

function tokenAt(b: usize, i: i32, end: i32): i32 {
  const c = byteAt(b, i);
  return c == 0x5c
    ? backslashToken(b, i, end)
    : c == 0x26
      ? ampersandToken(b, i, end)
      : percentToken(b, i, end);
}

let nestBuf: usize = 0; // MAX_TOKEN + 16 bytes: a decoded `&`, `\` or `%` and the bytes after it

/**
 * The token at i (its bytes emitted), read once more when it stands for `&`, `\` or `%` and
 * that character with the bytes after it makes a token: its raw length, or 0.
 */
function nestedTokenAt(b: usize, i: i32, end: i32): i32 {
  const v0 = vlen;
  const len = tokenAt(b, i, end);
  if (flatMode || len == 0 || vlen - v0 != 1) return len;
  const c = <u32>load<u8>(out + <usize>v0);
  if (c != 0x26 && c != 0x5c && c != 0x25) return len;
  // The window ends MAX_TOKEN bytes after the outer token's start, as in views.ts.
  const stop = end < i + MAX_TOKEN ? end : i + MAX_TOKEN;
  const n = stop - (i + len);
  store<u8>(nestBuf, <u8>c);
  memory.copy(nestBuf + 1, b + <usize>(i + len), <usize>n);
  const v1 = vlen;
  const inner = tokenAt(nestBuf, 0, n + 1);
  memory.fill(nestBuf, 0, <usize>(n + 1));
  if (inner == 0) return len;
  if (len + inner - 1 > MAX_TOKEN) {
    memory.fill(out + <usize>v1, 0, <usize>(vlen - v1));
    vlen = v1;
    return len;
  }
  // The inner token's bytes replace the one the outer token stood for.
  memory.copy(out + <usize>v0, out + <usize>v1, <usize>(vlen - v1));
  vlen = v0 + (vlen - v1);
  return len + inner - 1;
}

/** Decode a `\` token at i: its raw length (bytes emitted), or 0 = the byte is itself. */
function backslashToken(b: usize, i: i32, end: i32): i32 {
  if (i + 1 >= end) return 0;
  const d = byteAt(b, i + 1);
  if (d == 0x22 || d == 0x5c || d == 0x2f) {
    emit(d);
    return 2;
  }
  if (d == 0x62) {
    emit(0x08);
    return 2;
  }
  if (d == 0x66) {
    emit(0x0c);
    return 2;
  }
  if (d == 0x74) {
    emit(0x09);
    return 2;
  }
  if (d == 0x6e) {
    emit(0x0a);
    return 2;
  }
  if (d == 0x72) {
    emit(0x0d);
    return 2;
  }
  if (d == 0x78) {
    const x = hexN(b, i + 2, end, 2);
    if (x < 0) return 0;
    emitUtf8(<u32>x);
    return 4;
  }
  if (d != 0x75) return 0;
  const u = hexN(b, i + 2, end, 4);
  if (u < 0) return 0;
  if (u >= 0xdc00 && u < 0xe000) return 0;
  if (u < 0xd800) {
    emitUtf8(<u32>u);
    return 6;
  }
  if (i + 12 > end || byteAt(b, i + 6) != 0x5c || byteAt(b, i + 7) != 0x75) return 0;
  const lo = hexN(b, i + 8, end, 4);
  if (lo < 0xdc00 || lo >= 0xe000) return 0;
  emitUtf8(0x10000 + ((<u32>u - 0xd800) << 10) + (<u32>lo - 0xdc00));
  return 12;
}

/** Decode a `&` token at i: its raw length (bytes emitted), or 0 = the byte is itself. */
function ampersandToken(b: usize, i: i32, end: i32): i32 {
  let j = i + 1;
  if (j < end && byteAt(b, j) == 0x23) {
    j++;
    const hex = j < end && (byteAt(b, j) | 0x20) == 0x78;
    if (hex) j++;
    const from = j;
    let cp: u64 = 0;
    while (j < end && j - from < MAX_DIGITS) {
      const c = byteAt(b, j);
      if (hex ? !isHex(c) : !isDigit(c)) break;
      cp = cp * (hex ? 16 : 10) + <u64>(hex ? hexValue(c) : c - 0x30);
      j++;
    }
    if (j == from) return 0;
    // Ended by `;` (taken), or — not in the flat view — by any byte that is not another digit.
    const semi = j < end && byteAt(b, j) == 0x3b;
    if (!semi && (flatMode || (j < end && (hex ? isHex(byteAt(b, j)) : isDigit(byteAt(b, j))))))
      return 0;
    if (cp == 0 || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000)) return 0;
    emitUtf8(<u32>cp);
    return j + (semi ? 1 : 0) - i;
  }
  if (j >= end || !isAlpha(byteAt(b, j))) return 0;
  const from = j;
  while (j < end && j - from < MAX_NAME) {
    const c = byteAt(b, j);
    if (!isAlpha(c) && !isDigit(c)) break;
    j++;
  }
  if (j >= end || byteAt(b, j) != 0x3b) return 0;
  const e = refFind(b + <usize>from, j - from);
  if (e < 0) return 0;
  const vp = refData + <usize>e + 1 + <usize>(j - from);
  const n = <i32>load<u8>(vp);
  for (let k = 0; k < n; k++) emit(<u32>load<u8>(vp + 1 + <usize>k));
  return j + 1 - i;
}

@inline
function pushToken(vStart: i32, rStart: i32, rEnd: i32, vLen: i32): void {
  const t = tokens + (<usize>tokenCount << 4);
  store<i32>(t, vStart);
  store<i32>(t, rStart, 4);
  store<i32>(t, rEnd, 8);
  store<i32>(t, vLen, 12);
  tokenCount++;
}

/** Bytes that may start a token; every other byte is copied as itself. */
@inline
function isTrigger(c: u32): bool {
  return c == 0x5c || c == 0x26 || c == 0x0d || c == 0x0a || c == 0x25;
}

/** The first trigger byte at or after i, or end. */
function nextTrigger(b: usize, i: i32, end: i32): i32 {
  const bs = i8x16.splat(0x5c);
  const amp = i8x16.splat(0x26);
  const cr = i8x16.splat(0x0d);
  const lf = i8x16.splat(0x0a);
  const pct = i8x16.splat(0x25);
  let j = i;
  while (j + 16 <= end) {
    const v = v128.load(b + <usize>j);
    const hit = v128.or(
      v128.or(v128.or(i8x16.eq(v, bs), i8x16.eq(v, amp)), i8x16.eq(v, pct)),
      v128.or(i8x16.eq(v, cr), i8x16.eq(v, lf)),
    );
    const bits = i8x16.bitmask(hit);
    if (bits != 0) return j + ctz<i32>(bits);
    j += 16;
  }
  while (j < end && !isTrigger(byteAt(b, j))) j++;
  return j;
}

/** Decode rawWork[0, end) into the work buffer; returns the view length. */
function decode(end: i32, final: bool): i32 {
  const b = rawWork;
  out = workPtr();
  vlen = 0;
  tokenCount = 0;
  let i: i32 = 0;
  while (i < end) {
    // Copy the run of ordinary bytes in one go (found 16 bytes at a time).
    let j = nextTrigger(b, i, end);
    if (j > i) {
      memory.copy(out + <usize>vlen, b + <usize>i, <usize>(j - i));
      vlen += j - i;
      i = j;
      if (i >= end) break;
    }
    const c = byteAt(b, i);
    if (!final && i + MAX_TOKEN > end) break;
    const br = lineBreakAt(b, i, end);
    if (br > 0) {
      const next = lineBreakAt(b, i + br, end);
      const kept = next > 0 && lineBreakAt(b, i + br + next, end) > 0;
      if (!kept) {
        pushToken(vlen, i, i + br, 0);
        i += br;
        continue;
      }
      if (breakAt(b, i, end) == 1) {
        emit(c);
        i++;
        continue;
      }
    }
    const v0 = vlen;
    const len = nestedTokenAt(b, i, end);
    if (len == 0) {
      emit(c);
      i++;
      continue;
    }
    pushToken(v0, i, i + len, vlen - v0);
    i += len;
  }
  return i;
}

/** Index of the last token whose view start is ≤ v, or -1. */
function lastTokenAt(v: i32): i32 {
  let lo: i32 = 0;
  let hi: i32 = tokenCount - 1;
  let found: i32 = -1;
  while (lo <= hi) {
    const mid = (lo + hi) >> 1;
    if (load<i32>(tokens + (<usize>mid << 4)) <= v) {
      found = mid;
      lo = mid + 1;
    } else hi = mid - 1;
  }
  return found;
}

function rawStartOf(vs: ViewStream, v: i32): i32 {
  if (v >= vs.viewLen) return vs.consumed;
  const k = lastTokenAt(v);
  if (k < 0) return v;
  const t = tokens + (<usize>k << 4);
  const s = load<i32>(t);
  const l = load<i32>(t, 12);
  return v < s + l ? load<i32>(t, 4) : load<i32>(t, 8) + (v - s - l);
}

function rawEndOf(vs: ViewStream, v: i32): i32 {
  const k = lastTokenAt(v);
  if (k >= 0) {
    const t = tokens + (<usize>k << 4);
    if (v < load<i32>(t) + load<i32>(t, 12)) return load<i32>(t, 8);
  }
  return rawStartOf(vs, v) + 1;
}

/** Decode the raw carry and `added` new bytes; returns the view's length. */
export function viewDecode(ptr: usize, added: i32, final: bool): i32 {
  const vs = changetype<ViewStream>(ptr);
  vs.rawLen = vs.carryLen + added;
  // Never past the raw work buffer (the bounds above make this unreachable; fail, not write).
  if (vs.rawLen > RAW_CAP || added > VIEW_PIECE) return -1;
  resetStream(vs.inner);
  // Resume after the view bytes already decided (the scan restarts there, as it would have).
  changetype<Stream>(vs.inner).pos = vs.skipView;
  streamBegin(vs.inner);
  flatMode = vs.flat != 0;
  vs.consumed = decode(vs.rawLen, final);
  vs.viewLen = vlen;
  vs.lastEnd = vs.emitted;
  return vlen;
}

/** The inner scan; its records are rewritten to raw offsets. Same result as streamScan. */
export function viewScan(ptr: usize, added: i32, final: bool): i32 {
  const vs = changetype<ViewStream>(ptr);
  const r = streamScan(vs.inner, added, final);
  const n = recordCountNow();
  const rec = recordPtr();
  for (let k = 0; k < n; k++) {
    const row = rec + (<usize>k << 4);
    let rs = rawStartOf(vs, load<i32>(row));
    if (rs < vs.lastEnd) rs = vs.lastEnd;
    let re = rawEndOf(vs, load<i32>(row, 4) - 1);
    if (re < rs) re = rs;
    store<i32>(row, rs);
    store<i32>(row, re, 4);
    vs.lastEnd = re;
  }
  return r;
}

/** The first undecided view byte (never before those the push began with decided). */
function decidedView(vs: ViewStream): i32 {
  const dv = lastDecidedNow();
  return dv < vs.skipView ? vs.skipView : dv;
}

/** Raw bytes at the start of this push already output by the previous one. */
export function viewEmitted(ptr: usize): i32 {
  return changetype<ViewStream>(ptr).emitted;
}

/**
 * After DONE: output covers rawWork up to here — the token of the first undecided view byte,
 * or past it when a match ended inside that token (its raw bytes were replaced whole).
 */
export function viewDecided(ptr: usize): i32 {
  const vs = changetype<ViewStream>(ptr);
  const d = rawStartOf(vs, decidedView(vs));
  return vs.lastEnd > d ? vs.lastEnd : d;
}

/**
 * Keep rawWork from the token of the first undecided view byte as the carry, with how many of
 * its view bytes and raw bytes are already done; 1 = no memory for it.
 */
export function viewSave(ptr: usize): i32 {
  const vs = changetype<ViewStream>(ptr);
  const dv = decidedView(vs);
  const d = rawStartOf(vs, dv);
  let skip: i32 = 0;
  const k = lastTokenAt(dv);
  if (k >= 0 && dv < vs.viewLen) {
    const t = tokens + (<usize>k << 4);
    const s = load<i32>(t);
    if (dv < s + load<i32>(t, 12)) skip = dv - s;
  }
  const done = viewDecided(ptr) - d;
  const keep = vs.rawLen - d;
  if (<usize>keep > blockSize(vs.carry)) {
    free(vs.carry);
    vs.carry = alloc(<usize>keep);
    vs.carryLen = 0;
    if (vs.carry == 0) return 1;
  }
  memory.copy(vs.carry, rawWork + <usize>d, <usize>keep);
  if (keep < vs.carryLen) memory.fill(vs.carry + <usize>keep, 0, <usize>(vs.carryLen - keep));
  vs.carryLen = keep;
  vs.skipView = skip;
  vs.emitted = done;
  // The inner scan's carry held view bytes: nothing of it is needed any more.
  resetStream(vs.inner);
  return 0;
}

export { DONE };
