/*
 * One self-healing connection to a Redis server.
 *
 * This is the only file that touches hiredis's async API and its libevent
 * adapter. States (see docs/DESIGN.md for the diagram):
 *
 *   IDLE -> RESOLVING -> CONNECTING -> HANDSHAKE -> READY
 *              ^             |             |          |
 *              +--- BACKOFF <+-------------+----------+   (any failure)
 *
 * connect_timeout_ms bounds RESOLVING + CONNECTING + HANDSHAKE together:
 * hiredis 0.14 has no connect timeout of its own, so a libevent timer does
 * it. Every command sent records a reply deadline in a ring that mirrors
 * hiredis's own callback list (replies come back in order, so the ring's head
 * is always the oldest outstanding command); a reply that misses its deadline
 * means the server or the path to it is stuck, and the connection is dropped
 * and redone. hiredis 0.14 has no command timeout either.
 *
 * When a connection goes away, hiredis calls every pending callback with a
 * NULL reply; those are passed on as NULL, which callers must treat as
 * "outcome unknown" (the command may or may not have run).
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "redq_private.h"

enum conn_state {
    ST_IDLE,
    ST_RESOLVING,
    ST_CONNECTING,
    ST_HANDSHAKE,
    ST_READY,
    ST_BACKOFF
};

static const char *const state_names[] = {
    "idle", "resolving", "connecting", "handshake", "ready", "backoff"};

typedef struct pending {
    redq__reply_cb cb;
    void *arg;
    uint64_t deadline_us;
} pending;

struct redq__conn {
    struct event_base *base;
    redisAsyncContext *ac;
    enum conn_state state;

    /* What to connect to, copied from the URL and options. */
    int is_unix;
    char *host;
    char *path;
    int port;
    char *user;
    char *password;
    int db;
    char *client_name;
    int connect_timeout_ms;
    int command_timeout_ms;
    int reconnect_min_ms;
    int reconnect_max_ms;
    const redq__logger *log;

    redq__resolver *resolver;
    redq__arena *arena; /* replies built here when asked for (reply.c) */
    char ip[64];
    char where[300]; /* "host:port" or "unix:/path", for messages */

    struct event *t_state; /* connect deadline, or the backoff delay */
    struct event *t_cmd;   /* reply deadline of the oldest command */
    int t_cmd_armed;

    /* Outstanding commands, oldest first: a ring that grows by doubling. */
    pending *ring;
    size_t ring_cap, ring_head, ring_len;

    int dying; /* hiredis is tearing the context down: refuse sends */
    int handshake_left;
    int attempt; /* consecutive failed attempts, for the backoff */
    uint64_t ready_since_us;
    int server_version;
    int want_client_id;
    int load_scripts;
    long long client_id;
    uint32_t rng;

    int last_code;
    char last_err[256];

    redq__conn_up_cb on_up;
    redq__conn_down_cb on_down;
    void *arg;
};

static void conn_drop(redq__conn *c, int code, const char *fmt, ...)
    REDQ__PRINTF(3, 4);
static void start_attempt(redq__conn *c);

/* ---- the pending ring --------------------------------------------------- */

static int ring_push(redq__conn *c, redq__reply_cb cb, void *arg,
                     uint64_t deadline)
{
    if (c->ring_len == c->ring_cap) {
        size_t ncap = c->ring_cap ? c->ring_cap * 2 : 64;
        pending *n = malloc(ncap * sizeof *n);
        size_t i;
        if (n == NULL)
            return REDQ_ENOMEM;
        for (i = 0; i < c->ring_len; i++)
            n[i] = c->ring[(c->ring_head + i) % c->ring_cap];
        free(c->ring);
        c->ring = n;
        c->ring_cap = ncap;
        c->ring_head = 0;
    }
    c->ring[(c->ring_head + c->ring_len) % c->ring_cap] =
        (pending){cb, arg, deadline};
    c->ring_len++;
    return 0;
}

static void ring_unpush(redq__conn *c)
{
    c->ring_len--;
}

static pending ring_shift(redq__conn *c)
{
    pending p = c->ring[c->ring_head];
    c->ring_head = (c->ring_head + 1) % c->ring_cap;
    c->ring_len--;
    return p;
}

/* ---- small helpers ------------------------------------------------------ */

