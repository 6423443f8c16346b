// The proxy's Step-CA client against the real step-ca (0.19, from Debian's packages) and the
// project's double, one suite for both (test/stepca/implementations.ts): first boot, renewal
// at 2/3 over mTLS, the CA down at first boot and during renewal (old certificate kept,
// retries), expiry, token reuse refused, and the root-rotation hook driving a live TLS
// server's trust bundle while a connection stays open. Timers are a manual scheduler: the
// test fires the due timer and checks the delay that was asked for, instead of sleeping —
// except in the one test that lets a short certificate renew by itself.
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import * as tls from "node:tls";
import { afterSecond, type CaOptions, type CaUnderTest } from "../../test/stepca/ca-under-test.ts";
import { CA_IMPLEMENTATIONS } from "../../test/stepca/implementations.ts";
import { signOneTimeToken } from "../../test/stepca-double/one-time-token.ts";
import { issueFromDouble } from "../../test/stepca-double/stepca-double.ts";
import { x509 } from "../pki/x509.ts";
import { FileCertificateStore, MemoryCertificateStore } from "./certificate-store.ts";
import { EnrollError } from "./enroll-error.ts";
import { CertificateEnrollment, type EnrollmentEvent, type Scheduler } from "./enrollment.ts";
import { renewalDelayMs, retryDelayMs } from "./renewal-schedule.ts";
import { bootstrapRoot, StepCaClient } from "./stepca-client.ts";

const SUBJECT = "proxy.slapenir.internal";
const SANS = ["proxy.slapenir.internal", "proxy"];

class ManualScheduler implements Scheduler {
  #next = 1;
  readonly pending = new Map<number, { fn: () => void; ms: number }>();
  setTimeout(fn: () => void, ms: number): unknown {
    const id = this.#next++;
    this.pending.set(id, { fn, ms });
    return id;
  }
  clearTimeout(handle: unknown): void {
    this.pending.delete(handle as number);
  }
  /** The single pending timer's delay (asserts there is exactly one). */
  soleDelay(): number {
    expect(this.pending.size).toBe(1);
    return [...this.pending.values()][0]!.ms;
  }
  /** Runs the single pending timer. */
  fire(): void {
    const [id, t] = [...this.pending.entries()][0]!;
    this.pending.delete(id);
    t.fn();
  }
}

const cleanups: (() => Promise<void> | void)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function token(ca: CaUnderTest, sub = SUBJECT, sans = SANS): Promise<string> {
  return signOneTimeToken(ca.provisioner, { aud: ca.signAudience, sub, sans });
}

interface Rig {
  enrollment: CertificateEnrollment;
  timers: ManualScheduler;
  renewed: { certPem: string; keyPem: string; chainPem: string }[];
  bundles: string[];
  events: EnrollmentEvent[];
  clock: { now: number | null };
}

function rig(
  ca: CaUnderTest,
  tok: string | null | (() => string | null),
  extra: { store?: FileCertificateStore; startAttempts?: number } = {},
): Rig {
  const timers = new ManualScheduler();
  const renewed: Rig["renewed"] = [];
  const bundles: string[] = [];
  const events: EnrollmentEvent[] = [];
  const clock: Rig["clock"] = { now: null };
  const enrollment = new CertificateEnrollment({
    ca: new StepCaClient({ caUrl: ca.url, rootPem: ca.rootPem }),
    subject: SUBJECT,
    sans: SANS,
    readToken: async () => (typeof tok === "function" ? tok() : tok),
    store: extra.store ?? new MemoryCertificateStore(),
    onRenewed: (certPem, keyPem, chainPem) => {
      renewed.push({ certPem, keyPem, chainPem });
    },
    onTrustBundle: (pem) => {
      bundles.push(pem);
    },
    onEvent: (e) => events.push(e),
    now: () => clock.now ?? Date.now(),
    random: () => 0,
    scheduler: timers,
    backoff: { baseMs: 100, maxMs: 1_000 },
    startAttempts: extra.startAttempts ?? 1,
  });
  cleanups.push(() => enrollment.stop());
  return { enrollment, timers, renewed, bundles, events, clock };
}

async function until(what: string, cond: () => boolean, limitMs = 10_000): Promise<void> {
  const end = Date.now() + limitMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}

function spki(certPem: string): string {
  return Buffer.from(new x509.X509Certificate(certPem).publicKey.rawData).toString("hex");
}

