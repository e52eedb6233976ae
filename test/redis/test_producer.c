/*
 * The producer against a real redis-server: delivery, order, batching,
 * linger, the window, flush, close and argument checks.
 *
 * Every test gets its own server (fixture.c). Callbacks only record; the
 * assertions run after the loop has returned.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_NORESERVE */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "fixture.h"

TestSuite(producer, .init = fx_setup, .fini = fx_teardown, .timeout = 60);

static void opts_for_server(redq_producer_options *o)
{
    redq_producer_options_init(o);
    o->url = fx_url();
}

static void new_producer(fx_tracker *t, redq_producer_options *o)
{
    int rc = fx_producer_new(t, o);
    cr_assert(rc == 0, "redq_producer_new(%s): %s", o->url ? o->url : "(null)",
              redq_err_name(rc));
}

/* Close and check the close contract: one close callback, nothing after. */
static void close_and_wait(fx_tracker *t)
{
    int rc = fx_close(t);
    cr_assert(rc == 0, "redq_producer_close: %s", redq_err_name(rc));
    cr_assert(fx_wait_closed(t, 5000), "close callback not called within 5 s");
    fx_run_for(50);
    cr_assert(t->closed == 1, "close callback called %u times", t->closed);
    cr_assert(t->reports_after_close == 0, "%u reports after the close callback",
              t->reports_after_close);
}

static long long ms_between(uint64_t from_us, uint64_t to_us)
{
    return ((long long)to_us - (long long)from_us) / 1000;
}

/* ---- delivery and order ------------------------------------------------ */

Test(producer, hundred_thousand_in_fifo_order)
{
    const size_t n = 100000;
    fx_tracker *t = fx_tracker_new(n);
    redq_producer_options o;
    opts_for_server(&o);
    new_producer(t, &o);

    fx_produce_range(t, "q", 0, n, 0);
    cr_assert(fx_wait_reports(t, n, 40000), "%zu of %zu reports after 40 s",
              t->reports, n);
    fx_assert_reported(t, 0, n, 0);

    redq_producer_stats st = fx_stats(t);
    cr_assert(st.produced == n && st.stored == n && st.failed == 0,
              "stats: produced %llu stored %llu failed %llu",
              (unsigned long long)st.produced,
              (unsigned long long)st.stored, (unsigned long long)st.failed);
    cr_assert(st.pending_msgs == 0 && st.pending_bytes == 0 &&
                  st.inflight_batches == 0,
              "stats after the last report: pending %zu msgs / %zu bytes, %zu "
              "batches in flight",
              st.pending_msgs, st.pending_bytes, st.inflight_batches);
    cr_assert(st.connected == 1 && st.connects == 1 && st.disconnects == 0,
              "stats: connected %d, connects %llu, disconnects %llu",
              st.connected, (unsigned long long)st.connects,
              (unsigned long long)st.disconnects);

    fx_assert_list_range("q", 0, n);

    /* The close callback is the handle's last: a duplicate report would
     * have come before it. */
    close_and_wait(t);
    cr_assert(t->reports == n, "%zu reports for %zu messages", t->reports, n);
}

#define NQ 3
#define INTERLEAVED_N 3000
static size_t interleaved_seqs[NQ][INTERLEAVED_N];

Test(producer, interleaved_queues_keep_their_own_order)
{
    static const char *const queues[NQ] = {"qa", "qb", "qc"};
    const size_t n = INTERLEAVED_N;
    fx_tracker *t = fx_tracker_new(n);
    redq_producer_options o;
    opts_for_server(&o);
    /* Many small batches, several in flight: order must survive being split
     * across pipelined commands. */
    o.batch_max_msgs = 7;
    o.max_inflight_batches = 4;
    new_producer(t, &o);

    size_t nseq[NQ] = {0};
    uint32_t x = 12345;
    for (size_t s = 0; s < n; s++) {
        x = x * 1103515245u + 12345u;
        size_t q = (x >> 16) % NQ;
        int rc = fx_produce(t, queues[q], s, 0);
        cr_assert(rc == 0, "produce seq %zu: %s", s, redq_err_name(rc));
        interleaved_seqs[q][nseq[q]++] = s;
        /* Run the loop now and then so batches are cut at varied points. */
        if (s % 97 == 0)
            event_base_loop(fx_base(), EVLOOP_NONBLOCK);
    }
    cr_assert(fx_wait_reports(t, n, 20000), "%zu of %zu reports after 20 s",
              t->reports, n);
    fx_assert_reported(t, 0, n, 0);
    for (size_t q = 0; q < NQ; q++) {
        cr_assert(nseq[q] > n / 5, "the mix is too lopsided to test anything");
        fx_assert_list(queues[q], interleaved_seqs[q], nseq[q]);
    }
}

struct seen_report {
    unsigned n;
    char queue[32];
    unsigned char payload[256];
    size_t len;
    void *opaque;
    int status;
    int errstr_null;
};

static void record_report(fx_tracker *t, redq_producer *p,
                          const redq_report *r)
{
    (void)p;
    struct seen_report *seen = t->hook_arg;
    seen->n++;
    snprintf(seen->queue, sizeof seen->queue, "%s", r->queue ? r->queue : "");
    seen->len = r->len;
    if (r->payload)
        memcpy(seen->payload, r->payload,
               r->len < sizeof seen->payload ? r->len : sizeof seen->payload);
    seen->opaque = r->opaque;
    seen->status = r->status;
    seen->errstr_null = r->errstr == NULL;
}

Test(producer, report_carries_queue_payload_and_opaque)
{
    struct seen_report seen;
    memset(&seen, 0, sizeof seen);
    fx_tracker *t = fx_tracker_new(1);
    t->raw = true;
    t->on_report = record_report;
    t->hook_arg = &seen;
    redq_producer_options o;
    opts_for_server(&o);
    new_producer(t, &o);

    unsigned char body[256], orig[256];
    for (size_t i = 0; i < sizeof body; i++)
        body[i] = (unsigned char)(255 - i); /* every byte value, NUL included */
    memcpy(orig, body, sizeof body);
    char queue[] = "jobs:high";
    int marker = 42;

    int rc = redq_produce(t->p, queue, body, sizeof body, &marker);
    cr_assert(rc == 0, "produce: %s", redq_err_name(rc));
    /* Contract 4: both were copied before redq_produce() returned. */
    memset(body, 0, sizeof body);
    memcpy(queue, "XXXX:XXXX", sizeof queue);

    cr_assert(fx_wait_reports(t, 1, 5000), "no report within 5 s");
    cr_assert(seen.n == 1, "%u reports", seen.n);
    cr_assert(seen.status == 0, "status %s (%s)", redq_err_name(seen.status),
              t->last_errstr);
    cr_assert(seen.errstr_null, "errstr is not NULL on success");
    cr_assert(strcmp(seen.queue, "jobs:high") == 0, "report queue \"%s\"",
              seen.queue);
    cr_assert(seen.len == sizeof orig, "report len %zu", seen.len);
    cr_assert(memcmp(seen.payload, orig, sizeof orig) == 0,
              "report payload differs from what was produced");
    cr_assert(seen.opaque == &marker, "report opaque %p, produced %p",
              seen.opaque, (void *)&marker);

    redisReply *r = fx_cmd("LRANGE jobs:high 0 -1");
    cr_assert(r->type == REDIS_REPLY_ARRAY && r->elements == 1,
              "jobs:high: type %d, %zu elements", r->type, r->elements);
    cr_assert(r->element[0]->len == sizeof orig &&
                  memcmp(r->element[0]->str, orig, sizeof orig) == 0,
              "the stored message differs from what was produced");
}

Test(producer, empty_message_is_delivered)
{
    fx_tracker *t = fx_tracker_new(1);
    t->raw = true;
    redq_producer_options o;
    opts_for_server(&o);
    new_producer(t, &o);

    int rc = redq_produce(t->p, "q", NULL, 0, NULL);
    cr_assert(rc == 0, "produce(NULL, 0): %s", redq_err_name(rc));
    cr_assert(fx_wait_reports(t, 1, 5000), "no report within 5 s");
    cr_assert(t->ok == 1, "status %s: %s", redq_err_name(t->last_fail_status),
              t->last_errstr);
    redisReply *r = fx_cmd("LRANGE q 0 -1");
    cr_assert(r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
                  r->element[0]->len == 0,
              "q should hold one empty string (%zu elements)", r->elements);
}

