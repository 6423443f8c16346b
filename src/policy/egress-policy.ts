// The egress allowlist: compiled once at start-up from host patterns (global and per agent),
// then a pure `decide({agent, host, port, scheme})` returning a verdict value with a reason
// for the audit log. Default deny: no rule, no traffic. It must never resolve a name (denied
// hosts are not even looked up — THREATS 20) and never allow a host it could not canonicalise.
// Address checks on the resolved IP are address-class.ts's job, at connect time.

import type { LivePolicy } from "../config/proxy-config.ts";
import { canonicalHost, formatAuthority } from "./host.ts";
import { type HostPattern, parseHostPattern } from "./host-pattern.ts";
import { HostPatternSet } from "./host-pattern-set.ts";
import { PolicyError } from "./policy-error.ts";
import {
  ANY_REQUEST,
  type RequestRoute,
  type RequestScope,
  ruleText,
  scopeCovers,
} from "./request-rule.ts";
import { allow, refuse, type Verdict } from "./verdict.ts";

export interface EgressRuleInput {
  /** Host pattern, optionally with `:port` or `:*`. */
  readonly host: string | HostPattern;
  /** Ports instead of a `:port` suffix; "any" for every port. */
  readonly ports?: readonly number[] | "any";
  /** Methods and path the rule is narrowed to (request-rule.ts); default every request. */
  readonly scope?: RequestScope;
}

/** A pattern as written, one already parsed (its port, or 443), or a pattern with a port list. */
export type EgressRuleSpec = string | HostPattern | EgressRuleInput;

export interface EgressPolicyInput {
  readonly allow: readonly EgressRuleSpec[];
  /** Extra rules per agent identity, added to the global ones. */
  readonly agents?:
    | Readonly<Record<string, readonly EgressRuleSpec[]>>
    | ReadonlyMap<string, readonly EgressRuleSpec[]>;
  /** Port for patterns without one (default 443). */
  readonly defaultPort?: number;
}

export interface EgressRequest {
  readonly agent: string;
  /** The host as the agent named it (canonicalised here). */
  readonly host: string;
  readonly port: number;
  readonly scheme: "http" | "https";
  /**
   * The request's method and path; absent for a CONNECT, which any rule for the host admits
   * (the requests inside the tunnel are decided one by one).
   */
  readonly route?: RequestRoute;
}

/** Allowed: the rule that allowed it, `allow[2] *.example.com`. */
export type EgressVerdict = Verdict<{ readonly rule: string }>;

export interface EgressPolicy {
  decide(request: EgressRequest): EgressVerdict;
  /** Number of compiled rules (global + per agent), for start-up logs. */
  readonly ruleCount: number;
}

interface RulePayload {
  /** Where the rule was written (`allow[2]`). */
  readonly path: string;
  readonly scope: RequestScope;
}

export function compileEgressPolicy(input: EgressPolicyInput): EgressPolicy {
  const defaultPort = input.defaultPort ?? 443;
  const compileList = (specs: readonly EgressRuleSpec[], where: string) => {
    if (!Array.isArray(specs)) throw new PolicyError("bad-rule", where, "must be a list of rules");
    const out: { pattern: HostPattern; payload: RulePayload }[] = [];
    specs.forEach((spec, i) => {
      const path = `${where}[${i}]`;
      const input = !isParsed(spec) && typeof spec === "object" && spec !== null ? spec : null;
      const written = input ? input.host : spec;
      const parsed = isParsed(written)
        ? allow(written)
        : parseHostPattern(written, { allowAny: true, allowPort: true });
      if (!parsed.ok) {
        const shown = typeof written === "string" ? ` (${JSON.stringify(written)})` : "";
        throw new PolicyError("bad-rule", path, `${parsed.reason}${shown}`);
      }
      const p = parsed.value;
      const ports = input?.ports;
      const scope = input?.scope ?? ANY_REQUEST;
      if (ports === undefined) {
        out.push({ pattern: p, payload: { path, scope } });
        return;
      }
      if (p.port !== undefined) {
        throw new PolicyError(
          "bad-rule",
          path,
          "give the port either in the pattern or in ports, not both",
        );
      }
      if (ports === "any") {
        out.push({ pattern: { ...p, port: "any" }, payload: { path, scope } });
        return;
      }
      if (!Array.isArray(ports) || ports.length === 0) {
        throw new PolicyError("bad-rule", path, 'ports must be a non-empty list or "any"');
      }
      for (const port of ports) {
        if (!Number.isInteger(port) || port < 1 || port > 65535) {
          throw new PolicyError("bad-rule", path, "ports must be integers 1..65535");
        }
        out.push({ pattern: { ...p, port }, payload: { path, scope } });
      }
    });
    return out;
  };

  const global = compileList(input.allow ?? [], "allow");
  const perAgent = new Map<string, HostPatternSet<RulePayload>>();
  let ruleCount = global.length;
  const agentEntries =
    input.agents instanceof Map ? [...input.agents.entries()] : Object.entries(input.agents ?? {});
  for (const [agent, specs] of agentEntries) {
    if (agent.length === 0) throw new PolicyError("bad-rule", "agents", "agent name is empty");
    const list = compileList(specs, `agents.${agent}`);
    ruleCount += list.length;
    // Agent sets include the global rules first, so one lookup answers.
    perAgent.set(agent, new HostPatternSet([...global, ...list], defaultPort));
  }
  const globalSet = new HostPatternSet(global, defaultPort);

  return Object.freeze({
    ruleCount,
    decide(request: EgressRequest): EgressVerdict {
      const c = canonicalHost(request.host);
      if (!c.ok) return refuse("policy-denied", `invalid host (${c.error.code})`);
      if (!Number.isInteger(request.port) || request.port < 1 || request.port > 65535) {
        return refuse("policy-denied", "invalid port");
      }
      const target = formatAuthority(c.value, request.port);
      const set = perAgent.get(request.agent) ?? globalSet;
      const hits = set.match(c.value, request.port);
      if (hits.length === 0)
        return refuse("policy-denied", `no allow rule matches ${request.scheme}://${target}`);
      const route = request.route;
      const named = (h: (typeof hits)[number]) =>
        `${h.payload.path} ${ruleText(h.pattern, h.payload.scope)}`;
      for (const h of hits) {
        if (!route) return allowedBy(request, target, named(h));
        const covers = scopeCovers(h.payload.scope, route);
        if (!covers.ok) return covers;
        if (covers.value) return allowedBy(request, target, named(h));
      }
      // The host is allowed, this request on it is not: name the rule it missed.
      const where = route?.path.ok ? route.path.value : "";
      return refuse(
        "policy-denied",
        `${route?.method} ${request.scheme}://${target}${where} is outside ${named(hits[0]!)}`,
      );
    },
  });
}

function allowedBy(r: EgressRequest, target: string, rule: string): EgressVerdict {
  return allow({ rule }, `${r.scheme}://${target} allowed by ${rule}`);
}

function isParsed(x: unknown): x is HostPattern {
  return typeof x === "object" && x !== null && "pattern" in x && "kind" in x;
}

/** The egress policy of a live policy (allowlists, global and per agent) as configured. */
export function compileLivePolicy(live: LivePolicy): EgressPolicy {
  const rule = (r: LivePolicy["allow"][number]): EgressRuleSpec => ({
    host: r.pattern,
    scope: r.scope,
  });
  const agents: Record<string, EgressRuleSpec[]> = {};
  for (const [agent, rules] of live.agentAllow) agents[agent] = rules.map(rule);
  return compileEgressPolicy({ allow: live.allow.map(rule), agents });
}
