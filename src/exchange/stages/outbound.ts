// Stage: what leaves for the upstream. The head is planned (outbound-head.ts: DLP, swaps,
// fields the proxy owns); the body is scanned for real values (DLP) and has its bound dummies
// swapped, in one of three ways:
//   - small, of known length: held whole and scanned in one engine call on the main thread, so
//     a real value refuses the request before any byte leaves;
//   - of known length, with a swap that may change it: held whole (bounded) after the streamed
//     scan, to send a correct Content-Length — or, if the swap could make it larger than the
//     held-body cap, sent chunked;
//   - otherwise streamed through the worker pool, its last chunk held back until DLP has seen
//     the whole body (a hit fails the stream: the upstream never gets a complete request).
// `require`: a bound host only receives requests that carried the dummy, in the head or (once
// it was scanned) in the body.

import { AwsChunkedBody, type AwsChunkedOptions } from "../../body/aws-chunked.ts";
import { countBytes, countMatches } from "../../body/collect.ts";
import {
  type Coding,
  DEFAULT_DECODE_LIMITS,
  decodeBody,
  parseContentEncoding,
} from "../../body/content-coding.ts";
import { HeldBody, type HeldBudget, holdWhole } from "../../body/held-body.ts";
import { allocWithHeadroom } from "../../body/held-buffers.ts";
import type { InlineScanner } from "../../body/inline-scanner.ts";
import { type BodyScanner, outboundBody } from "../../body/scan-pipelines.ts";
import { checkRequired } from "../../credentials/bindings.ts";
import { swapJsonStrings } from "../../credentials/body-fields.ts";
import {
  REDACT_COMPILE,
  type RequestPlan,
  type SecretState,
} from "../../credentials/secret-state.ts";
import { streamingMode } from "../../credentials/sigv4-chunked.ts";
import { swapParams } from "../../credentials/surfaces.ts";
import { ProxyError } from "../../http/proxy-error.ts";
import { DEFLATE_OFFER } from "../../http/ws-deflate.ts";
import type { ScanStream } from "../../matcher/pool/pool.ts";
import type { PatternSpec } from "../../matcher/types.ts";
import { allow, refuse, type Verdict } from "../../policy/verdict.ts";
import { type Body, discard, type Exchange, type Stage } from "../exchange.ts";
import { planOutboundHead } from "../outbound-head.ts";

export interface OutboundDeps {
  readonly scanner: BodyScanner;
  /** Small bodies of known length are scanned whole on the main thread (absent: never). */
  readonly inline?: InlineScanner;
  /** The process-wide budget for bodies held whole (many parallel uploads). */
  readonly held: HeldBudget;
  /** Longest body held whole to give it a new Content-Length. */
  readonly maxHeldBodyBytes: number;
}

const DLP_IN_BODY = "real credential in request body";

