// Agents in quarantine (issue 15, class 3). A real value in a request is a violation: whatever
// the agent meant, it held something it must not, and DLP's answer is an oracle (the batch of
// guesses that holds the real value is the one refused). The first violation quarantines the
// agent: its connections are closed and new ones refused, until an operator releases it (admin
// API) or the configured time passes — so a guessing agent learns one denial and nothing after.
// The set is kept in a file beside the proxy's other state, so a restart does not release it.
// Pure bookkeeping on an injectable clock; the caller closes connections and writes the audit.

import { readFileSync, renameSync, writeFileSync } from "node:fs";
import { ConfigError } from "../config/config-error.ts";
import { AGENT_NAME_RE } from "../policy/agent-name.ts";
import { PASS, refuse, type Verdict } from "../policy/verdict.ts";

export interface QuarantineEntry {
  readonly agent: string;
  /** What it did (a violation kind: `dlp`), never a value. */
  readonly kind: string;
  /** Epoch ms. */
  readonly since: number;
  /** Epoch ms; null: until released. */
  readonly until: number | null;
}

export class Quarantine {
  readonly #entries = new Map<string, QuarantineEntry>();
  readonly #file: string | null;
  readonly #holdMs: number | null;
  readonly #now: () => number;

  /** `holdMs` null: until released. `file` null: not kept across restarts (tests). */
  private constructor(file: string | null, holdMs: number | null, now: () => number) {
    this.#file = file;
    this.#holdMs = holdMs;
    this.#now = now;
  }

  /** The quarantine kept in `file` (none yet: empty); a file that is not ours is an error. */
  static load(file: string | null, holdMs: number | null, now = Date.now): Quarantine {
    const q = new Quarantine(file, holdMs, now);
    if (file === null) return q;
    let text: string;
    try {
      text = readFileSync(file, "utf8");
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return q;
      throw new ConfigError(
        "file-unreadable",
        `cannot be read (${(e as NodeJS.ErrnoException).code})`,
        file,
      );
    }
    let doc: unknown;
    try {
      doc = JSON.parse(text);
    } catch {
      throw new ConfigError("bad-json", "is not valid JSON", file);
    }
    const list = (doc as { agents?: unknown })?.agents;
    if (!Array.isArray(list)) throw new ConfigError("bad-shape", 'must be {"agents": [...]}', file);
    list.forEach((e: Partial<QuarantineEntry>, i) => {
      const ok =
        typeof e?.agent === "string" &&
        AGENT_NAME_RE.test(e.agent) &&
        typeof e.kind === "string" &&
        /^[a-z-]{1,32}$/.test(e.kind) &&
        typeof e.since === "number" &&
        (e.until === null || typeof e.until === "number");
      if (!ok)
        throw new ConfigError("bad-shape", "is not a quarantine entry", `${file}: agents[${i}]`);
      q.#entries.set(e.agent!, e as QuarantineEntry);
    });
    return q;
  }

  /** Refused while `agent` is in quarantine. */
  check(agent: string): Verdict {
    const e = this.#entries.get(agent);
    const v = heldVerdict(e, this.#now());
    if (e && v.ok) this.release(agent);
    return v;
  }

  /** Whether `agent` is in quarantine, and until when (a loop's copy decides by it). */
  entry(agent: string): QuarantineEntry | undefined {
    return this.#entries.get(agent);
  }

  /** Puts `agent` in quarantine; false when it already was. */
  add(agent: string, kind: string): boolean {
    if (!this.check(agent).ok) return false;
    const since = this.#now();
    const until = this.#holdMs === null ? null : since + this.#holdMs;
    this.#entries.set(agent, { agent, kind, since, until });
    this.#save();
    return true;
  }

  /** Lets `agent` out; false when it was not in. */
  release(agent: string): boolean {
    if (!this.#entries.delete(agent)) return false;
    this.#save();
    return true;
  }

  list(): readonly QuarantineEntry[] {
    return [...this.#entries.values()];
  }

  #save(): void {
    if (this.#file === null) return;
    const tmp = `${this.#file}.tmp`;
    writeFileSync(tmp, `${JSON.stringify({ agents: this.list() }, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, this.#file);
  }
}

/** Refused while `e` holds its agent at `now` (none, or a hold that has run out: admitted). */
export function heldVerdict(e: QuarantineEntry | undefined, now: number): Verdict {
  if (!e || (e.until !== null && now >= e.until)) return PASS;
  return refuse(
    "quarantined",
    `agent ${e.agent} is in quarantine (${e.kind} violation); an operator must release it`,
  );
}
