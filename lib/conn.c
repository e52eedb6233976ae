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
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sys/ioctl.h>
#if defined(__linux__)
#include <linux/sockios.h> /* SIOCOUTQ */
#endif

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "redq_private.h"

enum conn_state {
    ST_IDLE,
    ST_DISCOVERING, /* asking the sentinels where the master is */
    ST_RESOLVING,
    ST_CONNECTING,
    ST_HANDSHAKE,
    ST_READY,
    ST_BACKOFF
};

static const char *const state_names[] = {
    "idle", "discovery", "resolving", "connecting", "handshake", "ready", "backoff"};

/* What a ring entry is, beyond its callback. */
enum {
    P_PLAIN = 0,
    P_AFTER_LOAD = 1 /* follows a lazy SCRIPT LOAD: a NOSCRIPT reply is
                        replaced by the load's own error, if it failed */
};

typedef struct pending {
    redq__reply_cb cb;
    void *arg;
    uint64_t deadline_us;
    unsigned flags; /* P_* */
} pending;

/* Handshake failures that are a passing server state, each warned about
 * once (see conn_drop). */
enum {
    TR_LOADING = 1u << 0,
    TR_BUSY = 1u << 1,
    TR_TRYAGAIN = 1u << 2,
    TR_MASTERDOWN = 1u << 3,
    TR_OOM = 1u << 4
};

/* conn_drop flags: why an attempt or connection failed, beyond its code. */
enum {
    DROP_PERMANENT = 1u << 8 /* retrying will not help (WRONGPASS, NOPERM) */
    /* the low bits carry a TR_* state for transient failures */
};

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
    int want_version;
    int load_scripts; /* compatibility: SCRIPT LOAD all in the handshake */
    long long client_id;
    uint32_t rng;
    uint64_t activity_us; /* last time bytes came in (see on_reply) */
    long outq_seen;       /* kernel send queue at the last deadline, -1 */

    /* Lazy script loading (redq__conn_send_script). */
    uint32_t scripts_loaded;  /* bit i: SCRIPT LOAD of script i was sent on
                                 this connection and not refused */
    int load_err_set;         /* the lazy load just answered was refused... */
    char load_err[256];       /* ...with this error, for the next reply */
    char eager_err[256];      /* a handshake SCRIPT LOAD was refused: "" or
                                 its error, given instead of NOSCRIPT */

    unsigned transient_warned; /* TR_* states already logged at WARN */
    int setname_warned;
    int script_warned;
    int version_noted;
    int permanent;             /* last_code will not fix itself */

    int last_code;
    char last_err[256];

    redq__conn_up_cb on_up;
    redq__conn_down_cb on_down;
    redq__conn_down_cb on_fail; /* an attempt failed before ready */
    void *arg;

    /* Sentinel discovery (redis+sentinel:// URLs; see "Discovery" below).
     * host/port/ip/where then name the master last found. */
    int sentinel;
    size_t nsent;
    redq__url_node *sent;      /* the sentinels, copied */
    char *master_name;
    char *sent_user, *sent_password;
    size_t sent_first;         /* whom a round asks first: the last that
                                  answered, or the one after a bad answer */
    size_t sent_tried;         /* asked in this round */
    size_t sent_idx;           /* the one being asked */
    redq__conn *probe;         /* the connection to it */
    redq__conn *probe_dead;    /* to free from the loop, not its callback */
    struct event *ev_probe;    /* zero timer: free probe_dead, then act */
    int probe_next;            /* PROBE_* for ev_probe */
    unsigned round_flags;      /* RF_* seen in this round */
    char round_err[256];       /* the first sentinel failure of the round */
    redq__logger quiet;        /* the probes' logger: they say nothing, the
                                  round says what went wrong */
    redisAsyncContext *watch;  /* SUBSCRIBE +switch-master on a sentinel */
    size_t watch_idx;
    char found[80];            /* "host:port" the sentinels named last */

    /* The target hook (redq__conn_config.target): asked at every attempt. */
    int (*target)(redq__conn *c, char *host, size_t hostlen, int *port,
                  void *arg);
    void *target_arg;
    /* The redirect hook (redq__conn_config.redirect) and the reset it
     * asked for, run from the loop once the replies read are delivered. */
    int (*redirect)(redq__conn *c, const void *reply, void *arg);
    struct event *ev_follow;
    int follow;
};

static void conn_drop(redq__conn *c, int code, unsigned flags,
                      const char *fmt, ...) REDQ__PRINTF(4, 5);
static void conn_log(const redq__conn *c, int level, int code,
                     const char *fmt, ...) REDQ__PRINTF(4, 5);
static void scrub(const redq__conn *c, char *msg);
static void start_attempt(redq__conn *c);
static void discovery_start(redq__conn *c);
static void probe_retire(redq__conn *c);
static void watch_close(redq__conn *c);
static void connect_after_discovery(redq__conn *c);

/* ---- the pending ring --------------------------------------------------- */

static int ring_push(redq__conn *c, redq__reply_cb cb, void *arg,
                     uint64_t deadline, unsigned flags)
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
        (pending){cb, arg, deadline, flags};
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

/*
 * Bytes moved on the connection (read, or a partial write drained): the
 * oldest command is still being answered or sent, so its reply deadline
 * counts from now. The deadline measures silence, not total time: a 100 MB
 * reply over a slow link may take minutes and is fine as long as it flows.
 * The timer is not touched: when it fires it re-arms for the new deadline.
 */
