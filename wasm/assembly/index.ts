// The WebAssembly matcher's exports: the only surface src/matcher/wasm-engine.ts talks to.
// It must never print, never call the host, and never return secret bytes except through
// linear memory regions the host reads on purpose (replacements of matches it emits).

import { heapStart, wipeHeap } from "./heap";
import { buildSet, defineSet, freeSet, newSet, PatternSet, setTuning } from "./pattern-set";
import {
  freeStream,
  newStream,
  PIECE,
  RECORD_CAP,
  recordCountNow,
  recordPtr,
  resetShared,
  streamBegin,
  lastDecidedNow,
  streamScan,
  workClear,
  workPtr,
} from "./stream";
import {
  freeViewStream,
  newViewStream,
  rawClear,
  RAW_CAP,
  rawWorkPtr,
  refsAlloc,
  refsBuild,
  resetViewShared,
  VIEW_PIECE,
  viewBegin,
  viewDecided,
  viewDecode,
  viewEmitted,
  viewSave,
  viewScan,
} from "./view";

export function pieceSize(): i32 {
  return PIECE;
}
export function recordCap(): i32 {
  return RECORD_CAP;
}

/** A set for `count` patterns and `dataLen` bytes of pattern + replacement data; 0 = no memory. */
export function set_new(count: i32, dataLen: i32): usize {
  return newSet(count, dataLen);
}
/** Where the host writes pattern and replacement bytes (offsets given to set_define). */
export function set_data(set: usize): usize {
  return changetype<PatternSet>(set).data;
}
export function set_define(
  set: usize,
  i: i32,
  patOff: i32,
  patLen: i32,
  replOff: i32,
  replLen: i32,
): void {
  defineSet(set, i, patOff, patLen, replOff, replLen);
}
/** 0 = built; 1 = out of memory (the host then frees the set). */
export function set_build(set: usize): i32 {
  return buildSet(set);
}
export function set_free(set: usize): void {
  freeSet(set);
}
/** For tests and docs: 1 when branching nodes have dense rows, 0 when they walk sibling lists. */
export function set_dense(set: usize): i32 {
  return changetype<PatternSet>(set).dense;
}
export function set_uses_skip(set: usize): i32 {
  return changetype<PatternSet>(set).useSkip;
}

export function stream_new(set: usize): usize {
  return newStream(set);
}
export function stream_free(st: usize): void {
  freeStream(st);
}
export function stream_begin(st: usize): i32 {
  return streamBegin(st);
}
/** (records << 2) | status: 1 = DONE (tail saved as the carry), 2 = FULL (drain, call again). */
export function stream_scan(st: usize, added: i32, final: i32): i32 {
  return streamScan(st, added, final != 0);
}
/** After DONE: output covers the work buffer up to here. */
export function last_decided(): i32 {
  return lastDecidedNow();
}

export function work_ptr(): usize {
  return workPtr();
}
export function work_clear(bytes: i32): void {
  workClear(bytes);
}
export function record_ptr(): usize {
  return recordPtr();
}
export function record_count(): i32 {
  return recordCountNow();
}

// View streams (view.ts): matching on the decoded view, records in raw offsets.
export function viewPiece(): i32 {
  return VIEW_PIECE;
}
/** flat: 1 = the flat view (no nesting, references only with `;`), 0 = the nested one. */
export function view_stream_new(viewSet: usize, flat: i32): usize {
  return newViewStream(viewSet, flat != 0);
}
export function view_stream_free(vs: usize): void {
  freeViewStream(vs);
}
export function view_begin(vs: usize): i32 {
  return viewBegin(vs);
}
/** Returns the view's length (the work buffer holds it). */
export function view_decode(vs: usize, added: i32, final: i32): i32 {
  return viewDecode(vs, added, final != 0);
}
export function view_scan(vs: usize, added: i32, final: i32): i32 {
  return viewScan(vs, added, final != 0);
}
/** Raw bytes at the start of this push the previous one already output. */
export function view_emitted(vs: usize): i32 {
  return viewEmitted(vs);
}
export function view_decided(vs: usize): i32 {
  return viewDecided(vs);
}
/** 0 = saved; 1 = out of memory. */
export function view_save(vs: usize): i32 {
  return viewSave(vs);
}
export function raw_work_ptr(): usize {
  return rawWorkPtr();
}
/** Bytes the raw work buffer holds: the carry and a piece. */
export function raw_cap(): i32 {
  return RAW_CAP;
}
export function raw_clear(bytes: i32): void {
  rawClear(bytes);
}
/** The named-reference table: write `len` bytes at the pointer, then refs_build. */
export function refs_alloc(len: i32): usize {
  return refsAlloc(len);
}
export function refs_build(): void {
  refsBuild();
}

/** Zero the whole heap: every set and stream of this instance is gone. */
export function wipe_all(): void {
  wipeHeap();
  resetShared();
  resetViewShared();
}

/** Test knobs only (see pattern-set.ts `tuning`); applies to sets built afterwards. */
export function set_tuning(bits: i32): void {
  setTuning(bits);
}

/** First heap byte: below it only the module's static data (never a secret). For tests. */
export function heap_start(): usize {
  return heapStart();
}
