/*
 * The admin handle (redq.h, "Admin"): what operators ask about queues, and
 * the few things they do to them, on one connection of its own.
 *
 * Every call becomes a request (areq) that runs as a small sequence of
 * commands: it starts when the connection is ready (or waits for it, up to
 * connect_timeout_ms + command_timeout_ms), each reply may send the next
 * command, and when nothing of it is outstanding any more its callback is
 * made from an event of its own, never from inside the API call or a reply
 * callback (so a user callback may close the handle). A reply lost with
 * the connection fails the request (REDQ_EDISCONNECTED): operators' writes
 * are not blindly resent, and a reader just asks again.
 *
 * Keys come from lib/keys.c only; multi-key reads of one queue are one
 * script (lib/scripts.c: SNAPSHOT, PEEK) so that a snapshot is consistent,
 * and writes reuse the scripts consumers run (DEADREQUEUE, REAP) or admin
 * scripts with the same rules (DEADONE, PURGE).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "consumer_int.h" /* redq__rel_send_script */
#include "redq_private.h"

#define REGISTRY_KEY REDQ__REGISTRY_KEY
/* The most queues one listing snapshots (the registry is read with one
 * ZRANGE; a fleet with more has bigger problems than a dashboard). */
#define MAX_LISTED 10000
/* Holders one snapshot looks at (the consumers set is bounded by the
 * fleet's pool sizes; this caps one script's work). */
#define MAX_HOLDERS 1024
/* A registry entry not seen this long, whose keys are all empty, is gone. */
#define REGISTRY_STALE_MS (24LL * 3600 * 1000)
/* Dead letters DEADREQUEUE moves per script, and DEADONE looks at. */
#define REQUEUE_BATCH 1000
#define DEADONE_SCAN 10000
/* Messages one peek or dead listing returns at most. */
#define MAX_LIST 100000
/* The orphan search: SCAN's COUNT hint (keys the server looks at per
 * page, so per round trip), and the most candidate lists it checks. */
#define ORPHAN_SCAN_COUNT "1000"
#define MAX_ORPHANS 10000

#include "admin_int.h"

/* ---- requests ----------------------------------------------------------- */

static void run(areq *r);
static void snaps_prune_sort(areq *r);
static void build_metrics(areq *r);
static void finish_orphans(areq *r, const char *es);
static void on_scan(redq__conn *c, void *reply, void *arg);

static void req_free(areq *r)
{
    size_t i;
    for (i = 0; i < r->nsnaps; i++)
        free(r->snaps[i].name);
    free(r->snaps);
    for (i = 0; i < r->nmsgs; i++)
        free(r->bufs[i]);
    free(r->bufs);
    free(r->msgs);
    free(r->text);
    for (i = 0; i < r->ncands; i++)
        free(r->cands[i].key);
    free(r->cands);
    free(r->prefix);
    free(r->pattern);
    free(r->queue);
    free(r->arg);
    if (r->ev != NULL)
        event_free(r->ev);
    free(r);
}

static void maybe_closed(redq_admin *a)
{
    redq_close_cb cb;
    void *user;
    if (!a->closing || a->head != NULL || a->conn != NULL || a->cl != NULL)
        return;
    cb = a->close_cb;
    user = a->close_user;
    event_free(a->ev_close);
    free(a);
    if (cb != NULL)
        cb(user); /* the handle is gone: its last callback */
}

/* Make the callback and release the request (from its event only). */
static void finish(areq *r)
{
    redq_admin *a = r->a;
    const char *es = r->status == 0 ? NULL : r->errstr;
    static const redq_queue_info none_q[1];
    static const redq_admin_msg none_m[1];

    if (r->prev != NULL)
        r->prev->next = r->next;
    else
        a->head = r->next;
    if (r->next != NULL)
        r->next->prev = r->prev;
    if (r->status == 0 && r->kind != K_PARTS)
        redq__adm_fold_parts(r);
    if (r->status == 0 && (r->kind == K_QUEUES || r->kind == K_METRICS))
        snaps_prune_sort(r);
    if (r->status == 0 && r->kind == K_METRICS)
        build_metrics(r);
    switch (r->kind) {
    case K_QUEUES:
    case K_QUEUE: {
        redq_queue_info *v = NULL;
        size_t i, n = 0;
        if (r->status == 0 && r->nsnaps > 0) {
            v = malloc(r->nsnaps * sizeof *v);
            if (v == NULL) {
                r->status = REDQ_ENOMEM;
                snprintf(r->errstr, sizeof r->errstr, "out of memory");
                es = r->errstr;
            }
            for (i = 0; v != NULL && i < r->nsnaps; i++)
                if (r->snaps[i].done)
                    v[n++] = r->snaps[i].info;
        }
        r->cb.queues(a, r->status, es, v != NULL ? v : none_q,
                     r->status == 0 ? n : 0, r->user);
        free(v);
        break;
    }
    case K_PEEK:
    case K_DEAD:
        r->cb.msgs(a, r->status, es, r->msgs != NULL ? r->msgs : none_m,
                   r->status == 0 ? r->nmsgs : 0, r->user);
        break;
    case K_METRICS:
        r->cb.text(a, r->status, es, r->status == 0 && r->text ? r->text : "",
                   r->status == 0 ? r->textlen : 0, r->user);
        break;
    case K_ORPHANS:
        finish_orphans(r, es);
        break;
    case K_PARTS:
        redq__adm_finish_parts(r, es);
        break;
    default:
        r->cb.done(a, r->status, es, r->status == 0 ? r->n : 0, r->user);
        break;
    }
    req_free(r);
    maybe_closed(a);
}

static void req_ev_cb(evutil_socket_t fd, short what, void *arg)
{
    areq *r = arg;
    (void)fd;
    (void)what;
    if (r->finishing) {
        finish(r);
        return;
    }
    /* The deadline of a request still waiting for the connection. */
    if (!r->started) {
        const char *why =
            r->a->conn != NULL ? redq__conn_last_error(r->a->conn) : "";
        r->status = REDQ_ETIMEDOUT;
        snprintf(r->errstr, sizeof r->errstr, "no connection to Redis%s%s",
                 why[0] ? ": " : "", why);
        r->finishing = 1;
        finish(r);
    }
}

/* Record the first failure; the request ends once nothing is outstanding. */
void redq__adm_fail(areq *r, int code, const char *fmt, ...) REDQ__PRINTF(3, 4);
void redq__adm_fail(areq *r, int code, const char *fmt, ...)
{
    va_list ap;
    if (r->status != 0)
        return;
    r->status = code;
    va_start(ap, fmt);
    vsnprintf(r->errstr, sizeof r->errstr, fmt, ap);
    va_end(ap);
}

/* Nothing outstanding: schedule the callback. */
void redq__adm_settle(areq *r)
{
    if (r->outstanding > 0 || r->finishing)
        return;
    r->finishing = 1;
    event_del(r->ev);
    event_active(r->ev, EV_TIMEOUT, 0);
}

/* A reply is usable, else the request is failed with why. */
int redq__adm_reply_ok(areq *r, void *reply, const char *what)
{
    redisReply *rep = reply;
    if (rep == NULL) {
        redq__adm_fail(r, r->a->closing ? REDQ_ECLOSED : REDQ_EDISCONNECTED,
             r->a->closing ? "admin handle closed"
                           : "%s: connection lost; outcome unknown", what);
        return 0;
    }
    if (rep->type == REDIS_REPLY_ERROR) {
        redq__adm_fail(r, redq__err_from_reply(rep->str, (size_t)rep->len), "%s: %s",
             what, rep->str);
        if (strncmp(rep->str, "NOSCRIPT", 8) == 0 && r->a->conn != NULL)
            redq__conn_reset(r->a->conn, REDQ_ESERVER, "scripts flushed");
        return 0;
    }
    return 1;
}

