// The real step-ca (smallstep/certificates 0.19 from Debian, built by build.ts) as a child
// process on loopback, configured by a ca.json written here: a root and an intermediate made
// with the project's own x509 helpers (createStepCaState), one JWK provisioner holding only
// the public key (tokens are signed by the tests with the private one, as `step ca token`
// does), short certificate lifetimes through the provisioner's claims, and a bbolt database so
// used tokens and revocations survive a restart, as in a deployment.
// The CA's log is kept in memory and never printed whole: step-ca 0.19 logs one-time tokens
// (the `ott` of sign and revoke requests). Test-only; never imported by src/.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { certToPem, exportPrivateKeyPem, sha256Fingerprint } from "../../src/pki/x509.ts";
import { waitFor } from "../containers/tool-paths.ts";
import type { CaOptions, CaUnderTest } from "../stepca/ca-under-test.ts";
import { createProvisionerKey, type ProvisionerKey } from "../stepca-double/one-time-token.ts";
import { createStepCaState, issueUnder, makeCa } from "../stepca-double/stepca-double.ts";
import { freePort } from "../support/free-port.ts";

const PROVISIONER = "enroll";

function goDuration(ms: number): string {
  return `${Math.round(ms)}ms`;
}

/** Anything shaped like a compact JWS, for messages that quote the CA's log. */
const redactTokens = (s: string) =>
  s.replace(/[\w-]{10,}\.[\w-]{10,}\.[\w-]{10,}/g, "<token>").slice(-2000);

export interface RealStepCaOptions extends CaOptions {
  /** More JWK provisioners, each with its own certificate lifetime (the proxy's, shorter). */
  more?: { name: string; certLifetimeMs: number }[];
}

export interface RealStepCa extends CaUnderTest {
  /** The keys of the provisioners added with `more`, by name. */
  more: Record<string, ProvisionerKey>;
}

