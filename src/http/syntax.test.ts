import { expect, test } from "bun:test";
import { isSafeFieldValue, isToken, latin1, latin1Bytes, splitList } from "./syntax.ts";

test("latin1 round-trips every byte exactly (obs-text survives parsing and re-serializing)", () => {
  const all = Uint8Array.from({ length: 256 }, (_, i) => i);
  const text = latin1(all);
  expect(Array.from(text, (c) => c.charCodeAt(0))).toEqual(Array.from(all));
  expect(latin1Bytes(text)).toEqual(all);
  expect(latin1(all, 65, 68)).toBe("ABC");
  expect(() => latin1Bytes("\u0100")).toThrow(RangeError);
});

test("token, field value and list grammar", () => {
  expect([
    isToken("GET"),
    isToken("X-Custom_1~"),
    isToken(""),
    isToken("a b"),
    isToken("a:b"),
    isToken("é"),
  ]).toEqual([true, true, false, false, false, false]);
  expect([
    isSafeFieldValue("a\tb"),
    isSafeFieldValue("caf\xe9"),
    isSafeFieldValue("a\r\n"),
    isSafeFieldValue(" a"),
    isSafeFieldValue(""),
  ]).toEqual([true, true, false, false, true]);
  expect(splitList(" a ,, b\t,c ")).toEqual(["a", "b", "c"]);
});
