// The proxy's /metrics as Prometheus reads it (issue 18, item 6), checked by Prometheus's own
// `promtool check metrics` (Debian's prometheus package) after the proxy carried traffic of
// every kind the metrics name: a swap, a redaction, a denial, a WebSocket. One type per name,
// Prometheus naming, and the labels an operator filters by: why a request was refused, which
// credential was swapped.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { missingTools } from "../containers/tool-paths.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "met-dummy-0000000000000001";
const REAL = "met-R3aL-token-00000000001";

let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness({
    credentials: [{ name: "metered", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] }],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

test("after a swap, a redaction and a denial, promtool finds nothing wrong; the labels say which and why", async () => {
  const ok = await h.curl([
    "-H",
    `Authorization: Bearer ${DUMMY}`,
    `https://localhost:${up.port}/echo`,
  ]);
  expect(ok.status).toBe(200);
  // The echo showed the agent the real token it was sent: redacted.
  expect(ok.body.toString()).toContain("Bearer [REDACTED]");
  const denied = await h.curl([`https://not-allowed.test:${up.port}/`]);
  expect(denied.stderr).toContain("CONNECT tunnel failed, response 403");
  await h.auditWhere((l) => l.evt === "request" && l.decision === "deny");
  const text = await (await fetch(`http://127.0.0.1:${h.proxy.adminPort}/metrics`)).text();

  expect(text).toContain('slapenir_swaps_total{agent="agent-a",credential="metered"} 1');
  expect(text).toMatch(/slapenir_redactions_total\{agent="agent-a"\} [1-9]/);
  expect(text).toMatch(
    /slapenir_requests_total\{agent="agent-a",decision="deny",status="4xx",reason="policy-denied"\} 1/,
  );
  // One type per name: no family declared twice.
  const types = [...text.matchAll(/^# TYPE (\S+) (\S+)$/gm)].map((m) => m[1]!);
  expect(new Set(types).size).toBe(types.length);
  expect(text).not.toContain(REAL);

  if (missingTools(["promtool"]).length > 0) return;
  const p = Bun.spawn(["promtool", "check", "metrics"], {
    stdin: "pipe",
    stdout: "pipe",
    stderr: "pipe",
  });
  p.stdin.write(text);
  p.stdin.end();
  const [out, err, code] = await Promise.all([
    new Response(p.stdout).text(),
    new Response(p.stderr).text(),
    p.exited,
  ]);
  expect({ code, problems: `${out}${err}`.trim() }).toEqual({ code: 0, problems: "" });
});
