// RFC 6455 framing as a conformance table (the cases the Autobahn suite is known for:
// fragmentation, control frames inside fragments, reserved opcodes and bits, masking, lengths,
// close codes and UTF-8), each read whole and split at every byte; and the writer against the
// reader for every length class.

import { describe, expect, test } from "bun:test";
import {
  CLOSE,
  closeCodeAllowed,
  closePayload,
  encodeFrame,
  type FrameEvent,
  FrameReader,
  OP,
  readClose,
  WsProtocolError,
} from "./ws-frames.ts";

const MASK = new Uint8Array([0x37, 0xfa, 0x21, 0x3d]);
const enc = new TextEncoder();

/** A frame as a client sends it (masked) or a server does. */
const frame = (
  from: "client" | "server",
  opcode: number,
  payload: Uint8Array | string,
  fin = true,
  rsv1 = false,
) =>
  encodeFrame(
    { fin, rsv1, opcode },
    typeof payload === "string" ? enc.encode(payload) : payload,
    from === "client" ? MASK : undefined,
  );

const join = (...parts: Uint8Array[]) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
};

/** Frames read: [opcode, fin, payload text] per frame, or the close code of the error. */
function read(
  from: "client" | "server",
  bytes: Uint8Array,
  split = bytes.length,
  opts: { deflate?: boolean; max?: number } = {},
): [number, boolean, string][] | number {
  const r = new FrameReader({
    from,
    maxFrameBytes: opts.max ?? 1 << 20,
    deflate: opts.deflate ?? false,
  });
  const frames: [number, boolean, string][] = [];
  let payload: Uint8Array[] = [];
  try {
    for (let i = 0; i < bytes.length; i += split) {
      for (const e of r.push(bytes.subarray(i, i + split)) as FrameEvent[]) {
        if (e.type === "data") payload.push(e.bytes);
        if (e.type === "end") {
          frames.push([e.head.opcode, e.head.fin, new TextDecoder().decode(join(...payload))]);
          payload = [];
        }
      }
    }
  } catch (e) {
    if (e instanceof WsProtocolError) return e.closeCode;
    throw e;
  }
  return frames;
}

const valid: [string, "client" | "server", Uint8Array, [number, boolean, string][]][] = [
  [
    "a masked text frame from a client",
    "client",
    frame("client", OP.text, "hello"),
    [[OP.text, true, "hello"]],
  ],
  [
    "an unmasked text frame from a server",
    "server",
    frame("server", OP.text, "hello"),
    [[OP.text, true, "hello"]],
  ],
  ["an empty frame", "client", frame("client", OP.binary, ""), [[OP.binary, true, ""]]],
  [
    "a fragmented message with a ping and a pong between its fragments",
    "client",
    join(
      frame("client", OP.text, "frag", false),
      frame("client", OP.ping, "p"),
      frame("client", OP.continuation, "men", false),
      frame("client", OP.pong, ""),
      frame("client", OP.continuation, "ted"),
    ),
    [
      [OP.text, false, "frag"],
      [OP.ping, true, "p"],
      [OP.continuation, false, "men"],
      [OP.pong, true, ""],
      [OP.continuation, true, "ted"],
    ],
  ],
  [
    "a 126-byte frame (16-bit length)",
    "server",
    frame("server", OP.binary, "x".repeat(126)),
    [[OP.binary, true, "x".repeat(126)]],
  ],
  [
    "a 65536-byte frame (64-bit length)",
    "server",
    frame("server", OP.binary, "y".repeat(65536)),
    [[OP.binary, true, "y".repeat(65536)]],
  ],
  [
    "a close frame",
    "client",
    frame("client", OP.close, closePayload(1000, "bye")),
    [[OP.close, true, new TextDecoder().decode(closePayload(1000, "bye"))]],
  ],
];

describe("valid framing is read the same whole and split at every byte", () => {
  test.each(valid)("%s", (_, from, bytes, expected) => {
    expect(read(from, bytes)).toEqual(expected);
    if (bytes.length < 2000)
      for (const n of [1, 2, 3, 5, 7]) expect(read(from, bytes, n)).toEqual(expected);
  });

  test("RSV1 on the first frame of a message, where permessage-deflate was negotiated", () => {
    const bytes = join(
      frame("server", OP.text, "a", false, true),
      frame("server", OP.continuation, "b"),
    );
    expect(read("server", bytes, bytes.length, { deflate: true })).toEqual([
      [OP.text, false, "a"],
      [OP.continuation, true, "b"],
    ]);
  });
});

/** A frame head written by hand: byte 0 and byte 1, then the rest. */
const raw = (...bytes: number[]) => new Uint8Array(bytes);

