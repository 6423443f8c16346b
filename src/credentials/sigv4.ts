// AWS Signature Version 4 for headers-signed requests (issue 16, item 1, first part): reading
// an `Authorization: AWS4-HMAC-SHA256 …` header, rebuilding the canonical request exactly as
// AWS clients compute it, verifying the agent's signature with its dummy secret and signing
// the same request again with the real key. Pure: a request head and keys in, a verdict out;
// nothing here holds a socket, logs, or formats a key into a string it returns (the one real
// value that leaves is the access key id, in the new Authorization header, by design).
//
// Canonical request (the AWS signing spec, as botocore and the JS SDK build it):
//   METHOD \n CANONICAL-URI \n CANONICAL-QUERY \n CANONICAL-HEADERS \n \n SIGNED-HEADERS \n PAYLOAD-HASH
// - URI: for S3 the path as sent; for every other service the path with dot segments removed
//   and encoded once more (a `%` becomes `%25`), as the clients do.
// - query: the pairs as sent, each `key=value` (`key=` without a value), sorted by key then
//   value; the clients sign the encoding they send.
// - headers: each signed name (lower-case), the values of every field with that name, trimmed,
//   runs of spaces collapsed, joined with `,`.
// - payload hash: `x-amz-content-sha256` when the request carries it (S3 always does; it may be
//   `UNSIGNED-PAYLOAD` or a streaming mode), else the SHA-256 of the body.

import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { allow, refuse, type Verdict } from "../policy/verdict.ts";

export const SIGV4_ALGORITHM = "AWS4-HMAC-SHA256";

export interface SigV4Head {
  readonly method: string;
  /** Origin-form target as sent: path and query. */
  readonly target: string;
  readonly headers: readonly (readonly [string, string])[];
}

export interface SigV4Authorization {
  readonly accessKeyId: string;
  /** YYYYMMDD of the credential scope. */
  readonly date: string;
  readonly region: string;
  readonly service: string;
  /** Lower-case names, in the order signed. */
  readonly signedHeaders: readonly string[];
  /** 64 lower-case hex digits. */
  readonly signature: string;
}

export type SigV4Refusal = "bad-signature";

const bad = (reason: string) => refuse("bad-signature" as const, reason);

const AUTH_RE =
  /^AWS4-HMAC-SHA256\s+Credential\s*=\s*([^/,\s]+)\/(\d{8})\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request\s*,\s*SignedHeaders\s*=\s*([a-z0-9;-]+)\s*,\s*Signature\s*=\s*([0-9a-f]{64})\s*$/;

/** An Authorization value of the SigV4 scheme, or why it is not one (never quoting it). */
export function parseSigV4Authorization(value: string): Verdict<SigV4Authorization, SigV4Refusal> {
  const m = AUTH_RE.exec(value);
  if (!m) return bad("Authorization is not an AWS4-HMAC-SHA256 signature this proxy can read");
  const signedHeaders = m[5]!.split(";");
  if (signedHeaders.some((h) => h === "") || !signedHeaders.includes("host")) {
    return bad("the signature's SignedHeaders must name host");
  }
  return allow({
    accessKeyId: m[1]!,
    date: m[2]!,
    region: m[3]!,
    service: m[4]!,
    signedHeaders,
    signature: m[6]!,
  });
}

const sha256Hex = (data: string | Uint8Array) => createHash("sha256").update(data).digest("hex");

