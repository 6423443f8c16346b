// Violations and quarantine (issue 15, class 3). DLP's answer is an oracle: the batch of guesses
// that holds the real value is refused, the others pass. An agent that knows a token up to
// letter case recovered it that way in 36 s. Now the first real value in a request quarantines
// the agent: its open connections close, new ones are refused, and it learns nothing after
// that one denial; an operator releases it through the admin API. Other agents go on.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { readFileSync } from "node:fs";
import { join } from "node:path";
import { chunk, headBytes, sendLength, startHostileUpstream } from "../support/hostile-upstream.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel, connectAnswer, openTunnel, readAnswers } from "../support/raw-agent.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "ghp_dummy000000000000000000000000000003";
const REAL = "ghp_R3aLt0k3nAbCdEfGh1jKlMn0pQrStUv9zY";

let h: Harness;
let up: EchoServer;

beforeAll(async () => {
  h = await startHarness({
    agents: ["agent-a", "agent-b", "agent-c", "agent-d"],
    credentials: [{ name: "gh", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] }],
    // Reflections quarantine too here (opt-in): the redactor's oracle is tried below.
    env: {
      SLAPENIR_RATE_LIMIT: "off",
      SLAPENIR_QUARANTINE: "on",
      SLAPENIR_QUARANTINE_ON: "dlp,reflection",
    },
  });
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

const url = (path: string) => `https://localhost:${up.port}${path}`;
/** One batch of guesses, in headers of one request. */
const guess = (agent: string, guesses: readonly string[]) =>
  h.curl([...guesses.flatMap((g, i) => ["-H", `X-Guess-${i}: ${g}`]), url("/probe")], agent);

/** Guesses at the token's last character (the attacker knows the rest). */
const lastChar = (c: string) => `${REAL.slice(0, -1)}${c}`;

/** What a new connection of `agent` is told when it asks for a tunnel: its status and code. */
async function tunnelAnswer(agent: string): Promise<string> {
  const a = await connectAnswer(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents[agent]! },
    `localhost:${up.port}`,
  );
  return `${a.status} ${a.error}`;
}

