// A fixed-capacity hash table in one SharedArrayBuffer, for the counts every event loop must see
// alike (connection caps, rate buckets): any thread handed the buffer attaches to it and decides
// synchronously against the same numbers. One lock guards the whole table, taken by spinning
// (the main thread may not Atomics.wait); a critical section is one lookup and some arithmetic,
// so it must never hold the lock across anything else — no I/O, no callback it does not know.
//
// Layout (one SharedArrayBuffer; slots 8-byte aligned):
//   header, 32 bytes, Int32 words: lock (0 free, else the holder's thread id + 1) · magic ·
//     capacity (slots, a power of two) · ints · floats · keys held · hash seed · slot bytes
//   slot i at 32 + i × slot bytes:
//     Int32 tag      0 empty; n + 1 a key of n bytes stored; DIGEST a longer key, stored as its
//                    SHA-256; UTF16 the same for a key not well-formed (a lone surrogate)
//     Int32 hash     of the stored bytes, seeded; the slot's probe starts at hash & (capacity − 1)
//     Int32 × ints   counters, then 4 bytes of padding if ints is odd
//     Float64 × floats
//     KEY_BYTES      the key's space (one byte), then its UTF-8 bytes or its digest
// Linear probing with deletion by backward shift: no tombstones, a probe ends at the first empty
// slot. At most 7/8 of the slots hold keys, so probes stay short and "full" is an answer callers
// act on (fail closed), never a silent admission.

import { threadId } from "node:worker_threads";

/** Key bytes stored exactly (its space's byte included): an agent name (64), an IPv6 /64. */
export const KEY_BYTES = 72;
const HEADER_BYTES = 32;
const MAGIC = 0x534c5431; // "SLT1"
const DIGEST = -1;
const UTF16 = -2;
const DIGEST_BYTES = 32;
const MAX_FIELDS = 16;
/** Byte offsets stay within Int32 arithmetic. */
const MAX_CAPACITY = 2 ** 22;
const [LOCK, MAGIC_AT, CAPACITY, INTS, FLOATS, SIZE, SEED, SLOT_BYTES] = [0, 1, 2, 3, 4, 5, 6, 7];
/** What a thread writes into the lock word: never 0, distinct per thread. */
const OWNER = threadId + 1;

export interface TableShape {
  /** Slots, a power of two; the table holds at most `limitOf(capacity)` keys. */
  readonly capacity: number;
  /** Int32 counters per key. */
  readonly ints: number;
  /** Float64 fields per key. */
  readonly floats: number;
}

/** How many keys a table of `capacity` slots holds. */
export function limitOf(capacity: number): number {
  return capacity - Math.max(1, capacity >>> 3);
}

/** The smallest capacity (a power of two, at least 8) that holds `keys` keys. */
export function capacityFor(keys: number): number {
  let capacity = 8;
  while (limitOf(capacity) < keys) capacity *= 2;
  return capacity;
}

export class SharedTable {
  readonly buffer: SharedArrayBuffer;
  readonly capacity: number;
  readonly ints: number;
  readonly floats: number;
  /** Most keys held at once. */
  readonly limit: number;
  readonly #words: Int32Array;
  readonly #doubles: Float64Array;
  readonly #bytes: Uint8Array;
  readonly #mask: number;
  readonly #seed: number;
  readonly #slotBytes: number;
  readonly #floatAt: number;
  readonly #keyAt: number;
  readonly #encoder = new TextEncoder();
  readonly #decoder = new TextDecoder();
  /** The key being looked up, encoded: this thread's own scratch, used under the lock only. */
  readonly #key = new Uint8Array(KEY_BYTES + 4);
  #keyLength = 0;
  #keyTag = 0;
  #keyHash = 0;

