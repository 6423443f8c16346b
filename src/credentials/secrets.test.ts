import { afterAll, describe, expect, test } from "bun:test";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { inspect } from "node:util";
import { ConfigError } from "../config/config-error.ts";
import { SecretValue } from "./secret-value.ts";
import {
  buildSecrets,
  loadSecrets,
  loadSecretsFile,
  parseSecretsEnv,
  parseSecretsJson,
  secretsFromWire,
  wipeSecretsWire,
} from "./secrets.ts";

// Every value here is distinctive so a leak is easy to grep for.
const OPENAI = {
  name: "openai",
  dummy: "DUMMY-openai-000111",
  real: "REAL-openai-sk-999888777",
  hosts: ["api.openai.com"],
};
const GITHUB = {
  name: "github",
  dummy: "DUMMY-gh-ghp-222333",
  real: "REAL-gh-ghp-666555444",
  hosts: ["*.github.com", "api.github.com:443"],
  agents: ["agent-a"],
  require: true,
  inUrl: "deny",
};
const ALL_VALUES = [OPENAI.dummy, OPENAI.real, GITHUB.dummy, GITHUB.real];

function parse(doc: unknown) {
  return buildSecrets(parseSecretsJson(JSON.stringify(doc), "secrets.json"));
}

function errorOf(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error("expected a ConfigError");
}

function expectNoValues(text: string): void {
  for (const v of ALL_VALUES) {
    expect(text).not.toContain(v);
    expect(text).not.toContain(v.slice(6, 14)); // no fragment either
  }
}

const dirs: string[] = [];
afterAll(async () => {
  for (const d of dirs) await rm(d, { recursive: true, force: true });
});

