// One-time enrollment tokens as `step ca token` makes them for a JWK provisioner: a compact
// JWS, ES256, header `kid` = the RFC 7638 thumbprint of the provisioner's public JWK, claims
// iss (provisioner name), aud (https://<ca>/1.0/sign), sub, sans, nbf, iat, exp (5 minutes),
// jti (random, single use) and sha (root fingerprint). This is test tooling, standing in for
// ca-init: it must never be imported by src/ (the proxy only ever receives a finished token).
import { createHash, randomBytes } from "node:crypto";

/** The public members of an EC JWK (what a JWK provisioner publishes in ca.json). */
export type EcJwk = { kty: string; crv: string; x: string; y: string };

export interface ProvisionerKey {
  name: string;
  privateKey: CryptoKey;
  publicJwk: EcJwk;
  kid: string;
}

export function b64url(data: Uint8Array | string): string {
  return Buffer.from(data).toString("base64url");
}

/** RFC 7638 JWK thumbprint (members in lexicographic order, no whitespace). */
export function jwkThumbprint(jwk: EcJwk): string {
  const canonical = JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y });
  return b64url(createHash("sha256").update(canonical).digest());
}

export async function createProvisionerKey(name: string): Promise<ProvisionerKey> {
  const pair = (await crypto.subtle.generateKey({ name: "ECDSA", namedCurve: "P-256" }, true, [
    "sign",
    "verify",
  ])) as CryptoKeyPair;
  const { kty, crv, x, y } = (await crypto.subtle.exportKey("jwk", pair.publicKey)) as EcJwk;
  const publicJwk = { kty, crv, x, y };
  return { name, privateKey: pair.privateKey, publicJwk, kid: jwkThumbprint(publicJwk) };
}

export interface TokenClaims {
  aud: string;
  sub: string;
  sans?: string[];
  /** Seconds since the epoch; default now. */
  nbf?: number;
  /** Seconds since the epoch; default nbf + 300 (step's default token lifetime). */
  exp?: number;
  /** Seconds since the epoch; default now, as `step ca token` (step-ca refuses an iat before its start). */
  iat?: number;
  jti?: string;
  sha?: string;
  iss?: string;
}

export async function signOneTimeToken(
  key: ProvisionerKey,
  claims: TokenClaims,
  header: { alg?: string; kid?: string } = {},
): Promise<string> {
  const now = Math.floor(Date.now() / 1000);
  const nbf = claims.nbf ?? now;
  const payload = {
    iss: claims.iss ?? key.name,
    aud: claims.aud,
    sub: claims.sub,
    sans: claims.sans ?? [claims.sub],
    nbf,
    iat: claims.iat ?? now,
    exp: claims.exp ?? nbf + 300,
    jti: claims.jti ?? randomBytes(32).toString("hex"),
    ...(claims.sha ? { sha: claims.sha } : {}),
  };
  const protectedHeader = { alg: header.alg ?? "ES256", kid: header.kid ?? key.kid, typ: "JWT" };
  const signingInput = `${b64url(JSON.stringify(protectedHeader))}.${b64url(JSON.stringify(payload))}`;
  const sig = await crypto.subtle.sign(
    { name: "ECDSA", hash: "SHA-256" },
    key.privateKey,
    new TextEncoder().encode(signingInput),
  );
  return `${signingInput}.${b64url(new Uint8Array(sig))}`;
}
