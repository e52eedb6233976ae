/*
 * At-least-once delivery against a real redis-server and real processes:
 * crash recovery, nack/backoff/dead letters, visibility timeouts, delayed
 * messages, malformed envelopes, script reloads, ack batching.
 *
 * Callbacks only record; assertions run after the loop has returned.
 */
#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include "fixture.h"

TestSuite(reliable, .init = fx_setup, .fini = fx_teardown, .timeout = 90);

#define MAXREC 4096

typedef struct rtrack {
    redq_consumer *c;
    size_t cap;
    unsigned *seen;       /* deliveries per seq */
    size_t got;           /* deliveries */
    size_t unique;
    int ack;              /* 1: ack at once; 0: hold; -1: nack */
    const char *nack_reason;
    /* per delivery, for timing checks (first MAXREC) */
    uint64_t at_us[MAXREC];
    int attempt[MAXREC];
    size_t seq_of[MAXREC];
    char last_id[80];
    char last_body[256];
    int stopped, closed;
    redq_message *kept[64]; /* ack == 0: held, finished after the close */
    size_t nkept;
    unsigned log_by_code[FX_MAX_CODE];
    char log_first[FX_MAX_CODE][256];
} rtrack;

static size_t seq_of(const redq_message *m)
{
    const char *d = redq_msg_data(m);
    const char *bar = strchr(d, '|');
    return (size_t)strtoul(bar ? bar + 1 : d, NULL, 10);
}

static void on_rmsg(redq_consumer *c, redq_message *m, void *user)
{
    rtrack *t = user;
    size_t s = seq_of(m);
    (void)c;
    if (t->got < MAXREC) {
        t->at_us[t->got] = fx_now_us();
        t->attempt[t->got] = redq_msg_attempt(m);
        t->seq_of[t->got] = s;
    }
    t->got++;
    if (s < t->cap && t->seen[s]++ == 0)
        t->unique++;
    snprintf(t->last_id, sizeof t->last_id, "%s", redq_msg_id(m));
    snprintf(t->last_body, sizeof t->last_body, "%.*s",
             (int)redq_msg_len(m), (const char *)redq_msg_data(m));
    if (t->ack > 0)
        redq_ack(m);
    else if (t->ack < 0)
        redq_nack(m, t->nack_reason);
    else if (t->nkept < 64)
        t->kept[t->nkept++] = m; /* held; finish() releases it */
}

static void on_rlog(int level, int code, const char *msg, void *user)
{
    rtrack *t = user;
    (void)level;
    if (code <= 0 && -code < FX_MAX_CODE) {
        if (t->log_by_code[-code]++ == 0)
            snprintf(t->log_first[-code], sizeof t->log_first[0], "%s", msg);
    }
}

static rtrack *rtrack_new(size_t cap)
{
    rtrack *t = calloc(1, sizeof *t);
    cr_assert_not_null(t);
    t->cap = cap;
    t->seen = calloc(cap ? cap : 1, sizeof *t->seen);
    t->ack = 1;
    return t;
}

static void rel_opts(redq_consumer_options *o, rtrack *t)
{
    redq_consumer_options_init(o);
    o->url = fx_url();
    o->guarantee = REDQ_AT_LEAST_ONCE;
    o->on_message = on_rmsg;
    o->log = on_rlog;
    o->log_user = t;
    o->on_message_user = t;
    o->consumer_ttl_ms = 300;
    o->promote_interval_ms = 20;
    o->reconnect_max_ms = 100;
}

static void start(rtrack *t, redq_consumer_options *o, const char *q)
{
    const char *qs[1] = {q};
    int rc = redq_consumer_new(&t->c, fx_base(), o, qs, 1);
    cr_assert(rc == 0, "redq_consumer_new: %s", redq_err_name(rc));
}

static void on_closed(void *u)
{
    ((rtrack *)u)->closed++;
}

