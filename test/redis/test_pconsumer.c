/*
 * The consumer and the admin on a cluster (lib/pconsumer.c, lib/admin.c,
 * lib/admin_parts.c) against fixture_cluster.c's real 6-node cluster:
 * partitions made by redq_admin_set_partitions spread over the masters,
 * messages LPUSHed by a plain client into every partition consumed by
 * both guarantees, retries and dead letters in the right partition's keys
 * (a cluster refuses any CROSSSLOT access), partitions raised and lowered
 * under a running consumer (retired ones drained), and a slot migration
 * and a CLUSTER FAILOVER while consuming: nothing lost, nothing left.
 *
 * Each test starts its own cluster (criterion runs each in a process).
 */
#define _DEFAULT_SOURCE

#include "fixture.h"
#include "fixture_cluster.h"
#include "redq_private.h"

#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

static void cfini(void)
{
    fxc_stop();
    fx_teardown();
}

static void cinit(void)
{
    fx_setup_noserver();
    fxc_start();
}

TestSuite(pconsumer, .init = cinit, .fini = cfini, .timeout = 300);

/* ---- admin, synchronously ----------------------------------------------- */

typedef struct ares {
    int done, status;
    char err[256];
    uint64_t n;
    redq_queue_info q;
    size_t nq;
    size_t np;
    struct {
        int index, slot, retired;
        char name[128], node[64];
        uint64_t ready, processing, dead;
    } p[REDQ__MAX_PARTITIONS];
} ares;

static void on_done(redq_admin *a, int status, const char *es, uint64_t n,
                    void *user)
{
    ares *r = user;
    (void)a;
    r->status = status;
    snprintf(r->err, sizeof r->err, "%s", es ? es : "");
    r->n = n;
    r->done = 1;
}

static void on_queues(redq_admin *a, int status, const char *es,
                      const redq_queue_info *q, size_t n, void *user)
{
    ares *r = user;
    (void)a;
    r->status = status;
    snprintf(r->err, sizeof r->err, "%s", es ? es : "");
    r->nq = n;
    if (n > 0)
        r->q = q[0];
    r->q.name = NULL;
    r->done = 1;
}

static void on_parts(redq_admin *a, int status, const char *es,
                     const redq_partition_info *p, size_t n, void *user)
{
    ares *r = user;
    size_t i;
    (void)a;
    r->status = status;
    snprintf(r->err, sizeof r->err, "%s", es ? es : "");
    r->np = n;
    for (i = 0; i < n && i < REDQ__MAX_PARTITIONS; i++) {
        r->p[i].index = p[i].index;
        r->p[i].slot = p[i].slot;
        r->p[i].retired = p[i].retired;
        snprintf(r->p[i].name, sizeof r->p[i].name, "%s", p[i].name);
        snprintf(r->p[i].node, sizeof r->p[i].node, "%s",
                 p[i].node ? p[i].node : "");
        r->p[i].ready = p[i].ready;
        r->p[i].processing = p[i].processing;
        r->p[i].dead = p[i].dead;
    }
    r->done = 1;
}

static bool is_done(void *arg)
{
    return ((ares *)arg)->done != 0;
}

static redq_admin *admin_new(void)
{
    redq_admin_options o;
    redq_admin *a = NULL;
    redq_admin_options_init(&o);
    o.url = fxc_url();
    cr_assert_eq(redq_admin_new(&a, fx_base(), &o), 0);
    return a;
}

static void on_aclosed(void *user)
{
    *(int *)user = 1;
}

static bool flag_set(void *arg)
{
    return *(int *)arg != 0;
}

static void admin_close(redq_admin *a)
{
    int done = 0;
    cr_assert_eq(redq_admin_close(a, on_aclosed, &done), 0);
    cr_assert(fx_run_until(flag_set, &done, 10000), "admin close");
}

static void admin_wait(ares *r)
{
    cr_assert(fx_run_until(is_done, r, 30000), "admin call timed out");
}

static uint64_t set_parts(redq_admin *a, const char *q, int n)
{
    ares r;
    memset(&r, 0, sizeof r);
    cr_assert_eq(redq_admin_set_partitions(a, q, n, on_done, &r), 0);
    admin_wait(&r);
    cr_assert_eq(r.status, 0, "set_partitions: %s", r.err);
    return r.n;
}

