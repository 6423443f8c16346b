// Credentials whose real value comes from a source (issue 16, item 2), through the real proxy:
// a file rewritten mid-test (as Vault agent and Kubernetes write them), an OAuth token endpoint
// issuing tokens that expire within the test, a command. Requests keep succeeding across
// refreshes — on one kept-alive tunnel too — the agent only ever sees its dummy, an old value
// an upstream echoes after rotation is still redacted, and a source that fails past its
// value's expiry gets its requests a 503 naming the credential while every other credential
// is served. Every wait is for an observable condition (the upstream seeing a value, an
// answer), never a time.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type tls from "node:tls";
import { carries } from "../support/hostile-oracle.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, exchangeRaw, openTunnel } from "../support/raw-agent.ts";
import { createTestCa } from "../support/test-pki.ts";
import { type EchoServer, echoResponse, startEchoServer } from "../support/upstream-server.ts";

const FILE_DUMMY = "file-dummy-0000000000000001";
const OAUTH_DUMMY = "oauth-dummy-000000000000001";
const CMD_DUMMY = "cmd-dummy-00000000000000001";
const STATIC = { dummy: "static-dummy-00000000000001", real: "static-R3aL-value-0000000001" };
const fileValue = (n: number) => `file-R3aL-rotated-${String(n).padStart(8, "0")}`;
const oauthValue = (n: number) => `oauth-R3aL-issued-${String(n).padStart(8, "0")}`;
const cmdValue = (n: number) => `cmd-R3aL-printed-${String(n).padStart(8, "0")}`;

let h: Harness;
let echo: EchoServer;
let tokenServer: ReturnType<typeof Bun.serve>;
let filePath = "";
let cmdPath = "";
/** The token endpoint: how many tokens it issued, whether it fails, what it was sent. */
const idp = { issued: 0, failing: false, forms: [] as string[] };
/** What the echo upstream answers on /recall: the first Authorization it ever stored. */
let firstAuthorization: string | null = null;
/** `/slow` streams "start", then waits for `slow.release()` before it ends. */
const slow = { release: () => {}, started: 0 };

/** An answer that streams one line, then the rest once the test releases it. */
function slowAnswer(): Response {
  slow.started += 1;
  const held = new Promise<void>((ok) => {
    slow.release = ok;
  });
  return new Response(
    new ReadableStream<Uint8Array>({
      async start(c) {
        c.enqueue(new TextEncoder().encode("start\n"));
        await held;
        c.enqueue(new TextEncoder().encode("end\n"));
        c.close();
      },
    }),
    { headers: { "content-type": "text/plain" } },
  );
}

beforeAll(async () => {
  const idpCa = await createTestCa("Test IdP Root");
  const idpCert = await idpCa.issue(["127.0.0.1"]);
  tokenServer = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: idpCert.certPem, key: idpCert.keyPem },
    async fetch(req) {
      idp.forms.push(await req.text());
      if (idp.failing) return new Response("down", { status: 503 });
      idp.issued += 1;
      // Short-lived: expires within the test, so refreshes happen while it runs.
      return Response.json({
        access_token: oauthValue(idp.issued),
        token_type: "Bearer",
        expires_in: 2,
      });
    },
  });
  const dir = (await import("node:fs")).mkdtempSync(
    join((await import("node:os")).tmpdir(), "slapenir-src-"),
  );
  filePath = join(dir, "token");
  cmdPath = join(dir, "cmd-value");
  const caFile = join(dir, "idp-ca.pem");
  writeFileSync(filePath, `${fileValue(1)}\n`);
  writeFileSync(cmdPath, cmdValue(1));
  writeFileSync(caFile, idpCa.certPem);
  h = await startHarness({
    credentials: [
      {
        name: "filetok",
        dummy: FILE_DUMMY,
        source: { file: filePath, pollSeconds: 0.05 },
        hosts: ["echo.test:*"],
      },
      {
        name: "oauthtok",
        dummy: OAUTH_DUMMY,
        source: {
          oauth: {
            tokenUrl: `https://127.0.0.1:${tokenServer.port}/token`,
            grant: "client_credentials",
            clientId: "slapenir-test",
            clientSecret: "client-secret-R3aL-0000001",
            caFile,
          },
        },
        hosts: ["api.test:*"],
      },
      {
        name: "cmdtok",
        dummy: CMD_DUMMY,
        source: { command: ["sh", "-c", `cat '${cmdPath}'`], refreshSeconds: 1 },
        hosts: ["cmd.test:*"],
      },
      { name: "static", ...STATIC, hosts: ["static.test:*"] },
    ],
    allow: ["echo.test:*", "api.test:*", "cmd.test:*", "static.test:*"],
    names: ["echo.test", "api.test", "cmd.test", "static.test"],
    // These tests wait for a refresh by asking again: the request rate is not what they try.
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  echo = startEchoServer(
    await h.upstreamCa.issue(["echo.test", "api.test", "cmd.test", "static.test"]),
    (req, r) => {
      const auth = req.headers.get("authorization");
      if (new URL(req.url).pathname === "/recall") {
        return Response.json({ stored: firstAuthorization });
      }
      if (new URL(req.url).pathname === "/slow") return slowAnswer();
      if (auth && firstAuthorization === null) firstAuthorization = auth;
      return echoResponse(req, r);
    },
  );
});

