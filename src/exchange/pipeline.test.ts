// The stage runner without sockets: a request parsed from bytes goes in, fake stages and a fake
// upstream act on it, and what comes out — the upstream's view, the agent's answer, the audit
// line — is checked. The real stages are tested beside their pure parts and end to end.

import { describe, expect, test } from "bun:test";
import { Writable } from "node:stream";
import { compiledSecrets, parsedHead } from "../../test/support/request-fixtures.ts";
import { HeldBody } from "../body/held-body.ts";
import type { IncomingRequest, IncomingResponse, OutgoingRequest } from "../http/message.ts";
import { ProxyError } from "../http/proxy-error.ts";
import { ResponseParser } from "../http/response-parser.ts";
import { AuditLog } from "../observe/audit.ts";
import { ProxyMetrics } from "../observe/metrics.ts";
import { RequestLog } from "../observe/request-log.ts";
import { allow, refuse } from "../policy/verdict.ts";
import type { Stage, Upstream } from "./exchange.ts";
import { type AgentConnection, createPipeline } from "./pipeline.ts";

const secrets = compiledSecrets([]);
const enc = new TextEncoder();
const TUNNEL: AgentConnection = {
  id: 7,
  agent: "agent-a",
  serial: "1f",
  tunnel: { connectTarget: "api.example.com:443", sni: "api.example.com" },
};

/** A request as the agent leg hands it over; `cancelled` tells whether its body was let go. */
function request(raw: string, body?: string) {
  const head = parsedHead(raw);
  const state = { cancelled: false, continued: 0 };
  const stream = body
    ? new ReadableStream<Uint8Array>({
        start(c) {
          c.enqueue(enc.encode(body));
          c.close();
        },
        cancel() {
          state.cancelled = true;
        },
      })
    : null;
  const req: IncomingRequest = {
    head,
    body: stream,
    bodyDone: Promise.resolve(true),
    signal: new AbortController().signal,
    sendContinue: async () => {
      state.continued++;
    },
  };
  return { req, state };
}

/** An upstream that records what it was sent and answers `raw` (or fails with `fail`). */
function upstream(raw: string, fail?: ProxyError) {
  const sent: { req: OutgoingRequest; body: string | null }[] = [];
  let cancelled = false;
  const u: Upstream = {
    async send(_to, req) {
      const body =
        req.body === null
          ? null
          : req.body instanceof Uint8Array
            ? Buffer.from(req.body).toString()
            : await new Response(req.body).text();
      sent.push({ req, body });
      if (fail) throw fail;
      const parser = new ResponseParser();
      parser.expect(req.method);
      const events = parser.feed(enc.encode(raw));
      const head = events.find((e) => e.type === "head");
      if (head?.type !== "head") throw new Error("no response head");
      const bytes = events.flatMap((e) => (e.type === "body" ? [e.data] : []));
      const answer: IncomingResponse = {
        head: head.head,
        body:
          head.head.framing.kind === "none"
            ? null
            : new ReadableStream({
                start(c) {
                  for (const b of bytes) c.enqueue(b);
                  c.close();
                },
                cancel() {
                  cancelled = true;
                },
              }),
      };
      return answer;
    },
  };
  return { u, sent, cancelled: () => cancelled };
}

function rig(stages: Stage[], up: Upstream) {
  const lines: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk, _e, cb) {
      for (const l of String(chunk).split("\n")) if (l) lines.push(JSON.parse(l));
      cb();
    },
  });
  const log = new RequestLog(new AuditLog("info", sink), new ProxyMetrics(), () => secrets);
  const run = createPipeline({ stages, upstream: up, log, secrets: () => secrets });
  return { run, lines };
}

const GET = "GET /v1/models HTTP/1.1\r\nHost: api.example.com\r\n\r\n";
const POST = "POST /v1/x HTTP/1.1\r\nHost: api.example.com\r\nContent-Length: 5\r\n\r\n";
const OK = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 2\r\n\r\nhi";

/** A stage that notes its name when it runs and passes the message on unchanged. */
function noting(name: string, seen: string[]): Stage {
  return {
    name,
    request: (_ex, out) => {
      seen.push(`${name}:request`);
      return allow(out, name === "egress" ? `allowed by ${name}` : "");
    },
    response: (_ex, res) => {
      seen.push(`${name}:response`);
      return allow(res);
    },
  };
}

async function drain(body: unknown): Promise<string> {
  if (body === null) return "";
  if (body instanceof Uint8Array) return Buffer.from(body).toString();
  return new Response(body as ReadableStream).text();
}

describe("a request that passes", () => {
  test("goes through request steps in order, then the upstream, then response steps in reverse", async () => {
    const seen: string[] = [];
    const up = upstream(OK);
    const { run, lines } = rig([noting("egress", seen), noting("outbound", seen)], up.u);
    const res = await run(request(GET).req, TUNNEL);
    expect(seen).toEqual([
      "egress:request",
      "outbound:request",
      "outbound:response",
      "egress:response",
    ]);
    expect(up.sent.map((s) => [s.req.method, s.req.target])).toEqual([["GET", "/v1/models"]]);
    expect(res.status).toBe(200);
    expect(await drain(res.body)).toBe("hi");
    // The audit line is written once, when the answer was handed over.
    expect(lines).toEqual([]);
    res.settled?.(true);
    expect(lines).toMatchObject([
      {
        evt: "request",
        conn: 7,
        agent: "agent-a",
        method: "GET",
        scheme: "https",
        host: "api.example.com",
        port: 443,
        path: "/v1/models",
        status: 200,
        bytesOut: 2,
        decision: "allow",
        reason: "allowed by egress",
      },
    ]);
  });

  test("an answer that could not be written whole is an error", async () => {
    const { run, lines } = rig([], upstream(OK).u);
    const res = await run(request(GET).req, TUNNEL);
    await drain(res.body);
    res.settled?.(false);
    expect(lines[0]).toMatchObject({
      status: 200,
      decision: "error",
      reason: "response body failed",
    });
  });
});

