/*
 * Partitioned queues and the producer on a cluster (lib/partition.c,
 * lib/pproducer.c), and the pinned connection's redirect handling that
 * makes an ordinary producer work over a pinned connection (lib/conn.c's
 * redirect hook, lib/cluster.c).
 *
 * The cluster tests use fixture_cluster.c's real 6-node cluster; each
 * starts its own (criterion runs each test in a process of its own).
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

TestSuite(pcluster, .init = cinit, .fini = cfini, .timeout = 240);

static redq__logger quiet = {NULL, 0, NULL, "pp"};

/* ---- the pinned connection follows a MOVED by itself ------------------- */

typedef struct pinreply {
    unsigned n;          /* replies seen */
    unsigned ok, redirected, nulls;
    char last_err[128];
} pinreply;

static void pin_cb(redq__conn *c, void *reply, void *arg)
{
    pinreply *p = arg;
    redisReply *r = reply;
    (void)c;
    p->n++;
    if (r == NULL)
        p->nulls++;
    else if (r->type == REDIS_REPLY_ERROR) {
        /* What the producer and consumer consult: not applied. */
        cr_assert(redq__err_is_transient(r->str, (size_t)r->len), "%s",
                  r->str);
        p->redirected++;
        snprintf(p->last_err, sizeof p->last_err, "%s", r->str);
    } else
        p->ok++;
}

static bool ready_cb(void *arg)
{
    return redq__conn_ready(arg);
}

static bool cl_ready(void *arg)
{
    return redq__cluster_ready(arg);
}

typedef struct nwait {
    const pinreply *p;
    unsigned want;
} nwait;

static bool got_n(void *arg)
{
    const nwait *w = arg;
    return w->p->n >= w->want;
}

typedef struct idrec {
    char id[41];
    int done;
} idrec;

static void id_cb(redq__conn *c, void *reply, void *arg)
{
    idrec *x = arg;
    redisReply *r = reply;
    (void)c;
    if (r != NULL && r->type == REDIS_REPLY_STRING)
        snprintf(x->id, sizeof x->id, "%.*s", (int)r->len, r->str);
    x->done = 1;
}

static bool id_done(void *arg)
{
    return ((idrec *)arg)->done;
}

static void myid(redq__conn *c, char id[41])
{
    idrec ir = {{0}, 0};
    const char *argv[] = {"CLUSTER", "MYID"};
    cr_assert(fx_run_until(ready_cb, c, 15000), "pin never ready");
    cr_assert_eq(redq__conn_sendv(c, 2, argv, NULL, 0, id_cb, &ir), 0);
    cr_assert(fx_run_until(id_done, &ir, 10000));
    memcpy(id, ir.id, 41);
}

