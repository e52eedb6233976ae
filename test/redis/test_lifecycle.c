/*
 * Lifetimes, deadlines and verbs (issue 12, points 2-6): a message outlives
 * a stop and a close, flush and stop take their own deadline, on_ready
 * comes while report callbacks produce, redq_reject, queues added to and
 * removed from a running consumer, pool_size pop connections whatever the
 * number of queues.
 *
 * Callbacks only record; assertions run after the loop has returned. Run
 * the ASan build of this suite too: a late ack after close must be clean.
 */
#include <criterion/criterion.h>

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

#include "fixture.h"

TestSuite(lifecycle, .init = fx_setup, .fini = fx_teardown, .timeout = 90);

/* ---- a consumer that records and holds ---------------------------------- */

#define HOLDMAX 64

typedef struct ltrack {
    redq_consumer *c;
    int hold;                 /* 1: keep messages in held[]; 0: ack at once;
                                 2: reject with "poison" */
    redq_message *held[HOLDMAX];
    size_t nheld;
    size_t got;
    char last_queue[64];
    char queues_seen[512];    /* "q1 q2 ..." in delivery order */
    int stopped, stop_status;
    uint64_t stop_us;
    int closed;
    int removed, remove_status;
} ltrack;

static void on_lmsg(redq_consumer *c, redq_message *m, void *user)
{
    ltrack *t = user;
    size_t n = strlen(t->queues_seen);
    (void)c;
    t->got++;
    snprintf(t->last_queue, sizeof t->last_queue, "%s", redq_msg_queue(m));
    if (n + 64 < sizeof t->queues_seen)
        snprintf(t->queues_seen + n, sizeof t->queues_seen - n, "%s ",
                 redq_msg_queue(m));
    if (t->hold == 1 && t->nheld < HOLDMAX)
        t->held[t->nheld++] = m;
    else if (t->hold == 2)
        redq_reject(m, "poison: bad json");
    else
        redq_ack(m);
}

static void lopts(redq_consumer_options *o, ltrack *t, int guarantee,
                  size_t pool)
{
    redq_consumer_options_init(o);
    o->url = fx_url();
    o->guarantee = guarantee;
    o->on_message = on_lmsg;
    o->on_message_user = t;
    o->pool_size = pool;
    o->consumer_ttl_ms = 3000;
    o->promote_interval_ms = 20;
    o->reconnect_max_ms = 100;
}

static void lstart(ltrack *t, redq_consumer_options *o, const char *const *qs, size_t n)
{
    int rc = redq_consumer_new(&t->c, fx_base(), o, qs, n);
    cr_assert(rc == 0, "redq_consumer_new: %s", redq_err_name(rc));
}

static void on_lstopped(redq_consumer *c, int status, void *user)
{
    ltrack *t = user;
    (void)c;
    t->stopped++;
    t->stop_status = status;
    t->stop_us = fx_now_us();
}

static void on_lclosed(void *user)
{
    ((ltrack *)user)->closed++;
}

static void on_lremoved(redq_consumer *c, int status, void *user)
{
    ltrack *t = user;
    (void)c;
    t->removed++;
    t->remove_status = status;
}

static bool cond_stopped(void *a) { return ((ltrack *)a)->stopped > 0; }
static bool cond_closed(void *a) { return ((ltrack *)a)->closed > 0; }
static bool cond_removed(void *a) { return ((ltrack *)a)->removed > 0; }

typedef struct { ltrack *t; size_t n; } lwant;
static bool cond_got(void *a)
{
    lwant *w = a;
    return w->t->got >= w->n;
}
static bool wait_got(ltrack *t, size_t n, int ms)
{
    lwant w = {t, n};
    return fx_run_until(cond_got, &w, ms);
}

static void lclose(ltrack *t)
{
    cr_assert_eq(redq_consumer_close(t->c, on_lclosed, t), 0);
    cr_assert(fx_run_until(cond_closed, t, 5000), "no close callback");
}

