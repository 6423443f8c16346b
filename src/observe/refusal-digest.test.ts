import { expect, test } from "bun:test";
import type { RefusedConnectionRecord } from "./audit.ts";
import { RefusalDigest } from "./refusal-digest.ts";

function digest(maxKeys = 1024) {
  let now = 1_000;
  const lines: RefusedConnectionRecord[] = [];
  const d = new RefusalDigest<RefusedConnectionRecord>(
    (r, repeated) => lines.push(repeated ? { ...r, repeated } : r),
    {
      windowMs: 10_000,
      maxKeys,
      now: () => now,
      timer: false,
    },
  );
  return { d, lines, advance: (ms: number) => (now += ms) };
}

const KIND = "agent-connection-limit";
const rec = (conn: number, reason = "too many open connections for this agent (limit 2)") => ({
  conn,
  remote: `127.0.0.1:${40_000 + conn}`,
  agent: "agent-a",
  reason,
});

test("the first refusal of a kind is written at once, repeats in the window as one line after it", () => {
  const { d, lines, advance } = digest();
  for (let i = 1; i <= 500; i++) d.refuse(KIND, "agent-a", rec(i));
  expect(lines).toEqual([rec(1)]);
  advance(9_999);
  d.flush();
  expect(lines).toEqual([rec(1)]); // the window is still open
  advance(1);
  d.flush();
  expect(lines).toEqual([rec(1), { ...rec(500), repeated: 499 }]);
  // A new window starts with a line of its own; nothing repeated, no summary.
  advance(10_000);
  d.refuse(KIND, "agent-a", rec(501));
  advance(10_000);
  d.flush();
  expect(lines.slice(2)).toEqual([rec(501)]);
});

test("kinds are kept apart by kind and by who; a refusal after the window also writes the summary", () => {
  const { d, lines, advance } = digest();
  d.refuse(KIND, "agent-a", rec(1));
  d.refuse(KIND, "agent-b", { ...rec(2), agent: "agent-b" });
  d.refuse("handshake-limit", "127.0.0.9", {
    conn: 3,
    remote: "127.0.0.9:1",
    reason: "too many handshakes",
  });
  d.refuse(KIND, "agent-a", rec(4));
  expect(lines.map((l) => l.conn)).toEqual([1, 2, 3]);
  advance(10_000);
  d.refuse(KIND, "agent-a", rec(5));
  expect(lines.slice(3)).toEqual([{ ...rec(4), repeated: 1 }, rec(5)]);
});

test("close writes every pending summary; past maxKeys, a kind shares one key whoever refused", () => {
  const { d, lines } = digest(2);
  for (let i = 1; i <= 6; i++)
    d.refuse("r", `10.0.0.${i}`, { conn: i, remote: `10.0.0.${i}:1`, reason: "r" });
  // Two kinds of their own, then one shared kind for the rest: its first line, then repeats.
  expect(lines.map((l) => l.conn)).toEqual([1, 2, 3]);
  d.close();
  expect(lines.slice(3)).toEqual([{ conn: 6, remote: "10.0.0.6:1", reason: "r", repeated: 3 }]);
});

test("one kind from many peers past maxKeys stays within maxKeys + the kinds, whatever varies", () => {
  const { d, lines } = digest(8);
  // A flood whose `who` never repeats (a new host each time): the keys stop growing.
  for (let i = 1; i <= 10_000; i++)
    d.refuse("policy-denied", `agent-a\nh${i}.example`, { conn: i, remote: "-", reason: "r" });
  expect(lines.length).toBe(9);
  d.close();
  expect(lines.at(-1)).toMatchObject({ conn: 10_000, repeated: 9_991 });
});
