import { describe, expect, test } from "bun:test";
import { compiledSecrets, parsedHead } from "../../test/support/request-fixtures.ts";
import type { Destination } from "../policy/host-agreement.ts";
import { planOutboundHead } from "./outbound-head.ts";

const DUMMY = "sk-dummy-0000000000000000";
const REAL = "sk-real-R3aLv4lu3-000001";
const KEYED_DUMMY = "key-dummy-000000000001";
const KEYED_REAL = "key-real-Zq81Lm0x9Wd2";
const secrets = compiledSecrets([
  { name: "api", dummy: DUMMY, real: REAL, hosts: ["api.example.com"] },
  {
    name: "keyed",
    dummy: KEYED_DUMMY,
    real: KEYED_REAL,
    hosts: ["api.example.com"],
    in: ["header:x-api-key", "query:key"],
  },
  {
    name: "hidden",
    dummy: "hidden-dummy-000000",
    real: "hidden-real-9999999",
    hosts: ["api.example.com"],
    inUrl: "deny",
  },
  {
    name: "dns",
    dummy: "dns-dummy-00000001",
    real: "dnsreal7x9k2m4q8w1",
    hosts: ["other.example"],
  },
]);
const head = parsedHead;

const API: Destination = {
  target: { host: "api.example.com", kind: "dns", port: 443 },
  scheme: "https",
};
const plan = secrets.plan("agent-a", "api.example.com", 443);
const planned = (raw: string, to = API, p = plan) => planOutboundHead(head(raw), to, secrets, p);
const b64 = (s: string) => Buffer.from(s).toString("base64");

describe("swaps, only where the credential is presented", () => {
  test("a dummy in a header value becomes the real value", () => {
    const v = planned(
      `GET /v1 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer ${DUMMY}\r\n\r\n`,
    );
    expect(v).toMatchObject({
      ok: true,
      value: {
        target: "/v1",
        headers: [
          ["Host", "api.example.com"],
          ["Authorization", `Bearer ${REAL}`],
          ["accept-encoding", "identity"],
        ],
        swaps: 1,
      },
    });
    expect(v.ok && [...v.value.swapped]).toEqual(["api"]);
  });

  test("inside Basic credentials", () => {
    const v = planned(
      `GET / HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Basic ${b64(`x:${DUMMY}`)}\r\n\r\n`,
    );
    expect(v.ok && v.value.headers[1]).toEqual(["Authorization", `Basic ${b64(`x:${REAL}`)}`]);
  });

  test("in a query parameter it names, percent-encoded; nowhere else in the target", () => {
    const v = planned(
      `GET /q/${KEYED_DUMMY}?key=${KEYED_DUMMY}&note=${KEYED_DUMMY}&k=${DUMMY} HTTP/1.1\r\nHost: api.example.com\r\n\r\n`,
    );
    expect(v).toMatchObject({
      ok: true,
      value: { target: `/q/${KEYED_DUMMY}?key=${KEYED_REAL}&note=${KEYED_DUMMY}&k=${DUMMY}` },
    });
    expect(v.ok && [...v.value.swapped]).toEqual(["keyed"]);
  });

  test("in a header it names; in any other header the dummy goes out as sent", () => {
    const v = planned(
      `POST /gists HTTP/1.1\r\nHost: api.example.com\r\nX-Api-Key: ${KEYED_DUMMY}\r\nAuthorization: token ${KEYED_DUMMY}\r\nX-Note: ${DUMMY}\r\nX-Api-Key-2: ${KEYED_DUMMY}\r\n\r\n`,
    );
    expect(v.ok && v.value.headers).toEqual([
      ["Host", "api.example.com"],
      ["X-Api-Key", KEYED_REAL],
      // Authorization is api's surface, not keyed's: keyed's dummy stays.
      ["Authorization", `token ${KEYED_DUMMY}`],
      ["X-Note", DUMMY],
      ["X-Api-Key-2", KEYED_DUMMY],
      ["accept-encoding", "identity"],
    ]);
    expect(v.ok && v.value.swaps).toBe(1);
  });

  test("a dummy in the target, by default, goes out as sent", () => {
    const v = planned(
      `GET /q?key=${DUMMY}&access_token=${DUMMY} HTTP/1.1\r\nHost: api.example.com\r\n\r\n`,
    );
    expect(v).toMatchObject({
      ok: true,
      value: { target: `/q?key=${DUMMY}&access_token=${DUMMY}`, swaps: 0 },
    });
  });

  test("nowhere when the plan has nothing to swap (plain http://, an unbound host)", () => {
    const v = planned(
      `GET http://api.example.com/ HTTP/1.1\r\nHost: api.example.com\r\nX-Key: ${DUMMY}\r\n\r\n`,
      { ...API, scheme: "http" },
      secrets.noSwapPlan(),
    );
    expect(v).toMatchObject({ ok: true, value: { target: "/", swaps: 0 } });
    expect(v.ok && v.value.headers).toContainEqual(["X-Key", DUMMY]);
  });
});

