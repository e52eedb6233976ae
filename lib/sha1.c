/*
 * SHA-1 (FIPS 180-4 section 6.1, RFC 3174), only to name Lua scripts the way
 * Redis does: EVALSHA takes the lowercase hex SHA-1 of the script's text.
 * SHA-1 is broken for collision resistance; that does not matter here, as
 * the script text is ours and the digest is only a cache key on the server.
 *
 * One-shot over a buffer (scripts are small constant strings), so there is
 * no streaming context to get wrong.
 */
#include <stdint.h>
#include <string.h>

#include "redq_private.h"

static uint32_t rol32(uint32_t x, unsigned n)
{
    return (x << n) | (x >> (32u - n));
}

static uint32_t load_be32(const unsigned char *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) |
           ((uint32_t)p[2] << 8) | (uint32_t)p[3];
}

/* Process one 64-byte block into the state h[5] (FIPS 180-4 6.1.2). */
static void sha1_block(uint32_t h[5], const unsigned char *block)
{
    uint32_t w[80];
    uint32_t a, b, c, d, e, f, k, tmp;
    int t;

    for (t = 0; t < 16; t++)
        w[t] = load_be32(block + 4 * t);
    for (t = 16; t < 80; t++)
        w[t] = rol32(w[t - 3] ^ w[t - 8] ^ w[t - 14] ^ w[t - 16], 1);

    a = h[0];
    b = h[1];
    c = h[2];
    d = h[3];
    e = h[4];
    for (t = 0; t < 80; t++) {
        if (t < 20) {
            f = (b & c) | (~b & d); /* Ch */
            k = 0x5a827999u;
        } else if (t < 40) {
            f = b ^ c ^ d; /* Parity */
            k = 0x6ed9eba1u;
        } else if (t < 60) {
            f = (b & c) | (b & d) | (c & d); /* Maj */
            k = 0x8f1bbcdcu;
        } else {
            f = b ^ c ^ d;
            k = 0xca62c1d6u;
        }
        tmp = rol32(a, 5) + f + e + k + w[t];
        e = d;
        d = c;
        c = rol32(b, 30);
        b = a;
        a = tmp;
    }
    h[0] += a;
    h[1] += b;
    h[2] += c;
    h[3] += d;
    h[4] += e;
}

void redq__sha1_hex(const void *data, size_t len, char out[41])
{
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = data;
    uint32_t h[5] = {0x67452301u, 0xefcdab89u, 0x98badcfeu, 0x10325476u,
                     0xc3d2e1f0u};
    unsigned char tail[128];
    size_t rest, tail_len, i;
    /* The message length in bits, modulo 2^64 as the padding defines it. */
    uint64_t bits = (uint64_t)len * 8u;

    for (rest = len; rest >= 64; rest -= 64, p += 64)
        sha1_block(h, p);

    /* Padding (5.1.1): the leftover bytes, a 1 bit, zeros up to 56 mod 64,
     * then the 64-bit big-endian length. That is one or two more blocks. */
    memset(tail, 0, sizeof tail);
    if (rest > 0)
        memcpy(tail, p, rest);
    tail[rest] = 0x80;
    tail_len = rest < 56 ? 64 : 128;
    for (i = 0; i < 8; i++)
        tail[tail_len - 1 - i] = (unsigned char)(bits >> (8 * i));
    sha1_block(h, tail);
    if (tail_len == 128)
        sha1_block(h, tail + 64);

    for (i = 0; i < 20; i++) {
        unsigned char byte = (unsigned char)(h[i / 4] >> (24 - 8 * (i % 4)));
        out[2 * i] = hex[byte >> 4];
        out[2 * i + 1] = hex[byte & 0x0f];
    }
    out[40] = '\0';
}