static uint32_t rng_next(redq__conn *c)
{
    /* xorshift32: jitter only needs to de-synchronise clients. */
    uint32_t x = c->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return c->rng = x;
}

static struct timeval tv_ms(long ms)
{
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

static const char *where(const redq__conn *c)
{
    return c->where;
}

static char *dup_or_null(const char *s)
{
    char *d;
    size_t n;
    if (s == NULL)
        return NULL;
    n = strlen(s) + 1;
    d = malloc(n);
    if (d != NULL)
        memcpy(d, s, n);
    return d;
}

static void arm_cmd_timer(redq__conn *c)
{
    uint64_t now, dl;
    if (c->ring_len == 0 || c->t_cmd_armed)
        return;
    now = redq__now_us();
    dl = c->ring[c->ring_head].deadline_us;
    {
        struct timeval tv = tv_ms(dl > now ? (long)((dl - now) / 1000) + 1 : 0);
        event_add(c->t_cmd, &tv);
    }
    c->t_cmd_armed = 1;
}

/* ---- the loop adapter ---------------------------------------------------- */

/*
 * hiredis asks for read/write interest through ev hooks. Its bundled
 * libevent adapter uses one-shot events, so every read re-arms with
 * epoll_ctl, and every command arms the write event and every write
 * disarms it: four epoll_ctl calls per request/reply at low load.
 *
 * This adapter keeps the read event persistent, and writes without asking
 * epoll at all when it can: a connected socket almost always has room, so
 * new output is written from a deferred event at the end of the current
 * loop iteration (which also gathers everything queued in that iteration
 * into one write). Only a partial write arms the real write event, until
 * the output buffer has drained.
 */
typedef struct loop_io {
    redisAsyncContext *ac;
    struct event *rev, *wev; /* persistent: fd readable / writable */
    struct event *flush;     /* deferred write, no fd */
    int reading;
    int want_write; /* hiredis has output */
    int wev_armed;  /* waiting for writability (connect, partial write) */
    int in_flush;
} loop_io;

static void io_read_cb(evutil_socket_t fd, short what, void *arg)
{
    loop_io *io = arg;
    (void)fd;
    (void)what;
    redisAsyncHandleRead(io->ac);
}

static void io_write_cb(evutil_socket_t fd, short what, void *arg)
{
    loop_io *io = arg;
    (void)fd;
    (void)what;
    redisAsyncHandleWrite(io->ac);
}

static void io_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    loop_io *io = arg;
    (void)fd;
    (void)what;
    if (!io->want_write || io->wev_armed)
        return;
    /* A write that cannot finish asks for the write event (io_add_write
     * with in_flush set). The context may be freed inside: io too. */
    io->in_flush = 1;
    redisAsyncHandleWrite(io->ac);
}

static void io_add_read(void *arg)
{
    loop_io *io = arg;
    if (!io->reading && event_add(io->rev, NULL) == 0)
        io->reading = 1;
}

static void io_del_read(void *arg)
{
    loop_io *io = arg;
    if (io->reading && event_del(io->rev) == 0)
        io->reading = 0;
}

static void io_add_write(void *arg)
{
    loop_io *io = arg;
    io->want_write = 1;
    if (io->wev_armed)
        return;
    if (io->in_flush || !(io->ac->c.flags & REDIS_CONNECTED)) {
        /* Not connected yet, or the socket is full: wait for epoll. */
        if (event_add(io->wev, NULL) == 0)
            io->wev_armed = 1;
        return;
    }
    event_active(io->flush, EV_WRITE, 0);
}

static void io_del_write(void *arg)
{
    loop_io *io = arg;
    io->want_write = 0;
    io->in_flush = 0;
    if (io->wev_armed && event_del(io->wev) == 0)
        io->wev_armed = 0;
}

static void io_cleanup(void *arg)
{
    loop_io *io = arg;
    event_free(io->rev);
    event_free(io->wev);
    event_free(io->flush);
    free(io);
}

