/*
 * The admin handle and partitioned queues (docs/DESIGN.md, "Partitioned
 * queues"): a logical queue's snapshot sums its partitions' (active and
 * retired), redq_admin_partitions lists them, redq_admin_set_partitions
 * changes their count with a compare-and-set on the queue's meta hash.
 * Names, fields and tag choice are lib/partition.c's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "admin_int.h"

/* Tries of redq_admin_set_partitions when another writer changes the
 * partitions between its read and its write. */
#define SETPARTS_TRIES 10

static void on_setparts_read(redq__conn *c, void *reply, void *arg);

/* The partition fields of queue snaps[i] are in: snapshot it and each of
 * its partitions >= 1 (retired ones too: they hold messages until drained);
 * the numbers are summed into the queue's at the end (fold_parts). */
static void on_pmeta(redq__conn *c, void *reply, void *arg)
{
    size_t i, n0;
    areq *r = redq__adm_reply_begin(arg, &i, NULL);
    redisReply *rep = reply;
    redq__parts pt;
    unsigned k;
    (void)c;
    redq__parts_init(&pt);
    if (redq__adm_reply_ok(r, rep, "reading the partitions") &&
        rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
        (void)redq__parts_from_reply(&pt, rep->element[0], rep->element[1]);
    }
    if (r->status != 0)
        goto out;
    r->snaps[i].info.partitions = (int)pt.active;
    n0 = r->nsnaps;
    for (k = 1; k < pt.total; k++) {
        char *pn = redq__partition_name(r->snaps[i].name, r->snaps[i].len,
                                        pt.tag[k], k);
        if (pn == NULL || redq__adm_snap_add(r, pn, strlen(pn), -1) != 0) {
            free(pn);
            redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
            goto out;
        }
        free(pn);
        r->snaps[r->nsnaps - 1].parent = i + 1;
        r->snaps[r->nsnaps - 1].part = (int)k;
        r->snaps[r->nsnaps - 1].info.partitions = 1;
    }
    redq__adm_snap_start(r, i);
    for (; n0 < r->nsnaps && r->status == 0; n0++)
        redq__adm_snap_start(r, n0);
out:
    redq__adm_settle(r);
}

/* Snapshot queue snaps[i] and its partitions: HMGET of its partition
 * fields first. */
void redq__adm_snap_begin(areq *r, size_t i)
{
    qsnap *s = &r->snaps[i];
    char *meta = redq__adm_qkey(r, s->name, s->len, "meta");
    const char *argv[4];
    if (meta == NULL)
        return;
    argv[0] = "HMGET";
    argv[1] = meta;
    argv[2] = REDQ__META_PARTITIONS;
    argv[3] = REDQ__META_PTAGS;
    redq__adm_send_cmd(r, -1, 4, argv, NULL, on_pmeta, redq__adm_ref_new(r, i));
    free(meta);
}

/* A logical queue's numbers are the sums over its partitions (fields that
 * are one per queue, paused and format, stay partition 0's): fold the
 * partitions' snapshots into their queue's and drop them. */
void redq__adm_fold_parts(areq *r)
{
    size_t i, w = 0;
    for (i = 0; i < r->nsnaps; i++) {
        qsnap *s = &r->snaps[i];
        redq_queue_info *t, *q = &s->info;
        if (s->parent == 0)
            continue;
        t = &r->snaps[s->parent - 1].info;
        t->ready += q->ready;
        t->due += q->due;
        t->processing += q->processing;
        t->delayed += q->delayed;
        t->dead += q->dead;
        t->consumers += q->consumers;
        t->registered += q->registered;
        t->pushed += q->pushed;
        t->taken += q->taken;
        t->acked += q->acked;
        t->retried += q->retried;
        t->dead_lettered += q->dead_lettered;
        if (q->oldest_age_ms > t->oldest_age_ms)
            t->oldest_age_ms = q->oldest_age_ms;
    }
    for (i = 0; i < r->nsnaps; i++) {
        if (r->snaps[i].parent != 0) {
            free(r->snaps[i].name);
            continue;
        }
        r->snaps[w++] = r->snaps[i];
    }
    r->nsnaps = w;
    for (i = 0; i < w; i++)
        r->snaps[i].info.name = r->snaps[i].name;
}

