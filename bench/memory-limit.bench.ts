// Memory of the proxy while many agents stream at once, with and without the memory limit its
// container gets (compose.yml: 384M). For 1 and 8 concurrent curl agents, each moving 256 MiB
// through the proxy (download: every byte redacted; upload: DLP then swap), it prints the
// aggregate MB/s and the proxy's peak RSS with no limit, then the same inside a Linux memory
// cgroup of that size (as Docker sets it; needs root) with the cgroup's own peak and how often
// it reached the limit. The baseline is the same proxy without the limit, in the same run.
// Then, inside the cgroup only, agents that stop reading: 1, 2 or 4 agents each open as many
// tunnels as their connection cap allows (SLAPENIR_MAX_AGENT_CONNECTIONS), ask each for an
// 8 MiB download and stop reading after its head, while another agent downloads 64 MiB; it
// prints the cgroup's peak, how many tunnels could not be opened (refused while memory is
// short, or the proxy gone) and how many the memory guard shed, whether the OOM killer ran and
// whether the other agent was served — the last row with the guard off, as the baseline.
// Run: `bun bench/memory-limit.bench.ts` (about a minute; BENCH_MIB for smaller bodies,
// BENCH_LIMIT=512M to try another limit).

import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type tls from "node:tls";
import { loadProxyConfig } from "../src/config/proxy-config.ts";
import {
  composeProxyMemoryLimit,
  createMemoryCgroup,
  type MemoryCgroup,
  memoryCgroupUnavailableReason,
  parseDockerBytes,
} from "../test/support/memory-cgroup.ts";
import { curlProxyArgs } from "../test/support/proxy-harness.ts";
import { readRss, sampleRss, startProxyProcess } from "../test/support/proxy-process.ts";
import { closeTunnel, openTunnel, stallAfterHead } from "../test/support/raw-agent.ts";
import { generateChunks } from "../test/support/stream-source.ts";
import { startStreamUpstream } from "../test/support/stream-upstream.ts";

const MIB = Number(process.env.BENCH_MIB ?? 256);
const BYTES = MIB * 1024 * 1024;
const DUMMY = "sk-dummy-memory-bench-00000000000000000001";
const REAL = "sk-real-memory-bench-9f8e7d6c5b4a392817065";
const LIMIT = process.env.BENCH_LIMIT
  ? parseDockerBytes(process.env.BENCH_LIMIT)
  : await composeProxyMemoryLimit();
const mib = (b: number) => `${Math.round(b / 1048576)} MiB`;

const dir = await mkdtemp(join(tmpdir(), "slapenir-bench-memory-"));
const uploadFile = join(dir, "upload.bin");
{
  const sink = Bun.file(uploadFile).writer();
  for (const c of generateChunks({ totalBytes: BYTES, plant: { text: DUMMY, every: 1 << 20 } }))
    sink.write(c);
  await sink.end();
}

interface Row {
  mbs: number;
  peakRss: number;
  cgroupPeak?: number;
  limitHits?: number;
}

/** `agents` curls at once through a fresh proxy (inside `cgroup` if given), down then up. */
async function measure(agents: number, cgroup?: MemoryCgroup): Promise<Record<string, Row>> {
  const proxy = await startProxyProcess({
    credentials: [
      {
        name: "bench",
        dummy: DUMMY,
        real: REAL,
        hosts: ["localhost:*"],
        in: ["header:authorization", "body"],
      },
    ],
    ...(cgroup ? { launcher: cgroup.launcher } : {}),
  });
  const up = startStreamUpstream({
    cert: await proxy.upstreamCa.issue(["localhost", "127.0.0.1"]),
    plantText: REAL,
  });
  const out: Record<string, Row> = {};
  try {
    for (const kind of ["download", "upload"] as const) {
      await Bun.sleep(1000);
      const sampler = sampleRss(proxy.pid, 25);
      const args =
        kind === "upload"
          ? ["-T", uploadFile, `https://localhost:${up.port}/upload?hash=0`]
          : [`https://localhost:${up.port}/download?bytes=${BYTES}&plant=1`];
      const t0 = performance.now();
      const codes = await Promise.all(
        Array.from({ length: agents }, async () => {
          const p = Bun.spawn(
            [
              "curl",
              "-sS",
              "--http1.1",
              "-o",
              "/dev/null",
              "-w",
              "%{http_code}",
              ...curlProxyArgs(proxy.port, proxy.caBundlePath, proxy.agent),
              ...args,
            ],
            { stdout: "pipe", stderr: "inherit" },
          );
          const [exit, code] = await Promise.all([p.exited, new Response(p.stdout).text()]);
          return exit === 0 ? code : `exit ${exit}`;
        }),
      );
      const secs = (performance.now() - t0) / 1000;
      const peakRss = await sampler.stop();
      if (codes.some((c) => c !== "200")) throw new Error(`${kind}: ${codes.join(" ")}`);
      out[kind] = {
        mbs: (agents * BYTES) / 1e6 / secs,
        peakRss,
        ...(cgroup ? { cgroupPeak: cgroup.peakBytes(), limitHits: cgroup.limitHits() } : {}),
      };
    }
    out.idle = { mbs: 0, peakRss: await readRss(proxy.pid) };
  } finally {
    await up.stop();
    await proxy.close();
  }
  return out;
}

