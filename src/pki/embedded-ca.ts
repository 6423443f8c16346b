// The embedded certificate authority used when no Step-CA is configured: under SLAPENIR_HOME
// it creates on first run (and loads and validates on later runs) the root CA, the proxy's
// server certificate and the interception CA, and issues agent certificates on demand.
//
// Trust layout (what each party trusts):
//   root CA ─┬─ proxy server certificate       (EKU serverAuth)
//            ├─ agent certificates             (EKU clientAuth only)
//            └─ interception CA (pathLen 0, EKU serverAuth only, name-constrained to never
//               carry the agent URI) ─ per-host leaves minted by leaf-cache.ts
// An agent trusts `ca-bundle.pem` (the root alone): that covers the proxy's own certificate and
// every intercepted site. The proxy trusts the same root for client certificates and rejects
// anything the interception CA signed (agent-identity.ts, and OpenSSL purpose checks on EKU).
//
// It must never put key material in an error or log line, never leave a key file readable by
// others, and never silently replace a root that exists (agents already trust it).

import { existsSync } from "node:fs";
import { chmod, mkdir, readFile, rename, rmdir, stat, writeFile } from "node:fs/promises";
import { isIP } from "node:net";
import { join } from "node:path";
import { AGENT_NAME_RE } from "../policy/agent-name.ts";
import { PkiError } from "./pki-error.ts";
import {
  AGENT_URI_HOST,
  AGENT_URI_PREFIX,
  certToPem,
  DAY_MS,
  exportPrivateKeyPem,
  generateP256KeyPair,
  importPrivateKeyPem,
  nameConstraintsExcludingUriHosts,
  OID_CLIENT_AUTH,
  OID_SERVER_AUTH,
  P256_ALGORITHM,
  randomSerialHex,
  sha256Fingerprint,
  x509,
} from "./x509.ts";

/** File names under SLAPENIR_HOME. */
export const EMBEDDED_CA_FILES = {
  rootCert: "root-ca.crt",
  rootKey: "root-ca.key",
  interceptionCert: "interception-ca.crt",
  interceptionKey: "interception-ca.key",
  serverCert: "server.crt",
  serverKey: "server.key",
  caBundle: "ca-bundle.pem",
  agentsDir: "agents",
} as const;

export const ROOT_CA_NAME = "SLAPENIR Root CA";
export const INTERCEPTION_CA_NAME = "SLAPENIR Interception CA";
/**
 * Names the proxy's server certificate always carries. No IPv6 literal by default: socat 1.7.4
 * (the agent's forwarder) then looks the proxy name up as IPv6 and drops the connection on an
 * IPv4-only network (found by test/netns). Add `::1` through SLAPENIR_SERVER_NAMES if needed.
 */
export const DEFAULT_SERVER_NAMES = ["localhost", "127.0.0.1", "proxy"] as const;

const ROOT_VALIDITY_DAYS = 3650;
const INTERCEPTION_VALIDITY_DAYS = 1825;
const SERVER_VALIDITY_DAYS = 397;
export const AGENT_DEFAULT_DAYS = 30;
const AGENT_MAX_DAYS = 3650;
/** Certificates are backdated so peers with a slightly slow clock accept them at once. */
const BACKDATE_MS = 5 * 60_000;
/** A file whose notBefore is further in the future than this is refused (clock or tampering). */
const CLOCK_SKEW_MS = 10 * 60_000;
const LOCK_WAIT_MS = 15_000;
const LOCK_STALE_MS = 60_000;

export interface CertAndKey {
  readonly cert: x509.X509Certificate;
  readonly certPem: string;
  readonly key: CryptoKey;
  readonly keyPem: string;
}

export interface EmbeddedCaOptions {
  readonly home: string;
  /** Extra DNS names or IP literals for the proxy's server certificate. */
  readonly serverNames?: readonly string[];
  /** Clock, for tests. */
  readonly now?: () => Date;
}

