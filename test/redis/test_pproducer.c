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
