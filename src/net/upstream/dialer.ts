// Opens connections to upstream hosts. It is the only place the proxy resolves names and dials:
// it resolves once, checks every resolved address against the address policy, and connects to
// the address it checked (so a DNS answer that changes between check and connect — rebinding —
// cannot reach an internal address). Upstream TLS is always verified against the trust store
// plus the configured extra CAs. Every step — the lookup included — is bounded by the connect
// timeout. It never logs; failures become ProxyErrors with fixed reasons.

import { promises as dns } from "node:dns";
import net from "node:net";
import { networkInterfaces } from "node:os";
import tls from "node:tls";
import { ProxyError } from "../../http/proxy-error.ts";
import type { Verdict } from "../../policy/verdict.ts";

export interface DialTarget {
  /** Canonical host as policy saw it (lower-case, no trailing dot, no brackets). */
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  /** True when `host` is an IP literal: no DNS, no SNI. */
  readonly isIp: boolean;
}

/** Whether a resolved address may be dialled (address-class.ts decides; refused: its class). */
export type AddressCheck = (ip: string) => Verdict;

export type Lookup = (host: string) => Promise<{ address: string; family: number }[]>;

export interface DialerOptions {
  /** Decides whether a resolved address may be dialled (internal/metadata addresses are not). */
  readonly addressCheck: AddressCheck;
  /** Bounds the name lookup, each TCP connect and the TLS handshake, each on its own. */
  readonly connectTimeoutMs: number;
  /** Trust anchors for upstream TLS: the bundled roots plus extra CAs (tests, corporate CAs). */
  readonly ca: readonly string[];
  /** Injectable for tests; defaults to the system resolver. */
  readonly lookup?: Lookup;
  /** The proxy's own listening ports: never dialled on a local address (loops, admin). */
  readonly selfPorts?: () => ReadonlySet<number>;
  /**
   * Whether the proxy's own event loop is overloaded now (guard/load-shed.ts). A connect or
   * handshake deadline that comes due then gives another period (up to OVERLOAD_PERIODS): the
   * lateness is the proxy's, not the upstream's, and failing accepted work for it is what an
   * overloaded proxy must not do.
   */
  readonly busy?: () => boolean;
}

const OVERLOAD_PERIODS = 5;

/** `fire` after `ms`, or later while the proxy is busy (see `busy`); returns how to cancel. */
function deadline(ms: number, busy: (() => boolean) | undefined, fire: () => void): () => void {
  let extended = 0;
  let timer: ReturnType<typeof setTimeout>;
  const due = () => {
    if (busy?.() && extended < OVERLOAD_PERIODS) {
      extended++;
      timer = setTimeout(due, ms);
    } else fire();
  };
  timer = setTimeout(due, ms);
  return () => clearTimeout(timer);
}

/** Addresses that reach this machine: loopback, unspecified, and every local interface. */
function isLocalAddress(ip: string): boolean {
  const a = ip.toLowerCase().replace(/^::ffff:/, "");
  if (a.startsWith("127.") || a === "::1" || a === "0.0.0.0" || a === "::") return true;
  for (const list of Object.values(networkInterfaces())) {
    for (const i of list ?? []) if (i.address.toLowerCase() === a) return true;
  }
  return false;
}

const systemLookup: Lookup = (host) => dns.lookup(host, { all: true, verbatim: true });

export function trustAnchors(extraPem: readonly string[]): string[] {
  return [...tls.rootCertificates, ...extraPem];
}

export async function resolveChecked(
  target: DialTarget,
  opts: DialerOptions,
): Promise<{ address: string; family: number }[]> {
  let addrs: { address: string; family: number }[];
  if (target.isIp) {
    addrs = [{ address: target.host, family: target.host.includes(":") ? 6 : 4 }];
  } else {
    addrs = await lookupWithin(opts.lookup ?? systemLookup, target.host, opts.connectTimeoutMs);
  }
  if (addrs.length === 0) throw new ProxyError("dns-failed", "upstream host did not resolve");
  const self = opts.selfPorts?.();
  if (self?.has(target.port) && addrs.some((a) => isLocalAddress(a.address))) {
    throw new ProxyError("address-denied", "destination is the proxy itself");
  }
  const allowed = addrs.filter((a) => opts.addressCheck(a.address).ok);
  if (allowed.length === 0) {
    const first = opts.addressCheck(addrs[0]!.address);
    const why = first.ok ? "denied" : first.reason;
    throw new ProxyError("address-denied", `destination address is not allowed (${why})`);
  }
  return allowed;
}