static void conn_activity(redq__conn *c, uint64_t now)
{
    uint64_t dl;
    c->activity_us = now;
    c->outq_seen = -1;
    if (c->ring_len == 0)
        return;
    dl = now + (uint64_t)c->command_timeout_ms * 1000u;
    if (c->ring[c->ring_head].deadline_us < dl)
        c->ring[c->ring_head].deadline_us = dl;
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

/* The connection of a context, if the context is still its live one. */
static redq__conn *live_conn(redisAsyncContext *ac)
{
    redq__conn *c = ac->data;
    return c != NULL && c->ac == ac ? c : NULL;
}

/*
 * hiredis writes with write(2). On a socket the server has closed, that
 * raises SIGPIPE, whose default action kills the process: an embedder who
 * never heard of it would die on the first CLIENT KILL or server restart.
 * The library owns its write path, so it keeps the signal away itself:
 * SIGPIPE is blocked in this thread around the write (the write then just
 * fails with EPIPE, which hiredis reports as a lost connection), and a
 * SIGPIPE that the write left pending is consumed before the mask is
 * restored. A SIGPIPE that was already pending before (blocked by the
 * application, from elsewhere) is not ours and is left alone. Costs three
 * cheap system calls per write, and writes are batched per loop iteration.
 * Process-wide signal handling is not changed.
 */
static void write_nosigpipe(redisAsyncContext *ac)
{
    sigset_t pipe_set, old, pend;
    int ours = 1;

    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    if (pthread_sigmask(SIG_BLOCK, &pipe_set, &old) != 0) {
        redisAsyncHandleWrite(ac);
        return;
    }
    /* An unblocked signal cannot sit pending: only when the application
     * itself blocks SIGPIPE can one be there already. */
    if (sigismember(&old, SIGPIPE) && sigpending(&pend) == 0 &&
        sigismember(&pend, SIGPIPE))
        ours = 0;
    redisAsyncHandleWrite(ac); /* may free ac: not used below */
    if (ours && sigpending(&pend) == 0 && sigismember(&pend, SIGPIPE)) {
        struct timespec zero = {0, 0};
        (void)sigtimedwait(&pipe_set, NULL, &zero);
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
}

static void io_read_cb(evutil_socket_t fd, short what, void *arg)
{
    loop_io *io = arg;
    redq__conn *c = live_conn(io->ac);
    (void)fd;
    (void)what;
    if (c != NULL)
        conn_activity(c, redq__now_us());
    redisAsyncHandleRead(io->ac);
}

static void io_write_cb(evutil_socket_t fd, short what, void *arg)
{
    loop_io *io = arg;
    redq__conn *c = live_conn(io->ac);
    (void)fd;
    (void)what;
    /* Armed after a partial write (or for the connect): writable again
     * means the peer took what was sent, so a long command is still
     * moving. */
    if (c != NULL && (io->ac->c.flags & REDIS_CONNECTED))
        conn_activity(c, redq__now_us());
    write_nosigpipe(io->ac);
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
    write_nosigpipe(io->ac);
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
static int is_noscript(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR && r->len >= 8 &&
           memcmp(r->str, "NOSCRIPT", 8) == 0;
}

static void on_reply(redisAsyncContext *ac, void *reply, void *privdata)
{
    redq__conn *c = ac->data;
    redisReply *r = reply, fake;
    char fake_str[256];
    pending p;
    (void)privdata;
    if (c == NULL || c->ring_len == 0)
        return;
    /* A NULL on the live context means hiredis is failing it (the
     * disconnect callback follows): no new command may go onto it. */
    if (reply == NULL && c->ac == ac)
        c->dying = 1;
    p = ring_shift(c);
    if (r != NULL) {
        /* The next command's reply can only start now that this one is
         * complete: its silence is counted from here (see conn_activity). */
        if (c->ring_len > 0) {
            uint64_t dl =
                c->activity_us + (uint64_t)c->command_timeout_ms * 1000u;
            if (c->ring[c->ring_head].deadline_us < dl)
                c->ring[c->ring_head].deadline_us = dl;
        }
        if (REDQ__UNLIKELY(r->type == REDIS_REPLY_ERROR)) {
            /* A pinned connection's slot moved: follow it, but only after
             * the replies already read reach their callbacks (a reset now
             * would make them "unknown"). */
            if (c->redirect != NULL && c->redirect(c, r, c->target_arg) &&
                c->ev_follow != NULL && !c->follow) {
                c->follow = 1;
                event_active(c->ev_follow, EV_TIMEOUT, 0);
            }
            if (is_noscript(r)) {
                /* The server has forgotten the scripts (SCRIPT FLUSH,
                 * restart behind a proxy): load each again on next use. */
                c->scripts_loaded = 0;
                /* Our own SCRIPT LOAD was refused just before: hand the
                 * caller the real cause (NOPERM...), not its symptom. */
                if (((p.flags & P_AFTER_LOAD) && c->load_err_set) ||
                    c->eager_err[0] != '\0') {
                    const char *e = (p.flags & P_AFTER_LOAD) && c->load_err_set
                                        ? c->load_err
                                        : c->eager_err;
                    /* A copy: the callback may reset the connection,
                     * which clears c's buffers while it still reads. */
                    memset(&fake, 0, sizeof fake);
                    fake.type = REDIS_REPLY_ERROR;
                    fake.len = strlen(e);
                    memcpy(fake_str, e, (size_t)fake.len + 1);
                    fake.str = fake_str;
                    r = &fake;
                }
            }
        } else if (REDQ__UNLIKELY(c->transient_warned != 0) &&
                   c->state == ST_READY) {
            c->transient_warned = 0; /* the server works: warn next time */
        }
        if (p.flags & P_AFTER_LOAD)
            c->load_err_set = 0;
    }
    p.cb(c, r, p.arg);
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
    c->permanent = 0;
    if (c->server_version != 0)
        redq__log(c->log, REDQ_LOG_INFO, 0, "connected to %s (redis %d.%d.%d)",
                  where(c), c->server_version / 10000,
                  c->server_version / 100 % 100, c->server_version % 100);
    else
        redq__log(c->log, REDQ_LOG_INFO, 0, "connected to %s", where(c));
    if (c->on_up != NULL)
        c->on_up(c, c->arg);
}

/* Which passing state an error reply is, as a TR_* bit; 0 for none. -OOM
 * counts here: a handshake command adds no data, and a full server is one
 * that must still be drained. */
static unsigned transient_state(const char *s, size_t len)
{
    static const struct {
        const char *word;
        unsigned bit;
    } states[] = {{"LOADING", TR_LOADING},
                  {"BUSY", TR_BUSY},
                  {"TRYAGAIN", TR_TRYAGAIN},
                  {"MASTERDOWN", TR_MASTERDOWN},
                  {"OOM", TR_OOM}};
    size_t i;
    for (i = 0; i < sizeof states / sizeof states[0]; i++) {
        size_t n = strlen(states[i].word);
        if (len >= n && memcmp(s, states[i].word, n) == 0 &&
            (len == n || s[n] == ' '))
            return states[i].bit;
    }
    return 0;
}

enum { HS_GONE, HS_OK, HS_REFUSED };

/*
 * Look at a handshake reply. HS_GONE: nothing to do (NULL: the connection
 * is already going down and the drop path has recorded why; or the reply
 * was a passing state or NOAUTH and this function dropped the attempt).
 * HS_OK: not an error. HS_REFUSED: an error reply the caller judges.
 */
static int hs_check(redq__conn *c, redisReply *r, const char *what)
{
    unsigned tr;
    if (r == NULL || c->state != ST_HANDSHAKE)
        return HS_GONE;
    if (r->type != REDIS_REPLY_ERROR)
        return HS_OK;
    tr = transient_state(r->str, (size_t)r->len);
    if (tr != 0) {
        conn_drop(c, REDQ_ESERVER, tr, "%s on %s: %s", what, where(c), r->str);
        return HS_GONE;
    }
    if (redq__err_from_reply(r->str, (size_t)r->len) == REDQ_EAUTH) {
        /* NOAUTH: no password given, or AUTH failed before it. */
        conn_drop(c, REDQ_EAUTH, DROP_PERMANENT, "%s on %s: %s", what,
                  where(c), r->str);
        return HS_GONE;
    }
    return HS_REFUSED;
}

static void hs_auth_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    int code;
    (void)arg;
    switch (hs_check(c, r, "AUTH")) {
    case HS_OK:
        handshake_step_done(c);
        return;
    case HS_GONE:
        return;
    }
    /* WRONGPASS, "ERR invalid password" (< 6.0), "ERR AUTH <password>
     * called without any password configured": all a wrong configuration
     * that retrying will not fix (until someone changes the server). */
    code = redq__err_from_reply(r->str, (size_t)r->len);
    conn_drop(c, code == REDQ_ENOPERM ? code : REDQ_EAUTH, DROP_PERMANENT,
              "AUTH on %s: %s", where(c), r->str);
}

static void hs_select_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    int code;
    (void)arg;
    switch (hs_check(c, r, "SELECT")) {
    case HS_OK:
        handshake_step_done(c);
        return;
    case HS_GONE:
        return;
    }
    /* NOPERM (the user may not SELECT), "ERR DB index is out of range",
     * "ERR SELECT is not allowed in cluster mode". */
    code = redq__err_from_reply(r->str, (size_t)r->len);
    conn_drop(c, code == REDQ_ENOPERM ? code : REDQ_ESELECT, DROP_PERMANENT,
              "SELECT %d on %s: %s", c->db, where(c), r->str);
}

static void hs_setname_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    (void)arg;
    if (hs_check(c, r, "CLIENT SETNAME") == HS_GONE)
        return;
    /* A name is a courtesy to operators: an ACL user without the right to
     * set it (NOPERM) still gets to work. Said once per handle, not on
     * every reconnect. */
    if (r->type == REDIS_REPLY_ERROR && !c->setname_warned) {
        c->setname_warned = 1;
        conn_log(c, REDQ_LOG_WARN, REDQ_ENOPERM,
                  "CLIENT SETNAME on %s: %s (continuing without a name)",
                  where(c), r->str);
    }
    handshake_step_done(c);
}

