// WebSocket framing (RFC 6455 §5) for the proxy's two legs: an incremental reader that checks
// every rule a frame and a message must keep and yields a frame's payload unmasked, in pieces
// as it arrives (a large frame is never held whole), and a writer. Pure: bytes in, events or a
// WsProtocolError naming the close code out.
//
//   0                   1                   2                   3
//   |F|R|R|R| opcode|M| len(7) | ext len (16 or 64) | mask key (4) | payload …
//
// A reader is made for one direction: frames from a client must be masked, frames from a
// server must not be (§5.1). RSV1 is allowed only where permessage-deflate was negotiated, on
// the first frame of a data message (RFC 7692 §6); RSV2 and RSV3 never.

export const OP = {
  continuation: 0x0,
  text: 0x1,
  binary: 0x2,
  close: 0x8,
  ping: 0x9,
  pong: 0xa,
} as const;

/** Close codes the proxy itself sends. */
export const CLOSE = {
  normal: 1000,
  goingAway: 1001,
  protocolError: 1002,
  invalidPayload: 1007,
  policyViolation: 1008,
  tooBig: 1009,
  internalError: 1011,
} as const;

export class WsProtocolError extends Error {
  override readonly name = "WsProtocolError";
  constructor(
    /** The close code to send (1002 protocol, 1007 bad payload, 1009 too big). */
    readonly closeCode: number,
    /** Short and fixed: it goes into a close frame and the audit log. */
    readonly reason: string,
  ) {
    super(`${closeCode}: ${reason}`);
  }
}

export interface FrameHead {
  readonly fin: boolean;
  readonly rsv1: boolean;
  readonly opcode: number;
  readonly length: number;
}

export type FrameEvent =
  | { readonly type: "head"; readonly head: FrameHead }
  /** Payload bytes, unmasked (a copy: the reader's input is not kept). */
  | { readonly type: "data"; readonly bytes: Uint8Array }
  | { readonly type: "end"; readonly head: FrameHead };

export interface FrameReaderOptions {
  /** Whose frames these are: a client's must be masked, a server's must not. */
  readonly from: "client" | "server";
  /** Largest payload of one frame; beyond: 1009. */
  readonly maxFrameBytes: number;
  /** permessage-deflate was negotiated: RSV1 marks a compressed message. */
  readonly deflate: boolean;
}

export const isControl = (opcode: number) => (opcode & 0x8) !== 0;

/**
 * Reads frames from one direction of a WebSocket. Frame rules (§5.2: reserved bits and
 * opcodes, masking, control frames short and whole, minimal lengths) and message rules (§5.4:
 * a continuation only inside a fragmented message, no new data message inside one; control
 * frames may come between its fragments) are checked as the bytes come.
 */
export class FrameReader {
  #state: "head" | "payload" = "head";
  #buf = new Uint8Array(14);
  #have = 0;
  #head: FrameHead | null = null;
  #mask: Uint8Array | null = null;
  #left = 0;
  #offset = 0; // position in the payload (for the mask)
  /** Inside a fragmented data message (its first frame had FIN clear). */
  #fragmented = false;

  constructor(private readonly opts: FrameReaderOptions) {}

