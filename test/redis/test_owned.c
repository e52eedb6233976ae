/*
 * redq_produce_owned(): the buffer handed over is released by its free_cb
 * exactly once per accepted message, after the message's report callback
 * returned, whatever the outcome (stored, refused by Redis, timed out,
 * closed, resent after a restart); never on an error return. And what
 * reaches Redis is byte for byte what was handed over, in call order, also
 * when owned (spliced or small) and copied messages share one batch.
 *
 * Payloads are not fx_payload's text: every byte depends on (seq, offset)
 * and they contain CR, LF and NUL, so a splice at a wrong offset or of a
 * wrong length shows up as a different value (or a protocol error), not as
 * a plausible one. A copy of each is kept to compare LRANGE against, and
 * the owned buffer itself is freed by the free callback: ASan turns a use
 * after that free (a resend from a released buffer) into a failure.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "fixture.h"

TestSuite(owned, .init = fx_setup, .fini = fx_teardown, .timeout = 90);

#define MAXN 4096

/* Per seq: what was handed over, how it went. Callbacks only record. */
static struct {
    char *expect[MAXN]; /* a copy of the payload */
    size_t len[MAXN];
    void *buf[MAXN];    /* the owned buffer (NULL: copied message) */
    unsigned reports[MAXN];
    int status[MAXN];
    unsigned frees[MAXN];
    size_t nfree;
    size_t violations;
    char first[256];
    fx_tracker *t;
} ow;

static void violation(size_t seq, const char *what)
{
    if (ow.violations++ == 0)
        snprintf(ow.first, sizeof ow.first, "seq %zu: %s", seq, what);
}

static void fill(char *p, size_t len, size_t seq)
{
    for (size_t i = 0; i < len; i++) {
        uint32_t x = (uint32_t)(seq * 2654435761u + i * 40503u);
        p[i] = (char)(x >> 13);
    }
    /* The bytes RESP is made of, in the middle of the data. */
    if (len >= 16)
        memcpy(p + len / 2, "\r\n$\0*\r\n", 7);
}

static void on_free(void *payload, void *user)
{
    size_t seq = (size_t)(uintptr_t)user - 1;
    if (seq >= MAXN) {
        violation(seq, "free with an unknown user pointer");
        return;
    }
    if (payload != ow.buf[seq])
        violation(seq, "free_cb got another pointer");
    if (ow.frees[seq]++ != 0)
        violation(seq, "freed twice");
    if (ow.reports[seq] == 0)
        violation(seq, "freed before its report");
    if (ow.t != NULL && ow.t->closed)
        violation(seq, "freed after the close callback");
    ow.nfree++;
    free(payload);
}

/* Runs after the fixture's own checks of each report. */
static void on_report(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    size_t seq = (size_t)(uintptr_t)r->opaque - 1;
    (void)t;
    (void)p;
    if (seq >= MAXN || ow.expect[seq] == NULL) {
        violation(seq, "report for an unknown seq");
        return;
    }
    ow.reports[seq]++;
    ow.status[seq] = r->status;
    if (ow.buf[seq] != NULL && ow.frees[seq] != 0)
        violation(seq, "report after its free");
    if (ow.buf[seq] != NULL && r->payload != ow.buf[seq])
        violation(seq,
                  "the report's payload is not the owned buffer");
    if (r->len != ow.len[seq] ||
        (r->len > 0 && memcmp(r->payload, ow.expect[seq], r->len) != 0))
        violation(seq, "the report's bytes differ");
}

static fx_tracker *new_tracker(redq_producer_options *o)
{
    fx_tracker *t = fx_tracker_new(MAXN);
    t->raw = true; /* payloads are ours: on_report checks them */
    t->on_report = on_report;
    t->hook_arg = NULL;
    ow.t = t;
    int rc = fx_producer_new(t, o);
    cr_assert(rc == 0, "redq_producer_new: %s", redq_err_name(rc));
    return t;
}

