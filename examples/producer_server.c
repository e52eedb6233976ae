/*
 * producer_server: a line-oriented TCP front end for one redq producer.
 *
 *   producer_server [PORT [QUEUE]]      (default 7777 and "redq:lines";
 *                                        REDQ_URL says where Redis is)
 *
 * Every line a client sends becomes one message on QUEUE. Each line is
 * answered, in the order the lines came, with "OK\n" once Redis has
 * acknowledged it or "ERR <reason>\n" when it failed:
 *
 *   $ printf 'hello\nworld\n' | nc -q1 127.0.0.1 7777
 *   OK
 *   OK
 *
 * It shows the things an embedding server has to get right:
 *   - the reply for a message goes out when its report arrives,
 *     which may be after the client has gone away;
 *   - REDQ_EFULL is back-pressure: stop reading from the client until
 *     on_ready, rather than buffering without bound;
 *   - shutting down means flushing, then closing, then leaving the loop.
 * Lines end with "\n" (a "\r" before it is dropped); an unterminated tail
 * when the client hangs up is not a line and is ignored.
 */
#include "redq.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>

/* A client that sends this much without a newline is not speaking our
 * protocol; cut it off instead of buffering forever. */
#define MAX_LINE (1024 * 1024)

/* Stop reading from a client whose replies pile up unread beyond this: a
 * client that never reads must not make us hold its replies without bound. */
#define MAX_UNSENT_REPLIES (256 * 1024)

/* After the producer has closed, how long clients get to read their last
 * replies before the server exits anyway. */
#define DRAIN_SECONDS 2

struct conn;

typedef struct server {
    struct event_base *base;
    redq_producer *p;          /* NULL once closed */
    const char *queue;
    struct evconnlistener *listener;
    struct event *sigint, *sigterm;
    struct conn *conns;        /* every connection whose socket is open */
    struct conn *blocked_head; /* waiting for on_ready, first come first */
    struct conn *blocked_tail;
    int full;                  /* REDQ_EFULL seen, on_ready not yet */
    int stopping;              /* a signal came: take no more lines */
} server;

/* One line that has been handed to redq_produce() (or failed at once) and
 * whose reply has not been written yet. */
typedef struct line {
    struct line *next;
    struct conn *c;
    int done;   /* the report came (or produce failed at once) */
    int status; /* its status */
} line;

/*
 * A client connection. The socket (bev) and this struct have different
 * lifetimes: the socket goes when the client hangs up or errs, but the
 * struct must stay while reports for its lines can still arrive,
 * because each report carries a pointer into it (line->c). So the struct is
 * freed only when the socket is gone AND no line is outstanding.
 */
typedef struct conn {
    server *srv;
    struct bufferevent *bev; /* NULL once the socket is closed */
    struct conn *prev, *next; /* in srv->conns while bev != NULL */
    struct conn *next_blocked;
    int blocked;     /* in srv's blocked list */
    int eof;         /* the client has sent all it will send */
    int out_paused;  /* reading paused until the replies drain */
    int closing;     /* close the socket once the replies are written */
    line *head, *tail; /* replies owed, in the order of the lines */
} conn;

/* ------------------------------------------------------------------------ */
/* connections                                                               */
/* ------------------------------------------------------------------------ */

static void maybe_exit(server *srv)
{
    /* Leave the loop once the producer has closed and every client has its
     * replies; the timeout set in on_closed covers clients that never read. */
    if (srv->stopping && !srv->p && !srv->conns)
        event_base_loopexit(srv->base, NULL);
}

static void conn_maybe_free(conn *c)
{
    if (!c->bev && !c->head && !c->blocked)
        free(c);
}

static void unblock(conn *c)
{
    server *srv = c->srv;
    conn **pp;

    if (!c->blocked)
        return;
    /* O(number of blocked connections); fine for an example. */
    for (pp = &srv->blocked_head; *pp != c; pp = &(*pp)->next_blocked)
        ;
    *pp = c->next_blocked;
    if (srv->blocked_tail == c) {
        conn *t = srv->blocked_head;
        while (t && t->next_blocked)
            t = t->next_blocked;
        srv->blocked_tail = t;
    }
    c->next_blocked = NULL;
    c->blocked = 0;
}

/* Drop the socket. The struct lives on while reports are outstanding. */
static void conn_close(conn *c)
{
    server *srv = c->srv;

    if (!c->bev)
        return;
    bufferevent_free(c->bev);
    c->bev = NULL;
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    unblock(c);
    conn_maybe_free(c);
    maybe_exit(srv);
}