static void list_parts(redq_admin *a, const char *q, ares *r)
{
    memset(r, 0, sizeof *r);
    cr_assert_eq(redq_admin_partitions(a, q, on_parts, r), 0);
    admin_wait(r);
    cr_assert_eq(r->status, 0, "partitions: %s", r->err);
}

static void snap(redq_admin *a, const char *q, ares *r)
{
    memset(r, 0, sizeof *r);
    cr_assert_eq(redq_admin_queue(a, q, on_queues, r), 0);
    admin_wait(r);
    cr_assert_eq(r->status, 0, "queue: %s", r->err);
    cr_assert_eq(r->nq, 1);
}

/* ---- plain clients on the right node ------------------------------------ */

static long long node_int(const char *key, const char *fmt, const char *arg)
{
    unsigned slot = redq__key_slot(key, strlen(key));
    redisReply *r = fxc_cmd(fxc_master_of_slot(slot), fmt, key, arg);
    long long v;
    cr_assert(r != NULL);
    cr_assert(r->type == REDIS_REPLY_INTEGER, "%s %s: %s", fmt, key,
              r->type == REDIS_REPLY_ERROR ? r->str : "not an integer");
    v = r->integer;
    freeReplyObject(r);
    return v;
}

static int node_of_port(const char *redir)
{
    int port = atoi(strrchr(redir, ':') + 1), i;
    for (i = 0; i < FXC_NODES; i++)
        if (fxc_port(i) == port)
            return i;
    cr_assert_fail("no node for %s", redir);
    return -1;
}

/* LPUSH as a cluster-aware plain client does: MOVED (a failover, a
 * finished migration) is followed; in a slot's migration window the owner
 * answers ASK for a key already moved, and ASKING and the command then go
 * to the importing node, on one connection. */
static void lpush(const char *key, const char *v)
{
    unsigned slot = redq__key_slot(key, strlen(key));
    int node = fxc_master_of_slot(slot), tries;
    for (tries = 0; tries < 10; tries++) {
        redisReply *r = fxc_cmd(node, "LPUSH %s %s", key, v);
        cr_assert(r != NULL);
        if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "MOVED ", 6) == 0) {
            node = node_of_port(r->str);
            freeReplyObject(r);
            continue;
        }
        if (r->type == REDIS_REPLY_ERROR && strncmp(r->str, "ASK ", 4) == 0) {
            redisContext *ctx = fxc_connect(node_of_port(r->str));
            redisReply *r2;
            cr_assert(ctx != NULL);
            freeReplyObject(redisCommand(ctx, "ASKING"));
            r2 = redisCommand(ctx, "LPUSH %s %s", key, v);
            cr_assert(r2 != NULL && r2->type == REDIS_REPLY_INTEGER, "%s",
                      r2 && r2->type == REDIS_REPLY_ERROR ? r2->str : "?");
            freeReplyObject(r2);
            redisFree(ctx);
        } else {
            cr_assert(r->type == REDIS_REPLY_INTEGER, "LPUSH %s: %s", key,
                      r->type == REDIS_REPLY_ERROR ? r->str : "?");
        }
        freeReplyObject(r);
        return;
    }
    cr_assert_fail("LPUSH %s: redirected 10 times", key);
}

static long long llen(const char *key)
{
    return node_int(key, "LLEN %s%s", "");
}

static long long qkey_llen(const char *q, const char *sfx)
{
    char *k = redq__key(q, strlen(q), sfx);
    long long n = llen(k);
    free(k);
    return n;
}

/* ---- a consumer that records ---------------------------------------------- */

#define MAXSEEN 4096

typedef struct rec {
    redq_consumer *c;
    int mismatch;      /* wrong consumer pointer, queue or partition */
    size_t delivered, dups, distinct;
    unsigned char seen[MAXSEEN]; /* by message number */
    int nack_first;    /* at-least-once: nack each first attempt */
    size_t nacked, rejected;
    int stopped, stop_status, closed;
} rec;

