/*
 * bench.h: what the files of redq-bench share.
 *
 * redq-bench is one program split by what a newcomer would change:
 *   main.c     the command line, -r repetition, the summary (table, --json)
 *   run.c      one run: the event loop, the handles, the watchdog, teardown,
 *              and bench_once(), which sets up and checks a run of any mode
 *   produce.c  the producer side: pumping messages, reports
 *   consume.c  the consumer side: the handler (consume, e2e, e2e --reliable),
 *              consume mode's pre-fill and RENAME start
 *   latency.c  latency mode's open-loop sender, latency figures and output
 *   idle.c     idle mode: the window, pop commands counted on the server
 *   memory.c   memory mode: CLIENT PAUSE, the RSS snapshot
 *   common.c   clocks, CPU and RSS, payload stamps, the histogram, the bitmap
 *   server.c   the URL, the blocking side connection, a throwaway server
 *   compare.c  the matching redis-benchmark line (--compare)
 *   cluster.c  partitioned queues (--partitions), a throwaway cluster, and
 *              --vs-cluster: one master against a cluster in one invocation
 *
 * Everything here is internal to the benchmark and carries a bench_ (or
 * BENCH_) prefix; everything else in a file is static. Nothing here is
 * thread-safe: the whole program runs on one thread and one event loop
 * per run.
 */
#ifndef REDQ_BENCH_H
#define REDQ_BENCH_H

#include "redq.h"
#include "side.h" /* tools/common: the blocking side connection */

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#if defined(__GNUC__)
#define BENCH_PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#define BENCH_NOINLINE __attribute__((noinline))
#else
#define BENCH_PRINTF_LIKE(f, a)
#define BENCH_NOINLINE
#endif

/* Bytes of every payload taken by the sequence number and the timestamp. */
#define BENCH_STAMP_BYTES 16

/* Idle mode: the pop timeout. Short, so that 10 s cover several timeouts
 * and the "one command per connection per timeout" claim can be counted. */
#define BENCH_IDLE_POP_TIMEOUT_MS 1000

/* redis-benchmark's multi-value LPUSH: values per command, as in issue 4. */
#define BENCH_RB_VALUES 100

enum bench_mode {
    BENCH_PRODUCE,
    BENCH_CONSUME,
    BENCH_E2E,
    BENCH_LATENCY,
    BENCH_IDLE,
    BENCH_MEMORY
};

enum bench_phase { BENCH_PH_CONNECT, BENCH_PH_MEASURE, BENCH_PH_TEARDOWN };

/* The mode names of the command line, indexed by enum bench_mode. */
extern const char *const bench_mode_names[6];

/* The signal that interrupted the program, or 0. Set by main's handler and
 * by a run's libevent signal events; long waits (bench_sleep_ms, the
 * throwaway server's start) give up when it is set. */
extern volatile sig_atomic_t bench_signal;

/* ------------------------------------------------------------------------ */
/* common.c: clocks, payload stamps, statistics                              */
/* ------------------------------------------------------------------------ */

/* CLOCK_MONOTONIC in nanoseconds. */
uint64_t bench_now_ns(void);

/* Sleep ms milliseconds; returns early once bench_signal is set. */
void bench_sleep_ms(long ms);

/* CPU seconds (user + system) used by this process so far; children (the
 * throwaway server, redis-benchmark) are not included. 0.0 on error. */
double bench_cpu_seconds(void);

/* Peak resident set size of this process in bytes, or -1. */
long long bench_peak_rss_bytes(void);

/* Resident set size right now in bytes (ru_maxrss only ever grows), or -1. */
long long bench_current_rss_bytes(void);

/* Write seq and ts into the first BENCH_STAMP_BYTES of payload, and read
 * them back. The payload must hold at least BENCH_STAMP_BYTES. */
void bench_stamp(char *payload, uint64_t seq, uint64_t ts);
void bench_unstamp(const void *payload, uint64_t *seq, uint64_t *ts);

/* Median of n values (n >= 1); v is reordered (sorted). */
double bench_median(double *v, size_t n);

/* printf a "  label   value" line of the summary table, value rounded. */
void bench_print_count(const char *label, double v);

/* Latency histogram: log-linear, 64 sub-buckets per power of two, so a
 * sample costs no allocation and percentiles are within 1/64 of the truth.
 * Zero it (calloc or memset) before use. About 40 KiB: allocate it. */
