// A secrets reload racing a credential source's new value, with two event loops (an attacker's
// review found it). The reload goes to the loops in two steps; a source that changed while the
// first was on its way had its switch's first step (the new value redacted) land between the
// two, and the reload's second step — built before the change — put in force secrets that did
// not know the value. Answers begun on them were neither waited for nor cut when the switch
// swapped the value: an upstream that stores what it is sent showed it to the agent.
//
// A loop busy with traffic takes time to read its messages; here each Worker's messages keep
// their order and the reload's first step is held 120 ms, so the source's change lands in that
// window every time instead of now and then.

import { afterAll, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { carries } from "../support/hostile-oracle.ts";
import { startHarness } from "../support/proxy-harness.ts";
import { echoResponse, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "race-dummy-0000000000000000001";
const value = (n: number) => `raceREALvalue-${String(n).padStart(10, "0")}`;
const enc = new TextEncoder();

let hold: { onFirst: () => void } | null = null;
const chains = new WeakMap<object, Promise<void>>();
const post = Worker.prototype.postMessage;
Worker.prototype.postMessage = function (this: Worker, m: unknown, ...rest: never[]) {
  let next = chains.get(this) ?? Promise.resolve();
  const msg = m as { op?: string; cut?: boolean };
  if (hold && msg?.op === "install" && msg.cut === true) {
    hold.onFirst();
    hold = null;
    next = next.then(() => Bun.sleep(120));
  }
  next = next.then(() => post.call(this, m, ...rest));
  chains.set(this, next);
};
afterAll(() => {
  Worker.prototype.postMessage = post;
});

test("a reload racing a source's new value: no answer shows the agent the new value", async () => {
  const dir = mkdtempSync(join(tmpdir(), "slapenir-race-"));
  const file = join(dir, "token");
  writeFileSync(file, value(0));
  await using h = await startHarness({
    credentials: [
      {
        name: "filetok",
        dummy: DUMMY,
        source: { file, pollSeconds: 0.05 },
        hosts: ["echo.test:*"],
      } as never,
    ],
    allow: ["echo.test:*"],
    names: ["echo.test"],
    sourceSwitchMs: 800,
    loops: 2,
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  // An API that stores: /tap?want=V stays open until a request arrives authorised with V, then
  // shows that request's Authorization; /hold streams for a while (answers begun mid-reload).
  const taps: { want: string; c: ReadableStreamDefaultController<Uint8Array> }[] = [];
  let lastAuth = "";
  const up = startEchoServer(await h.upstreamCa.issue(["echo.test"]), (req, r) => {
    const u = new URL(req.url);
    if (u.pathname === "/hold") {
      return new Response(
        new ReadableStream<Uint8Array>({
          async start(c) {
            c.enqueue(enc.encode("hold\n"));
            await Bun.sleep(1500);
            c.close();
          },
        }),
      );
    }
    if (u.pathname === "/tap") {
      const want = `Bearer ${u.searchParams.get("want")}`;
      return new Response(
        new ReadableStream<Uint8Array>({
          start(c) {
            taps.push({ want, c });
            c.enqueue(enc.encode("tap-open\n"));
          },
        }),
      );
    }
    const auth = req.headers.get("authorization");
    if (auth) {
      lastAuth = auth;
      for (const t of taps.filter((t) => t.want === auth)) {
        taps.splice(taps.indexOf(t), 1);
        t.c.enqueue(enc.encode(`stored: ${auth}\n${"x".repeat(300)}\n`));
        t.c.close();
      }
    }
    return echoResponse(req, r);
  });
  const ask = (path = "/") =>
    h.curl(["-H", `Authorization: Bearer ${DUMMY}`, `https://echo.test:${up.port}${path}`]);
  try {
    for (let i = 1; i <= 2; i++) {
      hold = { onFirst: () => writeFileSync(file, value(i)) };
      const reloaded = h.proxy.reloadSecrets();
      const holds = [40, 60, 80].map((ms) => Bun.sleep(ms).then(() => ask("/hold")));
      await reloaded;
      const tap = ask(`/tap?want=${value(i)}`);
      // Until the source's switch swaps the new value for the dummy.
      for (let n = 0; lastAuth !== `Bearer ${value(i)}` && n < 200; n++) await ask();
      expect(lastAuth).toBe(`Bearer ${value(i)}`);
      await Promise.all(holds);
      const got = await tap;
      expect(carries(got.body, value(i))).toBe(false);
    }
  } finally {
    await up.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}, 120_000);