static bool cond_closed(void *a)
{
    return ((rtrack *)a)->closed > 0;
}

static void finish(rtrack *t)
{
    cr_assert_eq(redq_consumer_close(t->c, on_closed, t), 0);
    cr_assert(fx_run_until(cond_closed, t, 5000));
    /* Held messages outlive the close until finished (redq.h,
     * "Lifetimes"): finishing them only frees them. */
    for (size_t i = 0; i < t->nkept; i++)
        cr_assert_eq(redq_ack(t->kept[i]), REDQ_ECLOSED);
    free(t->seen);
    free(t);
}

typedef struct { rtrack *t; size_t n; } want_t;

static bool cond_got(void *a)
{
    want_t *w = a;
    return w->t->got >= w->n;
}

static bool cond_unique(void *a)
{
    want_t *w = a;
    return w->t->unique >= w->n;
}

static bool wait_got(rtrack *t, size_t n, int ms)
{
    want_t w = {t, n};
    return fx_run_until(cond_got, &w, ms);
}

static bool wait_unique(rtrack *t, size_t n, int ms)
{
    want_t w = {t, n};
    return fx_run_until(cond_unique, &w, ms);
}

static void fill(const char *q, size_t n)
{
    fx_tracker *p = fx_tracker_new(n);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.max_pending_msgs = n + 1;
    cr_assert_eq(fx_producer_new(p, &o), 0);
    fx_produce_range(p, q, 0, n, 0);
    cr_assert(fx_wait_reports(p, n, 30000));
    fx_assert_reported(p, 0, n, 0);
}

static long long keys_matching(const char *pattern)
{
    redisReply *r = fx_cmd("KEYS %s", pattern);
    cr_assert_eq(r->type, REDIS_REPLY_ARRAY);
    return (long long)r->elements;
}

static long long list_total(const char *pattern)
{
    redisReply *r = fx_cmd("KEYS %s", pattern);
    long long total = 0;
    for (size_t i = 0; i < r->elements; i++)
        total += fx_llen(r->element[i]->str);
    return total;
}

static bool cond_proc_empty(void *a)
{
    return list_total((const char *)a) == 0;
}

/* Acks travel after the delivery: wait (bounded) for the last to land. */
static void assert_proc_drains(const char *pattern)
{
    cr_assert(fx_run_until(cond_proc_empty, (void *)pattern, 5000),
              "%lld messages still in %s", list_total(pattern), pattern);
}

/* ---- crash recovery ------------------------------------------------------ */

/*
 * The child: a consumer that takes messages and never acks, writing each
 * sequence number it got to `fd`, until it is killed.
 */
static void child_consumer(const char *url, int fd)
{
    struct event_base *base = event_base_new();
    rtrack *t = rtrack_new(100000);
    redq_consumer_options o;
    const char *qs[1] = {"jobs"};
    redq_consumer *c;
    size_t reported = 0;

    redq_consumer_options_init(&o);
    o.url = url;
    o.guarantee = REDQ_AT_LEAST_ONCE;
    o.on_message = on_rmsg;
    o.on_message_user = t;
    o.max_unacked = 40;
    o.consumer_ttl_ms = 300;
    t->ack = 0;
    if (redq_consumer_new(&c, base, &o, qs, 1) != 0)
        _exit(3);
    for (;;) {
        event_base_loop(base, EVLOOP_ONCE);
        for (; reported < t->got && reported < MAXREC; reported++) {
            unsigned v = (unsigned)t->seq_of[reported];
            if (write(fd, &v, sizeof v) != (ssize_t)sizeof v)
                _exit(4);
        }
    }
}