/* "7.2.4": each part up to the first non-digit. See redq_private.h. */
int redq__parse_version(const char *s)
{
    long part[3] = {0, 0, 0};
    int i;
    if (s == NULL)
        return 0;
    for (i = 0; i < 3; i++) {
        int digits = 0;
        while (*s >= '0' && *s <= '9') {
            if (part[i] <= 99999)
                part[i] = part[i] * 10 + (*s - '0');
            s++;
            digits++;
        }
        if (digits == 0) {
            if (i < 2)
                return 0;
            break; /* "7.0." or "7.0.rc1": no patch */
        }
        if (*s != '.')
            break;
        s++;
    }
    if (i < 1)
        return 0; /* "7" or "7x": a major alone is not a version */
    if (part[0] > REDQ__VERSION_MAX_MAJOR)
        return 0;
    /* Clamp, so that ordering still holds for 255.255.255 (unstable). */
    if (part[1] > 99)
        part[1] = 99;
    if (part[2] > 99)
        part[2] = 99;
    return (int)(part[0] * 10000 + part[1] * 100 + part[2]);
}

static int parse_info_version(const char *info)
{
    const char *v = strstr(info, "redis_version:");
    return v != NULL ? redq__parse_version(v + 14) : 0;
}

static void note_no_version(redq__conn *c, const char *why)
{
    c->server_version = 0;
    if (c->version_noted)
        return;
    c->version_noted = 1;
    conn_log(c, REDQ_LOG_INFO, 0,
              "server version of %s unknown (%s); carrying on", where(c),
              why);
}

static int hs_send(redq__conn *c, redq__reply_cb cb, int argc,
                   const char **argv);

static void hs_info_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    (void)arg;
    switch (hs_check(c, r, "INFO server")) {
    case HS_GONE:
        return;
    case HS_OK:
        if (r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_STATUS)
            c->server_version = parse_info_version(r->str);
        if (c->server_version == 0)
            note_no_version(c, "no redis_version in INFO");
        break;
    case HS_REFUSED:
        /* Neither HELLO nor INFO: a tight ACL. The version only picks
         * faster commands; without it the oldest ones are used. */
        note_no_version(c, r->str);
        break;
    }
    handshake_step_done(c);
}

/*
 * HELLO without arguments (6.2+; 6.0 wants a protocol version) keeps RESP2
 * and answers a flat array of field, value pairs with "version" in it. It is
 * the cheapest way to the version and needs no `info` permission; older
 * servers and ACLs without `hello` fall back to INFO server.
 */
static void hs_hello_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    size_t i;
    (void)arg;
    switch (hs_check(c, r, "HELLO")) {
    case HS_GONE:
        return;
    case HS_REFUSED: {
        const char *argv[] = {"INFO", "server"};
        if (hs_send(c, hs_info_cb, 2, argv) != 0) {
            conn_drop(c, REDQ_ENOMEM, 0, "INFO on %s: cannot send", where(c));
            return;
        }
        break;
    }
    case HS_OK:
        c->server_version = 0;
        if (r->type == REDIS_REPLY_ARRAY)
            for (i = 0; i + 1 < r->elements; i += 2) {
                redisReply *k = r->element[i], *v = r->element[i + 1];
                if (k->type == REDIS_REPLY_STRING && k->len == 7 &&
                    memcmp(k->str, "version", 7) == 0 &&
                    v->type == REDIS_REPLY_STRING) {
                    c->server_version = redq__parse_version(v->str);
                    break;
                }
            }
        if (c->server_version == 0)
            note_no_version(c, "no usable version in HELLO");
        break;
    }
    handshake_step_done(c);
}

static void hs_client_id_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    int code;
    (void)arg;
    switch (hs_check(c, r, "CLIENT ID")) {
    case HS_GONE:
        return;
    case HS_OK:
        if (r->type == REDIS_REPLY_INTEGER)
            c->client_id = r->integer;
        handshake_step_done(c);
        return;
    }
    /* The handle needs its id (CLIENT UNBLOCK): NOPERM, or a server before
     * 5.0, will not change by retrying. */
    code = redq__err_from_reply(r->str, (size_t)r->len);
    conn_drop(c, code, DROP_PERMANENT, "CLIENT ID on %s: %s", where(c),
              r->str);
}

static void hs_script_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    int which = (int)(intptr_t)arg;
    (void)arg;
    switch (hs_check(c, r, "SCRIPT LOAD")) {
    case HS_GONE:
        return;
    case HS_OK:
        c->scripts_loaded |= 1u << which;
        break;
    case HS_REFUSED:
        /* Eager loading is a compatibility path (load_scripts). A user
         * that may not load scripts may still produce; the commands that
         * need the script get this error instead of NOSCRIPT. */
        if (c->eager_err[0] == '\0')
            snprintf(c->eager_err, sizeof c->eager_err, "%s", r->str);
        if (!c->script_warned) {
            c->script_warned = 1; /* once per handle, not per reconnect */
            conn_log(c, REDQ_LOG_WARN,
                      redq__err_from_reply(r->str, (size_t)r->len),
                      "SCRIPT LOAD on %s: %s (continuing; commands that "
                      "need the script will fail)",
                      where(c), r->str);
        }
        break;
    }
    handshake_step_done(c);
}

/* ROLE (sentinel mode): "master" goes on; a replica (or a sentinel) sends
 * the attempt back to discovery, asking the next sentinel first. */
static void hs_role_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    (void)arg;
    switch (hs_check(c, r, "ROLE")) {
    case HS_GONE:
        return;
    case HS_REFUSED:
        /* An ACL user without ROLE: the role cannot be checked, a replica
         * still answers writes with READONLY, which also rediscovers. */
        if (!c->version_noted) {
            c->version_noted = 1;
            conn_log(c, REDQ_LOG_WARN, redq__err_from_reply(r->str,
                                                             (size_t)r->len),
                     "ROLE on %s: %s (cannot check it is the master; "
                     "allow +role for this user)",
                     where(c), r->str);
        }
        break;
    case HS_OK:
        if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(r->element[0]->str, "master") != 0) {
            c->sent_first = (c->sent_idx + 1) % c->nsent;
            conn_drop(c, REDQ_ESERVER, 0,
                      "%s is a %s, not the master of %s (a stale sentinel "
                      "answer, or a failover under way); asking the "
                      "sentinels again",
                      where(c), r->element[0]->str, c->master_name);
            return;
        }
        break;
    }
    handshake_step_done(c);
}

