// What the operator's status view shows about traffic: the most recent exchanges, each agent's
// counts (requests, denials, errors, swaps, redactions, violations, last seen), and refusals and
// failures by reason. Fed the same records the audit log gets (already log-safe: hosts and
// paths scrubbed, never a value), every one of them — a refusal digested in the audit log is
// still counted here. Bounded: a ring of recent exchanges, at most MAX_AGENTS agents (the
// longest unseen let go). Pure: no sockets, no clock of its own.

import type { ProxyErrorCode } from "../http/proxy-error.ts";
import type { RequestRecord } from "./audit.ts";

export interface ExchangeView {
  readonly at: string;
  readonly agent: string;
  readonly method: string;
  readonly host: string;
  readonly port: number;
  readonly path: string;
  readonly decision: string;
  /** The refusal's or failure's code; absent when served. */
  readonly code?: ProxyErrorCode;
  readonly reason: string;
  readonly status: number;
  readonly swaps: number;
  readonly redactions: number;
  readonly durationMs: number;
}

export interface AgentView {
  readonly agent: string;
  /** The certificate it last connected with: serial and expiry (null until it connects). */
  readonly serial: string | null;
  readonly certificateExpiresAt: string | null;
  readonly requests: number;
  readonly denied: number;
  readonly errors: number;
  readonly swaps: number;
  readonly redactions: number;
  readonly violations: number;
  readonly lastSeen: string;
}

const MAX_AGENTS = 1024;

/** What the operator narrows exchanges to: an agent, a decision, a host (exact names). */
export interface ExchangeFilter {
  readonly agent?: string;
  readonly decision?: string;
  readonly host?: string;
}

export function matches(
  e: Pick<ExchangeView, "agent" | "decision" | "host">,
  f: ExchangeFilter,
): boolean {
  return (
    (!f.agent || e.agent === f.agent) &&
    (!f.decision || e.decision === f.decision) &&
    (!f.host || e.host === f.host)
  );
}

interface AgentCounts {
  serial: string | null;
  notAfter: number | null;
  requests: number;
  denied: number;
  errors: number;
  swaps: number;
  redactions: number;
  violations: number;
  lastSeen: number;
}

/** As kept: the time as a number, formatted only when someone looks (not per exchange). */
type Kept = Omit<ExchangeView, "at"> & { readonly atMs: number };

export class Activity {
  readonly #recent: Kept[] = [];
  #next = 0;
  readonly #agents = new Map<string, AgentCounts>();
  readonly #reasons = new Map<string, number>();
  readonly #uses = new Map<string, number>();
  readonly #watchers = new Set<(e: ExchangeView) => void>();

  constructor(private readonly capacity = 200) {}

  /** Every exchange as it is recorded (the console's live stream); returns how to stop. */
  watch(fn: (e: ExchangeView) => void): () => void {
    this.#watchers.add(fn);
    return () => this.#watchers.delete(fn);
  }

  /** An agent authenticated with a certificate (its serial and expiry, ms since the epoch). */
  identified(agent: string, serial: string, notAfter: number, now: number): void {
    const a = this.#agent(agent, now);
    a.serial = serial;
    a.notAfter = notAfter;
  }

  /** Requests that had each credential swapped, by name. */
  uses(): ReadonlyMap<string, number> {
    return this.#uses;
  }

  /**
   * One exchange, as the audit log records it, at `now` (ms since the epoch), with the
   * credentials whose dummy it had swapped.
   */
  exchange(
    r: RequestRecord,
    code: ProxyErrorCode | undefined,
    now: number,
    swapped: Iterable<string> = [],
  ): void {
    const view: Kept = {
      atMs: now,
      agent: r.agent,
      method: r.method,
      host: r.host,
      port: r.port,
      path: r.path,
      decision: r.decision,
      ...(code ? { code } : {}),
      reason: r.reason,
      status: r.status,
      swaps: r.swaps,
      redactions: r.redactions,
      durationMs: r.durationMs,
    };
    if (this.#recent.length < this.capacity) this.#recent.push(view);
    else this.#recent[this.#next] = view;
    this.#next = (this.#next + 1) % this.capacity;
    const a = this.#agent(r.agent, now);
    a.requests += 1;
    if (r.decision === "deny") a.denied += 1;
    if (r.decision === "error") a.errors += 1;
    a.swaps += r.swaps;
    a.redactions += r.redactions;
    if (code) this.#reasons.set(code, (this.#reasons.get(code) ?? 0) + 1);
    for (const name of swapped) this.#uses.set(name, (this.#uses.get(name) ?? 0) + 1);
    if (this.#watchers.size > 0) {
      const { atMs, ...rest } = view;
      const shown = { at: new Date(atMs).toISOString(), ...rest };
      for (const w of this.#watchers) w(shown);
    }
  }

  violation(agent: string, now: number): void {
    this.#agent(agent, now).violations += 1;
  }

  /** The most recent exchanges, newest first, those matching `filter` only. */
  recent(filter: ExchangeFilter = {}): ExchangeView[] {
    const n = this.#recent.length;
    const out: ExchangeView[] = [];
    for (let i = 1; i <= n; i++) {
      const { atMs, ...v } = this.#recent[(this.#next - i + n) % n]!;
      if (!matches(v, filter)) continue;
      out.push({ at: new Date(atMs).toISOString(), ...v });
    }
    return out;
  }

  agents(): AgentView[] {
    return [...this.#agents]
      .map(([agent, { notAfter, ...c }]) => ({
        agent,
        ...c,
        certificateExpiresAt: notAfter === null ? null : new Date(notAfter).toISOString(),
        lastSeen: new Date(c.lastSeen).toISOString(),
      }))
      .sort((x, y) => x.agent.localeCompare(y.agent));
  }

  /** Refusals and failures by code, most frequent first. */
  reasons(): { code: string; count: number }[] {
    return [...this.#reasons]
      .map(([code, count]) => ({ code, count }))
      .sort((x, y) => y.count - x.count || x.code.localeCompare(y.code));
  }

  #agent(agent: string, now: number): AgentCounts {
    let a = this.#agents.get(agent);
    if (a)
      this.#agents.delete(agent); // re-inserted: the map's order is last seen
    else {
      a = {
        serial: null,
        notAfter: null,
        requests: 0,
        denied: 0,
        errors: 0,
        swaps: 0,
        redactions: 0,
        violations: 0,
        lastSeen: now,
      };
      if (this.#agents.size >= MAX_AGENTS) {
        this.#agents.delete(this.#agents.keys().next().value!);
      }
    }
    a.lastSeen = now;
    this.#agents.set(agent, a);
    return a;
  }
}
