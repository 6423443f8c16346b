// The matcher worker pool: runs the secret matcher on N worker threads (workers/matcher-worker.ts)
// so scanning never blocks the proxy's event loop, and exposes it as TransformStreams.
// It must never let a byte reach a consumer unscanned: a stream whose worker dies, whose engine
// fails or whose pool closes errors instead of ending cleanly (fail closed). It never logs and
// never puts pattern, replacement or body bytes into an error message.
//
// Flow control. A stream is pinned to one worker (its carry-over window lives there). Chunks are
// transferred to the worker, several at once: a round trip costs tens of microseconds, so one
// chunk at a time would cap a stream far below the engine's speed. Bytes in flight are capped
// per stream and per pool; a writer waits (its `write` promise stays pending) while its stream
// is at the cap, and the TransformStream stops pulling from the writer while the reader lags,
// so a slow consumer slows the producer and memory per stream stays bounded by
//   streamInFlightBytes + readableHighWaterMark + coalesceBytes + one caller chunk
// (and the pool's free message buffers, RECYCLED_BYTES at most, besides).
// Chunks written while earlier ones are in flight are coalesced into messages of up to
// `maxMessageBytes` (a copy is far cheaper than a message); with nothing in flight a chunk
// goes at once, so coalescing never delays output by more than one round trip.
//
// Buffers. Messages are built in recycled buffers (./message-buffers.ts): the worker sends each
// back zeroed with the push's output, which is in a buffer of its own — the reader keeps its
// chunks as long as it likes, so output can never be recycled, but input can, and a fresh
// buffer per message was most of this thread's time. At most RECYCLED_BYTES are kept free.
//
// Memory hygiene, and what a garbage-collected runtime cannot promise. Chunks that span their
// whole ArrayBuffer are handed over: transferred (the caller's view is detached, the bytes
// leave this thread) or, when small, detached, copied into the coalescing buffer and zeroed.
// Other chunks are copied into recycled buffers that are transferred. The worker zeroes every
// input buffer after scanning (and sends it back) and the engine zeroes a stream's state when
// it ends. Coalescing buffers are transferred, or zeroed when their stream fails; free
// buffers are all zeros; output that arrives for a stream nobody reads any more is zeroed. The pool keeps one packed copy of the current
// pattern set (to start a replacement worker after a crash) and zeroes it when the set is
// replaced or the pool closes. What this code cannot do: zero a caller's chunk it only copied
// (views into larger buffers, which the caller owns), zero output chunks once handed to the
// consumer, or reach copies the JavaScript engine itself made (structured-clone staging, GC
// moves, strings the caller built). Those are the consumer's and the runtime's to mind.

import { availableParallelism } from "node:os";
import {
  createScanStream,
  type ScanResult,
  type ScanSink,
  type ScanStream,
  type ScanStreamCore,
} from "../scan-stream.ts";
import { type CompileOptions, MatcherError, type PatternSpec } from "../types.ts";
import { MessageBuffers } from "./message-buffers.ts";
import {
  type CrashMode,
  type EngineName,
  type FromWorker,
  packSpecs,
  type ToWorker,
  type WorkerState,
} from "./pool-protocol.ts";

export type { ScanResult, ScanStream } from "../scan-stream.ts";
export type { EngineName, WorkerState } from "./pool-protocol.ts";

const WORKER_URL = new URL("../../../workers/matcher-worker.ts", import.meta.url);

export interface MatcherPoolOptions {
  /**
   * The initial secret set, loaded under the name "default". Optional (an empty list loads
   * nothing either): named sets can be added later with `setPatterns(specs, name)`, and a
   * stream on a name with no set refuses to open.
   */
  readonly specs?: readonly PatternSpec[];
  /** Worker threads; default: the number of cores. */
  readonly size?: number;
  /** Engine the workers run; default "wasm". "reference" is the slow oracle, for tests. */
  readonly engine?: EngineName;
  /** Input bytes one stream may have in flight to its worker (default 1 MiB). */
  readonly streamInFlightBytes?: number;
  /** Input bytes all streams together may have in flight (default 64 MiB). */
  readonly poolInFlightBytes?: number;
  /**
   * Largest message the pool builds: coalesced small chunks, pieces of copied big ones
   * (default 256 KiB; never more than either in-flight cap).
   */
  readonly maxMessageBytes?: number;
  /**
   * Chunks smaller than this are copied into one batch while earlier ones are in flight
   * (default 128 KiB): a message costs microseconds on each thread, a copy of 64 KiB well
   * under one, so fewer, bigger messages stream faster.
   */
  readonly coalesceBelowBytes?: number;
  /** Output bytes a stream's readable side queues before the writer waits (default 1 MiB). */
  readonly readableHighWaterMark?: number;
  /** How long close() waits for workers to zero their memory before terminating them. */
  readonly closeTimeoutMs?: number;
  /**
   * A worker with messages outstanding that answers none for this long is taken as hung: it
   * is terminated and replaced, and its streams fail (default 30 s).
   */
  readonly stallTimeoutMs?: number;
}

