import { expect, test } from "bun:test";
import { ProxyError } from "../http/proxy-error.ts";
import { allow, PASS, refuse } from "../policy/verdict.ts";
import { Trace } from "./trace.ts";

test("allowed: the reasons the allowing decisions gave", () => {
  const t = new Trace();
  t.record("rate-limit", PASS);
  t.record(
    "egress",
    allow({ rule: "allow[0] a.example" }, "https://a.example:443 allowed by allow[0] a.example"),
  );
  expect(t.outcome()).toEqual({
    decision: "allow",
    reason: "https://a.example:443 allowed by allow[0] a.example",
  });
});

test("the first refusal decides, and its code says deny or error", () => {
  const t = new Trace();
  t.record("egress", allow(null, "allowed by allow[0]"));
  t.record("outbound", refuse("dlp-blocked", "real credential in request body"));
  t.fail("forward", new ProxyError("upstream-reset", "upstream connection was reset"));
  expect(t.outcome()).toEqual({
    decision: "deny",
    reason: "real credential in request body",
    code: "dlp-blocked",
  });

  const u = new Trace();
  u.fail("forward", new ProxyError("upstream-timeout", "upstream did not answer in time"));
  expect(u.outcome()).toMatchObject({ decision: "error", code: "upstream-timeout" });
});

test("a body that broke after the answer began is an error", () => {
  const t = new Trace();
  t.record("egress", allow(null, "allowed"));
  t.broke("respond", "response body failed");
  expect(t.outcome()).toEqual({ decision: "error", reason: "response body failed" });
});
