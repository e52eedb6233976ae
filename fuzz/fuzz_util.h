/*
 * Helpers shared by the fuzz targets (header-only: each target is one
 * program). A failed invariant prints what it saw and aborts, which
 * libFuzzer reports as a crash and saves the input for.
 */
#ifndef REDQ_FUZZ_UTIL_H
#define REDQ_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define FUZZ_FAIL(...)                                                       \
    do {                                                                     \
        fprintf(stderr, "fuzz: %s:%d: ", __FILE__, __LINE__);                \
        fprintf(stderr, __VA_ARGS__);                                        \
        fputc('\n', stderr);                                                 \
        abort();                                                             \
    } while (0)

#define FUZZ_CHECK(cond, ...)                                                \
    do {                                                                     \
        if (!(cond))                                                         \
            FUZZ_FAIL(__VA_ARGS__);                                          \
    } while (0)

/* The input as a malloc'd C string, cut at its first NUL. */
static inline char *fuzz_cstr(const uint8_t *data, size_t size)
{
    const uint8_t *nul = memchr(data, '\0', size);
    size_t n = nul != NULL ? (size_t)(nul - data) : size;
    char *s = malloc(n + 1);

    if (s != NULL) {
        if (n > 0)
            memcpy(s, data, n);
        s[n] = '\0';
    }
    return s;
}

/* memmem, which strict C11 + POSIX does not declare. */
static inline const char *fuzz_memmem(const char *hay, size_t hn,
                                      const char *needle, size_t nn)
{
    size_t i;

    if (nn == 0)
        return hay;
    for (i = 0; i + nn <= hn; i++)
        if (hay[i] == needle[0] && memcmp(hay + i, needle, nn) == 0)
            return hay + i;
    return NULL;
}

/* Consume the input front to back to derive structured values (a tiny
 * FuzzedDataProvider): once it runs dry, numbers are 0 and pieces empty. */
typedef struct fuzz_in {
    const uint8_t *p;
    size_t n;
} fuzz_in;

static inline uint64_t fuzz_u64(fuzz_in *in, size_t bytes)
{
    uint64_t v = 0;

    while (bytes-- > 0 && in->n > 0) {
        v = (v << 8) | *in->p++;
        in->n--;
    }
    return v;
}

/* Up to max bytes (the count comes from the input too). */
static inline const uint8_t *fuzz_bytes(fuzz_in *in, size_t max, size_t *len)
{
    const uint8_t *p;
    size_t n = (size_t)fuzz_u64(in, 2);

    n = max == 0 ? 0 : n % (max + 1);
    if (n > in->n)
        n = in->n;
    p = in->p;
    in->p += n;
    in->n -= n;
    *len = n;
    return p;
}

#endif /* REDQ_FUZZ_UTIL_H */
