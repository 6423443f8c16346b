import { expect, test } from "bun:test";
import { QuarantineClaims } from "./quarantine-claims.ts";

test("the first claim holds the agent for every loop; later ones do not; a hold runs out or is released", () => {
  let now = 1_000;
  const a = new QuarantineClaims(undefined, () => now);
  const b = new QuarantineClaims(a.memory, () => now);
  expect(a.claim("agent-a", null)).toBe(true);
  expect(b.claim("agent-a", null)).toBe(false); // another loop's answer to agent-a: not sent
  expect(b.holds("agent-a")).toBe(true);
  expect(b.holds("agent-b")).toBe(false);
  b.release("agent-a");
  expect(a.holds("agent-a")).toBe(false);
  expect(b.claim("agent-b", now + 500)).toBe(true);
  now += 499;
  expect(a.holds("agent-b")).toBe(true);
  now += 1;
  expect(a.holds("agent-b")).toBe(false);
  expect(a.claim("agent-b", null)).toBe(true); // a hold that ran out is claimed anew
  expect(() => new QuarantineClaims(new SharedArrayBuffer(64))).toThrow();
});
