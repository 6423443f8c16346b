import { expect, test } from "bun:test";
import { buildSecrets, parseSecretsJson } from "../credentials/secrets.ts";
import { configChanges, credentialChanges } from "./config-diff.ts";
import { loadProxyConfig } from "./proxy-config.ts";

const base = { SLAPENIR_ALLOW: "api.openai.com", SLAPENIR_HOME: "/srv/h" };
const load = (env: Record<string, string>) => loadProxyConfig({ ...base, ...env }, "/srv");

test("nothing changed, nothing named", () => {
  expect(configChanges(load({}), load({}))).toEqual({ applied: [], restart: [] });
});

test("live settings are applied; the rest is named as waiting for a restart, in the file's terms", () => {
  const next = load({
    SLAPENIR_ALLOW: "api.openai.com,pypi.org",
    SLAPENIR_AGENT_DENYLIST: "agent:agent-c,serial:0a",
    SLAPENIR_RATE_LIMIT: "off",
    SLAPENIR_LOG_LEVEL: "debug",
    SLAPENIR_QUARANTINE_ON: "dlp,rules",
    SLAPENIR_LISTEN: "0.0.0.0:443",
    SLAPENIR_WS_IDLE_TIMEOUT_MS: "1000",
    SLAPENIR_MEMORY_SHED_PERCENT: "90",
    SLAPENIR_MAX_CONNECTIONS: "100",
    SLAPENIR_SERVER_NAMES: "proxy.internal",
  });
  expect(configChanges(load({}), next)).toEqual({
    applied: [
      "allow",
      "denyAgents",
      "denyCertificates",
      "rateLimit",
      "logLevel",
      "quarantineOn",
      "listen",
      "serverNames",
      "limits.maxConnections",
      "limits.wsIdleTimeoutMs",
    ],
    restart: ["memoryShedPercent"],
  });
});

test("a per-agent allowlist is named by its agent; order of a denylist does not matter", () => {
  const a = load({ SLAPENIR_AGENT_DENYLIST: "agent:x,agent:y" });
  const b = load({ SLAPENIR_AGENT_DENYLIST: "agent:y,agent:x" });
  expect(configChanges(a, b).applied).toEqual([]);
  const withAgent = {
    ...a,
    policy: { ...a.policy, agentAllow: new Map([["agent-a", a.policy.allow]]) },
  };
  expect(configChanges(a, withAgent).applied).toEqual(["agents.agent-a"]);
  // A credential pasted as an agent's name is not written in the audit line.
  const pasted = {
    ...a,
    policy: { ...a.policy, agentAllow: new Map([["ghp_TESTtestTESTtest1234", a.policy.allow]]) },
  };
  expect(configChanges(a, pasted).applied).toEqual(["agents.(a name not shown)"]);
});

test("where the proxy's identity lives waits for a restart: its home, and the names with it", () => {
  expect(
    configChanges(
      load({}),
      load({ SLAPENIR_HOME: "/srv/other", SLAPENIR_SERVER_NAMES: "p.internal" }),
    ),
  ).toEqual({
    // The token's default place is in the home: a new one is read (made) at once.
    applied: ["console.tokenFile"],
    restart: ["quarantineFile", "home", "serverNames"],
  });
});

test("quarantine switched on or off waits for a restart", () => {
  expect(configChanges(load({}), load({ SLAPENIR_QUARANTINE: "off" })).restart).toEqual([
    "quarantine",
    "quarantineFile",
  ]);
});

const creds = (list: object[]) =>
  buildSecrets(parseSecretsJson(JSON.stringify({ credentials: list }), "t")).entries();
const gh = {
  name: "gh",
  dummy: "ghp_dummy000000000000001",
  real: "ghp_real0000000000000001",
  hosts: ["api.github.com"],
};
const oa = {
  name: "oa",
  dummy: "sk-dummy-00000000001",
  real: "sk-real-000000000001",
  hosts: ["api.openai.com"],
};

test("credentials added, removed, and changed in a value or a binding — by name", () => {
  expect(credentialChanges(creds([gh, oa]), creds([gh, oa]))).toEqual({
    added: [],
    removed: [],
    changed: [],
  });
  expect(credentialChanges(creds([gh]), creds([oa]))).toEqual({
    added: ["oa"],
    removed: ["gh"],
    changed: [],
  });
  for (const edit of [
    { real: "ghp_real0000000000000002" },
    { dummy: "ghp_dummy000000000000002" },
    { hosts: ["uploads.github.com"] },
    { in: ["header:x-token"] },
    { agents: ["agent-a"] },
  ]) {
    expect(credentialChanges(creds([gh]), creds([{ ...gh, ...edit }])).changed).toEqual(["gh"]);
  }
});