aref *redq__adm_ref_new(areq *r, size_t i)
{
    aref *f = calloc(1, sizeof *f);
    if (f != NULL) {
        f->r = r;
        f->i = i;
    }
    return f;
}

/* A routed command's reply: the admin's callbacks take a redq__conn that
 * none of them uses; on a cluster it is NULL. */
typedef struct route {
    redq__reply_cb cb;
    void *arg;
} route;

static void on_routed(redq__cluster *cl, void *reply, void *arg)
{
    route rt = *(route *)arg;
    (void)cl;
    free(arg);
    rt.cb(NULL, reply, rt.arg);
}

/*
 * On a cluster every command goes through the router by the slot of the
 * key it is about: a script's first key (EVAL or EVALSHA) (every key of one queue shares its
 * slot, lib/keys.c), a plain command's first argument (the queue's own
 * keys, or the registry), and SCAN, which names no key, by the queue's
 * slot: the keys it looks for (a queue's processing lists) are all there.
 */
static int send_routed(areq *r, int script, size_t argc, const char **argv,
                       const size_t *lens, redq__reply_cb cb, void *arg)
{
    size_t *l = NULL, i;
    const char *key;
    size_t klen;
    char *cmd = NULL;
    long long n;
    route *rt;
    int rc;

    if (lens == NULL) {
        if ((l = malloc(argc * sizeof *l)) == NULL)
            return REDQ_ENOMEM;
        for (i = 0; i < argc; i++)
            l[i] = strlen(argv[i]);
        lens = l;
    }
    if ((script >= 0 || strncmp(argv[0], "EVAL", 4) == 0) && argc > 3) {
        key = argv[3];
        klen = lens[3];
    } else if (strcmp(argv[0], "SCAN") == 0 || argc < 2) {
        key = r->queue != NULL ? r->queue : REGISTRY_KEY;
        klen = strlen(key);
    } else {
        key = argv[1];
        klen = lens[1];
    }
    n = redisFormatCommandArgv(&cmd, (int)argc, argv, lens);
    free(l);
    rt = malloc(sizeof *rt);
    if (n < 0 || rt == NULL) {
        if (n >= 0)
            redisFreeCommand(cmd);
        free(rt);
        return REDQ_ENOMEM;
    }
    rt->cb = cb;
    rt->arg = arg;
    rc = redq__cluster_send(r->a->cl, redq__cluster_key_slot(key, klen), cmd,
                            (size_t)n, script, 0, on_routed, rt);
    redisFreeCommand(cmd);
    if (rc != 0)
        free(rt);
    return rc;
}

/* Send argv (lens NULL: strlen each) as a plain command (script < 0) or a
 * script call. Counts it outstanding; on failure the request is failed
 * and `ref` freed. */
int redq__adm_send_cmd(areq *r, int script, size_t argc, const char **argv,
                    const size_t *lens, redq__reply_cb cb, aref *ref)
{
    int rc;
    if (ref == NULL) {
        redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
        return REDQ_ENOMEM;
    }
    if (r->a->cl != NULL)
        rc = send_routed(r, script, argc, argv, lens, cb, ref);
    else if (script >= 0)
        rc = redq__rel_send_script(r->a->conn, script, argc, argv, lens, 0,
                                   cb, ref);
    else
        rc = redq__conn_sendv(r->a->conn, (int)argc, argv, lens, 0, cb, ref);
    if (rc != 0) {
        free(ref);
        redq__adm_fail(r, rc, "sending a command: %s", redq_strerror(rc));
        return rc;
    }
    r->outstanding++;
    return 0;
}

/* Begin a reply callback: the request and index, the ref freed. */
areq *redq__adm_reply_begin(void *arg, size_t *i, char *holder)
{
    aref *f = arg;
    areq *r = f->r;
    if (i != NULL)
        *i = f->i;
    if (holder != NULL)
        memcpy(holder, f->holder, sizeof f->holder);
    free(f);
    r->outstanding--;
    return r;
}

char *redq__adm_qkey(areq *r, const char *q, size_t qlen, const char *sfx)
{
    char *k = redq__key(q, qlen, sfx);
    if (k == NULL)
        redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
    return k;
}

/* A holder id as consumers make them (lib/reliable.c): hex and dots. */
static int valid_holder(const char *s, size_t len)
{
    size_t i;
    if (len == 0 || len > 32)
        return 0;
    for (i = 0; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') ||
              s[i] == '.'))
            return 0;
    return 1;
}

static long long reply_ll(const redisReply *e)
{
    if (e->type == REDIS_REPLY_INTEGER)
        return e->integer;
    if (e->type == REDIS_REPLY_STRING)
        return strtoll(e->str, NULL, 10);
    return -1;
}

/* ---- snapshots ---------------------------------------------------------- */

static void on_snapshot(redq__conn *c, void *reply, void *arg)
{
    size_t i;
    areq *r = redq__adm_reply_begin(arg, &i, NULL);
    redisReply *rep = reply;
    qsnap *s = &r->snaps[i];
    (void)c;
    if (redq__adm_reply_ok(r, rep, "snapshot")) {
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 16) {
            long long v[16];
            size_t k;
            for (k = 0; k < 16; k++)
                v[k] = reply_ll(rep->element[k]);
            s->info.format = v[15] == 1 ? REDQ_FORMAT_FRAMES
                                        : REDQ_FORMAT_PLAIN;
            s->info.ready = (uint64_t)v[0];
            s->info.due = (uint64_t)v[1];
            s->info.delayed = (uint64_t)v[2];
            s->info.dead = (uint64_t)v[3];
            s->info.registered = (uint64_t)v[4];
            s->info.consumers = (uint64_t)v[5];
            s->info.processing = (uint64_t)v[6];
            s->info.paused = v[7] == 1;
            s->info.oldest_age_ms =
                v[8] >= 0 ? (v[9] > v[8] ? v[9] - v[8] : 0) : -1;
            s->info.pushed = v[10] > 0 ? (uint64_t)v[10] : 0;
            s->info.taken = v[11] > 0 ? (uint64_t)v[11] : 0;
            s->info.acked = v[12] > 0 ? (uint64_t)v[12] : 0;
            s->info.retried = v[13] > 0 ? (uint64_t)v[13] : 0;
            s->info.dead_lettered = v[14] > 0 ? (uint64_t)v[14] : 0;
            s->done = 1;
        } else {
            redq__adm_fail(r, REDQ_EPROTOCOL, "snapshot: unexpected reply");
        }
    }
    redq__adm_settle(r);
}

