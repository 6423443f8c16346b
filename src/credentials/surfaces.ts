// Where a credential is presented, and so the only places its dummy is swapped (issue 15).
// A dummy anywhere else in a request to a bound host travels unchanged: an agent that writes
// its dummy into a gist, a prompt or a stored file gets the dummy stored, never the real value
// (the store-and-read-back class). Agents quote their own dummies legitimately, so such a
// request is not refused either.
//
//   header:NAME   the value of header NAME when it is the dummy; in `Authorization` also
//                 `Bearer DUMMY` and `token DUMMY`, and a Basic user or password that is the
//                 dummy (basic-auth.ts). The default, when a credential names no surface.
//   query:NAME    the value of query parameter NAME when it is, decoded, exactly the dummy
//   form:NAME     the value of field NAME of a form-encoded body when it is exactly the dummy,
//                 on the endpoints the credential's hosts name (an OAuth `client_secret`)
//   json:POINTER  the string at a JSON pointer (`json:/client_secret`) that is exactly the
//                 dummy, likewise
//   frame:POINTER the string at a JSON pointer in a text WebSocket message the agent sends
//                 (`frame:/access_token`, an auth message) that is exactly the dummy, in a
//                 WebSocket to the credential's endpoints (net/ws-relay.ts)
//   body          anywhere in the request body, in any encoding the swap knows: the old model,
//                 opt-in, for upstreams that take a credential in a body (it reopens the class
//                 above on that credential's hosts; SECURITY.md says so)
//
// Pure: text in, surfaces or a reason out; the config loader names the field.

import { HOP_BY_HOP, PROTECTED_FROM_CONNECTION } from "../http/hop-by-hop.ts";
import type { SwapPair } from "./bindings.ts";

export type Surface =
  | { readonly kind: "header"; readonly name: string }
  | { readonly kind: "query"; readonly name: string }
  | { readonly kind: "form"; readonly name: string }
  | { readonly kind: "json"; readonly name: string }
  | { readonly kind: "frame"; readonly name: string }
  | { readonly kind: "body" };

export const DEFAULT_SURFACES: readonly Surface[] = Object.freeze([
  Object.freeze({ kind: "header", name: "authorization" } as const),
]);

const TOKEN_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** Query names as an API documents them: no characters that would need encoding to compare. */
const QUERY_NAME_RE = /^[A-Za-z0-9._~\-[\]]{1,64}$/;
/** Fields that frame or route the message: a real value there is not a presentation. */
const NOT_A_SURFACE = new Set([...HOP_BY_HOP, ...PROTECTED_FROM_CONNECTION, "cookie"]);

export type SurfaceParse = { ok: true; value: Surface } | { ok: false; reason: string };

/** One surface as written in configuration (`header:x-api-key`, `query:key`, `body`). */
export function parseSurface(text: unknown): SurfaceParse {
  if (typeof text !== "string") return { ok: false, reason: "must be a string" };
  if (text === "body") return { ok: true, value: { kind: "body" } };
  const colon = text.indexOf(":");
  const kind = colon < 0 ? text : text.slice(0, colon);
  const name = colon < 0 ? "" : text.slice(colon + 1);
  if (kind === "header") {
    if (!TOKEN_RE.test(name) || name.length > 64) {
      return { ok: false, reason: "header: needs a field name (an HTTP token)" };
    }
    const lower = name.toLowerCase();
    if (NOT_A_SURFACE.has(lower)) {
      return { ok: false, reason: `header:${lower} frames or routes the message; not a surface` };
    }
    return { ok: true, value: { kind: "header", name: lower } };
  }
  if (kind === "query" || kind === "form") {
    if (!QUERY_NAME_RE.test(name)) {
      return { ok: false, reason: `${kind}: needs a parameter name (letters, digits, ._~-[])` };
    }
    return { ok: true, value: { kind, name } };
  }
  if (kind === "json" || kind === "frame") {
    if (!/^(\/[^/]{1,64}){1,8}$/.test(name) || /~[^01]/.test(name)) {
      return { ok: false, reason: `${kind}: needs a JSON pointer (/client_secret, /auth/0/key)` };
    }
    return { ok: true, value: { kind, name } };
  }
  return {
    ok: false,
    reason:
      'must be "header:NAME", "query:NAME", "form:NAME", "json:/POINTER", "frame:/POINTER" or "body"',
  };
}