#define BENCH_H_SUB_BITS 6
#define BENCH_H_SUB (1u << BENCH_H_SUB_BITS)
#define BENCH_H_MAX_EXP 47 /* 2^47 ns is about 39 hours: anything above is clamped */
#define BENCH_H_BUCKETS (BENCH_H_SUB + (BENCH_H_MAX_EXP - BENCH_H_SUB_BITS + 1) * BENCH_H_SUB)

typedef struct bench_hist {
    uint64_t n, max;
    uint64_t b[BENCH_H_BUCKETS];
} bench_hist;

/* Record one value (nanoseconds by convention). */
void bench_hist_add(bench_hist *h, uint64_t v);
/* The value at quantile q (0 < q <= 1), never above the exact maximum. The
 * histogram must hold at least one value. */
uint64_t bench_hist_quantile(const bench_hist *h, double q);
/* Add every sample of `from` to `into`. */
void bench_hist_merge(bench_hist *into, const bench_hist *from);

/* The sequence numbers seen, to catch lost and duplicated messages. Start
 * from {NULL, 0}; the caller frees w. */
typedef struct bench_bitmap {
    uint64_t *w;
    size_t nwords;
} bench_bitmap;

/* Make room for bit `bit`. Grows by doubling, so --seconds runs (whose
 * message count is unknown up front) allocate O(log n) times, not per
 * message. 0 or -1 (out of memory; the bitmap is unchanged). */
int bench_bm_reserve(bench_bitmap *b, uint64_t bit);
/* Set `bit`: 0 newly set, 1 was set already (a duplicate), -1 out of
 * memory. */
int bench_bm_test_set(bench_bitmap *b, uint64_t bit);
/* Clear every bit, keeping the allocation. */
void bench_bm_clear(bench_bitmap *b);

/* ------------------------------------------------------------------------ */
/* server.c: where the server is, the side connection, a throwaway server    */
/* ------------------------------------------------------------------------ */

typedef struct bench_target {
    char url[1024]; /* what redq is given */
    side_addr addr; /* where the side connection goes (for a Sentinel URL:
                       the master the sentinels named) */
    int throwaway;  /* started by us */
} bench_target;

/* Parse one of the URL forms redq.h documents, with the library's own
 * parser (through tools/common/side.c), into *t (zeroed first); for a
 * redis+sentinel:// URL, ask the sentinels where the master is (blocking).
 * 0, or -1 with err filled. */
int bench_parse_target(const char *url, bench_target *t, char *err,
                       size_t errlen);

/* The blocking side connection (setup, LLEN, INFO, RENAME, CLIENT PAUSE):
 * connected, authenticated and on t's db, with 10 s timeouts; for a
 * Sentinel URL, checked with ROLE (the sentinels asked again, and t->addr
 * updated, when the node named is no master). NULL with err filled on
 * failure. The caller frees it with redisFree. */
redisContext *bench_sync_connect(bench_target *t, char *err, size_t errlen);

/* Run a command on the side connection; the reply (caller frees), or NULL
 * with err filled (an error reply counts as a failure). */
redisReply *bench_sync_cmd(redisContext *c, char *err, size_t errlen, int argc,
                           const char **argv);

/* DEL key. 0, or -1 with err. */
int bench_sync_del(redisContext *c, const char *key, char *err, size_t errlen);

/* LLEN key into *len. 0, or -1 with err. */
int bench_sync_llen(redisContext *c, const char *key, long long *len,
                    char *err, size_t errlen);

/* INFO <section> as a malloc'd string (caller frees), or NULL with err. */
char *bench_sync_info(redisContext *c, const char *section, char *err,
                      size_t errlen);

/* A redis-server started by us. */
typedef struct bench_server {
    pid_t pid;
    char dir[256];
    char log[300];
} bench_server;

/* Start redis-server ($REDQ_BENCH_REDIS_SERVER, else on PATH) on a free
 * 127.0.0.1 port without persistence, in a fresh temporary directory, and
 * fill *t with its URL (t->throwaway set). 0; -1 with err filled; 77 when
 * there is no redis-server to run. Call bench_server_stop in every case:
 * it removes the directory. */
int bench_server_start(bench_server *s, bench_target *t, char *err, size_t errlen);

/* Stop the server (SIGTERM, SIGKILL after 10 s) and remove its directory.
 * Safe on a zeroed or already stopped bench_server. */
void bench_server_stop(bench_server *s);

/* ------------------------------------------------------------------------ */
/* the command line (main.c fills it; read-only afterwards)                  */
/* ------------------------------------------------------------------------ */

