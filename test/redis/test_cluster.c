/*
 * The Redis Cluster router (lib/cluster.c) against a real throwaway cluster
 * (fixture_cluster.c: 3 masters, 3 replicas on loopback): every redq script
 * without CROSSSLOT, per-slot order through resharding (MOVED) and a
 * half-way migration (ASK), failover by CLUSTER FAILOVER and by SIGKILL,
 * and a pinned connection that follows its slot.
 *
 * Each test starts its own cluster (a few seconds): the failover tests
 * leave theirs changed for good, and criterion runs each test in a process
 * of its own. Each test deletes its keys and checks the cluster is empty.
 */
#define _DEFAULT_SOURCE

#include "fixture.h"
#include "fixture_cluster.h"
#include "redq_private.h"

#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

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

TestSuite(cluster, .init = init, .fini = fini, .timeout = 180);

/* ---- the router, made one way in every test ---------------------------- */

static redq__logger quiet = {NULL, 0, NULL, "cluster"};
static redq__url url;

/* The one place that builds a connection config (a rename of options
 * touches only this). */
static void test_conn_config(redq__conn_config *cfg)
{
    char err[256];
    if (url.nnodes == 0)
        cr_assert_eq(redq__url_parse(&url, fxc_url(), err, sizeof err), 0,
                     "%s", err);
    memset(cfg, 0, sizeof *cfg);
    cfg->url = &url;
    cfg->connect_timeout_ms = 2000;
    cfg->command_timeout_ms = 10000;
    cfg->reconnect_min_ms = 20;
    cfg->reconnect_max_ms = 300;
    cfg->log = &quiet;
}

static bool cl_ready(void *arg)
{
    return redq__cluster_ready(arg);
}

static redq__cluster *router(void)
{
    redq__conn_config cfg;
    redq__cluster *cl;
    test_conn_config(&cfg);
    cr_assert_eq(redq__cluster_new(&cl, fx_base(), &cfg), 0);
    redq__cluster_start(cl);
    cr_assert(fx_run_until(cl_ready, cl, 10000), "no slot map");
    return cl;
}

static void router_free(redq__cluster *cl)
{
    redq__cluster_free(cl);
    redq__url_free(&url);
}

/* ---- replies ------------------------------------------------------------ */

typedef struct rec {
    unsigned answers; /* must end at exactly 1 */
    int type;         /* REDIS_REPLY_*, 0 for NULL */
    long long integer;
    char str[96];
} rec;

typedef struct stream stream;
static stream *live_stream; /* refilled from inside reply callbacks */
static void stream_fill(stream *s);

static void record(redq__cluster *cl, void *reply, void *arg)
{
    rec *r = arg;
    redisReply *e = reply;
    (void)cl;
    r->answers++;
    r->type = e ? e->type : 0;
    if (e && e->type == REDIS_REPLY_INTEGER)
        r->integer = e->integer;
    if (e && (e->type == REDIS_REPLY_ERROR || e->type == REDIS_REPLY_STRING ||
              e->type == REDIS_REPLY_STATUS))
        snprintf(r->str, sizeof r->str, "%.*s", (int)e->len, e->str);
    /* As a producer does: the next commands go out from the reply
     * callback, between the replies of one read, so they meet commands
     * of their slot that are being redirected. */
    if (live_stream != NULL)
        stream_fill(live_stream);
}

/* Format argv and route it by the slot of `slot_key`. */
static void sendv(redq__cluster *cl, const char *slot_key, size_t klen,
                  int script, int argc, const char **argv, const size_t *lens,
                  rec *r)
{
    char *cmd = NULL;
    long long n = redisFormatCommandArgv(&cmd, argc, argv, lens);
    cr_assert(n > 0);
    cr_assert_eq(redq__cluster_send(cl, redq__cluster_key_slot(slot_key, klen),
                                    cmd, (size_t)n, script, 0, record, r),
                 0);
    redisFreeCommand(cmd);
}

typedef struct waitall {
    rec *recs;
    size_t n;
} waitall;

static bool all_answered(void *arg)
{
    waitall *w = arg;
    for (size_t i = 0; i < w->n; i++)
        if (w->recs[i].answers == 0)
            return false;
    return true;
}

static void wait_all(rec *recs, size_t n, int ms)
{
    waitall w = {recs, n};
    cr_assert(fx_run_until(all_answered, &w, ms), "commands unanswered");
    for (size_t i = 0; i < n; i++)
        cr_assert_eq(recs[i].answers, 1, "command %zu answered %u times", i,
                     recs[i].answers);
}

/* ---- classification ----------------------------------------------------- */

