// One configuration file, reloaded live: the proxy watches it, and an edit puts the new
// allowlist and credentials in force for the next request — on a tunnel that stays open — with
// one audit line naming what changed (names, never values). A bad edit is refused with its
// error and changes nothing; a setting read only at start is named as waiting for a restart.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFileSync } from "node:fs";
import { join } from "node:path";
import type tls from "node:tls";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, exchangeRaw, openTunnel } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-cfg-0000000000000000";
const REAL = "sk-real-cfg-5e1f0a9b7c3d2e48";

let h: Harness;
let up: EchoServer;
let tunnel: tls.TLSSocket;
let file: string;

const yaml = (extra: string) => `allow: ["localhost:*"]\nlogLevel: info\n${extra}`;
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
  h = await startHarness({ allow: [], configYaml: yaml(""), watchConfig: true });
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

test("settings read only at start are named as waiting for a restart; the rest applies", async () => {
  // A head of 6 KiB passes the default cap (16 KiB)…
  const big = ["-H", `x-filler: ${"f".repeat(6_000)}`, `https://localhost:${up.port}/big`];
  expect((await h.curl(big)).status).toBe(200);
  const next = `allow: ["localhost:*", "example.com"]\nlogLevel: info\nconsole:\n  tokenFile: other-token\nlimits:\n  maxHeaderBytes: 4096\n  maxConnections: 100\n${credential}`;
  const line = await edit(next, "reload", 2);
  expect(line).toMatchObject({
    changed: "allow,limits.maxHeaderBytes",
    restartNeeded: "console.tokenFile,limits.maxConnections",
    credentialsChanged: "-",
  });
  // …and after the reload a new connection's is refused by the new one.
  expect((await h.curl(big)).status).toBe(431);
  await edit(next.replace('"localhost:*", ', ""), "reload", 3);
  // The open tunnel is still there, and its next request meets the new allowlist.
  const denied = await ask("/now-denied");
  expect(denied).toStartWith("HTTP/1.1 403");
});

test("the admin action reloads too, and names what waits for a restart", async () => {
  const res = await h.adminPost("/reload");
  expect(res.status).toBe(200);
  expect(await res.json()).toMatchObject({
    reloaded: true,
    applied: [],
    restart: ["console.tokenFile", "limits.maxConnections"],
    credentials: { added: [], removed: [], changed: [] },
  });
});
