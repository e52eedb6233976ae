/*
 * job_server: an HTTP job server with its own workers, built from redq.h
 * alone. It is the pattern most embedders start from:
 *
 *   POST /jobs     the body (any bytes) becomes one message on the queue.
 *                  The answer waits for the message's report: 202
 *                  {"id":"..."} once Redis holds it, 503 {"error":...} when
 *                  it failed, 429 at once while the producer is full.
 *   GET /stats     the producer's and the consumer's counters as JSON.
 *   workers        a consumer in the same process (at-least-once, two pop
 *                  connections) whose handler is asynchronous: each job is
 *                  finished later, from a timer standing in for real work.
 *                  A job whose body is "poison" is rejected (straight to the
 *                  dead letters), one whose body is "flaky" fails its first
 *                  attempt (nack: retried after a backoff); every other job
 *                  is acked. Each finish prints "handled <id> attempt <n>
 *                  <verb>" on stdout.
 *   SIGTERM/INT    graceful shutdown within --grace-ms: take no more
 *                  requests, flush the producer, stop the consumer, close
 *                  both, free everything, leave the loop, exit 0. A second
 *                  signal stops waiting.
 *
 *   job_server [--listen 127.0.0.1:8080] [--url redis://127.0.0.1:6379]
 *              [--queue jobs] [--grace-ms 5000] [--work-ms 50]
 *
 *   $ curl -s --data-binary 'resize cat.png' http://127.0.0.1:8080/jobs
 *   {"id":"3f9c0a1b2c3d4e5f-1"}
 *
 * Once it takes jobs it says so on stderr ("job_server: ready on
 * 127.0.0.1:PORT ..."); --listen with port 0 binds any free port, and that
 * line tells which, for scripts.
 *
 * Everything runs on one libevent loop and one thread: redq's callbacks,
 * evhttp's and the work timers never run concurrently, so no locks.
 */
#include "redq.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

/* Bodies larger than this are refused by evhttp itself (413), before they
 * reach redq: a job server decides what a job may weigh, and redq's own
 * bound (max_message_bytes, 16 MiB by default) is only the last line. */
#define MAX_BODY_BYTES (1024 * 1024)

typedef struct job job;

typedef struct server {
    struct event_base *base;
    const char *url;
    const char *queue;
    int grace_ms;
    int work_ms;

    redq_admin *admin;    /* only during start-up: sets the queue's format */
    redq_producer *p;     /* NULL once closed */
    redq_consumer *c;     /* NULL once closed */
    int p_closing;        /* redq_producer_close() called */
    int c_stopping;       /* redq_consumer_stop() called */
    int c_closing;        /* redq_consumer_close() called */

    struct evhttp *http;
    struct evhttp_bound_socket *bound; /* NULL once we stopped accepting */
    struct event *sigint, *sigterm;

    job *jobs;            /* messages the workers hold (a timer each) */
    int full;             /* REDQ_EFULL seen, on_ready not yet */
    int stopping;         /* a signal came */
    long long deadline_ms;/* end of the grace period (monotonic clock) */

    /* The last counters of each handle, taken just before it is closed, so
     * that GET /stats still answers during the shutdown. */
    redq_producer_stats last_ps;
    redq_consumer_stats last_cs;
    int exit_status;
    char host[256];       /* where we listen, for the log */
    int port;
} server;

/* One message held by a worker. The redq_message stays valid until we
 * finish it (ack, nack or reject), however long that takes: a timer here,
 * a thread pool or a subprocess in a real server. */
struct job {
    server *srv;
    redq_message *msg;
    struct event *timer;
    job *prev, *next;
};

static long long now_ms(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* ------------------------------------------------------------------------ */
/* HTTP answers                                                              */
/* ------------------------------------------------------------------------ */

/* Append `s` as a JSON string. redq's error strings are ASCII, but an
 * example should not teach building JSON without escaping. */
static void json_str(struct evbuffer *b, const char *s)
{
    evbuffer_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char ch = (unsigned char)*s;
        if (ch == '"' || ch == '\\')
            evbuffer_add_printf(b, "\\%c", ch);
        else if (ch < 0x20)
            evbuffer_add_printf(b, "\\u%04x", ch);
        else
            evbuffer_add(b, s, 1);
    }
    evbuffer_add(b, "\"", 1);
}

