/*
 * At-least-once delivery: what happens to a message between its pop and
 * its end, and to the consumers that die holding some.
 *
 *   Q (raw) -----TAKE / BLMOVE--> proc:<holder>  --ack (LREM/LTRIM)--> gone
 *   due (frames) --TAKE--------> fproc:<holder> --/
 *                                     |
 *          nack, visibility timeout   +--> delayed (retry, backoff) --PROMOTE--> due
 *          last attempt, malformed    +--> dead
 *          holder died (no heartbeat) +--> due (REAP, by a live consumer)
 *          stop / lost pop reply      +--> back where it came from (RETURN)
 *
 * A holder is one pool connection ("<consumer id>.<k>"): each has its own
 * processing lists, so a list's order is the order of one connection's
 * pops, which is the order the client delivered them in. That is what
 * makes the two-ends ack check (ACKFAST) sound with any pool size, and what
 * lets a pop whose reply was lost be reconciled exactly: whatever the list
 * holds beyond what the client tracks arrived last, at its head.
 *
 * All moves between keys are Lua scripts (lib/scripts.c). Commands that
 * must not be lost (acks, settles, returns) go through an outbox on the
 * control connection, kept in order until Redis answers them, and resent
 * in the same order after a lost connection or a transient error (LOADING,
 * BUSY, ...). Each is idempotent: a message no longer in its processing
 * list is left alone, so a resend cannot duplicate it.
 *
 * The attempt count travels with the message once it has one: a frame
 * (lib/frame.c) in the due list, the delayed zset and the dead list. A raw
 * message taken from Q is on its first attempt.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "consumer_int.h"

enum { OUT_ACK, OUT_ACKFAST, OUT_SETTLE, OUT_SYNC, OUT_OTHER, OUT_REMOVE };

/* One server: how often a consumer reads its queues' partition fields. */
#define REDQ__PARTS_POLL_US (2u * 1000000u)

#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
/* Room in front of an ack buffer for "*N EVALSHA sha 1 key". */
#define ACK_HEADER_ROOM(pl) (160 + (pl)->keylen + (pl)->metalen)
/* A nack's reason is cut to this many bytes before it is stored. */
#define REASON_MAX 1024
/* Messages REAP and DEADREQUEUE move per call: a script blocks the server. */
#define REAP_BATCH 256

static uint32_t rng_next(redq_consumer *c)
{
    uint32_t x = c->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return c->rng = x;
}

/* "$<len>\r\n<bytes>\r\n" at w; returns the bytes written. Sizes stay in
 * size_t: a bulk may be up to 512 MiB. */
static size_t put_bulk(char *w, const char *s, size_t len)
{
    size_t n = (size_t)sprintf(w, "$%zu\r\n", len);
    memcpy(w + n, s, len);
    n += len;
    w[n] = '\r';
    w[n + 1] = '\n';
    return n + 2;
}

/* A RESP command in one malloc'd buffer; NULL when out of memory. */
static char *format_cmd(size_t argc, const char **argv, const size_t *lens,
                        size_t *out_len)
{
    size_t need = 24, i, off;
    char *buf;
    for (i = 0; i < argc; i++)
        need += lens[i] + 24;
    buf = malloc(need);
    if (buf == NULL)
        return NULL;
    off = (size_t)sprintf(buf, "*%zu\r\n", argc);
    for (i = 0; i < argc; i++)
        off += put_bulk(buf + off, argv[i], lens[i]);
    *out_len = off;
    return buf;
}

static char *format_cmdz(size_t argc, const char **argv, size_t *out_len)
{
    size_t lens[16], i;
    for (i = 0; i < argc; i++)
        lens[i] = strlen(argv[i]);
    return format_cmd(argc, argv, lens, out_len);
}

int redq__rel_send_script(redq__conn *conn, int script, size_t argc,
                          const char **argv, const size_t *lens,
                          int extra_timeout_ms, redq__reply_cb cb, void *arg)
{
    size_t n, i, stack[32], *ln = stack;
    char *cmd;
    int rc;
    if (lens == NULL) {
        if (argc > 32 && (ln = malloc(argc * sizeof *ln)) == NULL)
            return REDQ_ENOMEM;
        for (i = 0; i < argc; i++)
            ln[i] = strlen(argv[i]);
    } else {
        ln = (size_t *)lens;
    }
    cmd = format_cmd(argc, argv, ln, &n);
    if (ln != stack && ln != lens)
        free(ln);
    if (cmd == NULL)
        return REDQ_ENOMEM;
    /* The connection loads the script on its first use (a least-privilege
     * user that never needs a script never needs SCRIPT LOAD). */
    rc = redq__conn_send_script(conn, script, cmd, n, extra_timeout_ms, cb,
                                arg);
    free(cmd);
    return rc;
}

/* ---- the outbox ----------------------------------------------------------
 * out_head: not sent yet (the control connection is down); sent_head: sent,
 * replies awaited, in send order. A command that must be sent again goes
 * back to the front, with everything sent after it, so order holds. */

static void on_out_reply(redq__conn *conn, void *reply, void *arg);

static void out_send_all(redq_consumer *c)
{
    while (c->out_head != NULL && redq__conn_ready(c->ctl)) {
        outcmd *o = c->out_head;
        if (redq__conn_send_script(c->ctl, o->script, o->buf, o->len, 0,
                                   on_out_reply, c) != 0)
            break;
        c->out_head = o->next;
        if (c->out_head == NULL)
            c->out_tail = NULL;
        o->next = NULL;
        if (c->sent_tail != NULL)
            c->sent_tail->next = o;
        else
            c->sent_head = o;
        c->sent_tail = o;
    }
}

static const char *kind_name(int kind)
{
    switch (kind) {
    case OUT_ACK:
    case OUT_ACKFAST:
        return "ack";
    case OUT_SETTLE:
        return "retry/dead-letter";
    case OUT_SYNC:
        return "return of untracked messages";
    case OUT_REMOVE:
        return "return of a removed queue";
    default:
        return "return/deregister";
    }
}

static void out_push(redq_consumer *c, int script, char *buf, size_t len,
                     int kind, char *fallback, size_t fallback_len, void *ctx)
{
    outcmd *o = malloc(sizeof *o);
    if (o == NULL) {
        free(buf);
        free(fallback);
        /* What stays in a processing list is returned by the stop (RETURN
         * "stop") or, after a crash, by a reaper: delayed, never lost. */
        redq__log(&c->log, REDQ_LOG_ERROR, REDQ_ENOMEM,
                  "out of memory: an %s was not sent; the message stays in "
                  "the processing list until this consumer stops",
                  kind_name(kind));
        return;
    }
    o->buf = buf;
    o->len = len;
    o->script = script;
    o->kind = kind;
    o->fallback = fallback;
    o->fallback_len = fallback_len;
    o->ctx = ctx;
    o->next = NULL;
    if (c->out_tail != NULL)
        c->out_tail->next = o;
    else
        c->out_head = o;
    c->out_tail = o;
    out_send_all(c);
}

static void free_outcmd(outcmd *o)
{
    free(o->buf);
    free(o->fallback);
    free(o);
}

static void free_outcmds(outcmd *o)
{
    while (o != NULL) {
        outcmd *next = o->next;
        free_outcmd(o);
        o = next;
    }
}

