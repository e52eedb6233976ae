/* mkdtemp, nanosleep and syscall() beyond strict POSIX: before any include. */
#define _DEFAULT_SOURCE

#include "fixture.h"
#include "redq_private.h" /* redq__key: lib/keys.c is compiled in */

#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#include <sys/syscall.h>
#endif

#define FX_MAX_EXTRA 16
#define FX_MAX_TRACKERS 8
#define FX_START_ATTEMPTS 5
#define FX_START_TIMEOUT_MS 5000
#define FX_STOP_TIMEOUT_MS 5000
#define FX_CLOSE_TIMEOUT_MS 5000

static struct {
    struct event_base *base;
    pid_t pid; /* 0: no server running */
    int port;
    char dir[128]; /* "" until the first server start */
    char sock[192];
    char log[192];
    char url[64];
    char *extra[FX_MAX_EXTRA + 1];
    const char *password; /* points into extra[] */
    redisContext *ctl;
    void **replies;
    size_t nreplies, capreplies;
    fx_tracker *trackers[FX_MAX_TRACKERS];
    size_t ntrackers;
} fx;

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */
/* ------------------------------------------------------------------------ */

uint64_t fx_now_us(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

uint64_t fx_clock_slack_us(void)
{
    uint64_t slack = 5000;
#ifdef CLOCK_MONOTONIC_COARSE
    struct timespec res;
    if (clock_getres(CLOCK_MONOTONIC_COARSE, &res) == 0)
        slack += (uint64_t)res.tv_sec * 1000000u + (uint64_t)res.tv_nsec / 1000u;
#endif
    return slack;
}

static void nap_ms(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

bool fx_contains_nocase(const char *hay, const char *needle)
{
    if (!hay || !needle)
        return false;
    size_t n = strlen(needle);
    for (; *hay; hay++) {
        size_t i = 0;
        while (i < n && hay[i] &&
               tolower((unsigned char)hay[i]) ==
                   tolower((unsigned char)needle[i]))
            i++;
        if (i == n)
            return true;
    }
    return n == 0;
}

/* The end of the server's log (up to 1 KiB), for failure messages. */
static const char *log_tail(void)
{
    static char buf[1024];
    buf[0] = '\0';
    if (!fx.log[0])
        return buf;
    FILE *f = fopen(fx.log, "r");
    if (!f)
        return buf;
    if (fseek(f, 0, SEEK_END) == 0) {
        long end = ftell(f);
        long from = end > (long)sizeof buf - 1 ? end - (long)sizeof buf + 1 : 0;
        if (fseek(f, from, SEEK_SET) == 0) {
            size_t n = fread(buf, 1, sizeof buf - 1, f);
            buf[n] = '\0';
        }
    }
    fclose(f);
    return buf;
}

/* ------------------------------------------------------------------------ */
/* the server                                                                */
/* ------------------------------------------------------------------------ */

static const char *tmp_root(void)
{
    /* The unix socket path must fit in sun_path (108 bytes): a long TMPDIR
     * would push it over, so fall back to /tmp then. */
    const char *t = getenv("TMPDIR");
    if (t && *t == '/' && strlen(t) < 64)
        return t;
    return "/tmp";
}

static void make_dir(void)
{
    if (fx.dir[0])
        return;
    int n = snprintf(fx.dir, sizeof fx.dir, "%s/redq-test-XXXXXX", tmp_root());
    cr_assert(n > 0 && (size_t)n < sizeof fx.dir);
    cr_assert(mkdtemp(fx.dir) != NULL, "mkdtemp %s: %s", fx.dir,
              strerror(errno));
    snprintf(fx.sock, sizeof fx.sock, "%s/redis.sock", fx.dir);
    snprintf(fx.log, sizeof fx.log, "%s/redis.log", fx.dir);
}

/* Remove `dir` and what is in it, one level of subdirectories deep (a
 * server with --appendonly yes keeps its files in appendonlydir/). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)) != NULL) {
            struct stat st;
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(path);
            else
                unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void remove_dir(void)
{
    if (!fx.dir[0])
        return;
    if (getenv("REDQ_TEST_KEEP") && *getenv("REDQ_TEST_KEEP")) {
        fprintf(stderr, "redq test: kept %s\n", fx.dir);
        fx.dir[0] = '\0';
        return;
    }
    remove_tree(fx.dir);
    rmdir(fx.dir);
    fx.dir[0] = '\0';
}

int fx_free_port(void)
{
    int s = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(s >= 0, "socket: %s", strerror(errno));
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    sa.sin_port = 0;
    int rc = bind(s, (struct sockaddr *)&sa, sizeof sa);
    int err = errno;
    socklen_t sl = sizeof sa;
    if (rc == 0)
        rc = getsockname(s, (struct sockaddr *)&sa, &sl);
    close(s);
    cr_assert(rc == 0, "bind/getsockname 127.0.0.1:0: %s", strerror(err));
    return ntohs(sa.sin_port);
}

static void free_ctl(void)
{
    if (fx.ctl) {
        redisFree(fx.ctl);
        fx.ctl = NULL;
    }
}

/* In the child between fork and exec: only async-signal-safe calls. */
static void close_inherited_fds(void)
{
#if defined(__linux__) && defined(SYS_close_range)
    if (syscall(SYS_close_range, 3u, ~0u, 0u) == 0)
        return;
#endif
    struct rlimit rl;
    int max = 4096;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY &&
        rl.rlim_cur < 65536)
        max = (int)rl.rlim_cur;
    for (int fd = 3; fd < max; fd++)
        close(fd);
}

static pid_t spawn(int port)
{
    const char *bin = getenv("REDQ_TEST_REDIS_SERVER");
    cr_assert(bin && *bin, "REDQ_TEST_REDIS_SERVER is not set");

    char portbuf[16];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    const char *argv[32 + FX_MAX_EXTRA];
    size_t n = 0;
    argv[n++] = bin;
    argv[n++] = "--port";
    argv[n++] = portbuf;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--dir";
    argv[n++] = fx.dir;
    argv[n++] = "--unixsocket";
    argv[n++] = fx.sock;
    argv[n++] = "--unixsocketperm";
    argv[n++] = "700";
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    argv[n++] = "--logfile";
    argv[n++] = fx.log;
    for (size_t i = 0; fx.extra[i]; i++)
        argv[n++] = fx.extra[i];
    argv[n] = NULL;

    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
#ifdef __linux__
        /* If the test process dies (criterion's timeout kills it), take the
         * server along instead of leaving it listening. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        if (getppid() != parent)
            _exit(126);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            dup2(devnull, STDOUT_FILENO);
        }
        close_inherited_fds();
        /* execv's argv is `char *const[]` for historical reasons; it does
         * not write to the strings. */
        union {
            const char **c;
            char *const *v;
        } av = {.c = argv};
        execv(bin, av.v);
        _exit(127);
    }
    return pid;
}