/* The consumers set's members are in: snapshot the queue with their keys. */
static void on_members(redq__conn *c, void *reply, void *arg)
{
    size_t i, k, nh = 0, argc = 0;
    areq *r = redq__adm_reply_begin(arg, &i, NULL);
    redisReply *rep = reply;
    qsnap *s = &r->snaps[i];
    const char **argv = NULL;
    size_t *lens = NULL;
    char **keys = NULL;
    char nk[24];
    static const char *const fixed[] = {"due", "delayed", "dead", "consumers",
                                        "meta"};
    (void)c;

    if (!redq__adm_reply_ok(r, rep, "listing consumers") || r->status != 0)
        goto out;
    if (rep->type == REDIS_REPLY_ARRAY)
        for (k = 0; k < rep->elements && nh < MAX_HOLDERS; k++)
            if (rep->element[k]->type == REDIS_REPLY_STRING &&
                valid_holder(rep->element[k]->str,
                             (size_t)rep->element[k]->len))
                nh++;
    argv = calloc(9 + 4 * nh, sizeof *argv);
    lens = calloc(9 + 4 * nh, sizeof *lens);
    keys = calloc(5 + 3 * nh, sizeof *keys);
    if (argv == NULL || lens == NULL || keys == NULL) {
        redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
        goto out;
    }
    argv[argc++] = "EVALSHA";
    argv[argc++] = r->a->scripts.sha[REDQ__SCRIPT_SNAPSHOT];
    snprintf(nk, sizeof nk, "%zu", 6 + 3 * nh);
    argv[argc++] = nk;
    argv[argc] = s->name;
    lens[argc++] = s->len;
    for (k = 0; k < 5; k++)
        if ((keys[k] = redq__adm_qkey(r, s->name, s->len, fixed[k])) == NULL)
            goto out;
        else
            argv[argc++] = keys[k];
    {
        size_t j = 0, ki = 5, hs = argc + 3 * nh;
        for (k = 0; k < rep->elements && j < nh; k++) {
            redisReply *e = rep->element[k];
            static const char *const pre[] = {"hb:", "proc:", "fproc:"};
            size_t m;
            if (e->type != REDIS_REPLY_STRING ||
                !valid_holder(e->str, (size_t)e->len))
                continue;
            for (m = 0; m < 3; m++) {
                char sfx[48];
                snprintf(sfx, sizeof sfx, "%s%.*s", pre[m], (int)e->len,
                         e->str);
                if ((keys[ki] = redq__adm_qkey(r, s->name, s->len, sfx)) == NULL)
                    goto out;
                argv[argc++] = keys[ki++];
            }
            argv[hs + j] = e->str;
            lens[hs + j] = (size_t)e->len;
            j++;
        }
        argc += nh;
    }
    for (k = 0; k < argc; k++)
        if (lens[k] == 0 && argv[k] != NULL)
            lens[k] = strlen(argv[k]);
    redq__adm_send_cmd(r, REDQ__SCRIPT_SNAPSHOT, argc, argv, lens, on_snapshot,
             redq__adm_ref_new(r, i));
out:
    if (keys != NULL)
        for (k = 0; k < 5 + 3 * nh; k++)
            free(keys[k]);
    free(keys);
    free(argv);
    free(lens);
    redq__adm_settle(r);
}

static void on_score(redq__conn *c, void *reply, void *arg)
{
    size_t i;
    areq *r = redq__adm_reply_begin(arg, &i, NULL);
    redisReply *rep = reply;
    (void)c;
    if (redq__adm_reply_ok(r, rep, "reading the registry") &&
        rep->type == REDIS_REPLY_STRING)
        r->snaps[i].info.last_seen_ms = strtoll(rep->str, NULL, 10);
    redq__adm_settle(r);
}

/* Snapshot r->snaps[i]: SMEMBERS of its consumers, then SNAPSHOT. */
void redq__adm_snap_start(areq *r, size_t i)
{
    qsnap *s = &r->snaps[i];
    char *ck = redq__adm_qkey(r, s->name, s->len, "consumers");
    const char *argv[2];
    if (ck == NULL)
        return;
    argv[0] = "SMEMBERS";
    argv[1] = ck;
    redq__adm_send_cmd(r, -1, 2, argv, NULL, on_members, redq__adm_ref_new(r, i));
    free(ck);
}

int redq__adm_snap_add(areq *r, const char *name, size_t len, long long seen);

int redq__adm_snap_add(areq *r, const char *name, size_t len, long long seen)
{
    qsnap *s;
    if ((r->nsnaps & (r->nsnaps + 1)) == 0 || r->snaps == NULL) {
        qsnap *v = realloc(r->snaps, (2 * r->nsnaps + 1) * sizeof *v);
        if (v == NULL)
            return REDQ_ENOMEM;
        r->snaps = v;
    }
    s = &r->snaps[r->nsnaps];
    memset(s, 0, sizeof *s);
    s->name = malloc(len + 1);
    if (s->name == NULL)
        return REDQ_ENOMEM;
    memcpy(s->name, name, len);
    s->name[len] = '\0';
    s->len = len;
    s->info.name = s->name;
    s->info.oldest_age_ms = -1;
    s->info.last_seen_ms = seen;
    s->info.partitions = 1;
    r->nsnaps++;
    return 0;
}

static int snap_cmp(const void *x, const void *y)
{
    const qsnap *a = x, *b = y;
    size_t n = a->len < b->len ? a->len : b->len;
    int c = memcmp(a->name, b->name, n);
    return c != 0 ? c : (a->len > b->len) - (a->len < b->len);
}

static void ignore_reply(redq__conn *c, void *reply, void *arg)
{
    (void)c;
    (void)reply;
    (void)arg;
}

/* Every snapshot is in (K_QUEUES, K_METRICS): drop registry entries of
 * queues long unseen whose keys are all empty, sort by name. */
static void snaps_prune_sort(areq *r)
{
    long long now = redq__wall_ms();
    size_t i, w = 0;
    for (i = 0; i < r->nsnaps; i++) {
        qsnap *s = &r->snaps[i];
        const redq_queue_info *q = &s->info;
        if (s->done && q->last_seen_ms >= 0 &&
            now - q->last_seen_ms > REGISTRY_STALE_MS && q->ready == 0 &&
            q->due == 0 && q->delayed == 0 && q->dead == 0 &&
            q->processing == 0 && q->registered == 0 && !q->paused) {
            const char *argv[3] = {"ZREM", REGISTRY_KEY, s->name};
            size_t lens[3] = {4, sizeof REGISTRY_KEY - 1, s->len};
            redq__log(&r->a->log, REDQ_LOG_INFO, 0,
                      "queue %.200s: unseen for a day and empty; dropped from "
                      "the registry", s->name);
            if (r->a->cl != NULL && !r->a->closing)
                (void)send_routed(r, -1, 3, argv, lens, ignore_reply, NULL);
            else if (r->a->conn != NULL && !r->a->closing)
                redq__conn_sendv(r->a->conn, 3, argv, lens, 0, ignore_reply,
                                 NULL);
            free(s->name);
            continue;
        }
        r->snaps[w++] = *s;
    }
    r->nsnaps = w;
    if (w > 1)
        qsort(r->snaps, w, sizeof *r->snaps, snap_cmp);
    for (i = 0; i < w; i++)
        r->snaps[i].info.name = r->snaps[i].name;
}

static void build_metrics(areq *r);

/* The registry's members are in: snapshot each. */
static void on_registry(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    size_t i;
    (void)c;
    if (redq__adm_reply_ok(r, rep, "reading the registry") &&
        rep->type == REDIS_REPLY_ARRAY) {
        int resp3 = rep->elements > 0 &&
                    rep->element[0]->type == REDIS_REPLY_ARRAY;
        size_t step = resp3 ? 1 : 2;
        for (i = 0; i + step <= rep->elements && r->status == 0; i += step) {
            redisReply *nm = resp3 ? rep->element[i]->element[0]
                                   : rep->element[i];
            redisReply *sc = resp3 ? rep->element[i]->element[1]
                                   : rep->element[i + 1];
            if (resp3 && rep->element[i]->elements != 2)
                continue;
            if (nm->type != REDIS_REPLY_STRING || nm->len == 0 ||
                (size_t)nm->len > REDQ__MAX_QUEUE_NAME)
                continue;
            {
                /* Logical queues only: a partition is shown in its
                 * queue's numbers (and by redq_admin_partitions). */
                const char *lq;
                size_t lql;
                if (redq__partition_parse(nm->str, (size_t)nm->len, &lq,
                                          &lql) != 0)
                    continue;
            }
            if (redq__adm_snap_add(r, nm->str, (size_t)nm->len, reply_ll(sc)) != 0)
                redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
        }
        for (i = 0; i < r->nsnaps && r->status == 0; i++)
            redq__adm_snap_begin(r, i);
    }
    redq__adm_settle(r);
}

/* ---- peek and dead letters ---------------------------------------------- */

