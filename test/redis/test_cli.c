/*
 * The redq command-line tool (tools/redq.c) against a real redis-server:
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
#define _DEFAULT_SOURCE /* prctl's PR_SET_PDEATHSIG needs nothing more */

#include <criterion/criterion.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

#include "fixture.h"

/* Generous bounds: under valgrind or ASan everything is slower. */
#define RUN_MS 20000

typedef struct proc {
    pid_t pid;      /* 0 once reaped */
    int in_fd, out_fd, err_fd; /* -1 once closed */
    const char *in;
    size_t in_len, in_off;
    char *out, *err;
    size_t out_len, err_len, out_cap, err_cap;
    int code;       /* exit status, or -signal */
    bool timed_out; /* killed for exceeding its bound */
    uint64_t start_us, end_us;
} proc;

typedef struct run_opts {
    const char *in;      /* stdin bytes (NULL: empty) */
    size_t in_len;
    const char *in_path; /* or a file to read stdin from */
    const char *url_env; /* REDQ_URL for the child (NULL: unset) */
} run_opts;

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

#define MAX_PROCS 32 /* per test; freed at teardown */
static proc *g_procs[MAX_PROCS];

static void kill_all(void)
{
    for (size_t i = 0; i < MAX_PROCS; i++) {
        proc *p = g_procs[i];
        if (p == NULL)
            continue;
        if (p->pid > 0) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, NULL, 0);
        }
        if (p->in_fd >= 0)
            close(p->in_fd);
        if (p->out_fd >= 0)
            close(p->out_fd);
        if (p->err_fd >= 0)
            close(p->err_fd);
        free(p->out);
        free(p->err);
        free(p);
        g_procs[i] = NULL;
    }
}

static void teardown(void)
{
    kill_all();
    fx_teardown();
}

TestSuite(cli, .init = fx_setup, .fini = teardown, .timeout = 90);

static const char *cli_path(void)
{
    const char *bin = getenv("REDQ_TEST_CLI");
    cr_assert(bin && *bin, "REDQ_TEST_CLI is not set (see test/redis/meson.build)");
    cr_assert(access(bin, X_OK) == 0, "%s: %s", bin, strerror(errno));
    return bin;
}

static void append(char **buf, size_t *len, size_t *cap, const char *data,
                   size_t n)
{
    if (*len + n + 1 > *cap) {
        size_t ncap = *cap ? *cap : 4096;
        while (ncap < *len + n + 1)
            ncap *= 2;
        *buf = realloc(*buf, ncap);
        cr_assert_not_null(*buf);
        *cap = ncap;
    }
    memcpy(*buf + *len, data, n);
    *len += n;
    (*buf)[*len] = '\0'; /* so that text checks can use strstr */
}

static void close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