Test(pcluster, pinned_connection_follows_moved_by_itself)
{
    redq__url url;
    redq__conn_config cfg;
    redq__cluster *cl;
    redq__cluster_pin *pin;
    redq__conn *c;
    char err[256], id[41], want[41];
    const char *key = "pinmove{7}";
    unsigned slot = redq__key_slot(key, strlen(key)), i;
    pinreply pr = {0};
    const char *argv[] = {"LPUSH", key, "x"};

    cr_assert_eq(redq__url_parse(&url, fxc_url(), err, sizeof err), 0);
    memset(&cfg, 0, sizeof cfg);
    cfg.url = &url;
    cfg.connect_timeout_ms = 2000;
    cfg.command_timeout_ms = 10000;
    cfg.reconnect_min_ms = 20;
    cfg.reconnect_max_ms = 300;
    cfg.log = &quiet;
    cr_assert_eq(redq__cluster_new(&cl, fx_base(), &cfg), 0);
    redq__cluster_start(cl);
    cr_assert(fx_run_until(cl_ready, cl, 10000), "no slot map");
    cr_assert_eq(redq__cluster_pin_new(&pin, cl, slot, &cfg, NULL, NULL, NULL),
                 0);
    c = redq__cluster_pin_conn(pin);
    redq__conn_start(c);
    int m = fxc_master_of_slot(slot);
    int to = fxc_master_of_slot((slot + 8000) % 16384);
    cr_assert(to >= 0 && to != m);
    cr_assert(fx_run_until(ready_cb, c, 15000));
    for (i = 0; i < 10; i++)
        cr_assert_eq(redq__conn_sendv(c, 3, argv, NULL, 0, pin_cb, &pr), 0);
    cr_assert(fx_run_until(got_n, &(nwait){&pr, 10}, 10000));
    cr_assert_eq(pr.ok, 10);

    fxc_migrate_begin(slot, m, to);
    fxc_migrate_keys(slot, m, to);
    fxc_migrate_end(slot, m, to);
    /* A pipeline into the moved slot: every reply is delivered (MOVED, not
     * NULL for those read in the same pass), and then the connection
     * follows the slot without the caller doing anything. */
    for (i = 0; i < 5; i++)
        cr_assert_eq(redq__conn_sendv(c, 3, argv, NULL, 0, pin_cb, &pr), 0);
    cr_assert(fx_run_until(got_n, &(nwait){&pr, 15}, 10000));
    cr_assert_geq(pr.redirected, 1, "no MOVED");
    cr_assert_eq(pr.ok + pr.redirected + pr.nulls, 15);
    cr_assert_eq(pr.ok, 10, "a command was applied on the old owner");
    /* It reconnects to the new owner (a map from a node that has not heard
     * yet may bounce it once more: write until applied, bounded). */
    for (i = 0; i < 20 && pr.ok == 10; i++) {
        unsigned n = pr.n;
        cr_assert(fx_run_until(ready_cb, c, 15000), "never back");
        if (redq__conn_sendv(c, 3, argv, NULL, 0, pin_cb, &pr) != 0)
            continue;
        cr_assert(fx_run_until(got_n, &(nwait){&pr, n + 1}, 10000));
    }
    cr_assert_eq(pr.ok, 11, "never applied on the new owner: %s",
                 pr.last_err);
    myid(c, id);
    fxc_node_id(to, want);
    cr_assert_str_eq(id, want, "did not follow the slot");
    {
        redisReply *r = fxc_cmd(to, "LLEN %s", key);
        cr_assert_eq(r->integer, 11);
        freeReplyObject(r);
        r = fxc_cmd(to, "DEL %s", key);
        freeReplyObject(r);
    }
    redq__cluster_pin_free(pin);
    redq__cluster_free(cl);
    redq__url_free(&url);
}

/* ---- the producer on a cluster, partitioned queue ---------------------- */

typedef struct prec {
    size_t reports, ok, bad_queue, bad_id;
    char lastq[64];
    redq_producer *outer;
    int wrong_handle;
    unsigned char *seen; /* by opaque index */
    int closed, flushed, flush_status;
} prec;

static void on_report(redq_producer *p, const redq_report *r, void *user)
{
    prec *pr = user;
    size_t i = (size_t)(uintptr_t)r->opaque;
    pr->reports++;
    if (p != pr->outer)
        pr->wrong_handle = 1;
    if (r->status == 0)
        pr->ok++;
    if (strcmp(r->queue, "pq") != 0)
        pr->bad_queue++;
    if (r->id == NULL || strncmp(r->id, redq_producer_id(p), 16) != 0)
        pr->bad_id++;
    pr->seen[i]++;
}

static void on_flushed(redq_producer *p, int status, void *user)
{
    prec *pr = user;
    (void)p;
    pr->flushed = 1;
    pr->flush_status = status;
}

static void on_closed(void *user)
{
    ((prec *)user)->closed = 1;
}

static bool is_flushed(void *arg)
{
    return ((prec *)arg)->flushed;
}

static bool is_closed(void *arg)
{
    return ((prec *)arg)->closed;
}

static int map_owner(const void *arg, unsigned slot, char *buf, size_t len)
{
    int m = fxc_master_of_slot(slot);
    (void)arg;
    snprintf(buf, len, "%d", m);
    return m < 0;
}

/* Make queue "pq" partitioned (P of `total` made) as the admin call will:
 * the meta fields, written on the master of pq's slot. */
static void set_partitions(redq__parts *pt, unsigned active, unsigned total)
{
    char tags[REDQ__MAX_PARTITIONS * REDQ__PTAG_MAX];
    char *meta = redq__key("pq", 2, "meta");
    redisReply *r;
    int m = fxc_master_of_slot(redq__key_slot(meta, strlen(meta)));
    cr_assert_eq(redq__parts_grow(pt, "pq", 2, total, map_owner, NULL), 0);
    redq__parts_tags_string(pt, tags);
    r = fxc_cmd(m, "HSET %s partitions %u ptags %s", meta, active, tags);
    cr_assert_not_null(r);
    freeReplyObject(r);
    pt->active = active;
    free(meta);
}

