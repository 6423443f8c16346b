// The outbound stage's whole-body path without sockets or worker pool: a small body, or one an
// earlier stage holds, is scanned on the main thread — DLP first, then the swap — and swaps are
// counted only for a request that may leave.

import { describe, expect, test } from "bun:test";
import zlib from "node:zlib";
import { compiledSecrets, parsedHead } from "../../../test/support/request-fixtures.ts";
import { HeldBody } from "../../body/held-body.ts";
import { InlineScanner } from "../../body/inline-scanner.ts";
import type { BodyScanner } from "../../body/scan-pipelines.ts";
import { ByteBudget } from "../../guard/byte-budget.ts";
import { Trace } from "../../observe/trace.ts";
import { canonicalPath } from "../../policy/request-rule.ts";
import type { Exchange, Outbound } from "../exchange.ts";
import { outbound } from "./outbound.ts";

const DUMMY = "sk-dummy-00000000000000000001";
const REAL = "sk-real-R3aLR3aLR3aL00000001";
const PLAIN_DUMMY = "gh-dummy-000000000000000002";
const PLAIN_REAL = "gh-real-R3aLR3aLR3aL0000002";
const secrets = compiledSecrets([
  {
    name: "api",
    dummy: DUMMY,
    real: REAL,
    hosts: ["api.example.com", "vault.example.com", "token.example.com"],
    in: ["header:authorization", "body"],
  },
  // Presented in Authorization only (the default): its dummy in a body is content.
  { name: "plain", dummy: PLAIN_DUMMY, real: PLAIN_REAL, hosts: ["api.example.com"] },
  // Required, presented in a JSON member of one endpoint of a host where "api" has a body
  // surface.
  {
    name: "field",
    dummy: "field-dummy-00000000001",
    real: "field-real-R3aL00000001",
    hosts: ["POST token.example.com/token"],
    in: ["json:/t"],
    require: true,
  },
  {
    name: "vault",
    dummy: "vault-dummy-000000000001",
    real: "vault-real-R3aL000000001",
    hosts: ["vault.example.com"],
    require: true,
  },
]);
const enc = new TextEncoder();
const noPool: BodyScanner = {
  open: () => Promise.reject(new Error("the pool is not used for small bodies")),
};

function exchange(raw: string, host = "api.example.com"): Exchange {
  const head = parsedHead(raw);
  return {
    conn: 1,
    agent: "agent-a",
    head,
    destination: { target: { host, kind: "dns", port: 443 }, scheme: "https" },
    route: { method: head.method, path: canonicalPath(head.target) },
    secrets,
    trace: new Trace(),
    signal: new AbortController().signal,
    started: 0,
    sendContinue: async () => {},
    holdSecrets: () => {},
  };
}

const stage = outbound({
  scanner: noPool,
  inline: new InlineScanner(),
  held: new ByteBudget(1 << 20, 1 << 20),
  maxHeldBodyBytes: 1 << 20,
});
const HEAD = `POST /v1 HTTP/1.1\r\nHost: api.example.com\r\nAuthorization: Bearer ${DUMMY}\r\nContent-Length: 40\r\n\r\n`;
const heldBy = (text: string): Outbound => ({
  method: "POST",
  target: "/v1",
  headers: [],
  body: new HeldBody(enc.encode(text)),
});

describe("a body an earlier stage holds is scanned like any other", () => {
  test("its dummy is swapped", async () => {
    const ex = exchange(HEAD);
    const v = await stage.request!(ex, heldBy(`{"key":"${DUMMY}"}`));
    expect(v.ok).toBe(true);
    const body = v.ok ? v.value.body : null;
    expect(body?.kind === "held" && new TextDecoder().decode(body.bytes)).toBe(`{"key":"${REAL}"}`);
    expect(ex.trace.swaps).toBe(2); // the head's and the body's
  });

  test("a dummy whose credential has no body surface goes out as sent", async () => {
    const ex = exchange(HEAD);
    const text = `{"gist":"${PLAIN_DUMMY}"}`;
    const v = await stage.request!(ex, heldBy(text));
    const body = v.ok ? v.value.body : null;
    expect(body?.kind === "held" && new TextDecoder().decode(body.bytes)).toBe(text);
    expect(ex.trace.swaps).toBe(1); // the head's
  });

  test("a real value in it refuses the request, and nothing is counted as swapped", async () => {
    const ex = exchange(HEAD);
    const v = await stage.request!(ex, heldBy(`{"key":"${DUMMY}","leak":"${REAL}"}`));
    expect(v).toEqual({
      ok: false,
      code: "dlp-blocked",
      reason: "real credential in request body",
    });
    expect(ex.trace.swaps).toBe(0);
  });
});

