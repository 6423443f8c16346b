// An S3-style object store for the SigV4 tests: buckets in memory, path-style requests
// (ListObjectsV2, PutObject, GetObject, HeadObject, DeleteObject; bucket `denied` answers
// AccessDenied naming the caller's key id, as S3 does), and every request's
// signature verified with the REAL keys by an implementation that is not the project's — the
// AWS SDK for JavaScript's signer (@smithy/signature-v4) — so a request it accepts is one AWS
// would accept. Anything else gets S3's 403 SignatureDoesNotMatch (which, as S3's does, names
// the access key id it was given). Test-only.

import { Sha256 } from "@aws-crypto/sha256-js";
import { HttpRequest } from "@smithy/protocol-http";
import { SignatureV4 } from "@smithy/signature-v4";
import type { TestCert } from "./test-pki.ts";

export interface S3Keys {
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  readonly sessionToken?: string;
}

export interface S3Request {
  readonly method: string;
  readonly target: string;
  readonly headers: [string, string][];
  readonly body: Uint8Array;
  readonly verified: boolean;
}

export interface S3Upstream extends AsyncDisposable {
  readonly port: number;
  readonly requests: S3Request[];
  readonly objects: Map<string, Uint8Array>;
  stop(): Promise<void>;
}

const AUTH_RE =
  /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, ?SignedHeaders=([^,]+), ?Signature=([0-9a-f]{64})$/;

/** A `YYYYMMDDTHHMMSSZ` time, or null. */
function amzDate(text: string | null): Date | null {
  const t = /^(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})(\d{2})Z$/.exec(text ?? "");
  return t ? new Date(Date.UTC(+t[1]!, +t[2]! - 1, +t[3]!, +t[4]!, +t[5]!, +t[6]!)) : null;
}

const QUERY_AUTH = [
  "X-Amz-Algorithm",
  "X-Amz-Credential",
  "X-Amz-Date",
  "X-Amz-Expires",
  "X-Amz-SignedHeaders",
  "X-Amz-Signature",
  "X-Amz-Security-Token",
];

