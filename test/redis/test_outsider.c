/*
 * An outsider's adversarial tests of what is new in 0.9 (issue 12, issue 11
 * on one server), written from include/redq.h, README.md, docs/DESIGN.md and
 * docs/RELIABILITY.md only, through the public API as an embedder would hit
 * it: the three option structs, message ids and formats, lifetimes, per-call
 * deadlines, on_ready's hysteresis, redq_reject, queues added and removed on
 * a running consumer, redq_produce_owned and partitioned queues.
 *
 * Each test asserts what the documents promise; the comment above it quotes
 * the promise. Callbacks only record; assertions run after the loop returns.
 */
#include <criterion/criterion.h>

#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

TestSuite(outsider, .init = fx_setup, .fini = fx_teardown, .timeout = 120);

/* ---- small helpers ------------------------------------------------------- */

static bool is_hex16(const char *s)
{
    if (!s || strlen(s) != 16)
        return false;
    for (int i = 0; i < 16; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

static const char *dead_url(void)
{
    static char buf[64];
    snprintf(buf, sizeof buf, "redis://127.0.0.1:%d", fx_free_port());
    return buf;
}

static bool flag_set(void *arg)
{
    return *(int *)arg != 0;
}

static void int_closed(void *user)
{
    (*(int *)user)++;
}

static bool int_ge2(void *arg)
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

static void adm_done(redq_admin *a, int status, const char *errstr,
                     uint64_t n, void *user)
{
    (void)a;
    adm *d = user;
    d->done++;
    d->status = status;
    d->n = n;
    snprintf(d->err, sizeof d->err, "%s", errstr ? errstr : "");
}

static void adm_closed(void *user)
{
    ((adm *)user)->closed++;
}

static void adm_open(adm *d)
{
    memset(d, 0, sizeof *d);
    redq_admin_options o;
    redq_admin_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(redq_admin_new(&d->a, fx_base(), &o), 0);
}

static void adm_close(adm *d)
{
    cr_assert_eq(redq_admin_close(d->a, adm_closed, d), 0);
    cr_assert(fx_run_until(flag_set, &d->closed, 5000));
}

/* Returns the call's return code; status and n in d. */
static int adm_set_format(adm *d, const char *q, int fmt)
{
    d->done = 0;
    int rc = redq_admin_set_format(d->a, q, fmt, adm_done, d);
    if (rc == 0)
        cr_assert(fx_run_until(flag_set, &d->done, 5000));
    return rc;
}

static int adm_set_parts(adm *d, const char *q, int n)
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

static void ctr_on_message(redq_consumer *c, redq_message *m, void *user)
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

static void ctr_closed(void *user)
{
    ((ctr *)user)->closed++;
}

static void ctr_stopped(redq_consumer *c, int status, void *user)
{
    (void)c;
    ctr *t = user;
    t->stop_calls++;
    t->stop_status = status;
    t->stop_before_close = !t->closed;
}

static void ctr_removed(redq_consumer *c, int status, void *user)
{
    (void)c;
    ctr *t = user;
    t->remove_calls++;
    t->remove_status = status;
    t->remove_after_close = t->closed;
}

static void ctr_opts(redq_consumer_options *o, ctr *t, int guarantee)
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

static void ctr_new(ctr *t, const redq_consumer_options *o,
                    const char *const *queues, size_t n)
{
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), o, queues, n), 0);
}

static bool ctr_got(void *arg)
{
    size_t *v = arg;
    return ((ctr *)(uintptr_t)v[0])->got >= v[1];
}

static bool ctr_wait(ctr *t, size_t n, int ms)
{
    size_t v[2] = {(size_t)(uintptr_t)t, n};
    return fx_run_until(ctr_got, v, ms);
}

static void ctr_close(ctr *t)
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

static void ctr_free(ctr *t)
{
    for (size_t i = 0; i < t->got && i < CMAX; i++)
        free(t->payload[i]);
    free(t);
}

static ctr *ctr_alloc(void)
{
    ctr *t = calloc(1, sizeof *t);
    cr_assert(t);
    return t;
}

/* Push n plain payloads "name|i" onto q with the control client. */
static void push_n(const char *q, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        char pl[128];
        snprintf(pl, sizeof pl, "%s|%zu", q, i);
        fx_cmd_ok("LPUSH %s %s", q, pl);
    }
}

/* ======================================================================== */
/* Options                                                                   */
/* ======================================================================== */

/* redq.h "Versions": "A size below version 1's leaves version 0, which
 * redq_*_new() refuses" and "nothing beyond it is written". */
Test(outsider, options_init_sized_too_small_leaves_version_0_refused)
{
    redq_producer_options po;
    memset(&po, 0x5a, sizeof po);
    po.version = 0;
    redq_producer_options_init_sized(&po, offsetof(redq_producer_options, url)
                                              + sizeof po.url);
    cr_assert_eq(po.version, 0, "version %d for a size below v1's",
                 po.version);
    const unsigned char *b = (const unsigned char *)&po;
    for (size_t i = offsetof(redq_producer_options, url) + sizeof po.url;
         i < sizeof po; i++)
        cr_assert_eq(b[i], 0x5a, "byte %zu beyond size written", i);
    /* complete it by hand: version 0 must still be refused */
    redq_producer_options full;
    redq_producer_options_init(&full);
    full.version = 0;
    char err[256] = "x";
    full.errbuf = err;
    full.errbuf_size = sizeof err;
    redq_producer *p = NULL;
    cr_assert_eq(redq_producer_new(&p, fx_base(), &full), REDQ_EINVAL);
    cr_assert_null(p, "out-parameter changed on failure");
    /* errbuf is not asserted here: with version 0 the caller's struct may
     * be too small to hold errbuf (reported as a doc ambiguity) */

    redq_consumer_options co;
    memset(&co, 0x5a, sizeof co);
    redq_consumer_options_init_sized(&co, 2);
    cr_assert_eq(((unsigned char *)&co)[2], 0x5a);
    redq_admin_options ao;
    memset(&ao, 0x5a, sizeof ao);
    redq_admin_options_init_sized(&ao, 0);
    cr_assert_eq(((unsigned char *)&ao)[0], 0x5a, "size 0 wrote a byte");
    /* NULL: nothing happens */
    redq_producer_options_init_sized(NULL, sizeof po);
    redq_consumer_options_init_sized(NULL, sizeof co);
    redq_admin_options_init_sized(NULL, sizeof ao);
}

/* "When size is larger than the library's struct the rest is zeroed, and
 * opts->version tells the caller which fields this library knows." */
Test(outsider, options_init_sized_larger_zeroes_the_rest)
{
    struct {
        redq_producer_options o;
        unsigned char tail[96];
    } pb;
    memset(&pb, 0xff, sizeof pb);
    redq_producer_options_init_sized(&pb.o, sizeof pb);
    cr_assert_eq(pb.o.version, REDQ_PRODUCER_OPTIONS_VERSION);
    for (size_t i = 0; i < sizeof pb.tail; i++)
        cr_assert_eq(pb.tail[i], 0, "tail byte %zu not zeroed", i);
    cr_assert_eq(pb.o.max_pending_msgs, 100000);
    cr_assert_eq(pb.o.message_timeout_ms, 30000);
    cr_assert_null(pb.o.on_report_user);

    struct {
        redq_consumer_options o;
        unsigned char tail[96];
    } cb;
    memset(&cb, 0xff, sizeof cb);
    redq_consumer_options_init_sized(&cb.o, sizeof cb);
    cr_assert_eq(cb.o.version, REDQ_CONSUMER_OPTIONS_VERSION);
    for (size_t i = 0; i < sizeof cb.tail; i++)
        cr_assert_eq(cb.tail[i], 0, "tail byte %zu not zeroed", i);
    cr_assert_eq(cb.o.max_attempts, 5);
    cr_assert_eq(cb.o.stop_timeout_ms, 30000);

    struct {
        redq_admin_options o;
        unsigned char tail[96];
    } ab;
    memset(&ab, 0xff, sizeof ab);
    redq_admin_options_init_sized(&ab.o, sizeof ab);
    cr_assert_eq(ab.o.version, REDQ_ADMIN_OPTIONS_VERSION);
    for (size_t i = 0; i < sizeof ab.tail; i++)
        cr_assert_eq(ab.tail[i], 0, "tail byte %zu not zeroed", i);
    cr_assert_eq(ab.o.connect_timeout_ms, 2000);
}

/* redq_producer_new: "REDQ_EINVAL ... opts->version is not one this library
 * knows" and errbuf says why; out untouched (contract 5). */
Test(outsider, options_unknown_version_refused_all_three)
{
    char err[256];
    redq_producer_options po;
    redq_producer_options_init(&po);
    po.version = REDQ_PRODUCER_OPTIONS_VERSION + 1000;
    po.errbuf = err;
    po.errbuf_size = sizeof err;
    redq_producer *p = (redq_producer *)0x1;
    cr_assert_eq(redq_producer_new(&p, fx_base(), &po), REDQ_EINVAL);
    cr_assert_eq(p, (redq_producer *)0x1);
    cr_assert(fx_contains_nocase(err, "version"), "errbuf '%s'", err);

    ctr *t = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, t, REDQ_AT_LEAST_ONCE);
    co.version = -1;
    co.errbuf = err;
    co.errbuf_size = sizeof err;
    const char *q[] = {"q"};
    redq_consumer *c = NULL;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &co, q, 1), REDQ_EINVAL);
    cr_assert(fx_contains_nocase(err, "version"), "errbuf '%s'", err);

    redq_admin_options ao;
    redq_admin_options_init(&ao);
    ao.version = 77;
    ao.errbuf = err;
    ao.errbuf_size = sizeof err;
    redq_admin *a = NULL;
    cr_assert_eq(redq_admin_new(&a, fx_base(), &ao), REDQ_EINVAL);
    cr_assert(fx_contains_nocase(err, "version"), "errbuf '%s'", err);
    ctr_free(t);
}

/* "its checks name the public fields" (DESIGN), errbuf "says which and
 * why", "on success it writes \"\"", "cut to errbuf_size bytes",
 * "never contains a password or other URL user info". */
typedef struct bad_case {
    const char *field;
    void (*apply)(void *o);
} bad_case;

static void bp_stats(void *o) { ((redq_producer_options *)o)->stats_interval_ms = 86400001; }
static void bp_maxmsg(void *o) { ((redq_producer_options *)o)->max_message_bytes = (size_t)513 << 20; }
static void bp_minrep(void *o) { ((redq_producer_options *)o)->min_replicas = 65; }
static void bp_reptmo(void *o) { ((redq_producer_options *)o)->replica_timeout_ms = 0; }
static void bp_client(void *o) { ((redq_producer_options *)o)->client_name = "bad name!"; }
static void bp_negtmo(void *o) { ((redq_producer_options *)o)->message_timeout_ms = -5; }
static void bc_pop(void *o) { ((redq_consumer_options *)o)->pop_timeout_ms = 5; }
static void bc_guar(void *o) { ((redq_consumer_options *)o)->guarantee = 7; }
static void bc_mode(void *o) { ((redq_consumer_options *)o)->pop_mode = 42; }
static void bc_stats(void *o) { ((redq_consumer_options *)o)->stats_interval_ms = -1; }
static void bc_onmsg(void *o) { ((redq_consumer_options *)o)->on_message = NULL; }

Test(outsider, options_errors_name_the_field)
{
    static const bad_case pc[] = {
        {"stats_interval_ms", bp_stats}, {"max_message_bytes", bp_maxmsg},
        {"min_replicas", bp_minrep},     {"replica_timeout_ms", bp_reptmo},
        {"client_name", bp_client},      {"message_timeout_ms", bp_negtmo},
    };
    for (size_t i = 0; i < sizeof pc / sizeof pc[0]; i++) {
        char err[256];
        memset(err, 'Z', sizeof err);
        redq_producer_options o;
        redq_producer_options_init(&o);
        o.errbuf = err;
        o.errbuf_size = sizeof err;
        pc[i].apply(&o);
        redq_producer *p = NULL;
        cr_expect_eq(redq_producer_new(&p, fx_base(), &o), REDQ_EINVAL,
                     "producer %s accepted", pc[i].field);
        cr_expect(strstr(err, pc[i].field) != NULL,
                  "producer errbuf for %s: '%.200s'", pc[i].field, err);
    }
    static const bad_case cc[] = {
        {"pop_timeout_ms", bc_pop},       {"guarantee", bc_guar},
        {"pop_mode", bc_mode},            {"stats_interval_ms", bc_stats},
        {"on_message", bc_onmsg},
    };
    for (size_t i = 0; i < sizeof cc / sizeof cc[0]; i++) {
        char err[256];
        memset(err, 'Z', sizeof err);
        ctr t = {0};
        redq_consumer_options o;
        ctr_opts(&o, &t, REDQ_AT_LEAST_ONCE);
        o.errbuf = err;
        o.errbuf_size = sizeof err;
        cc[i].apply(&o);
        const char *q[] = {"q"};
        redq_consumer *c = NULL;
        cr_expect_eq(redq_consumer_new(&c, fx_base(), &o, q, 1), REDQ_EINVAL,
                     "consumer %s accepted", cc[i].field);
        cr_expect(strstr(err, cc[i].field) != NULL,
                  "consumer errbuf for %s: '%.200s'", cc[i].field, err);
    }
}

Test(outsider, options_errbuf_cut_masked_and_cleared_on_success)
{
    char err[64];
    memset(err, 'Z', sizeof err);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = "redis://alice:hunter2secret@127.0.0.1:notaport";
    o.errbuf = err;
    o.errbuf_size = 8;
    redq_producer *p = NULL;
    cr_assert_eq(redq_producer_new(&p, fx_base(), &o), REDQ_EINVAL);
    cr_assert_lt(strlen(err), 8, "errbuf not cut: '%s'", err);
    cr_assert_eq(err[8], 'Z', "errbuf written beyond errbuf_size");

    char big[512];
    o.errbuf = big;
    o.errbuf_size = sizeof big;
    cr_assert_eq(redq_producer_new(&p, fx_base(), &o), REDQ_EINVAL);
    cr_assert(strstr(big, "url") != NULL, "errbuf '%s'", big);
    cr_assert(strstr(big, "hunter2") == NULL, "password leaked: '%s'", big);
    cr_assert(strstr(big, "alice") == NULL, "user info leaked: '%s'", big);

    /* the password option itself is never shown either */
    o.url = "redis://127.0.0.1:99999";
    o.password = "topsecretpw";
    cr_assert_eq(redq_producer_new(&p, fx_base(), &o), REDQ_EINVAL);
    cr_assert(strstr(big, "topsecretpw") == NULL, "password leaked: '%s'",
              big);

    /* success writes "" */
    o.url = fx_url();
    o.password = NULL;
    strcpy(big, "stale");
    fx_tracker *t = fx_tracker_new(1);
    cr_assert_eq(fx_producer_new(t, &o), 0);
    cr_assert_str_eq(big, "");
}

/* Contract 6: "one user pointer per callback", each the field next to it. */
typedef struct users {
    void *report, *ready, *log, *stats, *msg, *clog, *cstats;
    int reports, readies, logs, stats_n, msgs, clogs, cstats_n;
    int bad;
} users;

static users U;
static int U_report_tag, U_ready_tag, U_log_tag, U_stats_tag, U_msg_tag,
    U_clog_tag, U_cstats_tag;

