// A WebSocket between an agent and an upstream, after the handshake (exchange/stages/
// upgrade.ts): every frame is read (http/ws-frames.ts), checked, and written again — never
// passed as bytes. A data message streams through the matcher (a stream of the redaction set,
// its carry spanning fragments and frames) and leaves in fragments of up to 64 KiB as it is
// scanned, so a large one is never held whole: from the agent, a real value is a violation and
// closes both sides with 1008 (the fragments before it were clean); from the upstream, every
// real value is redacted (a text message must still be UTF-8). A compressed message is inflated
// as it comes (http/ws-deflate.ts) and a message the proxy sends in one frame is compressed
// where the peer agreed. Control frames are scanned the same way and passed at once, between
// fragments too. A frame that breaks the protocol closes both sides with the RFC's code;
// nothing unscanned is ever forwarded. A side silent for `pingMs` is pinged by the proxy (its
// pong is not relayed) and closed if it does not answer.

import { randomBytes } from "node:crypto";
import type { Duplex } from "node:stream";
import type { MatchCounter } from "../body/collect.ts";
import type { SwapPair } from "../credentials/bindings.ts";
import { swapJsonStrings } from "../credentials/body-fields.ts";
import type { SecretState } from "../credentials/secret-state.ts";
import type { Stall } from "../guard/stall-registry.ts";
import type { SwitchedConnection } from "../http/message.ts";
import {
  DEFLATE_THRESHOLD,
  type DeflateTerms,
  deflateMessage,
  MessageInflater,
} from "../http/ws-deflate.ts";
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
import type { MatchStream } from "../matcher/types.ts";

export interface WsRelayOptions {
  /** Largest message either side may send, inflated or not (streamed, never held); beyond: 1009. */
  readonly maxMessageBytes: number;
  /** permessage-deflate as negotiated on each leg; null: off on that leg. */
  readonly deflate: { readonly agent: DeflateTerms | null; readonly upstream: DeflateTerms | null };
  /** No message either way for this long: both sides are closed (1001). */
  readonly idleMs: number;
  /** A side silent this long is pinged; one that does not answer within as long is closed. */
  readonly pingMs: number;
  /** The redaction set (every real value, decoded views on) and other agents' dummies. */
  readonly scanner: WsScanner;
  /**
   * The credential surfaces in the agent's text messages: JSON pointers whose string is the
   * dummy get the real value (the handshake's host and path are the credential's endpoint).
   */
  readonly frameSwaps: ReadonlyMap<string, readonly SwapPair[]>;
  /**
   * The agent sent a real value (closed with 1008): `dlp`; another agent's dummy: `foreign-dummy`;
   * the upstream sent a real value (redacted): `reflection`.
   */
  readonly onViolation: (kind: "dlp" | "reflection" | "foreign-dummy", count: number) => void;
  /** Once both sides are closed: what passed, for the audit line and metrics. */
  readonly onClose: (stats: WsStats) => void;
  /** A side stopped taking bytes: `shed` closes the WebSocket (guard/stall-registry.ts). */
  readonly stalled?: (shed: () => void) => Stall;
}

/**
 * What the relay scans with. A message of up to 64 KiB is scanned whole (one engine call, no
 * allocation when clean); a larger one through a stream, opened once it outgrows that.
 */
export interface WsScanner {
  whole(payload: Uint8Array): { output: Uint8Array; replacements: number };
  stream(): MatchStream;
  /** Counts other agents' dummies in what this agent sends (never swapped); null: none. */
  readonly foreign: {
    whole(payload: Uint8Array): number;
    stream(): MatchCounter;
  } | null;
}

/** At most this many messages and control frames per side per window are read (20,000/s). */
const PACE_MESSAGES = 2_000;
const PACE_WINDOW_MS = 100;

/** Jobs a side may have waiting before the relay stops reading it. */
const MAX_QUEUED = 2;
/**
 * A message up to this size is held and scanned whole (and an agent's text message read for
 * its frame surfaces); a larger one streams, its scanned bytes leaving in fragments of this size.
 */