static void reply_json(struct evhttp_request *req, int code, const char *reason,
                       struct evbuffer *body)
{
    evhttp_add_header(evhttp_request_get_output_headers(req), "Content-Type",
                      "application/json");
    evhttp_send_reply(req, code, reason, body);
}

static void reply_error(struct evhttp_request *req, int code, const char *reason,
                        const char *why)
{
    struct evbuffer *b = evbuffer_new();

    if (!b) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    evbuffer_add_printf(b, "{\"error\":");
    json_str(b, why);
    evbuffer_add_printf(b, "}\n");
    reply_json(req, code, reason, b);
    evbuffer_free(b);
}

/* ------------------------------------------------------------------------ */
/* intake: POST /jobs -> redq_produce -> report -> answer                    */
/* ------------------------------------------------------------------------ */

static void post_job(server *srv, struct evhttp_request *req)
{
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const unsigned char *body = NULL;
    int rc;

    if (srv->stopping || !srv->p) {
        /* Not ready yet (the queue's format is being set), or shutting down:
         * a keep-alive connection may still send requests after we stopped
         * accepting new connections. Tell the client to go elsewhere. */
        reply_error(req, 503, "Service Unavailable",
                    srv->stopping ? "shutting down" : "starting");
        return;
    }
    if (srv->full) {
        /* Back-pressure. redq refused a message with REDQ_EFULL and has not
         * called on_ready yet: refusing here, without calling redq_produce()
         * again, keeps the answer cheap and leaves the room that frees up
         * for on_ready to announce (redq keeps refusing until then anyway). */
        reply_error(req, 429, "Too Many Requests", "queue intake is full; retry later");
        return;
    }
    /* evhttp keeps the body in pieces; redq_produce() wants one span. It
     * copies the bytes before returning, so the request may go away (the
     * client may hang up) without affecting the message. */
    if (len > 0 && !(body = evbuffer_pullup(in, -1))) {
        reply_error(req, 500, "Internal Server Error", "out of memory");
        return;
    }
    /* The request itself is the opaque: the report brings it back, and that
     * is when the client gets its answer. Until then evhttp keeps the
     * request alive for us (also when the client disconnects: the reply is
     * then just dropped, and evhttp frees the request). */
    rc = redq_produce(srv->p, srv->queue, body, len, req);
    if (rc == 0)
        return;
    /* On an error return no report will come: answer now. */
    if (rc == REDQ_EFULL) {
        srv->full = 1;
        reply_error(req, 429, "Too Many Requests", "queue intake is full; retry later");
    } else if (rc == REDQ_ETOOBIG) {
        reply_error(req, 413, "Payload Too Large", redq_strerror(rc));
    } else {
        reply_error(req, 503, "Service Unavailable", redq_strerror(rc));
    }
}

static void on_report(redq_producer *p, const redq_report *r, void *user)
{
    struct evhttp_request *req = r->opaque;
    struct evbuffer *b = evbuffer_new();

    (void)p;
    (void)user;
    if (!b) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    /* The id is made when redq_produce() accepts the message and is the one
     * the workers see (the queue is in frames format, see start()), so the
     * client can match its job with the logs, the dead letters, a retry of
     * its own POST. The report's pointers are borrowed: use them here. */
    if (r->status == 0) {
        evbuffer_add_printf(b, "{\"id\":");
        json_str(b, r->id);
        evbuffer_add_printf(b, "}\n");
        reply_json(req, 202, "Accepted", b);
    } else {
        /* Not confirmed. "persisted": "possibly" means the command was
         * written and never answered: the job may still run, so a client
         * that retries should expect a duplicate, and can recognise it by
         * the id. */
        evbuffer_add_printf(b, "{\"error\":");
        json_str(b, r->errstr ? r->errstr : redq_strerror(r->status));
        evbuffer_add_printf(b, ",\"code\":\"%s\",\"id\":", redq_err_name(r->status));
        json_str(b, r->id);
        evbuffer_add_printf(b, ",\"persisted\":\"%s\"}\n",
                            r->persisted == REDQ_PERSIST_YES        ? "yes"
                            : r->persisted == REDQ_PERSIST_POSSIBLY ? "possibly"
                                                                     : "no");
        reply_json(req, 503, "Service Unavailable", b);
    }
    evbuffer_free(b);
}

