// A body the proxy holds whole: a small body it scans in one engine call, or one whose new
// Content-Length it must know. Its bytes come from the held-buffer pool (held-buffers.ts) and
// count against the process-wide budget for held bodies; `release()` gives both back, wiping
// the bytes (they may carry real values), once the holder is done with them. Releasing twice
// does nothing.

import { ProxyError } from "../http/proxy-error.ts";
import { collectBounded } from "./collect.ts";
import { allocWithHeadroom, releaseHeld } from "./held-buffers.ts";

export class HeldBody {
  readonly kind = "held";
  #onRelease: (() => void) | null;
  #released = false;

  constructor(
    readonly bytes: Uint8Array,
    onRelease: (() => void) | null = null,
  ) {
    this.#onRelease = onRelease;
  }

  get length(): number {
    return this.bytes.length;
  }

  /** The same hold (budget, release duty) with other bytes: the old ones are released now. */
  replace(bytes: Uint8Array): HeldBody {
    if (bytes === this.bytes) return this;
    releaseHeld(this.bytes);
    const next = new HeldBody(bytes, this.#onRelease);
    this.#onRelease = null;
    this.#released = true;
    return next;
  }

  release(): void {
    if (this.#released) return;
    this.#released = true;
    releaseHeld(this.bytes);
    const done = this.#onRelease;
    this.#onRelease = null;
    done?.();
  }
}

/** The budget held bodies are charged to, per agent. */
export interface HeldBudget {
  acquire(bytes: number, holder: string): boolean;
  release(bytes: number, holder: string): void;
}

/**
 * Holds `body` whole (at most `max` bytes), charging `charge` bytes to `agent`'s share of the
 * budget until released: over the budget → 503 (the body is cancelled, nothing is held).
 */
export async function holdWhole(
  budget: HeldBudget,
  agent: string,
  body: ReadableStream<Uint8Array>,
  charge: number,
  max: number,
): Promise<HeldBody> {
  if (!budget.acquire(charge, agent)) {
    await body.cancel().catch(() => {});
    throw new ProxyError("overloaded", "proxy is holding too many bodies; retry shortly");
  }
  try {
    // Held bodies leave with a head in front of them: room for it is kept (held-buffers.ts).
    const bytes = await collectBounded(body, max, allocWithHeadroom);
    return new HeldBody(bytes, () => budget.release(charge, agent));
  } catch (e) {
    budget.release(charge, agent);
    throw e;
  }
}
