/*
 * The consumer against a real redis-server: order, exactly-once delivery
 * through a pool, the window, priority, batch pops, stop, interop with plain
 * clients, server restarts, wrong-type queues and argument checks.
 *
 * Callbacks only record; assertions run after the loop has returned.
 */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

static void teardown(void);
TestSuite(consumer, .init = fx_setup, .fini = teardown, .timeout = 90);

/* ---- a consumer tracker ------------------------------------------------ */

typedef struct ctrack {
    redq_consumer *c;
    size_t cap;            /* sequence numbers 0..cap-1 per queue index */
    const char *const *queues;
    size_t nq;
    unsigned *seen;        /* [q * cap + seq] deliveries */
    size_t *next;          /* per queue: next expected seq (order check) */
    size_t got, out_of_order, malformed;
    size_t unacked, max_unacked_seen;
    char first_queue[64];  /* queue of the first delivery */
    size_t order_len;      /* per-delivery queue index log, for priority */
    unsigned char *order;
    /* asynchronous acks: messages held and acked from a timer */
    int ack_later;
    redq_message **held;
    size_t nheld, held_cap;
    struct event *ack_timer;
    /* stop */
    int stopped, stop_status;
    size_t got_at_stop;
    int closed;
    unsigned log_by_code[FX_MAX_CODE];
    size_t stop_after; /* call stop after this many deliveries (0: never) */
} ctrack;

static ctrack *g_ct; /* for teardown */

static int queue_index(ctrack *t, const char *q)
{
    for (size_t i = 0; i < t->nq; i++)
        if (strcmp(t->queues[i], q) == 0)
            return (int)i;
    return -1;
}

static void on_stopped(redq_consumer *c, int status, void *user)
{
    ctrack *t = user;
    (void)c;
    t->stopped++;
    t->stop_status = status;
    t->got_at_stop = t->got;
}

static void on_msg(redq_consumer *c, redq_message *m, void *user)
{
    ctrack *t = user;
    const char *data = redq_msg_data(m);
    const char *q = redq_msg_queue(m);
    int qi = queue_index(t, q);
    char *end;
    unsigned long seq;
    (void)c;

    t->got++;
    t->unacked++;
    if (t->unacked > t->max_unacked_seen)
        t->max_unacked_seen = t->unacked;
    if (t->got == 1)
        snprintf(t->first_queue, sizeof t->first_queue, "%s", q);
    /* payload "QUEUE|SEQ|..." (fixture format) or plain "SEQ" */
    {
        const char *bar = strchr(data, '|');
        seq = strtoul(bar ? bar + 1 : data, &end, 10);
    }
    if (qi < 0 || end == data || seq >= t->cap ||
        data[redq_msg_len(m)] != '\0') {
        t->malformed++;
    } else {
        t->seen[(size_t)qi * t->cap + seq]++;
        if (seq != t->next[qi])
            t->out_of_order++;
        t->next[qi] = seq + 1;
        if (t->order_len < t->cap * t->nq)
            t->order[t->order_len++] = (unsigned char)qi;
    }
    if (t->ack_later) {
        if (t->nheld < t->held_cap)
            t->held[t->nheld++] = m;
        else
            t->malformed++; /* window exceeded what the test allows */
    } else {
        t->unacked--;
        redq_ack(m);
    }
    if (t->stop_after && t->got == t->stop_after)
        redq_consumer_stop(c, -1, on_stopped, t);
}

/* Ack everything held, from a later loop iteration (asynchronous work). */
static void ack_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    ctrack *t = arg;
    (void)fd;
    (void)what;
    for (size_t i = 0; i < t->nheld; i++) {
        t->unacked--;
        redq_ack(t->held[i]);
    }
    t->nheld = 0;
}

static void on_clog(int level, int code, const char *msg, void *user)
{
    ctrack *t = user;
    (void)level;
    (void)msg;
    if (code <= 0 && -code < FX_MAX_CODE)
        t->log_by_code[-code]++;
}

