/*
 * The redq command-line tool (tools/cli/) against a real redis-server:
 * push and pop round trips (arguments and stdin), -n exactness, queue
 * priority, the idle timeout, signals, and the exit code of each failure
 * (bad URL, unreachable server, wrong password, WRONGTYPE, usage).
 *
 * The binary comes from REDQ_TEST_CLI (set by meson). Each run is a child
 * process with its stdin, stdout and stderr on pipes, waited for with a
 * bound: a run that exceeds it is killed and the test fails. Children are
 * also killed at teardown and when the test process dies, so a failed
 * assertion leaves no pop blocked on a server that is going away.
 */
#define _DEFAULT_SOURCE

#include <criterion/criterion.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "cli_child.h"
#include "fixture.h"

/* Generous bounds: under valgrind or ASan everything is slower. */
#define RUN_MS 20000

static void teardown(void)
{
    cli_reap_all();
    fx_teardown();
}

TestSuite(cli, .init = fx_setup, .fini = teardown, .timeout = 90);

static cli_child *cli_run(const cli_opts *ro, const char *const *args)
{
    return cli_run_for(ro, args, RUN_MS);
}
/* Assert that `queue` holds exactly items[0..n-1] (lens[i] bytes each) in
 * arrival order: items[0] at the tail, where pops take from. */
static void assert_list(const char *queue, const char *const *items,
                        const size_t *lens, size_t n)
{
    redisReply *r = fx_cmd_ok("LRANGE %s 0 -1", queue);
    cr_assert_eq(r->type, REDIS_REPLY_ARRAY);
    cr_assert_eq(r->elements, n, "%s holds %zu, want %zu", queue, r->elements,
                 n);
    for (size_t i = 0; i < n; i++) {
        redisReply *e = r->element[n - 1 - i];
        size_t len = lens ? lens[i] : strlen(items[i]);
        cr_assert(e->type == REDIS_REPLY_STRING && (size_t)e->len == len &&
                      memcmp(e->str, items[i], len) == 0,
                  "message %zu is not '%s'", i, items[i]);
    }
}

/* ---- round trips ---------------------------------------------------------- */

Test(cli, push_args_then_pop_in_order)
{
    static const char *const abc[] = {"a", "b", "c"};
    cli_child *p = cli_run(NULL, ARGS("push", "--url", fx_url(), "q", "a", "b",
                                 "c"));
    assert_code(p, 0);
    cr_assert(strstr(p->err, "pushed 3\n") != NULL, "stderr: %s", p->err);
    cr_assert_eq(p->out_len, 0, "push wrote to stdout: %s", p->out);
    assert_list("q", abc, NULL, 3);

    p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "q", "-n", "3"));
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "a\nb\nc\n");
    cr_assert_eq(p->err_len, 0, "stderr: %s", p->err);
    cr_assert_eq(fx_llen("q"), 0);
}

Test(cli, push_stdin_lines_empty_crlf_binary_and_last_line)
{
    /* An empty line, a \r\n ending, NUL and 0xff bytes, a final line
     * without \n. */
    static const char in[] = "one\n\ntwo\r\nb\0\xff\nlast";
    static const char *const want[] = {"one", "", "two", "b\0\xff", "last"};
    static const size_t lens[] = {3, 0, 3, 3, 4};
    static const char out[] = "one\n\ntwo\nb\0\xff\nlast\n";
    cli_opts ro = {.in = in, .in_len = sizeof in - 1};

    cli_child *p = cli_run(&ro, ARGS("push", "--url", fx_url(), "q"));
    assert_code(p, 0);
    cr_assert(strstr(p->err, "pushed 5\n") != NULL, "stderr: %s", p->err);
    assert_list("q", want, lens, 5);

    p = cli_run(NULL, ARGS("pop", "-n", "5", "--url", fx_url(), "q"));
    assert_code(p, 0);
    cr_assert_eq(p->out_len, sizeof out - 1);
    cr_assert(memcmp(p->out, out, sizeof out - 1) == 0, "stdout differs");
    cr_assert_eq(fx_llen("q"), 0);
}

