/*
 * redq-bench: how fast redq moves messages, measured next to redis-benchmark
 * on the same server in the same run.
 *
 *   redq-bench MODE [--url URL] [--messages N | --seconds S] [--payload BYTES]
 *              [--pool N] [--batch N] [--linger-us N] [--rate R] [--compare]
 *              [--json] [-r N] [--queue NAME] [--owned] [--partitions P]
 *              [--vs-cluster [--cluster-replicas 0|1]]
 *
 * MODE is produce, consume, e2e, latency, idle or memory (--help says what
 * each measures). Without --url and without $REDQ_URL a throwaway
 * redis-server is started on a free 127.0.0.1 port and stopped at exit.
 *
 * Why the comparison: the machine this runs on is small, shared and noisy,
 * and the client shares its cores with the server. An absolute msg/s figure
 * says little; the ratio to redis-benchmark measured minutes apart on the
 * same server says how close redq gets to what the server can take.
 *
 * What is measured, honestly:
 *  - The clock starts when the first message is produced (connections are
 *    made and ready before that) and stops at the last report or
 *    the last consumed message.
 *  - Every message carries its sequence number and a timestamp in its first
 *    16 bytes; the rest of the payload is filler, so a payload is exactly
 *    --payload bytes. Reports and consumed messages are checked against a
 *    bitmap: a failed report, a lost or a duplicated message ends the run
 *    with exit status 1.
 *  - Latencies go into a log-linear histogram (1/64 relative resolution), so
 *    recording costs no allocation; percentiles are over all runs.
 *  - In latency mode messages are due at fixed intervals and the latency is
 *    taken from when a message was *due*, not when it was sent, so a stalled
 *    sender shows up in the figures instead of hiding (coordinated omission).
 *
 * This file: the command line, the throwaway server or the given one, the
 * runs (-r, interleaved with redis-benchmark under --compare) and the
 * summary (the table, or --json). bench.h says which file holds what.
 *
 * Exit status: 0 clean, 1 a run failed (error, failed report, lost or
 * duplicated message), 2 usage or set-up error, 77 no redis-server to start
 * (meson reports the benchmark as skipped), 130 interrupted.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_QUEUE "redq:bench"
#define DEFAULT_MESSAGES 1000000u
#define DEFAULT_LATENCY_SECONDS 5.0
#define DEFAULT_LATENCY_RATE 10000.0
#define DEFAULT_IDLE_SECONDS 10.0

/* ------------------------------------------------------------------------ */
/* command line                                                              */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: redq-bench MODE [--url URL] [--messages N | --seconds S] [--payload BYTES]\n"
        "                  [--pool N] [--batch N] [--linger-us N] [--rate R] [--compare]\n"
        "                  [--json] [-r N] [--queue NAME] [--owned] [--partitions P]\n"
        "                  [--vs-cluster [--cluster-replicas 0|1]]\n"
        "\n"
        "modes:\n"
        "  produce   one producer, a report per message; msg/s = reports/s\n"
        "  consume   a consumer pool drains a pre-filled queue (the fill is not timed);\n"
        "            handler + ack per message\n"
        "  e2e       producer and consumer pool on one loop at once; msg/s = consumed/s\n"
        "            (e2e --reliable: at-least-once consumer, acks per message)\n"
        "  latency   open loop at --rate R msg/s (default 10000) for --seconds (default 5);\n"
        "            latency from each message's scheduled send time to its handler\n"
        "  idle      an idle consumer pool (pop timeout %d ms) for --seconds (default 10):\n"
        "            pop commands per connection per pop timeout, and CPU seconds used\n"
        "  memory    --messages N (default 1000000) produced while the server is paused\n"
        "            (CLIENT PAUSE WRITE): resident memory of N pending messages\n"
        "\n"
        "options:\n"
        "  --url URL        Redis (default $REDQ_URL; else a throwaway redis-server);\n"
        "                   redis+cluster://h:p[,h:p...] for a cluster (produce, e2e,\n"
        "                   latency)\n"
        "  --messages N     messages per run (default 1000000)\n"
        "  --seconds S      produce for S seconds instead of a fixed count\n"
        "  --payload BYTES  message size, at least %d (default 100)\n"
        "  --pool N         consumer connections (default 1)\n"
        "  --batch N        producer batch_max_msgs and consumer pop_batch\n"
        "                   (default: the library's, 1024 and 256)\n"
        "  --linger-us N    producer linger_us (default: the library's, 1000)\n"
        "  --max-queue N    producer max_queue_len: stop sending while the list\n"
        "                   holds N; bounds e2e latency at saturation (default 0)\n"
        "  --replicas N     producer min_replicas: a report is ok only once N\n"
        "                   replicas hold the batch (WAIT pipelined behind it)\n"
        "  --replica-timeout-ms MS  how long WAIT waits (default: the library's)\n"
        "  --rate R         latency mode: messages per second\n"
        "  --compare        also run the matching redis-benchmark line (produce,\n"
        "                   consume, e2e) and print the ratio\n"
        "  --json           one JSON object on stdout instead of the table\n"
        "  -r N             repeat N times; report the median, min and max\n"
        "  --queue NAME     the list to use (default " DEFAULT_QUEUE ")\n"
        "  --owned          produce mode: every run twice, with redq_produce (copying)\n"
        "                   and then redq_produce_owned (the buffer handed over); the\n"
        "                   summary adds the owned figures and the owned/copying ratio\n"
        "  --partitions P   before each run, delete every key of the queue and set its\n"
        "                   partition count to P (redq_admin_set_partitions)\n"
        "  --vs-cluster     a throwaway single master (P = 1) and a throwaway cluster of\n"
        "                   3 masters (tools/cluster-local; P = --partitions, default 6),\n"
        "                   each run to both in turn; medians and the ratio (produce, e2e)\n"
        "  --cluster-replicas N  replicas per master of that cluster (default 0)\n"
        "\n"
        "Every run also reads the servers' CPU (INFO cpu, used_cpu_user + used_cpu_sys,\n"
        "summed over every node of a cluster) before and after the measured part:\n"
        "the summary's \"server cpu\" line.\n"
        "\n"
        "environment: REDQ_URL; REDQ_BENCH_REDIS_SERVER and REDQ_BENCH_REDIS_BENCHMARK\n"
        "(paths of redis-server and redis-benchmark, default: found on PATH)\n",
        BENCH_IDLE_POP_TIMEOUT_MS, BENCH_STAMP_BYTES);
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_pos_double(const char *s, double *out)
{
    char *end;
    double v;
    if (s == NULL || !*s)
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !(v > 0) || v > 1e9)
        return -1;
    *out = v;
    return 0;
}

