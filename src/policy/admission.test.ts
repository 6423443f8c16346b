import { describe, expect, test } from "bun:test";
import { parsedHead } from "../../test/support/request-fixtures.ts";
import { admitConnect, admitRequest, type TunnelFacts } from "./admission.ts";
import { compileEgressPolicy } from "./egress-policy.ts";

const head = parsedHead;

const TUNNEL: TunnelFacts = { connectTarget: "api.example.com:443", sni: "api.example.com" };
const inTunnel = (line: string, host = "api.example.com") =>
  admitRequest(head(`${line}\r\nHost: ${host}\r\n\r\n`), TUNNEL);
const plain = (line: string, host: string) =>
  admitRequest(head(`${line}\r\nHost: ${host}\r\n\r\n`), null);

describe("requests", () => {
  test("inside a tunnel, an origin-form request goes to the tunnel's host", () => {
    expect(inTunnel("GET /v1/models HTTP/1.1")).toEqual({
      ok: true,
      value: { target: { host: "api.example.com", kind: "dns", port: 443 }, scheme: "https" },
      reason: "",
    });
  });

  test("outside a tunnel, an absolute http:// request goes to its authority", () => {
    expect(plain("GET http://Example.org:8080/x HTTP/1.1", "example.org:8080")).toMatchObject({
      ok: true,
      value: { target: { host: "example.org", port: 8080 }, scheme: "http" },
    });
  });

  const refused: [string, () => unknown, string, string][] = [
    ["a known method in lower case", () => inTunnel("get / HTTP/1.1"), "bad-request", "upper-case"],
    ["TRACE (it echoes credentials)", () => inTunnel("TRACE / HTTP/1.1"), "bad-request", "TRACE"],
    ["TRACK", () => inTunnel("TRACK / HTTP/1.1"), "bad-request", "TRACK"],
    [
      "CONNECT inside a tunnel",
      () =>
        admitRequest(head("CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n"), TUNNEL),
      "bad-request",
      "inside a tunnel",
    ],
    [
      "origin-form outside a tunnel",
      () => plain("GET /x HTTP/1.1", "a.example"),
      "bad-request",
      "absolute",
    ],
    [
      "https:// outside a tunnel (it must be intercepted)",
      () => plain("GET https://a.example/x HTTP/1.1", "a.example"),
      "bad-request",
      "CONNECT",
    ],
    [
      "a Host naming another server",
      () => inTunnel("GET / HTTP/1.1", "evil.example"),
      "misdirected",
      "Host",
    ],
  ];
  for (const [name, run, code, reason] of refused) {
    test(`refused: ${name}`, () => {
      const v = run() as { ok: boolean; code?: string; reason: string };
      expect(v.ok).toBe(false);
      expect(v.code).toBe(code);
      expect(v.reason).toContain(reason);
    });
  }

  test("a body on GET, HEAD, DELETE or OPTIONS is refused; an empty one passes", () => {
    for (const method of ["GET", "HEAD", "DELETE", "OPTIONS"]) {
      for (const framing of ["Content-Length: 5", "Transfer-Encoding: chunked"]) {
        const v = admitRequest(
          head(`${method} / HTTP/1.1\r\nHost: api.example.com\r\n${framing}\r\n\r\n`),
          TUNNEL,
        );
        expect(v).toMatchObject({ ok: false, code: "bad-request" });
      }
    }
    const empty = `GET / HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 0\r\n\r\n`;
    expect(admitRequest(head(empty), TUNNEL).ok).toBe(true);
    const post = `POST / HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5\r\n\r\n`;
    expect(admitRequest(head(post), TUNNEL).ok).toBe(true);
  });

  test("an unknown method in any case is the upstream's business", () => {
    expect(inTunnel("PROPFIND / HTTP/1.1").ok).toBe(true);
    expect(inTunnel("brew / HTTP/1.1").ok).toBe(true);
  });
});

describe("CONNECT", () => {
  const policy = compileEgressPolicy({ allow: ["api.example.com"] });
  const connect = (target: string) =>
    admitConnect(head(`CONNECT ${target} HTTP/1.1\r\nHost: ${target}\r\n\r\n`), "agent-a", policy);

  test("to an allowed destination: the canonical target, and the rule that allowed it", () => {
    expect(connect("API.example.com:443")).toEqual({
      ok: true,
      value: { host: "api.example.com", kind: "dns", port: 443 },
      reason: "https://api.example.com:443 allowed by allow[0] api.example.com",
    });
  });

  test("elsewhere: refused by policy, naming what no rule matched", () => {
    expect(connect("other.example:443")).toEqual({
      ok: false,
      code: "policy-denied",
      reason: "no allow rule matches https://other.example:443",
    });
  });
});
