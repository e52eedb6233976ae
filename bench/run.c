/*
 * run.c: one run of a mode, whatever the mode. It owns the event base and
 * the redq handles of the run, the connect phase, the watchdog (a run with
 * no progress fails instead of hanging), the progress line, signals and the
 * orderly teardown, and bench_once(), which sets a run up, measures it and
 * checks afterwards that the server holds what was counted.
 *
 * What a mode does during the run lives in its own file (produce.c,
 * consume.c, latency.c, idle.c, memory.c); this file calls into them at
 * the points where the modes differ.
 */
#include "bench.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A run with no progress for this long has lost something: fail it. */
#define STALL_SECONDS 15
/* Handles must be connected and ready within this. */
#define CONNECT_SECONDS 10

/* ------------------------------------------------------------------------ */
/* one run                                                                   */
/* ------------------------------------------------------------------------ */

void bench_run_fail(bench_run *r, const char *fmt, ...)
{
    va_list ap;
    if (!r->failed) {
        va_start(ap, fmt);
        vsnprintf(r->err, sizeof r->err, fmt, ap);
        va_end(ap);
        r->failed = 1;
    }
    if (r->phase != BENCH_PH_TEARDOWN)
        event_base_loopbreak(r->base);
}

static void clear_progress(const bench_run *r)
{
    if (r->tty)
        fputs("\r\033[K", stderr);
}

static void on_log(int level, int code, const char *msg, void *user)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    bench_run *r = user;
    snprintf(r->last_log, sizeof r->last_log, "%s", msg);
    clear_progress(r);
    fprintf(stderr, "redq %s: %s%s%s\n",
            level >= 0 && level <= 3 ? names[level] : "?", msg,
            code < 0 ? " " : "", code < 0 ? redq_err_name(code) : "");
}

void bench_schedule_pump(bench_run *r)
{
    static const struct timeval zero = {0, 0};
    evtimer_add(r->ev_pump, &zero);
}

void bench_check_done(bench_run *r)
{
    int done = 0;
    if (r->phase != BENCH_PH_MEASURE || r->failed)
        return;
    switch (r->mode) {
    case BENCH_PRODUCE:
        done = r->producing_done && r->reported == r->produced;
        break;
    case BENCH_MEMORY:
        done = r->producing_done && r->snap_taken && r->reported == r->produced;
        break;
    case BENCH_CONSUME:
        done = r->consumed == r->want;
        break;
    case BENCH_E2E:
    case BENCH_LATENCY:
        done = r->producing_done && r->reported == r->produced &&
               r->consumed == r->produced;
        break;
    case BENCH_IDLE:
        done = r->idle_over;
        break;
    default:
        break;
    }
    if (done)
        event_base_loopbreak(r->base);
}

/* Connect phase: leave the loop once every handle is ready. */
static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    bench_run *r = arg;
    int ready = 1;
    (void)fd;
    (void)what;
    if (r->want_producer) {
        redq_producer_stats st;
        redq_producer_get_stats(r->p, &st);
        ready = ready && st.connected;
    }
    if (r->want_consumer) {
        redq_consumer_stats st;
        redq_consumer_get_stats(r->c, &st);
        /* >=: a partitioned queue gives each partition a connection of its
         * own, whatever the pool. */
        ready = ready && st.connected >= r->cfg->pool;
    }
    if (ready) {
        event_del(r->ev_poll);
        event_base_loopbreak(r->base);
    } else if (bench_now_ns() > r->connect_deadline) {
        bench_run_fail(r, "not connected to %s within %d s%s%s", r->cfg->url,
                       CONNECT_SECONDS, r->last_log[0] ? ": " : "", r->last_log);
    }
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    bench_run *r = arg;
    (void)fd;
    (void)what;
    if (r->mode == BENCH_MEMORY)
        bench_memory_timeout(r);
    else if (r->mode == BENCH_IDLE)
        bench_idle_timeout(r);
}

