// A request body with its own Content-Encoding (issue 15, item 4): DLP reads it as what it
// decodes to, since that is what the upstream stores. Held (bounded), decoded with the answers'
// bomb caps, scanned; it leaves byte for byte as it came. A coding the proxy cannot read, or a
// body that does not decode, is refused rather than let out unread.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { brotliCompressSync, deflateSync, gzipSync } from "node:zlib";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { openTunnel, proxyErrorCode, readAnswers } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-coding-0000000000000001";
const REAL = "sk-R3aL-coding-8d7c6b5a4f3e2d1c";

let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness({
    credentials: [{ name: "c", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] }],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

async function post(coding: string, body: Buffer): Promise<{ status: string; error?: string }> {
  const t = await openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
    { connect: `localhost:${up.port}` },
  );
  const reply = readAnswers(t);
  t.write(
    `POST /store HTTP/1.1\r\nHost: localhost:${up.port}\r\nContent-Encoding: ${coding}\r\nContent-Length: ${body.length}\r\n\r\n`,
  );
  t.write(body);
  const head = (await reply).toString("latin1");
  t.destroy();
  return {
    status: head.split(" ")[1]!,
    error: proxyErrorCode(head),
  };
}

describe("request bodies with a content coding", () => {
  const doc = (v: string) => Buffer.from(JSON.stringify({ note: "hello", key: v }));
  const codings: [string, (b: Buffer) => Buffer][] = [
    ["gzip", gzipSync],
    ["deflate", deflateSync],
    ["br", brotliCompressSync],
    ["gzip, br", (b) => brotliCompressSync(gzipSync(b))],
  ];

  for (const [name, encode] of codings) {
    test(`${name}: a real value inside is refused; without one, the body leaves as it came`, async () => {
      const seen = up.received.length;
      expect(await post(name, encode(doc(REAL)))).toEqual({ status: "403", error: "dlp-blocked" });
      expect(up.received.length).toBe(seen);
      const clean = encode(doc(DUMMY));
      expect(await post(name, clean)).toMatchObject({ status: "200" });
      expect(Buffer.from(up.received.at(-1)!.body).equals(clean)).toBe(true);
    });
  }

  test("a coding the proxy cannot read, a body that does not decode, a bomb: refused, not forwarded", async () => {
    const seen = up.received.length;
    expect(await post("compress", Buffer.from("xx"))).toEqual({
      status: "400",
      error: "bad-request",
    });
    expect(await post("gzip", Buffer.from("not gzip at all"))).toEqual({
      status: "400",
      error: "bad-request",
    });
    const bomb = gzipSync(Buffer.alloc(64 << 20, 0x61), { level: 9 });
    expect(await post("gzip", bomb)).toEqual({ status: "400", error: "bad-request" });
    expect(up.received.length).toBe(seen);
  });
});
