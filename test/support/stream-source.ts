// Deterministic large bodies for streaming tests and benchmarks, produced on the fly so no test
// ever holds one in memory: printable pseudo-random text in numbered chunks (a dropped,
// duplicated or reordered chunk changes the hash), with an optional marker planted at offsets
// that straddle chunk and TLS-record boundaries. The same generator with the marker replaced
// by its expected substitute yields the bytes the other end must see, so both ends compare
// SHA-256 digests. Test and bench only; never used by the proxy.

export interface StreamSpec {
  /** Total bytes when nothing is planted (planted text replaces bytes, same length). */
  readonly totalBytes: number;
  /** Bytes per generated chunk (default 64 KiB). */
  readonly chunkBytes?: number;
  /** Text planted about once per `plantEvery` bytes; it overwrites filler bytes. */
  readonly plant?: { readonly text: string; readonly every: number };
}

const ALPHABET = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 ,.:{}";

/** One shared MiB of filler (xorshift PRNG, fixed seed) that chunks are cut from. */
const FILLER = (() => {
  const out = new Uint8Array(1 << 20);
  let x = 0x9e3779b9;
  for (let i = 0; i < out.length; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    out[i] = ALPHABET.charCodeAt((x >>> 0) % ALPHABET.length);
  }
  return out;
})();

/**
 * Byte offsets (in the filler stream) where a marker starts: one per `every` bytes, shifted
 * by an odd stride so markers land at every phase of 16 KiB records and 64 KiB chunks, and
 * every fourth one cut by a chunk boundary.
 */
function plantOffsets(total: number, every: number, textLen: number, chunk: number): number[] {
  const out: number[] = [];
  for (let i = 1; i * every + chunk < total; i++) {
    const base = i * every;
    const at =
      i % 4 === 0
        ? base - (base % chunk) - Math.floor(textLen / 2) // across a generator chunk boundary
        : base + ((i * 7919) % 16_384);
    out.push(at);
  }
  return out;
}

/** Chunk `n` of the unplanted stream: filler cut at a chunk-dependent offset, numbered. */
function baseChunk(n: number, len: number, enc: TextEncoder): Uint8Array {
  const start = (n * 4099) % (FILLER.length - len);
  const buf = FILLER.slice(start, start + len);
  // Chunk number inside: a lost, repeated or reordered chunk cannot hash the same.
  const label = enc.encode(`#${n.toString(16).padStart(8, "0")}#`);
  if (len >= label.length + 8) buf.set(label, 8);
  return buf;
}

/**
 * The chunks of a body. With `replaceWith` (same length or not) standing in for each planted
 * marker, the bytes the far end must receive after a swap or a redaction.
 */
export function* generateChunks(spec: StreamSpec, replaceWith?: string): Generator<Uint8Array> {
  const chunk = spec.chunkBytes ?? 65_536;
  if (chunk > FILLER.length / 2) throw new RangeError("chunkBytes too large");
  const enc = new TextEncoder();
  const text = spec.plant ? enc.encode(spec.plant.text) : new Uint8Array(0);
  const substitute = replaceWith !== undefined ? enc.encode(replaceWith) : null;
  const marks = spec.plant
    ? plantOffsets(spec.totalBytes, spec.plant.every, text.length, chunk)
    : [];
  let first = 0; // first marker that may still intersect the current chunk
  for (let pos = 0, n = 0; pos < spec.totalBytes; pos += chunk, n++) {
    const len = Math.min(chunk, spec.totalBytes - pos);
    const end = pos + len;
    const buf = baseChunk(n, len, enc);
    while (first < marks.length && marks[first]! + text.length <= pos) first++;
    if (substitute === null) {
      for (let i = first; i < marks.length && marks[i]! < end; i++) {
        const m = marks[i]!;
        const from = Math.max(m, pos);
        const to = Math.min(m + text.length, end);
        buf.set(text.subarray(from - m, to - m), from - pos);
      }
      yield buf;
      continue;
    }
    const parts: Uint8Array[] = [];
    let cursor = pos;
    for (let i = first; i < marks.length && marks[i]! < end; i++) {
      const m = marks[i]!;
      if (m >= pos) {
        parts.push(buf.subarray(cursor - pos, m - pos), substitute);
      }
      cursor = Math.min(m + text.length, end);
    }
    parts.push(buf.subarray(cursor - pos));
    yield concat(parts);
  }
}

/** How many markers a body of this spec carries. */
export function plantedCount(spec: StreamSpec): number {
  if (!spec.plant) return 0;
  const chunk = spec.chunkBytes ?? 65_536;
  return plantOffsets(spec.totalBytes, spec.plant.every, spec.plant.text.length, chunk).length;
}

/** SHA-256 (hex) of a generated body, computed chunk by chunk. */
export function digestOf(spec: StreamSpec, replaceWith?: string): string {
  const h = new Bun.CryptoHasher("sha256");
  for (const c of generateChunks(spec, replaceWith)) h.update(c);
  return h.digest("hex");
}

/** A pull-based web stream over the generator: produces a chunk only when asked. */
export function generatedStream(
  spec: StreamSpec,
  replaceWith?: string,
): ReadableStream<Uint8Array> {
  const it = generateChunks(spec, replaceWith);
  return new ReadableStream<Uint8Array>(
    {
      pull(c) {
        const r = it.next();
        if (r.done) c.close();
        else c.enqueue(r.value);
      },
    },
    { highWaterMark: 0 },
  );
}

function concat(parts: Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