/* Append one message (a copy of v) to r->msgs; framed: parse the frame. */
static int add_msg(areq *r, const char *v, size_t len, int framed, int dead)
{
    redq_admin_msg *m;
    char *buf;
    size_t need = len + 1 + 65;
    redq__frame f;
    int isframe = 0;

    if (framed && redq__frame_parse(v, len, &f, NULL, 0) == 0)
        isframe = 1;
    if (isframe && f.reason != NULL)
        need += f.reason_len + 1;
    if (isframe && f.queue != NULL)
        need += f.queue_len + 1;
    buf = malloc(need);
    if (buf == NULL)
        return REDQ_ENOMEM;
    r->bufs[r->nmsgs] = buf;
    m = &r->msgs[r->nmsgs];
    memset(m, 0, sizeof *m);
    m->index = r->nmsgs + (dead ? r->offset : 0);
    m->ts_ms = -1;
    m->dead_ts_ms = -1;
    /* buf: payload NUL | id NUL | reason NUL | queue NUL */
    m->framed = isframe;
    if (isframe) {
        memcpy(buf, f.body, f.body_len);
        buf[f.body_len] = '\0';
        m->data = buf;
        m->len = f.body_len;
        m->id = strcpy(buf + f.body_len + 1, f.id);
        m->attempts = f.attempts;
        m->ts_ms = f.ts_ms;
        if (dead) {
            m->dead_ts_ms = f.dead_ts_ms;
            char *rs = buf + f.body_len + 1 + strlen(f.id) + 1;
            if (f.reason != NULL) {
                size_t rl = redq__pct_decode(f.reason, f.reason_len, rs);
                m->reason = rs;
                rs += rl + 1;
            } else {
                m->reason = "";
            }
            if (f.queue != NULL) {
                redq__pct_decode(f.queue, f.queue_len, rs);
                m->queue = rs;
            }
        }
    } else {
        memcpy(buf, v, len);
        buf[len] = '\0';
        m->data = buf;
        m->len = len;
        m->id = buf + len; /* "" */
        if (dead)
            m->reason = "";
    }
    r->nmsgs++;
    return 0;
}

static int msgs_alloc(areq *r, size_t n)
{
    r->msgs = calloc(n ? n : 1, sizeof *r->msgs);
    r->bufs = calloc(n ? n : 1, sizeof *r->bufs);
    return r->msgs && r->bufs ? 0 : REDQ_ENOMEM;
}

static void on_peek(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    size_t k, j, total;
    (void)c;
    if (!redq__adm_reply_ok(r, rep, "peek"))
        goto out;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 3 ||
        rep->element[0]->type != REDIS_REPLY_ARRAY ||
        rep->element[1]->type != REDIS_REPLY_ARRAY ||
        rep->element[2]->type != REDIS_REPLY_INTEGER) {
        redq__adm_fail(r, REDQ_EPROTOCOL, "peek: unexpected reply");
        goto out;
    }
    total = rep->element[0]->elements + rep->element[1]->elements;
    if (msgs_alloc(r, total) != 0) {
        redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
        goto out;
    }
    /* Both lists are taken from the right: the next one is the last. */
    for (k = 0; k < 2; k++) {
        redisReply *l = rep->element[k];
        for (j = l->elements; j-- > 0;) {
            redisReply *e = l->element[j];
            if (e->type != REDIS_REPLY_STRING)
                continue;
            /* Q's values are frames on a frames queue (those that parse:
             * a plain client's value is shown whole). */
            if (add_msg(r, e->str, (size_t)e->len,
                        k == 0 || rep->element[2]->integer == 1, 0) != 0) {
                redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
                goto out;
            }
        }
    }
out:
    redq__adm_settle(r);
}

static void on_dead(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    size_t j;
    (void)c;
    if (!redq__adm_reply_ok(r, rep, "listing dead letters"))
        goto out;
    if (rep->type != REDIS_REPLY_ARRAY) {
        redq__adm_fail(r, REDQ_EPROTOCOL, "listing dead letters: unexpected reply");
        goto out;
    }
    if (msgs_alloc(r, rep->elements) != 0) {
        redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
        goto out;
    }
    for (j = 0; j < rep->elements; j++) {
        redisReply *e = rep->element[j];
        if (e->type == REDIS_REPLY_STRING &&
            add_msg(r, e->str, (size_t)e->len, 1, 1) != 0) {
            redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
            break;
        }
    }
out:
    redq__adm_settle(r);
}

/* ---- dead-letter actions ------------------------------------------------ */

static void send_deadrequeue(areq *r);

static void on_deadrequeue(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    (void)c;
    if (redq__adm_reply_ok(r, rep, "requeue")) {
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
            long long moved = reply_ll(rep->element[0]);
            long long left = reply_ll(rep->element[1]);
            if (moved > 0) {
                r->n += (uint64_t)moved;
                r->count -= (size_t)moved < r->count ? (size_t)moved
                                                     : r->count;
            }
            if (moved > 0 && left > 0 && r->count > 0)
                send_deadrequeue(r);
        } else {
            redq__adm_fail(r, REDQ_EPROTOCOL, "requeue: unexpected reply");
        }
    }
    redq__adm_settle(r);
}

static void send_deadrequeue(areq *r)
{
    char *dead = redq__adm_qkey(r, r->queue, r->qlen, "dead");
    char *due = redq__adm_qkey(r, r->queue, r->qlen, "due");
    char nb[24];
    if (dead != NULL && due != NULL) {
        const char *argv[] = {"EVALSHA", r->a->scripts.sha[REDQ__SCRIPT_DEADREQUEUE],
                              "2", dead, due, nb};
        snprintf(nb, sizeof nb, "%zu",
                 r->count < REQUEUE_BATCH ? r->count : (size_t)REQUEUE_BATCH);
        redq__adm_send_cmd(r, REDQ__SCRIPT_DEADREQUEUE, 6, argv, NULL, on_deadrequeue,
                 redq__adm_ref_new(r, 0));
    }
    free(dead);
    free(due);
}

static void on_deadlen(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    (void)c;
    if (redq__adm_reply_ok(r, rep, "counting dead letters")) {
        long long n = rep->type == REDIS_REPLY_INTEGER ? rep->integer : 0;
        r->count = n > 0 ? (size_t)n : 0;
        if (r->count > 0)
            send_deadrequeue(r);
    }
    redq__adm_settle(r);
}

static void send_deadone(areq *r);

static void on_deadone(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    (void)c;
    if (redq__adm_reply_ok(r, rep, r->kind == K_REQUEUE_ID ? "requeue" : "delete")) {
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
            r->n = reply_ll(rep->element[0]) == 1;
            r->offset_ll = reply_ll(rep->element[1]);
            if (r->n == 0 && r->offset_ll > 0)
                send_deadone(r);
        } else {
            redq__adm_fail(r, REDQ_EPROTOCOL, "unexpected reply");
        }
    }
    redq__adm_settle(r);
}

static void send_deadone(areq *r)
{
    char *dead = redq__adm_qkey(r, r->queue, r->qlen, "dead");
    char *due = redq__adm_qkey(r, r->queue, r->qlen, "due");
    char from[24], lim[24];
    if (dead != NULL && due != NULL) {
        const char *argv[] = {"EVALSHA", r->a->scripts.sha[REDQ__SCRIPT_DEADONE],
                              "2", dead, due,
                              r->kind == K_REQUEUE_ID ? "requeue" : "delete",
                              r->arg, from, lim};
        snprintf(from, sizeof from, "%lld", r->offset_ll);
        snprintf(lim, sizeof lim, "%d", DEADONE_SCAN);
        redq__adm_send_cmd(r, REDQ__SCRIPT_DEADONE, 9, argv, NULL, on_deadone,
                 redq__adm_ref_new(r, 0));
    }
    free(dead);
    free(due);
}

static void on_count(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    (void)c;
    if (redq__adm_reply_ok(r, rep, r->kind == K_PURGE ? "purge" : "pause"))
        r->n = r->kind == K_PAUSE ? 1
               : rep->type == REDIS_REPLY_INTEGER && rep->integer > 0
                   ? (uint64_t)rep->integer
                   : 0;
    redq__adm_settle(r);
}

