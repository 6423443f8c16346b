import { describe, expect, test } from "bun:test";
import { HttpError } from "./http-error.ts";
import { serializeRequestHead, serializeResponseHead, stripHopByHop } from "./serialize.ts";

const dec = (b: Uint8Array) => Buffer.from(b).toString("latin1");

describe("serialize heads", () => {
  test("request head", () => {
    const out = serializeRequestHead({
      method: "POST",
      target: "/v1?a=b",
      headers: [
        ["Host", "api.example.com"],
        ["X-Bin", "caf\xe9"],
      ],
    });
    expect(dec(out)).toBe(
      "POST /v1?a=b HTTP/1.1\r\nHost: api.example.com\r\nX-Bin: caf\xe9\r\n\r\n",
    );
  });
  test("response head", () => {
    expect(
      dec(
        serializeResponseHead({
          status: 403,
          reason: "Forbidden",
          headers: [["Content-Length", "0"]],
        }),
      ),
    ).toBe("HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n");
  });

  const unsafe: [string, () => unknown, string][] = [
    [
      "CRLF in a value",
      () =>
        serializeRequestHead({ method: "GET", target: "/", headers: [["X", "a\r\nHost: evil"]] }),
      "unsafe-header",
    ],
    [
      "bare LF in a value",
      () => serializeRequestHead({ method: "GET", target: "/", headers: [["X", "a\nb"]] }),
      "unsafe-header",
    ],
    [
      "NUL in a value",
      () => serializeRequestHead({ method: "GET", target: "/", headers: [["X", "a\0b"]] }),
      "unsafe-header",
    ],
    [
      "leading space in a value",
      () => serializeRequestHead({ method: "GET", target: "/", headers: [["X", " a"]] }),
      "unsafe-header",
    ],
    [
      "non-byte char in a value",
      () => serializeRequestHead({ method: "GET", target: "/", headers: [["X", "\u2028"]] }),
      "unsafe-header",
    ],
    [
      "colon in a name",
      () => serializeRequestHead({ method: "GET", target: "/", headers: [["X:Y", "1"]] }),
      "unsafe-header",
    ],
    [
      "empty name",
      () => serializeRequestHead({ method: "GET", target: "/", headers: [["", "1"]] }),
      "unsafe-header",
    ],
    [
      "space in the target",
      () => serializeRequestHead({ method: "GET", target: "/a b", headers: [] }),
      "unsafe-start-line",
    ],
    [
      "CRLF in the target",
      () => serializeRequestHead({ method: "GET", target: "/\r\nX: y", headers: [] }),
      "unsafe-start-line",
    ],
    [
      "bad method",
      () => serializeRequestHead({ method: "GE T", target: "/", headers: [] }),
      "unsafe-start-line",
    ],
    [
      "CR in reason",
      () => serializeResponseHead({ status: 200, reason: "OK\r\nX: y", headers: [] }),
      "unsafe-start-line",
    ],
    [
      "status out of range",
      () => serializeResponseHead({ status: 1000, headers: [] }),
      "unsafe-start-line",
    ],
  ];
  for (const [name, fn, code] of unsafe) {
    test(`refuses ${name}`, () => {
      let err: unknown;
      try {
        fn();
      } catch (e) {
        err = e;
      }
      expect(err).toBeInstanceOf(HttpError);
      expect((err as HttpError).code).toBe(code as HttpError["code"]);
    });
  }
  test("errors never echo the value", () => {
    try {
      serializeRequestHead({
        method: "GET",
        target: "/",
        headers: [["Authorization", "Bearer sk-secret\r\n"]],
      });
    } catch (e) {
      expect(String(e)).not.toContain("sk-secret");
      expect(String(e)).toContain("Authorization");
    }
  });
});

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
