/*
 * The consumer on a Redis Cluster (redis+cluster:// URLs): an outer handle
 * over inner ordinary consumers, one per physical queue, which is every
 * partition of every logical queue it was given (docs/DESIGN.md,
 * "Partitioned queues", "Consumers and admin on a cluster").
 *
 *   outer (this file)        router (lib/cluster.c): HMGET meta partitions
 *     |                      ptags every few seconds, ZADD of the registry
 *     +-- inner Q            } each an ordinary consumer of one physical
 *     +-- inner {T1}Q~1      } queue, every connection (pool and control)
 *     +-- inner {T2}Q~2      } pinned to that queue's slot
 *
 * Every key of one physical queue is in one slot, so an inner consumer
 * behaves on a cluster exactly as on one server, provided that a MOVED on
 * a pinned connection makes it follow the slot (lib/consumer.c,
 * redq__consumer_redirected) and that it sends nothing to another slot
 * (inners never touch the registry: the outer registers the logical name
 * through the router).
 *
 * The outer forwards: messages reach on_message with the outer's pointer
 * and the logical queue's name (redq_msg_partition() says which), ack and
 * friends work on the message as on any consumer (its inner owns it).
 * Stop, close, add/remove queue and stats apply to all inners. Partitions
 * made later (redq_admin_set_partitions) are found by the periodic meta
 * read and get inners of their own; retired ones are kept (drained)
 * forever, since producers that have not yet seen the change may still
 * push to them.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "consumer_int.h"

/* How often each logical queue's meta is read for new partitions. */
#define PART_POLL_MS 2000
/* The registry ZADD of each logical name, at most this often. */
#define REG_EVERY_US (60u * 1000000u)
/* The most partitions of a queue (redq_admin_set_partitions' limit). */
#define MAX_PARTS REDQ__MAX_PARTITIONS

typedef struct pinner {
    redq_consumer *c; /* NULL: not made yet, or closed */
    int stopping;     /* its stop was asked (outer stop or removal) */
    int closing;      /* its close was asked */
} pinner;

/* A logical queue and its partitions, by index. */
typedef struct plq {
    char *name;
    size_t len;
    char *meta;
    pinner parts[MAX_PARTS];
    size_t nparts;         /* indexes made so far: 0 .. nparts-1 */
    int known;             /* its meta was read once (inners may exist) */
    int asking;            /* an HMGET is in flight */
    int removing;
    redq_remove_cb remove_cb;
    void *remove_user;
    size_t remove_left;    /* inners not yet closed */
    uint64_t reg_at_us;    /* last registry ZADD; 0 never */
} plq;

typedef struct redq__pcons {
    redq_consumer *outer;
    struct event_base *base;
    redq__logger log;
    redq__options opts;    /* the caller's, strings owned below */
    char *url_s, *password, *client_name;
    redq__url url;
    redq__cluster *cl;
    plq **q;
    size_t nq;
    struct event *t_poll, *ev_defer;
    int stopping, stop_done, stop_status;
    size_t stop_left;
    redq_stop_cb stop_cb;
    void *stop_user;
    int closing;
    size_t close_left;
    redq_close_cb close_cb;
    void *close_user;
    redq_consumer_stats gone; /* counters of inners already released */
} pcons;

static void poll_all(pcons *p);

/* ---- inners ------------------------------------------------------------- */

/* Inners known (made or to be made): the pool and the window are divided
 * over them. */
static size_t ninners(const pcons *p)
{
    size_t i, n = 0;
    for (i = 0; i < p->nq; i++)
        n += p->q[i]->nparts > 0 ? p->q[i]->nparts : 1;
    return n;
}

/* Make the inner consumer of partition `idx` of `l`, physical queue
 * `phys`, with its share of the pool and of the window. */
static void inner_make(pcons *p, plq *l, size_t idx, const char *phys)
{
    redq__options o = p->opts;
    redq__inner_cfg in;
    size_t n = ninners(p), share;
    int rc;

    share = o.pool_size / n;
    o.pool_size = share > 0 ? share : 1;
    share = o.max_unacked / n;
    o.max_unacked = share > 0 ? share : 1;
    if (o.pop_batch > o.max_unacked)
        o.pop_batch = o.max_unacked;
    o.on_stats = NULL; /* the outer's counters are the sum */
    o.errbuf = NULL;
    o.errbuf_size = 0;
    memset(&in, 0, sizeof in);
    in.outer = p->outer;
    in.lname = l->name;
    in.part = (int)idx;
    in.cl = p->cl;
    in.slot = redq__key_slot(phys, strlen(phys));
    in.id = p->outer->id;
    rc = redq__consumer_create(&l->parts[idx].c, p->base, &o, &p->url,
                               &p->log, phys, &in);
    if (rc != 0) {
        l->parts[idx].c = NULL;
        redq__log(&p->log, REDQ_LOG_ERROR, rc,
                  "queue %.200s: partition %zu (%.200s) not consumed: %s",
                  l->name, idx, phys, redq_strerror(rc));
        return;
    }
    redq__log(&p->log, REDQ_LOG_INFO, 0,
              "queue %.200s: consuming partition %zu (%.200s, slot %u)",
              l->name, idx, phys, in.slot);
}