/* SETFORMAT's {1 changed / 0 already so / -1 refused, ready length}. */
static void on_setformat(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    (void)c;
    if (redq__adm_reply_ok(r, rep, "set format")) {
        if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
            rep->element[0]->type != REDIS_REPLY_INTEGER)
            redq__adm_fail(r, REDQ_EPROTOCOL, "set format: unexpected reply");
        else if (rep->element[0]->integer < 0)
            redq__adm_fail(r, REDQ_ENOTEMPTY,
                 "queue %.100s: its ready list holds %lld frames; it can "
                 "become plain only when empty (consumers unwrap them "
                 "meanwhile)",
                 r->queue, reply_ll(rep->element[1]));
        else
            r->n = (uint64_t)rep->element[0]->integer;
    }
    redq__adm_settle(r);
}

/* ---- recover ------------------------------------------------------------ */

static void send_reap(areq *r, const char *h);

static void on_reap(redq__conn *c, void *reply, void *arg)
{
    char h[48];
    areq *r = redq__adm_reply_begin(arg, NULL, h);
    redisReply *rep = reply;
    (void)c;
    if (redq__adm_reply_ok(r, rep, "recover")) {
        if (rep->type == REDIS_REPLY_ARRAY && rep->elements == 3) {
            long long moved = reply_ll(rep->element[0]);
            if (moved > 0)
                r->n += (uint64_t)moved;
            /* Bounded per call: go on while it says more remain. */
            if (reply_ll(rep->element[2]) == 1 && moved > 0)
                send_reap(r, h);
        } else {
            redq__adm_fail(r, REDQ_EPROTOCOL, "recover: unexpected reply");
        }
    }
    redq__adm_settle(r);
}

static void send_reap(areq *r, const char *h)
{
    static const char *const fixed[] = {"due", "dead", "consumers"};
    static const char *const pre[] = {"proc:", "fproc:", "hb:"};
    char *keys[7] = {0};
    char sfx[48], maxa[24], prefix[48], *qenc;
    size_t k, n = 0;
    static const char hex[] = "0123456789ABCDEF";

    qenc = malloc(3 * r->qlen + 1);
    for (k = 0; k < 3; k++)
        keys[k] = redq__adm_qkey(r, r->queue, r->qlen, fixed[k]);
    for (k = 0; k < 3; k++) {
        snprintf(sfx, sizeof sfx, "%s%s", pre[k], h);
        keys[3 + k] = redq__adm_qkey(r, r->queue, r->qlen, sfx);
    }
    keys[6] = redq__adm_qkey(r, r->queue, r->qlen, "meta");
    if (qenc == NULL)
        redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
    if (r->status == 0) {
        /* "q=" of the dead letters it may make, encoded as lib/frame.c
         * and lib/reliable.c encode values. */
        for (k = 0; k < r->qlen; k++) {
            unsigned char ch = (unsigned char)r->queue[k];
            if (ch > 0x20 && ch < 0x7f && ch != '%') {
                qenc[n++] = (char)ch;
            } else {
                qenc[n++] = '%';
                qenc[n++] = hex[ch >> 4];
                qenc[n++] = hex[ch & 15];
            }
        }
        qenc[n] = '\0';
        snprintf(maxa, sizeof maxa, "%d", r->a->max_attempts);
        snprintf(prefix, sizeof prefix, "%s.r", h);
        {
            const char *argv[] = {"EVALSHA", r->a->scripts.sha[REDQ__SCRIPT_REAP],
                                  "7", keys[0], keys[1], keys[2], keys[3],
                                  keys[4], keys[5], keys[6], h, maxa, "256",
                                  prefix, qenc};
            aref *f = redq__adm_ref_new(r, 0);
            if (f != NULL)
                snprintf(f->holder, sizeof f->holder, "%s", h);
            redq__adm_send_cmd(r, REDQ__SCRIPT_REAP, 15, argv, NULL, on_reap, f);
        }
    }
    for (k = 0; k < 7; k++)
        free(keys[k]);
    free(qenc);
}

static void on_recover_members(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    size_t k;
    (void)c;
    /* REAP leaves a holder that still beats alone, so every registered
     * holder can be asked: no lock, no scan first. */
    if (redq__adm_reply_ok(r, rep, "listing consumers") &&
        (rep->type == REDIS_REPLY_ARRAY))
        for (k = 0; k < rep->elements && k < MAX_HOLDERS && r->status == 0;
             k++) {
            redisReply *e = rep->element[k];
            char h[48];
            if (e->type != REDIS_REPLY_STRING ||
                !valid_holder(e->str, (size_t)e->len))
                continue;
            snprintf(h, sizeof h, "%.*s", (int)e->len, e->str);
            send_reap(r, h);
        }
    redq__adm_settle(r);
}

/* ---- orphaned processing lists ------------------------------------------ */

/*
 * A processing list is named after its holder, and the holder is found by
 * reapers only through the consumers set. A list whose holder left the set
 * (the set deleted or rewritten by hand, keys restored without it) is seen
 * by nobody: only a walk of the keyspace finds it. The walk is SCAN pages
 * of ORPHAN_SCAN_COUNT keys, one round trip each, so that the server is
 * never blocked for long and other requests interleave; the candidates are
 * then checked with SISMEMBER and LLEN, pipelined.
 */

/* A holder id exactly as consumers make them (lib/reliable.c: the consumer
 * id in hex, a dot, the connection's index). Stricter than valid_holder(),
 * which reads the consumers set: here a key that merely ends like a
 * processing list (the dead list of a queue named "{a}:proc" is
 * "{a}:proc:dead", and "dead" is hex) must not be taken for one. */
static int strict_holder(const char *s, size_t len)
{
    size_t i = 0, dig;
    if (len == 0 || len > 32)
        return 0;
    while (i < len && ((s[i] >= '0' && s[i] <= '9') ||
                       (s[i] >= 'a' && s[i] <= 'f')))
        i++;
    if (i == 0 || i == len || s[i++] != '.')
        return 0;
    dig = i;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    return i == len && i > dig;
}

/* The holder in `key` when it is "<prefix>proc:<h>" or "<prefix>fproc:<h>"
 * of r's queue, else NULL. */
static const char *proc_holder(const areq *r, const char *key, size_t len,
                               size_t *hlen)
{
    size_t plen = strlen(r->prefix), n, k;
    const char *t;
    if (len <= plen || memcmp(key, r->prefix, plen) != 0)
        return NULL;
    t = key + plen;
    n = len - plen;
    if (n > 5 && memcmp(t, "proc:", 5) == 0)
        k = 5;
    else if (n > 6 && memcmp(t, "fproc:", 6) == 0)
        k = 6;
    else
        return NULL;
    if (!strict_holder(t + k, n - k))
        return NULL;
    *hlen = n - k;
    return t + k;
}

/* `s` with the characters special to Redis's glob (* ? [ ] \) escaped,
 * then `tail` as it is: a queue name may hold any of them. */
static char *glob_escape(const char *s, const char *tail)
{
    size_t n = strlen(s), i, o = 0;
    char *out = malloc(2 * n + strlen(tail) + 1);
    if (out == NULL)
        return NULL;
    for (i = 0; i < n; i++) {
        if (strchr("*?[]\\", s[i]) != NULL)
            out[o++] = '\\';
        out[o++] = s[i];
    }
    strcpy(out + o, tail);
    return out;
}