export interface IssuedAgentCert {
  readonly name: string;
  readonly certPath: string;
  readonly keyPath: string;
  readonly caBundlePath: string;
  readonly serial: string;
  readonly fingerprint256: string;
  readonly notAfter: Date;
  readonly certPem: string;
  readonly keyPem: string;
}

/**
 * One agent's certificate directory, as the agent container's init-certs writes it, the
 * container's proxy-forwarder and `slapenir forward --certs` read it, and `agent issue --out`
 * writes it: the agent's certificate and key, the root the proxy's certificate chains to, and
 * the bundle its tools trust (that root and the interception CA).
 */
export const AGENT_DIR_FILES = {
  cert: "agent.crt",
  key: "agent.key",
  root: "root_ca.crt",
  bundle: "ca-bundle.pem",
} as const;

export interface IssueAgentOptions {
  readonly days?: number;
  /**
   * Where to write: by default `<home>/agents/<name>.crt`, `<name>.key` and `ca-bundle.pem`;
   * with `outDir`, that directory as one agent's certificate directory (AGENT_DIR_FILES).
   */
  readonly outDir?: string;
  /**
   * A renewal: the agent's key stays (its certificate there is read for it), only a new
   * certificate is written. Without its certificate and key there, it fails.
   */
  readonly renew?: boolean;
}

export class EmbeddedCa {
  private constructor(
    readonly home: string,
    readonly root: CertAndKey,
    readonly interception: CertAndKey,
    readonly server: CertAndKey,
    /** What an agent must trust (the root alone); also written to `ca-bundle.pem`. */
    readonly caBundlePem: string,
    /** What happened on open, for the caller's start-up log. */
    readonly created: readonly string[],
    private readonly now: () => Date,
  ) {}

  /** Opens the CA under `home`, creating whatever does not exist yet. */
  static async open(options: EmbeddedCaOptions): Promise<EmbeddedCa> {
    const now = options.now ?? (() => new Date());
    const home = options.home;
    const serverNames = mergeServerNames(options.serverNames ?? []);
    await mkdir(home, { recursive: true, mode: 0o700 });
    return withLock(home, async () => {
      const created: string[] = [];
      const p = (f: string) => join(home, f);

      let root = await loadPair(p(EMBEDDED_CA_FILES.rootCert), p(EMBEDDED_CA_FILES.rootKey), now);
      if (!root) {
        root = await createRoot(now());
        await writePair(p(EMBEDDED_CA_FILES.rootCert), p(EMBEDDED_CA_FILES.rootKey), root);
        created.push(EMBEDDED_CA_FILES.rootCert);
      } else {
        await expectSelfSigned(root, p(EMBEDDED_CA_FILES.rootCert));
      }

      let interception = await loadPair(
        p(EMBEDDED_CA_FILES.interceptionCert),
        p(EMBEDDED_CA_FILES.interceptionKey),
        now,
      );
      if (!interception) {
        interception = await createInterceptionCa(root, now());
        await writePair(
          p(EMBEDDED_CA_FILES.interceptionCert),
          p(EMBEDDED_CA_FILES.interceptionKey),
          interception,
        );
        created.push(EMBEDDED_CA_FILES.interceptionCert);
      } else {
        await expectIssuedBy(interception, root, p(EMBEDDED_CA_FILES.interceptionCert));
      }

      let server = await loadPair(
        p(EMBEDDED_CA_FILES.serverCert),
        p(EMBEDDED_CA_FILES.serverKey),
        now,
      );
      if (server) await expectIssuedBy(server, root, p(EMBEDDED_CA_FILES.serverCert));
      if (!server || !coversNames(server.cert, serverNames)) {
        // Missing, or the configured names changed: the server certificate is cheap to re-issue
        // (agents trust the root, not this certificate).
        server = await createServerCert(root, serverNames, now());
        await writePair(p(EMBEDDED_CA_FILES.serverCert), p(EMBEDDED_CA_FILES.serverKey), server);
        created.push(EMBEDDED_CA_FILES.serverCert);
      }

      const caBundlePem = root.certPem;
      const bundlePath = p(EMBEDDED_CA_FILES.caBundle);
      const existing = await readFile(bundlePath, "utf8").catch(() => null);
      if (existing !== caBundlePem) {
        await writeAtomic(bundlePath, caBundlePem, 0o644);
        created.push(EMBEDDED_CA_FILES.caBundle);
      }
      return new EmbeddedCa(home, root, interception, server, caBundlePem, created, now);
    });
  }

