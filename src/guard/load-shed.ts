// Whether the proxy sheds new work: when its event loop is late by a quarter of a second for
// most of the last second, what it already accepted is starving, and more would make every
// exchange slower until deadlines fail them. New tunnels are then refused at once (503 with
// Proxy-Status, which an agent can read and retry) while open ones go on; shedding stops when
// the loop is back under a tenth of a second (hysteresis, so it does not flap). Pure: the
// composition root feeds it the loop's lateness as it measures it.

export interface ShedOptions {
  /** Median lateness over the window at which new work is shed (ms). */
  readonly shedAtMs: number;
  /** Median lateness under which it is admitted again (ms). */
  readonly resumeAtMs: number;
  /** How far back samples count (ms). */
  readonly windowMs: number;
}

export const DEFAULT_SHED: ShedOptions = { shedAtMs: 250, resumeAtMs: 100, windowMs: 1_000 };

export class LoadShedder {
  readonly #samples: { at: number; lagMs: number }[] = [];
  #shedding = false;
  #lateMs = 0;

  constructor(private readonly o: ShedOptions = DEFAULT_SHED) {}

  /** The loop was `lagMs` late at `now` (ms, any monotonic clock). */
  sample(lagMs: number, now: number): void {
    this.#samples.push({ at: now, lagMs });
    while (this.#samples.length > 0 && this.#samples[0]!.at < now - this.o.windowMs) {
      this.#samples.shift();
    }
    const median = medianOf(this.#samples.map((s) => s.lagMs));
    this.#lateMs = median;
    if (!this.#shedding && median >= this.o.shedAtMs) this.#shedding = true;
    else if (this.#shedding && median < this.o.resumeAtMs) this.#shedding = false;
  }

  get shedding(): boolean {
    return this.#shedding;
  }

  /** How late the loop has been, the median over the window (ms). */
  get lateMs(): number {
    return this.#lateMs;
  }
}

function medianOf(xs: number[]): number {
  if (xs.length === 0) return 0;
  const s = xs.sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}
