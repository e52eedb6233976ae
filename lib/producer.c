/*
 * The batching producer.
 *
 * A message goes through three places (docs/DESIGN.md has the picture):
 *
 *   open batch     one per queue, found by name in a small hash map; the
 *                  message is appended as a RESP bulk string to the batch's
 *                  buffer, so sending the batch later copies nothing more.
 *   FIFO           sealed batches in seal order. Its prefix is in flight
 *                  (written, waiting for the reply); the rest waits for room
 *                  in the pipeline (max_inflight_batches) or a connection.
 *   report         when the reply to a batch arrives, each of its messages
 *                  gets its report, in order.
 *
 * A batch's buffer holds a complete `LPUSH queue m1 .. mN` command except
 * for the leading `*<N+2>\r\n`, for which room is reserved at the front and
 * which is written when the batch is sealed. Buffers, message tables and
 * batches themselves are recycled, so steady-state producing does no malloc.
 *
 * Delivery guarantees: a report says ok only after Redis answered the LPUSH
 * that carried the message. When the connection drops, hiredis hands every
 * in-flight batch a NULL reply (outcome unknown); those batches go back to
 * "unsent" where they are, and are resent from the head of the FIFO after
 * reconnecting, so per-queue order holds and nothing is lost, at the price
 * of possible duplicates (at-least-once).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "producer_int.h"


void redq__pr_pump(redq_producer *p);

/* ---- lists -------------------------------------------------------------- */

static void bl_append(blist *l, batch *b)
{
    b->next = NULL;
    b->prev = l->tail;
    if (l->tail != NULL)
        l->tail->next = b;
    else
        l->head = b;
    l->tail = b;
}

static void bl_remove(blist *l, batch *b)
{
    if (b->prev != NULL)
        b->prev->next = b->next;
    else
        l->head = b->next;
    if (b->next != NULL)
        b->next->prev = b->prev;
    else
        l->tail = b->prev;
    b->prev = b->next = NULL;
}

/* ---- batch memory ------------------------------------------------------- */

static void batch_destroy(batch *b)
{
    free(b->qname);
    free(b->buf);
    free(b->msgs);
    free(b->own);
    free(b);
}

static void batch_recycle(redq_producer *p, batch *b)
{
    /* Keep a few for reuse; let unusually big buffers go (one huge message
     * should not pin its memory for the producer's life). */
    if (p->nfree >= p->max_inflight + 8 ||
        b->cap > 2 * p->batch_max_bytes + HEADER_ROOM + 64) {
        batch_destroy(b);
        return;
    }
    b->next = p->free_list;
    p->free_list = b;
    p->nfree++;
}

static int ensure(char **buf, size_t *cap, size_t need)
{
    size_t ncap;
    char *n;
    if (need <= *cap)
        return 0;
    ncap = *cap ? *cap : 4096;
    while (ncap < need && ncap <= SIZE_MAX / 2)
        ncap *= 2;
    if (ncap < need)
        ncap = need; /* no power of two fits: exactly what is needed */
    n = realloc(*buf, ncap);
    if (n == NULL)
        return REDQ_ENOMEM;
    *buf = n;
    *cap = ncap;
    return 0;
}


