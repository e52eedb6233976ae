/*
 * redq-demo: push N messages through one producer as fast as its window
 * allows, then report what Redis acknowledged and how long it took.
 *
 *   redq-demo [--url URL] [--messages N] [--payload BYTES] [--queue NAME]
 *
 * The producer runs on the demo's own event_base, the way an embedding server
 * would use it. Only after that loop has finished does the demo open a
 * blocking hiredis connection to read LLEN: a command-line program may block,
 * the library may not. The queue length is read before and after the run, so
 * the table shows what actually arrived rather than what the producer counted.
 *
 * Exit status: 0 when every message was acknowledged and none went missing,
 * 1 when some failed (or the run was interrupted), 2 on bad usage or set-up.
 */
#include "redq.h"

#include <errno.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#define DEFAULT_URL "redis://127.0.0.1:6379"
#define DEFAULT_QUEUE "redq:demo"

/* Messages produced per loop iteration at most. Without a cap one callback
 * would fill the whole window (100000 messages by default) before the loop
 * got to write anything; a few thousand keeps the socket busy while the
 * producer is still filling batches. */
#define PRODUCE_CHUNK 4096

/* How often the progress line is redrawn. */
#define PROGRESS_MS 200

typedef struct demo {
    struct event_base *base;
    redq_producer *p;
    struct event *pump;     /* zero-timeout timer: produce the next chunk */
    struct event *progress; /* redraws the progress line (tty only) */
    struct event *sigint;
    struct event *sigterm;

    const char *queue;
    char *payload;
    size_t payload_len;

    uint64_t want;     /* --messages */
    uint64_t produced; /* accepted by redq_produce() */
    uint64_t ok;       /* reports with status 0 */
    uint64_t failed;   /* reports with status < 0 */
    int first_error;   /* status of the first failed report, or of produce */
    char first_errstr[256];

    int tty;          /* stderr is a terminal: draw progress */
    int stopping;     /* produce no more (done, failure or signal) */
    int finishing;    /* flush requested or close started */
    int interrupted;  /* stopped by a signal */
    double t_start;
    double t_end;
} demo;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Erase the progress line so other output does not get mixed into it. */
static void clear_progress(const demo *d)
{
    if (d->tty)
        fputs("\r\033[K", stderr);
}

static void on_log(int level, int code, const char *msg, void *user)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    const demo *d = user;

    clear_progress(d);
    fprintf(stderr, "redq %s: %s", level >= 0 && level <= 3 ? names[level] : "?",
            msg);
    if (code < 0)
        fprintf(stderr, " (%s)", redq_err_name(code));
    fputc('\n', stderr);
}

static void schedule_pump(demo *d)
{
    static const struct timeval zero = {0, 0};
    evtimer_add(d->pump, &zero);
}

static void stop_events(demo *d)
{
    evtimer_del(d->pump);
    if (d->progress)
        evtimer_del(d->progress);
    evsignal_del(d->sigint);
    evsignal_del(d->sigterm);
}

static void on_closed(void *user)
{
    demo *d = user;

    d->p = NULL;
    if (d->t_end == 0)
        d->t_end = now_s();
    stop_events(d);
    /* Nothing of ours is left registered, and the producer has released
     * everything it had; leave the loop even if something else lingers. */
    event_base_loopexit(d->base, NULL);
}

static void close_producer(demo *d)
{
    int rc;

    if (!d->p)
        return;
    rc = redq_producer_close(d->p, on_closed, d);
    if (rc < 0 && rc != REDQ_ECLOSED) {
        clear_progress(d);
        fprintf(stderr, "redq-demo: redq_producer_close: %s\n", redq_strerror(rc));
        event_base_loopexit(d->base, NULL);
    }
}

static void on_flushed(redq_producer *p, int status, void *user)
{
    demo *d = user;

    (void)p;
    (void)status; /* the reports themselves say what happened */
    d->t_end = now_s();
    close_producer(d);
}

/* No more messages: wait for every report (flush), then close. */
static void finish(demo *d)
{
    int rc;

    if (d->finishing)
        return;
    d->finishing = 1;
    rc = redq_producer_flush(d->p, on_flushed, d);
    if (rc < 0) {
        clear_progress(d);
        fprintf(stderr, "redq-demo: redq_producer_flush: %s\n", redq_strerror(rc));
        close_producer(d);
    }
}