export function surfaceText(s: Surface): string {
  return s.kind === "body" ? "body" : `${s.kind}:${s.name}`;
}

/** Whether `text` (latin1) is exactly `bytes`. */
function equalsBytes(text: string, bytes: Uint8Array): boolean {
  if (text.length !== bytes.length) return false;
  for (let i = 0; i < bytes.length; i++) if (text.charCodeAt(i) !== bytes[i]) return false;
  return true;
}

/** The pair whose dummy `text` is, whole; undefined when it is anything else. */
export function presented(text: string, pairs: readonly SwapPair[]): SwapPair | undefined {
  return pairs.find((p) => equalsBytes(text, p.dummy));
}

/** Bytes as latin1 text (one char per byte), as heads and the swapped fields are handled. */
export const latin1 = (b: Uint8Array) =>
  Buffer.from(b.buffer, b.byteOffset, b.length).toString("latin1");

/**
 * A header value that presents a dummy, with the real value in its place: the dummy alone, or
 * in `Authorization` after the bearer schemes `Bearer` or `token` (Basic is basic-auth.ts's).
 * Any other value is left as it is — another scheme could make the upstream decode the real
 * value into something the redactor does not know (`Basic REAL` read as base64), or quote it
 * back as an invalid key.
 */
export function swapHeaderValue(
  value: string,
  pairs: readonly SwapPair[],
  field = "",
): { value: string; swapped?: string } {
  const m = field === "authorization" ? /^((?:bearer|token) )?([^ ]+)$/i.exec(value) : null;
  const token = m ? m[2]! : value;
  const p = presented(token, pairs);
  return p ? { value: `${m?.[1] ?? ""}${latin1(p.real)}`, swapped: p.name } : { value };
}

/**
 * `name=value&…` (a query string or a form body): a named parameter whose value, form-decoded,
 * is exactly a dummy gets its real value, percent-encoded. Anything else is left as sent — a
 * value that holds a dummy among other text (`x;note=DUMMY`) is content, not a presentation.
 */
export function swapParams(
  text: string,
  names: ReadonlyMap<string, readonly SwapPair[]>,
): { text: string; swapped: string[] } {
  const swapped: string[] = [];
  if (names.size === 0) return { text, swapped };
  const params = text.split("&");
  for (let i = 0; i < params.length; i++) {
    const p = params[i]!;
    const eq = p.indexOf("=");
    if (eq < 0) continue;
    const pairs = names.get(formDecode(p.slice(0, eq)));
    const pair = pairs ? presented(formDecode(p.slice(eq + 1)), pairs) : undefined;
    if (!pair) continue;
    params[i] = `${p.slice(0, eq + 1)}${encodeURIComponent(latin1(pair.real))}`;
    swapped.push(pair.name);
  }
  return { text: swapped.length > 0 ? params.join("&") : text, swapped };
}

/** The target with its query's named parameters swapped (swapParams); the path untouched. */
export function swapQueryValues(
  target: string,
  names: ReadonlyMap<string, readonly SwapPair[]>,
): { target: string; swapped: string[] } {
  const q = target.indexOf("?");
  if (q < 0 || names.size === 0) return { target, swapped: [] };
  const r = swapParams(target.slice(q + 1), names);
  return { target: `${target.slice(0, q + 1)}${r.text}`, swapped: r.swapped };
}

/** Form decoding; a value that does not decode is compared as written (so it is no dummy). */
export function formDecode(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, " "));
  } catch {
    return raw;
  }
}
