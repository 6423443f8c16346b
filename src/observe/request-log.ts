// The one writer of what happened to a request: its audit line and its metrics, from its trace.
// Every request the agent leg parsed ends here exactly once — served, refused before or during
// its exchange, or refused as malformed. Agent-chosen text (host, path) is passed through a
// redactor first: a request DLP refused may carry a real value in either.

import { type AuditLog, loggablePath } from "./audit.ts";
import type { ProxyMetrics } from "./metrics.ts";
import type { Trace } from "./trace.ts";

/** What is known of a request for its audit line ("-" / 0 where nothing is). */
export interface RequestFacts {
  readonly conn: number;
  readonly agent: string;
  readonly method: string;
  readonly scheme: "http" | "https";
  readonly host: string;
  readonly port: number;
  /** The request-target as the agent sent it; null where a path means nothing (CONNECT). */
  readonly target: string | null;
}

/** Redacts real values from agent-chosen text before it is logged. */
export type LogSafe = (text: string) => string;

export class RequestLog {
  readonly #audit: AuditLog;
  readonly #metrics: ProxyMetrics;
  readonly #logSafe: () => LogSafe;

  /** `logSafe`: the redactor of the credentials in force (asked per line: they reload). */
  constructor(audit: AuditLog, metrics: ProxyMetrics, logSafe: () => LogSafe) {
    this.#audit = audit;
    this.#metrics = metrics;
    this.#logSafe = logSafe;
  }

  /**
   * One request is over: `status` is what the agent was answered (0 if nothing could be sent).
   * `safe`: the redactor of the credentials the request was served with, when it had some.
   */
  write(facts: RequestFacts, trace: Trace, status: number, started: number, safe?: LogSafe): void {
    const redact = safe ?? this.#logSafe();
    const { decision, reason } = trace.outcome();
    const durationMs = Math.round((performance.now() - started) * 100) / 100;
    this.#audit.request({
      conn: facts.conn,
      agent: facts.agent,
      method: facts.method,
      scheme: facts.scheme,
      host: facts.host === "-" ? "-" : redact(facts.host),
      port: facts.port,
      path: facts.target === null ? "-" : redact(loggablePath(facts.target)),
      status,
      bytesIn: trace.bytesIn,
      bytesOut: trace.bytesOut,
      swaps: trace.swaps,
      redactions: trace.redactions,
      decision,
      reason,
      durationMs,
    });
    const m = this.#metrics;
    const agent = facts.agent;
    m.requests.inc({ agent, decision, status: `${Math.floor(status / 100)}xx` });
    if (trace.swaps) m.swaps.inc({ agent }, trace.swaps);
    if (trace.redactions) m.redactions.inc({ agent }, trace.redactions);
    m.bytes.inc({ agent, direction: "in" }, trace.bytesIn);
    m.bytes.inc({ agent, direction: "out" }, trace.bytesOut);
    m.latency.observe({ agent }, durationMs / 1000);
  }
}
