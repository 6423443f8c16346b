// The WebAssembly matcher engine: a thin host around wasm/assembly (one WebAssembly instance per
// engine). It validates with the shared `validatePatternSpecs`, writes patterns straight into
// linear memory, drives the scan piece by piece and assembles output chunks from linear memory.
// It must never keep a JS copy of a pattern or replacement, never log, and never hand out a
// view of linear memory. `push`/`end` return a fresh Uint8Array the caller owns and may
// transfer; `pushLent` returns a view of the engine's one reused output buffer, valid
// until the next call on any stream of this engine, zeroed when a stream ends or is released.

import { readFileSync } from "node:fs";
import { join } from "node:path";
import {
  type CompiledSet,
  type CompileOptions,
  type LendingMatchStream,
  type MatcherEngine,
  MatcherError,
  type PatternSpec,
  validatePatternSpecs,
} from "./types.ts";
import { packNamedReferences, viewCount, viewSpecs } from "./views.ts";

export interface WasmEngine extends MatcherEngine {
  openStream(set: CompiledSet): LendingMatchStream;
  /** Zero every byte of linear memory that ever held a pattern, replacement or stream data. */
  wipeAll(): void;
  /** For tests: the module's linear memory (to scan for left-over secret bytes). */
  readonly memory: WebAssembly.Memory;
  /**
   * replaceAll writing into a caller-owned buffer (reused across calls, so no fresh pages to
   * fault in): `output` is a view of `into` when the result fits; otherwise `into` is zeroed
   * and `output` is a fresh array. When nothing matched (the common case) and the set has no
   * views, `output` is `input` itself and `into` is not written: no copy at all.
   */
  replaceAllInto(
    set: CompiledSet,
    input: Uint8Array,
    into: Uint8Array,
  ): { output: Uint8Array; replacements: number };
}

interface MatcherExports {
  memory: WebAssembly.Memory;
  pieceSize(): number;
  set_new(count: number, dataLen: number): number;
  set_data(set: number): number;
  set_define(
    set: number,
    i: number,
    patOff: number,
    patLen: number,
    replOff: number,
    replLen: number,
  ): void;
  set_build(set: number): number;
  set_free(set: number): void;
  set_dense(set: number): number;
  set_uses_skip(set: number): number;
  stream_new(set: number): number;
  stream_free(st: number): void;
  stream_begin(st: number): number;
  stream_scan(st: number, added: number, final: number): number;
  last_decided(): number;
  work_ptr(): number;
  work_clear(bytes: number): void;
  record_ptr(): number;
  record_count(): number;
  wipe_all(): void;
  set_tuning(bits: number): void;
  heap_start(): number;
  viewPiece(): number;
  view_stream_new(viewSet: number, flat: number): number;
  view_stream_free(vs: number): void;
  view_begin(vs: number): number;
  view_decode(vs: number, added: number, final: number): number;
  view_scan(vs: number, added: number, final: number): number;
  view_decided(vs: number): number;
  view_emitted(vs: number): number;
  view_save(vs: number): number;
  raw_work_ptr(): number;
  raw_cap(): number;
  raw_clear(bytes: number): void;
  refs_alloc(len: number): number;
  refs_build(): void;
}

const NAMED_REFERENCES = packNamedReferences();

/**
 * Test knobs: no dense rows below the root (sibling-list walk), no skip prefilter, or make
 * the scan switch between prefilter and automaton very often. Speed changes, output must not.
 */
export interface WasmEngineOptions {
  forceTrieWalk?: boolean;
  disableSkip?: boolean;
  frequentSwitching?: boolean;
}

const SCAN_DONE = 1;
const SCAN_FULL = 2;

export const DEFAULT_WASM_PATH = join(import.meta.dir, "../../wasm/build/matcher.wasm");

/**
 * Grows by doubling; hands back a fresh array (a view of its own buffer) at the end. In
 * pass-through mode (a whole buffer) it copies nothing while no match has been replaced: the
 * output so far is then the input's first `length` bytes, copied from the input only when the
 * first match needs them, and the input itself when none came.
 */
