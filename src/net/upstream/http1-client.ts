// Sends one request to an upstream and returns its response head with a streaming body. It
// owns the upstream side of the wire: serialising the head, framing the request body, parsing
// the response strictly, detecting an upstream that dies mid-body (the body stream errors, it
// never ends cleanly), and reusing idle keep-alive connections. Deadlines follow the phase: while
// the request body is sent, an upstream that stops taking bytes for the body idle limit fails;
// the response timeout runs only once the request is fully sent (an upload may take longer than
// it); then the body idle limit applies between response chunks. It never follows redirects
// and never decodes content codings (the redactor decides that).

import type net from "node:net";
import type tls from "node:tls";
import { headFirst } from "../../body/held-buffers.ts";
import { ChunkedEncoder } from "../../http/chunked.ts";
import { ProxyError } from "../../http/proxy-error.ts";
import { type ResponseHead, ResponseParser } from "../../http/response-parser.ts";
import { serializeRequestHead } from "../../http/serialize.ts";
import { Deadline } from "../deadline.ts";
import { waitForDrain } from "../drain.ts";
import { type DialerOptions, type DialTarget, dialUpstream } from "./dialer.ts";

type Sock = net.Socket | tls.TLSSocket;

export interface UpstreamRequest {
  readonly method: string;
  /** origin-form target exactly as it will be sent. */
  readonly target: string;
  /** Fields to send (hop-by-hop already removed); framing fields are added here. */
  readonly headers: readonly (readonly [string, string])[];
  /**
   * A stream is pumped with backpressure; bytes the proxy already holds whole (a small body it
   * scanned in one piece) go out with the head in one write.
   */
  readonly body: ReadableStream<Uint8Array> | Uint8Array | null;
  /** Known body length (Content-Length); null: chunked. Ignored without a body. */
  readonly bodyLength: number | null;
}

export interface UpstreamResponse {
  readonly head: ResponseHead;
  /** null for bodiless responses (HEAD, 1xx, 204, 304). */
  readonly body: ReadableStream<Uint8Array> | null;
}

export interface UpstreamClientOptions extends DialerOptions {
  /** Time from the request fully sent (head, and body if any) to response head received. */
  readonly responseTimeoutMs: number;
  /**
   * Longest gap between response body chunks, and longest time the upstream may stop taking
   * request body bytes while the request body is being sent.
   */
  readonly bodyIdleTimeoutMs: number;
  /** Idle keep-alive connections kept per destination. */
  readonly maxIdlePerHost: number;
  /**
   * Idle keep-alive connections kept in all; the oldest goes when a new one would pass it
   * (default: unbounded). Without it, an agent allowed a wildcard whose names all resolve
   * (`*.s3.amazonaws.com`) could leave an idle TLS connection to each of thousands of hosts.
   */
  readonly maxIdleTotal?: number;
  readonly idleSocketTimeoutMs: number;
  /**
   * A request with a body (which cannot be retried) reuses an idle connection only if it has
   * been idle at most this long (default 1000 ms); older ones are closed and a fresh one dialled.
   */
  readonly reuseWithBodyMs?: number;
}

interface IdleSocket {
  readonly key: string;
  readonly sock: Sock;
  readonly timer: ReturnType<typeof setTimeout>;
  /** When it went idle (performance.now()). */
  readonly since: number;
}

export class UpstreamClient {
  readonly #idle = new Map<string, IdleSocket[]>();
  /** Every idle connection, oldest first (for the total cap). */
  readonly #idleOrder = new Set<IdleSocket>();
  #closed = false;
  readonly #reuseWithBodyMs: number;
  constructor(private readonly opts: UpstreamClientOptions) {
    this.#reuseWithBodyMs = opts.reuseWithBodyMs ?? 1000;
  }

  /** Idle connections in all, for metrics and tests. */
  get idleCount(): number {
    return this.#idleOrder.size;
  }

  /** Destinations with idle connections, for tests. */
  get idleDestinations(): number {
    return this.#idle.size;
  }

  close(): void {
    this.#closed = true;
    for (const list of this.#idle.values()) {
      for (const i of list) {
        clearTimeout(i.timer);
        i.sock.destroy();
      }
    }
    this.#idle.clear();
    this.#idleOrder.clear();
  }

