import { describe, expect, test } from "bun:test";
import fc from "fast-check";
import { type BodyEvent, ChunkedDecoder, ChunkedEncoder } from "./chunked.ts";
import { HttpError } from "./http-error.ts";

const dec = new TextDecoder();
const OPTS = {
  maxChunkLineBytes: 1024,
  maxTrailerBytes: 4096,
  maxTrailerCount: 10,
  maxBodyBytes: Number.POSITIVE_INFINITY,
  errorStatus: 502 as const,
};

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

describe("chunked encoder", () => {
  test("frames data, skips empty writes, ends with trailers", () => {
    const e = new ChunkedEncoder();
    const parts = [
      ...e.encode(new TextEncoder().encode("hello")),
      ...e.encode(new Uint8Array(0)),
      ...e.encode(new Uint8Array(26).fill(0x61)),
      e.end([["X-Sum", "1"]]),
    ];
    expect(dec.decode(concat(parts))).toBe(
      `5\r\nhello\r\n1a\r\n${"a".repeat(26)}\r\n0\r\nX-Sum: 1\r\n\r\n`,
    );
  });
  test("passes the caller's bytes through without copying", () => {
    const data = new Uint8Array(3);
    expect(new ChunkedEncoder().encode(data)[1]).toBe(data);
  });
  test("refuses unsafe trailers and use after end", () => {
    const e = new ChunkedEncoder();
    expect(() => e.end([["X", "a\r\nInjected: 1"]])).toThrow(HttpError);
    const f = new ChunkedEncoder();
    expect(dec.decode(f.end())).toBe("0\r\n\r\n");
    expect(() => f.encode(new Uint8Array(1))).toThrow(RangeError);
  });

  test("decode(encode(x)) = x for any writes and any re-chunking (fast-check)", () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 300 }), { maxLength: 8 }),
        fc.array(fc.nat(), { maxLength: 8 }),
        (writes, cuts) => {
          const e = new ChunkedEncoder();
          const wire = concat([...writes.flatMap((w) => e.encode(w)), e.end()]);
          const d = new ChunkedDecoder(OPTS);
          const events: BodyEvent[] = [];
          let at = 0;
          for (const c of [...new Set(cuts.map((c) => c % (wire.length + 1)))]
            .sort((a, b) => a - b)
            .concat(wire.length)) {
            const piece = wire.slice(at, c);
            const next = d.decode(piece, 0, events);
            expect(next).toBe(piece.length); // nothing past the body's end
            at = c;
          }
          expect(d.done).toBe(true);
          const body = concat(
            events.filter((x) => x.type === "body").map((x) => (x as { data: Uint8Array }).data),
          );
          expect(body).toEqual(concat(writes));
          expect(events[events.length - 1]).toEqual({ type: "end" });
        },
      ),
      { numRuns: 300, seed: 3 },
    );
  });
});

test("decoder stops exactly after the body and leaves the rest", () => {
  const d = new ChunkedDecoder(OPTS);
  const wire = new TextEncoder().encode("2\r\nab\r\n0\r\n\r\nNEXT");
  const events: BodyEvent[] = [];
  expect(d.decode(wire, 0, events)).toBe(wire.length - 4);
});

test("decoder errors carry the configured status", () => {
  const d = new ChunkedDecoder(OPTS);
  const events: BodyEvent[] = [];
  d.decode(new TextEncoder().encode("zz\r\n"), 0, events);
  expect(events).toEqual([
    {
      type: "error",
      error: { code: "bad-chunk-size", status: 502, reason: "malformed chunk size" },
    },
  ]);
  expect(d.failed).toBe(true);
});
