// The shared table of matcher vectors: (patterns, replacements, input) -> (output, count).
// Every engine runs it (src/matcher/engine-suite.test.ts), whole and in many chunkings.
// Expected outputs are written by hand (or built so the answer is obvious), never computed by
// an engine, so the table checks the reference too. It must never hold a real credential.

export interface MatcherVector {
  readonly name: string;
  readonly patterns: readonly Uint8Array[];
  readonly replacements: readonly Uint8Array[];
  readonly input: Uint8Array;
  readonly output: Uint8Array;
  readonly replacements_made: number;
  /** Compiled with views (src/matcher/views.ts): the decoded view is matched too. */
  readonly views?: true;
}

const enc = new TextEncoder();
type Bytes = string | Uint8Array;
const b = (x: Bytes): Uint8Array => (typeof x === "string" ? enc.encode(x) : x);

function concat(...parts: Bytes[]): Uint8Array {
  const bs = parts.map(b);
  const out = new Uint8Array(bs.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of bs) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

function vec(
  name: string,
  pairs: [Bytes, Bytes][],
  input: Bytes,
  output: Bytes,
  count: number,
): MatcherVector {
  return {
    name,
    patterns: pairs.map(([p]) => b(p)),
    replacements: pairs.map(([, r]) => b(r)),
    input: b(input),
    output: b(output),
    replacements_made: count,
  };
}

/** Deterministic pseudo-random bytes (xorshift32), so the table is the same on every run. */
function bytesFrom(seed: number, n: number, alphabet?: string): Uint8Array {
  let x = seed >>> 0 || 1;
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = alphabet ? alphabet.charCodeAt(x % alphabet.length) : x & 0xff;
  }
  return out;
}

const ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

function manyPatterns(): MatcherVector {
  // 300 distinct alphanumeric tokens separated by "|" (never inside a token), so each planted
  // token is replaced by its own replacement and nothing else changes.
  const pairs: [Uint8Array, Uint8Array][] = [];
  for (let i = 0; i < 300; i++) {
    const tok = concat(
      `t${i.toString().padStart(3, "0")}`,
      bytesFrom(1000 + i, 8 + (i % 40), ALNUM),
    );
    pairs.push([tok, b(`<${i}>`)]);
  }
  const inParts: Bytes[] = ["head|"];
  const outParts: Bytes[] = ["head|"];
  for (let i = 299; i >= 0; i -= 7) {
    inParts.push(pairs[i]![0], "|");
    outParts.push(`<${i}>`, "|");
  }
  return vec(
    "many patterns (300), planted in reverse order",
    pairs,
    concat(...inParts),
    concat(...outParts),
    43,
  );
}

function longPattern(): MatcherVector {
  const p512 = bytesFrom(77, 512);
  const nearMiss = Uint8Array.from(p512);
  nearMiss[511] = nearMiss[511]! ^ 1;
  return vec(
    "512-byte pattern, a near miss, then a hit, beside an 8-byte pattern",
    [
      [p512, "[LONG]"],
      ["shortpat", "[S]"],
    ],
    concat("<", nearMiss, ">shortpat<", p512, ">"),
    concat("<", nearMiss, ">[S]<[LONG]>"),
    2,
  );
}

