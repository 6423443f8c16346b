// The proxy's /metrics as Prometheus reads it (issue 18, item 6), checked by Prometheus's own
// `promtool check metrics` (Debian's prometheus package) after the proxy carried traffic of
// every kind the metrics name: a swap, a redaction, a denial, a WebSocket. One type per name,
// Prometheus naming, and the labels an operator filters by: why a request was refused, which
// credential was swapped.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { missingTools } from "../containers/tool-paths.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "met-dummy-0000000000000001";
const REAL = "met-R3aL-token-00000000001";

let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness({
    credentials: [{ name: "metered", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] }],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

test("after a swap, a redaction and a denial, promtool finds nothing wrong; the labels say which and why", async () => {
  const ok = await h.curl([
    "-H",
    `Authorization: Bearer ${DUMMY}`,
    `https://localhost:${up.port}/echo`,
  ]);
  expect(ok.status).toBe(200);
  // The echo showed the agent the real token it was sent: redacted.
  expect(ok.body.toString()).toContain("Bearer [REDACTED]");
  const denied = await h.curl([`https://not-allowed.test:${up.port}/`]);
  expect(denied.stderr).toContain("CONNECT tunnel failed, response 403");
  await h.auditWhere((l) => l.evt === "request" && l.decision === "deny");
  const text = await (await fetch(`http://127.0.0.1:${h.proxy.adminPort}/metrics`)).text();

  expect(text).toContain('slapenir_swaps_total{agent="agent-a",credential="metered"} 1');
  expect(text).toMatch(/slapenir_redactions_total\{agent="agent-a"\} [1-9]/);
  expect(text).toMatch(
    /slapenir_requests_total\{agent="agent-a",decision="deny",status="4xx",reason="policy-denied"\} 1/,
  );
  // One type per name: no family declared twice.
  const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => m[1]!);
  expect(new Set(types).size).toBe(types.length);
  expect(text).not.toContain(REAL);

  if (missingTools(["promtool"]).length > 0) return;
  const p = Bun.spawn(["promtool", "check", "metrics"], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  p.stdin.write(text);
  p.stdin.end();
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  expect({ code, problems: `${out}${err}`.trim() }).toEqual({ code: 0, problems: "" });
});

test("/status: agents with their counts, refusals by reason, the latest exchanges — as JSON and HTML, never a value", async () => {
  // A request whose path carries the real value: refused, and shown without it.
  const leak = await h.curl([`https://localhost:${up.port}/p?token=${REAL}`]);
  expect(leak.status).toBe(403);
  await h.auditWhere(
    (l) => l.evt === "request" && l.decision === "deny" && String(l.path).startsWith("/p"),
  );
  const base = `http://127.0.0.1:${h.proxy.adminPort}/status`;
  const json = (await (await fetch(base, { headers: { accept: "application/json" } })).json()) as {
    uptimeSeconds: number;
    certificateExpiresAt: string;
    agents: {
      agent: string;
      requests: number;
      denied: number;
      swaps: number;
      redactions: number;
      connections: number;
    }[];
    reasons: { code: string; count: number }[];
    recent: { agent: string; path: string; decision: string; code?: string }[];
  };
  const a = json.agents.find((x) => x.agent === "agent-a")!;
  expect(a.requests).toBeGreaterThanOrEqual(3);
  expect(a.denied).toBeGreaterThanOrEqual(2);
  expect(a.swaps).toBeGreaterThanOrEqual(1);
  expect(a.redactions).toBeGreaterThanOrEqual(1);
  expect(json.reasons.map((r) => r.code)).toEqual(
    expect.arrayContaining(["policy-denied", "dlp-blocked"]),
  );
  expect(json.recent[0]).toMatchObject({ agent: "agent-a", decision: "deny", code: "dlp-blocked" });
  expect(Date.parse(json.certificateExpiresAt)).toBeGreaterThan(Date.now());
  // Filtered to denials only.
  const denials = (await (
    await fetch(`${base}?decision=deny`, { headers: { accept: "application/json" } })
  ).json()) as { recent: { decision: string }[] };
  expect(denials.recent.length).toBeGreaterThanOrEqual(2);
  expect(denials.recent.every((e) => e.decision === "deny")).toBe(true);
  const html = await (await fetch(base)).text();
  expect(html).toContain("<h2>Agents</h2>");
  expect(html).toContain("dlp-blocked");
  for (const page of [JSON.stringify(json), html]) expect(page.includes(REAL)).toBe(false);
});
