// The aws-chunked framing: read off (payload out, in any split of the input) and put back on
// exactly as sent — byte for byte, so Content-Length stays true — or with each signature
// replaced by the signer's; malformed framing refused with a reason naming what is wrong.

import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import type { StreamingMode } from "../credentials/sigv4-chunked.ts";
import { ProxyError } from "../http/proxy-error.ts";
import { allow, refuse } from "../policy/verdict.ts";
import {
  AwsChunkedBody,
  type AwsChunkedOptions,
  AwsChunkedParser,
  type ChunkSigner,
  MAX_SIGNED_CHUNK,
} from "./aws-chunked.ts";

const enc = new TextEncoder();
const SIG = (n: number) => n.toString(16).padStart(64, "a");
const payload = enc.encode("abcdefghij".repeat(30));

/** A framed body: chunks of `size`, signatures SIG(i), trailers as given. */
function framed(mode: StreamingMode, size: number, trailers: string[] = []): Uint8Array {
  const signed = mode.startsWith("STREAMING-AWS4");
  let text = "";
  let i = 0;
  for (let at = 0; at < payload.length; at += size) {
    const c = payload.subarray(at, at + size);
    text += `${c.length.toString(16)}${signed ? `;chunk-signature=${SIG(i++)}` : ""}\r\n${new TextDecoder().decode(c)}\r\n`;
  }
  text += `0${signed ? `;chunk-signature=${SIG(i)}` : ""}\r\n`;
  for (const t of trailers) text += `${t}\r\n`;
  return enc.encode(`${text}\r\n`);
}

const opts = (mode: StreamingMode, trailers: string[] = []): AwsChunkedOptions => ({
  mode,
  decodedLength: payload.length,
  trailers,
});

const CRC = "x-amz-checksum-crc32:AAAAAA==";
const TSIG = `x-amz-trailer-signature:${"b".repeat(64)}`;
const CASES: [StreamingMode, string[], string[]][] = [
  ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD", [], []],
  ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", ["x-amz-checksum-crc32"], [CRC, TSIG]],
  ["STREAMING-UNSIGNED-PAYLOAD-TRAILER", ["x-amz-checksum-crc32"], [CRC]],
];

const streamOf = (parts: Uint8Array[]) =>
  new ReadableStream<Uint8Array>({
    start(c) {
      for (const p of parts) c.enqueue(p);
      c.close();
    },
  });

async function bytes(s: ReadableStream<Uint8Array>): Promise<Uint8Array> {
  return new Uint8Array(await new Response(s).arrayBuffer());
}

/** Splits `b` into pieces of `n` bytes. */
const pieces = (b: Uint8Array, n: number) => {
  const out: Uint8Array[] = [];
  for (let i = 0; i < b.length; i += n) out.push(b.subarray(i, i + n));
  return out;
};

describe.each(CASES)("%s", (mode, declared, trailers) => {
  const body = framed(mode, 64, trailers);

  test("the payload comes out whole, the input split anywhere", async () => {
    for (const n of [1, 2, 3, 7, 64, 65, 66, 1000]) {
      const b = new AwsChunkedBody(opts(mode, declared), () => {});
      expect(new TextDecoder().decode(await bytes(b.decode(streamOf(pieces(body, n)))))).toBe(
        new TextDecoder().decode(payload),
      );
    }
  });

  test("framed again without a signer: the same bytes as sent, however the payload is split", async () => {
    for (const n of [1, 5, 64, 100, 4096]) {
      const b = new AwsChunkedBody(opts(mode, declared), () => {});
      const out = b.frame(
        b.decode(streamOf([body])).pipeThrough(
          new TransformStream({
            transform(chunk, c) {
              for (const p of pieces(chunk, n)) c.enqueue(p);
            },
          }),
        ),
      );
      expect(await bytes(out)).toEqual(body);
    }
  });
});

describe("signed again", () => {
  /** A signer that records what it was asked and answers with numbered signatures. */
  function recording(failAt = -1) {
    const asked: string[] = [];
    let n = 0;
    const signer: ChunkSigner = {
      chunk(hash, agent) {
        asked.push(`${hash}:${agent}`);
        return n === failAt ? refuse("bad-signature", "no") : allow(SIG(1000 + n++));
      },
      trailer(canonical, agent) {
        asked.push(`trailer:${canonical}:${agent}`);
        return allow("c".repeat(64));
      },
      wipe() {
        asked.push("wipe");
      },
    };
    return { signer, asked };
  }

  test("every chunk's data hash and the agent's signature go to the signer; its signatures go out, the length unchanged", async () => {
    const [mode, declared, trailers] = CASES[1]!;
    const body = framed(mode, 64, trailers);
    const b = new AwsChunkedBody(opts(mode, declared), () => {});
    const { signer, asked } = recording();
    b.resignWith(signer);
    const out = new TextDecoder().decode(await bytes(b.frame(b.decode(streamOf([body])))));
    expect(out.length).toBe(body.length);
    const hashes = [0, 64, 128, 192, 256].map((at) =>
      createHash("sha256")
        .update(payload.subarray(at, Math.min(at + 64, payload.length)))
        .digest("hex"),
    );
    hashes.push(createHash("sha256").digest("hex"));
    expect(asked).toEqual([
      ...hashes.map((h, i) => `${h}:${SIG(i)}`),
      `trailer:${CRC}\n:${"b".repeat(64)}`,
      "wipe",
    ]);
    expect(out).toContain(`40;chunk-signature=${SIG(1000)}\r\n`);
    expect(out).toContain(
      `0;chunk-signature=${SIG(1005)}\r\n${CRC}\r\nx-amz-trailer-signature:${"c".repeat(64)}\r\n\r\n`,
    );
    expect(out).not.toContain(SIG(0));
  });

  test("a chunk the signer refuses errors the stream with bad-signature, and the refusal is told", async () => {
    const [mode, declared] = CASES[0]!;
    const told: ProxyError[] = [];
    const b = new AwsChunkedBody(opts(mode, declared), (e) => told.push(e));
    const { signer, asked } = recording(2);
    b.resignWith(signer);
    const reader = b.frame(b.decode(streamOf([framed(mode, 64)]))).getReader();
    let got = "";
    const err = await (async () => {
      for (;;) {
        const r = await reader.read();
        if (r.done) return null;
        got += new TextDecoder().decode(r.value);
      }
    })().catch((e) => e);
    expect(err).toBeInstanceOf(ProxyError);
    expect(told.map((e) => e.code)).toEqual(["bad-signature"]);
    expect(asked).toContain("wipe");
    // The two chunks before it went out; nothing of the refused one.
    expect(got.split("chunk-signature=").length - 1).toBe(2);
  });

  test("an unsigned mode ignores a signer (its chunks carry none)", async () => {
    const [mode, declared, trailers] = CASES[2]!;
    const body = framed(mode, 64, trailers);
    const b = new AwsChunkedBody(opts(mode, declared), () => {});
    const { signer, asked } = recording();
    b.resignWith(signer);
    expect(await bytes(b.frame(b.decode(streamOf([body]))))).toEqual(body);
    expect(asked).toEqual(["wipe"]);
  });
});

