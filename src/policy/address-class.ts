// Classifies a resolved IP address so the proxy can refuse internal destinations on the
// address it actually connects to (THREATS 19: metadata, loopback, RFC 1918, link-local …,
// checked at connect time against DNS rebinding). Tables follow the IANA IPv4 and IPv6
// Special-Purpose Address Registries (RFC 6890 and updates). It must never call an address
// public because it is wrapped: IPv4-mapped, IPv4-compatible, NAT64 and 6to4 addresses are
// classed by the IPv4 address they carry. Pure: no DNS, no sockets.

import { formatIPv4, formatIPv6, parseDottedQuad, parseIPv6 } from "./ip-address.ts";
import { PASS, refuse, type Verdict } from "./verdict.ts";

export type AddressClass =
  | "public"
  | "loopback"
  | "private"
  | "link-local"
  | "metadata"
  | "unspecified"
  | "cgnat"
  | "multicast"
  | "broadcast"
  | "documentation"
  | "benchmark"
  | "reserved";

export interface AddressInfo {
  /** Canonical text (dotted quad / RFC 5952). */
  readonly address: string;
  readonly family: 4 | 6;
  readonly class: AddressClass;
  /** For IPv6 forms that carry an IPv4 address: that address (which decided the class). */
  readonly embeddedIPv4?: string;
}

interface Range {
  readonly bytes: Uint8Array;
  readonly prefix: number;
  readonly class: AddressClass;
  /** Where the range comes from, for reviewers. */
  readonly source: string;
}

function v4(cidr: string, cls: AddressClass, source: string): Range {
  const [a, p] = cidr.split("/");
  return { bytes: parseDottedQuad(a!)!, prefix: Number(p), class: cls, source };
}
function v6(cidr: string, cls: AddressClass, source: string): Range {
  const [a, p] = cidr.split("/");
  return { bytes: parseIPv6(a!)!, prefix: Number(p), class: cls, source };
}

/**
 * Most specific first: the first matching range wins. The "metadata" entries are every cloud
 * endpoint that hands out instance or workload credentials or platform control, from each
 * provider's documentation; they stay denied whatever SLAPENIR_ALLOW_PRIVATE says.
 */
const IPV4_RANGES: readonly Range[] = [
  v4(
    "169.254.169.254/32",
    "metadata",
    "instance metadata: AWS IMDS, GCP, Azure IMDS, OpenStack, DigitalOcean, Oracle, Hetzner, IBM, Huawei",
  ),
  v4("169.254.170.2/32", "metadata", "AWS ECS task metadata and container credentials"),
  v4("169.254.170.23/32", "metadata", "AWS EKS Pod Identity agent"),
  v4("169.254.0.23/32", "metadata", "Tencent Cloud metadata (metadata.tencentyun.com)"),
  v4("168.63.129.16/32", "metadata", "Azure WireServer (platform agent, host health)"),
  v4("100.100.100.200/32", "metadata", "Alibaba Cloud metadata"),
  v4("192.0.0.192/32", "metadata", "Oracle Cloud metadata (legacy)"),
  v4("255.255.255.255/32", "broadcast", "RFC 919 limited broadcast"),
  v4("0.0.0.0/8", "unspecified", "RFC 1122 'this network' (0.0.0.0 reaches the local host)"),
  v4("10.0.0.0/8", "private", "RFC 1918"),
  v4("100.64.0.0/10", "cgnat", "RFC 6598 shared address space"),
  v4("127.0.0.0/8", "loopback", "RFC 1122"),
  v4("169.254.0.0/16", "link-local", "RFC 3927"),
  v4("172.16.0.0/12", "private", "RFC 1918"),
  v4("192.0.0.0/24", "reserved", "RFC 6890 IETF protocol assignments"),
  v4("192.0.2.0/24", "documentation", "RFC 5737 TEST-NET-1"),
  v4("192.31.196.0/24", "reserved", "RFC 7535 AS112"),
  v4("192.52.193.0/24", "reserved", "RFC 7450 AMT"),
  v4("192.88.99.0/24", "reserved", "RFC 7526 deprecated 6to4 relay anycast"),
  v4("192.168.0.0/16", "private", "RFC 1918"),
  v4("192.175.48.0/24", "reserved", "RFC 7534 direct delegation AS112"),
  v4("198.18.0.0/15", "benchmark", "RFC 2544"),
  v4("198.51.100.0/24", "documentation", "RFC 5737 TEST-NET-2"),
  v4("203.0.113.0/24", "documentation", "RFC 5737 TEST-NET-3"),
  v4("224.0.0.0/4", "multicast", "RFC 5771"),
  v4("240.0.0.0/4", "reserved", "RFC 1112 future use"),
];

