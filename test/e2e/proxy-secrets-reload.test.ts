// Secrets hot reload: after `reloadSecrets()` the new credential swaps and redacts at once, the
// old one neither swaps nor is known any more, and nothing needed a restart; a request under
// way when the secrets change finishes on the ones it started with.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { openTunnel, readAnswers } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const OLD_DUMMY = "dummy-old-000000000000000000000001";
const OLD_REAL = "real-old-7c1f0e9d8c7b6a5f4e3d2c1b0a99";
const NEW_DUMMY = "dummy-new-000000000000000000000002";
const NEW_REAL = "real-new-1a2b3c4d5e6f708192a3b4c5d6e7";
const MID_REAL = "real-mid-0f1e2d3c4b5a69788796a5b4c3d2";

let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness({
    credentials: [
      {
        name: "svc",
        dummy: OLD_DUMMY,
        real: OLD_REAL,
        hosts: ["localhost:*"],
        in: ["header:x-key", "body"],
      },
    ],
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

test("reloaded secrets take effect for the next request", async () => {
  const send = async (dummy: string) => {
    const before = up.received.length;
    const r = await h.curl(["-H", `x-key: ${dummy}`, `https://localhost:${up.port}/k`]);
    return { r, got: up.received[before]! };
  };
  const a = await send(OLD_DUMMY);
  expect(a.got.headers).toContainEqual(["x-key", OLD_REAL]);

  const path = join(h.dir, "tokens.json");
  await writeFile(
    path,
    JSON.stringify({
      credentials: [
        {
          name: "svc",
          dummy: NEW_DUMMY,
          real: NEW_REAL,
          hosts: ["localhost:*"],
          in: ["header:x-key", "body"],
        },
      ],
    }),
  );
  await h.proxy.reloadSecrets({ ...process.env, TOKENS_JSON: path });

  const b = await send(NEW_DUMMY);
  expect(b.got.headers).toContainEqual(["x-key", NEW_REAL]);
  expect(b.r.body.toString()).not.toContain(NEW_REAL);
  const c = await send(OLD_DUMMY);
  expect(c.got.headers).toContainEqual(["x-key", OLD_DUMMY]);
});

test("a secrets reload in the middle of a request does not break it", async () => {
  const t = await openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
    { connect: `localhost:${up.port}` },
  );
  const body = `{"k":"${NEW_DUMMY}"}`;
  t.write(
    `POST /mid HTTP/1.1\r\nHost: localhost:${up.port}\r\nContent-Length: ${body.length}\r\n\r\n${body.slice(0, 5)}`,
  );
  await Bun.sleep(100);
  const path = join(h.dir, "tokens-mid.json");
  await writeFile(
    path,
    JSON.stringify({
      credentials: [
        {
          name: "svc",
          dummy: NEW_DUMMY,
          real: MID_REAL,
          hosts: ["localhost:*"],
          in: ["header:x-key", "body"],
        },
      ],
    }),
  );
  await h.proxy.reloadSecrets({ ...process.env, TOKENS_JSON: path });
  const reply = readAnswers(t, ["POST"]);
  t.write(body.slice(5));
  const text = (await reply).toString("latin1");
  t.destroy();
  expect(text).toStartWith("HTTP/1.1 200");
  // The echo carries the real value the request was swapped with: redacted all the same.
  expect(text).not.toContain(NEW_REAL);
  expect(text).not.toContain(MID_REAL);
});
