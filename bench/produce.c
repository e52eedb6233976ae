/*
 * produce.c: the producer side of every mode that produces (produce, e2e,
 * latency, memory, and consume mode's untimed pre-fill): pumping stamped
 * messages into redq_produce() in chunks, waiting out REDQ_EFULL, and
 * checking each report. Latency mode's scheduled sender is in
 * latency.c; it shares the reports and bench_mark_producing_done().
 */
#include "bench.h"

#include <stdlib.h>
#include <string.h>

/* Messages produced per loop iteration at most. One callback filling the
 * whole window (100000 by default) before the loop writes anything would
 * serialise producing and sending; a few thousand keeps both going. */
#define PRODUCE_CHUNK 4096

void bench_mark_producing_done(bench_run *r)
{
    if (r->producing_done)
        return;
    r->producing_done = 1;
    r->want = r->produced;
    if (r->mode == BENCH_MEMORY && !r->fill)
        bench_memory_produced(r);
    bench_check_done(r);
}


/*
 * Owned runs hand redq a buffer per message. They come from a pool that the
 * free callback refills, as in an application that recycles its buffers:
 * a new buffer is made (and filled) only while the pool is empty, so in the
 * steady state neither run writes the payload except its 16-byte stamp, and
 * the runs differ only in what the library does with the bytes.
 */
void bench_owned_free(void *payload, void *user)
{
    bench_run *r = user;
    if (r->npool == r->poolcap) {
        size_t ncap = r->poolcap ? 2 * r->poolcap : 64;
        char **n = realloc(r->pool, ncap * sizeof *n);
        if (n == NULL) {
            free(payload);
            return;
        }
        r->pool = n;
        r->poolcap = ncap;
    }
    r->pool[r->npool++] = payload;
}

static int produce_one(bench_run *r, uint64_t t)
{
    char *buf;
    int rc;
    if (!r->cfg->owned_run) {
        bench_stamp(r->payload, r->produced, t);
        return redq_produce(r->p, r->pqueue, r->payload, r->payload_len, NULL);
    }
    if (r->npool > 0) {
        buf = r->pool[--r->npool];
    } else {
        buf = malloc(r->payload_len);
        if (buf == NULL)
            return REDQ_ENOMEM;
        memset(buf, 'x', r->payload_len);
    }
    bench_stamp(buf, r->produced, t);
    rc = redq_produce_owned(r->p, r->pqueue, buf, r->payload_len,
                            bench_owned_free, r, NULL);
    if (rc != 0)
        bench_owned_free(buf, r); /* still ours: back to the pool */
    return rc;
}

/* Produce up to PRODUCE_CHUNK messages, then let the loop run. */
void bench_pump_cb(evutil_socket_t fd, short what, void *arg)
{
    bench_run *r = arg;
    int i;
    (void)fd;
    (void)what;
    if (r->phase != BENCH_PH_MEASURE || r->failed || r->producing_done)
        return;
    r->waiting_ready = 0;
    for (i = 0; i < PRODUCE_CHUNK; i++) {
        uint64_t t = bench_now_ns();
        int rc;
        if (r->t0 == 0) {
            r->t0 = t;
            r->deadline_ns = t + (uint64_t)(r->cfg->seconds * 1e9);
        }
        if (r->open_ended ? t >= r->deadline_ns : r->produced >= r->want) {
            bench_mark_producing_done(r);
            return;
        }
        rc = produce_one(r, t);
        if (rc == REDQ_EFULL) {
            r->waiting_ready = 1; /* on_ready pumps again */
            return;
        }
        if (rc < 0) {
            bench_run_fail(r, "%s: %s (%s)",
                           r->cfg->owned_run ? "redq_produce_owned"
                                             : "redq_produce",
                           redq_strerror(rc),
                           redq_err_name(rc));
            return;
        }
        r->produced++;
    }
    bench_schedule_pump(r);
}


void bench_on_ready(redq_producer *p, void *user)
{
    bench_run *r = user;
    (void)p;
    if (r->waiting_ready)
        bench_schedule_pump(r);
}

void bench_on_report(redq_producer *p, const redq_report *rep, void *user)
{
    bench_run *r = user;
    uint64_t seq, ts, t;
    (void)p;
    if (r->phase == BENCH_PH_TEARDOWN)
        return; /* REDQ_ECLOSED reports of a run that failed already */
    if (rep->status != 0) {
        bench_run_fail(r, "report failed: %s (%s)",
                       rep->errstr ? rep->errstr : redq_strerror(rep->status),
                       redq_err_name(rep->status));
        return;
    }
    r->reported++;
    if (r->mode == BENCH_PRODUCE && !r->fill) {
        t = bench_now_ns();
        r->t_last = t;
        if (rep->len != r->payload_len) {
            bench_run_fail(r, "report for a %zu-byte message; sent %zu", rep->len,
                           r->payload_len);
            return;
        }
        bench_unstamp(rep->payload, &seq, &ts);
        if (seq >= r->produced) {
            bench_run_fail(r, "report for message %llu, never produced",
                           (unsigned long long)seq);
            return;
        }
        switch (bench_bm_test_set(r->seen, seq)) {
        case 0:
            break;
        case 1:
            bench_run_fail(r, "second report for message %llu", (unsigned long long)seq);
            return;
        default:
            bench_run_fail(r, "out of memory");
            return;
        }
        if (r->lat != NULL)
            bench_hist_add(r->lat, t - ts);
    } else if (r->mode == BENCH_MEMORY) {
        r->t_last = bench_now_ns();
    } else if (r->reported > r->consumed &&
               r->reported - r->consumed > r->max_backlog) {
        r->max_backlog = r->reported - r->consumed;
    }
    bench_check_done(r);
}