static void add_stats(redq_consumer_stats *t, const redq_consumer_stats *s)
{
    t->pops += s->pops;
    t->empty_pops += s->empty_pops;
    t->delivered += s->delivered;
    t->acked += s->acked;
    t->nacked += s->nacked;
    t->unacked += s->unacked;
    t->errors += s->errors;
    t->connects += s->connects;
    t->disconnects += s->disconnects;
    t->connected += s->connected;
    t->retried += s->retried;
    t->dead_lettered += s->dead_lettered;
    t->expired += s->expired;
    t->recovered += s->recovered;
    t->promoted += s->promoted;
    t->returned += s->returned;
    t->rejected += s->rejected;
}

/* ---- discovery ---------------------------------------------------------- */

typedef struct qref {
    pcons *p;
    plq *l;
} qref;

static void ignore(redq__cluster *cl, void *reply, void *arg)
{
    (void)cl;
    (void)reply;
    (void)arg;
}

/* Send argv through the router by the slot of `key`. */
static int route(pcons *p, const char *key, int argc, const char **argv,
                 redq__cluster_reply_cb cb, void *arg)
{
    char *cmd = NULL;
    long long n = redisFormatCommandArgv(&cmd, argc, argv, NULL);
    int rc;
    if (n < 0)
        return REDQ_ENOMEM;
    rc = redq__cluster_send(p->cl, redq__key_slot(key, strlen(key)), cmd,
                            (size_t)n, -1, 0, cb, arg);
    redisFreeCommand(cmd);
    return rc;
}

/* `HMGET meta partitions ptags`: make the inners of partitions not seen
 * yet (0 always, even when the read fails: a queue whose meta cannot be
 * read is consumed as the one list it then is). */
static void on_meta(redq__cluster *cl, void *reply, void *arg)
{
    qref *ref = arg;
    pcons *p = ref->p;
    plq *l = ref->l;
    redisReply *r = reply;
    redq__parts pt;
    unsigned i;
    (void)cl;
    free(ref);
    l->asking = 0;
    if (p->closing || p->stopping || l->removing)
        return;
    redq__parts_init(&pt);
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2) {
        if (redq__parts_from_reply(&pt, r->element[0], r->element[1]) != 0)
            redq__log(&p->log, REDQ_LOG_WARN, REDQ_EPROTOCOL,
                      "queue %.200s: its partition fields are damaged; "
                      "consuming the %u partitions they still name",
                      l->name, pt.total);
    } else {
        redq__log(&p->log, l->known ? REDQ_LOG_DEBUG : REDQ_LOG_WARN, 0,
                  "queue %.200s: reading its partitions: %.200s", l->name,
                  r != NULL && r->type == REDIS_REPLY_ERROR ? r->str
                                                            : "no reply");
        if (l->known)
            return; /* asked again at the next tick */
    }
    /* Every partition ever made, retired ones too (drained forever); the
     * pool is divided over all of them, so count them first. */
    if (pt.total > l->nparts)
        l->nparts = pt.total;
    l->known = 1;
    for (i = 0; i < pt.total; i++) {
        char *phys;
        if (l->parts[i].c != NULL || l->parts[i].closing)
            continue;
        phys = redq__partition_name(l->name, l->len, pt.tag[i], i);
        if (phys != NULL)
            inner_make(p, l, i, phys);
        free(phys);
    }
}

static void poll_queue(pcons *p, plq *l)
{
    const char *argv[] = {"HMGET", l->meta, REDQ__META_PARTITIONS,
                          REDQ__META_PTAGS};
    uint64_t now = redq__now_us();
    qref *ref;
    if (l->removing || l->asking)
        return;
    ref = malloc(sizeof *ref);
    if (ref == NULL)
        return;
    ref->p = p;
    ref->l = l;
    if (route(p, l->meta, 4, argv, on_meta, ref) != 0) {
        free(ref);
        return;
    }
    l->asking = 1;
    /* The registry lists the logical name (never a partition's). */
    if (l->reg_at_us == 0 || now - l->reg_at_us >= REG_EVERY_US) {
        char ms[24];
        const char *z[] = {"ZADD", REDQ__REGISTRY_KEY, ms, l->name};
        snprintf(ms, sizeof ms, "%lld", redq__wall_ms());
        if (route(p, REDQ__REGISTRY_KEY, 4, z, ignore, NULL) == 0)
            l->reg_at_us = now;
    }
}

