// The proxy's Step-CA identity over its lifetime: first boot (one-time token + CSR →
// /1.0/sign), renewal over mTLS at 2/3 of the lifetime with jitter, retries with backoff while
// the CA is down — keeping the old certificate, which stays in use until it expires — and
// polling /roots so a root rotation reaches the proxy's agent trust bundle. The proxy hears of
// new material only through callbacks (`onRenewed`, `onTrustBundle`) and swaps its TLS
// context itself without dropping connections. Clock, randomness and timers are injected so
// tests drive renewal without sleeping.
// Must never log or emit a token, key or certificate body: events carry dates, codes, names.
import { createPrivateKey, createPublicKey } from "node:crypto";
import { sha256Fingerprint, x509 } from "../pki/x509.ts";
import type { CertificateStore, StoredCredentials } from "./certificate-store.ts";
import { createKeyAndCsr } from "./csr.ts";
import { EnrollError } from "./enroll-error.ts";
import {
  type BackoffOptions,
  DEFAULT_BACKOFF,
  renewalDelayMs,
  retryDelayMs,
} from "./renewal-schedule.ts";
import type { ClientCredentials, IssuedCertificate } from "./stepca-client.ts";

/** What the enrollment needs from the CA (StepCaClient implements it). */
export interface CaApi {
  readonly signAudience: string;
  sign(csrPem: string, ott: string): Promise<IssuedCertificate>;
  renew(current: ClientCredentials): Promise<IssuedCertificate>;
  roots(): Promise<string[]>;
}

export interface Credentials extends StoredCredentials {
  notBefore: Date;
  notAfter: Date;
  serial: string;
}

export interface Scheduler {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const realScheduler: Scheduler = {
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (h) => clearTimeout(h as ReturnType<typeof setTimeout>),
};

export type EnrollmentEvent =
  | { type: "loaded"; notAfter: Date }
  | { type: "enrolled"; notAfter: Date }
  | { type: "renewal-scheduled"; inMs: number }
  | { type: "renewed"; notAfter: Date }
  | { type: "renew-failed"; code: string; attempt: number; retryInMs: number }
  | { type: "expired"; notAfter: Date }
  | { type: "roots-changed"; fingerprints: string[] }
  | { type: "roots-failed"; code: string };

/** An event as an audit line's fields (names, times and codes; certificates are not secret). */
export function enrollmentFields(e: EnrollmentEvent): Record<string, string | number> {
  const out: Record<string, string | number> = {};
  for (const [k, v] of Object.entries(e)) {
    out[k] = v instanceof Date ? v.toISOString() : Array.isArray(v) ? v.join(",") : v;
  }
  return out;
}

export interface EnrollmentOptions {
  ca: CaApi;
  /** Certificate subject (CN) — must equal the token's `sub`. */
  subject: string;
  /** SANs — must equal the token's `sans`. */
  sans: readonly string[];
  /** The one-time token, read only when a new enrollment is needed (null: none available). */
  readToken: () => Promise<string | null>;
  store: CertificateStore;
  /** Called after every renewal or re-enrollment, with the new leaf, key and intermediates. */
  onRenewed: (certPem: string, keyPem: string, chainPem: string) => void | Promise<void>;
  /** Called when the set of roots served by the CA changes (PEM bundle of all of them). */
  onTrustBundle?: (rootsPem: string) => void | Promise<void>;
  onEvent?: (e: EnrollmentEvent) => void;
  now?: () => number;
  random?: () => number;
  scheduler?: Scheduler;
  backoff?: BackoffOptions;
  /** Poll /roots this often (0 or absent: only on demand through refreshRoots()). */
  rootsPollMs?: number;
  /** How many times start() retries an unreachable CA before giving up (default 8). */
  startAttempts?: number;
}

function describe(stored: StoredCredentials): Credentials {
  const leaf = new x509.X509Certificate(stored.certPem);
  return {
    ...stored,
    notBefore: leaf.notBefore,
    notAfter: leaf.notAfter,
    serial: leaf.serialNumber,
  };
}

function keyMatchesCert(keyPem: string, certPem: string): boolean {
  const fromKey = createPublicKey(createPrivateKey(keyPem)).export({ type: "spki", format: "der" });
  const fromCert = new Uint8Array(new x509.X509Certificate(certPem).publicKey.rawData);
  return Buffer.compare(Buffer.from(fromKey), Buffer.from(fromCert)) === 0;
}

function fromIssued(issued: IssuedCertificate, keyPem: string): StoredCredentials {
  const certPem = issued.crt.endsWith("\n") ? issued.crt : `${issued.crt}\n`;
  const chainPem = issued.certChain
    .slice(1)
    .map((p) => (p.endsWith("\n") ? p : `${p}\n`))
    .join("");
  if (!keyMatchesCert(keyPem, certPem)) {
    throw new EnrollError("bad-response", "the issued certificate does not match our key");
  }
  return { certPem, chainPem, keyPem };
}

export class CertificateEnrollment {
  readonly #o: EnrollmentOptions;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #timers: Scheduler;
  #current: Credentials | null = null;
  #renewTimer: unknown = null;
  #rootsTimer: unknown = null;
  #attempt = 0;
  #rootsFingerprints: string[] = [];
  #rootsPem = "";
  #stopped = false;
  #expiredReported = false;

