/*
 * Frames (lib/frame.c): redq's metadata in front of a payload that must come
 * back byte for byte, whatever it looks like.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redq_private.h"

static char *build(const void *body, size_t blen, const char *id, int a,
                   long long ts, const char *reason, long long dts,
                   const char *q, size_t *len)
{
    char *buf = malloc(redq__frame_size(blen, id, reason, q));
    cr_assert_not_null(buf);
    *len = redq__frame_build(buf, body, blen, id, a, ts, reason, dts, q);
    cr_assert_leq(*len, redq__frame_size(blen, id, reason, q));
    return buf;
}

Test(frame, round_trip_keeps_every_byte)
{
    /* Bodies that look like every format redq ever used, and binary. */
    static const char *const bodies[] = {
        "{\"to\":\"a@b.c\",\"subject\":\"hi\",\"body\":\"hello\"}",
        "{\"id\":42,\"body\":\"x\"}",
        "{\"body_b64\":\"not base64!\"}",
        "RQ1 a=3 id=x\nnested frame as a payload",
        "\n\n\nRQ1",
        "",
    };
    size_t i;
    for (i = 0; i < sizeof bodies / sizeof bodies[0]; i++) {
        size_t len, blen = strlen(bodies[i]);
        redq__frame f;
        char err[128];
        char *s = build(bodies[i], blen, "abc-123", 4, 1764000000000LL,
                        "nack: boom\nline 2 100%", 1764000000999LL,
                        "q with space", &len);
        cr_assert_eq(redq__frame_parse(s, len, &f, err, sizeof err), 0, "%s",
                     err);
        cr_assert_eq(f.body_len, blen);
        cr_assert_eq(memcmp(f.body, bodies[i], blen), 0);
        cr_assert_str_eq(f.id, "abc-123");
        cr_assert_eq(f.attempts, 4);
        cr_assert_eq(f.ts_ms, 1764000000000LL);
        cr_assert_eq(f.dead_ts_ms, 1764000000999LL);
        {
            char r[256];
            redq__pct_decode(f.reason, f.reason_len, r);
            cr_assert_str_eq(r, "nack: boom\nline 2 100%");
            redq__pct_decode(f.queue, f.queue_len, r);
            cr_assert_str_eq(r, "q with space");
        }
        /* The header is one line: no LF before the body. */
        cr_assert_eq((const char *)memchr(s, '\n', len) + 1, f.body);
        free(s);
    }
}

Test(frame, binary_body_with_nul_and_high_bytes)
{
    unsigned char body[256];
    size_t i, len;
    redq__frame f;
    char *s;
    for (i = 0; i < sizeof body; i++)
        body[i] = (unsigned char)(255 - i);
    s = build(body, sizeof body, NULL, 0, -1, NULL, -1, NULL, &len);
    cr_assert_eq(redq__frame_parse(s, len, &f, NULL, 0), 0);
    cr_assert_eq(f.body_len, sizeof body);
    cr_assert_eq(memcmp(f.body, body, sizeof body), 0);
    cr_assert_str_eq(f.id, "");
    cr_assert_eq(f.ts_ms, -1);
    cr_assert_null(f.reason);
    free(s);
}

Test(frame, minimal_and_unknown_fields)
{
    redq__frame f;
    const char *s = "RQ1 x=1 a=2 future=%41b\npayload";
    cr_assert_eq(redq__frame_parse(s, strlen(s), &f, NULL, 0), 0);
    cr_assert_eq(f.attempts, 2);
    cr_assert_eq(f.body_len, 7);
    s = "RQ1\n";
    cr_assert_eq(redq__frame_parse(s, strlen(s), &f, NULL, 0), 0);
    cr_assert_eq(f.body_len, 0);
}

Test(frame, malformed_are_refused_with_a_reason)
{
    static const char *const bad[] = {
        "",
        "RQ",
        "RQ2 a=1\nx",
        "rq1 a=1\nx",
        "RQ1 a=1",             /* no end of header */
        "RQ1  a=1\nx",         /* two spaces */
        "RQ1 a\nx",            /* no '=' */
        "RQ1 =1\nx",           /* no name */
        "RQ1 a=\nx",           /* empty value */
        "RQ1 a=x\nx",
        "RQ1 a=1000001\nx",
        "RQ1 a=-1\nx",
        "RQ1 a=1 a=2\nx",      /* twice */
        "RQ1 ts=1234567890123456789\nx", /* 19 digits */
        "RQ1 dr=%4\nx",        /* cut escape */
        "RQ1 dr=%zz\nx",
        "RQ1 dr=a\tb\nx",      /* control byte */
        "RQ1 dr=\xc3\xa9\nx",  /* must be escaped */
    };
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        redq__frame f;
        char err[128];
        cr_assert_eq(redq__frame_parse(bad[i], strlen(bad[i]), &f, err,
                                       sizeof err),
                     REDQ_EPROTOCOL, "accepted: %s", bad[i]);
        cr_assert_eq(strncmp(err, "malformed frame: ", 17), 0, "%s", err);
    }
}

Test(frame, header_limit)
{
    size_t n = REDQ__FRAME_MAX_HEADER + 100, i;
    char *s = malloc(n);
    redq__frame f;
    memcpy(s, "RQ1 dr=", 7);
    for (i = 7; i < n; i++)
        s[i] = 'x';
    s[n - 1] = '\n';
    cr_assert_eq(redq__frame_parse(s, n, &f, NULL, 0), REDQ_EPROTOCOL);
    free(s);
}