  get caBundlePath(): string {
    return join(this.home, EMBEDDED_CA_FILES.caBundle);
  }

  /** Issues a client certificate for agent `name` and writes it, its key and the CA bundle. */
  async issueAgentCert(name: string, options: IssueAgentOptions = {}): Promise<IssuedAgentCert> {
    if (!AGENT_NAME_RE.test(name)) {
      throw new PkiError(
        "bad-name",
        `agent name must match ${AGENT_NAME_RE.source} (letters, digits, '.', '_', '-'; at most 64)`,
      );
    }
    const days = options.days ?? AGENT_DEFAULT_DAYS;
    if (!Number.isInteger(days) || days < 1 || days > AGENT_MAX_DAYS) {
      throw new PkiError("bad-argument", `days must be an integer from 1 to ${AGENT_MAX_DAYS}`);
    }
    const ownDir = options.outDir !== undefined;
    const outDir = options.outDir ?? join(this.home, EMBEDDED_CA_FILES.agentsDir);
    await mkdir(outDir, { recursive: true, mode: 0o700 });

    const now = this.now();
    const certPath = join(outDir, ownDir ? AGENT_DIR_FILES.cert : `${name}.crt`);
    const keyPath = join(outDir, ownDir ? AGENT_DIR_FILES.key : `${name}.key`);
    let publicKey: CryptoKey;
    let keyPem: string;
    let writeKey = true;
    if (options.renew) {
      if (!existsSync(certPath) || !existsSync(keyPath)) {
        throw new PkiError(
          "file-missing",
          `${name} has no certificate and key in ${outDir} to renew`,
        );
      }
      const old = new x509.X509Certificate(await readFile(certPath, "utf8"));
      publicKey = await old.publicKey.export(P256_ALGORITHM, ["verify"]);
      keyPem = await readFile(keyPath, "utf8");
      writeKey = false;
    } else {
      const keys = await generateP256KeyPair();
      publicKey = keys.publicKey;
      keyPem = await exportPrivateKeyPem(keys.privateKey);
    }
    const cert = await x509.X509CertificateGenerator.create({
      serialNumber: randomSerialHex(),
      subject: `CN=${name}`,
      issuer: this.root.cert.subject,
      notBefore: new Date(now.getTime() - BACKDATE_MS),
      notAfter: new Date(now.getTime() + days * DAY_MS),
      signingAlgorithm: P256_ALGORITHM,
      publicKey,
      signingKey: this.root.key,
      extensions: [
        new x509.BasicConstraintsExtension(false, undefined, true),
        new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
        new x509.ExtendedKeyUsageExtension([OID_CLIENT_AUTH], false),
        new x509.SubjectAlternativeNameExtension([{ type: "url", value: agentUri(name) }], false),
        await x509.SubjectKeyIdentifierExtension.create(publicKey),
        await x509.AuthorityKeyIdentifierExtension.create(this.root.cert.publicKey),
      ],
    });
    const certPem = certToPem(cert);
    const caBundlePath = join(outDir, EMBEDDED_CA_FILES.caBundle);
    if (writeKey) await writeAtomic(keyPath, keyPem, 0o600);
    await writeAtomic(certPath, certPem, 0o644);
    await writeAtomic(caBundlePath, this.caBundlePem, 0o644);
    if (ownDir) await writeAtomic(join(outDir, AGENT_DIR_FILES.root), this.root.certPem, 0o644);
    return {
      name,
      certPath,
      keyPath,
      caBundlePath,
      serial: cert.serialNumber.toLowerCase(),
      fingerprint256: sha256Fingerprint(cert.rawData),
      notAfter: cert.notAfter,
      certPem,
      keyPem,
    };
  }
}