static void opts_for_server(redq_producer_options *o)
{
    redq_producer_options_init(o);
    o->url = fx_url();
}

/* Hand message seq (len bytes) over to redq, owned; returns the result. On
 * an error the buffer is ours again and freed here. */
static int produce_owned(redq_producer *p, const char *q, size_t seq,
                         size_t len)
{
    cr_assert(seq < MAXN && ow.expect[seq] == NULL);
    char *b = malloc(len ? len : 1);
    ow.expect[seq] = malloc(len ? len : 1);
    cr_assert(b && ow.expect[seq]);
    fill(b, len, seq);
    memcpy(ow.expect[seq], b, len);
    ow.len[seq] = len;
    ow.buf[seq] = b;
    int rc = redq_produce_owned(p, q, b, len, on_free,
                                (void *)(uintptr_t)(seq + 1),
                                (void *)(uintptr_t)(seq + 1));
    if (rc != 0) {
        free(b);
        ow.buf[seq] = NULL;
    }
    return rc;
}

static int produce_copied(redq_producer *p, const char *q, size_t seq,
                          size_t len)
{
    cr_assert(seq < MAXN && ow.expect[seq] == NULL);
    char *b = malloc(len ? len : 1);
    cr_assert(b);
    fill(b, len, seq);
    ow.expect[seq] = b;
    ow.len[seq] = len;
    return redq_produce(p, q, b, len, (void *)(uintptr_t)(seq + 1));
}

static bool cond_nfree(void *arg)
{
    return ow.nfree >= *(size_t *)arg;
}

static bool cond_connected(void *arg)
{
    redq_producer_stats st;
    redq_producer_get_stats(((fx_tracker *)arg)->p, &st);
    return st.connected;
}

/* Every seq in [from, to): one report with `status` and, when owned, one
 * free; no violation anywhere. */
static void assert_outcome(size_t from, size_t to, int status)
{
    cr_assert(ow.violations == 0, "%zu violations, first: %s", ow.violations,
              ow.first);
    cr_assert(ow.t->bad == 0, "tracker: %s", ow.t->bad_msg);
    for (size_t s = from; s < to; s++) {
        cr_assert(ow.reports[s] == 1, "seq %zu: %u reports", s, ow.reports[s]);
        cr_assert(ow.status[s] == status, "seq %zu: status %s, expected %s", s,
                  redq_err_name(ow.status[s]), redq_err_name(status));
        if (ow.buf[s] != NULL)
            cr_assert(ow.frees[s] == 1, "seq %zu: freed %u times", s,
                      ow.frees[s]);
    }
}

/* `queue` holds exactly seqs[0..n-1] in produce order, byte for byte. */
static void assert_list(const char *queue, const size_t *seqs, size_t n)
{
    redisReply *r = fx_cmd("LRANGE %s 0 -1", queue);
    cr_assert(r->type == REDIS_REPLY_ARRAY);
    cr_assert(r->elements == n, "%s has %zu elements, expected %zu", queue,
              r->elements, n);
    for (size_t i = 0; i < n; i++) {
        const redisReply *e = r->element[n - 1 - i]; /* LPUSH: tail first */
        size_t s = seqs[i];
        cr_assert(e->type == REDIS_REPLY_STRING && (size_t)e->len == ow.len[s] &&
                      memcmp(e->str, ow.expect[s], ow.len[s]) == 0,
                  "%s: message %zu in produce order (%zu bytes) is not seq "
                  "%zu (%zu bytes) byte for byte",
                  queue, i, (size_t)e->len, s, ow.len[s]);
    }
}

static void assert_list_range(const char *queue, size_t from, size_t to)
{
    static size_t seqs[MAXN];
    for (size_t s = from; s < to; s++)
        seqs[s - from] = s;
    assert_list(queue, seqs, to - from);
}

static void close_and_wait(fx_tracker *t)
{
    cr_assert(fx_close(t) == 0);
    cr_assert(fx_wait_closed(t, 5000), "no close callback within 5 s");
}