/* Everything sent and not answered goes back in front of what was never
 * sent, in the same order. */
static void out_requeue_sent(redq_consumer *c)
{
    if (c->sent_head == NULL)
        return;
    c->sent_tail->next = c->out_head;
    if (c->out_head == NULL)
        c->out_tail = c->sent_tail;
    c->out_head = c->sent_head;
    c->sent_head = c->sent_tail = NULL;
}

static void sync_done(redq_consumer *c, popper *pp, redisReply *r)
{
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->type == REDIS_REPLY_INTEGER) {
        long long n = r->element[0]->integer + r->element[1]->integer;
        if (n > 0) {
            c->st.returned += (uint64_t)n;
            redq__log(&c->log, REDQ_LOG_WARN, 0,
                      "returned %lld message(s) that a pop took while its "
                      "reply was lost", n);
        }
    }
    if (pp->sync_left > 0 && --pp->sync_left == 0) {
        pp->sync = 0;
        redq__consumer_defer(c, DEFER_KICK);
    }
}

static void on_out_reply(redq__conn *conn, void *reply, void *arg)
{
    redq_consumer *c = arg;
    redisReply *r = reply;
    outcmd *o = c->sent_head;

    if (o == NULL)
        return; /* already put back for resending (see below) */
    if (r == NULL || (r->type == REDIS_REPLY_ERROR &&
                      (strncmp(r->str, "NOSCRIPT", 8) == 0 ||
                       redq__err_is_transient(r->str, (size_t)r->len)))) {
        /* Not answered, or not applied (the server forgot the scripts, is
         * loading, busy, a cluster's MOVED/ASK/TRYAGAIN/CLUSTERDOWN on a
         * pinned connection, ...): send all of them again, in order, once the
         * connection is back. The later ones get NULL from the reset and
         * are found already requeued. */
        out_requeue_sent(c);
        if (r != NULL)
            redq__conn_reset(conn, redq__err_from_reply(r->str, (size_t)r->len),
                             r->str);
        return;
    }
    c->sent_head = o->next;
    if (c->sent_head == NULL)
        c->sent_tail = NULL;
    if (o->kind == OUT_ACKFAST && r->type == REDIS_REPLY_INTEGER &&
        r->integer < 0) {
        /* The list was not as the client saw it: ack one by one. */
        out_push(c, REDQ__SCRIPT_ACK, o->fallback, o->fallback_len, OUT_ACK,
                 NULL, 0, NULL);
        o->fallback = NULL;
    } else if (r->type == REDIS_REPLY_ERROR) {
        c->st.errors++;
        redq__log(&c->log, REDQ_LOG_ERROR,
                  redq__err_from_reply(r->str, (size_t)r->len), "%s: %s",
                  kind_name(o->kind), r->str);
    }
    if (o->kind == OUT_SYNC)
        sync_done(c, o->ctx, r);
    if (o->kind == OUT_REMOVE) {
        size_t qi = (size_t)(uintptr_t)o->ctx - 1;
        if (qi < c->nq && c->rq[qi].return_left > 0 &&
            --c->rq[qi].return_left == 0) {
            c->rq[qi].remove_done = 1; /* the callback from the loop */
            redq__consumer_defer(c, DEFER_REMOVE);
        }
    }
    free_outcmd(o);
    if (c->stopping || c->closing)
        redq__consumer_defer(c, DEFER_CHECK_STOP);
}

/* ---- set-up -------------------------------------------------------------- */

static void visibility_cb(evutil_socket_t fd, short what, void *arg);
static void heartbeat_cb(evutil_socket_t fd, short what, void *arg);
static void promote_cb(evutil_socket_t fd, short what, void *arg);

static char *holder_key(const redq_consumer *c, size_t qi, const char *kind,
                        const char *holder)
{
    char sfx[64];
    snprintf(sfx, sizeof sfx, "%s:%s", kind, holder);
    return redq__key(c->queues[qi], c->qlens[qi], sfx);
}

int redq__rel_init(redq_consumer *c, const redq__options *o)
{
    size_t i;
    uint64_t seed;

    c->visibility_timeout_ms = o->visibility_timeout_ms;
    c->max_attempts = o->max_attempts;
    c->retry_base_ms = o->retry_base_ms;
    c->retry_max_ms = o->retry_max_ms;
    c->consumer_ttl_ms = o->consumer_ttl_ms;
    c->promote_interval_ms = o->promote_interval_ms;
    redq__scripts_init(&c->scripts);

    /* The instance id names this consumer's processing lists: it must not
     * collide with another live consumer's, here or on another host. */
    seed = redq__now_us() ^ ((uint64_t)redq__wall_ms() << 20) ^
           ((uint64_t)getpid() << 40) ^ (uint64_t)(uintptr_t)c;
    c->rng = (uint32_t)(seed ^ (seed >> 32)) | 1u;
    if (c->id[0] == '\0') { /* (an inner consumer has its outer's) */
        uint32_t a = rng_next(c), b = rng_next(c);
        snprintf(c->id, sizeof c->id, "%08x%08x", a ^ (uint32_t)seed, b);
    }

    c->rq = calloc(c->nq, sizeof *c->rq);
    c->fmt_unknown = c->nq; /* no pops before each queue's format is known */
    c->t_visibility = event_new(c->base, -1, 0, visibility_cb, c);
    c->t_heartbeat = event_new(c->base, -1, 0, heartbeat_cb, c);
    c->t_promote = event_new(c->base, -1, 0, promote_cb, c);
    c->registry = redq__registry_new(&c->log);
    if (!c->rq || !c->t_visibility || !c->t_heartbeat || !c->t_promote ||
        !c->registry)
        return REDQ_ENOMEM;
    for (i = 0; i < c->npool; i++) {
        c->pool[i].idx = i;
        snprintf(c->pool[i].holder, sizeof c->pool[i].holder, "%s.%zu",
                 c->id, i);
    }
    for (i = 0; i < c->nq; i++)
        if (redq__rel_queue_init(c, i) != 0)
            return REDQ_ENOMEM;
    return 0;
}

int redq__rel_queue_init(redq_consumer *c, size_t i)
{
    relq *q = &c->rq[i];
    const char *qn = c->queues[i];
    size_t ql = c->qlens[i], k;
    q->due = redq__key(qn, ql, "due");
    q->delayed = redq__key(qn, ql, "delayed");
    q->dead = redq__key(qn, ql, "dead");
    q->consumers = redq__key(qn, ql, "consumers");
    q->reaper = redq__key(qn, ql, "reaper");
    q->meta = redq__key(qn, ql, "meta");
    q->qenc = malloc(3 * ql + 1);
    if (!q->due || !q->delayed || !q->dead || !q->consumers || !q->reaper ||
        !q->qenc || !q->meta)
        return REDQ_ENOMEM;
    /* "q=" in the dead-letter frames REAP makes, encoded as lib/frame.c
     * encodes values. */
    q->qenc[redq__pct_encode(q->qenc, qn, ql)] = '\0';
    if (!c->reliable)
        return 0;
    q->pl = calloc(2 * c->npool, sizeof *q->pl);
    q->hb = calloc(c->npool, sizeof *q->hb);
    if (q->pl == NULL || q->hb == NULL)
        return REDQ_ENOMEM;
    for (k = 0; k < c->npool; k++) {
        const char *h = c->pool[k].holder;
        q->pl[2 * k].key = holder_key(c, i, "proc", h);
        q->pl[2 * k + 1].key = holder_key(c, i, "fproc", h);
        q->hb[k] = holder_key(c, i, "hb", h);
        if (!q->pl[2 * k].key || !q->pl[2 * k + 1].key || !q->hb[k])
            return REDQ_ENOMEM;
        q->pl[2 * k].keylen = strlen(q->pl[2 * k].key);
        q->pl[2 * k + 1].keylen = strlen(q->pl[2 * k + 1].key);
        q->pl[2 * k].meta = q->pl[2 * k + 1].meta = q->meta;
        q->pl[2 * k].metalen = q->pl[2 * k + 1].metalen = strlen(q->meta);
    }
    return 0;
}

