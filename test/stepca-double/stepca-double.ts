// A test double of the Step-CA HTTP API (smallstep/certificates), on loopback, for the
// proxy's enrollment client and the agent scripts' stand-in `step`. Every test that uses it
// also runs against the real step-ca 0.19.0 (test/stepca-real, Debian's packages; compose.yml
// pins 0.28.4), and where the two disagreed the double was corrected to the CA: audiences
// without their port, tokens issued before the CA's start refused, client certificates
// verified at the TLS layer, passive revocation. One difference kept: /roots answers 200 as
// current releases do, 0.19 answers 201 (test/stepca/stepca-api.test.ts says so).
// What it reproduces, and where each behaviour comes from in smallstep/certificates:
//   GET  /health          → 200 {"status":"ok"}                                  (api/api.go Health)
//   GET  /roots           → 200 {"crts":[PEM…]} every configured root             (api/api.go Roots;
//                            0.19 answered 201, current releases 200)
//   GET  /root/{sha256}   → 200 {"ca":PEM}; hex, case and '-' ignored; else 404   (api/api.go Root)
//   POST /1.0/sign        {csr, ott, notBefore?, notAfter?}                       (api/sign.go Sign)
//        400 "missing csr" / "invalid csr" (CSR signature checked) / "missing ott";
//        401 when the JWK token fails authorizeToken (authority/provisioner/jwk.go): ES256 JWS
//        signed by the provisioner key found by iss + header kid (the key's RFC 7638
//        thumbprint), iss = provisioner name, nbf/exp checked with one minute of leeway
//        (ValidateWithLeeway(…, time.Minute)), iat not in the future nor before the CA's start
//        (authority/authorize.go, start time in whole seconds), aud https://<dns>/1.0/sign or
//        /sign with any port (collection.go stripPort), sub non-empty, jti single use ("token
//        already used", authority/authorize.go);
//        403 when the CSR does not match the token: CN must equal sub (commonNameValidator),
//        SANs must equal the token's sans, default [sub] (defaultSANsValidator);
//        201 {"crt","ca","certChain":[leaf, intermediate]} — ca is certChain[1].
//   POST /1.0/renew       mTLS with the certificate to renew                      (api/renew.go Renew)
//        400 "missing client certificate"; a certificate that does not verify against the
//        roots (another CA's, expired) ends the TLS handshake (VerifyClientCertIfGiven); 401
//        if revoked; 201 as for sign. The new certificate keeps the public key, subject,
//        SANs and the lifetime: notBefore = now − backdate, notAfter = now + (old duration −
//        backdate) (authority/tls.go Renew; backdate defaults to one minute, settable here so
//        certificates of a few seconds work).
//   POST /1.0/revoke      {serial (decimal), ott?, passive, reasonCode}          (api/revoke.go)
//        passive only (else 501); with a provisioner token (aud …/1.0/revoke, single use) or
//        over mTLS with the certificate of that serial (else 400); 200 {"status":"ok"}.
//   Errors are JSON {"status":N,"message":…}; 401/403 carry the CA's generic text, as step-ca
//   hides details from clients (errs package); the reason is kept in `rejections` (the CA log).
// Leaves carry serverAuth + clientAuth and digitalSignature, as step-ca's default leaf template.
// Not modelled: ACME, SSH, CRL/OCSP (0.19 has neither), provisioner listing, templates.
// Test-only: it must never be imported by src/, and it listens on 127.0.0.1 only.

import {
  createServer as createHttpServer,
  type IncomingMessage,
  type ServerResponse,
} from "node:http";
import { createServer as createTlsServer, type TLSSocket } from "node:tls";
import {
  certToPem,
  exportPrivateKeyPem,
  generateP256KeyPair,
  OID_CLIENT_AUTH,
  OID_SERVER_AUTH,
  P256_ALGORITHM,
  randomSerialHex,
  sha256Fingerprint,
  x509,
} from "../../src/pki/x509.ts";
import { waitFor } from "../containers/tool-paths.ts";
import type { CaUnderTest } from "../stepca/ca-under-test.ts";
import { createProvisionerKey, type ProvisionerKey } from "./one-time-token.ts";

const GENERIC_401 =
  "The request lacked necessary authorization to be completed. Please see the certificate authority logs for more info.";
