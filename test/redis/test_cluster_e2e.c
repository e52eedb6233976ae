/*
 * A partitioned queue on a real Redis Cluster, end to end, through the
 * public API only (redq.h): a running producer (min_replicas 1, so that a
 * report with status 0 means one replica holds the message too) and an
 * at-least-once consumer (pool 3) on a queue of 6 partitions spread over
 * the 3 masters of a throwaway 6-node cluster (fixture_cluster.c), while
 *   (a) `redis-cli --cluster reshard` moves the slots of some partitions
 *       (MOVED) and one partition's slot is then migrated by hand, key by
 *       key (the ASK window);
 *   (b) CLUSTER FAILOVER promotes the replica of a partition's master;
 *   (c) SIGKILL kills a partition's master, and its replica is promoted.
 * Afterwards: every message reported ok was consumed, byte for byte;
 * duplicates (at-least-once redeliveries) are counted and bounded; every
 * message that arrived was one the producer sent; no message is left in any
 * key of the queue on any master (SCAN of every master).
 *
 * The cluster operations are the fixture's (blocking, between slices of the
 * event loop, never inside a callback); the only raw Redis access is the
 * final SCAN. Each test starts its own cluster (the failovers change it for
 * good); every wait is bounded.
 */
#define _DEFAULT_SOURCE

#include "fixture.h"
#include "fixture_cluster.h"

#include "redq.h"

#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#define Q "e2e"
#define NPART 6
#define POOL 3
#define CAP 600000           /* messages at most per test */
#define PER_TICK 24          /* messages per 1 ms tick: ~20k msg/s */
/* At-least-once redeliveries allowed: a partition's consumer redelivers at
 * most what it had taken and not yet acked when its connection went (a pop
 * batch, 1024 by default), once for the operation and once for recovery. */
#define MAX_DUPS (NPART * 2 * 1024)

/* ---- the payload of message seq: its number, then bytes from it -------- */

static size_t payload(size_t seq, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "m%zu:", seq);
    size_t len = (size_t)n + (seq * 7919u) % 180u, i;
    if (len > cap)
        len = cap;
    for (i = (size_t)n; i < len; i++)
        buf[i] = (char)(1 + (seq + i * 31u) % 255u); /* binary, never 0 */
    return len;
}

/* ---- the stream: producer, consumer, counts ---------------------------- */

typedef struct e2e {
    redq_producer *p;
    redq_consumer *c;
    redq_admin *a;
    struct event *pump;
    bool on;            /* producing */
    bool full;          /* REDQ_EFULL: wait for on_ready */
    size_t produced;    /* seqs 0..produced-1 accepted by redq_produce */
    unsigned char *rep; /* per seq: 0 pending, 1 ok, 2 failed */
    unsigned *seen;     /* per seq: deliveries */
    size_t ok, failed, consumed, dups, foreign, corrupt;
    size_t per_part[NPART + 1]; /* deliveries by partition index */
    size_t mark;                /* mark_after(): produced then */
    size_t after[NPART];        /* deliveries of seqs >= mark, by partition */
    size_t keyed;
    int first_fail;
    char first_errstr[200];
    bool p_closed, c_closed, c_stopped, a_closed;
} e2e;

static e2e *S;

static uint64_t T0;
static void phase(const char *what)
{
    if (!T0)
        T0 = fx_now_us();
    if (getenv("REDQ_TEST_VERBOSE") && S) {
        redq_producer_stats st;
        redq_producer_get_stats(S->p, &st);
        fprintf(stderr, "%8.3f s %-24s produced %zu ok %zu failed %zu consumed %zu"
                " | producer: pending %zu inflight %zu sent %llu resent %llu "
                "connects %llu disconnects %llu connected %d\n",
                (double)(fx_now_us() - T0) / 1e6, what, S->produced, S->ok, S->failed,
                S->consumed, st.pending_msgs, st.inflight_batches,
                (unsigned long long)st.batches_sent, (unsigned long long)st.batches_resent,
                (unsigned long long)st.connects, (unsigned long long)st.disconnects,
                st.connected);
    }
}