static proc *cli_spawn(const run_opts *ro, const char *const *args)
{
    static const run_opts none;
    const char *bin = cli_path();
    const char *argv[64];
    int in[2], out[2], err[2];
    size_t n = 0, slot;
    proc *p;

    if (ro == NULL)
        ro = &none;
    for (slot = 0; slot < MAX_PROCS && g_procs[slot] != NULL; slot++)
        ;
    cr_assert_lt(slot, MAX_PROCS, "too many children");
    argv[n++] = bin;
    for (; args[n - 1] != NULL; n++) {
        cr_assert_lt(n, 63);
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;

    p = calloc(1, sizeof *p);
    cr_assert_not_null(p);
    p->in_fd = p->out_fd = p->err_fd = -1;
    g_procs[slot] = p;
    cr_assert(pipe(in) == 0 && pipe(out) == 0 && pipe(err) == 0, "pipe: %s",
              strerror(errno));

    pid_t parent = getpid();
    p->start_us = fx_now_us();
    p->pid = fork();
    cr_assert(p->pid >= 0, "fork: %s", strerror(errno));
    if (p->pid == 0) {
        sigset_t none_blocked;
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        if (getppid() != parent)
            _exit(126);
        if (ro->in_path != NULL) {
            int fd = open(ro->in_path, O_RDONLY);
            if (fd < 0)
                _exit(125);
            dup2(fd, STDIN_FILENO);
        } else {
            dup2(in[0], STDIN_FILENO);
        }
        dup2(out[1], STDOUT_FILENO);
        dup2(err[1], STDERR_FILENO);
        /* Everything else (the fixture's control connection, the pipes)
         * stays with the test. */
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        /* The tool must ignore SIGPIPE itself; and it gets a clean mask. */
        signal(SIGPIPE, SIG_DFL);
        sigemptyset(&none_blocked);
        sigprocmask(SIG_SETMASK, &none_blocked, NULL);
        if (ro->url_env != NULL)
            setenv("REDQ_URL", ro->url_env, 1);
        else
            unsetenv("REDQ_URL");
        union {
            const char **c;
            char *const *v;
        } av = {.c = argv};
        execv(bin, av.v);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    close(err[1]);
    p->in_fd = in[1];
    p->out_fd = out[0];
    p->err_fd = err[0];
    p->in = ro->in;
    p->in_len = ro->in ? ro->in_len : 0;
    fcntl(p->in_fd, F_SETFL, fcntl(p->in_fd, F_GETFL) | O_NONBLOCK);
    if (p->in_len == 0)
        close_fd(&p->in_fd);
    return p;
}

/* One round: write stdin, read stdout/stderr, for up to `ms`. */
static void proc_pump(proc *p, int ms)
{
    struct pollfd pf[3];
    nfds_t n = 0;
    char buf[65536];

    if (p->in_fd >= 0)
        pf[n++] = (struct pollfd){.fd = p->in_fd, .events = POLLOUT};
    if (p->out_fd >= 0)
        pf[n++] = (struct pollfd){.fd = p->out_fd, .events = POLLIN};
    if (p->err_fd >= 0)
        pf[n++] = (struct pollfd){.fd = p->err_fd, .events = POLLIN};
    if (n == 0)
        return;
    if (poll(pf, n, ms) <= 0)
        return;
    for (nfds_t i = 0; i < n; i++) {
        if (pf[i].revents == 0)
            continue;
        if (pf[i].fd == p->in_fd) {
            ssize_t w = write(p->in_fd, p->in + p->in_off, p->in_len - p->in_off);
            if (w > 0)
                p->in_off += (size_t)w;
            if ((w < 0 && errno != EAGAIN && errno != EINTR) ||
                p->in_off == p->in_len)
                close_fd(&p->in_fd); /* EOF for the child */
        } else {
            int *fd = pf[i].fd == p->out_fd ? &p->out_fd : &p->err_fd;
            ssize_t r = read(*fd, buf, sizeof buf);
            if (r > 0 && fd == &p->out_fd)
                append(&p->out, &p->out_len, &p->out_cap, buf, (size_t)r);
            else if (r > 0)
                append(&p->err, &p->err_len, &p->err_cap, buf, (size_t)r);
            else if (r == 0 || (errno != EINTR && errno != EAGAIN))
                close_fd(fd);
        }
    }
}

static int remaining_ms(uint64_t deadline_us)
{
    uint64_t now = fx_now_us();
    return now >= deadline_us ? 0 : (int)((deadline_us - now) / 1000) + 1;
}

/* Wait until stdout holds at least `lines` newlines. */
static bool proc_wait_lines(proc *p, size_t lines, int ms)
{
    uint64_t deadline = fx_now_us() + (uint64_t)ms * 1000u;

    for (;;) {
        size_t nl = 0;
        for (size_t i = 0; i < p->out_len; i++)
            nl += p->out[i] == '\n';
        if (nl >= lines)
            return true;
        if (remaining_ms(deadline) == 0 || p->out_fd < 0)
            return false;
        proc_pump(p, remaining_ms(deadline));
    }
}

/* Collect output until the child exits; kill it after `ms`. */
static void proc_finish(proc *p, int ms)
{
    uint64_t deadline = fx_now_us() + (uint64_t)ms * 1000u;
    int st;

    while ((p->out_fd >= 0 || p->err_fd >= 0) && remaining_ms(deadline) > 0)
        proc_pump(p, remaining_ms(deadline) < 50 ? remaining_ms(deadline) : 50);
    for (;;) {
        pid_t r = waitpid(p->pid, &st, WNOHANG);
        if (r == p->pid)
            break;
        if (remaining_ms(deadline) == 0) {
            kill(p->pid, SIGKILL);
            waitpid(p->pid, &st, 0);
            p->timed_out = true;
            break;
        }
        struct timespec nap = {0, 2 * 1000000L};
        nanosleep(&nap, NULL); /* polling a pid: no event to wait on */
    }
    p->end_us = fx_now_us();
    p->pid = 0;
    p->code = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    close_fd(&p->in_fd);
    /* Output a grandchild might still hold open is not ours to wait for. */
    close_fd(&p->out_fd);
    close_fd(&p->err_fd);
    if (p->out == NULL)
        append(&p->out, &p->out_len, &p->out_cap, "", 0);
    if (p->err == NULL)
        append(&p->err, &p->err_len, &p->err_cap, "", 0);
}

static proc *cli_run(const run_opts *ro, const char *const *args)
{
    proc *p = cli_spawn(ro, args);
    proc_finish(p, RUN_MS);
    cr_assert(!p->timed_out, "redq %s did not exit within %d ms; stderr: %s",
              args[0], RUN_MS, p->err);
    return p;
}

static uint64_t elapsed_ms(const proc *p)
{
    return (p->end_us - p->start_us) / 1000u;
}

#define assert_code(p, want)                                                   \
    cr_assert_eq((p)->code, (want), "exit %d, want %d; stderr: %s",           \
                 (p)->code, (want), (p)->err)

static int blocked_clients(void)
{
    redisReply *r = fx_cmd_ok("INFO clients");
    const char *s = strstr(r->str, "blocked_clients:");
    cr_assert_not_null(s);
    return atoi(s + 16);
}

/* Wait for the tool's pop to be parked in the server: polling is the only
 * way to see it from outside. */
static void wait_blocked(int n)
{
    uint64_t deadline = fx_now_us() + 10000000u;
    while (blocked_clients() < n) {
        cr_assert(fx_now_us() < deadline, "no client blocked within 10 s");
        struct timespec nap = {0, 5 * 1000000L};
        nanosleep(&nap, NULL);
    }
}

/* LPUSH q prefix0 prefix1 ... in one command (so prefix0 pops first). */
static void lpush_seq(const char *queue, const char *prefix, int from, int to)
{
    int n = to - from;
    const char **argv = calloc((size_t)n + 2, sizeof *argv);
    char **bufs = calloc((size_t)n, sizeof *bufs);
    cr_assert(argv && bufs);
    argv[0] = "LPUSH";
    argv[1] = queue;
    for (int i = 0; i < n; i++) {
        bufs[i] = malloc(32);
        cr_assert_not_null(bufs[i]);
        snprintf(bufs[i], 32, "%s%d", prefix, from + i);
        argv[i + 2] = bufs[i];
    }
    redisReply *r = redisCommandArgv(fx_redis(), n + 2, argv, NULL);
    cr_assert(r && r->type == REDIS_REPLY_INTEGER, "LPUSH failed");
    freeReplyObject(r);
    for (int i = 0; i < n; i++)
        free(bufs[i]);
    free(bufs);
    free(argv);
}

/* "prefixFROM\n...prefix(TO-1)\n" */
static char *seq_lines(const char *prefix, int from, int to)
{
    char *buf = NULL;
    size_t len = 0, cap = 0;
    char line[48];
    for (int i = from; i < to; i++) {
        int n = snprintf(line, sizeof line, "%s%d\n", prefix, i);
        append(&buf, &len, &cap, line, (size_t)n);
    }
    if (buf == NULL)
        append(&buf, &len, &cap, "", 0);
    return buf;
}

/* Assert that the list `queue` holds exactly prefixFROM..prefix(TO-1) in
 * arrival order (the first at the tail, where pops take from). */
static void assert_list_seq(const char *queue, const char *prefix, int from,
                            int to)
{
    redisReply *r = fx_cmd_ok("LRANGE %s 0 -1", queue);
    char want[48];
    cr_assert_eq(r->type, REDIS_REPLY_ARRAY);
    cr_assert_eq(r->elements, (size_t)(to - from), "%s holds %zu, want %d",
                 queue, r->elements, to - from);
    for (int i = from; i < to; i++) {
        redisReply *e = r->element[(size_t)(to - 1 - i)];
        snprintf(want, sizeof want, "%s%d", prefix, i);
        cr_assert_str_eq(e->str, want, "position of %s", want);
    }
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
    proc *p = cli_run(NULL, ARGS("push", "--url", fx_url(), "q", "a", "b",
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
    run_opts ro = {.in = in, .in_len = sizeof in - 1};

    proc *p = cli_run(&ro, ARGS("push", "--url", fx_url(), "q"));
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
    char *in = seq_lines("m", 0, 3000);
    run_opts ro = {.in = in, .in_len = strlen(in)};
    proc *p = cli_run(&ro, ARGS("push", "--url", fx_url(), "--max-pending",
                                "7", "q"));
    free(in);
    assert_code(p, 0);
    cr_assert(strstr(p->err, "pushed 3000\n") != NULL, "stderr: %s", p->err);
    assert_list_seq("q", "m", 0, 3000);
}

Test(cli, push_stdin_regular_file)
{
    /* epoll refuses regular files: the tool must read them another way. */
    char path[512];
    char *in = seq_lines("f", 0, 20000);
    FILE *f;

    snprintf(path, sizeof path, "%s/input.txt", fx_dir());
    f = fopen(path, "w");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(in, 1, strlen(in), f), strlen(in));
    cr_assert_eq(fclose(f), 0);
    free(in);

    run_opts ro = {.in_path = path};
    proc *p = cli_run(&ro, ARGS("push", "--url", fx_url(), "q"));
    assert_code(p, 0);
    cr_assert(strstr(p->err, "pushed 20000\n") != NULL, "stderr: %s", p->err);
    assert_list_seq("q", "f", 0, 20000);

    /* /dev/null: nothing to push, and no hang. */
    run_opts null_in = {.in_path = "/dev/null"};
    p = cli_run(&null_in, ARGS("push", "--url", fx_url(), "empty"));
    assert_code(p, 0);
    cr_assert(strstr(p->err, "pushed 0\n") != NULL, "stderr: %s", p->err);
    cr_assert_eq(fx_llen("empty"), 0);
}

Test(cli, url_from_environment)
{
    run_opts ro = {.url_env = fx_url()};
    proc *p = cli_run(&ro, ARGS("push", "q", "x"));
    assert_code(p, 0);
    cr_assert_eq(fx_llen("q"), 1);
    p = cli_run(&ro, ARGS("pop", "q", "-n", "1"));
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "x\n");
}

/* ---- pop: -n, priority, idle timeout, signals ----------------------------- */

Test(cli, pop_n_prints_exactly_n_and_leaves_the_rest)
{
    lpush_seq("q", "m", 0, 10);
    proc *p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "-n", "3", "q"));
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "m0\nm1\nm2\n");
    cr_assert_eq(fx_llen("q"), 7);
    assert_list_seq("q", "m", 3, 10);
}

