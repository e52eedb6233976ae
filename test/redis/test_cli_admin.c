/*
 * The redq tool's admin commands (queues, peek, pause, resume, recover,
 * dead delete, dead requeue --id, top) against a real redis-server: on a
 * layout built key by key (the registry "redq:queues", a queue's keys as
 * docs/DESIGN.md names them, frames as the library writes them) and on
 * one made by real producers and consumers (the tool's own push and pop).
 * Every --json output is parsed with jansson and checked field by field.
 */
#define _DEFAULT_SOURCE

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <poll.h>
#include <pty.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli_child.h"
#include "fixture.h"

#define RUN_MS 20000

static void teardown(void)
{
    cli_reap_all();
    fx_teardown();
}

TestSuite(cli_admin, .init = fx_setup, .fini = teardown, .timeout = 120);

static cli_child *run(const char *const *args)
{
    return cli_run_for(NULL, args, RUN_MS);
}

static long long now_ms(void)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    return (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
}

/* The whole of s as one JSON value (asserted). */
static json_t *parse(const char *s, size_t len)
{
    json_error_t e;
    json_t *j = json_loadb(s, len, 0, &e);
    cr_assert_not_null(j, "not JSON (%s at %d): %.*s", e.text, e.position,
                       (int)len, s);
    return j;
}

static long long jint(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    cr_assert(json_is_integer(v), "\"%s\" is not an integer", k);
    return (long long)json_integer_value(v);
}

static const char *jstr(json_t *o, const char *k)
{
    json_t *v = json_object_get(o, k);
    cr_assert(json_is_string(v), "\"%s\" is not a string", k);
    return json_string_value(v);
}

/* A frame as the library writes it, RPUSHed or LPUSHed to key. */
static void push_frame(const char *cmd, const char *key, const char *hdr,
                       const void *body, size_t len)
{
    char buf[512];
    size_t hl = strlen(hdr);
    cr_assert_lt(hl + 1 + len, sizeof buf);
    memcpy(buf, hdr, hl);
    buf[hl] = '\n';
    memcpy(buf + hl + 1, body, len);
    redisReply *r = redisCommand(fx_redis(), "%s %s %b", cmd, key, buf,
                                 hl + 1 + len);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER, "%s %s", cmd, key);
    freeReplyObject(r);
}

/* q1: 3 ready, 1 due (a frame), 2 delayed, 2 dead; q2 paused with a
 * ready message holding a tab; both in the registry; "gone" only there. */
static void build_layout(void)
{
    long long now = now_ms();
    fx_cmd_ok("ZADD redq:queues %lld q1 %lld q2", now, now - 5000);
    fx_cmd_ok("RPUSH q1 r1 r2 r3");
    push_frame("RPUSH", "{q1}/due", "RQ1 id=abc a=2 ts=1700000000000", "due1",
               4);
    fx_cmd_ok("ZADD {q1}/delayed 4102444800000 d1 4102444800000 d2");
    push_frame("LPUSH", "{q1}/dead",
               "RQ1 id=x1 a=5 ts=1700000000000 dr=boom dts=1700000001000 q=q1",
               "dead1", 5);
    push_frame("LPUSH", "{q1}/dead",
               "RQ1 id=x2 a=3 ts=1700000000000 dr=late dts=1700000002000 q=q1",
               "dead2", 5);
    fx_cmd_ok("HSET {q2}/meta paused 1");
    /* A frames queue whose one ready value is no frame (a plain client's):
     * its age cannot be known. */
    fx_cmd_ok("HSET {q2}/meta format frames");
    fx_cmd_ok("RPUSH q2 %s", "a\tb");
}

/* ---- queues ------------------------------------------------------------------ */