static long long llen_of(const char *key)
{
    int m = fxc_master_of_slot(redq__key_slot(key, strlen(key)));
    redisReply *r = fxc_cmd(m, "LLEN %s", key);
    long long n = r->integer;
    freeReplyObject(r);
    return n;
}

Test(pcluster, partitioned_spread_keyed_order_reports)
{
    enum { N = 3000, KEYS = 7 };
    redq__parts pt;
    prec pr = {0};
    redq_producer_options o;
    redq_producer *p;
    size_t i;
    unsigned k;
    char pay[64];
    long long total = 0, per[3];

    redq__parts_init(&pt);
    set_partitions(&pt, 3, 3);
    pr.seen = calloc(N, 1);
    redq_producer_options_init(&o);
    o.url = fxc_url();
    o.on_report = on_report;
    o.on_report_user = &pr;
    o.batch_max_msgs = 50;
    cr_assert_eq(redq_producer_new(&p, fx_base(), &o), 0);
    pr.outer = p;
    /* Keyed first: they wait for discovery, then go by key. */
    for (i = 0; i < N; i++) {
        int rc;
        if (i % 2 == 0) {
            char key[8];
            snprintf(key, sizeof key, "k%zu", i % KEYS);
            snprintf(pay, sizeof pay, "%s:%zu", key, i);
            rc = redq_produce_key(p, "pq", key, strlen(key), pay, strlen(pay),
                                  (void *)(uintptr_t)i);
        } else {
            snprintf(pay, sizeof pay, "u:%zu", i);
            rc = redq_produce(p, "pq", pay, strlen(pay),
                              (void *)(uintptr_t)i);
        }
        cr_assert_eq(rc, 0, "%zu: %s", i, redq_strerror(rc));
        if (i % 200 == 199)
            fx_run_for(5); /* let batches go between bursts */
    }
    cr_assert_eq(redq_producer_flush(p, 20000, on_flushed, &pr), 0);
    cr_assert(fx_run_until(is_flushed, &pr, 30000), "flush never ended");
    cr_assert_eq(pr.flush_status, 0);
    cr_assert_eq(pr.reports, N);
    cr_assert_eq(pr.ok, N);
    cr_assert_eq(pr.bad_queue, 0, "reports must carry the logical queue");
    cr_assert_eq(pr.bad_id, 0);
    cr_assert_eq(pr.wrong_handle, 0);
    for (i = 0; i < N; i++)
        cr_assert_eq(pr.seen[i], 1, "message %zu reported %u times", i,
                     pr.seen[i]);
    {
        redq_producer_stats st;
        redq_producer_get_stats(p, &st);
        cr_assert_eq(st.produced, N);
        cr_assert_eq(st.stored, N);
        cr_assert_eq(st.pending_msgs, 0);
    }
    /* Every message in exactly one partition; spread over all three; each
     * key's messages in one partition, in order. */
    for (k = 0; k < 3; k++) {
        char *name = redq__partition_name("pq", 2, pt.tag[k], k);
        int m = fxc_master_of_slot(redq__key_slot(name, strlen(name)));
        redisReply *r = fxc_cmd(m, "LRANGE %s 0 -1", name);
        long long last[KEYS];
        unsigned j;
        for (j = 0; j < KEYS; j++)
            last[j] = -1;
        per[k] = llen_of(name);
        total += per[k];
        cr_assert_gt(per[k], N / 10, "partition %u has %lld", k, per[k]);
        /* LPUSH: the tail is the oldest. */
        for (j = (unsigned)r->elements; j-- > 0;) {
            const char *v = r->element[j]->str;
            if (v[0] == 'k') {
                unsigned key = (unsigned)atoi(v + 1);
                long long idx = atoll(strchr(v, ':') + 1);
                cr_assert_gt(idx, last[key], "key k%u out of order", key);
                last[key] = idx;
            }
        }
        freeReplyObject(r);
        r = fxc_cmd(m, "DEL %s", name);
        freeReplyObject(r);
        free(name);
    }
    cr_assert_eq(total, N);
    cr_assert_eq(redq_producer_close(p, on_closed, &pr), 0);
    cr_assert(fx_run_until(is_closed, &pr, 10000));
    free(pr.seen);
}

/* ---- partitioned queues on one server ---------------------------------- */

TestSuite(pone, .init = fx_setup, .fini = fx_teardown, .timeout = 120);