static bool connect_ctl(int port, redisContext **out, char *err, size_t errlen)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (!c || c->err) {
        snprintf(err, errlen, "connect: %s", c ? c->errstr : "out of memory");
        if (c)
            redisFree(c);
        return false;
    }
    struct timeval ctv = {20, 0};
    redisSetTimeout(c, ctv);
    if (fx.password) {
        redisReply *r = redisCommand(c, "AUTH %s", fx.password);
        bool ok = r && r->type == REDIS_REPLY_STATUS;
        snprintf(err, errlen, "AUTH: %s",
                 r ? (r->str ? r->str : "?") : c->errstr);
        if (r)
            freeReplyObject(r);
        if (!ok) {
            redisFree(c);
            return false;
        }
    }
    *out = c;
    return true;
}

/* Wait until the server we started answers PING and reports our pid (so a
 * server someone else started on the same port is not mistaken for ours).
 * Returns 1 when up, 0 when the child exited, -1 on timeout. */
static int wait_up(pid_t pid, int port, char *err, size_t errlen)
{
    char pidline[64];
    snprintf(pidline, sizeof pidline, "process_id:%ld\r", (long)pid);
    uint64_t deadline = fx_now_us() + FX_START_TIMEOUT_MS * 1000u;
    snprintf(err, errlen, "no answer");
    for (;;) {
        int st;
        if (waitpid(pid, &st, WNOHANG) == pid) {
            snprintf(err, errlen, "redis-server exited (status %d)", st);
            return 0;
        }
        redisContext *c;
        if (connect_ctl(port, &c, err, errlen)) {
            redisReply *r = redisCommand(c, "PING");
            bool pong = r && r->type == REDIS_REPLY_STATUS &&
                        !strcmp(r->str, "PONG");
            if (r)
                freeReplyObject(r);
            r = pong ? redisCommand(c, "INFO server") : NULL;
            bool ours = r && r->type == REDIS_REPLY_STRING &&
                        strstr(r->str, pidline) != NULL;
            if (r)
                freeReplyObject(r);
            redisFree(c);
            if (pong && ours)
                return 1;
            snprintf(err, errlen, "%s", pong ? "another server on the port"
                                             : "no PONG");
        }
        if (fx_now_us() >= deadline)
            return -1;
        /* Nothing to wait on for another process's readiness but its port. */
        nap_ms(5);
    }
}

static void stop_pid(pid_t pid)
{
    int st;
    kill(pid, SIGTERM);
    uint64_t deadline = fx_now_us() + FX_STOP_TIMEOUT_MS * 1000u;
    while (waitpid(pid, &st, WNOHANG) == 0) {
        if (fx_now_us() >= deadline) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            return;
        }
        nap_ms(2);
    }
}

static void set_extra(const char *const *extra)
{
    for (size_t i = 0; fx.extra[i]; i++) {
        free(fx.extra[i]);
        fx.extra[i] = NULL;
    }
    fx.password = NULL;
    size_t n = 0;
    for (; extra && extra[n]; n++) {
        cr_assert(n < FX_MAX_EXTRA, "too many extra server arguments");
        fx.extra[n] = strdup(extra[n]);
        cr_assert(fx.extra[n]);
    }
    fx.extra[n] = NULL;
    for (size_t i = 0; i + 1 < n; i++)
        if (!strcmp(fx.extra[i], "--requirepass"))
            fx.password = fx.extra[i + 1];
}