static void on_report(redq_producer *p, const redq_report *r, void *user)
{
    e2e *s = user;
    size_t seq = (size_t)(uintptr_t)r->opaque - 1;
    (void)p;
    cr_assert_lt(seq, s->produced);
    cr_assert_eq(s->rep[seq], 0, "message %zu reported twice", seq);
    if (r->status == 0) {
        s->rep[seq] = 1;
        s->ok++;
    } else {
        s->rep[seq] = 2;
        if (s->failed++ == 0) {
            s->first_fail = r->status;
            snprintf(s->first_errstr, sizeof s->first_errstr, "%s",
                     r->errstr ? r->errstr : "");
        }
    }
}

static void on_ready(redq_producer *p, void *user)
{
    e2e *s = user;
    (void)p;
    s->full = false;
}

static void on_message(redq_consumer *c, redq_message *m, void *user)
{
    e2e *s = user;
    char want[256];
    const char *d = redq_msg_data(m);
    size_t len = redq_msg_len(m), seq = 0;
    int part = redq_msg_partition(m);
    (void)c;

    cr_assert_str_eq(redq_msg_queue(m), Q, "the logical name, not a partition's");
    if (len < 3 || d[0] != 'm' || sscanf(d + 1, "%zu:", &seq) != 1 ||
        seq >= s->produced) {
        s->foreign++;
    } else if (payload(seq, want, sizeof want) != len ||
               memcmp(want, d, len) != 0) {
        s->corrupt++;
    } else {
        if (s->seen[seq]++ == 0)
            s->consumed++;
        else
            s->dups++;
    }
    if (part >= 0 && part < NPART) {
        s->per_part[part]++;
        if (s->mark > 0 && seq >= s->mark)
            s->after[part]++;
    } else
        s->per_part[NPART]++;
    cr_assert_eq(redq_ack(m), 0);
}

/* Every 1 ms while on: PER_TICK more messages; every third one keyed (the
 * key path spreads by crc16(key) % P). */
static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
    e2e *s = arg;
    static const struct timeval ms = {0, 1000};
    char buf[256];
    (void)fd;
    (void)what;
    for (int i = 0; i < PER_TICK && s->on && !s->full && s->produced < CAP; i++) {
        size_t seq = s->produced, len = payload(seq, buf, sizeof buf);
        void *op = (void *)(uintptr_t)(seq + 1);
        int rc;
        s->produced++; /* before the call: a report may come inside it */
        if (seq % 3 == 2) {
            char key[16];
            int kl = snprintf(key, sizeof key, "k%zu", seq % 50);
            rc = redq_produce_key(s->p, Q, key, (size_t)kl, buf, len, op);
            s->keyed += rc == 0;
        } else {
            rc = redq_produce(s->p, Q, buf, len, op);
        }
        if (rc != 0) {
            s->produced--;
            cr_assert_eq(rc, REDQ_EFULL, "redq_produce: %s", redq_err_name(rc));
            s->full = true;
        }
    }
    if (s->on)
        evtimer_add(s->pump, &ms);
}

static void log_cb(int level, int code, const char *msg, void *user)
{
    (void)user;
    (void)level;
    if (getenv("REDQ_TEST_VERBOSE"))
        fprintf(stderr, "redq: %s (%s)\n", msg, code ? redq_err_name(code) : "");
}

static void admin_done(redq_admin *a, int status, const char *errstr,
                       uint64_t n, void *user)
{
    int *st = user;
    (void)a;
    (void)n;
    cr_assert_eq(status, 0, "set_partitions: %s", errstr ? errstr : "");
    *st = 1;
}

static bool flag_set(void *arg)
{
    return *(int *)arg != 0;
}

static bool both_connected(void *arg)
{
    e2e *s = arg;
    redq_producer_stats ps;
    redq_consumer_stats cs;
    redq_producer_get_stats(s->p, &ps);
    redq_consumer_get_stats(s->c, &cs);
    return ps.connected && cs.connected >= POOL;
}