export function agentUri(name: string): string {
  return `${AGENT_URI_PREFIX}${name}`;
}

function mergeServerNames(extra: readonly string[]): string[] {
  const names = new Set<string>(DEFAULT_SERVER_NAMES);
  for (const raw of extra) {
    const name = raw
      .trim()
      .toLowerCase()
      .replace(/^\[(.*)\]$/, "$1");
    if (name === "") continue;
    if (
      isIP(name) === 0 &&
      !/^(?=.{1,253}$)([a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$/.test(
        name,
      )
    ) {
      throw new PkiError(
        "bad-name",
        `server name '${name}' is neither a DNS name nor an IP address`,
      );
    }
    names.add(name);
  }
  return [...names];
}

function sanEntries(names: readonly string[]): x509.JsonGeneralName[] {
  return names.map((n) => (isIP(n) === 0 ? { type: "dns", value: n } : { type: "ip", value: n }));
}

function coversNames(cert: x509.X509Certificate, names: readonly string[]): boolean {
  const san = cert.getExtension(x509.SubjectAlternativeNameExtension);
  if (!san) return false;
  const present = new Set(san.names.items.map((g) => `${g.type}:${g.value.toLowerCase()}`));
  // IPv6 renders in expanded or compressed form depending on the library; compare numerically.
  const presentIps = san.names.items.filter((g) => g.type === "ip").map((g) => ipKey(g.value));
  return names.every((n) =>
    isIP(n) === 0 ? present.has(`dns:${n}`) : presentIps.includes(ipKey(n)),
  );
}

function ipKey(ip: string): string {
  if (isIP(ip) !== 6) return ip;
  const [head = "", tail = ""] = ip.split("::");
  const h = head ? head.split(":") : [];
  const t = tail ? tail.split(":") : [];
  const fill = ip.includes("::") ? Array(8 - h.length - t.length).fill("0") : [];
  return [...h, ...fill, ...t].map((g) => g.replace(/^0+(?=.)/, "").toLowerCase()).join(":");
}

async function createRoot(now: Date): Promise<CertAndKey> {
  const keys = await generateP256KeyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: randomSerialHex(),
    name: `CN=${ROOT_CA_NAME}, O=SLAPENIR`,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter: new Date(now.getTime() + ROOT_VALIDITY_DAYS * DAY_MS),
    signingAlgorithm: P256_ALGORITHM,
    keys,
    extensions: [
      // pathLen 1: root → interception CA → leaf, and no deeper.
      new x509.BasicConstraintsExtension(true, 1, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return {
    cert,
    certPem: certToPem(cert),
    key: keys.privateKey,
    keyPem: await exportPrivateKeyPem(keys.privateKey),
  };
}

async function createInterceptionCa(root: CertAndKey, now: Date): Promise<CertAndKey> {
  const keys = await generateP256KeyPair();
  const notAfter = minDate(
    new Date(now.getTime() + INTERCEPTION_VALIDITY_DAYS * DAY_MS),
    root.cert.notAfter,
  );
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: `CN=${INTERCEPTION_CA_NAME}, O=SLAPENIR`,
    issuer: root.cert.subject,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter,
    signingAlgorithm: P256_ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: root.key,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(
        x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign,
        true,
      ),
      // EKU on a CA constrains what chains through it (OpenSSL/BoringSSL purpose checks):
      // nothing below it can act as a TLS client, i.e. as an agent.
      new x509.ExtendedKeyUsageExtension([OID_SERVER_AUTH], false),
      // And nothing below it may carry the agent identity URI.
      nameConstraintsExcludingUriHosts([AGENT_URI_HOST]),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(root.cert.publicKey),
    ],
  });
  return {
    cert,
    certPem: certToPem(cert),
    key: keys.privateKey,
    keyPem: await exportPrivateKeyPem(keys.privateKey),
  };
}

async function createServerCert(
  root: CertAndKey,
  names: readonly string[],
  now: Date,
): Promise<CertAndKey> {
  const keys = await generateP256KeyPair();
  const notAfter = minDate(
    new Date(now.getTime() + SERVER_VALIDITY_DAYS * DAY_MS),
    root.cert.notAfter,
  );
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: randomSerialHex(),
    subject: "CN=SLAPENIR proxy, O=SLAPENIR",
    issuer: root.cert.subject,
    notBefore: new Date(now.getTime() - BACKDATE_MS),
    notAfter,
    signingAlgorithm: P256_ALGORITHM,
    publicKey: keys.publicKey,
    signingKey: root.key,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([OID_SERVER_AUTH], false),
      new x509.SubjectAlternativeNameExtension(sanEntries(names), false),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
      await x509.AuthorityKeyIdentifierExtension.create(root.cert.publicKey),
    ],
  });
  return {
    cert,
    certPem: certToPem(cert),
    key: keys.privateKey,
    keyPem: await exportPrivateKeyPem(keys.privateKey),
  };
}

