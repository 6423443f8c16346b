// The proxy's enrollment from its compose environment, against the real step-ca (0.19,
// Debian's packages) and the double.
import { afterEach, describe, expect, test } from "bun:test";
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { CA_IMPLEMENTATIONS } from "../../test/stepca/implementations.ts";
import { signOneTimeToken } from "../../test/stepca-double/one-time-token.ts";
import { issueFromDouble } from "../../test/stepca-double/stepca-double.ts";
import { loadProxyConfig, STEP_CA_FILES } from "../config/proxy-config.ts";
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
      interceptCertFile: null,
      interceptKeyFile: null,
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

for (const impl of CA_IMPLEMENTATIONS) {
  test.skipIf(impl.skip !== null)(
    `from environment to a served certificate (${impl.name} Step-CA): bootstrap, enroll, restart without a token`,
    async () => {
      const ca = await impl.start({ backdateMs: 0 });
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
      const ic = await issueFromDouble(ca.state.roots[0]!, "SLAPENIR Interception CA", [], 60_000);
      writeFileSync(join(dir, "interception-ca.crt"), ic.certPem);
      writeFileSync(join(dir, "interception-ca.key"), ic.keyPem);
      const cfg = proxyEnrollmentConfig({
        SLAPENIR_CA_URL: ca.url,
        CERT_PATH: join(dir, "certs"),
        SLAPENIR_CA_FINGERPRINT_FILE: join(dir, "root_fingerprint"),
        SLAPENIR_ENROLL_TOKEN_FILE: join(dir, "token"),
        SLAPENIR_INTERCEPT_CA_CERT: join(dir, "interception-ca.crt"),
        SLAPENIR_INTERCEPT_CA_KEY: join(dir, "interception-ca.key"),
      });
      const first = await startProxyEnrollment(cfg, { onRenewed: () => {} });
      first.enrollment.stop();
      expect(first.rootPem).toBe(ca.rootPem);
      expect(first.trustBundle).toBe(ca.rootPem);
      // CERT_PATH now holds what the proxy's config loads in Step-CA mode.
      const cfgDir = join(dir, "certs");
      expect(readFileSync(join(cfgDir, STEP_CA_FILES.rootCa), "utf8")).toBe(ca.rootPem);
      expect(readFileSync(join(cfgDir, STEP_CA_FILES.serverCert), "utf8")).toBe(
        first.credentials.certPem + first.credentials.chainPem,
      );
      expect(statSync(join(cfgDir, STEP_CA_FILES.serverKey)).mode & 0o777).toBe(0o600);
      expect(readFileSync(join(cfgDir, STEP_CA_FILES.interceptionCert), "utf8")).toBe(ic.certPem);
      expect(readFileSync(join(cfgDir, STEP_CA_FILES.interceptionKey), "utf8")).toBe(ic.keyPem);
      expect(() =>
        loadProxyConfig({ CERT_PATH: cfgDir, SLAPENIR_HOME: join(dir, "home") }, dir),
      ).not.toThrow();

      // The token is spent; a restart must come up from CERT_PATH alone.
      rmSync(join(dir, "token"));
      const second = await startProxyEnrollment(cfg, { onRenewed: () => {} });
      second.enrollment.stop();
      expect(second.credentials.serial).toBe(first.credentials.serial);
    },
  );
}