/* Payloads are "<partition>:<n>" ("dead" ones are rejected). */
static void on_msg(redq_consumer *c, redq_message *m, void *user)
{
    rec *r = user;
    const char *d = redq_msg_data(m);
    int part = atoi(d);
    const char *colon = strchr(d, ':');
    long n = colon ? strtol(colon + 1, NULL, 10) : -1;

    if (c != r->c || strcmp(redq_msg_queue(m), "jobs") != 0 ||
        redq_msg_partition(m) != part)
        r->mismatch++;
    if (strstr(d, "dead") != NULL) {
        r->rejected++;
        cr_assert_eq(redq_reject(m, "bad"), 0);
        return;
    }
    if (r->nack_first && redq_msg_attempt(m) == 1) {
        r->nacked++;
        cr_assert_eq(redq_nack(m, "again"), 0);
        return;
    }
    r->delivered++;
    if (n >= 0 && n < MAXSEEN) {
        if (r->seen[n])
            r->dups++;
        else
            r->distinct++;
        r->seen[n] = 1;
    }
    redq_ack(m);
}

static redq_consumer *consumer_new(rec *r, int guarantee, size_t pool)
{
    redq_consumer_options o;
    const char *qs[] = {"jobs"};
    redq_consumer_options_init(&o);
    o.url = fxc_url();
    o.on_message = on_msg;
    o.on_message_user = r;
    o.guarantee = guarantee;
    o.pool_size = pool;
    o.pop_timeout_ms = 500;
    o.retry_base_ms = 50;
    o.retry_max_ms = 100;
    o.promote_interval_ms = 100;
    cr_assert_eq(redq_consumer_new(&r->c, fx_base(), &o, qs, 1), 0);
    return r->c;
}

static void on_stop(redq_consumer *c, int status, void *user)
{
    rec *r = user;
    (void)c;
    r->stopped = 1;
    r->stop_status = status;
}

static void on_close(void *user)
{
    ((rec *)user)->closed = 1;
}

static bool stopped(void *arg)
{
    return ((rec *)arg)->stopped != 0;
}

static bool closed(void *arg)
{
    return ((rec *)arg)->closed != 0;
}

static void consumer_end(rec *r)
{
    cr_assert_eq(redq_consumer_stop(r->c, 10000, on_stop, r), 0);
    cr_assert(fx_run_until(stopped, r, 20000), "stop timed out");
    cr_assert_eq(r->stop_status, 0);
    cr_assert_eq(redq_consumer_close(r->c, on_close, r), 0);
    cr_assert(fx_run_until(closed, r, 10000), "close timed out");
}

typedef struct want {
    rec *r;
    size_t n;
} want;

static bool got(void *arg)
{
    want *w = arg;
    return w->r->distinct >= w->n;
}

/* Push `per` messages into each of the partitions, numbered from `from`. */
static size_t push_all(const ares *parts, size_t np, size_t per, size_t from)
{
    size_t i, k, n = from;
    char v[64];
    for (k = 0; k < per; k++)
        for (i = 0; i < np; i++) {
            snprintf(v, sizeof v, "%d:%zu", parts->p[i].index, n++);
            lpush(parts->p[i].name, v);
        }
    return n - from;
}

static void assert_all_seen(const rec *r, size_t from, size_t to)
{
    size_t i;
    for (i = from; i < to; i++)
        cr_assert(r->seen[i], "message %zu never delivered", i);
}

/* ---- the tests ------------------------------------------------------------ */

/* Three partitions, one per master; a plain client's messages in each are
 * consumed at-least-once (pool 4, every first attempt nacked: the retries
 * go through each partition's own delayed/due keys) and at-most-once
 * (pool 1); a rejected message lands in its own partition's dead list;
 * the snapshot sums, the listing matches LLENs. */
