// Load as many agents make it (issue 19, item 4): AGENTS agents × TUNNELS kept-alive tunnels
// each (default 100 × 10), every tunnel its own agent certificate's, through SLAPENIR and
// through mitmproxy (Debian's, addon bench/mitm_swap_redact.py doing the same swap/redact
// work) and direct to the upstream, in one run. Two ways of loading:
//   - closed loop: every tunnel sends its next request as soon as its last was answered;
//   - paced: every tunnel sends one request every PACE_MS (default 1000), latency counted from
//     when the request was due, so a proxy that falls behind is charged for it (no coordinated
//     omission);
// with small answers (SMALL_BYTES, 1 KB) and large ones (LARGE_BYTES, 256 KiB). For each it
// prints requests/s, p50/p99/p999 latency and what that adds to direct, failures by kind
// (a tunnel that could not be opened; a request that failed), the proxy process's CPU per
// request and its RSS. The client, the proxy, the upstream and mitmproxy share this machine's
// cores: the figures compare the proxies under the same client, not a fleet of hosts.
// Run: `bun bench/load.bench.ts` (LOAD_SECONDS per phase, default 15; LOAD_AGENTS,
// LOAD_TUNNELS; LOAD_MODES=closed-small,closed-large,paced-small; BENCH_MITM=0 to skip
// mitmproxy; LOAD_LOOPS, the proxy's event loops, default 1). Prints figures only, never a credential.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { readRss, startProxyProcess } from "../test/support/proxy-process.ts";
import { BenchConnection, type Origin, type Route, slapenirRoute } from "./bench-client.ts";
import { type Child, processCpuMs, startMitm, startUpstream } from "./bench-processes.ts";

const AGENTS = Number(process.env.LOAD_AGENTS ?? 100);
const TUNNELS = Number(process.env.LOAD_TUNNELS ?? 10);
const SECONDS = Number(process.env.LOAD_SECONDS ?? 15);
const PACE_MS = Number(process.env.PACE_MS ?? 1000);
const SMALL = Number(process.env.SMALL_BYTES ?? 1000);
const LARGE = Number(process.env.LARGE_BYTES ?? 256 * 1024);
const MODES = (process.env.LOAD_MODES ?? "closed-small,closed-large,paced-small").split(",");
const WITH_MITM = process.env.BENCH_MITM !== "0";
const DUMMY = "sk-dummy-bench-000000000000000000000000000001";
const REAL = "sk-real-bench-9f8e7d6c5b4a39281706f5e4d3c2b1a";

const dir = await mkdtemp(join(tmpdir(), "slapenir-bench-load-"));
const children: Child[] = [];

// --- processes -----------------------------------------------------------------------------

const proxy = await startProxyProcess({
  allow: ["localhost:*"],
  credentials: [{ name: "bench", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] }],
  // Capacity, not policy: no per-agent request rate (its 429s are the policy working), and as
  // if each agent were its own container (its own address: no per-address handshake rate).
  env: {
    SLAPENIR_HANDSHAKE_RATE: "off",
    SLAPENIR_MINT_RATE: "off",
    SLAPENIR_RATE_LIMIT: "off",
    SLAPENIR_LOOPS: process.env.LOAD_LOOPS ?? "1",
    ...(process.env.LOAD_CONNECT_MS
      ? { SLAPENIR_UPSTREAM_CONNECT_TIMEOUT_MS: process.env.LOAD_CONNECT_MS }
      : {}),
  },
});
const up = await startUpstream(dir, await proxy.upstreamCa.issue(["localhost", "127.0.0.1"]));
children.push(up.child);
const origin: Origin = { host: "localhost", port: up.port };

let mitm: { pid: number; route: Route } | null = null;
if (WITH_MITM) {
  const m = await startMitm(dir, {
    upstreamCaPem: proxy.upstreamCa.certPem,
    dummy: DUMMY,
    real: REAL,
    host: "localhost",
  });
  children.push(m.child);
  mitm = { pid: m.child.pid, route: { kind: "http-proxy", port: m.port, caPem: m.caPem } };
}

