// A secrets reload while answers are on their way. An upstream that stores and echoes what it is
// sent can put the new real value into an answer to a request sent before the reload. An answer
// that begins after the reload is redacted with the old secrets and the new ones; one already
// streaming cannot learn the new values, so it is cut. The new real value never reaches the
// agent. New requests swap and redact with the new secrets.

import { afterAll, beforeAll, expect, test } from "bun:test";
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import {
  chunk,
  type HostileUpstream,
  headBytes,
  sendLength,
  startHostileUpstream,
  type Wire,
} from "../support/hostile-upstream.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { openTunnel, readAnswers, readToClose } from "../support/raw-agent.ts";

const DUMMY = "dummy-rot-0000000000000000000000001";
const OLD_REAL = "real-old-7c1f0e9d8c7b6a5f4e3d2c1b0a99";
const NEW_REAL = "real-new-1a2b3c4d5e6f708192a3b4c5d6e7";

let h: Harness;
let up: HostileUpstream;
/** The open event stream's socket, once the upstream has answered `/events`. */
let events: Wire | null = null;
/** What `/slow` waits for before it answers (a test sets it before it sends the request). */
let slowGate: Promise<void> = Promise.resolve();

/** A gate for the next `/slow`, and the function that opens it. */
function gateSlow(): () => void {
  let open!: () => void;
  slowGate = new Promise<void>((r) => {
    open = r;
  });
  return open;
}

beforeAll(async () => {
  h = await startHarness({
    credentials: [{ name: "svc", dummy: DUMMY, real: OLD_REAL, hosts: ["localhost:*"] }],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  up = await startHostileUpstream(await h.upstreamCa.issue(["localhost"]));
  // A long-lived event stream, and an endpoint that publishes its request's Authorization into
  // it: an ordinary store-and-echo API.
  up.on("/events", async (_r, w) => {
    await w.write(
      headBytes(200, "OK", [
        ["content-type", "text/event-stream"],
        ["transfer-encoding", "chunked"],
      ]),
    );
    // Longer than the window the streaming redactor holds back, so it reaches the agent now.
    await w.write(chunk(`data: hello ${"-".repeat(4096)}\n\n`));
    events = w;
    await new Promise(() => {});
  });
  up.on("/publish", async (r, w) => {
    const auth = r.headers.find(([k]) => k.toLowerCase() === "authorization")?.[1] ?? "";
    await events!.write(chunk(`data: ${auth}\n\n`));
    await sendLength(w, [], Buffer.from("published\n"));
  });
  up.on("/slow", async (r, w) => {
    await slowGate;
    const body = `body ${NEW_REAL}\n`;
    if (!r.target.includes("chunked")) {
      await sendLength(w, [["x-echo", NEW_REAL]], Buffer.from(body));
      return;
    }
    await w.write(
      headBytes(200, "OK", [
        ["x-echo", NEW_REAL],
        ["transfer-encoding", "chunked"],
      ]),
    );
    await w.write(chunk(body));
    await w.write("0\r\n\r\n");
  });
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

const agent = () => ({ port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! });

/** Reload the secrets with `real` as the credential's real value (the new one by default). */
async function rotate(real: string = NEW_REAL): Promise<void> {
  const path = join(h.dir, `tokens-${Date.now()}-${real.slice(5, 8)}.json`);
  await writeFile(
    path,
    JSON.stringify({
      credentials: [{ name: "svc", dummy: DUMMY, real, hosts: ["localhost:*"] }],
    }),
  );
  await h.proxy.reloadSecrets({ ...process.env, TOKENS_JSON: path });
}

test("an answer streaming across a reload is cut before the new real value reaches it", async () => {
  const t = await openTunnel(agent(), { connect: `localhost:${up.port}` });
  const got: Buffer[] = [];
  let hello!: () => void;
  const helloSeen = new Promise<void>((r) => {
    hello = r;
  });
  // Over when the proxy closes the stream, or the moment the new value shows in it.
  let leaked!: () => void;
  const over = Promise.race([
    readToClose(t),
    new Promise<void>((r) => {
      leaked = r;
    }),
  ]);
  t.on("data", (d: Buffer) => {
    got.push(d);
    const text = Buffer.concat(got);
    if (text.includes("data: hello")) hello();
    if (text.includes(NEW_REAL)) leaked();
  });
  t.write(`GET /events HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`);
  await helloSeen;
  await rotate();
  // Another request, on the new secrets: its dummy becomes the new real value upstream, which
  // the upstream writes into the stream that began before the reload.
  const t2 = await openTunnel(agent(), { connect: `localhost:${up.port}` });
  const published = readAnswers(t2, ["POST"]);
  t2.write(
    `POST /publish HTTP/1.1\r\nHost: localhost:${up.port}\r\nAuthorization: Bearer ${DUMMY}\r\nContent-Length: 0\r\n\r\n`,
  );
  expect((await published).toString("latin1")).toStartWith("HTTP/1.1 200");
  t2.destroy();
  expect(up.received.some((q) => q.raw.includes(NEW_REAL))).toBe(true);
  // More of the stream, past the window a streaming redactor holds back.
  await events!.write(chunk(`data: ${"z".repeat(5000)}\n\n`));
  // The old stream is cut: it ends without its last chunk, and without the new value.
  await over;
  t.destroy();
  const all = Buffer.concat(got).toString("latin1");
  expect(all).toContain("data: hello");
  expect(all).not.toContain(NEW_REAL);
  expect(all).not.toContain("\r\n0\r\n\r\n");
});

for (const kind of ["held whole", "chunked"]) {
  test(`an answer that begins after a reload is redacted of old and new values (${kind})`, async () => {
    await rotate(OLD_REAL); // the exchange starts on secrets that do not know the new value
    const t = await openTunnel(agent(), { connect: `localhost:${up.port}` });
    const reply = readAnswers(t);
    const answer = gateSlow();
    const seen = up.received.length;
    const path = kind === "chunked" ? "/slow?chunked" : "/slow";
    t.write(`GET ${path} HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`);
    // The exchange has begun (the upstream has the request) when the secrets change.
    while (!up.received.slice(seen).some((q) => q.target === path)) await Bun.sleep(10);
    await rotate();
    answer();
    const text = (await reply).toString("latin1");
    t.destroy();
    expect(text).toStartWith("HTTP/1.1 200");
    expect(text).not.toContain(NEW_REAL);
    expect(text).toContain("x-echo: [REDACTED]");
    expect(text).toContain("body [REDACTED]");
  });
}

test("after the reload, new requests swap and redact with the new secrets", async () => {
  const t = await openTunnel(agent(), { connect: `localhost:${up.port}` });
  const reply = readAnswers(t);
  gateSlow()();
  t.write(`GET /slow HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`);
  const text = (await reply).toString("latin1");
  t.destroy();
  expect(text).toStartWith("HTTP/1.1 200");
  expect(text).not.toContain(NEW_REAL);
  expect(text).toContain("[REDACTED]");
});