Test(cluster_errors, redirect_words)
{
    cr_assert_eq(redq__err_cluster("MOVED 1 h:1", 11), REDQ__REDIR_MOVED);
    cr_assert_eq(redq__err_cluster("ASK 1 h:1", 9), REDQ__REDIR_ASK);
    cr_assert_eq(redq__err_cluster("TRYAGAIN x", 10), REDQ__REDIR_TRYAGAIN);
    cr_assert_eq(redq__err_cluster("CLUSTERDOWN x", 13),
                 REDQ__REDIR_CLUSTERDOWN);
    cr_assert_eq(redq__err_cluster("ASKING", 6), REDQ__REDIR_NONE);
    cr_assert_eq(redq__err_cluster("MOVEDX", 6), REDQ__REDIR_NONE);
    cr_assert_eq(redq__err_cluster("ERR x", 5), REDQ__REDIR_NONE);
    cr_assert_eq(redq__err_cluster(NULL, 0), REDQ__REDIR_NONE);
}

/* ---- every script, every key layout: no CROSSSLOT ----------------------- */

/* Keys of queue q by suffix ("" is q itself), malloc'd. */
static char *qkey(const char *q, const char *suffix)
{
    if (!*suffix)
        return strdup(q);
    char *k = redq__key(q, strlen(q), suffix);
    cr_assert_not_null(k);
    return k;
}

typedef struct script_call {
    int script;
    const char *keys[10]; /* suffixes, NULL-terminated */
    const char *args[8];  /* NULL-terminated */
} script_call;

/* Each script with the KEYS and ARGV its header documents (lib/scripts/),
 * in an order that gives most of them something to do. */
static const script_call calls[] = {
    {REDQ__SCRIPT_HEARTBEAT, {"consumers", "hb:h1"}, {"60000", "h1"}},
    {REDQ__SCRIPT_TAKE,
     {"due", "", "fproc:h1", "proc:h1", "consumers", "meta"},
     {"10", "h1"}},
    {REDQ__SCRIPT_ACK, {"proc:h1", "meta"}, {"m1"}},
    {REDQ__SCRIPT_ACKFAST, {"proc:h1", "meta"}, {"1", "m2", "m2"}},
    {REDQ__SCRIPT_SETTLE,
     {"proc:h1", "delayed", "meta"},
     {"retry", "m3", "RQ1 id=x a=1\nm3", "0", "1"}},
    {REDQ__SCRIPT_DELAY, {"delayed"}, {"0", "RQ1 id=y\nm4"}},
    {REDQ__SCRIPT_PROMOTE, {"delayed", "due", "meta"}, {"10"}},
    {REDQ__SCRIPT_REAPSCAN,
     {"consumers", "reaper", "hb:h2"},
     {"h1", "1000", "h2"}},
    {REDQ__SCRIPT_REAP,
     {"due", "dead", "consumers", "proc:h2", "fproc:h2", "hb:h2", "meta"},
     {"h2", "5", "10", "p-", "q"}},
    {REDQ__SCRIPT_RETURN,
     {"", "due", "proc:h1", "fproc:h1", "consumers", "hb:h1"},
     {"stop", "0", "0", "h1"}},
    {REDQ__SCRIPT_SETTLE,
     {"proc:h1", "dead", "meta"},
     {"dead", "m5", "RQ1 id=z\nm5", "0", "0"}},
    {REDQ__SCRIPT_DEADONE, {"dead", "due"}, {"requeue", "z", "0", "10"}},
    {REDQ__SCRIPT_DEADREQUEUE, {"dead", "due"}, {"10"}},
    {REDQ__SCRIPT_SNAPSHOT,
     {"", "due", "delayed", "dead", "consumers", "meta", "hb:h1", "proc:h1",
      "fproc:h1"},
     {"h1"}},
    {REDQ__SCRIPT_PEEK, {"due", "", "meta"}, {"10"}},
    {REDQ__SCRIPT_PURGE, {"dead"}, {NULL}},
    {REDQ__SCRIPT_SETFORMAT, {"", "meta"}, {"frames"}},
    {REDQ__SCRIPT_PUSH, {"", "meta"}, {"RQ1 id=p-1 ts=1\nm6"}},
};

