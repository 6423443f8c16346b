// What the two legs of the proxy share as HTTP/1.1 connections (as mitmproxy's Http1Server and
// Http1Client share one base): bytes from the socket go through a strict parser and its events
// are dispatched; a body being received becomes a stream whose reader's pace is the socket's
// (the socket pauses while the stream is full, resumes when it is read); a body being sent goes
// out framed (outgoingFraming), one write per chunk, each write waiting as the leg's backpressure
// says; a held body leaves in one write with its head. Deadlines, queues and what a failure
// means stay with each leg (session.ts, upstream/http1-client.ts).

import type { Duplex } from "node:stream";
import { headFirst } from "../body/held-buffers.ts";
import type { BodyEvent } from "../http/chunked.ts";
import { ChunkedEncoder } from "../http/chunked.ts";
import type { Framing } from "../http/framing.ts";
import type { ParseFailure } from "../http/http-error.ts";
import { ProxyError } from "../http/proxy-error.ts";

export type ParseEvent<H> = { readonly type: "head"; readonly head: H } | BodyEvent;

/** A strict HTTP/1 parser of one direction (request-parser.ts, response-parser.ts). */
export interface Http1Parser<H> {
  feed(input: Uint8Array): readonly ParseEvent<H>[];
  finish(): readonly ParseEvent<H>[];
}

/**
 * Bytes queued in a received body's stream before the socket pauses: counted in bytes, not
 * chunks (a socket read can be 512 KiB, and a peer or proxy side that stops reading holds this
 * queue full for as long as it waits).
 */
const BODY_HIGH_WATER = 64 * 1024;

/** A body being received, as a stream its reader pulls at its own pace. */
export class IncomingBody {
  readonly stream: ReadableStream<Uint8Array>;
  #ctrl!: ReadableStreamDefaultController<Uint8Array>;
  #open = true;

  /** `pulled`: the reader wants more (resume the socket); `cancelled`: the reader let go. */
  constructor(hooks: { pulled(): void; cancelled(): void }) {
    this.stream = new ReadableStream<Uint8Array>(
      {
        start: (c) => {
          this.#ctrl = c;
        },
        pull: () => hooks.pulled(),
        cancel: () => {
          this.#open = false;
          hooks.cancelled();
        },
      },
      { highWaterMark: BODY_HIGH_WATER, size: (c) => c?.byteLength ?? 0 },
    );
  }

  /** Queue received bytes; false when the queue is full (pause the socket until pulled). */
  push(data: Uint8Array): boolean {
    if (!this.#open) return true;
    try {
      this.#ctrl.enqueue(data);
    } catch {
      // Cancelled meanwhile: the bytes have nowhere to go.
      this.#open = false;
      return true;
    }
    return (this.#ctrl.desiredSize ?? 1) > 0;
  }

  end(): void {
    if (!this.#open) return;
    this.#open = false;
    try {
      this.#ctrl.close();
    } catch {}
  }

  fail(err: Error): void {
    if (!this.#open) return;
    this.#open = false;
    try {
      this.#ctrl.error(err);
    } catch {}
  }
}

export abstract class Http1Connection<H> {
  protected readonly socket: Duplex;
  protected readonly parser: Http1Parser<H>;
  readonly #onData = (d: Buffer) => this.#data(d);
  readonly #onEnd = () => this.#eof();
  readonly #onGone = () => this.onGone();
  #listening = false;

  constructor(socket: Duplex, parser: Http1Parser<H>) {
    this.socket = socket;
    this.parser = parser;
  }

  /** Start dispatching what the socket receives. */
  protected listen(): void {
    if (this.#listening) return;
    this.#listening = true;
    this.socket.on("data", this.#onData);
    this.socket.on("end", this.#onEnd);
    this.socket.on("close", this.#onGone);
    this.socket.on("error", this.#onGone);
  }

  /** Stop listening (the socket goes to another owner or is closed). */
  protected unlisten(): void {
    if (!this.#listening) return;
    this.#listening = false;
    this.socket.off("data", this.#onData);
    this.socket.off("end", this.#onEnd);
    this.socket.off("close", this.#onGone);
    this.socket.off("error", this.#onGone);
  }

  #data(chunk: Buffer): void {
    if (!this.accepting()) return;
    this.beforeFeed();
    const events = this.parser.feed(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
    this.parsed();
    this.dispatch(events);
    this.afterFeed();
  }

  #eof(): void {
    this.onEof(this.parser.finish());
  }

  /** Hand parser events to the leg; stops at an error (the parser is dead after one). */
  protected dispatch(events: readonly ParseEvent<H>[]): void {
    for (const ev of events) {
      switch (ev.type) {
        case "head":
          this.onHead(ev.head);
          break;
        case "body":
          this.onBody(ev.data);
          break;
        case "trailers":
          // Dropped: the proxy re-frames every body, and could not scan or redact fields that
          // arrive after it (documented in docs/SECURITY.md).
          break;
        case "end":
          this.onMessageEnd();
          break;
        case "error":
          this.onParseError(ev.error);
          return;
      }
    }
  }

  /** Whether received bytes are still wanted (false once the connection is done). */
  protected accepting(): boolean {
    return true;
  }
  /** Around each read: before the parser sees it, before its events are dispatched, after. */
  protected beforeFeed(): void {}
  protected parsed(): void {}
  protected afterFeed(): void {}
  protected abstract onHead(head: H): void;
  protected abstract onBody(data: Uint8Array): void;
  protected abstract onMessageEnd(): void;
  protected abstract onParseError(f: ParseFailure): void;
  /** The peer ended its side; `events` are what the parser made of the end of input. */
  protected abstract onEof(events: readonly ParseEvent<H>[]): void;
  /** The socket closed or failed. */
  protected abstract onGone(): void;

  /**
   * Write with this leg's backpressure. `written` hears when the socket is done with `bytes`
   * (true) or failed them (false). Rejects when the peer is gone or stopped taking bytes.
   */
  protected abstract write(bytes: Uint8Array, written?: (ok: boolean) => void): Promise<void>;

  /**
   * Send a streamed body with `framing` (chunked, a length it must add up to, or raw until the
   * connection closes). `beforeRead` is told each time the next chunk is awaited from the body's
   * source. On any failure the source is cancelled and the error thrown: the message must never
   * end as if complete.
   */
  protected async writeBody(
    body: ReadableStream<Uint8Array>,
    framing: Framing,
    beforeRead?: () => void,
  ): Promise<void> {
    const reader = body.getReader();
    const enc = framing.kind === "chunked" ? new ChunkedEncoder() : null;
    const length = framing.kind === "length" ? framing.length : null;
    let sent = 0;
    try {
      for (;;) {
        beforeRead?.();
        const { done, value } = await reader.read();
        if (done) break;
        if (value.length === 0) continue;
        sent += value.length;
        if (length !== null && sent > length) {
          throw new ProxyError("internal", "body longer than announced");
        }
        await this.write(enc ? enc.frame(value) : value);
      }
      if (length !== null && sent !== length) {
        throw new ProxyError("internal", "body shorter than announced");
      }
      if (enc) await this.write(enc.end());
    } catch (e) {
      reader.cancel(e).catch(() => {});
      throw e;
    }
  }

  /**
   * A head and a held body in one write: one pass through the TLS layers, no stream machinery.
   * The body stays its owner's to release; the write pins it (or wipes a copy) until done.
   */
  protected writeWhole(head: Uint8Array, body: Uint8Array | null): Promise<void> {
    if (body === null || body.length === 0) return this.write(head);
    const { bytes, written } = headFirst(head, body);
    return this.write(bytes, written);
  }
}