/* K_PARTS' callback: every partition by index, with its slot and node. */
void redq__adm_finish_parts(areq *r, const char *es)
{
    static const redq_partition_info none[1];
    redq_partition_info *v = NULL;
    char (*nodes)[64] = NULL;
    size_t i, n = 0;
    if (r->status == 0 && r->nsnaps > 0) {
        v = calloc(r->nsnaps, sizeof *v);
        nodes = calloc(r->nsnaps, sizeof *nodes);
        if (v == NULL || nodes == NULL) {
            r->status = REDQ_ENOMEM;
            snprintf(r->errstr, sizeof r->errstr, "out of memory");
            es = r->errstr;
            free(v);
            v = NULL;
        }
        for (i = 0; v != NULL && i < r->nsnaps; i++) {
            const qsnap *s = &r->snaps[i];
            redq_partition_info *pi = &v[n++];
            pi->index = s->part;
            pi->name = s->name;
            pi->slot = (int)redq__key_slot(s->name, s->len);
            pi->node = NULL;
            if (r->a->cl != NULL &&
                redq__cluster_slot_owner(r->a->cl, (unsigned)pi->slot,
                                         nodes[i], sizeof nodes[i]) == 0)
                pi->node = nodes[i];
            pi->ready = s->info.ready;
            pi->processing = s->info.processing;
            pi->dead = s->info.dead;
            pi->retired = s->part >= r->snaps[0].info.partitions;
        }
    }
    r->cb.parts(r->a, r->status, es, v != NULL ? v : none,
                r->status == 0 ? n : 0, r->user);
    free(v);
    free(nodes);
}

/* ---- partitions --------------------------------------------------------- */

/* Compare-and-set of a queue's partition fields: written only if `ptags`
 * still holds what the client read (ARGV[1], "" for absent), so that two
 * admins raising P at once do not both append tags. Returns the previous
 * active count, or -1 (read again). Field names: lib/redq_private.h. */
static const char setparts_lua[] =
    "local cur = redis.call('HGET', KEYS[1], '" REDQ__META_PTAGS "') or ''\n"
    "if cur ~= ARGV[1] then return -1 end\n"
    "local old = tonumber(redis.call('HGET', KEYS[1], '"
    REDQ__META_PARTITIONS "') or '1') or 1\n"
    "redis.call('HSET', KEYS[1], '" REDQ__META_PARTITIONS "', ARGV[2])\n"
    "if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], '" REDQ__META_PTAGS
    "', ARGV[3]) end\n"
    "return old\n";

static int owner_of(const void *arg, unsigned slot, char *buf, size_t len)
{
    return redq__cluster_slot_owner(arg, slot, buf, len);
}

static void on_setparts_write(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    (void)c;
    if (redq__adm_reply_ok(r, rep, "setting the partitions") &&
        rep->type == REDIS_REPLY_INTEGER) {
        if (rep->integer >= 0) {
            r->n = (uint64_t)rep->integer;
            /* New partitions of a frames queue are frames partitions. */
            redq__adm_format_parts(r, -1);
        } else if (++r->offset_ll < SETPARTS_TRIES)
            redq__adm_setparts_read(r); /* changed meanwhile: again */
        else
            redq__adm_fail(r, REDQ_ESERVER, "the partitions of %.200s keep changing",
                 r->queue);
    }
    redq__adm_settle(r);
}

