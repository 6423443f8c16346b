// End-to-end: the proxy under the memory limit compose.yml gives its container, with many agents
// streaming at once. The proxy runs as its own process inside a Linux memory cgroup (what
// Docker uses for `deploy.resources.limits.memory`; no swap) limited to that value; eight curl
// agents each download 256 MiB at the same time, then eight each upload 256 MiB. Every body must
// arrive byte-exact (redacted or swapped), the OOM killer must not have ended the proxy, and the
// cgroup must never have reached its limit (no forced reclaim either).
//
// Why it can fail: outside a cgroup the same eight downloads took the proxy's RSS to 241–279 MiB
// on this machine; inside one of 256 MiB (compose's limit until 2026-11-26) its RSS peaked at
// 193–207 MiB and the cgroup's use (which leaves out the runtime's binary, already in the page
// cache) at 154–166 MiB — the runtime sizes its heap by the memory it is given. With the limit
// at 100 MiB the downloads crawled and the proxy was OOM-killed during the uploads. At 256 MiB,
// one agent opening thousands of idle tunnels got it OOM-killed too, until open connections
// were capped per agent, and one agent stalling 64 big downloads still did once the proxy had
// been streaming; hence 384M. Needs root; skipped with a warning without it, and an error
// under CI.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type tls from "node:tls";
import { loadProxyConfig } from "../../src/config/proxy-config.ts";
import { curlTransfer } from "../support/curl-transfer.ts";
import {
  composeProxyMemoryLimit,
  createMemoryCgroup,
  type MemoryCgroup,
  memoryCgroupUnavailableReason,
} from "../support/memory-cgroup.ts";
import type { AgentFiles } from "../support/proxy-harness.ts";
import { type ProxyProcess, startProxyProcess } from "../support/proxy-process.ts";
import {
  closeTunnel,
  openTunnel,
  readAgain,
  stallAfterHead,
  stalledAnswer,
} from "../support/raw-agent.ts";
import {
  digestOf,
  generateChunks,
  plantedCount,
  type StreamSpec,
} from "../support/stream-source.ts";
import {
  type StreamUpstream,
  startStreamUpstream,
  type UploadReport,
} from "../support/stream-upstream.ts";

const DUMMY = "sk-dummy-limit-0000000000000000000001";
const REAL = "sk-real-limit-7c1e5b2d8f4a6c0e9b7d5f3a1";
const SIZE = 256 * 1024 * 1024;
const AGENTS = 8;

/** The proxy container's memory limit, as deployed. */
const LIMIT = await composeProxyMemoryLimit();

const SKIP = memoryCgroupUnavailableReason();
if (SKIP) {
  if (process.env.CI) throw new Error(`memory-limit test cannot run in CI: ${SKIP}`);
  console.warn(`\n*** SKIP test/e2e/streaming-memory-limit.test.ts: ${SKIP} ***\n`);
}

let cgroup: MemoryCgroup | undefined;
let proxy: ProxyProcess | undefined;
let up: StreamUpstream | undefined;
const dir = mkdtempSync(join(tmpdir(), "slapenir-memory-limit-"));

beforeAll(async () => {
  if (SKIP) return;
  cgroup = await createMemoryCgroup(`slapenir-test-${process.pid}`, LIMIT);
  proxy = await startProxyProcess({
    credentials: [
      {
        name: "stream",
        dummy: DUMMY,
        real: REAL,
        hosts: ["localhost:*"],
        in: ["header:authorization", "body"],
      },
    ],
    launcher: cgroup.launcher,
    // A stalled tunnel here ends by being shed or not at all: on a busy machine the attacks
    // last past the default 30 s a reader may take, which would close some besides.
    env: { SLAPENIR_BODY_IDLE_TIMEOUT_MS: "300000" },
  });
  up = startStreamUpstream({
    cert: await proxy.upstreamCa.issue(["localhost", "127.0.0.1"]),
    plantText: REAL,
    plantEvery: 1 << 20,
  });
});

