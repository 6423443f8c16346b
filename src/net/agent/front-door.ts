// The agent-facing listener: TLS 1.2/1.3 with a client certificate required and checked twice
// (by the TLS stack against the agent CA, then by the identity rules of pki/agent-identity.ts),
// connection caps (guard/connection-caps.ts), then HTTP/1.1 on the decrypted stream
// (session.ts). A CONNECT the admission rules allow becomes an intercepted tunnel (tunnel.ts)
// whose requests, like absolute-form http:// ones, go to the exchange pipeline. This is where
// agent sockets are accepted, counted, refused and closed; every decision it acts on is made
// elsewhere, and every refusal is logged through the refusal digest or the request log. An
// open connection keeps its identity only as long as the rules allow it: `recheck` decides
// again (a denylist reload, a certificate that expired) and closes what is now refused.

import { constants } from "node:crypto";
import tls from "node:tls";
import type { ExchangeHandler } from "../../exchange/pipeline.ts";
import { ConnectionCaps, peerKey } from "../../guard/connection-caps.ts";
import type { StallRegistry } from "../../guard/stall-registry.ts";
import { errorAnswer, errorAnswerBytes } from "../../http/error-answer.ts";
import type { ParseFailure } from "../../http/http-error.ts";
import type { IncomingRequest, OutgoingResponse } from "../../http/message.ts";
import { codeForRejectStatus, ProxyError } from "../../http/proxy-error.ts";
import type { AuditLog, RefusedConnectionRecord } from "../../observe/audit.ts";
import type { ProxyMetrics } from "../../observe/metrics.ts";
import { RefusalDigest, type RefusalSink } from "../../observe/refusal-digest.ts";
import type { RequestFacts, RequestLog } from "../../observe/request-log.ts";
import { Trace } from "../../observe/trace.ts";
import type {
  AgentIdentity,
  IdentityDecision,
  PeerCertificateInput,
} from "../../pki/agent-identity.ts";
import type { LeafCache, MintedLeaf } from "../../pki/leaf-cache.ts";
import { admitConnect, type TunnelFacts } from "../../policy/admission.ts";
import type { EgressPolicy } from "../../policy/egress-policy.ts";
import { parseAuthority } from "../../policy/host.ts";
import { type Refused, refuse, type Verdict } from "../../policy/verdict.ts";
import {
  type HandlerResult,
  HttpSession,
  type SessionHooks,
  type SessionLimits,
} from "./session.ts";
import { TLS_OPTIONS } from "./tls-options.ts";
import { interceptTunnel } from "./tunnel.ts";

export interface ServerCredentials {
  readonly certPem: string;
  readonly keyPem: string;
  /** PEM bundle of the CAs whose agent certificates are accepted. */
  readonly agentCaPem: string;
}