static void on_setparts_read(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    redq__parts pt;
    char *meta = NULL, tags[REDQ__MAX_PARTITIONS * REDQ__PTAG_MAX], pbuf[16];
    const char *old = "";
    size_t oldlen = 0;
    (void)c;
    if (!redq__adm_reply_ok(r, rep, "reading the partitions") || r->status != 0)
        goto out;
    if (rep->type != REDIS_REPLY_ARRAY || rep->elements != 2) {
        redq__adm_fail(r, REDQ_EPROTOCOL, "reading the partitions: unexpected reply");
        goto out;
    }
    redq__parts_init(&pt);
    if (rep->element[1]->type == REDIS_REPLY_STRING) {
        old = rep->element[1]->str;
        oldlen = (size_t)rep->element[1]->len;
    }
    (void)redq__parts_from_reply(&pt, rep->element[0], rep->element[1]);
    if (redq__parts_grow(&pt, r->queue, r->qlen, (unsigned)r->count,
                         r->a->cl != NULL ? owner_of : NULL, r->a->cl) != 0) {
        redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
        goto out;
    }
    redq__parts_tags_string(&pt, tags);
    snprintf(pbuf, sizeof pbuf, "%zu", r->count);
    if ((meta = redq__adm_qkey(r, r->queue, r->qlen, "meta")) != NULL) {
        const char *argv[] = {"EVAL", setparts_lua, "1", meta, old, pbuf,
                              tags};
        size_t lens[] = {4, sizeof setparts_lua - 1, 1, strlen(meta), oldlen,
                         strlen(pbuf), strlen(tags)};
        redq__adm_send_cmd(r, -1, 7, argv, lens, on_setparts_write, redq__adm_ref_new(r, 0));
    }
out:
    free(meta);
    redq__adm_settle(r);
}

void redq__adm_setparts_read(areq *r)
{
    char *meta = redq__adm_qkey(r, r->queue, r->qlen, "meta");
    if (meta != NULL) {
        const char *argv[] = {"HMGET", meta, REDQ__META_PARTITIONS,
                              REDQ__META_PTAGS};
        redq__adm_send_cmd(r, -1, 4, argv, NULL, on_setparts_read, redq__adm_ref_new(r, 0));
    }
    free(meta);
}