static ctrack *ctrack_new(const char *const *queues, size_t nq, size_t cap)
{
    ctrack *t = calloc(1, sizeof *t);
    cr_assert_not_null(t);
    t->queues = queues;
    t->nq = nq;
    t->cap = cap;
    t->seen = calloc(nq * cap, sizeof *t->seen);
    t->next = calloc(nq, sizeof *t->next);
    t->order = calloc(nq * cap, 1);
    cr_assert(t->seen && t->next && t->order);
    g_ct = t;
    return t;
}

static void ctrack_free(ctrack *t)
{
    if (t->ack_timer)
        event_free(t->ack_timer);
    free(t->held);
    free(t->seen);
    free(t->next);
    free(t->order);
    free(t);
}

static void on_cclosed(void *user)
{
    ((ctrack *)user)->closed++;
}

static bool cond_closed(void *arg)
{
    return ((ctrack *)arg)->closed > 0;
}

static void teardown(void)
{
    ctrack *t = g_ct;
    g_ct = NULL;
    if (t != NULL) {
        if (t->c != NULL && !t->closed) {
            if (t->ack_later)
                ack_timer_cb(-1, 0, t);
            redq_consumer_close(t->c, on_cclosed, t);
            fx_run_until(cond_closed, t, 5000);
        }
        ctrack_free(t);
    }
    fx_teardown();
}

static void consumer_opts(redq_consumer_options *o, ctrack *t)
{
    redq_consumer_options_init(o);
    o->url = fx_url();
    o->guarantee = REDQ_AT_MOST_ONCE; /* this suite tests the fast mode */
    o->on_message = on_msg;
    o->log = on_clog;
    o->log_user = t;
    o->on_message_user = t;
}

static void start_consumer(ctrack *t, redq_consumer_options *o)
{
    int rc = redq_consumer_new(&t->c, fx_base(), o, t->queues, t->nq);
    cr_assert(rc == 0, "redq_consumer_new: %s", redq_err_name(rc));
}

static bool cond_got(void *arg)
{
    ctrack *t = arg;
    return t->got >= t->got_at_stop; /* got_at_stop doubles as target */
}

static bool wait_got(ctrack *t, size_t n, int ms)
{
    size_t saved = t->got_at_stop;
    bool ok;
    t->got_at_stop = n;
    ok = fx_run_until(cond_got, t, ms);
    t->got_at_stop = saved;
    return ok;
}

static bool cond_stopped(void *arg)
{
    return ((ctrack *)arg)->stopped > 0;
}

static void close_consumer(ctrack *t)
{
    cr_assert_eq(redq_consumer_close(t->c, on_cclosed, t), 0);
    cr_assert(fx_run_until(cond_closed, t, 5000), "close callback missing");
    cr_assert_eq(t->closed, 1);
    t->c = NULL;
}

/* Fill `queue` with seq from..to-1 through a redq producer (in order). */
static void fill(const char *queue, size_t from, size_t to)
{
    fx_tracker *p = fx_tracker_new(to);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.max_pending_msgs = 1000000;
    cr_assert_eq(fx_producer_new(p, &o), 0);
    fx_produce_range(p, queue, from, to, 0);
    cr_assert(fx_wait_reports(p, to - from, 60000), "fill: reports missing");
    fx_assert_reported(p, from, to, 0);
    cr_assert_eq(fx_close(p), 0);
    cr_assert(fx_wait_closed(p, 5000));
}

static void assert_exactly_once(ctrack *t, size_t qi, size_t n)
{
    for (size_t s = 0; s < n; s++)
        cr_assert_eq(t->seen[qi * t->cap + s], 1,
                     "queue %s seq %zu delivered %u times", t->queues[qi], s,
                     t->seen[qi * t->cap + s]);
}

/* ---- tests --------------------------------------------------------------- */

Test(consumer, fifo_hundred_thousand_in_order_once)
{
    static const char *const qs[] = {"q"};
    const size_t n = 100000;
    ctrack *t = ctrack_new(qs, 1, n);
    redq_consumer_options o;

    fill("q", 0, n);
    consumer_opts(&o, t);
    o.pool_size = 1; /* the ordering guarantee is per connection */
    start_consumer(t, &o);
    cr_assert(wait_got(t, n, 30000), "got %zu of %zu", t->got, n);
    fx_run_for(50); /* nothing more may arrive */
    cr_assert_eq(t->got, n);
    cr_assert_eq(t->malformed, 0);
    cr_assert_eq(t->out_of_order, 0, "%zu deliveries out of order",
                 t->out_of_order);
    assert_exactly_once(t, 0, n);
    cr_assert_eq(fx_llen("q"), 0);
    close_consumer(t);
}