static void note_failure(demo *d, int status, const char *errstr)
{
    if (d->first_error == 0) {
        d->first_error = status;
        snprintf(d->first_errstr, sizeof d->first_errstr, "%s",
                 errstr ? errstr : redq_strerror(status));
    }
    /* One failure is enough to know the run will not be clean: stop adding
     * to it, so a dead server costs one delivery timeout, not one per
     * window's worth of messages. */
    if (!d->stopping) {
        d->stopping = 1;
        schedule_pump(d);
    }
}

static void on_delivery(redq_producer *p, const redq_report *r, void *user)
{
    demo *d = user;

    (void)p;
    if (r->status == 0)
        d->ok++;
    else {
        d->failed++;
        note_failure(d, r->status, r->errstr);
    }
}

static void on_ready(redq_producer *p, void *user)
{
    (void)p;
    schedule_pump(user);
}

/* Give every message its sequence number up front, so that the payloads are
 * not all identical; the rest is filler. */
static void fill_payload(demo *d, uint64_t seq)
{
    char num[24];
    int n = snprintf(num, sizeof num, "%020llu", (unsigned long long)seq);
    size_t k = (size_t)n < d->payload_len ? (size_t)n : d->payload_len;

    memcpy(d->payload, num + ((size_t)n - k), k);
}

static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
    demo *d = arg;
    int i;

    (void)fd;
    (void)what;
    if (d->finishing)
        return;
    if (d->t_start == 0)
        d->t_start = now_s();

    for (i = 0; i < PRODUCE_CHUNK && !d->stopping && d->produced < d->want; i++) {
        int rc;

        fill_payload(d, d->produced);
        rc = redq_produce(d->p, d->queue, d->payload, d->payload_len, NULL);
        if (rc == REDQ_EFULL)
            return; /* on_ready reschedules us */
        if (rc < 0) {
            clear_progress(d);
            fprintf(stderr, "redq-demo: redq_produce: %s (%s)\n",
                    redq_strerror(rc), redq_err_name(rc));
            note_failure(d, rc, NULL);
            break;
        }
        d->produced++;
    }

    if (d->stopping || d->produced == d->want)
        finish(d);
    else
        schedule_pump(d);
}

static void progress_cb(evutil_socket_t fd, short what, void *arg)
{
    demo *d = arg;
    double el = now_s() - d->t_start;

    (void)fd;
    (void)what;
    if (d->t_start == 0)
        return;
    fprintf(stderr, "\r\033[K  produced %llu/%llu  ok %llu  failed %llu  %.0f msg/s",
            (unsigned long long)d->produced, (unsigned long long)d->want,
            (unsigned long long)d->ok, (unsigned long long)d->failed,
            el > 0 ? (double)d->ok / el : 0.0);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    demo *d = arg;

    (void)what;
    clear_progress(d);
    if (!d->interrupted) {
        /* First signal: stop producing and drain what is in flight. */
        fprintf(stderr, "redq-demo: %s: finishing the messages in flight (again to abort them)\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
        d->interrupted = 1;
        d->stopping = 1;
        schedule_pump(d);
    } else {
        /* Second: do not wait; pending messages are reported REDQ_ECLOSED. */
        close_producer(d);
    }
}

/* ------------------------------------------------------------------------ */
/* LLEN over a blocking hiredis connection                                   */
/* ------------------------------------------------------------------------ */

/* What the demo needs from the URL forms redq.h documents:
 *   redis://[[user]:password@]host[:port][/db]    unix:///path[?db=N]
 * The library does the real, non-blocking parsing; this is only for the
 * after-the-fact LLEN, so it is deliberately small. */
typedef struct sync_target {
    char host[256];
    int port;
    char path[512];
    char user[128];
    char password[256];
    int db;
} sync_target;

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Copy [s, s+n) to out (size cap), decoding %XX. -1 if it does not fit or an
 * escape is malformed. */
static int pct_copy(char *out, size_t cap, const char *s, size_t n)
{
    size_t i, o = 0;

    for (i = 0; i < n; i++) {
        int c = (unsigned char)s[i];
        if (c == '%') {
            int hi, lo;
            if (i + 2 >= n)
                return -1;
            hi = hexval(s[i + 1]);
            lo = hexval(s[i + 2]);
            if (hi < 0 || lo < 0)
                return -1;
            c = hi * 16 + lo;
            i += 2;
        }
        if (o + 1 >= cap)
            return -1;
        out[o++] = (char)c;
    }
    out[o] = '\0';
    return 0;
}

static int parse_int(const char *s, size_t n, int lo, int hi, int *out)
{
    long v = 0;
    size_t i;

    if (n == 0 || n > 9)
        return -1;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -1;
        v = v * 10 + (s[i] - '0');
    }
    if (v < lo || v > hi)
        return -1;
    *out = (int)v;
    return 0;
}

