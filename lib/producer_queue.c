/*
 * What the producer knows of each queue it writes to, learnt from Redis:
 *   - its format (docs/DESIGN.md, "Ids and formats"): a HMGET of the meta
 *     fields at the queue's first use decides between LPUSH of payloads
 *     and PUSH of frames; read again every few seconds while the queue is
 *     in use (a switch to frames shows there); a PUSH refused because an
 *     operator switched the queue back to plain rewrites the queue's
 *     batches in order;
 *   - its partitions, on one server ("Partitioned queues"): the same
 *     HMGET reads `partitions` and `ptags`; a partition is then just
 *     another queue name on the same connection (lib/producer.c spreads
 *     the messages, route());
 *   - its length under max_queue_len ("Backpressure"): sending pauses
 *     while a LPUSH says the queue is that long, and an LLEN watch resumes
 *     it.
 * The batches themselves are lib/producer.c's (lib/producer_int.h).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "producer_int.h"

/* "EVALSHA <PUSH> 2 <queue> <meta>" in RESP, at w (without the array
 * header, like every batch's command); returns the end. Room: the sha, the
 * name and the meta key plus 64. */
char *redq__pr_put_push_head(redq_producer *p, const batch *b, char *w)
{
    static const char pre[] = "$7\r\nEVALSHA\r\n$40\r\n";
    static const char mid[] = "\r\n$1\r\n2\r\n$";
    memcpy(w, pre, sizeof pre - 1);
    w += sizeof pre - 1;
    memcpy(w, p->scripts.sha[REDQ__SCRIPT_PUSH], 40);
    w += 40;
    memcpy(w, mid, sizeof mid - 1);
    w += sizeof mid - 1;
    w += redq__pr_put_uint(w, b->qlen);
    *w++ = '\r';
    *w++ = '\n';
    memcpy(w, b->qname, b->qlen);
    w += b->qlen;
    *w++ = '\r';
    *w++ = '\n';
    *w++ = '$';
    w += redq__pr_put_uint(w, b->fmt->metalen);
    *w++ = '\r';
    *w++ = '\n';
    memcpy(w, b->fmt->meta, b->fmt->metalen);
    return w + b->fmt->metalen;
}


/* ---- backpressure from the queue (max_queue_len) ------------------------ */

static void arm_throttle_poll(redq_producer *p)
{
    struct timeval tv;
    unsigned us = p->linger_us < 100 ? 100 : p->linger_us;
    tv.tv_sec = us / 1000000u;
    tv.tv_usec = us % 1000000u;
    event_add(p->t_throttle, &tv);
}

void redq__pr_throttle(redq_producer *p, const char *queue)
{
    size_t n = strlen(queue) + 1;
    char *q;
    if (p->throttled)
        return;
    q = realloc(p->throttle_q, n);
    if (q == NULL)
        return; /* no memory to watch it: do not stop */
    memcpy(q, queue, n);
    p->throttle_q = q;
    p->throttled = 1;
    p->st.throttle_events++;
    redq__log(&p->log, REDQ_LOG_DEBUG, 0,
              "queue %s reached max_queue_len %zu: sending paused", queue,
              p->max_queue_len);
    arm_throttle_poll(p);
}

static void on_llen_reply(redq__conn *c, void *reply, void *arg)
{
    redq_producer *p = arg;
    redisReply *r = reply;
    (void)c;
    p->llen_inflight = 0;
    if (p->closing || !p->throttled)
        return;
    /* Resume below 3/4 of the limit, so sending does not flap around it. */
    if (r != NULL && r->type == REDIS_REPLY_INTEGER &&
        (size_t)r->integer < p->max_queue_len - p->max_queue_len / 4) {
        p->throttled = 0;
        if (p->adaptive && p->inflight == 0)
            redq__pr_seal_all(p);
        redq__pr_pump(p);
        return;
    }
    arm_throttle_poll(p);
}

