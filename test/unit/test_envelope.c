/*
 * redq__envelope_parse / redq__envelope_build / redq__b64_*: raw messages
 * pass through untouched, envelopes round-trip every kind of body, the
 * fields come out as written (also as Lua cjson rewrites them), and every
 * malformed form is refused with REDQ_EPROTOCOL and a message that names
 * the problem.
 *
 * body_out buffers are malloc'd at exactly len + 1 bytes, the documented
 * minimum, so that an overrun shows under valgrind and ASan.
 *
 * The envelope_alloc tests replace jansson's allocator, which is process-wide;
 * criterion runs each test in its own process, so that stays in the test.
 */
#include <criterion/criterion.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redq_private.h"

#define ERRLEN 256

/* A parse result and the body buffer it may point into. */
typedef struct parsed {
    redq__envelope env;
    char *buf; /* len + 1 bytes, owned */
    int rc;
    char err[ERRLEN];
} parsed;

static void parse(parsed *p, const char *msg, size_t len)
{
    p->buf = malloc(len + 1);
    cr_assert_not_null(p->buf);
    memset(p->buf, 'Z', len + 1);
    memset(&p->env, 0xA5, sizeof p->env);
    memset(p->err, 'x', sizeof p->err);
    p->rc = redq__envelope_parse(msg, len, &p->env, p->buf, p->err,
                                 sizeof p->err);
    cr_assert_not_null(memchr(p->err, '\0', sizeof p->err),
                       "err not NUL-terminated");
}

static void parsed_free(parsed *p)
{
    free(p->buf);
    p->buf = NULL;
}

/* msg must come back as a raw message: itself, no envelope fields, and
 * body_out not written. */
static void expect_raw(const char *msg, size_t len)
{
    parsed p;
    size_t i;

    parse(&p, msg, len);
    cr_assert_eq(p.rc, 0, "raw message refused: %d (%s)", p.rc, p.err);
    cr_assert_str_eq(p.err, "", "err not cleared on success");
    cr_assert_eq(p.env.is_envelope, 0, "raw message taken for an envelope");
    cr_assert_eq(p.env.body, msg, "a raw body must point into msg");
    cr_assert_eq(p.env.body_len, len, "body_len %zu, want %zu",
                 p.env.body_len, len);
    cr_assert_eq(p.env.attempts, 0);
    cr_assert_eq(p.env.ts_ms, -1);
    cr_assert_str_eq(p.env.id, "");
    for (i = 0; i < len + 1; i++)
        cr_assert_eq(p.buf[i], 'Z', "body_out written for a raw message");
    parsed_free(&p);
}

#define EXPECT_RAW_STR(s) expect_raw((s), sizeof(s) - 1)

/* msg (a C string) must be an envelope with this body and these fields. */
static void expect_env(const char *msg, const void *body, size_t body_len,
                       int attempts, long long ts, const char *id)
{
    parsed p;
    size_t len = strlen(msg);

    parse(&p, msg, len);
    cr_assert_eq(p.rc, 0, "%s: rc %d (%s)", msg, p.rc, p.err);
    cr_assert_eq(p.env.is_envelope, 1, "%s: not an envelope", msg);
    cr_assert_eq(p.env.body, p.buf, "%s: body not in body_out", msg);
    cr_assert_eq(p.env.body_len, body_len, "%s: body_len %zu, want %zu", msg,
                 p.env.body_len, body_len);
    cr_assert_eq(memcmp(p.env.body, body, body_len), 0, "%s: body differs",
                 msg);
    cr_assert_eq(p.env.body[body_len], '\0', "%s: body not NUL-terminated",
                 msg);
    cr_assert_eq(p.env.attempts, attempts, "%s: attempts %d, want %d", msg,
                 p.env.attempts, attempts);
    cr_assert_eq(p.env.ts_ms, ts, "%s: ts %lld, want %lld", msg, p.env.ts_ms,
                 ts);
    cr_assert_str_eq(p.env.id, id, "%s: id \"%s\", want \"%s\"", msg,
                     p.env.id, id);
    parsed_free(&p);
}

