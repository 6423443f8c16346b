// collectBounded holds a body whole for a length-changing swap or an inline redaction: what it
// read may carry real values (a request just swapped, an upstream answer not yet redacted), so
// whatever it gives up on — too big, or a stream that fails part-way — it wipes.

import { expect, test } from "bun:test";
import { ProxyError } from "../http/proxy-error.ts";
import { collectBounded } from "./collect.ts";

/** A stream of `chunks`, then an error if `fail` is set; the chunks are the caller's to inspect. */
function streamOf(chunks: Uint8Array[], fail?: Error): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    pull(c) {
      if (i < chunks.length) c.enqueue(chunks[i++]!);
      else if (fail) c.error(fail);
      else c.close();
    },
  });
}

const filled = (n: number, byte: number) => new Uint8Array(n).fill(byte);

test("a whole body comes back in one array; the pieces it was read in are wiped", async () => {
  const chunks = [filled(3, 1), filled(4, 2)];
  const out = await collectBounded(streamOf(chunks), 7);
  expect([...out]).toEqual([1, 1, 1, 2, 2, 2, 2]);
  expect(chunks.every((c) => c.every((b) => b === 0))).toBe(true);
});

test("over the cap: 413, and every piece read, the one that went over too, is wiped", async () => {
  const chunks = [filled(4, 7), filled(4, 8)];
  const e = await collectBounded(streamOf(chunks), 6).catch((x: unknown) => x);
  expect(e).toBeInstanceOf(ProxyError);
  expect((e as ProxyError).status).toBe(413);
  expect(chunks.every((c) => c.every((b) => b === 0))).toBe(true);
});

test("a stream that fails part-way: the failure comes through, and what was read is wiped", async () => {
  const chunks = [filled(5, 9), filled(5, 9)];
  const e = await collectBounded(streamOf(chunks, new Error("upstream reset")), 100).catch(
    (x: unknown) => x,
  );
  expect((e as Error).message).toBe("upstream reset");
  expect(chunks.every((c) => c.every((b) => b === 0))).toBe(true);
});