/* Make the queue (P = NPART), the producer and the consumer; start. */
static e2e *stream_start(void)
{
    e2e *s = calloc(1, sizeof *s);
    redq_admin_options ao;
    redq_producer_options po;
    redq_consumer_options co;
    const char *qs[1] = {Q};
    int done = 0;

    cr_assert(s);
    S = s;
    s->rep = calloc(CAP, 1);
    s->seen = calloc(CAP, sizeof *s->seen);
    cr_assert(s->rep && s->seen);

    redq_admin_options_init(&ao);
    ao.url = fxc_url();
    cr_assert_eq(redq_admin_new(&s->a, fx_base(), &ao), 0);
    cr_assert_eq(redq_admin_set_partitions(s->a, Q, NPART, admin_done, &done), 0);
    cr_assert(fx_run_until(flag_set, &done, 10000), "set_partitions unanswered");

    redq_producer_options_init(&po);
    po.url = fxc_url();
    po.log = log_cb;
    po.log_level = getenv("REDQ_TEST_VERBOSE") ? REDQ_LOG_DEBUG : REDQ_LOG_WARN;
    po.on_report = on_report;
    po.on_report_user = s;
    po.on_ready = on_ready;
    po.on_ready_user = s;
    po.min_replicas = 1;
    po.replica_timeout_ms = 1000;
    po.message_timeout_ms = 6000;
    po.command_timeout_ms = 5000;
    po.reconnect_min_ms = 20;
    po.reconnect_max_ms = 300;
    po.max_pending_msgs = 50000;
    cr_assert_eq(redq_producer_new(&s->p, fx_base(), &po), 0);

    redq_consumer_options_init(&co);
    co.url = fxc_url();
    co.log = log_cb;
    co.log_level = REDQ_LOG_WARN;
    co.on_message = on_message;
    co.on_message_user = s;
    co.guarantee = REDQ_AT_LEAST_ONCE;
    co.pool_size = POOL;
    co.pop_timeout_ms = 500;
    co.visibility_timeout_ms = 3000;
    co.command_timeout_ms = 5000;
    co.reconnect_min_ms = 20;
    co.reconnect_max_ms = 300;
    cr_assert_eq(redq_consumer_new(&s->c, fx_base(), &co, qs, 1), 0);
    cr_assert(fx_run_until(both_connected, s, 15000), "not connected");

    s->pump = evtimer_new(fx_base(), pump_cb, s);
    s->on = true;
    pump_cb(-1, 0, s);
    return s;
}

/* ---- the partitions: where they are -------------------------------------- */

typedef struct parts {
    int done;
    size_t n;
    unsigned slot[NPART];
    char name[NPART][128];
} parts;

static void on_parts(redq_admin *a, int status, const char *errstr,
                     const redq_partition_info *p, size_t n, void *user)
{
    parts *ps = user;
    (void)a;
    cr_assert_eq(status, 0, "redq_admin_partitions: %s", errstr ? errstr : "");
    cr_assert_geq(n, NPART);
    for (size_t i = 0; i < NPART; i++) {
        cr_assert_eq(p[i].index, (int)i);
        ps->slot[i] = (unsigned)p[i].slot;
        snprintf(ps->name[i], sizeof ps->name[i], "%s", p[i].name);
    }
    ps->n = n;
    ps->done = 1;
}

static void partitions(e2e *s, parts *ps)
{
    memset(ps, 0, sizeof *ps);
    cr_assert_eq(redq_admin_partitions(s->a, Q, on_parts, ps), 0);
    cr_assert(fx_run_until(flag_set, &ps->done, 10000), "partitions unanswered");
}

/* ---- the end: drain, stop, check ------------------------------------------ */

typedef struct drain_state {
    e2e *s;
    size_t last;       /* deliveries at the last change */
    uint64_t since;    /* when they last changed */
    bool asking;       /* a redq_admin_partitions call is out */
    uint64_t asked_at; /* when it was sent */
    long long depth;   /* ready + processing over every partition, as of
                          an answer sent after the last delivery; -1 */
} drain_state;