const IPV6_RANGES: readonly Range[] = [
  v6("::/128", "unspecified", "RFC 4291"),
  v6("::1/128", "loopback", "RFC 4291"),
  v6("fd00:ec2::254/128", "metadata", "AWS instance metadata over IPv6"),
  v6("fd00:ec2::23/128", "metadata", "AWS EKS Pod Identity agent over IPv6"),
  v6("fd20:ce::254/128", "metadata", "GCP metadata server over IPv6"),
  v6("fe80::a9fe:a9fe/128", "metadata", "OpenStack metadata over IPv6"),
  v6("64:ff9b:1::/48", "private", "RFC 8215 local-use IPv4/IPv6 translation"),
  v6("100::/64", "reserved", "RFC 6666 discard-only"),
  v6("2001:2::/48", "benchmark", "RFC 5180"),
  v6("2001::/23", "reserved", "RFC 2928 IETF protocol assignments (incl. Teredo 2001::/32)"),
  v6("2001:db8::/32", "documentation", "RFC 3849"),
  v6("3fff::/20", "documentation", "RFC 9637"),
  v6("5f00::/16", "reserved", "RFC 9602 SRv6 SIDs"),
  v6("fc00::/7", "private", "RFC 4193 unique local"),
  v6("fe80::/10", "link-local", "RFC 4291"),
  v6("fec0::/10", "private", "RFC 3879 deprecated site-local"),
  v6("ff00::/8", "multicast", "RFC 4291"),
];

/**
 * IPv6 prefixes that carry an IPv4 address, and where it sits. A non-public embedded address
 * makes the whole address non-public with its class; a public one leaves the address public
 * only where the form is a live translation mechanism (mapped, NAT64, 6to4) — the deprecated
 * forms are "reserved" either way.
 */
const EMBEDDING: readonly { range: Range; offset: number; live: boolean }[] = [
  { range: v6("::ffff:0:0/96", "reserved", "RFC 4291 IPv4-mapped"), offset: 12, live: true },
  {
    range: v6("::/96", "reserved", "RFC 4291 IPv4-compatible (deprecated)"),
    offset: 12,
    live: false,
  },
  {
    range: v6("::ffff:0:0:0/96", "reserved", "RFC 2765 SIIT IPv4-translated"),
    offset: 12,
    live: false,
  },
  {
    range: v6("64:ff9b::/96", "reserved", "RFC 6052 NAT64 well-known prefix"),
    offset: 12,
    live: true,
  },
  { range: v6("2002::/16", "reserved", "RFC 3056 6to4"), offset: 2, live: true },
];

function inRange(b: Uint8Array, r: Range): boolean {
  let bits = r.prefix;
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((b[i]! & mask) !== (r.bytes[i]! & mask)) return false;
  }
  return true;
}

function classifyV4(b: Uint8Array): AddressClass {
  for (const r of IPV4_RANGES) if (inRange(b, r)) return r.class;
  return "public";
}

/**
 * Classify an address given as text (dotted quad or IPv6, brackets optional) or bytes (4 or
 * 16). Returns null for anything that is not an IP address.
 */
export function classifyAddress(ip: string | Uint8Array): AddressInfo | null {
  let b: Uint8Array | null;
  if (typeof ip === "string") {
    const t = ip.startsWith("[") && ip.endsWith("]") ? ip.slice(1, -1) : ip;
    b = t.includes(":") ? parseIPv6(t) : parseDottedQuad(t);
  } else {
    b = ip.length === 4 || ip.length === 16 ? ip : null;
  }
  if (!b) return null;
  if (b.length === 4) return { address: formatIPv4(b), family: 4, class: classifyV4(b) };
  const address = formatIPv6(b);
  // :: and ::1 sit inside ::/96 but are classed as themselves.
  if (inRange(b, IPV6_RANGES[0]!) || inRange(b, IPV6_RANGES[1]!)) {
    return { address, family: 6, class: inRange(b, IPV6_RANGES[0]!) ? "unspecified" : "loopback" };
  }
  for (const { range, offset, live } of EMBEDDING) {
    if (inRange(b, range)) {
      const inner = b.slice(offset, offset + 4);
      const innerClass = classifyV4(inner);
      const cls = innerClass === "public" && !live ? "reserved" : innerClass;
      return { address, family: 6, class: cls, embeddedIPv4: formatIPv4(inner) };
    }
  }
  for (const r of IPV6_RANGES) if (inRange(b, r)) return { address, family: 6, class: r.class };
  // Only 2000::/3 is allocated global unicast; everything else is unassigned.
  if ((b[0]! & 0xe0) !== 0x20) return { address, family: 6, class: "reserved" };
  return { address, family: 6, class: "public" };
}

/** True only for a well-formed, globally routable unicast address. Non-IP input → false. */
export function isPublicUnicast(ip: string | Uint8Array): boolean {
  return classifyAddress(ip)?.class === "public";
}

/** The ranges, for documentation and tests. */
export const SPECIAL_RANGES = {
  ipv4: IPV4_RANGES.map((r) => ({
    cidr: `${formatIPv4(r.bytes)}/${r.prefix}`,
    class: r.class,
    source: r.source,
  })),
  ipv6: IPV6_RANGES.map((r) => ({
    cidr: `${formatIPv6(r.bytes)}/${r.prefix}`,
    class: r.class,
    source: r.source,
  })),
} as const;

/**
 * Whether the proxy may dial a resolved address: public unicast only, unless private
 * destinations are allowed (tests, labs) — and even then never a metadata endpoint or the
 * unspecified address. Refused: the address's class, as the reason.
 */
export function addressVerdict(ip: string, allowPrivate: boolean): Verdict {
  if (isPublicUnicast(ip)) return PASS;
  const info = classifyAddress(ip);
  const cls = info?.class ?? "invalid";
  if (allowPrivate && info !== null && cls !== "metadata" && cls !== "unspecified") return PASS;
  return refuse("address-denied", `${cls} address`);
}