/* msg must be refused as malformed with `word` in the message, and env
 * must describe it as raw (what the consumer dead-letters). */
static void expect_malformed_n(const char *msg, size_t len, const char *word)
{
    parsed p;

    parse(&p, msg, len);
    cr_assert_eq(p.rc, REDQ_EPROTOCOL, "%s: rc %d, want REDQ_EPROTOCOL (%s)",
                 msg, p.rc, p.err);
    cr_assert_not_null(strstr(p.err, word),
                       "%s: error \"%s\" does not mention \"%s\"", msg, p.err,
                       word);
    cr_assert_eq(p.env.is_envelope, 0, "%s: failed parse left an envelope",
                 msg);
    cr_assert_eq(p.env.body, msg, "%s: failed parse: body not msg", msg);
    cr_assert_eq(p.env.body_len, len);
    cr_assert_eq(p.env.attempts, 0);
    cr_assert_eq(p.env.ts_ms, -1);
    cr_assert_str_eq(p.env.id, "");
    parsed_free(&p);
}

static void expect_malformed(const char *msg, const char *word)
{
    expect_malformed_n(msg, strlen(msg), word);
}

/* Build, check the body went as "body" (want_b64 0) or "body_b64" (1) or
 * either (-1), parse back. */
static void round_trip(const void *body, size_t len, int want_b64)
{
    size_t out_len = 12345;
    char *js = redq__envelope_build(body, len, "id-1", 1700000000123LL, 4,
                                    NULL, 0, NULL, &out_len);
    parsed p;

    cr_assert_not_null(js, "build failed");
    cr_assert_eq(out_len, strlen(js), "out_len %zu, strlen %zu", out_len,
                 strlen(js));
    cr_assert_neq(js[out_len - 1], '\n', "trailing newline");
    if (want_b64 == 1) {
        cr_assert_not_null(strstr(js, "\"body_b64\":\""), "no body_b64: %s",
                           js);
        cr_assert_null(strstr(js, "\"body\":"), "body too: %s", js);
    } else if (want_b64 == 0) {
        cr_assert_not_null(strstr(js, "\"body\":\""), "no body: %s", js);
        cr_assert_null(strstr(js, "body_b64"), "body_b64 too: %s", js);
    }

    parse(&p, js, out_len);
    cr_assert_eq(p.rc, 0, "%s: rc %d (%s)", js, p.rc, p.err);
    cr_assert_eq(p.env.is_envelope, 1);
    cr_assert_eq(p.env.body_len, len, "%s: body_len %zu, want %zu", js,
                 p.env.body_len, len);
    if (len > 0)
        cr_assert_eq(memcmp(p.env.body, body, len), 0, "%s: body differs",
                     js);
    cr_assert_eq(p.env.body[len], '\0');
    cr_assert_eq(p.env.attempts, 4);
    cr_assert_eq(p.env.ts_ms, 1700000000123LL);
    cr_assert_str_eq(p.env.id, "id-1");
    parsed_free(&p);
    free(js);
}

/* ---- raw messages ----------------------------------------------------- */

Test(envelope_raw, plain_text)
{
    EXPECT_RAW_STR("hello world");
    EXPECT_RAW_STR("42");
    EXPECT_RAW_STR("\"a JSON string\"");
}

Test(envelope_raw, empty_and_blank)
{
    EXPECT_RAW_STR("");
    expect_raw(NULL, 0);
    EXPECT_RAW_STR("   \t\r\n");
}

Test(envelope_raw, binary_with_nul)
{
    EXPECT_RAW_STR("ab\0cd");
    EXPECT_RAW_STR("\0{\"body\":\"x\"}"); /* NUL is not whitespace */
    EXPECT_RAW_STR("\xff\xfe\x00\x01");
}

Test(envelope_raw, leading_whitespace_then_not_brace)
{
    EXPECT_RAW_STR("   hello");
    EXPECT_RAW_STR("\n\t[{\"body\":\"x\"}]");
    EXPECT_RAW_STR(" \v{\"body\":\"x\"}"); /* \v is not JSON whitespace */
}

