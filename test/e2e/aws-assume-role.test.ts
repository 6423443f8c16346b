// AWS keys from STS AssumeRole (issue 16, item 2), through the real proxy: the credential's
// source asks a local STS for temporary keys, signing with base keys; the STS double verifies
// that signature with the AWS SDK's signer and issues keys that expire within the test. The
// agent signs with its dummy keys throughout; an S3 double accepts only the keys STS issued
// (verified with the SDK's signer too). Requests keep succeeding across a refresh, the store
// sees the newer keys, and the agent never holds a byte of any real key.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Sha256 } from "@aws-crypto/sha256-js";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import { carries } from "../support/hostile-oracle.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { type S3Keys, type S3Upstream, startS3Upstream } from "../support/s3-upstream.ts";
import { createTestCa } from "../support/test-pki.ts";

const BASE = {
  accessKeyId: "AKIABASEKEY000000001",
  secretAccessKey: "base/R3aL/secret/000000000000000000000001",
};
const DUMMY = {
  accessKeyId: "AKIADUMMYROLE0000001",
  secretAccessKey: "dummy/role/secret/00000000000000000000001",
  sessionToken: "dummy-role-session-token-0000000000000001",
};
const ROLE = "arn:aws:iam::123456789012:role/agent-s3";
const issued: S3Keys[] = [];
const stsCalls: { verified: boolean; form: URLSearchParams }[] = [];
const keyOf = (n: number): S3Keys => ({
  accessKeyId: `ASIATEMP${String(n).padStart(12, "0")}`,
  secretAccessKey: `temp/R3aL/secret/${String(n).padStart(23, "0")}`,
  sessionToken: `FwoGZXIvYXdzTEMP/R3aL/token/${String(n).padStart(16, "0")}`,
});

let h: Harness;
let s3: S3Upstream;
let sts: ReturnType<typeof Bun.serve>;

/** Whether the SDK, signing the STS request with the base keys, agrees with its signature. */
async function stsVerified(req: Request, body: string): Promise<boolean> {
  const auth = req.headers.get("authorization") ?? "";
  const m =
    /Credential=([^/]+)\/(\d{8})\/([^/]+)\/sts\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})/.exec(
      auth,
    );
  const when = req.headers.get("x-amz-date") ?? "";
  const t = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(when);
  if (!m || !t || m[1] !== BASE.accessKeyId) return false;
  const url = new URL(req.url);
  const signed = new Set(m[4]!.split(";"));
  const headers: Record<string, string> = {};
  for (const [k, v] of req.headers) if (signed.has(k)) headers[k] = v;
  const out = await new SignatureV4({
    credentials: BASE,
    region: m[3]!,
    service: "sts",
    sha256: Sha256,
    applyChecksum: false,
  }).sign(
    new HttpRequest({
      method: "POST",
      protocol: "https:",
      hostname: url.hostname,
      port: Number(url.port),
      path: url.pathname,
      headers,
      body,
    }),
    {
      signingDate: new Date(Date.UTC(+t[1]!, +t[2]! - 1, +t[3]!, +t[4]!, +t[5]!, +t[6]!)),
      signableHeaders: signed,
    },
  );
  return out.headers.authorization === auth;
}