typedef struct bench_config {
    int mode;
    const char *url;
    uint64_t messages;
    int messages_set;
    double seconds;
    int seconds_set;
    size_t payload;
    size_t pool;
    size_t batch;
    int batch_set;
    unsigned linger_us;
    int linger_set;
    size_t max_queue; /* producer max_queue_len (0: none) */
    int replicas;           /* producer min_replicas (0: none) */
    int replica_timeout_ms; /* producer replica_timeout_ms (0: default) */
    double rate;
    int rate_set;
    int compare;
    int json;
    int runs;
    int reliable;
    const char *queue;
    int owned;     /* --owned: each run twice, redq_produce, then
                      redq_produce_owned (produce mode) */
    int owned_run; /* this run produces with redq_produce_owned */
    int partitions;  /* --partitions P: set on the queue before each run
                        (0: leave the queue as it is, i.e. P = 1) */
    int vs_cluster;  /* --vs-cluster: one master, then a cluster, per run */
    int cluster_replicas; /* --cluster-replicas: replicas per master of the
                             throwaway cluster (default 0) */
    /* Every server behind url (main.c opens it): the CPU of the servers is
     * summed over these, and on a cluster (or with --partitions) a queue's
     * keys are found by scanning their masters. NULL: not known. */
    side_servers *servers;
} bench_config;

/* ------------------------------------------------------------------------ */
/* run.c: one run                                                            */
/* ------------------------------------------------------------------------ */

/* The state of one run of one mode: its event base, its redq handles and
 * its counts. Every callback of every mode gets it as its user pointer. */
typedef struct bench_run {
    const bench_config *cfg;
    struct event_base *base;
    struct event *ev_pump;   /* produce the next chunk (or the due messages) */
    struct event *ev_poll;   /* connect phase: are the handles ready yet? */
    struct event *ev_timer;  /* idle window end; memory snapshot */
    struct event *ev_watch;  /* stall detection + progress line */
    struct event *ev_sig[2]; /* SIGINT, SIGTERM */

    redq_producer *p;
    redq_consumer *c;
    int nopen; /* handles whose close callback is still to come */

    const char *pqueue; /* where the producer pushes */
    char *payload;
    size_t payload_len;

    int mode;
    int fill; /* pre-filling for consume: nothing is measured */
    int phase;
    int want_producer, want_consumer;
    uint64_t connect_deadline;

    uint64_t want;  /* messages to produce, or to consume in consume mode */
    int open_ended; /* --seconds: produce until deadline_ns */
    uint64_t deadline_ns;
    uint64_t produced, reported, consumed;
    uint64_t t0, t_last; /* first produce (or RENAME), last report/message */
    int producing_done;
    int waiting_ready;

    bench_bitmap *seen;
    bench_hist *lat; /* NULL: latency not recorded */

    /* owned runs: payload buffers handed to redq_produce_owned come from
     * here and go back here from its free callback (produce.c) */
    char **pool;
    size_t npool, poolcap;

    /* latency mode */
    double interval_ns;
    uint64_t max_lag_ns;
    /* e2e, latency: most messages acknowledged and not yet consumed, i.e.
     * waiting in the Redis list */
    uint64_t max_backlog;

    /* memory mode */
    redisContext *sc;
    int snap_taken;
    long long rss_before, rss_pending;
    size_t pending_at_snap, pending_bytes_at_snap;

    /* idle mode */
    int idle_over;

    /* watchdog */
    uint64_t wd_count, wd_ns;
    int tty;
    int unexpected; /* messages that arrived after the run */

    int failed;
    char err[512];
    char last_log[512];
} bench_run;

/* What one measured run of a mode yielded (bench_once). */
typedef struct bench_result {
    double msgs_per_sec;
    uint64_t messages;
    double seconds;
    double cpu;
    double server_cpu; /* CPU seconds of every server during the measured
                          part (INFO cpu deltas); < 0: unknown */
    /* this run's latency percentiles, us (n == 0: none recorded) */
    uint64_t lat_n;
    double lat_p50, lat_p90, lat_p99, lat_p999, lat_max;
    /* latency mode */
    double max_lag_us;
    uint64_t max_backlog;
    /* idle mode */
    long long pop_calls;
    uint64_t client_pops;
    double idle_seconds;
    /* memory mode */
    long long rss_before, rss_pending;
    size_t pending, pending_bytes;
} bench_result;

/* Mark the run failed with a message (the first failure wins) and leave
 * the loop, unless it is tearing down. Callable from any callback. */
void bench_run_fail(bench_run *r, const char *fmt, ...) BENCH_PRINTF_LIKE(2, 3);

/* Have the loop call r->ev_pump's callback (produce more) at once. */
void bench_schedule_pump(bench_run *r);

