// The cost of AWS signing in the proxy (issue 16): verifying an agent's SigV4 signature and
// signing the request again (src/credentials/sigv4.ts `resignSigV4`), against the same run's
// cost of the AWS SDK signing that request once (what the client itself spends) — the proxy
// does that work twice (verify, sign). A typical S3 PUT head: 8 fields, a session token.
// Run: `bun bench/sigv4.bench.ts`.

import { Sha256 } from "@aws-crypto/sha256-js";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { bench, group, run } from "mitata";
import { resignSigV4 } from "../src/credentials/sigv4.ts";

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
await run();
