/*
 * The redq tool's at-least-once side against a real redis-server: pop
 * --reliable (-n exactness, acks only after output, SIGTERM, a write that
 * fails, SIGKILL at an arbitrary moment with a second run recovering, many
 * queues, payloads that look like redq's old envelopes), the dead-letter
 * commands (list, requeue, purge) on frames made by the library and by
 * hand, stats against a layout built key by key (orphaned processing lists
 * included), a 1024-byte queue name through every command, and the exit
 * codes of the admin commands (bad URL, unreachable, password, WRONGTYPE,
 * usage). Keys are the library's layout (lib/keys.c): "{q}/dead" for q.
 *
 * Every run of the tool is a child process on pipes, waited for with a
 * bound; children are killed at teardown and when the test process dies.
 * Waits are for conditions (lines read, keys in the server), each bounded.
 */
#define _DEFAULT_SOURCE

#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "cli_child.h"
#include "fixture.h"

/* Generous: under valgrind or ASan everything is slower. */
#define RUN_MS 30000

/* ---- child processes ------------------------------------------------------ */

static void teardown(void)
{
    cli_reap_all();
    fx_teardown();
}

TestSuite(cli_reliable, .init = fx_setup, .fini = teardown, .timeout = 120);

/* Start the tool with `args`; stdin is /dev/null. With `broken_stdout`
 * the read end of its stdout is closed at once, so every write fails. */
static cli_child *spawn(const char *const *args, bool broken_stdout)
{
    cli_opts ro = {.in_path = "/dev/null", .broken_stdout = broken_stdout};
    return cli_spawn(&ro, args);
}

static cli_child *run(const char *const *args)
{
    cli_opts ro = {.in_path = "/dev/null"};
    return cli_run_for(&ro, args, RUN_MS);
}

/* ---- server-side helpers ---------------------------------------------------- */

/* Messages held in processing lists (raw proc: and framed fproc:) of
 * `queue` (any holder, registered or not): the test may use KEYS, the
 * tool must not. */
static long long processing(const char *queue)
{
    redisReply *r = fx_cmd_ok("KEYS {%s}/*proc:*", queue);
    long long sum = 0;
    for (size_t i = 0; i < r->elements; i++)
        sum += fx_llen(r->element[i]->str);
    return sum;
}

/* Acks travel after the output: wait (bounded) for the last of them. */
static void wait_no_processing(const char *queue)
{
    uint64_t deadline = fx_now_us() + 10000000u;
    while (processing(queue) > 0) {
        cr_assert(fx_now_us() < deadline, "%lld messages still in {%s}/proc:*",
                  processing(queue), queue);
        cli_nap_ms(5);
    }
}

/* No client named redq-cli left: a killed tool's connections are gone and
 * the server has run whatever they had sent. */
static void wait_tool_disconnected(void)
{
    uint64_t deadline = fx_now_us() + 10000000u;
    while (strstr(fx_cmd_ok("CLIENT LIST")->str, "name=redq-cli") != NULL) {
        cr_assert(fx_now_us() < deadline, "the tool's connections linger");
        cli_nap_ms(5);
    }
}

/* ---- a library consumer for making and checking dead letters ------------- */

typedef struct lib_consumer {
    redq_consumer *c;
    bool nack;           /* nack everything (else ack) */
    size_t got;
    int attempt;         /* of the last message */
    char body[256];
    size_t body_len;
    bool closed;
} lib_consumer;

static void lc_on_message(redq_consumer *c, redq_message *m, void *user)
{
    lib_consumer *lc = user;
    (void)c;
    lc->got++;
    lc->attempt = redq_msg_attempt(m);
    lc->body_len = redq_msg_len(m) < sizeof lc->body ? redq_msg_len(m)
                                                      : sizeof lc->body;
    memcpy(lc->body, redq_msg_data(m), lc->body_len);
    if (lc->nack)
        redq_nack(m, "bad payload");
    else
        redq_ack(m);
}

static void lc_start(lib_consumer *lc, const char *queue, bool nack)
{
    redq_consumer_options o;
    const char *qs[1] = {queue};

    memset(lc, 0, sizeof *lc);
    lc->nack = nack;
    redq_consumer_options_init(&o);
    o.url = fx_url();
    o.guarantee = REDQ_AT_LEAST_ONCE;
    o.max_attempts = 1; /* the first nack dead-letters */
    o.on_message = lc_on_message;
    o.on_message_user = lc;
    o.consumer_ttl_ms = 300;
    o.promote_interval_ms = 20;
    cr_assert_eq(redq_consumer_new(&lc->c, fx_base(), &o, qs, 1), 0);
}

static void lc_closed(void *user)
{
    ((lib_consumer *)user)->closed = true;
}

static bool lc_is_closed(void *a)
{
    return ((lib_consumer *)a)->closed;
}

static bool lc_got_one(void *a)
{
    return ((lib_consumer *)a)->got > 0;
}

static void lc_close(lib_consumer *lc)
{
    cr_assert_eq(redq_consumer_close(lc->c, lc_closed, lc), 0);
    cr_assert(fx_run_until(lc_is_closed, lc, 5000));
}

/* ---- pop --reliable ---------------------------------------------------------- */

Test(cli_reliable, pop_reliable_n_prints_exactly_n_and_acks_them)
{
    cli_lpush_seq("q", "m", 0, 10, 0);
    cli_child *c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "4",
                        "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "m0\nm1\nm2\nm3\n");
    cr_assert_eq(c->err_len, 0, "stderr: %s", c->err);
    wait_no_processing("q");
    cli_assert_list_seq("q", "m", 4, 10);
    /* Deregistered on the way out: nothing for a reaper to look at. */
    cr_assert_eq(fx_cmd_int("SCARD {q}/consumers"), 0);
}

