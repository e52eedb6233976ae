/*
 * libFuzzer target: redq__frame_parse and redq__frame_build (lib/frame.c).
 *
 * Two properties on every input:
 * 1. The input as a frame (in an exactly sized buffer, so ASan sees a read
 *    past len): it parses or not, err is NUL-terminated either way, and
 *    when it parses, building a frame from the parsed fields and parsing
 *    that gives the same fields and a byte-identical body (round trip).
 * 2. The input as field values: a frame built from them (in exactly
 *    redq__frame_size bytes) parses, gives those fields back as the
 *    contract in redq_private.h says (NULL, "" and negative values omitted,
 *    id cut to 64 bytes, attempts clamped), and the body byte for byte.
 * id, reason and queue go in and out of the API as C strings, so a %00
 * inside them ends them: they are compared as C strings, NULL as "".
 */
#include <string.h>

#include "fuzz_util.h"
#include "redq_private.h"

/* The largest ts/dts a frame carries (18 digits): lib/frame.c omits
 * larger ones, as it omits negative ones. */
#define MAX_TS 999999999999999999LL

typedef struct fields {
    char id[65];
    int attempts;
    long long ts_ms, dead_ts_ms;
    char *reason, *queue; /* decoded, malloc'd; NULL when absent */
    const char *body;
    size_t body_len;
} fields;

static char *decode(const char *s, size_t len)
{
    char *d;

    if (s == NULL)
        return NULL;
    d = malloc(len + 1);
    FUZZ_CHECK(d != NULL, "out of memory");
    FUZZ_CHECK(redq__pct_decode(s, len, d) <= len, "decode grew");
    return d;
}

/* Parse len bytes (copied into an exactly sized buffer, kept in *buf for
 * the body) into *fl. Returns the parse result. */
static int parse(const char *s, size_t len, fields *fl, char **buf)
{
    redq__frame f;
    char err[128];
    int rc;

    *buf = malloc(len > 0 ? len : 1);
    FUZZ_CHECK(*buf != NULL, "out of memory");
    if (len > 0)
        memcpy(*buf, s, len);
    memset(err, 'x', sizeof err);
    rc = redq__frame_parse(*buf, len, &f, err, sizeof err);
    FUZZ_CHECK(memchr(err, '\0', sizeof err) != NULL, "err not terminated");
    memset(fl, 0, sizeof *fl);
    if (rc != 0) {
        FUZZ_CHECK(rc == REDQ_EPROTOCOL && err[0] != '\0',
                   "failed with %d, err \"%s\"", rc, err);
        return rc;
    }
    FUZZ_CHECK(err[0] == '\0', "parsed, err \"%s\"", err);
    FUZZ_CHECK(f.body > *buf && f.body <= *buf + len &&
                   f.body[-1] == '\n' &&
                   f.body_len == len - (size_t)(f.body - *buf),
               "body not the rest after the header");
    FUZZ_CHECK(memchr(*buf, '\n', (size_t)(f.body - *buf) - 1) == NULL,
               "body not after the first LF");
    FUZZ_CHECK(f.attempts >= 0 && f.attempts <= REDQ__MAX_ATTEMPTS,
               "attempts %d", f.attempts);
    FUZZ_CHECK(f.ts_ms >= -1 && f.dead_ts_ms >= -1, "negative times");
    FUZZ_CHECK(memchr(f.id, '\0', sizeof f.id) != NULL, "id not terminated");
    FUZZ_CHECK(f.reason == NULL ||
                   (f.reason > *buf && f.reason + f.reason_len < f.body),
               "reason outside the header");
    FUZZ_CHECK(f.queue == NULL ||
                   (f.queue > *buf && f.queue + f.queue_len < f.body),
               "queue outside the header");
    memcpy(fl->id, f.id, sizeof fl->id);
    fl->attempts = f.attempts;
    fl->ts_ms = f.ts_ms;
    fl->dead_ts_ms = f.dead_ts_ms;
    fl->reason = decode(f.reason, f.reason_len);
    fl->queue = decode(f.queue, f.queue_len);
    fl->body = f.body;
    fl->body_len = f.body_len;
    return 0;
}

static void release(fields *fl)
{
    free(fl->reason);
    free(fl->queue);
}

static const char *or_empty(const char *s)
{
    return s != NULL ? s : "";
}

