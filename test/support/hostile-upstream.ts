// A hostile HTTPS upstream for leak tests, on raw node:tls so it can misbehave at the byte
// level: it records every byte every request carried (so tests can assert what left the proxy),
// then runs a per-path script that writes whatever the test wants — secrets planted in the
// status line, header names and values, trailers and bodies, in any framing, chunking, timing
// or content coding, or a connection that dies mid-body. Test-only; it must never be used
// outside tests and never prints what it receives.

import { once } from "node:events";
import net from "node:net";
import tls from "node:tls";
import type { TestCert } from "./test-pki.ts";

export interface HostileRequest {
  readonly method: string;
  readonly target: string;
  readonly headers: [string, string][];
  readonly body: Buffer;
  /** Every byte of the request as received (head and framed body). */
  readonly raw: Buffer;
  /** Which connection it came on (1 for the first the upstream accepted, and so on). */
  readonly connection?: number;
}

/** What a script may do on the socket; `sleep` and `write` keep ordering simple. */
export interface Wire {
  write(bytes: Uint8Array | string): Promise<void>;
  sleep(ms: number): Promise<void>;
  /** Close cleanly (FIN). */
  end(): Promise<void>;
  /** Reset: the agent must see an error, never a clean short body. */
  destroy(): void;
}

export type Script = (req: HostileRequest, wire: Wire) => Promise<void>;

export interface HostileUpstream extends AsyncDisposable {
  readonly port: number;
  readonly received: HostileRequest[];
  /** Connections accepted (a request the proxy never dialled leaves this unchanged). */
  readonly connections: number;
  allBytes(): Buffer;
  /** Route `/name…` to a script; the default answers 404. */
  on(prefix: string, script: Script): void;
  stop(): Promise<void>;
}

const CRLF = "\r\n";

/** Serialise a response head; headers are written exactly as given (names included). */
export function headBytes(
  status: number,
  reason: string,
  headers: readonly (readonly [string, string])[],
): Buffer {
  let s = `HTTP/1.1 ${status} ${reason}${CRLF}`;
  for (const [k, v] of headers) s += `${k}: ${v}${CRLF}`;
  return Buffer.from(`${s}${CRLF}`, "latin1");
}

/** One chunk of a chunked body. */
export function chunk(data: Uint8Array | string): Buffer {
  const b = typeof data === "string" ? Buffer.from(data, "latin1") : Buffer.from(data);
  return Buffer.concat([Buffer.from(`${b.length.toString(16)}${CRLF}`), b, Buffer.from(CRLF)]);
}

/** Write `body` as Content-Length framed, in pieces of `pieces` bytes (all at once if 0). */
export async function sendLength(
  wire: Wire,
  headers: readonly (readonly [string, string])[],
  body: Uint8Array,
  pieces = 0,
  status = 200,
): Promise<void> {
  await wire.write(headBytes(status, "OK", [...headers, ["content-length", String(body.length)]]));
  if (pieces <= 0) await wire.write(body);
  else for (let i = 0; i < body.length; i += pieces) await wire.write(body.subarray(i, i + pieces));
}

/** Write `parts` as one chunk each, then the last chunk with optional trailers. */
export async function sendChunked(
  wire: Wire,
  headers: readonly (readonly [string, string])[],
  parts: readonly Uint8Array[],
  trailers: readonly (readonly [string, string])[] = [],
  gapMs = 0,
): Promise<void> {
  await wire.write(headBytes(200, "OK", [...headers, ["transfer-encoding", "chunked"]]));
  for (const p of parts) {
    if (p.length === 0) continue;
    await wire.write(chunk(p));
    if (gapMs > 0) await wire.sleep(gapMs);
  }
  let end = `0${CRLF}`;
  for (const [k, v] of trailers) end += `${k}: ${v}${CRLF}`;
  await wire.write(Buffer.from(`${end}${CRLF}`, "latin1"));
}

