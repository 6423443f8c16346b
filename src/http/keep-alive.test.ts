import { expect, test } from "bun:test";
import { HeaderList } from "./header-list.ts";
import { keepAliveHint } from "./keep-alive.ts";

const hint = (...values: string[]) =>
  keepAliveHint(new HeaderList(values.map((v) => ["Keep-Alive", v] as const)));

test("the announced timeout, less the margin; max=0 means no further request", () => {
  expect(hint()).toEqual({ restMs: undefined, exhausted: false });
  expect(hint("timeout=5, max=100")).toEqual({ restMs: 4_000, exhausted: false });
  expect(hint("timeout=5")).toEqual({ restMs: 4_000, exhausted: false });
  expect(hint('TIMEOUT = "75"')).toEqual({ restMs: 74_000, exhausted: false });
  // One second or less leaves no time to send on it.
  expect(hint("timeout=1")).toEqual({ restMs: 0, exhausted: false });
  expect(hint("timeout=0")).toEqual({ restMs: 0, exhausted: false });
  expect(hint("max=0, timeout=60")).toEqual({ restMs: 59_000, exhausted: true });
  // The shortest of several; what cannot be read is ignored.
  expect(hint("timeout=30", "timeout=10")).toEqual({ restMs: 9_000, exhausted: false });
  expect(hint("timeout=soon, max=-1, foo=1")).toEqual({ restMs: undefined, exhausted: false });
});
