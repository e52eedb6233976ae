/*
 * Message ids and queue formats (issue 12, docs/DESIGN.md "Ids and
 * formats") against a real redis-server: the producer's id reaches the
 * consumer on every attempt and in the dead letter on a frames queue; a
 * plain queue stays byte for byte, with consumer-made ids that retries
 * keep; switching formats under a running producer loses nothing.
 *
 * Callbacks only record; assertions run after the loop has returned.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

TestSuite(ids, .init = fx_setup, .fini = fx_teardown, .timeout = 90);

#define MAXD 64 /* deliveries recorded in detail */

/* ---- a consumer that records ---------------------------------------------- */

typedef struct ctrack {
    redq_consumer *c;
    size_t got;                 /* deliveries */
    int nack;                   /* 1: nack every delivery; 0: ack */
    char id[MAXD][80];
    int attempt[MAXD];
    long long enq[MAXD];
    char *body[MAXD];
    size_t blen[MAXD];
    /* every delivery (pool tests): its msg id by payload seq */
    char (*by_seq)[80];
    unsigned *seen;
    size_t cap, unique;
    size_t headers;             /* payloads that start with "RQ1" */
    int closed;
} ctrack;

static size_t seq_of(const char *d, size_t len)
{
    const char *bar = memchr(d, '|', len);
    return bar ? (size_t)strtoul(bar + 1, NULL, 10) : (size_t)-1;
}

static void on_cmsg(redq_consumer *c, redq_message *m, void *user)
{
    ctrack *t = user;
    const char *d = redq_msg_data(m);
    size_t len = redq_msg_len(m), s;
    (void)c;
    if (t->got < MAXD) {
        snprintf(t->id[t->got], sizeof t->id[0], "%s", redq_msg_id(m));
        t->attempt[t->got] = redq_msg_attempt(m);
        t->enq[t->got] = redq_msg_enqueued_ms(m);
        t->body[t->got] = malloc(len + 1);
        memcpy(t->body[t->got], d, len);
        t->blen[t->got] = len;
    }
    if (len >= 3 && memcmp(d, "RQ1", 3) == 0)
        t->headers++;
    s = seq_of(d, len);
    if (t->seen != NULL && s < t->cap) {
        if (t->seen[s]++ == 0)
            t->unique++;
        snprintf(t->by_seq[s], sizeof t->by_seq[0], "%s", redq_msg_id(m));
    }
    t->got++;
    if (t->nack)
        redq_nack(m, "failing on purpose");
    else
        redq_ack(m);
}

static ctrack *ctrack_new(size_t cap)
{
    ctrack *t = calloc(1, sizeof *t);
    cr_assert_not_null(t);
    if (cap > 0) {
        t->cap = cap;
        t->seen = calloc(cap, sizeof *t->seen);
        t->by_seq = calloc(cap, sizeof *t->by_seq);
    }
    return t;
}

static void cstart(ctrack *t, const char *q, int guarantee, size_t pool)
{
    redq_consumer_options o;
    const char *qs[1] = {q};
    int rc;
    redq_consumer_options_init(&o);
    o.url = fx_url();
    o.guarantee = guarantee;
    o.on_message = on_cmsg;
    o.on_message_user = t;
    o.max_attempts = 3;
    o.retry_base_ms = 5;
    o.retry_max_ms = 20;
    o.promote_interval_ms = 20;
    o.consumer_ttl_ms = 2000;
    o.reconnect_max_ms = 100;
    if (pool > 0)
        o.pool_size = pool;
    rc = redq_consumer_new(&t->c, fx_base(), &o, qs, 1);
    cr_assert(rc == 0, "redq_consumer_new: %s", redq_err_name(rc));
}

static void on_cclosed(void *u)
{
    ((ctrack *)u)->closed = 1;
}

static bool cond_cclosed(void *u)
{
    return ((ctrack *)u)->closed;
}

static void cclose(ctrack *t)
{
    cr_assert(redq_consumer_close(t->c, on_cclosed, t) == 0);
    cr_assert(fx_run_until(cond_cclosed, t, 5000));
}

