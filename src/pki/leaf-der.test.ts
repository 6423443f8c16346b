import { afterAll, beforeAll, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { X509Certificate as NodeX509 } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { EmbeddedCa } from "./embedded-ca.ts";
import { derToPem, LeafTemplate } from "./leaf-der.ts";
import { generateP256KeyPair, OID_SERVER_AUTH, x509 } from "./x509.ts";

let dir: string;
let ca: EmbeddedCa;
let template: LeafTemplate;
let issuerNode: NodeX509;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "slapenir-leafder-"));
  ca = await EmbeddedCa.open({ home: join(dir, "home") });
  const keys = await generateP256KeyPair();
  const keyId = ca.interception.cert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId;
  template = new LeafTemplate({
    issuerNameDer: new Uint8Array(ca.interception.cert.subjectName.toArrayBuffer()),
    issuerKeyId: Uint8Array.from(Buffer.from(keyId, "hex")),
    leafSpkiDer: new Uint8Array(await crypto.subtle.exportKey("spki", keys.publicKey)),
    issuerKey: ca.interception.key,
  });
  issuerNode = new NodeX509(ca.interception.certPem);
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const hour = 3_600_000;
const spec = (host: string, kind: "dns" | "ip") => ({
  host,
  kind,
  notBefore: new Date(Date.now() - hour),
  notAfter: new Date(Date.now() + 24 * hour),
});

function openssl(args: string[]): { ok: boolean; out: string } {
  try {
    return { ok: true, out: execFileSync("openssl", args, { encoding: "utf8", stdio: "pipe" }) };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

test("DNS, IPv4 and IPv6 leaves: OpenSSL verifies them as servers only, with the right SAN", async () => {
  const cases: [string, "dns" | "ip", string][] = [
    ["api.example.com", "dns", "DNS:api.example.com"],
    ["10.1.2.3", "ip", "IP Address:10.1.2.3"],
    ["2001:db8::1", "ip", "IP Address:2001:DB8:0:0:0:0:0:1"],
  ];
  const chain = join(dir, "interception.pem");
  await writeFile(chain, ca.interception.certPem);
  for (const [host, kind, sanText] of cases) {
    const { der } = await template.mint(spec(host, kind));
    const file = join(dir, `leaf-${kind}-${host.replace(/:/g, "_")}.pem`);
    await writeFile(file, derToPem(der));
    const base = ["verify", "-CAfile", ca.caBundlePath, "-untrusted", chain];
    expect(openssl([...base, "-purpose", "sslserver", file])).toEqual({
      ok: true,
      out: `${file}: OK\n`,
    });
    expect(openssl([...base, "-purpose", "sslclient", file]).ok).toBe(false);
    const text = openssl(["x509", "-noout", "-text", "-in", file]).out;
    expect(text).toContain(`X509v3 Subject Alternative Name: \n                ${sanText}\n`);
    expect(text).toMatch(/Basic Constraints: critical\s+CA:FALSE/);
    expect(text).toMatch(/Key Usage: critical\s+Digital Signature\n/);
    expect(text).toMatch(/Extended Key Usage: \s+TLS Web Server Authentication\n/);
    expect(text).toContain("Version: 3 (0x2)");
    const node = new NodeX509(der);
    expect(node.ca).toBe(false);
    expect(node.keyUsage).toEqual([OID_SERVER_AUTH]);
    expect(node.checkIssued(issuerNode)).toBe(true);
    expect(node.verify(issuerNode.publicKey)).toBe(true);
    if (kind === "dns") expect(node.checkHost(host)).toBe(host);
    else expect(node.checkIP(host)).toBe(host);
  }
});

test("the same fields as @peculiar/x509 reads them: names, dates, AKI", async () => {
  const s = spec("h.example", "dns");
  const { der, serial } = await template.mint(s);
  const cert = new x509.X509Certificate(der);
  expect({
    subject: cert.subject,
    issuer: cert.issuer,
    serial: cert.serialNumber.toLowerCase(),
    notBefore: cert.notBefore.getTime(),
    notAfter: cert.notAfter.getTime(),
    aki: cert.getExtension(x509.AuthorityKeyIdentifierExtension)?.keyId,
  }).toEqual({
    subject: "CN=h.example",
    issuer: ca.interception.cert.subject,
    serial,
    notBefore: Math.floor(s.notBefore.getTime() / 1000) * 1000,
    notAfter: Math.floor(s.notAfter.getTime() / 1000) * 1000,
    aki: ca.interception.cert.getExtension(x509.SubjectKeyIdentifierExtension)!.keyId,
  });
});

test("long names (multi-byte DER lengths) and dates after 2049 (GeneralizedTime)", async () => {
  const long = `${"a".repeat(63)}.${"b".repeat(63)}.${"c".repeat(63)}.${"d".repeat(57)}.example`;
  const { der } = await template.mint({
    host: long,
    kind: "dns",
    notBefore: new Date("2049-12-31T23:00:00Z"),
    notAfter: new Date("2051-06-01T00:00:00Z"),
  });
  const node = new NodeX509(der);
  expect(node.subjectAltName).toBe(`DNS:${long}`);
  expect(node.subject).toBe("CN=SLAPENIR intercepted");
  expect(node.validToDate.toISOString()).toBe("2051-06-01T00:00:00.000Z");
  expect(node.validFromDate.toISOString()).toBe("2049-12-31T23:00:00.000Z");
  expect(node.verify(issuerNode.publicKey)).toBe(true);
});

test("every signature encodes correctly (r/s with high bit or leading zeros), 300 mints", async () => {
  let verified = 0;
  for (let i = 0; i < 300; i++) {
    const { der } = await template.mint(spec(`s${i}.example`, "dns"));
    if (new NodeX509(der).verify(issuerNode.publicKey)) verified++;
  }
  expect(verified).toBe(300);
});

test("a non-IP given as an IP is refused", async () => {
  await expect(template.mint(spec("not-an-ip", "ip"))).rejects.toThrow("not an IP address");
});
