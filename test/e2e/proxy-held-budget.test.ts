// End-to-end: the budget for request bodies held whole (SLAPENIR_HELD_BODY_BUDGET_BYTES) covers
// a body for as long as the proxy holds it — until its upstream exchange is over — not only
// while it is being received; charges what the swap can make the body; and gives one agent at
// most half of it. Bodies whose swap changes their length are held whole; here the budget fits
// two of them. The upstream keeps the first two waiting: a third must get 503 while they are
// held, and once they are answered the budget is back for the next one. (Released as
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
/** What such a body is charged: what its swap could make it (REAL/DUMMY times longer). */
const CHARGE = Math.ceil((BODY * REAL.length) / DUMMY.length);
// Bound to 127.0.0.1 only: a dummy a fifth of its real value's length.
const SHORT_DUMMY = "sk-d-0001";
const LONG_REAL = `sk-real-grows-${"7".repeat(31)}`;
const MAX_HELD = 1_500_000;

let h: Harness;
let up: EchoServer;
let gate = Promise.withResolvers<void>();
let waiting = 0;

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
      {
        name: "grows",
        dummy: SHORT_DUMMY,
        real: LONG_REAL,
        hosts: ["127.0.0.1:*"],
        in: ["header:authorization", "body"],
      },
    ],
    allow: ["localhost:*", "127.0.0.1:*"],
    agents: ["agent-a", "agent-b"],
    env: {
      SLAPENIR_MAX_HELD_BODY_BYTES: String(MAX_HELD),
      SLAPENIR_HELD_BODY_BUDGET_BYTES: String(2 * CHARGE),
      SLAPENIR_RATE_LIMIT: "off",
    },
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost", "127.0.0.1"]), async (_req, r) => {
    waiting++;
    await gate.promise;
    return Response.json({
      bytes: r.body.length,
      reals: countOf(r.body, REAL) + countOf(r.body, LONG_REAL),
    });
  });
  for (const [file, dummy, size] of [
    ["body.bin", DUMMY, BODY],
    ["grows.bin", SHORT_DUMMY, 280_000],
  ] as const) {
    const body = Buffer.alloc(size, "x");
    body.write(dummy, 1000, "latin1");
    body.write(dummy, size - 1000, "latin1");
    await Bun.write(join(h.dir, file), body);
  }
});

afterAll(async () => {
  gate.resolve();
  await up?.stop();
  await h?.close();
});

function countOf(bytes: Uint8Array, text: string): number {
  return Buffer.from(bytes).toString("latin1").split(text).length - 1;
}

function post(agent: "agent-a" | "agent-b", file = "body.bin", host = "localhost") {
  return h.curl(
    [
      "-X",
      "POST",
      "-H",
      "content-type: application/octet-stream",
      "--data-binary",
      `@${join(h.dir, file)}`,
      `https://${host}:${up.port}/held`,
    ],
    agent,
  );
}

test("a held body keeps its share of the budget until its upstream exchange is over", async () => {
  // The budget fits two bodies; an agent's share, one (see the last test).
  const first = post("agent-a");
  const second = post("agent-b");
  while (waiting < 2) await Bun.sleep(10); // both bodies sent upstream, answers pending

  // Operators see who holds what.
  const metrics = await (await fetch(`http://127.0.0.1:${h.proxy.adminPort}/metrics`)).text();
  expect(metrics).toContain(`slapenir_held_body_bytes{agent="agent-a"} ${CHARGE}`);
  expect(metrics).toContain(`slapenir_held_body_bytes{agent="agent-b"} ${CHARGE}`);
  expect(metrics).toContain(`slapenir_held_body_budget_bytes ${2 * CHARGE}`);

  const third = await post("agent-b");
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
  const fourth = await post("agent-b");
  expect(fourth.status).toBe(200);
  const after = await (await fetch(`http://127.0.0.1:${h.proxy.adminPort}/metrics`)).text();
  expect(after).not.toContain("slapenir_held_body_bytes{");
  expect(JSON.parse(fourth.body.toString())).toEqual({ bytes: swapped, reals: 2 });

  const decisions = h.auditLines
    .map((l) => JSON.parse(l) as Record<string, unknown>)
    .filter((l) => l.evt === "request")
    .map((l) => [l.status, l.decision]);
  expect(decisions).toContainEqual([503, "error"]);
  expect(decisions.filter(([s]) => s === 200)).toHaveLength(3);
});