describe("malformed framing is refused, naming what is wrong", () => {
  const [signedMode] = CASES[0]!;
  const reasons = (mode: StreamingMode, text: string, o: Partial<AwsChunkedOptions> = {}) => {
    const p = new AwsChunkedParser({ ...opts(mode), ...o });
    try {
      p.push(enc.encode(text), () => {});
      return p.done ? "done" : "incomplete";
    } catch (e) {
      return (e as ProxyError).reason;
    }
  };
  const sig = `;chunk-signature=${SIG(0)}`;
  test.each([
    ["a chunk header without its signature", "5\r\nhello\r\n", "chunk header is malformed"],
    [
      "an upper-case signature",
      `5;chunk-signature=${"A".repeat(64)}\r\n`,
      "chunk header is malformed",
    ],
    ["a size that is not hex", `5g${sig}\r\n`, "chunk header is malformed"],
    ["a chunk longer than its size", `2${sig}\r\nabc\r\n`, "longer than its chunk size"],
    ["a chunk past the decoded length", `ff${sig}\r\n`, "longer than x-amz-decoded-content-length"],
    ["an over-long line", `${"1".repeat(300)}`, "line too long"],
    [
      "a trailer in a mode without them",
      `0${sig}\r\nx-amz-checksum-crc32:AAAAAA==\r\n\r\n`,
      "trailers in a mode without them",
    ],
    ["bytes after the end", `3${sig}\r\nabc\r\n0${sig}\r\n\r\nX`, "bytes after the end"],
  ])("%s", (_, text, reason) => {
    expect(reasons(signedMode, text, { decodedLength: 3 })).toContain(reason);
  });

  test("a body shorter than x-amz-decoded-content-length", () => {
    expect(reasons(signedMode, `1${sig}\r\na\r\n0${sig}\r\n\r\n`, { decodedLength: 2 })).toContain(
      "shorter than x-amz-decoded-content-length",
    );
  });

  test("a signed chunk larger than the cap (it would be held whole)", () => {
    const size = (MAX_SIGNED_CHUNK + 1).toString(16);
    expect(reasons(signedMode, `${size}${sig}\r\n`, { decodedLength: 2 ** 40 })).toContain(
      "larger than",
    );
  });

  test("trailers: undeclared, repeated, missing, or a signature missing or misplaced", () => {
    const u = "STREAMING-UNSIGNED-PAYLOAD-TRAILER" as const;
    const t = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" as const;
    const one = { decodedLength: 0, trailers: ["x-amz-checksum-crc32"] };
    expect(reasons(u, `0\r\n${CRC}\r\n\r\n`, one)).toBe("done");
    expect(reasons(u, "0\r\nx-amz-checksum-sha256:AAAA\r\n\r\n", one)).toContain("not declared");
    expect(reasons(u, `0\r\n${CRC}\r\n${CRC}\r\n\r\n`, one)).toContain("sent twice");
    expect(reasons(u, "0\r\n\r\n", one)).toContain("is missing");
    expect(reasons(u, `0\r\n${CRC}\r\n${TSIG}\r\n\r\n`, one)).toContain("unsigned body");
    expect(reasons(t, `0${sig}\r\n${CRC}\r\n\r\n`, one)).toContain("trailer signature is missing");
    expect(reasons(t, `0${sig}\r\n${TSIG}\r\n${CRC}\r\n\r\n`, one)).toContain(
      "after the trailer signature",
    );
    expect(reasons(u, "0\r\nx-amz-checksum-crc32:not base64!\r\n\r\n", one)).toContain("malformed");
  });

  test("a body that ends early errors the payload stream and is told", async () => {
    const told: string[] = [];
    const b = new AwsChunkedBody(opts(signedMode), (e) => told.push(e.reason));
    const cut = framed(signedMode, 64).subarray(0, 100);
    expect(bytes(b.decode(streamOf([cut])))).rejects.toBeInstanceOf(ProxyError);
    await Bun.sleep(0);
    expect(told).toEqual(["aws-chunked body ended early"]);
  });
});