const invalid: [
  string,
  "client" | "server",
  Uint8Array,
  number,
  { deflate?: boolean; max?: number }?,
][] = [
  ["reserved opcode 3", "server", raw(0x83, 0x00), CLOSE.protocolError],
  ["reserved opcode 7", "server", raw(0x87, 0x00), CLOSE.protocolError],
  ["reserved control opcode 0xB", "server", raw(0x8b, 0x00), CLOSE.protocolError],
  ["reserved control opcode 0xF", "server", raw(0x8f, 0x00), CLOSE.protocolError],
  ["RSV2", "server", raw(0xa1, 0x00), CLOSE.protocolError],
  ["RSV3", "server", raw(0x91, 0x00), CLOSE.protocolError],
  ["RSV1 with no extension negotiated", "server", raw(0xc1, 0x00), CLOSE.protocolError],
  ["RSV1 on a control frame", "server", raw(0xc9, 0x00), CLOSE.protocolError, { deflate: true }],
  [
    "RSV1 on a continuation",
    "server",
    join(frame("server", OP.text, "a", false, true), raw(0xc0, 0x00)),
    CLOSE.protocolError,
    { deflate: true },
  ],
  ["a client frame without a mask", "client", frame("server", OP.text, "hi"), CLOSE.protocolError],
  ["a server frame with a mask", "server", frame("client", OP.text, "hi"), CLOSE.protocolError],
  ["a fragmented ping", "server", raw(0x09, 0x00), CLOSE.protocolError],
  [
    "a 126-byte ping",
    "server",
    join(raw(0x89, 126, 0, 126), new Uint8Array(126)),
    CLOSE.protocolError,
  ],
  ["a continuation with no message open", "server", raw(0x80, 0x00), CLOSE.protocolError],
  [
    "a new text frame inside a fragmented message",
    "server",
    join(frame("server", OP.text, "a", false), frame("server", OP.text, "b")),
    CLOSE.protocolError,
  ],
  [
    "a 16-bit length that fits in 7 bits",
    "server",
    join(raw(0x82, 126, 0, 100), new Uint8Array(100)),
    CLOSE.protocolError,
  ],
  [
    "a 64-bit length that fits in 16 bits",
    "server",
    join(raw(0x82, 127, 0, 0, 0, 0, 0, 0, 3, 232)),
    CLOSE.protocolError,
  ],
  [
    "a 64-bit length with its top bit set",
    "server",
    raw(0x82, 127, 0x80, 0, 0, 0, 0, 1, 0, 0),
    CLOSE.protocolError,
  ],
  [
    "a frame over the size cap",
    "server",
    frame("server", OP.binary, "z".repeat(200)),
    CLOSE.tooBig,
    { max: 100 },
  ],
];

describe("invalid framing is refused with the close code the RFC gives", () => {
  // Rest parameters: a test function declaring more parameters than a row has is given a
  // `done` callback for the last one.
  test.each(invalid)("%s", (...row) => {
    const [, from, bytes, code, opts] = row;
    expect(read(from, bytes, bytes.length, opts)).toBe(code);
    expect(read(from, bytes, 1, opts)).toBe(code);
  });
});

describe("close frames", () => {
  test.each([
    [new Uint8Array([0x03]), CLOSE.protocolError],
    [closePayload(1005), CLOSE.protocolError],
    [closePayload(1006), CLOSE.protocolError],
    [closePayload(1015), CLOSE.protocolError],
    [closePayload(999), CLOSE.protocolError],
    [closePayload(2000), CLOSE.protocolError],
    [closePayload(5000), CLOSE.protocolError],
    [join(closePayload(1000), new Uint8Array([0xc3, 0x28])), CLOSE.invalidPayload],
  ])("%p is refused with %d", (payload, code) => {
    try {
      readClose(payload);
      throw new Error("accepted");
    } catch (e) {
      expect((e as WsProtocolError).closeCode).toBe(code);
    }
  });

  test("valid: none, a code, a code and a UTF-8 reason; private codes", () => {
    expect(readClose(new Uint8Array(0))).toEqual({ code: null, reason: "" });
    expect(readClose(closePayload(1000, "done ✓"))).toEqual({ code: 1000, reason: "done ✓" });
    for (const c of [3000, 4999, 1011]) expect(closeCodeAllowed(c)).toBe(true);
  });
});

test("the writer and the reader agree on every length class, masked and not", () => {
  for (const n of [0, 1, 125, 126, 127, 65535, 65536, 70000]) {
    const payload = new Uint8Array(n).map((_, i) => (i * 31) & 0xff);
    for (const from of ["client", "server"] as const) {
      const r = new FrameReader({ from, maxFrameBytes: 1 << 20, deflate: false });
      const events = r.push(
        encodeFrame(
          { fin: true, opcode: OP.binary },
          payload,
          from === "client" ? MASK : undefined,
        ),
      );
      const data = join(...events.flatMap((e) => (e.type === "data" ? [e.bytes] : [])));
      expect(data).toEqual(payload);
      expect(events.at(-1)?.type).toBe("end");
    }
  }
});