/* ---- batching and linger ----------------------------------------------- */

Test(producer, batches_are_real_lpush_calls)
{
    const size_t n = 50000;
    fx_tracker *t = fx_tracker_new(n);
    redq_producer_options o;
    opts_for_server(&o);
    new_producer(t, &o);

    fx_produce_range(t, "q", 0, n, 0);
    cr_assert(fx_wait_reports(t, n, 30000), "%zu of %zu reports after 30 s",
              t->reports, n);
    fx_assert_reported(t, 0, n, 0);

    long long calls = fx_commandstat_calls("lpush");
    redq_producer_stats st = fx_stats(t);
    cr_assert(calls > 0 && (size_t)calls < n / 10,
              "%lld LPUSH calls for %zu messages: not batched", calls, n);
    /* Default batch_max_msgs is 1024: no command may carry more. */
    cr_assert((size_t)calls >= (n + 1023) / 1024,
              "%lld LPUSH calls for %zu messages: batches above 1024", calls, n);
    cr_assert((unsigned long long)calls == st.batches_sent &&
                  st.batches_resent == 0,
              "server saw %lld LPUSH calls, stats say %llu sent (%llu resent)",
              calls, (unsigned long long)st.batches_sent,
              (unsigned long long)st.batches_resent);
    cr_assert(fx_llen("q") == (long long)n);
}

Test(producer, batch_limits_are_honoured)
{
    /* 2000 messages of 1000 bytes with batch_max_bytes 10000: about ten per
     * command ("about": RESP framing counts too), never a hundred. */
    const size_t n = 2000;
    fx_tracker *t = fx_tracker_new(n + 600);
    redq_producer_options o;
    opts_for_server(&o);
    o.batch_max_bytes = 10000;
    o.batch_max_msgs = 100;
    new_producer(t, &o);

    fx_produce_range(t, "big", 0, n, 1000);
    cr_assert(fx_wait_reports(t, n, 20000), "%zu of %zu reports after 20 s",
              t->reports, n);
    fx_assert_reported(t, 0, n, 0);
    long long calls = fx_commandstat_calls("lpush");
    cr_assert(calls >= (long long)(n / 12),
              "%lld LPUSH calls for %zu x 1000 bytes with batch_max_bytes "
              "10000: batches too big",
              calls, n);
    cr_assert(calls < (long long)n, "%lld LPUSH calls: no batching at all",
              calls);

    /* Small messages: batch_max_msgs = 100 caps the count. */
    fx_produce_range(t, "small", n, n + 600, 0);
    cr_assert(fx_wait_reports(t, n + 600, 20000), "%zu of %zu reports",
              t->reports, n + 600);
    fx_assert_reported(t, n, n + 600, 0);
    long long more = fx_commandstat_calls("lpush") - calls;
    cr_assert(more >= 6, "%lld LPUSH calls for 600 messages with "
                         "batch_max_msgs 100",
              more);
    fx_assert_list_range("big", 0, n);
    fx_assert_list_range("small", n, n + 600);
}

Test(producer, linger_holds_a_lone_message)
{
    fx_tracker *t = fx_tracker_new(2);
    redq_producer_options o;
    opts_for_server(&o);
    o.adaptive = 0;
    o.linger_us = 200000;
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000), "not connected within 5 s");

    cr_assert(fx_produce(t, "q", 0, 0) == 0);
    /* A second message 50 ms later joins the lingering batch. */
    fx_run_for(50);
    cr_assert(t->reports == 0, "reported after 50 ms despite a 200 ms linger");
    cr_assert(fx_produce(t, "q", 1, 0) == 0);
    cr_assert(fx_wait_reports(t, 2, 3000), "%zu of 2 reports after 3 s",
              t->reports);
    fx_assert_reported(t, 0, 2, 0);

    long long d = ms_between(t->prod_us[0], t->rep_us[0]);
    cr_assert(t->rep_us[0] + fx_clock_slack_us() >= t->prod_us[0] + 200000,
              "reported %lld ms after produce, linger is 200 ms", d);
    cr_assert(d < 3000, "reported %lld ms after produce", d);
    long long calls = fx_commandstat_calls("lpush");
    cr_assert(calls == 1, "%lld LPUSH calls: the second message did not join "
                          "the lingering batch",
              calls);
    fx_assert_list_range("q", 0, 2);
}

Test(producer, adaptive_sends_a_lone_message_at_once)
{
    fx_tracker *t = fx_tracker_new(1);
    redq_producer_options o;
    opts_for_server(&o);
    cr_assert(o.adaptive == 1, "adaptive should default to 1");
    o.linger_us = 2000000;
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000), "not connected within 5 s");

    cr_assert(fx_produce(t, "q", 0, 0) == 0);
    cr_assert(fx_wait_reports(t, 1, 3000), "no report within 3 s");
    fx_assert_reported(t, 0, 1, 0);
    long long d = ms_between(t->prod_us[0], t->rep_us[0]);
    cr_assert(d < 1000, "lone message reported after %lld ms: adaptive mode "
                        "lingered (linger is 2000 ms)",
              d);
}

/* ---- the window -------------------------------------------------------- */

Test(producer, efull_exactly_at_max_pending_msgs)
{
    fx_tracker *t = fx_tracker_new(101);
    redq_producer_options o;
    opts_for_server(&o);
    o.max_pending_msgs = 100;
    /* Reports come ten at a time, one batch in flight: on_ready must wait
     * for half the window, not the first free slot. */
    o.batch_max_msgs = 10;
    o.max_inflight_batches = 1;
    new_producer(t, &o);

    /* Before the loop ever runs: nothing can have been acknowledged. */
    fx_produce_range(t, "q", 0, 100, 0);
    int rc = fx_produce(t, "q", 100, 0);
    cr_assert(rc == REDQ_EFULL, "message 101 with max_pending_msgs 100: %s",
              redq_err_name(rc));
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.rejected_full == 1 && st.produced == 100 &&
                  st.pending_msgs == 100,
              "stats: rejected_full %llu produced %llu pending %zu",
              (unsigned long long)st.rejected_full,
              (unsigned long long)st.produced, st.pending_msgs);
    cr_assert(t->ready == 0, "on_ready ran inside redq_produce");

    cr_assert(fx_wait_ready(t, 10000), "on_ready not called within 10 s "
                                       "(%zu reports)",
              t->reports);
    cr_assert(t->ready_stats.pending_msgs <= 50,
              "on_ready with %zu messages pending; documented: half of 100",
              t->ready_stats.pending_msgs);
    cr_assert(t->ready_reports >= 50, "on_ready after only %zu reports",
              t->ready_reports);

    rc = fx_produce(t, "q", 100, 0);
    cr_assert(rc == 0, "produce after on_ready: %s", redq_err_name(rc));
    cr_assert(fx_wait_reports(t, 101, 10000), "%zu of 101 reports", t->reports);
    fx_assert_reported(t, 0, 101, 0);
    fx_assert_list_range("q", 0, 101);
    cr_assert(t->ready == 1, "on_ready called %u times for one EFULL",
              t->ready);
}

Test(producer, efull_exactly_at_max_pending_bytes)
{
    fx_tracker *t = fx_tracker_new(12);
    redq_producer_options o;
    opts_for_server(&o);
    o.max_pending_bytes = 1000;
    o.batch_max_msgs = 2;
    o.max_inflight_batches = 1;
    new_producer(t, &o);

    /* Larger than the whole window: it can never fit, so not EFULL. */
    int rc = fx_produce(t, "q", 11, 1001);
    cr_assert(rc == REDQ_ETOOBIG, "1001 bytes with max_pending_bytes 1000: %s",
              redq_err_name(rc));

    fx_produce_range(t, "q", 0, 10, 100); /* exactly 1000 bytes */
    rc = fx_produce(t, "q", 10, 100);
    cr_assert(rc == REDQ_EFULL, "1100 bytes pending with a 1000 byte window: %s",
              redq_err_name(rc));
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.pending_bytes == 1000 && st.rejected_full == 1,
              "stats: pending_bytes %zu rejected_full %llu", st.pending_bytes,
              (unsigned long long)st.rejected_full);

    cr_assert(fx_wait_ready(t, 10000), "on_ready not called within 10 s");
    cr_assert(t->ready_stats.pending_bytes <= 500,
              "on_ready with %zu bytes pending; documented: half of 1000",
              t->ready_stats.pending_bytes);
    rc = fx_produce(t, "q", 10, 100);
    cr_assert(rc == 0, "produce after on_ready: %s", redq_err_name(rc));
    cr_assert(fx_wait_reports(t, 11, 10000), "%zu of 11 reports", t->reports);
    fx_assert_reported(t, 0, 11, 0);
    cr_assert(t->nrep[11] == 0, "a rejected message was reported");
    fx_assert_list_range("q", 0, 11);
}

