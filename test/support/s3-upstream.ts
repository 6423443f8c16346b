// An S3-style object store for the SigV4 tests: buckets in memory, path-style requests
// (ListObjectsV2, PutObject, multipart uploads, GetObject with one range, HeadObject,
// DeleteObject; bucket `denied` answers
// AccessDenied naming the caller's key id, as S3 does), and every request's
// signature verified with the REAL keys by an implementation that is not the project's — the
// AWS SDK for JavaScript's signer (@smithy/signature-v4) — so a request it accepts is one AWS
// would accept. An aws-chunked body (a STREAMING- payload) is read as S3 reads it: each chunk
// signature and the trailer signature checked along the chain (the strings to sign built here
// from the S3 docs, the HMACs made by the SDK's signer), the trailing checksum recomputed. Anything else gets S3's 403 SignatureDoesNotMatch (which, as S3's does, names
// the access key id it was given). Test-only.

import { createHash } from "node:crypto";
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
  /** The payload (an aws-chunked body's framing taken off). */
  readonly body: Uint8Array;
  /** The x-amz-content-sha256 the request carried. */
  readonly payloadMode: string | null;
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

/** The string a chunk (or the trailer) signature signs, as the S3 docs define it. */
export function chunkStringToSign(
  kind: "PAYLOAD" | "TRAILER",
  when: string,
  scope: string,
  previous: string,
  tail: string,
): string {
  return `AWS4-HMAC-SHA256-${kind}\n${when}\n${scope}\n${previous}\n${tail}`;
}

export const hex = (data: Uint8Array | string) => createHash("sha256").update(data).digest("hex");

/** A trailing checksum's value for `payload`, or null for an algorithm this store lacks. */
export function checksum(name: string, payload: Uint8Array): string | null {
  if (name === "x-amz-checksum-crc32") {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(Bun.hash.crc32(payload) >>> 0);
    return b.toString("base64");
  }
  if (name === "x-amz-checksum-sha256")
    return createHash("sha256").update(payload).digest("base64");
  if (name === "x-amz-checksum-sha1") return createHash("sha1").update(payload).digest("base64");
  return null;
}

/**
 * An aws-chunked body read as S3 reads it: the payload, and whether every chunk signature
 * (chained from the request's, made with the real key by the SDK's signer), the trailer
 * signature and the trailing checksum hold. Null when the framing is malformed.
 */