/* Each pop mode must give the same order: forced, since the server is 7.0. */
static void mode_fifo(int mode)
{
    static const char *const qs[] = {"q"};
    const size_t n = 20000;
    ctrack *t = ctrack_new(qs, 1, n);
    redq_consumer_options o;
    long long pops;
    const char *cmd = mode == REDQ_POP_BLMPOP ? "blmpop" : "brpop";

    fill("q", 0, n);
    consumer_opts(&o, t);
    o.pop_mode = mode;
    o.pool_size = 1;
    o.pop_batch = 100;
    start_consumer(t, &o);
    cr_assert(wait_got(t, n, 30000), "got %zu of %zu", t->got, n);
    cr_assert_eq(t->out_of_order, 0);
    cr_assert_eq(t->malformed, 0);
    assert_exactly_once(t, 0, n);
    pops = fx_commandstat_calls(cmd);
    /* Batch pops are real: a blocking pop takes (or is followed by) up to
     * 100 at a time under backlog. */
    cr_assert(pops > 0 && pops <= (long long)n / 50, "%s calls: %lld", cmd,
              pops);
    if (mode == REDQ_POP_RPOP_COUNT || mode == REDQ_POP_PIPELINED)
        cr_assert_gt(fx_commandstat_calls("rpop"), 0);
    close_consumer(t);
}

Test(consumer, mode_blmpop_fifo_and_batched)
{
    mode_fifo(REDQ_POP_BLMPOP);
}

Test(consumer, mode_rpop_count_fifo_and_batched)
{
    mode_fifo(REDQ_POP_RPOP_COUNT);
}

Test(consumer, mode_pipelined_fifo_and_batched)
{
    mode_fifo(REDQ_POP_PIPELINED);
}

Test(consumer, pool_of_8_on_3_queues_exactly_once_within_window, .timeout = 120)
{
    static const char *const qs[] = {"a", "b", "c"};
    const size_t per = 200000 / 3 + 1;
    const size_t window = 500;
    ctrack *t = ctrack_new(qs, 3, per);
    redq_consumer_options o;
    struct timeval tv = {0, 1000};

    for (size_t i = 0; i < 3; i++)
        fill(qs[i], 0, per);
    consumer_opts(&o, t);
    o.pool_size = 8;
    o.pop_batch = 64;
    o.max_unacked = window;
    /* Hold every message and ack from a timer: asynchronous work, and the
     * window is what stops the pool from popping more. */
    t->ack_later = 1;
    t->held_cap = window * 4; /* room to notice an overrun, not to hide it */
    t->held = calloc(t->held_cap, sizeof *t->held);
    t->ack_timer = event_new(fx_base(), -1, EV_PERSIST, ack_timer_cb, t);
    event_add(t->ack_timer, &tv);
    start_consumer(t, &o);
    cr_assert(wait_got(t, 3 * per, 90000), "got %zu of %zu", t->got, 3 * per);
    event_del(t->ack_timer);
    ack_timer_cb(-1, 0, t);
    cr_assert_eq(t->malformed, 0);
    cr_assert(t->max_unacked_seen <= window,
              "window %zu exceeded: %zu unacked at once", window,
              t->max_unacked_seen);
    cr_assert(t->max_unacked_seen > window / 2,
              "the window was never used: max %zu", t->max_unacked_seen);
    for (size_t i = 0; i < 3; i++)
        assert_exactly_once(t, i, per);
    {
        redq_consumer_stats st;
        redq_consumer_get_stats(t->c, &st);
        cr_assert_eq(st.delivered, 3 * per);
        cr_assert_eq(st.acked, 3 * per);
        cr_assert_eq(st.unacked, 0);
        cr_assert_eq(st.connected, 8);
    }
    close_consumer(t);
}

