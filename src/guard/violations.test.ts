import { expect, test } from "bun:test";
import { violationsOf } from "./violations.ts";

test.each([
  [{ decision: "deny", reason: "", code: "dlp-blocked" }, 0, false, ["dlp"]],
  [{ decision: "deny", reason: "", code: "policy-denied" }, 0, true, ["rules"]],
  [{ decision: "deny", reason: "", code: "policy-denied" }, 0, false, []],
  [{ decision: "allow", reason: "" }, 2, true, ["foreign-dummy"]],
  [{ decision: "deny", reason: "", code: "dlp-blocked" }, 1, true, ["dlp", "foreign-dummy"]],
  [{ decision: "deny", reason: "", code: "rate-limited" }, 0, true, []],
  [{ decision: "error", reason: "", code: "upstream-reset" }, 0, true, []],
] as const)("%#: %o with %d foreign dummies, bound %p → %o", (outcome, foreign, bound, kinds) => {
  expect(
    violationsOf(outcome, { foreignDummies: foreign, boundHost: bound, redactions: 0 }),
  ).toEqual([...kinds]);
});

test("a real value in the answer is a reflection, whatever else happened", () => {
  const allowed = { decision: "allow", reason: "" } as const;
  expect(violationsOf(allowed, { foreignDummies: 0, boundHost: true, redactions: 2 })).toEqual([
    "reflection",
  ]);
});
