import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ConfigError } from "./config-error.ts";
import {
  autoLoops,
  fromWire,
  loadLivePolicy,
  loadProxyConfig,
  loopsFor,
  STEP_CA_FILES,
  toWire,
} from "./proxy-config.ts";

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "slapenir-config-"));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

function errorOf(env: Record<string, string>): ConfigError {
  try {
    loadProxyConfig(env, dir);
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

test("embedded defaults", () => {
  const c = loadProxyConfig({}, "/srv/app");
  expect(c).toEqual({
    configFile: undefined,
    listen: { host: "127.0.0.1", port: 8443 },
    adminListen: { host: "127.0.0.1", port: 8081 },
    home: "/srv/app/.slapenir",
    loops: autoLoops(),
    certificates: { mode: "embedded", home: "/srv/app/.slapenir", serverNames: [] },
    tokensJson: undefined,
    policy: {
      allow: [],
      agentAllow: new Map(),
      deny: { agents: [], serials: [], fingerprints: [] },
    },
    allowPrivate: false,
    upstreamCaFile: undefined,
    nodeExtraCaCerts: undefined,
    limits: {
      maxHeaderBytes: 16384,
      maxHeaderCount: 100,
      headerTimeoutMs: 10000,
      idleTimeoutMs: 60000,
      bodyIdleTimeoutMs: 30000,
      upstreamConnectTimeoutMs: 10000,
      upstreamResponseTimeoutMs: 120000,
      maxHeldBodyBytes: 10485760,
      heldBodyBudgetBytes: 33554432,
      maxConnections: 1024,
      maxAgentConnections: 64,
      maxHandshakesPerAddress: 64,
      shutdownGraceMs: 10000,
      memoryLimit: "auto",
      memoryShedAt: 0.8,
      wsMaxMessageBytes: 67108864,
      wsPingMs: 30000,
      wsIdleMs: 300000,
    },
    rateLimit: { perSecond: 50, burst: 100 },
    handshakeRate: { perSecond: 50, burst: 100 },
    mintRate: { perSecond: 10, burst: 50 },
    quarantine: {
      holdMs: null,
      file: "/srv/app/.slapenir/quarantine.json",
      on: ["dlp"],
    },
    logLevel: "info",
    adminTokenFile: "/srv/app/.slapenir/admin-token",
  });
});

test("values from the environment", () => {
  const c = loadProxyConfig(
    {
      SLAPENIR_LISTEN: "[::]:443",
      SLAPENIR_ADMIN_LISTEN: "0.0.0.0:0",
      SLAPENIR_HOME: "/var/lib/slapenir",
      SLAPENIR_SERVER_NAMES: "proxy.internal, 10.0.0.2",
      SLAPENIR_ALLOW: "api.openai.com, *.github.com:443, localhost:*, [::1]:8443",
      SLAPENIR_ALLOW_PRIVATE: "true",
      SLAPENIR_MAX_HEADER_BYTES: "32768",
      SLAPENIR_MAX_HELD_BODY_BYTES: "2048",
      SLAPENIR_HELD_BODY_BUDGET_BYTES: "4096",
      SLAPENIR_MAX_CONNECTIONS: "5000",
      SLAPENIR_MAX_AGENT_CONNECTIONS: "400",
      SLAPENIR_MAX_HANDSHAKES_PER_ADDRESS: "300",
      SLAPENIR_MEMORY_LIMIT: "1.5g",
      SLAPENIR_MEMORY_SHED_PERCENT: "90",
      SLAPENIR_RATE_LIMIT: "600/m,burst=5",
      SLAPENIR_LOG_LEVEL: "DEBUG",
      SLAPENIR_AGENT_DENYLIST: `serial:0A:BC, sha256:${"AB".repeat(32)}, agent:agent-x`,
      TOKENS_JSON: "tokens.json",
      NODE_EXTRA_CA_CERTS: "/etc/extra.pem",
    },
    "/srv",
  );
  expect(c.listen).toEqual({ host: "::", port: 443 });
  expect(c.adminListen).toEqual({ host: "0.0.0.0", port: 0 });
  expect(c.certificates).toEqual({
    mode: "embedded",
    home: "/var/lib/slapenir",
    serverNames: ["proxy.internal", "10.0.0.2"],
  });
  expect(c.policy.allow.map((r) => [r.pattern.pattern, r.ports])).toEqual([
    ["api.openai.com", [443]],
    ["*.github.com:443", [443]],
    ["localhost:*", "any"],
    ["[::1]:8443", [8443]],
  ]);
  expect(c.allowPrivate).toBe(true);
  expect(c.limits.maxHeaderBytes).toBe(32768);
  expect([c.limits.maxHeldBodyBytes, c.limits.heldBodyBudgetBytes]).toEqual([2048, 4096]);
  expect([
    c.limits.maxConnections,
    c.limits.maxAgentConnections,
    c.limits.maxHandshakesPerAddress,
  ]).toEqual([5000, 400, 300]);
  expect([c.limits.memoryLimit, c.limits.memoryShedAt]).toEqual([1610612736, 0.9]);
  expect(loadProxyConfig({ SLAPENIR_MEMORY_LIMIT: "OFF" }).limits.memoryLimit).toBe("off");
  // A total below the other caps' defaults lowers them with it.
  const small = loadProxyConfig({ SLAPENIR_MAX_CONNECTIONS: "16" }).limits;
  expect([small.maxConnections, small.maxAgentConnections, small.maxHandshakesPerAddress]).toEqual([
    16, 16, 16,
  ]);
  expect(c.rateLimit).toEqual({ perSecond: 10, burst: 5 });
  expect(c.logLevel).toBe("debug");
  expect(c.policy.deny).toEqual({
    agents: ["agent-x"],
    serials: ["0abc"],
    fingerprints: ["ab".repeat(32)],
  });
  expect(c.tokensJson).toBe("/srv/tokens.json");
  expect(c.nodeExtraCaCerts).toBe("/etc/extra.pem");
  expect(loadProxyConfig({ SLAPENIR_RATE_LIMIT: "off" }).rateLimit).toBeUndefined();
  const metered = loadProxyConfig({
    SLAPENIR_HANDSHAKE_RATE: "5/s,burst=7",
    SLAPENIR_MINT_RATE: "Off",
  });
  expect([metered.handshakeRate, metered.mintRate]).toEqual([
    { perSecond: 5, burst: 7 },
    undefined,
  ]);
  expect(loadProxyConfig({}, "/srv").quarantine).toEqual({
    holdMs: null,
    file: "/srv/.slapenir/quarantine.json",
    on: ["dlp"],
  });
  expect(
    loadProxyConfig(
      { SLAPENIR_QUARANTINE: "30m", SLAPENIR_QUARANTINE_FILE: "state/q.json" },
      "/srv",
    ).quarantine,
  ).toEqual({ holdMs: 1_800_000, file: "/srv/state/q.json", on: ["dlp"] });
  expect(loadProxyConfig({ SLAPENIR_QUARANTINE_ON: "dlp, rules" }).quarantine?.on).toEqual([
    "dlp",
    "rules",
  ]);
  expect(loadProxyConfig({ SLAPENIR_QUARANTINE: "off" }).quarantine).toBeUndefined();
});

test("the result is immutable, deeply", () => {
  const c = loadProxyConfig({ SLAPENIR_ALLOW: "a.example" });
  expect(Object.isFrozen(c)).toBe(true);
  expect(Object.isFrozen(c.limits)).toBe(true);
  expect(Object.isFrozen(c.policy.allow[0]!.pattern)).toBe(true);
  expect(Object.isFrozen(c.policy.deny.agents)).toBe(true);
  expect(() => {
    (c.limits as { maxHeaderBytes: number }).maxHeaderBytes = 1;
  }).toThrow();
  expect(() => (c.policy.agentAllow as Map<string, never>).set("x", [] as never)).toThrow(
    "immutable",
  );
});

const bad: [Record<string, string>, string][] = [
  [{ SLAPENIR_LISTEN: "8443" }, "SLAPENIR_LISTEN: must be host:port"],
  [{ SLAPENIR_LISTEN: "127.0.0.1:70000" }, "SLAPENIR_LISTEN: must be host:port"],
  [{ SLAPENIR_ADMIN_LISTEN: "[nothex]:1" }, "SLAPENIR_ADMIN_LISTEN: must be host:port"],
  [
    { SLAPENIR_ALLOW: "ok.example,bad host" },
    "SLAPENIR_ALLOW[1]: is not a valid host (invalid character in host)",
  ],
  [{ SLAPENIR_ALLOW: "*.com" }, "SLAPENIR_ALLOW[0]: a wildcard needs at least two labels"],
  [{ SLAPENIR_ALLOW_PRIVATE: "maybe" }, "SLAPENIR_ALLOW_PRIVATE: must be true or false"],
  [
    { SLAPENIR_MAX_HEADER_BYTES: "12k" },
    "SLAPENIR_MAX_HEADER_BYTES: must be an integer from 1024 to 1048576",
  ],
  [{ SLAPENIR_MAX_HEADER_COUNT: "1" }, "SLAPENIR_MAX_HEADER_COUNT: must be an integer from 8"],
  [
    { SLAPENIR_MAX_HELD_BODY_BYTES: "20971520", SLAPENIR_HELD_BODY_BUDGET_BYTES: "10485760" },
    "SLAPENIR_HELD_BODY_BUDGET_BYTES: must be at least SLAPENIR_MAX_HELD_BODY_BYTES (20971520)",
  ],
  [
    { SLAPENIR_MAX_HELD_BODY_BYTES: "41943040" },
    "SLAPENIR_HELD_BODY_BUDGET_BYTES: must be at least SLAPENIR_MAX_HELD_BODY_BYTES (41943040)",
  ],
  [
    { SLAPENIR_MAX_CONNECTIONS: "64", SLAPENIR_MAX_AGENT_CONNECTIONS: "65" },
    "SLAPENIR_MAX_AGENT_CONNECTIONS: must not exceed SLAPENIR_MAX_CONNECTIONS (64)",
  ],
  [
    { SLAPENIR_MAX_HANDSHAKES_PER_ADDRESS: "1025" },
    "SLAPENIR_MAX_HANDSHAKES_PER_ADDRESS: must not exceed SLAPENIR_MAX_CONNECTIONS (1024)",
  ],
  [{ SLAPENIR_MAX_CONNECTIONS: "0" }, "SLAPENIR_MAX_CONNECTIONS: must be an integer from 1"],
  [{ SLAPENIR_MEMORY_LIMIT: "lots" }, "SLAPENIR_MEMORY_LIMIT: must be 'auto', 'off' or a size"],
  [{ SLAPENIR_MEMORY_LIMIT: "16M" }, "SLAPENIR_MEMORY_LIMIT: must be 'auto', 'off' or a size"],
  [
    { SLAPENIR_MEMORY_SHED_PERCENT: "99" },
    "SLAPENIR_MEMORY_SHED_PERCENT: must be an integer from 50 to 95",
  ],
  [{ SLAPENIR_HEADER_TIMEOUT_MS: "-5" }, "SLAPENIR_HEADER_TIMEOUT_MS: must be an integer"],
  [{ SLAPENIR_RATE_LIMIT: "fast" }, "SLAPENIR_RATE_LIMIT: must be 'off' or like"],
  [{ SLAPENIR_RATE_LIMIT: "0/s" }, "SLAPENIR_RATE_LIMIT: must be 'off' or like"],
  [{ SLAPENIR_RATE_LIMIT: "5/s,burst=0" }, "SLAPENIR_RATE_LIMIT: burst must be at least 1"],
  [{ SLAPENIR_HANDSHAKE_RATE: "many" }, "SLAPENIR_HANDSHAKE_RATE: must be 'off' or like"],
  [{ SLAPENIR_MINT_RATE: "1/h" }, "SLAPENIR_MINT_RATE: must be 'off' or like"],
  [{ SLAPENIR_QUARANTINE: "0s" }, "SLAPENIR_QUARANTINE: must be 'on' (until released), 'off'"],
  [{ SLAPENIR_QUARANTINE: "1d" }, "SLAPENIR_QUARANTINE: must be 'on' (until released), 'off'"],
  [{ SLAPENIR_QUARANTINE_ON: "dlp,typo" }, "SLAPENIR_QUARANTINE_ON[1]: must be kinds among"],
  [{ SLAPENIR_LOG_LEVEL: "loud" }, "SLAPENIR_LOG_LEVEL: must be one of fatal, error"],
  [
    { SLAPENIR_AGENT_DENYLIST: "0abc" },
    "SLAPENIR_AGENT_DENYLIST[0]: entries must be 'agent:NAME', 'serial:HEX' or 'sha256:HEX'",
  ],
  [
    { SLAPENIR_AGENT_DENYLIST: "sha256:abcd" },
    "SLAPENIR_AGENT_DENYLIST[0]: must be a SHA-256 fingerprint",
  ],
  [
    { SLAPENIR_AGENT_DENYLIST: "serial:01,agent:../x" },
    "SLAPENIR_AGENT_DENYLIST[1]: is not a valid agent name",
  ],
  [{ SLAPENIR_SERVER_NAMES: "ok,bad name" }, "SLAPENIR_SERVER_NAMES[1]: is neither"],
  [
    { SLAPENIR_UPSTREAM_CA: "/nonexistent.pem" },
    "SLAPENIR_UPSTREAM_CA: /nonexistent.pem cannot be read (ENOENT)",
  ],
  [{ CERT_PATH: "/nonexistent-dir" }, "CERT_PATH: directory /nonexistent-dir does not exist"],
  [
    { SLAPENIR_POLICY: "/nonexistent.json" },
    "SLAPENIR_POLICY: /nonexistent.json cannot be read (ENOENT)",
  ],
];
for (const [env, message] of bad) {
  test(`bad: ${JSON.stringify(env)}`, () => {
    expect(errorOf(env).message).toStartWith(message);
  });
}

describe("policy file", () => {
  async function policy(doc: unknown): Promise<string> {
    const file = join(dir, `policy-${Math.random().toString(36).slice(2)}.json`);
    await writeFile(file, typeof doc === "string" ? doc : JSON.stringify(doc));
    return file;
  }

  test("allow, per-agent allow and the denylist; merged with the environment", async () => {
    const file = await policy({
      allow: ["pypi.org", "files.pythonhosted.org:443"],
      agents: { "agent-a": { allow: ["api.openai.com"] }, "agent-b": {} },
      denyAgents: ["agent-c", "agent-d"],
      denyCertificates: { serials: ["01:02"], fingerprints: ["CD".repeat(32)] },
    });
    const c = loadProxyConfig(
      {
        SLAPENIR_POLICY: file,
        SLAPENIR_ALLOW: "example.com",
        SLAPENIR_AGENT_DENYLIST: "agent:agent-c,serial:ff",
      },
      dir,
    );
    expect(c.policy.allow.map((r) => r.pattern.pattern)).toEqual([
      "example.com",
      "pypi.org",
      "files.pythonhosted.org:443",
    ]);
    expect([...c.policy.agentAllow].map(([k, v]) => [k, v.map((r) => r.pattern.pattern)])).toEqual([
      ["agent-a", ["api.openai.com"]],
      ["agent-b", []],
    ]);
    expect(c.policy.deny).toEqual({
      agents: ["agent-c", "agent-d"],
      serials: ["ff", "0102"],
      fingerprints: ["cd".repeat(32)],
    });
  });

  test("the live policy is read again from the file as it is now", async () => {
    const file = await policy({ allow: ["a.example"] });
    const env = { SLAPENIR_POLICY: file, SLAPENIR_ALLOW: "env.example" };
    const first = loadLivePolicy(env, dir);
    await writeFile(file, JSON.stringify({ allow: ["b.example"], denyAgents: ["agent-a"] }));
    const next = loadLivePolicy(env, dir);
    expect(first.allow.map((r) => r.pattern.pattern)).toEqual(["env.example", "a.example"]);
    expect(next.allow.map((r) => r.pattern.pattern)).toEqual(["env.example", "b.example"]);
    expect(next.deny.agents).toEqual(["agent-a"]);
    expect(Object.isFrozen(next.deny)).toBe(true);
    await writeFile(file, JSON.stringify({ denyAgents: ["agent a"] }));
    expect(() => loadLivePolicy(env, dir)).toThrow(
      /^SLAPENIR_POLICY .*: denyAgents\[0\]: is not a valid agent name/,
    );
  });

  const badPolicies: [unknown, string][] = [
    ["{not json", "is not valid JSON"],
    [[], "must be a JSON object"],
    [{ allowed: [] }, "unknown field 'allowed'"],
    [{ allow: "x.example" }, ": allow: must be an array"],
    [{ allow: ["ok.example", "no good"] }, ": allow[1]: is not a valid host"],
    [{ agents: { "bad/agent": {} } }, ": agents: has a key that is not a valid agent name"],
    [
      { agents: { a: { allow: ["x.example"], deny: [] } } },
      ': agents.a: must be { "allow": [...] }',
    ],
    [
      { denyCertificates: { fingerprints: ["12"] } },
      ": denyCertificates.fingerprints[0]: must be a SHA-256",
    ],
    [{ denyAgents: "agent-a" }, ": denyAgents: must be an array of agent names"],
    [{ denyAgents: ["ok", 7] }, ": denyAgents[1]: is not a valid agent name"],
  ];
  for (const [doc, message] of badPolicies) {
    test(`bad policy: ${JSON.stringify(doc)}`, async () => {
      const file = await policy(doc);
      const err = errorOf({ SLAPENIR_POLICY: file });
      expect(err.message).toStartWith("SLAPENIR_POLICY");
      expect(err.message).toContain(message);
    });
  }
});

describe("Step-CA mode (CERT_PATH)", () => {
  test("expects root_ca.crt, proxy.crt, proxy.key; interception files optional but paired", async () => {
    const certs = join(dir, "certs");
    await mkdir(certs, { recursive: true });
    expect(errorOf({ CERT_PATH: certs }).message).toContain(
      `${join(certs, "root_ca.crt")} does not exist`,
    );
    for (const f of [STEP_CA_FILES.rootCa, STEP_CA_FILES.serverCert, STEP_CA_FILES.serverKey]) {
      await writeFile(join(certs, f), "x");
    }
    const c = loadProxyConfig({ CERT_PATH: certs, SLAPENIR_HOME: "/h" }, dir);
    expect(c.certificates).toEqual({
      mode: "step-ca",
      dir: certs,
      rootCaFile: join(certs, "root_ca.crt"),
      serverCertFile: join(certs, "proxy.crt"),
      serverKeyFile: join(certs, "proxy.key"),
      interceptionCertFile: undefined,
      interceptionKeyFile: undefined,
      home: "/h",
    });
    await writeFile(join(certs, STEP_CA_FILES.interceptionCert), "x");
    expect(errorOf({ CERT_PATH: certs }).message).toContain("must be provided together");
    await writeFile(join(certs, STEP_CA_FILES.interceptionKey), "x");
    const both = loadProxyConfig({ CERT_PATH: certs }, dir).certificates;
    expect(both.mode === "step-ca" && both.interceptionKeyFile).toBe(
      join(certs, "interception-ca.key"),
    );
  });

  test("SLAPENIR_UPSTREAM_CA must hold a PEM certificate", async () => {
    const pem = join(dir, "up.pem");
    await writeFile(pem, "garbage");
    expect(errorOf({ SLAPENIR_UPSTREAM_CA: pem }).message).toBe(
      `SLAPENIR_UPSTREAM_CA: ${pem} holds no PEM certificate`,
    );
    await writeFile(pem, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    expect(loadProxyConfig({ SLAPENIR_UPSTREAM_CA: pem }, dir).upstreamCaFile).toBe(pem);
  });
});

describe("event loops", () => {
  test("auto: a loop per core, at most one per 256 MiB of a memory limit", () => {
    const MiB = 1024 * 1024;
    expect(loopsFor(2, null)).toBe(2);
    expect(loopsFor(16, null)).toBe(16);
    expect(loopsFor(128, null)).toBe(64);
    // compose.yml's 384M was sized for one loop; a bigger limit takes more.
    expect(loopsFor(16, 384 * MiB)).toBe(1);
    expect(loopsFor(16, 1024 * MiB)).toBe(4);
    expect(loopsFor(2, 4096 * MiB)).toBe(2);
    expect(loopsFor(8, 100 * MiB)).toBe(1);
  });

  test("auto is the default; a configured memory limit caps it; a number is taken as it is", () => {
    expect(loadProxyConfig({}, dir).loops).toBe(autoLoops());
    expect(loadProxyConfig({ SLAPENIR_LOOPS: "auto" }, dir).loops).toBe(autoLoops());
    expect(loadProxyConfig({ SLAPENIR_MEMORY_LIMIT: "300M" }, dir).loops).toBe(1);
    expect(loadProxyConfig({ SLAPENIR_LOOPS: "3" }, dir).loops).toBe(3);
    expect(errorOf({ SLAPENIR_LOOPS: "0" }).message).toContain("SLAPENIR_LOOPS");
  });
});

test("a configuration crosses to a Worker whole: cloned, received, the same values of the same kinds, immutable", () => {
  const c = loadProxyConfig(
    {
      SLAPENIR_ALLOW: "GET|HEAD api.github.com/repos/**,POST *.openai.com:443/v1/*,localhost:*",
      SLAPENIR_DENY_AGENTS: "mallory",
      SLAPENIR_DENY_CERTS: "serial:0a1b2c",
      SLAPENIR_RATE_LIMIT: "20/s,burst=5",
      SLAPENIR_QUARANTINE: "on",
      SLAPENIR_QUARANTINE_ON: "dlp,reflection",
      SLAPENIR_LOOPS: "2",
    },
    "/srv/app",
  );
  const got = fromWire(structuredClone(toWire(c)));
  expect(Bun.deepEquals(got, c, true)).toBe(true);
  const kinds = (a: unknown, b: unknown, path: string): string[] => {
    if (typeof a !== "object" || a === null) return [];
    const here =
      Object.getPrototypeOf(a) === Object.getPrototypeOf(b) ? [] : [`${path} is another kind`];
    const values = (o: object) =>
      o instanceof Map || o instanceof Set ? [...o.values()] : Object.values(o);
    const entries = values(a);
    const other = values(b as object);
    return [...here, ...entries.flatMap((e, i) => kinds(e, other[i], `${path}.${i}`))];
  };
  expect(kinds(got, c, "config")).toEqual([]);
  expect(Object.isFrozen(got.policy.allow[0])).toBe(true);
  expect(() => (got.policy.agentAllow as Map<string, unknown>).set("x", [])).toThrow(TypeError);
});