static int io_attach(redisAsyncContext *ac, struct event_base *base)
{
    loop_io *io = calloc(1, sizeof *io);
    if (io == NULL)
        return -1;
    io->ac = ac;
    io->rev = event_new(base, ac->c.fd, EV_READ | EV_PERSIST, io_read_cb, io);
    io->wev = event_new(base, ac->c.fd, EV_WRITE | EV_PERSIST, io_write_cb, io);
    io->flush = event_new(base, -1, 0, io_flush_cb, io);
    if (io->rev == NULL || io->wev == NULL || io->flush == NULL) {
        if (io->rev != NULL)
            event_free(io->rev);
        if (io->wev != NULL)
            event_free(io->wev);
        if (io->flush != NULL)
            event_free(io->flush);
        free(io);
        return -1;
    }
    ac->ev.data = io;
    ac->ev.addRead = io_add_read;
    ac->ev.delRead = io_del_read;
    ac->ev.addWrite = io_add_write;
    ac->ev.delWrite = io_del_write;
    ac->ev.cleanup = io_cleanup;
    /* A non-blocking connect completes with writability. */
    io_add_read(io);
    io_add_write(io);
    return 0;
}

/* ---- hiredis callbacks -------------------------------------------------- */

/*
 * Every reply, and every NULL of a teardown, comes through here. The ring's
 * head is the command it answers: hiredis keeps its callbacks in a FIFO and
 * so do we.
 */
static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    redq__conn *c = ac->data;
    pending p;
    (void)privdata;
    if (c == NULL || c->ring_len == 0)
        return;
    /* A NULL on the live context means hiredis is failing it (the
     * disconnect callback follows): no new command may go onto it. */
    if (reply == NULL && c->ac == ac)
        c->dying = 1;
    p = ring_shift(c);
    p.cb(c, reply, p.arg);
}

static void on_connect(const redisAsyncContext *cac, int status);
static void on_disconnect(const redisAsyncContext *cac, int status);

/* ---- the handshake ------------------------------------------------------ */

static void handshake_step_done(redq__conn *c)
{
    if (--c->handshake_left > 0)
        return;
    event_del(c->t_state);
    c->state = ST_READY;
    c->ready_since_us = redq__now_us();
    c->last_code = 0;
    c->last_err[0] = '\0';
    redq__log(c->log, REDQ_LOG_INFO, 0, "connected to %s (redis %d.%d.%d)",
              where(c), c->server_version / 10000,
              c->server_version / 100 % 100, c->server_version % 100);
    if (c->on_up != NULL)
        c->on_up(c, c->arg);
}

/* A handshake reply: NULL means the connection is already going down (the
 * drop path has recorded why), so there is nothing to add. */
static int hs_reply_ok(redq__conn *c, redisReply *r, int code,
                       const char *what)
{
    if (r == NULL || c->state != ST_HANDSHAKE)
        return 0;
    if (r->type == REDIS_REPLY_ERROR) {
        int ecode = redq__err_from_reply(r->str, (size_t)r->len);
        if (code == REDQ_EAUTH || ecode == REDQ_EAUTH)
            ecode = REDQ_EAUTH;
        else
            ecode = code;
        conn_drop(c, ecode, "%s on %s: %s", what, where(c), r->str);
        return 0;
    }
    return 1;
}

static void hs_auth_cb(redq__conn *c, void *reply, void *arg)
{
    (void)arg;
    if (hs_reply_ok(c, reply, REDQ_EAUTH, "AUTH"))
        handshake_step_done(c);
}

static void hs_select_cb(redq__conn *c, void *reply, void *arg)
{
    (void)arg;
    if (hs_reply_ok(c, reply, REDQ_ESELECT, "SELECT"))
        handshake_step_done(c);
}

static void hs_setname_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    (void)arg;
    if (r == NULL || c->state != ST_HANDSHAKE)
        return;
    /* A name is a courtesy to operators: an ACL user without the right to
     * set it still gets to produce. */
    if (r->type == REDIS_REPLY_ERROR) {
        if (redq__err_from_reply(r->str, (size_t)r->len) == REDQ_EAUTH &&
            strncmp(r->str, "NOPERM", 6) != 0) {
            conn_drop(c, REDQ_EAUTH, "CLIENT SETNAME on %s: %s", where(c),
                      r->str);
            return;
        }
        redq__log(c->log, REDQ_LOG_WARN, REDQ_ESERVER,
                  "CLIENT SETNAME on %s: %s (continuing)", where(c), r->str);
    }
    handshake_step_done(c);
}