/* Add a candidate (SCAN may return a key twice: once only). */
static int cand_add(areq *r, const char *key, size_t len, const char *h,
                    size_t hlen)
{
    orphan_cand *c;
    size_t i;
    for (i = 0; i < r->ncands; i++)
        if (r->cands[i].klen == len && memcmp(r->cands[i].key, key, len) == 0)
            return 0;
    if (r->ncands >= MAX_ORPHANS)
        return 0; /* bounded: the rest is for the next call */
    if (r->ncands == r->capcands) {
        size_t cap = r->capcands ? 2 * r->capcands : 8;
        orphan_cand *v = realloc(r->cands, cap * sizeof *v);
        if (v == NULL)
            return REDQ_ENOMEM;
        r->cands = v;
        r->capcands = cap;
    }
    c = &r->cands[r->ncands];
    memset(c, 0, sizeof *c);
    if ((c->key = malloc(len + 1)) == NULL)
        return REDQ_ENOMEM;
    memcpy(c->key, key, len);
    c->key[len] = '\0';
    c->klen = len;
    memcpy(c->holder, h, hlen); /* strict_holder: at most 32 bytes */
    c->holder[hlen] = '\0';
    c->member = -1;
    c->len = -1;
    r->ncands++;
    return 0;
}

static int cand_orphaned(const orphan_cand *c)
{
    return c->member == 0 && c->len > 0;
}

static void send_scan(areq *r)
{
    const char *argv[] = {"SCAN", r->cursor, "MATCH", r->pattern, "COUNT",
                          ORPHAN_SCAN_COUNT};
    redq__adm_send_cmd(r, -1, 6, argv, NULL, on_scan, redq__adm_ref_new(r, 0));
}

/* Every candidate is checked: recover the orphans' holders (once each). */
static void reap_orphans(areq *r)
{
    size_t i, j;
    for (i = 0; i < r->ncands && r->status == 0; i++) {
        int seen = 0;
        if (!cand_orphaned(&r->cands[i]))
            continue;
        for (j = 0; j < i && !seen; j++)
            seen = cand_orphaned(&r->cands[j]) &&
                   strcmp(r->cands[j].holder, r->cands[i].holder) == 0;
        /* REAP leaves a holder with a heartbeat alone, and SREM of a
         * holder not in the set does nothing: it fits orphans as is. */
        if (!seen)
            send_reap(r, r->cands[i].holder);
    }
}

static void on_check(redq__conn *c, void *reply, void *arg)
{
    size_t i;
    areq *r = redq__adm_reply_begin(arg, &i, NULL);
    redisReply *rep = reply;
    orphan_cand *o = &r->cands[i / 2];
    (void)c;
    r->checks--;
    if (rep != NULL && rep->type == REDIS_REPLY_ERROR && i % 2 == 1 &&
        strncmp(rep->str, "WRONGTYPE", 9) == 0) {
        /* Not a list: not redq's, whatever its name says. */
    } else if (redq__adm_reply_ok(r, rep, i % 2 ? o->key : "listing consumers") &&
               rep->type == REDIS_REPLY_INTEGER) {
        if (i % 2 == 0)
            o->member = rep->integer != 0;
        else
            o->len = rep->integer;
    }
    if (r->checks == 0 && r->status == 0 && r->kind == K_RECOVER_ORPHANS)
        reap_orphans(r);
    redq__adm_settle(r);
}

/* The walk is over: check each candidate's holder and length. */
static void send_checks(areq *r)
{
    char *ck = redq__adm_qkey(r, r->queue, r->qlen, "consumers");
    size_t i;
    if (ck == NULL)
        return;
    for (i = 0; i < r->ncands && r->status == 0; i++) {
        const char *ism[] = {"SISMEMBER", ck, r->cands[i].holder};
        const char *llen[] = {"LLEN", r->cands[i].key};
        size_t ll[] = {4, r->cands[i].klen};
        if (redq__adm_send_cmd(r, -1, 3, ism, NULL, on_check, redq__adm_ref_new(r, 2 * i)) != 0 ||
            redq__adm_send_cmd(r, -1, 2, llen, ll, on_check, redq__adm_ref_new(r, 2 * i + 1)) != 0)
            break;
        r->checks += 2;
    }
    free(ck);
}

static void on_scan(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply, *keys;
    size_t i;
    (void)c;
    if (!redq__adm_reply_ok(r, rep, "SCAN"))
        goto out;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2 ||
        rep->element[0]->type != REDIS_REPLY_STRING ||
        rep->element[1]->type != REDIS_REPLY_ARRAY ||
        (size_t)rep->element[0]->len >= sizeof r->cursor) {
        redq__adm_fail(r, REDQ_EPROTOCOL, "SCAN: unexpected reply");
        goto out;
    }
    memcpy(r->cursor, rep->element[0]->str, (size_t)rep->element[0]->len);
    r->cursor[rep->element[0]->len] = '\0';
    keys = rep->element[1];
    for (i = 0; i < keys->elements && r->status == 0; i++) {
        const redisReply *k = keys->element[i];
        const char *h;
        size_t hl;
        if (k->type == REDIS_REPLY_STRING &&
            (h = proc_holder(r, k->str, (size_t)k->len, &hl)) != NULL &&
            cand_add(r, k->str, (size_t)k->len, h, hl) != 0)
            redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
    }
    if (r->status != 0)
        goto out;
    if (strcmp(r->cursor, "0") != 0 && r->ncands < MAX_ORPHANS)
        send_scan(r);
    else
        send_checks(r);
out:
    redq__adm_settle(r);
}

static int orphan_cmp(const void *x, const void *y)
{
    const redq_orphan *a = x, *b = y;
    return strcmp(a->key, b->key);
}

/* K_ORPHANS' callback: the candidates that are orphans, by key. */
static void finish_orphans(areq *r, const char *es)
{
    static const redq_orphan none[1];
    redq_orphan *v = NULL;
    size_t i, n = 0;
    if (r->status == 0 && r->ncands > 0) {
        v = malloc(r->ncands * sizeof *v);
        if (v == NULL) {
            r->status = REDQ_ENOMEM;
            snprintf(r->errstr, sizeof r->errstr, "out of memory");
            es = r->errstr;
        }
        for (i = 0; v != NULL && i < r->ncands; i++)
            if (cand_orphaned(&r->cands[i])) {
                v[n].key = r->cands[i].key;
                v[n].holder = r->cands[i].holder;
                v[n].messages = (uint64_t)r->cands[i].len;
                n++;
            }
        if (n > 1)
            qsort(v, n, sizeof *v, orphan_cmp);
    }
    r->cb.orphans(r->a, r->status, es, v != NULL ? v : none,
                  r->status == 0 ? n : 0, r->user);
    free(v);
}

/* ---- metrics ------------------------------------------------------------ */

static void build_metrics(areq *r)
{
    redq_queue_info *v = malloc((r->nsnaps ? r->nsnaps : 1) * sizeof *v);
    size_t i;
    if (v == NULL) {
        redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
        return;
    }
    for (i = 0; i < r->nsnaps; i++)
        v[i] = r->snaps[i].info;
    if (redq__admin_metrics_text(v, r->nsnaps, &r->text, &r->textlen) != 0)
        redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
    free(v);
}