int redq_admin_set_partitions(redq_admin *a, const char *queue,
                              int partitions, redq_done_cb cb, void *user)
{
    areq *r;
    int rc;
    if (partitions < 1 || partitions > REDQ__MAX_PARTITIONS)
        return REDQ_EINVAL;
    rc = redq__adm_submit(a, K_SETPARTS, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.done = cb;
    r->count = (size_t)partitions;
    return redq__adm_launch(r);
}

int redq_admin_partitions(redq_admin *a, const char *queue,
                          redq_partitions_cb cb, void *user)
{
    areq *r;
    int rc = redq__adm_submit(a, K_PARTS, queue, cb != NULL, user, &r);
    if (rc != 0)
        return rc;
    r->cb.parts = cb;
    return redq__adm_launch(r);
}

/* ---- pause ---------------------------------------------------------------- */

static void on_part_paused(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    (void)c;
    (void)redq__adm_reply_ok(r, reply, "pausing a partition");
    redq__adm_settle(r);
}

static void on_pause_pmeta(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    redq__parts pt;
    unsigned k;
    (void)c;
    redq__parts_init(&pt);
    if (redq__adm_reply_ok(r, rep, "reading the partitions") &&
        rep->type == REDIS_REPLY_ARRAY && rep->elements == 2) {
        (void)redq__parts_from_reply(&pt, rep->element[0], rep->element[1]);
    }
    /* Every partition ever made: a retired one is still consumed. */
    for (k = 1; k < pt.total && r->status == 0; k++) {
        char *pn = redq__partition_name(r->queue, r->qlen, pt.tag[k], k);
        char *meta = pn ? redq__adm_qkey(r, pn, strlen(pn), "meta") : NULL;
        if (meta != NULL) {
            const char *on[] = {"HSET", meta, "paused", "1"};
            const char *off[] = {"HDEL", meta, "paused"};
            redq__adm_send_cmd(r, -1, r->paused ? 4 : 3, r->paused ? on : off,
                               NULL, on_part_paused, redq__adm_ref_new(r, 0));
        } else if (pn == NULL) {
            redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
        }
        free(meta);
        free(pn);
    }
    redq__adm_settle(r);
}

void redq__adm_pause_parts(areq *r)
{
    char *meta = redq__adm_qkey(r, r->queue, r->qlen, "meta");
    if (meta != NULL) {
        const char *argv[] = {"HMGET", meta, REDQ__META_PARTITIONS,
                              REDQ__META_PTAGS};
        redq__adm_send_cmd(r, -1, 4, argv, NULL, on_pause_pmeta,
                           redq__adm_ref_new(r, 0));
    }
    free(meta);
}

/* ---- the format of a partitioned queue -------------------------------------- */

/*
 * A queue's format is checked where its messages are, by scripts that can
 * only read keys of their own slot (PUSH, TAKE on each partition): so every
 * partition's meta hash carries the format of the logical queue. Setting a
 * queue's format sets it on each of its partitions (retired ones too: they
 * are still consumed), and making partitions copies a frames queue's format
 * onto them. A partition refusing frames -> plain (its ready list holds
 * frames) fails the call with REDQ_ENOTEMPTY; the others keep the change.
 */
static void on_part_format(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    (void)c;
    if (redq__adm_reply_ok(r, rep, "setting a partition's format") &&
        rep->type == REDIS_REPLY_ARRAY && rep->elements == 2 &&
        rep->element[0]->type == REDIS_REPLY_INTEGER &&
        rep->element[0]->integer < 0)
        redq__adm_fail(r, REDQ_ENOTEMPTY,
                       "queue %.100s: a partition's ready list holds frames; "
                       "it can become plain only when empty",
                       r->queue);
    redq__adm_settle(r);
}

static void on_format_pmeta(redq__conn *c, void *reply, void *arg)
{
    areq *r = redq__adm_reply_begin(arg, NULL, NULL);
    redisReply *rep = reply;
    redq__parts pt;
    int frames;
    unsigned k;
    (void)c;
    redq__parts_init(&pt);
    if (!redq__adm_reply_ok(r, rep, "reading the partitions") ||
        rep->type != REDIS_REPLY_ARRAY || rep->elements != 3) {
        redq__adm_settle(r);
        return;
    }
    {
        const redisReply *fv = rep->element[0];
        (void)redq__parts_from_reply(&pt, rep->element[1], rep->element[2]);
        /* r->fmt_want: 1 frames, 0 plain (redq_admin_set_format), -1 the
         * queue's own, copied only when it is frames (new partitions). */
        frames = r->fmt_want >= 0
                     ? r->fmt_want
                     : fv->type == REDIS_REPLY_STRING &&
                           strcmp(fv->str, REDQ__FORMAT_FRAMES_VALUE) == 0;
    }
    if (r->fmt_want < 0 && !frames) {
        redq__adm_settle(r);
        return;
    }
    for (k = 1; k < pt.total && r->status == 0; k++) {
        char *pn = redq__partition_name(r->queue, r->qlen, pt.tag[k], k);
        char *meta = pn ? redq__adm_qkey(r, pn, strlen(pn), "meta") : NULL;
        if (meta != NULL) {
            const char *argv[] = {"EVALSHA",
                                  r->a->scripts.sha[REDQ__SCRIPT_SETFORMAT],
                                  "2", pn, meta,
                                  frames ? "frames" : "plain"};
            redq__adm_send_cmd(r, REDQ__SCRIPT_SETFORMAT, 6, argv, NULL,
                               on_part_format, redq__adm_ref_new(r, 0));
        } else {
            redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
        }
        free(meta);
        free(pn);
    }
    redq__adm_settle(r);
}

void redq__adm_format_parts(areq *r, int want)
{
    char *meta = redq__adm_qkey(r, r->queue, r->qlen, "meta");
    r->fmt_want = want;
    if (meta != NULL) {
        const char *argv[] = {"HMGET", meta, REDQ__META_FORMAT,
                              REDQ__META_PARTITIONS, REDQ__META_PTAGS};
        redq__adm_send_cmd(r, -1, 5, argv, NULL, on_format_pmeta,
                           redq__adm_ref_new(r, 0));
    } else {
        redq__adm_fail(r, REDQ_ENOMEM, "out of memory");
    }
    free(meta);
}