Test(consumer, earlier_queues_take_priority)
{
    static const char *const qs[] = {"high", "low"};
    const size_t n = 3000;
    ctrack *t = ctrack_new(qs, 2, n);
    redq_consumer_options o;
    size_t last_high = 0, first_low = SIZE_MAX;

    fill("low", 0, n);
    fill("high", 0, n);
    consumer_opts(&o, t);
    o.pool_size = 1;
    o.pop_batch = 50;
    start_consumer(t, &o);
    cr_assert(wait_got(t, 2 * n, 30000), "got %zu", t->got);
    for (size_t i = 0; i < t->order_len; i++) {
        if (t->order[i] == 0)
            last_high = i;
        else if (first_low == SIZE_MAX)
            first_low = i;
    }
    cr_assert_str_eq(t->first_queue, "high");
    cr_assert(last_high < first_low,
              "low (first at %zu) served before high drained (last at %zu)",
              first_low, last_high);
    assert_exactly_once(t, 0, n);
    assert_exactly_once(t, 1, n);
    close_consumer(t);
}

Test(consumer, stop_mid_stream_loses_nothing)
{
    static const char *const qs[] = {"q"};
    const size_t n = 50000;
    ctrack *t = ctrack_new(qs, 1, n);
    redq_consumer_options o;
    long long left;

    fill("q", 0, n);
    consumer_opts(&o, t);
    o.pool_size = 4;
    o.pop_batch = 100;
    t->stop_after = 10000;
    start_consumer(t, &o);
    cr_assert(fx_run_until(cond_stopped, t, 20000), "stop did not complete");
    cr_assert_eq(t->stop_status, 0);
    fx_run_for(100); /* no delivery may follow a completed stop */
    left = fx_llen("q");
    cr_assert_eq((long long)t->got + left, (long long)n,
                 "consumed %zu + left %lld != produced %zu", t->got, left, n);
    cr_assert_eq(t->got, t->got_at_stop, "delivered after the stop callback");
    assert_exactly_once(t, 0, t->got);
    /* Every pop takes from the tail, so what was consumed is a prefix and
     * what is left is the rest, in order (delivery order across the four
     * connections may interleave; each batch is in order). */
    fx_assert_list_range("q", t->got, n);
    close_consumer(t);
}

Test(consumer, stop_unblocks_parked_pops_at_once)
{
    static const char *const qs[] = {"empty"};
    ctrack *t = ctrack_new(qs, 1, 10);
    redq_consumer_options o;
    uint64_t t0;
    redq_consumer_stats st;

    consumer_opts(&o, t);
    o.pool_size = 3;
    o.pop_timeout_ms = 30000; /* a stop must not wait for this */
    start_consumer(t, &o);
    /* Wait until all three are parked in BLMPOP on the server. */
    for (int i = 0; i < 200; i++) {
        fx_run_for(10);
        if (fx_commandstat_calls("blmpop") >= 3)
            break;
    }
    redq_consumer_get_stats(t->c, &st);
    cr_assert_eq(st.connected, 3);
    t0 = fx_now_us();
    cr_assert_eq(redq_consumer_stop(t->c, -1, on_stopped, t), 0);
    cr_assert_eq(redq_consumer_stop(t->c, -1, on_stopped, t), REDQ_ECLOSED);
    cr_assert(fx_run_until(cond_stopped, t, 5000), "stop did not complete");
    cr_assert_lt(fx_now_us() - t0, 2000000u, "stop took %llu ms",
                 (unsigned long long)(fx_now_us() - t0) / 1000);
    cr_assert_eq(t->stop_status, 0);
    cr_assert_eq(t->stopped, 1);
    close_consumer(t);
}