static void poll_all(pcons *p)
{
    size_t i;
    struct timeval tv = {PART_POLL_MS / 1000, (PART_POLL_MS % 1000) * 1000};
    if (p->closing || p->stopping)
        return;
    for (i = 0; i < p->nq; i++)
        poll_queue(p, p->q[i]);
    event_add(p->t_poll, &tv);
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    poll_all(arg);
}

/* ---- queues ------------------------------------------------------------- */

static void plq_free(plq *l)
{
    if (l == NULL)
        return;
    free(l->name);
    free(l->meta);
    free(l);
}

static int plq_add(pcons *p, const char *queue)
{
    plq *l = calloc(1, sizeof *l), **v;
    if (l == NULL)
        return REDQ_ENOMEM;
    l->len = strlen(queue);
    l->name = malloc(l->len + 1);
    l->meta = redq__key(queue, l->len, "meta");
    v = realloc(p->q, (p->nq + 1) * sizeof *v);
    if (l->name == NULL || l->meta == NULL || v == NULL) {
        if (v != NULL)
            p->q = v;
        plq_free(l);
        return REDQ_ENOMEM;
    }
    memcpy(l->name, queue, l->len + 1);
    p->q = v;
    p->q[p->nq++] = l;
    return 0;
}

static plq *plq_find(const pcons *p, const char *queue, size_t *at)
{
    size_t i, n = strlen(queue);
    for (i = 0; i < p->nq; i++)
        if (p->q[i]->len == n && memcmp(p->q[i]->name, queue, n) == 0) {
            if (at != NULL)
                *at = i;
            return p->q[i];
        }
    return NULL;
}

/* ---- the outer handle --------------------------------------------------- */

static void pcons_free(pcons *p)
{
    size_t i;
    if (p->t_poll != NULL)
        event_free(p->t_poll);
    if (p->ev_defer != NULL)
        event_free(p->ev_defer);
    redq__cluster_free(p->cl);
    for (i = 0; i < p->nq; i++)
        plq_free(p->q[i]);
    free(p->q);
    redq__url_free(&p->url);
    free(p->url_s);
    free(p->password);
    free(p->client_name);
    free(p->outer);
    free(p);
}

static char *dup_or_null(const char *s)
{
    char *d;
    if (s == NULL)
        return NULL;
    d = malloc(strlen(s) + 1);
    if (d != NULL)
        strcpy(d, s);
    return d;
}

/* Deferred: a stop or close with nothing (left) to wait for. */
static void defer_cb(evutil_socket_t fd, short what, void *arg);

static void kick_defer(pcons *p)
{
    event_active(p->ev_defer, EV_TIMEOUT, 0);
}

int redq__pconsumer_new(redq_consumer **out, struct event_base *base,
                        const redq__options *opts, const redq__url *url,
                        const redq__logger *lg, const char *const *queues,
                        size_t nqueues)
{
    pcons *p = calloc(1, sizeof *p);
    redq__conn_config cfg;
    char err[256];
    size_t i;
    int rc = REDQ_ENOMEM;
    (void)url;

    if (p == NULL)
        return REDQ_ENOMEM;
    p->base = base;
    p->log = *lg;
    p->opts = *opts;
    p->outer = calloc(1, sizeof *p->outer);
    p->url_s = dup_or_null(opts->url);
    p->password = dup_or_null(opts->password);
    p->client_name = dup_or_null(opts->client_name);
    if (p->outer == NULL || p->url_s == NULL ||
        (opts->password != NULL && p->password == NULL) ||
        (opts->client_name != NULL && p->client_name == NULL))
        goto fail;
    p->opts.url = p->url_s;
    p->opts.password = p->password;
    p->opts.client_name = p->client_name;
    p->outer->pc = p;
    p->outer->base = base;
    p->outer->log = p->log;
    redq__instance_id(p->outer->id, (uintptr_t)p);
    /* A URL of its own: inners are made later, from the loop. */
    if ((rc = redq__url_parse(&p->url, p->url_s, err, sizeof err)) != 0)
        goto fail;
    rc = REDQ_ENOMEM;
    redq__conn_config_init(&cfg, &p->opts, &p->url, &p->log);
    cfg.load_scripts = 0;
    if (redq__cluster_new(&p->cl, base, &cfg) != 0)
        goto fail;
    p->t_poll = event_new(base, -1, 0, poll_cb, p);
    p->ev_defer = event_new(base, -1, 0, defer_cb, p);
    if (p->t_poll == NULL || p->ev_defer == NULL)
        goto fail;
    for (i = 0; i < nqueues; i++)
        if (plq_find(p, queues[i], NULL) == NULL &&
            plq_add(p, queues[i]) != 0)
            goto fail;
    redq__cluster_start(p->cl);
    /* The first meta read makes the inners (the pool divided over every
     * partition known then); it waits for the slot map inside the router. */
    {
        struct timeval now = {0, 0};
        event_add(p->t_poll, &now);
    }
    *out = p->outer;
    return 0;

fail:
    pcons_free(p);
    return rc;
}

