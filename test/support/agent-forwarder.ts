// The agent container's forwarder (docker/agent/…/proxy-forwarder/run: socat, plain TCP in,
// mTLS to the proxy out) run outside a container, for clients that cannot present a client
// certificate to an HTTPS proxy (pip, boto3, Python's websockets). Its certificate directory
// holds the agent's certificate, key and the proxy's CA under the names the script expects.
// Ready once it accepts a connection (an observable condition, no sleep); one that exited
// (socat missing) fails at once.

import { copyFileSync, mkdirSync } from "node:fs";
import net from "node:net";
import { join, resolve } from "node:path";
import type { Harness } from "./proxy-harness.ts";

const FORWARDER = resolve(
  import.meta.dir,
  "../../docker/agent/rootfs/etc/s6-overlay/s6-rc.d/proxy-forwarder/run",
);

const freePort = () =>
  new Promise<number>((ok) => {
    const srv = net.createServer().listen(0, "127.0.0.1", () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => ok(port));
    });
  });

const connects = (port: number) =>
  new Promise<boolean>((ok) => {
    const s = net.connect(port, "127.0.0.1");
    s.once("connect", () => {
      s.destroy();
      ok(true);
    });
    s.once("error", () => ok(false));
  });

export interface Forwarder {
  readonly port: number;
  stop(): void;
}

/** The forwarder for `h`'s agent-a, its certificates under `home`/certs. */
export async function startForwarder(h: Harness, home: string): Promise<Forwarder> {
  const certs = join(home, "certs");
  mkdirSync(certs, { recursive: true });
  copyFileSync(h.agents["agent-a"]!.certPath, join(certs, "agent.crt"));
  copyFileSync(h.agents["agent-a"]!.keyPath, join(certs, "agent.key"));
  copyFileSync(h.caBundlePath, join(certs, "root_ca.crt"));
  const port = await freePort();
  const fwd = Bun.spawn(["sh", FORWARDER], {
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      SLAPENIR_CERT_DIR: certs,
      SLAPENIR_FORWARD_LISTEN: `127.0.0.1:${port}`,
      SLAPENIR_PROXY_ADDR: `localhost:${h.port}`,
      SLAPENIR_PROXY_NAME: "localhost",
    },
    stdout: "ignore",
    stderr: "ignore",
  });
  while (!(await connects(port))) {
    if (fwd.exitCode !== null) throw new Error(`the forwarder exited (${fwd.exitCode})`);
    await Bun.sleep(20);
  }
  return { port, stop: () => fwd.kill() };
}
