// The operator-facing admin listener: /health, Prometheus /metrics and a small /status page.
// It runs on its own listener (SLAPENIR_ADMIN_LISTEN), never on the agent-facing port, and never
// shows a credential value — only names, counts and the log-safe views of configuration.

import { Hono } from "hono";
import { ConfigError } from "../config/config-error.ts";
import type { QuarantineEntry } from "../guard/quarantine.ts";
import type { AgentView, ExchangeView } from "./activity.ts";
import type { ProxyMetrics } from "./metrics.ts";

export interface AdminState {
  readonly startedAt: number;
  readonly version: string;
  /** Reads the live policy again and puts it in force; how many connections it closed. */
  readonly reloadPolicy?: () => number;
  /** Traffic as the status view shows it (observe/activity.ts), with live connection counts. */
  readonly activity?: {
    recent(filter: { agent?: string; decision?: string }): readonly ExchangeView[];
    agents(): readonly (AgentView & { connections: number; quarantined: boolean })[];
    reasons(): readonly { code: string; count: number }[];
    certificateExpiresAt(): string | null;
  };
  /** Reads the whole configuration again and puts what changed in force (as SIGHUP does). */
  readonly reload?: () => Promise<object>;
  /** Readiness: false while starting or draining. */
  ready(): boolean;
  /** Log-safe facts for the status page (names and counts only). */
  summary(): Record<string, string | number | boolean>;
  /** Agents in quarantine (absent: quarantine is off). */
  readonly quarantine?: {
    list(): readonly QuarantineEntry[];
    /** False when the agent was not in quarantine. */
    release(agent: string): boolean;
  };
}

function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

export function createAdminApp(metrics: ProxyMetrics, state: AdminState): Hono {
  const app = new Hono();

  app.get("/health", (c) => {
    const ok = state.ready();
    return c.json(
      {
        status: ok ? "ok" : "unavailable",
        uptimeSeconds: Math.round((Date.now() - state.startedAt) / 1000),
      },
      ok ? 200 : 503,
    );
  });

  app.get("/metrics", async (c) => {
    const body = await metrics.registry.metrics();
    return c.body(body, 200, { "content-type": metrics.registry.contentType });
  });

  // The operator's view: the proxy's summary, agents, refusals by reason and the latest
  // exchanges (`?agent=` and `?decision=` filter them). JSON for `Accept: application/json`.
  app.get("/status", (c) => {
    const filter = {
      ...(c.req.query("agent") ? { agent: c.req.query("agent")! } : {}),
      ...(c.req.query("decision") ? { decision: c.req.query("decision")! } : {}),
    };
    const act = state.activity;
    const view = {
      version: state.version,
      uptimeSeconds: Math.round((Date.now() - state.startedAt) / 1000),
      summary: state.summary(),
      certificateExpiresAt: act?.certificateExpiresAt() ?? null,
      agents: act?.agents() ?? [],
      reasons: act?.reasons() ?? [],
      recent: act?.recent(filter).slice(0, 100) ?? [],
    };
    if ((c.req.header("accept") ?? "").includes("application/json")) return c.json(view);
    const table = (head: string[], rows: (string | number | boolean)[][]) =>
      `<table><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join("")}</tr>${rows
        .map((r) => `<tr>${r.map((v) => `<td>${escapeHtml(String(v))}</td>`).join("")}</tr>`)
        .join("")}</table>`;
    const summary = Object.entries({
      ...view.summary,
      uptime: `${view.uptimeSeconds} s`,
      "server certificate expires": view.certificateExpiresAt ?? "-",
    })
      .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(String(v))}</td></tr>`)
      .join("");
    const html = `<!doctype html><meta charset="utf-8"><title>SLAPENIR status</title>
<style>body{font:14px system-ui;margin:2em}th{text-align:left;padding-right:1.5em}td{padding-right:1.5em}table{margin-bottom:1.5em}</style>
<h1>SLAPENIR ${escapeHtml(state.version)}</h1>
<table>${summary}</table>
<h2>Agents</h2>
${table(
  [
    "agent",
    "connections",
    "requests",
    "denied",
    "errors",
    "swaps",
    "redactions",
    "violations",
    "quarantined",
    "last seen",
  ],
  view.agents.map((a) => [
    a.agent,
    a.connections,
    a.requests,
    a.denied,
    a.errors,
    a.swaps,
    a.redactions,
    a.violations,
    a.quarantined ? "yes" : "",
    a.lastSeen,
  ]),
)}
<h2>Refused and failed, by reason</h2>
${table(
  ["reason", "count"],
  view.reasons.map((r) => [r.code, r.count]),
)}
<h2>Latest exchanges</h2>
${table(
  [
    "time",
    "agent",
    "method",
    "host",
    "path",
    "decision",
    "status",
    "reason",
    "swaps",
    "redactions",
    "ms",
  ],
  view.recent.map((e) => [
    e.at,
    e.agent,
    e.method,
    `${e.host}:${e.port}`,
    e.path,
    e.decision,
    e.status,
    e.code ?? "",
    e.swaps,
    e.redactions,
    e.durationMs,
  ]),
)}
<p><a href="/metrics">metrics</a> · <a href="/health">health</a> · <a href="/status?decision=deny">denials</a></p>`;
    return c.html(html);
  });

  // Operator actions: this listener is the operator's (SLAPENIR_ADMIN_LISTEN, loopback by
  // default), never reachable by agents.
  app.get("/quarantine", (c) =>
    state.quarantine ? c.json({ agents: state.quarantine.list() }) : c.json({ off: true }, 404),
  );
  app.post("/quarantine/:agent/release", (c) => {
    if (!state.quarantine) return c.json({ off: true }, 404);
    const agent = c.req.param("agent");
    return state.quarantine.release(agent)
      ? c.json({ released: agent })
      : c.json({ error: "not in quarantine" }, 404);
  });

  // A revocation (`slapenir agent revoke`) or a policy edit, in force at once: a bad file is
  // refused with its error and the running policy stays.
  app.post("/policy/reload", (c) => {
    if (!state.reloadPolicy) return c.json({ error: "not available" }, 404);
    try {
      return c.json({ reloaded: true, closed: state.reloadPolicy() });
    } catch (e) {
      return c.json({ error: e instanceof ConfigError ? e.message : "policy reload failed" }, 400);
    }
  });

  // What SIGHUP and a change of the configuration file do, for an operator who cannot signal
  // the process: all or nothing; the answer names what changed and what waits for a restart.
  app.post("/reload", async (c) => {
    if (!state.reload) return c.json({ error: "not available" }, 404);
    try {
      return c.json({ reloaded: true, ...(await state.reload()) });
    } catch (e) {
      return c.json({ error: e instanceof ConfigError ? e.message : "reload failed" }, 400);
    }
  });

  app.notFound((c) => c.text("not found\n", 404));
  return app;
}
