// Renewal and retry timing as pure functions: exact values at the edges, properties over all inputs.
import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import {
  DEFAULT_BACKOFF,
  JITTER_FRACTION,
  RENEW_FRACTION,
  renewalDelayMs,
  renewalDueAt,
  retryDelayMs,
} from "./renewal-schedule.ts";

describe("renewalDueAt", () => {
  test("2/3 of the lifetime without jitter, earlier by at most 1/20 with it", () => {
    const v = { notBefore: 1_000, notAfter: 1_000 + 90_000 };
    expect(renewalDueAt(v, 0)).toBe(1_000 + 60_000);
    expect(renewalDueAt(v, 0.5)).toBe(1_000 + 60_000 - 90_000 * JITTER_FRACTION * 0.5);
  });

  test("property: always inside [2/3 − 1/20, 2/3] of the window", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: 2 ** 40 }),
        fc.integer({ min: 1, max: 2 ** 35 }),
        fc.double({ min: 0, max: 1, noNaN: true }),
        // Tolerance 1 µs: doubles near 2^41 ms carry ~0.2 µs of rounding.
        (nb, life, r) => {
          const due = renewalDueAt({ notBefore: nb, notAfter: nb + life }, r);
          const lo = nb + life * (RENEW_FRACTION - JITTER_FRACTION) - 1e-3;
          const hi = nb + life * RENEW_FRACTION + 1e-3;
          return due >= lo && due <= hi;
        },
      ),
    );
  });

  test("delay is never negative, even past the due time", () => {
    expect(renewalDelayMs({ notBefore: 0, notAfter: 3_000 }, 10_000, 0.3)).toBe(0);
    expect(renewalDelayMs({ notBefore: 0, notAfter: 3_000 }, 0, 0)).toBe(2_000);
  });
});

describe("retryDelayMs", () => {
  test("doubles per attempt within [step/2, step], capped by maxMs", () => {
    const opts = { baseMs: 100, maxMs: 1_000 };
    expect([0, 1, 2, 3, 4, 10].map((a) => retryDelayMs(a, 0, null, 0, opts))).toEqual([
      50, 100, 200, 400, 500, 500,
    ]);
    expect(retryDelayMs(2, 0, null, 0.999_999, opts)).toBe(400);
  });

  test("never schedules beyond half the time left before expiry", () => {
    expect(retryDelayMs(20, 0, 10_000, 0.9, DEFAULT_BACKOFF)).toBe(5_000);
  });

  test("property: finite and at least 1 ms for any input", () => {
    fc.assert(
      fc.property(
        fc.integer({ min: -5, max: 100 }),
        fc.integer({ min: 0, max: 2 ** 40 }),
        fc.option(fc.integer({ min: 0, max: 2 ** 41 })),
        fc.double({ noNaN: false }),
        (attempt, now, notAfter, r) => {
          const d = retryDelayMs(attempt, now, notAfter, r);
          return Number.isFinite(d) && d >= 1;
        },
      ),
    );
  });
});