/** RFC 3986 unreserved characters stay; every other byte as %XX (upper-case). */
function uriEncode(s: string): string {
  let out = "";
  for (const b of Buffer.from(s, "utf8")) {
    const c = String.fromCharCode(b);
    out += /[A-Za-z0-9\-._~/]/.test(c) ? c : `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/**
 * RFC 3986 §5.2.4 as the AWS clients apply it before encoding the path again: `.` and empty
 * segments dropped (services want `//` collapsed), `..` removes the one before; a leading `/`
 * kept, a trailing one kept when a segment is left.
 */
function removeDotSegments(path: string): string {
  const out: string[] = [];
  for (const seg of path.split("/")) {
    if (seg === "" || seg === ".") continue;
    if (seg === "..") out.pop();
    else out.push(seg);
  }
  const first = path.startsWith("/") ? "/" : "";
  const last = path.endsWith("/") && out.length > 0 ? "/" : "";
  return `${first}${out.join("/")}${last}`;
}

function canonicalUri(path: string, service: string): string {
  if (path === "") return "/";
  if (service === "s3") return path;
  return uriEncode(removeDotSegments(path));
}

/**
 * The canonical query, or null when the query as sent is not already in AWS's canonical
 * spelling: AWS decodes and encodes each name and value again (strict RFC 3986), so a pair
 * sent another way (`!`, `~` escaped, a `+`, a lower-case escape, `a==b`) would be signed here
 * one way and checked there another — the request would fail at AWS with an error that spells
 * out the canonical request, real token included. The clients send the canonical spelling.
 */
function canonicalQuery(query: string): string | null {
  if (query === "") return "";
  const pairs = splitQuery(query);
  if (pairs.some(([k, v]) => !isCanonical(k) || !isCanonical(v))) return null;
  pairs.sort(([ak, av], [bk, bv]) => (ak < bk ? -1 : ak > bk ? 1 : av < bv ? -1 : av > bv ? 1 : 0));
  return pairs.map(([k, v]) => `${k}=${v}`).join("&");
}

/** A query's `name=value` pairs as sent (`name` alone: an empty value). */
function splitQuery(query: string): [string, string][] {
  return query.split("&").map((p) => {
    const eq = p.indexOf("=");
    return eq < 0 ? [p, ""] : [p.slice(0, eq), p.slice(eq + 1)];
  });
}

/** Whether a query name or value is spelled exactly as strict RFC 3986 encodes what it means. */
function isCanonical(text: string): boolean {
  if (text.includes("+")) return false;
  let decoded: string;
  try {
    decoded = decodeURIComponent(text);
  } catch {
    return false;
  }
  return queryEncode(decoded) === text;
}

/** The values of every field named `name` (lower-case), trimmed, runs of spaces collapsed. */
export function headerValues(headers: SigV4Head["headers"], name: string): string[] {
  return headers
    .filter(([k]) => k.toLowerCase() === name)
    .map(([, v]) => v.trim().replace(/\s+/g, " "));
}

/** The canonical request for `head` as `auth` signed it, with its payload hash. */
export function canonicalRequest(
  head: SigV4Head,
  auth: SigV4Authorization,
  payloadHash: string,
): Verdict<string, SigV4Refusal> {
  const q = head.target.indexOf("?");
  const path = q < 0 ? head.target : head.target.slice(0, q);
  const query = q < 0 ? "" : head.target.slice(q + 1);
  const canonQuery = canonicalQuery(query);
  if (canonQuery === null) return bad("the query is not in AWS's canonical spelling");
  const lines: string[] = [];
  for (const name of auth.signedHeaders) {
    const values = headerValues(head.headers, name);
    if (values.length === 0) return bad(`the signed header ${name} is not in the request`);
    lines.push(`${name}:${values.join(",")}\n`);
  }
  return allow(
    [
      head.method.toUpperCase(),
      canonicalUri(path, auth.service),
      canonQuery,
      lines.join(""),
      auth.signedHeaders.join(";"),
      payloadHash,
    ].join("\n"),
  );
}

/** The request's `x-amz-date` (or `date`), the signed time. */
function amzDate(head: SigV4Head): string | undefined {
  return headerValues(head.headers, "x-amz-date")[0] ?? headerValues(head.headers, "date")[0];
}

/** A credential scope's fields. */
export type SigV4Scope = Pick<SigV4Authorization, "date" | "region" | "service">;

export const scopeOf = (auth: SigV4Scope) =>
  `${auth.date}/${auth.region}/${auth.service}/aws4_request`;

/** The scope's signing key, derived from `secret` (the caller wipes it when done). */
export function signingKey(secret: Uint8Array, auth: SigV4Scope): Buffer {
  const kSecret = Buffer.concat([Buffer.from("AWS4"), secret]);
  try {
    const kDate = createHmac("sha256", kSecret).update(auth.date).digest();
    const kRegion = createHmac("sha256", kDate).update(auth.region).digest();
    const kService = createHmac("sha256", kRegion).update(auth.service).digest();
    kDate.fill(0);
    kRegion.fill(0);
    const kSigning = createHmac("sha256", kService).update("aws4_request").digest();
    kService.fill(0);
    return kSigning;
  } finally {
    kSecret.fill(0);
  }
}

/** The signature of `canonical` with `secret` in `auth`'s scope. */
export function sigV4Signature(
  secret: Uint8Array,
  auth: SigV4Scope,
  when: string,
  canonical: string,
): string {
  const toSign = `${SIGV4_ALGORITHM}\n${when}\n${scopeOf(auth)}\n${sha256Hex(canonical)}`;
  const key = signingKey(secret, auth);
  try {
    return createHmac("sha256", key).update(toSign).digest("hex");
  } finally {
    key.fill(0);
  }
}

/** The keys one side of a SigV4 credential holds. */
export interface SigV4Keys {
  readonly accessKeyId: string;
  readonly secretAccessKey: Uint8Array;
  readonly sessionToken?: string;
}

export interface ResignedHead {
  /** The new Authorization value. */
  readonly authorization: string;
  /** The agent's signature and the new one (the seeds of a chunk-signed body's chains). */
  readonly seeds: { readonly agent: string; readonly real: string };
  readonly auth: SigV4Authorization;
  readonly when: string;
  /** The session token to send in place of the agent's (when the agent sent one). */
  readonly sessionToken?: string;
}

/**
 * Verify that `head` was signed with the agent's dummy keys, then sign it again with the real
 * ones over exactly the headers the agent signed (its session token, if it sent one, replaced
 * by the real token first). The payload hash is the request's `x-amz-content-sha256`, or
 * `bodyHash` (the SHA-256 of the body) when it has none.
 */
export function resignSigV4(
  head: SigV4Head,
  dummy: SigV4Keys,
  real: SigV4Keys,
  bodyHash?: string,
): Verdict<ResignedHead, SigV4Refusal> {
  const authValues = headerValues(head.headers, "authorization");
  if (authValues.length !== 1) return bad("a signed request needs exactly one Authorization");
  const parsed = parseSigV4Authorization(authValues[0]!);
  if (!parsed.ok) return parsed;
  const auth = parsed.value;
  if (auth.accessKeyId !== dummy.accessKeyId) {
    return bad("the signature's access key id is not this credential's dummy");
  }
  // One of each, or AWS and this proxy might read different ones.
  for (const name of ["x-amz-date", "date", "x-amz-content-sha256", "host"]) {
    if (headerValues(head.headers, name).length > 1) return bad(`more than one ${name}`);
  }
  if (/[?&]X-Amz-(Signature|Credential|Algorithm)=/i.test(head.target)) {
    return bad("a request signed in its Authorization carries no query signature");
  }
  const when = amzDate(head);
  if (!when?.startsWith(auth.date)) {
    return bad("x-amz-date is missing or not on the credential scope's date");
  }
  const payload = headerValues(head.headers, "x-amz-content-sha256")[0] ?? bodyHash;
  if (payload === undefined) return bad("the payload hash is unknown (no x-amz-content-sha256)");
  const tokens = headerValues(head.headers, "x-amz-security-token");
  if (tokens.length > 1) return bad("more than one x-amz-security-token");
  if (tokens.length === 1 && tokens[0] !== dummy.sessionToken) {
    return bad("x-amz-security-token is not this credential's dummy token");
  }
  const mine = canonicalRequest(head, auth, payload);
  if (!mine.ok) return mine;
  const expected = sigV4Signature(dummy.secretAccessKey, auth, when, mine.value);
  if (!timingSafeEqual(Buffer.from(expected), Buffer.from(auth.signature))) {
    return bad("the request is not signed with the agent's key");
  }
  const swapToken = tokens.length === 1 && real.sessionToken !== undefined;
  const realHead: SigV4Head = swapToken
    ? {
        ...head,
        headers: head.headers.map(([k, v]) =>
          k.toLowerCase() === "x-amz-security-token" ? [k, real.sessionToken!] : [k, v],
        ),
      }
    : head;
  const theirs = canonicalRequest(realHead, auth, payload);
  if (!theirs.ok) return theirs;
  const signature = sigV4Signature(real.secretAccessKey, auth, when, theirs.value);
  return allow({
    authorization: `${SIGV4_ALGORITHM} Credential=${real.accessKeyId}/${scopeOf(auth)}, SignedHeaders=${auth.signedHeaders.join(";")}, Signature=${signature}`,
    seeds: { agent: auth.signature, real: signature },
    auth,
    when,
    ...(swapToken ? { sessionToken: real.sessionToken! } : {}),
  });
}

/** RFC 3986 strict: every byte but the unreserved characters as %XX (a query value). */
function queryEncode(s: string): string {
  return uriEncode(s).replace(/\//g, "%2F");
}

const decodeParam = (v: string): string | undefined => {
  try {
    return decodeURIComponent(v.replace(/\+/g, "%20"));
  } catch {
    return undefined;
  }
};

/** A query signature read from a target: its pairs as sent, its scope, its signed time. */
export interface SigV4Query {
  readonly path: string;
  readonly pairs: readonly [string, string][];
  readonly auth: SigV4Authorization;
  readonly when: string;
}

/** The signature a presigned (query-signed) target carries, or why it carries none. */
export function readSigV4Query(target: string): Verdict<SigV4Query, SigV4Refusal> {
  const q = target.indexOf("?");
  if (q < 0) return bad("the request carries no query signature");
  const pairs = splitQuery(target.slice(q + 1));
  const one = (name: string): string | undefined => {
    const found = pairs.filter(([k]) => k === name);
    return found.length === 1 ? decodeParam(found[0]![1]) : undefined;
  };
  if (pairs.filter(([k]) => k.toLowerCase().startsWith("x-amz-signature")).length !== 1) {
    return bad("a query signature needs exactly one X-Amz-Signature");
  }
  if (one("X-Amz-Algorithm") !== SIGV4_ALGORITHM)
    return bad("X-Amz-Algorithm is not AWS4-HMAC-SHA256");
  const cred = /^([^/]+)\/(\d{8})\/([a-z0-9-]+)\/([a-z0-9-]+)\/aws4_request$/.exec(
    one("X-Amz-Credential") ?? "",
  );
  const when = one("X-Amz-Date");
  const signedHeaders = (one("X-Amz-SignedHeaders") ?? "").split(";");
  const signature = one("X-Amz-Signature") ?? "";
  if (!cred || !when || !/^[0-9a-f]{64}$/.test(signature) || !signedHeaders.includes("host")) {
    return bad("the query signature is incomplete (credential, date, signed headers, signature)");
  }
  return allow({
    path: target.slice(0, q),
    pairs,
    auth: {
      accessKeyId: cred[1]!,
      date: cred[2]!,
      region: cred[3]!,
      service: cred[4]!,
      signedHeaders,
      signature,
    },
    when,
  });
}

/**
 * A presigned (query-signed) request: verify that its `X-Amz-Signature` was made with the
 * agent's dummy keys, then sign it again with the real ones — the credential and the session
 * token in the query replaced first — and return the new target. S3 only (its presigned
 * payload is `UNSIGNED-PAYLOAD`).
 */
export function resignSigV4Query(
  head: SigV4Head,
  dummy: SigV4Keys,
  real: SigV4Keys,
): Verdict<{ readonly target: string }, SigV4Refusal> {
  const read = readSigV4Query(head.target);
  if (!read.ok) return read;
  const { path, pairs, auth, when } = read.value;
  if (auth.service !== "s3") return bad("presigned requests are signed again for S3 only");
  if (auth.accessKeyId !== dummy.accessKeyId) {
    return bad("the signature's access key id is not this credential's dummy");
  }
  if (!when.startsWith(auth.date)) return bad("X-Amz-Date is not on the credential scope's date");
  const tokenPairs = pairs.filter(([k]) => k === "X-Amz-Security-Token");
  if (tokenPairs.length > 1) return bad("more than one X-Amz-Security-Token");
  if (tokenPairs.length === 1 && decodeParam(tokenPairs[0]![1]) !== dummy.sessionToken) {
    return bad("X-Amz-Security-Token is not this credential's dummy token");
  }
  if (headerValues(head.headers, "authorization").length > 0) {
    return bad("a request signed in its query carries no Authorization");
  }
  const payload = headerValues(head.headers, "x-amz-content-sha256")[0] ?? "UNSIGNED-PAYLOAD";
  const targetOf = (list: readonly [string, string][]) =>
    `${path}?${list.map(([k, v]) => `${k}=${v}`).join("&")}`;
  const unsigned = (list: readonly [string, string][]) =>
    list.filter(([k]) => k !== "X-Amz-Signature");
  const mine = canonicalRequest({ ...head, target: targetOf(unsigned(pairs)) }, auth, payload);
  if (!mine.ok) return mine;
  const expected = sigV4Signature(dummy.secretAccessKey, auth, when, mine.value);
  if (!timingSafeEqual(Buffer.from(expected), Buffer.from(auth.signature))) {
    return bad("the request is not signed with the agent's key");
  }
  const scope = scopeOf(auth);
  if (tokenPairs.length === 1 && real.sessionToken === undefined) {
    return bad("the credential has no real session token for the agent's");
  }
  const realPairs = pairs.map(([k, v]): [string, string] =>
    k === "X-Amz-Credential"
      ? [k, queryEncode(`${real.accessKeyId}/${scope}`)]
      : k === "X-Amz-Security-Token"
        ? [k, queryEncode(real.sessionToken!)]
        : [k, v],
  );
  const theirs = canonicalRequest(
    { ...head, target: targetOf(unsigned(realPairs)) },
    auth,
    payload,
  );
  if (!theirs.ok) return theirs;
  const sig = sigV4Signature(real.secretAccessKey, auth, when, theirs.value);
  return allow({
    target: targetOf(
      realPairs.map(([k, v]): [string, string] => (k === "X-Amz-Signature" ? [k, sig] : [k, v])),
    ),
  });
}