test("a body is charged for what its swap can make it, not for what was declared", async () => {
  // 280 KB whose dummy becomes a value five times longer: charged 1.4 MB (what the swap could
  // make it), which leaves less than one CHARGE free. Charged its declared 280 KB, the 800 KB
  // body after it would have fitted.
  expect(LONG_REAL.length).toBe(5 * SHORT_DUMMY.length);
  gate = Promise.withResolvers<void>();
  waiting = 0;
  const grows = post("agent-a", "grows.bin", "127.0.0.1");
  while (waiting < 1) await Bun.sleep(10);
  const next = await post("agent-b");
  expect(next.status).toBe(503);
  gate.resolve();
  const r = await grows;
  expect(r.status).toBe(200);
  expect(JSON.parse(r.body.toString())).toEqual({
    bytes: 280_000 + 2 * (LONG_REAL.length - SHORT_DUMMY.length),
    reals: 2,
  });
  expect(5 * 280_000).toBeLessThanOrEqual(MAX_HELD); // held, not streamed
  expect(5 * 280_000 + CHARGE).toBeGreaterThan(2 * CHARGE);
  expect(280_000 + CHARGE).toBeLessThanOrEqual(2 * CHARGE);
});

test("one agent cannot take the whole budget: the other still gets its bodies held", async () => {
  // An agent may hold half the budget (here: the largest held body, 1.5 MB, which is more).
  // agent-a parks one body at the slow upstream; its second does not fit its share although
  // the budget has room, and agent-b's does.
  gate = Promise.withResolvers<void>();
  waiting = 0;
  const parked = post("agent-a");
  while (waiting < 1) await Bun.sleep(10);
  const again = await post("agent-a");
  expect(again.status).toBe(503);
  expect(again.body.toString()).toContain("retry shortly");
  const other = post("agent-b");
  while (waiting < 2) await Bun.sleep(10); // agent-b's body was held and sent upstream
  gate.resolve();
  for (const r of await Promise.all([parked, other])) expect(r.status).toBe(200);
  expect(CHARGE).toBeLessThanOrEqual(MAX_HELD);
  expect(2 * CHARGE).toBeGreaterThan(MAX_HELD);
});

test("a body the swap could grow past the cap is sent chunked, not refused", async () => {
  // 1.4 MB (within the 1.5 MB cap) packed with short dummies: swapped, it is 2.2 MB. Held, it
  // would have been refused with 413 for what the swap made of it; it streams to the upstream
  // chunked instead, swapped, and the agent gets its answer.
  gate = Promise.withResolvers<void>();
  gate.resolve();
  const size = 1_400_000;
  const body = Buffer.alloc(size, "x");
  let n = 0;
  for (let at = 0; at + SHORT_DUMMY.length <= size; at += 3 * SHORT_DUMMY.length, n++) {
    body.write(SHORT_DUMMY, at, "latin1");
  }
  await Bun.write(join(h.dir, "dense.bin"), body);
  const r = await post("agent-a", "dense.bin", "127.0.0.1");
  expect(r.status).toBe(200);
  const swapped = size + n * (LONG_REAL.length - SHORT_DUMMY.length);
  expect(swapped).toBeGreaterThan(MAX_HELD);
  expect(JSON.parse(r.body.toString())).toEqual({ bytes: swapped, reals: n });
  const seen = up.received.at(-1)!;
  const te = seen.headers.find(([k]) => k === "transfer-encoding")?.[1];
  expect(te).toBe("chunked");
});
