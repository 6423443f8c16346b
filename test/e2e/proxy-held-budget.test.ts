// End-to-end: the budget for request bodies held whole (SLAPENIR_HELD_BODY_BUDGET_BYTES) covers
// a body for as long as the proxy holds it — until its upstream exchange is over — not only
// while it is being received. Bodies whose swap changes their length are held whole; here the
// budget fits two of them. The upstream keeps the first two waiting: a third must get 503 while
// they are held, and once they are answered the budget is back for the next one. (Released as
// soon as a body was received, as it used to be, the third would have been held too: that is
// how thirty at once got the proxy OOM-killed in its container — see
// streaming-memory-limit.test.ts.)

import { afterAll, beforeAll, expect, test } from "bun:test";
import { join } from "node:path";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-held-000000000000000000001";
const REAL = "sk-real-held-9f8e7d6c5b4a39281706f5e4d3c2"; // longer: the swap changes the length
const BODY = 800_000; // above the inline limit (256 KiB): held because of the length change

let h: Harness;
let up: EchoServer;
let gate = Promise.withResolvers<void>();
let waiting = 0;

beforeAll(async () => {
  h = await startHarness({
    credentials: [{ name: "svc", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] }],
    env: {
      SLAPENIR_MAX_HELD_BODY_BYTES: String(1 << 20),
      SLAPENIR_HELD_BODY_BUDGET_BYTES: String(2 * BODY),
      SLAPENIR_RATE_LIMIT: "off",
    },
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]), async (_req, r) => {
    waiting++;
    await gate.promise;
    return Response.json({ bytes: r.body.length, reals: countOf(r.body, REAL) });
  });
  const body = Buffer.alloc(BODY, "x");
  body.write(DUMMY, 1000, "latin1");
  body.write(DUMMY, BODY - 1000, "latin1");
  await Bun.write(join(h.dir, "body.bin"), body);
});

afterAll(async () => {
  gate.resolve();
  await up?.stop();
  await h?.close();
});

function countOf(bytes: Uint8Array, text: string): number {
  return Buffer.from(bytes).toString("latin1").split(text).length - 1;
}

function post() {
  return h.curl([
    "-X",
    "POST",
    "-H",
    "content-type: application/octet-stream",
    "--data-binary",
    `@${join(h.dir, "body.bin")}`,
    `https://localhost:${up.port}/held`,
  ]);
}

test("a held body keeps its share of the budget until its upstream exchange is over", async () => {
  const first = post();
  const second = post();
  while (waiting < 2) await Bun.sleep(10); // both bodies sent upstream, answers pending

  const third = await post();
  expect(third.status).toBe(503);
  expect(third.body.toString()).toContain("retry shortly");
  expect(up.received).toHaveLength(2); // the third never left the proxy

  gate.resolve();
  const swapped = BODY + 2 * (REAL.length - DUMMY.length);
  for (const r of await Promise.all([first, second])) {
    expect(r.status).toBe(200);
    expect(JSON.parse(r.body.toString())).toEqual({ bytes: swapped, reals: 2 });
  }

  // Answered: the budget is back.
  gate = Promise.withResolvers<void>();
  gate.resolve();
  const fourth = await post();
  expect(fourth.status).toBe(200);
  expect(JSON.parse(fourth.body.toString())).toEqual({ bytes: swapped, reals: 2 });

  const decisions = h.auditLines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.evt === "request")
    .map((l) => [l.status, l.decision]);
  expect(decisions).toContainEqual([503, "error"]);
  expect(decisions.filter(([s]) => s === 200)).toHaveLength(3);
});