static void run_scripts(redq__cluster *cl, const char *q)
{
    redq__scripts sh;
    bool seen[REDQ__SCRIPT_COUNT] = {false};
    size_t nc = sizeof calls / sizeof calls[0];
    rec recs[sizeof calls / sizeof calls[0] + 1];
    char nk[8];
    memset(recs, 0, sizeof recs);
    redq__scripts_init(&sh);

    /* Something to take. */
    {
        const char *argv[] = {"LPUSH", q, "m1", "m2", "m3", "m5"};
        sendv(cl, q, strlen(q), -1, 6, argv, NULL, &recs[nc]);
    }
    for (size_t i = 0; i < nc; i++) {
        const script_call *c = &calls[i];
        const char *argv[24];
        char *owned[10];
        size_t nkeys = 0, argc = 0;
        while (c->keys[nkeys])
            nkeys++;
        argv[argc++] = "EVALSHA";
        argv[argc++] = sh.sha[c->script];
        snprintf(nk, sizeof nk, "%zu", nkeys);
        argv[argc++] = nk;
        for (size_t k = 0; k < nkeys; k++)
            argv[argc++] = owned[k] = qkey(q, c->keys[k]);
        for (size_t k = 0; c->args[k]; k++)
            argv[argc++] = c->args[k];
        sendv(cl, q, strlen(q), c->script, (int)argc, argv, NULL, &recs[i]);
        for (size_t k = 0; k < nkeys; k++)
            free(owned[k]);
        seen[c->script] = true;
    }
    for (int s = 0; s < REDQ__SCRIPT_COUNT; s++)
        cr_assert(seen[s], "script %d not exercised", s);
    wait_all(recs, nc + 1, 20000);
    for (size_t i = 0; i <= nc; i++)
        cr_assert_neq(recs[i].type, REDIS_REPLY_ERROR,
                      "queue \"%.40s\" (%zu bytes), call %zu (script %d): %s",
                      q, strlen(q), i, i < nc ? calls[i].script : -1,
                      recs[i].str);
}

static void del_queue_keys(redq__cluster *cl, const char *q)
{
    static const char *const sfx[] = {
        "", "due", "delayed", "dead", "consumers", "reaper", "meta",
        "proc:h1", "fproc:h1", "hb:h1", "proc:h2", "fproc:h2", "hb:h2"};
    size_t n = sizeof sfx / sizeof sfx[0];
    rec recs[sizeof sfx / sizeof sfx[0]];
    memset(recs, 0, sizeof recs);
    for (size_t i = 0; i < n; i++) {
        char *k = qkey(q, sfx[i]);
        const char *argv[] = {"DEL", k};
        sendv(cl, q, strlen(q), -1, 2, argv, NULL, &recs[i]);
        free(k);
    }
    wait_all(recs, n, 10000);
}

Test(cluster, every_script_every_layout_no_crossslot)
{
    char longname[REDQ__MAX_QUEUE_NAME + 1];
    /* No tag ("{q}/sfx"), its own tag ("{orders}:sfx"), a '}' without a
     * tag (searched tag), and the longest name (with a '}' too). */
    memset(longname, 'n', REDQ__MAX_QUEUE_NAME);
    longname[500] = '}';
    longname[REDQ__MAX_QUEUE_NAME] = '\0';
    const char *queues[] = {"jobs", "{orders}", "a}b", longname};
    redq__cluster *cl = router();

    for (size_t i = 0; i < 4; i++)
        run_scripts(cl, queues[i]);

    /* The control: a script whose keys span two slots is refused, so the
     * runs above were checked by a cluster that would have said so. */
    {
        redq__scripts sh;
        rec r = {0};
        char *k1 = qkey("jobs", "due"), *k2 = qkey("{orders}", "due");
        redq__scripts_init(&sh);
        cr_assert_neq(redq__key_slot(k1, strlen(k1)),
                      redq__key_slot(k2, strlen(k2)));
        const char *argv[] = {"EVALSHA", sh.sha[REDQ__SCRIPT_PEEK], "2", k1,
                              k2, "1"};
        sendv(cl, "jobs", 4, REDQ__SCRIPT_PEEK, 6, argv, NULL, &r);
        wait_all(&r, 1, 10000);
        cr_assert_eq(r.type, REDIS_REPLY_ERROR);
        cr_assert(strstr(r.str, "CROSSSLOT") != NULL, "%s", r.str);
        free(k1);
        free(k2);
    }
    for (size_t i = 0; i < 4; i++)
        del_queue_keys(cl, queues[i]);
    router_free(cl);
    cr_assert_eq(fxc_dbsize(), 0, "keys left behind");
}

/* ---- a stream of LPUSHes ------------------------------------------------ */

#define MAXKEYS 96
#define MAXCMDS 150000
/* Commands per millisecond at most: enough to keep every slot busy through
 * a reshard, bounded so that a slow step cannot exhaust MAXCMDS. */
#define RATE_PER_MS 20
#define BURST 4

struct stream {
    redq__cluster *cl;
    size_t nkeys;
    char keys[MAXKEYS][32];
    size_t pushes[MAXKEYS];   /* LPUSHes sent per key */
    size_t sent, window;
    bool on;                  /* keep the window full */
    uint64_t t0_us;           /* when the stream started (the pace) */
    rec *recs;                /* per command */
    unsigned *key_of, *seq_of;
    bool *is_wait;
    size_t wait_every;        /* 0: no WAITs; else a WAIT 1 after each n */
    size_t *wait_covers;      /* WAIT: pushes of its key sent before it */
    size_t cap;
};

