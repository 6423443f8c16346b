// The one writer of what happened to a request: its audit line and its metrics, from its trace.
// Every request the agent leg parsed ends here exactly once — served, refused before or during
// its exchange, or refused as malformed. Agent-chosen text (method, host, path, and reasons that
// quote a host) is scrubbed first: a request DLP refused may carry a real value in any of them,
// in any case (hosts are case-folded), and a path may carry one percent-encoded — then the path
// is withheld whole. Scrubbing comes before the path is clipped, so a value across the clip
// is still found. Refusals an agent can repeat at full speed — of a CONNECT, or of anything
// over its rate — go through a refusal digest (`digestKind`): one line per kind, agent and
// destination per window, with `repeated`; the metrics count every one.

import { type AuditLog, clipPath, pathOf, type RequestRecord } from "./audit.ts";
import type { ProxyMetrics } from "./metrics.ts";
import { RefusalDigest, type RefusalSink } from "./refusal-digest.ts";
import type { Trace, TraceOutcome } from "./trace.ts";

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

/**
 * The digest kind of a request's outcome, or undefined when it gets a line of its own: a refused
 * CONNECT (nothing was exchanged; an agent retries them in a loop) and any request refused for
 * its rate. Everything allowed, and every other refusal (each was within the agent's rate), is
 * written one line per request.
 */
export function digestKind(method: string, outcome: TraceOutcome): string | undefined {
  if (outcome.decision === "allow") return undefined;
  // Its reason says which rate (requests, mints): a fixed string, so the kinds stay few.
  if (outcome.code === "rate-limited") return `rate-limited: ${outcome.reason}`;
  if (method === "CONNECT") return `connect ${outcome.code ?? outcome.decision}`;
  return undefined;
}

export interface RequestLogOptions {
  /** The digest's window and clock (tests). */
  readonly digest?: { readonly windowMs?: number; readonly now?: () => number };
  /**
   * Where refused requests are digested, when that is not this log's own digest: the proxy's
   * one, for every event loop (its lines then go through `audit.request` there).
   */
  readonly refusals?: RefusalSink<RequestRecord>;
  /** Told every request's outcome once it is written (violations, reflections: server/). */
  readonly onOutcome?: (facts: RequestFacts, outcome: TraceOutcome, trace: Trace) => void;
  /** Told every request's record as the audit log gets it (digested refusals too). */
  readonly onRecord?: (record: RequestRecord, outcome: TraceOutcome, trace: Trace) => void;
}

export class RequestLog {
  readonly #audit: AuditLog;
  readonly #metrics: ProxyMetrics;
  readonly #logSafe: () => LogSafe;
  readonly #digest: RefusalSink<RequestRecord>;
  readonly #ownDigest: RefusalDigest<RequestRecord> | null;
  readonly #onOutcome: RequestLogOptions["onOutcome"];
  readonly #onRecord: RequestLogOptions["onRecord"];

  /** `logSafe`: the redactor of the credentials in force (asked per line: they reload). */
  constructor(
    audit: AuditLog,
    metrics: ProxyMetrics,
    logSafe: () => LogSafe,
    options: RequestLogOptions = {},
  ) {
    this.#audit = audit;
    this.#metrics = metrics;
    this.#logSafe = logSafe;
    this.#onOutcome = options.onOutcome;
    this.#onRecord = options.onRecord;
    this.#ownDigest = options.refusals ? null : requestDigest(audit, options.digest);
    this.#digest = options.refusals ?? this.#ownDigest!;
  }

  /** Writes the digest's pending summaries (at shutdown). */
  close(): void {
    this.#ownDigest?.close();
  }

  /**
   * One request is over: `status` is what the agent was answered (0 if nothing could be sent).
   * `safe`: the redactor of the credentials the request was served with, when it had some.
   */
  write(facts: RequestFacts, trace: Trace, status: number, started: number, safe?: LogSafe): void {
    const s = safe ?? this.#logSafe();
    const outcome = trace.outcome();
    const { decision, reason } = outcome;
    const durationMs = Math.round((performance.now() - started) * 100) / 100;
    const record: RequestRecord = {
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
    };
    const kind = digestKind(facts.method, outcome);
    if (kind === undefined) this.#audit.request(record);
    else if (outcome.code === "rate-limited") this.#digest.refuse(kind, facts.agent, record);
    else this.#digest.refuse(kind, `${facts.agent}\n${record.host}:${record.port}`, record);
    const m = this.#metrics;
    const agent = facts.agent;
    m.requests.inc({
      agent,
      decision,
      status: `${Math.floor(status / 100)}xx`,
      reason: outcome.code ?? "none",
    });
    for (const credential of trace.swapped) m.swaps.inc({ agent, credential });
    if (trace.redactions) m.redactions.inc({ agent }, trace.redactions);
    m.bytes.inc({ agent, direction: "in" }, trace.bytesIn);
    m.bytes.inc({ agent, direction: "out" }, trace.bytesOut);
    m.latency.observe({ agent }, durationMs / 1000);
    this.#onRecord?.(record, outcome, trace);
    this.#onOutcome?.(facts, outcome, trace);
  }
}

/** The path as logged: scrubbed, withheld if it still carries a real value encoded, clipped. */
function loggedPath(target: string, s: LogSafe): string {
  const scrubbed = s.scrub(pathOf(target));
  return s.carriesReal(scrubbed) ? "[REDACTED]" : clipPath(scrubbed);
}

/** The digest of refused requests: its lines are request records with `repeated`. */
export function requestDigest(
  audit: AuditLog,
  options: { readonly windowMs?: number; readonly now?: () => number } = {},
): RefusalDigest<RequestRecord> {
  return new RefusalDigest(
    (r, repeated) => audit.request(repeated ? { ...r, repeated } : r),
    options,
  );
}
