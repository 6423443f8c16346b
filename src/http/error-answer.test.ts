import { describe, expect, test } from "bun:test";
import { errorAnswer, errorAnswerBytes, proxyStatus, reasonPhrase } from "./error-answer.ts";
import { ProxyError, type ProxyErrorCode } from "./proxy-error.ts";

/** The RFC 9209 error types (IANA "HTTP Proxy-Status Parameters" registry, §2.3). */
const RFC9209_TYPES = new Set([
  "dns_timeout",
  "dns_error",
  "destination_not_found",
  "destination_unavailable",
  "destination_ip_prohibited",
  "destination_ip_unroutable",
  "connection_refused",
  "connection_terminated",
  "connection_timeout",
  "connection_read_timeout",
  "connection_write_timeout",
  "connection_limit_reached",
  "tls_protocol_error",
  "tls_certificate_error",
  "tls_alert_received",
  "http_request_error",
  "http_request_denied",
  "http_response_incomplete",
  "http_response_header_section_size",
  "http_response_header_size",
  "http_response_body_size",
  "http_response_trailer_section_size",
  "http_response_trailer_size",
  "http_response_transfer_coding",
  "http_response_content_coding",
  "http_response_timeout",
  "http_upgrade_failed",
  "http_protocol_error",
  "proxy_internal_response",
  "proxy_internal_error",
  "proxy_configuration_error",
  "proxy_loop_detected",
]);

const CODES: ProxyErrorCode[] = [
  "bad-request",
  "policy-denied",
  "address-denied",
  "dlp-blocked",
  "quarantined",
  "rate-limited",
  "connection-limit",
  "dns-failed",
  "connect-timeout",
  "upstream-tls",
  "decode-failed",
  "overloaded",
  "credential-unavailable",
  "internal",
];

describe("answers the proxy makes itself", () => {
  test.each(CODES)(
    "%s: a reason phrase, Proxy-Status with a registered error type, a short body",
    (code) => {
      const err = new ProxyError(code, "a reason");
      const a = errorAnswer(err);
      expect(a.reason).toBe(reasonPhrase(a.status));
      expect(a.reason).not.toBe("");
      const ps = a.headers.find(([n]) => n === "proxy-status")![1];
      const m = /^slapenir; error=([a-z_]+); details="([^"\\]*)"$/.exec(ps);
      expect(m).not.toBeNull();
      expect(RFC9209_TYPES.has(m![1]!)).toBe(true);
      expect(m![2]).toBe(`${code}: a reason`);
      expect(new TextDecoder().decode(a.body)).toBe("slapenir: a reason\n");
    },
  );

  test("details is a valid structured-field string whatever the reason holds", () => {
    const ps = proxyStatus(new ProxyError("bad-request", 'a "quoted" \\ reason\r\nwith ünïcode'));
    // Control characters and non-ASCII dropped, quotes and backslashes escaped.
    expect(ps).toBe(
      'slapenir; error=http_request_error; details="bad-request: a \\"quoted\\" \\\\ reasonwith ncode"',
    );
  });

  test("on the wire: status line with its phrase, the fields, Content-Length", () => {
    const text = new TextDecoder().decode(
      errorAnswerBytes(new ProxyError("policy-denied", "host not allowed")),
    );
    expect(text).toStartWith("HTTP/1.1 403 Forbidden\r\n");
    expect(text).toContain(
      '\r\nproxy-status: slapenir; error=http_request_denied; details="policy-denied: host not allowed"\r\n',
    );
    expect(text).toEndWith("\r\n\r\nslapenir: host not allowed\n");
  });
});
