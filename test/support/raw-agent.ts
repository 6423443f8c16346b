// A hand-driven agent for tests that must send bytes no well-behaved client would: it opens
// mTLS to the proxy, optionally CONNECTs and starts TLS inside the tunnel (with any SNI), then
// writes raw bytes and collects what the proxy answers: until the answers it waits for are
// complete, or the proxy closes — never "until it goes quiet", which a busy machine mistakes
// for an answer. Test-only.

import { readFileSync } from "node:fs";
import type net from "node:net";
import tls from "node:tls";
import { ResponseParser } from "../../src/http/response-parser.ts";
import type { AgentFiles } from "./proxy-harness.ts";

export interface RawAgentOptions {
  readonly port: number;
  readonly caBundlePath: string;
  readonly agent?: AgentFiles;
  /** Source address (any 127.x.y.z works on Linux loopback): another peer, to the proxy. */
  readonly localAddress?: string;
}

export interface TunnelOptions {
  /** CONNECT target `host:port`. */
  readonly connect: string;
  /** SNI for the inner handshake (default: the CONNECT host). */
  readonly sni?: string;
  /** Verify the proxy's leaf (default true); an attacker's client may well not. */
  readonly verify?: boolean;
}

function connectOuter(o: RawAgentOptions): Promise<tls.TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = tls.connect({
      host: "127.0.0.1",
      port: o.port,
      servername: "localhost",
      ca: readFileSync(o.caBundlePath, "utf8"),
      ...(o.localAddress ? { localAddress: o.localAddress } : {}),
      ...(o.agent
        ? {
            cert: readFileSync(o.agent.certPath, "utf8"),
            key: readFileSync(o.agent.keyPath, "utf8"),
          }
        : {}),
    });
    s.once("secureConnect", () => resolve(s));
    s.once("error", reject);
  });
}

/**
 * Read until one complete answer per method in `methods` (the requests' methods, in order: an
 * answer to HEAD has no body) has arrived, or the peer closes or fails. Interim answers (100
 * Continue) are kept but do not count; an answer to CONNECT ends at its head when it opens a
 * tunnel. Returns every byte received up to then.
 */
export function readAnswers(
  s: tls.TLSSocket,
  methods: readonly string[] = ["GET"],
): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    const parser = new ResponseParser();
    for (const m of methods) parser.expect(m);
    let left = methods.length;
    function done() {
      s.off("data", onData);
      s.off("close", done);
      s.off("error", done);
      resolve(Buffer.concat(parts));
    }
    function onData(d: Buffer) {
      parts.push(d);
      for (const ev of parser.feed(new Uint8Array(d))) {
        const complete =
          ev.type === "end" ||
          (ev.type === "head" && ev.head.switchesProtocol) ||
          ev.type === "error";
        if (complete && --left <= 0) return done();
      }
    }
    s.on("data", onData);
    s.once("close", done);
    s.once("error", done);
  });
}

/** Read everything until the peer closes (or fails). */
export function readToClose(s: tls.TLSSocket): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    const done = () => resolve(Buffer.concat(parts));
    s.on("data", (d: Buffer) => parts.push(d));
    s.once("close", done);
    s.once("error", done);
  });
}

/** Read one head (up to its blank line); bytes after it stay readable. */
export function readHead(s: tls.TLSSocket): Promise<string> {
  return new Promise((resolve, reject) => {
    let buf = Buffer.alloc(0);
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const i = buf.indexOf("\r\n\r\n");
      if (i >= 0) {
        s.off("data", onData);
        if (i + 4 < buf.length) s.unshift(buf.subarray(i + 4));
        resolve(buf.subarray(0, i).toString("latin1"));
      }
    };
    s.on("data", onData);
    s.once("close", () => reject(new Error(`closed before head: ${buf.toString("latin1")}`)));
  });
}

/** Open a tunnel: CONNECT, expect 200, start TLS inside trusting the proxy CA. */
export async function openTunnel(o: RawAgentOptions, t: TunnelOptions): Promise<tls.TLSSocket> {
  const outer = await connectOuter(o);
  outer.write(`CONNECT ${t.connect} HTTP/1.1\r\nHost: ${t.connect}\r\n\r\n`);
  const head = await readHead(outer);
  if (!head.startsWith("HTTP/1.1 200")) {
    outer.destroy();
    throw new Error(`CONNECT refused: ${head.split("\r\n")[0]}`);
  }
  const host = t.connect.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return await new Promise((resolve, reject) => {
    const inner = tls.connect({
      socket: outer,
      servername: t.sni ?? host,
      ca: readFileSync(o.caBundlePath, "utf8"),
      ALPNProtocols: ["http/1.1"],
      ...(t.verify === false ? { rejectUnauthorized: false } : {}),
    });
    inner.once("secureConnect", () => resolve(inner));
    inner.once("error", reject);
  });
}

/** The outer connection only (for absolute-form and CONNECT-level tests). */
export function openProxyConnection(o: RawAgentOptions): Promise<tls.TLSSocket> {
  return connectOuter(o);
}

