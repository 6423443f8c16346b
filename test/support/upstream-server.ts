// Test upstreams on loopback: an HTTPS echo server that records every request it receives
// (so tests can assert what left the proxy) and answers with a JSON echo of it (so tests can
// assert what came back). Test-only.

import type { TestCert } from "./test-pki.ts";

export interface ReceivedRequest {
  readonly method: string;
  readonly host: string;
  /** path + query as received */
  readonly target: string;
  readonly headers: [string, string][];
  readonly body: Uint8Array;
}

export interface EchoServer extends AsyncDisposable {
  readonly port: number;
  readonly received: ReceivedRequest[];
  /** All bytes any request carried (head and body), for "never saw X" assertions. */
  allBytes(): Buffer;
  stop(): Promise<void>;
}

export type Responder = (req: Request, received: ReceivedRequest) => Response | Promise<Response>;

export function echoResponse(_req: Request, r: ReceivedRequest): Response {
  return Response.json({
    method: r.method,
    target: r.target,
    headers: r.headers,
    body: Buffer.from(r.body).toString("latin1"),
  });
}

export function startEchoServer(cert: TestCert, respond: Responder = echoResponse): EchoServer {
  const received: ReceivedRequest[] = [];
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: cert.certPem, key: cert.keyPem },
    async fetch(req) {
      const url = new URL(req.url);
      const body = new Uint8Array(await req.arrayBuffer());
      const r: ReceivedRequest = {
        method: req.method,
        host: req.headers.get("host") ?? "",
        target: url.pathname + url.search,
        headers: [...req.headers.entries()],
        body,
      };
      received.push(r);
      return respond(req, r);
    },
  });
  const stop = async () => {
    server.stop(true);
  };
  return {
    port: server.port!,
    received,
    allBytes() {
      return Buffer.concat(
        received.map((r) =>
          Buffer.concat([
            Buffer.from(
              `${r.method} ${r.target}\n${r.headers.map(([k, v]) => `${k}: ${v}`).join("\n")}\n`,
              "latin1",
            ),
            Buffer.from(r.body),
          ]),
        ),
      );
    },
    stop,
    [Symbol.asyncDispose]: stop,
  };
}
