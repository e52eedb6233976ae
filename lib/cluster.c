/*
 * A Redis Cluster client: routes preformatted commands by hash slot to the
 * master that owns the slot, over one shared redq__conn per master, on the
 * caller's event_base. See docs/DESIGN.md, "Cluster client".
 *
 *   slot map     from CLUSTER SLOTS, asked of any known node (seeds first,
 *                then the nodes learnt), refreshed when it proves stale
 *                (MOVED, CLUSTERDOWN, a node lost, a command that cannot
 *                reach its owner) and never more often than REFRESH_MIN_MS.
 *   redirects    MOVED: the slot's owner is updated at once, a refresh is
 *                scheduled, the command is resent. ASK: ASKING then the
 *                command on the node named, once; the map is unchanged.
 *                TRYAGAIN, CLUSTERDOWN: resent after a short backoff, until
 *                the command's deadline. A lost connection: the caller
 *                gets NULL (outcome unknown), as from a redq__conn.
 *   order        every slot has a queue of the commands not yet answered,
 *                in the caller's order. A command goes out only when every
 *                command ahead of it in its slot is in flight on the node
 *                it goes to, so that commands of one slot reach a server in
 *                the caller's order, across redirects too.
 *   pins         a dedicated redq__conn that connects wherever the master
 *                of one slot is (redq__conn_config.target), for blocking
 *                commands.
 *
 * The command bytes are kept with each request until its final reply, so
 * that it can be resent. Nothing is freed from inside a callback of the
 * connection it belongs to: node connections that fell out of the map are
 * freed from a zero timer.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "redq_private.h"

#define NSLOTS 16384
/* Slot maps loaded at most this often (a burst of MOVED is one refresh). */
#define REFRESH_MIN_MS 100
/* While a command waits for a node that is unreachable or unknown, the map
 * is asked again this often (a failover is under way). */
#define REFRESH_STARVED_MS 250
/* The tick that resends after a backoff and expires commands that waited
 * past their deadline; it runs only while some command waits. */
#define TICK_MS 10
/* TRYAGAIN / CLUSTERDOWN backoff: doubling from MIN to MAX. */
#define BACKOFF_MIN_MS 10
#define BACKOFF_MAX_MS 200
/* Redirects of one command before its last redirect is its answer: a
 * cluster that keeps bouncing a command is broken, not migrating. */
#define MAX_REDIRECTS 16

typedef struct cnode cnode;
typedef struct creq creq;

struct cnode {
    redq__cluster *cl;
    cnode *next;
    char *host;
    int port;
    char name[280]; /* "host:port" */
    redq__conn *conn; /* created on first use */
    int seed;
    unsigned inflight; /* requests SENT on it */
    int gc;            /* out of the map: free once idle */
};

enum { RQ_HELD, RQ_SENT };

struct creq {
    redq__cluster *cl;
    creq *prev, *next; /* in its slot's queue */
    unsigned slot;
    int state;        /* RQ_* */
    int script;       /* -1 or REDQ__SCRIPT_* */
    int extra_timeout_ms;
    cnode *node;      /* SENT: where */
    cnode *ask;       /* HELD after ASK: where to send it with ASKING */
    uint64_t deadline_us;
    uint64_t not_before_us; /* backoff after TRYAGAIN / CLUSTERDOWN */
    int backoffs, redirects;
    char *last_err;   /* the last redirect's error, for an expiry */
    redq__cluster_reply_cb cb;
    void *arg;
    size_t len;
    char cmd[]; /* the command bytes, kept for resends */
};

struct redq__cluster_pin {
    redq__cluster *cl;
    redq__cluster_pin *next;
    unsigned slot;
    redq__conn *conn;
    redq__conn_up_cb up;
    redq__conn_down_cb down;
    void *arg;
};

struct redq__cluster {
    struct event_base *base;
    /* The node connections' template. */
    char *user, *password, *client_name;
    int connect_timeout_ms, command_timeout_ms;
    int reconnect_min_ms, reconnect_max_ms;
    int want_version;
    const redq__logger *log;

    cnode *nodes;           /* seeds first, in the URL's order */
    cnode *map[NSLOTS];     /* the owner of each slot; NULL: unknown */
    int map_known;
    creq *qhead[NSLOTS], *qtail[NSLOTS];
    size_t nheld;           /* requests in RQ_HELD */
    size_t nreq;            /* requests not answered yet */
    int starved;            /* a held request has no reachable owner */

