/*
 * Frames: redq's metadata (id, attempts, times, dead-letter reason) in
 * front of a payload that is kept byte for byte. The format is in
 * lib/redq_private.h; lib/scripts.c reads and rewrites the header in Lua.
 *
 * Why a header line and not JSON: the payload must never be re-encoded
 * (JSON would need escaping or base64 for arbitrary bytes, and Lua's cjson
 * changes numbers), and a frame is only ever found in keys that redq alone
 * writes, so it needs no self-describing structure to be recognised, only
 * a version. A header line is cheap to build in C, and cheap to read and
 * patch in Lua (one string.find for the LF); the payload after it is never
 * looked at.
 */
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "redq_private.h"

static void set_err(char *err, size_t errlen, const char *what)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "malformed frame: %s", what);
}

/* Bytes a value may hold as they are: printable ASCII except SP and '%'.
 * Everything else (SP, LF, '%', controls, bytes >= 0x80) is %XX. */
static int plain_byte(unsigned char c)
{
    return c > 0x20 && c < 0x7f && c != '%';
}

static int hexval(unsigned char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

size_t redq__pct_encode(char *out, const char *s, size_t len)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t i, n = 0;
    for (i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (plain_byte(c)) {
            out[n++] = (char)c;
        } else {
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 15];
        }
    }
    return n;
}

size_t redq__pct_decode(const char *s, size_t len, char *out)
{
    size_t i, n = 0;
    for (i = 0; i < len; i++) {
        int h, l;
        if (s[i] == '%' && i + 2 < len &&
            (h = hexval((unsigned char)s[i + 1])) >= 0 &&
            (l = hexval((unsigned char)s[i + 2])) >= 0) {
            out[n++] = (char)(h * 16 + l);
            i += 2;
        } else {
            out[n++] = s[i];
        }
    }
    out[n] = '\0';
    return n;
}

