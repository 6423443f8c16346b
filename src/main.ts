// `bun run start`: loads the configuration file (SLAPENIR_CONFIG) under the environment
// (embedded defaults when nothing is set), starts the proxy, prints how to try it, and
// handles signals: SIGTERM/SIGINT drain and stop; SIGHUP, like a change of a configuration
// file, reloads everything, all or nothing. Configuration errors exit 2 with a message naming
// the bad setting; they never contain a credential value.

import { rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { ConfigError } from "./config/config-error.ts";
import { type ConfigFile, configFileFromEnv, inFileTerms } from "./config/config-file.ts";
import { loadProxyConfig } from "./config/proxy-config.ts";
import { type EnrollmentEvent, enrollmentFields } from "./enroll/enrollment.ts";
import { proxyEnrollmentConfig, startProxyEnrollment } from "./enroll/proxy-enrollment.ts";
import type { ServerCredentials } from "./net/agent/front-door.ts";
import { internalError } from "./observe/audit.ts";
import { type RunningProxy, startProxy } from "./server/proxy-server.ts";

/**
 * Step-CA mode (SLAPENIR_CA_URL set): enroll with the one-time token before the configuration
 * is read (it expects the certificate files in CERT_PATH), then keep renewing; each renewal
 * and each change of the CA's roots is swapped into the live listener without a restart.
 */
async function enrollIfConfigured(
  proxyRef: { current?: RunningProxy },
  early: EnrollmentEvent[],
): Promise<void> {
  if (!process.env.SLAPENIR_CA_URL) return;
  let tls: ServerCredentials | undefined;
  const apply = async () => {
    if (tls && proxyRef.current) await proxyRef.current.reloadCredentials(tls);
  };
  const enr = await startProxyEnrollment(proxyEnrollmentConfig(process.env), {
    onRenewed: (certPem, keyPem, chainPem) => {
      tls = {
        certPem: `${certPem.trim()}\n${chainPem.trim()}\n`,
        keyPem,
        agentCaPem: tls?.agentCaPem ?? "",
      };
      return apply();
    },
    onTrustBundle: (rootsPem) => {
      if (tls) tls = { ...tls, agentCaPem: rootsPem };
      return apply();
    },
    // In the audit log once the proxy runs (what came before it, when it starts).
    onEvent: (e) => {
      if (proxyRef.current) proxyRef.current.audit.event("enrollment", enrollmentFields(e), e.type);
      else early.push(e);
      process.stderr.write(`slapenir: enrollment ${e.type}\n`);
    },
  });
  const c = enr.credentials;
  tls = {
    certPem: `${c.certPem.trim()}\n${c.chainPem.trim()}\n`,
    keyPem: c.keyPem,
    agentCaPem: enr.trustBundle,
  };
}

async function main(): Promise<void> {
  const proxyRef: { current?: RunningProxy } = {};
  const early: EnrollmentEvent[] = [];
  await enrollIfConfigured(proxyRef, early);
  let config: ReturnType<typeof loadProxyConfig>;
  let configFile: ConfigFile | undefined;
  try {
    configFile = configFileFromEnv(process.env, process.cwd());
    config = loadProxyConfig(process.env, process.cwd(), configFile);
  } catch (e) {
    console.error(`slapenir: configuration error: ${(e as Error).message}`);
    process.exit(2);
  }
  let proxy: RunningProxy;
  // Set once the signals are handled; a loop that ends before then fails the start.
  let loopEnded = (_index: number, _reason: string) => {};
  try {
    proxy = await startProxy(config, {
      configFile,
      watchConfig: true,
      onLoopEnded: (i, why) => loopEnded(i, why),
    });
  } catch (e) {
    // A listener that cannot open, a bad secrets file: the message names what and where.
    if (!(e instanceof ConfigError)) throw e;
    console.error(`slapenir: ${(inFileTerms(e, process.env, configFile) as Error).message}`);
    process.exit(2);
  }
  proxyRef.current = proxy;
  for (const e of early.splice(0)) proxy.audit.event("enrollment", enrollmentFields(e), e.type);
  // One failing connection must not take every agent down. An error that escapes every
  // handler is audited by name only (its message could quote peer bytes) and the proxy keeps
  // serving; the failing connection has already lost its handler.
  const internal = (kind: string) => (e: unknown) =>
    internalError(proxy.audit, proxy.metrics, kind, e);
  process.on("uncaughtException", internal("exception"));
  process.on("unhandledRejection", internal("rejection"));
  const home = config.home;
  const listen = `${config.listen.host}:${proxy.port}`;
  const creds = config.configFile
    ? `configuration ${config.configFile} (reloaded when it changes)`
    : config.tokensJson
      ? "credentials from TOKENS_JSON"
      : "no configuration file (set SLAPENIR_CONFIG)";
  const pidFile = join(home, "proxy.pid");
  let stopping = false;
  const stop = async (sig: string, code = 0) => {
    if (stopping) return;
    stopping = true;
    process.stderr.write(`slapenir: ${sig}, draining connections\n`);
    // Once the listeners are closed nothing else keeps the event loop alive; without this
    // timer the runtime exits mid-shutdown (workers not wiped, last audit lines lost).
    const hold = setInterval(() => {}, 1_000);
    await proxy.close();
    rmSync(pidFile, { force: true });
    clearInterval(hold);
    process.exit(code);
  };
  // The others drain and the proxy exits 70 (EX_SOFTWARE) for its supervisor to start it again
  // (compose: `restart: unless-stopped`); quarantine and revocations are read again from disk.
  loopEnded = (i, why) =>
    void stop(
      `event loop ${i} ended (${why}); stopping to start again with clean shared state`,
      70,
    );
  process.on("SIGTERM", () => void stop("SIGTERM"));
  process.on("SIGINT", () => void stop("SIGINT"));
  // A reload is all or nothing: a bad file keeps everything as it runs (and is audited).
  process.on("SIGHUP", () => {
    proxy.reload().then(
      (r) =>
        r.restart.length > 0 &&
        process.stderr.write(`slapenir: reloaded; at the next start: ${r.restart.join(", ")}\n`),
      (e) => {
        const msg = e instanceof ConfigError ? e.message : "reload failed";
        process.stderr.write(`slapenir: ${msg}; keeping the running configuration\n`);
      },
    );
  });
  // Under `npm start` the proxy's parent is npm, which passes SIGINT and SIGTERM on but dies
  // of SIGHUP: a proxy whose parent went away drains and stops rather than run orphaned.
  const parent = process.ppid;
  const orphan = setInterval(() => {
    if (process.ppid !== parent) void stop("parent exited");
  }, 1_000);
  orphan.unref();
  // For `kill -HUP $(cat …/proxy.pid)` and the CLI.
  writeFileSync(pidFile, `${process.pid}\n`);
  // Last: the signals are handled and the pid file is there once the banner says it runs.
  process.stderr.write(
    [
      "",
      `SLAPENIR proxy listening on https://${listen} (mTLS), admin on http://${config.adminListen.host}:${proxy.adminPort}`,
      `  certificates: ${config.certificates.mode} (${home}); ${creds}`,
      `  egress allowlist: ${config.policy.allow.length === 0 ? "empty — every destination is denied (set SLAPENIR_ALLOW)" : `${config.policy.allow.length} rule(s)`}`,
      "",
      "Try it:",
      "  npm run slapenir -- agent issue my-agent",
      `  curl --proxy https://localhost:${proxy.port} --proxy-cacert ${home}/ca-bundle.pem \\`,
      `       --proxy-cert ${home}/agents/my-agent.crt --proxy-key ${home}/agents/my-agent.key \\`,
      `       --cacert ${home}/ca-bundle.pem https://example.com/`,
      "",
    ].join("\n"),
  );
}

main().catch((e) => {
  const msg =
    e instanceof Error && e.name !== "Error" ? `${e.name}: ${e.message}` : "start-up failed";
  console.error(`slapenir: ${msg}`);
  process.exit(1);
});
