import { expect, test } from "bun:test";
import { compiledSecrets } from "../../test/support/request-fixtures.ts";
import { redactResponseHead } from "./inbound-head.ts";

const REAL = "sk-real-R3aLv4lu3-000002";
const secrets = compiledSecrets([
  { name: "api", dummy: "sk-dummy-0000000000000000", real: REAL, hosts: ["api.example.com"] },
]);
const plain = { headRequest: false, decoded: false };

test("real values are redacted from values, Set-Cookie and the reason phrase", () => {
  const h = redactResponseHead(
    `Denied ${REAL}`,
    [
      ["Content-Type", "application/json"],
      ["X-Echo", `key=${REAL}`],
      ["Set-Cookie", `s=${Buffer.from(REAL).toString("base64")}; Path=/`],
      ["Set-Cookie", "plain=1"],
    ],
    secrets,
    plain,
  );
  expect(h).toEqual({
    reason: "Denied [REDACTED]",
    headers: [
      ["Content-Type", "application/json"],
      ["X-Echo", "key=[REDACTED]"],
      // Redacted in its own encoding: base64 of "[REDACTED]".
      [
        "Set-Cookie",
        `s=${Buffer.from("[REDACTED]").toString("base64").replace(/=+$/, "")}; Path=/`,
      ],
      ["Set-Cookie", "plain=1"],
    ],
    redactions: 3,
  });
});

test("a field named after a real value is dropped, whatever its case", () => {
  const h = redactResponseHead(
    "OK",
    [
      [REAL, "1"],
      ["X-Ok", "2"],
    ],
    secrets,
    plain,
  );
  expect(h.headers).toEqual([["X-Ok", "2"]]);
  expect(h.redactions).toBe(1);
});

test("framing and hop-by-hop fields go; HEAD keeps its length; decoded bodies lose their coding", () => {
  const fields: [string, string][] = [
    ["Content-Length", "10"],
    ["Content-Encoding", "gzip"],
    ["Connection", "close, X-Hop"],
    ["X-Hop", "1"],
    ["Vary", "Accept-Encoding"],
  ];
  expect(redactResponseHead("OK", fields, secrets, plain).headers).toEqual([
    ["Content-Encoding", "gzip"],
    ["Vary", "Accept-Encoding"],
  ]);
  expect(
    redactResponseHead("OK", fields, secrets, { headRequest: true, decoded: false }).headers,
  ).toEqual([
    ["Content-Length", "10"],
    ["Content-Encoding", "gzip"],
    ["Vary", "Accept-Encoding"],
  ]);
  expect(
    redactResponseHead("OK", fields, secrets, { headRequest: false, decoded: true }).headers,
  ).toEqual([["Vary", "Accept-Encoding"]]);
});

test("an upstream cannot pass its answer off as the proxy's refusal", () => {
  const h = redactResponseHead(
    "Forbidden",
    [
      ["X-Slapenir-Error", "dlp-blocked"],
      ["content-type", "text/plain"],
    ],
    secrets,
    plain,
  );
  expect(h.headers).toEqual([["content-type", "text/plain"]]);
});