const GENERIC_403 =
  "The request was forbidden by the certificate authority. Please see the certificate authority logs for more info.";
const LEEWAY_S = 60;

export interface StepCaDoubleOptions {
  /** Lifetime of issued certificates when the request names none (step-ca default 24 h). */
  certLifetimeMs?: number;
  /** step-ca's authority backdate (default one minute). */
  backdateMs?: number;
  provisionerName?: string;
  /** Reuse a port (to "restart" the CA after close()). */
  port?: number;
  /** Reuse the PKI of an earlier instance (a CA that restarts keeps its keys and database). */
  state?: StepCaState;
}

export interface CaKey {
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
}

/** What survives a restart: roots, intermediate, provisioner, used token ids, revocations. */
export interface StepCaState {
  roots: CaKey[];
  intermediate: CaKey;
  /** Intermediates it issued under before (switchIssuer): what they signed still renews. */
  formerIntermediates: CaKey[];
  server: { certPem: string; keyPem: string };
  provisioner: ProvisionerKey;
  usedJti: Set<string>;
  /** Revoked serials, decimal (step-ca keys its database by big.Int.String()). */
  revoked: Set<string>;
}

export interface StepCaDouble extends CaUnderTest {
  state: StepCaState;
  /** Reasons the CA refused requests, newest last (the CA's log). */
  rejections: string[];
  /** Counts of successful requests by endpoint. */
  issued: { sign: number; renew: number };
}

export async function makeCa(
  cn: string,
  issuer: CaKey | null,
  pathLen: number,
  days = 3650,
): Promise<CaKey> {
  const keys = await generateP256KeyPair();
  const now = Date.now();
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: `CN=${cn}`,
    issuer: issuer ? issuer.cert.subject : `CN=${cn}`,
    notBefore: new Date(now - 3_600_000),
    notAfter: new Date(now + days * 86_400_000),
    publicKey: keys.publicKey,
    signingKey: issuer ? issuer.keys.privateKey : keys.privateKey,
    signingAlgorithm: P256_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(true, pathLen, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      ...(issuer ? [await x509.AuthorityKeyIdentifierExtension.create(issuer.keys.publicKey)] : []),
    ],
  });
  return { cert, keys };
}

function sanEntries(names: readonly string[]): x509.JsonGeneralName[] {
  return names.map((n) => {
    if (/^\d{1,3}(\.\d{1,3}){3}$/.test(n) || (n.includes(":") && !n.includes("://"))) {
      return { type: "ip", value: n };
    }
    if (n.includes("://")) return { type: "url", value: n };
    if (n.includes("@")) return { type: "email", value: n };
    return { type: "dns", value: n };
  });
}

async function issueLeaf(
  ca: CaKey,
  subjectCn: string,
  publicKey: CryptoKey,
  sans: readonly string[],
  notBefore: Date,
  notAfter: Date,
): Promise<x509.X509Certificate> {
  return x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: `CN=${subjectCn}`,
    issuer: ca.cert.subject,
    notBefore,
    notAfter,
    publicKey,
    signingKey: ca.keys.privateKey,
    signingAlgorithm: P256_ALGORITHM,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([OID_SERVER_AUTH, OID_CLIENT_AUTH]),
      new x509.SubjectAlternativeNameExtension(sanEntries(sans)),
      await x509.SubjectKeyIdentifierExtension.create(publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
    ],
  });
}

/** The SAN values of a certificate or CSR, as strings, sorted. */
export function sanValues(ext: x509.SubjectAlternativeNameExtension | null): string[] {
  if (!ext) return [];
  return ext.names.items.map((n) => n.value).sort();
}

function csrSanValues(csr: x509.Pkcs10CertificateRequest): string[] {
  const ext = csr.getExtension("2.5.29.17");
  return ext ? sanValues(new x509.SubjectAlternativeNameExtension(ext.rawData)) : [];
}

export async function createStepCaState(provisionerName = "enroll"): Promise<StepCaState> {
  const root = await makeCa("SLAPENIR Test Root CA", null, 1);
  const intermediate = await makeCa("SLAPENIR Test Intermediate CA", root, 0);
  return {
    roots: [root],
    intermediate,
    formerIntermediates: [],
    server: await serverCertUnder(intermediate),
    provisioner: await createProvisionerKey(provisionerName),
    usedJti: new Set(),
    revoked: new Set(),
  };
}