static void same(const fields *a, const fields *b, const char *what)
{
    FUZZ_CHECK(strcmp(a->id, b->id) == 0, "%s: id \"%s\" / \"%s\"", what,
               a->id, b->id);
    FUZZ_CHECK(a->attempts == b->attempts, "%s: attempts %d / %d", what,
               a->attempts, b->attempts);
    FUZZ_CHECK(a->ts_ms == b->ts_ms, "%s: ts %lld / %lld", what, a->ts_ms,
               b->ts_ms);
    FUZZ_CHECK(a->dead_ts_ms == b->dead_ts_ms, "%s: dts %lld / %lld", what,
               a->dead_ts_ms, b->dead_ts_ms);
    FUZZ_CHECK(strcmp(or_empty(a->reason), or_empty(b->reason)) == 0,
               "%s: reason \"%s\" / \"%s\"", what, or_empty(a->reason),
               or_empty(b->reason));
    FUZZ_CHECK(strcmp(or_empty(a->queue), or_empty(b->queue)) == 0,
               "%s: queue \"%s\" / \"%s\"", what, or_empty(a->queue),
               or_empty(b->queue));
    FUZZ_CHECK(a->body_len == b->body_len &&
                   (a->body_len == 0 ||
                    memcmp(a->body, b->body, a->body_len) == 0),
               "%s: body of %zu bytes / %zu bytes, or other bytes", what,
               a->body_len, b->body_len);
}

/* Build a frame from these fields into an exactly sized buffer and parse
 * it back; the result goes to *back (its body points into *buf). */
static void build_parse(const void *body, size_t body_len, const char *id,
                        int attempts, long long ts, const char *reason,
                        long long dts, const char *queue, fields *back,
                        char **buf, const char *what)
{
    size_t cap = redq__frame_size(body_len, id, reason, queue), n;
    char *out = malloc(cap);

    FUZZ_CHECK(out != NULL, "out of memory");
    n = redq__frame_build(out, body, body_len, id, attempts, ts, reason, dts,
                          queue);
    FUZZ_CHECK(n <= cap, "%s: built %zu bytes, size said %zu", what, n, cap);
    FUZZ_CHECK(parse(out, n, back, buf) == 0, "%s: built frame \"%.*s\" does "
               "not parse", what, (int)(n < 300 ? n : 300), out);
    free(out);
}

/* A C string of up to max bytes from the input (cut at a NUL). */
static char *take_str(fuzz_in *in, size_t max, int *present)
{
    size_t n;
    const uint8_t *p = fuzz_bytes(in, max, &n);
    char *s = fuzz_cstr(p, n);

    FUZZ_CHECK(s != NULL, "out of memory");
    *present = (int)fuzz_u64(in, 1) & 1;
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fields a, b, want;
    char *buf_a, *buf_b;
    fuzz_in in = {data, size};
    char *id, *reason, *queue;
    int has_id, has_reason, has_queue, attempts;
    long long ts, dts;

    /* 1. The input as a frame, and its round trip. */
    if (parse((const char *)data, size, &a, &buf_a) == 0) {
        build_parse(a.body, a.body_len, a.id, a.attempts, a.ts_ms, a.reason,
                    a.dead_ts_ms, a.queue, &b, &buf_b, "round trip");
        same(&a, &b, "round trip");
        release(&b);
        free(buf_b);
    }
    release(&a);
    free(buf_a);

    /* 2. The input as fields. */
    /* Sizes up to what the library can pass: the reason is cut to 600
     * bytes (lib/reliable.c), queue names to REDQ__MAX_QUEUE_NAME. The
     * header limit (REDQ__FRAME_MAX_HEADER) is not enforced by build:
     * 16384 bytes hold about 5400 bytes of fields that are all escaped. */
    id = take_str(&in, 80, &has_id);
    reason = take_str(&in, 600, &has_reason);
    queue = take_str(&in, REDQ__MAX_QUEUE_NAME, &has_queue);
    attempts = (int)(unsigned)fuzz_u64(&in, 4);
    ts = (long long)fuzz_u64(&in, 8);
    dts = (long long)fuzz_u64(&in, 8);

    memset(&want, 0, sizeof want);
    if (has_id) {
        memcpy(want.id, id, strlen(id) < 64 ? strlen(id) : 64);
        want.id[64] = '\0';
    }
    want.attempts = attempts < 0 ? 0
                    : attempts > REDQ__MAX_ATTEMPTS ? REDQ__MAX_ATTEMPTS
                                                    : attempts;
    want.ts_ms = ts >= 0 && ts <= MAX_TS ? ts : -1;
    want.dead_ts_ms = dts >= 0 && dts <= MAX_TS ? dts : -1;
    want.reason = has_reason ? reason : NULL;
    want.queue = has_queue ? queue : NULL;
    want.body = (const char *)in.p;
    want.body_len = in.n;

    build_parse(in.n > 0 ? in.p : NULL, in.n, has_id ? id : NULL, attempts,
                ts, has_reason ? reason : NULL, dts,
                has_queue ? queue : NULL, &b, &buf_b, "build");
    same(&want, &b, "build");
    release(&b);
    free(buf_b);
    free(id);
    free(reason);
    free(queue);
    return 0;
}