static uint32_t hash_name(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

void redq__pr_learn_format(redq_producer *p, redq__qfmt *f);

/* A fresh open batch for `queue`: the command is started (LPUSH queue, or
 * EVALSHA <delay script> 1 queue:delayed), messages are appended after. */
static batch *batch_new(redq_producer *p, int kind, const char *queue,
                        size_t qlen, uint32_t hash)
{
    batch *b = p->free_list;
    char *w;

    if (b != NULL) {
        p->free_list = b->next;
        p->nfree--;
    } else {
        b = calloc(1, sizeof *b);
        if (b == NULL)
            return NULL;
    }
    /* The delayed zset's key is the queue's (lib/keys.c): at most the name
     * plus a tag of 6 digits, braces and the suffix. */
    if (ensure(&b->qname, &b->qcap, qlen + 1) != 0 ||
        ensure(&b->buf, &b->cap, HEADER_ROOM + 96 + 24 + 2 * qlen + 40) != 0) {
        batch_destroy(b);
        return NULL;
    }
    memcpy(b->qname, queue, qlen);
    b->qname[qlen] = '\0';
    b->qlen = qlen;
    b->owner = p;
    b->kind = kind;
    b->lname = b->qname;
    b->fmt = NULL;
    b->frames = 0;
    if (kind == B_LPUSH) {
        /* One lookup per batch: the queue's format, learnt on first use. */
        b->fmt = redq__qfmt_get(&p->fmts, queue, qlen, p);
        if (b->fmt == NULL) {
            batch_destroy(b);
            return NULL;
        }
        b->fmt->used = 1; /* its meta is read again at the next tick */
        b->frames = b->fmt->format == REDQ_FORMAT_FRAMES;
        /* Ask now, so the answer is usually in before the batch is
         * sealed (and ahead of anything the seal sends). */
        if (b->fmt->format < 0 && !b->fmt->learning &&
            redq__conn_ready(p->conn))
            redq__pr_learn_format(p, b->fmt);
    }
    b->hash = hash;
    b->state = B_OPEN;
    b->prev = b->next = b->hnext = NULL;
    b->n = 0;
    b->payload_bytes = 0;
    b->nown = 0;
    b->nsplice = 0;
    b->spliced_bytes = 0;
    b->sent_before = 0;
    b->unknown = 0;
    b->stored = 0;
    b->start = 0;

    w = b->buf + HEADER_ROOM;
    if (b->frames) {
        w = redq__pr_put_push_head(p, b, w);
    } else if (kind == B_LPUSH) {
        static const char pre[] = "$5\r\nLPUSH\r\n$";
        memcpy(w, pre, sizeof pre - 1);
        w += sizeof pre - 1;
        w += redq__pr_put_uint(w, qlen);
        *w++ = '\r';
        *w++ = '\n';
        memcpy(w, queue, qlen);
        w += qlen;
    } else {
        /* The delayed zset of the queue, in its slot (lib/keys.c). */
        static const char pre[] = "$7\r\nEVALSHA\r\n$40\r\n";
        static const char mid[] = "\r\n$1\r\n1\r\n$";
        char *key = redq__key(queue, qlen, "delayed");
        size_t klen;
        if (key == NULL) {
            batch_destroy(b);
            return NULL;
        }
        klen = strlen(key);
        memcpy(w, pre, sizeof pre - 1);
        w += sizeof pre - 1;
        memcpy(w, p->scripts.sha[REDQ__SCRIPT_DELAY], 40);
        w += 40;
        memcpy(w, mid, sizeof mid - 1);
        w += sizeof mid - 1;
        w += redq__pr_put_uint(w, klen);
        *w++ = '\r';
        *w++ = '\n';
        memcpy(w, key, klen);
        w += klen;
        free(key);
    }
    *w++ = '\r';
    *w++ = '\n';
    b->len = (size_t)(w - b->buf);
    return b;
}

/* ---- the open-batch map ------------------------------------------------- */

static int map_grow(redq_producer *p)
{
    size_t n = p->nbuckets ? p->nbuckets * 2 : 16, i;
    batch **nb = calloc(n, sizeof *nb);
    if (nb == NULL)
        return REDQ_ENOMEM;
    for (i = 0; i < p->nbuckets; i++) {
        batch *b = p->buckets[i];
        while (b != NULL) {
            batch *next = b->hnext;
            b->hnext = nb[b->hash & (n - 1)];
            nb[b->hash & (n - 1)] = b;
            b = next;
        }
    }
    free(p->buckets);
    p->buckets = nb;
    p->nbuckets = n;
    return 0;
}

static batch *map_find(redq_producer *p, int kind, const char *q,
                       size_t qlen, uint32_t hash)
{
    batch *b;
    if (p->nbuckets == 0)
        return NULL;
    for (b = p->buckets[hash & (p->nbuckets - 1)]; b != NULL; b = b->hnext)
        if (b->hash == hash && b->kind == kind && b->qlen == qlen &&
            memcmp(b->qname, q, qlen) == 0)
            return b;
    return NULL;
}

static void map_remove(redq_producer *p, batch *b)
{
    batch **pp = &p->buckets[b->hash & (p->nbuckets - 1)];
    while (*pp != b)
        pp = &(*pp)->hnext;
    *pp = b->hnext;
    b->hnext = NULL;
    bl_remove(&p->open, b);
    p->nopen--;
    if (p->last == b)
        p->last = NULL;
}

/* ---- sealing and sending ------------------------------------------------ */

/* Close an open batch to new messages, write its header and queue it. */
/* Write the command's "*<argc>\r\n" right-aligned into the reserved room. */
void redq__pr_put_argc(batch *b)
{
    char tmp[24];
    /* LPUSH q m1..mN, EVALSHA sha 2 q meta f1..fN, or EVALSHA sha 1 key
     * d1 e1 .. dN eN */
    size_t n = redq__pr_put_uint(tmp, b->frames           ? (uint64_t)b->n + 5
                             : b->kind == B_LPUSH ? (uint64_t)b->n + 2
                                                  : 2 * (uint64_t)b->n + 4);
    b->start = HEADER_ROOM - (n + 3);
    b->buf[b->start] = '*';
    memcpy(b->buf + b->start + 1, tmp, n);
    b->buf[HEADER_ROOM - 2] = '\r';
    b->buf[HEADER_ROOM - 1] = '\n';
}

static void seal(redq_producer *p, batch *b)
{
    map_remove(p, b);
    /* Once per batch: at most one ZADD a minute per queue, sent ahead of
     * the batch on the same connection. */
    if (!p->inner)
        redq__registry_touch(p->registry, p->conn, b->lname,
                             strlen(b->lname));
    redq__pr_put_argc(b);
    b->state = B_SEALED;
    bl_append(&p->fifo, b);
    if (p->next_unsent == NULL)
        p->next_unsent = b;
}

void redq__pr_seal_all(redq_producer *p)
{
    while (p->open.head != NULL)
        seal(p, p->open.head);
}

static void on_batch_reply(redq__conn *c, void *reply, void *arg);
static void on_wait_reply(redq__conn *c, void *reply, void *arg);
void redq__pr_learn_format(redq_producer *p, redq__qfmt *f);

/*
 * A batch with spliced (owned) payloads goes to hiredis in pieces: the
 * batch buffer up to each payload's place, the caller's payload, and so on.
 * Each piece is copied once, into hiredis's output buffer; the batch keeps
 * its pointers, so a resend after a reconnect splices the same buffers.
 */
static int send_spliced(redq_producer *p, batch *b)
{
    size_t need = 2 * b->nsplice + 1, k = 0, from = b->start, j;
    if (need > p->iovcap) {
        redq__iov *n = realloc(p->iov, need * sizeof *n);
        if (n == NULL)
            return REDQ_ENOMEM;
        p->iov = n;
        p->iovcap = need;
    }
    for (j = 0; j < b->nown; j++) {
        const owned_entry *e = &b->own[j];
        const msg_entry *m = &b->msgs[e->idx];
        if (!e->spliced)
            continue;
        p->iov[k].base = b->buf + from;
        p->iov[k++].len = m->off - from;
        p->iov[k].base = e->data;
        p->iov[k++].len = m->len;
        from = m->off;
    }
    p->iov[k].base = b->buf + from;
    p->iov[k++].len = b->len - from;
    return redq__conn_sendiov(p->conn, p->iov, k, 0, on_batch_reply, b);
}

static int send_batch(redq_producer *p, batch *b)
{
    /* The scripts are loaded on their first use on a connection. A frames
     * batch has no spliced payloads (rebuild copies them in). */
    if (b->kind == B_DELAY || b->frames)
        return redq__conn_send_script(p->conn,
                                      b->frames ? REDQ__SCRIPT_PUSH
                                                : REDQ__SCRIPT_DELAY,
                                      b->buf + b->start, b->len - b->start, 0,
                                      on_batch_reply, b);
    if (b->nsplice > 0)
        return send_spliced(p, b);
    return redq__conn_send(p->conn, b->buf + b->start, b->len - b->start, 0,
                           on_batch_reply, b);
}

void redq__pr_pump(redq_producer *p)
{
    /* Careful mode pipelines one batch at a time (see on_batch_reply). */
    size_t limit = p->careful ? 1 : p->max_inflight;
    size_t sent = 0;
    if (p->redo || p->reformat)
        return;
    while (p->next_unsent != NULL && p->inflight < limit &&
           !p->throttled && redq__conn_ready(p->conn)) {
        batch *b = p->next_unsent;
        int rc;
        /* A queue's first batch waits for its format (one round trip per
         * queue and producer, then cached): it decides between LPUSH and
         * PUSH. Later batches keep the FIFO order behind it. */
        if (b->fmt != NULL && b->fmt->format < 0) {
            if (!b->fmt->learning)
                redq__pr_learn_format(p, b->fmt);
            break;
        }
        rc = send_batch(p, b);
        if (rc != 0) {
            /* Not ready after all (or no memory for the ring): it stays
             * unsent, and on_up or the next reply retries. */
            redq__log(&p->log, REDQ_LOG_DEBUG, rc, "send deferred: %s",
                      redq_strerror(rc));
            break;
        }
        /* The queue's "pushed" counter (redq_queue_info): pipelined right
         * behind the batch, its reply only checked for an error, so it
         * costs a few bytes per batch and no round trip. */
        redq__registry_count(p->registry, p->conn, b->qname, b->qlen,
                             REDQ__META_PUSHED, b->n);
        b->state = B_INFLIGHT;
        p->inflight++;
        p->st.batches_sent++;
        if (b->sent_before)
            p->st.batches_resent++;
        b->sent_before = 1;
        p->next_unsent = b->next;
        sent++;
    }
    /* One WAIT behind everything this pump wrote: it covers every write
     * before it on the connection, so batches pipelined together share it
     * and no batch costs an extra round trip. */
    if (sent > 0 && p->min_replicas > 0) {
        int rc = redq__conn_send(p->conn, p->wait_cmd, p->wait_len,
                                 p->replica_timeout_ms, on_wait_reply, p);
        if (rc == 0)
            p->waits++;
        else
            /* Not sent: the batches' own replies come back NULL (the
             * connection is going) and they are resent with a WAIT. */
            redq__log(&p->log, REDQ_LOG_DEBUG, rc, "WAIT not sent: %s",
                      redq_strerror(rc));
    }
}

/* ---- reports ------------------------------------------------------------ */

/* on_ready is owed (want_ready) from a REDQ_EFULL until the window is at
 * the low-water mark, half of each bound, and redq_produce() refuses
 * meanwhile (check_produce): measured after every report, so report
 * callbacks that produce can neither keep the window above the mark nor
 * take the room meant for on_ready (redq.h, redq_ready_cb). */
void redq__pr_maybe_ready(redq_producer *p)
{
    if (p->want_ready && p->pending_msgs <= p->max_pending_msgs / 2 &&
        p->pending_bytes <= p->max_pending_bytes / 2) {
        p->want_ready = 0;
        if (p->on_ready != NULL && !p->closing)
            p->on_ready(p, p->ready_user);
    }
}

/* The report's id: the number after "<producer id>-" in p->idbuf. Reports
 * mostly come in sequence, so the next number is the last one's decimal
 * digits counted up in place (a carry past the first digit, or a jump,
 * formats it anew): a few stores per report instead of a division per
 * digit. */
void redq__pr_put_id_number(redq_producer *p, uint64_t seq)
{
    char *w = p->idbuf + REDQ__INSTANCE_ID_LEN + 1;
    if (p->idnum != 0 && seq == p->idnum) {
        size_t i = p->idnum_len;
        while (i > 0 && w[i - 1] == '9')
            w[--i] = '0';
        if (i > 0) {
            w[i - 1]++;
            p->idnum = seq + 1;
            return;
        }
    }
    p->idnum_len = redq__pr_put_uint(w, seq + 1);
    w[p->idnum_len] = '\0';
    p->idnum = seq + 1;
}

/* Give every message of `b` its report. The batch must already be out of
 * the map and the FIFO (or be a zombie-to-be): callbacks may produce. */
static void report_batch(redq_producer *p, batch *b, int status,
                         const char *errstr)
{
    redq_report r;
    size_t i, j = 0;
    uint64_t *count = status == 0 ? &p->st.stored : &p->st.failed;

    r.queue = b->lname; /* a partition's: its logical queue */
    r.status = status;
    r.errstr = status == 0 ? NULL : errstr;
    /* unknown: a write got no answer (a NULL reply, or failed in flight) */
    r.persisted = status == 0 || b->stored ? REDQ_PERSIST_YES
                  : b->unknown                 ? REDQ_PERSIST_POSSIBLY
                                               : REDQ_PERSIST_NOT;
    r.id = p->idbuf; /* "<producer id>-" is there; the number per message */
    if (p->on_report == NULL) {
        p->pending_msgs -= b->n;
        p->pending_bytes -= b->payload_bytes;
        *count += b->n;
        for (j = 0; j < b->nown; j++)
            if (b->own[j].free_cb != NULL)
                b->own[j].free_cb(b->own[j].data, b->own[j].free_user);
    } else {
        /* Message by message, so the counters are exact inside each
         * callback: this message is already counted as reported. */
        for (i = 0; i < b->n; i++) {
            /* An owned message's buffer is released right after its own
             * report, not after the batch's: the caller gets its memory
             * back in order, and a callback that fails can't leak it. */
            owned_entry e = {0, NULL, NULL, NULL, 0};
            int owned = j < b->nown && b->own[j].idx == i;
            if (owned)
                e = b->own[j++];
            r.payload = owned ? e.data : b->buf + b->msgs[i].off;
            r.len = b->msgs[i].len;
            r.opaque = b->msgs[i].opaque;
            redq__pr_put_id_number(p, b->msgs[i].seq);
            p->pending_msgs--;
            p->pending_bytes -= b->msgs[i].len;
            (*count)++;
            p->on_report(p, &r, p->report_user);
            if (e.free_cb != NULL)
                e.free_cb(e.data, e.free_user);
            if (p->want_ready)
                redq__pr_maybe_ready(p);
        }
    }
    if (p->want_ready)
        redq__pr_maybe_ready(p);
    /* Released: a batch is reported once, but its entries must never be
     * seen again (a zombie lives on until its reply). */
    b->nown = 0;
    if (p->waiters != NULL)
        redq__pr_defer(p, DEFER_FLUSH_CHECK);
}

/* Is a Redis error one where the command certainly did not run and may
 * simply be retried on a fresh connection? */
static int retryable(const char *s)
{
    static const char *const words[] = {
        "NOAUTH",   "LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN",
        "BUSY",     "NOSCRIPT",
        /* A cluster's pinned connection (an inner producer, lib/pproducer.c):
         * the slot moved (the connection follows it), is migrating, or the
         * cluster is failing over. */
        "MOVED",    "ASK",     "CLUSTERDOWN"};
    size_t i;
    for (i = 0; i < sizeof words / sizeof words[0]; i++) {
        size_t n = strlen(words[i]);
        if (strncmp(s, words[i], n) == 0 && (s[n] == ' ' || s[n] == '\0'))
            return 1;
    }
    return 0;
}

/* The pipeline has drained after a "not applied" error: redo the
 * connection (with the connection's backoff) and resend from the head. */
void redq__pr_redo_now(redq_producer *p, redq__conn *c)
{
    p->redo = 0;
    p->next_unsent = NULL; /* recomputed from the head on reconnect */
    redq__conn_reset(c, p->redo_code, p->redo_msg);
}

/* What every reply (a batch's, a WAIT's) ends with: a redo waits for the
 * pipeline to drain; otherwise there is room in it, and with nothing else
 * in flight adaptive mode sends what gathered meanwhile instead of waiting
 * for linger. */
static void after_replies(redq_producer *p, redq__conn *c)
{
    if (p->reformat && p->inflight == 0 && !p->redo)
        redq__pr_reformat_done(p);
    if (p->redo) {
        if (p->inflight == 0 && p->waits == 0)
            redq__pr_redo_now(p, c);
        return;
    }
    if (p->adaptive && p->inflight == 0)
        redq__pr_seal_all(p);
    redq__pr_pump(p);
    redq__pr_maybe_ready(p);
}

/* Batch b of queue q was applied: was an earlier batch of q refused (it is
 * still in the FIFO before b, unsent)? Then q's order is broken. Only
 * called while a "not applied" error is being handled. */
static void check_order(redq_producer *p, const batch *b)
{
    const batch *e;
    for (e = p->fifo.head; e != NULL && e != b; e = e->next)
        if (e->state == B_SEALED && e->kind == b->kind && e->qlen == b->qlen &&
            memcmp(e->qname, b->qname, b->qlen) == 0) {
            redq__log(&p->log, REDQ_LOG_WARN, REDQ_ESERVER,
                      "queue %s: a batch was applied after an earlier one "
                      "was refused (%s); the earlier one is resent after it",
                      b->qname, p->redo_msg);
            return;
        }
}

static void on_batch_reply(redq__conn *c, void *reply, void *arg)
{
    batch *b = arg;
    redq_producer *p = b->owner;
    redisReply *r = reply;

    if (r == NULL) {
        /* The connection went away with the batch in flight: it may or may
         * not have been applied. Zombies were reported already; the rest go
         * back to unsent where they stand, to be rewritten after reconnect
         * (the FIFO order is the send order, so the queue order holds). */
        p->inflight--;
        if (b->state == B_ZOMBIE) {
            bl_remove(&p->fifo, b);
            batch_recycle(p, b);
        } else {
            b->state = B_SEALED;
            b->unknown = 1;
            p->next_unsent = NULL; /* recomputed from the head on reconnect */
        }
        if (p->inflight == 0)
            p->redo = p->reformat = 0; /* the connection is being redone
                                          anyway */
        return;
    }

    /* Replies come in send order, so this is the FIFO's head. */
    p->inflight--;
    if (r->type == REDIS_REPLY_ERROR && retryable(r->str)) {
        /*
         * Not applied: the server is busy with a script, loading, a replica
         * after a failover, not authenticated after a restart, or lost the
         * script. Batches behind this one are already pipelined and the
         * server state may clear while it reads them, so some may be
         * applied, ahead of this one. Resetting at once would turn their
         * replies into "unknown" and resend them: duplicates, still out of
         * order. Instead: send nothing more, read every reply still due
         * (each refused batch goes back to unsent where it stands, each
         * applied one is reported), then redo the connection and resend
         * from the FIFO's head, one batch at a time ("careful") until one
         * succeeds: the state can only clear between two sends then, never
         * between two pipelined batches. docs/DESIGN.md, "Not applied".
         */
        if (b->state == B_ZOMBIE) {
            bl_remove(&p->fifo, b);
            batch_recycle(p, b);
        } else {
            b->state = B_SEALED;
        }
        if (!p->redo) {
            p->redo = 1;
            p->redo_code = redq__err_from_reply(r->str, (size_t)r->len);
            snprintf(p->redo_msg, sizeof p->redo_msg, "%s", r->str);
            /* The connection says it (at WARN, once per state) when the
             * redo resets it; here only the detail. */
            redq__log(&p->log, REDQ_LOG_DEBUG, p->redo_code,
                      "LPUSH %s not applied: %s; resending one batch at a "
                      "time",
                      b->qname, r->str);
        }
        p->careful = 1;
        if (p->inflight == 0 && p->waits == 0)
            redq__pr_redo_now(p, c);
        return;
    }
    if (b->frames && r->type == REDIS_REPLY_INTEGER && r->integer < 0 &&
        b->state == B_INFLIGHT) {
        /* PUSH found the queue plain: nothing was pushed. See
         * format_refused. */
        redq__pr_format_refused(p, b);
        if (p->inflight == 0 && !p->closing)
            after_replies(p, c);
        return;
    }
    if (p->min_replicas > 0 && b->state == B_INFLIGHT &&
        r->type == REDIS_REPLY_INTEGER) {
        /* On the master; the WAIT behind it says whether it is also on
         * enough replicas. It stays in the FIFO, in order. */
        if (p->redo)
            check_order(p, b);
        else
            p->careful = 0;
        if (p->max_queue_len && b->kind == B_LPUSH &&
            (size_t)r->integer >= p->max_queue_len)
            redq__pr_throttle(p, b->qname);
        b->state = B_STORED;
        b->stored = 1;
        return;
    }
    bl_remove(&p->fifo, b);
    if (r->type != REDIS_REPLY_ERROR && !p->redo)
        p->careful = 0; /* applied, alone in flight: the state has cleared */
    if (b->state == B_ZOMBIE) {
        batch_recycle(p, b);
    } else if (r->type == REDIS_REPLY_INTEGER) {
        if (p->redo)
            check_order(p, b);
        /* LPUSH answers with the list's new length: backpressure from the
         * queue itself costs no extra round trip. */
        if (p->max_queue_len && b->kind == B_LPUSH &&
            (size_t)r->integer >= p->max_queue_len)
            redq__pr_throttle(p, b->qname);
        report_batch(p, b, 0, NULL);
        batch_recycle(p, b);
    } else if (r->type == REDIS_REPLY_ERROR) {
        int code = redq__err_from_reply(r->str, (size_t)r->len);
        redq__log(&p->log, REDQ_LOG_DEBUG, code, "LPUSH %s: %s", b->qname,
                  r->str);
        report_batch(p, b, code, r->str);
        batch_recycle(p, b);
    } else {
        report_batch(p, b, REDQ_EPROTOCOL, "unexpected reply type to LPUSH");
        batch_recycle(p, b);
    }
    if (p->closing)
        return;
    after_replies(p, c);
}

/*
 * The reply to a WAIT: every batch the master has answered since the last
 * WAIT (B_STORED, in FIFO order) is covered by it. Enough replicas: ok.
 * Fewer within replica_timeout_ms, or WAIT refused: REDQ_ENOTREPLICATED,
 * persisted YES (the master has it; a failover before it replicates would
 * lose it). No reply (the connection went): the master may be gone with
 * the only copy, so the batches are resent (at-least-once: a duplicate
 * where the first copy had replicated after all).
 */
static void on_wait_reply(redq__conn *c, void *reply, void *arg)
{
    redq_producer *p = arg;
    redisReply *r = reply;
    char why[160];
    batch *b;
    int status = 0;

    p->waits--;
    if (p->closing)
        return;
    if (r == NULL) {
        for (b = p->fifo.head; b != NULL; b = b->next)
            if (b->state == B_STORED) {
                b->state = B_SEALED;
                b->stored = 0;
                b->unknown = 1;
                p->next_unsent = NULL; /* recomputed on reconnect */
            }
        return;
    }
    if (r->type == REDIS_REPLY_INTEGER && r->integer >= p->min_replicas) {
        status = 0;
    } else if (r->type == REDIS_REPLY_INTEGER) {
        status = REDQ_ENOTREPLICATED;
        snprintf(why, sizeof why,
                 "stored on the master; %lld of %d replicas acknowledged "
                 "within %d ms",
                 r->integer, p->min_replicas, p->replica_timeout_ms);
    } else {
        status = REDQ_ENOTREPLICATED;
        snprintf(why, sizeof why, "stored on the master; WAIT: %.100s",
                 r->type == REDIS_REPLY_ERROR ? r->str : "unexpected reply");
    }
    for (;;) {
        for (b = p->fifo.head; b != NULL && b->state != B_STORED; b = b->next)
            ;
        if (b == NULL)
            break;
        bl_remove(&p->fifo, b);
        report_batch(p, b, status, status == 0 ? NULL : why);
        batch_recycle(p, b);
        if (p->closing)
            return;
    }
    after_replies(p, c);
}

/* ---- timers and deferred work ------------------------------------------- */

static void arm_linger(redq_producer *p)
{
    struct timeval tv;
    if (p->linger_armed)
        return;
    tv.tv_sec = p->linger_us / 1000000u;
    tv.tv_usec = p->linger_us % 1000000u;
    event_add(p->t_linger, &tv);
    p->linger_armed = 1;
}

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_producer *p = arg;
    (void)fd;
    (void)what;
    p->linger_armed = 0;
    if (redq__conn_ready(p->conn)) {
        redq__pr_seal_all(p);
        redq__pr_pump(p);
    }
}

