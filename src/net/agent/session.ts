// Serves HTTP/1.1 on one agent-facing byte stream: the outer mTLS connection (CONNECT and
// absolute-form requests) or the decrypted inside of an intercepted tunnel. It hands each
// request (head + streaming body) to a handler in order, writes the handler's answer with the
// proxy's own framing, and enforces the proxy's deadlines. It must never serve a request after a
// malformed one, never forward a body the parser did not accept, and never end a response
// cleanly when its body failed: the connection is destroyed instead, so the agent sees an error
// rather than a truncated-but-complete message.

import type { Duplex } from "node:stream";
import type { Stall } from "../../guard/stall-registry.ts";
import { errorAnswerBytes, reasonPhrase } from "../../http/error-answer.ts";
import { framingFields, outgoingFraming } from "../../http/framing.ts";
import { stripHopByHop } from "../../http/hop-by-hop.ts";
import type { ParseFailure } from "../../http/http-error.ts";
import type { IncomingRequest, OutgoingResponse } from "../../http/message.ts";
import { codeForRejectStatus, ProxyError } from "../../http/proxy-error.ts";
import { type RequestHead, RequestParser } from "../../http/request-parser.ts";
import { serializeResponseHead } from "../../http/serialize.ts";
import { Deadline } from "../deadline.ts";
import { waitForDrain } from "../drain.ts";
import { Http1Connection, IncomingBody, type ParseEvent } from "../http1-connection.ts";

export interface SessionLimits {
  readonly maxHeaderBytes: number;
  readonly maxHeaderCount: number;
  /** From the first byte of a request to the end of its head (slowloris). */
  readonly headerTimeoutMs: number;
  /** Between requests on a kept-alive connection. */
  readonly idleTimeoutMs: number;
  /** Longest wait for the next request-body chunk, or for the agent to take response bytes. */
  readonly bodyIdleTimeoutMs: number;
}

/** What a handler does with a request: answer it, or take the socket over (CONNECT). */
export type HandlerResult =
  | { readonly kind: "response"; readonly response: OutgoingResponse }
  | { readonly kind: "took-over" };

export interface SessionHooks {
  handle(req: IncomingRequest, session: HttpSession): Promise<HandlerResult>;
  /** A request the parser refused (already answered with its status); for the audit log. */
  rejected(failure: ParseFailure): void;
  /**
   * A write is waiting for the agent to take bytes; `shed` closes the connection (memory
   * pressure, see guard/memory-guard.ts). The returned stall hears of progress and of the end.
   */
  stalled?(shed: () => void): Stall;
}

const RESOLVED: Promise<void> = Promise.resolve();
const CONTINUE = new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n");
/**
 * Bytes the carrier may hold before writes wait for it (a few TLS records' worth at speed).
 * An agent that stops reading keeps this much per tunnel: 512 KiB made 64 stalled tunnels of
 * one agent take ~25 MiB here; 128 KiB streams as fast (bench/memory-limit.bench.ts).
 */
const CARRIER_HIGH_WATER = 128 * 1024;
/** Re-check interval while waiting on a carrier, in case it drains without saying so. */
const CARRIER_POLL_MS = 20;

interface Pending {
  readonly req: IncomingRequest;
  readonly body: IncomingBody | null;
  settle(ok: boolean): void;
}

export class HttpSession extends Http1Connection<RequestHead> {
  readonly #carrier: Duplex | null;
  /** This connection as a stall, kept between its waits (stall-registry.ts: LINGER_MS). */
  #stall: Stall | null = null;
  readonly #hooks: SessionHooks;
  readonly #limits: SessionLimits;
  readonly #queue: Pending[] = [];
  /** The request whose body is being received. */
  #receiving: Pending | null = null;
  #wake: (() => void) | null = null;
  #failure: ParseFailure | null = null;
  #closed = false;
  #detached = false;
  /** Aborted when the connection closes: every request on it hears that its agent left. */
  readonly #gone = new AbortController();
  readonly #deadline = new Deadline(() => this.#expired());
  #wasIdle = true;

  /**
   * @param carrier the connection `socket` is layered on, when it is one (the outer mTLS
   *   connection under a tunnel's TLS). Writes also wait for the carrier to drain: the
   *   runtime's TLS-over-a-stream layer pushes ciphertext into its carrier without honouring
   *   the carrier's backpressure, so without this a fast upstream and a slower agent grow the
   *   carrier's write buffer without bound (measured: 112 MiB during a 256 MiB download).
   */
  constructor(socket: Duplex, hooks: SessionHooks, limits: SessionLimits, carrier?: Duplex) {
    super(
      socket,
      new RequestParser({
        maxHeaderBytes: limits.maxHeaderBytes,
        maxHeaderCount: limits.maxHeaderCount,
      }),
    );
    this.#carrier = carrier ?? null;
    this.#hooks = hooks;
    this.#limits = limits;
  }