void redq__rel_queue_free(redq_consumer *c, size_t i)
{
    relq *q = &c->rq[i];
    size_t k;
    free(q->due);
    free(q->delayed);
    free(q->dead);
    free(q->consumers);
    free(q->reaper);
    free(q->meta);
    free(q->qenc);
    if (q->pl != NULL)
        for (k = 0; k < 2 * c->npool; k++) {
            free(q->pl[k].key);
            free(q->pl[k].ackbuf);
        }
    if (q->hb != NULL)
        for (k = 0; k < c->npool; k++)
            free(q->hb[k]);
    free(q->pl);
    free(q->hb);
    memset(q, 0, sizeof *q);
}

void redq__rel_free(redq_consumer *c)
{
    size_t i;
    if (c->rq != NULL) {
        for (i = 0; i < c->nq; i++)
            redq__rel_queue_free(c, i);
        free(c->rq);
    }
    redq__registry_free(c->registry);
    free_outcmds(c->out_head);
    free_outcmds(c->sent_head);
    if (c->t_visibility != NULL)
        event_free(c->t_visibility);
    if (c->t_heartbeat != NULL)
        event_free(c->t_heartbeat);
    if (c->t_promote != NULL)
        event_free(c->t_promote);
}

/* ---- the live list (by visibility deadline) and the plists ------------- */

static void live_remove(redq_consumer *c, redq_message *m)
{
    if (m->prev != NULL)
        m->prev->next = m->next;
    else
        c->live_head = m->next;
    if (m->next != NULL)
        m->next->prev = m->prev;
    else
        c->live_tail = m->prev;
    m->prev = m->next = NULL;
}

/* Insert keeping the list sorted by deadline: from the tail, since a new
 * or extended deadline is usually the latest. */
static void live_insert(redq_consumer *c, redq_message *m)
{
    redq_message *after = c->live_tail;
    while (after != NULL && after->deadline_us > m->deadline_us)
        after = after->prev;
    m->prev = after;
    m->next = after != NULL ? after->next : c->live_head;
    if (m->next != NULL)
        m->next->prev = m;
    else
        c->live_tail = m;
    if (after != NULL)
        after->next = m;
    else
        c->live_head = m;
}

static void pl_remove(redq_message *m)
{
    plist *pl = m->pl;
    if (m->pl_prev != NULL)
        m->pl_prev->pl_next = m->pl_next;
    else
        pl->head = m->pl_next;
    if (m->pl_next != NULL)
        m->pl_next->pl_prev = m->pl_prev;
    else
        pl->tail = m->pl_prev;
    m->pl_prev = m->pl_next = NULL;
}

/* A live message leaves the client's books: a command that takes it out of
 * its processing list has been gathered or queued. */
static void unlive(redq_consumer *c, redq_message *m)
{
    live_remove(c, m);
    pl_remove(m);
    if (m->pl->held > 0)
        m->pl->held--;
}

static void arm_visibility(redq_consumer *c)
{
    uint64_t now, dl;
    struct timeval tv;
    if (c->live_head == NULL)
        return;
    now = redq__now_us();
    dl = c->live_head->deadline_us;
    dl = dl > now ? dl - now : 0;
    tv.tv_sec = (time_t)(dl / 1000000u);
    tv.tv_usec = (suseconds_t)(dl % 1000000u) + 1000;
    event_add(c->t_visibility, &tv);
}

/* ---- settling: retry or dead-letter ------------------------------------- */

static long long backoff_ms(redq_consumer *c, int attempt)
{
    long long d = c->retry_base_ms;
    int i;
    for (i = 1; i < attempt && d < c->retry_max_ms; i++)
        d *= 2;
    if (d > c->retry_max_ms)
        d = c->retry_max_ms;
    /* +-20% so that a burst of failures does not come back as a burst. */
    if (d >= 5)
        d = d - d / 5 + (long long)(rng_next(c) % (uint32_t)(2 * (d / 5) + 1));
    return d;
}

/*
 * Send message `m` down the retry path, or to the dead-letter list if this
 * was its last attempt or `force_dead`. Its new frame carries the payload
 * verbatim. The script takes it out of its processing list first and does
 * nothing if it is no longer there.
 */
static void settle(redq_consumer *c, redq_message *m, const char *why,
                   int force_dead)
{
    relq *q = &c->rq[m->qidx];
    int dead = force_dead || m->attempt >= c->max_attempts;
    char delay[24], reason[REASON_MAX + 64];
    /* Never empty: the producer's, or the one made at the first delivery,
     * which every later attempt and the dead letter show. */
    const char *id = redq__msg_idstr(m);
    const char *argv[11];
    size_t lens[11], flen, cmd_len, i;
    char *frame, *cmd;
    long long now = redq__wall_ms();

    snprintf(reason, sizeof reason, "%.*s (attempt %d of %d)", REASON_MAX,
             why, m->attempt, c->max_attempts);
    frame = malloc(redq__frame_size(m->len, id, reason, m->queue));
    if (frame == NULL)
        goto nomem;
    flen = redq__frame_build(frame, m->data, m->len, id, m->attempt,
                             m->ts_ms >= 0 ? m->ts_ms : now,
                             dead ? reason : NULL, dead ? now : -1,
                             dead ? m->queue : NULL);
    snprintf(delay, sizeof delay, "%lld", dead ? 0 : backoff_ms(c, m->attempt));
    argv[0] = "EVALSHA";
    argv[1] = c->scripts.sha[REDQ__SCRIPT_SETTLE];
    argv[2] = "3";
    argv[3] = m->state == M_FAST ? q->due : m->pl->key; /* same slot */
    argv[4] = dead ? q->dead : q->delayed;
    argv[5] = q->meta;
    argv[6] = dead ? "dead" : "retry";
    argv[7] = m->raw;
    argv[8] = frame;
    argv[9] = delay;
    argv[10] = m->state == M_FAST ? "0" : "1";
    for (i = 0; i < 11; i++) /* the message and frame are not strings */
        lens[i] = i == 7 ? m->raw_len : i == 8 ? flen : strlen(argv[i]);
    cmd = format_cmd(11, argv, lens, &cmd_len);
    free(frame);
    if (cmd == NULL)
        goto nomem;
    if (dead) {
        c->st.dead_lettered++;
        redq__log(&c->log, REDQ_LOG_WARN, 0, "%s: dead-lettered: %s",
                  m->queue, reason);
    } else {
        c->st.retried++;
    }
    out_push(c, REDQ__SCRIPT_SETTLE, cmd, cmd_len, OUT_SETTLE, NULL, 0, NULL);
    return;
nomem:
    redq__log(&c->log, REDQ_LOG_ERROR, REDQ_ENOMEM,
              "out of memory settling a message of %s%s", m->queue,
              m->state == M_FAST ? "; it is lost"
                                 : "; it stays in the processing list until "
                                   "this consumer stops");
    if (m->state != M_FAST)
        m->pl->held++; /* not taken out after all */
}