/* "--name value" or "--name=value": 1 with *val set (NULL when missing), 0
 * when argv[*i] is not this option. */
static int opt(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    *val = *i + 1 < argc ? argv[++*i] : NULL;
    return 1;
}

static int parse_args(int argc, char **argv, bench_config *cfg)
{
    int i, have_mode = 0;
    const char *env = getenv("REDQ_URL");

    memset(cfg, 0, sizeof *cfg);
    cfg->messages = DEFAULT_MESSAGES;
    cfg->payload = 100;
    cfg->pool = 1;
    cfg->runs = 1;
    cfg->rate = DEFAULT_LATENCY_RATE;
    cfg->queue = DEFAULT_QUEUE;
    if (env != NULL && *env)
        cfg->url = env;

    for (i = 1; i < argc; i++) {
        const char *v = NULL;
        uint64_t u;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(argv[i], "--compare")) {
            cfg->compare = 1;
        } else if (!strcmp(argv[i], "--json")) {
            cfg->json = 1;
        } else if (!strcmp(argv[i], "--owned")) {
            cfg->owned = 1;
        } else if (!strcmp(argv[i], "--reliable")) {
            cfg->reliable = 1;
        } else if (!strcmp(argv[i], "--vs-cluster")) {
            cfg->vs_cluster = 1;
        } else if (opt(argc, argv, &i, "--partitions", &v)) {
            if (parse_u64(v, 1, 256, &u) != 0)
                goto bad;
            cfg->partitions = (int)u;
        } else if (opt(argc, argv, &i, "--cluster-replicas", &v)) {
            if (parse_u64(v, 0, 1, &u) != 0)
                goto bad;
            cfg->cluster_replicas = (int)u;
        } else if (opt(argc, argv, &i, "--url", &v)) {
            if (v == NULL || !*v)
                goto bad;
            cfg->url = v;
        } else if (opt(argc, argv, &i, "--messages", &v)) {
            if (parse_u64(v, 1, (uint64_t)1 << 40, &cfg->messages) != 0)
                goto bad;
            cfg->messages_set = 1;
        } else if (opt(argc, argv, &i, "--seconds", &v)) {
            if (parse_pos_double(v, &cfg->seconds) != 0 || cfg->seconds > 86400)
                goto bad;
            cfg->seconds_set = 1;
        } else if (opt(argc, argv, &i, "--payload", &v)) {
            if (parse_u64(v, BENCH_STAMP_BYTES, (uint64_t)512 << 20, &u) != 0) {
                fprintf(stderr, "redq-bench: --payload must be %d..%d bytes: the first %d "
                                "carry the sequence number and a timestamp\n",
                        BENCH_STAMP_BYTES, 512 << 20, BENCH_STAMP_BYTES);
                return -1;
            }
            cfg->payload = (size_t)u;
        } else if (opt(argc, argv, &i, "--pool", &v)) {
            if (parse_u64(v, 1, 1024, &u) != 0)
                goto bad;
            cfg->pool = (size_t)u;
        } else if (opt(argc, argv, &i, "--batch", &v)) {
            if (parse_u64(v, 1, 100000, &u) != 0)
                goto bad;
            cfg->batch = (size_t)u;
            cfg->batch_set = 1;
        } else if (opt(argc, argv, &i, "--linger-us", &v)) {
            if (parse_u64(v, 0, 60000000, &u) != 0)
                goto bad;
            cfg->linger_us = (unsigned)u;
            cfg->linger_set = 1;
        } else if (opt(argc, argv, &i, "--max-queue", &v)) {
            if (parse_u64(v, 0, 1000000000, &u) != 0)
                goto bad;
            cfg->max_queue = (size_t)u;
        } else if (opt(argc, argv, &i, "--replicas", &v)) {
            if (parse_u64(v, 0, 64, &u) != 0)
                goto bad;
            cfg->replicas = (int)u;
        } else if (opt(argc, argv, &i, "--replica-timeout-ms", &v)) {
            if (parse_u64(v, 1, 2147483647, &u) != 0)
                goto bad;
            cfg->replica_timeout_ms = (int)u;
        } else if (opt(argc, argv, &i, "--rate", &v)) {
            if (parse_pos_double(v, &cfg->rate) != 0)
                goto bad;
            cfg->rate_set = 1;
        } else if (opt(argc, argv, &i, "--queue", &v)) {
            if (v == NULL || !*v || strlen(v) > 1000)
                goto bad;
            cfg->queue = v;
        } else if (!strcmp(argv[i], "-r") || !strncmp(argv[i], "-r=", 3)) {
            v = argv[i][2] == '=' ? argv[i] + 3 : (i + 1 < argc ? argv[++i] : NULL);
            if (parse_u64(v, 1, 1000, &u) != 0)
                goto bad;
            cfg->runs = (int)u;
        } else if (argv[i][0] != '-' && !have_mode) {
            size_t m;
            for (m = 0; m < sizeof bench_mode_names / sizeof bench_mode_names[0]; m++)
                if (!strcmp(argv[i], bench_mode_names[m]))
                    break;
            if (m == sizeof bench_mode_names / sizeof bench_mode_names[0]) {
                fprintf(stderr, "redq-bench: unknown mode '%s'\n", argv[i]);
                usage(stderr);
                return -1;
            }
            cfg->mode = (int)m;
            have_mode = 1;
        } else {
            fprintf(stderr, "redq-bench: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return -1;
        }
        continue;
    bad:
        fprintf(stderr, "redq-bench: bad or missing value for '%s'\n", argv[i]);
        usage(stderr);
        return -1;
    }
    if (!have_mode) {
        fprintf(stderr, "redq-bench: no MODE given\n");
        usage(stderr);
        return -1;
    }
    if (cfg->messages_set && cfg->seconds_set) {
        fprintf(stderr, "redq-bench: give --messages or --seconds, not both\n");
        return -1;
    }
    if (cfg->reliable && cfg->mode != BENCH_E2E) {
        fprintf(stderr, "redq-bench: --reliable goes with e2e\n");
        return -1;
    }
    if (cfg->owned && (cfg->mode != BENCH_PRODUCE || cfg->compare)) {
        fprintf(stderr, "redq-bench: --owned goes with produce mode, without --compare\n");
        return -1;
    }
    if (cfg->rate_set && cfg->mode != BENCH_LATENCY) {
        fprintf(stderr, "redq-bench: --rate goes with latency mode\n");
        return -1;
    }
    if (cfg->compare && cfg->mode != BENCH_PRODUCE && cfg->mode != BENCH_CONSUME &&
        cfg->mode != BENCH_E2E) {
        fprintf(stderr, "redq-bench: --compare has a redis-benchmark line for produce, "
                        "consume and e2e only\n");
        return -1;
    }
    if (cfg->seconds_set && (cfg->mode == BENCH_CONSUME || cfg->mode == BENCH_MEMORY)) {
        fprintf(stderr, "redq-bench: %s needs a message count (--messages), not --seconds\n",
                bench_mode_names[cfg->mode]);
        return -1;
    }
    if (cfg->messages_set && cfg->mode == BENCH_IDLE) {
        fprintf(stderr, "redq-bench: idle mode takes --seconds, not --messages\n");
        return -1;
    }
    if (cfg->vs_cluster && ((cfg->mode != BENCH_PRODUCE && cfg->mode != BENCH_E2E) ||
                            cfg->compare || cfg->owned || cfg->seconds_set)) {
        fprintf(stderr, "redq-bench: --vs-cluster goes with produce and e2e, with a "
                        "message count, without --compare and --owned\n");
        return -1;
    }
    if (cfg->partitions > 0 && cfg->mode != BENCH_PRODUCE && cfg->mode != BENCH_E2E &&
        cfg->mode != BENCH_LATENCY) {
        fprintf(stderr, "redq-bench: --partitions goes with produce, e2e and latency\n");
        return -1;
    }
    if (cfg->mode == BENCH_LATENCY && !cfg->seconds_set && !cfg->messages_set)
        cfg->seconds = DEFAULT_LATENCY_SECONDS;
    if (cfg->mode == BENCH_IDLE && !cfg->seconds_set)
        cfg->seconds = DEFAULT_IDLE_SECONDS;
    if (cfg->mode == BENCH_MEMORY &&
        cfg->messages > SIZE_MAX / (cfg->payload + 64)) {
        fprintf(stderr, "redq-bench: --messages x --payload is too large\n");
        return -1;
    }
    return 0;
}

