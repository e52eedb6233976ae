/*
 * Sentinel and replica-acknowledged delivery against real parts: a master,
 * replicas and sentinels on loopback (fixture.c, fx_ha_*), all throwaway and
 * stopped by pid. Failovers are made fast by the sentinels' config
 * (down-after 1 s, failover-timeout 3 s).
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

static redq_consumer *g_cons;
static bool g_cons_closed;

static void cons_closed(void *user)
{
    (void)user;
    g_cons_closed = true;
}

static bool c_cons_closed(void *arg)
{
    (void)arg;
    return g_cons_closed;
}

static void ha_fini(void)
{
    if (g_cons != NULL) {
        redq_consumer_close(g_cons, cons_closed, NULL);
        fx_run_until(c_cons_closed, NULL, 5000);
        g_cons = NULL;
    }
    fx_teardown();
    fx_ha_stop();
}

static void ha_opts(redq_producer_options *o, const char *url)
{
    redq_producer_options_init(o);
    o->url = url;
    o->connect_timeout_ms = 500;
    o->command_timeout_ms = 2000;
    o->reconnect_min_ms = 20;
    o->reconnect_max_ms = 300;
    o->message_timeout_ms = 0; /* wait through the failover */
}

/* The same connection settings for a consumer. */
static void ha_copts(redq_consumer_options *o, const char *url)
{
    redq_consumer_options_init(o);
    o->url = url;
    o->connect_timeout_ms = 500;
    o->command_timeout_ms = 2000;
    o->reconnect_min_ms = 20;
    o->reconnect_max_ms = 300;
}

/* ---- specific errors, quickly ------------------------------------------ */

TestSuite(sentinel_errors, .init = fx_setup_noserver, .fini = ha_fini,
          .timeout = 60);

Test(sentinel_errors, unknown_master_name)
{
    char url[256];
    redq_producer_options o;
    fx_ha_start(0, 1, NULL);
    snprintf(url, sizeof url, "redis+sentinel://127.0.0.1:%d/nosuchmaster",
             fx_ha_sentinel_port(0));
    ha_opts(&o, url);
    fx_tracker *t = fx_tracker_new(4);
    cr_assert_eq(fx_producer_new(t, &o), 0);
    uint64_t t0 = fx_now_us();
    cr_assert(fx_wait_log_code(t, REDQ_ENOMASTER, 3000),
              "no REDQ_ENOMASTER logged");
    cr_assert_lt(fx_now_us() - t0, 1500000u);
    cr_assert(strstr(t->log_first[-REDQ_ENOMASTER], "nosuchmaster"), "%s",
              t->log_first[-REDQ_ENOMASTER]);
    redq_producer_stats st = fx_stats(t);
    cr_assert_eq(st.connected, 0);
}

Test(sentinel_errors, wrong_sentinel_password_and_right_one)
{
    char url[256];
    redq_producer_options o;
    fx_ha_start(0, 1, "s3ntinel-pw");
    snprintf(url, sizeof url,
             "redis+sentinel://127.0.0.1:%d/mymaster?sentinel_password=wr0ngpw",
             fx_ha_sentinel_port(0));
    ha_opts(&o, url);
    fx_tracker *t = fx_tracker_new(4);
    cr_assert_eq(fx_producer_new(t, &o), 0);
    cr_assert(fx_wait_log_code(t, REDQ_EAUTH, 3000), "no REDQ_EAUTH logged");
    cr_assert(strstr(t->log_first[-REDQ_EAUTH], "sentinel"), "%s",
              t->log_first[-REDQ_EAUTH]);
    cr_assert_null(strstr(t->log_first[-REDQ_EAUTH], "wr0ngpw"), "%s",
                   t->log_first[-REDQ_EAUTH]);
    cr_assert_eq(fx_stats(t).connected, 0);

    /* The right password: connected to the master, messages land. */
    fx_tracker *t2 = fx_tracker_new(4);
    ha_opts(&o, fx_ha_url());
    cr_assert_eq(fx_producer_new(t2, &o), 0);
    fx_produce_range(t2, "q", 0, 4, 16);
    cr_assert(fx_wait_reports(t2, 4, 5000));
    fx_assert_reported(t2, 0, 4, 0);
    redisContext *m = fx_ha_connect(fx_ha_node_port(0), NULL);
    redisReply *r = redisCommand(m, "LLEN q");
    cr_assert_eq(r->integer, 4);
    freeReplyObject(r);
    redisFree(m);
}