class HttpFailure extends Error {
  constructor(
    readonly status: number,
    readonly clientMessage: string,
    readonly reason: string,
  ) {
    super(reason);
  }
}

function fromB64url(s: string): Uint8Array<ArrayBuffer> {
  return Uint8Array.from(Buffer.from(s, "base64url"));
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}

export async function startStepCaDouble(opts: StepCaDoubleOptions = {}): Promise<StepCaDouble> {
  const state = opts.state ?? (await createStepCaState(opts.provisionerName));
  const lifetimeMs = opts.certLifetimeMs ?? 24 * 3_600_000;
  const backdateMs = opts.backdateMs ?? 60_000;
  const rejections: string[] = [];
  const issued = { sign: 0, renew: 0 };
  /** When this CA (re)started: step-ca refuses tokens issued before it. */
  let startedAt = Date.now() / 1000;

  const rootsPem = () => state.roots.map((r) => certToPem(r.cert)).join("");
  const chainPem = (leaf: x509.X509Certificate) => ({
    crt: certToPem(leaf),
    ca: certToPem(state.intermediate.cert),
    certChain: [certToPem(leaf), certToPem(state.intermediate.cert)],
  });

  async function authorizeToken(
    ott: string,
    endpoint: "sign" | "revoke",
  ): Promise<{ sub: string; sans: string[] }> {
    const deny = (reason: string) => new HttpFailure(401, GENERIC_401, reason);
    const parts = ott.split(".");
    if (parts.length !== 3) throw deny("error parsing jwk token");
    const [h, p, s] = parts as [string, string, string];
    let header: { alg?: string; kid?: string };
    let claims: Record<string, unknown>;
    try {
      header = JSON.parse(Buffer.from(h, "base64url").toString("utf8"));
      claims = JSON.parse(Buffer.from(p, "base64url").toString("utf8"));
    } catch {
      throw deny("error parsing jwk token");
    }
    const prov = state.provisioner;
    if (claims.iss !== prov.name || header.kid !== prov.kid) {
      throw deny("provisioner not found for the token's iss and kid");
    }
    if (header.alg !== "ES256") throw deny("unexpected token algorithm");
    const pub = await crypto.subtle.importKey(
      "jwk",
      prov.publicJwk as never,
      { name: "ECDSA", namedCurve: "P-256" },
      false,
      ["verify"],
    );
    const ok = await crypto.subtle.verify(
      { name: "ECDSA", hash: "SHA-256" },
      pub,
      fromB64url(s),
      new TextEncoder().encode(`${h}.${p}`),
    );
    if (!ok) throw deny("error parsing jwk claims: signature invalid");
    const now = Date.now() / 1000;
    const nbf = Number(claims.nbf);
    const exp = Number(claims.exp);
    const iat = Number(claims.iat);
    // authority.go truncates its start time to the second; a token of that second passes.
    if (Number.isFinite(iat) && iat < Math.floor(startedAt))
      throw deny(
        "authority.authorizeToken: token issued before the bootstrap of certificate authority",
      );
    if (Number.isFinite(iat) && now + LEEWAY_S < iat)
      throw deny("invalid jwk claims: token issued in the future (iat)");
    if (Number.isFinite(nbf) && now + LEEWAY_S < nbf)
      throw deny("invalid jwk claims: token not valid yet (nbf)");
    if (!Number.isFinite(exp) || now - LEEWAY_S > exp)
      throw deny("invalid jwk claims: token is expired (exp)");
    const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
    if (!aud.some((a) => audienceMatches(String(a), endpoint))) {
      throw deny(`invalid jwk token audience claim (aud) for ${endpoint}`);
    }
    if (typeof claims.sub !== "string" || claims.sub === "")
      throw deny("jwk token subject cannot be empty");
    if (typeof claims.jti !== "string" || claims.jti === "") throw deny("token has no jti");
    if (state.usedJti.has(claims.jti)) throw deny("authority.authorizeToken: token already used");
    state.usedJti.add(claims.jti);
    const sans =
      Array.isArray(claims.sans) && claims.sans.length > 0 ? claims.sans.map(String) : [claims.sub];
    return { sub: claims.sub, sans };
  }

  /** step-ca compares an audience with its own without the port (collection.go stripPort). */
  function audienceMatches(aud: string, endpoint: "sign" | "revoke"): boolean {
    let u: URL;
    try {
      u = new URL(aud);
    } catch {
      return false;
    }
    return (
      u.protocol === "https:" &&
      ["127.0.0.1", "localhost"].includes(u.hostname) &&
      [`/1.0/${endpoint}`, `/${endpoint}`].includes(u.pathname)
    );
  }

  /** Passive revocation (api/revoke.go): by a provisioner token, or over mTLS by the certificate itself. */
  async function revoke(body: string, peer: Buffer | null) {
    let req: { serial?: unknown; ott?: unknown; passive?: unknown; reasonCode?: unknown };
    try {
      req = JSON.parse(body);
    } catch {
      throw new HttpFailure(400, "error reading request body", "error reading request body");
    }
    if (typeof req.serial !== "string" || req.serial === "")
      throw new HttpFailure(400, "missing serial", "missing serial");
    if (req.passive !== true) {
      throw new HttpFailure(
        501,
        "non-passive revocation not implemented",
        "non-passive revocation not implemented",
      );
    }
    if (typeof req.ott === "string" && req.ott !== "") {
      await authorizeToken(req.ott, "revoke");
    } else {
      if (!peer) {
        throw new HttpFailure(400, "missing ott or client certificate", "missing ott or client");
      }
      const serial = BigInt(`0x${new x509.X509Certificate(new Uint8Array(peer)).serialNumber}`);
      if (serial.toString(10) !== req.serial) {
        const m = "serial number in client certificate different than body";
        throw new HttpFailure(400, m, m);
      }
    }
    state.revoked.add(req.serial);
    return { status: "ok" };
  }

  async function sign(body: string) {
    let req: { csr?: unknown; ott?: unknown; notAfter?: unknown; notBefore?: unknown };
    try {
      req = JSON.parse(body);
    } catch {
      throw new HttpFailure(400, "error reading request body", "error reading request body");
    }
    if (typeof req.csr !== "string" || req.csr === "") {
      throw new HttpFailure(400, "missing csr", "missing csr");
    }
    let csr: x509.Pkcs10CertificateRequest;
    try {
      csr = new x509.Pkcs10CertificateRequest(req.csr);
      if (!(await csr.verify())) throw new Error("bad signature");
    } catch {
      throw new HttpFailure(400, "invalid csr", "invalid csr");
    }
    if (typeof req.ott !== "string" || req.ott === "") {
      throw new HttpFailure(400, "missing ott", "missing ott");
    }
    const { sub, sans } = await authorizeToken(req.ott, "sign");
    const cn = csr.subjectName.getField("CN")[0] ?? "";
    if (cn !== sub) {
      throw new HttpFailure(
        403,
        GENERIC_403,
        `certificate request does not contain the valid common name - got ${cn}, want ${sub}`,
      );
    }
    const csrSans = csrSanValues(csr);
    if (JSON.stringify(csrSans) !== JSON.stringify([...sans].sort())) {
      throw new HttpFailure(
        403,
        GENERIC_403,
        `certificate request does not contain the valid SANs - got ${csrSans}, want ${sans}`,
      );
    }
    const now = Date.now();
    const notBefore =
      typeof req.notBefore === "string" && req.notBefore
        ? new Date(req.notBefore)
        : new Date(now - backdateMs);
    const notAfter =
      typeof req.notAfter === "string" && req.notAfter
        ? new Date(req.notAfter)
        : new Date(now + lifetimeMs);
    if (!(notBefore < notAfter)) throw new HttpFailure(403, GENERIC_403, "invalid validity window");
    const leaf = await issueLeaf(
      state.intermediate,
      sub,
      await csr.publicKey.export(),
      csrSans,
      notBefore,
      notAfter,
    );
    issued.sign++;
    return chainPem(leaf);
  }

  async function renew(peer: Buffer | null) {
    if (!peer)
      throw new HttpFailure(400, "missing client certificate", "missing client certificate");
    const cert = new x509.X509Certificate(new Uint8Array(peer));
    // Our own verification rather than trusting the TLS layer's verdict alone: signature by
    // one of this CA's intermediates (step-ca verifies the chain to any of its roots, so a
    // certificate from before a switch of intermediate renews) and the validity window.
    let byUs = false;
    for (const i of [state.intermediate, ...state.formerIntermediates]) {
      if (cert.issuer !== i.cert.subject) continue;
      byUs ||= await cert.verify({ publicKey: i.keys.publicKey, signatureOnly: true });
    }
    const now = Date.now();
    if (!byUs) throw new HttpFailure(401, GENERIC_401, "certificate not issued by this CA");
    if (now < cert.notBefore.getTime() || now > cert.notAfter.getTime()) {
      throw new HttpFailure(401, GENERIC_401, "certificate is outside its validity window");
    }
    if (state.revoked.has(BigInt(`0x${cert.serialNumber}`).toString(10))) {
      throw new HttpFailure(
        401,
        GENERIC_401,
        "authority.authorizeRenew: certificate has been revoked",
      );
    }
    const duration = cert.notAfter.getTime() - cert.notBefore.getTime();
    const notBefore = new Date(now - backdateMs);
    const notAfter = new Date(now + duration - backdateMs);
    const cn = cert.subjectName.getField("CN")[0] ?? "";
    const sans = sanValues(cert.getExtension(x509.SubjectAlternativeNameExtension));
    const leaf = await issueLeaf(
      state.intermediate,
      cn,
      await cert.publicKey.export(),
      sans,
      notBefore,
      notAfter,
    );
    issued.renew++;
    return chainPem(leaf);
  }

  async function route(
    req: IncomingMessage,
    peer: Buffer | null,
  ): Promise<{ status: number; body: unknown }> {
    const path = (req.url ?? "/").split("?")[0]!;
    if (req.method === "GET" && path === "/health") return { status: 200, body: { status: "ok" } };
    if (req.method === "GET" && path === "/roots") {
      return { status: 200, body: { crts: state.roots.map((r) => certToPem(r.cert)) } };
    }
    const rootMatch = /^\/root\/([^/]+)$/.exec(path);
    if (req.method === "GET" && rootMatch) {
      const want = decodeURIComponent(rootMatch[1]!).replaceAll("-", "").toLowerCase();
      const found = state.roots.find((r) => sha256Fingerprint(r.cert.rawData) === want);
      if (!found) throw new HttpFailure(404, `${req.url} was not found`, "root not found");
      return { status: 200, body: { ca: certToPem(found.cert) } };
    }
    if (req.method === "POST" && (path === "/1.0/sign" || path === "/sign")) {
      return { status: 201, body: await sign(await readBody(req)) };
    }
    if (req.method === "POST" && (path === "/1.0/renew" || path === "/renew")) {
      await readBody(req);
      return { status: 201, body: await renew(peer) };
    }
    if (req.method === "POST" && (path === "/1.0/revoke" || path === "/revoke")) {
      return { status: 200, body: await revoke(await readBody(req), peer) };
    }
    throw new HttpFailure(404, "not found", `no route ${req.method} ${path}`);
  }

  // TLS is terminated by a tls.Server and each socket handed to an http.Server: in Bun, the
  // socket an https.Server gives request handlers has no getPeerCertificate(), and /renew
  // needs the client certificate. The peer certificate is read at the TLS layer.
  const peers = new WeakMap<object, Buffer>();
  const open = new Set<TLSSocket>();
  const http = createHttpServer((req: IncomingMessage, res: ServerResponse) => {
    route(req, peers.get(req.socket) ?? null)
      .then(({ status, body }) => {
        res.writeHead(status, { "content-type": "application/json" });
        res.end(JSON.stringify(body));
      })
      .catch((err: unknown) => {
        const f =
          err instanceof HttpFailure
            ? err
            : new HttpFailure(
                500,
                "The certificate authority encountered an Internal Server Error.",
                String(err),
              );
        rejections.push(f.reason);
        res.writeHead(f.status, { "content-type": "application/json" });
        res.end(JSON.stringify({ status: f.status, message: f.clientMessage }));
      });
  });
  let server: ReturnType<typeof createTlsServer> | null = null;
  const tlsOptions = () => ({
    key: state.server.keyPem,
    cert: state.server.certPem,
    ca: rootsPem(),
    requestCert: true,
    // Client certificates are optional (only /renew and /revoke use one).
    rejectUnauthorized: false,
    minVersion: "TLSv1.2" as const,
  });
  const listen = async (port: number): Promise<number> => {
    const srv = createTlsServer(tlsOptions(), (socket: TLSSocket) => {
      const raw = socket.getPeerCertificate(false)?.raw;
      // step-ca verifies a client certificate that is given (Go's VerifyClientCertIfGiven,
      // against its roots, at the current time): another CA's or an expired one ends the
      // connection at the TLS layer, with no HTTP answer.
      if (raw && !socket.authorized) {
        rejections.push(`tls: client certificate refused (${socket.authorizationError})`);
        socket.destroy();
        return;
      }
      if (raw) peers.set(socket, raw);
      open.add(socket);
      socket.once("close", () => open.delete(socket));
      http.emit("connection", socket);
    });
    await new Promise<void>((resolve, reject) => {
      srv.once("error", reject);
      srv.listen(port, "127.0.0.1", () => resolve());
    });
    server = srv;
    const bound = (srv.address() as { port: number }).port;
    startedAt = Date.now() / 1000;
    return bound;
  };
  const stop = () =>
    new Promise<void>((resolve) => {
      const srv = server;
      server = null;
      if (!srv) return resolve();
      srv.close(() => resolve());
      for (const s of open) s.destroy();
    });
  const port = await listen(opts.port ?? 0);
  const url = `https://127.0.0.1:${port}`;
  const firstRoot = state.roots[0]!;

  return {
    kind: "double",
    url,
    port,
    state,
    provisioner: state.provisioner,
    signAudience: `${url}/1.0/sign`,
    revokeAudience: `${url}/1.0/revoke`,
    rootPem: certToPem(firstRoot.cert),
    rootFingerprint: sha256Fingerprint(firstRoot.cert.rawData),
    rootsBundlePem: rootsPem,
    rejections,
    issued,
    async refused(text: string) {
      await waitFor(`the double refusing with "${text}"`, () =>
        rejections.some((r) => r.includes(text)) ? true : null,
      );
    },
    stop,
    async start() {
      await listen(port);
    },
    async rotateRoot() {
      const root = await makeCa(`SLAPENIR Test Root CA ${state.roots.length + 1}`, null, 1);
      state.roots.push(root);
      // As step-ca restarted with the longer root list: client certificates under the new
      // root verify too.
      server?.setSecureContext(tlsOptions());
      const pem = certToPem(root.cert);
      return { rootPem: pem, fingerprint: sha256Fingerprint(root.cert.rawData), ca: root };
    },
    async switchIssuer() {
      await issueUnder(state, state.roots.at(-1)!);
      server?.setSecureContext(tlsOptions());
    },
    close: stop,
  };
}

