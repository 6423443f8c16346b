// The operator-facing admin listener: /health, Prometheus /metrics, the console (`/`: live
// exchanges, agents, credentials, refusals by reason, the proxy's health) with a JSON view of
// each, and the operator's actions. It runs on its own listener (SLAPENIR_ADMIN_LISTEN), never
// on the agent-facing port, and never shows a credential value — only names, counts and the
// log-safe views of configuration. Views are read without a token (like /metrics); actions
// need the operator's bearer token, a header a browser never sends on its own (no CSRF).

import { timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { Hono, type MiddlewareHandler } from "hono";
import { ConfigError } from "../config/config-error.ts";
import type { QuarantineEntry } from "../guard/quarantine.ts";
import { type AgentView, type ExchangeFilter, type ExchangeView, matches } from "./activity.ts";
import type { ProxyMetrics } from "./metrics.ts";

/** A credential as the console shows it: where it goes and how much it is used, no value. */
export interface CredentialView {
  readonly name: string;
  readonly kind: "token" | "aws";
  readonly hosts: readonly string[];
  readonly in: readonly string[];
  readonly agents: readonly string[] | "any";
  /** `value` (written in the configuration) or the source (`file /run/secrets/gh`). */
  readonly from: string;
  /** Whether it has a real value now (a source may have none yet, or have failed). */
  readonly available: boolean;
  /** When its value expires, as its source says (ISO); null when it does not say. */
  readonly expiresAt: string | null;
  /** Requests that had its dummy swapped since start. */
  readonly uses: number;
}

export interface AdminState {
  readonly startedAt: number;
  readonly version: string;
  /** The operator's bearer token, for actions (server/admin-token.ts); a reload may change it. */
  readonly token: () => string;
  /** Reads the live policy again and puts it in force; how many connections it closed. */
  readonly reloadPolicy?: () => Promise<number>;
  /** Traffic as the status view shows it (observe/activity.ts), with live connection counts. */
  readonly activity?: {
    recent(filter: ExchangeFilter): readonly ExchangeView[];
    watch(fn: (e: ExchangeView) => void): () => void;
    agents(): readonly (AgentView & {
      connections: number;
      quarantined: boolean;
      quarantinedFor?: string;
    })[];
    reasons(): readonly { code: string; count: number }[];
    certificateExpiresAt(): string | null;
  };
  readonly credentials?: () => readonly CredentialView[];
  /** Reads the whole configuration again and puts what changed in force (as SIGHUP does). */
  readonly reload?: () => Promise<object>;
  /** Readiness: false while starting or draining. */
  ready(): boolean;
  /** /metrics when the counts are kept in several event loops (summed); default: `metrics`. */
  readonly metricsText?: () => Promise<{ body: string; contentType: string }>;
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

const asset = (name: string) => readFileSync(new URL(`./console/${name}`, import.meta.url), "utf8");
const CONSOLE = { html: asset("console.html"), js: asset("console.js"), css: asset("console.css") };
// The console's page runs only its own script and style, is never framed, and sends nothing
// anywhere but this listener.
const CONSOLE_HEADERS = {
  "content-security-policy":
    "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
};
/** A live stream whose reader falls this far behind loses events (it is told how many). */
export const STREAM_BACKLOG = 256;
/** Live streams open at once: each holds a queue, and the listener needs no token to read. */
const MAX_STREAMS = 32;

const sse = (event: string, data: unknown) => `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;

const wantsJson = (accept: string | undefined) => (accept ?? "").includes("application/json");

function filterOf(q: (k: string) => string | undefined): ExchangeFilter {
  const f: { agent?: string; decision?: string; host?: string } = {};
  for (const k of ["agent", "decision", "host"] as const) {
    const v = q(k);
    if (v) f[k] = v;
  }
  return f;
}

export function createAdminApp(metrics: ProxyMetrics, state: AdminState): Hono {
  const app = new Hono();
  /** Actions: `Authorization: Bearer <token>`, compared in constant time. */
  const operator: MiddlewareHandler = async (c, next) => {
    const expected = Buffer.from(state.token());
    const m = /^Bearer ([A-Za-z0-9_-]{1,256})$/.exec(c.req.header("authorization") ?? "");
    const given = Buffer.from(m?.[1] ?? "");
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      return c.json(
        {
          error:
            "this action needs the operator's token (Authorization: Bearer …; SLAPENIR_HOME/admin-token)",
        },
        401,
        { "www-authenticate": 'Bearer realm="slapenir-admin"' },
      );
    }
    await next();
  };

  const agents = () => state.activity?.agents() ?? [];
  const credentials = () => state.credentials?.() ?? [];
  const health = () => ({
    status: state.ready() ? "ok" : "unavailable",
    version: state.version,
    uptimeSeconds: Math.round((Date.now() - state.startedAt) / 1000),
    certificateExpiresAt: state.activity?.certificateExpiresAt() ?? null,
    summary: state.summary(),
  });

  // The console: one page, its script and style; each view is also JSON on its own route.
  app.get("/", (c) => {
    if (wantsJson(c.req.header("accept"))) {
      return c.json({
        health: health(),
        agents: agents(),
        credentials: credentials(),
        reasons: state.activity?.reasons() ?? [],
        exchanges: state.activity?.recent({}).slice(0, 100) ?? [],
      });
    }
    return c.html(CONSOLE.html, 200, CONSOLE_HEADERS);
  });
  app.get("/console.js", (c) =>
    c.body(CONSOLE.js, 200, {
      ...CONSOLE_HEADERS,
      "content-type": "text/javascript; charset=utf-8",
    }),
  );
  app.get("/console.css", (c) =>
    c.body(CONSOLE.css, 200, { ...CONSOLE_HEADERS, "content-type": "text/css; charset=utf-8" }),
  );
  app.get("/api/health", (c) => c.json(health()));
  app.get("/api/agents", (c) => c.json({ agents: agents() }));
  app.get("/api/credentials", (c) => c.json({ credentials: credentials() }));
  app.get("/api/reasons", (c) => c.json({ reasons: state.activity?.reasons() ?? [] }));
  app.get("/api/exchanges", (c) =>
    c.json({
      exchanges: state.activity?.recent(filterOf((k) => c.req.query(k))).slice(0, 200) ?? [],
    }),
  );
  // Exchanges as they are recorded (Server-Sent Events), those matching the query's filter.
  // Events wait in a queue of their own until the connection takes them (the stream is
  // pulled, never pushed): a reader that stops reading holds STREAM_BACKLOG events at most and
  // is told, when it reads again, how many it missed.
  let streams = 0;
  app.get("/api/exchanges/stream", (c) => {
    const act = state.activity;
    if (!act) return c.json({ error: "not available" }, 404);
    if (streams >= MAX_STREAMS) return c.json({ error: "too many live streams" }, 503);
    const filter = filterOf((k) => c.req.query(k));
    const queue: string[] = [sse("ready", { filter })];
    let dropped = 0;
    let wake: (() => void) | undefined;
    let stop = () => {};
    let keepAlive: ReturnType<typeof setInterval> | undefined;
    const push = (text: string) => {
      queue.push(text);
      wake?.();
    };
    const end = () => {
      stop();
      clearInterval(keepAlive);
      streams -= 1;
    };
    streams += 1;
    const body = new ReadableStream<Uint8Array>(
      {
        start() {
          stop = act.watch((e) => {
            if (!matches(e, filter)) return;
            if (queue.length >= STREAM_BACKLOG) dropped += 1;
            else push(sse("exchange", e));
          });
          // A comment now and then keeps idle-closing middleboxes from ending the stream.
          keepAlive = setInterval(() => {
            if (queue.length === 0) push(": keep-alive\n\n");
          }, 10_000);
        },
        async pull(controller) {
          while (queue.length === 0) await new Promise<void>((ok) => (wake = ok));
          wake = undefined;
          // What was missed is told in its place: after what was queued before it.
          if (dropped > 0) queue.push(sse("dropped", { count: dropped }));
          dropped = 0;
          controller.enqueue(new TextEncoder().encode(queue.splice(0).join("")));
        },
        cancel: end,
      },
      { highWaterMark: 0 },
    );
    c.req.raw.signal.addEventListener("abort", () => wake?.(), { once: true });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "x-content-type-options": "nosniff",
      },
    });
  });

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
    if (state.metricsText) {
      const m = await state.metricsText();
      return c.body(m.body, 200, { "content-type": m.contentType });
    }
    const body = await metrics.registry.metrics();
    return c.body(body, 200, { "content-type": metrics.registry.contentType });
  });

  // The operator's view: the proxy's summary, agents, refusals by reason and the latest
  // exchanges (`?agent=` and `?decision=` filter them). JSON for `Accept: application/json`.
  app.get("/status", (c) => {
    const filter = filterOf((k) => c.req.query(k));
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
    if (wantsJson(c.req.header("accept"))) return c.json(view);
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
<p><a href="/">console</a> · <a href="/metrics">metrics</a> · <a href="/health">health</a> · <a href="/status?decision=deny">denials</a></p>`;
    return c.html(html);
  });

  // Operator actions: this listener is the operator's (SLAPENIR_ADMIN_LISTEN, loopback by
  // default), never reachable by agents; each needs the token besides.
  app.get("/quarantine", (c) =>
    state.quarantine ? c.json({ agents: state.quarantine.list() }) : c.json({ off: true }, 404),
  );
  app.post("/quarantine/:agent/release", operator, (c) => {
    if (!state.quarantine) return c.json({ off: true }, 404);
    const agent = c.req.param("agent");
    return state.quarantine.release(agent)
      ? c.json({ released: agent })
      : c.json({ error: "not in quarantine" }, 404);
  });

  // A revocation (`slapenir agent revoke`) or a policy edit, in force at once: a bad file is
  // refused with its error and the running policy stays.
  app.post("/policy/reload", operator, async (c) => {
    if (!state.reloadPolicy) return c.json({ error: "not available" }, 404);
    try {
      return c.json({ reloaded: true, closed: await state.reloadPolicy() });
    } catch (e) {
      return c.json({ error: e instanceof ConfigError ? e.message : "policy reload failed" }, 400);
    }
  });

  // What SIGHUP and a change of the configuration file do, for an operator who cannot signal
  // the process: all or nothing; the answer names what changed and what waits for a restart.
  app.post("/reload", operator, async (c) => {
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
