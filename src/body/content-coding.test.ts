import { describe, expect, mock, test } from "bun:test";
import zlib from "node:zlib";
import { ProxyError } from "../http/proxy-error.ts";
import {
  type Coding,
  DEFAULT_DECODE_LIMITS,
  decodeBody,
  filterAcceptEncoding,
  parseContentEncoding,
} from "./content-coding.ts";

const text = new TextEncoder().encode(`{"data":"${"lorem ipsum ".repeat(5000)}"}`);

function streamOf(bytes: Uint8Array, chunk = 7): ReadableStream<Uint8Array> {
  let i = 0;
  return new ReadableStream({
    pull(c) {
      if (i >= bytes.length) return c.close();
      c.enqueue(bytes.slice(i, i + chunk));
      i += chunk;
    },
  });
}

async function collect(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

const z = zlib as unknown as { zstdCompressSync(b: Uint8Array): Buffer };
const encoders: Record<string, (b: Uint8Array) => Uint8Array> = {
  gzip: (b) => zlib.gzipSync(b),
  deflate: (b) => zlib.deflateSync(b),
  "deflate(raw)": (b) => zlib.deflateRawSync(b),
  br: (b) => zlib.brotliCompressSync(b),
  zstd: (b) => z.zstdCompressSync(b),
};

describe("decodeBody", () => {
  for (const [name, enc] of Object.entries(encoders)) {
    test(`${name} decodes byte-exact in 7-byte chunks`, async () => {
      const coding = name === "deflate(raw)" ? "deflate" : name;
      const out = await collect(decodeBody(streamOf(enc(text)), parseContentEncoding([coding])));
      expect(Buffer.from(out).equals(Buffer.from(text))).toBe(true);
    });
  }

  test("stacked gzip then br (Content-Encoding: gzip, br)", async () => {
    const wire = zlib.brotliCompressSync(zlib.gzipSync(text));
    const out = await collect(decodeBody(streamOf(wire, 100), parseContentEncoding(["gzip, br"])));
    expect(Buffer.from(out).equals(Buffer.from(text))).toBe(true);
  });

  test("mislabelled body (says gzip, is plain) fails closed", async () => {
    const p = collect(decodeBody(streamOf(text), parseContentEncoding(["gzip"])));
    await expect(p).rejects.toBeInstanceOf(ProxyError);
  });

  test("truncated gzip fails closed", async () => {
    const wire = zlib.gzipSync(text);
    const p = collect(
      decodeBody(streamOf(wire.subarray(0, wire.length - 20)), parseContentEncoding(["gzip"])),
    );
    await expect(p).rejects.toBeInstanceOf(ProxyError);
  });

  test("decompression bomb is refused by ratio", async () => {
    const bomb = zlib.gzipSync(new Uint8Array(64 << 20)); // 64 MiB of zeros, ~65 KB encoded
    const p = collect(
      decodeBody(streamOf(bomb, 4096), ["gzip"], {
        maxOutputBytes: 1 << 30,
        maxRatio: 100,
        ratioGraceBytes: 1 << 20,
      }),
    );
    await expect(p).rejects.toMatchObject({ code: "decode-failed" });
  });

  test("decompression bomb is refused by size", async () => {
    const bomb = zlib.gzipSync(new Uint8Array(8 << 20));
    const p = collect(
      decodeBody(streamOf(bomb, 4096), ["gzip"], {
        maxOutputBytes: 1 << 20,
        maxRatio: 1e9,
        ratioGraceBytes: 0,
      }),
    );
    await expect(p).rejects.toMatchObject({ code: "decode-failed" });
  });
});

const MiB = 1 << 20;
// Wire bodies are built once; building them allocates, so RSS is measured only around decoding.
const gzipZeros256 = zlib.gzipSync(new Uint8Array(256 * MiB)); // ~260 KB
const gzipZeros512 = zlib.gzipSync(new Uint8Array(512 * MiB)); // ~520 KB

function rss(): number {
  Bun.gc(true);
  return process.memoryUsage().rss;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Stall (read nothing) until RSS stops moving or passes `bound`; returns the peak growth. A
 * decoder that ran ahead of its consumer keeps RSS climbing until the whole body is in memory.
 * Ends on a memory condition, not on elapsed time (the poll count is only a safety net).
 */
async function stallUntilQuiet(before: number, bound: number): Promise<number> {
  let peak = 0;
  let last = -Infinity;
  for (let i = 0; i < 100; i++) {
    await sleep(50);
    const now = rss() - before;
    peak = Math.max(peak, now);
    if (peak >= bound || (i >= 3 && Math.abs(now - last) < MiB)) break;
    last = now;
  }
  return peak;
}

/** Read the whole stream, counting bytes and checking each is zero, without keeping it. */
async function drainZeros(s: ReadableStream<Uint8Array>): Promise<number> {
  let n = 0;
  for await (const c of s) {
    if (c.some((b) => b !== 0)) throw new Error("non-zero byte");
    n += c.length;
  }
  return n;
}

describe("stacked codings: every stage capped and backpressured", () => {
  const bombs: [string, string, Uint8Array][] = [
    ["deflate of gzip of 256 MiB zeros", "gzip, deflate", zlib.deflateSync(gzipZeros256)],
    ["gzip of gzip of 256 MiB zeros", "gzip, gzip", zlib.gzipSync(gzipZeros256)],
    // The inner stage alone is the bomb; the outer stage fails on its output at once. Before the
    // fix the inner stage kept inflating, uncapped, into an unread queue.
    ["gzip(512 MiB zeros) labelled deflate, gzip", "deflate, gzip", gzipZeros512],
  ];
  for (const [name, label, wire] of bombs) {
    test(`${name} is refused; RSS stays bounded; no uncaught error after`, async () => {
      const uncaught = mock((_e: unknown) => {});
      process.on("uncaughtException", uncaught);
      try {
        const before = rss();
        const p = drainZeros(decodeBody(streamOf(wire, 16 * 1024), parseContentEncoding([label])));
        await expect(p).rejects.toMatchObject({ code: "decode-failed" });
        // Give any late decoder events a chance to fire (and throw, were they unguarded).
        for (let i = 0; i < 5; i++) await sleep(20);
        expect(rss() - before).toBeLessThan(256 * MiB);
        expect(uncaught).not.toHaveBeenCalled();
      } finally {
        process.off("uncaughtException", uncaught);
      }
    });
  }

  test("an inner stage is capped even when the plaintext is small", async () => {
    // The inner stage's output is a gzip member whose header carries a 64 MiB comment: it
    // decodes to a few bytes, so only the inner stage's own cap can refuse it.
    const member = zlib.gzipSync(Buffer.from("tiny"));
    const comment = Buffer.alloc(64 * MiB, 0x61);
    const flagged = Buffer.from(member.subarray(0, 10));
    flagged[3] = 0x10; // FLG.FCOMMENT
    const inner = Buffer.concat([flagged, comment, Buffer.from([0]), member.subarray(10)]);
    const limits = { maxOutputBytes: 8 * MiB, maxRatio: 1e9, ratioGraceBytes: 0 };
    // The trick is valid: with room enough it decodes to the tiny plaintext.
    const roomy = { ...limits, maxOutputBytes: 1 << 30 };
    const ok = await collect(
      decodeBody(streamOf(zlib.gzipSync(inner), 4096), ["gzip", "gzip"], roomy),
    );
    expect(new TextDecoder().decode(ok)).toBe("tiny");
    const p = collect(decodeBody(streamOf(zlib.gzipSync(inner), 4096), ["gzip", "gzip"], limits));
    await expect(p).rejects.toMatchObject({ code: "decode-failed" });
  });

  test("normal stacked decoding stays byte-exact (deflate, gzip and gzip, gzip)", async () => {
    for (const [label, wire] of [
      ["deflate, gzip", zlib.gzipSync(zlib.deflateSync(text))],
      ["gzip, gzip", zlib.gzipSync(zlib.gzipSync(text))],
      ["br, zstd, deflate", zlib.deflateSync(z.zstdCompressSync(zlib.brotliCompressSync(text)))],
    ] as const) {
      for (const chunk of [1, 64, 65536]) {
        const out = await collect(decodeBody(streamOf(wire, chunk), parseContentEncoding([label])));
        expect(Buffer.from(out).equals(Buffer.from(text))).toBe(true);
      }
    }
  });

  const bigBodies: [string, Coding[], () => Uint8Array, number][] = [
    ["gzip", ["gzip"], () => gzipZeros512, 512 * MiB],
    ["gzip, gzip", ["gzip", "gzip"], () => zlib.gzipSync(gzipZeros256), 256 * MiB],
  ];
  for (const [label, codings, wireOf, size] of bigBodies) {
    test(`a slow consumer of a big legit body (${label}) keeps memory bounded`, async () => {
      // Plaintext of 256–512 MiB, legit under these limits, arriving in 1 MiB wire chunks (one
      // such chunk inflates to the whole body). While the consumer stalls, no stage may decode
      // ahead of it; once it reads again, the whole body arrives intact.
      const wire = wireOf();
      const limits = { ...DEFAULT_DECODE_LIMITS, maxRatio: 1e9 };
      const before = rss();
      const s = decodeBody(streamOf(wire, MiB), codings, limits);
      const reader = s.getReader();
      let n = 0;
      for (let i = 0; i < 5; i++) {
        const r = await reader.read();
        if (r.done) throw new Error("ended early");
        n += r.value.length;
      }
      const peak = await stallUntilQuiet(before, 256 * MiB);
      reader.releaseLock();
      n += await drainZeros(s);
      expect(n).toBe(size);
      expect(peak).toBeLessThan(256 * MiB);
      expect(rss() - before).toBeLessThan(256 * MiB);
    });
  }

  test("cancelling mid-body stops decoding and throws nothing later", async () => {
    const uncaught = mock((_e: unknown) => {});
    process.on("uncaughtException", uncaught);
    try {
      const limits = { ...DEFAULT_DECODE_LIMITS, maxRatio: 1e9 };
      const s = decodeBody(streamOf(zlib.gzipSync(gzipZeros256), 1024), ["gzip", "gzip"], limits);
      const reader = s.getReader();
      await reader.read();
      await reader.cancel();
      for (let i = 0; i < 5; i++) await sleep(20);
      expect(uncaught).not.toHaveBeenCalled();
    } finally {
      process.off("uncaughtException", uncaught);
    }
  });
});

test("unknown codings fail closed", () => {
  expect(() => parseContentEncoding(["compress"])).toThrow(ProxyError);
  expect(() => parseContentEncoding(["gzip, foo"])).toThrow(ProxyError);
  expect(parseContentEncoding(["identity", "GZIP"])).toEqual(["gzip"]);
});

test("Accept-Encoding is narrowed to decodable codings", () => {
  expect(filterAcceptEncoding("gzip, deflate, br, zstd, compress, sdch")).toBe(
    "gzip, deflate, br, zstd",
  );
  expect(filterAcceptEncoding("sdch")).toBe("identity");
  expect(filterAcceptEncoding(undefined)).toBe("identity");
});
