// The agent's init-certs (s6 oneshot) and cert-renewer (s6 longrun) scripts, run outside a
// container against the real step-ca (0.19, Debian's packages) and the double. step-cli cannot
// be built here (Debian's sources of it are incomplete), so `step` on PATH is the stand-in in
// fixtures/step-standin.ts, which only forwards to the CA's HTTP API (bootstrap, sign, renew):
// what is tested is the scripts' logic (when to enroll, what to pin, where files go, that the
// token never shows) and the wire exchange with a real CA, not step-cli itself.
import { afterEach, describe, expect, test } from "bun:test";
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createKeyAndCsr } from "../../src/enroll/csr.ts";
import { StepCaClient } from "../../src/enroll/stepca-client.ts";
import { x509 } from "../../src/pki/x509.ts";
import type { CaOptions, CaUnderTest } from "../stepca/ca-under-test.ts";
import { CA_IMPLEMENTATIONS } from "../stepca/implementations.ts";
import { signOneTimeToken } from "../stepca-double/one-time-token.ts";
import { s6RcDir, s6ScriptsDir, waitFor } from "./tool-paths.ts";

const NAME = "agent-1";
const SANS = [NAME, `spiffe://slapenir/agent/${NAME}`];
const SYSTEM_BUNDLE_MARK = "# system bundle stand-in\n";

const cleanups: (() => void | Promise<void>)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

interface Box {
  dir: string;
  certDir: string;
  enrollDir: string;
  env: Record<string, string>;
  log: string;
  token: string;
}

async function box(ca: CaUnderTest): Promise<Box> {
  const dir = mkdtempSync(join(tmpdir(), "slapenir-initcerts-"));
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  const bin = join(dir, "bin");
  const certDir = join(dir, "certs");
  const enrollDir = join(dir, "enroll");
  mkdirSync(bin);
  mkdirSync(enrollDir);
  writeFileSync(
    join(bin, "step"),
    `#!/bin/sh\nexec "${process.execPath}" "${join(import.meta.dir, "fixtures", "step-standin.ts")}" "$@"\n`,
  );
  chmodSync(join(bin, "step"), 0o755);
  const token = await signOneTimeToken(ca.provisioner, {
    aud: ca.signAudience,
    sub: NAME,
    sans: SANS,
  });
  writeFileSync(join(enrollDir, "token"), token, { mode: 0o600 });
  writeFileSync(join(enrollDir, "root_fingerprint"), `${ca.rootFingerprint}\n`);
  writeFileSync(join(dir, "system-bundle.pem"), SYSTEM_BUNDLE_MARK);
  const log = join(dir, "step-calls.log");
  return {
    dir,
    certDir,
    enrollDir,
    log,
    token,
    env: {
      PATH: `${bin}:${process.env.PATH ?? "/usr/bin:/bin"}`,
      HOME: dir,
      SLAPENIR_CERT_DIR: certDir,
      SLAPENIR_AGENT_NAME: NAME,
      SLAPENIR_CA_URL: ca.url,
      SLAPENIR_ENROLL_TOKEN_FILE: join(enrollDir, "token"),
      SLAPENIR_CA_FINGERPRINT_FILE: join(enrollDir, "root_fingerprint"),
      SLAPENIR_SYSTEM_CA_BUNDLE: join(dir, "system-bundle.pem"),
      STEP_STANDIN_LOG: log,
    },
  };
}

/** Runs a script asynchronously (the double lives in this process: never block its loop). */
async function run(script: string, env: Record<string, string>) {
  const p = Bun.spawn(["sh", script], { env, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  return { code, output: out + err };
}

const initCerts = join(s6ScriptsDir, "init-certs.sh");

function calls(b: Box): string[][] {
  return existsSync(b.log)
    ? readFileSync(b.log, "utf8")
        .trim()
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l))
    : [];
}