Test(reliable, sigkill_holding_unacked_is_recovered_by_another)
{
    const size_t n = 500;
    int fds[2];
    pid_t pid;
    unsigned got_child[64];
    size_t nchild = 0;
    rtrack *t = rtrack_new(n);
    redq_consumer_options o;
    redq_consumer_stats st;
    uint64_t deadline;

    fill("jobs", n);
    cr_assert_eq(pipe(fds), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        close(fds[0]);
        child_consumer(fx_url(), fds[1]);
        _exit(0);
    }
    close(fds[1]);
    /* Wait (bounded) until the child holds its full window of 40. */
    deadline = fx_now_us() + 10000000u;
    while (nchild < 40 && fx_now_us() < deadline) {
        ssize_t r = read(fds[0], &got_child[nchild], sizeof got_child[0]);
        if (r == (ssize_t)sizeof got_child[0])
            nchild++;
        else if (r <= 0 && errno != EINTR)
            break;
    }
    cr_assert_eq(nchild, 40, "the child received %zu messages", nchild);
    cr_assert_eq(kill(pid, SIGKILL), 0);
    cr_assert_eq(waitpid(pid, NULL, 0), pid);
    close(fds[0]);
    /* Its 40 sit in its processing list. */
    cr_assert_eq(list_total("{jobs}/proc:*"), 40);

    rel_opts(&o, t);
    start(t, &o, "jobs");
    cr_assert(wait_unique(t, n, 20000), "%zu of %zu unique after the crash",
              t->unique, n);
    fx_run_for(100);
    /* Every message exactly once here, and the child's 40 are exactly the
     * ones that were delivered twice overall (once there, once here),
     * each on its second attempt. */
    cr_assert_eq(t->got, n, "%zu deliveries for %zu messages", t->got, n);
    for (size_t i = 0; i < nchild; i++)
        cr_assert_eq(t->seen[got_child[i]], 1);
    for (size_t i = 0; i < t->got && i < MAXREC; i++) {
        int was_child = 0;
        for (size_t k = 0; k < nchild; k++)
            was_child |= got_child[k] == t->seq_of[i];
        cr_assert_eq(t->attempt[i], was_child ? 2 : 1,
                     "seq %zu: attempt %d", t->seq_of[i], t->attempt[i]);
    }
    redq_consumer_get_stats(t->c, &st);
    cr_assert_eq(st.recovered, 40);
    assert_proc_drains("{jobs}/proc:*");
    cr_assert_eq(fx_llen("jobs"), 0);
    finish(t);
}

/* ---- nack, backoff, dead letters ----------------------------------------- */

Test(reliable, nack_retries_with_backoff_then_dead_letters)
{
    rtrack *t = rtrack_new(10);
    redq_consumer_options o;
    redisReply *r;

    fill("q", 1);
    rel_opts(&o, t);
    o.max_attempts = 3;
    o.retry_base_ms = 200;
    o.retry_max_ms = 1000;
    t->ack = -1;
    t->nack_reason = "boom: cannot parse order";
    start(t, &o, "q");
    cr_assert(wait_got(t, 3, 10000), "%zu deliveries", t->got);
    fx_run_for(600); /* a fourth delivery would come within this */
    cr_assert_eq(t->got, 3, "delivered %zu times, max_attempts 3", t->got);
    for (int i = 0; i < 3; i++)
        cr_assert_eq(t->attempt[i], i + 1);
    /* Backoff: 200 ms then 400 ms, each +-20%, never early. */
    cr_assert_geq(t->at_us[1] - t->at_us[0], 160000u - fx_clock_slack_us(),
                  "first retry after %llu us",
                  (unsigned long long)(t->at_us[1] - t->at_us[0]));
    cr_assert_leq(t->at_us[1] - t->at_us[0], 160000u + 1000000u);
    cr_assert_geq(t->at_us[2] - t->at_us[1], 320000u - fx_clock_slack_us(),
                  "second retry after %llu us",
                  (unsigned long long)(t->at_us[2] - t->at_us[1]));
    /* Dead-lettered with the reason, the attempts and the time. */
    cr_assert_eq(fx_llen("{q}/dead"), 1);
    r = fx_cmd("LINDEX {q}/dead 0");
    cr_assert_eq(r->type, REDIS_REPLY_STRING);
    cr_assert(strstr(r->str, "boom:%20cannot%20parse%20order") != NULL, "%s",
              r->str);
    cr_assert(strncmp(r->str, "RQ1 ", 4) == 0, "%s", r->str);
    cr_assert(strstr(r->str, " a=3") != NULL, "%s", r->str);
    cr_assert(strstr(r->str, " dts=") != NULL, "%s", r->str);
    /* The payload follows the header line verbatim. */
    cr_assert_str_eq(strchr(r->str, '\n') + 1, "q|0|");
    cr_assert_eq(fx_llen("q"), 0);
    cr_assert_eq(list_total("{q}/proc:*"), 0);
    cr_assert_eq(fx_cmd_int("ZCARD {q}/delayed"), 0);
    {
        redq_consumer_stats st;
        redq_consumer_get_stats(t->c, &st);
        cr_assert_eq(st.retried, 2);
        cr_assert_eq(st.dead_lettered, 1);
    }
    finish(t);
}