    int refreshing;         /* a CLUSTER SLOTS is in flight */
    int refresh_again;      /* and another was asked for meanwhile */
    int refresh_waiting;    /* no node was ready to ask: on the next up */
    cnode *refresh_node;    /* asked last */
    uint64_t refresh_at_us; /* when the last one started */
    struct event *ev_refresh, *ev_tick, *ev_gc;
    int tick_armed;
    int dying;

    redq__cluster_pin *pins;
    redq__cluster_stats st;
};

static void pump(redq__cluster *cl, unsigned slot);
static void refresh_maybe(redq__cluster *cl);
static void tick_arm(redq__cluster *cl);

/* ---- small helpers ------------------------------------------------------- */

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

static struct timeval tv_ms(long ms)
{
    struct timeval tv;
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

static void noop_reply(redq__conn *c, void *reply, void *arg)
{
    (void)c;
    (void)reply;
    (void)arg;
}

/* ---- nodes ---------------------------------------------------------------- */

static void node_up(redq__conn *c, void *arg);
static void node_down(redq__conn *c, int code, const char *msg, void *arg);

static cnode *node_find(redq__cluster *cl, const char *host, size_t hlen,
                        int port)
{
    cnode *n;
    for (n = cl->nodes; n != NULL; n = n->next)
        if (n->port == port && strlen(n->host) == hlen &&
            memcmp(n->host, host, hlen) == 0)
            return n;
    return NULL;
}

/* The node host:port, added (without a connection) when new; NULL when out
 * of memory. New nodes go at the end: seeds stay first. */
static cnode *node_get(redq__cluster *cl, const char *host, size_t hlen,
                       int port)
{
    cnode *n = node_find(cl, host, hlen, port), **tail;
    if (n != NULL) {
        n->gc = 0;
        return n;
    }
    n = calloc(1, sizeof *n);
    if (n == NULL)
        return NULL;
    n->host = malloc(hlen + 1);
    if (n->host == NULL) {
        free(n);
        return NULL;
    }
    memcpy(n->host, host, hlen);
    n->host[hlen] = '\0';
    n->port = port;
    n->cl = cl;
    snprintf(n->name, sizeof n->name,
             memchr(host, ':', hlen) ? "[%s]:%d" : "%s:%d", n->host, port);
    for (tail = &cl->nodes; *tail != NULL; tail = &(*tail)->next) {
    }
    *tail = n;
    return n;
}

/* Start the node's connection if it has none. 0 or REDQ_ENOMEM. */
static int node_connect(cnode *n)
{
    redq__cluster *cl = n->cl;
    redq__conn_config cfg;
    redq__url u;
    int rc;
    if (n->conn != NULL)
        return 0;
    memset(&u, 0, sizeof u);
    u.host = n->host;
    u.port = n->port;
    u.user = cl->user;
    u.password = cl->password;
    memset(&cfg, 0, sizeof cfg);
    cfg.url = &u;
    cfg.client_name = cl->client_name;
    cfg.connect_timeout_ms = cl->connect_timeout_ms;
    cfg.command_timeout_ms = cl->command_timeout_ms;
    cfg.reconnect_min_ms = cl->reconnect_min_ms;
    cfg.reconnect_max_ms = cl->reconnect_max_ms;
    cfg.log = cl->log;
    cfg.want_version = cl->want_version;
    cfg.on_fail = node_down;
    rc = redq__conn_new(&n->conn, cl->base, &cfg, node_up, node_down, n);
    if (rc != 0) {
        n->conn = NULL;
        return rc;
    }
    cl->st.nodes++;
    redq__conn_start(n->conn);
    return 0;
}

static int node_ready(const cnode *n)
{
    return n->conn != NULL && redq__conn_ready(n->conn);
}

static void pump_all(redq__cluster *cl)
{
    unsigned s;
    cl->starved = 0;
    for (s = 0; s < NSLOTS && cl->nheld > 0; s++)
        if (cl->qhead[s] != NULL)
            pump(cl, s);
}

static void start_refresh(redq__cluster *cl);

static void node_up(redq__conn *c, void *arg)
{
    cnode *n = arg;
    redq__cluster *cl = n->cl;
    (void)c;
    if (cl->refresh_waiting)
        start_refresh(cl);
    pump_all(cl);
}

/* Lost, or an attempt failed: the map may be stale (a master died). */
static void node_down(redq__conn *c, int code, const char *msg, void *arg)
{
    cnode *n = arg;
    (void)c;
    (void)code;
    (void)msg;
    if (!n->cl->dying && !n->gc)
        refresh_maybe(n->cl);
}

/* Free the connections of nodes that left the map and carry nothing. From
 * the loop (ev_gc), never inside one of their callbacks. */
static void gc_cb(evutil_socket_t fd, short what, void *arg)
{
    redq__cluster *cl = arg;
    cnode **pp = &cl->nodes, *n;
    unsigned s;
    creq *r;
    (void)fd;
    (void)what;
    /* An ASK target is not in the map but still needed. */
    for (s = 0; s < NSLOTS; s++)
        for (r = cl->qhead[s]; r != NULL; r = r->next)
            if (r->ask != NULL)
                r->ask->gc = 0;
    while ((n = *pp) != NULL) {
        /* Not the node a CLUSTER SLOTS is in flight on: its reply
         * callback reads it. */
        if (n->gc && !n->seed && n->inflight == 0 && n != cl->refresh_node) {
            *pp = n->next;
            if (n->conn != NULL) {
                redq__conn_free(n->conn);
                cl->st.nodes--;
            }
            free(n->host);
            free(n);
            continue;
        }
        pp = &n->next;
    }
}

/* ---- the slot map --------------------------------------------------------- */

static void refresh_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    start_refresh(arg);
}