typedef struct orec {
    size_t reports, ok, closed, bad_queue, other;
    const char *want_queue;
    unsigned char *seen;
    size_t cap;
    int flushed, flush_status, closed_cb;
} orec;

static void o_report(redq_producer *p, const redq_report *r, void *user)
{
    orec *o = user;
    size_t i = (size_t)(uintptr_t)r->opaque;
    (void)p;
    o->reports++;
    if (r->status == 0)
        o->ok++;
    else if (r->status == REDQ_ECLOSED)
        o->closed++;
    else
        o->other++;
    if (strcmp(r->queue, o->want_queue) != 0)
        o->bad_queue++;
    cr_assert_lt(i, o->cap);
    o->seen[i]++;
}

static void o_flushed(redq_producer *p, int status, void *user)
{
    orec *o = user;
    (void)p;
    o->flushed = 1;
    o->flush_status = status;
}

static void o_closed(void *user)
{
    ((orec *)user)->closed_cb = 1;
}

static bool o_is_flushed(void *arg)
{
    return ((orec *)arg)->flushed;
}

static bool o_is_closed(void *arg)
{
    return ((orec *)arg)->closed_cb;
}

/* Give queue q (one server) `active` of `total` partitions, as the admin
 * call will: the meta fields, tags spread over the slot space. */
static void one_set_partitions(const char *q, redq__parts *pt, unsigned active,
                               unsigned total)
{
    char tags[REDQ__MAX_PARTITIONS * REDQ__PTAG_MAX];
    char *meta = redq__key(q, strlen(q), "meta");
    cr_assert_eq(redq__parts_grow(pt, q, strlen(q), total, NULL, NULL), 0);
    redq__parts_tags_string(pt, tags);
    (void)fx_cmd_ok("HSET %s partitions %u ptags %s", meta, active,
                              tags);
    pt->active = active;
    free(meta);
}

static redq_producer *one_producer(orec *o, const char *q, size_t cap)
{
    redq_producer_options opt;
    redq_producer *p;
    o->want_queue = q;
    o->cap = cap;
    o->seen = calloc(cap, 1);
    redq_producer_options_init(&opt);
    opt.url = fx_url();
    opt.on_report = o_report;
    opt.on_report_user = o;
    opt.batch_max_msgs = 40;
    cr_assert_eq(redq_producer_new(&p, fx_base(), &opt), 0);
    return p;
}

static void one_flush(redq_producer *p, orec *o)
{
    o->flushed = 0;
    cr_assert_eq(redq_producer_flush(p, 20000, o_flushed, o), 0);
    cr_assert(fx_run_until(o_is_flushed, o, 30000), "flush never ended");
    cr_assert_eq(o->flush_status, 0);
}

static void one_close(redq_producer *p, orec *o)
{
    cr_assert_eq(redq_producer_close(p, o_closed, o), 0);
    cr_assert(fx_run_until(o_is_closed, o, 10000));
    free(o->seen);
}

/* Partition k's values, oldest first (LPUSH: the tail is the oldest). */
static redisReply *one_lrange(const char *q, const redq__parts *pt,
                              unsigned k)
{
    char *name = redq__partition_name(q, strlen(q), pt->tag[k], k);
    redisReply *r = fx_cmd_ok("LRANGE %s 0 -1", name);
    free(name);
    return r;
}