static int hs_send_arg(redq__conn *c, redq__reply_cb cb, void *arg, int argc,
                       const char **argv)
{
    uint64_t dl = redq__now_us() + (uint64_t)c->command_timeout_ms * 1000u;
    if (ring_push(c, cb, arg, dl, P_PLAIN) != 0)
        return REDQ_ENOMEM;
    if (redisAsyncCommandArgv(c->ac, on_reply, NULL, argc, argv, NULL) !=
        REDIS_OK) {
        ring_unpush(c);
        return REDQ_EDISCONNECTED;
    }
    c->handshake_left++;
    arm_cmd_timer(c);
    return 0;
}

static int hs_send(redq__conn *c, redq__reply_cb cb, int argc,
                   const char **argv)
{
    return hs_send_arg(c, cb, NULL, argc, argv);
}

/*
 * Only what the handle uses goes out, pipelined in one write: AUTH (if a
 * password), SELECT (db != 0), CLIENT SETNAME (if a name), CLIENT ID and the
 * version (if the handle asked). A least-privilege ACL user must be able to
 * connect with exactly the commands its role needs (docs/DESIGN.md). If AUTH
 * fails the rest fail with NOAUTH too; the first failure drops the
 * connection and the others' replies arrive as NULL and are ignored.
 * Scripts are loaded lazily, by redq__conn_send_script.
 */