/** Figures the proxy exports as metrics. */
export interface PoolStats {
  /** Worker threads currently alive. */
  readonly workers: number;
  readonly streamsOpen: number;
  /** Input bytes posted to workers whose output has not come back yet. */
  readonly inFlightBytes: number;
  /** Bytes waiting in coalescing buffers. */
  readonly pendingBytes: number;
  /** Messages posted to workers and not yet answered. */
  readonly queueDepth: number;
  /** Writers held back by the in-flight caps. */
  readonly waitingWriters: number;
  /** Workers replaced after a crash since the pool started. */
  readonly restarts: number;
  /** Pattern-set changes so far (1 after start with `specs`); numbers every compiled set. */
  readonly generation: number;
  /** Named pattern sets streams can open on. */
  readonly patternSets: number;
  readonly perWorker: readonly {
    readonly alive: boolean;
    readonly streams: number;
    readonly inFlightBytes: number;
    readonly queueDepth: number;
  }[];
}

interface Resolver<T = void> {
  resolve(value: T): void;
  reject(reason: unknown): void;
}

function deferred<T = void>(): Resolver<T> & { promise: Promise<T> } {
  let resolve!: (value: T) => void;
  let reject!: (reason: unknown) => void;
  const promise = new Promise<T>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

interface Config {
  readonly engine: EngineName;
  readonly streamInFlightBytes: number;
  readonly poolInFlightBytes: number;
  readonly maxMessageBytes: number;
  readonly coalesceBelowBytes: number;
  readonly coalesceBytes: number;
  readonly readableHighWaterMark: number;
  readonly closeTimeoutMs: number;
  readonly stallTimeoutMs: number;
}

function positive(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new TypeError(`MatcherPool option ${name} must be a positive integer`);
  }
  return value;
}

function defaultSize(): number {
  const n = globalThis.navigator?.hardwareConcurrency ?? availableParallelism();
  return Math.max(1, n);
}

/** True when handing `chunk.buffer` over detaches nothing but this chunk. */
function ownsWholeBuffer(chunk: Uint8Array): boolean {
  const buf = chunk.buffer;
  return (
    buf instanceof ArrayBuffer &&
    !buf.resizable &&
    chunk.byteOffset === 0 &&
    chunk.byteLength === buf.byteLength
  );
}

/**
 * Free message buffers the pool keeps for reuse, in bytes: enough for a few streams' messages
 * in flight (1 MiB each by default); more would be memory held for a burst long gone.
 */
const RECYCLED_BYTES = 4 << 20;

/**
 * Output for a stream that already failed or was aborted (the worker had scanned it before it
 * learnt): nobody will read it, and it may hold secret bytes, so it is zeroed.
 */
function zeroOrphan(buf: ArrayBuffer, len: number): void {
  new Uint8Array(buf, 0, len).fill(0);
}

/** Worker restarts in a row (without becoming ready) after which a slot stays down. */
const MAX_CONSECUTIVE_FAILURES = 3;

/** One worker thread position; the thread in it is replaced when it dies. */
class WorkerSlot {
  worker: Worker | undefined;
  readonly streams = new Map<number, PoolStream>();
  inFlightBytes = 0;
  queueDepth = 0;
  /** When the worker last answered (or was started): the stall watchdog's reference. */
  lastProgress = performance.now();
  /** Down for good: its worker kept dying before it was ready. */
  broken = false;
  private consecutiveFailures = 0;
  private readonly compileWaiters = new Map<number, Resolver>();
  /** Generations the current worker has compiled (reset when the worker is replaced). */
  private compiledGens = new Set<number>();
  private initWaiter: Resolver | undefined;
  private readonly inspectWaiters: Resolver<WorkerState>[] = [];
  private closeWaiter: Resolver | undefined;

  constructor(
    private readonly pool: MatcherPool,
    readonly index: number,
  ) {}

  /** Starts a worker with the pool's current set; resolves when it is ready to scan. */
  spawn(): Promise<void> {
    const worker = new Worker(WORKER_URL);
    this.worker = worker;
    this.lastProgress = performance.now();
    this.compiledGens = new Set();
    worker.onmessage = (event: MessageEvent<FromWorker>) => {
      if (worker === this.worker) this.onMessage(event.data);
    };
    worker.addEventListener("error", (event) => {
      // The worker's own message may quote anything; it is not repeated anywhere.
      event.preventDefault();
      this.died(worker, "crashed");
    });
    worker.addEventListener("messageerror", () => this.died(worker, "sent an unreadable message"));
    worker.addEventListener("close", (event) => {
      const code = (event as CloseEvent).code;
      this.died(worker, `exited with code ${code}`);
    });
    const init = deferred();
    this.initWaiter = init;
    this.post({ t: "init", engine: this.pool.config.engine });
    const ready: Promise<unknown>[] = [init.promise];
    // The replacement gets every set the pool currently has, under the same generations.
    for (const current of this.pool.currentSets.values()) {
      ready.push(this.compile(current.gen, current.packed));
    }
    return Promise.all(ready).then(
      () => {
        this.consecutiveFailures = 0;
      },
      (e: unknown) => {
        // A worker that cannot load the current set is of no use: replace it (or give up
        // after a few tries) rather than leave a slot whose every stream would fail.
        if (worker === this.worker) this.died(worker, "could not load the current pattern set");
        throw e;
      },
    );
  }

