/*
 * lib/text.c: base64 (RFC 4648 vectors, the whole alphabet, invalid input)
 * and UTF-8 validation (what is and is not well formed).
 */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "redq_private.h"

Test(base64, rfc4648_vectors)
{
    static const char *const plain[] = {"", "f", "fo", "foo", "foob",
                                        "fooba", "foobar"};
    static const char *const enc[] = {"", "Zg==", "Zm8=", "Zm9v",
                                      "Zm9vYg==", "Zm9vYmE=", "Zm9vYmFy"};
    size_t i;

    for (i = 0; i < sizeof plain / sizeof plain[0]; i++) {
        char out[16];
        unsigned char dec[16];
        size_t n;
        long d;

        memset(out, 'x', sizeof out);
        n = redq_base64_encode(plain[i], strlen(plain[i]), out);
        cr_assert_eq(n, strlen(enc[i]), "encode \"%s\": length %zu",
                     plain[i], n);
        cr_assert_str_eq(out, enc[i], "encode \"%s\"", plain[i]);

        d = redq__b64_decode(enc[i], strlen(enc[i]), dec);
        cr_assert_eq(d, (long)strlen(plain[i]), "decode \"%s\": %ld", enc[i],
                     d);
        cr_assert_eq(memcmp(dec, plain[i], (size_t)d), 0, "decode \"%s\"",
                     enc[i]);
    }
}

Test(base64, whole_alphabet)
{
    unsigned char in[256], back[256];
    char out[4 * ((256 + 2) / 3) + 1];
    size_t n;
    int i;

    for (i = 0; i < 256; i++)
        in[i] = (unsigned char)i;
    n = redq_base64_encode(in, sizeof in, out);
    cr_assert_eq(n, sizeof out - 1);
    cr_assert_not_null(strchr(out, '+'));
    cr_assert_not_null(strchr(out, '/'));
    cr_assert_eq(redq__b64_decode(out, n, back), 256);
    cr_assert_eq(memcmp(in, back, sizeof in), 0);

    n = redq_base64_encode("\xfb\xff", 2, out);
    cr_assert_str_eq(out, "+/8=");
}

Test(base64, invalid)
{
    static const char *const bad[] = {
        "Zg=",      /* length not a multiple of 4 */
        "Zg",       "Z",        "Zm9vY",
        "Z===",     /* one sextet cannot make a byte */
        "====",     "=Zg=",     "Zm=8", /* data after padding */
        "Zg==Zm8=", "Zm8=Zm9v", /* padding in the middle */
        "Zm9v\n",   "Zm 9",     "Zm9-",     "Zm9_", /* base64url */
        "Zm9\x80",  "Zm9\0",
    };
    size_t i;

    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        unsigned char out[16];
        size_t len = strlen(bad[i]);

        if (strcmp(bad[i], "Zm9") == 0) /* "Zm9\0": keep the NUL */
            len = 4;
        cr_assert_eq(redq__b64_decode(bad[i], len, out), -1,
                     "\"%s\" accepted", bad[i]);
    }
}

Test(utf8, valid_and_invalid)
{
    cr_assert(redq_utf8_valid("", 0));
    cr_assert(redq_utf8_valid("plain ascii", 11));
    cr_assert(redq_utf8_valid("\xc3\xa9t\xc3\xa9", 6));      /* été */
    cr_assert(redq_utf8_valid("\xf0\x9f\x98\x80", 4));       /* U+1F600 */
    cr_assert(redq_utf8_valid("a\0b", 3));                    /* NUL is text */
    cr_assert(!redq_utf8_valid("\xc3", 1));                   /* cut short */
    cr_assert(!redq_utf8_valid("\xc0\xaf", 2));               /* overlong */
    cr_assert(!redq_utf8_valid("\xed\xa0\x80", 3));           /* surrogate */
    cr_assert(!redq_utf8_valid("\xf4\x90\x80\x80", 4));       /* > U+10FFFF */
    cr_assert(!redq_utf8_valid("\xff", 1));
    cr_assert(!redq_utf8_valid("ok\x80", 3));                 /* lone continuation */
}

/* The public names are the library's one implementation: the internal
 * names the library itself uses are the same functions. */
Test(utf8, public_is_the_internal)
{
    cr_assert_eq(redq__utf8_valid("\xc3", 1), redq_utf8_valid("\xc3", 1));
    cr_assert_eq(redq__utf8_seq_len((const unsigned char *)"\xe2\x82\xac", 3),
                 3);
}

Test(utf8, seq_len)
{
    cr_assert_eq(redq_utf8_seq_len("a", 1), 1);
    cr_assert_eq(redq_utf8_seq_len("\xc3\xa9x", 3), 2);
    cr_assert_eq(redq_utf8_seq_len("\xe2\x82\xac", 3), 3);        /* euro */
    cr_assert_eq(redq_utf8_seq_len("\xf0\x9f\x98\x80", 4), 4);
    cr_assert_eq(redq_utf8_seq_len("\xf0\x9f\x98\x80", 3), 0);    /* cut */
    cr_assert_eq(redq_utf8_seq_len("\xe0\x80\x80", 3), 0);        /* overlong */
    cr_assert_eq(redq_utf8_seq_len("\x80", 1), 0);
    cr_assert_eq(redq_utf8_seq_len("", 0), 0);
    cr_assert_eq(redq_utf8_seq_len(NULL, 4), 0);
}

Test(utf8, null_and_empty)
{
    cr_assert(redq_utf8_valid(NULL, 0));
    cr_assert(!redq_utf8_valid(NULL, 3));
}

/* The output size the header promises is exact for every length mod 3:
 * the byte after the NUL is never written. */
Test(base64, output_size_contract)
{
    size_t len;

    for (len = 0; len < 10; len++) {
        unsigned char in[10];
        char out[32];
        size_t need = 4 * ((len + 2) / 3) + 1, n;

        memset(in, 0xab, sizeof in);
        memset(out, '#', sizeof out);
        n = redq_base64_encode(in, len, out);
        cr_assert_eq(n, need - 1, "len %zu", len);
        cr_assert_eq(out[n], '\0');
        cr_assert_eq(out[need], '#', "len %zu: wrote past its room", len);
    }
}