static stream *stream_new(redq__cluster *cl)
{
    stream *s = calloc(1, sizeof *s);
    s->cl = cl;
    s->window = 128;
    s->cap = MAXCMDS;
    s->recs = calloc(s->cap, sizeof *s->recs);
    s->key_of = calloc(s->cap, sizeof *s->key_of);
    s->seq_of = calloc(s->cap, sizeof *s->seq_of);
    s->is_wait = calloc(s->cap, sizeof *s->is_wait);
    s->wait_covers = calloc(s->cap, sizeof *s->wait_covers);
    cr_assert(s->recs && s->key_of && s->seq_of && s->is_wait &&
              s->wait_covers);
    live_stream = s;
    return s;
}

static void stream_free(stream *s)
{
    live_stream = NULL;
    free(s->recs);
    free(s->key_of);
    free(s->seq_of);
    free(s->is_wait);
    free(s->wait_covers);
    free(s);
}

/* A key "k{<tag>}" for each slot wanted (slots[i]), by search. */
static void stream_keys_for_slots(stream *s, const unsigned *slots, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        for (unsigned t = 0;; t++) {
            char tag[16];
            int tl = snprintf(tag, sizeof tag, "%u", t);
            if (redq__key_slot(tag, (size_t)tl) == slots[i]) {
                snprintf(s->keys[s->nkeys++], sizeof s->keys[0], "k{%s}",
                         tag);
                break;
            }
        }
    }
}

static size_t outstanding(const stream *s)
{
    size_t n = 0;
    /* The window is small; the scan is from the tail of what was sent. */
    for (size_t i = s->sent; i > 0 && s->sent - i < 4 * s->window + 64; i--)
        if (s->recs[i - 1].answers == 0)
            n++;
    return n;
}

static void stream_one(stream *s)
{
    size_t id = s->sent;
    /* Bursts of BURST to one key: several commands of a slot in flight at
     * once, which is what a redirect could reorder. */
    unsigned k = (unsigned)((id / BURST) % s->nkeys);
    char val[24];
    cr_assert(id < s->cap, "stream ran out of room");
    s->key_of[id] = k;
    if (s->wait_every && s->pushes[k] > 0 &&
        s->pushes[k] % s->wait_every == 0 && !s->is_wait[id ? id - 1 : 0]) {
        const char *argv[] = {"WAIT", "1", "1000"};
        s->is_wait[id] = true;
        s->wait_covers[id] = s->pushes[k];
        s->sent++;
        sendv(s->cl, s->keys[k], strlen(s->keys[k]), -1, 3, argv, NULL,
              &s->recs[id]);
        return;
    }
    snprintf(val, sizeof val, "%zu", s->pushes[k]);
    s->seq_of[id] = (unsigned)s->pushes[k]++;
    s->sent++;
    const char *argv[] = {"LPUSH", s->keys[k], val};
    sendv(s->cl, s->keys[k], strlen(s->keys[k]), -1, 3, argv, NULL,
          &s->recs[id]);
}

static void stream_fill(stream *s)
{
    if (!s->on)
        return;
    if (s->t0_us == 0)
        s->t0_us = fx_now_us();
    size_t allowed = (size_t)((fx_now_us() - s->t0_us) / 1000u) * RATE_PER_MS;
    for (size_t n = outstanding(s);
         n < s->window && s->sent < s->cap && s->sent < allowed; n++)
        stream_one(s);
}

/* fx_run_until conditions that keep the stream going meanwhile. */
typedef struct until {
    stream *s;
    pid_t child;     /* > 0: until it exits */
    int master;      /* >= 0: until node `master` says role:master */
    uint64_t end_us; /* else: until then */
    uint64_t next_check_us;
} until;

static bool until_cb(void *arg)
{
    until *u = arg;
    uint64_t now = fx_now_us();
    stream_fill(u->s);
    if (u->child > 0)
        return fxc_child_done(u->child);
    if (u->master >= 0) {
        if (now < u->next_check_us)
            return false;
        u->next_check_us = now + 50000; /* a blocking check: not too often */
        return fxc_is_master(u->master);
    }
    return now >= u->end_us;
}

static void stream_for(stream *s, int ms)
{
    until u = {s, 0, -1, fx_now_us() + (uint64_t)ms * 1000u, 0};
    fx_run_until(until_cb, &u, ms + 1000);
}

static void stream_until_child(stream *s, pid_t pid, int ms)
{
    until u = {s, pid, -1, 0, 0};
    cr_assert(fx_run_until(until_cb, &u, ms), "child still running");
}

