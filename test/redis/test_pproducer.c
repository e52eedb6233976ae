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