/* Ask for a new map now, or as soon as the rate limit allows. */
static void refresh_maybe(redq__cluster *cl)
{
    uint64_t now = redq__now_us(), next;
    if (cl->dying)
        return;
    if (cl->refreshing) {
        cl->refresh_again = 1;
        return;
    }
    if (cl->refresh_waiting || event_pending(cl->ev_refresh, EV_TIMEOUT, NULL))
        return;
    next = cl->refresh_at_us + (uint64_t)REFRESH_MIN_MS * 1000u;
    if (cl->refresh_at_us != 0 && next > now) {
        struct timeval tv = tv_ms((long)((next - now) / 1000) + 1);
        event_add(cl->ev_refresh, &tv);
        return;
    }
    start_refresh(cl);
}

/* "host:port" (or "[v6]:port", or ":port": the node that answered) into a
 * node; NULL when malformed or out of memory. */
static cnode *node_from_addr(redq__cluster *cl, const char *s, size_t len,
                             const cnode *from)
{
    const char *colon = NULL, *h = s;
    size_t i, hlen;
    int port = 0;
    for (i = 0; i < len; i++)
        if (s[i] == ':')
            colon = s + i;
    if (colon == NULL || colon + 1 == s + len)
        return NULL;
    for (i = (size_t)(colon + 1 - s); i < len; i++) {
        if (s[i] < '0' || s[i] > '9' || port > 65535)
            return NULL;
        port = port * 10 + (s[i] - '0');
    }
    if (port <= 0 || port > 65535)
        return NULL;
    hlen = (size_t)(colon - s);
    if (hlen >= 2 && h[0] == '[' && h[hlen - 1] == ']') {
        h++;
        hlen -= 2;
    }
    if (hlen == 0 || (hlen == 1 && h[0] == '?')) {
        if (from == NULL)
            return NULL;
        h = from->host;
        hlen = strlen(h);
    }
    return node_get(cl, h, hlen, port);
}

/* Read a CLUSTER SLOTS reply into the map. 0, or -1 when it is not one. */
static int load_slots(redq__cluster *cl, const redisReply *r,
                      const cnode *from)
{
    cnode **map; /* built aside: a bad reply leaves the map as it was */
    size_t i;
    unsigned s;
    cnode *n;
    if (r->type != REDIS_REPLY_ARRAY || r->elements == 0)
        return -1;
    map = calloc(NSLOTS, sizeof *map);
    if (map == NULL)
        return -1;
    for (i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i], *m;
        const char *h;
        size_t hlen;
        long long a, b;
        if (e->type != REDIS_REPLY_ARRAY || e->elements < 3 ||
            e->element[0]->type != REDIS_REPLY_INTEGER ||
            e->element[1]->type != REDIS_REPLY_INTEGER ||
            e->element[2]->type != REDIS_REPLY_ARRAY ||
            e->element[2]->elements < 2)
            goto bad;
        a = e->element[0]->integer;
        b = e->element[1]->integer;
        m = e->element[2];
        if (a < 0 || b >= NSLOTS || a > b ||
            m->element[0]->type != REDIS_REPLY_STRING ||
            m->element[1]->type != REDIS_REPLY_INTEGER ||
            m->element[1]->integer <= 0 || m->element[1]->integer > 65535)
            goto bad;
        h = m->element[0]->str;
        hlen = (size_t)m->element[0]->len;
        /* "" or "?": the node does not know its own address; it is the
         * one that answered. */
        if (hlen == 0 || (hlen == 1 && h[0] == '?')) {
            h = from->host;
            hlen = strlen(h);
        }
        n = node_get(cl, h, hlen, (int)m->element[1]->integer);
        if (n == NULL)
            goto bad;
        for (s = (unsigned)a; s <= (unsigned)b; s++)
            map[s] = n;
    }
    memcpy(cl->map, map, NSLOTS * sizeof *map);
    free(map);
    for (n = cl->nodes; n != NULL; n = n->next)
        n->gc = 1;
    for (s = 0; s < NSLOTS; s++)
        if (cl->map[s] != NULL)
            cl->map[s]->gc = 0;
    event_active(cl->ev_gc, EV_TIMEOUT, 0);
    return 0;
