// The audit log: one pino JSON line per request and per refused connection. It receives only
// the fields below — never headers, bodies, query strings or credential values — so no code
// path can format a secret into it. Paths are logged without their query string, and always
// the path the agent sent (before any substitution); agent-chosen text is scrubbed of real
// values before it gets here (request-log.ts).

import pino, { type DestinationStream, type Logger } from "pino";

import type { Decision } from "./trace.ts";

export interface RequestRecord {
  readonly conn: number;
  readonly agent: string;
  /** The agent certificate's serial (what `serial:` in the denylist takes). */
  readonly serial: string;
  readonly method: string;
  readonly scheme: "https" | "http";
  readonly host: string;
  readonly port: number;
  readonly path: string;
  readonly status: number;
  readonly bytesIn: number;
  readonly bytesOut: number;
  readonly swaps: number;
  readonly redactions: number;
  readonly decision: Decision;
  readonly reason: string;
  readonly durationMs: number;
  /** More refusals like this one (digested: request-log.ts) not logged one by one. */
  readonly repeated?: number;
}

export interface RefusedConnectionRecord {
  readonly conn: number;
  readonly remote: string;
  readonly agent?: string;
  /** The certificate's serial, when it was read. */
  readonly serial?: string;
  readonly reason: string;
  /** More refusals like this one (same cap, same agent or address) not logged one by one. */
  readonly repeated?: number;
}

/** A request-target's path: the query and fragment stripped (they are not logged). */
export function pathOf(target: string): string {
  let end = target.length;
  const q = target.indexOf("?");
  if (q >= 0) end = q;
  const h = target.indexOf("#");
  if (h >= 0 && h < end) end = h;
  return target.slice(0, end);
}

/** At most 256 characters of a path, for the log. */
export function clipPath(p: string): string {
  return p.length > 256 ? `${p.slice(0, 256)}…` : p;
}

/**
 * Lines are written synchronously: an audit record must not be lost when the process exits
 * or crashes right after a request (one write per line; measured in bench/proxy.bench.ts).
 */
export class AuditLog {
  readonly logger: Logger;
  readonly #dest: DestinationStream;
  constructor(level: string, destination?: DestinationStream) {
    this.#dest = destination ?? pino.destination({ dest: 1, sync: true });
    this.logger = pino(
      {
        level,
        base: { svc: "slapenir" },
        timestamp: pino.stdTimeFunctions.isoTime,
        formatters: { level: (label) => ({ level: label }) },
      },
      this.#dest,
    );
  }

  /** Lines another event loop's log formatted (one stream for the whole proxy). */
  writeLines(text: string): void {
    this.#dest.write(text);
  }

  /** A reload may change the level. */
  setLevel(level: string): void {
    this.logger.level = level;
  }

  request(r: RequestRecord): void {
    this.logger.info({ evt: "request", ...r }, "request");
  }

  refused(r: RefusedConnectionRecord): void {
    this.logger.warn({ evt: "refused", ...r }, "connection refused");
  }

  event(evt: string, fields: Record<string, string | number | boolean>, msg: string): void {
    this.logger.info({ evt, ...fields }, msg);
  }

  /** Write out buffered lines; resolves once they reached the destination (or after 2 s). */
  flush(): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, 2_000);
      this.logger.flush(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }
}

/**
 * An error that escaped every handler: audited by name only (its message could quote peer
 * bytes) and counted; the process — or the event loop's Worker — keeps serving.
 */
export function internalError(
  audit: AuditLog | undefined,
  metrics: { internalErrors: { inc(labels: { kind: string }): void } } | undefined,
  kind: string,
  e: unknown,
): void {
  const name = e instanceof Error ? e.name : typeof e;
  const code = (e as { code?: unknown } | null)?.code;
  audit?.event(
    "internal-error",
    { kind, name, ...(typeof code === "string" ? { code } : {}) },
    "internal error",
  );
  metrics?.internalErrors.inc({ kind });
}
