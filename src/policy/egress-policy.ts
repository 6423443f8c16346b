// The egress allowlist: compiled once at start-up from host patterns (global and per agent),
// then a pure `decide({agent, host, port, scheme})` returning a verdict value with a reason
// for the audit log. Default deny: no rule, no traffic. It must never resolve a name (denied
// hosts are not even looked up — THREATS 20) and never allow a host it could not canonicalise.
// Address checks on the resolved IP are address-class.ts's job, at connect time.

import { canonicalHost, formatAuthority } from "./host.ts";
import { compileHostPattern, type HostPattern, HostPatternSet } from "./host-pattern-set.ts";
import { PolicyError } from "./policy-error.ts";

export interface EgressRuleInput {
  /** Host pattern, optionally with `:port` or `:*`. */
  readonly host: string;
  /** Ports instead of a `:port` suffix; "any" for every port. */
  readonly ports?: readonly number[] | "any";
}

export type EgressRuleSpec = string | EgressRuleInput;

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
}

export interface Verdict {
  readonly action: "allow" | "deny";
  /** Short, log-safe explanation. */
  readonly reason: string;
  /** The rule that allowed it: `allow[2] *.example.com`. */
  readonly rule?: string;
}

export interface EgressPolicy {
  decide(request: EgressRequest): Verdict;
  /** Number of compiled rules (global + per agent), for start-up logs. */
  readonly ruleCount: number;
}

interface RulePayload {
  readonly path: string;
}

export function compileEgressPolicy(input: EgressPolicyInput): EgressPolicy {
  const defaultPort = input.defaultPort ?? 443;
  const compileList = (specs: readonly EgressRuleSpec[], where: string) => {
    if (!Array.isArray(specs)) throw new PolicyError("bad-rule", where, "must be a list of rules");
    const out: { pattern: HostPattern; payload: RulePayload }[] = [];
    specs.forEach((spec, i) => {
      const path = `${where}[${i}]`;
      const text = typeof spec === "string" ? spec : spec?.host;
      if (typeof text !== "string")
        throw new PolicyError("bad-rule", path, "rule needs a host pattern");
      const p = compileHostPattern(text, { defaultPort, allowAny: true });
      if (typeof p === "string")
        throw new PolicyError("bad-rule", path, `${p} (${JSON.stringify(text)})`);
      const ports = typeof spec === "string" ? undefined : spec.ports;
      if (ports === undefined) {
        out.push({ pattern: p, payload: { path } });
        return;
      }
      if (/:[0-9*]+$/.test(text) && !text.endsWith("]")) {
        throw new PolicyError(
          "bad-rule",
          path,
          "give the port either in the pattern or in ports, not both",
        );
      }
      if (ports === "any") {
        out.push({ pattern: { ...p, port: "any" }, payload: { path } });
        return;
      }
      if (!Array.isArray(ports) || ports.length === 0) {
        throw new PolicyError("bad-rule", path, 'ports must be a non-empty list or "any"');
      }
      for (const port of ports) {
        if (!Number.isInteger(port) || port < 1 || port > 65535) {
          throw new PolicyError("bad-rule", path, "ports must be integers 1..65535");
        }
        out.push({ pattern: { ...p, port }, payload: { path } });
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
    perAgent.set(agent, new HostPatternSet([...global, ...list]));
  }
  const globalSet = new HostPatternSet(global);

  return Object.freeze({
    ruleCount,
    decide(request: EgressRequest): Verdict {
      const c = canonicalHost(request.host);
      if (!c.ok) return { action: "deny", reason: `invalid host (${c.error.code})` };
      if (!Number.isInteger(request.port) || request.port < 1 || request.port > 65535) {
        return { action: "deny", reason: "invalid port" };
      }
      const target = formatAuthority(c.value, request.port);
      const set = perAgent.get(request.agent) ?? globalSet;
      const hit = set.match(c.value, request.port)[0];
      if (!hit)
        return { action: "deny", reason: `no allow rule matches ${request.scheme}://${target}` };
      const rule = `${hit.payload.path} ${hit.pattern.text}`;
      return { action: "allow", reason: `${request.scheme}://${target} allowed by ${rule}`, rule };
    },
  });
}
