// SigV4 checked against an implementation that is not ours: the AWS SDK for JavaScript's signer
// (@smithy/signature-v4). Requests it signs with the dummy keys must verify here, and what we
// sign with the real keys must equal what it signs with them — so AWS would accept it.

import { describe, expect, test } from "bun:test";
import { Sha256 } from "@aws-crypto/sha256-js";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import fc from "fast-check";
import {
  parseSigV4Authorization,
  resignSigV4,
  resignSigV4Query,
  type SigV4Head,
  type SigV4Keys,
} from "./sigv4.ts";

const enc = new TextEncoder();
const DUMMY = {
  accessKeyId: "AKIADUMMYDUMMYDUMMY0",
  secretAccessKey: "dummy/secret/key/0000000000000000000000",
  sessionToken: "dummy-session-token-000000000000",
};
const REAL = {
  accessKeyId: "AKIAREALREALREALREAL",
  secretAccessKey: "r3aL/s3cr3t+k3y/wJalrXUtnFEMIK7MDENGbPxRfiCY",
  sessionToken: "real-session-token-FwoGZXIvYXdzEJr",
};
const keys = (k: typeof DUMMY, withToken: boolean): SigV4Keys => ({
  accessKeyId: k.accessKeyId,
  secretAccessKey: enc.encode(k.secretAccessKey),
  ...(withToken ? { sessionToken: k.sessionToken } : {}),
});
const WHEN = new Date("2026-12-05T03:04:05Z");

interface Req {
  method: string;
  path: string;
  query: Record<string, string | string[]>;
  headers: Record<string, string>;
  body: string;
}

/** Sign as the AWS SDK does; returns the head as it would go on the wire. */
async function sdkSign(
  r: Req,
  k: typeof DUMMY,
  service: string,
  withToken: boolean,
  unsignedPayload = false,
): Promise<SigV4Head> {
  const signer = new SignatureV4({
    credentials: {
      accessKeyId: k.accessKeyId,
      secretAccessKey: k.secretAccessKey,
      ...(withToken ? { sessionToken: k.sessionToken } : {}),
    },
    region: "eu-west-3",
    service,
    sha256: Sha256,
    uriEscapePath: service !== "s3",
    applyChecksum: service === "s3",
  });
  const req = new HttpRequest({
    method: r.method,
    protocol: "https:",
    hostname: "bucket.s3.test",
    // The SDK's serializers encode each segment of the path before it is signed and sent.
    path: r.path.split("/").map(rfc3986).join("/"),
    query: r.query,
    headers: {
      host: "bucket.s3.test",
      ...(unsignedPayload ? { "x-amz-content-sha256": "UNSIGNED-PAYLOAD" } : {}),
      ...r.headers,
    },
    body: r.body,
  });
  const signed = await signer.sign(req, { signingDate: WHEN });
  const q = Object.entries(signed.query ?? {})
    .flatMap(([k2, v]) => (Array.isArray(v) ? v : [v]).map((x) => [k2, x] as const))
    .map(([k2, v]) => `${rfc3986(k2)}=${rfc3986(v ?? "")}`)
    .join("&");
  return {
    method: signed.method,
    target: `${signed.path}${q ? `?${q}` : ""}`,
    headers: Object.entries(signed.headers),
  };
}