/* Start on `port` (0: pick free ports, retrying). */
static void start(int port)
{
    cr_assert(fx.pid == 0, "a server is already running");
    make_dir();
    char err[256] = "";
    for (int attempt = 0; attempt < FX_START_ATTEMPTS; attempt++) {
        int p = port ? port : fx_free_port();
        unlink(fx.log);
        pid_t pid = spawn(p);
        int up = wait_up(pid, p, err, sizeof err);
        if (up == 1) {
            fx.pid = pid;
            fx.port = p;
            snprintf(fx.url, sizeof fx.url, "redis://127.0.0.1:%d", p);
            return;
        }
        if (up < 0)
            stop_pid(pid);
        if (port)
            break; /* a fixed port: no other port to try */
    }
    cr_assert_fail("redis-server did not come up on %s port: %s\nlog: %s",
             port ? "the given" : "any free", err, log_tail());
}

void fx_server_start(const char *const *extra)
{
    set_extra(extra);
    start(0);
}

void fx_server_start_on_port(int port, const char *const *extra)
{
    set_extra(extra);
    start(port);
}

void fx_server_stop(void)
{
    free_ctl();
    if (fx.pid > 0)
        stop_pid(fx.pid);
    fx.pid = 0;
}

void fx_server_restart(void)
{
    cr_assert(fx.port > 0, "no server was started");
    fx_server_stop();
    start(fx.port);
}

int fx_port(void)
{
    cr_assert(fx.port > 0, "no server was started");
    return fx.port;
}

const char *fx_url(void)
{
    cr_assert(fx.port > 0, "no server was started");
    return fx.url;
}

const char *fx_unix_path(void)
{
    cr_assert(fx.dir[0], "no server was started");
    return fx.sock;
}

const char *fx_dir(void)
{
    cr_assert(fx.dir[0], "no server was started");
    return fx.dir;
}

/* ------------------------------------------------------------------------ */
/* the control client                                                        */
/* ------------------------------------------------------------------------ */

redisContext *fx_redis(void)
{
    if (!fx.ctl) {
        cr_assert(fx.pid > 0, "no server is running");
        char err[256];
        cr_assert(connect_ctl(fx.port, &fx.ctl, err, sizeof err),
                  "control client: %s", err);
    }
    return fx.ctl;
}

static void keep_reply(void *r)
{
    if (fx.nreplies == fx.capreplies) {
        size_t cap = fx.capreplies ? fx.capreplies * 2 : 16;
        void **n = realloc(fx.replies, cap * sizeof *n);
        cr_assert(n);
        fx.replies = n;
        fx.capreplies = cap;
    }
    fx.replies[fx.nreplies++] = r;
}

static redisReply *vcmd(const char *fmt, va_list ap)
{
    redisContext *c = fx_redis();
    redisReply *r = redisvCommand(c, fmt, ap);
    if (!r) {
        char err[160];
        snprintf(err, sizeof err, "%s", c->errstr);
        free_ctl(); /* a failed context is unusable: reconnect next time */
        cr_assert_fail("control client, command \"%s\": %s", fmt, err);
    }
    keep_reply(r);
    return r;
}

redisReply *fx_cmd(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(fmt, ap);
    va_end(ap);
    return r;
}

redisReply *fx_cmd_ok(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(fmt, ap);
    va_end(ap);
    cr_assert(r->type != REDIS_REPLY_ERROR, "\"%s\": error reply %s", fmt,
              r->str);
    return r;
}

long long fx_cmd_int(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = vcmd(fmt, ap);
    va_end(ap);
    cr_assert(r->type == REDIS_REPLY_INTEGER,
              "\"%s\": expected an integer, got type %d (%s)", fmt, r->type,
              r->str ? r->str : "");
    return r->integer;
}

long long fx_llen(const char *key)
{
    return fx_cmd_int("LLEN %s", key);
}

long long fx_commandstat_calls(const char *cmd)
{
    redisReply *r = fx_cmd_ok("INFO commandstats");
    cr_assert(r->type == REDIS_REPLY_STRING, "INFO commandstats: type %d", r->type);
    char key[96];
    int n = snprintf(key, sizeof key, "cmdstat_%s:calls=", cmd);
    cr_assert(n > 0 && (size_t)n < sizeof key);
    for (char *k = key; *k; k++)
        *k = (char)tolower((unsigned char)*k);
    const char *at = strstr(r->str, key);
    if (!at)
        return 0;
    return strtoll(at + n, NULL, 10);
}

/* ------------------------------------------------------------------------ */
/* the loop                                                                  */
/* ------------------------------------------------------------------------ */

struct event_base *fx_base(void)
{
    cr_assert(fx.base, "fx_setup() did not run");
    return fx.base;
}

static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    (void)arg;
}

bool fx_run_until(bool (*cond)(void *), void *arg, int timeout_ms)
{
    struct event_base *base = fx_base();
    /* EVLOOP_ONCE blocks until something is active: the tick bounds that,
     * so the deadline is honoured even when the producer is idle. */
    struct event *tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
    cr_assert(tick);
    struct timeval tv = {0, 10000};
    event_add(tick, &tv);
    uint64_t deadline = fx_now_us() + (uint64_t)timeout_ms * 1000u;
    bool ok;
    while (!(ok = cond(arg)) && fx_now_us() < deadline)
        event_base_loop(base, EVLOOP_ONCE);
    event_free(tick);
    return ok;
}

static bool never(void *arg)
{
    (void)arg;
    return false;
}

void fx_run_for(int ms)
{
    (void)fx_run_until(never, NULL, ms);
}

/* ------------------------------------------------------------------------ */
/* the tracker                                                               */
/* ------------------------------------------------------------------------ */

