import { describe, expect, test } from "bun:test";
import { InlineReplacer } from "../matcher/inline.ts";
import { SseDeltaRedactor } from "./sse-deltas.ts";

const SECRET = "sk-R3aLv4lu3-0123456789";
const enc = new TextEncoder();
const replacer = new InlineReplacer([
  { name: "s", from: enc.encode(SECRET), to: enc.encode("[REDACTED]") },
]);

/** A stream's text through the redactor, fed in the given pieces; and the redaction count. */
function run(pieces: readonly string[]): { out: string; emitted: string[]; redacted: number } {
  let redacted = 0;
  const r = new SseDeltaRedactor([replacer], (n) => {
    redacted += n;
  });
  const emitted = pieces.map((p) => r.push(p));
  emitted.push(r.end());
  return { out: emitted.join(""), emitted, redacted };
}

const chat = (content: string, index = 0) =>
  `data: ${JSON.stringify({ choices: [{ index, delta: { content } }] })}\n\n`;
/** The text a client reassembles from an OpenAI chat stream, per choice. */
function chatText(stream: string, index = 0): string {
  return stream
    .split("\n\n")
    .filter((e) => e.startsWith("data: {"))
    .map((e) => JSON.parse(e.slice(6)))
    .map((d) => d.choices?.find((c: { index: number }) => c.index === index)?.delta?.content ?? "")
    .join("");
}
const tokens = (s: string, size: number) =>
  Array.from({ length: Math.ceil(s.length / size) }, (_, i) => s.slice(i * size, i * size + size));

