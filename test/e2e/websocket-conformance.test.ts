// RFC 6455's framing rules through the real proxy, both ways (issue 17): each case the Autobahn
// suite is known for — reserved bits and opcodes, masking, control frames fragmented or too
// long, continuations out of place, lengths not minimal, text that is not UTF-8 (whole, or
// split across fragments), close codes and reasons, size caps — is sent by the agent, then by
// the upstream. The offender gets the RFC's close code, the other side 1001, and the audit
// line says which; nothing of a refused frame is passed on. Valid framing (fragments with a
// ping between them, a character split across fragments) passes. src/http/ws-frames.test.ts
// holds the same rules for the reader alone.

import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import type tls from "node:tls";
import {
  CLOSE,
  closePayload,
  encodeFrame,
  type FrameEvent,
  FrameReader,
  OP,
  readClose,
} from "../../src/http/ws-frames.ts";
import { type Harness, startHarness } from "../support/proxy-harness.ts";
import { closeTunnel } from "../support/raw-agent.ts";
import { wsAgent } from "../support/ws-agent.ts";
import { ok101, type RawWsUpstream, startRawWsUpstream } from "../support/ws-raw-upstream.ts";

const CAP = 64 * 1024;
const MASK = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]);
const enc = new TextEncoder();

type Dir = "agent" | "upstream";
/** A frame as `dir` must send it: masked from the agent, not from the upstream. */
const frame = (dir: Dir, opcode: number, payload: Uint8Array | string, fin = true, rsv1 = false) =>
  encodeFrame(
    { fin, rsv1, opcode },
    typeof payload === "string" ? enc.encode(payload) : payload,
    dir === "agent" ? MASK : undefined,
  );
/** Raw head bytes (for heads the writer would never produce), masked by `dir`'s rule. */
const head = (dir: Dir, b0: number, len: number[], payload = new Uint8Array(0)) => {
  const masked = dir === "agent";
  const b = [b0, (masked ? 0x80 : 0) | len[0]!, ...len.slice(1)];
  const out = Buffer.concat([Buffer.from(b), masked ? MASK : Buffer.alloc(0), payload]);
  if (masked) {
    const at = b.length + 4;
    for (let k = 0; k < payload.length; k++) out[at + k] = payload[k]! ^ MASK[k & 3]!;
  }
  return out;
};
const cat = (...parts: Uint8Array[]) => Buffer.concat(parts);
const other = (d: Dir): Dir => (d === "agent" ? "upstream" : "agent");

const cases: [string, (d: Dir) => Uint8Array, number][] = [
  ["reserved opcode 3", (d) => head(d, 0x83, [0]), CLOSE.protocolError],
  ["reserved control opcode 0xB", (d) => head(d, 0x8b, [0]), CLOSE.protocolError],
  ["RSV2", (d) => head(d, 0xa1, [0]), CLOSE.protocolError],
  ["RSV3", (d) => head(d, 0x91, [0]), CLOSE.protocolError],
  ["RSV1 with no extension negotiated", (d) => head(d, 0xc1, [0]), CLOSE.protocolError],
  ["the other side's masking", (d) => frame(other(d), OP.text, "hi"), CLOSE.protocolError],
  ["a fragmented ping", (d) => head(d, 0x09, [0]), CLOSE.protocolError],
  [
    "a 126-byte ping",
    (d) => head(d, 0x89, [126, 0, 126], new Uint8Array(126)),
    CLOSE.protocolError,
  ],
  [
    "a continuation with no message open",
    (d) => frame(d, OP.continuation, "x"),
    CLOSE.protocolError,
  ],
  [
    "a new message inside a fragmented one",
    (d) => cat(frame(d, OP.text, "a", false), frame(d, OP.text, "b")),
    CLOSE.protocolError,
  ],
  [
    "a 16-bit length that fits in 7 bits",
    (d) => head(d, 0x82, [126, 0, 100], new Uint8Array(100)),
    CLOSE.protocolError,
  ],
  [
    "a 64-bit length with its top bit set",
    (d) => head(d, 0x82, [127, 0x80, 0, 0, 0, 0, 1, 0, 0]),
    CLOSE.protocolError,
  ],
  [
    "text that is not UTF-8",
    (d) => frame(d, OP.text, new Uint8Array([0x61, 0xc3, 0x28])),
    CLOSE.invalidPayload,
  ],
  [
    "text that stops being UTF-8 in its second fragment",
    (d) =>
      cat(
        frame(d, OP.text, "fine so far ", false),
        frame(d, OP.continuation, new Uint8Array([0xed, 0xa0, 0x80])),
      ),
    CLOSE.invalidPayload,
  ],
  [
    "close code 1005 on the wire",
    (d) => frame(d, OP.close, closePayload(1005)),
    CLOSE.protocolError,
  ],
  [
    "a close payload of one byte",
    (d) => frame(d, OP.close, new Uint8Array([3])),
    CLOSE.protocolError,
  ],
  [
    "a close reason that is not UTF-8",
    (d) => frame(d, OP.close, cat(closePayload(1000), new Uint8Array([0xc3, 0x28]))),
    CLOSE.invalidPayload,
  ],
  ["a frame over the size cap", (d) => frame(d, OP.binary, new Uint8Array(CAP + 1)), CLOSE.tooBig],
  [
    "a message over the size cap in small fragments",
    (d) =>
      cat(
        frame(d, OP.binary, new Uint8Array(CAP / 2), false),
        frame(d, OP.continuation, new Uint8Array(CAP / 2), false),
        frame(d, OP.continuation, new Uint8Array(16)),
      ),
    CLOSE.tooBig,
  ],
];