  hasCompiled(gen: number): boolean {
    return this.compiledGens.has(gen);
  }

  post(msg: ToWorker, transfer: ArrayBuffer[] = []): void {
    this.worker?.postMessage(msg, transfer);
  }

  /** Sends a copy of a packed set to the worker (the copy is transferred and zeroed there). */
  compile(gen: number, packed: ArrayBuffer): Promise<void> {
    if (!this.worker) {
      return Promise.reject(
        new MatcherError("engine-failure", `matcher worker ${this.index} is down`),
      );
    }
    const waiter = deferred();
    this.compileWaiters.set(gen, waiter);
    const copy = packed.slice(0);
    this.post({ t: "compile", gen, packed: copy }, [copy]);
    return waiter.promise;
  }

  private onMessage(msg: FromWorker): void {
    this.lastProgress = performance.now();
    switch (msg.t) {
      case "ready":
        this.initWaiter?.resolve();
        this.initWaiter = undefined;
        return;
      case "init-failed": {
        const err = new MatcherError(
          "engine-failure",
          `matcher worker could not load the ${this.pool.config.engine} engine: ${msg.message}`,
        );
        this.initWaiter?.reject(err);
        this.initWaiter = undefined;
        // Loading fails the same way every time: keep the slot down instead of looping.
        this.broken = true;
        if (this.worker) this.died(this.worker, "failed to load its engine");
        return;
      }
      case "compiled":
        this.compiledGens.add(msg.gen);
        this.compileWaiters.get(msg.gen)?.resolve();
        this.compileWaiters.delete(msg.gen);
        return;
      case "compile-failed":
        this.compileWaiters
          .get(msg.gen)
          ?.reject(new MatcherError(msg.code, msg.message, msg.index));
        this.compileWaiters.delete(msg.gen);
        return;
      case "out": {
        // The buffer that carried the push's input, zeroed by the worker: the next message's.
        this.pool.buffers.give(msg.spent);
        const stream = this.streams.get(msg.sid);
        if (stream) stream.onOutput(msg.buf, msg.len, msg.consumed, msg.replacements);
        else zeroOrphan(msg.buf, msg.len);
        return;
      }
      case "ended": {
        const stream = this.streams.get(msg.sid);
        if (stream) stream.onEnded(msg.buf, msg.len, msg.replacements);
        else zeroOrphan(msg.buf, msg.len);
        return;
      }
      case "stream-failed":
        this.streams.get(msg.sid)?.fail(new MatcherError(msg.code, msg.message));
        return;
      case "closed":
        this.closeWaiter?.resolve();
        return;
      case "inspected":
        this.inspectWaiters.shift()?.resolve(msg.state);
        return;
    }
  }

  /** The worker is gone (crash, exit, terminate): fail its streams, start another. */
  private died(worker: Worker, why: string): void {
    if (worker !== this.worker) return;
    this.worker = undefined;
    worker.onmessage = null;
    worker.terminate();
    const err = new MatcherError(
      "engine-failure",
      `matcher worker ${this.index} ${why}; its streams failed closed`,
    );
    for (const stream of [...this.streams.values()]) stream.fail(err);
    for (const waiter of this.compileWaiters.values()) waiter.reject(err);
    this.compileWaiters.clear();
    this.initWaiter?.reject(err);
    this.initWaiter = undefined;
    for (const waiter of this.inspectWaiters.splice(0)) waiter.reject(err);
    this.closeWaiter?.resolve();
    if (this.pool.isClosed || this.broken) return;
    this.pool.restarts++;
    this.consecutiveFailures++;
    if (this.consecutiveFailures > MAX_CONSECUTIVE_FAILURES) {
      this.broken = true;
      return;
    }
    // Failures of the replacement are handled by its own `died`.
    this.spawn().catch(() => {});
  }