static void on_signal(int sig)
{
    bench_signal = (sig_atomic_t)sig;
}

/* ------------------------------------------------------------------------ */
/* the summary                                                               */
/* ------------------------------------------------------------------------ */

/* What the summary reports: the configuration and the figures of all runs
 * (medians over the runs; min and max of msg/s). */
typedef struct summary {
    const bench_config *cfg;
    const bench_target *tg;
    const bench_compare *rb;
    const char *version;
    const bench_result *res;
    const double *rates, *rb_rates;
    const bench_hist *lat_all;
    int nruns;
    double med, mn, mx, rb_med, cpu, msgs, secs;
    double scpu; /* servers' CPU seconds per run (mean), < 0: unknown */
    /* --owned: the redq_produce_owned runs, interleaved with the others */
    const double *orates;
    double omed, omn, omx, ocpu;
} summary;

/* Median, min and max of v[0..n-1] (n >= 1), through scratch tmp. */
static void med_min_max(const double *v, double *tmp, size_t n, double *med,
                        double *mn, double *mx)
{
    size_t k;
    for (k = 0; k < n; k++)
        tmp[k] = v[k];
    *med = bench_median(tmp, n);
    *mn = tmp[0];
    *mx = tmp[n - 1];
}

/* --json: one object on stdout. 0, or -1 when writing it failed. */
static int print_json(const summary *sm)
{
    const bench_config *cfg = sm->cfg;
    const bench_target *tg = sm->tg;
    const bench_compare *rb = sm->rb;
    const bench_result *res = sm->res;
    const double *rates = sm->rates, *rb_rates = sm->rb_rates;
    const bench_hist *lat_all = sm->lat_all;
    int nruns = sm->nruns;
    double med = sm->med, mn = sm->mn, mx = sm->mx, rb_med = sm->rb_med;
    double cpu = sm->cpu, msgs = sm->msgs, secs = sm->secs;
    const char *version = sm->version;
    size_t k;
    json_t *o, *a, *root = json_object();

    json_object_set_new(root, "mode", json_string(bench_mode_names[cfg->mode]));
    json_object_set_new(root, "delivery",
                        json_string(cfg->reliable ? "at-least-once" : "at-most-once"));
    json_object_set_new(root, "messages", json_integer((json_int_t)msgs));
    json_object_set_new(root, "payload_bytes", json_integer((json_int_t)cfg->payload));
    json_object_set_new(root, "runs", json_integer(nruns));
    json_object_set_new(root, "seconds", json_real(secs));
    json_object_set_new(root, "msgs_per_sec", json_real(med));
    json_object_set_new(root, "msgs_per_sec_min", json_real(mn));
    json_object_set_new(root, "msgs_per_sec_max", json_real(mx));
    json_object_set_new(root, "latency_us", bench_latency_json(lat_all));
    json_object_set_new(root, "latency_measures",
                        bench_latency_what(cfg->mode)
                            ? json_string(bench_latency_what(cfg->mode))
                            : json_null());
    json_object_set_new(root, "cpu_seconds", json_real(cpu));
    json_object_set_new(root, "server_cpu_seconds",
                        sm->scpu >= 0 ? json_real(sm->scpu) : json_null());
    json_object_set_new(root, "partitions", json_integer(cfg->partitions ? cfg->partitions : 1));
    json_object_set_new(root, "cpu_us_per_msg",
                        msgs > 0 ? json_real(cpu * 1e6 / msgs) : json_null());
    json_object_set_new(root, "peak_rss_bytes", json_integer(bench_peak_rss_bytes()));
    o = json_object();
    json_object_set_new(o, "url", json_string(tg->addr.password[0] ? "(has a password)"
                                                           : cfg->url));
    json_object_set_new(o, "throwaway", json_boolean(tg->throwaway));
    json_object_set_new(o, "redis_version", json_string(version));
    json_object_set_new(root, "server", o);
    o = json_object();
    json_object_set_new(o, "pool", json_integer((json_int_t)cfg->pool));
    json_object_set_new(o, "batch", cfg->batch_set ? json_integer((json_int_t)cfg->batch)
                                                  : json_null());
    json_object_set_new(o, "linger_us", cfg->linger_set
                                            ? json_integer(cfg->linger_us)
                                            : json_null());
    if (cfg->mode == BENCH_LATENCY)
        json_object_set_new(o, "rate", json_real(cfg->rate));
    json_object_set_new(root, "options", o);
    a = json_array();
    for (k = 0; k < (size_t)nruns; k++) {
        o = json_object();
        json_object_set_new(o, "msgs_per_sec", json_real(rates[k]));
        json_object_set_new(o, "messages", json_integer((json_int_t)res[k].messages));
        json_object_set_new(o, "seconds", json_real(res[k].seconds));
        json_object_set_new(o, "cpu_seconds", json_real(res[k].cpu));
        json_object_set_new(o, "server_cpu_seconds", json_real(res[k].server_cpu));
        if (cfg->compare)
            json_object_set_new(o, "redis_benchmark_per_sec", json_real(rb_rates[k]));
        if (cfg->mode == BENCH_E2E || cfg->mode == BENCH_LATENCY)
            json_object_set_new(o, "max_backlog",
                                json_integer((json_int_t)res[k].max_backlog));
        if (res[k].lat_n > 0) {
            json_t *l = json_object();
            json_object_set_new(l, "p50", json_real(res[k].lat_p50));
            json_object_set_new(l, "p90", json_real(res[k].lat_p90));
            json_object_set_new(l, "p99", json_real(res[k].lat_p99));
            json_object_set_new(l, "p999", json_real(res[k].lat_p999));
            json_object_set_new(l, "max", json_real(res[k].lat_max));
            json_object_set_new(o, "latency_us", l);
        } else {
            json_object_set_new(o, "latency_us", json_null());
        }
        json_array_append_new(a, o);
    }
    json_object_set_new(root, "per_run", a);
    if (cfg->compare) {
        o = json_object();
        json_object_set_new(o, "redis_benchmark_command", json_string(rb->exact));
        json_object_set_new(o, "redis_benchmark_per_sec", json_real(rb_med));
        json_object_set_new(o, "unit", json_string(rb->scale > 1 ? "elements/s"
                                                                : "requests/s"));
        json_object_set_new(o, "ratio", json_real(rb_med > 0 ? med / rb_med : 0));
        json_object_set_new(root, "compare", o);
    }
    if (cfg->mode == BENCH_LATENCY) {
        o = json_object();
        json_object_set_new(o, "rate", json_real(cfg->rate));
        json_object_set_new(o, "max_send_lag_us",
                            json_real(bench_latency_max_lag(res, (size_t)nruns)));
        json_object_set_new(root, "latency", o);
    }
    if (cfg->owned) {
        o = json_object();
        a = json_array();
        json_object_set_new(o, "call", json_string("redq_produce_owned"));
        json_object_set_new(o, "msgs_per_sec", json_real(sm->omed));
        json_object_set_new(o, "msgs_per_sec_min", json_real(sm->omn));
        json_object_set_new(o, "msgs_per_sec_max", json_real(sm->omx));
        json_object_set_new(o, "cpu_seconds", json_real(sm->ocpu));
        json_object_set_new(o, "ratio_to_copying", json_real(med > 0 ? sm->omed / med : 0));
        for (k = 0; k < (size_t)nruns; k++)
            json_array_append_new(a, json_real(sm->orates[k]));
        json_object_set_new(o, "per_run_msgs_per_sec", a);
        json_object_set_new(root, "owned", o);
    }
    if (cfg->mode == BENCH_IDLE)
        json_object_set_new(root, "idle", bench_idle_json(cfg, &res[nruns - 1]));
    if (cfg->mode == BENCH_MEMORY)
        json_object_set_new(root, "memory", bench_memory_json(&res[nruns - 1]));
    if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) != 0) {
        fprintf(stderr, "redq-bench: writing JSON failed\n");
        json_decref(root);
        return -1;
    }
    fputc('\n', stdout);
    json_decref(root);
    return 0;
}