static void cfree(ctrack *t)
{
    size_t i;
    for (i = 0; i < t->got && i < MAXD; i++)
        free(t->body[i]);
    free(t->seen);
    free(t->by_seq);
    free(t);
}

typedef struct gotn {
    ctrack *t;
    size_t n;
} gotn;

static bool cond_got(void *a)
{
    gotn *g = a;
    return g->t->got >= g->n;
}

static bool cond_unique(void *a)
{
    gotn *g = a;
    return g->t->unique >= g->n;
}

static void wait_got(ctrack *t, size_t n, int ms)
{
    gotn g = {t, n};
    cr_assert(fx_run_until(cond_got, &g, ms), "%zu of %zu deliveries", t->got,
              n);
}

/* ---- the producer's ids ------------------------------------------------- */

typedef struct idrec {
    size_t cap;
    char (*id)[80]; /* per seq */
} idrec;

static void rec_id(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    idrec *ir = t->hook_arg;
    size_t seq = (size_t)(uintptr_t)r->opaque - 1;
    (void)p;
    cr_assert_not_null(r->id);
    if (seq < ir->cap)
        snprintf(ir->id[seq], sizeof ir->id[0], "%s", r->id);
}

static fx_tracker *producer(size_t cap, idrec *ir, size_t batch)
{
    fx_tracker *t = fx_tracker_new(cap);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.reconnect_max_ms = 100;
    if (batch > 0)
        o.batch_max_msgs = batch;
    ir->cap = cap;
    ir->id = calloc(cap, sizeof *ir->id);
    t->on_report = rec_id;
    t->hook_arg = ir;
    cr_assert(fx_producer_new(t, &o) == 0);
    cr_assert(fx_wait_connected(t, 5000));
    return t;
}

/* "<16 lowercase hex>-<decimal from 1>" */
static bool id_shaped(const char *id, const char *prefix)
{
    size_t i;
    for (i = 0; i < 16; i++)
        if (!strchr("0123456789abcdef", id[i]) || id[i] == '\0')
            return false;
    if (prefix != NULL && strncmp(id, prefix, 16) != 0)
        return false;
    if (id[16] != '-' || id[17] < '1' || id[17] > '9')
        return false;
    for (i = 18; id[i]; i++)
        if (id[i] < '0' || id[i] > '9')
            return false;
    return true;
}

/* ---- admin ---------------------------------------------------------------- */

typedef struct ares {
    int done, status;
    char err[256];
    uint64_t n;
    int format;
    size_t nm;
    char mid[16][80];
    char mbody[16][64];
    int mframed[16];
} ares;

static void on_done(redq_admin *a, int status, const char *es, uint64_t n,
                    void *user)
{
    ares *r = user;
    (void)a;
    r->done++;
    r->status = status;
    r->n = n;
    snprintf(r->err, sizeof r->err, "%s", es ? es : "");
}

static void on_queue(redq_admin *a, int status, const char *es,
                     const redq_queue_info *q, size_t n, void *user)
{
    ares *r = user;
    (void)a;
    r->done++;
    r->status = status;
    snprintf(r->err, sizeof r->err, "%s", es ? es : "");
    r->format = n > 0 ? q[0].format : -1;
}

static void on_msgs(redq_admin *a, int status, const char *es,
                    const redq_admin_msg *m, size_t n, void *user)
{
    ares *r = user;
    size_t i;
    (void)a;
    r->done++;
    r->status = status;
    snprintf(r->err, sizeof r->err, "%s", es ? es : "");
    for (i = 0; i < n && i < 16; i++) {
        snprintf(r->mid[i], sizeof r->mid[0], "%s", m[i].id);
        snprintf(r->mbody[i], sizeof r->mbody[0], "%.*s", (int)m[i].len,
                 (const char *)m[i].data);
        r->mframed[i] = m[i].framed;
    }
    r->nm = n;
}

static bool cond_done(void *a)
{
    return ((ares *)a)->done > 0;
}

static redq_admin *g_admin;

static redq_admin *admin(void)
{
    if (g_admin == NULL) {
        redq_admin_options o;
        redq_admin_options_init(&o);
        o.url = fx_url();
        cr_assert(redq_admin_new(&g_admin, fx_base(), &o) == 0);
    }
    return g_admin;
}