let h: Harness;
let raw: RawWsUpstream;
let port = 0;
/** What the upstream side of the current case does once it has sent its 101. */
let onOpen: (s: tls.TLSSocket) => void = () => {};

beforeAll(async () => {
  h = await startHarness({
    allow: ["ws.test:*"],
    names: ["ws.test"],
    env: { SLAPENIR_WS_MAX_MESSAGE_BYTES: String(CAP), SLAPENIR_RATE_LIMIT: "off" },
  });
  const cert = await h.upstreamCa.issue(["ws.test"]);
  raw = await startRawWsUpstream(cert, (s, key) => {
    s.write(ok101(key));
    onOpen(s);
  });
  port = raw.port;
});

afterAll(async () => {
  raw?.close();
  await h?.close();
});

/** Frames the upstream received (a client's, masked), read as they come. */
function upstreamFrames(s: tls.TLSSocket) {
  const reader = new FrameReader({ from: "client", maxFrameBytes: 1 << 20, deflate: false });
  const frames: { opcode: number; fin: boolean; payload: Buffer }[] = [];
  let parts: Uint8Array[] = [];
  s.on("data", (d: Buffer) => {
    for (const e of reader.push(new Uint8Array(d)) as FrameEvent[]) {
      if (e.type === "data") parts.push(e.bytes);
      if (e.type === "end") {
        frames.push({ opcode: e.head.opcode, fin: e.head.fin, payload: Buffer.concat(parts) });
        parts = [];
      }
    }
  });
  return frames;
}

const websocketLines = async () => {
  await h.settled();
  return (await h.auditWhere(() => true, 0)).filter((l) => l.evt === "websocket").length;
};

async function run(dir: Dir, bytes: (d: Dir) => Uint8Array) {
  const before = await websocketLines();
  let seen: { opcode: number; fin: boolean; payload: Buffer }[] = [];
  onOpen = (s) => {
    seen = upstreamFrames(s);
    if (dir === "upstream") s.write(bytes("upstream"));
  };
  const c = await wsAgent(h, { target: `ws.test:${port}`, offer: null });
  expect(c.head).toStartWith("HTTP/1.1 101");
  if (dir === "agent") c.t.write(bytes("agent"));
  await c.untilClosed();
  const [line] = (await h.auditWhere((l) => l.evt === "websocket", before + 1)).slice(-1);
  closeTunnel(c.t);
  return { agentFrames: c.frames, upstreamFrames: seen, line: line! };
}

describe.each(["agent", "upstream"] as const)("sent by the %s", (dir) => {
  test.each(cases)(
    "%s: closed with the RFC's code, the other side 1001",
    async (name, bytes, code) => {
      const r = await run(dir, bytes);
      const [mine, theirs] =
        dir === "agent" ? ["agentClose", "upstreamClose"] : ["upstreamClose", "agentClose"];
      expect(r.line[mine]).toBe(code);
      expect(r.line[theirs]).toBe(CLOSE.goingAway);
      // What the agent saw: its own code, or 1001 for the upstream's fault; no data frame.
      const close = r.agentFrames.find((f) => f.opcode === OP.close);
      expect(readClose(close!.payload).code).toBe(dir === "agent" ? code : CLOSE.goingAway);
      // Nothing crossed but a close — a message too big streams up to the cap, clean, before
      // its fault (small fragments are gathered, so a short valid start does not leave).
      const passed = (dir === "agent" ? r.upstreamFrames : r.agentFrames).filter(
        (f) => f.opcode !== OP.close,
      );
      const text = Buffer.concat(passed.map((f) => f.payload));
      if (name.includes("small fragments")) {
        expect(text.length).toBeLessThanOrEqual(CAP);
        expect(passed.every((f) => !f.fin)).toBe(true);
      } else expect(passed).toEqual([]);
    },
  );
});

describe("valid framing passes", () => {
  test("fragments with a ping between them and a character split across fragments: one message, the ping too", async () => {
    const check = "✓";
    const bytes = enc.encode(check);
    let seen: { opcode: number; fin: boolean; payload: Buffer }[] = [];
    onOpen = (s) => {
      seen = upstreamFrames(s);
    };
    const c = await wsAgent(h, { target: `ws.test:${port}`, offer: null });
    c.t.write(
      cat(
        frame("agent", OP.text, cat(enc.encode("frag"), bytes.subarray(0, 1)), false),
        frame("agent", OP.ping, "p"),
        frame("agent", OP.continuation, bytes.subarray(1), false),
        frame("agent", OP.continuation, "mented"),
      ),
    );
    for (let i = 0; !seen.some((f) => f.fin && f.opcode !== OP.ping); i++) {
      expect(i).toBeLessThan(1000);
      await Bun.sleep(10);
    }
    const text = seen.filter((f) => f.opcode === OP.text || f.opcode === OP.continuation);
    expect(Buffer.concat(text.map((f) => f.payload)).toString()).toBe(`frag${check}mented`);
    expect(seen.find((f) => f.opcode === OP.ping)?.payload.toString()).toBe("p");
    closeTunnel(c.t);
  });
});