static bool all_reported(void *arg)
{
    e2e *s = arg;
    return s->ok + s->failed == s->produced;
}

static void on_depth(redq_admin *a, int status, const char *errstr,
                     const redq_partition_info *p, size_t n, void *user)
{
    drain_state *d = user;
    long long depth = 0;
    (void)a;
    (void)errstr;
    d->asking = false;
    if (status != 0)
        return; /* asked again */
    for (size_t i = 0; i < n; i++)
        depth += (long long)(p[i].ready + p[i].processing);
    /* Only an answer to a question asked after the last delivery counts. */
    d->depth = d->asked_at > d->since ? depth : -1;
}

static bool not_asking(void *arg)
{
    return !((drain_state *)arg)->asking;
}

/* Every message reported ok consumed, and nothing left in any partition
 * (the admin's ready + processing counts: messages stored but reported
 * failed, ENOTREPLICATED ones among them, must be consumed too). */
static bool drained(void *arg)
{
    drain_state *d = arg;
    size_t got = d->s->consumed + d->s->dups;
    bool all = true;
    if (got != d->last) {
        d->last = got;
        d->since = fx_now_us();
        d->depth = -1;
    }
    if (!d->asking && fx_now_us() - d->asked_at > 200000) {
        d->asking = true;
        d->asked_at = fx_now_us();
        if (redq_admin_partitions(d->s->a, Q, on_depth, d) != 0)
            d->asking = false;
    }
    for (size_t i = 0; i < d->s->produced && all; i++)
        all = d->s->rep[i] != 1 || d->s->seen[i] > 0;
    return all && d->depth == 0 && fx_now_us() - d->since > 300000;
}

static void on_c_stopped(redq_consumer *c, int status, void *user)
{
    e2e *s = user;
    (void)c;
    (void)status;
    s->c_stopped = true;
}
static void on_c_closed(void *user)
{
    ((e2e *)user)->c_closed = true;
}
static void on_p_closed(void *user)
{
    ((e2e *)user)->p_closed = true;
}
static void on_a_closed(void *user)
{
    ((e2e *)user)->a_closed = true;
}
static bool flag_bool(void *arg)
{
    return *(bool *)arg;
}

/* Keys of the queue left on every master: lists, sorted sets and sets hold
 * messages or holders; the meta hash (partition count, counters) stays. */
static size_t keys_left(void)
{
    size_t left = 0;
    for (int i = 0; i < FXC_NODES; i++) {
        if (!fxc_alive(i) || !fxc_is_master(i))
            continue;
        char cursor[32] = "0";
        do {
            redisReply *r = fxc_cmd(i, "SCAN %s MATCH *%s* COUNT 1000", cursor, Q);
            cr_assert(r && r->type == REDIS_REPLY_ARRAY && r->elements == 2);
            snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
            for (size_t k = 0; k < r->element[1]->elements; k++) {
                const char *key = r->element[1]->element[k]->str;
                redisReply *t = fxc_cmd(i, "TYPE %s", key);
                cr_assert(t && t->type == REDIS_REPLY_STATUS);
                if (strcmp(t->str, "hash") != 0) {
                    fprintf(stderr, "left on node %d: %s (%s)\n", i, key, t->str);
                    left++;
                }
                freeReplyObject(t);
            }
            freeReplyObject(r);
        } while (strcmp(cursor, "0") != 0);
    }
    return left;
}

