// One HTTP/1.1 connection to an upstream, carrying one exchange at a time: it sends a request
// (head, then the body framed by outgoingFraming, with backpressure) and resolves with the
// response head and a streaming body. An upstream that dies mid-body errors the body stream (it
// never ends cleanly). Deadlines follow the phase: while the request body is sent, an upstream
// that stops taking bytes for the body idle limit fails; the response timeout runs only once
// the request is fully sent (an upload may take longer than it); then the body idle limit
// applies between response chunks. Between exchanges the connection may rest in the idle pool,
// where any byte, end or error from the upstream breaks it. It never follows redirects and
// never decodes content codings.

import type net from "node:net";
import type tls from "node:tls";
import { framingFields, outgoingFraming } from "../../http/framing.ts";
import type { ParseFailure } from "../../http/http-error.ts";
import { type KeepAliveHint, keepAliveHint } from "../../http/keep-alive.ts";
import type { IncomingResponse, OutgoingRequest } from "../../http/message.ts";
import { ProxyError } from "../../http/proxy-error.ts";
import { type ResponseHead, ResponseParser } from "../../http/response-parser.ts";
import { serializeRequestHead } from "../../http/serialize.ts";
import { Deadline } from "../deadline.ts";
import { waitForDrain } from "../drain.ts";
import { Http1Connection, IncomingBody, type ParseEvent } from "../http1-connection.ts";

export type UpstreamSocket = net.Socket | tls.TLSSocket;

export interface ClientTimeouts {
  /** Time from the request fully sent (head, and body if any) to response head received. */
  readonly responseTimeoutMs: number;
  /**
   * Longest gap between response body chunks, and longest time the upstream may stop taking
   * request body bytes while the request body is being sent.
   */
  readonly bodyIdleTimeoutMs: number;
}

/** A reused connection that turned out dead before a response byte: the caller may resend. */
export class RetryableError extends Error {
  constructor(override readonly cause: ProxyError) {
    super(cause.message);
  }
}

const STALLED = {
  upload: "upstream stopped reading the request body",
  head: "upstream did not answer in time",
  body: "upstream body stalled",
} as const;

/** How often a blocked write re-checks whether the upstream took part of the queued bytes. */
const PROGRESS_POLL_MS = 100;

interface Current {
  readonly resolve: (r: IncomingResponse) => void;
  readonly reject: (e: Error) => void;
  readonly signal: AbortSignal;
  readonly reused: boolean;
  readonly deadline: Deadline;
  readonly onAbort: () => void;
  headSeen: boolean;
  body: IncomingBody | null;
  requestSent: boolean;
  finished: boolean;
  anyByte: boolean;
  waitingFor: keyof typeof STALLED;
  /** The request's method (an answer to HEAD has no body). */
  readonly method: string;
  /** The answer was one that carries no body by its status or method (HEAD, 204, 304). */
  noBody: boolean;
  /** The request asked to switch protocols (a WebSocket handshake). */
  readonly upgrade: boolean;
}

export class Http1Client extends Http1Connection<ResponseHead> {
  readonly #timeouts: ClientTimeouts;
  /** Called once an exchange ends with the connection fit for another. */
  readonly #reusable: (c: Http1Client) => void;
  #current: Current | null = null;
  /** Resting in the idle pool: told when the upstream breaks the connection. */
  #parked: (() => void) | null = null;
  /** What the upstream's last answer said of keeping the connection (its Keep-Alive field). */
  #hint: KeepAliveHint = { restMs: undefined, exhausted: false };

  constructor(
    socket: UpstreamSocket,
    timeouts: ClientTimeouts,
    reusable: (c: Http1Client) => void,
  ) {
    super(socket, new ResponseParser());
    this.#timeouts = timeouts;
    this.#reusable = reusable;
    this.listen();
  }

  /** How long it may rest before its next request, as the upstream announced (ms). */
  get restLimitMs(): number | undefined {
    return this.#hint.restMs;
  }

  /** Whether the connection can carry another exchange. */
  get usable(): boolean {
    const s = this.socket as UpstreamSocket;
    return !s.destroyed && s.readyState === "open" && this.#current === null;
  }

  destroy(): void {
    this.#parked = null;
    this.socket.destroy();
  }

  /** Rest in the idle pool; `broken` is told if the upstream sends, ends or fails meanwhile. */
  park(broken: () => void): void {
    this.#parked = broken;
    this.socket.resume();
  }

  unpark(): void {
    this.#parked = null;
  }