Test(consumer, stop_waits_for_async_acks)
{
    static const char *const qs[] = {"q"};
    const size_t n = 300;
    ctrack *t = ctrack_new(qs, 1, n);
    redq_consumer_options o;

    fill("q", 0, n);
    consumer_opts(&o, t);
    o.max_unacked = 100;
    t->ack_later = 1;
    t->held_cap = 400;
    t->held = calloc(t->held_cap, sizeof *t->held);
    start_consumer(t, &o);
    cr_assert(wait_got(t, 100, 10000));
    fx_run_for(50);
    cr_assert_eq(t->got, 100, "window of 100 overrun: %zu", t->got);
    cr_assert_eq(redq_consumer_stop(t->c, -1, on_stopped, t), 0);
    fx_run_for(100);
    cr_assert_eq(t->stopped, 0, "stop completed with 100 unacked");
    ack_timer_cb(-1, 0, t);
    cr_assert(fx_run_until(cond_stopped, t, 5000));
    cr_assert_eq(t->stop_status, 0);
    cr_assert_eq(fx_llen("q") + (long long)t->got, (long long)n);
    close_consumer(t);
}

Test(consumer, stop_timeout_reports_unacked)
{
    static const char *const qs[] = {"q"};
    ctrack *t = ctrack_new(qs, 1, 10);
    redq_consumer_options o;

    fill("q", 0, 5);
    consumer_opts(&o, t);
    o.stop_timeout_ms = 200;
    t->ack_later = 1;
    t->held_cap = 10;
    t->held = calloc(t->held_cap, sizeof *t->held);
    start_consumer(t, &o);
    cr_assert(wait_got(t, 5, 10000));
    cr_assert_eq(redq_consumer_stop(t->c, -1, on_stopped, t), 0);
    cr_assert(fx_run_until(cond_stopped, t, 5000));
    cr_assert_eq(t->stop_status, REDQ_ETIMEDOUT);
    ack_timer_cb(-1, 0, t); /* acks after the stop are still fine */
    close_consumer(t);
}

static void redis_cli(const char *args)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "redis-cli -p %d %s >/dev/null", fx_port(),
             args);
    cr_assert_eq(system(cmd), 0, "%s", cmd);
}

Test(consumer, interop_plain_lpush_in_redq_pop_out)
{
    static const char *const qs[] = {"plain"};
    ctrack *t = ctrack_new(qs, 1, 100);
    redq_consumer_options o;

    /* One LPUSH with many values, then singles, as plain clients do. */
    redis_cli("LPUSH plain 0 1 2 3 4 5 6 7 8 9");
    for (int i = 10; i < 100; i++) {
        char a[64];
        snprintf(a, sizeof a, "LPUSH plain %d", i);
        redis_cli(a);
    }
    consumer_opts(&o, t);
    start_consumer(t, &o);
    cr_assert(wait_got(t, 100, 10000), "got %zu", t->got);
    cr_assert_eq(t->out_of_order, 0);
    cr_assert_eq(t->malformed, 0);
    assert_exactly_once(t, 0, 100);
    close_consumer(t);
}

Test(consumer, interop_redq_in_plain_brpop_out)
{
    char cmd[256], line[256];
    FILE *f;
    size_t i = 0;

    fill("out", 0, 50);
    for (i = 0; i < 50; i++) {
        char want[64];
        snprintf(cmd, sizeof cmd, "redis-cli -p %d --raw BRPOP out 1",
                 fx_port());
        f = popen(cmd, "r");
        cr_assert_not_null(f);
        cr_assert_not_null(fgets(line, sizeof line, f)); /* key */
        cr_assert_not_null(fgets(line, sizeof line, f)); /* value */
        pclose(f);
        snprintf(want, sizeof want, "out|%zu|", i);
        cr_assert_eq(strncmp(line, want, strlen(want)), 0,
                     "BRPOP #%zu gave %s", i, line);
    }
    cr_assert_eq(fx_llen("out"), 0);
}