void redq__pr_defer(redq_producer *p, int flag)
{
    if (p->defer_flags == 0)
        event_active(p->ev_defer, EV_TIMEOUT, 0);
    p->defer_flags |= flag;
}

static uint64_t min_unreported_seq(const redq_producer *p)
{
    uint64_t m = p->next_seq;
    const batch *b;
    if (p->nheld > 0) {
        size_t i;
        for (i = 0; i < p->fmts.nb; i++) {
            const redq__qfmt *f;
            for (f = p->fmts.b[i]; f != NULL; f = f->next)
                if (f->hhead != NULL && f->hhead->seq < m)
                    m = f->hhead->seq;
        }
    }
    for (b = p->open.head; b != NULL; b = b->next)
        if (b->first_seq < m)
            m = b->first_seq;
    for (b = p->fifo.head; b != NULL; b = b->next)
        if (b->state != B_ZOMBIE && b->first_seq < m)
            m = b->first_seq;
    return m;
}

/* Call the flushes that are done (all of them when status is nonzero).
 * They are taken off the list first and called after: a flush started from
 * one of these callbacks is a new waiter that its own redq_producer_flush()
 * scheduled for the next loop iteration, never one this call runs, so
 * flushing from a flush callback cannot spin. */
static void check_flushes(redq_producer *p, int status)
{
    uint64_t low = status != 0 ? UINT64_MAX : min_unreported_seq(p);
    flush_waiter **pp = &p->waiters, *done = NULL;
    while (*pp != NULL) {
        flush_waiter *w = *pp;
        if (w->target_seq <= low) {
            *pp = w->next;
            w->next = done; /* the list is newest first: this reverses it */
            done = w;
        } else {
            pp = &w->next;
        }
    }
    while (done != NULL) {
        flush_waiter *w = done;
        done = w->next;
        if (w->t_deadline != NULL)
            event_free(w->t_deadline);
        w->cb(p, status, w->user);
        free(w);
    }
}

