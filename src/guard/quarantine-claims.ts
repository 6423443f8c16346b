// Agents in quarantine as every event loop sees them at once (guard/shared-table.ts). A loop
// that is about to answer a violation that quarantines claims its agent first: only the first
// claim is answered, and from then on no loop answers that agent — before the main thread has
// even heard of it (its quarantine, kept in a file, is the record; this is the gate). With one
// loop nothing runs between a violation and its quarantine; with several, requests in flight in
// the other loops would each get their answer, one more guess confirmed per answer.

import { capacityFor, SharedTable } from "./shared-table.ts";

const UNTIL = 0;

export class QuarantineClaims {
  readonly #table: SharedTable;
  readonly #now: () => number;

  constructor(memory?: SharedArrayBuffer, now: () => number = Date.now) {
    this.#table = memory
      ? SharedTable.attach(memory)
      : SharedTable.create({ capacity: capacityFor(AGENTS), ints: 0, floats: 1 });
    if (this.#table.ints !== 0 || this.#table.floats !== 1) {
      throw new TypeError("not a quarantine claims table");
    }
    this.#now = now;
  }

  get memory(): SharedArrayBuffer {
    return this.#table.buffer;
  }

  /**
   * Holds `agent` until `until` (epoch ms; null: until released); true when this call did — no
   * hold was in force — false when another already holds it (or the table is full: the
   * caller then closes without answering, as for a hold).
   */
  claim(agent: string, until: number | null): boolean {
    return this.#table.locked(() => {
      const t = this.#table;
      const found = t.find(agent);
      if (found >= 0 && this.#inForce(found)) return false;
      const s = found >= 0 ? found : t.findOrAdd(agent);
      if (s < 0) return false;
      t.setFloat(s, UNTIL, until ?? Number.POSITIVE_INFINITY);
      return true;
    });
  }

  /** Whether `agent` is held now. */
  holds(agent: string): boolean {
    return this.#table.locked(() => {
      const s = this.#table.find(agent);
      return s >= 0 && this.#inForce(s);
    });
  }

  release(agent: string): void {
    this.#table.locked(() => {
      const s = this.#table.find(agent);
      if (s >= 0) this.#table.remove(s);
    });
  }

  #inForce(slot: number): boolean {
    return this.#now() < this.#table.float(slot, UNTIL);
  }
}

/** Agents held at once (each agent's certificate name; a full table holds rather than admits). */
const AGENTS = 4096;
