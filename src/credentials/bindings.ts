// Which credentials may be swapped for a request: a credential is bound to host patterns (and
// optionally to agents); only when the canonical host actually dialled matches, and the agent
// is admitted, may its dummy become its real value (THREATS 1, 22). Compiled once; `swapPlan`
// is pure. It must never return a pair for an unbound host or an unadmitted agent, and its
// errors name credentials by name and index only — never a dummy or real value.
//
// Ports: a binding pattern without a port binds port 443 only; `host:*` binds every port.
// `require` (THREATS 4): a host bound to a credential with `require` receives only requests
// that carried that credential's dummy and were swapped — see `checkRequired`.

import { canonicalHost } from "../policy/host.ts";
import { type HostPattern, parseHostPattern } from "../policy/host-pattern.ts";
import { HostPatternSet } from "../policy/host-pattern-set.ts";
import { PolicyError } from "../policy/policy-error.ts";
import {
  ANY_REQUEST,
  type RequestRoute,
  type RequestScope,
  scopeCovers,
} from "../policy/request-rule.ts";
import { allow, refuse, type Verdict } from "../policy/verdict.ts";
import { DEFAULT_SURFACES, type Surface } from "./surfaces.ts";

export interface CredentialInput {
  readonly name: string;
  readonly dummy: Uint8Array;
  readonly real: Uint8Array;
  /** Patterns as written, or already parsed (host-pattern.ts). */
  readonly hosts: readonly (string | HostPattern)[];
  readonly agents?: readonly string[];
  readonly require?: boolean;
  /** Where the dummy is swapped (default `header:authorization`). */
  readonly surfaces?: readonly Surface[];
  /** Per host pattern (same index): the methods and paths it is bound to; default all. */
  readonly scopes?: readonly RequestScope[];
}

export interface SwapPair {
  readonly name: string;
  readonly dummy: Uint8Array;
  readonly real: Uint8Array;
  readonly surfaces: readonly Surface[];
}

export interface SwapPlan {
  /** Pairs the request may have swapped (dummy → real), in configuration order. */
  readonly swaps: readonly SwapPair[];
  /** Names of `require` credentials bound to this host (admitted to the agent or not). */
  readonly required: readonly string[];
  /** Every real value of every credential, for outbound DLP and inbound redaction. */
  readonly reals: readonly SwapPair[];
}

export const BINDING_DEFAULT_PORT = 443;

interface Bound {
  readonly index: number;
  readonly scope: RequestScope;
  readonly credential: SwapPair;
  readonly agents: ReadonlySet<string> | undefined;
  readonly require: boolean;
}

export class CredentialBindings {
  readonly #set: HostPatternSet<Bound>;
  readonly #reals: readonly SwapPair[];
  readonly #bound: readonly Bound[];
  static readonly EMPTY_PLAN: SwapPlan = Object.freeze({ swaps: [], required: [], reals: [] });

  private constructor(
    set: HostPatternSet<Bound>,
    reals: readonly SwapPair[],
    bound: readonly Bound[],
  ) {
    this.#set = set;
    this.#reals = reals;
    this.#bound = bound;
  }

