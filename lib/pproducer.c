/*
 * The producer on a cluster and on partitioned queues (docs/DESIGN.md,
 * "Partitioned queues"): composition over pinned connections.
 *
 * The public redq_producer is the outer face: it keeps the window
 * (max_pending_* bound the sum over everything), the counters, the id and
 * the callbacks. Behind it, one router (lib/cluster.c) for discovery and
 * the registry, and one inner ordinary producer per partition in use, each
 * on a connection pinned to its partition's slot: an inner behaves exactly
 * as a producer on one server (batching, order, resends, "not applied"
 * after MOVED/ASK/TRYAGAIN/CLUSTERDOWN), and sends nothing outside its
 * slot. Inner reports come back here and go to the caller with the outer
 * pointer and the logical queue's name.
 *
 * Discovery: `HMGET <Q's meta> partitions ptags format` through the router
 * at a queue's first use and every DISCOVER_MS after. Until the first
 * answer, messages go to partition 0 (Q itself); keyed ones wait here.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "redq_private.h"

#define DISCOVER_MS 2000

typedef struct pqueue pqueue;
typedef struct redq__pprod pprod;

/* One partition's inner producer. */
typedef struct pinner {
    pprod *pp;
    pqueue *q;
    unsigned idx;
    redq_producer *p;
    char *pname; /* the physical queue */
    size_t plen;
} pinner;

/* A keyed message waiting for its queue's partition count. */
/* Keyed messages waiting for discovery are redq__qheld (lib/producer_queue.c,
 * shared with the one-server producer). */
typedef redq__qheld held;

struct pqueue {
    pqueue *next;
    pprod *pp;
    char *name;
    size_t len;
    char *meta; /* HMGET target; its slot is the queue's */
    size_t metalen;
    redq__parts parts;
    int known;  /* a discovery answered */
    int asking; /* a discovery is in flight */
    unsigned cur;       /* sticky: the partition taking unkeyed messages */
    size_t cur_sent;    /* messages given to it since it became current */
    held *hhead, *htail;
    pinner *in[REDQ__MAX_PARTITIONS];
};

typedef struct pflush {
    pprod *pp;
    redq_flush_cb cb;
    void *user;
    int timeout_ms;
    int status;
    size_t remaining;
    int wait_held; /* keyed messages were waiting: flush again after */
    struct pflush *next;
} pflush;

struct redq__pprod {
    redq_producer *outer;
    struct event_base *base;
    redq__options opts;   /* the inners' options (strings borrowed from
                             the copies below) */
    redq__url url;
    redq__logger *log;
    redq__cluster *cl;
    pqueue *queues, *last;
    struct event *t_discover;
    struct event *ev_close;
    pflush *flushes; /* waiting for held messages */
    size_t ninners, closing_left;
    int closing;
    redq_close_cb close_cb;
    void *close_user;
    char *s_url, *s_password, *s_client_name;
    redq__registry *registry;
};

static char *dup_or_null(const char *s)
{
    char *d;
    if (s == NULL)
        return NULL;
    d = malloc(strlen(s) + 1);
    if (d != NULL)
        memcpy(d, s, strlen(s) + 1);
    return d;
}

/* ---- reports ------------------------------------------------------------ */

/* An inner's report: the caller sees the outer producer and the logical
 * queue; the rest (id, payload, opaque, status) is the inner's. */
static void inner_report(redq_producer *ip, const redq_report *r, void *arg)
{
    pinner *in = arg;
    redq_report o = *r;
    (void)ip;
    o.queue = in->q->name;
    redq__producer_outer_report(in->pp->outer, &o);
}

/* ---- discovery ---------------------------------------------------------- */

static void dispatch_held(pqueue *q);
static void check_flushes(pprod *pp);
static void fail_held(pqueue *q, held *h, int status, const char *why);

