// A git forge as the store (issue 15, class 1: `git clone` packfiles are a form no response
// redactor can read). The upstream is `git http-backend` behind Basic auth that accepts only
// the real token, like a forge; the agent is the real git client, through the proxy with its
// certificate, holding only its dummy. It commits its dummy (as written, JSON-escaped, in
// base64) into a file, pushes with compression off (the pack then carries the bytes as they
// are), and clones the repository back. The push must work (the dummy is swapped where it is
// presented: the Basic password), the forge must have stored the dummy, and neither the forge's
// store nor anything the agent reads back may hold the real token.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, readdirSync, readFileSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gitBackend } from "../support/git-backend.ts";
import { carries } from "../support/hostile-oracle.ts";
import {
  type HostileRequest,
  type HostileUpstream,
  headBytes,
  startHostileUpstream,
} from "../support/hostile-upstream.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";

const DUMMY = "ghp_gitdummy0000000000000000000000000001";
const REAL = "ghp_G1tR3aLt0k3nAbCdEfGh1jKlMn0pQrStUv2w";

let h: Harness;
let up: HostileUpstream;
let root: string;
let work: string;
const seen: HostileRequest[] = [];

/** git, run without blocking (the proxy and the forge live in this process). */
async function git(args: string[], cwd?: string): Promise<string> {
  await using proc = Bun.spawn(["git", ...args], {
    ...(cwd ? { cwd } : {}),
    env: {
      PATH: process.env.PATH ?? "/usr/bin:/bin",
      HOME: work,
      GIT_CONFIG_NOSYSTEM: "1",
      GIT_TERMINAL_PROMPT: "0",
    },
    stdout: "pipe",
    stderr: "pipe",
    timeout: 40_000,
  });
  const [out, err, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  // stderr is the forge's and git's own text: it never holds the real token (checked).
  if (code !== 0)
    throw new Error(
      `git ${args.find((a) => !a.startsWith("-")) ?? ""} exited ${code}: ${carries(err, REAL) ? "[stderr withheld]" : err.trim()}`,
    );
  return out;
}

/** The agent's git: through the proxy with its certificate, trusting the proxy's CA. */
function agentGit(args: string[], cwd?: string): Promise<string> {
  const a = h.agents["agent-a"]!;
  return git(
    [
      "-c",
      `http.proxy=https://localhost:${h.port}`,
      "-c",
      `http.proxySSLCAInfo=${h.caBundlePath}`,
      "-c",
      `http.proxySSLCert=${a.certPath}`,
      "-c",
      `http.proxySSLKey=${a.keyPath}`,
      "-c",
      `http.sslCAInfo=${h.caBundlePath}`,
      "-c",
      "user.name=agent",
      "-c",
      "user.email=agent@agent.test",
      ...args,
    ],
    cwd,
  );
}

/** Every file under `dir`, as bytes (objects, packs, refs, the work tree). */
function everyFile(dir: string): Buffer[] {
  const out: Buffer[] = [];
  for (const name of readdirSync(dir)) {
    const p = join(dir, name);
    if (statSync(p).isDirectory()) out.push(...everyFile(p));
    else out.push(readFileSync(p));
  }
  return out;
}

/** Every object of a repository, decompressed, as git itself reads it. */
async function everyObject(gitDir: string): Promise<string> {
  const list = await git(["--git-dir", gitDir, "cat-file", "--batch-all-objects", "--batch-check"]);
  const objects: string[] = [];
  for (const l of list.trim().split("\n")) {
    objects.push(await git(["--git-dir", gitDir, "cat-file", "-p", l.split(" ")[0]!]));
  }
  return objects.join("\n");
}

beforeAll(async () => {
  h = await startHarness({
    credentials: [{ name: "forge", dummy: DUMMY, real: REAL, hosts: ["git.test:*"] }],
    allow: ["git.test:*"],
    names: ["git.test"],
  });
  work = mkdtempSync(join(tmpdir(), "slapenir-git-"));
  root = join(work, "forge");
  await git(["init", "-q", "--bare", "-b", "main", join(root, "project.git")]);
  await git(["--git-dir", join(root, "project.git"), "config", "http.receivepack", "true"]);
  const seed = join(work, "seed");
  await git(["init", "-q", "-b", "main", seed]);
  writeFileSync(join(seed, "README"), "seed\n");
  await git(["add", "README"], seed);
  await git(["-c", "user.name=s", "-c", "user.email=s@s", "commit", "-q", "-m", "seed"], seed);
  await git(["push", "-q", join(root, "project.git"), "main"], seed);

  up = await startHostileUpstream(await h.upstreamCa.issue(["git.test"]));
  up.on("/", async (r, w) => {
    seen.push(r);
    const auth = r.headers.find(([k]) => k.toLowerCase() === "authorization")?.[1] ?? "";
    const m = /^Basic (.+)$/.exec(auth);
    const pass = m ? Buffer.from(m[1]!, "base64").toString().split(":")[1] : undefined;
    if (pass !== REAL) {
      await w.write(
        headBytes(401, "Unauthorized", [
          ["www-authenticate", 'Basic realm="forge"'],
          ["content-length", "0"],
        ]),
      );
      return;
    }
    const url = new URL(r.target, "https://git.test");
    const req = new Request(url.href, {
      method: r.method,
      headers: r.headers,
      ...(r.body.length > 0 ? { body: r.body } : {}),
    });
    const res = await gitBackend(root, req, url, r.body, "agent");
    const body = Buffer.from(await res.arrayBuffer());
    const fields: [string, string][] = [...res.headers].filter(
      ([k]) => k !== "content-length" && k !== "transfer-encoding",
    );
    fields.push(["content-length", String(body.length)]);
    await w.write(Buffer.concat([headBytes(res.status, "OK", fields), body]));
  });
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

describe("a git forge through the proxy, the agent holding only its dummy", () => {
  const content = [
    `token = ${DUMMY}`,
    `json = ${JSON.stringify({ t: DUMMY }).replace("g", "\\u0067")}`,
    `b64 = ${Buffer.from(DUMMY).toString("base64")}`,
    "",
  ].join("\n");

  // git asks this helper for the password: the dummy, as a forge token is presented.
  const HELPER = `!f() { test "$1" = get && printf 'username=x-access-token\\npassword=${DUMMY}\\n'; }; f`;
  /** The agent clones the forge's repository into `name` under the work directory. */
  const cloneAs = async (name: string) => {
    const dir = join(work, name);
    await agentGit([
      "-c",
      `credential.helper=${HELPER}`,
      "clone",
      "-q",
      `https://git.test:${up.port}/project.git`,
      dir,
    ]);
    return dir;
  };

  test("push with compression off: the forge stores the dummy, never the real token", async () => {
    const clone = await cloneAs("agent-clone");
    writeFileSync(join(clone, "notes.txt"), content);
    await agentGit(["add", "notes.txt"], clone);
    await agentGit(["commit", "-q", "-m", `notes ${DUMMY}`], clone);
    await agentGit(
      [
        "-c",
        "core.compression=0",
        "-c",
        "pack.compression=0",
        "-c",
        `credential.helper=${HELPER}`,
        "push",
        "-q",
        "origin",
        "main",
      ],
      clone,
    );
    const bare = join(root, "project.git");
    // Stored as the agent wrote it.
    expect(await git(["--git-dir", bare, "show", "main:notes.txt"])).toBe(content);
    expect((await git(["--git-dir", bare, "log", "-1", "--format=%s", "main"])).trim()).toBe(
      `notes ${DUMMY}`,
    );
    // Nothing the forge holds carries the real token, raw or in any encoding the oracle knows.
    expect(carries(await everyObject(bare), REAL)).toBe(false);
    expect(everyFile(bare).some((f) => carries(f, REAL))).toBe(false);
    // The pushed pack carried the dummy as written (compression off), and it was not swapped.
    const packs = seen.filter((r) => r.target.includes("git-receive-pack") && r.method === "POST");
    expect(packs.length).toBeGreaterThan(0);
    expect(packs.some((r) => r.body.includes(DUMMY))).toBe(true);
    expect(packs.some((r) => r.body.includes(REAL))).toBe(false);
  });

  test("clone back: the agent reads the dummy, and no byte of the real token", async () => {
    const again = await cloneAs("agent-again");
    expect(readFileSync(join(again, "notes.txt"), "utf8")).toBe(content);
    expect(everyFile(again).some((f) => carries(f, REAL))).toBe(false);
    expect(carries(await everyObject(join(again, ".git")), REAL)).toBe(false);
    // The forge served only requests that presented the real token where git presents it.
    const served = seen.filter((r) =>
      r.headers.some(([k, v]) => k.toLowerCase() === "authorization" && v.startsWith("Basic ")),
    );
    expect(served.length).toBeGreaterThan(2);
  });
});