Test(cli, push_stdin_pipe_beyond_the_window_keeps_order)
{
    /* --max-pending 7: reading must pause on REDQ_EFULL and resume, many
     * times, without losing or reordering a line. */
    char *in = cli_seq_text("m", 0, 3000);
    cli_opts ro = {.in = in, .in_len = strlen(in)};
    cli_child *p = cli_run(&ro, ARGS("push", "--url", fx_url(), "--max-pending",
                                "7", "q"));
    free(in);
    assert_code(p, 0);
    cr_assert(strstr(p->err, "pushed 3000\n") != NULL, "stderr: %s", p->err);
    cli_assert_list_seq("q", "m", 0, 3000);
}

Test(cli, push_stdin_regular_file)
{
    /* epoll refuses regular files: the tool must read them another way. */
    char path[512];
    char *in = cli_seq_text("f", 0, 20000);
    FILE *f;

    snprintf(path, sizeof path, "%s/input.txt", fx_dir());
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(in, 1, strlen(in), f), strlen(in));
    cr_assert_eq(fclose(f), 0);
    free(in);

    cli_opts ro = {.in_path = path};
    cli_child *p = cli_run(&ro, ARGS("push", "--url", fx_url(), "q"));
    assert_code(p, 0);
    cr_assert(strstr(p->err, "pushed 20000\n") != NULL, "stderr: %s", p->err);
    cli_assert_list_seq("q", "f", 0, 20000);

    /* /dev/null: nothing to push, and no hang. */
    cli_opts null_in = {.in_path = "/dev/null"};
    p = cli_run(&null_in, ARGS("push", "--url", fx_url(), "empty"));
    assert_code(p, 0);
    cr_assert(strstr(p->err, "pushed 0\n") != NULL, "stderr: %s", p->err);
    cr_assert_eq(fx_llen("empty"), 0);
}

Test(cli, url_from_environment)
{
    cli_opts ro = {.url_env = fx_url()};
    cli_child *p = cli_run(&ro, ARGS("push", "q", "x"));
    assert_code(p, 0);
    cr_assert_eq(fx_llen("q"), 1);
    p = cli_run(&ro, ARGS("pop", "q", "-n", "1"));
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "x\n");
}

/* ---- pop: -n, priority, idle timeout, signals ----------------------------- */

Test(cli, pop_n_prints_exactly_n_and_leaves_the_rest)
{
    cli_lpush_seq("q", "m", 0, 10, 0);
    cli_child *p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "-n", "3", "q"));
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "m0\nm1\nm2\n");
    cr_assert_eq(fx_llen("q"), 7);
    cli_assert_list_seq("q", "m", 3, 10);
}

Test(cli, pop_n_never_takes_more_than_n_from_a_burst)
{
    /* The pop is parked before 5 messages land at once: one BLMPOP could
     * take all 5, and the 2 not printed would be lost. */
    cli_child *p = cli_spawn(NULL, ARGS("pop", "--url", fx_url(), "-n", "3", "q"));
    cli_wait_blocked(1);
    cli_lpush_seq("q", "m", 0, 5, 0);
    cli_finish(p, RUN_MS);
    cr_assert(!p->timed_out, "pop -n 3 did not exit; stderr: %s", p->err);
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "m0\nm1\nm2\n");
    cli_assert_list_seq("q", "m", 3, 5);
}

Test(cli, pop_n_larger_than_the_window)
{
    /* 5000 > the tool's 4096-message window: the first messages are acked
     * as they come, the last ones held; still exactly 5000 leave Redis. */
    char *want = cli_seq_text("m", 0, 5000);
    cli_lpush_seq("q", "m", 0, 6000, 0);
    cli_child *p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "-n", "5000", "q"));
    assert_code(p, 0);
    cr_assert_eq(p->out_len, strlen(want));
    cr_assert(strcmp(p->out, want) == 0, "stdout is not m0..m4999 in order");
    free(want);
    cr_assert_eq(fx_llen("q"), 1000);
    cli_assert_list_seq("q", "m", 5000, 6000);
}

Test(cli, pop_earlier_queues_take_priority)
{
    cli_lpush_seq("lo", "l", 0, 3, 0);
    cli_lpush_seq("hi", "h", 0, 2, 0);
    cli_child *p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "hi", "lo", "-n",
                                 "5"));
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "h0\nh1\nl0\nl1\nl2\n");

    /* The other way round: the order of the arguments decides, not names. */
    cli_lpush_seq("lo", "l", 0, 3, 0);
    cli_lpush_seq("hi", "h", 0, 2, 0);
    p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "lo", "hi", "-n", "5"));
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "l0\nl1\nl2\nh0\nh1\n");
}