/* ---- messages ------------------------------------------------------------ */

int redq__rel_prepare(redq_consumer *c, redq_message *m, char *idspace)
{
    redq__frame f;
    char err[128];
    if (redq__frame_parse(m->raw, m->raw_len, &f, err, sizeof err) != 0) {
        /* Only redq writes due lists, but someone may have by hand. Keep it
         * whole, with the reason, for an operator to look at. */
        m->data = m->raw;
        m->len = m->raw_len;
        m->id = "";
        m->idseq = ++c->idseq;
        m->ts_ms = -1;
        m->attempt = 1;
        settle(c, m, err, 1);
        return REDQ_EPROTOCOL;
    }
    m->data = f.body;
    m->len = f.body_len;
    m->attempt = f.attempts >= REDQ__MAX_ATTEMPTS ? REDQ__MAX_ATTEMPTS
                                                  : f.attempts + 1;
    m->ts_ms = f.ts_ms;
    m->id = "";
    if (f.id[0] != '\0') {
        memcpy(idspace, f.id, strlen(f.id) + 1);
        m->id = idspace;
    } else {
        m->idseq = ++c->idseq; /* a frame made by hand: one of ours */
    }
    return 0;
}

void redq__rel_delivered(redq_consumer *c, redq_message *m)
{
    plist *pl = m->pl;
    if (m->state != M_LIVE)
        return;
    m->deadline_us =
        redq__now_us() + (uint64_t)c->visibility_timeout_ms * 1000u;
    live_insert(c, m);
    m->pl_next = NULL;
    m->pl_prev = pl->tail;
    if (pl->tail != NULL)
        pl->tail->pl_next = m;
    else
        pl->head = m;
    pl->tail = m;
    if (c->live_head == m)
        arm_visibility(c);
}

static void visibility_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_consumer *c = arg;
    uint64_t now = redq__now_us();
    char why[96];
    (void)fd;
    (void)what;
    snprintf(why, sizeof why, "not acked within the visibility timeout");
    while (c->live_head != NULL && c->live_head->deadline_us <= now &&
           !c->closing) {
        redq_message *m = c->live_head;
        unlive(c, m);
        settle(c, m, why, 0);
        /* It is Redis's again: its window place is free for new work
         * while the handler, if it ever finishes, only releases memory. */
        m->state = M_SETTLED;
        c->unacked--;
        c->st.expired++;
        redq__consumer_defer(c, DEFER_KICK | DEFER_CHECK_STOP);
    }
    arm_visibility(c);
}

int redq__rel_extend(redq_consumer *c, redq_message *m, int ms)
{
    if (m->state == M_SETTLED)
        return REDQ_ETIMEDOUT;
    if (m->state != M_LIVE)
        return 0;
    live_remove(c, m);
    m->deadline_us = redq__now_us() + (uint64_t)ms * 1000u;
    live_insert(c, m);
    event_del(c->t_visibility);
    arm_visibility(c);
    return 0;
}

int redq__rel_ack(redq_consumer *c, redq_message *m)
{
    plist *pl;
    size_t room, need;
    int oldest;

    if (m->state == M_SETTLED)
        return REDQ_ETIMEDOUT;
    if (m->state != M_LIVE)
        return 0;
    pl = m->pl;
    /* The oldest the client tracks in this list: with every earlier ack of
     * the batch the same, they are exactly the list's oldest. */
    oldest = m == pl->head;
    room = ACK_HEADER_ROOM(pl);
    need = (pl->acklen ? pl->acklen : room) + m->raw_len + 32;
    if (need > pl->ackcap) {
        size_t ncap = pl->ackcap ? pl->ackcap * 2 : 4096;
        char *n;
        while (ncap < need)
            ncap *= 2;
        n = realloc(pl->ackbuf, ncap);
        if (n == NULL) {
            redq__log(&c->log, REDQ_LOG_ERROR, REDQ_ENOMEM,
                      "out of memory: an ack of %s was not sent (the message "
                      "stays in the processing list until this consumer "
                      "stops)", m->queue);
            live_remove(c, m);
            pl_remove(m);
            return 0;
        }
        pl->ackbuf = n;
        pl->ackcap = ncap;
    }
    unlive(c, m);
    if (pl->acklen == 0) {
        pl->acklen = room;
        pl->ack_inorder = 1;
        pl->first_off = room;
        pl->first_len = m->raw_len;
    }
    pl->ack_inorder &= oldest;
    pl->last_off = pl->acklen;
    pl->last_len = m->raw_len;
    pl->acklen += put_bulk(pl->ackbuf + pl->acklen, m->raw, m->raw_len);
    pl->nacks++;
    /* Gathered per loop iteration: one script call acks them all. */
    redq__consumer_defer(c, DEFER_FLUSH_ACKS);
    return 0;
}

/* The gathered acks of one processing list as one command (ACKFAST when
 * they are its oldest, with the full ACK kept as the fallback). */
static void flush_plist(redq_consumer *c, plist *pl)
{
    size_t room = ACK_HEADER_ROOM(pl), hlen, start, blen;
    char hdr[128];
    char *buf;

    if (pl->nacks == 0)
        return;
    /* "*<5+n> EVALSHA sha 2 key meta", right-aligned before the args. The
     * keys go in after the fixed part: they can be long (1 KiB queue
     * names). */
    hlen = (size_t)snprintf(hdr, sizeof hdr, "*%zu\r\n", pl->nacks + 5);
    hlen += put_bulk(hdr + hlen, "EVALSHA", 7);
    hlen += put_bulk(hdr + hlen, c->scripts.sha[REDQ__SCRIPT_ACK], 40);
    hlen += put_bulk(hdr + hlen, "2", 1);
    {
        char klen[32], mlen[32];
        size_t kl = (size_t)sprintf(klen, "$%zu\r\n", pl->keylen);
        size_t ml = (size_t)sprintf(mlen, "$%zu\r\n", pl->metalen);
        size_t total = hlen + kl + pl->keylen + 2 + ml + pl->metalen + 2;
        char *w;
        start = room - total;
        w = pl->ackbuf + start;
        memcpy(w, hdr, hlen);
        w += hlen;
        memcpy(w, klen, kl);
        w += kl;
        memcpy(w, pl->key, pl->keylen);
        w += pl->keylen;
        memcpy(w, "\r\n", 2);
        w += 2;
        memcpy(w, mlen, ml);
        w += ml;
        memcpy(w, pl->meta, pl->metalen);
        w += pl->metalen;
        memcpy(w, "\r\n", 2);
    }
    blen = pl->acklen - start;
    buf = malloc(blen);
    if (buf == NULL)
        return; /* kept; retried at the next flush */
    memcpy(buf, pl->ackbuf + start, blen);
    if (pl->ack_inorder && pl->nacks >= 4) {
        /* In delivery order: send the count and both ends only; the full
         * form waits in case the server disagrees. */
        char kbuf[24], *fast;
        const char *first = pl->ackbuf + pl->first_off,
                   *last = pl->ackbuf + pl->last_off;
        const char *av[8];
        size_t ln[8], flen;
        while (*first++ != '\n') /* skip "$<len>\r\n" */
            ;
        while (*last++ != '\n')
            ;
        snprintf(kbuf, sizeof kbuf, "%zu", pl->nacks);
        av[0] = "EVALSHA";
        av[1] = c->scripts.sha[REDQ__SCRIPT_ACKFAST];
        av[2] = "2";
        av[3] = pl->key;
        av[4] = pl->meta;
        av[5] = kbuf;
        av[6] = first;
        av[7] = last;
        ln[0] = 7;
        ln[1] = 40;
        ln[2] = 1;
        ln[3] = pl->keylen;
        ln[4] = pl->metalen;
        ln[5] = strlen(kbuf);
        ln[6] = pl->first_len;
        ln[7] = pl->last_len;
        fast = format_cmd(8, av, ln, &flen);
        if (fast != NULL) {
            out_push(c, REDQ__SCRIPT_ACKFAST, fast, flen, OUT_ACKFAST, buf,
                     blen, NULL);
            pl->acklen = 0;
            pl->nacks = 0;
            return;
        }
    }
    out_push(c, REDQ__SCRIPT_ACK, buf, blen, OUT_ACK, NULL, 0, NULL);
    pl->acklen = 0;
    pl->nacks = 0;
}