Test(cli, pop_n_never_takes_more_than_n_from_a_burst)
{
    /* The pop is parked before 5 messages land at once: one BLMPOP could
     * take all 5, and the 2 not printed would be lost. */
    proc *p = cli_spawn(NULL, ARGS("pop", "--url", fx_url(), "-n", "3", "q"));
    wait_blocked(1);
    lpush_seq("q", "m", 0, 5);
    proc_finish(p, RUN_MS);
    cr_assert(!p->timed_out, "pop -n 3 did not exit; stderr: %s", p->err);
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "m0\nm1\nm2\n");
    assert_list_seq("q", "m", 3, 5);
}

Test(cli, pop_n_larger_than_the_window)
{
    /* 5000 > the tool's 4096-message window: the first messages are acked
     * as they come, the last ones held; still exactly 5000 leave Redis. */
    char *want = seq_lines("m", 0, 5000);
    lpush_seq("q", "m", 0, 6000);
    proc *p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "-n", "5000", "q"));
    assert_code(p, 0);
    cr_assert_eq(p->out_len, strlen(want));
    cr_assert(strcmp(p->out, want) == 0, "stdout is not m0..m4999 in order");
    free(want);
    cr_assert_eq(fx_llen("q"), 1000);
    assert_list_seq("q", "m", 5000, 6000);
}

