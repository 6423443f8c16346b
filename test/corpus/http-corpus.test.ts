import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { type RequestEvent, RequestParser } from "../../src/http/request-parser.ts";
import { loadHttpCorpus } from "./http-corpus.ts";

/** Events → a comparable value: adjacent body chunks merged, heads as plain data. */
function normalise(events: RequestEvent[]): unknown[] {
  const out: unknown[] = [];
  for (const e of events) {
    const last = out[out.length - 1] as { type?: string; data?: string } | undefined;
    if (e.type === "body") {
      const text = Buffer.from(e.data).toString("latin1");
      if (last?.type === "body") last.data += text;
      else out.push({ type: "body", data: text });
    } else if (e.type === "head") {
      out.push({ type: "head", head: { ...e.head, headers: e.head.headers.toJSON() } });
    } else if (e.type === "trailers") {
      out.push({ type: "trailers", trailers: e.trailers.toJSON() });
    } else {
      out.push(e);
    }
  }
  return out;
}

function runChunks(
  chunks: Uint8Array[],
  options?: ConstructorParameters<typeof RequestParser>[0],
): { events: unknown[]; state: string } {
  const p = new RequestParser(options);
  const events: RequestEvent[] = [];
  for (const c of chunks) events.push(...p.feed(c));
  events.push(...p.finish());
  return { events: normalise(events), state: p.state };
}

function splitAt(bytes: Uint8Array, cuts: number[]): Uint8Array[] {
  const points = [...new Set(cuts.map((c) => c % (bytes.length + 1)))].sort((a, b) => a - b);
  const chunks: Uint8Array[] = [];
  let at = 0;
  for (const p of points) {
    chunks.push(bytes.slice(at, p));
    at = p;
  }
  chunks.push(bytes.slice(at));
  return chunks;
}

const corpus = loadHttpCorpus();

test("corpus size: at least 80 reject and 20 accept cases, unique names", () => {
  const rejects = corpus.filter((c) => c.expect === "reject").length;
  const accepts = corpus.filter((c) => c.expect === "accept").length;
  expect(rejects).toBeGreaterThanOrEqual(80);
  expect(accepts).toBeGreaterThanOrEqual(20);
  expect(new Set(corpus.map((c) => c.name)).size).toBe(corpus.length);
});

describe("http request corpus", () => {
  for (const c of corpus) {
    test(`${c.expect}: ${c.name}`, () => {
      const whole = runChunks([c.bytes]);
      const errors = whole.events.filter((e) => (e as { type: string }).type === "error");
      if (c.expect === "accept") {
        expect(errors).toEqual([]);
        const ends = whole.events.filter((e) => (e as { type: string }).type === "end").length;
        expect(ends).toBe(c.messages ?? 1);
      } else {
        expect(errors).toEqual([
          {
            type: "error",
            error: { code: c.code, status: c.status ?? 400, reason: expect.any(String) },
          },
        ]);
        // Dead state: the error is the last event and nothing follows it.
        expect(whole.events[whole.events.length - 1]).toEqual(errors[0]);
        expect(whole.state).toBe("dead");
        // A reject case must fail inside its first request: nothing of a later one parsed.
        expect(whole.events.filter((e) => (e as { type: string }).type === "end").length).toBe(0);
      }
      // Chunking invariance: one byte at a time gives the identical outcome.
      const single = Array.from(c.bytes, (b) => Uint8Array.of(b));
      expect(runChunks(single)).toEqual(whole);
    });
  }
});

test("random chunkings of every corpus case give identical results (fast-check)", () => {
  const expected = corpus.map((c) => runChunks([c.bytes]));
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: corpus.length - 1 }),
      fc.array(fc.nat(), { maxLength: 12 }),
      (i, cuts) => {
        const c = corpus[i]!;
        expect(runChunks(splitAt(c.bytes, cuts))).toEqual(expected[i]!);
      },
    ),
    { numRuns: 1500, seed: 0x5eed },
  );
});

test("bytes after a rejected request are never parsed", () => {
  const bad = corpus.filter((c) => c.expect === "reject" && c.code !== "incomplete-request");
  const next = Buffer.from("GET /next HTTP/1.1\r\nHost: api.example.com\r\n\r\n");
  for (const c of bad) {
    const p = new RequestParser();
    const events = [...p.feed(c.bytes), ...p.feed(next), ...p.finish()];
    const afterError = events.slice(events.findIndex((e) => e.type === "error") + 1);
    expect({ name: c.name, afterError }).toEqual({ name: c.name, afterError: [] });
  }
});

test("mutated corpus requests: never a throw, same outcome whatever the chunking (fast-check)", () => {
  const accepts = corpus.filter((c) => c.expect === "accept");
  const interesting = [0x00, 0x09, 0x0a, 0x0d, 0x20, 0x2c, 0x3a, 0x3b, 0x30, 0x61, 0x7f, 0xff];
  fc.assert(
    fc.property(
      fc.integer({ min: 0, max: accepts.length - 1 }),
      fc.array(fc.tuple(fc.nat(), fc.constantFrom(...interesting), fc.boolean()), {
        minLength: 1,
        maxLength: 4,
      }),
      fc.array(fc.nat(), { maxLength: 8 }),
      fc.constantFrom(undefined, {
        maxRequestLineBytes: 40,
        maxHeaderBytes: 60,
        maxChunkLineBytes: 8,
      }),
      (i, edits, cuts, options) => {
        const bytes = Array.from(accepts[i]!.bytes);
        for (const [at, byte, insert] of edits) {
          const pos = at % (bytes.length + 1);
          if (insert) bytes.splice(pos, 0, byte);
          else bytes[Math.min(pos, bytes.length - 1)] = byte;
        }
        const input = Uint8Array.from(bytes);
        const whole = runChunks([input], options);
        expect(runChunks(splitAt(input, cuts), options)).toEqual(whole);
        // Exactly one terminal verdict shape: an error is always the last event.
        const errIdx = whole.events.findIndex((e) => (e as { type: string }).type === "error");
        if (errIdx !== -1) expect(errIdx).toBe(whole.events.length - 1);
      },
    ),
    { numRuns: 3000, seed: 0xbad },
  );
});
