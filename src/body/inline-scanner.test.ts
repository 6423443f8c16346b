import { expect, test } from "bun:test";
import { ProxyError } from "../http/proxy-error.ts";
import type { CompiledSet } from "../matcher/types.ts";
import { createWasmEngine } from "../matcher/wasm-engine.ts";
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
  const r = s.rewrite("redact", specs, body);
  expect(new TextDecoder().decode(r.output)).toBe('{"a":"[REDACTED]","b":"x"}');
  expect(r.replacements).toBe(1);
  // The compiled set is reused by name.
  expect(s.rewrite("redact", [], body).replacements).toBe(1);
  expect(contains(new Uint8Array(engine.memory.buffer), SECRET)).toBe(true);
  s.reset();
  expect(contains(new Uint8Array(engine.memory.buffer), SECRET)).toBe(false);
});

test("an invalid set fails closed as a scan failure, naming nothing", () => {
  const s = new InlineScanner();
  let err: unknown;
  try {
    s.rewrite("bad", [{ pattern: enc.encode("short"), replacement: new Uint8Array() }], SECRET);
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

test("rewrite reuses the input: untouched when clean, in place when the length holds", () => {
  const s = new InlineScanner(1024);
  const DUMMY = enc.encode("sk-dummy-inline-000000000000001");
  const REAL = enc.encode("sk-real-inline-9f8e7d6c5b4a3928");
  expect(DUMMY.length).toBe(REAL.length);
  const swap = [{ pattern: DUMMY, replacement: REAL }];
  const clean = enc.encode("no credential in this body");
  const c = s.rewrite("swap", swap, clean);
  expect(c.output).toBe(clean);
  expect(c.replacements).toBe(0);

  const body = enc.encode(`key=${new TextDecoder().decode(DUMMY)}&x=1`);
  const r = s.rewrite("swap", swap, body);
  expect(r.output).toBe(body); // same array, rewritten in place
  expect(new TextDecoder().decode(body)).toBe(`key=${new TextDecoder().decode(REAL)}&x=1`);

  // A length change gives a fresh array and leaves the input as it was.
  const redact = [{ pattern: REAL, replacement: enc.encode("[REDACTED]") }];
  const before = body.slice();
  const d = s.rewrite("redact", redact, body);
  expect(d.output).not.toBe(body);
  expect(new TextDecoder().decode(d.output)).toBe("key=[REDACTED]&x=1");
  expect(body).toEqual(before);
});

test("rewrite and count leave no output behind in the reused buffer", () => {
  const engine = createWasmEngine();
  const buffers: Uint8Array[] = [];
  // Watch the buffer the scanner hands the engine for its output.
  const watched = new Proxy(engine, {
    get(target, key) {
      if (key === "replaceAllInto") {
        return (set: CompiledSet, input: Uint8Array, into: Uint8Array) => {
          buffers.push(into);
          return target.replaceAllInto(set, input, into);
        };
      }
      const v = Reflect.get(target, key);
      return typeof v === "function" ? v.bind(target) : v;
    },
  });
  const s = new InlineScanner(1024, watched);
  const REAL = enc.encode("sk-real-inline-9f8e7d6c5b4a3928");
  const swap = [{ pattern: enc.encode("sk-dummy-inline-000000000000001"), replacement: REAL }];
  const out = s.rewrite("swap", swap, enc.encode("a sk-dummy-inline-000000000000001 b")).output;
  expect(contains(out, REAL)).toBe(true);
  expect(buffers.length).toBe(1);
  expect(contains(buffers[0]!, REAL)).toBe(false);
  expect(s.count("swap", swap, enc.encode("x sk-dummy-inline-000000000000001 y"))).toBe(1);
  expect(buffers.length).toBe(2);
  expect(contains(buffers[1]!, REAL)).toBe(false);
});