class OutputBuilder {
  buf: Uint8Array;
  private borrowed: boolean;
  length = 0;
  private source: Uint8Array | null = null;
  constructor(capacity: number, into?: Uint8Array) {
    this.borrowed = into !== undefined;
    this.buf = into ?? new Uint8Array(Math.max(capacity, 16));
  }
  /** Start again at 0 in `into` (the lent buffer): no builder object per push. */
  restart(into: Uint8Array): void {
    this.buf = into;
    this.borrowed = true;
    this.length = 0;
  }
  /** Output that is `input` unchanged is not copied (see the class comment). */
  passThrough(input: Uint8Array): void {
    this.source = input;
  }
  /** Bytes no match touched: in pass-through mode, the input's next bytes. */
  keep(src: Uint8Array): void {
    if (this.source) this.length += src.length;
    else this.append(src);
  }
  /** A match's replacement (possibly empty): the output now differs from the input. */
  replace(src: Uint8Array): void {
    if (this.source) {
      const kept = this.source.subarray(0, this.length);
      this.source = null;
      this.length = 0;
      this.append(kept);
    }
    if (src.length > 0) this.append(src);
  }
  append(src: Uint8Array): void {
    const need = this.length + src.length;
    if (need > this.buf.length) {
      const grown = new Uint8Array(Math.max(need, this.buf.length * 2));
      grown.set(this.buf.subarray(0, this.length));
      this.buf.fill(0);
      this.buf = grown;
      this.borrowed = false;
    }
    this.buf.set(src, this.length);
    this.length = need;
  }
  take(): Uint8Array {
    if (this.source) {
      // Nothing matched, so every input byte was kept: anything else is an engine bug.
      if (this.length !== this.source.length) {
        throw new MatcherError("engine-failure", "matcher output does not cover its input");
      }
      return this.source;
    }
    const { buf, length } = this;
    if (length === buf.length) return buf;
    if (this.borrowed) return buf.subarray(0, length);
    // A small tail of slack is cheaper than another copy of a big body.
    if (buf.length - length <= 4096 || length >= buf.length * 0.875) {
      return buf.subarray(0, length);
    }
    const exact = buf.slice(0, length);
    buf.fill(0);
    return exact;
  }
}

class WasmCompiledSet implements CompiledSet {
  disposed = false;
  readonly streams = new Set<WasmMatchStream>();
  constructor(
    readonly engine: WasmEngineImpl,
    readonly ptr: number,
    readonly patternCount: number,
    readonly maxPatternLength: number,
    /** The view's set (./views.ts viewSpecs) when compiled with views; may be `ptr`; else 0. */
    readonly viewPtr: number,
    /** Views on the first patterns only (the rest swap): the view stage runs first. */
    readonly viewsFirst: boolean,
  ) {}
  get views(): boolean {
    return this.viewPtr !== 0;
  }
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    // Streams still open on this set can no longer scan; wipe their carry now.
    for (const s of this.streams) s.release();
    this.streams.clear();
    this.engine.releaseSet(this);
  }
}

/** One scan of a stream: bytes in, decided output appended; `end` flushes what it held. */
interface Stage {
  push(chunk: Uint8Array, out: OutputBuilder): number;
  end(out: OutputBuilder): number;
}

class WasmMatchStream implements LendingMatchStream {
  private closed = false;
  private ptr: number;
  /** The nested and the flat view streams when the set has views. */
  private vptr = 0;
  private fptr = 0;
  /** The scans in order (one without views; three with). */
  private readonly stages: Stage[];
  replacements = 0;
  constructor(
    private readonly engine: WasmEngineImpl,
    readonly set: WasmCompiledSet,
  ) {
    this.ptr = engine.newStream(set.ptr);
    const e = engine;
    const raw: Stage = {
      push: (c, o) => e.pushInto(this.ptr, c, o),
      end: (o) => e.endInto(this.ptr, o),
    };
    this.stages = [raw];
    if (set.viewPtr !== 0) {
      try {
        this.vptr = engine.newViewStream(set.viewPtr, false);
        this.fptr = engine.newViewStream(set.viewPtr, true);
      } catch (e) {
        this.release();
        throw e;
      }
      const view = (ptr: () => number): Stage => ({
        push: (c, o) => e.viewPushInto(ptr(), c, false, o),
        end: (o) => e.viewPushInto(ptr(), new Uint8Array(0), true, o),
      });
      const views = [view(() => this.vptr), view(() => this.fptr)];
      // Redaction: the bytes as written, then the nested view of what that left, then the flat
      // one (an exact spelling keeps its own replacement, `%5BREDACTED%5D` in a URL). A set
      // that also swaps (views on its first patterns only): the views first, on what the agent
      // sent — a view must never see a real value a swap wrote.
      this.stages = set.viewsFirst ? [...views, raw] : [raw, ...views];
    }
    set.streams.add(this);
  }

