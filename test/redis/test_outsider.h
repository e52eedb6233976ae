/*
 * Helpers shared by the outsider's tests (test_outsider.c,
 * test_outsider_part.c): a recording consumer, a synchronous admin, a load
 * generator, flush and owned-buffer recorders. Everything is static (each
 * test binary's translation unit gets its own copy; criterion runs each
 * test in its own process).
 */
#ifndef REDQ_TEST_OUTSIDER_H
#define REDQ_TEST_OUTSIDER_H

#include <criterion/criterion.h>

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

#define RQO_UNUSED __attribute__((unused))

/* ---- small helpers ------------------------------------------------------- */

RQO_UNUSED static bool is_hex16(const char *s)
{
    if (!s || strlen(s) != 16)
        return false;
    for (int i = 0; i < 16; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

RQO_UNUSED static const char *dead_url(void)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "redis://127.0.0.1:%d", fx_free_port());
    return buf;
}

RQO_UNUSED static bool flag_set(void *arg)
{
    return *(int *)arg != 0;
}

RQO_UNUSED static void int_closed(void *user)
{
    (*(int *)user)++;
}

RQO_UNUSED static bool int_ge2(void *arg)
{
    return *(int *)arg >= 2;
}

/* ---- admin, synchronously ------------------------------------------------ */

typedef struct adm {
    redq_admin *a;
    int done, status;
    uint64_t n;
    char err[256];
    int closed;
} adm;

RQO_UNUSED static void adm_done(redq_admin *a, int status, const char *errstr,
                     uint64_t n, void *user)
{
    (void)a;
    adm *d = user;
    d->done++;
    d->status = status;
    d->n = n;
    snprintf(d->err, sizeof d->err, "%s", errstr ? errstr : "");
}

RQO_UNUSED static void adm_closed(void *user)
{
    ((adm *)user)->closed++;
}

RQO_UNUSED static void adm_open(adm *d)
{
    memset(d, 0, sizeof *d);
    redq_admin_options o;
    redq_admin_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(redq_admin_new(&d->a, fx_base(), &o), 0);
}

RQO_UNUSED static void adm_close(adm *d)
{
    cr_assert_eq(redq_admin_close(d->a, adm_closed, d), 0);
    cr_assert(fx_run_until(flag_set, &d->closed, 5000));
}

/* Returns the call's return code; status and n in d. */
RQO_UNUSED static int adm_set_format(adm *d, const char *q, int fmt)
{
    d->done = 0;
    int rc = redq_admin_set_format(d->a, q, fmt, adm_done, d);
    if (rc == 0)
        cr_assert(fx_run_until(flag_set, &d->done, 5000));
    return rc;
}

RQO_UNUSED static int adm_set_parts(adm *d, const char *q, int n)
{
    d->done = 0;
    int rc = redq_admin_set_partitions(d->a, q, n, adm_done, d);
    if (rc == 0)
        cr_assert(fx_run_until(flag_set, &d->done, 5000));
    return rc;
}

/* ---- a consumer that records --------------------------------------------- */

#define CMAX 8192

typedef struct ctr {
    redq_consumer *c;
    int hold;                 /* 1: keep messages, 0: ack in the handler */
    int close_in_handler;     /* close from inside the first delivery */
    int close_rc;
    size_t got;
    size_t after_close_cb;    /* deliveries after the close callback */
    redq_message *held[CMAX];
    size_t nheld;
    char *payload[CMAX];      /* copies, by delivery order */
    char id[CMAX][64];
    int part[CMAX];
    char queue[CMAX][64];
    long long enq[CMAX];
    int closed;
    int stop_calls, stop_status;
    int stop_before_close;    /* the stop cb came before the close cb */
    int remove_calls, remove_status;
    int remove_after_close;
    void *on_message_user_seen;
} ctr;

RQO_UNUSED static void ctr_on_message(redq_consumer *c, redq_message *m, void *user)
{
    ctr *t = user;
    t->on_message_user_seen = user;
    if (t->closed)
        t->after_close_cb++;
    if (t->got < CMAX) {
        size_t i = t->got;
        size_t len = redq_msg_len(m);
        t->payload[i] = malloc(len + 1);
        memcpy(t->payload[i], redq_msg_data(m), len);
        t->payload[i][len] = 0;
        snprintf(t->id[i], sizeof t->id[i], "%s", redq_msg_id(m));
        t->part[i] = redq_msg_partition(m);
        snprintf(t->queue[i], sizeof t->queue[i], "%s", redq_msg_queue(m));
        t->enq[i] = redq_msg_enqueued_ms(m);
    }
    t->got++;
    if (t->close_in_handler) {
        t->close_in_handler = 0;
        redq_ack(m);
        t->close_rc = redq_consumer_close(c, NULL, NULL);
        return;
    }
    if (t->hold && t->nheld < CMAX)
        t->held[t->nheld++] = m;
    else
        redq_ack(m);
}

