import { expect, test } from "bun:test";
import { ConfigError } from "./config-error.ts";
import { hostPatternField } from "./host-pattern-field.ts";

test("a bad pattern in configuration is a ConfigError naming where it was written", () => {
  let err: unknown;
  try {
    hostPatternField("*.com", "policy.allow[3]", { allowAny: true, allowPort: true });
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ConfigError);
  expect((err as ConfigError).message).toStartWith("policy.allow[3]: ");
  expect((err as ConfigError).message).toContain("two labels");
});

test("a good one is the parsed pattern", () => {
  expect(hostPatternField("*.GitHub.com", "x", { allowAny: false, allowPort: true })).toMatchObject(
    { pattern: "*.github.com", kind: "wildcard", written: "*.GitHub.com" },
  );
});