static void discover_reply(redq__cluster *cl, void *reply, void *arg)
{
    pqueue *q = arg;
    redisReply *r = reply;
    redq__parts pt;
    (void)cl;
    q->asking = 0;
    if (q->pp->closing || r == NULL || r->type != REDIS_REPLY_ARRAY ||
        r->elements < 2) {
        if (r != NULL && r->type == REDIS_REPLY_ERROR)
            redq__log(q->pp->log, REDQ_LOG_DEBUG, REDQ_ESERVER,
                      "queue %s: partitions unknown: %s", q->name, r->str);
        return; /* asked again on the next tick */
    }
    {
        int bad = redq__parts_from_reply(&pt, r->element[0], r->element[1]);
        if (bad != 0)
            redq__log(q->pp->log, REDQ_LOG_WARN, bad,
                      "queue %s: partition fields of %s do not parse; "
                      "using %u of them",
                      q->name, q->meta, pt.active);
    }
    /* A partition's tag never changes once made: an existing inner keeps
     * its name (a changed tag would be another queue). */
    if (!q->known || pt.active != q->parts.active ||
        pt.total != q->parts.total) {
        if (q->known)
            redq__log(q->pp->log, REDQ_LOG_INFO, 0,
                      "queue %s: %u active partitions (of %u)", q->name,
                      pt.active, pt.total);
        q->parts = pt;
        if (q->cur >= pt.active) {
            q->cur = 0;
            q->cur_sent = 0;
        }
    }
    q->known = 1;
    if (q->hhead != NULL) {
        dispatch_held(q);
        check_flushes(q->pp);
    }
}

static void discover(pqueue *q)
{
    char *cmd = NULL;
    const char *argv[5];
    size_t lens[5];
    long long n;
    if (q->asking || q->pp->closing)
        return;
    argv[0] = "HMGET";
    argv[1] = q->meta;
    argv[2] = REDQ__META_PARTITIONS;
    argv[3] = REDQ__META_PTAGS;
    argv[4] = REDQ__META_FORMAT;
    lens[0] = 5;
    lens[1] = q->metalen;
    lens[2] = strlen(REDQ__META_PARTITIONS);
    lens[3] = strlen(REDQ__META_PTAGS);
    lens[4] = strlen(REDQ__META_FORMAT);
    n = redisFormatCommandArgv(&cmd, 5, argv, lens);
    if (n <= 0)
        return;
    if (redq__cluster_send(q->pp->cl, redq__key_slot(q->meta, q->metalen),
                           cmd, (size_t)n, -1, 0, discover_reply, q) == 0)
        q->asking = 1;
    redisFreeCommand(cmd);
}

/* The registry's ZADD through the router (redq__registry_send_fn): the
 * registry key has a slot of its own, which no pinned connection of an
 * inner may touch. */
typedef struct regsend {
    redq__registry_done_fn done;
    void *arg;
} regsend;

static void registry_reply(redq__cluster *cl, void *reply, void *arg)
{
    regsend *rs = arg;
    (void)cl;
    rs->done(reply, rs->arg);
    free(rs);
}

static int registry_send(void *ctx, int argc, const char **argv,
                         const size_t *argvlen, redq__registry_done_fn done,
                         void *done_arg)
{
    pprod *pp = ctx;
    char *cmd = NULL;
    long long n;
    int rc;
    regsend *rs = malloc(sizeof *rs);
    if (rs == NULL || pp->closing) {
        free(rs);
        return REDQ_ENOMEM;
    }
    n = redisFormatCommandArgv(&cmd, argc, argv, argvlen);
    if (n <= 0) {
        free(rs);
        return REDQ_ENOMEM;
    }
    rs->done = done;
    rs->arg = done_arg;
    rc = redq__cluster_send(pp->cl,
                            redq__key_slot(REDQ__REGISTRY_KEY,
                                           sizeof REDQ__REGISTRY_KEY - 1),
                            cmd, (size_t)n, -1, 0, registry_reply, rs);
    redisFreeCommand(cmd);
    if (rc != 0)
        free(rs);
    return rc;
}

/* The logical queue in the registry (at most one ZADD a minute each). */
static void registry_touch(pqueue *q)
{
    redq__registry_touch_via(q->pp->registry, registry_send, q->pp, q->name,
                             q->len);
}

/* Every DISCOVER_MS: what each queue has now (P raised or lowered), and
 * the registry entry of each (a ZADD through the router, in its slot). */
/* Keyed messages wait for their queue's partitions no longer than
 * message_timeout_ms, like every message (checked on each discovery tick,
 * so up to a tick late): a cluster that never answers must not keep them,
 * or a flush waiting for them, forever. */