Test(producer, too_big_message_is_rejected)
{
    fx_tracker *t = fx_tracker_new(2);
    redq_producer_options o;
    opts_for_server(&o);
    o.max_message_bytes = 1000;
    new_producer(t, &o);

    int rc = fx_produce(t, "q", 0, 1001);
    cr_assert(rc == REDQ_ETOOBIG, "1001 bytes with max_message_bytes 1000: %s",
              redq_err_name(rc));
    rc = fx_produce(t, "q", 1, 1000);
    cr_assert(rc == 0, "1000 bytes with max_message_bytes 1000: %s",
              redq_err_name(rc));
    cr_assert(fx_wait_reports(t, 1, 5000), "no report within 5 s");
    fx_run_for(50);
    fx_assert_reported(t, 1, 2, 0);
    cr_assert(t->nrep[0] == 0, "the rejected message was reported");
    cr_assert(fx_stats(t).produced == 1);
    fx_assert_list_range("q", 1, 2);
}

/* ---- errors from Redis -------------------------------------------------- */

Test(producer, wrongtype_fails_that_message_only)
{
    fx_cmd_ok("SET q x");
    fx_tracker *t = fx_tracker_new(4);
    redq_producer_options o;
    opts_for_server(&o);
    new_producer(t, &o);

    /* Same loop iteration: a batch for q and one for q2. */
    cr_assert(fx_produce(t, "q", 0, 0) == 0);
    cr_assert(fx_produce(t, "q2", 1, 0) == 0);
    cr_assert(fx_wait_reports(t, 2, 5000), "%zu of 2 reports", t->reports);
    fx_assert_reported(t, 0, 1, REDQ_EWRONGTYPE);
    cr_assert(strstr(t->last_errstr, "WRONGTYPE") != NULL,
              "errstr \"%s\" does not quote the server's WRONGTYPE",
              t->last_errstr);
    fx_assert_reported(t, 1, 2, 0);

    /* The producer carries on. */
    cr_assert(fx_produce(t, "q2", 2, 0) == 0);
    cr_assert(fx_wait_reports(t, 3, 5000), "%zu of 3 reports", t->reports);
    fx_assert_reported(t, 2, 3, 0);
    fx_assert_list_range("q2", 1, 3);
    redisReply *r = fx_cmd("GET q");
    cr_assert(r->type == REDIS_REPLY_STRING && strcmp(r->str, "x") == 0,
              "q was changed");
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.failed == 1 && st.stored == 2 && st.connected == 1,
              "stats: failed %llu stored %llu connected %d",
              (unsigned long long)st.failed, (unsigned long long)st.stored,
              st.connected);
}

/* ---- arguments ---------------------------------------------------------- */

static void ignore_flush(redq_producer *p, int status, void *user)
{
    (void)p;
    (void)status;
    (void)user;
}

Test(producer, invalid_arguments)
{
    static const char *const bad_urls[] = {
        "http://127.0.0.1:6379",
        "redis://127.0.0.1:70000",
        "redis://127.0.0.1:0",
        "redis://127.0.0.1:port",
        "redis://127.0.0.1:6379/db",
        "redis://127.0.0.1:6379/-1",
        "redis://[::1",
        "unix://",
        "",
    };
    char dummy;
    redq_producer *const untouched = (redq_producer *)(void *)&dummy;
    redq_producer_options o;
    opts_for_server(&o);

    for (size_t i = 0; i < sizeof bad_urls / sizeof bad_urls[0]; i++) {
        redq_producer *p = untouched;
        o.url = bad_urls[i];
        int rc = redq_producer_new(&p, fx_base(), &o);
        cr_assert(rc == REDQ_EINVAL, "URL \"%s\": %s, expected REDQ_EINVAL",
                  bad_urls[i], redq_err_name(rc));
        cr_assert(p == untouched, "URL \"%s\": *out changed on failure",
                  bad_urls[i]);
    }
    o.url = fx_url();

    redq_producer *p = untouched;
    cr_assert(redq_producer_new(NULL, fx_base(), &o) == REDQ_EINVAL);
    cr_assert(redq_producer_new(&p, NULL, &o) == REDQ_EINVAL);
    cr_assert(redq_producer_new(&p, fx_base(), NULL) == REDQ_EINVAL);
    o.version = REDQ_PRODUCER_OPTIONS_VERSION + 100;
    cr_assert(redq_producer_new(&p, fx_base(), &o) == REDQ_EINVAL,
              "unknown options version accepted");
    o.version = 0;
    cr_assert(redq_producer_new(&p, fx_base(), &o) == REDQ_EINVAL,
              "options version 0 accepted");
    opts_for_server(&o);
    o.max_message_bytes = (size_t)513 * 1024 * 1024;
    cr_assert(redq_producer_new(&p, fx_base(), &o) == REDQ_EINVAL,
              "max_message_bytes above 512 MiB accepted");
    cr_assert(p == untouched, "*out changed on failure");

    fx_tracker *t = fx_tracker_new(1);
    opts_for_server(&o);
    new_producer(t, &o);
    cr_assert(t->p != NULL && t->p != untouched);

    cr_assert(redq_produce(NULL, "q", "x", 1, NULL) == REDQ_EINVAL);
    cr_assert(redq_produce(t->p, NULL, "x", 1, NULL) == REDQ_EINVAL);
    cr_assert(redq_produce(t->p, "", "x", 1, NULL) == REDQ_EINVAL,
              "empty queue name accepted");
    cr_assert(redq_produce(t->p, "q", NULL, 5, NULL) == REDQ_EINVAL,
              "NULL payload with len 5 accepted");
    cr_assert(redq_producer_flush(NULL, -1, ignore_flush, NULL) == REDQ_EINVAL);
    cr_assert(redq_producer_flush(t->p, -1, NULL, NULL) == REDQ_EINVAL);
    cr_assert(redq_producer_close(NULL, NULL, NULL) == REDQ_EINVAL);

    /* None of those may produce a report or count as produced. */
    cr_assert(fx_wait_connected(t, 5000), "not connected within 5 s");
    fx_run_for(50);
    cr_assert(t->reports == 0, "%zu reports for rejected calls", t->reports);
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.produced == 0 && st.pending_msgs == 0,
              "rejected calls counted: produced %llu pending %zu",
              (unsigned long long)st.produced, st.pending_msgs);
    cr_assert(fx_llen("q") == 0);
}

/* ---- flush -------------------------------------------------------------- */

struct flush_rec {
    fx_tracker *t;
    size_t upto;          /* messages 0..upto-1 came before the flush */
    unsigned called;
    int status;
    size_t reported_upto; /* how many of those had a report at the callback */
    size_t reports;       /* reports at the callback */
    uint64_t at_us;
    bool close_in_cb;     /* close the producer from the callback */
    int close_rc;
};

static void on_flush(redq_producer *p, int status, void *user)
{
    struct flush_rec *f = user;
    f->called++;
    f->status = status;
    f->reports = f->t->reports;
    f->at_us = fx_now_us();
    f->reported_upto = 0;
    for (size_t s = 0; s < f->upto; s++)
        if (f->t->nrep[s] > 0)
            f->reported_upto++;
    if (p != f->t->p)
        f->status = 1000; /* shows up as a wrong status */
    if (f->close_in_cb)
        f->close_rc = fx_close(f->t);
}

static bool flush_called(void *arg)
{
    return ((struct flush_rec *)arg)->called > 0;
}

