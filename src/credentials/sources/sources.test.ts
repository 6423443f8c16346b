// Credential sources without the proxy: the `source` field read strictly (errors name the
// field, never a value), each kind of source read once (a file, a command, an OAuth endpoint
// with refresh-token rotation), and the manager's life of a value — pending, promoted,
// retired for a while, expired into unavailable — on timers and a clock the test moves.

import { afterAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createTestCa } from "../../../test/support/test-pki.ts";
import { ConfigError } from "../../config/config-error.ts";
import { SecretValue } from "../secret-value.ts";
import type { SourcedCredential } from "../secrets.ts";
import { fetcherFor, SourceError } from "./fetch-source.ts";
import { CredentialSources, type SourceEvent, type SourceTimers } from "./source-manager.ts";
import { describeSource, parseSource, type SourceSpec } from "./source-spec.ts";

const dir = mkdtempSync(join(tmpdir(), "slapenir-sources-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const errorOf = (fn: () => unknown): ConfigError => {
  try {
    fn();
  } catch (e) {
    return e as ConfigError;
  }
  throw new Error("no error");
};

describe("the source field", () => {
  test("each kind, with its defaults", () => {
    expect(parseSource({ file: "/run/secrets/t" }, "w")).toEqual({
      type: "file",
      path: "/run/secrets/t",
      pollMs: 2000,
      retainRetiredMs: 3_600_000,
    });
    expect(
      parseSource({ command: ["gh", "auth", "token"], refreshSeconds: 60 }, "w"),
    ).toMatchObject({
      type: "command",
      argv: ["gh", "auth", "token"],
      refreshMs: 60_000,
      timeoutMs: 10_000,
    });
    const o = parseSource(
      {
        oauth: {
          tokenUrl: "https://idp.example/token",
          grant: "refresh_token",
          clientId: "c",
          refreshToken: "rt-R3aL-0001",
        },
      },
      "w",
    );
    expect(o).toMatchObject({ type: "oauth", grant: "refresh_token", clientId: "c" });
    // The refresh token is held as a secret: no formatter shows it.
    expect(JSON.stringify(o)).not.toContain("rt-R3aL-0001");
    expect(describeSource(o)).toBe("oauth refresh_token https://idp.example/token");
    expect(describeSource(parseSource({ command: ["gh", "auth", "token"] }, "w"))).toBe(
      "command gh (2 arguments)",
    );
  });

  test("assumeRole: the role, its defaults, base keys held as secrets", () => {
    const a = parseSource(
      {
        assumeRole: {
          roleArn: "arn:aws:iam::123456789012:role/agent",
          accessKeyId: "AKIABASE000000000001",
          secretAccessKey: "base-secret-R3aL-0001",
        },
      },
      "w",
    );
    expect(a).toMatchObject({
      type: "assumeRole",
      sessionName: "slapenir",
      durationSeconds: 3600,
      stsUrl: "https://sts.amazonaws.com/",
      region: "us-east-1",
    });
    expect(JSON.stringify(a)).not.toContain("base-secret-R3aL-0001");
    expect(describeSource(a)).toBe(
      "assumeRole arn:aws:iam::123456789012:role/agent via https://sts.amazonaws.com/",
    );
  });

  test.each([
    [
      { assumeRole: { roleArn: "role/agent", accessKeyId: "a", secretAccessKey: "b" } },
      "s.assumeRole.roleArn: must be a role ARN",
    ],
    [
      { assumeRole: { roleArn: "arn:aws:iam::123456789012:role/a", secretAccessKey: "b" } },
      "s.assumeRole.accessKeyId",
    ],
    [
      {
        assumeRole: {
          roleArn: "arn:aws:iam::123456789012:role/a",
          accessKeyId: "a",
          secretAccessKey: "b",
          durationSeconds: 60,
        },
      },
      "s.assumeRole.durationSeconds: must be whole seconds, 900..43200",
    ],
    [
      {
        assumeRole: {
          roleArn: "arn:aws:iam::123456789012:role/a",
          accessKeyId: "a",
          secretAccessKey: "b",
          stsUrl: "http://sts",
        },
      },
      "s.assumeRole.stsUrl: must be an https URL",
    ],
  ])("%j is refused: %s", (value, message) => {
    expect(errorOf(() => parseSource(value, "s")).message).toContain(message);
  });

  test.each([
    [[], "must be an object"],
    [{}, 'exactly one of "file", "command", "oauth"'],
    [{ file: "/a", command: ["x"] }, "exactly one of"],
    [{ file: "relative/path" }, "s.file: must be an absolute path"],
    [{ file: "/a", pollSeconds: 0 }, "s.pollSeconds: must be a number of seconds"],
    [{ file: "/a", extra: 1 }, "unknown field 'extra'"],
    [{ command: "gh auth token" }, "s.command: must be a non-empty list"],
    [{ command: [] }, "s.command: must be a non-empty list"],
    [
      {
        oauth: {
          tokenUrl: "http://idp/t",
          grant: "client_credentials",
          clientId: "c",
          clientSecret: "s0000000",
        },
      },
      "s.oauth.tokenUrl: must be an https URL",
    ],
    [
      {
        oauth: {
          tokenUrl: "https://u:p@idp/t",
          grant: "client_credentials",
          clientId: "c",
          clientSecret: "s",
        },
      },
      "without credentials in it",
    ],
    [{ oauth: { tokenUrl: "https://idp/t", grant: "password", clientId: "c" } }, "s.oauth.grant"],
    [
      { oauth: { tokenUrl: "https://idp/t", grant: "client_credentials", clientId: "c" } },
      "s.oauth.clientSecret: is required",
    ],
    [
      { oauth: { tokenUrl: "https://idp/t", grant: "refresh_token", clientId: "c" } },
      "s.oauth.refreshToken: is required",
    ],
    [
      {
        oauth: {
          tokenUrl: "https://idp/t",
          grant: "client_credentials",
          clientId: "c",
          clientSecret: "has space",
        },
      },
      "s.oauth.clientSecret: must be 1..4096 printable",
    ],
  ])("%j is refused: %s", (value, message) => {
    const e = errorOf(() => parseSource(value, "s"));
    expect(e).toBeInstanceOf(ConfigError);
    expect(e.message).toContain(message);
    expect(e.message).not.toContain("has space");
  });
});

describe("reading a source once", () => {
  test("a file: its content, surrounding whitespace dropped; a missing one names the path and code", async () => {
    const path = join(dir, "token");
    writeFileSync(path, "  file-value-00000001\n");
    const got = await fetcherFor(
      { type: "file", path, pollMs: 1000, retainRetiredMs: 0 },
      "token",
    ).fetch();
    expect(got.values.get("real")?.revealText()).toBe("file-value-00000001");
    expect(got.expiresAt).toBeNull();
    const missing = fetcherFor(
      { type: "file", path: join(dir, "nope"), pollMs: 1000, retainRetiredMs: 0 },
      "token",
    );
    expect(missing.fetch()).rejects.toThrow(`cannot read ${join(dir, "nope")} (ENOENT)`);
  });

  test("a command: its output; AWS keys in the credential_process format with their expiry; failures say what, not what it printed", async () => {
    const spec = (argv: string[]): SourceSpec => ({
      type: "command",
      argv,
      refreshMs: 1000,
      timeoutMs: 2000,
      retainRetiredMs: 0,
    });
    const tok = await fetcherFor(spec(["sh", "-c", "echo cmd-value-00000001"]), "token").fetch();
    expect(tok.values.get("real")?.revealText()).toBe("cmd-value-00000001");
    const json = JSON.stringify({
      Version: 1,
      AccessKeyId: "AKIAPROCESS000000001",
      SecretAccessKey: "process/secret/0000000000000000000000001",
      SessionToken: "process-token-00000001",
      Expiration: "2031-01-01T00:00:00Z",
    });
    const aws = await fetcherFor(spec(["sh", "-c", `printf '%s' '${json}'`]), "aws").fetch();
    expect([...aws.values.keys()]).toEqual(["accessKeyId", "secretAccessKey", "sessionToken"]);
    expect(aws.values.get("secretAccessKey")?.revealText()).toBe(
      "process/secret/0000000000000000000000001",
    );
    expect(aws.expiresAt).toBe(Date.parse("2031-01-01T00:00:00Z"));
    const fails = async (argv: string[], shape: "token" | "aws") => {
      try {
        await fetcherFor(spec(argv), shape).fetch();
        return "no error";
      } catch (e) {
        expect(e).toBeInstanceOf(SourceError);
        return (e as Error).message;
      }
    };
    expect(await fails(["sh", "-c", "echo secret-ish-output; exit 3"], "token")).toBe(
      "command sh exited with 3",
    );
    expect(await fails(["sh", "-c", "echo short"], "token")).toContain("is 5 bytes");
    expect(await fails(["sh", "-c", "echo not-json-at-all"], "aws")).toContain("not JSON");
    expect(await fails(["sh", "-c", "sleep 5"], "token")).toContain(
      "did not finish within 2000 ms",
    );
    expect(await fails(["/nonexistent/program"], "token")).toContain("could not be started");
    for (const m of [await fails(["sh", "-c", "echo secret-ish-output; exit 3"], "token")]) {
      expect(m).not.toContain("secret-ish-output");
    }
  });

  test("OAuth refresh_token: the endpoint's rotated refresh token is used next; an error status is named, its body is not", async () => {
    const seen: URLSearchParams[] = [];
    let fail = false;
    await using idp = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      tls: await (async () => {
        const ca = await createTestCa("Sources Test IdP");
        const c = await ca.issue(["127.0.0.1"]);
        writeFileSync(join(dir, "idp.pem"), ca.certPem);
        return { cert: c.certPem, key: c.keyPem };
      })(),
      async fetch(req) {
        const form = new URLSearchParams(await req.text());
        seen.push(form);
        if (fail) return new Response("upstream said: rt-leaky-body", { status: 400 });
        const n = seen.length;
        return Response.json({
          access_token: `access-token-${n}-00000000`,
          refresh_token: `rt-rotated-${n}-000000`,
          expires_in: 60,
        });
      },
    });
    const now = () => 1_000_000;
    const spec = parseSource(
      {
        oauth: {
          tokenUrl: `https://127.0.0.1:${idp.port}/token`,
          grant: "refresh_token",
          clientId: "client-1",
          refreshToken: "rt-initial-000000",
          caFile: join(dir, "idp.pem"),
        },
      },
      "s",
    );
    const f = fetcherFor(spec, "token", now);
    const a = await f.fetch();
    expect(a.values.get("real")?.revealText()).toBe("access-token-1-00000000");
    expect(a.expiresAt).toBe(1_000_000 + 60_000);
    await f.fetch();
    expect(
      seen.map((s) => [s.get("grant_type"), s.get("refresh_token"), s.get("client_id")]),
    ).toEqual([
      ["refresh_token", "rt-initial-000000", "client-1"],
      ["refresh_token", "rt-rotated-1-000000", "client-1"],
    ]);
    fail = true;
    expect(f.fetch()).rejects.toThrow(
      `token endpoint https://127.0.0.1:${idp.port}/token answered 400`,
    );
    try {
      await f.fetch();
    } catch (e) {
      expect((e as Error).message).not.toContain("leaky");
    }
  });
});

