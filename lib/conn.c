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

#include "conn_int.h"

static const char *const state_names[] = {
    "idle", "discovery", "resolving", "connecting", "handshake", "ready", "backoff"};

static void start_attempt(redq__conn *c);

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
        (pending){cb, arg, deadline, flags, 0};
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

struct timeval redq__cn_tv_ms(long ms)
{
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

const char *redq__cn_where(const redq__conn *c)
{
    return c->where;
}

char *redq__cn_strdup(const char *s)
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

/*
 * A command was just put in the output buffer, which held `before` bytes:
 * count it and remember where it ends, so that activity on the way out
 * extends the oldest command's deadline only while that command itself is
 * still leaving. (Bytes of later commands moving say nothing about a reply
 * the server owes: a blocked command behind which others keep being written
 * must still time out.) Appends never write at once (the adapter writes
 * from the loop), so the difference is exactly this command.
 */
static void mark_appended(redq__conn *c, size_t before)
{
    size_t now;
    if (c->ac == NULL || c->ring_len == 0)
        return;
    now = sdslen(c->ac->c.obuf);
    if (now > before)
        c->appended += now - before;
    c->ring[(c->ring_head + c->ring_len - 1) % c->ring_cap].end_off =
        c->appended;
}

/* Bytes of the oldest command that are not yet out of the output buffer
 * (0: written whole), minus `beyond` more that sit in the kernel. Unknown
 * bytes in the buffer (commands without a reply slot) make it larger, never
 * smaller: at worst a deadline is extended as before. */
static int head_leaving(const redq__conn *c, uint64_t beyond)
{
    uint64_t buffered, gone;
    if (c->ring_len == 0 || c->ac == NULL)
        return 0;
    buffered = sdslen(c->ac->c.obuf);
    gone = c->appended > buffered ? c->appended - buffered : 0;
    gone = gone > beyond ? gone - beyond : 0;
    return c->ring[c->ring_head].end_off > gone;
}

static void arm_cmd_timer(redq__conn *c)
{
    uint64_t now, dl;
    if (c->ring_len == 0 || c->t_cmd_armed)
        return;
    now = redq__now_us();
    dl = c->ring[c->ring_head].deadline_us;
    {
        struct timeval tv = redq__cn_tv_ms(dl > now ? (long)((dl - now) / 1000) + 1 : 0);
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
    if (c != NULL && (io->ac->c.flags & REDIS_CONNECTED) &&
        head_leaving(c, 0))
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

int redq__cn_io_attach(redisAsyncContext *ac, struct event_base *base)
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
                  redq__cn_where(c), c->server_version / 10000,
                  c->server_version / 100 % 100, c->server_version % 100);
    else
        redq__log(c->log, REDQ_LOG_INFO, 0, "connected to %s", redq__cn_where(c));
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
        redq__cn_drop(c, REDQ_ESERVER, tr, "%s on %s: %s", what, redq__cn_where(c), r->str);
        return HS_GONE;
    }
    if (redq__err_from_reply(r->str, (size_t)r->len) == REDQ_EAUTH) {
        /* NOAUTH: no password given, or AUTH failed before it. */
        redq__cn_drop(c, REDQ_EAUTH, DROP_PERMANENT, "%s on %s: %s", what,
                  redq__cn_where(c), r->str);
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
    redq__cn_drop(c, code == REDQ_ENOPERM ? code : REDQ_EAUTH, DROP_PERMANENT,
              "AUTH on %s: %s", redq__cn_where(c), r->str);
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
    redq__cn_drop(c, code == REDQ_ENOPERM ? code : REDQ_ESELECT, DROP_PERMANENT,
              "SELECT %d on %s: %s", c->db, redq__cn_where(c), r->str);
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
        redq__cn_log(c, REDQ_LOG_WARN, REDQ_ENOPERM,
                  "CLIENT SETNAME on %s: %s (continuing without a name)",
                  redq__cn_where(c), r->str);
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
    redq__cn_log(c, REDQ_LOG_INFO, 0,
              "server version of %s unknown (%s); carrying on", redq__cn_where(c),
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
            redq__cn_drop(c, REDQ_ENOMEM, 0, "INFO on %s: cannot send", redq__cn_where(c));
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
    redq__cn_drop(c, code, DROP_PERMANENT, "CLIENT ID on %s: %s", redq__cn_where(c),
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
            redq__cn_log(c, REDQ_LOG_WARN,
                      redq__err_from_reply(r->str, (size_t)r->len),
                      "SCRIPT LOAD on %s: %s (continuing; commands that "
                      "need the script will fail)",
                      redq__cn_where(c), r->str);
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
            redq__cn_log(c, REDQ_LOG_WARN, redq__err_from_reply(r->str,
                                                             (size_t)r->len),
                     "ROLE on %s: %s (cannot check it is the master; "
                     "allow +role for this user)",
                     redq__cn_where(c), r->str);
        }
        break;
    case HS_OK:
        if (r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
            r->element[0]->type == REDIS_REPLY_STRING &&
            strcmp(r->element[0]->str, "master") != 0) {
            c->sent_first = (c->sent_idx + 1) % c->nsent;
            redq__cn_drop(c, REDQ_ESERVER, 0,
                      "%s is a %s, not the master of %s (a stale sentinel "
                      "answer, or a failover under way); asking the "
                      "sentinels again",
                      redq__cn_where(c), r->element[0]->str, c->master_name);
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
    {
        size_t before_ = c->ac != NULL ? sdslen(c->ac->c.obuf) : 0;
        if (redisAsyncCommandArgv(c->ac, on_reply, NULL, argc, argv, NULL) !=
            REDIS_OK) {
            ring_unpush(c);
            return REDQ_EDISCONNECTED;
        }
        mark_appended(c, before_);
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
        redq__cn_drop(c, REDQ_ECONNECT, 0, "connect %s: %s", redq__cn_where(c),
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
        redq__cn_drop(c, REDQ_EPROTOCOL, 0,
                  "protocol error from %s: %s; dropping the connection",
                  redq__cn_where(c), redq__arena_error(c->arena));
        return;
    }
    code = ac->c.err == REDIS_ERR_PROTOCOL ? REDQ_EPROTOCOL
                                           : REDQ_EDISCONNECTED;
    redq__cn_drop(c, code, 0, "connection to %s lost: %s", redq__cn_where(c),
              status == REDIS_OK ? "closed"
              : ac->errstr[0]    ? ac->errstr
                                 : "error");
}

/* ---- connecting and reconnecting ---------------------------------------- */

void redq__cn_connect_now(redq__conn *c)
{
    redisAsyncContext *ac;

    c->state = ST_CONNECTING;
    c->outq_seen = -1;
    c->appended = 0; /* a new context, a new output buffer */
    if (c->is_unix)
        ac = redisAsyncConnectUnix(c->path);
    else
        ac = redisAsyncConnect(c->ip, c->port);
    if (ac == NULL) {
        redq__cn_drop(c, REDQ_ENOMEM, 0, "connect %s: out of memory", redq__cn_where(c));
        return;
    }
    if (ac->err) {
        /* Refused at once (common on loopback). Not attached, no
         * callbacks: free it right here. */
        char msg[200];
        snprintf(msg, sizeof msg, "%s", ac->errstr);
        redisAsyncFree(ac);
        redq__cn_drop(c, REDQ_ECONNECT, 0, "connect %s: %s", redq__cn_where(c), msg);
        return;
    }
    ac->data = c;
    redq__arena_attach(c->arena, ac->c.reader); /* nothing parsed yet */
    if (redq__cn_io_attach(ac, c->base) != 0) {
        redisAsyncFree(ac);
        redq__cn_drop(c, REDQ_ENOMEM, 0, "connect %s: cannot attach to the loop",
                  redq__cn_where(c));
        return;
    }
    redisAsyncSetConnectCallback(ac, on_connect);
    redisAsyncSetDisconnectCallback(ac, on_disconnect);
    c->ac = ac;
}


void redq__cn_resolved_cb(int status, const char *ip, const char *msg,
                        void *arg)
{
    redq__conn *c = arg;
    if (c->state != ST_RESOLVING)
        return;
    if (status != 0) {
        redq__cn_drop(c, status, 0, "resolve %s: %s", c->host, msg);
        return;
    }
    snprintf(c->ip, sizeof c->ip, "%s", ip);
    redq__cn_connect_now(c);
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
        /* A cluster's slot map is still loading (start-up, a failover):
         * a passing state, said once, not an error per attempt. */
        redq__cn_drop(c, rc, rc == REDQ_ECONNECT ? TR_NOTARGET : 0,
                      "%s: no master known for its slot yet (%s)",
                      redq__cn_where(c), redq_strerror(rc));
        return 0;
    }
    if (c->host == NULL || strcmp(c->host, host) != 0) {
        h = redq__cn_strdup(host);
        if (h == NULL) {
            redq__cn_drop(c, REDQ_ENOMEM, 0, "%s: out of memory", redq__cn_where(c));
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
    struct timeval tv = redq__cn_tv_ms(c->connect_timeout_ms);
    if (c->sentinel && c->state != ST_DISCOVERING) {
        /* Every attempt asks the sentinels first: a lost connection, a
         * replica's READONLY, LOADING or MASTERDOWN in the handshake may
         * all mean the master has moved. The deadline of the attempt
         * starts once the master is known (each sentinel asked has
         * connect_timeout_ms of its own). */
        redq__sentinel_start(c);
        return;
    }
    if (c->target != NULL && !c->sentinel && !target_now(c))
        return;
    event_add(c->t_state, &tv); /* the deadline for the whole attempt */
    if (c->is_unix) {
        redq__cn_connect_now(c);
        return;
    }
    c->state = ST_RESOLVING;
    if (redq__resolve(c->resolver, c->host, redq__cn_resolved_cb, c) != 0)
        redq__cn_drop(c, REDQ_ENOMEM, 0, "resolve %s: out of memory", c->host);
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
void redq__cn_scrub(const redq__conn *c, char *msg)
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
void redq__cn_log(const redq__conn *c, int level, int code,
                     const char *fmt, ...)
{
    char msg[400];
    va_list ap;
    if (c->log == NULL || c->log->cb == NULL || level > c->log->level)
        return;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    redq__cn_scrub(c, msg);
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
void redq__cn_drop(redq__conn *c, int code, unsigned flags,
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
    redq__cn_scrub(c, msg);
    memcpy(c->last_err, msg, sizeof msg);
    c->last_code = code;
    c->permanent = (flags & DROP_PERMANENT) != 0;
    c->dying = 0;
    c->follow = 0; /* a new connection asks the map anyway */
    c->scripts_loaded = 0; /* a new connection has loaded nothing yet */
    c->load_err_set = 0;
    c->eager_err[0] = '\0';

    redq__resolve_cancel(c->resolver);
    redq__sentinel_retire(c);
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
        level = (c->transient_warned & tr) ? REDQ_LOG_DEBUG
                : tr == TR_NOTARGET         ? REDQ_LOG_INFO
                                            : REDQ_LOG_WARN;
        c->transient_warned |= tr;
    }
    redq__log(c->log, level, code, "%s; %s in %ld ms", c->last_err,
              tr != 0 ? "waiting, retrying" : "retrying", delay);
    {
        struct timeval tv = redq__cn_tv_ms(delay);
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
        redq__cn_drop(c, REDQ_ETIMEDOUT, 0, "connect %s: no %s within %d ms%s%s",
                  redq__cn_where(c), state_names[c->state], c->connect_timeout_ms,
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
    if (c->ac != NULL && ioctl(c->ac->c.fd, SIOCOUTQ, &n) == 0 && n > 0 &&
        head_leaving(c, (uint64_t)n)) {
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
        redq__cn_drop(c, REDQ_ETIMEDOUT, 0,
                  "nothing from %s for %d ms with a reply due; dropping the "
                  "connection",
                  redq__cn_where(c), c->command_timeout_ms);
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
        redq__cn_drop(c, REDQ_ECONNECT, 0, "%s: slot moved, following it",
                  redq__cn_where(c));
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
    c->host = redq__cn_strdup(cfg->url->host);
    c->path = redq__cn_strdup(cfg->url->path);
    c->user = redq__cn_strdup(cfg->url->user);
    c->password = redq__cn_strdup(pw);
    if (cfg->client_name != NULL && cfg->client_name[0] != '\0')
        c->client_name = redq__cn_strdup(cfg->client_name);
    if (cfg->url->is_sentinel) {
        size_t i;
        c->sentinel = 1;
        c->quiet.prefix = "sentinel";
        c->nsent = cfg->url->nsentinels;
        c->sent = calloc(c->nsent ? c->nsent : 1, sizeof *c->sent);
        for (i = 0; c->sent != NULL && i < c->nsent; i++) {
            c->sent[i].port = cfg->url->sentinels[i].port;
            c->sent[i].host = redq__cn_strdup(cfg->url->sentinels[i].host);
            if (c->sent[i].host == NULL) {
                redq__conn_free(c);
                return REDQ_ENOMEM;
            }
        }
        c->master_name = redq__cn_strdup(cfg->url->master_name);
        c->sent_user = redq__cn_strdup(cfg->url->sentinel_user);
        c->sent_password = redq__cn_strdup(cfg->url->sentinel_password);
        c->ev_probe = event_new(base, -1, 0, redq__sentinel_event_cb, c);
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
    {
        size_t before_ = c->ac != NULL ? sdslen(c->ac->c.obuf) : 0;
        if (redisAsyncFormattedCommand(c->ac, on_reply, NULL, cmd, len) !=
            REDIS_OK) {
            ring_unpush(c);
            return REDQ_EDISCONNECTED;
        }
        mark_appended(c, before_);
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
    {
        size_t before_ = c->ac != NULL ? sdslen(c->ac->c.obuf) : 0;
        if (redisAsyncFormattedCommand(c->ac, on_reply, NULL, iov[0].base,
                                       iov[0].len) != REDIS_OK) {
            ring_unpush(c);
            return REDQ_EDISCONNECTED;
        }
        for (i = 1; i < n; i++)
            if (iov[i].len > 0)
                c->ac->c.obuf =
                    sdscatlen(c->ac->c.obuf, iov[i].base, iov[i].len);
        mark_appended(c, before_);
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
    {
        size_t before_ = c->ac != NULL ? sdslen(c->ac->c.obuf) : 0;
        if (redisAsyncCommandArgv(c->ac, on_reply, NULL, argc, argv, argvlen) !=
            REDIS_OK) {
            ring_unpush(c);
            return REDQ_EDISCONNECTED;
        }
        mark_appended(c, before_);
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
        {
            size_t before_ = c->ac != NULL ? sdslen(c->ac->c.obuf) : 0;
            if (redisAsyncCommandArgv(c->ac, on_reply, NULL, 3, argv, NULL) !=
                REDIS_OK) {
                ring_unpush(c);
                return REDQ_EDISCONNECTED;
            }
            mark_appended(c, before_);
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
    {
        size_t before_ = c->ac != NULL ? sdslen(c->ac->c.obuf) : 0;
        if (redisAsyncFormattedCommand(c->ac, on_reply, NULL, cmd, len) !=
            REDIS_OK) {
            ring_unpush(c);
            arm_cmd_timer(c);
            return REDQ_EDISCONNECTED;
        }
        mark_appended(c, before_);
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
    redq__cn_drop(c, code,
              why != NULL ? transient_state(why, strlen(why)) : 0u,
              "%s: %s", redq__cn_where(c), why != NULL ? why : "reset");
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
    redq__sentinel_watch_close(c);
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