size_t fx_payload(char *buf, size_t cap, const char *queue, size_t seq,
                  size_t size)
{
    int n = snprintf(buf, cap, "%s|%zu|", queue, seq);
    cr_assert(n > 0 && (size_t)n < cap);
    size_t len = (size_t)n;
    cr_assert(size < cap, "payload size %zu too big for the buffer", size);
    while (len < size)
        buf[len++] = 'x';
    return len;
}

/* Check that p/len is a payload made by fx_payload() for `queue` (any queue
 * when NULL); on success store its sequence number. */
static bool parse_payload(const char *p, size_t len, const char *queue,
                          size_t *seq)
{
    const char *bar = p ? memchr(p, '|', len) : NULL;
    if (!bar)
        return false;
    size_t qlen = (size_t)(bar - p);
    if (queue && (strlen(queue) != qlen || memcmp(p, queue, qlen) != 0))
        return false;
    size_t i = qlen + 1, v = 0, digits = 0;
    for (; i < len && p[i] >= '0' && p[i] <= '9'; i++, digits++)
        v = v * 10 + (size_t)(p[i] - '0');
    if (!digits || i >= len || p[i] != '|')
        return false;
    for (i++; i < len; i++)
        if (p[i] != 'x')
            return false;
    *seq = v;
    return true;
}

#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
static void bad(fx_tracker *t, const char *fmt, ...)
{
    if (t->bad++ == 0) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(t->bad_msg, sizeof t->bad_msg, fmt, ap);
        va_end(ap);
    }
}

/* Records only: an assertion here would longjmp out of the loop. */
static void tr_report(redq_producer *p, const redq_report *r, void *user)
{
    fx_tracker *t = user;
    uint64_t now = fx_now_us();
    t->reports++;
    if (t->closed)
        t->reports_after_close++;
    if (r->status == 0) {
        t->ok++;
        if (r->errstr)
            bad(t, "status 0 with errstr \"%s\"", r->errstr);
    } else {
        t->failed++;
        t->last_fail_status = r->status;
        snprintf(t->last_errstr, sizeof t->last_errstr, "%s",
                 r->errstr ? r->errstr : "(null)");
        if (r->status > 0)
            bad(t, "positive status %d", r->status);
        if (!r->errstr)
            bad(t, "status %d (%s) with a NULL errstr", r->status,
                redq_err_name(r->status));
    }
    if (p != t->p)
        bad(t, "report for producer %p, expected %p", (void *)p, (void *)t->p);

    size_t seq = (size_t)(uintptr_t)r->opaque - 1;
    size_t pseq;
    if (t->raw) {
        /* the test checks the content itself */
    } else if (!r->opaque || seq >= t->cap || !t->len[seq]) {
        bad(t, "report with unknown opaque %p", r->opaque);
    } else {
        t->nrep[seq]++;
        t->status[seq] = r->status;
        t->rep_us[seq] = now;
        if (!r->queue)
            bad(t, "seq %zu: NULL queue", seq);
        else if (r->len != t->len[seq])
            bad(t, "seq %zu: len %zu, produced %zu", seq, r->len, t->len[seq]);
        else if (!parse_payload(r->payload, r->len, r->queue, &pseq))
            bad(t, "seq %zu: payload \"%.*s\" does not match queue \"%s\"", seq,
                (int)(r->len > 40 ? 40 : r->len),
                r->payload ? (const char *)r->payload : "", r->queue);
        else if (pseq != seq)
            bad(t, "seq %zu: report carries the payload of seq %zu", seq, pseq);
    }
    if (t->on_report)
        t->on_report(t, p, r);
}

static void tr_ready(redq_producer *p, void *user)
{
    fx_tracker *t = user;
    if (p != t->p)
        bad(t, "on_ready for producer %p, expected %p", (void *)p,
            (void *)t->p);
    if (t->ready++ == 0) {
        t->ready_reports = t->reports;
        redq_producer_get_stats(p, &t->ready_stats);
    }
}

static void tr_log(int level, int code, const char *msg, void *user)
{
    fx_tracker *t = user;
    t->logs++;
    if (code <= 0 && code > -FX_MAX_CODE) {
        size_t i = (size_t)-code;
        if (t->log_by_code[i]++ == 0)
            snprintf(t->log_first[i], sizeof t->log_first[i], "%s",
                     msg ? msg : "(null)");
    } else {
        bad(t, "log with code %d", code);
    }
    if (!msg)
        bad(t, "log with a NULL message (code %d)", code);
    const char *v = getenv("REDQ_TEST_VERBOSE");
    if (v && *v)
        fprintf(stderr, "[redq log %d %s] %s\n", level, redq_err_name(code),
                msg ? msg : "(null)");
}

struct fx_tracker_priv {
    fx_tracker t;
    bool close_called;
};

static void tr_closed(void *user)
{
    fx_tracker *t = user;
    t->closed++;
    t->closed_reports = t->reports;
}