/** Timers a test fires by hand, in order of when they are due on its clock. */
function manualTimers() {
  let t = 0;
  let next = 1;
  const due = new Map<number, { at: number; fn: () => void }>();
  const timers: SourceTimers = {
    set: (fn, ms) => {
      const id = next++;
      due.set(id, { at: t + ms, fn });
      return id;
    },
    clear: (h) => {
      due.delete(h as number);
    },
  };
  return {
    timers,
    now: () => t,
    /** Moves the clock to the next timer and runs it; false when none is set. */
    async step(): Promise<boolean> {
      const first = [...due.entries()].sort(([, a], [, b]) => a.at - b.at)[0];
      if (!first) return false;
      due.delete(first[0]);
      t = Math.max(t, first[1].at);
      first[1].fn();
      await Bun.sleep(5);
      return true;
    },
    pending: () => [...due.values()].map((d) => d.at - t).sort((a, b) => a - b),
  };
}

describe("the manager", () => {
  const source = (spec: SourceSpec): SourcedCredential => ({
    name: "tok",
    where: "test",
    spec,
    shape: "token",
    parts: ["real"],
  });
  const texts = (m: CredentialSources) => {
    const s = m.snapshot().get("tok")!;
    return {
      current: s.current?.get("real")?.revealText() ?? null,
      redactOnly: s.redactOnly.map((v) => v.revealText()),
    };
  };

  test("a new value is pending (redacted only) until promoted; the one it replaces is retired, then dropped", async () => {
    const path = join(dir, "managed");
    writeFileSync(path, "value-one-0000001");
    const t = manualTimers();
    let changes = 0;
    const m = new CredentialSources(
      [source({ type: "file", path, pollMs: 1000, retainRetiredMs: 5000 })],
      {
        now: t.now,
        timers: t.timers,
        onChange: () => changes++,
      },
    );
    await m.start();
    expect(texts(m)).toEqual({ current: null, redactOnly: ["value-one-0000001"] });
    expect(m.promote()).toBe(true);
    expect(texts(m)).toEqual({ current: "value-one-0000001", redactOnly: [] });
    writeFileSync(path, "value-two-0000002");
    await t.step(); // the poll
    expect(changes).toBe(2);
    expect(texts(m)).toEqual({ current: "value-one-0000001", redactOnly: ["value-two-0000002"] });
    m.promote();
    expect(texts(m)).toEqual({ current: "value-two-0000002", redactOnly: ["value-one-0000001"] });
    // The same content again changes nothing.
    await t.step();
    expect(changes).toBe(2);
    // Past its retention the retired value is dropped from the redaction set.
    for (let i = 0; i < 6; i++) await t.step();
    expect(texts(m)).toEqual({ current: "value-two-0000002", redactOnly: [] });
    m.stop();
  });

  test("a failing source keeps its value until it expires, retrying with backoff; then unavailable; then back", async () => {
    const t = manualTimers();
    const events: SourceEvent[] = [];
    let answer: "ok" | "fail" = "ok";
    let issued = 0;
    // A stand-in for the command: each reading a value that lives 10 s.
    const m = new CredentialSources(
      [
        source({
          type: "command",
          argv: ["x"],
          refreshMs: 100_000,
          timeoutMs: 1,
          retainRetiredMs: 0,
        }),
      ],
      {
        now: t.now,
        timers: t.timers,
        onChange: () => {},
        onEvent: (e) => events.push(e),
        fetcher: () => ({
          fetch: async () => {
            if (answer === "fail") throw new SourceError("command x exited with 1");
            issued += 1;
            return {
              values: new Map([["real", SecretValue.fromText(`issued-value-${issued}-0000`)]]),
              expiresAt: t.now() + 10_000,
            };
          },
          dispose: () => {},
        }),
      },
    );
    await m.start();
    m.promote();
    expect(texts(m).current).toBe("issued-value-1-0000");
    // Refresh is due at 3/4 of the life: 7.5 s.
    expect(t.pending()).toEqual([7500, 10_000]);
    answer = "fail";
    await t.step(); // 7.5 s: fails, retry in 1 s
    await t.step(); // 8.5 s: fails, retry in 2 s
    expect(texts(m).current).toBe("issued-value-1-0000");
    await t.step(); // 10 s: expired
    expect(texts(m).current).toBeNull();
    expect(events.map((e) => e.result)).toEqual(["fetched", "failed", "failed", "expired"]);
    expect(events[1]?.reason).toBe("command x exited with 1");
    answer = "ok";
    await t.step(); // 10.5 s: answers again
    expect(texts(m)).toEqual({ current: null, redactOnly: ["issued-value-2-0000"] });
    m.promote();
    expect(texts(m).current).toBe("issued-value-2-0000");
    m.stop();
  });
});