static pid_t server_pid(void)
{
    redisReply *r = fx_cmd_ok("INFO server");
    const char *s = strstr(r->str, "process_id:");
    cr_assert(s != NULL, "INFO server without process_id");
    return (pid_t)strtol(s + 11, NULL, 10);
}

static void wait_frees(size_t n, int ms)
{
    cr_assert(fx_run_until(cond_nfree, &n, ms), "%zu of %zu buffers freed",
              ow.nfree, n);
}

/* ---- stored ------------------------------------------------------------- */

/* One loop iteration: copied, small owned (copied into the batch) and large
 * owned (spliced) messages interleaved, including empty ones and spliced
 * ones back to back, all in one LPUSH. */
Test(owned, mixed_in_one_batch_keep_order_and_bytes)
{
    redq_producer_options o;
    opts_for_server(&o);
    o.batch_max_bytes = 4 * 1024 * 1024;
    fx_tracker *t = new_tracker(&o);
    cr_assert(fx_run_until(cond_connected, t, 5000));

    static const size_t sizes[] = {0, 1, 511, 512, 513, 4096, 70000};
    const size_t n = 300;
    size_t owned = 0;
    for (size_t s = 0; s < n; s++) {
        size_t len = sizes[(s * 7 + s / 5) % 7];
        int rc;
        if (s % 4 == 3) {
            rc = produce_copied(t->p, "q", s, len);
        } else {
            rc = produce_owned(t->p, "q", s, len);
            owned++;
        }
        cr_assert(rc == 0, "seq %zu: %s", s, redq_err_name(rc));
    }
    cr_assert(fx_wait_reports(t, n, 10000), "%zu of %zu reports", t->reports,
              n);
    wait_frees(owned, 2000);
    assert_outcome(0, n, 0);
    assert_list_range("q", 0, n);
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.batches_sent <= 2,
              "%llu batches: the mix was not batched together",
              (unsigned long long)st.batches_sent);
    cr_assert(st.pending_bytes == 0 && st.pending_msgs == 0);
    close_and_wait(t);
    cr_assert(ow.nfree == owned, "%zu frees for %zu owned", ow.nfree, owned);
}

/* The bench's size: one copy of 1 MiB goes to Redis intact, and the
 * batch_max_bytes cut treats it as the copied path does (a message that
 * fills a batch is sent alone). */
Test(owned, one_mebibyte_messages)
{
    redq_producer_options o;
    opts_for_server(&o);
    fx_tracker *t = new_tracker(&o);
    for (size_t s = 0; s < 6; s++) {
        int rc = s % 2 ? produce_copied(t->p, "big", s, 1048576)
                       : produce_owned(t->p, "big", s, 1048576);
        cr_assert(rc == 0, "seq %zu: %s", s, redq_err_name(rc));
    }
    cr_assert(fx_wait_reports(t, 6, 20000), "%zu of 6 reports", t->reports);
    wait_frees(3, 2000);
    assert_outcome(0, 6, 0);
    assert_list_range("big", 0, 6);
    cr_assert(fx_stats(t).batches_sent == 6, "%llu batches for 6 x 1 MiB",
              (unsigned long long)fx_stats(t).batches_sent);
}

/* No report callback: the buffers are still released, once each. */
static unsigned closed_plain;
static void plain_closed(void *user)
{
    (void)user;
    closed_plain++;
}

static bool cond_plain_closed(void *arg)
{
    (void)arg;
    return closed_plain == 1;
}

