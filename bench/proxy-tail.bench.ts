// Where the proxy's latency comes from: the same 100 KB POST → 100 KB exchange on a kept-alive
// tunnel, and on a new connection per exchange, timed (mitata `measure`, p50/p90/p99) against
//   1. a bare TLS-in-TLS responder in a child process (mTLS outer, intercepted inner TLS with a
//      minted leaf, a fixed 100 KB answer — no parser, no app, no upstream): the floor;
//   2. SLAPENIR with no credentials (no scanning at all);
//   3. SLAPENIR with a credential bound to the upstream (DLP, swap, redaction).
// Run: `bun bench/proxy-tail.bench.ts` (BENCH_WARMUP sets the warm-up count). Prints figures
// only, never a credential.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { measure } from "mitata";
import { startProxyProcess } from "../test/support/proxy-process.ts";
import { startEchoServer } from "../test/support/upstream-server.ts";
import { BenchConnection, type Route, slapenirRoute } from "./bench-client.ts";

const DUMMY = "sk-dummy-0000000000000000000000000001";
const REAL = "sk-real-9f8e7d6c5b4a39281706f5e4d3c2b1a0";
const body = new Uint8Array(100_000).fill(0x61);
const answer = new Uint8Array(100_000).fill(0x62);

// Steady state, as in proxy.bench.ts: JSC's optimising compiler is still busy for the first
// few thousand exchanges.
const WARMUP = Number(process.env.BENCH_WARMUP ?? 10_000);

async function timeWarm(route: Route, port: number): Promise<Record<string, number>> {
  const c = await BenchConnection.open(route, { host: "localhost", port });
  for (let i = 0; i < WARMUP; i++) await c.request("POST", "/x", body);
  const s = await measure(
    async () => {
      await c.request("POST", "/x", body);
    },
    { min_samples: 1000, max_samples: 3000, min_cpu_time: 2e9 },
  );
  c.close();
  return percentiles(s);
}

/** p50/p90/p99 of a mitata measurement, in ms with two decimals. */
function percentiles(s: { p50: number; p99: number; samples: number[] }): Record<string, number> {
  const ms = (ns: number) => Math.round(ns / 1e4) / 100;
  const sorted = [...s.samples].sort((a, b) => a - b);
  const p90 = sorted[Math.floor(sorted.length * 0.9)] ?? 0;
  return { p50: ms(s.p50), p90: ms(p90), p99: ms(s.p99) };
}

/** A new connection (mTLS, CONNECT, inner TLS) per exchange, after the same kind of warm-up. */
async function timeNew(route: Route, port: number): Promise<Record<string, number>> {
  const once = async () => {
    const c = await BenchConnection.open(route, { host: "localhost", port });
    await c.request("POST", "/x", body);
    c.close();
  };
  for (let i = 0; i < WARMUP / 5; i++) await once();
  return percentiles(
    await measure(once, { min_samples: 300, max_samples: 1000, min_cpu_time: 2e9 }),
  );
}

const rows: [string, Record<string, number>][] = [];
const newRows: [string, Record<string, number>][] = [];

// 1. The floor: a bare TLS-in-TLS responder in its own process.
{
  const dir = await mkdtemp(join(tmpdir(), "slapenir-tail-"));
  const child = Bun.spawn([process.execPath, join(import.meta.dir, "tls-floor-main.ts"), dir], {
    stdout: "pipe",
    stderr: "inherit",
  });
  const reader = child.stdout.getReader();
  let text = "";
  while (!text.includes("\n")) {
    const r = await reader.read();
    if (r.done) break;
    text += new TextDecoder().decode(r.value);
  }
  const info = JSON.parse(text.trim()) as {
    port: number;
    caBundlePath: string;
    certPath: string;
    keyPath: string;
  };
  const route = slapenirRoute({
    port: info.port,
    caBundlePath: info.caBundlePath,
    agent: { certPath: info.certPath, keyPath: info.keyPath },
  });
  rows.push(["bare TLS-in-TLS responder (floor)", await timeWarm(route, 443)]);
  newRows.push(["bare TLS-in-TLS responder (floor)", await timeNew(route, 443)]);
  child.kill();
  await child.exited;
  await rm(dir, { recursive: true, force: true });
}

// 2 and 3. The real proxy (child process), without and with a credential.
for (const [label, creds] of [
  ["SLAPENIR, no credentials (no scanning)", false],
  ["SLAPENIR, one bound credential (DLP, swap, redact)", true],
] as const) {
  const p = await startProxyProcess({
    allow: ["localhost:*"],
    ...(creds
      ? {
          credentials: [
            {
              name: "svc",
              dummy: DUMMY,
              real: REAL,
              hosts: ["localhost:*"],
              in: ["header:authorization", "body"],
            },
          ],
        }
      : {}),
  });
  const up = startEchoServer(await p.upstreamCa.issue(["localhost"]), () => new Response(answer));
  rows.push([label, await timeWarm(slapenirRoute(p), up.port)]);
  newRows.push([label, await timeNew(slapenirRoute(p), up.port)]);
  await up.stop();
  await p.close();
}

console.log("\n| warm 100 KB POST → 100 KB, round trip (ms) | p50 | p90 | p99 |");
console.log("| --- | ---: | ---: | ---: |");
for (const [label, r] of rows) console.log(`| ${label} | ${r.p50} | ${r.p90} | ${r.p99} |`);
console.log("\n| new connection per 100 KB POST → 100 KB, round trip (ms) | p50 | p90 | p99 |");
console.log("| --- | ---: | ---: | ---: |");
for (const [label, r] of newRows) console.log(`| ${label} | ${r.p50} | ${r.p90} | ${r.p99} |`);