static ares g_res;

static ares *wait_res(int rc)
{
    cr_assert(rc == 0, "admin call: %s", redq_err_name(rc));
    cr_assert(fx_run_until(cond_done, &g_res, 10000), "no answer");
    return &g_res;
}

#define CALL(expr) (memset(&g_res, 0, sizeof g_res), wait_res(expr))

static void set_format(const char *q, int fmt)
{
    ares *r = CALL(redq_admin_set_format(admin(), q, fmt, on_done, &g_res));
    cr_assert(r->status == 0, "set_format %s: %s", q, r->err);
}

static int format_of(const char *q)
{
    ares *r = CALL(redq_admin_queue(admin(), q, on_queue, &g_res));
    cr_assert(r->status == 0, "%s", r->err);
    return r->format;
}

/* ---- frames queue: the producer's id everywhere ------------------------- */

/* One message, nacked on every attempt: the report's id is the id of all
 * three attempts and of the dead letter; the enqueue time is the
 * producer's, the same on each attempt. */
static void report_id_through_attempts_and_dead_letter(int guarantee)
{
    static idrec ir; /* outlives the test: teardown may report */
    fx_tracker *p;
    ctrack *c = ctrack_new(0);
    uint64_t before = (uint64_t)fx_now_us();
    long long wall0;
    ares *r;
    int i;

    (void)before;
    set_format("fq", REDQ_FORMAT_FRAMES);
    p = producer(1, &ir, 0);
    wall0 = (long long)time(NULL) * 1000 - 2000;
    fx_produce_range(p, "fq", 0, 1, 0);
    cr_assert(fx_wait_reports(p, 1, 5000));
    fx_assert_reported(p, 0, 1, 0);
    cr_assert(id_shaped(ir.id[0], redq_producer_id(p->p)), "report id %s",
              ir.id[0]);
    cr_assert_str_eq(ir.id[0] + 17, "1"); /* the first message: n = 1 */

    c->nack = 1;
    cstart(c, "fq", guarantee, 0);
    wait_got(c, 3, 10000);
    fx_run_for(100); /* a fourth attempt would show now */
    cr_assert_eq(c->got, 3, "%zu deliveries", c->got);
    for (i = 0; i < 3; i++) {
        cr_assert_str_eq(c->id[i], ir.id[0], "attempt %d: id %s", i + 1,
                         c->id[i]);
        cr_assert_eq(c->attempt[i], i + 1);
        cr_assert(c->enq[i] >= wall0 && c->enq[i] == c->enq[0],
                  "attempt %d enqueued %lld", i + 1, c->enq[i]);
        cr_assert(c->blen[i] > 0 && memcmp(c->body[i], "fq|0|", 5) == 0,
                  "the payload, not the frame: %.*s", (int)c->blen[i],
                  c->body[i]);
    }
    cclose(c);
    r = CALL(redq_admin_dead(admin(), "fq", 0, 10, on_msgs, &g_res));
    cr_assert(r->status == 0 && r->nm == 1, "%zu dead: %s", r->nm, r->err);
    cr_assert_str_eq(r->mid[0], ir.id[0]);
    cr_assert(strncmp(r->mbody[0], "fq|0|", 5) == 0);
    cfree(c);
}

Test(ids, frames_queue_report_id_on_every_attempt_and_dead_letter_alo)
{
    report_id_through_attempts_and_dead_letter(REDQ_AT_LEAST_ONCE);
}

Test(ids, frames_queue_report_id_on_every_attempt_and_dead_letter_amo)
{
    report_id_through_attempts_and_dead_letter(REDQ_AT_MOST_ONCE);
}

/* ---- plain queue: byte for byte, ids made by the consumer --------------- */

