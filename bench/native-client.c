/*
 * A native agent for the proxy benchmark: OpenSSL, blocking sockets, one new connection per
 * exchange. Where bench-client.ts (Bun) runs the inner TLS of a tunnel through JavaScript, this
 * client runs TLS inside TLS in native code (the inner connection's BIO is an SSL BIO over the
 * outer connection), as curl and other OpenSSL clients do. It sends the same 100 KB POST and
 * reads the whole answer, so the benchmark can say how much of the new-connection latency is
 * the proxy and how much the Bun client's own TLS in TLS. Its key exchange is OpenSSL's default
 * (X25519 on Debian 12's OpenSSL 3.0; the Bun client offers the hybrid X25519MLKEM768).
 *
 *   native-client MODE ORIGIN_PORT PROXY_PORT N BODY_FILE PATH ORIGIN_CA [PROXY_CA CERT KEY]
 *
 * MODE: direct | slapenir (mTLS to the proxy, CONNECT, TLS inside) | http-proxy (TCP,
 * CONNECT, TLS inside). Prints N per-exchange times in milliseconds, space-separated, on one
 * line; any failure goes to stderr with exit status 1. Bench only; never prints a body.
 */
#define _GNU_SOURCE /* strcasestr */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

enum mode { DIRECT, SLAPENIR, HTTP_PROXY };

static void die(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("native-client: ", stderr);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  ERR_print_errors_fp(stderr);
  exit(1);
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int dial(int port) {
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) die("socket: %s", strerror(errno));
  int one = 1;
  setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) die("connect %d: %s", port, strerror(errno));
  return fd;
}

static SSL_CTX *context(const char *ca, const char *cert, const char *key) {
  SSL_CTX *c = SSL_CTX_new(TLS_client_method());
  if (!c) die("SSL_CTX_new");
  SSL_CTX_set_min_proto_version(c, TLS1_2_VERSION);
  SSL_CTX_set_options(c, SSL_OP_NO_TICKET); /* full handshakes, as the bench's other rows */
  SSL_CTX_set_session_cache_mode(c, SSL_SESS_CACHE_OFF);
  SSL_CTX_set_verify(c, SSL_VERIFY_PEER, NULL);
  if (SSL_CTX_load_verify_locations(c, ca, NULL) != 1) die("cannot load CA file %s", ca);
  static const unsigned char alpn[] = "\x08http/1.1";
  SSL_CTX_set_alpn_protos(c, alpn, sizeof alpn - 1);
  if (cert && SSL_CTX_use_certificate_chain_file(c, cert) != 1) die("cannot load %s", cert);
  if (key && SSL_CTX_use_PrivateKey_file(c, key, SSL_FILETYPE_PEM) != 1) die("cannot load %s", key);
  return c;
}

/* A verified client connection for host "localhost" over `bio` (taken over by the SSL). */
static SSL *handshake(SSL_CTX *c, BIO *bio) {
  SSL *s = SSL_new(c);
  if (!s) die("SSL_new");
  SSL_set_bio(s, bio, bio);
  SSL_set_tlsext_host_name(s, "localhost");
  SSL_set1_host(s, "localhost");
  if (SSL_connect(s) != 1) die("TLS handshake failed");
  return s;
}

/* Reads the CONNECT answer's head from the carrier; nothing may follow it (our TLS is next). */
static void read_connect_answer(BIO *carrier) {
  char buf[4096];
  size_t have = 0;
  for (;;) {
    int n = BIO_read(carrier, buf + have, (int)(sizeof buf - have - 1));
    if (n <= 0) die("connection ended before the CONNECT answer");
    have += (size_t)n;
    buf[have] = 0;
    char *end = strstr(buf, "\r\n\r\n");
    if (end) {
      if (strncmp(buf, "HTTP/1.1 200", 12) != 0 && strncmp(buf, "HTTP/1.0 200", 12) != 0)
        die("CONNECT refused: %.40s", buf);
      if ((size_t)(end - buf) + 4 != have) die("bytes after the CONNECT answer");
      return;
    }
    if (have >= sizeof buf - 1) die("CONNECT answer too long");
  }
}

static void tunnel(BIO *carrier, int origin_port) {
  char req[256];
  int len = snprintf(req, sizeof req, "CONNECT localhost:%d HTTP/1.1\r\nHost: localhost:%d\r\n\r\n",
                     origin_port, origin_port);
  if (BIO_write(carrier, req, len) != len) die("CONNECT not sent");
  read_connect_answer(carrier);
}

/* A buffered reader over one TLS connection, for the answer's head and framing. */
struct reader {
  SSL *s;
  char buf[65536];
  size_t off, len;
};

static void fill(struct reader *r) {
  if (r->off == r->len) r->off = r->len = 0;
  if (r->len == sizeof r->buf) die("line too long");
  int n = SSL_read(r->s, r->buf + r->len, (int)(sizeof r->buf - r->len));
  if (n <= 0) die("answer ended early");
  r->len += (size_t)n;
}