export const matcherVectors: readonly MatcherVector[] = [
  vec("empty input", [["abcdefgh", "X"]], "", "", 0),
  vec("no match", [["abcdefgh", "X"]], "abcdefg abcdefgX", "abcdefg abcdefgX", 0),
  vec("one match in the middle", [["secret-0001", "[R]"]], "a secret-0001 b", "a [R] b", 1),
  vec("match at start", [["secret-0001", "[R]"]], "secret-0001 b", "[R] b", 1),
  vec("match at end", [["secret-0001", "[R]"]], "a secret-0001", "a [R]", 1),
  vec("input is exactly one match", [["secret-0001", "[R]"]], "secret-0001", "[R]", 1),
  vec("partial pattern at end stays", [["secret-0001", "[R]"]], "x secret-000", "x secret-000", 0),
  vec(
    "adjacent matches",
    [
      ["AAAAAAAA", "1"],
      ["BBBBBBBB", "2"],
    ],
    "AAAAAAAABBBBBBBBAAAAAAAA",
    "121",
    3,
  ),
  vec(
    "overlap: leftmost wins",
    [
      ["efghijkl", "[2]"],
      ["abcdefgh", "[1]"],
    ],
    "abcdefghijkl",
    "[1]ijkl",
    1,
  ),
  vec(
    "same start: longest wins (listed shorter first)",
    [
      ["secret-abc", "[A]"],
      ["secret-abcdef", "[B]"],
    ],
    "x secret-abcdef secret-abc secret-abcde",
    "x [B] [A] [A]de",
    3,
  ),
  vec(
    "leftmost beats longer later match",
    [
      ["xabcdefgh", "[1]"],
      ["abcdefghijklmnop", "[2]"],
    ],
    "xabcdefghijklmnop",
    "[1]ijklmnop",
    1,
  ),
  vec(
    "earlier start found after a later match ended",
    [
      ["bcdefghi", "[S]"],
      ["abcdefghijk", "[L]"],
    ],
    "abcdefghijk abcdefghiQ",
    "[L] a[S]Q",
    2,
  ),
  vec(
    "failed long partial leaves an inner match",
    [
      ["abcdefghXYZ", "[1]"],
      ["cdefghij", "[2]"],
    ],
    "abcdefghij",
    "ab[2]",
    1,
  ),
  vec(
    "match found while a longer one was pending, after the short one",
    [
      ["abcdefgh", "[1]"],
      ["abcdefghijklmnopqrsZ", "[2]"],
      ["ijklmnop", "[3]"],
    ],
    "abcdefghijklmnopqrsQ abcdefghijklmnopqrsZ",
    "[1][3]qrsQ [2]",
    3,
  ),
  vec(
    "pattern inside a longer pattern",
    [
      ["0123456789abcdef", "[L]"],
      ["456789ab", "[S]"],
    ],
    "0123456789abcdef 456789ab 0123456789abcdeX",
    "[L] [S] 0123[S]cdeX",
    3,
  ),
  vec(
    "prefix-sharing patterns",
    [
      ["token-aaaa1", "[1]"],
      ["token-aaaa2", "[2]"],
      ["token-aaab", "[3]"],
    ],
    "token-aaaa2token-aaaa1 token-aaab token-aaaa3",
    "[2][1] [3] token-aaaa3",
    3,
  ),
  vec(
    "self-overlapping pattern resumes after each match",
    [["aaaaaaaa", "X"]],
    "aaaaaaaaaaaaaaaaaaaa",
    "XXaaaa",
    2,
  ),
  vec("near misses then a hit", [["aaaaaaab", "X"]], "aaaaaaaaaaaaaaab", "aaaaaaaaX", 1),
  vec(
    "binary bytes including 0x00 and 0xff",
    [
      [Uint8Array.of(0, 0xff, 0, 0xff, 1, 2, 3, 0), Uint8Array.of(0xee)],
      [Uint8Array.of(0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff), Uint8Array.of(0, 0)],
    ],
    Uint8Array.of(
      0,
      0,
      0xff,
      0,
      0xff,
      1,
      2,
      3,
      0,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
      0xff,
    ),
    Uint8Array.of(0, 0xee, 0, 0, 0xff),
    2,
  ),
  vec(
    "replacement longer, shorter and empty",
    [
      ["short-11", "x".repeat(100)],
      ["longer-pattern-22", "y"],
      ["vanish-33", ""],
    ],
    "<short-11><longer-pattern-22><vanish-33>",
    `<${"x".repeat(100)}><y><>`,
    3,
  ),
  vec(
    "replacement contains a pattern (not rescanned)",
    [["password", "password"]],
    "passwordpassword",
    "passwordpassword",
    2,
  ),
  longPattern(),
  manyPatterns(),
];

// With views: the same value spelled as real servers write it. Each expected output is written
// out by hand from the rules in src/matcher/views.ts.
const V = "ghp_Ab+c_D.eF01";
const vv = (
  name: string,
  input: Bytes,
  output: Bytes,
  count: number,
  pairs: [Bytes, Bytes][] = [[V, "[R]"]],
): MatcherVector => ({ ...vec(name, pairs, input, output, count), views: true });