/* A decimal number of at most 18 digits (no sign): fits a long long. */
static int parse_num(const char *s, size_t len, long long *out)
{
    long long v = 0;
    size_t i;
    if (len == 0 || len > 18)
        return -1;
    for (i = 0; i < len; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    *out = v;
    return 0;
}

int redq__frame_parse(const char *s, size_t len, redq__frame *f, char *err,
                      size_t errlen)
{
    const char *lf, *p, *end;
    size_t scan = len < REDQ__FRAME_MAX_HEADER ? len : REDQ__FRAME_MAX_HEADER;
    unsigned seen = 0;

    memset(f, 0, sizeof *f);
    f->ts_ms = -1;
    f->dead_ts_ms = -1;
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (len < 4 || memcmp(s, "RQ1", 3) != 0 || (s[3] != ' ' && s[3] != '\n')) {
        set_err(err, errlen, "does not start with \"RQ1\"");
        return REDQ_EPROTOCOL;
    }
    lf = memchr(s, '\n', scan);
    if (lf == NULL) {
        set_err(err, errlen, "no end of header");
        return REDQ_EPROTOCOL;
    }
    p = s + 3;
    end = lf;
    while (p < end) {
        const char *name, *eq, *val, *ve;
        size_t nlen, vlen, i;
        int bit = 0;
        long long num;

        if (*p != ' ') {
            set_err(err, errlen, "fields must be separated by one space");
            return REDQ_EPROTOCOL;
        }
        name = ++p;
        ve = memchr(p, ' ', (size_t)(end - p));
        if (ve == NULL)
            ve = end;
        eq = memchr(name, '=', (size_t)(ve - name));
        if (eq == NULL || eq == name) {
            set_err(err, errlen, "a field is not name=value");
            return REDQ_EPROTOCOL;
        }
        nlen = (size_t)(eq - name);
        val = eq + 1;
        vlen = (size_t)(ve - val);
        if (vlen == 0) {
            set_err(err, errlen, "a field has an empty value");
            return REDQ_EPROTOCOL;
        }
        for (i = 0; i < vlen; i++) {
            unsigned char c = (unsigned char)val[i];
            if (c == '%') {
                if (i + 2 >= vlen) {
                    set_err(err, errlen, "a %-escape is cut short");
                    return REDQ_EPROTOCOL;
                }
                if (hexval((unsigned char)val[i + 1]) < 0 ||
                    hexval((unsigned char)val[i + 2]) < 0) {
                    set_err(err, errlen, "a %-escape is not two hex digits");
                    return REDQ_EPROTOCOL;
                }
                i += 2;
            } else if (!plain_byte(c)) {
                set_err(err, errlen, "a value holds a byte that must be escaped");
                return REDQ_EPROTOCOL;
            }
        }
#define IS(lit) (nlen == sizeof(lit) - 1 && memcmp(name, lit, nlen) == 0)
        if (IS("id")) {
            bit = 1;
            if (vlen > 3 * (sizeof f->id - 1)) {
                set_err(err, errlen, "id longer than 64 bytes");
                return REDQ_EPROTOCOL;
            }
            {
                char tmp[3 * sizeof f->id];
                size_t n = redq__pct_decode(val, vlen, tmp);
                if (n > sizeof f->id - 1) {
                    set_err(err, errlen, "id longer than 64 bytes");
                    return REDQ_EPROTOCOL;
                }
                memcpy(f->id, tmp, n + 1);
            }
        } else if (IS("a")) {
            bit = 2;
            if (parse_num(val, vlen, &num) != 0 || num > REDQ__MAX_ATTEMPTS) {
                set_err(err, errlen, "attempts is not a number in 0..1000000");
                return REDQ_EPROTOCOL;
            }
            f->attempts = (int)num;
        } else if (IS("ts")) {
            bit = 4;
            if (parse_num(val, vlen, &f->ts_ms) != 0) {
                set_err(err, errlen, "ts is not a number of milliseconds");
                return REDQ_EPROTOCOL;
            }
        } else if (IS("dts")) {
            bit = 8;
            if (parse_num(val, vlen, &f->dead_ts_ms) != 0) {
                set_err(err, errlen, "dts is not a number of milliseconds");
                return REDQ_EPROTOCOL;
            }
        } else if (IS("dr")) {
            bit = 16;
            f->reason = val;
            f->reason_len = vlen;
        } else if (IS("q")) {
            bit = 32;
            f->queue = val;
            f->queue_len = vlen;
        }
#undef IS
        if (bit != 0) {
            if (seen & (unsigned)bit) {
                set_err(err, errlen, "a field appears twice");
                return REDQ_EPROTOCOL;
            }
            seen |= (unsigned)bit;
        }
        p = ve;
    }
    f->body = lf + 1;
    f->body_len = len - (size_t)(lf + 1 - s);
    return 0;
}

size_t redq__frame_size(size_t body_len, const char *id, const char *reason,
                        const char *queue)
{
    size_t n = 3 + 1 + body_len;
    n += 3 + 7;         /* " a=" 1000000 */
    n += 4 + 19;        /* " ts=" */
    n += 5 + 19;        /* " dts=" */
    if (id != NULL)
        n += 4 + 3 * strlen(id);
    if (reason != NULL)
        n += 4 + 3 * strlen(reason);
    if (queue != NULL)
        n += 3 + 3 * strlen(queue);
    return n;
}

/* Numbers the parser takes back: at most 18 digits. */
#define FRAME_MAX_NUM 999999999999999999LL

static size_t put_num(char *w, const char *name, long long v)
{
    return (size_t)sprintf(w, " %s=%lld", name, v);
}

size_t redq__frame_build(char *out, const void *body, size_t body_len,
                         const char *id, int attempts, long long ts_ms,
                         const char *reason, long long dead_ts_ms,
                         const char *queue)
{
    size_t n = 3;
    memcpy(out, "RQ1", 3);
    if (id != NULL && id[0] != '\0') {
        size_t il = strlen(id);
        if (il > 64)
            il = 64;
        memcpy(out + n, " id=", 4);
        n += 4;
        n += redq__pct_encode(out + n, id, il);
    }
    if (attempts < 0)
        attempts = 0;
    if (attempts > REDQ__MAX_ATTEMPTS)
        attempts = REDQ__MAX_ATTEMPTS;
    n += put_num(out + n, "a", attempts);
    if (ts_ms >= 0 && ts_ms <= FRAME_MAX_NUM)
        n += put_num(out + n, "ts", ts_ms);
    if (reason != NULL && reason[0] != '\0') {
        memcpy(out + n, " dr=", 4);
        n += 4;
        n += redq__pct_encode(out + n, reason, strlen(reason));
    }
    if (dead_ts_ms >= 0 && dead_ts_ms <= FRAME_MAX_NUM)
        n += put_num(out + n, "dts", dead_ts_ms);
    if (queue != NULL && queue[0] != '\0') {
        memcpy(out + n, " q=", 3);
        n += 3;
        n += redq__pct_encode(out + n, queue, strlen(queue));
    }
    out[n++] = '\n';
    if (body_len > 0)
        memcpy(out + n, body, body_len);
    return n + body_len;
}

/* ---- ids ------------------------------------------------------------------ */

#if defined(__linux__) || defined(__FreeBSD__)
#include <sys/random.h>
#define HAVE_GETRANDOM 1
#endif
#include <time.h>
#include <unistd.h>

static uint64_t mix64(uint64_t x)
{
    /* splitmix64's finaliser: spreads every input bit over the output. */
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

void redq__instance_id(char *out, uintptr_t salt)
{
    static const char hex[] = "0123456789abcdef";
    uint64_t v = 0;
    int i;
#ifdef HAVE_GETRANDOM
    if (getrandom(&v, sizeof v, GRND_NONBLOCK) != (ssize_t)sizeof v)
        v = 0;
#endif
    /* Without getrandom (or before the pool is ready) the clocks, the pid
     * and the caller's address: two instances started in the same
     * microsecond in one process still differ by address. */
    v ^= mix64(redq__now_us() ^ ((uint64_t)redq__wall_ms() << 20) ^
               ((uint64_t)getpid() << 40) ^ (uint64_t)salt);
    for (i = 0; i < REDQ__INSTANCE_ID_LEN; i++)
        out[i] = hex[(v >> (4 * (REDQ__INSTANCE_ID_LEN - 1 - i))) & 15];
    out[REDQ__INSTANCE_ID_LEN] = '\0';
}

size_t redq__msg_id(char *out, const char *prefix, uint64_t n)
{
    size_t pl = strnlen(prefix, REDQ__INSTANCE_ID_LEN);
    char tmp[24];
    size_t k = 0;
    memcpy(out, prefix, pl);
    out[pl++] = '-';
    do {
        tmp[k++] = (char)('0' + n % 10);
        n /= 10;
    } while (n != 0);
    while (k > 0)
        out[pl++] = tmp[--k];
    out[pl] = '\0';
    return pl;
}

size_t redq__ready_header(char *out, const char *id, size_t idlen,
                          long long ts_ms)
{
    size_t n = 0;
    memcpy(out, "RQ1 id=", 7);
    n = 7;
    memcpy(out + n, id, idlen);
    n += idlen;
    if (ts_ms >= 0 && ts_ms <= FRAME_MAX_NUM)
        n += put_num(out + n, "ts", ts_ms);
    out[n++] = '\n';
    return n;
}