export interface FrontDoorOptions {
  readonly host: string;
  readonly port: number;
  /** Share the port with the proxy's other event loops (SO_REUSEPORT: the kernel spreads connections). */
  readonly reusePort?: boolean;
  /**
   * Where the caps are counted, shared with the proxy's other event loops (a ConnectionCaps
   * table's memory); default: a table of this listener's own.
   */
  readonly capsMemory?: SharedArrayBuffer;
  /** Where refused connections are digested: the proxy's digest, one for every event loop. */
  readonly refusals: RefusalSink<RefusedConnectionRecord>;
  /**
   * Whether agents may resume TLS sessions (tickets; default true). Off with several event
   * loops: each listener keeps ticket keys of its own, and a ticket from before an agent-CA
   * rotation was seen resumed in a loop after it (a session skips the certificate check).
   */
  readonly sessionTickets?: boolean;
  /**
   * Asked before each answer to a request is written: false closes the connection instead
   * (its agent was put in quarantine meanwhile, maybe by another loop — guard/quarantine-claims.ts).
   */
  readonly beforeAnswer?: (agent: string, response: OutgoingResponse) => boolean;
  /** Connection numbers in audit lines: `first`, then every `step`th (each loop its own). */
  readonly connIds?: { readonly first: number; readonly step: number };
  readonly credentials: ServerCredentials;
  readonly identify: (peer: PeerCertificateInput) => IdentityDecision;
  readonly leaves: LeafCache;
  readonly policy: () => EgressPolicy;
  /** Where requests (other than an outer CONNECT) go. */
  readonly exchange: ExchangeHandler;
  readonly log: RequestLog;
  readonly audit: AuditLog;
  readonly metrics: ProxyMetrics;
  readonly limits: SessionLimits;
  /**
   * Caps on open agent connections: `total` counts every accepted TCP connection (those still
   * in their handshake included), `perAgent` one agent's authenticated connections,
   * `handshakesPerAddress` the connections from one address that have not finished their
   * handshake.
   */
  readonly connections: {
    readonly total: number;
    readonly perAgent: number;
    readonly handshakesPerAddress: number;
  };
  /** Redacts real values from agent-chosen text (hosts) before it is logged. */
  readonly logSafe?: (text: string) => string;
  /** Whether agent-chosen text carries a real value (a CONNECT to one is refused: DLP). */
  readonly carriesReal?: (text: string) => boolean;
  /** Where connections waiting on their agents are listed, for the memory guard to shed. */
  readonly stalls?: StallRegistry;
  /**
   * Asked for each authenticated connection before it is served: a refusal is answered (like a
   * cap's 429, with its own status) and the connection closed (memory pressure).
   */
  readonly admit?: (agent: string) => Verdict;
  /** Whether new tunnels are shed now (guard/load-shed.ts): answered 503 at once. */
  readonly shedding?: () => boolean;
  /**
   * Rates, each a token bucket decided elsewhere (absent: unmetered). `handshake`: a new
   * connection from an address, asked before any TLS work; `connect`: an agent's CONNECT (the
   * bucket its requests draw from); `mint`: a CONNECT that needs a leaf not cached.
   */
  readonly rates?: {
    readonly handshake?: (address: string) => Verdict;
    readonly connect?: (agent: string) => Verdict;
    readonly mint?: (agent: string) => Verdict;
  };
}

interface ConnContext {
  readonly id: number;
  readonly agent: string;
  /** The agent certificate's serial (lower-case hex), on every audit line about it. */
  readonly serial: string;
  readonly remote: string;
  /** Set inside a tunnel. */
  readonly tunnel: TunnelFacts | null;
}

const OK_CONNECT = new TextEncoder().encode("HTTP/1.1 200 Connection Established\r\n\r\n");

/** An authenticated connection: who it is, and the certificate that said so (to decide again). */
interface Authenticated {
  readonly id: number;
  readonly identity: AgentIdentity;
  readonly der: Uint8Array;
}

export class FrontDoor {
  readonly #o: FrontDoorOptions;
  /** The listener accepting now; a relisten replaces it (the old one's connections go on). */
  #server: tls.Server;
  readonly #servers = new Set<tls.Server>();
  #credentials: ServerCredentials;
  /** The caps in force, read per use: `resize` changes them for what comes next. */
  readonly #limits: { total: number; perAgent: number; handshakesPerAddress: number };
  readonly #sockets = new Map<tls.TLSSocket, Authenticated>();
  readonly #caps: ConnectionCaps;
  /** Connections still in their handshake, with the address they were counted under. */
  readonly #inHandshake = new Map<tls.TLSSocket, string>();
  /** Sockets closed in #admit: the runtime reports them as failed handshakes too. */
  readonly #refusedAtAdmit = new WeakSet<object>();
  /** Connections refused that are being told so (an answer, then closed). */
  readonly #telling = new Set<tls.TLSSocket>();
  /** Audit lines for refused connections, one per kind and window (metrics count each). */
  readonly #refusals: RefusalSink<RefusedConnectionRecord>;
  #nextConn = 1;
  #connStep = 1;
  #draining = false;

