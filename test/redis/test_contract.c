/*
 * The contract's edges (issue 8): payloads that look like redq's own
 * formats, a pop that ran while its reply was lost, a TAKE that meets a
 * wrong-typed key, names up to the limit, many queues, pool sizes above 1
 * with acks in any order, a stop at every moment, a full server, and
 * acking twice. Each test fails with the feature it guards broken.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

TestSuite(contract, .init = fx_setup, .fini = fx_teardown, .timeout = 120);

#define MAXM 20480

typedef struct ctrack {
    redq_consumer *c;
    size_t got;
    char *body[MAXM];   /* each delivery's bytes (malloc'd copies) */
    size_t len[MAXM];
    int attempt[MAXM];
    redq_message *held[MAXM];
    size_t nheld;
    int mode;           /* 0 ack, 1 hold, 2 nack on attempt 1 then ack */
    int stopped, stop_status, closed;
} ctrack;

static void on_cmsg(redq_consumer *c, redq_message *m, void *user)
{
    ctrack *t = user;
    size_t i = t->got++;
    (void)c;
    if (i < MAXM) {
        t->len[i] = redq_msg_len(m);
        t->body[i] = malloc(t->len[i] + 1);
        memcpy(t->body[i], redq_msg_data(m), t->len[i]);
        t->attempt[i] = redq_msg_attempt(m);
    }
    if (t->mode == 1 || (t->mode == 2 && redq_msg_attempt(m) == 1)) {
        if (t->mode == 2)
            redq_nack(m, "first attempt fails");
        else if (t->nheld < MAXM)
            t->held[t->nheld++] = m;
        return;
    }
    cr_assert_eq(redq_ack(m), 0);
}

static ctrack *ctrack_new(void)
{
    ctrack *t = calloc(1, sizeof *t);
    cr_assert_not_null(t);
    return t;
}

static void copts(redq_consumer_options *o, ctrack *t)
{
    redq_consumer_options_init(o);
    o->url = fx_url();
    o->on_message = on_cmsg;
    o->on_message_user = t;
    o->retry_base_ms = 10;
    o->retry_max_ms = 20;
    o->promote_interval_ms = 20;
    o->consumer_ttl_ms = 600;
}

typedef struct want {
    ctrack *t;
    size_t n;
} want;

static bool cond_got(void *a)
{
    want *w = a;
    return w->t->got >= w->n;
}

static bool wait_got(ctrack *t, size_t n, int ms)
{
    want w = {t, n};
    return fx_run_until(cond_got, &w, ms);
}

static void on_cstop(redq_consumer *c, int status, void *user)
{
    ctrack *t = user;
    (void)c;
    t->stopped = 1;
    t->stop_status = status;
}

static bool cond_stopped(void *a)
{
    return ((ctrack *)a)->stopped != 0;
}

static void on_cclosed(void *u)
{
    ((ctrack *)u)->closed = 1;
}

static bool cond_closed(void *a)
{
    return ((ctrack *)a)->closed != 0;
}

static void cfinish(ctrack *t)
{
    size_t i;
    if (t->c != NULL) {
        cr_assert_eq(redq_consumer_close(t->c, on_cclosed, t), 0);
        cr_assert(fx_run_until(cond_closed, t, 5000));
    }
    for (i = 0; i < t->got && i < MAXM; i++)
        free(t->body[i]);
    free(t);
}

static void cstop(ctrack *t)
{
    cr_assert_eq(redq_consumer_stop(t->c, -1, on_cstop, t), 0);
    cr_assert(fx_run_until(cond_stopped, t, 10000), "stop never finished");
}

/* Every key redq may leave behind for these queues, summed: lists, sets,
 * zsets. Only the reaper lock (a TTL'd string) may remain, and the queue
 * registry (issue 9: redq:queues names the queues used, for admin tools;
 * it is not a queue's key). */
static long long leftover(void)
{
    redisReply *r = fx_cmd("KEYS *");
    long long n = 0;
    size_t i;
    for (i = 0; i < r->elements; i++) {
        const char *k = r->element[i]->str;
        size_t kl = strlen(k);
        if (kl >= 7 && strcmp(k + kl - 7, ":reaper") == 0)
            continue;
        if (kl >= 7 && strcmp(k + kl - 7, "/reaper") == 0)
            continue;
        if (strcmp(k, "redq:queues") == 0)
            continue;
        /* The queue's meta hash keeps its counters of messages moved
         * (redq_queue_info.pushed ...) for good, like the registry. */
        if (kl >= 5 && (strcmp(k + kl - 5, "/meta") == 0 ||
                        strcmp(k + kl - 5, ":meta") == 0))
            continue;
        n++;
    }
    return n;
}

