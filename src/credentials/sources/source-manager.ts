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
  readonly result: "fetched" | "unchanged" | "failed" | "expired";
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
/** A value whose source gives no expiry is read again this often (OAuth without expires_in). */
const DEFAULT_LIFETIME_MS = 3_600_000;

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

  get size(): number {
    return this.#slots.length;
  }

  /** The first read of every source, in parallel; resolves when each has answered or failed. */
  async start(): Promise<void> {
    await Promise.all(this.#slots.map((s) => this.#read(s)));
  }

  /** Each credential's values now: current (swapped) and the ones only redacted. */
  snapshot(): Map<string, SourceValues> {
    const now = this.#now();
    const out = new Map<string, SourceValues>();
    for (const s of this.#slots) {
      s.retired = s.retired.filter((r) => {
        if (r.until > now) return true;
        for (const v of r.values) v.dispose();
        return false;
      });
      const redactOnly = [
        ...(s.pending ? [...s.pending.values.values()] : []),
        ...s.retired.flatMap((r) => r.values),
      ];
      out.set(s.source.name, { current: s.current?.values ?? null, redactOnly });
    }
    return out;
  }

  /** Whether any value is pending. */
  get hasPending(): boolean {
    return this.#slots.some((s) => s.pending !== null);
  }

  /** Pending values become current; the ones they replace are retired. True if any moved. */
  promote(): boolean {
    let moved = false;
    for (const s of this.#slots) {
      if (!s.pending) continue;
      this.#retire(s, s.current);
      s.current = s.pending;
      s.pending = null;
      this.#watchExpiry(s);
      moved = true;
    }
    return moved;
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
    if (spec.type === "command")
      return ahead === null ? spec.refreshMs : Math.min(spec.refreshMs, ahead);
    return ahead ?? DEFAULT_LIFETIME_MS * 0.75;
  }

  #retryDelay(s: Slot): number {
    const backoff = Math.min(MAX_BACKOFF_MS, 1000 * 2 ** Math.min(s.failures - 1, 6));
    return s.source.spec.type === "file" ? Math.min(backoff, s.source.spec.pollMs) : backoff;
  }

  #schedule(s: Slot, ms: number): void {
    if (this.#stopped) return;
    this.#timers.clear(s.timer);
    s.timer = this.#timers.set(() => {
      s.timer = null;
      void this.#read(s);
    }, ms);
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
        this.#retire(s, s.current);
        s.current = null;
        this.#event({ credential: s.source.name, result: "expired" });
        this.#opts.onChange();
      },
      Math.max(0, at - this.#now()),
    );
  }
}
