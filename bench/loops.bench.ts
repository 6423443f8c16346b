// Scaling with event loops (issue 19): the same workload through SLAPENIR with 1, 2, … loops
// (SLAPENIR_LOOPS), each a fresh proxy process, and direct to the upstream, in one run:
//   - bulk: PARALLEL downloads at once of BULK_MIB each, real values planted every MiB (the
//     proxy redacts them), curl as the agents: aggregate MB/s and the proxy's CPU per GB;
//   - paced: the same downloads (PACED_MIB each) held by curl to PACED_MBS in all, well under what
//     the host can move: the proxy's CPU per GB without the clients and upstream competing for
//     the cores — what stays flat as loops are added if the design scales — and the part of it
//     spent by the threads running JavaScript (loops, matcher workers, main thread), apart from
//     the runtime's own (JIT compilers, GC helpers, the allocator's scavenger: per heap);
//   - scaled: paced again, each loop given what one loop alone is given (SCALED_STREAMS
//     downloads at SCALED_MBS per loop): a loop as busy as the single one was, so CPU per GB
//     staying flat says adding loops adds no cost of its own (paced at a fixed total, each of N
//     loops wakes for 1/N of the bytes, coalescing less per wake-up);
//   - small: CLIENTS curl processes at once, each REQUESTS requests of 1 KB on one kept-alive
//     tunnel: requests/s and the proxy's CPU per request.
// Every figure is the median of ROUNDS rounds, the loop counts interleaved so a slower minute of
// the host falls on all of them. Reported against one loop (the ratio) and against direct.
// The proxy, the upstream and the clients share this machine's cores: on two cores a second
// loop competes with curl and the upstream, so CPU per GB staying flat as loops are added is
// what says the design scales; MB/s says what this host gains.
// Run: `bun bench/loops.bench.ts` (LOOPS=1,2; PARALLEL=4; BULK_MIB=64; PACED_MIB=16;
// PACED_MBS=40; SCALED_STREAMS=2; SCALED_MBS=30; CLIENTS=8; REQUESTS=300; ROUNDS=3). Prints figures only, never a credential.

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { curlProxyArgs } from "../test/support/proxy-harness.ts";
import { type ProxyProcess, startProxyProcess } from "../test/support/proxy-process.ts";
import { type Child, processCpuMs, startUpstream, threadCpuMs } from "./bench-processes.ts";

const LOOPS = (process.env.LOOPS ?? "1,2").split(",").map(Number);
const PARALLEL = Number(process.env.PARALLEL ?? 4);
const BULK_MIB = Number(process.env.BULK_MIB ?? 64);
const PACED_MIB = Number(process.env.PACED_MIB ?? 16);
const PACED_MBS = Number(process.env.PACED_MBS ?? 40);
const SCALED_STREAMS = Number(process.env.SCALED_STREAMS ?? 2);
const SCALED_MBS = Number(process.env.SCALED_MBS ?? 30);
const CLIENTS = Number(process.env.CLIENTS ?? 8);
const REQUESTS = Number(process.env.REQUESTS ?? 300);
const ROUNDS = Number(process.env.ROUNDS ?? 3);
const DUMMY = "sk-dummy-bench-000000000000000000000000000001";
const REAL = "sk-real-bench-9f8e7d6c5b4a39281706f5e4d3c2b1a";
const BULK_BYTES = BULK_MIB * 1024 * 1024;

const dir = await mkdtemp(join(tmpdir(), "slapenir-bench-loops-"));
const children: Child[] = [];

interface Figures {
  bulkMBs: number;
  bulkCpuMsPerGB: number | null;
  pacedCpuMsPerGB: number | null;
  /** Of which the threads running JavaScript: the event loops, matcher workers, main thread. */
  pacedJsMsPerGB: number | null;
  /** Paced with each loop given one loop's load: the proxy's CPU per GB, and its JS threads'. */
  scaledCpuMsPerGB: number | null;
  scaledJsMsPerGB: number | null;
  smallRps: number;
  smallCpuUsPerReq: number | null;
}