Test(cli_admin, queues_table_and_json_on_a_layout_built_by_hand)
{
    build_layout();
    cli_child *c = run(ARGS("queues", "--url", fx_url()));
    assert_code(c, 0);
    cr_assert_str_eq(c->out,
                     "QUEUE  READY  DUE  PROCESSING  DELAYED  DEAD  CONSUMERS  "
                     "REGISTERED  OLDEST  PAUSED  FORMAT  P\n"
                     "q1         3    1           0        2     2          0  "
                     "         0       -      no   plain  1\n"
                     "q2         1    0           0        0     0          0  "
                     "         0       -     yes  frames  1\n");
    cr_assert_eq(c->err_len, 0, "stderr: %s", c->err);

    c = run(ARGS("queues", "--json", "--url", fx_url()));
    assert_code(c, 0);
    json_t *j = parse(c->out, c->out_len);
    json_t *qs = json_object_get(j, "queues");
    cr_assert(json_is_array(qs) && json_array_size(qs) == 2);
    json_t *q1 = json_array_get(qs, 0), *q2 = json_array_get(qs, 1);
    cr_assert_str_eq(jstr(q1, "queue"), "q1");
    cr_assert_str_eq(jstr(q1, "format"), "plain");
    cr_assert_str_eq(jstr(q2, "format"), "frames");
    cr_assert_eq(jint(q1, "partitions"), 1);
    cr_assert_eq(jint(q1, "ready"), 3);
    cr_assert_eq(jint(q1, "due"), 1);
    cr_assert_eq(jint(q1, "processing"), 0);
    cr_assert_eq(jint(q1, "delayed"), 2);
    cr_assert_eq(jint(q1, "dead"), 2);
    cr_assert_eq(jint(q1, "consumers"), 0);
    cr_assert_eq(jint(q1, "registered"), 0);
    cr_assert(json_is_false(json_object_get(q1, "paused")));
    cr_assert_str_eq(jstr(q2, "queue"), "q2");
    cr_assert(json_is_true(json_object_get(q2, "paused")));
    /* The registry's score, as it was written. */
    cr_assert_lt(jint(q1, "last_seen_ms") - jint(q2, "last_seen_ms"), 5001);
    cr_assert_geq(jint(q1, "last_seen_ms") - jint(q2, "last_seen_ms"), 4999);
    json_decref(j);

    /* Nothing registered: a header, an empty list. */
    fx_cmd_ok("DEL redq:queues");
    c = run(ARGS("queues", "--url", fx_url()));
    assert_code(c, 0);
    cr_assert_eq(cli_count_lines(c), 1, "stdout: %s", c->out);
    c = run(ARGS("queues", "--json", "--url", fx_url()));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "{\"queues\":[]}\n");
}

Test(cli_admin, queues_lists_what_real_producers_and_consumers_used)
{
    /* The tool's push and pop are a real producer and consumer: they
     * record their queues in the registry. NEEDS admin-lib's registry
     * writes (not merged when this was written: fails until then). */
    cli_child *c = run(ARGS("push", "--url", fx_url(), "made", "m1", "m2",
                            "m3"));
    assert_code(c, 0);
    c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-t", "0.2",
                 "taken"));
    assert_code(c, 0);

    c = run(ARGS("queues", "--json", "--url", fx_url()));
    assert_code(c, 0);
    json_t *j = parse(c->out, c->out_len);
    json_t *qs = json_object_get(j, "queues");
    cr_assert(json_is_array(qs), "%s", c->out);
    int seen = 0;
    for (size_t i = 0; i < json_array_size(qs); i++) {
        json_t *q = json_array_get(qs, i);
        if (!strcmp(jstr(q, "queue"), "made")) {
            seen |= 1;
            cr_assert_eq(jint(q, "ready"), 3);
            cr_assert_geq(jint(q, "last_seen_ms"), now_ms() - 60000);
        } else if (!strcmp(jstr(q, "queue"), "taken")) {
            seen |= 2;
        }
    }
    cr_assert_eq(seen, 3, "the registry lacks a queue: %s", c->out);
    json_decref(j);
}

/* ---- peek ------------------------------------------------------------------------ */