Test(envelope_raw, json_without_body)
{
    /* Someone else's JSON: delivered as is, and its "attempts" is not ours
     * to read. */
    EXPECT_RAW_STR("{}");
    EXPECT_RAW_STR("{\"id\":\"x\",\"ts\":5,\"attempts\":3}");
    EXPECT_RAW_STR("  {\"order\":{\"body\":\"nested\"}}\n");
    EXPECT_RAW_STR("{\"Body\":\"x\",\"BODY_B64\":\"eA==\"}");
}

/* ---- parsing envelopes ------------------------------------------------ */

Test(envelope_parse, fields)
{
    expect_env("{\"id\":\"m-1\",\"ts\":1700000000123,\"attempts\":7,"
               "\"body\":\"hi\"}",
               "hi", 2, 7, 1700000000123LL, "m-1");
    /* Absent fields take their defaults. */
    expect_env("{\"body\":\"hi\"}", "hi", 2, 0, -1, "");
    /* Other orders, whitespace around, negative and zero values. */
    expect_env(" \n{ \"attempts\" : 0 , \"body\" : \"\" , \"ts\" : -5 }\r\n",
               "", 0, 0, -5, "");
    expect_env("{\"attempts\":1000000,\"body\":\"x\"}", "x", 1, 1000000, -1,
               "");
}

Test(envelope_parse, unknown_fields_ignored)
{
    expect_env("{\"v\":2,\"body\":\"x\",\"trace\":{\"span\":[1,2,null]},"
               "\"attempts\":1,\"priority\":\"high\"}",
               "x", 1, 1, -1, "");
}

Test(envelope_parse, body_escapes)
{
    /* Lua cjson writes "/" as "\/"; any JSON escape must decode. */
    expect_env("{\"body\":\"a\\/b\\/c\",\"attempts\":2}", "a/b/c", 5, 2, -1,
               "");
    expect_env("{\"body\":\"q\\\"b\\\\n\\nt\\tu\\u00e9\\ud83d\\ude00\"}",
               "q\"b\\n\nt\tu\xc3\xa9\xf0\x9f\x98\x80", 15, 0, -1, "");
    /* Embedded NUL via \u0000. */
    expect_env("{\"body\":\"a\\u0000b\"}", "a\0b", 3, 0, -1, "");
}

Test(envelope_parse, body_b64)
{
    expect_env("{\"body_b64\":\"AGFi\",\"attempts\":1}", "\0ab", 3, 1, -1, "");
    expect_env("{\"body_b64\":\"\"}", "", 0, 0, -1, "");
    expect_env("{\"body_b64\":\"+/8=\"}", "\xfb\xff", 2, 0, -1, "");
}

/* Numbers as Lua cjson may hand them back: integral reals. */
Test(envelope_parse, integral_reals)
{
    expect_env("{\"body\":\"x\",\"attempts\":3.0}", "x", 1, 3, -1, "");
    expect_env("{\"body\":\"x\",\"attempts\":3e0}", "x", 1, 3, -1, "");
    expect_env("{\"body\":\"x\",\"attempts\":-0.0}", "x", 1, 0, -1, "");
    expect_env("{\"body\":\"x\",\"ts\":1.7e12}", "x", 1, 0, 1700000000000LL,
               "");
}

Test(envelope_parse, id_cut)
{
    char msg[256];
    char want[65];

    /* 70 bytes -> the first 64. */
    memset(want, 'a', 64);
    want[64] = '\0';
    snprintf(msg, sizeof msg, "{\"id\":\"%s0123456\",\"body\":\"x\"}", want);
    expect_env(msg, "x", 1, 0, -1, want);

    /* Exactly 64 bytes: kept whole. */
    snprintf(msg, sizeof msg, "{\"id\":\"%s\",\"body\":\"x\"}", want);
    expect_env(msg, "x", 1, 0, -1, want);

    /* 63 bytes then a 2-byte character: cut before it, not inside it. */
    want[63] = '\0';
    snprintf(msg, sizeof msg, "{\"id\":\"%s\xc3\xa9\",\"body\":\"x\"}", want);
    expect_env(msg, "x", 1, 0, -1, want);

    /* An escaped id is decoded. */
    expect_env("{\"id\":\"a\\/b\\u00e9\",\"body\":\"x\"}", "x", 1, 0, -1,
               "a/b\xc3\xa9");
}