Test(sentinel_errors, no_sentinel_reachable)
{
    char url[256];
    redq_producer_options o;
    snprintf(url, sizeof url, "redis+sentinel://127.0.0.1:%d,127.0.0.1:%d/m",
             fx_free_port(), fx_free_port());
    ha_opts(&o, url);
    fx_tracker *t = fx_tracker_new(4);
    cr_assert_eq(fx_producer_new(t, &o), 0);
    cr_assert(fx_wait_log_code(t, REDQ_ECONNECT, 3000));
    cr_assert(strstr(t->log_first[-REDQ_ECONNECT], "no sentinel answered"),
              "%s", t->log_first[-REDQ_ECONNECT]);
}

/* ---- failovers under a stream ----------------------------------------- */

#define NMSG 200000
#define QUEUE "orders"

static unsigned seen[NMSG];
static size_t consumed;

static void on_msg(redq_consumer *c, redq_message *m, void *user)
{
    const char *d = redq_msg_data(m);
    (void)c;
    (void)user;
    /* "orders|SEQ|xxx" */
    const char *bar = strchr(d, '|');
    long seq = bar ? strtol(bar + 1, NULL, 10) : -1;
    if (seq >= 0 && seq < NMSG) {
        seen[seq]++;
        consumed++;
    }
    redq_ack(m);
}

typedef struct stream {
    fx_tracker *t;
    size_t next;
    struct event *ev;
} stream;

/* Produce in small slices from a timer, as an application would, so that
 * the failover happens with messages in every state. */
static void stream_cb(evutil_socket_t fd, short what, void *arg)
{
    stream *s = arg;
    struct timeval tv = {0, 1000};
    (void)fd;
    (void)what;
    for (int k = 0; k < 50 && s->next < NMSG; k++) {
        if (fx_produce(s->t, QUEUE, s->next, 32) != 0)
            break;
        s->next++;
    }
    if (s->next < NMSG)
        event_add(s->ev, &tv);
}

static bool c_produced(void *arg)
{
    stream *s = arg;
    return s->next >= NMSG / 3;
}

static bool c_all_reported(void *arg)
{
    stream *s = arg;
    return s->next >= NMSG && s->t->reports >= NMSG;
}

static bool c_ok_consumed(void *arg)
{
    fx_tracker *t = arg;
    for (size_t i = 0; i < NMSG; i++)
        if (t->status[i] == 0 && t->nrep[i] > 0 && seen[i] == 0)
            return false;
    return true;
}

static void start_consumer(void)
{
    redq_consumer_options o;
    const char *qs[] = {QUEUE};
    ha_copts(&o, fx_ha_url());
    o.on_message = on_msg;
    o.consumer_ttl_ms = 3000;
    o.visibility_timeout_ms = 5000;
    cr_assert_eq(redq_consumer_new(&g_cons, fx_base(), &o, qs, 1), 0);
}

/* Run a stream with replica acks through `fault`, then check: every
 * message reported ok was consumed; count duplicates and the time from the
 * fault to the first ok report after it. */
static void run_failover(void (*fault)(void), const char *what)
{
    redq_producer_options o;
    stream s = {0};
    memset(seen, 0, sizeof seen);
    consumed = 0;
    fx_ha_start(2, 3, NULL);
    int old = fx_ha_master();
    cr_assert_eq(old, 0);

    ha_opts(&o, fx_ha_url());
    o.min_replicas = 1;
    o.replica_timeout_ms = 500;
    s.t = fx_tracker_new(NMSG);
    cr_assert_eq(fx_producer_new(s.t, &o), 0);
    start_consumer();
    s.ev = evtimer_new(fx_base(), stream_cb, &s);
    stream_cb(-1, 0, &s);
    cr_assert(fx_run_until(c_produced, &s, 20000));

    uint64_t t_fault = fx_now_us();
    fault();
    cr_assert(fx_run_until(c_all_reported, &s, 40000),
              "%s: %zu of %d produced, %zu reported", what, s.next, NMSG,
              s.t->reports);
    int nm = fx_ha_master();
    cr_assert(nm > 0, "%s: no replica promoted (master %d)", what, nm);
    cr_assert(fx_run_until(c_ok_consumed, s.t, 20000),
              "%s: messages reported ok were never consumed", what);

    size_t ok = 0, notrep = 0, other = 0, dups = 0;
    uint64_t first_after = 0;
    for (size_t i = 0; i < NMSG; i++) {
        cr_assert_eq(s.t->nrep[i], 1, "seq %zu: %u reports", i, s.t->nrep[i]);
        if (s.t->status[i] == 0) {
            ok++;
            if (s.t->rep_us[i] > t_fault &&
                (first_after == 0 || s.t->rep_us[i] < first_after) &&
                s.t->prod_us[i] < t_fault)
                first_after = s.t->rep_us[i];
        } else if (s.t->status[i] == REDQ_ENOTREPLICATED) {
            notrep++;
        } else {
            other++;
        }
        if (seen[i] > 1)
            dups += seen[i] - 1;
    }
    cr_assert_eq(s.t->bad, 0, "%s", s.t->bad_msg);
    redq_producer_stats st = fx_stats(s.t);
    fprintf(stderr,
            "sentinel %s: %d msgs, ok %zu, not replicated %zu, failed %zu, "
            "consumed %zu, duplicates %zu, master %d -> %d, first ok after "
            "the fault %.0f ms, reconnects %llu\n",
            what, NMSG, ok, notrep, other, consumed, dups, old, nm,
            first_after ? (double)(first_after - t_fault) / 1000.0 : -1.0,
            (unsigned long long)st.connects);
    cr_assert_gt(st.connects, 1, "%s: the producer never moved", what);
    redq_consumer_stats cst;
    redq_consumer_get_stats(g_cons, &cst);
    cr_assert_gt(cst.disconnects, 0, "%s: the consumer never moved", what);
    /* Nothing stuck: the new master's ready list drains. */
    redisContext *m = fx_ha_connect(fx_ha_node_port(nm), NULL);
    redisReply *r = redisCommand(m, "LLEN " QUEUE);
    cr_assert_eq(r->integer, 0, "%s: %lld left in the queue", what,
                 r->integer);
    freeReplyObject(r);
    redisFree(m);
    cr_assert_eq(other, 0, "%s: %zu failed reports (%s)", what, other,
                 s.t->last_errstr);
    event_free(s.ev);
}

