/*
 * fault-consumer: one consumer process of the fault harness (test/fault/).
 *
 *   fault-consumer -u URL -l LOG -s SEED [-m alo|amo] [-p POOL] [-n NAME]
 *                  IDX:QUEUE...
 *
 * Consumes the queues until SIGTERM, then stops (redq_consumer_stop),
 * closes and exits 0. Each message gets one flushed log line *before* it is
 * acked, so a message whose ack reached Redis is always in the log:
 *   M <qidx> <pid>.<seq>|- <len> <hash> <attempt> <ms>
 *   STOP <status>                     the stop callback's status
 *   END <delivered> <acked>           clean exit
 * About one message in ten is acked later (within ~20 ms, in shuffled
 * order), so acks also arrive out of delivery order, as they do in servers
 * that hand work to other threads. Uses only redq.h and libevent.
 */
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <event2/event.h>

#include "redq.h"
#include "fault-common.h"

#define STOP_LIMIT_S 60
#define DEFER_MAX 256

typedef struct cons {
    struct event_base *base;
    redq_consumer *c;
    FILE *log;
    uint64_t rng;
    const char **qname;
    int *qidx;
    int nq;
    int stopping;
    uint64_t delivered, acked;
    redq_message *deferred[DEFER_MAX];
    int ndeferred;
    struct event *acker, *sigterm, *limit;
} cons;

static int qslot(const cons *cs, const char *queue)
{
    for (int i = 0; i < cs->nq; i++)
        if (strcmp(cs->qname[i], queue) == 0)
            return cs->qidx[i];
    return -1;
}

static void ack(cons *cs, redq_message *m)
{
    int rc = redq_ack(m);
    if (rc < 0)
        fault_log(cs->log, "A %d %s\n", rc, redq_err_name(rc));
    cs->acked++;
}

/* Ack the deferred messages in a shuffled order. */
static void ack_deferred(cons *cs)
{
    for (int i = cs->ndeferred - 1; i > 0; i--) {
        int j = (int)(fault_splitmix(&cs->rng) % (uint64_t)(i + 1));
        redq_message *t = cs->deferred[i];
        cs->deferred[i] = cs->deferred[j];
        cs->deferred[j] = t;
    }
    for (int i = 0; i < cs->ndeferred; i++)
        ack(cs, cs->deferred[i]);
    cs->ndeferred = 0;
}

static void on_acker(evutil_socket_t fd, short what, void *arg)
{
    (void)fd, (void)what;
    ack_deferred(arg);
}

static void on_message(redq_consumer *c, redq_message *m, void *user)
{
    cons *cs = user;
    const unsigned char *d = redq_msg_data(m);
    size_t len = redq_msg_len(m);
    unsigned pid;
    unsigned long long seq;
    char tag[48] = "-";
    (void)c;

    cs->delivered++;
    if (fault_find_tag(d, len, &pid, &seq))
        snprintf(tag, sizeof tag, "%u.%llu", pid, seq);
    fault_log(cs->log, "M %d %s %zu %016llx %d %lld\n", qslot(cs, redq_msg_queue(m)),
              tag, len, (unsigned long long)fault_hash(d, len),
              redq_msg_attempt(m), fault_now_ms());
    if (!cs->stopping && cs->ndeferred < DEFER_MAX &&
        fault_splitmix(&cs->rng) % 10 == 0) {
        cs->deferred[cs->ndeferred++] = m;
        return;
    }
    ack(cs, m);
}

static void on_closed(void *user)
{
    cons *cs = user;
    cs->c = NULL;
    event_base_loopbreak(cs->base);
}

static void on_stopped(redq_consumer *c, int status, void *user)
{
    cons *cs = user;
    fault_log(cs->log, "STOP %d\n", status);
    redq_consumer_close(c, on_closed, cs);
}

static void on_limit(evutil_socket_t fd, short what, void *arg)
{
    cons *cs = arg;
    (void)fd, (void)what;
    fault_log(cs->log, "STUCK stop did not finish in %d s\n", STOP_LIMIT_S);
    _exit(3);
}

static void on_sigterm(evutil_socket_t fd, short what, void *arg)
{
    cons *cs = arg;
    (void)fd, (void)what;
    if (cs->stopping)
        return;
    cs->stopping = 1;
    struct timeval tv = {STOP_LIMIT_S, 0};
    evtimer_add(cs->limit, &tv);
    /* The stop waits for every delivered message's ack: give the deferred
     * ones theirs now (the timer keeps acking any that arrive meanwhile). */
    ack_deferred(cs);
    if (redq_consumer_stop(cs->c, -1, on_stopped, cs) < 0)
        redq_consumer_close(cs->c, on_closed, cs);
}