/* ---- byte transparency -------------------------------------------------- */

static const char *const lookalikes[] = {
    "{\"to\":\"a@b.c\",\"subject\":\"hi\",\"body\":\"hello\"}",
    "{\"id\":42,\"body\":\"x\"}",
    "{\"body_b64\":\"not base64!\"}",
    "{\"body\":\"x\",\"attempts\":\"two\"}",
    "{\"body\":{\"n\":12345678901234567890}}",
    "{\"body\":1e400}",
    "{\"body\":\"\\ud800\"}",
    "{\"id\":\"order-17\",\"ts\":1700000000000,\"body\":\"seed format\"}",
    "RQ1 a=3 id=x\nlooks like a frame",
    "RQ1\n",
    "{\"body\": broken",
    "",
};
#define NLOOK (sizeof lookalikes / sizeof lookalikes[0])

static void check_lookalikes(ctrack *t, size_t from, size_t n, int attempt)
{
    size_t i;
    for (i = 0; i < n; i++) {
        size_t k = from + i;
        const char *w = lookalikes[i % NLOOK];
        cr_assert_eq(t->len[k], strlen(w), "delivery %zu: %zu bytes for %s",
                     k, t->len[k], w);
        cr_assert_eq(memcmp(t->body[k], w, t->len[k]), 0,
                     "delivery %zu rewritten: %.*s", k, (int)t->len[k],
                     t->body[k]);
        cr_assert_eq(t->attempt[k], attempt);
    }
}

/* Pushed by a plain client (LPUSH), each arrives byte-identical on its
 * first attempt and again on its retry, and nothing is dead-lettered. */
Test(contract, plain_values_that_look_like_envelopes_or_frames_arrive_as_sent)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    size_t i;
    const char *qs[1] = {"q"};

    for (i = 0; i < NLOOK; i++)
        fx_cmd_ok("RPUSH q %b", lookalikes[i], strlen(lookalikes[i]));
    copts(&o, t);
    t->mode = 2; /* nack the first attempt */
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    cr_assert(wait_got(t, 2 * NLOOK, 10000), "%zu deliveries", t->got);
    /* RPUSH put the first at the head: pops take the last first. */
    for (i = 0; i < NLOOK; i++) {
        const char *w = lookalikes[NLOOK - 1 - i];
        cr_assert_eq(t->len[i], strlen(w));
        cr_assert_eq(memcmp(t->body[i], w, t->len[i]), 0, "%s", w);
        cr_assert_eq(t->attempt[i], 1);
    }
    for (i = NLOOK; i < 2 * NLOOK; i++) {
        size_t j;
        int found = 0;
        for (j = 0; j < NLOOK; j++)
            found |= t->len[i] == strlen(lookalikes[j]) &&
                     memcmp(t->body[i], lookalikes[j], t->len[i]) == 0;
        cr_assert(found, "retry rewrote a payload: %.*s", (int)t->len[i],
                  t->body[i]);
        cr_assert_eq(t->attempt[i], 2);
    }
    cr_assert_eq(fx_llen("{q}/dead"), 0, "a payload was dead-lettered");
    cstop(t);
    cr_assert_eq(t->stop_status, 0);
    cr_assert_eq(leftover(), 0);
    cfinish(t);
}

/* The same through redq_produce, the visibility timeout, a crash (REAP)
 * and the dead letters: every path keeps every byte. */