Test(pone, spread_over_four_keyed_order_logical_reports)
{
    enum { N = 4000, KEYS = 9 };
    redq__parts pt;
    orec o = {0};
    redq_producer *p;
    size_t i;
    unsigned k;
    long long total = 0;
    char pay[64];

    redq__parts_init(&pt);
    one_set_partitions("oq", &pt, 4, 4);
    p = one_producer(&o, "oq", N);
    /* Keyed first: the very first ones wait for the meta read. */
    for (i = 0; i < N; i++) {
        int rc;
        if (i % 2 == 0) {
            char key[8];
            snprintf(key, sizeof key, "k%zu", i % KEYS);
            snprintf(pay, sizeof pay, "%s:%zu", key, i);
            rc = redq_produce_key(p, "oq", key, strlen(key), pay, strlen(pay),
                                  (void *)(uintptr_t)i);
        } else {
            snprintf(pay, sizeof pay, "u:%zu", i);
            rc = redq_produce(p, "oq", pay, strlen(pay),
                              (void *)(uintptr_t)i);
        }
        cr_assert_eq(rc, 0, "%zu: %s", i, redq_strerror(rc));
        if (i % 200 == 199)
            fx_run_for(5);
    }
    one_flush(p, &o);
    cr_assert_eq(o.reports, N);
    cr_assert_eq(o.ok, N);
    cr_assert_eq(o.bad_queue, 0, "reports must carry the logical queue");
    for (i = 0; i < N; i++)
        cr_assert_eq(o.seen[i], 1, "message %zu reported %u times", i,
                     o.seen[i]);
    for (k = 0; k < 4; k++) {
        redisReply *r = one_lrange("oq", &pt, k);
        long long last[KEYS], lastu = -1;
        unsigned j, keyp[KEYS];
        for (j = 0; j < KEYS; j++)
            last[j] = -1;
        total += (long long)r->elements;
        cr_assert_gt(r->elements, N / 20, "partition %u has %zu", k,
                     r->elements);
        for (j = (unsigned)r->elements; j-- > 0;) {
            const char *v = r->element[j]->str;
            long long idx = atoll(strchr(v, ':') + 1);
            if (v[0] == 'k') {
                unsigned key = (unsigned)atoi(v + 1);
                cr_assert_gt(idx, last[key], "key k%u out of order", key);
                last[key] = idx;
                /* The key's partition: slot(key) % 4. */
                char kn[8];
                snprintf(kn, sizeof kn, "k%u", key);
                keyp[key] = redq__key_slot(kn, strlen(kn)) % 4;
                cr_assert_eq(keyp[key], k, "key k%u in partition %u", key, k);
            } else {
                /* Order holds per partition for unkeyed ones too. */
                cr_assert_gt(idx, lastu, "partition %u out of order", k);
                lastu = idx;
            }
        }
    }
    cr_assert_eq(total, N, "every message in exactly one partition");
    /* The registry lists the logical queue only. */
    {
        redisReply *r = fx_cmd_ok("ZRANGE redq:queues 0 -1");
        cr_assert_eq(r->elements, 1);
        cr_assert_str_eq(r->element[0]->str, "oq");
    }
    one_close(p, &o);
}

Test(pone, queue_name_limit_is_logical_partitions_longer)
{
    /* The limit (1024 bytes) is the logical name's: a partition's name is
     * up to REDQ__PARTITION_NAME_EXTRA longer and a producer writes it. */
    char q[REDQ__MAX_QUEUE_NAME + 2];
    redq__parts pt;
    orec o = {0};
    redq_producer *p;
    size_t i;
    unsigned k;
    memset(q, 'n', sizeof q);
    q[REDQ__MAX_QUEUE_NAME] = '\0';
    redq__parts_init(&pt);
    one_set_partitions(q, &pt, 4, 4);
    p = one_producer(&o, q, 400);
    for (i = 0; i < 400; i++) {
        cr_assert_eq(redq_produce(p, q, "x", 1, (void *)(uintptr_t)i), 0);
        if (i == 0)
            fx_run_for(100); /* the first use's meta read answers */
    }
    q[REDQ__MAX_QUEUE_NAME] = 'n';
    q[REDQ__MAX_QUEUE_NAME + 1] = '\0';
    cr_assert_eq(redq_produce(p, q, "x", 1, NULL), REDQ_EINVAL,
                 "a logical name over the limit");
    cr_assert_eq(redq_produce_key(p, q, "k", 1, "x", 1, NULL), REDQ_EINVAL);
    q[REDQ__MAX_QUEUE_NAME] = '\0';
    one_flush(p, &o);
    cr_assert_eq(o.ok, 400);
    cr_assert_eq(o.bad_queue, 0);
    for (k = 1; k < 4; k++) {
        char *name = redq__partition_name(q, strlen(q), pt.tag[k], k);
        cr_assert_gt(strlen(name), REDQ__MAX_QUEUE_NAME);
        cr_assert_leq(strlen(name),
                      REDQ__MAX_QUEUE_NAME + REDQ__PARTITION_NAME_EXTRA);
        cr_assert_gt(fx_llen(name), 0, "partition %u unused (%lld in Q)", k, fx_llen(q));
        free(name);
    }
    one_close(p, &o);
}

