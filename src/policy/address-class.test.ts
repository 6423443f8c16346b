import { describe, expect, test } from "bun:test";
import {
  type AddressClass,
  addressVerdict,
  classifyAddress,
  isPublicUnicast,
} from "./address-class.ts";

describe("classifyAddress", () => {
  const cases: [string, AddressClass, string?][] = [
    ["8.8.8.8", "public"],
    ["1.1.1.1", "public"],
    ["0.0.0.0", "unspecified"],
    ["0.1.2.3", "unspecified"],
    ["127.0.0.1", "loopback"],
    ["127.255.255.254", "loopback"],
    ["10.1.2.3", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["172.32.0.1", "public"],
    ["192.168.1.1", "private"],
    ["169.254.1.1", "link-local"],
    ["169.254.169.254", "metadata"],
    ["169.254.170.2", "metadata"], // ECS task credentials: link-local, but never to be dialled
    ["100.100.100.200", "metadata"],
    ["192.0.0.192", "metadata"],
    ["100.64.0.1", "cgnat"],
    ["100.127.255.255", "cgnat"],
    ["100.128.0.1", "public"],
    ["224.0.0.1", "multicast"],
    ["239.255.255.250", "multicast"],
    ["255.255.255.255", "broadcast"],
    ["240.0.0.1", "reserved"],
    ["192.0.2.10", "documentation"],
    ["198.51.100.1", "documentation"],
    ["203.0.113.9", "documentation"],
    ["198.18.0.1", "benchmark"],
    ["198.19.255.255", "benchmark"],
    ["192.0.0.8", "reserved"],
    ["192.88.99.1", "reserved"],
    ["2606:4700:4700::1111", "public"],
    ["2a00:1450:4001::200e", "public"],
    ["::", "unspecified"],
    ["::1", "loopback"],
    ["[::1]", "loopback"],
    ["fe80::1", "link-local"],
    ["febf::1", "link-local"],
    ["fc00::1", "private"],
    ["fd12:3456::1", "private"],
    ["fd00:ec2::254", "metadata"],
    ["fec0::1", "private"],
    ["ff02::1", "multicast"],
    ["2001:db8::1", "documentation"],
    ["3fff::1", "documentation"],
    ["2001:2::1", "benchmark"],
    ["2001::1", "reserved"],
    ["100::1", "reserved"],
    ["4000::1", "reserved"],
    ["::ffff:127.0.0.1", "loopback", "127.0.0.1"],
    ["::ffff:169.254.169.254", "metadata", "169.254.169.254"],
    ["::ffff:8.8.8.8", "public", "8.8.8.8"],
    ["::127.0.0.1", "loopback", "127.0.0.1"],
    ["::8.8.8.8", "reserved", "8.8.8.8"],
    ["::ffff:0:10.0.0.1", "private", "10.0.0.1"],
    ["64:ff9b::a9fe:a9fe", "metadata", "169.254.169.254"],
    ["64:ff9b::808:808", "public", "8.8.8.8"],
    ["64:ff9b:1::1", "private"],
    ["2002:7f00:1::1", "loopback", "127.0.0.1"],
    ["2002:c0a8:101::1", "private", "192.168.1.1"],
    ["2002:808:808::1", "public", "8.8.8.8"],
  ];
  for (const [ip, cls, embedded] of cases) {
    test(`${ip} is ${cls}`, () => {
      const info = classifyAddress(ip);
      expect(info).toMatchObject({ class: cls, family: ip.includes(":") ? 6 : 4 });
      expect(info?.embeddedIPv4).toBe(embedded as never);
      expect(isPublicUnicast(ip)).toBe(cls === "public");
    });
  }

  test("bytes and canonical text", () => {
    expect(classifyAddress(Uint8Array.of(127, 0, 0, 1))).toEqual({
      address: "127.0.0.1",
      family: 4,
      class: "loopback",
    });
    expect(classifyAddress("FD00:EC2:0:0:0:0:0:254")).toEqual({
      address: "fd00:ec2::254",
      family: 6,
      class: "metadata",
    });
  });

  test("non-addresses are null and never public", () => {
    for (const junk of [
      "",
      "localhost",
      "127.1",
      "2130706433",
      "1.2.3",
      "::g",
      "[::1",
      new Uint8Array(5),
    ]) {
      expect(classifyAddress(junk)).toBeNull();
      expect(isPublicUnicast(junk)).toBe(false);
    }
  });
});

describe("addressVerdict: which resolved addresses the proxy dials", () => {
  test("public unicast always", () => {
    expect(addressVerdict("93.184.216.34", false).ok).toBe(true);
  });
  test("private and loopback only when private destinations are allowed", () => {
    expect(addressVerdict("10.1.2.3", false)).toEqual({
      ok: false,
      code: "address-denied",
      reason: "private address",
    });
    expect(addressVerdict("10.1.2.3", true).ok).toBe(true);
    expect(addressVerdict("127.0.0.1", true).ok).toBe(true);
  });
  test("metadata endpoints and the unspecified address never", () => {
    for (const ip of ["169.254.169.254", "0.0.0.0", "::"]) {
      expect(addressVerdict(ip, true).ok).toBe(false);
    }
  });

  // Every cloud endpoint that hands out credentials or platform control, v4 and v6, wrapped or
  // not: denied even where private destinations are allowed.
  const cloud: [string, string][] = [
    ["169.254.169.254", "AWS/GCP/Azure/OpenStack/DigitalOcean/Oracle instance metadata"],
    ["fd00:ec2::254", "AWS IMDS, IPv6"],
    ["169.254.170.2", "AWS ECS task credentials"],
    ["169.254.170.23", "AWS EKS Pod Identity"],
    ["fd00:ec2::23", "AWS EKS Pod Identity, IPv6"],
    ["fd20:ce::254", "GCP metadata, IPv6"],
    ["168.63.129.16", "Azure WireServer"],
    ["100.100.100.200", "Alibaba Cloud"],
    ["192.0.0.192", "Oracle Cloud (legacy)"],
    ["169.254.0.23", "Tencent Cloud"],
    ["fe80::a9fe:a9fe", "OpenStack, IPv6"],
    ["::ffff:168.63.129.16", "Azure WireServer, IPv4-mapped"],
    ["64:ff9b::a9fe:aa02", "AWS ECS, through NAT64"],
  ];
  for (const [ip, what] of cloud) {
    test(`${what} (${ip}) is metadata, denied with private destinations allowed`, () => {
      expect(classifyAddress(ip)?.class).toBe("metadata");
      expect(addressVerdict(ip, true)).toEqual({
        ok: false,
        code: "address-denied",
        reason: "metadata address",
      });
    });
  }
});
