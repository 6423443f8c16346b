// THREATS 23: upstream certificates are verified. An upstream whose certificate is expired,
// not yet valid, for another host, self-signed, or from a root the proxy does not trust gets a
// 502, and no byte of the request — credentials included — is sent to it.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { DAY_MS } from "../../src/pki/x509.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { createSelfSignedServer, createTestCa, type TestCert } from "../support/test-pki.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "dummy-tls-00000000000000000000000001";
const REAL = "real-tls-4b5c6d7e8f9a0b1c2d3e4f5a6b7c";

let h: Harness;
const servers: Record<string, EchoServer> = {};

beforeAll(async () => {
  h = await startHarness({
    credentials: [{ name: "svc", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] }],
  });
  const now = Date.now();
  const stranger = await createTestCa("Untrusted Root");
  const certs: Record<string, TestCert> = {
    good: await h.upstreamCa.issue(["localhost"]),
    expired: await h.upstreamCa.issue(["localhost"], {
      notBefore: new Date(now - 3 * DAY_MS),
      notAfter: new Date(now - DAY_MS),
    }),
    notYetValid: await h.upstreamCa.issue(["localhost"], {
      notBefore: new Date(now + DAY_MS),
      notAfter: new Date(now + 3 * DAY_MS),
    }),
    wrongHost: await h.upstreamCa.issue(["elsewhere.example"]),
    untrustedRoot: await stranger.issue(["localhost"]),
    selfSigned: await createSelfSignedServer(["localhost"]),
  };
  for (const [name, cert] of Object.entries(certs)) servers[name] = startEchoServer(cert);
});

afterAll(async () => {
  for (const s of Object.values(servers)) await s.stop();
  await h?.close();
});

describe("upstream certificate verification", () => {
  test("control: a valid upstream certificate is accepted", async () => {
    const r = await h.curl(["-H", `x-key: ${DUMMY}`, `https://localhost:${servers.good!.port}/`]);
    expect(r.status).toBe(200);
    expect(servers.good!.received.length).toBe(1);
  });

  for (const name of ["expired", "notYetValid", "wrongHost", "untrustedRoot", "selfSigned"]) {
    test(`${name}: 502 and nothing sent upstream`, async () => {
      const s = servers[name]!;
      const r = await h.curl(["-H", `x-key: ${DUMMY}`, `https://localhost:${s.port}/`]);
      expect({ status: r.status, received: s.received.length }).toEqual({
        status: 502,
        received: 0,
      });
      expect(r.headers.toLowerCase()).toContain("x-slapenir-error: upstream-tls");
    });
  }
});
