import { describe, expect, test } from "bun:test";
import type { SwapPair } from "./bindings.ts";
import { jsonStringSpans, swapJsonStrings } from "./body-fields.ts";

const enc = new TextEncoder();
const DUMMY = "oauth-dummy-0001";
const REAL = 'R3aL"sec/ret+01';
const PAIR: SwapPair = {
  name: "o",
  dummy: enc.encode(DUMMY),
  real: enc.encode(REAL),
  surfaces: [],
};
const at = (pointer: string) => new Map([[pointer, [PAIR]]]);

describe("swapJsonStrings: exactly the dummy, at the pointer, in strict JSON", () => {
  test("the string at the pointer, nowhere else; escaped as JSON", () => {
    const body = `{"note":"${DUMMY}","client_secret":"${DUMMY}","nested":{"client_secret":"${DUMMY}"}}`;
    const r = swapJsonStrings(body, at("/client_secret"));
    expect(JSON.parse(r.text)).toEqual({
      note: DUMMY,
      client_secret: REAL,
      nested: { client_secret: DUMMY },
    });
    expect(r.swapped).toEqual(["o"]);
  });

  test("an escaped spelling of the dummy is the dummy; a value holding it among other text is not", () => {
    const escaped = `{"client_secret":"${DUMMY.replace("-", "\\u002d")}"}`;
    expect(JSON.parse(swapJsonStrings(escaped, at("/client_secret")).text).client_secret).toBe(
      REAL,
    );
    for (const v of [`x ${DUMMY}`, `${DUMMY}\\n`, DUMMY.toUpperCase()]) {
      const body = `{"client_secret":"${v}"}`;
      expect(swapJsonStrings(body, at("/client_secret")).text).toBe(body);
    }
  });

  test("not strictly JSON: left whole", () => {
    for (const bad of [
      `{"client_secret":"${DUMMY}"`,
      `{"client_secret":"x" "${DUMMY}"}`,
      `{"note":"x"}{"client_secret":"${DUMMY}"}`,
      `{"client_secret":"${DUMMY}"}true`,
      `\ufeff{"client_secret":"${DUMMY}"}`,
    ]) {
      expect(swapJsonStrings(bad, at("/client_secret")).text).toBe(bad);
    }
  });

  test("pointers: arrays, nesting, escapes in keys and values, ~0 and ~1", () => {
    const text = `[{"k":"a"},{"k":"b\\"c","a/b":"d","t~":"e"}, 1, true, null]`;
    expect(jsonStringSpans(text)?.map((s) => [s.pointer, text.slice(s.start, s.end)])).toEqual([
      ["/0/k", "a"],
      ["/1/k", 'b\\"c'],
      ["/1/a~1b", "d"],
      ["/1/t~0", "e"],
    ]);
    const keyed = `{"au\\u0074h": {"token": "${DUMMY}"}}`;
    expect(JSON.parse(swapJsonStrings(keyed, at("/auth/token")).text).auth.token).toBe(REAL);
  });
});