/* Stop producing, flush, drain, stop and close; check everything. */
static void stream_finish(e2e *s, const char *what)
{
    drain_state d = {s, 0, fx_now_us(), false, 0, -1};
    size_t unacked_ok = 0, nparts = 0;

    s->on = false;
    event_del(s->pump);
    phase("all reported?");
    if (getenv("REDQ_TEST_VERBOSE") && s->ok + s->failed < s->produced) {
        /* Where the unanswered commands are: each master's clients. */
        fx_run_for(1000);
        for (int i = 0; i < FXC_NODES; i++) {
            redisReply *r = fxc_alive(i) && fxc_is_master(i) ? fxc_cmd(i, "CLIENT LIST") : NULL;
            if (r && r->type == REDIS_REPLY_STRING)
                fprintf(stderr, "node %d (port %d) clients:\n%s", i, fxc_port(i), r->str);
            if (r)
                freeReplyObject(r);
        }
    }
    cr_assert(fx_run_until(all_reported, s, 40000),
              "%s: %zu of %zu reported", what, s->ok + s->failed, s->produced);
    phase("reported");
    cr_assert(fx_run_until(drained, &d, 30000),
              "%s: not drained: %lld messages in the partitions", what, d.depth);
    cr_assert(fx_run_until(not_asking, &d, 10000), "admin call unanswered");
    phase("drained");
    cr_assert_eq(redq_consumer_stop(s->c, 10000, on_c_stopped, s), 0);
    cr_assert(fx_run_until(flag_bool, &s->c_stopped, 15000), "stop");
    cr_assert_eq(redq_consumer_close(s->c, on_c_closed, s), 0);
    cr_assert_eq(redq_producer_close(s->p, on_p_closed, s), 0);
    cr_assert_eq(redq_admin_close(s->a, on_a_closed, s), 0);
    cr_assert(fx_run_until(flag_bool, &s->c_closed, 10000));
    cr_assert(fx_run_until(flag_bool, &s->p_closed, 10000));
    cr_assert(fx_run_until(flag_bool, &s->a_closed, 10000));
    event_free(s->pump);

    for (size_t i = 0; i < s->produced; i++)
        if (s->rep[i] == 1 && s->seen[i] == 0)
            unacked_ok++;
    for (int i = 0; i < NPART; i++)
        nparts += s->per_part[i] > 0;
    fprintf(stderr,
            "cluster e2e %s: produced %zu (%zu keyed), ok %zu, failed %zu "
            "(first: %s %s), consumed %zu, duplicates %zu; by partition:",
            what, s->produced, s->keyed, s->ok, s->failed,
            s->failed ? redq_err_name(s->first_fail) : "-", s->first_errstr,
            s->consumed, s->dups);
    for (int i = 0; i < NPART; i++)
        fprintf(stderr, " %zu", s->per_part[i]);
    fprintf(stderr, "; after the operation:");
    for (int i = 0; i < NPART; i++)
        fprintf(stderr, " %zu", s->after[i]);
    fprintf(stderr, "\n");

    cr_assert_eq(s->foreign, 0, "%s: %zu messages nobody sent", what, s->foreign);
    cr_assert_eq(s->corrupt, 0, "%s: %zu payloads changed", what, s->corrupt);
    cr_assert_eq(unacked_ok, 0, "%s: %zu messages reported ok never consumed",
                 what, unacked_ok);
    cr_assert_eq(s->per_part[NPART], 0, "%s: partition index out of range", what);
    cr_assert_eq(nparts, NPART, "%s: not every partition carried messages", what);
    for (int i = 0; i < NPART; i++)
        cr_assert_gt(s->after[i], 0,
                     "%s: partition %d delivered nothing produced after the "
                     "cluster operation", what, i);
    cr_assert_gt(s->ok, 5000, "%s: stream too thin (%zu ok)", what, s->ok);
    cr_assert_leq(s->dups, MAX_DUPS, "%s: %zu duplicates", what, s->dups);
    cr_assert_eq(keys_left(), 0, "%s: keys of the queue left behind", what);

    free(s->rep);
    free(s->seen);
    free(s);
    S = NULL;
}

/* The cluster operation is over: every partition must deliver messages
 * produced from now on (stream_finish checks), i.e. each partition's
 * producer and consumer followed its slot to wherever it went. */
static void mark_after(e2e *s)
{
    s->mark = s->produced;
}

/* Run the stream for ms milliseconds. */
static void stream_for(int ms)
{
    fx_run_for(ms);
}


static bool is_master_cond(void *arg)
{
    return fxc_is_master(*(int *)arg);
}

/* ---- the tests ------------------------------------------------------------ */

static void fini(void)
{
    fxc_stop();
    fx_teardown();
}

static void init(void)
{
    fx_setup_noserver();
    fxc_start();
}