/* A flush's own deadline: done after all if its messages are reported
 * (a zero timeout races the zero check timer), else REDQ_ETIMEDOUT. The
 * messages stay pending: nothing else changes. */
static void flush_deadline_cb(evutil_socket_t fd, short what, void *arg)
{
    flush_waiter *w = arg, **pp;
    redq_producer *p = w->owner;
    int status;
    (void)fd;
    (void)what;
    for (pp = &p->waiters; *pp != NULL && *pp != w; pp = &(*pp)->next)
        ;
    if (*pp == NULL || p->closing)
        return; /* close_now reports it */
    *pp = w->next;
    status = w->target_seq <= min_unreported_seq(p) ? 0 : REDQ_ETIMEDOUT;
    event_free(w->t_deadline);
    w->cb(p, status, w->user);
    free(w);
}

static void flush_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_producer *p = arg;
    (void)fd;
    (void)what;
    if (p->waiters != NULL && !p->closing)
        check_flushes(p, 0);
}

void redq__pr_fail_batch(redq_producer *p, batch *b, int code, const char *why)
{
    if (b->state == B_OPEN) {
        map_remove(p, b);
    } else if (b->state == B_SEALED) {
        if (p->next_unsent == b)
            p->next_unsent = b->next;
        bl_remove(&p->fifo, b);
    }
    if (b->state == B_STORED) {
        /* On the master, not confirmed on the replicas: say so. */
        char w[400];
        snprintf(w, sizeof w, "stored on the master; replicas did not "
                 "acknowledge it before: %s", why);
        bl_remove(&p->fifo, b);
        report_batch(p, b, REDQ_ENOTREPLICATED, w);
        batch_recycle(p, b);
        return;
    }
    if (b->state == B_INFLIGHT) {
        /* The reply (or NULL) is still to come and points at it; Redis may
         * apply it yet. */
        b->unknown = 1;
        b->state = B_ZOMBIE;
        report_batch(p, b, code, why);
        return;
    }
    report_batch(p, b, code, why);
    batch_recycle(p, b);
}

static void close_now(redq_producer *p);

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_producer *p = arg;
    int flags = p->defer_flags;
    (void)fd;
    (void)what;
    p->defer_flags = 0;
    if (flags & DEFER_CLOSE) {
        close_now(p);
        return;
    }
    /* While disconnected, batches keep filling instead of being sealed
     * small: they go out when the connection is back. */
    if ((flags & DEFER_SEND) && redq__conn_ready(p->conn)) {
        redq__pr_seal_all(p);
        redq__pr_pump(p);
    }
    if ((flags & DEFER_FLUSH_CHECK) && p->waiters != NULL)
        check_flushes(p, 0);
}

/* Fail what has waited past message_timeout_ms. A batch's deadline is that
 * of its newest message, so no message fails before its own time; the
 * oldest may wait up to span_max_us longer. */
static void sweep_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_producer *p = arg;
    uint64_t now = redq__now_us();
    char why[400];
    batch *b, *next;
    (void)fd;
    (void)what;
    p->sweep_armed = 0;

    snprintf(why, sizeof why, "not acknowledged within %llu ms%s%s%s",
             (unsigned long long)(p->message_timeout_us / 1000),
             redq__conn_last_error(p->conn)[0] ? " (last error: " : "",
             redq__conn_last_error(p->conn),
             redq__conn_last_error(p->conn)[0] ? ")" : "");
    for (b = p->fifo.head; b != NULL; b = next) {
        next = b->next;
        if (b->state != B_ZOMBIE &&
            b->last_us + p->message_timeout_us <= now) {
            redq__pr_fail_batch(p, b, REDQ_ETIMEDOUT, why);
            if (p->closing)
                return;
        }
    }
    for (b = p->open.head; b != NULL; b = next) {
        next = b->next;
        if (b->last_us + p->message_timeout_us <= now) {
            redq__pr_fail_batch(p, b, REDQ_ETIMEDOUT, why);
            if (p->closing)
                return;
        }
    }
    if (p->nheld > 0 && now > p->message_timeout_us) {
        /* Keyed messages still waiting for their queue's partitions. */
        redq__pr_fail_held(p, now - p->message_timeout_us + 1, REDQ_ETIMEDOUT, why);
        if (p->closing)
            return;
    }
    redq__pr_maybe_ready(p);
    if (p->pending_msgs > 0 && !p->closing) {
        struct timeval tv;
        uint64_t period = p->message_timeout_us / 16;
        if (period < 5000)
            period = 5000;
        if (period > 250000)
            period = 250000;
        tv.tv_sec = (time_t)(period / 1000000);
        tv.tv_usec = (suseconds_t)(period % 1000000);
        event_add(p->t_sweep, &tv);
        p->sweep_armed = 1;
    }
}

void redq__pr_arm_sweep(redq_producer *p)
{
    if (p->sweep_armed || p->message_timeout_us == 0)
        return;
    sweep_cb(-1, 0, p);
}

/* ---- connection events -------------------------------------------------- */

static void conn_up(redq__conn *c, void *arg)
{
    redq_producer *p = arg;
    batch *b;
    (void)c;
    p->st.connects++;
    /* Everything still in the FIFO is unsent now: start from the head. A
     * redo still pending is moot: this is the new connection it wanted
     * (its old one can go without a batch reply to clear the flag, e.g. a
     * pinned connection following MOVED drops while only a WAIT was still
     * due), and a flag left set would hold every send back for good. */
    p->next_unsent = NULL;
    p->reformat = 0;
    p->redo = 0;
    for (b = p->fifo.head; b != NULL; b = b->next)
        if (b->state == B_SEALED) {
            p->next_unsent = b;
            break;
        }
    if (p->nheld > 0) {
        /* Keyed messages wait for their queues' partition counts. */
        size_t i;
        for (i = 0; i < p->fmts.nb; i++) {
            redq__qfmt *f;
            for (f = p->fmts.b[i]; f != NULL; f = f->next)
                if (f->hhead != NULL && !f->learning)
                    redq__pr_learn_format(p, f);
        }
    }
    redq__pr_seal_all(p);
    redq__pr_pump(p);
}