/* ---- stop, close -------------------------------------------------------- */

static void stop_finish(pcons *p)
{
    redq_stop_cb cb = p->stop_cb;
    if (p->stop_done || p->stop_left > 0)
        return;
    p->stop_done = 1;
    cb(p->outer, p->stop_status, p->stop_user);
}

static void inner_stopped(redq_consumer *c, int status, void *user)
{
    pcons *p = user;
    (void)c;
    if (status != 0 && p->stop_status == 0)
        p->stop_status = status;
    if (p->stop_left > 0)
        p->stop_left--;
    stop_finish(p);
}

int redq__pc_stop(redq_consumer *c, int timeout_ms, redq_stop_cb cb,
                  void *user)
{
    pcons *p = c->pc;
    size_t i, k;
    if (p->stopping || p->closing)
        return REDQ_ECLOSED;
    p->stopping = 1;
    p->stop_cb = cb;
    p->stop_user = user;
    event_del(p->t_poll); /* no inners made from now on */
    for (i = 0; i < p->nq; i++) {
        plq *l = p->q[i];
        if (l->removing)
            continue; /* its inners are stopping already */
        for (k = 0; k < l->nparts; k++) {
            pinner *pi = &l->parts[k];
            if (pi->c == NULL || pi->stopping)
                continue;
            if (redq_consumer_stop(pi->c, timeout_ms, inner_stopped, p) == 0) {
                pi->stopping = 1;
                p->stop_left++;
            }
        }
    }
    if (p->stop_left == 0)
        kick_defer(p); /* the callback from the loop, never from here */
    return 0;
}

static void close_finish(pcons *p)
{
    redq_close_cb cb = p->close_cb;
    void *user = p->close_user;
    size_t i;
    if (p->close_left > 0)
        return;
    /* Removals under way end with the close. */
    for (i = 0; i < p->nq; i++)
        if (p->q[i]->removing) {
            p->q[i]->removing = 0;
            p->q[i]->remove_cb(p->outer, REDQ_ECLOSED, p->q[i]->remove_user);
        }
    /* A stop still waiting ends here, as one consumer's would. */
    if (p->stopping && !p->stop_done) {
        p->stop_done = 1;
        p->stop_cb(p->outer, REDQ_ECLOSED, p->stop_user);
    }
    pcons_free(p);
    if (cb != NULL)
        cb(user);
}

/* An inner was released: its counters stay in the outer's sums; a queue
 * being removed may be done. */
typedef struct cref {
    pcons *p;
    plq *l;
    size_t idx;
} cref;

static void inner_closed(void *user)
{
    cref *r = user;
    pcons *p = r->p;
    plq *l = r->l;
    free(r);
    if (l != NULL && l->removing && l->remove_left > 0 &&
        --l->remove_left == 0 && !p->closing) {
        size_t at;
        redq_remove_cb cb = l->remove_cb;
        void *ruser = l->remove_user;
        if (plq_find(p, l->name, &at) == l) {
            p->q[at] = p->q[--p->nq];
            plq_free(l);
        }
        cb(p->outer, 0, ruser);
    }
    if (p->closing && p->close_left > 0 && --p->close_left == 0)
        kick_defer(p); /* free from our own event, not the inner's */
}

/* Close inner k of l; counted in close_left when the outer is closing. */
static void inner_close(pcons *p, plq *l, size_t k)
{
    pinner *pi = &l->parts[k];
    redq_consumer_stats st;
    cref *r;
    if (pi->c == NULL || pi->closing)
        return;
    r = malloc(sizeof *r);
    if (r == NULL)
        return; /* (leaks the inner rather than crash) */
    r->p = p;
    r->l = l;
    r->idx = k;
    redq__consumer_stats_fill(pi->c, &st);
    st.unacked = 0;
    st.connected = 0;
    add_stats(&p->gone, &st);
    if (redq_consumer_close(pi->c, inner_closed, r) != 0) {
        free(r);
        return;
    }
    pi->closing = 1;
    pi->c = NULL; /* released by the close: never touched again */
    if (p->closing)
        p->close_left++;
    else if (l->removing)
        l->remove_left++;
}

