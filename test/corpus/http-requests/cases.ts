// The raw-request corpus: every case is one byte string the agent might send inside a
// tunnel, whether the strict parser (src/http/request-parser.ts) must accept or reject it,
// and for rejects the error code and status. Strings are latin1: one char per byte, so "\x00"
// and "\xff" are the exact bytes. Sources named in `note`: llhttp's test suite (llhttp),
// PortSwigger's request-smuggling research (portswigger), HTTP Garden's published findings
// (garden), RFC 9110/9112 sections (rfc9112 §x), h1spec-style conformance checks (h1spec).
// This file must never hold a real credential; it is data only.

export interface CorpusCase {
  readonly name: string;
  readonly raw: string;
  readonly expect: "accept" | "reject";
  readonly note: string;
  /** reject: the error code the parser reports. */
  readonly code?: string;
  /** reject: the status the proxy answers (400 unless stated). */
  readonly status?: number;
  /** accept: how many complete requests the bytes hold (default 1). */
  readonly messages?: number;
}

const H = "Host: api.example.com\r\n";
const GET = `GET / HTTP/1.1\r\n${H}`;
const POST = `POST /upload HTTP/1.1\r\n${H}`;
const CHUNKED = `${POST}Transfer-Encoding: chunked\r\n\r\n`;

function reject(name: string, raw: string, code: string, note: string, status = 400): CorpusCase {
  return { name, raw, expect: "reject", code, status, note };
}
function accept(name: string, raw: string, note: string, messages = 1): CorpusCase {
  return { name, raw, expect: "accept", note, messages };
}