Test(cli_reliable, pop_without_reliable_stays_at_most_once)
{
    /* Whatever the library's default, plain pop leaves no trace of the
     * at-least-once machinery. */
    cli_lpush_seq("q", "m", 0, 3, 0);
    cli_child *c = run(ARGS("pop", "--url", fx_url(), "-n", "2", "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "m0\nm1\n");
    /* q, the registry of queues in use and q's meta hash with its
     * "taken" counter (redq.h, "Admin"), nothing else. */
    redisReply *r = fx_cmd_ok("KEYS *");
    cr_assert_eq(r->elements, 3, "keys: %zu", r->elements);
    for (size_t i = 0; i < 3; i++)
        cr_assert(!strcmp(r->element[i]->str, "q") ||
                      !strcmp(r->element[i]->str, "redq:queues") ||
                      !strcmp(r->element[i]->str, "{q}/meta"),
                  "key %s", r->element[i]->str);
    cr_assert_eq(fx_cmd_int("ZCARD redq:queues"), 1);
    cr_assert_eq(fx_cmd_int("HLEN {q}/meta"), 1);
    r = fx_cmd_ok("HGET {q}/meta taken");
    cr_assert(r->type == REDIS_REPLY_STRING && !strcmp(r->str, "2"),
              "taken: %s", r->str ? r->str : "(nil)");
}

Test(cli_reliable, pop_reliable_n_never_takes_more_than_n_from_a_burst)
{
    cli_child *c = spawn(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "3",
                          "q"),
                     false);
    cli_wait_blocked(1); /* parked in BLMOVE */
    cli_lpush_seq("q", "m", 0, 5, 0);
    cli_finish(c, RUN_MS);
    cr_assert(!c->timed_out, "stderr: %s", c->err);
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "m0\nm1\nm2\n");
    wait_no_processing("q");
    cli_assert_list_seq("q", "m", 3, 5);
}

Test(cli_reliable, pop_reliable_n_larger_than_the_window)
{
    /* 300 > the 256 held at most in this mode. */
    char *want = cli_seq_text("m", 0, 300);
    cli_lpush_seq("q", "m", 0, 400, 0);
    cli_child *c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "300",
                        "q"));
    assert_code(c, 0);
    cr_assert(strcmp(c->out, want) == 0, "stdout is not m0..m299 in order");
    free(want);
    wait_no_processing("q");
    cli_assert_list_seq("q", "m", 300, 400);
}

Test(cli_reliable, pop_reliable_sigterm_acks_and_deregisters)
{
    cli_child *c = spawn(ARGS("pop", "--reliable", "--url", fx_url(), "q"), false);
    cli_wait_blocked(1);
    cli_lpush_seq("q", "m", 0, 3, 0);
    cr_assert(cli_wait_lines(c, 3, RUN_MS), "printed: %s", c->out);
    cli_wait_blocked(1);
    kill(c->pid, SIGTERM);
    cli_finish(c, 10000);
    cr_assert(!c->timed_out, "no exit within 10 s of SIGTERM");
    assert_code(c, 128 + SIGTERM);
    cr_assert_str_eq(c->out, "m0\nm1\nm2\n");
    cr_assert_eq(fx_llen("q"), 0);
    cr_assert_eq(processing("q"), 0);
    cr_assert_eq(fx_cmd_int("SCARD {q}/consumers"), 0);
    cr_assert_eq(fx_cmd_ok("KEYS {q}/hb:*")->elements, 0);
}

Test(cli_reliable, pop_reliable_write_failure_nacks_and_loses_nothing)
{
    cli_lpush_seq("q", "m", 0, 3, 0);
    cli_child *c = spawn(ARGS("pop", "--reliable", "--url", fx_url(), "q"), true);
    cli_finish(c, RUN_MS);
    cr_assert(!c->timed_out, "stderr: %s", c->err);
    assert_code(c, 1);
    cr_assert(strstr(c->err, "write to stdout") != NULL, "stderr: %s", c->err);
    /* Nacked: on the retry path, not acked, not in a processing list. */
    cr_assert_eq(processing("q"), 0);
    cr_assert_eq(fx_cmd_int("ZCARD {q}/delayed") + fx_llen("{q}/due") +
                     fx_llen("q"),
                 3);

    /* Retried (after the backoff) to a reader that works: all three. */
    c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "3", "q"));
    assert_code(c, 0);
    for (int i = 0; i < 3; i++) {
        char want[16];
        snprintf(want, sizeof want, "m%d\n", i);
        cr_assert(strstr(c->out, want) != NULL, "no %s in: %s", want, c->out);
    }
    cr_assert_eq(cli_count_lines(c), 3);
    wait_no_processing("q");
}

/* Which message a line of the kill test is ("k123-xxx..."), or -1. */
static int kill_seq(const char *line, size_t len, int n)
{
    if (len < 2 || line[0] != 'k')
        return -1;
    int v = atoi(line + 1);
    return v >= 0 && v < n ? v : -1;
}

/* Count complete lines of `c` per message into counts[]; a last line
 * without \n (the process died mid-write) is not a printed message. */
static void tally(const cli_child *c, int *counts, int n)
{
    const char *p = c->out, *end = c->out + c->out_len;
    while (p < end) {
        const char *nl = memchr(p, '\n', (size_t)(end - p));
        if (nl == NULL)
            break;
        int s = kill_seq(p, (size_t)(nl - p), n);
        cr_assert_geq(s, 0, "unexpected line: %.*s", (int)(nl - p), p);
        counts[s]++;
        p = nl + 1;
    }
}