/** The SDK's query encoding (strict RFC 3986). */
const rfc3986 = (s: string) =>
  encodeURIComponent(s).replace(
    /[!'()*]/g,
    (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`,
  );

const authOf = (h: SigV4Head) => h.headers.find(([k]) => k.toLowerCase() === "authorization")![1];
const sha = (s: string) => new Bun.CryptoHasher("sha256").update(s).digest("hex");

describe("SigV4: verify with the dummy key, sign again with the real one", () => {
  const cases: [string, Req, string][] = [
    [
      "S3 GET with a range and a key needing escapes",
      {
        method: "GET",
        path: "/photos/2026 12/a+b=c.jpg",
        query: {},
        headers: { range: "bytes=0-9" },
        body: "",
      },
      "s3",
    ],
    [
      "S3 PUT with a body and a query",
      {
        method: "PUT",
        path: "/k",
        query: { partNumber: "2", uploadId: "u/p+1" },
        headers: { "content-type": "text/plain" },
        body: "hello world",
      },
      "s3",
    ],
    [
      "S3 list with repeated and empty query values",
      {
        method: "GET",
        path: "/",
        query: { "list-type": "2", prefix: "a b/", "continuation-token": "" },
        headers: {},
        body: "",
      },
      "s3",
    ],
    [
      "STS-like POST (no x-amz-content-sha256: the body's hash)",
      {
        method: "POST",
        path: "/",
        query: {},
        headers: { "content-type": "application/x-www-form-urlencoded" },
        body: "Action=GetCallerIdentity&Version=2011-06-15",
      },
      "sts",
    ],
    [
      "a service that encodes the path again (dot segments, escapes)",
      {
        method: "GET",
        path: "/2015-03-31/functions/my%20fn/invocations",
        query: { Qualifier: "v1" },
        headers: { "x-amz-target": "X.Y" },
        body: "",
      },
      "lambda",
    ],
  ];
  for (const [name, req, service] of cases) {
    for (const withToken of [false, true]) {
      test(`${name}${withToken ? ", with a session token" : ""}`, async () => {
        const agentHead = await sdkSign(req, DUMMY, service, withToken);
        const want = await sdkSign(req, REAL, service, withToken);
        const r = resignSigV4(
          agentHead,
          keys(DUMMY, withToken),
          keys(REAL, withToken),
          sha(req.body),
        );
        expect(r.ok).toBe(true);
        if (!r.ok) return;
        expect(r.value.authorization).toBe(authOf(want));
        if (withToken) expect(r.value.sessionToken).toBe(REAL.sessionToken);
        else expect(r.value.sessionToken).toBeUndefined();
      });
    }
  }

  test("UNSIGNED-PAYLOAD is kept as the payload hash", async () => {
    const req: Req = { method: "PUT", path: "/big", query: {}, headers: {}, body: "x" };
    const agentHead = await sdkSign(req, DUMMY, "s3", false, true);
    const want = await sdkSign(req, REAL, "s3", false, true);
    const r = resignSigV4(agentHead, keys(DUMMY, false), keys(REAL, false));
    expect(r.ok && r.value.authorization).toBe(authOf(want));
  });

  test("property: any path, query and header values the SDK signs", async () => {
    const text = fc.string({ unit: fc.constantFrom(..."aZ09 -_.~/+=&%?#:é"), maxLength: 12 });
    await fc.assert(
      fc.asyncProperty(
        fc.record({
          path: text.map((t) => `/${t}`),
          q: fc.dictionary(
            text.filter((k) => k.length > 0),
            text,
            { maxKeys: 3 },
          ),
          h: text,
          service: fc.constantFrom("s3", "execute-api", "dynamodb"),
        }),
        async ({ path, q, h, service }) => {
          const req: Req = {
            method: "POST",
            path,
            query: q,
            headers: { "x-amz-meta-a": `  ${h}  x` },
            body: "b",
          };
          const agentHead = await sdkSign(req, DUMMY, service, false);
          const want = await sdkSign(req, REAL, service, false);
          const r = resignSigV4(agentHead, keys(DUMMY, false), keys(REAL, false), sha("b"));
          expect(r.ok && r.value.authorization).toBe(authOf(want));
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe("SigV4: refusals (fail closed, no value quoted)", () => {
  const req: Req = { method: "GET", path: "/k", query: {}, headers: {}, body: "" };

  test("signed with another key, or tampered after signing", async () => {
    const other = await sdkSign(
      req,
      { ...DUMMY, secretAccessKey: "not-the-dummy-secret-000000000000000" },
      "s3",
      false,
    );
    const r = resignSigV4(other, keys(DUMMY, false), keys(REAL, false));
    expect(r).toMatchObject({ ok: false, code: "bad-signature" });
    const good = await sdkSign(req, DUMMY, "s3", false);
    const tampered = { ...good, target: "/other" };
    expect(resignSigV4(tampered, keys(DUMMY, false), keys(REAL, false)).ok).toBe(false);
  });

  test("another access key id, a token that is not the dummy's, no signature at all", async () => {
    const good = await sdkSign(req, DUMMY, "s3", true);
    const swapped = {
      ...good,
      headers: good.headers.map(([k, v]) =>
        k === "x-amz-security-token"
          ? ([k, "something-else"] as [string, string])
          : ([k, v] as [string, string]),
      ),
    };
    expect(resignSigV4(swapped, keys(DUMMY, true), keys(REAL, true)).ok).toBe(false);
    const unsigned = { ...good, headers: good.headers.filter(([k]) => k !== "authorization") };
    const r = resignSigV4(unsigned, keys(DUMMY, true), keys(REAL, true));
    expect(r.ok).toBe(false);
    if (!r.ok) {
      for (const v of [
        DUMMY.secretAccessKey,
        REAL.secretAccessKey,
        REAL.accessKeyId,
        REAL.sessionToken,
      ]) {
        expect(r.reason).not.toContain(v);
      }
    }
  });

  test("an Authorization that is not SigV4 is read as such", () => {
    expect(parseSigV4Authorization("Bearer x").ok).toBe(false);
    expect(
      parseSigV4Authorization(
        `AWS4-HMAC-SHA256 Credential=AKIA/20261205/us-east-1/s3/aws4_request, SignedHeaders=x-amz-date, Signature=${"0".repeat(64)}`,
      ),
    ).toMatchObject({ ok: false, reason: "the signature's SignedHeaders must name host" });
  });
});

describe("SigV4 presigned (query-signed) S3 requests", () => {
  const presign = async (k: typeof DUMMY, withToken: boolean, path: string) => {
    const signer = new SignatureV4({
      credentials: {
        accessKeyId: k.accessKeyId,
        secretAccessKey: k.secretAccessKey,
        ...(withToken ? { sessionToken: k.sessionToken } : {}),
      },
      region: "eu-west-3",
      service: "s3",
      sha256: Sha256,
      uriEscapePath: false,
    });
    const req = new HttpRequest({
      method: "GET",
      protocol: "https:",
      hostname: "bucket.s3.test",
      path: path.split("/").map(rfc3986).join("/"),
      query: { "response-content-type": "text/plain" },
      headers: { host: "bucket.s3.test", "x-amz-content-sha256": "UNSIGNED-PAYLOAD" },
    });
    const signed = await signer.presign(req, {
      signingDate: WHEN,
      expiresIn: 300,
      unhoistableHeaders: new Set(["x-amz-content-sha256"]),
      unsignableHeaders: new Set(["x-amz-content-sha256"]),
    });
    const q = Object.entries(signed.query ?? {})
      .map(([k2, v]) => `${rfc3986(k2)}=${rfc3986(String(v))}`)
      .join("&");
    return {
      target: `${signed.path}?${q}`,
      headers: [["host", "bucket.s3.test"]] as [string, string][],
    };
  };
  const sigOf = (target: string) => /X-Amz-Signature=([0-9a-f]{64})/.exec(target)![1];

  for (const withToken of [false, true]) {
    test(`verified with the dummy key, signed again with the real one${withToken ? ", with a session token" : ""}`, async () => {
      const agent = await presign(DUMMY, withToken, "/photos/a b+c.jpg");
      const want = await presign(REAL, withToken, "/photos/a b+c.jpg");
      const r = resignSigV4Query(
        { method: "GET", ...agent },
        keys(DUMMY, withToken),
        keys(REAL, withToken),
      );
      expect(r.ok).toBe(true);
      if (!r.ok) return;
      expect(sigOf(r.value.target)).toBe(sigOf(want.target));
      expect(r.value.target).toContain(`X-Amz-Credential=${REAL.accessKeyId}%2F20261205%2F`);
      expect(r.value.target.includes(DUMMY.accessKeyId)).toBe(false);
    });
  }

  test("a presigned URL made with another key, tampered, or with two signatures is refused", async () => {
    const good = await presign(DUMMY, false, "/k");
    const other = await presign(
      { ...DUMMY, secretAccessKey: "not-the-dummy-secret-000000000000000" },
      false,
      "/k",
    );
    const k = [keys(DUMMY, false), keys(REAL, false)] as const;
    expect(resignSigV4Query({ method: "GET", ...other }, ...k).ok).toBe(false);
    expect(resignSigV4Query({ method: "PUT", ...good }, ...k).ok).toBe(false);
    expect(
      resignSigV4Query({ method: "GET", ...good, target: good.target.replace("/k?", "/j?") }, ...k)
        .ok,
    ).toBe(false);
    expect(
      resignSigV4Query(
        { method: "GET", ...good, target: `${good.target}&X-Amz-Signature=${"0".repeat(64)}` },
        ...k,
      ).ok,
    ).toBe(false);
  });
});
