// Keeps each sourced credential's value fresh (issue 16, item 2). A value read from its source
// becomes *pending* first — redacted and blocked at once, not yet swapped — and is *promoted*
// to current once every answer that started before it is over (the server says when:
// proxy-server.ts), so no answer in flight can carry a value its redactor was not told of.
// The value it replaced is retired: still redacted and blocked for the source's
// `retainRetiredSeconds`. A source that fails keeps its current value until that value
// expires, retrying with backoff; then the credential is unavailable (503 naming it) until the
// source answers again. Timers and the clock are injected: tests move time by hand.

import type { SecretValue } from "../secret-value.ts";
import type { SourcedCredential, SourceValues } from "../secrets.ts";
import { type Fetched, type Fetcher, fetcherFor, SourceError } from "./fetch-source.ts";

export interface SourceEvent {
  readonly credential: string;
  readonly result: "fetched" | "unchanged" | "failed" | "expired" | "rejected";
  /** Log-safe: what failed (never a value). */
  readonly reason?: string;
  /** When the value in force expires (ms since the epoch), when the source says. */
  readonly expiresAt?: number | null;
}

export interface SourceTimers {
  set(fn: () => void, ms: number): unknown;
  clear(handle: unknown): void;
}

export interface SourceManagerOptions {
  readonly now?: () => number;
  readonly timers?: SourceTimers;
  /** A value was fetched, promoted, or expired: the server builds new secrets. */
  readonly onChange: () => void;
  readonly onEvent?: (e: SourceEvent) => void;
  /** How a source is read (tests stand one in); default fetch-source.ts. */
  readonly fetcher?: (source: SourcedCredential) => Fetcher;
}

const MAX_BACKOFF_MS = 60_000;
/** Longest a timer is set for (timers overflow past 2^31 ms); a later time is re-armed. */
const MAX_TIMER_MS = 86_400_000;
/** A value whose source gives no expiry is read again this often (OAuth without expires_in). */
const DEFAULT_LIFETIME_MS = 3_600_000;

/**
 * The pending values a switch saw, by credential, compared by identity (a later reading of the
 * same value keeps them: only its expiry is updated).
 */
export type PendingToken = ReadonlyMap<string, Fetched["values"]>;

interface Slot {
  readonly source: SourcedCredential;
  readonly fetcher: Fetcher;
  current: Fetched | null;
  pending: Fetched | null;
  retired: { values: SecretValue[]; until: number }[];
  failures: number;
  timer: unknown;
  expiry: unknown;
}