const WHOLE_BYTES = 64 * 1024;

export interface WsStats {
  framesFromAgent: number;
  framesFromUpstream: number;
  bytesFromAgent: number;
  bytesFromUpstream: number;
  redactions: number;
  /** Dummies swapped in the agent's messages (frame surfaces). */
  swaps: number;
  /** Other agents' dummies seen in the agent's messages. */
  foreignDummies: number;
  /** Close codes as sent by each side (or by the proxy in its place); null: none. */
  agentClose: number | null;
  upstreamClose: number | null;
  /** Why the proxy closed it, when it did. */
  reason: string | null;
}

/** After a close frame, how long the other side has to answer with its own. */
const CLOSE_GRACE_MS = 5_000;

/** A data message on its way through the proxy. */
interface Message {
  readonly opcode: number;
  /** Its payload is compressed: the side's inflater reads it. */
  readonly compressed: boolean;
  /** Plaintext held while the message is small enough to scan whole. */
  readonly held: Gather;
  /** Opened once the message outgrows WHOLE_BYTES (never at its head: heads come faster than jobs run). */
  scan: MatchStream | null;
  foreign: MatchCounter | null;
  /** A streamed text message's UTF-8 check, across its fragments. */
  utf8: TextDecoder | null;
  /** Replacements already reported. */
  reported: number;
  /** Plaintext bytes so far (the cap); the inflater counts a compressed one's. */
  size: number;
  /** Scanned output not yet sent. */
  readonly pending: Gather;
  /** A first fragment has been sent (the rest are continuations). */
  started: boolean;
}

interface Side {
  readonly name: "agent" | "upstream";
  readonly socket: Duplex;
  readonly carrier: Duplex | null;
  readonly reader: FrameReader;
  readonly inflater: MessageInflater | null;
  /** How the proxy may compress toward this side. */
  readonly terms: DeflateTerms | null;
  message: Message | null;
  control: { opcode: number; parts: Uint8Array[] } | null;
  /** It sent its close frame; the proxy sent one to it. */
  closed: boolean;
  closeSent: boolean;
  /** What it sent, scanned and passed on in order. */
  queue: Promise<void>;
  queued: number;
  /** It is not taking bytes: registered with the memory guard until it does again. */
  stall: Stall | null;
  /** When it last sent anything; the proxy's ping awaiting its pong, and when it was sent. */
  heard: number;
  ping: { payload: Uint8Array; at: number } | null;
  /** Messages and control frames in the current pacing window; not read until `pacedUntil`. */
  windowStart: number;
  frames: number;
  pacedUntil: number;
}

/** Bytes a tunnel's carrier may hold before the relay stops reading the other side. */
const CARRIER_HIGH_WATER = 128 * 1024;
const CARRIER_POLL_MS = 20;
const UTF8 = new TextDecoder("utf-8", { fatal: true });

/**
 * Bytes gathered into one buffer that doubles as it fills: a message sent a byte per frame
 * costs its bytes, not an object per frame. `take` hands the bytes over; `wipe` zeroes them.
 */
class Gather {
  #buf = new Uint8Array(0);
  size = 0;