static void push(const char *q, const char *v)
{
    fx_cmd_ok("LPUSH %s %s", q, v);
}

typedef struct { const char *key; long long n; } llen_want;
static bool cond_llen(void *a)
{
    llen_want *w = a;
    return fx_llen(w->key) == w->n;
}
static bool wait_llen(const char *key, long long n, int ms)
{
    llen_want w = {key, n};
    return fx_run_until(cond_llen, &w, ms);
}

/* ---- 1. pointer lifetime ------------------------------------------------ */

/* Both guarantees: a message held across redq_consumer_close() is still
 * readable after the close callback, and finishing it says REDQ_ECLOSED and
 * frees it (the ASan build catches a use after free or a leak here). */
static void ack_after_close(int guarantee)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"q"};
    push("q", "first");
    push("q", "second");
    lopts(&o, &t, guarantee, 1);
    t.hold = 1;
    lstart(&t, &o, qs, 1);
    cr_assert(wait_got(&t, 2, 5000), "delivered %zu", t.got);
    lclose(&t);
    /* The close callback came without waiting for the held messages. */
    cr_assert_eq(t.nheld, 2);
    cr_assert_str_eq(redq_msg_queue(t.held[0]), "q");
    cr_assert_eq(redq_msg_len(t.held[0]), 5);
    cr_assert(memcmp(redq_msg_data(t.held[0]), "first", 5) == 0);
    cr_assert_eq(redq_msg_extend(t.held[0], 1000), REDQ_ECLOSED);
    cr_assert_eq(redq_ack(t.held[0]), REDQ_ECLOSED);
    cr_assert_str_eq(redq_msg_queue(t.held[1]), "q"); /* chunk still alive */
    cr_assert_eq(redq_nack(t.held[1], "late"), REDQ_ECLOSED);
    if (guarantee == REDQ_AT_LEAST_ONCE) {
        /* The close gave both back: nothing acked, nothing lost. */
        cr_assert_eq(fx_llen("q"), 2);
        cr_assert_eq(fx_cmd_int("EXISTS {q}/dead"), 0);
    }
}

Test(lifecycle, ack_after_close_is_eclosed_and_frees_at_least_once)
{
    ack_after_close(REDQ_AT_LEAST_ONCE);
}

Test(lifecycle, ack_after_close_is_eclosed_and_frees_at_most_once)
{
    ack_after_close(REDQ_AT_MOST_ONCE);
}

/* Between redq_consumer_close() and its callback too: ECLOSED, no crash,
 * and the message goes back to the queue rather than being acked. */
Test(lifecycle, ack_between_close_and_release_is_eclosed)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"q"};
    push("q", "m");
    lopts(&o, &t, REDQ_AT_LEAST_ONCE, 1);
    t.hold = 1;
    lstart(&t, &o, qs, 1);
    cr_assert(wait_got(&t, 1, 5000));
    cr_assert_eq(redq_consumer_close(t.c, on_lclosed, &t), 0);
    cr_assert_eq(redq_ack(t.held[0]), REDQ_ECLOSED);
    cr_assert_eq(redq_ack(t.held[0]), REDQ_EALREADY);
    cr_assert(fx_run_until(cond_closed, &t, 5000));
    cr_assert_eq(fx_llen("q"), 1);
}

/* 2. stop(100 ms) with a held message ends in bounded time, with
 * REDQ_ETIMEDOUT; the message stays valid and a later ack says
 * REDQ_ETIMEDOUT (it was given back). The option's default is 30 s: a stop
 * that ignored its argument would not end within the wait. */