/* Leave the loop if the measured part of r's mode is complete. Call after
 * every count that may complete it. */
void bench_check_done(bench_run *r);

/* Set up *r (zeroed first) for `mode`: its event base, events and payload.
 * fill: a pre-fill for consume mode, nothing measured. 0 or -1 (out of
 * memory); call bench_run_free in both cases. */
int bench_run_init(bench_run *r, const bench_config *cfg, int mode, int fill);

/* Free what bench_run_init allocated; the handles must be closed
 * (bench_run_teardown). */
void bench_run_free(bench_run *r);

/* redq options for r's handles (po, co: either may be NULL): cfg's
 * settings, r as every user pointer, every callback of the harness.
 * r->mode, r->fill and r->want must be set. */
void bench_fill_options(redq_producer_options *po, redq_consumer_options *co,
                        const bench_config *cfg, bench_run *r);

/* Run r's loop until something leaves it; event_base_dispatch's status. */
int bench_run_loop(bench_run *r);

/* Connect phase: run the loop until the wanted handles are connected and
 * ready (0) or CONNECT_SECONDS pass or the run fails (-1). */
int bench_run_connect(bench_run *r);

/* Close whatever is open (stopping the consumer first when the run went
 * well) and run the loop until every close callback came. */
void bench_run_teardown(bench_run *r);

/* The measured part of every run: the loop from the first message to the
 * last. Never inlined and not renamed, so that callgrind can count this and
 * nothing else (bench/callgrind.sh: --toggle-collect=redq_bench_measured). */
BENCH_NOINLINE void redq_bench_measured(bench_run *r);

/* One run of cfg->mode against the server behind sc: clean keys, (fill,)
 * connect, measure, tear down, and check what the server holds against the
 * counts. seen is cleared and reused; this run's latencies are merged into
 * lat_all. 0 with *res filled, or -1 with err filled. */
