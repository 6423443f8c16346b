// Wires the Step-CA enrollment from the proxy container's environment (compose.yml):
//   SLAPENIR_CA_URL                 https://ca.slapenir.internal:9000
//   CERT_PATH                       directory for cert.pem, chain.pem, key.pem, root.pem
//   SLAPENIR_CA_FINGERPRINT(_FILE)  the pinned root fingerprint (ca-init writes the file)
//   SLAPENIR_ENROLL_TOKEN_FILE      the one-time token (read only when enrolling)
//   SLAPENIR_SERVER_NAMES           comma-separated; the first is the subject, all are SANs,
//                                   as in the token ca-init issued
//   SLAPENIR_INTERCEPT_CA_CERT/_KEY the interception CA ca-init made (copied into CERT_PATH)
// The proxy (src/main.ts) calls startProxyEnrollment with its TLS swap callbacks BEFORE it
// loads its config: afterwards CERT_PATH holds the files Step-CA mode expects. Must never read the token before it is needed, nor put it
// or a key into an error.
import { readFile } from "node:fs/promises";
import { FileCertificateStore } from "./certificate-store.ts";
import { EnrollError } from "./enroll-error.ts";
import {
  CertificateEnrollment,
  type Credentials,
  type EnrollmentEvent,
  type Scheduler,
} from "./enrollment.ts";
import { bootstrapRoot, StepCaClient } from "./stepca-client.ts";

export interface ProxyEnrollmentConfig {
  caUrl: string;
  certPath: string;
  fingerprint: string | null;
  fingerprintFile: string | null;
  tokenFile: string;
  subject: string;
  sans: string[];
  interceptCertFile: string | null;
  interceptKeyFile: string | null;
}

/** Pure: validates the environment; throws EnrollError("bad-config") naming the variable. */
export function proxyEnrollmentConfig(
  env: Record<string, string | undefined>,
): ProxyEnrollmentConfig {
  const need = (k: string): string => {
    const v = env[k]?.trim();
    if (!v) throw new EnrollError("bad-config", `${k} is not set`);
    return v;
  };
  const caUrl = need("SLAPENIR_CA_URL");
  if (!/^https:\/\//.test(caUrl))
    throw new EnrollError("bad-config", "SLAPENIR_CA_URL must be an https URL");
  const names = (env.SLAPENIR_SERVER_NAMES ?? "proxy.slapenir.internal,proxy")
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  if (names.length === 0) throw new EnrollError("bad-config", "SLAPENIR_SERVER_NAMES is empty");
  const fingerprint = env.SLAPENIR_CA_FINGERPRINT?.trim() || null;
  const fingerprintFile = env.SLAPENIR_CA_FINGERPRINT_FILE?.trim() || null;
  if (!fingerprint && !fingerprintFile) {
    throw new EnrollError(
      "bad-config",
      "set SLAPENIR_CA_FINGERPRINT or SLAPENIR_CA_FINGERPRINT_FILE",
    );
  }
  return {
    caUrl,
    certPath: need("CERT_PATH"),
    fingerprint,
    fingerprintFile,
    tokenFile: env.SLAPENIR_ENROLL_TOKEN_FILE?.trim() || "/run/enroll/token",
    subject: names[0]!,
    sans: names,
    interceptCertFile: env.SLAPENIR_INTERCEPT_CA_CERT?.trim() || null,
    interceptKeyFile: env.SLAPENIR_INTERCEPT_CA_KEY?.trim() || null,
  };
}

export interface ProxyEnrollmentHooks {
  onRenewed: (certPem: string, keyPem: string, chainPem: string) => void | Promise<void>;
  onTrustBundle?: (rootsPem: string) => void | Promise<void>;
  onEvent?: (e: EnrollmentEvent) => void;
  /** Default: poll /roots every 10 minutes. */
  rootsPollMs?: number;
  scheduler?: Scheduler;
}

export interface ProxyEnrollment {
  enrollment: CertificateEnrollment;
  credentials: Credentials;
  /** The pinned Step-CA root, PEM. */
  rootPem: string;
  /** All roots the CA serves (the agent CA bundle), PEM. */
  trustBundle: string;
}

async function readTrimmed(path: string): Promise<string | null> {
  try {
    const v = (await readFile(path, "utf8")).trim();
    return v === "" ? null : v;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new EnrollError("bad-config", `cannot read ${path}`);
  }
}

export async function startProxyEnrollment(
  cfg: ProxyEnrollmentConfig,
  hooks: ProxyEnrollmentHooks,
): Promise<ProxyEnrollment> {
  const store = new FileCertificateStore(cfg.certPath);
  let rootPem = await store.loadRoot();
  if (!rootPem) {
    const fp =
      cfg.fingerprint ?? (cfg.fingerprintFile ? await readTrimmed(cfg.fingerprintFile) : null);
    if (!fp) throw new EnrollError("bad-config", "no root fingerprint to pin");
    rootPem = await bootstrapRoot(cfg.caUrl, fp);
    await store.saveRoot(rootPem);
  }
  if (cfg.interceptCertFile && cfg.interceptKeyFile) {
    const [icCert, icKey] = await Promise.all([
      readTrimmed(cfg.interceptCertFile),
      readTrimmed(cfg.interceptKeyFile),
    ]);
    if (!icCert || !icKey)
      throw new EnrollError("bad-config", "the interception CA files are missing or empty");
    await store.saveInterceptionCa(`${icCert}\n`, `${icKey}\n`);
  }
  const enrollment = new CertificateEnrollment({
    ca: new StepCaClient({ caUrl: cfg.caUrl, rootPem }),
    subject: cfg.subject,
    sans: cfg.sans,
    readToken: () => readTrimmed(cfg.tokenFile),
    store,
    onRenewed: hooks.onRenewed,
    onTrustBundle: hooks.onTrustBundle,
    onEvent: hooks.onEvent,
    rootsPollMs: hooks.rootsPollMs ?? 10 * 60_000,
    scheduler: hooks.scheduler,
  });
  const credentials = await enrollment.start();
  return { enrollment, credentials, rootPem, trustBundle: enrollment.trustBundle() || rootPem };
}
