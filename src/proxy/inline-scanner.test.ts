import { expect, test } from "bun:test";
import { createWasmEngine } from "../matcher/wasm-engine.ts";
import { ProxyError } from "./errors.ts";
import { InlineScanner } from "./inline-scanner.ts";

const enc = new TextEncoder();
const SECRET = enc.encode("real-inline-5f4e3d2c1b0a99887766");

function contains(hay: Uint8Array, needle: Uint8Array): boolean {
  return Buffer.from(hay.buffer, hay.byteOffset, hay.length).includes(Buffer.from(needle));
}

test("replaces whole bodies and wipes its engine memory on reset", () => {
  const engine = createWasmEngine();
  const s = new InlineScanner(1024, engine);
  const specs = [{ pattern: SECRET, replacement: enc.encode("[REDACTED]") }];
  const body = enc.encode(`{"a":"${new TextDecoder().decode(SECRET)}","b":"x"}`);
  const r = s.replace("redact", specs, body);
  expect(new TextDecoder().decode(r.output)).toBe('{"a":"[REDACTED]","b":"x"}');
  expect(r.replacements).toBe(1);
  // The compiled set is reused by name.
  expect(s.replace("redact", [], body).replacements).toBe(1);
  expect(contains(new Uint8Array(engine.memory.buffer), SECRET)).toBe(true);
  s.reset();
  expect(contains(new Uint8Array(engine.memory.buffer), SECRET)).toBe(false);
});

test("an invalid set fails closed as a scan failure, naming nothing", () => {
  const s = new InlineScanner();
  let err: unknown;
  try {
    s.replace("bad", [{ pattern: enc.encode("short"), replacement: new Uint8Array() }], SECRET);
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(ProxyError);
  expect((err as ProxyError).code).toBe("scan-failed");
});

test("count reports matches and leaves no output behind", () => {
  const engine = createWasmEngine();
  const s = new InlineScanner(1024, engine);
  const specs = [{ pattern: SECRET, replacement: enc.encode("[REDACTED]") }];
  const body = enc.encode(
    `a ${new TextDecoder().decode(SECRET)} b ${new TextDecoder().decode(SECRET)}`,
  );
  expect(s.count("dlp", specs, body)).toBe(2);
  expect(s.count("dlp", specs, enc.encode("nothing to see here, at all"))).toBe(0);
  s.reset();
  expect(contains(new Uint8Array(engine.memory.buffer), SECRET)).toBe(false);
});