const realTimers: SourceTimers = {
  set: (fn, ms) => setTimeout(fn, ms),
  clear: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

function sameValues(a: Fetched, b: Fetched): boolean {
  if (a.values.size !== b.values.size) return false;
  for (const [k, v] of a.values) {
    const w = b.values.get(k);
    if (!w || !v.equals(w)) return false;
  }
  return true;
}

function dispose(f: Fetched | null): void {
  for (const v of f?.values.values() ?? []) v.dispose();
}

export class CredentialSources {
  readonly #slots: Slot[];
  readonly #now: () => number;
  readonly #timers: SourceTimers;
  readonly #opts: SourceManagerOptions;
  #stopped = false;

  constructor(sources: readonly SourcedCredential[], opts: SourceManagerOptions) {
    this.#now = opts.now ?? Date.now;
    this.#timers = opts.timers ?? realTimers;
    this.#opts = opts;
    this.#slots = sources.map((source) => ({
      source,
      fetcher: opts.fetcher?.(source) ?? fetcherFor(source.spec, source.shape, this.#now),
      current: null,
      pending: null,
      retired: [],
      failures: 0,
      timer: null,
      expiry: null,
    }));
  }

  /** The first read of every source, in parallel; resolves when each has answered or failed. */
  async start(): Promise<void> {
    await Promise.all(this.#slots.map((s) => this.#read(s)));
  }

  /**
   * Each credential's values now: current (swapped) and the ones only redacted. With
   * `promoted`, as they will be once `promote(promoted)` has run.
   */
  snapshot(promoted?: PendingToken): Map<string, SourceValues> {
    const now = this.#now();
    const out = new Map<string, SourceValues>();
    for (const s of this.#slots) {
      s.retired = s.retired.filter((r) => {
        if (r.until > now) return true;
        for (const v of r.values) v.dispose();
        return false;
      });
      const moves = s.pending !== null && promoted?.get(s.source.name) === s.pending.values;
      const current = moves ? s.pending : s.current;
      const redactOnly = [
        ...(s.pending && !moves ? [...s.pending.values.values()] : []),
        ...(moves && s.current ? [...s.current.values.values()] : []),
        ...s.retired.flatMap((r) => r.values),
      ];
      out.set(s.source.name, { current: current?.values ?? null, redactOnly });
    }
    return out;
  }

  /** Each source's state for the operator: has it a value, until when, failed reads since. */
  status(): Map<string, { available: boolean; expiresAt: number | null; failures: number }> {
    return new Map(
      this.#slots.map((s) => [
        s.source.name,
        {
          available: s.current !== null,
          expiresAt: s.current?.expiresAt ?? null,
          failures: s.failures,
        },
      ]),
    );
  }

  /** The values pending now: what a switch redacts first and may later promote. */
  pendingToken(): PendingToken {
    const out = new Map<string, Fetched["values"]>();
    for (const s of this.#slots) if (s.pending) out.set(s.source.name, s.pending.values);
    return out;
  }

  /**
   * The values of `token` that are still pending become current; the ones they replace are
   * retired. A value that was replaced meanwhile is not promoted (the answers redacting it
   * did not know its successor). True if any moved.
   */
  promote(token: PendingToken = this.pendingToken()): boolean {
    let moved = false;
    for (const s of this.#slots) {
      if (!s.pending || token.get(s.source.name) !== s.pending.values) continue;
      this.#retire(s, s.current);
      s.current = s.pending;
      s.pending = null;
      this.#watchExpiry(s);
      moved = true;
    }
    return moved;
  }

  /**
   * The values of `token` still pending are dropped (a value that conflicts with another
   * credential, or holds a dummy): never swapped, and the source is read again as usual.
   */
  reject(token: PendingToken, reason: string): void {
    for (const s of this.#slots) {
      if (!s.pending || token.get(s.source.name) !== s.pending.values) continue;
      dispose(s.pending);
      s.pending = null;
      this.#event({ credential: s.source.name, result: "rejected", reason });
    }
  }

  /**
   * On a reload: every value this manager holds for a credential `next` also sources — current,
   * pending, retired — stays redacted there as retired (unless it is `next`'s current value).
   * This manager gives them up.
   */
  handOver(next: CredentialSources): void {
    const now = this.#now();
    for (const s of this.#slots) {
      const t = next.#slots.find((x) => x.source.name === s.source.name);
      if (!t) continue;
      const keep = (v: SecretValue) =>
        ![...(t.current?.values.values() ?? [])].some((c) => c.equals(v));
      const until = now + t.source.spec.retainRetiredMs;
      const held = [
        ...[s.current, s.pending].map((f) => ({ values: [...(f?.values.values() ?? [])], until })),
        ...s.retired,
      ];
      // Copies: this manager keeps its own until it is stopped, so a reload that fails after
      // this leaves it as it was (the new manager, stopped, zeroes the copies).
      for (const r of held) {
        t.retired.push({ values: r.values.filter(keep).map((v) => v.copy()), until: r.until });
      }
    }
  }

  stop(): void {
    this.#stopped = true;
    for (const s of this.#slots) {
      this.#timers.clear(s.timer);
      this.#timers.clear(s.expiry);
      dispose(s.current);
      dispose(s.pending);
      for (const r of s.retired) for (const v of r.values) v.dispose();
      s.current = s.pending = null;
      s.retired = [];
      s.fetcher.dispose();
    }
  }

  #retire(s: Slot, f: Fetched | null): void {
    if (!f) return;
    const keep = s.source.spec.retainRetiredMs;
    if (keep === 0) dispose(f);
    else s.retired.push({ values: [...f.values.values()], until: this.#now() + keep });
  }

  #event(e: SourceEvent): void {
    this.#opts.onEvent?.(e);
  }

  async #read(s: Slot): Promise<void> {
    if (this.#stopped) return;
    let got: Fetched;
    try {
      got = await s.fetcher.fetch();
      this.#checkParts(s, got);
    } catch (e) {
      if (this.#stopped) return;
      s.failures += 1;
      const reason = e instanceof SourceError ? e.message : "the source failed";
      this.#event({ credential: s.source.name, result: "failed", reason });
      this.#schedule(s, this.#retryDelay(s));
      return;
    }
    if (this.#stopped) {
      dispose(got);
      return;
    }
    s.failures = 0;
    const latest = s.pending ?? s.current;
    if (latest && sameValues(latest, got)) {
      // The same value, perhaps a later expiry (a command's process format, a re-issued token).
      const kept = { values: latest.values, expiresAt: got.expiresAt };
      if (s.pending) s.pending = kept;
      else s.current = kept;
      this.#watchExpiry(s);
      dispose(got);
      this.#event({ credential: s.source.name, result: "unchanged", expiresAt: got.expiresAt });
    } else {
      // A newer value than one still pending replaces it (it was never swapped): retired.
      this.#retire(s, s.pending);
      s.pending = got;
      this.#event({ credential: s.source.name, result: "fetched", expiresAt: got.expiresAt });
      this.#opts.onChange();
    }
    this.#schedule(s, this.#refreshDelay(s, got));
  }

  /** The parts a value fills must be the parts the credential declares dummies for. */
  #checkParts(s: Slot, got: Fetched): void {
    const want = new Set(s.source.parts);
    for (const part of got.values.keys()) {
      if (!want.has(part)) {
        dispose(got);
        throw new SourceError(`the source gives ${part}, which the credential has no dummy for`);
      }
    }
    for (const part of want) {
      if (!got.values.has(part)) {
        dispose(got);
        throw new SourceError(`the source gives no ${part}`);
      }
    }
  }

  #refreshDelay(s: Slot, got: Fetched): number {
    const spec = s.source.spec;
    if (spec.type === "file") return spec.pollMs;
    const left = got.expiresAt === null ? null : got.expiresAt - this.#now();
    // Ahead of expiry: with a quarter of the value's life left.
    const ahead = left === null ? null : Math.max(250, left * 0.75);
    if (spec.type === "command") {
      return Math.min(spec.refreshMs, ahead ?? spec.refreshMs);
    }
    return Math.min(ahead ?? DEFAULT_LIFETIME_MS * 0.75, MAX_TIMER_MS);
  }

  #retryDelay(s: Slot): number {
    const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.min(s.failures - 1, 6));
    return s.source.spec.type === "file" ? Math.min(backoff, s.source.spec.pollMs) : backoff;
  }

  #schedule(s: Slot, ms: number): void {
    if (this.#stopped) return;
    this.#timers.clear(s.timer);
    s.timer = this.#timers.set(
      () => {
        s.timer = null;
        void this.#read(s);
      },
      Math.min(ms, MAX_TIMER_MS),
    );
  }

  /** When the current value expires it is retired and the credential is unavailable. */
  #watchExpiry(s: Slot): void {
    this.#timers.clear(s.expiry);
    s.expiry = null;
    const at = s.current?.expiresAt;
    if (at === null || at === undefined) return;
    s.expiry = this.#timers.set(
      () => {
        s.expiry = null;
        if (this.#stopped || !s.current || s.current.expiresAt !== at) return;
        // A far expiry is waited for in steps a timer can hold.
        if (at > this.#now()) {
          this.#watchExpiry(s);
          return;
        }
        this.#retire(s, s.current);
        s.current = null;
        this.#event({ credential: s.source.name, result: "expired" });
        this.#opts.onChange();
      },
      Math.min(MAX_TIMER_MS, Math.max(0, at - this.#now())),
    );
  }
}
