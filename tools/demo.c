/*
 * redq-demo: the main job end to end. Producers push N messages while a
 * consumer pool pops them from the same queue, all on one event loop; every
 * message carries its send time, so the consumer measures end-to-end
 * latency, and a bitmap over sequence numbers catches loss and duplicates.
 *
 *   redq-demo [--url URL] [--messages N] [--payload BYTES] [--queue NAME]
 *             [--producers P] [--pool K] [--fresh] [--partitions N]
 *
 * Everything runs on the demo's own event_base, the way an embedding server
 * would use redq: P producers each produce a contiguous share of the
 * sequence numbers, and one consumer with K pop connections acks each
 * message as it arrives. Only before that loop starts (--fresh: DEL the
 * queue's lists) and after it has finished (LLEN) does the demo open
 * blocking side connections (tools/common/side.c, which also follows a
 * redis+sentinel:// URL to the master, and on a redis+cluster:// URL
 * reaches every master, where a partitioned queue's lists are): a
 * command-line program may block, the library may not.
 *
 * --partitions N sets the queue's partition count (redq_admin_set_partitions)
 * before the run, on the demo's loop: on a cluster the partitions spread over
 * the masters, and the summary shows how many messages each one carried.
 *
 * Payload layout:
 *   bytes  0..15  CLOCK_MONOTONIC nanoseconds just before redq_produce(),
 *                 as 16 hex digits (text, so a payload never starts with
 *                 a byte that means something to a reader, such as '{')
 *   bytes 16..23  sequence number, 0..N-1 (binary, host byte order: the
 *                 same process reads it back)
 *   bytes 24..31  this run's id, so messages left over from another run
 *                 are recognised (counted as foreign) instead of miscounted
 *   the rest      filler
 *
 * Latencies go into a log-bucket histogram (128 buckets per power of two,
 * so a percentile is within 1% of the true value; the maximum is exact):
 * constant memory whatever N is.
 *
 * Exit status: 0 when every message was acknowledged by Redis and consumed
 * exactly once; 1 when some failed, were lost or duplicated (or the run was
 * interrupted); 2 on bad usage or set-up.
 */
#include "redq.h"
#include "side.h" /* tools/common: the blocking side connection */

#include <errno.h>
#include <getopt.h>
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

#define DEFAULT_URL "redis://127.0.0.1:6379"
#define DEFAULT_QUEUE "redq:demo"

/* Messages produced per loop iteration, shared by the producers. Without a
 * cap one callback would fill the whole window before the loop got to
 * write anything (or to run the consumer); a few thousand keeps the
 * sockets busy while the producers are still filling batches. */
#define PRODUCE_CHUNK 4096

/* How often the progress line is redrawn. */
#define PROGRESS_MS 200

/* Once every producer has finished, how long the consumer may go without a
 * message before the missing ones are declared lost. */
#define DRAIN_IDLE_MS 3000

#define PAYLOAD_MIN 32
#define MAX_MESSAGES 1000000000ull /* the bitmap is N/8 bytes */
#define MAX_PRODUCERS 64

/* ------------------------------------------------------------------------ */
/* Latency histogram                                                         */
/* ------------------------------------------------------------------------ */

#define HIST_SUB_BITS 7
#define HIST_SUB (1u << HIST_SUB_BITS)
#define HIST_BUCKETS ((64 - HIST_SUB_BITS + 1) * HIST_SUB)

typedef struct hist {
    uint64_t n, max;
    uint64_t b[HIST_BUCKETS];
} hist;

static unsigned top_bit(uint64_t v) /* v > 0 */
{
#if defined(__GNUC__)
    return 63u - (unsigned)__builtin_clzll(v);
#else
    unsigned e = 0;
    while (v >>= 1)
        e++;
    return e;
#endif
}

/* Values below HIST_SUB get a bucket each; above, each power of two is
 * split into HIST_SUB buckets. */
static unsigned hist_index(uint64_t v)
{
    unsigned shift;

    if (v < HIST_SUB)
        return (unsigned)v;
    shift = top_bit(v) - HIST_SUB_BITS;
    return (shift + 1) * HIST_SUB + (unsigned)((v >> shift) - HIST_SUB);
}