  /** Validate and compile; throws PolicyError naming the credential by index and name. */
  static compile(credentials: readonly CredentialInput[]): CredentialBindings {
    const entries: { pattern: HostPattern; payload: Bound }[] = [];
    const all: Bound[] = [];
    const reals: SwapPair[] = [];
    const names = new Set<string>();
    credentials.forEach((c, i) => {
      const path = `credentials[${i}]${typeof c?.name === "string" && c.name !== "" ? ` (${c.name})` : ""}`;
      if (typeof c?.name !== "string" || c.name.length === 0) {
        throw new PolicyError("bad-credential", path, "name must be a non-empty string");
      }
      if (names.has(c.name)) throw new PolicyError("bad-credential", path, "duplicate name");
      names.add(c.name);
      if (!(c.dummy instanceof Uint8Array) || c.dummy.length === 0) {
        throw new PolicyError("bad-credential", path, "dummy must be non-empty bytes");
      }
      if (!(c.real instanceof Uint8Array) || c.real.length === 0) {
        throw new PolicyError("bad-credential", path, "real must be non-empty bytes");
      }
      if (Buffer.from(c.dummy).equals(Buffer.from(c.real))) {
        throw new PolicyError("bad-credential", path, "dummy and real must differ");
      }
      if (!Array.isArray(c.hosts) || c.hosts.length === 0) {
        throw new PolicyError("bad-credential", path, "hosts must be a non-empty list");
      }
      if (c.agents !== undefined && (!Array.isArray(c.agents) || c.agents.length === 0)) {
        throw new PolicyError(
          "bad-credential",
          path,
          "agents, when given, must be a non-empty list",
        );
      }
      const pair: SwapPair = Object.freeze({
        name: c.name,
        dummy: c.dummy,
        real: c.real,
        surfaces: c.surfaces ?? DEFAULT_SURFACES,
      });
      reals.push(pair);
      const bound = {
        index: i,
        credential: pair,
        agents: c.agents ? new Set(c.agents) : undefined,
        require: c.require === true,
      };
      c.hosts.forEach((h, j) => {
        const payload = { ...bound, scope: c.scopes?.[j] ?? ANY_REQUEST };
        if (j === 0) all.push(payload);
        entries.push({ pattern: expectPattern(h, `${path}.hosts[${j}]`), payload });
      });
    });
    return new CredentialBindings(
      new HostPatternSet(entries, BINDING_DEFAULT_PORT),
      Object.freeze(reals),
      all,
    );
  }

  /** Every real value (for DLP and redaction), whatever the host. */
  get reals(): readonly SwapPair[] {
    return this.#reals;
  }

  /** Whether any credential is bound to `host:port` (for any agent, method or path). */
  boundAt(host: string, port: number): boolean {
    const c = canonicalHost(host);
    return c.ok && this.#set.match(c.value, port).length > 0;
  }

  /** Credentials restricted to agents other than `agent`: their dummies are not its to use. */
  foreignTo(agent: string): readonly SwapPair[] {
    const out = new Map<string, SwapPair>();
    for (const b of this.#bound) {
      if (b.agents !== undefined && !b.agents.has(agent)) out.set(b.credential.name, b.credential);
    }
    return [...out.values()];
  }

  /**
   * The swap plan for a request from `agent` to the host it dials. `host` is canonicalised
   * here; a host that cannot be canonicalised gets no swaps at all. With `route`, a binding
   * narrowed to methods and paths swaps only for a request they cover (a path it cannot read
   * one way is not covered); a `require` credential bound to the host is required whatever
   * the route, so a request outside its endpoints is refused.
   */
  swapPlan(
    agent: string,
    host: string,
    port: number = BINDING_DEFAULT_PORT,
    route?: RequestRoute,
  ): SwapPlan {
    const c = canonicalHost(host);
    if (!c.ok) return { swaps: [], required: [], reals: this.#reals };
    const seen = new Set<number>();
    const swaps: SwapPair[] = [];
    const required: string[] = [];
    const requiredSeen = new Set<number>();
    for (const { payload } of this.#set.match(c.value, port)) {
      if (payload.require && !requiredSeen.has(payload.index)) {
        requiredSeen.add(payload.index);
        required.push(payload.credential.name);
      }
      if (seen.has(payload.index)) continue;
      if (route) {
        const covers = scopeCovers(payload.scope, route);
        if (!covers.ok || !covers.value) continue;
      }
      seen.add(payload.index);
      if (payload.agents === undefined || payload.agents.has(agent)) swaps.push(payload.credential);
    }
    return { swaps, required, reals: this.#reals };
  }
}

/**
 * `require` check after the swap: every required credential must have been swapped in this
 * request (its dummy was present and the agent is admitted). `swapped` = names actually swapped.
 */
export function checkRequired(
  plan: Pick<SwapPlan, "required">,
  swapped: ReadonlySet<string>,
): Verdict {
  const missing = plan.required.filter((n) => !swapped.has(n));
  if (missing.length === 0) return allow(null, "required credentials present");
  return refuse(
    "required-dummy-missing",
    `host requires credential ${missing.join(", ")} via its dummy; request did not carry it`,
  );
}

function expectPattern(input: string | HostPattern, path: string): HostPattern {
  if (typeof input !== "string") return input;
  const p = parseHostPattern(input, { allowAny: false, allowPort: true });
  if (!p.ok) throw new PolicyError("bad-credential", path, p.reason);
  return p.value;
}