afterAll(async () => {
  await up?.stop();
  await proxy?.close();
  await cgroup?.remove();
  rmSync(dir, { recursive: true, force: true });
});

/** The proxy is still the process we started, and its cgroup never even reached the limit. */
function expectAliveWithinLimit(): void {
  const c = cgroup!;
  expect({ alive: proxyAlive(), oomKills: c.oomKills(), limitHits: c.limitHits() }).toEqual({
    alive: true,
    oomKills: 0,
    limitHits: 0,
  });
  expect(c.peakBytes()).toBeLessThan(LIMIT);
}

/** curl's report of a CONNECT answered 503 (exit 56). */
const FRONT_DOOR_503 = /CONNECT.*\b503\b|\b503\b.*CONNECT/;

/**
 * Runs a transfer again while the proxy turns its tunnel away at the front door (503 to the
 * CONNECT: the proxy's documented answer to new work while it is overloaded, which a client told
 * so tries again), up to 20 times.
 */
async function pastFrontDoor(
  transfer: () => ReturnType<typeof curlTransfer>,
  who: string,
): ReturnType<typeof curlTransfer> {
  for (let attempt = 1; ; attempt++) {
    const r = await transfer();
    if (r.exit !== 56 || !FRONT_DOOR_503.test(r.stderr) || attempt >= 20) {
      return r;
    }
    console.log(`${who} told 503 at the front door (attempt ${attempt}): trying again`);
    await Bun.sleep(250);
  }
}

/**
 * `agent` downloads `bytes` through the proxy, meanwhile: whole, byte-exact, redacted, once past
 * the front door; anything else — a download cut, a reset — fails.
 */
async function expectServed(agent: AgentFiles, bytes: number): Promise<void> {
  const spec = up!.spec(bytes, true);
  const served = await pastFrontDoor(
    () =>
      curlTransfer(
        proxy!,
        [`https://localhost:${up!.port}/download?bytes=${bytes}&plant=1`],
        undefined,
        60,
        agent,
      ),
    "another agent",
  );
  expect([served.exit, served.stderr.trim(), served.sha256]).toEqual([
    0,
    "",
    digestOf(spec, "[REDACTED]"),
  ]);
}

function proxyAlive(): boolean {
  try {
    process.kill(proxy!.pid, 0);
    return true;
  } catch {
    return false;
  }
}