bad:
    free(map);
    return -1;
}

static void refresh_reply(redq__conn *c, void *reply, void *arg)
{
    redq__cluster *cl = arg;
    redisReply *r = reply;
    cnode *from = cl->refresh_node;
    (void)c;
    if (cl->dying)
        return;
    cl->refreshing = 0;
    if (r != NULL && load_slots(cl, r, from) == 0) {
        cl->map_known = 1;
        cl->st.refreshes++;
        redq__log(cl->log, REDQ_LOG_DEBUG, 0,
                  "cluster: slot map from %s (%zu ranges)", from->name,
                  r->elements);
    } else {
        /* Ask another node next time. */
        redq__log(cl->log, REDQ_LOG_DEBUG, 0,
                  "cluster: CLUSTER SLOTS on %s: %s", from->name,
                  r == NULL                       ? "connection lost"
                  : r->type == REDIS_REPLY_ERROR ? r->str
                                                  : "unexpected reply");
        cl->refresh_again = 1;
    }
    if (cl->refresh_again) {
        cl->refresh_again = 0;
        refresh_maybe(cl);
    }
    pump_all(cl);
}

/* Ask a ready node: the first idle one after the one asked last (seeds
 * first on the first round), else the least busy. A node with commands in
 * flight answers CLUSTER SLOTS only after them, and one stuck on a blocked
 * command never does. With no node ready, connect them all and wait for
 * the first one up (node_up). */
static void start_refresh(redq__cluster *cl)
{
    cnode *n, *start, *best = NULL;
    if (cl->dying || cl->refreshing)
        return;
    event_del(cl->ev_refresh);
    cl->refresh_waiting = 0;
    start = cl->refresh_node != NULL && cl->refresh_node->next != NULL
                ? cl->refresh_node->next
                : cl->nodes;
    n = start;
    do {
        if (node_ready(n) && !n->gc &&
            (best == NULL || n->inflight < best->inflight))
            best = n;
        if (best != NULL && best->inflight == 0)
            break;
        n = n->next != NULL ? n->next : cl->nodes;
    } while (n != start);
    if (best != NULL) {
        const char *argv[] = {"CLUSTER", "SLOTS"};
        if (redq__conn_sendv(best->conn, 2, argv, NULL, 0, refresh_reply,
                             cl) == 0) {
            cl->refreshing = 1;
            cl->refresh_node = best;
            cl->refresh_at_us = redq__now_us();
            return;
        }
    }
    for (n = cl->nodes; n != NULL; n = n->next)
        if (!n->gc)
            (void)node_connect(n);
    cl->refresh_waiting = 1;
}

/* ---- requests ------------------------------------------------------------- */

static void set_held(creq *r)
{
    if (r->state == RQ_SENT) {
        r->node->inflight--;
        r->node = NULL;
        r->state = RQ_HELD;
        r->cl->nheld++;
    }
}

static void unlink_req(creq *r)
{
    redq__cluster *cl = r->cl;
    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        cl->qhead[r->slot] = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    else
        cl->qtail[r->slot] = r->prev;
    if (r->state == RQ_HELD)
        cl->nheld--;
    else
        r->node->inflight--;
    cl->nreq--;
}

/* The final answer: out of the queue, to the caller, freed. */
static void finish(creq *r, void *reply)
{
    redq__cluster *cl = r->cl;
    unlink_req(r);
    r->cb(cl, reply, r->arg);
    free(r->last_err);
    free(r);
}