Test(frame, attempts_and_id_are_clamped_by_build)
{
    char id[100];
    size_t len;
    redq__frame f;
    char *s;
    memset(id, 'i', 99);
    id[99] = '\0';
    s = build("b", 1, id, REDQ__MAX_ATTEMPTS + 5, -1, NULL, -1, NULL, &len);
    cr_assert_eq(redq__frame_parse(s, len, &f, NULL, 0), 0);
    cr_assert_eq(f.attempts, REDQ__MAX_ATTEMPTS);
    cr_assert_eq(strlen(f.id), 64);
    free(s);
}

/* ---- ids and a frames queue's ready frames ------------------------------ */

Test(ids, instance_ids_are_16_lowercase_hex_and_differ)
{
    char a[REDQ__INSTANCE_ID_LEN + 1], b[REDQ__INSTANCE_ID_LEN + 1];
    size_t i;
    redq__instance_id(a, (uintptr_t)&a);
    redq__instance_id(b, (uintptr_t)&a); /* same salt: random must differ */
    cr_assert_eq(strlen(a), REDQ__INSTANCE_ID_LEN);
    for (i = 0; i < REDQ__INSTANCE_ID_LEN; i++)
        cr_assert(strchr("0123456789abcdef", a[i]) != NULL, "%s", a);
    cr_assert_str_neq(a, b);
}

Test(ids, message_ids_are_prefix_dash_decimal)
{
    char out[REDQ__MSG_ID_MAX];
    cr_assert_eq(redq__msg_id(out, "0123456789abcdef", 1), 18);
    cr_assert_str_eq(out, "0123456789abcdef-1");
    /* The largest number fits the documented room exactly. */
    cr_assert_eq(redq__msg_id(out, "0123456789abcdef", UINT64_MAX),
                 REDQ__MSG_ID_MAX - 1);
    cr_assert_str_eq(out, "0123456789abcdef-18446744073709551615");
    /* A longer prefix is cut to an instance id's length. */
    redq__msg_id(out, "0123456789abcdefXYZ", 42);
    cr_assert_str_eq(out, "0123456789abcdef-42");
}

Test(ids, ready_header_parses_back_with_the_payload_verbatim)
{
    static const char body[] = "RQ1 id=x a=3\nhello"; /* itself a frame */
    char buf[REDQ__READY_HEADER_MAX + sizeof body], id[REDQ__MSG_ID_MAX];
    size_t idl = redq__msg_id(id, "00000000000000ff", 7), n;
    redq__frame f;
    char err[128];

    n = redq__ready_header(buf, id, idl, 1764000000123LL);
    cr_assert_leq(n, REDQ__READY_HEADER_MAX);
    cr_assert_eq(memcmp(buf, "RQ1 id=00000000000000ff-7 ts=1764000000123\n", n),
                 0, "%.*s", (int)n, buf);
    memcpy(buf + n, body, sizeof body - 1);
    cr_assert_eq(redq__frame_parse(buf, n + sizeof body - 1, &f, err,
                                   sizeof err),
                 0, "%s", err);
    cr_assert_str_eq(f.id, id);
    cr_assert_eq(f.ts_ms, 1764000000123LL);
    cr_assert_eq(f.attempts, 0); /* absent: no delivery made yet */
    cr_assert_eq(f.body_len, sizeof body - 1);
    cr_assert_eq(memcmp(f.body, body, f.body_len), 0);
    /* Without a time (ts < 0) the field is left out. */
    n = redq__ready_header(buf, id, idl, -1);
    cr_assert_eq(memcmp(buf, "RQ1 id=00000000000000ff-7\n", n), 0);
}

Test(ids, format_names)
{
    cr_assert_str_eq(redq__format_name(REDQ_FORMAT_PLAIN), "plain");
    cr_assert_str_eq(redq__format_name(REDQ_FORMAT_FRAMES), "frames");
    cr_assert_str_eq(redq__format_name(-1), "unknown");
}

Test(ids, format_cache_makes_one_entry_per_queue)
{
    redq__qfmts t = {0};
    redq__qfmt *a, *b;
    char name[40];
    int i, owner;
    a = redq__qfmt_get(&t, "jobs", 4, &owner);
    cr_assert_not_null(a);
    cr_assert_eq(a->format, -1);
    cr_assert_eq(a->owner, &owner);
    cr_assert_str_eq(a->meta, "{jobs}/meta");
    cr_assert_eq(a->metalen, strlen("{jobs}/meta"));
    /* Many queues (the table grows), then the first is still the same. */
    for (i = 0; i < 100; i++) {
        snprintf(name, sizeof name, "q%d", i);
        cr_assert_not_null(redq__qfmt_get(&t, name, strlen(name), &owner));
    }
    a->format = REDQ_FORMAT_FRAMES;
    b = redq__qfmt_get(&t, "jobs", 4, &owner);
    cr_assert_eq(a, b);
    cr_assert_eq(b->format, REDQ_FORMAT_FRAMES);
    cr_assert_neq(redq__qfmt_get(&t, "job", 3, &owner), a);
    cr_assert_eq(t.n, 102);
    redq__qfmts_free(&t);
}
