// `Authorization: Basic base64(user:password)` handling for the dummy → real swap: the header
// is decoded, dummies are replaced in the decoded bytes, and it is re-encoded — base64 is not
// substring-stable, so a byte-level swap on the encoded text cannot work (secret-variants.ts
// explains why). It must never change a header it cannot decode exactly (strict base64 that
// re-encodes to the same text), and never report which value it swapped, only credential names.

export interface BytePair {
  readonly name: string;
  readonly dummy: Uint8Array;
  readonly real: Uint8Array;
}

export interface BasicSwapResult {
  /** The header value to send (the input itself when nothing was swapped). */
  readonly value: string;
  /** Names of the credentials swapped. */
  readonly swapped: readonly string[];
}

const BASIC_RE = /^(basic) +([A-Za-z0-9+/]+={0,2})$/i;

/** The decoded user-pass bytes of a Basic credential, or null when it is not strict Basic. */
export function decodeBasicAuth(value: string): Uint8Array | null {
  const m = BASIC_RE.exec(value);
  if (!m) return null;
  const b64 = m[2]!;
  const bytes = Buffer.from(b64, "base64");
  // Node's decoder is lenient (ignores junk, missing padding); accept only canonical text.
  if (bytes.toString("base64") !== b64) return null;
  return new Uint8Array(bytes);
}

/** Swap dummies inside a Basic header; other schemes and undecodable values pass unchanged. */
export function swapBasicAuth(value: string, pairs: readonly BytePair[]): BasicSwapResult {
  const decoded = decodeBasicAuth(value);
  if (!decoded || pairs.length === 0) return { value, swapped: [] };
  const { output, matched } = replaceBytes(decoded, pairs);
  decoded.fill(0);
  if (matched.length === 0) {
    output.fill(0);
    return { value, swapped: [] };
  }
  const scheme = BASIC_RE.exec(value)![1]!;
  const swappedValue = `${scheme} ${Buffer.from(output).toString("base64")}`;
  output.fill(0);
  return { value: swappedValue, swapped: matched };
}

/**
 * Replace every occurrence of each pair's dummy with its real: leftmost first, longest first
 * at one position, no overlaps (the matcher's semantics, for small inputs like one header).
 */
export function replaceBytes(
  input: Uint8Array,
  pairs: readonly BytePair[],
): { output: Uint8Array; matched: string[] } {
  const parts: Uint8Array[] = [];
  const matched = new Set<string>();
  let last = 0;
  let i = 0;
  while (i < input.length) {
    let best: BytePair | undefined;
    for (const p of pairs) {
      const d = p.dummy;
      if (d.length === 0 || i + d.length > input.length) continue;
      if (best && d.length <= best.dummy.length) continue;
      let ok = true;
      for (let j = 0; j < d.length; j++) {
        if (input[i + j] !== d[j]) {
          ok = false;
          break;
        }
      }
      if (ok) best = p;
    }
    if (best) {
      parts.push(input.subarray(last, i), best.real);
      matched.add(best.name);
      i += best.dummy.length;
      last = i;
    } else i++;
  }
  parts.push(input.subarray(last));
  const output = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    output.set(p, at);
    at += p.length;
  }
  return { output, matched: [...matched] };
}
