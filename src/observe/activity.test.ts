import { describe, expect, test } from "bun:test";
import type { ProxyErrorCode } from "../http/proxy-error.ts";
import { Activity } from "./activity.ts";
import type { RequestRecord } from "./audit.ts";

const rec = (over: Partial<RequestRecord> = {}): RequestRecord => ({
  conn: 1,
  agent: "a",
  serial: "1",
  method: "GET",
  scheme: "https",
  host: "api.example",
  port: 443,
  path: "/x",
  status: 200,
  bytesIn: 0,
  bytesOut: 10,
  swaps: 1,
  redactions: 0,
  decision: "allow",
  reason: "allowed by allow[0] api.example",
  durationMs: 3,
  ...over,
});

describe("Activity", () => {
  test("recent exchanges, newest first, in a ring of fixed size; filters by agent and decision", () => {
    const act = new Activity(3);
    for (let i = 1; i <= 5; i++)
      act.exchange(rec({ path: `/${i}`, agent: i % 2 ? "a" : "b" }), undefined, i * 1000);
    expect(act.recent().map((v) => v.path)).toEqual(["/5", "/4", "/3"]);
    expect(act.recent({ agent: "b" }).map((v) => v.path)).toEqual(["/4"]);
    act.exchange(rec({ path: "/d", decision: "deny", status: 403 }), "policy-denied", 6000);
    expect(act.recent({ decision: "deny" })).toMatchObject([{ path: "/d", code: "policy-denied" }]);
    expect(act.recent()[0]!.at).toBe(new Date(6000).toISOString());
  });

  test("per agent counts and last seen; refusals and failures by code, most frequent first", () => {
    const act = new Activity();
    act.identified("a", "1f", 86_400_000, 500);
    act.exchange(rec({ swaps: 2 }), undefined, 1000);
    act.exchange(rec({ decision: "deny", status: 403, swaps: 0 }), "dlp-blocked", 2000);
    act.exchange(rec({ decision: "deny", status: 403, swaps: 0 }), "policy-denied", 3000);
    act.exchange(rec({ decision: "deny", status: 403, swaps: 0 }), "policy-denied", 3500);
    act.exchange(
      rec({ agent: "b", decision: "error", status: 502, swaps: 0, redactions: 4 }),
      "upstream-reset" as ProxyErrorCode,
      4000,
    );
    act.violation("a", 5000);
    expect(act.agents()).toEqual([
      {
        agent: "a",
        serial: "1f",
        certificateExpiresAt: new Date(86_400_000).toISOString(),
        requests: 4,
        denied: 3,
        errors: 0,
        swaps: 2,
        redactions: 0,
        violations: 1,
        lastSeen: new Date(5000).toISOString(),
      },
      {
        agent: "b",
        serial: null,
        certificateExpiresAt: null,
        requests: 1,
        denied: 0,
        errors: 1,
        swaps: 0,
        redactions: 4,
        violations: 0,
        lastSeen: new Date(4000).toISOString(),
      },
    ]);
    expect(act.reasons()).toEqual([
      { code: "policy-denied", count: 2 },
      { code: "dlp-blocked", count: 1 },
      { code: "upstream-reset", count: 1 },
    ]);
  });

  test("the live stream sees each exchange as recorded; filters by host too; uses by credential", () => {
    const act = new Activity(10);
    const seen: string[] = [];
    const stop = act.watch((e) => seen.push(`${e.agent} ${e.path} ${e.at}`));
    act.exchange(rec({ path: "/1" }), undefined, 1000, ["gh"]);
    act.exchange(rec({ path: "/2", host: "other.example" }), undefined, 2000, ["gh", "oa"]);
    stop();
    act.exchange(rec({ path: "/3" }), undefined, 3000);
    expect(seen).toEqual([
      `a /1 ${new Date(1000).toISOString()}`,
      `a /2 ${new Date(2000).toISOString()}`,
    ]);
    expect(act.recent({ host: "other.example" }).map((e) => e.path)).toEqual(["/2"]);
    expect(Object.fromEntries(act.uses())).toEqual({ gh: 2, oa: 1 });
  });

  test("bounded in agents: the longest unseen is let go", () => {
    const act = new Activity(1);
    for (let i = 0; i < 1100; i++) act.exchange(rec({ agent: `agent-${i}` }), undefined, i);
    act.exchange(rec({ agent: "agent-200" }), undefined, 5000);
    const names = act.agents().map((a) => a.agent);
    expect(names.length).toBe(1024);
    expect(names).not.toContain("agent-0");
    expect(names).toContain("agent-1099");
  });
});
