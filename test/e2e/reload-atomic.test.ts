// A reload is all or nothing, and reloads do not undo each other (found by an attacker's
// review): a configuration refused after its sources were read leaves the running secrets —
// and their sources — in force and working; a policy reload (what `agent revoke` asks for)
// that comes while a slower full reload reads a credential source is applied after it, not
// overwritten by the policy that reload read before.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { existsSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY_A = "dummy-atomic-a-000000000001";
const VALUE_A = "real-atomic-a-first-0000001";
const VALUE_A2 = "real-atomic-a-second-000002";
const DUMMY_C = "dummy-atomic-c-000000000003";

let h: Harness;
let up: EchoServer;
let file: string;
let source: string;

const base = () => `allow: ["localhost:*"]
credentials:
  - name: a
    dummy: ${DUMMY_A}
    source: { file: ${source}, pollSeconds: 0.05 }
    hosts: ["localhost:*"]
    in: [header:x-api-key]
`;

/** What the upstream received for agent `agent`'s request carrying dummy a (status 0: refused). */
async function send(agent = "agent-a"): Promise<{ status: number; key?: string }> {
  const r = await h.curl(["-H", `x-api-key: ${DUMMY_A}`, `https://localhost:${up.port}/k`], agent);
  if (r.status !== 200) return { status: r.status };
  return { status: 200, key: up.received.at(-1)!.headers.find(([k]) => k === "x-api-key")?.[1] };
}

beforeAll(async () => {
  h = await startHarness({ agents: ["agent-a", "agent-b"], allow: [], configYaml: "{}\n" });
  file = join(h.dir, "slapenir.yaml");
  source = join(h.dir, "a.txt");
  writeFileSync(source, VALUE_A);
  writeFileSync(file, base());
  expect((await h.adminPost("/reload")).status).toBe(200);
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

test("a configuration refused after its sources were read changes nothing; the source goes on", async () => {
  expect(await send()).toEqual({ status: 200, key: VALUE_A });
  // Another credential whose real value is the one source a gives: refused.
  writeFileSync(
    file,
    `${base()}  - { name: b, dummy: dummy-atomic-b-000000000002, real: ${VALUE_A}, hosts: [other.example] }\nlogLevel: debug\n`,
  );
  const refused = await h.adminPost("/reload");
  expect(refused.status).toBe(400);
  expect(((await refused.json()) as { error: string }).error).toContain("same real value");
  expect(await send()).toEqual({ status: 200, key: VALUE_A });
  // The running source still reads its file: a new value is swapped.
  writeFileSync(source, VALUE_A2);
  while ((await send()).key !== VALUE_A2) await Bun.sleep(20);
  expect((await fetch(`http://127.0.0.1:${h.proxy.adminPort}/api/health`)).status).toBe(200);
});

test("a policy reload during a slower full reload is not undone by it", async () => {
  writeFileSync(file, base());
  expect((await h.adminPost("/reload")).status).toBe(200);
  expect((await send("agent-b")).status).toBe(200);
  // A full reload whose new credential's source takes a while to answer…
  const mark = join(h.dir, "reading");
  const slow = `${base()}  - name: c
    dummy: ${DUMMY_C}
    source: { command: [sh, -c, "touch ${mark}; sleep 1; echo real-atomic-c-00000003"] }
    hosts: [other.example]
`;
  writeFileSync(file, slow);
  const full = h.adminPost("/reload");
  while (!existsSync(mark)) await Bun.sleep(10);
  // …and, while it reads that source, agent-b denied and the policy reloaded.
  writeFileSync(file, `${slow}denyAgents: [agent-b]\n`);
  const policy = h.adminPost("/policy/reload");
  expect((await full).status).toBe(200);
  expect((await policy).status).toBe(200);
  expect((await send("agent-b")).status).not.toBe(200);
  expect((await send("agent-a")).status).toBe(200);
});