for (const impl of CA_IMPLEMENTATIONS) {
  describe.skipIf(impl.skip !== null)(`enrollment against the ${impl.name} Step-CA`, () => {
    async function startCa(opts: CaOptions = {}): Promise<CaUnderTest> {
      const ca = await impl.start({ backdateMs: 0, ...opts });
      cleanups.push(() => ca.close());
      return ca;
    }

    describe("first boot", () => {
      test("token + CSR → certificate, stored, renewal scheduled at 2/3 of its lifetime", async () => {
        const ca = await startCa({ certLifetimeMs: 60_000 });
        const dir = mkdtempSync(join(tmpdir(), "slapenir-enroll-"));
        cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
        const r = rig(ca, await token(ca), { store: new FileCertificateStore(dir) });
        r.clock.now = Date.now();
        const creds = await r.enrollment.start();

        const leaf = new x509.X509Certificate(creds.certPem);
        const sans = leaf
          .getExtension(x509.SubjectAlternativeNameExtension)!
          .names.items.map((n) => n.value);
        expect({
          cn: leaf.subjectName.getField("CN")[0],
          sans: sans.sort(),
          issuer: leaf.issuer,
          lifetime: leaf.notAfter.getTime() - leaf.notBefore.getTime(),
        }).toEqual({
          cn: SUBJECT,
          sans: [...SANS].sort(),
          issuer: ca.state.intermediate.cert.subject,
          lifetime: 60_000,
        });
        expect(creds.chainPem).toContain("BEGIN CERTIFICATE");
        // Persisted for the next start, key private to the proxy user.
        expect(readFileSync(join(dir, "proxy.crt"), "utf8")).toBe(creds.certPem + creds.chainPem);
        expect(statSync(join(dir, "proxy.key")).mode & 0o777).toBe(0o600);
        // Renewal asked for at exactly 2/3 of the window (random = 0 → no jitter).
        expect(r.timers.soleDelay()).toBe(
          renewalDelayMs(
            { notBefore: leaf.notBefore.getTime(), notAfter: leaf.notAfter.getTime() },
            r.clock.now,
            0,
          ),
        );
        // 2/3 of 60 s after notBefore, which the CA stamps after the clock was read: ~40 s away.
        expect(r.timers.soleDelay()).toBeGreaterThan(30_000);

        // A restart with the same store loads the certificate and does not spend a token.
        const again = rig(ca, null, { store: new FileCertificateStore(dir) });
        const loaded = await again.enrollment.start();
        expect(loaded.serial).toBe(creds.serial);
        expect(again.events[0]?.type).toBe("loaded");
      });

      test("bootstrap pins the root by fingerprint and refuses another", async () => {
        const ca = await startCa();
        expect(await bootstrapRoot(ca.url, ca.rootFingerprint)).toBe(ca.rootPem);
        // Another fingerprint, whatever the random root's ends with (1 run in 256 it ended in 00).
        const last = ca.rootFingerprint.slice(-2);
        const wrong = `${ca.rootFingerprint.slice(0, -2)}${last === "00" ? "01" : "00"}`;
        const err = await bootstrapRoot(ca.url, wrong).catch((e: unknown) => e);
        expect(err).toBeInstanceOf(EnrollError);
        expect((err as EnrollError).code).toBe("ca-rejected"); // the CA has no such root: 404
        expect((err as EnrollError).status).toBe(404);
      });

      test("a reused one-time token is refused (401), and the error carries no token", async () => {
        const ca = await startCa();
        const tok = await token(ca);
        await rig(ca, tok).enrollment.start();
        const err = await rig(ca, tok)
          .enrollment.start()
          .catch((e: unknown) => e);
        expect(err).toBeInstanceOf(EnrollError);
        expect({ code: (err as EnrollError).code, status: (err as EnrollError).status }).toEqual({
          code: "ca-rejected",
          status: 401,
        });
        expect((err as Error).message).not.toContain(tok);
        await ca.refused("token already used");
      });
    });

    describe("the CA down at first boot", () => {
      test("retries with backoff while unreachable; a token older than the CA's restart is refused, a fresh one enrolls", async () => {
        const ca = await startCa();
        let tok: string | null = await token(ca);
        const issuedAt = Math.floor(Date.now() / 1000);
        await ca.stop();
        const r = rig(ca, () => tok, { startAttempts: 4 });
        const started = r.enrollment.start().catch((e: unknown) => e);
        await until("a retry scheduled", () => r.timers.pending.size === 1);
        expect(r.timers.soleDelay()).toBe(
          retryDelayMs(0, Date.now(), null, 0, { baseMs: 100, maxMs: 1_000 }),
        );
        r.timers.fire();
        await until("a second retry scheduled", () => r.timers.pending.size === 1);
        expect(r.timers.soleDelay()).toBe(100);

        // step-ca refuses a token issued before its start: after a restart the token ca-init
        // wrote is void, whatever the database remembers.
        await afterSecond(issuedAt);
        await ca.start();
        r.timers.fire();
        const err = await started;
        expect(err).toBeInstanceOf(EnrollError);
        expect({ code: (err as EnrollError).code, status: (err as EnrollError).status }).toEqual({
          code: "ca-rejected",
          status: 401,
        });
        await ca.refused("token issued before the bootstrap of certificate authority");

        tok = await token(ca);
        const again = rig(ca, () => tok);
        expect((await again.enrollment.start()).notAfter.getTime()).toBeGreaterThan(Date.now());
      });
    });

    describe("renewal", () => {
      test("at 2/3 over mTLS: same key, same lifetime, new serial, callback, next renewal scheduled", async () => {
        const ca = await startCa({ certLifetimeMs: 6_000 });
        const r = rig(ca, await token(ca));
        const first = await r.enrollment.start();
        r.timers.fire();
        await until("renewal", () => r.renewed.length === 1);
        const next = r.enrollment.current()!;
        expect({
          sameKey: spki(next.certPem) === spki(first.certPem),
          keyPem: next.keyPem === first.keyPem,
          newSerial: next.serial !== first.serial,
          lifetime: next.notAfter.getTime() - next.notBefore.getTime(),
          callbackCert: r.renewed[0]!.certPem === next.certPem,
        }).toEqual({
          sameKey: true,
          keyPem: true,
          newSerial: true,
          lifetime: 6_000,
          callbackCert: true,
        });
        expect(r.timers.pending.size).toBe(1);
      }, 20_000);

      test("with real timers: a 3-second certificate renews by itself", async () => {
        const ca = await startCa({ certLifetimeMs: 3_000 });
        const renewed: string[] = [];
        const e = new CertificateEnrollment({
          ca: new StepCaClient({ caUrl: ca.url, rootPem: ca.rootPem }),
          subject: SUBJECT,
          sans: SANS,
          readToken: async () => token(ca),
          store: new MemoryCertificateStore(),
          onRenewed: (c) => {
            renewed.push(c);
          },
        });
        cleanups.push(() => e.stop());
        const first = await e.start();
        await until("two renewals", () => renewed.length >= 2, 15_000);
        expect(new Set([first.certPem, ...renewed]).size).toBe(renewed.length + 1);
        const keys = new Set([first.certPem, ...renewed].map(spki));
        expect(keys.size).toBe(1);
      }, 20_000);

      test("CA down: the old certificate stays in use, retries back off, renewal resumes", async () => {
        const ca = await startCa({ certLifetimeMs: 30_000 });
        const r = rig(ca, await token(ca));
        const first = await r.enrollment.start();
        await ca.stop();

        r.timers.fire();
        await until("first failure", () => r.events.some((e) => e.type === "renew-failed"));
        r.timers.fire();
        await until(
          "second failure",
          () => r.events.filter((e) => e.type === "renew-failed").length === 2,
        );
        const failures = r.events.filter((e) => e.type === "renew-failed");
        expect(failures.map((f) => (f as { code: string }).code)).toEqual([
          "ca-unreachable",
          "ca-unreachable",
        ]);
        // Backoff grows (random = 0 → half of each exponential step: 50 ms, 100 ms).
        expect(failures.map((f) => (f as { retryInMs: number }).retryInMs)).toEqual([50, 100]);
        expect(r.enrollment.current()!.serial).toBe(first.serial);
        expect(r.renewed).toEqual([]);

        // The CA comes back on the same address with the same keys and database.
        await ca.start();
        r.timers.fire();
        await until("renewal after outage", () => r.renewed.length === 1);
        expect(spki(r.enrollment.current()!.certPem)).toBe(spki(first.certPem));
        expect(r.enrollment.current()!.serial).not.toBe(first.serial);
      }, 20_000);

      test("past expiry: reported once, the old certificate is not replaced without a token", async () => {
        const ca = await startCa({ certLifetimeMs: 30_000 });
        const r = rig(ca, await token(ca));
        const first = await r.enrollment.start();
        r.clock.now = first.notAfter.getTime() + 1;
        await r.enrollment.renewNow();
        await r.enrollment.renewNow();
        expect(r.events.filter((e) => e.type === "expired")).toHaveLength(1);
        const failed = r.events.filter((e) => e.type === "renew-failed") as { code: string }[];
        // The first token was spent at first boot: the CA refuses it again.
        expect(failed.map((f) => f.code)).toEqual(["ca-rejected", "ca-rejected"]);
        expect(r.enrollment.current()!.serial).toBe(first.serial);
      });
    });

    describe("root rotation", () => {
      test("the CA moves under the new root: renewal goes on, trusting the roots it polled", async () => {
        const ca = await startCa();
        const r = rig(ca, await token(ca));
        await r.enrollment.start();
        const rotated = await ca.rotateRoot();
        expect(await r.enrollment.refreshRoots()).toBe(true);
        // Step two: the CA's intermediate (and its own TLS) now chain to the new root only.
        await ca.switchIssuer();
        expect(await r.enrollment.renewNow()).toBe(true);
        const chain = r.renewed.at(-1)!.chainPem;
        const issuer = new x509.X509Certificate(chain);
        expect(issuer.issuer).toBe(new x509.X509Certificate(rotated.rootPem).subject);
      });

      test("onTrustBundle fires on a change only; a live TLS server swaps its agent CA with a connection open", async () => {
        const ca = await startCa();
        const r = rig(ca, await token(ca));
        await r.enrollment.start();
        expect(await r.enrollment.refreshRoots()).toBe(false);
        expect(r.bundles).toEqual([]);

        // A stand-in for the proxy's front door: mTLS, agent CA = the enrollment's trust bundle,
        // served with the enrolled certificate.
        const server = tls.createServer(
          {
            cert: r.enrollment.current()!.certPem + r.enrollment.current()!.chainPem,
            key: r.enrollment.current()!.keyPem,
            ca: r.enrollment.trustBundle(),
            requestCert: true,
            rejectUnauthorized: true,
          },
          (s) => s.pipe(s),
        );
        await new Promise<void>((res) => server.listen(0, "127.0.0.1", () => res()));
        cleanups.push(() => new Promise<void>((res) => server.close(() => res())));
        const port = (server.address() as { port: number }).port;

        const rotated = await ca.rotateRoot();
        const newAgent = await issueFromDouble(
          rotated.ca,
          "agent-2",
          ["spiffe://slapenir/agent/agent-2"],
          60_000,
        );
        const oldAgent = await issueFromDouble(
          ca.state.intermediate,
          "agent-1",
          ["spiffe://slapenir/agent/agent-1"],
          60_000,
        );

        const connect = (agent: { certPem: string; keyPem: string; chainPem: string }) =>
          new Promise<tls.TLSSocket>((resolve, reject) => {
            const s = tls.connect({
              host: "127.0.0.1",
              port,
              servername: "proxy.slapenir.internal",
              ca: ca.rootsBundlePem(),
              cert: agent.certPem + agent.chainPem,
              key: agent.keyPem,
              checkServerIdentity: () => undefined,
            });
            s.once("secureConnect", () => resolve(s));
            s.once("error", reject);
          });
        const echo = (s: tls.TLSSocket, msg: string) =>
          new Promise<string>((resolve, reject) => {
            s.once("data", (d: Buffer) => resolve(d.toString()));
            s.once("error", reject);
            s.once("close", () => reject(new Error("closed")));
            s.write(msg);
          });
        /** Whether the server accepts `agent`: TLS 1.3 reports a refused client cert after the handshake. */
        const accepted = async (agent: Parameters<typeof connect>[0]) => {
          try {
            const s = await connect(agent);
            const ok = (await echo(s, "ping")) === "ping";
            s.destroy();
            return ok;
          } catch {
            return false;
          }
        };

        const open = await connect(oldAgent);
        cleanups.push(() => void open.destroy());
        expect(await echo(open, "before")).toBe("before");
        expect(await accepted(newAgent)).toBe(false);

        // Rotation reaches the proxy through the hook; it swaps the TLS context in place.
        expect(await r.enrollment.refreshRoots()).toBe(true);
        expect(r.bundles).toHaveLength(1);
        expect(r.bundles[0]).toContain(rotated.rootPem.trim());
        const c = r.enrollment.current()!;
        server.setSecureContext({ cert: c.certPem + c.chainPem, key: c.keyPem, ca: r.bundles[0]! });

        expect(await echo(open, "after")).toBe("after");
        expect(await accepted(newAgent)).toBe(true);
        expect(await accepted(oldAgent)).toBe(true);
        expect(await r.enrollment.refreshRoots()).toBe(false);
        expect(r.bundles).toHaveLength(1);
      });
    });
  });
}

test("an enrollment event as audit fields: times as ISO, lists joined", async () => {
  const { enrollmentFields } = await import("./enrollment.ts");
  expect(enrollmentFields({ type: "renewed", notAfter: new Date(0) })).toEqual({
    type: "renewed",
    notAfter: "1970-01-01T00:00:00.000Z",
  });
  expect(enrollmentFields({ type: "roots-changed", fingerprints: ["ab", "cd"] })).toEqual({
    type: "roots-changed",
    fingerprints: "ab,cd",
  });
});