Test(pconsumer, partitions_consumed_both_guarantees)
{
    redq_admin *a = admin_new();
    ares parts, s;
    rec r1, r2;
    want w;
    size_t i, n;
    char nodes[3][64];

    cr_assert_eq(set_parts(a, "jobs", 3), 1);
    list_parts(a, "jobs", &parts);
    cr_assert_eq(parts.np, 3);
    for (i = 0; i < 3; i++) {
        cr_assert_eq(parts.p[i].index, (int)i);
        cr_assert_eq(parts.p[i].retired, 0);
        cr_assert_neq(parts.p[i].node[0], '\0');
        snprintf(nodes[i], sizeof nodes[i], "%s", parts.p[i].node);
    }
    cr_assert_str_eq(parts.p[0].name, "jobs");
    /* Spread: three partitions on three different masters. */
    cr_assert(strcmp(nodes[0], nodes[1]) != 0 &&
              strcmp(nodes[1], nodes[2]) != 0 &&
              strcmp(nodes[0], nodes[2]) != 0,
              "%s %s %s", nodes[0], nodes[1], nodes[2]);

    /* at-least-once, pool 4, retries */
    memset(&r1, 0, sizeof r1);
    r1.nack_first = 1;
    n = push_all(&parts, 3, 40, 0);
    lpush(parts.p[2].name, "2:dead");
    consumer_new(&r1, REDQ_AT_LEAST_ONCE, 4);
    w.r = &r1;
    w.n = n;
    cr_assert(fx_run_until(got, &w, 60000), "delivered %zu of %zu",
              r1.delivered, n);
    assert_all_seen(&r1, 0, n);
    cr_assert_eq(r1.mismatch, 0);
    cr_assert_eq(r1.nacked, n + 0); /* every one retried once */
    cr_assert_eq(r1.rejected, 1);
    consumer_end(&r1);
    cr_assert_eq(r1.dups, 0);

    /* The dead letter is in partition 2's dead list, nowhere else. */
    cr_assert_eq(qkey_llen(parts.p[2].name, "dead"), 1);
    cr_assert_eq(qkey_llen(parts.p[1].name, "dead"), 0);
    cr_assert_eq(qkey_llen("jobs", "dead"), 0);
    list_parts(a, "jobs", &s);
    cr_assert_eq(s.p[2].dead, 1);
    cr_assert_eq(s.p[0].dead + s.p[1].dead, 0);

    /* at-most-once, pool 1 */
    memset(&r2, 0, sizeof r2);
    n = push_all(&parts, 3, 30, 1000);
    consumer_new(&r2, REDQ_AT_MOST_ONCE, 1);
    w.r = &r2;
    w.n = n;
    cr_assert(fx_run_until(got, &w, 60000), "delivered %zu of %zu",
              r2.delivered, n);
    assert_all_seen(&r2, 1000, 1000 + n);
    cr_assert_eq(r2.mismatch, 0);
    consumer_end(&r2);

    /* Messages waiting: the snapshot sums, the listing is each LLEN. */
    push_all(&parts, 3, 5, 2000);
    lpush(parts.p[1].name, "1:extra");
    snap(a, "jobs", &s);
    cr_assert_eq(s.q.partitions, 3);
    cr_assert_eq(s.q.ready, 16);
    cr_assert_eq(s.q.dead, 1);
    cr_assert_eq(s.q.processing, 0);
    cr_assert_eq(s.q.due + s.q.delayed, 0);
    cr_assert_geq(s.q.taken, 3 * 40 + 3 * 30);
    list_parts(a, "jobs", &s);
    for (i = 0; i < 3; i++)
        cr_assert_eq((long long)s.p[i].ready, llen(s.p[i].name));
    cr_assert_eq(s.p[1].ready, 6);
    admin_close(a);
}

typedef struct pwait {
    redq_admin *a;
    ares *s;
    unsigned want_consumers;
} pwait;

/* Raising P under a running consumer: the new partitions are consumed
 * within a poll; lowering it retires them, and a retired partition is
 * still drained (a producer that has not seen the change may push). */
