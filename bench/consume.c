/*
 * consume.c: the consumer side. The handler that checks every message
 * against the bitmap of sequence numbers (a lost or duplicated message
 * fails the run) and acks it, used by consume, e2e (at-most-once, or
 * at-least-once with --reliable: the delivery mode is set in
 * bench_fill_options) and latency modes; and consume mode's set-up: a
 * pre-filled staging list, renamed onto the queue once the pool is
 * connected so that only consuming is timed.
 */
#include "bench.h"

#include <stdio.h>

/* The handler of consume, e2e and latency modes. */
void bench_on_message(redq_consumer *c, redq_message *msg, void *user)
{
    bench_run *r = user;
    size_t len = redq_msg_len(msg);
    uint64_t seq, ts, t = bench_now_ns(), limit;
    int rc;
    (void)c;

    if (r->phase != BENCH_PH_MEASURE) {
        /* After the run: nothing should be left to pop. */
        r->unexpected++;
        redq_ack(msg);
        return;
    }
    if (len != r->payload_len) {
        redq_ack(msg);
        bench_run_fail(r, "consumed a %zu-byte message; expected %zu", len,
                       r->payload_len);
        return;
    }
    bench_unstamp(redq_msg_data(msg), &seq, &ts);
    limit = r->mode == BENCH_CONSUME ? r->want : r->produced;
    if (seq >= limit) {
        redq_ack(msg);
        bench_run_fail(r, "consumed message %llu, which was never produced",
                       (unsigned long long)seq);
        return;
    }
    rc = bench_bm_test_set(r->seen, seq);
    if (rc != 0) {
        redq_ack(msg);
        if (rc > 0)
            bench_run_fail(r, "message %llu consumed twice", (unsigned long long)seq);
        else
            bench_run_fail(r, "out of memory");
        return;
    }
    if (r->lat != NULL && r->mode != BENCH_CONSUME)
        bench_hist_add(r->lat, t - ts);
    r->consumed++;
    r->t_last = t;
    rc = redq_ack(msg);
    if (rc != 0) {
        bench_run_fail(r, "redq_ack: %s", redq_strerror(rc));
        return;
    }
    bench_check_done(r);
}


/* Pre-fill `key` with n stamped messages through a redq producer (not
 * timed). 0 or -1 with err. */
int bench_consume_fill(const bench_config *cfg, const char *key, uint64_t n,
                       char *err, size_t errlen)
{
    bench_run r;
    redq_producer_options o;
    bench_bitmap none = {NULL, 0};
    int rc = -1;

    if (bench_run_init(&r, cfg, BENCH_PRODUCE, 1) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    r.pqueue = key;
    r.want = n;
    r.seen = &none;
    r.want_producer = 1;
    bench_fill_options(&o, NULL, cfg, &r);
    if ((rc = redq_producer_new(&r.p, r.base, &o)) != 0) {
        snprintf(err, errlen, "redq_producer_new: %s", redq_strerror(rc));
        rc = -1;
        goto out;
    }
    rc = -1;
    if (bench_run_connect(&r) == 0) {
        r.phase = BENCH_PH_MEASURE;
        bench_schedule_pump(&r);
        bench_run_loop(&r);
    }
    bench_run_teardown(&r);
    if (r.failed)
        snprintf(err, errlen, "filling the queue: %s", r.err);
    else if (r.reported != n)
        snprintf(err, errlen, "filling the queue: %llu of %llu reported",
                 (unsigned long long)r.reported, (unsigned long long)n);
    else
        rc = 0;
out:
    bench_run_free(&r);
    return rc;
}

int bench_consume_start(redisContext *sc, const char *stage, const char *queue,
                        char *err, size_t errlen)
{
    /* The pool is connected and blocked on the empty queue. RENAME
     * hands it the whole pre-filled list at once (Redis wakes clients
     * blocked on the new key), so the clock covers consuming only. */
    const char *argv[3] = {"RENAME", stage, queue};
    redisReply *rep = bench_sync_cmd(sc, err, errlen, 3, argv);
    if (rep == NULL)
        return -1;
    freeReplyObject(rep);
    return 0;
}
