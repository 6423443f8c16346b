import { describe, expect, test } from "bun:test";
import { PolicyError } from "../policy/policy-error.ts";
import { CredentialBindings, type CredentialInput, checkRequired } from "./bindings.ts";

const b = (s: string) => new TextEncoder().encode(s);
const creds: CredentialInput[] = [
  {
    name: "openai",
    dummy: b("sk-dummy-openai-0001"),
    real: b("sk-real-openai-XXXX1"),
    hosts: ["api.openai.com"],
  },
  {
    name: "github",
    dummy: b("ghp_dummy_000000000"),
    real: b("ghp_real_1111111111"),
    hosts: ["*.github.com", "github.com"],
    agents: ["agent-a"],
  },
  {
    name: "local",
    dummy: b("dummy-local-token"),
    real: b("real-local-token!"),
    hosts: ["localhost:*", "127.0.0.1:8443"],
    require: true,
  },
  {
    name: "strict",
    dummy: b("dummy-strict-tok"),
    real: b("real-strict-tokn"),
    hosts: ["vault.example"],
    agents: ["agent-b"],
    require: true,
  },
];
const bindings = CredentialBindings.compile(creds);
const names = (agent: string, host: string, port?: number) => {
  const plan = bindings.swapPlan(agent, host, port);
  return { swaps: plan.swaps.map((s) => s.name), required: plan.required };
};

describe("swapPlan", () => {
  const cases: [
    string,
    string,
    string,
    number | undefined,
    { swaps: string[]; required: string[] },
  ][] = [
    ["bound host", "agent-a", "api.openai.com", 443, { swaps: ["openai"], required: [] }],
    [
      "bound host, host spelled oddly",
      "agent-a",
      "API.OpenAI.com.",
      undefined,
      { swaps: ["openai"], required: [] },
    ],
    [
      "bound host, wrong port (443 only)",
      "agent-a",
      "api.openai.com",
      8443,
      { swaps: [], required: [] },
    ],
    [
      "unbound host (attacker echo server)",
      "agent-a",
      "echo.evil.example",
      443,
      { swaps: [], required: [] },
    ],
    [
      "suffix look-alike",
      "agent-a",
      "api.openai.com.evil.example",
      443,
      { swaps: [], required: [] },
    ],
    ["subdomain of exact binding", "agent-a", "x.api.openai.com", 443, { swaps: [], required: [] }],
    [
      "wildcard + apex, admitted agent",
      "agent-a",
      "api.github.com",
      443,
      { swaps: ["github"], required: [] },
    ],
    ["apex listed separately", "agent-a", "github.com", 443, { swaps: ["github"], required: [] }],
    ["agent not admitted", "agent-b", "api.github.com", 443, { swaps: [], required: [] }],
    ["any port binding", "agent-b", "localhost", 31337, { swaps: ["local"], required: ["local"] }],
    [
      "IPv4 spelling of bound IP",
      "agent-b",
      "0x7f.1",
      8443,
      { swaps: ["local"], required: ["local"] },
    ],
    [
      "mapped IPv6 spelling of bound IP",
      "agent-b",
      "[::ffff:127.0.0.1]",
      8443,
      { swaps: ["local"], required: ["local"] },
    ],
    [
      "required even for an agent not admitted",
      "agent-a",
      "vault.example",
      443,
      { swaps: [], required: ["strict"] },
    ],
    [
      "admitted agent on required host",
      "agent-b",
      "vault.example",
      443,
      { swaps: ["strict"], required: ["strict"] },
    ],
    [
      "uncanonicalisable host gets nothing",
      "agent-a",
      "user@api.openai.com",
      443,
      { swaps: [], required: [] },
    ],
  ];
  for (const [name, agent, host, port, want] of cases) {
    test(name, () => {
      expect(names(agent, host, port)).toEqual(want);
    });
  }

  test("reals lists every credential whatever the host", () => {
    expect(bindings.swapPlan("x", "nowhere.example").reals.map((r) => r.name)).toEqual([
      "openai",
      "github",
      "local",
      "strict",
    ]);
    expect(bindings.reals.map((r) => r.name)).toEqual(["openai", "github", "local", "strict"]);
  });

  test("pairs carry the configured bytes", () => {
    const [pair] = bindings.swapPlan("a", "api.openai.com").swaps;
    expect(new TextDecoder().decode(pair!.dummy)).toBe("sk-dummy-openai-0001");
    expect(new TextDecoder().decode(pair!.real)).toBe("sk-real-openai-XXXX1");
  });
});

describe("checkRequired", () => {
  test("allows when every required credential was swapped", () => {
    const plan = bindings.swapPlan("agent-b", "vault.example");
    expect(checkRequired(plan, new Set(["strict"]))).toEqual({
      ok: true,
      value: null,
      reason: "required credentials present",
    });
  });
  test("denies a request that did not carry the dummy", () => {
    const plan = bindings.swapPlan("agent-b", "vault.example");
    expect(checkRequired(plan, new Set())).toEqual({
      ok: false,
      code: "required-dummy-missing",
      reason: "host requires credential strict via its dummy; request did not carry it",
    });
  });
  test("no requirement on other hosts", () => {
    expect(checkRequired(bindings.swapPlan("agent-b", "api.openai.com"), new Set()).ok).toBe(true);
  });
});

describe("compile errors name the credential, never its value", () => {
  const base = {
    name: "c",
    dummy: b("dummy-value-1"),
    real: b("real-value-123"),
    hosts: ["a.example"],
  };
  const bad: [string, CredentialInput[], string][] = [
    ["empty hosts", [{ ...base, hosts: [] }], "credentials[0] (c)"],
    ["'*' host", [{ ...base, hosts: ["*"] }], "credentials[0] (c).hosts[0]"],
    ["bad host", [{ ...base, hosts: ["a.example", "b@c"] }], "credentials[0] (c).hosts[1]"],
    ["duplicate name", [base, base], "credentials[1] (c)"],
    ["empty dummy", [{ ...base, dummy: new Uint8Array(0) }], "credentials[0] (c)"],
    ["dummy equals real", [{ ...base, real: b("dummy-value-1") }], "credentials[0] (c)"],
    ["empty agents", [{ ...base, agents: [] }], "credentials[0] (c)"],
    ["no name", [{ ...base, name: "" }], "credentials[0]"],
  ];
  for (const [name, input, path] of bad) {
    test(name, () => {
      let err: unknown;
      try {
        CredentialBindings.compile(input);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(PolicyError);
      expect((err as PolicyError).path).toBe(path);
      expect(String(err)).not.toContain("dummy-value");
      expect(String(err)).not.toContain("real-value");
    });
  }
});
