// AWS's chunked upload signing (issue 16): a body sent with `x-amz-content-sha256:
// STREAMING-AWS4-HMAC-SHA256-PAYLOAD[-TRAILER]` carries one signature per chunk, each chained
// to the one before it, the first to the request's own signature:
//   chunk   = HMAC(key, "AWS4-HMAC-SHA256-PAYLOAD\n" when \n scope \n previous \n
//                        SHA-256("") \n SHA-256(chunk data))
//   trailer = HMAC(key, "AWS4-HMAC-SHA256-TRAILER\n" when \n scope \n previous \n
//                        SHA-256("name:value\n" for each trailing checksum))
// The proxy verifies the agent's chain with the dummy secret and computes the chain AWS
// checks with the real one. The signing keys stay in this object and are wiped with it.
// (An HMAC reveals nothing of its key: a real chain echoed back to the agent is no leak.)

import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { allow, refuse, type Verdict } from "../policy/verdict.ts";
import { type SigV4Scope, scopeOf, signingKey } from "./sigv4.ts";

/** The payload modes whose body is framed as aws-chunked, and how. */
export const STREAMING_MODES = {
  "STREAMING-AWS4-HMAC-SHA256-PAYLOAD": { signed: true, trailer: false },
  "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER": { signed: true, trailer: true },
  "STREAMING-UNSIGNED-PAYLOAD-TRAILER": { signed: false, trailer: true },
} as const;

export type StreamingMode = keyof typeof STREAMING_MODES;

export function streamingMode(value: string): StreamingMode | null {
  return Object.hasOwn(STREAMING_MODES, value) ? (value as StreamingMode) : null;
}

export const EMPTY_SHA256 = createHash("sha256").digest("hex");

const bad = (reason: string) => refuse("bad-signature" as const, reason);

/** One side's chain: each signature is computed from the one before. */
class Chain {
  #key: Buffer | null;
  #previous: string;
  constructor(
    secret: Uint8Array,
    private readonly scope: SigV4Scope,
    private readonly when: string,
    seed: string,
  ) {
    this.#key = signingKey(secret, scope);
    this.#previous = seed;
  }

  #sign(kind: "PAYLOAD" | "TRAILER", tail: string): string {
    if (!this.#key) throw new Error("chunk signer used after it was wiped");
    const text = `AWS4-HMAC-SHA256-${kind}\n${this.when}\n${scopeOf(this.scope)}\n${this.#previous}\n${tail}`;
    this.#previous = createHmac("sha256", this.#key).update(text).digest("hex");
    return this.#previous;
  }

  chunk(dataHash: string): string {
    return this.#sign("PAYLOAD", `${EMPTY_SHA256}\n${dataHash}`);
  }

  trailer(canonical: string): string {
    return this.#sign("TRAILER", createHash("sha256").update(canonical).digest("hex"));
  }

  wipe(): void {
    this.#key?.fill(0);
    this.#key = null;
  }
}

export interface ChunkSignerInput {
  readonly dummySecret: Uint8Array;
  readonly realSecret: Uint8Array;
  readonly scope: SigV4Scope;
  readonly when: string;
  /** The request's signature as the agent sent it, and as the proxy signed it again. */
  readonly seeds: { readonly agent: string; readonly real: string };
}

/**
 * A chunk-signed body's two chains: the agent's, verified with the dummy secret as its chunks
 * arrive (before anything reads them), and the real one, made as they leave. Each advances
 * in order; a signature that does not verify is refused (the body then never completes
 * upstream).
 */
export class ChunkResigner {
  readonly #dummy: Chain;
  readonly #real: Chain;

  constructor(input: ChunkSignerInput) {
    this.#dummy = new Chain(input.dummySecret, input.scope, input.when, input.seeds.agent);
    this.#real = new Chain(input.realSecret, input.scope, input.when, input.seeds.real);
  }

  #check(expected: string, sent: string, what: string): Verdict<null, "bad-signature"> {
    const ok =
      expected.length === sent.length && timingSafeEqual(Buffer.from(expected), Buffer.from(sent));
    return ok ? allow(null) : bad(`${what} is not signed with the agent's key`);
  }

  /** The agent's signature of the next chunk, whose data hashes to `dataHash`. */
  verifyChunk(dataHash: string, agentSignature: string): Verdict<null, "bad-signature"> {
    return this.#check(this.#dummy.chunk(dataHash), agentSignature, "a chunk of the body");
  }

  /** The real signature of the next chunk leaving. */
  signChunk(dataHash: string): string {
    return this.#real.chunk(dataHash);
  }

  /** The agent's trailer signature over `canonical` (each trailer `name:value\n`). */
  verifyTrailer(canonical: string, agentSignature: string): Verdict<null, "bad-signature"> {
    return this.#check(this.#dummy.trailer(canonical), agentSignature, "the body's trailer");
  }

  signTrailer(canonical: string): string {
    return this.#real.trailer(canonical);
  }

  wipe(): void {
    this.#dummy.wipe();
    this.#real.wipe();
  }
}