static void u_report(redq_producer *p, const redq_report *r, void *user)
{
    (void)p;
    (void)r;
    U.reports++;
    if (user != &U_report_tag)
        U.bad++;
}
static void u_ready(redq_producer *p, void *user)
{
    (void)p;
    U.readies++;
    if (user != &U_ready_tag)
        U.bad++;
}
static void u_log(int level, int code, const char *msg, void *user)
{
    (void)level;
    (void)code;
    (void)msg;
    if (user == &U_log_tag)
        U.logs++;
    else if (user == &U_clog_tag)
        U.clogs++;
    else
        U.bad++;
}
static void u_stats(const char *json, size_t len, void *user)
{
    (void)json;
    (void)len;
    if (user == &U_stats_tag)
        U.stats_n++;
    else if (user == &U_cstats_tag)
        U.cstats_n++;
    else
        U.bad++;
}
static void u_msg(redq_consumer *c, redq_message *m, void *user)
{
    (void)c;
    U.msgs++;
    if (user != &U_msg_tag)
        U.bad++;
    redq_ack(m);
}
static bool u_all(void *arg)
{
    (void)arg;
    return U.reports >= 20 && U.readies >= 1 && U.logs >= 1 &&
           U.stats_n >= 1 && U.msgs >= 20 && U.clogs >= 1 && U.cstats_n >= 1;
}
static int u_closed;
static void u_close_cb(void *user)
{
    (void)user;
    u_closed++;
}
static bool u_closed2(void *arg)
{
    (void)arg;
    return u_closed >= 2;
}

Test(outsider, every_callback_gets_its_own_user_pointer)
{
    memset(&U, 0, sizeof U);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.on_report = u_report;
    o.on_report_user = &U_report_tag;
    o.on_ready = u_ready;
    o.on_ready_user = &U_ready_tag;
    o.log = u_log;
    o.log_user = &U_log_tag;
    o.log_level = REDQ_LOG_DEBUG;
    o.on_stats = u_stats;
    o.on_stats_user = &U_stats_tag;
    o.stats_interval_ms = 50;
    o.max_pending_msgs = 10;
    redq_producer *p;
    cr_assert_eq(redq_producer_new(&p, fx_base(), &o), 0);
    int accepted = 0, full = 0;
    for (int i = 0; i < 20; i++) {
        int rc = redq_produce(p, "uq", "x", 1, NULL);
        if (rc == 0)
            accepted++;
        else if (rc == REDQ_EFULL)
            full++;
    }
    cr_assert_eq(accepted, 10);
    cr_assert_eq(full, 10);
    ctr t = {0};
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fx_url();
    co.on_message = u_msg;
    co.on_message_user = &U_msg_tag;
    co.log = u_log;
    co.log_user = &U_clog_tag;
    co.log_level = REDQ_LOG_DEBUG;
    co.on_stats = u_stats;
    co.on_stats_user = &U_cstats_tag;
    co.stats_interval_ms = 50;
    co.pop_timeout_ms = 100;
    (void)t;
    const char *q[] = {"uq"};
    redq_consumer *c;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &co, q, 1), 0);
    cr_assert(fx_run_until(flag_set, &U.readies, 5000));
    for (int i = 0; i < 10; i++)
        cr_assert_eq(redq_produce(p, "uq", "y", 1, NULL), 0);
    cr_assert(fx_run_until(u_all, NULL, 8000),
              "reports %d readies %d logs %d stats %d msgs %d clogs %d "
              "cstats %d", U.reports, U.readies, U.logs, U.stats_n, U.msgs,
              U.clogs, U.cstats_n);
    cr_assert_eq(U.bad, 0, "%d callbacks got another's user pointer", U.bad);
    u_closed = 0;
    redq_producer_close(p, u_close_cb, NULL);
    redq_consumer_close(c, u_close_cb, NULL);
    cr_assert(fx_run_until(u_closed2, NULL, 5000));
}

/* ======================================================================== */
/* Ids                                                                       */
/* ======================================================================== */

typedef struct idrec {
    char pid[32];
    char ids[256][64];
    int status[256];
    const void *payload_ptr[256];
    size_t n;
    int order_bad;
} idrec;

static void idrec_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    idrec *d = t->hook_arg;
    (void)p;
    size_t k = (size_t)(uintptr_t)r->opaque;
    if (k < 256) {
        snprintf(d->ids[k], sizeof d->ids[0], "%s", r->id ? r->id : "");
        d->status[k] = r->status;
        d->payload_ptr[k] = r->payload;
    }
    d->n++;
}

/* redq_report.id: "<producer id>-<n>" (n from 1, in redq_produce() order):
 * made when redq_produce() accepted it ... Every report has one, failed or
 * not. redq_producer_id: 16 lowercase hex digits. Refused calls take no
 * number (the id is made "when redq_produce() accepted it"). */
Test(outsider, report_ids_count_accepted_messages_failed_ones_too)
{
    fx_tracker *t = fx_tracker_new(64);
    idrec *d = calloc(1, sizeof *d);
    t->raw = true;
    t->on_report = idrec_hook;
    t->hook_arg = d;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 300;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    const char *pid = redq_producer_id(t->p);
    cr_assert(is_hex16(pid), "producer id '%s'", pid ? pid : "(null)");
    cr_assert_null(redq_producer_id(NULL));
    cr_assert_eq(redq_produce(t->p, "idq", "a", 1, (void *)0), 0);    /* 1 */
    cr_assert_eq(redq_produce(t->p, "", "b", 1, NULL), REDQ_EINVAL);
    cr_assert_eq(redq_produce(t->p, "idq", NULL, 3, NULL), REDQ_EINVAL);
    cr_assert_eq(redq_produce_delayed(t->p, "idq", "c", 1, -1, NULL),
                 REDQ_EINVAL);
    cr_assert_eq(redq_produce_delayed(t->p, "idq", "c", 1, 10, (void *)1),
                 0); /* 2 */
    cr_assert_eq(redq_produce_key(t->p, "idq", "k", 1, "d", 1, (void *)2),
                 0); /* 3 */
    static char owned[] = "owned";
    cr_assert_eq(redq_produce_owned(t->p, "idq", owned, 5, NULL, NULL,
                                    (void *)3), 0); /* 4 */
    cr_assert(fx_wait_reports(t, 4, 5000));
    cr_assert_eq(d->n, 4);
    for (size_t i = 0; i < 4; i++) {
        char want[64];
        snprintf(want, sizeof want, "%s-%zu", pid, i + 1);
        cr_expect_str_eq(d->ids[i], want, "report %zu (status %d): id '%s',"
                         " want '%s'", i, d->status[i], d->ids[i], want);
        cr_expect_eq(d->status[i], REDQ_ETIMEDOUT);
    }
    free(d);
}

/* Two producers never share an id; ids are in report order for one queue. */
Test(outsider, producer_and_consumer_ids_are_distinct_hex16)
{
    fx_tracker *a = fx_tracker_new(1), *b = fx_tracker_new(1);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(a, &o), 0);
    cr_assert_eq(fx_producer_new(b, &o), 0);
    cr_assert_str_neq(redq_producer_id(a->p), redq_producer_id(b->p));
    ctr *x = ctr_alloc(), *y = ctr_alloc();
    redq_consumer_options co;
    const char *q[] = {"idq"};
    ctr_opts(&co, x, REDQ_AT_LEAST_ONCE);
    ctr_new(x, &co, q, 1);
    ctr_opts(&co, y, REDQ_AT_MOST_ONCE);
    ctr_new(y, &co, q, 1);
    cr_assert(is_hex16(redq_consumer_id(x->c)));
    cr_assert(is_hex16(redq_consumer_id(y->c)));
    cr_assert_str_neq(redq_consumer_id(x->c), redq_consumer_id(y->c));
    cr_assert_null(redq_consumer_id(NULL));
    ctr_close(x);
    ctr_close(y);
    ctr_free(x);
    ctr_free(y);
}

/* Frames queue: redq_msg_id() is the producer's (redq_report.id) "on every
 * attempt", enqueued_ms is the producer's clock. Plain queue: "<consumer
 * id>-<n>", which "the retry carries"; enqueued_ms -1 on a first delivery. */
typedef struct byid {
    char (*rid)[64]; /* report id per seq */
} byid;

static void byid_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)p;
    byid *b = t->hook_arg;
    size_t seq = (size_t)(uintptr_t)r->opaque - 1;
    if (seq < t->cap)
        snprintf(b->rid[seq], 64, "%s", r->id ? r->id : "");
}

static size_t seq_of(const char *payload)
{
    const char *bar = strchr(payload, '|');
    return bar ? strtoul(bar + 1, NULL, 10) : (size_t)-1;
}

static void frames_ids_case(int guarantee)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_format(&d, "fq", REDQ_FORMAT_FRAMES), 0);
    cr_assert_eq(d.status, 0, "set_format: %s", d.err);
    cr_assert_eq(d.n, 1);
    cr_assert_eq(adm_set_format(&d, "fq", REDQ_FORMAT_FRAMES), 0);
    cr_assert_eq(d.n, 0, "n is 0 when it already was the format");
    size_t N = 50;
    fx_tracker *t = fx_tracker_new(N);
    byid b = {calloc(N, 64)};
    t->on_report = byid_hook;
    t->hook_arg = &b;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fx_produce_range(t, "fq", 0, N, 16);
    cr_assert(fx_wait_reports(t, N, 5000));
    fx_assert_reported(t, 0, N, 0);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, guarantee);
    const char *q[] = {"fq"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 5000));
    for (size_t i = 0; i < N; i++) {
        size_t s = seq_of(c->payload[i]);
        cr_assert_lt(s, N, "payload '%s'", c->payload[i]);
        cr_expect_str_eq(c->id[i], b.rid[s], "seq %zu", s);
        cr_expect_neq(c->enq[i], -1, "enqueued_ms unknown on frames queue");
        cr_expect_eq(strncmp(c->payload[i], "RQ1", 3) != 0, 1,
                     "header delivered: '%s'", c->payload[i]);
    }
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
    free(b.rid);
}

Test(outsider, frames_queue_msg_id_is_report_id_alo)
{
    frames_ids_case(REDQ_AT_LEAST_ONCE);
}

Test(outsider, frames_queue_msg_id_is_report_id_amo)
{
    frames_ids_case(REDQ_AT_MOST_ONCE);
}

typedef struct nackonce {
    ctr base;
} nackonce;

static char nk_first_id[64];
static int nk_calls, nk_attempt2;
static long long nk_enq1, nk_enq2;
static char nk_second_id[64];

static void nk_on_message(redq_consumer *c, redq_message *m, void *user)
{
    (void)c;
    (void)user;
    nk_calls++;
    if (nk_calls == 1) {
        snprintf(nk_first_id, sizeof nk_first_id, "%s", redq_msg_id(m));
        nk_enq1 = redq_msg_enqueued_ms(m);
        redq_nack(m, "again");
    } else {
        snprintf(nk_second_id, sizeof nk_second_id, "%s", redq_msg_id(m));
        nk_attempt2 = redq_msg_attempt(m);
        nk_enq2 = redq_msg_enqueued_ms(m);
        redq_ack(m);
    }
}

static bool nk_two(void *arg)
{
    (void)arg;
    return nk_calls >= 2;
}

Test(outsider, plain_queue_id_is_consumer_made_and_retry_keeps_it)
{
    fx_cmd_ok("LPUSH pq hello");
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fx_url();
    co.on_message = nk_on_message;
    co.retry_base_ms = 20;
    co.retry_max_ms = 40;
    co.promote_interval_ms = 20;
    co.pop_timeout_ms = 100;
    const char *q[] = {"pq"};
    redq_consumer *c;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &co, q, 1), 0);
    cr_assert(fx_run_until(nk_two, NULL, 5000));
    char prefix[40];
    snprintf(prefix, sizeof prefix, "%s-", redq_consumer_id(c));
    cr_assert_eq(strncmp(nk_first_id, prefix, strlen(prefix)), 0,
                 "id '%s' not '<consumer id>-<n>' (%s)", nk_first_id, prefix);
    cr_assert_str_eq(nk_second_id, nk_first_id);
    cr_assert_eq(nk_attempt2, 2);
    cr_assert_eq(nk_enq1, -1, "first delivery on a plain queue: -1");
    cr_assert_neq(nk_enq2, -1, "a retry carries the time of the first nack");
    int closed = 0;
    redq_consumer_close(c, int_closed, &closed);
    cr_assert(fx_run_until(flag_set, &closed, 5000));
}

/* set_format: "REDQ_EINVAL also for an unknown format"; frames -> plain
 * "refused with REDQ_ENOTEMPTY unless the ready list is empty". */