Test(pone, close_with_keyed_messages_waiting_reports_each_once)
{
    enum { N = 300 };
    redq__parts pt;
    orec o = {0};
    redq_producer *p;
    size_t i;
    redq__parts_init(&pt);
    one_set_partitions("cq", &pt, 3, 3);
    p = one_producer(&o, "cq", N);
    /* Closed in the same loop iteration: the meta read never answered,
     * the keyed messages are still waiting in the producer. */
    for (i = 0; i < N; i++) {
        char key[8];
        snprintf(key, sizeof key, "k%zu", i % 5);
        cr_assert_eq(redq_produce_key(p, "cq", key, strlen(key), "v", 1,
                                      (void *)(uintptr_t)i),
                     0);
    }
    {
        redq_producer_stats st;
        redq_producer_get_stats(p, &st);
        cr_assert_eq(st.pending_msgs, N);
    }
    cr_assert_eq(redq_producer_close(p, o_closed, &o), 0);
    cr_assert(fx_run_until(o_is_closed, &o, 10000));
    cr_assert_eq(o.reports, N);
    cr_assert_eq(o.closed + o.ok, N);
    cr_assert_eq(o.bad_queue, 0);
    for (i = 0; i < N; i++)
        cr_assert_eq(o.seen[i], 1, "message %zu reported %u times", i,
                     o.seen[i]);
    free(o.seen);
}

static void one_burst(redq_producer *p, const char *q, size_t from, size_t to)
{
    size_t i;
    char pay[32];
    for (i = from; i < to; i++) {
        snprintf(pay, sizeof pay, "m:%zu", i);
        cr_assert_eq(redq_produce(p, q, pay, strlen(pay),
                                  (void *)(uintptr_t)i),
                     0);
        if (i % 100 == 99)
            fx_run_for(2);
    }
}

static bool p_raised(void *arg)
{
    const char **n = arg;
    return fx_llen(n[0]) > 0;
}

Test(pone, raising_then_lowering_p_while_producing)
{
    enum { N = 6000 };
    redq__parts pt;
    orec o = {0};
    redq_producer *p;
    char *p3 = NULL, *p2 = NULL;
    size_t i, sent = 0, total = 0;
    unsigned k;
    redq__parts_init(&pt);
    one_set_partitions("rq", &pt, 2, 2);
    p = one_producer(&o, "rq", N);
    one_burst(p, "rq", 0, 1000);
    sent = 1000;
    one_flush(p, &o);
    /* Raise to 4: the new partitions get messages within the read
     * period (bounded wait, producing meanwhile). */
    one_set_partitions("rq", &pt, 4, 4);
    p3 = redq__partition_name("rq", 2, pt.tag[3], 3);
    p2 = redq__partition_name("rq", 2, pt.tag[2], 2);
    {
        const char *names[] = {p3};
        uint64_t end = fx_now_us() + 10000000;
        while (!p_raised(names) && fx_now_us() < end && sent < 4000) {
            one_burst(p, "rq", sent, sent + 20);
            sent += 20;
            fx_run_for(50);
        }
        one_flush(p, &o);
        cr_assert(p_raised(names), "partition 3 never used after raising P");
        cr_assert_gt(fx_llen(p2), 0);
    }
    /* Lower to 2: partitions 2 and 3 are retired, get nothing new. */
    {
        char *meta = fx_queue_key("rq", "meta");
        (void)fx_cmd_ok("HSET %s partitions 2", meta);
        free(meta);
    }
    fx_run_for(2600); /* one read period and more: the producer saw it */
    {
        long long l2 = fx_llen(p2), l3 = fx_llen(p3);
        one_burst(p, "rq", sent, sent + 1000);
        sent += 1000;
        one_flush(p, &o);
        cr_assert_eq(fx_llen(p2), l2, "retired partition 2 got messages");
        cr_assert_eq(fx_llen(p3), l3, "retired partition 3 got messages");
    }
    cr_assert_eq(o.ok, sent);
    for (k = 0; k < 4; k++) {
        redisReply *r = one_lrange("rq", &pt, k);
        total += r->elements;
    }
    cr_assert_eq(total, sent, "nothing lost");
    for (i = 0; i < sent; i++)
        cr_assert_eq(o.seen[i], 1);
    free(p2);
    free(p3);
    one_close(p, &o);
}

static void free_counted(void *data, void *user)
{
    (*(size_t *)user)++;
    free(data);
}