Test(cli, pop_timeout_exits_when_idle)
{
    uint64_t slack_ms = fx_clock_slack_us() / 1000u + 1;
    cli_child *p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "--timeout", "0.3",
                                 "q"));
    assert_code(p, 0);
    cr_assert_eq(p->out_len, 0);
    cr_assert_geq(cli_elapsed_ms(p) + slack_ms, 300, "exited after %llu ms",
                  (unsigned long long)cli_elapsed_ms(p));
    cr_assert_lt(cli_elapsed_ms(p), 10000);

    /* Messages first, then idle: prints them all and exits. */
    cli_lpush_seq("q", "m", 0, 4, 0);
    p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "-t", "0.3", "q"));
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "m0\nm1\nm2\nm3\n");
    cr_assert_eq(fx_llen("q"), 0);
}

Test(cli, pop_sigterm_stops_gracefully)
{
    cli_child *p = cli_spawn(NULL, ARGS("pop", "--url", fx_url(), "q"));
    cli_wait_blocked(1);
    cli_lpush_seq("q", "m", 0, 3, 0);
    cr_assert(cli_wait_lines(p, 3, RUN_MS), "printed: %s", p->out);
    /* Parked again in a blocking pop: the stop must release it at once. */
    cli_wait_blocked(1);
    kill(p->pid, SIGTERM);
    cli_finish(p, 5000);
    cr_assert(!p->timed_out, "no exit within 5 s of SIGTERM");
    assert_code(p, 128 + SIGTERM);
    cr_assert_str_eq(p->out, "m0\nm1\nm2\n");
    cr_assert_eq(fx_llen("q"), 0);
}

/* ---- failures and their exit codes ---------------------------------------- */

Test(cli, bad_url_exits_3)
{
    cli_child *p = cli_run(NULL, ARGS("push", "--url", "foo://127.0.0.1", "q", "x"));
    assert_code(p, 3);
    cr_assert(strstr(p->err, "invalid URL") != NULL, "stderr: %s", p->err);
    cr_assert(strstr(p->err, "pushed") == NULL, "stderr: %s", p->err);

    p = cli_run(NULL, ARGS("pop", "--url", "redis://127.0.0.1:99999", "q"));
    assert_code(p, 3);
    cr_assert(strstr(p->err, "invalid URL") != NULL, "stderr: %s", p->err);
}

/* A port nobody listens on: exit 4 once --connect-timeout has passed. */
static void assert_unreachable(const char *cmd, const char *timeout,
                               uint64_t min_ms, uint64_t max_ms)
{
    char url[64], where[64];
    int port = fx_free_port();
    cli_child *p;

    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    snprintf(where, sizeof where, "cannot connect to 127.0.0.1:%d", port);
    if (timeout)
        p = cli_run(NULL, ARGS(cmd, "--url", url, "--connect-timeout",
                               timeout, "q", "x"));
    else
        p = cli_run(NULL, ARGS(cmd, "--url", url, "q", "x"));
    assert_code(p, 4);
    cr_assert(strstr(p->err, where) != NULL, "stderr: %s", p->err);
    cr_assert(fx_contains_nocase(p->err, "refused"), "stderr: %s", p->err);
    cr_assert(cli_elapsed_ms(p) + 50 >= min_ms && cli_elapsed_ms(p) <= max_ms,
              "%s gave up after %llu ms", cmd,
              (unsigned long long)cli_elapsed_ms(p));
}

Test(cli, unreachable_server_exits_4_in_bounded_time)
{
    assert_unreachable("push", "1", 1000, 8000);
    assert_unreachable("pop", "1", 1000, 8000);
}

Test(cli, unreachable_server_default_connect_timeout_is_5_s)
{
    assert_unreachable("push", NULL, 5000, 15000);
}