static int parse_target(const char *url, sync_target *t)
{
    const char *s, *end, *at, *q;

    memset(t, 0, sizeof *t);
    t->port = 6379;
    if (strncmp(url, "unix://", 7) == 0) {
        s = url + 7;
        q = strchr(s, '?');
        end = q ? q : s + strlen(s);
        if (end == s || pct_copy(t->path, sizeof t->path, s, (size_t)(end - s)) < 0)
            return -1;
        if (q) {
            if (strncmp(q, "?db=", 4) != 0)
                return -1;
            return parse_int(q + 4, strlen(q + 4), 0, INT_MAX, &t->db);
        }
        return 0;
    }
    if (strncmp(url, "redis://", 8) != 0)
        return -1;
    s = url + 8;
    end = s + strcspn(s, "/");
    at = memchr(s, '@', (size_t)(end - s));
    if (at) {
        const char *colon = memchr(s, ':', (size_t)(at - s));
        if (colon) {
            if (pct_copy(t->user, sizeof t->user, s, (size_t)(colon - s)) < 0 ||
                pct_copy(t->password, sizeof t->password, colon + 1,
                         (size_t)(at - colon - 1)) < 0)
                return -1;
        } else if (pct_copy(t->password, sizeof t->password, s, (size_t)(at - s)) < 0)
            return -1;
        s = at + 1;
    }
    if (*s == '[') { /* [IPv6] */
        const char *rb = memchr(s, ']', (size_t)(end - s));
        if (!rb || (size_t)(rb - s - 1) >= sizeof t->host)
            return -1;
        memcpy(t->host, s + 1, (size_t)(rb - s - 1));
        s = rb + 1;
    } else {
        size_t n = strcspn(s, ":/");
        if (n == 0 || n >= sizeof t->host)
            return -1;
        memcpy(t->host, s, n);
        s += n;
    }
    if (*s == ':') {
        size_t n = (size_t)(end - s - 1);
        if (parse_int(s + 1, n, 1, 65535, &t->port) < 0)
            return -1;
        s = end;
    }
    if (s != end)
        return -1;
    if (*end == '/' && end[1] != '\0')
        return parse_int(end + 1, strlen(end + 1), 0, INT_MAX, &t->db);
    return 0;
}

/* Run one command: its reply, or NULL with errbuf filled (error replies
 * included). */
