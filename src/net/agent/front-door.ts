// The agent-facing listener: TLS 1.2/1.3 with a client certificate required and checked twice
// (by the TLS stack against the agent CA, then by our own identity rules), then HTTP/1.1 on the
// decrypted stream. CONNECT opens an intercepted tunnel: the proxy answers the agent's TLS with
// a leaf minted for the CONNECT host, refuses an SNI that names another host, and serves the
// requests inside through the same exchange app as absolute-form http:// requests. This file
// is the only one that touches agent sockets; every decision it acts on is made elsewhere.

import tls from "node:tls";
import type { Hono } from "hono";
import {
  type Exchange,
  exchangeRequest,
  KNOWN_METHODS,
  REFUSED_METHODS,
} from "../../exchange/exchange-app.ts";
import { heldBody, settleHeld } from "../../exchange/held-response.ts";
import type { StallRegistry } from "../../guard/memory-guard.ts";
import type { ParseFailure } from "../../http/http-error.ts";
import { errorResponse, ProxyError } from "../../http/proxy-error.ts";
import type { RequestHead } from "../../http/request-parser.ts";
import { serializeResponseHead } from "../../http/serialize.ts";
import { type AuditLog, loggablePath } from "../../observe/audit.ts";
import type { ProxyMetrics } from "../../observe/metrics.ts";
import { RefusalDigest } from "../../observe/refusal-digest.ts";
import type { IdentityDecision, PeerCertificateInput } from "../../pki/agent-identity.ts";
import type { LeafCache, MintedLeaf } from "../../pki/leaf-cache.ts";
import type { EgressPolicy } from "../../policy/egress-policy.ts";
import { canonicalHost, parseAuthority } from "../../policy/host.ts";
import { resolveRequestHost } from "../../policy/host-agreement.ts";
import { formatIPv4, formatIPv6, mappedIPv4, parseIPv6 } from "../../policy/ip-address.ts";
import {
  type HandlerResult,
  HttpSession,
  type IncomingRequest,
  type OutgoingResponse,
  reasonPhrase,
  type SessionHooks,
  type SessionLimits,
} from "./session.ts";

export interface ServerCredentials {
  readonly certPem: string;
  readonly keyPem: string;
  /** PEM bundle of the CAs whose agent certificates are accepted. */
  readonly agentCaPem: string;
}

export interface FrontDoorOptions {
  readonly host: string;
  readonly port: number;
  readonly credentials: ServerCredentials;
  readonly identify: (peer: PeerCertificateInput) => IdentityDecision;
  readonly leaves: LeafCache;
  readonly policy: () => EgressPolicy;
  // biome-ignore lint/suspicious/noExplicitAny: the app's env type is private to exchange-app
  readonly app: Hono<any>;
  readonly audit: AuditLog;
  readonly metrics: ProxyMetrics;
  readonly limits: SessionLimits;
  /**
   * Caps on open agent connections: `total` counts every accepted TCP connection (those still
   * in their handshake included), `perAgent` one agent's authenticated connections,
   * `handshakesPerAddress` the connections from one address that have not finished their
   * handshake (no identity is known yet, so the address is the only key).
   */
  readonly connections: {
    readonly total: number;
    readonly perAgent: number;
    readonly handshakesPerAddress: number;
  };
  /** Redacts real values from agent-chosen text (paths, hosts) before it is logged. */
  readonly logSafe?: (text: string) => string;
  /** Where connections waiting on their agents are listed, for the memory guard to shed. */
  readonly stalls?: StallRegistry;
  /**
   * Asked for each authenticated connection before it is served: a refusal is answered (like a
   * cap's 429, with its own status) and the connection closed (memory pressure).
   */
  readonly admit?: (agent: string) => ProxyError | null;
}

interface ConnContext {
  readonly id: number;
  readonly agent: string;
  readonly remote: string;
  /** Set inside a tunnel. */
  readonly connectTarget?: string;
  readonly sni?: string;
}

/** Connections of one agent over its cap that may be kept up to a second to read their 429. */
const TELLING_PER_AGENT = 8;

const TLS_OPTIONS = {
  minVersion: "TLSv1.2",
  ALPNProtocols: ["http/1.1"],
} as const;