RQO_UNUSED static void ctr_closed(void *user)
{
    ((ctr *)user)->closed++;
}

RQO_UNUSED static void ctr_stopped(redq_consumer *c, int status, void *user)
{
    (void)c;
    ctr *t = user;
    t->stop_calls++;
    t->stop_status = status;
    t->stop_before_close = !t->closed;
}

RQO_UNUSED static void ctr_removed(redq_consumer *c, int status, void *user)
{
    (void)c;
    ctr *t = user;
    t->remove_calls++;
    t->remove_status = status;
    t->remove_after_close = t->closed;
}

RQO_UNUSED static void ctr_opts(redq_consumer_options *o, ctr *t, int guarantee)
{
    redq_consumer_options_init(o);
    o->url = fx_url();
    o->on_message = ctr_on_message;
    o->on_message_user = t;
    o->guarantee = guarantee;
    o->pop_timeout_ms = 200;
    o->promote_interval_ms = 50;
    o->retry_base_ms = 50;
    o->retry_max_ms = 100;
}

RQO_UNUSED static void ctr_new(ctr *t, const redq_consumer_options *o,
                    const char *const *queues, size_t n)
{
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), o, queues, n), 0);
}

RQO_UNUSED static bool ctr_got(void *arg)
{
    size_t *v = arg;
    return ((ctr *)(uintptr_t)v[0])->got >= v[1];
}

RQO_UNUSED static bool ctr_wait(ctr *t, size_t n, int ms)
{
    size_t v[2] = {(size_t)(uintptr_t)t, n};
    return fx_run_until(ctr_got, v, ms);
}

RQO_UNUSED static void ctr_close(ctr *t)
{
    if (!t->closed) {
        int rc = redq_consumer_close(t->c, ctr_closed, t);
        if (rc == 0)
            cr_assert(fx_run_until(flag_set, &t->closed, 10000),
                      "consumer close callback did not come");
    }
    for (size_t i = 0; i < t->nheld; i++)
        if (t->held[i])
            redq_nack(t->held[i], NULL);
    t->nheld = 0;
}

RQO_UNUSED static void ctr_free(ctr *t)
{
    for (size_t i = 0; i < t->got && i < CMAX; i++)
        free(t->payload[i]);
    free(t);
}

RQO_UNUSED static ctr *ctr_alloc(void)
{
    ctr *t = calloc(1, sizeof *t);
    cr_assert(t);
    return t;
}

/* Push n plain payloads "name|i" onto q with the control client. */
RQO_UNUSED static void push_n(const char *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char pl[128];
        snprintf(pl, sizeof pl, "%s|%zu", q, i);
        fx_cmd_ok("LPUSH %s %s", q, pl);
    }
}

typedef struct byid {
    char (*rid)[64]; /* report id per seq */
} byid;

RQO_UNUSED static void byid_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)p;
    byid *b = t->hook_arg;
    size_t seq = (size_t)(uintptr_t)r->opaque - 1;
    if (seq < t->cap)
        snprintf(b->rid[seq], 64, "%s", r->id ? r->id : "");
}

RQO_UNUSED static size_t seq_of(const char *payload)
{
    const char *bar = strchr(payload, '|');
    return bar ? strtoul(bar + 1, NULL, 10) : (size_t)-1;
}

typedef struct loadgen {
    fx_tracker *t;
    const char *q;
    size_t next, cap;
    struct event *ev;
    int stop;
    int per_tick; /* 0: 20 */
    int keyed;    /* odd seqs through redq_produce_key */
} loadgen;

RQO_UNUSED static int produce_keyed(fx_tracker *t, const char *q, size_t seq,
                         size_t nkeys);

RQO_UNUSED static void loadgen_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    loadgen *g = arg;
    if (g->stop)
        return;
    int per = g->per_tick ? g->per_tick : 20;
    for (int i = 0; i < per && g->next < g->cap; i++) {
        int rc = (g->keyed && (g->next % 2))
                     ? produce_keyed(g->t, g->q, g->next, 8)
                     : fx_produce(g->t, g->q, g->next, 12);
        if (rc != 0)
            break;
        g->next++;
    }
    struct timeval tv = {0, 5000};
    if (g->next < g->cap)
        evtimer_add(g->ev, &tv);
}

RQO_UNUSED static void loadgen_start(loadgen *g)
{
    g->ev = evtimer_new(fx_base(), loadgen_tick, g);
    struct timeval tv = {0, 0};
    evtimer_add(g->ev, &tv);
}

RQO_UNUSED static bool loadgen_at(void *arg)
{
    size_t *v = arg;
    return ((loadgen *)(uintptr_t)v[0])->next >= v[1];
}

