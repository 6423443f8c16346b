import { afterAll, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { chmod, copyFile, mkdtemp, readFile, rm, stat, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { AGENT_DEFAULT_DAYS, EMBEDDED_CA_FILES, EmbeddedCa } from "./embedded-ca.ts";
import { PkiError } from "./pki-error.ts";
import { DAY_MS, OID_CLIENT_AUTH, OID_NAME_CONSTRAINTS, OID_SERVER_AUTH, x509 } from "./x509.ts";

const dirs: string[] = [];
async function freshHome(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), "slapenir-ca-"));
  dirs.push(d);
  return join(d, "home");
}
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

function openssl(args: string[]): { ok: boolean; out: string } {
  try {
    return { ok: true, out: execFileSync("openssl", args, { encoding: "utf8", stdio: "pipe" }) };
  } catch (err) {
    const e = err as { stdout?: string; stderr?: string };
    return { ok: false, out: `${e.stdout ?? ""}${e.stderr ?? ""}` };
  }
}

async function expectPkiError(p: Promise<unknown>, code: string, file: string): Promise<PkiError> {
  const err = await p.then(
    () => null,
    (e: unknown) => e,
  );
  expect(err).toBeInstanceOf(PkiError);
  const pe = err as PkiError;
  expect({ code: pe.code as string, file: pe.file }).toEqual({ code, file });
  expect(pe.message).toContain(file);
  expect(pe.message).not.toContain("PRIVATE KEY");
  return pe;
}

