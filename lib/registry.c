/*
 * The queue registry (redq.h, "Admin"): producers and consumers record
 * the queues they use in the sorted set "redq:queues" (member the name,
 * score the time in ms), so an admin tool finds queues without KEYS.
 *
 * It must cost the hot path nothing that matters: a handle calls
 * redq__registry_touch() once per batch (producer) or timer tick
 * (consumer), which is one hash lookup; at most once a minute per queue a
 * ZADD is pipelined on the handle's own connection and its reply ignored,
 * except that an error (a least-privilege user without ZADD) is logged once
 * and the handle carries on.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "redq_private.h"

#define REFRESH_US (60u * 1000000u)

typedef struct redq__registry reg;

typedef struct regent {
    struct regent *next;
    reg *owner;
    uint32_t hash;
    size_t len;
    uint64_t at_us; /* when its last ZADD was sent; 0: never */
    char *meta;     /* the queue's meta hash key, made on first count */
    size_t metalen;
    char name[];
} regent;

struct redq__registry {
    const redq__logger *log;
    regent **b;
    size_t nb, n;
    int warned;
};

redq__registry *redq__registry_new(const redq__logger *log)
{
    redq__registry *r = calloc(1, sizeof *r);
    if (r == NULL)
        return NULL;
    r->log = log;
    r->nb = 64;
    r->b = calloc(r->nb, sizeof *r->b);
    if (r->b == NULL) {
        free(r);
        return NULL;
    }
    return r;
}

void redq__registry_free(redq__registry *r)
{
    size_t i;
    if (r == NULL)
        return;
    for (i = 0; i < r->nb; i++)
        while (r->b[i] != NULL) {
            regent *e = r->b[i];
            r->b[i] = e->next;
            free(e->meta);
            free(e);
        }
    free(r->b);
    free(r);
}