RQO_UNUSED static void loadgen_wait(loadgen *g, size_t n, int ms)
{
    size_t v[2] = {(size_t)(uintptr_t)g, n};
    cr_assert(fx_run_until(loadgen_at, v, ms), "generator at %zu of %zu",
              g->next, n);
}

RQO_UNUSED static void loadgen_free(loadgen *g)
{
    if (g->ev)
        event_free(g->ev);
    g->ev = NULL;
}

/* every seq 0..n-1 delivered exactly once */
RQO_UNUSED static void assert_each_once(ctr *c, size_t n)
{
    unsigned *seen = calloc(n, sizeof *seen);
    size_t bad = 0, hdr = 0;
    for (size_t i = 0; i < c->got && i < CMAX; i++) {
        if (strncmp(c->payload[i], "RQ1", 3) == 0)
            hdr++;
        size_t s = seq_of(c->payload[i]);
        if (s < n)
            seen[s]++;
        else
            bad++;
    }
    size_t missing = 0, dup = 0, first_missing = (size_t)-1;
    for (size_t s = 0; s < n; s++) {
        if (seen[s] == 0 && missing++ == 0)
            first_missing = s;
        if (seen[s] > 1)
            dup++;
    }
    free(seen);
    cr_assert_eq(hdr, 0, "%zu payloads delivered with a frame header", hdr);
    cr_assert_eq(bad, 0, "%zu unparsable payloads", bad);
    cr_assert_eq(missing, 0, "%zu of %zu never delivered (first %zu)",
                 missing, n, first_missing);
    cr_assert_eq(dup, 0, "%zu delivered twice", dup);
}

typedef struct keyed {
    fx_tracker *t;
    size_t nkeys, per_key;
} keyed;

RQO_UNUSED static int produce_keyed(fx_tracker *t, const char *q, size_t seq,
                         size_t nkeys)
{
    char key[24], pl[64];
    snprintf(key, sizeof key, "k%zu", seq % nkeys);
    int n = snprintf(pl, sizeof pl, "%s|%zu|%s", q, seq, key);
    return redq_produce_key(t->p, q, key, strlen(key), pl, (size_t)n,
                            (void *)(uintptr_t)(seq + 1));
}

/* Raising and lowering P under load: "Nothing is moved or lost";
 * "consumers drain them forever"; reports carry the logical name. The
 * consumer runs the whole time; every message stored is consumed exactly
 * once. */

typedef struct fl {
    int calls, status;
    size_t reports_at;
    uint64_t at_us;
    int order;
} fl;

RQO_UNUSED static int fl_order;
RQO_UNUSED static fx_tracker *fl_t;

RQO_UNUSED static void fl_cb(redq_producer *p, int status, void *user)
{
    (void)p;
    fl *f = user;
    f->calls++;
    f->status = status;
    f->at_us = fx_now_us();
    f->order = ++fl_order;
    f->reports_at = fl_t ? fl_t->reports : 0;
}

typedef struct own {
    int freed;
    int freed_before_report; /* free_cb before its report callback */
    int reported;
    int report_ptr_ok;
    int closed_before_free;
} own;

#define NOWN 64
RQO_UNUSED static own OW[NOWN];
RQO_UNUSED static char *OWBUF[NOWN];
RQO_UNUSED static int ow_closed;

RQO_UNUSED static void ow_free(void *payload, void *user)
{
    own *o = user;
    size_t i = (size_t)(o - OW);
    if (payload != OWBUF[i])
        o->report_ptr_ok = -100;
    if (!o->reported)
        o->freed_before_report++;
    if (ow_closed)
        o->closed_before_free++;
    o->freed++;
    free(payload);
}

RQO_UNUSED static void ow_report(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)t;
    (void)p;
    size_t i = (size_t)(uintptr_t)r->opaque - 1;
    if (i < NOWN) {
        OW[i].reported++;
        if (r->payload == OWBUF[i])
            OW[i].report_ptr_ok++;
    }
}

RQO_UNUSED static int own_produce(redq_producer *p, const char *q, size_t i,
                       size_t len)
{
    OWBUF[i] = malloc(len ? len : 1);
    memset(OWBUF[i], 'a' + (int)(i % 26), len ? len : 1);
    int rc = redq_produce_owned(p, q, OWBUF[i], len, ow_free, &OW[i],
                                (void *)(uintptr_t)(i + 1));
    if (rc != 0) {
        free(OWBUF[i]);
        OWBUF[i] = NULL;
    }
    return rc;
}

RQO_UNUSED static void ow_closecb(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    ow_report(t, p, r);
}

RQO_UNUSED static bool ow_all_freed(void *arg)
{
    size_t n = *(size_t *)arg;
    for (size_t i = 0; i < n; i++)
        if (OWBUF[i] && OW[i].freed == 0)
            return false;
    return true;
}

#endif /* REDQ_TEST_OUTSIDER_H */
