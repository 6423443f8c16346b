// Tests of the TransformStream adapter with an in-memory core (no workers): output order, clean
// end only after the core's end(), errors reaching both sides, cancel/abort reaching the core,
// and backpressure from the core's write promise.

import { expect, test } from "bun:test";
import {
  createScanStream,
  type ScanResult,
  type ScanSink,
  type ScanStreamCore,
} from "./scan-stream.ts";

/** A core that upper-cases ASCII after a controllable delay, recording what happened. */
function fakeCore() {
  const log: string[] = [];
  let sink!: ScanSink;
  let release: (() => void) | undefined;
  let hold = false;
  let finish!: (r: ScanResult) => void;
  let failResult!: (e: unknown) => void;
  const result = new Promise<ScanResult>((res, rej) => {
    finish = res;
    failResult = rej;
  });
  let bytes = 0;
  const core: ScanStreamCore = {
    write(chunk) {
      log.push(`write ${chunk.length}`);
      bytes += chunk.length;
      sink.output(chunk.map((b) => (b >= 97 && b <= 122 ? b - 32 : b)));
      if (!hold) return undefined;
      return new Promise<void>((r) => {
        release = r;
      });
    },
    async end() {
      log.push("end");
      finish({ replacements: 0, bytesIn: bytes, bytesOut: bytes });
    },
    abort(reason) {
      log.push(`abort ${String(reason)}`);
      failResult(reason);
    },
  };
  const stream = createScanStream(
    (s) => {
      sink = s;
      return { core, result };
    },
    { readableHighWaterMark: 1024 },
  );
  return {
    stream,
    log,
    sink: () => sink,
    hold: (on: boolean) => {
      hold = on;
    },
    release: () => release?.(),
  };
}

const enc = new TextEncoder();
const dec = new TextDecoder();

test("chunks flow in order and the readable closes after the core's end()", async () => {
  const { stream, log } = fakeCore();
  const reading = Array.fromAsync(stream.readable);
  const writer = stream.writable.getWriter();
  await writer.write(enc.encode("abc"));
  await writer.write(enc.encode("-def"));
  await writer.close();
  const out = await reading;
  expect(dec.decode(Buffer.concat(out))).toBe("ABC-DEF");
  expect(log).toEqual(["write 3", "write 4", "end"]);
  expect(await stream.result).toEqual({ replacements: 0, bytesIn: 7, bytesOut: 7 });
});

test("a core failure errors the readable side and rejects further writes", async () => {
  const { stream, sink } = fakeCore();
  const reader = stream.readable.getReader();
  const writer = stream.writable.getWriter();
  await writer.write(enc.encode("ok"));
  expect(dec.decode((await reader.read()).value)).toBe("OK");
  const failure = new Error("worker died");
  sink().error(failure);
  await expect(reader.read()).rejects.toBe(failure);
  await expect(writer.write(enc.encode("more"))).rejects.toBe(failure);
});

test("cancelling the readable or aborting the writable aborts the core", async () => {
  const a = fakeCore();
  await a.stream.readable.cancel("consumer went away");
  expect(a.log).toEqual(["abort consumer went away"]);
  await expect(a.stream.result).rejects.toBe("consumer went away");

  const b = fakeCore();
  await b.stream.writable.abort("producer failed");
  expect(b.log).toEqual(["abort producer failed"]);
});

test("output the consumer can no longer take is zeroed", async () => {
  const { stream, sink } = fakeCore();
  await stream.readable.cancel("gone");
  const late = enc.encode("late secret bytes");
  sink().output(late);
  expect(late.every((b) => b === 0)).toBe(true);
});

test("the core's pending write promise holds the writer back", async () => {
  const { stream, hold, release } = fakeCore();
  const reading = Array.fromAsync(stream.readable);
  const writer = stream.writable.getWriter();
  hold(true);
  const first = writer.write(enc.encode("x"));
  let firstDone = false;
  first.then(() => {
    firstDone = true;
  });
  await new Promise((r) => setImmediate(r));
  expect(firstDone).toBe(false);
  hold(false);
  release();
  await first;
  await writer.close();
  expect(dec.decode(Buffer.concat(await reading))).toBe("X");
});

test("non-Uint8Array chunks are refused", async () => {
  const { stream } = fakeCore();
  const writer = (stream.writable as WritableStream<unknown>).getWriter();
  await expect(writer.write("a string")).rejects.toBeInstanceOf(TypeError);
});
