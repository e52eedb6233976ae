/*
 * fault-common.h: what the fault harness's producer and consumer workers
 * share: the payload generator, the message tag, the hash the checker
 * compares, and the log-line writer.
 *
 * Every non-empty payload embeds the tag "~t<producer>.<seq>~" in a way that
 * keeps the payload's shape (inside a JSON string, after a metadata-looking
 * first line, between binary bytes), so a consumer can say which message it
 * got without trusting anything else in the bytes. The generator never
 * writes '~' except in the tag, so a tag cannot be faked by the filler.
 *
 * Header-only (static functions) so each worker is one translation unit.
 */
#ifndef FAULT_COMMON_H
#define FAULT_COMMON_H

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* The largest payload the generator makes: one MiB plus room for the tag. */
#define FAULT_BIG_LEN (1024 * 1024)
#define FAULT_BUF_LEN (FAULT_BIG_LEN + 256)

static inline uint64_t fault_splitmix(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

/* FNV-1a, 64 bits: cheap, and any changed, added or dropped byte changes it
 * with overwhelming probability, which is all the checker needs. */
static inline uint64_t fault_hash(const void *data, size_t len)
{
    const unsigned char *p = data;
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= p[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

static inline long long fault_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* `n` filler bytes from `rng`: printable (binary == 0) or any byte value
 * including NUL (binary == 1), never '~'. */
static inline void fault_fill(unsigned char *w, size_t n, uint64_t *rng, int binary)
{
    uint64_t r = 0;
    for (size_t i = 0; i < n; i++) {
        if ((i & 7) == 0)
            r = fault_splitmix(rng);
        unsigned char b = (unsigned char)(r >> ((i & 7) * 8));
        if (binary) {
            if (b == '~')
                b = 0;
        } else {
            b = (unsigned char)('a' + b % 26);
        }
        w[i] = b;
    }
}

/*
 * Write the payload of message `seq` of producer `pid` (run seed `seed`)
 * into `buf` (FAULT_BUF_LEN bytes) and return its length. Every
 * `big_every`-th message (0: none) is 1 MiB. Deterministic: the same
 * arguments always give the same bytes. `*variant` gets a short name of
 * the shape, for the logs.
 */
static inline size_t fault_payload(unsigned char *buf, uint64_t seed, unsigned pid,
                            uint64_t seq, unsigned big_every,
                            const char **variant)
{
    uint64_t rng = seed ^ ((uint64_t)pid << 40) ^ (seq * 0x2545f4914f6cdd1dULL);
    char tag[64];
    int tl = snprintf(tag, sizeof tag, "~t%u.%llu~", pid, (unsigned long long)seq);
    unsigned v = (unsigned)(fault_splitmix(&rng) % 100);
    size_t n = 0;

    if (big_every && seq % big_every == big_every - 1) {
        *variant = "big";
        memcpy(buf, tag, (size_t)tl);
        fault_fill(buf + tl, FAULT_BIG_LEN - (size_t)tl, &rng, 0);
        return FAULT_BIG_LEN;
    }
#define PUT(...) (n = (size_t)snprintf((char *)buf, FAULT_BUF_LEN, __VA_ARGS__))
    if (v < 25) {
        *variant = "text";
        PUT("hello %s world", tag);
    } else if (v < 35) {
        *variant = "json-id-body";
        PUT("{\"id\":42,\"body\":\"%s\"}", tag);
    } else if (v < 45) {
        *variant = "json-mail";
        PUT("{\"to\":\"a@b.c\",\"subject\":\"%s\",\"body\":\"hello\"}", tag);
    } else if (v < 52) {
        *variant = "meta";
        PUT("RQ1 a=3 id=x\n%s", tag);
    } else if (v < 60) {
        /* NULs at both ends and random bytes around the tag. */
        *variant = "binary";
        size_t a = 1 + fault_splitmix(&rng) % 100, b = fault_splitmix(&rng) % 100;
        buf[0] = 0;
        fault_fill(buf + 1, a, &rng, 1);
        memcpy(buf + 1 + a, tag, (size_t)tl);
        fault_fill(buf + 1 + a + tl, b, &rng, 1);
        buf[1 + a + tl + b] = 0;
        n = 2 + a + (size_t)tl + b;
    } else if (v < 65) {
        *variant = "empty";
        n = 0;
    } else if (v < 69) {
        *variant = "json-b64";
        PUT("{\"body_b64\":\"not base64!\",\"t\":\"%s\"}", tag);
    } else if (v < 75) {
        *variant = "json-seed";
        PUT("{\"id\":\"%s\",\"ts\":1764000000000,\"body\":\"hello\"}", tag);
    } else if (v < 78) {
        *variant = "json-attempts";
        PUT("{\"body\":\"x\",\"attempts\":\"two\",\"t\":\"%s\"}", tag);
    } else if (v < 80) {
        *variant = "json-bignum";
        PUT("{\"body\":{\"n\":12345678901234567890},\"t\":\"%s\"}", tag);
    } else if (v < 83) {
        *variant = "json-array";
        PUT("[\"%s\",1,2,{}]", tag);
    } else {
        /* Text of 100 B to 16 KB. */
        *variant = "medium";
        size_t a = 50 + fault_splitmix(&rng) % 16000;
        fault_fill(buf, a, &rng, 0);
        memcpy(buf + a, tag, (size_t)tl);
        n = a + (size_t)tl;
    }
#undef PUT
    return n;
}

/* Find the tag in a payload: 1 and *pid, *seq set, or 0 when there is none
 * (an empty payload, or one that lost or garbled its tag). */
static inline int fault_find_tag(const unsigned char *p, size_t len, unsigned *pid,
                          unsigned long long *seq)
{
    for (size_t i = 0; i + 1 < len; i++) {
        if (p[i] != '~' || p[i + 1] != 't')
            continue;
        size_t j = i + 2;
        unsigned long long a = 0, b = 0;
        int da = 0, db = 0;
        while (j < len && p[j] >= '0' && p[j] <= '9' && da < 12)
            a = a * 10 + (p[j++] - '0'), da++;
        if (!da || j >= len || p[j++] != '.')
            continue;
        while (j < len && p[j] >= '0' && p[j] <= '9' && db < 19)
            b = b * 10 + (p[j++] - '0'), db++;
        if (!db || j >= len || p[j] != '~')
            continue;
        *pid = (unsigned)a;
        *seq = b;
        return 1;
    }
    return 0;
}

/* "IDX:NAME" -> *idx and a pointer to NAME inside arg (names may contain
 * ':'; only the first one splits). 0 on success, -1 when malformed. */
static inline int fault_parse_queue(const char *arg, int *idx, const char **name)
{
    char *end;
    long v = strtol(arg, &end, 10);
    if (end == arg || *end != ':' || v < 0 || v > 1000 || !end[1])
        return -1;
    *idx = (int)v;
    *name = end + 1;
    return 0;
}

/* One line to the log, flushed at once: a SIGKILL after this returns loses
 * nothing the line says. Exits when the log cannot be written, since a
 * silent gap would make the checker blame the library. */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static inline void fault_log(FILE *f, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfprintf(f, fmt, ap);
    va_end(ap);
    if (rc < 0 || fflush(f) != 0) {
        perror("fault: log write");
        exit(5);
    }
}

#endif