  get requestParser(): RequestParser {
    return this.parser as RequestParser;
  }

  /** Start reading; resolves when the session ends (closed, failed or taken over). */
  run(): Promise<void> {
    this.listen();
    this.#deadline.set(this.#limits.idleTimeoutMs);
    return this.#loop().finally(() => {
      this.#stall?.close();
      this.#stall = null;
    });
  }

  /**
   * Stop serving HTTP on this socket and take the bytes already received after the paused
   * request (CONNECT). The caller owns the socket afterwards.
   */
  detach(): Uint8Array {
    this.#detached = true;
    this.#deadline.clear();
    this.unlisten();
    return this.requestParser.detach();
  }

  /** Close the connection now (an unrecoverable error on this connection). */
  destroy(): void {
    this.#closed = true;
    this.#deadline.clear();
    this.socket.destroy();
    this.#notify();
  }

  /** The socket this session serves (the listener takes it over for a tunnel). */
  get connection(): Duplex {
    return this.socket;
  }

  /** Write bytes before taking the socket over (a CONNECT's 200). */
  send(bytes: Uint8Array): Promise<void> {
    return this.write(bytes);
  }

  // --- reading ---------------------------------------------------------------------------

  protected override accepting(): boolean {
    return !this.#closed;
  }

  protected override beforeFeed(): void {
    this.#wasIdle = this.requestParser.state === "idle";
  }

  protected override parsed(): void {
    // A request begun is timed from its first byte (slowloris); the head, once complete,
    // sets the deadline its body needs (or none) when it is dispatched.
    if (
      this.#wasIdle &&
      (this.requestParser.state as string) === "message" &&
      this.#receiving === null
    ) {
      this.#deadline.set(this.#limits.headerTimeoutMs);
    }
  }

  protected override afterFeed(): void {
    // Pipelined requests beyond the one being served wait in the parser's input, not here;
    // after an upgrade request nothing more is read until its answer says what follows.
    const upgrading =
      this.requestParser.state === "paused" && this.#queue.at(-1)?.req.head.upgrade !== undefined;
    if (this.#queue.length > 1 || upgrading) this.socket.pause();
  }

  protected onHead(head: RequestHead): void {
    let settle!: (ok: boolean) => void;
    const bodyDone = new Promise<boolean>((r) => {
      settle = r;
    });
    let body: IncomingBody | null = null;
    if (head.framing.kind !== "none") {
      body = new IncomingBody({
        pulled: () => {
          if (this.#closed) return;
          if (this.#receiving?.body === body) this.#deadline.set(this.#limits.bodyIdleTimeoutMs);
          if (this.#queue.length <= 1) this.socket.resume();
        },
        cancelled: () => settle(false),
      });
    } else {
      settle(true);
    }
    let continued = !head.expectContinue || body === null;
    const req: IncomingRequest = {
      head,
      body: body?.stream ?? null,
      bodyDone,
      signal: this.#gone.signal,
      sendContinue: () => {
        if (continued) return RESOLVED;
        continued = true;
        // The proxy reads the body itself; tell the agent to send it.
        return this.write(CONTINUE).catch(() => {});
      },
    };
    const p: Pending = { req, body, settle };
    if (body) {
      this.#receiving = p;
      this.#deadline.set(this.#limits.bodyIdleTimeoutMs);
    } else {
      this.#deadline.clear();
    }
    this.#queue.push(p);
    this.#notify();
  }

  protected onBody(data: Uint8Array): void {
    const r = this.#receiving;
    if (!r?.body) return;
    this.#deadline.set(this.#limits.bodyIdleTimeoutMs);
    if (!r.body.push(data)) {
      // The proxy is not taking more (its upstream is slow): the agent is not idle, so its body
      // deadline waits until the body is pulled again.
      this.socket.pause();
      this.#deadline.clear();
    }
  }

  protected onMessageEnd(): void {
    const r = this.#receiving;
    this.#receiving = null;
    if (r) {
      r.body?.end();
      r.settle(true);
    }
    this.#deadline.clear();
  }

  protected onParseError(f: ParseFailure): void {
    this.#failure = f;
    this.#failReceiving(new ProxyError("bad-request", f.reason));
    this.socket.pause();
    this.#notify();
  }

  protected onEof(events: readonly ParseEvent<RequestHead>[]): void {
    for (const ev of events) if (ev.type === "error") this.onParseError(ev.error);
    this.#failReceiving(new ProxyError("agent-gone", "agent closed the connection mid-body"));
    // A half-closed agent gets the answers it is owed, then the connection ends (the listener
    // allows half-open connections; a tunnel's TLS cannot stay half-open, see tunnel.ts).
    this.#closed = this.#queue.length === 0 && this.#failure === null;
    if (this.#closed) this.socket.end();
    this.#notify();
  }

  protected onGone(): void {
    this.#closed = true;
    this.#deadline.clear();
    this.#gone.abort();
    this.#failReceiving(new ProxyError("agent-gone", "agent connection closed"));
    this.#notify();
  }

  #failReceiving(err: ProxyError): void {
    const r = this.#receiving;
    if (!r) return;
    this.#receiving = null;
    r.body?.fail(err);
    r.settle(false);
  }

  // --- serving ---------------------------------------------------------------------------

  #notify(): void {
    const w = this.#wake;
    this.#wake = null;
    w?.();
  }

  async #next(): Promise<Pending | null> {
    for (;;) {
      if (this.#queue.length > 0) return this.#queue[0]!;
      if (this.#closed || this.#failure || this.requestParser.state === "closed") return null;
      await new Promise<void>((r) => {
        this.#wake = r;
      });
    }
  }

  async #loop(): Promise<void> {
    try {
      for (;;) {
        const p = await this.#next();
        if (!p) break;
        const result = await this.#hooks.handle(p.req, this);
        if (result.kind === "took-over") {
          this.#queue.length = 0;
          return;
        }
        if (result.response.takeOver && result.response.status === 101) {
          await this.#switchProtocols(result.response);
          this.#queue.length = 0;
          return;
        }
        const ok = await this.#respond(p, result.response);
        this.#queue.shift();
        if (!ok || this.#closed) break;
        this.#deadline.set(this.#limits.idleTimeoutMs);
        if (!this.#closed && this.#queue.length <= 1) this.socket.resume();
      }
      if (this.#failure && !this.#closed) {
        const f = this.#failure;
        this.#hooks.rejected(f);
        await this.write(
          errorAnswerBytes(new ProxyError(codeForRejectStatus(f.status), f.reason)),
        ).catch(() => {});
      }
    } catch {
      // An unexpected failure on this connection: drop it, keep serving everyone else.
    } finally {
      if (!this.#detached) this.#finish();
    }
  }

  #finish(): void {
    this.#deadline.clear();
    if (!this.socket.destroyed) this.socket.end();
    // A peer that never reads its last bytes must not hold the socket forever.
    setTimeout(() => this.socket.destroy(), 2_000).unref?.();
  }

  /** Write one response; false when the connection must not carry another. */
  async #respond(p: Pending, res: OutgoingResponse): Promise<boolean> {
    const head = p.req.head;
    const bodyComplete = p.req.body === null || (await settledNow(p.req.bodyDone)) === true;
    // A request whose body was not read whole cannot be followed by another on this
    // connection: its remaining bytes are still in the way.
    // After an upgrade request the parser waits to be told what the bytes that follow are: an
    // answer that did not switch protocols ends the connection.
    let keepAlive =
      head.keepAlive &&
      !res.close &&
      bodyComplete &&
      !this.#failure &&
      !this.#closed &&
      head.upgrade === undefined;
    const headers = stripHopByHop(res.headers);
    // An answer to HEAD, and a 1xx, 204 or 304, never carries a body (RFC 9110 6.4.1), whoever
    // built it: its fields are sent as given.
    const bodiless = head.method === "HEAD" || noBodyStatus(res.status);
    const whole = res.body instanceof Uint8Array ? res.body : null;
    const stream = res.body instanceof ReadableStream ? res.body : null;
    let framing: ReturnType<typeof outgoingFraming> = { kind: "none" };
    if (!bodiless) {
      framing = outgoingFraming(
        whole
          ? { kind: "held", length: whole.length }
          : stream
            ? { kind: "stream", length: null }
            : { kind: "none" },
        head.version === "1.1" ? "agent-1.1" : "agent-1.0",
      );
      for (let i = headers.length - 1; i >= 0; i--) {
        if (headers[i]![0].toLowerCase() === "content-length") headers.splice(i, 1);
      }
      headers.push(...framingFields(framing));
    }
    if (framing.kind === "close") keepAlive = false;
    if (!keepAlive) headers.push(["connection", "close"]);
    let headBytes: Uint8Array;
    try {
      headBytes = serializeResponseHead({
        status: res.status,
        reason: res.reason ?? reasonPhrase(res.status),
        headers,
      });
    } catch {
      return this.#abandon(res, stream);
    }
    if (bodiless || !stream) {
      try {
        await this.writeWhole(headBytes, bodiless ? null : whole);
      } catch {
        return this.#abandon(res, stream);
      }
      await stream?.cancel().catch(() => {});
      res.settled?.(true);
      return keepAlive;
    }
    try {
      await this.write(headBytes);
      await this.writeBody(stream, framing);
    } catch {
      // The body failed (upstream died, scan failed) or the agent stopped reading: never end
      // the response cleanly. Destroying the connection makes the agent see an error.
      return this.#abandon(res, stream);
    }
    res.settled?.(true);
    return keepAlive;
  }

  /**
   * A 101: its head written with the fields that switch the connection, the session stops
   * reading HTTP and the connection — with any bytes the agent sent past its request — goes
   * to the answer's new owner (a WebSocket relay).
   */
  async #switchProtocols(res: OutgoingResponse): Promise<void> {
    let head: Uint8Array;
    try {
      head = serializeResponseHead({
        status: 101,
        reason: res.reason ?? reasonPhrase(101),
        headers: [
          ...stripHopByHop(res.headers),
          ["connection", "upgrade"],
          ["upgrade", "websocket"],
        ],
      });
      await this.write(head);
    } catch {
      res.settled?.(false);
      this.destroy();
      return;
    }
    res.settled?.(true);
    this.socket.pause();
    const leftover = this.detach();
    res.takeOver!({
      socket: this.socket,
      leftover,
      ...(this.#carrier ? { carrier: this.#carrier } : {}),
    });
  }

  #abandon(res: OutgoingResponse, stream: ReadableStream<Uint8Array> | null): false {
    this.destroy();
    stream?.cancel().catch(() => {});
    res.settled?.(false);
    return false;
  }

  /**
   * Write with backpressure; a peer that does not take the bytes in time is dropped.
   * `written` hears when the socket is done with `bytes` (true) or failed them (false).
   */
  protected write(bytes: Uint8Array, written?: (ok: boolean) => void): Promise<void> {
    const s = this.socket;
    if (s.destroyed || this.#closed) {
      written?.(false);
      return Promise.reject(new Error("socket closed"));
    }
    const ok = written ? s.write(bytes, (err) => written(!err)) : s.write(bytes);
    const c = this.#carrier;
    if (ok && (c === null || c.writableLength <= CARRIER_HIGH_WATER)) return RESOLVED;
    return this.#backpressure(ok);
  }

  async #backpressure(socketOk: boolean): Promise<void> {
    let stall = this.#stall;
    if (stall) stall.again();
    else stall = this.#stall = this.#hooks.stalled?.(() => this.#shed()) ?? null;
    try {
      if (!socketOk) {
        await this.#drained(this.socket);
        stall?.progress();
      }
      const c = this.#carrier;
      if (c === null) return;
      // The idle limit applies to progress: it restarts whenever the carrier's buffer shrank.
      let last = c.writableLength;
      let deadline = performance.now() + this.#limits.bodyIdleTimeoutMs;
      while (c.writableLength > CARRIER_HIGH_WATER) {
        if (c.destroyed || this.#closed) throw new Error("socket closed");
        const now = performance.now();
        if (c.writableLength < last) {
          deadline = now + this.#limits.bodyIdleTimeoutMs;
          stall?.progress();
        } else if (now > deadline) {
          this.socket.destroy();
          throw new Error("agent stopped reading");
        }
        last = c.writableLength;
        await this.#drained(c, CARRIER_POLL_MS);
      }
    } finally {
      if (this.#closed || this.socket.destroyed) {
        stall?.close();
        this.#stall = null;
      } else stall?.end();
    }
  }

  /** Closed under memory pressure: the tunnel's carrier too (closing the inside leaves it open). */
  #shed(): void {
    this.#carrier?.destroy();
    this.destroy();
  }

  /**
   * Resolves on `drain` (or after `pollMs`, for a stream whose buffer the caller re-checks);
   * rejects when the stream closes or the agent has not taken bytes for the body idle limit.
   */
  #drained(w: Duplex, pollMs?: number): Promise<void> {
    return waitForDrain(w, {
      timeoutMs: this.#limits.bodyIdleTimeoutMs,
      ...(pollMs !== undefined ? { pollMs } : {}),
      onTimeout: () => this.socket.destroy(),
      closedError: () => new Error("socket closed"),
      timeoutError: () => new Error("agent stopped reading"),
    });
  }

  // --- deadlines -------------------------------------------------------------------------

  #expired(): void {
    // Idle, slow head or slow body: drop the connection. An in-flight body errors, so the
    // upstream request is aborted rather than completed with a short body.
    this.#failReceiving(new ProxyError("agent-timeout", "request body timed out"));
    this.destroy();
  }
}

function noBodyStatus(status: number): boolean {
  return (status >= 100 && status < 200) || status === 204 || status === 304;
}

async function settledNow(p: Promise<boolean>): Promise<boolean | undefined> {
  return Promise.race([p, Promise.resolve(undefined)]);
}