/* Give up on a held request: its last redirect's error, or NULL. */
static void expire(creq *r)
{
    redisReply fake;
    r->cl->st.expired++;
    if (r->last_err == NULL) {
        finish(r, NULL);
        return;
    }
    memset(&fake, 0, sizeof fake);
    fake.type = REDIS_REPLY_ERROR;
    fake.str = r->last_err;
    fake.len = strlen(r->last_err);
    finish(r, &fake);
}

static void keep_err(creq *r, const redisReply *e)
{
    char *s = malloc((size_t)e->len + 1);
    if (s == NULL)
        return; /* an expiry then answers NULL: still exactly once */
    memcpy(s, e->str, (size_t)e->len);
    s[e->len] = '\0';
    free(r->last_err);
    r->last_err = s;
}

/* "MOVED 3999 127.0.0.1:6381": the slot and the node. */
static cnode *parse_redirect(redq__cluster *cl, const redisReply *e,
                             const cnode *from, unsigned *slot)
{
    const char *p = memchr(e->str, ' ', (size_t)e->len), *q;
    const char *end = e->str + e->len;
    unsigned s = 0;
    if (p == NULL)
        return NULL;
    for (q = ++p; q < end && *q >= '0' && *q <= '9'; q++)
        s = s * 10 + (unsigned)(*q - '0');
    if (q == p || q >= end || *q != ' ' || s >= NSLOTS)
        return NULL;
    *slot = s;
    q++;
    return node_from_addr(cl, q, (size_t)(end - q), from);
}

static void on_reply(redq__conn *c, void *reply, void *arg)
{
    creq *r = arg;
    redq__cluster *cl = r->cl;
    redisReply *e = reply;
    cnode *from = r->node, *to;
    unsigned slot = r->slot, s;
    int kind;
    (void)c;

    if (e == NULL) {
        /* Lost with its connection: outcome unknown, as redq__conn says.
         * Never resent: it may have run. */
        cl->st.lost++;
        finish(r, NULL);
        if (!cl->dying)
            pump(cl, slot);
        return;
    }
    kind = e->type == REDIS_REPLY_ERROR
               ? redq__err_cluster(e->str, (size_t)e->len)
               : REDQ__REDIR_NONE;
    if (kind == REDQ__REDIR_NONE || cl->dying ||
        r->redirects >= MAX_REDIRECTS) {
        finish(r, e);
        if (!cl->dying)
            pump(cl, slot);
        return;
    }
    set_held(r);
    r->redirects++;
    keep_err(r, e);
    switch (kind) {
    case REDQ__REDIR_MOVED:
        cl->st.moved++;
        to = parse_redirect(cl, e, from, &s);
        if (to == NULL) {
            finish(r, e);
            break;
        }
        cl->map[s] = to; /* now, before the refresh: the resend uses it */
        r->ask = NULL;
        refresh_maybe(cl);
        break;
    case REDQ__REDIR_ASK:
        cl->st.ask++;
        to = parse_redirect(cl, e, from, &s);
        if (to == NULL) {
            finish(r, e);
            break;
        }
        r->ask = to;
        break;
    default: { /* TRYAGAIN, CLUSTERDOWN */
        uint64_t now = redq__now_us();
        uint64_t d = (uint64_t)BACKOFF_MIN_MS << (r->backoffs < 5 ? r->backoffs : 5);
        if (d > BACKOFF_MAX_MS)
            d = BACKOFF_MAX_MS;
        if (kind == REDQ__REDIR_TRYAGAIN)
            cl->st.tryagain++;
        else {
            cl->st.clusterdown++;
            refresh_maybe(cl);
        }
        if (now + d * 1000u >= r->deadline_us) {
            finish(r, e);
            break;
        }
        r->backoffs++;
        r->not_before_us = now + d * 1000u;
        r->ask = NULL;
        break;
    }
    }
    pump(cl, slot);
    if (cl->nheld > 0)
        tick_arm(cl);
}

/* Send one held request to `to`: 0 when it is in flight. After an ASK,
 * ASKING goes first on the same connection. A script not yet loaded there
 * gets its SCRIPT LOAD between the two (redq__conn_send_script), which
 * uses up the ASKING: the importing node then answers MOVED back to the
 * old owner, which answers ASK again, and the second time the script is
 * loaded. One extra round trip, once per script and node, within
 * MAX_REDIRECTS. */