static void conn_down(redq__conn *c, int code, const char *msg, void *arg)
{
    redq_producer *p = arg;
    (void)c;
    (void)code;
    (void)msg;
    p->st.disconnects++;
}

/* on_stats: the producer's counters as JSON (redq_stats_cb). */
static void stats_emit(void *arg)
{
    redq_producer *p = arg;
    redq_producer_stats st;
    char buf[1024];
    size_t n;
    redq_producer_get_stats(p, &st);
    n = redq__stats_head(&p->stats, buf, sizeof buf, "producer", st.connected,
                         st.disconnects);
    n += (size_t)snprintf(
        buf + n, sizeof buf - n,
        ",\"produced\":%llu,\"stored\":%llu,\"failed\":%llu,"
        "\"pending\":%zu,\"pending_bytes\":%zu,\"inflight_batches\":%zu,"
        "\"batches_sent\":%llu}",
        (unsigned long long)st.produced, (unsigned long long)st.stored,
        (unsigned long long)st.failed, st.pending_msgs, st.pending_bytes,
        st.inflight_batches, (unsigned long long)st.batches_sent);
    p->stats.cb(buf, n, p->stats.user);
    redq__stats_ping(&p->stats, p->conn);
}

/* ---- the API ------------------------------------------------------------ */

/* The fields every producer takes from the options (public, inner and
 * the outer face of a partitioned one). */
static void set_fields(redq_producer *p, struct event_base *base,
                       const redq__options *opts, const redq__logger *lg)
{
    p->base = base;
    p->log = *lg;
    p->idseq = &p->next_seq;
    p->on_report = opts->on_report;
    p->report_user = opts->report_user;
    p->on_ready = opts->on_ready;
    p->ready_user = opts->ready_user;
    p->batch_max_msgs = opts->batch_max_msgs;
    p->batch_max_bytes = opts->batch_max_bytes;
    p->linger_us = opts->linger_us;
    p->adaptive = opts->adaptive != 0;
    p->max_inflight = opts->max_inflight_batches;
    p->max_pending_msgs = opts->max_pending_msgs;
    p->max_pending_bytes = opts->max_pending_bytes;
    p->max_message_bytes = opts->max_message_bytes;
    p->message_timeout_us = (uint64_t)opts->message_timeout_ms * 1000u;
    p->span_max_us = p->message_timeout_us / 16;
    p->max_queue_len = opts->max_queue_len;
    p->min_replicas = opts->min_replicas;
    p->replica_timeout_ms = opts->replica_timeout_ms;
    if (p->min_replicas > 0) {
        char n[16], t[16];
        int nl = snprintf(n, sizeof n, "%d", p->min_replicas);
        int tl = snprintf(t, sizeof t, "%d", p->replica_timeout_ms);
        p->wait_len = (size_t)snprintf(p->wait_cmd, sizeof p->wait_cmd,
                                       "*3\r\n$4\r\nWAIT\r\n$%d\r\n%s\r\n"
                                       "$%d\r\n%s\r\n",
                                       nl, n, tl, t);
    }
    redq__scripts_init(&p->scripts);
    redq__instance_id(p->id, (uintptr_t)p);
    memcpy(p->idbuf, p->id, REDQ__INSTANCE_ID_LEN);
    p->idbuf[REDQ__INSTANCE_ID_LEN] = '-';
}

/* Make p's connection (pinned to `slot` of cl when cl is given), events,
 * registry and stats. 0, or a REDQ_E* with everything made freed. */
static int make_parts(redq_producer *p, const redq__options *opts,
                      const redq__url *url, redq__cluster *cl, unsigned slot)
{
    redq__conn_config cfg;
    int rc;
    redq__conn_config_init(&cfg, opts, url, &p->log);
    cfg.load_scripts = 0; /* the delay script loads on first use */
    if (cl != NULL) {
        rc = redq__cluster_pin_new(&p->pin, cl, slot, &cfg, conn_up,
                                   conn_down, p);
        if (rc == 0)
            p->conn = redq__cluster_pin_conn(p->pin);
    } else {
        rc = redq__conn_new(&p->conn, p->base, &cfg, conn_up, conn_down, p);
    }
    if (rc == 0) {
        struct event_base *base = p->base;
        p->ev_defer = event_new(base, -1, 0, defer_cb, p);
        p->t_linger = event_new(base, -1, 0, linger_cb, p);
        p->t_sweep = event_new(base, -1, 0, sweep_cb, p);
        p->t_throttle = event_new(base, -1, 0, redq__pr_throttle_cb, p);
        p->t_flush = event_new(base, -1, 0, flush_timer_cb, p);
        p->t_meta = event_new(base, -1, EV_PERSIST, redq__pr_meta_tick, p);
        p->registry = redq__registry_new(&p->log);
        if (redq__stats_init(&p->stats, base, opts, stats_emit, p) != 0 ||
            p->registry == NULL ||
            p->ev_defer == NULL || p->t_linger == NULL || p->t_sweep == NULL ||
            p->t_throttle == NULL || p->t_flush == NULL ||
            p->t_meta == NULL || map_grow(p) != 0)
            rc = REDQ_ENOMEM;
    }
    if (rc != 0) {
        if (p->pin != NULL)
            redq__cluster_pin_free(p->pin);
        else
            redq__conn_free(p->conn);
        if (p->ev_defer)
            event_free(p->ev_defer);
        if (p->t_linger)
            event_free(p->t_linger);
        if (p->t_sweep)
            event_free(p->t_sweep);
        if (p->t_throttle)
            event_free(p->t_throttle);
        if (p->t_flush)
            event_free(p->t_flush);
        if (p->t_meta)
            event_free(p->t_meta);
        redq__registry_free(p->registry);
        redq__stats_free(&p->stats);
        free(p->buckets);
        return rc;
    }
    {
        struct timeval tv = {REDQ__PR_META_MS / 1000,
                             (REDQ__PR_META_MS % 1000) * 1000};
        event_add(p->t_meta, &tv);
    }
    redq__conn_start(p->conn);
    return 0;
}

int redq_producer_new(redq_producer **out, struct event_base *base,
                      const redq_producer_options *caller_opts)
{
    redq_producer *p;
    redq__url url;
    redq__logger lg;
    redq__options full, *opts = &full; /* the caller's layout, + defaults */
    int rc;

    if (caller_opts == NULL)
        return REDQ_EINVAL;
    rc = redq__options_prepare_producer(caller_opts, &full, &url, &lg);
    if (rc != 0)
        return rc;
    if (out == NULL || base == NULL) {
        redq__url_free(&url);
        return redq__new_failed(&full, &lg, REDQ_EINVAL,
                                "redq_producer_new: %s is NULL",
                                out == NULL ? "out" : "base");
    }

    p = calloc(1, sizeof *p);
    if (p == NULL) {
        redq__url_free(&url);
        return redq__new_failed(&full, &lg, REDQ_ENOMEM,
                                "redq_producer_new: out of memory");
    }
    set_fields(p, base, opts, &lg);
    if (url.is_cluster)
        /* A cluster: this is the outer face; lib/pproducer.c makes a
         * router and inner producers pinned to their partitions' slots. */
        rc = redq__pp_new(&p->pp, p, base, opts, &url, &p->log);
    else
        rc = make_parts(p, opts, &url, NULL, 0);
    redq__url_free(&url);
    if (rc != 0) {
        free(p);
        return redq__new_failed(&full, &lg, rc,
                                "redq_producer_new: %s", redq_strerror(rc));
    }
    *out = p;
    return 0;
}

int redq__producer_new_inner(redq_producer **out, redq_producer *outer,
                             const redq__options *opts, const redq__url *url,
                             redq__cluster *cl, unsigned slot)
{
    redq_producer *p = calloc(1, sizeof *p);
    int rc;
    if (p == NULL)
        return REDQ_ENOMEM;
    set_fields(p, outer->base, opts, &outer->log);
    p->inner = 1;
    p->idseq = &outer->next_seq;
    memcpy(p->id, outer->id, sizeof p->id);
    memcpy(p->idbuf, outer->id, REDQ__INSTANCE_ID_LEN);
    rc = make_parts(p, opts, url, cl, slot);
    if (rc != 0) {
        free(p);
        return rc;
    }
    *out = p;
    return 0;
}

size_t redq__producer_open_count(redq_producer *p, const char *q, size_t qlen)
{
    batch *b = p->last;
    if (b == NULL || b->kind != B_LPUSH || b->qlen != qlen ||
        memcmp(b->qname, q, qlen) != 0)
        b = map_find(p, B_LPUSH, q, qlen,
                     hash_name(q, qlen) ^ (uint32_t)B_LPUSH);
    return b != NULL ? b->n : 0;
}

