// Inputs for the matcher benchmark: a JSON-like haystack that (almost) never matches, random
// token-like patterns, and adversarial text dense with near-matches. Deterministic (seeded) so
// runs compare. It must never contain a real credential.

const TOKEN_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const WORDS = (
  "the of and to in is you that it he was for on are as with his they at be this have from " +
  "or one had by word but not what all were we when your can said there use an each which she " +
  "do how their if will up other about out many then them these so some her would make like " +
  "user id name email status created updated value token request response items data error"
).split(" ");

/** xorshift32: small, fast, deterministic. */
export function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

export function randomPatterns(
  count: number,
  seed: number,
  minLen = 20,
  maxLen = 64,
): Uint8Array[] {
  const r = rng(seed);
  const seen = new Set<string>();
  const out: Uint8Array[] = [];
  while (out.length < count) {
    const len = minLen + (r() % (maxLen - minLen + 1));
    const p = new Uint8Array(len);
    for (let i = 0; i < len; i++) p[i] = TOKEN_ALPHABET.charCodeAt(r() % TOKEN_ALPHABET.length);
    const key = p.join(",");
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(p);
  }
  return out;
}

/** JSON-lines-like records: keys, words, numbers, ids; about `size` bytes. */
export function jsonHaystack(size: number, seed: number): Uint8Array {
  const r = rng(seed);
  const enc = new TextEncoder();
  const out = new Uint8Array(size);
  let o = 0;
  let n = 0;
  while (o < size) {
    const words: string[] = [];
    const wc = 4 + (r() % 12);
    for (let i = 0; i < wc; i++) words.push(WORDS[r() % WORDS.length]!);
    const rec =
      `{"id":${n++},"user":"${WORDS[r() % WORDS.length]}_${r() % 100000}",` +
      `"score":${(r() % 100000) / 100},"ok":${r() % 2 === 0},"text":"${words.join(" ")}",` +
      `"ref":"${(r() >>> 0).toString(36)}${(r() >>> 0).toString(36)}"}\n`;
    const b = enc.encode(rec);
    const take = Math.min(b.length, size - o);
    out.set(b.subarray(0, take), o);
    o += take;
  }
  return out;
}

/**
 * JSON lines as a server that escapes much writes them: every space a `\u0020`, every `_` an
 * `&lowbar;`, every `.` a `&#46;`, a `\n` every 60 characters — a decoded view's worst
 * realistic case (a token every few bytes).
 */
export function escapedHaystack(size: number, seed: number): Uint8Array {
  const plain = Buffer.from(jsonHaystack(size, seed)).toString("latin1");
  let text = "";
  let line = 0;
  for (const ch of plain) {
    text += ch === " " ? "\\u0020" : ch === "_" ? "&lowbar;" : ch === "." ? "&#46;" : ch;
    if (++line === 60) {
      text += "\\n";
      line = 0;
    }
    if (text.length >= size) break;
  }
  return Buffer.from(text.slice(0, size), "latin1");
}

/**
 * Adversarial text: pattern prefixes cut one byte short, back to back, so the automaton walks
 * deep states all the time and the prefilter sees a candidate at nearly every window.
 */
export function adversarialHaystack(
  size: number,
  patterns: Uint8Array[],
  seed: number,
): Uint8Array {
  const r = rng(seed);
  const out = new Uint8Array(size);
  let o = 0;
  while (o < size) {
    const p = patterns[r() % patterns.length]!;
    const take = Math.min(p.length - 1, size - o);
    out.set(p.subarray(0, take), o);
    o += take;
  }
  return out;
}