  push(chunk: Uint8Array): Uint8Array {
    this.check();
    const out = new OutputBuilder(chunk.length + this.set.maxPatternLength);
    this.replacements += this.failClosed(() => this.pushFrom(0, chunk, out));
    return out.take();
  }

  end(): Uint8Array {
    this.check();
    const out = new OutputBuilder(this.set.maxPatternLength);
    this.replacements += this.failClosed(() => this.endFrom(0, out));
    this.close();
    return out.take();
  }

  pushLent(chunk: Uint8Array): Uint8Array {
    this.check();
    const out = this.engine.lendBuilder();
    this.replacements += this.failClosed(() => this.pushFrom(0, chunk, out));
    return this.engine.lent(out);
  }

  /** `chunk` through stage `i` and every one after it (the bytes between in reused buffers). */
  private pushFrom(i: number, chunk: Uint8Array, out: OutputBuilder): number {
    const stage = this.stages[i]!;
    if (i === this.stages.length - 1) return stage.push(chunk, out);
    return this.engine.throughMid(
      i,
      chunk.length + this.set.maxPatternLength,
      (mid) => stage.push(chunk, mid),
      (m) => this.pushFrom(i + 1, m, out),
    );
  }

  /** Stage `i`'s end: what it held goes through the later stages, which then end too. */
  private endFrom(i: number, out: OutputBuilder): number {
    const stage = this.stages[i]!;
    if (i === this.stages.length - 1) return stage.end(out);
    const n = this.engine.throughMid(
      i,
      this.set.maxPatternLength * 64,
      (mid) => stage.end(mid),
      (m) => this.pushFrom(i + 1, m, out),
    );
    return n + this.endFrom(i + 1, out);
  }

  /** A scan that throws leaves no half-scanned state behind: the stream is wiped and closed. */
  private failClosed(scan: () => number): number {
    try {
      return scan();
    } catch (e) {
      this.close();
      throw e;
    }
  }

  abort(): void {
    if (this.closed) return;
    this.close();
  }

  /**
   * Used by replaceAll: one builder for push and end, so a big body is copied only once. With
   * `into` and a single stage, nothing is copied until a match is replaced (pass-through).
   */
  runWhole(input: Uint8Array, into?: Uint8Array): Uint8Array {
    this.check();
    const out = new OutputBuilder(input.length + 16, into);
    if (into && this.stages.length === 1) out.passThrough(input);
    this.replacements += this.failClosed(() => this.pushFrom(0, input, out));
    this.replacements += this.failClosed(() => this.endFrom(0, out));
    this.close();
    return out.take();
  }

  /** Free the WASM side (zeroing it) without closing: later calls report set-disposed. */
  release(): void {
    // Lent output may hold this stream's bytes (a real value on the swap path).
    this.engine.wipeLent();
    if (this.ptr !== 0) {
      this.engine.freeStream(this.ptr);
      this.ptr = 0;
    }
    if (this.vptr !== 0) {
      this.engine.freeViewStream(this.vptr);
      this.vptr = 0;
    }
    if (this.fptr !== 0) {
      this.engine.freeViewStream(this.fptr);
      this.fptr = 0;
    }
  }

  private close(): void {
    this.closed = true;
    this.release();
    this.set.streams.delete(this);
  }

  private check(): void {
    if (this.closed) throw new MatcherError("stream-closed", "stream is closed");
    if (this.set.disposed) throw new MatcherError("set-disposed", "pattern set was disposed");
    if (this.ptr === 0) throw new MatcherError("engine-failure", "stream state was wiped");
  }
}

class WasmEngineImpl implements WasmEngine {
  private readonly x: MatcherExports;
  private readonly piece: number;
  private readonly viewPiece: number;
  private readonly rawCap: number;
  private mem: Uint8Array;
  private i32: Int32Array;
  private readonly sets = new Set<WasmCompiledSet>();