static void expire_held(pprod *pp)
{
    uint64_t now = redq__now_us(), limit;
    int any = 0;
    pqueue *q;
    if (pp->opts.message_timeout_ms <= 0 || pp->closing)
        return;
    limit = (uint64_t)pp->opts.message_timeout_ms * 1000u;
    for (q = pp->queues; q != NULL; q = q->next)
        while (q->hhead != NULL && now - q->hhead->since_us >= limit) {
            held *h = q->hhead;
            char why[96];
            q->hhead = h->next;
            if (q->hhead == NULL)
                q->htail = NULL;
            snprintf(why, sizeof why,
                     "not acknowledged within %d ms (its queue's partitions "
                     "were never learnt)",
                     pp->opts.message_timeout_ms);
            fail_held(q, h, REDQ_ETIMEDOUT, why);
            any = 1;
        }
    if (any)
        check_flushes(pp);
}

static void discover_tick(evutil_socket_t fd, short what, void *arg)
{
    pprod *pp = arg;
    pqueue *q;
    (void)fd;
    (void)what;
    for (q = pp->queues; q != NULL; q = q->next) {
        discover(q);
        registry_touch(q);
    }
    expire_held(pp);
}

/* ---- queues and inners -------------------------------------------------- */

static pqueue *queue_get(pprod *pp, const char *name, size_t len)
{
    pqueue *q = pp->last;
    if (q != NULL && q->len == len && memcmp(q->name, name, len) == 0)
        return q;
    for (q = pp->queues; q != NULL; q = q->next)
        if (q->len == len && memcmp(q->name, name, len) == 0)
            return pp->last = q;
    q = calloc(1, sizeof *q);
    if (q == NULL)
        return NULL;
    q->pp = pp;
    q->name = malloc(len + 1);
    q->meta = redq__key(name, len, "meta");
    if (q->name == NULL || q->meta == NULL) {
        free(q->name);
        free(q->meta);
        free(q);
        return NULL;
    }
    memcpy(q->name, name, len);
    q->name[len] = '\0';
    q->len = len;
    q->metalen = strlen(q->meta);
    redq__parts_init(&q->parts);
    q->next = pp->queues;
    pp->queues = q;
    discover(q);
    registry_touch(q);
    return pp->last = q;
}

static pinner *inner_get(pqueue *q, unsigned i)
{
    pprod *pp = q->pp;
    pinner *in = q->in[i];
    redq__options o;
    if (in != NULL)
        return in;
    in = calloc(1, sizeof *in);
    if (in == NULL)
        return NULL;
    in->pp = pp;
    in->q = q;
    in->idx = i;
    in->pname = redq__partition_name(q->name, q->len, q->parts.tag[i], i);
    if (in->pname == NULL) {
        free(in);
        return NULL;
    }
    in->plen = strlen(in->pname);
    o = pp->opts;
    o.on_report = inner_report;
    o.report_user = in;
    if (redq__producer_new_inner(&in->p, pp->outer, &o, &pp->url, pp->cl,
                                 redq__key_slot(in->pname, in->plen)) != 0) {
        free(in->pname);
        free(in);
        return NULL;
    }
    q->in[i] = in;
    pp->ninners++;
    return in;
}

/* Sticky by batch: the current partition takes messages while its open
 * batch is open; once that batch was sealed (sent), the next active
 * partition becomes current. */
static unsigned pick_sticky(pqueue *q)
{
    if (q->cur >= q->parts.active) {
        q->cur = 0;
        q->cur_sent = 0;
    }
    if (q->cur_sent > 0 && q->in[q->cur] != NULL &&
        redq__producer_open_count(q->in[q->cur]->p, q->in[q->cur]->pname,
                                  q->in[q->cur]->plen) == 0) {
        q->cur = (q->cur + 1) % q->parts.active;
        q->cur_sent = 0;
    }
    return q->cur;
}

static unsigned pick_keyed(const pqueue *q, const void *key, size_t keylen)
{
    return redq__key_slot(key, keylen) % q->parts.active;
}

/* Put one message into partition i. The inner's window is unbounded (the
 * outer's holds); it refuses only for memory or a closed inner. */
static int put(pqueue *q, unsigned i, int kind, void *payload, size_t len,
               redq_free_cb free_cb, void *free_user, long long delay_ms,
               void *opaque)
{
    pinner *in = inner_get(q, i);
    if (in == NULL)
        return REDQ_ENOMEM;
    switch (kind) {
    case REDQ__PP_OWNED:
        return redq_produce_owned(in->p, in->pname, payload, len, free_cb,
                                  free_user, opaque);
    case REDQ__PP_DELAYED:
        return redq_produce_delayed(in->p, in->pname, payload, len, delay_ms,
                                    opaque);
    default:
        return redq_produce(in->p, in->pname, payload, len, opaque);
    }
}