  /** A new, empty table. */
  static create(shape: TableShape): SharedTable {
    const { capacity, ints, floats } = shape;
    if (
      !(
        Number.isInteger(capacity) &&
        capacity >= 2 &&
        capacity <= MAX_CAPACITY &&
        (capacity & (capacity - 1)) === 0
      )
    ) {
      throw new TypeError(`shared table capacity must be a power of two, 2 to ${MAX_CAPACITY}`);
    }
    for (const n of [ints, floats]) {
      if (!(Number.isInteger(n) && n >= 0 && n <= MAX_FIELDS)) {
        throw new TypeError(`shared table fields must be 0 to ${MAX_FIELDS}`);
      }
    }
    const slotBytes = slotBytesOf(ints, floats);
    const buffer = new SharedArrayBuffer(HEADER_BYTES + capacity * slotBytes);
    const words = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    words[MAGIC_AT] = MAGIC;
    words[CAPACITY] = capacity;
    words[INTS] = ints;
    words[FLOATS] = floats;
    words[SLOT_BYTES] = slotBytes;
    // A seed per table: which keys share a probe cannot be planned from outside.
    words[SEED] = crypto.getRandomValues(new Int32Array(1))[0]!;
    return new SharedTable(buffer);
  }

  /** The table in `buffer` (made by `create`, perhaps in another thread). */
  static attach(buffer: SharedArrayBuffer): SharedTable {
    return new SharedTable(buffer);
  }

  private constructor(buffer: SharedArrayBuffer) {
    if (!(buffer instanceof SharedArrayBuffer) || buffer.byteLength < HEADER_BYTES) {
      throw new TypeError("not a shared table");
    }
    const head = new Int32Array(buffer, 0, HEADER_BYTES / 4);
    const [capacity, ints, floats, slotBytes] = [
      head[CAPACITY]!,
      head[INTS]!,
      head[FLOATS]!,
      head[SLOT_BYTES]!,
    ];
    if (
      head[MAGIC_AT] !== MAGIC ||
      slotBytes !== slotBytesOf(ints, floats) ||
      buffer.byteLength !== HEADER_BYTES + capacity * slotBytes
    ) {
      throw new TypeError("not a shared table");
    }
    this.buffer = buffer;
    this.capacity = capacity;
    this.ints = ints;
    this.floats = floats;
    this.limit = limitOf(capacity);
    this.#words = new Int32Array(buffer);
    this.#doubles = new Float64Array(buffer);
    this.#bytes = new Uint8Array(buffer);
    this.#mask = capacity - 1;
    this.#seed = head[SEED]!;
    this.#slotBytes = slotBytes;
    this.#floatAt = 8 + Math.ceil(ints / 2) * 8;
    this.#keyAt = this.#floatAt + floats * 8;
  }

  /**
   * Takes the lock, spinning until it is free. Everything below but `lock` itself is to be
   * called between `lock` and `unlock`, and a slot number is good only until `unlock`.
   */
  lock(): void {
    const w = this.#words;
    while (Atomics.compareExchange(w, LOCK, 0, OWNER) !== 0) {
      // A second lock by the holder would spin for ever: say so instead.
      if (Atomics.load(w, LOCK) === OWNER) throw new Error("shared table locked twice");
      while (Atomics.load(w, LOCK) !== 0) Atomics.pause();
    }
  }

