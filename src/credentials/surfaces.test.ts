import { describe, expect, test } from "bun:test";
import { parseSurface, swapQueryValues } from "./surfaces.ts";

describe("parseSurface", () => {
  test.each([
    ["header:Authorization", { kind: "header", name: "authorization" }],
    ["header:x-api-key", { kind: "header", name: "x-api-key" }],
    ["query:access_token", { kind: "query", name: "access_token" }],
    ["query:key[0]", { kind: "query", name: "key[0]" }],
    ["form:client_secret", { kind: "form", name: "client_secret" }],
    ["json:/auth/0/key", { kind: "json", name: "/auth/0/key" }],
    ["body", { kind: "body" }],
  ])("%s", (text, surface) => {
    expect(parseSurface(text)).toEqual({ ok: true, value: surface as never });
  });

  test.each([
    [7, "must be a string"],
    ["", 'must be "header:NAME"'],
    ["header:", "needs a field name"],
    ["header:x api", "needs a field name"],
    ["header:Host", "frames or routes the message"],
    ["header:transfer-encoding", "frames or routes the message"],
    ["header:proxy-authorization", "frames or routes the message"],
    ["header:cookie", "frames or routes the message"],
    ["query:", "needs a parameter name"],
    ["query:a&b", "needs a parameter name"],
    ["path", 'must be "header:NAME"'],
    ["body:json", 'must be "header:NAME"'],
    ["json:client_secret", "needs a JSON pointer"],
    ["json:/a~2b", "needs a JSON pointer"],
    ["form:", "needs a parameter name"],
  ])("%p is refused", (text, reason) => {
    const p = parseSurface(text);
    expect(p.ok).toBe(false);
    if (!p.ok) expect(p.reason).toContain(reason);
  });
});

describe("swapQueryValues", () => {
  const upper = new Map([["key", (v: string) => v.toUpperCase()]]);

  test("only the named parameters' values change; names and the rest stay as sent", () => {
    expect(swapQueryValues("/p/key?key=ab&other=cd&key=ef", upper)).toBe(
      "/p/key?key=AB&other=cd&key=EF",
    );
  });

  test("names are compared percent- and form-decoded", () => {
    expect(swapQueryValues("/p?%6Bey=ab&k%20y=x&k+y=z", upper)).toBe("/p?%6Bey=AB&k%20y=x&k+y=z");
    const spaced = new Map([["k y", (v: string) => v.toUpperCase()]]);
    expect(swapQueryValues("/p?k%20y=ab&k+y=cd&ky=ef", spaced)).toBe("/p?k%20y=AB&k+y=CD&ky=ef");
  });

  test("a parameter without a value, a bad escape, no query: left alone", () => {
    expect(swapQueryValues("/p?key&key=%zz=a", upper)).toBe("/p?key&key=%ZZ=A");
    expect(swapQueryValues("/p?%zz=ab", upper)).toBe("/p?%zz=ab");
    expect(swapQueryValues("/key=ab", upper)).toBe("/key=ab");
  });
});
