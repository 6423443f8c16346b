// One configuration file, reloaded live: the proxy watches it, and an edit puts the new
// allowlist and credentials in force for the next request — on a tunnel that stays open — with
// one audit line naming what changed (names, never values). A bad edit is refused with its
// error and changes nothing; a setting read only at start is named as waiting for a restart.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import type tls from "node:tls";
import { connect as tlsConnect } from "node:tls";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, exchangeRaw, openTunnel } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-cfg-0000000000000000";
const REAL = "sk-real-cfg-5e1f0a9b7c3d2e48";

let h: Harness;
let up: EchoServer;
let tunnel: tls.TLSSocket;
let file: string;

const yaml = (extra: string, listen = "127.0.0.1:0") =>
  `listen: ${listen}\nadminListen: 127.0.0.1:0\nallow: ["localhost:*"]\nlogLevel: info\n${extra}`;
const credential = `credentials:
  - name: model-api
    dummy: ${DUMMY}
    real: ${REAL}
    hosts: ["localhost:*"]
    in: [header:x-api-key]
`;

/** Write the file and wait for the reload (or refusal) it causes: the `n`th such audit line. */
async function edit(text: string, evt: "reload" | "reload-failed", n: number) {
  writeFileSync(file, text);
  const lines = await h.auditWhere((l) => l.evt === evt && (evt !== "reload" || "changed" in l), n);
  return lines[n - 1]!;
}

async function ask(path: string): Promise<string> {
  const req = `GET ${path} HTTP/1.1\r\nHost: localhost:${up.port}\r\nx-api-key: ${DUMMY}\r\n\r\n`;
  return (await exchangeRaw(tunnel, req)).toString("latin1");
}

beforeAll(async () => {
  // The listeners come from the file (the harness's variables would override it).
  h = await startHarness({
    allow: [],
    configYaml: yaml(""),
    watchConfig: true,
    env: { SLAPENIR_LISTEN: "", SLAPENIR_ADMIN_LISTEN: "" },
  });
  file = join(h.dir, "slapenir.yaml");
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
  tunnel = await openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
    { connect: `localhost:${up.port}` },
  );
});

afterAll(async () => {
  closeTunnel(tunnel);
  await up?.stop();
  await h?.close();
});

test("the allowlist of the file is in force; without a credential the dummy travels as is", async () => {
  expect(await ask("/before")).toStartWith("HTTP/1.1 200");
  expect(up.received.at(-1)!.headers).toContainEqual(["x-api-key", DUMMY]);
});

test("a credential added to the file is swapped on the open tunnel, and the audit names it", async () => {
  const line = await edit(yaml(credential), "reload", 1);
  expect(line).toMatchObject({ changed: "-", credentialsAdded: "model-api", restartNeeded: "-" });
  await h.settled();
  expect(JSON.stringify(h.auditLines)).not.toContain(REAL);
  expect(await ask("/after")).toStartWith("HTTP/1.1 200");
  expect(up.received.at(-1)!.headers).toContainEqual(["x-api-key", REAL]);
});

test("a bad edit is refused with its field named, and the running configuration stays", async () => {
  const line = await edit(`${yaml(credential)}rateLimt: 5/s\n`, "reload-failed", 1);
  expect(line.error).toBe(`${file}: unknown field 'rateLimt'`);
  const bad = `${yaml(credential)}limits:\n  maxHeaderBytes: 10\n`;
  expect((await edit(bad, "reload-failed", 2)).error).toBe(
    `${file}: limits.maxHeaderBytes: must be an integer from 1024 to 1048576`,
  );
  expect(await ask("/still")).toStartWith("HTTP/1.1 200");
  expect(up.received.at(-1)!.headers).toContainEqual(["x-api-key", REAL]);
});

test("the listener moves to another address; the tunnel opened on the old one goes on", async () => {
  const free = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
  const port = free.port;
  free.stop(true);
  const before = h.proxy.port;
  const line = await edit(yaml(credential, `127.0.0.1:${port}`), "reload", 2);
  expect(line).toMatchObject({ changed: "listen", restartNeeded: "-" });
  expect(h.proxy.port).toBe(port);
  // New connections: on the new address, and no longer on the old one.
  expect((await h.curl([`https://localhost:${up.port}/moved`])).status).toBe(200);
  const old = await Bun.connect({ hostname: "127.0.0.1", port: before, socket: { data() {} } })
    .then((s) => {
      s.end();
      return "accepted";
    })
    .catch((e: NodeJS.ErrnoException) => e.code);
  expect(old).toBe("ECONNREFUSED");
  expect(await ask("/same-tunnel")).toStartWith("HTTP/1.1 200");
  expect(up.received.at(-1)!.headers).toContainEqual(["x-api-key", REAL]);
});

test("limits apply to what begins after the reload; what lives at start is named for a restart", async () => {
  // A head of 6 KiB passes the default cap (16 KiB)…
  const big = ["-H", `x-filler: ${"f".repeat(6_000)}`, `https://localhost:${up.port}/big`];
  expect((await h.curl(big)).status).toBe(200);
  const listen = `127.0.0.1:${h.proxy.port}`;
  const next = `${yaml(credential, listen)}memoryShedPercent: 90\nlimits:\n  maxHeaderBytes: 4096\n  maxConnections: 100\n`;
  const line = await edit(next, "reload", 3);
  expect(line).toMatchObject({
    changed: "limits.maxHeaderBytes,limits.maxConnections",
    restartNeeded: "memoryShedPercent",
    credentialsChanged: "-",
  });
  // …and after the reload a new connection's is refused by the new one.
  expect((await h.curl(big)).status).toBe(431);
  // An allowlist without the upstream: the open tunnel's next request meets it.
  await edit(next.replace('"localhost:*"', '"example.com"'), "reload", 4);
  expect(await ask("/now-denied")).toStartWith("HTTP/1.1 403");
});

test("the admin action reloads too, and names what waits for a restart", async () => {
  const res = await h.adminPost("/reload");
  expect(res.status).toBe(200);
  expect(await res.json()).toMatchObject({
    reloaded: true,
    applied: [],
    restart: ["memoryShedPercent"],
    credentials: { added: [], removed: [], changed: [] },
  });
});

test("a new name for the proxy: its certificate is issued again for new connections", async () => {
  const listen = `127.0.0.1:${h.proxy.port}`;
  const line = await edit(
    `${yaml(credential, listen)}serverNames: [proxy.reload.test]\n`,
    "reload",
    6,
  );
  expect(line).toMatchObject({
    changed: expect.stringContaining("serverNames"),
    restartNeeded: "-",
  });
  const agent = h.agents["agent-a"]!;
  const san = await new Promise<string>((resolve, reject) => {
    const s = tlsConnect(
      {
        host: "127.0.0.1",
        port: h.proxy.port,
        servername: "proxy.reload.test",
        ca: readFileSync(h.caBundlePath),
        cert: readFileSync(agent.certPath),
        key: readFileSync(agent.keyPath),
      },
      () => {
        resolve(s.getPeerCertificate().subjectaltname ?? "");
        s.end();
      },
    );
    s.on("error", reject);
  });
  expect(san).toContain("DNS:proxy.reload.test");
});
