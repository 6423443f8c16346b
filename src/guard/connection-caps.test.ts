import { expect, test } from "bun:test";
import { ConnectionCaps, peerKey } from "./connection-caps.ts";
import { SharedTable } from "./shared-table.ts";

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

test("accepted connections are counted in all, capped by the total read per use", () => {
  const limits = { perAgent: 4, handshakesPerAddress: 4, total: 2 };
  const caps = new ConnectionCaps(limits);
  expect([caps.accept().ok, caps.accept().ok, caps.accepted]).toEqual([true, true, 2]);
  expect(caps.accept()).toEqual({
    ok: false,
    code: "connection-limit",
    reason: "too many open connections (limit 2)",
  });
  caps.acceptClosed();
  expect([caps.accept().ok, caps.accepted]).toEqual([true, 2]);
  limits.total = 3; // a reload
  expect([caps.accept().ok, caps.accept().ok, caps.accepted]).toEqual([true, false, 3]);
  for (let i = 0; i < 4; i++) caps.acceptClosed();
  expect(caps.accepted).toBe(0);
});

test("caps attached to another's memory count the same connections under their own limits", () => {
  const caps = ConnectionCaps.create({ perAgent: 2, handshakesPerAddress: 1 }, { capacity: 64 });
  const other = ConnectionCaps.attach(caps.memory, { perAgent: 3, handshakesPerAddress: 1 });
  expect([caps.open("a").ok, other.open("a").ok, caps.open("a").ok]).toEqual([true, true, false]);
  expect(other.open("a").ok).toBe(true); // its limit is its own
  expect([...caps.perAgent()]).toEqual([["a", 3]]);
  expect(caps.handshake("10.0.0.1").ok).toBe(true);
  expect(other.handshake("::ffff:10.0.0.1").ok).toBe(false);
  other.handshakeOver("10.0.0.1");
  expect(caps.handshake("10.0.0.1").ok).toBe(true);
  expect([caps.accept().ok, other.accepted]).toEqual([true, 1]);
});

test("a table with no room for another agent or address refuses it, saying the table is full", () => {
  const caps = ConnectionCaps.create({ perAgent: 2, handshakesPerAddress: 1 }, { capacity: 8 });
  // 7 keys fit; the total holds one.
  for (let i = 0; i < 6; i++) expect(caps.open(`agent${i}`).ok).toBe(true);
  const full = {
    ok: false,
    code: "connection-limit",
    reason: "too many agents and addresses counted at once (connection table full, 7)",
  } as const;
  expect(caps.open("agent6")).toEqual(full);
  expect(caps.handshake("10.0.0.1")).toEqual(full);
  expect(caps.tell("agent6")).toBe(false);
  expect([caps.open("agent0").ok, caps.accept().ok]).toEqual([true, true]); // held keys go on
  caps.closed("agent5");
  expect(caps.open("agent6").ok).toBe(true);
});

test("a key is forgotten once nothing is counted under it", () => {
  const caps = ConnectionCaps.create({ perAgent: 2, handshakesPerAddress: 1 }, { capacity: 8 });
  for (let i = 0; i < 100; i++) {
    expect([caps.open(`agent${i}`).ok, caps.tell(`agent${i}`)]).toEqual([true, true]);
    caps.told(`agent${i}`);
    caps.closed(`agent${i}`);
    expect(caps.handshake(`10.0.0.${i}`).ok).toBe(true);
    caps.handshakeOver(`10.0.0.${i}`);
  }
  expect([...caps.perAgent()]).toEqual([]);
});

test("memory that is not a caps table is refused", () => {
  const rates = SharedTable.create({ capacity: 8, ints: 0, floats: 2 });
  expect(() =>
    ConnectionCaps.attach(rates.buffer, { perAgent: 1, handshakesPerAddress: 1 }),
  ).toThrow(TypeError);
});
