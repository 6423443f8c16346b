// HTTP client for the parts of the Step-CA API the proxy uses: bootstrap (GET /root/{sha256},
// pinned by fingerprint), GET /roots, POST /1.0/sign with a one-time token and a CSR, and
// POST /1.0/renew over mTLS with the current certificate. Pure transport: no scheduling, no
// files. Every request after bootstrap verifies the CA's TLS certificate against the pinned
// root. Must never put the token, a key or a response body into an error message.
import { request } from "node:https";
import { normalizeFingerprint, sha256Fingerprint, x509 } from "../pki/x509.ts";
import { EnrollError } from "./enroll-error.ts";

/** The JSON shape of 201 answers of /1.0/sign and /1.0/renew (api/sign.go SignResponse). */
export interface IssuedCertificate {
  /** The leaf, PEM. */
  crt: string;
  /** The issuing intermediate, PEM (certChain[1]). */
  ca: string;
  /** Leaf first, then intermediates, PEM each. */
  certChain: string[];
}

export interface ClientCredentials {
  /** Leaf followed by its intermediates, PEM. */
  certChainPem: string;
  keyPem: string;
}

export interface StepCaClientOptions {
  /** https://host:port of the CA. */
  caUrl: string;
  /** The root(s) the CA's TLS certificate must chain to, PEM. */
  rootPem: string;
  /** Per-request timeout (default 10 s). */
  timeoutMs?: number;
}

interface RawResponse {
  status: number;
  body: string;
}

function send(
  url: URL,
  method: "GET" | "POST",
  body: string | null,
  tls: { ca?: string; cert?: string; key?: string; insecure?: boolean },
  timeoutMs: number,
): Promise<RawResponse> {
  return new Promise((resolve, reject) => {
    const req = request(
      url,
      {
        method,
        ca: tls.ca,
        cert: tls.cert,
        key: tls.key,
        rejectUnauthorized: !tls.insecure,
        minVersion: "TLSv1.2",
        agent: false,
        timeout: timeoutMs,
        headers:
          body === null
            ? {}
            : { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on("data", (c: Buffer) => chunks.push(c));
        res.on("end", () =>
          resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks).toString("utf8") }),
        );
        res.on("error", () =>
          reject(new EnrollError("ca-unreachable", `${method} ${url.pathname}: response aborted`)),
        );
      },
    );
    req.on("timeout", () => req.destroy(new Error("timeout")));
    req.on("error", (err: NodeJS.ErrnoException) =>
      reject(
        new EnrollError("ca-unreachable", `${method} ${url.pathname}: ${err.code ?? err.message}`),
      ),
    );
    req.end(body ?? undefined);
  });
}

function parseJson(res: RawResponse, what: string): Record<string, unknown> {
  try {
    const v = JSON.parse(res.body);
    if (v && typeof v === "object") return v as Record<string, unknown>;
  } catch {
    // fall through
  }
  throw new EnrollError("bad-response", `${what}: answer is not a JSON object`);
}

function expectOk(res: RawResponse, what: string, want: number[]): Record<string, unknown> {
  if (!want.includes(res.status)) {
    let message = "";
    try {
      const m = (JSON.parse(res.body) as { message?: unknown }).message;
      // The CA's own message (generic for 401/403); cut short so nothing large is echoed.
      if (typeof m === "string") message = `: ${m.slice(0, 200)}`;
    } catch {
      // no JSON error body
    }
    throw new EnrollError(
      "ca-rejected",
      `${what} refused with status ${res.status}${message}`,
      res.status,
    );
  }
  return parseJson(res, what);
}

function isPemCert(v: unknown): v is string {
  return typeof v === "string" && v.includes("-----BEGIN CERTIFICATE-----");
}

function issued(json: Record<string, unknown>, what: string): IssuedCertificate {
  const { crt, ca, certChain } = json;
  const chain = Array.isArray(certChain) ? certChain : [crt, ca];
  if (!isPemCert(crt) || !chain.every(isPemCert)) {
    throw new EnrollError("bad-response", `${what}: answer lacks crt/certChain PEM`);
  }
  return { crt, ca: isPemCert(ca) ? ca : "", certChain: chain as string[] };
}

