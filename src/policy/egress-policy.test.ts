import { describe, expect, test } from "bun:test";
import { compileEgressPolicy, type EgressPolicyInput } from "./egress-policy.ts";
import { PolicyError } from "./policy-error.ts";

const policy = compileEgressPolicy({
  allow: [
    "api.example.com",
    "*.github.com",
    { host: "uploads.example.org", ports: [443, 8443] },
    "localhost:*",
    "127.0.0.1:8080",
    "[::1]:9443",
    "bücher.de",
  ],
  agents: { "agent-a": ["pypi.org", "*.pythonhosted.org:*"] },
});

describe("decide", () => {
  const cases: [
    string,
    { agent: string; host: string; port: number; scheme: "http" | "https" },
    unknown,
  ][] = [
    [
      "exact host, default port",
      { agent: "x", host: "api.example.com", port: 443, scheme: "https" },
      {
        ok: true,
        value: { rule: "allow[0] api.example.com" },
        reason: "https://api.example.com:443 allowed by allow[0] api.example.com",
      },
    ],
    [
      "case and trailing dot",
      { agent: "x", host: "API.Example.com.", port: 443, scheme: "https" },
      {
        ok: true,
        value: { rule: "allow[0] api.example.com" },
        reason: "https://api.example.com:443 allowed by allow[0] api.example.com",
      },
    ],
    [
      "exact host, other port",
      { agent: "x", host: "api.example.com", port: 8443, scheme: "https" },
      {
        ok: false,
        code: "policy-denied",
        reason: "no allow rule matches https://api.example.com:8443",
      },
    ],
    [
      "subdomain of exact host",
      { agent: "x", host: "evil.api.example.com", port: 443, scheme: "https" },
      {
        ok: false,
        code: "policy-denied",
        reason: "no allow rule matches https://evil.api.example.com:443",
      },
    ],
    [
      "look-alike suffix",
      { agent: "x", host: "api.example.com.evil.example", port: 443, scheme: "https" },
      {
        ok: false,
        code: "policy-denied",
        reason: "no allow rule matches https://api.example.com.evil.example:443",
      },
    ],
    [
      "wildcard subdomain",
      { agent: "x", host: "api.github.com", port: 443, scheme: "https" },
      {
        ok: true,
        value: { rule: "allow[1] *.github.com" },
        reason: "https://api.github.com:443 allowed by allow[1] *.github.com",
      },
    ],
    [
      "wildcard deep subdomain",
      { agent: "x", host: "a.b.github.com", port: 443, scheme: "https" },
      {
        ok: true,
        value: { rule: "allow[1] *.github.com" },
        reason: "https://a.b.github.com:443 allowed by allow[1] *.github.com",
      },
    ],
    [
      "wildcard does not match apex",
      { agent: "x", host: "github.com", port: 443, scheme: "https" },
      { ok: false, code: "policy-denied", reason: "no allow rule matches https://github.com:443" },
    ],
    [
      "wildcard does not match suffix trick",
      { agent: "x", host: "evilgithub.com", port: 443, scheme: "https" },
      {
        ok: false,
        code: "policy-denied",
        reason: "no allow rule matches https://evilgithub.com:443",
      },
    ],
    [
      "ports list",
      { agent: "x", host: "uploads.example.org", port: 8443, scheme: "https" },
      {
        ok: true,
        value: { rule: "allow[2] uploads.example.org" },
        reason: "https://uploads.example.org:8443 allowed by allow[2] uploads.example.org",
      },
    ],
    [
      "any port",
      { agent: "x", host: "localhost", port: 31337, scheme: "http" },
      {
        ok: true,
        value: { rule: "allow[3] localhost:*" },
        reason: "http://localhost:31337 allowed by allow[3] localhost:*",
      },
    ],
    [
      "numeric IPv4 spelling",
      { agent: "x", host: "0x7f.1", port: 8080, scheme: "http" },
      {
        ok: true,
        value: { rule: "allow[4] 127.0.0.1:8080" },
        reason: "http://127.0.0.1:8080 allowed by allow[4] 127.0.0.1:8080",
      },
    ],
    [
      "mapped IPv6 spelling",
      { agent: "x", host: "[::ffff:127.0.0.1]", port: 8080, scheme: "http" },
      {
        ok: true,
        value: { rule: "allow[4] 127.0.0.1:8080" },
        reason: "http://127.0.0.1:8080 allowed by allow[4] 127.0.0.1:8080",
      },
    ],
    [
      "IPv6 literal",
      { agent: "x", host: "[0:0::1]", port: 9443, scheme: "https" },
      {
        ok: true,
        value: { rule: "allow[5] [::1]:9443" },
        reason: "https://[::1]:9443 allowed by allow[5] [::1]:9443",
      },
    ],
    [
      "IDN pattern and punycode host",
      { agent: "x", host: "xn--bcher-kva.de", port: 443, scheme: "https" },
      {
        ok: true,
        value: { rule: "allow[6] bücher.de" },
        reason: "https://xn--bcher-kva.de:443 allowed by allow[6] bücher.de",
      },
    ],
    [
      "agent rule for that agent",
      { agent: "agent-a", host: "pypi.org", port: 443, scheme: "https" },
      {
        ok: true,
        value: { rule: "agents.agent-a[0] pypi.org" },
        reason: "https://pypi.org:443 allowed by agents.agent-a[0] pypi.org",
      },
    ],
    [
      "agent also gets global rules",
      { agent: "agent-a", host: "api.example.com", port: 443, scheme: "https" },
      {
        ok: true,
        value: { rule: "allow[0] api.example.com" },
        reason: "https://api.example.com:443 allowed by allow[0] api.example.com",
      },
    ],
    [
      "agent rule not for other agents",
      { agent: "agent-b", host: "pypi.org", port: 443, scheme: "https" },
      { ok: false, code: "policy-denied", reason: "no allow rule matches https://pypi.org:443" },
    ],
    [
      "userinfo host",
      { agent: "x", host: "user@api.example.com", port: 443, scheme: "https" },
      { ok: false, code: "policy-denied", reason: "invalid host (userinfo)" },
    ],
    [
      "invalid port",
      { agent: "x", host: "api.example.com", port: 0, scheme: "https" },
      { ok: false, code: "policy-denied", reason: "invalid port" },
    ],
    [
      "metadata by name is just not allowed",
      { agent: "x", host: "169.254.169.254", port: 80, scheme: "http" },
      {
        ok: false,
        code: "policy-denied",
        reason: "no allow rule matches http://169.254.169.254:80",
      },
    ],
  ];
  for (const [name, req, want] of cases) {
    test(name, () => {
      expect(policy.decide(req)).toEqual(want as never);
    });
  }

  test("empty policy denies everything", () => {
    const p = compileEgressPolicy({ allow: [] });
    expect(p.decide({ agent: "a", host: "api.example.com", port: 443, scheme: "https" }).ok).toBe(
      false,
    );
  });

  test("'*' allows every host on the default port", () => {
    const p = compileEgressPolicy({ allow: ["*"] });
    expect(p.decide({ agent: "a", host: "anything.example", port: 443, scheme: "https" }).ok).toBe(
      true,
    );
    expect(p.decide({ agent: "a", host: "anything.example", port: 22, scheme: "https" }).ok).toBe(
      false,
    );
  });
});

