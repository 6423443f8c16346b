// permessage-deflate (RFC 7692) for the proxy's two WebSocket legs: what it offers upstream,
// what it answers an agent, and the inflater and deflater the relay runs. The proxy reads every
// message as plaintext, so it inflates whatever a peer compressed — with or without context
// takeover, any window size — and compresses what it sends only as far as the peer's terms
// allow, without context of its own (each message it compresses stands alone).
//
// Negotiation is pure: header values in, terms or a reason out.

import { constants, deflateRawSync } from "node:zlib";
import { Inflate, Z_SYNC_FLUSH } from "pako";
import { CLOSE, WsProtocolError } from "./ws-frames.ts";

/** One leg's terms: how the peer compresses, how the proxy may compress toward it. */
export interface DeflateTerms {
  /** The peer keeps its compression context between messages: one inflater for them all. */
  readonly peerTakeover: boolean;
  /** Window bits the proxy may compress with toward the peer; null: it never compresses. */
  readonly ownBits: number | null;
}

/** What the proxy offers upstream: compression either way; the server keeps context if it likes. */
export const DEFLATE_OFFER = "permessage-deflate; client_no_context_takeover";

type Params = Map<string, string | null>;

/** The offers or answers of Sec-WebSocket-Extensions values, in order. */
function parseExtensions(values: readonly string[]): { name: string; params: Params }[] {
  const out: { name: string; params: Params }[] = [];
  for (const v of values) {
    for (const e of v.split(",")) {
      const [name, ...params] = e.split(";").map((p) => p.trim());
      if (!name) continue;
      const map: Params = new Map();
      for (const p of params) {
        if (p === "") continue;
        const eq = p.indexOf("=");
        const k = (eq < 0 ? p : p.slice(0, eq)).trim().toLowerCase();
        const value =
          eq < 0
            ? null
            : p
                .slice(eq + 1)
                .trim()
                .replace(/^"(.*)"$/, "$1");
        // A parameter given twice makes the offer invalid (§7.1): marked, refused below.
        map.set(map.has(k) ? "\u0000duplicate" : k, value);
      }
      out.push({ name: name.toLowerCase(), params: map });
    }
  }
  return out;
}

const BITS = /^(?:8|9|1[0-5])$/;
const FLAGS = ["server_no_context_takeover", "client_no_context_takeover"];

/** The parameters are ones RFC 7692 defines, each well formed; `clientBitsBare` allows a valueless client_max_window_bits (an offer's). */
function wellFormed(params: Params, clientBitsBare: boolean): boolean {
  for (const [k, v] of params) {
    if (FLAGS.includes(k)) {
      if (v !== null) return false;
    } else if (k === "server_max_window_bits") {
      if (v === null || !BITS.test(v)) return false;
    } else if (k === "client_max_window_bits") {
      if (v === null ? !clientBitsBare : !BITS.test(v)) return false;
    } else return false;
  }
  return true;
}

/**
 * The upstream's answer to DEFLATE_OFFER. `off`: it declined (no extension); null: it answered
 * with something the offer did not allow (another extension, two, an unknown or malformed
 * parameter, a client window the offer did not ask about) — the handshake fails (§7.1).
 */
export function upstreamTerms(values: readonly string[]): DeflateTerms | "off" | null {
  const ext = parseExtensions(values);
  if (ext.length === 0) return "off";
  if (ext.length !== 1 || ext[0]!.name !== "permessage-deflate") return null;
  const p = ext[0]!.params;
  if (!wellFormed(p, false) || p.has("client_max_window_bits")) return null;
  return { peerTakeover: !p.has("server_no_context_takeover"), ownBits: 15 };
}

/**
 * The answer to an agent's offers: the first permessage-deflate offer that is well formed,
 * accepted on the proxy's terms (it keeps no context of its own; a window the agent asks of it
 * is honoured, and below 9 bits — which zlib cannot write raw — it sends uncompressed). The
 * agent keeps its context unless it offered not to. null: no offer to accept.
 */
