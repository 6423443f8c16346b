// The operator console in a real browser (Debian's Chromium, driven by playwright-core)
// against a live proxy carrying traffic: the exchanges stream in as they happen — a swap and
// a redaction, a denial, a DLP refusal that quarantines an agent — the agents, credentials and
// refusals by reason are shown, an action without the operator's token is refused and with it
// releases the agent. Agent-chosen text (a path holding markup) is shown as text; no real
// value reaches the page. SLAPENIR_SCREENSHOTS=DIR keeps the screenshots (docs/ holds them).

import { afterAll, beforeAll, expect, test } from "bun:test";
import { mkdirSync, readFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type Browser, chromium, type Page } from "playwright-core";
import { missingTools } from "../containers/tool-paths.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { type EchoServer, startEchoServer } from "../support/upstream-server.ts";

const DUMMY = "sk-dummy-console-000000000000000";
const REAL = "sk-R3aL-console-7d1e2f3a4b5c6d7e";
// Chromium comes from scripts/install-test-deps.sh (npm test installs it); a machine without it
// skips the browser tests, saying so in the summary, rather than failing on a missing tool.
const skip = missingTools(["chromium"]).length > 0;
const shots = process.env.SLAPENIR_SCREENSHOTS ?? join(tmpdir(), "slapenir-console-shots");

let h: Harness;
let up: EchoServer;
let browser: Browser;
let page: Page;
const dialogs: string[] = [];

beforeAll(async () => {
  if (skip) return;
  h = await startHarness({
    agents: ["agent-a", "agent-b"],
    credentials: [
      {
        name: "model-api",
        dummy: DUMMY,
        real: REAL,
        hosts: ["localhost:*"],
        in: ["header:x-api-key"],
      },
    ],
    env: { SLAPENIR_QUARANTINE: "on", SLAPENIR_RATE_LIMIT: "off" },
  });
  // An ordinary API that echoes what it was sent: the swapped key comes back, redacted.
  up = startEchoServer(await h.upstreamCa.issue(["localhost"]));
  browser = await chromium.launch({
    executablePath: Bun.which("chromium")!,
    // Root in a container has no user namespace for Chromium's sandbox.
    args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
  });
  page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
  page.on("dialog", (d) => {
    dialogs.push(d.message());
    void d.dismiss();
  });
  await page.goto(`http://127.0.0.1:${h.proxy.adminPort}/`);
  await page.locator("#stream-state", { hasText: "live" }).waitFor({ timeout: 30_000 });
}, 60_000);

afterAll(async () => {
  await browser?.close();
  await up?.stop();
  await h?.close();
});

const url = (path: string) => `https://localhost:${up.port}${path}`;
const rowOf = (table: string, text: string) =>
  page.locator(`#${table} tr`, { hasText: text }).first();

test.skipIf(skip)(
  "exchanges stream in as they happen: a swap with its redaction, and a denial",
  async () => {
    const served = await h.curl(["-H", `x-api-key: ${DUMMY}`, url("/v1/models")], "agent-a");
    expect(served.status).toBe(200);
    expect(up.received.at(-1)!.headers).toContainEqual(["x-api-key", REAL]);
    // Refused at CONNECT (403): curl gets no answer from the host itself.
    const denied = await h.curl(["https://not-allowed.example/x"], "agent-a");
    expect(denied.code).not.toBe(0);
    // An agent chooses its path: markup in it must stay text.
    await h.curl([url("/%3Cimg%20src=x%20onerror=alert(1)%3E")], "agent-a");

    const swap = rowOf("exchanges", "/v1/models");
    await swap.waitFor({ timeout: 30_000 });
    const cells = await swap.locator("td").allInnerTexts();
    // time, agent, method, host, path, decision, reason, status, swaps, redactions, ms
    expect(cells.slice(1, 6)).toEqual([
      "agent-a",
      "GET",
      `localhost:${up.port}`,
      "/v1/models",
      "allow",
    ]);
    expect(cells[7]).toBe("200");
    expect(cells[8]).toBe("1");
    expect(Number(cells[9])).toBeGreaterThan(0);
    const deny = rowOf("exchanges", "not-allowed.example");
    await deny.waitFor({ timeout: 30_000 });
    expect(await deny.locator("td").nth(5).textContent()).toBe("deny");
    expect(await deny.locator("td").nth(6).textContent()).toBe("policy-denied");
    await rowOf("exchanges", "onerror").waitFor({ timeout: 30_000 });
    expect(await page.locator("#exchanges img").count()).toBe(0);
    expect(dialogs).toEqual([]);
  },
);