  constructor(bytes: Uint8Array, options: WasmEngineOptions) {
    const module = new WebAssembly.Module(bytes);
    const instance = new WebAssembly.Instance(module, {
      env: {
        abort() {
          throw new MatcherError("engine-failure", "matcher aborted");
        },
      },
    });
    this.x = instance.exports as unknown as MatcherExports;
    this.piece = this.x.pieceSize();
    this.viewPiece = this.x.viewPiece();
    this.rawCap = this.x.raw_cap();
    this.x.set_tuning(
      (options.forceTrieWalk ? 1 : 0) |
        (options.disableSkip ? 2 : 0) |
        (options.frequentSwitching ? 4 : 0),
    );
    this.mem = new Uint8Array(this.x.memory.buffer);
    this.i32 = new Int32Array(this.x.memory.buffer);
  }

  /**
   * The decoder's table of HTML named references (not secret), loaded with the first view
   * stream and again after each wipe (a wiped heap is all zeros).
   */
  private refsLoaded = false;
  private loadNamedReferences(): void {
    if (this.refsLoaded) return;
    const at = this.x.refs_alloc(NAMED_REFERENCES.length);
    if (at === 0) throw new MatcherError("engine-failure", "out of matcher memory");
    this.views();
    this.mem.set(NAMED_REFERENCES, at);
    this.x.refs_build();
    this.refsLoaded = true;
  }

  get memory(): WebAssembly.Memory {
    return this.x.memory;
  }

  /** Memory may have grown (only allocation grows it): refresh the views. */
  private views(): void {
    if (this.mem.buffer !== this.x.memory.buffer || this.mem.byteLength === 0) {
      this.mem = new Uint8Array(this.x.memory.buffer);
      this.i32 = new Int32Array(this.x.memory.buffer);
    }
  }

  compile(specs: readonly PatternSpec[], options: CompileOptions = {}): CompiledSet {
    const maxLen = validatePatternSpecs(specs);
    const ptr = this.build(specs);
    let viewPtr = 0;
    const n = viewCount(options.views, specs.length);
    if (n > 0) {
      const vspecs = viewSpecs(specs, n);
      // All patterns and no decoded spelling added: the same set serves both stages.
      try {
        viewPtr = n === specs.length && vspecs.length === n ? ptr : this.build(vspecs);
      } catch (e) {
        this.x.set_free(ptr);
        throw e;
      }
    }
    const set = new WasmCompiledSet(
      this,
      ptr,
      specs.length,
      maxLen,
      viewPtr,
      n > 0 && n < specs.length,
    );
    this.sets.add(set);
    return set;
  }

  /** Write a validated set into linear memory and build its tables; returns its pointer. */
  private build(specs: readonly PatternSpec[]): number {
    let dataLen = 0;
    for (const s of specs) dataLen += s.pattern.length + s.replacement.length;
    if (dataLen > 0x7fff_0000) {
      throw new MatcherError("engine-failure", "pattern set is too large for the engine");
    }
    const x = this.x;
    const ptr = x.set_new(specs.length, dataLen);
    if (ptr === 0) throw new MatcherError("engine-failure", "out of matcher memory");
    this.views();
    const base = x.set_data(ptr);
    let off = 0;
    for (let i = 0; i < specs.length; i++) {
      const { pattern, replacement } = specs[i]!;
      this.mem.set(pattern, base + off);
      this.mem.set(replacement, base + off + pattern.length);
      x.set_define(ptr, i, off, pattern.length, off + pattern.length, replacement.length);
      off += pattern.length + replacement.length;
    }
    if (x.set_build(ptr) !== 0) {
      x.set_free(ptr);
      throw new MatcherError("engine-failure", "out of matcher memory");
    }
    this.views();
    return ptr;
  }

  /**
   * The one output buffer lent by `pushLent`: reused by every stream of this engine (a push is
   * synchronous, so one is enough however many streams are open), grown when an output does
   * not fit. `lentDirty` bytes of it may hold stream output; they are zeroed when any stream
   * ends, aborts or is released, and by wipeAll.
   */
  private lentBuf: Uint8Array = new Uint8Array(64 * 1024);
  private lentDirty = 0;
  private readonly lentOut = new OutputBuilder(0, this.lentBuf);

  lendBuilder(): OutputBuilder {
    this.lentOut.restart(this.lentBuf);
    return this.lentOut;
  }

  /** The builder's output as a view of the lent buffer (adopting it if the builder grew it). */
  lent(out: OutputBuilder): Uint8Array {
    if (out.buf !== this.lentBuf) {
      // Growing copied the old buffer's bytes and zeroed it; the grown one is kept for reuse.
      this.lentBuf = out.buf;
      this.lentDirty = 0;
    }
    if (out.length > this.lentDirty) this.lentDirty = out.length;
    return this.lentBuf.subarray(0, out.length);
  }

