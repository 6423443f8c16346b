// CONNECT interception: on an outer mTLS connection whose CONNECT was admitted, the proxy
// answers the agent's TLS with a leaf minted for the CONNECT host and refuses an SNI that names
// another host. What runs inside (HTTP, through a session) is the caller's; this file only
// layers the TLS and ties the two connections' lives together.

import tls from "node:tls";
import type { MintedLeaf } from "../../pki/leaf-cache.ts";
import { canonicalHost } from "../../policy/host.ts";
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
  let sniMismatch = false;
  const inner = new tls.TLSSocket(outer, {
    isServer: true,
    ...TLS_OPTIONS,
    secureContext: leaf.secureContext!,
    SNICallback: (servername, cb) => {
      const c = canonicalHost(servername);
      if (c.ok && c.value.host === host) cb(null, leaf.secureContext);
      else {
        sniMismatch = true;
        cb(new Error("SNI does not match the CONNECT target"));
      }
    },
  });
  const timer = setTimeout(() => inner.destroy(), handshakeTimeoutMs);
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
}