static bool stream_until_master(stream *s, int node, int ms)
{
    until u = {s, 0, node, 0, 0};
    return fx_run_until(until_cb, &u, ms);
}

static void stream_drain(stream *s)
{
    waitall w = {s->recs, s->sent};
    s->on = false;
    if (!fx_run_until(all_answered, &w, 30000)) {
        redq__cluster_stats st;
        size_t i = 0, n = 0;
        while (s->recs[i].answers)
            i++;
        for (size_t j = i; j < s->sent; j++)
            n += s->recs[j].answers == 0;
        redq__cluster_get_stats(s->cl, &st);
        cr_assert_fail("%zu commands unanswered, first %zu (%s, slot %u, "
                       "wait %d); waiting %zu, moved %llu, lost %llu, "
                       "expired %llu, refreshes %llu, nodes %zu",
                       n, i, s->keys[s->key_of[i]],
                       redq__key_slot(s->keys[s->key_of[i]],
                                      strlen(s->keys[s->key_of[i]])),
                       s->is_wait[i], st.waiting,
                       (unsigned long long)st.moved,
                       (unsigned long long)st.lost,
                       (unsigned long long)st.expired,
                       (unsigned long long)st.refreshes, st.nodes);
    }
    wait_all(s->recs, s->sent, 1000);
}

/* The list of key k, oldest first (LRANGE from its owner). */
static size_t read_list(const stream *s, size_t k, long long *out, size_t cap)
{
    int o = fxc_master_of_slot(redq__key_slot(s->keys[k],
                                              strlen(s->keys[k])));
    cr_assert(o >= 0);
    redisReply *r = fxc_cmd(o, "LRANGE %s 0 -1", s->keys[k]);
    cr_assert(r && r->type == REDIS_REPLY_ARRAY, "LRANGE %s", s->keys[k]);
    size_t n = r->elements;
    cr_assert(n <= cap);
    for (size_t i = 0; i < n; i++)
        out[n - 1 - i] = atoll(r->element[i]->str); /* LPUSH: newest first */
    freeReplyObject(r);
    return n;
}

static void stream_del_keys(stream *s)
{
    rec recs[MAXKEYS];
    memset(recs, 0, sizeof recs);
    for (size_t k = 0; k < s->nkeys; k++) {
        const char *argv[] = {"DEL", s->keys[k]};
        sendv(s->cl, s->keys[k], strlen(s->keys[k]), -1, 2, argv, NULL,
              &recs[k]);
    }
    wait_all(recs, s->nkeys, 20000);
}

/* Every command answered once and every LPUSH ok; each list holds exactly
 * 0..n-1 in push order, and each LPUSH's reply was its own position. */
static void check_all_ok_in_order(stream *s)
{
    static long long vals[MAXCMDS];
    for (size_t i = 0; i < s->sent; i++) {
        cr_assert_eq(s->recs[i].answers, 1);
        cr_assert_eq(s->recs[i].type, REDIS_REPLY_INTEGER,
                     "command %zu: type %d %s", i, s->recs[i].type,
                     s->recs[i].str);
        cr_assert_eq(s->recs[i].integer, (long long)s->seq_of[i] + 1,
                     "LPUSH %zu to %s answered length %lld, want %u", i,
                     s->keys[s->key_of[i]], s->recs[i].integer,
                     s->seq_of[i] + 1);
    }
    for (size_t k = 0; k < s->nkeys; k++) {
        size_t n = read_list(s, k, vals, MAXCMDS);
        cr_assert_eq(n, s->pushes[k], "%s: %zu values, want %zu", s->keys[k],
                     n, s->pushes[k]);
        for (size_t i = 0; i < n; i++)
            cr_assert_eq(vals[i], (long long)i, "%s[%zu] = %lld: order lost",
                         s->keys[k], i, vals[i]);
    }
}

