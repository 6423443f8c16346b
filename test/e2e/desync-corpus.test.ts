// HTTP desync corpus against the live proxy (THREATS 16, 18): every raw request case of
// test/corpus/http-requests is written by a hand-driven agent inside an intercepted tunnel.
// Reject cases must get their 4xx/5xx answer, the connection must close, the upstream must
// receive nothing — and a valid request pipelined after the bad one must never be served.
// Accept cases must be forwarded (every message in them) unless a documented proxy rule
// refuses them inside a tunnel (CONNECT in a tunnel, plain http:// authority in a TLS tunnel).

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RequestParser } from "../../src/http/request-parser.ts";
import { loadHttpCorpus } from "../corpus/http-corpus.ts";
import { HostileAgent } from "../support/hostile-agent.ts";
import {
  type HostileUpstream,
  sendLength,
  startHostileUpstream,
} from "../support/hostile-upstream.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";

const HOST = "api.example.com";
let h: Harness;
let up: HostileUpstream;
let agent: HostileAgent;

beforeAll(async () => {
  h = await startHarness({
    allow: [`${HOST}:*`],
    names: [HOST],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  up = await startHostileUpstream(await h.upstreamCa.issue([HOST]));
  for (const prefix of ["/", "*"]) {
    up.on(prefix, (_r, w) => sendLength(w, [["content-type", "text/plain"]], Buffer.from("ok\n")));
  }
  agent = new HostileAgent(h);
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

/** The corpus names `api.example.com` without a port; the tunnel goes to the test port. */
function retarget(bytes: Uint8Array, port: number): Buffer {
  const text = Buffer.from(bytes).toString("latin1");
  return Buffer.from(text.replaceAll(`Host: ${HOST}\r\n`, `Host: ${HOST}:${port}\r\n`), "latin1");
}

/** True when the parser already refuses the bytes without seeing end-of-stream. */
function failsBeforeEof(bytes: Uint8Array): boolean {
  return new RequestParser().feed(bytes).some((e) => e.type === "error");
}

/** Proxy-level refusals of parser-valid requests inside a tunnel, by case name pattern. */
const REFUSED_IN_TUNNEL: readonly [RegExp, number, string][] = [
  [/^connect-/, 400, "CONNECT inside a tunnel is not supported"],
  [/absolute-form|absolute-http|scheme-case/, 421, "plain http:// authority inside a TLS tunnel"],
  [/^upgrade-h2c/, 501, "h2c upgrades are refused"],
  [/^upgrade-websocket/, 400, "a WebSocket handshake needs its Sec-WebSocket-Key"],
];

/** HTTP/1.0 answers are close-delimited: a kept-alive 1.0 connection serves one request. */
const SERVED_FIRST_ONLY = new Set(["http10-keep-alive"]);

function finalStatuses(raw: Buffer): number[] {
  return [...raw.toString("latin1").matchAll(/(?:^|\r\n)HTTP\/1\.[01] (\d{3})/g)]
    .map((m) => Number(m[1]))
    .filter((n) => n >= 200);
}

const corpus = loadHttpCorpus();

describe("reject cases: answered, closed, nothing forwarded, nothing after served", () => {
  for (const c of corpus.filter((x) => x.expect === "reject")) {
    test(c.name, async () => {
      const port = up.port;
      const bytes = retarget(c.bytes, port);
      const canary = `/canary-${c.name}`;
      const early = failsBeforeEof(bytes);
      const pipelined = early
        ? Buffer.concat([
            bytes,
            Buffer.from(`GET ${canary} HTTP/1.1\r\nHost: ${HOST}:${port}\r\n\r\n`),
          ])
        : bytes;
      const before = up.allBytes().length;
      const received = up.received.length;
      const s = await agent.tunnel(`${HOST}:${port}`);
      let closedByProxy = false;
      s.once("end", () => {
        closedByProxy = true;
      });
      // A case that only fails at end-of-stream is ended by the agent (TLS close_notify); the
      // others must be answered and closed by the proxy on its own.
      const a = await agent.send(s, pipelined, { end: !early, maxMs: 8_000 });
      if (early) {
        expect({ status: a.status, closedByProxy }).toEqual({
          status: c.status ?? 400,
          closedByProxy: true,
        });
      } else {
        expect([0, c.status ?? 400]).toContain(a.status);
      }
      // The upstream never receives a complete request. A body whose framing breaks mid-way
      // was already streaming: its head (and body bytes before the error) may have left,
      // then the upstream connection is cut — recorded by the hostile upstream as partial.
      expect(up.received.length).toBe(received);
      if (early && !/^(chunk|trailer|last-chunk|body)/.test(c.name)) {
        expect(up.allBytes().length).toBe(before);
      }
      expect(up.received.some((r) => r.target === canary)).toBe(false);
    });
  }
});

describe("accept cases: forwarded", () => {
  for (const c of corpus.filter((x) => x.expect === "accept")) {
    test(c.name, async () => {
      const port = up.port;
      const bytes = retarget(c.bytes, port);
      const before = up.received.length;
      const s = await agent.tunnel(`${HOST}:${port}`);
      const want = c.messages ?? 1;
      const a = await agent.send(s, bytes, {
        maxMs: 8_000,
        until: (got) =>
          finalStatuses(got).length >= want &&
          /\r\n0\r\n\r\n$|content-length: 0\r\n\r\n$|HTTP\/1\.1 [45]\d\d/i.test(
            got.toString("latin1"),
          ),
      });
      const refused = REFUSED_IN_TUNNEL.find(([re]) => re.test(c.name));
      if (refused) {
        expect(a.status).toBe(refused[1]);
        expect(up.received.length).toBe(before);
        return;
      }
      const statuses = finalStatuses(a.raw);
      const served = SERVED_FIRST_ONLY.has(c.name) ? 1 : want;
      expect(statuses).toEqual(Array(served).fill(200));
      expect(up.received.length - before).toBe(served);
    });
  }
});