Test(lifecycle, stop_with_own_deadline_then_late_ack_is_etimedout)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"q"};
    uint64_t t0;
    push("q", "held");
    lopts(&o, &t, REDQ_AT_LEAST_ONCE, 1);
    o.stop_timeout_ms = 30000;
    t.hold = 1;
    lstart(&t, &o, qs, 1);
    cr_assert(wait_got(&t, 1, 5000));
    t0 = fx_now_us();
    cr_assert_eq(redq_consumer_stop(t.c, 100, on_lstopped, &t), 0);
    cr_assert(fx_run_until(cond_stopped, &t, 3000), "stop(100 ms) not done");
    cr_assert_eq(t.stop_status, REDQ_ETIMEDOUT);
    cr_assert_geq(t.stop_us - t0, 100000u - fx_clock_slack_us());
    cr_assert_leq(t.stop_us - t0, 1500000u, "stop took %llu us",
                  (unsigned long long)(t.stop_us - t0));
    cr_assert(memcmp(redq_msg_data(t.held[0]), "held", 4) == 0);
    cr_assert_eq(redq_ack(t.held[0]), REDQ_ETIMEDOUT);
    cr_assert(wait_llen("q", 1, 5000), "the held message was not given back");
    lclose(&t);
}

/* ---- 2. flush deadlines -------------------------------------------------- */

typedef struct { int called, status; uint64_t at_us; } flushrec;

static void on_flush(redq_producer *p, int status, void *user)
{
    flushrec *f = user;
    (void)p;
    f->called++;
    f->status = status;
    f->at_us = fx_now_us();
}

static bool cond_flushed(void *a) { return ((flushrec *)a)->called > 0; }

static pid_t server_pid(void)
{
    redisReply *r = fx_cmd_ok("INFO server");
    const char *s = strstr(r->str, "process_id:");
    cr_assert_not_null(s);
    return (pid_t)atol(s + strlen("process_id:"));
}

Test(lifecycle, flush_deadline_against_stopped_server_then_ok_after_sigcont)
{
    fx_tracker *t = fx_tracker_new(10);
    redq_producer_options o;
    flushrec f = {0};
    pid_t pid = server_pid();
    uint64_t t0;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.message_timeout_ms = 60000;
    o.command_timeout_ms = 60000; /* the stall is not a dead connection */
    cr_assert_eq(fx_producer_new(t, &o), 0);
    cr_assert(fx_wait_connected(t, 5000));
    cr_assert_eq(kill(pid, SIGSTOP), 0);
    fx_produce_range(t, "q", 0, 5, 0);
    t0 = fx_now_us();
    cr_assert_eq(redq_producer_flush(t->p, 300, on_flush, &f), 0);
    fx_run_until(cond_flushed, &f, 3000);
    kill(pid, SIGCONT);
    cr_assert_eq(f.called, 1, "flush(300 ms) did not end");
    cr_assert_eq(f.status, REDQ_ETIMEDOUT);
    cr_assert_geq(f.at_us - t0, 300000u - fx_clock_slack_us());
    cr_assert_leq(f.at_us - t0, 1000000u, "flush ended after %llu us",
                  (unsigned long long)(f.at_us - t0));
    /* Nothing failed because of it: the five are still pending ... */
    cr_assert_eq(t->reports, 0);
    cr_assert_eq(fx_stats(t).pending_msgs, 5);
    /* ... and reported ok once the server runs again. */
    cr_assert(fx_wait_reports(t, 5, 10000));
    fx_assert_reported(t, 0, 5, 0);
    fx_assert_list_range("q", 0, 5);
}

/* flush(-1) has no deadline of its own: it ends when the messages do, by
 * message_timeout_ms, with 0 (every message has its report). */