/* The next CRLF-terminated line (NUL-terminated, without the CRLF), valid until the next call. */
static char *line(struct reader *r) {
  for (;;) {
    char *start = r->buf + r->off;
    char *end = memmem(start, r->len - r->off, "\r\n", 2);
    if (end) {
      *end = 0;
      r->off = (size_t)(end - r->buf) + 2;
      return start;
    }
    if (r->off > 0) { /* keep the partial line at the front */
      memmove(r->buf, start, r->len - r->off);
      r->len -= r->off;
      r->off = 0;
    }
    fill(r);
  }
}

static long skip(struct reader *r, long n) {
  long done = 0;
  while (done < n) {
    if (r->off == r->len) fill(r);
    size_t take = r->len - r->off;
    if ((long)take > n - done) take = (size_t)(n - done);
    r->off += take;
    done += (long)take;
  }
  return done;
}

/* Sends the request; reads the whole 200 answer (Content-Length or chunked); its body size. */
static long exchange(SSL *s, const char *head, size_t head_len, const char *body, size_t body_len) {
  size_t total = head_len + body_len;
  char *all = malloc(total);
  memcpy(all, head, head_len);
  memcpy(all + head_len, body, body_len);
  size_t off = 0;
  while (off < total) {
    int n = SSL_write(s, all + off, (int)(total - off));
    if (n <= 0) die("request not sent");
    off += (size_t)n;
  }
  free(all);
  static struct reader r;
  r.s = s;
  r.off = r.len = 0;
  char *status = line(&r);
  if (strncmp(status, "HTTP/1.1 200", 12) != 0) die("status: %.40s", status);
  long length = -1;
  int chunked = 0;
  for (char *h = line(&r); *h; h = line(&r)) {
    if (!strncasecmp(h, "content-length:", 15)) length = strtol(h + 15, NULL, 10);
    if (!strncasecmp(h, "transfer-encoding:", 18) && strcasestr(h + 18, "chunked")) chunked = 1;
  }
  if (!chunked) {
    if (length < 0) die("answer with neither Content-Length nor chunked framing");
    return skip(&r, length);
  }
  long got = 0;
  for (;;) {
    long size = strtol(line(&r), NULL, 16);
    if (size == 0) break;
    got += skip(&r, size);
    if (*line(&r)) die("bad chunk framing");
  }
  while (*line(&r)) { /* trailer fields, then the empty line */
  }
  return got;
}

int main(int argc, char **argv) {
  if (argc != 8 && argc != 11) die("usage: MODE ORIGIN_PORT PROXY_PORT N BODY_FILE PATH ORIGIN_CA [PROXY_CA CERT KEY]");
  enum mode m = !strcmp(argv[1], "direct") ? DIRECT : !strcmp(argv[1], "slapenir") ? SLAPENIR : HTTP_PROXY;
  if (m == HTTP_PROXY && strcmp(argv[1], "http-proxy")) die("unknown mode %s", argv[1]);
  if (m == SLAPENIR && argc != 11) die("slapenir needs PROXY_CA CERT KEY");
  int origin_port = atoi(argv[2]), proxy_port = atoi(argv[3]), n = atoi(argv[4]);
  FILE *f = fopen(argv[5], "rb");
  if (!f) die("cannot open %s", argv[5]);
  static char body[1 << 20];
  size_t body_len = fread(body, 1, sizeof body, f);
  fclose(f);
  char head[512];
  int head_len = snprintf(head, sizeof head,
                          "POST %s HTTP/1.1\r\nHost: localhost:%d\r\nContent-Length: %zu\r\n"
                          "Content-Type: application/json\r\n\r\n",
                          argv[6], origin_port, body_len);
  SSL_CTX *inner_ctx = context(argv[7], NULL, NULL);
  SSL_CTX *outer_ctx = m == SLAPENIR ? context(argv[8], argv[9], argv[10]) : NULL;

  double *t = calloc((size_t)n, sizeof *t);
  for (int i = 0; i < n; i++) {
    double t0 = now_ms();
    int fd = dial(m == DIRECT ? origin_port : proxy_port);
    BIO *sock = BIO_new_socket(fd, BIO_CLOSE);
    SSL *outer = NULL;
    BIO *carrier = sock;
    if (m == SLAPENIR) {
      outer = handshake(outer_ctx, sock);
      carrier = BIO_new(BIO_f_ssl());
      BIO_set_ssl(carrier, outer, BIO_NOCLOSE);
    }
    if (m != DIRECT) tunnel(carrier, origin_port);
    SSL *inner = handshake(inner_ctx, carrier);
    long got = exchange(inner, head, (size_t)head_len, body, body_len);
    t[i] = now_ms() - t0;
    if (got <= 0) die("empty answer");
    SSL_free(inner); /* frees the carrier BIO (and, for direct, the socket) */
    if (outer) SSL_free(outer); /* frees the socket BIO, which closes fd */
  }
  for (int i = 0; i < n; i++) printf(i ? " %.4f" : "%.4f", t[i]);
  putchar('\n');
  return 0;
}