/** Incremental reader of the (well-formed) requests the proxy sends. */
class RequestReader {
  #buf = Buffer.alloc(0);
  feed(d: Buffer): void {
    this.#buf = Buffer.concat([this.#buf, d]);
  }
  /** One whole request, or null when more bytes are needed. */
  take(): HostileRequest | null {
    const end = this.#buf.indexOf("\r\n\r\n");
    if (end < 0) return null;
    const headText = this.#buf.subarray(0, end).toString("latin1");
    const [line = "", ...fieldLines] = headText.split("\r\n");
    const [method = "", target = ""] = line.split(" ");
    const headers = fieldLines.map((l): [string, string] => {
      const i = l.indexOf(":");
      return [l.slice(0, i).toLowerCase(), l.slice(i + 1).trim()];
    });
    const get = (n: string) => headers.find(([k]) => k === n)?.[1];
    let at = end + 4;
    let body: Buffer;
    if (get("transfer-encoding")?.toLowerCase() === "chunked") {
      const parts: Buffer[] = [];
      for (;;) {
        const lineEnd = this.#buf.indexOf("\r\n", at);
        if (lineEnd < 0) return null;
        const size = Number.parseInt(this.#buf.subarray(at, lineEnd).toString("latin1"), 16);
        if (size === 0) {
          const trailerEnd = this.#buf.indexOf("\r\n\r\n", lineEnd);
          const direct = this.#buf.subarray(lineEnd, lineEnd + 4).toString() === "\r\n\r\n";
          if (direct) at = lineEnd + 4;
          else if (trailerEnd >= 0) at = trailerEnd + 4;
          else return null;
          break;
        }
        if (this.#buf.length < lineEnd + 2 + size + 2) return null;
        parts.push(this.#buf.subarray(lineEnd + 2, lineEnd + 2 + size));
        at = lineEnd + 2 + size + 2;
      }
      body = Buffer.concat(parts);
    } else {
      const n = Number(get("content-length") ?? "0");
      if (this.#buf.length < at + n) return null;
      body = Buffer.from(this.#buf.subarray(at, at + n));
      at += n;
    }
    const raw = Buffer.from(this.#buf.subarray(0, at));
    this.#buf = Buffer.from(this.#buf.subarray(at));
    return { method, target, headers, body, raw };
  }
  /** Bytes of an incomplete request (recorded too: a partial body still "reached" us). */
  pending(): Buffer {
    return this.#buf;
  }
}

/** `cert` null: plain TCP (for the never-inject-into-http:// tests). */
export async function startHostileUpstream(cert: TestCert | null): Promise<HostileUpstream> {
  const received: HostileRequest[] = [];
  const partial: Buffer[] = [];
  const routes: [string, Script][] = [];
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = cert
    ? tls.createServer({ cert: cert.certPem, key: cert.keyPem, ALPNProtocols: ["http/1.1"] })
    : net.createServer();
  server.on(cert ? "secureConnection" : "connection", (sock: net.Socket) => {
    connections++;
    const connection = connections;
    sockets.add(sock);
    sock.on("close", () => sockets.delete(sock));
    sock.on("error", () => {});
    const reader = new RequestReader();
    let busy: Promise<void> = Promise.resolve();
    const wire: Wire = {
      write: (bytes) =>
        new Promise<void>((resolve) => {
          if (sock.destroyed) return resolve();
          sock.write(bytes, () => resolve());
        }),
      sleep: (ms) => new Promise((r) => setTimeout(r, ms)),
      end: async () => {
        if (!sock.destroyed) {
          sock.end();
          await once(sock, "close").catch(() => {});
        }
      },
      destroy: () => sock.destroy(),
    };
    sock.on("data", (d: Buffer) => {
      reader.feed(d);
      for (;;) {
        const req = reader.take();
        if (!req) break;
        received.push({ ...req, connection });
        const script = routes.find(([p]) => req.target.startsWith(p))?.[1] ?? notFound;
        busy = busy
          .then(() => script(req, wire))
          .catch(() => {
            sock.destroy();
          });
      }
    });
    sock.on("close", () => {
      const rest = reader.pending();
      if (rest.length > 0) partial.push(Buffer.from(rest));
    });
  });
  server.listen(0, "127.0.0.1");
  await once(server, "listening");
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : 0;
  const stop = async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  };
  return {
    port,
    received,
    get connections() {
      return connections;
    },
    allBytes: () => Buffer.concat([...received.map((r) => r.raw), ...partial]),
    on(prefix, script) {
      routes.unshift([prefix, script]);
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}

const notFound: Script = async (_req, wire) => {
  await sendLength(wire, [["content-type", "text/plain"]], Buffer.from("no such script\n"), 0, 404);
};
