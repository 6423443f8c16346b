// Streamed request bodies (chunked, or too large to hold) to a host with bound credentials go
// through one combined pool pass: dummies become real, real values become the DLP marker. This
// file tries that path directly: a real value split across chunk writes blocks the request (the
// upstream never receives it whole, nor the real bytes), dummies split the same way are swapped,
// and a body with neither passes byte-exact.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { openTunnel, readAnswers } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "dummy-stream-0000000000000000000000001";
const REAL = "real-stream-5e4d3c2b1a0f9e8d7c6b5a4f3e";

let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness({
    credentials: [
      {
        name: "svc",
        dummy: DUMMY,
        real: REAL,
        hosts: ["localhost:*"],
        in: ["header:authorization", "body"],
      },
    ],
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

/** Send a chunked POST whose body is `parts` (each its own chunk and write). */
async function chunkedPost(parts: string[]): Promise<string> {
  const t = await openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
    { connect: `localhost:${up.port}` },
  );
  t.write(
    `POST /stream HTTP/1.1\r\nHost: localhost:${up.port}\r\nTransfer-Encoding: chunked\r\n\r\n`,
  );
  for (const p of parts) {
    t.write(`${Buffer.byteLength(p).toString(16)}\r\n${p}\r\n`);
    await Bun.sleep(5);
  }
  const reply = readAnswers(t, ["POST"]);
  t.write("0\r\n\r\n");
  const text = (await reply).toString("latin1");
  t.destroy();
  return text;
}

const filler = "x".repeat(70_000);

describe("combined outbound pass (streamed bodies)", () => {
  test("a real value split across chunks blocks the request; the upstream never sees it", async () => {
    const before = up.received.length;
    const cut = 13;
    const reply = await chunkedPost([
      filler,
      `a ${REAL.slice(0, cut)}`,
      `${REAL.slice(cut)} b`,
      filler,
    ]);
    expect(reply.startsWith("HTTP/1.1 200")).toBe(false);
    expect(reply).not.toContain(REAL);
    expect(up.received.length).toBe(before);
    await h.settled();
    const audit = h.auditLines.map((l) => JSON.parse(l)).filter((l) => l.path === "/stream");
    expect(audit.at(-1)).toMatchObject({
      decision: "deny",
      reason: "real credential in request body",
    });
  });

  test("a dummy split across chunks is swapped", async () => {
    const before = up.received.length;
    const cut = 9;
    const reply = await chunkedPost([
      filler,
      `k=${DUMMY.slice(0, cut)}`,
      `${DUMMY.slice(cut)};`,
      filler,
    ]);
    expect(reply).toStartWith("HTTP/1.1 200");
    const got = Buffer.from(up.received[before]!.body).toString("latin1");
    expect(got).toBe(`${filler}k=${REAL};${filler}`);
    expect(reply).not.toContain(REAL);
  });

  test("a body with neither passes byte-exact", async () => {
    const before = up.received.length;
    const reply = await chunkedPost([filler, "plain", filler]);
    expect(reply).toStartWith("HTTP/1.1 200");
    expect(Buffer.from(up.received[before]!.body).toString("latin1")).toBe(
      `${filler}plain${filler}`,
    );
  });
});
