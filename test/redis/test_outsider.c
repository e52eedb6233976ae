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
#include "test_outsider.h"

TestSuite(outsider, .init = fx_setup, .fini = fx_teardown, .timeout = 120);

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