int bench_once(const bench_config *cfg, redisContext *sc, bench_bitmap *seen,
               bench_hist *lat_all, bench_result *res, char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* produce.c: the producer side                                              */
/* ------------------------------------------------------------------------ */

/* ev_pump callback of the throughput modes: produce up to a chunk of
 * stamped messages, then let the loop run. */
void bench_pump_cb(evutil_socket_t fd, short what, void *arg);

/* redq_produce_owned's free callback: the buffer goes back to r's pool. */
void bench_owned_free(void *payload, void *user);

/* redq on_ready: the producer has room again after REDQ_EFULL. */
void bench_on_ready(redq_producer *p, void *user);

/* redq on_report: count and check a report (sequence number, duplicate,
 * size, latency in produce mode; the backlog in e2e and latency modes). */
void bench_on_report(redq_producer *p, const redq_report *rep, void *user);

/* Nothing more will be produced: fix r->want to what was, and in memory
 * mode start the settle timer. Idempotent. */
void bench_mark_producing_done(bench_run *r);

/* ------------------------------------------------------------------------ */
/* consume.c: the consumer side                                              */
/* ------------------------------------------------------------------------ */

/* redq on_message: check a message against the bitmap, record its latency
 * (e2e, latency), ack it. */
void bench_on_message(redq_consumer *c, redq_message *msg, void *user);

/* Pre-fill `key` with n stamped messages through a redq producer (not
 * timed). 0 or -1 with err. */
int bench_consume_fill(const bench_config *cfg, const char *key, uint64_t n,
                       char *err, size_t errlen);

/* Consume mode's start: RENAME the pre-filled `stage` to the queue the
 * connected pool is blocked on. 0, or -1 with err. */
int bench_consume_start(redisContext *sc, const char *stage, const char *queue,
                        char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* latency.c: latency mode and latency figures                               */
/* ------------------------------------------------------------------------ */

/* ev_pump callback of latency mode: send every message that is due, stamped
 * with the time it was due, then sleep until the next one is. */
void bench_latency_pump_cb(evutil_socket_t fd, short what, void *arg);

/* What a mode's latency figures measure, or NULL when it records none. */
const char *bench_latency_what(int mode);

/* The percentiles of h in microseconds as a JSON object (new reference),
 * or JSON null when h is empty. */
json_t *bench_latency_json(const bench_hist *h);

/* The largest send lag over n runs, in microseconds. */
double bench_latency_max_lag(const bench_result *res, size_t n);

/* ------------------------------------------------------------------------ */
/* idle.c: idle mode                                                         */
/* ------------------------------------------------------------------------ */

/* Before the idle window: count the server's pop commands so far into
 * *calls0 and arm r's timer for --seconds. 0, or -1 with err. */
int bench_idle_begin(bench_run *r, redisContext *sc, long long *calls0,
                     char *err, size_t errlen);

/* ev_timer callback body in idle mode: the window is over. */
void bench_idle_timeout(bench_run *r);

/* After the window: the seconds, pop commands (since calls0) and client
 * pops into res. 0, or -1 with err. */
int bench_idle_end(bench_run *r, redisContext *sc, long long calls0,
                   bench_result *res, char *err, size_t errlen);

/* Idle mode's lines of the summary table, and its "idle" JSON object (new
 * reference), from the last run x. */
void bench_idle_print(const bench_config *cfg, const bench_result *x);
json_t *bench_idle_json(const bench_config *cfg, const bench_result *x);

/* ------------------------------------------------------------------------ */
/* memory.c: memory mode                                                     */
/* ------------------------------------------------------------------------ */

/* Options of the measured memory run: a window that holds every message and
 * deadlines longer than the pause. */
void bench_memory_options(redq_producer_options *o, const bench_config *cfg,
                          const bench_run *r);

/* CLIENT PAUSE WRITE the server, then note the RSS before producing.
 * 0, or -1 with err. */
int bench_memory_pause(bench_run *r, redisContext *sc, char *err, size_t errlen);

/* Everything is produced: take the snapshot once writes had time to
 * settle (arms r's timer). */
void bench_memory_produced(bench_run *r);

/* ev_timer callback body in memory mode: take the snapshot, unpause. */
void bench_memory_timeout(bench_run *r);

/* Memory mode's lines of the summary table, and its "memory" JSON object
 * (new reference), from the last run x. */
void bench_memory_print(const bench_result *x);
json_t *bench_memory_json(const bench_result *x);

/* ------------------------------------------------------------------------ */
/* compare.c: the matching redis-benchmark line                              */
/* ------------------------------------------------------------------------ */

typedef struct bench_compare {
    const char *argv[64 + BENCH_RB_VALUES];
    int argc;
    char n[24], d[24], db[16], key[1100];
    char *value;
    double scale;     /* result = requests/s x scale (values per request) */
    char *exact;      /* the command line, every argument */
    char *shown;      /* the same with the values abbreviated */
} bench_compare;

/*
 * The redis-benchmark line that matches a mode, into *rb (zeroed first):
 *   produce, consume: LPUSH <key> <100 values>, -P 16, one connection, and
 *     the figure is elements/s (requests/s x 100): the server's list-append
 *     limit with the same batching redq does, on as many connections.
 *   e2e: -t lpush (one value per LPUSH), -P 64 -c 50.
 * rb keeps pointers into t. 0 or -1 (out of memory); bench_compare_free in
 * both cases.
 */
int bench_compare_build(bench_compare *rb, const bench_config *cfg,
                        const bench_target *t, uint64_t messages);

/* Run rb's line once (its key deleted before and after) and put its figure
 * (elements/s or requests/s) in *per_sec. 0, or -1 with err. */
int bench_compare_run(const bench_compare *rb, redisContext *sc, double *per_sec,
                      char *err, size_t errlen);

/* Free what bench_compare_build allocated; safe on a zeroed rb. */
void bench_compare_free(bench_compare *rb);

/* ------------------------------------------------------------------------ */
/* cluster.c: partitions, a throwaway cluster, --vs-cluster                  */
/* ------------------------------------------------------------------------ */

/* Does this run go through side_queue_* (a cluster, or partitions)? */
int bench_scanned(const bench_config *cfg);

/* Set the partition count of cfg->queue to cfg->partitions through a
 * redq_admin handle on base (the loop runs until the answer). 0, or -1 with
 * err. */
int bench_set_partitions(const bench_config *cfg, struct event_base *base,
                         char *err, size_t errlen);

/* A throwaway cluster made by tools/cluster-local. */
typedef struct bench_cluster {
    char url[1024];
    char dir[512];
} bench_cluster;

/* Start one (`replicas` replicas per master: 0 or 1). 0, or -1 with err. */
int bench_cluster_start(bench_cluster *k, int replicas, char *err,
                        size_t errlen);
/* Stop it (tools/cluster-local stop); safe on a zeroed one. */
void bench_cluster_stop(bench_cluster *k);

/* --vs-cluster: a throwaway single master and a throwaway cluster; each run
 * of the mode goes first to the master (P = 1), then to the cluster
 * (P = cfg->partitions), and the summary gives both medians and the
 * ratio. The exit status of main. */
int bench_vs_cluster(bench_config *cfg);

#endif /* REDQ_BENCH_H */
