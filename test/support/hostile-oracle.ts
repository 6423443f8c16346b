// The leak oracle for the hostile tests: the secret values they use, every way a hostile
// upstream or agent might encode one (built here with Node's own encoders, independently of
// src/credentials/secret-variants.ts), and a detector that decodes a byte dump in every scheme it
// knows (hex runs at both nibble offsets, base64/base64url runs at every char offset, percent
// and form decoding, JSON and HTML escapes) and reports whether a real value is inside. The
// detector is deliberately broader than the proxy's matcher: a leak the proxy misses shows up
// here. Test-only; it must never print a secret (findings name the encoding, not the bytes).

import { characterEntities } from "character-entities";

/** Two credentials: one plain token, one with bytes every encoding treats specially. */
export const SECRETS = {
  alpha: {
    name: "alpha",
    dummy: "sk-live-DUMMY00000000000000000000000000a",
    real: "sk-live-Q7f3Zp9Lx2Vb8Nc4Rm6Tk1Wy5Hd0Js3",
  },
  beta: {
    name: "beta",
    dummy: "ghp_DUMMYdummyDUMMYdummyDUMMYdum",
    real: 'ghp_R3al/Se+cr=et&Tok"en<9>Zq~2Wx',
  },
  gamma: {
    name: "gamma",
    dummy: "xoxb-DUMMY-0000000000-aaaaaaaaaaaa",
    real: "xoxb-7731952846-Zq8Rk2Lp0Tm5Vw3Yx",
  },
} as const;

export const REALS: readonly Buffer[] = Object.values(SECRETS).map((s) =>
  Buffer.from(s.real, "latin1"),
);

export interface Planting {
  readonly encoding: string;
  readonly text: Buffer;
}

const hex = (b: Buffer) => b.toString("hex");
const pct = (b: Buffer, all: boolean, upper: boolean) =>
  Array.from(b, (c) => {
    const keep = !all && /[A-Za-z0-9\-._~]/.test(String.fromCharCode(c));
    if (keep) return String.fromCharCode(c);
    const h = c.toString(16).padStart(2, "0");
    return `%${upper ? h.toUpperCase() : h}`;
  }).join("");