static void kill_master(void)
{
    fx_ha_kill_node(0);
}

static void planned_failover(void)
{
    redisContext *c = fx_ha_connect(fx_ha_sentinel_port(0), NULL);
    cr_assert(c);
    redisReply *r = redisCommand(c, "SENTINEL FAILOVER mymaster");
    cr_assert(r && r->type == REDIS_REPLY_STATUS, "SENTINEL FAILOVER: %s",
              r && r->str ? r->str : "?");
    freeReplyObject(r);
    redisFree(c);
}

TestSuite(sentinel_failover, .init = fx_setup_noserver, .fini = ha_fini,
          .timeout = 120);

Test(sentinel_failover, sigkill_master_under_stream)
{
    run_failover(kill_master, "SIGKILL master");
}

Test(sentinel_failover, planned_failover_with_consumers)
{
    run_failover(planned_failover, "SENTINEL FAILOVER");
}

/* ---- replica acks ------------------------------------------------------- */

TestSuite(sentinel_replicas, .init = fx_setup_noserver, .fini = ha_fini,
          .timeout = 60);

/* With more replicas asked for than exist: stored on the master, reported
 * REDQ_ENOTREPLICATED with persisted YES after about replica_timeout_ms. */
static int last_persisted = -1;
static void rep_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)t;
    (void)p;
    last_persisted = r->persisted;
}

Test(sentinel_replicas, too_few_replicas_is_not_replicated)
{
    redq_producer_options o;
    fx_ha_start(1, 1, NULL);
    ha_opts(&o, fx_ha_url());
    o.min_replicas = 2;
    o.replica_timeout_ms = 200;
    fx_tracker *t = fx_tracker_new(8);
    t->on_report = rep_hook;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    uint64_t t0 = fx_now_us();
    fx_produce_range(t, "q", 0, 8, 16);
    cr_assert(fx_wait_reports(t, 8, 5000));
    fx_assert_reported(t, 0, 8, REDQ_ENOTREPLICATED);
    cr_assert_eq(last_persisted, REDQ_PERSIST_YES);
    cr_assert_geq(fx_now_us() - t0, 190000u);
    cr_assert(strstr(t->last_errstr, "of 2 replicas acknowledged"), "%s",
              t->last_errstr);
    /* They are on the master all the same. */
    redisContext *m = fx_ha_connect(fx_ha_node_port(0), NULL);
    redisReply *r = redisCommand(m, "LLEN q");
    cr_assert_eq(r->integer, 8);
    freeReplyObject(r);
    redisFree(m);

    /* One replica asked for, one there: ok, and the WAITs are fewer than
     * the batches when several are in flight. */
    fx_tracker *t2 = fx_tracker_new(5000);
    o.min_replicas = 1;
    /* Generous: on a loaded machine a replica can lag 200 ms behind. */
    o.replica_timeout_ms = 10000;
    o.batch_max_msgs = 10;
    cr_assert_eq(fx_producer_new(t2, &o), 0);
    fx_produce_range(t2, "q2", 0, 5000, 16);
    cr_assert(fx_wait_reports(t2, 5000, 10000));
    fx_assert_reported(t2, 0, 5000, 0);
    m = fx_ha_connect(fx_ha_node_port(1), NULL);
    r = redisCommand(m, "LLEN q2");
    cr_assert_eq(r->integer, 5000, "replica has %lld", r->integer);
    freeReplyObject(r);
    redisFree(m);
    m = fx_ha_connect(fx_ha_node_port(0), NULL);
    r = redisCommand(m, "INFO commandstats");
    long long waits = 0, lpush = 0;
    const char *w = strstr(r->str, "cmdstat_wait:calls=");
    const char *l = strstr(r->str, "cmdstat_lpush:calls=");
    if (w)
        waits = atoll(w + 19);
    if (l)
        lpush = atoll(l + 20);
    freeReplyObject(r);
    redisFree(m);
    cr_assert_gt(waits, 0);
    cr_assert_lt(waits, lpush, "%lld WAITs for %lld LPUSHes", waits, lpush);
}