Test(cli, pop_earlier_queues_take_priority)
{
    lpush_seq("lo", "l", 0, 3);
    lpush_seq("hi", "h", 0, 2);
    proc *p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "hi", "lo", "-n",
                                 "5"));
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "h0\nh1\nl0\nl1\nl2\n");

    /* The other way round: the order of the arguments decides, not names. */
    lpush_seq("lo", "l", 0, 3);
    lpush_seq("hi", "h", 0, 2);
    p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "lo", "hi", "-n", "5"));
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "l0\nl1\nl2\nh0\nh1\n");
}

Test(cli, pop_timeout_exits_when_idle)
{
    uint64_t slack_ms = fx_clock_slack_us() / 1000u + 1;
    proc *p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "--timeout", "0.3",
                                 "q"));
    assert_code(p, 0);
    cr_assert_eq(p->out_len, 0);
    cr_assert_geq(elapsed_ms(p) + slack_ms, 300, "exited after %llu ms",
                  (unsigned long long)elapsed_ms(p));
    cr_assert_lt(elapsed_ms(p), 10000);

    /* Messages first, then idle: prints them all and exits. */
    lpush_seq("q", "m", 0, 4);
    p = cli_run(NULL, ARGS("pop", "--url", fx_url(), "-t", "0.3", "q"));
    assert_code(p, 0);
    cr_assert_str_eq(p->out, "m0\nm1\nm2\nm3\n");
    cr_assert_eq(fx_llen("q"), 0);
}

