// Serves HTTP/1.1 on one agent-facing byte stream: the outer mTLS connection (CONNECT and
// absolute-form requests) or the decrypted inside of an intercepted tunnel. It feeds bytes to
// the strict parser, hands each request (head + streaming body) to a handler in order, writes
// the handler's response with the proxy's own framing, and enforces the proxy's deadlines.
// It must never serve a request after a malformed one, never forward a body the parser did not
// accept, and never end a response cleanly when its body failed: the connection is destroyed
// instead, so the agent sees an error rather than a truncated-but-complete message.

import type { Duplex } from "node:stream";
import { headFirst } from "../../body/held-buffers.ts";
import type { Stall } from "../../guard/memory-guard.ts";
import { ChunkedEncoder } from "../../http/chunked.ts";
import type { ParseFailure } from "../../http/http-error.ts";
import { ProxyError } from "../../http/proxy-error.ts";
import { type RequestHead, RequestParser } from "../../http/request-parser.ts";
import { serializeResponseHead, stripHopByHop } from "../../http/serialize.ts";
import { Deadline } from "../deadline.ts";
import { waitForDrain } from "../drain.ts";

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

export interface IncomingRequest {
  readonly head: RequestHead;
  /** null when the request has no body. */
  readonly body: ReadableStream<Uint8Array> | null;
  /** Resolves true once the body was received whole (false if it failed or was cut short). */
  readonly bodyDone: Promise<boolean>;
}

export interface OutgoingResponse {
  readonly status: number;
  readonly reason?: string;
  /** Header fields; hop-by-hop ones are removed and framing is set by the session. */
  readonly headers: readonly (readonly [string, string])[];
  /** A stream (sent chunked to HTTP/1.1 agents), or bytes held whole (one write, with length). */
  readonly body: ReadableStream<Uint8Array> | Uint8Array | null;
  /** Told once whether the response (head and body) was handed to the socket whole. */
  readonly settled?: (ok: boolean) => void;
  /** A response to HEAD, or 1xx/204/304: no body, framing fields kept as given. */
  readonly bodiless?: boolean;
  /** Close the connection after this response. */
  readonly close?: boolean;
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
   * pressure, see memory-guard.ts). The returned stall hears of progress and of the end.
   */
  stalled?(shed: () => void): Stall;
}

const CRLF = Uint8Array.of(13, 10);
const RESOLVED: Promise<void> = Promise.resolve();
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
  readonly ctrl: ReadableStreamDefaultController<Uint8Array> | null;
  settle(ok: boolean): void;
}

export class HttpSession {
  readonly #socket: Duplex;
  readonly #carrier: Duplex | null;
  readonly #parser: RequestParser;
  readonly #hooks: SessionHooks;
  readonly #limits: SessionLimits;
  readonly #queue: Pending[] = [];
  #receiving: Pending | null = null;
  #wake: (() => void) | null = null;
  #failure: ParseFailure | null = null;
  #closed = false;
  #detached = false;
  readonly #deadline = new Deadline(() => this.#expired());
  #onData = (d: Buffer) => this.#data(d);
  #onEnd = () => this.#eof();
  #onClose = () => this.#gone();

