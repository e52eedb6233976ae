/*
 * redq top: every --interval, a snapshot of the queues (all registered
 * ones, or the QUEUE operands), with rates from the previous snapshot.
 * Redrawn in place on a terminal (ANSI "cursor home, clear screen": no
 * curses), one block per refresh when stdout is not a terminal, one JSON
 * object per refresh with --json. Runs until SIGINT/SIGTERM (130/143) or
 * --count refreshes (0).
 *
 * Rates are differences between two snapshots over the time between
 * them. IN/s and OUT/s come from the queue's counters of messages moved
 * (redq_queue_info.pushed and .taken, counted in Redis by every producer
 * and consumer): IN/s is messages produced, OUT/s messages taken by
 * consumers of either mode (a retried message is taken, and counted,
 * again). Taken rather than acked: at-most-once consumers never ack, and
 * what leaves the queue is what operators watch; --json also has
 * acked_rate. So a queue taking in and handing out at the same rate shows
 * both, where its depth does not move. READY/s, PROC/s and DEAD/s are how
 * fast ready+due, processing and dead grew (negative: shrank). A counter
 * that went down (the queue's keys were deleted) counts from 0 again.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>

#define TOP_DEFAULT_INTERVAL_MS 1000

/* What top keeps of one queue between refreshes. */
typedef struct top_q {
    char *name;
    redq_queue_info info; /* info.name: name */
} top_q;

typedef struct top_snap {
    top_q *q;
    size_t n, cap;
    double t; /* monotonic seconds when it was complete */
} top_snap;

typedef struct top_cmd {
    const cli_options *o;
    struct event *tick;
    int interval_ms;
    int tty;
    int busy;           /* a snapshot is being taken */
    int next;           /* operands: the one asked for */
    uint64_t refreshes; /* printed so far */
    top_snap cur, prev;
    int have_prev;
} top_cmd;

static double mono_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static long long wall_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void snap_clear(top_snap *s)
{
    size_t i;

    for (i = 0; i < s->n; i++)
        free(s->q[i].name);
    s->n = 0;
}

static void snap_free(top_snap *s)
{
    snap_clear(s);
    free(s->q);
    memset(s, 0, sizeof *s);
}

static int snap_add(top_snap *s, const redq_queue_info *in)
{
    if (s->n == s->cap) {
        size_t cap = s->cap ? 2 * s->cap : 16;
        top_q *q = realloc(s->q, cap * sizeof *q);

        if (!q)
            return -1;
        s->q = q;
        s->cap = cap;
    }
    if (!(s->q[s->n].name = strdup(in->name)))
        return -1;
    s->q[s->n].info = *in;
    s->q[s->n].info.name = s->q[s->n].name;
    s->n++;
    return 0;
}

static const top_q *snap_find(const top_snap *s, const char *name)
{
    size_t i;

    for (i = 0; i < s->n; i++)
        if (!strcmp(s->q[i].name, name))
            return &s->q[i];
    return NULL;
}

/* How much counter `now` grew since `before`, per second: a counter that
 * went down was reset (its keys deleted) and counts from 0. */
static double counter_rate(uint64_t now, uint64_t before, double dt)
{
    return (double)(now >= before ? now - before : now) / dt;
}

enum { R_READY, R_PROC, R_DEAD, R_IN, R_OUT, R_ACKED, R_N };

/* The rates of q since the previous snapshot; 0 when there is none. */
static int rates(const top_cmd *tc, const top_q *q, double r[R_N])
{
    const top_q *p = tc->have_prev ? snap_find(&tc->prev, q->name) : NULL;
    double dt = tc->cur.t - tc->prev.t;

    if (!p || dt <= 0)
        return 0;
    r[R_READY] = ((double)(q->info.ready + q->info.due) -
                  (double)(p->info.ready + p->info.due)) / dt;
    r[R_PROC] = ((double)q->info.processing - (double)p->info.processing) / dt;
    r[R_DEAD] = ((double)q->info.dead - (double)p->info.dead) / dt;
    r[R_IN] = counter_rate(q->info.pushed, p->info.pushed, dt);
    r[R_OUT] = counter_rate(q->info.taken, p->info.taken, dt);
    r[R_ACKED] = counter_rate(q->info.acked, p->info.acked, dt);
    return 1;
}