/* ---- sentinels down ----------------------------------------------------- */

Test(sentinel_replicas, sentinels_down_then_back)
{
    redq_producer_options o;
    fx_ha_start(0, 2, NULL);
    ha_opts(&o, fx_ha_url());
    fx_tracker *t = fx_tracker_new(30);
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fx_produce_range(t, "q", 0, 10, 16);
    cr_assert(fx_wait_reports(t, 10, 5000));

    /* One sentinel down, the connection lost: the other one answers. */
    fx_ha_stop_sentinel(0);
    redisContext *m = fx_ha_connect(fx_ha_node_port(0), NULL);
    redisReply *r = redisCommand(m, "CLIENT KILL TYPE normal");
    freeReplyObject(r);
    fx_produce_range(t, "q", 10, 20, 16);
    cr_assert(fx_wait_reports(t, 20, 5000));
    fx_assert_reported(t, 0, 20, 0);

    /* All down: clear errors, messages wait; back: they land. */
    fx_ha_stop_sentinel(1);
    r = redisCommand(m, "CLIENT KILL TYPE normal");
    freeReplyObject(r);
    fx_produce_range(t, "q", 20, 30, 16);
    cr_assert(fx_wait_log_code(t, REDQ_ECONNECT, 3000));
    cr_assert_eq(t->reports, 20);
    fx_ha_start_sentinel(0);
    fx_ha_start_sentinel(1);
    cr_assert(fx_wait_reports(t, 30, 10000), "%zu reports", t->reports);
    fx_assert_reported(t, 0, 30, 0);
    r = redisCommand(m, "LLEN q");
    cr_assert_eq(r->integer, 30);
    freeReplyObject(r);
    redisFree(m);
}

/* A stale sentinel (down during a failover, back with its old view) names
 * the old master first: the connection must not stay on it, and must not
 * write to it; the next sentinel's answer wins, checked with ROLE. */
Test(sentinel_errors, stale_sentinel_naming_the_old_master)
{
    redq_producer_options o;
    fx_ha_start(1, 3, NULL);
    fx_ha_stop_sentinel(0); /* keeps "node 0 is the master" */
    fx_ha_kill_node(0);
    {
        uint64_t until = fx_now_us() + 30000000u;
        while (fx_ha_master() != 1 && fx_now_us() < until)
            fx_run_for(100);
    }
    cr_assert_eq(fx_ha_master(), 1, "no failover to node 1");
    fx_ha_start_sentinel(0);
    {
        /* Sentinel 0 (listed first in the URL) still names node 0. */
        redisContext *s = fx_ha_connect(fx_ha_sentinel_port(0), NULL);
        redisReply *r =
            redisCommand(s, "SENTINEL get-master-addr-by-name mymaster");
        cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
        cr_assert_eq(atoi(r->element[1]->str), fx_ha_node_port(0),
                     "sentinel 0 was not stale: the test proves nothing");
        freeReplyObject(r);
        redisFree(s);
    }
    ha_opts(&o, fx_ha_url());
    fx_tracker *t = fx_tracker_new(10);
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fx_produce_range(t, "q", 0, 10, 16);
    cr_assert(fx_wait_reports(t, 10, 15000), "%zu reports", t->reports);
    fx_assert_reported(t, 0, 10, 0);
    redisContext *m = fx_ha_connect(fx_ha_node_port(1), NULL);
    redisReply *r = redisCommand(m, "LLEN q");
    cr_assert_eq(r->integer, 10);
    freeReplyObject(r);
    redisFree(m);
}