  /** Asks the worker to zero its memory, then terminates it. */
  async shutdown(timeoutMs: number): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    const closed = deferred();
    this.closeWaiter = closed;
    this.post({ t: "close" });
    const timer = setTimeout(() => closed.resolve(), timeoutMs);
    await closed.promise;
    clearTimeout(timer);
    this.worker = undefined;
    worker.onmessage = null;
    worker.terminate();
    for (const waiter of this.compileWaiters.values()) {
      waiter.reject(new MatcherError("set-disposed", "matcher pool is closed"));
    }
    this.compileWaiters.clear();
  }

  /** Test hook: what the worker holds (generations and counts, never bytes). */
  inspect(): Promise<WorkerState> {
    if (!this.worker) {
      return Promise.reject(
        new MatcherError("engine-failure", `matcher worker ${this.index} is down`),
      );
    }
    const waiter = deferred<WorkerState>();
    this.inspectWaiters.push(waiter);
    this.post({ t: "inspect" });
    return waiter.promise;
  }

  /** Terminates the worker from outside (a hung worker, or a test) and replaces it. */
  kill(why: string): void {
    const worker = this.worker;
    if (!worker) return;
    worker.terminate();
    // terminate() is not guaranteed to dispatch `close` synchronously; fail now regardless.
    this.died(worker, why);
  }

  /** A message that needs an answer was posted; an idle worker's stall clock starts now. */
  noteSent(): void {
    if (this.queueDepth === 0) this.lastProgress = performance.now();
    this.queueDepth++;
  }

  /** True when the worker owes answers and has given none for `timeoutMs`. */
  stalled(now: number, timeoutMs: number): boolean {
    return this.worker !== undefined && this.queueDepth > 0 && now - this.lastProgress > timeoutMs;
  }

  /** Test hook: make the worker fail the way a real crash or hang would. */
  crash(mode: CrashMode | "terminate"): void {
    if (mode === "terminate") this.kill("was terminated");
    else this.post({ t: "crash", mode });
  }
}

type StreamState = "open" | "ending" | "ended" | "failed";

/** One stream's main-thread half: flow control, coalescing, ordering, fail-closed. */
class PoolStream implements ScanStreamCore {
  private state: StreamState = "open";
  private failure: unknown;
  inFlightBytes = 0;
  outstanding = 0;
  private pending: Uint8Array | undefined;
  pendingLen = 0;
  private bytesIn = 0;
  private bytesOut = 0;
  private readonly capacityWaiters: Resolver[] = [];
  private readonly endWaiter = deferred();
  private readonly done = deferred<ScanResult>();
  readonly result = this.done.promise;

  constructor(
    private readonly pool: MatcherPool,
    readonly slot: WorkerSlot,
    readonly sid: number,
    private readonly sink: ScanSink,
    /** Take over (detach) chunks that span their whole ArrayBuffer instead of copying them. */
    private readonly transferWholeBuffers: boolean,
  ) {
    this.endWaiter.promise.catch(() => {});
    this.result.catch(() => {});
  }

  get waiting(): number {
    return this.capacityWaiters.length;
  }

  write(chunk: Uint8Array): Promise<void> | undefined {
    this.assertOpen();
    const n = chunk.length;
    if (n === 0) return undefined;
    this.bytesIn += n;
    const cfg = this.pool.config;
    if (n < cfg.coalesceBelowBytes) {
      // A small chunk is copied into the coalescing buffer. If the caller handed its whole
      // buffer over, it is detached now (as a transfer would) and zeroed after the copy.
      const handedOver = this.transferWholeBuffers && ownsWholeBuffer(chunk);
      const small = handedOver ? new Uint8Array((chunk.buffer as ArrayBuffer).transfer()) : chunk;
      if (this.pendingLen + n > cfg.coalesceBytes) {
        return this.flushPending().then(
          () => this.coalesce(small, handedOver),
          (e: unknown) => {
            if (handedOver) small.fill(0);
            throw e;
          },
        );
      }
      return this.coalesce(small, handedOver);
    }
    // Fast path (the common case): nothing coalesced and room under the caps, so send now and
    // let the writer continue without a promise round.
    if (this.pendingLen === 0 && n <= cfg.maxMessageBytes && this.fits(n)) {
      if (this.transferWholeBuffers && ownsWholeBuffer(chunk)) {
        this.send(chunk.buffer as ArrayBuffer, n);
      } else {
        this.send(this.pool.copyToMessage(chunk), n);
      }
      return undefined;
    }
    return this.writeLarge(chunk);
  }

  /** Appends a small chunk to the coalescing buffer (which has room for it). */
  private coalesce(chunk: Uint8Array, owned: boolean): Promise<void> | undefined {
    if (this.state === "failed") {
      if (owned) chunk.fill(0);
      throw this.failure;
    }
    const n = chunk.length;
    const cap = this.pool.config.coalesceBytes;
    if (!this.pending) this.pending = new Uint8Array(this.pool.buffers.take(), 0, cap);
    this.pending.set(chunk, this.pendingLen);
    if (owned) chunk.fill(0);
    this.pendingLen += n;
    this.pool.pendingBytes += n;
    // Nothing in flight: send now (latency); otherwise let the next reply carry it.
    if (this.inFlightBytes === 0 || this.pendingLen === cap) {
      return this.flushPending();
    }
    this.pool.noteWantsFlush(this);
    return undefined;
  }

  private async writeLarge(chunk: Uint8Array): Promise<void> {
    if (this.pendingLen > 0) await this.flushPending();
    if (this.transferWholeBuffers && ownsWholeBuffer(chunk)) {
      // The caller hands the buffer over; one message however large (it is already allocated).
      await this.sendWhenFits(chunk.length, () => chunk.buffer as ArrayBuffer);
      return;
    }
    const max = this.pool.config.maxMessageBytes;
    for (let at = 0; at < chunk.length; at += max) {
      const piece = chunk.subarray(at, Math.min(at + max, chunk.length));
      await this.sendWhenFits(piece.length, () => this.pool.copyToMessage(piece));
    }
  }