Test(cli_reliable, pop_reliable_sigkill_loses_nothing)
{
    enum { N = 3000, PAD = 100 };
    static int first[N], second[N], held[N];

    cli_lpush_seq("q", "k", 0, N, PAD);
    /* A reads some lines, then nobody reads: its stdout pipe fills and it
     * blocks with taken, unacked messages. */
    cli_child *a = spawn(ARGS("pop", "--reliable", "--url", fx_url(),
                          "--consumer-ttl-ms", "300", "q"),
                     false);
    cr_assert(cli_wait_lines(a, 50, RUN_MS), "A printed: %zu lines", cli_count_lines(a));
    /* Stop reading until the pipe is full: A is then stuck in a write with
     * messages taken and not acked. */
    uint64_t deadline = fx_now_us() + (uint64_t)RUN_MS * 1000u;
    for (;;) {
        int unread = 0;
        cr_assert_eq(ioctl(a->out_fd, FIONREAD, &unread), 0);
        if (unread >= 60000 && processing("q") > 0)
            break;
        cr_assert(cli_ms_left(deadline) > 0, "A's pipe did not fill (%d bytes)",
                  unread);
        cli_pump(a, 5, false);
    }
    kill(a->pid, SIGKILL);
    cli_finish(a, RUN_MS); /* drains what A had written into the pipe */
    cr_assert_eq(a->code, -SIGKILL);
    wait_tool_disconnected();

    /* What A had taken and not acked, as Redis has it now. */
    redisReply *ids = fx_cmd_ok("SMEMBERS {q}/consumers");
    cr_assert_eq(ids->elements, 1, "A should still be registered");
    char proc[96];
    snprintf(proc, sizeof proc, "{q}/proc:%s", ids->element[0]->str);
    redisReply *taken = fx_cmd_ok("LRANGE %s 0 -1", proc);
    cr_assert_gt(taken->elements, 0);
    for (size_t i = 0; i < taken->elements; i++) {
        int s = kill_seq(taken->element[i]->str, (size_t)taken->element[i]->len,
                         N);
        cr_assert_geq(s, 0);
        held[s] = 1;
    }
    tally(a, first, N);

    /* B recovers A's messages once A's heartbeat has expired, and takes
     * the rest; read until every message has been seen. */
    cli_child *b = spawn(ARGS("pop", "--reliable", "--url", fx_url(),
                          "--consumer-ttl-ms", "300", "q"),
                     false);
    deadline = fx_now_us() + (uint64_t)RUN_MS * 1000u;
    for (;;) {
        int missing = 0;
        memset(second, 0, sizeof second);
        tally(b, second, N);
        for (int i = 0; i < N; i++)
            missing += first[i] == 0 && second[i] == 0;
        if (missing == 0)
            break;
        cr_assert(cli_ms_left(deadline) > 0, "%d messages never printed", missing);
        cli_pump(b, 50, true);
    }
    kill(b->pid, SIGTERM);
    cli_finish(b, 10000);
    assert_code(b, 128 + SIGTERM);
    memset(second, 0, sizeof second);
    tally(b, second, N);

    int dups = 0;
    for (int i = 0; i < N; i++) {
        cr_assert_leq(first[i], 1, "A printed k%d twice", i);
        cr_assert_leq(second[i], 1, "B printed k%d twice", i);
        cr_assert_geq(first[i] + second[i], 1, "k%d was lost", i);
        if (first[i] && second[i]) {
            /* Printed by A and again by B: only if A had not acked it. */
            cr_assert(held[i], "k%d printed twice but A had acked it", i);
            dups++;
        }
    }
    /* Nothing left anywhere; recovered messages were not dead-lettered. */
    cr_assert_eq(fx_llen("q"), 0);
    cr_assert_eq(processing("q"), 0);
    cr_assert_eq(fx_llen("{q}/dead"), 0);
    cr_assert_eq(fx_cmd_int("SCARD {q}/consumers"), 0);
    cr_log_info("kill test: A printed %zu lines, held %zu, duplicates %d",
                cli_count_lines(a), taken->elements, dups);
}

/* ---- dead letters --------------------------------------------------------------- */

/* fx_run_until condition: the list `key` holds exactly `n`. */
typedef struct llen_want {
    const char *key;
    long long n;
} llen_want;

static bool llen_is(void *a)
{
    const llen_want *w = a;
    return fx_llen(w->key) == w->n;
}

/* LINDEX key i, with its length (binary-safe); freed by the caller. */
static redisReply *lindex(const char *key, long i)
{
    redisReply *r = redisCommand(fx_redis(), "LINDEX %s %ld", key, i);
    cr_assert(r && r->type == REDIS_REPLY_STRING, "LINDEX %s %ld", key, i);
    return r;
}

/* A requeued frame (the head of due, the newest there): metadata reset
 * (attempts 0, no dead-letter fields), the payload after the header
 * exactly `body`. */
static void assert_requeued_frame(const char *due, const void *body,
                                  size_t len)
{
    redisReply *f = lindex(due, 0);
    const char *nl = memchr(f->str, '\n', f->len);
    cr_assert(nl != NULL && strncmp(f->str, "RQ1 ", 4) == 0, "not a frame: %s",
              f->str);
    size_t hl = (size_t)(nl - f->str);
    char *hdr = strndup(f->str, hl);
    cr_assert(strstr(hdr, " a=0") != NULL, "attempts not reset: %s", hdr);
    cr_assert(strstr(hdr, " dr=") == NULL && strstr(hdr, " dts=") == NULL &&
                  strstr(hdr, " q=") == NULL,
              "dead-letter fields kept: %s", hdr);
    cr_assert_eq(f->len - hl - 1, len, "payload length %zu, want %zu",
                 f->len - hl - 1, len);
    cr_assert(memcmp(nl + 1, body, len) == 0, "payload changed");
    free(hdr);
    freeReplyObject(f);
}

