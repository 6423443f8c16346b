import { describe, expect, test } from "bun:test";
import { decodeBasicAuth, swapBasicAuth } from "./basic-auth.ts";

const b = (s: string) => new TextEncoder().encode(s);
const b64 = (s: string) => Buffer.from(s).toString("base64");
const pairs = [
  { name: "pw", dummy: b("dummy-password-1"), real: b("real-password-longer-1") },
  { name: "user", dummy: b("dummy-user-xyz"), real: b("real-user") },
];

describe("swapBasicAuth", () => {
  const cases: [string, string, { value: string; swapped: string[] }][] = [
    [
      "password",
      `Basic ${b64("alice:dummy-password-1")}`,
      { value: `Basic ${b64("alice:real-password-longer-1")}`, swapped: ["pw"] },
    ],
    [
      "user and password",
      `Basic ${b64("dummy-user-xyz:dummy-password-1")}`,
      { value: `Basic ${b64("real-user:real-password-longer-1")}`, swapped: ["user", "pw"] },
    ],
    [
      "scheme case kept",
      `basic ${b64("x:dummy-password-1")}`,
      { value: `basic ${b64("x:real-password-longer-1")}`, swapped: ["pw"] },
    ],
    [
      "every alignment (prefix 0..2 mod 3)",
      `Basic ${b64("ab:dummy-password-1")}`,
      { value: `Basic ${b64("ab:real-password-longer-1")}`, swapped: ["pw"] },
    ],
    [
      "a dummy among other text in the user or password is content",
      `Basic ${b64("my token is dummy-user-xyz ok:pw dummy-password-1")}`,
      {
        value: `Basic ${b64("my token is dummy-user-xyz ok:pw dummy-password-1")}`,
        swapped: [],
      },
    ],
    [
      "a token alone, without a colon",
      `Basic ${b64("dummy-password-1")}`,
      { value: `Basic ${b64("real-password-longer-1")}`, swapped: ["pw"] },
    ],
    [
      "no dummy inside",
      `Basic ${b64("alice:other")}`,
      { value: `Basic ${b64("alice:other")}`, swapped: [] },
    ],
    [
      "bearer is not Basic",
      "Bearer dummy-password-1",
      { value: "Bearer dummy-password-1", swapped: [] },
    ],
    [
      "non-canonical base64 left alone",
      `Basic ${b64("alice:dummy-password-1").replace(/=+$/, "")}x`,
      { value: `Basic ${b64("alice:dummy-password-1").replace(/=+$/, "")}x`, swapped: [] },
    ],
  ];
  for (const [name, value, want] of cases) {
    test(name, () => {
      expect(swapBasicAuth(value, pairs)).toEqual(want);
    });
  }
  test("base64 substring swap would not work, which is why we decode", () => {
    // The encoded dummy is not a substring of the encoded header at alignment 1.
    expect(b64("a:dummy-password-1").includes(b64("dummy-password-1").slice(0, 8))).toBe(false);
  });
});

describe("decodeBasicAuth", () => {
  test("strict", () => {
    expect(decodeBasicAuth(`Basic ${b64("u:p")}`)).toEqual(b("u:p"));
    for (const v of [
      "Basic",
      "Basic ",
      "Basic a b",
      "Basic !!!!",
      `Basic ${b64("u:p")} `,
      `Digest ${b64("u:p")}`,
    ]) {
      expect(decodeBasicAuth(v)).toBeNull();
    }
  });
});