Test(lifecycle, flush_without_deadline_ends_by_delivery_timeout)
{
    fx_tracker *t = fx_tracker_new(10);
    redq_producer_options o;
    flushrec f = {0};
    pid_t pid = server_pid();
    uint64_t t0;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.message_timeout_ms = 400;
    o.command_timeout_ms = 60000;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    cr_assert(fx_wait_connected(t, 5000));
    cr_assert_eq(kill(pid, SIGSTOP), 0);
    fx_produce_range(t, "q", 0, 3, 0);
    t0 = fx_now_us();
    cr_assert_eq(redq_producer_flush(t->p, -1, on_flush, &f), 0);
    fx_run_until(cond_flushed, &f, 5000);
    kill(pid, SIGCONT);
    cr_assert_eq(f.called, 1, "flush(-1) did not end by message_timeout_ms");
    cr_assert_eq(f.status, 0);
    cr_assert_eq(t->reports, 3);
    fx_assert_reported(t, 0, 3, REDQ_ETIMEDOUT);
    cr_assert_geq(f.at_us - t0, 400000u - fx_clock_slack_us());
}

/* ---- 3. on_ready while report callbacks produce ------------------------- */

typedef struct {
    size_t next;      /* next seq to produce */
    size_t tries, accepted, refused;
    int stop;         /* on_ready came: the hook stops producing */
} refill_t;

static refill_t refill;

static void refill_hook(fx_tracker *t, redq_producer *p,
                        const redq_report *r)
{
    int rc;
    (void)p;
    (void)r;
    if (t->ready > 0 || refill.next >= t->cap)
        return;
    refill.tries++;
    rc = fx_produce(t, "q", refill.next, 0);
    if (rc == 0) {
        refill.next++;
        refill.accepted++;
    } else {
        refill.refused++;
    }
}

Test(lifecycle, on_ready_comes_while_reports_produce)
{
    fx_tracker *t = fx_tracker_new(5000);
    redq_producer_options o;
    size_t i;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.max_pending_msgs = 100;
    o.batch_max_msgs = 10;
    o.max_inflight_batches = 1;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    t->on_report = refill_hook;
    for (i = 0; i < 100; i++)
        cr_assert_eq(fx_produce(t, "q", i, 0), 0);
    cr_assert_eq(fx_produce(t, "q", 100, 0), REDQ_EFULL);
    refill.next = 101;
    cr_assert(fx_wait_ready(t, 10000),
              "no on_ready: %zu reports, %zu produced from report callbacks",
              t->reports, refill.accepted);
    cr_assert_leq(t->ready_stats.pending_msgs, 50,
                  "on_ready with %zu pending", t->ready_stats.pending_msgs);
    /* The callbacks kept trying and were pushed back. */
    cr_assert_gt(refill.tries, 0);
    cr_assert_gt(refill.refused, 0);
    cr_assert(fx_wait_reports(t, 100 + refill.accepted, 10000));
}

/* ---- 4. reject ----------------------------------------------------------- */

Test(lifecycle, reject_dead_letters_after_one_delivery_with_reason)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"q"};
    redq_consumer_stats st;
    redisReply *r;
    push("q", "{not json");
    lopts(&o, &t, REDQ_AT_LEAST_ONCE, 1);
    o.max_attempts = 5;
    o.retry_base_ms = 10;
    t.hold = 2;
    lstart(&t, &o, qs, 1);
    cr_assert(wait_got(&t, 1, 5000));
    cr_assert(wait_llen("{q}/dead", 1, 5000), "not dead-lettered");
    fx_run_for(300); /* a retry (10 ms backoff) would be delivered by now */
    cr_assert_eq(t.got, 1, "delivered %zu times", t.got);
    r = fx_cmd("LINDEX {q}/dead 0");
    cr_assert_eq(r->type, REDIS_REPLY_STRING);
    cr_assert(strstr(r->str, "poison:%20bad%20json") != NULL, "%s", r->str);
    cr_assert(strstr(r->str, " a=1") != NULL, "%s", r->str);
    cr_assert_str_eq(strchr(r->str, '\n') + 1, "{not json");
    cr_assert_eq(fx_cmd_int("ZCARD {q}/delayed"), 0);
    cr_assert_eq(fx_llen("q"), 0);
    redq_consumer_get_stats(t.c, &st);
    cr_assert_eq(st.rejected, 1);
    cr_assert_eq(st.dead_lettered, 1);
    cr_assert_eq(st.retried, 0);
    cr_assert_eq(st.nacked, 0);
    lclose(&t);
}