  constructor(options: FrontDoorOptions) {
    this.#o = options;
    this.#nextConn = options.connIds?.first ?? 1;
    this.#connStep = options.connIds?.step ?? 1;
    this.#limits = { ...options.connections };
    this.#caps = options.capsMemory
      ? ConnectionCaps.attach(options.capsMemory, this.#limits)
      : new ConnectionCaps(this.#limits);
    this.#refusals = options.refusals;
    this.#credentials = options.credentials;
    this.#server = this.#makeServer();
  }

  #tlsOptions() {
    return this.#o.sessionTickets === false
      ? { ...TLS_OPTIONS, secureOptions: constants.SSL_OP_NO_TICKET }
      : TLS_OPTIONS;
  }

  #connId(): number {
    const id = this.#nextConn;
    this.#nextConn += this.#connStep;
    return id;
  }

  #makeServer(): tls.Server {
    const c = this.#credentials;
    const server = tls.createServer({
      ...this.#tlsOptions(),
      key: c.keyPem,
      cert: c.certPem,
      ca: c.agentCaPem,
      requestCert: true,
      rejectUnauthorized: true,
      // An agent that half-closes after its request still gets its answers (HttpSession ends
      // the connection once they are written).
      allowHalfOpen: true,
      handshakeTimeout: this.#o.limits.headerTimeoutMs,
    });
    // Beyond the total the runtime closes a new connection at once, before any TLS; a flood
    // of handshakes that never finish counts here too (the handshake deadline ends them).
    server.maxConnections = this.#limits.total;
    server.on("drop", (d?: { remoteAddress?: string; remotePort?: number }) => {
      this.#o.metrics.refused.inc({ reason: "connection-limit" });
      this.#refusals.refuse("connection-limit", peerKey(d?.remoteAddress), {
        conn: this.#connId(),
        remote: remoteOf(d ?? {}),
        reason: `too many open connections (limit ${this.#limits.total})`,
      });
    });
    server.on("connection", (s: tls.TLSSocket) => this.#admit(s));
    server.on("secureConnection", (s) => this.#accept(s));
    server.on("tlsClientError", (err, s) => {
      if (this.#refusedAtAdmit.has(s)) return; // refused and counted in #admit already
      this.#o.metrics.refused.inc({ reason: "handshake" });
      const reason = handshakeReason(err);
      this.#refusals.refuse(reason, peerKey(s.remoteAddress), {
        conn: this.#connId(),
        remote: remoteOf(s),
        reason,
      });
      s.destroy();
    });
    this.#servers.add(server);
    return server;
  }

  /** Start listening; resolves with the bound port. */
  listen(): Promise<number> {
    return this.#listenOn(this.#server, this.#o.host, this.#o.port);
  }

  #listenOn(server: tls.Server, host: string, port: number): Promise<number> {
    return new Promise((resolve, reject) => {
      server.once("error", reject);
      server.listen({ port, host, reusePort: this.#o.reusePort ?? false }, () => {
        server.off("error", reject);
        const a = server.address();
        resolve(typeof a === "object" && a ? a.port : port);
      });
    });
  }

  /**
   * A listener on another address (a reload), bound but not yet in force: `commit` makes it
   * the one that accepts and stops the old one (connections the old one accepted go on);
   * `abort` lets it go. Rejects, changing nothing, when the address cannot be had.
   */
  async openListener(
    host: string,
    port: number,
  ): Promise<{ port: number; commit(): void; abort(): void }> {
    const next = this.#makeServer();
    let bound: number;
    try {
      bound = await this.#listenOn(next, host, port);
    } catch (e) {
      this.#servers.delete(next);
      throw e;
    }
    return {
      port: bound,
      commit: () => {
        const old = this.#server;
        this.#server = next;
        old.close(() => this.#servers.delete(old));
      },
      abort: () => {
        next.close(() => this.#servers.delete(next));
      },
    };
  }

  /** New caps for connections that come next (a reload); open ones are not closed by it. */
  resize(caps: { total: number; perAgent: number; handshakesPerAddress: number }): void {
    Object.assign(this.#limits, caps);
    for (const s of this.#servers) s.maxConnections = caps.total;
  }

  /** Swap certificates and the agent CA for new connections; open ones keep theirs. */
  reloadCredentials(c: ServerCredentials): void {
    this.#credentials = c;
    for (const s of this.#servers) {
      s.setSecureContext({
        ...this.#tlsOptions(),
        key: c.keyPem,
        cert: c.certPem,
        ca: c.agentCaPem,
      });
    }
  }

  get connections(): number {
    return this.#sockets.size;
  }

  /**
   * Decides every open connection's identity again under the rules in force now (a reloaded
   * denylist; a certificate that has expired since its handshake) and closes those refused,
   * tunnels and exchanges in flight with them. Returns how many were closed.
   */
  recheck(): number {
    let closed = 0;
    for (const [socket, a] of this.#sockets) {
      const d = this.#o.identify(a.der);
      if (d.ok) continue;
      closed++;
      this.#o.metrics.refused.inc({ reason: "revoked" });
      this.#o.audit.event(
        "revoked",
        {
          conn: a.id,
          agent: a.identity.name,
          serial: a.identity.serial,
          remote: remoteOf(socket),
          reason: d.reason,
        },
        "connection closed: its agent identity is no longer accepted",
      );
      socket.destroy();
    }
    return closed;
  }

  /** Closes every open connection of `agent` (tunnels and exchanges in flight with them). */
  closeAgent(agent: string): number {
    let closed = 0;
    for (const [socket, a] of this.#sockets) {
      if (a.identity.name !== agent) continue;
      closed++;
      socket.destroy();
    }
    return closed;
  }

  /** Connections accepted and open, handshakes included, in every loop counting with this one. */
  get accepted(): number {
    return this.#caps.accepted;
  }

  /** Open authenticated connections by agent. */
  perAgentConnections(): Iterable<readonly [string, number]> {
    return this.#caps.perAgent();
  }

  /** Stop accepting; give open connections `graceMs`, then close what is left. */
  async close(graceMs: number): Promise<void> {
    this.#draining = true;
    const closed = Promise.all(
      [...this.#servers].map((s) => new Promise<void>((r) => s.close(() => r()))),
    );
    // Nothing new is served: a handshake in progress or a refusal being told is not waited for.
    for (const s of [...this.#inHandshake.keys(), ...this.#telling]) s.destroy();
    const deadline = Date.now() + graceMs;
    while (this.#sockets.size > 0 && Date.now() < deadline) await Bun.sleep(25);
    for (const s of this.#sockets.keys()) s.destroy();
    await closed;
  }

  /** A new TCP connection, before TLS: counted against its address until its handshake ends. */
  #admit(socket: tls.TLSSocket): void {
    const address = socket.remoteAddress ?? "?";
    // The total first, across every loop (the runtime's own cap counts this listener's alone).
    const accepted = this.#caps.accept();
    if (!accepted.ok) {
      this.#refuseAtAdmit(socket, "connection-limit", accepted.reason);
      return;
    }
    socket.once("close", () => this.#caps.acceptClosed());
    // The rate first: a refused connection costs no TLS work, and is not counted as open.
    const rated = this.#o.rates?.handshake?.(peerKey(address));
    const v = rated && !rated.ok ? rated : this.#caps.handshake(address);
    if (!v.ok) {
      this.#refuseAtAdmit(socket, v === rated ? "handshake-rate" : "handshake-limit", v.reason);
      return;
    }
    this.#inHandshake.set(socket, address);
    socket.once("close", () => this.#handshakeOver(socket));
  }

  /** Closed before TLS: counted, digested, and not counted again as a failed handshake. */
  #refuseAtAdmit(socket: tls.TLSSocket, kind: string, reason: string): void {
    this.#o.metrics.refused.inc({ reason: kind });
    this.#refusals.refuse(kind, peerKey(socket.remoteAddress ?? "?"), {
      conn: this.#connId(),
      remote: remoteOf(socket),
      reason,
    });
    this.#refusedAtAdmit.add(socket);
    socket.destroy();
  }

  #handshakeOver(socket: tls.TLSSocket): void {
    const address = this.#inHandshake.get(socket);
    if (address === undefined) return;
    this.#inHandshake.delete(socket);
    this.#caps.handshakeOver(address);
  }

  #accept(socket: tls.TLSSocket): void {
    this.#handshakeOver(socket);
    const id = this.#connId();
    const remote = remoteOf(socket);
    if (this.#draining) {
      socket.destroy();
      return;
    }
    // The TLS stack already refused unverified clients; check again (runtimes have had bugs
    // here) and apply our own identity rules (EKU, interception-CA, denylist, validity).
    const raw = socket.authorized ? socket.getPeerCertificate().raw : undefined;
    const der = raw && raw.length > 0 ? new Uint8Array(raw) : null;
    const decision: IdentityDecision = der
      ? this.#o.identify(der)
      : refuse("no-certificate", "client certificate not verified");
    if (!decision.ok) {
      this.#o.metrics.refused.inc({ reason: decision.code });
      this.#refusals.refuse(decision.code, peerKey(socket.remoteAddress), {
        conn: id,
        remote,
        ...(decision.agent !== undefined ? { agent: decision.agent } : {}),
        ...(decision.serial !== undefined ? { serial: decision.serial } : {}),
        reason: decision.reason,
      });
      // A certificate that chains but that the proxy's rules refuse (denied, expired): the
      // agent is told why in HTTP, as other refusals are, instead of a reset it cannot read —
      // a few at a time per agent (or certificate, when its name was not read).
      const who = decision.agent ?? (decision.serial ? `serial:${decision.serial}` : undefined);
      if (who !== undefined && this.#caps.tell(who)) {
        this.#answerAndClose(socket, who, new ProxyError("identity-refused", decision.reason));
        return;
      }
      socket.destroy();
      return;
    }
    const identity = decision.value;
    const agent = identity.name;
    const ctx: ConnContext = { id, agent, serial: identity.serial, remote, tunnel: null };
    const pressed = this.#o.admit?.(agent);
    if (pressed && !pressed.ok) {
      this.#o.metrics.refused.inc({ reason: pressed.code });
      this.#tell(socket, ctx, pressed);
      return;
    }
    const open = this.#caps.open(agent);
    if (!open.ok) {
      this.#o.metrics.refused.inc({ reason: "agent-connection-limit" });
      this.#tell(socket, ctx, open);
      return;
    }
    socket.once("close", () => this.#caps.closed(agent));
    socket.setNoDelay?.(true);
    this.#track(socket, { id, identity, der: der as Uint8Array });
    this.#serve(socket, undefined, ctx);
  }

  /**
   * A refused authenticated connection gets its answer at once, before it has sent anything (it
   * reads it as the answer to its first request, e.g. its CONNECT), and the connection ends.
   * Its bytes are read and dropped until it closes, so it is not reset while it still writes; a
   * peer that stays gets one second. Nothing it sends is parsed or acted on. Beyond the few of
   * one agent being told (connection-caps.ts), the connection is closed at once.
   */
  #tell(socket: tls.TLSSocket, ctx: ConnContext, v: Refused): void {
    const agent = ctx.agent;
    this.#refusals.refuse(v.code, agent, {
      conn: ctx.id,
      remote: ctx.remote,
      agent,
      serial: ctx.serial,
      reason: v.reason,
    });
    if (!this.#caps.tell(agent)) {
      socket.destroy();
      return;
    }
    this.#answerAndClose(socket, agent, new ProxyError(v.code, v.reason));
  }

  /** The answer written at once and the connection ended; its bytes read and dropped meanwhile. */
  #answerAndClose(socket: tls.TLSSocket, agent: string, err: ProxyError): void {
    this.#telling.add(socket);
    const timer = setTimeout(() => socket.destroy(), 1_000);
    socket.once("close", () => {
      clearTimeout(timer);
      this.#telling.delete(socket);
      this.#caps.told(agent);
    });
    socket.on("error", () => socket.destroy());
    socket.on("data", () => {});
    socket.once("end", () => socket.destroy());
    socket.end(errorAnswerBytes(err));
  }

  #track(socket: tls.TLSSocket, who: Authenticated): void {
    this.#sockets.set(socket, who);
    this.#o.metrics.connections.inc();
    socket.once("close", () => {
      this.#sockets.delete(socket);
      this.#o.metrics.connections.dec();
    });
  }

  /** HTTP on `socket` (`carrier`: the outer connection under a tunnel's TLS). */
  #serve(socket: tls.TLSSocket, carrier: tls.TLSSocket | undefined, ctx: ConnContext): void {
    const stalls = this.#o.stalls;
    const hooks: SessionHooks = {
      handle: async (req, s) => {
        const r = await this.#handle(req, s, ctx);
        if (r.kind !== "response" || this.#o.beforeAnswer?.(ctx.agent, r.response) !== false) {
          return r;
        }
        // Not answered: the connection closes, and the audit line says nothing was sent.
        const body = r.response.body;
        if (body instanceof ReadableStream) body.cancel().catch(() => {});
        r.response.settled?.(false);
        s.connection.destroy();
        return { kind: "took-over" };
      },
      rejected: (f) => this.#rejected(ctx, f),
      ...(stalls ? { stalled: (shed: () => void) => stalls.begin(ctx.agent, shed) } : {}),
    };
    const session = new HttpSession(socket, hooks, this.#o.limits, carrier);
    session.run().catch(() => socket.destroy());
  }

  /** A malformed request (already answered by the session): logged like any refused request. */
  #rejected(ctx: ConnContext, f: ParseFailure): void {
    const trace = new Trace();
    trace.record("parse", refuse(codeForRejectStatus(f.status), `malformed request: ${f.reason}`));
    const facts: RequestFacts = {
      conn: ctx.id,
      agent: ctx.agent,
      serial: ctx.serial,
      method: "-",
      scheme: ctx.tunnel ? "https" : "http",
      host: ctx.tunnel?.connectTarget ?? "-",
      port: 0,
      target: null,
    };
    this.#o.log.write(facts, trace, f.status, performance.now());
  }

  async #handle(
    req: IncomingRequest,
    session: HttpSession,
    ctx: ConnContext,
  ): Promise<HandlerResult> {
    if (this.#draining) {
      return this.#refuse(
        req,
        ctx,
        "listener",
        new ProxyError("shutting-down", "proxy is shutting down"),
      );
    }
    if (req.head.method === "CONNECT" && !ctx.tunnel) return this.#connect(req, session, ctx);
    const response = await this.#o.exchange(req, {
      id: ctx.id,
      agent: ctx.agent,
      serial: ctx.serial,
      tunnel: ctx.tunnel,
    });
    return { kind: "response", response };
  }

  /** Answers a request refused before any exchange began, and logs it. */
  #refuse(req: IncomingRequest, ctx: ConnContext, stage: string, err: ProxyError): HandlerResult {
    const started = performance.now();
    const trace = new Trace();
    trace.fail(stage, err);
    req.body?.cancel().catch(() => {});
    const connect = req.head.method === "CONNECT";
    // A CONNECT names where it wanted to go: that is what its line shows.
    const to = connect ? parseAuthority(req.head.target) : null;
    const facts: RequestFacts = {
      conn: ctx.id,
      agent: ctx.agent,
      serial: ctx.serial,
      method: req.head.method,
      scheme: ctx.tunnel || connect ? "https" : "http",
      host: to?.ok ? to.value.host : "-",
      port: to?.ok ? to.value.port : 0,
      target: connect ? null : req.head.target,
    };
    const a = errorAnswer(err);
    return {
      kind: "response",
      response: { ...a, settled: () => this.#o.log.write(facts, trace, a.status, started) },
    };
  }

  async #connect(
    req: IncomingRequest,
    session: HttpSession,
    ctx: ConnContext,
  ): Promise<HandlerResult> {
    // A CONNECT draws on the agent's request rate, allowed or not: refusals are work too.
    const rated = this.#o.rates?.connect?.(ctx.agent);
    if (rated && !rated.ok) {
      return this.#refuse(req, ctx, "connect", new ProxyError(rated.code, rated.reason));
    }
    // A real value as the CONNECT host would reach name resolution, the minted leaf and logs.
    if (this.#o.carriesReal?.(req.head.target)) {
      return this.#refuse(
        req,
        ctx,
        "connect",
        new ProxyError("dlp-blocked", "real credential in request"),
      );
    }
    const v = admitConnect(req.head, ctx.agent, this.#o.policy());
    if (!v.ok) return this.#refuse(req, ctx, "connect", new ProxyError(v.code, v.reason));
    // Overloaded: a new tunnel (a leaf, a handshake, an upstream connection) waits for none of
    // it; the tunnels already open go on.
    if (this.#o.shedding?.()) {
      return this.#refuse(
        req,
        ctx,
        "connect",
        new ProxyError("overloaded", "the proxy is overloaded: retry in a moment"),
      );
    }
    const target = v.value;
    // A leaf is a signature: an agent naming ever-new hosts under a wildcard mints at a rate.
    if (!this.#o.leaves.has(target.host)) {
      const minted = this.#o.rates?.mint?.(ctx.agent);
      if (minted && !minted.ok) {
        return this.#refuse(req, ctx, "connect", new ProxyError(minted.code, minted.reason));
      }
    }
    let leaf: MintedLeaf;
    try {
      leaf = await this.#o.leaves.get(target.host, ctx.agent);
      this.#o.metrics.certCache.inc({ result: "ok" });
    } catch {
      return this.#refuse(
        req,
        ctx,
        "connect",
        new ProxyError("internal", "could not mint a certificate for this host"),
      );
    }
    try {
      await session.send(OK_CONNECT);
    } catch {
      return { kind: "took-over" };
    }
    const early = session.detach();
    const outer = session.connection as tls.TLSSocket;
    if (early.length > 0) {
      // The agent sent its ClientHello before our 200: unsupported (no client does this with a
      // proxy that intercepts), refuse rather than guess.
      outer.destroy();
      return { kind: "took-over" };
    }
    this.#o.audit.event(
      "tunnel",
      {
        conn: ctx.id,
        agent: ctx.agent,
        serial: ctx.serial,
        host: this.#safe(target.host),
        port: target.port,
      },
      "tunnel opened",
    );
    interceptTunnel(outer, target.host, leaf, this.#o.limits.headerTimeoutMs, {
      secure: (inner, sni) => {
        const tunnel: TunnelFacts = {
          connectTarget: req.head.target,
          ...(sni !== undefined ? { sni } : {}),
        };
        // The tunnel's TLS does not pass the outer connection's backpressure on: the session
        // watches the outer one too.
        this.#serve(inner, outer, { ...ctx, tunnel });
      },
      sniMismatch: () =>
        this.#refusals.refuse("sni-mismatch", ctx.agent, {
          conn: ctx.id,
          remote: ctx.remote,
          agent: ctx.agent,
          serial: ctx.serial,
          reason: "SNI does not match the CONNECT target",
        }),
    });
    return { kind: "took-over" };
  }

  #safe(text: string): string {
    return this.#o.logSafe ? this.#o.logSafe(text) : text;
  }
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

/** The digest of refused connections: its lines are `refused` records with `repeated`. */
export function connectionDigest(audit: AuditLog): RefusalDigest<RefusedConnectionRecord> {
  return new RefusalDigest((r, repeated) => audit.refused(repeated ? { ...r, repeated } : r));
}