Test(contract, produced_lookalikes_survive_timeout_reaper_and_dead_letters)
{
    ctrack *t = ctrack_new();
    fx_tracker *p = fx_tracker_new(NLOOK);
    redq_consumer_options o;
    redq_producer_options po;
    const char *qs[1] = {"jobs"};
    size_t i;
    redisReply *r;

    redq_producer_options_init(&po);
    po.url = fx_url();
    cr_assert_eq(fx_producer_new(p, &po), 0);
    for (i = 0; i < NLOOK; i++)
        cr_assert_eq(redq_produce(p->p, "jobs", lookalikes[i],
                                  strlen(lookalikes[i]), NULL),
                     0);
    cr_assert(fx_wait_reports(p, NLOOK, 5000));
    cr_assert_eq(p->ok, NLOOK);
    copts(&o, t);
    t->mode = 1; /* never ack: the visibility timeout retries */
    o.visibility_timeout_ms = 200;
    o.max_attempts = 3;
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    cr_assert(wait_got(t, 3 * NLOOK, 15000), "%zu deliveries", t->got);
    check_lookalikes(t, 0, NLOOK, 1);
    /* Then dead: three attempts each. */
    {
        uint64_t until = fx_now_us() + 5000000u;
        while (fx_llen("{jobs}/dead") < (long long)NLOOK && fx_now_us() < until)
            fx_run_for(20);
    }
    cr_assert_eq(fx_llen("{jobs}/dead"), (long long)NLOOK);
    for (i = 0; i < NLOOK; i++) {
        size_t j;
        int found = 0;
        const char *body;
        size_t blen;
        r = fx_cmd("LINDEX {jobs}/dead %d", (int)i);
        cr_assert_eq(r->type, REDIS_REPLY_STRING);
        cr_assert(strncmp(r->str, "RQ1 ", 4) == 0);
        cr_assert(strstr(r->str, " a=3") != NULL, "%s", r->str);
        body = (const char *)memchr(r->str, '\n', (size_t)r->len) + 1;
        blen = (size_t)r->len - (size_t)(body - r->str);
        for (j = 0; j < NLOOK; j++)
            found |= blen == strlen(lookalikes[j]) &&
                     memcmp(body, lookalikes[j], blen) == 0;
        cr_assert(found, "dead letter rewrote a payload: %.*s", (int)blen, body);
    }
    for (i = 0; i < t->nheld; i++)
        cr_assert_eq(redq_ack(t->held[i]), REDQ_ETIMEDOUT);
    cfinish(t);
    fx_close(p);
}

/* ---- a pop that ran while its reply was lost ---------------------------- */

/* Send DEBUG SLEEP without waiting for its reply: the loop keeps running
 * while the server sleeps. */
static redisContext *sleep_server(double s)
{
    redisContext *x = redisConnect("127.0.0.1", fx_port());
    int done = 0;
    cr_assert(x != NULL && !x->err);
    redisAppendCommand(x, "DEBUG SLEEP %f", s);
    while (!done)
        cr_assert_eq(redisBufferWrite(x, &done), REDIS_OK);
    return x;
}

static void dbg_log(int level, int code, const char *msg, void *user)
{
    (void)user;
    if (getenv("REDQ_TEST_DEBUG"))
        fprintf(stderr, "log %d %d %s\n", level, code, msg);
}

Test(contract, lost_pop_replies_are_reconciled)
{
    const size_t n = 20000;
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[1] = {"q"};
    redq_consumer_stats st;
    size_t round, i;
    char *seen = calloc(n, 1);

    /* DEBUG SLEEP needs the debug command, off by default since 7.0. */
    {
        static const char *const dbg[] = {"--enable-debug-command", "yes",
                                          NULL};
        fx_server_stop();
        fx_server_start(dbg);
    }
    for (i = 0; i < n; i++)
        fx_cmd_ok("LPUSH q m|%d|", (int)i);
    copts(&o, t);
    o.command_timeout_ms = 100;
    o.connect_timeout_ms = 300;
    o.reconnect_min_ms = 10;
    o.reconnect_max_ms = 50;
    o.pop_batch = 8; /* a steady stream of small TAKEs */
    o.log = dbg_log;
    o.log_level = REDQ_LOG_DEBUG;
    o.max_unacked = 8;
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    /* The server sleeps past the TAKE in flight's deadline: the client
     * drops the connection, the server runs the TAKE afterwards, and
     * nobody reads its reply. */
    for (round = 0; round < 4 && t->got < n; round++) {
        redisContext *x;
        fx_run_for(round == 0 ? 30 : 10);
        x = sleep_server(0.3);
        fx_run_for(500);
        redisFree(x);
    }
    cr_assert(wait_got(t, n, 20000), "%zu of %zu delivered", t->got, n);
    for (i = 0; i < t->got && i < MAXM; i++) {
        const char *bar = memchr(t->body[i], '|', t->len[i]);
        cr_assert_not_null(bar);
        seen[strtoul(bar + 1, NULL, 10)] = 1;
    }
    for (i = 0; i < n; i++)
        cr_assert(seen[i], "m|%zu| never delivered", i);
    redq_consumer_get_stats(t->c, &st);
    cr_assert_gt(st.returned, 0, "no pop reply was lost: the test did not "
                                 "exercise reconciliation");
    cstop(t);
    cr_assert_eq(t->stop_status, 0);
    cr_assert_eq(leftover(), 0, "something stayed behind");
    free(seen);
    cfinish(t);
}