static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
    bench_run *r = arg;
    uint64_t t = bench_now_ns(), count = r->produced + r->reported + r->consumed;
    (void)fd;
    (void)what;
    if (bench_signal) {
        bench_run_fail(r, "interrupted");
        return;
    }
    if (count != r->wd_count) {
        r->wd_count = count;
        r->wd_ns = t;
    } else if (r->phase == BENCH_PH_MEASURE && !r->snap_taken &&
               r->mode == BENCH_MEMORY && r->producing_done) {
        r->wd_ns = t; /* paused on purpose */
    } else if (t - r->wd_ns > (uint64_t)STALL_SECONDS * 1000000000u &&
               r->producing_done && r->reported == r->produced &&
               r->consumed < r->produced) {
        bench_run_fail(r, "%llu of %llu acknowledged messages never reached the consumer "
                          "(nothing for %d s): lost",
                       (unsigned long long)(r->produced - r->consumed),
                       (unsigned long long)r->produced, STALL_SECONDS);
        return;
    } else if (t - r->wd_ns > (uint64_t)STALL_SECONDS * 1000000000u) {
        bench_run_fail(r, "no progress for %d s: produced %llu, reported %llu, consumed %llu%s%s",
                       STALL_SECONDS, (unsigned long long)r->produced,
                       (unsigned long long)r->reported,
                       (unsigned long long)r->consumed, r->last_log[0] ? "; last log: " : "",
                       r->last_log);
        return;
    }
    if (r->tty && r->phase == BENCH_PH_MEASURE && r->t0 != 0) {
        double el = (double)(t - r->t0) / 1e9;
        fprintf(stderr, "\r\033[K  %s%s: produced %llu  reported %llu  consumed %llu  %.0f msg/s",
                r->fill ? "filling for " : "", bench_mode_names[r->mode],
                (unsigned long long)r->produced, (unsigned long long)r->reported,
                (unsigned long long)r->consumed,
                el > 0 ? (double)(r->mode == BENCH_PRODUCE || r->fill ? r->reported
                                                                  : r->consumed) / el
                       : 0.0);
    }
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    bench_run *r = arg;
    (void)what;
    bench_signal = (sig_atomic_t)sig;
    bench_run_fail(r, "interrupted");
}

static void on_p_closed(void *user)
{
    bench_run *r = user;
    r->p = NULL;
    if (--r->nopen == 0)
        event_base_loopbreak(r->base);
}

static void on_c_closed(void *user)
{
    bench_run *r = user;
    r->c = NULL;
    if (--r->nopen == 0)
        event_base_loopbreak(r->base);
}

static void on_c_stopped(redq_consumer *c, int status, void *user)
{
    bench_run *r = user;
    int rc;
    if (status != 0 && status != REDQ_ECLOSED) {
        clear_progress(r);
        fprintf(stderr, "redq-bench: consumer stop: %s\n", redq_strerror(status));
    }
    rc = redq_consumer_close(c, on_c_closed, r);
    if (rc != 0 && rc != REDQ_ECLOSED) {
        fprintf(stderr, "redq-bench: redq_consumer_close: %s\n", redq_strerror(rc));
        on_c_closed(r);
    }
}

int bench_run_init(bench_run *r, const bench_config *cfg, int mode, int fill)
{
    struct event_config *ec;
    struct timeval watch = {0, 250000};

    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    r->mode = mode;
    r->fill = fill;
    r->tty = isatty(STDERR_FILENO) && mode != BENCH_IDLE;
    r->payload_len = cfg->payload;
    r->payload = malloc(cfg->payload);
    if (r->payload == NULL)
        return -1;
    memset(r->payload, 'x', cfg->payload);

    /* Latency mode needs timers finer than epoll_wait's millisecond:
     * libevent then uses a timerfd. The throughput modes use a plain base,
     * as an embedding server most likely would. */
    ec = event_config_new();
    if (ec == NULL)
        return -1;
    if (mode == BENCH_LATENCY)
        event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
    r->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (r->base == NULL)
        return -1;
    r->ev_pump = evtimer_new(r->base, mode == BENCH_LATENCY ? bench_latency_pump_cb : bench_pump_cb, r);
    r->ev_poll = event_new(r->base, -1, EV_PERSIST, poll_cb, r);
    r->ev_timer = evtimer_new(r->base, timer_cb, r);
    r->ev_watch = mode == BENCH_IDLE ? NULL
                                 : event_new(r->base, -1, EV_PERSIST, watch_cb, r);
    r->ev_sig[0] = evsignal_new(r->base, SIGINT, signal_cb, r);
    r->ev_sig[1] = evsignal_new(r->base, SIGTERM, signal_cb, r);
    if (!r->ev_pump || !r->ev_poll || !r->ev_timer ||
        (mode != BENCH_IDLE && !r->ev_watch) || !r->ev_sig[0] || !r->ev_sig[1])
        return -1;
    evsignal_add(r->ev_sig[0], NULL);
    evsignal_add(r->ev_sig[1], NULL);
    /* No periodic timer in idle mode: it would be the only thing waking the
     * process, and the point is to see that redq does not. */
    if (r->ev_watch != NULL)
        event_add(r->ev_watch, &watch);
    r->wd_ns = bench_now_ns();
    return 0;
}

