/*
 * fault-producer: one producer process of the fault harness (test/fault/).
 *
 *   fault-producer -u URL -l LOG -i ID -s SEED [-r RATE] [-b BIG_EVERY]
 *                  [-n NAME] [-V SHAPE,...] IDX:QUEUE...
 *
 * Produces RATE messages a second (default 300) from the deterministic
 * generator in fault-common.h, each to one of the queues (chosen from the
 * message's seed), until SIGTERM; then flushes, closes and exits 0. The
 * log gets, one flushed line each:
 *   S <pid>.<seq> <qidx> <len> <hash> <ms>             accepted by redq_produce
 *   R <pid>.<seq> <qidx> <status> <len> <hash> <ms> [<persisted>]   report
 *   X <pid>.<seq> <qidx> <rc>                          refused by redq_produce
 *   END <produced> <stored> <failed>                clean exit
 * where <hash> is fault_hash() of the bytes (for R: of the report's own
 * payload copy) and <ms> the wall clock. Uses only redq.h and libevent.
 */
#include <errno.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "redq.h"
#include "fault-common.h"

/* How long a stop may take before the process gives up: the flush is
 * bounded by message_timeout_ms, this only guards against a hang. */
#define STOP_LIMIT_S 60

typedef struct prod {
    struct event_base *base;
    redq_producer *p;
    FILE *log;
    unsigned id;
    uint64_t seed;
    const char **qname;
    int *qidx;
    int nq;
    uint64_t seq;     /* next message to produce */
    unsigned rate;    /* messages per second */
    unsigned big_every;
    const char *variants; /* ",a,b," or NULL: which shapes to send */
    int full;         /* waiting for on_ready */
    int stopping;
    uint64_t produced, stored, failed;
    struct event *tick, *sigterm, *limit;
    unsigned char *buf;
} prod;

static int queue_of(const prod *pr, uint64_t seq)
{
    uint64_t rng = pr->seed ^ ((uint64_t)pr->id << 20) ^ (seq * 0x9e3779b97f4a7c15ULL);
    return (int)(fault_splitmix(&rng) % (uint64_t)pr->nq);
}

/* -V a,b,c: only these shapes (the others' sequence numbers are skipped,
 * so the payloads of the rest stay the same as in a run without -V). */
static int variant_wanted(const prod *pr, const char *variant)
{
    char key[64];
    if (!pr->variants)
        return 1;
    snprintf(key, sizeof key, ",%s,", variant);
    return strstr(pr->variants, key) != NULL;
}

static int qslot(const prod *pr, const char *queue)
{
    for (int i = 0; i < pr->nq; i++)
        if (strcmp(pr->qname[i], queue) == 0)
            return pr->qidx[i];
    return -1;
}

static void on_report(redq_producer *p, const redq_report *r, void *user)
{
    prod *pr = user;
    uint64_t seq = (uint64_t)(uintptr_t)r->opaque;
    (void)p;
    if (r->status == 0)
        pr->stored++;
    else
        pr->failed++;
#ifdef FAULT_HAVE_PERSISTED
    fault_log(pr->log, "R %u.%llu %d %d %zu %016llx %lld %d\n", pr->id,
              (unsigned long long)seq, qslot(pr, r->queue), r->status, r->len,
              (unsigned long long)fault_hash(r->payload, r->len), fault_now_ms(),
              (int)r->persisted);
#else
    fault_log(pr->log, "R %u.%llu %d %d %zu %016llx %lld\n", pr->id,
              (unsigned long long)seq, qslot(pr, r->queue), r->status, r->len,
              (unsigned long long)fault_hash(r->payload, r->len), fault_now_ms());
#endif
}

/* Produce this tick's share of the rate; stop early on REDQ_EFULL (the
 * same message is retried once on_ready says there is room). */
static void produce_some(prod *pr)
{
    unsigned n = pr->rate / 100 ? pr->rate / 100 : 1;
    for (unsigned k = 0; k < n && !pr->full && !pr->stopping; k++) {
        const char *variant;
        size_t len = fault_payload(pr->buf, pr->seed, pr->id, pr->seq,
                                   pr->big_every, &variant);
        if (!variant_wanted(pr, variant)) {
            pr->seq++;
            continue;
        }
        int q = queue_of(pr, pr->seq);
        int rc = redq_produce(pr->p, pr->qname[q], pr->buf, len,
                              (void *)(uintptr_t)pr->seq);
        if (rc == REDQ_EFULL) {
            pr->full = 1;
            return;
        }
        if (rc < 0) {
            fault_log(pr->log, "X %u.%llu %d %d\n", pr->id,
                      (unsigned long long)pr->seq, pr->qidx[q], rc);
        } else {
            pr->produced++;
            fault_log(pr->log, "S %u.%llu %d %zu %016llx %lld %s\n", pr->id,
                      (unsigned long long)pr->seq, pr->qidx[q], len,
                      (unsigned long long)fault_hash(pr->buf, len),
                      fault_now_ms(), variant);
        }
        pr->seq++;
    }
}

static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    produce_some(arg);
}