describe("embedded CA: first run", async () => {
  const home = await freshHome();
  const ca = await EmbeddedCa.open({ home, serverNames: ["proxy.internal", "10.1.2.3"] });
  const f = (n: string) => join(home, n);

  test("creates every file, keys 0600 and the directory 0700", async () => {
    expect(ca.created).toEqual([
      "root-ca.crt",
      "interception-ca.crt",
      "server.crt",
      "ca-bundle.pem",
    ]);
    expect((await stat(home)).mode & 0o777).toBe(0o700);
    for (const key of ["root-ca.key", "interception-ca.key", "server.key"]) {
      expect((await stat(f(key))).mode & 0o777).toBe(0o600);
    }
    expect(await readFile(f("ca-bundle.pem"), "utf8")).toBe(ca.root.certPem);
  });

  test("root: P-256, self-signed CA, pathLen 1, ~10 years", async () => {
    const root = ca.root.cert;
    expect(root.subject).toBe("CN=SLAPENIR Root CA, O=SLAPENIR");
    expect(await root.isSelfSigned()).toBe(true);
    expect((root.publicKey.algorithm as { namedCurve?: string }).namedCurve).toBe("P-256");
    const bc = root.getExtension(x509.BasicConstraintsExtension)!;
    expect({ ca: bc.ca, pathLength: bc.pathLength, critical: bc.critical }).toEqual({
      ca: true,
      pathLength: 1,
      critical: true,
    });
    const years = (root.notAfter.getTime() - root.notBefore.getTime()) / (365 * DAY_MS);
    expect(years).toBeGreaterThan(9.9);
    expect(years).toBeLessThan(10.1);
  });

  test("server certificate: default names plus extra ones, EKU serverAuth, verifies with openssl", () => {
    const san = ca.server.cert.getExtension(x509.SubjectAlternativeNameExtension)!;
    const names = san.names.items.map((g) => `${g.type}:${g.value}`);
    for (const n of [
      "dns:localhost",
      "dns:proxy",
      "dns:proxy.internal",
      "ip:127.0.0.1",
      "ip:10.1.2.3",
    ]) {
      expect(names).toContain(n);
    }
    // No IPv6 literal unless configured (socat forwarder interop, see DEFAULT_SERVER_NAMES).
    expect(names.some((n) => n.startsWith("ip:") && n.endsWith("::1"))).toBe(false);
    const eku = ca.server.cert.getExtension(x509.ExtendedKeyUsageExtension)!;
    expect(eku.usages.map(String)).toEqual([OID_SERVER_AUTH]);
    const v = openssl([
      "verify",
      "-purpose",
      "sslserver",
      "-CAfile",
      f("ca-bundle.pem"),
      f("server.crt"),
    ]);
    expect(v).toEqual({ ok: true, out: `${f("server.crt")}: OK\n` });
  });

  test("interception CA: pathLen 0, EKU serverAuth only, critical name constraints", () => {
    const ic = ca.interception.cert;
    expect(ic.issuer).toBe(ca.root.cert.subject);
    expect(ic.getExtension(x509.BasicConstraintsExtension)?.pathLength).toBe(0);
    expect(ic.getExtension(x509.ExtendedKeyUsageExtension)?.usages.map(String)).toEqual([
      OID_SERVER_AUTH,
    ]);
    expect(ic.getExtension(OID_NAME_CONSTRAINTS)?.critical).toBe(true);
    const text = openssl(["x509", "-noout", "-text", "-in", f("interception-ca.crt")]).out;
    expect(text).toMatch(/Name Constraints: critical\s+Excluded:\s+URI:slapenir/);
    expect(openssl(["verify", "-CAfile", f("ca-bundle.pem"), f("interception-ca.crt")]).ok).toBe(
      true,
    );
  });

  test("agent certificate: clientAuth only, SAN URI + CN, 30 days, key 0600, chain verifies", async () => {
    const issued = await ca.issueAgentCert("agent-a");
    expect(issued.certPath).toBe(join(home, "agents", "agent-a.crt"));
    expect((await stat(issued.keyPath)).mode & 0o777).toBe(0o600);
    const cert = new x509.X509Certificate(await readFile(issued.certPath, "utf8"));
    expect(cert.subject).toBe("CN=agent-a");
    expect(cert.getExtension(x509.ExtendedKeyUsageExtension)?.usages.map(String)).toEqual([
      OID_CLIENT_AUTH,
    ]);
    const san = cert.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.names.items.map((g) => g.toJSON())).toEqual([
      { type: "url", value: "spiffe://slapenir/agent/agent-a" },
    ]);
    const days = (cert.notAfter.getTime() - Date.now()) / DAY_MS;
    expect(Math.round(days)).toBe(AGENT_DEFAULT_DAYS);
    expect(await readFile(issued.caBundlePath, "utf8")).toBe(ca.caBundlePem);
    const client = openssl([
      "verify",
      "-purpose",
      "sslclient",
      "-CAfile",
      issued.caBundlePath,
      issued.certPath,
    ]);
    expect(client.ok).toBe(true);
    // The agent certificate must not pass as a server (EKU clientAuth only).
    expect(
      openssl(["verify", "-purpose", "sslserver", "-CAfile", issued.caBundlePath, issued.certPath])
        .ok,
    ).toBe(false);
  });

  test("agent options: --days and --out, bad names and days refused", async () => {
    const out = join(home, "..", "elsewhere");
    const issued = await ca.issueAgentCert("b.2_x", { days: 2, outDir: out });
    // A directory of its own is one agent's certificate directory (the container's layout).
    expect(issued.keyPath).toBe(join(out, "agent.key"));
    expect(issued.certPath).toBe(join(out, "agent.crt"));
    expect(await readFile(join(out, "root_ca.crt"), "utf8")).toBe(ca.root.certPem);
    expect(Math.round((issued.notAfter.getTime() - Date.now()) / DAY_MS)).toBe(2);
    for (const bad of ["", "../x", "a/b", "-lead", "x".repeat(65), "sp ace"]) {
      await expect(ca.issueAgentCert(bad)).rejects.toMatchObject({ code: "bad-name" });
    }
    for (const days of [0, -1, 1.5, 99999]) {
      await expect(ca.issueAgentCert("ok", { days })).rejects.toMatchObject({
        code: "bad-argument",
      });
    }
  });

  test("agents issued at once in one process each get their files", async () => {
    // They rewrite the same CA bundle; temporary names once collided within a millisecond.
    const names = Array.from({ length: 8 }, (_, i) => `batch-${i}`);
    const issued = await Promise.all(names.map((n) => ca.issueAgentCert(n)));
    for (const [i, it] of issued.entries()) {
      const cert = new x509.X509Certificate(await readFile(it.certPath, "utf8"));
      expect(cert.subject).toBe(`CN=${names[i]}`);
    }
    expect(await readFile(issued[0]!.caBundlePath, "utf8")).toBe(ca.caBundlePem);
  });

  test("second run loads the same root and creates nothing", async () => {
    const again = await EmbeddedCa.open({ home, serverNames: ["proxy.internal", "10.1.2.3"] });
    expect(again.created).toEqual([]);
    expect(again.root.certPem).toBe(ca.root.certPem);
    expect(again.server.certPem).toBe(ca.server.certPem);
    expect(again.interception.certPem).toBe(ca.interception.certPem);
  });

  test("a changed server name list re-issues only the server certificate", async () => {
    const again = await EmbeddedCa.open({ home, serverNames: ["new.example"] });
    expect(again.created).toEqual(["server.crt"]);
    expect(again.root.certPem).toBe(ca.root.certPem);
    const san = again.server.cert.getExtension(x509.SubjectAlternativeNameExtension)!;
    expect(san.names.items.map((g) => g.value)).toContain("new.example");
  });
});