Test(cli, pop_sigterm_stops_gracefully)
{
    proc *p = cli_spawn(NULL, ARGS("pop", "--url", fx_url(), "q"));
    wait_blocked(1);
    lpush_seq("q", "m", 0, 3);
    cr_assert(proc_wait_lines(p, 3, RUN_MS), "printed: %s", p->out);
    /* Parked again in a blocking pop: the stop must release it at once. */
    wait_blocked(1);
    kill(p->pid, SIGTERM);
    proc_finish(p, 5000);
    cr_assert(!p->timed_out, "no exit within 5 s of SIGTERM");
    assert_code(p, 128 + SIGTERM);
    cr_assert_str_eq(p->out, "m0\nm1\nm2\n");
    cr_assert_eq(fx_llen("q"), 0);
}

/* ---- failures and their exit codes ---------------------------------------- */

Test(cli, bad_url_exits_3)
{
    proc *p = cli_run(NULL, ARGS("push", "--url", "foo://127.0.0.1", "q", "x"));
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
    proc *p;

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
    cr_assert(elapsed_ms(p) + 50 >= min_ms && elapsed_ms(p) <= max_ms,
              "%s gave up after %llu ms", cmd,
              (unsigned long long)elapsed_ms(p));
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
    proc *p;

    fx_server_start(pass);
    snprintf(good, sizeof good, "redis://:secret@127.0.0.1:%d", fx_port());
    snprintf(bad, sizeof bad, "redis://:wrong@127.0.0.1:%d", fx_port());

    p = cli_run(NULL, ARGS("push", "--url", bad, "q", "x"));
    assert_code(p, 5);
    cr_assert(strstr(p->err, "authentication failed") != NULL, "stderr: %s",
              p->err);
    cr_assert(strstr(p->err, "secret") == NULL && strstr(p->err, "wrong@") == NULL,
              "a password leaked to stderr: %s", p->err);
    cr_assert_lt(elapsed_ms(p), 4000, "gave up only after %llu ms",
                 (unsigned long long)elapsed_ms(p));

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
    proc *p = cli_run(NULL, ARGS("push", "--url", fx_url(), "s", "x", "y"));
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
    proc *p = cli_run(NULL, ARGS("--help"));
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
        proc *p = cli_run(NULL, cases[i]);
        cr_assert_eq(p->code, 2, "case %zu (%s ...): exit %d; stderr: %s", i,
                     cases[i][0], p->code, p->err);
        cr_assert(strstr(p->err, "usage: redq") != NULL, "case %zu: %s", i,
                  p->err);
        cr_assert_eq(p->out_len, 0, "case %zu wrote to stdout", i);
    }
    /* Nothing reached the server. */
    cr_assert_eq(fx_llen("q"), 0);
}