Test(outsider, set_format_unknown_and_frames_to_plain_not_empty)
{
    adm d;
    adm_open(&d);
    int rc = adm_set_format(&d, "sq", 2);
    cr_assert(rc == REDQ_EINVAL || (rc == 0 && d.status == REDQ_EINVAL),
              "unknown format: rc %d status %d", rc, d.status);
    rc = adm_set_format(&d, "sq", -1);
    cr_assert(rc == REDQ_EINVAL || (rc == 0 && d.status == REDQ_EINVAL));
    cr_assert_eq(adm_set_format(&d, "sq", REDQ_FORMAT_FRAMES), 0);
    cr_assert_eq(d.status, 0);
    fx_tracker *t = fx_tracker_new(3);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fx_produce_range(t, "sq", 0, 3, 8);
    cr_assert(fx_wait_reports(t, 3, 5000));
    cr_assert_eq(adm_set_format(&d, "sq", REDQ_FORMAT_PLAIN), 0);
    cr_assert_eq(d.status, REDQ_ENOTEMPTY, "status %d (%s)", d.status, d.err);
    cr_assert(strstr(d.err, "3") != NULL, "errstr should count: '%s'", d.err);
    fx_cmd_ok("DEL sq");
    cr_assert_eq(adm_set_format(&d, "sq", REDQ_FORMAT_PLAIN), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    cr_assert_eq(d.n, 1);
    adm_close(&d);
}

/* Switching plain -> frames under load: "nothing lost" and payloads never
 * carry a header; after the switch the producer learns it "within about
 * 2 s" (DESIGN) so later messages carry its ids. Then frames -> plain with
 * an empty ready list (consumer keeps it drained): the producer's PUSHes
 * are refused and "resent as plain payloads, in order, nothing lost". */
typedef struct loadgen {
    fx_tracker *t;
    const char *q;
    size_t next, cap;
    struct event *ev;
    int stop;
    int per_tick; /* 0: 20 */
    int keyed;    /* odd seqs through redq_produce_key */
} loadgen;

static int produce_keyed(fx_tracker *t, const char *q, size_t seq,
                         size_t nkeys);

static void loadgen_tick(evutil_socket_t fd, short what, void *arg)
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

static void loadgen_start(loadgen *g)
{
    g->ev = evtimer_new(fx_base(), loadgen_tick, g);
    struct timeval tv = {0, 0};
    evtimer_add(g->ev, &tv);
}

static bool loadgen_at(void *arg)
{
    size_t *v = arg;
    return ((loadgen *)(uintptr_t)v[0])->next >= v[1];
}

static void loadgen_wait(loadgen *g, size_t n, int ms)
{
    size_t v[2] = {(size_t)(uintptr_t)g, n};
    cr_assert(fx_run_until(loadgen_at, v, ms), "generator at %zu of %zu",
              g->next, n);
}

static void loadgen_free(loadgen *g)
{
    if (g->ev)
        event_free(g->ev);
    g->ev = NULL;
}

/* every seq 0..n-1 delivered exactly once */
static void assert_each_once(ctr *c, size_t n)
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

typedef struct seen_pid {
    ctr *c;
    byid *b;
    size_t from_seq, cap;
} seen_pid;

/* a message produced after from_seq delivered with its report's id */
static bool saw_producer_id(void *arg)
{
    seen_pid *w = arg;
    for (size_t i = 0; i < w->c->got && i < CMAX; i++) {
        size_t s = seq_of(w->c->payload[i]);
        if (s < w->cap && s >= w->from_seq && w->b->rid[s][0] &&
            strcmp(w->c->id[i], w->b->rid[s]) == 0)
            return true;
    }
    return false;
}

Test(outsider, switch_formats_under_load_loses_nothing)
{
    size_t N = 8000;
    adm d;
    adm_open(&d);
    fx_tracker *t = fx_tracker_new(N);
    byid b = {calloc(N, 64)};
    t->on_report = byid_hook;
    t->hook_arg = &b;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"swq"};
    ctr_new(c, &co, q, 1);
    loadgen g = {.t = t, .q = "swq", .cap = N, .per_tick = 3};
    loadgen_start(&g);
    loadgen_wait(&g, 200, 10000);
    cr_assert_eq(adm_set_format(&d, "swq", REDQ_FORMAT_FRAMES), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    /* DESIGN: a running producer learns plain -> frames within about 2 s */
    seen_pid w = {c, &b, g.next, N};
    uint64_t t0 = fx_now_us();
    cr_assert(fx_run_until(saw_producer_id, &w, 6000),
              "no producer id reached the consumer within 6 s of the switch");
    uint64_t learnt_us = fx_now_us() - t0;
    /* frames -> plain once the consumer has the list empty */
    uint64_t until = fx_now_us() + 10000000;
    do {
        cr_assert_eq(adm_set_format(&d, "swq", REDQ_FORMAT_PLAIN), 0);
    } while (d.status == REDQ_ENOTEMPTY && fx_now_us() < until);
    cr_assert_eq(d.status, 0, "frames -> plain: %s", d.err);
    size_t after = g.next;
    loadgen_wait(&g, after + 300, 10000);
    g.stop = 1;
    size_t n = g.next;
    cr_assert(fx_wait_reports(t, n, 20000));
    fx_assert_reported(t, 0, n, 0);
    cr_assert(ctr_wait(c, n, 20000), "consumed %zu of %zu", c->got, n);
    fx_run_for(200);
    assert_each_once(c, n);
    cr_assert_lt(learnt_us, 4000000, "producer learnt frames after %llu us",
                 (unsigned long long)learnt_us);
    loadgen_free(&g);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
    free(b.rid);
}

/* ======================================================================== */
/* Lifetimes                                                                 */
/* ======================================================================== */

/* "After redq_consumer_close() the finishing calls (and redq_msg_extend())
 * return REDQ_ECLOSED and only release the message's memory, which
 * outlives the consumer"; "the close callback does not wait for them";
 * at-least-once "what the processing lists still hold, the messages the
 * handler holds included, is given back to its queue". */
Test(outsider, finish_after_close_is_eclosed_message_valid_given_back)
{
    push_n("lq", 8);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"lq"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 8, 5000));
    cr_assert_eq(c->nheld, 8);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000),
              "close waited for held messages");
    /* the messages still read (ASan checks the memory) */
    for (size_t i = 0; i < 8; i++) {
        char want[32];
        snprintf(want, sizeof want, "lq|%zu", i);
        cr_assert_eq(redq_msg_len(c->held[i]), strlen(want));
        cr_assert_eq(memcmp(redq_msg_data(c->held[i]), want, strlen(want)),
                     0);
        cr_assert_str_eq(redq_msg_queue(c->held[i]), "lq");
        cr_assert_gt(strlen(redq_msg_id(c->held[i])), 0);
    }
    cr_assert_eq(redq_msg_extend(c->held[0], 1000), REDQ_ECLOSED);
    cr_assert_eq(redq_ack(c->held[0]), REDQ_ECLOSED);
    cr_assert_eq(redq_nack(c->held[1], "x"), REDQ_ECLOSED);
    cr_assert_eq(redq_reject(c->held[2], "y"), REDQ_ECLOSED);
    for (size_t i = 3; i < 8; i++)
        cr_assert_eq(redq_ack(c->held[i]), REDQ_ECLOSED);
    c->nheld = 0;
    /* all eight are back: a second consumer gets every one */
    ctr *c2 = ctr_alloc();
    ctr_opts(&co, c2, REDQ_AT_LEAST_ONCE);
    ctr_new(c2, &co, q, 1);
    cr_assert(ctr_wait(c2, 8, 5000), "got back %zu of 8", c2->got);
    ctr_close(c2);
    ctr_free(c2);
    ctr_free(c);
}

/* A stop that timed out "gave the message back, and a later redq_ack()
 * says REDQ_ETIMEDOUT"; the message stays valid until then. */
Test(outsider, ack_after_timed_out_stop_is_etimedout_and_given_back)
{
    push_n("tq", 3);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"tq"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 3, 5000));
    uint64_t t0 = fx_now_us();
    cr_assert_eq(redq_consumer_stop(c->c, 100, ctr_stopped, c), 0);
    cr_assert_eq(c->stop_calls, 0, "stop callback inside the call");
    cr_assert(fx_run_until(flag_set, &c->stop_calls, 5000));
    uint64_t el = fx_now_us() - t0;
    cr_assert_eq(c->stop_status, REDQ_ETIMEDOUT);
    cr_assert_geq(el + fx_clock_slack_us(), 100000, "stop timed out early");
    cr_assert_eq(redq_consumer_stop(c->c, 100, ctr_stopped, c), REDQ_ECLOSED);
    /* the messages were given back: another consumer gets them */
    ctr *c2 = ctr_alloc();
    ctr_opts(&co, c2, REDQ_AT_LEAST_ONCE);
    ctr_new(c2, &co, q, 1);
    cr_assert(ctr_wait(c2, 3, 5000), "given back: %zu of 3", c2->got);
    cr_assert_eq(memcmp(redq_msg_data(c->held[0]), "tq|0", 4), 0);
    cr_assert_eq(redq_ack(c->held[0]), REDQ_ETIMEDOUT);
    cr_assert_eq(redq_nack(c->held[1], NULL), REDQ_ETIMEDOUT);
    cr_assert_eq(redq_reject(c->held[2], NULL), REDQ_ETIMEDOUT);
    c->nheld = 0;
    fx_run_for(300);
    /* the late finishes sent nothing: no dead letter, no extra copy */
    cr_assert_eq(c2->got, 3, "a late finish re-queued a message");
    char *dead = fx_queue_key("tq", "dead");
    cr_assert_eq(fx_llen(dead), 0, "late reject dead-lettered");
    free(dead);
    ctr_close(c);
    ctr_close(c2);
    ctr_free(c2);
    ctr_free(c);
}

/* Close from inside on_message (contract 7: "safe from inside any redq
 * callback"): the close callback is the last; the ack made before the close
 * "accepted before this call [is] sent first"; what else was taken goes
 * back. */
Test(outsider, close_inside_on_message_acks_sent_rest_given_back)
{
    push_n("cq", 10);
    ctr *c = ctr_alloc();
    c->close_in_handler = 1;
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    co.pop_batch = 100;
    const char *q[] = {"cq"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 1, 5000));
    cr_assert_eq(c->close_rc, 0);
    /* our close has no callback; wait on a second close being refused and
     * on the given-back messages reaching another consumer */
    cr_assert_eq(redq_consumer_close(c->c, NULL, NULL), REDQ_ECLOSED);
    ctr *c2 = ctr_alloc();
    ctr_opts(&co, c2, REDQ_AT_LEAST_ONCE);
    ctr_new(c2, &co, q, 1);
    size_t held_by_first = c->nheld;
    cr_assert(ctr_wait(c2, 9, 5000), "given back %zu of 9", c2->got);
    fx_run_for(300);
    cr_assert_eq(c2->got, 9, "the acked message came back (%zu)", c2->got);
    for (size_t i = 0; i < held_by_first; i++)
        cr_assert_eq(redq_ack(c->held[i]), REDQ_ECLOSED);
    c->nheld = 0;
    ctr_close(c2);
    ctr_free(c2);
    ctr_free(c);
}

/* Close from inside on_report: the rest get REDQ_ECLOSED, each exactly
 * once, before the close callback, and nothing after it. */
static void close_in_first_report(fx_tracker *t, redq_producer *p,
                                  const redq_report *r)
{
    (void)r;
    if (t->reports == 1) {
        fx_close(t);
        t->hook_arg = (void *)(uintptr_t)redq_produce(p, "rq", "z", 1, NULL);
    }
}

Test(outsider, close_inside_on_report)
{
    size_t N = 200;
    fx_tracker *t = fx_tracker_new(N);
    t->on_report = close_in_first_report;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.max_inflight_batches = 1;
    o.batch_max_msgs = 1;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fx_produce_range(t, "rq", 0, N, 64);
    cr_assert(fx_wait_closed(t, 5000));
    cr_assert_eq((int)(intptr_t)t->hook_arg, REDQ_ECLOSED,
                 "produce after close in the report: %d",
                 (int)(intptr_t)t->hook_arg);
    cr_assert_eq(t->reports, N, "reports %zu of %zu", t->reports, N);
    cr_assert_eq(t->closed_reports, N);
    cr_assert_eq(t->reports_after_close, 0);
    cr_assert_eq(t->bad, 0, "%s", t->bad_msg);
    for (size_t i = 0; i < N; i++)
        cr_assert_eq(t->nrep[i], 1, "seq %zu reported %u times", i,
                     t->nrep[i]);
}

/* "To drain first, close from the callback of redq_producer_flush()". */
static int fc_status = 99, fc_close_rc = 99;
static fx_tracker *fc_t;
static size_t fc_reports_at_flush;
static void flush_then_close(redq_producer *p, int status, void *user)
{
    (void)p;
    (void)user;
    fc_status = status;
    fc_reports_at_flush = fc_t->reports;
    fc_close_rc = fx_close(fc_t);
}

Test(outsider, close_inside_flush_callback_drains)
{
    size_t N = 300;
    fx_tracker *t = fx_tracker_new(N);
    fc_t = t;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fx_produce_range(t, "fcq", 0, N, 32);
    cr_assert_eq(redq_producer_flush(t->p, -1, flush_then_close, NULL), 0);
    cr_assert_eq(fc_status, 99, "flush callback inside the call");
    cr_assert(fx_wait_closed(t, 10000));
    cr_assert_eq(fc_status, 0);
    cr_assert_eq(fc_close_rc, 0);
    cr_assert_eq(fc_reports_at_flush, N);
    fx_assert_reported(t, 0, N, 0);
    fx_assert_list_range("fcq", 0, N);
}

/* ======================================================================== */
/* Per-call deadlines                                                        */
/* ======================================================================== */

typedef struct fl {
    int calls, status;
    size_t reports_at;
    uint64_t at_us;
    int order;
} fl;

static int fl_order;
static fx_tracker *fl_t;

static void fl_cb(redq_producer *p, int status, void *user)
{
    (void)p;
    fl *f = user;
    f->calls++;
    f->status = status;
    f->at_us = fx_now_us();
    f->order = ++fl_order;
    f->reports_at = fl_t ? fl_t->reports : 0;
}

/* timeout_ms 0 "only checks (next loop iteration)"; "A flush that times out
 * fails nothing"; "With nothing to wait for, cb runs in the next loop
 * iteration". */
Test(outsider, flush_zero_checks_only_and_fails_nothing)
{
    fx_tracker *t = fx_tracker_new(5);
    fl_t = t;
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 0;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fl empty = {0};
    cr_assert_eq(redq_producer_flush(t->p, 0, fl_cb, &empty), 0);
    cr_assert_eq(empty.calls, 0, "flush callback inside the call");
    cr_assert(fx_run_until(flag_set, &empty.calls, 2000));
    cr_assert_eq(empty.status, 0, "nothing pending: status %d", empty.status);
    fx_produce_range(t, "zq", 0, 5, 8);
    fl f = {0};
    cr_assert_eq(redq_producer_flush(t->p, 0, fl_cb, &f), 0);
    cr_assert(fx_run_until(flag_set, &f.calls, 2000));
    cr_assert_eq(f.status, REDQ_ETIMEDOUT);
    cr_assert_eq(t->reports, 0, "a timed-out flush failed messages");
    redq_producer_stats st = fx_stats(t);
    cr_assert_eq(st.pending_msgs, 5);
    fx_run_for(100);
    cr_assert_eq(f.calls, 1, "flush callback more than once");
}

/* Several outstanding, each with its own deadline; close while they wait:
 * "REDQ_ECLOSED when the producer was closed first (the reports were still
 * all made)"; the close callback is the last. A negative and a huge timeout
 * both wait. flush after close: REDQ_ECLOSED. */
Test(outsider, several_flushes_then_close_while_waiting)
{
    fx_tracker *t = fx_tracker_new(10);
    fl_t = t;
    fl_order = 0;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 0;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fx_produce_range(t, "mq", 0, 10, 8);
    fl a = {0}, b = {0}, c = {0}, d = {0}, e = {0};
    uint64_t t0 = fx_now_us();
    cr_assert_eq(redq_producer_flush(t->p, 300, fl_cb, &b), 0);
    cr_assert_eq(redq_producer_flush(t->p, 60, fl_cb, &a), 0);
    cr_assert_eq(redq_producer_flush(t->p, -1, fl_cb, &c), 0);
    cr_assert_eq(redq_producer_flush(t->p, INT_MAX, fl_cb, &d), 0);
    cr_assert_eq(redq_producer_flush(t->p, INT_MIN, fl_cb, &e), 0);
    cr_assert(fx_run_until(flag_set, &b.calls, 3000));
    cr_assert_eq(a.status, REDQ_ETIMEDOUT);
    cr_assert_eq(b.status, REDQ_ETIMEDOUT);
    cr_assert_lt(a.order, b.order, "deadlines out of order");
    cr_assert_geq(a.at_us - t0 + fx_clock_slack_us(), 60000);
    cr_assert_geq(b.at_us - t0 + fx_clock_slack_us(), 300000);
    fx_run_for(200);
    cr_assert_eq(c.calls + d.calls + e.calls, 0,
                 "a flush without deadline (or INT_MAX) ended: c %d d %d e %d"
                 " (status %d %d %d)", c.calls, d.calls, e.calls, c.status,
                 d.status, e.status);
    cr_assert_eq(t->reports, 0);
    cr_assert_eq(fx_close(t), 0);
    cr_assert_eq(redq_producer_flush(t->p, 10, fl_cb, &a), REDQ_ECLOSED);
    cr_assert(fx_wait_closed(t, 5000));
    cr_assert_eq(c.calls, 1);
    cr_assert_eq(d.calls, 1);
    cr_assert_eq(e.calls, 1);
    cr_assert_eq(c.status, REDQ_ECLOSED);
    cr_assert_eq(d.status, REDQ_ECLOSED);
    cr_assert_eq(e.status, REDQ_ECLOSED);
    cr_assert_eq(c.reports_at, 10, "flush ended before the close's reports");
    cr_assert_eq(a.calls, 1);
    cr_assert_eq(b.calls, 1);
    fx_assert_reported(t, 0, 10, REDQ_ECLOSED);
    cr_assert_eq(t->reports_after_close, 0);
}

/* timeout_ms < 0: "message_timeout_ms still bounds every message, so it
 * ends by then" with status 0 ("every message accepted before the call has
 * had its report", failed or not). A huge deadline behaves the same. */
Test(outsider, flush_negative_and_huge_end_with_message_timeout)
{
    fx_tracker *t = fx_tracker_new(4);
    fl_t = t;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 250;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fx_produce_range(t, "nq", 0, 4, 8);
    fl a = {0}, b = {0};
    cr_assert_eq(redq_producer_flush(t->p, -1, fl_cb, &a), 0);
    cr_assert_eq(redq_producer_flush(t->p, INT_MAX, fl_cb, &b), 0);
    cr_assert(fx_run_until(flag_set, &b.calls, 5000));
    cr_assert(fx_run_until(flag_set, &a.calls, 1000));
    cr_assert_eq(a.status, 0);
    cr_assert_eq(b.status, 0);
    cr_assert_eq(a.reports_at, 4);
    cr_assert_eq(b.reports_at, 4);
    fx_assert_reported(t, 0, 4, REDQ_ETIMEDOUT);
}

