// A WebSocket upstream that streams binary messages one way as fast as its socket takes them:
// each text message it gets is the number of `payload` messages to send back. For the relay's
// throughput bench and its stall test. Test and bench only.

import type { ServerWebSocket } from "bun";
import type { TestCert } from "./test-pki.ts";

export function startWsFlood(cert: TestCert, payload: Uint8Array): ReturnType<typeof Bun.serve> {
  const pump = (ws: ServerWebSocket<{ left: number }>) => {
    while (ws.data.left > 0) {
      ws.data.left -= 1;
      if (ws.send(payload) === -1) return; // backpressure: `drain` goes on
    }
  };
  return Bun.serve<{ left: number }>({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: cert.certPem, key: cert.keyPem },
    fetch(req, srv) {
      return srv.upgrade(req, { data: { left: 0 } })
        ? undefined
        : new Response("websocket only", { status: 400 });
    },
    websocket: {
      message(ws, m) {
        ws.data.left = Number(String(m));
        pump(ws);
      },
      drain: pump,
    },
  });
}