export function outbound(deps: OutboundDeps): Stage {
  return {
    name: "outbound",
    request: async function swapAndScan(ex, out) {
      const state = ex.secrets;
      const { target, scheme } = ex.destination;
      // Never inject into plain http://: only DLP and redaction apply there.
      let plan =
        scheme === "https"
          ? state.plan(ex.agent, target.host, target.port, ex.route)
          : state.noSwapPlan();
      const head = planOutboundHead(
        ex.head,
        ex.destination,
        state,
        plan,
        state.foreignDummies(ex.agent),
      );
      if (!head.ok) {
        discard(out.body);
        return head;
      }
      ex.trace.foreignDummies += head.value.foreign;
      if (scheme === "https") {
        const text = [ex.head.target, ...ex.head.headers.fields.map(([, v]) => v)].join("\n");
        const missing = state.unavailableIn(ex.agent, target.host, target.port, ex.route, text);
        if (missing.length > 0) {
          discard(out.body);
          return refuse(
            "credential-unavailable",
            `credential ${missing.join(", ")} has no current value (its source failed or has not answered yet); retry later`,
          );
        }
      }
      const swapped = new Set(head.value.swapped);
      let swaps = head.value.swaps;
      let body: Body = null;
      let requireChecked = false;
      let input = out.body;
      const fields = ex.head.headers.fields;
      const framing = awsFraming(fields);
      if (!framing.ok) {
        discard(input);
        return framing;
      }
      let chunked: AwsChunkedBody | null = null;
      let framedLength: number | null = null;
      if (input) {
        if (input.kind === "stream") await ex.sendContinue();
        // A body with its own Content-Encoding is scanned as what it decodes to as well: held
        // (bounded), decoded (with the answers' bomb caps) into the DLP set, sent as it came.
        const codings = requestCodings(fields, framing.value !== null);
        if (!codings.ok) {
          discard(input);
          return codings;
        }
        // An aws-chunked body is scanned as its payload and framed again on the way out
        // (body/aws-chunked.ts); its fields are never swapped (the framing fixes its length).
        if (framing.value) {
          try {
            chunked = new AwsChunkedBody(framing.value, (e) =>
              ex.trace.record("outbound", refuse(e.code, e.reason)),
            );
          } catch (e) {
            discard(input);
            if (e instanceof ProxyError) return refuse(e.code, e.reason);
            throw e;
          }
          framedLength = input.length;
          input = {
            kind: "stream",
            stream: chunked.decode(streamOf(input)),
            length: framing.value.decodedLength,
          };
          plan = scanOnly(plan);
        }
        if (codings.value.length > 0) {
          const v = await scanDecoded(ex, deps, state, input, codings.value);
          if (!v.ok) return v;
          input = v.value;
        }
        const whole =
          input.kind === "held" ||
          (deps.inline && input.length !== null && input.length <= deps.inline.maxBytes);
        // Body fields (form:, json:) are swapped in bodies held whole only; a larger one goes
        // out with the dummy as sent.
        if (whole) {
          const v = await scanWhole(ex, deps, state, plan, input);
          if (!v.ok) return v;
          body = v.value.body;
          swaps += v.value.swaps;
          // Like the streamed path: a body swap counts for the host's required credentials.
          if (v.value.swaps > 0) for (const n of plan.required) swapped.add(n);
        } else if (input.kind === "stream") {
          body = await scanStreamed(ex, deps, state, plan, input, swapped);
          requireChecked = true;
        }
      }
      if (plan.required.length > 0 && !requireChecked) {
        const v = checkRequired(plan, swapped);
        if (!v.ok) {
          discard(body);
          return v;
        }
      }
      // Counted once the request may leave (a streamed body's swaps: when it was scanned).
      ex.trace.swaps += swaps;
      for (const n of head.value.swapped) ex.trace.swapped.add(n);
      if (swaps > head.value.swaps) for (const n of bodyCredentials(plan)) ex.trace.swapped.add(n);
      if (chunked && body) {
        body = { kind: "stream", stream: chunked.frame(streamOf(body)), length: framedLength };
      }
      return allow({
        method: out.method,
        target: head.value.target,
        // A WebSocket handshake offers upstream only what the proxy reads: permessage-deflate
        // with no context kept between messages (each one is inflated on its own).
        headers: out.upgrade
          ? [
              ...head.value.headers.filter(([n]) => n.toLowerCase() !== "sec-websocket-extensions"),
              ["sec-websocket-extensions", DEFLATE_OFFER],
            ]
          : head.value.headers,
        body,
        ...(chunked ? { awsChunked: chunked } : {}),
        ...(out.upgrade ? { upgrade: out.upgrade } : {}),
      });
    },
  };
}

/**
 * A small body (or one an earlier stage holds), held whole and scanned in one engine call each
 * for DLP and the swap on the main thread.
 */