  /** Send `req` and resolve with the answer's head and body (see the module comment). */
  exchange(req: OutgoingRequest, signal: AbortSignal, reused: boolean): Promise<IncomingResponse> {
    return new Promise<IncomingResponse>((resolve, reject) => {
      const x: Current = {
        resolve,
        reject,
        signal,
        reused,
        deadline: new Deadline(() =>
          this.#fail(x, new ProxyError("upstream-timeout", STALLED[x.waitingFor])),
        ),
        onAbort: () =>
          this.#fail(x, new ProxyError("upstream-reset", "request aborted by the agent")),
        headSeen: false,
        body: null,
        requestSent: req.body === null,
        finished: false,
        anyByte: false,
        waitingFor: req.body === null ? "head" : "upload",
        method: req.method,
        noBody: false,
        upgrade: req.upgrade === "websocket",
      };
      this.#current = x;
      (this.parser as ResponseParser).expect(req.method);
      signal.addEventListener("abort", x.onAbort);
      if (signal.aborted) {
        // The agent left while this connection was dialled (a retry): send nothing.
        x.onAbort();
        return;
      }
      this.socket.resume();
      this.#send(x, req);
    });
  }

  #send(x: Current, req: OutgoingRequest): void {
    const body = req.body;
    const framing = outgoingFraming(
      body === null
        ? { kind: "none" }
        : body instanceof Uint8Array
          ? { kind: "held", length: body.length }
          : { kind: "stream", length: req.bodyLength },
      "upstream",
    );
    let head: Uint8Array;
    try {
      head = serializeRequestHead({
        method: req.method,
        target: req.target,
        headers: [
          ...req.headers,
          ...framingFields(framing),
          ...(req.upgrade
            ? ([
                ["connection", "upgrade"],
                ["upgrade", req.upgrade],
              ] as const)
            : []),
        ],
      });
    } catch {
      this.#fail(x, new ProxyError("bad-request", "request head cannot be forwarded safely"));
      return;
    }
    if (body === null) {
      this.socket.write(head);
      x.deadline.set(this.#timeouts.responseTimeoutMs);
      return;
    }
    // While uploading, the deadline measures the upstream's progress only: it runs while the
    // sender waits for the upstream to take bytes and restarts whenever it took some. Waiting on
    // the agent's side of the body is the agent session's deadline (a body the DLP holds back
    // until it has seen enough must not count against the upstream). Once a response head
    // arrived early (a 413 before the body is done), the response's own deadlines govern and
    // the sender no longer touches the deadline.
    const sending =
      body instanceof Uint8Array
        ? this.writeWhole(head, body)
        : this.write(head).then(() =>
            this.writeBody(body, framing, () => {
              if (this.#uploading(x)) x.deadline.clear();
            }),
          );
    sending.then(
      () => {
        x.requestSent = true;
        if (!x.finished && !x.headSeen) {
          x.waitingFor = "head";
          x.deadline.set(this.#timeouts.responseTimeoutMs);
        }
        if (
          x.finished &&
          (this.parser as ResponseParser).state === "idle" &&
          !this.socket.destroyed
        ) {
          // The response was complete before the body was: not reused.
          this.socket.destroy();
        }
      },
      (err) => {
        // The agent's body failed (it disconnected, a scan failed, DLP blocked it): the
        // upstream must not see a complete request.
        this.#fail(
          x,
          err instanceof ProxyError ? err : new ProxyError("bad-request", "request body failed"),
        );
      },
    );
  }

  #uploading(x: Current): boolean {
    return !x.finished && !x.headSeen && !x.requestSent;
  }