/* ---- visibility timeout -------------------------------------------------- */

Test(reliable, handler_that_never_acks_is_retried_after_visibility)
{
    rtrack *t = rtrack_new(10);
    redq_consumer_options o;

    fill("q", 1);
    rel_opts(&o, t);
    o.visibility_timeout_ms = 300;
    o.retry_base_ms = 0;
    t->ack = 0; /* never ack */
    start(t, &o, "q");
    cr_assert(wait_got(t, 2, 10000), "redelivered %zu times", t->got);
    cr_assert_eq(t->attempt[0], 1);
    cr_assert_eq(t->attempt[1], 2);
    cr_assert_geq(t->at_us[1] - t->at_us[0], 300000u - fx_clock_slack_us(),
                  "retried after %llu us, before the visibility timeout",
                  (unsigned long long)(t->at_us[1] - t->at_us[0]));
    {
        redq_consumer_stats st;
        redq_consumer_get_stats(t->c, &st);
        cr_assert_geq(st.expired, 1);
    }
    finish(t);
}

/* ---- delayed messages ---------------------------------------------------- */

Test(reliable, delayed_never_early_and_within_the_lag)
{
    rtrack *t = rtrack_new(10);
    fx_tracker *p = fx_tracker_new(4);
    redq_consumer_options o;
    redq_producer_options po;
    uint64_t t0;
    char payload[32];

    redq_producer_options_init(&po);
    po.url = fx_url();
    cr_assert_eq(fx_producer_new(p, &po), 0);
    p->raw = true;
    rel_opts(&o, t);
    start(t, &o, "q");
    fx_run_for(100); /* consumer up and polling */

    snprintf(payload, sizeof payload, "q|%d|", 7);
    t0 = fx_now_us();
    cr_assert_eq(redq_produce_delayed(p->p, "q", payload, strlen(payload),
                                      500, NULL),
                 0);
    cr_assert(fx_wait_reports(p, 1, 5000));
    cr_assert_eq(p->ok, 1, "delayed produce failed: %s", p->last_errstr);
    cr_assert_eq(fx_cmd_int("ZCARD {q}/delayed"), 1);
    cr_assert(wait_got(t, 1, 5000), "the delayed message never came");
    cr_assert_geq(t->at_us[0] - t0, 500000u - fx_clock_slack_us(),
                  "delivered %llu us after produce: early",
                  (unsigned long long)(t->at_us[0] - t0));
    /* promote_interval 20 ms + round trips: well within 250 ms. */
    cr_assert_leq(t->at_us[0] - t0, 750000u, "delivered %llu us late",
                  (unsigned long long)(t->at_us[0] - t0));
    cr_assert_str_eq(t->last_body, "q|7|");
    cr_assert_neq(t->last_id[0], '\0', "a delayed message has an id");
    cr_assert_eq(redq_produce_delayed(p->p, "q", "x", 1, -1, NULL),
                 REDQ_EINVAL);
    finish(t);
}