test("a required dummy swapped in a body field counts, whatever another credential's body surface swapped", async () => {
  const text = JSON.stringify({ t: "field-dummy-00000000001" });
  const head = `POST /token HTTP/1.1\r\nHost: token.example.com\r\nContent-Type: application/json\r\nContent-Length: ${text.length}\r\n\r\n`;
  const ex = exchange(head, "token.example.com");
  const v = await stage.request!(ex, {
    method: "POST",
    target: "/token",
    headers: [["content-type", "application/json"]],
    body: new HeldBody(enc.encode(text)),
  });
  expect(v.ok).toBe(true);
  const body = v.ok ? v.value.body : null;
  expect(body?.kind === "held" && new TextDecoder().decode(body.bytes)).toBe(
    JSON.stringify({ t: "field-real-R3aL00000001" }),
  );
  expect(ex.trace.swaps).toBe(1);
});

test("a request refused for a missing required dummy counts no swaps, though its head had one", async () => {
  const ex = exchange(
    `GET /v1 HTTP/1.1\r\nHost: vault.example.com\r\nAuthorization: Bearer ${DUMMY}\r\n\r\n`,
    "vault.example.com",
  );
  const v = await stage.request!(ex, { method: "GET", target: "/v1", headers: [], body: null });
  expect(v).toMatchObject({ ok: false, code: "required-dummy-missing" });
  expect(ex.trace.swaps).toBe(0);
});

describe("an aws-chunked body (a STREAMING- payload)", () => {
  const crc = (text: string) => {
    const b = Buffer.alloc(4);
    b.writeUInt32BE(zlib.crc32(Buffer.from(text)) >>> 0);
    return `x-amz-checksum-crc32:${b.toString("base64")}`;
  };
  const framed = (payload: string) =>
    `${payload.length.toString(16)}\r\n${payload}\r\n0\r\n${crc(payload)}\r\n\r\n`;
  const put = (headers: string, body: string) => {
    const ex = exchange(
      `PUT /b/k HTTP/1.1\r\nHost: api.example.com\r\n${headers}Content-Length: ${body.length}\r\n\r\n`,
    );
    return stage.request!(ex, {
      method: "PUT",
      target: "/b/k",
      headers: [],
      body: new HeldBody(enc.encode(body)),
    });
  };
  const TRAILER =
    "x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER\r\nx-amz-trailer: x-amz-checksum-crc32\r\n";

  test("is scanned as its payload and leaves framed as it came, its dummy not swapped", async () => {
    const payload = `{"key":"${DUMMY}"}`;
    const v = await put(
      `${TRAILER}Content-Encoding: aws-chunked\r\nx-amz-decoded-content-length: ${payload.length}\r\n`,
      framed(payload),
    );
    if (!v.ok) throw new Error(v.reason);
    const body = v.value.body;
    expect(body?.kind).toBe("stream");
    if (body?.kind !== "stream") return;
    expect(body.length).toBe(framed(payload).length);
    expect(await new Response(body.stream).text()).toBe(framed(payload));
    expect(v.value.awsChunked).toBeDefined();
  });

  test("a real value in its payload, split by the framing, refuses it", async () => {
    const payload = `{"leak":"${REAL}"}`;
    const cut = 12;
    const body = `${cut.toString(16)}\r\n${payload.slice(0, cut)}\r\n${(payload.length - cut).toString(16)}\r\n${payload.slice(cut)}\r\n0\r\n${crc(payload)}\r\n\r\n`;
    const v = await put(`${TRAILER}x-amz-decoded-content-length: ${payload.length}\r\n`, body);
    expect(v).toMatchObject({ ok: false, code: "dlp-blocked" });
  });

  test.each([
    [
      "aws-chunked with no streaming mode",
      "Content-Encoding: aws-chunked\r\n",
      "needs a STREAMING-",
    ],
    [
      "a streaming mode the proxy does not read",
      "x-amz-content-sha256: STREAMING-AWS4-ECDSA-P256-SHA256-PAYLOAD\r\nx-amz-decoded-content-length: 1\r\n",
      "not a streaming payload mode",
    ],
    ["no decoded length", TRAILER, "x-amz-decoded-content-length"],
    [
      "a trailer that is not a checksum",
      "x-amz-content-sha256: STREAMING-UNSIGNED-PAYLOAD-TRAILER\r\nx-amz-trailer: x-evil\r\nx-amz-decoded-content-length: 1\r\n",
      "x-amz-checksum",
    ],
    [
      "aws-chunked before another coding",
      `${TRAILER}x-amz-decoded-content-length: 1\r\nContent-Encoding: aws-chunked, gzip\r\n`,
      "comes last",
    ],
  ])("refused: %s", async (_, headers, reason) => {
    const v = await put(headers, framed("x"));
    expect(v).toMatchObject({ ok: false, code: "bad-request" });
    expect(v.ok ? "" : v.reason).toContain(reason);
  });
});