Test(owned, released_without_a_report_callback)
{
    redq_producer_options o;
    opts_for_server(&o);
    redq_producer *p;
    cr_assert(redq_producer_new(&p, fx_base(), &o) == 0);
    for (size_t s = 0; s < 20; s++) {
        /* on_free checks "report before free": there is no report here. */
        ow.reports[s] = 1;
        cr_assert(produce_owned(p, "q", s, s % 2 ? 2000 : 10) == 0);
    }
    wait_frees(20, 5000);
    cr_assert(ow.violations == 0, "%s", ow.first);
    for (size_t s = 0; s < 20; s++)
        cr_assert(ow.frees[s] == 1, "seq %zu freed %u times", s, ow.frees[s]);
    assert_list_range("q", 0, 20);
    cr_assert(redq_producer_close(p, plain_closed, NULL) == 0);
    cr_assert(fx_run_until(cond_plain_closed, NULL, 5000));
    cr_assert(ow.nfree == 20);
}

/* ---- failed ------------------------------------------------------------- */

Test(owned, refused_by_redis_is_released)
{
    fx_cmd_ok("SET q x");
    redq_producer_options o;
    opts_for_server(&o);
    fx_tracker *t = new_tracker(&o);
    cr_assert(produce_owned(t->p, "q", 0, 5000) == 0);
    cr_assert(produce_owned(t->p, "q", 1, 10) == 0);
    cr_assert(produce_owned(t->p, "q2", 2, 5000) == 0);
    cr_assert(fx_wait_reports(t, 3, 5000), "%zu of 3 reports", t->reports);
    wait_frees(3, 1000);
    assert_outcome(0, 2, REDQ_EWRONGTYPE);
    assert_outcome(2, 3, 0);
    assert_list_range("q2", 2, 3);
}

/* A stopped server (SIGSTOP: the connection stays open, nothing answers):
 * the written batch and the ones behind it time out, each buffer is
 * released after its ETIMEDOUT report; once the server runs again the late
 * reply of the timed-out batch is read without touching the buffers. */
Test(owned, timed_out_against_a_stopped_server_is_released)
{
    redq_producer_options o;
    opts_for_server(&o);
    o.message_timeout_ms = 300;
    o.command_timeout_ms = 20000; /* the message times out, not the conn */
    o.batch_max_msgs = 4;
    fx_tracker *t = new_tracker(&o);
    cr_assert(fx_run_until(cond_connected, t, 5000));
    pid_t pid = server_pid();
    cr_assert(kill(pid, SIGSTOP) == 0);
    for (size_t s = 0; s < 12; s++)
        cr_assert(produce_owned(t->p, "q", s, s % 3 ? 3000 : 100) == 0);
    bool got = fx_wait_reports(t, 12, 5000);
    kill(pid, SIGCONT);
    cr_assert(got, "%zu of 12 reports", t->reports);
    wait_frees(12, 1000);
    assert_outcome(0, 12, REDQ_ETIMEDOUT);
    /* The server answers the old batch now; a new message still works. */
    cr_assert(produce_owned(t->p, "q2", 12, 4000) == 0);
    cr_assert(fx_wait_reports(t, 13, 5000));
    wait_frees(13, 1000);
    assert_outcome(12, 13, 0);
    close_and_wait(t);
    cr_assert(ow.nfree == 13);
}

/* Close with messages in every state: written and unanswered (the server
 * is paused for writes), sealed behind the pipeline limit, and open. Each
 * is reported REDQ_ECLOSED and released before the close callback. */
Test(owned, close_with_messages_pending_releases_each)
{
    redq_producer_options o;
    opts_for_server(&o);
    o.batch_max_msgs = 3;
    o.max_inflight_batches = 1;
    o.linger_us = 5000000;
    o.adaptive = 0;
    fx_tracker *t = new_tracker(&o);
    cr_assert(fx_run_until(cond_connected, t, 5000));
    fx_cmd_ok("CLIENT PAUSE 5000 WRITE");
    for (size_t s = 0; s < 11; s++)
        cr_assert(produce_owned(t->p, "q", s, s % 2 ? 1500 : 20) == 0);
    fx_run_for(100);
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.inflight_batches == 1 && st.pending_msgs == 11,
              "%zu in flight, %zu pending", st.inflight_batches,
              st.pending_msgs);
    cr_assert(ow.nfree == 0, "%zu freed before any report", ow.nfree);
    close_and_wait(t);
    fx_cmd_ok("CLIENT UNPAUSE");
    assert_outcome(0, 11, REDQ_ECLOSED);
    cr_assert(ow.nfree == 11, "%zu of 11 freed by the close callback",
              ow.nfree);
}