fx_tracker *fx_tracker_new(size_t cap)
{
    cr_assert(fx.ntrackers < FX_MAX_TRACKERS, "too many trackers");
    struct fx_tracker_priv *tp = calloc(1, sizeof *tp);
    cr_assert(tp);
    fx_tracker *t = &tp->t;
    t->cap = cap;
    t->nrep = calloc(cap ? cap : 1, sizeof *t->nrep);
    t->status = calloc(cap ? cap : 1, sizeof *t->status);
    t->rep_us = calloc(cap ? cap : 1, sizeof *t->rep_us);
    t->prod_us = calloc(cap ? cap : 1, sizeof *t->prod_us);
    t->len = calloc(cap ? cap : 1, sizeof *t->len);
    fx.trackers[fx.ntrackers++] = t;
    cr_assert(t->nrep && t->status && t->rep_us && t->prod_us && t->len);
    return t;
}

static void tracker_free(fx_tracker *t)
{
    free(t->nrep);
    free(t->status);
    free(t->rep_us);
    free(t->prod_us);
    free(t->len);
    free((struct fx_tracker_priv *)(void *)t);
}

int fx_producer_new(fx_tracker *t, redq_producer_options *opts)
{
    opts->on_report = tr_report;
    opts->on_report_user = t;
    opts->on_ready = tr_ready;
    opts->on_ready_user = t;
    opts->log = tr_log;
    opts->log_user = t;
    return redq_producer_new(&t->p, fx_base(), opts);
}

int fx_produce(fx_tracker *t, const char *queue, size_t seq, size_t size)
{
    cr_assert(seq < t->cap, "seq %zu beyond the tracker's %zu", seq, t->cap);
    char stackbuf[2048];
    char *buf = stackbuf;
    size_t cap = sizeof stackbuf;
    if (size + 64 + strlen(queue) > cap) {
        cap = size + 64 + strlen(queue);
        buf = malloc(cap);
        cr_assert(buf);
    }
    size_t len = fx_payload(buf, cap, queue, seq, size);
    t->prod_us[seq] = fx_now_us();
    int rc = redq_produce(t->p, queue, buf, len, (void *)(uintptr_t)(seq + 1));
    if (rc == 0)
        t->len[seq] = len;
    /* Contract 4: the payload was copied; scribbling on it must not matter. */
    memset(buf, '#', len);
    if (buf != stackbuf)
        free(buf);
    return rc;
}

void fx_produce_range(fx_tracker *t, const char *queue, size_t from,
                      size_t to, size_t size)
{
    for (size_t s = from; s < to; s++) {
        int rc = fx_produce(t, queue, s, size);
        cr_assert(rc == 0, "produce seq %zu to \"%s\": %s (%s)", s, queue,
                  redq_err_name(rc), redq_strerror(rc));
    }
}

int fx_close(fx_tracker *t)
{
    struct fx_tracker_priv *tp = (struct fx_tracker_priv *)(void *)t;
    int rc = redq_producer_close(t->p, tr_closed, t);
    if (rc == 0)
        tp->close_called = true;
    return rc;
}

redq_producer_stats fx_stats(fx_tracker *t)
{
    redq_producer_stats st;
    memset(&st, 0, sizeof st);
    redq_producer_get_stats(t->p, &st);
    return st;
}

struct wait_n {
    fx_tracker *t;
    size_t n;
    int code;
};

static bool c_reports(void *arg)
{
    struct wait_n *w = arg;
    return w->t->reports >= w->n;
}

static bool c_connected(void *arg)
{
    struct wait_n *w = arg;
    redq_producer_stats st;
    redq_producer_get_stats(w->t->p, &st);
    return st.connected == 1;
}

static bool c_closed(void *arg)
{
    struct wait_n *w = arg;
    return w->t->closed > 0;
}

static bool c_log(void *arg)
{
    struct wait_n *w = arg;
    return w->t->log_by_code[-w->code] > 0;
}

static bool c_ready(void *arg)
{
    struct wait_n *w = arg;
    return w->t->ready > 0;
}

bool fx_wait_reports(fx_tracker *t, size_t n, int timeout_ms)
{
    struct wait_n w = {t, n, 0};
    return fx_run_until(c_reports, &w, timeout_ms);
}

bool fx_wait_connected(fx_tracker *t, int timeout_ms)
{
    struct wait_n w = {t, 0, 0};
    return fx_run_until(c_connected, &w, timeout_ms);
}

bool fx_wait_closed(fx_tracker *t, int timeout_ms)
{
    struct wait_n w = {t, 0, 0};
    return fx_run_until(c_closed, &w, timeout_ms);
}

bool fx_wait_log_code(fx_tracker *t, int code, int timeout_ms)
{
    cr_assert(code <= 0 && code > -FX_MAX_CODE);
    struct wait_n w = {t, 0, code};
    return fx_run_until(c_log, &w, timeout_ms);
}

bool fx_wait_ready(fx_tracker *t, int timeout_ms)
{
    struct wait_n w = {t, 0, 0};
    return fx_run_until(c_ready, &w, timeout_ms);
}

void fx_assert_reported(fx_tracker *t, size_t from, size_t to, int status)
{
    cr_assert(t->bad == 0, "%zu malformed reports; first: %s", t->bad,
              t->bad_msg);
    size_t wrong = 0, first = 0;
    for (size_t s = from; s < to; s++) {
        if (t->nrep[s] != 1 || t->status[s] != status) {
            if (wrong++ == 0)
                first = s;
        }
    }
    cr_assert(wrong == 0,
              "%zu of %zu messages not reported exactly once with %s; first: "
              "seq %zu has %u reports, last status %s (last failure: %s)",
              wrong, to - from, redq_err_name(status), first, t->nrep[first],
              redq_err_name(t->status[first]), t->last_errstr);
}

