// A WebSocket between an agent and an upstream, after the handshake (exchange/stages/
// upgrade.ts): every frame is read (http/ws-frames.ts), checked, and written again — never
// passed as bytes. Messages are assembled (up to a cap) and scanned whole with the secrets
// the handshake was made with: from the agent, a real value is a violation and closes both
// sides with 1008; from the upstream, every real value is redacted (and a text message must
// still be UTF-8). Control frames are scanned the same way and passed at once, between the
// fragments of a message too. A frame that breaks the protocol closes both sides with the
// RFC's code; nothing unscanned is ever forwarded. No extension is negotiated (the handshake
// offers none upstream), so every payload is read as it was sent.

import { randomBytes } from "node:crypto";
import type { Duplex } from "node:stream";
import { constants, inflateRawSync } from "node:zlib";
import type { SecretState } from "../credentials/secret-state.ts";
import type { Stall } from "../guard/stall-registry.ts";
import type { SwitchedConnection } from "../http/message.ts";
import {
  CLOSE,
  closePayload,
  encodeFrame,
  FrameReader,
  isControl,
  OP,
  readClose,
  WsProtocolError,
} from "../http/ws-frames.ts";

export interface WsRelayOptions {
  /** Largest message (and frame) either side may send, inflated or not; beyond: 1009. */
  readonly maxMessageBytes: number;
  /**
   * permessage-deflate negotiated on each leg (without context takeover on the peer's side):
   * a compressed message from that side is inflated on its own before it is scanned.
   */
  readonly deflate: { readonly agent: boolean; readonly upstream: boolean };
  /** No frame either way for this long: both sides are closed (1001). */
  readonly idleMs: number;
  /** The agent sent a real value (closed with 1008): `dlp`; the upstream did (redacted): `reflection`. */
  readonly onViolation: (kind: "dlp" | "reflection", count: number) => void;
  /** Once both sides are closed: what passed, for the audit line and metrics. */
  readonly onClose: (stats: WsStats) => void;
  /** A side stopped taking bytes: `shed` closes the WebSocket (guard/stall-registry.ts). */
  readonly stalled?: (shed: () => void) => Stall;
}

/** Messages a side may have waiting to be scanned before the relay stops reading it. */
const MAX_QUEUED = 2;

export interface WsStats {
  framesFromAgent: number;
  framesFromUpstream: number;
  bytesFromAgent: number;
  bytesFromUpstream: number;
  redactions: number;
  /** Close codes as sent by each side (or by the proxy in its place); null: none. */
  agentClose: number | null;
  upstreamClose: number | null;
  /** Why the proxy closed it, when it did. */
  reason: string | null;
}

const utf8 = new TextDecoder("utf-8", { fatal: true });
/** What a deflated message's last block ends with, removed by the sender (RFC 7692 §7.2.1). */
const DEFLATE_TAIL = new Uint8Array([0x00, 0x00, 0xff, 0xff]);
/** After a close frame, how long the other side has to answer with its own. */
const CLOSE_GRACE_MS = 5_000;

interface Side {
  readonly name: "agent" | "upstream";
  readonly socket: Duplex;
  readonly carrier: Duplex | null;
  readonly reader: FrameReader;
  /** The data message being assembled (a buffer that grows), and the control frame being read. */
  message: { opcode: number; compressed: boolean; buf: Uint8Array; size: number } | null;
  control: { opcode: number; parts: Uint8Array[] } | null;
  /** It sent its close frame; the proxy sent one to it. */
  closed: boolean;
  closeSent: boolean;
  /** What it sent, scanned and passed on in order. */
  queue: Promise<void>;
  queued: number;
  /** It is not taking bytes: registered with the memory guard until it does again. */
  stall: Stall | null;
}

/** Bytes a tunnel's carrier may hold before the relay stops reading the other side. */
const CARRIER_HIGH_WATER = 128 * 1024;
const CARRIER_POLL_MS = 20;