static void on_log(int level, int code, const char *msg, void *user)
{
    (void)user;
    fprintf(stderr, "%lld consumer: [%d] %.300s (%s)\n", fault_now_ms(), level, msg,
            redq_err_name(code));
}

static void usage(void)
{
    fprintf(stderr, "usage: fault-consumer -u URL -l LOG -s SEED [-m alo|amo] "
                    "[-p POOL] [-n NAME] IDX:QUEUE...\n");
    exit(2);
}

int main(int argc, char **argv)
{
    cons cs;
    const char *url = NULL, *logpath = NULL, *name = "fault-c";
    int opt, delivery = REDQ_AT_LEAST_ONCE;
    size_t pool = 1;

    memset(&cs, 0, sizeof cs);
    while ((opt = getopt(argc, argv, "u:l:s:m:p:n:")) != -1) {
        switch (opt) {
        case 'u': url = optarg; break;
        case 'l': logpath = optarg; break;
        case 's': cs.rng = strtoull(optarg, NULL, 10); break;
        case 'm':
            if (strcmp(optarg, "alo") == 0)
                delivery = REDQ_AT_LEAST_ONCE;
            else if (strcmp(optarg, "amo") == 0)
                delivery = REDQ_AT_MOST_ONCE;
            else
                usage();
            break;
        case 'p': pool = strtoul(optarg, NULL, 10); break;
        case 'n': name = optarg; break;
        default: usage();
        }
    }
    if (!url || !logpath || optind >= argc)
        usage();
    cs.nq = argc - optind;
    cs.qname = calloc((size_t)cs.nq, sizeof *cs.qname);
    cs.qidx = calloc((size_t)cs.nq, sizeof *cs.qidx);
    if (!cs.qname || !cs.qidx)
        return 1;
    for (int i = 0; i < cs.nq; i++)
        if (fault_parse_queue(argv[optind + i], &cs.qidx[i], &cs.qname[i]) < 0)
            usage();

    cs.log = fopen(logpath, "a");
    if (!cs.log) {
        perror(logpath);
        return 1;
    }
    setvbuf(cs.log, NULL, _IOLBF, 1 << 16);
    signal(SIGPIPE, SIG_IGN);

    cs.base = event_base_new();
    redq_consumer_options o;
    redq_consumer_options_init(&o);
    o.url = url;
    o.client_name = name;
    o.command_timeout_ms = 1000;
    o.connect_timeout_ms = 1000;
    o.reconnect_max_ms = 500;
    o.pool_size = pool;
    o.pop_timeout_ms = 500;
    o.guarantee = delivery;
    /* Short enough that a killed or stopped consumer's messages come back
     * within the run; the stop waits at most this for acks. */
    o.consumer_ttl_ms = 3000;
    o.visibility_timeout_ms = 10000;
    o.retry_base_ms = 100;
    o.retry_max_ms = 1000;
    o.max_attempts = 50;
    o.stop_timeout_ms = 10000;
    o.log = on_log;
    o.log_level = REDQ_LOG_WARN;
    o.log_user = &cs;
    o.on_message = on_message;
    o.on_message_user = &cs;
    int rc = redq_consumer_new(&cs.c, cs.base, &o, cs.qname, (size_t)cs.nq);
    if (rc < 0) {
        fprintf(stderr, "fault-consumer: redq_consumer_new: %s\n", redq_strerror(rc));
        return 1;
    }

    cs.acker = event_new(cs.base, -1, EV_PERSIST, on_acker, &cs);
    cs.limit = evtimer_new(cs.base, on_limit, &cs);
    cs.sigterm = evsignal_new(cs.base, SIGTERM, on_sigterm, &cs);
    struct timeval tv = {0, 20000};
    event_add(cs.acker, &tv);
    event_add(cs.sigterm, NULL);

    event_base_dispatch(cs.base);

    fault_log(cs.log, "END %llu %llu\n", (unsigned long long)cs.delivered,
              (unsigned long long)cs.acked);
    event_free(cs.acker);
    event_free(cs.limit);
    event_free(cs.sigterm);
    event_base_free(cs.base);
    fclose(cs.log);
    free(cs.qname);
    free(cs.qidx);
    return 0;
}
