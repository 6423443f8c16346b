// The operator-facing admin listener: /health, Prometheus /metrics and a small /status page.
// It runs on its own listener (SLAPENIR_ADMIN_LISTEN), never on the agent-facing port, and never
// shows a credential value — only names, counts and the log-safe views of configuration.

import { Hono } from "hono";
import { ConfigError } from "../config/config-error.ts";
import type { QuarantineEntry } from "../guard/quarantine.ts";
import type { ProxyMetrics } from "./metrics.ts";

export interface AdminState {
  readonly startedAt: number;
  readonly version: string;
  /** Reads the live policy again and puts it in force; how many connections it closed. */
  readonly reloadPolicy?: () => number;
  /** Reads the secrets file again and puts it in force (as SIGHUP does). */
  readonly reloadSecrets?: () => Promise<void>;
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

  app.get("/status", (c) => {
    const rows = Object.entries(state.summary())
      .map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(String(v))}</td></tr>`)
      .join("");
    const html = `<!doctype html><meta charset="utf-8"><title>SLAPENIR status</title>
<style>body{font:14px system-ui;margin:2em}th{text-align:left;padding-right:2em}</style>
<h1>SLAPENIR ${escapeHtml(state.version)}</h1><table>${rows}</table>
<p><a href="/metrics">metrics</a> · <a href="/health">health</a></p>`;
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

  // Everything SIGHUP reloads, for an operator who cannot signal the process (`npm start`
  // runs it under npm, which does not pass SIGHUP on): the policy, then the secrets.
  app.post("/reload", async (c) => {
    if (!state.reloadPolicy || !state.reloadSecrets) return c.json({ error: "not available" }, 404);
    try {
      const closed = state.reloadPolicy();
      await state.reloadSecrets();
      return c.json({ reloaded: true, closed });
    } catch (e) {
      return c.json({ error: e instanceof ConfigError ? e.message : "reload failed" }, 400);
    }
  });

  app.notFound((c) => c.text("not found\n", 404));
  return app;
}
