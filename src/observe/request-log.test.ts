import { expect, test } from "bun:test";
import { Writable } from "node:stream";
import { compiledSecrets } from "../../test/support/request-fixtures.ts";
import { refuse } from "../policy/verdict.ts";
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

test("a path that carries a real value percent-encoded is withheld whole", () => {
  const encoded = `${REAL.slice(0, -2)}%${REAL.charCodeAt(REAL.length - 2).toString(16)}%${REAL.charCodeAt(REAL.length - 1).toString(16)}`;
  expect(logged({ target: `/x/${encoded}` }).path).toBe("[REDACTED]");
});

test("a real value across the 256-character clip is redacted before the path is clipped", () => {
  const l = logged({ target: `/${"a".repeat(217)}${REAL}/more` });
  expect(String(l.path)).toStartWith(`/${"a".repeat(217)}[REDACTED]`);
});