/* ---- malformed -------------------------------------------------------- */

Test(envelope_malformed, bad_json)
{
    expect_malformed("{\"body\":\"x\"", "malformed envelope");
    expect_malformed("{\"body\":\"x\"", "line 1");
    expect_malformed("{\"body_b64\":\"eA==\"", "malformed");
    expect_malformed("  {\"body\":\"x\",}", "malformed");
    /* Nothing may follow the object (no JSON_DISABLE_EOF_CHECK). */
    expect_malformed("{\"body\":\"x\"} junk", "malformed");
    expect_malformed("{\"body\":\"x\"}{}", "malformed");
    /* A raw NUL or newline inside a string is not JSON. */
    expect_malformed_n("{\"body\":\"a\0b\"}", 14, "malformed");
    expect_malformed("{\"body\":\"a\nb\"}", "malformed");
    /* Invalid UTF-8 inside a JSON string. */
    expect_malformed("{\"body\":\"\xff\"}", "malformed");
}

Test(envelope_malformed, body_b64_not_string)
{
    expect_malformed("{\"body_b64\":7}", "body_b64 must be a string");
    expect_malformed("{\"body_b64\":null}", "body_b64");
}

/* Ours always carry a string body: {"body": <not a string>} is the caller's
 * own JSON format and is delivered whole. */
Test(envelope_raw, body_not_a_string_is_the_callers_json)
{
    static const char *const msgs[] = {"{\"body\":5}", "{\"body\":null}",
                                       "{\"body\":{\"a\":1}}",
                                       "{\"body\":[\"x\"]}"};
    for (size_t i = 0; i < sizeof msgs / sizeof msgs[0]; i++)
        expect_raw(msgs[i], strlen(msgs[i]));
}

/* A payload can start with '{' by chance (binary data, a timestamp byte):
 * unless it names an envelope field it is not a broken envelope. */
Test(envelope_raw, invalid_json_that_names_no_body_field)
{
    static const char bin[] = {'{', 0x01, (char)0xff, 'x', 0x00, '}', 'q'};
    expect_raw(bin, sizeof bin);
    expect_raw("{", 1);
    expect_raw("{body:\"x\"}", 11);
    expect_raw("{\"bodyx\": 1", 12);
}

Test(envelope_malformed, both_bodies)
{
    expect_malformed("{\"body\":\"x\",\"body_b64\":\"eA==\"}", "both");
    expect_malformed("{\"body_b64\":\"eA==\",\"body\":\"x\"}", "body_b64");
}

Test(envelope_malformed, bad_base64)
{
    expect_malformed("{\"body_b64\":\"abc\"}", "base64");
    expect_malformed("{\"body_b64\":\"ab!=\"}", "base64");
    expect_malformed("{\"body_b64\":\"a===\"}", "base64");
    expect_malformed("{\"body_b64\":\"eA==eA==\"}", "base64");
    expect_malformed("{\"body_b64\":\"eA==\\n\"}", "base64");
    expect_malformed("{\"body_b64\":\"-_8=\"}", "base64"); /* base64url */
}

Test(envelope_malformed, attempts)
{
    expect_malformed("{\"body\":\"x\",\"attempts\":-1}", "attempts");
    expect_malformed("{\"body\":\"x\",\"attempts\":\"3\"}", "attempts");
    expect_malformed("{\"body\":\"x\",\"attempts\":1000001}", "attempts");
    expect_malformed("{\"body\":\"x\",\"attempts\":3.5}", "attempts");
    expect_malformed("{\"body\":\"x\",\"attempts\":1e300}", "attempts");
    expect_malformed("{\"body\":\"x\",\"attempts\":true}", "attempts");
    expect_malformed("{\"body\":\"x\",\"attempts\":null}", "attempts");
    expect_malformed("{\"body\":\"x\",\"attempts\":9223372036854775807}",
                     "attempts");
    expect_malformed("{\"body\":\"x\",\"attempts\":\"3\"}", "integer");
}