  constructor(opts: EnrollmentOptions) {
    this.#o = opts;
    this.#now = opts.now ?? Date.now;
    this.#random = opts.random ?? Math.random;
    this.#timers = opts.scheduler ?? realScheduler;
  }

  /** The certificate in use (the old one until a renewal succeeds). */
  current(): Credentials | null {
    return this.#current;
  }

  /** The CA's roots as last fetched, PEM bundle ("" before the first fetch). */
  trustBundle(): string {
    return this.#rootsPem;
  }

  /**
   * Loads a still-valid certificate from the store or enrolls with the one-time token, then
   * schedules renewal. Resolves with the credentials to serve with.
   */
  async start(): Promise<Credentials> {
    const stored = await this.#o.store.load();
    if (stored) {
      const c = describe(stored);
      if (this.#now() < c.notAfter.getTime() && keyMatchesCert(c.keyPem, c.certPem)) {
        this.#current = c;
        this.#emit({ type: "loaded", notAfter: c.notAfter });
      }
    }
    if (!this.#current) this.#current = await this.#enrollWithRetries();
    await this.refreshRoots().catch(() => false);
    this.#scheduleRenewal();
    this.#scheduleRootsPoll();
    return this.#current;
  }

  stop(): void {
    this.#stopped = true;
    if (this.#renewTimer !== null) this.#timers.clearTimeout(this.#renewTimer);
    if (this.#rootsTimer !== null) this.#timers.clearTimeout(this.#rootsTimer);
    this.#renewTimer = null;
    this.#rootsTimer = null;
  }

  /**
   * One renewal attempt now (what the timer runs). On failure the old certificate stays in
   * use and a retry is scheduled; resolves true when a new certificate is in place.
   */
  async renewNow(): Promise<boolean> {
    const cur = this.#current;
    if (!cur || this.#stopped) return false;
    this.#clearRenewTimer();
    try {
      const now = this.#now();
      let next: StoredCredentials;
      if (now < cur.notAfter.getTime()) {
        const issued = await this.#o.ca.renew({
          certChainPem: cur.certPem + cur.chainPem,
          keyPem: cur.keyPem,
        });
        next = fromIssued(issued, cur.keyPem);
      } else {
        // mTLS renewal needs a valid certificate; after expiry only a fresh token helps.
        if (!this.#expiredReported) {
          this.#expiredReported = true;
          this.#emit({ type: "expired", notAfter: cur.notAfter });
        }
        next = await this.#enrollOnce();
      }
      await this.#install(next, "renewed");
      return true;
    } catch (err) {
      if (this.#stopped) return false;
      const code = err instanceof EnrollError ? err.code : "internal";
      const now = this.#now();
      const notAfter = cur.notAfter.getTime();
      const retryInMs = retryDelayMs(
        this.#attempt,
        now,
        now < notAfter ? notAfter : null,
        this.#random(),
        this.#o.backoff ?? DEFAULT_BACKOFF,
      );
      this.#emit({ type: "renew-failed", code, attempt: this.#attempt, retryInMs });
      this.#attempt++;
      this.#renewTimer = this.#timers.setTimeout(() => void this.renewNow(), retryInMs);
      return false;
    }
  }

  /** Fetches /roots; calls onTrustBundle when the set changed. Resolves true on a change. */
  async refreshRoots(): Promise<boolean> {
    let roots: string[];
    try {
      roots = await this.#o.ca.roots();
    } catch (err) {
      this.#emit({
        type: "roots-failed",
        code: err instanceof EnrollError ? err.code : "internal",
      });
      throw err;
    }
    const fps = roots.map((p) => sha256Fingerprint(new x509.X509Certificate(p).rawData)).sort();
    const first = this.#rootsFingerprints.length === 0;
    if (!first && fps.join() === this.#rootsFingerprints.join()) return false;
    this.#rootsFingerprints = fps;
    this.#rootsPem = roots.map((p) => (p.endsWith("\n") ? p : `${p}\n`)).join("");
    if (first) return false;
    this.#emit({ type: "roots-changed", fingerprints: fps });
    await this.#o.onTrustBundle?.(this.#rootsPem);
    return true;
  }

  async #install(next: StoredCredentials, kind: "renewed" | "enrolled"): Promise<void> {
    await this.#o.store.save(next);
    const c = describe(next);
    this.#current = c;
    this.#attempt = 0;
    this.#expiredReported = false;
    // Told once the holder has it in force (the proxy: every event loop serves it).
    await this.#o.onRenewed(c.certPem, c.keyPem, c.chainPem);
    this.#emit({ type: kind, notAfter: c.notAfter });
    this.#scheduleRenewal();
  }

  async #enrollOnce(): Promise<StoredCredentials> {
    const token = await this.#o.readToken();
    if (!token) throw new EnrollError("bad-config", "no enrollment token available");
    const { keyPem, csrPem } = await createKeyAndCsr(this.#o.subject, this.#o.sans);
    const issued = await this.#o.ca.sign(csrPem, token);
    return fromIssued(issued, keyPem);
  }

  async #enrollWithRetries(): Promise<Credentials> {
    const attempts = this.#o.startAttempts ?? 8;
    for (let i = 0; ; i++) {
      try {
        const stored = await this.#enrollOnce();
        await this.#o.store.save(stored);
        const c = describe(stored);
        this.#emit({ type: "enrolled", notAfter: c.notAfter });
        return c;
      } catch (err) {
        // Only an unreachable CA is worth waiting for; a refused token will not improve.
        if (!(err instanceof EnrollError) || err.code !== "ca-unreachable" || i + 1 >= attempts)
          throw err;
        const ms = retryDelayMs(
          i,
          this.#now(),
          null,
          this.#random(),
          this.#o.backoff ?? DEFAULT_BACKOFF,
        );
        await new Promise<void>((r) => this.#timers.setTimeout(r, ms));
      }
    }
  }

  #scheduleRenewal(): void {
    const c = this.#current;
    if (!c || this.#stopped) return;
    this.#clearRenewTimer();
    const inMs = renewalDelayMs(
      { notBefore: c.notBefore.getTime(), notAfter: c.notAfter.getTime() },
      this.#now(),
      this.#random(),
    );
    this.#emit({ type: "renewal-scheduled", inMs });
    this.#renewTimer = this.#timers.setTimeout(() => void this.renewNow(), inMs);
  }

  #scheduleRootsPoll(): void {
    const every = this.#o.rootsPollMs ?? 0;
    if (every <= 0 || this.#stopped) return;
    this.#rootsTimer = this.#timers.setTimeout(() => {
      this.refreshRoots()
        .catch(() => false)
        .finally(() => this.#scheduleRootsPoll());
    }, every);
  }

  #clearRenewTimer(): void {
    if (this.#renewTimer !== null) this.#timers.clearTimeout(this.#renewTimer);
    this.#renewTimer = null;
  }

  #emit(e: EnrollmentEvent): void {
    this.#o.onEvent?.(e);
  }
}
