import { describe, expect, test } from "bun:test";
import { HttpError } from "./http-error.ts";
import { serializeRequestHead, serializeResponseHead } from "./serialize.ts";

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