/* ---- TAKE checks every key before it writes ----------------------------- */

Test(contract, wrong_typed_queue_moves_nothing_and_the_rest_is_served)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[2] = {"good", "bad"};
    int k;

    for (k = 0; k < 10; k++)
        fx_cmd_ok("LPUSH good m%d", k);
    fx_cmd_ok("SET bad notalist");
    copts(&o, t);
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 2), 0);
    cr_assert(wait_got(t, 10, 10000), "%zu of 10: stranded by the bad queue",
              t->got);
    cstop(t);
    cr_assert_eq(t->stop_status, 0);
    fx_cmd_ok("DEL bad");
    cr_assert_eq(leftover(), 0);
    cfinish(t);
}

/* ---- names at the limit, many queues, pools with acks in any order ------ */

Test(contract, names_of_1_255_and_1024_bytes_everywhere)
{
    static const size_t lens[] = {1, 255, 1024};
    size_t li;
    for (li = 0; li < 3; li++) {
        char *q = malloc(lens[li] + 1);
        ctrack *t = ctrack_new();
        fx_tracker *p = fx_tracker_new(8);
        redq_consumer_options o;
        redq_producer_options po;
        const char *qs[1];
        memset(q, 'n', lens[li]);
        if (lens[li] > 3)
            q[1] = '}'; /* no tag, a brace: the made-up tag path */
        q[lens[li]] = '\0';
        qs[0] = q;
        redq_producer_options_init(&po);
        po.url = fx_url();
        cr_assert_eq(fx_producer_new(p, &po), 0);
        cr_assert_eq(redq_produce(p->p, q, "a", 1, NULL), 0);
        cr_assert_eq(redq_produce(p->p, q, "b", 1, NULL), 0);
        cr_assert_eq(redq_produce_delayed(p->p, q, "c", 1, 50, NULL), 0);
        cr_assert(fx_wait_reports(p, 3, 5000));
        cr_assert_eq(p->ok, 3, "%s", p->last_errstr);
        {
            /* A dead consumer's message on this queue: the reaper's keys
             * for the name, built as the library builds them. */
            char *set = fx_queue_key(q, "consumers");
            char *proc = fx_queue_key(q, "proc:00000000deadbeef.0");
            fx_cmd_ok("SADD %s 00000000deadbeef.0", set);
            fx_cmd_ok("LPUSH %s d", proc);
            free(set);
            free(proc);
        }
        copts(&o, t);
        t->mode = 2; /* nack once: retry path, delayed, promote */
        cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
        cr_assert(wait_got(t, 7, 10000), "name of %zu: %zu deliveries",
                  lens[li], t->got);
        cstop(t);
        cr_assert_eq(t->stop_status, 0);
        cr_assert_eq(leftover(), 0, "name of %zu bytes left keys", lens[li]);
        cfinish(t);
        fx_close(p);
        free(q);
    }
}

Test(contract, many_queues_in_one_consumer)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[40];
    char names[40][16];
    size_t i;

    for (i = 0; i < 40; i++) {
        snprintf(names[i], sizeof names[i], "q%zu", i);
        qs[i] = names[i];
        fx_cmd_ok("LPUSH %s a b c", names[i]);
    }
    copts(&o, t);
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 40), 0);
    cr_assert(wait_got(t, 120, 15000), "%zu of 120", t->got);
    cstop(t);
    cr_assert_eq(t->stop_status, 0);
    cr_assert_eq(leftover(), 0);
    cfinish(t);
}

