/*
 * libFuzzer target: the reply arena (lib/reply.c) against hiredis's own
 * reply builder.
 *
 * The input is fed, in the same pieces, to two hiredis readers: one with an
 * arena attached (redq__arena_attach), one plain. After each piece both are
 * drained with redisReaderGetReply, and at every step they must agree: the
 * same return code, the same error (err and errstr), and reply trees that
 * are the same shape (type, integer, len and the str bytes, element count,
 * element by element). Each reply is freed the way hiredis frees it, by its
 * reader's freeObject, so the arena rewinds between replies as it does on a
 * connection. ASan checks that no reply reads or writes outside its memory.
 *
 * The first byte picks the piece size (0: all at once). Replies announcing
 * more than MAX_ELEMENTS elements are not fed: hiredis 0.14 would calloc
 * the element array before any element arrives (16 GiB for
 * "*2147483647\r\n"), which libFuzzer's malloc limit reports as a crash in
 * the plain reader, not in the code under test. Any bound the arena puts
 * on its own memory is above that.
 */
#include <string.h>

#include <hiredis/hiredis.h>

#include "fuzz_util.h"
#include "redq_private.h"

#define MAX_ELEMENTS 4096

/* What hiredis 0.14's reader does with the line after '*': readLongLong
 * (wrapping), then the element count as an int. Returns 1 when some '*'
 * in the input may announce more than MAX_ELEMENTS elements. Looser than
 * the reader (any '*', in a bulk string too): it only skips inputs. */
static int too_many_elements(const uint8_t *d, size_t n)
{
    size_t i, j;

    for (i = 0; i < n; i++) {
        unsigned long long v = 0;
        int neg = 0;
        long long count;

        if (d[i] != '*')
            continue;
        j = i + 1;
        if (j < n && (d[j] == '-' || d[j] == '+'))
            neg = d[j++] == '-';
        for (; j < n && d[j] != '\r'; j++) {
            if (d[j] < '0' || d[j] > '9') {
                v = (unsigned long long)-1; /* readLongLong: -1 */
                neg = 0;
                break;
            }
            v = v * 10 + (d[j] - '0');
        }
        count = (long long)(neg ? 0 - v : v);
        if ((int)(long)count > MAX_ELEMENTS)
            return 1;
    }
    return 0;
}

static void same_tree(const redisReply *a, const redisReply *p, int depth)
{
    size_t i;

    FUZZ_CHECK(a != NULL && p != NULL, "a NULL element (depth %d)", depth);
    FUZZ_CHECK(a->type == p->type, "type %d / %d (depth %d)", a->type,
               p->type, depth);
    FUZZ_CHECK(a->integer == p->integer, "integer %lld / %lld", a->integer,
               p->integer);
    FUZZ_CHECK(a->len == p->len, "len %zu / %zu", (size_t)a->len,
               (size_t)p->len);
    FUZZ_CHECK((a->str == NULL) == (p->str == NULL), "str NULL in one");
    if (a->str != NULL) {
        FUZZ_CHECK(memcmp(a->str, p->str, (size_t)a->len) == 0,
                   "str bytes differ");
        FUZZ_CHECK(a->str[a->len] == '\0', "arena str not NUL-terminated");
    }
    FUZZ_CHECK(a->elements == p->elements, "elements %zu / %zu", a->elements,
               p->elements);
    FUZZ_CHECK((a->element == NULL) == (p->element == NULL),
               "element array NULL in one");
    if (a->element == NULL)
        return; /* hiredis 0.14: "*-2" gives elements (size_t)-2, no array */
    for (i = 0; i < a->elements; i++)
        same_tree(a->element[i], p->element[i], depth + 1);
}

static void same_error(const redisReader *a, const redisReader *p)
{
    FUZZ_CHECK(a->err == p->err, "err %d / %d", a->err, p->err);
    FUZZ_CHECK(strcmp(a->errstr, p->errstr) == 0, "errstr \"%s\" / \"%s\"",
               a->errstr, p->errstr);
}

/* Take every reply the readers have; 0 once they have none or failed. */
static int drain(redisReader *ar, redisReader *pr)
{
    for (;;) {
        void *a = NULL, *p = NULL;
        int rca = redisReaderGetReply(ar, &a);
        int rcp = redisReaderGetReply(pr, &p);

        FUZZ_CHECK(rca == rcp, "GetReply %d / %d", rca, rcp);
        same_error(ar, pr);
        FUZZ_CHECK((a == NULL) == (p == NULL), "a reply in one reader only");
        if (a == NULL)
            return rca == REDIS_OK;
        same_tree(a, p, 0);
        ar->fn->freeObject(a);
        pr->fn->freeObject(p);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    redq__arena *arena;
    redisReader *ar, *pr;
    size_t piece, off;

    if (size == 0 || too_many_elements(data + 1, size - 1))
        return 0;
    piece = data[0] % 17; /* 0: all at once */
    data++;
    size--;
    if (piece == 0)
        piece = size > 0 ? size : 1;

    arena = redq__arena_new();
    ar = redisReaderCreate();
    pr = redisReaderCreate();
    FUZZ_CHECK(arena != NULL && ar != NULL && pr != NULL, "out of memory");
    redq__arena_attach(arena, ar);

    for (off = 0; off < size; off += piece) {
        size_t n = size - off < piece ? size - off : piece;
        int rca = redisReaderFeed(ar, (const char *)data + off, n);
        int rcp = redisReaderFeed(pr, (const char *)data + off, n);

        FUZZ_CHECK(rca == rcp, "Feed %d / %d", rca, rcp);
        if (!drain(ar, pr))
            break; /* a protocol error: both readers are done */
    }
    /* The reader frees a half-built reply with its own freeObject. */
    redisReaderFree(ar);
    redisReaderFree(pr);
    redq__arena_free(arena);
    return 0;
}