/**
 * The system resolver has no deadline of its own (a dead resolver holds a request for the
 * resolver's retries, tens of seconds); a lookup that outlives the connect timeout fails. The
 * lookup itself cannot be cancelled — its late answer is ignored.
 */
function lookupWithin(
  lookup: Lookup,
  host: string,
  timeoutMs: number,
): Promise<{ address: string; family: number }[]> {
  return new Promise((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      settled = true;
      reject(new ProxyError("dns-failed", "upstream host did not resolve in time"));
    }, timeoutMs);
    const done = () => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      return true;
    };
    let pending: Promise<{ address: string; family: number }[]>;
    try {
      pending = lookup(host);
    } catch {
      pending = Promise.reject(new Error("lookup threw"));
    }
    pending.then(
      (addrs) => {
        if (done()) resolve(addrs);
      },
      () => {
        if (done()) reject(new ProxyError("dns-failed", "upstream host did not resolve"));
      },
    );
  });
}

function connectTcp(
  address: string,
  port: number,
  timeoutMs: number,
  busy?: () => boolean,
): Promise<net.Socket> {
  return new Promise((resolve, reject) => {
    const sock = net.connect({ host: address, port, noDelay: true });
    const clearTimer = deadline(timeoutMs, busy, () => {
      sock.destroy();
      reject(new ProxyError("connect-timeout", "connecting to upstream timed out"));
    });
    sock.once("connect", () => {
      clearTimer();
      sock.removeAllListeners("error");
      resolve(sock);
    });
    sock.once("error", () => {
      clearTimer();
      sock.destroy();
      reject(new ProxyError("connect-failed", "could not connect to upstream"));
    });
  });
}

/**
 * One SecureContext per trust-anchor list: building one parses every root (~150 PEMs), which
 * cost more than the rest of a request when it was done per connection.
 */
const contexts = new WeakMap<readonly string[], tls.SecureContext>();
function trustContext(ca: readonly string[]): tls.SecureContext {
  let c = contexts.get(ca);
  if (!c) {
    c = tls.createSecureContext({ ca: [...ca], minVersion: "TLSv1.2" });
    contexts.set(ca, c);
  }
  return c;
}

function startTls(
  raw: net.Socket,
  target: DialTarget,
  opts: DialerOptions,
): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const sock = tls.connect({
      socket: raw,
      host: target.host,
      servername: target.isIp ? undefined : target.host,
      secureContext: trustContext(opts.ca),
      rejectUnauthorized: true,
      minVersion: "TLSv1.2",
      ALPNProtocols: ["http/1.1"],
    });
    const clearTimer = deadline(opts.connectTimeoutMs, opts.busy, () => {
      sock.destroy();
      reject(new ProxyError("connect-timeout", "upstream TLS handshake timed out"));
    });
    sock.once("secureConnect", () => {
      clearTimer();
      sock.removeAllListeners("error");
      // rejectUnauthorized already failed the handshake on a bad chain; check again because
      // runtimes have had bugs where it was not enforced.
      if (!sock.authorized) {
        sock.destroy();
        reject(new ProxyError("upstream-tls", "upstream certificate is not trusted"));
        return;
      }
      resolve(sock);
    });
    sock.once("error", () => {
      clearTimer();
      sock.destroy();
      reject(new ProxyError("upstream-tls", "upstream TLS handshake failed"));
    });
  });
}

/** Resolve, check, connect (trying each allowed address), and start TLS when asked. */
export async function dialUpstream(
  target: DialTarget,
  opts: DialerOptions,
): Promise<net.Socket | tls.TLSSocket> {
  const addrs = await resolveChecked(target, opts);
  let lastErr: unknown;
  for (const a of addrs) {
    let raw: net.Socket;
    try {
      raw = await connectTcp(a.address, target.port, opts.connectTimeoutMs, opts.busy);
    } catch (e) {
      lastErr = e;
      continue;
    }
    if (!target.tls) return raw;
    return await startTls(raw, target, opts);
  }
  throw lastErr instanceof ProxyError
    ? lastErr
    : new ProxyError("connect-failed", "could not connect to upstream");
}
