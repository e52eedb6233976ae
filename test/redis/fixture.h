/*
 * Fixture for the redis suite: a throwaway redis-server per test, a
 * synchronous control client, the test's event loop, and a tracker that
 * records what a producer reports.
 *
 * Criterion runs each test in its own process and calls .init/.fini there,
 * so everything below is per test: the server (fresh temp dir, fresh port),
 * the event_base and the trackers. fx_teardown() stops and frees all of it,
 * also after a failed assertion, so a failing test neither leaks nor leaves a
 * server behind.
 *
 * Nothing here may be called from inside a redq callback except where noted:
 * a criterion assertion longjmps, and leaving event_base_loop() that way
 * would wedge the loop for the cleanup. Callbacks record; tests assert after
 * the loop returns.
 */
#ifndef REDQ_TEST_FIXTURE_H
#define REDQ_TEST_FIXTURE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "redq.h"

/* ---- setup / teardown (criterion .init / .fini) ------------------------ */

/** Event loop, then a redis-server with the default arguments. */
void fx_setup(void);
/** Event loop only: the test starts its server itself (or never). As a
 *  test's .init in a suite whose .init is fx_setup (criterion runs both),
 *  it stops the server the suite's init started. */
void fx_setup_noserver(void);
/** Close every tracked producer still open, stop the server, remove its
 *  directory (kept when REDQ_TEST_KEEP is set), free the loop. */
void fx_teardown(void);

/* ---- the server -------------------------------------------------------- */

/** Start a server on a free loopback port. `extra` is NULL or a
 *  NULL-terminated list of extra arguments ("--requirepass", "secret").
 *  Retries on another port if the chosen one was taken meanwhile. Asserts
 *  that the server answers PING within a few seconds. */
void fx_server_start(const char *const *extra);
/** Like fx_server_start() on a fixed port (no retry). */
void fx_server_start_on_port(int port, const char *const *extra);
/** Stop the server (SIGTERM, then SIGKILL), keep its directory and port. */
void fx_server_stop(void);
/** Start it again on the same port with the same arguments (empty data). */
void fx_server_restart(void);

/** The key `suffix` of queue `q` as the library names it (lib/keys.c), e.g.
 *  "{jobs}/dead"; malloc'd, the caller frees it. */
char *fx_queue_key(const char *q, const char *suffix);

/** A loopback TCP port nobody listened on a moment ago. */
int fx_free_port(void);
int fx_port(void);
/** "redis://127.0.0.1:PORT" (static buffer). */
const char *fx_url(void);
/** The server's unix socket path (in its temp dir). */
const char *fx_unix_path(void);
/** The server's temp dir. */
const char *fx_dir(void);

/* ---- the control client ------------------------------------------------ */

/** A synchronous connection to the server over TCP, made on first use
 *  (authenticated with --requirepass when the server has one). */
redisContext *fx_redis(void);
/** Run a command (hiredis format: %s, %b, %d...). Asserts that a reply came
 *  back; error replies are returned like any other. The reply belongs to
 *  the fixture and stays valid until the end of the test. */
redisReply *fx_cmd(const char *fmt, ...);
/** Run a command that must answer with an integer; return it. */
long long fx_cmd_int(const char *fmt, ...);
/** Run a command that must not answer with an error. */
redisReply *fx_cmd_ok(const char *fmt, ...);
/** calls=N of `cmd` in INFO commandstats ("lpush"); 0 when never called. */
long long fx_commandstat_calls(const char *cmd);
/** LLEN of `key` in the control client's current database. */
long long fx_llen(const char *key);

/* ---- the event loop ---------------------------------------------------- */

struct event_base *fx_base(void);
/** Monotonic clock, microseconds. */
uint64_t fx_now_us(void);
/** Run the loop until cond(arg) holds (checked before each iteration; the
 *  loop wakes at least every 10 ms) or timeout_ms pass. Returns cond's last
 *  value. Not from inside a callback. */
bool fx_run_until(bool (*cond)(void *), void *arg, int timeout_ms);
/** How early a timer may legitimately seem to fire, in microseconds, on
 *  this clock: 5 ms plus the resolution of CLOCK_MONOTONIC_COARSE, which
 *  libevent's cached time (and redq's message timestamps) may be read
 *  from. Use it for "not before X ms" bounds. */
uint64_t fx_clock_slack_us(void);
/** Run the loop for `ms` milliseconds: for windows in which something must
 *  NOT happen, never as a way to wait for something that will. */
void fx_run_for(int ms);

/* ---- producer tracker -------------------------------------------------- */

/*
 * Messages are numbered 0..cap-1. fx_produce() sends message `seq` as the
 * payload "QUEUE|SEQ|" padded with 'x' to at least `size` bytes, with opaque
 * (void *)(seq + 1). Each report is checked against that (queue, payload,
 * length, opaque, producer, errstr present iff status < 0); a mismatch is
 * counted in `bad` and the first one described in `bad_msg`.
 */
typedef struct fx_tracker fx_tracker;

typedef void (*fx_report_hook)(fx_tracker *t, redq_producer *p,
                               const redq_report *r);