static void on_ready(redq_producer *p, void *user)
{
    server *srv = user;

    /* Half the window is free again: take requests again. Clients that got
     * 429 retry on their own; nothing is queued up here waiting. */
    (void)p;
    srv->full = 0;
}

/* ------------------------------------------------------------------------ */
/* GET /stats                                                                */
/* ------------------------------------------------------------------------ */

static void get_stats(server *srv, struct evhttp_request *req)
{
    redq_producer_stats ps = srv->last_ps;
    redq_consumer_stats cs = srv->last_cs;
    struct evbuffer *b = evbuffer_new();

    /* The _get_stats macros pass sizeof, so this program keeps working
     * with a later library whose structs have grown. */
    if (srv->p)
        redq_producer_get_stats(srv->p, &ps);
    if (srv->c)
        redq_consumer_get_stats(srv->c, &cs);
    if (!b) {
        evhttp_send_error(req, HTTP_INTERNAL, NULL);
        return;
    }
    evbuffer_add_printf(b,
        "{\"produced\":%llu,\"stored\":%llu,\"failed\":%llu,\"pending\":%zu,"
        "\"handled\":%llu,\"acked\":%llu,\"nacked\":%llu,\"rejected\":%llu,"
        "\"retried\":%llu,\"dead_lettered\":%llu,\"unacked\":%zu,"
        "\"stopping\":%s}\n",
        (unsigned long long)ps.produced, (unsigned long long)ps.stored,
        (unsigned long long)ps.failed, ps.pending_msgs,
        (unsigned long long)cs.delivered, (unsigned long long)cs.acked,
        (unsigned long long)cs.nacked, (unsigned long long)cs.rejected,
        (unsigned long long)cs.retried, (unsigned long long)cs.dead_lettered,
        cs.unacked, srv->stopping ? "true" : "false");
    reply_json(req, 200, "OK", b);
    evbuffer_free(b);
}

static void on_request(struct evhttp_request *req, void *arg)
{
    server *srv = arg;
    const char *path = evhttp_uri_get_path(evhttp_request_get_evhttp_uri(req));
    enum evhttp_cmd_type cmd = evhttp_request_get_command(req);

    if (path && !strcmp(path, "/jobs")) {
        if (cmd == EVHTTP_REQ_POST)
            post_job(srv, req);
        else
            reply_error(req, 405, "Method Not Allowed", "POST a job");
    } else if (path && !strcmp(path, "/stats")) {
        if (cmd == EVHTTP_REQ_GET)
            get_stats(srv, req);
        else
            reply_error(req, 405, "Method Not Allowed", "GET the stats");
    } else {
        reply_error(req, 404, "Not Found", "POST /jobs or GET /stats");
    }
}

/* ------------------------------------------------------------------------ */
/* workers: on_message -> timer -> ack / nack / reject                        */
/* ------------------------------------------------------------------------ */

static int body_is(const redq_message *msg, const char *word)
{
    size_t n = strlen(word);
    return redq_msg_len(msg) == n && !memcmp(redq_msg_data(msg), word, n);
}

static void job_unlink(job *j)
{
    server *srv = j->srv;

    if (j->prev)
        j->prev->next = j->next;
    else
        srv->jobs = j->next;
    if (j->next)
        j->next->prev = j->prev;
    event_free(j->timer);
    free(j);
}

/* The work is done: finish the message exactly once. Everything read from
 * the message (id, body) is valid until the finishing call returns, so
 * print first. */
