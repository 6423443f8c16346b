// `slapenir forward` and `slapenir agent env` as a new user runs them (issue 18): the CLI, in
// its own process, forwards a loopback port into the agent's mTLS to the proxy, and the
// environment `agent env` prints is all the tools need — curl, Python requests, pip, git, Node
// and Bun, none of them given a client certificate. Each reaches an upstream through the proxy
// (the proxy's audit log names the agent), trusting the interception CA from that environment.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { missingTools, s6RcDir, waitFor } from "../containers/tool-paths.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { runProcess } from "../support/run-process.ts";

const CLI = join(import.meta.dir, "../../src/cli.ts");
const DUMMY = "fwd-dummy-0000000000000001";
const REAL = "fwd-R3aL-token-00000000001";

let h: Harness;
let upstream: ReturnType<typeof Bun.serve>;
let forwarder: ReturnType<typeof Bun.spawn>;
let env: Record<string, string>;
let work: string;
/** What the upstream saw: path and Authorization, per request. */
const seen: { path: string; auth: string | null }[] = [];

/** A git repository served over dumb HTTP, as static files. */
async function bareRepo(dir: string): Promise<string> {
  const run = async (args: string[], cwd?: string) => {
    const p = Bun.spawn(["git", ...args], { cwd, stdout: "ignore", stderr: "pipe" });
    if ((await p.exited) !== 0) throw new Error(await new Response(p.stderr).text());
  };
  const seed = join(dir, "seed");
  await run(["init", "-q", "-b", "main", seed]);
  await Bun.write(join(seed, "README"), "through the forwarder\n");
  await run(["add", "README"], seed);
  await run(["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "seed"], seed);
  const bare = join(dir, "repo.git");
  await run(["clone", "-q", "--bare", seed, bare]);
  await run(["--git-dir", bare, "update-server-info"]);
  return bare;
}

beforeAll(async () => {
  work = mkdtempSync(join(tmpdir(), "slapenir-forward-"));
  h = await startHarness({
    credentials: [{ name: "tools", dummy: DUMMY, real: REAL, hosts: ["tools.test:*"] }],
    allow: ["tools.test:*"],
    names: ["tools.test"],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  const bare = await bareRepo(work);
  const cert = await h.upstreamCa.issue(["tools.test"]);
  upstream = Bun.serve({
    hostname: "127.0.0.1",
    port: 0,
    tls: { cert: cert.certPem, key: cert.keyPem },
    async fetch(req) {
      const path = new URL(req.url).pathname;
      seen.push({ path, auth: req.headers.get("authorization") });
      if (path.startsWith("/repo.git/")) {
        const f = Bun.file(join(bare, path.slice("/repo.git/".length)));
        return (await f.exists()) ? new Response(f) : new Response("no", { status: 404 });
      }
      if (path === "/simple/tinypkg/") {
        // A PEP 503 index with no files: pip reads it and finds nothing to install.
        return new Response("<!DOCTYPE html><html><body></body></html>", {
          headers: { "content-type": "text/html" },
        });
      }
      return Response.json({ hello: path, auth: req.headers.get("authorization") });
    },
  });
  // The forwarder, as the README runs it: the CLI, the agent's files under SLAPENIR_HOME.
  const home = dirname(h.caBundlePath);
  const cliEnv = { PATH: process.env.PATH ?? "", SLAPENIR_HOME: home };
  forwarder = Bun.spawn(
    [
      "bun",
      CLI,
      "forward",
      "agent-a",
      "--listen",
      "127.0.0.1:0",
      "--proxy",
      `127.0.0.1:${h.port}`,
      "--name",
      "localhost",
    ],
    { env: cliEnv, stdout: "pipe", stderr: "pipe" },
  );
  const reader = (forwarder.stdout as ReadableStream<Uint8Array>).getReader();
  let out = "";
  while (!/forwarding http:\/\/127\.0\.0\.1:(\d+)/.test(out)) {
    const { value, done } = await reader.read();
    if (done)
      throw new Error(
        `forward exited: ${await new Response(forwarder.stderr as ReadableStream).text()}`,
      );
    out += new TextDecoder().decode(value);
  }
  reader.releaseLock();
  const port = /forwarding http:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]!;
  // The environment, exactly as `agent env` prints it.
  const p = Bun.spawn(["bun", CLI, "agent", "env", "agent-a", "--forward", `127.0.0.1:${port}`], {
    env: cliEnv,
    stdout: "pipe",
  });
  const text = await new Response(p.stdout).text();
  env = { PATH: process.env.PATH ?? "", HOME: work };
  for (const m of text.matchAll(/^export (.+?)(?:\s+#.*)?$/gm)) {
    for (const kv of m[1]!.matchAll(/(\w+)=('[^']*'|\S+)/g))
      env[kv[1]!] = kv[2]!.replace(/^'|'$/g, "");
  }
  expect(env.HTTPS_PROXY).toBe(`http://127.0.0.1:${port}`);
}, 60_000);

afterAll(async () => {
  forwarder?.kill();
  upstream?.stop(true);
  await h?.close();
  rmSync(work, { recursive: true, force: true });
});

const url = (path: string) => `https://tools.test:${upstream.port}${path}`;

const run = (cmd: string[], extra: Record<string, string> = {}) =>
  runProcess(cmd, { env: { ...env, ...extra }, cwd: work });

/** The request reached the upstream as agent-a's: the dummy became the real token. */
const arrived = (path: string) =>
  expect(seen.find((s) => s.path === path)?.auth).toBe(`Bearer ${REAL}`);

describe("tools that cannot present a proxy client certificate, through `slapenir forward`", () => {
  test("curl", async () => {
    const r = await run(["curl", "-sS", "-H", `Authorization: Bearer ${DUMMY}`, url("/curl")]);
    expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: "" });
    expect(JSON.parse(r.out)).toEqual({ hello: "/curl", auth: "Bearer [REDACTED]" });
    arrived("/curl");
  });

  test("Python requests", async () => {
    const r = await run([
      "python3",
      "-c",
      `import requests; r = requests.get("${url("/requests")}", headers={"Authorization": "Bearer ${DUMMY}"}); print(r.status_code, r.json()["hello"])`,
    ]);
    expect(r.err).toBe("");
    expect(r.out.trim()).toBe("200 /requests");
    arrived("/requests");
  });

  test("pip reads a package index", async () => {
    const r = await run(
      [
        "python3",
        "-m",
        "pip",
        "download",
        "--no-deps",
        "-d",
        join(work, "dl"),
        "--index-url",
        url("/simple/"),
        "tinypkg",
      ],
      { PIP_DISABLE_PIP_VERSION_CHECK: "1", PIP_NO_CACHE_DIR: "1" },
    );
    // The index was read through the proxy (no certificate error); it lists nothing to get.
    expect(r.err).not.toMatch(/SSL|certificate|ProxyError/i);
    expect(r.err).toContain("No matching distribution found for tinypkg");
    expect(seen.some((s) => s.path === "/simple/tinypkg/")).toBe(true);
  });

  test("git clone", async () => {
    const r = await run(["git", "clone", "-q", url("/repo.git"), join(work, "clone")]);
    expect({ code: r.code, err: r.err }).toEqual({ code: 0, err: "" });
    expect(await Bun.file(join(work, "clone", "README")).text()).toBe("through the forwarder\n");
  });

  test("Node (https with an HTTP proxy agent) and Bun (fetch)", async () => {
    const node = await run([
      "node",
      "-e",
      `const { HttpsProxyAgent } = require(${JSON.stringify(join(import.meta.dir, "../../node_modules/https-proxy-agent"))});
       require("node:https").get("${url("/node")}", { agent: new HttpsProxyAgent(process.env.HTTPS_PROXY), headers: { authorization: "Bearer ${DUMMY}" } },
         (res) => { let b = ""; res.on("data", (d) => (b += d)); res.on("end", () => console.log(res.statusCode, JSON.parse(b).hello)); });`,
    ]);
    expect({ out: node.out.trim(), err: node.err }).toEqual({ out: "200 /node", err: "" });
    arrived("/node");
    const bun = await run([
      "bun",
      "-e",
      `const r = await fetch("${url("/bun")}", { headers: { authorization: "Bearer ${DUMMY}" } }); console.log(r.status, (await r.json()).hello);`,
    ]);
    expect({ out: bun.out.trim(), err: bun.err }).toEqual({ out: "200 /bun", err: "" });
    arrived("/bun");
  });

  test("each request was agent-a's in the proxy's audit log", async () => {
    const lines = await h.auditWhere((l) => l.evt === "request" && l.agent === "agent-a", 5);
    expect(lines.length).toBeGreaterThanOrEqual(5);
  });
});

describe("one agent certificate directory, as the agent container reads it", () => {
  test("agent issue --out writes it; the container's socat forwarder and forward --certs both use it", async () => {
    if (missingTools(["socat"]).length > 0) return;
    const home = dirname(h.caBundlePath);
    const cliEnv = { PATH: process.env.PATH ?? "", SLAPENIR_HOME: home };
    const certs = join(work, "certs-agent-c");
    const issued = await runProcess(["bun", CLI, "agent", "issue", "agent-c", "--out", certs], {
      env: cliEnv,
    });
    expect(issued.code).toBe(0);
    const free = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    const port = free.port;
    free.stop(true);
    // The container's own run script (s6 longrun), unchanged, on that directory.
    const socat = Bun.spawn(["sh", join(s6RcDir, "proxy-forwarder", "run")], {
      env: {
        PATH: process.env.PATH ?? "",
        SLAPENIR_CERT_DIR: certs,
        SLAPENIR_FORWARD_LISTEN: `127.0.0.1:${port}`,
        SLAPENIR_PROXY_ADDR: `127.0.0.1:${h.port}`,
        SLAPENIR_PROXY_NAME: "localhost",
      },
      stdout: "ignore",
      stderr: "pipe",
    });
    try {
      const through = (proxyPort: number, path: string) =>
        waitFor(
          `curl through the forwarder on ${proxyPort}`,
          async () => {
            const r = await runProcess(
              ["curl", "-sS", "-H", `Authorization: Bearer ${DUMMY}`, url(path)],
              {
                env: {
                  PATH: process.env.PATH ?? "",
                  HTTPS_PROXY: `http://127.0.0.1:${proxyPort}`,
                  CURL_CA_BUNDLE: join(certs, "ca-bundle.pem"),
                },
              },
            );
            return r.code === 0 ? r : null;
          },
          30_000,
        );
      expect(JSON.parse((await through(port, "/socat")).out).auth).toBe("Bearer [REDACTED]");
      arrived("/socat");
    } finally {
      socat.kill();
      await socat.exited;
    }
    const fwd = Bun.spawn(
      ["bun", CLI, "forward", "agent-c", "--certs", certs, "--listen", "127.0.0.1:0"].concat([
        "--proxy",
        `127.0.0.1:${h.port}`,
        "--name",
        "localhost",
      ]),
      { env: cliEnv, stdout: "pipe", stderr: "pipe" },
    );
    try {
      const reader = (fwd.stdout as ReadableStream<Uint8Array>).getReader();
      let out = "";
      while (!/forwarding http:\/\/127\.0\.0\.1:(\d+)/.test(out)) {
        const { value, done } = await reader.read();
        if (done) throw new Error("forward --certs exited");
        out += new TextDecoder().decode(value);
      }
      const fport = Number(/forwarding http:\/\/127\.0\.0\.1:(\d+)/.exec(out)![1]);
      const r = await runProcess(
        ["curl", "-sS", "-H", `Authorization: Bearer ${DUMMY}`, url("/certs-dir")],
        {
          env: {
            PATH: process.env.PATH ?? "",
            HTTPS_PROXY: `http://127.0.0.1:${fport}`,
            CURL_CA_BUNDLE: join(certs, "ca-bundle.pem"),
          },
        },
      );
      expect(r.code).toBe(0);
      arrived("/certs-dir");
    } finally {
      fwd.kill();
    }
    const lines = await h.auditWhere((l) => l.evt === "request" && l.agent === "agent-c", 2);
    expect(lines.map((l) => l.path)).toEqual(["/socat", "/certs-dir"]);
  }, 60_000);
});