void redq__pr_throttle_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_producer *p = arg;
    const char *argv[2];
    (void)fd;
    (void)what;
    if (!p->throttled || p->llen_inflight)
        return;
    argv[0] = "LLEN";
    argv[1] = p->throttle_q;
    if (redq__conn_sendv(p->conn, 2, argv, NULL, 0, on_llen_reply, p) == 0)
        p->llen_inflight = 1;
    else
        arm_throttle_poll(p); /* not connected: look again later */
}

/* ---- queue formats (docs/DESIGN.md, "Ids and formats") ----------------- */


/*
 * Rewrite batch b's command for the other format: LPUSH of the payloads,
 * or PUSH of frames "RQ1 id=<id> ts=<now>\n<payload>". Only for a batch
 * that is not in flight. The payloads are copied once into a new buffer
 * (a format changes once per queue and producer, or when an operator
 * switches it): the plain path never pays for this. Returns 0 or
 * REDQ_ENOMEM (b unchanged).
 */
static int rebuild(redq_producer *p, batch *b, int frames)
{
    size_t need = HEADER_ROOM + 160 + 2 * b->qlen + b->fmt->metalen, i, j = 0;
    long long now = frames ? redq__wall_ms() : -1;
    char *nb, *w;
    batch tmp;

    for (i = 0; i < b->n; i++)
        need += b->msgs[i].len + 24 + (frames ? REDQ__READY_HEADER_MAX : 0);
    nb = malloc(need);
    if (nb == NULL)
        return REDQ_ENOMEM;
    tmp = *b;
    tmp.frames = frames;
    w = nb + HEADER_ROOM;
    if (frames) {
        w = redq__pr_put_push_head(p, &tmp, w);
    } else {
        static const char pre[] = "$5\r\nLPUSH\r\n$";
        memcpy(w, pre, sizeof pre - 1);
        w += sizeof pre - 1;
        w += redq__pr_put_uint(w, b->qlen);
        *w++ = '\r';
        *w++ = '\n';
        memcpy(w, b->qname, b->qlen);
        w += b->qlen;
    }
    *w++ = '\r';
    *w++ = '\n';
    for (i = 0; i < b->n; i++) {
        msg_entry *m = &b->msgs[i];
        char hdr[REDQ__READY_HEADER_MAX], id[REDQ__MSG_ID_MAX];
        size_t hl = 0;
        /* An owned payload spliced at send time is copied in now: a
         * frames batch goes through EVALSHA in one piece. */
        owned_entry *e = j < b->nown && b->own[j].idx == i ? &b->own[j++]
                                                            : NULL;
        const char *src = e != NULL && e->spliced ? (const char *)e->data
                                                  : b->buf + m->off;
        if (e != NULL && e->spliced) {
            e->spliced = 0;
            b->nsplice--;
            b->spliced_bytes -= m->len;
        }
        if (frames)
            hl = redq__ready_header(hdr, id, redq__msg_id(id, p->id, m->seq + 1),
                                    now);
        *w++ = '$';
        w += redq__pr_put_uint(w, hl + m->len);
        *w++ = '\r';
        *w++ = '\n';
        memcpy(w, hdr, hl);
        w += hl;
        if (m->len > 0)
            memcpy(w, src, m->len);
        m->off = (size_t)(w - nb);
        w += m->len;
        *w++ = '\r';
        *w++ = '\n';
    }
    free(b->buf);
    b->buf = nb;
    b->cap = need;
    b->len = (size_t)(w - nb);
    b->frames = frames;
    if (b->state != B_OPEN)
        redq__pr_put_argc(b);
    return 0;
}

/* The format of f's queue is known now (again): every batch of that queue
 * not in flight takes that form. */