static uint32_t fnv1a(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    size_t i;
    for (i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static void grow(redq__registry *r)
{
    size_t nb = 2 * r->nb, i;
    regent **b = calloc(nb, sizeof *b);
    if (b == NULL)
        return; /* longer chains, still correct */
    for (i = 0; i < r->nb; i++)
        while (r->b[i] != NULL) {
            regent *e = r->b[i];
            r->b[i] = e->next;
            e->next = b[e->hash & (nb - 1)];
            b[e->hash & (nb - 1)] = e;
        }
    free(r->b);
    r->b = b;
    r->nb = nb;
}

/* The reply of a ZADD: only an error matters. A passing server state
 * (LOADING, BUSY..., and OOM: a full server refuses the ZADD, not the
 * handle's work) is retried at the next touch, silently; anything else
 * (NOPERM for a least-privilege user) is logged once per handle. A NULL
 * reply (connection gone, or the handle closing) touches nothing: the
 * registry may be freed right after its connection. */
/* The answer to a ZADD (NULL: connection lost, nothing to learn). */
static void zadd_done(regent *e, const redisReply *rep)
{
    redq__registry *r;
    if (rep == NULL || rep->type != REDIS_REPLY_ERROR)
        return;
    r = e->owner;
    if (redq__err_is_transient(rep->str, (size_t)rep->len) ||
        (rep->len >= 3 && memcmp(rep->str, "OOM", 3) == 0)) {
        e->at_us = 0;
        return;
    }
    if (r->warned)
        return;
    r->warned = 1;
    redq__log(r->log, REDQ_LOG_WARN,
              redq__err_from_reply(rep->str, (size_t)rep->len),
              "recording queues in the registry (" REDQ__REGISTRY_KEY
              ", for admin tools) failed; carrying on without: %s",
              rep->str);
}

static void on_zadd(redq__conn *c, void *reply, void *arg)
{
    (void)c;
    zadd_done(arg, reply);
}

static void on_zadd_via(void *reply, void *arg)
{
    zadd_done(arg, reply);
}

static regent *lookup(redq__registry *r, const char *q, size_t len)
{
    uint32_t h = fnv1a(q, len);
    regent *e;
    for (e = r->b[h & (r->nb - 1)]; e != NULL; e = e->next)
        if (e->hash == h && e->len == len && memcmp(e->name, q, len) == 0)
            return e;
    e = malloc(sizeof *e + len + 1);
    if (e == NULL)
        return NULL;
    e->owner = r;
    e->hash = h;
    e->len = len;
    e->at_us = 0;
    e->meta = NULL;
    e->metalen = 0;
    memcpy(e->name, q, len);
    e->name[len] = '\0';
    e->next = r->b[h & (r->nb - 1)];
    r->b[h & (r->nb - 1)] = e;
    if (++r->n > 2 * r->nb)
        grow(r);
    return e;
}

/* The entry of q when its ZADD is due now (first time, or a minute
 * since the last), else NULL. */
static regent *touch_due(redq__registry *r, const char *q, size_t len,
                         uint64_t now)
{
    regent *e = lookup(r, q, len);
    if (e == NULL)
        return NULL;
    if (e->at_us != 0 && now - e->at_us < REFRESH_US)
        return NULL; /* the common case */
    return e;
}

void redq__registry_touch(redq__registry *r, redq__conn *c, const char *q,
                          size_t len)
{
    regent *e;
    uint64_t now;
    char ms[24];

    if (r == NULL || c == NULL)
        return;
    now = redq__now_us();
    if ((e = touch_due(r, q, len, now)) == NULL)
        return;
    if (!redq__conn_ready(c))
        return; /* next time */
    {
        const char *argv[4] = {"ZADD", REDQ__REGISTRY_KEY, ms, e->name};
        size_t lens[4] = {4, sizeof REDQ__REGISTRY_KEY - 1, 0, len};
        lens[2] = (size_t)snprintf(ms, sizeof ms, "%lld", redq__wall_ms());
        if (redq__conn_sendv(c, 4, argv, lens, 0, on_zadd, e) == 0)
            e->at_us = now;
    }
}

void redq__registry_touch_via(redq__registry *r, redq__registry_send_fn send,
                              void *ctx, const char *q, size_t len)
{
    regent *e;
    uint64_t now;
    char ms[24];

    if (r == NULL || send == NULL)
        return;
    now = redq__now_us();
    if ((e = touch_due(r, q, len, now)) == NULL)
        return;
    {
        const char *argv[4] = {"ZADD", REDQ__REGISTRY_KEY, ms, e->name};
        size_t lens[4] = {4, sizeof REDQ__REGISTRY_KEY - 1, 0, len};
        lens[2] = (size_t)snprintf(ms, sizeof ms, "%lld", redq__wall_ms());
        if (send(ctx, 4, argv, lens, on_zadd_via, e) == 0)
            e->at_us = now;
    }
}

static void on_hincrby(redq__conn *c, void *reply, void *arg)
{
    redq__registry *r = arg;
    redisReply *rep = reply;
    (void)c;
    if (rep == NULL || rep->type != REDIS_REPLY_ERROR || r->warned ||
        redq__err_is_transient(rep->str, (size_t)rep->len) ||
        (rep->len >= 3 && memcmp(rep->str, "OOM", 3) == 0))
        return; /* passing states: the count is lost, the work is not */
    r->warned = 1;
    redq__log(r->log, REDQ_LOG_WARN,
              redq__err_from_reply(rep->str, (size_t)rep->len),
              "counting moved messages in the queue's meta hash (for admin "
              "tools) failed; carrying on: %s", rep->str);
}

void redq__registry_count(redq__registry *r, redq__conn *c, const char *q,
                          size_t len, const char *field, uint64_t n)
{
    regent *e;
    char num[24];

    if (r == NULL || c == NULL || n == 0 || !redq__conn_ready(c))
        return;
    e = lookup(r, q, len);
    if (e == NULL)
        return;
    if (e->meta == NULL) {
        if ((e->meta = redq__key(q, len, "meta")) == NULL)
            return;
        e->metalen = strlen(e->meta);
    }
    {
        const char *argv[4] = {"HINCRBY", e->meta, field, num};
        size_t lens[4] = {7, e->metalen, strlen(field), 0};
        lens[3] = (size_t)snprintf(num, sizeof num, "%llu",
                                   (unsigned long long)n);
        (void)redq__conn_sendv(c, 4, argv, lens, 0, on_hincrby, r);
    }
}