describe("SSE deltas: a value spread over events", () => {
  test("one token per event (OpenAI chat): redacted in the joined text", () => {
    const text = `Your token is ${SECRET}, enjoy.`;
    const { out, redacted } = run(tokens(text, 3).map((t) => chat(t)));
    expect(out).not.toContain(SECRET.slice(3, 9));
    expect(chatText(out)).toBe("Your token is [REDACTED], enjoy.");
    expect(redacted).toBe(1);
  });

  test("whatever the split, including bytes cut inside events and an event per character", () => {
    const text = `a ${SECRET} b ${SECRET}`;
    for (const size of [1, 2, 5, 7]) {
      const stream = tokens(text, size)
        .map((t) => chat(t))
        .join("");
      for (const cut of [1, 9, 64]) {
        const { out } = run(tokens(stream, cut));
        expect(chatText(out)).toBe("a [REDACTED] b [REDACTED]");
      }
    }
  });

  test("the held end is a fixed length, whatever it holds: when an event leaves says nothing of its content", () => {
    // Two streams that differ only in whether a channel ends with the start of the value: the
    // same events leave at the same pushes.
    const pad = "x".repeat(SECRET.length);
    for (const tail of ["sk-R3a", "q-Zzzz"]) {
      const { emitted } = run([chat(`ends with ${tail}`), ": ping\n\n", chat(pad), chat(pad)]);
      expect(emitted.map((e) => e.length > 0)).toEqual([false, false, true, true, true]);
      expect(emitted[2]).toBe(`${chat(`ends with ${tail}`)}: ping\n\n`);
    }
  });

  test("choices are separate channels; other events pass byte for byte", () => {
    const events = [
      "event: ping\ndata: [not json]\n\n",
      chat(SECRET.slice(0, 8), 0),
      chat(SECRET.slice(0, 8), 1),
      chat(SECRET.slice(8), 1),
      chat("!", 0),
      "data: [DONE]\n\n",
    ];
    const { out } = run(events);
    expect(chatText(out, 0)).toBe(`${SECRET.slice(0, 8)}!`);
    expect(chatText(out, 1)).toBe("[REDACTED]");
    expect(out).toStartWith("event: ping\ndata: [not json]\n\n");
    expect(out).toEndWith("data: [DONE]\n\n");
  });

  test("Anthropic content_block_delta, Responses API deltas, logprobs tokens", () => {
    const anth = (text: string) =>
      `event: content_block_delta\ndata: ${JSON.stringify({ type: "content_block_delta", index: 0, delta: { type: "text_delta", text } })}\n\n`;
    const a = run(tokens(SECRET, 4).map(anth)).out;
    expect(a).not.toContain(SECRET.slice(4, 8));
    expect(a).toContain('"text":"[REDACTED]"');
    expect(a).toContain("event: content_block_delta\n");

    const resp = (delta: string) =>
      `data: ${JSON.stringify({ type: "response.output_text.delta", item_id: "m1", output_index: 0, content_index: 0, delta })}\n\n`;
    expect(run(tokens(SECRET, 5).map(resp)).out).toContain('"delta":"[REDACTED]"');

    const lp = (token: string) =>
      `data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, logprobs: { content: [{ token, bytes: [...enc.encode(token)], top_logprobs: [{ token }] }] } }] })}\n\n`;
    const l = run(tokens(SECRET, 3).map(lp)).out;
    expect(l).not.toContain(SECRET.slice(3, 6));
    expect(l).toContain('"token":"[REDACTED]"');
  });

  test("CRLF events keep their line ends when rewritten", () => {
    const crlf = (c: string) =>
      `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: c } }] })}\r\n\r\n`;
    const { out } = run(tokens(SECRET, 6).map(crlf));
    expect(
      out
        .split("\r\n\r\n")
        .filter(Boolean)
        .every((e) => e.startsWith("data: {")),
    ).toBe(true);
    expect(out).toContain('"content":"[REDACTED]"');
  });

  test("every blank line ends an event: LF CRLF, CR CR, CRLF LF; a CR at a chunk's end waits", () => {
    const data = (c: string) =>
      `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: c } }] })}`;
    for (const sep of ["\n\r\n", "\r\r", "\r\n\n", "\n\n", "\r\n\r\n"]) {
      const stream = tokens(SECRET, 4).map((t) => `${data(t)}${sep}`);
      // Cut every event right after its first line end, so a CR may arrive without its LF.
      const pieces = stream.flatMap((e) => {
        const at = e.indexOf(sep) + 1;
        return [e.slice(0, at), e.slice(at)];
      });
      const { out, redacted } = run(pieces);
      expect([sep, out.includes(SECRET.slice(4, 10))]).toEqual([sep, false]);
      expect(redacted).toBe(1);
      expect(out).toContain('"content":"[REDACTED]"');
    }
  });

  test("Gemini candidates' parts and Cohere content deltas are channels too", () => {
    const gemini = (text: string) =>
      `data: ${JSON.stringify({ candidates: [{ content: { parts: [{ text }] }, index: 0 }] })}\n\n`;
    const cohere = (text: string) =>
      `event: content-delta\ndata: ${JSON.stringify({ type: "content-delta", index: 0, delta: { message: { content: { text } } } })}\n\n`;
    for (const shape of [gemini, cohere]) {
      const { out, redacted } = run(tokens(`key: ${SECRET}!`, 3).map(shape));
      expect(out).not.toContain(SECRET.slice(3, 9));
      expect(redacted).toBe(1);
    }
  });

  test("megabytes of other events behind a held delta cut the stream instead of being held", () => {
    const r = new SseDeltaRedactor([replacer]);
    r.push(chat("Hi"));
    const ping = `event: ping\ndata: ${"p".repeat(200 * 1024)}\n\n`;
    let failed: unknown;
    try {
      for (let i = 0; i < 40; i++) r.push(ping);
    } catch (e) {
      failed = e;
    }
    expect(String(failed)).toContain("event stream held too much");
  });

  test("an event that never ends is passed on, not held", () => {
    const r = new SseDeltaRedactor([replacer]);
    const big = `data: ${"x".repeat(300 * 1024)}`;
    expect(r.push(big)).toBe(big);
    expect(r.push(`\n\n${chat("after")}`)).toBe("\n\n");
    expect(r.end()).toBe(chat("after"));
  });

  test("top_logprobs: a value spelled by the second-ranked alternatives is redacted too", () => {
    const ev = (token: string, alt: string) =>
      `data: ${JSON.stringify({
        choices: [
          {
            index: 0,
            delta: { content: token },
            logprobs: {
              content: [
                {
                  token,
                  bytes: [],
                  top_logprobs: [
                    { token, logprob: -0.1 },
                    { token: alt, logprob: -2, bytes: [...enc.encode(alt)] },
                  ],
                },
              ],
            },
          },
        ],
      })}\n\n`;
    const alts = tokens(SECRET, 3);
    const { out } = run(alts.map((a, i) => ev(`w${i} `, a)));
    expect(out).not.toContain(SECRET.slice(3, 6));
    expect(out).toContain('"token":"[REDACTED]"');
    // The chosen tokens are untouched.
    expect(chatText(out)).toBe(alts.map((_, i) => `w${i} `).join(""));
  });
});