Test(envelope_malformed, ts_and_id)
{
    expect_malformed("{\"body\":\"x\",\"ts\":\"1700000000000\"}", "ts");
    expect_malformed("{\"body\":\"x\",\"ts\":1.5}", "ts");
    expect_malformed("{\"body\":\"x\",\"ts\":{}}", "ts");
    expect_malformed("{\"body\":\"x\",\"id\":5}", "id must be a string");
    expect_malformed("{\"body\":\"x\",\"id\":null}", "id");
}

Test(envelope_malformed, err_buffer)
{
    static const char msg[] = "{\"body_b64\":5}";
    redq__envelope env;
    char buf[sizeof msg];
    char err[8];
    int rc;

    memset(err, 'x', sizeof err);
    rc = redq__envelope_parse(msg, strlen(msg), &env, buf, err, sizeof err);
    cr_assert_eq(rc, REDQ_EPROTOCOL);
    cr_assert_eq(err[7], '\0', "short err not terminated");
    cr_assert_eq(strncmp(err, "envelop", 7), 0, "err \"%s\"", err);

    rc = redq__envelope_parse(msg, strlen(msg), &env, buf, NULL, 0);
    cr_assert_eq(rc, REDQ_EPROTOCOL);
}

/* ---- build ------------------------------------------------------------ */

Test(envelope_build, exact_form)
{
    size_t n;
    char *js = redq__envelope_build("hi", 2, "abc", 1700000000000LL, 2, NULL,
                                    0, NULL, &n);

    cr_assert_not_null(js);
    cr_assert_str_eq(js, "{\"id\":\"abc\",\"ts\":1700000000000,\"attempts\":2,"
                         "\"body\":\"hi\"}");
    cr_assert_eq(n, strlen(js));
    free(js);
}

Test(envelope_build, omitted_fields_and_clamping)
{
    size_t n;
    char *js = redq__envelope_build("x", 1, NULL, -1, 0, NULL, 0, NULL, &n);

    cr_assert_not_null(js);
    cr_assert_str_eq(js, "{\"attempts\":0,\"body\":\"x\"}");
    free(js);

    js = redq__envelope_build(NULL, 0, "", 0, -3, NULL, 0, NULL, &n);
    cr_assert_not_null(js);
    cr_assert_str_eq(js, "{\"id\":\"\",\"ts\":0,\"attempts\":0,\"body\":\"\"}");
    free(js);

    js = redq__envelope_build("x", 1, NULL, -1, 2000000000, NULL, 0, NULL,
                              &n);
    cr_assert_not_null(js);
    cr_assert_str_eq(js, "{\"attempts\":1000000,\"body\":\"x\"}");
    expect_env(js, "x", 1, REDQ__MAX_ATTEMPTS, -1, "");
    free(js);
}

Test(envelope_build, dead_letter_form)
{
    size_t n;
    char *js = redq__envelope_build("x", 1, "abc", 1, 5, "handler: boom", 99,
                                    "jobs", &n);

    cr_assert_not_null(js);
    cr_assert_str_eq(js, "{\"id\":\"abc\",\"ts\":1,\"attempts\":5,"
                         "\"body\":\"x\",\"dead_reason\":\"handler: boom\","
                         "\"dead_ts\":99,\"queue\":\"jobs\"}");
    /* Still an envelope to the parser: a requeue delivers it as is. */
    expect_env(js, "x", 1, 5, 1, "abc");
    free(js);

    js = redq__envelope_build("x", 1, NULL, -1, 1, "r", 7, NULL, &n);
    cr_assert_not_null(js);
    cr_assert_str_eq(js, "{\"attempts\":1,\"body\":\"x\",\"dead_reason\":"
                         "\"r\",\"dead_ts\":7}");
    free(js);
}