  /**
   * Waits until `n` more bytes fit under both caps, then sends at once: no await may come
   * between the check and the send, or other streams could pass the same check meanwhile.
   */
  private async sendWhenFits(n: number, take: () => ArrayBuffer): Promise<void> {
    while (!this.fits(n)) await this.nextWake();
    this.assertLive();
    this.send(take(), n);
  }

  /** Sends the coalescing buffer as soon as the caps allow. */
  private async flushPending(): Promise<void> {
    while (!this.trySendPending()) await this.nextWake();
  }

  /** Sends the coalescing buffer if the caps allow it right now; false if they do not. */
  trySendPending(): boolean {
    this.assertLive();
    if (this.pendingLen === 0) return true;
    if (!this.fits(this.pendingLen)) return false;
    const full = this.pending!;
    const len = this.pendingLen;
    // Transfer the coalescing buffer itself; the next small write takes another from the ring.
    this.pending = undefined;
    this.pendingLen = 0;
    this.pool.pendingBytes -= len;
    this.send(full.buffer as ArrayBuffer, len);
    return true;
  }

  private fits(n: number): boolean {
    const cfg = this.pool.config;
    const streamOk = this.inFlightBytes === 0 || this.inFlightBytes + n <= cfg.streamInFlightBytes;
    const poolOk =
      this.pool.inFlightBytes === 0 || this.pool.inFlightBytes + n <= cfg.poolInFlightBytes;
    return streamOk && poolOk;
  }

  /** Resolves when in-flight bytes came back somewhere; rejects if this stream failed. */
  private nextWake(): Promise<void> {
    this.assertLive();
    const waiter = deferred();
    this.capacityWaiters.push(waiter);
    this.pool.noteWaiting(this);
    return waiter.promise;
  }

  /** Wakes writers so they re-check the caps. */
  wake(): void {
    const waiters = this.capacityWaiters.splice(0);
    for (const w of waiters) w.resolve();
  }

  private send(buf: ArrayBuffer, len: number): void {
    this.inFlightBytes += len;
    this.outstanding++;
    this.slot.inFlightBytes += len;
    this.slot.noteSent();
    this.pool.inFlightBytes += len;
    this.slot.post({ t: "push", sid: this.sid, buf, len }, [buf]);
  }

  private settleInFlight(consumed: number): void {
    this.inFlightBytes -= consumed;
    this.outstanding--;
    this.slot.inFlightBytes -= consumed;
    this.slot.queueDepth--;
    this.pool.inFlightBytes -= consumed;
  }

  onOutput(buf: ArrayBuffer, len: number, consumed: number, replacements: number): void {
    this.settleInFlight(consumed);
    if (len > 0) {
      this.bytesOut += len;
      this.sink.output(new Uint8Array(buf, 0, len), replacements);
    }
    this.pool.capacityFreed(this);
  }

  onEnded(buf: ArrayBuffer, len: number, replacements: number): void {
    this.outstanding--;
    this.slot.queueDepth--;
    if (len > 0) {
      this.bytesOut += len;
      this.sink.output(new Uint8Array(buf, 0, len), replacements);
    }
    this.state = "ended";
    this.detach();
    this.endWaiter.resolve();
    this.done.resolve({ replacements, bytesIn: this.bytesIn, bytesOut: this.bytesOut });
  }

  async end(): Promise<void> {
    this.assertOpen();
    this.state = "ending";
    await this.flushPending();
    this.assertLive();
    this.outstanding++;
    this.slot.noteSent();
    this.slot.post({ t: "end", sid: this.sid });
    return this.endWaiter.promise;
  }

  /** The consumer cancelled or the producer aborted (the TransformStream is already failing). */
  abort(reason: unknown): void {
    this.drop(
      reason instanceof MatcherError ? reason : new MatcherError("stream-closed", "stream aborted"),
      false,
    );
  }

  /** Tells the worker to drop the stream, then fails it (erroring the consumer if `notify`). */
  drop(err: unknown, notify: boolean): void {
    if (this.state === "ended" || this.state === "failed") return;
    this.slot.post({ t: "abort", sid: this.sid });
    this.fail(err, notify);
  }

  /** Fails the stream for good: no clean end will ever reach the consumer. */
  fail(err: unknown, notifySink = true): void {
    if (this.state === "ended" || this.state === "failed") return;
    this.state = "failed";
    this.failure = err;
    if (this.pending) {
      this.pending.fill(0, 0, this.pendingLen);
      this.pool.buffers.give(this.pending.buffer as ArrayBuffer);
      this.pool.pendingBytes -= this.pendingLen;
      this.pending = undefined;
      this.pendingLen = 0;
    }
    // Replies for this stream will not come (its worker is gone or dropped it): release its
    // share of the caps so other streams are not starved.
    this.slot.inFlightBytes -= this.inFlightBytes;
    this.slot.queueDepth -= this.outstanding;
    this.pool.inFlightBytes -= this.inFlightBytes;
    this.inFlightBytes = 0;
    this.outstanding = 0;
    this.detach();
    const waiters = this.capacityWaiters.splice(0);
    for (const w of waiters) w.reject(err);
    this.endWaiter.reject(err);
    this.done.reject(err);
    if (notifySink) this.sink.error(err);
    this.pool.capacityFreed(this);
  }

