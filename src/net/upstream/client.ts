// The upstream leg: sends one request to its destination on a kept-alive connection when one is
// resting in the pool (idle-pool.ts) and fit for it, else on a fresh one (dialer.ts: resolve,
// check the address, connect, TLS), and returns the response head with a streaming body
// (http1-client.ts). It owns the rule for sending a request twice: only when that is safe.

import type { IncomingResponse, OutgoingRequest } from "../../http/message.ts";
import { DialGate } from "./dial-gate.ts";
import { type DialerOptions, type DialTarget, dialUpstream } from "./dialer.ts";
import { type ClientTimeouts, Http1Client, RetryableError } from "./http1-client.ts";
import { IdlePool } from "./idle-pool.ts";

export interface UpstreamClientOptions extends DialerOptions, ClientTimeouts {
  /** Idle keep-alive connections kept per destination. */
  readonly maxIdlePerHost: number;
  /** Idle keep-alive connections kept in all; the oldest goes first (default: unbounded). */
  readonly maxIdleTotal?: number;
  readonly idleSocketTimeoutMs: number;
  /** Upstream connections being made at once (the rest wait their turn; default 32, an agent a quarter). */
  readonly maxConcurrentDials?: number;
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
  readonly #dials: DialGate;

  constructor(private readonly opts: UpstreamClientOptions) {
    this.#dials = new DialGate(opts.maxConcurrentDials ?? 32);
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
    target: DialTarget & { readonly partition?: string; readonly agent?: string },
    req: OutgoingRequest,
    signal: AbortSignal = new AbortController().signal,
  ): Promise<IncomingResponse> {
    const key = `${target.partition ?? ""}|${target.tls ? "s" : "p"}|${target.host}|${target.port}`;
    const idle = this.#pool.take(key);
    // Every request takes a kept-alive connection when there is one (RFC 9112 §9.3): the pool
    // keeps a connection only while its upstream has not closed it and, if it said when it
    // would, until a second before (http/keep-alive.ts). Should the upstream close it just as
    // the request goes out, a request the proxy may send again — an idempotent method with no
    // body or one held whole — is retried once on a fresh connection; any other is not sent
    // twice (RFC 9110 §9.2.2): the agent gets the 502 and decides. Dialling per request costs a
    // TCP and TLS handshake, which is what starves first when the proxy is busy.
    const resendable =
      IDEMPOTENT_METHODS.has(req.method) && (req.body === null || req.body instanceof Uint8Array);
    if (idle) {
      try {
        return await idle.conn.exchange(req, signal, resendable);
      } catch (e) {
        if (!(e instanceof RetryableError)) throw e;
      }
    }
    const release = await this.#dials.acquire(target.agent ?? "", signal);
    let sock: Awaited<ReturnType<typeof dialUpstream>>;
    try {
      sock = await dialUpstream(target, this.opts);
    } finally {
      release();
    }
    const conn = new Http1Client(sock, this.opts, (c) => this.#pool.put(key, c));
    return conn.exchange(req, signal, false);
  }
}
