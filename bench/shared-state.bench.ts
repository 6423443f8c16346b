// The cost of keeping the guard's counts in shared memory (src/guard/shared-table.ts): a rate
// bucket's take() and a connection's open() + closed(), against the Map-based versions they
// replaced (copied below, the baseline in the same run), on one thread and with a second thread
// drawing on the same table all the while (the lock contended, as it is with several loops).
// Keys cycle over 100 agent names. Run: `bun bench/shared-state.bench.ts` (~20 s).

import { isMainThread } from "node:worker_threads";
import { bench, do_not_optimize, group, run } from "mitata";
import { ConnectionCaps } from "../src/guard/connection-caps.ts";
import { RateLimiter } from "../src/guard/rate-limit.ts";

/** The Map-based RateLimiter as it was before the shared table (the baseline). */
class MapRateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  take(agent: string): boolean {
    const t = this.now();
    const b = this.#buckets.get(agent) ?? { tokens: this.burst, at: t };
    b.tokens = Math.min(this.burst, b.tokens + ((t - b.at) / 1000) * this.perSecond);
    b.at = t;
    if (b.tokens < 1) {
      this.#buckets.set(agent, b);
      return false;
    }
    b.tokens -= 1;
    this.#buckets.set(agent, b);
    if (this.#buckets.size > 4096) this.#sweep(t);
    return true;
  }

  #sweep(t: number): void {
    const full = (this.burst / this.perSecond) * 1000;
    for (const [k, b] of this.#buckets) if (t - b.at > full) this.#buckets.delete(k);
  }
}

/** The Map-based per-agent cap as it was (open and closed only; the baseline). */
class MapCaps {
  readonly #perAgent = new Map<string, number>();
  constructor(private readonly cap: number) {}

  open(agent: string): boolean {
    if ((this.#perAgent.get(agent) ?? 0) >= this.cap) return false;
    this.#perAgent.set(agent, (this.#perAgent.get(agent) ?? 0) + 1);
    return true;
  }

  closed(agent: string): void {
    const left = (this.#perAgent.get(agent) ?? 1) - 1;
    if (left > 0) this.#perAgent.set(agent, left);
    else this.#perAgent.delete(agent);
  }
}

const AGENTS = Array.from({ length: 100 }, (_, i) => `bench-agent-${i}`);
// A rate no bench exhausts: every take takes a token, as on a proxy within its limits.
const [PER_SECOND, BURST] = [1e9, 1e9];
const LIMITS = { perAgent: 64, handshakesPerAddress: 8, total: 1_000_000 };

interface Contend {
  readonly rates: SharedArrayBuffer;
  readonly caps: SharedArrayBuffer;
  readonly stop: SharedArrayBuffer;
}

// Inside a worker `self` is the worker's global scope; Bun's types describe it as a Worker.
declare const self: Worker;

if (!isMainThread) {
  // The second thread: takes and opens on the same tables until told to stop.
  self.onmessage = (event: MessageEvent<Contend>) => {
    const rates = RateLimiter.attach(event.data.rates, PER_SECOND, BURST);
    const caps = ConnectionCaps.attach(event.data.caps, LIMITS);
    const stop = new Int32Array(event.data.stop);
    postMessage("running");
    let i = 0;
    for (; Atomics.load(stop, 0) === 0; i++) {
      const agent = AGENTS[i % AGENTS.length]!;
      rates.take(agent);
      if (caps.open(agent).ok) caps.closed(agent);
    }
    postMessage(i);
  };
} else {
  await main();
}

async function main(): Promise<void> {
  const mapRates = new MapRateLimiter(PER_SECOND, BURST);
  const rates = new RateLimiter(PER_SECOND, BURST);
  const mapCaps = new MapCaps(LIMITS.perAgent);
  const caps = new ConnectionCaps(LIMITS);
  let n = 0;
  const next = () => AGENTS[n++ % AGENTS.length]!;

  group("one thread", () => {
    bench("take(): Map (baseline)", () => do_not_optimize(mapRates.take(next())));
    bench("take(): shared table", () => do_not_optimize(rates.take(next())));
    bench("open() + closed(): Map (baseline)", () => {
      const agent = next();
      if (mapCaps.open(agent)) mapCaps.closed(agent);
    });
    bench("open() + closed(): shared table", () => {
      const agent = next();
      if (caps.open(agent).ok) caps.closed(agent);
    });
  });
  const one = await run({ format: "quiet" });

  // The same on tables a second thread is drawing on.
  const contended = {
    rates: RateLimiter.create(PER_SECOND, BURST, { capacity: 8192 }),
    caps: ConnectionCaps.create(LIMITS, { capacity: 8192 }),
  };
  const stop = new SharedArrayBuffer(4);
  const worker = new Worker(new URL(import.meta.url));
  const said = <T>() =>
    new Promise<T>((resolve) =>
      worker.addEventListener("message", (e) => resolve(e.data as T), { once: true }),
    );
  const running = said<string>();
  worker.postMessage({ rates: contended.rates.memory, caps: contended.caps.memory, stop });
  await running;
  group("a second thread on the same table", () => {
    bench("take(): Map (baseline, not shared)", () => do_not_optimize(mapRates.take(next())));
    bench("take(): shared table, contended", () => do_not_optimize(contended.rates.take(next())));
    bench("open() + closed(): Map (baseline, not shared)", () => {
      const agent = next();
      if (mapCaps.open(agent)) mapCaps.closed(agent);
    });
    bench("open() + closed(): shared table, contended", () => {
      const agent = next();
      if (contended.caps.open(agent).ok) contended.caps.closed(agent);
    });
  });
  const two = await run({ format: "quiet", filter: /contended|not shared/ });
  const stopped = said<number>();
  Atomics.store(new Int32Array(stop), 0, 1);
  const rounds = await stopped;
  worker.terminate();

  const times = new Map<string, { p50: number; avg: number }>();
  for (const t of [...one.benchmarks, ...two.benchmarks]) {
    const stats = t.runs[0]?.stats;
    if (stats) times.set(t.alias, stats);
  }
  const rows: [string, string][] = [
    ["take(): shared table", "take(): Map (baseline)"],
    ["open() + closed(): shared table", "open() + closed(): Map (baseline)"],
    ["take(): shared table, contended", "take(): Map (baseline, not shared)"],
    ["open() + closed(): shared table, contended", "open() + closed(): Map (baseline, not shared)"],
  ];
  console.log(
    "\n| operation | shared p50 / avg ns | Map p50 / avg ns | ratio (p50, avg) |\n| --- | ---: | ---: | ---: |",
  );
  for (const [shared, map] of rows) {
    const [s, m] = [times.get(shared)!, times.get(map)!];
    const ns = (t: { p50: number; avg: number }) => `${t.p50.toFixed(0)} / ${t.avg.toFixed(0)}`;
    const ratio = `${(s.p50 / m.p50).toFixed(2)}×, ${(s.avg / m.avg).toFixed(2)}×`;
    console.log(`| ${shared} | ${ns(s)} | ${ns(m)} | ${ratio} |`);
  }
  console.log(`\nthe second thread's rounds (a take, an open and a close) meanwhile: ${rounds}`);
}
