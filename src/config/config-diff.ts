// What a reload changes, by name — never by value: which settings changed and whether the
// running proxy takes them at once (nearly all) or only at its next start (its home or Step-CA
// directory, the quarantine's mode and file, the memory guard), and which credentials were
// added, removed or changed. Pure: the reload audits and answers with it.

import type { CredentialEntry } from "../credentials/secrets.ts";
import { showableName } from "./config-error.ts";
import type { AllowRule, ProxyConfig } from "./proxy-config.ts";

export interface ConfigChanges {
  /** Put in force by the reload. */
  readonly applied: readonly string[];
  /** Changed in the file or environment, kept as running until a restart. */
  readonly restart: readonly string[];
}

/**
 * The limits a running proxy takes on reload, for connections, requests and WebSockets that
 * begin after it; the memory guard's are read at start.
 */
const LIVE_LIMITS = [
  "maxConnections",
  "maxAgentConnections",
  "maxHandshakesPerAddress",
  "heldBodyBudgetBytes",
  "maxHeaderBytes",
  "maxHeaderCount",
  "headerTimeoutMs",
  "idleTimeoutMs",
  "bodyIdleTimeoutMs",
  "upstreamConnectTimeoutMs",
  "upstreamResponseTimeoutMs",
  "maxHeldBodyBytes",
  "shutdownGraceMs",
  "wsMaxMessageBytes",
  "wsPingMs",
  "wsIdleMs",
] as const satisfies readonly (keyof ProxyConfig["limits"])[];

const ruleText = (r: AllowRule): string => JSON.stringify([r.pattern, r.ports, r.scope]);
const same = (a: unknown, b: unknown): boolean => JSON.stringify(a) === JSON.stringify(b);

/** The settings that differ between the running configuration and the one read now. */
export function configChanges(running: ProxyConfig, next: ProxyConfig): ConfigChanges {
  const applied: string[] = [];
  const restart: string[] = [];
  const a = running.policy;
  const b = next.policy;
  if (!same(a.allow.map(ruleText), b.allow.map(ruleText))) applied.push("allow");
  for (const agent of new Set([...a.agentAllow.keys(), ...b.agentAllow.keys()])) {
    const before = (a.agentAllow.get(agent) ?? []).map(ruleText);
    if (!same(before, (b.agentAllow.get(agent) ?? []).map(ruleText))) {
      applied.push(`agents.${showableName(agent) ? agent : "(a name not shown)"}`);
    }
  }
  if (!same([...a.deny.agents].sort(), [...b.deny.agents].sort())) applied.push("denyAgents");
  const certs = (d: typeof a.deny) => [[...d.serials].sort(), [...d.fingerprints].sort()];
  if (!same(certs(a.deny), certs(b.deny))) applied.push("denyCertificates");
  for (const k of ["rateLimit", "handshakeRate", "mintRate", "allowPrivate", "logLevel"] as const) {
    if (!same(running[k], next[k])) applied.push(k);
  }
  const qa = running.quarantine;
  const qb = next.quarantine;
  if (!same(qa?.on, qb?.on) && qa && qb) applied.push("quarantineOn");
  if (!same(qa?.holdMs, qb?.holdMs) || (qa === undefined) !== (qb === undefined)) {
    restart.push("quarantine");
  }
  if (!same(qa?.file, qb?.file)) restart.push("quarantineFile");
  // Named as the configuration file names them. Listeners are bound again, trust and the
  // server certificate's names read again, live; where the proxy's identity lives (its home,
  // Step-CA's directory) and the memory guard are read at start.
  const liveToo: [string, unknown, unknown][] = [
    ["listen", running.listen, next.listen],
    ["adminListen", running.adminListen, next.adminListen],
    ["upstreamCa", running.upstreamCaFile, next.upstreamCaFile],
    ["console.tokenFile", running.adminTokenFile, next.adminTokenFile],
  ];
  for (const [name, before, after] of liveToo) if (!same(before, after)) applied.push(name);
  const atStart: [string, unknown, unknown][] = [
    ["home", running.home, next.home],
    ["loops", running.loops, next.loops],
  ];
  const ca = running.certificates;
  const cb = next.certificates;
  if (ca.mode === "step-ca" || cb.mode === "step-ca") {
    atStart.push(["certPath", ca.mode === "step-ca" && ca.dir, cb.mode === "step-ca" && cb.dir]);
  } else if (ca.home === cb.home && !same(ca.serverNames, cb.serverNames)) {
    applied.push("serverNames");
  } else atStart.push(["serverNames", ca.serverNames, cb.serverNames]);
  const field: Partial<Record<keyof ProxyConfig["limits"], string>> = {
    memoryLimit: "memoryLimit",
    memoryShedAt: "memoryShedPercent",
    wsIdleMs: "limits.wsIdleTimeoutMs",
  };
  for (const [name, before, after] of atStart) if (!same(before, after)) restart.push(name);
  for (const k of Object.keys(running.limits) as (keyof ProxyConfig["limits"])[]) {
    if (same(running.limits[k], next.limits[k])) continue;
    const name = field[k] ?? `limits.${k}`;
    ((LIVE_LIMITS as readonly string[]).includes(k) ? applied : restart).push(name);
  }
  return { applied, restart };
}

export interface CredentialChanges {
  readonly added: readonly string[];
  readonly removed: readonly string[];
  readonly changed: readonly string[];
}

/** Which credentials a reload adds, removes or changes (hosts, surfaces, agents or a value). */
export function credentialChanges(
  before: readonly CredentialEntry[],
  after: readonly CredentialEntry[],
): CredentialChanges {
  // Where it is written (`source`) and lengths are not what it is; the values are compared.
  const view = (c: CredentialEntry) => {
    const { source: _where, realLength: _length, dummyLength: _dl, ...rest } = c.view;
    return JSON.stringify(rest);
  };
  const old = new Map(before.map((c) => [c.name, c]));
  const now = new Map(after.map((c) => [c.name, c]));
  const changed = after.filter((c) => {
    const o = old.get(c.name);
    if (!o) return false;
    const realSame = o.real === null || c.real === null ? o.real === c.real : o.real.equals(c.real);
    return view(o) !== view(c) || !o.dummy.equals(c.dummy) || !realSame;
  });
  return {
    added: after.filter((c) => !old.has(c.name)).map((c) => c.name),
    removed: before.filter((c) => !now.has(c.name)).map((c) => c.name),
    changed: changed.map((c) => c.name),
  };
}
