// Request rules (issue 15, item 2): a host pattern narrowed to methods and a path pattern, for
// egress allow rules and credential bindings alike.
//
//   api.github.com                          every method, every path
//   GET api.github.com/repos/acme/**        GET only, paths under /repos/acme/
//   GET,POST api.openai.com/v1/*/completions
//   POST localhost:8443/oauth/token
//
// A path pattern is `/`-separated segments: a literal, `*` (exactly one segment) or `**` (any
// number of segments, none included). It matches the request's path in one canonical form
// (`canonicalPath`): the query dropped, escapes of unreserved characters decoded, other escapes
// upper-cased. A path that could be read two ways is refused instead of matched — an encoded
// `/`, `\` or `.` (once or twice), a `.`/`..` segment, an empty segment, `;` parameters, a NUL,
// a bad escape, escapes that are not UTF-8 (overlong forms) —
// since path confusion between the proxy and the upstream is how rules like these are bypassed.
// Pure: text in, verdicts out.

import { type HostPattern, parseHostPattern } from "./host-pattern.ts";
import { allow, refuse, type Verdict } from "./verdict.ts";

export interface RequestScope {
  /** Upper-case method names; "any" when the rule names none. */
  readonly methods: ReadonlySet<string> | "any";
  /** Segments of the path pattern; null when the rule names no path (every path). */
  readonly path: readonly string[] | null;
}

export const ANY_REQUEST: RequestScope = Object.freeze({ methods: "any", path: null });

export interface RequestRule {
  readonly host: HostPattern;
  readonly scope: RequestScope;
  /** As written (trimmed), for reasons and errors. */
  readonly written: string;
}

/** What a request is, for rules: its method and canonical path (a refusal if ambiguous). */
export interface RequestRoute {
  readonly method: string;
  readonly path: Verdict<string, "bad-request">;
}

