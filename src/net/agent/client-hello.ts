// Reads the server name an agent asks for in a TLS ClientHello, from the bytes alone (RFC 8446
// 4.1.2, RFC 6066 3): the runtime does not run an SNI callback for TLS layered inside a tunnel,
// so the proxy reads the name itself before it hands the bytes to TLS. Pure: bytes in, a result
// out. It never guesses: anything that is not a well-formed ClientHello is "invalid".

export type ClientHello =
  /** More bytes are needed. */
  | { readonly kind: "incomplete" }
  | { readonly kind: "invalid"; readonly reason: string }
  /** `sni`: the host name asked for, if the hello names one. `length`: bytes it took. */
  | { readonly kind: "hello"; readonly sni: string | undefined; readonly length: number };

/** A ClientHello spread over more records than this is not one a client sends. */
const MAX_HELLO_BYTES = 64 * 1024;

export function parseClientHello(input: Uint8Array): ClientHello {
  // Reassemble the handshake message from the leading handshake records.
  const message: number[] = [];
  let at = 0;
  let need = -1;
  while (need < 0 || message.length < need) {
    if (at + 5 > input.length) return incomplete(input);
    if (input[at] !== 22) return invalid("not a TLS handshake record");
    if (input[at + 1] !== 3) return invalid("not a TLS record version");
    const len = (input[at + 3]! << 8) | input[at + 4]!;
    if (len === 0 || len > 16384 + 256) return invalid("bad record length");
    if (at + 5 + len > input.length) return incomplete(input);
    for (let i = 0; i < len; i++) message.push(input[at + 5 + i]!);
    at += 5 + len;
    if (need < 0 && message.length >= 4) {
      if (message[0] !== 1) return invalid("first handshake message is not a ClientHello");
      need = 4 + ((message[1]! << 16) | (message[2]! << 8) | message[3]!);
      if (need > MAX_HELLO_BYTES) return invalid("ClientHello too large");
    }
  }
  const sni = serverName(Uint8Array.from(message.slice(4, need)));
  if (typeof sni === "object") return sni;
  return { kind: "hello", sni, length: at };
}

function incomplete(input: Uint8Array): ClientHello {
  return input.length > MAX_HELLO_BYTES ? invalid("ClientHello too large") : { kind: "incomplete" };
}

function invalid(reason: string): ClientHello {
  return { kind: "invalid", reason };
}

/** The server_name of a ClientHello body, undefined when it has none. */
function serverName(b: Uint8Array): string | undefined | ClientHello {
  let p = 2 + 32; // legacy_version, random
  const skip = (lenBytes: number): boolean => {
    if (p + lenBytes > b.length) return false;
    let n = 0;
    for (let i = 0; i < lenBytes; i++) n = (n << 8) | b[p + i]!;
    p += lenBytes + n;
    return p <= b.length;
  };
  if (!skip(1) || !skip(2) || !skip(1)) return invalid("truncated ClientHello");
  if (p === b.length) return undefined; // no extensions
  if (p + 2 > b.length) return invalid("truncated extensions");
  const end = p + 2 + ((b[p]! << 8) | b[p + 1]!);
  if (end !== b.length) return invalid("extensions do not fill the ClientHello");
  p += 2;
  while (p < end) {
    if (p + 4 > end) return invalid("truncated extension");
    const type = (b[p]! << 8) | b[p + 1]!;
    const len = (b[p + 2]! << 8) | b[p + 3]!;
    const data = p + 4;
    p = data + len;
    if (p > end) return invalid("truncated extension");
    if (type !== 0) continue;
    // server_name: a list of (type, name); the host_name entry is type 0.
    let q = data + 2;
    if (q > p || ((b[data]! << 8) | b[data + 1]!) !== len - 2) return invalid("bad server_name");
    while (q + 3 <= p) {
      const nameType = b[q]!;
      const nameLen = (b[q + 1]! << 8) | b[q + 2]!;
      const name = q + 3;
      q = name + nameLen;
      if (q > p) return invalid("bad server_name");
      if (nameType === 0) return String.fromCharCode(...b.subarray(name, q));
    }
    return invalid("server_name without a host name");
  }
  return undefined;
}
