import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { canonicalHost, formatAuthority, parseAuthority } from "./host.ts";

describe("canonicalHost accepts and normalises", () => {
  const cases: [string, string, "dns" | "ipv4" | "ipv6"][] = [
    ["api.example.com", "api.example.com", "dns"],
    ["API.Example.COM", "api.example.com", "dns"],
    ["api.example.com.", "api.example.com", "dns"],
    ["_dmarc.example.com", "_dmarc.example.com", "dns"],
    ["bücher.de", "xn--bcher-kva.de", "dns"],
    ["BÜCHER.de.", "xn--bcher-kva.de", "dns"],
    ["xn--bcher-kva.de", "xn--bcher-kva.de", "dns"],
    ["faß.de", "xn--fa-hia.de", "dns"],
    ["example。com", "example.com", "dns"],
    ["localhost", "localhost", "dns"],
    ["127.0.0.1", "127.0.0.1", "ipv4"],
    ["2130706433", "127.0.0.1", "ipv4"],
    ["0177.0.0.1", "127.0.0.1", "ipv4"],
    ["0x7f.1", "127.0.0.1", "ipv4"],
    ["0x7F000001", "127.0.0.1", "ipv4"],
    ["127.1", "127.0.0.1", "ipv4"],
    ["127.0.1", "127.0.0.1", "ipv4"],
    ["0", "0.0.0.0", "ipv4"],
    ["169.254.43518", "169.254.169.254", "ipv4"],
    ["0xa9.0xfe.0xa9.0xfe", "169.254.169.254", "ipv4"],
    ["127.0.0.1.", "127.0.0.1", "ipv4"],
    ["１２７.0.0.1", "127.0.0.1", "ipv4"],
    ["[::1]", "::1", "ipv6"],
    ["::1", "::1", "ipv6"],
    ["[2001:DB8:0:0:0:0:0:1]", "2001:db8::1", "ipv6"],
    ["[2001:db8:0:0:1:0:0:1]", "2001:db8::1:0:0:1", "ipv6"],
    ["[fd00:ec2::254]", "fd00:ec2::254", "ipv6"],
    ["[::ffff:127.0.0.1]", "127.0.0.1", "ipv4"],
    ["[::ffff:7f00:1]", "127.0.0.1", "ipv4"],
    ["[::ffff:a9fe:a9fe]", "169.254.169.254", "ipv4"],
    ["[0:0:0:0:0:ffff:10.0.0.1]", "10.0.0.1", "ipv4"],
  ];
  for (const [input, host, kind] of cases) {
    test(`${JSON.stringify(input)} → ${host}`, () => {
      expect(canonicalHost(input)).toEqual({ ok: true, value: { host, kind } });
    });
  }
});

describe("canonicalHost rejects junk with a typed error", () => {
  const cases: [string, string][] = [
    ["", "empty"],
    [".", "empty"],
    ["user@api.example.com", "userinfo"],
    ["api.example.com@evil.example", "userinfo"],
    ["api.example.com/path", "invalid-character"],
    ["api example.com", "invalid-character"],
    ["api.example.com\0", "invalid-character"],
    ["api%2eexample.com", "invalid-character"],
    ["api.example.com\\evil", "invalid-character"],
    ["*.example.com", "invalid-character"],
    ["a..b", "invalid-label"],
    ["example.com..", "invalid-label"],
    ["-lead.example.com", "invalid-label"],
    ["trail-.example.com", "invalid-label"],
    [`${"a".repeat(64)}.example.com`, "invalid-label"],
    [`${"a.".repeat(130)}com`, "too-long"],
    ["xn--zz.com", "invalid-idn"],
    ["1.2.3.4.5", "invalid-ipv4"],
    ["256.0.0.1", "invalid-ipv4"],
    ["08.0.0.1", "invalid-ipv4"],
    ["4294967296", "invalid-ipv4"],
    ["example.123", "invalid-ipv4"],
    ["[::1", "invalid-ipv6"],
    ["[fe80::1%25eth0]", "zone-id"],
    ["[1:2:3:4:5:6:7:8:9]", "invalid-ipv6"],
    ["[::1::2]", "invalid-ipv6"],
    ["[12345::]", "invalid-ipv6"],
    ["[1.2.3.4::]", "invalid-ipv6"],
    ["[::ffff:0177.0.0.1]", "invalid-ipv6"],
  ];
  for (const [input, code] of cases) {
    test(`${JSON.stringify(input).slice(0, 40)} → ${code}`, () => {
      const r = canonicalHost(input);
      expect(r.ok ? null : r.error.code).toBe(code as never);
    });
  }
});

