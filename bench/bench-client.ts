// The HTTPS client the proxy benchmark drives: one keep-alive HTTP/1.1 connection to an origin,
// either direct, through SLAPENIR (mTLS to the proxy, CONNECT, TLS inside) or through a plain
// HTTP proxy such as mitmproxy (TCP, CONNECT, TLS inside). The same code path serves all three
// routes, so the benchmark compares the proxies and not the clients. Responses are parsed with
// the project's strict parser and counted, never kept. Bench only.

import { readFileSync } from "node:fs";
import net from "node:net";
import tls from "node:tls";
import { ResponseParser } from "../src/http/response-parser.ts";

export type Route =
  | { readonly kind: "direct"; readonly originCaPem: string }
  | {
      readonly kind: "slapenir";
      readonly port: number;
      readonly caPem: string;
      readonly certPem: string;
      readonly keyPem: string;
    }
  | { readonly kind: "http-proxy"; readonly port: number; readonly caPem: string };

export interface Origin {
  readonly host: string;
  readonly port: number;
}

export function slapenirRoute(p: {
  port: number;
  caBundlePath: string;
  agent: { certPath: string; keyPath: string };
}): Route {
  return {
    kind: "slapenir",
    port: p.port,
    caPem: readFileSync(p.caBundlePath, "utf8"),
    certPem: readFileSync(p.agent.certPath, "utf8"),
    keyPem: readFileSync(p.agent.keyPath, "utf8"),
  };
}

function once<T>(s: net.Socket, ok: string): Promise<T> {
  return new Promise((resolve, reject) => {
    const onOk = (v: T) => {
      s.off("error", onErr);
      resolve(v);
    };
    const onErr = (e: Error) => {
      s.off(ok, onOk);
      reject(e);
    };
    s.once(ok, onOk);
    s.once("error", onErr);
  });
}

/** Send CONNECT on `s` and wait for a 2xx head (nothing may follow it before our TLS). */
function connectTunnel(s: net.Socket, origin: Origin): Promise<void> {
  const authority = `${origin.host}:${origin.port}`;
  s.write(`CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n\r\n`);
  return new Promise((resolve, reject) => {
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString("latin1");
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      s.off("data", onData);
      s.pause();
      if (/^HTTP\/1\.[01] 2\d\d/.test(buf)) resolve();
      else reject(new Error(`CONNECT refused: ${buf.split("\r\n")[0]}`));
    };
    s.on("data", onData);
    s.once("error", reject);
  });
}

/**
 * TLS sessions kept between connections of one client, as clients that resume do (curl within
 * one process, Node's https agent, Go): offered on the next connection's handshakes.
 */
export interface SessionCache {
  outer?: Buffer;
  inner?: Buffer;
  /** Handshakes that were resumptions, of those that offered a session. */
  resumed: number;
  offered: number;
}

export function sessionCache(): SessionCache {
  return { resumed: 0, offered: 0 };
}

function remember(s: tls.TLSSocket, cache: SessionCache | undefined, which: "outer" | "inner") {
  if (!cache) return;
  s.on("session", (session: Buffer) => {
    cache[which] = session;
  });
}

function countResumption(s: tls.TLSSocket, cache: SessionCache | undefined, offered: boolean) {
  if (!cache || !offered) return;
  cache.offered++;
  if (s.isSessionReused()) cache.resumed++;
}

export class BenchConnection {
  readonly #sock: tls.TLSSocket;
  readonly #outer: net.Socket | null;
  readonly #authority: string;
  #parser = new ResponseParser();
  #waiter: { resolve: (n: number) => void; reject: (e: Error) => void } | null = null;
  #bytes = 0;
  #status = 0;

  private constructor(sock: tls.TLSSocket, outer: net.Socket | null, origin: Origin) {
    this.#sock = sock;
    this.#outer = outer;
    this.#authority = `${origin.host}:${origin.port}`;
    sock.on("data", (d: Buffer) => this.#data(d));
    const fail = (e: Error) => {
      const w = this.#waiter;
      this.#waiter = null;
      w?.reject(e);
    };
    sock.on("error", fail);
    sock.on("close", () => fail(new Error("connection closed")));
  }

  /** `sessions`: offer and keep TLS sessions (resumption); without it every handshake is full. */
  static async open(
    route: Route,
    origin: Origin,
    sessions?: SessionCache,
  ): Promise<BenchConnection> {
    let outer: net.Socket | null = null;
    let innerCa: string;
    if (route.kind === "direct") {
      innerCa = route.originCaPem;
    } else if (route.kind === "slapenir") {
      const s = tls.connect({
        host: "127.0.0.1",
        port: route.port,
        servername: "localhost",
        ca: route.caPem,
        cert: route.certPem,
        key: route.keyPem,
        ALPNProtocols: ["http/1.1"],
        ...(sessions?.outer ? { session: sessions.outer } : {}),
      });
      const offered = sessions?.outer !== undefined;
      remember(s, sessions, "outer");
      s.setNoDelay(true);
      await once(s, "secureConnect");
      countResumption(s, sessions, offered);
      await connectTunnel(s, origin);
      outer = s;
      innerCa = route.caPem;
    } else {
      const s = net.connect({ host: "127.0.0.1", port: route.port, noDelay: true });
      await once(s, "connect");
      await connectTunnel(s, origin);
      outer = s;
      innerCa = route.caPem;
    }
    const inner = tls.connect({
      ...(outer
        ? { socket: outer }
        : { host: "127.0.0.1", port: origin.port, noDelay: true as const }),
      servername: origin.host,
      ca: innerCa,
      ALPNProtocols: ["http/1.1"],
      ...(sessions?.inner ? { session: sessions.inner } : {}),
    });
    const offered = sessions?.inner !== undefined;
    remember(inner, sessions, "inner");
    await once(inner, "secureConnect");
    countResumption(inner, sessions, offered);
    outer?.resume();
    return new BenchConnection(inner, outer, origin);
  }

  /** One request; resolves with the response body's byte count once it ended. */
  request(method: string, path: string, body: Uint8Array | null): Promise<number> {
    if (this.#waiter) throw new Error("one request at a time");
    this.#parser.expect(method);
    this.#bytes = 0;
    this.#status = 0;
    const head =
      `${method} ${path} HTTP/1.1\r\nHost: ${this.#authority}\r\n` +
      (body ? `Content-Length: ${body.length}\r\nContent-Type: application/json\r\n` : "") +
      "\r\n";
    const p = new Promise<number>((resolve, reject) => {
      this.#waiter = { resolve, reject };
    });
    if (body) {
      // One write: head and body leave together, as a real client's buffered writer would.
      const h = Buffer.from(head, "latin1");
      const all = new Uint8Array(h.length + body.length);
      all.set(h, 0);
      all.set(body, h.length);
      this.#sock.write(all);
    } else {
      this.#sock.write(head);
    }
    return p;
  }

  #data(d: Buffer): void {
    for (const ev of this.#parser.feed(d)) {
      if (ev.type === "head") {
        if (!ev.head.interim) this.#status = ev.head.status;
      } else if (ev.type === "body") {
        this.#bytes += ev.data.length;
      } else if (ev.type === "end") {
        const w = this.#waiter;
        this.#waiter = null;
        if (this.#status !== 200) w?.reject(new Error(`status ${this.#status}`));
        else w?.resolve(this.#bytes);
      } else if (ev.type === "error") {
        const w = this.#waiter;
        this.#waiter = null;
        w?.reject(new Error(`bad response: ${ev.error.code}`));
      }
    }
  }

  close(): void {
    this.#sock.destroy();
    this.#outer?.destroy();
  }
}