void redq__rel_flush_acks(redq_consumer *c)
{
    size_t i, k;
    if (!c->reliable || c->rq == NULL)
        return;
    for (i = 0; i < c->nq; i++)
        for (k = 0; k < 2 * c->npool; k++)
            flush_plist(c, &c->rq[i].pl[k]);
}

int redq__rel_nack(redq_consumer *c, redq_message *m, const char *reason)
{
    char why[REASON_MAX + 8];
    if (m->state == M_SETTLED)
        return REDQ_ETIMEDOUT;
    if (m->state == M_LIVE) {
        /* Acks of this list gathered before it go first: SETTLE's LREM and
         * the plist's count assume them applied. */
        flush_plist(c, m->pl);
        unlive(c, m);
    }
    snprintf(why, sizeof why, "nack: %.*s", REASON_MAX,
             reason ? reason : "(no reason)");
    settle(c, m, why, 0);
    return 0;
}

int redq__rel_reject(redq_consumer *c, redq_message *m, const char *reason)
{
    char why[REASON_MAX + 16];
    if (m->state == M_SETTLED)
        return REDQ_ETIMEDOUT;
    if (m->state != M_LIVE)
        return 0; /* at-most-once: out of Redis already; dropped */
    flush_plist(c, m->pl); /* as for a nack: acks before it go first */
    unlive(c, m);
    snprintf(why, sizeof why, "rejected: %.*s", REASON_MAX,
             reason ? reason : "(no reason)");
    settle(c, m, why, 1);
    return 0;
}

void redq__rel_forget(redq_consumer *c, redq_message *m)
{
    if (m->state != M_LIVE)
        return;
    /* Still in its processing list (held unchanged): the close's RETURN
     * gives it back, or a reaper does. */
    live_remove(c, m);
    pl_remove(m);
}

/* ---- returning: lost pop replies and the stop --------------------------- */

/* RETURN for holder k of queue i: "sync" keeps what the client tracks,
 * "stop" keeps nothing and deregisters. */
static void send_return(redq_consumer *c, size_t i, size_t k, int stop,
                        popper *pp)
{
    relq *q = &c->rq[i];
    char raw[24], fr[24];
    size_t n;
    char *cmd;
    const char *argv[] = {"EVALSHA", c->scripts.sha[REDQ__SCRIPT_RETURN], "6",
                          c->queues[i], q->due, q->pl[2 * k].key,
                          q->pl[2 * k + 1].key, q->consumers, q->hb[k],
                          stop ? "stop" : "sync", raw, fr, c->pool[k].holder};
    snprintf(raw, sizeof raw, "%zu", stop ? (size_t)0 : q->pl[2 * k].held);
    snprintf(fr, sizeof fr, "%zu", stop ? (size_t)0 : q->pl[2 * k + 1].held);
    cmd = format_cmdz(NELEM(argv), argv, &n);
    if (cmd == NULL) {
        redq__log(&c->log, REDQ_LOG_ERROR, REDQ_ENOMEM,
                  "out of memory returning messages of %s", c->queues[i]);
        if (pp != NULL)
            sync_done(c, pp, NULL);
        return;
    }
    /* A queue being removed: its callback waits for these replies, which
     * find its slot by index (ctx: index + 1). */
    if (stop && q->state == Q_REMOVING)
        out_push(c, REDQ__SCRIPT_RETURN, cmd, n, OUT_REMOVE, NULL, 0,
                 (void *)(uintptr_t)(i + 1));
    else
        out_push(c, REDQ__SCRIPT_RETURN, cmd, n, stop ? OUT_OTHER : OUT_SYNC,
                 NULL, 0, pp);
}

void redq__rel_return_queue(redq_consumer *c, size_t i)
{
    relq *q = &c->rq[i];
    size_t k;
    q->returned = 1; /* no more heartbeats for it */
    if (!c->reliable || c->deregistered) {
        /* At-most-once nothing is in Redis for it; after a stop's RETURNs
         * there is nothing left either. */
        q->remove_done = 1;
        return;
    }
    redq__rel_flush_acks(c); /* the RETURNs assume them applied */
    q->return_left = c->npool;
    for (k = 0; k < c->npool; k++)
        send_return(c, i, k, 1, NULL);
}

void redq__rel_sync(redq_consumer *c, popper *pp)
{
    size_t i;
    if (!c->reliable || pp->sync == 2 || c->closing)
        return;
    /* Gathered acks first: the counts sent assume them applied. */
    redq__rel_flush_acks(c);
    pp->sync = 2;
    pp->sync_left = 0;
    for (i = 0; i < c->nq; i++)
        pp->sync_left += !c->rq[i].returned && c->rq[i].state != Q_GONE;
    if (pp->sync_left == 0) { /* cannot be: one queue is always active */
        pp->sync = 0;
        return;
    }
    for (i = 0; i < c->nq; i++)
        if (!c->rq[i].returned && c->rq[i].state != Q_GONE)
            send_return(c, i, pp->idx, 0, pp);
}

void redq__rel_return_all(redq_consumer *c)
{
    size_t i, k;
    redq_message *m;
    if (!c->reliable || c->deregistered)
        return;
    c->deregistered = 1;
    event_del(c->t_heartbeat);
    redq__rel_flush_acks(c);
    /* What the handler still holds (a stop that timed out) goes back too;
     * its later ack only releases memory. */
    while ((m = c->live_head) != NULL) {
        unlive(c, m);
        m->state = M_SETTLED;
        c->unacked--;
        c->st.returned++;
    }
    for (i = 0; i < c->nq; i++) {
        relq *q = &c->rq[i];
        if (q->returned || q->state == Q_GONE)
            continue; /* a removed queue, given back already */
        q->returned = 1;
        if (q->state == Q_REMOVING)
            q->return_left = c->npool;
        for (k = 0; k < c->npool; k++)
            send_return(c, i, k, 1, NULL);
    }
}