#define FX_MAX_CODE 32 /* log codes -0..-31 counted in log_by_code */

struct fx_tracker {
    redq_producer *p;
    size_t cap;
    unsigned *nrep;      /* reports per seq */
    int *status;         /* status of the last report per seq */
    uint64_t *rep_us;    /* time of the last report per seq */
    uint64_t *prod_us;   /* time of the redq_produce() per seq */
    size_t *len;         /* payload length per seq (0: never produced) */

    size_t reports, ok, failed, bad;
    char bad_msg[256];
    char last_errstr[256]; /* errstr of the last failed report */
    int last_fail_status;

    unsigned log_by_code[FX_MAX_CODE]; /* log calls per -code */
    char log_first[FX_MAX_CODE][256];  /* first message per code */
    unsigned logs;

    unsigned ready;            /* on_ready calls */
    size_t ready_reports;      /* reports when on_ready first ran */
    redq_producer_stats ready_stats; /* stats when on_ready first ran */

    unsigned closed;           /* close callbacks */
    size_t closed_reports;     /* reports when the close callback ran */
    unsigned reports_after_close; /* reports after the close callback */

    bool raw;                  /* the test makes its own payloads and opaques:
                                  only count reports, skip the per-seq checks */
    fx_report_hook on_report;  /* optional, runs after each report */
    void *hook_arg;
};

/** A tracker for `cap` messages; freed by fx_teardown(). */
fx_tracker *fx_tracker_new(size_t cap);
/** redq_producer_new(&t->p, fx_base(), opts) after pointing on_report,
 *  on_ready and log (and their user pointers) at the tracker. Returns its
 *  result. */
int fx_producer_new(fx_tracker *t, redq_producer_options *opts);
/** Build payload `seq` for `queue` into buf (cap bytes); returns its length. */
size_t fx_payload(char *buf, size_t cap, const char *queue, size_t seq,
                  size_t size);
/** Produce message `seq` to `queue` (see above); returns redq_produce(). */
int fx_produce(fx_tracker *t, const char *queue, size_t seq, size_t size);
/** Produce seq from..to-1, asserting each is accepted. */
void fx_produce_range(fx_tracker *t, const char *queue, size_t from,
                      size_t to, size_t size);
/** redq_producer_close() with the tracker's close callback. Tests close only
 *  through this (teardown relies on it). Safe from inside a callback. */
int fx_close(fx_tracker *t);

bool fx_wait_reports(fx_tracker *t, size_t n, int timeout_ms);
bool fx_wait_connected(fx_tracker *t, int timeout_ms);
bool fx_wait_closed(fx_tracker *t, int timeout_ms);
bool fx_wait_log_code(fx_tracker *t, int code, int timeout_ms);
bool fx_wait_ready(fx_tracker *t, int timeout_ms);

/** Assert that seq from..to-1 each have exactly one report, with status
 *  `status`, and that no report was malformed. */
void fx_assert_reported(fx_tracker *t, size_t from, size_t to, int status);
/** Assert that `queue` holds exactly the messages seqs[0..n-1], produced in
 *  that order (LPUSH: the first produced is at the tail). */
void fx_assert_list(const char *queue, const size_t *seqs, size_t n);
/** Assert that `queue` holds seq from..to-1 in produce order. */
void fx_assert_list_range(const char *queue, size_t from, size_t to);

/** Case-insensitive substring search (strcasestr is not POSIX). */
bool fx_contains_nocase(const char *hay, const char *needle);

redq_producer_stats fx_stats(fx_tracker *t);

/* ---- high availability (test_sentinel.c) ----------------------------- */

/** Start a master, `nreplicas` replicas (synced) and `nsentinels` sentinels
 *  (monitoring "mymaster" with quorum 2, down-after 1 s, failover-timeout
 *  3 s; requirepass `sentinel_password` when non-NULL), all on loopback in
 *  a temp dir, and wait until every sentinel knows every replica and the
 *  other sentinels. Stop with fx_ha_stop(). */
void fx_ha_start(int nreplicas, int nsentinels, const char *sentinel_password);
/** Stop every process fx_ha_start() started (by pid) and remove the dir. */
void fx_ha_stop(void);
/** "redis+sentinel://127.0.0.1:P1,.../mymaster[?sentinel_password=..]". */
const char *fx_ha_url(void);
int fx_ha_node_port(int i);     /* node 0 is the first master */
int fx_ha_sentinel_port(int i);
/** The node the sentinels name as master, -1 if none answers. */
int fx_ha_master(void);
/** Node i is running and says role:master. */
bool fx_ha_is_master(int i);
/** SIGKILL node i. */
void fx_ha_kill_node(int i);
void fx_ha_stop_sentinel(int i);
/** (Re)start sentinel i with its (possibly rewritten) config. */
void fx_ha_start_sentinel(int i);
/** A synchronous connection to a loopback port (AUTH when password), or
 *  NULL. The caller frees it with redisFree. */
redisContext *fx_ha_connect(int port, const char *password);

#endif /* REDQ_TEST_FIXTURE_H */