static void plain_frame_looking_payload(int guarantee)
{
    static const char frame[] = "RQ1 id=x a=3\nhello";
    const size_t flen = sizeof frame - 1;
    static idrec ir; /* outlives the test: teardown may report */
    fx_tracker *p = producer(1, &ir, 0);
    ctrack *c = ctrack_new(0);
    int i, k;

    cr_assert_eq(format_of("pq"), REDQ_FORMAT_PLAIN);
    /* One from redq, one from a plain client: both exactly that. */
    p->raw = true;
    cr_assert(redq_produce(p->p, "pq", frame, flen, (void *)1) == 0);
    cr_assert(fx_wait_reports(p, 1, 5000));
    fx_cmd_ok("LPUSH pq %b", frame, flen);
    cr_assert_eq(fx_llen("pq"), 2);

    c->nack = 1;
    cstart(c, "pq", guarantee, 0);
    wait_got(c, 6, 10000);
    fx_run_for(100);
    cr_assert_eq(c->got, 6, "%zu deliveries", c->got);
    for (i = 0; i < 6; i++) {
        cr_assert_eq(c->blen[i], flen, "delivery %d: %zu bytes", i,
                     c->blen[i]);
        cr_assert_eq(memcmp(c->body[i], frame, flen), 0);
        cr_assert(id_shaped(c->id[i], NULL), "made id %s", c->id[i]);
        cr_assert_str_neq(c->id[i], "x");
        cr_assert_str_neq(c->id[i], ir.id[0]); /* not the producer's */
    }
    /* Two messages, each with its own id kept over its three attempts. */
    for (k = 0; k < 2; k++) {
        const char *id0 = NULL;
        int n = 0;
        for (i = 0; i < 6; i++) {
            if (c->attempt[i] != 1)
                continue;
            if (n++ == k)
                id0 = c->id[i];
        }
        cr_assert_not_null(id0);
        n = 0;
        for (i = 0; i < 6; i++)
            if (strcmp(c->id[i], id0) == 0) {
                n++;
                cr_assert(c->attempt[i] > 1 || c->enq[i] == -1,
                          "a first delivery on a plain queue has no time");
            }
        cr_assert_eq(n, 3, "id %s on %d deliveries", id0, n);
    }
    cclose(c);
    {
        ares *r = CALL(redq_admin_dead(admin(), "pq", 0, 10, on_msgs, &g_res));
        cr_assert(r->status == 0 && r->nm == 2);
        for (i = 0; i < 2; i++) {
            int found = 0;
            for (k = 0; k < 6; k++)
                found |= strcmp(r->mid[i], c->id[k]) == 0;
            cr_assert(found, "dead letter id %s was never delivered",
                      r->mid[i]);
            cr_assert_str_eq(r->mbody[i], frame);
        }
    }
    cfree(c);
}

Test(ids, plain_queue_frame_payload_byte_for_byte_stable_made_id_alo)
{
    plain_frame_looking_payload(REDQ_AT_LEAST_ONCE);
}

Test(ids, plain_queue_frame_payload_byte_for_byte_stable_made_id_amo)
{
    plain_frame_looking_payload(REDQ_AT_MOST_ONCE);
}

/* ---- frames queue: a plain client's values ------------------------------ */

Test(ids, frames_queue_raw_lpush_is_delivered_whole)
{
    static const char *const vals[] = {
        "plain text",
        "RQ1 nofield\nbody",     /* RQ1, but no name=value: no frame */
        "RQ1 id=a b\nx",         /* a field without '=' */
        "RQ1 id=only-a-header",  /* no LF */
        "\n\nRQ1 id=1\n",
    };
    static const char bin[] = {'\0', '\xff', 'R', 'Q', '1', ' ', '\n', 'x'};
    const size_t nv = sizeof vals / sizeof vals[0];
    ctrack *c = ctrack_new(0);
    size_t i, k;

    set_format("fr", REDQ_FORMAT_FRAMES);
    for (i = 0; i < nv; i++)
        fx_cmd_ok("LPUSH fr %s", vals[i]);
    fx_cmd_ok("LPUSH fr %b", bin, sizeof bin);
    cstart(c, "fr", REDQ_AT_LEAST_ONCE, 0);
    wait_got(c, nv + 1, 5000);
    for (i = 0; i < nv + 1; i++) {
        const char *want = i < nv ? vals[i] : bin;
        size_t wl = i < nv ? strlen(vals[i]) : sizeof bin;
        cr_assert_eq(c->blen[i], wl, "value %zu: %zu bytes", i, c->blen[i]);
        cr_assert_eq(memcmp(c->body[i], want, wl), 0, "value %zu changed", i);
        cr_assert(id_shaped(c->id[i], NULL), "value %zu id %s", i, c->id[i]);
        cr_assert_eq(c->enq[i], -1);
        cr_assert_eq(c->attempt[i], 1);
        for (k = 0; k < i; k++)
            cr_assert_str_neq(c->id[i], c->id[k]);
    }
    cclose(c);
    cfree(c);
}