  unlock(): void {
    Atomics.store(this.#words, LOCK, 0);
  }

  /** `f` with the lock held (released however `f` ends). */
  locked<T>(f: () => T): T {
    this.lock();
    try {
      return f();
    } finally {
      this.unlock();
    }
  }

  /** Keys held. */
  get size(): number {
    return this.#words[SIZE]!;
  }

  /** The slot holding `key` in `space` (0 to 255: keys in two spaces are two keys), or -1. */
  find(key: string, space = 0): number {
    this.#prepare(key, space);
    const i = this.#probe();
    return i >= 0 ? i : -1;
  }

  /**
   * The slot holding `key`, added (its fields zero) if absent; -1 when absent and the table
   * holds `limit` keys already.
   */
  findOrAdd(key: string, space = 0): number {
    this.#prepare(key, space);
    const found = this.#probe();
    if (found >= 0) return found;
    const w = this.#words;
    if (w[SIZE]! >= this.limit) return -1;
    const i = ~found;
    const at = HEADER_BYTES + i * this.#slotBytes;
    const bytes = this.#bytes;
    bytes.fill(0, at, at + this.#keyAt);
    // A loop, not set(subarray): the key is short and a view would be allocated per add.
    for (let n = 0, k = at + this.#keyAt; n < this.#keyLength; n++) bytes[k + n] = this.#key[n]!;
    w[at >> 2] = this.#keyTag;
    w[(at >> 2) + 1] = this.#keyHash;
    w[SIZE] = w[SIZE]! + 1;
    return i;
  }

  /** Empties slot `i`, moving back the keys after it whose probe passed it. */
  remove(i: number): void {
    const w = this.#words;
    const mask = this.#mask;
    const words = this.#slotBytes >> 2;
    let hole = i;
    for (let j = (i + 1) & mask; ; j = (j + 1) & mask) {
      const at = (HEADER_BYTES >> 2) + j * words;
      if (w[at] === 0) break;
      const home = w[at + 1]! & mask;
      // The key at j may fill the hole unless its probe starts after the hole.
      if (((j - home) & mask) >= ((j - hole) & mask)) {
        const from = HEADER_BYTES + j * this.#slotBytes;
        this.#bytes.copyWithin(HEADER_BYTES + hole * this.#slotBytes, from, from + this.#slotBytes);
        hole = j;
      }
    }
    w[(HEADER_BYTES >> 2) + hole * words] = 0;
    w[SIZE] = w[SIZE]! - 1;
  }

  /** Removes every key for whose slot `drop` says true; returns how many. */
  sweep(drop: (slot: number) => boolean): number {
    let removed = 0;
    for (let i = 0; i < this.capacity; ) {
      if (this.#tagAt(i) !== 0 && drop(i)) {
        this.remove(i);
        removed++;
        continue; // another key may have moved into slot i
      }
      i++;
    }
    return removed;
  }

  /** Slots holding keys, in slot order. Not to be used while removing. */
  *slots(): Generator<number> {
    for (let i = 0; i < this.capacity; i++) if (this.#tagAt(i) !== 0) yield i;
  }

  /** The key in slot `i`; undefined when only its digest is stored. */
  keyOf(i: number): string | undefined {
    const tag = this.#tagAt(i);
    if (tag <= 0) return undefined;
    const at = HEADER_BYTES + i * this.#slotBytes + this.#keyAt;
    return this.#decoder.decode(this.#bytes.slice(at + 1, at + tag - 1));
  }

  /** The space of the key in slot `i`. */
  spaceOf(i: number): number {
    return this.#bytes[HEADER_BYTES + i * this.#slotBytes + this.#keyAt]!;
  }

  /** The slot `key`'s probe starts at (where it lands when nothing is in its way). */
  home(key: string, space = 0): number {
    this.#prepare(key, space);
    return this.#keyHash & this.#mask;
  }

  int(i: number, field: number): number {
    return this.#words[this.#intIndex(i, field)]!;
  }

  setInt(i: number, field: number, value: number): void {
    this.#words[this.#intIndex(i, field)] = value;
  }

  float(i: number, field: number): number {
    return this.#doubles[this.#floatIndex(i, field)]!;
  }

  setFloat(i: number, field: number, value: number): void {
    this.#doubles[this.#floatIndex(i, field)] = value;
  }

  #intIndex(i: number, field: number): number {
    if (!(field >= 0 && field < this.ints)) throw new RangeError("no such counter");
    return ((HEADER_BYTES + i * this.#slotBytes) >> 2) + 2 + field;
  }

  #floatIndex(i: number, field: number): number {
    if (!(field >= 0 && field < this.floats)) throw new RangeError("no such field");
    return ((HEADER_BYTES + this.#floatAt) >> 3) + i * (this.#slotBytes >> 3) + field;
  }

  #tagAt(i: number): number {
    return this.#words[(HEADER_BYTES + i * this.#slotBytes) >> 2]!;
  }

  /** The prepared key's slot, or ~(the empty slot where it would go). */
  #probe(): number {
    const w = this.#words;
    const bytes = this.#bytes;
    const mask = this.#mask;
    const words = this.#slotBytes >> 2;
    const tag = this.#keyTag;
    const hash = this.#keyHash;
    const length = this.#keyLength;
    const key = this.#key;
    // At most `limit` < capacity keys: an empty slot ends every probe.
    for (let i = hash & mask; ; i = (i + 1) & mask) {
      const at = (HEADER_BYTES >> 2) + i * words;
      const t = w[at]!;
      if (t === 0) return ~i;
      if (t !== tag || w[at + 1] !== hash) continue;
      const k = at * 4 + this.#keyAt;
      let n = 0;
      while (n < length && bytes[k + n] === key[n]) n++;
      if (n === length) return i;
    }
  }

  /**
   * Encodes `key` in `space` into the lookup fields: the space's byte, then the key's UTF-8
   * bytes when they fit, else its digest. ASCII (agent names, addresses) in one pass, hashed
   * as it is copied.
   */
  #prepare(key: string, space: number): void {
    if (!(space >= 0 && space <= 255)) throw new RangeError("a key space is 0 to 255");
    const out = this.#key;
    const n = key.length;
    out[0] = space;
    let h = Math.imul(FNV_BASIS ^ this.#seed ^ space, FNV_PRIME);
    let i = 0;
    if (n < KEY_BYTES) {
      for (; i < n; i++) {
        const c = key.charCodeAt(i);
        if (c >= 0x80) break;
        out[i + 1] = c;
        h = Math.imul(h ^ c, FNV_PRIME);
      }
    }
    if (i === n) {
      this.#keyLength = n + 1;
    } else {
      const { read, written } = this.#encoder.encodeInto(key, out.subarray(1, KEY_BYTES + 4));
      if (read === n && written < KEY_BYTES && !replaced(out, written + 1, key)) {
        this.#keyLength = written + 1;
      } else {
        const wellFormed = key.isWellFormed();
        // A lone surrogate would be written as U+FFFD like another key's real U+FFFD: such a
        // key is kept apart by hashing its UTF-16 code units instead.
        const text = wellFormed ? this.#encoder.encode(key) : codeUnits(key);
        Bun.SHA256.hash(text, out.subarray(1, 1 + DIGEST_BYTES));
        this.#keyLength = DIGEST_BYTES + 1;
        this.#keyTag = wellFormed ? DIGEST : UTF16;
        this.#keyHash = hashBytes(out, this.#keyLength, this.#seed);
        return;
      }
      h = hashBytes(out, this.#keyLength, this.#seed);
      this.#keyTag = this.#keyLength + 1;
      this.#keyHash = h;
      return;
    }
    this.#keyTag = this.#keyLength + 1;
    this.#keyHash = mix(h);
  }
}

function slotBytesOf(ints: number, floats: number): number {
  return 8 + Math.ceil(ints / 2) * 8 + floats * 8 + KEY_BYTES;
}

/** A string's UTF-16 code units as bytes (lone surrogates included). */
function codeUnits(key: string): Uint8Array {
  const units = new Uint16Array(key.length);
  for (let n = 0; n < key.length; n++) units[n] = key.charCodeAt(n);
  return new Uint8Array(units.buffer);
}

/** Whether the encoder wrote U+FFFD (EF BF BD) for something that was not one. */
function replaced(bytes: Uint8Array, length: number, key: string): boolean {
  for (let n = 0; n + 2 < length; n++) {
    if (bytes[n] === 0xef && bytes[n + 1] === 0xbf && bytes[n + 2] === 0xbd) {
      return !key.isWellFormed();
    }
  }
  return false;
}

const FNV_BASIS = 0x811c9dc5;
const FNV_PRIME = 0x01000193;

/** Seeded FNV-1a over stored key bytes (the ASCII path in #prepare computes the same). */
function hashBytes(bytes: Uint8Array, length: number, seed: number): number {
  let h = FNV_BASIS ^ seed;
  for (let n = 0; n < length; n++) h = Math.imul(h ^ bytes[n]!, FNV_PRIME);
  return mix(h);
}

/** murmur3's finaliser: the low bits, which pick the slot, depend on every bit. */
function mix(hash: number): number {
  let h = Math.imul(hash ^ (hash >>> 16), 0x85ebca6b);
  h = Math.imul(h ^ (h >>> 13), 0xc2b2ae35);
  return h ^ (h >>> 16);
}
