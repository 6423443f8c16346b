// The kernel's send queue of each TCP connection (bytes written but not yet acknowledged by the
// peer), from /proc/net/tcp and /proc/net/tcp6 of the proxy's network namespace. It shows an
// agent taking bytes in steps of one segment: the socket becomes writable again only once a
// third or so of its send buffer (up to 4 MiB) is free, so a slow reader looks stalled to the
// process for seconds while its send queue is still shrinking here. Linux only; elsewhere
// the files are absent and nothing is known.

import { readFileSync } from "node:fs";
import { formatIPv4, formatIPv6, mappedIPv4, parseIPv6 } from "../policy/ip-address.ts";

/** The key of one connection, as `tcpKey` makes it from a socket and `readSendQueues` from the kernel. */
export function tcpKey(remoteAddress: string, remotePort: number, localPort: number): string {
  return `${canonicalAddress(remoteAddress)}|${remotePort}|${localPort}`;
}

function canonicalAddress(address: string): string {
  const v6 = parseIPv6(address.replace(/%.*$/, ""));
  if (!v6) return address;
  const v4 = mappedIPv4(v6);
  return v4 ? formatIPv4(v4) : formatIPv6(v6);
}

/** A socket's key, or null when it has no addresses (closed, or not TCP). */
export function tcpKeyOf(s: {
  remoteAddress?: string | undefined;
  remotePort?: number | undefined;
  localPort?: number | undefined;
}): string | null {
  if (!s.remoteAddress || !s.remotePort || !s.localPort) return null;
  return tcpKey(s.remoteAddress, s.remotePort, s.localPort);
}

/** Hex address from /proc/net/tcp* (each 32-bit word in host order, little-endian here). */
function procAddress(hex: string): string {
  const bytes = new Uint8Array(hex.length / 2);
  for (let w = 0; w < hex.length / 8; w++) {
    for (let i = 0; i < 4; i++) {
      bytes[w * 4 + i] = Number.parseInt(
        hex.slice(w * 8 + (3 - i) * 2, w * 8 + (3 - i) * 2 + 2),
        16,
      );
    }
  }
  if (bytes.length === 4) return formatIPv4(bytes);
  const v4 = mappedIPv4(bytes);
  return v4 ? formatIPv4(v4) : formatIPv6(bytes);
}

/** Parses the text of /proc/net/tcp or tcp6 into `into`: key → send queue bytes. */
export function parseProcNetTcp(text: string, into: Map<string, number>): void {
  const lines = text.split("\n");
  for (let i = 1; i < lines.length; i++) {
    const f = lines[i]!.trim().split(/\s+/);
    if (f.length < 5) continue;
    const [local, remote, , queues] = [f[1]!, f[2]!, f[3]!, f[4]!];
    const lc = local.lastIndexOf(":");
    const rc = remote.lastIndexOf(":");
    const qc = queues.indexOf(":");
    if (lc < 0 || rc < 0 || qc < 0) continue;
    const key = tcpKey(
      procAddress(remote.slice(0, rc)),
      Number.parseInt(remote.slice(rc + 1), 16),
      Number.parseInt(local.slice(lc + 1), 16),
    );
    into.set(key, Number.parseInt(queues.slice(0, qc), 16));
  }
}

/** Every TCP connection's send queue in this network namespace (empty where unavailable). */
export function readSendQueues(
  files: readonly string[] = ["/proc/net/tcp", "/proc/net/tcp6"],
): Map<string, number> {
  const out = new Map<string, number>();
  for (const f of files) {
    try {
      parseProcNetTcp(readFileSync(f, "utf8"), out);
    } catch {
      // absent (not Linux, no IPv6): nothing known from it
    }
  }
  return out;
}