/* Report a keyed message that never left the outer producer (no memory,
 * timed out waiting for discovery, closed), and free it. */
static void fail_held(pqueue *q, held *h, int status, const char *why)
{
    redq_producer *outer = q->pp->outer;
    redq_report r;
    char id[REDQ__MSG_ID_MAX];
    memset(&r, 0, sizeof r);
    redq__msg_id(id, redq_producer_id(outer), h->seq + 1);
    r.queue = q->name;
    r.payload = h->payload;
    r.len = h->len;
    r.opaque = h->opaque;
    r.status = status;
    r.errstr = why;
    r.persisted = REDQ_PERSIST_NOT;
    r.id = id;
    redq__producer_outer_report(outer, &r);
    redq__qheld_free(h);
}

/* The keyed messages that waited for discovery, in their order. Each gets
 * the id number it was given at acceptance. */
static void dispatch_held(pqueue *q)
{
    redq_producer *outer = q->pp->outer;
    while (q->hhead != NULL) {
        held *h = q->hhead;
        uint64_t *seq = redq__producer_seq(outer), save = *seq;
        int rc;
        q->hhead = h->next;
        if (q->hhead == NULL)
            q->htail = NULL;
        *seq = h->seq; /* the inner numbers it from here */
        rc = put(q, pick_keyed(q, h->key, h->keylen), REDQ__PP_COPY,
                 h->payload, h->len, NULL, NULL, 0, h->opaque);
        *seq = save;
        if (rc != 0)
            fail_held(q, h, rc, redq_strerror(rc));
        else
            redq__qheld_free(h);
    }
}

int redq__pp_produce(redq__pprod *pp, int kind, const char *qn, size_t qlen,
                     const void *key, size_t keylen, void *payload,
                     size_t len, redq_free_cb free_cb, void *free_user,
                     long long delay_ms, void *opaque)
{
    pqueue *q = queue_get(pp, qn, qlen);
    unsigned i;
    int rc;
    if (q == NULL)
        return REDQ_ENOMEM;
    if (kind == REDQ__PP_KEYED && !q->known) {
        /* Which partition a key goes to needs P: wait for it. */
        held *h = redq__qheld_new(key, keylen, payload, len, opaque,
                                  *redq__producer_seq(pp->outer));
        if (h == NULL)
            return REDQ_ENOMEM;
        (*redq__producer_seq(pp->outer))++;
        if (q->htail != NULL)
            q->htail->next = h;
        else
            q->hhead = h;
        q->htail = h;
        redq__producer_outer_accepted(pp->outer, len);
        discover(q);
        return 0;
    }
    if (kind == REDQ__PP_KEYED) {
        i = pick_keyed(q, key, keylen);
        kind = REDQ__PP_COPY;
    } else {
        i = pick_sticky(q);
    }
    rc = put(q, i, kind, payload, len, free_cb, free_user, delay_ms, opaque);
    if (rc != 0)
        return rc;
    if (i == q->cur)
        q->cur_sent++;
    redq__producer_outer_accepted(pp->outer, len);
    return 0;
}

/* ---- flush -------------------------------------------------------------- */

static void flush_done(pflush *f)
{
    redq_flush_cb cb = f->cb;
    void *user = f->user;
    int status = f->status;
    redq_producer *outer = f->pp->outer;
    free(f);
    cb(outer, status, user);
}

static void inner_flushed(redq_producer *ip, int status, void *arg)
{
    pflush *f = arg;
    (void)ip;
    if (status != 0 && f->status == 0)
        f->status = status;
    if (--f->remaining == 0)
        flush_done(f);
}

/* Flush every inner for f (one more count each). */
static void flush_inners(pflush *f)
{
    pqueue *q;
    unsigned i;
    for (q = f->pp->queues; q != NULL; q = q->next)
        for (i = 0; i < REDQ__MAX_PARTITIONS; i++)
            if (q->in[i] != NULL &&
                redq_producer_flush(q->in[i]->p, f->timeout_ms,
                                    inner_flushed, f) == 0)
                f->remaining++;
}

static int any_held(const pprod *pp)
{
    const pqueue *q;
    for (q = pp->queues; q != NULL; q = q->next)
        if (q->hhead != NULL)
            return 1;
    return 0;
}

/* Keyed messages were dispatched: flushes that waited for them now flush
 * the inners that got them. */