test.skipIf(skip)(
  "agents, credentials and refusals by reason; no real value anywhere in the page",
  async () => {
    await page.locator("#credentials tr", { hasText: "model-api" }).waitFor({ timeout: 30_000 });
    const cred = await rowOf("credentials", "model-api").locator("td").allInnerTexts();
    // name, kind, hosts, presented in, agents, from, state, uses
    expect(cred.slice(0, 7)).toEqual([
      "model-api",
      "token",
      "localhost:*",
      "header:x-api-key",
      "any",
      "value",
      "available",
    ]);
    // The page refreshes every two seconds: its next refresh shows the swap counted.
    const uses = rowOf("credentials", "model-api").locator("td").last();
    while ((await uses.textContent()) !== "1") await Bun.sleep(50);
    const agent = await rowOf("agents", "agent-a").locator("td").allInnerTexts();
    expect(agent[0]).toBe("agent-a");
    expect(agent[10]).not.toBe(""); // its certificate's expiry
    await rowOf("reasons", "policy-denied").waitFor({ timeout: 30_000 });
    expect(await page.content()).not.toContain(REAL);
    const json = await (
      await fetch(`http://127.0.0.1:${h.proxy.adminPort}/`, {
        headers: { accept: "application/json" },
      })
    ).text();
    expect(json).toContain('"model-api"');
    expect(json).not.toContain(REAL);
  },
);

test.skipIf(skip)(
  "a quarantined agent is released from the console, with the operator's token only",
  async () => {
    // agent-b sends the real value: refused, and quarantined.
    const leak = await h.curl(["-H", `x-api-key: ${REAL}`, url("/leak")], "agent-b");
    expect(leak.status).toBe(403);
    const release = rowOf("agents", "agent-b").getByRole("button", { name: "Release" });
    await release.waitFor({ timeout: 30_000 });
    expect(await rowOf("agents", "agent-b").locator("td").nth(8).textContent()).toContain("dlp");
    await rowOf("reasons", "dlp-blocked").waitFor({ timeout: 30_000 });
    expect((await h.curl([url("/held")], "agent-b")).status).not.toBe(200);
    mkdirSync(shots, { recursive: true });
    const png = await page.screenshot({ path: join(shots, "console.png"), fullPage: true });
    expect(png.subarray(1, 4).toString()).toBe("PNG");

    // Without the token the action is refused, and says what it needs.
    await release.click();
    await page
      .locator("#notice", { hasText: "needs the operator's token" })
      .waitFor({ timeout: 30_000 });
    expect((await h.curl([url("/still-held")], "agent-b")).status).not.toBe(200);

    const token = readFileSync(join(h.dir, "home", "admin-token"), "utf8").trim();
    await page.fill("#token", token);
    await page.click("#token-form button");
    await page.locator("#token-state", { hasText: "set" }).waitFor();
    await rowOf("agents", "agent-b").getByRole("button", { name: "Release" }).click();
    await page
      .locator("#notice", { hasText: "agent-b released from quarantine" })
      .waitFor({ timeout: 30_000 });
    expect((await h.curl([url("/free")], "agent-b")).status).toBe(200);
    const [line] = await h.auditWhere((l) => l.evt === "release" && l.agent === "agent-b");
    expect(line).toBeDefined();
    expect(await page.content()).not.toContain(token);
  },
);

test.skipIf(skip)("the live view is filtered by agent, decision and host", async () => {
  await page.fill("#f-agent", "agent-b");
  await page.click("#filter button");
  await rowOf("exchanges", "/free").waitFor({ timeout: 30_000 });
  await h.curl([url("/from-a")], "agent-a");
  await h.curl([url("/from-b")], "agent-b");
  await rowOf("exchanges", "/from-b").waitFor({ timeout: 30_000 });
  const agents = await page.locator("#exchanges tr td:nth-child(2)").allInnerTexts();
  expect(new Set(agents)).toEqual(new Set(["agent-b"]));
});