Test(cli, wrong_password_exits_5, .init = fx_setup_noserver)
{
    static const char *const pass[] = {"--requirepass", "secret", NULL};
    char good[96], bad[96];
    cli_child *p;

    fx_server_start(pass);
    snprintf(good, sizeof good, "redis://:secret@127.0.0.1:%d", fx_port());
    snprintf(bad, sizeof bad, "redis://:wrong@127.0.0.1:%d", fx_port());

    p = cli_run(NULL, ARGS("push", "--url", bad, "q", "x"));
    assert_code(p, 5);
    cr_assert(strstr(p->err, "authentication failed") != NULL, "stderr: %s",
              p->err);
    cr_assert(strstr(p->err, "secret") == NULL && strstr(p->err, "wrong@") == NULL,
              "a password leaked to stderr: %s", p->err);
    cr_assert_lt(cli_elapsed_ms(p), 4000, "gave up only after %llu ms",
                 (unsigned long long)cli_elapsed_ms(p));

    p = cli_run(NULL, ARGS("pop", "--url", bad, "q"));
    assert_code(p, 5);

    /* No password at all: NOAUTH, the same failure. */
    p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "-t", "1", "q"));
    assert_code(p, 5);

    /* The right one works. */
    p = cli_run(NULL, ARGS("push", "--url", good, "q", "x"));
    assert_code(p, 0);
    cr_assert_eq(fx_llen("q"), 1);
}

Test(cli, wrongtype_exits_1)
{
    fx_cmd_ok("SET s text");
    cli_child *p = cli_run(NULL, ARGS("push", "--url", fx_url(), "s", "x", "y"));
    assert_code(p, 1);
    cr_assert(strstr(p->err, "WRONGTYPE") != NULL, "stderr: %s", p->err);
    cr_assert(strstr(p->err, "pushed 0\n") != NULL, "stderr: %s", p->err);

    /* Without --timeout: the error must end the run by itself. */
    p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "s"));
    assert_code(p, 1);
    cr_assert(strstr(p->err, "not a list") != NULL, "stderr: %s", p->err);
    cr_assert_str_eq(fx_cmd_ok("GET s")->str, "text");
}

/* ---- usage ------------------------------------------------------------------ */

Test(cli, help_exits_0_on_stdout)
{
    cli_child *p = cli_run(NULL, ARGS("--help"));
    assert_code(p, 0);
    cr_assert(strstr(p->out, "usage: redq") != NULL, "stdout: %s", p->out);
    cr_assert(strstr(p->out, "exit status") != NULL, "stdout: %s", p->out);
    cr_assert_eq(p->err_len, 0);

    p = cli_run(NULL, ARGS("push", "--help"));
    assert_code(p, 0);
    cr_assert(strstr(p->out, "usage: redq push") != NULL, "stdout: %s", p->out);

    p = cli_run(NULL, ARGS("pop", "-h"));
    assert_code(p, 0);
    cr_assert(strstr(p->out, "usage: redq pop") != NULL, "stdout: %s", p->out);
    cr_assert(strstr(p->out, "--timeout") != NULL, "stdout: %s", p->out);
}

Test(cli, usage_errors_exit_2_on_stderr)
{
    const char *const *const cases[] = {
        ARGS("pop", "--bogus", "q"),
        ARGS("push", "-x", "q", "m"),
        ARGS("frob"),
        ARGS("--frob"),
        ARGS("pop"),
        ARGS("push"),
        ARGS("pop", "-n", "many", "q"),
        ARGS("pop", "q", "--timeout", "-1"),
        ARGS("pop", "q", "-n"),
        ARGS("push", "--delivery-timeout", "soon", "q", "m"),
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        cli_child *p = cli_run(NULL, cases[i]);
        cr_assert_eq(p->code, 2, "case %zu (%s ...): exit %d; stderr: %s", i,
                     cases[i][0], p->code, p->err);
        cr_assert(strstr(p->err, "usage: redq") != NULL, "case %zu: %s", i,
                  p->err);
        cr_assert_eq(p->out_len, 0, "case %zu wrote to stdout", i);
    }
    /* Nothing reached the server. */
    cr_assert_eq(fx_llen("q"), 0);
}

/* push --replicas N (issue 10): with no replica to hold it, a message is
 * stored on the master but not confirmed; the tool says so and exits 1. */
Test(cli, push_replicas_not_replicated_fails_but_is_stored)
{
    cli_child *p = cli_run(NULL, ARGS("push", "--url", fx_url(), "--replicas",
                                      "1", "--replica-timeout-ms", "100", "q",
                                      "a"));
    assert_code(p, 1);
    cr_assert(strstr(p->err, "replica") != NULL, "stderr: %s", p->err);
    cr_assert_eq(fx_llen("q"), 1, "not stored on the master");
    p = cli_run(NULL, ARGS("push", "--url", fx_url(), "--replicas", "0", "q",
                           "b"));
    assert_code(p, 0);
    p = cli_run(NULL, ARGS("push", "--url", fx_url(), "--replicas", "65", "q",
                           "c"));
    assert_code(p, 2);
}
