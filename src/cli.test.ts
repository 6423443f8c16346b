import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import tls from "node:tls";

const CLI = join(import.meta.dir, "cli.ts");
let dir: string;
let home: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), "slapenir-cli-"));
  home = join(dir, "home");
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function cli(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  await using proc = Bun.spawn([process.execPath, CLI, ...args], {
    env: { PATH: process.env.PATH ?? "", SLAPENIR_HOME: home, ...env },
    cwd: dir,
    stdout: "pipe",
    stderr: "pipe",
  });
  const [stdout, stderr, code] = await Promise.all([
    new Response(proc.stdout).text(),
    new Response(proc.stderr).text(),
    proc.exited,
  ]);
  return { code, stdout, stderr };
}

describe("embedded PKI commands", () => {
  test("init creates the PKI, then finds it valid", async () => {
    const first = await cli(["init"]);
    expect(first).toMatchObject({ code: 0, stderr: "" });
    expect(first.stdout).toContain(
      "created: root-ca.crt, interception-ca.crt, server.crt, ca-bundle.pem",
    );
    expect(first.stdout).toContain(`agents must trust: ${join(home, "ca-bundle.pem")}`);
    const second = await cli(["init"]);
    expect(second.stdout).toStartWith("embedded PKI is present and valid\n");
  });

  test("ca bundle prints exactly the root certificate", async () => {
    const r = await cli(["ca", "bundle"]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(await readFile(join(home, "ca-bundle.pem"), "utf8"));
    expect(r.stdout).not.toContain("PRIVATE KEY");
  });

  test("agent issue writes cert, key and bundle, and prints paths and a curl line", async () => {
    const out = join(dir, "agent-out");
    const r = await cli(["agent", "issue", "agent-a", "--days", "3", "--out", "agent-out"]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    // --out DIR: one agent's certificate directory, the container's layout.
    const certPath = join(out, "agent.crt");
    const keyPath = join(out, "agent.key");
    const bundle = join(out, "ca-bundle.pem");
    expect(readFileSync(join(out, "root_ca.crt"), "utf8")).toBe(
      readFileSync(join(home, "root-ca.crt"), "utf8"),
    );
    for (const line of [`certificate: ${certPath}`, `key: ${keyPath}`, `ca bundle: ${bundle}`]) {
      expect(r.stdout).toContain(line);
    }
    expect(r.stdout).toContain(
      `curl --proxy https://127.0.0.1:8443 --proxy-cacert ${bundle} --proxy-cert ${certPath} --proxy-key ${keyPath} --cacert ${bundle} https://example.com/`,
    );
    expect(r.stdout).not.toContain("PRIVATE KEY");
    for (const f of [certPath, keyPath, bundle]) expect(existsSync(f)).toBe(true);
    const verify = execFileSync(
      "openssl",
      ["verify", "-purpose", "sslclient", "-CAfile", bundle, certPath],
      {
        encoding: "utf8",
      },
    );
    expect(verify).toBe(`${certPath}: OK\n`);
  });

  test("the printed curl line completes mTLS with a proxy using the server certificate", async () => {
    const r = await cli(["agent", "issue", "curl-agent"]);
    const line = r.stdout.split("\n").find((l) => l.trimStart().startsWith("curl "))!;
    // A stand-in proxy: the embedded server certificate, client certificates required; it
    // names the client it saw in a 403 to CONNECT, which curl reports.
    const server = tls.createServer(
      {
        cert: await readFile(join(home, "server.crt"), "utf8"),
        key: await readFile(join(home, "server.key"), "utf8"),
        ca: await readFile(join(home, "ca-bundle.pem"), "utf8"),
        requestCert: true,
        rejectUnauthorized: true,
      },
      (socket) => {
        const cn = socket.getPeerCertificate().subject?.CN;
        socket.once("data", () =>
          socket.end(`HTTP/1.1 403 Forbidden\r\nX-Seen-Agent: ${cn}\r\nContent-Length: 0\r\n\r\n`),
        );
      },
    );
    await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
    try {
      const port = (server.address() as AddressInfo).port;
      const args = line.trim().split(/\s+/).slice(1);
      args[args.indexOf("--proxy") + 1] = `https://127.0.0.1:${port}`;
      await using proc = Bun.spawn(["curl", "-sS", "-v", "--max-time", "10", ...args], {
        stdout: "pipe",
        stderr: "pipe",
      });
      const [stderr] = await Promise.all([new Response(proc.stderr).text(), proc.exited]);
      expect(stderr).toContain("X-Seen-Agent: curl-agent");
      expect(stderr).toContain("CONNECT tunnel failed, response 403");
    } finally {
      server.close();
    }
  });

  test("bad input: usage errors exit 2, bad names and bad config exit 1", async () => {
    expect((await cli([])).code).toBe(2);
    expect(await cli(["agent", "issue"])).toMatchObject({
      code: 2,
      stderr: expect.stringContaining("needs a NAME"),
    });
    expect(await cli(["agent", "issue", "x", "--days", "ten"])).toMatchObject({ code: 2 });
    expect(await cli(["frobnicate"])).toMatchObject({
      code: 2,
      stderr: expect.stringContaining("unknown command"),
    });
    expect(await cli(["agent", "issue", "bad/name"])).toMatchObject({
      code: 1,
      stderr: expect.stringMatching(/^error: agent name must match/),
    });
    expect(await cli(["init"], { SLAPENIR_LISTEN: "nope" })).toMatchObject({
      code: 1,
      stderr:
        "error: SLAPENIR_LISTEN: must be host:port (e.g. 127.0.0.1:8443, [::]:443, 0.0.0.0:443)\n",
    });
  });

  test("a garbled root gives an error naming the file", async () => {
    const broken = join(dir, "broken");
    await cli(["init"], { SLAPENIR_HOME: broken });
    await writeFile(join(broken, "root-ca.crt"), "garbage");
    expect(await cli(["ca", "bundle"], { SLAPENIR_HOME: broken })).toMatchObject({
      code: 1,
      stdout: "",
      stderr: `error: ${join(broken, "root-ca.crt")} holds no PEM 'CERTIFICATE' block\n`,
    });
  });

  test("Step-CA mode refuses to issue agent certificates", async () => {
    const certs = join(dir, "stepcerts");
    await mkdir(certs, { recursive: true });
    for (const f of ["root_ca.crt", "proxy.crt", "proxy.key"]) await writeFile(join(certs, f), "x");
    const r = await cli(["agent", "issue", "a"], { CERT_PATH: certs });
    expect(r.code).toBe(1);
    expect(r.stderr).toContain("Step-CA mode");
  });
});

describe("secrets check", () => {
  const REAL = "REAL-value-never-printed-42";
  const DUMMY = "DUMMY-value-fine-to-have-7";

  test("a valid file: log-safe summary, exit 0", async () => {
    const file = join(dir, "good.json");
    await writeFile(
      file,
      JSON.stringify({
        credentials: [
          {
            name: "openai",
            dummy: DUMMY,
            real: REAL,
            hosts: ["api.openai.com"],
            require: true,
            inUrl: "deny",
          },
        ],
      }),
    );
    const r = await cli(["secrets", "check", file]);
    expect(r).toEqual({
      code: 0,
      stdout: `ok: 1 credential\n  openai (token): dummy ${DUMMY.length} B, real ${REAL.length} B, hosts api.openai.com, any agent, in header:authorization, require, not in URLs\n`,
      stderr: "",
    });
  });

  test("sources are read once and reported — what, when it expires, or why it failed — never their values", async () => {
    const tokenFile = join(dir, "sourced-token");
    await writeFile(tokenFile, REAL);
    const file = join(dir, "sourced.json");
    await writeFile(
      file,
      JSON.stringify({
        credentials: [
          { name: "fromfile", dummy: DUMMY, source: { file: tokenFile }, hosts: ["a.example"] },
          {
            name: "fromcmd",
            dummy: `${DUMMY}-2`,
            source: { command: ["sh", "-c", `echo ${REAL}-printed; exit 1`] },
            hosts: ["b.example"],
          },
        ],
      }),
    );
    const r = await cli(["secrets", "check", file]);
    expect(r.code).toBe(1);
    expect(r.stdout).toBe(
      "error: 2 credentials\n" +
        `  fromfile (token): dummy ${DUMMY.length} B, real from file ${tokenFile} (read ok), hosts a.example, any agent, in header:authorization\n` +
        `  fromcmd (token): dummy ${DUMMY.length + 2} B, real from command sh (2 arguments) (FAILED: command sh exited with 1), hosts b.example, any agent, in header:authorization\n`,
    );
    expect(r.stdout + r.stderr).not.toContain(REAL);
  });

  test("an invalid file: the error names the entry and field, exit 1, no value printed", async () => {
    const file = join(dir, "bad.json");
    await writeFile(
      file,
      JSON.stringify({
        credentials: [
          { name: "gh", dummy: DUMMY, real: REAL, hosts: ["*.github.com", "bad host"] },
        ],
      }),
    );
    const r = await cli(["secrets", "check", file]);
    expect(r).toEqual({
      code: 1,
      stdout: "",
      stderr: `error: secrets file ${file}: credentials[0] (gh).hosts[1]: is not a valid host (invalid character in host)\n`,
    });
    const dup = join(dir, "dup.json");
    await writeFile(
      dup,
      JSON.stringify({
        credentials: [
          { name: "a", dummy: DUMMY, real: REAL, hosts: ["a.example"] },
          { name: "b", dummy: REAL, real: `${REAL}-2`, hosts: ["b.example"] },
        ],
      }),
    );
    const d = await cli(["secrets", "check", dup]);
    expect(d.code).toBe(1);
    expect(d.stderr).toContain("credentials[1] (b): dummy contains the real value of");
    expect(d.stdout + d.stderr).not.toContain("never-printed");
  });
});

describe("an operator's commands (issue 18)", () => {
  test("--version, and help for every command and subcommand", async () => {
    const v = await cli(["--version"]);
    const pkg = JSON.parse(await readFile(join(import.meta.dir, "../package.json"), "utf8"));
    expect(v).toEqual({ code: 0, stdout: `slapenir ${pkg.version}\n`, stderr: "" });
    for (const words of [
      ["init"],
      ["check"],
      ["agent", "issue"],
      ["agent", "list"],
      ["agent", "env"],
      ["forward"],
      ["ca", "bundle"],
      ["secrets", "check"],
      ["quarantine", "release"],
      ["agent", "revoke"],
      ["agent", "renew"],
      ["policy", "test"],
      ["reload"],
      ["doctor"],
    ]) {
      const r = await cli([...words, "--help"]);
      expect(r.code).toBe(0);
      expect(r.stdout).toStartWith(`usage: bun run slapenir -- ${words.join(" ")}`);
    }
    const unknown = await cli(["frobnicate", "--help"]);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain("error: no command 'frobnicate'");
  });

  test("agent issue refuses to replace an agent's key without --force; agent list shows each agent's state", async () => {
    expect((await cli(["agent", "issue", "ops-a"])).code).toBe(0);
    const again = await cli(["agent", "issue", "ops-a"]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("ops-a already has a certificate");
    const before = await readFile(join(home, "agents", "ops-a.crt"), "utf8");
    expect((await cli(["agent", "issue", "ops-a", "--force"])).code).toBe(0);
    expect(await readFile(join(home, "agents", "ops-a.crt"), "utf8")).not.toBe(before);
    const list = await cli(["agent", "list"]);
    expect(list.code).toBe(0);
    expect(list.stdout).toMatch(/^ {2}ops-a {2}serial [0-9a-f]+ {2}expires \S+Z {2}valid$/m);
    const denied = await cli(["agent", "list"], { SLAPENIR_AGENT_DENYLIST: "agent:ops-a" });
    expect(denied.stdout).toMatch(/^ {2}ops-a .* denied \(agent\)$/m);
    const serial = /ops-a {2}serial ([0-9a-f]+)/.exec(list.stdout)![1]!;
    const bySerial = await cli(["agent", "list"], { SLAPENIR_AGENT_DENYLIST: `serial:${serial}` });
    expect(bySerial.stdout).toMatch(/^ {2}ops-a .* denied \(certificate\)$/m);
    expect(list.stdout).not.toContain("PRIVATE KEY");
  });

  test("agent renew: a new certificate for the same key, chaining to the root; the key file untouched", async () => {
    const { X509Certificate, createPrivateKey } = await import("node:crypto");
    const certPath = join(home, "agents", "ops-a.crt");
    const keyPath = join(home, "agents", "ops-a.key");
    const before = new X509Certificate(await readFile(certPath));
    const key = await readFile(keyPath, "utf8");
    const r = await cli(["agent", "renew", "ops-a", "--days", "40"]);
    expect(r).toMatchObject({ code: 0, stderr: "" });
    expect(r.stdout).toContain("renewed ops-a");
    const after = new X509Certificate(await readFile(certPath));
    expect(after.serialNumber).not.toBe(before.serialNumber);
    expect(after.checkPrivateKey(createPrivateKey(key))).toBe(true);
    expect(await readFile(keyPath, "utf8")).toBe(key);
    const root = new X509Certificate(await readFile(join(home, "root-ca.crt")));
    expect(after.verify(root.publicKey)).toBe(true);
    expect(Date.parse(after.validTo)).toBeGreaterThan(Date.now() + 39 * 86_400_000);
    expect(r.stdout).not.toContain("PRIVATE KEY");
    const none = await cli(["agent", "renew", "nobody-here"]);
    expect(none.code).toBe(1);
    expect(none.stderr).toContain("nobody-here has no certificate and key");
  });

  test("agent env prints the forwarder and the CA for each tool, quoted for a shell", async () => {
    const r = await cli(["agent", "env", "ops-a", "--forward", "127.0.0.1:4000"]);
    expect(r.code).toBe(0);
    const ca = join(home, "agents", "ca-bundle.pem");
    expect(r.stdout).toContain("export HTTPS_PROXY=http://127.0.0.1:4000 ");
    for (const v of [
      "SSL_CERT_FILE",
      "CURL_CA_BUNDLE",
      "GIT_SSL_CAINFO",
      "REQUESTS_CA_BUNDLE",
      "PIP_CERT",
      "NODE_EXTRA_CA_CERTS",
    ]) {
      expect(r.stdout).toContain(`export ${v}='${ca}'`);
    }
    expect((await cli(["agent", "env", "../etc"])).code).toBe(2);
  });

  test("policy test: the decision and the swaps for one request, exit 1 when refused", async () => {
    const env = { SLAPENIR_ALLOW: "GET api.github.com/repos/**" };
    const ok = await cli(
      ["policy", "test", "agent-x", "GET", "https://api.github.com/repos/a/b"],
      env,
    );
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain("allowed by allow[0] GET api.github.com/repos/**");
    const no = await cli(
      ["policy", "test", "agent-x", "POST", "https://api.github.com/repos/a/b"],
      env,
    );
    expect(no.code).toBe(1);
    expect(no.stdout).toContain("refused 403");
  });

  test("doctor: ports, PKI, agents and configuration, exit 1 on what would stop the proxy", async () => {
    // A port held by something else is a failure, named with its variable.
    const holder = Bun.listen({ hostname: "127.0.0.1", port: 0, socket: { data() {} } });
    try {
      const r = await cli(["doctor"], {
        SLAPENIR_LISTEN: `127.0.0.1:${holder.port}`,
        SLAPENIR_ADMIN_LISTEN: "127.0.0.1:0",
        SLAPENIR_ALLOW: "api.github.com",
      });
      expect(r.code).toBe(1);
      expect(r.stdout).toContain(
        `fail  SLAPENIR_LISTEN 127.0.0.1:${holder.port} is in use by something else`,
      );
      // The PKI made by the tests above, and their agents, read and judged by expiry.
      expect(r.stdout).toMatch(/^ok {4}root-ca\.crt expires /m);
      expect(r.stdout).toMatch(/^ok {4}agent ops-a expires /m);
      expect(r.stdout).toContain("doctor: 1 problem(s)");
    } finally {
      holder.stop(true);
    }
    const free = await cli(["doctor"], {
      SLAPENIR_LISTEN: "127.0.0.1:0",
      SLAPENIR_ADMIN_LISTEN: "127.0.0.1:0",
    });
    expect(free.code).toBe(0);
    expect(free.stdout).toContain("warn  egress: no allow rule, every destination denied");
    expect(free.stdout).toContain("doctor: nothing stops the proxy here");
  });

  test("check reads the configuration as the proxy would at start, and names what is wrong", async () => {
    const secrets = join(dir, "check-secrets.json");
    await writeFile(
      secrets,
      JSON.stringify({
        credentials: [
          {
            name: "gh",
            dummy: "ghp_dummy0000000000000000001",
            real: "ghp_R3aL0000000000000000001",
            hosts: ["api.github.com"],
          },
        ],
      }),
    );
    const ok = await cli(["check"], { TOKENS_JSON: secrets, SLAPENIR_ALLOW: "api.github.com" });
    expect(ok.code).toBe(0);
    expect(ok.stdout).toContain("ok: the proxy would start with this configuration");
    expect(ok.stdout).toContain("credentials: 1 credential\n");
    expect(ok.stdout).not.toContain("R3aL");
    // One configuration file (--config), the same credential in it: the same verdict, and an
    // error in it names the file and the field.
    const file = join(dir, "slapenir.yaml");
    const entry = JSON.parse(await readFile(secrets, "utf8")).credentials[0];
    await writeFile(file, `allow: [api.github.com]\ncredentials: [${JSON.stringify(entry)}]\n`);
    const viaFile = await cli(["--config", file, "check"], {});
    expect(viaFile.code).toBe(0);
    expect(viaFile.stdout).toContain(`configuration file: ${file}`);
    expect(viaFile.stdout).toContain("egress: 1 allow rule(s)");
    expect(viaFile.stdout).toContain("credentials: 1 credential\n");
    await writeFile(file, "allow: [api.github.com]\nrateLimit: 5/hour\n");
    const badFile = await cli(["check", `--config=${file}`], {});
    expect(badFile.code).toBe(1);
    expect(badFile.stderr).toContain(`${file}: rateLimit: must match pattern`);
    await writeFile(
      secrets,
      JSON.stringify({ credentials: [{ name: "gh", dummy: "x", hosts: [] }] }),
    );
    const bad = await cli(["check"], { TOKENS_JSON: secrets });
    expect(bad.code).toBe(1);
    expect(bad.stderr).toContain("check-secrets.json: credentials[0] (gh).dummy:");
    const badEnv = await cli(["check"], { SLAPENIR_LISTEN: "nowhere" });
    expect(badEnv.code).toBe(1);
    expect(badEnv.stderr).toContain("SLAPENIR_LISTEN");
  });
});

describe("judgeExpiry", () => {
  test("expired fails, within the warning days warns, later is ok", async () => {
    const { judgeExpiry } = await import("./cli.ts");
    const now = Date.parse("2026-12-05T00:00:00Z");
    expect(judgeExpiry(new Date(now - 1), now)).toBe("fail");
    expect(judgeExpiry(new Date(now + 6 * 86_400_000), now)).toBe("warn");
    expect(judgeExpiry(new Date(now + 8 * 86_400_000), now)).toBe("ok");
    expect(judgeExpiry(new Date(now + 20 * 86_400_000), now, 30)).toBe("warn");
  });
});
