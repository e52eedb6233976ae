/*
 * naive-producer: the baseline redq is measured against. One
 * `redisAsyncCommand(ac, cb, NULL, "LPUSH %s %b", ...)` per message, on a
 * libevent loop through hiredis's own bundled adapter, with a bounded number
 * of commands in flight. This is what an application writes without a
 * batching library, and what "instructions per message" in issue 4 is
 * compared with (bench/callgrind.sh).
 *
 *   naive-producer [--url redis://HOST:PORT] [--messages N] [--payload BYTES]
 *                  [--window N] [--queue NAME]
 *
 * Payloads are built exactly as redq-bench builds them (sequence number and
 * a timestamp in the first 16 bytes, 'x' after), so the harness work per
 * message is the same on both sides of the comparison.
 *
 * The queue is deleted first and its length checked at the end, over the
 * same connection. Exit status 0 when every LPUSH was acknowledged and the
 * list holds them all, 1 otherwise, 2 on bad usage.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/adapters/libevent.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#if defined(__GNUC__)
#define NOINLINE __attribute__((noinline))
#else
#define NOINLINE
#endif

#define STAMP_BYTES 16

typedef struct naive {
    struct event_base *base;
    redisAsyncContext *ac;
    const char *queue;
    char *payload;
    size_t payload_len;
    uint64_t want, sent, ok;
    size_t window, inflight;
    uint64_t t0, t_end;
    long long llen;
    int failed;
    int done;
} naive;

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void on_lpush(redisAsyncContext *ac, void *reply, void *privdata);

/* Send until the window is full or every message is out. */
static void refill(naive *n)
{
    while (n->inflight < n->window && n->sent < n->want) {
        uint64_t t = now_ns();
        memcpy(n->payload, &n->sent, 8);
        memcpy(n->payload + 8, &t, 8);
        if (redisAsyncCommand(n->ac, on_lpush, n, "LPUSH %s %b", n->queue,
                              n->payload, n->payload_len) != REDIS_OK) {
            fprintf(stderr, "naive-producer: redisAsyncCommand: %s\n",
                    n->ac->errstr[0] ? n->ac->errstr : "failed");
            n->failed = 1;
            redisAsyncDisconnect(n->ac);
            return;
        }
        n->inflight++;
        n->sent++;
    }
}

static void on_llen(redisAsyncContext *ac, void *reply, void *privdata)
{
    naive *n = privdata;
    redisReply *r = reply;
    if (r == NULL || r->type != REDIS_REPLY_INTEGER) {
        fprintf(stderr, "naive-producer: LLEN failed\n");
        n->failed = 1;
    } else {
        n->llen = r->integer;
    }
    n->done = 1;
    redisAsyncDisconnect(ac);
}