Test(lifecycle, reject_at_most_once_drops_and_counts)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"q"};
    redq_consumer_stats st;
    push("q", "x");
    lopts(&o, &t, REDQ_AT_MOST_ONCE, 1);
    t.hold = 2;
    lstart(&t, &o, qs, 1);
    cr_assert(wait_got(&t, 1, 5000));
    fx_run_for(100);
    redq_consumer_get_stats(t.c, &st);
    cr_assert_eq(st.rejected, 1);
    cr_assert_eq(st.unacked, 0);
    cr_assert_eq(fx_llen("q"), 0);
    cr_assert_eq(fx_cmd_int("EXISTS {q}/dead"), 0);
    cr_assert_eq(fx_cmd_int("EXISTS {q}/delayed"), 0);
    lclose(&t);
}

/* ---- 5. queues of a running consumer ------------------------------------ */

static void add_then_consume(int guarantee)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"a"};
    lopts(&o, &t, guarantee, 2);
    o.pop_timeout_ms = 20000; /* a pop blocked on "a" alone would wait */
    lstart(&t, &o, qs, 1);
    fx_run_for(200); /* pops blocked on "a" */
    cr_assert_eq(redq_consumer_add_queue(t.c, "b"), 0);
    cr_assert_eq(redq_consumer_add_queue(t.c, "b"), REDQ_EEXIST);
    cr_assert_eq(redq_consumer_add_queue(t.c, "a"), REDQ_EEXIST);
    cr_assert_eq(redq_consumer_add_queue(t.c, ""), REDQ_EINVAL);
    push("b", "hello");
    cr_assert(wait_got(&t, 1, 3000), "nothing from the added queue");
    cr_assert_str_eq(t.last_queue, "b");
    cr_assert(wait_llen("b", 0, 2000));
    lclose(&t);
}

Test(lifecycle, add_queue_at_least_once)
{
    add_then_consume(REDQ_AT_LEAST_ONCE);
    /* Its holder joined the consumers set and left it at the close. */
    cr_assert_eq(fx_cmd_int("SCARD {b}/consumers"), 0);
}

Test(lifecycle, add_queue_at_most_once)
{
    add_then_consume(REDQ_AT_MOST_ONCE);
}

Test(lifecycle, added_queue_comes_after_the_existing_ones)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"a"};
    lopts(&o, &t, REDQ_AT_LEAST_ONCE, 1);
    t.hold = 0;
    lstart(&t, &o, qs, 1);
    cr_assert_eq(redq_consumer_add_queue(t.c, "b"), 0);
    fx_run_for(100);
    cr_assert_eq(redq_consumer_stop(t.c, -1, on_lstopped, &t), 0);
    cr_assert(fx_run_until(cond_stopped, &t, 5000));
    lclose(&t);
    /* Fill both, then one consumer of both: all of "a" first. */
    push("b", "b1");
    push("b", "b2");
    push("a", "a1");
    push("a", "a2");
    {
        ltrack u = {0};
        const char *q1[] = {"a"};
        lopts(&o, &u, REDQ_AT_LEAST_ONCE, 1);
        lstart(&u, &o, q1, 1);
        cr_assert_eq(redq_consumer_add_queue(u.c, "b"), 0);
        cr_assert(wait_got(&u, 4, 5000), "%zu", u.got);
        cr_assert_str_eq(u.queues_seen, "a a b b ");
        lclose(&u);
    }
}