Test(consumer, carries_on_across_a_server_restart)
{
    static const char *const qs[] = {"q"};
    static const char *const aof[] = {"--appendonly", "yes", "--appendfsync",
                                      "always", NULL};
    const size_t n = 4000;
    ctrack *t = ctrack_new(qs, 1, n);
    redq_consumer_options o;
    redq_consumer_stats st;

    fx_server_stop();
    fx_server_start(aof);
    fill("q", 0, n);
    consumer_opts(&o, t);
    o.max_unacked = 500;
    o.reconnect_max_ms = 200;
    o.pool_size = 1;
    t->ack_later = 1;
    t->held_cap = 1000;
    t->held = calloc(t->held_cap, sizeof *t->held);
    start_consumer(t, &o);
    cr_assert(wait_got(t, 500, 10000));
    /* Restart with 500 delivered and held: the rest is in the AOF. */
    fx_server_restart();
    cr_assert_eq(fx_llen("q"), (long long)(n - 500),
                 "persistence did not keep the queue");
    {
        struct timeval tv = {0, 2000};
        t->ack_timer = event_new(fx_base(), -1, EV_PERSIST, ack_timer_cb, t);
        event_add(t->ack_timer, &tv);
    }
    cr_assert(wait_got(t, n, 20000), "got %zu of %zu after restart", t->got,
              n);
    event_del(t->ack_timer);
    ack_timer_cb(-1, 0, t);
    redq_consumer_get_stats(t->c, &st);
    cr_assert_geq(st.disconnects, 1);
    cr_assert_geq(st.connects, 2); /* the first and the one after the restart */
    cr_assert_eq(t->out_of_order, 0);
    assert_exactly_once(t, 0, n);
    close_consumer(t);
}

Test(consumer, wrong_type_queue_is_skipped_others_served)
{
    static const char *const qs[] = {"bad", "good"};
    ctrack *t = ctrack_new(qs, 2, 1000);
    redq_consumer_options o;

    fx_cmd_ok("SET bad notalist");
    fill("good", 0, 1000);
    consumer_opts(&o, t);
    start_consumer(t, &o);
    cr_assert(wait_got(t, 1000, 10000), "got %zu", t->got);
    cr_assert_geq(t->log_by_code[-REDQ_EWRONGTYPE], 1,
                  "no REDQ_EWRONGTYPE reached the log callback");
    assert_exactly_once(t, 1, 1000);
    /* Fixed by the operator: served again after the recheck. */
    fx_cmd_ok("DEL bad");
    redis_cli("LPUSH bad 7");
    cr_assert(wait_got(t, 1001, 10000), "bad queue not served after fix");
    cr_assert_eq(t->seen[0 * t->cap + 7], 1);
    close_consumer(t);
}

Test(consumer, idle_pool_sends_one_pop_per_timeout)
{
    static const char *const qs[] = {"idle"};
    ctrack *t = ctrack_new(qs, 1, 10);
    redq_consumer_options o;
    long long before, after;

    consumer_opts(&o, t);
    o.pool_size = 2;
    o.pop_timeout_ms = 200;
    start_consumer(t, &o);
    fx_run_for(300);
    before = fx_commandstat_calls("blmpop");
    fx_run_for(1000);
    after = fx_commandstat_calls("blmpop");
    /* 2 connections x (1000 / 200) = 10, plus one in flight each. */
    cr_assert(after - before <= 12, "%lld pops in 1 s", after - before);
    cr_assert(after - before >= 6, "the pool is not popping: %lld",
              after - before);
    close_consumer(t);
}

static void nop_msg(redq_consumer *c, redq_message *m, void *u)
{
    (void)c;
    (void)u;
    redq_ack(m);
}

Test(consumer, bad_arguments_get_einval)
{
    static const char *const qs[] = {"q"};
    static const char *const empty[] = {""};
    static const char *const null_name[] = {NULL};
    redq_consumer *c = (redq_consumer *)0x1;
    redq_consumer_options o;

    redq_consumer_options_init(&o);
    o.url = fx_url();
    o.on_message = nop_msg;
    cr_assert_eq(redq_consumer_new(NULL, fx_base(), &o, qs, 1), REDQ_EINVAL);
    cr_assert_eq(redq_consumer_new(&c, NULL, &o, qs, 1), REDQ_EINVAL);
    cr_assert_eq(redq_consumer_new(&c, fx_base(), NULL, qs, 1), REDQ_EINVAL);
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &o, NULL, 1), REDQ_EINVAL);
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &o, qs, 0), REDQ_EINVAL);
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &o, empty, 1), REDQ_EINVAL);
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &o, null_name, 1),
                 REDQ_EINVAL);
    o.url = "http://nope";
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &o, qs, 1), REDQ_EINVAL);
    o.url = fx_url();
    o.on_message = NULL;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &o, qs, 1), REDQ_EINVAL);
    cr_assert_eq(c, (redq_consumer *)0x1, "out written on failure");
    cr_assert_eq(redq_ack(NULL), REDQ_EINVAL);
    cr_assert_eq(redq_consumer_stop(NULL, -1, on_stopped, NULL), REDQ_EINVAL);
    cr_assert_eq(redq_consumer_close(NULL, NULL, NULL), REDQ_EINVAL);
    cr_assert_null(redq_msg_data(NULL));
    cr_assert_eq(redq_msg_len(NULL), 0);
}

