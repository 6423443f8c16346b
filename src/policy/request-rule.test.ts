import { describe, expect, test } from "bun:test";
import { canonicalPath, parseRequestRule, type RequestRoute, scopeCovers } from "./request-rule.ts";

const rule = (text: string) => {
  const r = parseRequestRule(text, { allowAny: true });
  if (!r.ok) throw new Error(r.reason);
  return r.value;
};
const route = (method: string, target: string): RequestRoute => ({
  method,
  path: canonicalPath(target),
});

describe("parseRequestRule", () => {
  test("host only, methods, path, port, IPv6", () => {
    expect(rule("api.github.com")).toMatchObject({
      host: { pattern: "api.github.com" },
      scope: { methods: "any", path: null },
    });
    const r = rule("GET,POST api.github.com/repos/acme/**");
    expect([...(r.scope.methods as Set<string>)]).toEqual(["GET", "POST"]);
    expect(r.scope.path).toEqual(["repos", "acme", "**"]);
    expect(rule("localhost:8443/v1/*").host.port).toBe(8443);
    expect(rule("POST [::1]:8443/token").scope.path).toEqual(["token"]);
    expect(rule("api.x.com/%61b").scope.path).toEqual(["ab"]);
  });

  test.each([
    ["get api.github.com", "is not a valid host"],
    ["GET,post api.github.com", "is not a valid host"],
    ["GET,,POST api.github.com", "methods must be upper-case"],
    ["GET; api.github.com", "is not a valid host"],
    ["bad host", "is not a valid host"],
    ["GET api.github.com//x", "path segment"],
    ["GET api.github.com/a/../b", "path segment"],
    ["GET api.github.com/a/%2Fb", "ambiguous path: an encoded /"],
    ["GET api.github.com/a?b", "path segment"],
    ["GET /x", "must be a non-empty host pattern"],
  ])("%p is refused: %s", (text, reason) => {
    const r = parseRequestRule(text, { allowAny: true });
    expect(r.ok).toBe(false);
    if (!r.ok) expect(r.reason).toContain(reason);
  });
});

describe("canonicalPath", () => {
  test.each([
    ["/repos/acme/x?page=2", "/repos/acme/x"],
    ["/repos/%61cme/x", "/repos/acme/x"],
    ["/a%20b/%7e", "/a%20b/~"],
    ["/a%2a", "/a%2A"],
    ["/caf%C3%A9/%25", "/caf%C3%A9/%25"],
    ["/100%2541", "/100%2541"],
    ["/repos/", "/repos/"],
    ["*", "*"],
  ])("%s → %s", (target, path) => {
    expect(canonicalPath(target)).toEqual({ ok: true, value: path, reason: "" });
  });

  test.each([
    ["/repos/acme/../other", "a . or .. segment"],
    ["/repos/./acme", "a . or .. segment"],
    ["/repos/%2e%2e/other", "an encoded ."],
    ["/repos%2Facme", "an encoded /"],
    ["/repos%5cacme", "an encoded \\"],
    ["/repos\\acme", "a backslash"],
    ["/repos//acme", "an empty segment (//)"],
    ["/repos/..;/admin", "a ; parameter"],
    ["/a%00", "an encoded NUL"],
    ["/repos/acme/%252e%252e/other", "a doubly encoded . / \\ % or NUL"],
    ["/repos%252Facme", "a doubly encoded . / \\ % or NUL"],
    ["/repos%25255cacme", "a doubly encoded . / \\ % or NUL"],
    ["/repos/acme/%25%32%65%25%32%65/x", "a doubly encoded . / \\ % or NUL"],
    ["/repos%25%32%66acme", "a doubly encoded . / \\ % or NUL"],
    ["/repos%25%35%63acme", "a doubly encoded . / \\ % or NUL"],
    ["/repos/%c0%ae%c0%ae/other", "an escape that is not UTF-8 (overlong or invalid)"],
    ["/repos/%C0%AFetc", "an escape that is not UTF-8 (overlong or invalid)"],
    ["/repos/%e0%80%ae", "an escape that is not UTF-8 (overlong or invalid)"],
    ["/repos/%ff", "an escape that is not UTF-8 (overlong or invalid)"],
    ["/a%zz", "a bad %-escape"],
    ["/a%4", "a bad %-escape"],
    ["repos", "it does not start with /"],
  ])("%p is refused: %s", (target, why) => {
    const p = canonicalPath(target);
    expect(p).toMatchObject({ ok: false, code: "bad-request" });
    if (!p.ok) expect(p.reason).toBe(`ambiguous path: ${why}`);
  });
});

describe("scopeCovers: the decision table", () => {
  const repos = rule("GET,HEAD api.github.com/repos/acme/**").scope;
  const chat = rule("POST api.openai.com/v1/*/completions").scope;
  const anyPath = rule("DELETE api.github.com").scope;
  test.each([
    [repos, "GET", "/repos/acme", true],
    [repos, "GET", "/repos/acme/", true],
    [repos, "GET", "/repos/acme/x/issues?x=1", true],
    [repos, "HEAD", "/repos/%61cme/x", true],
    [repos, "POST", "/repos/acme/x", false],
    [repos, "GET", "/repos/acmecorp/x", false],
    [repos, "GET", "/repos", false],
    [repos, "GET", "/Repos/acme", false],
    [chat, "POST", "/v1/chat/completions", true],
    [chat, "POST", "/v1/completions", false],
    [chat, "POST", "/v1/a/b/completions", false],
    [anyPath, "DELETE", "/whatever//really", true],
    [anyPath, "GET", "/x", false],
  ] as const)("%#: %s %s → %p", (scope, method, target, covered) => {
    expect(scopeCovers(scope, route(method, target))).toMatchObject({ ok: true, value: covered });
  });

  test("a path the scope needs but cannot read is a refusal; a method miss is decided first", () => {
    expect(scopeCovers(repos, route("GET", "/repos/acme/../../orgs"))).toMatchObject({
      ok: false,
      code: "bad-request",
    });
    expect(scopeCovers(repos, route("PUT", "/repos/acme/../../orgs"))).toMatchObject({
      ok: true,
      value: false,
    });
  });
});