/* ---- heartbeats, recovery, promotion ----------------------------------- */

typedef struct qref {
    redq_consumer *c;
    size_t qi;
} qref;

static void hb_reply(redq__conn *conn, void *reply, void *arg);
static void members_reply(redq__conn *conn, void *reply, void *arg);
static void scan_reply(redq__conn *conn, void *reply, void *arg);
static void reap_reply(redq__conn *conn, void *reply, void *arg);

/* Replies that need (consumer, queue) get a small heap record; the reply
 * callback always runs exactly once, so it frees it. */
static qref *qref_new(redq_consumer *c, size_t qi)
{
    qref *r = malloc(sizeof *r);
    if (r != NULL) {
        r->c = c;
        r->qi = qi;
    }
    return r;
}

static void hb_reply(redq__conn *conn, void *reply, void *arg)
{
    qref *ref = arg;
    redq_consumer *c = ref->c;
    redisReply *r = reply;
    size_t i;
    (void)conn;
    if (!c->closing && redq__consumer_redirected(c, conn, r)) {
        free(ref); /* its slot moved or is moving: the next beat (at once
                      when the pinned connection comes back) */
        return;
    }
    if (!c->closing && r != NULL) {
        if (r->type == REDIS_REPLY_ERROR) {
            c->st.errors++;
            redq__log(&c->log, REDQ_LOG_ERROR,
                      redq__err_from_reply(r->str, (size_t)r->len),
                      "%s: heartbeat: %s%s", c->queues[ref->qi], r->str,
                      c->registered ? "" : " (not consuming until it works)");
            if (strncmp(r->str, "NOSCRIPT", 8) == 0)
                redq__conn_reset(conn, REDQ_ESERVER, "scripts flushed");
        } else if (!c->deregistered && !c->rq[ref->qi].registered) {
            c->rq[ref->qi].registered = 1;
            if (c->registered) {
                /* A queue added to a running consumer: pops may take
                 * from it now; blocked ones come back to name it. */
                c->pause_gen++;
                redq__consumer_defer(c, DEFER_KICK | DEFER_WAKE);
            } else {
                for (i = 0; i < c->nq && (c->rq[i].registered ||
                                          c->rq[i].state != Q_ACTIVE);
                     i++)
                    ;
                if (i == c->nq) {
                    c->registered = 1;
                    redq__consumer_defer(c, DEFER_KICK);
                }
            }
        }
    }
    free(ref);
}

/* A holder id as redq makes them: hex digits, a dot, digits. Anything
 * else in a consumers set was not put there by redq and is left alone. */
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

static int is_mine(const redq_consumer *c, const char *h, size_t len)
{
    size_t idl = strlen(c->id);
    return len > idl && memcmp(h, c->id, idl) == 0 && h[idl] == '.';
}

static void members_reply(redq__conn *conn, void *reply, void *arg)
{
    qref *ref = arg;
    redq_consumer *c = ref->c;
    redisReply *r = reply;
    size_t i, n = 0, argc = 0;
    const char **argv = NULL;
    size_t *lens = NULL;
    char **keys = NULL;
    char lockms[24];
    (void)conn;

    if (!c->closing && r != NULL && r->type == REDIS_REPLY_ERROR) {
        c->st.errors++;
        redq__log(&c->log, REDQ_LOG_ERROR,
                  redq__err_from_reply(r->str, (size_t)r->len),
                  "%s: listing consumers to find dead ones: %s",
                  c->queues[ref->qi], r->str);
    }
    if (c->closing || r == NULL || r->type != REDIS_REPLY_ARRAY ||
        !redq__conn_ready(c->ctl))
        goto out;
    for (i = 0; i < r->elements; i++)
        if (r->element[i]->type == REDIS_REPLY_STRING &&
            valid_holder(r->element[i]->str, (size_t)r->element[i]->len) &&
            !is_mine(c, r->element[i]->str, (size_t)r->element[i]->len))
            n++;
    if (n == 0)
        goto out;
    if (n > 512)
        n = 512; /* the rest next period */
    argv = calloc(7 + 2 * n, sizeof *argv);
    lens = calloc(7 + 2 * n, sizeof *lens);
    keys = calloc(n, sizeof *keys);
    if (argv == NULL || lens == NULL || keys == NULL)
        goto out;
    snprintf(lockms, sizeof lockms, "%d", c->consumer_ttl_ms / 3);
    argv[argc++] = "EVALSHA";
    argv[argc++] = c->scripts.sha[REDQ__SCRIPT_REAPSCAN];
    argv[argc++] = NULL; /* numkeys */
    argv[argc++] = c->rq[ref->qi].consumers;
    argv[argc++] = c->rq[ref->qi].reaper;
    {
        size_t j = 0;
        for (i = 0; i < r->elements && j < n; i++) {
            redisReply *e = r->element[i];
            char sfx[48];
            if (e->type != REDIS_REPLY_STRING ||
                !valid_holder(e->str, (size_t)e->len) ||
                is_mine(c, e->str, (size_t)e->len))
                continue;
            snprintf(sfx, sizeof sfx, "hb:%.*s", (int)e->len, e->str);
            keys[j] = redq__key(c->queues[ref->qi], c->qlens[ref->qi], sfx);
            if (keys[j] == NULL)
                goto out;
            argv[argc++] = keys[j++];
        }
        argv[argc++] = c->id;
        argv[argc++] = lockms;
        j = 0;
        for (i = 0; i < r->elements && j < n; i++) {
            redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_STRING ||
                !valid_holder(e->str, (size_t)e->len) ||
                is_mine(c, e->str, (size_t)e->len))
                continue;
            argv[argc] = e->str;
            lens[argc++] = (size_t)e->len;
            j++;
        }
    }
    {
        char nk[24];
        qref *ref2 = qref_new(c, ref->qi);
        snprintf(nk, sizeof nk, "%zu", n + 2);
        argv[2] = nk;
        for (i = 0; i < argc; i++)
            if (lens[i] == 0)
                lens[i] = strlen(argv[i]);
        if (ref2 != NULL &&
            redq__rel_send_script(c->ctl, REDQ__SCRIPT_REAPSCAN, argc, argv,
                                  lens, 0, scan_reply, ref2) == 0)
            c->reap_inflight++;
        else
            free(ref2);
    }
out:
    if (keys != NULL)
        for (i = 0; i < n; i++)
            free(keys[i]);
    free(keys);
    free(argv);
    free(lens);
    free(ref);
}