static void apply_format(redq_producer *p, redq__qfmt *f)
{
    int frames = f->format == REDQ_FORMAT_FRAMES;
    batch *b, *next;
    blist *lists[2];
    size_t k;
    lists[0] = &p->fifo;
    lists[1] = &p->open;
    for (k = 0; k < 2; k++)
        for (b = lists[k]->head; b != NULL; b = next) {
            next = b->next;
            if (b->fmt != f || b->frames == frames ||
                (b->state != B_OPEN && b->state != B_SEALED))
                continue;
            if (rebuild(p, b, frames) != 0)
                redq__pr_fail_batch(p, b, REDQ_ENOMEM,
                           "out of memory rewriting a batch for the queue's "
                           "format");
        }
}

/* The format a meta field's value says (NULL: absent, plain). */
static int format_of(const redisReply *v)
{
    return v != NULL && v->type == REDIS_REPLY_STRING &&
                   v->len == sizeof REDQ__FORMAT_FRAMES_VALUE - 1 &&
                   memcmp(v->str, REDQ__FORMAT_FRAMES_VALUE, (size_t)v->len) ==
                       0
               ? REDQ_FORMAT_FRAMES
               : REDQ_FORMAT_PLAIN;
}

/* The partition fields of f's queue were read (pv/tv: the values, NULL
 * when absent): from now on unkeyed messages spread over the active ones
 * and keyed ones go by key; the keyed messages that waited go now. A
 * partition's tag never changes once made (ptags only grows): a name
 * already made is kept unless its tag differs (then it is another
 * partition, and made anew). */
static void parts_read(redq_producer *p, redq__qfmt *f, const redisReply *pv,
                       const redisReply *tv)
{
    redq__parts pt;
    int bad = redq__parts_from_reply(&pt, pv, tv);
    if (bad != 0)
        redq__log(&p->log, REDQ_LOG_WARN, bad,
                  "queue %s: partition fields of %s do not parse; using %u "
                  "of them",
                  f->name, f->meta, pt.active);
    if (pt.total > 1 && f->parts == NULL) {
        f->parts = calloc(1, sizeof *f->parts);
        if (f->parts == NULL) {
            /* No memory for the names: everything stays in Q itself. */
            pt.active = 1;
            pt.total = 1;
        }
    }
    if (f->parts_known && pt.active != f->pactive)
        redq__log(&p->log, REDQ_LOG_INFO, 0,
                  "queue %s: %u active partitions (of %u)", f->name,
                  pt.active, pt.total);
    if (f->parts != NULL) {
        redq__qparts *qp = f->parts;
        unsigned i;
        for (i = 1; i < REDQ__MAX_PARTITIONS; i++)
            if (qp->pname[i] != NULL &&
                (i >= pt.total ||
                 strcmp(qp->parts.tag[i], pt.tag[i]) != 0)) {
                free(qp->pname[i]);
                qp->pname[i] = NULL;
            }
        qp->parts = pt;
        if (qp->cur >= pt.active) {
            qp->cur = 0;
            qp->cur_sent = 0;
        }
    }
    f->pactive = pt.active;
    f->parts_known = 1;
    if (f->hhead != NULL)
        redq__pr_dispatch_held(p, f);
}