static void check_flushes(pprod *pp)
{
    pflush *f, *next;
    if (any_held(pp))
        return;
    f = pp->flushes;
    pp->flushes = NULL;
    for (; f != NULL; f = next) {
        next = f->next;
        flush_inners(f);
        if (--f->remaining == 0) /* the "held" count */
            flush_done(f);
    }
}

static void flush_zero(evutil_socket_t fd, short what, void *arg)
{
    pflush *f = arg;
    (void)fd;
    (void)what;
    if (--f->remaining == 0)
        flush_done(f);
}

int redq__pp_flush(redq__pprod *pp, int timeout_ms, redq_flush_cb cb,
                   void *user)
{
    pflush *f = calloc(1, sizeof *f);
    struct timeval zero = {0, 0};
    if (f == NULL)
        return REDQ_ENOMEM;
    f->pp = pp;
    f->cb = cb;
    f->user = user;
    f->timeout_ms = timeout_ms;
    /* One count of our own, given back from the loop: the callback never
     * runs inside this call, even with nothing to wait for. */
    f->remaining = 1;
    flush_inners(f);
    if (any_held(pp)) {
        f->remaining++;
        f->next = pp->flushes;
        pp->flushes = f;
    }
    if (event_base_once(pp->base, -1, EV_TIMEOUT, flush_zero, f, &zero) != 0) {
        f->remaining--; /* cannot happen short of memory; finish later */
    }
    return 0;
}

/* ---- close -------------------------------------------------------------- */

static void finish_close(pprod *pp)
{
    redq_close_cb cb = pp->close_cb;
    void *user = pp->close_user;
    pqueue *q;
    redq__cluster_free(pp->cl); /* discoveries in flight: NULL, ignored */
    pp->cl = NULL;
    redq__registry_free(pp->registry);
    while ((q = pp->queues) != NULL) {
        unsigned i;
        pp->queues = q->next;
        for (i = 0; i < REDQ__MAX_PARTITIONS; i++)
            if (q->in[i] != NULL) {
                free(q->in[i]->pname);
                free(q->in[i]);
            }
        free(q->name);
        free(q->meta);
        free(q);
    }
    if (pp->t_discover != NULL)
        event_free(pp->t_discover);
    if (pp->ev_close != NULL)
        event_free(pp->ev_close);
    redq__url_free(&pp->url);
    free(pp->s_url);
    if (pp->s_password != NULL) {
        memset(pp->s_password, 0, strlen(pp->s_password));
        free(pp->s_password);
    }
    free(pp->s_client_name);
    redq__producer_outer_free(pp->outer);
    free(pp);
    if (cb != NULL)
        cb(user);
}

static void inner_closed(void *arg)
{
    pprod *pp = arg;
    if (--pp->closing_left == 0)
        finish_close(pp);
}

/* From the loop: held messages fail, flushes waiting for them end, every
 * inner closes (reporting what it holds), then the router goes. */
static void close_cb_ev(evutil_socket_t fd, short what, void *arg)
{
    pprod *pp = arg;
    pqueue *q;
    pflush *f;
    unsigned i;
    (void)fd;
    (void)what;
    for (q = pp->queues; q != NULL; q = q->next)
        while (q->hhead != NULL) {
            held *h = q->hhead;
            q->hhead = h->next;
            fail_held(q, h, REDQ_ECLOSED, "producer closed");
        }
    while ((f = pp->flushes) != NULL) {
        pp->flushes = f->next;
        f->status = REDQ_ECLOSED;
        if (--f->remaining == 0)
            flush_done(f);
    }
    pp->closing_left = 1;
    for (q = pp->queues; q != NULL; q = q->next)
        for (i = 0; i < REDQ__MAX_PARTITIONS; i++)
            if (q->in[i] != NULL &&
                redq_producer_close(q->in[i]->p, inner_closed, pp) == 0)
                pp->closing_left++;
    inner_closed(pp);
}

int redq__pp_close(redq__pprod *pp, redq_close_cb cb, void *user)
{
    pp->closing = 1;
    pp->close_cb = cb;
    pp->close_user = user;
    event_del(pp->t_discover);
    event_active(pp->ev_close, EV_TIMEOUT, 0);
    return 0;
}

/* ---- stats -------------------------------------------------------------- */

