import { expect, test } from "bun:test";
import { framingFields, type OutgoingBody, outgoingFraming } from "./framing.ts";

test("how the proxy frames what it sends", () => {
  const cases: [
    OutgoingBody,
    "upstream" | "agent-1.1" | "agent-1.0",
    ReturnType<typeof outgoingFraming>,
  ][] = [
    [{ kind: "none" }, "upstream", { kind: "none" }],
    [{ kind: "none" }, "agent-1.1", { kind: "length", length: 0 }],
    [{ kind: "held", length: 12 }, "upstream", { kind: "length", length: 12 }],
    [{ kind: "held", length: 12 }, "agent-1.0", { kind: "length", length: 12 }],
    [{ kind: "stream", length: 99 }, "upstream", { kind: "length", length: 99 }],
    [{ kind: "stream", length: null }, "upstream", { kind: "chunked" }],
    // An answer's length may change with a redaction: never announced to the agent.
    [{ kind: "stream", length: 99 }, "agent-1.1", { kind: "chunked" }],
    [{ kind: "stream", length: null }, "agent-1.0", { kind: "close" }],
  ];
  for (const [body, to, want] of cases) expect(outgoingFraming(body, to)).toEqual(want);
});

test("the fields that announce a framing", () => {
  expect(framingFields({ kind: "length", length: 0 })).toEqual([["content-length", "0"]]);
  expect(framingFields({ kind: "chunked" })).toEqual([["transfer-encoding", "chunked"]]);
  expect(framingFields({ kind: "close" })).toEqual([]);
  expect(framingFields({ kind: "none" })).toEqual([]);
});
