// The chunk signature chain against the worked example in the S3 docs ("Signature
// Calculations for the Authorization Header: Transferring Payload in Multiple Chunks",
// Example: PUT Object): its seed, its three chunk signatures, reproduced with the example's
// keys; and the resigner's refusal of a chain the dummy key did not make.

import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import { canonicalRequest, parseSigV4Authorization, sigV4Signature } from "./sigv4.ts";
import { ChunkResigner, EMPTY_SHA256, streamingMode } from "./sigv4-chunked.ts";

const SECRET = new TextEncoder().encode("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY");
const OTHER = new TextEncoder().encode("another/secret/entirely/0000000000000000");
const WHEN = "20130524T000000Z";
const SIGNED =
  "content-encoding;content-length;host;x-amz-content-sha256;x-amz-date;x-amz-decoded-content-length;x-amz-storage-class";
const auth = parseSigV4Authorization(
  `AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, SignedHeaders=${SIGNED}, Signature=${"0".repeat(64)}`,
);
const head = {
  method: "PUT",
  target: "/examplebucket/chunkObject.txt",
  headers: [
    ["Host", "s3.amazonaws.com"],
    ["x-amz-date", WHEN],
    ["x-amz-storage-class", "REDUCED_REDUNDANCY"],
    ["Content-Encoding", "aws-chunked"],
    ["x-amz-decoded-content-length", "66560"],
    ["Content-Length", "66824"],
    ["x-amz-content-sha256", "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"],
  ] as [string, string][],
};
const SEED = "4f232c4386841ef735655705268965c44a0e4690baa4adea153f7db9fa80a0a9";
const CHAIN = [
  [65536, "ad80c730a21e5b8d04586a2213dd63b9a0e99e0e2307b0ade35a65485a288648"],
  [1024, "0055627c9e194cb4542bae2aa5492e3c1575bbb81b612b7d234b86a503ef5497"],
  [0, "b6c6ea8a5354eaf15b3cb7646744f4275b71ea724fed81ceb9323e279d449df9"],
] as const;
const dataHash = (n: number) => createHash("sha256").update("a".repeat(n)).digest("hex");

describe("the S3 docs' chunked upload example", () => {
  test("the seed signature", () => {
    if (!auth.ok) throw new Error(auth.reason);
    const c = canonicalRequest(head, auth.value, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
    if (!c.ok) throw new Error(c.reason);
    expect(sigV4Signature(SECRET, auth.value, WHEN, c.value)).toBe(SEED);
  });

  test("each chunk's signature, chained from the seed (the agent's verified, the real one given)", () => {
    if (!auth.ok) throw new Error(auth.reason);
    // The same key on both sides: the real chain must then equal the agent's.
    const r = new ChunkResigner({
      dummySecret: SECRET,
      realSecret: SECRET,
      scope: auth.value,
      when: WHEN,
      seeds: { agent: SEED, real: SEED },
    });
    for (const [size, sig] of CHAIN) {
      const hash = size === 0 ? EMPTY_SHA256 : dataHash(size);
      expect(r.verifyChunk(hash, sig).ok).toBe(true);
      expect(r.signChunk(hash)).toBe(sig);
    }
    r.wipe();
    expect(() => r.signChunk(EMPTY_SHA256)).toThrow("wiped");
  });

  test("a chain made with another key, or out of order, is refused; the real chain differs", () => {
    if (!auth.ok) throw new Error(auth.reason);
    const make = () =>
      new ChunkResigner({
        dummySecret: SECRET,
        realSecret: OTHER,
        scope: auth.value,
        when: WHEN,
        seeds: { agent: SEED, real: "1".repeat(64) },
      });
    const r = make();
    expect(r.verifyChunk(dataHash(65536), CHAIN[0][1]).ok).toBe(true);
    expect(r.signChunk(dataHash(65536))).not.toBe(CHAIN[0][1]);
    // The second chunk's signature in the first's place.
    expect(make().verifyChunk(dataHash(65536), CHAIN[1][1])).toMatchObject({
      ok: false,
      code: "bad-signature",
    });
    // The right signature over other data.
    expect(make().verifyChunk(dataHash(65535), CHAIN[0][1]).ok).toBe(false);
  });
});

test("payload modes are read exactly as AWS spells them", () => {
  expect(streamingMode("STREAMING-UNSIGNED-PAYLOAD-TRAILER")).toBe(
    "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
  );
  expect(streamingMode("streaming-unsigned-payload-trailer")).toBeNull();
  expect(streamingMode("STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD")).toBeNull();
  expect(streamingMode("toString")).toBeNull();
});
