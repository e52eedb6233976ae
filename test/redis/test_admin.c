/*
 * The admin API (redq.h, "Admin") against a real redis-server: snapshots
 * of layouts built by hand and by real producers and consumers, peek
 * order, dead-letter paging and actions, pause with running consumers in
 * both modes, recovery, metrics text, the registry.
 *
 * Callbacks only record (copies); assertions run after the loop returns.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "fixture.h"
#include "redq_private.h" /* redq__prom_escape (lib/prom.c, linked in) */

TestSuite(admin, .init = fx_setup, .fini = fx_teardown, .timeout = 120);

/* ---- synchronous wrappers over the admin calls ------------------------- */

typedef struct amsg {
    char *data;
    size_t len;
    char id[80];
    int attempts;
    long long ts, dts;
    char reason[1100];
    int has_reason;
    size_t index;
    int framed;
    char queue[1100];
    int has_queue;
} amsg;

typedef struct ares {
    int done, status;
    char err[256];
    redq_queue_info q[64];
    char qname[64][1100];
    size_t nq;
    amsg m[256];
    size_t nm;
    uint64_t n;
    char *text;
    size_t textlen;
    char okey[64][1100];
    char oholder[64][48];
    uint64_t omsgs[64];
    size_t no;
} ares;

static redq_admin *g_admin;
static ares g_res;

static void res_reset(ares *r)
{
    size_t i;
    for (i = 0; i < r->nm; i++)
        free(r->m[i].data);
    free(r->text);
    memset(r, 0, sizeof *r);
}

static void rec_err(ares *r, int status, const char *es)
{
    r->done++;
    r->status = status;
    snprintf(r->err, sizeof r->err, "%s", es ? es : "");
}

static void on_queues(redq_admin *a, int status, const char *es,
                      const redq_queue_info *q, size_t n, void *user)
{
    ares *r = user;
    size_t i;
    (void)a;
    rec_err(r, status, es);
    for (i = 0; i < n && i < 64; i++) {
        r->q[i] = q[i];
        snprintf(r->qname[i], sizeof r->qname[i], "%s", q[i].name);
        r->q[i].name = r->qname[i];
    }
    r->nq = n;
}

static void on_msgs(redq_admin *a, int status, const char *es,
                    const redq_admin_msg *m, size_t n, void *user)
{
    ares *r = user;
    size_t i;
    (void)a;
    rec_err(r, status, es);
    for (i = 0; i < n && i < 256; i++) {
        amsg *d = &r->m[i];
        d->data = malloc(m[i].len + 1);
        memcpy(d->data, m[i].data, m[i].len);
        d->len = m[i].len;
        snprintf(d->id, sizeof d->id, "%s", m[i].id);
        d->attempts = m[i].attempts;
        d->ts = m[i].ts_ms;
        d->dts = m[i].dead_ts_ms;
        d->has_reason = m[i].reason != NULL;
        snprintf(d->reason, sizeof d->reason, "%s",
                 m[i].reason ? m[i].reason : "");
        d->index = m[i].index;
        d->framed = m[i].framed;
        d->has_queue = m[i].queue != NULL;
        snprintf(d->queue, sizeof d->queue, "%s", m[i].queue ? m[i].queue : "");
    }
    r->nm = n;
}

static void on_done(redq_admin *a, int status, const char *es, uint64_t n,
                    void *user)
{
    ares *r = user;
    (void)a;
    rec_err(r, status, es);
    r->n = n;
}

static void on_text(redq_admin *a, int status, const char *es,
                    const char *text, size_t len, void *user)
{
    ares *r = user;
    (void)a;
    rec_err(r, status, es);
    r->text = malloc(len + 1);
    memcpy(r->text, text, len);
    r->text[len] = '\0';
    r->textlen = len;
}

static void on_orphans(redq_admin *a, int status, const char *es,
                       const redq_orphan *o, size_t n, void *user)
{
    ares *r = user;
    size_t i;
    (void)a;
    rec_err(r, status, es);
    for (i = 0; i < n && i < 64; i++) {
        snprintf(r->okey[i], sizeof r->okey[i], "%s", o[i].key);
        snprintf(r->oholder[i], sizeof r->oholder[i], "%s", o[i].holder);
        r->omsgs[i] = o[i].messages;
    }
    r->no = n;
}

static bool cond_done(void *arg)
{
    return ((ares *)arg)->done > 0;
}

static redq_admin *admin(void)
{
    if (g_admin == NULL) {
        redq_admin_options o;
        redq_admin_options_init(&o);
        o.url = fx_url();
        cr_assert(redq_admin_new(&g_admin, fx_base(), &o) == 0);
    }
    return g_admin;
}

/* Wait for the call started with rc; the result is g_res. */
static ares *wait_res(int rc)
{
    cr_assert(rc == 0, "admin call: %s", redq_err_name(rc));
    cr_assert(g_res.done == 0, "callback ran inside the call");
    cr_assert(fx_run_until(cond_done, &g_res, 10000), "no answer");
    cr_assert(g_res.done == 1);
    return &g_res;
}

#define CALL(expr) (res_reset(&g_res), wait_res(expr))

static ares *snap(const char *q)
{
    ares *r = CALL(redq_admin_queue(admin(), q, on_queues, &g_res));
    cr_assert(r->status == 0, "snapshot %s: %s", q, r->err);
    cr_assert(r->nq == 1);
    return r;
}

static const redq_queue_info *find_q(ares *r, const char *name)
{
    size_t i;
    for (i = 0; i < r->nq; i++)
        if (strcmp(r->qname[i], name) == 0)
            return &r->q[i];
    return NULL;
}

static int closed_n;
static void on_admin_closed(void *u)
{
    (void)u;
    closed_n++;
}
static bool cond_closed_n(void *a)
{
    return closed_n >= *(int *)a;
}

static void admin_close(void)
{
    int want = closed_n + 1;
    if (g_admin == NULL)
        return;
    cr_assert(redq_admin_close(g_admin, on_admin_closed, NULL) == 0);
    cr_assert(fx_run_until(cond_closed_n, &want, 5000));
    g_admin = NULL;
}

/* ---- hand-built layouts -------------------------------------------------- */

/* A queue's key, kept in a ring so that tests can use it inline without
 * freeing (LeakSanitizer sees the ring as reachable). */
static const char *K(const char *q, const char *sfx)
{
    static char *ring[64];
    static size_t at;
    free(ring[at % 64]);
    ring[at % 64] = fx_queue_key(q, sfx);
    return ring[at++ % 64];
}