/** Send raw bytes and collect the answers to the requests they carry (see readAnswers). */
export async function exchangeRaw(
  s: tls.TLSSocket,
  bytes: Uint8Array | string,
  methods?: readonly string[],
): Promise<Buffer> {
  const reply = readAnswers(s, methods);
  s.write(typeof bytes === "string" ? Buffer.from(bytes, "latin1") : bytes);
  return reply;
}

/**
 * Ends a tunnel and the connection under it (any other socket: just it). Destroying only the
 * inner TLS socket leaves the outer connection open in this runtime, so the proxy would see an
 * agent that stopped reading (and keep it until its write deadline) instead of one that left.
 */
export function closeTunnel(t: net.Socket): void {
  const outer = carrierOf(t);
  t.destroy();
  outer?.destroy();
}

/**
 * Sends `request` in the tunnel and stops reading once the answer starts: the tunnel and the
 * connection under it are paused (pausing the tunnel alone leaves the runtime reading the
 * outer connection into memory here), so the proxy's buffers for that answer stay full. Resolves
 * once the answer started (or the tunnel closed first).
 */
export function stallAfterHead(t: tls.TLSSocket, request: string): Promise<void> {
  const answered = new Promise<void>((resolve) => {
    t.once("data", (d: Buffer) => {
      readBeforeStall.set(t, d);
      t.pause();
      carrierOf(t)?.pause();
      resolve();
    });
    t.once("close", () => resolve());
  });
  t.write(request);
  return answered;
}

const readBeforeStall = new WeakMap<tls.TLSSocket, Buffer>();

/**
 * The status of the answer stallAfterHead stopped in, and the proxy's error code when the answer
 * is the proxy's own (`x-slapenir-error`); null when its first bytes held no whole head.
 */
export function stalledAnswer(t: tls.TLSSocket): { status: number; error?: string } | null {
  const first = readBeforeStall.get(t)?.toString("latin1") ?? "";
  const end = first.indexOf("\r\n\r\n");
  if (end < 0) return null;
  const head = first.slice(0, end);
  const error = proxyErrorCode(head);
  return { status: Number(head.split(" ")[1]), ...(error ? { error } : {}) };
}

/** Reads again after stallAfterHead: the tunnel and its outer connection. */
function resumeTunnel(t: tls.TLSSocket): void {
  carrierOf(t)?.resume();
  t.resume();
}

/**
 * Reads a stalled tunnel again until it closes: the bytes it then got, or null when it is still
 * open after `timeoutMs` (no limit without one).
 */
export function readUntilClosed(t: tls.TLSSocket, timeoutMs?: number): Promise<number | null> {
  return new Promise((done) => {
    let got = 0;
    const timer = timeoutMs === undefined ? undefined : setTimeout(() => done(null), timeoutMs);
    t.on("data", (d: Buffer) => {
      got += d.length;
    });
    t.once("close", () => {
      clearTimeout(timer);
      done(got);
    });
    resumeTunnel(t);
  });
}

/**
 * Reads a stalled tunnel again until it closes (the tunnel or the connection under it), has
 * `enough` bytes in all, or gets nothing for `idleMs`: which, and the bytes it got in all (those
 * stallAfterHead read included).
 */
export function readAgain(
  t: tls.TLSSocket,
  enough: number,
  idleMs: number,
): Promise<{ ended: "closed" | "enough" | "idle"; got: number }> {
  return new Promise((done) => {
    let got = readBeforeStall.get(t)?.length ?? 0;
    if (t.destroyed) return done({ ended: "closed", got });
    let idle: ReturnType<typeof setTimeout> | undefined;
    const end = (ended: "closed" | "enough" | "idle") => {
      clearTimeout(idle);
      done({ ended, got });
    };
    const wait = () => {
      clearTimeout(idle);
      idle = setTimeout(() => end("idle"), idleMs);
    };
    t.on("data", (d: Buffer) => {
      got += d.length;
      if (got >= enough) end("enough");
      else wait();
    });
    t.once("close", () => end("closed"));
    carrierOf(t)?.once("close", () => end("closed"));
    wait();
    resumeTunnel(t);
  });
}

/** The outer connection a tunnel's TLS runs over (the runtime keeps it as `_parent`). */
function carrierOf(t: net.Socket): tls.TLSSocket | undefined {
  return (t as unknown as { _parent?: tls.TLSSocket })._parent;
}

/** The code of the proxy's own answer (`x-slapenir-error`), undefined for an upstream's. */
export function proxyErrorCode(head: string): string | undefined {
  return /^x-slapenir-error: (.+)$/im.exec(head)?.[1]?.trim();
}

/** A CONNECT to `target` on a new connection: the answer's status and the proxy's code. */
export async function connectAnswer(
  o: RawAgentOptions,
  target: string,
): Promise<{ status: number; error: string | undefined }> {
  const s = await connectOuter(o);
  try {
    const reply = await exchangeRaw(s, `CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`, [
      "CONNECT",
    ]);
    const head = reply.toString("latin1");
    return { status: Number(head.split(" ")[1]), error: proxyErrorCode(head) };
  } finally {
    s.destroy();
  }
}