async function scanWhole(
  ex: Exchange,
  deps: OutboundDeps,
  state: SecretState,
  plan: RequestPlan,
  input: HeldBody | { readonly stream: ReadableStream<Uint8Array>; readonly length: number | null },
): Promise<Verdict<{ body: HeldBody; swaps: number }>> {
  const inline = deps.inline;
  if (!inline) {
    // Nothing here can scan a held body: refuse it rather than let it leave unscanned.
    discard(input instanceof HeldBody ? input : { kind: "stream", ...input });
    throw new ProxyError("internal", "a held request body cannot be scanned");
  }
  let held =
    input instanceof HeldBody
      ? input
      : await holdWhole(
          deps.held,
          ex.agent,
          input.stream,
          Math.ceil((input.length ?? 0) * Math.max(growthOf(plan.bodySpecs), plan.fieldGrowth)),
          inline.maxBytes,
        );
  ex.trace.bytesIn = held.length;
  let swaps = 0;
  try {
    if (state.redactSpecs.length > 0) {
      if (
        inline.count(state.setName("redact"), state.redactSpecs, held.bytes, REDACT_COMPILE) > 0
      ) {
        held.release();
        return refuse("dlp-blocked", DLP_IN_BODY);
      }
    }
    // Another agent's dummy travels as it is (it is never swapped) but is a violation.
    const foreign = state.foreignSpecs(ex.agent);
    if (foreign) {
      ex.trace.foreignDummies += inline.count(
        state.setName(`foreign:${ex.agent}`),
        foreign,
        held.bytes,
      );
    }
    const fields = swapFields(ex, plan, held.bytes);
    if (fields) {
      held = held.replace(fields.bytes);
      swaps += fields.swaps;
    }
    if (plan.bodySpecs) {
      const r = inline.rewrite(
        state.setName(`swap:${plan.key}`),
        plan.bodySpecs,
        held.bytes,
        allocWithHeadroom,
      );
      held = held.replace(r.output);
      swaps += r.replacements;
    }
  } catch (e) {
    // The scan failed: the agent's body (it may hold a real value) is wiped.
    held.release();
    throw e;
  }
  return allow({ body: held, swaps });
}

/**
 * A body streamed through the pool: one pass does both jobs when the host has bound
 * credentials (real values become the state's DLP marker, found in the output it fails the
 * request; bound dummies become their real values); without bindings the pass is DLP alone.
 */
async function scanStreamed(
  ex: Exchange,
  deps: OutboundDeps,
  state: SecretState,
  plan: RequestPlan,
  body: { readonly stream: ReadableStream<Uint8Array>; readonly length: number | null },
  headSwapped: ReadonlySet<string>,
): Promise<Body> {
  let counted = countBytes(body.stream, (n) => {
    ex.trace.bytesIn = n;
  });
  // Another agent's dummy travels as it is but is a violation: counted as the body passes.
  const foreign = state.foreignSpecs(ex.agent);
  if (foreign && deps.inline) {
    counted = countMatches(
      counted,
      deps.inline.counter(state.setName(`foreign:${ex.agent}`), foreign),
      (n) => {
        ex.trace.foreignDummies += n;
      },
    );
  }
  const bodySpecs = plan.bodySpecs;
  const hasReals = state.redactSpecs.length > 0;
  let dlp: ScanStream | null = null;
  let sw: ScanStream | null = null;
  let marker: Uint8Array | undefined;
  try {
    if (bodySpecs && hasReals) {
      // Only the real values (first in the set) are matched on the decoded view too.
      sw = await deps.scanner.open(
        state.setName(`out:${plan.key}`),
        () => state.outboundSpecs(plan),
        { views: state.redactSpecs.length },
      );
      marker = state.dlpMarker;
    } else if (hasReals) {
      dlp = await deps.scanner.open(
        state.setName("redact"),
        () => state.redactSpecs,
        REDACT_COMPILE,
      );
    } else if (bodySpecs) {
      sw = await deps.scanner.open(state.setName(`swap:${plan.key}`), () => bodySpecs);
    }
  } catch (e) {
    await counted.cancel().catch(() => {});
    throw e;
  }
  // `require` with a body: if the head carried no required dummy, the body must; the pipeline
  // fails the stream at its end otherwise (the upstream never gets it whole).
  const requireInBody = plan.required.length > 0 && !checkRequired(plan, headSwapped).ok;
  const scanned = outboundBody(
    counted,
    dlp,
    sw,
    (r) => {
      if (r.dlpHits > 0) ex.trace.record("outbound", refuse("dlp-blocked", DLP_IN_BODY));
      else if (requireInBody && r.swaps === 0) {
        ex.trace.record(
          "outbound",
          refuse("required-dummy-missing", "request body did not carry the required dummy"),
        );
      }
      ex.trace.swaps += r.swaps;
      if (r.swaps > 0) for (const n of bodyCredentials(plan)) ex.trace.swapped.add(n);
    },
    requireInBody,
    marker,
  );
  const declared = body.length;
  if (declared !== null && !plan.lengthPreserving && bodySpecs) {
    // A swap may change the length: hold the (bounded) body to send a correct Content-Length.
    // A body the swap could make larger than the cap goes chunked instead (so one the agent
    // sent within the cap is never refused for what the swap made of it).
    const most = Math.ceil(declared * growthOf(bodySpecs));
    if (most <= deps.maxHeldBodyBytes) {
      return holdWhole(deps.held, ex.agent, scanned, most, deps.maxHeldBodyBytes);
    }
    return { kind: "stream", stream: scanned, length: null };
  }
  return { kind: "stream", stream: scanned, length: declared };
}

