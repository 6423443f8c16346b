import { describe, expect, test } from "bun:test";
import type { SwapPair } from "./bindings.ts";
import { parseSurface, swapHeaderValue, swapParams, swapQueryValues } from "./surfaces.ts";

describe("parseSurface", () => {
  test.each([
    ["header:Authorization", { kind: "header", name: "authorization" }],
    ["header:x-api-key", { kind: "header", name: "x-api-key" }],
    ["query:access_token", { kind: "query", name: "access_token" }],
    ["query:key[0]", { kind: "query", name: "key[0]" }],
    ["form:client_secret", { kind: "form", name: "client_secret" }],
    ["json:/auth/0/key", { kind: "json", name: "/auth/0/key" }],
    ["frame:/access_token", { kind: "frame", name: "/access_token" }],
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
    ["frame:access_token", "frame: needs a JSON pointer"],
    ["form:", "needs a parameter name"],
  ])("%p is refused", (text, reason) => {
    const p = parseSurface(text);
    expect(p.ok).toBe(false);
    if (!p.ok) expect(p.reason).toContain(reason);
  });
});

const enc = new TextEncoder();
const DUMMY = "key-dummy-000001";
const REAL = "R3aL+key/01";
const PAIR: SwapPair = {
  name: "k",
  dummy: enc.encode(DUMMY),
  real: enc.encode(REAL),
  surfaces: [],
};
const named = (...names: string[]) => new Map(names.map((n) => [n, [PAIR]] as const));
const REAL_Q = encodeURIComponent(REAL);

describe("swapQueryValues and swapParams: exactly the dummy, in a named parameter", () => {
  test("only the named parameters' values; names compared decoded; the path untouched", () => {
    expect(
      swapQueryValues(`/p/${DUMMY}?key=${DUMMY}&other=${DUMMY}&key=${DUMMY}`, named("key")),
    ).toEqual({
      target: `/p/${DUMMY}?key=${REAL_Q}&other=${DUMMY}&key=${REAL_Q}`,
      swapped: ["k", "k"],
    });
    expect(swapQueryValues(`/p?%6Bey=${DUMMY}&k+y=${DUMMY}`, named("key", "k y")).target).toBe(
      `/p?%6Bey=${REAL_Q}&k+y=${REAL_Q}`,
    );
    // A percent-encoded spelling of the dummy is the dummy.
    const pct = [...DUMMY].map((c) => `%${c.charCodeAt(0).toString(16)}`).join("");
    expect(swapQueryValues(`/p?key=${pct}`, named("key")).target).toBe(`/p?key=${REAL_Q}`);
  });

  test("a value holding the dummy among other text is content, not a presentation", () => {
    for (const v of [
      `${DUMMY};note=${DUMMY}`,
      `x%26note%3D${DUMMY}`,
      `note:${DUMMY}:end`,
      `${DUMMY}%20`,
      `${DUMMY}${DUMMY}`,
    ]) {
      expect(swapQueryValues(`/p?key=${v}`, named("key"))).toEqual({
        target: `/p?key=${v}`,
        swapped: [],
      });
    }
    expect(swapParams(`client_secret=x;note=${DUMMY}`, named("client_secret")).swapped).toEqual([]);
    // A JSON body labelled as a form: no field of it is exactly the dummy.
    const json = `{"x":"&api_key=","api_key":"${DUMMY}","prompt":"&api_key=${DUMMY}"}`;
    expect(swapParams(json, named("api_key"))).toEqual({ text: json, swapped: [] });
  });

  test("a parameter without a value, a bad escape, no query: left alone", () => {
    expect(swapQueryValues("/p?key&key=%zz", named("key")).target).toBe("/p?key&key=%zz");
    expect(swapQueryValues(`/key=${DUMMY}`, named("key")).target).toBe(`/key=${DUMMY}`);
  });
});

describe("swapHeaderValue: the dummy alone; in Authorization after Bearer or token", () => {
  test.each([
    ["x-api-key", DUMMY, REAL],
    ["authorization", DUMMY, REAL],
    ["authorization", `Bearer ${DUMMY}`, `Bearer ${REAL}`],
    ["authorization", `token ${DUMMY}`, `token ${REAL}`],
    ["authorization", `BEARER ${DUMMY}`, `BEARER ${REAL}`],
    // Other schemes, or any scheme in another field: left as sent.
    ["authorization", `Basic ${DUMMY}`, `Basic ${DUMMY}`],
    ["authorization", `Digest ${DUMMY}`, `Digest ${DUMMY}`],
    ["authorization", `note ${DUMMY}`, `note ${DUMMY}`],
    ["authorization", `Bearer  ${DUMMY}`, `Bearer  ${DUMMY}`],
    ["x-api-key", `note ${DUMMY}`, `note ${DUMMY}`],
    ["x-api-key", `Bearer ${DUMMY}`, `Bearer ${DUMMY}`],
    ["authorization", `Bearer ${DUMMY} x`, `Bearer ${DUMMY} x`],
    ["authorization", `Bearer x${DUMMY}`, `Bearer x${DUMMY}`],
    ["x-api-key", `${DUMMY},${DUMMY}`, `${DUMMY},${DUMMY}`],
  ])("%s: %s → %s", (field, value, out) => {
    expect(swapHeaderValue(value, [PAIR], field).value).toBe(out);
  });
});