static const char *const top_heads[] = {
    "QUEUE", "READY", "PROCESSING", "DEAD",      "IN/s",  "OUT/s",
    "READY/s", "PROC/s", "DEAD/s",  "CONSUMERS", "OLDEST", "PAUSED"};
#define TOP_COLS (sizeof top_heads / sizeof top_heads[0])

static const char *const rate_names[R_N] = {"ready_rate", "processing_rate",
                                            "dead_rate", "in_rate",
                                            "out_rate", "acked_rate"};

static int top_print_table(top_cmd *tc, long long now)
{
    cli_table t = {TOP_COLS, 0, 0, NULL};
    char buf[64];
    size_t i, k;
    int rc = 0;

    for (k = 0; k < TOP_COLS; k++)
        rc |= cli_table_add(&t, top_heads[k]);
    for (i = 0; i < tc->cur.n && rc == 0; i++) {
        const top_q *q = &tc->cur.q[i];
        double r[R_N];
        int have = rates(tc, q, r);
        char *name = cli_escape_text(q->name, strlen(q->name), 0, 1);
        static const int order[5] = {R_IN, R_OUT, R_READY, R_PROC, R_DEAD};

        rc |= cli_table_add(&t, name);
        free(name);
        snprintf(buf, sizeof buf, "%llu",
                 (unsigned long long)(q->info.ready + q->info.due));
        rc |= cli_table_add(&t, buf);
        snprintf(buf, sizeof buf, "%llu",
                 (unsigned long long)q->info.processing);
        rc |= cli_table_add(&t, buf);
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)q->info.dead);
        rc |= cli_table_add(&t, buf);
        for (k = 0; k < 5; k++) {
            if (have)
                snprintf(buf, sizeof buf, "%.1f", r[order[k]]);
            else
                snprintf(buf, sizeof buf, "-");
            rc |= cli_table_add(&t, buf);
        }
        snprintf(buf, sizeof buf, "%llu",
                 (unsigned long long)q->info.consumers);
        rc |= cli_table_add(&t, buf);
        cli_format_age(q->info.oldest_age_ms, buf, sizeof buf);
        rc |= cli_table_add(&t, buf);
        rc |= cli_table_add(&t, q->info.paused ? "yes" : "no");
    }
    if (rc == 0) {
        cli_iso_utc_ms(now, buf, sizeof buf);
        if (tc->tty)
            fputs("\033[H\033[2J", stdout);
        printf("redq top  %s  every %d ms, %zu queue%s\n", buf,
               tc->interval_ms, tc->cur.n, tc->cur.n == 1 ? "" : "s");
        cli_table_print(stdout, &t);
        if (!tc->tty)
            putchar('\n');
    }
    cli_table_free(&t);
    return rc;
}

static void top_print_json(top_cmd *tc, long long now)
{
    size_t i;
    int k;

    printf("{\"ts\":%lld,\"interval_ms\":%d,\"queues\":[", now,
           tc->interval_ms);
    for (i = 0; i < tc->cur.n; i++) {
        double r[R_N];
        int have = rates(tc, &tc->cur.q[i], r);

        if (i)
            putchar(',');
        cli_put_queue_json(stdout, &tc->cur.q[i].info);
        for (k = 0; k < R_N; k++) {
            if (have)
                printf(",\"%s\":%.3f", rate_names[k], r[k]);
            else
                printf(",\"%s\":null", rate_names[k]);
        }
        putchar('}');
    }
    fputs("]}\n", stdout);
}

/* A snapshot is complete: print it, keep it for the next rates. */
static void top_refresh(cli_adm *ad)
{
    top_cmd *tc = ad->cmd;
    long long now = wall_ms();
    top_snap t;

    tc->busy = 0;
    tc->cur.t = mono_s();
    if (tc->o->json) {
        top_print_json(tc, now);
    } else if (top_print_table(tc, now) < 0) {
        fprintf(stderr, "redq: out of memory\n");
        cli_adm_done(ad, CLI_RC_FAILED);
        return;
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        cli_adm_done(ad, CLI_RC_FAILED); /* reported there */
        return;
    }
    t = tc->prev;
    tc->prev = tc->cur;
    tc->cur = t;
    snap_clear(&tc->cur);
    tc->have_prev = 1;
    if (++tc->refreshes == tc->o->count && tc->o->has_count)
        cli_adm_done(ad, CLI_RC_OK);
}

