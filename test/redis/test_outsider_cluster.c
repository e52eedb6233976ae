/*
 * An outsider's tests of partitioned queues on the 6-node cluster fixture,
 * through the public API only (redq.h, docs/DESIGN.md "Partitioned queues"
 * and "Consumers and admin on a cluster"): keyed order per key and every
 * message consumed once; message lifetimes and per-call deadlines through
 * the outer consumer and producer handles.
 *
 * Callbacks only record; assertions run after the loop has returned.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"
#include "fixture_cluster.h"

static void ocfini(void)
{
    fxc_stop();
    fx_teardown();
}

static void ocinit(void)
{
    fx_setup_noserver();
    fxc_start();
}

TestSuite(outsider_cluster, .init = ocinit, .fini = ocfini, .timeout = 240);

static bool flag_set(void *arg)
{
    return *(int *)arg != 0;
}

static void int_closed(void *user)
{
    (*(int *)user)++;
}

/* ---- admin ---------------------------------------------------------------- */

typedef struct oadm {
    redq_admin *a;
    int done, status, closed;
    uint64_t n;
    char err[256];
} oadm;

static void oadm_done(redq_admin *a, int status, const char *errstr,
                      uint64_t n, void *user)
{
    (void)a;
    oadm *d = user;
    d->done++;
    d->status = status;
    d->n = n;
    snprintf(d->err, sizeof d->err, "%s", errstr ? errstr : "");
}

static void oadm_parts(oadm *d, const char *q, int p)
{
    d->done = 0;
    cr_assert_eq(redq_admin_set_partitions(d->a, q, p, oadm_done, d), 0);
    cr_assert(fx_run_until(flag_set, &d->done, 10000));
    cr_assert_eq(d->status, 0, "set_partitions: %s", d->err);
}

static void oadm_open(oadm *d)
{
    memset(d, 0, sizeof *d);
    redq_admin_options o;
    redq_admin_options_init(&o);
    o.url = fxc_url();
    cr_assert_eq(redq_admin_new(&d->a, fx_base(), &o), 0);
}

static void oadm_close(oadm *d)
{
    cr_assert_eq(redq_admin_close(d->a, int_closed, &d->closed), 0);
    cr_assert(fx_run_until(flag_set, &d->closed, 5000));
}

/* ---- consumer ------------------------------------------------------------- */

#define OCMAX 2048

typedef struct oct {
    redq_consumer *c;
    int hold;
    size_t got;
    redq_message *held[OCMAX];
    size_t nheld;
    size_t seq[OCMAX];
    int part[OCMAX];
    int qname_bad;
    int closed, stop_calls, stop_status;
} oct;

static size_t oseq_of(const char *p, size_t len)
{
    const char *bar = memchr(p, '|', len);
    return bar ? strtoul(bar + 1, NULL, 10) : (size_t)-1;
}

static void oct_on_message(redq_consumer *c, redq_message *m, void *user)
{
    (void)c;
    oct *t = user;
    if (t->got < OCMAX) {
        t->seq[t->got] = oseq_of(redq_msg_data(m), redq_msg_len(m));
        t->part[t->got] = redq_msg_partition(m);
    }
    if (strcmp(redq_msg_queue(m), "oq") != 0)
        t->qname_bad++;
    t->got++;
    if (t->hold && t->nheld < OCMAX)
        t->held[t->nheld++] = m;
    else
        redq_ack(m);
}

static void oct_stopped(redq_consumer *c, int status, void *user)
{
    (void)c;
    oct *t = user;
    t->stop_calls++;
    t->stop_status = status;
}

static bool oct_got(void *arg)
{
    size_t *v = arg;
    return ((oct *)(uintptr_t)v[0])->got >= v[1];
}

static void oct_new(oct *t, int guarantee, size_t pool)
{
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fxc_url();
    co.on_message = oct_on_message;
    co.on_message_user = t;
    co.guarantee = guarantee;
    co.pool_size = pool;
    co.pop_timeout_ms = 200;
    co.promote_interval_ms = 50;
    const char *q[] = {"oq"};
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &co, q, 1), 0);
}