/* "Messages produced after this call do not delay it." The later message
 * is held up by a CLIENT PAUSE issued when the first one is reported. */
static uint64_t fi_rep0_us;
static void fi_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)p;
    if (r->opaque == (void *)1) {
        fi_rep0_us = fx_now_us();
        redisReply *rep = redisCommand(fx_redis(), "CLIENT PAUSE 2000 WRITE");
        if (rep)
            freeReplyObject(rep);
        fx_produce(t, "lq2", 1, 8);
    }
}

Test(outsider, flush_ignores_later_messages)
{
    fx_tracker *t = fx_tracker_new(2);
    fl_t = t;
    t->on_report = fi_hook;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    cr_assert(fx_wait_connected(t, 5000));
    fx_produce_range(t, "lq2", 0, 1, 8);
    fl a = {0};
    cr_assert_eq(redq_producer_flush(t->p, 10000, fl_cb, &a), 0);
    cr_assert(fx_run_until(flag_set, &a.calls, 5000));
    cr_assert_eq(a.status, 0);
    cr_assert_eq(t->nrep[0], 1);
    cr_assert_eq(a.reports_at, 1, "flush waited for a later message");
    cr_assert_lt(a.at_us - fi_rep0_us, 1000000,
                 "flush ended %llu us after its message's report",
                 (unsigned long long)(a.at_us - fi_rep0_us));
    cr_assert(fx_wait_reports(t, 2, 6000));
    fx_assert_reported(t, 0, 2, 0);
}

/* Consumer stop deadlines: 0 = now (holding a message), < 0 =
 * stop_timeout_ms, huge = waits for the ack, close while waiting = the stop
 * callback gets REDQ_ECLOSED before the close callback. */
Test(outsider, stop_zero_times_out_at_once_when_holding)
{
    push_n("s0", 1);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    co.stop_timeout_ms = 60000;
    const char *q[] = {"s0"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 1, 5000));
    uint64_t t0 = fx_now_us();
    cr_assert_eq(redq_consumer_stop(c->c, 0, ctr_stopped, c), 0);
    cr_assert_eq(c->stop_calls, 0, "stop callback inside the call");
    cr_assert(fx_run_until(flag_set, &c->stop_calls, 3000),
              "stop(0) did not end (did 0 mean stop_timeout_ms?)");
    cr_assert_lt(fx_now_us() - t0, 1000000);
    cr_assert_eq(c->stop_status, REDQ_ETIMEDOUT);
    cr_assert_eq(redq_ack(c->held[0]), REDQ_ETIMEDOUT);
    c->nheld = 0;
    ctr_close(c);
    ctr_free(c);
}

Test(outsider, stop_negative_uses_stop_timeout_ms)
{
    push_n("sn", 1);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    co.stop_timeout_ms = 400;
    const char *q[] = {"sn"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 1, 5000));
    uint64_t t0 = fx_now_us();
    cr_assert_eq(redq_consumer_stop(c->c, -7, ctr_stopped, c), 0);
    cr_assert(fx_run_until(flag_set, &c->stop_calls, 5000));
    uint64_t el = fx_now_us() - t0;
    cr_assert_eq(c->stop_status, REDQ_ETIMEDOUT);
    cr_assert_geq(el + fx_clock_slack_us(), 400000, "ended after %llu us",
                  (unsigned long long)el);
    cr_assert_lt(el, 3000000);
    cr_assert_eq(redq_ack(c->held[0]), REDQ_ETIMEDOUT);
    c->nheld = 0;
    ctr_close(c);
    ctr_free(c);
}

Test(outsider, stop_huge_waits_for_the_ack_then_zero)
{
    push_n("sh", 2);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    co.stop_timeout_ms = 100;
    const char *q[] = {"sh"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 2, 5000));
    cr_assert_eq(redq_consumer_stop(c->c, INT_MAX, ctr_stopped, c), 0);
    fx_run_for(300);
    cr_assert_eq(c->stop_calls, 0, "INT_MAX deadline ended early (status %d)",
                 c->stop_status);
    cr_assert_eq(redq_ack(c->held[0]), 0);
    cr_assert_eq(redq_ack(c->held[1]), 0);
    c->nheld = 0;
    cr_assert(fx_run_until(flag_set, &c->stop_calls, 5000));
    cr_assert_eq(c->stop_status, 0);
    cr_assert_eq(fx_llen("sh"), 0);
    /* the consumer left the consumers set: nothing processing */
    ctr_close(c);
    ctr_free(c);
}

Test(outsider, close_while_stop_waits_stop_gets_eclosed_first)
{
    push_n("sc", 1);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"sc"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 1, 5000));
    cr_assert_eq(redq_consumer_stop(c->c, 60000, ctr_stopped, c), 0);
    fx_run_for(50);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    cr_assert_eq(c->stop_calls, 1, "stop callback %d times", c->stop_calls);
    cr_assert_eq(c->stop_status, REDQ_ECLOSED);
    cr_assert(c->stop_before_close, "stop callback after the close callback");
    cr_assert_eq(redq_ack(c->held[0]), REDQ_ECLOSED);
    c->nheld = 0;
    ctr_free(c);
}

/* ======================================================================== */
/* on_ready                                                                  */
/* ======================================================================== */

typedef struct rdy {
    size_t efull_seen;      /* EFULL from produce in report callbacks */
    size_t accepted_between;/* accepted after EFULL, before on_ready */
    int got_full;
    size_t pending_at_ready;
    size_t reports_at_ready;
    size_t next_seq;
} rdy;

static rdy R;

static void rdy_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)p;
    (void)r;
    if (t->ready)
        return;
    /* produce one message per report while waiting for on_ready */
    if (R.next_seq < t->cap) {
        int rc = fx_produce(t, "oq", R.next_seq, 8);
        if (rc == 0) {
            R.next_seq++;
            if (R.got_full)
                R.accepted_between++;
        } else if (rc == REDQ_EFULL) {
            R.efull_seen++;
        }
    }
}

/* on_ready: "From the REDQ_EFULL until on_ready, redq_produce() keeps
 * refusing with REDQ_EFULL, also when a report freed a place ... on_ready
 * always finds half the window free"; "The first report that leaves the
 * window at or below the mark is followed by on_ready before the next
 * report is made". */
Test(outsider, on_ready_hysteresis_with_a_producing_report_callback)
{
    memset(&R, 0, sizeof R);
    size_t cap = 1000;
    fx_tracker *t = fx_tracker_new(cap);
    t->on_report = rdy_hook;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.max_pending_msgs = 20;
    o.batch_max_msgs = 1; /* one report per reply */
    o.max_inflight_batches = 1;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fx_tracker *t2 = t;
    size_t s = 0;
    int rc;
    while ((rc = fx_produce(t2, "oq", s, 8)) == 0)
        s++;
    cr_assert_eq(rc, REDQ_EFULL);
    cr_assert_eq(s, 20);
    R.got_full = 1;
    R.next_seq = s + 1; /* seq s was refused; skip it */
    cr_assert(fx_wait_ready(t2, 5000));
    cr_assert_eq(t2->ready, 1, "on_ready %u times", t2->ready);
    cr_assert_eq(R.accepted_between, 0,
                 "%zu produce calls accepted between EFULL and on_ready",
                 R.accepted_between);
    cr_assert_gt(R.efull_seen, 0);
    /* the tracker recorded the stats when on_ready first ran */
    cr_assert_eq(t2->ready_stats.pending_msgs, 10,
                 "pending at on_ready %zu, the mark is 10",
                 t2->ready_stats.pending_msgs);
    fx_run_for(100);
    cr_assert_eq(t2->ready, 1, "on_ready without a new EFULL");
}

/* on_ready comes only after an EFULL: a producer that never hit the bound
 * gets none, also when the window empties. The bytes bound counts too. */
Test(outsider, on_ready_only_after_efull_and_bytes_bound)
{
    fx_tracker *t = fx_tracker_new(100);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.max_pending_msgs = 50;
    o.max_pending_bytes = 1000;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fx_produce_range(t, "bq", 0, 5, 100);
    cr_assert(fx_wait_reports(t, 5, 5000));
    fx_run_for(50);
    cr_assert_eq(t->ready, 0, "on_ready without an EFULL");
    size_t s = 5;
    int rc;
    while ((rc = fx_produce(t, "bq", s, 100)) == 0)
        s++;
    cr_assert_eq(rc, REDQ_EFULL, "rc %d", rc);
    cr_assert_lt(s - 5, 50, "bytes bound not applied");
    cr_assert(fx_wait_ready(t, 5000));
    cr_assert_leq(t->ready_stats.pending_bytes, 500);
    cr_assert_leq(t->ready_stats.pending_msgs, 25);
}

/* ======================================================================== */
/* redq_reject                                                               */
/* ======================================================================== */

static int rj_rc[3];
static int rj_calls;
static void rj_on_message(redq_consumer *c, redq_message *m, void *user)
{
    (void)c;
    (void)user;
    rj_calls++;
    if (rj_calls == 1) {
        rj_rc[0] = redq_reject(m, "poison");
    }
}

static void reject_case(int guarantee)
{
    fx_cmd_ok("LPUSH jq bad");
    rj_calls = 0;
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fx_url();
    co.on_message = rj_on_message;
    co.guarantee = guarantee;
    co.max_attempts = 5;
    co.pop_timeout_ms = 100;
    const char *q[] = {"jq"};
    redq_consumer *c;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &co, q, 1), 0);
    cr_assert(fx_run_until(flag_set, &rj_calls, 5000));
    cr_assert_eq(rj_rc[0], 0);
    fx_run_for(300);
    cr_assert_eq(rj_calls, 1, "rejected message delivered again");
    redq_consumer_stats st;
    redq_consumer_get_stats(c, &st);
    cr_assert_eq(st.rejected, 1);
    char *dead = fx_queue_key("jq", "dead");
    if (guarantee == REDQ_AT_LEAST_ONCE) {
        cr_assert_eq(st.dead_lettered, 1);
        cr_assert_eq(fx_llen(dead), 1);
    } else {
        cr_assert_eq(fx_llen(dead), 0);
        cr_assert_eq(st.dead_lettered, 0);
    }
    cr_assert_eq(st.nacked, 0);
    cr_assert_eq(st.retried, 0);
    cr_assert_eq(fx_llen("jq"), 0);
    free(dead);
    int closed = 0;
    redq_consumer_close(c, int_closed, &closed);
    cr_assert(fx_run_until(flag_set, &closed, 5000));
}

Test(outsider, reject_dead_letters_at_once_alo)
{
    reject_case(REDQ_AT_LEAST_ONCE);
}

Test(outsider, reject_drops_amo)
{
    reject_case(REDQ_AT_MOST_ONCE);
}

typedef struct deadview {
    int done, status;
    size_t n;
    char reason[64];
    int attempts;
    char id[64];
} deadview;

static void dv_cb(redq_admin *a, int status, const char *errstr,
                  const redq_admin_msg *msgs, size_t n, void *user)
{
    (void)a;
    (void)errstr;
    deadview *v = user;
    v->done = 1;
    v->status = status;
    v->n = n;
    if (n > 0) {
        snprintf(v->reason, sizeof v->reason, "%s",
                 msgs[0].reason ? msgs[0].reason : "(null)");
        v->attempts = msgs[0].attempts;
        snprintf(v->id, sizeof v->id, "%s", msgs[0].id);
    }
}

static char rj2_id[64];
static int rj2_second_rc = 99;
static void rj2_on_message(redq_consumer *c, redq_message *m, void *user)
{
    (void)c;
    (void)user;
    rj_calls++;
    snprintf(rj2_id, sizeof rj2_id, "%s", redq_msg_id(m));
    redq_message *keep = m;
    rj_rc[0] = redq_reject(m, "poison pill");
    (void)keep;
}

/* The dead letter carries the reason, the attempt it failed on and the
 * message's id ("the same on every attempt and in its dead letter"). */
Test(outsider, reject_dead_letter_has_reason_attempt_and_id)
{
    fx_cmd_ok("LPUSH jr bad");
    fx_cmd_ok("LPUSH jr bad2");
    rj_calls = 0;
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fx_url();
    co.on_message = rj2_on_message;
    co.pop_timeout_ms = 100;
    const char *q[] = {"jr"};
    redq_consumer *c;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &co, q, 1), 0);
    cr_assert(fx_run_until(int_ge2, &rj_calls, 5000));
    (void)rj2_second_rc;
    adm d;
    adm_open(&d);
    deadview v = {0};
    cr_assert_eq(redq_admin_dead(d.a, "jr", 0, 10, dv_cb, &v), 0);
    cr_assert(fx_run_until(flag_set, &v.done, 5000));
    cr_assert_eq(v.status, 0);
    cr_assert_eq(v.n, 2);
    cr_assert(strstr(v.reason, "poison pill") != NULL, "reason '%s'",
              v.reason);
    cr_assert_eq(v.attempts, 1, "attempts %d", v.attempts);
    cr_assert_str_eq(v.id, rj2_id, "dead letter id '%s' vs delivered '%s'",
                     v.id, rj2_id);
    adm_close(&d);
    int closed = 0;
    redq_consumer_close(c, int_closed, &closed);
    cr_assert(fx_run_until(flag_set, &closed, 5000));
}

/* "A second call on the same message is a caller bug; it is caught
 * (REDQ_EALREADY) while other messages of the same pop are still held". */
Test(outsider, second_finish_is_ealready_while_pop_held)
{
    push_n("eq", 3);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"eq"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 3, 5000));
    /* the three should come in one pop (pushed before the consumer) */
    cr_assert_eq(redq_reject(c->held[0], "r"), 0);
    cr_assert_eq(redq_ack(c->held[0]), REDQ_EALREADY);
    cr_assert_eq(redq_reject(c->held[0], "r"), REDQ_EALREADY);
    cr_assert_eq(redq_nack(c->held[0], NULL), REDQ_EALREADY);
    cr_assert_eq(redq_msg_extend(c->held[0], 10), REDQ_EALREADY);
    cr_assert_eq(redq_msg_extend(c->held[1], -1), REDQ_EINVAL);
    cr_assert_eq(redq_ack(NULL), REDQ_EINVAL);
    cr_assert_eq(redq_nack(NULL, NULL), REDQ_EINVAL);
    cr_assert_eq(redq_reject(NULL, NULL), REDQ_EINVAL);
    cr_assert_eq(redq_ack(c->held[1]), 0);
    cr_assert_eq(redq_ack(c->held[2]), 0);
    c->nheld = 0;
    ctr_close(c);
    ctr_free(c);
}

/* ======================================================================== */
/* add_queue / remove_queue                                                  */
/* ======================================================================== */