Test(envelope_build, invalid_utf8_strings_replaced)
{
    size_t n;
    char *js = redq__envelope_build("x", 1, "i\xff", -1, 1, "bad \xc3(",
                                    7, "q\xed\xa0\x80", &n);

    cr_assert_not_null(js, "non-UTF-8 reason must not look like ENOMEM");
    cr_assert_str_eq(js, "{\"id\":\"i\xef\xbf\xbd\",\"attempts\":1,"
                         "\"body\":\"x\",\"dead_reason\":\"bad \xef\xbf\xbd(\","
                         "\"dead_ts\":7,\"queue\":\"q\xef\xbf\xbd\xef\xbf\xbd"
                         "\xef\xbf\xbd\"}");
    free(js);

    /* Above U+10FFFF, and an overlong form: one U+FFFD per byte. */
    js = redq__envelope_build("x", 1, NULL, -1, 1, "\xf4\x90\x80\x80", 7,
                              "\xe0\x80\x80", &n);
    cr_assert_not_null(js);
    cr_assert_str_eq(js, "{\"attempts\":1,\"body\":\"x\",\"dead_reason\":"
                         "\"\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\","
                         "\"dead_ts\":7,\"queue\":\"\xef\xbf\xbd\xef\xbf\xbd"
                         "\xef\xbf\xbd\"}");
    free(js);
}

Test(envelope_round_trip, utf8_text)
{
    static const char s[] = "h\xc3\xa9llo w\xc3\xb6rld \xe2\x9c\x93 "
                            "\xf0\x9f\x98\x80";

    round_trip(s, strlen(s), 0);
}

Test(envelope_round_trip, specials)
{
    static const char s[] = "a \"q\" \\ b\nc/d\te\r\b\f</script> \x01\x1f";
    size_t n;
    char *js;

    round_trip(s, strlen(s), 0);
    /* "/" is not escaped by us; Lua cjson would, and parse takes both. */
    js = redq__envelope_build("a/b", 3, NULL, -1, 0, NULL, 0, NULL, &n);
    cr_assert_str_eq(js, "{\"attempts\":0,\"body\":\"a/b\"}");
    free(js);
}

Test(envelope_round_trip, embedded_nul)
{
    round_trip("a\0b\0", 4, 0);
    round_trip("\0", 1, 0);
}

Test(envelope_round_trip, invalid_utf8_goes_b64)
{
    round_trip("\xff\xfe abc \xc3", 9, 1);
    round_trip("\xc0\x80", 2, 1);         /* overlong NUL */
    round_trip("\xed\xa0\x80", 3, 1);     /* a UTF-16 surrogate */
    round_trip("ok\xf4\x90\x80\x80", 6, 1); /* above U+10FFFF */
}

Test(envelope_round_trip, empty_body)
{
    round_trip("", 0, 0);
    round_trip(NULL, 0, 0);
}

/* Random bytes at lengths up to 300: every other length pure ASCII
 * (control characters included), which must go as text; the others with
 * high bytes too, almost never valid UTF-8, where either form is right as
 * long as the bytes come back. */
Test(envelope_round_trip, random_bytes)
{
    unsigned char buf[300] = {0};
    size_t len, i;
    unsigned x = 12345;

    for (len = 0; len <= sizeof buf; len += 7) {
        int ascii = (len / 7) % 2 == 0;

        for (i = 0; i < len; i++) {
            x = x * 1103515245u + 12345u;
            buf[i] = (unsigned char)(x >> 16);
            if (ascii)
                buf[i] &= 0x7f;
        }
        round_trip(buf, len, ascii ? 0 : -1);
    }
}

/* ---- base64 ----------------------------------------------------------- */

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
        n = redq__b64_encode(plain[i], strlen(plain[i]), out);
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
    n = redq__b64_encode(in, sizeof in, out);
    cr_assert_eq(n, sizeof out - 1);
    cr_assert_not_null(strchr(out, '+'));
    cr_assert_not_null(strchr(out, '/'));
    cr_assert_eq(redq__b64_decode(out, n, back), 256);
    cr_assert_eq(memcmp(in, back, sizeof in), 0);

    n = redq__b64_encode("\xfb\xff", 2, out);
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

/* ---- jansson's allocator ---------------------------------------------- */

/* An allocator whose blocks free() cannot release (they start 16 bytes into
 * a malloc'd block), as an embedding application's pool would be, and that
 * can fail its n-th allocation. */