/* The batch is written, the server dies with it unanswered, a new server
 * comes up on the same port: the batch is built again from the owned
 * buffers (they must still be alive) and stored once, in order. */
Test(owned, resent_after_a_restart_then_released)
{
    redq_producer_options o;
    opts_for_server(&o);
    o.reconnect_min_ms = 50;
    o.reconnect_max_ms = 200;
    o.message_timeout_ms = 30000;
    fx_tracker *t = new_tracker(&o);
    cr_assert(fx_run_until(cond_connected, t, 5000));
    fx_cmd_ok("CLIENT PAUSE 10000 WRITE");
    for (size_t s = 0; s < 8; s++) {
        int rc = s == 5 ? produce_copied(t->p, "q", s, 3000)
                        : produce_owned(t->p, "q", s, s % 2 ? 70000 : 30);
        cr_assert(rc == 0);
    }
    fx_run_for(100);
    cr_assert(fx_stats(t).inflight_batches == 1);
    fx_server_stop();
    fx_run_for(100);
    cr_assert(t->reports == 0 && ow.nfree == 0,
              "%zu reports, %zu freed while the outcome is unknown",
              t->reports, ow.nfree);
    fx_server_restart();
    cr_assert(fx_wait_reports(t, 8, 15000), "%zu of 8 reports", t->reports);
    wait_frees(7, 1000);
    assert_outcome(0, 8, 0);
    assert_list_range("q", 0, 8);
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.batches_resent >= 1, "nothing was resent");
}

/* ---- refused: ownership stays with the caller ----------------------------- */

static int refuse_owned(redq_producer *p, const char *q, void *buf, size_t len)
{
    return redq_produce_owned(p, q, buf, len, on_free,
                              (void *)(uintptr_t)(MAXN - 1 + 1), NULL);
}

Test(owned, error_returns_never_free)
{
    redq_producer_options o;
    opts_for_server(&o);
    o.max_message_bytes = 1000;
    o.max_pending_msgs = 2;
    fx_tracker *t = new_tracker(&o);
    char *buf = malloc(2000);
    cr_assert(buf);
    memset(buf, 'a', 2000);

    cr_assert(refuse_owned(NULL, "q", buf, 10) == REDQ_EINVAL);
    cr_assert(refuse_owned(t->p, NULL, buf, 10) == REDQ_EINVAL);
    cr_assert(refuse_owned(t->p, "", buf, 10) == REDQ_EINVAL);
    cr_assert(refuse_owned(t->p, "q", NULL, 10) == REDQ_EINVAL);
    cr_assert(refuse_owned(t->p, "q", buf, 1001) == REDQ_ETOOBIG);
    cr_assert(produce_owned(t->p, "q", 0, 600) == 0);
    cr_assert(produce_owned(t->p, "q", 1, 600) == 0);
    cr_assert(refuse_owned(t->p, "q", buf, 600) == REDQ_EFULL);
    cr_assert(fx_wait_reports(t, 2, 5000));
    wait_frees(2, 1000);
    /* Between close and its callback the handle is still valid. */
    cr_assert(fx_close(t) == 0);
    cr_assert(refuse_owned(t->p, "q", buf, 10) == REDQ_ECLOSED);
    cr_assert(fx_wait_closed(t, 5000));
    fx_run_for(50);
    cr_assert(ow.frees[MAXN - 1] == 0, "a refused buffer was freed");
    cr_assert(ow.nfree == 2, "%zu frees for 2 accepted", ow.nfree);
    assert_outcome(0, 2, 0);
    /* Still ours, untouched. */
    for (size_t i = 0; i < 2000; i++)
        cr_assert(buf[i] == 'a');
    free(buf);
}