export async function startRealStepCa(
  binary: string,
  opts: RealStepCaOptions = {},
): Promise<RealStepCa> {
  const state = await createStepCaState(PROVISIONER);
  const more: Record<string, ProvisionerKey> = {};
  for (const m of opts.more ?? []) more[m.name] = await createProvisionerKey(m.name);
  const dir = mkdtempSync(join(tmpdir(), "slapenir-stepca-"));
  const port = await freePort();
  const lifetimeMs = opts.certLifetimeMs ?? 24 * 3_600_000;
  const file = (name: string) => join(dir, name);

  writeFileSync(file("intermediate.crt"), certToPem(state.intermediate.cert));
  writeFileSync(
    file("intermediate.key"),
    await exportPrivateKeyPem(state.intermediate.keys.privateKey),
    {
      mode: 0o600,
    },
  );
  const jwkProvisioner = (key: ProvisionerKey, lifeMs: number) => ({
    type: "JWK",
    name: key.name,
    // The public key only: tokens are signed by the tests, as `step ca token` would.
    key: { ...key.publicJwk, kid: key.kid, use: "sig", alg: "ES256" },
    claims: {
      minTLSCertDuration: "1s",
      maxTLSCertDuration: goDuration(Math.max(lifeMs, 24 * 3_600_000)),
      defaultTLSCertDuration: goDuration(lifeMs),
    },
  });
  const writeConfig = () => {
    const roots = state.roots.map((r, i) => {
      writeFileSync(file(`root-${i}.crt`), certToPem(r.cert));
      return file(`root-${i}.crt`);
    });
    const config = {
      root: roots,
      crt: file("intermediate.crt"),
      key: file("intermediate.key"),
      address: `127.0.0.1:${port}`,
      dnsNames: ["127.0.0.1", "localhost"],
      logger: { format: "json" },
      db: { type: "bbolt", dataSource: file("db.bolt") },
      authority: {
        backdate: goDuration(opts.backdateMs ?? 60_000),
        provisioners: [
          jwkProvisioner(state.provisioner, lifetimeMs),
          ...(opts.more ?? []).map((m) => jwkProvisioner(more[m.name]!, m.certLifetimeMs)),
        ],
      },
      tls: {
        cipherSuites: [
          "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
          "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
        ],
        minVersion: 1.2,
        maxVersion: 1.3,
        renegotiation: false,
      },
    };
    writeFileSync(file("ca.json"), JSON.stringify(config, null, 2));
  };
  writeConfig();

  const url = `https://127.0.0.1:${port}`;
  const rootsPem = () => state.roots.map((r) => certToPem(r.cert)).join("");
  /** The CA's log lines, parsed (JSON) or raw; kept for `refused`, never printed whole. */
  const log: Record<string, unknown>[] = [];
  let proc: ReturnType<typeof Bun.spawn> | null = null;

  const readLog = async (stream: ReadableStream<Uint8Array>) => {
    let rest = "";
    const dec = new TextDecoder();
    for await (const chunk of stream) {
      rest += dec.decode(chunk, { stream: true });
      const lines = rest.split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        try {
          log.push(JSON.parse(line) as Record<string, unknown>);
        } catch {
          log.push({ raw: line });
        }
      }
    }
  };

  const healthy = async (): Promise<boolean> => {
    try {
      const res = await fetch(`${url}/health`, { tls: { ca: rootsPem() } } as RequestInit);
      return res.status === 200;
    } catch {
      return false;
    }
  };

  const start = async () => {
    const p = Bun.spawn([binary, file("ca.json")], {
      env: { PATH: process.env.PATH ?? "/usr/bin:/bin", HOME: dir },
      stdout: "pipe",
      stderr: "pipe",
    });
    proc = p;
    void readLog(p.stdout as ReadableStream<Uint8Array>);
    void readLog(p.stderr as ReadableStream<Uint8Array>);
    await waitFor(
      "step-ca answering /health",
      async () => {
        if (p.exitCode !== null) {
          const said = log.map((l) => (typeof l.raw === "string" ? l.raw : JSON.stringify(l)));
          throw new Error(`step-ca exited with ${p.exitCode}: ${redactTokens(said.join("\n"))}`);
        }
        return (await healthy()) ? true : null;
      },
      30_000,
    );
  };

  const stop = async () => {
    const p = proc;
    proc = null;
    if (!p) return;
    p.kill("SIGTERM");
    await p.exited;
  };

  await start();
  const firstRoot = state.roots[0]!;
  return {
    kind: "real",
    more,
    url,
    port,
    provisioner: state.provisioner,
    signAudience: `${url}/1.0/sign`,
    revokeAudience: `${url}/1.0/revoke`,
    rootPem: certToPem(firstRoot.cert),
    rootFingerprint: sha256Fingerprint(firstRoot.cert.rawData),
    state,
    rootsBundlePem: rootsPem,
    async refused(text: string) {
      await waitFor(`step-ca logging a refusal with "${text}"`, () =>
        log.some((l) => typeof l.error === "string" && l.error.includes(text)) ? true : null,
      );
    },
    stop,
    start,
    async rotateRoot() {
      // step-ca 0.19 serves every root of its `root` list from /roots and trusts each for
      // client certificates; a new list takes a restart.
      const root = await makeCa(`SLAPENIR Test Root CA ${state.roots.length + 1}`, null, 1);
      state.roots.push(root);
      writeConfig();
      await stop();
      await start();
      return {
        rootPem: certToPem(root.cert),
        fingerprint: sha256Fingerprint(root.cert.rawData),
        ca: root,
      };
    },
    async switchIssuer() {
      // step-ca serves its TLS with a certificate of its intermediate: both move at a restart.
      await issueUnder(state, state.roots.at(-1)!);
      writeFileSync(file("intermediate.crt"), certToPem(state.intermediate.cert));
      writeFileSync(
        file("intermediate.key"),
        await exportPrivateKeyPem(state.intermediate.keys.privateKey),
        { mode: 0o600 },
      );
      await stop();
      await start();
    },
    async close() {
      await stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}