/* Read only when we can act on what arrives: not while the producer is
 * full (the bytes would just pile up in our input buffer instead of in the
 * kernel's, where TCP flow control pushes back on the client), not while
 * the client is not reading its replies, and not after EOF or a signal. */
static void conn_update_reading(conn *c)
{
    if (!c->bev)
        return;
    if (c->blocked || c->out_paused || c->eof || c->closing || c->srv->stopping)
        bufferevent_disable(c->bev, EV_READ);
    else
        bufferevent_enable(c->bev, EV_READ);
}

/* Write the replies that are due, in order. A reply waits for the ones
 * before it even if its own report came first, so that a client can match
 * replies to lines by counting. Frees the written lines. */
static void conn_write_replies(conn *c)
{
    while (c->head && c->head->done) {
        line *l = c->head;

        if (c->bev) {
            struct evbuffer *out = bufferevent_get_output(c->bev);
            if (l->status == 0)
                evbuffer_add(out, "OK\n", 3);
            else
                evbuffer_add_printf(out, "ERR %s\n", redq_strerror(l->status));
        }
        c->head = l->next;
        if (!c->head)
            c->tail = NULL;
        free(l);
    }
}

static int has_complete_line(conn *c)
{
    struct evbuffer *in = bufferevent_get_input(c->bev);
    return evbuffer_search_eol(in, NULL, NULL, EVBUFFER_EOL_LF).pos >= 0;
}

/* After EOF (or on shutdown), close once every reply has been written out.
 * Lines still unread in the input buffer keep it open, unless we are
 * stopping and will never read them. */
static void conn_maybe_finish(conn *c)
{
    if (!c->bev || c->closing)
        return;
    if (!c->eof && !c->srv->stopping)
        return;
    if (c->head || (!c->srv->stopping && has_complete_line(c)))
        return;
    if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
        conn_close(c);
    else
        c->closing = 1; /* write_cb closes once the output has drained */
}

static void block(conn *c)
{
    server *srv = c->srv;

    srv->full = 1;
    if (c->blocked)
        return;
    c->blocked = 1;
    c->next_blocked = NULL;
    if (srv->blocked_tail)
        srv->blocked_tail->next_blocked = c;
    else
        srv->blocked_head = c;
    srv->blocked_tail = c;
}

/* Turn the complete lines in the input buffer into messages, until the
 * buffer has none left, the producer is full, or the client is behind on
 * reading replies. */
static void conn_read_lines(conn *c)
{
    server *srv = c->srv;
    struct evbuffer *in, *out;

    if (!c->bev)
        return;
    in = bufferevent_get_input(c->bev);
    out = bufferevent_get_output(c->bev);
    while (!srv->stopping && !c->closing) {
        struct evbuffer_ptr eol;
        size_t eol_len = 0, len;
        unsigned char *data;
        line *l;
        int rc;

        if (evbuffer_get_length(out) > MAX_UNSENT_REPLIES) {
            c->out_paused = 1;
            break;
        }
        /* While others are waiting for on_ready, queue up behind them
         * instead of grabbing the room they are waiting for. */
        if (srv->full) {
            if (has_complete_line(c))
                block(c);
            break;
        }
        eol = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_LF);
        if (eol.pos < 0) {
            if (evbuffer_get_length(in) > MAX_LINE) {
                evbuffer_add_printf(out, "ERR line longer than %d bytes\n", MAX_LINE);
                evbuffer_drain(in, evbuffer_get_length(in));
                c->eof = 1; /* stop reading; close after the replies */
            }
            break;
        }
        len = (size_t)eol.pos;
        /* pullup makes the line contiguous; redq copies it, so the buffer
         * can be drained right after. */
        data = evbuffer_pullup(in, (ev_ssize_t)(len + eol_len));
        if (!data || !(l = calloc(1, sizeof *l))) {
            /* Out of memory: take nothing more from this client and close
             * it once the replies owed so far are written. */
            c->eof = 1;
            break;
        }
        if (len > 0 && data[len - 1] == '\r')
            len--;
        rc = redq_produce(srv->p, srv->queue, data, len, l);
        if (rc == REDQ_EFULL) {
            /* Leave the line in the buffer and try it again from on_ready;
             * no report will come for this attempt. */
            free(l);
            block(c);
            break;
        }
        evbuffer_drain(in, (size_t)eol.pos + eol_len);
        l->c = c;
        if (rc < 0) {
            /* Refused at once (REDQ_ETOOBIG, REDQ_ECLOSED, ...): no report
             * will come, so the reply is due now, after those before it. */
            l->done = 1;
            l->status = rc;
        }
        if (c->tail)
            c->tail->next = l;
        else
            c->head = l;
        c->tail = l;
        conn_write_replies(c);
    }
    conn_update_reading(c);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
    (void)bev;
    conn_read_lines(arg);
    conn_maybe_finish(arg);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
    conn *c = arg;

    /* Called when the output buffer has drained completely. */
    (void)bev;
    if (c->closing) {
        conn_close(c);
        return;
    }
    if (c->out_paused) {
        c->out_paused = 0;
        conn_read_lines(c);
        conn_maybe_finish(c);
    }
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
    conn *c = arg;

    (void)bev;
    if (what & BEV_EVENT_EOF) {
        /* Half-close: the client may still be reading, so answer the
         * lines it sent before closing our side. */
        c->eof = 1;
        conn_update_reading(c);
        conn_maybe_finish(c);
    } else if (what & BEV_EVENT_ERROR) {
        /* Nobody to answer: drop the socket now. Reports for its lines
         * still arrive later and are discarded (see conn_write_replies). */
        conn_close(c);
    }
}

