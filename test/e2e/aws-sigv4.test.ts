// AWS through the proxy with dummy keys (issue 16, item 1): the AWS CLI, boto3 and curl's
// SigV4 sign with the agent's dummy keys; the proxy verifies each signature and signs again
// with the real keys. The upstream is an S3-style store that verifies every signature with the
// real keys using the AWS SDK's own signer, so a request it accepts is one AWS would accept.
// The agent side — every byte the clients printed or wrote — holds no real key. Clients that
// cannot present a certificate to an HTTPS proxy go through the agent container's forwarder
// (socat, docker/agent/…/proxy-forwarder/run), as in production.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { Sha256 } from "@aws-crypto/sha256-js";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { missingTools } from "../containers/tool-paths.ts";
import { type Forwarder, startForwarder } from "../support/agent-forwarder.ts";
import { carries } from "../support/hostile-oracle.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import {
  checksum,
  chunkStringToSign,
  hex,
  type S3Upstream,
  startS3Upstream,
} from "../support/s3-upstream.ts";

const KEYS = {
  accessKeyId: { dummy: "AKIADUMMY00000000001", real: "AKIAR3ALKEY7Q2W9X4ZB" },
  secretAccessKey: {
    dummy: "dummy/secret/00000000000000000000000000001",
    real: "wJalrXUtnFEMI/K7MDENG+bPxRfiCYR3ALSECRET9",
  },
  sessionToken: {
    dummy: "dummy-session-token-0000000000000000000001",
    real: "FwoGZXIvYXdzEJr//////////R3ALT0KEN+sessionq9",
  },
};
const REALS = [KEYS.accessKeyId.real, KEYS.secretAccessKey.real, KEYS.sessionToken.real];
const REPO = resolve(import.meta.dir, "../..");

let h: Harness;
let s3: S3Upstream;
let fwd: Forwarder | undefined;
let fwdPort = 0;
let home = "";

beforeAll(async () => {
  h = await startHarness({
    credentials: [
      {
        name: "aws",
        kind: "aws",
        ...KEYS,
        hosts: ["s3.test:*"],
        regions: ["eu-west-3"],
        services: ["s3"],
      },
    ],
    allow: ["s3.test:*", "plain.test:*"],
    names: ["s3.test", "plain.test"],
  });
  s3 = startS3Upstream(await h.upstreamCa.issue(["s3.test"]), {
    accessKeyId: KEYS.accessKeyId.real,
    secretAccessKey: KEYS.secretAccessKey.real,
    sessionToken: KEYS.sessionToken.real,
  });
  home = join(h.dir, "agent-home");
  mkdirSync(home, { recursive: true });
  writeFileSync(join(home, "aws-config"), "[default]\ns3 =\n    addressing_style = path\n");
  fwd = await startForwarder(h, home);
  fwdPort = fwd.port;
});

afterAll(async () => {
  fwd?.stop();
  await s3?.stop();
  await h?.close();
});

/** The agent's environment for AWS clients: dummy keys, the forwarder, the proxy's CA. */
const agentEnv = () => ({
  PATH: process.env.PATH ?? "/usr/bin:/bin",
  HOME: home,
  AWS_ACCESS_KEY_ID: KEYS.accessKeyId.dummy,
  AWS_SECRET_ACCESS_KEY: KEYS.secretAccessKey.dummy,
  AWS_SESSION_TOKEN: KEYS.sessionToken.dummy,
  AWS_DEFAULT_REGION: "eu-west-3",
  AWS_CONFIG_FILE: join(home, "aws-config"),
  AWS_SHARED_CREDENTIALS_FILE: join(home, "no-credentials"),
  AWS_CA_BUNDLE: h.caBundlePath,
  HTTPS_PROXY: `http://127.0.0.1:${fwdPort}`,
});

async function run(cmd: string[]): Promise<{ code: number; out: string; err: string }> {
  await using p = Bun.spawn(cmd, { env: agentEnv(), stdout: "pipe", stderr: "pipe", cwd: home });
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, out, err };
}

const noReal = (text: string | Buffer) => {
  for (const r of REALS) expect(carries(text, r)).toBe(false);
};