static void job_finish(job *j)
{
    redq_message *msg = j->msg;
    const char *verb;
    int rc;

    if (body_is(msg, "poison")) {
        /* It will never succeed: retrying it max_attempts times would only
         * delay the dead letter and keep a worker busy. */
        verb = "reject";
    } else if (body_is(msg, "flaky") && redq_msg_attempt(msg) == 1) {
        /* A transient failure: nack, and redq delivers it again after
         * retry_base_ms (doubling per attempt), as attempt 2. */
        verb = "nack";
    } else {
        verb = "ack";
    }
    printf("handled %s attempt %d %s\n", redq_msg_id(msg), redq_msg_attempt(msg), verb);
    if (!strcmp(verb, "reject"))
        rc = redq_reject(msg, "poison: this job can never succeed");
    else if (!strcmp(verb, "nack"))
        rc = redq_nack(msg, "flaky: failed on its first attempt");
    else
        rc = redq_ack(msg);
    /* Not errors of our doing, and msg is released whatever the code:
     * REDQ_ETIMEDOUT when visibility_timeout_ms passed first (or a stop
     * that timed out gave the message back): it is on its way to another
     * attempt; REDQ_ECLOSED after the consumer was closed. */
    if (rc < 0)
        fprintf(stderr, "job_server: %s: %s\n", verb, redq_err_name(rc));
    job_unlink(j);
}

static void on_work_done(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    job_finish(arg);
}

static void on_message(redq_consumer *c, redq_message *msg, void *user)
{
    server *srv = user;
    job *j = calloc(1, sizeof *j);
    struct timeval work = {srv->work_ms / 1000, (srv->work_ms % 1000) * 1000};

    (void)c;
    if (!j || !(j->timer = evtimer_new(srv->base, on_work_done, j))) {
        /* No memory to hold it: give it back for a later attempt rather
         * than drop it. */
        free(j);
        redq_nack(msg, "job_server: out of memory");
        return;
    }
    /* Return at once: the handler only takes the message. The consumer
     * keeps popping while we hold it, up to max_unacked messages. */
    j->srv = srv;
    j->msg = msg;
    j->next = srv->jobs;
    if (srv->jobs)
        srv->jobs->prev = j;
    srv->jobs = j;
    evtimer_add(j->timer, &work);
}

/* ------------------------------------------------------------------------ */
/* shutdown                                                                  */
/* ------------------------------------------------------------------------ */

static void on_log(int level, int code, const char *msg, void *user)
{
    (void)user;
    fprintf(stderr, "redq[%d]: %s%s%s\n", level, msg, code < 0 ? " " : "",
            code < 0 ? redq_err_name(code) : "");
}

/* Both handles are gone: release the rest and leave the loop. Every HTTP
 * request has had its answer by now (the producer's close reported every
 * message it had), so freeing evhttp frees no request that a report would
 * still point to. */
static void maybe_done(server *srv)
{
    if (srv->p || srv->c || srv->admin)
        return;
    if (srv->http) {
        evhttp_free(srv->http);
        srv->http = NULL;
    }
    if (srv->sigint) {
        event_free(srv->sigint);
        srv->sigint = NULL;
    }
    if (srv->sigterm) {
        event_free(srv->sigterm);
        srv->sigterm = NULL;
    }
    event_base_loopexit(srv->base, NULL);
}

static int remaining_ms(const server *srv)
{
    long long left = srv->deadline_ms - now_ms();
    return left > 0 ? (int)left : 0;
}

static void on_consumer_closed(void *user)
{
    server *srv = user;

    srv->c = NULL;
    /* The close callback does not wait for the messages we hold. If the stop
     * timed out, a worker may still have one: finishing it now returns
     * REDQ_ECLOSED and only frees it (redq gave it back to the queue, so
     * another instance does the job again). Every message must be finished
     * once, or its memory leaks. Here the work is only a timer, which
     * job_unlink() cancels; real work (a thread, a child process) must be
     * cancelled or waited for before its message is released. */
    while (srv->jobs) {
        job *j = srv->jobs;
        /* Any finishing call would do (each returns REDQ_ECLOSED now and
         * sends nothing); nack says what happened: the job was not done. */
        int rc;
        fprintf(stderr, "job_server: released %s attempt %d unfinished\n",
                redq_msg_id(j->msg), redq_msg_attempt(j->msg));
        rc = redq_nack(j->msg, "job_server: shut down before the job was done");
        if (rc != REDQ_ECLOSED)
            fprintf(stderr, "job_server: release: %s\n", redq_err_name(rc));
        job_unlink(j);
    }
    maybe_done(srv);
}

static void close_consumer(server *srv)
{
    if (!srv->c || srv->c_closing)
        return;
    srv->c_closing = 1;
    redq_consumer_get_stats(srv->c, &srv->last_cs);
    redq_consumer_close(srv->c, on_consumer_closed, srv);
}