/* A failure: before the first answer, or not a lost connection, it ends
 * the run (cli_adm_check); a connection lost later is a warning, and the
 * next tick tries again. 0 when status is 0. */
static int top_check(cli_adm *ad, int status, const char *errstr,
                     const char *what)
{
    top_cmd *tc = ad->cmd;

    if (status == 0 || !ad->connected ||
        (status != REDQ_ECONNECT && status != REDQ_ERESOLVE &&
         status != REDQ_ETIMEDOUT && status != REDQ_EDISCONNECTED))
        return cli_adm_check(ad, status, errstr, what);
    if (!tc->o->quiet)
        fprintf(stderr, "redq: %s: %s\n", what,
                errstr && *errstr ? errstr : redq_strerror(status));
    tc->busy = 0;
    snap_clear(&tc->cur);
    return -1;
}

static void top_ask(cli_adm *ad);

static void top_queues_cb(redq_admin *a, int status, const char *errstr,
                          const redq_queue_info *q, size_t n, void *user)
{
    cli_adm *ad = user;
    top_cmd *tc = ad->cmd;
    size_t i;

    (void)a;
    if (top_check(ad, status, errstr,
                  tc->o->nargs ? tc->o->args[tc->next] : "queues") < 0)
        return;
    for (i = 0; i < n; i++)
        if (snap_add(&tc->cur, &q[i]) < 0) {
            fprintf(stderr, "redq: out of memory\n");
            cli_adm_done(ad, CLI_RC_FAILED);
            return;
        }
    if (tc->o->nargs && ++tc->next < tc->o->nargs)
        top_ask(ad);
    else
        top_refresh(ad);
}

/* The next call of the snapshot being taken. */
static void top_ask(cli_adm *ad)
{
    top_cmd *tc = ad->cmd;
    int rc;

    if (tc->o->nargs)
        rc = redq_admin_queue(ad->a, tc->o->args[tc->next], top_queues_cb, ad);
    else
        rc = redq_admin_queues(ad->a, top_queues_cb, ad);
    if (rc < 0)
        top_check(ad, rc, NULL, "queues");
}

/* Start a snapshot, unless the previous one is still being taken. */
static void top_snapshot(cli_adm *ad)
{
    top_cmd *tc = ad->cmd;

    if (tc->busy || ad->done)
        return;
    tc->busy = 1;
    tc->next = 0;
    snap_clear(&tc->cur);
    top_ask(ad);
}

static void top_tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    top_snapshot(arg);
}

/* The first snapshot now, the next ones every interval (also the start
 * again after a connection failure). */
static void top_start(cli_adm *ad)
{
    top_cmd *tc = ad->cmd;

    tc->busy = 0;
    if (!tc->tick) {
        struct timeval tv;

        tv.tv_sec = tc->interval_ms / 1000;
        tv.tv_usec = (tc->interval_ms % 1000) * 1000;
        tc->tick = event_new(ad->s.base, -1, EV_PERSIST, top_tick_cb, ad);
        if (!tc->tick || event_add(tc->tick, &tv) < 0) {
            fprintf(stderr, "redq: cannot set up the timer\n");
            cli_adm_done(ad, CLI_RC_FAILED);
            return;
        }
    }
    top_snapshot(ad);
}

/* The handle is closed: the timer goes with the loop. */
static void top_stop(cli_adm *ad)
{
    top_cmd *tc = ad->cmd;

    if (tc->tick)
        event_free(tc->tick);
    tc->tick = NULL;
}

int cli_cmd_top(const cli_options *o)
{
    top_cmd tc;
    int rc;

    memset(&tc, 0, sizeof tc);
    tc.o = o;
    tc.interval_ms = o->interval_ms ? o->interval_ms : TOP_DEFAULT_INTERVAL_MS;
    tc.tty = isatty(STDOUT_FILENO);
    if (o->has_count && o->count == 0) {
        rc = cli_check_queue_names(o);
        return rc ? rc : CLI_RC_OK;
    }
    rc = cli_adm_run(o, top_start, top_stop, &tc);
    snap_free(&tc.cur);
    snap_free(&tc.prev);
    return rc;
}