  wipeLent(): void {
    if (this.lentDirty === 0) return;
    this.lentBuf.fill(0, 0, this.lentDirty);
    this.lentDirty = 0;
  }

  openStream(set: CompiledSet): LendingMatchStream {
    const s = this.own(set);
    if (s.disposed) throw new MatcherError("set-disposed", "pattern set was disposed");
    return new WasmMatchStream(this, s);
  }

  replaceAll(set: CompiledSet, input: Uint8Array): { output: Uint8Array; replacements: number } {
    const s = this.openStream(set) as WasmMatchStream;
    const output = s.runWhole(input);
    return { output, replacements: s.replacements };
  }

  replaceAllInto(
    set: CompiledSet,
    input: Uint8Array,
    into: Uint8Array,
  ): { output: Uint8Array; replacements: number } {
    const s = this.openStream(set) as WasmMatchStream;
    const output = s.runWhole(input, into);
    return { output, replacements: s.replacements };
  }

  wipeAll(): void {
    for (const set of this.sets) {
      set.disposed = true;
      for (const s of set.streams) s.release();
      set.streams.clear();
    }
    this.sets.clear();
    this.wipeLent();
    this.x.wipe_all();
    this.views();
    this.refsLoaded = false;
  }

  /** For tests: the first byte of the heap (below it: static data only, never a secret). */
  heapStart(): number {
    return this.x.heap_start();
  }

  /** For tests and docs: which automaton and prefilter a set uses. */
  describe(set: CompiledSet): { dense: boolean; skip: boolean } {
    const s = this.own(set);
    return { dense: this.x.set_dense(s.ptr) === 1, skip: this.x.set_uses_skip(s.ptr) === 1 };
  }

  private own(set: CompiledSet): WasmCompiledSet {
    if (!(set instanceof WasmCompiledSet) || set.engine !== this) {
      throw new TypeError("not a pattern set of this WASM engine");
    }
    return set;
  }

  releaseSet(set: WasmCompiledSet): void {
    if (!this.sets.delete(set)) return;
    this.x.set_free(set.ptr);
    if (set.viewPtr !== 0 && set.viewPtr !== set.ptr) this.x.set_free(set.viewPtr);
  }

  newStream(setPtr: number): number {
    const ptr = this.x.stream_new(setPtr);
    if (ptr === 0) throw new MatcherError("engine-failure", "out of matcher memory");
    this.views();
    return ptr;
  }

  freeStream(ptr: number): void {
    this.x.stream_free(ptr);
  }

  newViewStream(viewSetPtr: number, flat: boolean): number {
    this.loadNamedReferences();
    const ptr = this.x.view_stream_new(viewSetPtr, flat ? 1 : 0);
    if (ptr === 0) throw new MatcherError("engine-failure", "out of matcher memory");
    this.views();
    return ptr;
  }

  freeViewStream(ptr: number): void {
    this.x.view_stream_free(ptr);
  }

  /** Reused buffers for the bytes between a view set's stages (no fresh pages). */
  private readonly mids = [new Uint8Array(64 * 1024), new Uint8Array(64 * 1024)];

  /** Run `first` into reused buffer `slot`, hand what it wrote to `second`, wipe it. */
  throughMid(
    slot: number,
    capacity: number,
    first: (mid: OutputBuilder) => number,
    second: (bytes: Uint8Array) => number,
  ): number {
    let mid = this.mids[slot]!;
    if (mid.length < capacity) {
      mid = new Uint8Array(Math.max(capacity, mid.length * 2));
      this.mids[slot] = mid;
    }
    const builder = new OutputBuilder(capacity, mid);
    let bytes: Uint8Array | null = null;
    try {
      const n = first(builder);
      bytes = builder.take();
      return n + second(bytes);
    } finally {
      (bytes ?? mid).fill(0);
      if (bytes && bytes.buffer !== mid.buffer) mid.fill(0);
    }
  }

