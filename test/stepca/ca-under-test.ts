// One face for the two Step-CAs the enrollment tests run against — the project's double
// (test/stepca-double) and the real step-ca built from Debian's packages (stepca-real.ts) —
// so every identity test is written once and run against both, as the matcher's engines share
// one suite. Where the two disagree the real CA is right and the double is fixed.
// Test-only: never imported by src/.

import { x509 } from "../../src/pki/x509.ts";
import type { ProvisionerKey } from "../stepca-double/one-time-token.ts";
import type { CaKey } from "../stepca-double/stepca-double.ts";

export interface CaOptions {
  /** Lifetime of certificates the CA signs without asking (default 24 h, step-ca's default). */
  certLifetimeMs?: number;
  /** step-ca's authority backdate (default one minute, as step-ca). */
  backdateMs?: number;
}

export interface CaUnderTest {
  /** "double" or the real CA's version, for test names. */
  readonly kind: string;
  readonly url: string;
  readonly port: number;
  readonly provisioner: ProvisionerKey;
  /** The audience a sign token carries (https://<ca>/1.0/sign). */
  readonly signAudience: string;
  /** The audience a revocation token carries (https://<ca>/1.0/revoke). */
  readonly revokeAudience: string;
  /** The first root, PEM, and its SHA-256 fingerprint (what consumers pin). */
  readonly rootPem: string;
  readonly rootFingerprint: string;
  /** The CA's keys, for fixtures the CA would not sign (a foreign agent, an interception CA). */
  readonly state: { roots: CaKey[]; intermediate: CaKey };
  /** Every root the CA serves, PEM, concatenated. */
  rootsBundlePem(): string;
  /** Resolves once the CA has logged a refusal whose reason contains `text` (its own log). */
  refused(text: string): Promise<void>;
  /** Down: its address refuses connections until start(). */
  stop(): Promise<void>;
  /** Up again on the same address with the same keys and database. */
  start(): Promise<void>;
  /**
   * Root rotation, first step: a new root is added and served by /roots next to the old one;
   * issuance continues under the old intermediate. Returns the new root with its keys.
   */
  rotateRoot(): Promise<{ rootPem: string; fingerprint: string; ca: CaKey }>;
  /**
   * The second step of a rotation: the CA issues (and serves its own TLS) under an
   * intermediate of the newest root; clients that trust only the first root no longer reach it.
   */
  switchIssuer(): Promise<void>;
  close(): Promise<void>;
}

/** Resolves once the wall clock has left the whole second `epochSeconds`. */
export async function afterSecond(epochSeconds: number): Promise<void> {
  while (Math.floor(Date.now() / 1000) <= epochSeconds) await Bun.sleep(20);
}

/** A serial as step-ca names it in its database and revocation API: decimal. */
export function decimalSerial(certPem: string): string {
  return BigInt(`0x${new x509.X509Certificate(certPem).serialNumber}`).toString(10);
}
