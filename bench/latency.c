/*
 * latency.c: latency mode and the latency figures of every mode.
 *
 * Latency mode is an open loop: messages are due at fixed intervals
 * (--rate), and each one's latency is taken from when it was *due*, not
 * when it was sent, so a stalled sender shows up in the figures instead of
 * hiding (coordinated omission). Its event base uses a precise timer
 * (run.c), and the largest lag between due and sent is reported.
 */
#include "bench.h"

/* Latency mode: send every message that is due by now, each stamped with
 * the time it was due, then sleep until the next one is. */
void bench_latency_pump_cb(evutil_socket_t fd, short what, void *arg)
{
    bench_run *r = arg;
    uint64_t now = bench_now_ns(), due = 0;
    (void)fd;
    (void)what;
    if (r->phase != BENCH_PH_MEASURE || r->failed || r->producing_done)
        return;
    r->waiting_ready = 0;
    if (r->t0 == 0)
        r->t0 = now;
    while (r->produced < r->want) {
        int rc;
        due = r->t0 + (uint64_t)((double)r->produced * r->interval_ns);
        if (due > now)
            break;
        if (now - due > r->max_lag_ns)
            r->max_lag_ns = now - due;
        bench_stamp(r->payload, r->produced, due);
        rc = redq_produce(r->p, r->pqueue, r->payload, r->payload_len, NULL);
        if (rc == REDQ_EFULL) {
            /* Still due: its latency keeps counting from `due`. */
            r->waiting_ready = 1;
            return;
        }
        if (rc < 0) {
            bench_run_fail(r, "redq_produce: %s (%s)", redq_strerror(rc),
                           redq_err_name(rc));
            return;
        }
        r->produced++;
    }
    if (r->produced >= r->want) {
        bench_mark_producing_done(r);
        return;
    }
    {
        uint64_t wait = due - now;
        struct timeval tv;
        tv.tv_sec = (time_t)(wait / 1000000000u);
        tv.tv_usec = (suseconds_t)(wait % 1000000000u / 1000u);
        evtimer_add(r->ev_pump, &tv);
    }
}

const char *bench_latency_what(int mode)
{
    switch (mode) {
    case BENCH_PRODUCE:
        return "redq_produce() call -> report";
    case BENCH_E2E:
        return "redq_produce() call -> consumer handler";
    case BENCH_LATENCY:
        return "scheduled send time -> consumer handler";
    default:
        return NULL;
    }
}

json_t *bench_latency_json(const bench_hist *h)
{
    json_t *o;
    if (h->n == 0)
        return json_null();
    o = json_object();
    json_object_set_new(o, "p50", json_real((double)bench_hist_quantile(h, 0.50) / 1e3));
    json_object_set_new(o, "p90", json_real((double)bench_hist_quantile(h, 0.90) / 1e3));
    json_object_set_new(o, "p99", json_real((double)bench_hist_quantile(h, 0.99) / 1e3));
    json_object_set_new(o, "p999", json_real((double)bench_hist_quantile(h, 0.999) / 1e3));
    json_object_set_new(o, "max", json_real((double)h->max / 1e3));
    json_object_set_new(o, "samples", json_integer((json_int_t)h->n));
    return o;
}

double bench_latency_max_lag(const bench_result *res, size_t n)
{
    double lag = 0;
    size_t k;
    for (k = 0; k < n; k++)
        if (res[k].max_lag_us > lag)
            lag = res[k].max_lag_us;
    return lag;
}