void redq__producer_outer_accepted(redq_producer *p, size_t len)
{
    p->pending_msgs++;
    p->pending_bytes += len;
    p->st.produced++;
}

void redq__producer_outer_report(redq_producer *p, const redq_report *r)
{
    p->pending_msgs--;
    p->pending_bytes -= r->len;
    if (r->status == 0)
        p->st.stored++;
    else
        p->st.failed++;
    if (p->on_report != NULL)
        p->on_report(p, r, p->report_user);
    if (p->want_ready)
        redq__pr_maybe_ready(p);
}


static uint64_t coarse_now_us(void)
{
#ifdef CLOCK_MONOTONIC_COARSE
    /* A few ns instead of a few tens: this runs once per message, and a
     * millisecond's resolution is plenty for message timeouts. */
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
#else
    return redq__now_us();
#endif
}

/* The slow path of check_produce(): say why a message is refused. */
/* Why an EINVAL: a NULL payload comes with len > 0, a reserved name with
 * a name that redq__key_reserved() refuses. */
static int payload_ok(const char *queue, size_t len)
{
    return len == 0 && redq__key_reserved(queue, strlen(queue));
}

static int refuse(redq_producer *p, int code, const char *queue, size_t qlen,
                  size_t len)
{
    if (code == REDQ_EINVAL && p != NULL && queue != NULL) {
        if (qlen == 0)
            redq__log(&p->log, REDQ_LOG_WARN, code,
                      "produce: the queue name is empty");
        else if (qlen > REDQ__MAX_QUEUE_NAME)
            redq__log(&p->log, REDQ_LOG_WARN, code,
                      "produce: queue name of %zu bytes is longer than the "
                      "limit of %d",
                      qlen, REDQ__MAX_QUEUE_NAME);
        else if (payload_ok(queue, len))
            redq__log(&p->log, REDQ_LOG_WARN, code,
                      "produce: queue name %.*s is another queue's own key "
                      "(its due, dead, ... list; docs/DESIGN.md, \"Key "
                      "layout\")",
                      (int)(qlen > 200 ? 200 : qlen), queue);
        else
            redq__log(&p->log, REDQ_LOG_WARN, code,
                      "produce: payload is NULL with len %zu", len);
    } else if (code == REDQ_ETOOBIG) {
        redq__log(&p->log, REDQ_LOG_WARN, code,
                  "produce to %s: %zu bytes is more than %s (%zu bytes)",
                  queue, len,
                  len > REDQ__MAX_BULK ? "Redis takes in one value "
                                         "(proto-max-bulk-len)"
                  : len > p->max_message_bytes ? "max_message_bytes"
                                               : "max_pending_bytes",
                  len > REDQ__MAX_BULK ? REDQ__MAX_BULK
                  : len > p->max_message_bytes ? p->max_message_bytes
                                               : p->max_pending_bytes);
    }
    return code;
}

/* Validation shared by both produce calls; 0 or the error to return. */
static REDQ__HOT_INLINE int check_produce(redq_producer *p, const char *queue,
                         const void *payload, size_t len, size_t *qlen)
{
    *qlen = 0;
    if (REDQ__UNLIKELY(p == NULL || queue == NULL ||
                       (payload == NULL && len > 0)))
        return refuse(p, REDQ_EINVAL, queue, 1, len);
    if (REDQ__UNLIKELY(p->closing))
        return REDQ_ECLOSED;
    *qlen = strlen(queue);
    if (REDQ__UNLIKELY(*qlen == 0 ||
                       *qlen > REDQ__MAX_QUEUE_NAME +
                                   (p->inner ? REDQ__PARTITION_NAME_EXTRA : 0)))
        return refuse(p, REDQ_EINVAL, queue, *qlen, len);
    /* A name that is another queue's key would write into that queue's
     * own lists. Checked when the queue differs from the last one's: a
     * one-queue producer pays one memcmp, which the batch lookup repeats. */
    if (REDQ__UNLIKELY(!p->inner &&
                       (p->lastlq == NULL || p->lastlq->qlen != *qlen ||
                        memcmp(p->lastlq->name, queue, *qlen) != 0) &&
                       redq__key_reserved(queue, *qlen)))
        return refuse(p, REDQ_EINVAL, queue, *qlen, 0);
    /* max_message_bytes is at most REDQ__MAX_BULK (options.c), so no
     * single LPUSH value can pass Redis's bulk limit. */
    if (REDQ__UNLIKELY(len > p->max_message_bytes ||
                       len > p->max_pending_bytes))
        return refuse(p, REDQ_ETOOBIG, queue, *qlen, len);
    /* Full, or on_ready still owed (the window has not been down to the
     * low-water mark since the last REDQ_EFULL): see redq__pr_maybe_ready(). */
    if (REDQ__UNLIKELY(p->pending_msgs >= p->max_pending_msgs ||
                       p->pending_bytes + len > p->max_pending_bytes ||
                       p->want_ready)) {
        p->want_ready = 1;
        p->st.rejected_full++;
        return REDQ_EFULL;
    }
    return 0;
}

/*
 * The open batch of `kind` for `queue` with room for `add` more bytes: the
 * one used last (one-queue producers never hash), or from the map, or a
 * new one. A batch that would pass batch_max_bytes, or has been open for
 * span_max_us, is sealed and replaced.
 */
static REDQ__HOT_INLINE batch *open_batch_for(redq_producer *p, int kind,
                                              const char *queue, size_t qlen,
                                              size_t add, uint64_t now)
{
    batch *b = p->last;
    uint32_t hash;

    if (b == NULL || b->kind != kind || b->qlen != qlen ||
        memcmp(b->qname, queue, qlen) != 0) {
        hash = hash_name(queue, qlen) ^ (uint32_t)kind;
        b = map_find(p, kind, queue, qlen, hash);
    } else {
        hash = b->hash;
    }
    if (b != NULL &&
        ((b->len + b->spliced_bytes - HEADER_ROOM) + add + 32 >
             p->batch_max_bytes ||
         (p->span_max_us && now - b->first_us > p->span_max_us))) {
        seal(p, b);
        redq__pr_pump(p);
        b = NULL;
    }
    if (b == NULL) {
        if (p->nopen >= p->nbuckets && map_grow(p) != 0)
            return NULL;
        b = batch_new(p, kind, queue, qlen, hash);
        if (b == NULL)
            return NULL;
        b->first_seq = p->next_seq;
        b->first_us = now;
        b->hnext = p->buckets[hash & (p->nbuckets - 1)];
        p->buckets[hash & (p->nbuckets - 1)] = b;
        bl_append(&p->open, b);
        p->nopen++;
    }
    return b;
}

/* Room for one more message of `bytes` RESP bytes in `b`. */
static REDQ__HOT_INLINE int make_room(batch *b, size_t bytes)
{
    size_t need = b->len + bytes;
    if (REDQ__LIKELY(need <= b->cap && b->n < b->mcap))
        return 0;
    if (ensure(&b->buf, &b->cap, need) != 0)
        return REDQ_ENOMEM;
    if (b->n == b->mcap) {
        size_t ncap = b->mcap ? b->mcap * 2 : 64;
        msg_entry *m = realloc(b->msgs, ncap * sizeof *m);
        if (m == NULL)
            return REDQ_ENOMEM;
        b->msgs = m;
        b->mcap = ncap;
    }
    return 0;
}

/* Append "$<len>\r\n<data>\r\n" at w; returns where the data went. The
 * "$<len>\r\n" of the last length is kept: a stream of messages mostly
 * shares one, and formatting it was a tenth of the per-message cost. */
static REDQ__HOT_INLINE char *put_bulk(redq_producer *p, char **w,
                                       const void *data, size_t len)
{
    char *at;
    if (REDQ__UNLIKELY(len != p->lenhdr_of || p->lenhdr_n == 0)) {
        char *h = p->lenhdr;
        *h++ = '$';
        h += redq__pr_put_uint(h, len);
        *h++ = '\r';
        *h++ = '\n';
        p->lenhdr_n = (size_t)(h - p->lenhdr);
        p->lenhdr_of = len;
    }
    memcpy(*w, p->lenhdr, p->lenhdr_n);
    *w += p->lenhdr_n;
    at = *w;
    if (len > 0)
        memcpy(*w, data, len);
    *w += len;
    *(*w)++ = '\r';
    *(*w)++ = '\n';
    return at;
}