Test(producer, flush_waits_for_every_earlier_report)
{
    const size_t n = 1000, later = 500;
    fx_tracker *t = fx_tracker_new(n + later);
    redq_producer_options o;
    opts_for_server(&o);
    o.adaptive = 0;
    o.linger_us = 100000;
    new_producer(t, &o);

    fx_produce_range(t, "q", 0, n, 0);
    struct flush_rec f = {.t = t, .upto = n};
    int rc = redq_producer_flush(t->p, -1, on_flush, &f);
    cr_assert(rc == 0, "flush: %s", redq_err_name(rc));
    cr_assert(f.called == 0, "flush callback ran inside redq_producer_flush");
    fx_produce_range(t, "q", n, n + later, 0);

    cr_assert(fx_run_until(flush_called, &f, 10000),
              "flush callback not called within 10 s (%zu reports)",
              t->reports);
    cr_assert(f.status == 0, "flush status %d (%s)", f.status,
              redq_err_name(f.status));
    cr_assert(f.reported_upto == n,
              "flush callback with only %zu of the %zu earlier messages "
              "reported",
              f.reported_upto, n);
    cr_assert(fx_wait_reports(t, n + later, 10000), "%zu of %zu reports",
              t->reports, n + later);
    fx_assert_reported(t, 0, n + later, 0);
    cr_assert(f.called == 1, "flush callback called %u times", f.called);
    fx_assert_list_range("q", 0, n + later);
}

Test(producer, flush_does_not_wait_for_linger)
{
    fx_tracker *t = fx_tracker_new(1);
    redq_producer_options o;
    opts_for_server(&o);
    o.adaptive = 0;
    o.linger_us = 2000000;
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000), "not connected within 5 s");

    cr_assert(fx_produce(t, "q", 0, 0) == 0);
    struct flush_rec f = {.t = t, .upto = 1};
    cr_assert(redq_producer_flush(t->p, -1, on_flush, &f) == 0);
    cr_assert(fx_run_until(flush_called, &f, 3000), "no flush callback in 3 s");
    long long d = ms_between(t->prod_us[0], t->rep_us[0]);
    cr_assert(f.reported_upto == 1 && d < 1000,
              "flushed message reported after %lld ms (linger 2000 ms)", d);
    fx_assert_reported(t, 0, 1, 0);
}

Test(producer, flush_with_nothing_pending_and_several_flushes)
{
    fx_tracker *t = fx_tracker_new(10);
    redq_producer_options o;
    opts_for_server(&o);
    new_producer(t, &o);

    struct flush_rec a = {.t = t, .upto = 0};
    cr_assert(redq_producer_flush(t->p, -1, on_flush, &a) == 0);
    cr_assert(a.called == 0, "flush callback ran inside redq_producer_flush");
    cr_assert(fx_run_until(flush_called, &a, 5000), "idle flush never called");
    cr_assert(a.status == 0);

    fx_produce_range(t, "q", 0, 5, 0);
    struct flush_rec b = {.t = t, .upto = 5};
    cr_assert(redq_producer_flush(t->p, -1, on_flush, &b) == 0);
    fx_produce_range(t, "q", 5, 10, 0);
    struct flush_rec c = {.t = t, .upto = 10};
    cr_assert(redq_producer_flush(t->p, -1, on_flush, &c) == 0);
    cr_assert(fx_run_until(flush_called, &c, 5000), "second flush not called");
    cr_assert(fx_run_until(flush_called, &b, 5000), "first flush not called");
    cr_assert(b.reported_upto == 5 && c.reported_upto == 10,
              "flushes called early: %zu/5 and %zu/10 reported",
              b.reported_upto, c.reported_upto);
    close_and_wait(t);
    cr_assert(a.called == 1 && b.called == 1 && c.called == 1,
              "flush callbacks called %u, %u, %u times", a.called, b.called,
              c.called);
    cr_assert(b.status == 0 && c.status == 0);
}

/* ---- close -------------------------------------------------------------- */

Test(producer, close_reports_pending_as_closed_first)
{
    fx_tracker *t = fx_tracker_new(11);
    redq_producer_options o;
    opts_for_server(&o);
    o.adaptive = 0;
    o.linger_us = 1000000; /* nothing gets sent before the close */
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000), "not connected within 5 s");

    fx_produce_range(t, "q", 0, 10, 0);
    int rc = fx_close(t);
    cr_assert(rc == 0, "close: %s", redq_err_name(rc));
    cr_assert(t->reports == 0 && t->closed == 0,
              "callbacks ran inside redq_producer_close");
    rc = fx_produce(t, "q", 10, 0);
    cr_assert(rc == REDQ_ECLOSED, "produce after close: %s", redq_err_name(rc));
    cr_assert(redq_producer_flush(t->p, -1, ignore_flush, NULL) == REDQ_ECLOSED,
              "flush after close accepted");
    cr_assert(redq_producer_close(t->p, NULL, NULL) == REDQ_ECLOSED,
              "second close accepted");

    cr_assert(fx_wait_closed(t, 5000), "close callback not called in 5 s");
    cr_assert(t->closed_reports == 10,
              "close callback after %zu of 10 reports", t->closed_reports);
    fx_run_for(100);
    cr_assert(t->closed == 1, "close callback called %u times", t->closed);
    cr_assert(t->reports_after_close == 0, "%u reports after close callback",
              t->reports_after_close);
    fx_assert_reported(t, 0, 10, REDQ_ECLOSED);
    cr_assert(t->nrep[10] == 0, "the rejected message was reported");
    /* close does not drain: the lingering batch was never sent. */
    cr_assert(fx_llen("q") == 0, "close sent the lingering messages");
}

Test(producer, close_with_a_flush_outstanding)
{
    fx_tracker *t = fx_tracker_new(10);
    redq_producer_options o;
    opts_for_server(&o);
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000), "not connected within 5 s");

    fx_produce_range(t, "q", 0, 10, 0);
    struct flush_rec f = {.t = t, .upto = 10};
    cr_assert(redq_producer_flush(t->p, -1, on_flush, &f) == 0);
    close_and_wait(t);
    cr_assert(f.called == 1, "flush callback called %u times", f.called);
    cr_assert(f.status == REDQ_ECLOSED, "flush status %s, expected REDQ_ECLOSED",
              redq_err_name(f.status));
    cr_assert(f.reported_upto == 10, "flush callback after %zu of 10 reports",
              f.reported_upto);
    /* Sent but not acknowledged when close was called: ECLOSED, and it
     * may or may not be in the list. Acknowledged ones must be. */
    for (size_t s = 0; s < 10; s++)
        cr_assert(t->nrep[s] == 1 &&
                      (t->status[s] == 0 || t->status[s] == REDQ_ECLOSED),
                  "seq %zu: %u reports, status %s", s, t->nrep[s],
                  redq_err_name(t->status[s]));
    cr_assert(fx_llen("q") >= (long long)t->ok);
}

struct close_in_report {
    unsigned done;
    int close_rc;
    int produce_rc;
};

static void close_on_first_report(fx_tracker *t, redq_producer *p,
                                  const redq_report *r)
{
    (void)r;
    struct close_in_report *c = t->hook_arg;
    if (c->done++)
        return;
    c->close_rc = fx_close(t);
    c->produce_rc = redq_produce(p, "q", "late", 4, NULL);
}

Test(producer, close_from_inside_a_delivery_callback)
{
    const size_t n = 100;
    fx_tracker *t = fx_tracker_new(n);
    struct close_in_report c = {0, 1, 1};
    t->on_report = close_on_first_report;
    t->hook_arg = &c;
    redq_producer_options o;
    opts_for_server(&o);
    o.batch_max_msgs = 10;
    o.max_inflight_batches = 1;
    new_producer(t, &o);

    fx_produce_range(t, "q", 0, n, 0);
    cr_assert(fx_wait_closed(t, 10000), "close callback not called in 10 s "
                                        "(%zu reports)",
              t->reports);
    cr_assert(c.close_rc == 0, "close inside a report callback: %s",
              redq_err_name(c.close_rc));
    cr_assert(c.produce_rc == REDQ_ECLOSED,
              "produce after close, inside the callback: %s",
              redq_err_name(c.produce_rc));
    fx_run_for(100);
    cr_assert(t->closed == 1, "close callback called %u times", t->closed);
    cr_assert(t->reports_after_close == 0, "%u reports after close callback",
              t->reports_after_close);
    cr_assert(t->bad == 0, "%s", t->bad_msg);
    size_t closed = 0;
    for (size_t s = 0; s < n; s++) {
        cr_assert(t->nrep[s] == 1 &&
                      (t->status[s] == 0 || t->status[s] == REDQ_ECLOSED),
                  "seq %zu: %u reports, status %s", s, t->nrep[s],
                  redq_err_name(t->status[s]));
        closed += t->status[s] == REDQ_ECLOSED;
    }
    cr_assert(closed > 0, "every message delivered: the close came too late "
                          "to test anything");
    cr_assert(fx_llen("q") >= (long long)t->ok,
              "%zu reported delivered, %lld in the list", t->ok,
              fx_llen("q"));
}