/** The CA's intermediate and its own TLS certificate made again under `root`. */
export async function issueUnder(state: StepCaState, root: CaKey): Promise<void> {
  const intermediate = await makeCa(`${root.cert.subject.slice(3)} Intermediate`, root, 0);
  state.formerIntermediates.push(state.intermediate);
  state.intermediate = intermediate;
  state.server = await serverCertUnder(intermediate);
}

/** The CA's own TLS certificate, as step-ca makes it from its intermediate at start. */
async function serverCertUnder(intermediate: CaKey): Promise<StepCaState["server"]> {
  const keys = await generateP256KeyPair();
  const now = Date.now();
  const cert = await issueLeaf(
    intermediate,
    "Step Online CA",
    keys.publicKey,
    ["localhost", "127.0.0.1"],
    new Date(now - 3_600_000),
    new Date(now + 365 * 86_400_000),
  );
  return {
    certPem: certToPem(cert) + certToPem(intermediate.cert),
    keyPem: await exportPrivateKeyPem(keys.privateKey),
  };
}

/** A key pair and certificate signed directly by `ca` (test fixtures: agents, peers). */
export async function issueFromDouble(
  ca: CaKey,
  cn: string,
  sans: readonly string[],
  lifetimeMs: number,
): Promise<{ certPem: string; keyPem: string; chainPem: string }> {
  const keys = await generateP256KeyPair();
  const now = Date.now();
  const leaf = await issueLeaf(
    ca,
    cn,
    keys.publicKey,
    sans,
    new Date(now - 1000),
    new Date(now + lifetimeMs),
  );
  return {
    certPem: certToPem(leaf),
    keyPem: await exportPrivateKeyPem(keys.privateKey),
    chainPem: certToPem(ca.cert),
  };
}