static void oct_close(oct *t)
{
    if (!t->closed) {
        cr_assert_eq(redq_consumer_close(t->c, int_closed, &t->closed), 0);
        cr_assert(fx_run_until(flag_set, &t->closed, 10000));
    }
}

static int produce_keyed(fx_tracker *t, size_t seq, size_t nkeys)
{
    char key[32], pl[96];
    snprintf(key, sizeof key, "user%zu", seq % nkeys);
    int n = snprintf(pl, sizeof pl, "oq|%zu|%s", seq, key);
    return redq_produce_key(t->p, "oq", key, strlen(key), pl, (size_t)n,
                            (void *)(uintptr_t)(seq + 1));
}

static fx_tracker *fl_tracker;
static int fl_last_status;
static size_t fl_last_reports;
static char (*kc_ids)[64];
static size_t kc_nids;
static void kc_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)t;
    (void)p;
    if (kc_nids < 4096)
        snprintf(kc_ids[kc_nids], 64, "%s", r->id);
    kc_nids++;
}

static int cmp_id(const void *a, const void *b)
{
    return strcmp(a, b);
}

static void on_flushed(redq_producer *p, int status, void *user)
{
    (void)p;
    (*(int *)user)++;
    fl_last_status = status;
    fl_last_reports = fl_tracker->reports;
}

/* Keyed order per key, every message once, every partition consumed,
 * logical names in messages; the outer handle's flush(-1) ends once every
 * report was made. */
static void keyed_case(int guarantee)
{
    oadm d;
    oadm_open(&d);
    oadm_parts(&d, "oq", 6);
    cr_assert_eq(d.n, 1);
    size_t N = 600, K = 24;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    kc_ids = calloc(4096, 64);
    kc_nids = 0;
    t->on_report = kc_hook;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fxc_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, s, K), 0);
    static int fl_calls, fl_status;
    static size_t fl_reports;
    fl_calls = 0;
    fl_status = 99;
    fl_tracker = t;
    cr_assert_eq(redq_producer_flush(t->p, -1, on_flushed, &fl_calls), 0);
    cr_assert(fx_run_until(flag_set, &fl_calls, 20000),
              "flush(-1) did not end: reports %zu of %zu", t->reports, N);
    fl_status = fl_last_status;
    fl_reports = fl_last_reports;
    cr_assert_eq(fl_status, 0);
    cr_assert_eq(fl_reports, N, "flush ended before the reports");
    cr_assert(fx_wait_reports(t, N, 20000), "reports %zu", t->reports);
    cr_assert_eq(t->ok, N, "failed %zu", t->failed);
    /* "ids stay <producer id>-<n>, unique across partitions": 1..N */
    cr_assert_eq(kc_nids, N);
    {
        const char *pid = redq_producer_id(t->p);
        unsigned *hit = calloc(N + 1, sizeof *hit);
        size_t pl = strlen(pid);
        for (size_t i = 0; i < N; i++) {
            cr_assert_eq(strncmp(kc_ids[i], pid, pl), 0, "id '%s'",
                         kc_ids[i]);
            cr_assert_eq(kc_ids[i][pl], '-');
            size_t n = strtoul(kc_ids[i] + pl + 1, NULL, 10);
            cr_assert(n >= 1 && n <= N, "id '%s'", kc_ids[i]);
            hit[n]++;
        }
        for (size_t n = 1; n <= N; n++)
            cr_assert_eq(hit[n], 1, "id n=%zu made %u times", n, hit[n]);
        free(hit);
        (void)cmp_id;
    }
    free(kc_ids);
    oct *c = calloc(1, sizeof *c);
    oct_new(c, guarantee, 2);
    size_t v[2] = {(size_t)(uintptr_t)c, N};
    cr_assert(fx_run_until(oct_got, v, 30000), "consumed %zu of %zu", c->got,
              N);
    fx_run_for(300);
    cr_assert_eq(c->got, N, "duplicates: %zu", c->got);
    cr_assert_eq(c->qname_bad, 0);
    unsigned *seen = calloc(N, sizeof *seen);
    size_t last[64];
    int kpart[64];
    for (size_t k = 0; k < K; k++) {
        last[k] = (size_t)-1;
        kpart[k] = -1;
    }
    int parts[6] = {0};
    for (size_t i = 0; i < N; i++) {
        size_t s = c->seq[i];
        cr_assert_lt(s, N);
        seen[s]++;
        size_t k = s % K;
        cr_assert(c->part[i] >= 0 && c->part[i] < 6, "partition %d",
                  c->part[i]);
        parts[c->part[i]]++;
        if (kpart[k] == -1)
            kpart[k] = c->part[i];
        cr_assert_eq(kpart[k], c->part[i], "key %zu in two partitions", k);
        /* per-key order holds per partition; with a pool of 2 batches of
         * one partition may interleave with others, not within itself */
        if (last[k] != (size_t)-1)
            cr_assert_gt(s, last[k], "key %zu: %zu after %zu", k, s,
                         last[k]);
        last[k] = s;
    }
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(seen[s], 1, "message %zu seen %u times", s, seen[s]);
    int used = 0;
    for (int i = 0; i < 6; i++)
        used += parts[i] > 0;
    cr_assert_geq(used, 3, "24 keys over 6 partitions used %d", used);
    free(seen);
    oct_close(c);
    free(c);
    oadm_close(&d);
}