export class FrontDoor {
  readonly #o: FrontDoorOptions;
  readonly #server: tls.Server;
  readonly #sockets = new Set<tls.TLSSocket>();
  /** Open authenticated connections per agent name (absent: none). */
  readonly #perAgent = new Map<string, number>();
  /** Connections still in their handshake, per remote address (absent: none). */
  readonly #handshaking = new Map<string, number>();
  /** The sockets counted in #handshaking, with the address they were counted under. */
  readonly #inHandshake = new Map<tls.TLSSocket, string>();
  /** Sockets closed in #admit: the runtime reports them as failed handshakes too. */
  readonly #refusedAtAdmit = new WeakSet<object>();
  /** Connections refused at an agent's cap that are being told so (429, then closed). */
  readonly #telling = new Map<tls.TLSSocket, string>();
  readonly #tellingPerAgent = new Map<string, number>();
  /** Audit lines for refused connections, one per kind and window (metrics count each). */
  readonly #refusals: RefusalDigest;
  #nextConn = 1;
  #draining = false;

  constructor(options: FrontDoorOptions) {
    this.#o = options;
    this.#refusals = new RefusalDigest((r) => options.audit.refused(r));
    this.#server = tls.createServer({
      ...TLS_OPTIONS,
      key: options.credentials.keyPem,
      cert: options.credentials.certPem,
      ca: options.credentials.agentCaPem,
      requestCert: true,
      rejectUnauthorized: true,
      // An agent that half-closes after its request still gets its answers (HttpSession ends
      // the connection once they are written).
      allowHalfOpen: true,
      handshakeTimeout: options.limits.headerTimeoutMs,
    });
    // Beyond the total the runtime closes a new connection at once, before any TLS; a flood
    // of handshakes that never finish counts here too (the handshake deadline ends them).
    this.#server.maxConnections = options.connections.total;
    this.#server.on("drop", (d?: { remoteAddress?: string; remotePort?: number }) => {
      this.#o.metrics.refused.inc({ reason: "connection-limit" });
      this.#refusals.refuse(peerKey(d?.remoteAddress), {
        conn: this.#nextConn++,
        remote: remoteOf(d ?? {}),
        reason: `too many open connections (limit ${options.connections.total})`,
      });
    });
    this.#server.on("connection", (s: tls.TLSSocket) => this.#admit(s));
    this.#server.on("secureConnection", (s) => this.#accept(s));
    this.#server.on("tlsClientError", (err, s) => {
      if (this.#refusedAtAdmit.has(s)) return; // refused and counted in #admit already
      const id = this.#nextConn++;
      const reason = handshakeReason(err);
      this.#o.metrics.refused.inc({ reason: "handshake" });
      this.#refusals.refuse(peerKey(s.remoteAddress), { conn: id, remote: remoteOf(s), reason });
      s.destroy();
    });
  }

  /** Start listening; resolves with the bound port. */
  listen(): Promise<number> {
    return new Promise((resolve, reject) => {
      this.#server.once("error", reject);
      this.#server.listen(this.#o.port, this.#o.host, () => {
        this.#server.off("error", reject);
        const a = this.#server.address();
        resolve(typeof a === "object" && a ? a.port : this.#o.port);
      });
    });
  }

  /** Swap certificates and the agent CA for new connections; open ones keep theirs. */
  reloadCredentials(c: ServerCredentials): void {
    this.#server.setSecureContext({
      ...TLS_OPTIONS,
      key: c.keyPem,
      cert: c.certPem,
      ca: c.agentCaPem,
    });
  }

  get connections(): number {
    return this.#sockets.size;
  }

  /** Open authenticated connections by agent. */
  perAgentConnections(): Iterable<readonly [string, number]> {
    return this.#perAgent.entries();
  }

  /** Stop accepting; give open connections `graceMs`, then close what is left. */
  async close(graceMs: number): Promise<void> {
    this.#draining = true;
    const closed = new Promise<void>((r) => this.#server.close(() => r()));
    // Nothing new is served: a handshake in progress or a refusal being told is not waited for.
    for (const s of [...this.#inHandshake.keys(), ...this.#telling.keys()]) s.destroy();
    const deadline = Date.now() + graceMs;
    while (this.#sockets.size > 0 && Date.now() < deadline) await Bun.sleep(25);
    for (const s of this.#sockets) s.destroy();
    await closed;
    this.#refusals.close();
  }

  /**
   * A new TCP connection, before TLS. Without a certificate a peer has no identity yet, so
   * what it may hold open before its handshake ends is counted by its address: one peer that
   * opens connections and never finishes a handshake (each lasts until the handshake
   * deadline) would otherwise take every slot of the total and lock every agent out.
   */
  #admit(socket: tls.TLSSocket): void {
    const address = peerKey(socket.remoteAddress);
    const n = this.#handshaking.get(address) ?? 0;
    const cap = this.#o.connections.handshakesPerAddress;
    if (n >= cap) {
      this.#o.metrics.refused.inc({ reason: "handshake-limit" });
      this.#refusals.refuse(address, {
        conn: this.#nextConn++,
        remote: remoteOf(socket),
        reason: `too many handshakes in progress from this address (limit ${cap})`,
      });
      this.#refusedAtAdmit.add(socket);
      socket.destroy();
      return;
    }
    countUp(this.#handshaking, address);
    this.#inHandshake.set(socket, address);
    socket.once("close", () => this.#handshakeOver(socket));
  }

  #handshakeOver(socket: tls.TLSSocket): void {
    const address = this.#inHandshake.get(socket);
    if (address === undefined) return;
    this.#inHandshake.delete(socket);
    countDown(this.#handshaking, address);
  }

  #accept(socket: tls.TLSSocket): void {
    this.#handshakeOver(socket);
    const id = this.#nextConn++;
    const remote = remoteOf(socket);
    if (this.#draining) {
      socket.destroy();
      return;
    }
    // The TLS stack already refused unverified clients; check again (runtimes have had bugs
    // here) and apply our own identity rules (EKU, interception-CA, denylist, validity).
    const decision: IdentityDecision = socket.authorized
      ? this.#o.identify(socket.getPeerCertificate() as PeerCertificateInput)
      : { ok: false, code: "no-certificate", reason: "client certificate not verified" };
    if (!decision.ok) {
      this.#o.metrics.refused.inc({ reason: decision.code });
      this.#refusals.refuse(peerKey(socket.remoteAddress), {
        conn: id,
        remote,
        reason: decision.reason,
      });
      socket.destroy();
      return;
    }
    const agent = decision.identity.name;
    const refusal = this.#o.admit?.(agent);
    if (refusal) {
      this.#o.metrics.refused.inc({ reason: refusal.code });
      this.#refusals.refuse(agent, { conn: id, remote, agent, reason: refusal.reason });
      this.#tell(socket, agent, refusal);
      return;
    }
    const open = this.#perAgent.get(agent) ?? 0;
    if (open >= this.#o.connections.perAgent) {
      this.#refuseOverAgentLimit(socket, id, remote, agent);
      return;
    }
    countUp(this.#perAgent, agent);
    socket.once("close", () => countDown(this.#perAgent, agent));
    socket.setNoDelay?.(true);
    this.#track(socket);
    const ctx: ConnContext = { id, agent, remote };
    this.#serve(socket, ctx);
  }

  /**
   * An agent at its connection cap gets a 429 at once, before it has sent anything (it reads
   * it as the answer to its first request, e.g. its CONNECT), and the connection ends. Its
   * bytes are read and dropped until it closes, so it is not reset while it still writes; a
   * peer that stays gets one second. Nothing it sends is parsed or acted on. At most
   * TELLING_PER_AGENT (or the cap, if lower) such connections of one agent are kept for that
   * second; beyond them the connection is closed at once: an agent opening connections as fast
   * as it can must not fill the total with refusals in progress and lock the other agents out.
   */
  #refuseOverAgentLimit(socket: tls.TLSSocket, id: number, remote: string, agent: string): void {
    const cap = this.#o.connections.perAgent;
    const reason = `too many open connections for this agent (limit ${cap})`;
    this.#o.metrics.refused.inc({ reason: "agent-connection-limit" });
    this.#refusals.refuse(agent, { conn: id, remote, agent, reason });
    this.#tell(socket, agent, new ProxyError("connection-limit", reason));
  }

  /** Answers a refused connection with `err` at once, then closes it (see above). */
  #tell(socket: tls.TLSSocket, agent: string, err: ProxyError): void {
    const telling = this.#tellingPerAgent.get(agent) ?? 0;
    if (telling >= Math.min(TELLING_PER_AGENT, this.#o.connections.perAgent)) {
      socket.destroy();
      return;
    }
    countUp(this.#tellingPerAgent, agent);
    this.#telling.set(socket, agent);
    socket.once("close", () => {
      this.#telling.delete(socket);
      countDown(this.#tellingPerAgent, agent);
    });
    const body = new TextEncoder().encode(`slapenir: ${err.reason}\n`);
    const head = serializeResponseHead({
      status: err.status,
      reason: reasonPhrase(err.status),
      headers: [
        ["content-type", "text/plain; charset=utf-8"],
        ["x-slapenir-error", err.code],
        ["connection", "close"],
        ["content-length", String(body.length)],
      ],
    });
    const timer = setTimeout(() => socket.destroy(), 1_000);
    socket.once("close", () => clearTimeout(timer));
    socket.on("error", () => socket.destroy());
    socket.on("data", () => {});
    socket.once("end", () => socket.destroy());
    socket.end(Buffer.concat([head, body]));
  }

  #track(socket: tls.TLSSocket): void {
    this.#sockets.add(socket);
    this.#o.metrics.connections.inc();
    socket.once("close", () => {
      this.#sockets.delete(socket);
      this.#o.metrics.connections.dec();
    });
  }

  #serve(socket: tls.TLSSocket, ctx: ConnContext): void {
    const session = new HttpSession(
      socket,
      {
        handle: (req, s) => this.#handle(req, s, ctx),
        rejected: (f) => this.#rejected(ctx, f),
        ...this.#stallHook(ctx.agent),
      },
      this.#o.limits,
    );
    session.run().catch(() => socket.destroy());
  }

  /** Where a session's stalls are listed for the memory guard, under its agent's name. */
  #stallHook(agent: string): Pick<SessionHooks, "stalled"> {
    const r = this.#o.stalls;
    return r ? { stalled: (shed) => r.begin(agent, shed) } : {};
  }

  #rejected(ctx: ConnContext, f: ParseFailure): void {
    this.#o.audit.request({
      conn: ctx.id,
      agent: ctx.agent,
      method: "-",
      scheme: ctx.connectTarget ? "https" : "http",
      host: this.#safe(ctx.connectTarget ?? "-"),
      port: 0,
      path: "-",
      status: f.status,
      bytesIn: 0,
      bytesOut: 0,
      swaps: 0,
      redactions: 0,
      decision: "deny",
      reason: `malformed request: ${f.reason}`,
      durationMs: 0,
    });
    this.#o.metrics.requests.inc({ agent: ctx.agent, decision: "deny", status: "4xx" });
  }

  async #handle(
    req: IncomingRequest,
    session: HttpSession,
    ctx: ConnContext,
  ): Promise<HandlerResult> {
    const head = req.head;
    const started = performance.now();
    const refuse = (err: ProxyError, host = "-", port = 0): HandlerResult => {
      this.#auditEarly(ctx, head, err, host, port, started);
      req.body?.cancel().catch(() => {});
      return { kind: "response", response: toOutgoing(errorResponse(err), head) };
    };
    if (this.#draining) return refuse(new ProxyError("shutting-down", "proxy is shutting down"));

    if (head.method === "CONNECT") {
      if (ctx.connectTarget) {
        return refuse(new ProxyError("bad-request", "CONNECT inside a tunnel is not supported"));
      }
      return this.#connect(req, session, ctx, started);
    }
    const upper = head.method.toUpperCase();
    if (upper !== head.method && KNOWN_METHODS.has(upper)) {
      // Methods are case-sensitive, but servers differ: `head` might be HEAD to the upstream
      // and not to us (framing), `trace` a TRACE that echoes credentials.
      return refuse(new ProxyError("bad-request", "method names must be upper-case"));
    }
    if (REFUSED_METHODS.has(upper)) {
      return refuse(new ProxyError("bad-request", `method ${head.method} is not allowed`));
    }
    if (!ctx.connectTarget) {
      if (head.targetForm !== "absolute") {
        return refuse(
          new ProxyError("bad-request", "this is a proxy: use CONNECT or an absolute http:// URL"),
        );
      }
      if (head.scheme !== "http") {
        return refuse(new ProxyError("bad-request", "https:// targets must use CONNECT"));
      }
    }
    const agreed = resolveRequestHost({
      ...(ctx.connectTarget !== undefined ? { connectTarget: ctx.connectTarget } : {}),
      ...(ctx.sni !== undefined ? { sni: ctx.sni } : {}),
      ...(head.targetForm === "absolute" && head.authority !== undefined
        ? { absoluteAuthority: head.authority }
        : {}),
      ...(head.scheme !== undefined ? { absoluteScheme: head.scheme } : {}),
      ...(head.host !== undefined ? { hostHeader: head.host } : {}),
    });
    if (!agreed.ok) {
      return refuse(
        new ProxyError(agreed.status === 421 ? "misdirected" : "bad-request", agreed.reason),
      );
    }
    const abort = new AbortController();
    const onGone = () => abort.abort();
    session.socket.once("close", onGone);
    const ex: Exchange = {
      conn: ctx.id,
      agent: ctx.agent,
      req,
      target: agreed.target,
      scheme: agreed.scheme,
      started,
      rec: {
        swaps: 0,
        redactions: 0,
        bytesIn: 0,
        bytesOut: 0,
        decision: "allow",
        reason: "",
        status: 0,
      },
      abort,
    };
    if (head.expectContinue && req.body) {
      // The proxy reads the body itself; tell the agent to send it.
      await session
        .write(new TextEncoder().encode("HTTP/1.1 100 Continue\r\n\r\n"))
        .catch(() => {});
    }
    const res = await this.#o.app.fetch(exchangeRequest(ex), { ex });
    const out = toOutgoing(res, head);
    // The abort hook lives as long as the response is being written.
    const settled = (ok: boolean) => {
      session.socket.off("close", onGone);
      settleHeld(res, ok);
    };
    return { kind: "response", response: { ...out, settled } };
  }

  async #connect(
    req: IncomingRequest,
    session: HttpSession,
    ctx: ConnContext,
    started: number,
  ): Promise<HandlerResult> {
    const head = req.head;
    const fail = (err: ProxyError, host = "-", port = 0): HandlerResult => {
      this.#auditEarly(ctx, head, err, host, port, started);
      return { kind: "response", response: toOutgoing(errorResponse(err), head) };
    };
    const parsed = parseAuthority(head.target);
    if (!parsed.ok)
      return fail(new ProxyError("bad-request", `invalid CONNECT target (${parsed.error.code})`));
    const target = parsed.value;
    const verdict = this.#o.policy().decide({
      agent: ctx.agent,
      host: target.host,
      port: target.port,
      scheme: "https",
    });
    if (verdict.action !== "allow") {
      return fail(new ProxyError("policy-denied", verdict.reason), target.host, target.port);
    }
    let leaf: MintedLeaf;
    try {
      leaf = await this.#o.leaves.get(target.host);
      this.#o.metrics.certCache.inc({ result: "ok" });
    } catch {
      return fail(
        new ProxyError("internal", "could not mint a certificate for this host"),
        target.host,
        target.port,
      );
    }
    try {
      await session.write(new TextEncoder().encode("HTTP/1.1 200 Connection Established\r\n\r\n"));
    } catch {
      return { kind: "took-over" };
    }
    const early = session.detach();
    const outer = session.socket as tls.TLSSocket;
    if (early.length > 0) {
      // The agent sent its ClientHello before our 200: unsupported (no client does this
      // with a proxy that intercepts), refuse rather than guess.
      outer.destroy();
      return { kind: "took-over" };
    }
    this.#o.audit.event(
      "tunnel",
      { conn: ctx.id, agent: ctx.agent, host: this.#safe(target.host), port: target.port },
      "tunnel opened",
    );
    // The listener keeps half-closed connections open (an agent may end its side after a
    // request and still read the answer). A tunnel cannot: the runtime's TLS over a stream
    // ends its carrier when the inner TLS ends, so an agent that ends the carrier ends the
    // tunnel, as before.
    outer.once("end", () => outer.end());
    let sniMismatch = false;
    const inner = new tls.TLSSocket(outer, {
      isServer: true,
      ...TLS_OPTIONS,
      secureContext: leaf.secureContext!,
      SNICallback: (servername, cb) => {
        const c = canonicalHost(servername);
        if (c.ok && c.value.host === target.host) cb(null, leaf.secureContext);
        else {
          sniMismatch = true;
          cb(new Error("SNI does not match the CONNECT target"));
        }
      },
    });
    const handshakeTimer = setTimeout(() => inner.destroy(), this.#o.limits.headerTimeoutMs);
    inner.once("secure", () => {
      clearTimeout(handshakeTimer);
      const sni = (inner as unknown as { servername?: string | false }).servername;
      const tunnelCtx: ConnContext = {
        ...ctx,
        connectTarget: head.target,
        ...(typeof sni === "string" && sni !== "" ? { sni } : {}),
      };
      const s = new HttpSession(
        inner,
        {
          handle: (r, sess) => this.#handle(r, sess, tunnelCtx),
          rejected: (f) => this.#rejected(tunnelCtx, f),
          ...this.#stallHook(ctx.agent),
        },
        this.#o.limits,
        outer, // the tunnel's TLS does not pass the outer connection's backpressure on
      );
      s.run().catch(() => inner.destroy());
    });
    inner.on("error", () => {
      clearTimeout(handshakeTimer);
      if (sniMismatch) {
        this.#refusals.refuse(ctx.agent, {
          conn: ctx.id,
          remote: ctx.remote,
          agent: ctx.agent,
          reason: "SNI does not match the CONNECT target",
        });
      }
      inner.destroy();
      outer.destroy();
    });
    inner.on("close", () => outer.destroy());
    return { kind: "took-over" };
  }

  #safe(text: string): string {
    return this.#o.logSafe ? this.#o.logSafe(text) : text;
  }

  #auditEarly(
    ctx: ConnContext,
    head: RequestHead,
    err: ProxyError,
    host: string,
    port: number,
    started: number,
  ): void {
    const decision = err.status >= 500 ? "error" : "deny";
    this.#o.audit.request({
      conn: ctx.id,
      agent: ctx.agent,
      method: head.method,
      scheme: ctx.connectTarget || head.method === "CONNECT" ? "https" : "http",
      host: this.#safe(host),
      port,
      path: head.method === "CONNECT" ? "-" : this.#safe(loggablePath(head.target)),
      status: err.status,
      bytesIn: 0,
      bytesOut: 0,
      swaps: 0,
      redactions: 0,
      decision,
      reason: err.reason,
      durationMs: Math.round((performance.now() - started) * 100) / 100,
    });
    this.#o.metrics.requests.inc({
      agent: ctx.agent,
      decision,
      status: `${Math.floor(err.status / 100)}xx`,
    });
  }
}