/** A presigned URL: whether the SDK, presigning the same request with `keys`, agrees. */
async function verifyQuery(req: Request, url: URL, keys: S3Keys): Promise<boolean> {
  const p = url.searchParams;
  const cred = /^([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request$/.exec(
    p.get("X-Amz-Credential") ?? "",
  );
  const signingDate = amzDate(p.get("X-Amz-Date"));
  if (!cred || !signingDate || cred[1] !== keys.accessKeyId) return false;
  if ((p.get("X-Amz-Security-Token") ?? undefined) !== keys.sessionToken) return false;
  const query: Record<string, string> = {};
  for (const [k, v] of p) if (!QUERY_AUTH.includes(k)) query[k] = v;
  const signed = new Set((p.get("X-Amz-SignedHeaders") ?? "").split(";"));
  const headers: Record<string, string> = { "x-amz-content-sha256": "UNSIGNED-PAYLOAD" };
  for (const [k, v] of req.headers) if (signed.has(k)) headers[k] = v;
  const signer = new SignatureV4({
    credentials: keys,
    region: cred[3]!,
    service: cred[4]!,
    sha256: Sha256,
    uriEscapePath: false,
  });
  const out = await signer.presign(
    new HttpRequest({
      method: req.method,
      protocol: "https:",
      hostname: url.hostname,
      path: url.pathname,
      query,
      headers,
    }),
    {
      signingDate,
      expiresIn: Number(p.get("X-Amz-Expires") ?? "900"),
      signableHeaders: signed,
      unhoistableHeaders: new Set(["x-amz-content-sha256"]),
      unsignableHeaders: new Set(["x-amz-content-sha256"]),
    },
  );
  return out.query?.["X-Amz-Signature"] === p.get("X-Amz-Signature");
}

/** Whether the SDK, signing the same request with `keys`, produces the same Authorization. */
async function verify(req: Request, url: URL, keys: S3Keys): Promise<boolean> {
  if (!req.headers.has("authorization") && url.searchParams.has("X-Amz-Signature")) {
    return verifyQuery(req, url, keys);
  }
  const auth = req.headers.get("authorization") ?? "";
  const m = AUTH_RE.exec(auth);
  if (!m || m[1] !== keys.accessKeyId) return false;
  const signingDate = amzDate(req.headers.get("x-amz-date"));
  if (!signingDate) return false;
  const signed = new Set(m[5]!.split(";"));
  const headers: Record<string, string> = {};
  for (const [k, v] of req.headers) if (k !== "authorization") headers[k] = v;
  const query: Record<string, string | string[]> = {};
  for (const [k, v] of url.searchParams) {
    const prior = query[k];
    query[k] = prior === undefined ? v : Array.isArray(prior) ? [...prior, v] : [prior, v];
  }
  const signer = new SignatureV4({
    credentials: keys,
    region: m[3]!,
    service: m[4]!,
    sha256: Sha256,
    uriEscapePath: m[4] !== "s3",
    applyChecksum: false,
  });
  const out = await signer.sign(
    new HttpRequest({
      method: req.method,
      protocol: "https:",
      hostname: url.hostname,
      path: url.pathname,
      query,
      headers,
    }),
    {
      signingDate,
      signableHeaders: signed,
      unsignableHeaders: new Set(Object.keys(headers).filter((k) => !signed.has(k))),
    },
  );
  return out.headers.authorization === auth;
}

const xml = (status: number, body: string) =>
  new Response(`<?xml version="1.0" encoding="UTF-8"?>\n${body}`, {
    status,
    headers: { "content-type": "application/xml" },
  });

export function startS3Upstream(cert: TestCert, keys: S3Keys): S3Upstream {
  const requests: S3Request[] = [];
  const objects = new Map<string, Uint8Array>();
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: cert.certPem, key: cert.keyPem },
    async fetch(req) {
      const url = new URL(req.url);
      const body = new Uint8Array(await req.arrayBuffer());
      const verified = await verify(req, url, keys);
      requests.push({
        method: req.method,
        target: url.pathname + url.search,
        headers: [...req.headers.entries()],
        body,
        verified,
      });
      if (!verified) {
        const given = /Credential=([^/]+)\//.exec(req.headers.get("authorization") ?? "")?.[1];
        return xml(
          403,
          `<Error><Code>SignatureDoesNotMatch</Code><Message>The request signature we calculated does not match the signature you provided.</Message><AWSAccessKeyId>${given ?? ""}</AWSAccessKeyId></Error>`,
        );
      }
      const [, bucket = "", ...rest] = decodeURIComponent(url.pathname).split("/");
      if (bucket === "denied") {
        // As S3's AccessDenied does for a bucket policy: the caller's key id in the body.
        return xml(
          403,
          `<Error><Code>AccessDenied</Code><Message>Access Denied</Message><AWSAccessKeyId>${keys.accessKeyId}</AWSAccessKeyId></Error>`,
        );
      }
      const key = rest.join("/");
      const id = `${bucket}/${key}`;
      if (key === "" && req.method === "GET") {
        const prefix = url.searchParams.get("prefix") ?? "";
        const items = [...objects.entries()]
          .filter(([k]) => k.startsWith(`${bucket}/${prefix}`))
          .map(
            ([k, v]) =>
              `<Contents><Key>${k.slice(bucket.length + 1)}</Key><Size>${v.length}</Size><ETag>"e"</ETag><LastModified>2026-12-05T00:00:00.000Z</LastModified><StorageClass>STANDARD</StorageClass></Contents>`,
          );
        return xml(
          200,
          `<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/"><Name>${bucket}</Name><Prefix>${prefix}</Prefix><KeyCount>${items.length}</KeyCount><MaxKeys>1000</MaxKeys><IsTruncated>false</IsTruncated>${items.join("")}</ListBucketResult>`,
        );
      }
      switch (req.method) {
        case "PUT":
          objects.set(id, body);
          return new Response(null, { status: 200, headers: { etag: '"e"' } });
        case "GET":
        case "HEAD": {
          const o = objects.get(id);
          if (!o) return xml(404, "<Error><Code>NoSuchKey</Code></Error>");
          return new Response(req.method === "HEAD" ? null : o, {
            headers: { "content-length": String(o.length), etag: '"e"' },
          });
        }
        case "DELETE":
          objects.delete(id);
          return new Response(null, { status: 204 });
        default:
          return xml(405, "<Error><Code>MethodNotAllowed</Code></Error>");
      }
    },
  });
  const stop = async () => {
    server.stop(true);
  };
  return { port: server.port!, requests, objects, stop, [Symbol.asyncDispose]: stop };
}
