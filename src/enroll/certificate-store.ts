// Where the proxy keeps its Step-CA identity between restarts (CERT_PATH), under the names the
// proxy's config reads in Step-CA mode (src/config STEP_CA_FILES): proxy.crt (leaf then
// intermediates, what the TLS server serves), proxy.key (0600), root_ca.crt (the pinned root)
// and, copied from ca-init's volume, the interception CA pair. Writes go to a
// temporary name and are renamed into place, key before certificate, so a reader never sees
// a half-written file or a certificate without its key. Must never log file contents.
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { STEP_CA_FILES } from "../config/proxy-config.ts";

export interface StoredCredentials {
  certPem: string;
  chainPem: string;
  keyPem: string;
}

export interface CertificateStore {
  load(): Promise<StoredCredentials | null>;
  save(c: StoredCredentials): Promise<void>;
}

export const STORE_FILES = {
  cert: STEP_CA_FILES.serverCert,
  key: STEP_CA_FILES.serverKey,
  root: STEP_CA_FILES.rootCa,
  interceptionCert: STEP_CA_FILES.interceptionCert,
  interceptionKey: STEP_CA_FILES.interceptionKey,
} as const;

const PEM_CERT = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----\n?/g;

async function readOrNull(path: string): Promise<string | null> {
  try {
    return await readFile(path, "utf8");
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw err;
  }
}

async function writeAtomic(path: string, data: string, mode: number): Promise<void> {
  const tmp = `${path}.tmp-${process.pid}`;
  await writeFile(tmp, data, { mode });
  await chmod(tmp, mode);
  await rename(tmp, path);
}

export class FileCertificateStore implements CertificateStore {
  constructor(readonly dir: string) {}

  async load(): Promise<StoredCredentials | null> {
    const [fullChain, keyPem] = await Promise.all([
      readOrNull(join(this.dir, STORE_FILES.cert)),
      readOrNull(join(this.dir, STORE_FILES.key)),
    ]);
    const blocks = (fullChain ?? "").match(PEM_CERT) ?? [];
    if (blocks.length === 0 || !keyPem) return null;
    const pem = (b: string) => (b.endsWith("\n") ? b : `${b}\n`);
    return { certPem: pem(blocks[0]!), chainPem: blocks.slice(1).map(pem).join(""), keyPem };
  }

  async save(c: StoredCredentials): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeAtomic(join(this.dir, STORE_FILES.key), c.keyPem, 0o600);
    await writeAtomic(join(this.dir, STORE_FILES.cert), c.certPem + c.chainPem, 0o644);
  }

  async loadRoot(): Promise<string | null> {
    return readOrNull(join(this.dir, STORE_FILES.root));
  }

  async saveRoot(pem: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeAtomic(join(this.dir, STORE_FILES.root), pem, 0o644);
  }

  /** Copies the interception CA pair ca-init made into place (key first, 0600). */
  async saveInterceptionCa(certPem: string, keyPem: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeAtomic(join(this.dir, STORE_FILES.interceptionKey), keyPem, 0o600);
    await writeAtomic(join(this.dir, STORE_FILES.interceptionCert), certPem, 0o644);
  }
}

/** A store that keeps nothing across restarts (tests, or a proxy without a volume). */
export class MemoryCertificateStore implements CertificateStore {
  #c: StoredCredentials | null = null;
  async load(): Promise<StoredCredentials | null> {
    return this.#c;
  }
  async save(c: StoredCredentials): Promise<void> {
    this.#c = { ...c };
  }
}
