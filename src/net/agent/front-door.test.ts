import { expect, test } from "bun:test";
import { peerKey } from "./front-door.ts";

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