// Skipped only where no memory cgroup can be made (not root, no controller), with the warning
// above; under CI that is an error instead, so a green CI run always ran it.
describe.skipIf(SKIP !== null)(`the proxy within its container's memory limit`, () => {
  test("the limit comes from compose.yml and the proxy really runs under it", async () => {
    expect(LIMIT).toBe(384 * 1024 * 1024);
    const procs = await Bun.file(join(cgroup!.path, "cgroup.procs")).text();
    expect(procs.split("\n")).toContain(String(proxy!.pid));
  });

  test(`${AGENTS} agents download 256 MiB each at once: all redacted byte-exact, no OOM`, async () => {
    const spec = up!.spec(SIZE, true);
    const expected = digestOf(spec, "[REDACTED]");
    const size = SIZE - (REAL.length - "[REDACTED]".length) * plantedCount(spec);
    const url = `https://localhost:${up!.port}/download?bytes=${SIZE}&plant=1`;
    const all = await Promise.all(
      Array.from({ length: AGENTS }, () => curlTransfer(proxy!, [url], undefined, 120)),
    );
    expect(all.map((r) => [r.exit, r.stderr, r.bytes, r.sha256])).toEqual(
      all.map(() => [0, "", size, expected]),
    );
    expectAliveWithinLimit();
  }, 180_000);

  test(`${AGENTS} agents upload 256 MiB each at once: all swapped byte-exact, no OOM`, async () => {
    const spec: StreamSpec = { totalBytes: SIZE, plant: { text: DUMMY, every: 1 << 20 } };
    const report: UploadReport = {
      bytes: SIZE + (REAL.length - DUMMY.length) * plantedCount(spec),
      sha256: digestOf(spec, REAL),
      contentLength: null,
      transferEncoding: "chunked",
    };
    const url = `https://localhost:${up!.port}/upload`;
    const all = await Promise.all(
      Array.from({ length: AGENTS }, () => curlTransfer(proxy!, ["-T", "-", url], spec, 120)),
    );
    expect(all.map((r) => [r.exit, r.stderr])).toEqual(all.map(() => [0, ""]));
    expect(all.map((r) => JSON.parse(r.text) as UploadReport)).toEqual(all.map(() => report));
    expectAliveWithinLimit();
  }, 180_000);

  test("held bodies are bounded: many big length-changing uploads get 503s, not an OOM", async () => {
    // A body whose swap changes its length is held whole to send a correct Content-Length
    // (up to SLAPENIR_MAX_HELD_BODY_BYTES, 10 MiB). Before the budget covered a held body for
    // as long as it was held (and defaulted to 256 MiB), thirty 10 MiB ones at once — one agent
    // can send them — got the proxy OOM-killed in a 256 MiB cgroup; with a 64 MiB budget these 9 MiB
    // ones still did beside the downloads. Here they run three times over while eight
    // downloads stream.
    const spec: StreamSpec = { totalBytes: 9 << 20, plant: { text: DUMMY, every: 1 << 20 } };
    const file = join(dir, "held.bin");
    const sink = Bun.file(file).writer();
    for (const c of generateChunks(spec)) sink.write(c);
    await sink.end();
    const swappedLength = spec.totalBytes + (REAL.length - DUMMY.length) * plantedCount(spec);
    // Started with the first uploads: a download turned away at the front door tries again.
    const streams = Array.from({ length: AGENTS }, () =>
      pastFrontDoor(
        () =>
          curlTransfer(
            proxy!,
            [`https://localhost:${up!.port}/download?bytes=${SIZE}`],
            undefined,
            120,
          ),
        "a download",
      ),
    );
    const url = `https://localhost:${up!.port}/upload`;
    const outcomes: string[] = [];
    for (let round = 0; round < 3; round++) {
      const all = await Promise.all(
        Array.from({ length: 30 }, () =>
          curlTransfer(proxy!, ["-T", file, "-w", "\n%{http_code}", url], undefined, 120),
        ),
      );
      for (const r of all) {
        const status = r.text.slice(r.text.lastIndexOf("\n") + 1);
        const body = r.text.slice(0, r.text.lastIndexOf("\n"));
        // Turned away at the front door (503 to the CONNECT while the proxy is overloaded).
        if (r.exit === 56 && FRONT_DOOR_503.test(r.stderr)) outcomes.push("503 at the front door");
        else if (r.exit !== 0) outcomes.push(`curl exit ${r.exit}: ${r.stderr.trim()}`);
        else if (status === "503") outcomes.push(body.includes("retry") ? "503" : `503 ${body}`);
        else if (status !== "200") outcomes.push(status);
        else {
          const report = JSON.parse(body) as UploadReport;
          expect(report).toEqual({
            bytes: swappedLength,
            sha256: digestOf(spec, REAL),
            contentLength: String(swappedLength),
            transferEncoding: null,
          });
          outcomes.push("200");
        }
      }
    }
    const downloads = await Promise.all(streams);
    expect(downloads.map((r) => [r.exit, r.stderr.trim(), r.bytes])).toEqual(
      downloads.map(() => [0, "", SIZE]),
    );
    // Only answers: held (200) or turned away for now (503), and both happened.
    const seen = new Set(outcomes);
    seen.delete("503 at the front door");
    expect(seen).toEqual(new Set(["200", "503"]));
    expectAliveWithinLimit();
  }, 180_000);

  test("one agent opening thousands of tunnels is held to its cap; the proxy serves another", async () => {
    // Each open tunnel costs the proxy ~45 KB (cgroup count). Before the per-agent cap, 6 000
    // idle tunnels from one agent, opened in about five seconds, got the proxy OOM-killed in
    // a 256 MiB cgroup.
    const cap = loadProxyConfig({}).limits.maxAgentConnections;
    const other = await proxy!.issueAgent("agent-other");
    const flooder = { port: proxy!.port, caBundlePath: proxy!.caBundlePath, agent: proxy!.agent };
    const tunnels: tls.TLSSocket[] = [];
    const refusals = new Map<string, number>();
    try {
      for (let i = 0; i < 6_000; i += 40) {
        await Promise.all(
          Array.from({ length: 40 }, () =>
            openTunnel(flooder, { connect: `localhost:${up!.port}` }).then(
              (t) => void tunnels.push(t),
              (e: Error) => void refusals.set(e.message, (refusals.get(e.message) ?? 0) + 1),
            ),
          ),
        );
      }
      expect(tunnels.length).toBe(cap);
      // Refused: told with a 429, or — past the few refusals an agent may have being told at
      // once — closed at once (the agent sees the connection end before any answer; as a reset
      // when the close overtakes bytes it had still to read or send). On a busy machine a few
      // may instead be told 503, the proxy's answer to new tunnels while its event loop runs
      // late; nothing else.
      const capped = "CONNECT refused: HTTP/1.1 429 Too Many Requests";
      const kinds = [capped, "CONNECT refused: HTTP/1.1 503 Service Unavailable"];
      kinds.push("closed before head: ", "read ECONNRESET");
      expect([...refusals.keys()].filter((k) => !kinds.includes(k))).toEqual([]);
      expect(refusals.get(capped)).toBeGreaterThan(0);
      expect([...refusals.values()].reduce((a, b) => a + b, 0)).toBe(6_000 - cap);
      await expectServed(other, 8 << 20);
    } finally {
      for (const t of tunnels) closeTunnel(t);
    }
    expectAliveWithinLimit();
  }, 120_000);

  test("one agent stalling its cap of big downloads does not get the proxy OOM-killed", async () => {
    // Each tunnel asks for 8 MiB and reads nothing after the head, so every buffer on its path
    // stays full (~1.5–2 MiB a tunnel). It runs after the streaming tests above, as in a proxy
    // that has been working a while: its cgroup then peaked at 281–288 MiB, which is why
    // compose gives the proxy 384M; at 256M this got it OOM-killed. With the buffers of before
    // (four upstream reads of up to 512 KiB queued, a 512 KiB carrier, a 1 MiB output queue
    // in the matcher pool) 64 such tunnels got a fresh proxy OOM-killed at 256M. Two such
    // agents need more memory (docs/DEPLOY.md); one is what this limit is sized for. Since the
    // matcher's decoded views (two more scans per body) the proxy sits closer to the guard's
    // threshold after the transfers above: some of the agent's last tunnels may be refused as
    // memory-pressed (503), which is what the guard is for; no OOM kill either way.
    const cap = loadProxyConfig({}).limits.maxAgentConnections;
    const other = await proxy!.issueAgent("agent-stall-other");
    const raw = { port: proxy!.port, caBundlePath: proxy!.caBundlePath, agent: proxy!.agent };
    const request = `GET /download?bytes=${8 << 20} HTTP/1.1\r\nHost: localhost:${up!.port}\r\n\r\n`;
    const tunnels: tls.TLSSocket[] = [];
    let refused = 0;
    try {
      for (let i = 0; i < cap; i++) {
        let t: tls.TLSSocket;
        try {
          t = await openTunnel(raw, { connect: `localhost:${up!.port}` });
        } catch (e) {
          // Once memory is pressed, an agent with many stalled tunnels opens no more (503
          // overloaded, proxy-server.ts): the guard doing its work, not a failure.
          expect(String(e)).toContain("CONNECT refused: HTTP/1.1 503");
          refused++;
          continue;
        }
        void stallAfterHead(t, request);
        tunnels.push(t);
      }
      await Bun.sleep(1000);
      await expectServed(other, 64 << 20);
      expect([proxyAlive(), cgroup!.oomKills()]).toEqual([true, 0]);
      expect(tunnels.length + refused).toBe(cap);
      if (refused > 0) console.log(`stall: ${refused} of ${cap} tunnels refused as memory-pressed`);
    } finally {
      for (const t of tunnels) closeTunnel(t);
    }
  }, 120_000);

  test("agents stalling more downloads than the limit holds are shed; a slow reader and another agent are not", async () => {
    // Four agents each stall their cap of 8 MiB downloads: ~2 MiB a tunnel, about 512 MiB
    // in all, beyond the limit however the caps are set. Without the memory guard the proxy
    // was OOM-killed while the tunnels opened. With it, stalled connections are closed once use
    // reaches the shed threshold, as many as it takes, from the agents holding the most; a slow
    // reader and another agent keep theirs.
    const cap = loadProxyConfig({}).limits.maxAgentConnections;
    const colluders = await Promise.all(
      [1, 2, 3, 4].map((i) => proxy!.issueAgent(`agent-collude-${i}`)),
    );
    const slow = await proxy!.issueAgent("agent-slow-reader");
    const other = await proxy!.issueAgent("agent-bystander");
    const to = (agent: AgentFiles) => ({
      port: proxy!.port,
      caBundlePath: proxy!.caBundlePath,
      agent,
    });
    const request = `GET /download?bytes=${8 << 20} HTTP/1.1\r\nHost: localhost:${up!.port}\r\n\r\n`;
    const tunnels: tls.TLSSocket[] = [];
    const answered: Promise<void>[] = [];
    const refusals: string[] = [];
    const auditFrom = proxy!.auditLines.length;
    // A slow reader on the wire: curl takes 100 KiB/s (it stops reading its socket between
    // slices; its kernel reopens the window about once in ten seconds), so to the proxy its one
    // download looks stalled most of the time, as the colluders' do. It runs through the attack
    // to its own time limit (curl exit 28); the audit must never name it (a shed reader would
    // only notice once the kernel's buffers ran dry, seconds later). The guard sheds from the
    // agents holding the most stalled connections: ranked by stall age alone, it was shed.
    const SLOW_SECS = 24;
    const slowRun = curlTransfer(
      proxy!,
      ["--limit-rate", "100k", `https://localhost:${up!.port}/download?bytes=${64 << 20}`],
      undefined,
      SLOW_SECS,
      slow,
    );
    await Bun.sleep(1_000);
    try {
      // As fast as the handshake cap per address lets one host open them (4 × 16 at once).
      await Promise.all(
        colluders.map(async (agent) => {
          for (let i = 0; i < cap; i += 16) {
            await Promise.all(
              Array.from({ length: 16 }, async () => {
                // While memory is short, an agent with stalled connections is refused more.
                const t = await openTunnel(to(agent), { connect: `localhost:${up!.port}` }).catch(
                  (e: Error) => void refusals.push(e.message),
                );
                if (!t) return;
                answered.push(stallAfterHead(t, request));
                tunnels.push(t);
              }),
            );
          }
        }),
      );
      await Bun.sleep(1500);
      await expectServed(other, 64 << 20);
      expect([proxyAlive(), cgroup!.oomKills()]).toEqual([true, 0]);
      // What each tunnel was answered before it stalled: its download (200), or — when the
      // upstream (in this process, on a busy machine) closed a new connection before answering
      // — the proxy's 502 `upstream-reset`, whole, after which the proxy closes the tunnel. This
      // runtime may never tell a paused tunnel that its connection closed, so that answer is
      // read from the bytes it got, not from a close. No other answer is right here; a tunnel
      // closed before any answer is read again with the downloads, and counts as one that ended.
      await Promise.all(answered);
      const answers = tunnels.map((t) => stalledAnswer(t));
      const downloads = tunnels.filter((_, i) => (answers[i]?.status ?? 200) === 200);
      const failed = answers.filter((a) => a !== null && a.status !== 200);
      expect(failed.filter((a) => a?.status !== 502 || a.error !== "upstream-reset")).toEqual([]);
      // The colluders read again: exactly the shed tunnels end, each before its 8 MiB; the others
      // get the head and the whole body. Told by what they got, not by how long they stay open
      // (a shed tunnel may take seconds to read what its buffers held); one that gets nothing
      // for 30 s is neither.
      const ended = await Promise.all(downloads.map((t) => readAgain(t, 8 << 20, 30_000)));
      const slowly = await slowRun;
      const shedLines = proxy!.auditLines
        .slice(auditFrom)
        .map((l) => JSON.parse(l) as Record<string, unknown>)
        .filter((l) => l.evt === "shed");
      const shedAgents = new Set(
        shedLines.flatMap((l) =>
          String(l.agents)
            .split(",")
            .map((e) => e.split(":")[0]),
        ),
      );
      const shed = shedLines.reduce((n, l) => n + Number(l.connections), 0);
      const cut = ended.filter((e) => e.ended === "closed").map((e) => e.got);
      // Refused while memory was short: told 503, or — past the few refusals an agent may have
      // being told at once — closed at once, which the agent's stack reports as a clean close
      // or, when the close overtakes what it still had to read or send, as a reset.
      const kinds = new Set(refusals);
      kinds.delete("CONNECT refused: HTTP/1.1 503 Service Unavailable");
      kinds.delete("closed before head: ");
      kinds.delete("read ECONNRESET");
      expect([...kinds]).toEqual([]);
      expect(tunnels.length + refusals.length).toBe(4 * cap);
      console.log(
        `shed ${shed} of ${tunnels.length} (${refusals.length} more refused, ${failed.length} answered 502 as their upstream closed); peak ${(cgroup!.peakBytes() / 1048576).toFixed(0)} MiB; slow reader ${slowly.bytes} bytes, curl exit ${slowly.exit}; shed agents ${[...shedAgents].join(" ")}`,
      );
      expect(shed).toBeGreaterThan(0);
      expect([...shedAgents].every((a) => /^agent-collude-[1-4]$/.test(a!))).toBe(true);
      // Neither shed nor served: what it got, and which side holds its bytes (the kernel's
      // queues of its connection, both ends: a proxy that stopped sending, or a client that
      // stopped reading).
      const stuck = downloads.flatMap((t, i) => {
        if (ended[i]!.ended !== "idle") return [];
        const port = (t as unknown as { _parent?: tls.TLSSocket })._parent?.localPort;
        const ss = Bun.spawnSync(["ss", "-tn", `( sport = :${port} or dport = :${port} )`]);
        return [{ got: ended[i]!.got, sockets: ss.stdout.toString().trim() }];
      });
      expect(stuck).toEqual([]);
      expect(cut.length).toBe(shed);
      expect(cut.every((n) => n < 8 << 20)).toBe(true);
      // The slow reader ran to its own time limit (exit 28), at its pace, never cut.
      expect(slowly.exit).toBe(28);
      expect(slowly.bytes).toBeGreaterThan((SLOW_SECS / 2) * 100 * 1024);
    } finally {
      for (const t of tunnels) closeTunnel(t);
      await slowRun;
    }
  }, 180_000);

  test("every transfer was audited with its redactions and swaps, and no value", () => {
    const requests = proxy!.auditLines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .filter((l) => l.evt === "request")
      .slice(0, 2 * AGENTS);
    const down = plantedCount(up!.spec(SIZE, true));
    const upl = plantedCount({ totalBytes: SIZE, plant: { text: DUMMY, every: 1 << 20 } });
    expect(requests.map((l) => [l.method, l.status, l.redactions, l.swaps])).toEqual([
      ...Array.from({ length: AGENTS }, () => ["GET", 200, down, 0]),
      ...Array.from({ length: AGENTS }, () => ["PUT", 200, 0, upl]),
    ]);
    const joined = proxy!.auditLines.join("\n");
    expect(joined).not.toContain(REAL);
    expect(joined).not.toContain(DUMMY);
  });
});
