// The matcher worker thread: runs one engine per live pattern set and the streams pinned to this
// worker by src/matcher/pool/pool.ts, speaking the protocol of src/matcher/pool/pool-protocol.ts.
// It must never log, never put pattern, replacement or stream bytes into a message other than a
// transferred output buffer, and never keep or send back a buffer that held input bytes without
// zeroing them.
//
// Why one engine instance per pattern set (not one per worker): a worker holds the old set
// while streams opened on it finish and the new set for everything after, and retiring the old
// set must zero everything it touched (`wipeAll` of its linear memory) without disturbing the
// new one. Separate instances make that a whole-memory wipe instead of a careful partial one.

import { readFileSync } from "node:fs";
import type {
  CrashMode,
  EngineName,
  FromWorker,
  ToWorker,
} from "../src/matcher/pool/pool-protocol.ts";
import { unpackSpecs } from "../src/matcher/pool/pool-protocol.ts";
import { referenceEngine } from "../src/matcher/reference.ts";
import {
  type CompiledSet,
  type LendingMatchStream,
  type MatcherEngine,
  MatcherError,
  type MatchStream,
} from "../src/matcher/types.ts";
import { createWasmEngine, DEFAULT_WASM_PATH } from "../src/matcher/wasm-engine.ts";

/** One engine instance and the means to zero all memory it ever held. */
interface EngineInstance {
  readonly engine: MatcherEngine;
  /** The linear memory outputs may be views into (they must be copied, not transferred). */
  readonly memory?: WebAssembly.Memory;
  /** Zero everything the instance holds; it is unusable afterwards. */
  wipe(): void;
}

type EngineFactory = () => EngineInstance;

interface LiveSet {
  readonly instance: EngineInstance;
  readonly set: CompiledSet;
  /** Streams still running on this set. */
  streams: number;
  /** No new stream will open on this set: zero it when `streams` reaches 0. */
  retired: boolean;
}

interface LiveStream {
  readonly stream: MatchStream;
  readonly gen: number;
}

async function loadEngineFactory(name: EngineName): Promise<EngineFactory> {
  if (name === "reference") {
    // The reference engine is stateless; its sets zero themselves on dispose.
    return () => ({ engine: referenceEngine, wipe() {} });
  }
  // Read once: every set change instantiates a fresh engine from the same bytes.
  const bytes = new Uint8Array(readFileSync(DEFAULT_WASM_PATH));
  const factory: EngineFactory = () => {
    const engine = createWasmEngine(bytes);
    return { engine, memory: engine.memory, wipe: () => engine.wipeAll() };
  };
  // Fail at start-up, not on the first secret set: instantiate once and wipe.
  factory().wipe();
  return factory;
}

function isLending(stream: MatchStream): boolean {
  return typeof (stream as Partial<LendingMatchStream>).pushLent === "function";
}

function post(msg: FromWorker, transfer: ArrayBuffer[] = []): void {
  postMessage(msg, transfer);
}

function errorCode(e: unknown): MatcherError | undefined {
  return e instanceof MatcherError ? e : undefined;
}

class MatcherWorker {
  private factory: EngineFactory | undefined;
  private readonly sets = new Map<number, LiveSet>();
  private readonly streams = new Map<number, LiveStream>();
  /** Engine instances zeroed so far (reported to tests by `inspect`). */
  private wiped = 0;

  /** Messages that arrived while the engine module was loading, handled in order after. */
  private backlog: ToWorker[] | undefined;

  async init(engine: EngineName): Promise<void> {
    this.backlog = [];
    try {
      this.factory = await loadEngineFactory(engine);
      post({ t: "ready" });
    } catch (e) {
      post({ t: "init-failed", message: e instanceof Error ? e.message : "engine failed to load" });
    }
    const queued = this.backlog;
    this.backlog = undefined;
    try {
      for (const msg of queued) this.handle(msg);
    } catch (e) {
      // Outside this async function, so it is an uncaught error that kills the worker (as it
      // would have been had the message arrived later), not a quiet rejected promise.
      setTimeout(() => {
        throw e;
      });
    }
  }

  handle(msg: ToWorker): void {
    if (this.backlog && msg.t !== "crash") {
      this.backlog.push(msg);
      return;
    }
    switch (msg.t) {
      case "init":
        void this.init(msg.engine);
        return;
      case "compile":
        this.compile(msg.gen, msg.packed);
        return;
      case "retire":
        this.retire(msg.gen);
        return;
      case "open":
        this.open(msg.sid, msg.gen);
        return;
      case "push":
        this.push(msg.sid, msg.buf, msg.len);
        return;
      case "end":
        this.end(msg.sid);
        return;
      case "abort":
        this.abort(msg.sid);
        return;
      case "crash":
        crash(msg.mode);
        return;
      case "inspect":
        post({
          t: "inspected",
          state: { gens: [...this.sets.keys()], streams: this.streams.size, wiped: this.wiped },
        });
        return;
      case "close":
        this.close();
        return;
    }
  }

  private compile(gen: number, packed: ArrayBuffer): void {
    let instance: EngineInstance | undefined;
    try {
      if (!this.factory) throw new MatcherError("engine-failure", "worker engine not loaded");
      instance = this.factory();
      const { specs, options } = unpackSpecs(packed);
      const set = instance.engine.compile(specs, options);
      this.sets.set(gen, { instance, set, streams: 0, retired: false });
      post({ t: "compiled", gen });
    } catch (e) {
      if (instance) this.wipe(instance);
      const me = errorCode(e);
      if (!me) throw e; // not a validation error: the engine is broken, let the worker die
      post({
        t: "compile-failed",
        gen,
        code: me.code,
        message: me.message,
        ...(me.index !== undefined ? { index: me.index } : {}),
      });
    } finally {
      // The engine keeps its own copy in its tables; the transferred one is ours to zero.
      new Uint8Array(packed).fill(0);
    }
  }

