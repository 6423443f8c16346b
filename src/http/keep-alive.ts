// How long an upstream said it keeps an idle connection open, from its `Keep-Alive` field
// (`timeout=5, max=100`: Apache, Node, and the servers that copy them; RFC 2068 §19.7.1). A
// request sent as the upstream closes its end is lost with the connection, and one that is not
// idempotent must not be sent again (RFC 9110 §9.2.2): so a connection rests in the pool only
// while the upstream still promises to keep it, with a second to spare for the trip.

import type { HeaderList } from "./header-list.ts";

/** Kept back from an upstream's announced idle timeout: the request must arrive before it. */
export const KEEP_ALIVE_MARGIN_MS = 1_000;

export interface KeepAliveHint {
  /** How long the connection may rest before its next request; undefined: not said. */
  readonly restMs: number | undefined;
  /** The upstream will take no further request on it (`max=0`). */
  readonly exhausted: boolean;
}

export function keepAliveHint(headers: HeaderList): KeepAliveHint {
  let restMs: number | undefined;
  let exhausted = false;
  for (const value of headers.getAll("keep-alive")) {
    for (const part of value.split(",")) {
      const m = /^\s*(timeout|max)\s*=\s*"?([0-9]{1,9})"?\s*$/i.exec(part);
      if (!m) continue;
      const n = Number(m[2]);
      if (m[1]!.toLowerCase() === "max") exhausted ||= n === 0;
      else
        restMs = Math.min(
          restMs ?? Number.POSITIVE_INFINITY,
          Math.max(0, n * 1000 - KEEP_ALIVE_MARGIN_MS),
        );
    }
  }
  return { restMs, exhausted };
}