Test(cluster, order_kept_through_reshard_and_ask)
{
    redq__cluster *cl = router();
    stream *s = stream_new(cl);
    redq__cluster_stats st;

    /* Node A serves slot 0; redis-cli moves its lowest slots first. */
    int a = fxc_master_of_slot(0);
    int b = fxc_master_of_slot(16383);
    cr_assert(a >= 0 && b >= 0 && a != b);
    unsigned slots[MAXKEYS];
    size_t n = 0;
    /* Few keys, so that each has several commands in flight at once. */
    for (unsigned i = 0; i < 48; i += 8)
        slots[n++] = i + 5; /* moving: 5, 13, ..., 45 */
    slots[n++] = 6000;                      /* elsewhere, not moving */
    slots[n++] = 12000;
    stream_keys_for_slots(s, slots, n);

    s->on = true;
    stream_for(s, 200);
    pid_t pid = fxc_reshard_start(a, b, 48);
    stream_until_child(s, pid, 120000);
    stream_for(s, 300);
    for (unsigned i = 0; i < 48; i++)
        cr_assert_eq(fxc_master_of_slot(i), b, "slot %u did not move", i);
    redq__cluster_get_stats(cl, &st);
    cr_assert_gt(st.moved, 0, "no MOVED followed during the reshard");

    /* Half-way: slot 5 (now on b) migrating to c, its key already moved:
     * the old owner answers ASK for it until the migration ends. */
    int c = fxc_master_of_slot(8000);
    cr_assert(c >= 0 && c != a && c != b);
    uint64_t ask_before = st.ask, moved_before = st.moved;
    fxc_migrate_begin(5, b, c);
    stream_for(s, 100);
    fxc_migrate_keys(5, b, c);
    stream_for(s, 300);
    redq__cluster_get_stats(cl, &st);
    cr_assert_gt(st.ask, ask_before,
                 "no ASK followed during the migration (sent %zu, waiting "
                 "%zu, moved %llu, held %llu)",
                 s->sent, st.waiting, (unsigned long long)st.moved,
                 (unsigned long long)st.held);
    fxc_migrate_end(5, b, c);
    stream_for(s, 300);
    stream_drain(s);
    redq__cluster_get_stats(cl, &st);
    cr_assert_gt(st.moved, moved_before, "no MOVED after the migration");
    cr_assert_eq(fxc_master_of_slot(5), c);
    cr_assert_gt(s->sent, 2000, "stream too thin: %zu", s->sent);

    check_all_ok_in_order(s);
    fprintf(stderr,
            "cluster reshard: %zu commands, moved %llu, ask %llu, held %llu, "
            "resent %llu, refreshes %llu\n",
            s->sent, (unsigned long long)st.moved,
            (unsigned long long)st.ask, (unsigned long long)st.held,
            (unsigned long long)st.resent, (unsigned long long)st.refreshes);
    stream_del_keys(s);
    stream_free(s);
    router_free(cl);
    cr_assert_eq(fxc_dbsize(), 0, "keys left behind");
}

/* ---- failover ------------------------------------------------------------ */

/*
 * After a failover, for each key: the values present are in push order and
 * none is there twice, and every LPUSH answered ok is there, except (when
 * `doomed` is given: the keys of a master that was SIGKILLed) those its
 * dead master answered after the last WAIT that one replica confirmed and
 * before the promotion (command index < idx_promoted): Redis replicates
 * asynchronously, and that window is what a kill may lose (the producer's
 * min_replicas closes it the same way, with WAIT). Those are counted in
 * *window_lost. A NULL (outcome unknown) or an error may or may not be
 * there.
 */
static void check_nothing_ok_missing(stream *s, const bool *doomed,
                                     size_t idx_promoted, size_t *ok_out,
                                     size_t *unknown_out, size_t *window_lost)
{
    static long long vals[MAXCMDS];
    size_t *confirmed = calloc(s->nkeys, sizeof *confirmed);
    size_t ok = 0, unknown = 0, lost = 0;
    for (size_t i = 0; i < s->sent; i++) {
        cr_assert_eq(s->recs[i].answers, 1, "command %zu answered %u times",
                     i, s->recs[i].answers);
        if (s->is_wait[i] && s->recs[i].type == REDIS_REPLY_INTEGER &&
            s->recs[i].integer >= 1 &&
            s->wait_covers[i] > confirmed[s->key_of[i]])
            confirmed[s->key_of[i]] = s->wait_covers[i];
    }
    for (size_t k = 0; k < s->nkeys; k++) {
        size_t n = read_list(s, k, vals, MAXCMDS);
        char *present = calloc(s->pushes[k] + 1, 1);
        for (size_t i = 0; i < n; i++) {
            cr_assert(vals[i] >= 0 && (size_t)vals[i] < s->pushes[k]);
            cr_assert(!present[vals[i]], "%s: %lld twice", s->keys[k],
                      vals[i]);
            present[vals[i]] = 1;
            if (i > 0)
                cr_assert_gt(vals[i], vals[i - 1], "%s: order lost",
                             s->keys[k]);
        }
        for (size_t i = 0; i < s->sent; i++) {
            if (s->key_of[i] != k || s->is_wait[i])
                continue;
            if (s->recs[i].type != REDIS_REPLY_INTEGER) {
                unknown++;
                continue;
            }
            ok++;
            bool must = doomed == NULL || !doomed[k] ||
                        s->seq_of[i] < confirmed[k] || i >= idx_promoted;
            if (must)
                cr_assert(present[s->seq_of[i]],
                          "%s: value %u answered ok but missing (command "
                          "%zu, confirmed below %zu)",
                          s->keys[k], s->seq_of[i], i, confirmed[k]);
            else if (!present[s->seq_of[i]])
                lost++;
        }
        free(present);
    }
    free(confirmed);
    *ok_out = ok;
    *unknown_out = unknown;
    *window_lost = lost;
}

