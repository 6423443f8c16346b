// A response whose body the proxy already holds whole (a small upstream answer it redacted in
// one piece). It travels through the Hono app as an ordinary web Response with no body; the
// bytes are attached to that very Response object, so an answer that replaces it (an error
// raised later) can never pick them up. The session writes head and body in one write with a
// Content-Length, instead of pumping a one-chunk stream through chunked framing.

import { releaseHeld } from "../body/held-buffers.ts";

interface Held {
  readonly bytes: Uint8Array;
  /** Called once the body was handed to the agent's socket (true) or could not be (false). */
  readonly settled: ((ok: boolean) => void)[];
}

const held = new WeakMap<Response, Held>();

/** A bodiless Response carrying `bytes` as its held body. */
export function heldResponse(bytes: Uint8Array, init: ResponseInit): Response {
  const res = new Response(null, init);
  held.set(res, { bytes, settled: [] });
  return res;
}

/** The held body of `res`, if it has one. */
export function heldBody(res: Response): Uint8Array | undefined {
  return held.get(res)?.bytes;
}

/** Run `fn` when the held body of `res` has been written (or failed to be). */
export function onHeldSettled(res: Response, fn: (ok: boolean) => void): void {
  held.get(res)?.settled.push(fn);
}

/**
 * Report the outcome of writing the held body of `res` (once; later calls do nothing). The
 * held bytes are released then: zeroed and their buffer reused once the write is done with
 * them (headroom.ts).
 */
export function settleHeld(res: Response, ok: boolean): void {
  const h = held.get(res);
  if (!h) return;
  held.delete(res);
  try {
    for (const fn of h.settled) fn(ok);
  } finally {
    releaseHeld(h.bytes);
  }
}
