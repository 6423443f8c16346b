import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Quarantine } from "./quarantine.ts";

const dir = mkdtempSync(join(tmpdir(), "slapenir-quarantine-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe("quarantine", () => {
  test("an agent in quarantine is refused until released; others are not", () => {
    const q = Quarantine.load(null, null);
    expect(q.add("agent-a", "dlp")).toBe(true);
    expect(q.add("agent-a", "dlp")).toBe(false);
    expect(q.check("agent-a")).toMatchObject({ ok: false, code: "quarantined" });
    expect(q.check("agent-b").ok).toBe(true);
    expect(q.release("agent-a")).toBe(true);
    expect(q.release("agent-a")).toBe(false);
    expect(q.check("agent-a").ok).toBe(true);
  });

  test("with a hold time, it ends by itself", () => {
    let now = 1_000;
    const q = Quarantine.load(null, 60_000, () => now);
    q.add("agent-a", "dlp");
    now += 59_999;
    expect(q.check("agent-a").ok).toBe(false);
    now += 1;
    expect(q.check("agent-a").ok).toBe(true);
    expect(q.list()).toEqual([]);
  });

  test("survives a restart: it is kept in its file", () => {
    const file = join(dir, "kept.json");
    Quarantine.load(file, null, () => 5).add("agent-a", "dlp");
    const again = Quarantine.load(file, null);
    expect(again.check("agent-a").ok).toBe(false);
    expect(again.list()).toEqual([{ agent: "agent-a", kind: "dlp", since: 5, until: null }]);
    again.release("agent-a");
    expect(JSON.parse(readFileSync(file, "utf8"))).toEqual({ agents: [] });
  });

  test("a file that is not a quarantine is an error naming it", () => {
    const bad = join(dir, "bad.json");
    writeFileSync(bad, "{not json");
    expect(() => Quarantine.load(bad, null)).toThrow(`${bad}: is not valid JSON`);
    writeFileSync(bad, JSON.stringify({ agents: [{ agent: "../x", kind: "dlp", since: 1 }] }));
    expect(() => Quarantine.load(bad, null)).toThrow(
      `${bad}: agents[0]: is not a quarantine entry`,
    );
  });
});
