// Stage: an agent over its request rate is refused (429) before anything else is done for it.

import type { RateLimiter } from "../../guard/rate-limit.ts";
import { allow } from "../../policy/verdict.ts";
import type { Stage } from "../exchange.ts";

/** `limiter` is read per request: a reload may change or switch off the rate (undefined). */
export function rateLimit(limiter: () => RateLimiter | undefined): Stage {
  return {
    name: "rate-limit",
    request: function limitRate(ex, out) {
      const v = limiter()?.admit(ex.agent, "rate limit exceeded");
      return !v || v.ok ? allow(out) : v;
    },
  };
}
