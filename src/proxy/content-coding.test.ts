import { describe, expect, test } from "bun:test";
import zlib from "node:zlib";
import { decodeBody, filterAcceptEncoding, parseContentEncoding } from "./content-coding.ts";
import { ProxyError } from "./errors.ts";

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