Test(pone, owned_and_delayed_spread_over_partitions)
{
    enum { N = 600 };
    redq__parts pt;
    orec o = {0};
    redq_producer *p;
    size_t i, freed = 0, zs = 0, lists = 0;
    unsigned k;
    redq__parts_init(&pt);
    one_set_partitions("dq", &pt, 3, 3);
    p = one_producer(&o, "dq", 2 * N);
    for (i = 0; i < N; i++) {
        char *buf = malloc(700);
        memset(buf, 'o', 700);
        cr_assert_eq(redq_produce_owned(p, "dq", buf, 700, free_counted,
                                        &freed, (void *)(uintptr_t)i),
                     0);
        cr_assert_eq(redq_produce_delayed(p, "dq", "d", 1, 60000,
                                          (void *)(uintptr_t)(N + i)),
                     0);
        if (i == 0)
            fx_run_for(100); /* the first use's meta read answers */
        if (i % 50 == 49)
            fx_run_for(2);
    }
    one_flush(p, &o);
    cr_assert_eq(o.ok, 2 * N);
    cr_assert_eq(o.bad_queue, 0);
    cr_assert_eq(freed, N);
    for (k = 0; k < 3; k++) {
        char *name = redq__partition_name("dq", 2, pt.tag[k], k);
        char *dz = redq__key(name, strlen(name), "delayed");
        long long l = fx_llen(name);
        long long z = fx_cmd_int("ZCARD %s", dz);
        cr_assert_gt(l, 0, "partition %u: no owned messages", k);
        cr_assert_gt(z, 0, "partition %u: no delayed messages", k);
        lists += (size_t)l;
        zs += (size_t)z;
        free(dz);
        free(name);
    }
    cr_assert_eq(lists, N);
    cr_assert_eq(zs, N);
    one_close(p, &o);
}

Test(pone, plain_to_frames_switch_seen_by_a_running_producer)
{
    orec o = {0};
    redq_producer *p = one_producer(&o, "fq", 400);
    size_t i;
    one_burst(p, "fq", 0, 100);
    one_flush(p, &o);
    {
        char *meta = fx_queue_key("fq", "meta");
        (void)fx_cmd_ok("HSET %s format frames", meta);
        free(meta);
    }
    fx_run_for(2600); /* a read period */
    one_burst(p, "fq", 100, 200);
    one_flush(p, &o);
    {
        redisReply *r = fx_cmd_ok("LRANGE fq 0 -1");
        cr_assert_eq(r->elements, 200);
        for (i = 0; i < 100; i++)
            cr_assert_eq(strncmp(r->element[i]->str, "RQ1 ", 4), 0,
                         "value %zu is not a frame: %s", i,
                         r->element[i]->str);
        cr_assert_eq(strncmp(r->element[150]->str, "m:", 2), 0);
    }
    one_close(p, &o);
}

/* ---- cluster: a partition's slot moves while producing ----------------- */

static void pc_burst(redq_producer *p, size_t from, size_t to)
{
    size_t i;
    char pay[32];
    for (i = from; i < to; i++) {
        snprintf(pay, sizeof pay, "s:%zu", i);
        cr_assert_eq(redq_produce(p, "pq", pay, strlen(pay),
                                  (void *)(uintptr_t)i),
                     0);
        if (i % 100 == 99)
            fx_run_for(3);
    }
}