static int start_handshake(redq__conn *c)
{
    char dbbuf[16];
    int rc = 0, i;

    c->state = ST_HANDSHAKE;
    c->client_id = -1;
    c->scripts_loaded = 0;
    c->load_err_set = 0;
    c->eager_err[0] = '\0';
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
    /* Compatibility: handles that still send EVALSHA with plain
     * redq__conn_send need every script there up front. */
    for (i = 0; rc == 0 && c->load_scripts && i < REDQ__SCRIPT_COUNT; i++) {
        const char *argv[] = {"SCRIPT", "LOAD", redq__script_source(i)};
        rc = hs_send_arg(c, hs_script_cb, (void *)(intptr_t)i, 3, argv);
    }
    if (rc == 0 && c->want_client_id) {
        const char *argv[] = {"CLIENT", "ID"};
        rc = hs_send(c, hs_client_id_cb, 2, argv);
    }
    if (rc == 0 && c->want_version) {
        const char *argv[] = {"HELLO"};
        rc = hs_send(c, hs_hello_cb, 1, argv);
    }
    /* A sentinel's answer may be stale (it has not seen the failover yet,
     * or names a master that was demoted): trust the node's own word. */
    if (rc == 0 && c->sentinel) {
        const char *argv[] = {"ROLE"};
        rc = hs_send(c, hs_role_cb, 1, argv);
    }
    if (rc == 0)
        handshake_step_done(c);
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
        conn_drop(c, REDQ_ECONNECT, 0, "connect %s: %s", where(c),
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
    if (c->arena != NULL && redq__arena_error(c->arena)[0] != '\0') {
        /* hiredis says "Out of memory": the arena refused a reply whose
         * announced size is absurd (a broken or hostile server). */
        conn_drop(c, REDQ_EPROTOCOL, 0,
                  "protocol error from %s: %s; dropping the connection",
                  where(c), redq__arena_error(c->arena));
        return;
    }
    code = ac->c.err == REDIS_ERR_PROTOCOL ? REDQ_EPROTOCOL
                                           : REDQ_EDISCONNECTED;
    conn_drop(c, code, 0, "connection to %s lost: %s", where(c),
              status == REDIS_OK ? "closed"
              : ac->errstr[0]    ? ac->errstr
                                 : "error");
}

/* ---- connecting and reconnecting ---------------------------------------- */

static void connect_now(redq__conn *c)
{
    redisAsyncContext *ac;

    c->state = ST_CONNECTING;
    c->outq_seen = -1;
    if (c->is_unix)
        ac = redisAsyncConnectUnix(c->path);
    else
        ac = redisAsyncConnect(c->ip, c->port);
    if (ac == NULL) {
        conn_drop(c, REDQ_ENOMEM, 0, "connect %s: out of memory", where(c));
        return;
    }
    if (ac->err) {
        /* Refused at once (common on loopback). Not attached, no
         * callbacks: free it right here. */
        char msg[200];
        snprintf(msg, sizeof msg, "%s", ac->errstr);
        redisAsyncFree(ac);
        conn_drop(c, REDQ_ECONNECT, 0, "connect %s: %s", where(c), msg);
        return;
    }
    ac->data = c;
    redq__arena_attach(c->arena, ac->c.reader); /* nothing parsed yet */
    if (io_attach(ac, c->base) != 0) {
        redisAsyncFree(ac);
        conn_drop(c, REDQ_ENOMEM, 0, "connect %s: cannot attach to the loop",
                  where(c));
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
}


/* ---- Discovery (redis+sentinel://) --------------------------------------- */

/*
 * A round asks the sentinels one after the other, each over a connection of
 * its own (a redq__conn: resolve, connect, AUTH with the sentinel's
 * credentials, all with deadlines), "SENTINEL get-master-addr-by-name". The
 * first address wins; the master connection then resolves, connects and
 * checks ROLE as usual. A round where nobody answered with an address ends
 * the attempt with the most telling reason: REDQ_ENOMASTER when a sentinel
 * said it knows no such master, REDQ_EAUTH when one refused our
 * credentials (both permanent: retrying will not fix them), else
 * REDQ_ECONNECT. The next round starts after the usual backoff.
 *
 * The sentinel that answered is also watched: a SUBSCRIBE to
 * +switch-master on it moves the connection as soon as a failover is
 * decided, instead of when the old master's socket dies (or never, for a
 * demoted master that stays up). Probes are freed from the loop (ev_probe),
 * never from inside their own callbacks.
 */
enum { PROBE_NONE, PROBE_NEXT, PROBE_CONNECT };
enum { RF_UNKNOWN = 1u, RF_AUTH = 2u };

static void probe_up(redq__conn *sub, void *arg);
static void probe_down(redq__conn *sub, int code, const char *msg, void *arg);

/* Note a sentinel's failure; the first one is kept for the round's
 * message (it is usually the most useful one). */
static void probe_note(redq__conn *c, unsigned flag, const char *fmt, ...)
    REDQ__PRINTF(3, 4);
static void probe_note(redq__conn *c, unsigned flag, const char *fmt, ...)
{
    char msg[sizeof c->round_err];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    scrub(c, msg);
    redq__log(c->log, REDQ_LOG_DEBUG, 0, "sentinel discovery: %s", msg);
    /* The most specific reason wins: unknown name over bad credentials
     * over an unreachable sentinel. */
    if ((flag & RF_UNKNOWN) && !(c->round_flags & RF_UNKNOWN))
        memcpy(c->round_err, msg, sizeof msg);
    else if ((flag & RF_AUTH) && !(c->round_flags & (RF_UNKNOWN | RF_AUTH)))
        memcpy(c->round_err, msg, sizeof msg);
    else if (c->round_err[0] == '\0')
        memcpy(c->round_err, msg, sizeof msg);
    c->round_flags |= flag;
}

/* Stop using the current probe: freed from the loop, then `next`. */
static void probe_schedule(redq__conn *c, int next)
{
    if (c->probe != NULL) {
        if (c->probe_dead != NULL)
            redq__conn_free(c->probe_dead); /* not in its callback: older */
        c->probe_dead = c->probe;
        c->probe = NULL;
    }
    c->probe_next = next;
    event_active(c->ev_probe, EV_TIMEOUT, 0);
}

static void probe_retire(redq__conn *c)
{
    if (c->probe != NULL)
        probe_schedule(c, PROBE_NONE);
    else if (c->probe_next != PROBE_NONE)
        c->probe_next = PROBE_NONE;
}

static void probe_ask(redq__conn *c)
{
    redq__conn_config cfg;
    redq__url u;
    const redq__url_node *n;
    int rc;

    if (c->sent_tried == c->nsent) {
        unsigned f = c->round_flags;
        int code = (f & RF_UNKNOWN) ? REDQ_ENOMASTER
                   : (f & RF_AUTH)  ? REDQ_EAUTH
                                    : REDQ_ECONNECT;
        c->sent_first = (c->sent_first + 1) % c->nsent;
        conn_drop(c, code, code == REDQ_ECONNECT ? 0u : DROP_PERMANENT,
                  "master %s: %s%s%s", c->master_name,
                  code == REDQ_ECONNECT ? "no sentinel answered (" : "",
                  c->round_err,
                  code == REDQ_ECONNECT ? ")" : "");
        return;
    }
    c->sent_idx = (c->sent_first + c->sent_tried) % c->nsent;
    c->sent_tried++;
    n = &c->sent[c->sent_idx];
    memset(&u, 0, sizeof u);
    u.host = n->host;
    u.port = n->port;
    u.user = c->sent_user;
    u.password = c->sent_password;
    memset(&cfg, 0, sizeof cfg);
    cfg.url = &u;
    cfg.client_name = c->client_name;
    cfg.connect_timeout_ms = c->connect_timeout_ms;
    cfg.command_timeout_ms = c->command_timeout_ms;
    cfg.reconnect_min_ms = c->reconnect_min_ms;
    cfg.reconnect_max_ms = c->reconnect_max_ms;
    cfg.log = &c->quiet;
    cfg.on_fail = probe_down;
    rc = redq__conn_new(&c->probe, c->base, &cfg, probe_up, probe_down, c);
    if (rc != 0) {
        c->probe = NULL;
        conn_drop(c, rc, 0, "sentinel discovery: %s", redq_strerror(rc));
        return;
    }
    redq__conn_start(c->probe);
}

static void probe_event_cb(evutil_socket_t fd, short what, void *arg)
{
    redq__conn *c = arg;
    int next = c->probe_next;
    (void)fd;
    (void)what;
    c->probe_next = PROBE_NONE;
    redq__conn_free(c->probe_dead);
    c->probe_dead = NULL;
    if (c->state != ST_DISCOVERING)
        return;
    if (next == PROBE_NEXT)
        probe_ask(c);
    else if (next == PROBE_CONNECT)
        connect_after_discovery(c);
}

static void discovery_start(redq__conn *c)
{
    c->state = ST_DISCOVERING;
    c->sent_tried = 0;
    c->round_flags = 0;
    c->round_err[0] = '\0';
    probe_ask(c);
}

/* The probe failed before it was ready (connect, AUTH, its deadline), or
 * lost its connection before answering. */
static void probe_down(redq__conn *sub, int code, const char *msg, void *arg)
{
    redq__conn *c = arg;
    if (sub != c->probe || c->state != ST_DISCOVERING)
        return;
    probe_note(c, code == REDQ_EAUTH || code == REDQ_ENOPERM ? RF_AUTH : 0,
               "sentinel %s", msg);
    probe_schedule(c, PROBE_NEXT);
}

static void watch_start(redq__conn *c, const char *ip);
static void resolved_cb(int status, const char *ip, const char *msg,
                        void *arg);

static void probe_reply(redq__conn *sub, void *reply, void *arg)
{
    redq__conn *c = arg;
    redisReply *r = reply;
    const char *sw = sub->where;
    if (sub != c->probe || c->state != ST_DISCOVERING)
        return;
    if (r == NULL) {
        probe_note(c, 0, "sentinel %s: %s", sw, sub->last_err);
    } else if (r->type == REDIS_REPLY_NIL ||
               (r->type == REDIS_REPLY_ARRAY && r->elements == 0)) {
        probe_note(c, RF_UNKNOWN, "sentinel %s knows no master named \"%s\"",
                   sw, c->master_name);
    } else if (r->type == REDIS_REPLY_ERROR) {
        int code = redq__err_from_reply(r->str, (size_t)r->len);
        probe_note(c, code == REDQ_EAUTH || code == REDQ_ENOPERM ? RF_AUTH : 0,
                   "sentinel %s: SENTINEL get-master-addr-by-name: %s", sw,
                   r->str);
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
               r->element[0]->type == REDIS_REPLY_STRING &&
               r->element[1]->type == REDIS_REPLY_STRING &&
               r->element[0]->len > 0 && r->element[0]->len < 64 &&
               atoi(r->element[1]->str) > 0 &&
               atoi(r->element[1]->str) < 65536) {
        char *h = dup_or_null(r->element[0]->str);
        char found[sizeof c->found];
        if (h == NULL) {
            probe_note(c, 0, "sentinel %s: out of memory", sw);
            probe_schedule(c, PROBE_NEXT);
            return;
        }
        free(c->host);
        c->host = h;
        c->port = atoi(r->element[1]->str);
        snprintf(found, sizeof found, strchr(h, ':') ? "[%s]:%d" : "%s:%d",
                 h, c->port);
        if (strcmp(found, c->found) != 0)
            conn_log(c, REDQ_LOG_INFO, 0,
                     "sentinel %s: master %s is at %s", sw, c->master_name,
                     found);
        memcpy(c->found, found, sizeof found);
        snprintf(c->where, sizeof c->where, "%s (master %s)", found,
                 c->master_name);
        c->sent_first = c->sent_idx;
        if (c->watch == NULL || c->watch_idx != c->sent_idx) {
            /* Watch the sentinel we trust now, at the address it resolved
             * to (the probe's ip). */
            watch_close(c);
            c->watch_idx = c->sent_idx;
            watch_start(c, sub->ip);
        }
        probe_schedule(c, PROBE_CONNECT);
        return;
    } else {
        probe_note(c, 0, "sentinel %s: unexpected reply to "
                         "get-master-addr-by-name", sw);
    }
    probe_schedule(c, PROBE_NEXT);
}

static void probe_up(redq__conn *sub, void *arg)
{
    redq__conn *c = arg;
    const char *argv[] = {"SENTINEL", "get-master-addr-by-name",
                          c->master_name};
    if (sub != c->probe)
        return;
    if (redq__conn_sendv(sub, 3, argv, NULL, 0, probe_reply, c) != 0) {
        probe_note(c, 0, "sentinel %s: cannot send", sub->where);
        probe_schedule(c, PROBE_NEXT);
    }
}

/* The master is known: connect to it, with the attempt's deadline. */
static void connect_after_discovery(redq__conn *c)
{
    struct timeval tv = tv_ms(c->connect_timeout_ms);
    event_add(c->t_state, &tv);
    c->state = ST_RESOLVING;
    if (redq__resolve(c->resolver, c->host, resolved_cb, c) != 0)
        conn_drop(c, REDQ_ENOMEM, 0, "resolve %s: out of memory", c->host);
}

/* ---- the +switch-master watch ---- */

static void watch_close(redq__conn *c)
{
    redisAsyncContext *ac = c->watch;
    c->watch = NULL; /* its callbacks see a stale context and return */
    if (ac != NULL)
        redisAsyncFree(ac);
}

/* "+switch-master <name> <old-ip> <old-port> <new-ip> <new-port>" */
static void watch_msg_cb(redisAsyncContext *ac, void *reply, void *privdata)
{
    redq__conn *c = ac->data;
    redisReply *r = reply, *m;
    char name[160], nip[64], nport[8], oip[64], oport[8];
    (void)privdata;
    if (c == NULL || c->watch != ac || r == NULL)
        return;
    if (r->type == REDIS_REPLY_ERROR) {
        /* NOAUTH or NOPERM on SUBSCRIBE: no early moves, no harm. */
        conn_log(c, REDQ_LOG_DEBUG, 0, "sentinel watch: %s", r->str);
        watch_close(c);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 3)
        return;
    m = r->element[2];
    if (r->element[0]->type != REDIS_REPLY_STRING ||
        strcmp(r->element[0]->str, "message") != 0 ||
        m->type != REDIS_REPLY_STRING)
        return;
    if (sscanf(m->str, "%159s %63s %7s %63s %7s", name, oip, oport, nip,
               nport) != 5 ||
        strcmp(name, c->master_name) != 0)
        return;
    conn_log(c, REDQ_LOG_INFO, 0,
             "sentinel: master %s switched from %s:%s to %s:%s", name, oip,
             oport, nip, nport);
    if (c->state == ST_READY &&
        !(strcmp(nip, c->ip) == 0 && atoi(nport) == c->port)) {
        conn_drop(c, REDQ_EDISCONNECTED, 0,
                  "%s: the sentinels switched master %s to %s:%s; following",
                  where(c), name, nip, nport);
    } else if (c->state == ST_BACKOFF) {
        struct timeval now = {0, 0};
        event_add(c->t_state, &now); /* no need to wait out the backoff */
    }
}

static void watch_on_connect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    redq__conn *c = ac->data;
    if (c == NULL || c->watch != ac)
        return;
    if (status != REDIS_OK) {
        c->watch = NULL; /* hiredis frees it */
        return;
    }
    redisEnableKeepAlive(&ac->c);
}

static void watch_on_disconnect(const redisAsyncContext *cac, int status)
{
    redisAsyncContext *ac = (redisAsyncContext *)cac;
    redq__conn *c = ac->data;
    (void)status;
    if (c != NULL && c->watch == ac)
        c->watch = NULL; /* the next discovery starts another */
}

static void watch_start(redq__conn *c, const char *ip)
{
    redisAsyncContext *ac;
    const redq__url_node *n = &c->sent[c->watch_idx];
    ac = redisAsyncConnect(ip[0] ? ip : n->host, n->port);
    if (ac == NULL)
        return;
    if (ac->err || io_attach(ac, c->base) != 0) {
        redisAsyncFree(ac);
        return;
    }
    ac->data = c;
    redisAsyncSetConnectCallback(ac, watch_on_connect);
    redisAsyncSetDisconnectCallback(ac, watch_on_disconnect);
    c->watch = ac;
    if (c->sent_password != NULL) {
        /* A refusal shows as NOAUTH on the SUBSCRIBE below. */
        if (c->sent_user != NULL)
            redisAsyncCommand(ac, NULL, NULL, "AUTH %s %s", c->sent_user,
                              c->sent_password);
        else
            redisAsyncCommand(ac, NULL, NULL, "AUTH %s", c->sent_password);
    }
    redisAsyncCommand(ac, watch_msg_cb, NULL, "SUBSCRIBE +switch-master");
}

static void resolved_cb(int status, const char *ip, const char *msg,
                        void *arg)
{
    redq__conn *c = arg;
    if (c->state != ST_RESOLVING)
        return;
    if (status != 0) {
        conn_drop(c, status, 0, "resolve %s: %s", c->host, msg);
        return;
    }
    snprintf(c->ip, sizeof c->ip, "%s", ip);
    connect_now(c);
}

/*
 * The target hook: where this attempt goes. The host and port it names
 * replace the previous ones (and "where" in messages). 0 when it named one;
 * otherwise the attempt has failed with its code (backoff scheduled).
 */
static int target_now(redq__conn *c)
{
    char host[256];
    int port = 0, rc;
    char *h;

    host[0] = '\0';
    rc = c->target(c, host, sizeof host, &port, c->target_arg);
    if (rc == 0 && (host[0] == '\0' || port <= 0 || port > 65535))
        rc = REDQ_EINVAL;
    if (rc != 0) {
        conn_drop(c, rc, 0, "%s: no target to connect to: %s", where(c),
                  redq_strerror(rc));
        return 0;
    }
    if (c->host == NULL || strcmp(c->host, host) != 0) {
        h = dup_or_null(host);
        if (h == NULL) {
            conn_drop(c, REDQ_ENOMEM, 0, "%s: out of memory", where(c));
            return 0;
        }
        free(c->host);
        c->host = h;
    }
    c->port = port;
    snprintf(c->where, sizeof c->where, strchr(host, ':') ? "[%s]:%d" : "%s:%d",
             host, port);
    return 1;
}

static void start_attempt(redq__conn *c)
{
    struct timeval tv = tv_ms(c->connect_timeout_ms);
    if (c->sentinel && c->state != ST_DISCOVERING) {
        /* Every attempt asks the sentinels first: a lost connection, a
         * replica's READONLY, LOADING or MASTERDOWN in the handshake may
         * all mean the master has moved. The deadline of the attempt
         * starts once the master is known (each sentinel asked has
         * connect_timeout_ms of its own). */
        discovery_start(c);
        return;
    }
    if (c->target != NULL && !c->sentinel && !target_now(c))
        return;
    event_add(c->t_state, &tv); /* the deadline for the whole attempt */
    if (c->is_unix) {
        connect_now(c);
        return;
    }
    c->state = ST_RESOLVING;
    if (redq__resolve(c->resolver, c->host, resolved_cb, c) != 0)
        conn_drop(c, REDQ_ENOMEM, 0, "resolve %s: out of memory", c->host);
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
 * Blank out every occurrence of the ACL user name and the password in msg:
 * servers quote the user in some errors ("NOPERM User alice has no
 * permissions", 7.2+), and no part of the credentials may reach a log.
 */
static void scrub(const redq__conn *c, char *msg)
{
    const char *secrets[4];
    int i;
    secrets[0] = c->user;
    secrets[1] = c->password;
    secrets[2] = c->sent_user;
    secrets[3] = c->sent_password;
    for (i = 0; i < 4; i++) {
        size_t n;
        char *p;
        /* One or two bytes would turn up by chance in any text and only
         * garble it (a password "1" in "127.0.0.1"): not masked. */
        if (secrets[i] == NULL || strlen(secrets[i]) < 3)
            continue;
        n = strlen(secrets[i]);
        while ((p = strstr(msg, secrets[i])) != NULL) {
            /* "***" is never longer than what it replaces. */
                memcpy(p, "***", 3);
            memmove(p + 3, p + n, strlen(p + n) + 1);
        }
    }
}

/* A log line that may quote the server (whose errors may quote the user). */
static void conn_log(const redq__conn *c, int level, int code,
                     const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    if (c->log == NULL || c->log->cb == NULL || level > c->log->level)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    scrub(c, msg);
    redq__log(c->log, level, code, "%s", msg);
}

/*
 * Give up on the current attempt or connection: record why, free the
 * hiredis context (its pending callbacks get NULL: outcome unknown), tell
 * the owner if it was ready, and schedule the next attempt.
 * flags: DROP_PERMANENT (retrying will not fix it, redq__conn_permanent_error
 * says so), or a TR_* passing state (waited out: warned about once per
 * state, then quietly retried with the backoff).
 * The arguments may point into c->last_err (state_timer_cb quotes it): the
 * message is built aside, then copied.
 */
static void conn_drop(redq__conn *c, int code, unsigned flags,
                      const char *fmt, ...)
{
    va_list ap;
    int was_ready = c->state == ST_READY;
    redisAsyncContext *ac = c->ac;
    unsigned tr = flags & 0xffu;
    int level;
    char msg[sizeof c->last_err];
    long delay;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    scrub(c, msg);
    memcpy(c->last_err, msg, sizeof msg);
    c->last_code = code;
    c->permanent = (flags & DROP_PERMANENT) != 0;
    c->dying = 0;
    c->follow = 0; /* a new connection asks the map anyway */
    c->scripts_loaded = 0; /* a new connection has loaded nothing yet */
    c->load_err_set = 0;
    c->eager_err[0] = '\0';

    redq__resolve_cancel(c->resolver);
    probe_retire(c);
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
    level = was_ready ? REDQ_LOG_WARN : REDQ_LOG_ERROR;
    if (tr != 0) {
        /* LOADING after a restart may last minutes: one line, not one per
         * attempt. Warned again once the server has worked in between. */
        level = (c->transient_warned & tr) ? REDQ_LOG_DEBUG : REDQ_LOG_WARN;
        c->transient_warned |= tr;
    }
    redq__log(c->log, level, code, "%s; %s in %ld ms", c->last_err,
              tr != 0 ? "waiting, retrying" : "retrying", delay);
    {
        struct timeval tv = tv_ms(delay);
        event_add(c->t_state, &tv);
    }
    if (was_ready && c->on_down != NULL)
        c->on_down(c, code, c->last_err, c->arg);
    else if (!was_ready && c->on_fail != NULL)
        c->on_fail(c, code, c->last_err, c->arg);
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
    case ST_DISCOVERING:
        break; /* the probes have deadlines of their own */
    case ST_RESOLVING:
    case ST_CONNECTING:
    case ST_HANDSHAKE:
        conn_drop(c, REDQ_ETIMEDOUT, 0, "connect %s: no %s within %d ms%s%s",
                  where(c), state_names[c->state], c->connect_timeout_ms,
                  c->last_err[0] ? " after " : "", c->last_err);
        break;
    case ST_READY:
        break;
    }
}

/*
 * At a reply deadline: is what we wrote still leaving the machine? A big
 * command can sit whole in the kernel's socket buffers (several MB on
 * Linux) and drain from there at the link's pace, with no partial write for
 * us to see. If the kernel's send queue holds bytes and has shrunk since the
 * last look (or this is the first look), the path is alive. A black hole
 * leaves the queue as it is, so it costs one extra timeout at most.
 */
static int send_queue_moving(redq__conn *c)
{
#if defined(SIOCOUTQ)
    int n = 0;
    if (c->ac != NULL && ioctl(c->ac->c.fd, SIOCOUTQ, &n) == 0 && n > 0) {
        int moved = c->outq_seen < 0 || (long)n < c->outq_seen;
        c->outq_seen = n;
        return moved;
    }
#endif
    (void)c;
    return 0;
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
    if (c->ring[c->ring_head].deadline_us <= now && send_queue_moving(c)) {
        long keep = c->outq_seen;
        conn_activity(c, now);
        c->outq_seen = keep;
    }
    if (c->ring[c->ring_head].deadline_us <= now) {
        conn_drop(c, REDQ_ETIMEDOUT, 0,
                  "nothing from %s for %d ms with a reply due; dropping the "
                  "connection",
                  where(c), c->command_timeout_ms);
        return;
    }
    arm_cmd_timer(c);
}

/* ---- the interface ------------------------------------------------------ */

/* A MOVED on a pinned connection (see on_reply): reconnect, to wherever
 * the target hook says the slot is now. */
static void follow_cb(evutil_socket_t fd, short what, void *arg)
{
    redq__conn *c = arg;
    (void)fd;
    (void)what;
    if (c->follow && c->state == ST_READY)
        conn_drop(c, REDQ_ECONNECT, 0, "%s: slot moved, following it",
                  where(c));
    c->follow = 0;
}

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
    /* Transition: the pop connections (the only ones that want a client
     * id) pick their pop command by version and may not ask for it yet. */
    c->want_version = cfg->want_version || cfg->want_client_id;
    c->load_scripts = cfg->load_scripts;
    c->client_id = -1;
    c->on_up = on_up;
    c->on_down = on_down;
    c->on_fail = cfg->on_fail;
    c->target = cfg->url->is_unix ? NULL : cfg->target;
    c->target_arg = cfg->target_arg;
    c->arg = arg;
    c->rng = (uint32_t)(redq__now_us() ^ (uintptr_t)c) | 1u;

    pw = cfg->password != NULL ? cfg->password : cfg->url->password;
    c->host = dup_or_null(cfg->url->host);
    c->path = dup_or_null(cfg->url->path);
    c->user = dup_or_null(cfg->url->user);
    c->password = dup_or_null(pw);
    if (cfg->client_name != NULL && cfg->client_name[0] != '\0')
        c->client_name = dup_or_null(cfg->client_name);
    if (cfg->url->is_sentinel) {
        size_t i;
        c->sentinel = 1;
        c->quiet.prefix = "sentinel";
        c->nsent = cfg->url->nsentinels;
        c->sent = calloc(c->nsent ? c->nsent : 1, sizeof *c->sent);
        for (i = 0; c->sent != NULL && i < c->nsent; i++) {
            c->sent[i].port = cfg->url->sentinels[i].port;
            c->sent[i].host = dup_or_null(cfg->url->sentinels[i].host);
            if (c->sent[i].host == NULL) {
                redq__conn_free(c);
                return REDQ_ENOMEM;
            }
        }
        c->master_name = dup_or_null(cfg->url->master_name);
        c->sent_user = dup_or_null(cfg->url->sentinel_user);
        c->sent_password = dup_or_null(cfg->url->sentinel_password);
        c->ev_probe = event_new(base, -1, 0, probe_event_cb, c);
        if (c->sent == NULL || c->master_name == NULL || c->ev_probe == NULL ||
            (cfg->url->sentinel_user && !c->sent_user) ||
            (cfg->url->sentinel_password && !c->sent_password)) {
            redq__conn_free(c);
            return REDQ_ENOMEM;
        }
        snprintf(c->where, sizeof c->where, "master %s (not found yet)",
                 c->master_name);
    } else if (c->is_unix)
        snprintf(c->where, sizeof c->where, "unix:%s", cfg->url->path);
    else
        snprintf(c->where, sizeof c->where, "%s:%d", cfg->url->host,
                 c->port);
    c->resolver = redq__resolver_new(base);
    /* Every connection: the arena is also where absurd reply sizes are
     * refused (lib/reply.c). cfg->arena_replies is no longer needed. */
    c->arena = redq__arena_new();
    c->t_state = event_new(base, -1, 0, state_timer_cb, c);
    c->t_cmd = event_new(base, -1, 0, cmd_timer_cb, c);
    c->redirect = cfg->redirect;
    if (c->redirect != NULL && (c->ev_follow = event_new(base, -1, 0,
                                                         follow_cb, c)) == NULL) {
        redq__conn_free(c);
        return REDQ_ENOMEM;
    }

    if ((cfg->url->host && !c->host) || (cfg->url->path && !c->path) ||
        (cfg->url->user && !c->user) || (pw && !c->password) ||
        (cfg->client_name && cfg->client_name[0] && !c->client_name) ||
        !c->resolver || !c->t_state || !c->t_cmd || !c->arena) {
        redq__conn_free(c);
        return REDQ_ENOMEM;
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
    /* In 64 bits: both may be up to INT_MAX (a pop that blocks "forever"). */
    dl = redq__now_us() + ((uint64_t)(unsigned)c->command_timeout_ms +
                           (uint64_t)(unsigned)extra_timeout_ms) * 1000u;
    return ring_push(c, cb, arg, dl, P_PLAIN);
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

/*
 * hiredis copies every command into its output buffer (c.obuf, an sds) and
 * writes from there. redisAsyncFormattedCommand() does that copy and also
 * registers the reply callback, parsing only the command's first argument
 * (the command name: it looks for SUBSCRIBE and MONITOR). So the first piece
 * goes through it, carrying the name, and the other pieces are appended to
 * the same buffer with hiredis's public sds functions. Nothing is written in
 * between: our adapter only writes from the loop (io_add_write defers it),
 * and even a partial write in between would only split the byte stream.
 * The room for all pieces is reserved first, so no append after the
 * callback is registered can fail and leave half a command behind.
 */
int redq__conn_sendiov(redq__conn *c, const redq__iov *iov, size_t n,
                       int extra_timeout_ms, redq__reply_cb cb, void *arg)
{
    size_t total = 0, i;
    sds ob;
    int rc;
    if (n == 0)
        return REDQ_EINVAL;
    for (i = 0; i < n; i++)
        total += iov[i].len;
    rc = send_common(c, extra_timeout_ms, cb, arg);
    if (rc != 0)
        return rc;
    ob = sdsMakeRoomFor(c->ac->c.obuf, total);
    if (ob == NULL) {
        ring_unpush(c);
        return REDQ_ENOMEM;
    }
    c->ac->c.obuf = ob;
    if (redisAsyncFormattedCommand(c->ac, on_reply, NULL, iov[0].base,
                                   iov[0].len) != REDIS_OK) {
        ring_unpush(c);
        return REDQ_EDISCONNECTED;
    }
    for (i = 1; i < n; i++)
        if (iov[i].len > 0)
            c->ac->c.obuf = sdscatlen(c->ac->c.obuf, iov[i].base, iov[i].len);
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

/* The reply to a lazy SCRIPT LOAD. On a refusal the bit is cleared (the
 * next use tries again) and the error is kept for the command right behind
 * it (P_AFTER_LOAD in on_reply). */
static void script_load_cb(redq__conn *c, void *reply, void *arg)
{
    redisReply *r = reply;
    int which = (int)(intptr_t)arg;
    if (r == NULL || r->type != REDIS_REPLY_ERROR)
        return;
    c->scripts_loaded &= ~(1u << which);
    snprintf(c->load_err, sizeof c->load_err, "%s", r->str);
    c->load_err_set = 1;
}

int redq__conn_send_script(redq__conn *c, int script, const char *cmd,
                           size_t len, int extra_timeout_ms, redq__reply_cb cb,
                           void *arg)
{
    uint32_t bit;
    int rc;
    if (script < 0 || script >= 32 || redq__script_source(script) == NULL)
        return REDQ_EINVAL;
    bit = 1u << script;
    if (REDQ__LIKELY(c->scripts_loaded & bit))
        return redq__conn_send(c, cmd, len, extra_timeout_ms, cb, arg);

    rc = send_common(c, 0, script_load_cb, (void *)(intptr_t)script);
    if (rc != 0)
        return rc;
    {
        const char *argv[] = {"SCRIPT", "LOAD", redq__script_source(script)};
        if (redisAsyncCommandArgv(c->ac, on_reply, NULL, 3, argv, NULL) !=
            REDIS_OK) {
            ring_unpush(c);
            return REDQ_EDISCONNECTED;
        }
    }
    /* Set now, not on the reply: the next use in this same iteration rides
     * behind this load and must not load again. */
    c->scripts_loaded |= bit;
    rc = ring_push(c, cb, arg,
                   redq__now_us() +
                       ((uint64_t)(unsigned)c->command_timeout_ms +
                        (uint64_t)(unsigned)extra_timeout_ms) * 1000u,
                   P_AFTER_LOAD);
    if (rc != 0) {
        arm_cmd_timer(c); /* the load alone is in flight; harmless */
        return rc;
    }
    if (redisAsyncFormattedCommand(c->ac, on_reply, NULL, cmd, len) !=
        REDIS_OK) {
        ring_unpush(c);
        arm_cmd_timer(c);
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
    conn_drop(c, code,
              why != NULL ? transient_state(why, strlen(why)) : 0u,
              "%s: %s", where(c), why != NULL ? why : "reset");
}

int redq__conn_permanent_error(const redq__conn *c)
{
    return c->state != ST_READY && c->permanent ? c->last_code : 0;
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
    c->on_fail = NULL;
    c->state = ST_BACKOFF;
    if (ac != NULL)
        redisAsyncFree(ac); /* pending callbacks run now, with NULL */
    watch_close(c);
    redq__conn_free(c->probe);
    redq__conn_free(c->probe_dead);
    if (c->ev_probe != NULL)
        event_free(c->ev_probe);
    if (c->sent != NULL) {
        size_t i;
        for (i = 0; i < c->nsent; i++)
            free(c->sent[i].host);
        free(c->sent);
    }
    free(c->master_name);
    free(c->sent_user);
    if (c->sent_password != NULL) {
        memset(c->sent_password, 0, strlen(c->sent_password));
        free(c->sent_password);
    }
    redq__arena_free(c->arena); /* after the context: it frees into it */
    if (c->resolver != NULL)
        redq__resolver_free(c->resolver);
    if (c->t_state != NULL)
        event_free(c->t_state);
    if (c->t_cmd != NULL)
        event_free(c->t_cmd);
    if (c->ev_follow != NULL)
        event_free(c->ev_follow);
    free(c->ring);
    free(c->host);
    free(c->path);
    free(c->user);
    free(c->password);
    free(c->client_name);
    free(c);
}