static void close_in_handler(redq_consumer *c, redq_message *m, void *u)
{
    ctrack *t = u;
    t->got++;
    redq_ack(m);
    if (t->got == 1)
        redq_consumer_close(c, on_cclosed, t);
}

Test(consumer, close_from_inside_a_handler)
{
    static const char *const qs[] = {"q"};
    ctrack *t = ctrack_new(qs, 1, 10);
    redq_consumer_options o;

    fill("q", 0, 10);
    consumer_opts(&o, t);
    o.on_message = close_in_handler;
    start_consumer(t, &o);
    cr_assert(fx_run_until(cond_closed, t, 5000), "close callback missing");
    fx_run_for(50);
    cr_assert_eq(t->closed, 1);
    cr_assert_eq(t->got, 1, "delivered after close: %zu", t->got);
    t->c = NULL;
}

/* At-most-once, a nack pushes the message back (through <q>:delayed, with
 * the retry backoff) and it comes again as attempt 2. */
static int nack_first_seen;
static int nack_attempts[4];

static void nack_once(redq_consumer *c, redq_message *m, void *u)
{
    ctrack *t = u;
    (void)c;
    if (t->got < 4)
        nack_attempts[t->got] = redq_msg_attempt(m);
    t->got++;
    if (!nack_first_seen++)
        redq_nack(m, "try again");
    else
        redq_ack(m);
}

Test(consumer, nack_in_fast_mode_redelivers)
{
    static const char *const qs[] = {"q"};
    ctrack *t = ctrack_new(qs, 1, 10);
    redq_consumer_options o;

    fill("q", 0, 1);
    consumer_opts(&o, t);
    o.on_message = nack_once;
    o.retry_base_ms = 50;
    o.promote_interval_ms = 20;
    start_consumer(t, &o);
    cr_assert(wait_got(t, 2, 5000), "redelivered %zu times", t->got);
    cr_assert_eq(nack_attempts[0], 1);
    cr_assert_eq(nack_attempts[1], 2);
    fx_run_for(100);
    cr_assert_eq(t->got, 2);
    cr_assert_eq(fx_llen("q"), 0);
    cr_assert_eq(fx_cmd_int("ZCARD q:delayed"), 0);
    close_consumer(t);
}

/* Acks one at a time, from outside the handler, with the window full: each
 * freed place must be refilled (no minimum batch of room when nothing else
 * is popping). */
Test(consumer, single_async_acks_keep_the_window_moving)
{
    static const char *const qs[] = {"q"};
    ctrack *t = ctrack_new(qs, 1, 40);
    redq_consumer_options o;

    fill("q", 0, 20);
    consumer_opts(&o, t);
    o.max_unacked = 8;
    o.pop_batch = 8;
    t->ack_later = 1;
    t->held_cap = 64;
    t->held = calloc(t->held_cap, sizeof *t->held);
    start_consumer(t, &o);
    cr_assert(wait_got(t, 8, 5000));
    for (size_t acked = 0; acked < 20; acked++) {
        /* the oldest held message */
        cr_assert_gt(t->nheld, 0, "nothing to ack after %zu acks", acked);
        t->unacked--;
        cr_assert_eq(redq_ack(t->held[0]), 0);
        memmove(t->held, t->held + 1, (t->nheld - 1) * sizeof *t->held);
        t->nheld--;
        if (acked + 8 < 20)
            cr_assert(wait_got(t, acked + 9, 2000),
                      "stalled: %zu delivered after %zu acks, window 8",
                      t->got, acked + 1);
    }
    cr_assert_eq(t->got, 20);
    cr_assert_leq(t->max_unacked_seen, 8);
    close_consumer(t);
}
