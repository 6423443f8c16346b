// Stage: AWS Signature V4 (issue 16). A request to a host an AWS credential (`kind: "aws"`)
// is bound to must be signed with the agent's dummy keys — in its Authorization, or in its
// query (a presigned S3 URL): the signature is verified and the request signed again with the
// real keys over exactly what the agent signed, its session token swapped
// (credentials/sigv4.ts); a chunk-signed body has each chunk's signature verified and
// chained again (credentials/sigv4-chunked.ts) as it is framed again. Anything else to that
// host is refused — an unsigned request, a key the proxy does not know, a signature that does
// not verify — so no request reaches AWS half-signed. Runs after
// `outbound`, which has already checked the head and body for real values.

import { createHash } from "node:crypto";
import { HeldBody } from "../../body/held-body.ts";
import type { SigV4Pair } from "../../credentials/secret-state.ts";
import {
  headerValues,
  parseSigV4Authorization,
  readSigV4Query,
  resignSigV4,
  resignSigV4Query,
  type SigV4Head,
} from "../../credentials/sigv4.ts";
import { ChunkResigner } from "../../credentials/sigv4-chunked.ts";
import { allow, refuse } from "../../policy/verdict.ts";
import { discard, type Stage } from "../exchange.ts";

/**
 * Why a signature's region or service is not the credential's to sign for, or null (the
 * agent's text is not quoted: a reason is shown and logged).
 */
function beyond(pair: SigV4Pair, region: string, service: string): string | null {
  if (pair.regions && !pair.regions.includes(region)) {
    return "the credential does not sign for the signature's region";
  }
  if (pair.services && !pair.services.includes(service)) {
    return "the credential does not sign for the signature's service";
  }
  return null;
}

export function signAws(): Stage {
  return {
    name: "sign",
    request: function resign(ex, out) {
      const { target, scheme } = ex.destination;
      const no = (why: string) => refuse("bad-signature" as const, why);
      const keys =
        scheme === "https"
          ? ex.secrets.sigv4Keys(ex.agent, target.host, target.port, ex.route)
          : new Map<string, SigV4Pair>();
      // Chunk signatures the proxy cannot check would be 64 free hex digits per chunk.
      if (out.awsChunked?.signed && keys.size === 0) {
        return no(
          "a chunk-signed upload goes only to a host an AWS credential is bound to (over https)",
        );
      }
      if (keys.size === 0) return allow(out);
      const auth = headerValues(out.headers, "authorization");
      // A presigned URL: signed in its query, with no Authorization.
      if (auth.length === 0 && /[?&]X-Amz-Signature=/.test(out.target)) {
        if (out.awsChunked)
          return no("a streaming upload is signed in its Authorization, not its URL");
        const read = readSigV4Query(out.target);
        if (!read.ok) return no(read.reason);
        const pair = keys.get(read.value.auth.accessKeyId);
        if (!pair) return no("the signature's access key id is not one of the agent's dummy keys");
        const outside = beyond(pair, read.value.auth.region, read.value.auth.service);
        if (outside) return no(outside);
        const head = { method: out.method, target: out.target, headers: out.headers };
        const r = resignSigV4Query(head, pair.dummy, pair.real);
        if (!r.ok) return no(r.reason);
        ex.trace.swaps += 1;
        ex.trace.swapped.add(pair.name);
        return allow({ ...out, target: r.value.target });
      }
      if (auth.length !== 1) {
        return no("requests to this host must be signed (AWS Signature V4) with the agent's key");
      }
      const parsed = parseSigV4Authorization(auth[0]!);
      if (!parsed.ok) return no(parsed.reason);
      const pair = keys.get(parsed.value.accessKeyId);
      if (!pair) return no("the signature's access key id is not one of the agent's dummy keys");
      const outside = beyond(pair, parsed.value.region, parsed.value.service);
      if (outside) return no(outside);
      const payload = headerValues(out.headers, "x-amz-content-sha256")[0];
      const streaming = payload?.toUpperCase().startsWith("STREAMING-") ?? false;
      // outbound took the framing off to scan the payload; it is framed again here.
      if (streaming && !out.awsChunked) return no("a streaming upload needs its aws-chunked body");
      let bodyHash: string | undefined;
      if (payload === undefined) {
        if (out.body === null) bodyHash = createHash("sha256").digest("hex");
        else if (out.body instanceof HeldBody) {
          bodyHash = createHash("sha256").update(out.body.bytes).digest("hex");
        } else return no("a streamed body needs x-amz-content-sha256 to be signed");
      }
      // Content-Length is the upstream leg's to write (the body's length when it is known): a
      // signature over it (the JS SDK signs it) is checked against the length that will go.
      const length = out.body === null ? 0 : out.body.length;
      const signsLength = parsed.value.signedHeaders.includes("content-length");
      if (signsLength && length === null) {
        return no("a signed content-length needs a body of known length");
      }
      const headers0: SigV4Head["headers"] =
        signsLength && headerValues(out.headers, "content-length").length === 0
          ? [...out.headers, ["content-length", String(length)]]
          : out.headers;
      const head = { method: out.method, target: out.target, headers: headers0 };
      const r = resignSigV4(head, pair.dummy, pair.real, bodyHash);
      if (!r.ok) return no(r.reason);
      const headers = out.headers.map(([k, v]): readonly [string, string] => {
        const lower = k.toLowerCase();
        if (lower === "authorization") return [k, r.value.authorization];
        if (lower === "x-amz-security-token" && r.value.sessionToken)
          return [k, r.value.sessionToken];
        return [k, v];
      });
      if (out.awsChunked?.signed) {
        const bad = out.awsChunked.resignWith(
          new ChunkResigner({
            dummySecret: pair.dummy.secretAccessKey,
            realSecret: pair.real.secretAccessKey,
            scope: r.value.auth,
            when: r.value.when,
            seeds: r.value.seeds,
          }),
        );
        if (bad) {
          discard(out.body);
          return refuse("bad-signature", bad.reason);
        }
      }
      ex.trace.swaps += 1;
      ex.trace.swapped.add(pair.name);
      return allow({ ...out, headers });
    },
  };
}