/* The answer to HMGET <meta> format partitions ptags. */
static void on_format_reply(redq__conn *c, void *reply, void *arg)
{
    redq__qfmt *f = arg;
    redq_producer *p = f->owner;
    redisReply *r = reply;
    int was = f->format;
    f->learning = 0;
    if (r == NULL || p->closing)
        return; /* asked again when the connection is back */
    if (r->type == REDIS_REPLY_ERROR &&
        redq__err_is_transient(r->str, (size_t)r->len)) {
        /* LOADING, BUSY, ...: not answered; waited out as a batch's "not
         * applied" is (redo the connection with its backoff, ask again). */
        if (!p->redo) {
            p->redo = 1;
            p->redo_code = redq__err_from_reply(r->str, (size_t)r->len);
            snprintf(p->redo_msg, sizeof p->redo_msg, "%s", r->str);
        }
        if (p->inflight == 0 && p->waits == 0)
            redq__pr_redo_now(p, c);
        return;
    }
    if (r->type == REDIS_REPLY_ERROR || r->type != REDIS_REPLY_ARRAY ||
        r->elements != 3) {
        /* A user without HMGET (a least-privilege producer that only
         * LPUSHes), or a meta key of another type: pushed as plain, which
         * a frames queue's consumers still deliver whole, to Q itself
         * (one partition). INFO, once per queue: nothing fails. */
        if (was < 0)
            redq__log(&p->log, REDQ_LOG_INFO,
                      r->type == REDIS_REPLY_ERROR
                          ? redq__err_from_reply(r->str, (size_t)r->len)
                          : REDQ_EPROTOCOL,
                      "queue %s: format and partitions unknown (HMGET %s: "
                      "%s); pushing plain payloads to %s itself",
                      f->name, f->meta,
                      r->type == REDIS_REPLY_ERROR ? r->str
                                                   : "unexpected reply",
                      f->name);
        f->format = REDQ_FORMAT_PLAIN;
        if (!p->inner)
            parts_read(p, f, NULL, NULL);
    } else {
        f->format = format_of(r->element[0]);
        if (!p->inner)
            parts_read(p, f, r->element[1], r->element[2]);
    }
    if (f->format != was) {
        /* First read, or an operator switched the format since the last
         * one (plain -> frames shows here; frames -> plain also as a
         * refused PUSH): the batches of the queue not in flight take the
         * new form. */
        if (was >= 0)
            redq__log(&p->log, REDQ_LOG_INFO, 0,
                      "queue %s is %s now", f->name,
                      redq__format_name(f->format));
        else
            redq__log(&p->log, REDQ_LOG_DEBUG, 0, "queue %s: format %s",
                      f->name, redq__format_name(f->format));
        apply_format(p, f);
    }
    redq__pr_pump(p);
}

/* Ask the queue's format and partitions (HMGET meta format partitions
 * ptags), pipelined like any command. */
void redq__pr_learn_format(redq_producer *p, redq__qfmt *f)
{
    const char *argv[5];
    size_t lens[5];
    argv[0] = "HMGET";
    argv[1] = f->meta;
    argv[2] = REDQ__META_FORMAT;
    argv[3] = REDQ__META_PARTITIONS;
    argv[4] = REDQ__META_PTAGS;
    lens[0] = 5;
    lens[1] = f->metalen;
    lens[2] = sizeof REDQ__META_FORMAT - 1;
    lens[3] = sizeof REDQ__META_PARTITIONS - 1;
    lens[4] = sizeof REDQ__META_PTAGS - 1;
    if (redq__conn_sendv(p->conn, 5, argv, lens, 0, on_format_reply, f) == 0)
        f->learning = 1;
}

/* Every REDQ__PR_META_MS: read again the meta fields of every queue in
 * use since the last tick (P raised or lowered, a format switched), and
 * of queues whose keyed messages wait for their first read. */
void redq__pr_meta_tick(evutil_socket_t fd, short what, void *arg)
{
    redq_producer *p = arg;
    size_t i;
    (void)fd;
    (void)what;
    if (p->closing || !redq__conn_ready(p->conn) || p->redo)
        return;
    for (i = 0; i < p->fmts.nb; i++) {
        redq__qfmt *f;
        for (f = p->fmts.b[i]; f != NULL; f = f->next)
            if ((f->used || f->hhead != NULL) && !f->learning) {
                f->used = 0;
                redq__pr_learn_format(p, f);
            }
    }
}

const char *redq__pr_partition(redq__qfmt *f, unsigned i, size_t *len)
{
    redq__qparts *qp = f->parts;
    if (i == 0 || qp == NULL) {
        *len = f->qlen;
        return f->name;
    }
    if (qp->pname[i] == NULL) {
        qp->pname[i] = redq__partition_name(f->name, f->qlen,
                                            qp->parts.tag[i], i);
        if (qp->pname[i] == NULL)
            return NULL;
        qp->plen[i] = strlen(qp->pname[i]);
    }
    *len = qp->plen[i];
    return qp->pname[i];
}

