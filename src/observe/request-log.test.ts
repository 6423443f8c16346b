import { describe, expect, test } from "bun:test";
import { Writable } from "node:stream";
import { compiledSecrets } from "../../test/support/request-fixtures.ts";
import { type Refused, refuse } from "../policy/verdict.ts";
import { AuditLog } from "./audit.ts";
import { ProxyMetrics } from "./metrics.ts";
import { type RequestFacts, RequestLog } from "./request-log.ts";
import { Trace } from "./trace.ts";

const REAL = "sk-live-Q7f3Zp9Lx2Vb8Nc4Rm6Tk1Wy5Hd0Js3";
const secrets = compiledSecrets([
  { name: "api", dummy: "sk-dummy-000000000000000000000", real: REAL, hosts: ["api.example.com"] },
]);

function logged(facts: Partial<RequestFacts>, reason = "real credential in request") {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(c, _e, cb) {
      for (const l of String(c).split("\n")) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  const log = new RequestLog(new AuditLog("info", sink), new ProxyMetrics(), () => secrets);
  const trace = new Trace();
  trace.record("outbound", refuse("policy-denied", reason));
  log.write(
    {
      conn: 1,
      agent: "a",
      serial: "1f",
      method: "GET",
      scheme: "https",
      host: "-",
      port: 0,
      target: "/",
      ...facts,
    },
    trace,
    403,
    0,
  );
  const line = JSON.stringify(lines[0]);
  expect(line).not.toContain(REAL);
  expect(line.toLowerCase()).not.toContain(REAL.toLowerCase());
  return lines[0]!;
}

test("a real value is kept out of every agent-chosen field, in any case", () => {
  const folded = REAL.toLowerCase();
  const l = logged(
    { method: REAL, host: `${folded}.evil.test`, target: `/x/${REAL}?q=1` },
    `no allow rule matches https://${folded}.evil.test:443`,
  );
  expect(l).toMatchObject({
    method: "[REDACTED]",
    host: "[REDACTED].evil.test",
    path: "/x/[REDACTED]",
    reason: "no allow rule matches https://[REDACTED].evil.test:443",
  });
});

test("a path that carries a real value partly percent-encoded has it redacted in place", () => {
  const encoded = `${REAL.slice(0, -2)}%${REAL.charCodeAt(REAL.length - 2).toString(16)}%${REAL.charCodeAt(REAL.length - 1).toString(16)}`;
  expect(logged({ target: `/x/${encoded}/y` }).path).toBe("/x/[REDACTED]/y");
});

test("a real value across the 256-character clip is redacted before the path is clipped", () => {
  const l = logged({ target: `/${"a".repeat(217)}${REAL}/more` });
  expect(String(l.path)).toStartWith(`/${"a".repeat(217)}[REDACTED]`);
});

describe("refusals an agent can repeat at full speed are digested", () => {
  function log() {
    const lines: Record<string, unknown>[] = [];
    const sink = new Writable({
      write(c, _e, cb) {
        for (const l of String(c).split("\n")) if (l) lines.push(JSON.parse(l));
        cb();
      },
    });
    let now = 0;
    const metrics = new ProxyMetrics();
    const rl = new RequestLog(new AuditLog("info", sink), metrics, () => secrets, {
      digest: { windowMs: 10_000, now: () => now },
    });
    const write = (method: string, host: string, v: Refused | null) => {
      const trace = new Trace();
      if (v) trace.record("connect", v);
      const facts: RequestFacts = {
        conn: 1,
        agent: "a",
        serial: "1f",
        method,
        scheme: "https",
        host,
        port: 443,
        target: method === "CONNECT" ? null : "/",
      };
      rl.write(facts, trace, v ? 403 : 200, 0);
    };
    return { lines, write, metrics, rl, advance: (ms: number) => (now += ms) };
  }

  test("CONNECT refusals: one line per host and kind per window; requests each get one", async () => {
    const { lines, write, metrics, rl, advance } = log();
    const denied = refuse("policy-denied", "no allow rule matches");
    for (let i = 0; i < 500; i++) write("CONNECT", "denied.example", denied);
    write("CONNECT", "other.example", denied);
    for (let i = 0; i < 3; i++) write("GET", "denied.example", denied);
    for (let i = 0; i < 2; i++) write("CONNECT", "ok.example", null);
    expect(lines.map((l) => `${l.method} ${l.host} ${l.repeated ?? ""}`)).toEqual([
      "CONNECT denied.example ",
      "CONNECT other.example ",
      "GET denied.example ",
      "GET denied.example ",
      "GET denied.example ",
      "CONNECT ok.example ",
      "CONNECT ok.example ",
    ]);
    advance(10_000);
    rl.close();
    expect(lines.slice(7)).toMatchObject([{ host: "denied.example", repeated: 499 }]);
    // Every one is counted.
    expect(await metrics.registry.getSingleMetricAsString("slapenir_requests_total")).toContain(
      'slapenir_requests_total{agent="a",decision="deny",status="4xx",reason="policy-denied"} 504',
    );
  });

  test("anything refused for its rate: one line per agent and rate per window, whatever the host", () => {
    const { lines, write, rl } = log();
    const over = refuse("rate-limited", "rate limit exceeded");
    const mints = refuse("rate-limited", "certificate mint rate exceeded (new hosts)");
    for (let i = 0; i < 100; i++) write(i % 2 ? "GET" : "CONNECT", `h${i}.example`, over);
    for (let i = 0; i < 5; i++) write("CONNECT", `m${i}.example`, mints);
    expect(lines.map((l) => l.reason)).toEqual([over.reason, mints.reason]);
    rl.close();
    expect(lines.slice(2)).toMatchObject([
      { host: "h99.example", repeated: 99 },
      { host: "m4.example", repeated: 4 },
    ]);
  });
});
