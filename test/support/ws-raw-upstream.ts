// A WebSocket upstream written by hand, for tests that must control every byte it sends: a TLS
// server that reads a handshake's head and hands the socket (and the handshake's key) to the
// test, which answers as it likes — `ok101(key)` is the plain answer. Test only.

import tls from "node:tls";
import { acceptFor } from "../../src/exchange/stages/upgrade.ts";
import type { TestCert } from "./test-pki.ts";

/** The 101 a plain server answers `key` with (extra fields, each ending in CRLF, before the end). */
export const ok101 = (key: string, extra = "") =>
  `HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: ${acceptFor(key)}\r\n${extra}\r\n`;

export interface RawWsUpstream {
  readonly port: number;
  /** Every connection it took, for tests that end them. */
  readonly sockets: tls.TLSSocket[];
  close(): void;
}

export async function startRawWsUpstream(
  cert: TestCert,
  onHandshake: (s: tls.TLSSocket, key: string, head: string) => void,
): Promise<RawWsUpstream> {
  const sockets: tls.TLSSocket[] = [];
  const server = tls.createServer({ cert: cert.certPem, key: cert.keyPem }, (s) => {
    sockets.push(s);
    let buf = Buffer.alloc(0);
    s.on("error", () => {});
    const onData = (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const i = buf.indexOf("\r\n\r\n");
      if (i < 0) return;
      s.off("data", onData);
      const head = buf.subarray(0, i).toString("latin1");
      onHandshake(s, /sec-websocket-key:\s*(\S+)/i.exec(head)?.[1] ?? "", head);
    };
    s.on("data", onData);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  return {
    port: (server.address() as { port: number }).port,
    sockets,
    close: () => {
      for (const s of sockets) s.destroy();
      server.close();
    },
  };
}