static void on_lpush(redisAsyncContext *ac, void *reply, void *privdata)
{
    naive *n = privdata;
    redisReply *r = reply;

    n->inflight--;
    if (r == NULL)
        return; /* disconnecting */
    if (r->type != REDIS_REPLY_INTEGER) {
        if (!n->failed)
            fprintf(stderr, "naive-producer: LPUSH: %s\n",
                    r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
        n->failed = 1;
        redisAsyncDisconnect(ac);
        return;
    }
    n->ok++;
    if (n->ok == n->want) {
        n->t_end = now_ns();
        if (redisAsyncCommand(ac, on_llen, n, "LLEN %s", n->queue) != REDIS_OK) {
            n->failed = 1;
            redisAsyncDisconnect(ac);
        }
        return;
    }
    refill(n);
}

static void on_del(redisAsyncContext *ac, void *reply, void *privdata)
{
    naive *n = privdata;
    (void)ac;
    if (reply == NULL || ((redisReply *)reply)->type != REDIS_REPLY_INTEGER) {
        fprintf(stderr, "naive-producer: DEL failed\n");
        n->failed = 1;
        redisAsyncDisconnect(ac);
        return;
    }
    n->t0 = now_ns();
    refill(n);
}

static void on_connect(const redisAsyncContext *ac, int status)
{
    naive *n = ac->data;
    if (status != REDIS_OK) {
        fprintf(stderr, "naive-producer: connect: %s\n", ac->errstr);
        n->failed = 1;
        n->ac = NULL; /* hiredis frees it */
        return;
    }
    if (redisAsyncCommand(n->ac, on_del, n, "DEL %s", n->queue) != REDIS_OK) {
        n->failed = 1;
        redisAsyncDisconnect(n->ac);
    }
}

static void on_disconnect(const redisAsyncContext *ac, int status)
{
    naive *n = ac->data;
    if (status != REDIS_OK && !n->done) {
        fprintf(stderr, "naive-producer: disconnected: %s\n", ac->errstr);
        n->failed = 1;
    }
    n->ac = NULL;
}

/* Everything after connect: a separate function so that callgrind can be
 * told to count only this (--toggle-collect=naive_measured). */
NOINLINE void naive_measured(naive *n);

NOINLINE void naive_measured(naive *n)
{
    event_base_dispatch(n->base);
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

/* redis://HOST:PORT only: this is a baseline, not a client. */
static int parse_url(const char *url, char *host, size_t cap, int *port)
{
    const char *s, *colon;
    uint64_t p = 6379;
    size_t n;
    if (strncmp(url, "redis://", 8) != 0)
        return -1;
    s = url + 8;
    if (strchr(s, '@') != NULL)
        return -1;
    colon = strchr(s, ':');
    n = colon ? (size_t)(colon - s) : strcspn(s, "/");
    if (n == 0 || n >= cap)
        return -1;
    memcpy(host, s, n);
    host[n] = '\0';
    if (colon) {
        char num[8];
        size_t k = strcspn(colon + 1, "/");
        if (k == 0 || k >= sizeof num)
            return -1;
        memcpy(num, colon + 1, k);
        num[k] = '\0';
        if (parse_u64(num, 1, 65535, &p) != 0)
            return -1;
    }
    *port = (int)p;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: naive-producer [--url redis://HOST:PORT] [--messages N] [--payload BYTES]\n"
               "                      [--window N] [--queue NAME]\n"
               "  --url       default $REDQ_URL (redis://HOST:PORT only)\n"
               "  --messages  default 200000\n"
               "  --payload   default 100, at least %d\n"
               "  --window    LPUSH commands in flight at most (default 1024)\n"
               "  --queue     default redq:naive\n",
               STAMP_BYTES);
}

int main(int argc, char **argv)
{
    naive n;
    const char *url = getenv("REDQ_URL");
    char host[256];
    int port, i;
    uint64_t v;
    double secs;

    memset(&n, 0, sizeof n);
    n.want = 200000;
    n.payload_len = 100;
    n.window = 1024;
    n.queue = "redq:naive";
    n.llen = -1;
    /* Every option takes a value: step over both. */
    for (i = 1; i < argc; i += 2) {
        const char *a = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-h") || !strcmp(a, "--help")) {
            usage(stdout);
            return 0;
        } else if (!strcmp(a, "--url") && val) {
            url = val;
        } else if (!strcmp(a, "--messages") && val &&
                   parse_u64(val, 1, (uint64_t)1 << 40, &v) == 0) {
            n.want = v;
        } else if (!strcmp(a, "--payload") && val &&
                   parse_u64(val, STAMP_BYTES, (uint64_t)512 << 20, &v) == 0) {
            n.payload_len = (size_t)v;
        } else if (!strcmp(a, "--window") && val &&
                   parse_u64(val, 1, 1000000, &v) == 0) {
            n.window = (size_t)v;
        } else if (!strcmp(a, "--queue") && val && *val) {
            n.queue = val;
        } else {
            fprintf(stderr, "naive-producer: bad argument '%s'\n", a);
            usage(stderr);
            return 2;
        }
    }
    if (url == NULL || !*url || parse_url(url, host, sizeof host, &port) != 0) {
        fprintf(stderr, "naive-producer: give --url redis://HOST:PORT (or set REDQ_URL)\n");
        return 2;
    }

    signal(SIGPIPE, SIG_IGN);
    n.payload = malloc(n.payload_len);
    n.base = event_base_new();
    if (n.payload == NULL || n.base == NULL) {
        fprintf(stderr, "naive-producer: out of memory\n");
        return 2;
    }
    memset(n.payload, 'x', n.payload_len);
    n.ac = redisAsyncConnect(host, port);
    if (n.ac == NULL || n.ac->err) {
        fprintf(stderr, "naive-producer: connect %s: %s\n", url,
                n.ac ? n.ac->errstr : "out of memory");
        if (n.ac)
            redisAsyncFree(n.ac);
        event_base_free(n.base);
        free(n.payload);
        return 1;
    }
    n.ac->data = &n;
    redisLibeventAttach(n.ac, n.base);
    redisAsyncSetConnectCallback(n.ac, on_connect);
    redisAsyncSetDisconnectCallback(n.ac, on_disconnect);

    naive_measured(&n);

    secs = n.t_end > n.t0 ? (double)(n.t_end - n.t0) / 1e9 : 0.0;
    printf("naive-producer: %llu x %zu B, window %zu: %llu ok in %.3f s, %.0f msg/s, list holds %lld\n",
           (unsigned long long)n.want, n.payload_len, n.window,
           (unsigned long long)n.ok, secs, secs > 0 ? (double)n.ok / secs : 0.0,
           n.llen);
    event_base_free(n.base);
    free(n.payload);
    libevent_global_shutdown();
    if (n.failed || n.ok != n.want || n.llen != (long long)n.want) {
        fprintf(stderr, "naive-producer: %llu of %llu acknowledged, list holds %lld\n",
                (unsigned long long)n.ok, (unsigned long long)n.want, n.llen);
        return 1;
    }
    return 0;
}
