// The README's start path: `bun src/main.ts` (what `npm start` runs after building the WASM)
// on embedded defaults creates its PKI, listens, serves /health, /metrics and /status on the
// admin listener, and stops cleanly on SIGTERM. Bad configuration exits 2 naming the setting.

import { describe, expect, test } from "bun:test";
import { existsSync, readFileSync } from "node:fs";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";

const MAIN = join(import.meta.dir, "../../src/main.ts");

/** Running (a zombie no one has reaped yet has exited). */
function alive(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0] !== "Z";
  } catch {
    return false;
  }
}

async function readUntil(
  stream: ReadableStream<Uint8Array>,
  re: RegExp,
  ms: number,
): Promise<string> {
  const reader = stream.getReader();
  const dec = new TextDecoder();
  let text = "";
  const deadline = Date.now() + ms;
  while (!re.test(text)) {
    const left = deadline - Date.now();
    if (left <= 0) break;
    const r = await Promise.race([
      reader.read(),
      Bun.sleep(left).then(() => ({ done: true, value: undefined })),
    ]);
    if (r.done) break;
    text += dec.decode(r.value);
  }
  reader.releaseLock();
  return text;
}

function spawnMain(home: string, env: Record<string, string> = {}) {
  return Bun.spawn([process.execPath, MAIN], {
    env: {
      PATH: process.env.PATH ?? "",
      SLAPENIR_HOME: home,
      SLAPENIR_LISTEN: "127.0.0.1:0",
      SLAPENIR_ADMIN_LISTEN: "127.0.0.1:0",
      ...env,
    },
    stdout: "pipe",
    stderr: "pipe",
  });
}

