// Stage: an agent over its request rate is refused (429) before anything else is done for it.

import type { RateLimiter } from "../../guard/rate-limit.ts";
import { allow, refuse } from "../../policy/verdict.ts";
import type { Stage } from "../exchange.ts";

/** `limiter` is read per request: a reload may change or switch off the rate (undefined). */
export function rateLimit(limiter: () => RateLimiter | undefined): Stage {
  return {
    name: "rate-limit",
    request: function limitRate(ex, out) {
      return limiter()?.take(ex.agent) !== false
        ? allow(out)
        : refuse("rate-limited", "rate limit exceeded");
    },
  };
}
