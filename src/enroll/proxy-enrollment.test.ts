import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { signOneTimeToken } from "../../test/stepca-double/one-time-token.ts";
import { startStepCaDouble } from "../../test/stepca-double/stepca-double.ts";
import { EnrollError } from "./enroll-error.ts";
import { proxyEnrollmentConfig, startProxyEnrollment } from "./proxy-enrollment.ts";

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

describe("proxyEnrollmentConfig", () => {
  test("reads the compose environment; the first server name is the subject", () => {
    expect(
      proxyEnrollmentConfig({
        SLAPENIR_CA_URL: "https://ca.slapenir.internal:9000",
        CERT_PATH: "/var/lib/slapenir/certs",
        SLAPENIR_CA_FINGERPRINT_FILE: "/run/enroll/root_fingerprint",
        SLAPENIR_ENROLL_TOKEN_FILE: "/run/enroll/token",
        SLAPENIR_SERVER_NAMES: "proxy.slapenir.internal, proxy",
      }),
    ).toEqual({
      caUrl: "https://ca.slapenir.internal:9000",
      certPath: "/var/lib/slapenir/certs",
      fingerprint: null,
      fingerprintFile: "/run/enroll/root_fingerprint",
      tokenFile: "/run/enroll/token",
      subject: "proxy.slapenir.internal",
      sans: ["proxy.slapenir.internal", "proxy"],
    });
  });

  test.each([
    [{}, "SLAPENIR_CA_URL is not set"],
    [
      { SLAPENIR_CA_URL: "http://ca:9000", CERT_PATH: "/x" },
      "SLAPENIR_CA_URL must be an https URL",
    ],
    [
      { SLAPENIR_CA_URL: "https://ca:9000", CERT_PATH: "/x" },
      "set SLAPENIR_CA_FINGERPRINT or SLAPENIR_CA_FINGERPRINT_FILE",
    ],
  ])("%p → %s", (env, message) => {
    expect(() => proxyEnrollmentConfig(env)).toThrow(new EnrollError("bad-config", message));
  });
});

test("from environment to a served certificate: bootstrap, enroll, restart without a token", async () => {
  const ca = await startStepCaDouble({ backdateMs: 0 });
  cleanups.push(() => ca.close());
  const dir = mkdtempSync(join(tmpdir(), "slapenir-proxy-enroll-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  writeFileSync(join(dir, "root_fingerprint"), `${ca.rootFingerprint}\n`);
  writeFileSync(
    join(dir, "token"),
    await signOneTimeToken(ca.provisioner, {
      aud: ca.signAudience,
      sub: "proxy.slapenir.internal",
      sans: ["proxy.slapenir.internal", "proxy"],
    }),
  );
  const cfg = proxyEnrollmentConfig({
    SLAPENIR_CA_URL: ca.url,
    CERT_PATH: join(dir, "certs"),
    SLAPENIR_CA_FINGERPRINT_FILE: join(dir, "root_fingerprint"),
    SLAPENIR_ENROLL_TOKEN_FILE: join(dir, "token"),
  });
  const first = await startProxyEnrollment(cfg, { onRenewed: () => {} });
  first.enrollment.stop();
  expect(first.rootPem).toBe(ca.rootPem);
  expect(first.trustBundle).toBe(ca.rootPem);
  expect(readFileSync(join(dir, "certs", "root.pem"), "utf8")).toBe(ca.rootPem);
  expect(existsSync(join(dir, "certs", "key.pem"))).toBe(true);

  // The token is spent; a restart must come up from CERT_PATH alone.
  rmSync(join(dir, "token"));
  const second = await startProxyEnrollment(cfg, { onRenewed: () => {} });
  second.enrollment.stop();
  expect(second.credentials.serial).toBe(first.credentials.serial);
  expect(ca.issued.sign).toBe(1);
});
