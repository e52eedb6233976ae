/*
 * Sentinel discovery for redis+sentinel:// URLs: where a connection's
 * master is (SENTINEL get-master-addr-by-name, asked of each sentinel in
 * turn), and the +switch-master watch that moves the connection as soon
 * as a failover is decided. Part of the connection (lib/conn.c), which
 * calls redq__sentinel_start at every attempt of a sentinel connection;
 * docs/DESIGN.md, "Discovery".
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/async.h>
#include <hiredis/hiredis.h>

#include "conn_int.h"

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
static void connect_after_discovery(redq__conn *c);
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
    redq__cn_scrub(c, msg);
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

void redq__sentinel_retire(redq__conn *c)
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
        redq__cn_drop(c, code, code == REDQ_ECONNECT ? 0u : DROP_PERMANENT,
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
        redq__cn_drop(c, rc, 0, "sentinel discovery: %s", redq_strerror(rc));
        return;
    }
    redq__conn_start(c->probe);
}

void redq__sentinel_event_cb(evutil_socket_t fd, short what, void *arg)
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

void redq__sentinel_start(redq__conn *c)
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
        char *h = redq__cn_strdup(r->element[0]->str);
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
            redq__cn_log(c, REDQ_LOG_INFO, 0,
                     "sentinel %s: master %s is at %s", sw, c->master_name,
                     found);
        memcpy(c->found, found, sizeof found);
        snprintf(c->where, sizeof c->where, "%s (master %s)", found,
                 c->master_name);
        c->sent_first = c->sent_idx;
        if (c->watch == NULL || c->watch_idx != c->sent_idx) {
            /* Watch the sentinel we trust now, at the address it resolved
             * to (the probe's ip). */
            redq__sentinel_watch_close(c);
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
    struct timeval tv = redq__cn_tv_ms(c->connect_timeout_ms);
    event_add(c->t_state, &tv);
    c->state = ST_RESOLVING;
    if (redq__resolve(c->resolver, c->host, redq__cn_resolved_cb, c) != 0)
        redq__cn_drop(c, REDQ_ENOMEM, 0, "resolve %s: out of memory", c->host);
}

/* ---- the +switch-master watch ---- */

void redq__sentinel_watch_close(redq__conn *c)
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
        redq__cn_log(c, REDQ_LOG_DEBUG, 0, "sentinel watch: %s", r->str);
        redq__sentinel_watch_close(c);
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
    redq__cn_log(c, REDQ_LOG_INFO, 0,
             "sentinel: master %s switched from %s:%s to %s:%s", name, oip,
             oport, nip, nport);
    if (c->state == ST_READY &&
        !(strcmp(nip, c->ip) == 0 && atoi(nport) == c->port)) {
        redq__cn_drop(c, REDQ_EDISCONNECTED, 0,
                  "%s: the sentinels switched master %s to %s:%s; following",
                  redq__cn_where(c), name, nip, nport);
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
    if (ac->err || redq__cn_io_attach(ac, c->base) != 0) {
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