static void accept_cb(struct evconnlistener *lis, evutil_socket_t fd,
                      struct sockaddr *addr, int socklen, void *arg)
{
    server *srv = arg;
    conn *c = calloc(1, sizeof *c);

    (void)lis;
    (void)addr;
    (void)socklen;
    if (!c || !(c->bev = bufferevent_socket_new(srv->base, fd, BEV_OPT_CLOSE_ON_FREE))) {
        fprintf(stderr, "producer_server: out of memory; dropping a client\n");
        free(c);
        evutil_closesocket(fd);
        return;
    }
    c->srv = srv;
    c->next = srv->conns;
    if (srv->conns)
        srv->conns->prev = c;
    srv->conns = c;
    bufferevent_setcb(c->bev, read_cb, write_cb, event_cb, c);
    bufferevent_enable(c->bev, EV_WRITE);
    conn_update_reading(c);
}

static void accept_error_cb(struct evconnlistener *lis, void *arg)
{
    /* Typically EMFILE. Keep serving the clients we have; libevent retries
     * accept() on the next readiness. */
    (void)lis;
    (void)arg;
    fprintf(stderr, "producer_server: accept: %s\n",
            evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
}

/* ------------------------------------------------------------------------ */
/* producer callbacks                                                        */
/* ------------------------------------------------------------------------ */

static void on_log(int level, int code, const char *msg, void *user)
{
    (void)user;
    fprintf(stderr, "redq[%d]: %s%s%s\n", level, msg, code < 0 ? " " : "",
            code < 0 ? redq_err_name(code) : "");
}

static void on_report(redq_producer *p, const redq_report *r, void *user)
{
    line *l = r->opaque;
    conn *c = l->c;

    (void)p;
    (void)user;
    l->done = 1;
    l->status = r->status;
    conn_write_replies(c);
    if (c->bev) {
        conn_maybe_finish(c);
        return; /* the socket is open, so c is still in use */
    }
    conn_maybe_free(c); /* the client left earlier; this may be the last line */
}

static void on_ready(redq_producer *p, void *user)
{
    server *srv = user;
    conn *c;

    (void)p;
    /* Resume the waiting connections in the order they were blocked. One
     * of them may fill the window again; it then goes to the back of the
     * line (block() sets full) and the rest keep waiting. */
    srv->full = 0;
    while (!srv->full && (c = srv->blocked_head) != NULL) {
        srv->blocked_head = c->next_blocked;
        if (!srv->blocked_head)
            srv->blocked_tail = NULL;
        c->next_blocked = NULL;
        c->blocked = 0;
        /* Data already in our input buffer raises no new read event, so
         * process it here rather than only re-enabling reads. */
        conn_read_lines(c);
        conn_maybe_finish(c);
    }
}

static void on_closed(void *user)
{
    server *srv = user;
    conn *c, *next;
    const struct timeval drain = {DRAIN_SECONDS, 0};

    srv->p = NULL;
    /* Every report has been made by now, so each client has all its replies
     * queued: close each connection once they are written. */
    for (c = srv->conns; c; c = next) {
        next = c->next;
        conn_maybe_finish(c);
    }
    event_base_loopexit(srv->base, &drain);
    maybe_exit(srv);
}

static void on_flushed(redq_producer *p, int status, void *user)
{
    (void)status;
    redq_producer_close(p, on_closed, user);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    server *srv = arg;
    conn *c;

    (void)sig;
    (void)what;
    if (!srv->p)
        return;
    if (srv->stopping) {
        /* Second signal: stop waiting for Redis. Outstanding lines are
         * reported REDQ_ECLOSED and answered "ERR ...". */
        redq_producer_close(srv->p, on_closed, srv);
        return;
    }
    fprintf(stderr, "producer_server: shutting down (signal again to not wait)\n");
    srv->stopping = 1;
    /* Take no new clients and no new lines; lines already accepted by the
     * producer are flushed to Redis and answered before we exit. */
    if (srv->listener) {
        evconnlistener_free(srv->listener);
        srv->listener = NULL;
    }
    for (c = srv->conns; c; c = c->next)
        conn_update_reading(c);
    if (redq_producer_flush(srv->p, -1, on_flushed, srv) < 0)
        redq_producer_close(srv->p, on_closed, srv);
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    server srv;
    redq_producer_options opts;
    struct sockaddr_in sin;
    long port = 7777;
    int rc, status = 1;

    memset(&srv, 0, sizeof srv);
    srv.queue = argc > 2 ? argv[2] : "redq:lines";
    if (argc > 1) {
        char *end;
        port = strtol(argv[1], &end, 10);
        if (*end || port < 1 || port > 65535) {
            fprintf(stderr, "usage: producer_server [PORT [QUEUE]]\n");
            return 2;
        }
    }

    /* A client that hangs up while we write its replies would otherwise kill
     * the whole process with SIGPIPE (libevent writes with writev(), which
     * has no MSG_NOSIGNAL). The write then fails with EPIPE instead and
     * event_cb drops that one connection. hiredis writes to Redis the same
     * way, so this protects the producer's connection too. */
    signal(SIGPIPE, SIG_IGN);

    srv.base = event_base_new();
    if (!srv.base) {
        fprintf(stderr, "producer_server: event_base_new failed\n");
        return 1;
    }

    redq_producer_options_init(&opts);
    opts.url = getenv("REDQ_URL"); /* NULL keeps the default */
    if (!opts.url)
        opts.url = "redis://127.0.0.1:6379";
    opts.client_name = "producer_server";
    opts.log = on_log;
    opts.log_level = REDQ_LOG_WARN;
    opts.log_user = &srv;
    opts.on_report = on_report;
    opts.on_report_user = &srv;
    opts.on_ready = on_ready;
    opts.on_ready_user = &srv;
    rc = redq_producer_new(&srv.p, srv.base, &opts);
    if (rc < 0) {
        fprintf(stderr, "producer_server: %s: %s\n", opts.url, redq_strerror(rc));
        goto out;
    }

    memset(&sin, 0, sizeof sin);
    sin.sin_family = AF_INET;
    sin.sin_port = htons((unsigned short)port);
    sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK); /* 127.0.0.1 only */
    srv.listener = evconnlistener_new_bind(srv.base, accept_cb, &srv,
                                           LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, -1,
                                           (struct sockaddr *)&sin, sizeof sin);
    if (!srv.listener) {
        fprintf(stderr, "producer_server: listen on 127.0.0.1:%ld: %s\n", port,
                evutil_socket_error_to_string(EVUTIL_SOCKET_ERROR()));
        redq_producer_close(srv.p, on_closed, &srv);
        srv.stopping = 1;
        event_base_dispatch(srv.base); /* until on_closed: that frees it */
        goto out;
    }
    evconnlistener_set_error_cb(srv.listener, accept_error_cb);

    srv.sigint = evsignal_new(srv.base, SIGINT, signal_cb, &srv);
    srv.sigterm = evsignal_new(srv.base, SIGTERM, signal_cb, &srv);
    if (!srv.sigint || !srv.sigterm) {
        fprintf(stderr, "producer_server: evsignal_new failed\n");
        goto out;
    }
    evsignal_add(srv.sigint, NULL);
    evsignal_add(srv.sigterm, NULL);
    fprintf(stderr, "producer_server: listening on 127.0.0.1:%ld, queue %s, redis %s\n",
            port, srv.queue, opts.url);

    event_base_dispatch(srv.base);
    status = srv.p ? 1 : 0;

out:
    if (srv.p) {
        /* Only on set-up failures: let the loop release the producer. */
        srv.stopping = 1;
        if (redq_producer_close(srv.p, on_closed, &srv) == 0)
            event_base_dispatch(srv.base);
    }
    /* Clients that did not read their last replies within DRAIN_SECONDS. */
    while (srv.conns) {
        conn *c = srv.conns;
        conn_close(c);
    }
    if (srv.listener)
        evconnlistener_free(srv.listener);
    if (srv.sigint)
        event_free(srv.sigint);
    if (srv.sigterm)
        event_free(srv.sigterm);
    event_base_free(srv.base);
    return status;
}