/**
 * `step ca bootstrap` for the proxy: fetches the root whose SHA-256 fingerprint is pinned,
 * without trusting the CA's TLS yet, and accepts it only if its fingerprint matches.
 */
export async function bootstrapRoot(
  caUrl: string,
  fingerprint: string,
  timeoutMs = 10_000,
): Promise<string> {
  const want = normalizeFingerprint(fingerprint);
  const res = await send(
    new URL(`/root/${want}`, caUrl),
    "GET",
    null,
    { insecure: true },
    timeoutMs,
  );
  const json = expectOk(res, "GET /root", [200]);
  if (!isPemCert(json.ca))
    throw new EnrollError("bad-response", "GET /root: answer lacks a PEM root");
  const got = sha256Fingerprint(new x509.X509Certificate(json.ca).rawData);
  if (got !== want)
    throw new EnrollError(
      "fingerprint-mismatch",
      "GET /root: the root's fingerprint is not the pinned one",
    );
  return json.ca.endsWith("\n") ? json.ca : `${json.ca}\n`;
}

export class StepCaClient {
  readonly #url: URL;
  /** What the CA's TLS is verified with: the pinned root, and every root /roots gave since. */
  #root: string;
  readonly #pinned: string;
  readonly #timeoutMs: number;

  constructor(opts: StepCaClientOptions) {
    this.#url = new URL(opts.caUrl);
    if (this.#url.protocol !== "https:")
      throw new EnrollError("bad-config", "the CA URL must be https");
    this.#root = opts.rootPem;
    this.#pinned = opts.rootPem;
    this.#timeoutMs = opts.timeoutMs ?? 10_000;
  }

  /** The audience a sign token must carry: https://<ca>/1.0/sign. */
  get signAudience(): string {
    return new URL("/1.0/sign", this.#url).toString();
  }

  async health(): Promise<boolean> {
    const res = await send(
      new URL("/health", this.#url),
      "GET",
      null,
      { ca: this.#root },
      this.#timeoutMs,
    );
    return res.status === 200 && parseJson(res, "GET /health").status === "ok";
  }

  /** Every root the CA currently serves, PEM each (root rotation adds one). */
  async roots(): Promise<string[]> {
    const res = await send(
      new URL("/roots", this.#url),
      "GET",
      null,
      { ca: this.#root },
      this.#timeoutMs,
    );
    const json = expectOk(res, "GET /roots", [200, 201]);
    if (!Array.isArray(json.crts) || !json.crts.every(isPemCert)) {
      throw new EnrollError("bad-response", "GET /roots: answer lacks crts");
    }
    // Read over TLS the trusted roots verified, they are trusted in turn: when the CA moves
    // to an intermediate of a new root (a rotation's second step), it is still reached.
    const crts = json.crts as string[];
    this.#root = [this.#pinned, ...crts].map((p) => p.trim()).join("\n");
    return crts;
  }

  /** Exchanges a one-time token and a CSR for a certificate. */
  async sign(
    csrPem: string,
    ott: string,
    validity?: { notAfter?: string },
  ): Promise<IssuedCertificate> {
    const body = JSON.stringify({
      csr: csrPem,
      ott,
      ...(validity?.notAfter ? { notAfter: validity.notAfter } : {}),
    });
    const res = await send(
      new URL("/1.0/sign", this.#url),
      "POST",
      body,
      { ca: this.#root },
      this.#timeoutMs,
    );
    return issued(expectOk(res, "POST /1.0/sign", [200, 201]), "POST /1.0/sign");
  }

  /** Renews the presented certificate (mTLS); the CA keeps the key and the lifetime. */
  async renew(current: ClientCredentials): Promise<IssuedCertificate> {
    const res = await send(
      new URL("/1.0/renew", this.#url),
      "POST",
      "",
      { ca: this.#root, cert: current.certChainPem, key: current.keyPem },
      this.#timeoutMs,
    );
    return issued(expectOk(res, "POST /1.0/renew", [200, 201]), "POST /1.0/renew");
  }
}
