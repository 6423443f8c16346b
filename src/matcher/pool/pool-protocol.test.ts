// Tests of the packed pattern-set format the pool hands to its workers.

import { expect, test } from "bun:test";
import { MatcherError } from "../types.ts";
import { packSpecs, unpackSpecs } from "./pool-protocol.ts";

const enc = new TextEncoder();

test("a packed set unpacks to the same specs, as views into the packed buffer", () => {
  const specs = [
    { pattern: enc.encode("first-secret"), replacement: enc.encode("[1]") },
    { pattern: enc.encode("second-secret-longer"), replacement: new Uint8Array(0) },
  ];
  const packed = packSpecs(specs);
  const { specs: back, options } = unpackSpecs(packed);
  expect(back).toEqual(specs);
  expect(options).toEqual({});
  expect(unpackSpecs(packSpecs(specs, { views: true })).options).toEqual({ views: 2 });
  expect(unpackSpecs(packSpecs(specs, { views: 1 })).options).toEqual({ views: 1 });
  // Zeroing the packed buffer zeroes every unpacked view: one fill wipes the set.
  new Uint8Array(packed).fill(0);
  for (const s of back) {
    expect(s.pattern.every((b) => b === 0)).toBe(true);
    expect(s.replacement.every((b) => b === 0)).toBe(true);
  }
});

test("malformed packed sets are refused without quoting their bytes", () => {
  const good = packSpecs([{ pattern: enc.encode("secret-value"), replacement: enc.encode("r") }]);
  const cases = [
    new ArrayBuffer(2),
    good.slice(0, good.byteLength - 1),
    (() => {
      const b = good.slice(0);
      new DataView(b).setUint32(0, 2, true);
      return b;
    })(),
    (() => {
      const b = good.slice(0);
      new DataView(b).setUint32(4, 2, true); // more view patterns than patterns
      return b;
    })(),
    (() => {
      const b = new ArrayBuffer(good.byteLength + 1);
      new Uint8Array(b).set(new Uint8Array(good));
      return b;
    })(),
  ];
  for (const buf of cases) {
    let err: unknown;
    try {
      unpackSpecs(buf);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(MatcherError);
    expect((err as MatcherError).code).toBe("engine-failure");
    expect((err as MatcherError).message).not.toContain("secret");
  }
});