static int parse_version(const char *info)
{
    const char *v = strstr(info, "redis_version:");
    int a = 0, b = 0, d = 0;
    if (v == NULL || sscanf(v + 14, "%d.%d.%d", &a, &b, &d) < 2)
        return 0;
    return a * 10000 + b * 100 + d;
}

static void hs_info_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    (void)arg;
    if (!hs_reply_ok(c, r, REDQ_ESERVER, "INFO server"))
        return;
    if (r->type == REDIS_REPLY_STRING)
        c->server_version = parse_version(r->str);
    handshake_step_done(c);
}

static void hs_client_id_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    (void)arg;
    if (!hs_reply_ok(c, r, REDQ_ESERVER, "CLIENT ID"))
        return;
    if (r->type == REDIS_REPLY_INTEGER)
        c->client_id = r->integer;
    handshake_step_done(c);
}

static void hs_script_cb(redq__conn *c, void *reply, void *arg)
{
    (void)arg;
    if (hs_reply_ok(c, reply, REDQ_ESERVER, "SCRIPT LOAD"))
        handshake_step_done(c);
}

static int hs_send(redq__conn *c, redq__reply_cb cb, int argc,
                   const char **argv)
{
    uint64_t dl = redq__now_us() + (uint64_t)c->command_timeout_ms * 1000u;
    if (ring_push(c, cb, NULL, dl) != 0)
        return REDQ_ENOMEM;
    if (redisAsyncCommandArgv(c->ac, on_reply, NULL, argc, argv, NULL) !=
        REDIS_OK) {
        ring_unpush(c);
        return REDQ_EDISCONNECTED;
    }
    c->handshake_left++;
    return 0;
}

/*
 * AUTH, SELECT, CLIENT SETNAME and INFO go out pipelined in one write. If
 * AUTH fails the rest fail with NOAUTH too; the first failure drops the
 * connection and the others' replies arrive as NULL and are ignored.
 */
static int start_handshake(redq__conn *c)
{
    char dbbuf[16];
    int rc = 0, i;

    c->state = ST_HANDSHAKE;
    c->client_id = -1;
    c->handshake_left = 1; /* held until every command is queued */
    if (c->password != NULL) {
        if (c->user != NULL) {
            const char *argv[] = {"AUTH", c->user, c->password};
            rc = hs_send(c, hs_auth_cb, 3, argv);
        } else {
            const char *argv[] = {"AUTH", c->password};
            rc = hs_send(c, hs_auth_cb, 2, argv);
        }
    }
    if (rc == 0 && c->db != 0) {
        const char *argv[] = {"SELECT", dbbuf};
        snprintf(dbbuf, sizeof dbbuf, "%d", c->db);
        rc = hs_send(c, hs_select_cb, 2, argv);
    }
    if (rc == 0 && c->client_name != NULL) {
        const char *argv[] = {"CLIENT", "SETNAME", c->client_name};
        rc = hs_send(c, hs_setname_cb, 3, argv);
    }
    /* Scripts are loaded on every connect: after a restart or a SCRIPT
     * FLUSH the server has forgotten them, and EVALSHA would fail. */
    for (i = 0; rc == 0 && c->load_scripts && i < REDQ__SCRIPT_COUNT; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", redq__script_source(i)};
        rc = hs_send(c, hs_script_cb, 3, argv);
    }
    if (rc == 0 && c->want_client_id) {
        const char *argv[] = {"CLIENT", "ID"};
        rc = hs_send(c, hs_client_id_cb, 2, argv);
    }
    if (rc == 0) {
        const char *argv[] = {"INFO", "server"};
        rc = hs_send(c, hs_info_cb, 2, argv);
    }
    if (rc == 0) {
        arm_cmd_timer(c);
        handshake_step_done(c);
    }
    return rc;
}

static void on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    redq__conn *c = ac->data;
    int rc;

    if (c == NULL || c->ac != ac)
        return; /* a context we already gave up on */
    if (status != REDIS_OK) {
        /* hiredis frees the context after this returns. */
        c->ac = NULL;
        conn_drop(c, REDQ_ECONNECT, "connect %s: %s", where(c),
                  ac->errstr[0] ? ac->errstr : "failed");
        return;
    }
    if (!c->is_unix)
        redisEnableKeepAlive(&ac->c); /* notice a peer that vanished */
    rc = start_handshake(c);
    if (rc != 0) {
        /* Freeing the context here would pull it from under hiredis; the
         * connect deadline drops it from the loop instead. */
        c->last_code = rc;
        snprintf(c->last_err, sizeof c->last_err, "handshake: %s",
                 redq_strerror(rc));
    }
}