for (const impl of CA_IMPLEMENTATIONS) {
  describe.skipIf(impl.skip !== null)(`against the ${impl.name} Step-CA`, () => {
    async function startCa(opts: CaOptions = {}): Promise<CaUnderTest> {
      const ca = await impl.start({ backdateMs: 0, ...opts });
      cleanups.push(() => ca.close());
      return ca;
    }

    describe("init-certs", () => {
      test("first boot: bootstrap pinned root, enroll with the token, write key 0600 and trust bundle", async () => {
        const ca = await startCa();
        const b = await box(ca);
        const r = await run(initCerts, b.env);
        expect(r.output).not.toContain(b.token);
        expect(r.code).toBe(0);

        const leafPem = readFileSync(join(b.certDir, "agent.crt"), "utf8");
        const leaf = new x509.X509Certificate(leafPem);
        const sans = leaf
          .getExtension(x509.SubjectAlternativeNameExtension)!
          .names.items.map((n) => n.value);
        expect({ cn: leaf.subjectName.getField("CN")[0], sans: sans.sort() }).toEqual({
          cn: NAME,
          sans: [...SANS].sort(),
        });
        expect(statSync(join(b.certDir, "agent.key")).mode & 0o777).toBe(0o600);
        expect(readFileSync(join(b.certDir, "root_ca.crt"), "utf8")).toBe(ca.rootPem);
        const bundle = readFileSync(join(b.certDir, "ca-bundle.pem"), "utf8");
        expect(bundle.startsWith(SYSTEM_BUNDLE_MARK)).toBe(true);
        expect(bundle).toContain(ca.rootPem.trim());
        expect(calls(b).map((c) => c.slice(0, 2).join(" "))).toEqual([
          "ca bootstrap",
          "ca certificate",
        ]);
        expect(calls(b)[0]).toContain(ca.rootFingerprint);
      }, 30_000);

      test("later boots keep the valid certificate and spend no token", async () => {
        const ca = await startCa();
        const b = await box(ca);
        expect((await run(initCerts, b.env)).code).toBe(0);
        const before = readFileSync(join(b.certDir, "agent.crt"), "utf8");
        const again = await run(initCerts, b.env);
        expect(again.code).toBe(0);
        expect(again.output).toContain("enrollment skipped");
        expect(readFileSync(join(b.certDir, "agent.crt"), "utf8")).toBe(before);
        expect(calls(b).at(-1)!.slice(0, 2)).toEqual(["certificate", "verify"]);
      }, 30_000);

      test("no certificate and no token: fails with a clear message, writes nothing", async () => {
        const ca = await startCa();
        const b = await box(ca);
        rmSync(join(b.enrollDir, "token"));
        const r = await run(initCerts, b.env);
        expect(r.code).toBe(1);
        expect(r.output).toContain("no enrollment token");
        expect(existsSync(join(b.certDir, "agent.crt"))).toBe(false);
      }, 30_000);

      test("a wrong pinned fingerprint stops enrollment before the token is used", async () => {
        const ca = await startCa();
        const b = await box(ca);
        writeFileSync(join(b.enrollDir, "root_fingerprint"), `${"ab".repeat(32)}\n`);
        const r = await run(initCerts, b.env);
        expect(r.code).not.toBe(0);
        expect(existsSync(join(b.certDir, "agent.crt"))).toBe(false);
        expect(calls(b).map((c) => c[1])).toEqual(["bootstrap"]);
        // The token was never shown to the CA: it still enrolls.
        const { csrPem } = await createKeyAndCsr(NAME, SANS);
        const issued = await new StepCaClient({ caUrl: ca.url, rootPem: ca.rootPem }).sign(
          csrPem,
          b.token,
        );
        expect(issued.crt).toContain("BEGIN CERTIFICATE");
      }, 30_000);
    });

    describe("cert-renewer", () => {
      test("`step ca renew --daemon` replaces the certificate file, same key, before expiry", async () => {
        const ca = await startCa({ certLifetimeMs: 3_000 });
        const b = await box(ca);
        expect((await run(initCerts, b.env)).code).toBe(0);
        const first = readFileSync(join(b.certDir, "agent.crt"), "utf8");
        const key = readFileSync(join(b.certDir, "agent.key"), "utf8");
        const p = Bun.spawn(["sh", join(s6RcDir, "cert-renewer", "run")], {
          env: b.env,
          stdout: "ignore",
          stderr: "pipe",
        });
        cleanups.push(async () => {
          p.kill("SIGKILL");
          await p.exited;
        });
        await waitFor(
          "renewed certificate",
          () => (readFileSync(join(b.certDir, "agent.crt"), "utf8") !== first ? true : null),
          15_000,
        );
        const renewed = new x509.X509Certificate(
          readFileSync(join(b.certDir, "agent.crt"), "utf8"),
        );
        const old = new x509.X509Certificate(first);
        expect(
          Buffer.from(renewed.publicKey.rawData).equals(Buffer.from(old.publicKey.rawData)),
        ).toBe(true);
        expect(readFileSync(join(b.certDir, "agent.key"), "utf8")).toBe(key);
        const renewCall = calls(b).find((c) => c[1] === "renew")!;
        expect(renewCall).toEqual([
          "ca",
          "renew",
          "--daemon",
          "--force",
          "--ca-url",
          ca.url,
          "--root",
          join(b.certDir, "root_ca.crt"),
          join(b.certDir, "agent.crt"),
          join(b.certDir, "agent.key"),
        ]);
      }, 30_000);
    });
  });
}
