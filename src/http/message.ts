// The messages that cross between the proxy's parts, as values: a request as the agent leg
// received it, a request as the upstream leg will send it, a response as either leg receives or
// sends it. Heads are header pairs; a body is a stream (framed by the sending leg) or bytes the
// proxy holds whole (sent with a Content-Length, in one write with the head).

import type { Duplex } from "node:stream";
import type { RequestHead } from "./request-parser.ts";
import type { ResponseHead } from "./response-parser.ts";
import type { HeaderPairs } from "./serialize.ts";

export type MessageBody = ReadableStream<Uint8Array> | Uint8Array | null;

/** A request as the agent leg parsed it: the head and its body, streaming. */
export interface IncomingRequest {
  readonly head: RequestHead;
  /** null when the request has no body. */
  readonly body: ReadableStream<Uint8Array> | null;
  /** Resolves true once the body was received whole (false if it failed or was cut short). */
  readonly bodyDone: Promise<boolean>;
  /** Aborted when the agent's connection closes. */
  readonly signal: AbortSignal;
  /** Tells an agent that sent `Expect: 100-continue` to send its body (once; later calls do nothing). */
  sendContinue(): Promise<void>;
}

/** A request for the upstream leg: head fields without framing (the leg adds it). */
export interface OutgoingRequest {
  readonly method: string;
  /** origin-form target exactly as it will be sent. */
  readonly target: string;
  readonly headers: HeaderPairs;
  readonly body: MessageBody;
  /** Known body length (Content-Length) of a streamed body; null: chunked. */
  readonly bodyLength: number | null;
  /** Ask the upstream to switch to this protocol (the leg writes Connection and Upgrade). */
  readonly upgrade?: "websocket";
}

/** A connection that stopped being HTTP after a 101: its socket and the bytes read past it. */
export interface SwitchedConnection {
  readonly socket: Duplex;
  readonly leftover: Uint8Array;
  /**
   * The connection a tunnel's TLS runs over: writes wait for it too (the runtime's
   * TLS-over-a-stream layer does not honour its backpressure; see net/agent/session.ts).
   */
  readonly carrier?: Duplex;
}

/** A response as the upstream leg parsed it. */
export interface IncomingResponse {
  readonly head: ResponseHead;
  /** null for bodiless responses (HEAD, 1xx, 204, 304). */
  readonly body: ReadableStream<Uint8Array> | null;
  /** After a 101 to an upgrade request: the upstream connection, no longer HTTP. */
  readonly switched?: SwitchedConnection;
}

/**
 * A response for the agent leg: head fields without framing (the leg adds it). An answer to
 * HEAD, or a 1xx, 204 or 304, is sent without a body and with its fields as given.
 */
export interface OutgoingResponse {
  readonly status: number;
  readonly reason?: string;
  readonly headers: HeaderPairs;
  readonly body: MessageBody;
  /** Close the connection after this response. */
  readonly close?: boolean;
  /** Told once whether the response (head and body) was handed to the socket whole. */
  readonly settled?: (ok: boolean) => void;
  /**
   * A 101: once its head is written the agent leg stops serving HTTP and hands its connection
   * (and the bytes read past the request) here.
   */
  readonly takeOver?: (agent: SwitchedConnection) => void;
}