  async send(
    target: DialTarget,
    req: UpstreamRequest,
    signal?: AbortSignal,
  ): Promise<UpstreamResponse> {
    const key = `${target.tls ? "s" : "p"}|${target.host}|${target.port}`;
    const idle = this.#takeIdle(key);
    // A kept-alive connection may have been closed by the upstream just now. A request the
    // proxy may send again — an idempotent method (RFC 9110 §9.2.2) with no body or one held
    // whole — takes any idle connection and is retried once on a fresh one if the reused
    // connection turns out dead before a response byte. Any other request is never sent twice:
    // it only takes a connection that went idle moments ago — servers close idle connections
    // after seconds, not milliseconds — and otherwise dials. Dialling per request cost a TCP
    // and TLS handshake each time (~1 ms of added latency).
    const resendable =
      IDEMPOTENT_METHODS.has(req.method) && (req.body === null || req.body instanceof Uint8Array);
    if (idle && resendable) {
      try {
        return await this.#exchange(key, idle.sock, req, signal, true);
      } catch (e) {
        if (!(e instanceof RetryableError)) throw e;
      }
    } else if (idle && performance.now() - idle.since <= this.#reuseWithBodyMs) {
      return this.#exchange(key, idle.sock, req, signal, false);
    } else if (idle) {
      idle.sock.destroy();
    }
    const sock = await dialUpstream(target, this.opts);
    return this.#exchange(key, sock, req, signal, false);
  }