describe("parseAuthority", () => {
  const cases: [string, number | undefined, unknown][] = [
    ["Host:443", undefined, { ok: true, value: { host: "host", kind: "dns", port: 443 } }],
    [
      "API.example.com.:8443",
      undefined,
      { ok: true, value: { host: "api.example.com", kind: "dns", port: 8443 } },
    ],
    ["[::1]:8443", undefined, { ok: true, value: { host: "::1", kind: "ipv6", port: 8443 } }],
    [
      "[::ffff:127.0.0.1]:80",
      undefined,
      { ok: true, value: { host: "127.0.0.1", kind: "ipv4", port: 80 } },
    ],
    ["0x7f.1:443", undefined, { ok: true, value: { host: "127.0.0.1", kind: "ipv4", port: 443 } }],
    [
      "api.example.com",
      443,
      { ok: true, value: { host: "api.example.com", kind: "dns", port: 443 } },
    ],
    [
      "api.example.com",
      undefined,
      { ok: false, error: { code: "missing-port", reason: "a port is required" } },
    ],
    [
      "api.example.com:",
      443,
      { ok: false, error: { code: "bad-port", reason: "port must be 1..65535" } },
    ],
    [
      "api.example.com:0",
      443,
      { ok: false, error: { code: "bad-port", reason: "port must be 1..65535" } },
    ],
    [
      "api.example.com:65536",
      443,
      { ok: false, error: { code: "bad-port", reason: "port must be 1..65535" } },
    ],
    [
      "api.example.com:+443",
      443,
      { ok: false, error: { code: "bad-port", reason: "port must be 1..65535" } },
    ],
    [
      "::1:443",
      443,
      {
        ok: false,
        error: { code: "invalid-ipv6", reason: "IPv6 addresses must be bracketed in an authority" },
      },
    ],
    [
      "[::1]x",
      443,
      { ok: false, error: { code: "invalid-character", reason: "junk after IPv6 literal" } },
    ],
    [
      "user@host:443",
      443,
      { ok: false, error: { code: "userinfo", reason: "userinfo is not allowed in an authority" } },
    ],
  ];
  for (const [input, def, want] of cases) {
    test(`${input} (default ${def})`, () => {
      expect(parseAuthority(input, def)).toEqual(want as never);
    });
  }
  test("formatAuthority brackets IPv6", () => {
    expect(formatAuthority({ host: "::1", kind: "ipv6" }, 443)).toBe("[::1]:443");
    expect(formatAuthority({ host: "a.example", kind: "dns" }, 80)).toBe("a.example:80");
  });
});

describe("properties (fast-check)", () => {
  const label = fc.stringMatching(/^[a-zA-Z0-9]([a-zA-Z0-9-]{0,10}[a-zA-Z0-9])?$/);
  const dnsName = fc
    .array(label, { minLength: 1, maxLength: 4 })
    .map((ls) => `${ls.join(".")}.example`);
  const ipv4 = fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255));
  const ipv6 = fc.array(fc.nat(0xffff), { minLength: 8, maxLength: 8 });
  const anyHost = fc.oneof(
    dnsName,
    dnsName.map((n) => `${n.toUpperCase()}.`),
    ipv4.map((b) => b.join(".")),
    ipv4.map(([a, b, c, d]) => String(((a * 256 + b) * 256 + c) * 256 + d)),
    ipv4.map(([a, b, c, d]) => `0x${a.toString(16)}.0${b.toString(8)}.${c * 256 + d}`),
    ipv6.map((g) => `[${g.map((x) => x.toString(16)).join(":")}]`),
    ipv4.map(([a, b, c, d]) => `[::ffff:${a}.${b}.${c}.${d}]`),
    fc.string({ maxLength: 30 }),
    fc.string({ unit: "grapheme", maxLength: 20 }),
  );

  test("canonicalisation is idempotent", () => {
    fc.assert(
      fc.property(anyHost, (h) => {
        const once = canonicalHost(h);
        if (!once.ok) return;
        expect(canonicalHost(once.value.host)).toEqual(once);
      }),
      { numRuns: 3000, seed: 11 },
    );
  });

  test("numeric spellings of one IPv4 address agree", () => {
    fc.assert(
      fc.property(ipv4, ([a, b, c, d]) => {
        const dotted = `${a}.${b}.${c}.${d}`;
        const forms = [
          String(((a * 256 + b) * 256 + c) * 256 + d),
          `0x${a.toString(16)}.${b}.${c * 256 + d}`,
          `0${a.toString(8)}.0${b.toString(8)}.0${c.toString(8)}.0${d.toString(8)}`,
          `${a}.${(b * 256 + c) * 256 + d}`,
          `[::ffff:${dotted}]`,
          `${dotted}.`,
        ];
        for (const f of forms)
          expect(canonicalHost(f)).toEqual({ ok: true, value: { host: dotted, kind: "ipv4" } });
      }),
      { numRuns: 500, seed: 12 },
    );
  });
});