// One certificate per agent, as a fleet of agents would hold.
const agentRoutes: Route[] = [];
for (let a = 0; a < AGENTS; a++) {
  agentRoutes.push(slapenirRoute({ ...proxy, agent: await proxy.issueAgent(`load-${a}`) }));
}

// --- one phase -----------------------------------------------------------------------------

interface Phase {
  requests: number;
  seconds: number;
  /** How long every tunnel's first request took, all sent at once. */
  firstSeconds: number;
  latenciesMs: number[];
  failures: Map<string, number>;
  proxyCpuMs: number | null;
  rssBytes: number | null;
}

async function phase(
  routeOf: (tunnel: number) => Route,
  pid: number | null,
  mode: string,
): Promise<Phase> {
  const failures = new Map<string, number>();
  const fail = (kind: string) => failures.set(kind, (failures.get(kind) ?? 0) + 1);
  const bytes = mode.endsWith("large") ? LARGE : SMALL;
  const path = `/echo-size?bytes=${bytes}&hash=0`;
  // Open every tunnel, 50 at a time (a fleet starting up), before the clock starts.
  const conns: (BenchConnection | null)[] = [];
  const total = AGENTS * TUNNELS;
  for (let i = 0; i < total; i += 50) {
    const batch = Array.from({ length: Math.min(50, total - i) }, (_, j) =>
      BenchConnection.open(routeOf(i + j), origin).catch((e: Error) => {
        fail(`open: ${kindOf(e)}`);
        return null;
      }),
    );
    conns.push(...(await Promise.all(batch)));
  }
  // Every tunnel's first request at once, before the clock: for a proxy that connects to the
  // upstream at the first request (SLAPENIR; mitmproxy connects at the CONNECT) this is a storm
  // of upstream handshakes — the moment the issue saw 930 of 1,000 tunnels fail in. Its
  // failures are counted; the measured phase is the steady state after it.
  const s0 = performance.now();
  await Promise.all(
    conns.map(async (c, i) => {
      if (!c) return;
      try {
        await c.request("GET", path, null);
      } catch (e) {
        fail(`first request: ${kindOf(e as Error)}`);
        conns[i] = null;
      }
    }),
  );
  const firstSeconds = (performance.now() - s0) / 1000;
  const latencies: number[] = [];
  let requests = 0;
  const cpu0 = pid ? await processCpuMs(pid) : 0;
  const t0 = performance.now();
  const end = t0 + SECONDS * 1000;
  const paced = mode.startsWith("paced");
  await Promise.all(
    conns.map(async (c, i) => {
      if (!c) return;
      // Paced tunnels start spread over one period, as independent agents would.
      let due = t0 + (paced ? (i / conns.length) * PACE_MS : 0);
      while (performance.now() < end) {
        if (paced) {
          const wait = due - performance.now();
          if (wait > 0) await Bun.sleep(wait);
        }
        const start = paced ? due : performance.now();
        try {
          await c.request("GET", path, null);
          latencies.push(performance.now() - start);
          requests++;
        } catch (e) {
          fail(`request: ${kindOf(e as Error)}`);
          return; // a failed tunnel is not used again
        }
        due += PACE_MS;
      }
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const cpu = pid ? (await processCpuMs(pid)) - cpu0 : null;
  const rss = pid ? await readRss(pid) : null;
  for (const c of conns) c?.close();
  return {
    requests,
    seconds,
    firstSeconds,
    latenciesMs: latencies,
    failures,
    proxyCpuMs: cpu,
    rssBytes: rss,
  };
}

// --- run -----------------------------------------------------------------------------------

const routes: { name: string; routeOf: (t: number) => Route; pid: number | null }[] = [
  {
    name: "direct",
    routeOf: () => ({ kind: "direct", originCaPem: proxy.upstreamCa.certPem }),
    pid: null,
  },
  {
    name: "SLAPENIR",
    routeOf: (t) => agentRoutes[Math.floor(t / TUNNELS)]!,
    pid: proxy.pid,
  },
];
if (mitm) routes.push({ name: "mitmproxy", routeOf: () => mitm!.route, pid: mitm.pid });

console.log(
  `${AGENTS} agents × ${TUNNELS} tunnels, ${SECONDS} s per phase, small ${SMALL} B, large ${LARGE} B, paced every ${PACE_MS} ms\n`,
);
let failedSeen = 0;
try {
  for (const mode of MODES) {
    const results: Record<string, Phase> = {};
    for (const r of routes) {
      results[r.name] = await phase(r.routeOf, r.pid, mode);
      await Bun.sleep(1000); // closed tunnels drain before the next route starts
    }
    const direct = results.direct!;
    console.log(`## ${mode}`);
    console.log(
      "| route | first requests, all at once | requests/s | p50 ms | p99 ms | p999 ms | added p50 / p99 / p999 ms | failures | proxy CPU per request | proxy RSS |",
    );
    console.log("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |");
    for (const [name, p] of Object.entries(results)) {
      const q = (x: number) => quantile(p.latenciesMs, x);
      const d = (x: number) => quantile(direct.latenciesMs, x);
      const added =
        name === "direct"
          ? "–"
          : [0.5, 0.99, 0.999].map((x) => (q(x) - d(x)).toFixed(1)).join(" / ");
      const failures =
        p.failures.size === 0 ? "0" : [...p.failures].map(([k, n]) => `${n} ${k}`).join("; ");
      console.log(
        `| ${name} | ${p.firstSeconds.toFixed(1)} s | ${(p.requests / p.seconds).toFixed(0)} | ${q(0.5).toFixed(1)} | ${q(0.99).toFixed(1)} | ${q(0.999).toFixed(1)} | ${added} | ${failures} | ${p.proxyCpuMs === null ? "–" : `${((p.proxyCpuMs / Math.max(1, p.requests)) * 1000).toFixed(0)} µs`} | ${p.rssBytes === null ? "–" : `${(p.rssBytes / 1048576).toFixed(0)} MiB`} |`,
      );
    }
    // What the proxy said of its failures, by reason (the audit log's own words).
    const reasons = new Map<string, number>();
    const failed = proxy.failedLines;
    for (const l of failed.slice(failedSeen)) {
      const r = (JSON.parse(l) as { reason?: string }).reason ?? "?";
      reasons.set(r, (reasons.get(r) ?? 0) + 1);
    }
    failedSeen = failed.length;
    if (reasons.size > 0) {
      console.log(`SLAPENIR's failures: ${[...reasons].map(([r, n]) => `${n} × ${r}`).join("; ")}`);
    }
    const s = results.SLAPENIR!;
    const m = results.mitmproxy;
    if (m) {
      console.log(
        `SLAPENIR ÷ mitmproxy: requests/s ${(s.requests / s.seconds / (m.requests / m.seconds)).toFixed(2)}×, p99 ${(quantile(s.latenciesMs, 0.99) / quantile(m.latenciesMs, 0.99)).toFixed(2)}×`,
      );
    }
    console.log("");
  }
} finally {
  await proxy.close();
  for (const c of children) c.kill("SIGTERM");
  await Promise.all(children.map((c) => Promise.race([c.exited, Bun.sleep(3000)])));
  await rm(dir, { recursive: true, force: true });
}

// --- helpers -------------------------------------------------------------------------------

function kindOf(e: Error): string {
  // Statuses stay (a 429 is not a 503); ports and counts do not split the kinds.
  return (e.message || e.name).replace(/[0-9]{4,}/g, "N").slice(0, 60);
}

function quantile(xs: number[], q: number): number {
  if (xs.length === 0) return Number.NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}