// The clients come from scripts/install-test-deps.sh (awscli, python3-boto3): a test is
// skipped, with a warning, only on a machine without them; under CI a missing one fails.
const haveAws = missingTools(["aws"]).length === 0;
const haveBoto = (() => {
  if (Bun.spawnSync(["python3", "-c", "import boto3"]).exitCode === 0) return true;
  if (process.env.CI) throw new Error("missing python3-boto3 in CI (scripts/install-test-deps.sh)");
  console.warn("SKIP: python3 cannot import boto3 (run scripts/install-test-deps.sh)");
  return false;
})();

describe("the AWS CLI with dummy keys", () => {
  test.skipIf(!haveAws)(
    "put-object, list-objects-v2, get-object: signed again, accepted by a verifying store",
    async () => {
      const endpoint = `https://s3.test:${s3.port}`;
      const file = join(home, "hello.txt");
      writeFileSync(file, "hello from the agent\n");
      const before = s3.requests.length;
      const put = await run([
        "aws",
        "--endpoint-url",
        endpoint,
        "s3api",
        "put-object",
        "--bucket",
        "b",
        "--key",
        "dir/hello.txt",
        "--body",
        file,
      ]);
      expect([put.code, carries(put.err, KEYS.secretAccessKey.real)]).toEqual([0, false]);
      const list = await run([
        "aws",
        "--endpoint-url",
        endpoint,
        "s3api",
        "list-objects-v2",
        "--bucket",
        "b",
        "--prefix",
        "dir/",
      ]);
      expect(list.code).toBe(0);
      expect(JSON.parse(list.out).Contents[0].Key).toBe("dir/hello.txt");
      const got = await run([
        "aws",
        "--endpoint-url",
        endpoint,
        "s3api",
        "get-object",
        "--bucket",
        "b",
        "--key",
        "dir/hello.txt",
        join(home, "out.txt"),
      ]);
      expect(got.code).toBe(0);
      expect(readFileSync(join(home, "out.txt"), "utf8")).toBe("hello from the agent\n");
      // Every request reached the store signed with the real key and the real session token.
      const mine = s3.requests.slice(before);
      expect(mine.length).toBeGreaterThanOrEqual(3);
      expect(mine.every((r) => r.verified)).toBe(true);
      // The CLI's default since its flexible checksums: an aws-chunked body, CRC32 trailing.
      expect(mine.find((r) => r.method === "PUT")?.payloadMode).toBe(
        "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
      );
      expect(
        mine.every((r) =>
          r.headers.some(([k, v]) => k === "x-amz-security-token" && v === KEYS.sessionToken.real),
        ),
      ).toBe(true);
      for (const r of [put, list, got]) {
        noReal(r.out);
        noReal(r.err);
      }
    },
  );
});

/** curl as the agent: PUT `file` to `url` with the signed headers (no Content-Type of its own). */
const putFile = (headers: Record<string, string>, file: string, url: string) =>
  h.curl([
    "-X",
    "PUT",
    ...Object.entries(headers)
      .filter(([k]) => k !== "host")
      .flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
    "-H",
    "content-type:",
    "--data-binary",
    `@${file}`,
    url,
  ]);

/** The AWS SDK's signer with the agent's dummy keys, as an S3 client makes it. */
const agentSigner = () =>
  new SignatureV4({
    credentials: {
      accessKeyId: KEYS.accessKeyId.dummy,
      secretAccessKey: KEYS.secretAccessKey.dummy,
      sessionToken: KEYS.sessionToken.dummy,
    },
    region: "eu-west-3",
    service: "s3",
    sha256: Sha256,
    uriEscapePath: false,
  });

