// What the proxy benchmarks start beside the proxy, and how they read a process: the upstream
// as its own process, mitmproxy with the addon doing SLAPENIR's swap and redact work, a free
// port, a port that answers, and a process's CPU time. Bench only.

import { readdir, writeFile } from "node:fs/promises";
import net from "node:net";
import { join, resolve } from "node:path";
import { freePort } from "../test/support/free-port.ts";

const ROOT = resolve(import.meta.dir, "..");

export interface Child {
  readonly pid: number;
  kill(sig?: number | NodeJS.Signals): void;
  readonly exited: Promise<number>;
}

/** bench/upstream-main.ts with `cert` (written into `dir`); resolves with its port. */
export async function startUpstream(
  dir: string,
  cert: { certPem: string; keyPem: string },
  plant?: string,
): Promise<{ port: number; child: Child }> {
  await writeFile(join(dir, "up.crt"), cert.certPem);
  await writeFile(join(dir, "up.key"), cert.keyPem);
  const child = Bun.spawn([process.execPath, join(ROOT, "bench/upstream-main.ts")], {
    env: {
      ...process.env,
      UPSTREAM_CERT: join(dir, "up.crt"),
      UPSTREAM_KEY: join(dir, "up.key"),
      ...(plant ? { UPSTREAM_PLANT: plant } : {}),
    },
    stdout: "pipe",
    stderr: "inherit",
  });
  return { port: await firstMatch(child.stdout, /port=(\d+)/), child };
}

/**
 * Debian's mitmdump with bench/mitm_swap_redact.py swapping `dummy` for `real` toward `host` and
 * redacting it back, trusting `upstreamCaPem`; resolves once it listens, with the CA its
 * clients must trust.
 */
export async function startMitm(
  dir: string,
  o: { upstreamCaPem: string; dummy: string; real: string; host: string },
): Promise<{ port: number; caPem: string; caPath: string; child: Child }> {
  const confdir = join(dir, "mitm");
  await writeFile(join(dir, "mitm-up-ca.pem"), o.upstreamCaPem);
  await writeFile(
    join(dir, "mitm-secrets.json"),
    JSON.stringify({ dummy: o.dummy, real: o.real, host: o.host }),
  );
  const port = await freePort();
  const child = Bun.spawn(
    [
      "mitmdump",
      "-q",
      "--listen-host",
      "127.0.0.1",
      "--listen-port",
      String(port),
      "--set",
      `confdir=${confdir}`,
      "--set",
      `ssl_verify_upstream_trusted_ca=${join(dir, "mitm-up-ca.pem")}`,
      "-s",
      join(ROOT, "bench/mitm_swap_redact.py"),
    ],
    {
      env: { ...process.env, BENCH_MITM_SECRETS: join(dir, "mitm-secrets.json") },
      stdout: "inherit",
      stderr: "inherit",
    },
  );
  await waitForPort(port);
  const caPath = join(confdir, "mitmproxy-ca-cert.pem");
  return { port, caPem: await Bun.file(caPath).text(), caPath, child };
}

/** CPU time (ms) process `pid` has used, all threads (clock ticks of 10 ms). */
export async function processCpuMs(pid: number): Promise<number> {
  const stat = await Bun.file(`/proc/${pid}/stat`).text();
  const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(f[11]) + Number(f[12])) * 10; // utime + stime
}

/**
 * CPU time (ms) of process `pid` by kind of thread: `js`, the threads that run its JavaScript
 * (the main thread and every Worker: event loops, matcher workers); `runtime`, the rest (the
 * JIT's compilers, the garbage collector's helpers, the allocator's scavenger).
 */
export async function threadCpuMs(pid: number): Promise<{ js: number; runtime: number }> {
  const out = { js: 0, runtime: 0 };
  for (const tid of await readdir(`/proc/${pid}/task`).catch(() => [])) {
    try {
      const [comm, stat] = await Promise.all([
        Bun.file(`/proc/${pid}/task/${tid}/comm`).text(),
        Bun.file(`/proc/${pid}/task/${tid}/stat`).text(),
      ]);
      const f = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ms = (Number(f[11]) + Number(f[12])) * 10;
      if (Number(tid) === pid || comm.trim() === "Worker") out.js += ms;
      else out.runtime += ms;
    } catch {
      // A thread that ended between the listing and the read.
    }
  }
  return out;
}

export async function firstMatch(stream: ReadableStream<Uint8Array>, re: RegExp): Promise<number> {
  const dec = new TextDecoder();
  let text = "";
  for await (const c of stream) {
    text += dec.decode(c, { stream: true });
    const m = re.exec(text);
    if (m) return Number(m[1]);
  }
  throw new Error("process ended before it printed its port");
}

export async function waitForPort(port: number): Promise<void> {
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((r) => {
      const s = net.connect({ host: "127.0.0.1", port });
      s.once("connect", () => {
        s.destroy();
        r(true);
      });
      s.once("error", () => r(false));
    });
    if (ok) return;
    await Bun.sleep(100);
  }
  throw new Error(`nothing listening on ${port}`);
}