type Fields = readonly (readonly [string, string])[];

const valuesOf = (fields: Fields, name: string) =>
  fields.filter(([n]) => n.toLowerCase() === name).map(([, v]) => v.trim());

/**
 * The request's content codings, or a refusal when one is not a coding the proxy can read.
 * `aws-chunked` (the framing of a STREAMING- payload, taken off before this) may be the last.
 */
function requestCodings(fields: Fields, framed: boolean): Verdict<Coding[]> {
  const tokens = valuesOf(fields, "content-encoding").flatMap((v) => v.split(","));
  const last = tokens.findLastIndex((t) => t.trim() !== "");
  if (framed && last >= 0 && tokens[last]!.trim().toLowerCase() === "aws-chunked") {
    tokens.splice(last, 1);
  }
  if (tokens.some((t) => t.trim().toLowerCase() === "aws-chunked")) {
    return refuse(
      "bad-request",
      "Content-Encoding aws-chunked needs a STREAMING- x-amz-content-sha256, and comes last",
    );
  }
  try {
    return allow(parseContentEncoding(tokens));
  } catch {
    return refuse(
      "bad-request",
      "request Content-Encoding is not one the proxy can scan (gzip, deflate, br, zstd)",
    );
  }
}

/**
 * A coded request body, held whole (up to the held-body cap) and its decoded form run through
 * the DLP set; it leaves as it came. One that cannot be decoded within the caps is refused:
 * what cannot be read cannot be let out.
 */
async function scanDecoded(
  ex: Exchange,
  deps: OutboundDeps,
  state: SecretState,
  input: NonNullable<Body>,
  codings: readonly Coding[],
): Promise<Verdict<HeldBody>> {
  const held =
    input instanceof HeldBody
      ? input
      : await holdWhole(
          deps.held,
          ex.agent,
          input.stream,
          input.length ?? deps.maxHeldBodyBytes,
          deps.maxHeldBodyBytes,
        );
  if (state.redactSpecs.length === 0) return allow(held);
  let hits: number;
  let copy: Uint8Array | null = null;
  try {
    const scan = await deps.scanner.open(
      state.setName("redact"),
      () => state.redactSpecs,
      REDACT_COMPILE,
    );
    // A copy: the decoder takes what it is given, and the held bytes are what leaves.
    copy = held.bytes.slice();
    const source = new ReadableStream<Uint8Array>({
      start(c) {
        c.enqueue(copy!);
        c.close();
      },
    });
    const reader = decodeBody(source, codings, DEFAULT_DECODE_LIMITS).pipeThrough(scan).getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      value.fill(0);
    }
    hits = (await scan.result).replacements;
  } catch {
    held.release();
    return refuse("bad-request", "request body could not be decoded to be scanned");
  } finally {
    copy?.fill(0);
  }
  if (hits > 0) {
    held.release();
    return refuse("dlp-blocked", DLP_IN_BODY);
  }
  return allow(held);
}