/* ---- payloads are never parsed; frames only live in redq's own keys ----- */

Test(reliable, malformed_frame_in_due_is_dead_lettered_consumer_keeps_serving)
{
    rtrack *t = rtrack_new(10);
    redq_consumer_options o;
    redisReply *r;

    /* Only redq writes due lists; garbage put there by hand is kept whole
     * in the dead letters, and the rest is served. */
    fx_cmd_ok("LPUSH {q}/due %s", "RQ1 a=many\nbroken");
    fx_cmd_ok("LPUSH q %s", "q|1|");
    fx_cmd_ok("LPUSH {q}/due %s", "RQ1 a=1 id=z\nq|2|");
    rel_opts(&o, t);
    start(t, &o, "q");
    cr_assert(wait_got(t, 2, 5000));
    fx_run_for(100);
    cr_assert_eq(t->got, 2, "the malformed one was delivered");
    cr_assert_eq(t->seen[1], 1);
    cr_assert_eq(t->seen[2], 1);
    cr_assert_eq(fx_llen("{q}/dead"), 1);
    r = fx_cmd("LINDEX {q}/dead 0");
    cr_assert(strstr(r->str, "malformed") != NULL, "%s", r->str);
    cr_assert(strstr(r->str, "\nRQ1 a=many\nbroken") != NULL, "original lost: %s",
              r->str);
    assert_proc_drains("{q}/*proc:*");
    finish(t);
}

/* ---- scripts ------------------------------------------------------------- */

Test(reliable, script_flush_is_survived)
{
    const size_t n = 200;
    rtrack *t = rtrack_new(n);
    redq_consumer_options o;

    fill("q", 100);
    rel_opts(&o, t);
    start(t, &o, "q");
    cr_assert(wait_unique(t, 100, 10000));
    fx_cmd_ok("SCRIPT FLUSH");
    {
        fx_tracker *p = fx_tracker_new(n);
        redq_producer_options po;
        redq_producer_options_init(&po);
        po.url = fx_url();
        cr_assert_eq(fx_producer_new(p, &po), 0);
        fx_produce_range(p, "q", 100, n, 0);
        cr_assert(fx_wait_reports(p, n - 100, 10000));
    }
    cr_assert(wait_unique(t, n, 10000), "%zu of %zu after SCRIPT FLUSH",
              t->unique, n);
    /* The acks, too, went through NOSCRIPT, a reload and a resend. */
    assert_proc_drains("{q}/proc:*");
    finish(t);
}

/* ---- acks ---------------------------------------------------------------- */

Test(reliable, acks_are_batched_and_empty_the_processing_list)
{
    const size_t n = 20000;
    rtrack *t = rtrack_new(n);
    redq_consumer_options o;
    long long evals0, evals;

    fill("q", n);
    evals0 = fx_commandstat_calls("evalsha");
    rel_opts(&o, t);
    start(t, &o, "q");
    cr_assert(wait_unique(t, n, 30000), "%zu of %zu", t->unique, n);
    fx_run_for(200);
    cr_assert_eq(t->got, n);
    assert_proc_drains("{q}/proc:*");
    /* In delivery order, acks take the short form: LTRIM, no LREM. */
    cr_assert_gt(fx_commandstat_calls("ltrim"), 0);
    cr_assert_eq(fx_commandstat_calls("lrem"), 0);
    evals = fx_commandstat_calls("evalsha") - evals0;
    cr_assert_lt(evals, (long long)n / 20,
                 "%lld script calls for %zu messages: acks not batched", evals,
                 n);
    cr_assert_eq(list_total("{q}/proc:*"), 0);
    cr_assert_eq(keys_matching("{q}/consumers"), 1);
    finish(t);
}

/* Acks out of delivery order take the per-message path of the ACK script;
 * the processing list must still end empty, with nothing redelivered. */
