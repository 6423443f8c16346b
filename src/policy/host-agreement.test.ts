import { describe, expect, test } from "bun:test";
import { type HostAgreementInput, resolveRequestHost } from "./host-agreement.ts";

const ok = (host: string, kind: string, port: number, scheme: string) => ({
  ok: true,
  value: { target: { host, kind, port }, scheme },
  reason: "",
});

describe("resolveRequestHost", () => {
  const cases: [string, HostAgreementInput, unknown][] = [
    [
      "tunnel, all agree",
      {
        connectTarget: "api.example.com:443",
        sni: "api.example.com",
        hostHeader: "api.example.com",
      },
      ok("api.example.com", "dns", 443, "https"),
    ],
    [
      "tunnel, spellings differ but agree",
      {
        connectTarget: "API.example.com.:443",
        sni: "api.example.com",
        hostHeader: "api.EXAMPLE.com:443",
      },
      ok("api.example.com", "dns", 443, "https"),
    ],
    [
      "tunnel to IP without SNI",
      { connectTarget: "127.0.0.1:8443", hostHeader: "0x7f.1:8443" },
      ok("127.0.0.1", "ipv4", 8443, "https"),
    ],
    [
      "tunnel, non-default port in Host",
      {
        connectTarget: "api.example.com:8443",
        sni: "api.example.com",
        hostHeader: "api.example.com:8443",
      },
      ok("api.example.com", "dns", 8443, "https"),
    ],
    [
      "tunnel, Host omits non-default port",
      {
        connectTarget: "api.example.com:8443",
        sni: "api.example.com",
        hostHeader: "api.example.com",
      },
      {
        ok: false,
        code: "misdirected",
        reason: "Host does not match the destination api.example.com:8443",
      },
    ],
    [
      "SNI differs (domain fronting)",
      { connectTarget: "api.example.com:443", sni: "evil.example", hostHeader: "api.example.com" },
      {
        ok: false,
        code: "misdirected",
        reason: "SNI does not match CONNECT target api.example.com:443",
      },
    ],
    [
      "Host differs",
      { connectTarget: "evil.example:443", sni: "evil.example", hostHeader: "api.example.com" },
      {
        ok: false,
        code: "misdirected",
        reason: "Host does not match the destination evil.example:443",
      },
    ],
    [
      "absolute-form inside tunnel differs",
      {
        connectTarget: "evil.example:443",
        sni: "evil.example",
        absoluteAuthority: "api.example.com",
        absoluteScheme: "https",
        hostHeader: "evil.example",
      },
      { ok: false, code: "misdirected", reason: "request target does not match CONNECT target" },
    ],
    [
      "http:// inside tunnel",
      {
        connectTarget: "a.example:443",
        absoluteAuthority: "a.example",
        absoluteScheme: "http",
        hostHeader: "a.example",
      },
      { ok: false, code: "misdirected", reason: "plain http:// target inside a TLS tunnel" },
    ],
    [
      "bad CONNECT target",
      { connectTarget: "user@a.example:443" },
      { ok: false, code: "bad-request", reason: "invalid CONNECT target (userinfo)" },
    ],
    [
      "bad Host",
      { connectTarget: "a.example:443", hostHeader: "a..example" },
      { ok: false, code: "bad-request", reason: "invalid Host (invalid-label)" },
    ],
    [
      "plain absolute-form",
      { absoluteAuthority: "Example.org", absoluteScheme: "http", hostHeader: "example.org:80" },
      ok("example.org", "dns", 80, "http"),
    ],
    [
      "plain absolute-form, Host differs",
      { absoluteAuthority: "example.org", absoluteScheme: "http", hostHeader: "evil.example" },
      {
        ok: false,
        code: "misdirected",
        reason: "Host does not match the destination example.org:80",
      },
    ],
    [
      "no destination",
      { hostHeader: "example.org" },
      {
        ok: false,
        code: "bad-request",
        reason: "no destination: neither CONNECT nor absolute-form",
      },
    ],
  ];
  for (const [name, input, want] of cases) {
    test(name, () => {
      expect(resolveRequestHost(input)).toEqual(want as never);
    });
  }
});