/* A message went into `b`: account for it, and seal, send or schedule. */
static REDQ__HOT_INLINE void appended(redq_producer *p, batch *b, const char *w,
                     const char *data_at, size_t len, void *opaque,
                     uint64_t now)
{
    b->msgs[b->n].opaque = opaque;
    b->msgs[b->n].off = (size_t)(data_at - b->buf);
    b->msgs[b->n].len = len;
    b->msgs[b->n].seq = (*p->idseq)++;
    if (REDQ__UNLIKELY(b->msgs[b->n].seq < b->first_seq))
        b->first_seq = b->msgs[b->n].seq; /* a keyed one that waited */
    b->len = (size_t)(w - b->buf);
    b->n++;
    b->payload_bytes += len;
    b->last_us = now;
    p->last = b;

    p->pending_msgs++;
    p->pending_bytes += len;
    if (p->idseq != &p->next_seq)
        p->next_seq++; /* (else already counted as the id's number) */
    p->st.produced++;
    if (!p->sweep_armed)
        redq__pr_arm_sweep(p);

    if (b->n >= p->batch_max_msgs ||
        b->len + b->spliced_bytes - HEADER_ROOM >= p->batch_max_bytes) {
        seal(p, b);
        redq__pr_pump(p);
    } else if (p->adaptive && p->inflight == 0) {
        /* Nothing in flight: send at the end of this loop iteration, so a
         * lone message goes out at once and a burst made in one callback
         * still shares a command. */
        if (!(p->defer_flags & DEFER_SEND))
            redq__pr_defer(p, DEFER_SEND);
    } else if (!p->linger_armed) {
        arm_linger(p);
    }
}

/* A frames queue's message at *w: "$<n>\r\nRQ1 id=<id> ts=<ms>\n" (the
 * id the report will show), the payload verbatim, "\r\n". Returns where
 * the payload went. Room: len + 32 + REDQ__READY_HEADER_MAX. */
static char *put_frame(redq_producer *p, char **w, const void *payload,
                       size_t len)
{
    char id[REDQ__MSG_ID_MAX], hdr[REDQ__READY_HEADER_MAX], *at;
    size_t hl = redq__ready_header(hdr, id,
                                   redq__msg_id(id, p->id, *p->idseq + 1),
                                   redq__wall_ms());
    *(*w)++ = '$';
    *w += redq__pr_put_uint(*w, hl + len);
    *(*w)++ = '\r';
    *(*w)++ = '\n';
    memcpy(*w, hdr, hl);
    *w += hl;
    at = *w;
    if (len > 0)
        memcpy(*w, payload, len);
    *w += len;
    *(*w)++ = '\r';
    *(*w)++ = '\n';
    return at;
}

static int nomem(redq_producer *p, batch *b)
{
    if (b != NULL && b->n == 0) {
        map_remove(p, b);
        batch_recycle(p, b);
    }
    return REDQ_ENOMEM;
}

/* ---- partitions on one server (docs/DESIGN.md, "Partitioned queues") -- */

/* The entry of the queue the caller named (made on first use, when its
 * meta fields are asked for at once: its format and partitions). */
redq__qfmt *redq__pr_lq_lookup(redq_producer *p, const char *queue, size_t qlen)
{
    redq__qfmt *f = redq__qfmt_get(&p->fmts, queue, qlen, p);
    if (f == NULL)
        return NULL;
    p->lastlq = f;
    f->used = 1;
    if (f->format < 0 && !f->learning && redq__conn_ready(p->conn))
        redq__pr_learn_format(p, f);
    return f;
}

/* Messages in p's open batch of `kind` for queue q (0: none open). */
static size_t open_count(redq_producer *p, int kind, const char *q,
                         size_t qlen)
{
    batch *b = p->last;
    if (b == NULL || b->kind != kind || b->qlen != qlen ||
        memcmp(b->qname, q, qlen) != 0)
        b = map_find(p, kind, q, qlen, hash_name(q, qlen) ^ (uint32_t)kind);
    return b != NULL ? b->n : 0;
}

/* Sticky by batch: the current partition takes unkeyed messages while its
 * open batch of `kind` is open; once that one was sealed (it is sent), the
 * next active partition is current. So batches stay as large as on one
 * queue. The partition's name, its length in *qlen; NULL: no memory. */
static const char *spread(redq_producer *p, redq__qfmt *f, int kind,
                          size_t *qlen)
{
    redq__qparts *qp = f->parts;
    f->used = 1;
    if (qp->cur >= f->pactive) {
        qp->cur = 0;
        qp->cur_sent = 0;
    }
    if (qp->cur_sent > 0) {
        size_t l;
        const char *n = redq__pr_partition(f, qp->cur, &l);
        if (n == NULL || open_count(p, kind, n, l) == 0) {
            qp->cur = (qp->cur + 1) % f->pactive;
            qp->cur_sent = 0;
        }
    }
    qp->cur_sent++;
    return redq__pr_partition(f, qp->cur, qlen);
}

/*
 * The queue a message the caller sent to `queue` goes to: queue itself,
 * or, when it has partitions (learnt from its meta fields), one of them
 * (spread). *lq is the caller's queue's entry: reports carry its name.
 * NULL when out of memory. An inner producer (lib/pproducer.c) is given
 * partition names already: *lq NULL, queue as it is.
 */
static REDQ__HOT_INLINE const char *route(redq_producer *p, int kind,
                                          const char *queue, size_t *qlen,
                                          redq__qfmt **lq)
{
    redq__qfmt *f = p->lastlq;
    *lq = NULL;
    if (p->inner)
        return queue;
    if (REDQ__UNLIKELY(f == NULL || f->qlen != *qlen ||
                       memcmp(f->name, queue, *qlen) != 0)) {
        f = redq__pr_lq_lookup(p, queue, *qlen);
        if (f == NULL)
            return NULL;
    }
    *lq = f;
    if (REDQ__LIKELY(f->pactive <= 1))
        return queue;
    return spread(p, f, kind, qlen);
}

/* redq_produce once the queue is known: copy the message into the open
 * batch of physical queue `queue` (lq: the caller's queue, for reports). */
static REDQ__HOT_INLINE int put_copy(redq_producer *p, redq__qfmt *lq,
                                     const char *queue, size_t qlen,
                                     const void *payload, size_t len,
                                     void *opaque)
{
    batch *b;
    uint64_t now = coarse_now_us();
    char *w, *at;

    b = open_batch_for(p, B_LPUSH, queue, qlen, len, now);
    if (REDQ__UNLIKELY(b == NULL ||
                       make_room(b, len + 32 + REDQ__READY_HEADER_MAX) != 0))
        return nomem(p, b);
    if (lq != NULL)
        b->lname = lq->name;
    w = b->buf + b->len;
    if (REDQ__UNLIKELY(b->frames)) {
        at = put_frame(p, &w, payload, len);
        appended(p, b, w, at, len, opaque, now);
        return 0;
    }
    at = put_bulk(p, &w, payload, len);
    appended(p, b, w, at, len, opaque, now);
    return 0;
}

int redq__pr_put_copy(redq_producer *p, redq__qfmt *lq, const char *queue,
                      size_t qlen, const void *payload, size_t len,
                      void *opaque)
{
    return put_copy(p, lq, queue, qlen, payload, len, opaque);
}

int redq_produce(redq_producer *p, const char *queue, const void *payload,
                 size_t len, void *opaque)
{
    size_t qlen;
    redq__qfmt *lq;
    int rc = check_produce(p, queue, payload, len, &qlen);

    if (REDQ__UNLIKELY(rc != 0))
        return rc;
    if (REDQ__UNLIKELY(p->pp != NULL))
        return redq__pp_produce(p->pp, REDQ__PP_COPY, queue, qlen, NULL, 0,
                                (void *)payload, len, NULL, NULL, 0, opaque);
    queue = route(p, B_LPUSH, queue, &qlen, &lq);
    if (REDQ__UNLIKELY(queue == NULL))
        return REDQ_ENOMEM;
    return put_copy(p, lq, queue, qlen, payload, len, opaque);
}

/* Room for one more owned entry in `b`. */
static int own_room(batch *b)
{
    if (b->nown == b->owncap) {
        size_t ncap = b->owncap ? b->owncap * 2 : 16;
        owned_entry *e = realloc(b->own, ncap * sizeof *e);
        if (e == NULL)
            return REDQ_ENOMEM;
        b->own = e;
        b->owncap = ncap;
    }
    return 0;
}

/*
 * The batch gets the message's "$<len>\r\n" and the "\r\n" after it, not
 * its bytes: msgs[].off is where the payload goes when the batch is handed
 * to hiredis (send_spliced). Everything else (sealing by batch_max_bytes,
 * the window, order, resends, WAIT, timeouts) sees the same message as
 * redq_produce's.
 */