static void send_reap(redq_consumer *c, size_t qi, const char *h, size_t hlen)
{
    char sfx[48], maxa[24], lim[24], prefix[48];
    char *proc, *fproc, *hb;
    relq *q = &c->rq[qi];
    qref *ref;
    size_t n;

    snprintf(sfx, sizeof sfx, "proc:%.*s", (int)hlen, h);
    proc = redq__key(c->queues[qi], c->qlens[qi], sfx);
    snprintf(sfx, sizeof sfx, "fproc:%.*s", (int)hlen, h);
    fproc = redq__key(c->queues[qi], c->qlens[qi], sfx);
    snprintf(sfx, sizeof sfx, "hb:%.*s", (int)hlen, h);
    hb = redq__key(c->queues[qi], c->qlens[qi], sfx);
    snprintf(maxa, sizeof maxa, "%d", c->max_attempts);
    snprintf(lim, sizeof lim, "%d", REAP_BATCH);
    snprintf(prefix, sizeof prefix, "%.*s.r", (int)hlen, h);
    ref = qref_new(c, qi);
    if (proc && fproc && hb && ref) {
        char hbuf[40];
        const char *argv[] = {"EVALSHA", c->scripts.sha[REDQ__SCRIPT_REAP],
                              "7", q->due, q->dead, q->consumers, proc, fproc,
                              hb, q->meta, hbuf, maxa, lim, prefix, q->qenc};
        snprintf(hbuf, sizeof hbuf, "%.*s", (int)hlen, h);
        n = NELEM(argv);
        if (redq__rel_send_script(c->ctl, REDQ__SCRIPT_REAP, n, argv, NULL,
                                  0, reap_reply, ref) == 0) {
            c->reap_inflight++;
            ref = NULL;
        }
    }
    free(ref);
    free(proc);
    free(fproc);
    free(hb);
}

static void scan_reply(redq__conn *conn, void *reply, void *arg)
{
    qref *ref = arg;
    redq_consumer *c = ref->c;
    redisReply *r = reply;
    size_t i;
    (void)conn;
    c->reap_inflight--;
    if (!c->closing && r != NULL && r->type == REDIS_REPLY_ARRAY)
        for (i = 0; i < r->elements; i++)
            if (r->element[i]->type == REDIS_REPLY_STRING)
                send_reap(c, ref->qi, r->element[i]->str,
                          (size_t)r->element[i]->len);
    if (!c->closing && r != NULL && r->type == REDIS_REPLY_ERROR)
        redq__log(&c->log, REDQ_LOG_ERROR,
                  redq__err_from_reply(r->str, (size_t)r->len),
                  "%s: looking for dead consumers: %s", c->queues[ref->qi],
                  r->str);
    free(ref);
}

static void reap_reply(redq__conn *conn, void *reply, void *arg)
{
    qref *ref = arg;
    redq_consumer *c = ref->c;
    redisReply *r = reply;
    (void)conn;
    c->reap_inflight--;
    if (!c->closing && r != NULL && r->type == REDIS_REPLY_ARRAY &&
        r->elements == 3) {
        long long moved = r->element[0]->integer,
                  died = r->element[1]->integer;
        if (moved > 0) {
            c->st.recovered += (uint64_t)moved;
            redq__log(&c->log, REDQ_LOG_WARN, 0,
                      "%s: recovered %lld message(s) of a consumer that "
                      "stopped heartbeating (%lld dead-lettered)",
                      c->queues[ref->qi], moved, died);
            redq__consumer_defer(c, DEFER_KICK);
            c->due_waiting = 1;
        }
    } else if (!c->closing && r != NULL && r->type == REDIS_REPLY_ERROR) {
        redq__log(&c->log, REDQ_LOG_ERROR,
                  redq__err_from_reply(r->str, (size_t)r->len),
                  "%s: recovering a dead consumer's messages: %s",
                  c->queues[ref->qi], r->str);
    }
    free(ref);
}

/* Refresh every holder's heartbeat on queue i (the first one registers
 * them); with `reap`, then look for dead holders of it. A queue given back
 * (removed, or stopped) beats no more: that would register it again. */
static void heartbeat_queue(redq_consumer *c, size_t i, int reap)
{
    relq *q = &c->rq[i];
    char ttl[24], nk[24];
    const char *argv[4 + 2 * 64 + 2];
    size_t argc, k;
    qref *ref;

    if (q->returned || q->state == Q_GONE || !redq__conn_ready(c->ctl))
        return;
    snprintf(ttl, sizeof ttl, "%d", c->consumer_ttl_ms);
    /* Pools above 64 beat in several calls. */
    for (k = 0; k < c->npool; k += 64) {
        size_t j, m = c->npool - k < 64 ? c->npool - k : 64;
        argc = 0;
        argv[argc++] = "EVALSHA";
        argv[argc++] = c->scripts.sha[REDQ__SCRIPT_HEARTBEAT];
        snprintf(nk, sizeof nk, "%zu", m + 1);
        argv[argc++] = nk;
        argv[argc++] = q->consumers;
        for (j = 0; j < m; j++)
            argv[argc++] = q->hb[k + j];
        argv[argc++] = ttl;
        for (j = 0; j < m; j++)
            argv[argc++] = c->pool[k + j].holder;
        ref = qref_new(c, i);
        if (ref == NULL ||
            redq__rel_send_script(c->ctl, REDQ__SCRIPT_HEARTBEAT, argc, argv,
                                  NULL, 0, hb_reply, ref) != 0)
            free(ref);
    }
    if (reap && c->registered && c->reap_inflight == 0 &&
        q->state == Q_ACTIVE) {
        const char *sm[] = {"SMEMBERS", q->consumers};
        ref = qref_new(c, i);
        if (ref == NULL ||
            redq__conn_sendv(c->ctl, 2, sm, NULL, 0, members_reply, ref) != 0)
            free(ref);
    }
}

void redq__rel_heartbeat_queue(redq_consumer *c, size_t i)
{
    if (c->reliable && !c->deregistered && !c->closing)
        heartbeat_queue(c, i, 0);
}

/*
 * Every consumer_ttl/3: refresh every holder's heartbeat on every queue
 * (the first one registers them), then look for holders that stopped.
 * A REAP that left more (bounded per call) is repeated next period.
 */
static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_consumer *c = arg;
    struct timeval tv;
    size_t i;
    long period = c->consumer_ttl_ms / 3;
    (void)fd;
    (void)what;

    if (c->deregistered || c->closing)
        return;
    for (i = 0; i < c->nq && redq__conn_ready(c->ctl); i++)
        heartbeat_queue(c, i, 1);
    tv.tv_sec = period / 1000;
    tv.tv_usec = (period % 1000) * 1000;
    event_add(c->t_heartbeat, &tv);
}