Test(lifecycle, remove_queue_refusals)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"a", "b"};
    lopts(&o, &t, REDQ_AT_LEAST_ONCE, 2);
    lstart(&t, &o, qs, 2);
    cr_assert_eq(redq_consumer_remove_queue(t.c, "zz", on_lremoved, &t),
                 REDQ_ENOQUEUE);
    cr_assert_eq(redq_consumer_remove_queue(t.c, "a", NULL, &t), REDQ_EINVAL);
    cr_assert_eq(redq_consumer_remove_queue(t.c, "a", on_lremoved, &t), 0);
    cr_assert_eq(redq_consumer_remove_queue(t.c, "a", on_lremoved, &t),
                 REDQ_ENOQUEUE);
    cr_assert_eq(redq_consumer_remove_queue(t.c, "b", on_lremoved, &t),
                 REDQ_EINVAL, "the last queue");
    cr_assert_eq(redq_consumer_add_queue(t.c, "a"), REDQ_EEXIST,
                 "re-added while its removal is in progress");
    cr_assert(fx_run_until(cond_removed, &t, 5000));
    cr_assert_eq(t.remove_status, 0);
    cr_assert_eq(redq_consumer_add_queue(t.c, "a"), 0, "re-added after");
    lclose(&t);
}

/* Remove while a message of it is held (and more wait untracked in the
 * list): the callback waits for the handler; the held message stays valid
 * and ackable; then the rest goes back, the holders leave. */
static void remove_while_held(int guarantee)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"a", "b"};
    char *proc;
    lopts(&o, &t, guarantee, 2);
    o.pop_batch = 1;
    o.max_unacked = 1;
    o.pop_timeout_ms = 20000;
    t.hold = 1;
    push("b", "b1");
    push("b", "b2");
    lstart(&t, &o, qs, 2);
    cr_assert(wait_got(&t, 1, 5000));
    cr_assert_str_eq(t.last_queue, "b");
    cr_assert_eq(redq_consumer_remove_queue(t.c, "b", on_lremoved, &t), 0);
    fx_run_for(300);
    if (guarantee == REDQ_AT_LEAST_ONCE) {
        cr_assert_eq(t.removed, 0, "removal done while a message is held");
        cr_assert_eq(fx_cmd_int("SCARD {b}/consumers"), 2);
    }
    cr_assert(memcmp(redq_msg_data(t.held[0]), "b1", 2) == 0);
    cr_assert_str_eq(redq_msg_queue(t.held[0]), "b");
    cr_assert_eq(redq_ack(t.held[0]), 0);
    t.nheld = 0;
    t.hold = 0;
    cr_assert(fx_run_until(cond_removed, &t, 5000), "no remove callback");
    cr_assert_eq(t.remove_status, 0);
    cr_assert_eq(t.got, 1, "popped from a removed queue");
    cr_assert_eq(fx_llen("b"), 1); /* b2 untouched */
    if (guarantee == REDQ_AT_LEAST_ONCE) {
        cr_assert_eq(fx_cmd_int("SCARD {b}/consumers"), 0);
        proc = fx_queue_key("b", "proc:*");
        cr_assert_eq(fx_cmd("KEYS %s", proc)->elements, 0);
        free(proc);
        cr_assert_eq(fx_cmd_int("SCARD {a}/consumers"), 2);
    }
    /* "a" is still served; "b" no more. */
    push("b", "b3");
    push("a", "a1");
    cr_assert(wait_got(&t, 2, 3000));
    cr_assert_str_eq(t.last_queue, "a");
    fx_run_for(300);
    cr_assert_eq(t.got, 2);
    cr_assert_eq(fx_llen("b"), 2);
    lclose(&t);
}

Test(lifecycle, remove_queue_while_held_at_least_once)
{
    remove_while_held(REDQ_AT_LEAST_ONCE);
}

Test(lifecycle, remove_queue_while_held_at_most_once)
{
    remove_while_held(REDQ_AT_MOST_ONCE);
}

/* Remove a queue a pop is blocked on (pop_timeout_ms 20 s): the pop is
 * released at once, the callback comes well before the pop's timeout, and
 * a message pushed to it afterwards stays there. */