describe("valid configuration", () => {
  test("file format: fields, defaults, canonical host patterns", () => {
    const s = parse({ credentials: [OPENAI, GITHUB] });
    expect(s.redacted()).toEqual([
      {
        name: "openai",
        kind: "token",
        source: "secrets.json credentials[0]",
        dummyLength: OPENAI.dummy.length,
        realLength: OPENAI.real.length,
        from: "value",
        hosts: ["api.openai.com"],
        agents: "any",
        require: false,
        in: ["header:authorization"],
        inUrl: "allow",
      },
      {
        name: "github",
        kind: "token",
        source: "secrets.json credentials[1]",
        dummyLength: GITHUB.dummy.length,
        realLength: GITHUB.real.length,
        from: "value",
        hosts: ["*.github.com", "api.github.com:443"],
        agents: ["agent-a"],
        require: true,
        in: ["header:authorization"],
        inUrl: "deny",
      },
    ]);
    const gh = s.credentials[1]!;
    expect(gh.dummy.revealText()).toBe(GITHUB.dummy);
    expect(gh.real.revealText()).toBe(GITHUB.real);
    expect(gh.hosts[0]).toMatchObject({ kind: "wildcard", host: "github.com" });
    expect(Object.isFrozen(s.credentials)).toBe(true);
    expect(Object.isFrozen(gh)).toBe(true);
  });

  test("environment variables", () => {
    const drafts = parseSecretsEnv({
      SLAPENIR_CRED_OPENAI_DUMMY: OPENAI.dummy,
      SLAPENIR_CRED_OPENAI_REAL: OPENAI.real,
      SLAPENIR_CRED_OPENAI_HOSTS: "api.openai.com, API.example.org.",
      SLAPENIR_CRED_GH_TOKEN_DUMMY: GITHUB.dummy,
      SLAPENIR_CRED_GH_TOKEN_REAL: GITHUB.real,
      SLAPENIR_CRED_GH_TOKEN_HOSTS: "*.github.com",
      SLAPENIR_CRED_GH_TOKEN_AGENTS: "agent-a,agent-b",
      SLAPENIR_CRED_GH_TOKEN_REQUIRE: "true",
      SLAPENIR_CRED_GH_TOKEN_IN_URL: "deny",
      SLAPENIR_CRED_OPENAI_IN: "header:Authorization, header:api-key",
      UNRELATED: "x",
    });
    expect(buildSecrets(drafts).redacted()).toMatchObject([
      {
        name: "gh_token",
        source: "environment",
        hosts: ["*.github.com"],
        agents: ["agent-a", "agent-b"],
        require: true,
        inUrl: "deny",
      },
      {
        name: "openai",
        hosts: ["api.openai.com", "api.example.org"],
        agents: "any",
        require: false,
        in: ["header:authorization", "header:api-key"],
      },
    ]);
  });

  test("a wildcard spanning a public suffix loads when the credential accepts it", () => {
    const s = parse({ credentials: [{ ...OPENAI, hosts: ["*.github.io"], sharedWildcard: true }] });
    expect(s.redacted()[0]!.hosts).toEqual(["*.github.io"]);
    const env = parseSecretsEnv({
      SLAPENIR_CRED_X_DUMMY: OPENAI.dummy,
      SLAPENIR_CRED_X_REAL: OPENAI.real,
      SLAPENIR_CRED_X_HOSTS: "*.herokuapp.com",
      SLAPENIR_CRED_X_SHARED_WILDCARD: "true",
    });
    expect(buildSecrets(env).redacted()[0]!.hosts).toEqual(["*.herokuapp.com"]);
    expect(() =>
      parseSecretsEnv({
        SLAPENIR_CRED_X_DUMMY: OPENAI.dummy,
        SLAPENIR_CRED_X_REAL: OPENAI.real,
        SLAPENIR_CRED_X_HOSTS: "*.herokuapp.com",
      }),
    ).toThrow("SLAPENIR_CRED_X_HOSTS[0]: *.herokuapp.com spans the public suffix herokuapp.com");
  });

  test("surfaces: where the dummy is swapped", () => {
    const s = parse({
      credentials: [{ ...OPENAI, in: ["header:X-Api-Key", "query:key", "body"] }],
    });
    expect(s.credentials[0]!.surfaces).toEqual([
      { kind: "header", name: "x-api-key" },
      { kind: "query", name: "key" },
      { kind: "body" },
    ]);
    expect(s.redacted()[0]!.in).toEqual(["header:x-api-key", "query:key", "body"]);
  });

  test("loadSecrets merges TOKENS_JSON and the environment; nothing configured is valid", async () => {
    const d = await mkdtemp(join(tmpdir(), "slapenir-secrets-"));
    dirs.push(d);
    const file = join(d, "tokens.json");
    await writeFile(file, JSON.stringify({ credentials: [GITHUB] }));
    const s = await loadSecrets({
      TOKENS_JSON: file,
      SLAPENIR_CRED_OPENAI_DUMMY: OPENAI.dummy,
      SLAPENIR_CRED_OPENAI_REAL: OPENAI.real,
      SLAPENIR_CRED_OPENAI_HOSTS: "api.openai.com",
    });
    expect(s.credentials.map((c) => c.name)).toEqual(["github", "openai"]);
    expect((await loadSecrets({})).credentials).toEqual([]);
    // The same name in both places is an error.
    const err = await loadSecrets({
      TOKENS_JSON: file,
      SLAPENIR_CRED_GITHUB_DUMMY: "another-dummy-1",
      SLAPENIR_CRED_GITHUB_REAL: "another-real-22",
      SLAPENIR_CRED_GITHUB_HOSTS: "x.example",
    }).catch((e: unknown) => e);
    expect((err as ConfigError).code).toBe("duplicate");
    expect(await loadSecretsFile(file).then((s2) => s2.credentials.length)).toBe(1);
  });
});

describe("a credential never shows its values", () => {
  test("util.inspect, Bun.inspect, JSON.stringify, template strings, spread", () => {
    const s = parse({ credentials: [OPENAI, GITHUB] });
    const c = s.credentials[0]!;
    const views = [
      inspect(c),
      inspect(s, { depth: 10, showHidden: true }),
      inspect({ ...c }, { depth: 10 }),
      Bun.inspect(s),
      Bun.inspect(c, { depth: 10 }),
      JSON.stringify(s),
      JSON.stringify(c),
      JSON.stringify({ ...c }),
      `${c} ${c.dummy} ${c.real}`,
      String(c.real),
      [c].join(","),
    ];
    for (const v of views) expectNoValues(v);
    expect(`${c}`).toBe(
      `Credential(openai: dummy ${OPENAI.dummy.length} B, real ${OPENAI.real.length} B, hosts api.openai.com)`,
    );
  });

  test("dispose zeroes every value", () => {
    const s = parse({ credentials: [OPENAI] });
    const c = s.credentials[0]!;
    s.dispose();
    expect(c.real.disposed && c.dummy.disposed).toBe(true);
    expect(() => c.real.revealText()).toThrow();
  });
});

