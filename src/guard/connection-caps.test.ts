import { expect, test } from "bun:test";
import { ConnectionCaps, peerKey } from "./connection-caps.ts";

test("IPv4 peers are themselves, written plain or IPv4-mapped", () => {
  expect(peerKey("10.1.2.3")).toBe("10.1.2.3");
  expect(peerKey("::ffff:10.1.2.3")).toBe("10.1.2.3");
  expect(peerKey("::ffff:a01:203")).toBe("10.1.2.3");
});

test("IPv6 peers count by their /64: a host cannot pick a new address per connection", () => {
  const a = peerKey("2001:db8:1:2:aaaa:bbbb:cccc:dddd");
  expect(a).toBe("2001:db8:1:2::/64");
  expect(peerKey("2001:db8:1:2::1")).toBe(a);
  expect(peerKey("2001:0db8:0001:0002:ffff::9")).toBe(a);
  expect(peerKey("fe80::1%eth0")).toBe("fe80::/64");
  expect(peerKey("2001:db8:1:3::1")).not.toBe(a);
});

test("an unknown or unparsable address is kept as given", () => {
  expect(peerKey(undefined)).toBe("?");
  expect(peerKey("not-an-address")).toBe("not-an-address");
});

test("an agent's connections are capped; closing one makes room", () => {
  const caps = new ConnectionCaps({ perAgent: 2, handshakesPerAddress: 1 });
  expect(caps.open("a").ok).toBe(true);
  expect(caps.open("a").ok).toBe(true);
  expect(caps.open("a")).toEqual({
    ok: false,
    code: "connection-limit",
    reason: "too many open connections for this agent (limit 2)",
  });
  expect(caps.open("b").ok).toBe(true);
  caps.closed("a");
  expect(caps.open("a").ok).toBe(true);
  expect([...caps.perAgent()]).toEqual([
    ["a", 2],
    ["b", 1],
  ]);
});

test("handshakes in progress are capped per address, an IPv6 host by its /64", () => {
  const caps = new ConnectionCaps({ perAgent: 64, handshakesPerAddress: 1 });
  expect(caps.handshake("2001:db8:1:2::1").ok).toBe(true);
  expect(caps.handshake("2001:db8:1:2::9").ok).toBe(false);
  expect(caps.handshake("10.0.0.1").ok).toBe(true);
  caps.handshakeOver("2001:db8:1:2::1");
  expect(caps.handshake("2001:db8:1:2::9").ok).toBe(true);
});

test("at most 8 refusals of one agent are told at once (fewer if its cap is lower)", () => {
  const caps = new ConnectionCaps({ perAgent: 64, handshakesPerAddress: 1 });
  for (let i = 0; i < 8; i++) expect(caps.tell("a")).toBe(true);
  expect(caps.tell("a")).toBe(false);
  caps.told("a");
  expect(caps.tell("a")).toBe(true);
  const small = new ConnectionCaps({ perAgent: 2, handshakesPerAddress: 1 });
  expect([small.tell("a"), small.tell("a"), small.tell("a")]).toEqual([true, true, false]);
});