/* The table (the default). */
static void print_table(const summary *sm)
{
    const bench_config *cfg = sm->cfg;
    const bench_target *tg = sm->tg;
    const bench_compare *rb = sm->rb;
    const bench_result *res = sm->res;
    const double *rb_rates = sm->rb_rates;
    const bench_hist *lat_all = sm->lat_all;
    int nruns = sm->nruns;
    double med = sm->med, mn = sm->mn, mx = sm->mx, rb_med = sm->rb_med;
    double cpu = sm->cpu, msgs = sm->msgs;
    const char *version = sm->version;
    size_t k;

    if (cfg->mode == BENCH_IDLE)
        printf("redq-bench idle: %zu idle connection%s for %.1f s, %d run%s",
               cfg->pool, cfg->pool == 1 ? "" : "s", cfg->seconds, nruns,
               nruns == 1 ? "" : "s");
    else
        printf("redq-bench %s: %.0f msgs x %zu B per run, %d run%s",
               bench_mode_names[cfg->mode], msgs, cfg->payload, nruns, nruns == 1 ? "" : "s");
    printf("; redis %s at %s%s\n", version,
           tg->addr.password[0] ? "(url with password)" : cfg->url,
           tg->throwaway ? " (throwaway)" : "");
    printf("  options: pool %zu", cfg->pool);
    if (cfg->batch_set)
        printf(", batch %zu", cfg->batch);
    else
        printf(", batch (library default)");
    if (cfg->linger_set)
        printf(", linger %u us", cfg->linger_us);
    if (cfg->max_queue)
        printf(", max queue %zu", cfg->max_queue);
    if (cfg->replicas)
        printf(", %d replica(s) must ack", cfg->replicas);
    if (cfg->partitions)
        printf(", %d partition(s)", cfg->partitions);
    if (cfg->servers && cfg->servers->n > 1)
        printf(", cluster of %d nodes", cfg->servers->n);
    if (cfg->mode == BENCH_LATENCY)
        printf(", rate %.0f msg/s", cfg->rate);
    printf("\n");
    printf("  %-26s %14s %14s %14s\n", "", "median", "min", "max");
    if (cfg->mode != BENCH_IDLE)
        printf("  %-26s %14.0f %14.0f %14.0f\n",
               cfg->mode == BENCH_MEMORY ? "msg/s (drain after unpause)" : "msg/s", med,
               mn, mx);
    if (cfg->compare) {
        double rmn = rb_rates[0], rmx = rb_rates[0];
        for (k = 1; k < (size_t)nruns; k++) {
            if (rb_rates[k] < rmn)
                rmn = rb_rates[k];
            if (rb_rates[k] > rmx)
                rmx = rb_rates[k];
        }
        printf("  %-26s %14.0f %14.0f %14.0f\n",
               rb->scale > 1 ? "redis-benchmark elem/s" : "redis-benchmark req/s",
               rb_med, rmn, rmx);
        printf("  %-26s %14.2f\n", "ratio (median/median)", rb_med > 0 ? med / rb_med : 0);
        printf("  redis-benchmark: %s\n", rb->shown);
    }
    if (cfg->owned) {
        printf("  %-26s %14.0f %14.0f %14.0f\n", "msg/s, owned", sm->omed, sm->omn,
               sm->omx);
        printf("  %-26s %14.2f\n", "ratio owned/copying", med > 0 ? sm->omed / med : 0);
        printf("  per run copying/owned msg/s:");
        for (k = 0; k < (size_t)nruns; k++)
            printf(" %.0f/%.0f", sm->rates[k], sm->orates[k]);
        printf("\n");
    }
    if (lat_all->n > 0) {
        printf("  latency, us (%s, %llu samples)\n", bench_latency_what(cfg->mode),
               (unsigned long long)lat_all->n);
        printf("    p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
               (double)bench_hist_quantile(lat_all, 0.5) / 1e3,
               (double)bench_hist_quantile(lat_all, 0.9) / 1e3,
               (double)bench_hist_quantile(lat_all, 0.99) / 1e3,
               (double)bench_hist_quantile(lat_all, 0.999) / 1e3,
               (double)lat_all->max / 1e3);
        if (nruns > 1) {
            printf("    per run p50/p99:");
            for (k = 0; k < (size_t)nruns; k++)
                printf(" %.0f/%.0f", res[k].lat_p50, res[k].lat_p99);
            printf("\n");
        }
    }
    if (cfg->mode == BENCH_LATENCY)
        printf("  %-26s %14.1f\n", "max send lag, us",
               bench_latency_max_lag(res, (size_t)nruns));
    if (cfg->mode == BENCH_E2E || cfg->mode == BENCH_LATENCY) {
        uint64_t bl = 0;
        for (k = 0; k < (size_t)nruns; k++)
            if (res[k].max_backlog > bl)
                bl = res[k].max_backlog;
        printf("  %-26s %14llu  (acknowledged, not yet consumed)\n",
               "max backlog in the list", (unsigned long long)bl);
    }
    if (cfg->mode == BENCH_IDLE)
        bench_idle_print(cfg, &res[nruns - 1]);
    if (cfg->mode == BENCH_MEMORY)
        bench_memory_print(&res[nruns - 1]);
    printf("  %-26s %14.3f", "cpu seconds per run", cpu);
    if (msgs > 0 && cfg->mode != BENCH_IDLE)
        printf("  (%.3f us/msg)", cpu * 1e6 / msgs);
    printf("\n");
    if (sm->scpu >= 0) {
        printf("  %-26s %14.3f", sm->cfg->servers && sm->cfg->servers->n > 1
                                     ? "server cpu s/run (all)" : "server cpu seconds/run",
               sm->scpu);
        if (msgs > 0 && cfg->mode != BENCH_IDLE)
            printf("  (%.3f us/msg)", sm->scpu * 1e6 / msgs);
        printf("\n");
    }
    if (cfg->owned) {
        printf("  %-26s %14.3f", "cpu seconds per run, owned", sm->ocpu);
        if (msgs > 0)
            printf("  (%.3f us/msg)", sm->ocpu * 1e6 / msgs);
        printf("\n");
    }
    bench_print_count("peak RSS, bytes", (double)bench_peak_rss_bytes());
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    bench_config cfg;
    bench_target tg;
    bench_server srv;
    side_servers servers;
    redisContext *sc = NULL;
    struct sigaction sa;
    bench_bitmap seen = {NULL, 0};
    bench_hist *lat_all = NULL;
    bench_result *res = NULL, *ores = NULL;
    bench_config ocfg;
    bench_hist *olat = NULL;
    double *orates = NULL, *rates = NULL, *rb_rates = NULL, *tmp = NULL;
    bench_compare rb;
    char err[1024] = "", version[32] = "?";
    int status = 2, i, nruns = 0;

    memset(&srv, 0, sizeof srv);
    memset(&rb, 0, sizeof rb);
    if (parse_args(argc, argv, &cfg) != 0)
        return 2;
    memset(&servers, 0, sizeof servers);

    /* hiredis writes with write(2): a server that goes away must give
     * EPIPE, not kill the benchmark. */
    signal(SIGPIPE, SIG_IGN);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (cfg.vs_cluster) {
        status = bench_vs_cluster(&cfg);
        libevent_global_shutdown();
        return status;
    }
    if (cfg.url == NULL) {
        int rc = bench_server_start(&srv, &tg, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "redq-bench: %s\n", err);
            bench_server_stop(&srv); /* removes the temporary directory */
            return rc == 77 ? 77 : 2;
        }
        cfg.url = tg.url;
    } else if (bench_parse_target(cfg.url, &tg, err, sizeof err) != 0) {
        /* The URL is not shown: it may hold a password. */
        fprintf(stderr, "redq-bench: --url: %s\n", err);
        return 2;
    }

    sc = bench_sync_connect(&tg, err, sizeof err);
    if (sc == NULL) {
        fprintf(stderr, "redq-bench: %s\n", err);
        goto out;
    }
    if (side_servers_open(&tg.addr, 10000, &servers, err, sizeof err) != 0) {
        fprintf(stderr, "redq-bench: %s\n", err);
        goto out;
    }
    cfg.servers = &servers;
    if (servers.n > 1 && cfg.mode != BENCH_PRODUCE && cfg.mode != BENCH_E2E &&
        cfg.mode != BENCH_LATENCY) {
        fprintf(stderr, "redq-bench: on a cluster, %s mode is not supported (produce, e2e, "
                        "latency are)\n", bench_mode_names[cfg.mode]);
        goto out;
    }
    if (servers.n > 1 && cfg.compare) {
        fprintf(stderr, "redq-bench: --compare needs one server, not a cluster\n");
        goto out;
    }
    {
        char *info = bench_sync_info(sc, "server", err, sizeof err);
        const char *v = info ? strstr(info, "redis_version:") : NULL;
        if (v != NULL)
            sscanf(v + 14, "%31[0-9.]", version);
        free(info);
    }

    lat_all = calloc(1, sizeof *lat_all);
    res = calloc((size_t)cfg.runs, sizeof *res);
    rates = calloc((size_t)cfg.runs, sizeof *rates);
    rb_rates = calloc((size_t)cfg.runs, sizeof *rb_rates);
    tmp = calloc((size_t)cfg.runs, sizeof *tmp);
    ores = calloc((size_t)cfg.runs, sizeof *ores);
    orates = calloc((size_t)cfg.runs, sizeof *orates);
    olat = calloc(1, sizeof *olat);
    ocfg = cfg;
    ocfg.owned_run = 1;
    if (!lat_all || !res || !rates || !rb_rates || !tmp || !ores || !orates || !olat ||
        (!cfg.seconds_set && cfg.mode != BENCH_IDLE && cfg.mode != BENCH_LATENCY &&
         bench_bm_reserve(&seen, cfg.messages) != 0)) {
        fprintf(stderr, "redq-bench: out of memory\n");
        goto out;
    }
    if (cfg.compare && bench_compare_build(&rb, &cfg, &tg, cfg.messages) != 0) {
        fprintf(stderr, "redq-bench: out of memory\n");
        goto out;
    }

    /* Interleave redq and redis-benchmark runs, so that a noisy neighbour
     * hits both alike. */
    status = 1;
    for (i = 0; i < cfg.runs; i++) {
        err[0] = '\0';
        if (bench_once(&cfg, sc, &seen, lat_all, &res[i], err, sizeof err) != 0) {
            fprintf(stderr, "redq-bench: %s run %d: %s\n", bench_mode_names[cfg.mode], i + 1,
                    err[0] ? err : "failed");
            goto out;
        }
        rates[i] = res[i].msgs_per_sec;
        /* Owned right after copying, on the same server: a noisy
         * neighbour hits both alike. Its latencies are kept apart. */
        if (cfg.owned) {
            if (bench_once(&ocfg, sc, &seen, olat, &ores[i], err, sizeof err) != 0) {
                fprintf(stderr, "redq-bench: produce --owned run %d: %s\n", i + 1,
                        err[0] ? err : "failed");
                goto out;
            }
            orates[i] = ores[i].msgs_per_sec;
        }
        if (cfg.compare && bench_compare_run(&rb, sc, &rb_rates[i], err, sizeof err) != 0) {
            fprintf(stderr, "redq-bench: %s\n", err);
            goto out;
        }
        nruns++;
        if (bench_signal) {
            fprintf(stderr, "redq-bench: interrupted\n");
            status = 130;
            goto out;
        }
    }

    {
        summary sm;
        size_t k;
        memset(&sm, 0, sizeof sm);
        for (k = 0; k < (size_t)nruns; k++) {
            tmp[k] = rates[k];
            sm.cpu += res[k].cpu;
            if (res[k].server_cpu < 0 || sm.scpu < 0)
                sm.scpu = -1;
            else
                sm.scpu += res[k].server_cpu;
        }
        sm.cpu /= nruns;
        if (sm.scpu > 0)
            sm.scpu /= nruns;
        sm.med = bench_median(tmp, (size_t)nruns);
        sm.mn = tmp[0];
        sm.mx = tmp[nruns - 1];
        for (k = 0; k < (size_t)nruns; k++)
            tmp[k] = (double)res[k].messages;
        sm.msgs = bench_median(tmp, (size_t)nruns);
        for (k = 0; k < (size_t)nruns; k++)
            tmp[k] = res[k].seconds;
        sm.secs = bench_median(tmp, (size_t)nruns);
        if (cfg.compare) {
            for (k = 0; k < (size_t)nruns; k++)
                tmp[k] = rb_rates[k];
            sm.rb_med = bench_median(tmp, (size_t)nruns);
        }
        sm.cfg = &cfg;
        sm.tg = &tg;
        sm.rb = &rb;
        sm.version = version;
        sm.res = res;
        sm.rates = rates;
        sm.rb_rates = rb_rates;
        sm.lat_all = lat_all;
        sm.nruns = nruns;
        if (cfg.owned) {
            for (k = 0; k < (size_t)nruns; k++)
                sm.ocpu += ores[k].cpu;
            sm.ocpu /= nruns;
            med_min_max(orates, tmp, (size_t)nruns, &sm.omed, &sm.omn, &sm.omx);
            sm.orates = orates;
        }
        if (cfg.json) {
            if (print_json(&sm) != 0)
                goto out;
        } else {
            print_table(&sm);
        }
    }
    status = 0;

out:
    bench_compare_free(&rb);
    free(seen.w);
    free(lat_all);
    free(res);
    free(ores);
    free(orates);
    free(olat);
    free(rates);
    free(rb_rates);
    free(tmp);
    if (sc != NULL)
        redisFree(sc);
    side_servers_close(&servers);
    bench_server_stop(&srv);
    libevent_global_shutdown();
    if (bench_signal && status != 0)
        status = 130;
    return status;
}