Test(pconsumer, raise_and_lower_under_a_consumer)
{
    redq_admin *a = admin_new();
    ares parts, s;
    rec r;
    want w;
    size_t n;

    cr_assert_eq(set_parts(a, "jobs", 2), 1);
    memset(&r, 0, sizeof r);
    consumer_new(&r, REDQ_AT_LEAST_ONCE, 2);
    list_parts(a, "jobs", &parts);
    cr_assert_eq(parts.np, 2);
    n = push_all(&parts, 2, 10, 0);
    w.r = &r;
    w.n = n;
    cr_assert(fx_run_until(got, &w, 30000));

    cr_assert_eq(set_parts(a, "jobs", 4), 2);
    list_parts(a, "jobs", &parts);
    cr_assert_eq(parts.np, 4);
    n += push_all(&parts, 4, 10, n);
    w.n = n;
    cr_assert(fx_run_until(got, &w, 30000), "delivered %zu of %zu",
              r.delivered, n);

    cr_assert_eq(set_parts(a, "jobs", 2), 4);
    list_parts(a, "jobs", &s);
    cr_assert_eq(s.np, 4);
    cr_assert_eq(s.p[1].retired, 0);
    cr_assert_eq(s.p[2].retired, 1);
    cr_assert_eq(s.p[3].retired, 1);
    /* Raising again reuses the retired partitions, in order. */
    cr_assert_eq(set_parts(a, "jobs", 3), 2);
    list_parts(a, "jobs", &s);
    cr_assert_eq(s.np, 4);
    cr_assert_str_eq(s.p[2].name, parts.p[2].name);
    cr_assert_eq(s.p[2].retired, 0);
    cr_assert_eq(s.p[3].retired, 1);
    /* The retired partition 3 is drained. */
    n += push_all(&parts, 4, 5, n);
    w.n = n;
    cr_assert(fx_run_until(got, &w, 30000), "delivered %zu of %zu",
              r.delivered, n);
    assert_all_seen(&r, 0, n);
    cr_assert_eq(r.mismatch, 0);
    consumer_end(&r);
    snap(a, "jobs", &s);
    cr_assert_eq(s.q.partitions, 3);
    cr_assert_eq(s.q.ready + s.q.due + s.q.delayed + s.q.processing, 0);
    admin_close(a);
}

/* A slot migration (ASK, then MOVED) of partition 1's slot and a CLUSTER
 * FAILOVER of partition 2's master while messages are pushed and consumed
 * at-least-once: every message is delivered (duplicates counted, allowed),
 * and afterwards no key of any partition holds anything. */
Test(pconsumer, migration_and_failover_while_consuming)
{
    redq_admin *a = admin_new();
    ares parts, s;
    rec r;
    want w;
    size_t n = 0, round;
    unsigned slot1;
    int from, to, m2, rep;

    cr_assert_eq(set_parts(a, "jobs", 3), 1);
    list_parts(a, "jobs", &parts);
    memset(&r, 0, sizeof r);
    consumer_new(&r, REDQ_AT_LEAST_ONCE, 3);
    w.r = &r;

    slot1 = (unsigned)parts.p[1].slot;
    from = fxc_master_of_slot(slot1);
    to = fxc_master_of_slot((unsigned)parts.p[0].slot);
    m2 = fxc_master_of_slot((unsigned)parts.p[2].slot);
    rep = fxc_replica_of(m2);
    cr_assert(rep >= 0);
    for (round = 0; round < 12; round++) {
        n += push_all(&parts, 3, 10, n);
        fx_run_for(100);
        if (round == 2)
            fxc_migrate_begin(slot1, from, to);
        if (round == 4)
            fxc_migrate_keys(slot1, from, to);
        if (round == 6)
            fxc_migrate_end(slot1, from, to);
        if (round == 8)
            fxc_failover(rep);
    }
    w.n = n;
    cr_assert(fx_run_until(got, &w, 60000), "delivered %zu of %zu",
              r.delivered, n);
    assert_all_seen(&r, 0, n);
    cr_assert_eq(r.mismatch, 0);
    consumer_end(&r);
    fxc_wait_ok(20000);
    snap(a, "jobs", &s);
    cr_assert_eq(s.q.ready + s.q.due + s.q.delayed + s.q.processing, 0,
                 "left: ready %llu due %llu delayed %llu processing %llu",
                 (unsigned long long)s.q.ready, (unsigned long long)s.q.due,
                 (unsigned long long)s.q.delayed,
                 (unsigned long long)s.q.processing);
    cr_assert_eq(s.q.dead, 0);
    cr_assert_eq(s.q.registered, 0);
    fprintf(stderr, "migration+failover: %zu messages, %zu duplicates\n", n,
            r.dups);
    admin_close(a);
}

/* ---- one server: the same queues, ordinary connections ------------------ */

TestSuite(pconsumer1, .init = fx_setup, .fini = fx_teardown, .timeout = 120);

static redq_admin *admin1_new(void)
{
    redq_admin_options o;
    redq_admin *a = NULL;
    redq_admin_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(redq_admin_new(&a, fx_base(), &o), 0);
    return a;
}