void fx_assert_list(const char *queue, const size_t *seqs, size_t n)
{
    redisReply *r = fx_cmd("LRANGE %s 0 -1", queue);
    cr_assert(r->type == REDIS_REPLY_ARRAY, "LRANGE %s: type %d (%s)", queue,
              r->type, r->str ? r->str : "");
    cr_assert(r->elements == n, "list \"%s\" has %zu elements, expected %zu",
              queue, r->elements, n);
    for (size_t i = 0; i < n; i++) {
        /* LPUSH puts the newest at the head: produce order is tail first. */
        redisReply *e = r->element[n - 1 - i];
        size_t seq = (size_t)-1;
        cr_assert(e->type == REDIS_REPLY_STRING &&
                      parse_payload(e->str, e->len, queue, &seq),
                  "list \"%s\" index %zu: unexpected element \"%.*s\"", queue,
                  n - 1 - i, (int)(e->len > 40 ? 40 : e->len),
                  e->str ? e->str : "");
        cr_assert(seq == seqs[i],
                  "list \"%s\": message %zu in produce order is seq %zu, "
                  "expected seq %zu",
                  queue, i, seq, seqs[i]);
    }
}

void fx_assert_list_range(const char *queue, size_t from, size_t to)
{
    size_t n = to - from;
    redisReply *r = fx_cmd("LRANGE %s 0 -1", queue);
    cr_assert(r->type == REDIS_REPLY_ARRAY, "LRANGE %s: type %d (%s)", queue,
              r->type, r->str ? r->str : "");
    cr_assert(r->elements == n, "list \"%s\" has %zu elements, expected %zu",
              queue, r->elements, n);
    for (size_t i = 0; i < n; i++) {
        redisReply *e = r->element[n - 1 - i];
        size_t seq = (size_t)-1;
        cr_assert(e->type == REDIS_REPLY_STRING &&
                      parse_payload(e->str, e->len, queue, &seq) &&
                      seq == from + i,
                  "list \"%s\": message %zu in produce order is \"%.*s\", "
                  "expected seq %zu",
                  queue, i, (int)(e->len > 40 ? 40 : e->len),
                  e->str ? e->str : "", from + i);
    }
}

/* ------------------------------------------------------------------------ */
/* setup / teardown                                                          */
/* ------------------------------------------------------------------------ */

void fx_setup_noserver(void)
{
    /* Criterion runs the suite's .init and then the test's: a test that
     * overrides fx_setup with this one finds a server already started. */
    if (fx.base) {
        fx_server_stop();
        remove_dir();
        set_extra(NULL);
        fx.port = 0;
        fx.url[0] = '\0';
        return;
    }
    /* hiredis writes with write(2): a write to a connection the server (or
     * CLIENT KILL) just closed raises SIGPIPE, which an application embedding
     * redq has to ignore, as every hiredis user does. */
    signal(SIGPIPE, SIG_IGN);
    memset(&fx, 0, sizeof fx);
    fx.base = event_base_new();
    cr_assert(fx.base, "event_base_new failed");
}

void fx_setup(void)
{
    fx_setup_noserver();
    fx_server_start(NULL);
}

void fx_teardown(void)
{
    bool loop_usable = true;
    for (size_t i = 0; i < fx.ntrackers; i++) {
        struct fx_tracker_priv *tp = (struct fx_tracker_priv *)(void *)fx.trackers[i];
        fx_tracker *t = &tp->t;
        /* Tests close through fx_close(), so close_called is reliable. */
        if (t->p && !tp->close_called && !t->closed)
            fx_close(t);
        if (tp->close_called && !t->closed && fx.base &&
            !fx_wait_closed(t, FX_CLOSE_TIMEOUT_MS)) {
            /* Freeing the loop under a live producer would be a
             * use-after-free: leak it instead, and say so. */
            fprintf(stderr, "redq test: producer never called its close "
                            "callback; leaking the event loop\n");
            loop_usable = false;
        }
    }
    for (size_t i = 0; i < fx.ntrackers; i++)
        tracker_free(fx.trackers[i]);
    fx.ntrackers = 0;
    for (size_t i = 0; i < fx.nreplies; i++)
        freeReplyObject(fx.replies[i]);
    free(fx.replies);
    fx.replies = NULL;
    fx.nreplies = fx.capreplies = 0;
    fx_server_stop();
    remove_dir();
    set_extra(NULL);
    if (fx.base && loop_usable)
        event_base_free(fx.base);
    fx.base = NULL;
}

char *fx_queue_key(const char *q, const char *suffix)
{
    char *k = redq__key(q, strlen(q), suffix);
    cr_assert_not_null(k);
    return k;
}

/* ------------------------------------------------------------------------ */
/* high availability: a master, replicas and sentinels                       */
/* ------------------------------------------------------------------------ */

#define FX_HA_MAX 5

static struct {
    char dir[160];
    int nnodes, nsent;
    int port[FX_HA_MAX];
    pid_t pid[FX_HA_MAX];
    int sport[FX_HA_MAX];
    pid_t spid[FX_HA_MAX];
    char spass[64];
    char url[512];
} ha;