static void on_stopped(redq_consumer *c, int status, void *user)
{
    server *srv = user;

    (void)c;
    /* 0: every job was finished and Redis confirmed the acks.
     * REDQ_ETIMEDOUT: the grace period ran out with jobs in the workers;
     * redq gave them back to the queue (the next instance runs them). */
    if (status < 0)
        fprintf(stderr, "job_server: consumer stop: %s\n", redq_err_name(status));
    close_consumer(srv);
}

static void stop_consumer(server *srv)
{
    if (!srv->c || srv->c_stopping || srv->c_closing)
        return;
    srv->c_stopping = 1;
    /* What the grace period has left after the flush. 0 is a real deadline
     * (give back now); a negative value would mean opts.stop_timeout_ms. */
    if (redq_consumer_stop(srv->c, remaining_ms(srv), on_stopped, srv) < 0)
        close_consumer(srv);
}

static void on_producer_closed(void *user)
{
    server *srv = user;

    srv->p = NULL;
    maybe_done(srv);
}

static void close_producer(server *srv)
{
    if (!srv->p || srv->p_closing)
        return;
    srv->p_closing = 1;
    redq_producer_get_stats(srv->p, &srv->last_ps);
    /* Whatever is still pending is reported REDQ_ECLOSED before
     * on_producer_closed, so each waiting client gets its 503. */
    redq_producer_close(srv->p, on_producer_closed, srv);
}

static void on_flushed(redq_producer *p, int status, void *user)
{
    server *srv = user;

    (void)p;
    /* 0: every accepted job is in Redis (or failed and was answered).
     * REDQ_ETIMEDOUT: the grace period passed first; closing now fails the
     * rest, and their clients get 503 with "persisted". */
    if (status < 0)
        fprintf(stderr, "job_server: producer flush: %s\n", redq_err_name(status));
    close_producer(srv);
    /* Only now stop the workers: the jobs just flushed are in Redis, and
     * the workers may still take some of them within the grace period. */
    stop_consumer(srv);
}

static void begin_shutdown(server *srv)
{
    srv->stopping = 1;
    srv->deadline_ms = now_ms() + srv->grace_ms;
    /* 1. No new connections. Requests already accepted still get their
     *    answer when their report comes; evhttp is freed last. */
    if (srv->bound) {
        evhttp_del_accept_socket(srv->http, srv->bound);
        srv->bound = NULL;
    }
    /* 2. Flush with a deadline: rd_kafka_flush(rk, timeout)'s pattern. The
     *    consumer is stopped once the flush ends (on_flushed). */
    if (!srv->p || redq_producer_flush(srv->p, srv->grace_ms, on_flushed, srv) < 0) {
        close_producer(srv);
        stop_consumer(srv);
    }
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    server *srv = arg;

    (void)what;
    if (!srv->stopping) {
        fprintf(stderr, "job_server: signal %d: shutting down within %d ms "
                        "(signal again to not wait)\n", (int)sig, srv->grace_ms);
        begin_shutdown(srv);
        return;
    }
    /* Second signal: stop waiting. Pending reports fail with REDQ_ECLOSED,
     * the held jobs are released by on_consumer_closed. */
    close_producer(srv);
    close_consumer(srv);
}

/* ------------------------------------------------------------------------ */
/* start-up                                                                  */
/* ------------------------------------------------------------------------ */