Test(admin, snapshot_matches_a_layout_built_by_hand)
{
    const char *q = "snapq";
    long long now = (long long)time(NULL) * 1000;
    char fr[256];
    ares *r;

    fx_cmd_ok("LPUSH %s r1 r2 r3", q);
    snprintf(fr, sizeof fr, "RQ1 id=d1 a=1 ts=%lld\nbody", now - 5000);
    /* The right end is taken next: the frame with a ts is the oldest. */
    fx_cmd_ok("RPUSH %s %s", K(q, "due"), "RQ1 id=d2 a=1\nx");
    fx_cmd_ok("RPUSH %s %s", K(q, "due"), fr);
    fx_cmd_ok("ZADD %s 1 a 2 b", K(q, "delayed"));
    fx_cmd_ok("LPUSH %s x1 x2 x3 x4", K(q, "dead"));
    fx_cmd_ok("SADD %s abc.0 abc.1 def.0", K(q, "consumers"));
    fx_cmd_ok("SET %s 1", K(q, "hb:abc.0"));
    fx_cmd_ok("SET %s 1", K(q, "hb:abc.1"));
    fx_cmd_ok("SET %s 1", K(q, "hb:gone.0")); /* not registered: not live */
    fx_cmd_ok("LPUSH %s p1 p2", K(q, "proc:abc.0"));
    fx_cmd_ok("LPUSH %s f1", K(q, "fproc:abc.1"));
    fx_cmd_ok("LPUSH %s p3", K(q, "proc:def.0"));
    fx_cmd_ok("LPUSH %s p4 p5", K(q, "proc:gone.0")); /* not registered */
    fx_cmd_ok("HSET %s paused 1", K(q, "meta"));
    fx_cmd_ok("ZADD redq:queues 12345 %s", q);

    r = snap(q);
    cr_expect_str_eq(r->q[0].name, q);
    cr_expect_eq(r->q[0].ready, 3);
    cr_expect_eq(r->q[0].due, 2);
    cr_expect_eq(r->q[0].delayed, 2);
    cr_expect_eq(r->q[0].dead, 4);
    cr_expect_eq(r->q[0].registered, 3);
    cr_expect_eq(r->q[0].consumers, 2);
    cr_expect_eq(r->q[0].processing, 4);
    cr_expect_eq(r->q[0].paused, 1);
    cr_expect_eq(r->q[0].last_seen_ms, 12345);
    /* The ready list holds raw payloads: their age is unknown. */
    cr_expect_eq(r->q[0].oldest_age_ms, -1);

    /* With the ready list empty the oldest due frame's ts tells. */
    fx_cmd_ok("DEL %s", q);
    fx_cmd_ok("LPUSH %s %s", K(q, "due"), "RQ1 id=d3 a=1\nnewest");
    fx_cmd_ok("HDEL %s paused", K(q, "meta"));
    r = snap(q);
    cr_expect_eq(r->q[0].ready, 0);
    cr_expect_eq(r->q[0].paused, 0);
    cr_expect(r->q[0].oldest_age_ms >= 4000 && r->q[0].oldest_age_ms < 60000,
              "oldest_age_ms %lld", r->q[0].oldest_age_ms);

    /* A queue nobody used: zeros, not an error; not in the registry. */
    r = snap("nothing-here");
    cr_expect_eq(r->q[0].ready + r->q[0].dead + r->q[0].registered, 0);
    cr_expect_eq(r->q[0].last_seen_ms, -1);
    cr_expect_eq(r->q[0].oldest_age_ms, -1);

    /* A key of the wrong type counts 0 rather than failing the snapshot. */
    fx_cmd_ok("SET %s oops", K(q, "dead"));
    r = snap(q);
    cr_expect_eq(r->q[0].dead, 0);
    cr_expect_eq(r->q[0].delayed, 2);
    admin_close();
}

