// `slapenir forward`: a local forwarder for tools that cannot present a client certificate to
// an HTTPS proxy (pip, Python requests, Node's fetch, git's libcurl builds without proxy
// certificates). It listens on loopback as a plain HTTP proxy address and wraps each
// connection, byte for byte, in the agent's mTLS to the SLAPENIR proxy — the tool's CONNECT and
// everything after it travel inside; the forwarder reads none of it. The proxy still sees the
// agent's certificate, so every rule, swap and redaction is the agent's.

import net from "node:net";
import tls from "node:tls";

export interface ForwarderOptions {
  /** Where to listen: loopback only (a forwarder on another address lends the agent's identity). */
  readonly listen: { readonly host: string; readonly port: number };
  readonly proxy: { readonly host: string; readonly port: number };
  /** The name the proxy's certificate is checked against. */
  readonly servername: string;
  /** The agent's certificate and key, and the CA bundle the proxy's certificate chains to (PEM). */
  readonly cert: string;
  readonly key: string;
  readonly ca: string;
  /** A connection to the proxy that failed (refused, bad certificate): for the operator's log. */
  readonly onError?: (reason: string) => void;
}

export interface RunningForwarder {
  readonly port: number;
  close(): Promise<void>;
}

const LOOPBACK = new Set(["127.0.0.1", "::1", "localhost"]);

export async function startForwarder(o: ForwarderOptions): Promise<RunningForwarder> {
  if (!LOOPBACK.has(o.listen.host)) {
    throw new Error(`forward listens on loopback only, not ${o.listen.host}`);
  }
  // The TLS material is checked once, now: a bad key or certificate fails here, named.
  const context = tls.createSecureContext({ cert: o.cert, key: o.key, ca: o.ca });
  const open = new Set<net.Socket>();
  const server = net.createServer((local) => {
    open.add(local);
    local.pause();
    const remote = tls.connect({
      host: o.proxy.host,
      port: o.proxy.port,
      servername: o.servername,
      secureContext: context,
      ALPNProtocols: ["http/1.1"],
    });
    open.add(remote);
    const done = () => {
      local.destroy();
      remote.destroy();
      open.delete(local);
      open.delete(remote);
    };
    remote.once("secureConnect", () => {
      local.pipe(remote);
      remote.pipe(local);
      local.resume();
    });
    remote.once("error", (e) => {
      o.onError?.(
        `${o.proxy.host}:${o.proxy.port}: ${(e as NodeJS.ErrnoException).code ?? e.message}`,
      );
      done();
    });
    local.once("error", done);
    remote.once("close", done);
    local.once("close", done);
  });
  await new Promise<void>((ok, fail) => {
    server.once("error", fail);
    server.listen(o.listen.port, o.listen.host, () => ok());
  });
  return {
    port: (server.address() as net.AddressInfo).port,
    close: () =>
      new Promise<void>((ok) => {
        for (const s of open) s.destroy();
        server.close(() => ok());
      }),
  };
}
