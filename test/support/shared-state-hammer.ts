// One thread's share of the cross-thread test of the shared guard state
// (src/guard/shared-table.test.ts): connection caps and rate buckets attached to memory another
// thread created, opened, closed and drawn on as fast as the thread can. Run as a worker it waits
// for the go flag, so every thread starts together, and posts what it counted. Test-only.

import { isMainThread } from "node:worker_threads";
import { ConnectionCaps } from "../../src/guard/connection-caps.ts";
import { RateLimiter } from "../../src/guard/rate-limit.ts";

export interface HammerWork {
  readonly caps: SharedArrayBuffer;
  readonly rates: SharedArrayBuffer;
  /** Int32 per key: opens held now, summed over threads (raised after open, lowered before closed). */
  readonly held: SharedArrayBuffer;
  /** Int32: 0 until every thread may start. */
  readonly go: SharedArrayBuffer;
  readonly keys: readonly string[];
  readonly perAgent: number;
  readonly burst: number;
  readonly iterations: number;
}

export interface HammerCount {
  readonly opened: number;
  readonly refused: number;
  /** The most opens of one key held at once, summed over threads, that this thread saw. */
  readonly mostHeld: number;
  /** Tokens taken, by key. */
  readonly taken: readonly number[];
  /** Connections accepted and left open. */
  readonly accepted: number;
}

export function hammer(w: HammerWork): HammerCount {
  const caps = ConnectionCaps.attach(w.caps, {
    perAgent: w.perAgent,
    handshakesPerAddress: w.perAgent,
    total: Number.MAX_SAFE_INTEGER,
  });
  // A frozen clock: a bucket hands out its burst and nothing more.
  const rates = RateLimiter.attach(w.rates, 1, w.burst, () => 0);
  const held = new Int32Array(w.held);
  const mine = w.keys.map(() => 0);
  const taken = w.keys.map(() => 0);
  let [opened, refused, mostHeld, accepted] = [0, 0, 0, 0];
  for (let i = 0; i < w.iterations; i++) {
    const k = i % w.keys.length;
    const key = w.keys[k]!;
    if (caps.accept().ok) accepted++;
    if (i % 2 === 0) {
      caps.acceptClosed();
      accepted--;
    }
    if (caps.open(key).ok) {
      mostHeld = Math.max(mostHeld, Atomics.add(held, k, 1) + 1);
      mine[k]!++;
      opened++;
    } else {
      refused++;
    }
    // Close most of what was opened, so holdings climb to the cap and fall back from it.
    if (mine[k]! > 0 && i % 3 !== 0) {
      Atomics.sub(held, k, 1);
      caps.closed(key);
      mine[k]!--;
    }
    if (rates.take(key)) taken[k]!++;
  }
  for (const [k, key] of w.keys.entries()) {
    for (; mine[k]! > 0; mine[k]!--) {
      Atomics.sub(held, k, 1);
      caps.closed(key);
    }
  }
  return { opened, refused, mostHeld, taken, accepted };
}

// Inside a worker `self` is the worker's global scope; Bun's types describe it as a Worker.
declare const self: Worker;

if (!isMainThread) {
  self.onmessage = (event: MessageEvent<HammerWork>) => {
    const w = event.data;
    postMessage("ready");
    // Spun, not waited on: a thread woken late would have the table to itself for a while.
    const go = new Int32Array(w.go);
    while (Atomics.load(go, 0) === 0) Atomics.pause();
    postMessage(hammer(w));
  };
}