Test(producer, close_from_flush_callback_drains)
{
    const size_t n = 100;
    fx_tracker *t = fx_tracker_new(n);
    redq_producer_options o;
    opts_for_server(&o);
    new_producer(t, &o);

    fx_produce_range(t, "q", 0, n, 0);
    struct flush_rec f = {.t = t, .upto = n, .close_in_cb = true};
    cr_assert(redq_producer_flush(t->p, -1, on_flush, &f) == 0);
    cr_assert(fx_wait_closed(t, 10000), "close callback not called in 10 s");
    cr_assert(f.close_rc == 0, "close from the flush callback: %s",
              redq_err_name(f.close_rc));
    cr_assert(f.status == 0 && f.reported_upto == n);
    fx_run_for(50);
    cr_assert(t->closed == 1);
    fx_assert_reported(t, 0, n, 0);
    fx_assert_list_range("q", 0, n);
}

/* ---- max_queue_len -------------------------------------------------------- */

typedef struct {
    fx_tracker *t;
    long long max_seen;
} qwatch;

static bool cond_throttled(void *arg)
{
    qwatch *w = arg;
    long long n = fx_llen("q");
    if (n > w->max_seen)
        w->max_seen = n;
    return fx_stats(w->t).throttled;
}

Test(producer, max_queue_len_stops_sending_until_the_queue_drains)
{
    const size_t n = 5000;
    fx_tracker *t = fx_tracker_new(n);
    redq_producer_options o;
    qwatch w = {t, 0};
    redq_producer_stats st;

    opts_for_server(&o);
    o.max_queue_len = 1000;
    o.batch_max_msgs = 100;
    o.max_inflight_batches = 2;
    o.max_pending_msgs = n;
    new_producer(t, &o);
    fx_produce_range(t, "q", 0, n, 0);
    cr_assert(fx_run_until(cond_throttled, &w, 10000), "never throttled");
    fx_run_for(200); /* nothing more may be sent while throttled */
    st = fx_stats(t);
    cr_assert(st.throttled, "resumed while the queue is still full");
    cr_assert_geq(fx_llen("q"), 1000);
    /* At most what was in flight when the limit was seen gets past it. */
    cr_assert_leq(fx_llen("q"), 1000 + 2 * 100, "queue grew to %lld",
                  fx_llen("q"));
    cr_assert_lt(t->reports, n);
    cr_assert_geq(st.throttle_events, 1);

    /* Something drains it, again and again: sending resumes each time and
     * everything arrives. */
    {
        uint64_t until = fx_now_us() + 20000000u;
        while (t->reports < n && fx_now_us() < until) {
            fx_cmd_ok("DEL q");
            fx_run_for(20);
        }
        cr_assert_eq(t->reports, n, "stuck at %zu reports", t->reports);
    }
    fx_assert_reported(t, 0, n, 0);
    cr_assert_eq(fx_stats(t).throttled, 0);
}

/* ---- issue 8: flush from its own callback -------------------------------- */

struct reflush {
    fx_tracker *t;
    unsigned called, limit;
    int bad_status;
};

static void on_reflush(redq_producer *p, int status, void *user)
{
    struct reflush *r = user;
    r->called++;
    if (status != 0)
        r->bad_status = status;
    if (r->called < r->limit && redq_producer_flush(p, -1, on_reflush, r) != 0)
        r->bad_status = 1000;
}

Test(producer, flush_from_its_own_callback_returns_to_the_loop)
{
    fx_tracker *t = fx_tracker_new(1);
    redq_producer_options o;
    opts_for_server(&o);
    new_producer(t, &o);

    /* Each flush has nothing to wait for. One loop iteration (a poll for
     * I/O and timers, then the callbacks due) may complete at most the one
     * flush that was started before it: the re-flush from its callback
     * must wait for the next iteration, or the loop never gets back to
     * I/O (the old code ran millions of them in one go). */
    struct reflush r = {.t = t, .limit = 1000};
    cr_assert(redq_producer_flush(t->p, -1, on_reflush, &r) == 0);
    unsigned iterations = 0, most = 0;
    uint64_t deadline = fx_now_us() + 20000000u;
    while (r.called < r.limit && fx_now_us() < deadline) {
        unsigned before = r.called;
        event_base_loop(fx_base(), EVLOOP_ONCE);
        iterations++;
        if (r.called - before > most)
            most = r.called - before;
    }
    cr_assert(r.called == r.limit, "%u of %u flushes in 20 s", r.called,
              r.limit);
    cr_assert(r.bad_status == 0, "flush status %d", r.bad_status);
    cr_assert(most <= 1,
              "%u flush callbacks in one loop iteration (%u iterations)",
              most, iterations);
    fx_run_for(20);
    cr_assert(r.called == r.limit, "flush callbacks after the last flush");
    close_and_wait(t);
}

/* ---- issue 8: persisted status in reports -------------------------------- */

#define PERSIST_N 64
static int persisted_of[PERSIST_N];
static int persisted_bad;

static void record_persisted(fx_tracker *t, redq_producer *p,
                             const redq_report *r)
{
    size_t seq = (size_t)(uintptr_t)r->opaque - 1;
    (void)t;
    (void)p;
    if (seq < PERSIST_N)
        persisted_of[seq] = r->persisted;
    else
        persisted_bad++;
    /* Coherent with the status whatever the case. */
    if ((r->status == 0) != (r->persisted == REDQ_PERSIST_YES))
        persisted_bad++;
}

static void persisted_hook(fx_tracker *t)
{
    for (size_t i = 0; i < PERSIST_N; i++)
        persisted_of[i] = -1;
    persisted_bad = 0;
    t->on_report = record_persisted;
}

Test(producer, persisted_not_when_never_connected)
{
    fx_tracker *t = fx_tracker_new(PERSIST_N);
    redq_producer_options o;
    char url[64];
    redq_producer_options_init(&o);
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", fx_free_port());
    o.url = url;
    persisted_hook(t);
    new_producer(t, &o);
    fx_produce_range(t, "q", 0, 3, 0);
    fx_run_for(100);
    close_and_wait(t);
    fx_assert_reported(t, 0, 3, REDQ_ECLOSED);
    for (size_t i = 0; i < 3; i++)
        cr_assert(persisted_of[i] == REDQ_PERSIST_NOT,
                  "seq %zu never sent, reported persisted %d", i,
                  persisted_of[i]);
    cr_assert(persisted_bad == 0);
}

Test(producer, persisted_yes_when_acked_not_when_refused)
{
    fx_tracker *t = fx_tracker_new(PERSIST_N);
    redq_producer_options o;
    opts_for_server(&o);
    persisted_hook(t);
    new_producer(t, &o);
    fx_cmd_ok("SET str x");
    fx_produce_range(t, "q", 0, 3, 0);
    cr_assert(fx_wait_reports(t, 3, 5000));
    fx_produce_range(t, "str", 3, 4, 0);
    cr_assert(fx_wait_reports(t, 4, 5000));
    fx_assert_reported(t, 0, 3, 0);
    fx_assert_reported(t, 3, 4, REDQ_EWRONGTYPE);
    for (size_t i = 0; i < 3; i++)
        cr_assert(persisted_of[i] == REDQ_PERSIST_YES, "seq %zu: %d", i,
                  persisted_of[i]);
    cr_assert(persisted_of[3] == REDQ_PERSIST_NOT,
              "refused by Redis, reported persisted %d", persisted_of[3]);
    cr_assert(persisted_bad == 0);
}

static bool cond_disconnected(void *arg)
{
    return fx_stats(arg).disconnects >= 1;
}