async function readChunked(
  req: Request,
  framed: Uint8Array,
  mode: string,
  keys: S3Keys,
): Promise<{ payload: Uint8Array; ok: boolean } | null> {
  const m = AUTH_RE.exec(req.headers.get("authorization") ?? "");
  const when = req.headers.get("x-amz-date") ?? "";
  const signingDate = amzDate(when);
  if (!m || !signingDate) return null;
  const signed = mode.startsWith("STREAMING-AWS4-HMAC-SHA256-PAYLOAD");
  const scope = `${m[2]}/${m[3]}/${m[4]}/aws4_request`;
  const signer = new SignatureV4({
    credentials: keys,
    region: m[3]!,
    service: m[4]!,
    sha256: Sha256,
  });
  const sign = (text: string) =>
    signer.sign(text, { signingDate, signingRegion: m[3]!, signingService: m[4]! });
  const text = Buffer.from(framed).toString("latin1");
  let at = 0;
  let previous = m[6]!;
  let ok = true;
  const parts: Buffer[] = [];
  for (;;) {
    const eol = text.indexOf("\r\n", at);
    if (eol < 0) return null;
    const line = /^([0-9a-fA-F]+)(?:;chunk-signature=([0-9a-f]{64}))?$/.exec(text.slice(at, eol));
    if (!line || Boolean(line[2]) !== signed) return null;
    const size = Number.parseInt(line[1]!, 16);
    const data = Buffer.from(framed.subarray(eol + 2, eol + 2 + size));
    if (signed) {
      const expected = await sign(
        chunkStringToSign("PAYLOAD", when, scope, previous, `${hex("")}\n${hex(data)}`),
      );
      ok &&= expected === line[2];
      previous = line[2]!;
    }
    if (size === 0) {
      at = eol + 2;
      break;
    }
    parts.push(data);
    at = eol + 2 + size;
    if (text.slice(at, at + 2) !== "\r\n") return null;
    at += 2;
  }
  const payload = new Uint8Array(Buffer.concat(parts));
  const trailerLines: string[] = [];
  for (;;) {
    const eol = text.indexOf("\r\n", at);
    if (eol < 0) return null;
    const line = text.slice(at, eol);
    at = eol + 2;
    if (line === "") break;
    trailerLines.push(line);
  }
  if (at !== text.length) return null;
  const declared = (req.headers.get("x-amz-trailer") ?? "").split(",").filter((t) => t !== "");
  const sums = trailerLines.filter((l) => !l.startsWith("x-amz-trailer-signature:"));
  for (const name of declared) {
    const sent = sums.find((l) => l.startsWith(`${name}:`))?.slice(name.length + 1);
    ok &&= sent !== undefined && sent === checksum(name, payload);
  }
  if (mode === "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER") {
    const sig = trailerLines.at(-1)?.replace("x-amz-trailer-signature:", "");
    const canonical = sums.map((l) => `${l}\n`).join("");
    ok &&=
      sig === (await sign(chunkStringToSign("TRAILER", when, scope, previous, hex(canonical))));
  }
  ok &&= payload.length === Number(req.headers.get("x-amz-decoded-content-length"));
  return { payload, ok };
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

/**
 * `keys`: the one key set it accepts, or a function giving the sets it accepts now (keys that
 * rotate, as STS-issued ones do); a request is verified with the set of its access key id.
 */
export function startS3Upstream(
  cert: TestCert,
  keys: S3Keys | (() => readonly S3Keys[]),
): S3Upstream {
  const accepted = typeof keys === "function" ? keys : () => [keys];
  const requests: S3Request[] = [];
  const objects = new Map<string, Uint8Array>();
  const uploads = new Map<string, Map<number, Uint8Array>>();
  const server = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: cert.certPem, key: cert.keyPem },
    async fetch(req) {
      const url = new URL(req.url);
      let body: Uint8Array = new Uint8Array(await req.arrayBuffer());
      const keyId =
        /Credential=([^/]+)\//.exec(req.headers.get("authorization") ?? "")?.[1] ??
        url.searchParams.get("X-Amz-Credential")?.split("/")[0];
      const mine = accepted().find((k) => k.accessKeyId === keyId);
      let verified = mine !== undefined && (await verify(req, url, mine));
      const payloadMode = req.headers.get("x-amz-content-sha256");
      if (mine && payloadMode?.startsWith("STREAMING-")) {
        const read = await readChunked(req, body, payloadMode, mine);
        verified &&= read?.ok ?? false;
        if (read) body = read.payload;
      }
      requests.push({
        method: req.method,
        target: url.pathname + url.search,
        headers: [...req.headers.entries()],
        body,
        payloadMode,
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
          `<Error><Code>AccessDenied</Code><Message>Access Denied</Message><AWSAccessKeyId>${mine!.accessKeyId}</AWSAccessKeyId></Error>`,
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
      // Multipart uploads: create, parts, complete (the parts joined in number order).
      const uploadId = url.searchParams.get("uploadId");
      if (req.method === "POST" && url.searchParams.has("uploads")) {
        const upload = `u${uploads.size + 1}`;
        uploads.set(upload, new Map());
        return xml(
          200,
          `<InitiateMultipartUploadResult><Bucket>${bucket}</Bucket><Key>${key}</Key><UploadId>${upload}</UploadId></InitiateMultipartUploadResult>`,
        );
      }
      if (uploadId !== null) {
        const parts = uploads.get(uploadId);
        if (!parts) return xml(404, "<Error><Code>NoSuchUpload</Code></Error>");
        if (req.method === "PUT") {
          parts.set(Number(url.searchParams.get("partNumber")), body);
          return new Response(null, { status: 200, headers: { etag: `"p${parts.size}"` } });
        }
        if (req.method === "POST") {
          const ordered = [...parts.entries()].sort(([a], [b]) => a - b).map(([, v]) => v);
          objects.set(id, new Uint8Array(Buffer.concat(ordered)));
          uploads.delete(uploadId);
          return xml(
            200,
            `<CompleteMultipartUploadResult><Bucket>${bucket}</Bucket><Key>${key}</Key><ETag>"m"</ETag></CompleteMultipartUploadResult>`,
          );
        }
      }
      switch (req.method) {
        case "PUT":
          objects.set(id, body);
          return new Response(null, { status: 200, headers: { etag: '"e"' } });
        case "GET":
        case "HEAD": {
          const o = objects.get(id);
          if (!o) return xml(404, "<Error><Code>NoSuchKey</Code></Error>");
          const headers = { etag: '"e"', "last-modified": "Sat, 05 Dec 2026 00:00:00 GMT" };
          // One range, as the CLI asks for the parts of a large object.
          const range = /^bytes=(\d+)-(\d*)$/.exec(req.headers.get("range") ?? "");
          if (range) {
            const from = Number(range[1]);
            const to = Math.min(range[2] ? Number(range[2]) : o.length - 1, o.length - 1);
            return new Response(req.method === "HEAD" ? null : o.subarray(from, to + 1), {
              status: 206,
              headers: {
                ...headers,
                "content-length": String(to + 1 - from),
                "content-range": `bytes ${from}-${to}/${o.length}`,
              },
            });
          }
          return new Response(req.method === "HEAD" ? null : o, {
            headers: { ...headers, "content-length": String(o.length) },
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
