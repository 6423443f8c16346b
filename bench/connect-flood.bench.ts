// What one agent's flood costs another agent (issue 21, item 3). A victim agent makes warm
// requests, one at a time, on a kept-alive tunnel through the proxy (its own process, default
// limits) to a loopback HTTPS echo server; meanwhile a hostile agent (bench/flood-agent.ts, its
// own process) floods the proxy in one of three ways: CONNECTs the policy denies, back to back;
// CONNECTs to ever-new allowed names (each a leaf certificate to mint) on new connections; new
// mTLS handshakes. For each it prints the victim's p50/p99 round trip with the flood running,
// against the same victim unloaded in the same run (before and after the flood: the baseline),
// as a ratio; what the flood achieved; the audit lines the flood made the proxy write per
// second; and the proxy's CPU use over the flood. The flooder runs on core FLOOD_CPU (default 1),
// as an agent in its own container would. Run: `taskset -c 0 bun bench/connect-flood.bench.ts`
// (about a minute; FLOOD_MS per flood, default 6000; BENCH_MODES=denied,minting for a subset).

import type tls from "node:tls";
import { startProxyProcess } from "../test/support/proxy-process.ts";
import { openTunnel } from "../test/support/raw-agent.ts";
import { startEchoServer } from "../test/support/upstream-server.ts";

const FLOOD_MS = Number(process.env.FLOOD_MS ?? 6000);
const MODES = (process.env.BENCH_MODES ?? "denied,minting,handshake").split(",");
const UNLOADED_MS = 3000;
/** The core the flooder runs on (`FLOOD_CPU=` to let it run anywhere). */
const FLOOD_CPU = process.env.FLOOD_CPU ?? "1";

const proxy = await startProxyProcess({
  allow: ["localhost:*", "*.flood.localhost:443"],
  // The proxy's defaults, rate limit included (the harness turns it off for other benches).
  env: { SLAPENIR_RATE_LIMIT: "", SLAPENIR_HANDSHAKE_RATE: "", SLAPENIR_MINT_RATE: "" },
});
const up = startEchoServer(await proxy.upstreamCa.issue(["localhost"]));
const victim = await proxy.issueAgent("agent-b");

async function cpuMs(pid: number): Promise<number> {
  const stat = await Bun.file(`/proc/${pid}/stat`).text();
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * 10;
}

/** One request on the tunnel, timed to the end of its answer (the echo's is small). */
function roundTrip(t: tls.TLSSocket): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    let buf = "";
    const onData = (d: Buffer) => {
      buf += d.toString("latin1");
      const end = buf.indexOf("\r\n\r\n");
      if (end < 0) return;
      const len = Number(/content-length:\s*(\d+)/i.exec(buf.slice(0, end))?.[1] ?? 0);
      if (buf.length < end + 4 + len) return;
      t.off("data", onData);
      if (!buf.startsWith("HTTP/1.1 200")) reject(new Error(buf.split("\r\n")[0]));
      else resolve(performance.now() - t0);
    };
    t.on("data", onData);
    t.write(`GET /victim HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`);
  });
}

/** The victim's round trips for `ms`, on one tunnel. Paced: ~100 requests/s, its rate limit's half. */
async function victimFor(ms: number): Promise<number[]> {
  const t = await openTunnel(
    { port: proxy.port, caBundlePath: proxy.caBundlePath, agent: victim },
    { connect: `localhost:${up.port}` },
  );
  const samples: number[] = [];
  const until = performance.now() + ms;
  while (performance.now() < until) {
    samples.push(await roundTrip(t));
    await Bun.sleep(20);
  }
  t.destroy();
  return samples;
}

const pct = (xs: number[], q: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(q * (s.length - 1))]!;
};
const f2 = (x: number) => x.toFixed(2);

async function flood(mode: string) {
  // The flooder on its own core when there is one to give it (an agent's container has its
  // own CPU share): what is measured is what its flood costs the proxy, not the flooder's CPU.
  const pin = FLOOD_CPU !== "" && Bun.which("taskset") ? ["taskset", "-c", FLOOD_CPU] : [];
  const child = Bun.spawn([...pin, process.execPath, `${import.meta.dir}/flood-agent.ts`, mode], {
    env: {
      ...process.env,
      FLOOD_PORT: String(proxy.port),
      FLOOD_CA: proxy.caBundlePath,
      FLOOD_CERT: proxy.agent.certPath,
      FLOOD_KEY: proxy.agent.keyPath,
      FLOOD_MS: String(FLOOD_MS),
    },
    stdout: "pipe",
    stderr: "inherit",
  });
  const lines: string[] = [];
  const reader = (async () => {
    const dec = new TextDecoder();
    let rest = "";
    for await (const c of child.stdout) {
      rest += dec.decode(c, { stream: true });
      const parts = rest.split("\n");
      rest = parts.pop()!;
      lines.push(...parts);
    }
  })();
  while (!lines.includes("ready")) await Bun.sleep(10);
  const audit0 = proxy.auditCount;
  const cpu0 = await cpuMs(proxy.pid);
  const t0 = performance.now();
  await Bun.sleep(300);
  const loaded = await victimFor(FLOOD_MS - 800);
  await child.exited;
  await reader;
  const seconds = (performance.now() - t0) / 1000;
  const cpu = ((await cpuMs(proxy.pid)) - cpu0) / 10 / seconds;
  // Less the victim's own: a line per request and one for its tunnel.
  const auditPerS = (proxy.auditCount - audit0 - loaded.length - 1) / seconds;
  const result = JSON.parse(lines.find((l) => l.startsWith("{"))!) as {
    seconds: number;
    outcomes: Record<string, number>;
  };
  return { loaded, cpu, auditPerS, result };
}

try {
  // Warm: the victim's leaf minted, the workers up.
  await victimFor(500);
  console.log(
    "mode | victim p50 unloaded / flooded (ms) | p99 unloaded / flooded (ms) | p99 ratio | flood attempts/s by outcome | the flood's audit lines/s | proxy CPU %",
  );
  for (const mode of MODES) {
    const before = await victimFor(UNLOADED_MS);
    const f = await flood(mode);
    // Let the proxy settle (digest windows, sockets closing) before the after-baseline.
    await Bun.sleep(1000);
    const after = await victimFor(UNLOADED_MS);
    const unloaded = [...before, ...after];
    const rate = Object.entries(f.result.outcomes)
      .map(([k, n]) => `${k}: ${Math.round(n / f.result.seconds)}`)
      .join(", ");
    console.log(
      [
        mode,
        `${f2(pct(unloaded, 0.5))} / ${f2(pct(f.loaded, 0.5))}`,
        `${f2(pct(unloaded, 0.99))} / ${f2(pct(f.loaded, 0.99))}`,
        f2(pct(f.loaded, 0.99) / pct(unloaded, 0.99)),
        rate,
        Math.round(f.auditPerS),
        Math.round(f.cpu),
      ].join(" | "),
    );
  }
} finally {
  await up.stop();
  await proxy.close();
}
