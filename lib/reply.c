/*
 * Arena-built replies for connections that receive many small elements.
 *
 * hiredis's default reader makes two allocations per element of an array
 * reply (the redisReply and its string) and frees them one by one after the
 * callback. A `BLMPOP ... COUNT 256` reply is 256 elements: for the consumer
 * that was about 40% of its instructions per message (callgrind).
 *
 * These reader functions build the very same redisReply structures, so all
 * code that reads replies is unchanged, but take the memory from a bump
 * arena that belongs to the connection. hiredis parses one reply at a time
 * and frees it (root only) before parsing the next, so freeing the root
 * simply rewinds the arena. The arena keeps its largest block up to
 * REDQ__ARENA_RETAIN bytes, so steady state allocates nothing; after a reply
 * bigger than that the memory goes back to malloc, so that one 500 MB reply
 * does not stay resident for the connection's life.
 *
 * The server says how many elements an aggregate has before sending them, and
 * hiredis asks for the element pointer array at once: "*2147483647\r\n" alone
 * would be a 16 GiB request. Aggregates above REDQ__MAX_REPLY_ELEMENTS are
 * refused instead (the reader fails, the connection drops, and
 * redq__arena_error() says why). Everything else is allocated as its bytes
 * arrive, so it is bounded by what the server actually sent.
 *
 * Each node is preceded by a pointer to its arena, because hiredis's
 * freeObject() gets the object and nothing else.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "redq_private.h"

typedef struct block {
    struct block *next;
    size_t cap, used;
    /* data follows, max_align_t aligned */
} block;

struct redq__arena {
    block *head; /* current block; older (smaller) ones follow */
    char err[128]; /* why the last reply was refused, "" if it was not */
};

/* A node: arena pointer, then the redisReply hiredis and we look at. */
typedef struct node {
    redq__arena *arena;
    redisReply r;
} node;

#define ALIGN(n) (((n) + 15u) & ~(size_t)15u)
#define BLOCK_HDR ALIGN(sizeof(block))

redq__arena *redq__arena_new(void)
{
    return calloc(1, sizeof(redq__arena));
}

static void free_blocks(block *b)
{
    while (b != NULL) {
        block *next = b->next;
        free(b);
        b = next;
    }
}

void redq__arena_free(redq__arena *a)
{
    if (a == NULL)
        return;
    free_blocks(a->head);
    free(a);
}

static void *arena_alloc(redq__arena *a, size_t n)
{
    block *b = a->head;
    n = ALIGN(n);
    if (b == NULL || b->cap - b->used < n) {
        /* Grow geometrically so a big reply needs few blocks, and the next
         * reply of that size fits in one after the rewind. */
        size_t cap = b != NULL ? b->cap * 2 : 16384;
        while (cap < n)
            cap *= 2;
        b = malloc(BLOCK_HDR + cap);
        if (b == NULL)
            return NULL;
        b->cap = cap;
        b->used = 0;
        b->next = a->head;
        a->head = b;
    }
    b->used += n;
    return (char *)b + BLOCK_HDR + b->used - n;
}

/* The reply is done with: keep only the newest (largest) block, empty, if
 * it is a modest size; after a large reply give it all back. */
static void arena_rewind(redq__arena *a)
{
    if (a->head == NULL)
        return;
    if (a->head->cap > REDQ__ARENA_RETAIN) {
        free_blocks(a->head);
        a->head = NULL;
        return;
    }
    free_blocks(a->head->next);
    a->head->next = NULL;
    a->head->used = 0;
}

size_t redq__arena_retained(const redq__arena *a)
{
    const block *b;
    size_t n = 0;
    for (b = a->head; b != NULL; b = b->next)
        n += b->cap;
    return n;
}

const char *redq__arena_error(const redq__arena *a)
{
    return a->err;
}

static redisReply *new_node(const redisReadTask *task, int type)
{
    redq__arena *a = task->privdata;
    node *nd = arena_alloc(a, sizeof *nd);
    if (nd == NULL)
        return NULL;
    memset(nd, 0, sizeof *nd);
    nd->arena = a;
    nd->r.type = type;
    if (task->parent != NULL) {
        redisReply *parent = task->parent->obj;
        parent->element[task->idx] = &nd->r;
    }
    return &nd->r;
}

static void *create_string(const redisReadTask *task, char *str, size_t len)
{
    redisReply *r = new_node(task, task->type);
    char *copy;
    if (r == NULL)
        return NULL;
    copy = arena_alloc(((node *)(void *)((char *)r - offsetof(node, r)))->arena,
                       len + 1);
    if (copy == NULL)
        return NULL;
    memcpy(copy, str, len);
    copy[len] = '\0';
    r->str = copy;
    r->len = len;
    return r;
}

#if HIREDIS_MAJOR >= 1
static void *create_array(const redisReadTask *task, size_t n)
#else
static void *create_array(const redisReadTask *task, int n)
#endif
{
    redq__arena *a = task->privdata;
    redisReply *r;
    if ((size_t)n > REDQ__MAX_REPLY_ELEMENTS) {
        /* hiredis reports a NULL here as "Out of memory": leave the real
         * reason where the connection will look for it. */
        snprintf(a->err, sizeof a->err,
                 "reply announces %lld elements (limit %lu); refusing it",
                 (long long)n, (unsigned long)REDQ__MAX_REPLY_ELEMENTS);
        return NULL;
    }
    r = new_node(task, task->type);
    if (r == NULL)
        return NULL;
    if (n > 0) {
        r->element = arena_alloc(((node *)(void *)((char *)r -
                                                   offsetof(node, r)))->arena,
                                 (size_t)n * sizeof(redisReply *));
        if (r->element == NULL)
            return NULL;
    }
    r->elements = (size_t)n;
    return r;
}

static void *create_integer(const redisReadTask *task, long long v)
{
    redisReply *r = new_node(task, REDIS_REPLY_INTEGER);
    if (r != NULL)
        r->integer = v;
    return r;
}

static void *create_nil(const redisReadTask *task)
{
    return new_node(task, REDIS_REPLY_NIL);
}

#if HIREDIS_MAJOR >= 1
/* RESP3 types: redq speaks RESP2, but keep the table complete. */
static void *create_double(const redisReadTask *task, double d, char *str,
                           size_t len)
{
    redisReply *r = create_string(task, str, len);
    if (r != NULL) {
        r->type = REDIS_REPLY_DOUBLE;
        r->dval = d;
    }
    return r;
}

static void *create_bool(const redisReadTask *task, int b)
{
    redisReply *r = new_node(task, REDIS_REPLY_BOOL);
    if (r != NULL)
        r->integer = b != 0;
    return r;
}
#endif

static void free_object(void *obj)
{
    /* hiredis frees roots only: rewind the whole reply at once. */
    node *nd = (node *)(void *)((char *)obj - offsetof(node, r));
    arena_rewind(nd->arena);
}

static redisReplyObjectFunctions arena_fns = {
    .createString = create_string,
    .createArray = create_array,
    .createInteger = create_integer,
#if HIREDIS_MAJOR >= 1
    .createDouble = create_double,
    .createNil = create_nil,
    .createBool = create_bool,
#else
    .createNil = create_nil,
#endif
    .freeObject = free_object,
};

void redq__arena_attach(redq__arena *a, void *reader)
{
    redisReader *r = reader;
    a->err[0] = '\0';
    r->fn = &arena_fns;
    r->privdata = a;
}
