// Stage: the egress allowlist (policy/egress-policy.ts) for the admitted destination. Nothing is
// resolved or dialled for a request it refuses.

import type { EgressPolicy } from "../../policy/egress-policy.ts";
import { allow } from "../../policy/verdict.ts";
import type { Stage } from "../exchange.ts";

/** `policy` is asked per request: a reload may replace it. */
export function egress(policy: () => EgressPolicy): Stage {
  return {
    name: "egress",
    request: function egressPolicy(ex, out) {
      const { target, scheme } = ex.destination;
      const v = policy().decide({
        agent: ex.agent,
        host: target.host,
        port: target.port,
        scheme,
        route: ex.route,
      });
      return v.ok ? allow(out, `allowed by ${v.value.rule}`) : v;
    },
  };
}