/* ---- switching ------------------------------------------------------------- */

/* The producer learnt "frames", then the queue becomes plain (the ready
 * list was empty) while its batches are unsent and in flight: Redis refuses
 * each PUSH, and the producer resends them as plain LPUSHes. Every message
 * is consumed exactly once, in order per queue, none with a header. */
Test(ids, switch_to_plain_mid_stream_loses_nothing_shows_no_header)
{
    const size_t n = 5000;
    static idrec ir; /* outlives the test: teardown may report */
    fx_tracker *p;
    ctrack *c = ctrack_new(n);
    gotn g = {c, n};
    size_t i;

    set_format("sq", REDQ_FORMAT_FRAMES);
    p = producer(n, &ir, 100);
    fx_produce_range(p, "sq", 0, 1, 0); /* learns frames */
    cr_assert(fx_wait_reports(p, 1, 5000));
    cr_assert_eq(fx_llen("sq"), 1);
    {
        redisReply *v = fx_cmd("LINDEX sq 0");
        cr_assert(v->type == REDIS_REPLY_STRING &&
                  strncmp(v->str, "RQ1 id=", 7) == 0, "a frame: %s", v->str);
    }
    fx_cmd_ok("DEL sq");
    /* Many batches at once (100 messages each), then the switch before the
     * loop runs again: none of them has been written yet. */
    fx_produce_range(p, "sq", 1, n, 0);
    {
        /* What redq_admin_set_format does with the list empty, done from
         * another client without running the loop. */
        char *meta = fx_queue_key("sq", "meta");
        fx_cmd_ok("HDEL %s format", meta);
        free(meta);
    }
    cr_assert(fx_wait_reports(p, n, 20000), "%zu reports", p->reports);
    fx_assert_reported(p, 0, n, 0);
    cr_assert(fx_stats(p).batches_resent > 0, "no PUSH was refused");
    cr_assert_eq(fx_llen("sq"), (long long)(n - 1),
                 "nothing lost, nothing twice");
    fx_assert_list_range("sq", 1, n); /* payloads only, in order */
    cr_assert_eq(format_of("sq"), REDQ_FORMAT_PLAIN);

    c->seen[0] = 1; /* taken out above */
    c->unique = 1;
    cstart(c, "sq", REDQ_AT_LEAST_ONCE, 0);
    cr_assert(fx_run_until(cond_unique, &g, 20000), "%zu unique", c->unique);
    cr_assert_eq(c->headers, 0, "%zu payloads with a frame header",
                 c->headers);
    for (i = 1; i < n; i++)
        cr_assert_eq(c->seen[i], 1, "seq %zu delivered %u times", i,
                     c->seen[i]);
    cclose(c);
    cfree(c);
}