static int send_to(creq *r, cnode *to)
{
    redq__cluster *cl = r->cl;
    int rc;
    if (r->ask == to) {
        if (redq__conn_send(to->conn, "*1\r\n$6\r\nASKING\r\n", 16, 0,
                            noop_reply, NULL) != 0)
            return -1;
    }
    if (r->script >= 0)
        rc = redq__conn_send_script(to->conn, r->script, r->cmd, r->len,
                                    r->extra_timeout_ms, on_reply, r);
    else
        rc = redq__conn_send(to->conn, r->cmd, r->len, r->extra_timeout_ms,
                             on_reply, r);
    if (rc != 0)
        return -1;
    if (r->redirects > 0)
        cl->st.resent++;
    r->ask = NULL; /* ASK is for one command, once */
    r->state = RQ_SENT;
    r->node = to;
    to->inflight++;
    cl->nheld--;
    return 0;
}

/*
 * Send what can go of `slot`'s queue, in order: a held request goes only
 * when every request ahead of it is in flight on the node it goes to (its
 * ASK target, else the slot's owner) and its backoff is over. Everything
 * behind a request that must wait waits too.
 */
static void pump(redq__cluster *cl, unsigned slot)
{
    creq *r, *next;
    cnode *cur = NULL;
    int mixed = 0;
    uint64_t now = 0;
    for (r = cl->qhead[slot]; r != NULL; r = next) {
        cnode *to;
        next = r->next;
        if (r->state == RQ_SENT) {
            if (cur != NULL && cur != r->node)
                mixed = 1;
            cur = r->node;
            continue;
        }
        if (r->not_before_us != 0) {
            if (now == 0)
                now = redq__now_us();
            if (r->not_before_us > now)
                break;
        }
        to = r->ask != NULL ? r->ask : cl->map[slot];
        if (to == NULL) {
            cl->starved = 1;
            refresh_maybe(cl);
            break;
        }
        if (mixed || (cur != NULL && cur != to))
            break;
        if (!node_ready(to)) {
            cl->starved = 1;
            if (node_connect(to) != 0)
                break;
            break;
        }
        if (send_to(r, to) != 0)
            break;
        cur = to;
    }
}

/* Every TICK_MS while something waits: expire what is past its deadline,
 * resend what has served its backoff, ask for a map when starved. */
static void tick_cb(evutil_socket_t fd, short what, void *arg)
{
    redq__cluster *cl = arg;
    uint64_t now = redq__now_us();
    unsigned s;
    (void)fd;
    (void)what;
    cl->tick_armed = 0;
    for (s = 0; s < NSLOTS && cl->nheld > 0; s++) {
        creq *r, *next;
        for (r = cl->qhead[s]; r != NULL; r = next) {
            next = r->next;
            if (r->state == RQ_HELD && r->deadline_us <= now)
                expire(r);
        }
    }
    if (cl->starved &&
        now - cl->refresh_at_us >= (uint64_t)REFRESH_STARVED_MS * 1000u)
        refresh_maybe(cl);
    pump_all(cl);
    if (cl->nheld > 0)
        tick_arm(cl);
}

static void tick_arm(redq__cluster *cl)
{
    struct timeval tv = tv_ms(TICK_MS);
    if (cl->tick_armed || cl->dying)
        return;
    cl->tick_armed = 1;
    event_add(cl->ev_tick, &tv);
}

/* ---- the interface -------------------------------------------------------- */

int redq__cluster_new(redq__cluster **out, struct event_base *base,
                      const redq__conn_config *cfg)
{
    const redq__url *u = cfg->url;
    redq__cluster *cl;
    size_t i;
    if (u == NULL || !u->is_cluster || u->nnodes == 0)
        return REDQ_EINVAL;
    cl = calloc(1, sizeof *cl);
    if (cl == NULL)
        return REDQ_ENOMEM;
    cl->base = base;
    cl->user = dup_or_null(u->user);
    cl->password =
        dup_or_null(cfg->password != NULL ? cfg->password : u->password);
    if (cfg->client_name != NULL && cfg->client_name[0] != '\0')
        cl->client_name = dup_or_null(cfg->client_name);
    cl->connect_timeout_ms = cfg->connect_timeout_ms;
    cl->command_timeout_ms = cfg->command_timeout_ms;
    cl->reconnect_min_ms = cfg->reconnect_min_ms;
    cl->reconnect_max_ms = cfg->reconnect_max_ms;
    cl->want_version = cfg->want_version;
    cl->log = cfg->log;
    cl->ev_refresh = event_new(base, -1, 0, refresh_timer_cb, cl);
    cl->ev_tick = event_new(base, -1, 0, tick_cb, cl);
    cl->ev_gc = event_new(base, -1, 0, gc_cb, cl);
    if ((u->user && !cl->user) || (cfg->password && !cl->password) ||
        (u->password && !cl->password) ||
        (cl->client_name == NULL && cfg->client_name != NULL &&
         cfg->client_name[0] != '\0') ||
        !cl->ev_refresh || !cl->ev_tick || !cl->ev_gc)
        goto nomem;
    for (i = 0; i < u->nnodes; i++) {
        cnode *n = node_get(cl, u->nodes[i].host, strlen(u->nodes[i].host),
                            u->nodes[i].port);
        if (n == NULL)
            goto nomem;
        n->seed = 1;
    }
    *out = cl;
    return 0;
nomem:
    redq__cluster_free(cl);
    return REDQ_ENOMEM;
}

