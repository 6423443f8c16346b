// `Authorization: Basic base64(user:password)` handling for the dummy → real swap: the header
// is decoded, a user or password that is exactly a dummy is replaced, and it is re-encoded — base64 is not
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

/**
 * Swap a dummy that is the whole user or the whole password of a Basic header (GitHub takes a
 * token as either); a dummy among other text there is content, like anywhere else, and other
 * schemes and undecodable values pass unchanged.
 */
export function swapBasicAuth(value: string, pairs: readonly BytePair[]): BasicSwapResult {
  const decoded = decodeBasicAuth(value);
  if (!decoded || pairs.length === 0) return { value, swapped: [] };
  const colon = decoded.indexOf(0x3a);
  const parts = colon < 0 ? [decoded] : [decoded.subarray(0, colon), decoded.subarray(colon + 1)];
  const swapped: string[] = [];
  const out = parts.map((part) => {
    const p = pairs.find((x) => Buffer.from(part).equals(Buffer.from(x.dummy)));
    if (!p) return part;
    swapped.push(p.name);
    return p.real;
  });
  if (swapped.length === 0) {
    decoded.fill(0);
    return { value, swapped };
  }
  const joined = Buffer.concat(colon < 0 ? out : [out[0]!, Buffer.from(":"), out[1]!]);
  decoded.fill(0);
  const scheme = BASIC_RE.exec(value)![1]!;
  const swappedValue = `${scheme} ${joined.toString("base64")}`;
  joined.fill(0);
  return { value: swappedValue, swapped };
}
