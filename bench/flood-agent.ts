// One hostile agent flooding the proxy, as its own process (so its CPU is not the bench's):
// `bun bench/flood-agent.ts MODE` with FLOOD_* in the environment. Modes:
//   denied    CONNECTs to a host the policy denies, back to back on kept-alive connections
//   minting   a new connection per CONNECT, each to a new allowed name (a leaf mint each)
//   handshake new mTLS connections, closed once the handshake is done
// It prints `ready` once its connections are open, runs FLOOD_MS, then prints one JSON line:
// attempts by outcome (the status line's code, or "closed" when the proxy closed instead).

import { readFileSync } from "node:fs";
import tls from "node:tls";

const mode = process.argv[2] ?? "denied";
const port = Number(process.env.FLOOD_PORT);
const ca = readFileSync(process.env.FLOOD_CA!, "utf8");
const cert = readFileSync(process.env.FLOOD_CERT!, "utf8");
const key = readFileSync(process.env.FLOOD_KEY!, "utf8");
const durationMs = Number(process.env.FLOOD_MS ?? 8000);
const concurrency = Number(process.env.FLOOD_CONCURRENCY ?? 8);
/** Its own source address, as an agent in its own container has. */
const localAddress = process.env.FLOOD_FROM ?? "127.0.0.2";
const outcomes: Record<string, number> = {};
const count = (k: string) => {
  outcomes[k] = (outcomes[k] ?? 0) + 1;
};
let stop = false;
let serial = 0;

function connect(): Promise<tls.TLSSocket | null> {
  return new Promise((resolve) => {
    const s = tls.connect({
      host: "127.0.0.1",
      port,
      // Bun's socket honours it; Node's TLS option types leave it out.
      ...{ localAddress },
      servername: "localhost",
      ca,
      cert,
      key,
    });
    s.once("secureConnect", () => resolve(s));
    s.once("error", () => resolve(null));
    s.once("close", () => resolve(null));
  });
}

/** Writes a CONNECT and reads its answer's status (null: the proxy closed first). */
function connectOnce(s: tls.TLSSocket, target: string): Promise<string | null> {
  return new Promise((resolve) => {
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString("latin1");
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      cleanup();
      // Skip a refusal's body, if it has one, so the next answer starts clean.
      const len = /content-length:\s*(\d+)/i.exec(buf.slice(0, end));
      const need = end + 4 + (len ? Number(len[1]) : 0);
      const status = buf.slice(9, 12);
      if (buf.length >= need) return resolve(status);
      let have = buf.length;
      const drain = (more: Buffer) => {
        have += more.length;
        if (have >= need) {
          s.off("data", drain);
          resolve(status);
        }
      };
      s.on("data", drain);
    };
    const onClose = () => {
      cleanup();
      resolve(null);
    };
    const cleanup = () => {
      s.off("data", onData);
      s.off("close", onClose);
    };
    s.on("data", onData);
    s.once("close", onClose);
    s.write(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`);
  });
}

async function denied(): Promise<void> {
  let s = await connect();
  while (!stop) {
    if (!s || s.destroyed) {
      count("reconnect");
      s = await connect();
      if (!s) continue;
    }
    const status = await connectOnce(s, "denied.flood.test:443");
    count(status ?? "closed");
  }
  s?.destroy();
}

async function minting(): Promise<void> {
  while (!stop) {
    const s = await connect();
    if (!s) {
      count("refused-handshake");
      continue;
    }
    const status = await connectOnce(s, `n${process.pid}-${serial++}.flood.localhost:443`);
    count(status ?? "closed");
    s.destroy();
  }
}

async function handshake(): Promise<void> {
  while (!stop) {
    const s = await connect();
    count(s ? "handshake" : "refused-handshake");
    s?.destroy();
  }
}

const run = { denied, minting, handshake }[mode];
if (!run) throw new Error(`unknown mode ${mode}`);
console.log("ready");
const t0 = performance.now();
const loops = Array.from({ length: concurrency }, () => run());
await Bun.sleep(durationMs);
stop = true;
await Promise.race([Promise.all(loops), Bun.sleep(3000)]);
const seconds = (performance.now() - t0) / 1000;
console.log(JSON.stringify({ mode, seconds, outcomes }));
process.exit(0);
