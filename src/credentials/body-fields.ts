// Swaps inside one field of a request body, for credentials presented in a body (issue 15): an
// OAuth token endpoint's `client_secret` form field, a JSON member named by a pointer. Only
// that field's value is touched; the same dummy anywhere else in the body goes out as sent.
// Pure, on latin1 text (one char per byte). A body that does not parse is left whole: nothing
// is swapped, so nothing real leaves.

/** `application/x-www-form-urlencoded`: the values of the named fields (names form-decoded). */
export function swapFormFields(
  body: string,
  swaps: ReadonlyMap<string, (value: string) => string>,
): string {
  if (swaps.size === 0) return body;
  return body
    .split("&")
    .map((pair) => {
      const eq = pair.indexOf("=");
      if (eq < 0) return pair;
      const f = swaps.get(formDecode(pair.slice(0, eq)));
      return f ? `${pair.slice(0, eq + 1)}${f(pair.slice(eq + 1))}` : pair;
    })
    .join("&");
}

/**
 * JSON: the string members at the given pointers (RFC 6901, `/client_secret`, `/auth/0/key`),
 * each replaced by `swap(literal)` where literal is the raw text between its quotes.
 */
export function swapJsonStrings(
  body: string,
  swaps: ReadonlyMap<string, (literal: string) => string>,
): string {
  if (swaps.size === 0) return body;
  const spans = jsonStringSpans(body);
  if (!spans) return body;
  let out = "";
  let at = 0;
  for (const s of spans) {
    const f = swaps.get(s.pointer);
    if (!f) continue;
    out += body.slice(at, s.start) + f(body.slice(s.start, s.end));
    at = s.end;
  }
  return at === 0 ? body : out + body.slice(at);
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

function formDecode(raw: string): string {
  try {
    return decodeURIComponent(raw.replace(/\+/g, " "));
  } catch {
    return raw;
  }
}
