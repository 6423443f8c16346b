// The upstream leg: sends one request to its destination on a kept-alive connection when one is
// resting in the pool (idle-pool.ts) and fit for it, else on a fresh one (dialer.ts: resolve,
// check the address, connect, TLS), and returns the response head with a streaming body
// (http1-client.ts). It owns the rule for sending a request twice: only when that is safe.

import type { IncomingResponse, OutgoingRequest } from "../../http/message.ts";
import { type DialerOptions, type DialTarget, dialUpstream } from "./dialer.ts";
import { type ClientTimeouts, Http1Client, RetryableError } from "./http1-client.ts";
import { IdlePool } from "./idle-pool.ts";

export interface UpstreamClientOptions extends DialerOptions, ClientTimeouts {
  /** Idle keep-alive connections kept per destination. */
  readonly maxIdlePerHost: number;
  /** Idle keep-alive connections kept in all; the oldest goes first (default: unbounded). */
  readonly maxIdleTotal?: number;
  readonly idleSocketTimeoutMs: number;
  /**
   * A request with a body (which cannot be retried) reuses an idle connection only if it has
   * been idle at most this long (default 1000 ms); older ones are closed and a fresh one dialled.
   */
  readonly reuseWithBodyMs?: number;
}

/** Methods a proxy may send again after a connection died under it (RFC 9110 §9.2.2). */
const IDEMPOTENT_METHODS: ReadonlySet<string> = new Set([
  "GET",
  "HEAD",
  "OPTIONS",
  "PUT",
  "DELETE",
]);

export class UpstreamClient {
  readonly #pool: IdlePool<Http1Client>;
  readonly #reuseWithBodyMs: number;

  constructor(private readonly opts: UpstreamClientOptions) {
    this.#reuseWithBodyMs = opts.reuseWithBodyMs ?? 1000;
    this.#pool = new IdlePool({
      perKey: opts.maxIdlePerHost,
      total: opts.maxIdleTotal ?? Number.POSITIVE_INFINITY,
      idleMs: opts.idleSocketTimeoutMs,
    });
  }

  /** Idle connections in all, for metrics and tests. */
  get idleCount(): number {
    return this.#pool.size;
  }

  /** Destinations with idle connections, for tests. */
  get idleDestinations(): number {
    return this.#pool.keys;
  }

  close(): void {
    this.#pool.close();
  }

  /**
   * `target.partition`: who may share a kept-alive connection (the exchange passes agent and
   * secrets generation); connections are pooled per partition and destination.
   */
  async send(
    target: DialTarget & { readonly partition?: string },
    req: OutgoingRequest,
    signal: AbortSignal = new AbortController().signal,
  ): Promise<IncomingResponse> {
    const key = `${target.partition ?? ""}|${target.tls ? "s" : "p"}|${target.host}|${target.port}`;
    const idle = this.#pool.take(key);
    // A kept-alive connection may have been closed by the upstream just now. A request the
    // proxy may send again — an idempotent method with no body or one held whole — takes any
    // idle connection and is retried once on a fresh one if the reused connection turns out
    // dead before a response byte. Any other request is never sent twice: it only takes a
    // connection that went idle moments ago — servers close idle connections after seconds,
    // not milliseconds — and otherwise dials. Dialling per request cost a TCP and TLS
    // handshake each time (~1 ms of added latency).
    const resendable =
      IDEMPOTENT_METHODS.has(req.method) && (req.body === null || req.body instanceof Uint8Array);
    if (idle && resendable) {
      try {
        return await idle.conn.exchange(req, signal, true);
      } catch (e) {
        if (!(e instanceof RetryableError)) throw e;
      }
    } else if (idle && idle.idleMs <= this.#reuseWithBodyMs) {
      return idle.conn.exchange(req, signal, false);
    } else if (idle) {
      idle.conn.destroy();
    }
    const sock = await dialUpstream(target, this.opts);
    const conn = new Http1Client(sock, this.opts, (c) => this.#pool.put(key, c));
    return conn.exchange(req, signal, false);
  }
}