Test(outsider_cluster, keyed_order_every_message_once_alo)
{
    keyed_case(REDQ_AT_LEAST_ONCE);
}

/* Lifetimes through the outer consumer: held messages of several
 * partitions survive a timed-out stop (ack: REDQ_ETIMEDOUT, given back),
 * and a close (ack: REDQ_ECLOSED); another consumer gets every one. */
Test(outsider_cluster, held_messages_across_stop_and_close)
{
    oadm d;
    oadm_open(&d);
    oadm_parts(&d, "oq", 4);
    size_t N = 40;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fxc_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, s, 16), 0);
    cr_assert(fx_wait_reports(t, N, 20000));
    cr_assert_eq(t->ok, N);
    oct *c = calloc(1, sizeof *c);
    c->hold = 1;
    oct_new(c, REDQ_AT_LEAST_ONCE, 1);
    size_t v[2] = {(size_t)(uintptr_t)c, N};
    cr_assert(fx_run_until(oct_got, v, 30000), "consumed %zu", c->got);
    cr_assert_eq(redq_consumer_stop(c->c, 100, oct_stopped, c), 0);
    cr_assert(fx_run_until(flag_set, &c->stop_calls, 10000));
    cr_assert_eq(c->stop_status, REDQ_ETIMEDOUT);
    cr_assert_eq(redq_ack(c->held[0]), REDQ_ETIMEDOUT);
    cr_assert_eq(redq_consumer_close(c->c, int_closed, &c->closed), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 10000));
    for (size_t i = 1; i < c->nheld; i++) {
        const char *p = redq_msg_data(c->held[i]);
        cr_assert_eq(memcmp(p, "oq|", 3), 0);
        int rc = redq_ack(c->held[i]);
        cr_assert(rc == REDQ_ECLOSED || rc == REDQ_ETIMEDOUT,
                  "ack after stop+close: %s", redq_err_name(rc));
    }
    oct *c2 = calloc(1, sizeof *c2);
    oct_new(c2, REDQ_AT_LEAST_ONCE, 1);
    size_t v2[2] = {(size_t)(uintptr_t)c2, N};
    cr_assert(fx_run_until(oct_got, v2, 30000), "given back %zu of %zu",
              c2->got, N);
    oct_close(c2);
    free(c2);
    free(c);
    oadm_close(&d);
}

/* Close the outer consumer from inside on_message (contract 7), holding
 * the rest: the close callback comes, later finishes say REDQ_ECLOSED,
 * everything comes back to another consumer. */
static oct *cim_t;
static int cim_rc = 99, cim_closed;
static void cim_on_message(redq_consumer *c, redq_message *m, void *user)
{
    oct *t = user;
    t->got++;
    if (t->got == 1) {
        cim_rc = redq_consumer_close(c, int_closed, &cim_closed);
    }
    if (t->nheld < OCMAX)
        t->held[t->nheld++] = m;
}