/** `n` curl processes at once, each running `args(i)`; every one must answer 200s only. */
async function curls(n: number, args: (i: number) => string[]): Promise<number> {
  const t0 = performance.now();
  await Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const p = Bun.spawn(["curl", "-sS", "--http1.1", "-w", "%{http_code}\\n", ...args(i)], {
        stdout: "pipe",
        stderr: "pipe",
      });
      const [code, out, err] = await Promise.all([
        p.exited,
        new Response(p.stdout).text(),
        new Response(p.stderr).text(),
      ]);
      const statuses = out.trim().split("\n");
      if (code !== 0 || statuses.some((s) => s !== "200")) {
        throw new Error(`curl ${i}: exit ${code}, ${statuses.find((s) => s !== "200")} ${err}`);
      }
    }),
  );
  return (performance.now() - t0) / 1000;
}

/**
 * `streams` downloads of PACED_MIB at once, held to `mbs` in all: the proxy's CPU per GB, all
 * its threads and those running JavaScript (null without a proxy process to read).
 */
async function pacedCpu(
  route: string[],
  upstreamPort: number,
  pid: number | null,
  streams: number,
  mbs: number,
): Promise<{ all: number; js: number } | null> {
  const bytes = PACED_MIB * 1024 * 1024;
  const c0 = pid ? await processCpuMs(pid) : 0;
  const t0 = pid ? await threadCpuMs(pid) : null;
  await curls(streams, () => [
    ...route,
    "--limit-rate",
    String(Math.floor((mbs * 1e6) / streams)),
    "-o",
    "/dev/null",
    `https://localhost:${upstreamPort}/download?bytes=${bytes}&plant=1`,
  ]);
  if (!pid || !t0) return null;
  const gb = (streams * bytes) / 1e9;
  const all = (await processCpuMs(pid)) - c0;
  const js = (await threadCpuMs(pid)).js - t0.js;
  return { all: all / gb, js: js / gb };
}