  /**
   * The view stage of a view set, piece by piece: decode, match the view, and copy out the raw
   * bytes with the raw spelling of each match replaced. Returns the matches.
   */
  viewPushInto(vs: number, chunk: Uint8Array, final: boolean, out: OutputBuilder): number {
    if (chunk.length === 0 && !final) return 0;
    const x = this.x;
    let rawUsed = 0;
    let viewUsed = 0;
    let count = 0;
    try {
      let off = 0;
      do {
        this.views();
        const n = Math.min(this.viewPiece, chunk.length - off);
        const last = final && off + n >= chunk.length ? 1 : 0;
        const raw = x.raw_work_ptr();
        const carry = x.view_begin(vs);
        const from = x.view_emitted(vs);
        if (carry + n > this.rawCap)
          throw new MatcherError("engine-failure", "view carry overflow");
        this.mem.set(chunk.subarray(off, off + n), raw + carry);
        rawUsed = Math.max(rawUsed, carry + n);
        const v = x.view_decode(vs, n, last);
        if (v < 0) throw new MatcherError("engine-failure", "view carry overflow");
        viewUsed = Math.max(viewUsed, v);
        count += this.drain(
          x.view_scan(vs, v, last),
          () => x.view_scan(vs, 0, last),
          raw,
          () => x.view_decided(vs),
          out,
          from,
        );
        if (x.view_save(vs) !== 0)
          throw new MatcherError("engine-failure", "out of matcher memory");
        off += n;
      } while (off < chunk.length);
    } finally {
      // Both buffers held body bytes: wipe them even if the scan failed.
      x.raw_clear(rawUsed);
      x.work_clear(viewUsed);
    }
    return count;
  }

  /** Scan `chunk` piece by piece; returns the number of replacements made. */
  pushInto(st: number, chunk: Uint8Array, out: OutputBuilder): number {
    if (chunk.length === 0) return 0;
    const x = this.x;
    this.views();
    const work = x.work_ptr();
    let used = 0;
    let count = 0;
    try {
      for (let off = 0; off < chunk.length; off += this.piece) {
        const n = Math.min(this.piece, chunk.length - off);
        const carry = x.stream_begin(st);
        if (carry + n > used) used = carry + n;
        this.mem.set(chunk.subarray(off, off + n), work + carry);
        count += this.scan(st, work, n, 0, out);
      }
    } finally {
      // The work buffer held body bytes: wipe it even if the scan failed.
      x.work_clear(used);
    }
    return count;
  }

  endInto(st: number, out: OutputBuilder): number {
    const x = this.x;
    this.views();
    const work = x.work_ptr();
    const carry = x.stream_begin(st);
    try {
      return this.scan(st, work, 0, 1, out);
    } finally {
      x.work_clear(carry);
    }
  }

  private scan(st: number, work: number, added: number, final: number, out: OutputBuilder) {
    const x = this.x;
    return this.drain(
      x.stream_scan(st, added, final),
      () => x.stream_scan(st, 0, final),
      work,
      () => x.last_decided(),
      out,
    );
  }

  /**
   * Copy out a scan's result: the bytes from `base` between match records, each record's
   * replacement, calling `again` while the record buffer was full, then up to `decided()`.
   */
  private drain(
    first: number,
    again: () => number,
    base: number,
    decided: () => number,
    out: OutputBuilder,
    start = 0,
  ): number {
    const x = this.x;
    const mem = this.mem;
    const i32 = this.i32;
    const work = base;
    const rec = x.record_ptr() >> 2;
    let emitFrom = start;
    let count = 0;
    let r = first;
    for (;;) {
      const n = r >>> 2;
      for (let k = 0; k < n; k++) {
        const at = rec + k * 4;
        const start = i32[at]!;
        if (start > emitFrom) out.keep(mem.subarray(work + emitFrom, work + start));
        const replPtr = i32[at + 2]! >>> 0;
        out.replace(mem.subarray(replPtr, replPtr + i32[at + 3]!));
        emitFrom = i32[at + 1]!;
      }
      count += n;
      const status = r & 3;
      if (status === SCAN_DONE) break;
      if (status !== SCAN_FULL) throw new MatcherError("engine-failure", "matcher scan failed");
      r = again();
    }
    // The tail is already saved as the carry; the buffer still holds the decided bytes.
    const upTo = decided();
    if (upTo > emitFrom) out.keep(mem.subarray(work + emitFrom, work + upTo));
    return count;
  }
}

/** Instantiate one engine (one WASM instance). Sync, so workers can create it at start-up. */
export function createWasmEngine(
  wasmBytes?: Uint8Array,
  options: WasmEngineOptions = {},
): WasmEngine {
  return new WasmEngineImpl(wasmBytes ?? readFileSync(DEFAULT_WASM_PATH), options);
}
