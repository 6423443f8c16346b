// One request's life as values, with no sockets: the Exchange (the facts fixed when it was
// admitted), the request as it will go upstream (Outbound) and the answer as it will go back
// (Inbound), the Stage each capability is written as, and the Upstream the exchange sends to.
// A stage looks at one message and returns a verdict: continue with the message (the same one,
// or a rewritten one), or refuse. It never answers the agent and never writes the audit log:
// the pipeline does both, from the trace.

import type { AwsChunkedBody } from "../body/aws-chunked.ts";
import type { HeldBody } from "../body/held-body.ts";
import type { SecretState } from "../credentials/secret-state.ts";
import type { IncomingResponse, OutgoingRequest, SwitchedConnection } from "../http/message.ts";
import type { RequestHead } from "../http/request-parser.ts";
import type { HeaderPairs } from "../http/serialize.ts";
import type { DeflateTerms } from "../http/ws-deflate.ts";
import type { Trace } from "../observe/trace.ts";
import type { Destination } from "../policy/host-agreement.ts";
import type { RequestRoute } from "../policy/request-rule.ts";
import type { Verdict } from "../policy/verdict.ts";

/** A body on its way: streaming (with its length when known), or held whole. */
export type Body =
  | null
  | {
      readonly kind: "stream";
      readonly stream: ReadableStream<Uint8Array>;
      readonly length: number | null;
    }
  | HeldBody;

export interface Exchange {
  readonly conn: number;
  readonly agent: string;
  /** The head as the agent sent it (what the audit log names). */
  readonly head: RequestHead;
  readonly destination: Destination;
  /** Method and canonical path, as request rules read them (allow rules, bindings). */
  readonly route: RequestRoute;
  /** The credentials this exchange is served with, start to end (a reload does not change them). */
  readonly secrets: SecretState;
  readonly trace: Trace;
  /** Aborted when the agent goes away. */
  readonly signal: AbortSignal;
  /** When the exchange began (performance.now()). */
  readonly started: number;
  /** Asks an agent that sent `Expect: 100-continue` for its body; call before reading it. */
  sendContinue(): Promise<void>;
  /** Keeps newer secrets this exchange redacts with alive until it is over (a reload). */
  holdSecrets(state: SecretState): void;
}

/** The request as it will be sent upstream. */
export interface Outbound {
  readonly method: string;
  /** origin-form. */
  readonly target: string;
  readonly headers: HeaderPairs;
  readonly body: Body;
  /** An aws-chunked body's framing, which `sign` may sign again before the body is read. */
  readonly awsChunked?: AwsChunkedBody;
  /** A WebSocket handshake (the upgrade stage allowed it). */
  readonly upgrade?: "websocket";
}

/** The answer as it will be sent to the agent. */
export interface Inbound {
  readonly status: number;
  readonly reason: string;
  readonly headers: HeaderPairs;
  readonly body: Body;
  /** After a 101 to a WebSocket handshake: the upstream connection, no longer HTTP. */
  readonly switched?: SwitchedConnection;
  /** permessage-deflate as negotiated on each leg (the upgrade stage's answer). */
  readonly deflate?: {
    readonly agent: DeflateTerms | null;
    readonly upstream: DeflateTerms | null;
  };
}

export type StageVerdict<T> = Verdict<T> | Promise<Verdict<T>>;

/**
 * One capability of the request path. Built once from configuration (a factory, like a Hono
 * middleware); `request` runs before the upstream is asked, in pipeline order, `response`
 * after, in reverse order. A stage that refuses after it took over a body releases it.
 */
export interface Stage {
  readonly name: string;
  request?(ex: Exchange, out: Outbound): StageVerdict<Outbound>;
  response?(ex: Exchange, res: Inbound): StageVerdict<Inbound>;
}

/** Where the exchange sends its request: the upstream leg (net/upstream). */
export interface Upstream {
  send(to: UpstreamTarget, req: OutgoingRequest, signal: AbortSignal): Promise<IncomingResponse>;
}

export interface UpstreamTarget {
  readonly host: string;
  readonly port: number;
  readonly tls: boolean;
  readonly isIp: boolean;
  /**
   * Who may share a kept-alive connection: only requests of one agent on one generation of
   * secrets. An upstream that reads a request boundary differently from the proxy then mixes
   * nothing of another agent's into it.
   */
  readonly partition: string;
  /** The agent it is for: it waits for a place to dial among its own (dial-gate.ts). */
  readonly agent: string;
}

/** Lets go of a body nobody will read: a stream is cancelled, held bytes released. */
export function discard(body: Body): void {
  if (body === null) return;
  if (body.kind === "held") body.release();
  else body.stream.cancel().catch(() => {});
}