void redq__pp_stats(const redq__pprod *pp, redq_producer_stats *st)
{
    const pqueue *q;
    unsigned i;
    int all = pp->cl != NULL && redq__cluster_ready(pp->cl);
    st->inflight_batches = 0;
    st->throttled = 0;
    for (q = pp->queues; q != NULL; q = q->next)
        for (i = 0; i < REDQ__MAX_PARTITIONS; i++)
            if (q->in[i] != NULL) {
                redq_producer_stats is;
                redq_producer_get_stats(q->in[i]->p, &is);
                st->batches_sent += is.batches_sent;
                st->batches_resent += is.batches_resent;
                st->connects += is.connects;
                st->disconnects += is.disconnects;
                st->throttle_events += is.throttle_events;
                st->inflight_batches += is.inflight_batches;
                st->throttled |= is.throttled;
                all = all && is.connected;
            }
    st->connected = all;
}

/* ---- making one --------------------------------------------------------- */

int redq__pp_new(redq__pprod **out, redq_producer *outer,
                 struct event_base *base, const redq__options *opts,
                 const redq__url *url, const redq__logger *log)
{
    pprod *pp = calloc(1, sizeof *pp);
    redq__conn_config cfg;
    char err[256];
    struct timeval tv = {DISCOVER_MS / 1000, (DISCOVER_MS % 1000) * 1000};
    int rc;
    if (pp == NULL)
        return REDQ_ENOMEM;
    pp->outer = outer;
    pp->base = base;
    pp->log = (redq__logger *)log;
    pp->opts = *opts;
    /* The inners' window is the outer's: theirs never refuses. */
    pp->opts.max_pending_msgs = (size_t)-1 / 2;
    pp->opts.max_pending_bytes = (size_t)-1 / 2;
    pp->opts.on_ready = NULL;
    pp->opts.on_stats = NULL;
    pp->opts.errbuf = NULL;
    pp->s_url = dup_or_null(opts->url);
    pp->s_password = dup_or_null(opts->password);
    pp->s_client_name = dup_or_null(opts->client_name);
    pp->opts.url = pp->s_url;
    pp->opts.password = pp->s_password;
    pp->opts.client_name = pp->s_client_name;
    rc = (opts->url != NULL && pp->s_url == NULL) ||
                 (opts->password != NULL && pp->s_password == NULL) ||
                 (opts->client_name != NULL && pp->s_client_name == NULL)
             ? REDQ_ENOMEM
             : redq__url_parse(&pp->url, pp->s_url, err, sizeof err);
    if (rc == 0) {
        redq__conn_config_init(&cfg, &pp->opts, &pp->url, pp->log);
        rc = redq__cluster_new(&pp->cl, base, &cfg);
    }
    if (rc == 0) {
        /* NULL when out of memory: then nothing is recorded. */
        pp->registry = redq__registry_new(pp->log);
        pp->t_discover = event_new(base, -1, EV_PERSIST, discover_tick, pp);
        pp->ev_close = event_new(base, -1, 0, close_cb_ev, pp);
        if (pp->t_discover == NULL || pp->ev_close == NULL)
            rc = REDQ_ENOMEM;
    }
    if (rc != 0) {
        redq__cluster_free(pp->cl);
        redq__registry_free(pp->registry);
        if (pp->t_discover != NULL)
            event_free(pp->t_discover);
        if (pp->ev_close != NULL)
            event_free(pp->ev_close);
        redq__url_free(&pp->url);
        free(pp->s_url);
        free(pp->s_password);
        free(pp->s_client_name);
        free(pp);
        return rc;
    }
    (void)url;
    event_add(pp->t_discover, &tv);
    redq__cluster_start(pp->cl);
    *out = pp;
    return 0;
}

/* ---- the keyed call ----------------------------------------------------- */

int redq_produce_key(redq_producer *p, const char *queue, const void *key,
                     size_t keylen, const void *payload, size_t len,
                     void *opaque)
{
    size_t qlen;
    redq__pprod *pp;
    int rc;
    if (key == NULL && keylen > 0)
        return REDQ_EINVAL;
    rc = redq__producer_check(p, queue, payload, len, &qlen);
    if (rc != 0)
        return rc;
    pp = redq__producer_pp(p);
    if (pp == NULL) /* one server: partitions are names on one connection */
        return redq__producer_key(p, queue, qlen, key != NULL ? key : "",
                                  keylen, payload, len, opaque);
    return redq__pp_produce(pp, REDQ__PP_KEYED, queue, qlen,
                            key != NULL ? key : "", keylen, (void *)payload,
                            len, NULL, NULL, 0, opaque);
}