Test(outsider, add_remove_queue_argument_errors)
{
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"aq"};
    ctr_new(c, &co, q, 1);
    cr_assert_eq(redq_consumer_add_queue(NULL, "x"), REDQ_EINVAL);
    cr_assert_eq(redq_consumer_add_queue(c->c, NULL), REDQ_EINVAL);
    cr_assert_eq(redq_consumer_add_queue(c->c, ""), REDQ_EINVAL);
    char big[1100];
    memset(big, 'n', 1025);
    big[1025] = 0;
    cr_assert_eq(redq_consumer_add_queue(c->c, big), REDQ_EINVAL);
    big[1024] = 0;
    cr_assert_eq(redq_consumer_add_queue(c->c, big), 0, "1024 bytes refused");
    cr_assert_eq(redq_consumer_add_queue(c->c, "aq"), REDQ_EEXIST);
    char *dead = fx_queue_key("aq", "dead");
    cr_assert_eq(redq_consumer_add_queue(c->c, dead), REDQ_EINVAL,
                 "another queue's own key '%s' accepted", dead);
    free(dead);
    cr_assert_eq(redq_consumer_remove_queue(c->c, "nope", ctr_removed, c),
                 REDQ_ENOQUEUE);
    cr_assert_eq(redq_consumer_remove_queue(c->c, "aq", NULL, NULL),
                 REDQ_EINVAL);
    cr_assert_eq(redq_consumer_remove_queue(NULL, "aq", ctr_removed, c),
                 REDQ_EINVAL);
    cr_assert_eq(redq_consumer_remove_queue(c->c, NULL, ctr_removed, c),
                 REDQ_EINVAL);
    cr_assert_eq(redq_consumer_remove_queue(c->c, big, ctr_removed, c), 0);
    cr_assert_eq(redq_consumer_remove_queue(c->c, big, ctr_removed, c),
                 REDQ_ENOQUEUE, "removing twice");
    cr_assert_eq(redq_consumer_add_queue(c->c, big), REDQ_EEXIST,
                 "add during its removal");
    /* the last queue cannot be removed */
    cr_assert_eq(redq_consumer_remove_queue(c->c, "aq", ctr_removed, c),
                 REDQ_EINVAL);
    cr_assert_eq(c->remove_calls, 0, "remove callback inside the call");
    cr_assert(fx_run_until(flag_set, &c->remove_calls, 5000));
    cr_assert_eq(c->remove_status, 0);
    cr_assert_eq(redq_consumer_add_queue(c->c, big), 0,
                 "add again after the remove callback");
    cr_assert_eq(redq_consumer_stop(c->c, 1000, ctr_stopped, c), 0);
    cr_assert_eq(redq_consumer_add_queue(c->c, "late"), REDQ_ECLOSED);
    cr_assert_eq(redq_consumer_remove_queue(c->c, big, ctr_removed, c),
                 REDQ_ECLOSED);
    cr_assert(fx_run_until(flag_set, &c->stop_calls, 5000));
    ctr_close(c);
    ctr_free(c);
}

/* A queue added at run time is consumed (lowest priority) and its messages
 * name it. */
Test(outsider, added_queue_is_consumed)
{
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"a1"};
    ctr_new(c, &co, q, 1);
    fx_run_for(100);
    cr_assert_eq(redq_consumer_add_queue(c->c, "a2"), 0);
    push_n("a2", 5);
    cr_assert(ctr_wait(c, 5, 5000), "got %zu", c->got);
    for (size_t i = 0; i < 5; i++)
        cr_assert_str_eq(c->queue[i], "a2");
    ctr_close(c);
    ctr_free(c);
}

/* Removing while held: the held message "stays valid and [is] finished as
 * usual"; the callback only after none is held; afterwards nothing of the
 * queue is consumed and nothing of it is in this consumer's lists. */
Test(outsider, remove_queue_while_held)
{
    push_n("r2", 2);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"r1", "r2"};
    ctr_new(c, &co, q, 2);
    cr_assert(ctr_wait(c, 2, 5000));
    cr_assert_eq(redq_consumer_remove_queue(c->c, "r2", ctr_removed, c), 0);
    fx_run_for(300);
    cr_assert_eq(c->remove_calls, 0, "removal done while messages held");
    cr_assert_str_eq(redq_msg_queue(c->held[0]), "r2");
    cr_assert_eq(redq_ack(c->held[0]), 0);
    cr_assert_eq(redq_nack(c->held[1], "back"), 0);
    c->nheld = 0;
    cr_assert(fx_run_until(flag_set, &c->remove_calls, 5000));
    cr_assert_eq(c->remove_status, 0);
    push_n("r2", 3);
    fx_run_for(500);
    cr_assert_eq(c->got, 2, "removed queue still consumed");
    /* the nacked message and the new three stay with r2 for others */
    ctr *c2 = ctr_alloc();
    ctr_opts(&co, c2, REDQ_AT_LEAST_ONCE);
    const char *q2[] = {"r2"};
    ctr_new(c2, &co, q2, 1);
    cr_assert(ctr_wait(c2, 4, 5000), "r2 kept %zu of 4", c2->got);
    ctr_close(c2);
    ctr_close(c);
    ctr_free(c2);
    ctr_free(c);
}

/* "A stop during a removal gives the queue back with the rest and completes
 * the removal". The remove callback then gets 0 (not ECLOSED: no close). */
Test(outsider, stop_during_removal_completes_it)
{
    push_n("x2", 1);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"x1", "x2"};
    ctr_new(c, &co, q, 2);
    cr_assert(ctr_wait(c, 1, 5000));
    cr_assert_eq(redq_consumer_remove_queue(c->c, "x2", ctr_removed, c), 0);
    cr_assert_eq(redq_consumer_stop(c->c, 100, ctr_stopped, c), 0);
    cr_assert(fx_run_until(flag_set, &c->stop_calls, 5000));
    cr_assert_eq(c->stop_status, REDQ_ETIMEDOUT);
    cr_assert(fx_run_until(flag_set, &c->remove_calls, 5000),
              "removal never completed after a stop");
    cr_assert_eq(c->remove_status, 0);
    cr_assert_eq(redq_ack(c->held[0]), REDQ_ETIMEDOUT);
    c->nheld = 0;
    ctr_close(c);
    ctr_free(c);
}

/* "a close ends it with REDQ_ECLOSED unless the close's drain confirmed
 * it" -- before the close callback, the last one. */
Test(outsider, close_during_removal_ends_it_before_close_cb)
{
    push_n("y2", 1);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"y1", "y2"};
    ctr_new(c, &co, q, 2);
    cr_assert(ctr_wait(c, 1, 5000));
    cr_assert_eq(redq_consumer_remove_queue(c->c, "y2", ctr_removed, c), 0);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    cr_assert_eq(c->remove_calls, 1, "remove callback %d times",
                 c->remove_calls);
    cr_assert(c->remove_status == REDQ_ECLOSED || c->remove_status == 0);
    cr_assert_eq(c->remove_after_close, 0, "remove callback after close cb");
    cr_assert_eq(redq_ack(c->held[0]), REDQ_ECLOSED);
    c->nheld = 0;
    ctr_free(c);
}

/* ======================================================================== */
/* redq_produce_owned                                                        */
/* ======================================================================== */

typedef struct own {
    int freed;
    int freed_before_report; /* free_cb before its report callback */
    int reported;
    int report_ptr_ok;
    int closed_before_free;
} own;

#define NOWN 64
static own OW[NOWN];
static char *OWBUF[NOWN];
static int ow_closed;

static void ow_free(void *payload, void *user)
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

static void ow_report(fx_tracker *t, redq_producer *p, const redq_report *r)
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

static int own_produce(redq_producer *p, const char *q, size_t i,
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

static void ow_closecb(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    ow_report(t, p, r);
}

static bool ow_all_freed(void *arg)
{
    size_t n = *(size_t *)arg;
    for (size_t i = 0; i < n; i++)
        if (OWBUF[i] && OW[i].freed == 0)
            return false;
    return true;
}

/* "free_cb ... exactly once per accepted message, from the loop, right
 * after the message's report callback returned ... whatever the outcome:
 * stored, failed, timed out, or reported REDQ_ECLOSED by
 * redq_producer_close() (then before close's callback)"; "On an error
 * return nothing was taken". */
Test(outsider, owned_free_cb_exactly_once_in_every_path)
{
    memset(OW, 0, sizeof OW);
    memset(OWBUF, 0, sizeof OWBUF);
    ow_closed = 0;
    fx_tracker *t = fx_tracker_new(NOWN);
    t->raw = true;
    t->on_report = ow_closecb;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.max_message_bytes = 4096;
    o.max_pending_msgs = 16;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    /* stored: small (copied into the batch) and large (by reference) */
    cr_assert_eq(own_produce(t->p, "ow", 0, 10), 0);
    cr_assert_eq(own_produce(t->p, "ow", 1, 3000), 0);
    cr_assert_eq(own_produce(t->p, "ow", 2, 0), 0);
    /* errors take nothing */
    cr_assert_eq(own_produce(t->p, "ow", 3, 5000), REDQ_ETOOBIG);
    cr_assert_eq(own_produce(t->p, "", 4, 10), REDQ_EINVAL);
    cr_assert(fx_wait_reports(t, 3, 5000));
    size_t n = 5;
    cr_assert(fx_run_until(ow_all_freed, &n, 2000));
    /* a wrong-type queue: failed report */
    fx_cmd_ok("SET owbad x");
    cr_assert_eq(own_produce(t->p, "owbad", 5, 600), 0);
    cr_assert(fx_wait_reports(t, 4, 5000));
    /* EFULL: fill the window with messages that cannot be sent */
    fx_server_stop();
    size_t i = 6, full_at = 0;
    for (; i < 40; i++) {
        int rc = own_produce(t->p, "ow", i, 700);
        if (rc == REDQ_EFULL) {
            full_at = i;
            break;
        }
        cr_assert_eq(rc, 0);
    }
    cr_assert_neq(full_at, 0, "no EFULL");
    /* close: the rest are reported ECLOSED and freed before close's cb */
    cr_assert_eq(fx_close(t), 0);
    cr_assert(fx_wait_closed(t, 5000));
    ow_closed = 1;
    fx_run_for(50);
    for (size_t k = 0; k <= full_at; k++) {
        if (!OWBUF[k]) {
            cr_assert_eq(OW[k].freed, 0, "refused buffer %zu freed", k);
            continue;
        }
        cr_expect_eq(OW[k].freed, 1, "buffer %zu freed %d times", k,
                     OW[k].freed);
        cr_expect_eq(OW[k].reported, 1, "buffer %zu reported %d times", k,
                     OW[k].reported);
        cr_expect_eq(OW[k].freed_before_report, 0,
                     "buffer %zu freed before its report", k);
        cr_expect_eq(OW[k].closed_before_free, 0,
                     "buffer %zu freed after the close callback", k);
        cr_expect_eq(OW[k].report_ptr_ok, 1,
                     "buffer %zu: report payload is not the buffer", k);
    }
}

/* Owned from inside a report callback, with message timeouts. */
static size_t ow_next;
static void ow_reproduce(fx_tracker *t, redq_producer *p,
                         const redq_report *r)
{
    ow_report(t, p, r);
    if (ow_next < 20) {
        size_t i = ow_next++;
        own_produce(p, "ow2", i, 600);
    }
}

Test(outsider, owned_from_inside_report_callback)
{
    memset(OW, 0, sizeof OW);
    memset(OWBUF, 0, sizeof OWBUF);
    ow_closed = 0;
    fx_tracker *t = fx_tracker_new(NOWN);
    t->raw = true;
    t->on_report = ow_reproduce;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    ow_next = 1;
    cr_assert_eq(own_produce(t->p, "ow2", 0, 600), 0);
    cr_assert(fx_wait_reports(t, 20, 5000));
    size_t n = 20;
    cr_assert(fx_run_until(ow_all_freed, &n, 2000));
    for (size_t k = 0; k < 20; k++) {
        cr_assert_eq(OW[k].freed, 1);
        cr_assert_eq(OW[k].freed_before_report, 0);
    }
    cr_assert_eq(fx_llen("ow2"), 20);
}

/* Owned to a frames queue: the consumer sees the payload byte for byte and
 * the report's id. */
Test(outsider, owned_on_frames_queue)
{
    memset(OW, 0, sizeof OW);
    memset(OWBUF, 0, sizeof OWBUF);
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_format(&d, "owf", REDQ_FORMAT_FRAMES), 0);
    cr_assert_eq(d.status, 0);
    fx_tracker *t = fx_tracker_new(NOWN);
    t->raw = true;
    t->on_report = ow_report;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    size_t lens[4] = {0, 10, 600, 5000};
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(own_produce(t->p, "owf", i, lens[i]), 0);
    cr_assert(fx_wait_reports(t, 4, 5000));
    size_t n = 4;
    cr_assert(fx_run_until(ow_all_freed, &n, 2000));
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"owf"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 4, 5000));
    for (size_t i = 0; i < 4; i++) {
        cr_assert_eq(strlen(c->payload[i]), lens[i], "delivery %zu: %zu bytes"
                     " ('%.40s')", i, strlen(c->payload[i]), c->payload[i]);
        for (size_t k = 0; k < lens[i]; k++)
            cr_assert_eq(c->payload[i][k], 'a' + (int)(i % 26));
        char want[64];
        snprintf(want, sizeof want, "%s-%zu", redq_producer_id(t->p), i + 1);
        cr_assert_str_eq(c->id[i], want);
    }
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* Close from inside the report of an owned message: the rest are freed
 * once each, before the close callback. */
static void ow_close_first(fx_tracker *t, redq_producer *p,
                           const redq_report *r)
{
    ow_report(t, p, r);
    if (t->reports == 1)
        fx_close(t);
}

Test(outsider, owned_close_from_report_frees_each_once)
{
    memset(OW, 0, sizeof OW);
    memset(OWBUF, 0, sizeof OWBUF);
    ow_closed = 0;
    fx_tracker *t = fx_tracker_new(NOWN);
    t->raw = true;
    t->on_report = ow_close_first;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.batch_max_msgs = 1;
    o.max_inflight_batches = 1;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t i = 0; i < 40; i++)
        cr_assert_eq(own_produce(t->p, "owc", i, 700), 0);
    cr_assert(fx_wait_closed(t, 5000));
    ow_closed = 1;
    fx_run_for(50);
    for (size_t k = 0; k < 40; k++) {
        cr_expect_eq(OW[k].freed, 1, "buffer %zu freed %d times", k,
                     OW[k].freed);
        cr_expect_eq(OW[k].closed_before_free, 0);
        cr_expect_eq(OW[k].freed_before_report, 0);
    }
}

/* ======================================================================== */
/* Partitioned queues on one server                                          */
/* ======================================================================== */