static void keys_on_every_master(stream *s)
{
    unsigned slots[24];
    for (unsigned i = 0; i < 24; i++)
        slots[i] = i * 683 + 7; /* spread over all three masters */
    stream_keys_for_slots(s, slots, 24);
}

Test(cluster, failover_by_cluster_failover)
{
    redq__cluster *cl = router();
    stream *s = stream_new(cl);
    redq__cluster_stats st;
    size_t ok, unknown;
    keys_on_every_master(s);
    int m = fxc_master_of_slot(7);
    int r = fxc_replica_of(m);
    cr_assert(r >= 0);

    s->on = true;
    stream_for(s, 200);
    /* Asked again if a manual failover times out (5 s, under load). */
    bool promoted = false;
    for (int attempt = 0; attempt < 3 && !promoted; attempt++) {
        fxc_failover_start(r); /* returns at once: the stream goes on */
        promoted = stream_until_master(s, r, 7000);
    }
    cr_assert(promoted, "node %d never master", r);
    stream_for(s, 500);
    stream_drain(s);
    redq__cluster_get_stats(cl, &st);
    cr_assert_gt(st.moved, 0, "the demoted master's MOVED not followed");
    cr_assert_eq(fxc_master_of_slot(7), r);
    size_t lost;
    check_nothing_ok_missing(s, NULL, 0, &ok, &unknown, &lost);
    /* A manual failover loses nothing and answers everything. */
    cr_assert_eq(unknown, 0, "%zu commands not answered ok", unknown);
    fprintf(stderr, "cluster failover: %zu ok, moved %llu, lost %llu\n", ok,
            (unsigned long long)st.moved, (unsigned long long)st.lost);
    stream_del_keys(s);
    stream_free(s);
    router_free(cl);
    cr_assert_eq(fxc_dbsize(), 0, "keys left behind");
}

Test(cluster, failover_by_sigkill)
{
    redq__cluster *cl = router();
    stream *s = stream_new(cl);
    redq__cluster_stats st;
    size_t ok, unknown;
    keys_on_every_master(s);
    s->wait_every = 8;
    int m = fxc_master_of_slot(7);
    int r = fxc_replica_of(m);
    cr_assert(r >= 0);

    bool doomed[MAXKEYS];
    for (size_t k = 0; k < s->nkeys; k++)
        doomed[k] = fxc_master_of_slot(redq__key_slot(
                        s->keys[k], strlen(s->keys[k]))) == m;

    s->on = true;
    stream_for(s, 300);
    fxc_kill(m);
    /* A promoted master (7.0) may block a WAIT past its timeout: WAITs
     * confirm what the old masters had, before the kill, and stop here. */
    s->wait_every = 0;
    cr_assert(stream_until_master(s, r, 30000), "node %d never master", r);
    size_t idx_promoted = s->sent;
    stream_for(s, 1500);
    stream_drain(s);
    fxc_wait_ok(30000);
    redq__cluster_get_stats(cl, &st);
    cr_assert_eq(fxc_master_of_slot(7), r);
    size_t window_lost;
    check_nothing_ok_missing(s, doomed, idx_promoted, &ok, &unknown,
                             &window_lost);
    /* The commands to the other masters' slots went on; after the
     * promotion the killed master's slots took writes again. */
    cr_assert_gt(ok, s->sent / 4);
    {
        size_t late_ok = 0;
        for (size_t i = s->sent > 200 ? s->sent - 200 : 0; i < s->sent; i++)
            if (!s->is_wait[i] && s->recs[i].type == REDIS_REPLY_INTEGER &&
                redq__key_slot(s->keys[s->key_of[i]],
                               strlen(s->keys[s->key_of[i]])) == 7)
                late_ok++;
        cr_assert_gt(late_ok, 0, "slot 7 never served again");
    }
    fprintf(stderr,
            "cluster sigkill: %zu commands, %zu LPUSH ok, %zu NULL/error, "
            "%zu ok but unconfirmed and lost, conn lost %llu, expired %llu, "
            "refreshes %llu\n",
            s->sent, ok, unknown, window_lost, (unsigned long long)st.lost,
            (unsigned long long)st.expired,
            (unsigned long long)st.refreshes);
    stream_del_keys(s);
    stream_free(s);
    router_free(cl);
    cr_assert_eq(fxc_dbsize(), 0, "keys left behind");
}

/* ---- pinned connections --------------------------------------------------- */

typedef struct pinrec {
    int ups;
    rec last;
} pinrec;

static void pin_up_cb(redq__conn *c, void *arg)
{
    (void)c;
    ((pinrec *)arg)->ups++;
}