describe("invalid configuration: errors name the entry and field, never a value", () => {
  const cases: [string, unknown, string, string][] = [
    ["not an object", [], "bad-shape", 'must be an object with a "credentials" array'],
    [
      "unknown top-level field",
      { credentials: [], extra: 1 },
      "bad-shape",
      "secrets.json: unknown field 'extra'",
    ],
    ["entry not an object", { credentials: [1] }, "bad-shape", "credentials[0]: must be an object"],
    [
      "bad name",
      { credentials: [{ ...OPENAI, name: "bad name" }] },
      "bad-value",
      "credentials[0].name: name must match",
    ],
    [
      "unknown field",
      { credentials: [{ ...OPENAI, host: ["x.example"] }] },
      "bad-shape",
      "credentials[0]: unknown field 'host'",
    ],
    [
      "unknown field named like a secret",
      { credentials: [{ ...OPENAI, [GITHUB.real]: 1 }] },
      "bad-shape",
      "unknown field (a field whose name is not shown)",
    ],
    [
      "a wildcard spanning a public suffix",
      { credentials: [{ ...OPENAI, hosts: ["api.openai.com", "*.github.io"] }] },
      "conflict",
      "credentials[0] (openai).hosts[1]: *.github.io spans the public suffix github.io: names under it belong to other owners",
    ],
    [
      "a wildcard with public suffixes under it",
      { credentials: [{ ...OPENAI, hosts: ["*.amazonaws.com:443"] }] },
      "conflict",
      "accept it with secrets.json: credentials[0] (openai).sharedWildcard = true",
    ],
    [
      "sharedWildcard not a boolean",
      { credentials: [{ ...OPENAI, sharedWildcard: "yes" }] },
      "bad-value",
      "credentials[0] (openai).sharedWildcard: must be true or false",
    ],
    [
      "a body field on a host not narrowed to endpoints",
      {
        credentials: [
          {
            ...OPENAI,
            hosts: ["POST api.openai.com/oauth/token", "api.openai.com"],
            in: ["form:client_secret"],
          },
        ],
      },
      "conflict",
      "credentials[0] (openai).hosts[1]: form:client_secret needs every host narrowed to its endpoints",
    ],
    [
      "a body field on a host narrowed only by **",
      {
        credentials: [
          { ...OPENAI, hosts: ["POST api.openai.com/**"], in: ["json:/client_secret"] },
        ],
      },
      "conflict",
      "credentials[0] (openai).hosts[0]: json:/client_secret needs every host narrowed to its endpoints",
    ],
    [
      "an internationalised public suffix",
      { credentials: [{ ...OPENAI, hosts: ["*.公司.cn"] }] },
      "conflict",
      "*.xn--55qx5d.cn spans the public suffix xn--55qx5d.cn",
    ],
    [
      "surfaces not a list",
      { credentials: [{ ...OPENAI, in: "header:x-api-key" }] },
      "bad-value",
      "credentials[0] (openai).in: must be a non-empty list of surfaces",
    ],
    [
      "a surface that frames the message",
      { credentials: [{ ...OPENAI, in: ["header:content-length"] }] },
      "bad-value",
      "credentials[0] (openai).in[0]: header:content-length frames or routes the message",
    ],
    [
      "an unknown surface",
      { credentials: [{ ...OPENAI, in: ["header:authorization", "path"] }] },
      "bad-value",
      'credentials[0] (openai).in[1]: must be "header:NAME", "query:NAME", "form:NAME", "json:/POINTER", "frame:/POINTER" or "body"',
    ],
    [
      "a frame surface on a whole host",
      { credentials: [{ ...OPENAI, in: ["frame:/access_token"] }] },
      "conflict",
      "credentials[0] (openai).hosts[0]: frame:/access_token needs every host narrowed to its endpoints (METHOD host/path, no **)",
    ],
    [
      "a surface twice",
      { credentials: [{ ...OPENAI, in: ["query:key", "query:key"] }] },
      "duplicate",
      "credentials[0] (openai).in[1]: query:key is listed twice",
    ],
    [
      "a query surface on a credential denied in URLs",
      { credentials: [{ ...OPENAI, in: ["query:key"], inUrl: "deny" }] },
      "conflict",
      'credentials[0] (openai).inUrl: inUrl is "deny" but in names a query parameter',
    ],
    [
      "dummy too short",
      { credentials: [{ ...OPENAI, dummy: "short" }] },
      "bad-value",
      "credentials[0] (openai).dummy: is 5 bytes; it must be 8..512 bytes",
    ],
    [
      "real too long",
      { credentials: [{ ...OPENAI, real: "R".repeat(513) }] },
      "bad-value",
      "credentials[0] (openai).real: is 513 bytes",
    ],
    [
      "real not a string",
      { credentials: [{ ...OPENAI, real: 12345678 }] },
      "bad-value",
      "(openai).real: must be a string",
    ],
    [
      "control character",
      { credentials: [{ ...OPENAI, real: `${OPENAI.real}\r\nX: y` }] },
      "bad-value",
      "(openai).real: must be printable ASCII",
    ],
    [
      "non-ASCII",
      { credentials: [{ ...OPENAI, dummy: `${OPENAI.dummy}é` }] },
      "bad-value",
      "(openai).dummy: must be printable ASCII",
    ],
    [
      "leading space",
      { credentials: [{ ...OPENAI, dummy: ` ${OPENAI.dummy}` }] },
      "bad-value",
      "(openai).dummy: must be printable ASCII",
    ],
    [
      "dummy equals real",
      { credentials: [{ ...OPENAI, dummy: OPENAI.real }] },
      "conflict",
      "(openai): dummy and real are the same value",
    ],
    [
      "dummy contains own real",
      { credentials: [{ ...OPENAI, dummy: `x${OPENAI.real}` }] },
      "conflict",
      "(openai): dummy contains its own real value",
    ],
    [
      "no hosts",
      { credentials: [{ ...OPENAI, hosts: [] }] },
      "missing",
      "(openai).hosts: needs at least one host",
    ],
    [
      "hosts not an array",
      { credentials: [{ ...OPENAI, hosts: "api.openai.com" }] },
      "bad-shape",
      "(openai).hosts: must be an array",
    ],
    [
      "bad host",
      { credentials: [{ ...OPENAI, hosts: ["ok.example", "bad host"] }] },
      "bad-host-pattern",
      "(openai).hosts[1]: is not a valid host",
    ],
    [
      "wildcard everything",
      { credentials: [{ ...OPENAI, hosts: ["*"] }] },
      "bad-host-pattern",
      "(openai).hosts[0]: '*' (every host) is not allowed",
    ],
    [
      "agents empty",
      { credentials: [{ ...OPENAI, agents: [] }] },
      "bad-value",
      "(openai).agents: is empty",
    ],
    [
      "bad agent",
      { credentials: [{ ...OPENAI, agents: ["ok", "b/d"] }] },
      "bad-value",
      "(openai).agents[1]: agent names must match",
    ],
    [
      "require not boolean",
      { credentials: [{ ...OPENAI, require: "yes" }] },
      "bad-value",
      "(openai).require: must be true or false",
    ],
    [
      "inUrl bad",
      { credentials: [{ ...OPENAI, inUrl: "maybe" }] },
      "bad-value",
      '(openai).inUrl: must be "allow" or "deny"',
    ],
    [
      "duplicate name",
      { credentials: [OPENAI, { ...GITHUB, name: "OpenAI" }] },
      "duplicate",
      "credential name 'OpenAI' is also used by secrets.json: credentials[0] (openai)",
    ],
    [
      "duplicate dummy",
      { credentials: [OPENAI, { ...GITHUB, dummy: OPENAI.dummy }] },
      "duplicate",
      "credentials[1] (github): has the same dummy as secrets.json: credentials[0] (openai)",
    ],
    [
      "duplicate real",
      { credentials: [OPENAI, { ...GITHUB, real: OPENAI.real }] },
      "duplicate",
      "credentials[1] (github): has the same real value as",
    ],
    [
      "dummy equals another's real",
      { credentials: [OPENAI, { ...GITHUB, dummy: OPENAI.real }] },
      "conflict",
      "credentials[1] (github): dummy contains the real value of secrets.json: credentials[0] (openai)",
    ],
  ];
  for (const [label, doc, code, message] of cases) {
    test(label, () => {
      const err = errorOf(() => parse(doc));
      expect({ code: err.code as string, hasMessage: err.message.includes(message) }).toEqual({
        code,
        hasMessage: true,
      });
      expectNoValues(err.message);
      expectNoValues(inspect(err));
    });
  }

  test("malformed JSON: the parser's message (which may quote input) is not passed on", () => {
    const err = errorOf(() =>
      parseSecretsJson(`{"credentials": [{"real": ${OPENAI.real}}]}`, "secrets.json"),
    );
    expect(err.message).toBe("secrets.json is not valid JSON");
  });

  const envCases: [string, Record<string, string>, string][] = [
    [
      "missing REAL",
      { SLAPENIR_CRED_X_DUMMY: OPENAI.dummy, SLAPENIR_CRED_X_HOSTS: "a.example" },
      "SLAPENIR_CRED_X_REAL: is not set",
    ],
    [
      "short dummy",
      {
        SLAPENIR_CRED_X_DUMMY: "d",
        SLAPENIR_CRED_X_REAL: OPENAI.real,
        SLAPENIR_CRED_X_HOSTS: "a.example",
      },
      "SLAPENIR_CRED_X_DUMMY: is 1 bytes",
    ],
    [
      "bad host",
      {
        SLAPENIR_CRED_X_DUMMY: OPENAI.dummy,
        SLAPENIR_CRED_X_REAL: OPENAI.real,
        SLAPENIR_CRED_X_HOSTS: "a.example,*",
      },
      "SLAPENIR_CRED_X_HOSTS[1]:",
    ],
    [
      "empty hosts",
      {
        SLAPENIR_CRED_X_DUMMY: OPENAI.dummy,
        SLAPENIR_CRED_X_REAL: OPENAI.real,
        SLAPENIR_CRED_X_HOSTS: " , ",
      },
      "SLAPENIR_CRED_X_HOSTS: needs at least one host",
    ],
    [
      "bad require",
      {
        SLAPENIR_CRED_X_DUMMY: OPENAI.dummy,
        SLAPENIR_CRED_X_REAL: OPENAI.real,
        SLAPENIR_CRED_X_HOSTS: "a.example",
        SLAPENIR_CRED_X_REQUIRE: "maybe",
      },
      "SLAPENIR_CRED_X_REQUIRE: must be true or false",
    ],
    [
      "bad in-url",
      {
        SLAPENIR_CRED_X_DUMMY: OPENAI.dummy,
        SLAPENIR_CRED_X_REAL: OPENAI.real,
        SLAPENIR_CRED_X_HOSTS: "a.example",
        SLAPENIR_CRED_X_IN_URL: "no",
      },
      "SLAPENIR_CRED_X_IN_URL: must be",
    ],
    [
      "unknown suffix",
      { SLAPENIR_CRED_X_TOKEN: OPENAI.real },
      "SLAPENIR_CRED_X_TOKEN: unrecognised credential variable",
    ],
  ];
  for (const [label, env, message] of envCases) {
    test(`environment: ${label}`, () => {
      const err = errorOf(() => buildSecrets(parseSecretsEnv(env)));
      expect(err.message).toContain(message);
      expectNoValues(err.message);
    });
  }

  test("an unreadable file is named without its contents", async () => {
    const err = await loadSecrets({ TOKENS_JSON: "/nonexistent/tokens.json" }).catch(
      (e: unknown) => e,
    );
    expect((err as ConfigError).message).toBe(
      "TOKENS_JSON: secrets file /nonexistent/tokens.json cannot be read (ENOENT)",
    );
  });
});