const METHOD_RE = /^[A-Z][A-Z-]{0,19}$/;
const SEGMENT_RE = /^(\*\*|\*|[A-Za-z0-9._~!$&'()+,=:@%-]+)$/;

export function parseRequestRule(
  input: unknown,
  rules: { readonly allowAny: boolean },
): Verdict<RequestRule, "bad-host-pattern"> {
  const bad = (reason: string) => refuse("bad-host-pattern" as const, reason);
  if (typeof input !== "string" || input.trim() === "") {
    return bad("must be a non-empty rule: [METHODS ]HOST[/PATH]");
  }
  const written = input.trim();
  const space = written.indexOf(" ");
  let methods: RequestScope["methods"] = "any";
  let rest = written;
  // A first word in capitals is a method list; anything else is left to the host parser's error.
  if (space >= 0 && /^[A-Z,|-]+$/.test(written.slice(0, space))) {
    // `GET,POST` or `GET|POST` (a comma-separated variable, SLAPENIR_ALLOW, needs the second).
    const list = written.slice(0, space).split(/[,|]/);
    if (!list.every((m) => METHOD_RE.test(m))) {
      return bad("methods must be upper-case names separated by commas (GET,POST)");
    }
    methods = new Set(list);
    rest = written.slice(space + 1).trim();
  }
  // The path starts at the first `/` after the authority (an IPv6 literal is bracketed).
  const slash = rest.startsWith("[") ? rest.indexOf("/", rest.indexOf("]")) : rest.indexOf("/");
  const hostText = slash < 0 ? rest : rest.slice(0, slash);
  const host = parseHostPattern(hostText, { allowAny: rules.allowAny, allowPort: true });
  if (!host.ok) return bad(host.reason);
  let path: string[] | null = null;
  if (slash >= 0) {
    const segments = rest.slice(slash + 1).split("/");
    for (const s of segments) {
      if (!SEGMENT_RE.test(s) || s === "." || s === "..") {
        return bad(`path segment ${JSON.stringify(s)}: a literal, * or ** (no empty, . or ..)`);
      }
    }
    // The pattern in the form paths are matched in (`*` and `**` are kept as they are).
    const canonical = canonicalPath(`/${segments.join("/")}`);
    if (!canonical.ok) return bad(`path pattern: ${canonical.reason}`);
    path = canonical.value.split("/").slice(1);
  }
  return allow({ host: host.value, scope: Object.freeze({ methods, path }), written });
}

/** The rule as it reads in a reason (`GET,POST api.github.com/repos/**`), its host as written or canonical. */
export function ruleText(host: HostPattern, scope: RequestScope, canonical = false): string {
  const methods = scope.methods === "any" ? "" : `${[...scope.methods].join(",")} `;
  const h = canonical ? host.pattern : host.written;
  return `${methods}${h}${scope.path ? `/${scope.path.join("/")}` : ""}`;
}

/** Whether `scope` covers the request; a path it needs but cannot read is a refusal. */
export function scopeCovers(
  scope: RequestScope,
  route: RequestRoute,
): Verdict<boolean, "bad-request"> {
  if (scope.methods !== "any" && !scope.methods.has(route.method)) return allow(false);
  if (scope.path === null) return allow(true);
  if (!route.path.ok) return route.path;
  return allow(matchSegments(scope.path, route.path.value.split("/").slice(1)));
}

function matchSegments(pattern: readonly string[], path: readonly string[]): boolean {
  if (pattern.length === 0) return path.length === 0;
  const [head, ...rest] = pattern;
  if (head === "**") {
    for (let i = 0; i <= path.length; i++) if (matchSegments(rest, path.slice(i))) return true;
    return false;
  }
  if (path.length === 0) return false;
  if (head !== "*" && head !== path[0]) return false;
  return matchSegments(rest, path.slice(1));
}

const utf8Strict = new TextDecoder("utf-8", { fatal: true });

/** The bytes a path with only well-formed %-escapes stands for. */
function decodeURIComponentBytes(path: string): number[] {
  const bytes: number[] = [];
  for (let i = 0; i < path.length; i++) {
    if (path[i] === "%") {
      bytes.push(Number.parseInt(path.slice(i + 1, i + 3), 16));
      i += 2;
    } else bytes.push(path.charCodeAt(i) & 0xff);
  }
  return bytes;
}

/**
 * The path of an origin-form target in the one form rules match on, or why it cannot be read
 * one way. `*` (OPTIONS *) is its own path.
 */
export function canonicalPath(target: string): Verdict<string, "bad-request"> {
  const q = target.indexOf("?");
  const raw = q < 0 ? target : target.slice(0, q);
  if (raw === "*") return allow("*");
  const no = (why: string) => refuse("bad-request" as const, `ambiguous path: ${why}`);
  if (!raw.startsWith("/")) return no("it does not start with /");
  if (raw.includes("\\")) return no("a backslash");
  if (raw.includes(";")) return no("a ; parameter");
  let out = "";
  for (let i = 0; i < raw.length; i++) {
    const c = raw[i]!;
    if (c !== "%") {
      out += c;
      continue;
    }
    const hex = raw.slice(i + 1, i + 3);
    if (!/^[0-9A-Fa-f]{2}$/.test(hex)) return no("a bad %-escape");
    const byte = Number.parseInt(hex, 16);
    const ch = String.fromCharCode(byte);
    if (byte === 0) return no("an encoded NUL");
    if (ch === "/" || ch === "\\" || ch === ".") return no(`an encoded ${ch}`);
    out += /[A-Za-z0-9_~-]/.test(ch) ? ch : `%${hex.toUpperCase()}`;
    i += 2;
  }
  // `%252e` (or `%25%32%65`) is `%2e` to a server that decodes once and `.` to one that decodes
  // twice: judged on the path decoded once, where every unreserved escape is already a letter.
  if (/%25(2E|2F|5C|00|25)/i.test(out)) return no("a doubly encoded . / \\ % or NUL");
  // Escapes must spell UTF-8: an overlong `.` (%C0%AE) or `/` (%C0%AF) is a dot or a slash to
  // a lenient decoder and nothing to a strict one.
  try {
    utf8Strict.decode(Buffer.from(decodeURIComponentBytes(out)));
  } catch {
    return no("an escape that is not UTF-8 (overlong or invalid)");
  }
  const segments = out.split("/").slice(1);
  for (let i = 0; i < segments.length; i++) {
    const s = segments[i]!;
    if (s === "." || s === "..") return no("a . or .. segment");
    if (s === "" && i < segments.length - 1) return no("an empty segment (//)");
  }
  return allow(out);
}