  /**
   * Write with backpressure: resolves once the upstream took the bytes. `drain` only fires once
   * the whole queue is flushed, which a slow but steady upstream may take longer than the idle
   * limit to do, so the queue is re-checked every PROGRESS_POLL_MS and any shrinkage counts as
   * progress (it restarts the upload deadline).
   */
  protected async write(bytes: Uint8Array, written?: (ok: boolean) => void): Promise<void> {
    const s = this.socket;
    const closed = () => new ProxyError("upstream-reset", "upstream connection closed");
    if (s.destroyed) {
      written?.(false);
      throw closed();
    }
    const ok = written ? s.write(bytes, (err) => written(!err)) : s.write(bytes);
    if (ok) return;
    const x = this.#current;
    const progress = () => {
      if (x && this.#uploading(x)) x.deadline.set(this.#timeouts.bodyIdleTimeoutMs);
    };
    let queued = s.writableLength;
    progress();
    while (s.writableNeedDrain) {
      if (s.destroyed) throw closed();
      await waitForDrain(s, { pollMs: PROGRESS_POLL_MS, closedError: closed });
      if (s.writableLength < queued) progress();
      queued = s.writableLength;
    }
  }

  // --- receiving -------------------------------------------------------------------------

  protected override accepting(): boolean {
    const x = this.#current;
    if (x === null) {
      // Unsolicited bytes on an idle connection: it is no longer trustworthy.
      this.#broken();
      return false;
    }
    x.anyByte = true;
    return !x.finished;
  }

  protected onHead(head: ResponseHead): void {
    const x = this.#current;
    if (!x || x.finished) return;
    if (head.interim) return; // 100 Continue and friends are not forwarded
    if (head.switchesProtocol) {
      if (!x.upgrade || head.status !== 101 || !x.requestSent) {
        this.#fail(x, new ProxyError("upstream-protocol", "upstream switched protocols unasked"));
        return;
      }
      // The connection is the WebSocket's from here: never pooled, never read as HTTP again.
      x.headSeen = true;
      x.finished = true;
      this.#cleanup(x);
      this.socket.pause();
      this.unlisten();
      const leftover = (this.parser as ResponseParser).takeLeftover();
      x.resolve({ head, body: null, switched: { socket: this.socket, leftover } });
      return;
    }
    x.headSeen = true;
    x.noBody = x.method === "HEAD" || head.status === 204 || head.status === 304;
    this.#hint = keepAliveHint(head.headers);
    if (head.framing.kind !== "none") {
      x.body = new IncomingBody({
        pulled: () => {
          if (!x.finished) this.socket.resume();
        },
        cancelled: () => {
          if (!x.finished) {
            x.finished = true;
            this.#cleanup(x);
            this.socket.destroy();
          }
        },
      });
      x.waitingFor = "body";
      x.deadline.set(this.#timeouts.bodyIdleTimeoutMs);
    } else {
      x.deadline.clear();
    }
    x.resolve({ head, body: x.body?.stream ?? null });
  }

  protected onBody(data: Uint8Array): void {
    const x = this.#current;
    if (!x?.body || x.finished) return;
    x.deadline.set(this.#timeouts.bodyIdleTimeoutMs);
    if (!x.body.push(data)) this.socket.pause();
  }

  protected onMessageEnd(): void {
    const x = this.#current;
    if (x) this.#complete(x);
  }

  protected onParseError(f: ParseFailure): void {
    const x = this.#current;
    if (x) {
      this.#fail(
        x,
        new ProxyError("upstream-protocol", `upstream sent an invalid response (${f.code})`),
      );
    }
  }

  protected onEof(events: readonly ParseEvent<ResponseHead>[]): void {
    const x = this.#current;
    if (!x) {
      this.#broken();
      return;
    }
    for (const ev of events) {
      if (ev.type === "end") {
        this.#complete(x);
        return;
      }
      if (ev.type === "error") {
        this.#fail(
          x,
          new ProxyError(
            "upstream-reset",
            x.headSeen
              ? "upstream closed the connection mid-body"
              : "upstream closed the connection without answering",
          ),
        );
        return;
      }
    }
    this.#fail(x, new ProxyError("upstream-reset", "upstream closed the connection"));
  }

  protected onGone(): void {
    const x = this.#current;
    if (!x) this.#broken();
    else this.#fail(x, new ProxyError("upstream-reset", "upstream connection was reset"));
  }

  #broken(): void {
    const b = this.#parked;
    this.#parked = null;
    if (b) b();
    else this.socket.destroy();
  }

  // --- ending an exchange ----------------------------------------------------------------

  #cleanup(x: Current): void {
    x.deadline.clear();
    x.signal.removeEventListener("abort", x.onAbort);
    if (this.#current === x) this.#current = null;
  }

  #fail(x: Current, err: ProxyError): void {
    if (x.finished) return;
    x.finished = true;
    this.#cleanup(x);
    this.socket.destroy();
    if (!x.headSeen) {
      // Only a connection that died under us is worth another try: not a timeout (the upstream
      // may be working on it) and not an agent that left.
      const dead = err.code === "upstream-reset" && !x.signal.aborted;
      x.reject(x.reused && !x.anyByte && dead ? new RetryableError(err) : err);
    } else {
      x.body?.fail(err);
    }
  }

  #complete(x: Current): void {
    if (x.finished) return;
    x.finished = true;
    this.#cleanup(x);
    x.body?.end();
    const idle = (this.parser as ResponseParser).state === "idle";
    // After an answer with no body by its method or status, an upstream that sent one anyway
    // (late, or counted by a Content-Length it should not have) would have its bytes read as
    // the next answer: such a connection is not kept.
    const kept = !this.#hint.exhausted && this.#hint.restMs !== 0;
    if (idle && kept && x.requestSent && !x.noBody && !this.socket.destroyed) this.#reusable(this);
    else this.socket.destroy();
  }
}
