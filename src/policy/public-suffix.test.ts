import { describe, expect, test } from "bun:test";
import { sharedSuffixUnder } from "./public-suffix.ts";

describe("sharedSuffixUnder: is a wildcard's suffix shared by strangers?", () => {
  test.each([
    // The suffix is itself public: every name under it is someone's.
    ["github.io", "github.io"],
    ["herokuapp.com", "herokuapp.com"],
    ["blob.core.windows.net", "blob.core.windows.net"],
    ["s3.amazonaws.com", "s3.amazonaws.com"],
    ["com", "com"],
    ["co.uk", "co.uk"],
    ["GitHub.IO.", "github.io"],
    // Internationalised suffixes, as hosts reach the check: in their ASCII form.
    ["xn--55qx5d.cn", "xn--55qx5d.cn"],
    ["xn--1lqs71d.jp", "xn--1lqs71d.jp"],
  ])("%s → %s", (suffix, found) => {
    expect(sharedSuffixUnder(suffix)).toBe(found);
  });

  test("a suffix with public suffixes under it (tenants deeper down) is shared too", () => {
    const found = sharedSuffixUnder("amazonaws.com");
    expect(found).toBeDefined();
    expect(found!.endsWith(".amazonaws.com")).toBe(true);
    expect(sharedSuffixUnder("core.windows.net")).toBeDefined();
  });

  test.each(["github.com", "api.github.com", "openai.com", "example.com", "10.0.0.1", "::1"])(
    "%s has one owner",
    (suffix) => {
      expect(sharedSuffixUnder(suffix)).toBeUndefined();
    },
  );
});