TestSuite(cluster_e2e, .init = init, .fini = fini, .timeout = 120);

/* The first slot of the master that owns `slot` in a fresh cluster (redis-cli
 * --cluster create gives each of 3 masters one contiguous third). */
static unsigned range_start(unsigned slot)
{
    return slot < 5461 ? 0 : slot < 10923 ? 5461 : 10923;
}

Test(cluster_e2e, reshard_moved_and_ask)
{
    e2e *s = stream_start();
    parts ps;
    partitions(s, &ps);
    stream_for(300);

    /* MOVED: redis-cli moves a master's lowest slots first; move every slot
     * of partition 0's master up to its highest partition slot there. */
    unsigned base = range_start(ps.slot[0]), top = ps.slot[0];
    int a = fxc_master_of_slot(ps.slot[0]);
    for (int i = 0; i < NPART; i++)
        if (range_start(ps.slot[i]) == base && ps.slot[i] > top)
            top = ps.slot[i];
    int b = fxc_master_of_slot((base + 5461) % 16384);
    cr_assert(a >= 0 && b >= 0 && a != b);
    phase("reshard start");
    pid_t pid = fxc_reshard_start(a, b, (int)(top - base + 1));
    uint64_t t0 = fx_now_us();
    while (!fxc_child_done(pid)) {
        cr_assert_lt(fx_now_us() - t0, 60000000u, "reshard takes too long");
        stream_for(50);
    }
    for (int i = 0; i < NPART; i++)
        if (range_start(ps.slot[i]) == base)
            cr_assert_eq(fxc_master_of_slot(ps.slot[i]), b,
                         "partition %d's slot %u did not move", i, ps.slot[i]);
    phase("reshard done");
    stream_for(500);
    phase("ask start");

    /* ASK: partition 0's slot (now on b) migrates to c by hand; its keys
     * move while the stream runs, and the slot is handed over afterwards. */
    int c = fxc_master_of_slot((base + 2 * 5461) % 16384);
    cr_assert(c >= 0 && c != b);
    fxc_migrate_begin(ps.slot[0], b, c);
    stream_for(200);
    fxc_migrate_keys(ps.slot[0], b, c);
    stream_for(400);
    fxc_migrate_keys(ps.slot[0], b, c); /* what landed on b meanwhile */
    phase("keys moved");
    fxc_migrate_end(ps.slot[0], b, c);
    phase("migrate end");
    mark_after(s);
    stream_for(500);
    phase("finish");
    cr_assert_eq(fxc_master_of_slot(ps.slot[0]), c);
    stream_finish(s, "reshard");
}

Test(cluster_e2e, cluster_failover)
{
    e2e *s = stream_start();
    parts ps;
    partitions(s, &ps);
    stream_for(300);
    int m = fxc_master_of_slot(ps.slot[1]);
    int r = fxc_replica_of(m);
    cr_assert(r >= 0);
    bool promoted = false;
    /* Asked again when a manual failover times out under load. */
    for (int attempt = 0; attempt < 3 && !promoted; attempt++) {
        fxc_failover_start(r);
        promoted = fx_run_until(is_master_cond, &r, 7000);
    }
    phase("promoted");
    cr_assert(promoted, "node %d never became master", r);
    mark_after(s);
    stream_for(1000);
    cr_assert_eq(fxc_master_of_slot(ps.slot[1]), r);
    stream_finish(s, "failover");
}

Test(cluster_e2e, sigkill_master)
{
    e2e *s = stream_start();
    parts ps;
    partitions(s, &ps);
    stream_for(500);
    int m = fxc_master_of_slot(ps.slot[2]);
    int r = fxc_replica_of(m);
    cr_assert(r >= 0);
    phase("kill");
    fxc_kill(m);
    cr_assert(fx_run_until(is_master_cond, &r, 30000), "node %d never promoted", r);
    phase("promoted");
    mark_after(s);
    stream_for(2000);
    fxc_wait_ok(30000);
    phase("cluster ok");
    stream_finish(s, "sigkill");
}