function toOutgoing(res: Response, head: RequestHead): OutgoingResponse {
  const headers: [string, string][] = [];
  res.headers.forEach((v, k) => {
    if (k !== "set-cookie") headers.push([k, v]);
  });
  for (const c of res.headers.getSetCookie()) headers.push(["set-cookie", c]);
  const bodiless = head.method === "HEAD" || res.status === 204 || res.status === 304;
  return {
    status: res.status,
    reason: res.statusText,
    headers,
    body: bodiless ? null : (heldBody(res) ?? res.body),
    bodiless,
    close: res.headers.get("connection") === "close",
  };
}

/** Counts one more for `key` (absent means none). */
function countUp(counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}

/** Counts one less for `key`, forgetting it at none. */
function countDown(counts: Map<string, number>, key: string): void {
  const left = (counts.get(key) ?? 1) - 1;
  if (left > 0) counts.set(key, left);
  else counts.delete(key);
}

/**
 * Who a connection comes from, for the per-address handshake cap: an IPv4 address (also when
 * written IPv4-mapped), or an IPv6 address's /64 — one host is usually given a whole /64, so
 * counting single IPv6 addresses would let it pick a new one per connection.
 */
export function peerKey(address: string | undefined): string {
  if (address === undefined) return "?";
  const v6 = parseIPv6(address.replace(/%.*$/, ""));
  if (!v6) return address;
  const v4 = mappedIPv4(v6);
  if (v4) return formatIPv4(v4);
  const prefix = new Uint8Array(16);
  prefix.set(v6.subarray(0, 8));
  return `${formatIPv6(prefix)}/64`;
}

function remoteOf(s: {
  remoteAddress?: string | undefined;
  remotePort?: number | undefined;
}): string {
  return `${s.remoteAddress ?? "?"}:${s.remotePort ?? "?"}`;
}

function handshakeReason(err: Error): string {
  const m = err.message ?? "";
  // Only the OpenSSL reason code: no peer-supplied bytes.
  if (/certificate required|PEER_DID_NOT_RETURN_A_CERTIFICATE|no certificate/i.test(m)) {
    return "TLS handshake: no client certificate";
  }
  if (/expired/i.test(m)) return "TLS handshake: client certificate expired";
  if (/not yet valid/i.test(m)) return "TLS handshake: client certificate not yet valid";
  if (/self.signed|unable to get|unknown ca|verify/i.test(m)) {
    return "TLS handshake: client certificate not from the agent CA";
  }
  if (/version|protocol/i.test(m)) return "TLS handshake: protocol version refused";
  return "TLS handshake failed";
}