Test(ids, set_format_refused_while_the_ready_list_is_not_empty)
{
    static idrec ir; /* outlives the test: teardown may report */
    fx_tracker *p;
    ares *r;

    cr_assert_eq(redq_admin_set_format(admin(), "nq", 7, on_done, &g_res),
                 REDQ_EINVAL);
    set_format("nq", REDQ_FORMAT_FRAMES);
    cr_assert_eq(format_of("nq"), REDQ_FORMAT_FRAMES);
    p = producer(2, &ir, 0);
    fx_produce_range(p, "nq", 0, 2, 0);
    cr_assert(fx_wait_reports(p, 2, 5000));

    /* Peek shows the producer's ids, and the payloads alone. */
    r = CALL(redq_admin_peek(admin(), "nq", 10, on_msgs, &g_res));
    cr_assert(r->status == 0 && r->nm == 2);
    cr_assert_str_eq(r->mid[0], ir.id[0]);
    cr_assert_str_eq(r->mid[1], ir.id[1]);
    cr_assert(r->mframed[0] && strncmp(r->mbody[0], "nq|0|", 5) == 0);

    r = CALL(redq_admin_set_format(admin(), "nq", REDQ_FORMAT_PLAIN, on_done,
                                   &g_res));
    cr_assert_eq(r->status, REDQ_ENOTEMPTY, "%s", redq_err_name(r->status));
    cr_assert(strstr(r->err, "2 frames") != NULL, "%s", r->err);
    cr_assert_eq(format_of("nq"), REDQ_FORMAT_FRAMES);
    cr_assert_eq(fx_llen("nq"), 2);

    fx_cmd_ok("DEL nq");
    r = CALL(redq_admin_set_format(admin(), "nq", REDQ_FORMAT_PLAIN, on_done,
                                   &g_res));
    cr_assert(r->status == 0 && r->n == 1, "%s", r->err);
    r = CALL(redq_admin_set_format(admin(), "nq", REDQ_FORMAT_PLAIN, on_done,
                                   &g_res));
    cr_assert(r->status == 0 && r->n == 0, "already plain: n %llu",
              (unsigned long long)r->n);
    cr_assert_eq(format_of("nq"), REDQ_FORMAT_PLAIN);
    /* plain -> frames does not care what the list holds */
    fx_cmd_ok("LPUSH nq x");
    set_format("nq", REDQ_FORMAT_FRAMES);
    cr_assert_eq(format_of("nq"), REDQ_FORMAT_FRAMES);
}

/* ---- names and pools ---------------------------------------------------- */

Test(ids, queue_name_of_1024_bytes)
{
    char q[1025];
    static idrec ir; /* outlives the test: teardown may report */
    fx_tracker *p;
    ctrack *c = ctrack_new(4);
    gotn g = {c, 4};
    size_t i;

    memset(q, 'n', 1024);
    q[1024] = '\0';
    set_format(q, REDQ_FORMAT_FRAMES);
    cr_assert_eq(format_of(q), REDQ_FORMAT_FRAMES);
    p = producer(4, &ir, 0);
    p->raw = true; /* fx_payload cuts long queue names */
    for (i = 0; i < 4; i++) {
        char body[32];
        int n = snprintf(body, sizeof body, "x|%zu|", i);
        cr_assert(redq_produce(p->p, q, body, (size_t)n,
                               (void *)(uintptr_t)(i + 1)) == 0);
    }
    cr_assert(fx_wait_reports(p, 4, 5000));
    cstart(c, q, REDQ_AT_LEAST_ONCE, 0);
    cr_assert(fx_run_until(cond_unique, &g, 5000), "%zu", c->unique);
    for (i = 0; i < 4; i++)
        cr_assert_str_eq(c->by_seq[i], ir.id[i], "seq %zu", i);
    cclose(c);
    cfree(c);
}

static void pool_ids(int guarantee)
{
    const size_t n = 3000;
    static idrec ir; /* outlives the test: teardown may report */
    fx_tracker *p;
    ctrack *c = ctrack_new(n);
    gotn g = {c, n};
    size_t i;

    set_format("pl", REDQ_FORMAT_FRAMES);
    p = producer(n, &ir, 64);
    cstart(c, "pl", guarantee, 4);
    fx_produce_range(p, "pl", 0, n, 0);
    cr_assert(fx_wait_reports(p, n, 20000));
    fx_assert_reported(p, 0, n, 0);
    cr_assert(fx_run_until(cond_unique, &g, 20000), "%zu unique", c->unique);
    cr_assert_eq(c->headers, 0);
    for (i = 0; i < n; i++) {
        cr_assert_eq(c->seen[i], 1, "seq %zu seen %u times", i, c->seen[i]);
        cr_assert_str_eq(c->by_seq[i], ir.id[i], "seq %zu: %s vs %s", i,
                         c->by_seq[i], ir.id[i]);
    }
    cclose(c);
    cfree(c);
}

Test(ids, pool_of_four_sees_the_producer_ids_alo)
{
    pool_ids(REDQ_AT_LEAST_ONCE);
}

Test(ids, pool_of_four_sees_the_producer_ids_amo)
{
    pool_ids(REDQ_AT_MOST_ONCE);
}

