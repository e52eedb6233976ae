/*
 * The reply arena (lib/reply.c) driven through a hiredis reader with bytes
 * a hostile or broken server could send, and the version parser of the
 * handshake (lib/conn.c).
 */
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include <criterion/criterion.h>
#include <hiredis/hiredis.h>

#include "redq_private.h"

static redisReader *reader_with_arena(redq__arena **a)
{
    redisReader *r = redisReaderCreate();
    cr_assert_not_null(r);
    *a = redq__arena_new();
    cr_assert_not_null(*a);
    redq__arena_attach(*a, r);
    return r;
}

Test(arena, absurd_aggregate_size_is_refused_without_allocating)
{
    static const char *const headers[] = {
        "*2147483647\r\n", "*4294967295\r\n", "*1048577\r\n",
        "*2\r\n$1\r\na\r\n*2147483647\r\n"};
    for (size_t i = 0; i < sizeof headers / sizeof headers[0]; i++) {
        redq__arena *a;
        redisReader *r = reader_with_arena(&a);
        void *reply = NULL;
        redisReaderFeed(r, headers[i], strlen(headers[i]));
        cr_assert_eq(redisReaderGetReply(r, &reply), REDIS_ERR,
                     "%s was accepted", headers[i]);
        cr_assert_null(reply);
        /* hiredis 0.14.1 itself refuses counts above INT_MAX as a
         * protocol error; the arena refuses the rest with a reason. */
        if (r->err != REDIS_ERR_PROTOCOL) {
            cr_assert_str_neq(redq__arena_error(a), "",
                              "no reason recorded for %s", headers[i]);
            cr_assert_not_null(strstr(redq__arena_error(a), "elements"),
                               "reason \"%s\"", redq__arena_error(a));
        }
        /* Nothing near the announced size was asked for. */
        cr_assert_leq(redq__arena_retained(a), (size_t)1 << 20);
        redisReaderFree(r);
        redq__arena_free(a);
    }
}

Test(arena, limit_itself_is_accepted)
{
    /* An announced size at the limit is fine (its elements never come:
     * the reader just waits for them). */
    redq__arena *a;
    redisReader *r = reader_with_arena(&a);
    char hdr[32];
    void *reply = NULL;
    snprintf(hdr, sizeof hdr, "*%zu\r\n", REDQ__MAX_REPLY_ELEMENTS);
    redisReaderFeed(r, hdr, strlen(hdr));
    cr_assert_eq(redisReaderGetReply(r, &reply), REDIS_OK);
    cr_assert_null(reply); /* incomplete */
    cr_assert_str_eq(redq__arena_error(a), "");
    redisReaderFree(r);
    redq__arena_free(a);
}

static char *big_array_reply(size_t n, size_t each, size_t *len)
{
    size_t cap = 32 + n * (each + 32);
    char *buf = malloc(cap);
    size_t off;
    cr_assert_not_null(buf);
    off = (size_t)snprintf(buf, cap, "*%zu\r\n", n);
    for (size_t i = 0; i < n; i++) {
        off += (size_t)snprintf(buf + off, cap - off, "$%zu\r\n", each);
        memset(buf + off, 'a' + (int)(i % 26), each);
        off += each;
        memcpy(buf + off, "\r\n", 2);
        off += 2;
    }
    *len = off;
    return buf;
}

Test(arena, memory_is_given_back_after_a_large_reply)
{
    redq__arena *a;
    redisReader *r = reader_with_arena(&a);
    size_t len;
    char *bytes = big_array_reply(64, 100000, &len); /* ~6.4 MB */
    redisReply *reply = NULL;

    redisReaderFeed(r, bytes, len);
    cr_assert_eq(redisReaderGetReply(r, (void **)&reply), REDIS_OK);
    cr_assert_not_null(reply);
    cr_assert_eq(reply->type, REDIS_REPLY_ARRAY);
    cr_assert_eq(reply->elements, 64);
    for (size_t i = 0; i < 64; i++) {
        cr_assert_eq(reply->element[i]->len, 100000);
        cr_assert_eq(reply->element[i]->str[99999], 'a' + (int)(i % 26));
    }
    cr_assert_geq(redq__arena_retained(a), (size_t)64 * 100000);
    r->fn->freeObject(reply); /* what hiredis does after the callback */
    cr_assert_leq(redq__arena_retained(a), REDQ__ARENA_RETAIN,
                  "%zu bytes kept after the reply was freed",
                  redq__arena_retained(a));

    /* And the arena still works, keeping a small block for the next. */
    redisReaderFeed(r, ":42\r\n", 5);
    cr_assert_eq(redisReaderGetReply(r, (void **)&reply), REDIS_OK);
    cr_assert_eq(reply->type, REDIS_REPLY_INTEGER);
    cr_assert_eq(reply->integer, 42);
    r->fn->freeObject(reply);
    cr_assert_gt(redq__arena_retained(a), 0);
    cr_assert_leq(redq__arena_retained(a), REDQ__ARENA_RETAIN);
    free(bytes);
    redisReaderFree(r);
    redq__arena_free(a);
}

Test(arena, a_typical_pop_keeps_its_block)
{
    /* 1024 x 200 B: steady state must not go back to malloc each time. */
    redq__arena *a;
    redisReader *r = reader_with_arena(&a);
    size_t len, kept = 0;
    char *bytes = big_array_reply(1024, 200, &len);
    for (int round = 0; round < 5; round++) {
        redisReply *reply = NULL;
        redisReaderFeed(r, bytes, len);
        cr_assert_eq(redisReaderGetReply(r, (void **)&reply), REDIS_OK);
        cr_assert_eq(reply->elements, 1024);
        r->fn->freeObject(reply);
        if (round > 2) /* warmed up: the same block every time */
            cr_assert_eq(redq__arena_retained(a), kept);
        kept = redq__arena_retained(a);
        cr_assert_gt(kept, 0);
    }
    free(bytes);
    redisReaderFree(r);
    redq__arena_free(a);
}

Test(version, parses_and_never_overflows)
{
    cr_assert_eq(redq__parse_version("7.0.15"), 70015);
    cr_assert_eq(redq__parse_version("6.2.0\r\nredis_git_sha1:0"), 60200);
    cr_assert_eq(redq__parse_version("5.0"), 50000);
    cr_assert_eq(redq__parse_version("7.2.rc1"), 70200);
    cr_assert_eq(redq__parse_version("255.255.255"), 2559999);
    cr_assert_eq(redq__parse_version("9999.1.1"), 99990101);
    /* Does not fit: unknown, not undefined behaviour (UBSan). */
    cr_assert_eq(redq__parse_version("214749.0"), 0);
    cr_assert_eq(redq__parse_version("214749.0.0"), 0);
    cr_assert_eq(redq__parse_version("2147483647.2147483647.2147483647"), 0);
    cr_assert_eq(redq__parse_version("99999999999999999999999.1.1"), 0);
    cr_assert_eq(redq__parse_version("10000.0.0"), 0);
    /* Not versions. */
    cr_assert_eq(redq__parse_version(""), 0);
    cr_assert_eq(redq__parse_version("7"), 0);
    cr_assert_eq(redq__parse_version("abc"), 0);
    cr_assert_eq(redq__parse_version(".1.2"), 0);
    cr_assert_eq(redq__parse_version("-7.0.1"), 0);
    cr_assert_eq(redq__parse_version(NULL), 0);
    /* Ordering holds with clamping. */
    cr_assert_gt(redq__parse_version("7.100.0"), redq__parse_version("7.99.0") - 1);
    cr_assert_lt(redq__parse_version("7.100.0"), redq__parse_version("8.0.0"));
}
