// A hostile agent for the leak and desync tests: it opens intercepted tunnels (or the outer
// mTLS connection) with the raw agent, writes whatever bytes a test wants, reads until the
// proxy closes, and parses the answer leniently (status, head, de-chunked body, and whether the
// body ended cleanly). Every byte it ever receives is kept in `seen`, so a test can assert
// that across a whole run the agent side received no real secret. Test-only.

import { readFileSync } from "node:fs";
import tls from "node:tls";
import type { Harness } from "./proxy-harness.ts";
import { openProxyConnection, openTunnel } from "./raw-agent.ts";

export interface AgentAnswer {
  /** 0 when no status line arrived. */
  readonly status: number;
  readonly head: string;
  readonly body: Buffer;
  /** True when the body's framing completed (chunked terminator or full Content-Length). */
  readonly complete: boolean;
  /** Every byte received on this connection. */
  readonly raw: Buffer;
}

export class HostileAgent {
  /** Every byte the agent side received, across all connections. */
  readonly seen: Buffer[] = [];
  constructor(private readonly h: Harness) {}

  #opts(agent?: string) {
    const name = agent ?? Object.keys(this.h.agents)[0]!;
    return { port: this.h.port, caBundlePath: this.h.caBundlePath, agent: this.h.agents[name]! };
  }

  tunnel(connect: string, sni?: string, agent?: string): Promise<tls.TLSSocket> {
    return openTunnel(this.#opts(agent), { connect, ...(sni !== undefined ? { sni } : {}) });
  }

  /** A tunnel whose outer (mTLS) socket is exposed too: pausing it stops reading at TCP. */
  async tunnelPair(connect: string): Promise<{ inner: tls.TLSSocket; outer: tls.TLSSocket }> {
    const outer = await this.outer();
    outer.write(`CONNECT ${connect} HTTP/1.1\r\nHost: ${connect}\r\n\r\n`);
    const head = await new Promise<string>((resolve, reject) => {
      let buf = Buffer.alloc(0);
      const onData = (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        const i = buf.indexOf("\r\n\r\n");
        if (i < 0) return;
        outer.off("data", onData);
        resolve(buf.subarray(0, i).toString("latin1"));
      };
      outer.on("data", onData);
      outer.once("close", () => reject(new Error("closed before CONNECT answer")));
    });
    if (!head.startsWith("HTTP/1.1 200"))
      throw new Error(`CONNECT refused: ${head.split("\r\n")[0]}`);
    const inner = await new Promise<tls.TLSSocket>((resolve, reject) => {
      const s = tls.connect({
        socket: outer,
        servername: connect.replace(/:\d+$/, ""),
        ca: readFileSync(this.h.caBundlePath, "utf8"),
        ALPNProtocols: ["http/1.1"],
      });
      s.once("secureConnect", () => resolve(s));
      s.once("error", reject);
    });
    return { inner, outer };
  }

  outer(agent?: string): Promise<tls.TLSSocket> {
    return openProxyConnection(this.#opts(agent));
  }

  /**
   * Write `bytes` (optionally as several writes with `gapMs` between them), half-close if
   * asked, and read until the proxy closes (or `maxMs` passes: then the socket is destroyed).
   */
  async send(
    s: tls.TLSSocket,
    bytes: string | Uint8Array | readonly (string | Uint8Array)[],
    o: {
      gapMs?: number;
      end?: boolean;
      maxMs?: number;
      /** Stop reading (and destroy the socket) once this says the answer is complete. */
      until?: (received: Buffer) => boolean;
    } = {},
  ): Promise<AgentAnswer> {
    const parts: Buffer[] = [];
    const closed = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        s.destroy();
        resolve();
      }, o.maxMs ?? 15_000);
      s.on("data", (d: Buffer) => {
        parts.push(d);
        if (o.until?.(Buffer.concat(parts))) s.destroy();
      });
      s.once("close", () => {
        clearTimeout(timer);
        resolve();
      });
      s.on("error", () => {});
    });
    const list = Array.isArray(bytes) ? bytes : [bytes];
    for (const [i, b] of list.entries()) {
      if (s.destroyed) break;
      s.write(typeof b === "string" ? Buffer.from(b, "latin1") : b);
      if (o.gapMs && i < list.length - 1) await Bun.sleep(o.gapMs);
    }
    if (o.end) s.end();
    await closed;
    const raw = Buffer.concat(parts);
    this.seen.push(raw);
    return parseAnswer(raw);
  }

  /** One request through a fresh tunnel to `connect`, `Connection: close` added. */
  async request(
    connect: string,
    method: string,
    path: string,
    headers: readonly (readonly [string, string])[] = [],
    body?: string | Uint8Array,
  ): Promise<AgentAnswer> {
    const s = await this.tunnel(connect);
    const host = connect;
    let head = `${method} ${path} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n`;
    for (const [k, v] of headers) head += `${k}: ${v}\r\n`;
    const b = body === undefined ? undefined : Buffer.from(body as string, "latin1");
    if (b) head += `Content-Length: ${b.length}\r\n`;
    head += "\r\n";
    return this.send(s, b ? [Buffer.concat([Buffer.from(head, "latin1"), b])] : head);
  }

  allSeen(): Buffer {
    return Buffer.concat(this.seen);
  }
}

/** Lenient parse of one HTTP/1.1 response (the proxy frames bodies chunked or by length). */
export function parseAnswer(raw: Buffer): AgentAnswer {
  const end = raw.indexOf("\r\n\r\n");
  if (end < 0)
    return { status: 0, head: raw.toString("latin1"), body: Buffer.alloc(0), complete: false, raw };
  const head = raw.subarray(0, end).toString("latin1");
  const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1] ?? 0);
  const rest = raw.subarray(end + 4);
  const lower = head.toLowerCase();
  if (/\r\ntransfer-encoding: *chunked/.test(lower)) {
    const parts: Buffer[] = [];
    let at = 0;
    for (;;) {
      const le = rest.indexOf("\r\n", at);
      if (le < 0) return { status, head, body: Buffer.concat(parts), complete: false, raw };
      const size = Number.parseInt(rest.subarray(at, le).toString("latin1"), 16);
      if (!Number.isFinite(size))
        return { status, head, body: Buffer.concat(parts), complete: false, raw };
      if (size === 0) {
        return {
          status,
          head,
          body: Buffer.concat(parts),
          complete: rest.indexOf("\r\n", le + 2) >= 0,
          raw,
        };
      }
      if (rest.length < le + 2 + size + 2) {
        parts.push(rest.subarray(le + 2));
        return { status, head, body: Buffer.concat(parts), complete: false, raw };
      }
      parts.push(rest.subarray(le + 2, le + 2 + size));
      at = le + 2 + size + 2;
    }
  }
  const cl = /\r\ncontent-length: *(\d+)/.exec(lower);
  if (cl) {
    const n = Number(cl[1]);
    return { status, head, body: rest.subarray(0, n), complete: rest.length >= n, raw };
  }
  return { status, head, body: rest, complete: true, raw };
}
