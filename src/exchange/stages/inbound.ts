// Stage: what comes back to the agent. Every real value is redacted from the head
// (inbound-head.ts) and from the body, whatever its content coding: a coded body is decoded
// (bounded, content-coding.ts) and sent on decoded. A small answer of known length is held whole
// and redacted in one engine call (an upstream that dies before its end then gets the agent a
// 502, not a cut body); any other streams through the worker pool. Its first decoded chunk is
// read before the head is committed, so a body that is not what its label says is a 502 too.

import { collectBounded, primeStream } from "../../body/collect.ts";
import { type DecodeLimits, decodeBody, parseContentEncoding } from "../../body/content-coding.ts";
import type { HeldBudget } from "../../body/held-body.ts";
import { HeldBody } from "../../body/held-body.ts";
import { allocWithHeadroom, releaseHeld } from "../../body/held-buffers.ts";
import type { InlineScanner } from "../../body/inline-scanner.ts";
import { type BodyScanner, redactBody } from "../../body/scan-pipelines.ts";
import type { SecretState } from "../../credentials/secret-state.ts";
import { allow } from "../../policy/verdict.ts";
import type { Body, Exchange, Stage } from "../exchange.ts";
import { redactResponseHead } from "../inbound-head.ts";

export interface InboundDeps {
  readonly scanner: BodyScanner;
  readonly inline?: InlineScanner;
  /** Holding an answer is the fast path, not a requirement: with the budget spent, it streams. */
  readonly held: HeldBudget;
  readonly decodeLimits: DecodeLimits;
}

export function inbound(deps: InboundDeps): Stage {
  return {
    name: "inbound",
    response: async function redactAnswer(ex, res) {
      const state = ex.secrets;
      const codings = parseContentEncoding(
        res.headers.filter(([n]) => n.toLowerCase() === "content-encoding").map(([, v]) => v),
      );
      const stream = res.body?.kind === "stream" ? res.body : null;
      const decode = codings.length > 0 && stream !== null;
      const head = redactResponseHead(res.reason, res.headers, state, {
        headRequest: ex.head.method === "HEAD",
        decoded: decode,
      });
      ex.trace.redactions += head.redactions;
      let body: Body = res.body;
      if (stream) {
        const whole =
          !decode &&
          deps.inline &&
          state.redactSpecs.length > 0 &&
          stream.length !== null &&
          stream.length <= deps.inline.maxBytes &&
          deps.held.acquire(stream.length, ex.agent);
        if (whole && deps.inline) {
          body = await redactWhole(ex, deps, deps.inline, state, stream.stream, stream.length!);
        } else {
          let s = stream.stream;
          if (decode) s = await primeStream(decodeBody(s, codings, deps.decodeLimits));
          if (state.redactSpecs.length > 0) {
            const scan = await deps.scanner
              .open(state.setName("redact"), () => state.redactSpecs)
              .catch(async (e) => {
                await s.cancel().catch(() => {});
                throw e;
              });
            s = redactBody(s, scan, (r) => {
              ex.trace.redactions += r.replacements;
            });
          }
          body = { kind: "stream", stream: s, length: null };
        }
      }
      return allow({ status: res.status, reason: head.reason, headers: head.headers, body });
    },
  };
}

/** A small answer, held whole (its share of the budget already acquired) and redacted. */
async function redactWhole(
  ex: Exchange,
  deps: InboundDeps,
  inline: InlineScanner,
  state: SecretState,
  stream: ReadableStream<Uint8Array>,
  length: number,
): Promise<HeldBody> {
  let whole: Uint8Array;
  let r: { output: Uint8Array; replacements: number };
  try {
    whole = await collectBounded(stream, inline.maxBytes, allocWithHeadroom);
    try {
      r = inline.rewrite(state.setName("redact"), state.redactSpecs, whole, allocWithHeadroom);
    } catch (e) {
      releaseHeld(whole);
      throw e;
    }
  } finally {
    deps.held.release(length, ex.agent);
  }
  // A shorter output (the usual case: "[REDACTED]" is shorter than a credential) is another
  // held buffer; the upstream's plaintext it came from is wiped.
  if (r.output !== whole) releaseHeld(whole);
  ex.trace.redactions += r.replacements;
  return new HeldBody(r.output);
}