static void remove_while_blocked(int guarantee)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"a", "b"};
    uint64_t t0;
    lopts(&o, &t, guarantee, 2);
    o.pop_timeout_ms = 20000;
    lstart(&t, &o, qs, 2);
    fx_run_for(300); /* both pops blocked (BLMOVE a / b, or BLMPOP a b) */
    t0 = fx_now_us();
    cr_assert_eq(redq_consumer_remove_queue(t.c, "b", on_lremoved, &t), 0);
    cr_assert(fx_run_until(cond_removed, &t, 3000), "no remove callback");
    cr_assert_eq(t.remove_status, 0);
    cr_assert_leq(fx_now_us() - t0, 2000000u);
    push("b", "late");
    push("a", "a1");
    cr_assert(wait_got(&t, 1, 3000));
    cr_assert_str_eq(t.last_queue, "a");
    fx_run_for(300);
    cr_assert_eq(t.got, 1);
    cr_assert_eq(fx_llen("b"), 1);
    lclose(&t);
}

Test(lifecycle, remove_queue_while_pop_blocked_at_least_once)
{
    remove_while_blocked(REDQ_AT_LEAST_ONCE);
}

Test(lifecycle, remove_queue_while_pop_blocked_at_most_once)
{
    remove_while_blocked(REDQ_AT_MOST_ONCE);
}

Test(lifecycle, consumer_id_names_its_holders)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"q"};
    const char *id;
    redisReply *r;
    lopts(&o, &t, REDQ_AT_LEAST_ONCE, 1);
    lstart(&t, &o, qs, 1);
    id = redq_consumer_id(t.c);
    cr_assert_not_null(id);
    cr_assert_eq(strlen(id), 16);
    cr_assert_eq(strspn(id, "0123456789abcdef"), 16);
    cr_assert_null(redq_consumer_id(NULL));
    fx_run_for(300);
    r = fx_cmd("SMEMBERS {q}/consumers");
    cr_assert_eq(r->elements, 1);
    cr_assert(strncmp(r->element[0]->str, id, 16) == 0 &&
                  r->element[0]->str[16] == '.',
              "%s vs %s", r->element[0]->str, id);
    lclose(&t);
}

/* ---- 6. pool_size means pop connections --------------------------------- */

static long long clients_named(const char *name)
{
    redisReply *r = fx_cmd_ok("CLIENT LIST");
    char pat[96];
    long long n = 0;
    const char *s = r->str;
    snprintf(pat, sizeof pat, " name=%s ", name);
    while ((s = strstr(s, pat)) != NULL) {
        n++;
        s += strlen(pat);
    }
    return n;
}

typedef struct { const char *name; long long n; } named_want;
static bool cond_named(void *a)
{
    named_want *w = a;
    return clients_named(w->name) == w->n;
}

Test(lifecycle, pool_size_one_opens_one_pop_connection_for_three_queues)
{
    ltrack t = {0};
    redq_consumer_options o;
    const char *qs[] = {"a", "b", "c"};
    named_want w = {"lc-pool", 2};
    lopts(&o, &t, REDQ_AT_LEAST_ONCE, 1);
    o.client_name = "lc-pool";
    o.pop_timeout_ms = 20000;
    lstart(&t, &o, qs, 3);
    cr_assert(fx_run_until(cond_named, &w, 3000),
              "%lld connections named lc-pool; want 1 pop + 1 control",
              clients_named("lc-pool"));
    fx_run_for(300);
    cr_assert_eq(clients_named("lc-pool"), 2);
    /* Every queue is still served while idle, the last one polled. */
    push("c", "c1");
    cr_assert(wait_got(&t, 1, 2000), "nothing from the third queue");
    cr_assert_str_eq(t.last_queue, "c");
    push("a", "a1");
    cr_assert(wait_got(&t, 2, 2000));
    push("b", "b1");
    cr_assert(wait_got(&t, 3, 2000));
    lclose(&t);
}