/*
 * A PUSH of batch b was refused: an operator switched the queue to plain
 * after this producer learnt it (the script checks it where no switch can
 * come between, and pushed nothing). The queue is plain from now on, b and
 * every batch of that queue not in flight become LPUSHes, and nothing is
 * sent until the pipeline has drained: PUSHes of that queue still in flight
 * come back refused too and are rewritten in turn, so when the FIFO goes
 * again from its head (redq__pr_reformat_done) the queue's batches go in their
 * order, nothing lost.
 */
void redq__pr_format_refused(redq_producer *p, batch *b)
{
    b->state = B_SEALED;
    if (b->fmt->format != REDQ_FORMAT_PLAIN)
        redq__log(&p->log, REDQ_LOG_INFO, 0,
                  "queue %s is plain now: resending its frames as plain "
                  "payloads",
                  b->qname);
    b->fmt->format = REDQ_FORMAT_PLAIN;
    apply_format(p, b->fmt);
    p->reformat = 1;
    p->next_unsent = NULL;
}

/* The pipeline has drained after format_refused: send from the head. */
void redq__pr_reformat_done(redq_producer *p)
{
    batch *b;
    p->reformat = 0;
    p->next_unsent = NULL;
    for (b = p->fifo.head; b != NULL; b = b->next)
        if (b->state == B_SEALED) {
            p->next_unsent = b;
            break;
        }
}

/* ---- keyed messages waiting for their queue's partitions ---------------- */

/* A keyed message that waited for its queue's partition count is
 * reported without having been sent (closed, timed out, no memory). */
static void report_held(redq_producer *p, const redq__qfmt *f,
                        redq__qheld *h, int status, const char *why)
{
    redq_report r;
    memset(&r, 0, sizeof r);
    r.queue = f->name;
    r.payload = h->payload;
    r.len = h->len;
    r.opaque = h->opaque;
    r.status = status;
    r.errstr = why;
    r.persisted = REDQ_PERSIST_NOT;
    redq__pr_put_id_number(p, h->seq);
    r.id = p->idbuf;
    p->pending_msgs--;
    p->pending_bytes -= h->len;
    p->st.failed++;
    if (p->on_report != NULL)
        p->on_report(p, &r, p->report_user);
    redq__qheld_free(h);
    if (p->want_ready)
        redq__pr_maybe_ready(p);
    /* A flush may have waited for this one (its deadline, or none). */
    if (p->waiters != NULL)
        redq__pr_defer(p, DEFER_FLUSH_CHECK);
}

/* Report (and free) the held messages accepted before older_than_us, of
 * every queue, oldest first in each. */
void redq__pr_fail_held(redq_producer *p, uint64_t older_than_us, int status,
                      const char *why)
{
    size_t i;
    for (i = 0; p->nheld > 0 && i < p->fmts.nb; i++) {
        redq__qfmt *f;
        for (f = p->fmts.b[i]; f != NULL; f = f->next)
            while (f->hhead != NULL && f->hhead->since_us < older_than_us) {
                redq__qheld *h = f->hhead;
                f->hhead = h->next;
                if (f->hhead == NULL)
                    f->htail = NULL;
                p->nheld--;
                report_held(p, f, h, status, why);
            }
    }
}

/* A keyed message of a queue whose partition count is not known yet:
 * accepted now (window, counters, its id's number), sent when the meta
 * read answers (redq__pr_dispatch_held). */