/** Every encoding of `real` a hostile peer might use, each with some context around it. */
export function plantings(real: Buffer): Planting[] {
  const out: Planting[] = [];
  const add = (encoding: string, text: string) =>
    out.push({ encoding, text: Buffer.from(text, "latin1") });
  add("raw", `token=${real.toString("latin1")};`);
  for (const k of [0, 1, 2]) {
    const framed = Buffer.concat([Buffer.from("xyz".slice(0, k)), real, Buffer.from("!?")]);
    add(`base64-${k}`, `b64:${framed.toString("base64")}.`);
    add(`base64url-${k}`, `b64u:${framed.toString("base64url")}.`);
  }
  add("hex-lower", `h=${hex(real)}`);
  add("hex-upper", `H=${hex(real).toUpperCase()}`);
  add(
    "hex-spaced",
    `<CanonicalRequestBytes>${Array.from(real, (c) => c.toString(16).padStart(2, "0")).join(" ")}</CanonicalRequestBytes>`,
  );
  add("percent-all-upper", `p=${pct(real, true, true)}`);
  add("percent-all-lower", `p=${pct(real, true, false)}`);
  add("percent-reserved", `q=${encodeURIComponent(real.toString("latin1"))}`);
  add("form", `f=${new URLSearchParams({ v: real.toString("latin1") }).toString().slice(2)}`);
  add("json", JSON.stringify({ key: real.toString("latin1") }));
  add("json-slash", JSON.stringify({ key: real.toString("latin1") }).replaceAll("/", "\\/"));
  const units = Array.from(real.toString("latin1"), (ch) => ch.charCodeAt(0));
  add(
    "json-unicode-lower",
    `{"k":"${units.map((u) => `\\u${u.toString(16).padStart(4, "0")}`).join("")}"}`,
  );
  add(
    "json-unicode-upper",
    `{"k":"${units.map((u) => `\\u${u.toString(16).padStart(4, "0").toUpperCase()}`).join("")}"}`,
  );
  add("html-decimal", `<p>${units.map((u) => `&#${u};`).join("")}</p>`);
  add("html-hex", `<p>${units.map((u) => `&#x${u.toString(16)};`).join("")}</p>`);
  // As real servers write them (issue 15, class 2): some characters escaped, others not.
  const chars = Array.from(real.toString("latin1"));
  const some = (f: (ch: string, i: number) => string | null) =>
    chars.map((ch, i) => f(ch, i) ?? ch).join("");
  const u4 = (ch: string, upper: boolean) => {
    const h = ch.charCodeAt(0).toString(16).padStart(4, "0");
    return `\\u${upper ? h.toUpperCase() : h}`;
  };
  // .NET's System.Text.Json: `+`, `<`, `>`, `&`, `'` and `"` as \u00XX (upper case), the rest raw.
  add(
    "json-dotnet",
    `{"k":"${some((ch) => ("+<>&'\"".includes(ch) ? u4(ch, true) : ch === "\\" ? "\\\\" : null))}"}`,
  );
  // Every third character \u-escaped, alternating hex case.
  add(
    "json-partial",
    `{"k":"${some((ch, i) => (i % 3 === 1 ? u4(ch, i % 2 === 0) : JSON.stringify(ch).slice(1, -1)))}"}`,
  );
  // Go html/template: `+` as &#43;, `"` as &#34;, `&` `<` `>` named, the rest raw.
  const goHtml: Record<string, string> = {
    "+": "&#43;",
    '"': "&#34;",
    "'": "&#39;",
    "&": "&amp;",
    "<": "&lt;",
    ">": "&gt;",
  };
  add("html-go", `<p>${some((ch) => goHtml[ch] ?? null)}</p>`);
  // PHP htmlentities(ENT_HTML5): every character with a name, by its name (the first one).
  add("html5-named", `<p>${some((ch) => HTML5_NAME.get(ch) ?? null)}</p>`);
  // Mixed decimal and hex references, upper-case hex, on every other character.
  add(
    "html-mixed",
    `<p>${some((ch, i) => (i % 2 ? null : i % 4 ? `&#X${ch.charCodeAt(0).toString(16).toUpperCase()};` : `&#${ch.charCodeAt(0)};`))}</p>`,
  );
  // GitHub's contents API: base64 of the file wrapped at 60 columns, the breaks as JSON \n.
  const file = Buffer.concat([Buffer.from("# config\ntoken = "), real, Buffer.from("\n")]);
  add(
    "github-contents",
    `{"encoding":"base64","content":"${wrap(file.toString("base64"), 60, "\\n")}\\n"}`,
  );
  // MIME: base64 at 76 columns, CRLF.
  add(
    "mime-base64",
    `Content-Transfer-Encoding: base64\r\n\r\n${wrap(Buffer.concat([Buffer.from("x".repeat(50)), real]).toString("base64"), 76, "\r\n")}\r\n`,
  );
  // Python's urllib.parse.quote (keeps `/`), Go's url.PathEscape (keeps `+` `=`, escapes `/`).
  add(
    "python-quote",
    `u=${some((ch) => (/[A-Za-z0-9_.~/-]/.test(ch) ? null : `%${ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`))}`,
  );
  add(
    "go-path-escape",
    `/p/${some((ch) => (ch === "/" || ch === "?" || ch === "#" || ch === "%" || ch === '"' || ch === "<" || ch === ">" || ch === " " ? `%${ch.charCodeAt(0).toString(16).toUpperCase()}` : null))}`,
  );
  // Go's encoding/json around html/template output: `&` of each reference as \u0026.
  add(
    "go-json-html",
    `{"html":"<p>${some((ch) => (goHtml[ch] ? goHtml[ch]!.replace("&", "\\u0026") : ch === "\\" ? "\\\\" : null))}</p>"}`,
  );
  // JSON inside JSON, the inner string .NET-escaped.
  add(
    "json-in-json",
    JSON.stringify({
      input: `{"k":"${some((ch) => ("+<>&'\"".includes(ch) ? u4(ch, true) : ch === "\\" ? "\\\\" : null))}"}`,
    }),
  );
  // JavaScript \xHH on every other character; HTML numeric references without `;`.
  add(
    "js-hex",
    `var k = "${some((ch, i) => (i % 2 ? `\\x${ch.charCodeAt(0).toString(16).padStart(2, "0")}` : ch === '"' || ch === "\\" ? `\\${ch}` : null))}";`,
  );
  add(
    "html-no-semicolon",
    // (a `;` only where a digit follows, as a browser would otherwise read on)
    `<p>${some((ch, i) => (i % 3 === 0 ? `&#${ch.charCodeAt(0)}${/[0-9]/.test(chars[i + 1] ?? "") ? ";" : ""}` : null))} </p>`,
  );
  // Something before the value that escaping turns into the start of a token reaching into
  // it: Python's quote of "100%" + value, .NET's JSON of "&#x" + value (every other character
  // of the value escaped, so only a decoded view can find it).
  const dotnetEvery2 = (ch: string, i: number) =>
    i % 2 ? u4(ch, true) : ch === '"' ? '\\"' : ch === "\\" ? "\\\\" : ch;
  add(
    "prefix-percent",
    `q=100%25${some((ch, i) => (i % 2 ? `%${ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}` : /[A-Za-z0-9_.~-]/.test(ch) ? null : `%${ch.charCodeAt(0).toString(16).toUpperCase().padStart(2, "0")}`))}`,
  );
  add("prefix-amp-hex", `{"k":"\\u0026#x${chars.map((ch, i) => dotnetEvery2(ch, i)).join("")}"}`);
  // YAML block scalar: base64 in lines, indented.
  add(
    "yaml-indented-base64",
    `key: |\n  ${wrap(Buffer.concat([Buffer.from("yy"), real]).toString("base64"), 20, "\n  ")}\n`,
  );
  // PEM-like: LF every 16 characters of base64url.
  add(
    "base64url-wrapped",
    `${wrap(Buffer.concat([Buffer.from("ab"), real]).toString("base64url"), 16, "\n")}`,
  );
  return out;
}

const wrap = (s: string, width: number, br: string) =>
  (s.match(new RegExp(`.{1,${width}}`, "g")) ?? []).join(br);

/** A name for each character that has one (the first in the HTML5 list), e.g. `_` → &lowbar;. */
const HTML5_NAME: ReadonlyMap<string, string> = (() => {
  const m = new Map<string, string>();
  for (const [name, value] of Object.entries(characterEntities as Record<string, string>)) {
    if (value.length === 1 && value.charCodeAt(0) < 0x80 && !m.has(value))
      m.set(value, `&${name};`);
  }
  return m;
})();

function decodeAt(run: string, off: number, url: boolean): Buffer {
  let s = run.slice(off);
  if (url) s = s.replaceAll("-", "+").replaceAll("_", "/");
  s = s.replace(/=+$/, "");
  // A last partial group still decodes its whole bytes (Node's decoder takes unpadded text).
  return Buffer.from(s, "base64");
}

/** Binary-to-text decodings of one text: hex runs (both nibble offsets), base64 runs. */
function binaryViews(text: string): { scheme: string; bytes: Buffer }[] {
  const hexParts: Buffer[] = [];
  for (const m of text.matchAll(/[0-9a-fA-F]{16,}/g)) {
    const r = m[0];
    hexParts.push(Buffer.from(r.slice(0, r.length - (r.length % 2)), "hex"));
    hexParts.push(Buffer.from(r.slice(1, r.length - ((r.length - 1) % 2)), "hex"));
  }
  // Hex pairs with spaces between (AWS's CanonicalRequestBytes).
  for (const m of text.matchAll(/(?:[0-9a-fA-F]{2} ){7,}[0-9a-fA-F]{2}/g)) {
    hexParts.push(Buffer.from(m[0].replaceAll(" ", ""), "hex"));
  }
  const b64Parts: Buffer[] = [];
  for (const m of text.matchAll(/[A-Za-z0-9+/_-]{12,}={0,2}/g)) {
    for (let off = 0; off < 4; off++) {
      b64Parts.push(decodeAt(m[0], off, false), Buffer.from("\n"), decodeAt(m[0], off, true));
      b64Parts.push(Buffer.from("\n"));
    }
  }
  return [
    { scheme: "hex", bytes: Buffer.concat(hexParts) },
    { scheme: "base64", bytes: Buffer.concat(b64Parts) },
  ];
}

/**
 * Text-level decodings: percent, form, JSON escapes, HTML character references (numeric and
 * every HTML5 name); each also with its line breaks (raw, or as JSON escapes) taken out.
 */
function textViews(text: string): { scheme: string; text: string }[] {
  const views = textViewsOnce(text);
  // Composed: JSON then HTML, JSON twice (JSON in JSON, HTML in JSON).
  for (const v of [...views]) {
    if (v.scheme !== "json") continue;
    for (const w of textViewsOnce(v.text))
      views.push({ scheme: `${w.scheme} in json`, text: w.text });
  }
  const unbroken = (t: string) => t.replace(/(\r|\n|\\r|\\n)[ \t]*/g, "");
  return [
    ...views,
    ...views.map((v) => ({ scheme: `${v.scheme} unwrapped`, text: unbroken(v.text) })),
    { scheme: "unwrapped", text: unbroken(text) },
  ];
}

function textViewsOnce(text: string): { scheme: string; text: string }[] {
  const pct = (t: string) =>
    t.replace(/%([0-9a-fA-F]{2})/g, (_, h: string) => String.fromCharCode(Number.parseInt(h, 16)));
  // One left-to-right pass, as a JSON (or JavaScript) reader does: `\\\\u0041` is `\\u0041`.
  const short: Record<string, string> = { b: "\b", f: "\f", n: "\n", r: "\r", t: "\t" };
  const json = text.replace(/\\(u[0-9a-fA-F]{4}|x[0-9a-fA-F]{2}|["\\/bfnrt])/g, (_, e: string) =>
    e.length > 1 ? String.fromCharCode(Number.parseInt(e.slice(1), 16)) : (short[e] ?? e),
  );
  const html = text
    .replace(/&#[xX]([0-9a-fA-F]+);?/g, (_, h: string) =>
      String.fromCharCode(Number.parseInt(h, 16)),
    )
    .replace(/&#(\d+);?/g, (_, d: string) => String.fromCharCode(Number(d)))
    .replace(/&([A-Za-z][A-Za-z0-9]*);/g, (all, name: string) => {
      const v = (characterEntities as Record<string, string>)[name];
      return v ?? all;
    });
  return [
    { scheme: "percent", text: pct(text) },
    { scheme: "form", text: pct(text.replaceAll("+", " ")) },
    { scheme: "json", text: json },
    { scheme: "html", text: html },
  ];
}

/**
 * Decoded views of `hay`: the raw bytes, each text decoding, each binary decoding, and each
 * binary decoding of each text decoding (base64 inside a percent-encoded URL, hex in JSON …).
 */
export function decodedViews(hay: Buffer): { scheme: string; bytes: Buffer }[] {
  const text = hay.toString("latin1");
  const views: { scheme: string; bytes: Buffer }[] = [{ scheme: "raw", bytes: hay }];
  views.push(...binaryViews(text));
  for (const t of textViews(text)) {
    views.push({ scheme: t.scheme, bytes: Buffer.from(t.text, "latin1") });
    for (const b of binaryViews(t.text)) {
      views.push({ scheme: `${b.scheme} in ${t.scheme}`, bytes: b.bytes });
    }
  }
  return views;
}

/** The schemes in which `hay` carries one of `reals` (empty: no leak). Never the bytes. */
export function findLeaks(hay: Buffer | string, reals: readonly Buffer[] = REALS): string[] {
  const b = typeof hay === "string" ? Buffer.from(hay, "latin1") : hay;
  const found: string[] = [];
  for (const v of decodedViews(b)) {
    for (const [i, real] of reals.entries()) {
      if (v.bytes.includes(real)) found.push(`secret#${i} as ${v.scheme}`);
    }
  }
  return found;
}

/** Same check for a dummy-free zone: does `hay` hold the value `needle` in any encoding? */
export function carries(hay: Buffer | string, needle: string): boolean {
  return findLeaks(hay, [Buffer.from(needle, "latin1")]).length > 0;
}
