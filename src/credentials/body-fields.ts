// Swaps inside one field of a request body, for credentials presented in a body (issue 15): an
// OAuth token endpoint's `client_secret` form field (surfaces.ts `swapParams`), a JSON member
// named by a pointer (here). Only a field whose whole value is the dummy is touched; the same
// dummy anywhere else in the body goes out as sent. Pure, on latin1 text (one char per byte).
// A body that does not parse is left whole: nothing is swapped, so nothing real leaves.

import type { SwapPair } from "./bindings.ts";
import { latin1, presented } from "./surfaces.ts";

/**
 * JSON: a string at one of the pointers (RFC 6901, `/client_secret`, `/auth/0/key`) that is,
 * decoded, exactly a dummy gets its real value. A body that is not strictly JSON is left whole.
 */
export function swapJsonStrings(
  body: string,
  pointers: ReadonlyMap<string, readonly SwapPair[]>,
): { text: string; swapped: string[] } {
  const swapped: string[] = [];
  if (pointers.size === 0) return { text: body, swapped };
  try {
    JSON.parse(body);
  } catch {
    return { text: body, swapped };
  }
  const spans = jsonStringSpans(body);
  if (!spans) return { text: body, swapped };
  let out = "";
  let at = 0;
  for (const s of spans) {
    const pairs = pointers.get(s.pointer);
    if (!pairs) continue;
    let decoded: string;
    try {
      decoded = JSON.parse(`"${body.slice(s.start, s.end)}"`);
    } catch {
      continue;
    }
    const pair = presented(decoded, pairs);
    if (!pair) continue;
    out += body.slice(at, s.start) + JSON.stringify(latin1(pair.real)).slice(1, -1);
    at = s.end;
    swapped.push(pair.name);
  }
  return { text: at === 0 ? body : out + body.slice(at), swapped };
}

interface Frame {
  readonly array: boolean;
  key: string | null;
  index: number;
}

/** Every string value's pointer and raw span (inside its quotes); null when it is not JSON. */
export function jsonStringSpans(
  text: string,
): { pointer: string; start: number; end: number }[] | null {
  const out: { pointer: string; start: number; end: number }[] = [];
  const stack: Frame[] = [];
  const pointer = () =>
    stack
      .map(
        (f) =>
          `/${(f.array ? String(f.index) : (f.key ?? "")).replace(/~/g, "~0").replace(/\//g, "~1")}`,
      )
      .join("");
  let expectKey = false;
  let i = 0;
  const n = text.length;
  while (i < n) {
    const c = text[i]!;
    if (c === " " || c === "\t" || c === "\n" || c === "\r" || c === "," || c === ":") {
      if (c === "," && stack.length > 0) {
        const top = stack[stack.length - 1]!;
        if (top.array) top.index++;
        else expectKey = true;
      }
      i++;
      continue;
    }
    if (c === "{" || c === "[") {
      stack.push({ array: c === "[", key: null, index: 0 });
      expectKey = c === "{";
      i++;
      continue;
    }
    if (c === "}" || c === "]") {
      if (stack.pop() === undefined) return null;
      expectKey = false;
      i++;
      continue;
    }
    if (c === '"') {
      let j = i + 1;
      while (j < n && text[j] !== '"') j += text[j] === "\\" ? 2 : 1;
      if (j >= n) return null;
      if (expectKey) {
        let key: unknown;
        try {
          key = JSON.parse(text.slice(i, j + 1));
        } catch {
          return null;
        }
        stack[stack.length - 1]!.key = String(key);
        expectKey = false;
      } else {
        out.push({ pointer: pointer(), start: i + 1, end: j });
      }
      i = j + 1;
      continue;
    }
    // A number, true, false or null: skip its characters.
    if (!/[-0-9a-z.+E]/.test(c)) return null;
    i++;
  }
  return stack.length === 0 ? out : null;
}