static void on_ready(redq_producer *p, void *user)
{
    prod *pr = user;
    (void)p;
    pr->full = 0;
}

static void on_closed(void *user)
{
    prod *pr = user;
    pr->p = NULL;
    event_base_loopbreak(pr->base);
}

static void on_flushed(redq_producer *p, int status, void *user)
{
    (void)status;
    redq_producer_close(p, on_closed, user);
}

static void on_limit(evutil_socket_t fd, short what, void *arg)
{
    prod *pr = arg;
    (void)fd, (void)what;
    fault_log(pr->log, "STUCK stop did not finish in %d s\n", STOP_LIMIT_S);
    _exit(3);
}

static void on_sigterm(evutil_socket_t fd, short what, void *arg)
{
    prod *pr = arg;
    (void)fd, (void)what;
    if (pr->stopping)
        return;
    pr->stopping = 1;
    evtimer_del(pr->tick);
    struct timeval tv = {STOP_LIMIT_S, 0};
    evtimer_add(pr->limit, &tv);
    if (redq_producer_flush(pr->p, -1, on_flushed, pr) < 0)
        redq_producer_close(pr->p, on_closed, pr);
}

static void on_log(int level, int code, const char *msg, void *user)
{
    prod *pr = user;
    fprintf(stderr, "%lld producer %u: [%d] %.300s (%s)\n", fault_now_ms(), pr->id,
            level, msg, redq_err_name(code));
}

static void usage(void)
{
    fprintf(stderr, "usage: fault-producer -u URL -l LOG -i ID -s SEED [-r RATE] "
                    "[-b BIG_EVERY] [-n NAME] [-V SHAPE,...] IDX:QUEUE...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    prod pr;
    const char *url = NULL, *logpath = NULL, *name = "fault-p";
    int opt;

    memset(&pr, 0, sizeof pr);
    pr.rate = 300;
    char vbuf[512];
    while ((opt = getopt(argc, argv, "u:l:i:s:r:b:n:V:")) != -1) {
        switch (opt) {
        case 'u': url = optarg; break;
        case 'l': logpath = optarg; break;
        case 'i': pr.id = (unsigned)strtoul(optarg, NULL, 10); break;
        case 's': pr.seed = strtoull(optarg, NULL, 10); break;
        case 'r': pr.rate = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'b': pr.big_every = (unsigned)strtoul(optarg, NULL, 10); break;
        case 'n': name = optarg; break;
        case 'V':
            snprintf(vbuf, sizeof vbuf, ",%s,", optarg);
            pr.variants = vbuf;
            break;
        default: usage();
        }
    }
    if (!url || !logpath || optind >= argc)
        usage();
    pr.nq = argc - optind;
    pr.qname = calloc((size_t)pr.nq, sizeof *pr.qname);
    pr.qidx = calloc((size_t)pr.nq, sizeof *pr.qidx);
    pr.buf = malloc(FAULT_BUF_LEN);
    if (!pr.qname || !pr.qidx || !pr.buf)
        return 1;
    for (int i = 0; i < pr.nq; i++)
        if (fault_parse_queue(argv[optind + i], &pr.qidx[i], &pr.qname[i]) < 0)
            usage();

    pr.log = fopen(logpath, "a");
    if (!pr.log) {
        perror(logpath);
        return 1;
    }
    setvbuf(pr.log, NULL, _IOLBF, 1 << 16);
    signal(SIGPIPE, SIG_IGN);

    pr.base = event_base_new();
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = url;
    o.client_name = name;
    o.command_timeout_ms = 1000;
    o.connect_timeout_ms = 1000;
    o.reconnect_max_ms = 500;
    o.message_timeout_ms = 20000;
    o.max_pending_msgs = 20000;
    o.log = on_log;
    o.log_level = REDQ_LOG_WARN;
    o.log_user = &pr;
    o.on_report = on_report;
    o.on_report_user = &pr;
    o.on_ready = on_ready;
    o.on_ready_user = &pr;
    int rc = redq_producer_new(&pr.p, pr.base, &o);
    if (rc < 0) {
        fprintf(stderr, "fault-producer: redq_producer_new: %s\n", redq_strerror(rc));
        return 1;
    }

    pr.tick = event_new(pr.base, -1, EV_PERSIST, on_tick, &pr);
    pr.limit = evtimer_new(pr.base, on_limit, &pr);
    pr.sigterm = evsignal_new(pr.base, SIGTERM, on_sigterm, &pr);
    struct timeval tv = {0, 10000};
    event_add(pr.tick, &tv);
    event_add(pr.sigterm, NULL);

    event_base_dispatch(pr.base);

    fault_log(pr.log, "END %llu %llu %llu\n", (unsigned long long)pr.produced,
              (unsigned long long)pr.stored, (unsigned long long)pr.failed);
    event_free(pr.tick);
    event_free(pr.limit);
    event_free(pr.sigterm);
    event_base_free(pr.base);
    fclose(pr.log);
    free(pr.buf);
    free(pr.qname);
    free(pr.qidx);
    return 0;
}