Test(outsider_cluster, close_inside_on_message_outer_handle)
{
    oadm d;
    oadm_open(&d);
    oadm_parts(&d, "oq", 3);
    size_t N = 30;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fxc_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, s, 9), 0);
    cr_assert(fx_wait_reports(t, N, 20000));
    cr_assert_eq(t->ok, N);
    cim_t = calloc(1, sizeof *cim_t);
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fxc_url();
    co.on_message = cim_on_message;
    co.on_message_user = cim_t;
    co.pop_timeout_ms = 200;
    const char *q[] = {"oq"};
    cim_closed = 0;
    cr_assert_eq(redq_consumer_new(&cim_t->c, fx_base(), &co, q, 1), 0);
    cr_assert(fx_run_until(flag_set, &cim_closed, 20000),
              "close callback never came (got %zu)", cim_t->got);
    cr_assert_eq(cim_rc, 0);
    for (size_t i = 0; i < cim_t->nheld; i++)
        cr_assert_eq(redq_ack(cim_t->held[i]), REDQ_ECLOSED);
    oct *c2 = calloc(1, sizeof *c2);
    oct_new(c2, REDQ_AT_LEAST_ONCE, 1);
    size_t v2[2] = {(size_t)(uintptr_t)c2, N};
    cr_assert(fx_run_until(oct_got, v2, 30000), "given back %zu of %zu",
              c2->got, N);
    oct_close(c2);
    free(c2);
    free(cim_t);
    oadm_close(&d);
}

/* redq_report.id on a frames queue that is partitioned on the cluster:
 * "make the queue a frames queue once, before producing" and the consumer
 * sees the report's id. */
static char (*fr_rid)[64];
static void fr_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)p;
    size_t s = (size_t)(uintptr_t)r->opaque - 1;
    if (s < t->cap)
        snprintf(fr_rid[s], 64, "%s", r->id);
}

static char fr_got_id[64][64];
static size_t fr_got_seq[64], fr_got;
static int fr_part[64];
static void fr_on_message(redq_consumer *c, redq_message *m, void *user)
{
    (void)c;
    (void)user;
    if (fr_got < 64) {
        snprintf(fr_got_id[fr_got], 64, "%s", redq_msg_id(m));
        fr_got_seq[fr_got] = oseq_of(redq_msg_data(m), redq_msg_len(m));
        fr_part[fr_got] = redq_msg_partition(m);
    }
    fr_got++;
    redq_ack(m);
}

static bool fr_all(void *arg)
{
    return fr_got >= *(size_t *)arg;
}

Test(outsider_cluster, frames_partitioned_ids_reach_the_consumer)
{
    oadm d;
    oadm_open(&d);
    oadm_parts(&d, "oq", 3);
    d.done = 0;
    cr_assert_eq(redq_admin_set_format(d.a, "oq", REDQ_FORMAT_FRAMES,
                                       oadm_done, &d), 0);
    cr_assert(fx_run_until(flag_set, &d.done, 10000));
    cr_assert_eq(d.status, 0, "%s", d.err);
    size_t N = 30;
    fr_rid = calloc(N, 64);
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    t->on_report = fr_hook;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fxc_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, s, 9), 0);
    cr_assert(fx_wait_reports(t, N, 20000));
    cr_assert_eq(t->ok, N);
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fxc_url();
    co.on_message = fr_on_message;
    co.pop_timeout_ms = 200;
    const char *q[] = {"oq"};
    redq_consumer *c;
    fr_got = 0;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &co, q, 1), 0);
    cr_assert(fx_run_until(fr_all, &N, 30000), "consumed %zu", fr_got);
    size_t bad = 0;
    char first[160] = "";
    for (size_t i = 0; i < N; i++) {
        size_t s = fr_got_seq[i];
        if (s >= N || strcmp(fr_got_id[i], fr_rid[s]) != 0)
            if (!bad++)
                snprintf(first, sizeof first,
                         "partition %d: '%.63s' vs '%.63s'", fr_part[i],
                         fr_got_id[i], s < N ? fr_rid[s] : "?");
    }
    int closed = 0;
    redq_consumer_close(c, int_closed, &closed);
    cr_assert(fx_run_until(flag_set, &closed, 10000));
    free(fr_rid);
    oadm_close(&d);
    cr_assert_eq(bad, 0, "%zu of %zu without their report id; first %s",
                 bad, N, first);
}
