// How many upstream connections are being made at once. A TLS handshake is the costliest thing
// the proxy does on its event loop; a thousand at once behind a busy loop all ran past their
// connect deadline together and failed (504) though the upstream could take them. Through the
// gate they go a few at a time, first come first served: each one, once begun, is quick, and
// the rest wait their turn — slower under load, not failed. Waiting is not counted against the
// connect deadline; an agent that leaves while it waits gives up its place. One owner (an
// agent) holds at most a quarter of the places: dials it cannot finish (an upstream that never
// answers) keep its own waiting, not everyone's.

interface Waiter {
  readonly owner: string;
  readonly go: () => void;
  readonly gone: () => void;
}

export class DialGate {
  #active = 0;
  readonly #byOwner = new Map<string, number>();
  readonly #waiting: Waiter[] = [];
  readonly ownerLimit: number;

  constructor(readonly limit: number) {
    if (!(limit >= 1)) throw new TypeError("the dial gate needs room for one");
    this.ownerLimit = Math.max(1, Math.floor(limit / 4));
  }

  get active(): number {
    return this.#active;
  }

  get waiting(): number {
    return this.#waiting.length;
  }

  /** Resolves with the release once it is this dial's turn; rejects if `signal` aborts first. */
  acquire(owner: string, signal: AbortSignal): Promise<() => void> {
    if (signal.aborted) return Promise.reject(signal.reason);
    if (this.#fits(owner)) return Promise.resolve(this.#enter(owner));
    return new Promise((resolve, reject) => {
      const entry: Waiter = {
        owner,
        go: () => {
          signal.removeEventListener("abort", entry.gone);
          resolve(this.#enter(owner));
        },
        gone: () => {
          const at = this.#waiting.indexOf(entry);
          if (at >= 0) this.#waiting.splice(at, 1);
          reject(signal.reason);
        },
      };
      signal.addEventListener("abort", entry.gone, { once: true });
      this.#waiting.push(entry);
    });
  }

  #fits(owner: string): boolean {
    return this.#active < this.limit && (this.#byOwner.get(owner) ?? 0) < this.ownerLimit;
  }

  #enter(owner: string): () => void {
    this.#active++;
    this.#byOwner.set(owner, (this.#byOwner.get(owner) ?? 0) + 1);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.#active--;
      const left = (this.#byOwner.get(owner) ?? 1) - 1;
      if (left === 0) this.#byOwner.delete(owner);
      else this.#byOwner.set(owner, left);
      // The first in line whose owner has room goes next.
      const at = this.#waiting.findIndex((w) => this.#fits(w.owner));
      if (at >= 0) this.#waiting.splice(at, 1)[0]!.go();
    };
  }
}
