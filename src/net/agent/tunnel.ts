// CONNECT interception: on an outer mTLS connection whose CONNECT was admitted, the proxy
// answers the agent's TLS with a leaf minted for the CONNECT host and refuses an SNI that names
// another host. The runtime runs no SNI callback for TLS layered inside a tunnel, so the
// ClientHello is read and its server name checked here (client-hello.ts) before the bytes go to
// TLS. What runs inside (HTTP, through a session) is the caller's; this file only layers the
// TLS and ties the two connections' lives together.

import tls from "node:tls";
import type { MintedLeaf } from "../../pki/leaf-cache.ts";
import { canonicalHost } from "../../policy/host.ts";
import { parseClientHello } from "./client-hello.ts";
import { TLS_OPTIONS } from "./tls-options.ts";

export interface TunnelHooks {
  /** The intercepted handshake completed; `sni` as the agent sent it, when it sent one. */
  secure(inner: tls.TLSSocket, sni: string | undefined): void;
  /** The agent asked for another host by SNI (the tunnel is closed). */
  sniMismatch(): void;
}

/**
 * Layer the intercepted TLS over `outer` for `host` (canonical). The handshake gets
 * `handshakeTimeoutMs`; a failure closes both connections.
 */
export function interceptTunnel(
  outer: tls.TLSSocket,
  host: string,
  leaf: MintedLeaf,
  handshakeTimeoutMs: number,
  hooks: TunnelHooks,
): void {
  // The listener keeps half-closed connections open (an agent may end its side after a request
  // and still read the answer). A tunnel cannot: the runtime's TLS over a stream ends its
  // carrier when the inner TLS ends, so an agent that ends the carrier ends the tunnel.
  outer.once("end", () => outer.end());
  const timer = setTimeout(() => outer.destroy(), handshakeTimeoutMs);
  const sameHost = (name: string) => {
    const c = canonicalHost(name);
    return c.ok && c.value.host === host;
  };
  let buffered = Buffer.alloc(0);
  const onData = (d: Buffer) => {
    buffered = Buffer.concat([buffered, d]);
    const hello = parseClientHello(buffered);
    if (hello.kind === "incomplete") return;
    outer.off("data", onData);
    outer.pause();
    if (hello.kind === "invalid" || (hello.sni !== undefined && !sameHost(hello.sni))) {
      clearTimeout(timer);
      if (hello.kind === "hello") hooks.sniMismatch();
      outer.destroy();
      return;
    }
    outer.unshift(buffered);
    layer(outer, leaf, timer, hooks, sameHost);
  };
  outer.on("data", onData);
  outer.once("close", () => clearTimeout(timer));
}

/** The intercepted TLS over `outer`, whose ClientHello was read and found for the host. */
function layer(
  outer: tls.TLSSocket,
  leaf: MintedLeaf,
  timer: ReturnType<typeof setTimeout>,
  hooks: TunnelHooks,
  sameHost: (name: string) => boolean,
): void {
  let sniMismatch = false;
  const inner = new tls.TLSSocket(outer, {
    isServer: true,
    ...TLS_OPTIONS,
    secureContext: leaf.secureContext!,
    // Checked again here, should a runtime ever call it.
    SNICallback: (servername, cb) => {
      if (sameHost(servername)) cb(null, leaf.secureContext);
      else {
        sniMismatch = true;
        cb(new Error("SNI does not match the CONNECT target"));
      }
    },
  });
  inner.once("secure", () => {
    clearTimeout(timer);
    const sni = (inner as unknown as { servername?: string | false }).servername;
    hooks.secure(inner, typeof sni === "string" && sni !== "" ? sni : undefined);
  });
  inner.on("error", () => {
    clearTimeout(timer);
    if (sniMismatch) hooks.sniMismatch();
    inner.destroy();
    outer.destroy();
  });
  inner.on("close", () => outer.destroy());
  // And the other way: the inside of a connection closed under it (revoked, shed, reset) must
  // not live on as a session with nowhere to write.
  outer.once("close", () => inner.destroy());
}
