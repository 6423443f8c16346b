import { describe, expect, test } from "bun:test";
import type { ExchangeView } from "./activity.ts";
import { createAdminApp, STREAM_BACKLOG } from "./admin-app.ts";
import { ProxyMetrics } from "./metrics.ts";

const TOKEN = "t".repeat(43);

function app() {
  const watchers = new Set<(e: ExchangeView) => void>();
  const a = createAdminApp(new ProxyMetrics(), {
    startedAt: Date.now(),
    version: "test",
    token: () => TOKEN,
    ready: () => true,
    summary: () => ({}),
    activity: {
      recent: () => [],
      watch: (fn) => {
        watchers.add(fn);
        return () => watchers.delete(fn);
      },
      agents: () => [],
      reasons: () => [],
      certificateExpiresAt: () => null,
    },
  });
  const emit = (path: string) => {
    for (const w of watchers) {
      w({
        at: new Date(0).toISOString(),
        agent: "agent-a",
        method: "GET",
        host: "h.example",
        port: 443,
        path,
        decision: "allow",
        reason: "",
        status: 200,
        swaps: 0,
        redactions: 0,
        durationMs: 1,
      });
    }
  };
  return { fetch: (r: Request) => a.fetch(r), emit, watchers };
}

/** Reads SSE events from `body` until `done` says stop. */
async function events(
  body: ReadableStream<Uint8Array>,
  done: (seen: { event: string; data: string }[]) => boolean,
) {
  const reader = body.getReader();
  const seen: { event: string; data: string }[] = [];
  let text = "";
  while (!done(seen)) {
    const { value } = await reader.read();
    text += new TextDecoder().decode(value);
    const blocks = text.split("\n\n");
    text = blocks.pop()!;
    for (const b of blocks) {
      const event = /^event: (.*)$/m.exec(b)?.[1];
      const data = /^data: (.*)$/m.exec(b)?.[1];
      if (event && data !== undefined) seen.push({ event, data });
    }
  }
  reader.releaseLock();
  return seen;
}

describe("the live exchange stream", () => {
  test("a reader that stops reading holds a bounded backlog and is told what it missed", async () => {
    const a = app();
    const res = await a.fetch(new Request("http://admin/api/exchanges/stream"));
    expect(res.headers.get("content-type")).toStartWith("text/event-stream");
    // Nothing is read while 5,000 exchanges happen.
    for (let i = 0; i < 5_000; i++) a.emit(`/${i}`);
    const seen = await events(res.body!, (s) => s.some((e) => e.event === "dropped"));
    const exchanges = seen.filter((e) => e.event === "exchange");
    expect(seen[0]!.event).toBe("ready");
    // The queue held at most its backlog (the ready event was one of them).
    expect(exchanges.length).toBe(STREAM_BACKLOG - 1);
    expect(JSON.parse(seen.find((e) => e.event === "dropped")!.data)).toEqual({
      count: 5_000 - exchanges.length,
    });
    // Reading again, it follows the exchanges as they come.
    a.emit("/after");
    const more = await events(res.body!, (s) => s.some((e) => e.event === "exchange"));
    expect(JSON.parse(more.at(-1)!.data).path).toBe("/after");
    await res.body!.cancel();
    expect(a.watchers.size).toBe(0);
  });

  test("only exchanges matching the filter are streamed", async () => {
    const a = app();
    const res = await a.fetch(new Request("http://admin/api/exchanges/stream?host=other.example"));
    a.emit("/not-this");
    const seen = await events(res.body!, (s) => s.length >= 1);
    expect(seen.map((e) => e.event)).toEqual(["ready"]);
    await res.body!.cancel();
  });
});

describe("operator actions", () => {
  test("need the bearer token, compared whole", async () => {
    const a = app();
    for (const auth of [
      undefined,
      "Bearer ",
      `Bearer ${TOKEN.slice(1)}`,
      `Bearer ${TOKEN}x`,
      `Basic ${TOKEN}`,
    ]) {
      const res = await a.fetch(
        new Request("http://admin/reload", {
          method: "POST",
          headers: auth ? { authorization: auth } : {},
        }),
      );
      expect(res.status).toBe(401);
    }
    const ok = await a.fetch(
      new Request("http://admin/reload", {
        method: "POST",
        headers: { authorization: `Bearer ${TOKEN}` },
      }),
    );
    // Authorized; this proxy has no reload to offer.
    expect(ok.status).toBe(404);
  });
});
