// Per-agent token bucket: a hijacked agent cannot flood upstreams through the proxy. Pure
// arithmetic on an injectable clock; buckets for agents idle long enough to be full again are
// dropped, so the map stays as small as the set of active agents.

export class RateLimiter {
  readonly #buckets = new Map<string, { tokens: number; at: number }>();
  constructor(
    private readonly perSecond: number,
    private readonly burst: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!(perSecond > 0) || !(burst >= 1)) throw new TypeError("rate limit must be positive");
  }

  /** Take one token for `agent`; false when the agent is over its rate. */
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