static void run(areq *r)
{
    redq_admin *a = r->a;
    r->started = 1;
    event_del(r->ev);
    switch (r->kind) {
    case K_QUEUES:
    case K_METRICS: {
        const char *argv[] = {"ZRANGE", REGISTRY_KEY, "0", "9999",
                              "WITHSCORES"};
        redq__adm_send_cmd(r, -1, 5, argv, NULL, on_registry, redq__adm_ref_new(r, 0));
        break;
    }
    case K_QUEUE: {
        const char *argv[] = {"ZSCORE", REGISTRY_KEY, r->queue};
        size_t lens[] = {6, sizeof REGISTRY_KEY - 1, r->qlen};
        if (redq__adm_send_cmd(r, -1, 3, argv, lens, on_score, redq__adm_ref_new(r, 0)) == 0)
            redq__adm_snap_begin(r, 0);
        break;
    }
    case K_PEEK: {
        char *due = redq__adm_qkey(r, r->queue, r->qlen, "due");
        char *meta = redq__adm_qkey(r, r->queue, r->qlen, "meta");
        char nb[24];
        if (due != NULL) {
            const char *argv[] = {"EVALSHA", a->scripts.sha[REDQ__SCRIPT_PEEK],
                                  "3", due, r->queue, meta, nb};
            size_t lens[] = {7, 40, 1, strlen(due), r->qlen, 0, 0};
            snprintf(nb, sizeof nb, "%zu", r->count);
            lens[5] = meta != NULL ? strlen(meta) : 0;
            lens[6] = strlen(nb);
            if (meta != NULL)
                redq__adm_send_cmd(r, REDQ__SCRIPT_PEEK, 7, argv, lens, on_peek,
                         redq__adm_ref_new(r, 0));
        }
        free(due);
        free(meta);
        break;
    }
    case K_SETFORMAT: {
        char *meta = redq__adm_qkey(r, r->queue, r->qlen, "meta");
        if (meta != NULL) {
            const char *argv[] = {"EVALSHA",
                                  a->scripts.sha[REDQ__SCRIPT_SETFORMAT], "2",
                                  r->queue, meta,
                                  r->paused ? "frames" : "plain"};
            size_t lens[] = {7, 40, 1, r->qlen, strlen(meta), 0};
            lens[5] = strlen(argv[5]);
            redq__adm_send_cmd(r, REDQ__SCRIPT_SETFORMAT, 6, argv, lens, on_setformat,
                     redq__adm_ref_new(r, 0));
        }
        free(meta);
        redq__adm_format_parts(r, r->paused); /* and its partitions', if any */
        break;
    }
    case K_DEAD: {
        char *dead = redq__adm_qkey(r, r->queue, r->qlen, "dead");
        char from[24], to[24];
        if (dead != NULL) {
            const char *argv[] = {"LRANGE", dead, from, to};
            snprintf(from, sizeof from, "%zu", r->offset);
            snprintf(to, sizeof to, "%zu", r->offset + r->count - 1);
            redq__adm_send_cmd(r, -1, 4, argv, NULL, on_dead, redq__adm_ref_new(r, 0));
        }
        free(dead);
        break;
    }
    case K_REQUEUE:
        if (r->count == SIZE_MAX) {
            /* "All there are when it starts": later arrivals stay. */
            char *dead = redq__adm_qkey(r, r->queue, r->qlen, "dead");
            if (dead != NULL) {
                const char *argv[] = {"LLEN", dead};
                redq__adm_send_cmd(r, -1, 2, argv, NULL, on_deadlen, redq__adm_ref_new(r, 0));
            }
            free(dead);
        } else {
            send_deadrequeue(r);
        }
        break;
    case K_REQUEUE_ID:
    case K_DELETE_ID:
        send_deadone(r);
        break;
    case K_PURGE: {
        char *dead = redq__adm_qkey(r, r->queue, r->qlen, "dead");
        if (dead != NULL) {
            const char *argv[] = {"EVALSHA", a->scripts.sha[REDQ__SCRIPT_PURGE],
                                  "1", dead};
            redq__adm_send_cmd(r, REDQ__SCRIPT_PURGE, 4, argv, NULL, on_count,
                     redq__adm_ref_new(r, 0));
        }
        free(dead);
        break;
    }
    case K_PAUSE: {
        char *meta = redq__adm_qkey(r, r->queue, r->qlen, "meta");
        if (meta != NULL) {
            const char *on[] = {"HSET", meta, "paused", "1"};
            const char *off[] = {"HDEL", meta, "paused"};
            if (r->paused)
                redq__adm_send_cmd(r, -1, 4, on, NULL, on_count, redq__adm_ref_new(r, 0));
            else
                redq__adm_send_cmd(r, -1, 3, off, NULL, on_count, redq__adm_ref_new(r, 0));
        }
        free(meta);
        redq__adm_pause_parts(r); /* and its partitions', if any */
        break;
    }
    case K_ORPHANS:
    case K_RECOVER_ORPHANS:
        if ((r->prefix = redq__adm_qkey(r, r->queue, r->qlen, "")) == NULL)
            break;
        if ((r->pattern = glob_escape(r->prefix, "*proc:*")) == NULL) {
            redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
            break;
        }
        strcpy(r->cursor, "0");
        send_scan(r);
        break;
    case K_PARTS:
        redq__adm_snap_begin(r, 0);
        break;
    case K_SETPARTS:
        redq__adm_setparts_read(r);
        break;
    case K_RECOVER: {
        char *ck = redq__adm_qkey(r, r->queue, r->qlen, "consumers");
        if (ck != NULL) {
            const char *argv[] = {"SMEMBERS", ck};
            redq__adm_send_cmd(r, -1, 2, argv, NULL, on_recover_members, redq__adm_ref_new(r, 0));
        }
        free(ck);
        break;
    }
    }
    redq__adm_settle(r);
}

static void on_up(redq__conn *c, void *arg)
{
    redq_admin *a = arg;
    areq *r;
    (void)c;
    for (r = a->head; r != NULL; r = r->next)
        if (!r->started && !r->finishing)
            run(r);
}

static void on_down(redq__conn *c, int code, const char *msg, void *arg)
{
    (void)c;
    (void)code;
    (void)msg;
    (void)arg;
}

/* The common part of every call: check, copy, queue, start. */
int redq__adm_submit(redq_admin *a, int kind, const char *queue, int has_cb,
                  void *user, areq **out)
{
    areq *r;
    size_t ql = 0;
    if (a == NULL || !has_cb)
        return REDQ_EINVAL;
    if (a->closing)
        return REDQ_ECLOSED;
    if (kind != K_QUEUES && kind != K_METRICS) {
        if (queue == NULL)
            return REDQ_EINVAL;
        ql = strlen(queue);
        if (ql == 0 || ql > REDQ__MAX_QUEUE_NAME)
            return REDQ_EINVAL;
    }
    r = calloc(1, sizeof *r);
    if (r == NULL)
        return REDQ_ENOMEM;
    r->a = a;
    r->kind = kind;
    r->user = user;
    r->ev = event_new(a->base, -1, 0, req_ev_cb, r);
    if (queue != NULL) {
        r->queue = malloc(ql + 1);
        if (r->queue != NULL)
            memcpy(r->queue, queue, ql + 1);
        r->qlen = ql;
    }
    if (r->ev == NULL || (queue != NULL && r->queue == NULL) ||
        ((kind == K_QUEUE || kind == K_PARTS) &&
         redq__adm_snap_add(r, queue, ql, -1) != 0)) {
        req_free(r);
        return REDQ_ENOMEM;
    }
    r->next = a->head;
    if (a->head != NULL)
        a->head->prev = r;
    a->head = r;
    *out = r;
    return 0;
}

/* Start r now if the connection is ready, else when it is (bounded). */
int redq__adm_launch(areq *r)
{
    redq_admin *a = r->a;
    /* A router takes commands before its map is known: they wait in it,
     * each within its own deadline. */
    if (a->cl != NULL || redq__conn_ready(a->conn)) {
        run(r);
    } else {
        struct timeval tv;
        tv.tv_sec = a->wait_ms / 1000;
        tv.tv_usec = (a->wait_ms % 1000) * 1000;
        event_add(r->ev, &tv);
    }
    return 0;
}

/* ---- the API ------------------------------------------------------------ */

