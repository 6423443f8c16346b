// Classifies and validates a request-target (RFC 9112 3.2) against its method: CONNECT takes
// authority-form only, `*` is for OPTIONS only, everything else takes origin-form or
// absolute-form (http/https). Syntax only: canonicalising the host for policy is
// src/policy/host.ts's job. It must never accept userinfo, a fragment, a raw byte outside
// visible ASCII, a backslash or a broken percent-escape: each is a path- or host-confusion
// trick between the proxy and the origin.

import type { HttpErrorCode } from "./http-error.ts";
import { hexValue } from "./syntax.ts";

export type TargetForm = "origin" | "absolute" | "authority" | "asterisk";

export interface ParsedTarget {
  readonly form: TargetForm;
  /** authority-form and absolute-form: the authority as written. */
  readonly authority?: string;
  /** absolute-form: the lower-cased scheme. */
  readonly scheme?: "http" | "https";
  /** origin-form and absolute-form: path and query ("/" when absolute-form has none). */
  readonly pathAndQuery?: string;
}

export type TargetProblem = { readonly code: HttpErrorCode; readonly reason: string };

/** Bytes that may never appear in a target even though they are visible ASCII. */
const FORBIDDEN = new Set(['"', "#", "<", ">", "\\"].map((c) => c.charCodeAt(0)));

export function parseRequestTarget(method: string, target: string): ParsedTarget | TargetProblem {
  for (let i = 0; i < target.length; i++) {
    const c = target.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || FORBIDDEN.has(c)) {
      return { code: "bad-target", reason: "invalid character in the request target" };
    }
    if (c === 0x25 /* % */) {
      const h1 = target.charCodeAt(i + 1);
      const h2 = target.charCodeAt(i + 2);
      if (!(h1 < 256 && hexValue(h1) !== -1 && h2 < 256 && hexValue(h2) !== -1)) {
        return { code: "bad-target", reason: "malformed percent-encoding in the request target" };
      }
    }
  }
  if (target.length === 0) return { code: "bad-target", reason: "empty request target" };
  if (method === "CONNECT") {
    const a = checkAuthority(target, true);
    return a ?? { form: "authority", authority: target };
  }
  if (target === "*") {
    return method === "OPTIONS"
      ? { form: "asterisk" }
      : { code: "bad-target", reason: "asterisk-form is only allowed with OPTIONS" };
  }
  if (target.startsWith("/")) {
    // "//x" would be read as a network-path reference by some URL parsers.
    if (target.startsWith("//")) {
      return { code: "bad-target", reason: "origin-form target must not start with //" };
    }
    return { form: "origin", pathAndQuery: target };
  }
  const m = /^([A-Za-z][A-Za-z0-9+.-]*):\/\/([^/?]*)(.*)$/.exec(target);
  if (!m)
    return { code: "bad-target", reason: "request target is neither origin- nor absolute-form" };
  const scheme = m[1]!.toLowerCase();
  if (scheme !== "http" && scheme !== "https") {
    return { code: "bad-target", reason: "absolute-form scheme must be http or https" };
  }
  const authority = m[2]!;
  const rest = m[3]!;
  const problem = checkAuthority(authority, false);
  if (problem) return problem;
  if (rest.startsWith("?") || rest.startsWith("//")) {
    return { code: "bad-target", reason: "malformed path in absolute-form target" };
  }
  return { form: "absolute", authority, scheme, pathAndQuery: rest === "" ? "/" : rest };
}

/**
 * `host [":" port]` where host is a bracketed IPv6 literal or a reg-name of letters, digits,
 * "-", "." and "_". Sub-delims, percent-escapes and userinfo are refused in hosts: legitimate
 * API hosts never need them and they are the raw material of host-confusion attacks.
 */
export function checkAuthority(authority: string, portRequired: boolean): TargetProblem | null {
  if (authority.includes("@")) {
    return { code: "bad-target", reason: "userinfo is not allowed in an authority" };
  }
  let host: string;
  let port: string | undefined;
  if (authority.startsWith("[")) {
    const close = authority.indexOf("]");
    if (close === -1) return { code: "bad-target", reason: "unterminated IPv6 literal" };
    host = authority.slice(1, close);
    const after = authority.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) return { code: "bad-target", reason: "junk after IPv6 literal" };
      port = after.slice(1);
    }
    if (!/^[0-9A-Fa-f:.]+$/.test(host) || !host.includes(":")) {
      return { code: "bad-target", reason: "invalid IPv6 literal" };
    }
  } else {
    const colon = authority.indexOf(":");
    host = colon === -1 ? authority : authority.slice(0, colon);
    if (colon !== -1) port = authority.slice(colon + 1);
    if (!/^[A-Za-z0-9._-]+$/.test(host)) {
      return { code: "bad-target", reason: "invalid host in authority" };
    }
  }
  if (port === undefined) {
    return portRequired ? { code: "bad-target", reason: "authority-form requires a port" } : null;
  }
  if (!/^[0-9]{1,5}$/.test(port) || Number(port) === 0 || Number(port) > 65535) {
    return { code: "bad-target", reason: "invalid port" };
  }
  return null;
}