static redisReply *sync_command(redisContext *c, char *errbuf, size_t errcap,
                                int argc, const char **argv)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);

    if (!r) {
        snprintf(errbuf, errcap, "%s", c->errstr[0] ? c->errstr : "no reply");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(errbuf, errcap, "%s: %s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* LLEN queue at url, blocking. 0 and *len, or -1 with errbuf filled. */
static int sync_llen(const char *url, const char *queue, long long *len,
                     char *errbuf, size_t errcap)
{
    const struct timeval tv = {2, 0};
    sync_target t;
    redisContext *c;
    redisReply *r;
    char dbuf[16];
    int rc = -1;

    if (parse_target(url, &t) < 0) {
        snprintf(errbuf, errcap, "cannot parse URL");
        return -1;
    }
    c = t.path[0] ? redisConnectUnixWithTimeout(t.path, tv)
                  : redisConnectWithTimeout(t.host, t.port, tv);
    if (!c) {
        snprintf(errbuf, errcap, "out of memory");
        return -1;
    }
    if (c->err) {
        snprintf(errbuf, errcap, "connect: %s", c->errstr);
        goto out;
    }
    redisSetTimeout(c, tv);
    if (t.password[0]) {
        /* AUTH user password (Redis 6 ACLs) or AUTH password. */
        const char *auth[3] = {"AUTH", t.user, t.password};
        int n = 3;
        if (!t.user[0]) {
            auth[1] = t.password;
            n = 2;
        }
        if (!(r = sync_command(c, errbuf, errcap, n, auth)))
            goto out;
        freeReplyObject(r);
    }
    if (t.db != 0) {
        const char *sel[] = {"SELECT", dbuf};
        snprintf(dbuf, sizeof dbuf, "%d", t.db);
        if (!(r = sync_command(c, errbuf, errcap, 2, sel)))
            goto out;
        freeReplyObject(r);
    }
    {
        const char *llen[] = {"LLEN", queue};
        if (!(r = sync_command(c, errbuf, errcap, 2, llen)))
            goto out;
        if (r->type != REDIS_REPLY_INTEGER)
            snprintf(errbuf, errcap, "LLEN: unexpected reply type %d", r->type);
        else {
            *len = r->integer;
            rc = 0;
        }
        freeReplyObject(r);
    }
out:
    redisFree(c);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: redq-demo [--url URL] [--messages N] [--payload BYTES] [--queue NAME]\n"
            "  --url URL        Redis to produce to (default $REDQ_URL, else " DEFAULT_URL ")\n"
            "  --messages N     how many messages (default 1000000)\n"
            "  --payload BYTES  size of each message (default 100)\n"
            "  --queue NAME     the list to LPUSH to (default " DEFAULT_QUEUE ")\n");
}

static int parse_count(const char *s, unsigned long long max, unsigned long long *out)
{
    char *end;
    unsigned long long v;

    if (!s || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

/* "--name value" or "--name=value": the value, advancing *i; NULL if absent
 * or if argv[*i] is not --name. */
static const char *opt_value(int argc, char **argv, int *i, const char *name,
                             int *matched)
{
    size_t n = strlen(name);
    const char *a = argv[*i];

    if (strncmp(a, name, n) != 0)
        return NULL;
    if (a[n] == '=') {
        *matched = 1;
        return a + n + 1;
    }
    if (a[n] != '\0')
        return NULL;
    *matched = 1;
    if (*i + 1 >= argc)
        return NULL;
    return argv[++*i];
}

int main(int argc, char **argv)
{
    const char *url = getenv("REDQ_URL");
    unsigned long long messages = 1000000, payload = 100;
    demo d;
    redq_options opts;
    long long len_before = -1, len_after = -1;
    char err_before[256] = "", err_after[256] = "";
    double secs;
    int rc, i, status;

    memset(&d, 0, sizeof d);
    d.queue = DEFAULT_QUEUE;
    if (!url || !*url)
        url = DEFAULT_URL;

    for (i = 1; i < argc; i++) {
        int matched = 0;
        const char *v;

        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            return 0;
        }
        if ((v = opt_value(argc, argv, &i, "--url", &matched)) || matched) {
            if (!v || !*v)
                goto bad;
            url = v;
        } else if ((v = opt_value(argc, argv, &i, "--messages", &matched)) || matched) {
            if (parse_count(v, UINT64_MAX, &messages) < 0)
                goto bad;
        } else if ((v = opt_value(argc, argv, &i, "--payload", &matched)) || matched) {
            if (parse_count(v, (unsigned long long)512 << 20, &payload) < 0)
                goto bad;
        } else if ((v = opt_value(argc, argv, &i, "--queue", &matched)) || matched) {
            if (!v || !*v)
                goto bad;
            d.queue = v;
        } else {
            fprintf(stderr, "redq-demo: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return 2;
        }
        continue;
    bad:
        fprintf(stderr, "redq-demo: bad or missing value for '%s'\n", argv[i]);
        usage(stderr);
        return 2;
    }
    d.want = messages;
    d.payload_len = (size_t)payload;

    /* If Redis goes away mid-write, the write must fail with EPIPE (which
     * the producer handles by reconnecting) rather than kill the demo:
     * hiredis writes with write(), which raises SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    d.tty = isatty(STDERR_FILENO);

    /* Read the length first, so the table can say how much this run added
     * even if the queue was not empty. */
    if (sync_llen(url, d.queue, &len_before, err_before, sizeof err_before) < 0)
        len_before = -1;

    status = 2;
    d.payload = malloc(d.payload_len ? d.payload_len : 1);
    d.base = event_base_new();
    if (!d.payload || !d.base) {
        fprintf(stderr, "redq-demo: out of memory\n");
        goto done;
    }
    memset(d.payload, 'x', d.payload_len);
    d.pump = evtimer_new(d.base, pump_cb, &d);
    d.sigint = evsignal_new(d.base, SIGINT, signal_cb, &d);
    d.sigterm = evsignal_new(d.base, SIGTERM, signal_cb, &d);
    if (d.tty)
        d.progress = event_new(d.base, -1, EV_PERSIST, progress_cb, &d);
    if (!d.pump || !d.sigint || !d.sigterm || (d.tty && !d.progress)) {
        fprintf(stderr, "redq-demo: out of memory\n");
        goto done;
    }

    redq_options_init(&opts);
    opts.url = url;
    opts.client_name = "redq-demo";
    opts.log = on_log;
    opts.log_level = REDQ_LOG_WARN;
    opts.user = &d;
    opts.on_delivery = on_delivery;
    opts.on_ready = on_ready;
    rc = redq_producer_new(&d.p, d.base, &opts);
    if (rc < 0) {
        fprintf(stderr, "redq-demo: redq_producer_new(%s): %s (%s)\n", url,
                redq_strerror(rc), redq_err_name(rc));
        goto done;
    }

    evsignal_add(d.sigint, NULL);
    evsignal_add(d.sigterm, NULL);
    if (d.progress) {
        const struct timeval every = {0, PROGRESS_MS * 1000};
        evtimer_add(d.progress, &every);
    }
    schedule_pump(&d);
    event_base_dispatch(d.base);
    clear_progress(&d);

    if (d.p) {
        /* The loop ran out of events before the close callback: a bug on
         * one side or the other. Say so rather than hide it. */
        fprintf(stderr, "redq-demo: event loop ended before the producer closed\n");
        status = 2;
        goto done;
    }

    if (sync_llen(url, d.queue, &len_after, err_after, sizeof err_after) < 0)
        len_after = -1;

    secs = d.t_end > d.t_start ? d.t_end - d.t_start : 0.0;
    printf("redq-demo: %s, queue %s, %zu-byte payloads\n", url, d.queue, d.payload_len);
    printf("  %-14s %12llu\n", "messages", (unsigned long long)d.produced);
    printf("  %-14s %12llu\n", "ok", (unsigned long long)d.ok);
    printf("  %-14s %12llu\n", "failed", (unsigned long long)d.failed);
    printf("  %-14s %12.3f\n", "seconds", secs);
    printf("  %-14s %12.0f\n", "msg/s", secs > 0 ? (double)d.ok / secs : 0.0);
    if (len_after >= 0 && len_before >= 0)
        printf("  %-14s %12lld  (%+lld during the run)\n", "queue length", len_after,
               len_after - len_before);
    else
        printf("  %-14s %12s  (%s)\n", "queue length", "n/a",
               len_after < 0 ? err_after : err_before);

    status = 0;
    if (d.produced < d.want) {
        fprintf(stderr, "redq-demo: produced %llu of %llu messages%s\n",
                (unsigned long long)d.produced, (unsigned long long)d.want,
                d.interrupted ? " (interrupted)" : "");
        status = 1;
    }
    if (d.failed > 0 || d.first_error) {
        fprintf(stderr, "redq-demo: %llu failed; first: %s (%s)\n",
                (unsigned long long)d.failed, d.first_errstr,
                redq_err_name(d.first_error));
        status = 1;
    }
    if (len_after >= 0 && len_before >= 0 && d.failed == 0 &&
        (len_after < len_before ||
         (unsigned long long)(len_after - len_before) < d.ok)) {
        /* Acknowledged but not in the list: lost messages (unless something
         * else pops from this queue during the run). More than acknowledged
         * is legitimate: a batch resent after a reconnect may land twice. */
        fprintf(stderr, "redq-demo: %llu acknowledged but the queue grew by only %lld\n",
                (unsigned long long)d.ok, len_after - len_before);
        status = 1;
    }

done:
    if (d.p) {
        /* Only reached on set-up failures after redq_producer_new: close and
         * let the loop release it. */
        redq_producer_close(d.p, on_closed, &d);
        event_base_dispatch(d.base);
    }
    if (d.progress)
        event_free(d.progress);
    if (d.sigterm)
        event_free(d.sigterm);
    if (d.sigint)
        event_free(d.sigint);
    if (d.pump)
        event_free(d.pump);
    if (d.base)
        event_base_free(d.base);
    free(d.payload);
    libevent_global_shutdown();
    return status;
}