describe("bun src/main.ts", () => {
  test("starts on embedded defaults, serves admin endpoints, stops on SIGTERM", async () => {
    const home = await mkdtemp(join(tmpdir(), "slapenir-start-"));
    try {
      await using proc = spawnMain(home);
      const banner = await readUntil(proc.stderr, /admin on http:\/\/[^\s]+/, 20_000);
      const admin = /admin on (http:\/\/[^\s]+)/.exec(banner)?.[1];
      expect(admin).toBeDefined();
      expect(banner).toContain("every destination is denied");
      for (const f of ["root-ca.crt", "interception-ca.crt", "server.crt", "ca-bundle.pem"]) {
        expect(existsSync(join(home, f))).toBe(true);
      }
      const health = await fetch(`${admin}/health`);
      expect(health.status).toBe(200);
      expect(((await health.json()) as { status: string }).status).toBe("ok");
      const metrics = await (await fetch(`${admin}/metrics`)).text();
      expect(metrics).toContain("slapenir_requests_total");
      expect(metrics).toContain("slapenir_matcher_queue_depth");
      expect(metrics).toContain("slapenir_leaf_cert_cache_entries 0");
      const status = await fetch(`${admin}/status`);
      expect(status.headers.get("content-type")).toContain("text/html");
      // The embedded defaults' connection caps, as an operator reads them.
      const page = await status.text();
      expect(page).toContain(
        "<th>agent connections</th><td>0 (at most 1024 in all, 64 per agent)</td>",
      );
      // The memory guard: the container's limit, or none outside a limited one.
      expect(page).toMatch(
        /<th>memory<\/th><td>(no limit known \(not in a memory-limited container\)|\d+ MiB of \d+ MiB; stalled connections are shed at 80 %)<\/td>/,
      );
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
      const out = await new Response(proc.stdout).text();
      const events = out
        .split("\n")
        .filter(Boolean)
        .map((l) => JSON.parse(l).evt);
      expect(events).toContain("start");
      expect(events).toContain("stop");
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  }, 30_000);

  for (const variable of ["SLAPENIR_LISTEN", "SLAPENIR_ADMIN_LISTEN"]) {
    test(`a ${variable} address already in use: exits 2 naming the address, the cause and the variable`, async () => {
      const home = await mkdtemp(join(tmpdir(), "slapenir-busy-"));
      await using taken = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
      try {
        await using proc = spawnMain(home, { [variable]: `127.0.0.1:${taken.port}` });
        const code = await proc.exited;
        const err = await new Response(proc.stderr).text();
        expect(code).toBe(2);
        expect(err).toContain(
          `slapenir: ${variable}: cannot listen on 127.0.0.1:${taken.port}: the address is already in use`,
        );
        expect(err).toContain(`choose another with ${variable}`);
      } finally {
        await rm(home, { recursive: true, force: true });
      }
    }, 20_000);
  }

  test("SLAPENIR_CONFIG: SIGHUP reloads the file; a bad one is refused naming its field", async () => {
    const home = await mkdtemp(join(tmpdir(), "slapenir-hup-"));
    const file = join(home, "slapenir.yaml");
    try {
      await writeFile(file, "allow: [example.com]\n");
      await using proc = spawnMain(home, { SLAPENIR_CONFIG: file });
      const banner = await readUntil(proc.stderr, /reloaded when it changes/, 20_000);
      expect(banner).toContain(`configuration ${file}`);
      expect(banner).toContain("egress allowlist: 1 rule(s)");
      // Written without a change the watcher would act on first: the file's digest is what
      // it was at start, so only the signal reloads it.
      await writeFile(file, "allow: [example.com]\nalow: [x.com]\n");
      proc.kill("SIGHUP");
      const err = await readUntil(proc.stderr, /keeping the running configuration/, 20_000);
      expect(err).toContain(
        `slapenir: ${file}: unknown field 'alow'; keeping the running configuration`,
      );
      proc.kill("SIGTERM");
      expect(await proc.exited).toBe(0);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  }, 30_000);

  test("a proxy whose parent exits (npm, on SIGHUP) drains and stops instead of running orphaned", async () => {
    const home = await mkdtemp(join(tmpdir(), "slapenir-orphan-"));
    try {
      // A shell stands in for npm: the proxy is its child; the shell dies of SIGHUP.
      await using parent = Bun.spawn(["sh", "-c", `"${process.execPath}" "${MAIN}" & wait`], {
        env: {
          PATH: process.env.PATH ?? "",
          SLAPENIR_HOME: home,
          SLAPENIR_LISTEN: "127.0.0.1:0",
          SLAPENIR_ADMIN_LISTEN: "127.0.0.1:0",
        },
        stdout: "ignore",
        stderr: "pipe",
      });
      await readUntil(parent.stderr, /admin on http/, 20_000);
      const pid = Number((await readFile(join(home, "proxy.pid"), "utf8")).trim());
      expect(alive(pid)).toBe(true);
      parent.kill("SIGHUP");
      await parent.exited;
      while (alive(pid)) await Bun.sleep(50);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  }, 30_000);

  const bad: [string, Record<string, string>, string][] = [
    ["listen address", { SLAPENIR_LISTEN: "nonsense" }, "SLAPENIR_LISTEN"],
    ["allow rule", { SLAPENIR_ALLOW: "exa mple.com" }, "SLAPENIR_ALLOW[0]"],
    ["secrets file", { TOKENS_JSON: "/nonexistent/tokens.json" }, "TOKENS_JSON"],
    ["configuration file", { SLAPENIR_CONFIG: "/nonexistent/slapenir.yaml" }, "SLAPENIR_CONFIG"],
  ];
  for (const [name, env, where] of bad) {
    test(`bad ${name}: exits with an error naming ${where}`, async () => {
      const home = await mkdtemp(join(tmpdir(), "slapenir-bad-"));
      try {
        await using proc = spawnMain(home, env);
        const code = await proc.exited;
        const err = await new Response(proc.stderr).text();
        expect(code).not.toBe(0);
        expect(err).toContain(where);
      } finally {
        await rm(home, { recursive: true, force: true });
      }
    }, 20_000);
  }
});
