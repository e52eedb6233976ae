/*
 * Text helpers shared by the library and its tools: base64 (RFC 4648) and
 * UTF-8 validation. Payload bytes are never encoded on their way through
 * Redis (lib/frame.c keeps them verbatim); these serve output formats that
 * must be text, such as the CLI's JSON.
 */
#include <limits.h>
#include <stddef.h>
#include <stdint.h>

#include "redq_private.h"

/* redq.h. RFC 3629: no overlongs, no surrogates, nothing above U+10FFFF.
 * The library's own callers (lib/prom.c) use it through redq__utf8_seq_len,
 * a name for the same function (redq_private.h). */
size_t redq_utf8_seq_len(const void *s, size_t n)
{
    const unsigned char *p = s;
    uint32_t cp;

    if (p == NULL || n == 0)
        return 0;
    size_t need, i;

    if (p[0] < 0x80)
        return 1;
    if (p[0] < 0xc2) /* a continuation byte, or an overlong 2-byte lead */
        return 0;
    if (p[0] < 0xe0) {
        need = 2;
        cp = p[0] & 0x1fu;
    } else if (p[0] < 0xf0) {
        need = 3;
        cp = p[0] & 0x0fu;
    } else if (p[0] < 0xf5) {
        need = 4;
        cp = p[0] & 0x07u;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3fu);
    }
    if ((need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) ||
        cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return need;
}

/* redq.h */
int redq_utf8_valid(const void *s, size_t len)
{
    const unsigned char *p = s;
    size_t i = 0;
    if (p == NULL)
        return len == 0;
    while (i < len) {
        size_t n = redq_utf8_seq_len(p + i, len - i);
        if (n == 0)
            return 0;
        i += n;
    }
    return 1;
}

static const char b64_alphabet[] =
    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* redq.h */
size_t redq_base64_encode(const void *in, size_t len, char *out)
{
    const unsigned char *p = in;
    size_t i, o = 0;

    for (i = 0; i + 3 <= len; i += 3) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8) |
                     p[i + 2];

        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = b64_alphabet[v & 63];
    }
    if (len - i == 1) {
        uint32_t v = (uint32_t)p[i] << 16;

        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (len - i == 2) {
        uint32_t v = ((uint32_t)p[i] << 16) | ((uint32_t)p[i + 1] << 8);

        out[o++] = b64_alphabet[(v >> 18) & 63];
        out[o++] = b64_alphabet[(v >> 12) & 63];
        out[o++] = b64_alphabet[(v >> 6) & 63];
        out[o++] = '=';
    }
    out[o] = '\0';
    return o;
}

/* The 6-bit value of a base64 character, or -1. A switch on ranges rather
 * than a 256-entry table: no table to get wrong, and it is not hot. */
static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

long redq__b64_decode(const char *in, size_t len, void *out)
{
    const unsigned char *p = (const unsigned char *)in;
    unsigned char *o = out;
    size_t i, n = 0;

    if (len % 4 != 0 || len / 4 * 3 > (size_t)LONG_MAX)
        return -1;
    for (i = 0; i < len; i += 4) {
        int a = b64_value(p[i]), b = b64_value(p[i + 1]);
        int c = b64_value(p[i + 2]), d = b64_value(p[i + 3]);
        int last = i + 4 == len;

        if (a < 0 || b < 0)
            return -1;
        if (c < 0) {
            /* "xx==": one byte; padding only at the very end. */
            if (!last || p[i + 2] != '=' || p[i + 3] != '=')
                return -1;
            o[n++] = (unsigned char)((a << 2) | (b >> 4));
        } else if (d < 0) {
            /* "xxx=": two bytes. */
            if (!last || p[i + 3] != '=')
                return -1;
            o[n++] = (unsigned char)((a << 2) | (b >> 4));
            o[n++] = (unsigned char)(((b & 15) << 4) | (c >> 2));
        } else {
            o[n++] = (unsigned char)((a << 2) | (b >> 4));
            o[n++] = (unsigned char)(((b & 15) << 4) | (c >> 2));
            o[n++] = (unsigned char)(((c & 3) << 6) | d);
        }
    }
    return (long)n;
}
