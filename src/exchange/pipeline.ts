// Runs one request through the stages: admitted (policy/admission.ts), then each stage's
// request step in order, then the upstream, then each response step in reverse order, and
// hands the agent leg its answer. Every verdict goes into the trace; the answer to a refusal or
// failure is built from the trace's deciding entry (http/error-answer.ts); the audit line is
// written once, when the answer was handed to the agent's socket or could not be. Held bodies
// are released when nothing refers to them any more. Sockets never come here: the agent leg
// gives an IncomingRequest and takes an OutgoingResponse, the upstream leg is an `Upstream`.

import { countBytes } from "../body/collect.ts";
import type { SecretState } from "../credentials/secret-state.ts";
import { errorAnswer } from "../http/error-answer.ts";
import type {
  IncomingRequest,
  IncomingResponse,
  OutgoingRequest,
  OutgoingResponse,
  SwitchedConnection,
} from "../http/message.ts";
import { ProxyError, toProxyError } from "../http/proxy-error.ts";
import type { DeflateTerms } from "../http/ws-deflate.ts";
import type { RequestFacts, RequestLog } from "../observe/request-log.ts";
import { Trace } from "../observe/trace.ts";
import { admitRequest, type TunnelFacts } from "../policy/admission.ts";
import type { Destination } from "../policy/host-agreement.ts";
import { canonicalPath } from "../policy/request-rule.ts";
import { allow, type Verdict } from "../policy/verdict.ts";
import {
  type Body,
  discard,
  type Exchange,
  type Inbound,
  type Outbound,
  type Stage,
  type StageVerdict,
  type Upstream,
} from "./exchange.ts";
import { originForm } from "./outbound-head.ts";

/**
 * Relays a WebSocket whose handshake this exchange made (net/ws-relay.ts). `hold` keeps the
 * exchange's secrets alive for the relay (taken before the exchange lets go of them); the
 * relay releases it.
 */
export type WebSocketRelay = (
  ex: Exchange,
  agent: SwitchedConnection,
  upstream: SwitchedConnection,
  hold: () => void,
  deflate: { readonly agent: DeflateTerms | null; readonly upstream: DeflateTerms | null },
) => void;

export interface PipelineDeps {
  readonly stages: readonly Stage[];
  /** Absent: a 101 is never taken (the handshake fails). */
  readonly relay?: WebSocketRelay;
  readonly upstream: Upstream;
  readonly log: RequestLog;
  /** The credentials in force; each exchange keeps the ones it started with. */
  readonly secrets: () => SecretState;
}

/** The agent connection a request came on. */
export interface AgentConnection {
  readonly id: number;
  readonly agent: string;
  /** The agent certificate's serial (for the audit line). */
  readonly serial: string;
  /** Set inside an intercepted CONNECT tunnel. */
  readonly tunnel: TunnelFacts | null;
}

export type ExchangeHandler = (
  req: IncomingRequest,
  conn: AgentConnection,
) => Promise<OutgoingResponse>;

export function createPipeline(deps: PipelineDeps): ExchangeHandler {
  const requestSteps = deps.stages.filter((s) => s.request);
  const responseSteps = [...deps.stages].reverse().filter((s) => s.response);

  return async function runExchange(req, conn) {
    const started = performance.now();
    const trace = new Trace();
    const secrets = deps.secrets();
    const held = [secrets.use()];
    const head = req.head;
    const admitted = trace.record("admit", admitRequest(head, conn.tunnel));
    const facts = requestFacts(conn, req, admitted.ok ? admitted.value : null);
    const finish = (status: number) => {
      try {
        deps.log.write(facts, trace, status, started, secrets);
      } finally {
        for (const release of held) release();
      }
    };
    if (!admitted.ok) {
      req.body?.cancel().catch(() => {});
      return refusal(trace, finish);
    }
    const ex: Exchange = {
      conn: conn.id,
      agent: conn.agent,
      head,
      destination: admitted.value,
      route: { method: head.method, path: canonicalPath(originForm(head)) },
      secrets,
      trace,
      signal: req.signal,
      started,
      sendContinue: () => req.sendContinue(),
      holdSecrets: (state) => {
        held.push(state.use());
      },
    };
    let out: Outbound = {
      method: head.method,
      target: originForm(head),
      headers: head.headers.fields,
      body: req.body && streamBody(req.body, head.framing),
    };
    const at = { stage: "admit" };
    try {
      const sent = await through(requestSteps, (s, m) => s.request!(ex, m), out, trace, at);
      if (!sent.ok) return refusal(trace, finish);
      out = sent.value;
      at.stage = "forward";
      let answer: IncomingResponse;
      try {
        answer = await deps.upstream.send(
          {
            host: ex.destination.target.host,
            port: ex.destination.target.port,
            tls: ex.destination.scheme === "https",
            isIp: ex.destination.target.kind !== "dns",
            partition: `${ex.agent}\u0000${ex.secrets.generation}`,
            agent: ex.agent,
          },
          outgoing(out),
          ex.signal,
        );
      } catch (e) {
        // Never read (the dial failed) or read part-way: nobody will read the rest.
        discard(out.body);
        throw e;
      }
      const res: Inbound = {
        status: answer.head.status,
        reason: answer.head.reason,
        headers: answer.head.headers.fields,
        body: answer.body && streamBody(answer.body, answer.head.framing),
        ...(answer.switched ? { switched: answer.switched } : {}),
      };
      const switched = res.status === 101 && out.upgrade !== undefined && deps.relay;
      if ((res.status < 200 && !switched) || res.status > 599) {
        discard(res.body);
        answer.switched?.socket.destroy();
        throw new ProxyError("upstream-protocol", "upstream answered with an unusable status");
      }
      const got = await through(responseSteps, (s, m) => s.response!(ex, m), res, trace, at);
      if (!got.ok) {
        answer.switched?.socket.destroy();
        return refusal(trace, finish);
      }
      const answered = answerWith(ex, got.value, finish);
      const upstream = answer.switched;
      if (!switched || !upstream) return answered;
      // The relay's hold on the secrets, taken now: the exchange lets go of them when the 101
      // is written, and a reload meanwhile must not retire (zero) what the relay scans with.
      const hold = ex.secrets.use();
      return {
        ...answered,
        settled(ok) {
          answered.settled?.(ok);
          if (!ok) {
            hold();
            upstream.socket.destroy();
          }
        },
        takeOver: (agent) =>
          deps.relay!(
            ex,
            agent,
            upstream,
            hold,
            got.value.deflate ?? { agent: null, upstream: null },
          ),
      };
    } catch (e) {
      trace.fail(at.stage, toProxyError(e));
      return refusal(trace, finish);
    } finally {
      // The upstream exchange is over (sent, or failed): a held request body, which may carry
      // the real values just swapped in, is wiped and its buffer reused once no write refers to
      // it, and its share of the budget goes back.
      if (out.body?.kind === "held") out.body.release();
    }
  };
}