function minDate(a: Date, b: Date): Date {
  return a.getTime() <= b.getTime() ? a : b;
}

/**
 * Loads a certificate and its key. Returns null when neither file exists; throws a PkiError
 * naming the file when only one exists or when either is unusable.
 */
export async function loadPair(
  certPath: string,
  keyPath: string,
  now: () => Date,
): Promise<CertAndKey | null> {
  const certPem = await readOptional(certPath);
  const keyPem = await readOptional(keyPath);
  if (certPem === null && keyPem === null) {
    return null;
  }
  if (certPem === null) {
    throw new PkiError(
      "file-missing",
      `${certPath} is missing but its key ${keyPath} exists; restore it or remove both to re-create them`,
      certPath,
    );
  }
  if (keyPem === null) {
    throw new PkiError(
      "file-missing",
      `${keyPath} is missing but its certificate ${certPath} exists; restore it or remove both to re-create them`,
      keyPath,
    );
  }
  const cert = parseCertificatePem(certPem, certPath);
  checkValidity(cert, certPath, now());
  const mode = (await stat(keyPath)).mode & 0o777;
  if ((mode & 0o077) !== 0) {
    throw new PkiError(
      "file-permissions",
      `${keyPath} is readable by group or others (mode ${mode.toString(8)}); run chmod 600 on it`,
      keyPath,
    );
  }
  let key: CryptoKey;
  try {
    key = await importPrivateKeyPem(keyPem);
  } catch (err) {
    // Our importer's messages never contain key bytes.
    throw new PkiError(
      "file-garbled",
      `${keyPath} is not usable: ${(err as Error).message}`,
      keyPath,
    );
  }
  if (!(await keyMatchesCert(key, cert))) {
    throw new PkiError(
      "cert-mismatch",
      `${keyPath} is not the private key of ${certPath}`,
      keyPath,
    );
  }
  return { cert, certPem, key, keyPem };
}

/** Parses the first certificate of a PEM file; a PkiError names the file otherwise. */
export function parseCertificatePem(pem: string, file: string): x509.X509Certificate {
  if (!pem.includes("-----BEGIN CERTIFICATE-----")) {
    throw new PkiError("file-garbled", `${file} holds no PEM 'CERTIFICATE' block`, file);
  }
  try {
    const block = x509.PemConverter.decodeWithHeaders(pem).find((b) => b.type === "CERTIFICATE");
    if (!block) throw new Error("no block");
    return new x509.X509Certificate(block.rawData);
  } catch {
    throw new PkiError(
      "file-garbled",
      `${file} holds a PEM 'CERTIFICATE' block that is not a valid X.509 certificate`,
      file,
    );
  }
}

