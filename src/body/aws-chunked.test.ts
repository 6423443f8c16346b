// The aws-chunked framing: read off (payload out, in any split of the input, each chunk's
// signature verified as it arrives) and put back on with the same sizes and trailers — so the
// same Content-Length — and the signer's signatures; trailing checksums recomputed; malformed
// or free-form framing refused with a reason naming what is wrong.

import { describe, expect, test } from "bun:test";
import { createHash } from "node:crypto";
import zlib from "node:zlib";
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
const dec = new TextDecoder();
const SIG = (n: number) => n.toString(16).padStart(64, "a");
const payload = enc.encode("abcdefghij".repeat(30));
const crc32 = (b: Uint8Array) => {
  const out = Buffer.alloc(4);
  out.writeUInt32BE(zlib.crc32(b) >>> 0);
  return out.toString("base64");
};
const CRC = `x-amz-checksum-crc32:${crc32(payload)}`;
const TSIG = `x-amz-trailer-signature:${"b".repeat(64)}`;

/** A framed body: chunks of `size`, signatures SIG(i) in signed modes, trailers as given. */
function framed(mode: StreamingMode, size: number, trailers: string[] = [], body = payload) {
  const signed = mode.startsWith("STREAMING-AWS4");
  let text = "";
  let i = 0;
  for (let at = 0; at < body.length; at += size) {
    const c = body.subarray(at, at + size);
    text += `${c.length.toString(16)}${signed ? `;chunk-signature=${SIG(i++)}` : ""}\r\n${dec.decode(c)}\r\n`;
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

const CASES: [StreamingMode, string[], string[]][] = [
  ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD", [], []],
  ["STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER", ["x-amz-checksum-crc32"], [CRC, TSIG]],
  ["STREAMING-UNSIGNED-PAYLOAD-TRAILER", ["x-amz-checksum-crc32"], [CRC]],
];

/**
 * A signer that accepts the agent chain SIG(0), SIG(1), … (and the trailer signature b…b),
 * refuses at `failAt`, signs with SIG(1000 + n), and records what it was asked.
 */
function recording(failAt = -1) {
  const asked: string[] = [];
  let verified = 0;
  let signed = 0;
  const signer: ChunkSigner = {
    verifyChunk(hash, agent) {
      asked.push(`verify ${hash}:${agent}`);
      const n = verified++;
      return n === failAt || agent !== SIG(n) ? refuse("bad-signature", "no") : allow(null);
    },
    signChunk(hash) {
      asked.push(`sign ${hash}`);
      return SIG(1000 + signed++);
    },
    verifyTrailer(canonical, agent) {
      asked.push(`verify trailer ${canonical}:${agent}`);
      return agent === "b".repeat(64) ? allow(null) : refuse("bad-signature", "no");
    },
    signTrailer(canonical) {
      asked.push(`sign trailer ${canonical}`);
      return "c".repeat(64);
    },
    wipe() {
      asked.push("wipe");
    },
  };
  return { signer, asked };
}

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

const pieces = (b: Uint8Array, n: number) => {
  const out: Uint8Array[] = [];
  for (let i = 0; i < b.length; i += n) out.push(b.subarray(i, i + n));
  return out;
};

/** A body for `mode`, given a recording signer when its chunks are signed. */
function body(mode: StreamingMode, declared: string[], failAt = -1) {
  const b = new AwsChunkedBody(opts(mode, declared), () => {});
  const r = recording(failAt);
  b.resignWith(r.signer);
  return { b, asked: r.asked };
}

describe.each(CASES)("%s", (mode, declared, trailers) => {
  const framedBody = framed(mode, 64, trailers);

  test("the payload comes out whole, the input split anywhere", async () => {
    for (const n of [1, 2, 3, 7, 64, 65, 66, 1000]) {
      const { b } = body(mode, declared);
      expect(dec.decode(await bytes(b.decode(streamOf(pieces(framedBody, n)))))).toBe(
        dec.decode(payload),
      );
    }
  });

  test("framed again: the same length, the same sizes and trailers, however the payload is split", async () => {
    for (const n of [1, 5, 64, 100, 4096]) {
      const { b } = body(mode, declared);
      const out = b.frame(
        b.decode(streamOf([framedBody])).pipeThrough(
          new TransformStream({
            transform(chunk, c) {
              for (const p of pieces(chunk, n)) c.enqueue(p);
            },
          }),
        ),
      );
      const text = dec.decode(await bytes(out));
      expect(text.length).toBe(framedBody.length);
      // Unsigned: byte for byte; signed: the signer's signatures in the agent's places.
      const expected = dec
        .decode(framedBody)
        .replace(/chunk-signature=[0-9a-f]{64}/g, () => "chunk-signature=X")
        .replace(/x-amz-trailer-signature:[0-9a-f]{64}/, "x-amz-trailer-signature:T");
      expect(
        text
          .replace(/chunk-signature=[0-9a-f]{64}/g, () => "chunk-signature=X")
          .replace(/x-amz-trailer-signature:[0-9a-f]{64}/, "x-amz-trailer-signature:T"),
      ).toBe(expected);
      if (mode !== "STREAMING-UNSIGNED-PAYLOAD-TRAILER") expect(text).not.toContain(SIG(0));
    }
  });
});

describe("signed again", () => {
  test("each chunk is verified as it arrives and signed as it leaves, over the same data hash", async () => {
    const [mode, declared, trailers] = CASES[1]!;
    const { b, asked } = body(mode, declared);
    const out = dec.decode(await bytes(b.frame(b.decode(streamOf([framed(mode, 64, trailers)])))));
    const hashes = [0, 64, 128, 192, 256].map((at) =>
      createHash("sha256")
        .update(payload.subarray(at, Math.min(at + 64, payload.length)))
        .digest("hex"),
    );
    hashes.push(createHash("sha256").digest("hex"));
    expect(asked.filter((a) => a.startsWith("verify "))).toEqual([
      ...hashes.map((h, i) => `verify ${h}:${SIG(i)}`),
      `verify trailer ${CRC}\n:${"b".repeat(64)}`,
    ]);
    expect(asked.filter((a) => a.startsWith("sign "))).toEqual([
      ...hashes.map((h) => `sign ${h}`),
      `sign trailer ${CRC}\n`,
    ]);
    expect(asked.at(-1)).toBe("wipe");
    expect(out).toContain(`40;chunk-signature=${SIG(1000)}\r\n`);
    expect(out).toContain(
      `0;chunk-signature=${SIG(1005)}\r\n${CRC}\r\nx-amz-trailer-signature:${"c".repeat(64)}\r\n\r\n`,
    );
  });

  test("a chunk off the agent's chain fails the payload with bad-signature before its last bytes pass", async () => {
    const [mode, declared] = CASES[0]!;
    const told: ProxyError[] = [];
    const b = new AwsChunkedBody(opts(mode, declared), (e) => told.push(e));
    const r = recording(2);
    b.resignWith(r.signer);
    const reader = b.decode(streamOf([framed(mode, 64)])).getReader();
    let got = 0;
    const err = await (async () => {
      for (;;) {
        const x = await reader.read();
        if (x.done) return null;
        got += x.value.length;
      }
    })().catch((e) => e);
    expect(err).toBeInstanceOf(ProxyError);
    expect(told.map((e) => e.code)).toEqual(["bad-signature"]);
    expect(r.asked).toContain("wipe");
    expect(got).toBeLessThanOrEqual(128);
  });

  test("a body read whole before the signer came (a small one, scanned inline) is verified when it comes", async () => {
    const [mode, declared] = CASES[0]!;
    const b = new AwsChunkedBody(opts(mode, declared), () => {});
    const payloadOut = await bytes(b.decode(streamOf([framed(mode, 64)])));
    expect(payloadOut.length).toBe(payload.length);
    const bad = recording(3);
    expect(b.resignWith(bad.signer)?.code).toBe("bad-signature");
    expect(bad.asked).toContain("wipe");
    const again = new AwsChunkedBody(opts(mode, declared), () => {});
    await bytes(again.decode(streamOf([framed(mode, 64)])));
    expect(again.resignWith(recording().signer)).toBeNull();
  });

  test("a payload the scan changed (a real value, marked) fails as dlp-blocked, not as a signature", async () => {
    const [mode, declared] = CASES[0]!;
    const told: ProxyError[] = [];
    const b = new AwsChunkedBody(opts(mode, declared), (e) => told.push(e));
    b.resignWith(recording().signer);
    const marked = b.decode(streamOf([framed(mode, 64)])).pipeThrough(
      new TransformStream<Uint8Array, Uint8Array>({
        transform(chunk, c) {
          const copy = chunk.slice();
          copy[0] = 0x2a;
          c.enqueue(copy);
        },
      }),
    );
    expect(bytes(b.frame(marked))).rejects.toBeInstanceOf(ProxyError);
    await Bun.sleep(0);
    expect(told.map((e) => e.code)).toEqual(["dlp-blocked"]);
  });

  test("a signed mode with no signer fails closed; an unsigned one ignores a signer", async () => {
    const [mode, declared] = CASES[0]!;
    const b = new AwsChunkedBody(opts(mode, declared), () => {});
    expect(bytes(b.frame(b.decode(streamOf([framed(mode, 64)]))))).rejects.toBeInstanceOf(
      ProxyError,
    );
    const [umode, udeclared, utrailers] = CASES[2]!;
    const { b: u, asked } = body(umode, udeclared);
    const whole = framed(umode, 64, utrailers);
    expect(await bytes(u.frame(u.decode(streamOf([whole]))))).toEqual(whole);
    expect(asked).toEqual(["wipe"]);
  });
});

describe("malformed or free-form framing is refused, naming what is wrong", () => {
  const [signedMode] = CASES[0]!;
  const u = "STREAMING-UNSIGNED-PAYLOAD-TRAILER" as const;
  const reasons = (mode: StreamingMode, text: string, o: Partial<AwsChunkedOptions> = {}) => {
    try {
      const p = new AwsChunkedParser({ ...opts(mode), ...o });
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
    ["a size with a leading zero", `03${sig}\r\n`, "no leading zeros"],
    ["a size in upper-case hex", `A${sig}\r\n`, "lower-case hex"],
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

  test("trailing checksums: each must be the payload's, of an algorithm the proxy computes", () => {
    const one = { decodedLength: 5, trailers: ["x-amz-checksum-crc32"] };
    const hello = enc.encode("hello");
    const good = `5\r\nhello\r\n0\r\nx-amz-checksum-crc32:${crc32(hello)}\r\n\r\n`;
    expect(reasons(u, good, one)).toBe("done");
    // Any other value would be the agent's free text leaving unscanned.
    expect(reasons(u, good.replace(crc32(hello), "QUJDRA=="), one)).toContain(
      "does not match the payload",
    );
    for (const [name, value] of [
      [
        "x-amz-checksum-crc32c",
        (() => {
          // CRC-32C (Castagnoli) of "hello" is 0x9a71bb4c.
          return Buffer.from([0x9a, 0x71, 0xbb, 0x4c]).toString("base64");
        })(),
      ],
      ["x-amz-checksum-sha256", createHash("sha256").update(hello).digest("base64")],
      ["x-amz-checksum-sha1", createHash("sha1").update(hello).digest("base64")],
    ] as const) {
      expect(
        reasons(u, `5\r\nhello\r\n0\r\n${name}:${value}\r\n\r\n`, {
          decodedLength: 5,
          trailers: [name],
        }),
      ).toBe("done");
    }
    expect(reasons(u, "", { trailers: ["x-amz-checksum-crc64nvme"] })).toContain(
      "not a checksum the proxy can verify",
    );
    expect(reasons(u, "", { trailers: [] })).toContain("needs x-amz-trailer");
  });

  test("trailers: undeclared, repeated, missing, or a signature missing or misplaced", () => {
    const t = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER" as const;
    const none = { decodedLength: 0, trailers: ["x-amz-checksum-crc32"] };
    const ZERO = `x-amz-checksum-crc32:${crc32(new Uint8Array(0))}`;
    expect(reasons(u, `0\r\n${ZERO}\r\n\r\n`, none)).toBe("done");
    expect(reasons(u, "0\r\nx-amz-checksum-sha256:AAAA\r\n\r\n", none)).toContain("not declared");
    expect(reasons(u, `0\r\n${ZERO}\r\n${ZERO}\r\n\r\n`, none)).toContain("sent twice");
    expect(reasons(u, "0\r\n\r\n", none)).toContain("is missing");
    expect(reasons(u, `0\r\n${ZERO}\r\n${TSIG}\r\n\r\n`, none)).toContain("unsigned body");
    expect(reasons(t, `0${sig}\r\n${ZERO}\r\n\r\n`, none)).toContain(
      "trailer signature is missing",
    );
    expect(reasons(t, `0${sig}\r\n${TSIG}\r\n${ZERO}\r\n\r\n`, none)).toContain(
      "after the trailer signature",
    );
    expect(reasons(u, "0\r\nx-amz-checksum-crc32:not base64!\r\n\r\n", none)).toContain(
      "malformed",
    );
  });

  test("a body that ends early errors the payload stream and is told", async () => {
    const told: string[] = [];
    const b = new AwsChunkedBody(opts(signedMode), (e) => told.push(e.reason));
    b.resignWith(recording().signer);
    const cut = framed(signedMode, 64).subarray(0, 100);
    expect(bytes(b.decode(streamOf([cut])))).rejects.toBeInstanceOf(ProxyError);
    await Bun.sleep(0);
    expect(told).toEqual(["aws-chunked body ended early"]);
  });
});
