/*
 * The Hyperscan baseline of the matcher benchmarks: scans a haystack for a literal pattern set
 * with Intel Hyperscan (Debian's libhyperscan-dev, 5.4), whole (block mode, hs_scan) and
 * streamed (stream mode, hs_open_stream / hs_scan_stream / hs_close_stream) in the chunk sizes
 * given, so the TypeScript benches can set the engine against it in the same run. Hyperscan only
 * reports matches (a callback counts them); it writes no output.
 *
 *   hyperscan-scan PATTERNS_FILE HAYSTACK_FILE MIN_MS CHUNK...
 *
 * PATTERNS_FILE: per pattern a u32 little-endian length and the bytes. Each measurement repeats
 * until MIN_MS milliseconds and 5 samples have passed and reports the median. Prints one line
 * per measurement: `whole MBPS MATCHES` or `stream CHUNK MBPS MATCHES`. Bench only: it never
 * prints a pattern or a haystack byte.
 */
#include <hs/hs.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_SAMPLES 64

static void die(const char *what) {
  fprintf(stderr, "hyperscan-scan: %s\n", what);
  exit(1);
}

static unsigned char *read_file(const char *path, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) die("cannot open an input file");
  fseek(f, 0, SEEK_END);
  long n = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *buf = malloc(n > 0 ? (size_t)n : 1);
  if (!buf || fread(buf, 1, (size_t)n, f) != (size_t)n) die("cannot read an input file");
  fclose(f);
  *len = (size_t)n;
  return buf;
}

static double now_ms(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static int count_match(unsigned id, unsigned long long from, unsigned long long to,
                       unsigned flags, void *ctx) {
  (void)id, (void)from, (void)to, (void)flags;
  ++*(unsigned long long *)ctx;
  return 0;
}

static int by_value(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

struct run {
  hs_database_t *db;
  hs_scratch_t *scratch;
  const unsigned char *hay;
  size_t len;
  size_t chunk; /* 0: block mode, the whole buffer in one call */
};

static unsigned long long scan_once(const struct run *r) {
  unsigned long long matches = 0;
  if (r->chunk == 0) {
    if (hs_scan(r->db, (const char *)r->hay, (unsigned)r->len, 0, r->scratch, count_match,
                &matches) != HS_SUCCESS)
      die("hs_scan failed");
    return matches;
  }
  hs_stream_t *s;
  if (hs_open_stream(r->db, 0, &s) != HS_SUCCESS) die("hs_open_stream failed");
  for (size_t at = 0; at < r->len; at += r->chunk) {
    size_t n = r->len - at < r->chunk ? r->len - at : r->chunk;
    if (hs_scan_stream(s, (const char *)r->hay + at, (unsigned)n, 0, r->scratch, count_match,
                       &matches) != HS_SUCCESS)
      die("hs_scan_stream failed");
  }
  if (hs_close_stream(s, r->scratch, count_match, &matches) != HS_SUCCESS)
    die("hs_close_stream failed");
  return matches;
}

/* Median MB/s of repeated scans (one warm-up first). */
static double measure(const struct run *r, double min_ms, unsigned long long *matches) {
  double samples[MAX_SAMPLES];
  int n = 0;
  *matches = scan_once(r);
  double start = now_ms();
  while (n < MAX_SAMPLES && (n < 5 || now_ms() - start < min_ms)) {
    double t0 = now_ms();
    scan_once(r);
    samples[n++] = now_ms() - t0;
  }
  qsort(samples, n, sizeof samples[0], by_value);
  return r->len / 1e6 / (samples[n / 2] / 1e3);
}

static hs_database_t *compile(const unsigned char *pats, size_t plen, unsigned mode) {
  unsigned count = 0;
  for (size_t at = 0; at + 4 <= plen; count++) {
    uint32_t l;
    memcpy(&l, pats + at, 4);
    at += 4 + l;
  }
  const char **exprs = malloc(count * sizeof *exprs);
  size_t *lens = malloc(count * sizeof *lens);
  unsigned *ids = malloc(count * sizeof *ids);
  unsigned *flags = calloc(count, sizeof *flags);
  size_t at = 0;
  for (unsigned i = 0; i < count; i++) {
    uint32_t l;
    memcpy(&l, pats + at, 4);
    exprs[i] = (const char *)pats + at + 4;
    lens[i] = l;
    ids[i] = i;
    at += 4 + l;
  }
  hs_database_t *db;
  hs_compile_error_t *err;
  if (hs_compile_lit_multi(exprs, flags, ids, lens, count, mode, NULL, &db, &err) !=
      HS_SUCCESS) {
    /* The compiler's message may quote a pattern: not printed. */
    hs_free_compile_error(err);
    die("hs_compile_lit_multi failed");
  }
  free(exprs), free(lens), free(ids), free(flags);
  return db;
}

int main(int argc, char **argv) {
  if (argc < 4) die("usage: hyperscan-scan PATTERNS_FILE HAYSTACK_FILE MIN_MS CHUNK...");
  size_t plen, hlen;
  unsigned char *pats = read_file(argv[1], &plen);
  unsigned char *hay = read_file(argv[2], &hlen);
  double min_ms = atof(argv[3]);
  hs_database_t *block = compile(pats, plen, HS_MODE_BLOCK);
  hs_database_t *stream = compile(pats, plen, HS_MODE_STREAM);
  memset(pats, 0, plen);
  hs_scratch_t *scratch = NULL;
  if (hs_alloc_scratch(block, &scratch) != HS_SUCCESS ||
      hs_alloc_scratch(stream, &scratch) != HS_SUCCESS)
    die("hs_alloc_scratch failed");
  unsigned long long matches;
  struct run r = {block, scratch, hay, hlen, 0};
  double mbps = measure(&r, min_ms, &matches);
  printf("whole %.1f %llu\n", mbps, matches);
  for (int i = 4; i < argc; i++) {
    struct run s = {stream, scratch, hay, hlen, (size_t)atol(argv[i])};
    if (s.chunk == 0) die("a chunk size must be positive");
    mbps = measure(&s, min_ms, &matches);
    printf("stream %zu %.1f %llu\n", s.chunk, mbps, matches);
  }
  fflush(stdout);
  hs_free_scratch(scratch);
  hs_free_database(block);
  hs_free_database(stream);
  free(pats);
  free(hay);
  return 0;
}