static void hist_add(hist *h, uint64_t v)
{
    h->b[hist_index(v)]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

/* The value below which a fraction q of the samples fall: the middle of
 * the bucket holding that rank, never above the exact maximum. */
static uint64_t hist_quantile(const hist *h, double q)
{
    uint64_t rank, seen = 0;
    unsigned i;

    if (h->n == 0)
        return 0;
    rank = (uint64_t)(q * (double)h->n);
    if ((double)rank < q * (double)h->n)
        rank++; /* ceil */
    if (rank == 0)
        rank = 1;
    for (i = 0; i < HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t lo, width, mid;
            if (i < HIST_SUB)
                return i;
            width = (uint64_t)1 << (i / HIST_SUB - 1);
            lo = (uint64_t)(HIST_SUB + i % HIST_SUB) * width;
            mid = lo + width / 2;
            return mid < h->max ? mid : h->max;
        }
    }
    return h->max;
}

/* ------------------------------------------------------------------------ */
/* State                                                                     */
/* ------------------------------------------------------------------------ */

typedef struct demo demo;

typedef struct producer_slot {
    demo *d;
    redq_producer *p;
    struct event *pump; /* zero-timeout timer: produce the next chunk */
    uint64_t next, end; /* this producer's sequence numbers [next, end) */
    int finishing;      /* flush requested or close started */
    int closed;
} producer_slot;

struct demo {
    struct event_base *base;
    producer_slot *prods;
    unsigned nprod;
    redq_consumer *c;
    struct event *progress; /* redraws the progress line (tty only) */
    struct event *drain;    /* gives up on missing messages */
    struct event *sigint;
    struct event *sigterm;

    const char *queue;
    size_t payload_len;
    char *payload;   /* scratch: one message being built */
    uint64_t run_id;
    uint64_t want;   /* --messages */
    size_t per_tick; /* messages per producer per loop iteration */

    uint64_t produced; /* accepted by redq_produce() */
    uint64_t ok;       /* reports with status 0 */
    uint64_t failed;   /* reports with status < 0, and refused produces */
    int first_error;
    char first_errstr[256];

    uint64_t consumed; /* distinct sequence numbers received */
    uint64_t by_part[257]; /* deliveries by partition index (256: above) */
    int max_part;          /* highest partition index seen */
    uint64_t dups;     /* sequence numbers received again */
    uint64_t foreign;  /* messages not of this run */
    unsigned char *seen; /* bitmap over sequence numbers */
    hist *lat;           /* nanoseconds */