static redq_consumer *consumer1_new(rec *r, int guarantee, size_t pool)
{
    redq_consumer_options o;
    const char *qs[] = {"other", "jobs"};
    redq_consumer_options_init(&o);
    o.url = fx_url();
    o.on_message = on_msg;
    o.on_message_user = r;
    o.guarantee = guarantee;
    o.pool_size = pool;
    o.pop_timeout_ms = 500;
    o.promote_interval_ms = 100;
    cr_assert_eq(redq_consumer_new(&r->c, fx_base(), &o, qs, 2), 0);
    return r->c;
}

static void push1(const ares *parts, size_t np, size_t per, size_t *n)
{
    size_t i, k;
    char v[64];
    for (k = 0; k < per; k++)
        for (i = 0; i < np; i++) {
            snprintf(v, sizeof v, "%d:%zu", parts->p[i].index, (*n)++);
            fx_cmd_ok("LPUSH %s %s", parts->p[i].name, v);
        }
}

/* A consumer of one server finds the partitions itself (its own meta
 * reads), in both modes, with pools of 1 and 4, and a partition made
 * while it runs; every message carries the logical name and its index;
 * the snapshot and the registry show the logical queue only. */
Test(pconsumer1, one_server_partitions_consumed)
{
    static const struct { int g; size_t pool; } runs[] = {
        {REDQ_AT_LEAST_ONCE, 4}, {REDQ_AT_MOST_ONCE, 1},
        {REDQ_AT_LEAST_ONCE, 1}, {REDQ_AT_MOST_ONCE, 4}};
    redq_admin *a = admin1_new();
    ares parts, s;
    size_t run, n = 0, from;
    rec *r = calloc(1, sizeof *r);
    want w;

    cr_assert_eq(set_parts(a, "jobs", 3), 1);
    for (run = 0; run < 4; run++) {
        memset(r, 0, sizeof *r);
        list_parts(a, "jobs", &parts);
        from = n;
        push1(&parts, parts.np, 20, &n);
        consumer1_new(r, runs[run].g, runs[run].pool);
        w.r = r;
        w.n = n - from;
        cr_assert(fx_run_until(got, &w, 20000), "run %zu: %zu of %zu", run,
                  r->distinct, n - from);
        if (run == 1) {
            /* A partition made under the running consumer. */
            cr_assert_eq(set_parts(a, "jobs", 4), 3);
            list_parts(a, "jobs", &parts);
            cr_assert_eq(parts.np, 4);
            push1(&parts, 4, 10, &n);
            w.n = n - from;
            cr_assert(fx_run_until(got, &w, 20000), "%zu of %zu",
                      r->distinct, n - from);
        }
        assert_all_seen(r, from, n);
        cr_assert_eq(r->mismatch, 0);
        consumer_end(r);
    }
    snap(a, "jobs", &s);
    cr_assert_eq(s.q.partitions, 4);
    cr_assert_eq(s.q.ready + s.q.processing + s.q.due, 0);
    /* The registry names the logical queue, never a partition. */
    {
        redisReply *z = fx_cmd("ZRANGE redq:queues 0 -1");
        size_t i;
        cr_assert(z != NULL && z->type == REDIS_REPLY_ARRAY);
        for (i = 0; i < z->elements; i++)
            cr_assert(strchr(z->element[i]->str, '~') == NULL, "%s",
                      z->element[i]->str);
    }
    /* Pausing the logical queue pauses every partition (consumers of a
     * partition read its own flag), resuming clears them all. */
    {
        ares d;
        unsigned k;
        for (k = 0; k < 2; k++) {
            size_t i;
            memset(&d, 0, sizeof d);
            cr_assert_eq(redq_admin_pause(a, "jobs", k == 0, on_done, &d), 0);
            admin_wait(&d);
            cr_assert_eq(d.status, 0, "%s", d.err);
            for (i = 0; i < parts.np; i++) {
                char *meta = redq__key(parts.p[i].name,
                                       strlen(parts.p[i].name), "meta");
                redisReply *v = fx_cmd("HGET %s paused", meta);
                if (k == 0)
                    cr_assert(v->type == REDIS_REPLY_STRING &&
                              strcmp(v->str, "1") == 0, "%s", meta);
                else
                    cr_assert_eq(v->type, REDIS_REPLY_NIL, "%s", meta);
                free(meta);
            }
        }
    }
    free(r);
    admin_close(a);
}