  #takeIdle(key: string): IdleSocket | undefined {
    const list = this.#idle.get(key);
    while (list && list.length > 0) {
      const i = list.pop()!;
      this.#idleOrder.delete(i);
      if (list.length === 0) this.#idle.delete(key);
      clearTimeout(i.timer);
      i.sock.removeAllListeners("data");
      i.sock.removeAllListeners("close");
      i.sock.removeAllListeners("error");
      i.sock.removeAllListeners("end");
      if (!i.sock.destroyed && i.sock.readyState === "open") return i;
      i.sock.destroy();
    }
    return undefined;
  }

  /** Forgets an idle connection (its destination too, once it has none) and closes it. */
  #dropIdle(entry: IdleSocket): void {
    this.#idleOrder.delete(entry);
    clearTimeout(entry.timer);
    const l = this.#idle.get(entry.key);
    const at = l?.indexOf(entry) ?? -1;
    if (l && at >= 0) l.splice(at, 1);
    if (l && l.length === 0) this.#idle.delete(entry.key);
    entry.sock.destroy();
  }

  #release(key: string, sock: Sock): void {
    if (this.#closed || sock.destroyed) {
      sock.destroy();
      return;
    }
    const list = this.#idle.get(key) ?? [];
    if (list.length >= this.opts.maxIdlePerHost) {
      sock.destroy();
      return;
    }
    const maxTotal = this.opts.maxIdleTotal ?? Number.POSITIVE_INFINITY;
    if (maxTotal <= 0) {
      sock.destroy();
      return;
    }
    while (this.#idleOrder.size >= maxTotal) {
      this.#dropIdle(this.#idleOrder.values().next().value!);
    }
    sock.removeAllListeners("data");
    const entry: IdleSocket = {
      key,
      sock,
      // The deadline fires #dropIdle on the entry made just below.
      timer: setTimeout(() => this.#dropIdle(entry), this.opts.idleSocketTimeoutMs),
      since: performance.now(),
    };
    entry.timer.unref?.();
    const drop = () => this.#dropIdle(entry);
    sock.on("data", drop); // unsolicited bytes: the connection is no longer trustworthy
    sock.on("end", drop);
    sock.on("close", drop);
    sock.on("error", drop);
    list.push(entry);
    this.#idle.set(key, list);
    this.#idleOrder.add(entry);
    sock.resume();
  }

  #exchange(
    key: string,
    sock: Sock,
    req: UpstreamRequest,
    signal: AbortSignal | undefined,
    reused: boolean,
  ): Promise<UpstreamResponse> {
    return new Promise<UpstreamResponse>((resolve, reject) => {
      const parser = new ResponseParser();
      parser.expect(req.method);
      let headSeen = false;
      let bodyCtrl: ReadableStreamDefaultController<Uint8Array> | null = null;
      let requestSent = req.body === null;
      let finished = false;
      let anyByte = false;
      // One deadline for the exchange: the upstream taking the request body, then waiting for
      // the head, then between response body chunks.
      let waitingFor: "upload" | "head" | "body" = req.body === null ? "head" : "upload";
      const deadline = new Deadline(() =>
        fail(new ProxyError("upstream-timeout", STALLED[waitingFor])),
      );
      const disarm = () => deadline.clear();

      const cleanup = () => {
        disarm();
        sock.off("data", onData);
        sock.off("end", onEnd);
        sock.off("close", onClose);
        sock.off("error", onClose);
        signal?.removeEventListener("abort", onAbort);
      };

      const fail = (err: ProxyError) => {
        if (finished) return;
        finished = true;
        cleanup();
        sock.destroy();
        if (!headSeen) {
          // Only a connection that died under us is worth another try: not a timeout (the
          // upstream may be working on it) and not an agent that left.
          const dead = err.code === "upstream-reset" && !signal?.aborted;
          reject(reused && !anyByte && dead ? new RetryableError(err) : err);
        } else {
          try {
            bodyCtrl?.error(err);
          } catch {}
        }
      };

      const complete = () => {
        if (finished) return;
        finished = true;
        cleanup();
        try {
          bodyCtrl?.close();
        } catch {}
        if (parser.state === "idle" && requestSent && !sock.destroyed) this.#release(key, sock);
        else sock.destroy();
      };

      const onData = (chunk: Buffer) => {
        anyByte = true;
        const events = parser.feed(new Uint8Array(chunk.buffer, chunk.byteOffset, chunk.length));
        for (const ev of events) {
          switch (ev.type) {
            case "head": {
              if (ev.head.interim) continue; // 100 Continue and friends are not forwarded
              if (ev.head.switchesProtocol) {
                fail(new ProxyError("upstream-protocol", "upstream switched protocols unasked"));
                return;
              }
              headSeen = true;
              const bodiless = ev.head.framing.kind === "none";
              let body: ReadableStream<Uint8Array> | null = null;
              if (!bodiless) {
                body = new ReadableStream<Uint8Array>(
                  {
                    start: (c) => {
                      bodyCtrl = c;
                    },
                    pull: () => {
                      if (!finished) sock.resume();
                    },
                    cancel: () => {
                      if (!finished) {
                        finished = true;
                        cleanup();
                        sock.destroy();
                      }
                    },
                  },
                  // Counted in bytes: a read can be 512 KiB, and an agent that stops reading
                  // holds this queue full (four chunks were up to 2 MiB per stalled answer).
                  { highWaterMark: 64 * 1024, size: (c) => c?.byteLength ?? 0 },
                );
                waitingFor = "body";
                deadline.set(this.opts.bodyIdleTimeoutMs);
              } else {
                disarm();
              }
              resolve({ head: ev.head, body });
              break;
            }
            case "body":
              if (bodyCtrl) {
                deadline.set(this.opts.bodyIdleTimeoutMs);
                try {
                  bodyCtrl.enqueue(ev.data);
                } catch {}
                if (
                  ((bodyCtrl as ReadableStreamDefaultController<Uint8Array>).desiredSize ?? 1) <= 0
                ) {
                  sock.pause();
                }
              }
              break;
            case "trailers":
              // Upstream trailers are dropped: the proxy re-frames the body and could not
              // redact fields that arrive after it (documented).
              break;
            case "end":
              complete();
              return;
            case "error":
              fail(
                new ProxyError(
                  "upstream-protocol",
                  `upstream sent an invalid response (${ev.error.code})`,
                ),
              );
              return;
          }
        }
      };

      const onEnd = () => {
        const events = parser.finish();
        for (const ev of events) {
          if (ev.type === "end") {
            complete();
            return;
          }
          if (ev.type === "error") {
            fail(
              headSeen
                ? new ProxyError("upstream-reset", "upstream closed the connection mid-body")
                : new ProxyError(
                    "upstream-reset",
                    "upstream closed the connection without answering",
                  ),
            );
            return;
          }
        }
        if (!finished) {
          fail(new ProxyError("upstream-reset", "upstream closed the connection"));
        }
      };

      const onClose = () => {
        if (!finished) fail(new ProxyError("upstream-reset", "upstream connection was reset"));
      };

      const onAbort = () => fail(new ProxyError("upstream-reset", "request aborted by the agent"));

      sock.on("data", onData);
      sock.on("end", onEnd);
      sock.on("close", onClose);
      sock.on("error", onClose);
      signal?.addEventListener("abort", onAbort);
      if (signal?.aborted) {
        // The agent left while this connection was dialled (a retry): send nothing.
        onAbort();
        return;
      }
      sock.resume();

      // Head, then the body with backpressure.
      const headers: [string, string][] = req.headers.map(([n, v]) => [n, v]);
      let encoder: ChunkedEncoder | null = null;
      if (req.body instanceof Uint8Array) {
        headers.push(["content-length", String(req.body.length)]);
      } else if (req.body !== null) {
        if (req.bodyLength !== null) headers.push(["content-length", String(req.bodyLength)]);
        else {
          headers.push(["transfer-encoding", "chunked"]);
          encoder = new ChunkedEncoder();
        }
      }
      let headBytes: Uint8Array;
      try {
        headBytes = serializeRequestHead({ method: req.method, target: req.target, headers });
      } catch {
        fail(new ProxyError("bad-request", "request head cannot be forwarded safely"));
        return;
      }
      if (req.body === null) {
        sock.write(headBytes);
        deadline.set(this.opts.responseTimeoutMs);
      } else {
        // While uploading, the deadline measures the upstream's progress only: it runs while
        // the sender waits for the upstream to take bytes and restarts whenever it took some.
        // Waiting on the agent's side of the body is the agent session's deadline (a body the
        // DLP holds back until it has seen enough must not count against the upstream). Once
        // a response head arrived early (a 413 before the body is done), the response's own
        // deadlines govern and the sender no longer touches the deadline.
        const uploading = () => !finished && !headSeen && !requestSent;
        const progress: PumpProgress = {
          waitingOnUpstream: () => {
            if (uploading()) deadline.set(this.opts.bodyIdleTimeoutMs);
          },
          waitingOnAgent: () => {
            if (uploading()) disarm();
          },
        };
        const body = req.body;
        let sending: Promise<void>;
        if (body instanceof Uint8Array) {
          sending = sendHeld(sock, headBytes, body, progress);
        } else {
          sock.write(headBytes);
          sending = pumpBody(sock, body, encoder, req.bodyLength, progress);
        }
        void sending.then(
          () => {
            requestSent = true;
            if (!finished && !headSeen) {
              waitingFor = "head";
              deadline.set(this.opts.responseTimeoutMs);
            }
            if (finished && parser.state === "idle" && !sock.destroyed) {
              // Response already complete before the body finished: do not reuse.
              sock.destroy();
            }
          },
          (err) => {
            // The agent's body failed (it disconnected, a scan failed, DLP blocked it): the
            // upstream must not see a complete request.
            fail(
              err instanceof ProxyError
                ? err
                : new ProxyError("bad-request", "request body failed"),
            );
          },
        );
      }
    });
  }
}