/* fork + exec argv with stdout to /dev/null, dying with the test. */
static pid_t ha_spawn(const char *const *argv)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        if (getppid() != parent)
            _exit(126);
        int devnull = open("/dev/null", O_RDWR);
        if (devnull >= 0) {
            dup2(devnull, STDIN_FILENO);
            dup2(devnull, STDOUT_FILENO);
        }
        close_inherited_fds();
        union {
            const char *const *c;
            char *const *v;
        } av = {.c = argv};
        execv(argv[0], av.v);
        _exit(127);
    }
    return pid;
}

redisContext *fx_ha_connect(int port, const char *password)
{
    struct timeval tv = {1, 0};
    redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
    if (c == NULL || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    struct timeval ctv = {5, 0};
    redisSetTimeout(c, ctv);
    if (password != NULL) {
        redisReply *r = redisCommand(c, "AUTH %s", password);
        if (r)
            freeReplyObject(r);
    }
    return c;
}

/* A reply's string for a quick look, or NULL. Caller frees the reply. */
static bool ha_info_has(int port, const char *pw, const char *section,
                        const char *needle)
{
    redisContext *c = fx_ha_connect(port, pw);
    bool ok = false;
    if (c == NULL)
        return false;
    redisReply *r = redisCommand(c, "INFO %s", section);
    ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, needle);
    if (r)
        freeReplyObject(r);
    redisFree(c);
    return ok;
}

static void ha_start_node(int i, int master_port)
{
    char portbuf[16], mbuf[32], logbuf[256], dirbuf[200];
    const char *bin = getenv("REDQ_TEST_REDIS_SERVER");
    cr_assert(bin && *bin, "REDQ_TEST_REDIS_SERVER is not set");
    snprintf(portbuf, sizeof portbuf, "%d", ha.port[i]);
    snprintf(mbuf, sizeof mbuf, "127.0.0.1 %d", master_port);
    snprintf(logbuf, sizeof logbuf, "%s/node%d.log", ha.dir, i);
    snprintf(dirbuf, sizeof dirbuf, "%s/n%d", ha.dir, i);
    mkdir(dirbuf, 0700);
    const char *argv[32];
    size_t n = 0;
    argv[n++] = bin;
    argv[n++] = "--port";
    argv[n++] = portbuf;
    argv[n++] = "--bind";
    argv[n++] = "127.0.0.1";
    argv[n++] = "--save";
    argv[n++] = "";
    argv[n++] = "--appendonly";
    argv[n++] = "no";
    argv[n++] = "--dir";
    argv[n++] = dirbuf;
    argv[n++] = "--logfile";
    argv[n++] = logbuf;
    argv[n++] = "--daemonize";
    argv[n++] = "no";
    argv[n++] = "--repl-diskless-sync";
    argv[n++] = "yes";
    argv[n++] = "--repl-diskless-sync-delay";
    argv[n++] = "0";
    if (master_port > 0) {
        argv[n++] = "--replicaof";
        argv[n++] = mbuf;
    }
    argv[n] = NULL;
    ha.pid[i] = ha_spawn(argv);
    uint64_t deadline = fx_now_us() + FX_START_TIMEOUT_MS * 1000u;
    while (!ha_info_has(ha.port[i], NULL, "server", "redis_version")) {
        cr_assert(fx_now_us() < deadline, "node %d did not come up", i);
        nap_ms(5);
    }
}

void fx_ha_start_sentinel(int i)
{
    char conf[256], portbuf[16];
    const char *bin = getenv("REDQ_TEST_REDIS_SERVER");
    snprintf(conf, sizeof conf, "%s/sentinel%d.conf", ha.dir, i);
    if (access(conf, F_OK) != 0) {
        FILE *f = fopen(conf, "w");
        cr_assert(f, "cannot write %s", conf);
        fprintf(f,
                "port %d\nbind 127.0.0.1\ndaemonize no\n"
                "logfile %s/sentinel%d.log\ndir %s\n"
                "sentinel monitor mymaster 127.0.0.1 %d 2\n"
                "sentinel down-after-milliseconds mymaster 1000\n"
                "sentinel failover-timeout mymaster 3000\n"
                "sentinel parallel-syncs mymaster 2\n",
                ha.sport[i], ha.dir, i, ha.dir, ha.port[0]);
        if (ha.spass[0])
            fprintf(f, "requirepass %s\n", ha.spass);
        fclose(f);
    }
    snprintf(portbuf, sizeof portbuf, "%d", ha.sport[i]);
    const char *argv[] = {bin, conf, "--sentinel", NULL};
    ha.spid[i] = ha_spawn(argv);
    uint64_t deadline = fx_now_us() + FX_START_TIMEOUT_MS * 1000u;
    while (!ha_info_has(ha.sport[i], ha.spass[0] ? ha.spass : NULL,
                        "sentinel", "sentinel_masters:1")) {
        cr_assert(fx_now_us() < deadline, "sentinel %d did not come up", i);
        nap_ms(5);
    }
}

void fx_ha_stop_sentinel(int i)
{
    if (ha.spid[i] > 0)
        stop_pid(ha.spid[i]);
    ha.spid[i] = 0;
}

/* Has every sentinel found every replica and every other sentinel (what a
 * failover needs)? */
