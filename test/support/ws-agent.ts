// A WebSocket agent driven by hand through the proxy: a tunnel, a handshake, then frames written
// and read exactly as the test says (masked, fragmented, compressed or not). What the agent
// receives is collected frame by frame; a message the proxy compressed is inflated, so tests
// read plaintext. Test only.

import type tls from "node:tls";
import { constants, createDeflateRaw, inflateRawSync } from "node:zlib";
import { encodeFrame, type FrameEvent, FrameReader, OP } from "../../src/http/ws-frames.ts";
import type { Harness } from "./proxy-harness.ts";
import { openTunnel } from "./raw-agent.ts";

const MASK = new Uint8Array([1, 2, 3, 4]);
/** The sync-flush tail a permessage-deflate sender removes (RFC 7692 §7.2.1). */
const TAIL = Buffer.from([0x00, 0x00, 0xff, 0xff]);
const enc = new TextEncoder();

export interface WsAgentOptions {
  readonly agent?: string;
  /** CONNECT target and Host: `host:port`. */
  readonly target: string;
  readonly path?: string;
  /** More handshake fields, each ending in CRLF. */
  readonly extra?: string;
  /** The agent's Sec-WebSocket-Extensions offer; null: none. */
  readonly offer?: string | null;
  /** Answer pings with pongs, as every client library does (default true). */
  readonly autoPong?: boolean;
}

export interface ReceivedFrame {
  readonly opcode: number;
  readonly fin: boolean;
  readonly payload: Buffer;
  /** It came compressed (RSV1) and was inflated here. */
  readonly compressed: boolean;
}

export async function wsAgent(h: Harness, o: WsAgentOptions) {
  const t: tls.TLSSocket = await openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents[o.agent ?? "agent-a"]! },
    { connect: o.target },
  );
  const offer =
    o.offer === null
      ? ""
      : `Sec-WebSocket-Extensions: ${o.offer ?? "permessage-deflate; client_max_window_bits"}\r\n`;
  t.write(
    `GET ${o.path ?? "/chat"} HTTP/1.1\r\nHost: ${o.target}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n${offer}${o.extra ?? ""}\r\n`,
  );
  const reader = new FrameReader({ from: "server", maxFrameBytes: 1 << 30, deflate: true });
  const frames: ReceivedFrame[] = [];
  let parts: Uint8Array[] = [];
  let compressed = false;
  let closed = false;
  let bytes = 0;
  const waiters: (() => void)[] = [];
  // The head, then frames: one listener from the start, so frames that come with the 101 are
  // read too.
  let headBuf: Buffer | null = Buffer.alloc(0);
  let gotHead!: (head: string) => void;
  const headRead = new Promise<string>((r) => {
    gotHead = r;
  });
  t.on("data", (chunk: Buffer) => {
    let d = chunk;
    if (headBuf !== null) {
      headBuf = Buffer.concat([headBuf, d]);
      const i = headBuf.indexOf("\r\n\r\n");
      if (i < 0) return;
      const text = headBuf.subarray(0, i).toString("latin1");
      gotHead(text);
      // Frames follow only a 101; anything else is the proxy's answer, with its body.
      if (!text.startsWith("HTTP/1.1 101")) return;
      d = headBuf.subarray(i + 4);
      headBuf = null;
    }
    bytes += d.length;
    for (const e of reader.push(new Uint8Array(d)) as FrameEvent[]) {
      if (e.type === "head" && e.head.opcode !== OP.continuation && e.head.opcode < 8) {
        compressed = e.head.rsv1;
      }
      if (e.type === "data") parts.push(e.bytes);
      if (e.type === "end") {
        let payload = Buffer.concat(parts);
        const inflated = e.head.opcode < 8 && compressed;
        if (inflated) {
          payload = inflateRawSync(Buffer.concat([payload, TAIL]), {
            finishFlush: constants.Z_SYNC_FLUSH,
          });
        }
        frames.push({ opcode: e.head.opcode, fin: e.head.fin, payload, compressed: inflated });
        parts = [];
        if (e.head.opcode === OP.ping && o.autoPong !== false) {
          t.write(encodeFrame({ fin: true, opcode: OP.pong }, payload, MASK));
        }
      }
    }
    for (const w of waiters.splice(0)) w();
  });
  t.on("close", () => {
    closed = true;
    gotHead("");
    for (const w of waiters.splice(0)) w();
  });
  t.on("error", () => {});
  const head = await headRead;
  let read = 0;
  /** The next frame the agent has not looked at yet (undefined once the tunnel closed). */
  const next = async () => {
    while (frames.length <= read && !closed) await new Promise<void>((r) => waiters.push(r));
    return frames[read++];
  };
  /** The next whole message (its fragments joined), skipping control frames but a close. */
  const message = async (): Promise<ReceivedFrame | undefined> => {
    const pieces: Buffer[] = [];
    let first: ReceivedFrame | undefined;
    for (;;) {
      const f = await next();
      if (!f) return undefined;
      if (f.opcode === OP.close) return f;
      if (f.opcode >= 8) continue;
      first ??= f;
      pieces.push(f.payload);
      if (f.fin) return { ...first, fin: true, payload: Buffer.concat(pieces) };
    }
  };
  const send = (opcode: number, payload: string | Uint8Array, fin = true, rsv1 = false) =>
    t.write(
      encodeFrame(
        { fin, opcode, rsv1 },
        typeof payload === "string" ? enc.encode(payload) : payload,
        MASK,
      ),
    );
  const untilClosed = async () => {
    while (!closed) await new Promise<void>((r) => waiters.push(r));
  };
  return {
    t,
    head,
    frames,
    next,
    message,
    send,
    untilClosed,
    /** Bytes received after the handshake's head was read. */
    received: () => bytes,
  };
}

/**
 * Messages compressed as a peer keeping its DEFLATE context does: one stream across them, each
 * ended by a sync flush whose 00 00 ff ff is removed (RFC 7692 §7.2.1).
 */
export function contextDeflater(windowBits = 15): (text: string) => Promise<Buffer> {
  const z = createDeflateRaw({ windowBits });
  return (text) =>
    new Promise<Buffer>((done) => {
      const parts: Buffer[] = [];
      const on = (b: Buffer) => parts.push(b);
      z.on("data", on);
      z.write(Buffer.from(text));
      z.flush(constants.Z_SYNC_FLUSH, () => {
        z.off("data", on);
        const d = Buffer.concat(parts);
        done(d.subarray(0, d.length - TAIL.length));
      });
    });
}