Test(contract, pool_of_8_with_acks_in_random_order)
{
    const size_t n = 4000;
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[1] = {"q"};
    size_t i, acked = 0;
    uint32_t rng = 12345;
    char *seen = calloc(n, 1);
    fx_tracker *p = fx_tracker_new(n);
    redq_producer_options po;

    redq_producer_options_init(&po);
    po.url = fx_url();
    po.max_pending_msgs = n + 1;
    cr_assert_eq(fx_producer_new(p, &po), 0);
    fx_produce_range(p, "q", 0, n, 0);
    cr_assert(fx_wait_reports(p, n, 20000));
    copts(&o, t);
    t->mode = 1;
    o.pool_size = 8;
    o.pop_batch = 64;
    o.max_unacked = 512;
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    while (acked < n) {
        size_t before = acked;
        fx_run_for(5);
        /* Ack a random half of what is held, in random order. */
        while (t->nheld > 0 && (rng % 4) != 0) {
            size_t k;
            rng = rng * 1103515245u + 12345u;
            k = (rng >> 8) % t->nheld;
            cr_assert_eq(redq_ack(t->held[k]), 0);
            t->held[k] = t->held[--t->nheld];
            acked++;
        }
        rng = rng * 1103515245u + 12345u;
        if (acked == before && t->got >= n && t->nheld == 0)
            break;
        cr_assert(t->got <= n + 0, "redelivered: %zu deliveries", t->got);
        if (t->got >= MAXM - 8)
            break;
    }
    cr_assert_eq(acked, n);
    for (i = 0; i < t->got && i < MAXM; i++) {
        size_t seq;
        const char *bar = memchr(t->body[i], '|', t->len[i]);
        cr_assert_not_null(bar);
        seq = strtoul(bar + 1, NULL, 10);
        cr_assert_lt(seq, n);
        cr_assert_eq(seen[seq], 0, "seq %zu twice", seq);
        seen[seq] = 1;
    }
    cstop(t);
    cr_assert_eq(t->stop_status, 0);
    cr_assert_eq(leftover(), 0, "processing lists not emptied");
    free(seen);
    cfinish(t);
    fx_close(p);
}

/* ---- stop at every moment ----------------------------------------------- */

Test(contract, stop_right_after_new_leaves_nothing_registered)
{
    int k;
    for (k = 0; k < 5; k++) {
        ctrack *t = ctrack_new();
        redq_consumer_options o;
        const char *qs[1] = {"q"};
        copts(&o, t);
        cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
        fx_run_for(k * 7);
        cstop(t);
        fx_run_for(50);
        cr_assert_eq(fx_cmd_int("EXISTS {q}/consumers"), 0,
                     "registered after a stop at %d ms", k * 7);
        cfinish(t);
    }
}

Test(contract, stop_timeout_gives_held_messages_back)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[1] = {"q"};
    size_t i;

    fx_cmd_ok("LPUSH q a b c d e");
    copts(&o, t);
    t->mode = 1;
    o.stop_timeout_ms = 200;
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    cr_assert(wait_got(t, 5, 5000));
    cstop(t);
    cr_assert_eq(t->stop_status, REDQ_ETIMEDOUT);
    fx_run_for(100);
    cr_assert_eq(fx_llen("q"), 5, "held messages not given back");
    cr_assert_eq(fx_cmd_int("EXISTS {q}/consumers"), 0);
    for (i = 0; i < t->nheld; i++)
        cr_assert_eq(redq_ack(t->held[i]), REDQ_ETIMEDOUT);
    /* Given back in order: the oldest is popped first again. */
    {
        redisReply *r = fx_cmd("RPOP q");
        cr_assert_str_eq(r->str, "a");
    }
    cfinish(t);
}

Test(contract, stop_with_redis_gone_is_not_reported_clean)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[1] = {"q"};

    fx_cmd_ok("LPUSH q a");
    copts(&o, t);
    t->mode = 1;
    o.stop_timeout_ms = 500;
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    cr_assert(wait_got(t, 1, 5000));
    fx_server_stop();
    cr_assert_eq(redq_ack(t->held[0]), 0);
    cstop(t);
    cr_assert_neq(t->stop_status, 0, "unconfirmed acks reported as clean");
    cfinish(t);
}