  add(piece: Uint8Array): void {
    const need = this.size + piece.length;
    if (need > this.#buf.length) {
      const grown = new Uint8Array(Math.max(need, this.#buf.length * 2, 1024));
      grown.set(this.#buf.subarray(0, this.size));
      this.#buf.fill(0);
      this.#buf = grown;
    }
    this.#buf.set(piece, this.size);
    this.size = need;
  }

  take(): Uint8Array {
    const out = this.#buf.subarray(0, this.size);
    this.#buf = new Uint8Array(0);
    this.size = 0;
    return out;
  }

  wipe(): void {
    this.#buf.fill(0);
    this.#buf = new Uint8Array(0);
    this.size = 0;
  }
}

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
    swaps: 0,
    foreignDummies: 0,
    agentClose: null,
    upstreamClose: null,
    reason: null,
  };
  const side = (name: Side["name"], conn: SwitchedConnection): Side => {
    const peer = opts.deflate[name];
    return {
      name,
      socket: conn.socket,
      carrier: conn.carrier ?? null,
      reader: new FrameReader({
        from: name === "agent" ? "client" : "server",
        maxFrameBytes: opts.maxMessageBytes,
        deflate: peer !== null,
      }),
      inflater: peer ? new MessageInflater(peer.peerTakeover, opts.maxMessageBytes) : null,
      terms: peer,
      message: null,
      control: null,
      closed: false,
      closeSent: false,
      queue: Promise.resolve(),
      queued: 0,
      stall: null,
      heard: performance.now(),
      ping: null,
      windowStart: 0,
      frames: 0,
      pacedUntil: 0,
    };
  };
  const a = side("agent", agent);
  const u = side("upstream", upstream);
  const other = (s: Side) => (s === a ? u : a);
  let ended = false;
  let active = performance.now();
  let ticker: ReturnType<typeof setInterval> | undefined;
  let grace: ReturnType<typeof setTimeout> | undefined;

  /** A frame to `to`: masked toward the upstream (the proxy is its client), not toward the agent. */
  const send = (
    to: Side,
    head: { fin: boolean; opcode: number; rsv1?: boolean },
    payload: Uint8Array,
  ): void => {
    if (to.socket.destroyed || !to.socket.writable || to.closeSent) return;
    if (head.opcode === OP.close) to.closeSent = true;
    to.socket.write(encodeFrame(head, payload, to === u ? randomBytes(4) : undefined));
  };

  const full = (to: Side) =>
    to.socket.writableNeedDrain ||
    (to.carrier !== null && to.carrier.writableLength > CARRIER_HIGH_WATER);

  /**
   * Resolves once `to` (and its tunnel's carrier) takes bytes again. Meanwhile `to` is a stall
   * the memory guard may shed, as an HTTP answer's reader is.
   */
  const writable = (to: Side): Promise<void> | undefined => {
    if (!full(to)) return undefined;
    if (to.stall) to.stall.again();
    else
      to.stall =
        opts.stalled?.(() => {
          closeBoth(CLOSE.goingAway, "shed under memory pressure");
          to.socket.destroy();
        }) ?? null;
    return new Promise<void>((done) => {
      let last = to.carrier?.writableLength ?? 0;
      const wait = () => {
        const held = to.carrier?.writableLength ?? 0;
        if (held < last) to.stall?.progress();
        last = held;
        if (!ended && !to.socket.destroyed && full(to)) {
          if (!to.socket.writableNeedDrain) setTimeout(wait, CARRIER_POLL_MS).unref?.();
          else to.socket.once("drain", wait);
          return;
        }
        to.socket.off("drain", wait);
        to.socket.off("close", wait);
        to.stall?.end();
        done();
      };
      to.socket.once("close", wait);
      if (to.socket.writableNeedDrain) to.socket.once("drain", wait);
      else setTimeout(wait, CARRIER_POLL_MS).unref?.();
    });
  };

  const end = (reason: string | null): void => {
    if (ended) return;
    ended = true;
    clearInterval(ticker);
    clearTimeout(grace);
    if (reason && stats.reason === null) stats.reason = reason;
    for (const s of [a, u]) {
      s.stall?.close();
      s.stall = null;
      s.message = null;
      s.socket.off("data", s === a ? onAgent : onUpstream);
      s.socket.end();
      setTimeout(() => s.socket.destroy(), CLOSE_GRACE_MS).unref?.();
    }
    // Every message still on its way — queued behind a slow side, or cut — lets go of its scan.
    for (const m of [...live]) drop(m);
    state.replaced.removeEventListener("abort", onReplaced);
    release();
    opts.onClose(stats);
  };

  /** The proxy closes both sides: `code` to each (the offender's own code to it). */
  const closeBoth = (code: number, reason: string, toAgent = code, toUpstream = code): void => {
    if (ended) return;
    if (!a.closeSent) {
      send(a, { fin: true, opcode: OP.close }, closePayload(toAgent, reason));
      stats.agentClose ??= toAgent;
    }
    if (!u.closeSent) {
      send(u, { fin: true, opcode: OP.close }, closePayload(toUpstream, reason));
      stats.upstreamClose ??= toUpstream;
    }
    end(reason);
  };

  /** Idle (no message either way) and ping deadlines, checked a few times per period. */
  const tick = () => {
    if (ended) return;
    const now = performance.now();
    if (now - active >= opts.idleMs) {
      closeBoth(CLOSE.goingAway, "idle");
      return;
    }
    for (const s of [a, u]) {
      // A side whose bytes the relay is still working through is not silent: it is not read
      // while the other side is slow, and its answer may be among them.
      if (s.queued > 0) {
        s.heard = now;
        if (s.ping) s.ping.at = now;
        continue;
      }
      if (s.ping) {
        if (now - s.ping.at >= opts.pingMs) {
          closeBoth(CLOSE.goingAway, `${s.name} did not answer a ping`);
          return;
        }
      } else if (now - s.heard >= opts.pingMs && !s.closeSent) {
        s.ping = { payload: randomBytes(8), at: now };
        send(s, { fin: true, opcode: OP.ping }, s.ping.payload);
      }
    }
  };

  /**
   * A payload from `from` made fit for the other side: the agent's must carry no real value
   * (null: a violation, already acted on), the upstream's has every real value redacted.
   */
  const fit = (from: Side, payload: Uint8Array): Uint8Array | null => {
    if (payload.length === 0) return payload;
    const r = opts.scanner.whole(payload);
    return passes(from, r.output, r.replacements) ? r.output : null;
  };

  /**
   * `found` real values in `out`, what `from` sent once scanned: from the agent a violation
   * (`out` zeroed, false: nothing passes), from the upstream a reflection (redacted, it passes).
   */
  const passes = (from: Side, out: Uint8Array, found: number): boolean => {
    if (found === 0) return true;
    if (from === a) {
      out.fill(0);
      violation();
      return false;
    }
    stats.redactions += found;
    opts.onViolation("reflection", found);
    return true;
  };

  const onControl = (from: Side, opcode: number, payload: Uint8Array): void => {
    const to = other(from);
    if (opcode === OP.pong && from.ping && Buffer.from(payload).equals(from.ping.payload)) {
      from.ping = null; // the answer to the proxy's own ping
      return;
    }
    active = performance.now();
    if (opcode === OP.close) {
      const { code, reason } = readClose(payload);
      from.closed = true;
      if (from === a) stats.agentClose = code ?? 1005;
      else stats.upstreamClose = code ?? 1005;
      const text = reason === "" ? new Uint8Array(0) : fit(from, new TextEncoder().encode(reason));
      if (text === null || ended) return;
      const body =
        code === null ? new Uint8Array(0) : closePayload(code, new TextDecoder().decode(text));
      send(to, { fin: true, opcode: OP.close }, body);
      // Over once each side has sent its close and been sent one.
      if (a.closed && u.closed && a.closeSent && u.closeSent) end(null);
      else {
        clearTimeout(grace);
        grace = setTimeout(() => end("close not answered"), CLOSE_GRACE_MS);
      }
      return;
    }
    const out = fit(from, payload);
    if (out !== null && !ended) send(to, { fin: true, opcode }, out);
  };

  /** Messages begun and not yet scanned to their end: each is let go of when the relay ends. */
  const live = new Set<Message>();

  const begin = (opcode: number, compressed: boolean): Message => {
    const m: Message = {
      opcode,
      compressed,
      held: new Gather(),
      scan: null,
      foreign: null,
      utf8: null,
      reported: 0,
      size: 0,
      pending: new Gather(),
      started: false,
    };
    live.add(m);
    return m;
  };

  const drop = (m: Message): void => {
    live.delete(m);
    m.scan?.abort();
    m.foreign?.abort();
    m.pending.wipe();
    m.held.wipe();
  };

  /**
   * Plaintext of the message: held while it is small, then through a stream of its own; what
   * the stream has scanned leaves in fragments.
   */
  const through = async (from: Side, m: Message, piece: Uint8Array): Promise<void> => {
    if (!m.compressed) {
      m.size += piece.length;
      if (m.size > opts.maxMessageBytes) throw new WsProtocolError(CLOSE.tooBig, "message too big");
    }
    if (!m.scan) {
      if (m.held.size + piece.length <= WHOLE_BYTES) {
        m.held.add(piece);
        return;
      }
      // Too large to hold: a stream from here on, shown what was held first.
      m.scan = opts.scanner.stream();
      m.foreign = from === a ? (opts.scanner.foreign?.stream() ?? null) : null;
      if (m.held.size > 0 && !pushed(from, m, m.held.take())) return;
    }
    if (!pushed(from, m, piece)) return;
    if (m.pending.size >= WHOLE_BYTES) await flush(from, m, false);
  };

  const pushed = (from: Side, m: Message, piece: Uint8Array): boolean => {
    m.foreign?.push(piece);
    const out = m.scan!.push(piece);
    return scanned(from, m, out, m.scan!.replacements);
  };

  /**
   * Takes scanned output (`total`: the message's replacements so far): false when the agent's
   * message held a real value (acted on).
   */
  const scanned = (from: Side, m: Message, out: Uint8Array, total: number): boolean => {
    const found = total - m.reported;
    m.reported = total;
    if (!passes(from, out, found)) return false;
    if (out.length > 0) m.pending.add(out);
    return true;
  };

  /** What the message has scanned leaves for the other side, as a fragment or its last frame. */
  const flush = async (from: Side, m: Message, fin: boolean): Promise<void> => {
    if (ended) return;
    const to = other(from);
    let payload = m.pending.take();
    if (m.opcode === OP.text) {
      try {
        if (!fin) {
          m.utf8 ??= new TextDecoder("utf-8", { fatal: true });
          m.utf8.decode(payload, { stream: true });
        } else (m.utf8 ?? UTF8).decode(payload);
      } catch {
        throw new WsProtocolError(CLOSE.invalidPayload, "text message not UTF-8");
      }
    }
    let rsv1 = false;
    // A message that leaves in one frame is compressed where the peer agreed to it.
    if (fin && !m.started && to.terms?.ownBits && payload.length >= DEFLATE_THRESHOLD) {
      const z = deflateMessage(payload, to.terms.ownBits);
      if (z) {
        payload = z;
        rsv1 = true;
      }
    }
    send(to, { fin, opcode: m.started ? OP.continuation : m.opcode, rsv1 }, payload);
    m.started = true;
    await writable(to);
  };

  /** The agent's whole text message with its frame surfaces swapped (JSON pointers). */
  const swapped = (payload: Uint8Array): Uint8Array => {
    const text = Buffer.from(payload.buffer, payload.byteOffset, payload.length).toString("latin1");
    const r = swapJsonStrings(text, opts.frameSwaps);
    if (r.swapped.length === 0) return payload;
    stats.swaps += r.swapped.length;
    return Buffer.from(r.text, "latin1");
  };

  const onData = async (from: Side, m: Message, bytes: Uint8Array): Promise<void> => {
    if (!m.compressed) return through(from, m, bytes);
    for (const piece of from.inflater!.push(bytes)) {
      await through(from, m, piece);
      if (ended) return;
    }
  };

  const onEnd = async (from: Side, m: Message): Promise<void> => {
    if (m.compressed) {
      for (const piece of from.inflater!.end()) {
        await through(from, m, piece);
        if (ended) return;
      }
    }
    let foreign: number;
    if (m.scan) {
      if (!scanned(from, m, m.scan.end(), m.scan.replacements)) return;
      foreign = m.foreign?.end() ?? 0;
      m.foreign = null;
    } else {
      // Held whole: one engine pass; an agent's text message is read for its frame surfaces.
      const payload = m.held.take();
      foreign = from === a ? (opts.scanner.foreign?.whole(payload) ?? 0) : 0;
      const r =
        payload.length > 0 ? opts.scanner.whole(payload) : { output: payload, replacements: 0 };
      if (!scanned(from, m, r.output, r.replacements)) return;
      if (from === a && m.opcode === OP.text && opts.frameSwaps.size > 0 && m.pending.size > 0) {
        m.pending.add(swapped(m.pending.take()));
      }
    }
    live.delete(m);
    if (foreign > 0) {
      stats.foreignDummies += foreign;
      opts.onViolation("foreign-dummy", foreign);
    }
    await flush(from, m, true);
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
  const enqueue = (from: Side, job: () => void | Promise<void>): void => {
    from.queued += 1;
    if (from.queued > MAX_QUEUED) from.socket.pause();
    from.queue = from.queue
      .then(() => (ended ? undefined : job()))
      .catch((e) => failed(from, e))
      .finally(() => {
        from.queued -= 1;
        if (from.queued <= MAX_QUEUED && !ended && performance.now() >= from.pacedUntil) {
          from.socket.resume();
        }
      });
  };

  /**
   * A side that sends more than PACE_MESSAGES messages and control frames in a PACE_WINDOW_MS
   * is not read until the window ends: each costs a scan and a job, and one agent's flood of
   * empty frames must not take the thread from the others.
   */
  const pace = (from: Side, now: number): void => {
    if (now - from.windowStart >= PACE_WINDOW_MS) {
      from.windowStart = now;
      from.frames = 0;
    }
    if (++from.frames !== PACE_MESSAGES) return;
    from.pacedUntil = from.windowStart + PACE_WINDOW_MS;
    from.socket.pause();
    setTimeout(
      () => {
        if (!ended && from.queued <= MAX_QUEUED) from.socket.resume();
      },
      Math.max(0, from.pacedUntil - now),
    ).unref?.();
  };

  const feed = (from: Side, bytes: Uint8Array): void => {
    if (ended) return;
    const now = performance.now();
    from.heard = now;
    if (from === a) stats.bytesFromAgent += bytes.length;
    else stats.bytesFromUpstream += bytes.length;
    // The data of one message that came in this read, passed on as one job.
    let batch = null as { m: Message; parts: Uint8Array[]; n: number } | null;
    const release = () => {
      if (!batch) return;
      const { m, parts, n } = batch;
      batch = null;
      const bytes = parts.length === 1 ? parts[0]! : Buffer.concat(parts, n);
      enqueue(from, () => onData(from, m, bytes));
    };
    try {
      for (const e of from.reader.push(bytes)) {
        if (ended) return;
        if (from.closed) throw new WsProtocolError(CLOSE.protocolError, "frame after close");
        if (e.type === "head") {
          if (from === a) stats.framesFromAgent += 1;
          else stats.framesFromUpstream += 1;
          const op = e.head.opcode;
          if (isControl(op)) {
            from.control = { opcode: op, parts: [] };
            pace(from, now);
          } else {
            active = now;
            if (op !== OP.continuation) {
              from.message = begin(op, e.head.rsv1);
              pace(from, now);
            }
          }
          continue;
        }
        if (e.type === "data") {
          if (from.control) from.control.parts.push(e.bytes);
          else {
            const m = from.message!;
            if (batch?.m !== m) {
              release();
              batch = { m, parts: [], n: 0 };
            }
            batch.parts.push(e.bytes);
            batch.n += e.bytes.length;
          }
          continue;
        }
        // The end of a frame.
        if (from.control) {
          const c = from.control;
          from.control = null;
          const payload = Buffer.concat(c.parts);
          release();
          enqueue(from, () => onControl(from, c.opcode, payload));
        } else if (e.head.fin) {
          const m = from.message!;
          from.message = null;
          release();
          enqueue(from, () => onEnd(from, m));
        }
      }
      release();
    } catch (e) {
      failed(from, e);
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
  ticker = setInterval(tick, Math.max(10, Math.min(opts.idleMs, opts.pingMs) / 4));
  ticker.unref?.();
  if (agent.leftover.length > 0) feed(a, agent.leftover);
  if (upstream.leftover.length > 0) feed(u, upstream.leftover);
  a.socket.resume();
  u.socket.resume();
}