describe("embedded CA: bad files give a clear error naming the file", () => {
  async function setup(): Promise<{ home: string; f: (n: string) => string }> {
    const home = await freshHome();
    await EmbeddedCa.open({ home });
    return { home, f: (n: string) => join(home, n) };
  }

  test("garbled certificate", async () => {
    const { home, f } = await setup();
    await writeFile(
      f(EMBEDDED_CA_FILES.rootCert),
      "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
    );
    await expectPkiError(EmbeddedCa.open({ home }), "file-garbled", f(EMBEDDED_CA_FILES.rootCert));
    await writeFile(f(EMBEDDED_CA_FILES.rootCert), "not a certificate");
    await expectPkiError(EmbeddedCa.open({ home }), "file-garbled", f(EMBEDDED_CA_FILES.rootCert));
  });

  test("garbled key: the error shows no key material", async () => {
    const { home, f } = await setup();
    const original = await readFile(f(EMBEDDED_CA_FILES.serverKey), "utf8");
    const body = original.split("\n")[1]!;
    // Truncate the DER inside a well-formed PEM block.
    await writeFile(
      f(EMBEDDED_CA_FILES.serverKey),
      `-----BEGIN PRIVATE KEY-----\n${body.slice(0, 40)}\n-----END PRIVATE KEY-----\n`,
      { mode: 0o600 },
    );
    const err = await expectPkiError(
      EmbeddedCa.open({ home }),
      "file-garbled",
      f(EMBEDDED_CA_FILES.serverKey),
    );
    expect(err.message).not.toContain(body.slice(0, 16));
  });

  test("expired certificate", async () => {
    const { home, f } = await setup();
    const later = () => new Date(Date.now() + 11 * 365 * DAY_MS);
    const err = await expectPkiError(
      EmbeddedCa.open({ home, now: later }),
      "cert-expired",
      f("root-ca.crt"),
    );
    expect(err.message).toMatch(/expired on \d{4}-/);
  });

  test("not yet valid certificate", async () => {
    const { home, f } = await setup();
    const earlier = () => new Date(Date.now() - DAY_MS);
    await expectPkiError(
      EmbeddedCa.open({ home, now: earlier }),
      "cert-not-yet-valid",
      f("root-ca.crt"),
    );
  });

  test("key that does not belong to the certificate", async () => {
    const { home, f } = await setup();
    await copyFile(f("interception-ca.key"), f("server.key"));
    await expectPkiError(EmbeddedCa.open({ home }), "cert-mismatch", f("server.key"));
  });

  test("certificate from another root", async () => {
    const { home, f } = await setup();
    const other = await freshHome();
    await EmbeddedCa.open({ home: other });
    await copyFile(join(other, "interception-ca.crt"), f("interception-ca.crt"));
    await copyFile(join(other, "interception-ca.key"), f("interception-ca.key"));
    await expectPkiError(EmbeddedCa.open({ home }), "cert-mismatch", f("interception-ca.crt"));
  });

  test("one half of a pair missing", async () => {
    const { home, f } = await setup();
    await rm(f("root-ca.key"));
    await expectPkiError(EmbeddedCa.open({ home }), "file-missing", f("root-ca.key"));
  });

  test("key readable by others", async () => {
    const { home, f } = await setup();
    await chmod(f("root-ca.key"), 0o644);
    await expectPkiError(EmbeddedCa.open({ home }), "file-permissions", f("root-ca.key"));
  });
});

test("two processes opening a fresh home at once end up with one root", async () => {
  const home = await freshHome();
  const [a, b, c] = await Promise.all([
    EmbeddedCa.open({ home }),
    EmbeddedCa.open({ home }),
    EmbeddedCa.open({ home }),
  ]);
  expect(b.root.certPem).toBe(a.root.certPem);
  expect(c.root.certPem).toBe(a.root.certPem);
  expect(await readFile(join(home, "root-ca.crt"), "utf8")).toBe(a.root.certPem);
});