Test(outsider, set_partitions_bounds_and_previous_count)
{
    adm d;
    adm_open(&d);
    int rc = adm_set_parts(&d, "pb", 0);
    cr_assert(rc == REDQ_EINVAL || (rc == 0 && d.status == REDQ_EINVAL),
              "P=0: rc %d status %d", rc, d.status);
    rc = adm_set_parts(&d, "pb", 257);
    cr_assert(rc == REDQ_EINVAL || (rc == 0 && d.status == REDQ_EINVAL),
              "P=257: rc %d status %d", rc, d.status);
    cr_assert_eq(adm_set_parts(&d, "pb", 4), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    cr_assert_eq(d.n, 1, "previous count %llu", (unsigned long long)d.n);
    cr_assert_eq(adm_set_parts(&d, "pb", 256), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    cr_assert_eq(d.n, 4);
    cr_assert_eq(adm_set_parts(&d, "pb", 2), 0);
    cr_assert_eq(d.n, 256);
    adm_close(&d);
}

/* A producer may not use another queue's partition by name. */
Test(outsider, partition_names_are_reserved_for_producers)
{
    fx_tracker *t = fx_tracker_new(1);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    cr_assert_eq(redq_produce(t->p, "{1800}jobs~1", "x", 1, NULL),
                 REDQ_EINVAL);
    cr_assert_eq(redq_produce_key(t->p, "{1800}jobs~1", "k", 1, "x", 1, NULL),
                 REDQ_EINVAL);
    cr_assert_eq(redq_produce_key(t->p, "jobs", NULL, 2, "x", 1, NULL),
                 REDQ_EINVAL, "key NULL with keylen > 0");
}

/* redq_produce_key: "messages of one key keep their produce order among
 * themselves while P does not change"; consumers take "from every
 * partition"; redq_msg_queue() "is always the logical name". */
typedef struct keyed {
    fx_tracker *t;
    size_t nkeys, per_key;
} keyed;

static int produce_keyed(fx_tracker *t, const char *q, size_t seq,
                         size_t nkeys)
{
    char key[24], pl[64];
    snprintf(key, sizeof key, "k%zu", seq % nkeys);
    int n = snprintf(pl, sizeof pl, "%s|%zu|%s", q, seq, key);
    return redq_produce_key(t->p, q, key, strlen(key), pl, (size_t)n,
                            (void *)(uintptr_t)(seq + 1));
}

Test(outsider, produce_key_order_per_key_every_partition_consumed)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "kq", 4), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    size_t N = 800, K = 16;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, "kq", s, K), 0);
    cr_assert(fx_wait_reports(t, N, 10000));
    cr_assert_eq(t->failed, 0);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"kq"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 15000), "consumed %zu of %zu", c->got, N);
    fx_run_for(200);
    cr_assert_eq(c->got, N, "duplicates: %zu", c->got);
    size_t last[64];
    int part_of[64];
    for (size_t k = 0; k < K; k++) {
        last[k] = (size_t)-1;
        part_of[k] = -1;
    }
    int parts_seen[4] = {0};
    for (size_t i = 0; i < N; i++) {
        cr_assert_str_eq(c->queue[i], "kq");
        size_t s = seq_of(c->payload[i]);
        cr_assert_lt(s, N);
        size_t k = s % K;
        cr_assert_geq(c->part[i], 0);
        cr_assert_lt(c->part[i], 4, "partition %d", c->part[i]);
        parts_seen[c->part[i]]++;
        if (part_of[k] == -1)
            part_of[k] = c->part[i];
        cr_assert_eq(c->part[i], part_of[k], "key %zu in two partitions", k);
        if (last[k] != (size_t)-1)
            cr_assert_gt(s, last[k], "key %zu: %zu after %zu", k, s, last[k]);
        last[k] = s;
    }
    int used = 0;
    for (int i = 0; i < 4; i++)
        used += parts_seen[i] > 0;
    cr_assert_geq(used, 2, "16 keys over 4 partitions used only %d", used);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* Raising and lowering P under load: "Nothing is moved or lost";
 * "consumers drain them forever"; reports carry the logical name. The
 * consumer runs the whole time; every message stored is consumed exactly
 * once. */
typedef struct qname_check {
    size_t wrong;
} qname_check;

static qname_check QN;
static void qname_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)t;
    (void)p;
    if (strcmp(r->queue, "rp") != 0)
        QN.wrong++;
}

typedef struct part_seen {
    ctr *c;
    int part;
    size_t from;
} part_seen;

static bool saw_partition(void *arg)
{
    part_seen *w = arg;
    for (size_t i = w->from; i < w->c->got && i < CMAX; i++)
        if (w->c->part[i] == w->part)
            return true;
    return false;
}

Test(outsider, raise_and_lower_partitions_under_load_nothing_lost)
{
    memset(&QN, 0, sizeof QN);
    size_t N = CMAX;
    adm d;
    adm_open(&d);
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    t->on_report = qname_hook;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"rp"};
    ctr_new(c, &co, q, 1);
    loadgen g = {.t = t, .q = "rp", .cap = N, .per_tick = 3, .keyed = 1};
    loadgen_start(&g);
    loadgen_wait(&g, 300, 10000);
    cr_assert_eq(adm_set_parts(&d, "rp", 4), 0);
    cr_assert_eq(d.status, 0);
    /* "Producers and consumers see the change within a few seconds" */
    part_seen w = {c, 3, 0};
    cr_assert(fx_run_until(saw_partition, &w, 8000),
              "partition 3 never consumed within 8 s of P=4");
    cr_assert_eq(adm_set_parts(&d, "rp", 2), 0);
    cr_assert_eq(d.n, 4);
    size_t at = g.next;
    loadgen_wait(&g, at + 300, 10000);
    cr_assert_eq(adm_set_parts(&d, "rp", 1), 0);
    cr_assert_eq(d.n, 2);
    at = g.next;
    loadgen_wait(&g, at + 300, 10000);
    g.stop = 1;
    size_t n = g.next;
    cr_assert(fx_wait_reports(t, n, 20000));
    cr_assert_eq(t->failed, 0);
    cr_assert_eq(QN.wrong, 0, "%zu reports named a partition", QN.wrong);
    cr_assert(ctr_wait(c, n, 30000), "consumed %zu of %zu", c->got, n);
    fx_run_for(300);
    assert_each_once(c, n);
    loadgen_free(&g);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* A consumer started AFTER P was lowered still drains the retired
 * partitions ("consumers keep draining them"). */
Test(outsider, late_consumer_drains_retired_partitions)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "lp", 4), 0);
    size_t N = 400;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, "lp", s, 32), 0);
    cr_assert(fx_wait_reports(t, N, 10000));
    cr_assert_eq(t->failed, 0);
    cr_assert_eq(adm_set_parts(&d, "lp", 1), 0);
    cr_assert_eq(d.n, 4);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_MOST_ONCE);
    const char *q[] = {"lp"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 15000), "consumed %zu of %zu", c->got, N);
    assert_each_once(c, N);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* ======================================================================== */
/* Second round: partitions meet ids, delays, retries, stops; more deadlines */
/* ======================================================================== */

/* redq_report.id: "To hand an id to a client and find it again on the
 * consumer side, make the queue a frames queue once, before producing
 * (redq_admin_set_format ...)". Here the queue is also partitioned (P = 3,
 * redq_produce_key "on one server or a cluster alike"): every delivery
 * should still carry its report's id. */
Test(outsider, frames_partitioned_queue_msg_id_is_report_id)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "fp", 3), 0);
    cr_assert_eq(d.status, 0);
    cr_assert_eq(adm_set_format(&d, "fp", REDQ_FORMAT_FRAMES), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    size_t N = 60;
    fx_tracker *t = fx_tracker_new(N);
    byid b = {calloc(N, 64)};
    t->on_report = byid_hook;
    t->hook_arg = &b;
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++) {
        char key[24], pl[64];
        snprintf(key, sizeof key, "k%zu", s % 6);
        size_t n = fx_payload(pl, sizeof pl, "fp", s, 8);
        cr_assert_eq(redq_produce_key(t->p, "fp", key, strlen(key), pl, n,
                                      (void *)(uintptr_t)(s + 1)), 0);
    }
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->ok, N);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"fp"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 8000), "consumed %zu", c->got);
    size_t bad = 0, hdr = 0, parts[3] = {0};
    char first_bad[160] = "";
    for (size_t i = 0; i < N; i++) {
        size_t s = seq_of(c->payload[i]);
        if (strncmp(c->payload[i], "RQ1", 3) == 0)
            hdr++;
        if (c->part[i] >= 0 && c->part[i] < 3)
            parts[c->part[i]]++;
        if (s >= N || strcmp(c->id[i], b.rid[s]) != 0) {
            if (!bad++)
                snprintf(first_bad, sizeof first_bad,
                         "partition %d: id '%s', report id '%s'", c->part[i],
                         c->id[i], s < N ? b.rid[s] : "?");
        }
    }
    /* release everything first: a failed assertion must not leak */
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
    free(b.rid);
    cr_assert_eq(hdr, 0, "%zu payloads with a frame header", hdr);
    cr_assert_eq(bad, 0, "%zu of %zu deliveries without their report id "
                 "(parts %zu/%zu/%zu); first: %s", bad, N, parts[0],
                 parts[1], parts[2], first_bad);
}

/* Delayed messages on a partitioned queue: "Unkeyed (redq_produce, _owned,
 * _delayed) are spread"; consumers take from every partition and promote
 * delayed messages "within about promote_interval_ms of its due time". */
Test(outsider, delayed_on_partitioned_queue_all_delivered)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "dp", 3), 0);
    size_t N = 200;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.batch_max_msgs = 8; /* several batches: several partitions */
    cr_assert_eq(fx_producer_new(t, &o), 0);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"dp"};
    ctr_new(c, &co, q, 1);
    /* learn P first: a few unkeyed messages, then wait for the discovery */
    fx_run_for(2500);
    for (size_t s = 0; s < N; s++) {
        char pl[64];
        size_t n = fx_payload(pl, sizeof pl, "dp", s, 8);
        cr_assert_eq(redq_produce_delayed(t->p, "dp", pl, n, 100,
                                          (void *)(uintptr_t)(s + 1)), 0);
        if (s % 8 == 7)
            fx_run_for(5); /* let batches seal */
    }
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->failed, 0);
    cr_assert(ctr_wait(c, N, 8000), "consumed %zu of %zu", c->got, N);
    int parts[3] = {0};
    for (size_t i = 0; i < N; i++)
        if (c->part[i] >= 0 && c->part[i] < 3)
            parts[c->part[i]]++;
    assert_each_once(c, N);
    cr_assert_gt(parts[1] + parts[2], 0, "all delayed went to partition 0");
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* Retries and rejects on a partitioned queue: a nacked message comes back
 * (same partition, same id, attempt 2); a rejected one is a dead letter the
 * admin counts in the logical queue's sum. */
static int pr_calls;
static int pr_part[8], pr_attempt[8];
static char pr_id[8][64];
static void pr_on_message(redq_consumer *c, redq_message *m, void *user)
{
    (void)c;
    (void)user;
    int i = pr_calls++;
    if (i < 8) {
        pr_part[i] = redq_msg_partition(m);
        pr_attempt[i] = redq_msg_attempt(m);
        snprintf(pr_id[i], sizeof pr_id[i], "%s", redq_msg_id(m));
    }
    if (i == 0)
        redq_nack(m, "again");
    else if (i == 1)
        redq_ack(m);
    else
        redq_reject(m, "bad");
}

static bool pr_three(void *arg)
{
    (void)arg;
    return pr_calls >= 3;
}

typedef struct qinfo {
    int done, status;
    uint64_t dead, ready, processing;
    int partitions;
} qinfo;

static void qinfo_cb(redq_admin *a, int status, const char *errstr,
                     const redq_queue_info *qs, size_t n, void *user)
{
    (void)a;
    (void)errstr;
    qinfo *v = user;
    v->done = 1;
    v->status = status;
    if (n > 0) {
        v->dead = qs[0].dead;
        v->ready = qs[0].ready;
        v->processing = qs[0].processing;
        v->partitions = qs[0].partitions;
    }
}

Test(outsider, nack_and_reject_on_a_high_partition)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "np", 4), 0);
    /* one key, so one partition; pick one that is not partition 0 */
    fx_tracker *t = fx_tracker_new(2);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    const char *key = NULL;
    static const char *keys[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    /* the partition of a key is slot(key) % 4; we cannot compute CRC16
     * here without the library, so produce two messages per candidate key
     * and keep going until one landed outside partition 0 */
    for (size_t i = 0; i < 2; i++)
        cr_assert_eq(redq_produce_key(t->p, "np", "zz", 2, "m", 1, NULL), 0);
    (void)key;
    (void)keys;
    cr_assert(fx_wait_reports(t, 2, 5000));
    pr_calls = 0;
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fx_url();
    co.on_message = pr_on_message;
    co.retry_base_ms = 20;
    co.retry_max_ms = 40;
    co.promote_interval_ms = 20;
    co.pop_timeout_ms = 100;
    const char *q[] = {"np"};
    redq_consumer *c;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &co, q, 1), 0);
    cr_assert(fx_run_until(pr_three, NULL, 8000), "deliveries %d", pr_calls);
    /* delivery 0 was nacked; it comes back as a later delivery with the same
     * id and attempt 2 in the same partition */
    int back = -1;
    for (int i = 1; i < 3; i++)
        if (strcmp(pr_id[i], pr_id[0]) == 0)
            back = i;
    cr_assert_neq(back, -1, "nacked message (id %s, partition %d) not back "
                  "with its id: %s, %s", pr_id[0], pr_part[0], pr_id[1],
                  pr_id[2]);
    cr_assert_eq(pr_attempt[back], 2);
    cr_assert_eq(pr_part[back], pr_part[0]);
    fx_run_for(200);
    qinfo v = {0};
    cr_assert_eq(redq_admin_queue(d.a, "np", qinfo_cb, &v), 0);
    cr_assert(fx_run_until(flag_set, &v.done, 5000));
    cr_assert_eq(v.status, 0);
    cr_assert_eq(v.partitions, 4);
    cr_assert_eq(v.dead, 1, "dead letters summed: %llu (partition %d)",
                 (unsigned long long)v.dead, pr_part[0]);
    cr_assert_eq(v.ready + v.processing, 0);
    int closed = 0;
    redq_consumer_close(c, int_closed, &closed);
    cr_assert(fx_run_until(flag_set, &closed, 5000));
    adm_close(&d);
}

/* Stop with messages held from every partition: they go back to their own
 * partitions, and a new consumer gets them all. */
Test(outsider, timed_out_stop_gives_back_partition_messages)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "gp", 4), 0);
    size_t N = 64;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, "gp", s, 16), 0);
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->failed, 0);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"gp"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 8000), "consumed %zu", c->got);
    cr_assert_eq(redq_consumer_stop(c->c, 50, ctr_stopped, c), 0);
    cr_assert(fx_run_until(flag_set, &c->stop_calls, 5000));
    cr_assert_eq(c->stop_status, REDQ_ETIMEDOUT);
    ctr *c2 = ctr_alloc();
    ctr_opts(&co, c2, REDQ_AT_LEAST_ONCE);
    ctr_new(c2, &co, q, 1);
    cr_assert(ctr_wait(c2, N, 8000), "given back %zu of %zu", c2->got, N);
    assert_each_once(c2, N);
    for (size_t i = 0; i < c->nheld; i++)
        cr_assert_eq(redq_ack(c->held[i]), REDQ_ETIMEDOUT);
    c->nheld = 0;
    ctr_close(c);
    ctr_close(c2);
    ctr_free(c);
    ctr_free(c2);
    adm_close(&d);
}

/* "Removing a queue removes its partitions." */
Test(outsider, remove_partitioned_queue_removes_its_partitions)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "rq2", 3), 0);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"rq1", "rq2"};
    ctr_new(c, &co, q, 2);
    fx_tracker *t = fx_tracker_new(60);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < 30; s++)
        cr_assert_eq(produce_keyed(t, "rq2", s, 10), 0);
    cr_assert(ctr_wait(c, 30, 8000), "consumed %zu of 30", c->got);
    cr_assert_eq(redq_consumer_remove_queue(c->c, "rq2", ctr_removed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->remove_calls, 5000));
    cr_assert_eq(c->remove_status, 0);
    for (size_t s = 30; s < 60; s++)
        cr_assert_eq(produce_keyed(t, "rq2", s, 10), 0);
    cr_assert(fx_wait_reports(t, 60, 5000));
    fx_run_for(1000);
    cr_assert_eq(c->got, 30, "removed queue's partitions still consumed: %zu",
                 c->got);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* A partitioned queue added at run time: its partitions are found too. */
Test(outsider, added_partitioned_queue_consumes_every_partition)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "ap", 3), 0);
    size_t N = 90;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, "ap", s, 30), 0);
    cr_assert(fx_wait_reports(t, N, 5000));
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"other"};
    ctr_new(c, &co, q, 1);
    fx_run_for(100);
    cr_assert_eq(redq_consumer_add_queue(c->c, "ap"), 0);
    cr_assert(ctr_wait(c, N, 8000), "consumed %zu of %zu", c->got, N);
    assert_each_once(c, N);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* Keyed messages waiting for the queue's partitions when the server never
 * answers: "failed by message_timeout_ms or close like any other", each
 * reported once, and a flush(-1) ends by then with 0; the counters hold
 * inside report callbacks (produced == stored + failed + pending). */
