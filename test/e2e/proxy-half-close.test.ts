// End-to-end: an agent that half-closes — sends its request, then ends its side of the
// connection (TLS close_notify) while still reading — gets the answer it is owed on a plain
// proxied request (absolute-form http://), held whole or streamed. Inside a CONNECT tunnel the
// runtime ends the carrier connection as soon as the inner TLS receives close_notify, so there
// it cannot (docs/ARCHITECTURE.md, honest limits); HTTP/1.1 clients do not half-close.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import tls from "node:tls";
import { type Harness, startHarness } from "../support/proxy-harness.ts";

let h: Harness;
let plain: ReturnType<typeof Bun.serve>;

beforeAll(async () => {
  // A credential (bound elsewhere) makes every answer go through redaction: small ones are
  // held whole, large ones streamed.
  h = await startHarness({
    credentials: [
      {
        name: "svc",
        dummy: "sk-dummy-half-0000000001",
        real: "sk-real-half-00000000001",
        hosts: ["api.example:443"],
      },
    ],
    allow: ["localhost:*"],
  });
  // A plain-HTTP upstream that answers with the body it received.
  plain = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    async fetch(req) {
      return new Response(await req.arrayBuffer());
    },
  });
});

afterAll(async () => {
  plain?.stop(true);
  await h?.close();
});

/** Everything the socket receives until it closes (or `ms` pass). */
function readToClose(s: tls.TLSSocket, ms = 3000): Promise<Buffer> {
  return new Promise((resolve) => {
    const parts: Buffer[] = [];
    const done = () => resolve(Buffer.concat(parts));
    s.on("data", (d: Buffer) => parts.push(d));
    s.on("error", () => {});
    s.on("close", done);
    setTimeout(done, ms);
  });
}

describe("an agent that half-closes after its request still gets the answer", () => {
  for (const [label, size] of [
    ["held whole", 5000],
    ["streamed", 300_000],
  ] as const) {
    test(`plain proxied request, answer ${label}`, async () => {
      const agent = h.agents["agent-a"]!;
      const s = tls.connect({
        host: "127.0.0.1",
        port: h.port,
        servername: "localhost",
        ca: readFileSync(h.caBundlePath, "utf8"),
        cert: readFileSync(agent.certPath, "utf8"),
        key: readFileSync(agent.keyPath, "utf8"),
        allowHalfOpen: true,
      } as tls.ConnectionOptions);
      await new Promise((r, j) => s.once("secureConnect", r).once("error", j));
      const answer = readToClose(s);
      s.write(
        `POST http://localhost:${plain.port}/half-${size} HTTP/1.1\r\nHost: localhost:${plain.port}\r\nContent-Length: ${size}\r\n\r\n`,
      );
      s.end(Buffer.alloc(size, "z")); // the request is all the agent will send
      const got = (await answer).toString("latin1");
      expect(got.startsWith("HTTP/1.1 200")).toBe(true);
      const head = got.slice(0, got.indexOf("\r\n\r\n")).toLowerCase();
      expect(head).toContain(
        label === "held whole" ? `content-length: ${size}` : "transfer-encoding: chunked",
      );
      const body = got.slice(got.indexOf("\r\n\r\n") + 4);
      // Held answers carry a Content-Length; streamed ones are chunked: count the z's.
      expect(body.split("z").length - 1).toBe(size);
    });
  }
});