/**
 * `stallers` agents each open their cap of tunnels, each asking for 8 MiB and reading no
 * further than the head, inside a fresh cgroup; then another agent downloads 64 MiB.
 */
async function stalled(stallers: number, guard: boolean): Promise<string> {
  const cap = loadProxyConfig({}).limits.maxAgentConnections;
  const cg = await createMemoryCgroup(`slapenir-bench-stall-${process.pid}-${stallers}`, LIMIT);
  const proxy = await startProxyProcess({
    launcher: cg.launcher,
    ...(guard ? {} : { env: { SLAPENIR_MEMORY_LIMIT: "off" } }),
  });
  const up = startStreamUpstream({ cert: await proxy.upstreamCa.issue(["localhost"]) });
  const tunnels: tls.TLSSocket[] = [];
  let refused = 0;
  try {
    const agents = [proxy.agent];
    for (let i = 1; i <= stallers; i++) agents.push(await proxy.issueAgent(`agent-${i}`));
    const request = `GET /download?bytes=${8 << 20} HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`;
    for (const agent of agents.slice(1)) {
      const raw = { port: proxy.port, caBundlePath: proxy.caBundlePath, agent };
      for (let i = 0; i < cap; i++) {
        // Refused (memory short: 503) or the proxy is gone (OOM): the row says which.
        const t = await openTunnel(raw, { connect: `localhost:${up.port}` }).catch(() => null);
        if (!t) {
          refused++;
          continue;
        }
        stallAfterHead(t, request);
        tunnels.push(t);
      }
    }
    await Bun.sleep(2000);
    const p = Bun.spawn(
      [
        "curl",
        "-sS",
        "--max-time",
        "60",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        ...curlProxyArgs(proxy.port, proxy.caBundlePath, agents[0]),
        `https://localhost:${up.port}/download?bytes=${64 << 20}`,
      ],
      { stdout: "pipe", stderr: "pipe" },
    );
    const [exit, code] = await Promise.all([p.exited, new Response(p.stdout).text()]);
    const shed = proxy.auditLines
      .map((l) => JSON.parse(l) as { evt?: string; connections?: number })
      .filter((l) => l.evt === "shed")
      .reduce((n, l) => n + (l.connections ?? 0), 0);
    return `| ${stallers} | ${guard ? "on" : "off"} | ${tunnels.length} | ${refused} | ${guard ? shed : "–"} | ${mib(cg.peakBytes())} | ${cg.limitHits()} | ${cg.oomKills()} | ${exit === 0 ? code : `curl exit ${exit}`} |`;
  } finally {
    for (const t of tunnels) closeTunnel(t);
    await up.stop();
    await proxy.close().catch(() => {});
    await cg.remove();
  }
}

const why = memoryCgroupUnavailableReason();
const lines = [
  `proxy memory limit${process.env.BENCH_LIMIT ? "" : " from compose.yml"}: ${mib(LIMIT)}; ${MIB} MiB per agent`,
  "",
  "| agents | transfer | no limit: MB/s | no limit: peak RSS | limit: MB/s | limit: peak RSS | limit: cgroup peak | times the limit was reached |",
  "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
];
try {
  for (const agents of [1, 8]) {
    const free = await measure(agents);
    let limited: Record<string, Row> | null = null;
    if (!why) {
      const cg = await createMemoryCgroup(`slapenir-bench-${process.pid}-${agents}`, LIMIT);
      try {
        limited = await measure(agents, cg);
      } finally {
        await cg.remove();
      }
    }
    for (const kind of ["download", "upload"]) {
      const f = free[kind]!;
      const l = limited?.[kind];
      lines.push(
        `| ${agents} | ${kind} | ${f.mbs.toFixed(0)} | ${mib(f.peakRss)} | ${l ? l.mbs.toFixed(0) : "–"} | ${l ? mib(l.peakRss) : "–"} | ${l?.cgroupPeak ? mib(l.cgroupPeak) : "–"} | ${l?.limitHits ?? "–"} |`,
      );
    }
  }
  if (why) lines.push("", `(no limited runs: ${why})`);
  else {
    lines.push(
      "",
      `agents that stop reading, each at its connection cap (${loadProxyConfig({}).limits.maxAgentConnections}), inside the limit:`,
      "",
      "| stalling agents | memory guard | stalled tunnels | not opened (refused, or no proxy) | shed | cgroup peak | times the limit was reached | OOM kills | another agent's 64 MiB download |",
      "| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | --- |",
    );
    for (const [n, guard] of [
      [1, true],
      [2, true],
      [4, true],
      [4, false],
    ] as const)
      lines.push(await stalled(n, guard));
  }
  console.log(lines.join("\n"));
} finally {
  await rm(dir, { recursive: true, force: true });
}