/* The LPUSH is written and held by CLIENT PAUSE WRITE; its connection is
 * killed, so its outcome is unknown; the producer stays down (long
 * backoff) and is closed: the report must say it may be stored. */
Test(producer, persisted_possibly_when_killed_in_flight_then_closed)
{
    fx_tracker *t = fx_tracker_new(PERSIST_N);
    redq_producer_options o;
    opts_for_server(&o);
    o.reconnect_min_ms = 20000;
    o.reconnect_max_ms = 20000;
    persisted_hook(t);
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000));
    fx_cmd_ok("CLIENT PAUSE 5000 WRITE");
    fx_produce_range(t, "q", 0, 2, 0);
    fx_run_for(100);
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.inflight_batches == 1, "%zu batches in flight",
              st.inflight_batches);
    fx_cmd_ok("CLIENT KILL TYPE normal SKIPME yes");
    cr_assert(fx_run_until(cond_disconnected, t, 5000), "not disconnected");
    fx_cmd_ok("CLIENT UNPAUSE");
    close_and_wait(t);
    fx_assert_reported(t, 0, 2, REDQ_ECLOSED);
    for (size_t i = 0; i < 2; i++)
        cr_assert(persisted_of[i] == REDQ_PERSIST_POSSIBLY,
                  "seq %zu was in flight when its connection died: "
                  "persisted %d",
                  i, persisted_of[i]);
    cr_assert(persisted_bad == 0);
}

Test(producer, persisted_possibly_when_timed_out_in_flight)
{
    fx_tracker *t = fx_tracker_new(PERSIST_N);
    redq_producer_options o;
    opts_for_server(&o);
    o.message_timeout_ms = 300;
    persisted_hook(t);
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000));
    fx_cmd_ok("CLIENT PAUSE 3000 WRITE");
    fx_produce_range(t, "q", 0, 1, 0);
    cr_assert(fx_wait_reports(t, 1, 3000));
    fx_assert_reported(t, 0, 1, REDQ_ETIMEDOUT);
    cr_assert(persisted_of[0] == REDQ_PERSIST_POSSIBLY,
              "timed out in flight: persisted %d", persisted_of[0]);
    fx_cmd_ok("CLIENT UNPAUSE");
    close_and_wait(t);
    cr_assert(persisted_bad == 0);
}

/* ---- issue 8: stats exact at every moment -------------------------------- */

static size_t stats_n, stats_size, stats_violations;
static char stats_first[256];

static void check_stats_in_report(fx_tracker *t, redq_producer *p,
                                  const redq_report *r)
{
    redq_producer_stats st;
    (void)r;
    redq_producer_get_stats(p, &st);
    size_t unreported = stats_n - t->reports;
    if (st.stored + st.failed != t->reports ||
        st.pending_msgs != unreported ||
        st.pending_bytes != unreported * stats_size ||
        st.produced != st.stored + st.failed + st.pending_msgs) {
        if (stats_violations++ == 0)
            snprintf(stats_first, sizeof stats_first,
                     "in report %zu: stored %llu failed %llu pending %zu "
                     "msgs / %zu bytes, produced %llu",
                     t->reports, (unsigned long long)st.stored,
                     (unsigned long long)st.failed, st.pending_msgs,
                     st.pending_bytes, (unsigned long long)st.produced);
    }
}

Test(producer, stats_are_exact_inside_each_report)
{
    fx_tracker *t = fx_tracker_new(300);
    redq_producer_options o;
    opts_for_server(&o);
    stats_n = 300;
    stats_size = 100;
    stats_violations = 0;
    t->on_report = check_stats_in_report;
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000));
    fx_produce_range(t, "q", 0, 300, 100); /* one batch: one callback pass */
    cr_assert(fx_wait_reports(t, 300, 5000));
    fx_assert_reported(t, 0, 300, 0);
    cr_assert(stats_violations == 0, "%zu reports saw wrong stats; first %s",
              stats_violations, stats_first);
}

/* ---- issue 8: size-aware stats ------------------------------------------- */

static union {
    redq_producer_stats p;
    redq_consumer_stats c;
    unsigned char b[sizeof(redq_producer_stats) +
                    sizeof(redq_consumer_stats) + 64];
} sb;

static void expect_sb(size_t from, size_t to, unsigned char v)
{
    for (size_t i = from; i < to; i++)
        cr_assert_eq(sb.b[i], v, "stats byte %zu is 0x%02x, expected 0x%02x",
                     i, sb.b[i], v);
}

static void ignore_msg(redq_consumer *c, redq_message *m, void *user)
{
    (void)c;
    (void)user;
    redq_ack(m);
}

static void consumer_closed(void *user)
{
    (*(int *)user)++;
}

static bool cond_int_set(void *arg)
{
    return *(int *)arg > 0;
}

Test(producer, stats_sized_fill_only_the_callers_bytes)
{
    fx_tracker *t = fx_tracker_new(2);
    redq_producer_options o;
    opts_for_server(&o);
    new_producer(t, &o);
    fx_produce_range(t, "q", 0, 2, 0);
    cr_assert(fx_wait_reports(t, 2, 5000));

    size_t small = offsetof(redq_producer_stats, pending_msgs);
    memset(sb.b, 0xab, sizeof sb.b);
    redq_producer_get_stats_sized(t->p, &sb.p, small);
    cr_assert_eq(sb.p.produced, 2);
    cr_assert_eq(sb.p.stored, 2);
    expect_sb(small, sizeof sb.b, 0xab);

    memset(sb.b, 0xab, sizeof sb.b);
    redq_producer_get_stats(t->p, &sb.p); /* the macro: sizeof *st */
    cr_assert_eq(sb.p.stored, 2);
    cr_assert_eq(sb.p.connected, 1);
    expect_sb(sizeof(redq_producer_stats), sizeof sb.b, 0xab);

    /* A newer program's bigger struct: the tail is zeroed. */
    memset(sb.b, 0xab, sizeof sb.b);
    redq_producer_get_stats_sized(t->p, &sb.p, sizeof(redq_producer_stats) + 16);
    cr_assert_eq(sb.p.stored, 2);
    expect_sb(sizeof(redq_producer_stats), sizeof(redq_producer_stats) + 16, 0);
    expect_sb(sizeof(redq_producer_stats) + 16, sizeof sb.b, 0xab);
    close_and_wait(t);

    /* The consumer's, through the same wrapper. */
    redq_consumer *c = NULL;
    const char *queues[] = {"q"};
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fx_url();
    co.on_message = ignore_msg;
    co.guarantee = REDQ_AT_MOST_ONCE;
    cr_assert(redq_consumer_new(&c, fx_base(), &co, queues, 1) == 0);
    fx_run_for(200);
    small = offsetof(redq_consumer_stats, pops);
    memset(sb.b, 0xab, sizeof sb.b);
    redq_consumer_get_stats_sized(c, &sb.c, small);
    cr_assert_eq(sb.c.delivered, 2, "consumer delivered %llu",
                 (unsigned long long)sb.c.delivered);
    expect_sb(small, sizeof sb.b, 0xab);
    memset(sb.b, 0xab, sizeof sb.b);
    redq_consumer_get_stats(c, &sb.c);
    cr_assert_eq(sb.c.delivered, 2);
    expect_sb(sizeof(redq_consumer_stats), sizeof sb.b, 0xab);
    int closed = 0;
    cr_assert(redq_consumer_close(c, consumer_closed, &closed) == 0);
    cr_assert(fx_run_until(cond_int_set, &closed, 5000));
}

/* ---- issue 8: *_new failures reach the caller ---------------------------- */