/* An ack followed by a close in the same iteration still reaches Redis. */
Test(contract, ack_then_close_sends_the_ack)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[1] = {"q"};

    fx_cmd_ok("LPUSH q a");
    copts(&o, t);
    t->mode = 1;
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    cr_assert(wait_got(t, 1, 5000));
    cr_assert_eq(redq_ack(t->held[0]), 0);
    cr_assert_eq(redq_consumer_close(t->c, on_cclosed, t), 0);
    cr_assert(fx_run_until(cond_closed, t, 5000));
    t->c = NULL;
    {
        redisReply *r = fx_cmd("KEYS {q}/proc:*");
        size_t i;
        long long n = 0;
        for (i = 0; i < r->elements; i++)
            n += fx_llen(r->element[i]->str);
        cr_assert_eq(n, 0, "the ack never left");
    }
    cfinish(t);
}

Test(contract, acking_twice_is_an_error_not_corruption)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[1] = {"q"};

    fx_cmd_ok("LPUSH q a b");
    copts(&o, t);
    t->mode = 1;
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    cr_assert(wait_got(t, 2, 5000));
    cr_assert_eq(t->nheld, 2);
    cr_assert_eq(redq_ack(t->held[0]), 0);
    cr_assert_eq(redq_ack(t->held[0]), REDQ_EALREADY);
    cr_assert_eq(redq_nack(t->held[0], "x"), REDQ_EALREADY);
    cr_assert_eq(redq_ack(t->held[1]), 0);
    cstop(t);
    cr_assert_eq(t->stop_status, 0);
    cfinish(t);
}

/* ---- a full server: taking and acking add no memory --------------------- */

Test(contract, server_at_maxmemory_is_drained)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[1] = {"q"};
    int k;
    long long used;
    redisReply *r;

    for (k = 0; k < 2000; k++)
        fx_cmd_ok("LPUSH q message-%d-padding-padding-padding", k);
    r = fx_cmd("MEMORY STATS");
    (void)r;
    used = fx_cmd_int("DBSIZE");
    (void)used;
    fx_cmd_ok("CONFIG SET maxmemory-policy noeviction");
    fx_cmd_ok("CONFIG SET maxmemory 1");
    /* Writes that grow memory are refused now. */
    r = fx_cmd("SET x y");
    cr_assert_eq(r->type, REDIS_REPLY_ERROR);
    copts(&o, t);
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    cr_assert(wait_got(t, 2000, 15000), "%zu of 2000 drained at maxmemory",
              t->got);
    cstop(t);
    cr_assert_eq(t->stop_status, 0);
    fx_cmd_ok("CONFIG SET maxmemory 0");
    cr_assert_eq(leftover(), 0);
    cfinish(t);
}

/* ---- a long handler keeps its message ------------------------------------ */

Test(contract, extend_keeps_a_message_past_its_visibility_timeout)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[1] = {"q"};

    fx_cmd_ok("LPUSH q a");
    copts(&o, t);
    t->mode = 1;
    o.visibility_timeout_ms = 150;
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    cr_assert(wait_got(t, 1, 5000));
    for (int k = 0; k < 6; k++) {
        cr_assert_eq(redq_msg_extend(t->held[0], 150), 0);
        fx_run_for(100);
    }
    cr_assert_eq(t->got, 1, "redelivered while extended");
    cr_assert_eq(redq_ack(t->held[0]), 0);
    cstop(t);
    cr_assert_eq(t->stop_status, 0);
    cfinish(t);
}

/* ---- least-privilege ACL users: exactly the lists in docs/DESIGN.md ------ */

typedef struct logrec {
    unsigned errors;
    char first[256];
} logrec;

static logrec acl_log; /* options share one user pointer: a global here */

static void on_acl_log(int level, int code, const char *msg, void *user)
{
    logrec *l = &acl_log;
    (void)code;
    (void)user;
    if (level <= REDQ_LOG_ERROR && l->errors++ == 0)
        snprintf(l->first, sizeof l->first, "%s", msg);
}