  private detach(): void {
    this.slot.streams.delete(this.sid);
    this.pool.forget(this);
  }

  private assertOpen(): void {
    this.assertLive();
    if (this.state !== "open") throw new MatcherError("stream-closed", "stream is closed");
  }

  private assertLive(): void {
    if (this.state === "failed") throw this.failure;
  }
}

/** The name a set has when the caller gives none. */
export const DEFAULT_SET = "default";

/** A packed pattern set and its generation number. */
interface CurrentSet {
  readonly gen: number;
  readonly packed: ArrayBuffer;
}

/**
 * The pool. `await MatcherPool.start({ specs })`, then `openStream(name?)` per body (a
 * TransformStream plus its `result`), `setPatterns(specs, name?)` / `dropPatterns(name)` when
 * secrets change, `stats()` for metrics, `replaceAll(bytes, name?)` for small whole buffers,
 * and `await close()` on shutdown (the workers keep the process alive until then).
 */
export class MatcherPool {
  readonly config: Config;
  readonly streams = new Set<PoolStream>();
  /** Recycled message buffers (./message-buffers.ts), all zeros while they are free. */
  readonly buffers: MessageBuffers;
  inFlightBytes = 0;
  pendingBytes = 0;
  restarts = 0;
  /** The current set of each name. */
  readonly currentSets = new Map<string, CurrentSet>();
  private readonly slots: WorkerSlot[] = [];
  private nextSid = 1;
  private nextGen = 1;
  private closed = false;
  private closing: Promise<void> | undefined;
  /** Set changes run one after another so each name's generations commit in order. */
  private setChain: Promise<unknown> = Promise.resolve();
  private readonly waitingStreams = new Set<PoolStream>();
  private readonly flushWanted = new Set<PoolStream>();
  /** Replaces workers that stopped answering (an engine stuck in a loop): fail, not hang. */
  private readonly watchdog: ReturnType<typeof setInterval>;

  private constructor(config: Config, size: number) {
    this.config = config;
    this.buffers = new MessageBuffers(
      config.coalesceBytes,
      Math.max(2, Math.floor(RECYCLED_BYTES / config.coalesceBytes)),
    );
    for (let i = 0; i < size; i++) this.slots.push(new WorkerSlot(this, i));
    this.watchdog = setInterval(
      () => {
        const now = performance.now();
        for (const s of this.slots) {
          if (s.stalled(now, config.stallTimeoutMs)) s.kill("stopped answering");
        }
      },
      Math.min(1000, Math.max(10, config.stallTimeoutMs / 4)),
    );
    // The watchdog alone must not keep the process alive.
    this.watchdog.unref();
  }