async function measure(
  route: string[],
  upstreamPort: number,
  pid: number | null,
  loops: number | null,
): Promise<Figures> {
  const cpu = async () => (pid ? processCpuMs(pid) : 0);
  // Bulk: every download its own tunnel.
  let c0 = await cpu();
  const bulkSecs = await curls(PARALLEL, () => [
    ...route,
    "-o",
    "/dev/null",
    `https://localhost:${upstreamPort}/download?bytes=${BULK_BYTES}&plant=1`,
  ]);
  const bulkCpu = (await cpu()) - c0;
  const gb = (PARALLEL * BULK_BYTES) / 1e9;
  // Paced: each download held to its share of PACED_MBS.
  const paced = await pacedCpu(route, upstreamPort, pid, PARALLEL, PACED_MBS);
  // Scaled: each loop given what one loop alone is given (SCALED_STREAMS downloads, SCALED_MBS).
  const scaled =
    loops === null
      ? null
      : await pacedCpu(route, upstreamPort, pid, SCALED_STREAMS * loops, SCALED_MBS * loops);
  // Small: one kept-alive tunnel per client, many requests on it.
  const urls = Array.from(
    { length: REQUESTS },
    (_, r) => `https://localhost:${upstreamPort}/download?bytes=1000&r=${r}`,
  );
  c0 = await cpu();
  const smallSecs = await curls(CLIENTS, () => [
    ...route,
    "-H",
    `authorization: Bearer ${DUMMY}`,
    ...urls.flatMap((u) => ["-o", "/dev/null", u]),
  ]);
  const smallCpu = (await cpu()) - c0;
  const reqs = CLIENTS * REQUESTS;
  return {
    bulkMBs: (PARALLEL * BULK_BYTES) / 1e6 / bulkSecs,
    bulkCpuMsPerGB: pid ? bulkCpu / gb : null,
    pacedCpuMsPerGB: paced?.all ?? null,
    pacedJsMsPerGB: paced?.js ?? null,
    scaledCpuMsPerGB: scaled?.all ?? null,
    scaledJsMsPerGB: scaled?.js ?? null,
    smallRps: reqs / smallSecs,
    smallCpuUsPerReq: pid ? (smallCpu / reqs) * 1000 : null,
  };
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

const proxies = new Map<number, ProxyProcess>();
try {
  // One upstream for every route; every proxy trusts the first one's upstream CA, which
  // issued the upstream's certificate.
  const caPath = join(dir, "up-ca.pem");
  for (const loops of LOOPS) {
    proxies.set(
      loops,
      await startProxyProcess({
        allow: ["localhost:*"],
        credentials: [
          {
            name: "bench",
            dummy: DUMMY,
            real: REAL,
            hosts: ["localhost:*"],
            in: ["header:authorization"],
          },
        ],
        env: {
          SLAPENIR_LOOPS: String(loops),
          SLAPENIR_RATE_LIMIT: "off",
          SLAPENIR_HANDSHAKE_RATE: "off",
          SLAPENIR_MINT_RATE: "off",
          SLAPENIR_LOG_LEVEL: "warn",
          ...(proxies.size > 0 ? { SLAPENIR_UPSTREAM_CA: caPath } : {}),
        },
      }),
    );
    if (proxies.size === 1) await Bun.write(caPath, proxies.get(loops)!.upstreamCa.certPem);
  }
  const first = proxies.get(LOOPS[0]!)!;
  const up = await startUpstream(
    dir,
    await first.upstreamCa.issue(["localhost", "127.0.0.1"]),
    REAL,
  );
  children.push(up.child);
  const routes: { name: string; args: string[]; pid: number | null; loops: number | null }[] = [
    { name: "direct", args: ["--cacert", caPath], pid: null, loops: null },
    ...LOOPS.map((l) => {
      const p = proxies.get(l)!;
      return {
        name: `${l} loop${l > 1 ? "s" : ""}`,
        args: curlProxyArgs(p.port, p.caBundlePath, p.agent),
        pid: p.pid,
        loops: l,
      };
    }),
  ];
  const runs = new Map<string, Figures[]>(routes.map((r) => [r.name, []]));
  for (let round = 0; round < ROUNDS; round++) {
    for (const r of routes) {
      const f = await measure(r.args, up.port, r.pid, r.loops);
      runs.get(r.name)!.push(f);
      process.stderr.write(`round ${round + 1} ${r.name}: ${JSON.stringify(f)}\n`);
      await Bun.sleep(500);
    }
  }
  const med = (name: string, k: keyof Figures) => {
    const xs = runs.get(name)!.map((f) => f[k]);
    return xs.includes(null) ? null : median(xs as number[]);
  };
  const one = routes.find((r) => r.loops === LOOPS[0])!.name;
  console.log(
    `${PARALLEL} downloads of ${BULK_MIB} MiB at once (paced: ${PACED_MIB} MiB each, ${PACED_MBS} MB/s in all); ${CLIENTS} clients × ${REQUESTS} requests of 1 KB; median of ${ROUNDS} rounds\n`,
  );
  console.log(
    `| route | bulk MB/s | vs ${one} | proxy CPU per GB | vs ${one} | paced: CPU per GB | vs ${one} | of which JS threads | vs ${one} | scaled: CPU per GB | vs ${one} | of which JS threads | vs ${one} | small req/s | vs ${one} | proxy CPU per request |`,
  );
  console.log(`|${" --- |".repeat(17)}`);
  for (const r of routes) {
    const ratio = (k: keyof Figures) => {
      const a = med(r.name, k);
      const b = med(one, k);
      return a === null || b === null || r.loops === null ? "–" : `${(a / b).toFixed(2)}×`;
    };
    const cpuGB = med(r.name, "bulkCpuMsPerGB");
    const pacedGB = med(r.name, "pacedCpuMsPerGB");
    const secs = (k: keyof Figures) => {
      const v = med(r.name, k);
      return v === null ? "–" : `${(v / 1000).toFixed(2)} s`;
    };
    const cpuReq = med(r.name, "smallCpuUsPerReq");
    console.log(
      `| ${r.name} | ${med(r.name, "bulkMBs")!.toFixed(0)} | ${ratio("bulkMBs")} | ${cpuGB === null ? "–" : `${(cpuGB / 1000).toFixed(2)} s`} | ${ratio("bulkCpuMsPerGB")} | ${pacedGB === null ? "–" : `${(pacedGB / 1000).toFixed(2)} s`} | ${ratio("pacedCpuMsPerGB")} | ${secs("pacedJsMsPerGB")} | ${ratio("pacedJsMsPerGB")} | ${secs("scaledCpuMsPerGB")} | ${ratio("scaledCpuMsPerGB")} | ${secs("scaledJsMsPerGB")} | ${ratio("scaledJsMsPerGB")} | ${med(r.name, "smallRps")!.toFixed(0)} | ${ratio("smallRps")} | ${cpuReq === null ? "–" : `${cpuReq.toFixed(0)} µs`} |`,
    );
  }
} finally {
  for (const p of proxies.values()) await p.close();
  for (const c of children) c.kill("SIGTERM");
  await Promise.all(children.map((c) => Promise.race([c.exited, Bun.sleep(3000)])));
  await rm(dir, { recursive: true, force: true });
}
