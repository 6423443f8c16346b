// Stage: protocol upgrades are refused (501): the proxy scans HTTP/1.1 messages and nothing
// else, so a connection must never stop being HTTP behind its back. h2c is named apart.

import { allow, refuse } from "../../policy/verdict.ts";
import type { Stage } from "../exchange.ts";

export function refuseUpgrades(): Stage {
  return {
    name: "upgrade",
    request: function refuseUpgrade(ex, out) {
      const offered = ex.head.upgrade ?? [];
      if (offered.length === 0) return allow(out);
      const h2c = offered.some((p) => p.toLowerCase().startsWith("h2c"));
      return refuse("upgrade-refused", h2c ? "h2c upgrade refused" : "protocol upgrade refused");
    },
  };
}