int redq_admin_new(redq_admin **out, struct event_base *base,
                   const redq_admin_options *caller_opts)
{
    redq_admin *a;
    redq__url url;
    redq__logger lg;
    redq__conn_config cfg;
    redq__options full;
    int rc;

    if (caller_opts == NULL)
        return REDQ_EINVAL;
    rc = redq__options_prepare_admin(caller_opts, &full, &url, &lg);
    if (rc != 0)
        return rc;
    if (out == NULL || base == NULL) {
        redq__url_free(&url);
        return redq__new_failed(&full, &lg, REDQ_EINVAL,
                                "redq_admin_new: %s is NULL",
                                out == NULL ? "out" : "base");
    }
    a = calloc(1, sizeof *a);
    if (a == NULL) {
        redq__url_free(&url);
        return redq__new_failed(&full, &lg, REDQ_ENOMEM,
                                "redq_admin_new: out of memory");
    }
    a->base = base;
    a->log = lg;
    a->wait_ms = full.connect_timeout_ms + full.command_timeout_ms;
    a->max_attempts = full.max_attempts;
    redq__scripts_init(&a->scripts);
    redq__conn_config_init(&cfg, &full, &url, &a->log);
    cfg.load_scripts = 0; /* each script loads on its first use */
    if (url.is_cluster)
        rc = redq__cluster_new(&a->cl, base, &cfg);
    else
        rc = redq__conn_new(&a->conn, base, &cfg, on_up, on_down, a);
    redq__url_free(&url);
    if (rc == 0 &&
        (a->ev_close = event_new(base, -1, 0, NULL, NULL)) == NULL)
        rc = REDQ_ENOMEM;
    if (rc != 0) {
        if (a->conn != NULL)
            redq__conn_free(a->conn);
        redq__cluster_free(a->cl);
        free(a);
        return redq__new_failed(&full, &lg, rc, "redq_admin_new: %s",
                                redq_strerror(rc));
    }
    if (a->cl != NULL)
        redq__cluster_start(a->cl);
    else
        redq__conn_start(a->conn);
    *out = a;
    return 0;
}

static void close_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_admin *a = arg;
    redq__conn *conn = a->conn;
    areq *r, *next;
    (void)fd;
    (void)what;
    /* Replies still awaited come back NULL now: those requests fail with
     * REDQ_ECLOSED (reply_ok) and finish from their events. */
    a->conn = NULL;
    redq__conn_free(conn);
    if (a->cl != NULL) {
        redq__cluster *cl = a->cl;
        a->cl = NULL; /* (its callbacks see the handle closing) */
        redq__cluster_free(cl);
    }
    for (r = a->head; r != NULL; r = next) {
        next = r->next;
        if (!r->started && !r->finishing) {
            r->started = 1;
            redq__adm_fail(r, REDQ_ECLOSED, "admin handle closed");
            redq__adm_settle(r);
        }
    }
    maybe_closed(a);
}

int redq_admin_close(redq_admin *a, redq_close_cb cb, void *user)
{
    if (a == NULL)
        return REDQ_EINVAL;
    if (a->closing)
        return REDQ_ECLOSED;
    a->closing = 1;
    a->close_cb = cb;
    a->close_user = user;
    event_assign(a->ev_close, a->base, -1, 0, close_cb, a);
    event_active(a->ev_close, EV_TIMEOUT, 0);
    return 0;
}

int redq_admin_queues(redq_admin *a, redq_queues_cb cb, void *user)
{
    areq *r;
    int rc = redq__adm_submit(a, K_QUEUES, NULL, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.queues = cb;
    return redq__adm_launch(r);
}

int redq_admin_queue(redq_admin *a, const char *queue, redq_queues_cb cb,
                     void *user)
{
    areq *r;
    int rc = redq__adm_submit(a, K_QUEUE, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.queues = cb;
    return redq__adm_launch(r);
}

int redq_admin_peek(redq_admin *a, const char *queue, size_t count,
                    redq_msgs_cb cb, void *user)
{
    areq *r;
    int rc = redq__adm_submit(a, K_PEEK, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.msgs = cb;
    r->count = count < MAX_LIST ? count : MAX_LIST;
    if (r->count == 0) {
        redq__adm_settle(r); /* nothing to ask */
        return 0;
    }
    return redq__adm_launch(r);
}

int redq_admin_dead(redq_admin *a, const char *queue, size_t offset,
                    size_t count, redq_msgs_cb cb, void *user)
{
    areq *r;
    int rc;
    if (offset > (size_t)1 << 40)
        return REDQ_EINVAL;
    rc = redq__adm_submit(a, K_DEAD, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.msgs = cb;
    r->offset = offset;
    r->count = count < MAX_LIST ? count : MAX_LIST;
    if (r->count == 0) {
        redq__adm_settle(r);
        return 0;
    }
    return redq__adm_launch(r);
}

int redq_admin_requeue(redq_admin *a, const char *queue, size_t count,
                       redq_done_cb cb, void *user)
{
    areq *r;
    int rc = redq__adm_submit(a, K_REQUEUE, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.done = cb;
    r->count = count;
    if (count == 0) {
        redq__adm_settle(r);
        return 0;
    }
    return redq__adm_launch(r);
}

/* The id as frames store it: percent-encoded like lib/frame.c does. */
static int id_call(redq_admin *a, int kind, const char *queue, const char *id,
                   redq_done_cb cb, void *user)
{
    areq *r;
    size_t il;
    int rc;
    if (id == NULL || (il = strlen(id)) == 0 || il > 64)
        return REDQ_EINVAL;
    rc = redq__adm_submit(a, kind, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.done = cb;
    r->arg = malloc(3 * il + 1);
    if (r->arg == NULL) {
        if (r->prev != NULL)
            r->prev->next = r->next;
        else
            a->head = r->next;
        if (r->next != NULL)
            r->next->prev = r->prev;
        req_free(r);
        return REDQ_ENOMEM;
    }
    r->arg[redq__pct_encode(r->arg, id, il)] = '\0';
    return redq__adm_launch(r);
}

int redq_admin_requeue_id(redq_admin *a, const char *queue, const char *id,
                          redq_done_cb cb, void *user)
{
    return id_call(a, K_REQUEUE_ID, queue, id, cb, user);
}

int redq_admin_delete_dead(redq_admin *a, const char *queue, const char *id,
                           redq_done_cb cb, void *user)
{
    return id_call(a, K_DELETE_ID, queue, id, cb, user);
}

int redq_admin_purge(redq_admin *a, const char *queue, redq_done_cb cb,
                     void *user)
{
    areq *r;
    int rc = redq__adm_submit(a, K_PURGE, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.done = cb;
    return redq__adm_launch(r);
}

int redq_admin_pause(redq_admin *a, const char *queue, int paused,
                     redq_done_cb cb, void *user)
{
    areq *r;
    int rc = redq__adm_submit(a, K_PAUSE, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.done = cb;
    r->paused = paused != 0;
    return redq__adm_launch(r);
}

int redq_admin_set_format(redq_admin *a, const char *queue, int format,
                          redq_done_cb cb, void *user)
{
    areq *r;
    int rc;
    if (format != REDQ_FORMAT_PLAIN && format != REDQ_FORMAT_FRAMES)
        return REDQ_EINVAL;
    rc = redq__adm_submit(a, K_SETFORMAT, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.done = cb;
    r->paused = format == REDQ_FORMAT_FRAMES; /* (the request's flag) */
    return redq__adm_launch(r);
}

int redq_admin_recover(redq_admin *a, const char *queue, redq_done_cb cb,
                       void *user)
{
    areq *r;
    int rc = redq__adm_submit(a, K_RECOVER, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.done = cb;
    return redq__adm_launch(r);
}

int redq_admin_metrics(redq_admin *a, redq_text_cb cb, void *user)
{
    areq *r;
    int rc = redq__adm_submit(a, K_METRICS, NULL, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.text = cb;
    return redq__adm_launch(r);
}

int redq_admin_orphans(redq_admin *a, const char *queue, redq_orphans_cb cb,
                       void *user)
{
    areq *r;
    int rc = redq__adm_submit(a, K_ORPHANS, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.orphans = cb;
    return redq__adm_launch(r);
}

int redq_admin_recover_orphans(redq_admin *a, const char *queue,
                               redq_done_cb cb, void *user)
{
    areq *r;
    int rc = redq__adm_submit(a, K_RECOVER_ORPHANS, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.done = cb;
    return redq__adm_launch(r);
}

