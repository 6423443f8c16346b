// The WebSocket relay without a network: each side is a Duplex the test writes the peer's bytes
// into (in reads of the size it chooses) and whose writes it decodes back into frames. The
// scanner is the one the proxy builds (an InlineScanner on the redaction set of a real value,
// decoded views on). It must never print a real value.

import { describe, expect, test } from "bun:test";
import { Duplex } from "node:stream";
import { rng } from "../../bench/matcher-fixtures.ts";
import { InlineScanner } from "../body/inline-scanner.ts";
import type { SecretState } from "../credentials/secret-state.ts";
import { REDACT_COMPILE } from "../credentials/secret-state.ts";
import { redactionVariants, toPatternSpecs } from "../credentials/secret-variants.ts";
import { encodeFrame, FrameReader, OP, readClose } from "../http/ws-frames.ts";
import { relayWebSocket } from "./ws-relay.ts";

const MiB = 1024 * 1024;
const REAL = new TextEncoder().encode("hass-R3aL-token-00000000001");
const SPECS = toPatternSpecs([redactionVariants(REAL)]);

/** One side of the relay: what it is sent, and what the relay wrote to it. */
function peer() {
  const written: Buffer[] = [];
  const socket = new Duplex({
    read() {},
    write(chunk: Buffer, _encoding, done) {
      written.push(chunk);
      done();
    },
  });
  return { socket, written };
}

/**
 * What the relay wrote, decoded: data payloads joined, and each close frame's code. Frames,
 * not bytes on the wire: a header per fragment and the close frame are not the message.
 */
function framesOf(written: Buffer[], from: "client" | "server") {
  const reader = new FrameReader({ from, maxFrameBytes: 1 << 30, deflate: false });
  const data: Uint8Array[] = [];
  const closes: (number | null)[] = [];
  let frame: Uint8Array[] = [];
  for (const e of reader.push(Buffer.concat(written))) {
    if (e.type === "head") frame = [];
    else if (e.type === "data") frame.push(e.bytes);
    else if (e.head.opcode === OP.close) closes.push(readClose(Buffer.concat(frame)).code);
    else data.push(...frame);
  }
  return { payload: Buffer.concat(data), closes };
}

/** The agent's frames relayed, fed to the relay in reads of the sizes `reads` gives. */
async function relayFromAgent(wire: Uint8Array, reads: () => number) {
  const inline = new InlineScanner();
  const agent = peer();
  const upstream = peer();
  const violations: string[] = [];
  const closed = new Promise<void>((resolve) => {
    relayWebSocket(
      // The relay reads only `replaced` (a reload closes it).
      { replaced: new AbortController().signal } as SecretState,
      { socket: agent.socket, leftover: new Uint8Array(0) },
      { socket: upstream.socket, leftover: new Uint8Array(0) },
      () => {},
      {
        maxMessageBytes: 64 * MiB,
        deflate: { agent: null, upstream: null },
        idleMs: 60_000,
        pingMs: 60_000,
        scanner: {
          whole: (p) => inline.rewrite("redact", SPECS, p, undefined, REDACT_COMPILE),
          stream: () => inline.stream("redact", SPECS, REDACT_COMPILE),
          foreign: null,
        },
        frameSwaps: new Map(),
        onViolation: (kind, count) => violations.push(`${kind} ${count}`),
        onClose: () => resolve(),
      },
    );
  });
  for (let at = 0; at < wire.length; ) {
    const n = Math.min(reads(), wire.length - at);
    agent.socket.push(wire.subarray(at, at + n));
    at += n;
  }
  await closed;
  inline.reset();
  return {
    toUpstream: framesOf(upstream.written, "client"),
    toAgent: framesOf(agent.written, "server").closes,
    violations,
  };
}

describe("a large message from the agent with a real value near its end", () => {
  // 3 MiB in a 1 MiB frame and a 2 MiB continuation, the value 100 bytes before the end.
  const at = 3 * MiB - 100;
  const body = Buffer.alloc(3 * MiB, 0x63);
  body.set(REAL, at);
  const mask = new Uint8Array([1, 2, 3, 4]);
  const wire = Buffer.concat([
    encodeFrame({ fin: false, opcode: OP.binary }, body.subarray(0, MiB), mask),
    encodeFrame({ fin: true, opcode: OP.continuation }, body.subarray(MiB), mask),
  ]);
  const random = (seed: number) => {
    const next = rng(seed);
    return () => 1 + (next() % (128 * 1024));
  };
  // TLS records hold 16 KiB: a loop reads one to a few at a time (a Worker loop in the e2e
  // test took the message's last 49,166 bytes in one read), or everything. How the last reads
  // batch decides whether every clean byte leaves before the end or a fragment's worth waits.
  const readings: [string, () => number][] = [
    ["16 KiB reads", () => 16 * 1024],
    ["reads of three TLS records", () => 3 * 16 * 1024 + 14],
    ["64 KiB reads", () => 64 * 1024],
    ["1 MiB reads", () => MiB],
    ["one read", () => wire.length],
    ["random reads (seed 1)", random(1)],
    ["random reads (seed 2)", random(2)],
  ];
  for (const [name, reads] of readings) {
    test(`${name}: the clean bytes before it pass, the value never does, 1008 both ways`, async () => {
      const r = await relayFromAgent(wire, reads);
      const { payload } = r.toUpstream;
      expect({
        closes: { upstream: r.toUpstream.closes, agent: r.toAgent },
        violations: r.violations,
        // What reached the upstream is the message's clean start: at least the first frame,
        // and it stops before the value (the stream held the value's bytes back).
        cleanPrefix:
          payload.length > MiB && payload.length <= at && payload.every((b) => b === 0x63),
      }).toEqual({
        closes: { upstream: [1008], agent: [1008] },
        violations: ["dlp 1"],
        cleanPrefix: true,
      });
    });
  }
});