static void acl_consume(const char *user, int delivery, int nack_once)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[2] = {"jobs", "{orders}"};
    char url[256];
    int k;

    for (k = 0; k < 50; k++) {
        fx_cmd_ok("LPUSH jobs j%d", k);
        fx_cmd_ok("LPUSH {orders} o%d", k);
    }
    if (delivery == REDQ_AT_LEAST_ONCE) {
        /* A dead consumer's message: the reaper's scripts run too. */
        fx_cmd_ok("SADD {jobs}/consumers 00000000deadbeef.0");
        fx_cmd_ok("LPUSH {jobs}/proc:00000000deadbeef.0 orphan");
    }
    snprintf(url, sizeof url, "redis://%s:pw-%s@127.0.0.1:%d", user, user,
             fx_port());
    copts(&o, t);
    o.url = url;
    o.guarantee = delivery;
    o.log = on_acl_log;
    o.log_user = t;
    t->mode = nack_once ? 2 : 0;
    memset(&acl_log, 0, sizeof acl_log);
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 2), 0);
    cr_assert(wait_got(t, nack_once ? 201 : 100, 15000),
              "user %s: %zu deliveries", user, t->got);
    fx_run_for(500); /* a few heartbeat periods: registration, reaper */
    cstop(t);
    cr_assert_eq(t->stop_status, 0, "user %s: stop %d", user, t->stop_status);
    cr_assert_eq(acl_log.errors, 0, "user %s: %u errors, first: %s", user,
                 acl_log.errors, acl_log.first);
    cfinish(t);
}

Test(contract, least_privilege_consumers)
{
    /* docs/DESIGN.md, "ACL users": the at-least-once consumer. */
    fx_cmd_ok("ACL SETUSER alo on >pw-alo ~* -@all +blmove +client|id "
              "+client|unblock +evalsha +script|load +smembers "
              "+type +lmpop +lpush +sismember +lrange +ltrim +lrem +lindex "
              "+llen +zadd +time +zrangebyscore +zrem +zrange +get +set "
              "+exists +lpop +rpush +srem +del +sadd +hget");
    acl_consume("alo", REDQ_AT_LEAST_ONCE, 1);
    /* The at-most-once consumer: pops only; no scripts at all. */
    fx_cmd_ok("ACL SETUSER amo on >pw-amo ~* -@all +blmpop +client|id "
              "+client|unblock");
    acl_consume("amo", REDQ_AT_MOST_ONCE, 0);
    fx_cmd_ok("ACL DELUSER alo amo");
}

/* The control connection comes back while a stop runs: the consumer must
 * not register again (it would look alive for consumer_ttl_ms after it
 * exited). */
Test(contract, connections_back_during_stop_do_not_register_again)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[1] = {"q"};

    copts(&o, t);
    o.reconnect_min_ms = 5;
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    fx_cmd_ok("LPUSH q a");
    cr_assert(wait_got(t, 1, 5000));
    fx_cmd_ok("CLIENT KILL TYPE normal SKIPME yes");
    cstop(t);
    fx_run_for(3 * 600 / 3 + 100); /* past a heartbeat period */
    cr_assert_eq(fx_cmd_int("EXISTS {q}/consumers"), 0,
                 "registered again after the stop");
    cfinish(t);
}

/* ---- what an outsider found (issue 8 review) ----------------------------- */

/* Delayed produce adds data: at maxmemory it is refused like an LPUSH, not
 * let past the cap by the scripts' allow-oom. */
Test(contract, delayed_produce_is_refused_at_maxmemory)
{
    fx_tracker *p = fx_tracker_new(4);
    redq_producer_options po;
    redq_producer_options_init(&po);
    po.url = fx_url();
    cr_assert_eq(fx_producer_new(p, &po), 0);
    fx_cmd_ok("CONFIG SET maxmemory-policy noeviction");
    fx_cmd_ok("CONFIG SET maxmemory 1");
    cr_assert_eq(redq_produce_delayed(p->p, "q", "x", 1, 10, NULL), 0);
    cr_assert(fx_wait_reports(p, 1, 5000));
    cr_assert_eq(p->ok, 0, "a delayed message was stored past maxmemory");
    cr_assert_eq(p->last_fail_status, REDQ_ESERVER);
    cr_assert(strstr(p->last_errstr, "OOM") != NULL, "%s", p->last_errstr);
    fx_cmd_ok("CONFIG SET maxmemory 0");
    cr_assert_eq(fx_cmd_int("EXISTS {q}/delayed"), 0);
    fx_close(p);
}

/* A queue name that is another queue's key is refused everywhere, with a
 * reason: it would write into that queue's own lists. */
