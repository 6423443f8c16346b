// The one writer of what happened to a request: its audit line and its metrics, from its trace.
// Every request the agent leg parsed ends here exactly once — served, refused before or during
// its exchange, or refused as malformed. Agent-chosen text (method, host, path, and reasons that
// quote a host) is scrubbed first: a request DLP refused may carry a real value in any of them,
// in any case (hosts are case-folded), and a path may carry one percent-encoded — then the path
// is withheld whole. Scrubbing comes before the path is clipped, so a value across the clip
// is still found.

import { type AuditLog, clipPath, pathOf } from "./audit.ts";
import type { ProxyMetrics } from "./metrics.ts";
import type { Trace } from "./trace.ts";

/** What is known of a request for its audit line ("-" / 0 where nothing is). */
export interface RequestFacts {
  readonly conn: number;
  readonly agent: string;
  /** The agent certificate's serial. */
  readonly serial: string;
  readonly method: string;
  readonly scheme: "http" | "https";
  readonly host: string;
  readonly port: number;
  /** The request-target as the agent sent it; null where a path means nothing (CONNECT). */
  readonly target: string | null;
}

/** What the request log asks of the credentials in force before it writes agent-chosen text. */
export interface LogSafe {
  /** The text with every real value redacted, as written or case-folded. */
  scrub(text: string): string;
  /** Whether the text still carries a real value in some encoding (percent, form, case). */
  carriesReal(text: string): boolean;
}

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
    const s = safe ?? this.#logSafe();
    const { decision, reason } = trace.outcome();
    const durationMs = Math.round((performance.now() - started) * 100) / 100;
    this.#audit.request({
      conn: facts.conn,
      agent: facts.agent,
      serial: facts.serial,
      method: s.scrub(facts.method),
      scheme: facts.scheme,
      host: facts.host === "-" ? "-" : s.scrub(facts.host),
      port: facts.port,
      path: facts.target === null ? "-" : loggedPath(facts.target, s),
      status,
      bytesIn: trace.bytesIn,
      bytesOut: trace.bytesOut,
      swaps: trace.swaps,
      redactions: trace.redactions,
      decision,
      reason: s.scrub(reason),
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

/** The path as logged: scrubbed, withheld if it still carries a real value encoded, clipped. */
function loggedPath(target: string, s: LogSafe): string {
  const scrubbed = s.scrub(pathOf(target));
  return s.carriesReal(scrubbed) ? "[REDACTED]" : clipPath(scrubbed);
}