redq__qheld *redq__qheld_new(const void *key, size_t keylen,
                             const void *payload, size_t len, void *opaque,
                             uint64_t seq)
{
    redq__qheld *h = calloc(1, sizeof *h);
    if (h == NULL)
        return NULL;
    h->key = malloc(keylen + 1);
    h->payload = malloc(len + 1);
    if (h->key == NULL || h->payload == NULL) {
        redq__qheld_free(h);
        return NULL;
    }
    if (keylen > 0)
        memcpy(h->key, key, keylen);
    if (len > 0)
        memcpy(h->payload, payload, len);
    h->keylen = keylen;
    h->len = len;
    h->opaque = opaque;
    h->seq = seq;
    h->since_us = redq__now_us();
    return h;
}

void redq__qheld_free(redq__qheld *h)
{
    if (h == NULL)
        return;
    free(h->key);
    free(h->payload);
    free(h);
}

static int hold(redq_producer *p, redq__qfmt *f, const void *key,
                size_t keylen, const void *payload, size_t len, void *opaque)
{
    redq__qheld *h =
        redq__qheld_new(key, keylen, payload, len, opaque, p->next_seq);
    if (h == NULL)
        return REDQ_ENOMEM;
    p->next_seq++;
    if (f->htail != NULL)
        f->htail->next = h;
    else
        f->hhead = h;
    f->htail = h;
    p->nheld++;
    p->pending_msgs++;
    p->pending_bytes += len;
    p->st.produced++;
    if (!p->sweep_armed)
        redq__pr_arm_sweep(p);
    if (!f->learning && redq__conn_ready(p->conn))
        redq__pr_learn_format(p, f);
    return 0;
}

/* Partition of a key: the CRC16 slot of lib/keys.c (hash tags honoured)
 * modulo the active count. */
static unsigned key_partition(const redq__qfmt *f, const void *key,
                              size_t keylen)
{
    return f->pactive <= 1 ? 0 : redq__key_slot(key, keylen) % f->pactive;
}

int redq__producer_key(redq_producer *p, const char *queue, size_t qlen,
                       const void *key, size_t keylen, const void *payload,
                       size_t len, void *opaque)
{
    redq__qfmt *f = p->lastlq;
    const char *name;
    size_t plen;
    if (p->inner)
        return redq__pr_put_copy(p, NULL, queue, qlen, payload, len, opaque);
    if (f == NULL || f->qlen != qlen || memcmp(f->name, queue, qlen) != 0) {
        f = redq__pr_lq_lookup(p, queue, qlen);
        if (f == NULL)
            return REDQ_ENOMEM;
    }
    if (!f->parts_known)
        return hold(p, f, key, keylen, payload, len, opaque);
    name = redq__pr_partition(f, key_partition(f, key, keylen), &plen);
    if (name == NULL)
        return REDQ_ENOMEM;
    return redq__pr_put_copy(p, f, name, plen, payload, len, opaque);
}

void redq__pr_dispatch_held(redq_producer *p, redq__qfmt *f)
{
    while (f->hhead != NULL && !p->closing) {
        redq__qheld *h = f->hhead;
        uint64_t save = p->next_seq;
        const char *name;
        size_t plen;
        int rc = REDQ_ENOMEM;
        f->hhead = h->next;
        if (f->hhead == NULL)
            f->htail = NULL;
        p->nheld--;
        /* Accepted (and counted) already: put_copy counts it again. */
        p->pending_msgs--;
        p->pending_bytes -= h->len;
        p->st.produced--;
        name = redq__pr_partition(f, key_partition(f, h->key, h->keylen),
                                  &plen);
        if (name != NULL) {
            p->next_seq = h->seq; /* appended() numbers it from here */
            rc = redq__pr_put_copy(p, f, name, plen, h->payload, h->len, h->opaque);
            p->next_seq = save;
        }
        if (rc != 0) {
            p->pending_msgs++;
            p->pending_bytes += h->len;
            p->st.produced++;
            report_held(p, f, h, rc, redq_strerror(rc));
            continue;
        }
        redq__qheld_free(h);
    }
    if (p->waiters != NULL)
        redq__pr_defer(p, DEFER_FLUSH_CHECK);
}