  /**
   * @param carrier the connection `socket` is layered on, when it is one (the outer mTLS
   *   connection under a tunnel's TLS). Writes also wait for the carrier to drain: the
   *   runtime's TLS-over-a-stream layer pushes ciphertext into its carrier without honouring
   *   the carrier's backpressure, so without this a fast upstream and a slower agent grow the
   *   carrier's write buffer without bound (measured: 112 MiB during a 256 MiB download).
   */
  constructor(socket: Duplex, hooks: SessionHooks, limits: SessionLimits, carrier?: Duplex) {
    this.#socket = socket;
    this.#carrier = carrier ?? null;
    this.#hooks = hooks;
    this.#limits = limits;
    this.#parser = new RequestParser({
      maxHeaderBytes: limits.maxHeaderBytes,
      maxHeaderCount: limits.maxHeaderCount,
    });
  }

  get socket(): Duplex {
    return this.#socket;
  }

  /** Start reading; resolves when the session ends (closed, failed or taken over). */
  run(): Promise<void> {
    this.#socket.on("data", this.#onData);
    this.#socket.on("end", this.#onEnd);
    this.#socket.on("close", this.#onClose);
    this.#socket.on("error", this.#onClose);
    this.#arm(this.#limits.idleTimeoutMs);
    return this.#loop();
  }

  /**
   * Stop serving HTTP on this socket and take the bytes already received after the paused
   * request (CONNECT). The caller owns the socket afterwards.
   */
  detach(): Uint8Array {
    this.#detached = true;
    this.#disarm();
    this.#socket.off("data", this.#onData);
    this.#socket.off("end", this.#onEnd);
    this.#socket.off("close", this.#onClose);
    this.#socket.off("error", this.#onClose);
    return this.#parser.detach();
  }

  /** Close the connection now (an unrecoverable error on this connection). */
  destroy(): void {
    this.#closed = true;
    this.#disarm();
    this.#socket.destroy();
    this.#notify();
  }

  // --- reading ---------------------------------------------------------------------------

  #data(chunk: Buffer): void {
    if (this.#closed) return;
    const wasIdle = this.#parser.state === "idle";
    const events = this.#parser.feed(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
    if (wasIdle && (this.#parser.state as string) === "message" && this.#receiving === null) {
      this.#arm(this.#limits.headerTimeoutMs);
    }
    for (const ev of events) {
      switch (ev.type) {
        case "head":
          this.#onHead(ev.head);
          break;
        case "body": {
          const r = this.#receiving;
          if (!r?.ctrl) break;
          this.#arm(this.#limits.bodyIdleTimeoutMs);
          try {
            r.ctrl.enqueue(ev.data);
          } catch {
            // The handler cancelled the body (e.g. it answered without reading it).
          }
          if ((r.ctrl.desiredSize ?? 1) <= 0) {
            // The proxy is not taking more (its upstream is slow): the agent is not idle, so
            // its body deadline waits until the body is pulled again.
            this.#socket.pause();
            this.#disarm();
          }
          break;
        }
        case "trailers":
          // Request trailers are dropped: nothing upstream may rely on fields the proxy
          // cannot scan in order (documented in docs/SECURITY.md).
          break;
        case "end": {
          const r = this.#receiving;
          this.#receiving = null;
          if (r) {
            try {
              r.ctrl?.close();
            } catch {}
            r.settle(true);
          }
          this.#disarm();
          break;
        }
        case "error":
          this.#protocolError(ev.error);
          return;
      }
    }
    // Pipelined requests beyond the one being served wait in the parser's input, not here.
    if (this.#queue.length > 1) this.#socket.pause();
  }

  #onHead(head: RequestHead): void {
    let ctrl: ReadableStreamDefaultController<Uint8Array> | null = null;
    let settle!: (ok: boolean) => void;
    const bodyDone = new Promise<boolean>((r) => {
      settle = r;
    });
    let body: ReadableStream<Uint8Array> | null = null;
    if (head.framing.kind !== "none") {
      body = new ReadableStream<Uint8Array>(
        {
          start: (c) => {
            ctrl = c;
          },
          pull: () => {
            if (this.#closed) return;
            if (this.#receiving?.ctrl === ctrl) this.#arm(this.#limits.bodyIdleTimeoutMs);
            if (this.#queue.length <= 1) this.#socket.resume();
          },
          cancel: () => {
            settle(false);
          },
        },
        // Counted in bytes, not chunks: a socket read can be 512 KiB, and a request body whose
        // upstream is slow holds this queue full for as long as it waits.
        { highWaterMark: 64 * 1024, size: (c) => c?.byteLength ?? 0 },
      );
    } else {
      settle(true);
    }
    const p: Pending = { req: { head, body, bodyDone }, ctrl, settle };
    if (body) {
      this.#receiving = p;
      this.#arm(this.#limits.bodyIdleTimeoutMs);
    } else {
      this.#disarm();
    }
    this.#queue.push(p);
    this.#notify();
  }

  #protocolError(f: ParseFailure): void {
    this.#failure = f;
    const r = this.#receiving;
    this.#receiving = null;
    if (r) {
      try {
        r.ctrl?.error(new ProxyError("bad-request", f.reason));
      } catch {}
      r.settle(false);
    }
    this.#socket.pause();
    this.#notify();
  }

  #eof(): void {
    const events = this.#parser.finish();
    for (const ev of events) if (ev.type === "error") this.#protocolError(ev.error);
    const r = this.#receiving;
    if (r) {
      this.#receiving = null;
      try {
        r.ctrl?.error(new ProxyError("bad-request", "agent closed the connection mid-body"));
      } catch {}
      r.settle(false);
    }
    // A half-closed agent gets the answers it is owed, then the connection ends (the listener
    // allows half-open connections; a tunnel's TLS cannot stay half-open, see front-door.ts).
    this.#closed = this.#queue.length === 0 && this.#failure === null;
    if (this.#closed) this.#socket.end();
    this.#notify();
  }

  #gone(): void {
    this.#closed = true;
    this.#disarm();
    const r = this.#receiving;
    this.#receiving = null;
    if (r) {
      try {
        r.ctrl?.error(new ProxyError("bad-request", "agent connection closed"));
      } catch {}
      r.settle(false);
    }
    this.#notify();
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
      if (this.#closed || this.#failure || this.#parser.state === "closed") return null;
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
        const ok = await this.#respond(p, result.response);
        this.#queue.shift();
        if (!ok || this.#closed) break;
        this.#arm(this.#limits.idleTimeoutMs);
        if (!this.#closed && this.#queue.length <= 1) this.#socket.resume();
      }
      if (this.#failure && !this.#closed) {
        const f = this.#failure;
        this.#hooks.rejected(f);
        await this.#writeAll(
          serializeResponseHead({
            status: f.status,
            reason: reasonPhrase(f.status),
            headers: [
              ["content-type", "text/plain; charset=utf-8"],
              ["content-length", String(Buffer.byteLength(`slapenir: ${f.reason}\n`))],
              ["connection", "close"],
            ],
          }),
        ).catch(() => {});
        await this.#writeAll(new TextEncoder().encode(`slapenir: ${f.reason}\n`)).catch(() => {});
      }
    } catch {
      // An unexpected failure on this connection: drop it, keep serving everyone else.
    } finally {
      if (!this.#detached) this.#finish();
    }
  }

  #finish(): void {
    this.#disarm();
    if (!this.#socket.destroyed) this.#socket.end();
    // A peer that never reads its last bytes must not hold the socket forever.
    setTimeout(() => this.#socket.destroy(), 2_000).unref?.();
  }

  /** Write one response; false when the connection must not carry another. */
  async #respond(p: Pending, res: OutgoingResponse): Promise<boolean> {
    const head = p.req.head;
    const bodyComplete = p.req.body === null || (await settledNow(p.req.bodyDone)) === true;
    // A request whose body was not read whole cannot be followed by another on this
    // connection: its remaining bytes are still in the way.
    const keepAlive =
      head.keepAlive && !res.close && bodyComplete && !this.#failure && !this.#closed;
    const headers: [string, string][] = stripHopByHop(res.headers);
    const whole = res.body instanceof Uint8Array ? res.body : null;
    const chunked = !res.bodiless && res.body !== null && !whole && head.version === "1.1";
    if (!res.bodiless) {
      for (let i = headers.length - 1; i >= 0; i--) {
        if (headers[i]![0].toLowerCase() === "content-length") headers.splice(i, 1);
      }
      if (res.body === null) headers.push(["content-length", "0"]);
      else if (whole) headers.push(["content-length", String(whole.length)]);
      else if (chunked) headers.push(["transfer-encoding", "chunked"]);
    }
    if (whole) return this.#respondWhole(res, headers, res.bodiless ? null : whole, keepAlive);
    const stream = res.body as ReadableStream<Uint8Array> | null;
    const closeDelimited = !res.bodiless && stream !== null && !chunked;
    if (!keepAlive || closeDelimited) headers.push(["connection", "close"]);
    try {
      await this.#writeAll(
        serializeResponseHead({
          status: res.status,
          reason: res.reason ?? reasonPhrase(res.status),
          headers,
        }),
      );
    } catch {
      this.destroy();
      await stream?.cancel().catch(() => {});
      res.settled?.(false);
      return false;
    }
    if (res.bodiless || stream === null) {
      await stream?.cancel().catch(() => {});
      res.settled?.(true);
      return keepAlive;
    }
    const enc = chunked ? new ChunkedEncoder() : null;
    const reader = stream.getReader();
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        if (value.length === 0) continue;
        if (enc) {
          const [size, data, crlf] = enc.encode(value) as [Uint8Array, Uint8Array, Uint8Array];
          const frame = new Uint8Array(size.length + data.length + crlf.length);
          frame.set(size, 0);
          frame.set(data, size.length);
          frame.set(CRLF, size.length + data.length);
          await this.#writeAll(frame);
        } else {
          await this.#writeAll(value);
        }
      }
      if (enc) await this.#writeAll(enc.end());
    } catch {
      // The body failed (upstream died, scan failed) or the agent stopped reading: never end
      // the response cleanly. Destroying the connection makes the agent see an error.
      reader.cancel().catch(() => {});
      this.destroy();
      res.settled?.(false);
      return false;
    }
    res.settled?.(true);
    return keepAlive && !closeDelimited;
  }

  /** Head and held body in one write: one pass through the TLS layers, no stream machinery. */
  async #respondWhole(
    res: OutgoingResponse,
    headers: [string, string][],
    body: Uint8Array | null,
    keepAlive: boolean,
  ): Promise<boolean> {
    let head: Uint8Array;
    try {
      head = serializeResponseHead({
        status: res.status,
        reason: res.reason ?? reasonPhrase(res.status),
        headers: keepAlive ? headers : [...headers, ["connection", "close"]],
      });
    } catch {
      this.destroy();
      res.settled?.(false);
      return false;
    }
    const { bytes, written } =
      body && body.length > 0 ? headFirst(head, body) : { bytes: head, written: undefined };
    try {
      await this.#writeAll(bytes, written);
    } catch {
      this.destroy();
      res.settled?.(false);
      return false;
    }
    res.settled?.(true);
    return keepAlive;
  }

  /**
   * Write with backpressure; a peer that does not take the bytes in time is dropped.
   * `written` hears when the socket is done with `bytes` (true) or failed them (false).
   */
  #writeAll(bytes: Uint8Array, written?: (ok: boolean) => void): Promise<void> {
    const s = this.#socket;
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
    const stall = this.#hooks.stalled?.(() => this.#shed());
    try {
      if (!socketOk) {
        await this.#drained(this.#socket);
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
          this.#socket.destroy();
          throw new Error("agent stopped reading");
        }
        last = c.writableLength;
        await this.#drained(c, CARRIER_POLL_MS);
      }
    } finally {
      stall?.end();
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
      onTimeout: () => this.#socket.destroy(),
      closedError: () => new Error("socket closed"),
      timeoutError: () => new Error("agent stopped reading"),
    });
  }

  /** Public form of the writer, for handlers that answer before taking a socket over. */
  write(bytes: Uint8Array): Promise<void> {
    return this.#writeAll(bytes);
  }

  // --- deadlines -------------------------------------------------------------------------

  #arm(ms: number): void {
    this.#deadline.set(ms);
  }

  #disarm(): void {
    this.#deadline.clear();
  }

  #expired(): void {
    // Idle, slow head or slow body: drop the connection. An in-flight body errors, so the
    // upstream request is aborted rather than completed with a short body.
    const r = this.#receiving;
    this.#receiving = null;
    if (r) {
      try {
        r.ctrl?.error(new ProxyError("bad-request", "request body timed out"));
      } catch {}
      r.settle(false);
    }
    this.destroy();
  }
}

async function settledNow(p: Promise<boolean>): Promise<boolean | undefined> {
  return Promise.race([p, Promise.resolve(undefined)]);
}

const REASONS: Record<number, string> = {
  200: "OK",
  400: "Bad Request",
  403: "Forbidden",
  405: "Method Not Allowed",
  413: "Content Too Large",
  414: "URI Too Long",
  421: "Misdirected Request",
  429: "Too Many Requests",
  431: "Request Header Fields Too Large",
  500: "Internal Server Error",
  501: "Not Implemented",
  502: "Bad Gateway",
  503: "Service Unavailable",
  504: "Gateway Timeout",
  505: "HTTP Version Not Supported",
};

export function reasonPhrase(status: number): string {
  return REASONS[status] ?? "";
}