/**
 * `release` lets go of the hold on `state` the caller took for the relay (it must be taken
 * before the handshake's exchange let go of its own). A reload closes the relay (1012): on the
 * old secrets it could not redact the new values.
 */
export function relayWebSocket(
  state: SecretState,
  agent: SwitchedConnection,
  upstream: SwitchedConnection,
  release: () => void,
  opts: WsRelayOptions,
): void {
  const stats: WsStats = {
    framesFromAgent: 0,
    framesFromUpstream: 0,
    bytesFromAgent: 0,
    bytesFromUpstream: 0,
    redactions: 0,
    agentClose: null,
    upstreamClose: null,
    reason: null,
  };
  const side = (name: Side["name"], conn: SwitchedConnection): Side => ({
    name,
    socket: conn.socket,
    carrier: conn.carrier ?? null,
    reader: new FrameReader({
      from: name === "agent" ? "client" : "server",
      maxFrameBytes: opts.maxMessageBytes,
      deflate: opts.deflate[name],
    }),
    message: null,
    control: null,
    closed: false,
    closeSent: false,
    queue: Promise.resolve(),
    queued: 0,
    stall: null,
  });
  const a = side("agent", agent);
  const u = side("upstream", upstream);
  const other = (s: Side) => (s === a ? u : a);
  let ended = false;
  let idle: ReturnType<typeof setTimeout> | undefined;
  let grace: ReturnType<typeof setTimeout> | undefined;

  /** A frame to `to`: masked toward the upstream (the proxy is its client), not toward the agent. */
  const send = (to: Side, opcode: number, payload: Uint8Array): void => {
    if (to.socket.destroyed || !to.socket.writable || to.closeSent) return;
    if (opcode === OP.close) to.closeSent = true;
    const frame = encodeFrame(
      { fin: true, opcode },
      payload,
      to === u ? randomBytes(4) : undefined,
    );
    const ok = to.socket.write(frame);
    const carrierFull = to.carrier !== null && to.carrier.writableLength > CARRIER_HIGH_WATER;
    if (ok && !carrierFull) return;
    // Backpressure: the side that feeds `to` waits until `to` (and its carrier) drained. A
    // side that stops taking bytes is a stall the memory guard may shed (as the HTTP leg's).
    const from = other(to);
    from.socket.pause();
    to.stall ??=
      opts.stalled?.(() => {
        closeBoth(CLOSE.goingAway, "shed under memory pressure");
        to.socket.destroy();
      }) ?? null;
    let last = to.carrier?.writableLength ?? 0;
    const wait = () => {
      if (ended) {
        to.stall?.end();
        to.stall = null;
        return;
      }
      const held = to.carrier?.writableLength ?? 0;
      if (held < last) to.stall?.progress();
      last = held;
      if (to.socket.writableNeedDrain || held > CARRIER_HIGH_WATER) {
        setTimeout(wait, CARRIER_POLL_MS).unref?.();
        return;
      }
      to.stall?.end();
      to.stall = null;
      from.socket.resume();
    };
    if (!ok) to.socket.once("drain", wait);
    else setTimeout(wait, CARRIER_POLL_MS).unref?.();
  };

  const end = (reason: string | null): void => {
    if (ended) return;
    ended = true;
    clearTimeout(idle);
    clearTimeout(grace);
    if (reason && stats.reason === null) stats.reason = reason;
    for (const s of [a, u]) {
      s.stall?.end();
      s.stall = null;
      s.socket.off("data", s === a ? onAgent : onUpstream);
      s.socket.end();
      setTimeout(() => s.socket.destroy(), CLOSE_GRACE_MS).unref?.();
    }
    state.replaced.removeEventListener("abort", onReplaced);
    release();
    opts.onClose(stats);
  };

  /** The proxy closes both sides: `code` to each (the offender's own code to it). */
  const closeBoth = (code: number, reason: string, toAgent = code, toUpstream = code): void => {
    if (ended) return;
    if (!a.closeSent) {
      send(a, OP.close, closePayload(toAgent, reason));
      stats.agentClose ??= toAgent;
    }
    if (!u.closeSent) {
      send(u, OP.close, closePayload(toUpstream, reason));
      stats.upstreamClose ??= toUpstream;
    }
    end(reason);
  };

  const resetIdle = () => {
    clearTimeout(idle);
    idle = setTimeout(() => closeBoth(CLOSE.goingAway, "idle"), opts.idleMs);
    idle.unref?.();
  };

  /**
   * A payload from `from` made fit for the other side: the agent's must carry no real value
   * (null: a violation), the upstream's has every real value redacted.
   */
  const scanned = async (from: Side, payload: Uint8Array): Promise<Uint8Array | null> => {
    // On the main thread, with views, as the HTTP path's small bodies: 63 MB/s here. Through
    // the worker pool a message per scan stream ran 2x faster but let garbage pile up (RSS
    // 636 MiB for 256 MiB relayed): bench/README.md.
    const r = state.redactInline.apply(payload);
    if (ended) return null;
    if (r.count === 0) return payload;
    if (from === a) {
      if (r.output !== payload) r.output.fill(0);
      return null;
    }
    stats.redactions += r.count;
    opts.onViolation("reflection", r.count);
    return r.output;
  };

  const onControl = async (from: Side, opcode: number, payload: Uint8Array): Promise<void> => {
    const to = other(from);
    if (opcode === OP.close) {
      const { code, reason } = readClose(payload);
      from.closed = true;
      if (from === a) stats.agentClose = code ?? 1005;
      else stats.upstreamClose = code ?? 1005;
      const text =
        reason === "" ? new Uint8Array(0) : await scanned(from, new TextEncoder().encode(reason));
      if (ended) return;
      if (text === null) {
        violation();
        return;
      }
      const body =
        code === null ? new Uint8Array(0) : closePayload(code, new TextDecoder().decode(text));
      send(to, OP.close, body);
      // Over once each side has sent its close and been sent one.
      if (a.closed && u.closed && a.closeSent && u.closeSent) end(null);
      else {
        clearTimeout(grace);
        grace = setTimeout(() => end("close not answered"), CLOSE_GRACE_MS);
      }
      return;
    }
    const out = await scanned(from, payload);
    if (ended) return;
    if (out === null) {
      violation();
      return;
    }
    send(to, opcode, out);
  };

  const onMessage = async (from: Side, opcode: number, payload: Uint8Array): Promise<void> => {
    const out = await scanned(from, payload);
    if (ended) return;
    if (out === null) {
      violation();
      return;
    }
    if (opcode === OP.text) {
      try {
        utf8.decode(out);
      } catch {
        throw new WsProtocolError(CLOSE.invalidPayload, "text message not UTF-8");
      }
    }
    send(other(from), opcode, out);
  };

  const violation = (): void => {
    opts.onViolation("dlp", 1);
    closeBoth(CLOSE.policyViolation, "real credential in message");
  };

  /** A protocol error from `from`: the offender gets its code, the other side 1001. */
  const failed = (from: Side, e: unknown): void => {
    if (!(e instanceof WsProtocolError)) {
      closeBoth(CLOSE.internalError, "internal error");
      return;
    }
    const toAgent = from === a ? e.closeCode : CLOSE.goingAway;
    const toUpstream = from === u ? e.closeCode : CLOSE.goingAway;
    closeBoth(e.closeCode, e.reason, toAgent, toUpstream);
  };

  /** Runs `job` after everything `from` sent before it; reading pauses while too much waits. */
  const enqueue = (from: Side, job: () => Promise<void>): void => {
    from.queued += 1;
    if (from.queued > MAX_QUEUED) from.socket.pause();
    from.queue = from.queue
      .then(() => (ended ? undefined : job()))
      .catch((e) => failed(from, e))
      .finally(() => {
        from.queued -= 1;
        if (from.queued <= MAX_QUEUED && !ended) from.socket.resume();
      });
  };

  const feed = (from: Side, bytes: Uint8Array): void => {
    if (ended) return;
    resetIdle();
    if (from === a) stats.bytesFromAgent += bytes.length;
    else stats.bytesFromUpstream += bytes.length;
    try {
      for (const e of from.reader.push(bytes)) {
        if (ended) return;
        if (from.closed) throw new WsProtocolError(CLOSE.protocolError, "frame after close");
        if (e.type === "head") {
          if (from === a) stats.framesFromAgent += 1;
          else stats.framesFromUpstream += 1;
          if (isControl(e.head.opcode)) from.control = { opcode: e.head.opcode, parts: [] };
          else if (e.head.opcode !== OP.continuation) {
            from.message = {
              opcode: e.head.opcode,
              compressed: e.head.rsv1,
              buf: new Uint8Array(1024),
              size: 0,
            };
          }
          continue;
        }
        if (e.type === "data") {
          if (from.control) from.control.parts.push(e.bytes);
          else {
            const m = from.message!;
            const size = m.size + e.bytes.length;
            if (size > opts.maxMessageBytes) {
              throw new WsProtocolError(CLOSE.tooBig, "message too big");
            }
            // One buffer per message, doubled as it fills: many tiny fragments cost their bytes.
            if (size > m.buf.length) {
              const grown = new Uint8Array(
                Math.min(opts.maxMessageBytes, Math.max(size, m.buf.length * 2)),
              );
              grown.set(m.buf.subarray(0, m.size));
              m.buf.fill(0);
              m.buf = grown;
            }
            m.buf.set(e.bytes, m.size);
            m.size = size;
          }
          continue;
        }
        // The end of a frame.
        if (from.control) {
          const c = from.control;
          from.control = null;
          const payload = Buffer.concat(c.parts);
          enqueue(from, () => onControl(from, c.opcode, payload));
        } else if (e.head.fin) {
          const m = from.message!;
          from.message = null;
          const payload = m.buf.subarray(0, m.size);
          enqueue(from, () => onMessage(from, m.opcode, m.compressed ? inflate(payload) : payload));
        }
      }
    } catch (e) {
      failed(from, e);
    }
  };

  /** A compressed message, inflated on its own (RFC 7692 §7.2.2), within the message cap. */
  const inflate = (payload: Uint8Array): Uint8Array => {
    try {
      // A message ends on a sync flush, not a final block: inflated up to it, not to an end.
      return inflateRawSync(Buffer.concat([payload, DEFLATE_TAIL]), {
        maxOutputLength: opts.maxMessageBytes,
        finishFlush: constants.Z_SYNC_FLUSH,
      });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ERR_BUFFER_TOO_LARGE") {
        throw new WsProtocolError(CLOSE.tooBig, "message too big once inflated");
      }
      throw new WsProtocolError(CLOSE.invalidPayload, "compressed message does not inflate");
    }
  };

  const onAgent = (d: Buffer) => feed(a, new Uint8Array(d.buffer, d.byteOffset, d.length));
  const onUpstream = (d: Buffer) => feed(u, new Uint8Array(d.buffer, d.byteOffset, d.length));
  const onReplaced = () => closeBoth(1012, "proxy secrets reloaded");
  state.replaced.addEventListener("abort", onReplaced);

  for (const s of [a, u]) {
    s.socket.once("close", () => {
      if (!ended) end(`${s.name} connection closed`);
      other(s).socket.destroy();
    });
    s.socket.on("error", () => {});
  }
  // Replaced before it began (a reload while the 101 was on its way): nothing is relayed,
  // not even the bytes that came with the 101.
  if (state.replaced.aborted) {
    onReplaced();
    return;
  }
  a.socket.on("data", onAgent);
  u.socket.on("data", onUpstream);
  resetIdle();
  if (agent.leftover.length > 0) feed(a, agent.leftover);
  if (upstream.leftover.length > 0) feed(u, upstream.leftover);
  a.socket.resume();
  u.socket.resume();
}