  /** Starts the workers and compiles `specs` (if any) in each; rejects on a bad set. */
  static async start(options: MatcherPoolOptions): Promise<MatcherPool> {
    const size = positive("size", options.size, defaultSize());
    const streamInFlightBytes = positive(
      "streamInFlightBytes",
      options.streamInFlightBytes,
      1 << 20,
    );
    const poolInFlightBytes = positive("poolInFlightBytes", options.poolInFlightBytes, 64 << 20);
    // A message the pool builds (a coalesced batch, a piece of a copied chunk) never exceeds
    // either cap, so only a caller's own handed-over buffer can be bigger than the caps.
    const maxMessageBytes = Math.min(
      positive("maxMessageBytes", options.maxMessageBytes, 256 * 1024),
      streamInFlightBytes,
      poolInFlightBytes,
    );
    const config: Config = {
      engine: options.engine ?? "wasm",
      streamInFlightBytes,
      poolInFlightBytes,
      maxMessageBytes,
      coalesceBelowBytes: Math.min(
        positive("coalesceBelowBytes", options.coalesceBelowBytes, 128 * 1024),
        maxMessageBytes,
      ),
      coalesceBytes: maxMessageBytes,
      readableHighWaterMark: positive(
        "readableHighWaterMark",
        options.readableHighWaterMark,
        1 << 20,
      ),
      closeTimeoutMs: positive("closeTimeoutMs", options.closeTimeoutMs, 2000),
      stallTimeoutMs: positive("stallTimeoutMs", options.stallTimeoutMs, 30_000),
    };
    if (config.engine !== "wasm" && config.engine !== "reference") {
      throw new TypeError('MatcherPool option engine must be "wasm" or "reference"');
    }
    const pool = new MatcherPool(config, size);
    try {
      await Promise.all(pool.slots.map((s) => s.spawn()));
      if (options.specs && options.specs.length > 0) await pool.setPatterns(options.specs);
    } catch (e) {
      await pool.close();
      throw e;
    }
    return pool;
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /**
   * Compiles a new secret set in every worker, under `name` (several named sets can be live at
   * once, e.g. one per credential-binding plan). Streams opened on that name after this
   * resolves use it; streams already open finish on the set they started with, which each
   * worker zeroes once its last stream ends. Rejects with the engine's MatcherError (same code
   * and message) on an invalid set, leaving the name's current set in place.
   */
  setPatterns(
    specs: readonly PatternSpec[],
    name: string = DEFAULT_SET,
    options: CompileOptions = {},
  ): Promise<void> {
    return this.serially(() => this.swapSet(specs, name, options));
  }

  /**
   * Forgets the set called `name`: no new stream opens on it, and each worker zeroes it once
   * the streams running on it end. Unknown names are ignored, and so is a closed pool (close
   * zeroed every set already): a cleanup call never rejects.
   */
  dropPatterns(name: string): Promise<void> {
    if (this.closed) return Promise.resolve();
    return this.serially(async () => {
      if (this.closed) return;
      const current = this.currentSets.get(name);
      if (!current) return;
      this.currentSets.delete(name);
      for (const s of this.slots) s.post({ t: "retire", gen: current.gen });
      new Uint8Array(current.packed).fill(0);
    });
  }

  /** The names of the sets streams can open on. */
  patternSetNames(): string[] {
    return [...this.currentSets.keys()];
  }

  private serially(step: () => Promise<void>): Promise<void> {
    if (this.closed) return Promise.reject(this.closedError());
    const run = this.setChain.then(step);
    this.setChain = run.catch(() => {});
    return run;
  }

  private async swapSet(
    specs: readonly PatternSpec[],
    name: string,
    options: CompileOptions,
  ): Promise<void> {
    this.assertOpen();
    const gen = this.nextGen++;
    const packed = packSpecs(specs, options);
    const slots = this.slots.filter((s) => s.worker);
    if (slots.length === 0) {
      new Uint8Array(packed).fill(0);
      throw new MatcherError("engine-failure", "no matcher worker is running");
    }
    try {
      await Promise.all(slots.map((s) => s.compile(gen, packed)));
      // A worker that acknowledged and then died was replaced with the sets current before
      // this one: give the replacement this one too before committing, or it would lack it.
      let stale = this.slots.filter((s) => s.worker && !s.hasCompiled(gen));
      while (stale.length > 0) {
        await Promise.all(stale.map((s) => s.compile(gen, packed)));
        stale = this.slots.filter((s) => s.worker && !s.hasCompiled(gen));
      }
      this.assertOpen();
    } catch (e) {
      for (const s of this.slots) s.post({ t: "retire", gen });
      new Uint8Array(packed).fill(0);
      throw e;
    }
    const old = this.currentSets.get(name);
    this.currentSets.set(name, { gen, packed });
    if (old) {
      for (const s of this.slots) s.post({ t: "retire", gen: old.gen });
      new Uint8Array(old.packed).fill(0);
    }
  }

  private currentOf(name: string): CurrentSet {
    const current = this.currentSets.get(name);
    // The name is the caller's label, not a secret, but it is left out all the same.
    if (!current)
      throw new MatcherError("set-disposed", "no pattern set is loaded under that name");
    return current;
  }

  /**
   * Opens a stream on the least-loaded worker. Write Uint8Array chunks to `writable` and read
   * the scanned bytes from `readable`. A written chunk that spans its whole ArrayBuffer is
   * handed over to the pool: its buffer is detached (the caller's view becomes empty) and the
   * bytes are zeroed after scanning. A view into a larger buffer is copied and left as it is
   * (the caller owns that buffer). `result` resolves with the replacement count after a clean
   * end and rejects if the stream failed: only a clean end means every byte was scanned.
   */
  openStream(name: string = DEFAULT_SET): ScanStream {
    this.assertOpen();
    const current = this.currentOf(name);
    const slot = this.leastLoaded();
    const sid = this.nextSid++;
    return createScanStream(
      (sink) => {
        const stream = new PoolStream(this, slot, sid, sink, true);
        slot.streams.set(sid, stream);
        this.streams.add(stream);
        slot.post({ t: "open", sid, gen: current.gen });
        return { core: stream, result: stream.result };
      },
      { readableHighWaterMark: this.config.readableHighWaterMark },
    );
  }

  /**
   * Scans a whole buffer through a worker. `input` is copied (never detached); the pieces the
   * pool made are zeroed after use.
   */
  async replaceAll(
    input: Uint8Array,
    name: string = DEFAULT_SET,
  ): Promise<{ output: Uint8Array; replacements: number }> {
    this.assertOpen();
    const current = this.currentOf(name);
    const slot = this.leastLoaded();
    const sid = this.nextSid++;
    const parts: Uint8Array[] = [];
    let failure: unknown;
    const sink: ScanSink = {
      output: (chunk) => parts.push(chunk),
      error: (reason) => {
        failure = reason;
      },
    };
    const stream = new PoolStream(this, slot, sid, sink, false);
    slot.streams.set(sid, stream);
    this.streams.add(stream);
    slot.post({ t: "open", sid, gen: current.gen });
    try {
      const max = this.config.maxMessageBytes;
      for (let at = 0; at < input.length; at += max) {
        await stream.write(input.subarray(at, Math.min(at + max, input.length)));
      }
      await stream.end();
      const { replacements } = await stream.result;
      let size = 0;
      for (const p of parts) size += p.length;
      const output = new Uint8Array(size);
      let at = 0;
      for (const p of parts) {
        output.set(p, at);
        at += p.length;
      }
      return { output, replacements };
    } catch (e) {
      stream.drop(e, false);
      throw failure ?? e;
    } finally {
      for (const p of parts) p.fill(0);
    }
  }

  stats(): PoolStats {
    let queueDepth = 0;
    let waitingWriters = 0;
    for (const s of this.slots) queueDepth += s.queueDepth;
    for (const s of this.streams) waitingWriters += s.waiting;
    return {
      workers: this.slots.filter((s) => s.worker).length,
      streamsOpen: this.streams.size,
      inFlightBytes: this.inFlightBytes,
      pendingBytes: this.pendingBytes,
      queueDepth,
      waitingWriters,
      restarts: this.restarts,
      generation: this.nextGen - 1,
      patternSets: this.currentSets.size,
      perWorker: this.slots.map((s) => ({
        alive: s.worker !== undefined,
        streams: s.streams.size,
        inFlightBytes: s.inFlightBytes,
        queueDepth: s.queueDepth,
      })),
    };
  }

  /**
   * Fails every open stream, has each worker zero its engines, terminates the workers and
   * zeroes the pool's copy of the set. Every later call rejects with MatcherError("set-disposed").
   */
  close(): Promise<void> {
    if (!this.closing) this.closing = this.doClose();
    return this.closing;
  }

  private async doClose(): Promise<void> {
    this.closed = true;
    clearInterval(this.watchdog);
    const err = this.closedError();
    for (const stream of [...this.streams]) stream.drop(err, true);
    await Promise.all(this.slots.map((s) => s.shutdown(this.config.closeTimeoutMs)));
    for (const current of this.currentSets.values()) new Uint8Array(current.packed).fill(0);
    this.currentSets.clear();
    this.buffers.clear();
  }

  /** Test hook: the sets worker `index` holds and how many engine instances it has wiped. */
  inspectWorkerForTest(index: number): Promise<WorkerState> {
    const slot = this.slots[index];
    if (!slot) throw new RangeError(`no worker ${index}`);
    return slot.inspect();
  }

  /** Test hook: make worker `index` crash ("throw", "exit") or terminate it from outside. */
  crashWorkerForTest(index: number, mode: CrashMode | "terminate"): void {
    const slot = this.slots[index];
    if (!slot) throw new RangeError(`no worker ${index}`);
    slot.crash(mode);
  }

  // Flow-control plumbing used by PoolStream.

  /** A transferable copy of `bytes` (the caller keeps its own buffer untouched). */
  copyToMessage(bytes: Uint8Array): ArrayBuffer {
    if (bytes.length > this.buffers.size) return bytes.slice().buffer;
    const buf = this.buffers.take();
    new Uint8Array(buf).set(bytes);
    return buf;
  }

  forget(stream: PoolStream): void {
    this.streams.delete(stream);
    this.waitingStreams.delete(stream);
    this.flushWanted.delete(stream);
  }

  noteWaiting(stream: PoolStream): void {
    this.waitingStreams.add(stream);
  }

  noteWantsFlush(stream: PoolStream): void {
    this.flushWanted.add(stream);
  }

  /** Some in-flight bytes came back: send coalesced data, then wake held-back writers. */
  capacityFreed(stream: PoolStream): void {
    // Failed streams were forgotten (removed from flushWanted) before they call this.
    if (stream.pendingLen > 0 && stream.trySendPending()) this.flushWanted.delete(stream);
    if (this.flushWanted.size > 0) {
      for (const s of this.flushWanted) if (s.trySendPending()) this.flushWanted.delete(s);
    }
    stream.wake();
    if (this.waitingStreams.size > 0) {
      const waiting = [...this.waitingStreams];
      this.waitingStreams.clear();
      for (const s of waiting) s.wake();
    }
  }

  private leastLoaded(): WorkerSlot {
    let best: WorkerSlot | undefined;
    for (const s of this.slots) {
      if (s.broken || !s.worker) continue;
      if (
        !best ||
        s.streams.size < best.streams.size ||
        (s.streams.size === best.streams.size && s.inFlightBytes < best.inFlightBytes)
      ) {
        best = s;
      }
    }
    if (!best) throw new MatcherError("engine-failure", "no matcher worker is running");
    return best;
  }

  private assertOpen(): void {
    if (this.closed) throw this.closedError();
  }

  private closedError(): MatcherError {
    return new MatcherError("set-disposed", "matcher pool is closed");
  }
}
