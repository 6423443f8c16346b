// End-to-end: a 256 MiB chunk-signed S3 upload (STREAMING-AWS4-HMAC-SHA256-PAYLOAD, 64 KiB
// chunks) through the real proxy process, curl as the agent. The agent's body is signed along
// the dummy key's chain; the upstream must receive the same framing with every chunk signature
// on the real key's chain (computed here, the seed by the AWS SDK's signer), byte-exact by
// SHA-256 — the test never holds the body — while the proxy's RSS stays bounded (it holds one
// chunk at a time to sign it).

import { afterAll, beforeAll, expect, test } from "bun:test";
import { createHash, createHmac } from "node:crypto";
import { Sha256 } from "@aws-crypto/sha256-js";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { curlTransfer } from "../support/curl-transfer.ts";
import {
  type ProxyProcess,
  startProxyProcess,
  streamingRssBound,
} from "../support/proxy-process.ts";
import { generateChunks } from "../support/stream-source.ts";
import {
  type StreamUpstream,
  startStreamUpstream,
  type UploadReport,
} from "../support/stream-upstream.ts";

const KEYS = {
  accessKeyId: { dummy: "AKIADUMMYSTREAM00001", real: "AKIAR3ALSTREAMKEY9ZZ" },
  secretAccessKey: {
    dummy: "dummy/stream/secret/000000000000000000001",
    real: "R3alStreamSecret/K7MDENG+bPxRfiCY9876543",
  },
};
const SIZE = 256 * 1024 * 1024;
const CHUNK = 64 * 1024;
const MODE = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD";

let proxy: ProxyProcess;
let up: StreamUpstream;

beforeAll(async () => {
  proxy = await startProxyProcess({
    credentials: [{ name: "s3", kind: "aws", ...KEYS, hosts: ["localhost:*"], services: ["s3"] }],
  });
  up = startStreamUpstream({ cert: await proxy.upstreamCa.issue(["localhost", "127.0.0.1"]) });
});

afterAll(async () => {
  await up?.stop();
  await proxy?.close();
});

/** The request head signed by the AWS SDK with `side`'s keys: its headers and signature. */
async function head(side: "dummy" | "real", when: Date) {
  const signer = new SignatureV4({
    credentials: {
      accessKeyId: KEYS.accessKeyId[side],
      secretAccessKey: KEYS.secretAccessKey[side],
    },
    region: "eu-west-3",
    service: "s3",
    sha256: Sha256,
    uriEscapePath: false,
  });
  const chunks = Math.ceil(SIZE / CHUNK);
  const framed =
    chunks * (CHUNK.toString(16).length + 17 + 64 + 2 + 2) + SIZE + (1 + 17 + 64 + 2) + 2;
  const signed = await signer.sign(
    new HttpRequest({
      method: "PUT",
      protocol: "https:",
      hostname: "localhost",
      port: up.port,
      path: "/upload",
      headers: {
        host: `localhost:${up.port}`,
        "x-amz-content-sha256": MODE,
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": String(SIZE),
        "content-length": String(framed),
      },
    }),
    { signingDate: when },
  );
  const seed = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization))![1]!;
  return { headers: signed.headers, seed, framed };
}

/** Signing key of the S3 docs' derivation, for one side. */
function signingKey(secret: string, date: string): Buffer {
  let k = createHmac("sha256", `AWS4${secret}`).update(date).digest();
  for (const part of ["eu-west-3", "s3", "aws4_request"]) {
    k = createHmac("sha256", k).update(part).digest();
  }
  return k;
}

/** The body framed along one side's chain; the other side's framing hashed as it goes. */
function* framedBody(
  when: string,
  seeds: { dummy: string; real: string },
  expected: Bun.CryptoHasher,
): Generator<Uint8Array> {
  const scope = `${when.slice(0, 8)}/eu-west-3/s3/aws4_request`;
  const keys = {
    dummy: signingKey(KEYS.secretAccessKey.dummy, when.slice(0, 8)),
    real: signingKey(KEYS.secretAccessKey.real, when.slice(0, 8)),
  };
  const previous = { ...seeds };
  const empty = createHash("sha256").digest("hex");
  const enc = new TextEncoder();
  const sign = (side: "dummy" | "real", data: Uint8Array) => {
    const hash = createHash("sha256").update(data).digest("hex");
    previous[side] = createHmac("sha256", keys[side])
      .update(`AWS4-HMAC-SHA256-PAYLOAD\n${when}\n${scope}\n${previous[side]}\n${empty}\n${hash}`)
      .digest("hex");
    return previous[side];
  };
  const frame = (data: Uint8Array, sig: string) =>
    enc.encode(`${data.length.toString(16)};chunk-signature=${sig}\r\n`);
  for (const data of chunksThenEnd()) {
    const agent = frame(data, sign("dummy", data));
    expected.update(frame(data, sign("real", data)));
    expected.update(data);
    const tail = data.length > 0 ? enc.encode("\r\n") : new Uint8Array(0);
    expected.update(tail);
    yield agent;
    if (data.length > 0) {
      yield data;
      yield tail;
    }
  }
  expected.update("\r\n");
  yield enc.encode("\r\n");
}

/** The payload's chunks, generated as they are sent, then the empty last chunk. */
function* chunksThenEnd(): Generator<Uint8Array> {
  yield* generateChunks({ totalBytes: SIZE, chunkBytes: CHUNK });
  yield new Uint8Array(0);
}

test("256 MiB chunk-signed upload: every chunk re-signed on the real chain, byte-exact, RSS bounded", async () => {
  const when = new Date();
  const amz = when
    .toISOString()
    .replace(/[-:]/g, "")
    .replace(/\.\d{3}/, "");
  const agent = await head("dummy", when);
  const real = await head("real", when);
  const expected = new Bun.CryptoHasher("sha256");
  const r = await curlTransfer(
    proxy,
    [
      "-T",
      "-",
      "-H",
      "Transfer-Encoding:",
      ...Object.entries(agent.headers)
        .filter(([k]) => k !== "host")
        .flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
      `https://localhost:${up.port}/upload`,
    ],
    framedBody(amz, { dummy: agent.seed, real: real.seed }, expected),
    120,
  );
  expect({ exit: r.exit, stderr: r.stderr }).toEqual({ exit: 0, stderr: "" });
  const report = JSON.parse(r.text) as UploadReport;
  expect(report).toEqual({
    bytes: agent.framed,
    sha256: expected.digest("hex"),
    contentLength: String(agent.framed),
    transferEncoding: null,
  });
  expect(r.peakRss).toBeLessThan(streamingRssBound(proxy.loops));
  const line = proxy.auditLines.map((l) => JSON.parse(l)).find((l) => l.evt === "request");
  expect([line?.method, line?.status, line?.decision]).toEqual(["PUT", 200, "allow"]);
}, 150_000);
