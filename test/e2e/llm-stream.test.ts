// A streaming LLM that repeats what it was given (issue 15, item 5): it holds the real key (it
// came in Authorization, where the credential is presented) and streams it back a token per
// server-sent event, as OpenAI's chat completions (with logprobs), the Responses API,
// Anthropic's Messages, Google's Gemini and Cohere's chat do. No event holds the whole value, so the byte-level redactor alone
// cannot see it; the joined text of the deltas is redacted instead. Through the real proxy.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import {
  type HostileRequest,
  type HostileUpstream,
  sendChunked,
  startHostileUpstream,
} from "../support/hostile-upstream.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";

const DUMMY = "sk-dummy-llm-000000000000000000000001";
const REAL = "sk-R3aL-llm-5f4e3d2c1b0a99887766";

let h: Harness;
let up: HostileUpstream;

/** The key the request presented, cut into tokens of 1–4 characters. */
function tokensOf(r: HostileRequest): string[] {
  const key =
    r.headers.find(([k]) => k.toLowerCase() === "authorization")?.[1]?.replace(/^Bearer /, "") ??
    "";
  const text = `Sure! Your key is ${key}. Anything else?`;
  const out: string[] = [];
  for (let i = 0, n = 1; i < text.length; i += n, n = (n % 4) + 1) out.push(text.slice(i, i + n));
  return out;
}

const sse = (data: unknown, event?: string) =>
  Buffer.from(`${event ? `event: ${event}\n` : ""}data: ${JSON.stringify(data)}\n\n`);

beforeAll(async () => {
  h = await startHarness({
    credentials: [{ name: "llm", dummy: DUMMY, real: REAL, hosts: ["localhost:*"] }],
    env: { SLAPENIR_RATE_LIMIT: "off" },
  });
  up = await startHostileUpstream(await h.upstreamCa.issue(["localhost"]));
  const headers = [["content-type", "text/event-stream"]] as const;
  up.on("/v1/chat/completions", async (r, w) => {
    const events = tokensOf(r).map((t) =>
      sse({
        choices: [
          {
            index: 0,
            delta: { content: t },
            logprobs: { content: [{ token: t, bytes: [...Buffer.from(t)], top_logprobs: [] }] },
          },
        ],
      }),
    );
    await sendChunked(w, headers, [...events, Buffer.from("data: [DONE]\n\n")], [], 1);
  });
  up.on("/v1/responses", async (r, w) => {
    const events = tokensOf(r).map((delta) =>
      sse({
        type: "response.output_text.delta",
        item_id: "msg_1",
        output_index: 0,
        content_index: 0,
        delta,
      }),
    );
    await sendChunked(w, headers, events, [], 1);
  });
  // Google Gemini (`alt=sse`) and Cohere v2 chat stream the same way in their own shapes.
  up.on("/v1beta/models/gemini:streamGenerateContent", async (r, w) => {
    const events = tokensOf(r).map((text) =>
      sse({ candidates: [{ content: { parts: [{ text }], role: "model" }, index: 0 }] }),
    );
    await sendChunked(w, headers, events, [], 1);
  });
  up.on("/v2/chat", async (r, w) => {
    const events = tokensOf(r).map((text) =>
      sse(
        { type: "content-delta", index: 0, delta: { message: { content: { text } } } },
        "content-delta",
      ),
    );
    await sendChunked(w, headers, events, [], 1);
  });
  // Events ended by LF then CRLF (a blank line all the same), each token HTML-escaped where
  // it can be: the joined text is read through the decoded view too.
  up.on("/v1/odd/chat/completions", async (r, w) => {
    const events = tokensOf(r).map((t) =>
      Buffer.from(
        `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: t.replace(/-/g, "&#45;") } }] })}\n\r\n`,
      ),
    );
    await sendChunked(w, headers, events, [], 1);
  });
  up.on("/v1/messages", async (r, w) => {
    const events = tokensOf(r).map((text) =>
      sse(
        { type: "content_block_delta", index: 0, delta: { type: "text_delta", text } },
        "content_block_delta",
      ),
    );
    await sendChunked(
      w,
      headers,
      [...events, sse({ type: "message_stop" }, "message_stop")],
      [],
      1,
    );
  });
});

afterAll(async () => {
  await up?.stop();
  await h?.close();
});

/** Every delta's text, joined, as a client would show it. */
function joined(stream: string): string {
  let out = "";
  for (const block of stream.split(/\n\r?\n/)) {
    const line = block.split("\n").find((l) => l.startsWith("data: {"));
    if (!line) continue;
    const d = JSON.parse(line.slice(6));
    out +=
      d.choices?.[0]?.delta?.content ??
      d.candidates?.[0]?.content?.parts?.[0]?.text ??
      d.delta?.message?.content?.text ??
      d.delta?.text ??
      (typeof d.delta === "string" ? d.delta : "");
  }
  return out;
}

describe("a streaming LLM repeating the real key, a token per event", () => {
  for (const path of [
    "/v1/chat/completions",
    "/v1/responses",
    "/v1/messages",
    "/v1beta/models/gemini:streamGenerateContent",
    "/v2/chat",
    "/v1/odd/chat/completions",
  ]) {
    test(path, async () => {
      const r = await h.curl([
        "-N",
        "-H",
        `Authorization: Bearer ${DUMMY}`,
        "-d",
        "{}",
        `https://localhost:${up.port}${path}`,
      ]);
      expect(r.status).toBe(200);
      const text = r.body.toString();
      expect(joined(text).replace(/&#45;/g, "-")).toBe(
        "Sure! Your key is [REDACTED]. Anything else?",
      );
      // Not in the logprobs' tokens or bytes either, nor in pieces of any length.
      for (let i = 0; i + 6 <= REAL.length; i++) expect(text).not.toContain(REAL.slice(i, i + 6));
      expect(text).not.toContain(JSON.stringify([...Buffer.from(REAL.slice(0, 4))]).slice(1, -1));
    });
  }
});
