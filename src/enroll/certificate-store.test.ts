// The CERT_PATH store: the file names the proxy config loads, key permissions, atomic writes.
import { afterEach, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { FileCertificateStore } from "./certificate-store.ts";

const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

function tempDir(): string {
  const d = mkdtempSync(join(tmpdir(), "slapenir-store-"));
  dirs.push(d);
  return d;
}

// Shape-only PEM blocks: the store splits and joins them without parsing.
const block = (n: string) => `-----BEGIN CERTIFICATE-----\n${n}\n-----END CERTIFICATE-----\n`;
const KEY = "-----BEGIN PRIVATE KEY-----\nk\n-----END PRIVATE KEY-----\n";

test("an empty or missing directory holds nothing", async () => {
  expect(await new FileCertificateStore(join(tempDir(), "absent")).load()).toBeNull();
  expect(await new FileCertificateStore(join(tempDir(), "absent")).loadRoot()).toBeNull();
});

test("round trip: proxy.crt is leaf then chain, proxy.key 0600, no temporary files left", async () => {
  const dir = join(tempDir(), "certs");
  const store = new FileCertificateStore(dir);
  await store.save({ certPem: block("leaf"), chainPem: block("i1") + block("i2"), keyPem: KEY });
  expect(readFileSync(join(dir, "proxy.crt"), "utf8")).toBe(
    block("leaf") + block("i1") + block("i2"),
  );
  expect(statSync(join(dir, "proxy.key")).mode & 0o777).toBe(0o600);
  expect(await store.load()).toEqual({
    certPem: block("leaf"),
    chainPem: block("i1") + block("i2"),
    keyPem: KEY,
  });
  await store.saveInterceptionCa(block("ic"), KEY);
  expect(statSync(join(dir, "interception-ca.key")).mode & 0o777).toBe(0o600);
  expect(readdirSync(dir).sort()).toEqual([
    "interception-ca.crt",
    "interception-ca.key",
    "proxy.crt",
    "proxy.key",
  ]);
});