static int start_handles(server *srv)
{
    redq_producer_options po;
    redq_consumer_options co;
    const char *queues[1];
    char err[256];
    int rc;

    redq_producer_options_init(&po);
    po.url = srv->url;
    po.client_name = "job_server";
    po.log = on_log;
    po.log_level = REDQ_LOG_WARN;
    po.errbuf = err;
    po.errbuf_size = sizeof err;
    po.on_report = on_report;
    po.on_report_user = srv;
    po.on_ready = on_ready;
    po.on_ready_user = srv;
    /* An HTTP client waits for its answer; it should not wait 30 s (the
     * default) for a Redis that is down. */
    po.message_timeout_ms = 10000;
    rc = redq_producer_new(&srv->p, srv->base, &po);
    if (rc < 0) {
        fprintf(stderr, "job_server: producer: %s\n", err);
        return rc;
    }

    redq_consumer_options_init(&co);
    co.url = srv->url;
    co.client_name = "job_server";
    co.log = on_log;
    co.log_level = REDQ_LOG_WARN;
    co.errbuf = err;
    co.errbuf_size = sizeof err;
    co.on_message = on_message;
    co.on_message_user = srv;
    co.guarantee = REDQ_AT_LEAST_ONCE; /* a worker that dies loses no job */
    co.pool_size = 2;                  /* two blocking pops in flight */
    /* A failed job comes back after 100 ms, 200 ms, ... rather than after
     * a second: short, because this is a demonstration. */
    co.retry_base_ms = 100;
    /* A job not finished this long after delivery is presumed lost and is
     * retried. It must be well above the work's duration; a handler with
     * long jobs calls redq_msg_extend() instead of raising it for all. */
    co.visibility_timeout_ms = srv->work_ms > 7500 ? 4 * srv->work_ms : 30000;
    co.consumer_ttl_ms = 2 * co.visibility_timeout_ms;
    queues[0] = srv->queue;
    rc = redq_consumer_new(&srv->c, srv->base, &co, queues, 1);
    if (rc < 0) {
        fprintf(stderr, "job_server: consumer: %s\n", err);
        return rc;
    }
    return 0;
}

static void on_admin_closed(void *user)
{
    server *srv = user;

    srv->admin = NULL;
    maybe_done(srv);
}

/* The queue is in frames format now: ids travel with the messages. Start
 * the producer, the workers, and only then take requests. */
static void on_format(redq_admin *a, int status, const char *errstr, uint64_t n,
                      void *user)
{
    server *srv = user;

    (void)n;
    redq_admin_close(a, on_admin_closed, srv);
    if (srv->stopping)
        return; /* a signal came during start-up: start nothing */
    if (status < 0) {
        fprintf(stderr, "job_server: setting the format of %s: %s\n", srv->queue,
                errstr ? errstr : redq_strerror(status));
        srv->exit_status = 1;
        return; /* on_admin_closed leaves the loop */
    }
    if (start_handles(srv) < 0) {
        srv->exit_status = 1;
        if (srv->p)
            close_producer(srv);
        return;
    }
    fprintf(stderr, "job_server: ready on %s:%d, queue %s, redis %s\n", srv->host,
            srv->port, srv->queue, srv->url);
}

/* Ask Redis to keep the queue in frames format (a no-op when it already
 * is). On a plain queue the ready list holds bare payloads, so the
 * producer's id cannot travel with the message and the workers would see
 * ids of their own making: the client's id would match nothing. An
 * operator can do the same once with `redq format QUEUE frames`. */
static int start(server *srv)
{
    redq_admin_options ao;
    char err[256];
    int rc;

    redq_admin_options_init(&ao);
    ao.url = srv->url;
    ao.client_name = "job_server";
    ao.log = on_log;
    ao.log_level = REDQ_LOG_WARN;
    ao.errbuf = err;
    ao.errbuf_size = sizeof err;
    rc = redq_admin_new(&srv->admin, srv->base, &ao);
    if (rc < 0) {
        fprintf(stderr, "job_server: admin: %s\n", err);
        return rc;
    }
    rc = redq_admin_set_format(srv->admin, srv->queue, REDQ_FORMAT_FRAMES, on_format, srv);
    if (rc < 0) {
        fprintf(stderr, "job_server: set format: %s\n", redq_strerror(rc));
        redq_admin_close(srv->admin, on_admin_closed, srv);
        return rc;
    }
    return 0;
}

