// Stage: what comes back to the agent. Every real value is redacted from the head
// (inbound-head.ts) and from the body, whatever its content coding: a coded body is decoded
// (bounded, content-coding.ts) and sent on decoded. A small answer of known length is held whole
// and redacted in one engine call (an upstream that dies before its end then gets the agent a
// 502, not a cut body); any other streams through the worker pool. Its first decoded chunk is
// read before the head is committed, so a body that is not what its label says is a 502 too.
// A reload while the answer is on its way: an answer that begins after it is redacted with the
// secrets the exchange started with and the new ones; one already streaming cannot learn the
// new values, so it is cut (the agent sees an error, as when an upstream dies).

import { collectBounded, primeStream } from "../../body/collect.ts";
import { type DecodeLimits, decodeBody, parseContentEncoding } from "../../body/content-coding.ts";
import type { HeldBudget } from "../../body/held-body.ts";
import { HeldBody } from "../../body/held-body.ts";
import { allocWithHeadroom, releaseHeld } from "../../body/held-buffers.ts";
import type { InlineScanner } from "../../body/inline-scanner.ts";
import { type BodyScanner, redactBody } from "../../body/scan-pipelines.ts";
import { sseDeltaStream } from "../../body/sse-deltas.ts";
import { REDACT_COMPILE, type SecretState } from "../../credentials/secret-state.ts";
import { ProxyError } from "../../http/proxy-error.ts";
import type { HeaderPairs } from "../../http/serialize.ts";
import { allow, refuse } from "../../policy/verdict.ts";
import type { Body, Exchange, Stage } from "../exchange.ts";
import { redactResponseHead } from "../inbound-head.ts";

export interface InboundDeps {
  readonly scanner: BodyScanner;
  readonly inline?: InlineScanner;
  /** Holding an answer is the fast path, not a requirement: with the budget spent, it streams. */
  readonly held: HeldBudget;
  readonly decodeLimits: DecodeLimits;
  /** The secrets in force now (a reload may have replaced the exchange's own). */
  readonly secrets: () => SecretState;
}

export function inbound(deps: InboundDeps): Stage {
  return {
    name: "inbound",
    response: async function redactAnswer(ex, res) {
      const states = redactingStates(ex, deps.secrets);
      const newest = states.at(-1)!;
      const codings = parseContentEncoding(
        res.headers.filter(([n]) => n.toLowerCase() === "content-encoding").map(([, v]) => v),
      );
      const stream = res.body?.kind === "stream" ? res.body : null;
      const decode = codings.length > 0 && stream !== null;
      let reason = res.reason;
      let headers: HeaderPairs = res.headers;
      for (const state of states) {
        const h = redactResponseHead(reason, headers, state, {
          headRequest: ex.head.method === "HEAD",
          decoded: decode,
        });
        ex.trace.redactions += h.redactions;
        reason = h.reason;
        headers = h.headers;
      }
      let body: Body = res.body;
      // An event stream (a streaming LLM's tokens) is also redacted on the joined text of its
      // deltas (body/sse-deltas.ts): it streams, never held.
      const events = isEventStream(headers);
      if (stream) {
        const whole =
          !decode &&
          !events &&
          deps.inline &&
          states.some((s) => s.redactSpecs.length > 0) &&
          stream.length !== null &&
          stream.length <= deps.inline.maxBytes &&
          deps.held.acquire(stream.length, ex.agent);
        if (whole && deps.inline) {
          body = await redactWhole(ex, deps, deps.inline, states, stream.stream, stream.length!);
          if (newest.replaced.aborted) {
            // Reloaded again while the answer was collected: its newest values were not looked for.
            body.release();
            return refuse("scan-failed", RELOADED);
          }
        } else {
          let s = stream.stream;
          if (decode) s = await primeStream(decodeBody(s, codings, deps.decodeLimits));
          // Before the byte-level pass: events reach it as soon as they are whole, and its
          // held-back tail never holds an event's end from this reader.
          if (events && states.some((st) => !st.redactInline.empty)) {
            s = sseDeltaStream(
              s,
              states.map((st) => st.redactInline),
              (n) => {
                ex.trace.redactions += n;
              },
            );
          }
          for (const state of states) {
            if (state.redactSpecs.length === 0) continue;
            const scan = await deps.scanner
              .open(state.setName("redact"), () => state.redactSpecs, REDACT_COMPILE)
              .catch(async (e) => {
                await s.cancel().catch(() => {});
                throw e;
              });
            s = redactBody(s, scan, (n) => {
              ex.trace.redactions += n;
            });
          }
          body = { kind: "stream", stream: cutWhenReplaced(s, newest.replaced), length: null };
        }
      }
      return allow({ status: res.status, reason, headers, body });
    },
  };
}

/**
 * The secrets an answer is redacted with: those its exchange started with, and — when a reload
 * happened since — those in force now as well (an upstream may already echo the new values).
 * The exchange keeps the newer ones alive until it is over.
 */
function redactingStates(ex: Exchange, current: () => SecretState): SecretState[] {
  if (!ex.secrets.replaced.aborted) return [ex.secrets];
  const now = current();
  if (now === ex.secrets) return [now];
  ex.holdSecrets(now);
  return [ex.secrets, now];
}

/** A small answer, held whole (its share of the budget already acquired) and redacted. */
async function redactWhole(
  ex: Exchange,
  deps: InboundDeps,
  inline: InlineScanner,
  states: readonly SecretState[],
  stream: ReadableStream<Uint8Array>,
  length: number,
): Promise<HeldBody> {
  let whole: Uint8Array;
  try {
    whole = await collectBounded(stream, inline.maxBytes, allocWithHeadroom);
    for (const state of states) {
      if (state.redactSpecs.length === 0) continue;
      let r: { output: Uint8Array; replacements: number };
      try {
        r = inline.rewrite(
          state.setName("redact"),
          state.redactSpecs,
          whole,
          allocWithHeadroom,
          REDACT_COMPILE,
        );
      } catch (e) {
        releaseHeld(whole);
        throw e;
      }
      // A shorter output (the usual case: "[REDACTED]" is shorter than a credential) is another
      // held buffer; the upstream's plaintext it came from is wiped.
      if (r.output !== whole) releaseHeld(whole);
      whole = r.output;
      ex.trace.redactions += r.replacements;
    }
  } finally {
    deps.held.release(length, ex.agent);
  }
  return new HeldBody(whole);
}

function isEventStream(headers: HeaderPairs): boolean {
  const type = headers.find(([n]) => n.toLowerCase() === "content-type")?.[1] ?? "";
  return type.split(";")[0]!.trim().toLowerCase() === "text/event-stream";
}

const RELOADED = "the proxy's secrets were reloaded while this answer was on its way; retry";

/** `s` until `replaced` fires; from then on its next read fails, and nothing more passes. */
function cutWhenReplaced(
  s: ReadableStream<Uint8Array>,
  replaced: AbortSignal,
): ReadableStream<Uint8Array> {
  const reader = s.getReader();
  return new ReadableStream<Uint8Array>(
    {
      async pull(c) {
        try {
          const { done, value } = await reader.read();
          if (done) {
            c.close();
            return;
          }
          if (replaced.aborted) {
            value.fill(0);
            throw new ProxyError("scan-failed", RELOADED);
          }
          c.enqueue(value);
        } catch (e) {
          reader.cancel(e).catch(() => {});
          c.error(e);
        }
      },
      cancel(reason) {
        return reader.cancel(reason);
      },
    },
    { highWaterMark: 0 },
  );
}