function checkValidity(cert: x509.X509Certificate, file: string, now: Date): void {
  if (cert.notAfter.getTime() <= now.getTime()) {
    throw new PkiError(
      "cert-expired",
      `${file} expired on ${cert.notAfter.toISOString()}; remove it and its key to re-create it` +
        " (a new root means agents must trust the new ca-bundle.pem)",
      file,
    );
  }
  if (cert.notBefore.getTime() > now.getTime() + CLOCK_SKEW_MS) {
    throw new PkiError(
      "cert-not-yet-valid",
      `${file} is not valid before ${cert.notBefore.toISOString()} (check the clock)`,
      file,
    );
  }
}

async function keyMatchesCert(key: CryptoKey, cert: x509.X509Certificate): Promise<boolean> {
  const jwk = await crypto.subtle.exportKey("jwk", key);
  const pub = await crypto.subtle.exportKey(
    "jwk",
    await cert.publicKey.export(P256_ALGORITHM, ["verify"]),
  );
  const same = jwk.x === pub.x && jwk.y === pub.y;
  jwk.d = "";
  return same;
}

async function expectSelfSigned(pair: CertAndKey, file: string): Promise<void> {
  if (!(await pair.cert.isSelfSigned())) {
    throw new PkiError("cert-mismatch", `${file} is not a self-signed root certificate`, file);
  }
}

async function expectIssuedBy(pair: CertAndKey, issuer: CertAndKey, file: string): Promise<void> {
  const ok = await pair.cert
    .verify({ publicKey: issuer.cert.publicKey, signatureOnly: true })
    .catch(() => false);
  if (!ok || pair.cert.issuer !== issuer.cert.subject) {
    throw new PkiError(
      "cert-mismatch",
      `${file} was not issued by the root CA in this directory; remove it (and its key) to re-create it`,
      file,
    );
  }
}

async function readOptional(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new PkiError(
      "file-garbled",
      `${path} cannot be read (${(err as NodeJS.ErrnoException).code ?? "error"})`,
      path,
    );
  }
}

async function writePair(certPath: string, keyPath: string, pair: CertAndKey): Promise<void> {
  // Key first: a crash in between leaves "key without cert", which loadPair reports clearly.
  await writeAtomic(keyPath, pair.keyPem, 0o600);
  await writeAtomic(certPath, pair.certPem, 0o644);
}

let tmpSerial = 0;

/**
 * Write to a temporary file and rename it: a reader never sees half a file. The temporary
 * name is unique within the process too (two agents issued at once rewrite the same bundle).
 */
export async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.${process.pid}.${++tmpSerial}.tmp`;
  await writeFile(tmp, data, { mode, flag: "wx" });
  await chmod(tmp, mode); // the umask may have narrowed or (for 0644) kept it; be explicit
  await rename(tmp, path);
}

/** A directory lock so that two processes starting at once do not create two roots. */
async function withLock<T>(home: string, fn: () => Promise<T>): Promise<T> {
  const lock = join(home, ".init.lock");
  const deadline = Date.now() + LOCK_WAIT_MS;
  for (;;) {
    try {
      await mkdir(lock);
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== "EEXIST") throw err;
      const age = await stat(lock).then(
        (s) => Date.now() - s.mtimeMs,
        () => 0,
      );
      if (age > LOCK_STALE_MS) {
        await rmdir(lock).catch(() => {});
        continue;
      }
      if (Date.now() > deadline) {
        throw new PkiError(
          "locked",
          `${lock} is held by another process; remove it if no other SLAPENIR is starting`,
          lock,
        );
      }
      await Bun.sleep(25);
    }
  }
  try {
    return await fn();
  } finally {
    await rmdir(lock).catch(() => {});
  }
}