/**
 * How a request body is framed by AWS's chunked upload (its `x-amz-content-sha256` names a
 * STREAMING- mode), null when it is not, or a refusal naming what the proxy cannot read.
 */
function awsFraming(fields: Fields): Verdict<AwsChunkedOptions | null> {
  const payload = valuesOf(fields, "x-amz-content-sha256");
  if (!payload.some((v) => v.toUpperCase().startsWith("STREAMING-"))) return allow(null);
  const mode = payload.length === 1 ? streamingMode(payload[0]!) : null;
  if (mode === null) {
    return refuse(
      "bad-request",
      "x-amz-content-sha256 is not a streaming payload mode the proxy can read (STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER], STREAMING-UNSIGNED-PAYLOAD-TRAILER)",
    );
  }
  const lengths = valuesOf(fields, "x-amz-decoded-content-length");
  if (lengths.length !== 1 || !/^\d{1,15}$/.test(lengths[0]!)) {
    return refuse("bad-request", "a streaming upload needs one x-amz-decoded-content-length");
  }
  const trailers = valuesOf(fields, "x-amz-trailer")
    .flatMap((v) => v.split(","))
    .map((t) => t.trim().toLowerCase())
    .filter((t) => t !== "");
  if (trailers.some((t) => !/^x-amz-checksum-[a-z0-9]{1,16}$/.test(t))) {
    return refuse("bad-request", "x-amz-trailer names something other than an x-amz-checksum");
  }
  return allow({ mode, decodedLength: Number(lengths[0]), trailers });
}

/** The credentials a body swap can be for: those presented in a field, or anywhere in a body. */
function bodyCredentials(plan: RequestPlan): string[] {
  return plan.swaps
    .filter((p) =>
      p.surfaces.some((s) => s.kind === "body" || s.kind === "form" || s.kind === "json"),
    )
    .map((p) => p.name);
}

/** A plan that scans a body but changes none of it (the dummy in it travels as sent). */
function scanOnly(plan: RequestPlan): RequestPlan {
  return {
    ...plan,
    formSwap: new Map(),
    jsonSwap: new Map(),
    bodySpecs: null,
    lengthPreserving: true,
    fieldGrowth: 1,
  };
}

/** A body as a stream; a held one is copied out and released (its hold is for whole bodies). */
function streamOf(body: NonNullable<Body>): ReadableStream<Uint8Array> {
  if (body.kind === "stream") return body.stream;
  const bytes = body.bytes.slice();
  body.release();
  return new ReadableStream<Uint8Array>({
    start(c) {
      c.enqueue(bytes);
      c.close();
    },
  });
}

/** The body with its declared form or JSON fields swapped; null when nothing changed. */
function swapFields(
  ex: Exchange,
  plan: RequestPlan,
  bytes: Uint8Array,
): { bytes: Uint8Array; swaps: number } | null {
  if (plan.formSwap.size === 0 && plan.jsonSwap.size === 0) return null;
  // One label, read one way: with two Content-Type fields the upstream may read the body as
  // either (or as their join), so neither is trusted.
  const types = ex.head.headers.fields.filter(([n]) => n.toLowerCase() === "content-type");
  if (types.length !== 1) return null;
  const type = types[0]![1].toLowerCase().split(";")[0]!.trim();
  const form = type === "application/x-www-form-urlencoded";
  const json = type === "application/json" || type.endsWith("+json");
  if (!form && !json) return null;
  const text = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.length).toString("latin1");
  const r = form ? swapParams(text, plan.formSwap) : swapJsonStrings(text, plan.jsonSwap);
  if (r.swapped.length === 0) return null;
  return { bytes: new Uint8Array(Buffer.from(r.text, "latin1")), swaps: r.swapped.length };
}

/** The most a swap with `specs` can lengthen a body, as a factor (1: never longer). */
function growthOf(specs: readonly PatternSpec[] | null): number {
  let g = 1;
  for (const s of specs ?? []) {
    if (s.pattern.length > 0) g = Math.max(g, s.replacement.length / s.pattern.length);
  }
  return g;
}