export const viewVectors: readonly MatcherVector[] = [
  vv("views: as written", `a ${V} b`, "a [R] b", 1),
  vv(
    "views: some characters JSON-escaped, either hex case (.NET escapes +)",
    '{"t":"gh\\u0070_Ab\\u002Bc_D.eF01","u":"\\u0067hp_Ab\\u002bc\\u005fD.eF01"}',
    '{"t":"[R]","u":"[R]"}',
    2,
  ),
  vv(
    "views: short JSON escapes (\\/ and a surrogate pair decode, a lone surrogate does not)",
    '"ghp_Ab+c_D.eF01" \\/ \\ud83d\\ude00 \\ud83d ghp_Ab+c_D.eF01',
    '"[R]" \\/ \\ud83d\\ude00 \\ud83d [R]',
    2,
  ),
  vv(
    "views: some characters HTML references (decimal, hex in either case, named)",
    "<p>ghp_Ab&#43;c&lowbar;D&period;eF01</p><p>&#x67;hp_Ab&#X2B;c_D.eF&#048;1</p>",
    "<p>[R]</p><p>[R]</p>",
    2,
  ),
  vv(
    "views: references that are not (unknown name, zero, too many digits, no digits)",
    "ghp_Ab&plusx;c_D.eF01 ghp_Ab&#0;c_D.eF01 ghp_Ab&#00000000043;c_D.eF01 ghp_Ab&#;c_D.eF01",
    "ghp_Ab&plusx;c_D.eF01 ghp_Ab&#0;c_D.eF01 ghp_Ab&#00000000043;c_D.eF01 ghp_Ab&#;c_D.eF01",
    0,
  ),
  vv(
    "views: line breaks inside (LF, CRLF, JSON \\n and \\r\\n)",
    "ghp_Ab\n+c_D\r\n.eF01|ghp_\\nAb+c_D.e\\r\\nF01",
    "[R]|[R]",
    2,
  ),
  vv(
    "views: three line breaks in a row stand for themselves",
    "ghp_Ab\n\n\n+c_D.eF01|ghp_Ab\n\n+c_D.eF01",
    "ghp_Ab\n\n\n+c_D.eF01|[R]",
    1,
  ),
  vv("views: line breaks around a match stay", "\n\nghp_Ab+c_D.eF01\r\n", "\n\n[R]\r\n", 1),
  vv(
    "views: base64 wrapped at 8 columns, with JSON line breaks",
    '"Z2hwX0Fi\\nK2NfRC5l\\nRjAx"',
    '"[B]"',
    1,
    [["Z2hwX0FiK2NfRC5lRjAx", "[B]"]],
  ),
  vv(
    "views: one level of nesting decodes (JSON in JSON, HTML in JSON, double escapes)",
    "gh\\\\u0070_Ab+c_D.eF01|ghp_Ab\\u0026#43;c_D.eF01|ghp_Ab+c&amp;lowbar;D.eF01|ghp%5Cu005FAb+c_D.eF01",
    "[R]|[R]|[R]|[R]",
    4,
  ),
  vv(
    "views: what comes before a value cannot read its first characters into a token",
    // Python's quote of "100%" + value; .NET JSON and Go html/template of "&#x" + value; .NET
    // JSON of "C:\\" + value: nesting reads on into the value; the flat view does not.
    "100%25ab9Z%2Bq/Wx7mK|\\u0026#xab9Z\\u002Bq/Wx7mK|&amp;#xab9Z&#43;q/Wx7mK|C:\\\\nQ3\\u002BLp0/Zx8",
    "100%25[R]|\\u0026#x[R]|&amp;#x[R]|C:\\\\[N]",
    4,
    [
      ["ab9Z+q/Wx7mK", "[R]"],
      ["nQ3+Lp0/Zx8", "[N]"],
    ],
  ),
  vv(
    "views: two levels of nesting do not",
    "ghp_Ab\\u0026amp;#43;c_D.eF01",
    "ghp_Ab\\u0026amp;#43;c_D.eF01",
    0,
  ),
  vv(
    "views: percent-encoding of any subset, JavaScript \\x, references without a semicolon",
    "ghp_Ab%2Bc_D.eF01|gh%70_Ab+c%5fD.eF01|ghp_Ab\\x2bc_D.eF01|ghp_Ab&#43c_D.eF01|ghp_Ab&#x2Bc",
    "[R]|[R]|[R]|[R]|ghp_Ab&#x2Bc",
    4,
  ),
  vv(
    "views: indented base64 (YAML), the indentation dropped with the line break",
    "key: |\n  Z2hwX0Fi\n  K2NfRC5l\n  RjAx\n",
    "key: |\n  [B]\n",
    1,
    [["Z2hwX0FiK2NfRC5lRjAx", "[B]"]],
  ),
  vv(
    "views: a pattern holding an escape matches as written and as decoded",
    "k&amp;ey-0001 k&ey-0001 k&amp;amp;ey-0001",
    "[K] [K] [K]",
    3,
    [["k&amp;ey-0001", "[K]"]],
  ),
  vv(
    "views: a backslash or ampersand before a value that is no escape",
    "\\ughp_Ab+c_D.eF01 &ghp_Ab+c_D.eF01",
    "\\u[R] &[R]",
    2,
  ),
  vv(
    "views: an escape reaching into a value does not hide it (matched as written)",
    "\\uabcd-efgh-0001",
    "\\u[A]",
    1,
    [["abcd-efgh-0001", "[A]"]],
  ),
  vv(
    "views: a match ending inside a two-character token takes the whole token",
    "jBBBBBB&fjlig;BBBB",
    "[R]BBBB",
    1,
    [["jBBBBBBf", "[R]"]],
  ),
  vv(
    "views: a match starting inside a two-character token starts after it",
    "xx&fjlig;BBBBBBB yy",
    "xx[R] yy",
    1,
    [["jBBBBBBB", "[R]"]],
  ),
  vv(
    "views: non-ASCII from references and escapes",
    "pass-&eacute;t&#xE9;-\\u00e9-word",
    "[P]",
    1,
    [["pass-été-é-word", "[P]"]],
  ),
];