describe("AWS credentials (kind: aws)", () => {
  const AWS = {
    name: "aws",
    kind: "aws",
    accessKeyId: { dummy: "AKIADUMMY00000000001", real: "AKIAREALKEY000000009" },
    secretAccessKey: { dummy: "DUMMY-aws-secret-0000", real: "REAL-aws-secret-99998888" },
    hosts: ["s3.eu-west-3.amazonaws.com"],
  };

  test("load as one credential per key, never swapped where presented", () => {
    const s = parse({ credentials: [AWS] });
    expect(s.credentials.map((c) => [c.name, c.sigv4?.part, c.surfaces.length])).toEqual([
      ["aws.accessKeyId", "accessKeyId", 0],
      ["aws.secretAccessKey", "secretAccessKey", 0],
    ]);
    const t = parse({
      credentials: [
        { ...AWS, sessionToken: { dummy: "DUMMY-tok-000000", real: "REAL-tok-77776666" } },
      ],
    });
    expect(t.credentials.map((c) => c.sigv4?.group)).toEqual(["aws", "aws", "aws"]);
    expectNoValues(JSON.stringify(t.redacted()));
  });

  test.each([
    [
      "no secret key",
      { ...AWS, secretAccessKey: undefined },
      "credentials[0] (aws).secretAccessKey: is required",
    ],
    [
      "a key as a string",
      { ...AWS, accessKeyId: "AKIA" },
      "credentials[0] (aws).accessKeyId: must be an object",
    ],
    ["a field of another kind", { ...AWS, dummy: "x" }, "credentials[0]: unknown field 'dummy'"],
    ["an unknown kind", { ...AWS, kind: "gcp" }, 'credentials[0].kind: must be "aws" (or absent)'],
    [
      "dummy and real the same",
      { ...AWS, secretAccessKey: { dummy: "same-value-00", real: "same-value-00" } },
      "dummy and real are the same value",
    ],
    ["no hosts", { ...AWS, hosts: "s3" }, "credentials[0] (aws).hosts: must be an array"],
    [
      "regions not names",
      { ...AWS, regions: ["EU WEST"] },
      "credentials[0] (aws).regions: must be a non-empty list",
    ],
  ])("%s", (_name, entry, message) => {
    const e = errorOf(() => parse({ credentials: [JSON.parse(JSON.stringify(entry))] }));
    expect(e.message).toContain(message);
    expect(e.message).not.toContain("REAL-aws");
  });
});

