// Stage: an agent over its request rate is refused (429) before anything else is done for it.

import type { RateLimiter } from "../../guard/rate-limit.ts";
import { allow, refuse } from "../../policy/verdict.ts";
import type { Stage } from "../exchange.ts";

export function rateLimit(limiter: RateLimiter): Stage {
  return {
    name: "rate-limit",
    request: function limitRate(ex, out) {
      return limiter.take(ex.agent) ? allow(out) : refuse("rate-limited", "rate limit exceeded");
    },
  };
}