Test(producer, new_failure_is_written_to_errbuf)
{
    redq_producer_options o;
    redq_producer *p = (redq_producer *)&o; /* must stay untouched */
    char buf[256];
    redq_producer_options_init(&o);
    o.errbuf = buf;
    o.errbuf_size = sizeof buf;

    o.url = "redis://default:hunter2";
    cr_assert(redq_producer_new(&p, fx_base(), &o) == REDQ_EINVAL);
    cr_assert(p == (redq_producer *)&o, "out written on failure");
    cr_assert(strstr(buf, "url") != NULL, "errbuf '%s'", buf);
    cr_assert(strstr(buf, "hunter2") == NULL, "errbuf shows the password: '%s'",
              buf);

    o.url = fx_url();
    strcpy(buf, "stale");
    cr_assert(redq_producer_new(&p, NULL, &o) == REDQ_EINVAL);
    cr_assert(strstr(buf, "base") != NULL, "errbuf '%s'", buf);

    /* The consumer's *_new goes through the same path. */
    redq_consumer *c = NULL;
    const char *queues[] = {"q"};
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.errbuf = buf;
    co.errbuf_size = sizeof buf;
    co.on_message = ignore_msg;
    co.url = "redis://u:hunter2@h:99999";
    strcpy(buf, "stale");
    cr_assert(redq_consumer_new(&c, fx_base(), &co, queues, 1) == REDQ_EINVAL);
    cr_assert(strstr(buf, "port") != NULL, "errbuf '%s'", buf);
    cr_assert(strstr(buf, "hunter2") == NULL, "errbuf '%s'", buf);

    /* And a success clears it. */
    fx_tracker *t = fx_tracker_new(1);
    o.url = fx_url();
    strcpy(buf, "stale");
    new_producer(t, &o);
    cr_assert_str_eq(buf, "");
    close_and_wait(t);
}

/* ---- issue 8: edges, stored byte for byte -------------------------------- */

static void raw_produce(fx_tracker *t, const char *q, const void *data,
                        size_t len, size_t seq)
{
    int rc = redq_produce(t->p, q, data, len, (void *)(uintptr_t)(seq + 1));
    cr_assert(rc == 0, "produce %zu bytes to a %zu-byte queue: %s", len,
              strlen(q), redq_err_name(rc));
}

Test(producer, queue_names_up_to_1024_bytes)
{
    fx_tracker *t = fx_tracker_new(8);
    redq_producer_options o;
    static char name[1026];
    const size_t lens[] = {1, 255, 1024};
    opts_for_server(&o);
    t->raw = true;
    new_producer(t, &o);
    for (size_t i = 0; i < 3; i++) {
        memset(name, 'a' + (int)i, lens[i]);
        name[lens[i]] = '\0';
        raw_produce(t, name, "m", 1, i);
    }
    cr_assert(fx_wait_reports(t, 3, 5000));
    cr_assert(t->ok == 3, "%zu of 3 ok (%s)", t->ok, t->last_errstr);
    for (size_t i = 0; i < 3; i++) {
        memset(name, 'a' + (int)i, lens[i]);
        name[lens[i]] = '\0';
        redisReply *r = fx_cmd("LRANGE %b 0 -1", name, lens[i]);
        cr_assert(r->type == REDIS_REPLY_ARRAY && r->elements == 1 &&
                      r->element[0]->len == 1 && r->element[0]->str[0] == 'm',
                  "queue of %zu bytes does not hold the message", lens[i]);
    }

    /* 1025 bytes: refused, and the log says why. */
    memset(name, 'z', 1025);
    name[1025] = '\0';
    cr_assert(redq_produce(t->p, name, "m", 1, NULL) == REDQ_EINVAL);
    cr_assert(t->log_by_code[-REDQ_EINVAL] == 1, "%u EINVAL logs",
              t->log_by_code[-REDQ_EINVAL]);
    cr_assert(strstr(t->log_first[-REDQ_EINVAL], "1025") &&
                  strstr(t->log_first[-REDQ_EINVAL], "1024"),
              "log: %s", t->log_first[-REDQ_EINVAL]);
    cr_assert(redq_produce_delayed(t->p, name, "m", 1, 10, NULL) ==
              REDQ_EINVAL);
    cr_assert(fx_llen(name) == 0);
    close_and_wait(t);
}

Test(producer, payloads_are_stored_byte_for_byte)
{
    static const char resp[] = "*3\r\n$5\r\nLPUSH\r\n$1\r\nq\r\n$1\r\nx\r\n";
    static const char nuls[] = {'\0', 'a', '\0', '\0', '\r', '\n', '\0'};
    static const char json[] = "{\"to\":\"a@b.c\",\"body\":\"hi\"}";
    static char big[70000]; /* bigger than one socket read, with NULs */
    struct {
        const void *p;
        size_t len;
    } m[] = {{"", 0},   {resp, sizeof resp - 1}, {"$-1\r\n", 5},
             {nuls, sizeof nuls}, {json, sizeof json - 1}, {big, sizeof big},
             {"\r\n", 2}, {"-ERR x\r\n", 8}};
    const size_t n = sizeof m / sizeof m[0];
    for (size_t i = 0; i < sizeof big; i++)
        big[i] = (char)(i * 7);

    fx_tracker *t = fx_tracker_new(n);
    redq_producer_options o;
    opts_for_server(&o);
    t->raw = true;
    new_producer(t, &o);
    for (size_t i = 0; i < n; i++)
        raw_produce(t, "q", m[i].p, m[i].len, i);
    cr_assert(fx_wait_reports(t, n, 5000));
    cr_assert(t->ok == n, "%zu of %zu ok (%s)", t->ok, n, t->last_errstr);

    /* LPUSH: the first produced is at the tail. */
    redisReply *r = fx_cmd("LRANGE q 0 -1");
    cr_assert(r->type == REDIS_REPLY_ARRAY && r->elements == n, "%zu stored",
              r->elements);
    for (size_t i = 0; i < n; i++) {
        redisReply *e = r->element[n - 1 - i];
        cr_assert(e->type == REDIS_REPLY_STRING && (size_t)e->len == m[i].len &&
                      memcmp(e->str, m[i].p, m[i].len) == 0,
                  "payload %zu (%zu bytes) stored as %zu different bytes", i,
                  m[i].len, (size_t)e->len);
    }
    close_and_wait(t);
}

/* ---- issue 8: Redis's 512 MiB bulk limit --------------------------------- */

#define MIB ((size_t)1 << 20)

/* Address space for `len` bytes of zeros that costs no memory until read. */
static void *lazy_zeros(size_t len)
{
    void *p = mmap(NULL, len, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS |
                   MAP_NORESERVE, -1, 0);
    cr_assert(p != MAP_FAILED, "mmap %zu bytes", len);
    return p;
}

Test(producer, over_the_bulk_limit_is_refused_up_front)
{
    const size_t limit = 512 * MIB;
    fx_tracker *t = fx_tracker_new(1);
    redq_producer_options o;
    opts_for_server(&o);
    o.max_message_bytes = limit;
    o.max_pending_bytes = 2 * limit;
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000));
    void *big = lazy_zeros(limit + 1);

    cr_assert(redq_produce(t->p, "q", big, limit + 1, NULL) == REDQ_ETOOBIG);
    /* A delayed message carries metadata: exactly 512 MiB of payload no
     * longer fits in one value, and is refused before being encoded. */
    uint64_t t0 = fx_now_us();
    cr_assert(redq_produce_delayed(t->p, "q", big, limit, 1000, NULL) ==
              REDQ_ETOOBIG);
    cr_assert(fx_now_us() - t0 < 500000, "refusing took %llu ms: encoded first?",
              (unsigned long long)(fx_now_us() - t0) / 1000);
    cr_assert(t->log_by_code[-REDQ_ETOOBIG] == 2, "%u ETOOBIG logs",
              t->log_by_code[-REDQ_ETOOBIG]);
    cr_assert(strstr(t->log_first[-REDQ_ETOOBIG], "proto-max-bulk-len") &&
                  strstr(t->log_first[-REDQ_ETOOBIG], "536870913"),
              "log: %s", t->log_first[-REDQ_ETOOBIG]);
    munmap(big, limit + 1);

    redq_producer_stats st = fx_stats(t);
    cr_assert(st.produced == 0 && st.pending_msgs == 0 && st.batches_sent == 0,
              "a refused message was accepted");
    fx_run_for(200);
    st = fx_stats(t);
    cr_assert(st.disconnects == 0 && st.connects == 1,
              "connection redone %llu times", (unsigned long long)st.disconnects);
    close_and_wait(t);
}

/* The one real large payload: exactly Redis's limit goes through, byte for
 * byte (about 2 GiB of memory in all, between client and server). Its own
 * suite for a longer timeout: hiredis moves its output buffer down after
 * each write, which costs seconds at this size (minutes under ASan). */