int redq__pc_close(redq_consumer *c, redq_close_cb cb, void *user)
{
    pcons *p = c->pc;
    size_t i, k;
    if (p->closing)
        return REDQ_ECLOSED;
    p->closing = 1;
    p->close_cb = cb;
    p->close_user = user;
    event_del(p->t_poll);
    for (i = 0; i < p->nq; i++) {
        plq *l = p->q[i];
        for (k = 0; k < l->nparts; k++)
            inner_close(p, l, k);
    }
    kick_defer(p);
    return 0;
}

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
    pcons *p = arg;
    (void)fd;
    (void)what;
    size_t i;
    if (p->closing) {
        close_finish(p);
        return;
    }
    for (i = 0; i < p->nq; i++) {
        plq *l = p->q[i];
        if (l->removing && l->remove_left == 0) {
            redq_remove_cb cb = l->remove_cb;
            void *ruser = l->remove_user;
            p->q[i--] = p->q[--p->nq];
            plq_free(l);
            cb(p->outer, 0, ruser);
        }
    }
    if (p->stopping)
        stop_finish(p);
}

/* ---- queues of a running consumer --------------------------------------- */

int redq__pc_add_queue(redq_consumer *c, const char *queue)
{
    pcons *p = c->pc;
    size_t n;
    if (queue == NULL || (n = strlen(queue)) == 0 ||
        n > REDQ__MAX_QUEUE_NAME || redq__key_reserved(queue, n))
        return REDQ_EINVAL;
    if (p->stopping || p->closing)
        return REDQ_ECLOSED;
    if (plq_find(p, queue, NULL) != NULL)
        return REDQ_EEXIST;
    if (plq_add(p, queue) != 0)
        return REDQ_ENOMEM;
    poll_queue(p, p->q[p->nq - 1]); /* its inners come with the reply */
    return 0;
}

/* A removed queue's inner stopped (its messages finished or given back):
 * release it. */
static void removed_stopped(redq_consumer *ic, int status, void *user)
{
    cref *r = user;
    pcons *p = r->p;
    plq *l = r->l;
    size_t k = r->idx;
    (void)ic;
    (void)status;
    free(r);
    if (p->closing)
        return; /* the close releases it */
    if (l->remove_left > 0)
        l->remove_left--; /* counted again by inner_close */
    inner_close(p, l, k);
    if (l->remove_left == 0)
        kick_defer(p); /* nothing left to close: done from the loop */
}

int redq__pc_remove_queue(redq_consumer *c, const char *queue,
                          redq_remove_cb cb, void *user)
{
    pcons *p = c->pc;
    plq *l;
    size_t i, k, active = 0;
    if (p->stopping || p->closing)
        return REDQ_ECLOSED;
    l = plq_find(p, queue, NULL);
    if (l == NULL || l->removing)
        return REDQ_ENOQUEUE;
    for (i = 0; i < p->nq; i++)
        active += !p->q[i]->removing;
    if (active == 1)
        return REDQ_EINVAL; /* as for one consumer: keep one queue */
    l->removing = 1;
    l->remove_cb = cb;
    l->remove_user = user;
    /* Each inner stops (what it delivered is awaited, what it holds goes
     * back), then is closed; the callback comes when all are. */
    for (k = 0; k < l->nparts; k++) {
        pinner *pi = &l->parts[k];
        cref *r;
        if (pi->c == NULL)
            continue;
        r = malloc(sizeof *r);
        if (r == NULL)
            continue;
        r->p = p;
        r->l = l;
        r->idx = k;
        if (redq_consumer_stop(pi->c, -1, removed_stopped, r) != 0) {
            free(r);
            continue;
        }
        pi->stopping = 1;
        l->remove_left++;
    }
    if (l->remove_left == 0)
        kick_defer(p); /* no inner yet: done from the loop */
    return 0;
}

void redq__pc_stats(const redq_consumer *c, redq_consumer_stats *st)
{
    const pcons *p = c->pc;
    size_t i, k;
    *st = p->gone;
    for (i = 0; i < p->nq; i++)
        for (k = 0; k < p->q[i]->nparts; k++) {
            redq_consumer_stats s;
            if (p->q[i]->parts[k].c == NULL)
                continue;
            redq__consumer_stats_fill(p->q[i]->parts[k].c, &s);
            add_stats(st, &s);
        }
}