describe("credentials with a source", () => {
  const SOURCED = {
    name: "sourced",
    dummy: "DUMMY-sourced-000777",
    source: { file: "/run/secrets/token" },
    hosts: ["api.example.com"],
  };
  const value = (text: string) => SecretValue.fromText(text);

  test("loaded without a value: unavailable, its source described, nothing to swap yet", () => {
    const s = parse({ credentials: [OPENAI, SOURCED] });
    expect(s.credentials.map((c) => c.name)).toEqual(["openai"]);
    expect(s.unavailable.map((c) => c.name)).toEqual(["sourced"]);
    expect(s.sources.map((x) => [x.name, x.shape, x.parts])).toEqual([
      ["sourced", "token", ["real"]],
    ]);
    expect(s.redacted()[1]).toMatchObject({
      name: "sourced",
      realLength: null,
      from: "file /run/secrets/token",
    });
  });

  test("with values: the current one swapped, the others redacted only; copies, so either config may be disposed", () => {
    const s = parse({ credentials: [OPENAI, SOURCED] });
    const current = value("REAL-sourced-now-00001");
    const older = value("REAL-sourced-old-00001");
    const next = s.withValues(
      new Map([["sourced", { current: new Map([["real", current]]), redactOnly: [older] }]]),
    );
    expect(next.credentials.map((c) => [c.name, c.real.revealText()])).toEqual([
      ["openai", OPENAI.real],
      ["sourced", "REAL-sourced-now-00001"],
    ]);
    expect(next.unavailable).toEqual([]);
    expect(next.retired.map((r) => [r.name, r.value.revealText()])).toEqual([
      ["sourced~retired", "REAL-sourced-old-00001"],
    ]);
    next.dispose();
    expect(s.unavailable[0]!.dummy.revealText()).toBe(SOURCED.dummy);
    expect(current.revealText()).toBe("REAL-sourced-now-00001");
  });

  test("a value that is another credential's real value is refused, naming both, showing neither", () => {
    const s = parse({ credentials: [OPENAI, SOURCED] });
    const e = errorOf(() =>
      s.withValues(
        new Map([
          ["sourced", { current: new Map([["real", value(OPENAI.real)]]), redactOnly: [] }],
        ]),
      ),
    );
    expect(e.code).toBe("duplicate");
    expect(e.message).toContain("(sourced)");
    expectNoValues(e.message);
  });

  test("a source and a real value together, or a bad source, are refused naming the field", () => {
    expect(
      errorOf(() => parse({ credentials: [{ ...SOURCED, real: OPENAI.real }] })).message,
    ).toContain("has a source; drop real");
    expect(
      errorOf(() => parse({ credentials: [{ ...SOURCED, source: { file: "relative" } }] })).message,
    ).toContain("credentials[0] (sourced).source.file: must be an absolute path");
    const aws = {
      name: "aws",
      kind: "aws",
      accessKeyId: { dummy: "AKIADUMMY00000000099", real: "AKIAREAL000000000099" },
      secretAccessKey: { dummy: "dummy/secret/0000000000000000000000000099" },
      source: { command: ["aws", "configure", "export-credentials", "--format", "process"] },
      hosts: ["s3.example.com"],
    };
    expect(errorOf(() => parse({ credentials: [aws] })).message).toContain(
      "has a source; drop accessKeyId",
    );
    expect(
      errorOf(() =>
        parse({
          credentials: [
            {
              ...SOURCED,
              source: {
                assumeRole: {
                  roleArn: "arn:aws:iam::123456789012:role/a",
                  accessKeyId: "AKIABASE000000000001",
                  secretAccessKey: "base-secret-0001",
                },
              },
            },
          ],
        }),
      ).message,
    ).toContain('an assumeRole source gives AWS keys: use it with "kind": "aws"');
    const { accessKeyId, ...rest } = aws;
    const ok = parse({ credentials: [{ ...rest, accessKeyId: { dummy: accessKeyId.dummy } }] });
    expect(ok.sources.map((x) => [x.name, x.shape, x.parts])).toEqual([
      ["aws", "aws", ["accessKeyId", "secretAccessKey"]],
    ]);
  });
});