Test(admin, peek_shows_due_then_ready_in_take_order_without_taking)
{
    const char *q = "peekq";
    /* Producers LPUSH: the oldest is at the right, taken first. */
    fx_cmd_ok("LPUSH %s first second third", q);
    /* due: taken from the right too; frames. */
    fx_cmd_ok("LPUSH %s %s", K(q, "due"), "RQ1 id=u1 a=2 ts=77\nDUE-A");
    fx_cmd_ok("LPUSH %s %s", K(q, "due"), "RQ1 id=u2 a=1\nDUE-B");
    ares *r = CALL(redq_admin_peek(admin(), q, 4, on_msgs, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert_eq(r->nm, 4);
    cr_expect_eq(r->m[0].len, 5);
    cr_expect(memcmp(r->m[0].data, "DUE-A", 5) == 0);
    cr_expect_str_eq(r->m[0].id, "u1");
    cr_expect_eq(r->m[0].attempts, 2);
    cr_expect_eq(r->m[0].ts, 77);
    cr_expect(!r->m[0].has_reason);
    cr_expect(memcmp(r->m[1].data, "DUE-B", 5) == 0);
    cr_expect(r->m[2].len == 5 && memcmp(r->m[2].data, "first", 5) == 0);
    cr_expect_str_eq(r->m[2].id, "");
    cr_expect_eq(r->m[2].ts, -1);
    cr_expect(r->m[3].len == 6 && memcmp(r->m[3].data, "second", 6) == 0);
    cr_expect_eq(r->m[3].index, 3);
    /* Nothing was taken. */
    cr_expect_eq(fx_llen(q), 3);
    cr_expect_eq(fx_llen(K(q, "due")), 2);

    /* More than there is: all of it. */
    r = CALL(redq_admin_peek(admin(), q, 100, on_msgs, &g_res));
    cr_expect_eq(r->nm, 5);
    /* A wrong-typed key is an error, not a guess. */
    fx_cmd_ok("SET wrongq x");
    r = CALL(redq_admin_peek(admin(), "wrongq", 3, on_msgs, &g_res));
    cr_expect_eq(r->status, REDQ_EWRONGTYPE, "%s", r->err);
    admin_close();
}

Test(admin, payloads_that_look_like_frames_or_json_are_shown_byte_for_byte)
{
    const char *q = "rawq";
    static const char frame_like[] = "RQ1 id=evil a=999\nnot a frame";
    static const char json[] = "{\"a\":\"<script>\\n\"}";
    static const char bin[] = {'a', 0, '\n', (char)0xff, 'z'};
    fx_cmd_ok("LPUSH %s %b", q, frame_like, sizeof frame_like - 1);
    fx_cmd_ok("LPUSH %s %b", q, json, sizeof json - 1);
    fx_cmd_ok("LPUSH %s %b", q, bin, sizeof bin);
    ares *r = CALL(redq_admin_peek(admin(), q, 3, on_msgs, &g_res));
    cr_assert_eq(r->nm, 3);
    cr_expect(r->m[0].len == sizeof frame_like - 1 &&
              memcmp(r->m[0].data, frame_like, r->m[0].len) == 0);
    cr_expect_str_eq(r->m[0].id, ""); /* a ready payload is never parsed */
    cr_expect_eq(r->m[0].attempts, 0);
    cr_expect(r->m[1].len == sizeof json - 1 &&
              memcmp(r->m[1].data, json, r->m[1].len) == 0);
    cr_expect(r->m[2].len == sizeof bin &&
              memcmp(r->m[2].data, bin, sizeof bin) == 0);

    /* A dead letter by hand (not a frame) is shown whole as its payload. */
    fx_cmd_ok("LPUSH %s %b", K(q, "dead"), json, sizeof json - 1);
    r = CALL(redq_admin_dead(admin(), q, 0, 10, on_msgs, &g_res));
    cr_assert_eq(r->nm, 1);
    cr_expect(r->m[0].len == sizeof json - 1 &&
              memcmp(r->m[0].data, json, r->m[0].len) == 0);
    admin_close();
}

/* Dead letters as consumers make them: "RQ1 id=.. a=.. ts=.. dr=.. dts=..
 * q=..\npayload", newest LPUSHed at the head. */
static void push_dead(const char *q, int i)
{
    char fr[256];
    int n = snprintf(fr, sizeof fr,
                     "RQ1 id=m%d a=5 ts=%d dr=failed%%20number%%20%d dts=%d "
                     "q=%s\npayload-%d",
                     i, 1000 + i, i, 2000 + i, q, i);
    fx_cmd_ok("LPUSH %s %b", K(q, "dead"), fr, (size_t)n);
}

Test(admin, dead_letters_page_newest_first_with_reasons_decoded)
{
    const char *q = "deadq";
    int i;
    for (i = 0; i < 25; i++)
        push_dead(q, i);
    ares *r = CALL(redq_admin_dead(admin(), q, 0, 10, on_msgs, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert_eq(r->nm, 10);
    cr_expect_str_eq(r->m[0].id, "m24");
    cr_expect_str_eq(r->m[0].reason, "failed number 24");
    cr_expect_eq(r->m[0].attempts, 5);
    cr_expect_eq(r->m[0].ts, 1024);
    cr_expect_eq(r->m[0].dts, 2024);
    cr_expect(r->m[0].len == 10 && memcmp(r->m[0].data, "payload-24", 10) == 0);
    cr_expect_eq(r->m[0].index, 0);
    cr_expect_eq(r->m[0].framed, 1);
    cr_expect(r->m[0].has_queue);
    cr_expect_str_eq(r->m[0].queue, q);
    r = CALL(redq_admin_dead(admin(), q, 20, 10, on_msgs, &g_res));
    cr_assert_eq(r->nm, 5);
    cr_expect_str_eq(r->m[0].id, "m4");
    cr_expect_eq(r->m[0].index, 20);
    cr_expect_str_eq(r->m[4].id, "m0");
    cr_expect_eq(r->m[4].index, 24);
    r = CALL(redq_admin_dead(admin(), q, 30, 10, on_msgs, &g_res));
    cr_expect_eq(r->status, 0);
    cr_expect_eq(r->nm, 0);
    admin_close();
}

Test(admin, requeue_n_then_all_one_by_id_delete_by_id_and_purge)
{
    const char *q = "rqq";
    int i;
    redisReply *rep;
    for (i = 0; i < 30; i++)
        push_dead(q, i);

    /* N: the oldest first (m0, m1, m2), attempts reset, payload kept. */
    ares *r = CALL(redq_admin_requeue(admin(), q, 3, on_done, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect_eq(r->n, 3);
    cr_expect_eq(fx_llen(K(q, "dead")), 27);
    rep = fx_cmd_ok("LRANGE %s 0 -1", K(q, "due"));
    cr_assert_eq(rep->elements, 3);
    /* The next taken (rightmost) is the oldest dead letter. */
    cr_expect(strstr(rep->element[2]->str, "id=m0") != NULL, "%s",
              rep->element[2]->str);
    cr_expect(strstr(rep->element[2]->str, " a=0") != NULL);
    cr_expect(strstr(rep->element[2]->str, "dr=") == NULL);
    cr_expect(strstr(rep->element[2]->str, "\npayload-0") != NULL);

    /* One by id, from the middle; then the same id again finds none. */
    r = CALL(redq_admin_requeue_id(admin(), q, "m17", on_done, &g_res));
    cr_expect_eq(r->status, 0, "%s", r->err);
    cr_expect_eq(r->n, 1);
    cr_expect_eq(fx_llen(K(q, "dead")), 26);
    cr_expect_eq(fx_llen(K(q, "due")), 4);
    rep = fx_cmd_ok("LINDEX %s 0", K(q, "due"));
    cr_expect(strstr(rep->str, "id=m17 ") != NULL, "%s", rep->str);
    r = CALL(redq_admin_requeue_id(admin(), q, "m17", on_done, &g_res));
    cr_expect_eq(r->n, 0);
    /* An id that is a prefix of others matches only itself: m2 was
     * requeued, m20..m29 are still there. */
    r = CALL(redq_admin_delete_dead(admin(), q, "m2", on_done, &g_res));
    cr_expect_eq(r->n, 0);
    r = CALL(redq_admin_delete_dead(admin(), q, "m25", on_done, &g_res));
    cr_expect_eq(r->n, 1);
    cr_expect_eq(fx_llen(K(q, "dead")), 25);
    cr_expect_eq(fx_llen(K(q, "due")), 4);
    rep = fx_cmd_ok("LRANGE %s 0 -1", K(q, "dead"));
    for (i = 0; i < (int)rep->elements; i++) {
        cr_expect(strstr(rep->element[i]->str, "id=m25 ") == NULL);
        cr_expect(strstr(rep->element[i]->str, "id=m17 ") == NULL);
    }
    r = CALL(redq_admin_delete_dead(admin(), q, "nope", on_done, &g_res));
    cr_expect_eq(r->n, 0);

    /* All: every one there is. */
    r = CALL(redq_admin_requeue(admin(), q, SIZE_MAX, on_done, &g_res));
    cr_expect_eq(r->n, 25);
    cr_expect_eq(fx_llen(K(q, "dead")), 0);
    cr_expect_eq(fx_llen(K(q, "due")), 29);

    /* Purge counts exactly. */
    for (i = 0; i < 7; i++)
        push_dead(q, 100 + i);
    r = CALL(redq_admin_purge(admin(), q, on_done, &g_res));
    cr_expect_eq(r->n, 7);
    cr_expect_eq(fx_cmd_int("EXISTS %s", K(q, "dead")), 0);
    r = CALL(redq_admin_purge(admin(), q, on_done, &g_res));
    cr_expect_eq(r->n, 0);
    admin_close();
}

Test(admin, requeue_all_moves_more_than_one_batch)
{
    const char *q = "bigdead";
    int i;
    redisReply *rep;
    /* 2500 dead letters: three DEADREQUEUE calls of at most 1000. */
    for (i = 0; i < 2500; i += 500) {
        char cmd[64];
        int j;
        const char *argv[502];
        size_t lens[502];
        char bufs[500][32];
        argv[0] = "LPUSH";
        argv[1] = K(q, "dead");
        lens[0] = 5;
        lens[1] = strlen(argv[1]);
        for (j = 0; j < 500; j++) {
            lens[2 + j] = (size_t)snprintf(bufs[j], sizeof bufs[j],
                                           "RQ1 id=b%d a=5\nx", i + j);
            argv[2 + j] = bufs[j];
        }
        (void)cmd;
        rep = redisCommandArgv(fx_redis(), 502, argv, lens);
        cr_assert(rep && rep->type == REDIS_REPLY_INTEGER);
        freeReplyObject(rep);
    }
    ares *r = CALL(redq_admin_requeue(admin(), q, SIZE_MAX, on_done, &g_res));
    cr_expect_eq(r->status, 0, "%s", r->err);
    cr_expect_eq(r->n, 2500);
    cr_expect_eq(fx_llen(K(q, "due")), 2500);
    /* And an id deep in a long list (past one DEADONE page of 100). */
    fx_cmd_ok("RENAME %s %s", K(q, "due"), K(q, "dead"));
    r = CALL(redq_admin_delete_dead(admin(), q, "b7", on_done, &g_res));
    cr_expect_eq(r->n, 1);
    cr_expect_eq(fx_llen(K(q, "dead")), 2499);
    admin_close();
}

/* ---- names ---------------------------------------------------------------- */

Test(admin, names_of_1024_bytes_and_odd_bytes_work)
{
    char name[1025], over[1026];
    memset(name, 'n', 1024);
    name[0] = '{';
    name[5] = '}';
    name[1024] = '\0';
    memset(over, 'o', 1025);
    over[1025] = '\0';
    fx_cmd_ok("LPUSH %s a b", name);
    fx_cmd_ok("LPUSH %s %s", K(name, "dead"), "RQ1 id=z a=1\nzz");
    ares *r = snap(name);
    cr_expect_eq(r->q[0].ready, 2);
    cr_expect_eq(r->q[0].dead, 1);
    cr_expect_eq(strlen(r->q[0].name), 1024);
    r = CALL(redq_admin_requeue_id(admin(), name, "z", on_done, &g_res));
    cr_expect_eq(r->n, 1);
    cr_expect_eq(redq_admin_queue(admin(), over, on_queues, &g_res),
                 REDQ_EINVAL);
    cr_expect_eq(redq_admin_queue(admin(), "", on_queues, &g_res),
                 REDQ_EINVAL);
    cr_expect_eq(redq_admin_peek(admin(), NULL, 1, on_msgs, &g_res),
                 REDQ_EINVAL);
    cr_expect_eq(redq_admin_requeue_id(admin(), "x", "", on_done, &g_res),
                 REDQ_EINVAL);
    admin_close();
}

/* ---- metrics ------------------------------------------------------------- */

Test(admin, prometheus_label_escaping)
{
    char out[64];
    size_t n = redq__prom_escape("a\\b\"c\nd", 7, out);
    cr_expect_str_eq(out, "a\\\\b\\\"c\\nd");
    cr_expect_eq(n, strlen("a\\\\b\\\"c\\nd"));
    n = redq__prom_escape("x\xffy\xc3\xa9", 5, out);
    cr_expect_str_eq(out, "x\xEF\xBF\xBDy\xc3\xa9");
    cr_expect_eq(n, 7);
}

static const char *const fields[] = {
    "redq_queue_ready", "redq_queue_due", "redq_queue_processing",
    "redq_queue_delayed", "redq_queue_dead", "redq_queue_consumers",
    "redq_queue_consumers_registered", "redq_queue_paused",
    "redq_queue_last_seen_timestamp_seconds"};

Test(admin, metrics_name_every_registered_queue_and_field)
{
    static const char *const names[] = {"m-one", "m\"two\\", "m\nthree"};
    static const char *const esc[] = {"m-one", "m\\\"two\\\\", "m\\nthree"};
    size_t i, f;
    char line[2048];
    for (i = 0; i < 3; i++) {
        fx_cmd_ok("ZADD redq:queues 1700000000000 %s", names[i]);
        fx_cmd_ok("LPUSH %s a", names[i]);
        fx_cmd_ok("LPUSH %s a", names[i]);
    }
    fx_cmd_ok("LPUSH %s x y z", K(names[1], "dead"));
    fx_cmd_ok("HSET %s paused 1", K(names[2], "meta"));
    ares *r = CALL(redq_admin_metrics(admin(), on_text, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert_eq(strlen(r->text), r->textlen);
    for (f = 0; f < sizeof fields / sizeof fields[0]; f++) {
        snprintf(line, sizeof line, "# TYPE %s gauge\n", fields[f]);
        cr_expect(strstr(r->text, line) != NULL, "no %s", line);
        snprintf(line, sizeof line, "# HELP %s ", fields[f]);
        cr_expect(strstr(r->text, line) != NULL, "no %s", line);
        for (i = 0; i < 3; i++) {
            snprintf(line, sizeof line, "\n%s{queue=\"%s\"} ", fields[f],
                     esc[i]);
            cr_expect(strstr(r->text, line) != NULL, "no %s", line);
        }
    }
    snprintf(line, sizeof line, "\nredq_queue_ready{queue=\"%s\"} 2\n", esc[0]);
    cr_expect(strstr(r->text, line) != NULL, "%s", r->text);
    snprintf(line, sizeof line, "\nredq_queue_dead{queue=\"%s\"} 3\n", esc[1]);
    cr_expect(strstr(r->text, line) != NULL, "%s", r->text);
    snprintf(line, sizeof line, "\nredq_queue_paused{queue=\"%s\"} 1\n", esc[2]);
    cr_expect(strstr(r->text, line) != NULL, "%s", r->text);
    cr_expect(strstr(r->text,
                     "redq_queue_last_seen_timestamp_seconds{queue=\"m-one\"}"
                     " 1700000000.000\n") != NULL);

    /* The real parser: promtool, when installed. */
    if (access("/usr/bin/promtool", X_OK) == 0) {
        char path[512], cmd[1100];
        FILE *fp;
        snprintf(path, sizeof path, "%s/metrics.txt", fx_dir());
        fp = fopen(path, "w");
        cr_assert_not_null(fp);
        fwrite(r->text, 1, r->textlen, fp);
        fclose(fp);
        snprintf(cmd, sizeof cmd, "/usr/bin/promtool check metrics < '%s' 2>&1",
                 path);
        cr_expect_eq(system(cmd), 0, "promtool rejected:\n%s", r->text);
    } else {
        cr_log_warn("promtool not installed (apt-get install prometheus): "
                    "the metrics text was not checked by it");
    }
    admin_close();
}

/* ---- the registry ---------------------------------------------------------- */

static void on_rep_count(redq_producer *p, const redq_report *rep, void *u)
{
    (void)p;
    if (rep->status == 0)
        ++*(int *)u;
}
static int g_cnt_target;
static bool cond_cnt(void *a)
{
    return *(int *)a >= g_cnt_target;
}
static void on_pclosed(void *u)
{
    ++*(int *)u;
}

Test(admin, a_fresh_admin_finds_the_queues_producers_used_and_prunes_old)
{
    redq_producer *p;
    redq_producer_options o;
    int ok = 0, closed = 0;
    char big[1025];
    memset(big, 'q', 1024);
    big[1024] = '\0';
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.on_report = on_rep_count;
    o.on_report_user = &ok;
    cr_assert(redq_producer_new(&p, fx_base(), &o) == 0);
    cr_assert(redq_produce(p, "reg-a", "1", 1, NULL) == 0);
    cr_assert(redq_produce(p, "reg-b", "2", 1, NULL) == 0);
    cr_assert(redq_produce(p, "reg-b", "3", 1, NULL) == 0);
    cr_assert(redq_produce(p, big, "4", 1, NULL) == 0);
    g_cnt_target = 4;
    cr_assert(fx_run_until(cond_cnt, &ok, 5000));
    /* An old entry whose keys are empty ages out; an old one with data
     * stays. */
    fx_cmd_ok("ZADD redq:queues 1000 gone-q 1000 old-but-full");
    fx_cmd_ok("LPUSH old-but-full x");

    ares *r = CALL(redq_admin_queues(admin(), on_queues, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect_eq(r->nq, 4, "%zu queues", r->nq);
    cr_assert_not_null(find_q(r, "reg-a"));
    cr_assert_not_null(find_q(r, "reg-b"));
    cr_assert_not_null(find_q(r, big));
    cr_assert_not_null(find_q(r, "old-but-full"));
    cr_expect_null(find_q(r, "gone-q"));
    cr_expect_eq(find_q(r, "reg-b")->ready, 2);
    cr_expect(find_q(r, "reg-a")->last_seen_ms >
              (long long)time(NULL) * 1000 - 60000);
    /* Sorted by name. */
    for (size_t i = 1; i < r->nq; i++)
        cr_expect(strcmp(r->qname[i - 1], r->qname[i]) < 0);
    /* The ZREM went out before the callback; the next call is behind it. */
    r = CALL(redq_admin_queues(admin(), on_queues, &g_res));
    cr_expect_eq(r->nq, 4);
    cr_expect_eq(fx_cmd("ZSCORE redq:queues gone-q")->type, REDIS_REPLY_NIL,
                 "a stale, empty entry was not removed");
    cr_expect_eq(fx_cmd("ZSCORE redq:queues old-but-full")->type,
                 REDIS_REPLY_STRING);
    cr_assert(redq_producer_close(p, on_pclosed, &closed) == 0);
    g_cnt_target = 1;
    cr_assert(fx_run_until(cond_cnt, &closed, 5000));
    admin_close();
}

/* ---- lifecycle ------------------------------------------------------------- */

Test(admin, close_fails_calls_not_answered_then_calls_close_last)
{
    redq_admin_options o;
    redq_admin *a;
    int want;
    redq_admin_options_init(&o);
    o.url = "redis://127.0.0.1:1"; /* nothing listens: calls wait */
    o.connect_timeout_ms = 200;
    cr_assert(redq_admin_new(&a, fx_base(), &o) == 0);
    res_reset(&g_res);
    cr_assert(redq_admin_queues(a, on_queues, &g_res) == 0);
    cr_assert(redq_admin_close(a, on_admin_closed, NULL) == 0);
    cr_expect_eq(redq_admin_close(a, on_admin_closed, NULL), REDQ_ECLOSED);
    want = closed_n + 1;
    cr_assert(fx_run_until(cond_closed_n, &want, 5000));
    cr_expect_eq(g_res.done, 1);
    cr_expect_eq(g_res.status, REDQ_ECLOSED);

    /* Without a server a call ends, timed out, after connect + command. */
    o.command_timeout_ms = 300;
    cr_assert(redq_admin_new(&a, fx_base(), &o) == 0);
    res_reset(&g_res);
    cr_assert(redq_admin_purge(a, "x", on_done, &g_res) == 0);
    cr_assert(fx_run_until(cond_done, &g_res, 5000));
    cr_expect_eq(g_res.status, REDQ_ETIMEDOUT);
    want = closed_n + 1;
    cr_assert(redq_admin_close(a, on_admin_closed, NULL) == 0);
    cr_assert(fx_run_until(cond_closed_n, &want, 5000));
}

/* ---- with real consumers -------------------------------------------------- */

typedef struct ctrack {
    redq_consumer *c;
    size_t got, per_q[4];
    int hold; /* 1: never ack (until after the close: they outlive it) */
    int stopped, closed;
    redq_message *held[256];
    size_t nheld;
} ctrack;

static void on_cmsg(redq_consumer *c, redq_message *m, void *user)
{
    ctrack *t = user;
    (void)c;
    t->got++;
    if (strcmp(redq_msg_queue(m), "other") == 0)
        t->per_q[1]++;
    else
        t->per_q[0]++;
    if (!t->hold)
        redq_ack(m);
    else if (t->nheld < sizeof t->held / sizeof t->held[0])
        t->held[t->nheld++] = m;
    else
        cr_assert_fail("more held messages than the test can track");
}

static void on_cclosed(void *u)
{
    ((ctrack *)u)->closed = 1;
}

static bool cond_cclosed(void *a)
{
    return ((ctrack *)a)->closed;
}

static size_t g_want;
static bool cond_got(void *a)
{
    return ((ctrack *)a)->got >= g_want;
}
static bool cond_q0(void *a)
{
    return ((ctrack *)a)->per_q[0] >= g_want;
}
static bool cond_q1(void *a)
{
    return ((ctrack *)a)->per_q[1] >= g_want;
}

static void consumer_start(ctrack *t, int mode, const char *const *qs,
                           size_t nq, size_t pool)
{
    redq_consumer_options o;
    redq_consumer_options_init(&o);
    o.url = fx_url();
    o.guarantee = mode;
    o.on_message = on_cmsg;
    o.on_message_user = t;
    o.pool_size = pool;
    o.promote_interval_ms = 50;
    o.pop_timeout_ms = 3000; /* long: a pop left blocked would be seen */
    o.consumer_ttl_ms = 3000;
    o.reconnect_max_ms = 100;
    cr_assert(redq_consumer_new(&t->c, fx_base(), &o, qs, nq) == 0);
}

static void consumer_close(ctrack *t)
{
    cr_assert(redq_consumer_close(t->c, on_cclosed, t) == 0);
    cr_assert(fx_run_until(cond_cclosed, t, 5000));
    /* Held messages outlive the consumer: finishing them now only releases
     * them (redq.h, "Lifetimes"). */
    for (size_t i = 0; i < t->nheld; i++)
        cr_expect_eq(redq_nack(t->held[i], NULL), REDQ_ECLOSED);
    t->nheld = 0;
}

static void pause_resume_with_running_consumer(int mode)
{
    static const char *const qs[] = {"pq", "other"};
    ctrack t = {0};
    ares *r;
    int i;

    consumer_start(&t, mode, qs, 2, 3);
    fx_cmd_ok("LPUSH pq a1 a2 a3 a4 a5");
    g_want = 5;
    cr_assert(fx_run_until(cond_got, &t, 5000), "got %zu", t.got);

    r = CALL(redq_admin_pause(admin(), "pq", 1, on_done, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect_eq(r->n, 1);
    cr_expect_str_eq(fx_cmd_ok("HGET %s paused", K("pq", "meta"))->str, "1");
    /* The consumer learns it within a promote tick (50 ms): give it a few,
     * then push; nothing of pq may be taken, while "other" still is. */
    fx_run_for(300);
    for (i = 0; i < 10; i++)
        fx_cmd_ok("LPUSH pq b%d", i);
    fx_cmd_ok("LPUSH other o1 o2 o3");
    g_want = 3;
    cr_assert(fx_run_until(cond_q1, &t, 5000), "other: %zu", t.per_q[1]);
    fx_run_for(500);
    cr_expect_eq(t.per_q[0], 5, "took %zu from a paused queue",
                 t.per_q[0] - 5);
    cr_expect_eq(fx_llen("pq"), 10);
    r = snap("pq");
    cr_expect_eq(r->q[0].paused, 1);
    cr_expect_eq(r->q[0].ready, 10);

    /* Resume: all of it is taken again, promptly. */
    r = CALL(redq_admin_pause(admin(), "pq", 0, on_done, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    g_want = 15;
    cr_assert(fx_run_until(cond_q0, &t, 2000), "after resume: %zu",
              t.per_q[0]);
    cr_expect_eq(fx_llen("pq"), 0);
    r = snap("pq");
    cr_expect_eq(r->q[0].paused, 0);
    consumer_close(&t);
    admin_close();
}

Test(admin, pause_stops_a_running_at_least_once_consumer_and_resume_restarts)
{
    pause_resume_with_running_consumer(REDQ_AT_LEAST_ONCE);
}

Test(admin, pause_stops_a_running_at_most_once_consumer_and_resume_restarts)
{
    pause_resume_with_running_consumer(REDQ_AT_MOST_ONCE);
}

Test(admin, snapshot_of_real_consumers_holding_messages_and_registry)
{
    static const char *const qs[] = {"realq"};
    ctrack t = {0};
    ares *r;
    const redq_queue_info *qi;
    int i;
    t.hold = 1;
    for (i = 0; i < 20; i++)
        fx_cmd_ok("LPUSH realq m%d", i);
    {
        redq_consumer_options o;
        redq_consumer_options_init(&o);
        o.url = fx_url();
        o.on_message = on_cmsg;
        o.on_message_user = &t;
        o.pool_size = 2;
        o.max_unacked = 7; /* holds 7, leaves 13 */
        o.promote_interval_ms = 50;
        cr_assert(redq_consumer_new(&t.c, fx_base(), &o, qs, 1) == 0);
    }
    g_want = 7;
    cr_assert(fx_run_until(cond_got, &t, 5000));
    fx_run_for(200);
    /* The consumer registered the queue (nobody produced through redq). */
    r = CALL(redq_admin_queues(admin(), on_queues, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    qi = find_q(r, "realq");
    cr_assert_not_null(qi, "the consumer did not register its queue");
    cr_expect_eq(qi->ready, 13);
    cr_expect_eq(qi->processing, 7);
    cr_expect_eq(qi->consumers, 2);
    cr_expect_eq(qi->registered, 2);
    cr_expect_eq(qi->paused, 0);
    consumer_close(&t); /* unacked stay in the processing lists */
    admin_close();
}

Test(admin, recover_returns_a_dead_holders_messages_now_and_leaves_live_ones)
{
    const char *q = "recq";
    ares *r;
    redisReply *rep;
    fx_cmd_ok("SADD %s dead0.0 live0.0", K(q, "consumers"));
    fx_cmd_ok("LPUSH %s r1 r2 r3", K(q, "proc:dead0.0"));
    fx_cmd_ok("LPUSH %s %s", K(q, "fproc:dead0.0"), "RQ1 id=f1 a=1\nF");
    fx_cmd_ok("LPUSH %s l1 l2", K(q, "proc:live0.0"));
    fx_cmd_ok("SET %s 1 PX 60000", K(q, "hb:live0.0"));
    /* A consumer holds the reaper lock: the admin is not held back. */
    fx_cmd_ok("SET %s someone PX 60000", K(q, "reaper"));
    r = CALL(redq_admin_recover(admin(), q, on_done, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect_eq(r->n, 4);
    cr_expect_eq(fx_llen(K(q, "due")), 4);
    cr_expect_eq(fx_llen(K(q, "proc:dead0.0")), 0);
    cr_expect_eq(fx_llen(K(q, "proc:live0.0")), 2);
    cr_expect_eq(fx_cmd_int("SISMEMBER %s dead0.0", K(q, "consumers")), 0);
    cr_expect_eq(fx_cmd_int("SISMEMBER %s live0.0", K(q, "consumers")), 1);
    rep = fx_cmd_ok("LRANGE %s 0 -1", K(q, "due"));
    cr_expect(strstr(rep->element[0]->str, "id=f1 a=2") != NULL, "%s",
              rep->element[0]->str);
    r = CALL(redq_admin_recover(admin(), q, on_done, &g_res));
    cr_expect_eq(r->n, 0);
    /* REAP counts what it moved back in the queue's counters. */
    r = snap(q);
    cr_expect_eq(r->q[0].retried, 4);
    cr_expect_eq(r->q[0].dead_lettered, 0);
    admin_close();
}

/* ---- counters of messages moved ------------------------------------------ */

typedef struct cnt_track {
    size_t handled, acked, nacked, reported;
} cnt_track;

static void on_cnt_msg(redq_consumer *c, redq_message *m, void *user)
{
    cnt_track *t = user;
    (void)c;
    t->handled++;
    if (redq_msg_len(m) >= 3 && memcmp(redq_msg_data(m), "bad", 3) == 0) {
        redq_nack(m, "bad");
        t->nacked++;
    } else {
        redq_ack(m);
        t->acked++;
    }
}

static void on_cnt_report(redq_producer *p, const redq_report *rep, void *u)
{
    (void)p;
    if (rep->status == 0)
        ((cnt_track *)u)->reported++;
}

static size_t g_cnt_want;
static bool cond_reported(void *a)
{
    return ((cnt_track *)a)->reported >= g_cnt_want;
}
static bool cond_handled(void *a)
{
    cnt_track *t = a;
    return t->acked + t->nacked >= g_cnt_want;
}

/* Produce n messages to q (every 10th "bad..."), and `delayed` delayed
 * ones, in several batches; wait for their reports. */
static void cnt_produce(const char *q, int n, int delayed)
{
    cnt_track t = {0};
    redq_producer *p;
    redq_producer_options o;
    int i, closed = 0;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.on_report = on_cnt_report;
    o.on_report_user = &t;
    cr_assert(redq_producer_new(&p, fx_base(), &o) == 0);
    for (i = 0; i < n + delayed; i++) {
        char m[32];
        int len = snprintf(m, sizeof m, "%s-%d",
                           i % 10 == 3 && i < n ? "bad" : "ok",
                           i);
        if (i < n)
            cr_assert(redq_produce(p, q, m, (size_t)len, NULL) == 0);
        else
            cr_assert(redq_produce_delayed(p, q, m, (size_t)len, 30, NULL) ==
                      0);
        if (i % 7 == 6)
            fx_run_for(5); /* several batches */
    }
    g_cnt_want = (size_t)(n + delayed);
    cr_assert(fx_run_until(cond_reported, &t, 5000), "reported %zu",
              t.reported);
    cr_assert(redq_producer_close(p, on_pclosed, &closed) == 0);
    g_cnt_target = 1;
    cr_assert(fx_run_until(cond_cnt, &closed, 5000));
}

static void cnt_consume(const char *q, int mode, size_t want, cnt_track *t)
{
    redq_consumer *c;
    redq_consumer_options o;
    const char *qs[1] = {q};
    int closed = 0;
    redq_consumer_options_init(&o);
    o.url = fx_url();
    o.guarantee = mode;
    o.on_message = on_cnt_msg;
    o.on_message_user = t;
    o.pool_size = 2;
    o.max_attempts = 2;
    o.retry_base_ms = 10;
    o.retry_max_ms = 20;
    o.promote_interval_ms = 20;
    o.pop_timeout_ms = 200;
    cr_assert(redq_consumer_new(&c, fx_base(), &o, qs, 1) == 0);
    g_cnt_want = want;
    cr_assert(fx_run_until(cond_handled, t, 10000), "handled %zu of %zu",
              t->acked + t->nacked, want);
    cr_assert(redq_consumer_close(c, on_pclosed, &closed) == 0);
    g_cnt_target = 1;
    cr_assert(fx_run_until(cond_cnt, &closed, 5000));
}

/*
 * Every event of a message's life is counted once in the queue's meta
 * hash, whoever moved it: pushed (plain and delayed), taken (TAKE, BLMOVE
 * and at-most-once pops), acked (ACK and ACKFAST), retried and
 * dead-lettered (SETTLE); the snapshot and the metrics show them.
 */
Test(admin, counters_of_messages_moved_count_every_event_once)
{
    cnt_track t = {0};
    ares *r;
    char line[256];

    /* 40 plain (4 "bad") + 5 delayed ("ok"): 45 pushed. max_attempts 2:
     * each bad one is nacked twice, retried once and dead-lettered once,
     * so 49 deliveries, 41 acks. */
    cnt_produce("cntq", 40, 5);
    r = snap("cntq");
    cr_expect_eq(r->q[0].pushed, 45);
    cr_expect_eq(r->q[0].taken, 0);
    cnt_consume("cntq", REDQ_AT_LEAST_ONCE, 49, &t);
    cr_expect_eq(t.acked, 41);
    r = snap("cntq");
    cr_expect_eq(r->q[0].pushed, 45);
    cr_expect_eq(r->q[0].taken, 49);
    cr_expect_eq(r->q[0].acked, 41);
    cr_expect_eq(r->q[0].retried, 4);
    cr_expect_eq(r->q[0].dead_lettered, 4);
    cr_expect_eq(r->q[0].dead, 4);

    /* A consumer blocked in BLMOVE on an empty queue: those pops count. */
    {
        cnt_track t2 = {0};
        redq_consumer *c;
        redq_consumer_options o;
        const char *qs[1] = {"cntb"};
        int closed = 0, i;
        redq_consumer_options_init(&o);
        o.url = fx_url();
        o.on_message = on_cnt_msg;
        o.on_message_user = &t2;
        o.pool_size = 1;
        o.pop_timeout_ms = 5000;
        cr_assert(redq_consumer_new(&c, fx_base(), &o, qs, 1) == 0);
        for (i = 0; i < 3; i++) {
            long long b0 = fx_commandstat_calls("blmove");
            /* Wait until it blocks (its TAKE found nothing), then push. */
            int waited = 0;
            while (fx_commandstat_calls("blmove") == b0 && waited++ < 1000)
                fx_run_for(10);
            fx_cmd_ok("LPUSH cntb m%d", i);
            g_cnt_want = (size_t)i + 1;
            cr_assert(fx_run_until(cond_handled, &t2, 5000));
        }
        cr_assert(redq_consumer_close(c, on_pclosed, &closed) == 0);
        g_cnt_target = 1;
        cr_assert(fx_run_until(cond_cnt, &closed, 5000));
        r = snap("cntb");
        cr_expect_eq(r->q[0].taken, 3);
        cr_expect_eq(r->q[0].acked, 3);
        cr_expect_eq(r->q[0].pushed, 0, "LPUSH by hand is not redq's");
    }

    /* At-most-once: pops are counted per reply; acks are not Redis's. */
    {
        cnt_track t3 = {0};
        cnt_produce("cntm", 20, 0);
        cnt_consume("cntm", REDQ_AT_MOST_ONCE, 20 + 2, &t3);
        r = snap("cntm");
        cr_expect_eq(r->q[0].pushed, 20);
        cr_expect_eq(r->q[0].taken, 22, "taken %llu",
                     (unsigned long long)r->q[0].taken);
        cr_expect_eq(r->q[0].acked, 0);
        cr_expect_eq(r->q[0].retried, 2);
        cr_expect_eq(r->q[0].dead_lettered, 2);
    }

    r = CALL(redq_admin_metrics(admin(), on_text, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect(strstr(r->text, "# TYPE redq_queue_messages_total counter\n"));
    snprintf(line, sizeof line,
             "\nredq_queue_messages_total{queue=\"cntq\",event=\"%s\"} %d\n",
             "acked", 41);
    cr_expect(strstr(r->text, line) != NULL, "no %s in\n%s", line, r->text);
    snprintf(line, sizeof line,
             "\nredq_queue_messages_total{queue=\"cntq\",event=\"%s\"} %d\n",
             "dead_lettered", 4);
    cr_expect(strstr(r->text, line) != NULL, "no %s", line);
    snprintf(line, sizeof line,
             "\nredq_queue_messages_total{queue=\"cntm\",event=\"%s\"} %d\n",
             "taken", 22);
    cr_expect(strstr(r->text, line) != NULL, "no %s", line);

    /* A meta key of another type: the scripts leave it and still move. */
    fx_cmd_ok("SET %s notahash", K("cntq", "meta"));
    fx_cmd_ok("LPUSH cntq late");
    {
        cnt_track t4 = {0};
        cnt_consume("cntq", REDQ_AT_LEAST_ONCE, 1, &t4);
        cr_expect_eq(t4.acked, 1);
    }
    cr_expect_eq(fx_llen("cntq"), 0);
    cr_expect_eq(fx_llen(K("cntq", "proc:x")), 0);
    admin_close();
}

/* redq_admin_msg.framed and .queue: a frame's fields, a raw value's
 * defaults, and the "q=" field percent-decoded (a name with a space and a
 * percent sign) only for dead letters. */
Test(admin, messages_say_whether_framed_and_which_queue_a_dead_letter_left)
{
    const char *q = "fq";
    ares *r;
    fx_cmd_ok("LPUSH %s %s", K(q, "dead"), "raw dead value");
    fx_cmd_ok("LPUSH %s %s", K(q, "dead"),
              "RQ1 id=x1 a=3 dr=why dts=5 q=my%20q%25\nbody");
    fx_cmd_ok("LPUSH %s %s", K(q, "dead"), "RQ1 id=x2 a=3 dr=why dts=6\nb2");
    r = CALL(redq_admin_dead(admin(), q, 0, 10, on_msgs, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert_eq(r->nm, 3);
    cr_expect_eq(r->m[0].framed, 1);         /* x2: no q= field */
    cr_expect(!r->m[0].has_queue);
    cr_expect_eq(r->m[1].framed, 1);
    cr_expect(r->m[1].has_queue);
    cr_expect_str_eq(r->m[1].queue, "my q%");
    cr_expect_str_eq(r->m[1].reason, "why");
    cr_expect_eq(r->m[2].framed, 0);         /* raw: as it is */
    cr_expect(!r->m[2].has_queue);
    cr_expect(r->m[2].len == 14 &&
              memcmp(r->m[2].data, "raw dead value", 14) == 0);

    fx_cmd_ok("LPUSH %s plain", q);
    fx_cmd_ok("LPUSH %s %s", K(q, "due"), "RQ1 id=d1 a=1 q=zz\nD");
    r = CALL(redq_admin_peek(admin(), q, 10, on_msgs, &g_res));
    cr_assert_eq(r->nm, 2);
    cr_expect_eq(r->m[0].framed, 1);         /* due first */
    cr_expect(!r->m[0].has_queue, "queue is for dead letters only");
    cr_expect_eq(r->m[1].framed, 0);
    admin_close();
}

/* Orphaned processing lists: found by SCAN whatever the keyspace holds
 * around them, only when unregistered and non-empty, never a key that
 * merely ends like one, with the queue's glob characters taken literally;
 * then recovered (a holder with a heartbeat left alone). */
Test(admin, orphans_are_found_by_scan_and_recovered_on_demand)
{
    const char *q = "orph*[q]?";
    const char *other = "orphXqX";  /* what an unescaped pattern matches */
    ares *r;
    int i;

    for (i = 0; i < 3000; i++) /* several SCAN pages */
        fx_cmd_ok("SET filler:%d x", i);
    fx_cmd_ok("SADD %s aa.0", K(q, "consumers"));
    fx_cmd_ok("LPUSH %s r1 r2", K(q, "proc:aa.0"));       /* registered */
    fx_cmd_ok("SET %s 1 PX 60000", K(q, "hb:aa.0"));      /* and alive */
    fx_cmd_ok("LPUSH %s o1 o2 o3", K(q, "proc:bb.0"));    /* orphan */
    fx_cmd_ok("LPUSH %s %s", K(q, "fproc:bb.0"), "RQ1 id=f1 a=1\nF");
    fx_cmd_ok("LPUSH %s l1", K(q, "proc:cc.1"));          /* orphan, alive */
    fx_cmd_ok("SET %s 1 PX 60000", K(q, "hb:cc.1"));
    fx_cmd_ok("SET %s notalist", K(q, "proc:dd.0"));      /* not redq's */
    fx_cmd_ok("LPUSH %s x", K(q, "proc:dead"));           /* no holder id */
    fx_cmd_ok("LPUSH %s z", K(other, "proc:ee.0"));       /* another queue */

    r = CALL(redq_admin_orphans(admin(), q, on_orphans, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_assert_eq(r->no, 3, "found %zu", r->no);
    /* Sorted by key: "{q}/fproc:bb.0" < "{q}/proc:bb.0" < "{q}/proc:cc.1". */
    cr_expect_str_eq(r->okey[0], K(q, "fproc:bb.0"));
    cr_expect_str_eq(r->oholder[0], "bb.0");
    cr_expect_eq(r->omsgs[0], 1);
    cr_expect_str_eq(r->okey[1], K(q, "proc:bb.0"));
    cr_expect_eq(r->omsgs[1], 3);
    cr_expect_str_eq(r->okey[2], K(q, "proc:cc.1"));

    /* recover() starts from the set: orphans are not its business. */
    r = CALL(redq_admin_recover(admin(), q, on_done, &g_res));
    cr_expect_eq(fx_llen(K(q, "proc:bb.0")), 3);

    r = CALL(redq_admin_recover_orphans(admin(), q, on_done, &g_res));
    cr_assert_eq(r->status, 0, "%s", r->err);
    cr_expect_eq(r->n, 4);
    cr_expect_eq(fx_llen(K(q, "proc:bb.0")), 0);
    cr_expect_eq(fx_llen(K(q, "fproc:bb.0")), 0);
    cr_expect_eq(fx_llen(K(q, "due")), 4);
    cr_expect_eq(fx_llen(K(q, "proc:cc.1")), 1);   /* it beats: alive */
    cr_expect_eq(fx_llen(K(q, "proc:aa.0")), 2);
    cr_expect_eq(fx_llen(K(other, "proc:ee.0")), 1);

    r = CALL(redq_admin_orphans(admin(), q, on_orphans, &g_res));
    cr_assert_eq(r->no, 1);
    cr_expect_str_eq(r->okey[0], K(q, "proc:cc.1"));

    /* Nothing of the kind: an empty answer. */
    r = CALL(redq_admin_orphans(admin(), "no-such-queue", on_orphans, &g_res));
    cr_expect_eq(r->status, 0);
    cr_expect_eq(r->no, 0);
    cr_expect_eq(redq_admin_orphans(admin(), "", on_orphans, NULL),
                 REDQ_EINVAL);
    cr_expect_eq(redq_admin_orphans(admin(), q, NULL, NULL), REDQ_EINVAL);
    admin_close();
}

/* ---- statistics as JSON ------------------------------------------------------ */

#include <jansson.h>

typedef struct strack {
    redq_producer *p;
    redq_consumer *c;
    unsigned calls, bad;
    char why[512];
    json_int_t last_stored, last_delivered, last_acked, last_dead, last_rtt;
    int done;
} strack;

static json_int_t jint(json_t *o, const char *k, strack *t)
{
    json_t *v = json_object_get(o, k);
    if (!json_is_integer(v)) {
        t->bad++;
        snprintf(t->why, sizeof t->why, "field %s missing or not an integer",
                 k);
        return -1;
    }
    return json_integer_value(v);
}

#define SAME(obj, key, val)                                                    \
    do {                                                                       \
        json_int_t v_ = jint((obj), (key), t);                                 \
        if (v_ != (json_int_t)(val)) {                                         \
            t->bad++;                                                          \
            snprintf(t->why, sizeof t->why, "%s: json %lld, stats %lld",       \
                     (key), (long long)v_, (long long)(val));                  \
        }                                                                      \
    } while (0)

static void on_stats_json(const char *json, size_t len, void *user)
{
    strack *t = user;
    json_error_t err;
    json_t *o = json_loadb(json, len, 0, &err);
    t->calls++;
    if (o == NULL || json[len] != '\0' || strlen(json) != len) {
        t->bad++;
        snprintf(t->why, sizeof t->why, "not JSON: %s (%.200s)", err.text,
                 json);
        json_decref(o);
        return;
    }
    if (t->p != NULL) {
        redq_producer_stats st;
        redq_producer_get_stats(t->p, &st);
        if (strcmp(json_string_value(json_object_get(o, "type")), "producer"))
            t->bad++;
        SAME(o, "produced", st.produced);
        SAME(o, "stored", st.stored);
        if (json_object_get(o, "delivered") != NULL)
            t->bad++; /* 0.9: a producer's "delivered" is "stored" */
        SAME(o, "failed", st.failed);
        SAME(o, "pending", st.pending_msgs);
        SAME(o, "pending_bytes", st.pending_bytes);
        SAME(o, "inflight_batches", st.inflight_batches);
        SAME(o, "batches_sent", st.batches_sent);
        SAME(o, "reconnects", st.disconnects);
        SAME(o, "connected", st.connected);
        t->last_stored = jint(o, "stored", t);
    } else {
        redq_consumer_stats st;
        redq_consumer_get_stats(t->c, &st);
        if (strcmp(json_string_value(json_object_get(o, "type")), "consumer"))
            t->bad++;
        SAME(o, "pops", st.pops);
        SAME(o, "empty_pops", st.empty_pops);
        SAME(o, "delivered", st.delivered);
        SAME(o, "acked", st.acked);
        SAME(o, "nacked", st.nacked);
        SAME(o, "unacked", st.unacked);
        SAME(o, "retried", st.retried);
        SAME(o, "dead_lettered", st.dead_lettered);
        SAME(o, "recovered", st.recovered);
        SAME(o, "returned", st.returned);
        SAME(o, "errors", st.errors);
        t->last_acked = jint(o, "acked", t);
        t->last_dead = jint(o, "dead_lettered", t);
        t->last_delivered = jint(o, "delivered", t);
    }
    if (jint(o, "ts_ms", t) < (json_int_t)time(NULL) * 1000 - 60000)
        t->bad++;
    t->last_rtt = jint(o, "rtt_us", t);
    json_decref(o);
}

static bool cond_stats_prod(void *a)
{
    strack *t = a;
    return t->last_stored >= 100 && t->last_rtt > 0;
}

static bool cond_stats_cons(void *a)
{
    strack *t = a;
    return t->last_acked >= 99 && t->last_dead >= 1 && t->last_rtt > 0;
}

static void on_smsg(redq_consumer *c, redq_message *m, void *user)
{
    (void)c;
    (void)user;
    if (redq_msg_len(m) >= 3 && memcmp(redq_msg_data(m), "bad", 3) == 0)
        redq_nack(m, "bad one");
    else
        redq_ack(m);
}

Test(admin, stats_json_on_an_interval_matches_the_stats_structs)
{
    strack tp = {0}, tc = {0};
    redq_producer_options o;
    redq_consumer_options co;
    int i, closed = 0;
    ctrack dummy = {0};
    static const char *const qs[] = {"statq"};

    redq_producer_options_init(&o);
    cr_expect_eq(o.version, 1);
    cr_expect_eq(o.stats_interval_ms, 0);
    cr_expect_null(o.on_stats);
    o.url = fx_url();
    o.on_stats = on_stats_json;
    o.stats_interval_ms = 40;
    o.on_stats_user = &tp;
    cr_assert(redq_producer_new(&tp.p, fx_base(), &o) == 0);
    for (i = 0; i < 99; i++)
        cr_assert(redq_produce(tp.p, "statq", "m", 1, NULL) == 0);
    cr_assert(redq_produce(tp.p, "statq", "bad", 3, NULL) == 0);
    cr_assert(fx_run_until(cond_stats_prod, &tp, 5000), "stored %lld",
              (long long)tp.last_stored);
    cr_expect_eq(tp.bad, 0, "%s", tp.why);
    cr_expect(tp.calls >= 2);

    redq_consumer_options_init(&co);
    cr_expect_eq(co.version, 1);
    cr_expect_eq(co.stats_interval_ms, 0);
    cr_expect_null(co.on_stats);
    co.url = fx_url();
    co.on_stats = on_stats_json;
    co.stats_interval_ms = 40;
    co.on_stats_user = &tc;
    co.on_message = on_smsg;
    co.on_message_user = &tc;
    co.max_attempts = 1;
    co.promote_interval_ms = 50;
    co.pool_size = 2;
    cr_assert(redq_consumer_new(&tc.c, fx_base(), &co, qs, 1) == 0);
    cr_assert(fx_run_until(cond_stats_cons, &tc, 5000), "acked %lld dead %lld",
              (long long)tc.last_acked, (long long)tc.last_dead);
    cr_expect_eq(tc.bad, 0, "%s", tc.why);

    /* Off by default: none without an interval. */
    cr_assert(redq_producer_close(tp.p, on_pclosed, &closed) == 0);
    g_cnt_target = 1;
    cr_assert(fx_run_until(cond_cnt, &closed, 5000));
    dummy.c = tc.c;
    consumer_close(&dummy);
    /* Bad values are refused. */
    {
        redq_producer *p2 = NULL;
        o.stats_interval_ms = -1;
        cr_expect_eq(redq_producer_new(&p2, fx_base(), &o), REDQ_EINVAL);
    }
}

/* ---- a least-privilege producer without ZADD ---------------------------------- */

typedef struct lptrack {
    int ok, warn_noperm, errors;
    char first[256];
} lptrack;

static void on_lp_report(redq_producer *p, const redq_report *rep, void *u)
{
    (void)p;
    if (rep->status == 0)
        ((lptrack *)u)->ok++;
}

static void on_lp_log(int level, int code, const char *msg, void *u)
{
    lptrack *t = u;
    if (code == REDQ_ENOPERM && level == REDQ_LOG_WARN) {
        if (t->warn_noperm++ == 0)
            snprintf(t->first, sizeof t->first, "%s", msg);
    } else if (level == REDQ_LOG_ERROR) {
        t->errors++;
    }
}

static bool cond_lp(void *a)
{
    return ((lptrack *)a)->ok >= 40;
}

Test(admin, a_producer_without_zadd_keeps_working_with_one_warning)
{
    lptrack t = {0};
    redq_producer_options o;
    redq_producer *p;
    char url[128];
    int i, closed = 0;
    fx_cmd_ok("ACL SETUSER lp on >pw-lp ~* -@all +lpush");
    snprintf(url, sizeof url, "redis://lp:pw-lp@127.0.0.1:%d", fx_port());
    redq_producer_options_init(&o);
    o.url = url;
    o.client_name = NULL;
    o.on_report = on_lp_report;
    o.log = on_lp_log;
    o.log_level = REDQ_LOG_DEBUG;
    o.log_user = &t;
    o.on_report_user = &t;
    cr_assert(redq_producer_new(&p, fx_base(), &o) == 0);
    /* Two queues, several batches each: every first use tries a ZADD. */
    for (i = 0; i < 40; i++) {
        cr_assert(redq_produce(p, i % 2 ? "lp-a" : "lp-b", "x", 1, NULL) == 0);
        if (i % 10 == 9)
            fx_run_for(20);
    }
    cr_assert(fx_run_until(cond_lp, &t, 5000), "%d delivered", t.ok);
    cr_expect_eq(t.warn_noperm, 1, "NOPERM warnings: %d", t.warn_noperm);
    cr_expect(strstr(t.first, "redq:queues") != NULL, "%s", t.first);
    cr_expect_eq(t.errors, 0);
    cr_expect_eq(fx_llen("lp-a") + fx_llen("lp-b"), 40);
    cr_expect_eq(fx_cmd_int("EXISTS redq:queues"), 0);
    cr_assert(redq_producer_close(p, on_pclosed, &closed) == 0);
    g_cnt_target = 1;
    cr_assert(fx_run_until(cond_cnt, &closed, 5000));
    fx_cmd_ok("ACL DELUSER lp");
}