describe("compile errors name the rule", () => {
  const bad: [string, EgressPolicyInput, string][] = [
    ["bad host", { allow: ["api.example.com", "exa mple.com"] }, "allow[1]"],
    ["bad port", { allow: ["api.example.com:99999"] }, "allow[0]"],
    ["wildcard on IP", { allow: ["*.127.0.0.1"] }, "allow[0]"],
    ["wildcard on TLD", { allow: ["*.com"] }, "allow[0]"],
    ["inner wildcard", { allow: ["api.*.com"] }, "allow[0]"],
    ["userinfo", { allow: ["u@api.example.com"] }, "allow[0]"],
    ["port twice", { allow: [{ host: "api.example.com:443", ports: [443] }] }, "allow[0]"],
    ["empty ports", { allow: [{ host: "api.example.com", ports: [] }] }, "allow[0]"],
    ["agent rule", { allow: [], agents: { "agent-a": ["ok.example", ""] } }, "agents.agent-a[1]"],
    ["not a list", { allow: "api.example.com" as never }, "allow"],
  ];
  for (const [name, input, path] of bad) {
    test(name, () => {
      let err: unknown;
      try {
        compileEgressPolicy(input);
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(PolicyError);
      expect(err).toBeInstanceOf(TypeError);
      expect((err as PolicyError).path).toBe(path);
      expect((err as PolicyError).message.startsWith(`${path}: `)).toBe(true);
    });
  }
});
