// The cost of reading an LLM's event stream for values spread over its deltas
// (src/body/sse-deltas.ts), against the floor of any event-aware reader in the same run:
// splitting the stream into events and JSON-parsing each. A 2,000-token chat completion with
// logprobs, one token per event, fed in 16 KiB pieces; one credential's redaction variants
// with the decoded view on, as the proxy runs it.
// Run: `bun bench/sse.bench.ts`.

import { bench, group, run } from "mitata";
import { SseDeltaRedactor } from "../src/body/sse-deltas.ts";
import { redactionVariants } from "../src/credentials/secret-variants.ts";
import { InlineReplacer } from "../src/matcher/inline.ts";

const secret = new TextEncoder().encode("sk-bench-R3aL-0123456789abcdef");
// As the proxy builds it: the credential's variants, matched on the decoded view too.
const replacer = new InlineReplacer(
  redactionVariants(secret).variants.map((v) => ({
    name: "b",
    from: v.pattern,
    to: v.replacement,
  })),
  { views: true },
);
const words = "the quick brown fox jumps over a lazy dog while streaming tokens".split(" ");
let stream = "";
for (let i = 0; i < 2000; i++) {
  const token = ` ${words[i % words.length]}`;
  stream += `data: ${JSON.stringify({ id: "c1", object: "chat.completion.chunk", choices: [{ index: 0, delta: { content: token }, logprobs: { content: [{ token, logprob: -0.1, bytes: [...Buffer.from(token)], top_logprobs: [] }] } }] })}\n\n`;
}
const pieces: string[] = [];
for (let i = 0; i < stream.length; i += 16 * 1024) pieces.push(stream.slice(i, i + 16 * 1024));
console.log(`stream: ${(stream.length / 1024).toFixed(0)} KiB, 2000 events`);

group("2,000-event chat completion stream", () => {
  bench("floor: split into events, JSON.parse each", () => {
    let rest = "";
    let n = 0;
    for (const p of pieces) {
      rest += p;
      let at = rest.indexOf("\n\n");
      while (at >= 0) {
        n += JSON.parse(rest.slice(6, at)).choices.length;
        rest = rest.slice(at + 2);
        at = rest.indexOf("\n\n");
      }
    }
    return n;
  });
  bench("SseDeltaRedactor (deltas joined per channel, redacted)", () => {
    const r = new SseDeltaRedactor([replacer]);
    let n = 0;
    for (const p of pieces) n += r.push(p).length;
    return n + r.end().length;
  });
});

await run();