export function agentTerms(
  values: readonly string[],
): { answer: string; terms: DeflateTerms } | null {
  for (const offer of parseExtensions(values)) {
    if (offer.name !== "permessage-deflate" || !wellFormed(offer.params, true)) continue;
    const p = offer.params;
    const answer = ["permessage-deflate", "server_no_context_takeover"];
    const asked = p.get("server_max_window_bits");
    if (asked) answer.push(`server_max_window_bits=${asked}`);
    const agentResets = p.has("client_no_context_takeover");
    if (agentResets) answer.push("client_no_context_takeover");
    const bits = asked ? Number(asked) : 15;
    return {
      answer: answer.join("; "),
      terms: { peerTakeover: !agentResets, ownBits: bits >= 9 ? bits : null },
    };
  }
  return null;
}

/** What a deflated message's last block ends with, removed by the sender (RFC 7692 §7.2.1). */
const TAIL = new Uint8Array([0x00, 0x00, 0xff, 0xff]);
/**
 * Compressed input inflated per step: DEFLATE expands at most ~1032:1, so a step yields at
 * most ~4 MiB before the relay can look at the cap and the other side's backpressure.
 */
const STEP = 4096;

/**
 * Inflates one side's compressed messages, a piece at a time (a message is never held whole).
 * With the peer's context kept, one inflater runs across messages; without, each message
 * starts afresh. `push` returns the plaintext its piece yields; `end` the message's rest.
 */
export class MessageInflater {
  #z: Inflate | null = null;
  #out: Uint8Array[] = [];
  #size = 0;
  /** The peer ended its DEFLATE stream (a final block) inside this message. */
  #finished = false;

  constructor(
    private readonly takeover: boolean,
    /** Largest inflated message: beyond it, 1009. */
    private readonly maxMessageBytes: number,
  ) {}

  /** Plaintext of the next compressed piece of the current message, in pieces. */
  *push(compressed: Uint8Array): Generator<Uint8Array> {
    for (let i = 0; i < compressed.length; i += STEP) {
      yield* this.#run(compressed.subarray(i, i + STEP));
    }
  }

  /** The message's end: the sync-flush tail its sender removed, and the plaintext it frees. */
  *end(): Generator<Uint8Array> {
    if (!this.#finished) yield* this.#run(TAIL);
    // A stream the peer ended cannot go on: the next message starts a new one.
    if (!this.takeover || this.#finished) this.#z = null;
    this.#size = 0;
    this.#finished = false;
  }

  *#run(input: Uint8Array): Generator<Uint8Array> {
    if (this.#finished) throw notInflating();
    this.#z ??= this.#open();
    const z = this.#z;
    z.push(input, Z_SYNC_FLUSH);
    const out = this.#out;
    this.#out = [];
    if (z.err !== 0) throw notInflating();
    this.#finished = z.ended;
    for (const piece of out) {
      this.#size += piece.length;
      if (this.#size > this.maxMessageBytes) {
        throw new WsProtocolError(CLOSE.tooBig, "message too big once inflated");
      }
      yield piece;
    }
  }

  #open(): Inflate {
    const z = new Inflate({ raw: true, windowBits: 15, chunkSize: 16 * 1024 });
    z.onData = (chunk: Uint8Array) => {
      this.#out.push(chunk);
    };
    return z;
  }
}

const notInflating = () =>
  new WsProtocolError(CLOSE.invalidPayload, "compressed message does not inflate");

/** Messages shorter than this are not worth compressing (as `ws` and browsers judge it). */
export const DEFLATE_THRESHOLD = 1024;

/**
 * A whole message compressed on its own with `bits` of window, its sync-flush tail removed;
 * null when that does not make it smaller.
 */
export function deflateMessage(payload: Uint8Array, bits: number): Uint8Array | null {
  const out = deflateRawSync(payload, {
    windowBits: bits,
    level: 1,
    finishFlush: constants.Z_SYNC_FLUSH,
  });
  const body = out.subarray(0, out.length - TAIL.length);
  return body.length < payload.length ? body : null;
}