int redq_produce_owned(redq_producer *p, const char *queue, void *payload,
                       size_t len, redq_free_cb free_cb, void *free_user,
                       void *opaque)
{
    batch *b;
    size_t qlen;
    uint64_t now;
    char *w, *at;
    owned_entry *e;
    int splice;
    redq__qfmt *lq;
    int rc = check_produce(p, queue, payload, len, &qlen);

    if (REDQ__UNLIKELY(rc != 0))
        return rc;
    if (REDQ__UNLIKELY(p->pp != NULL))
        return redq__pp_produce(p->pp, REDQ__PP_OWNED, queue, qlen, NULL, 0,
                                payload, len, free_cb, free_user, 0, opaque);
    queue = route(p, B_LPUSH, queue, &qlen, &lq);
    if (REDQ__UNLIKELY(queue == NULL))
        return REDQ_ENOMEM;
    now = coarse_now_us();
    b = open_batch_for(p, B_LPUSH, queue, qlen, len, now);
    if (b != NULL && lq != NULL)
        b->lname = lq->name;
    /* A frames queue's batch is one EVALSHA: its payloads are copied. */
    splice = len >= OWNED_SPLICE_MIN && b != NULL && !b->frames;
    if (REDQ__UNLIKELY(b == NULL ||
                       make_room(b, (splice ? 0 : len) + 32 +
                                        REDQ__READY_HEADER_MAX) != 0 ||
                       own_room(b) != 0))
        return nomem(p, b);
    w = b->buf + b->len;
    if (b->frames) {
        at = put_frame(p, &w, payload, len);
    } else if (splice) {
        *w++ = '$';
        w += redq__pr_put_uint(w, len);
        *w++ = '\r';
        *w++ = '\n';
        at = w;
        *w++ = '\r';
        *w++ = '\n';
        b->nsplice++;
        b->spliced_bytes += len;
    } else {
        at = put_bulk(p, &w, payload, len);
    }
    e = &b->own[b->nown++];
    e->idx = b->n;
    e->data = payload;
    e->free_cb = free_cb;
    e->free_user = free_user;
    e->spliced = splice;
    appended(p, b, w, at, len, opaque, now);
    return 0;
}

int redq_produce_delayed(redq_producer *p, const char *queue,
                         const void *payload, size_t len, long long delay_ms,
                         void *opaque)
{
    batch *b;
    size_t qlen, hlen;
    uint64_t now;
    char *w, *at, id[48], dbuf[24], hdr[160];
    redq__qfmt *lq;
    int rc;

    /* 10 years of 365.25 days, leap days included. */
    if (delay_ms < 0 || delay_ms > 3653LL * 24 * 3600 * 1000)
        return REDQ_EINVAL;
    rc = check_produce(p, queue, payload, len, &qlen);
    if (rc != 0)
        return rc;
    if (p->pp != NULL)
        return redq__pp_produce(p->pp, REDQ__PP_DELAYED, queue, qlen, NULL, 0,
                                (void *)payload, len, NULL, NULL, delay_ms,
                                opaque);
    /* The stored value is the payload plus its metadata: refuse what cannot
     * fit in one Redis value before encoding it (Redis would answer an
     * over-long bulk string by closing the connection, and the resend would
     * do it again until message_timeout_ms). */
    if (len > REDQ__MAX_BULK - 256)
        return refuse(p, REDQ_ETOOBIG, queue, qlen, len + 256);
    queue = route(p, B_DELAY, queue, &qlen, &lq);
    if (queue == NULL)
        return REDQ_ENOMEM;
    /* The zset needs distinct members: a frame (lib/frame.c) with a
     * unique id, then the payload verbatim. The report shows the payload
     * alone. */
    redq__msg_id(id, p->id, *p->idseq + 1); /* the report's id */
    hlen = redq__frame_build(hdr, NULL, 0, id, 0, redq__wall_ms(), NULL, -1,
                             NULL);
    now = coarse_now_us();
    b = open_batch_for(p, B_DELAY, queue, qlen, hlen + len + 24, now);
    if (b == NULL || make_room(b, hlen + len + 64) != 0)
        return nomem(p, b);
    if (lq != NULL)
        b->lname = lq->name;
    w = b->buf + b->len;
    put_bulk(p, &w, dbuf,
             (size_t)snprintf(dbuf, sizeof dbuf, "%lld", delay_ms));
    *w++ = '$';
    w += redq__pr_put_uint(w, hlen + len);
    *w++ = '\r';
    *w++ = '\n';
    memcpy(w, hdr, hlen);
    w += hlen;
    at = w;
    if (len > 0)
        memcpy(w, payload, len);
    w += len;
    *w++ = '\r';
    *w++ = '\n';
    appended(p, b, w, at, len, opaque, now);
    return 0;
}

int redq_producer_flush(redq_producer *p, int timeout_ms, redq_flush_cb cb,
                        void *user)
{
    flush_waiter *w;
    if (p == NULL || cb == NULL)
        return REDQ_EINVAL;
    if (p->closing)
        return REDQ_ECLOSED;
    if (p->pp != NULL)
        return redq__pp_flush(p->pp, timeout_ms, cb, user);
    w = malloc(sizeof *w);
    if (w == NULL)
        return REDQ_ENOMEM;
    w->target_seq = p->next_seq;
    w->cb = cb;
    w->user = user;
    w->owner = p;
    w->t_deadline = NULL;
    if (timeout_ms >= 0) {
        struct timeval tv;
        w->t_deadline = event_new(p->base, -1, 0, flush_deadline_cb, w);
        if (w->t_deadline == NULL) {
            free(w);
            return REDQ_ENOMEM;
        }
        tv.tv_sec = timeout_ms / 1000;
        tv.tv_usec = (timeout_ms % 1000) * 1000;
        event_add(w->t_deadline, &tv);
    }
    w->next = p->waiters;
    p->waiters = w;
    /* Send what is batched now, and check whether there is anything to wait
     * for at all in the next loop iteration: a zero timer runs after the
     * loop has polled, where an active event could run in this iteration's
     * active pass again and again (libevent runs events activated during
     * that pass in the same pass). */
    redq__pr_defer(p, DEFER_SEND);
    {
        struct timeval zero = {0, 0};
        event_add(p->t_flush, &zero);
    }
    return 0;
}

int redq_producer_close(redq_producer *p, redq_close_cb cb, void *user)
{
    if (p == NULL)
        return REDQ_EINVAL;
    if (p->closing)
        return REDQ_ECLOSED;
    p->closing = 1;
    if (p->pp != NULL)
        return redq__pp_close(p->pp, cb, user);
    p->close_cb = cb;
    p->close_user = user;
    redq__pr_defer(p, DEFER_CLOSE);
    return 0;
}

/* From the loop, outside any hiredis callback: report everything pending as
 * closed, drop the connection, free it all, then call the close callback. */
static void close_now(redq_producer *p)
{
    redq_close_cb cb = p->close_cb;
    void *user = p->close_user;
    batch *b, *next;

    for (b = p->fifo.head; b != NULL; b = next) {
        next = b->next;
        if (b->state != B_ZOMBIE)
            redq__pr_fail_batch(p, b, REDQ_ECLOSED, "producer closed");
    }
    while (p->open.head != NULL)
        redq__pr_fail_batch(p, p->open.head, REDQ_ECLOSED, "producer closed");
    redq__pr_fail_held(p, UINT64_MAX, REDQ_ECLOSED, "producer closed");
    check_flushes(p, REDQ_ECLOSED);

    /* In-flight (now zombie) batches get their NULL replies in here and
     * are recycled by on_batch_reply. */
    if (p->pin != NULL)
        redq__cluster_pin_free(p->pin); /* its connection with it */
    else
        redq__conn_free(p->conn);
    p->conn = NULL;
    redq__registry_free(p->registry);
    redq__stats_free(&p->stats);

    while (p->free_list != NULL) {
        b = p->free_list;
        p->free_list = b->next;
        batch_destroy(b);
    }
    event_free(p->ev_defer);
    event_free(p->t_linger);
    event_free(p->t_sweep);
    event_free(p->t_throttle);
    event_free(p->t_flush);
    event_free(p->t_meta);
    free(p->throttle_q);
    free(p->iov);
    free(p->buckets);
    redq__qfmts_free(&p->fmts);
    free(p);
    if (cb != NULL)
        cb(user);
}

const char *redq_producer_id(const redq_producer *p)
{
    return p != NULL ? p->id : NULL;
}

void redq_producer_get_stats_sized(const redq_producer *p,
                                   redq_producer_stats *st, size_t size)
{
    redq_producer_stats full;
    if (p == NULL || st == NULL)
        return;
    full = p->st;
    full.pending_msgs = p->pending_msgs;
    full.pending_bytes = p->pending_bytes;
    full.inflight_batches = p->inflight;
    full.connected = p->conn != NULL && redq__conn_ready(p->conn);
    full.throttled = p->throttled;
    if (p->pp != NULL)
        redq__pp_stats(p->pp, &full); /* the inners' batches, connections */
    /* Only the caller's bytes: an older program's struct is smaller. */
    if (size > sizeof full) {
        memset((char *)st + sizeof full, 0, size - sizeof full);
        size = sizeof full;
    }
    memcpy(st, &full, size);
}

int redq__producer_check(redq_producer *p, const char *queue,
                         const void *payload, size_t len, size_t *qlen)
{
    return check_produce(p, queue, payload, len, qlen);
}

redq__pprod *redq__producer_pp(const redq_producer *p)
{
    return p->pp;
}

void redq__producer_outer_free(redq_producer *p)
{
    free(p);
}

uint64_t *redq__producer_seq(redq_producer *p)
{
    return &p->next_seq;
}