  private retire(gen: number): void {
    const live = this.sets.get(gen);
    if (!live) return;
    live.retired = true;
    this.disposeIfIdle(gen, live);
  }

  private disposeIfIdle(gen: number, live: LiveSet): void {
    if (!live.retired || live.streams > 0) return;
    this.sets.delete(gen);
    live.set.dispose();
    this.wipe(live.instance);
  }

  private open(sid: number, gen: number): void {
    const live = this.sets.get(gen);
    if (!live || live.retired) {
      post({ t: "stream-failed", sid, code: "set-disposed", message: "pattern set is not loaded" });
      return;
    }
    try {
      this.streams.set(sid, { stream: live.instance.engine.openStream(live.set), gen });
      live.streams++;
    } catch (e) {
      this.failStream(sid, e);
    }
  }

  private push(sid: number, buf: ArrayBuffer, len: number): void {
    const input = new Uint8Array(buf, 0, len);
    const live = this.streams.get(sid);
    if (!live) {
      // Already failed or aborted; the bytes are dropped, never echoed back.
      input.fill(0);
      return;
    }
    let out: Uint8Array;
    const lent = isLending(live.stream);
    try {
      // Lent output is copied by ship() below, before any other engine call can reuse it.
      out = lent ? (live.stream as LendingMatchStream).pushLent(input) : live.stream.push(input);
    } catch (e) {
      input.fill(0);
      this.failStream(sid, e);
      return;
    }
    const shipped = this.ship(out, live.gen, lent, buf);
    // The input buffer goes back zeroed, for the pool's next message: only its first `len`
    // bytes were written (the pool's buffers are all zeros when it fills them).
    input.fill(0);
    const replacements = live.stream.replacements;
    post(
      {
        t: "out",
        sid,
        buf: shipped.buf,
        len: shipped.len,
        spent: buf,
        consumed: len,
        replacements,
      },
      [shipped.buf, buf],
    );
  }

  private end(sid: number): void {
    const live = this.streams.get(sid);
    if (!live) return;
    let out: Uint8Array;
    try {
      out = live.stream.end();
    } catch (e) {
      this.failStream(sid, e);
      return;
    }
    const replacements = live.stream.replacements;
    const shipped = this.ship(out, live.gen);
    this.release(sid, live);
    post({ t: "ended", sid, buf: shipped.buf, len: shipped.len, replacements }, [shipped.buf]);
  }

  private abort(sid: number): void {
    const live = this.streams.get(sid);
    if (!live) return;
    live.stream.abort();
    this.release(sid, live);
  }

  /**
   * Puts an engine output into a buffer this worker may transfer, which becomes the reader's
   * chunk. An owned array at the start of its own ArrayBuffer goes as is (its slack past the
   * output is zeroed); anything else (lent output, which the engine reuses; a view into linear
   * memory, which cannot be transferred; the input buffer, which goes back to the pool) is
   * copied into a fresh array of its exact length — the one allocation a message costs, since
   * the reader keeps its chunk as long as it likes.
   */
  private ship(
    out: Uint8Array,
    gen: number,
    lent = false,
    input?: ArrayBuffer,
  ): { buf: ArrayBuffer; len: number } {
    const memory = this.sets.get(gen)?.instance.memory;
    const own = out.buffer;
    if (
      !lent &&
      own instanceof ArrayBuffer &&
      !own.resizable &&
      own !== memory?.buffer &&
      own !== input &&
      out.byteOffset === 0
    ) {
      if (own.byteLength > out.length) new Uint8Array(own, out.length).fill(0);
      return { buf: own, len: out.length };
    }
    const copy = new Uint8Array(out.length);
    copy.set(out);
    return { buf: copy.buffer, len: out.length };
  }

  private failStream(sid: number, e: unknown): void {
    const me = errorCode(e);
    const live = this.streams.get(sid);
    if (live) {
      try {
        live.stream.abort();
      } finally {
        this.release(sid, live);
      }
    }
    // Anything but a MatcherError means the engine itself misbehaved (a WebAssembly trap, a
    // bug): its memory may be inconsistent, so the whole worker dies and the pool fails every
    // stream on it and starts a fresh one.
    if (!me) throw e;
    post({ t: "stream-failed", sid, code: me.code, message: me.message });
  }

  private release(sid: number, live: LiveStream): void {
    this.streams.delete(sid);
    const set = this.sets.get(live.gen);
    if (!set) return;
    set.streams--;
    this.disposeIfIdle(live.gen, set);
  }

  private wipe(instance: EngineInstance): void {
    instance.wipe();
    this.wiped++;
  }

  private close(): void {
    for (const live of this.streams.values()) live.stream.abort();
    this.streams.clear();
    for (const live of this.sets.values()) {
      live.set.dispose();
      this.wipe(live.instance);
    }
    this.sets.clear();
    post({ t: "closed" });
  }
}

function crash(mode: CrashMode): void {
  if (mode === "exit") process.exit(70);
  if (mode === "hang") {
    // Stands for an engine stuck in a loop: the thread never answers again.
    for (;;) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);
  }
  throw new Error("matcher worker crash requested by a test");
}

// Inside a worker `self` is the worker's global scope; Bun's types describe it as a Worker.
declare const self: Worker;
const worker = new MatcherWorker();
self.onmessage = (event: MessageEvent<ToWorker>) => worker.handle(event.data);