static void on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    redq__conn *c = ac->data;
    int code;

    if (c == NULL || c->ac != ac)
        return; /* we dropped it ourselves and have moved on */
    /* hiredis frees the context after this returns. */
    c->ac = NULL;
    code = ac->c.err == REDIS_ERR_PROTOCOL ? REDQ_EPROTOCOL
                                           : REDQ_EDISCONNECTED;
    conn_drop(c, code, "connection to %s lost: %s", where(c),
              status == REDIS_OK ? "closed"
              : ac->errstr[0]    ? ac->errstr
                                 : "error");
}

/* ---- connecting and reconnecting ---------------------------------------- */

static void connect_now(redq__conn *c)
{
    redisAsyncContext *ac;

    c->state = ST_CONNECTING;
    if (c->is_unix)
        ac = redisAsyncConnectUnix(c->path);
    else
        ac = redisAsyncConnect(c->ip, c->port);
    if (ac == NULL) {
        conn_drop(c, REDQ_ENOMEM, "connect %s: out of memory", where(c));
        return;
    }
    if (ac->err) {
        /* Refused at once (common on loopback). Not attached, no
         * callbacks: free it right here. */
        char msg[200];
        snprintf(msg, sizeof msg, "%s", ac->errstr);
        redisAsyncFree(ac);
        conn_drop(c, REDQ_ECONNECT, "connect %s: %s", where(c), msg);
        return;
    }
    ac->data = c;
    if (c->arena != NULL)
        redq__arena_attach(c->arena, ac->c.reader); /* nothing parsed yet */
    if (io_attach(ac, c->base) != 0) {
        redisAsyncFree(ac);
        conn_drop(c, REDQ_ENOMEM, "connect %s: cannot attach to the loop",
                  where(c));
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
}

static void resolved_cb(int status, const char *ip, const char *msg,
                        void *arg)
{
    redq__conn *c = arg;
    if (c->state != ST_RESOLVING)
        return;
    if (status != 0) {
        conn_drop(c, status, "resolve %s: %s", c->host, msg);
        return;
    }
    snprintf(c->ip, sizeof c->ip, "%s", ip);
    connect_now(c);
}

static void start_attempt(redq__conn *c)
{
    struct timeval tv = tv_ms(c->connect_timeout_ms);
    event_add(c->t_state, &tv); /* the deadline for the whole attempt */
    if (c->is_unix) {
        connect_now(c);
        return;
    }
    c->state = ST_RESOLVING;
    if (redq__resolve(c->resolver, c->host, resolved_cb, c) != 0)
        conn_drop(c, REDQ_ENOMEM, "resolve %s: out of memory", c->host);
}

static long backoff_ms(redq__conn *c)
{
    long d = c->reconnect_min_ms;
    int i;
    if (c->attempt == 0)
        return 0;
    for (i = 1; i < c->attempt && d < c->reconnect_max_ms; i++)
        d *= 2;
    if (d > c->reconnect_max_ms)
        d = c->reconnect_max_ms;
    /* +-25% jitter so that many clients do not retry in lockstep. */
    return d - d / 4 + (long)(rng_next(c) % (uint32_t)(d / 2 + 1));
}

/*
 * Give up on the current attempt or connection: record why, free the
 * hiredis context (its pending callbacks get NULL: outcome unknown), tell
 * the owner if it was ready, and schedule the next attempt.
 */
static void conn_drop(redq__conn *c, int code, const char *fmt, ...)
{
    va_list ap;
    int was_ready = c->state == ST_READY;
    redisAsyncContext *ac = c->ac;
    long delay;

    va_start(ap, fmt);
    vsnprintf(c->last_err, sizeof c->last_err, fmt, ap);
    va_end(ap);
    c->last_code = code;
    c->dying = 0;

    redq__resolve_cancel(c->resolver);
    event_del(c->t_state);
    c->state = ST_BACKOFF;
    c->ac = NULL;
    /* Inside one of this context's reply callbacks hiredis defers the free
     * until the callback returns; elsewhere it happens now. */
    if (ac != NULL)
        redisAsyncFree(ac);

    /* A connection that worked for a while and then broke is retried at
     * once. One that breaks right after its handshake (a replica answering
     * READONLY, a server still LOADING, a flapping network) counts as a
     * failed attempt, so the backoff grows instead of hammering. */
    if (was_ready && redq__now_us() - c->ready_since_us >= 1000000u)
        c->attempt = 0;
    else
        c->attempt++;
    delay = backoff_ms(c);
    redq__log(c->log, was_ready ? REDQ_LOG_WARN : REDQ_LOG_ERROR, code,
              "%s; retrying in %ld ms", c->last_err, delay);
    {
        struct timeval tv = tv_ms(delay);
        event_add(c->t_state, &tv);
    }
    if (was_ready && c->on_down != NULL)
        c->on_down(c, code, c->last_err, c->arg);
}

static void state_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    redq__conn *c = arg;
    (void)fd;
    (void)what;
    switch (c->state) {
    case ST_IDLE:
    case ST_BACKOFF:
        start_attempt(c);
        break;
    case ST_RESOLVING:
    case ST_CONNECTING:
    case ST_HANDSHAKE:
        conn_drop(c, REDQ_ETIMEDOUT, "connect %s: no %s within %d ms%s%s",
                  where(c), state_names[c->state], c->connect_timeout_ms,
                  c->last_err[0] ? " after " : "", c->last_err);
        break;
    case ST_READY:
        break;
    }
}