TestSuite(producer_big, .init = fx_setup, .fini = fx_teardown,
          .timeout = 600);

Test(producer_big, exactly_512_mib_is_stored)
{
    const size_t limit = 512 * MIB;
    fx_tracker *t = fx_tracker_new(1);
    redq_producer_options o;
    opts_for_server(&o);
    o.max_message_bytes = limit;
    o.max_pending_bytes = limit;
    o.command_timeout_ms = 300000;
    o.message_timeout_ms = 0;
    t->raw = true;
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000));
    char *big = malloc(limit);
    cr_assert(big != NULL);
    memset(big, 'a', limit);
    for (size_t i = 0; i < limit; i += 4096)
        big[i] = (char)('A' + (i >> 12) % 26);
    big[limit - 1] = 'Z';
    raw_produce(t, "q", big, limit, 0);
    free(big); /* copied by redq_produce() */
    cr_assert(fx_wait_reports(t, 1, 500000), "no report");
    cr_assert(t->ok == 1, "not stored: %s", t->last_errstr);
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.disconnects == 0, "%llu disconnects",
              (unsigned long long)st.disconnects);
    close_and_wait(t);

    /* Checked where it is: reading 512 MiB back through hiredis's reader
     * would take longer than storing it. Every byte is compared. */
    redisReply *r = fx_cmd(
        "EVAL %s 1 q",
        "local s = redis.call('LINDEX', KEYS[1], 0) "
        "if #s ~= 536870912 then return 'length ' .. #s end "
        "for i = 0, 536870912 - 4096, 4096 do "
        "  local want = string.char(65 + (i / 4096) % 26) .. "
        "               string.rep('a', 4095) "
        "  if i == 536870912 - 4096 then "
        "    want = want:sub(1, 4095) .. 'Z' end "
        "  if s:sub(i + 1, i + 4096) ~= want then return 'at ' .. i end "
        "end return 'ok'");
    cr_assert(r->type == REDIS_REPLY_STRING && strcmp(r->str, "ok") == 0,
              "stored value differs: %s", r->str ? r->str : "(not a string)");
}

/* ---- issue 8: "not applied" errors keep the queue's order ---------------- */

struct ticker {
    fx_tracker *t;
    size_t next, total, per_tick, size;
    struct event *ev;
    int efull;
};

static void tick(evutil_socket_t fd, short what, void *arg)
{
    struct ticker *k = arg;
    struct timeval ms = {0, 1000};
    (void)fd;
    (void)what;
    for (size_t i = 0; i < k->per_tick && k->next < k->total; i++) {
        if (fx_produce(k->t, "q", k->next, k->size) != 0) {
            k->efull++;
            break;
        }
        k->next++;
    }
    if (k->next < k->total)
        event_add(k->ev, &ms);
}

/* Start `script` on a connection of its own without waiting for it. */
static redisContext *side_eval(const char *script)
{
    redisContext *c = redisConnect("127.0.0.1", fx_port());
    int done = 0;
    cr_assert(c != NULL && !c->err, "side connection");
    cr_assert(redisAppendCommand(c, "EVAL %s 0", script) == REDIS_OK);
    while (!done)
        cr_assert(redisBufferWrite(c, &done) == REDIS_OK);
    return c;
}

static void side_done(redisContext *c)
{
    void *r = NULL;
    if (redisGetReply(c, &r) == REDIS_OK)
        freeReplyObject(r);
    redisFree(c);
}

static bool ticker_done(void *arg)
{
    struct ticker *k = arg;
    return k->next == k->total && k->t->reports == k->total;
}

/* A script that keeps the server busy for `ms` milliseconds, then ends. */
static redisContext *side_busy_for(int ms)
{
    char script[256];
    snprintf(script, sizeof script,
             "local function us() local t = redis.call('TIME') "
             "return t[1] * 1000000 + t[2] end "
             "local s = us() while us() - s < %d do end return 1",
             ms * 1000);
    return side_eval(script);
}

typedef struct busy_result {
    size_t stored, disorder, dup;
    unsigned order_logs;
} busy_result;

/*
 * While a script runs past busy-reply-threshold, Redis answers BUSY to
 * every command. A steady stream of messages to one queue meets: a script
 * killed with SCRIPT KILL, then `short_scripts` scripts that end by
 * themselves shortly after the server starts answering BUSY, while it is
 * still reading a pipeline of big batches (the state then clears between
 * two pipelined batches). The queue's list is read back in order.
 */
static busy_result busy_run(size_t max_inflight, size_t size,
                            int short_scripts)
{
    const size_t total = size > 1000 ? 6000 : 30000;
    fx_tracker *t = fx_tracker_new(total);
    redq_producer_options o;
    busy_result res = {0};
    opts_for_server(&o);
    o.batch_max_msgs = 16; /* many batches in the pipeline */
    o.max_inflight_batches = max_inflight;
    o.reconnect_min_ms = 20;
    o.reconnect_max_ms = 100;
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000));
    fx_cmd_ok("CONFIG SET busy-reply-threshold 50");

    struct ticker k = {.t = t, .total = total, .per_tick = 20, .size = size};
    k.ev = event_new(fx_base(), -1, 0, tick, &k);
    tick(-1, 0, &k);
    fx_run_for(150);
    redisContext *s = side_eval("while true do end");
    fx_run_for(400);
    fx_cmd("SCRIPT KILL");
    side_done(s);
    for (int i = 0; i < short_scripts; i++) {
        fx_run_for(100);
        s = side_busy_for(60 + 5 * i);
        fx_run_for(150);
        side_done(s);
    }
    cr_assert(fx_run_until(ticker_done, &k, 60000),
              "%zu produced, %zu reported of %zu", k.next, t->reports, total);
    event_free(k.ev);
    fx_assert_reported(t, 0, total, 0);

    redq_producer_stats st = fx_stats(t);
    cr_assert(st.disconnects > 0,
              "the producer never saw BUSY: the test tested nothing");
    redisReply *r = fx_cmd("LRANGE q 0 -1");
    cr_assert(r->type == REDIS_REPLY_ARRAY);
    size_t n = r->elements, expect = 0;
    char *seen = calloc(total, 1);
    cr_assert(seen != NULL);
    for (size_t i = 0; i < n; i++) {
        redisReply *e = r->element[n - 1 - i];
        size_t seq = strtoul(e->str + 2, NULL, 10);
        if (seq < total && seen[seq]++)
            res.dup++;
        else if (seq != expect)
            res.disorder++;
        if (seq >= expect)
            expect = seq + 1;
    }
    free(seen);
    res.stored = n;
    res.order_logs = t->log_by_code[-REDQ_ESERVER];
    cr_log_info("max_inflight %zu, %zu-byte messages: %zu stored of %zu, %zu "
                "out of order, %zu duplicates, %llu batches resent, "
                "%llu disconnects",
                max_inflight, size, n, total, res.disorder, res.dup,
                (unsigned long long)st.batches_resent,
                (unsigned long long)st.disconnects);
    close_and_wait(t);
    return res;
}

Test(producer, busy_keeps_queue_order, .timeout = 120)
{
    busy_result r = busy_run(32, 60, 1);
    cr_assert(r.stored == 30000 && r.dup == 0 && r.disorder == 0,
              "%zu stored, %zu duplicates, %zu out of order", r.stored, r.dup,
              r.disorder);
}

/* Where the state clears between two pipelined batches, the pipeline may
 * not break the order silently or duplicate: every message once, and a
 * break is logged. With one batch in flight the order is strict. */
Test(producer, busy_clearing_mid_pipeline, .timeout = 180)
{
    busy_result r = busy_run(32, 8192, 4);
    cr_assert(r.stored == 6000 && r.dup == 0,
              "pipelined: %zu stored, %zu duplicates", r.stored, r.dup);
    cr_assert(r.disorder == 0 || r.order_logs > 0,
              "pipelined: %zu out of order and nothing logged", r.disorder);
}

Test(producer, busy_clearing_one_in_flight_is_strict, .timeout = 180)
{
    busy_result r = busy_run(1, 8192, 4);
    cr_assert(r.stored == 6000 && r.dup == 0 && r.disorder == 0,
              "one in flight: %zu stored, %zu duplicates, %zu out of order",
              r.stored, r.dup, r.disorder);
}
