// Request rules (issue 15, item 2): allow rules and credential bindings narrowed to methods and
// paths, matched on one canonical path. Through the real proxy with curl: a request outside
// every rule is denied naming the rule it missed; a path that could be read two ways (dot
// segments, encoded slashes and dots, `//`, `;`) is refused with 400 rather than guessed at; a
// credential bound to one endpoint is swapped there and nowhere else on the same host.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { proxyErrorCode } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-rules-00000000000000000001";
const REAL = "sk-R3aL-rules-9f8e7d6c5b4a392817";

let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness({
    // SLAPENIR_ALLOW is a comma list: methods are separated by `|` there.
    allow: ["GET|HEAD localhost:*/repos/acme/**", "POST localhost:*/v1/chat/completions"],
    credentials: [
      {
        name: "llm",
        dummy: DUMMY,
        real: REAL,
        hosts: ["POST localhost:*/v1/chat/completions"],
      },
    ],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

const url = (path: string) => `https://localhost:${up.port}${path}`;
const errorOf = proxyErrorCode;

describe("allow rules with methods and paths", () => {
  test("inside a rule: served; outside: 403 naming the rule missed, never forwarded", async () => {
    expect((await h.curl([url("/repos/acme/widget/issues?page=2")])).status).toBe(200);
    expect((await h.curl(["-I", url("/repos/%61cme/widget")])).status).toBe(200);
    const seen = up.received.length;
    for (const args of [
      [url("/repos/other/x")],
      ["-X", "DELETE", url("/repos/acme/widget")],
      [url("/v1/chat/completions")],
    ]) {
      const r = await h.curl(args);
      expect(r.status).toBe(403);
      expect(errorOf(r.headers)).toBe("policy-denied");
    }
    expect(up.received.length).toBe(seen);
    const [line] = await h.auditWhere((l) => l.method === "DELETE");
    expect(line!.reason).toBe(
      `DELETE https://localhost:${up.port}/repos/acme/widget is outside allow[0] GET,HEAD localhost:*/repos/acme/**`,
    );
  });

  test("a path that could be read two ways is refused with 400, not matched", async () => {
    const seen = up.received.length;
    for (const path of [
      "/repos/acme/../../orgs/evil",
      "/repos/acme/%2e%2e/%2e%2e/orgs/evil",
      "/repos/acme%2F..%2F..%2Forgs",
      "/repos/acme//x",
      "/repos/acme/..;/..;/orgs",
      "/repos/acme/%5c..%5corgs",
      "/repos/acme/%252e%252e/%252e%252e/orgs/evil",
      "/repos/acme/%25%32%65%25%32%65/%25%32%65%25%32%65/orgs/evil",
      "/repos/acme/%c0%ae%c0%ae/%c0%ae%c0%ae/orgs",
    ]) {
      const r = await h.curl(["--path-as-is", url(path)]);
      expect([path, r.status, errorOf(r.headers)]).toEqual([path, 400, "bad-request"]);
    }
    expect(up.received.length).toBe(seen);
  });
});

describe("a credential bound to an endpoint", () => {
  test("is swapped on that endpoint, and travels as the dummy elsewhere on the host", async () => {
    const auth = ["-H", `Authorization: Bearer ${DUMMY}`];
    const before = up.received.length;
    expect((await h.curl([...auth, "-d", "{}", url("/v1/chat/completions")])).status).toBe(200);
    expect((await h.curl([...auth, url("/repos/acme/widget")])).status).toBe(200);
    const [chat, repo] = up.received.slice(before);
    expect(chat!.headers).toContainEqual(["authorization", `Bearer ${REAL}`]);
    expect(repo!.headers).toContainEqual(["authorization", `Bearer ${DUMMY}`]);
  });
});
