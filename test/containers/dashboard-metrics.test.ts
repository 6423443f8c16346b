// The monitoring profile's Grafana dashboard against what the proxy really exports: every
// metric a panel queries must be one the proxy's /metrics serves (histograms with their
// _bucket/_sum/_count series), every label a panel groups or filters by must be one that metric
// carries, and the job a panel selects must be the one Prometheus scrapes. Until 2026-11-26
// four of its eight panels queried metrics that did not exist (slapenir_open_connections,
// slapenir_denied_total, slapenir_substitutions_total, slapenir_certificate_expiry_seconds) and
// the memory panel lacked the `slapenir_` prefix of the runtime's metrics: they stayed empty.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, openTunnel } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";
import { repoRoot } from "./tool-paths.ts";

const DUMMY = "sk-dummy-dashboard-000000000000000001";
const REAL = "sk-real-dashboard-9f8e7d6c5b4a392817";

interface Panel {
  title: string;
  targets?: { expr: string }[];
}
const dashboard = JSON.parse(
  readFileSync(join(repoRoot, "docker/monitoring/grafana/dashboards/slapenir-proxy.json"), "utf8"),
) as { panels: Panel[] };
const prometheus = readFileSync(
  join(repoRoot, "docker/monitoring/prometheus/prometheus.yml"),
  "utf8",
);

let h: Harness;
let up: EchoServer;
let exposition = "";

beforeAll(async () => {
  h = await startHarness({
    credentials: [{ name: "svc", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] }],
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
  // Traffic of every kind a panel shows: a swap, a redaction, a denial, a refused connection.
  const ok = await h.curl([
    "-H",
    `authorization: Bearer ${DUMMY}`,
    `https://localhost:${up.port}/echo`,
  ]);
  expect(ok.status).toBe(200);
  const denied = await h.curl([`https://denied.example:443/`]);
  expect(denied.code).not.toBe(0);
  const anonymous = await h.curl([`https://localhost:${up.port}/`], "nobody");
  expect(anonymous.status).toBe(0);
  // Scraped while an agent has a connection open, as the per-agent gauges only then have one.
  const open = await openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
    { connect: `localhost:${up.port}` },
  );
  try {
    exposition = await (await fetch(`http://127.0.0.1:${h.proxy.adminPort}/metrics`)).text();
  } finally {
    closeTunnel(open);
  }
});

afterAll(async () => {
  up?.stop();
  await h?.close();
});

/** Metric name → its type, from the `# TYPE` lines. */
function types(): Map<string, string> {
  const m = new Map<string, string>();
  for (const line of exposition.split("\n")) {
    const t = /^# TYPE (\S+) (\S+)$/.exec(line);
    if (t) m.set(t[1]!, t[2]!);
  }
  return m;
}

/** Label names seen on the samples of `metric` (and its histogram series). */
function labelsOf(metric: string): Set<string> {
  const out = new Set<string>();
  for (const line of exposition.split("\n")) {
    const s = /^([a-zA-Z_:][a-zA-Z0-9_:]*)\{([^}]*)\}/.exec(line);
    if (!s || s[1]!.replace(/_(bucket|sum|count)$/, "") !== metric) continue;
    for (const pair of s[2]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="/g)) out.add(pair[1]!);
  }
  return out;
}

/**
 * The metric names in a PromQL expression: identifiers followed by a selector, a range or a
 * closing parenthesis, once `by (…)` groups and selector contents are taken out (functions
 * are followed by an opening parenthesis, numbers and durations start with a digit).
 */
function metricsIn(expr: string): string[] {
  const e = expr.replace(/\bby \([^)]*\)/g, "").replace(/\{[^}]*\}/g, "{}");
  return [...e.matchAll(/\b([a-zA-Z_:][a-zA-Z0-9_:]*)(?=\s*(?:\{|\[|\)|$))/g)].map((m) => m[1]!);
}

const queries = dashboard.panels.flatMap((p) =>
  (p.targets ?? []).map((t) => ({ title: p.title, expr: t.expr })),
);

test("the dashboard has panels, and each queries a metric", () => {
  expect(queries.length).toBeGreaterThanOrEqual(8);
  for (const q of queries)
    expect({ panel: q.title, metrics: metricsIn(q.expr).length > 0 }).toEqual({
      panel: q.title,
      metrics: true,
    });
  expect(metricsIn("histogram_quantile(0.99, sum by (le) (rate(x_bucket[5m])))")).toEqual([
    "x_bucket",
  ]);
  expect(metricsIn("sum(y)")).toEqual(["y"]);
  expect(metricsIn('z{job="a"}')).toEqual(["z"]);
});

test("every metric a panel queries is one the proxy exports", () => {
  const known = types();
  const missing: string[] = [];
  for (const q of queries) {
    for (const name of metricsIn(q.expr)) {
      const base = name.replace(/_(bucket|sum|count)$/, "");
      const ok = known.has(name) || (base !== name && known.get(base) === "histogram");
      if (!ok) missing.push(`${q.title}: ${name}`);
    }
  }
  expect(missing).toEqual([]);
});

test("every label a panel groups or filters by is on that metric", () => {
  const wrong: string[] = [];
  for (const q of queries) {
    const metrics = metricsIn(q.expr).map((m) => m.replace(/_(bucket|sum|count)$/, ""));
    const used = new Set<string>();
    for (const m of q.expr.matchAll(/\bby \(([^)]*)\)/g))
      for (const l of m[1]!.split(",")) used.add(l.trim());
    for (const m of q.expr.matchAll(/\{([^}]*)\}/g))
      for (const l of m[1]!.matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)\s*=~?/g)) used.add(l[1]!);
    used.delete("le"); // histogram buckets
    used.delete("job"); // added by Prometheus at scrape time, checked below
    for (const label of used) {
      if (!metrics.some((m) => labelsOf(m).has(label))) wrong.push(`${q.title}: ${label}`);
    }
  }
  expect(wrong).toEqual([]);
});

test("a panel's job selector names the job Prometheus scrapes the proxy as", () => {
  const jobs = [...prometheus.matchAll(/job_name:\s*(\S+)/g)].map((m) => m[1]);
  for (const q of queries) {
    for (const m of q.expr.matchAll(/job="([^"]+)"/g)) expect(jobs).toContain(m[1]);
  }
});

test("the certificate panel's gauge counts down to the proxy certificate's expiry", () => {
  const line = exposition
    .split("\n")
    .find((l) => l.startsWith("slapenir_certificate_expiry_seconds "));
  const seconds = Number(line?.split(" ")[1]);
  // The embedded PKI issues the proxy a certificate of about 397 days.
  expect(seconds).toBeGreaterThan(300 * 86_400);
  expect(seconds).toBeLessThan(400 * 86_400);
});