static size_t inv_bad;
static void inv_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)t;
    (void)r;
    redq_producer_stats st;
    redq_producer_get_stats(p, &st);
    if (st.produced != st.stored + st.failed + st.pending_msgs)
        inv_bad++;
}

Test(outsider, keyed_waiting_for_discovery_time_out_once_each)
{
    inv_bad = 0;
    fx_tracker *t = fx_tracker_new(20);
    fl_t = t;
    t->raw = true;
    t->on_report = inv_hook;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 250;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < 20; s++) {
        char pl[64];
        size_t n = fx_payload(pl, sizeof pl, "kd", s, 8);
        cr_assert_eq(redq_produce_key(t->p, "kd", "key", 3, pl, n,
                                      (void *)(uintptr_t)(s + 1)), 0);
    }
    static fl f; /* outlives a failed assertion: close calls it later */
    memset(&f, 0, sizeof f);
    cr_assert_eq(redq_producer_flush(t->p, -1, fl_cb, &f), 0);
    bool ended = fx_run_until(flag_set, &f.calls, 5000);
    redq_producer_stats st = fx_stats(t);
    cr_assert(ended, "flush(-1) did not end within 5 s (message_timeout_ms "
              "250): reports %zu of 20, pending %zu", t->reports,
              st.pending_msgs);
    cr_assert_eq(f.status, 0);
    cr_assert_eq(f.reports_at, 20);
    cr_assert_eq(t->failed, 20);
    cr_assert_eq(t->last_fail_status, REDQ_ETIMEDOUT);
    cr_assert_eq(inv_bad, 0, "counters broken in %zu reports", inv_bad);
}

/* on_ready: "A message that fails (timeout, close) counts as reported." */
Test(outsider, on_ready_after_timeouts_free_the_window)
{
    fx_tracker *t = fx_tracker_new(20);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 200;
    o.max_pending_msgs = 8;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    size_t s = 0;
    while (fx_produce(t, "rt", s, 8) == 0)
        s++;
    cr_assert_eq(s, 8);
    cr_assert(fx_wait_ready(t, 3000), "no on_ready after timeouts");
    cr_assert_eq(t->ready, 1);
    cr_assert_leq(t->ready_stats.pending_msgs, 4);
}

/* Close from inside on_ready, with produce in it first: the produced
 * message is reported (ECLOSED or stored) before the close callback. */
static int cor_rc = 99;
static void cor_ready(redq_producer *p, void *user)
{
    (void)p;
    fx_tracker *t = user;
    t->ready++;
    cor_rc = fx_produce(t, "cr", 100, 8);
    fx_close(t);
}

Test(outsider, close_inside_on_ready)
{
    fx_tracker *t = fx_tracker_new(128);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.max_pending_msgs = 10;
    o.on_ready = cor_ready;
    o.on_ready_user = t;
    cr_assert_eq(redq_producer_new(&t->p, fx_base(), &o), 0);
    /* fx_producer_new would repoint on_ready; use the tracker's report cb
     * by hand is not possible, so count via stats and the close flag */
    size_t s = 0;
    while (fx_produce(t, "cr", s, 8) == 0)
        s++;
    cr_assert_eq(s, 10);
    cr_assert(fx_wait_closed(t, 5000));
    cr_assert_eq(cor_rc, 0, "produce in on_ready: %d", cor_rc);
    cr_assert_eq(t->ready, 1);
}

/* Stop from inside on_message, then finish the message in the same
 * handler: the stop completes with 0 (it waited for that ack). */
static int sim_stop_status = 99, sim_stop_calls;
static void sim_stopped(redq_consumer *c, int status, void *user)
{
    (void)c;
    (void)user;
    sim_stop_calls++;
    sim_stop_status = status;
}
static int sim_rc_stop = 99, sim_rc_ack = 99, sim_calls;
static void sim_on_message(redq_consumer *c, redq_message *m, void *user)
{
    (void)user;
    if (sim_calls++ == 0)
        sim_rc_stop = redq_consumer_stop(c, 5000, sim_stopped, NULL);
    int rc = redq_ack(m);
    if (sim_calls == 1)
        sim_rc_ack = rc;
}

Test(outsider, stop_inside_on_message_then_ack)
{
    push_n("sm", 5);
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fx_url();
    co.on_message = sim_on_message;
    co.pop_timeout_ms = 100;
    const char *q[] = {"sm"};
    redq_consumer *c;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &co, q, 1), 0);
    cr_assert(fx_run_until(flag_set, &sim_stop_calls, 5000));
    cr_assert_eq(sim_rc_stop, 0);
    cr_assert_eq(sim_rc_ack, 0);
    cr_assert_eq(sim_stop_status, 0);
    /* messages a pop returned meanwhile are still delivered: all 5 (one
     * pop) were handled and acked; nothing left anywhere */
    cr_assert_eq(fx_llen("sm") + sim_calls, 5, "ready %lld, handled %d",
                 fx_llen("sm"), sim_calls);
    int closed = 0;
    redq_consumer_close(c, int_closed, &closed);
    cr_assert(fx_run_until(flag_set, &closed, 5000));
}

/* Close from inside the stop callback and from inside the remove
 * callback (contract 7). */
static int cis_closed;
static void cis_stopped(redq_consumer *c, int status, void *user)
{
    (void)status;
    (void)user;
    redq_consumer_close(c, int_closed, &cis_closed);
}

Test(outsider, close_inside_stop_callback)
{
    push_n("cs", 2);
    ctr *t = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, t, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"cs"};
    ctr_new(t, &co, q, 1);
    cr_assert(ctr_wait(t, 2, 5000));
    cis_closed = 0;
    cr_assert_eq(redq_consumer_stop(t->c, 1000, cis_stopped, NULL), 0);
    cr_assert(fx_run_until(flag_set, &cis_closed, 5000));
    ctr_free(t);
}

static void cir_removed(redq_consumer *c, int status, void *user)
{
    (void)status;
    (void)user;
    redq_consumer_close(c, int_closed, &cis_closed);
}

Test(outsider, close_inside_remove_callback)
{
    ctr *t = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, t, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"ci1", "ci2"};
    ctr_new(t, &co, q, 2);
    fx_run_for(100);
    cis_closed = 0;
    cr_assert_eq(redq_consumer_remove_queue(t->c, "ci2", cir_removed, NULL),
                 0);
    cr_assert(fx_run_until(flag_set, &cis_closed, 5000));
    ctr_free(t);
}

/* Remove then add the same queue again from the remove callback: it is
 * consumed again (a new slot). */
static void readd_removed(redq_consumer *c, int status, void *user)
{
    ctr *t = user;
    t->remove_calls++;
    t->remove_status = status;
    t->close_rc = redq_consumer_add_queue(c, "ra2");
}

Test(outsider, readd_queue_from_its_remove_callback)
{
    ctr *t = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, t, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"ra1", "ra2"};
    ctr_new(t, &co, q, 2);
    fx_run_for(100);
    t->close_rc = 99;
    cr_assert_eq(redq_consumer_remove_queue(t->c, "ra2", readd_removed, t),
                 0);
    cr_assert(fx_run_until(flag_set, &t->remove_calls, 5000));
    cr_assert_eq(t->remove_status, 0);
    cr_assert_eq(t->close_rc, 0, "add in the remove callback: %d",
                 t->close_rc);
    push_n("ra2", 4);
    cr_assert(ctr_wait(t, 4, 5000), "re-added queue consumed %zu", t->got);
    ctr_close(t);
    ctr_free(t);
}

/* Owned messages that time out are freed once, after their report. */
Test(outsider, owned_timed_out_freed_once)
{
    memset(OW, 0, sizeof OW);
    memset(OWBUF, 0, sizeof OWBUF);
    ow_closed = 0;
    fx_tracker *t = fx_tracker_new(NOWN);
    t->raw = true;
    t->on_report = ow_report;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 150;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t i = 0; i < 10; i++)
        cr_assert_eq(own_produce(t->p, "ot", i, i % 2 ? 700 : 10), 0);
    cr_assert(fx_wait_reports(t, 10, 3000));
    size_t n = 10;
    cr_assert(fx_run_until(ow_all_freed, &n, 2000));
    for (size_t k = 0; k < 10; k++) {
        cr_assert_eq(OW[k].freed, 1);
        cr_assert_eq(OW[k].freed_before_report, 0);
        cr_assert_eq(OW[k].report_ptr_ok, 1);
    }
}

/* Owned messages to a partitioned queue: stored in the partitions, freed
 * once each, consumed byte for byte. */
Test(outsider, owned_on_partitioned_queue)
{
    memset(OW, 0, sizeof OW);
    memset(OWBUF, 0, sizeof OWBUF);
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "opq", 3), 0);
    fx_tracker *t = fx_tracker_new(NOWN);
    t->raw = true;
    t->on_report = ow_report;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.batch_max_msgs = 4;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t i = 0; i < 40; i++) {
        cr_assert_eq(own_produce(t->p, "opq", i, 600 + i), 0);
        if (i % 4 == 3)
            fx_run_for(2);
    }
    cr_assert(fx_wait_reports(t, 40, 5000));
    cr_assert_eq(t->failed, 0);
    size_t n = 40;
    cr_assert(fx_run_until(ow_all_freed, &n, 2000));
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"opq"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 40, 8000), "consumed %zu of 40", c->got);
    unsigned seen[40] = {0};
    for (size_t i = 0; i < 40; i++) {
        size_t len = strlen(c->payload[i]);
        cr_assert_geq(len, 600);
        size_t k = len - 600;
        cr_assert_lt(k, 40);
        for (size_t j = 0; j < len; j++)
            cr_assert_eq(c->payload[i][j], 'a' + (int)(k % 26));
        seen[k]++;
    }
    for (size_t k = 0; k < 40; k++)
        cr_assert_eq(seen[k], 1, "message %zu seen %u times", k, seen[k]);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* redq_msg_partition(NULL) is -1; accessors on NULL do not crash where the
 * header gives a value. */
Test(outsider, msg_partition_null)
{
    cr_assert_eq(redq_msg_partition(NULL), -1);
}

/* The same with a live server: keyed messages to a queue not seen yet,
 * flushed at once. "call cb once every message accepted so far has been
 * reported"; DESIGN: "Flush waits for ... keyed messages still waiting for
 * discovery". */
Test(outsider, flush_with_keyed_messages_on_a_live_server)
{
    fx_tracker *t = fx_tracker_new(20);
    fl_t = t;
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < 20; s++) {
        char pl[64];
        size_t n = fx_payload(pl, sizeof pl, "kl", s, 8);
        cr_assert_eq(redq_produce_key(t->p, "kl", "key", 3, pl, n,
                                      (void *)(uintptr_t)(s + 1)), 0);
    }
    static fl f;
    memset(&f, 0, sizeof f);
    cr_assert_eq(redq_producer_flush(t->p, -1, fl_cb, &f), 0);
    bool ended = fx_run_until(flag_set, &f.calls, 5000);
    cr_assert(ended, "flush(-1) did not end: reports %zu of 20", t->reports);
    cr_assert_eq(f.status, 0);
    cr_assert_eq(f.reports_at, 20, "flush ended before its messages' "
                 "reports (%zu)", f.reports_at);
    cr_assert_eq(t->ok, 20);
}

/* A finite flush over keyed messages that all timed out while waiting
 * for discovery: status 0 once they are reported, not REDQ_ETIMEDOUT at
 * the flush's own deadline. */
Test(outsider, finite_flush_with_keyed_timeouts_ends_at_the_reports)
{
    fx_tracker *t = fx_tracker_new(5);
    fl_t = t;
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 150;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < 5; s++) {
        char pl[64];
        size_t n = fx_payload(pl, sizeof pl, "kf", s, 8);
        cr_assert_eq(redq_produce_key(t->p, "kf", "key", 3, pl, n,
                                      (void *)(uintptr_t)(s + 1)), 0);
    }
    static fl f;
    memset(&f, 0, sizeof f);
    uint64_t t0 = fx_now_us();
    cr_assert_eq(redq_producer_flush(t->p, 3000, fl_cb, &f), 0);
    cr_assert(fx_run_until(flag_set, &f.calls, 5000));
    cr_assert_lt(f.at_us - t0, 1500000, "flush ended %llu us after it began:"
                 " not when its messages were reported (150 ms) but at its "
                 "own deadline", (unsigned long long)(f.at_us - t0));
    cr_assert_eq(f.status, 0, "status %d: the flush waited for messages "
                 "already reported (reports %zu at its end)", f.status,
                 f.reports_at);
}

/* ======================================================================== */
/* Third round                                                               */
/* ======================================================================== */

/* produce_owned with payload NULL and len 0 ("payload may be NULL when len
 * is 0", as redq_produce): accepted, and free_cb is called exactly once
 * ("exactly once per accepted message ... whatever the outcome"). */
static int nullfree_calls;
static void *nullfree_ptr = (void *)1;
static void nullfree(void *payload, void *user)
{
    (void)user;
    nullfree_calls++;
    nullfree_ptr = payload;
}

Test(outsider, owned_null_empty_payload_freed_once)
{
    fx_tracker *t = fx_tracker_new(1);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    nullfree_calls = 0;
    cr_assert_eq(redq_produce_owned(t->p, "on", NULL, 0, nullfree, NULL,
                                    NULL), 0);
    cr_assert_eq(redq_produce_owned(t->p, "on", NULL, 5, nullfree, NULL,
                                    NULL), REDQ_EINVAL);
    cr_assert(fx_wait_reports(t, 1, 5000));
    fx_run_for(50);
    cr_assert_eq(nullfree_calls, 1);
    cr_assert_null(nullfree_ptr);
    cr_assert_eq(fx_llen("on"), 1);
}

/* Delayed messages carry the producer's id on a plain queue too
 * (redq_msg_id: "On a frames queue ... and for delayed messages, the
 * producer's"). */
Test(outsider, delayed_message_on_plain_queue_has_report_id)
{
    size_t N = 5;
    fx_tracker *t = fx_tracker_new(N);
    byid b = {calloc(N, 64)};
    t->on_report = byid_hook;
    t->hook_arg = &b;
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++) {
        char pl[64];
        size_t n = fx_payload(pl, sizeof pl, "dq", s, 8);
        cr_assert_eq(redq_produce_delayed(t->p, "dq", pl, n, 50,
                                          (void *)(uintptr_t)(s + 1)), 0);
    }
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->ok, N);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_MOST_ONCE);
    const char *q[] = {"dq"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 5000));
    for (size_t i = 0; i < N; i++) {
        size_t s = seq_of(c->payload[i]);
        cr_assert_lt(s, N);
        cr_assert_str_eq(c->id[i], b.rid[s]);
    }
    ctr_close(c);
    ctr_free(c);
    free(b.rid);
}

/* G4 on a frames queue: a payload that looks like a frame is delivered
 * byte for byte (the producer wraps it), and enqueued_ms is the producer's
 * clock at acceptance. */
Test(outsider, frame_lookalike_payload_on_frames_queue_is_transparent)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_format(&d, "lk", REDQ_FORMAT_FRAMES), 0);
    fx_tracker *t = fx_tracker_new(3);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    static const char *pls[] = {"RQ1 id=evil-1 ts=5\nboo",
                                "RQ1 id=x ts=1\n", "RQ1 "};
    struct timeval tv;
    evutil_gettimeofday(&tv, NULL);
    long long before = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(redq_produce(t->p, "lk", pls[i], strlen(pls[i]),
                                  (void *)(uintptr_t)(i + 1)), 0);
    cr_assert(fx_wait_reports(t, 3, 5000));
    cr_assert_eq(t->ok, 3);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"lk"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 3, 5000));
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(c->payload[i], pls[i]);
        cr_assert_str_neq(c->id[i], "evil-1");
        cr_assert_geq(c->enq[i], before - 1000);
        cr_assert_leq(c->enq[i], before + 10000);
    }
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* set_partitions: "One script on the queue's meta hash, so concurrent
 * calls do not interleave. n is the previous count." Two calls at once:
 * one sees 1, the other sees the first one's target. */