export const HTTP_REQUEST_CASES: readonly CorpusCase[] = [
  // ---- accepted -------------------------------------------------------------------------
  accept("simple-get", `${GET}\r\n`, "baseline, rfc9112 §3"),
  accept(
    "get-query",
    `GET /v1/models?limit=10&x=%2F HTTP/1.1\r\n${H}\r\n`,
    "query with a valid percent-escape",
  ),
  accept("post-content-length", `${POST}Content-Length: 5\r\n\r\nhello`, "rfc9112 §6.2"),
  accept("post-zero-length", `${POST}Content-Length: 0\r\n\r\n`, "empty body by length"),
  accept(
    "content-length-leading-zeros",
    `${POST}Content-Length: 005\r\n\r\nhello`,
    "1*DIGIT allows leading zeros (rfc9112 §6.2)",
  ),
  accept(
    "content-length-ows",
    `${POST}Content-Length:  5 \r\n\r\nhello`,
    "SP as OWS around a field value (rfc9112 §5)",
  ),
  accept("chunked-basic", `${CHUNKED}5\r\nhello\r\n0\r\n\r\n`, "rfc9112 §7.1"),
  accept(
    "chunked-multi",
    `${CHUNKED}3\r\nabc\r\nA\r\n0123456789\r\n0\r\n\r\n`,
    "hex sizes, upper case",
  ),
  accept(
    "chunked-leading-zero-size",
    `${CHUNKED}0005\r\nhello\r\n000\r\n\r\n`,
    '1*HEXDIG allows leading zeros; last-chunk 1*("0")',
  ),
  accept(
    "chunked-extensions",
    `${CHUNKED}5;name=value;flag;q="a \\"b\\""\r\nhello\r\n0;end\r\n\r\n`,
    "token and quoted-string extensions (rfc9112 §7.1.1), llhttp",
  ),
  accept(
    "chunked-extension-bws",
    `${CHUNKED}5 ; a = b\r\nhello\r\n0\r\n\r\n`,
    "BWS around ; and = (rfc9112 §7.1.1)",
  ),
  accept(
    "chunked-trailers",
    `${CHUNKED}5\r\nhello\r\n0\r\nX-Checksum: abc\r\nX-Other: 1\r\n\r\n`,
    "trailer section (rfc9112 §7.1.2)",
  ),
  accept(
    "chunked-uppercase-coding",
    `${POST}Transfer-Encoding: CHUNKED\r\n\r\n0\r\n\r\n`,
    "coding names are case-insensitive (rfc9112 §7)",
  ),
  accept("http10-no-host", "GET / HTTP/1.0\r\n\r\n", "Host is only required on 1.1 (rfc9112 §3.2)"),
  accept(
    "http10-keep-alive",
    `GET / HTTP/1.0\r\n${H}Connection: keep-alive\r\n\r\nGET /2 HTTP/1.0\r\n${H}\r\n`,
    "1.0 persistence opt-in (rfc9112 §9.3)",
    2,
  ),
  accept("options-asterisk", `OPTIONS * HTTP/1.1\r\n${H}\r\n`, "asterisk-form (rfc9112 §3.2.4)"),
  accept(
    "connect-authority",
    "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\n\r\n",
    "authority-form (rfc9112 §3.2.3)",
  ),
  accept(
    "connect-ipv6",
    "CONNECT [2001:db8::1]:443 HTTP/1.1\r\nHost: [2001:db8::1]:443\r\n\r\n",
    "IP-literal authority",
  ),
  accept(
    "absolute-form-http",
    `GET http://api.example.com/v1?a=b HTTP/1.1\r\n${H}\r\n`,
    "absolute-form (rfc9112 §3.2.2)",
  ),
  accept(
    "absolute-form-port",
    "GET HTTP://API.example.com:8080 HTTP/1.1\r\nHost: API.example.com:8080\r\n\r\n",
    "scheme case-insensitive, empty path",
  ),
  accept(
    "pipelined-three",
    `${GET}\r\n${GET}\r\n${POST}Content-Length: 2\r\n\r\nok`,
    "pipelining (rfc9112 §9.3.2)",
    3,
  ),
  accept(
    "pipelined-after-chunked",
    `${CHUNKED}0\r\n\r\n${GET}\r\n`,
    "next request right after last-chunk",
    2,
  ),
  accept(
    "leading-crlf",
    `\r\n\r\n${GET}\r\n`,
    "empty lines before request-line are ignored (rfc9112 §2.2)",
  ),
  accept(
    "expect-100",
    `${POST}Content-Length: 2\r\nExpect: 100-continue\r\n\r\nok`,
    "rfc9110 §10.1.1",
  ),
  accept(
    "upgrade-websocket",
    `${GET}Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n\r\n`,
    "upgrade reported; proxy decides",
  ),
  accept(
    "obs-text-value",
    `${GET}X-Name: caf\xe9 \x80\xff\r\n\r\n`,
    "obs-text allowed in values (rfc9110 §5.5)",
  ),
  accept("tab-inside-value", `${GET}X-List: a\tb\r\n\r\n`, "HTAB inside a non-framing value"),
  accept("empty-value", `${GET}X-Empty:\r\n\r\n`, "empty field value"),
  accept("unusual-method-token", `PROPFIND /dav HTTP/1.1\r\n${H}\r\n`, "any token is a method"),
  accept("connection-close", `${GET}Connection: close\r\n\r\n`, "last request on the connection"),

  // ---- request line ---------------------------------------------------------------------
  reject(
    "version-lowercase",
    `GET / http/1.1\r\n${H}\r\n`,
    "bad-version",
    "HTTP-name is case-sensitive (rfc9112 §2.3), llhttp",
  ),
  reject("version-12", `GET / HTTP/1.2\r\n${H}\r\n`, "unsupported-version", "rfc9110 §15.6.6", 505),
  reject(
    "version-20",
    `GET / HTTP/2.0\r\n${H}\r\n`,
    "unsupported-version",
    "h2 over h1 framing",
    505,
  ),
  reject(
    "version-09",
    `GET / HTTP/0.9\r\n${H}\r\n`,
    "unsupported-version",
    "HTTP/0.9 with a version",
    505,
  ),
  reject(
    "version-two-digit",
    `GET / HTTP/1.10\r\n${H}\r\n`,
    "bad-version",
    "DIGIT.DIGIT only (garden)",
  ),
  reject("http09-simple-request", "GET /\r\n\r\n", "bad-request-line", "HTTP/0.9 simple request"),
  reject(
    "double-space-after-method",
    `GET  / HTTP/1.1\r\n${H}\r\n`,
    "bad-request-line",
    "single SP only (rfc9112 §3), garden",
  ),
  reject(
    "tab-separator",
    `GET\t/ HTTP/1.1\r\n${H}\r\n`,
    "bad-request-line",
    "HTAB is not SP in the request line",
  ),
  reject(
    "trailing-space-version",
    `GET / HTTP/1.1 \r\n${H}\r\n`,
    "bad-request-line",
    "garden: trailing whitespace",
  ),
  reject(
    "leading-space-method",
    ` GET / HTTP/1.1\r\n${H}\r\n`,
    "bad-request-line",
    "whitespace before the method",
  ),
  reject(
    "method-bad-char",
    `G@T / HTTP/1.1\r\n${H}\r\n`,
    "bad-method",
    "method = token (rfc9110 §9.1)",
  ),
  reject("method-nul", `GE\x00T / HTTP/1.1\r\n${H}\r\n`, "bad-method", "NUL in method, llhttp"),
  reject(
    "nul-before-request",
    `\x00GET / HTTP/1.1\r\n${H}\r\n`,
    "bad-method",
    "garbage before the request line",
  ),
  reject(
    "space-in-target",
    `GET /a b HTTP/1.1\r\n${H}\r\n`,
    "bad-request-line",
    "unencoded SP in the target",
  ),
  reject(
    "fragment-in-target",
    `GET /a#frag HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "fragments are never sent (rfc9112 §3.2)",
  ),
  reject(
    "backslash-in-target",
    `GET /a\\..\\admin HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "path confusion on servers that treat \\ as /",
  ),
  reject(
    "angle-in-target",
    `GET /<script> HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "not a URI character (RFC 3986)",
  ),
  reject("del-in-target", `GET /a\x7f HTTP/1.1\r\n${H}\r\n`, "bad-target", "DEL in target"),
  reject(
    "high-byte-in-target",
    `GET /caf\xe9 HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "raw non-ASCII in target, llhttp",
  ),
  reject(
    "ctl-in-target",
    `GET /a\x01b HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "control byte in target",
  ),
  reject(
    "bad-percent-short",
    `GET /a%2 HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "truncated percent-escape",
  ),
  reject(
    "bad-percent-nonhex",
    `GET /a%zz HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "non-hex percent-escape",
  ),
  reject(
    "asterisk-with-get",
    `GET * HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "asterisk-form only for OPTIONS (rfc9112 §3.2.4)",
  ),
  reject(
    "connect-origin-form",
    `CONNECT / HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "CONNECT needs authority-form (rfc9112 §3.2.3)",
  ),
  reject(
    "connect-no-port",
    "CONNECT api.example.com HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    "bad-target",
    "authority-form requires a port",
  ),
  reject(
    "connect-empty-port",
    "CONNECT api.example.com: HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    "bad-target",
    "empty port",
  ),
  reject(
    "connect-port-zero",
    "CONNECT api.example.com:0 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    "bad-target",
    "port 0",
  ),
  reject(
    "connect-port-overflow",
    "CONNECT api.example.com:65536 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    "bad-target",
    "port out of range",
  ),
  reject(
    "connect-userinfo",
    "CONNECT user@api.example.com:443 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    "bad-target",
    "userinfo in authority (rfc9110 §4.2.4)",
  ),
  reject(
    "connect-absolute",
    "CONNECT https://api.example.com:443 HTTP/1.1\r\nHost: api.example.com\r\n\r\n",
    "bad-target",
    "CONNECT with a URI",
  ),
  reject(
    "connect-with-body",
    "CONNECT api.example.com:443 HTTP/1.1\r\nHost: api.example.com:443\r\nContent-Length: 5\r\n\r\nhello",
    "connect-with-body",
    "CONNECT content has no semantics (rfc9110 §9.3.6); smuggles bytes into the tunnel",
  ),
  reject(
    "absolute-userinfo",
    `GET http://user:pw@api.example.com/ HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "userinfo (rfc9110 §4.2.4); host confusion",
  ),
  reject(
    "absolute-at-confusion",
    `GET http://api.example.com:80@evil.example/ HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "portswigger: URL authority confusion",
  ),
  reject(
    "absolute-ftp",
    `GET ftp://api.example.com/ HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "only http/https",
  ),
  reject(
    "absolute-empty-authority",
    `GET http:///path HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "empty host",
  ),
  reject(
    "absolute-query-no-path",
    `GET http://api.example.com?x HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "strict: path required before query",
  ),
  reject(
    "origin-double-slash",
    `GET //evil.example/x HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "network-path reference in origin-form",
  ),
  reject(
    "target-no-slash",
    `GET api.example.com/x HTTP/1.1\r\n${H}\r\n`,
    "bad-target",
    "neither origin- nor absolute-form",
  ),
  reject(
    "request-line-too-long",
    `GET /${"a".repeat(9000)} HTTP/1.1\r\n${H}\r\n`,
    "request-line-too-long",
    "cap (rfc9112 §3)",
    414,
  ),
  reject(
    "bare-lf-request-line",
    `GET / HTTP/1.1\n${H}\r\n`,
    "bare-lf",
    "strict CRLF (rfc9112 §2.2), garden",
  ),
  reject("bare-cr-request-line", `GET / HTTP/1.1\r${H}\r\n`, "bare-cr", "bare CR (rfc9112 §2.2)"),
  reject("bare-lf-leading", `\n${GET}\r\n`, "bare-lf", "bare LF as an empty line"),

  // ---- header fields --------------------------------------------------------------------
  reject("obs-fold", `${GET}X-A: one\r\n two\r\n\r\n`, "obs-fold", "rfc9112 §5.2, portswigger"),
  reject("obs-fold-tab", `${GET}X-A: one\r\n\ttwo\r\n\r\n`, "obs-fold", "HTAB continuation"),
  reject(
    "obs-fold-first-line",
    `GET / HTTP/1.1\r\n ${H}\r\n`,
    "obs-fold",
    "whitespace before the first field (rfc9112 §2.2)",
  ),
  reject(
    "obs-fold-te",
    `${POST}Transfer-Encoding:\r\n chunked\r\n\r\n0\r\n\r\n`,
    "obs-fold",
    "portswigger TE.TE: folded TE",
  ),
  reject(
    "space-before-colon",
    `GET / HTTP/1.1\r\nHost : api.example.com\r\n\r\n`,
    "space-before-colon",
    "rfc9112 §5.1, llhttp",
  ),
  reject("tab-before-colon", `${GET}X-A\t: 1\r\n\r\n`, "space-before-colon", "tab before colon"),
  reject(
    "te-space-before-colon",
    `${POST}Transfer-Encoding : chunked\r\n\r\n0\r\n\r\n`,
    "space-before-colon",
    "portswigger TE.TE",
  ),
  reject("name-with-space", `${GET}X A: 1\r\n\r\n`, "bad-header-name", "SP inside a name"),
  reject("name-with-paren", `${GET}X(A): 1\r\n\r\n`, "bad-header-name", "non-tchar in name"),
  reject("name-with-slash", `${GET}X/A: 1\r\n\r\n`, "bad-header-name", "non-tchar in name"),
  reject("name-empty", `${GET}: value\r\n\r\n`, "bad-header-name", "empty field name"),
  reject(
    "name-no-colon",
    `${GET}NoColonHere\r\n\r\n`,
    "bad-header-name",
    "field line without colon",
  ),
  reject("name-nul", `${GET}X-\x00A: 1\r\n\r\n`, "bad-header-name", "NUL in name, llhttp"),
  reject("name-high-byte", `${GET}X-\xc3\xa9: 1\r\n\r\n`, "bad-header-name", "non-ASCII in name"),
  reject(
    "value-nul",
    `${GET}X-A: a\x00b\r\n\r\n`,
    "bad-header-value",
    "NUL in value (rfc9110 §5.5), llhttp",
  ),
  reject("value-soh", `${GET}X-A: a\x01b\r\n\r\n`, "bad-header-value", "control byte in value"),
  reject(
    "value-vt-te",
    `${POST}Transfer-Encoding:\x0bchunked\r\n\r\n0\r\n\r\n`,
    "bad-header-value",
    "portswigger TE.TE: vertical tab",
  ),
  reject("value-ff", `${GET}X-A: \x0c1\r\n\r\n`, "bad-header-value", "form feed in value"),
  reject("value-del", `${GET}X-A: a\x7f\r\n\r\n`, "bad-header-value", "DEL in value"),
  reject("value-bare-cr", `${GET}X-A: a\rb\r\n\r\n`, "bare-cr", "bare CR inside a value (garden)"),
  reject("header-bare-lf", `${GET}X-A: 1\n\r\n`, "bare-lf", "LF-only line end in headers"),
  reject("end-of-head-bare-lf", `${GET}\n`, "bare-lf", "LF-only empty line"),
  reject("end-of-head-bare-cr", `${GET}\r\r\n`, "bare-cr", "CR CR LF"),
  reject("missing-host", "GET / HTTP/1.1\r\n\r\n", "missing-host", "rfc9112 §3.2"),
  reject(
    "missing-host-absolute",
    "GET http://api.example.com/ HTTP/1.1\r\n\r\n",
    "missing-host",
    "Host required even with absolute-form",
  ),
  reject(
    "duplicate-host",
    `${GET}Host: evil.example\r\n\r\n`,
    "duplicate-host",
    "rfc9112 §3.2, portswigger host-header attacks",
  ),
  reject(
    "duplicate-host-http10",
    `GET / HTTP/1.0\r\n${H}${H}\r\n`,
    "duplicate-host",
    "also on 1.0",
  ),
  reject("host-empty", "GET / HTTP/1.1\r\nHost:\r\n\r\n", "bad-host", "empty Host for an http URI"),
  reject(
    "host-userinfo",
    "GET / HTTP/1.1\r\nHost: user@api.example.com\r\n\r\n",
    "bad-host",
    "userinfo in Host",
  ),
  reject(
    "host-path",
    "GET / HTTP/1.1\r\nHost: api.example.com/x\r\n\r\n",
    "bad-host",
    "path in Host",
  ),
  reject(
    "host-space",
    "GET / HTTP/1.1\r\nHost: api .example.com\r\n\r\n",
    "bad-host",
    "SP inside Host",
  ),
  reject(
    "host-tab",
    "GET / HTTP/1.1\r\nHost:\tapi.example.com\r\n\r\n",
    "bad-host",
    "tab around Host (strict)",
  ),
  reject(
    "host-bad-port",
    "GET / HTTP/1.1\r\nHost: api.example.com:99999\r\n\r\n",
    "bad-host",
    "port out of range",
  ),
  reject(
    "host-comma",
    "GET / HTTP/1.1\r\nHost: api.example.com, evil.example\r\n\r\n",
    "bad-host",
    "list in Host",
  ),
  reject(
    "host-unterminated-ipv6",
    "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n",
    "bad-host",
    "unterminated IP-literal",
  ),
  reject(
    "host-percent",
    "GET / HTTP/1.1\r\nHost: api%2eexample.com\r\n\r\n",
    "bad-host",
    "percent-encoded host",
  ),
  reject(
    "too-many-headers",
    `${GET}${"X-A: 1\r\n".repeat(100)}\r\n`,
    "too-many-headers",
    "header count cap (default 100)",
    431,
  ),
  reject(
    "header-section-too-large",
    `${GET}X-Big: ${"a".repeat(40_000)}\r\n\r\n`,
    "headers-too-large",
    "header bytes cap (default 32 KiB)",
    431,
  ),
  reject(
    "connection-bad-token",
    `${GET}Connection: close;x\r\n\r\n`,
    "bad-connection",
    "Connection = #token",
  ),
  reject(
    "upgrade-missing",
    `${GET}Connection: upgrade\r\n\r\n`,
    "bad-upgrade",
    "Connection: upgrade without Upgrade",
  ),
  reject(
    "upgrade-bad-token",
    `${GET}Connection: upgrade\r\nUpgrade: web socket\r\n\r\n`,
    "bad-upgrade",
    "protocol must be token[/token]",
  ),

  // ---- framing: CL / TE -----------------------------------------------------------------
  reject(
    "cl-te",
    `${POST}Content-Length: 6\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nX`,
    "content-length-and-transfer-encoding",
    "portswigger CL.TE (rfc9112 §6.1)",
  ),
  reject(
    "te-cl",
    `${POST}Transfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n5c\r\nGPOST / HTTP/1.1\r\n\r\n0\r\n\r\n`,
    "content-length-and-transfer-encoding",
    "portswigger TE.CL",
  ),
  reject(
    "cl-te-zero",
    `${POST}Content-Length: 0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    "content-length-and-transfer-encoding",
    "CL 0 with TE",
  ),
  reject(
    "te-chunked-identity",
    `${POST}Transfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "portswigger TE.TE; chunked must be final (rfc9112 §6.3)",
  ),
  reject(
    "te-identity",
    `${POST}Transfer-Encoding: identity\r\n\r\n`,
    "bad-transfer-encoding",
    "identity is not a transfer coding (rfc9112)",
  ),
  reject(
    "te-xchunked",
    `${POST}Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "portswigger TE.TE",
  ),
  reject(
    "te-chunked-tab",
    `${POST}Transfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "portswigger TE.TE: trailing tab (strict)",
  ),
  reject(
    "te-tab-chunked",
    `${POST}Transfer-Encoding:\tchunked\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "portswigger TE.TE: leading tab (strict)",
  ),
  reject(
    "te-duplicate",
    `${POST}Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "chunked applied twice (rfc9112 §7)",
  ),
  reject(
    "te-duplicate-differing",
    `${POST}Transfer-Encoding: chunked\r\nTransfer-Encoding: x\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "portswigger TE.TE: second TE field",
  ),
  reject(
    "te-chunked-chunked",
    `${POST}Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "chunked twice in one list",
  ),
  reject(
    "te-trailing-comma",
    `${POST}Transfer-Encoding: chunked,\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "empty list element (garden)",
  ),
  reject(
    "te-leading-comma",
    `${POST}Transfer-Encoding: , chunked\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "empty list element (garden)",
  ),
  reject(
    "te-quoted",
    `${POST}Transfer-Encoding: "chunked"\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "quoted coding",
  ),
  reject(
    "te-params",
    `${POST}Transfer-Encoding: chunked;q=1\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "parameters on chunked",
  ),
  reject("te-empty", `${POST}Transfer-Encoding: \r\n\r\n`, "bad-transfer-encoding", "empty TE"),
  reject(
    "te-unknown-then-chunked",
    `${POST}Transfer-Encoding: foo, chunked\r\n\r\n0\r\n\r\n`,
    "bad-transfer-encoding",
    "unknown coding",
  ),
  reject(
    "te-gzip-chunked",
    `${POST}Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n`,
    "unsupported-transfer-encoding",
    "understood but not implemented (rfc9112 §6.1)",
    501,
  ),
  reject(
    "te-http10",
    `POST / HTTP/1.0\r\n${H}Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n`,
    "transfer-encoding-on-http10",
    "rfc9112 §6.1: faulty framing",
  ),
  reject(
    "cl-duplicate-same",
    `${POST}Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello`,
    "duplicate-content-length",
    "strict: even identical (rfc9112 §6.3 allows; we refuse)",
  ),
  reject(
    "cl-duplicate-differing",
    `${POST}Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!`,
    "duplicate-content-length",
    "portswigger CL.CL",
  ),
  reject(
    "cl-duplicate-case",
    `${POST}Content-Length: 5\r\ncontent-length: 5\r\n\r\nhello`,
    "duplicate-content-length",
    "names are case-insensitive",
  ),
  reject(
    "cl-list",
    `${POST}Content-Length: 5, 5\r\n\r\nhello`,
    "bad-content-length",
    "CL list (rfc9112 §6.3 item 5)",
  ),
  reject(
    "cl-plus",
    `${POST}Content-Length: +5\r\n\r\nhello`,
    "bad-content-length",
    "sign (garden)",
  ),
  reject("cl-minus", `${POST}Content-Length: -5\r\n\r\nhello`, "bad-content-length", "negative"),
  reject("cl-hex", `${POST}Content-Length: 0x5\r\n\r\nhello`, "bad-content-length", "hex length"),
  reject(
    "cl-inner-space",
    `${POST}Content-Length: 1 2\r\n\r\nhello`,
    "bad-content-length",
    "space inside digits",
  ),
  reject("cl-tab", `${POST}Content-Length: 5\t\r\n\r\nhello`, "bad-content-length", "tab (strict)"),
  reject("cl-empty", `${POST}Content-Length:\r\n\r\n`, "bad-content-length", "empty CL"),
  reject(
    "cl-exponent",
    `${POST}Content-Length: 1e1\r\n\r\nhello`,
    "bad-content-length",
    "float notation",
  ),
  reject(
    "cl-trailing-dot",
    `${POST}Content-Length: 5.\r\n\r\nhello`,
    "bad-content-length",
    "trailing dot",
  ),
  reject(
    "cl-overlong",
    `${POST}Content-Length: 1234567890123456\r\n\r\n`,
    "bad-content-length",
    "over 15 digits (overflow)",
  ),
  reject(
    "cl-huge-overflow",
    `${POST}Content-Length: 18446744073709551621\r\n\r\nhello`,
    "bad-content-length",
    "2^64+5 wraps to 5 in C parsers (llhttp)",
  ),
  reject(
    "cl-unicode-digit",
    `${POST}Content-Length: \xd9\xa5\r\n\r\nhello`,
    "bad-content-length",
    "non-ASCII digit bytes",
  ),

  // ---- chunked body -----------------------------------------------------------------------
  reject(
    "chunk-size-hex-prefix",
    `${CHUNKED}0x5\r\nhello\r\n0\r\n\r\n`,
    "bad-chunk-size",
    "0x prefix (garden)",
  ),
  reject("chunk-size-plus", `${CHUNKED}+5\r\nhello\r\n0\r\n\r\n`, "bad-chunk-size", "sign"),
  reject("chunk-size-minus", `${CHUNKED}-5\r\nhello\r\n0\r\n\r\n`, "bad-chunk-size", "negative"),
  reject(
    "chunk-size-leading-space",
    `${CHUNKED} 5\r\nhello\r\n0\r\n\r\n`,
    "bad-chunk-size",
    "whitespace before size (garden)",
  ),
  reject(
    "chunk-size-trailing-space",
    `${CHUNKED}5 \r\nhello\r\n0\r\n\r\n`,
    "bad-chunk-extension",
    "whitespace after size without extension",
  ),
  reject(
    "chunk-size-empty",
    `${CHUNKED}\r\nhello\r\n0\r\n\r\n`,
    "bad-chunk-size",
    "empty size line",
  ),
  reject(
    "chunk-size-nonhex",
    `${CHUNKED}g\r\nhello\r\n0\r\n\r\n`,
    "bad-chunk-size",
    "non-hex size",
  ),
  reject(
    "chunk-size-overflow-digits",
    `${CHUNKED}00000000000000005\r\nhello\r\n0\r\n\r\n`,
    "chunk-size-overflow",
    "17 digits",
  ),
  reject(
    "chunk-size-overflow-value",
    `${CHUNKED}fffffffffffffff\r\nhello\r\n0\r\n\r\n`,
    "chunk-size-overflow",
    "beyond 2^53 (llhttp overflow tests)",
  ),
  reject(
    "chunk-size-2-64-wrap",
    `${CHUNKED}10000000000000005\r\nhello\r\n0\r\n\r\n`,
    "chunk-size-overflow",
    "2^64+5 wraps in C parsers",
  ),
  reject(
    "chunk-missing-crlf",
    `${CHUNKED}5\r\nhelloX\r\n0\r\n\r\n`,
    "missing-chunk-crlf",
    "data longer than size (garden)",
  ),
  reject(
    "chunk-data-short",
    `${CHUNKED}8\r\nhello\r\n0\r\n\r\n`,
    "bad-chunk-size",
    "size larger than data: CRLF and 0 eaten as data, then an empty size line",
  ),
  reject(
    "chunk-lf-after-data",
    `${CHUNKED}5\r\nhello\n0\r\n\r\n`,
    "missing-chunk-crlf",
    "LF only after data (garden)",
  ),
  reject(
    "chunk-bare-lf-size",
    `${CHUNKED}5\nhello\r\n0\r\n\r\n`,
    "bare-lf",
    "LF only after size, llhttp",
  ),
  reject("chunk-bare-cr-size", `${CHUNKED}5\rhello\r\n0\r\n\r\n`, "bare-cr", "CR only after size"),
  reject(
    "chunk-ext-huge",
    `${CHUNKED}5;a=${"b".repeat(5000)}\r\nhello\r\n0\r\n\r\n`,
    "chunk-extension-too-long",
    "CVE-2023-30589-style unbounded extensions (llhttp/node)",
  ),
  reject(
    "chunk-ext-empty-name",
    `${CHUNKED}5;\r\nhello\r\n0\r\n\r\n`,
    "bad-chunk-extension",
    "empty extension",
  ),
  reject(
    "chunk-ext-empty-value",
    `${CHUNKED}5;a=\r\nhello\r\n0\r\n\r\n`,
    "bad-chunk-extension",
    "empty extension value",
  ),
  reject(
    "chunk-ext-unterminated-quote",
    `${CHUNKED}5;a="x\r\nhello\r\n0\r\n\r\n`,
    "bad-chunk-extension",
    "unterminated quoted-string",
  ),
  reject(
    "chunk-ext-space-in-name",
    `${CHUNKED}5;a b\r\nhello\r\n0\r\n\r\n`,
    "bad-chunk-extension",
    "junk after extension name",
  ),
  reject(
    "chunk-ext-nul",
    `${CHUNKED}5;a=\x00\r\nhello\r\n0\r\n\r\n`,
    "bad-chunk-extension",
    "NUL in extension",
  ),
  reject(
    "chunk-ext-bare-lf-smuggle",
    `${CHUNKED}5;\nx\r\nhello\r\n0\r\n\r\n`,
    "bare-lf",
    "garden: LF inside chunk extension",
  ),
  reject(
    "trailer-obs-fold",
    `${CHUNKED}0\r\nX-T: 1\r\n 2\r\n\r\n`,
    "bad-trailer",
    "obs-fold in trailers",
  ),
  reject(
    "trailer-content-length",
    `${CHUNKED}0\r\nContent-Length: 5\r\n\r\n`,
    "forbidden-trailer",
    "framing field in trailers (rfc9110 §6.5.1)",
  ),
  reject(
    "trailer-transfer-encoding",
    `${CHUNKED}0\r\nTransfer-Encoding: chunked\r\n\r\n`,
    "forbidden-trailer",
    "framing field in trailers",
  ),
  reject(
    "trailer-host",
    `${CHUNKED}0\r\nHost: evil.example\r\n\r\n`,
    "forbidden-trailer",
    "routing field in trailers",
  ),
  reject(
    "trailer-authorization",
    `${CHUNKED}0\r\nAuthorization: Bearer x\r\n\r\n`,
    "forbidden-trailer",
    "credential in trailers bypasses header handling",
  ),
  reject(
    "trailer-bad-name",
    `${CHUNKED}0\r\nX T: 1\r\n\r\n`,
    "bad-trailer",
    "invalid trailer name",
  ),
  reject("trailer-nul", `${CHUNKED}0\r\nX-T: a\x00\r\n\r\n`, "bad-trailer", "NUL in trailer value"),
  reject("trailer-bare-lf", `${CHUNKED}0\r\nX-T: 1\n\r\n`, "bare-lf", "bare LF in trailers"),
  reject(
    "last-chunk-no-final-crlf",
    `${CHUNKED}5\r\nhello\r\n0\r\n`,
    "incomplete-request",
    "stream ends before the trailer section ends",
  ),
  reject(
    "body-truncated",
    `${POST}Content-Length: 10\r\n\r\nhello`,
    "incomplete-request",
    "EOF inside a length body",
  ),
  reject("head-truncated", `GET / HTTP/1.1\r\n${H}`, "incomplete-request", "EOF inside the head"),
];
