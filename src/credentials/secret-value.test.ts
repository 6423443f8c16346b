import { expect, test } from "bun:test";
import { inspect } from "node:util";
import { SecretValue } from "./secret-value.ts";

const TEXT = "sk-live-5ecret-VALUE-0123456789";

test("no formatter reveals the value", () => {
  const v = SecretValue.fromText(TEXT);
  const views = [
    String(v),
    `${v}`,
    `${v as unknown as string}x`,
    JSON.stringify({ v }),
    inspect(v),
    inspect(v, { showHidden: true, depth: 10, customInspect: false }),
    Bun.inspect(v),
    Bun.inspect({ nested: { v } }),
    JSON.stringify(Object.entries(v)),
    Object.keys(v).join(),
  ];
  for (const s of views) expect(s).not.toContain("5ecret");
  expect(String(v)).toBe(`[secret ${TEXT.length} bytes]`);
});

test("reveal methods, equality, containment", () => {
  const v = SecretValue.fromText(TEXT);
  expect(v.revealText()).toBe(TEXT);
  expect(new TextDecoder().decode(v.revealBytes())).toBe(TEXT);
  expect(v.length).toBe(TEXT.length);
  expect(v.equals(SecretValue.fromText(TEXT))).toBe(true);
  expect(v.equals(SecretValue.fromText(`${TEXT}x`))).toBe(false);
  expect(v.contains(SecretValue.fromText("5ecret-VALUE"))).toBe(true);
  expect(v.contains(SecretValue.fromText("nope-nope"))).toBe(false);
});

test("revealBytes is a copy; fromBytes copies; dispose zeroes and disables", () => {
  const source = new TextEncoder().encode(TEXT);
  const v = SecretValue.fromBytes(source);
  source.fill(0);
  const copy = v.revealBytes();
  copy.fill(0);
  expect(v.revealText()).toBe(TEXT);
  v.dispose();
  expect(v.disposed).toBe(true);
  expect(() => v.revealText()).toThrow("disposed");
  expect(() => v.revealBytes()).toThrow("disposed");
  expect(v.equals(SecretValue.fromBytes(new Uint8Array(TEXT.length)))).toBe(true); // all zero now
});