describe("the manager, at its edges", () => {
  const source = (name = "tok"): SourcedCredential => ({
    name,
    where: "test",
    spec: {
      type: "command",
      argv: ["x"],
      refreshMs: 100_000,
      timeoutMs: 1,
      retainRetiredMs: 60_000,
    },
    shape: "token",
    parts: ["real"],
  });
  /** A manager whose source gives the values of `answers`, in turn, each living `lifeMs`. */
  function scripted(answers: string[], lifeMs: number | null, t = manualTimers(), name = "tok") {
    let i = 0;
    const events: string[] = [];
    const m = new CredentialSources([source(name)], {
      now: t.now,
      timers: t.timers,
      onChange: () => {},
      onEvent: (e) => events.push(e.result),
      fetcher: () => ({
        fetch: async () => ({
          values: new Map([
            ["real", SecretValue.fromText(answers[Math.min(i++, answers.length - 1)]!)],
          ]),
          expiresAt: lifeMs === null ? null : t.now() + lifeMs,
        }),
        dispose: () => {},
      }),
    });
    return { m, t, events };
  }
  const view = (m: CredentialSources, name = "tok") => {
    const s = m.snapshot().get(name)!;
    return {
      current: s.current?.get("real")?.revealText() ?? null,
      redactOnly: s.redactOnly.map((v) => v.revealText()).sort(),
    };
  };

  test("a switch promotes only the value it saw pending: one that replaced it waits for its own", async () => {
    const { m, t } = scripted(["first-value-0001", "second-value-002", "third-value-0003"], null);
    await m.start();
    m.promote();
    await t.step(); // the next reading: the second value, pending
    const token = m.pendingToken();
    await t.step(); // refresh again: the third replaces it while the switch waits
    expect(m.promote(token)).toBe(false);
    expect(view(m)).toEqual({
      current: "first-value-0001",
      redactOnly: ["second-value-002", "third-value-0003"],
    });
    expect(m.promote(m.pendingToken())).toBe(true);
    expect(view(m).current).toBe("third-value-0003");
    m.stop();
  });

  test("the same value read again while pending (a later expiry) is still the one the switch promotes", async () => {
    const { m, t, events } = scripted(["first-value-0001", "second-value-002"], null);
    await m.start();
    m.promote();
    await t.step(); // the second value, pending
    const token = m.pendingToken();
    await t.step(); // read again: unchanged
    expect(events.at(-1)).toBe("unchanged");
    expect(m.promote(token)).toBe(true);
    expect(view(m).current).toBe("second-value-002");
    m.stop();
  });

  test("a rejected value is dropped (not redacted, never swapped)", async () => {
    const { m, t, events } = scripted(["first-value-0001", "conflicting-0002"], 8000);
    await m.start();
    m.promote();
    await t.step();
    m.reject(m.pendingToken(), "conflicts");
    expect(view(m)).toEqual({ current: "first-value-0001", redactOnly: [] });
    expect(events).toContain("rejected");
    m.stop();
  });

  test("a far expiry (90 days) neither expires at once nor reads the source in a loop", async () => {
    const { m, t, events } = scripted(["long-lived-00001"], 90 * 86_400_000);
    await m.start();
    m.promote();
    // Every timer within what a timer can hold; stepping through a day changes nothing.
    expect(Math.max(...t.pending())).toBeLessThanOrEqual(86_400_000);
    await t.step();
    await t.step();
    expect(view(m).current).toBe("long-lived-00001");
    expect(events.filter((e) => e === "fetched")).toHaveLength(1);
    m.stop();
  });

  test("a reload's new manager keeps what the old one held redacted (but not its own current value)", async () => {
    const t = manualTimers();
    const old = scripted(["value-zero-00000", "value-one-000001"], 8000, t);
    await old.m.start();
    old.m.promote();
    await t.step();
    old.m.promote(); // current value-one, retired value-zero
    const next = scripted(["value-one-000001"], 8000, t);
    await next.m.start();
    next.m.promote();
    old.m.handOver(next.m);
    old.m.stop();
    expect(view(next.m)).toEqual({ current: "value-one-000001", redactOnly: ["value-zero-00000"] });
    next.m.stop();
  });
});