static void on_promote_reply(redq__conn *conn, void *reply, void *arg)
{
    qref *ref = arg;
    redq_consumer *c = ref->c;
    size_t qi = ref->qi;
    redisReply *r = reply;
    long long wait = c->promote_interval_ms;
    struct timeval tv;
    (void)conn;
    free(ref);
    if (c->closing || r == NULL)
        return;
    if (!c->rq[qi].fmt_known) {
        /* The first answer for this queue, whatever it is: pops may start
         * (an error leaves it plain: nothing is parsed). */
        c->rq[qi].fmt_known = 1;
        if (r->type == REDIS_REPLY_ARRAY && r->elements >= 5 &&
            r->element[4]->type == REDIS_REPLY_INTEGER)
            c->rq[qi].frames = r->element[4]->integer == 1;
        if (--c->fmt_unknown == 0)
            redq__consumer_defer(c, DEFER_KICK);
    }
    if (r->type == REDIS_REPLY_ARRAY && r->elements >= 4 &&
        r->element[0]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->type == REDIS_REPLY_INTEGER &&
        r->element[2]->type == REDIS_REPLY_INTEGER &&
        r->element[3]->type == REDIS_REPLY_INTEGER) {
        int paused = r->element[3]->integer == 1;
        c->st.promoted += (uint64_t)r->element[0]->integer;
        /* The format, for the pops that do not read it themselves (BLMOVE,
         * at-most-once): TAKE reads it with what it takes. */
        if (r->elements >= 5 && r->element[4]->type == REDIS_REPLY_INTEGER)
            c->rq[qi].frames = r->element[4]->integer == 1;
        if (paused != c->rq[qi].paused) {
            /* Paused: pops blocked on it are released and come back
             * without it. Resumed: blocked pops are released to TAKE (or
             * pop) from it again, and idle ones start. */
            c->rq[qi].paused = paused;
            c->pause_gen++;
            redq__log(&c->log, REDQ_LOG_INFO, 0, "queue %s %s",
                      c->queues[qi], paused ? "paused: not taking from it"
                                            : "resumed");
            c->due_waiting = 1;
            redq__consumer_defer(c, DEFER_KICK | DEFER_WAKE);
        }
        if (r->element[2]->integer > 0 && !paused && !c->due_waiting) {
            /* Frames wait in due; pops blocked on Q would not see them. */
            c->due_waiting = 1;
            redq__consumer_defer(c, DEFER_KICK | DEFER_WAKE);
        }
        /* The next one is due sooner than the poll: wake up for it. */
        if (r->element[1]->integer >= 0 && r->element[1]->integer < wait)
            wait = r->element[1]->integer;
        if (r->element[0]->integer >= 1000)
            wait = 0; /* more due than one call moves */
    } else if (r->type == REDIS_REPLY_ERROR) {
        int code = redq__err_from_reply(r->str, (size_t)r->len);
        c->st.errors++;
        if (code == REDQ_ENOPERM && !c->reliable) {
            /* An at-most-once consumer of a user without scripts: delayed
             * and retried messages need them; say so once, then stop
             * asking (plain pops go on). */
            redq__log(&c->log, REDQ_LOG_WARN, code,
                      "delayed and retried messages will not be promoted: %s",
                      r->str);
            return;
        }
        redq__log(&c->log, REDQ_LOG_ERROR, code,
                  "promoting delayed messages: %s", r->str);
        redq__rel_script_error(c, c->ctl, r->str);
    }
    /* One timer for all queues: the soonest wins. */
    {
        uint64_t at = redq__now_us() + (uint64_t)wait * 1000u;
        if (c->promote_at_us == 0 || at < c->promote_at_us) {
            tv.tv_sec = (time_t)(wait / 1000);
            tv.tv_usec = (suseconds_t)((wait % 1000) * 1000);
            event_add(c->t_promote, &tv);
            c->promote_at_us = at;
        }
    }
}

/* The partition fields of queue slot ref->qi: consume every partition
 * ever made (retired ones too: drained forever) in a slot of its own. */
static void on_parts_reply(redq__conn *conn, void *reply, void *arg)
{
    qref *ref = arg;
    redq_consumer *c = ref->c;
    size_t qi = ref->qi;
    redisReply *r = reply;
    redq__parts pt;
    unsigned k;
    (void)conn;
    free(ref);
    if (c->closing)
        return;
    c->rq[qi].pasking = 0;
    if (c->stopping || c->rq[qi].state != Q_ACTIVE || r == NULL ||
        r->type != REDIS_REPLY_ARRAY || r->elements != 2)
        return; /* (an error: asked again at the next poll) */
    redq__parts_init(&pt);
    (void)redq__parts_from_reply(&pt, r->element[0], r->element[1]);
    for (k = 1; k < pt.total; k++) {
        char *name = redq__partition_name(c->queues[qi], c->qlens[qi],
                                          pt.tag[k], k);
        if (name == NULL ||
            redq__consumer_add_partition(c, name, qi, (int)k) != 0)
            redq__log(&c->log, REDQ_LOG_ERROR, REDQ_ENOMEM,
                      "queue %s: partition %u not consumed: out of memory",
                      c->queues[qi], k);
        free(name);
    }
}

static void ask_partitions(redq_consumer *c, size_t i)
{
    const char *argv[] = {"HMGET", c->rq[i].meta, REDQ__META_PARTITIONS,
                          REDQ__META_PTAGS};
    qref *ref;
    if (c->rq[i].pasking || (ref = qref_new(c, i)) == NULL)
        return;
    if (redq__conn_sendv(c->ctl, 4, argv, NULL, 0, on_parts_reply, ref) != 0)
        free(ref);
    else
        c->rq[i].pasking = 1;
}

/* Move due delayed (and retried) frames of every queue to its due list. */
static void promote_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_consumer *c = arg;
    size_t i;
    (void)fd;
    (void)what;
    c->promote_at_us = 0;
    for (i = 0; i < c->nq && redq__conn_ready(c->ctl) && !c->stop_done; i++) {
        const char *argv[] = {"EVALSHA", c->scripts.sha[REDQ__SCRIPT_PROMOTE],
                              "3", c->rq[i].delayed, c->rq[i].due,
                              c->rq[i].meta, "1000"};
        qref *ref;
        if (c->rq[i].state != Q_ACTIVE)
            continue; /* removed: its other consumers promote */
        ref = qref_new(c, i);
        if (ref == NULL ||
            redq__rel_send_script(c->ctl, REDQ__SCRIPT_PROMOTE, NELEM(argv),
                                  argv, NULL, 0, on_promote_reply, ref) != 0)
            free(ref);
        /* The registry (admin tools): a lookup per tick, a ZADD a minute.
         * Not from an inner consumer: the registry key is in another slot
         * than its pinned connections; its outer registers the logical
         * name through the router. */
        if (c->outer == NULL && c->rq[i].part == 0)
            redq__registry_touch(c->registry, c->ctl, c->queues[i],
                                 c->qlens[i]);
    }
    /* One server: partitions of the queues given, every few seconds (an
     * inner consumer of a cluster's has its outer do this). */
    if (c->outer == NULL && redq__conn_ready(c->ctl) && !c->stopping &&
        redq__now_us() >= c->parts_at_us) {
        c->parts_at_us = redq__now_us() + REDQ__PARTS_POLL_US;
        for (i = 0; i < c->nq; i++)
            if (c->rq[i].state == Q_ACTIVE && c->rq[i].part == 0)
                ask_partitions(c, i);
    }
}

void redq__rel_ctl_up(redq_consumer *c)
{
    struct timeval now = {0, 0};
    out_send_all(c);
    if (c->reliable && !c->deregistered && !c->stopping)
        event_add(c->t_heartbeat, &now);
    if (!c->stopping)
        event_add(c->t_promote, &now);
    c->promote_at_us = redq__now_us();
}

int redq__rel_quiet(const redq_consumer *c)
{
    size_t i, k;
    for (i = 0; c->reliable && c->rq != NULL && i < c->nq; i++)
        for (k = 0; k < 2 * c->npool; k++)
            if (c->rq[i].pl[k].nacks > 0)
                return 0;
    return c->out_head == NULL && c->sent_head == NULL;
}

void redq__rel_stopped(redq_consumer *c)
{
    redq__rel_return_all(c);
}

int redq__rel_script_error(redq_consumer *c, redq__conn *conn, const char *err)
{
    (void)c;
    if (strncmp(err, "NOSCRIPT", 8) != 0)
        return 0;
    redq__conn_reset(conn, REDQ_ESERVER, "scripts flushed; reloading them");
    return 1;
}