describe("the wire form (an event loop in a Worker)", () => {
  const AWS = {
    name: "aws",
    kind: "aws",
    accessKeyId: { dummy: "AKIADUMMY00000000001", real: "AKIAREAL0000000000R1" },
    secretAccessKey: {
      dummy: "dummy-secret-key-0000000000000000000000001",
      real: "real-secret-key-9999999999999999999999991",
    },
    hosts: ["s3.amazonaws.com"],
    regions: ["eu-west-1"],
  };
  const SCOPED = {
    name: "scoped",
    dummy: "DUMMY-scoped-000444",
    real: "REAL-scoped-sk-444333",
    hosts: ["GET|POST api.example.com/v1/**"],
    in: ["header:x-api-key", "query:key"],
  };
  const SOURCED = {
    name: "sourced",
    dummy: "DUMMY-sourced-000888",
    source: { file: "/run/secrets/token" },
    hosts: ["api.example.com"],
  };

  test("crosses whole: the same credentials, values, retired values and views; the bytes zeroed once read", () => {
    const s = parse({ credentials: [OPENAI, GITHUB, AWS, SCOPED, SOURCED] });
    const withOld = s.withValues(
      new Map([
        ["sourced", { current: null, redactOnly: [SecretValue.fromText("REAL-sourced-old-0001")] }],
      ]),
    );
    const wire = structuredClone(withOld.toWire());
    const got = secretsFromWire(wire);
    const view = (c: typeof withOld) => ({
      credentials: c.credentials.map((x) => [x.name, x.dummy.revealText(), x.real.revealText()]),
      unavailable: c.unavailable.map((x) => [x.name, x.dummy.revealText()]),
      retired: c.retired.map((r) => [r.name, r.value.revealText()]),
      redacted: c.redacted().map(({ from: _from, ...v }) => v),
    });
    expect(view(got)).toEqual(view(withOld));
    expect(Bun.deepEquals(got.credentials, withOld.credentials)).toBe(true);
    // What crossed is zeroed once built again (the sender zeroes its own copies).
    for (const d of wire.drafts) {
      expect(d.dummy.every((b) => b === 0)).toBe(true);
      expect(d.real?.every((b) => b === 0) ?? true).toBe(true);
    }
    for (const r of wire.retired) expect(r.value.every((b) => b === 0)).toBe(true);
    const sent = withOld.toWire();
    wipeSecretsWire(sent);
    expect(sent.drafts.every((d) => d.dummy.every((b) => b === 0))).toBe(true);
    // Nothing of a source's own secrets crosses (a loop reads no source).
    expect(JSON.stringify(wire)).not.toContain("/run/secrets/token");
  });
});
