// Credential sources under races, from an attacker's review (issue 16): a second rotation
// while a switch waits, a reload while a switch waits, a reload after a rotation, a value that
// conflicts with another credential's or is the dummy itself, a credential with no value
// presented in Basic credentials. The upstream is one that stores what it is sent and writes
// the next request's Authorization into answers it holds open (`/tap`): the shape of an API
// that echoes stored content into a long-lived stream.

import { expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { carries } from "../support/hostile-oracle.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { type EchoServer, echoResponse, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "race-dummy-0000000000000000001";
const val = (n: number) => `raceREALvalue-${String(n).padStart(10, "0")}`;
const STATIC = {
  name: "static",
  dummy: "static-dummy-000000000000001",
  real: "staticREALvalue-000000001",
  hosts: ["other.test:*"],
};
const enc = new TextEncoder();

interface Rig extends AsyncDisposable {
  h: Harness;
  up: EchoServer;
  path: string;
  /** Releases the oldest held `/hold` answer. */
  release(): void;
  waitFetched(n: number): Promise<void>;
  fetched(): number;
  ask(p?: string): ReturnType<Harness["curl"]>;
  /** The Authorization of the upstream's last `/` request. */
  upAuth(): string | null;
  waitCount(p: string, n: number): Promise<void>;
}

async function rig(first: string | null = val(0)): Promise<Rig> {
  const dir = mkdtempSync(join(tmpdir(), "slapenir-race-"));
  const path = join(dir, "token");
  if (first !== null) writeFileSync(path, first);
  const h = await startHarness({
    credentials: [
      {
        name: "filetok",
        dummy: DUMMY,
        source: { file: path, pollSeconds: 0.05 },
        hosts: ["echo.test:*"],
      },
      STATIC,
    ],
    allow: ["echo.test:*", "other.test:*"],
    names: ["echo.test", "other.test"],
    sourceSwitchMs: 20_000,
    // These tests wait for a refresh by asking again: the request rate is not what they try.
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  const taps: ReadableStreamDefaultController<Uint8Array>[] = [];
  const holds: (() => void)[] = [];
  const stored: string[] = [];
  const up = startEchoServer(await h.upstreamCa.issue(["echo.test", "other.test"]), (req, r) => {
    const p = new URL(req.url).pathname;
    if (p === "/tap") {
      return new Response(
        new ReadableStream<Uint8Array>({
          start(c) {
            taps.push(c);
            c.enqueue(enc.encode("tap-open\n"));
          },
        }),
      );
    }
    if (p === "/hold") {
      return new Response(
        new ReadableStream<Uint8Array>({
          async start(c) {
            c.enqueue(enc.encode("hold-start\n"));
            await new Promise<void>((ok) => holds.push(ok));
            c.enqueue(enc.encode("hold-end\n"));
            c.close();
          },
        }),
      );
    }
    if (p === "/recall") return Response.json({ stored });
    const auth = req.headers.get("authorization");
    if (auth) {
      stored.push(auth);
      for (const c of taps.splice(0)) {
        try {
          c.enqueue(enc.encode(`seen: ${auth}\n${"x".repeat(200)}\n`));
          c.close();
        } catch {}
      }
    }
    return echoResponse(req, r);
  });
  const fetched = () =>
    h.auditLines.filter((l) => l.includes('"evt":"source"') && l.includes('"result":"fetched"'))
      .length;
  const count = (p: string) => up.received.filter((r) => r.target === p).length;
  return {
    h,
    up,
    path,
    fetched,
    release: () => holds.shift()?.(),
    async waitFetched(n) {
      for (let i = 0; fetched() < n; i++) {
        expect(i).toBeLessThan(2000);
        await Bun.sleep(10);
      }
    },
    ask: (p = "/") =>
      h.curl(["-H", `Authorization: Bearer ${DUMMY}`, `https://echo.test:${up.port}${p}`]),
    upAuth: () =>
      up.received
        .filter((r) => r.target === "/")
        .at(-1)
        ?.headers.find(([k]) => k === "authorization")?.[1] ?? null,
    async waitCount(p, n) {
      for (let i = 0; count(p) < n; i++) {
        expect(i).toBeLessThan(2000);
        await Bun.sleep(10);
      }
    },
    async [Symbol.asyncDispose]() {
      await up.stop();
      await h.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

test("a second value read while a switch waits is not swapped until the answers that knew only the first are over", async () => {
  await using r = await rig();
  expect((await r.ask()).status).toBe(200);
  const A = r.ask("/hold"); // on the secrets before v1
  await r.waitCount("/hold", 1);
  const f0 = r.fetched();
  writeFileSync(r.path, val(1));
  await r.waitFetched(f0 + 1); // v1 pending
  const B = r.ask("/tap"); // knows v1 (pending), not v2
  await r.waitCount("/tap", 1);
  writeFileSync(r.path, val(2));
  await r.waitFetched(f0 + 2); // v2 pending
  r.release();
  await A;
  // v2 goes out only once B (which cannot redact it) is over; B is over when the upstream
  // writes into it, which it does on the next request: that request must not carry v2.
  const next = await r.ask();
  expect(next.status).toBe(200);
  expect(r.upAuth()).not.toBe(`Bearer ${val(2)}`);
  const b = await B;
  expect(carries(b.body, val(2))).toBe(false);
  expect(carries(b.body, val(1))).toBe(false);
  for (let i = 0; r.upAuth() !== `Bearer ${val(2)}`; i++) {
    expect(i).toBeLessThan(500);
    expect((await r.ask()).status).toBe(200);
  }
}, 60_000);

test("a reload while a switch waits cuts the answers on older secrets before the new value goes out", async () => {
  await using r = await rig();
  const A = r.ask("/tap"); // on the secrets before v1
  await r.waitCount("/tap", 1);
  const f0 = r.fetched();
  writeFileSync(r.path, val(1));
  await r.waitFetched(f0 + 1);
  await r.h.proxy.reloadSecrets();
  await r.ask();
  expect(r.upAuth()).toBe(`Bearer ${val(1)}`);
  const a = await A;
  expect(carries(a.body, val(1))).toBe(false);
}, 60_000);

test("a reload keeps the values a source replaced redacted", async () => {
  await using r = await rig();
  expect((await r.ask()).status).toBe(200); // the store holds v0
  const f0 = r.fetched();
  writeFileSync(r.path, val(1));
  await r.waitFetched(f0 + 1);
  for (let i = 0; r.upAuth() !== `Bearer ${val(1)}`; i++) {
    expect(i).toBeLessThan(500);
    await r.ask();
  }
  await r.h.proxy.reloadSecrets();
  const after = await r.ask("/recall");
  expect(after.status).toBe(200);
  expect(carries(after.body, val(0))).toBe(false);
  expect(after.body.toString()).toContain("Bearer [REDACTED]");
}, 60_000);

test("a value that is another credential's real value, or the dummy, is rejected; the next one is swapped", async () => {
  await using r = await rig();
  await r.ask();
  expect(r.upAuth()).toBe(`Bearer ${val(0)}`);
  const rejected = () => r.h.auditLines.filter((l) => l.includes('"result":"rejected"')).length;
  for (const [n, bad] of [STATIC.real, DUMMY].entries()) {
    writeFileSync(r.path, bad);
    for (let i = 0; rejected() <= n; i++) {
      expect(i).toBeLessThan(2000);
      await Bun.sleep(10);
    }
    // Still served on the value before: the dummy is not blocked, nothing wedged.
    const still = await r.ask();
    expect(still.status).toBe(200);
    expect(r.upAuth()).toBe(`Bearer ${val(0)}`);
  }
  writeFileSync(r.path, val(3));
  for (let i = 0; r.upAuth() !== `Bearer ${val(3)}`; i++) {
    expect(i).toBeLessThan(500);
    expect((await r.ask()).status).toBe(200);
  }
  for (const l of r.h.auditLines) expect(l).not.toContain(STATIC.real);
}, 60_000);

test("a credential with no value: its dummy in Basic credentials or a query gets 503 naming it, not sent", async () => {
  await using r = await rig(null); // the file does not exist: no value
  const before = r.up.received.length;
  for (const args of [
    ["-u", `user:${DUMMY}`],
    ["--url-query", `key=${encodeURIComponent(DUMMY).replace(/-/g, "%2D")}`],
  ]) {
    const x = await r.h.curl([...args, `https://echo.test:${r.up.port}/`]);
    expect(x.status).toBe(503);
    expect(x.headers).toContain("x-slapenir-error: credential-unavailable");
    expect(x.body.toString()).toContain("credential filetok");
  }
  expect(r.up.received.length).toBe(before);
}, 60_000);