    unsigned prods_closed;
    int consumer_stopping, consumer_closed;
    int tty;
    int stopping;    /* produce no more (done, failure or signal) */
    int interrupted; /* stopped by a signal */
    double t_start;  /* the first produce */
    double t_last;   /* the last message consumed */
    double t_end;    /* the consumer was stopped */
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static double now_s(void)
{
    return (double)now_ns() / 1e9;
}

/* The send time at the start of a payload (see the layout at the top). */
static void put_hex16(char *out, uint64_t v)
{
    static const char digits[] = "0123456789abcdef";
    int i;

    for (i = 15; i >= 0; i--, v >>= 4)
        out[i] = digits[v & 15];
}

static int get_hex16(const char *s, uint64_t *out)
{
    uint64_t v = 0;
    int i;

    for (i = 0; i < 16; i++) {
        char c = s[i];
        if (c >= '0' && c <= '9')
            v = v << 4 | (uint64_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v = v << 4 | (uint64_t)(c - 'a' + 10);
        else
            return -1;
    }
    *out = v;
    return 0;
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

static void schedule_pump(producer_slot *ps)
{
    static const struct timeval zero = {0, 0};
    evtimer_add(ps->pump, &zero);
}

static void schedule_all_pumps(demo *d)
{
    unsigned i;
    for (i = 0; i < d->nprod; i++)
        if (d->prods[i].p && !d->prods[i].finishing)
            schedule_pump(&d->prods[i]);
}

/* ------------------------------------------------------------------------ */
/* The end of the run                                                        */
/* ------------------------------------------------------------------------ */

static void stop_events(demo *d)
{
    unsigned i;

    for (i = 0; i < d->nprod; i++)
        if (d->prods[i].pump)
            evtimer_del(d->prods[i].pump);
    if (d->progress)
        evtimer_del(d->progress);
    evtimer_del(d->drain);
    evsignal_del(d->sigint);
    evsignal_del(d->sigterm);
}

/* Every handle has closed: nothing of ours is left on the loop. */
static void maybe_exit(demo *d)
{
    if (d->prods_closed < d->nprod || (d->c && !d->consumer_closed))
        return;
    stop_events(d);
    event_base_loopexit(d->base, NULL);
}

static void on_consumer_closed(void *user)
{
    demo *d = user;

    d->consumer_closed = 1;
    d->c = NULL;
    maybe_exit(d);
}

static void on_consumer_stopped(redq_consumer *c, int status, void *user)
{
    (void)status; /* acks are immediate: nothing can be left unacked */
    redq_consumer_close(c, on_consumer_closed, user);
}

static void stop_consumer(demo *d)
{
    if (d->consumer_stopping || !d->c)
        return;
    d->consumer_stopping = 1;
    evtimer_del(d->drain);
    if (d->t_end == 0)
        d->t_end = now_s();
    if (redq_consumer_stop(d->c, -1, on_consumer_stopped, d) < 0)
        redq_consumer_close(d->c, on_consumer_closed, d);
}

/* After the producers: stop the consumer once it has everything Redis
 * acknowledged, or give the stragglers DRAIN_IDLE_MS more. */
static void check_consumer_done(demo *d)
{
    const struct timeval idle = {DRAIN_IDLE_MS / 1000,
                                 (DRAIN_IDLE_MS % 1000) * 1000};

    if (d->prods_closed < d->nprod || d->consumer_stopping)
        return;
    if (d->consumed >= d->ok)
        stop_consumer(d);
    else
        evtimer_add(d->drain, &idle); /* re-armed by every message */
}

static void drain_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    stop_consumer(arg);
}

/* ------------------------------------------------------------------------ */
/* Producers                                                                 */
/* ------------------------------------------------------------------------ */

static void on_producer_closed(void *user)
{
    producer_slot *ps = user;
    demo *d = ps->d;

    ps->p = NULL;
    ps->closed = 1;
    evtimer_del(ps->pump);
    d->prods_closed++;
    check_consumer_done(d);
    maybe_exit(d);
}

static void close_producer(producer_slot *ps)
{
    if (ps->p && redq_producer_close(ps->p, on_producer_closed, ps) == 0)
        ps->finishing = 1;
}

static void on_flushed(redq_producer *p, int status, void *user)
{
    (void)p;
    (void)status; /* the reports themselves say what happened */
    close_producer(user);
}

/* This producer has nothing more to send: wait for its reports, then close. */
static void finish_producer(producer_slot *ps)
{
    if (ps->finishing)
        return;
    ps->finishing = 1;
    if (redq_producer_flush(ps->p, -1, on_flushed, ps) < 0) {
        ps->finishing = 0;
        close_producer(ps);
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
     * to it, so a dead server costs one message timeout, not one per
     * window's worth of messages. */
    if (!d->stopping) {
        d->stopping = 1;
        schedule_all_pumps(d);
    }
}

static void on_report(redq_producer *p, const redq_report *r, void *user)
{
    producer_slot *ps = user;
    demo *d = ps->d;

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

static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
    producer_slot *ps = arg;
    demo *d = ps->d;
    size_t i;

    (void)fd;
    (void)what;
    if (ps->finishing || !ps->p)
        return;
    if (d->t_start == 0)
        d->t_start = now_s();

    for (i = 0; i < d->per_tick && !d->stopping && ps->next < ps->end; i++) {
        uint64_t t = now_ns();
        int rc;

        put_hex16(d->payload, t);
        memcpy(d->payload + 16, &ps->next, 8);
        rc = redq_produce(ps->p, d->queue, d->payload, d->payload_len, NULL);
        if (rc == REDQ_EFULL)
            return; /* on_ready reschedules us */
        if (rc < 0) {
            clear_progress(d);
            fprintf(stderr, "redq-demo: redq_produce: %s (%s)\n",
                    redq_strerror(rc), redq_err_name(rc));
            d->failed++;
            note_failure(d, rc, NULL);
            break;
        }
        d->produced++;
        ps->next++;
    }

    if (d->stopping || ps->next == ps->end)
        finish_producer(ps);
    else
        schedule_pump(ps);
}

/* ------------------------------------------------------------------------ */
/* The consumer                                                              */
/* ------------------------------------------------------------------------ */

static void on_message(redq_consumer *c, redq_message *m, void *user)
{
    demo *d = user;
    const char *data = redq_msg_data(m);
    uint64_t sent, seq, run;
    uint64_t t = now_ns();

    (void)c;
    if (redq_msg_len(m) != d->payload_len) {
        d->foreign++;
        redq_ack(m);
        return;
    }
    memcpy(&seq, data + 16, 8);
    memcpy(&run, data + 24, 8);
    if (get_hex16(data, &sent) < 0 || run != d->run_id || seq >= d->want) {
        redq_ack(m);
        d->foreign++;
        return;
    }
    redq_ack(m); /* nothing of it is needed any more */
    {
        int part = redq_msg_partition(m);
        if (part < 0 || part > 255)
            part = 256;
        d->by_part[part]++;
        if (part > d->max_part)
            d->max_part = part;
    }
    if (d->seen[seq / 8] & (1u << (seq % 8))) {
        d->dups++;
        return;
    }
    d->seen[seq / 8] |= (unsigned char)(1u << (seq % 8));
    d->consumed++;
    d->t_last = (double)t / 1e9;
    hist_add(d->lat, t >= sent ? t - sent : 0);
    if (d->prods_closed == d->nprod)
        check_consumer_done(d);
}

/* ------------------------------------------------------------------------ */
/* Progress and signals                                                      */
/* ------------------------------------------------------------------------ */

static void progress_cb(evutil_socket_t fd, short what, void *arg)
{
    demo *d = arg;
    double el = now_s() - d->t_start;

    (void)fd;
    (void)what;
    if (d->t_start == 0)
        return;
    fprintf(stderr, "\r\033[K  produced %llu/%llu  failed %llu  consumed %llu  %.0f msg/s",
            (unsigned long long)d->produced, (unsigned long long)d->want,
            (unsigned long long)d->failed, (unsigned long long)d->consumed,
            el > 0 ? (double)d->consumed / el : 0.0);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    demo *d = arg;
    unsigned i;

    (void)what;
    clear_progress(d);
    if (!d->interrupted) {
        /* First signal: stop producing; what is in flight still arrives. */
        fprintf(stderr, "redq-demo: %s: finishing the messages in flight (again to abort them)\n",
                sig == SIGINT ? "SIGINT" : "SIGTERM");
        d->interrupted = 1;
        d->stopping = 1;
        schedule_all_pumps(d);
    } else {
        /* Second: do not wait; pending messages are reported REDQ_ECLOSED. */
        for (i = 0; i < d->nprod; i++)
            close_producer(&d->prods[i]);
        stop_consumer(d);
    }
}

/* ------------------------------------------------------------------------ */
/* the side connection (tools/common/side.c): DEL before, LLEN after         */
/* ------------------------------------------------------------------------ */

/* Replies within this long; a Sentinel URL's sentinels each too. */
#define SIDE_TIMEOUT_MS 2000

/* Every server behind url (for a cluster, every node). 0, or -1. */
static int sync_servers(const char *url, side_servers *sv, char *errbuf,
                        size_t errcap)
{
    side_addr a;
    redisContext *c = side_open(url, SIDE_TIMEOUT_MS, &a, errbuf, errcap);

    if (!c)
        return -1;
    redisFree(c);
    return side_servers_open(&a, SIDE_TIMEOUT_MS, sv, errbuf, errcap);
}

/* DEL the queue's ready lists at url (the queue's own and its partitions',
 * on every master), before the loop starts (--fresh). 0, or -1 with errbuf
 * filled. */
static int sync_del(const char *url, const char *queue, char *errbuf,
                    size_t errcap)
{
    side_servers sv;
    int rc;

    if (sync_servers(url, &sv, errbuf, errcap) < 0)
        return -1;
    rc = side_queue_delete(&sv, queue, 1, NULL, errbuf, errcap);
    side_servers_close(&sv);
    return rc;
}

/* Messages waiting in the queue (all its partitions) at url, blocking,
 * after the loop is done. 0 and *len, or -1 with errbuf filled. */
static int sync_llen(const char *url, const char *queue, long long *len,
                     char *errbuf, size_t errcap)
{
    side_servers sv;
    int rc;

    if (sync_servers(url, &sv, errbuf, errcap) < 0)
        return -1;
    rc = side_queue_len(&sv, queue, len, errbuf, errcap);
    side_servers_close(&sv);
    return rc;
}

/* --partitions: set the queue's partition count on the demo's loop, before
 * anything else runs on it. */
typedef struct setp {
    struct event_base *base;
    int done, status;
    uint64_t before;
    char err[256];
} setp;

static void setp_done(redq_admin *a, int status, const char *errstr,
                      uint64_t n, void *user)
{
    setp *s = user;

    (void)a;
    s->done = 1;
    s->status = status;
    s->before = n;
    if (status != 0)
        snprintf(s->err, sizeof s->err, "%s", errstr ? errstr : redq_strerror(status));
    event_base_loopbreak(s->base);
}

static void setp_closed(void *user)
{
    setp *s = user;

    s->done = 1;
    event_base_loopbreak(s->base);
}

static int set_partitions(struct event_base *base, const char *url,
                          const char *queue, int n)
{
    redq_admin_options o;
    redq_admin *a;
    setp s;
    int rc;

    memset(&s, 0, sizeof s);
    s.base = base;
    redq_admin_options_init(&o);
    o.url = url;
    o.client_name = "redq-demo";
    if ((rc = redq_admin_new(&a, base, &o)) != 0) {
        fprintf(stderr, "redq-demo: redq_admin_new(%s): %s\n", url, redq_strerror(rc));
        return -1;
    }
    rc = redq_admin_set_partitions(a, queue, n, setp_done, &s);
    if (rc != 0) {
        s.status = rc;
        snprintf(s.err, sizeof s.err, "%s", redq_strerror(rc));
    } else {
        while (!s.done)
            if (event_base_dispatch(base) < 0)
                break;
    }
    rc = s.done ? s.status : rc;
    if (rc != 0)
        fprintf(stderr, "redq-demo: setting %d partitions on %s: %s\n", n, queue,
                s.err);
    else if (s.before != (uint64_t)n)
        fprintf(stderr, "redq-demo: %s: %llu partition(s) -> %d\n", queue,
                (unsigned long long)s.before, n);
    s.done = 0;
    if (redq_admin_close(a, setp_closed, &s) == 0)
        while (!s.done)
            if (event_base_dispatch(base) < 0)
                break;
    return rc == 0 ? 0 : -1;
}


/* ------------------------------------------------------------------------ */
/* main                                                                      */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: redq-demo [--url URL] [--messages N] [--payload BYTES] [--queue NAME]\n"
            "                 [--producers P] [--pool K] [--fresh] [--partitions N]\n"
            "  --url URL        Redis to use (default $REDQ_URL, else " DEFAULT_URL ")\n"
            "  --messages N     how many messages (default 1000000, at most 1e9)\n"
            "  --payload BYTES  size of each message (default 100, at least %d)\n"
            "  --queue NAME     the list to push to and pop from (default " DEFAULT_QUEUE ")\n"
            "  --producers P    producers, each sending its share (default 1, at most %d)\n"
            "  --pool K         the consumer's pop connections (default 1)\n"
            "  --fresh          delete the queue's lists before the run (tools/demo does,\n"
            "                   on its throwaway server or for a redq:demo* queue)\n"
            "  --partitions N   set the queue's partition count first (1..256; on a\n"
            "                   redis+cluster:// URL they spread over the masters)\n"
            "Exit status: 0 all acknowledged and consumed exactly once; 1 failed, lost,\n"
            "duplicated or interrupted; 2 usage or set-up.\n",
            PAYLOAD_MIN, MAX_PRODUCERS);
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

/* A run id that differs between runs (and processes). */
static uint64_t make_run_id(void)
{
    struct timespec ts;
    uint64_t x;

    clock_gettime(CLOCK_REALTIME, &ts);
    x = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    x ^= (uint64_t)getpid() << 32;
    /* splitmix64's finaliser: spread the bits */
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static void print_latency(const char *name, uint64_t ns)
{
    printf("  %-16s %12.3f ms\n", name, (double)ns / 1e6);
}

int main(int argc, char **argv)
{
    enum { OPT_URL = 256, OPT_MESSAGES, OPT_PAYLOAD, OPT_QUEUE, OPT_PRODUCERS,
           OPT_POOL, OPT_FRESH, OPT_PARTITIONS };
    static const struct option longopts[] = {
        {"url", required_argument, NULL, OPT_URL},
        {"messages", required_argument, NULL, OPT_MESSAGES},
        {"payload", required_argument, NULL, OPT_PAYLOAD},
        {"queue", required_argument, NULL, OPT_QUEUE},
        {"producers", required_argument, NULL, OPT_PRODUCERS},
        {"pool", required_argument, NULL, OPT_POOL},
        {"fresh", no_argument, NULL, OPT_FRESH},
        {"partitions", required_argument, NULL, OPT_PARTITIONS},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    const char *url = getenv("REDQ_URL");
    unsigned long long messages = 1000000, payload = 100, nprod = 1, pool = 1;
    unsigned long long partitions = 0;
    demo d;
    redq_consumer_options copts;
    redq_producer_options popts;
    long long len_after = -1;
    char err_after[256] = "";
    double secs;
    int rc, ch, status, fresh = 0;
    unsigned i;

    memset(&d, 0, sizeof d);
    d.queue = DEFAULT_QUEUE;
    if (!url || !*url)
        url = DEFAULT_URL;

    opterr = 0;
    while ((ch = getopt_long(argc, argv, ":h", longopts, NULL)) != -1) {
        int bad = 0;
        switch (ch) {
        case 'h':
            usage(stdout);
            return 0;
        case OPT_URL:
            bad = !*optarg;
            url = optarg;
            break;
        case OPT_MESSAGES:
            bad = parse_count(optarg, MAX_MESSAGES, &messages) < 0;
            break;
        case OPT_PAYLOAD:
            bad = parse_count(optarg, (unsigned long long)512 << 20, &payload) < 0 ||
                  payload < PAYLOAD_MIN;
            break;
        case OPT_QUEUE:
            bad = !*optarg;
            d.queue = optarg;
            break;
        case OPT_PRODUCERS:
            bad = parse_count(optarg, MAX_PRODUCERS, &nprod) < 0 || nprod == 0;
            break;
        case OPT_POOL:
            bad = parse_count(optarg, 1024, &pool) < 0 || pool == 0;
            break;
        case OPT_FRESH:
            fresh = 1;
            break;
        case OPT_PARTITIONS:
            bad = parse_count(optarg, 256, &partitions) < 0 || partitions == 0;
            break;
        case ':':
            fprintf(stderr, "redq-demo: '%s' needs a value\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        default:
            fprintf(stderr, "redq-demo: unknown argument '%s'\n", argv[optind - 1]);
            usage(stderr);
            return 2;
        }
        if (bad) {
            fprintf(stderr, "redq-demo: bad value for '%s': '%s'\n",
                    argv[optind - 1], optarg);
            usage(stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "redq-demo: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 2;
    }
    d.want = messages;
    d.payload_len = (size_t)payload;
    d.nprod = (unsigned)nprod;
    d.per_tick = PRODUCE_CHUNK / d.nprod;
    if (d.per_tick < 256)
        d.per_tick = 256;
    d.run_id = make_run_id();

    /* If Redis goes away mid-write, the write must fail with EPIPE (which
     * the library handles by reconnecting) rather than kill the demo:
     * hiredis writes with write(), which raises SIGPIPE. */
    signal(SIGPIPE, SIG_IGN);
    d.tty = isatty(STDERR_FILENO);

    /* Messages left from an earlier run would be counted as foreign, and
     * slow the start: --fresh clears the list first (only the list: the
     * queue's other keys hold nothing a fresh run would miscount). */
    if (fresh) {
        char err[512];

        if (sync_del(url, d.queue, err, sizeof err) < 0)
            fprintf(stderr, "redq-demo: could not delete %s (%s); running "
                    "anyway\n", d.queue, err);
    }

    status = 2;
    d.payload = malloc(d.payload_len);
    d.seen = calloc((size_t)(d.want / 8 + 1), 1);
    d.lat = calloc(1, sizeof *d.lat);
    d.prods = calloc(d.nprod, sizeof *d.prods);
    d.base = event_base_new();
    if (!d.payload || !d.seen || !d.lat || !d.prods || !d.base) {
        fprintf(stderr, "redq-demo: out of memory\n");
        goto done;
    }
    memset(d.payload, 'x', d.payload_len);
    memcpy(d.payload + 24, &d.run_id, 8);
    d.drain = evtimer_new(d.base, drain_cb, &d);
    d.sigint = evsignal_new(d.base, SIGINT, signal_cb, &d);
    d.sigterm = evsignal_new(d.base, SIGTERM, signal_cb, &d);
    if (d.tty)
        d.progress = event_new(d.base, -1, EV_PERSIST, progress_cb, &d);
    if (!d.drain || !d.sigint || !d.sigterm || (d.tty && !d.progress)) {
        fprintf(stderr, "redq-demo: out of memory\n");
        goto done;
    }

    if (partitions > 0 && set_partitions(d.base, url, d.queue, (int)partitions) < 0)
        goto done;

    redq_consumer_options_init(&copts);
    copts.url = url;
    copts.client_name = "redq-demo";
    copts.log = on_log;
    copts.log_level = REDQ_LOG_WARN;
    copts.log_user = &d;
    copts.on_message = on_message;
    copts.on_message_user = &d;
    copts.pool_size = (size_t)pool;

    redq_producer_options_init(&popts);
    popts.url = url;
    popts.client_name = "redq-demo";
    popts.log = on_log;
    popts.log_level = REDQ_LOG_WARN;
    popts.log_user = &d;
    popts.on_report = on_report;
    popts.on_ready = on_ready;
    /* The producers outrun the consumer: without a bound the list would
     * absorb the difference and latency would grow with the run. */
    popts.max_queue_len = 20000;
    popts.max_pending_msgs = 20000; /* and the producer's own window */

    /* The consumer first: it is popping by the time the first batch lands. */
    rc = redq_consumer_new(&d.c, d.base, &copts, &d.queue, 1);
    if (rc < 0) {
        fprintf(stderr, "redq-demo: redq_consumer_new(%s): %s (%s)\n", url,
                redq_strerror(rc), redq_err_name(rc));
        goto done;
    }
    for (i = 0; i < d.nprod; i++) {
        producer_slot *ps = &d.prods[i];
        ps->d = &d;
        ps->next = d.want * i / d.nprod;
        ps->end = d.want * (i + 1) / d.nprod;
        ps->pump = evtimer_new(d.base, pump_cb, ps);
        if (!ps->pump) {
            fprintf(stderr, "redq-demo: out of memory\n");
            goto done;
        }
        popts.on_report_user = ps;
        popts.on_ready_user = ps;
        rc = redq_producer_new(&ps->p, d.base, &popts);
        if (rc < 0) {
            fprintf(stderr, "redq-demo: redq_producer_new(%s): %s (%s)\n", url,
                    redq_strerror(rc), redq_err_name(rc));
            goto done;
        }
    }

    evsignal_add(d.sigint, NULL);
    evsignal_add(d.sigterm, NULL);
    if (d.progress) {
        const struct timeval every = {0, PROGRESS_MS * 1000};
        evtimer_add(d.progress, &every);
    }
    for (i = 0; i < d.nprod; i++)
        schedule_pump(&d.prods[i]);
    event_base_dispatch(d.base);
    clear_progress(&d);

    for (i = 0; i < d.nprod; i++)
        if (d.prods[i].p)
            break;
    if (i < d.nprod || d.c) {
        /* The loop ran out of events before every close callback: a bug on
         * one side or the other. Say so rather than hide it. */
        fprintf(stderr, "redq-demo: event loop ended before every handle closed\n");
        status = 2;
        goto done;
    }

    if (sync_llen(url, d.queue, &len_after, err_after, sizeof err_after) < 0)
        len_after = -1;

    if (d.t_start == 0)
        d.t_start = d.t_end;
    secs = (d.consumed ? d.t_last : d.t_end) - d.t_start;
    if (secs < 0)
        secs = 0;
    printf("redq-demo: %s, queue %s, %zu-byte payloads, %u producer%s, consumer pool %llu, %s\n",
           url, d.queue, d.payload_len, d.nprod, d.nprod == 1 ? "" : "s", pool,
           copts.guarantee == REDQ_AT_LEAST_ONCE ? "at-least-once (acked)"
                                               : "at-most-once");
    printf("  %-16s %12llu\n", "messages", (unsigned long long)d.want);
    printf("  %-16s %12.3f\n", "seconds", secs);
    printf("  %-16s %12.0f\n", "msg/s", secs > 0 ? (double)d.consumed / secs : 0.0);
    print_latency("latency p50", hist_quantile(d.lat, 0.50));
    print_latency("latency p99", hist_quantile(d.lat, 0.99));
    print_latency("latency p99.9", hist_quantile(d.lat, 0.999));
    print_latency("latency max", d.lat->max);
    printf("  %-16s %12llu\n", "produced ok", (unsigned long long)d.ok);
    printf("  %-16s %12llu\n", "produced failed", (unsigned long long)d.failed);
    printf("  %-16s %12llu\n", "consumed", (unsigned long long)d.consumed);
    printf("  %-16s %12llu\n", "duplicates", (unsigned long long)d.dups);
    printf("  %-16s %12llu\n", "lost",
           (unsigned long long)(d.ok > d.consumed ? d.ok - d.consumed : 0));
    if (d.foreign)
        printf("  %-16s %12llu  (not from this run)\n", "foreign",
               (unsigned long long)d.foreign);
    if (d.max_part > 0) {
        int k;
        printf("  %-16s", "by partition");
        for (k = 0; k <= d.max_part && k < 256; k++)
            printf(" %llu", (unsigned long long)d.by_part[k]);
        printf("\n");
    }
    if (len_after >= 0)
        printf("  %-16s %12lld\n", "queue length", len_after);
    else
        printf("  %-16s %12s  (%s)\n", "queue length", "n/a", err_after);

    status = 0;
    if (d.produced + d.failed < d.want || d.interrupted) {
        fprintf(stderr, "redq-demo: produced %llu of %llu messages%s\n",
                (unsigned long long)d.produced, (unsigned long long)d.want,
                d.interrupted ? " (interrupted)" : "");
        status = 1;
    }
    if (d.failed > 0) {
        fprintf(stderr, "redq-demo: %llu failed; first: %s (%s)\n",
                (unsigned long long)d.failed, d.first_errstr,
                redq_err_name(d.first_error));
        status = 1;
    }
    if (d.consumed != d.ok) {
        /* Fewer: acknowledged but never consumed (lost). More: some of the
         * failed ones arrived after all (a timed-out batch in flight). */
        fprintf(stderr, "redq-demo: %llu acknowledged by Redis but %llu consumed\n",
                (unsigned long long)d.ok, (unsigned long long)d.consumed);
        status = 1;
    }
    if (d.dups > 0) {
        fprintf(stderr, "redq-demo: %llu messages consumed more than once\n",
                (unsigned long long)d.dups);
        status = 1;
    }

done:
    if (status == 2 && d.base) {
        /* Set-up failed half way: close what was made, and run the loop
         * until the library has released it (then no event is left). */
        int open = 0;
        if (d.c && !d.consumer_closed) {
            d.consumer_stopping = 1;
            redq_consumer_close(d.c, on_consumer_closed, &d);
            open = 1;
        }
        for (i = 0; d.prods && i < d.nprod; i++)
            if (d.prods[i].p) {
                close_producer(&d.prods[i]);
                open = 1;
            }
        if (open)
            event_base_dispatch(d.base);
    }
    for (i = 0; d.prods && i < d.nprod; i++)
        if (d.prods[i].pump)
            event_free(d.prods[i].pump);
    if (d.progress)
        event_free(d.progress);
    if (d.sigterm)
        event_free(d.sigterm);
    if (d.sigint)
        event_free(d.sigint);
    if (d.drain)
        event_free(d.drain);
    if (d.base)
        event_base_free(d.base);
    free(d.prods);
    free(d.lat);
    free(d.seen);
    free(d.payload);
    libevent_global_shutdown();
    return status;
}