void bench_run_free(bench_run *r)
{
    size_t i;
    struct event *evs[] = {r->ev_pump, r->ev_poll, r->ev_timer, r->ev_watch,
                           r->ev_sig[0], r->ev_sig[1]};
    for (i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i] != NULL)
            event_free(evs[i]);
    if (r->base != NULL)
        event_base_free(r->base);
    free(r->payload);
    while (r->npool > 0)
        free(r->pool[--r->npool]);
    free(r->pool);
}

/* The connection block, the same in both option structs. */
#define FILL_CONN(o, cfg, r)                                                   \
    do {                                                                       \
        (o)->url = (cfg)->url;                                                 \
        (o)->client_name = "redq-bench";                                       \
        (o)->log = on_log;                                                     \
        (o)->log_level = REDQ_LOG_WARN;                                        \
        (o)->log_user = (r);                                                   \
    } while (0)

void bench_fill_options(redq_producer_options *po, redq_consumer_options *co,
                        const bench_config *cfg, bench_run *r)
{
    if (po != NULL) {
        redq_producer_options_init(po);
        FILL_CONN(po, cfg, r);
        po->on_report = bench_on_report;
        po->on_report_user = r;
        po->on_ready = bench_on_ready;
        po->on_ready_user = r;
        if (cfg->batch_set)
            po->batch_max_msgs = cfg->batch;
        if (cfg->linger_set)
            po->linger_us = cfg->linger_us;
        po->max_queue_len = cfg->max_queue;
        po->min_replicas = cfg->replicas;
        if (cfg->replica_timeout_ms > 0)
            po->replica_timeout_ms = cfg->replica_timeout_ms;
        if (r->mode == BENCH_MEMORY && !r->fill)
            bench_memory_options(po, cfg, r);
    }
    if (co != NULL) {
        redq_consumer_options_init(co);
        FILL_CONN(co, cfg, r);
        co->on_message = bench_on_message;
        co->on_message_user = r;
        co->pool_size = cfg->pool;
        co->stop_timeout_ms = 5000;
        /* Named either way: what a mode measures must not follow the
         * library's default. */
        co->guarantee = cfg->reliable ? REDQ_AT_LEAST_ONCE : REDQ_AT_MOST_ONCE;
        if (cfg->batch_set) {
            co->pop_batch = cfg->batch;
            if (co->max_unacked < 2 * cfg->batch)
                co->max_unacked = 2 * cfg->batch;
        }
        if (r->mode == BENCH_IDLE)
            co->pop_timeout_ms = BENCH_IDLE_POP_TIMEOUT_MS;
    }
}

int bench_run_loop(bench_run *r)
{
    return event_base_dispatch(r->base);
}

/* Close whatever is open and run the loop until it is released. */
void bench_run_teardown(bench_run *r)
{
    int rc;
    r->phase = BENCH_PH_TEARDOWN;
    event_del(r->ev_pump);
    event_del(r->ev_poll);
    event_del(r->ev_timer);
    if (r->ev_watch != NULL)
        event_del(r->ev_watch);
    clear_progress(r);
    r->nopen = (r->p != NULL) + (r->c != NULL);
    if (r->p != NULL) {
        rc = redq_producer_close(r->p, on_p_closed, r);
        if (rc != 0) {
            fprintf(stderr, "redq-bench: redq_producer_close: %s\n", redq_strerror(rc));
            r->nopen--;
            r->p = NULL;
        }
    }
    if (r->c != NULL) {
        /* Stop first when the run went well: that is the graceful path an
         * application takes, and it must not lose or repeat anything. */
        rc = r->failed ? REDQ_ECLOSED : redq_consumer_stop(r->c, -1, on_c_stopped, r);
        if (rc != 0)
            rc = redq_consumer_close(r->c, on_c_closed, r);
        if (rc != 0) {
            fprintf(stderr, "redq-bench: closing the consumer: %s\n", redq_strerror(rc));
            r->nopen--;
            r->c = NULL;
        }
    }
    while (r->nopen > 0)
        if (bench_run_loop(r) != 0)
            break;
    evsignal_del(r->ev_sig[0]);
    evsignal_del(r->ev_sig[1]);
}

int bench_run_connect(bench_run *r)
{
    struct timeval ms = {0, 1000};
    r->phase = BENCH_PH_CONNECT;
    r->connect_deadline = bench_now_ns() + (uint64_t)CONNECT_SECONDS * 1000000000u;
    event_add(r->ev_poll, &ms);
    bench_run_loop(r);
    return r->failed ? -1 : 0;
}

