/*
 * See cli_child.h.
 */
#define _DEFAULT_SOURCE /* prctl's PR_SET_PDEATHSIG needs nothing more */

#include "cli_child.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

static cli_child *g_children[CLI_MAX_CHILDREN];

void cli_reap_all(void)
{
    for (size_t i = 0; i < CLI_MAX_CHILDREN; i++) {
        cli_child *c = g_children[i];
        if (c == NULL)
            continue;
        if (c->pid > 0) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, NULL, 0);
        }
        if (c->in_fd >= 0)
            close(c->in_fd);
        if (c->out_fd >= 0)
            close(c->out_fd);
        if (c->err_fd >= 0)
            close(c->err_fd);
        free(c->out);
        free(c->err);
        free(c);
        g_children[i] = NULL;
    }
}

const char *cli_path(void)
{
    const char *bin = getenv("REDQ_TEST_CLI");
    cr_assert(bin && *bin, "REDQ_TEST_CLI is not set (see test/redis/meson.build)");
    cr_assert(access(bin, X_OK) == 0, "%s: %s", bin, strerror(errno));
    return bin;
}

void cli_append(char **buf, size_t *len, size_t *cap, const char *data,
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

void cli_close_fd(int *fd)
{
    if (*fd >= 0) {
        close(*fd);
        *fd = -1;
    }
}

cli_child *cli_spawn(const cli_opts *ro, const char *const *args)
{
    static const cli_opts none;
    const char *bin = cli_path();
    const char *argv[64];
    int in[2], out[2], err[2];
    size_t n = 0, slot;
    cli_child *c;

    if (ro == NULL)
        ro = &none;
    for (slot = 0; slot < CLI_MAX_CHILDREN && g_children[slot] != NULL; slot++)
        ;
    cr_assert_lt(slot, CLI_MAX_CHILDREN, "too many children");
    argv[n++] = bin;
    for (; args[n - 1] != NULL; n++) {
        cr_assert_lt(n, 63);
        argv[n] = args[n - 1];
    }
    argv[n] = NULL;

    c = calloc(1, sizeof *c);
    cr_assert_not_null(c);
    c->in_fd = c->out_fd = c->err_fd = -1;
    g_children[slot] = c;
    cr_assert(pipe(in) == 0 && pipe(out) == 0 && pipe(err) == 0, "pipe: %s",
              strerror(errno));

    pid_t parent = getpid();
    c->start_us = fx_now_us();
    c->pid = fork();
    cr_assert(c->pid >= 0, "fork: %s", strerror(errno));
    if (c->pid == 0) {
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
    c->in_fd = in[1];
    c->out_fd = out[0];
    c->err_fd = err[0];
    c->in = ro->in;
    c->in_len = ro->in ? ro->in_len : 0;
    fcntl(c->in_fd, F_SETFL, fcntl(c->in_fd, F_GETFL) | O_NONBLOCK);
    if (c->in_len == 0)
        cli_close_fd(&c->in_fd);
    if (ro->broken_stdout)
        cli_close_fd(&c->out_fd);
    return c;
}

void cli_pump(cli_child *c, int ms, bool read_out)
{
    struct pollfd pf[3];
    nfds_t n = 0;
    char buf[65536];

    if (c->in_fd >= 0)
        pf[n++] = (struct pollfd){.fd = c->in_fd, .events = POLLOUT};
    if (read_out && c->out_fd >= 0)
        pf[n++] = (struct pollfd){.fd = c->out_fd, .events = POLLIN};
    if (c->err_fd >= 0)
        pf[n++] = (struct pollfd){.fd = c->err_fd, .events = POLLIN};
    if (n == 0 || poll(pf, n, ms) <= 0)
        return;
    for (nfds_t i = 0; i < n; i++) {
        if (pf[i].revents == 0)
            continue;
        if (pf[i].fd == c->in_fd) {
            ssize_t w = write(c->in_fd, c->in + c->in_off, c->in_len - c->in_off);
            if (w > 0)
                c->in_off += (size_t)w;
            if ((w < 0 && errno != EAGAIN && errno != EINTR) ||
                c->in_off == c->in_len)
                cli_close_fd(&c->in_fd); /* EOF for the child */
        } else {
            bool is_out = pf[i].fd == c->out_fd;
            int *fd = is_out ? &c->out_fd : &c->err_fd;
            ssize_t r = read(*fd, buf, sizeof buf);
            if (r > 0 && is_out)
                cli_append(&c->out, &c->out_len, &c->out_cap, buf, (size_t)r);
            else if (r > 0)
                cli_append(&c->err, &c->err_len, &c->err_cap, buf, (size_t)r);
            else if (r == 0 || (errno != EINTR && errno != EAGAIN))
                cli_close_fd(fd);
        }
    }
}

int cli_ms_left(uint64_t deadline_us)
{
    uint64_t now = fx_now_us();
    return now >= deadline_us ? 0 : (int)((deadline_us - now) / 1000) + 1;
}

size_t cli_count_lines(const cli_child *c)
{
    size_t nl = 0;
    for (size_t i = 0; i < c->out_len; i++)
        nl += c->out[i] == '\n';
    return nl;
}

bool cli_wait_lines(cli_child *c, size_t lines, int ms)
{
    uint64_t deadline = fx_now_us() + (uint64_t)ms * 1000u;
    while (cli_count_lines(c) < lines) {
        if (cli_ms_left(deadline) == 0 || c->out_fd < 0)
            return false;
        cli_pump(c, cli_ms_left(deadline), true);
    }
    return true;
}

void cli_finish(cli_child *c, int ms)
{
    uint64_t deadline = fx_now_us() + (uint64_t)ms * 1000u;
    int st = 0;

    while ((c->out_fd >= 0 || c->err_fd >= 0) && cli_ms_left(deadline) > 0)
        cli_pump(c, cli_ms_left(deadline) < 50 ? cli_ms_left(deadline) : 50,
                 true);
    for (;;) {
        pid_t r = waitpid(c->pid, &st, WNOHANG);
        if (r == c->pid)
            break;
        if (cli_ms_left(deadline) == 0) {
            kill(c->pid, SIGKILL);
            waitpid(c->pid, &st, 0);
            c->timed_out = true;
            break;
        }
        struct timespec nap = {0, 2 * 1000000L};
        nanosleep(&nap, NULL); /* polling a pid: no event to wait on */
    }
    c->end_us = fx_now_us();
    c->pid = 0;
    c->code = WIFEXITED(st) ? WEXITSTATUS(st) : -WTERMSIG(st);
    cli_close_fd(&c->in_fd);
    /* Output a grandchild might still hold open is not ours to wait for. */
    cli_close_fd(&c->out_fd);
    cli_close_fd(&c->err_fd);
    if (c->out == NULL)
        cli_append(&c->out, &c->out_len, &c->out_cap, "", 0);
    if (c->err == NULL)
        cli_append(&c->err, &c->err_len, &c->err_cap, "", 0);
}

cli_child *cli_run_for(const cli_opts *ro, const char *const *args, int ms)
{
    cli_child *c = cli_spawn(ro, args);
    cli_finish(c, ms);
    cr_assert(!c->timed_out, "redq %s did not exit within %d ms; stderr: %s",
              args[0], ms, c->err);
    return c;
}

uint64_t cli_elapsed_ms(const cli_child *c)
{
    return (c->end_us - c->start_us) / 1000u;
}

/* ---- server-side helpers ------------------------------------------------- */

void cli_nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

int cli_blocked_clients(void)
{
    const char *s = strstr(fx_cmd_ok("INFO clients")->str, "blocked_clients:");
    cr_assert_not_null(s);
    return atoi(s + 16);
}

/* The tool's pop parked in the server: polling is the only way to see it
 * from outside. */
void cli_wait_blocked(int n)
{
    uint64_t deadline = fx_now_us() + 10000000u;
    while (cli_blocked_clients() < n) {
        cr_assert(fx_now_us() < deadline, "no client blocked within 10 s");
        cli_nap_ms(5);
    }
}

void cli_lpush_seq(const char *queue, const char *prefix, int from, int to,
                   int pad)
{
    while (from < to) {
        int n = to - from < 500 ? to - from : 500;
        const char **argv = calloc((size_t)n + 2, sizeof *argv);
        char **bufs = calloc((size_t)n, sizeof *bufs);
        cr_assert(argv && bufs);
        argv[0] = "LPUSH";
        argv[1] = queue;
        for (int i = 0; i < n; i++) {
            bufs[i] = malloc(48 + (size_t)pad);
            cr_assert_not_null(bufs[i]);
            int k = snprintf(bufs[i], 48, "%s%d", prefix, from + i);
            if (pad) {
                bufs[i][k] = '-';
                memset(bufs[i] + k + 1, 'x', (size_t)pad);
                bufs[i][k + 1 + pad] = '\0';
            }
            argv[i + 2] = bufs[i];
        }
        redisReply *r = redisCommandArgv(fx_redis(), n + 2, argv, NULL);
        cr_assert(r && r->type == REDIS_REPLY_INTEGER, "LPUSH failed");
        freeReplyObject(r);
        for (int i = 0; i < n; i++)
            free(bufs[i]);
        free(bufs);
        free(argv);
        from += n;
    }
}

char *cli_seq_text(const char *prefix, int from, int to)
{
    char *buf = NULL, line[48];
    size_t len = 0, cap = 0;
    for (int i = from; i < to; i++) {
        int n = snprintf(line, sizeof line, "%s%d\n", prefix, i);
        cli_append(&buf, &len, &cap, line, (size_t)n);
    }
    if (buf == NULL)
        cli_append(&buf, &len, &cap, "", 0);
    return buf;
}

void cli_assert_list_seq(const char *queue, const char *prefix, int from,
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
