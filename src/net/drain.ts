// Waiting for a writable socket to drain, shared by the agent and upstream legs: resolves on
// `drain` (or after `pollMs`, for a writer whose buffer the caller re-checks), rejects when the
// stream closes, and — with `timeoutMs` — when the peer has not taken bytes for that long.
// Every listener and timer it adds is removed on every outcome (keep-alive connections live
// long; nothing may accumulate on them per write).

import type { Duplex } from "node:stream";

export interface DrainOptions {
  readonly timeoutMs?: number;
  readonly pollMs?: number;
  /** Called once when `timeoutMs` passes (e.g. destroy the connection). */
  readonly onTimeout?: () => void;
  readonly closedError: () => Error;
  readonly timeoutError?: () => Error;
}

export function waitForDrain(w: Duplex, o: DrainOptions): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer =
      o.timeoutMs !== undefined
        ? setTimeout(() => {
            cleanup();
            o.onTimeout?.();
            reject(o.timeoutError?.() ?? o.closedError());
          }, o.timeoutMs)
        : undefined;
    const poll = o.pollMs !== undefined ? setTimeout(() => onDrain(), o.pollMs) : undefined;
    const onDrain = () => {
      cleanup();
      resolve();
    };
    const onGone = () => {
      cleanup();
      reject(o.closedError());
    };
    const cleanup = () => {
      if (timer !== undefined) clearTimeout(timer);
      if (poll !== undefined) clearTimeout(poll);
      w.off("drain", onDrain);
      w.off("close", onGone);
      w.off("error", onGone);
    };
    w.on("drain", onDrain);
    w.on("close", onGone);
    w.on("error", onGone);
  });
}