static long alloc_count;
static long fail_at = -1;

static void *hdr_malloc(size_t n)
{
    unsigned char *p;

    if (alloc_count++ == fail_at)
        return NULL;
    p = malloc(n + 16);
    return p != NULL ? p + 16 : NULL;
}

static void hdr_free(void *p)
{
    if (p != NULL)
        free((unsigned char *)p - 16);
}

/* With someone else's allocator, build still returns memory for free(). */
Test(envelope_alloc, build_result_is_mallocd)
{
    size_t n;
    char *js;

    json_set_alloc_funcs(hdr_malloc, hdr_free);
    js = redq__envelope_build("x", 1, "i", 5, 1, "why", 6, "q", &n);
    cr_assert_not_null(js);
    cr_assert_gt(alloc_count, 0, "jansson did not use the allocator");
    cr_assert_str_eq(js, "{\"id\":\"i\",\"ts\":5,\"attempts\":1,\"body\":\"x\","
                         "\"dead_reason\":\"why\",\"dead_ts\":6,"
                         "\"queue\":\"q\"}");
    cr_assert_eq(n, strlen(js));
    free(js); /* crashes, or valgrind complains, if it was jansson's */
}

/* Fail each allocation in turn: build returns NULL or the right string;
 * parse returns the right envelope, REDQ_ENOMEM, or (jansson reports a
 * failed string-token allocation as a syntax error; see redq_private.h)
 * REDQ_EPROTOCOL with env left raw; nothing leaks (valgrind). The lexer's
 * first buffer failing must be REDQ_ENOMEM, not "malformed". */
Test(envelope_alloc, out_of_memory_sweep)
{
    static const char want[] = "{\"id\":\"i\",\"ts\":5,\"attempts\":1,"
                               "\"body_b64\":\"/w==\",\"dead_reason\":\"why\","
                               "\"dead_ts\":6,\"queue\":\"q\"}";
    static const char msg[] = "{\"id\":\"i\",\"ts\":5,\"attempts\":1,"
                              "\"body\":\"a\\u0000b\",\"extra\":[1,{\"k\":\"v\"}]}";
    int built = 0, parsed_ok = 0, enomem = 0, build_null = 0;

    json_set_alloc_funcs(hdr_malloc, hdr_free);
    for (fail_at = 0; fail_at < 200 && !(built && parsed_ok); fail_at++) {
        size_t n;
        redq__envelope env;
        char body[sizeof msg];
        char err[ERRLEN];
        char *js;
        int rc;

        alloc_count = 0;
        js = redq__envelope_build("\xff", 1, "i", 5, 1, "why", 6, "q", &n);
        if (js != NULL) {
            cr_assert_str_eq(js, want, "fail_at %ld: %s", fail_at, js);
            free(js);
            built = 1;
        } else {
            build_null++;
        }

        alloc_count = 0;
        rc = redq__envelope_parse(msg, strlen(msg), &env, body, err,
                                  sizeof err);
        if (fail_at == 0)
            cr_assert_eq(rc, REDQ_ENOMEM, "first allocation: rc %d (%s)", rc,
                         err);
        if (rc == 0) {
            cr_assert_eq(env.is_envelope, 1);
            cr_assert_eq(env.body_len, 3);
            cr_assert_eq(memcmp(env.body, "a\0b", 3), 0);
            cr_assert_str_eq(env.id, "i");
            parsed_ok = 1;
        } else {
            cr_assert(rc == REDQ_ENOMEM || rc == REDQ_EPROTOCOL,
                      "fail_at %ld: rc %d (%s)", fail_at, rc, err);
            if (rc == REDQ_ENOMEM) {
                cr_assert_not_null(strstr(err, "memory"), "err \"%s\"", err);
                enomem++;
            }
            cr_assert_eq(env.is_envelope, 0);
            cr_assert_eq(env.body, msg);
        }
    }
    cr_assert(built && parsed_ok, "never succeeded within 200 allocations");
    cr_assert_gt(build_null, 0, "no allocation failure reached build");
    cr_assert_gt(enomem, 1, "only %d REDQ_ENOMEM", enomem);
}