void redq__cluster_start(redq__cluster *cl)
{
    /* From the loop: the seeds' connections start there, and the first
     * one up asks for the map. */
    refresh_maybe(cl);
}

int redq__cluster_ready(const redq__cluster *cl)
{
    return cl->map_known;
}

int redq__cluster_send(redq__cluster *cl, unsigned slot, const char *cmd,
                       size_t len, int script, int extra_timeout_ms,
                       redq__cluster_reply_cb cb, void *arg)
{
    creq *r;
    if (slot >= NSLOTS || cmd == NULL || len == 0 || cb == NULL ||
        (script >= 0 && redq__script_source(script) == NULL) || script < -1)
        return REDQ_EINVAL;
    if (cl->dying)
        return REDQ_ECLOSED;
    r = malloc(sizeof *r + len);
    if (r == NULL)
        return REDQ_ENOMEM;
    memset(r, 0, sizeof *r);
    r->cl = cl;
    r->slot = slot;
    r->state = RQ_HELD;
    r->script = script;
    r->extra_timeout_ms = extra_timeout_ms;
    r->deadline_us = redq__now_us() +
                     ((uint64_t)(unsigned)cl->command_timeout_ms +
                      (uint64_t)(unsigned)extra_timeout_ms) * 1000u;
    r->cb = cb;
    r->arg = arg;
    r->len = len;
    memcpy(r->cmd, cmd, len);
    r->prev = cl->qtail[slot];
    if (r->prev != NULL)
        r->prev->next = r;
    else
        cl->qhead[slot] = r;
    cl->qtail[slot] = r;
    cl->nheld++;
    cl->nreq++;
    cl->st.sent++;
    pump(cl, slot);
    if (r->state == RQ_HELD) { /* pump calls no callback: r is alive */
        cl->st.held++;
        tick_arm(cl); /* the deadline, the backoff, or the owner to come */
    }
    return 0;
}

int redq__cluster_redirected(redq__cluster *cl, const void *reply)
{
    const redisReply *e = reply;
    int kind;
    unsigned s;
    cnode *to;
    if (e == NULL || e->type != REDIS_REPLY_ERROR)
        return REDQ__REDIR_NONE;
    kind = redq__err_cluster(e->str, (size_t)e->len);
    if (kind == REDQ__REDIR_MOVED) {
        to = parse_redirect(cl, e, NULL, &s);
        if (to != NULL)
            cl->map[s] = to;
    }
    if (kind != REDQ__REDIR_NONE && kind != REDQ__REDIR_ASK)
        refresh_maybe(cl);
    return kind;
}

void redq__cluster_refresh(redq__cluster *cl)
{
    refresh_maybe(cl);
}

int redq__cluster_slot_owner(const redq__cluster *cl, unsigned slot,
                             char *buf, size_t len)
{
    const cnode *n = slot < NSLOTS ? cl->map[slot] : NULL;
    if (n == NULL)
        return REDQ_ECONNECT;
    snprintf(buf, len, "%s", n->name);
    return 0;
}

void redq__cluster_get_stats(const redq__cluster *cl, redq__cluster_stats *st)
{
    *st = cl->st;
    st->waiting = cl->nreq;
}

