import { expect, test } from "bun:test";
import { type HostPattern, parseHostPattern } from "./host-pattern.ts";

const ALLOW = { allowAny: true, allowPort: true };
const BINDING = { allowAny: false, allowPort: true };
const NO_PORT = { allowAny: false, allowPort: false };

const valid: [string, Partial<HostPattern>][] = [
  [
    "api.openai.com",
    {
      pattern: "api.openai.com",
      kind: "exact",
      host: "api.openai.com",
      hostKind: "dns",
      port: undefined,
    },
  ],
  ["API.OpenAI.com.", { pattern: "api.openai.com", host: "api.openai.com" }],
  ["*.github.com", { pattern: "*.github.com", kind: "wildcard", host: "github.com" }],
  [
    "*.GitHub.com:443",
    { pattern: "*.github.com:443", kind: "wildcard", host: "github.com", port: 443 },
  ],
  ["localhost:8443", { pattern: "localhost:8443", host: "localhost", port: 8443 }],
  ["example.com:*", { pattern: "example.com:*", port: "any" }],
  ["10.0.0.5", { pattern: "10.0.0.5", hostKind: "ipv4" }],
  ["::1", { pattern: "[::1]", host: "::1", hostKind: "ipv6", port: undefined }],
  ["[::1]", { pattern: "[::1]", host: "::1", hostKind: "ipv6" }],
  ["[2001:DB8::1]:8443", { pattern: "[2001:db8::1]:8443", host: "2001:db8::1", port: 8443 }],
  ["  spaced.example  ", { pattern: "spaced.example" }],
  // Canonicalised by src/policy/host.ts: numeric IPv4 spellings, mapped IPv6, IDN.
  [
    "2130706433:8080",
    { pattern: "127.0.0.1:8080", host: "127.0.0.1", hostKind: "ipv4", port: 8080 },
  ],
  ["0x7f.1", { pattern: "127.0.0.1", hostKind: "ipv4" }],
  ["[::ffff:10.0.0.1]", { pattern: "10.0.0.1", hostKind: "ipv4" }],
  ["*.BÜCHER.example", { pattern: "*.xn--bcher-kva.example", kind: "wildcard" }],
];
for (const [input, expected] of valid) {
  test(`valid: ${JSON.stringify(input)}`, () => {
    expect(parseHostPattern(input, ALLOW)).toMatchObject({ ok: true, value: expected });
  });
}

test("the bare * only where allowed", () => {
  expect(parseHostPattern("*", ALLOW)).toMatchObject({
    ok: true,
    value: { kind: "any", hostKind: "any" },
  });
  expect(parseHostPattern("*", BINDING)).toEqual({
    ok: false,
    code: "bad-host-pattern",
    reason: "'*' (every host) is not allowed here",
  });
});

const invalid: [unknown, string, typeof ALLOW][] = [
  ["", "non-empty", ALLOW],
  [42, "non-empty", ALLOW],
  ["*.com", "two labels", ALLOW],
  ["a.*.com", "leading label", ALLOW],
  ["*example.com", "leading label", ALLOW],
  ["*.10.0.0.1", "IP address", ALLOW],
  ["exa mple.com", "is not a valid host (invalid character in host)", ALLOW],
  ["under_score-.com", "is not a valid host", ALLOW],
  ["host:0", "port must be", ALLOW],
  ["host:65536", "port must be", ALLOW],
  ["host:https", "port must be", ALLOW],
  ["host:443", "port is not allowed", NO_PORT],
  ["[not-ip]", "is not a valid host (invalid IPv6 address)", ALLOW],
  ["[10.0.0.1]:80", "is not a valid host", ALLOW],
  ["user@host.example", "is not a valid host (userinfo", ALLOW],
  ["a".repeat(301), "too long", ALLOW],
];
for (const [input, message, rules] of invalid) {
  test(`invalid: ${JSON.stringify(input).slice(0, 40)}`, () => {
    const r = parseHostPattern(input, rules);
    expect(r.ok).toBe(false);
    expect(r.ok ? "" : r.reason).toContain(message);
  });
}
