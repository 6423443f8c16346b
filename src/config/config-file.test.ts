import { expect, test } from "bun:test";
import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { loadSecrets } from "../credentials/secrets.ts";
import schema from "./config.schema.json" with { type: "json" };
import { ConfigError } from "./config-error.ts";
import { FILE_SETTINGS, parseConfigFile, readConfigFile } from "./config-file.ts";
import { loadLivePolicy, loadProxyConfig } from "./proxy-config.ts";

const dir = mkdtempSync(join(tmpdir(), "slapenir-config-file-"));
const REAL = "sk-real-7f3a9c2e1b8d4f60";
const TOKEN_KEY = "ghp_TESTtestTESTtestTESTtestTESTtest1234";
const HEX_KEY = "a1b2c3d4e5f60718293a4b5c6d7e8f90";

function file(name: string, text: string): string {
  const path = join(dir, name);
  writeFileSync(path, text);
  return path;
}

function errorOf(f: () => unknown): ConfigError {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

const YAML = `# yaml-language-server: $schema=../src/config/config.schema.json
listen: 127.0.0.1:9443
home: state
allow:
  - api.openai.com
  - GET|HEAD api.github.com/repos/acme/**
agents:
  agent-a:
    allow: [pypi.org]
denyAgents: [agent-c]
rateLimit: 20/s,burst=40
quarantineOn: [dlp, rules]
limits:
  maxHeaderBytes: 8192
credentials:
  - name: openai
    dummy: sk-dummy-0000000000000000
    real: ${REAL}
    hosts: [api.openai.com]
`;

test("a YAML file gives settings, policy and credentials; paths are relative to the file", async () => {
  const path = file("slapenir.yaml", YAML);
  const env = { SLAPENIR_CONFIG: path };
  const c = loadProxyConfig(env, "/elsewhere");
  expect(c.configFile).toBe(path);
  expect(c.listen).toEqual({ host: "127.0.0.1", port: 9443 });
  expect(c.home).toBe(join(dir, "state"));
  expect(c.limits.maxHeaderBytes).toBe(8192);
  expect(c.rateLimit).toEqual({ perSecond: 20, burst: 40 });
  expect(c.quarantine?.on).toEqual(["dlp", "rules"]);
  expect(c.policy.allow.map((r) => r.pattern.host)).toEqual(["api.openai.com", "api.github.com"]);
  expect(c.policy.agentAllow.get("agent-a")).toHaveLength(1);
  expect(c.policy.deny.agents).toEqual(["agent-c"]);
  const secrets = await loadSecrets({}, readConfigFile(path));
  expect(secrets.credentials.map((x) => x.name)).toEqual(["openai"]);
  expect(secrets.credentials[0]!.real.revealText()).toBe(REAL);
  expect(secrets.credentials[0]!.source).toBe(`${path} credentials[0]`);
  secrets.dispose();
});

test("the same file in JSON reads the same", () => {
  const doc = Bun.YAML.parse(YAML) as object;
  const path = file("slapenir.json", JSON.stringify(doc));
  const a = loadProxyConfig({ SLAPENIR_CONFIG: path }, dir);
  const b = loadProxyConfig({ SLAPENIR_CONFIG: join(dir, "slapenir.yaml") }, dir);
  expect({ ...a, configFile: "" }).toEqual({ ...b, configFile: "" });
});

test("a variable that is set overrides the file; lists add to it", () => {
  const path = file("override.yaml", YAML);
  const c = loadProxyConfig(
    {
      SLAPENIR_CONFIG: path,
      SLAPENIR_LISTEN: "127.0.0.1:7443",
      SLAPENIR_ALLOW: "example.com",
      SLAPENIR_AGENT_DENYLIST: "agent:agent-d",
      SLAPENIR_RATE_LIMIT: "",
    },
    dir,
  );
  expect(c.listen.port).toBe(7443);
  expect(c.policy.allow).toHaveLength(3);
  expect([...c.policy.deny.agents].sort()).toEqual(["agent-c", "agent-d"]);
  // An empty variable is unset: the file's value stands.
  expect(c.rateLimit).toEqual({ perSecond: 20, burst: 40 });
});

test("a bad value the file gave is named by its field in the file, not by the variable", () => {
  const path = file("bad-value.yaml", "allowPrivate: true\nlimits:\n  maxHeaderBytes: 12\n");
  const e = errorOf(() => loadProxyConfig({ SLAPENIR_CONFIG: path }, dir));
  expect(e.message).toBe(`${path}: limits.maxHeaderBytes: must be an integer from 1024 to 1048576`);
  // The same value from the environment is named by the variable.
  const v = errorOf(() =>
    loadProxyConfig({ SLAPENIR_CONFIG: path, SLAPENIR_MAX_HEADER_BYTES: "12" }, dir),
  );
  expect(v.message).toStartWith("SLAPENIR_MAX_HEADER_BYTES: ");
  const rule = file("bad-rule.yaml", "allow:\n  - api.openai.com\n  - no good\n");
  expect(errorOf(() => loadLivePolicy({ SLAPENIR_CONFIG: rule }, dir)).message).toStartWith(
    `${rule}: allow[1]: `,
  );
});

test("the schema refuses unknown fields and wrong types, naming the field", () => {
  const cases: [string, ConfigError["code"], string][] = [
    ["lisen: 127.0.0.1:1\n", "bad-shape", "unknown field 'lisen'"],
    ["limits:\n  maxHeaderByte: 1\n", "bad-shape", "limits: unknown field 'maxHeaderByte'"],
    ["allowPrivate: yes-please\n", "bad-shape", "allowPrivate: must be boolean"],
    ["rateLimit: fast\n", "bad-value", "rateLimit: must match pattern"],
    ["quarantineOn: [dlp, everything]\n", "bad-value", "quarantineOn[1]: must be equal to one"],
    ["agents:\n  'bad name!':\n    allow: []\n", "bad-value", "agents: has a key that is not"],
    [
      "credentials:\n  - name: x\n    hosts: [a.com]\n",
      "bad-value",
      "credentials[0]: must have required property 'dummy'",
    ],
  ];
  for (const [text, code, message] of cases) {
    const e = errorOf(() => parseConfigFile(text, "/etc/slapenir.yaml"));
    expect(e.message).toStartWith(`/etc/slapenir.yaml: ${message}`);
    expect(e.code).toBe(code);
  }
});

test("no error quotes the file's text: a value in the wrong place is not shown", () => {
  const bad = [
    `credentials:\n  - name: x\n    dummy: d-0000000000\n    real: [${REAL}]\n    hosts: [a.com]\n`,
    `listen: ${REAL}\n`,
    `allow: {${REAL}: 1}\n`,
    `credentials: [{name: x, dummy: d-0000000000, real: ${REAL}, hosts: [a.com], ${REAL}: 1}]\n`,
    `credentials:\n  - name: x\n    dummy: "${REAL}\n`,
    `{"credentials": [{"name": "x", "real": "${REAL}",}]}`,
    `rateLimit: ${REAL}\n`,
    // A credential pasted as a key: as an agent, an unknown field, at any depth.
    `agents:\n  ci: {allow: [x.com]}\n  ${TOKEN_KEY}:\n`,
    `agents:\n  ${TOKEN_KEY}: {allow: [x.com], deny: 1}\n`,
    `${HEX_KEY}: 1\n`,
    `limits:\n  ${HEX_KEY}: 1\n`,
    `console:\n  ${TOKEN_KEY}: 1\n`,
    `credentials:\n  - {name: x, dummy: d-0000000000, real: r-0000000000, hosts: [a.com], ${HEX_KEY}: 1}\n`,
  ];
  for (const [i, text] of bad.entries()) {
    const path = file(`leak-${i}.${text.startsWith("{") ? "json" : "yaml"}`, text);
    const e = errorOf(() => {
      const f = readConfigFile(path);
      loadProxyConfig({ SLAPENIR_CONFIG: path }, dir, f);
    });
    for (const secret of [REAL, TOKEN_KEY, HEX_KEY])
      expect(e.message).not.toContain(secret.slice(3, 15));
  }
});

test("a file that cannot be read or parsed is named", () => {
  expect(errorOf(() => readConfigFile(join(dir, "absent.yaml"))).message).toBe(
    `SLAPENIR_CONFIG: ${join(dir, "absent.yaml")} cannot be read (ENOENT)`,
  );
  expect(errorOf(() => parseConfigFile("a: [1\n", "/x.yaml")).message).toBe(
    "/x.yaml: is not valid YAML",
  );
  expect(errorOf(() => parseConfigFile("{", "/x.json")).message).toBe("/x.json: is not valid JSON");
  // An empty file is an empty configuration.
  expect(parseConfigFile("", "/x.yaml").settings).toEqual({});
});

test("every setting of the schema stands for a variable, and every variable for a setting", () => {
  const props = schema.properties as Record<string, { properties?: Record<string, unknown> }>;
  const fromSchema = Object.entries(props).flatMap(([k, v]) =>
    v.properties && k !== "denyCertificates"
      ? Object.keys(v.properties).map((p) => `${k}.${p}`)
      : [k],
  );
  const policyAndCredentials = [
    "$schema",
    "allow",
    "agents",
    "denyAgents",
    "denyCertificates",
    "credentials",
  ];
  expect(fromSchema.filter((k) => !policyAndCredentials.includes(k)).sort()).toEqual(
    FILE_SETTINGS.map(([field]) => field).sort(),
  );
});

test("the example in docs/ reads as the proxy reads it", async () => {
  const path = join(import.meta.dir, "../../docs/slapenir.example.yaml");
  const f = readConfigFile(path);
  const c = loadProxyConfig({}, "/", f);
  expect(c.policy.allow.length).toBeGreaterThan(0);
  const secrets = await loadSecrets({}, f);
  expect(secrets.redacted().map((x) => x.name)).toEqual(["openai", "anthropic", "github"]);
  secrets.dispose();
});