static int parse_int(const char *s, int min, int max, int *out)
{
    char *end;
    long v;

    errno = 0;
    v = strtol(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return -1;
    *out = (int)v;
    return 0;
}

static void usage(FILE *f)
{
    fprintf(f, "usage: job_server [--listen HOST:PORT] [--url URL] [--queue NAME]\n"
               "                  [--grace-ms MS] [--work-ms MS]\n"
               "  --listen   where to take HTTP (default 127.0.0.1:8080; port 0: any free)\n"
               "  --url      Redis (default $REDQ_URL, else redis://127.0.0.1:6379)\n"
               "  --queue    the job queue (default jobs)\n"
               "  --grace-ms how long a shutdown may take (default 5000)\n"
               "  --work-ms  how long each job takes (default 50)\n");
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"listen", required_argument, NULL, 'l'},
        {"url", required_argument, NULL, 'u'},
        {"queue", required_argument, NULL, 'q'},
        {"grace-ms", required_argument, NULL, 'g'},
        {"work-ms", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0}};
    server srv;
    const char *listen = "127.0.0.1:8080", *colon;
    int opt;

    memset(&srv, 0, sizeof srv);
    srv.url = getenv("REDQ_URL");
    if (!srv.url)
        srv.url = "redis://127.0.0.1:6379";
    srv.queue = "jobs";
    srv.grace_ms = 5000;
    srv.work_ms = 50;
    while ((opt = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (opt) {
        case 'l': listen = optarg; break;
        case 'u': srv.url = optarg; break;
        case 'q': srv.queue = optarg; break;
        case 'g':
            if (parse_int(optarg, 0, 3600000, &srv.grace_ms) < 0)
                goto bad;
            break;
        case 'w':
            if (parse_int(optarg, 0, 3600000, &srv.work_ms) < 0)
                goto bad;
            break;
        case 'h': usage(stdout); return 0;
        default: goto bad;
        }
    }
    colon = strrchr(listen, ':');
    if (optind != argc || !colon || colon == listen ||
        (size_t)(colon - listen) >= sizeof srv.host ||
        parse_int(colon + 1, 0, 65535, &srv.port) < 0)
        goto bad;
    memcpy(srv.host, listen, (size_t)(colon - listen));
    srv.host[colon - listen] = '\0';

    /* Scripts read our "handled" lines as they come. */
    setvbuf(stdout, NULL, _IOLBF, 0);
    /* A client that hangs up while evhttp writes its answer would otherwise
     * kill the process with SIGPIPE (libevent writes with writev()). redq
     * needs nothing of the sort: it guards its own writes. */
    signal(SIGPIPE, SIG_IGN);

    srv.base = event_base_new();
    srv.http = srv.base ? evhttp_new(srv.base) : NULL;
    srv.sigint = srv.base ? evsignal_new(srv.base, SIGINT, on_signal, &srv) : NULL;
    srv.sigterm = srv.base ? evsignal_new(srv.base, SIGTERM, on_signal, &srv) : NULL;
    if (!srv.http || !srv.sigint || !srv.sigterm) {
        fprintf(stderr, "job_server: out of memory\n");
        goto fail;
    }
    evhttp_set_max_body_size(srv.http, MAX_BODY_BYTES);
    evhttp_set_allowed_methods(srv.http, EVHTTP_REQ_GET | EVHTTP_REQ_POST);
    /* Requests that come before the producer is up get 503 "starting". */
    evhttp_set_gencb(srv.http, on_request, &srv);
    srv.bound = evhttp_bind_socket_with_handle(srv.http, srv.host, (ev_uint16_t)srv.port);
    if (!srv.bound) {
        fprintf(stderr, "job_server: cannot listen on %s\n", listen);
        goto fail;
    }
    {
        /* Port 0 asked for any free port: say which one we got. */
        struct sockaddr_storage ss;
        socklen_t sl = sizeof ss;
        evutil_socket_t fd = evhttp_bound_socket_get_fd(srv.bound);
        if (getsockname(fd, (struct sockaddr *)&ss, &sl) == 0 && ss.ss_family == AF_INET)
            srv.port = ntohs(((struct sockaddr_in *)&ss)->sin_port);
    }
    evsignal_add(srv.sigint, NULL);
    evsignal_add(srv.sigterm, NULL);
    if (start(&srv) < 0) {
        srv.exit_status = 1;
        if (!srv.admin)
            goto fail; /* nothing of redq's is alive: no loop needed */
    }

    /* Runs until maybe_done() has released everything registered on it. */
    event_base_dispatch(srv.base);
    event_base_free(srv.base);
    return srv.exit_status;

fail:
    if (srv.http)
        evhttp_free(srv.http);
    if (srv.sigint)
        event_free(srv.sigint);
    if (srv.sigterm)
        event_free(srv.sigterm);
    if (srv.base)
        event_base_free(srv.base);
    return 1;

bad:
    usage(stderr);
    return 2;
}
