// WebSocket throughput through the proxy (issue 17), against the same messages sent direct in
// the same run: an upstream (Bun's WebSocket server, in this process) streams binary messages
// of 64 KiB one way as fast as its socket takes them; the client (the same code for both
// routes: TLS, the handshake by hand, http/ws-frames.ts to read) counts them. Through the
// proxy every message streams through a matcher stream of the redaction set (a credential is
// configured) and is framed again; the proxy process's peak RSS is sampled from /proc.
// Run: `bun bench/websocket.bench.ts` (BENCH_WS_MIB=64 by default per run; BENCH_WS_MESSAGE_KIB
// sets the message size, 64 by default: up to 64 KiB a message is scanned whole, above it
// streamed).

import tls from "node:tls";
import { type FrameEvent, FrameReader } from "../src/http/ws-frames.ts";
import { startProxyProcess } from "../test/support/proxy-process.ts";
import { openTunnel, readHead } from "../test/support/raw-agent.ts";
import { startWsFlood } from "../test/support/ws-flood.ts";

const MESSAGE = Number(process.env.BENCH_WS_MESSAGE_KIB ?? 64) * 1024;
const MIB = Number(process.env.BENCH_WS_MIB ?? 64);
const COUNT = Math.floor((MIB * 1024 * 1024) / MESSAGE);
const RUNS = 3;

const proxy = await startProxyProcess({
  credentials: [
    {
      name: "bench",
      dummy: "ws-dummy-bench-00000000000001",
      real: "ws-real-bench-9f8e7d6c5b4a3928",
      hosts: ["localhost:*"],
    },
  ],
  env: { SLAPENIR_RATE_LIMIT: "off" },
});
const cert = await proxy.upstreamCa.issue(["localhost", "127.0.0.1"]);
const payload = new Uint8Array(MESSAGE).map((_, i) => (i * 131) & 0xff);
const server = startWsFlood(cert, payload);

/** A WebSocket over `socket`: handshake, then `COUNT` messages asked for and counted. */
async function run(socket: tls.TLSSocket): Promise<number> {
  socket.write(
    `GET / HTTP/1.1\r\nHost: localhost:${server.port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n`,
  );
  const head = await readHead(socket);
  if (!head.startsWith("HTTP/1.1 101")) throw new Error(`no 101: ${head.split("\r\n")[0]}`);
  const reader = new FrameReader({ from: "server", maxFrameBytes: 1 << 30, deflate: false });
  const start = performance.now();
  let got = 0;
  let bytes = 0;
  await new Promise<void>((done, fail) => {
    socket.on("data", (d: Buffer) => {
      for (const e of reader.push(new Uint8Array(d)) as FrameEvent[]) {
        if (e.type === "data") bytes += e.bytes.length;
        if (e.type === "end" && e.head.fin && ++got === COUNT) done();
      }
    });
    socket.once("error", fail);
    const ask = new TextEncoder().encode(String(COUNT));
    const frame = new Uint8Array(2 + 4 + ask.length);
    frame[0] = 0x81;
    frame[1] = 0x80 | ask.length;
    frame.set([1, 2, 3, 4], 2);
    for (let i = 0; i < ask.length; i++) frame[6 + i] = ask[i]! ^ [1, 2, 3, 4][i & 3]!;
    socket.write(frame);
  });
  const ms = performance.now() - start;
  socket.destroy();
  if (bytes !== COUNT * MESSAGE) throw new Error(`got ${bytes} bytes, not ${COUNT * MESSAGE}`);
  return ms;
}

const direct = () =>
  new Promise<tls.TLSSocket>((ok, fail) => {
    const s = tls.connect({
      host: "127.0.0.1",
      port: server.port!,
      servername: "localhost",
      ca: proxy.upstreamCa.certPem,
      ALPNProtocols: ["http/1.1"],
    });
    s.once("secureConnect", () => ok(s));
    s.once("error", fail);
  });
const proxied = () =>
  openTunnel(
    { port: proxy.port, caBundlePath: proxy.caBundlePath, agent: proxy.agent },
    { connect: `localhost:${server.port}` },
  );

const mbps = (ms: number) => (COUNT * MESSAGE) / 1024 / 1024 / (ms / 1000);
const times = { direct: [] as number[], proxy: [] as number[] };
const rss = proxy.sampleRss(50);
for (let i = 0; i < RUNS; i++) {
  times.direct.push(await run(await direct()));
  times.proxy.push(await run(await proxied()));
}
const peak = await rss.stop();
const best = (xs: number[]) => Math.min(...xs);
console.log(
  `WebSocket, ${COUNT} binary messages of ${MESSAGE / 1024} KiB one way (${MIB} MiB), best of ${RUNS}:`,
);
console.log(`  direct:        ${mbps(best(times.direct)).toFixed(0)} MB/s`);
console.log(
  `  through proxy: ${mbps(best(times.proxy)).toFixed(0)} MB/s (${(best(times.direct) / best(times.proxy)).toFixed(2)}× of direct)`,
);
console.log(`  proxy peak RSS: ${(peak / 1024 / 1024).toFixed(0)} MiB`);
server.stop(true);
await proxy.close();