static bool ha_settled(void)
{
    char want[64];
    for (int i = 0; i < ha.nsent; i++) {
        redisContext *c =
            fx_ha_connect(ha.sport[i], ha.spass[0] ? ha.spass : NULL);
        if (c == NULL)
            return false;
        redisReply *r = redisCommand(c, "SENTINEL master mymaster");
        bool ok = false;
        if (r && r->type == REDIS_REPLY_ARRAY) {
            int slaves = -1, others = -1;
            for (size_t k = 0; k + 1 < r->elements; k += 2) {
                if (!strcmp(r->element[k]->str, "num-slaves"))
                    slaves = atoi(r->element[k + 1]->str);
                if (!strcmp(r->element[k]->str, "num-other-sentinels"))
                    others = atoi(r->element[k + 1]->str);
            }
            ok = slaves == ha.nnodes - 1 && others == ha.nsent - 1;
        }
        if (r)
            freeReplyObject(r);
        redisFree(c);
        if (!ok)
            return false;
    }
    (void)want;
    return true;
}

void fx_ha_start(int nreplicas, int nsentinels, const char *sentinel_password)
{
    cr_assert(nreplicas + 1 <= FX_HA_MAX && nsentinels <= FX_HA_MAX);
    memset(&ha, 0, sizeof ha);
    snprintf(ha.dir, sizeof ha.dir, "%s/redq-ha-XXXXXX", tmp_root());
    cr_assert(mkdtemp(ha.dir), "mkdtemp: %s", strerror(errno));
    ha.nnodes = nreplicas + 1;
    ha.nsent = nsentinels;
    if (sentinel_password)
        snprintf(ha.spass, sizeof ha.spass, "%s", sentinel_password);
    for (int i = 0; i < ha.nnodes; i++) {
        ha.port[i] = fx_free_port();
        for (int k = 0; k < i; k++)
            if (ha.port[k] == ha.port[i])
                ha.port[i] = fx_free_port(), k = -1;
    }
    for (int i = 0; i < ha.nsent; i++) {
        ha.sport[i] = fx_free_port();
        for (int k = 0; k < ha.nnodes; k++)
            if (ha.port[k] == ha.sport[i])
                ha.sport[i] = fx_free_port(), k = -1;
        for (int k = 0; k < i; k++)
            if (ha.sport[k] == ha.sport[i])
                ha.sport[i] = fx_free_port(), k = -1;
    }
    ha_start_node(0, 0);
    for (int i = 1; i < ha.nnodes; i++)
        ha_start_node(i, ha.port[0]);
    uint64_t deadline = fx_now_us() + 10000000u;
    for (int i = 1; i < ha.nnodes; i++)
        while (!ha_info_has(ha.port[i], NULL, "replication",
                            "master_link_status:up")) {
            cr_assert(fx_now_us() < deadline, "replica %d never synced", i);
            nap_ms(10);
        }
    for (int i = 0; i < ha.nsent; i++)
        fx_ha_start_sentinel(i);
    deadline = fx_now_us() + 20000000u;
    while (!ha_settled()) {
        cr_assert(fx_now_us() < deadline,
                  "sentinels never saw every replica and each other");
        nap_ms(50);
    }
    size_t n = (size_t)snprintf(ha.url, sizeof ha.url, "redis+sentinel://");
    for (int i = 0; i < ha.nsent; i++)
        n += (size_t)snprintf(ha.url + n, sizeof ha.url - n, "%s127.0.0.1:%d",
                              i ? "," : "", ha.sport[i]);
    snprintf(ha.url + n, sizeof ha.url - n, "/mymaster%s%s",
             ha.spass[0] ? "?sentinel_password=" : "", ha.spass);
}

const char *fx_ha_url(void)
{
    return ha.url;
}

int fx_ha_node_port(int i)
{
    return ha.port[i];
}

int fx_ha_sentinel_port(int i)
{
    return ha.sport[i];
}

/* The node that a sentinel names as master now (-1: none answered). */
int fx_ha_master(void)
{
    for (int i = 0; i < ha.nsent; i++) {
        if (ha.spid[i] <= 0)
            continue;
        redisContext *c =
            fx_ha_connect(ha.sport[i], ha.spass[0] ? ha.spass : NULL);
        if (c == NULL)
            continue;
        redisReply *r =
            redisCommand(c, "SENTINEL get-master-addr-by-name mymaster");
        int port = r && r->type == REDIS_REPLY_ARRAY && r->elements == 2
                       ? atoi(r->element[1]->str)
                       : -1;
        if (r)
            freeReplyObject(r);
        redisFree(c);
        for (int k = 0; k < ha.nnodes; k++)
            if (ha.port[k] == port)
                return k;
    }
    return -1;
}

/* Is node i up and a master by its own word? */
bool fx_ha_is_master(int i)
{
    return ha.pid[i] > 0 &&
           ha_info_has(ha.port[i], NULL, "replication", "role:master");
}

void fx_ha_kill_node(int i)
{
    int st;
    if (ha.pid[i] <= 0)
        return;
    kill(ha.pid[i], SIGKILL);
    waitpid(ha.pid[i], &st, 0);
    ha.pid[i] = 0;
}

void fx_ha_stop(void)
{
    for (int i = 0; i < ha.nsent; i++)
        fx_ha_stop_sentinel(i);
    for (int i = 0; i < ha.nnodes; i++)
        if (ha.pid[i] > 0) {
            stop_pid(ha.pid[i]);
            ha.pid[i] = 0;
        }
    if (ha.dir[0] && getenv("REDQ_TEST_KEEP") == NULL)
        remove_tree(ha.dir);
    ha.dir[0] = '\0';
}
