// Where the proxy keeps its Step-CA identity between restarts (CERT_PATH): cert.pem (leaf),
// chain.pem (intermediates), key.pem (0600), root.pem (the pinned root). Writes go to a
// temporary name and are renamed into place, key before certificate, so a reader never sees
// a half-written file or a certificate without its key. Must never log file contents.
import { chmod, mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { join } from "node:path";

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
  cert: "cert.pem",
  chain: "chain.pem",
  key: "key.pem",
  root: "root.pem",
} as const;

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
    const [certPem, chainPem, keyPem] = await Promise.all([
      readOrNull(join(this.dir, STORE_FILES.cert)),
      readOrNull(join(this.dir, STORE_FILES.chain)),
      readOrNull(join(this.dir, STORE_FILES.key)),
    ]);
    if (!certPem || !keyPem) return null;
    return { certPem, chainPem: chainPem ?? "", keyPem };
  }

  async save(c: StoredCredentials): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeAtomic(join(this.dir, STORE_FILES.key), c.keyPem, 0o600);
    await writeAtomic(join(this.dir, STORE_FILES.chain), c.chainPem, 0o644);
    await writeAtomic(join(this.dir, STORE_FILES.cert), c.certPem, 0o644);
  }

  async loadRoot(): Promise<string | null> {
    return readOrNull(join(this.dir, STORE_FILES.root));
  }

  async saveRoot(pem: string): Promise<void> {
    await mkdir(this.dir, { recursive: true, mode: 0o700 });
    await writeAtomic(join(this.dir, STORE_FILES.root), pem, 0o644);
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
