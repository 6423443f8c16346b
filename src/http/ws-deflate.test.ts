import { describe, expect, test } from "bun:test";
import { constants, deflateRawSync, inflateRawSync } from "node:zlib";
import { contextDeflater } from "../../test/support/ws-agent.ts";
import {
  agentTerms,
  DEFLATE_THRESHOLD,
  deflateMessage,
  MessageInflater,
  upstreamTerms,
} from "./ws-deflate.ts";
import { CLOSE, WsProtocolError } from "./ws-frames.ts";

describe("the upstream's answer to the proxy's offer", () => {
  test.each([
    [[], "off"],
    [["permessage-deflate"], { peerTakeover: true, ownBits: 15 }],
    [["permessage-deflate; server_no_context_takeover"], { peerTakeover: false, ownBits: 15 }],
    [
      ["permessage-deflate; client_no_context_takeover; server_max_window_bits=10"],
      { peerTakeover: true, ownBits: 15 },
    ],
    [['permessage-deflate; server_max_window_bits="9"'], { peerTakeover: true, ownBits: 15 }],
    // What the offer did not allow: the handshake fails.
    [["permessage-deflate; client_max_window_bits=10"], null],
    [["permessage-deflate; server_max_window_bits=7"], null],
    [["permessage-deflate; server_max_window_bits"], null],
    [["permessage-deflate; server_no_context_takeover=1"], null],
    [["permessage-deflate; server_no_context_takeover; server_no_context_takeover"], null],
    [["permessage-deflate; x-unknown"], null],
    [["permessage-deflate, permessage-deflate"], null],
    [["x-webkit-deflate-frame"], null],
  ] as const)("%j → %j", (values, want) => {
    expect(upstreamTerms(values)).toEqual(want);
  });
});

describe("the answer to an agent's offers", () => {
  test.each([
    [[], null],
    [["x-webkit-deflate-frame"], null],
    [
      ["permessage-deflate; client_max_window_bits"],
      {
        answer: "permessage-deflate; server_no_context_takeover",
        terms: { peerTakeover: true, ownBits: 15 },
      },
    ],
    [
      ["permessage-deflate; client_no_context_takeover; server_max_window_bits=10"],
      {
        answer:
          "permessage-deflate; server_no_context_takeover; server_max_window_bits=10; client_no_context_takeover",
        terms: { peerTakeover: false, ownBits: 10 },
      },
    ],
    // A window zlib cannot write raw: accepted, and the proxy never compresses toward it.
    [
      ["permessage-deflate; server_max_window_bits=8"],
      {
        answer: "permessage-deflate; server_no_context_takeover; server_max_window_bits=8",
        terms: { peerTakeover: true, ownBits: null },
      },
    ],
    // The first well-formed offer wins; malformed ones are passed over.
    [
      ["permessage-deflate; server_max_window_bits=20, permessage-deflate"],
      {
        answer: "permessage-deflate; server_no_context_takeover",
        terms: { peerTakeover: true, ownBits: 15 },
      },
    ],
    [["permessage-deflate; x=1"], null],
  ] as const)("%j → %j", (values, want) => {
    expect(agentTerms(values)).toEqual(want);
  });
});

/** Messages compressed with one context, tails removed (as a peer with context takeover sends). */
async function withContext(texts: string[], windowBits = 15): Promise<Buffer[]> {
  const compress = contextDeflater(windowBits);
  const out: Buffer[] = [];
  for (const t of texts) out.push(await compress(t));
  return out;
}

const inflate = (inf: MessageInflater, compressed: Uint8Array, split = compressed.length) => {
  const parts: Uint8Array[] = [];
  for (let i = 0; i < compressed.length; i += split) {
    parts.push(...inf.push(compressed.subarray(i, i + split)));
  }
  parts.push(...inf.end());
  return Buffer.concat(parts).toString();
};

describe("MessageInflater", () => {
  test("with context takeover: each message read in the context of the ones before, whatever the split", async () => {
    const texts = ["hello world hello world", "hello world again, hello world", "x".repeat(70_000)];
    const msgs = await withContext(texts);
    for (const split of [1, 7, 4096, 1 << 20]) {
      const inf = new MessageInflater(true, 1 << 20);
      expect(msgs.map((m) => inflate(inf, m, split))).toEqual(texts);
    }
    // Without the context, the second message does not read (a back-reference before its start).
    const fresh = new MessageInflater(false, 1 << 20);
    inflate(fresh, msgs[0]!);
    expect(() => inflate(fresh, msgs[1]!)).toThrow(WsProtocolError);
  });

  test("without context takeover: each message afresh; a final block ends one cleanly", () => {
    const inf = new MessageInflater(false, 1 << 20);
    const a = deflateRawSync("first", { finishFlush: constants.Z_SYNC_FLUSH });
    expect(inflate(inf, a.subarray(0, a.length - 4))).toBe("first");
    const b = deflateRawSync("second, ended with a final block");
    expect(inflate(inf, b)).toBe("second, ended with a final block");
    expect(inflate(inf, a.subarray(0, a.length - 4))).toBe("first");
  });

  test("a message past the cap once inflated is 1009, found within a step of it; garbage is 1007", () => {
    const bomb = deflateRawSync(Buffer.alloc(64 << 20, 0x61), {
      finishFlush: constants.Z_SYNC_FLUSH,
    });
    const inf = new MessageInflater(false, 1 << 20);
    let seen = 0;
    try {
      for (const p of inf.push(bomb)) seen += p.length;
      for (const p of inf.end()) seen += p.length;
      throw new Error("not refused");
    } catch (e) {
      expect((e as WsProtocolError).closeCode).toBe(CLOSE.tooBig);
    }
    // Refused long before 64 MiB came out: within one 4 KiB step of compressed input.
    expect(seen).toBeLessThanOrEqual(1 << 20);
    const bad = new MessageInflater(false, 1 << 20);
    expect(() => [...bad.push(new Uint8Array([0xff, 0xff, 0xff]))]).toThrow(
      expect.objectContaining({ closeCode: CLOSE.invalidPayload }),
    );
  });
});

describe("deflateMessage", () => {
  test("compresses a message on its own, as the peer inflates it; null when it would not shrink", () => {
    const text = Buffer.from(JSON.stringify({ items: Array(200).fill("the same words") }));
    for (const bits of [9, 12, 15]) {
      const z = deflateMessage(text, bits)!;
      expect(z.length).toBeLessThan(text.length);
      const back = inflateRawSync(Buffer.concat([z, Buffer.from([0, 0, 0xff, 0xff])]), {
        windowBits: bits,
        finishFlush: constants.Z_SYNC_FLUSH,
      });
      expect(back.equals(text)).toBe(true);
    }
    expect(deflateMessage(crypto.getRandomValues(new Uint8Array(DEFLATE_THRESHOLD)), 15)).toBe(
      null,
    );
  });
});