describe("the DLP oracle", () => {
  test("the batch holding the real value is the last answer the agent gets: quarantine", async () => {
    const wrong = ["a", "b", "c", "d"].map(lastChar);
    const open = await openTunnel(
      { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
      { connect: `localhost:${up.port}` },
    );
    const closed = new Promise<void>((r) => open.once("close", () => r()));

    expect((await guess("agent-a", wrong)).status).toBe(200);
    const hit = await guess("agent-a", [...wrong.slice(0, 2), REAL]);
    expect(hit.status).toBe(403);
    expect(hit.headers).toContain("x-slapenir-error: dlp-blocked");
    // Its tunnel opened before is closed; every later batch, right or wrong, gets the same
    // refusal: nothing more is learnt.
    await closed;
    const probes = up.received.filter((x) => x.target === "/probe").length;
    for (const batch of [wrong, [REAL], [lastChar("e")]]) {
      expect((await guess("agent-a", batch)).status).not.toBe(200);
    }
    expect(up.received.filter((x) => x.target === "/probe").length).toBe(probes);
    expect(await tunnelAnswer("agent-a")).toBe("403 quarantined");
    // Another agent is served.
    expect((await h.curl([url("/b")], "agent-b")).status).toBe(200);

    const [line] = await h.auditWhere((l) => l.evt === "quarantine");
    expect(line).toMatchObject({ agent: "agent-a", kind: "dlp" });
    expect(JSON.stringify(h.auditLines)).not.toContain(REAL);
    // Kept where a restart finds it.
    const kept = JSON.parse(readFileSync(join(h.dir, "home", "quarantine.json"), "utf8"));
    expect(kept.agents).toMatchObject([{ agent: "agent-a", kind: "dlp", until: null }]);
  });

  test("an operator releases it through the admin API; then it is served again", async () => {
    const admin = `http://127.0.0.1:${h.proxy.adminPort}`;
    expect(await (await fetch(`${admin}/quarantine`)).json()).toMatchObject({
      agents: [{ agent: "agent-a" }],
    });
    // An action needs the operator's token: without it (or with another) nothing happens.
    const bare = await fetch(`${admin}/quarantine/agent-a/release`, { method: "POST" });
    expect(bare.status).toBe(401);
    expect(bare.headers.get("www-authenticate")).toBe('Bearer realm="slapenir-admin"');
    const wrong = await fetch(`${admin}/quarantine/agent-a/release`, {
      method: "POST",
      headers: { authorization: `Bearer ${"x".repeat(43)}` },
    });
    expect(wrong.status).toBe(401);
    expect((await h.curl([url("/still-held")], "agent-a")).status).not.toBe(200);
    const res = await h.adminPost("/quarantine/agent-a/release");
    expect(await res.json()).toEqual({ released: "agent-a" });
    expect((await h.adminPost("/quarantine/agent-a/release")).status).toBe(404);
    expect((await h.curl([url("/after")], "agent-a")).status).toBe(200);
  });
});

test("a violation closes and refuses only the violating agent's connections", async () => {
  const t = await openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-b"]! },
    { connect: `localhost:${up.port}` },
  );
  const reply = readAnswers(t);
  t.write(`GET /leak HTTP/1.1\r\nHost: localhost:${up.port}\r\nX-K: ${REAL}\r\n\r\n`);
  expect((await reply).toString("latin1")).toStartWith("HTTP/1.1 403");
  const held = await openTunnel(
    { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-a"]! },
    { connect: `localhost:${up.port}` },
  );
  expect(held.destroyed).toBe(false);
  // agent-b is in quarantine now; agent-a is not, and its tunnel serves.
  const r = readAnswers(held);
  held.write(`GET /a HTTP/1.1\r\nHost: localhost:${up.port}\r\n\r\n`);
  expect((await r).toString("latin1")).toStartWith("HTTP/1.1 200");
  held.destroy();
  expect(await tunnelAnswer("agent-b")).toBe("403 quarantined");
});

test("the CLI lists and releases through the running proxy's admin API", async () => {
  const cli = async (...args: string[]) => {
    await using proc = Bun.spawn(
      [process.execPath, join(import.meta.dir, "../../src/cli.ts"), ...args],
      {
        env: {
          PATH: process.env.PATH ?? "",
          SLAPENIR_HOME: join(h.dir, "home"),
          SLAPENIR_ADMIN_LISTEN: `127.0.0.1:${h.proxy.adminPort}`,
        },
        stdout: "pipe",
        stderr: "pipe",
      },
    );
    const [out, err, code] = await Promise.all([
      new Response(proc.stdout).text(),
      new Response(proc.stderr).text(),
      proc.exited,
    ]);
    return { out, err, code };
  };
  // agent-b went in above.
  const listed = await cli("quarantine", "list");
  expect(listed.code).toBe(0);
  expect(listed.out).toMatch(/^1 agent in quarantine\n {2}agent-b: dlp since \d{4}-/);
  expect(await cli("quarantine", "release", "agent-b")).toMatchObject({
    code: 0,
    out: "released agent-b\n",
  });
  expect(await cli("quarantine", "release", "agent-b")).toMatchObject({
    code: 1,
    err: "error: agent-b is not in quarantine\n",
  });
  expect((await cli("quarantine", "release", "../x")).code).toBe(2);
  expect(await tunnelAnswer("agent-b")).toStartWith("200 ");
});

test("the redactor is no oracle either: a reflection quarantines (an upstream that reverses what it is sent)", async () => {
  // An upstream that transforms content — an LLM asked to reverse or spell a string — turns the
  // guess the agent sent (reversed, so DLP cannot see it) into the real value only when the
  // guess is right; the answer's redaction would say so. The first reflection ends it.
  const rev = await startHostileUpstream(await h.upstreamCa.issue(["localhost"]));
  rev.on("/reverse", (r, w) =>
    sendLength(w, [], Buffer.from([...r.body.toString("latin1")].reverse().join(""), "latin1")),
  );
  const reversed = (s: string) => [...s].reverse().join("");
  const ask = (guess: string) =>
    h.curl(["--data-binary", reversed(guess), `https://localhost:${rev.port}/reverse`], "agent-c");
  try {
    expect((await ask(lastChar("a"))).body.toString()).toBe(lastChar("a"));
    const hit = await ask(REAL);
    expect(hit.body.toString()).toBe("[REDACTED]");
    const after = await ask(lastChar("b"));
    expect(after.status).not.toBe(200);
    expect(await tunnelAnswer("agent-c")).toBe("403 quarantined");
    const [line] = await h.auditWhere((l) => l.evt === "quarantine" && l.agent === "agent-c");
    expect(line).toMatchObject({ kind: "reflection" });
  } finally {
    await rev.stop();
  }
});

test("a reflection counts as soon as the agent is shown it: leaving the answer half-way does not escape", async () => {
  // Streamed through the worker pool (unknown length), the real value in its first part, then
  // a long pause; the agent leaves as soon as it has seen the redaction.
  const slow = await startHostileUpstream(await h.upstreamCa.issue(["localhost"]));
  slow.on("/drip", async (_r, w) => {
    await w.write(headBytes(200, "OK", [["transfer-encoding", "chunked"]]));
    await w.write(chunk(`${"x".repeat(300)} ${REAL} ${"y".repeat(300)}`));
    await w.write(chunk("z".repeat(64 * 1024)));
    await w.sleep(5_000);
    await w.end();
  });
  try {
    const t = await openTunnel(
      { port: h.port, caBundlePath: h.caBundlePath, agent: h.agents["agent-d"]! },
      { connect: `localhost:${slow.port}` },
    );
    const seen = new Promise<void>((resolve) => {
      let text = "";
      t.on("data", (d: Buffer) => {
        text += d.toString("latin1");
        if (text.includes("[REDACTED]")) resolve();
      });
    });
    t.write(`GET /drip HTTP/1.1\r\nHost: localhost:${slow.port}\r\n\r\n`);
    await seen;
    closeTunnel(t);
    const [line] = await h.auditWhere((l) => l.evt === "quarantine" && l.agent === "agent-d");
    expect(line).toMatchObject({ kind: "reflection" });
    expect(await tunnelAnswer("agent-d")).toBe("403 quarantined");
  } finally {
    await slow.stop();
  }
});