  push(bytes: Uint8Array): FrameEvent[] {
    const out: FrameEvent[] = [];
    let i = 0;
    while (i < bytes.length) {
      if (this.#state === "head") {
        const need = this.#headLength();
        const take = Math.min(need - this.#have, bytes.length - i);
        this.#buf.set(bytes.subarray(i, i + take), this.#have);
        this.#have += take;
        i += take;
        if (this.#have < this.#headLength()) continue;
        const head = this.#readHead();
        out.push({ type: "head", head });
        if (head.length === 0) this.#endFrame(out);
        continue;
      }
      const n = Math.min(this.#left, bytes.length - i);
      const piece = bytes.slice(i, i + n);
      if (this.#mask) {
        const m = this.#mask;
        const o = this.#offset;
        for (let k = 0; k < piece.length; k++) piece[k]! ^= m[(o + k) & 3]!;
      }
      this.#offset += n;
      this.#left -= n;
      i += n;
      out.push({ type: "data", bytes: piece });
      if (this.#left === 0) this.#endFrame(out);
    }
    return out;
  }

  /** Bytes of the head read so far are enough to know its full length. */
  #headLength(): number {
    if (this.#have < 2) return 2;
    const len7 = this.#buf[1]! & 0x7f;
    const masked = (this.#buf[1]! & 0x80) !== 0;
    return 2 + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0) + (masked ? 4 : 0);
  }

  #readHead(): FrameHead {
    const b0 = this.#buf[0]!;
    const b1 = this.#buf[1]!;
    const fin = (b0 & 0x80) !== 0;
    const rsv1 = (b0 & 0x40) !== 0;
    const opcode = b0 & 0x0f;
    const masked = (b1 & 0x80) !== 0;
    const len7 = b1 & 0x7f;
    let at = 2;
    let length = len7;
    if (len7 === 126) {
      length = (this.#buf[2]! << 8) | this.#buf[3]!;
      if (length < 126) throw new WsProtocolError(CLOSE.protocolError, "frame length not minimal");
      at = 4;
    } else if (len7 === 127) {
      const view = new DataView(this.#buf.buffer, this.#buf.byteOffset + 2, 8);
      const high = view.getUint32(0);
      const low = view.getUint32(4);
      if (high & 0x80000000)
        throw new WsProtocolError(CLOSE.protocolError, "frame length has its top bit set");
      length = high * 2 ** 32 + low;
      if (length < 65536)
        throw new WsProtocolError(CLOSE.protocolError, "frame length not minimal");
      at = 10;
    }
    if ((b0 & 0x30) !== 0)
      throw new WsProtocolError(CLOSE.protocolError, "reserved bits set (RSV2, RSV3)");
    if (opcode > 0xa || (opcode > 0x2 && opcode < 0x8)) {
      throw new WsProtocolError(CLOSE.protocolError, "reserved opcode");
    }
    if (masked !== (this.opts.from === "client")) {
      throw new WsProtocolError(
        CLOSE.protocolError,
        this.opts.from === "client" ? "client frame not masked" : "server frame masked",
      );
    }
    if (isControl(opcode)) {
      if (!fin) throw new WsProtocolError(CLOSE.protocolError, "fragmented control frame");
      if (length > 125)
        throw new WsProtocolError(CLOSE.protocolError, "control frame longer than 125 bytes");
      if (rsv1) throw new WsProtocolError(CLOSE.protocolError, "RSV1 on a control frame");
    } else if (opcode === OP.continuation) {
      if (!this.#fragmented)
        throw new WsProtocolError(CLOSE.protocolError, "continuation outside a message");
      if (rsv1) throw new WsProtocolError(CLOSE.protocolError, "RSV1 on a continuation frame");
    } else {
      if (this.#fragmented)
        throw new WsProtocolError(CLOSE.protocolError, "new message inside a fragmented one");
      if (rsv1 && !this.opts.deflate)
        throw new WsProtocolError(CLOSE.protocolError, "RSV1 without a negotiated extension");
    }
    if (length > this.opts.maxFrameBytes) throw new WsProtocolError(CLOSE.tooBig, "frame too big");
    if (!isControl(opcode)) this.#fragmented = !fin;
    this.#mask = masked ? this.#buf.slice(at, at + 4) : null;
    this.#head = { fin, rsv1, opcode, length };
    this.#left = length;
    this.#offset = 0;
    this.#state = "payload";
    return this.#head;
  }

  #endFrame(out: FrameEvent[]): void {
    out.push({ type: "end", head: this.#head! });
    this.#state = "head";
    this.#have = 0;
    this.#head = null;
    this.#mask = null;
  }
}

/** One frame on the wire; `mask` (4 bytes) for a frame the proxy sends as a client. */
export function encodeFrame(
  head: { readonly fin: boolean; readonly rsv1?: boolean; readonly opcode: number },
  payload: Uint8Array,
  mask?: Uint8Array,
): Uint8Array {
  const n = payload.length;
  const ext = n < 126 ? 0 : n < 65536 ? 2 : 8;
  const out = new Uint8Array(2 + ext + (mask ? 4 : 0) + n);
  out[0] = (head.fin ? 0x80 : 0) | (head.rsv1 ? 0x40 : 0) | (head.opcode & 0x0f);
  out[1] = (mask ? 0x80 : 0) | (n < 126 ? n : n < 65536 ? 126 : 127);
  const view = new DataView(out.buffer);
  if (ext === 2) view.setUint16(2, n);
  else if (ext === 8) {
    view.setUint32(2, Math.floor(n / 2 ** 32));
    view.setUint32(6, n >>> 0);
  }
  let at = 2 + ext;
  if (mask) {
    out.set(mask, at);
    at += 4;
    for (let k = 0; k < n; k++) out[at + k] = payload[k]! ^ mask[k & 3]!;
  } else out.set(payload, at);
  return out;
}

/** Whether `code` may be sent in a close frame (§7.4: 1005, 1006, 1015 never on the wire). */
export function closeCodeAllowed(code: number): boolean {
  if (code >= 3000 && code <= 4999) return true;
  return [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014].includes(code);
}

const utf8 = new TextDecoder("utf-8", { fatal: true });

/** A close frame's payload read: none, or a valid code and a UTF-8 reason. */
export function readClose(payload: Uint8Array): { code: number | null; reason: string } {
  if (payload.length === 0) return { code: null, reason: "" };
  if (payload.length === 1)
    throw new WsProtocolError(CLOSE.protocolError, "close payload of one byte");
  const code = (payload[0]! << 8) | payload[1]!;
  if (!closeCodeAllowed(code))
    throw new WsProtocolError(CLOSE.protocolError, "close code not allowed");
  let reason: string;
  try {
    reason = utf8.decode(payload.subarray(2));
  } catch {
    throw new WsProtocolError(CLOSE.invalidPayload, "close reason not UTF-8");
  }
  return { code, reason };
}

/** A close frame's payload: the code and a (short, UTF-8) reason. */
export function closePayload(code: number, reason = ""): Uint8Array {
  const text = new TextEncoder().encode(reason).subarray(0, 123);
  const out = new Uint8Array(2 + text.length);
  out[0] = code >> 8;
  out[1] = code & 0xff;
  out.set(text, 2);
  return out;
}