afterAll(async () => {
  await echo?.stop();
  await h?.close();
  tokenServer?.stop(true);
});

const get = (host: string, dummy: string, path = "/") =>
  h.curl(["-H", `Authorization: Bearer ${dummy}`, `https://${host}:${echo.port}${path}`]);

/** The Authorization the upstream got on its last request. */
const lastAuth = () =>
  echo.received.at(-1)?.headers.find(([k]) => k === "authorization")?.[1] ?? null;

const REALS = () => [
  ...Array.from({ length: 50 }, (_, i) => fileValue(i + 1)),
  ...Array.from({ length: Math.max(idp.issued, 1) + 1 }, (_, i) => oauthValue(i + 1)),
  ...Array.from({ length: 5 }, (_, i) => cmdValue(i + 1)),
];

function agentSawNoReal(bytes: string | Buffer): void {
  for (const r of REALS()) expect(carries(bytes, r)).toBe(false);
}

describe("a file source", () => {
  test("its value is swapped; rewritten, the next requests carry the new one and none fails; the old one echoed later is redacted", async () => {
    const first = await get("echo.test", FILE_DUMMY);
    expect(first.status).toBe(200);
    expect(lastAuth()).toBe(`Bearer ${fileValue(1)}`);
    agentSawNoReal(first.body);
    writeFileSync(filePath, `${fileValue(2)}\n`);
    // Every request succeeds while the proxy notices the new file; it is swapped in soon.
    for (let i = 0; lastAuth() !== `Bearer ${fileValue(2)}`; i++) {
      expect(i).toBeLessThan(500);
      const r = await get("echo.test", FILE_DUMMY);
      expect(r.status).toBe(200);
      agentSawNoReal(r.body);
    }
    // The store still holds the first value and gives it back: retired, still redacted.
    const recall = await get("echo.test", FILE_DUMMY, "/recall");
    expect(recall.status).toBe(200);
    expect(JSON.parse(recall.body.toString())).toEqual({ stored: "Bearer [REDACTED]" });
  }, 60_000);

  test("a kept-alive tunnel carries requests across a rewrite without dropping one", async () => {
    const t: tls.TLSSocket = await openTunnel(
      { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
      { connect: `echo.test:${echo.port}` },
    );
    try {
      const ask = () =>
        exchangeRaw(
          t,
          `GET / HTTP/1.1\r\nHost: echo.test:${echo.port}\r\nAuthorization: Bearer ${FILE_DUMMY}\r\n\r\n`,
        );
      const before = await ask();
      expect(before.toString("latin1")).toStartWith("HTTP/1.1 200");
      writeFileSync(filePath, `${fileValue(3)}\n`);
      for (let i = 0; lastAuth() !== `Bearer ${fileValue(3)}`; i++) {
        expect(i).toBeLessThan(500);
        const a = await ask();
        expect(a.toString("latin1")).toStartWith("HTTP/1.1 200");
        agentSawNoReal(a);
      }
      expect(t.destroyed).toBe(false);
    } finally {
      closeTunnel(t);
    }
  }, 60_000);
});

describe("a new value waits for the answers that began before it", () => {
  test("while an answer from before the rewrite streams, the new value is redacted (and blocked) but not swapped; once it ends, it is", async () => {
    const sources = () =>
      h.auditLines.filter(
        (l) =>
          l.includes('"evt":"source"') &&
          l.includes('"credential":"filetok"') &&
          l.includes('"result":"fetched"'),
      ).length;
    const started = slow.started;
    const streaming = get("echo.test", FILE_DUMMY, "/slow");
    for (let i = 0; slow.started === started; i++) {
      expect(i).toBeLessThan(1000);
      await Bun.sleep(10);
    }
    const fetched = sources();
    writeFileSync(filePath, `${fileValue(4)}\n`);
    for (let i = 0; sources() === fetched; i++) {
      expect(i).toBeLessThan(1000);
      await Bun.sleep(10);
    }
    // Read, not yet swapped: requests still carry the value before it …
    const r = await get("echo.test", FILE_DUMMY);
    expect(r.status).toBe(200);
    expect(lastAuth()).toBe(`Bearer ${fileValue(3)}`);
    // … and an agent that somehow holds it cannot send it.
    const leak = await h.curl([
      "-H",
      `X-Leak: ${fileValue(4)}`,
      `https://static.test:${echo.port}/`,
    ]);
    expect(leak.headers).toContain("x-slapenir-error: dlp-blocked");
    slow.release();
    const done = await streaming;
    expect([done.status, done.body.toString()]).toEqual([200, "start\nend\n"]);
    for (let i = 0; lastAuth() !== `Bearer ${fileValue(4)}`; i++) {
      expect(i).toBeLessThan(500);
      expect((await get("echo.test", FILE_DUMMY)).status).toBe(200);
    }
  }, 60_000);

  test("an answer still streaming at the switch deadline is cut, then the new value is swapped", async () => {
    const dir = (await import("node:fs")).mkdtempSync(
      join((await import("node:os")).tmpdir(), "slapenir-src-"),
    );
    const path = join(dir, "token");
    writeFileSync(path, fileValue(20));
    await using quick = await startHarness({
      credentials: [
        {
          name: "quick",
          dummy: FILE_DUMMY,
          source: { file: path, pollSeconds: 0.05 },
          hosts: ["echo.test:*"],
        },
      ],
      allow: ["echo.test:*"],
      names: ["echo.test"],
      sourceSwitchMs: 300,
      // These tests wait for a refresh by asking again: the request rate is not what they try.
      env: { SLAPENIR_RATE_LIMIT: "off" },
    });
    // An upstream this proxy trusts (its own test CA), answering as the shared one does.
    await using up = startEchoServer(await quick.upstreamCa.issue(["echo.test"]), (req, r) =>
      new URL(req.url).pathname === "/slow" ? slowAnswer() : echoResponse(req, r),
    );
    const ask = (p = "/") =>
      quick.curl(["-H", `Authorization: Bearer ${FILE_DUMMY}`, `https://echo.test:${up.port}${p}`]);
    const upAuth = () =>
      up.received.at(-1)?.headers.find(([k]) => k === "authorization")?.[1] ?? null;
    const started = slow.started;
    const streaming = ask("/slow");
    for (let i = 0; slow.started === started; i++) {
      expect(i).toBeLessThan(1000);
      await Bun.sleep(10);
    }
    writeFileSync(path, fileValue(21));
    for (let i = 0; upAuth() !== `Bearer ${fileValue(21)}`; i++) {
      expect(i).toBeLessThan(500);
      expect((await ask()).status).toBe(200);
    }
    // The answer that began on the old value does not go on: what the upstream sends next is
    // not passed, the answer is cut.
    slow.release();
    const cut = await streaming;
    // (The redactor may still hold "start" back: it could begin a value.)
    expect(cut.body.toString()).not.toContain("end");
    expect(cut.code).not.toBe(0);
  }, 60_000);
});

describe("an OAuth client_credentials source", () => {
  test("tokens that expire in 2 s are refreshed ahead of expiry: requests keep succeeding on new tokens", async () => {
    const seen = new Set<string>();
    for (let i = 0; seen.size < 3; i++) {
      expect(i).toBeLessThan(2000);
      const r = await get("api.test", OAUTH_DUMMY);
      expect(r.status).toBe(200);
      agentSawNoReal(r.body);
      seen.add(lastAuth()!);
      await Bun.sleep(20);
    }
    for (const a of seen) expect(a).toMatch(/^Bearer oauth-R3aL-issued-\d{8}$/);
    // The endpoint got the client's credentials as a form, as RFC 6749 §4.4 has them.
    expect(idp.forms[0]).toContain("grant_type=client_credentials");
    expect(idp.forms[0]).toContain("client_id=slapenir-test");
  }, 60_000);

  test("failing past its token's expiry: 503 naming the credential, others served; answering again: served", async () => {
    idp.failing = true;
    // The last token expires within 2 s; until then requests may still succeed.
    let refused: Awaited<ReturnType<typeof get>> | null = null;
    for (let i = 0; refused === null; i++) {
      expect(i).toBeLessThan(2000);
      const r = await get("api.test", OAUTH_DUMMY);
      if (r.status === 503) refused = r;
      else expect(r.status).toBe(200);
      await Bun.sleep(20);
    }
    expect(refused.headers).toContain("x-slapenir-error: credential-unavailable");
    expect(refused.body.toString()).toContain("credential oauthtok has no current value");
    agentSawNoReal(refused.body);
    agentSawNoReal(refused.headers);
    // Everything else is served meanwhile.
    const other = await get("static.test", STATIC.dummy);
    expect(other.status).toBe(200);
    expect(lastAuth()).toBe(`Bearer ${STATIC.real}`);
    const file = await get("echo.test", FILE_DUMMY);
    expect(file.status).toBe(200);
    // Audited, without a value.
    const failed = h.auditLines.filter(
      (l) => l.includes('"evt":"source"') && l.includes('"result":"failed"'),
    );
    expect(failed.length).toBeGreaterThan(0);
    expect(failed[0]).toContain("answered 503");
    expect(await h.proxy.metrics.registry.metrics()).toMatch(
      /^slapenir_credential_source_total\{credential="oauthtok",result="failed"\} [1-9]/m,
    );
    for (const l of h.auditLines) agentSawNoReal(l);
    // The endpoint answers again: the proxy's retry picks a token up.
    idp.failing = false;
    for (let i = 0; ; i++) {
      expect(i).toBeLessThan(2000);
      const r = await get("api.test", OAUTH_DUMMY);
      if (r.status === 200) break;
      expect(r.status).toBe(503);
      await Bun.sleep(50);
    }
    expect(lastAuth()).toMatch(/^Bearer oauth-R3aL-issued-\d{8}$/);
  }, 90_000);
});

describe("a command source", () => {
  test("its output is swapped, and read again on its refresh period", async () => {
    const r = await get("cmd.test", CMD_DUMMY);
    expect(r.status).toBe(200);
    expect(lastAuth()).toBe(`Bearer ${cmdValue(1)}`);
    writeFileSync(cmdPath, cmdValue(2));
    for (let i = 0; lastAuth() !== `Bearer ${cmdValue(2)}`; i++) {
      expect(i).toBeLessThan(2000);
      const again = await get("cmd.test", CMD_DUMMY);
      expect(again.status).toBe(200);
      agentSawNoReal(again.body);
      await Bun.sleep(20);
    }
  }, 60_000);

  test("an agent sending a retired or current real value is refused by DLP", async () => {
    for (const v of [fileValue(1), cmdValue(1)]) {
      const r = await h.curl(["-H", `X-Leak: ${v}`, `https://static.test:${echo.port}/`]);
      expect(r.status).toBe(403);
      expect(r.headers).toContain("x-slapenir-error: dlp-blocked");
    }
  });
});