Test(pcluster, partition_slot_migrates_while_producing_order_kept)
{
    enum { N = 6000 };
    redq__parts pt;
    prec pr = {0};
    redq_producer_options o;
    redq_producer *p;
    size_t i, total = 0;
    unsigned k, slot;
    char *name1;
    int from, to;

    redq__parts_init(&pt);
    set_partitions(&pt, 3, 3);
    name1 = redq__partition_name("pq", 2, pt.tag[1], 1);
    slot = redq__key_slot(name1, strlen(name1));
    from = fxc_master_of_slot(slot);
    to = fxc_master_of_slot((slot + 5461) % 16384);
    if (to == from)
        to = fxc_master_of_slot((slot + 10922) % 16384);
    cr_assert(to >= 0 && to != from);
    pr.seen = calloc(N, 1);
    redq_producer_options_init(&o);
    o.url = fxc_url();
    o.on_report = on_report;
    o.on_report_user = &pr;
    o.batch_max_msgs = 30;
    cr_assert_eq(redq_producer_new(&p, fx_base(), &o), 0);
    pr.outer = p;
    pc_burst(p, 0, 1500);
    fxc_migrate_begin(slot, from, to); /* ASK window */
    pc_burst(p, 1500, 3000);
    fxc_migrate_keys(slot, from, to);
    pc_burst(p, 3000, 4500);
    fxc_migrate_end(slot, from, to); /* MOVED from now on */
    pc_burst(p, 4500, N);
    cr_assert_eq(redq_producer_flush(p, 30000, on_flushed, &pr), 0);
    cr_assert(fx_run_until(is_flushed, &pr, 40000), "flush never ended");
    cr_assert_eq(pr.flush_status, 0);
    cr_assert_eq(pr.ok, N, "only %zu of %d stored", pr.ok, N);
    for (i = 0; i < N; i++)
        cr_assert_eq(pr.seen[i], 1, "message %zu reported %u times", i,
                     pr.seen[i]);
    cr_assert_eq(fxc_master_of_slot(slot), to);
    for (k = 0; k < 3; k++) {
        char *name = redq__partition_name("pq", 2, pt.tag[k], k);
        int m = fxc_master_of_slot(redq__key_slot(name, strlen(name)));
        redisReply *r = fxc_cmd(m, "LRANGE %s 0 -1", name);
        long long last = -1;
        unsigned j;
        cr_assert_not_null(r);
        total += r->elements;
        /* Per-partition order: oldest at the tail, increasing numbers. */
        for (j = (unsigned)r->elements; j-- > 0;) {
            long long idx = atoll(r->element[j]->str + 2);
            cr_assert_gt(idx, last, "partition %u: %lld after %lld", k, idx,
                         last);
            last = idx;
        }
        if (k == 1)
            cr_assert_gt(r->elements, 0);
        freeReplyObject(r);
        free(name);
    }
    cr_assert_eq(total, N, "lost or duplicated: %zu in the lists", total);
    /* The registry (through the router): the logical name only. */
    {
        int m = fxc_master_of_slot(redq__key_slot("redq:queues", 11));
        redisReply *r = fxc_cmd(m, "ZRANGE redq:queues 0 -1");
        cr_assert_not_null(r);
        cr_assert_eq(r->elements, 1, "registry has %zu entries",
                     r->elements);
        cr_assert_str_eq(r->element[0]->str, "pq");
        freeReplyObject(r);
    }
    cr_assert_eq(redq_producer_close(p, on_closed, &pr), 0);
    cr_assert(fx_run_until(is_closed, &pr, 10000));
    free(pr.seen);
    free(name1);
}

/* ---- a cluster that never answers --------------------------------------- */

TestSuite(pdead, .init = fx_setup_noserver, .fini = fx_teardown,
          .timeout = 60);

/* Keyed messages wait for their queue's partition count; when the cluster
 * never answers, message_timeout_ms still bounds them (reported once each,
 * not ok, not "closed"), and a flush without a deadline of its own ends
 * with them. Before, they waited for the close. */
Test(pdead, keyed_messages_time_out_while_the_cluster_is_unreachable)
{
    enum { N = 20 };
    redq_producer_options opt;
    redq_producer *p;
    orec o = {0};
    char url[64];
    size_t i;
    uint64_t t0;

    o.want_queue = "kq";
    o.cap = N;
    o.seen = calloc(N, 1);
    cr_assert_not_null(o.seen);
    snprintf(url, sizeof url, "redis+cluster://127.0.0.1:%d", fx_free_port());
    redq_producer_options_init(&opt);
    opt.url = url;
    opt.on_report = o_report;
    opt.on_report_user = &o;
    opt.message_timeout_ms = 300;
    cr_assert_eq(redq_producer_new(&p, fx_base(), &opt), 0);
    t0 = fx_now_us();
    for (i = 0; i < N; i++)
        cr_assert_eq(redq_produce_key(p, "kq", "k", 1, "v", 1,
                                      (void *)(uintptr_t)i),
                     0);
    cr_assert_eq(redq_producer_flush(p, -1, o_flushed, &o), 0);
    cr_assert(fx_run_until(o_is_flushed, &o, 10000),
              "the flush waited for keyed messages past their timeout "
              "(%zu of %d reported)",
              o.reports, N);
    cr_assert_eq(o.reports, N);
    cr_assert_eq(o.other, N, "ok %zu, closed %zu", o.ok, o.closed);
    for (i = 0; i < N; i++)
        cr_assert_eq(o.seen[i], 1);
    /* A discovery tick (2 s) late at most, never before the timeout. */
    cr_assert_geq(fx_now_us() - t0, 300000u - fx_clock_slack_us());
    cr_assert_eq(redq_producer_close(p, o_closed, &o), 0);
    cr_assert(fx_run_until(o_is_closed, &o, 10000));
    cr_assert_eq(o.reports, N, "a message was reported twice");
    free(o.seen);
}