static void cmd_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    redq__conn *c = arg;
    uint64_t now = redq__now_us();
    (void)fd;
    (void)what;
    c->t_cmd_armed = 0;
    if (c->ring_len == 0 || c->ac == NULL)
        return;
    if (c->ring[c->ring_head].deadline_us <= now) {
        conn_drop(c, REDQ_ETIMEDOUT,
                  "no reply from %s within %d ms; dropping the connection",
                  where(c), c->command_timeout_ms);
        return;
    }
    arm_cmd_timer(c);
}

/* ---- the interface ------------------------------------------------------ */

int redq__conn_new(redq__conn **out, struct event_base *base,
                   const redq__conn_config *cfg, redq__conn_up_cb on_up,
                   redq__conn_down_cb on_down, void *arg)
{
    redq__conn *c = calloc(1, sizeof *c);
    const char *pw;
    if (c == NULL)
        return REDQ_ENOMEM;
    c->base = base;
    c->is_unix = cfg->url->is_unix;
    c->port = cfg->url->port;
    c->db = cfg->url->db;
    c->connect_timeout_ms = cfg->connect_timeout_ms;
    c->command_timeout_ms = cfg->command_timeout_ms;
    c->reconnect_min_ms = cfg->reconnect_min_ms;
    c->reconnect_max_ms = cfg->reconnect_max_ms;
    c->log = cfg->log;
    c->want_client_id = cfg->want_client_id;
    c->load_scripts = cfg->load_scripts;
    c->client_id = -1;
    c->on_up = on_up;
    c->on_down = on_down;
    c->arg = arg;
    c->rng = (uint32_t)(redq__now_us() ^ (uintptr_t)c) | 1u;

    pw = cfg->password != NULL ? cfg->password : cfg->url->password;
    c->host = dup_or_null(cfg->url->host);
    c->path = dup_or_null(cfg->url->path);
    c->user = dup_or_null(cfg->url->user);
    c->password = dup_or_null(pw);
    if (cfg->client_name != NULL && cfg->client_name[0] != '\0')
        c->client_name = dup_or_null(cfg->client_name);
    if (c->is_unix)
        snprintf(c->where, sizeof c->where, "unix:%s", cfg->url->path);
    else
        snprintf(c->where, sizeof c->where, "%s:%d", cfg->url->host,
                 c->port);
    c->resolver = redq__resolver_new(base);
    if (cfg->arena_replies)
        c->arena = redq__arena_new();
    c->t_state = event_new(base, -1, 0, state_timer_cb, c);
    c->t_cmd = event_new(base, -1, 0, cmd_timer_cb, c);

    if ((cfg->url->host && !c->host) || (cfg->url->path && !c->path) ||
        (cfg->url->user && !c->user) || (pw && !c->password) ||
        (cfg->client_name && cfg->client_name[0] && !c->client_name) ||
        !c->resolver || !c->t_state || !c->t_cmd ||
        (cfg->arena_replies && !c->arena)) {
        redq__conn_free(c);
        return REDQ_ENOMEM;
    }
    {
        /* A library must not change process-wide signal handling, but it
         * can say when the default would kill the process on a dropped
         * connection. */
        struct sigaction sa;
        if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
            redq__log(c->log, REDQ_LOG_WARN, 0,
                      "SIGPIPE is not ignored: a write to a connection the "
                      "server closed would kill the process; call "
                      "signal(SIGPIPE, SIG_IGN) at start-up");
    }
    *out = c;
    return 0;
}