static void pin_reply(redq__conn *c, void *reply, void *arg)
{
    (void)c;
    record(NULL, reply, arg);
}

static bool conn_is_ready(void *arg)
{
    return redq__conn_ready(arg);
}

/* Node id the pinned connection talks to. */
static void pin_myid(redq__conn *c, char id[41])
{
    rec r = {0};
    const char *argv[] = {"CLUSTER", "MYID"};
    cr_assert(fx_run_until(conn_is_ready, c, 15000), "pin never ready");
    cr_assert_eq(redq__conn_sendv(c, 2, argv, NULL, 0, pin_reply, &r), 0);
    cr_assert(fx_run_until(all_answered, &(waitall){&r, 1}, 10000));
    cr_assert_eq(r.type, REDIS_REPLY_STRING, "%s", r.str);
    memcpy(id, r.str, 41);
}

/* A write on the pin: ok, or a MOVED that the owner acts on as the
 * router's users will (redirected + reset). Returns the redirect kind. */
static int pin_write(redq__cluster *cl, redq__conn *c, const char *key)
{
    rec r = {0};
    const char *argv[] = {"LPUSH", key, "x"};
    cr_assert(fx_run_until(conn_is_ready, c, 15000), "pin never ready");
    cr_assert_eq(redq__conn_sendv(c, 3, argv, NULL, 0, pin_reply, &r), 0);
    cr_assert(fx_run_until(all_answered, &(waitall){&r, 1}, 10000));
    if (r.type != REDIS_REPLY_ERROR)
        return REDQ__REDIR_NONE;
    redisReply e = {.type = REDIS_REPLY_ERROR, .str = r.str,
                    .len = strlen(r.str)};
    int kind = redq__cluster_redirected(cl, &e);
    cr_assert_eq(kind, REDQ__REDIR_MOVED, "unexpected %s", r.str);
    redq__conn_reset(c, REDQ_EDISCONNECTED, "MOVED: following the slot");
    return kind;
}

/* Write until the pin lands on the owner: a map refreshed from a node that
 * has not heard of the change yet may send it back once more, and the next
 * MOVED corrects it. Returns how many MOVED it took (bounded). */
static int pin_follow(redq__cluster *cl, redq__conn *c, const char *key)
{
    int moved = 0;
    while (pin_write(cl, c, key) == REDQ__REDIR_MOVED)
        cr_assert_lt(++moved, 10, "the pin keeps being redirected");
    return moved;
}

Test(cluster, pinned_connection_follows_its_slot)
{
    redq__cluster *cl = router();
    redq__conn_config cfg;
    redq__cluster_pin *pin;
    pinrec pr = {0};
    char id[41], want[41];
    const char *key = "pinned{9}";
    unsigned slot = redq__key_slot(key, strlen(key));

    test_conn_config(&cfg);
    cr_assert_eq(redq__cluster_pin_new(&pin, cl, slot, &cfg, pin_up_cb, NULL,
                                       &pr),
                 0);
    redq__conn *c = redq__cluster_pin_conn(pin);
    redq__conn_start(c);
    int m = fxc_master_of_slot(slot);
    pin_myid(c, id);
    fxc_node_id(m, want);
    cr_assert_str_eq(id, want, "pinned to the wrong node at first");
    cr_assert_eq(pin_write(cl, c, key), REDQ__REDIR_NONE);

    /* Move the slot (its key with it) to another master. */
    int to = fxc_master_of_slot((slot + 8000) % 16384);
    cr_assert(to >= 0 && to != m);
    fxc_migrate_begin(slot, m, to);
    fxc_migrate_keys(slot, m, to);
    fxc_migrate_end(slot, m, to);
    cr_assert_geq(pin_follow(cl, c, key), 1, "no MOVED after the reshard");
    pin_myid(c, id);
    fxc_node_id(to, want);
    cr_assert_str_eq(id, want, "did not follow the reshard");

    /* Fail the new owner over to its replica. */
    int rep = fxc_replica_of(to);
    cr_assert(rep >= 0);
    fxc_failover(rep);
    cr_assert_geq(pin_follow(cl, c, key), 1, "no MOVED after the failover");
    pin_myid(c, id);
    fxc_node_id(rep, want);
    cr_assert_str_eq(id, want, "did not follow the failover");
    cr_assert_geq(pr.ups, 3);

    {
        rec r = {0};
        const char *argv[] = {"DEL", key};
        sendv(cl, key, strlen(key), -1, 2, argv, NULL, &r);
        wait_all(&r, 1, 10000);
        cr_assert_eq(r.integer, 1);
    }
    redq__cluster_pin_free(pin);
    router_free(cl);
    cr_assert_eq(fxc_dbsize(), 0, "keys left behind");
}
