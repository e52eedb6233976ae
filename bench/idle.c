/*
 * idle.c: idle mode. A consumer pool waits on an empty queue for --seconds
 * with a short pop timeout (BENCH_IDLE_POP_TIMEOUT_MS), and the server's own
 * command statistics say how many pop commands it sent: the claim is one
 * command per connection per pop timeout, and next to no CPU. The run has no
 * watchdog timer (run.c), so nothing but redq wakes the process.
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Sum of `calls=` of the pop commands in INFO commandstats. */
static long long pop_calls(const char *info)
{
    static const char *const names[] = {"cmdstat_blmpop:", "cmdstat_brpop:",
                                        "cmdstat_rpop:", "cmdstat_lmpop:"};
    long long sum = 0;
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *p = strstr(info, names[i]);
        if (p != NULL && (p = strstr(p, "calls=")) != NULL)
            sum += strtoll(p + 6, NULL, 10);
    }
    return sum;
}

int bench_idle_begin(bench_run *r, redisContext *sc, long long *calls0,
                     char *err, size_t errlen)
{
    struct timeval tv;
    double s = r->cfg->seconds;
    char *info = bench_sync_info(sc, "commandstats", err, errlen);
    if (info == NULL)
        return -1;
    *calls0 = pop_calls(info);
    free(info);
    tv.tv_sec = (time_t)s;
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    evtimer_add(r->ev_timer, &tv);
    return 0;
}

void bench_idle_timeout(bench_run *r)
{
    r->idle_over = 1;
    bench_check_done(r);
}

int bench_idle_end(bench_run *r, redisContext *sc, long long calls0,
                   bench_result *res, char *err, size_t errlen)
{
    redq_consumer_stats st;
    char *info;
    res->idle_seconds = (double)(bench_now_ns() - r->t0) / 1e9;
    info = bench_sync_info(sc, "commandstats", err, errlen);
    if (info == NULL)
        return -1;
    res->pop_calls = pop_calls(info) - calls0;
    free(info);
    redq_consumer_get_stats(r->c, &st);
    res->client_pops = st.pops;
    r->t_last = bench_now_ns();
    return 0;
}

void bench_idle_print(const bench_config *cfg, const bench_result *x)
{
    double timeouts = x->idle_seconds * 1000.0 / BENCH_IDLE_POP_TIMEOUT_MS;
    printf("  %-26s %14.2f\n", "idle seconds", x->idle_seconds);
    bench_print_count("pop commands (server)", (double)x->pop_calls);
    printf("  %-26s %14.3f  (pool %zu, pop timeout %d ms)\n",
           "pops/connection/timeout",
           (double)x->pop_calls / (double)cfg->pool / timeouts, cfg->pool,
           BENCH_IDLE_POP_TIMEOUT_MS);
}

json_t *bench_idle_json(const bench_config *cfg, const bench_result *x)
{
    double timeouts = x->idle_seconds * 1000.0 / BENCH_IDLE_POP_TIMEOUT_MS;
    json_t *o = json_object();
    json_object_set_new(o, "seconds", json_real(x->idle_seconds));
    json_object_set_new(o, "pool", json_integer((json_int_t)cfg->pool));
    json_object_set_new(o, "pop_timeout_ms", json_integer(BENCH_IDLE_POP_TIMEOUT_MS));
    json_object_set_new(o, "pop_calls", json_integer(x->pop_calls));
    json_object_set_new(o, "pops_per_conn_per_timeout",
                        json_real((double)x->pop_calls / (double)cfg->pool / timeouts));
    json_object_set_new(o, "cpu_seconds", json_real(x->cpu));
    return o;
}