/**
 * A message through `steps` (request steps, or response steps), each verdict recorded. A
 * refusal, or a step that throws, lets go of the body the message carried at that point.
 */
async function through<M extends { readonly body: Body }>(
  steps: readonly Stage[],
  step: (s: Stage, m: M) => StageVerdict<M>,
  msg: M,
  trace: Trace,
  at: { stage: string },
): Promise<Verdict<M>> {
  let m = msg;
  for (const s of steps) {
    at.stage = s.name;
    let v: Verdict<M>;
    try {
      v = trace.record(s.name, await step(s, m));
    } catch (e) {
      discard(m.body);
      throw e;
    }
    if (!v.ok) {
      discard(m.body);
      return v;
    }
    m = v.value;
  }
  return allow(m);
}

/** A body received as a stream, with its length when its framing gave one. */
function streamBody(
  stream: ReadableStream<Uint8Array>,
  framing: { kind: string; length?: number },
): Body {
  return { kind: "stream", stream, length: framing.kind === "length" ? framing.length! : null };
}

/** The upstream's answer, as the agent leg writes it; the audit line once it was written. */
function answerWith(
  ex: Exchange,
  res: Inbound,
  finish: (status: number) => void,
): OutgoingResponse {
  const trace = ex.trace;
  const bodiless = ex.head.method === "HEAD" || res.status === 204 || res.status === 304;
  let body: OutgoingResponse["body"] = null;
  const b = res.body;
  const held = b?.kind === "held" ? b : null;
  if (bodiless) discard(b);
  else if (b?.kind === "held") body = b.bytes;
  else if (b) {
    body = countBytes(b.stream, (n) => {
      trace.bytesOut = n;
    });
  }
  return {
    status: res.status,
    reason: res.reason,
    headers: res.headers,
    body,
    settled(ok) {
      try {
        if (held) {
          trace.bytesOut = ok && !bodiless ? held.length : 0;
          held.release();
        }
      } finally {
        if (!ok) trace.broke("respond", "response body failed");
        finish(res.status);
      }
    },
  };
}

/** The proxy's own answer to a refused or failed request: the trace's deciding entry. */
function refusal(trace: Trace, finish: (status: number) => void): OutgoingResponse {
  const o = trace.outcome();
  const a = errorAnswer(new ProxyError(o.code ?? "internal", o.reason));
  return {
    ...a,
    settled(ok) {
      if (ok) trace.bytesOut = a.body.length;
      finish(a.status);
    },
  };
}

function outgoing(out: Outbound): OutgoingRequest {
  const b = out.body;
  return {
    method: out.method,
    target: out.target,
    headers: out.headers,
    body: b === null ? null : b.kind === "held" ? b.bytes : b.stream,
    bodyLength: b?.kind === "stream" ? b.length : null,
    ...(out.upgrade ? { upgrade: out.upgrade } : {}),
  };
}

function requestFacts(
  conn: AgentConnection,
  req: IncomingRequest,
  dest: Destination | null,
): RequestFacts {
  return {
    conn: conn.id,
    agent: conn.agent,
    serial: conn.serial,
    method: req.head.method,
    scheme: dest?.scheme ?? (conn.tunnel ? "https" : "http"),
    host: dest?.target.host ?? "-",
    port: dest?.target.port ?? 0,
    target: req.head.target,
  };
}