describe("streaming uploads (aws-chunked)", () => {
  const pattern = (n: number) =>
    Buffer.from(Array.from({ length: n }, (_, i) => (i * 7 + (i >> 11)) & 0xff));

  test.skipIf(!haveAws)(
    "aws s3 cp of 20 MiB: a multipart upload, each part aws-chunked with a CRC32 trailer, stored and read back whole",
    async () => {
      const endpoint = `https://s3.test:${s3.port}`;
      const data = pattern(20 * 1024 * 1024);
      writeFileSync(join(home, "big.bin"), data);
      const before = s3.requests.length;
      const up = await run([
        "aws",
        "--endpoint-url",
        endpoint,
        "s3",
        "cp",
        "big.bin",
        "s3://b/cli/big.bin",
      ]);
      expect(up.code).toBe(0);
      const down = await run([
        "aws",
        "--endpoint-url",
        endpoint,
        "s3",
        "cp",
        "s3://b/cli/big.bin",
        "back.bin",
      ]);
      expect([down.code, down.err]).toEqual([0, ""]);
      expect(Buffer.from(s3.objects.get("b/cli/big.bin")!).equals(data)).toBe(true);
      expect(readFileSync(join(home, "back.bin")).equals(data)).toBe(true);
      const mine = s3.requests.slice(before);
      const parts = mine.filter((r) => r.method === "PUT" && r.target.includes("partNumber="));
      expect(parts.length).toBeGreaterThanOrEqual(2);
      expect(parts.every((r) => r.payloadMode === "STREAMING-UNSIGNED-PAYLOAD-TRAILER")).toBe(true);
      expect(mine.every((r) => r.verified)).toBe(true);
      for (const r of [up, down]) {
        noReal(r.out);
        noReal(r.err);
      }
    },
    60_000,
  );

  test("the AWS SDK for JavaScript v3 (Node): put, a streamed put, a multipart Upload, list, get", async () => {
    const before = s3.requests.length;
    await using p = Bun.spawn(
      [
        "node",
        join(REPO, "test/fixtures/aws-js-sdk-client.mjs"),
        `https://s3.test:${s3.port}`,
        String(12 * 1024 * 1024),
      ],
      {
        env: { ...agentEnv(), NODE_EXTRA_CA_CERTS: h.caBundlePath },
        stdout: "pipe",
        stderr: "pipe",
        cwd: home,
      },
    );
    const [out, err, code] = await Promise.all([
      new Response(p.stdout).text(),
      new Response(p.stderr).text(),
      p.exited,
    ]);
    noReal(out);
    noReal(err);
    expect({ code, err: code === 0 ? "" : err.slice(0, 2000) }).toEqual({ code: 0, err: "" });
    expect(JSON.parse(out)).toEqual({
      keys: ["js/big.bin", "js/small.txt", "js/streamed.bin"],
      streamedBack: true,
    });
    expect(s3.objects.get("b/js/big.bin")?.length).toBe(12 * 1024 * 1024);
    const mine = s3.requests.slice(before);
    expect(mine.every((r) => r.verified)).toBe(true);
    const streamed = mine.find((r) => r.method === "PUT" && r.target.includes("/js/streamed.bin?"));
    expect(streamed?.payloadMode).toBe("STREAMING-UNSIGNED-PAYLOAD-TRAILER");
  }, 60_000);

  /**
   * A chunk-signed upload as the S3 docs specify it (no installable client sends one; the
   * Java SDK does): the seed signed by the SDK's signer with the dummy keys, each chunk's
   * signature chained from it, 64 KiB chunks. `tamper` changes one chunk signature.
   */
  async function chunkSigned(
    key: string,
    payload: Buffer,
    mode: "STREAMING-AWS4-HMAC-SHA256-PAYLOAD" | "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
    tamper = -1,
  ) {
    const when = new Date();
    const amz = when
      .toISOString()
      .replace(/[-:]/g, "")
      .replace(/\.\d{3}/, "");
    const trailer = mode.endsWith("-TRAILER");
    const signer = agentSigner();
    const headers: Record<string, string> = {
      host: `s3.test:${s3.port}`,
      "x-amz-content-sha256": mode,
      "content-encoding": "aws-chunked",
      "x-amz-decoded-content-length": String(payload.length),
      ...(trailer ? { "x-amz-trailer": "x-amz-checksum-crc32" } : {}),
    };
    const signed = await signer.sign(
      new HttpRequest({
        method: "PUT",
        protocol: "https:",
        hostname: "s3.test",
        port: s3.port,
        path: `/b/${key}`,
        headers,
      }),
      { signingDate: when },
    );
    const seed = /Signature=([0-9a-f]{64})/.exec(String(signed.headers.authorization))![1]!;
    const scope = `${amz.slice(0, 8)}/eu-west-3/s3/aws4_request`;
    const sign = (t: string) =>
      signer.sign(t, { signingDate: when, signingRegion: "eu-west-3", signingService: "s3" });
    let previous = seed;
    const out: Buffer[] = [];
    const chunks: Buffer[] = [];
    for (let i = 0; i < payload.length; i += 64 * 1024)
      chunks.push(payload.subarray(i, i + 64 * 1024));
    chunks.push(Buffer.alloc(0));
    for (const [n, c] of chunks.entries()) {
      let sig = await sign(
        chunkStringToSign("PAYLOAD", amz, scope, previous, `${hex("")}\n${hex(c)}`),
      );
      previous = sig;
      if (n === tamper) sig = sig.replace(/^./, (x) => (x === "0" ? "1" : "0"));
      out.push(Buffer.from(`${c.length.toString(16)};chunk-signature=${sig}\r\n`), c);
      if (c.length > 0) out.push(Buffer.from("\r\n"));
    }
    if (trailer) {
      const line = `x-amz-checksum-crc32:${checksum("x-amz-checksum-crc32", payload)}`;
      const ts = await sign(chunkStringToSign("TRAILER", amz, scope, previous, hex(`${line}\n`)));
      out.push(Buffer.from(`${line}\r\nx-amz-trailer-signature:${ts}\r\n`));
    }
    out.push(Buffer.from("\r\n"));
    const file = join(home, `${key.replace(/\//g, "_")}.framed`);
    writeFileSync(file, Buffer.concat(out));
    return putFile(signed.headers, file, `https://s3.test:${s3.port}/b/${key}`);
  }

  for (const mode of [
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
    "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER",
  ] as const) {
    test(`${mode}: every chunk signature verified with the dummy chain and chained again with the real key`, async () => {
      const payload = pattern(200_000);
      const key = `chunked/${mode.toLowerCase()}.bin`;
      const before = s3.requests.length;
      const r = await chunkSigned(key, payload, mode);
      expect(r.status).toBe(200);
      const seen = s3.requests.slice(before);
      expect(seen.map((x) => [x.payloadMode, x.verified])).toEqual([[mode, true]]);
      expect(Buffer.from(s3.objects.get(`b/${key}`)!).equals(payload)).toBe(true);
      noReal(r.body);
      noReal(r.headers);
    });
  }

  test("a chunk whose signature is not the dummy chain's fails the upload: nothing is stored", async () => {
    const key = "chunked/tampered.bin";
    const r = await chunkSigned(key, pattern(200_000), "STREAMING-AWS4-HMAC-SHA256-PAYLOAD", 2);
    expect(r.status).not.toBe(200);
    expect(s3.objects.has(`b/${key}`)).toBe(false);
    expect(s3.requests.filter((x) => x.target.includes("tampered") && x.verified)).toEqual([]);
  });

  // Held whole (small) and streamed (over the inline limit): either way DLP, not the chain,
  // decides — a chain check that failed first would answer a right guess differently.
  for (const size of [200_000, 300_000]) {
    test(`a real value split across two chunks of a ${size}-byte upload is found (DLP reads the payload): dlp-blocked, nothing stored`, async () => {
      const key = `chunked/leak-${size}.bin`;
      const payload = pattern(size);
      const secret = Buffer.from(KEYS.secretAccessKey.real);
      secret.copy(payload, 64 * 1024 - 10);
      const r = await chunkSigned(key, payload, "STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
      expect(r.status).toBe(403);
      expect(r.headers).toContain("x-slapenir-error: dlp-blocked");
      expect(s3.objects.has(`b/${key}`)).toBe(false);
    });
  }

  /** A request signed by the SDK with the dummy keys (in its headers, or presigned). */
  async function sendSigned(
    url: string,
    headers: Record<string, string>,
    body: string,
    how: "headers" | "query" = "headers",
  ) {
    const u = new URL(url);
    const signer = agentSigner();
    const req = new HttpRequest({
      method: "PUT",
      protocol: "https:",
      hostname: u.hostname,
      port: Number(u.port),
      path: u.pathname,
      headers: { host: u.host, ...headers },
    });
    const file = join(home, "framed-body");
    writeFileSync(file, body);
    if (how === "query") {
      const p = await signer.presign(req, { expiresIn: 300 });
      const q = new URLSearchParams(p.query as Record<string, string>).toString();
      return h.curl([
        "-X",
        "PUT",
        ...Object.entries(headers).flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
        "-H",
        "content-type:",
        "--data-binary",
        `@${file}`,
        `${url}?${q}`,
      ]);
    }
    const signed = await signer.sign(req);
    return putFile(signed.headers, file, url);
  }

  const TRAILER_HEADERS = {
    "x-amz-content-sha256": "STREAMING-UNSIGNED-PAYLOAD-TRAILER",
    "content-encoding": "aws-chunked",
    "x-amz-decoded-content-length": "5",
    "x-amz-trailer": "x-amz-checksum-crc32",
  };

  test("a trailing checksum that is not the payload's (free text: here a real key) is refused before the store", async () => {
    const before = s3.requests.length;
    const r = await sendSigned(
      `https://s3.test:${s3.port}/b/chunked/trailer.bin`,
      TRAILER_HEADERS,
      `5\r\nhello\r\n0\r\nx-amz-checksum-crc32:${KEYS.secretAccessKey.real}\r\n\r\n`,
    );
    expect(r.status).toBe(400);
    expect(r.body.toString()).toContain("does not match the payload");
    expect(s3.requests.length).toBe(before);
    noReal(r.body);
  });

  test("chunk-signed uploads go only to a host an AWS credential is bound to: elsewhere their signatures are 64 free hex digits each", async () => {
    const hexOfReal = Buffer.from(KEYS.secretAccessKey.real).toString("hex").slice(0, 64);
    const r = await sendSigned(
      `https://plain.test:${s3.port}/b/x`,
      {
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": "5",
      },
      `5;chunk-signature=${hexOfReal}\r\nhello\r\n0;chunk-signature=${"a".repeat(64)}\r\n\r\n`,
    );
    expect(r.status).toBe(403);
    expect(r.headers).toContain("x-slapenir-error: bad-signature");
  });

  test("a streaming upload signed in a presigned URL is refused (its chunk chain has no header signature to start from)", async () => {
    const before = s3.requests.length;
    const r = await sendSigned(
      `https://s3.test:${s3.port}/b/chunked/presigned.bin`,
      {
        "x-amz-content-sha256": "STREAMING-AWS4-HMAC-SHA256-PAYLOAD",
        "content-encoding": "aws-chunked",
        "x-amz-decoded-content-length": "5",
      },
      `5;chunk-signature=${"b".repeat(64)}\r\nhello\r\n0;chunk-signature=${"a".repeat(64)}\r\n\r\n`,
      "query",
    );
    expect(r.status).toBe(403);
    expect(r.headers).toContain("x-slapenir-error: bad-signature");
    expect(s3.requests.length).toBe(before);
  });
});

describe("a presigned URL made with the dummy keys", () => {
  test.skipIf(!haveAws)(
    "aws s3 presign, fetched through the proxy: signed again, served",
    async () => {
      const endpoint = `https://s3.test:${s3.port}`;
      s3.objects.set("b/pre/signed.txt", new TextEncoder().encode("presigned content"));
      const made = await run([
        "aws",
        "--endpoint-url",
        endpoint,
        "s3",
        "presign",
        "s3://b/pre/signed.txt",
        "--expires-in",
        "300",
      ]);
      expect(made.code).toBe(0);
      const url = made.out.trim();
      expect(url).toContain(`X-Amz-Credential=${KEYS.accessKeyId.dummy}`);
      const before = s3.requests.length;
      const r = await h.curl([url]);
      expect(r.status).toBe(200);
      expect(r.body.toString()).toBe("presigned content");
      const seen = s3.requests.slice(before);
      expect(seen.map((x) => x.verified)).toEqual([true]);
      expect(seen[0]!.target).toContain(`X-Amz-Credential=${KEYS.accessKeyId.real}`);
      noReal(r.body);
      noReal(r.headers);
      // The same URL with its signature changed is refused before the store.
      const forged = url.replace(/X-Amz-Signature=[0-9a-f]{4}/, "X-Amz-Signature=0000");
      const f = await h.curl([forged]);
      expect(f.status).toBe(403);
      expect(s3.requests.length).toBe(before + 1);
    },
  );
});

describe("boto3 with dummy keys", () => {
  const script = `
import boto3, json, sys
s3 = boto3.client("s3", endpoint_url=sys.argv[1])
s3.put_object(Bucket="b", Key="py/obj.bin", Body=b"\\x00binary\\xffbody")
keys = [o["Key"] for o in s3.list_objects_v2(Bucket="b", Prefix="py/")["Contents"]]
body = s3.get_object(Bucket="b", Key="py/obj.bin")["Body"].read()
print(json.dumps({"keys": keys, "body": body.hex()}))
`;
  test.skipIf(!haveBoto)("put, list and get through the forwarder", async () => {
    writeFileSync(join(home, "boto.py"), script);
    const r = await run(["python3", join(home, "boto.py"), `https://s3.test:${s3.port}`]);
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toEqual({
      keys: ["py/obj.bin"],
      body: Buffer.from("\x00binary\xffbody", "latin1").toString("hex"),
    });
    noReal(r.out);
    noReal(r.err);
  });
});

describe("what the proxy refuses, and what it redacts", () => {
  const curlSigned = (user: string, path: string) =>
    h.curl([
      "--aws-sigv4",
      "aws:amz:eu-west-3:s3",
      "--user",
      user,
      "-H",
      `x-amz-security-token: ${KEYS.sessionToken.dummy}`,
      `https://s3.test:${s3.port}${path}`,
    ]);

  test("curl --aws-sigv4 with the dummy keys works; with another secret, or unsigned, it is refused before the store", async () => {
    const ok = await curlSigned(
      `${KEYS.accessKeyId.dummy}:${KEYS.secretAccessKey.dummy}`,
      "/b/dir/hello.txt",
    );
    expect(ok.status).toBe(200);
    const before = s3.requests.length;
    const wrong = await curlSigned(
      `${KEYS.accessKeyId.dummy}:not-the-dummy-secret-0000000000000000`,
      "/b/x",
    );
    expect(wrong.status).toBe(403);
    expect(wrong.headers).toContain("bad-signature");
    const unsigned = await h.curl([`https://s3.test:${s3.port}/b/x`]);
    expect(unsigned.status).toBe(403);
    expect(s3.requests.length).toBe(before);
    noReal(wrong.body);
    noReal(unsigned.body);
  });

  test("a signature for a region or service the credential does not sign for is refused", async () => {
    const before = s3.requests.length;
    for (const scope of ["aws:amz:us-east-1:s3", "aws:amz:eu-west-3:sqs"]) {
      const r = await h.curl([
        "--aws-sigv4",
        scope,
        "--user",
        `${KEYS.accessKeyId.dummy}:${KEYS.secretAccessKey.dummy}`,
        "-H",
        `x-amz-security-token: ${KEYS.sessionToken.dummy}`,
        `https://s3.test:${s3.port}/b/dir/hello.txt`,
      ]);
      expect(r.status).toBe(403);
    }
    expect(s3.requests.length).toBe(before);
  });

  test("signed as the AWS SDK for JavaScript signs (content-length among the signed headers): accepted", async () => {
    const body = "from the JS SDK\n";
    // The SDK's default: applyChecksum on (it signs the body's hash and content-length).
    const signer = agentSigner();
    const signed = await signer.sign(
      new HttpRequest({
        method: "PUT",
        protocol: "https:",
        hostname: "s3.test",
        port: s3.port,
        path: "/b/js/object.txt",
        headers: {
          host: `s3.test:${s3.port}`,
          "content-type": "text/plain",
          "content-length": String(body.length),
        },
        body,
      }),
    );
    expect(signed.headers.authorization).toContain("content-length");
    const before = s3.requests.length;
    const r = await h.curl([
      "-X",
      "PUT",
      ...Object.entries(signed.headers)
        .filter(([k]) => k !== "host" && k !== "content-length")
        .flatMap(([k, v]) => ["-H", `${k}: ${v}`]),
      "--data-binary",
      body,
      `https://s3.test:${s3.port}/b/js/object.txt`,
    ]);
    expect(r.status).toBe(200);
    expect(s3.requests.slice(before).map((x) => x.verified)).toEqual([true]);
    expect(new TextDecoder().decode(s3.objects.get("b/js/object.txt"))).toBe(body);
  });

  test("a query not in AWS's canonical spelling is refused before the store", async () => {
    const before = s3.requests.length;
    const r = await curlSigned(
      `${KEYS.accessKeyId.dummy}:${KEYS.secretAccessKey.dummy}`,
      "/b/x?a=b!c",
    );
    expect(r.status).toBe(403);
    expect(s3.requests.length).toBe(before);
  });

  test("an error body naming the real access key id reaches the agent redacted", async () => {
    const r = await curlSigned(
      `${KEYS.accessKeyId.dummy}:${KEYS.secretAccessKey.dummy}`,
      "/denied/x",
    );
    expect(r.status).toBe(403);
    expect(r.body.toString()).toContain("<AWSAccessKeyId>[REDACTED]</AWSAccessKeyId>");
    noReal(r.body);
  });
});
