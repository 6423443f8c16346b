import { describe, expect, test } from "bun:test";
import {
  forwardableRequestFields,
  forwardableResponseFields,
  stripHopByHop,
} from "./hop-by-hop.ts";

describe("stripHopByHop", () => {
  const cases: [string, [string, string][], Set<string> | undefined, [string, string][]][] = [
    [
      "fixed list and Connection-named fields",
      [
        ["Host", "a"],
        ["Connection", "keep-alive, X-Private"],
        ["Keep-Alive", "timeout=5"],
        ["Proxy-Connection", "x"],
        ["Proxy-Authorization", "Basic x"],
        ["TE", "trailers"],
        ["Trailer", "X-Sum"],
        ["Upgrade", "websocket"],
        ["Transfer-Encoding", "chunked"],
        ["x-private", "1"],
        ["Accept", "*/*"],
      ],
      undefined,
      [
        ["Host", "a"],
        ["Accept", "*/*"],
      ],
    ],
    [
      "Connection cannot remove routing or framing fields",
      [
        ["Host", "a"],
        ["Connection", "host, content-length, content-type, content-encoding"],
        ["Content-Length", "3"],
        ["Content-Type", "text/plain"],
        ["Content-Encoding", "gzip"],
      ],
      undefined,
      [
        ["Host", "a"],
        ["Content-Length", "3"],
        ["Content-Type", "text/plain"],
        ["Content-Encoding", "gzip"],
      ],
    ],
    [
      "keep lets an accepted upgrade through",
      [
        ["Upgrade", "websocket"],
        ["Connection", "Upgrade"],
      ],
      new Set(["upgrade", "connection"]),
      [
        ["Upgrade", "websocket"],
        ["Connection", "Upgrade"],
      ],
    ],
  ];
  for (const [name, input, keep, want] of cases) {
    test(name, () => {
      expect(stripHopByHop(input, keep)).toEqual(want);
    });
  }
});

describe("what crosses the proxy", () => {
  const agentSent: [string, string][] = [
    ["Host", "api.example"],
    ["Connection", "keep-alive, X-Hop"],
    ["X-Hop", "1"],
    ["Content-Length", "12"],
    ["Expect", "100-continue"],
    ["Accept-Encoding", "gzip, sdch"],
    ["Proxy-Authorization", "Basic x"],
    ["Authorization", "Bearer dummy"],
  ];
  test("a request loses hop-by-hop fields, its framing, Expect and Accept-Encoding", () => {
    expect(forwardableRequestFields(agentSent)).toEqual([
      ["Host", "api.example"],
      ["Authorization", "Bearer dummy"],
    ]);
  });

  const upstreamSent: [string, string][] = [
    ["Content-Type", "application/json"],
    ["Content-Length", "42"],
    ["Transfer-Encoding", "chunked"],
    ["Connection", "X-Internal"],
    ["X-Internal", "hop"],
    ["Proxy-Authenticate", "Basic"],
  ];
  test("a response loses hop-by-hop fields and its length, but a HEAD answer keeps its length", () => {
    expect(forwardableResponseFields(upstreamSent, false)).toEqual([
      ["Content-Type", "application/json"],
    ]);
    expect(forwardableResponseFields(upstreamSent, true)).toEqual([
      ["Content-Type", "application/json"],
      ["Content-Length", "42"],
    ]);
  });
});