static adm cc_a, cc_b;
Test(outsider, concurrent_set_partitions_are_serialised)
{
    adm_open(&cc_a);
    adm_open(&cc_b);
    cr_assert_eq(redq_admin_set_partitions(cc_a.a, "cp", 4, adm_done, &cc_a),
                 0);
    cr_assert_eq(redq_admin_set_partitions(cc_b.a, "cp", 6, adm_done, &cc_b),
                 0);
    cr_assert(fx_run_until(flag_set, &cc_a.done, 5000));
    cr_assert(fx_run_until(flag_set, &cc_b.done, 5000));
    cr_assert_eq(cc_a.status, 0);
    cr_assert_eq(cc_b.status, 0);
    cr_assert((cc_a.n == 1 && cc_b.n == 4) || (cc_b.n == 1 && cc_a.n == 6),
              "previous counts %llu and %llu", (unsigned long long)cc_a.n,
              (unsigned long long)cc_b.n);
    adm_close(&cc_a);
    adm_close(&cc_b);
}

/* Lowering then raising P: "raising it makes partitions (new tags, or the
 * retired ones again, in order)"; redq_admin_partitions lists "Every
 * partition ... ever made, active and retired, by index". */
typedef struct plist {
    int done, status;
    size_t n;
    int retired[16];
    int index[16];
    char name[16][64];
} plist;

static void plist_cb(redq_admin *a, int status, const char *errstr,
                     const redq_partition_info *parts, size_t n, void *user)
{
    (void)a;
    (void)errstr;
    plist *l = user;
    l->done = 1;
    l->status = status;
    l->n = n;
    for (size_t i = 0; i < n && i < 16; i++) {
        l->retired[i] = parts[i].retired;
        l->index[i] = parts[i].index;
        snprintf(l->name[i], sizeof l->name[i], "%s", parts[i].name);
    }
}

Test(outsider, lower_then_raise_reuses_retired_partitions)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "lr", 4), 0);
    plist l1 = {0};
    cr_assert_eq(redq_admin_partitions(d.a, "lr", plist_cb, &l1), 0);
    cr_assert(fx_run_until(flag_set, &l1.done, 5000));
    cr_assert_eq(l1.n, 4);
    cr_assert_eq(adm_set_parts(&d, "lr", 2), 0);
    cr_assert_eq(d.n, 4);
    plist l2 = {0};
    cr_assert_eq(redq_admin_partitions(d.a, "lr", plist_cb, &l2), 0);
    cr_assert(fx_run_until(flag_set, &l2.done, 5000));
    cr_assert_eq(l2.n, 4, "retired partitions must still be listed");
    cr_assert_eq(l2.retired[0] + l2.retired[1], 0);
    cr_assert_eq(l2.retired[2] + l2.retired[3], 2);
    cr_assert_eq(adm_set_parts(&d, "lr", 3), 0);
    cr_assert_eq(d.n, 2);
    plist l3 = {0};
    cr_assert_eq(redq_admin_partitions(d.a, "lr", plist_cb, &l3), 0);
    cr_assert(fx_run_until(flag_set, &l3.done, 5000));
    cr_assert_eq(l3.n, 4, "a raise made a new partition instead of reusing");
    cr_assert_str_eq(l3.name[2], l1.name[2]);
    cr_assert_eq(l3.retired[2], 0);
    cr_assert_eq(l3.retired[3], 1);
    cr_assert_str_eq(l3.name[0], "lr");
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(l3.index[i], (int)i);
    adm_close(&d);
}

/* Admin close from inside one of its own callbacks (contract 7); a call
 * not yet answered gets its callback once (REDQ_ECLOSED, or its answer). */
static int ai_second_status = 99, ai_second_calls, ai_closed;
static void ai_second(redq_admin *a, int status, const char *errstr,
                      uint64_t n, void *user)
{
    (void)a;
    (void)errstr;
    (void)n;
    (void)user;
    ai_second_calls++;
    ai_second_status = status;
}
static void ai_first(redq_admin *a, int status, const char *errstr,
                     uint64_t n, void *user)
{
    (void)status;
    (void)errstr;
    (void)n;
    (void)user;
    redq_admin_close(a, int_closed, &ai_closed);
}

Test(outsider, admin_close_inside_its_callback)
{
    adm d;
    adm_open(&d);
    ai_closed = 0;
    cr_assert_eq(redq_admin_pause(d.a, "ac", 1, ai_first, NULL), 0);
    cr_assert_eq(redq_admin_purge(d.a, "ac", ai_second, NULL), 0);
    cr_assert(fx_run_until(flag_set, &ai_closed, 5000));
    cr_assert_eq(ai_second_calls, 1, "second call answered %d times",
                 ai_second_calls);
    cr_assert(ai_second_status == REDQ_ECLOSED || ai_second_status == 0,
              "status %d", ai_second_status);
}

/* At-most-once, a stop that times out while the handler holds messages:
 * redq.h says they are "given back too" -- which at-most-once would be a
 * second delivery of a message the handler is still working on. What must
 * hold either way: the stop callback once with REDQ_ETIMEDOUT, the
 * messages stay valid, finishing them returns and releases. */
Test(outsider, amo_timed_out_stop_holding_messages)
{
    push_n("am", 3);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_MOST_ONCE);
    const char *q[] = {"am"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 3, 5000));
    cr_assert_eq(redq_consumer_stop(c->c, 50, ctr_stopped, c), 0);
    cr_assert(fx_run_until(flag_set, &c->stop_calls, 5000));
    cr_assert_eq(c->stop_status, REDQ_ETIMEDOUT);
    cr_assert_eq(memcmp(redq_msg_data(c->held[2]), "am|2", 4), 0);
    int rc0 = redq_ack(c->held[0]);
    int rc1 = redq_nack(c->held[1], NULL);
    int rc2 = redq_reject(c->held[2], NULL);
    c->nheld = 0;
    cr_log_info("AMO after a timed-out stop: ack %s nack %s reject %s, "
                "ready list %lld", redq_err_name(rc0), redq_err_name(rc1),
                redq_err_name(rc2), fx_llen("am"));
    cr_assert(rc0 == 0 || rc0 == REDQ_ETIMEDOUT);
    ctr_close(c);
    ctr_free(c);
}

/* The same close during a removal with nothing held (the removal may
 * already be giving the lists back when the close comes). */
Test(outsider, close_during_removal_nothing_held)
{
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"z1", "z2"};
    ctr_new(c, &co, q, 2);
    fx_run_for(100);
    cr_assert_eq(redq_consumer_remove_queue(c->c, "z2", ctr_removed, c), 0);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    cr_assert_eq(c->remove_calls, 1, "remove callback %d times",
                 c->remove_calls);
    cr_assert_eq(c->remove_after_close, 0, "remove callback after close cb");
    ctr_free(c);
}

/* Close during a removal at-most-once, holding a message of the queue. */
Test(outsider, close_during_removal_amo_held)
{
    push_n("w2", 1);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_MOST_ONCE);
    const char *q[] = {"w1", "w2"};
    ctr_new(c, &co, q, 2);
    cr_assert(ctr_wait(c, 1, 5000));
    cr_assert_eq(redq_consumer_remove_queue(c->c, "w2", ctr_removed, c), 0);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    cr_assert_eq(c->remove_calls, 1);
    cr_assert_eq(c->remove_after_close, 0);
    cr_assert_eq(redq_ack(c->held[0]), REDQ_ECLOSED);
    c->nheld = 0;
    ctr_free(c);
}

/* Pausing a partitioned queue (DESIGN, "Admin": "redq_admin_pause sets or
 * clears the flag of every partition"): consumers take from none of its
 * partitions within about promote_interval_ms, and all again after the
 * resume. */
static int pz_done;
static void pz_cb(redq_admin *a, int status, const char *errstr, uint64_t n,
                  void *user)
{
    (void)a;
    (void)errstr;
    (void)n;
    (void)user;
    pz_done = status == 0 ? 1 : status;
}

Test(outsider, pause_partitioned_queue_pauses_every_partition)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "pz", 3), 0);
    pz_done = 0;
    cr_assert_eq(redq_admin_pause(d.a, "pz", 1, pz_cb, NULL), 0);
    cr_assert(fx_run_until(flag_set, &pz_done, 5000));
    cr_assert_eq(pz_done, 1);
    size_t N = 60;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, "pz", s, 12), 0);
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->ok, N);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"pz"};
    ctr_new(c, &co, q, 1);
    fx_run_for(3000); /* discovery (2 s) and several promote rounds */
    int parts[3] = {0};
    for (size_t i = 0; i < c->got && i < CMAX; i++)
        if (c->part[i] >= 0 && c->part[i] < 3)
            parts[c->part[i]]++;
    cr_assert_eq(c->got, 0, "paused queue delivered %zu (partitions "
                 "%d/%d/%d)", c->got, parts[0], parts[1], parts[2]);
    pz_done = 0;
    cr_assert_eq(redq_admin_pause(d.a, "pz", 0, pz_cb, NULL), 0);
    cr_assert(fx_run_until(flag_set, &pz_done, 5000));
    cr_assert(ctr_wait(c, N, 8000), "after resume %zu of %zu", c->got, N);
    assert_each_once(c, N);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* Close right after add_queue (its first heartbeat not acknowledged yet),
 * and add then remove at once: each callback once, close last. */
Test(outsider, close_right_after_add_queue)
{
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"ca1"};
    ctr_new(c, &co, q, 1);
    fx_run_for(100);
    cr_assert_eq(redq_consumer_add_queue(c->c, "ca2"), 0);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    fx_run_for(50);
    cr_assert_eq(c->closed, 1);
    ctr_free(c);
}

Test(outsider, add_then_remove_at_once_then_close)
{
    push_n("ar2", 3);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"ar1"};
    ctr_new(c, &co, q, 1);
    fx_run_for(100);
    cr_assert_eq(redq_consumer_add_queue(c->c, "ar2"), 0);
    cr_assert_eq(redq_consumer_remove_queue(c->c, "ar2", ctr_removed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->remove_calls, 5000));
    cr_assert_eq(c->remove_status, 0);
    fx_run_for(300);
    /* whatever was taken meanwhile was acked; the rest stays in ar2 */
    cr_assert_eq(fx_llen("ar2") + (long long)c->got, 3,
                 "ready %lld + delivered %zu != 3", fx_llen("ar2"), c->got);
    ctr_close(c);
    ctr_free(c);
}

/* Remove a partitioned queue while holding one of its messages, then
 * close: the remove callback once, before the close callback; the message
 * still finishes (REDQ_ECLOSED). */
Test(outsider, remove_partitioned_queue_held_then_close)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "hp", 3), 0);
    fx_tracker *t = fx_tracker_new(12);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < 12; s++)
        cr_assert_eq(produce_keyed(t, "hp", s, 12), 0);
    cr_assert(fx_wait_reports(t, 12, 5000));
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"hp0", "hp"};
    ctr_new(c, &co, q, 2);
    cr_assert(ctr_wait(c, 12, 8000), "got %zu", c->got);
    cr_assert_eq(redq_consumer_remove_queue(c->c, "hp", ctr_removed, c), 0);
    fx_run_for(100);
    cr_assert_eq(c->remove_calls, 0);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    cr_assert_eq(c->remove_calls, 1);
    cr_assert_eq(c->remove_after_close, 0);
    for (size_t i = 0; i < c->nheld; i++)
        cr_assert_eq(redq_ack(c->held[i]), REDQ_ECLOSED);
    c->nheld = 0;
    ctr_free(c);
    adm_close(&d);
}

/* Close from inside a report while keyed messages of another queue are
 * still waiting for that queue's partitions: each reported once
 * (REDQ_ECLOSED), before the close callback. */
static void close_on_first(fx_tracker *t, redq_producer *p,
                           const redq_report *r)
{
    (void)p;
    (void)r;
    if (t->reports == 1)
        fx_close(t);
}

Test(outsider, close_in_report_with_keyed_waiting)
{
    fx_tracker *t = fx_tracker_new(40);
    t->raw = true;
    t->on_report = close_on_first;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    cr_assert(fx_wait_connected(t, 5000));
    cr_assert_eq(redq_produce(t->p, "first", "x", 1, NULL), 0);
    for (size_t s = 0; s < 39; s++)
        cr_assert_eq(produce_keyed(t, "kw", s, 5), 0);
    cr_assert(fx_wait_closed(t, 5000));
    cr_assert_eq(t->reports, 40, "reports %zu of 40", t->reports);
    cr_assert_eq(t->reports_after_close, 0);
    cr_assert_eq(t->bad, 0, "%s", t->bad_msg);
}

/* The other order: frames first, then partitions (the partitions made by
 * the raise are parts of a frames queue). */
Test(outsider, frames_then_partitions_msg_id_is_report_id)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_format(&d, "fp2", REDQ_FORMAT_FRAMES), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    cr_assert_eq(adm_set_parts(&d, "fp2", 3), 0);
    cr_assert_eq(d.status, 0);
    size_t N = 30;
    fx_tracker *t = fx_tracker_new(N);
    byid b = {calloc(N, 64)};
    t->on_report = byid_hook;
    t->hook_arg = &b;
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++) {
        char key[24], pl[64];
        snprintf(key, sizeof key, "k%zu", s % 6);
        size_t n = fx_payload(pl, sizeof pl, "fp2", s, 8);
        cr_assert_eq(redq_produce_key(t->p, "fp2", key, strlen(key), pl, n,
                                      (void *)(uintptr_t)(s + 1)), 0);
    }
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->ok, N);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"fp2"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 8000), "consumed %zu", c->got);
    size_t bad = 0;
    int bad_part = -1;
    for (size_t i = 0; i < N; i++) {
        size_t s = seq_of(c->payload[i]);
        if (s >= N || strcmp(c->id[i], b.rid[s]) != 0) {
            bad++;
            bad_part = c->part[i];
        }
    }
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
    free(b.rid);
    cr_assert_eq(bad, 0, "%zu of %zu without their report id (e.g. "
                 "partition %d)", bad, N, bad_part);
}

/* Boundaries that must be accepted, and stop/close after close. */
Test(outsider, option_boundaries_accepted)
{
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.stats_interval_ms = 86400000;
    o.max_message_bytes = (size_t)512 << 20;
    o.min_replicas = 64;
    o.client_name = "";
    char err[256];
    o.errbuf = err;
    o.errbuf_size = sizeof err;
    fx_tracker *t = fx_tracker_new(1);
    cr_assert_eq(fx_producer_new(t, &o), 0, "%s", err);
    fx_tracker *t2 = fx_tracker_new(1);
    o.client_name = NULL;
    o.min_replicas = 0;
    cr_assert_eq(fx_producer_new(t2, &o), 0, "%s", err);
    redq_consumer_options co;
    ctr *c = ctr_alloc();
    ctr_opts(&co, c, REDQ_AT_MOST_ONCE);
    co.pop_timeout_ms = 10;
    co.errbuf = err;
    co.errbuf_size = sizeof err;
    const char *q[] = {"ob"};
    cr_assert_eq(redq_consumer_new(&c->c, fx_base(), &co, q, 1), 0, "%s",
                 err);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), REDQ_ECLOSED);
    cr_assert_eq(redq_consumer_stop(c->c, 10, ctr_stopped, c), REDQ_ECLOSED);
    cr_assert_eq(redq_consumer_add_queue(c->c, "x"), REDQ_ECLOSED);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    cr_assert_eq(c->closed, 1);
    cr_assert_eq(c->stop_calls, 0);
    ctr_free(c);
}