describe("a request refused or failed", () => {
  test("by a stage: the upstream is never asked; the agent's body is let go; the answer is the proxy's", async () => {
    const up = upstream(OK);
    const stage: Stage = {
      name: "rate-limit",
      request: () => refuse("rate-limited", "rate limit exceeded"),
    };
    const { run, lines } = rig([stage], up.u);
    const { req, state } = request(POST, "hello");
    const res = await run(req, TUNNEL);
    expect(up.sent).toEqual([]);
    expect(state.cancelled).toBe(true);
    expect(res.status).toBe(429);
    expect(res.close).toBe(true);
    expect(res.headers).toContainEqual(["x-slapenir-error", "rate-limited"]);
    expect(await drain(res.body)).toBe("slapenir: rate limit exceeded\n");
    res.settled?.(true);
    expect(lines[0]).toMatchObject({
      status: 429,
      decision: "deny",
      reason: "rate limit exceeded",
    });
  });

  test("at admission: a request that is not for this tunnel's host", async () => {
    const up = upstream(OK);
    const { run, lines } = rig([], up.u);
    const res = await run(request("GET / HTTP/1.1\r\nHost: evil.example\r\n\r\n").req, TUNNEL);
    expect(res.status).toBe(421);
    expect(up.sent).toEqual([]);
    res.settled?.(true);
    expect(lines[0]).toMatchObject({ host: "-", port: 0, decision: "deny", status: 421 });
  });

  test("by the upstream: its failure is the answer, an error", async () => {
    const up = upstream(OK, new ProxyError("upstream-timeout", "upstream did not answer in time"));
    const { run, lines } = rig([], up.u);
    const res = await run(request(GET).req, TUNNEL);
    expect(res.status).toBe(504);
    res.settled?.(true);
    expect(lines[0]).toMatchObject({
      decision: "error",
      reason: "upstream did not answer in time",
    });
  });

  test("the first refusal decides the answer, whatever failed after it", async () => {
    // A body scan records its refusal when it finds a real value, then the stream it feeds the
    // upstream fails: the agent is told about the real value, not about the failed upload.
    const stage: Stage = {
      name: "outbound",
      request: (ex, out) => {
        ex.trace.record("outbound", refuse("dlp-blocked", "real credential in request body"));
        return allow(out);
      },
    };
    const up = upstream(OK, new ProxyError("bad-request", "request body failed"));
    const { run, lines } = rig([stage], up.u);
    const res = await run(request(POST, "hello").req, TUNNEL);
    expect(res.status).toBe(403);
    expect(await drain(res.body)).toBe("slapenir: real credential in request body\n");
    res.settled?.(true);
    expect(lines[0]).toMatchObject({ decision: "deny", reason: "real credential in request body" });
  });

  test("by a response step: the upstream's body is let go", async () => {
    const up = upstream(OK);
    const stage: Stage = {
      name: "inbound",
      response: () => refuse("decode-failed", "response body is not what its label says"),
    };
    const { run } = rig([stage], up.u);
    const res = await run(request(GET).req, TUNNEL);
    expect(res.status).toBe(502);
    expect(up.cancelled()).toBe(true);
  });

  test("an upstream status outside 200–599 is not passed on", async () => {
    const up = upstream("HTTP/1.1 600 Odd\r\nContent-Length: 0\r\n\r\n");
    const { run } = rig([], up.u);
    const res = await run(request(GET).req, TUNNEL);
    expect(res.status).toBe(502);
    expect(res.headers).toContainEqual(["x-slapenir-error", "upstream-protocol"]);
  });
});

describe("held bodies", () => {
  test("a held request body is released once the upstream exchange is over", async () => {
    let released = 0;
    const stage: Stage = {
      name: "outbound",
      request: (_ex, out) =>
        allow({ ...out, body: new HeldBody(enc.encode("whole"), () => released++) }),
    };
    const up = upstream(OK);
    const { run } = rig([stage], up.u);
    const res = await run(request(POST, "hello").req, TUNNEL);
    expect(up.sent[0]!.body).toBe("whole");
    expect(released).toBe(1);
    res.settled?.(true);
    expect(released).toBe(1);
  });

  test("a held answer goes out whole and is wiped once written", async () => {
    let released = 0;
    const bytes = enc.encode("redacted answer");
    const stage: Stage = {
      name: "inbound",
      response: (_ex, res) => allow({ ...res, body: new HeldBody(bytes, () => released++) }),
    };
    const { run } = rig([stage], upstream(OK).u);
    const res = await run(request(GET).req, TUNNEL);
    expect(res.body).toBe(bytes);
    expect(released).toBe(0);
    res.settled?.(true);
    expect(released).toBe(1);
    expect(bytes.every((b) => b === 0)).toBe(true);
  });

  test("an answer to HEAD has no body: a held one is released at once", async () => {
    let released = 0;
    const stage: Stage = {
      name: "inbound",
      response: (_ex, res) =>
        allow({ ...res, body: new HeldBody(enc.encode("x"), () => released++) }),
    };
    const { run } = rig([stage], upstream(OK).u);
    const res = await run(request("HEAD / HTTP/1.1\r\nHost: api.example.com\r\n\r\n").req, TUNNEL);
    expect(res.body).toBeNull();
    expect(released).toBe(1);
  });
});