beforeAll(async () => {
  const stsCa = await createTestCa("Test STS Root");
  const stsCert = await stsCa.issue(["127.0.0.1"]);
  sts = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: stsCert.certPem, key: stsCert.keyPem },
    async fetch(req) {
      const body = await req.text();
      const verified = await stsVerified(req, body);
      stsCalls.push({ verified, form: new URLSearchParams(body) });
      if (!verified)
        return new Response(
          "<ErrorResponse><Error><Code>SignatureDoesNotMatch</Code></Error></ErrorResponse>",
          { status: 403 },
        );
      const k = keyOf(issued.length + 1);
      issued.push(k);
      // Short-lived keys: they expire (and are refreshed) while the test runs.
      const expiration = new Date(Date.now() + 3000).toISOString();
      return new Response(
        `<AssumeRoleResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/"><AssumeRoleResult><Credentials><AccessKeyId>${k.accessKeyId}</AccessKeyId><SecretAccessKey>${k.secretAccessKey}</SecretAccessKey><SessionToken>${k.sessionToken}</SessionToken><Expiration>${expiration}</Expiration></Credentials><AssumedRoleUser><Arn>${ROLE}/slapenir</Arn></AssumedRoleUser></AssumeRoleResult></AssumeRoleResponse>`,
        { headers: { "content-type": "text/xml" } },
      );
    },
  });
  const dir = mkdtempSync(join(tmpdir(), "slapenir-sts-"));
  const caFile = join(dir, "sts-ca.pem");
  writeFileSync(caFile, stsCa.certPem);
  h = await startHarness({
    credentials: [
      {
        name: "role",
        kind: "aws",
        accessKeyId: { dummy: DUMMY.accessKeyId },
        secretAccessKey: { dummy: DUMMY.secretAccessKey },
        sessionToken: { dummy: DUMMY.sessionToken },
        source: {
          assumeRole: {
            roleArn: ROLE,
            stsUrl: `https://127.0.0.1:${sts.port}/`,
            region: "eu-west-3",
            accessKeyId: BASE.accessKeyId,
            secretAccessKey: BASE.secretAccessKey,
            durationSeconds: 900,
            caFile,
          },
        },
        hosts: ["s3.test:*"],
        services: ["s3"],
      } as never,
    ],
    allow: ["s3.test:*"],
    names: ["s3.test"],
    // These tests wait for a refresh by asking again: the request rate is not what they try.
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  s3 = startS3Upstream(await h.upstreamCa.issue(["s3.test"]), () => issued);
});

afterAll(async () => {
  await s3?.stop();
  await h?.close();
  sts?.stop(true);
});

const REALS = () => [
  BASE.secretAccessKey,
  ...issued.flatMap((k) => [k.accessKeyId, k.secretAccessKey, k.sessionToken!]),
];

test("requests signed with the dummy keys go out on STS-issued keys, refreshed before they expire; the agent holds none", async () => {
  s3.objects.set("b/role.txt", new TextEncoder().encode("object under a role"));
  const ask = () =>
    h.curl([
      "--aws-sigv4",
      "aws:amz:eu-west-3:s3",
      "--user",
      `${DUMMY.accessKeyId}:${DUMMY.secretAccessKey}`,
      "-H",
      `x-amz-security-token: ${DUMMY.sessionToken}`,
      `https://s3.test:${s3.port}/b/role.txt`,
    ]);
  const first = await ask();
  expect([first.status, first.body.toString()]).toEqual([200, "object under a role"]);
  expect(stsCalls[0]?.verified).toBe(true);
  expect(stsCalls[0]?.form.get("RoleArn")).toBe(ROLE);
  expect(stsCalls[0]?.form.get("Action")).toBe("AssumeRole");
  const keyId = () =>
    /Credential=([^/]+)\//.exec(
      s3.requests.at(-1)?.headers.find(([k]) => k === "authorization")?.[1] ?? "",
    )?.[1];
  expect(keyId()).toBe(keyOf(1).accessKeyId);
  // The keys live 3 s and are refreshed at 3/4 of that: every request on the way succeeds.
  for (let i = 0; keyId() !== keyOf(2).accessKeyId; i++) {
    expect(i).toBeLessThan(2000);
    const r = await ask();
    expect(r.status).toBe(200);
    for (const v of REALS()) expect(carries(r.body, v) || carries(r.headers, v)).toBe(false);
    await Bun.sleep(20);
  }
  expect(s3.requests.every((r) => r.verified)).toBe(true);
  expect(s3.requests.at(-1)?.headers.find(([k]) => k === "x-amz-security-token")?.[1]).toBe(
    keyOf(2).sessionToken,
  );
  for (const l of h.auditLines) for (const v of REALS()) expect(carries(l, v)).toBe(false);
}, 60_000);
