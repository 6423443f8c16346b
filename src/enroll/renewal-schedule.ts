// When to renew and when to retry: pure arithmetic on a certificate's validity window, a
// clock reading and a random number, so the scheduler is tested without waiting.
// Renewal is due at 2/3 of the lifetime (as `step ca renew --daemon`), moved earlier by a
// random jitter of up to 1/20 of the lifetime, so that many proxies/agents enrolled together
// do not renew in one burst. Retries back off exponentially with full jitter, never past
// the moment the certificate expires. Must never return a negative or non-finite delay.

export interface ValidityWindow {
  notBefore: number;
  notAfter: number;
}

export const RENEW_FRACTION = 2 / 3;
export const JITTER_FRACTION = 1 / 20;

/** Epoch ms at which renewal is due. `random` is in [0, 1). */
export function renewalDueAt(v: ValidityWindow, random: number): number {
  const lifetime = Math.max(0, v.notAfter - v.notBefore);
  const jitter = lifetime * JITTER_FRACTION * clamp01(random);
  return v.notBefore + lifetime * RENEW_FRACTION - jitter;
}

/** Milliseconds from `now` until renewal is due (0 if already due). */
export function renewalDelayMs(v: ValidityWindow, now: number, random: number): number {
  return Math.max(0, Math.round(renewalDueAt(v, random) - now));
}

export interface BackoffOptions {
  baseMs: number;
  maxMs: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = { baseMs: 1_000, maxMs: 5 * 60_000 };

/**
 * Delay before retry number `attempt` (0 for the first retry): exponential with full jitter
 * between half and all of the step, capped by `maxMs` and by the time left before `notAfter`
 * (a retry after expiry is pointless for a renewal; the caller then falls back to a token).
 */
export function retryDelayMs(
  attempt: number,
  now: number,
  notAfter: number | null,
  random: number,
  opts: BackoffOptions = DEFAULT_BACKOFF,
): number {
  const step = Math.min(opts.maxMs, opts.baseMs * 2 ** Math.min(Math.max(0, attempt), 30));
  let delay = step / 2 + (step / 2) * clamp01(random);
  if (notAfter !== null && notAfter > now)
    delay = Math.min(delay, Math.max(1, (notAfter - now) / 2));
  return Math.max(1, Math.round(delay));
}

function clamp01(x: number): number {
  return Number.isFinite(x) ? Math.min(Math.max(x, 0), 0.999_999) : 0;
}