void redq__cluster_free(redq__cluster *cl)
{
    unsigned s;
    cnode *n;
    if (cl == NULL)
        return;
    cl->dying = 1;
    /* Held requests first (never sent), then the connections: their
     * callbacks run with NULL as each one is freed. */
    for (s = 0; s < NSLOTS; s++) {
        creq *r, *next;
        for (r = cl->qhead[s]; r != NULL; r = next) {
            next = r->next;
            if (r->state == RQ_HELD)
                finish(r, NULL);
        }
    }
    while ((n = cl->nodes) != NULL) {
        cl->nodes = n->next;
        redq__conn_free(n->conn);
        free(n->host);
        free(n);
    }
    if (cl->ev_refresh != NULL)
        event_free(cl->ev_refresh);
    if (cl->ev_tick != NULL)
        event_free(cl->ev_tick);
    if (cl->ev_gc != NULL)
        event_free(cl->ev_gc);
    free(cl->user);
    if (cl->password != NULL) {
        memset(cl->password, 0, strlen(cl->password));
        free(cl->password);
    }
    free(cl->client_name);
    free(cl);
}

/* ---- pinned connections --------------------------------------------------- */

/* redq__conn_config.target: the slot's master as the map says now. */
static int pin_target(redq__conn *c, char *host, size_t hostlen, int *port,
                      void *arg)
{
    redq__cluster_pin *p = arg;
    const cnode *n = p->cl->map[p->slot];
    (void)c;
    if (n == NULL) {
        refresh_maybe(p->cl);
        return REDQ_ECONNECT;
    }
    if (strlen(n->host) >= hostlen)
        return REDQ_EINVAL;
    memcpy(host, n->host, strlen(n->host) + 1);
    *port = n->port;
    return 0;
}

/* redq__conn_config.redirect: a MOVED on the pinned connection teaches
 * the map the slot's new master; the connection then follows it. ASK,
 * TRYAGAIN and CLUSTERDOWN leave it where it is (the owner resends). */
static int pin_redirect(redq__conn *c, const void *reply, void *arg)
{
    redq__cluster_pin *p = arg;
    (void)c;
    return redq__cluster_redirected(p->cl, reply) == REDQ__REDIR_MOVED;
}

static void pin_up(redq__conn *c, void *arg)
{
    redq__cluster_pin *p = arg;
    if (p->up != NULL)
        p->up(c, p->arg);
}

/* Down, or an attempt failed: its master may be gone, so the next attempt
 * should find the new one in a fresh map. */
static void pin_down(redq__conn *c, int code, const char *msg, void *arg)
{
    redq__cluster_pin *p = arg;
    refresh_maybe(p->cl);
    if (p->down != NULL)
        p->down(c, code, msg, p->arg);
}

static void pin_fail(redq__conn *c, int code, const char *msg, void *arg)
{
    redq__cluster_pin *p = arg;
    (void)c;
    (void)code;
    (void)msg;
    refresh_maybe(p->cl);
}

int redq__cluster_pin_new(redq__cluster_pin **out, redq__cluster *cl,
                          unsigned slot, const redq__conn_config *cfg,
                          redq__conn_up_cb up, redq__conn_down_cb down,
                          void *arg)
{
    redq__cluster_pin *p;
    redq__conn_config c;
    redq__url u;
    int rc;
    if (slot >= NSLOTS || cl->nodes == NULL)
        return REDQ_EINVAL;
    p = calloc(1, sizeof *p);
    if (p == NULL)
        return REDQ_ENOMEM;
    p->cl = cl;
    p->slot = slot;
    p->up = up;
    p->down = down;
    p->arg = arg;
    /* The first seed stands in until the first attempt asks pin_target. */
    memset(&u, 0, sizeof u);
    u.host = cl->nodes->host;
    u.port = cl->nodes->port;
    u.user = cl->user;
    u.password = cl->password;
    c = *cfg;
    c.url = &u;
    c.password = NULL;
    c.target = pin_target;
    c.target_arg = p;
    c.on_fail = pin_fail;
    c.redirect = pin_redirect;
    rc = redq__conn_new(&p->conn, cl->base, &c, pin_up, pin_down, p);
    if (rc != 0) {
        free(p);
        return rc;
    }
    p->next = cl->pins;
    cl->pins = p;
    *out = p;
    return 0;
}

redq__conn *redq__cluster_pin_conn(const redq__cluster_pin *p)
{
    return p->conn;
}

void redq__cluster_pin_free(redq__cluster_pin *p)
{
    redq__cluster_pin **pp;
    if (p == NULL)
        return;
    for (pp = &p->cl->pins; *pp != NULL; pp = &(*pp)->next)
        if (*pp == p) {
            *pp = p->next;
            break;
        }
    redq__conn_free(p->conn);
    free(p);
}