static redq_message *held[64];
static size_t nheld;

static void hold_msg(redq_consumer *c, redq_message *m, void *user)
{
    rtrack *t = user;
    (void)c;
    t->got++;
    if (nheld < 64)
        held[nheld++] = m;
}

Test(reliable, acks_in_any_order_empty_the_processing_list)
{
    rtrack *t = rtrack_new(64);
    redq_consumer_options o;

    fill("q", 50);
    rel_opts(&o, t);
    o.on_message = hold_msg;
    start(t, &o, "q");
    cr_assert(wait_got(t, 50, 10000));
    cr_assert_eq(list_total("{q}/proc:*"), 50);
    /* Newest first, then the rest from the middle out. */
    for (size_t i = 50; i-- > 25;)
        cr_assert_eq(redq_ack(held[i]), 0);
    fx_run_for(50);
    cr_assert_eq(list_total("{q}/proc:*"), 25);
    for (size_t i = 0; i < 25; i += 2)
        cr_assert_eq(redq_ack(held[i]), 0);
    for (size_t i = 1; i < 25; i += 2)
        cr_assert_eq(redq_ack(held[i]), 0);
    assert_proc_drains("{q}/proc:*");
    fx_run_for(100);
    cr_assert_eq(t->got, 50, "redelivered after acks");
    finish(t);
}

/* The short ack form checks the processing list's ends; when the list is
 * not what the client thinks, it must fall back to acking one by one and
 * remove exactly the acked messages. */
Test(reliable, short_acks_fall_back_when_the_list_differs)
{
    rtrack *t = rtrack_new(64);
    redq_consumer_options o;
    redisReply *r;
    char proc[128];

    fill("q", 20);
    rel_opts(&o, t);
    o.on_message = hold_msg;
    nheld = 0;
    start(t, &o, "q");
    cr_assert(wait_got(t, 20, 10000));
    r = fx_cmd("KEYS {q}/proc:*");
    cr_assert_eq(r->elements, 1);
    snprintf(proc, sizeof proc, "%s", r->element[0]->str);
    /* Something the client does not know of, at the oldest end. */
    fx_cmd_ok("RPUSH %s intruder", proc);
    for (size_t i = 0; i < 20; i++)
        cr_assert_eq(redq_ack(held[i]), 0);
    {
        uint64_t until = fx_now_us() + 5000000u;
        while (fx_llen(proc) != 1 && fx_now_us() < until)
            fx_run_for(10);
    }
    cr_assert_eq(fx_llen(proc), 1, "%lld left in %s", fx_llen(proc), proc);
    r = fx_cmd("LINDEX %s 0", proc);
    cr_assert_str_eq(r->str, "intruder");
    cr_assert_gt(fx_commandstat_calls("lrem"), 0, "no fallback happened");
    fx_cmd_ok("DEL %s", proc);
    finish(t);
}

static void on_rstopped(redq_consumer *c, int status, void *user)
{
    (void)c;
    (void)status;
    ((rtrack *)user)->stopped++;
}

static bool cond_stopped(void *a)
{
    return ((rtrack *)a)->stopped > 0;
}

Test(reliable, clean_stop_deregisters)
{
    rtrack *t = rtrack_new(100);
    redq_consumer_options o;

    fill("q", 100);
    rel_opts(&o, t);
    start(t, &o, "q");
    cr_assert(wait_unique(t, 100, 10000));
    cr_assert_eq(fx_cmd_int("SCARD {q}/consumers"), 1);
    cr_assert_eq(redq_consumer_stop(t->c, -1, on_rstopped, t), 0);
    cr_assert(fx_run_until(cond_stopped, t, 5000));
    cr_assert_eq(fx_cmd_int("SCARD {q}/consumers"), 0);
    cr_assert_eq(keys_matching("{q}/hb:*"), 0);
    cr_assert_eq(list_total("{q}/proc:*"), 0);
    finish(t);
}