Test(contract, names_that_are_other_queues_keys_are_refused)
{
    fx_tracker *p = fx_tracker_new(4);
    redq_producer_options po;
    redq_consumer_options o;
    redq_consumer *c = NULL;
    char err[256] = "";
    const char *qs[1] = {"{jobs}/due"};
    ctrack *t = ctrack_new();

    redq_producer_options_init(&po);
    po.url = fx_url();
    cr_assert_eq(fx_producer_new(p, &po), 0);
    cr_assert_eq(redq_produce(p->p, "{jobs}/due", "RQ1 a=0\nINJECTED", 16,
                              NULL),
                 REDQ_EINVAL);
    cr_assert_eq(redq_produce_delayed(p->p, "{orders}:delayed", "x", 1, 5,
                                      NULL),
                 REDQ_EINVAL);
    cr_assert_eq(redq_produce(p->p, "jobs", "ok", 2, NULL), 0);
    cr_assert(fx_wait_reports(p, 1, 5000));
    cr_assert_eq(p->ok, 1);
    copts(&o, t);
    o.errbuf = err;
    o.errbuf_size = sizeof err;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &o, qs, 1), REDQ_EINVAL);
    cr_assert(strstr(err, "another queue's own key") != NULL, "%s", err);
    cr_assert_eq(fx_cmd_int("EXISTS {jobs}/due"), 0);
    fx_close(p);
    cfinish(t);
}

Test(contract, delay_bound_is_ten_years_to_the_day)
{
    fx_tracker *p = fx_tracker_new(4);
    redq_producer_options po;
    const long long day = 24LL * 3600 * 1000;
    redq_producer_options_init(&po);
    po.url = fx_url();
    cr_assert_eq(fx_producer_new(p, &po), 0);
    cr_assert_eq(redq_produce_delayed(p->p, "q", "x", 1, 3653 * day + 1, NULL),
                 REDQ_EINVAL);
    cr_assert_eq(redq_produce_delayed(p->p, "q", "x", 1, 3653 * day, NULL), 0);
    cr_assert(fx_wait_reports(p, 1, 5000));
    cr_assert_eq(p->ok, 1);
    fx_close(p);
}

/* Timeouts at INT_MAX are accepted; their deadlines must not overflow (the
 * ASan + UBSan build reports it if they do). */
Test(contract, timeouts_at_int_max_work)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[1] = {"q"};
    fx_cmd_ok("LPUSH q a");
    copts(&o, t);
    o.pop_timeout_ms = 2147483647;
    o.command_timeout_ms = 2147483647;
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    cr_assert(wait_got(t, 1, 5000));
    cstop(t);
    cr_assert_eq(t->stop_status, 0);
    cfinish(t);
}

/* The reaper and the dead-letter requeue keep every byte too: lookalikes
 * left in a dead consumer's processing lists come back as they were sent,
 * on their second attempt. */
Test(contract, lookalikes_survive_the_reaper)
{
    ctrack *t = ctrack_new();
    redq_consumer_options o;
    const char *qs[1] = {"q"};
    size_t i;

    fx_cmd_ok("SADD {q}/consumers 00000000deadbeef.3");
    for (i = 0; i < NLOOK; i++)
        fx_cmd_ok("LPUSH {q}/proc:00000000deadbeef.3 %b", lookalikes[i],
                  strlen(lookalikes[i]));
    copts(&o, t);
    cr_assert_eq(redq_consumer_new(&t->c, fx_base(), &o, qs, 1), 0);
    cr_assert(wait_got(t, NLOOK, 10000), "%zu of %zu recovered", t->got,
              (size_t)NLOOK);
    for (i = 0; i < NLOOK; i++) {
        size_t j;
        int found = 0;
        for (j = 0; j < NLOOK; j++)
            found |= t->len[i] == strlen(lookalikes[j]) &&
                     memcmp(t->body[i], lookalikes[j], t->len[i]) == 0;
        cr_assert(found, "the reaper rewrote a payload: %.*s", (int)t->len[i],
                  t->body[i]);
        cr_assert_eq(t->attempt[i], 2);
    }
    cstop(t);
    cr_assert_eq(t->stop_status, 0);
    cr_assert_eq(leftover(), 0);
    cfinish(t);
}