void redq__conn_start(redq__conn *c)
{
    struct timeval tv = {0, 0};
    if (c->state != ST_IDLE)
        return;
    /* From the loop, never inside the caller's *_new(). */
    event_add(c->t_state, &tv);
}

static int send_common(redq__conn *c, int extra_timeout_ms, redq__reply_cb cb,
                       void *arg)
{
    uint64_t dl;
    if (REDQ__UNLIKELY(c->state != ST_READY || c->dying))
        return REDQ_EDISCONNECTED;
    dl = redq__now_us() +
         (uint64_t)(c->command_timeout_ms + extra_timeout_ms) * 1000u;
    return ring_push(c, cb, arg, dl);
}

int redq__conn_send(redq__conn *c, const char *cmd, size_t len,
                    int extra_timeout_ms, redq__reply_cb cb, void *arg)
{
    int rc = send_common(c, extra_timeout_ms, cb, arg);
    if (rc != 0)
        return rc;
    if (redisAsyncFormattedCommand(c->ac, on_reply, NULL, cmd, len) !=
        REDIS_OK) {
        ring_unpush(c);
        return REDQ_EDISCONNECTED;
    }
    arm_cmd_timer(c);
    return 0;
}

int redq__conn_sendv(redq__conn *c, int argc, const char **argv,
                     const size_t *argvlen, int extra_timeout_ms,
                     redq__reply_cb cb, void *arg)
{
    int rc = send_common(c, extra_timeout_ms, cb, arg);
    if (rc != 0)
        return rc;
    if (redisAsyncCommandArgv(c->ac, on_reply, NULL, argc, argv, argvlen) !=
        REDIS_OK) {
        ring_unpush(c);
        return REDQ_EDISCONNECTED;
    }
    arm_cmd_timer(c);
    return 0;
}

int redq__conn_ready(const redq__conn *c)
{
    return c->state == ST_READY && !c->dying;
}

int redq__conn_server_version(const redq__conn *c)
{
    return c->server_version;
}

void redq__conn_reset(redq__conn *c, int code, const char *why)
{
    if (c->state == ST_BACKOFF || c->state == ST_IDLE)
        return;
    conn_drop(c, code, "%s: %s", where(c), why);
}

const char *redq__conn_last_error(const redq__conn *c)
{
    return c->last_err;
}

long long redq__conn_client_id(const redq__conn *c)
{
    return c->state == ST_READY ? c->client_id : -1;
}

int redq__conn_last_code(const redq__conn *c)
{
    return c->last_code;
}

void redq__conn_free(redq__conn *c)
{
    redisAsyncContext *ac;
    if (c == NULL)
        return;
    ac = c->ac;
    c->ac = NULL;       /* on_disconnect sees a stale context and returns */
    c->on_up = NULL;
    c->on_down = NULL;
    c->state = ST_BACKOFF;
    if (ac != NULL)
        redisAsyncFree(ac); /* pending callbacks run now, with NULL */
    redq__arena_free(c->arena); /* after the context: it frees into it */
    if (c->resolver != NULL)
        redq__resolver_free(c->resolver);
    if (c->t_state != NULL)
        event_free(c->t_state);
    if (c->t_cmd != NULL)
        event_free(c->t_cmd);
    free(c->ring);
    free(c->host);
    free(c->path);
    free(c->user);
    free(c->password);
    free(c->client_name);
    free(c);
}