describe("DLP refuses a real value anywhere in the head", () => {
  const cases: [string, string][] = [
    ["in a header value", `GET / HTTP/1.1\r\nHost: api.example.com\r\nX-K: ${REAL}\r\n\r\n`],
    [
      "base64 in a header value",
      `GET / HTTP/1.1\r\nHost: api.example.com\r\nX-K: ${b64(REAL)}\r\n\r\n`,
    ],
    ["as a header name", `GET / HTTP/1.1\r\nHost: api.example.com\r\n${REAL}: 1\r\n\r\n`],
    ["in the target", `GET /?k=${REAL} HTTP/1.1\r\nHost: api.example.com\r\n\r\n`],
    [
      "percent-encoded in the target",
      `GET /?k=${encodeURIComponent(b64(REAL))} HTTP/1.1\r\nHost: api.example.com\r\n\r\n`,
    ],
  ];
  for (const [name, raw] of cases) {
    test(name, () => {
      expect(planned(raw)).toEqual({
        ok: false,
        code: "dlp-blocked",
        reason: "real credential in request",
      });
    });
  }

  test("as the method", () => {
    expect(planned(`${REAL} / HTTP/1.1\r\nHost: api.example.com\r\n\r\n`).ok).toBe(false);
  });

  test("as the destination's name, case-folded (DNS ignores case)", () => {
    const host = `${REAL.toLowerCase()}.example.com`;
    const to: Destination = { target: { host, kind: "dns", port: 443 }, scheme: "https" };
    expect(planned(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`, to).ok).toBe(false);
  });

  test("as the destination's name", () => {
    const host = "dnsreal7x9k2m4q8w1.example.com";
    const to: Destination = { target: { host, kind: "dns", port: 443 }, scheme: "https" };
    expect(planned(`GET / HTTP/1.1\r\nHost: ${host}\r\n\r\n`, to).ok).toBe(false);
  });
});

test("a credential denied in URLs is refused there, even as its dummy", () => {
  expect(planned("GET /?t=hidden-dummy-000000 HTTP/1.1\r\nHost: api.example.com\r\n\r\n")).toEqual({
    ok: false,
    code: "policy-denied",
    reason: "credential not allowed in URLs",
  });
});

test("fields the proxy owns do not cross; Accept-Encoding is narrowed; Host added for HTTP/1.0", () => {
  const v = planned(
    "POST /u HTTP/1.0\r\nConnection: keep-alive, X-Hop\r\nX-Hop: 1\r\nKeep-Alive: 5\r\n" +
      "Content-Length: 0\r\nExpect: 100-continue\r\nAccept-Encoding: gzip, sdch\r\nX-Keep: 2\r\n\r\n",
  );
  expect(v.ok && v.value.headers).toEqual([
    ["host", "api.example.com"],
    ["X-Keep", "2"],
    ["accept-encoding", "gzip"],
  ]);
});