const STALLED = {
  upload: "upstream stopped reading the request body",
  head: "upstream did not answer in time",
  body: "upstream body stalled",
} as const;

/** What the body pump is waiting on, so the exchange can run the right deadline. */
interface PumpProgress {
  /** Bytes are queued for the upstream (called again whenever it took some). */
  waitingOnUpstream(): void;
  /** Everything written so far was taken; the next chunk comes from the agent. */
  waitingOnAgent(): void;
}

/** How often a blocked write re-checks whether the upstream took part of the queued bytes. */
const PROGRESS_POLL_MS = 100;

class RetryableError extends Error {
  constructor(override readonly cause: ProxyError) {
    super(cause.message);
  }
}

/** Methods a proxy may send again after a connection died under it (RFC 9110 §9.2.2). */
const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "OPTIONS",
  "PUT",
  "DELETE",
]);

/**
 * Head and a body the proxy holds whole, in one write; resolves once the upstream has taken
 * it (the upload deadline runs while it has not).
 */
async function sendHeld(
  sock: Sock,
  head: Uint8Array,
  body: Uint8Array,
  progress: PumpProgress,
): Promise<void> {
  if (sock.destroyed) throw new ProxyError("upstream-reset", "upstream connection closed");
  // The held body itself stays with its owner (who wipes it once the exchange is over; a retry
  // sends it again); headFirst keeps it from reuse, or wipes a copy, once written.
  const { bytes, written } = headFirst(head, body);
  if (!sock.write(bytes, (err?: Error | null) => written(!err))) await drained(sock, progress);
}

async function pumpBody(
  sock: Sock,
  body: ReadableStream<Uint8Array>,
  encoder: ChunkedEncoder | null,
  length: number | null,
  progress: PumpProgress,
): Promise<void> {
  const reader = body.getReader();
  let sent = 0;
  try {
    for (;;) {
      progress.waitingOnAgent();
      const { done, value } = await reader.read();
      if (done) break;
      if (value.length === 0) continue;
      sent += value.length;
      if (length !== null && sent > length) {
        throw new ProxyError("internal", "request body longer than announced");
      }
      const parts = encoder ? encoder.encode(value) : [value];
      for (const p of parts) {
        if (sock.destroyed) throw new ProxyError("upstream-reset", "upstream connection closed");
        if (!sock.write(p)) await drained(sock, progress);
      }
    }
    if (length !== null && sent !== length) {
      throw new ProxyError("internal", "request body shorter than announced");
    }
    if (encoder) sock.write(encoder.end());
  } catch (e) {
    reader.cancel(e).catch(() => {});
    throw e;
  }
}

/**
 * Wait until the upstream has taken the queued bytes. `drain` only fires once the whole queue
 * is flushed, which a slow but steady upstream may take longer than the idle limit to do, so
 * the queue is also re-checked every PROGRESS_POLL_MS and any shrinkage counts as progress.
 */
async function drained(sock: Sock, progress: PumpProgress): Promise<void> {
  let queued = sock.writableLength;
  progress.waitingOnUpstream();
  while (sock.writableNeedDrain) {
    if (sock.destroyed) throw new ProxyError("upstream-reset", "upstream connection closed");
    await waitForDrain(sock, {
      pollMs: PROGRESS_POLL_MS,
      closedError: () => new ProxyError("upstream-reset", "upstream connection closed"),
    });
    if (sock.writableLength < queued) progress.waitingOnUpstream();
    queued = sock.writableLength;
  }
}
