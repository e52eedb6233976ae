/*
 * redq__sha1_hex: the FIPS 180 / RFC 3174 test vectors, inputs around the
 * padding boundaries, and the name Redis gives a Lua script.
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "redq_private.h"

static void expect_sha1(const void *data, size_t len, const char *want)
{
    char out[41];

    memset(out, 'x', sizeof out);
    redq__sha1_hex(data, len, out);
    cr_assert_eq(out[40], '\0', "not NUL-terminated");
    cr_assert_str_eq(out, want, "sha1 of %zu bytes: %s, want %s", len, out,
                     want);
}

Test(sha1, fips_abc)
{
    expect_sha1("abc", 3, "a9993e364706816aba3e25717850c26c9cd0d89d");
}

Test(sha1, empty)
{
    expect_sha1("", 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
    /* No data at all: only the padding block is hashed. */
    expect_sha1(NULL, 0, "da39a3ee5e6b4b0d3255bfef95601890afd80709");
}

/* 56 bytes: the length field no longer fits, so padding takes two blocks. */
Test(sha1, fips_448_bits)
{
    static const char m[] =
        "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";

    cr_assert_eq(strlen(m), 56);
    expect_sha1(m, strlen(m), "84983e441c3bd26ebaae4aa1f95129e5e54670f1");
}

Test(sha1, fips_million_a)
{
    size_t n = 1000000;
    char *m = malloc(n);

    cr_assert_not_null(m);
    memset(m, 'a', n);
    expect_sha1(m, n, "34aa973cd4c4daa4f61eeb2bdbad27316534016f");
    free(m);
}

/* RFC 3174 section 7.3, TEST4: "01234567" x 80 = 640 bytes (10 blocks). */
Test(sha1, rfc3174_test4)
{
    char m[641];
    int i;

    for (i = 0; i < 80; i++)
        memcpy(m + 8 * i, "01234567", 8);
    m[640] = '\0';
    expect_sha1(m, 640, "dea356a2cddd90c7a7ecedc5ebb563934f460452");
}

/* Lengths around the block and padding boundaries (55, 63, 64, 65 bytes of
 * 'a'), from `printf 'a%.0s' $(seq N) | sha1sum` (GNU coreutils). */
Test(sha1, padding_boundaries)
{
    char m[65];

    memset(m, 'a', sizeof m);
    expect_sha1(m, 55, "c1c8bbdc22796e28c0e15163d20899b65621d65a");
    expect_sha1(m, 63, "03f09f5b158a7a8cdad920bddc29b81c18a551f5");
    expect_sha1(m, 64, "0098ba824b5c16427bd7a1122a5a442a25ec644d");
    expect_sha1(m, 65, "11655326c708d70319be2610e8a57d9a5b959d3b");
}

/* What SCRIPT LOAD answers for "return 1": `printf '%s' 'return 1' |
 * sha1sum`. EVALSHA only works when we name scripts the same way. */
Test(sha1, lua_script_name)
{
    static const char script[] = "return 1";

    expect_sha1(script, strlen(script),
                "e0e1f9fabfc9d4800c877a703b823ac0578ff8db");
}
