// The cost of AWS signing in the proxy (issue 16): verifying an agent's SigV4 signature and
// signing the request again (src/credentials/sigv4.ts `resignSigV4`), against the same run's
// cost of the AWS SDK signing that request once (what the client itself spends) — the proxy
// does that work twice (verify, sign). A typical S3 PUT head: 8 fields, a session token.
// Run: `bun bench/sigv4.bench.ts`.

import { createHash, createHmac } from "node:crypto";
import { Sha256 } from "@aws-crypto/sha256-js";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { bench, group, run } from "mitata";
import { AwsChunkedBody } from "../src/body/aws-chunked.ts";
import { resignSigV4, signingKey } from "../src/credentials/sigv4.ts";
import { ChunkResigner, EMPTY_SHA256 } from "../src/credentials/sigv4-chunked.ts";

const enc = new TextEncoder();
const dummy = {
  accessKeyId: "AKIADUMMY00000000001",
  secretAccessKey: "dummy/secret/000000000000000000000000001",
  sessionToken: "dummy-token-00000000000000001",
};
const real = {
  accessKeyId: "AKIABENCHREAL0000009",
  secretAccessKey: "bench/real/secret/99999999999999999999999",
  sessionToken: "real-token-9999999999999999999",
};
const signer = (k: typeof dummy) =>
  new SignatureV4({
    credentials: k,
    region: "eu-west-3",
    service: "s3",
    sha256: Sha256,
    uriEscapePath: false,
    applyChecksum: false,
  });
const request = () =>
  new HttpRequest({
    method: "PUT",
    protocol: "https:",
    hostname: "bucket.s3.eu-west-3.amazonaws.com",
    path: "/reports/2026/12/summary.json",
    query: { "x-id": "PutObject" },
    headers: {
      host: "bucket.s3.eu-west-3.amazonaws.com",
      "content-type": "application/json",
      "content-length": "1024",
      "x-amz-content-sha256": "UNSIGNED-PAYLOAD",
      "x-amz-meta-owner": "agent-a",
      "user-agent": "aws-sdk-js/3",
    },
  });
const when = new Date("2026-12-05T04:00:00Z");
const signed = await signer(dummy).sign(request(), { signingDate: when });
const head = {
  method: "PUT",
  target: "/reports/2026/12/summary.json?x-id=PutObject",
  headers: Object.entries(signed.headers) as [string, string][],
};
const dummyKeys = { ...dummy, secretAccessKey: enc.encode(dummy.secretAccessKey) };
const realKeys = { ...real, secretAccessKey: enc.encode(real.secretAccessKey) };
if (!resignSigV4(head, dummyKeys, realKeys).ok)
  throw new Error("the bench request does not verify");

const sdk = signer(dummy);
group("one S3 PUT head", () => {
  bench(
    "baseline: the AWS SDK signs it once",
    async () => await sdk.sign(request(), { signingDate: when }),
  );
  bench("proxy: verify with the dummy key, sign again with the real one", () =>
    resignSigV4(head, dummyKeys, realKeys),
  );
});
// A streaming upload: 16 MiB in 64 KiB chunks, chunk-signed (STREAMING-AWS4-HMAC-SHA256-
// PAYLOAD). The proxy takes the framing off, and frames it again with each chunk's signature
// verified and made again; baselines: the same framing off and on with no signing, and the
// SHA-256 of the payload (what any chunk signer must at least do).
const MiB = 1024 * 1024;
const payload = new Uint8Array(16 * MiB).map((_, i) => (i * 31) & 0xff);
const CHUNK = 64 * 1024;
const scope = { date: "20261205", region: "eu-west-3", service: "s3" };
const WHEN = "20261205T040000Z";
const seedSig = "5".repeat(64);
const parts: Uint8Array[] = [];
for (let at = 0; at < payload.length; at += CHUNK) parts.push(payload.subarray(at, at + CHUNK));
// The agent's body: its chain made with the dummy key, as an SDK would.
const framedBody = (() => {
  const out: Uint8Array[] = [];
  let previous = seedSig;
  const key = signingKey(dummyKeys.secretAccessKey, scope);
  for (const c of [...parts, new Uint8Array(0)]) {
    const hash = createHash("sha256").update(c).digest("hex");
    previous = createHmac("sha256", key)
      .update(
        `AWS4-HMAC-SHA256-PAYLOAD\n${WHEN}\n${scope.date}/${scope.region}/${scope.service}/aws4_request\n${previous}\n${EMPTY_SHA256}\n${hash}`,
      )
      .digest("hex");
    out.push(enc.encode(`${c.length.toString(16)};chunk-signature=${previous}\r\n`), c);
    if (c.length > 0) out.push(enc.encode("\r\n"));
  }
  out.push(enc.encode("\r\n"));
  return Buffer.concat(out);
})();
const options = {
  mode: "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" as const,
  decodedLength: payload.length,
  trailers: [],
};
async function reframe(resign: boolean): Promise<number> {
  const body = new AwsChunkedBody(options, (e) => {
    throw e;
  });
  if (resign) {
    body.resignWith(
      new ChunkResigner({
        dummySecret: dummyKeys.secretAccessKey,
        realSecret: realKeys.secretAccessKey,
        scope,
        when: WHEN,
        seeds: { agent: seedSig, real: "6".repeat(64) },
      }),
    );
  }
  const input = new ReadableStream<Uint8Array>({
    start(c) {
      for (let at = 0; at < framedBody.length; at += CHUNK)
        c.enqueue(framedBody.subarray(at, at + CHUNK));
      c.close();
    },
  });
  let n = 0;
  for await (const piece of body.frame(body.decode(input))) n += piece.length;
  if (n !== framedBody.length) throw new Error("reframed length differs");
  return n;
}
await reframe(true);

group("a 16 MiB chunk-signed upload (64 KiB chunks)", () => {
  bench("baseline: SHA-256 of the payload", () => createHash("sha256").update(payload).digest());
  bench("baseline: framing taken off and put back, no signing", async () => await reframe(false));
  bench(
    "proxy: framing off, each chunk verified and signed again",
    async () => await reframe(true),
  );
});

await run();