Test(cli_reliable, dead_letter_from_the_library_listed_requeued_popped)
{
    /* JSON with "id" and "body": the old envelope code took it for its own
     * and delivered "order 42" alone. It is a payload like any other. */
    static const char body[] = "{\"id\":42,\"body\":\"order 42\"}";
    llen_want dead1 = {"{q}/dead", 1};
    lib_consumer lc;
    char *line, *tab;

    fx_cmd_ok("LPUSH q %s", body);
    lc_start(&lc, "q", true);
    cr_assert(fx_run_until(llen_is, &dead1, 10000), "not dead-lettered");
    lc_close(&lc);
    cr_assert_eq(fx_llen("q"), 0);
    cr_assert_eq(lc.attempt, 1);
    cr_assert_eq(lc.body_len, strlen(body));
    cr_assert(memcmp(lc.body, body, lc.body_len) == 0);

    cli_child *c = run(ARGS("dead", "list", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_eq(cli_count_lines(c), 1, "stdout: %s", c->out);
    cr_assert_eq(c->err_len, 0, "stderr: %s", c->err);
    /* INDEX ATTEMPTS DEAD_TS REASON BODY */
    line = c->out;
    cr_assert(strncmp(line, "0\t1\t", 4) == 0, "line: %s", line);
    tab = strchr(line + 4, '\t');
    cr_assert_not_null(tab);
    cr_assert_eq(tab - (line + 4), 24, "timestamp: %.*s", (int)(tab - line - 4),
                 line + 4);
    cr_assert(line[4 + 10] == 'T' && line[4 + 23] == 'Z', "line: %s", line);
    cr_assert(strstr(tab, "\tnack: bad payload (attempt 1 of 1)\t") == tab,
              "line: %s", line);
    cr_assert(strstr(line, "\t{\"id\":42,\"body\":\"order 42\"}\n") != NULL,
              "line: %s", line);

    c = run(ARGS("dead", "list", "--json", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_eq(cli_count_lines(c), 1, "stdout: %s", c->out);
    cr_assert(strncmp(c->out, "{\"index\":0,\"id\":\"", 17) == 0, "%s", c->out);
    cr_assert(strstr(c->out, ",\"attempts\":1,") != NULL, "%s", c->out);
    cr_assert(strstr(c->out, ",\"dead_reason\":\"nack: bad payload (attempt 1 "
                             "of 1)\",\"queue\":\"q\",") != NULL,
              "%s", c->out);
    cr_assert(strstr(c->out, ",\"body\":\"{\\\"id\\\":42,\\\"body\\\":\\\"order "
                             "42\\\"}\"}\n") != NULL,
              "%s", c->out);

    c = run(ARGS("dead", "requeue", "--url", fx_url(), "q", "--all"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "requeued 1\n");
    cr_assert_eq(fx_llen("{q}/dead"), 0);
    cr_assert_eq(fx_llen("{q}/due"), 1);
    assert_requeued_frame("{q}/due", body, strlen(body));

    c = run(ARGS("pop", "--reliable", "--url", fx_url(), "q", "-n", "1"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "{\"id\":42,\"body\":\"order 42\"}\n");
    wait_no_processing("q");
    cr_assert_eq(fx_llen("{q}/due"), 0);

    c = run(ARGS("dead", "purge", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "purged 0\n");
}

Test(cli_reliable, dead_binary_body_requeued_intact_with_attempts_reset)
{
    /* Not UTF-8, a NUL, CR LF: kept verbatim in the frame, no base64. */
    static const char body[] = "b\xff\x00z\r\n\x80";
    llen_want dead1 = {"{q}/dead", 1};
    lib_consumer lc;

    redisReply *r = redisCommand(fx_redis(), "LPUSH q %b", body,
                                 sizeof body - 1);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER);
    freeReplyObject(r);
    lc_start(&lc, "q", true);
    cr_assert(fx_run_until(llen_is, &dead1, 10000));
    lc_close(&lc);
    r = lindex("{q}/dead", 0);
    const char *nl = memchr(r->str, '\n', r->len);
    cr_assert(nl != NULL && r->str + r->len - (nl + 1) == sizeof body - 1 &&
                  memcmp(nl + 1, body, sizeof body - 1) == 0,
              "the dead letter does not hold the payload verbatim");
    freeReplyObject(r);

    cli_child *c = run(ARGS("dead", "list", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert(strncmp(c->out, "0\t1\t", 4) == 0, "stdout: %s", c->out);
    cr_assert(strstr(c->out, "\tb\\xff\\x00z\\r\\n\\x80\n") != NULL,
              "stdout: %s", c->out);
    c = run(ARGS("dead", "list", "--json", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, ",\"body_b64\":\"Yv8Aeg0KgA==\"}\n") != NULL,
              "stdout: %s", c->out);

    c = run(ARGS("dead", "requeue", "--url", fx_url(), "q", "-n", "5"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "requeued 1\n");
    assert_requeued_frame("{q}/due", body, sizeof body - 1);

    /* Delivered again, whole, as a first attempt. */
    lc_start(&lc, "q", false);
    cr_assert(fx_run_until(lc_got_one, &lc, 10000));
    cr_assert_eq(lc.attempt, 1);
    cr_assert_eq(lc.body_len, sizeof body - 1);
    cr_assert(memcmp(lc.body, body, sizeof body - 1) == 0);
    lc_close(&lc);
}

/* A dead letter as the library writes one, to the head of `queue`'s dead
 * list; `reason` already percent-encoded. */
static void push_dead_to(const char *queue, const char *id, const char *body,
                         int attempts, const char *reason, long long dead_ts)
{
    char buf[512], key[2048];
    int n = snprintf(buf, sizeof buf,
                     "RQ1 id=%s a=%d ts=1700000000000 dr=%s dts=%lld q=q\n%s",
                     id, attempts, reason, dead_ts, body);
    snprintf(key, sizeof key, "{%s}/dead", queue);
    redisReply *r = redisCommand(fx_redis(), "LPUSH %s %b", key, buf,
                                 (size_t)n);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER);
    freeReplyObject(r);
}

static void push_dead(const char *id, const char *body, int attempts,
                      const char *reason, long long dead_ts)
{
    push_dead_to("q", id, body, attempts, reason, dead_ts);
}

Test(cli_reliable, dead_list_requeue_n_oldest_first_and_purge)
{
    /* Oldest first: d1 is at the tail. */
    push_dead("1", "one", 5, "boom", 1700000000123LL);
    push_dead("2", "two\ttab", 3, "line%0Abreak", 1700000001000LL);
    push_dead("3", "three", 2, "late", 1700000002000LL);
    fx_cmd_ok("LPUSH {q}/dead %s", "not json\tat all"); /* by hand */

    cli_child *c = run(ARGS("dead", "list", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out,
                     "0\t-\t-\t-\tnot json\\tat all\n"
                     "1\t2\t2023-11-14T22:13:22.000Z\tlate\tthree\n"
                     "2\t3\t2023-11-14T22:13:21.000Z\tline\\nbreak\ttwo\\ttab\n"
                     "3\t5\t2023-11-14T22:13:20.123Z\tboom\tone\n");
    /* The raw entry is shown, with a note on stderr (not on stdout). */
    cr_assert(strstr(c->err, "dead letter 0 is not a redq frame") != NULL,
              "stderr: %s", c->err);

    c = run(ARGS("dead", "list", "--url", fx_url(), "-n", "2", "q"));
    assert_code(c, 0);
    cr_assert_eq(cli_count_lines(c), 2);
    cr_assert(strncmp(c->out, "0\t", 2) == 0 && strstr(c->out, "\n1\t") != NULL);

    c = run(ARGS("dead", "list", "--url", fx_url(), "--json", "-n", "2", "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out,
                     "{\"index\":0,\"error\":\"not a redq frame\",\"body\":"
                     "\"not json\\u0009at all\"}\n"
                     "{\"index\":1,\"id\":\"3\",\"attempts\":2,\"ts\":"
                     "1700000000000,\"dead_ts\":1700000002000,\"dead_reason\":"
                     "\"late\",\"queue\":\"q\",\"body\":\"three\"}\n");

    /* The two oldest go back, in their order, to the end of due, which
     * is taken before the ready list. */
    fx_cmd_ok("LPUSH q %s", "ready");
    c = run(ARGS("dead", "requeue", "--url", fx_url(), "-n", "2", "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "requeued 2\n");
    cr_assert_eq(fx_llen("{q}/dead"), 2);
    cr_assert_eq(fx_llen("{q}/due"), 2);
    c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "3", "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "one\ntwo\ttab\nready\n");

    /* Fewer there than asked for; the entry made by hand goes back whole
     * as a payload. */
    c = run(ARGS("dead", "requeue", "--url", fx_url(), "-n", "5", "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "requeued 2\n");
    assert_requeued_frame("{q}/due", "not json\tat all", 15);
    c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "2", "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "three\nnot json\tat all\n");
    wait_no_processing("q");

    push_dead("4", "four", 5, "x", 1700000000000LL);
    push_dead("5", "five", 5, "x", 1700000000000LL);
    c = run(ARGS("dead", "purge", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "purged 2\n");
    cr_assert_eq(fx_cmd_int("EXISTS {q}/dead"), 0);

    /* Empty: nothing listed, nothing moved. */
    c = run(ARGS("dead", "list", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_eq(c->out_len, 0);
    c = run(ARGS("dead", "requeue", "--url", fx_url(), "--all", "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "requeued 0\n");
}

Test(cli_reliable, dead_requeue_rewrites_only_what_it_must)
{
    /* A 16-digit ts (a client's microseconds), a field redq does not know,
     * a payload that looks like an old envelope: all kept byte for byte;
     * only attempts and the dead-letter fields change. */
    static const char body[] = "{\"body\":\"a\\/b \\u00e9\",\"attempts\":"
                               "\"two\",\"n\":1.50}\n";
    char frame[256];
    int n = snprintf(frame, sizeof frame,
                     "RQ1 id=x ts=1764000000000123 a=4 zz=keep%%20me dr=r "
                     "dts=1 q=q\n%s",
                     body);
    redisReply *r = redisCommand(fx_redis(), "LPUSH {q}/dead %b", frame,
                                 (size_t)n);
    freeReplyObject(r);
    cli_child *c = run(ARGS("dead", "requeue", "--all", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "requeued 1\n");
    assert_requeued_frame("{q}/due", body, strlen(body));
    r = lindex("{q}/due", 0);
    cr_assert(strstr(r->str, " id=x") && strstr(r->str, " ts=1764000000000123") &&
                  strstr(r->str, " zz=keep%20me"),
              "requeued: %s", r->str);
    freeReplyObject(r);
    c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "1", "q"));
    assert_code(c, 0);
    cr_assert_eq(c->out_len, strlen(body) + 1);
    cr_assert(memcmp(c->out, body, strlen(body)) == 0, "stdout: %s", c->out);
    wait_no_processing("q");
}

/* ---- payloads, names, many queues ------------------------------------------------- */

Test(cli_reliable, pop_reliable_prints_json_payloads_as_pushed)
{
    /* The shapes the old envelope code rewrote or dead-lettered. */
    static const char *const bodies[] = {
        "{\"to\":\"a@b.c\",\"subject\":\"hi\",\"body\":\"hello\"}",
        "{\"id\":42,\"body\":\"x\"}",
        "{\"body_b64\":\"not base64!\"}",
        "{\"body\":\"x\",\"attempts\":\"two\"}",
        "{\"body\":{\"n\":12345678901234567890}}",
        "RQ1 a=7\nnot a frame: pushed by a user",
    };
    enum { N = sizeof bodies / sizeof bodies[0] };
    char want[1024] = "", count[8];

    for (int i = 0; i < N; i++) {
        fx_cmd_ok("LPUSH q %s", bodies[i]); /* a plain client */
        strcat(want, bodies[i]);
        strcat(want, "\n");
    }
    snprintf(count, sizeof count, "%d", N);
    cli_child *c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", count,
                        "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, want);
    wait_no_processing("q");
    cr_assert_eq(fx_llen("{q}/dead"), 0, "a payload was dead-lettered");
    cr_assert_eq(fx_llen("q"), 0);
}

Test(cli_reliable, queue_name_of_1024_bytes_everywhere)
{
    static char name[1025];
    char dead[1100];
    llen_want dead2 = {dead, 2};
    lib_consumer lc;

    memset(name, 'n', 1024);
    memcpy(name, "long:queue-", 11);
    name[1024] = '\0';
    snprintf(dead, sizeof dead, "{%s}/dead", name);

    cli_child *c = run(ARGS("push", "--url", fx_url(), name, "m1", "m2", "m3"));
    assert_code(c, 0);
    cr_assert_eq(fx_llen(name), 3);
    c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "1", name));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "m1\n");
    wait_no_processing(name);

    lc_start(&lc, name, true);
    cr_assert(fx_run_until(llen_is, &dead2, 10000), "not dead-lettered");
    lc_close(&lc);

    c = run(ARGS("dead", "list", "--url", fx_url(), name));
    assert_code(c, 0);
    cr_assert_eq(cli_count_lines(c), 2, "stdout: %s", c->out);
    cr_assert(strstr(c->out, "\tnack: bad payload (attempt 1 of 1)\tm3\n") &&
                  strstr(c->out, "\tnack: bad payload (attempt 1 of 1)\tm2\n"),
              "stdout: %s", c->out);

    c = run(ARGS("stats", "--json", "--url", fx_url(), name));
    assert_code(c, 0);
    cr_assert(strstr(c->out, name) != NULL, "the name is not in: %s", c->out);
    cr_assert(strstr(c->out, "\"ready\":0,\"due\":0,\"processing\":0,"
                             "\"delayed\":0,\"dead\":2,") != NULL,
              "stdout ends: %s", c->out + c->out_len - 150);
    c = run(ARGS("stats", "--url", fx_url(), name));
    assert_code(c, 0);
    cr_assert(strstr(c->out, name) != NULL, "stdout: %s", c->out);

    c = run(ARGS("dead", "requeue", "--all", "--url", fx_url(), name));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "requeued 2\n");
    c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "2", name));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "m2\nm3\n");
    wait_no_processing(name);

    c = run(ARGS("dead", "purge", "--url", fx_url(), name));
    assert_code(c, 0);
    cr_assert_str_eq(c->out, "purged 0\n");
    c = run(ARGS("stats", "--json", "--url", fx_url(), name));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "\"ready\":0,\"due\":0,\"processing\":0,"
                             "\"delayed\":0,\"dead\":0,") != NULL &&
                  strstr(c->out, ",\"orphaned\":0,\"orphans\":[]}]}\n"),
              "stdout ends: %s", c->out + c->out_len - 150);
}

Test(cli_reliable, pop_reliable_over_six_queues)
{
    /* TAKE's arguments grow with the queues (4 keys each): 5 and more
     * used to write past the consumer's argument array. */
    static const char *const qs[] = {"q1", "q2", "q3", "q4", "q5", "q6"};
    char want[256] = "";

    for (int i = 0; i < 6; i++)
        for (int k = 0; k < 2; k++) {
            char m[16];
            snprintf(m, sizeof m, "%s.%d", qs[i], k);
            fx_cmd_ok("LPUSH %s %s", qs[i], m);
            strcat(want, m);
            strcat(want, "\n");
        }
    cli_child *c = run(ARGS("pop", "--reliable", "--url", fx_url(), "-n", "12",
                        "q1", "q2", "q3", "q4", "q5", "q6"));
    assert_code(c, 0);
    /* Earlier queues first. */
    cr_assert_str_eq(c->out, want);
    for (int i = 0; i < 6; i++) {
        wait_no_processing(qs[i]);
        cr_assert_eq(fx_llen(qs[i]), 0);
        cr_assert_eq(fx_cmd_int("SCARD {%s}/consumers", qs[i]), 0);
    }
}

/* ---- stats ----------------------------------------------------------------------- */

Test(cli_reliable, stats_match_a_layout_built_by_hand)
{
    fx_cmd_ok("RPUSH q r1 r2 r3");
    fx_cmd_ok("RPUSH {q}/due f1");
    fx_cmd_ok("ZADD {q}/delayed 4102444800000 d1 4102444800000 d2");
    fx_cmd_ok("LPUSH {q}/dead x");
    /* A live holder with two raw and one framed message, a dead one (no
     * heartbeat) holding one: both registered, both counted. */
    fx_cmd_ok("SADD {q}/consumers 0123456789abcdef.0 fedcba9876543210.1");
    fx_cmd_ok("SET {q}/hb:0123456789abcdef.0 1 PX 600000");
    fx_cmd_ok("RPUSH {q}/proc:0123456789abcdef.0 p1 p2");
    fx_cmd_ok("RPUSH {q}/fproc:0123456789abcdef.0 p3");
    fx_cmd_ok("RPUSH {q}/proc:fedcba9876543210.1 p4");

    cli_child *c = run(ARGS("stats", "--url", fx_url(), "q", "other"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out,
                     "QUEUE  READY  DUE  PROCESSING  DELAYED  DEAD  CONSUMERS  "
                     "REGISTERED  ORPHANED\n"
                     "q          3    1           4        2     1          1  "
                     "         2         0\n"
                     "other      0    0           0        0     0          0  "
                     "         0         0\n");
    cr_assert_eq(c->err_len, 0, "stderr: %s", c->err);

    c = run(ARGS("stats", "--json", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_str_eq(c->out,
                     "{\"queues\":[{\"queue\":\"q\",\"ready\":3,\"due\":1,"
                     "\"processing\":4,\"delayed\":2,\"dead\":1,"
                     "\"consumers\":1,\"registered\":2,\"orphaned\":0,"
                     "\"orphans\":[]}]}\n");

    /* The dead holder's heartbeat was never there; the live one's goes. */
    fx_cmd_ok("DEL {q}/hb:0123456789abcdef.0");
    c = run(ARGS("stats", "--json", "--url", fx_url(), "q"));
    cr_assert(strstr(c->out, "\"consumers\":0,\"registered\":2,") != NULL,
              "stdout: %s", c->out);
}

Test(cli_reliable, stats_names_orphaned_processing_lists)
{
    /* A name with every glob character: the SCAN pattern must escape them
     * or it would not even match the queue's own keys. */
    static const char weird[] = "w[e]i*r?d\\";
    char key[128];

    fx_cmd_ok("RPUSH q r1");
    /* Registered: counted as processing, not orphaned. */
    fx_cmd_ok("SADD {q}/consumers 0123456789abcdef.0");
    fx_cmd_ok("SET {q}/hb:0123456789abcdef.0 1 PX 600000");
    fx_cmd_ok("RPUSH {q}/proc:0123456789abcdef.0 p1");
    /* Orphaned: a holder nobody registered (or a stop that forgot it). */
    fx_cmd_ok("RPUSH {q}/proc:00000000deadbeef.7 g1 g2 g3");
    fx_cmd_ok("RPUSH {q}/fproc:00000000deadbeef.7 g4");
    /* Not processing lists of q: the dead list of a queue named "{q}/proc"
     * ("{q}/proc:dead"), a string, another queue's orphan. */
    fx_cmd_ok("RPUSH {q}/proc:dead x");
    fx_cmd_ok("SET {q}/proc:00000000deadbeef.8 str");
    fx_cmd_ok("RPUSH {other}/proc:00000000deadbeef.9 o1");
    snprintf(key, sizeof key, "{%s}/proc:00000000cafe0000.1", weird);
    fx_cmd_ok("RPUSH %s w1 w2", key);

    cli_child *c = run(ARGS("stats", "--url", fx_url(), "q", weird));
    assert_code(c, 0);
    cr_assert(strstr(c->out,
                     "QUEUE        READY  DUE  PROCESSING  DELAYED  DEAD  "
                     "CONSUMERS  REGISTERED  ORPHANED\n"
                     "q                1    0           1        0     0  "
                     "        1           1         4\n"
                     "w[e]i*r?d\\\\      0    0           0        0     0  "
                     "        0           0         2\n"
                     "\norphaned processing lists") == c->out,
              "stdout: %s", c->out);
    cr_assert(strstr(c->out, "\n  {q}/proc:00000000deadbeef.7\t3\n"),
              "stdout: %s", c->out);
    cr_assert(strstr(c->out, "\n  {q}/fproc:00000000deadbeef.7\t1\n"),
              "stdout: %s", c->out);
    cr_assert(strstr(c->out, "\n  {w[e]i*r?d\\\\}/proc:00000000cafe0000.1\t2\n"),
              "stdout: %s", c->out);
    cr_assert_eq(cli_count_lines(c), 8, "stdout: %s", c->out);
    cr_assert(strstr(c->err, "3 orphaned processing lists") != NULL,
              "stderr: %s", c->err);

    c = run(ARGS("stats", "--json", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "\"processing\":1,") &&
                  strstr(c->out, "\"orphaned\":4,\"orphans\":[{\"key\":\""),
              "stdout: %s", c->out);
    cr_assert(strstr(c->out, "{\"key\":\"{q}/proc:00000000deadbeef.7\","
                             "\"messages\":3}") &&
                  strstr(c->out, "{\"key\":\"{q}/fproc:00000000deadbeef.7\","
                                 "\"messages\":1}"),
              "stdout: %s", c->out);

    /* -q: the listing stays, the warning goes. */
    c = run(ARGS("stats", "-q", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert_eq(c->err_len, 0, "stderr: %s", c->err);
}

Test(cli_reliable, stats_over_unix_socket_and_other_database)
{
    char url[512];

    fx_cmd_ok("SELECT 2");
    fx_cmd_ok("RPUSH q a b");
    snprintf(url, sizeof url, "unix://%s?db=2", fx_unix_path());
    cli_child *c = run(ARGS("stats", "--json", "--url", url, "q"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "\"ready\":2,") != NULL, "stdout: %s", c->out);

    snprintf(url, sizeof url, "%s/2", fx_url());
    c = run(ARGS("stats", "--json", "--url", url, "q"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "\"ready\":2,") != NULL, "stdout: %s", c->out);

    /* Database 0 has no such queue. */
    c = run(ARGS("stats", "--json", "--url", fx_url(), "q"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "\"ready\":0,") != NULL, "stdout: %s", c->out);
}

/* ---- failures ---------------------------------------------------------------------- */

static const char *const *admin_cmd_args(int which, const char *url)
{
    static const char *argv[8];
    switch (which) {
    case 0:
        return memcpy(argv, ARGS("dead", "list", "--url", url, "q"),
                      6 * sizeof *argv);
    case 1:
        return memcpy(argv, ARGS("dead", "requeue", "--all", "--url", url, "q"),
                      7 * sizeof *argv);
    case 2:
        return memcpy(argv, ARGS("dead", "purge", "--url", url, "q"),
                      6 * sizeof *argv);
    default:
        return memcpy(argv, ARGS("stats", "--url", url, "q"),
                      5 * sizeof *argv);
    }
}

Test(cli_reliable, admin_bad_url_exits_3)
{
    static const char *const bad[] = {"foo://127.0.0.1",
                                      "redis://127.0.0.1:99999",
                                      "redis://host/notadb", "unix://rel.sock"};
    for (int w = 0; w < 4; w++) {
        cli_child *c = run(admin_cmd_args(w, bad[w]));
        assert_code(c, 3);
        cr_assert(strstr(c->err, "invalid URL") != NULL, "stderr: %s", c->err);
        cr_assert_eq(c->out_len, 0);
    }
}

Test(cli_reliable, admin_unreachable_exits_4_in_bounded_time)
{
    char url[64], where[64];
    int port = fx_free_port();

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    snprintf(where, sizeof where, "cannot connect to 127.0.0.1:%d", port);
    for (int w = 0; w < 4; w++) {
        const char *const *args = admin_cmd_args(w, url);
        const char *argv[12];
        size_t n = 0;
        for (; args[n]; n++)
            argv[n] = args[n];
        argv[n++] = "--connect-timeout";
        argv[n++] = "0.5";
        argv[n] = NULL;
        cli_child *c = run(argv);
        assert_code(c, 4);
        cr_assert(strstr(c->err, where) != NULL, "stderr: %s", c->err);
        cr_assert(fx_contains_nocase(c->err, "refused"), "stderr: %s", c->err);
        uint64_t ms = (c->end_us - c->start_us) / 1000u;
        cr_assert(ms + 50 >= 500 && ms < 8000, "gave up after %llu ms",
                  (unsigned long long)ms);
    }
}

Test(cli_reliable, admin_password_exits_5_or_works, .init = fx_setup_noserver)
{
    static const char *const pass[] = {"--requirepass", "s3cret", NULL};
    char good[96], bad[96];

    fx_server_start(pass);
    snprintf(good, sizeof good, "redis://:s3cret@127.0.0.1:%d", fx_port());
    snprintf(bad, sizeof bad, "redis://:wrong@127.0.0.1:%d", fx_port());
    for (int w = 0; w < 4; w++) {
        cli_child *c = run(admin_cmd_args(w, bad));
        assert_code(c, 5);
        cr_assert(strstr(c->err, "authentication failed") != NULL,
                  "stderr: %s", c->err);
        cr_assert(strstr(c->err, "s3cret") == NULL &&
                      strstr(c->err, "wrong") == NULL,
                  "a password leaked: %s", c->err);
        /* No password at all: NOAUTH, the same exit. */
        c = run(admin_cmd_args(w, fx_url()));
        assert_code(c, 5);
    }
    fx_cmd_ok("RPUSH q a");
    cli_child *c = run(ARGS("stats", "--json", "--url", good, "q"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "\"ready\":1,") != NULL, "stdout: %s", c->out);
}

Test(cli_reliable, admin_wrongtype_exits_1_and_moves_nothing)
{
    fx_cmd_ok("SET {q}/dead text");
    for (int w = 0; w < 3; w++) {
        cli_child *c = run(admin_cmd_args(w, fx_url()));
        assert_code(c, 1);
        cr_assert(strstr(c->err, "WRONGTYPE") != NULL, "stderr: %s", c->err);
    }
    /* stats is the admin API's snapshot, which never fails on one queue:
     * a key of another type counts 0 (lib/scripts.c, SNAPSHOT). */
    cli_child *s = run(admin_cmd_args(3, fx_url()));
    assert_code(s, 0);
    cr_assert(strstr(s->out, "\nq          0    0           0        0     0 ")
                  != NULL, "stdout: %s", s->out);
    cr_assert_str_eq(fx_cmd_ok("GET {q}/dead")->str, "text");

    /* The due list is the wrong type: requeue must not pop the dead
     * letter it could not push. */
    fx_cmd_ok("DEL {q}/dead");
    push_dead("1", "one", 5, "boom", 1700000000000LL);
    fx_cmd_ok("SET {q}/due text");
    cli_child *c = run(ARGS("dead", "requeue", "--all", "--url", fx_url(), "q"));
    assert_code(c, 1);
    cr_assert(strstr(c->err, "WRONGTYPE") != NULL, "stderr: %s", c->err);
    cr_assert_eq(fx_llen("{q}/dead"), 1);
    cr_assert_str_eq(fx_cmd_ok("GET {q}/due")->str, "text");
}

/* ---- usage ---------------------------------------------------------------------------- */

Test(cli_reliable, help_for_the_new_commands)
{
    cli_child *c = run(ARGS("dead", "--help"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "usage: redq dead COMMAND") != NULL, "%s", c->out);
    cr_assert(strstr(c->out, "requeue") && strstr(c->out, "purge"));

    c = run(ARGS("dead", "list", "--help"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "usage: redq dead list") != NULL, "%s", c->out);
    cr_assert(strstr(c->out, "INDEX<TAB>ATTEMPTS<TAB>DEAD_TS<TAB>REASON<TAB>"
                             "BODY") != NULL, "%s", c->out);

    c = run(ARGS("dead", "requeue", "-h"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "--all") != NULL, "%s", c->out);

    c = run(ARGS("stats", "--help"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "PROCESSING") != NULL, "%s", c->out);

    c = run(ARGS("pop", "--help"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "--reliable") != NULL, "%s", c->out);

    c = run(ARGS("--help"));
    assert_code(c, 0);
    cr_assert(strstr(c->out, "dead requeue") && strstr(c->out, "stats"));
}

Test(cli_reliable, usage_errors_exit_2)
{
    static char toolong[1026];
    memset(toolong, 'n', 1025);
    const char *const *const cases[] = {
        ARGS("dead"),
        ARGS("dead", "frob", "q"),
        ARGS("dead", "list"),
        ARGS("dead", "list", "q", "r"),
        ARGS("dead", "list", "-n", "x", "q"),
        ARGS("dead", "list", "--all", "q"),
        ARGS("dead", "list", ""),
        ARGS("dead", "list", toolong),
        ARGS("stats", "q", toolong),
        ARGS("dead", "requeue", "q"),
        ARGS("dead", "requeue", "q", "--all", "-n", "2"),
        ARGS("dead", "purge", "-n", "1", "q"),
        ARGS("stats"),
        ARGS("stats", "--reliable", "q"),
        ARGS("pop", "--visibility-ms", "100", "q"),
        ARGS("pop", "--reliable", "--consumer-ttl-ms", "50", "q"),
        ARGS("pop", "--reliable", "--visibility-ms", "x", "q"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cli_child *c = run(cases[i]);
        cr_assert_eq(c->code, 2, "case %zu: exit %d; stderr: %s", i, c->code,
                     c->err);
        cr_assert(strstr(c->err, "usage: redq") != NULL, "case %zu: %s", i,
                  c->err);
        cr_assert_eq(c->out_len, 0, "case %zu wrote to stdout", i);
    }
}