/*
 * The measured part of every run: the loop from the first message to the
 * last. A separate, never-inlined function so that callgrind can count this
 * and nothing else (bench/callgrind.sh: --toggle-collect=redq_bench_measured).
 * It keeps its redq_ name for that script.
 */
BENCH_NOINLINE void redq_bench_measured(bench_run *r)
{
    r->phase = BENCH_PH_MEASURE;
    r->wd_ns = bench_now_ns();
    if (r->want_producer)
        bench_schedule_pump(r);
    bench_run_loop(r);
}

/* ------------------------------------------------------------------------ */
/* a run of each mode                                                        */
/* ------------------------------------------------------------------------ */

int bench_once(const bench_config *cfg, redisContext *sc, bench_bitmap *seen,
               bench_hist *lat_all, bench_result *res, char *err, size_t errlen)
{
    bench_run r;
    redq_producer_options po;
    redq_consumer_options co;
    bench_hist *lat = NULL;
    char stage[1100];
    long long calls0 = 0, len = -1;
    double cpu0 = 0, cpu1 = 0, scpu0 = 0, scpu1 = 0;
    int rc, status = -1;

    memset(res, 0, sizeof *res);
    res->server_cpu = -1;
    snprintf(stage, sizeof stage, "%s:fill", cfg->queue);
    if (bench_scanned(cfg)) {
        /* Every key of the logical queue, on every master: its partitions
         * and its meta hash too, so each run starts from nothing. */
        if (side_queue_delete(cfg->servers, cfg->queue, 0, NULL, err, errlen) != 0)
            return -1;
    } else if (bench_sync_del(sc, cfg->queue, err, errlen) != 0 ||
               bench_sync_del(sc, stage, err, errlen) != 0) {
        return -1;
    }
    bench_bm_clear(seen);

    if (cfg->mode == BENCH_CONSUME &&
        bench_consume_fill(cfg, stage, cfg->messages, err, errlen) != 0)
        return -1;

    if (bench_run_init(&r, cfg, cfg->mode, 0) != 0) {
        snprintf(err, errlen, "out of memory");
        bench_run_free(&r);
        return -1;
    }
    if (cfg->mode != BENCH_IDLE && cfg->mode != BENCH_CONSUME &&
        cfg->mode != BENCH_MEMORY) {
        lat = calloc(1, sizeof *lat);
        if (lat == NULL) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    r.lat = lat;
    r.seen = seen;
    r.sc = sc;
    r.pqueue = cfg->queue;
    if (cfg->mode == BENCH_LATENCY) {
        r.interval_ns = 1e9 / cfg->rate;
        r.want = cfg->messages_set ? cfg->messages
                                   : (uint64_t)(cfg->rate * cfg->seconds + 0.5);
        if (r.want == 0)
            r.want = 1;
    } else if (cfg->seconds_set && cfg->mode != BENCH_IDLE) {
        r.open_ended = 1;
        r.want = UINT64_MAX;
    } else {
        r.want = cfg->messages;
    }
    r.want_producer = cfg->mode == BENCH_PRODUCE || cfg->mode == BENCH_E2E ||
                      cfg->mode == BENCH_LATENCY || cfg->mode == BENCH_MEMORY;
    r.want_consumer = cfg->mode == BENCH_CONSUME || cfg->mode == BENCH_E2E ||
                      cfg->mode == BENCH_LATENCY || cfg->mode == BENCH_IDLE;
    bench_fill_options(&po, &co, cfg, &r);
    if (cfg->partitions > 0 && bench_set_partitions(cfg, r.base, err, errlen) != 0)
        goto out;

    if (r.want_consumer) {
        const char *qs[1] = {cfg->queue};
        rc = redq_consumer_new(&r.c, r.base, &co, qs, 1);
        if (rc != 0) {
            bench_run_fail(&r, "redq_consumer_new: %s (%s)", redq_strerror(rc),
                           redq_err_name(rc));
            goto teardown;
        }
    }
    if (r.want_producer) {
        rc = redq_producer_new(&r.p, r.base, &po);
        if (rc != 0) {
            bench_run_fail(&r, "redq_producer_new: %s (%s)", redq_strerror(rc),
                           redq_err_name(rc));
            goto teardown;
        }
    }
    if (bench_run_connect(&r) != 0)
        goto teardown;

    if (cfg->mode == BENCH_MEMORY &&
        bench_memory_pause(&r, sc, err, errlen) != 0) {
        bench_run_fail(&r, "%s", err);
        goto teardown;
    }
    if (cfg->mode == BENCH_IDLE &&
        bench_idle_begin(&r, sc, &calls0, err, errlen) != 0) {
        bench_run_fail(&r, "%s", err);
        goto teardown;
    }

    /* The servers' CPU around the measured part (one INFO each: outside
     * the clock, but inside the server's figure by a few microseconds). */
    if (cfg->servers != NULL &&
        side_servers_cpu(cfg->servers, &scpu0, err, errlen) != 0) {
        bench_run_fail(&r, "%s", err);
        goto teardown;
    }
    cpu0 = bench_cpu_seconds();
    if (cfg->mode == BENCH_CONSUME || cfg->mode == BENCH_IDLE)
        r.t0 = bench_now_ns();
    if (cfg->mode == BENCH_CONSUME &&
        bench_consume_start(sc, stage, cfg->queue, err, errlen) != 0) {
        bench_run_fail(&r, "%s", err);
        goto teardown;
    }
    redq_bench_measured(&r);
    cpu1 = bench_cpu_seconds();
    if (cfg->servers != NULL &&
        side_servers_cpu(cfg->servers, &scpu1, err, errlen) == 0)
        res->server_cpu = scpu1 - scpu0;
    if (cfg->mode == BENCH_IDLE &&
        bench_idle_end(&r, sc, calls0, res, err, errlen) != 0) {
        bench_run_fail(&r, "%s", err);
        goto teardown;
    }

teardown:
    bench_run_teardown(&r);
    if (r.failed) {
        snprintf(err, errlen, "%s", r.err);
        goto out;
    }
    if (r.unexpected > 0) {
        snprintf(err, errlen, "%llu message(s) consumed after the last one expected (duplicates)",
                 (unsigned long long)r.unexpected);
        goto out;
    }
    /* What the server holds now must agree with what was counted. */
    if (bench_scanned(cfg) ? side_queue_len(cfg->servers, cfg->queue, &len, err, errlen) != 0
                           : bench_sync_llen(sc, cfg->queue, &len, err, errlen) != 0)
        goto out;
    if ((cfg->mode == BENCH_PRODUCE || cfg->mode == BENCH_MEMORY) &&
        (unsigned long long)len != (unsigned long long)r.produced) {
        snprintf(err, errlen, "%llu messages acknowledged but the list holds %lld",
                 (unsigned long long)r.produced, len);
        goto out;
    }
    if ((cfg->mode == BENCH_CONSUME || cfg->mode == BENCH_E2E ||
         cfg->mode == BENCH_LATENCY) && len != 0) {
        snprintf(err, errlen, "%lld messages left in the queue after the run", len);
        goto out;
    }
    if (bench_scanned(cfg) ? side_queue_delete(cfg->servers, cfg->queue, 0, NULL, err, errlen) != 0
                           : bench_sync_del(sc, cfg->queue, err, errlen) != 0)
        goto out;
    if (cfg->mode != BENCH_IDLE && (r.produced == 0 && r.consumed == 0)) {
        snprintf(err, errlen, "no message was moved");
        goto out;
    }

    res->messages = cfg->mode == BENCH_CONSUME ? r.consumed : r.produced;
    res->seconds = r.t_last > r.t0 ? (double)(r.t_last - r.t0) / 1e9 : 0.0;
    res->msgs_per_sec = res->seconds > 0 ? (double)res->messages / res->seconds : 0.0;
    res->cpu = cpu1 - cpu0;
    res->max_lag_us = (double)r.max_lag_ns / 1e3;
    res->max_backlog = r.max_backlog;
    res->rss_before = r.rss_before;
    res->rss_pending = r.rss_pending;
    res->pending = r.pending_at_snap;
    res->pending_bytes = r.pending_bytes_at_snap;
    if (lat != NULL && lat->n > 0) {
        res->lat_n = lat->n;
        res->lat_p50 = (double)bench_hist_quantile(lat, 0.50) / 1e3;
        res->lat_p90 = (double)bench_hist_quantile(lat, 0.90) / 1e3;
        res->lat_p99 = (double)bench_hist_quantile(lat, 0.99) / 1e3;
        res->lat_p999 = (double)bench_hist_quantile(lat, 0.999) / 1e3;
        res->lat_max = (double)lat->max / 1e3;
        bench_hist_merge(lat_all, lat);
    }
    err[0] = '\0';
    status = 0;
out:
    free(lat);
    bench_run_free(&r);
    return status;
}