Test(cli_admin, peek_shows_the_next_messages_without_taking_them)
{
    static const char bin[] = "b\xff\x00z";
    build_layout();
    redisReply *r = redisCommand(fx_redis(), "LPUSH q1 %b", bin,
                                 sizeof bin - 1);
    freeReplyObject(r);

    cli_child *c = run(ARGS("peek", "--url", fx_url(), "q1"));
    assert_code(c, 0);
    /* Due first (a frame: its attempts and time), then ready from the
     * tail, where pops take (RPUSH r1 r2 r3 put r3 there); the binary
     * payload, LPUSHed, last and escaped. */
    cr_assert_str_eq(c->out, "0\t2\t2023-11-14T22:13:20.000Z\tdue1\n"
                             "1\t0\t-\tr3\n"
                             "2\t0\t-\tr2\n"
                             "3\t0\t-\tr1\n"
                             "4\t0\t-\tb\\xff\\x00z\n");
    cr_assert_eq(fx_llen("q1"), 4, "peek took messages");
    cr_assert_eq(fx_llen("{q1}/due"), 1, "peek took messages");

    c = run(ARGS("peek", "--url", fx_url(), "-n", "2", "q2"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "0\t0\t-\ta\\tb\n");

    c = run(ARGS("peek", "--json", "--url", fx_url(), "-n", "5", "q1"));
    assert_code(c, 0);
    cr_assert_eq(cli_count_lines(c), 5, "stdout: %s", c->out);
    char *line = c->out;
    for (int i = 0; i < 5; i++) {
        char *nl = strchr(line, '\n');
        json_t *m = parse(line, (size_t)(nl - line));
        cr_assert_eq(jint(m, "index"), i);
        if (i == 0) {
            cr_assert_str_eq(jstr(m, "id"), "abc");
            cr_assert_eq(jint(m, "attempts"), 2);
            cr_assert_eq(jint(m, "ts"), 1700000000000LL);
            cr_assert_str_eq(jstr(m, "body"), "due1");
        } else if (i == 4) {
            cr_assert_str_eq(jstr(m, "body_b64"), "Yv8Aeg==");
            cr_assert_null(json_object_get(m, "body"));
        } else {
            char want[8];
            snprintf(want, sizeof want, "r%d", 4 - i);
            cr_assert_str_eq(jstr(m, "body"), want);
            cr_assert_null(json_object_get(m, "id"));
        }
        json_decref(m);
        line = nl + 1;
    }

    /* An empty queue: nothing, status 0. */
    c = run(ARGS("peek", "--url", fx_url(), "none"));
    assert_code(c, 0);
    cr_assert_eq(c->out_len, 0);
}

/* ---- dead letters by id ---------------------------------------------------------- */

Test(cli_admin, dead_list_says_framed_from_the_library_not_a_guess)
{
    /* A frame with no optional field (no id, times or reason) is still a
     * frame: the library says so (redq_admin_msg.framed), where a guess
     * from the fields would call it a raw value. A raw value put there by
     * hand that looks like a payload is not one. The frame's q= names the
     * queue it died in. */
    push_frame("LPUSH", "{d}/dead", "RQ1 a=4", "bare", 4);
    push_frame("LPUSH", "{d}/dead", "RQ1 id=m1 a=1 dr=x dts=1700000000000 q=other",
               "moved", 5);
    fx_cmd_ok("LPUSH {d}/dead %s", "not a frame");
    cli_child *c = run(ARGS("dead", "list", "--json", "--url", fx_url(), "d"));
    assert_code(c, 0);
    cr_assert_eq(cli_count_lines(c), 3, "stdout: %s", c->out);
    char *line = c->out;
    json_t *m[3];
    for (int i = 0; i < 3; i++) {
        char *nl = strchr(line, '\n');
        m[i] = parse(line, (size_t)(nl - line));
        line = nl + 1;
    }
    cr_assert_str_eq(jstr(m[0], "error"), "not a redq frame");
    cr_assert_str_eq(jstr(m[0], "body"), "not a frame");
    cr_assert_str_eq(jstr(m[1], "queue"), "other");
    cr_assert_str_eq(jstr(m[1], "id"), "m1");
    cr_assert_null(json_object_get(m[2], "error"), "a bare frame is a frame");
    cr_assert_eq(jint(m[2], "attempts"), 4);
    cr_assert_str_eq(jstr(m[2], "queue"), "d");
    cr_assert_str_eq(jstr(m[2], "body"), "bare");
    for (int i = 0; i < 3; i++)
        json_decref(m[i]);
    /* The table: attempts shown for the bare frame, "-" for the raw one. */
    c = run(ARGS("dead", "list", "--url", fx_url(), "d"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "0\t-\t-\t-\tnot a frame\n") &&
              strstr(c->out, "2\t4\t-\t-\tbare\n"), "stdout: %s", c->out);
}


Test(cli_admin, dead_requeue_and_delete_by_id)
{
    build_layout();
    cli_child *c = run(ARGS("dead", "list", "--json", "--url", fx_url(), "q1"));
    assert_code(c, 0);
    cr_assert_eq(cli_count_lines(c), 2, "stdout: %s", c->out);
    json_t *m = parse(c->out, (size_t)(strchr(c->out, '\n') - c->out));
    cr_assert_str_eq(jstr(m, "id"), "x2"); /* the newest */
    cr_assert_str_eq(jstr(m, "dead_reason"), "late");
    cr_assert_eq(jint(m, "dead_ts"), 1700000002000LL);
    cr_assert_eq(jint(m, "attempts"), 3);
    cr_assert_str_eq(jstr(m, "body"), "dead2");
    json_decref(m);

    /* The older one goes back, the newer one stays. */
    c = run(ARGS("dead", "requeue", "--url", fx_url(), "q1", "--id", "x1"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "requeued 1\n");
    cr_assert_eq(fx_llen("{q1}/dead"), 1);
    cr_assert_eq(fx_llen("{q1}/due"), 2);
    c = run(ARGS("dead", "list", "--url", fx_url(), "q1"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "\tlate\tdead2\n") && cli_count_lines(c) == 1,
              "stdout: %s", c->out);

    /* An id nobody has: status 1, nothing moved. */
    c = run(ARGS("dead", "requeue", "--url", fx_url(), "q1", "--id", "nope"));
    assert_code(c, 1);
    cr_assert(strstr(c->err, "no dead letter with id nope"), "%s", c->err);
    cr_assert_eq(c->out_len, 0);
    c = run(ARGS("dead", "delete", "--url", fx_url(), "q1", "--id", "x1"));
    assert_code(c, 1);
    cr_assert_eq(fx_llen("{q1}/dead"), 1);

    c = run(ARGS("dead", "delete", "--url", fx_url(), "q1", "--id", "x2"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "deleted 1\n");
    cr_assert_eq(fx_llen("{q1}/dead"), 0);
    cr_assert_eq(fx_llen("{q1}/due"), 2, "delete touched due");

    /* The requeued one is taken first, as a first attempt again. */
    c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "2", "q1"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "due1\ndead1\n");
}

Test(cli_admin, dead_list_pages_through_the_admin_api)
{
    /* 250 dead letters: three pages of the tool's 100, in order, with
     * -n cutting inside a page. */
    for (int i = 0; i < 250; i++) {
        char hdr[128], body[16];
        snprintf(hdr, sizeof hdr, "RQ1 id=i%d a=1 dr=r dts=%d q=q", i,
                 1000 + i);
        snprintf(body, sizeof body, "b%d", i);
        push_frame("LPUSH", "{q}/dead", hdr, body, strlen(body));
    }
    cli_child *c = run(ARGS("dead", "list", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_eq(cli_count_lines(c), 250);
    char *line = c->out;
    for (int i = 0; i < 250; i++) {
        char want[64];
        /* newest first: index 0 is b249 */
        snprintf(want, sizeof want, "%d\t1\t", i);
        cr_assert(strncmp(line, want, strlen(want)) == 0, "line %d: %.40s", i,
                  line);
        snprintf(want, sizeof want, "\tr\tb%d\n", 249 - i);
        char *nl = strchr(line, '\n');
        cr_assert(strncmp(nl + 1 - strlen(want), want, strlen(want)) == 0,
                  "line %d: %.*s", i, (int)(nl - line), line);
        line = nl + 1;
    }
    c = run(ARGS("dead", "list", "--json", "-n", "150", "--url", fx_url(),
                 "q"));
    assert_code(c, 0);
    cr_assert_eq(cli_count_lines(c), 150);
    char *last = c->out + c->out_len - 1;
    while (last > c->out && last[-1] != '\n')
        last--;
    json_t *m = parse(last, (size_t)(c->out + c->out_len - 1 - last));
    cr_assert_eq(jint(m, "index"), 149);
    cr_assert_str_eq(jstr(m, "id"), "i100");
    json_decref(m);
}

/* ---- pause, resume, recover ------------------------------------------------------ */

static bool lines_at_least(cli_child *p, size_t n, int ms)
{
    return cli_wait_lines(p, n, ms);
}

Test(cli_admin, pause_holds_messages_from_a_running_pop_until_resume)
{
    /* NEEDS the consumer side of pause (admin-lib; not merged when this
     * was written: fails until then): a running consumer
     * stops taking from a paused queue within about promote_interval_ms
     * (1000 ms by default) and starts again on resume. */
    cli_child *p = cli_spawn(NULL, ARGS("pop", "--url", fx_url(), "q"));
    cli_wait_blocked(1);
    fx_cmd_ok("LPUSH q m0");
    cr_assert(lines_at_least(p, 1, RUN_MS), "printed: %s", p->out);

    cli_child *c = run(ARGS("pause", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "paused\tq\n");
    cr_assert_str_eq(fx_cmd_ok("HGET {q}/meta paused")->str, "1");

    /* The contract's bound for the consumer to notice; its pop may still
     * be parked until then. */
    uint64_t deadline = fx_now_us() + 3000000u;
    while (cli_blocked_clients() > 0 && cli_ms_left(deadline) > 0)
        cli_pump(p, 20, true);
    cli_pump(p, 1500, true);
    fx_cmd_ok("LPUSH q m1 m2");
    /* Paused: for twice the promote interval, nothing is taken. */
    deadline = fx_now_us() + 2000000u;
    while (cli_ms_left(deadline) > 0)
        cli_pump(p, cli_ms_left(deadline), true);
    cr_assert_eq(fx_llen("q"), 2, "a paused queue was taken from");
    cr_assert_str_eq(p->out, "m0\n");

    c = run(ARGS("resume", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "resumed\tq\n");
    cr_assert(lines_at_least(p, 3, 10000), "not resumed; printed: %s", p->out);
    cr_assert_str_eq(p->out, "m0\nm1\nm2\n");
    kill(p->pid, SIGTERM);
    cli_finish(p, 5000);
    assert_code(p, 128 + SIGTERM);

    /* queues shows the flag. */
    fx_cmd_ok("ZADD redq:queues %lld q", now_ms());
    c = run(ARGS("pause", "--url", fx_url(), "q", "other"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "paused\tq\npaused\tother\n");
    c = run(ARGS("queues", "--json", "--url", fx_url()));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "\"queue\":\"q\",") &&
                  strstr(c->out, "\"paused\":true"),
              "%s", c->out);
}

Test(cli_admin, recover_returns_what_a_dead_consumer_held)
{
    /* A registered holder without a heartbeat (dead) holding two. */
    fx_cmd_ok("SADD {q}/consumers 00000000deadbeef.1");
    fx_cmd_ok("RPUSH {q}/proc:00000000deadbeef.1 p1 p2");
    cli_child *c = run(ARGS("recover", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "recovered 2\n");
    cr_assert_eq(fx_llen("{q}/proc:00000000deadbeef.1"), 0);
    c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "2", "q"));
    assert_code(c, 0);
    cr_assert(!strcmp(c->out, "p1\np2\n") || !strcmp(c->out, "p2\np1\n"),
              "stdout: %s", c->out);

    /* Nothing to recover. */
    c = run(ARGS("recover", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "recovered 0\n");
}

/* ---- top -------------------------------------------------------------------------- */

/* The number in column `col` (0-based) of the row of `queue` in the
 * `block`-th table (0-based) of top's piped output; asserts. */
static double top_cell(const char *out, int block, const char *queue, int col)
{
    const char *p = out;
    for (int b = 0; b < block; b++) {
        p = strstr(p, "\n\n");
        cr_assert_not_null(p, "no block %d: %s", b + 1, out);
        p += 2;
    }
    cr_assert(strncmp(p, "redq top  ", 10) == 0, "block: %s", p);
    char pat[64];
    snprintf(pat, sizeof pat, "\n%s ", queue);
    const char *row = strstr(p, pat);
    cr_assert_not_null(row, "no row %s: %s", queue, p);
    row++;
    for (int k = 0; k < col; k++) {
        row += strcspn(row, " ");
        row += strspn(row, " ");
    }
    return strtod(row, NULL);
}

Test(cli_admin, top_piped_two_refreshes_with_known_push_and_take_rates)
{
    /* Refresh 1 sees 100 ready, LPUSHed by hand: no producer counted
     * them. Between refreshes the tool's own push produces 500 and its
     * pop takes 200, so refresh 2 sees 400 ready and, over one interval,
     * IN/s = 500/dt and OUT/s = 200/dt from the counters, while the depth
     * grew by only 300/dt: rates from depths alone would show IN/s 300
     * and OUT/s 0. The interval is long enough for both runs to end
     * before the second refresh, on a loaded machine too. */
    fx_cmd_ok("ZADD redq:queues %lld t", now_ms());
    cli_lpush_seq("t", "m", 0, 100, 0);
    cli_child *p = cli_spawn(NULL, ARGS("top", "--url", fx_url(), "--interval",
                                        "3000", "--count", "2"));
    cr_assert(cli_wait_lines(p, 3, RUN_MS), "no first block: %s", p->out);
    long long t0 = now_ms();
    char *in = cli_seq_text("n", 0, 500);
    cli_opts ro = {.in = in, .in_len = strlen(in)};
    cli_child *push = cli_run_for(&ro, ARGS("push", "--url", fx_url(), "t"),
                                  RUN_MS);
    free(in);
    assert_code(push, 0);
    /* The oldest first: the 100 by hand, then 100 of the pushed ones. */
    cli_child *pop = run(ARGS("pop", "--url", fx_url(), "-n", "200", "t"));
    assert_code(pop, 0);
    cr_assert_eq(cli_count_lines(pop), 200);
    cr_assert_lt(now_ms() - t0, 2500,
                 "push and pop took too long for one interval");
    cli_finish(p, RUN_MS);
    cr_assert(!p->timed_out);
    assert_code(p, 0);
    /* Two blocks: the line, the header, one row, an empty line. */
    cr_assert_eq(cli_count_lines(p), 8, "stdout: %s", p->out);
    cr_assert(strstr(p->out, "\033[") == NULL, "ANSI codes in a pipe");
    cr_assert_eq(top_cell(p->out, 0, "t", 1), 100);
    cr_assert(strstr(p->out, "     0     -      -        -       -       -  "),
              "first block has rates: %s", p->out);
    cr_assert_eq(top_cell(p->out, 1, "t", 1), 400);
    double in_s = top_cell(p->out, 1, "t", 4);
    double out_s = top_cell(p->out, 1, "t", 5);
    double ready = top_cell(p->out, 1, "t", 6);
    /* Over one interval (3 s; the tool's own clock, so bounded by timer
     * slack): 500/3 and 200/3 per second, give or take a loaded machine;
     * their ratio is exact but for the printed rounding. */
    cr_assert(in_s > 100 && in_s < 200, "IN/s %g: %s", in_s, p->out);
    cr_assert(out_s > 40 && out_s < 80, "OUT/s %g: %s", out_s, p->out);
    cr_assert(in_s / out_s > 2.45 && in_s / out_s < 2.55,
              "IN/s %g, OUT/s %g: %s", in_s, out_s, p->out);
    cr_assert(ready / out_s > 1.45 && ready / out_s < 1.55,
              "READY/s %g, OUT/s %g: %s", ready, out_s, p->out);
}

Test(cli_admin, top_json_counts_a_reliable_consumer_acked_rate)
{
    /* A reliable pop acks what it takes: out_rate and acked_rate agree,
     * and queues --json carries the counters they come from. */
    fx_cmd_ok("ZADD redq:queues %lld r", now_ms());
    cli_child *p = cli_spawn(NULL, ARGS("top", "--json", "--url", fx_url(),
                                        "--interval", "3000", "--count", "2",
                                        "r"));
    cr_assert(cli_wait_lines(p, 1, RUN_MS), "no first line: %s", p->out);
    char *in = cli_seq_text("a", 0, 300);
    cli_opts ro = {.in = in, .in_len = strlen(in)};
    cli_child *push = cli_run_for(&ro, ARGS("push", "--url", fx_url(), "r"),
                                  RUN_MS);
    free(in);
    assert_code(push, 0);
    cli_child *pop = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n",
                              "120", "r"));
    assert_code(pop, 0);
    cli_finish(p, RUN_MS);
    assert_code(p, 0);
    char *nl = strchr(p->out, '\n');
    cr_assert_not_null(nl);
    json_t *o = parse(nl + 1, strlen(nl + 1));
    json_t *q = json_array_get(json_object_get(o, "queues"), 0);
    cr_assert_not_null(q, "%s", p->out);
    cr_assert_eq(jint(q, "pushed"), 300);
    cr_assert_eq(jint(q, "taken"), 120);
    cr_assert_eq(jint(q, "acked"), 120);
    double in_r = json_number_value(json_object_get(q, "in_rate"));
    double out_r = json_number_value(json_object_get(q, "out_rate"));
    double ack_r = json_number_value(json_object_get(q, "acked_rate"));
    cr_assert(out_r > 0 && in_r / out_r > 2.49 && in_r / out_r < 2.51,
              "in %g out %g", in_r, out_r);
    cr_assert_float_eq(ack_r, out_r, 1e-9, "acked %g out %g", ack_r, out_r);
    json_decref(o);
}

Test(cli_admin, top_json_one_object_per_refresh_and_signals)
{
    fx_cmd_ok("RPUSH a x y");
    cli_child *c = run(ARGS("top", "--json", "-n", "2", "--interval", "100",
                            "--url", fx_url(), "a", "b"));
    assert_code(c, 0);
    cr_assert_eq(cli_count_lines(c), 2, "stdout: %s", c->out);
    char *line = c->out;
    for (int i = 0; i < 2; i++) {
        char *nl = strchr(line, '\n');
        json_t *o = parse(line, (size_t)(nl - line));
        cr_assert_eq(jint(o, "interval_ms"), 100);
        cr_assert_geq(jint(o, "ts"), now_ms() - 60000);
        json_t *qs = json_object_get(o, "queues");
        cr_assert_eq(json_array_size(qs), 2);
        json_t *a = json_array_get(qs, 0);
        cr_assert_str_eq(jstr(a, "queue"), "a");
        cr_assert_eq(jint(a, "ready"), 2);
        cr_assert_str_eq(jstr(json_array_get(qs, 1), "queue"), "b");
        json_t *rate = json_object_get(a, "in_rate");
        if (i == 0)
            cr_assert(json_is_null(rate));
        else
            cr_assert(json_is_number(rate) && json_number_value(rate) == 0);
        json_decref(o);
        line = nl + 1;
    }

    /* Without --count: until SIGINT, exit 130. */
    cli_child *p = cli_spawn(NULL, ARGS("top", "--url", fx_url(), "--interval",
                                        "50", "a"));
    cr_assert(cli_wait_lines(p, 6, RUN_MS), "no refreshes: %s", p->out);
    kill(p->pid, SIGINT);
    cli_finish(p, 5000);
    cr_assert(!p->timed_out, "top did not stop on SIGINT");
    assert_code(p, 128 + SIGINT);
}

Test(cli_admin, top_on_a_terminal_redraws_in_place)
{
    /* stdout a pseudo-terminal: each refresh starts with cursor home and
     * clear screen, and no empty line separates them. */
    int master, slave, status;
    char out[16384];
    size_t len = 0;
    pid_t pid;

    /* Seen now: an old entry whose keys are empty would be pruned. */
    fx_cmd_ok("ZADD redq:queues %lld tq", now_ms());
    cr_assert_eq(openpty(&master, &slave, NULL, NULL, NULL), 0);
    pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(slave, 1);
        dup2(null, 2);
        close(master);
        execl(cli_path(), cli_path(), "top", "-n", "3", "--interval", "50",
              "--url", fx_url(), (char *)NULL);
        _exit(127);
    }
    close(slave);
    uint64_t deadline = fx_now_us() + (uint64_t)RUN_MS * 1000u;
    for (;;) {
        struct pollfd pf = {master, POLLIN, 0};
        cr_assert(cli_ms_left(deadline) > 0, "top did not end: %.*s",
                  (int)len, out);
        if (poll(&pf, 1, cli_ms_left(deadline)) <= 0)
            continue;
        ssize_t n = read(master, out + len, sizeof out - 1 - len);
        if (n <= 0) /* EIO once the child has closed the terminal */
            break;
        len += (size_t)n;
        cr_assert_lt(len, sizeof out - 1);
    }
    out[len] = '\0';
    close(master);
    cr_assert_eq(waitpid(pid, &status, 0), pid);
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0, "status %d",
              status);
    cr_assert(strncmp(out, "\033[H\033[2Jredq top  ", 17) == 0, "output: %s",
              out);
    int redraws = 0;
    for (const char *p = out; (p = strstr(p, "\033[H\033[2J")); p++)
        redraws++;
    cr_assert_eq(redraws, 3, "output: %s", out);
    cr_assert(strstr(out, "\r\n\r\n") == NULL && strstr(out, "\n\n") == NULL,
              "an empty line on a terminal: %s", out);
    cr_assert(strstr(out, "\ntq "), "no row: %s", out);
}

/* ---- failures and usage ------------------------------------------------------------- */

Test(cli_admin, new_commands_exit_codes)
{
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", fx_free_port());
    const char *const *const unreachable[] = {
        ARGS("queues", "--connect-timeout", "0.3", "--url", url),
        ARGS("peek", "--connect-timeout", "0.3", "--url", url, "q"),
        ARGS("pause", "--connect-timeout", "0.3", "--url", url, "q"),
        ARGS("top", "--connect-timeout", "0.3", "--url", url),
    };
    for (size_t i = 0; i < 4; i++) {
        cli_child *c = run(unreachable[i]);
        assert_code(c, 4);
        cr_assert(strstr(c->err, "cannot connect"), "stderr: %s", c->err);
        cr_assert_eq(c->out_len, 0);
    }
    cli_child *c = run(ARGS("queues", "--url", "foo://x"));
    assert_code(c, 3);
    cr_assert(strstr(c->err, "invalid URL"), "stderr: %s", c->err);

    fx_cmd_ok("SET q text");
    c = run(ARGS("peek", "--url", fx_url(), "q"));
    assert_code(c, 1);
    cr_assert(strstr(c->err, "WRONGTYPE"), "stderr: %s", c->err);
}

Test(cli_admin, help_and_usage_of_the_new_commands)
{
    static const char *const cmds[][2] = {
        {"queues", "OLDEST"},  {"peek", "INDEX<TAB>ATTEMPTS<TAB>TS<TAB>BODY"},
        {"pause", "resume"},   {"resume", "pause"},
        {"recover", "recovered N"}, {"top", "--interval"},
    };
    for (size_t i = 0; i < sizeof cmds / sizeof cmds[0]; i++) {
        cli_child *c = run(ARGS(cmds[i][0], "--help"));
        assert_code(c, 0);
        cr_assert(strstr(c->out, "usage: redq ") && strstr(c->out, cmds[i][1]),
                  "%s --help: %s", cmds[i][0], c->out);
    }
    cli_child *c = run(ARGS("dead", "delete", "--help"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "--id ID"), "%s", c->out);
    c = run(ARGS("--help"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "queues") && strstr(c->out, "peek") &&
                  strstr(c->out, "top") && strstr(c->out, "dead delete"),
              "%s", c->out);

    const char *const *const bad[] = {
        ARGS("queues", "q"),
        ARGS("peek"),
        ARGS("peek", "q", "r"),
        ARGS("pause"),
        ARGS("recover", "q", "r"),
        ARGS("top", "--interval", "5"),
        ARGS("top", "--interval", "x"),
        ARGS("dead", "delete", "q"),
        ARGS("dead", "requeue", "q", "--id", "a", "--all"),
        ARGS("dead", "requeue", "q", "--id", ""),
        ARGS("peek", "--all", "q"),
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        c = run(bad[i]);
        cr_assert_eq(c->code, 2, "case %zu: exit %d; stderr: %s", i, c->code,
                     c->err);
        cr_assert(strstr(c->err, "usage: redq"), "case %zu: %s", i, c->err);
        cr_assert_eq(c->out_len, 0, "case %zu wrote to stdout", i);
    }
}
