import { describe, expect, test } from "bun:test";
import { jsonStringSpans, swapFormFields, swapJsonStrings } from "./body-fields.ts";

const up = (v: string) => v.toUpperCase();

describe("swapFormFields", () => {
  test("only the named fields' values; names compared form-decoded", () => {
    const swaps = new Map([["client_secret", up]]);
    expect(swapFormFields("client_id=abc&client_secret=xyz&note=xyz", swaps)).toBe(
      "client_id=abc&client_secret=XYZ&note=xyz",
    );
    expect(swapFormFields("client%5Fsecret=xyz&client+secret=q", swaps)).toBe(
      "client%5Fsecret=XYZ&client+secret=q",
    );
    expect(swapFormFields("client_secret&x=1", swaps)).toBe("client_secret&x=1");
  });
});

describe("swapJsonStrings", () => {
  test("the string at a pointer, nowhere else", () => {
    const swaps = new Map([["/client_secret", up]]);
    const body = `{"note":"xyz","client_secret":"xyz","nested":{"client_secret":"xyz"}}`;
    expect(swapJsonStrings(body, swaps)).toBe(
      `{"note":"xyz","client_secret":"XYZ","nested":{"client_secret":"xyz"}}`,
    );
  });

  test("arrays, nesting, escapes in keys and values, pointer escapes", () => {
    const text = `[{"k":"a"},{"k":"b\\"c","a/b":"d","t~":"e"}, 1, true, null]`;
    expect(jsonStringSpans(text)?.map((s) => [s.pointer, text.slice(s.start, s.end)])).toEqual([
      ["/0/k", "a"],
      ["/1/k", 'b\\"c'],
      ["/1/a~1b", "d"],
      ["/1/t~0", "e"],
    ]);
    const keyed = `{"au\\u0074h": {"token": "x"}}`;
    expect(swapJsonStrings(keyed, new Map([["/auth/token", up]]))).toBe(
      `{"au\\u0074h": {"token": "X"}}`,
    );
  });

  test("not JSON: left whole", () => {
    const swaps = new Map([["/k", up]]);
    for (const bad of [`{"k":"x"`, `{"k":"x}`, `{"k":"x"}}`, `{"k": @}`]) {
      expect(swapJsonStrings(bad, swaps)).toBe(bad);
    }
  });
});
