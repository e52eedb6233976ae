/*
 * The consumer: a pool of blocking-pop connections feeding a handler.
 *
 * Each pool connection ("popper") runs rounds. A round reserves up to
 * pop_batch places in the window, pops, delivers what it got and releases
 * the reservation; then the next round starts at once, or the popper parks
 * until acks free room. Blocking pops are the only thing a popper's
 * connection carries, so a parked BLMPOP never delays another command.
 *
 *   BLMPOP (Redis >= 7.0)   one command: blocks when the queues are empty,
 *                           takes up to `count` at once under backlog, and
 *                           honours queue priority.
 *   RPOP_COUNT (>= 6.2)     BRPOP q1..qn, then RPOP <that queue> count-1.
 *   PIPELINED (any)         BRPOP q1..qn, then count-1 pipelined RPOPs.
 *
 * Window: unacked + reserved <= max_unacked, where `reserved` counts what
 * rounds in progress may still bring. So the number of delivered, unacked
 * messages never exceeds max_unacked, whatever the pool size.
 *
 * Memory: the messages of one pop reply are copied into one chunk (message
 * headers + payloads), freed or recycled when its last message is acked;
 * chunks are recycled, so steady-state consuming does no per-message malloc
 * of ours.
 *
 * A control connection (never blocked) sends CLIENT UNBLOCK at stop, so a
 * stop does not wait for a pop's server-side timeout.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "consumer_int.h"

static void kick(popper *pp);
static void check_removes(redq_consumer *c);
static void defer(redq_consumer *c, int flag);
static void close_now(redq_consumer *c);
static void unblock_all(redq_consumer *c);
static void arm_retry(redq_consumer *c, uint64_t us);

/* ---- chunks ------------------------------------------------------------- */

static chunk *chunk_get(redq_consumer *c, size_t nmsg, size_t bytes)
{
    size_t need = nmsg * sizeof(redq_message) + bytes;
    chunk **pp = &c->free_chunks, *ch;

    for (; *pp != NULL; pp = &(*pp)->next)
        if ((*pp)->cap >= need)
            break;
    if (*pp != NULL) {
        ch = *pp;
        *pp = ch->next;
        c->nfree--;
    } else {
        /* Round up so that one chunk serves rounds of similar size. */
        size_t cap = need < 4096 ? 4096 : need + need / 4;
        ch = malloc(sizeof *ch + cap);
        if (ch == NULL)
            return NULL;
        ch->cap = cap;
    }
    ch->refs = 1; /* held by the delivery loop */
    ch->owner = c;
    memcpy(ch->cid, c->id, sizeof ch->cid);
    ch->prev = NULL;
    ch->next = c->live.head;
    if (c->live.head != NULL)
        c->live.head->prev = ch;
    c->live.head = ch;
    return ch;
}

static void chunk_put(redq_consumer *c, chunk *ch)
{
    if (--ch->refs > 0)
        return;
    if (ch->prev != NULL)
        ch->prev->next = ch->next;
    else
        c->live.head = ch->next;
    if (ch->next != NULL)
        ch->next->prev = ch->prev;
    if (c->nfree >= c->npool * 2 + 4 || ch->cap > (1u << 20)) {
        free(ch);
        return;
    }
    ch->next = c->free_chunks;
    c->free_chunks = ch;
    c->nfree++;
}

static redq_message *chunk_msgs(chunk *ch)
{
    return (redq_message *)(void *)(ch + 1);
}

/* ---- delivery ----------------------------------------------------------- */

/* The sequence of the ids made for plain queues' messages: an inner
 * consumer shares its outer's (and its instance id), so ids stay unique
 * over the partitions. */
static uint64_t next_idseq(redq_consumer *c)
{
    return c->outer != NULL ? ++c->outer->idseq : ++c->idseq;
}

/* Which queue a popped key belongs to: its ready list Q (*framed = 0) or
 * its due list (*framed = 1). -1 for neither. */
static int queue_index(redq_consumer *c, const char *key, size_t len,
                       int *framed)
{
    size_t i;
    for (i = 0; i < c->nq; i++) {
        /* A removed queue's slot stays (a tombstone): a queue added again
         * under its name is another slot. */
        if (c->rq[i].state == Q_GONE)
            continue;
        if (c->qlens[i] == len && memcmp(c->queues[i], key, len) == 0) {
            *framed = 0;
            return (int)i;
        }
        if (strlen(c->rq[i].due) == len && memcmp(c->rq[i].due, key, len) == 0) {
            *framed = 1;
            return (int)i;
        }
    }
    return -1;
}

/*
 * Copy `n` messages popped from queue `qi` into one chunk and hand them to
 * the handler in pop order. Raw values (from Q) are delivered as they are,
 * byte for byte, whatever they look like; values from the due list are
 * frames, whose payload is delivered and whose header gives the attempt
 * and id. A malformed frame is dead-lettered instead of delivered.
 * At-least-once, `pl` is the processing list they were moved into.
 */
static void deliver(redq_consumer *c, int qi, int framed, plist *pl,
                    redisReply **els, size_t n)
{
    redq__frame f;
    size_t i, bytes = 0, given = 0, lq;
    chunk *ch;
    redq_message *m;
    char *w, *qname;

    /* The queue's "taken" counter (redq_queue_info). At-least-once TAKE
     * counts in its script (and on_block_reply counts a BLMOVE); an
     * at-most-once pop reply is counted with one HINCRBY, pipelined on the
     * control connection, its reply only checked for an error. */
    if (pl == NULL)
        redq__registry_count(c->registry, c->ctl, c->queues[qi],
                             c->qlens[qi], REDQ__META_TAKEN, n);

    if (pl != NULL)
        pl->held += n; /* in the list now, tracked or not */
    if (framed == SRC_Q)
        framed = c->rq[qi].frames ? SRC_Q_FRAMES : SRC_Q_PLAIN;
    for (i = 0; i < n; i++)
        bytes += (size_t)els[i]->len + 1 +
                 (framed == SRC_Q_PLAIN ? 0 : REDQ__ID_ROOM);
    /* The queue's name too: a message outlives the removal of its queue
     * and the consumer itself (redq.h, "Lifetimes"). */
    lq = c->rq[qi].part > 0 ? c->rq[qi].lq : (size_t)qi;
    bytes += (c->lname != NULL ? c->lnlen : c->qlens[lq]) + 1;
    ch = chunk_get(c, n, bytes);
    if (ch == NULL) {
        /* At-least-once they stay in the processing list: untracked, they
         * go back when this consumer stops (or a reaper finds them after a
         * crash). At-most-once they are gone. */
        redq__log(&c->log, REDQ_LOG_ERROR, REDQ_ENOMEM,
                  "out of memory: %zu popped messages not delivered%s", n,
                  c->reliable ? " (they go back to the queue at the stop)"
                              : " (lost)");
        return;
    }
    m = chunk_msgs(ch);
    w = (char *)(m + n);
    qname = w;
    /* An inner consumer's messages carry the logical queue's name. */
    if (c->lname != NULL) {
        memcpy(w, c->lname, c->lnlen + 1);
        w += c->lnlen + 1;
    } else {
        /* (a partition's slot: its logical queue's name) */
        memcpy(w, c->queues[lq], c->qlens[lq] + 1);
        w += c->qlens[lq] + 1;
    }
    for (i = 0; i < n; i++) {
        redisReply *r = els[i];
        size_t len = (size_t)r->len;
        redq_message *mm = &m[given];

        if (r->type != REDIS_REPLY_STRING)
            continue;
        memcpy(w, r->str, len);
        w[len] = '\0';
        memset(mm, 0, sizeof *mm);
        mm->ch = ch;
        mm->owner = c;
        mm->qidx = qi;
        mm->queue = qname;
        mm->partition = c->lname != NULL ? c->part : c->rq[qi].part;
        mm->raw = w;
        mm->raw_len = len;
        mm->pl = pl;
        mm->framed = framed == SRC_DUE;
        mm->state = c->reliable ? M_LIVE : M_FAST;
        w += len + 1;
        if (framed == SRC_Q_FRAMES && redq__frame_parse(mm->raw, len, &f,
                                                         NULL, 0) == 0) {
            /* A frames queue's producer frame: its id and time. */
            mm->data = f.body;
            mm->len = f.body_len;
            mm->ts_ms = f.ts_ms;
            mm->attempt = f.attempts >= REDQ__MAX_ATTEMPTS
                              ? REDQ__MAX_ATTEMPTS
                              : f.attempts + 1;
            mm->id = "";
            if (f.id[0] != '\0') {
                memcpy(w, f.id, strlen(f.id) + 1);
                mm->id = w;
            } else {
                mm->idseq = next_idseq(c);
            }
            w += REDQ__ID_ROOM;
        } else if (framed != SRC_DUE) {
            /* A payload as sent (the common case), or on a frames queue a
             * value that is no frame (a plain client's LPUSH): delivered
             * whole, nothing parsed; its id is made here, formatted only
             * when asked for. */
            mm->data = mm->raw;
            mm->len = len;
            mm->id = "";
            mm->idseq = next_idseq(c);
            mm->ts_ms = -1;
            mm->attempt = 1;
            if (framed == SRC_Q_FRAMES)
                w += REDQ__ID_ROOM;
        } else {
            if (pl != NULL)
                pl->held--; /* settled (dead-lettered) if malformed */
            if (redq__rel_prepare(c, mm, w) != 0)
                continue;
            if (pl != NULL)
                pl->held++;
            w += REDQ__ID_ROOM;
        }
        given++;
    }
    ch->refs += given;
    c->unacked += given;
    c->rq[qi].held += given;
    for (i = 0; i < given && !c->closing; i++) {
        redq__rel_delivered(c, &m[i]);
        c->st.delivered++;
        c->on_message(c->outer != NULL ? c->outer : c, &m[i],
                      c->message_user);
    }
    if (c->closing) {
        /* Closed from a handler: the rest are dropped with the consumer. */
        c->unacked -= given - i;
        c->rq[qi].held -= given - i;
        ch->refs -= given - i;
    }
    chunk_put(c, ch);
}

static void deliver_one(redq_consumer *c, int qi, int framed, plist *pl,
                        redisReply *el)
{
    deliver(c, qi, framed, pl, &el, 1);
}

/* ---- rounds ------------------------------------------------------------- */

static void round_end(popper *pp)
{
    redq_consumer *c = pp->owner;
    if (pp->stage != R_IDLE)
        c->n_idle++;
    c->reserved -= pp->reserved;
    pp->reserved = 0;
    pp->stage = R_IDLE;
    pp->unblock_sent = 0;
    if (c->stopping)
        defer(c, DEFER_CHECK_STOP);
    if (c->nremoving > 0)
        defer(c, DEFER_REMOVE); /* a pop that named it may have been this */
}

static int effective_mode(const redq_consumer *c, const popper *pp)
{
    int v;
    if (c->pop_mode != REDQ_POP_AUTO)
        return c->pop_mode;
    v = redq__conn_server_version(pp->conn);
    if (v >= 70000)
        return REDQ_POP_BLMPOP;
    if (v >= 60200)
        return REDQ_POP_RPOP_COUNT;
    return REDQ_POP_PIPELINED;
}

static void on_pop_reply(redq__conn *conn, void *reply, void *arg);
static void on_bulk_reply(redq__conn *conn, void *reply, void *arg);
static void on_type_reply(redq__conn *conn, void *reply, void *arg);

/* Ask every queue's type, to find which one made a pop fail. */
static void start_typecheck(popper *pp)
{
    redq_consumer *c = pp->owner;
    size_t i;
    pp->stage = R_TYPECHECK;
    pp->nround = 0; /* round_q: the slot of each TYPE, in order */
    for (i = 0; i < c->nq; i++) {
        const char *argv[2] = {"TYPE", c->queues[i]};
        size_t lens[2] = {4, c->qlens[i]};
        if (c->rq[i].state == Q_GONE)
            continue;
        if (redq__conn_sendv(pp->conn, 2, argv, lens, 0, on_type_reply, pp) !=
            0)
            break;
        pp->round_q[pp->nround++] = i;
        pp->outstanding++;
    }
    if (pp->outstanding == 0)
        round_end(pp);
}

static void on_type_reply(redq__conn *conn, void *reply, void *arg)
{
    popper *pp = arg;
    redq_consumer *c = pp->owner;
    redisReply *r = reply;
    size_t j = pp->nround - pp->outstanding; /* replies come in order */
    size_t idx = j < pp->nround ? pp->round_q[j] : c->nq;
    (void)conn;

    pp->outstanding--;
    if (c->closing)
        return;
    if (r != NULL && r->type == REDIS_REPLY_STATUS && idx < c->nq &&
        strcmp(r->str, "list") != 0 && strcmp(r->str, "none") != 0) {
        if (c->bad_until[idx] <= redq__now_us())
            redq__log(&c->log, REDQ_LOG_ERROR, REDQ_EWRONGTYPE,
                      "queue %s holds a %s, not a list; skipping it, "
                      "rechecking every %u s",
                      c->queues[idx], r->str, REDQ__BAD_QUEUE_RECHECK_US / 1000000u);
        c->bad_until[idx] = redq__now_us() + REDQ__BAD_QUEUE_RECHECK_US;
    }
    if (pp->outstanding == 0) {
        round_end(pp);
        kick(pp);
    }
}

/* An error reply to a pop: wrong type is the queue's fault and is worked
 * around; anything else is logged and retried after a pause. */
static void pop_error(popper *pp, redisReply *r)
{
    redq_consumer *c = pp->owner;
    int code = redq__err_from_reply(r->str, (size_t)r->len);
    c->st.errors++;
    if (code == REDQ_EWRONGTYPE) {
        c->reserved -= pp->reserved;
        pp->reserved = 0;
        start_typecheck(pp);
        return;
    }
    round_end(pp);
    if (redq__rel_script_error(c, pp->conn, r->str))
        return; /* scripts flushed: the connection reloads them */
    if (redq__consumer_redirected(c, pp->conn, r)) {
        /* Not an error: the slot moved (the connection follows it and
         * its up callback pops again) or is moving: pop again soon. */
        c->st.errors--;
        arm_retry(c, 50000);
        return;
    }
    redq__log(&c->log, REDQ_LOG_ERROR, code, "pop: %s", r->str);
    if (code == REDQ_EAUTH || strncmp(r->str, "LOADING", 7) == 0 ||
        strncmp(r->str, "READONLY", 8) == 0)
        redq__conn_reset(pp->conn, code, r->str);
    else {
        /* Unknown trouble (a command the server lacks, a proxy's refusal):
         * do not spin; the retry timer kicks every popper again. */
        struct timeval tv = {0, 500000};
        event_add(c->t_retry, &tv);
    }
}

static void bulk_pops(popper *pp, int qi, size_t more)
{
    redq_consumer *c = pp->owner;
    const char *queue = pp->bulk_framed ? c->rq[qi].due : c->queues[qi];
    size_t qlen = strlen(queue);
    char count[24];
    int mode = effective_mode(c, pp);

    pp->stage = R_BULK;
    if (mode == REDQ_POP_RPOP_COUNT) {
        const char *argv[3] = {"RPOP", queue, count};
        size_t lens[3] = {4, qlen, 0};
        lens[2] = (size_t)snprintf(count, sizeof count, "%zu", more);
        if (redq__conn_sendv(pp->conn, 3, argv, lens, 0, on_bulk_reply, pp) ==
            0)
            pp->outstanding++;
    } else {
        const char *argv[2] = {"RPOP", queue};
        size_t lens[2] = {4, qlen}, i;
        for (i = 0; i < more; i++) {
            if (redq__conn_sendv(pp->conn, 2, argv, lens, 0, on_bulk_reply,
                                 pp) != 0)
                break;
            pp->outstanding++;
        }
    }
    if (pp->outstanding == 0)
        round_end(pp);
}

static void on_bulk_reply(redq__conn *conn, void *reply, void *arg)
{
    popper *pp = arg;
    redq_consumer *c = pp->owner;
    redisReply *r = reply;
    (void)conn;

    pp->outstanding--;
    if (c->closing)
        return;
    if (r != NULL && r->type == REDIS_REPLY_ARRAY && r->elements > 0)
        deliver(c, pp->bulk_q, pp->bulk_framed, NULL, r->element, r->elements);
    else if (r != NULL && r->type == REDIS_REPLY_STRING)
        deliver_one(c, pp->bulk_q, pp->bulk_framed, NULL, r);
    else if (r != NULL && r->type == REDIS_REPLY_ERROR)
        redq__log(&c->log, REDQ_LOG_ERROR,
                  redq__err_from_reply(r->str, (size_t)r->len), "RPOP: %s",
                  r->str);
    if (pp->outstanding == 0 && !c->closing) {
        round_end(pp);
        kick(pp);
    }
}

/*
 * What every pop reply starts with: a closing consumer ignores it, a lost
 * connection ends the round (conn_up starts the next), an error reply goes
 * to pop_error. Returns 1 when the reply is data for the caller.
 */
static int pop_reply_begin(popper *pp, redisReply *r)
{
    redq_consumer *c = pp->owner;
    pp->outstanding--;
    if (c->closing) {
        /* A closing consumer gives back what its lists hold once no pop
         * is out; what this one took is in them, untracked. */
        if (pp->outstanding == 0)
            defer(c, DEFER_CHECK_STOP);
        return 0;
    }
    if (r == NULL) {
        /* At-least-once, the pop may have run (or may still run, late, if
         * the server stalled with it in its buffer): reconcile once this
         * connection is back, which says the server is answering again,
         * and before the next pop. */
        round_end(pp);
        if (c->reliable)
            pp->sync = 1;
        return 0;
    }
    c->st.pops++;
    if (r->type == REDIS_REPLY_ERROR) {
        pop_error(pp, r);
        return 0;
    }
    return 1;
}

/* ... and ends with: the next round, unless a handler closed us. */
static void pop_reply_end(popper *pp)
{
    if (pp->owner->closing)
        return;
    round_end(pp);
    kick(pp);
}

static void on_pop_reply(redq__conn *conn, void *reply, void *arg)
{
    popper *pp = arg;
    redq_consumer *c = pp->owner;
    redisReply *r = reply;
    int q, framed = 0;
    (void)conn;

    /* A lost connection loses a pop that was answered but not read
     * (at-most-once). */
    if (!pop_reply_begin(pp, r))
        return;
    if (r->type == REDIS_REPLY_NIL) {
        /* Timed out, or unblocked by a stop. */
        c->st.empty_pops++;
        pop_reply_end(pp);
        return;
    }
    if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
        r->element[0]->type != REDIS_REPLY_STRING ||
        (q = queue_index(c, r->element[0]->str, (size_t)r->element[0]->len,
                         &framed)) < 0) {
        redq__log(&c->log, REDQ_LOG_ERROR, REDQ_EPROTOCOL,
                  "pop: unexpected reply (type %d)", r->type);
        round_end(pp);
        redq__conn_reset(pp->conn, REDQ_EPROTOCOL, "unexpected pop reply");
        return;
    }

    if (r->element[1]->type == REDIS_REPLY_ARRAY) {
        /* BLMPOP: [key, [v1, v2, ...]] */
        deliver(c, q, framed, NULL, r->element[1]->element,
                r->element[1]->elements);
    } else if (r->element[1]->type == REDIS_REPLY_STRING) {
        /* BRPOP: [key, v]; under backlog take more of the same queue. */
        deliver_one(c, q, framed, NULL, r->element[1]);
        if (pp->reserved > 1 && !c->closing && !c->stopping &&
            c->rq[q].state == Q_ACTIVE) {
            pp->bulk_q = q;
            pp->bulk_framed = framed;
            bulk_pops(pp, q, pp->reserved - 1);
            return;
        }
    }
    pop_reply_end(pp);
}

/*
 * At-least-once replies. TAKE answers a group per queue that had messages
 * (none: nothing ready, so block next); BLMOVE answers one message or nil
 * (timed out: block again straight away, so an idle pool sends one command
 * per timeout).
 */
static void on_take_reply(redq__conn *conn, void *reply, void *arg)
{
    popper *pp = arg;
    redq_consumer *c = pp->owner;
    redisReply *r = reply;
    (void)conn;

    /* A lost connection loses nothing here: the messages are in proc. */
    if (!pop_reply_begin(pp, r))
        return;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER &&
        r->element[0]->integer == -1) {
        /* A queue's key holds a non-list; nothing was moved. */
        long long qi = r->element[1]->type == REDIS_REPLY_INTEGER
                           ? r->element[1]->integer
                           : 0;
        size_t i = c->nq;
        if (qi >= 1 && (size_t)qi <= pp->nround)
            i = pp->round_q[qi - 1]; /* the round's qi-th queue */
        if (i < c->nq) {
            if (c->bad_until[i] <= redq__now_us())
                redq__log(&c->log, REDQ_LOG_ERROR, REDQ_EWRONGTYPE,
                          "queue %s: a key holds a non-list; skipping the "
                          "queue, rechecking every %u s",
                          c->queues[i], REDQ__BAD_QUEUE_RECHECK_US / 1000000u);
            c->bad_until[i] = redq__now_us() + REDQ__BAD_QUEUE_RECHECK_US;
        }
        c->st.errors++;
    } else if (r->type == REDIS_REPLY_ARRAY && r->elements > 0) {
        size_t g;
        /* {{queue, kind, {message, ...}}, ...}: a group per source, in
         * priority order, each oldest first. The queue is an index into
         * the usable queues this round named. */
        for (g = 0; g < r->elements && !c->closing; g++) {
            redisReply *grp = r->element[g];
            int qi, framed;
            if (grp->type != REDIS_REPLY_ARRAY || grp->elements != 3 ||
                grp->element[0]->type != REDIS_REPLY_INTEGER ||
                grp->element[1]->type != REDIS_REPLY_INTEGER ||
                grp->element[2]->type != REDIS_REPLY_ARRAY ||
                grp->element[0]->integer < 1 ||
                (size_t)grp->element[0]->integer > pp->nround)
                continue;
            qi = (int)pp->round_q[grp->element[0]->integer - 1];
            /* kind 0: due; 1: Q of a plain queue, 2: of a frames queue */
            framed = grp->element[1]->integer == 0   ? SRC_DUE
                     : grp->element[1]->integer == 2 ? SRC_Q_FRAMES
                                                     : SRC_Q_PLAIN;
            deliver(c, qi, framed,
                    &c->rq[qi].pl[2 * pp->idx + (framed == SRC_DUE ? 1 : 0)],
                    grp->element[2]->element, grp->element[2]->elements);
        }
    } else {
        c->st.empty_pops++;
        pp->block_next = 1;
        c->due_waiting = 0;
    }
    pop_reply_end(pp);
}

static void on_block_reply(redq__conn *conn, void *reply, void *arg)
{
    popper *pp = arg;
    redq_consumer *c = pp->owner;
    redisReply *r = reply;
    (void)conn;

    if (!pop_reply_begin(pp, r))
        return;
    if (r->type == REDIS_REPLY_STRING) {
        /* BLMOVE is no script: its pop is counted ("taken") here, on the
         * control connection, as at-most-once pops are. */
        redq__registry_count(c->registry, c->ctl, c->queues[pp->cur_block_q],
                             c->qlens[pp->cur_block_q], REDQ__META_TAKEN, 1);
        deliver_one(c, (int)pp->cur_block_q, 0,
                    &c->rq[pp->cur_block_q].pl[2 * pp->idx], r);
        pp->block_next = 0; /* there may be more: TAKE a batch next */
    } else {
        /* Timed out, or woken because frames wait in a due list (or the
         * queues changed). A short block (fewer connections than queues)
         * is followed by a TAKE: it polls the queues nobody blocks on. */
        c->st.empty_pops++;
        pp->block_next = !c->due_waiting && !pp->block_short;
    }
    pop_reply_end(pp);
}

/* ---- starting rounds ---------------------------------------------------- */

static size_t room(const redq_consumer *c)
{
    size_t used = c->unacked + c->reserved;
    return used >= c->max_unacked ? 0 : c->max_unacked - used;
}

static void arm_retry(redq_consumer *c, uint64_t us)
{
    struct timeval tv;
    tv.tv_sec = (time_t)(us / 1000000u);
    tv.tv_usec = (suseconds_t)(us % 1000000u);
    event_add(c->t_retry, &tv);
}

/*
 * Start a round on an idle popper if the window has room. Parked poppers
 * (no room) are kicked again when acks make room.
 */
static void format_timeout(const popper *pp, int ms, char *buf, size_t n)
{
    /* Fractions of a second are understood from Redis 6.0 on. */
    if (ms % 1000 == 0 || redq__conn_server_version(pp->conn) < 60000)
        snprintf(buf, n, "%d", (ms + 999) / 1000);
    else
        snprintf(buf, n, "%d.%03d", ms / 1000, ms % 1000);
}

int redq__queue_usable(const redq_consumer *c, size_t i)
{
    return c->rq[i].state == Q_ACTIVE && (!c->reliable || c->rq[i].registered);
}

/*
 * At-least-once, which queue each popper blocks on (BLMOVE watches one
 * list, and there is no multi-list blocking move). The active queues are
 * dealt out over the pool in priority order. With at least as many
 * connections as queues, every queue has one blocked on it and wakes it at
 * once. With fewer, pool_size still means pool_size pop connections: a
 * popper blocks on its first queue for REDQ__POLL_SLICE_MS only, then
 * TAKEs (which looks at every queue), so a queue nobody blocks on waits at
 * most about that long while the consumer is idle; under load TAKE rounds
 * follow each other and nothing waits.
 */
static void assign_blocks(redq_consumer *c)
{
    size_t k, i, j = 0, na = 0;
    for (i = 0; i < c->nq; i++)
        na += c->rq[i].state == Q_ACTIVE;
    for (k = 0; k < c->npool; k++) {
        size_t want = na > 0 ? k % na : 0;
        j = 0;
        for (i = 0; i < c->nq; i++)
            if (c->rq[i].state == Q_ACTIVE && j++ == want)
                break;
        c->pool[k].block_q = i < c->nq ? i : 0;
        c->pool[k].block_short = c->npool < na;
    }
}

/* The queues not excluded for holding a wrong type, in priority order, into
 * c->argv from `at`: at-most-once each queue's due list and Q; for TAKE
 * (`pp` set) due, Q, fproc and proc of that popper, with the queue indexes
 * recorded in pp->round_q. Returns how many queues; arms the recheck timer
 * when there are none. */
static size_t usable_queues(redq_consumer *c, size_t at, popper *pp)
{
    uint64_t now = redq__now_us(), next_check = UINT64_MAX;
    size_t i, nkeys = 0;
    for (i = 0; i < c->nq; i++) {
        if (!redq__queue_usable(c, i))
            continue; /* removed, or (added) not registered yet */
        if (c->bad_until[i] > now) {
            if (c->bad_until[i] < next_check)
                next_check = c->bad_until[i];
            continue;
        }
        /* Paused (redq_admin_pause()): left out until a promote tick
         * sees it resumed, which kicks the pool. */
        if (c->rq[i].paused)
            continue;
        c->argv[at++] = c->rq[i].due;
        c->argv[at++] = c->queues[i];
        if (pp != NULL) {
            c->argv[at++] = c->rq[i].pl[2 * pp->idx + 1].key;
            c->argv[at++] = c->rq[i].pl[2 * pp->idx].key;
            c->argv[at++] = c->rq[i].consumers;
            c->argv[at++] = c->rq[i].meta;
            pp->round_q[nkeys] = i;
        }
        nkeys++;
    }
    if (nkeys == 0 && next_check != UINT64_MAX)
        arm_retry(c, next_check - now); /* look again later */
    return nkeys;
}

/* At-least-once round: TAKE a batch (non-blocking, all queues by priority)
 * or, when the last TAKE found nothing, block on this popper's queue. */
static int start_reliable_round(popper *pp, size_t n, char *tbuf,
                                char *nbuf)
{
    redq_consumer *c = pp->owner;
    size_t argc = 0, i, nkeys;
    int rc;

    /* Block on this popper's queue, or, that one being paused or
     * skipped, on the next usable one; with none usable, stay idle (a
     * resume or a recheck kicks the pool). Never TAKE again at once: the
     * last one found nothing. */
    if (pp->block_next) {
        uint64_t now = redq__now_us();
        size_t q = pp->block_q, k;
        for (k = 0; k < c->nq; k++, q = (q + 1) % c->nq)
            if (c->bad_until[q] <= now && !c->rq[q].paused &&
                redq__queue_usable(c, q))
                break;
        if (k == c->nq) {
            (void)usable_queues(c, 0, NULL); /* arms the wrong-type recheck */
            return REDQ_EINVAL;
        }
        pp->cur_block_q = q;
    }
    if (pp->block_next) {
        size_t q = pp->cur_block_q;
        int ms = c->pop_timeout_ms;
        const char *argv[] = {"BLMOVE", c->queues[q],
                              c->rq[q].pl[2 * pp->idx].key, "RIGHT", "LEFT",
                              tbuf};
        if (pp->block_short && ms > REDQ__POLL_SLICE_MS)
            ms = REDQ__POLL_SLICE_MS;
        format_timeout(pp, ms, tbuf, 32);
        rc = redq__conn_sendv(pp->conn, 6, argv, NULL, ms, on_block_reply,
                              pp);
        if (rc == 0) {
            pp->stage = R_BLOCKING;
            pp->reserved = 1;
        }
        return rc;
    }
    c->argv[argc++] = "EVALSHA";
    c->argv[argc++] = c->scripts.sha[REDQ__SCRIPT_TAKE];
    c->argv[argc++] = nbuf; /* numkeys, below */
    nkeys = usable_queues(c, argc, pp);
    if (nkeys == 0)
        return REDQ_EINVAL;
    pp->nround = nkeys;
    argc += 6 * nkeys;
    snprintf(nbuf, 24, "%zu", 6 * nkeys);
    c->argv[argc++] = tbuf + 32; /* the count, below */
    snprintf(tbuf + 32, 24, "%zu", n);
    c->argv[argc++] = pp->holder;
    for (i = 0; i < argc; i++)
        c->argvlen[i] = strlen(c->argv[i]);
    rc = redq__rel_send_script(pp->conn, REDQ__SCRIPT_TAKE, argc, c->argv,
                               c->argvlen, 0, on_take_reply, pp);
    if (rc == 0) {
        pp->stage = R_TAKE;
        pp->reserved = n;
    }
    return rc;
}

/* At-most-once round: one BLMPOP, or a BRPOP to be followed by RPOPs. */
static int start_fast_round(popper *pp, size_t n, char *tbuf, char *nbuf)
{
    redq_consumer *c = pp->owner;
    size_t argc = 0, i, nkeys;
    char cbuf[24];
    int mode = effective_mode(c, pp), rc;

    c->argv[argc++] = mode == REDQ_POP_BLMPOP ? "BLMPOP" : "BRPOP";
    if (mode == REDQ_POP_BLMPOP) {
        c->argv[argc++] = tbuf;
        c->argv[argc++] = nbuf; /* numkeys, below */
    }
    nkeys = usable_queues(c, argc, NULL);
    if (nkeys == 0)
        return REDQ_EINVAL;
    argc += 2 * nkeys;
    if (mode == REDQ_POP_BLMPOP) {
        snprintf(nbuf, 24, "%zu", 2 * nkeys);
        snprintf(cbuf, sizeof cbuf, "%zu", n);
        c->argv[argc++] = "RIGHT";
        c->argv[argc++] = "COUNT";
        c->argv[argc++] = cbuf;
    } else {
        c->argv[argc++] = tbuf;
    }
    for (i = 0; i < argc; i++)
        c->argvlen[i] = strlen(c->argv[i]);
    rc = redq__conn_sendv(pp->conn, (int)argc, c->argv, c->argvlen,
                          c->pop_timeout_ms, on_pop_reply, pp);
    if (rc == 0) {
        pp->stage = R_BLOCKING;
        pp->reserved = n;
    }
    return rc;
}

/*
 * Start a round on an idle popper if the window has room. Parked poppers
 * (no room) are kicked again when acks make room.
 */
static void kick(popper *pp)
{
    redq_consumer *c = pp->owner;
    size_t n;
    char tbuf[64], nbuf[24];
    int rc;

    /* At-least-once also needs the control connection: without it acks
     * cannot go out and heartbeats stop, so taking more would only grow
     * what a reaper may hand to someone else. */
    if (c->closing || c->stopping || pp->stage != R_IDLE ||
        c->fmt_unknown > 0 || !redq__conn_ready(pp->conn) ||
        (c->reliable && (!c->registered || pp->sync != 0 ||
                         !redq__conn_ready(c->ctl))))
        return;
    n = room(c);
    if (n == 0)
        return;
    if (n > c->pop_batch)
        n = c->pop_batch;
    format_timeout(pp, c->pop_timeout_ms, tbuf, 32);
    rc = c->reliable ? start_reliable_round(pp, n, tbuf, nbuf)
                     : start_fast_round(pp, n, tbuf, nbuf);
    if (rc != 0)
        return; /* not ready after all (conn_up kicks again) or no queue */
    c->n_idle--;
    pp->pause_gen = c->pause_gen;
    pp->outstanding = 1;
    c->reserved += pp->reserved;
}

static void kick_all(redq_consumer *c)
{
    size_t i;
    for (i = 0; i < c->npool && c->n_idle > 0; i++)
        kick(&c->pool[i]);
}

/* ---- stopping ----------------------------------------------------------- */

static void on_unblock_reply(redq__conn *conn, void *reply, void *arg)
{
    popper *pp = arg;
    redq_consumer *c = pp->owner;
    redisReply *r = reply;
    (void)conn;
    if (c->closing && !c->close_draining)
        return;
    pp->unblock_sent = 0;
    /* 0: the pop was not blocked yet (still on its way to the server).
     * Try again shortly rather than wait out its timeout. */
    if (pp->stage == R_BLOCKING && (r == NULL || r->type != REDIS_REPLY_INTEGER ||
                                    r->integer == 0))
        arm_retry(c, 5000);
}

static void unblock_all(redq_consumer *c)
{
    size_t i;
    char idbuf[24];
    for (i = 0; i < c->npool; i++) {
        popper *pp = &c->pool[i];
        long long id = redq__conn_client_id(pp->conn);
        const char *argv[3] = {"CLIENT", "UNBLOCK", idbuf};
        if (pp->stage != R_BLOCKING || pp->unblock_sent || id < 0)
            continue;
        snprintf(idbuf, sizeof idbuf, "%lld", id);
        if (redq__conn_sendv(c->ctl, 3, argv, NULL, 0, on_unblock_reply, pp) ==
            0)
            pp->unblock_sent = 1;
        else
            arm_retry(c, 50000); /* control connection not up yet */
    }
}

/*
 * The stop's progress: every popper idle, every delivered message acked
 * (or the time up), then, at-least-once, the acks and a RETURN "stop" per
 * holder sent (what is left goes back to its queue and the holders leave
 * the consumers set), and the stop is done when Redis has answered all of
 * it. Status 0 only then; on the deadline the callback runs at once with
 * REDQ_ETIMEDOUT and whatever is still unanswered carries on until close.
 * A close that waits for its acks (close_draining) finishes here too.
 */
/* A popper whose pop reply was lost has not been reconciled yet: giving
 * everything back before it reconnects could race that pop, run late. */
static size_t pops_out(const redq_consumer *c)
{
    size_t i, n = 0;
    for (i = 0; i < c->npool; i++)
        n += c->pool[i].outstanding > 0 && redq__conn_ready(c->pool[i].conn);
    return n;
}

static int syncs_pending(const redq_consumer *c)
{
    size_t i;
    for (i = 0; i < c->npool; i++)
        if (c->pool[i].sync != 0)
            return 1;
    return 0;
}

static void check_stop(redq_consumer *c)
{
    redq_stop_cb cb;
    if (c->closing) {
        if (!c->close_draining)
            return;
        if (!c->deregistered && pops_out(c) == 0 && !syncs_pending(c))
            redq__rel_return_all(c);
        if (redq__rel_quiet(c) && (c->deregistered || syncs_pending(c)))
            close_now(c);
        return;
    }
    if (!c->stopping || c->stop_done)
        return;
    if (!c->stop_timed_out &&
        (c->n_idle < c->npool || c->unacked > 0 || syncs_pending(c)))
        return;
    if (c->stop_timed_out || c->unacked == 0) {
        redq__rel_flush_acks(c);
        redq__rel_return_all(c);
    }
    if (!redq__rel_quiet(c) && !c->stop_timed_out)
        return;
    c->stop_done = 1;
    event_del(c->t_stop);
    cb = c->stop_cb;
    cb(c, c->stop_timed_out ? REDQ_ETIMEDOUT : 0, c->stop_user);
}

static void stop_timer_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_consumer *c = arg;
    (void)fd;
    (void)what;
    if (c->closing) {
        close_now(c); /* the acks did not make it in time */
        return;
    }
    c->stop_timed_out = 1;
    check_stop(c);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_consumer *c = arg;
    size_t i;
    (void)fd;
    (void)what;
    if (c->stopping || c->closing) {
        unblock_all(c);
        return;
    }
    /* A CLIENT UNBLOCK that came before its pop was blocked (a pause
     * changed meanwhile) is tried again here: a pop on stale keys must not
     * sit out its whole timeout with a paused queue in them. */
    for (i = 0; i < c->npool; i++)
        if (c->pool[i].stage == R_BLOCKING &&
            c->pool[i].pause_gen != c->pause_gen) {
            unblock_all(c);
            break;
        }
    kick_all(c);
}

/* ---- deferred work and connection events ------------------------------- */

static void defer(redq_consumer *c, int flag)
{
    if (c->defer_flags == 0)
        event_active(c->ev_defer, EV_TIMEOUT, 0);
    c->defer_flags |= flag;
}

void redq__consumer_defer(redq_consumer *c, int flag)
{
    defer(c, flag);
}

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_consumer *c = arg;
    int flags = c->defer_flags;
    (void)fd;
    (void)what;
    c->defer_flags = 0;
    if (flags & DEFER_CLOSE) {
        close_now(c);
        return;
    }
    if (flags & DEFER_FLUSH_ACKS)
        redq__rel_flush_acks(c);
    if (flags & DEFER_KICK)
        kick_all(c);
    if ((flags & DEFER_WAKE) && !c->stopping && !c->closing)
        unblock_all(c);
    if ((flags & DEFER_REMOVE) && !c->closing)
        check_removes(c);
    /* Last: a closing consumer whose drain is done is freed inside. */
    if (flags & DEFER_CHECK_STOP)
        check_stop(c);
}

static void popper_up(redq__conn *conn, void *arg)
{
    popper *pp = arg;
    (void)conn;
    pp->owner->st.connects++;
    if (pp->sync == 1)
        redq__rel_sync(pp->owner, pp); /* waits in the outbox if ctl is down */
    kick(pp);
}

static void popper_down(redq__conn *conn, int code, const char *msg,
                        void *arg)
{
    popper *pp = arg;
    (void)conn;
    (void)code;
    (void)msg;
    pp->owner->st.disconnects++;
}

static void ctl_up(redq__conn *conn, void *arg)
{
    redq_consumer *c = arg;
    (void)conn;
    redq__rel_ctl_up(c);
    if (c->stopping && !c->stop_done)
        unblock_all(c);
    else
        kick_all(c); /* at-least-once pops wait for this connection */
}

/* on_stats: the consumer's counters as JSON (redq_stats_cb). */
static void stats_emit(void *arg)
{
    redq_consumer *c = arg;
    redq_consumer_stats st;
    char buf[1024];
    size_t n;
    redq__consumer_stats_fill(c, &st);
    n = redq__stats_head(&c->stats, buf, sizeof buf, "consumer",
                         redq__conn_ready(c->ctl), st.disconnects);
    n += (size_t)snprintf(
        buf + n, sizeof buf - n,
        ",\"pops\":%llu,\"empty_pops\":%llu,\"delivered\":%llu,"
        "\"acked\":%llu,\"nacked\":%llu,\"unacked\":%zu,"
        "\"retried\":%llu,\"dead_lettered\":%llu,\"expired\":%llu,"
        "\"recovered\":%llu,\"promoted\":%llu,\"returned\":%llu,"
        "\"rejected\":%llu,\"errors\":%llu}",
        (unsigned long long)st.pops, (unsigned long long)st.empty_pops,
        (unsigned long long)st.delivered, (unsigned long long)st.acked,
        (unsigned long long)st.nacked, st.unacked,
        (unsigned long long)st.retried, (unsigned long long)st.dead_lettered,
        (unsigned long long)st.expired, (unsigned long long)st.recovered,
        (unsigned long long)st.promoted, (unsigned long long)st.returned,
        (unsigned long long)st.rejected, (unsigned long long)st.errors);
    c->stats.cb(buf, n, c->stats.user);
    redq__stats_ping(&c->stats, c->ctl);
}

/* ---- the API ------------------------------------------------------------ */

static void consumer_free(redq_consumer *c)
{
    size_t i;
    chunk *ch;
    if (c->pins != NULL) {
        /* Pinned (cluster): the pins own the connections. */
        for (i = 0; i <= c->npool; i++)
            redq__cluster_pin_free(c->pins[i]);
        free(c->pins);
    } else {
        if (c->pool != NULL)
            for (i = 0; i < c->npool; i++)
                redq__conn_free(c->pool[i].conn);
        redq__conn_free(c->ctl);
    }
    free(c->lname);
    redq__stats_free(&c->stats);
    redq__rel_free(c);
    /* Chunks with messages the handler still holds outlive the consumer:
     * the last finishing call frees each (redq.h, "Lifetimes"). */
    while ((ch = c->live.head) != NULL) {
        c->live.head = ch->next;
        ch->owner = NULL;
        ch->prev = ch->next = NULL;
    }
    while ((ch = c->free_chunks) != NULL) {
        c->free_chunks = ch->next;
        free(ch);
    }
    if (c->queues != NULL)
        for (i = 0; i < c->nq; i++)
            free(c->queues[i]);
    free(c->queues);
    free(c->qlens);
    free(c->bad_until);
    free(c->argv);
    free(c->argvlen);
    if (c->pool != NULL)
        for (i = 0; i < c->npool; i++)
            free(c->pool[i].round_q);
    free(c->pool);
    if (c->ev_defer != NULL)
        event_free(c->ev_defer);
    if (c->t_retry != NULL)
        event_free(c->t_retry);
    if (c->t_stop != NULL)
        event_free(c->t_stop);
    free(c);
}

/* Make an ordinary consumer (an inner one when `in` is set) from checked
 * options; url and lg are borrowed for the call. */
static int consumer_make(redq_consumer **out, struct event_base *base,
                         const redq__options *opts, const redq__url *url,
                         const redq__logger *lg, const char *const *queues,
                         size_t nqueues, const redq__inner_cfg *in)
{
    redq_consumer *c;
    redq__conn_config cfg;
    size_t i;
    int rc;

    c = calloc(1, sizeof *c);
    if (c == NULL)
        return REDQ_ENOMEM;
    c->base = base;
    c->log = *lg;
    c->on_message = opts->on_message;
    c->message_user = opts->message_user;
    c->pop_batch = opts->pop_batch;
    c->max_unacked = opts->max_unacked;
    c->pop_timeout_ms = opts->pop_timeout_ms;
    c->stop_timeout_ms = opts->stop_timeout_ms;
    c->pop_mode = opts->pop_mode;
    c->kick_min = c->max_unacked / 4 ? c->max_unacked / 4 : 1;
    if (c->kick_min > c->pop_batch)
        c->kick_min = c->pop_batch;
    c->nq = nqueues;
    c->reliable = opts->guarantee == REDQ_AT_LEAST_ONCE;
    /* pool_size pop connections whatever the number of queues (plus the
     * control connection): see assign_blocks() for how fewer connections
     * than queues are served at-least-once. */
    c->npool = opts->pool_size;
    c->n_idle = c->npool;
    c->nactive = nqueues;

    rc = REDQ_ENOMEM;
    if (in != NULL) {
        c->outer = in->outer;
        c->part = in->part;
        c->cl = in->cl;
        c->cl_slot = in->slot;
        c->lnlen = strlen(in->lname);
        if ((c->lname = malloc(c->lnlen + 1)) == NULL)
            goto fail;
        memcpy(c->lname, in->lname, c->lnlen + 1);
        /* The outer's id: one instance, whatever the partitions. */
        snprintf(c->id, sizeof c->id, "%s", in->id);
    }
    c->queues = calloc(nqueues, sizeof *c->queues);
    c->qlens = calloc(nqueues, sizeof *c->qlens);
    c->bad_until = calloc(nqueues, sizeof *c->bad_until);
    /* The longest command: TAKE, "EVALSHA sha numkeys" + 6 keys a queue +
     * the count and the holder; BLMPOP needs 2 a queue + 6. */
    c->argv = calloc(6 * nqueues + 8, sizeof *c->argv);
    c->argvlen = calloc(6 * nqueues + 8, sizeof *c->argvlen);
    c->pool = calloc(c->npool, sizeof *c->pool);
    c->ev_defer = event_new(base, -1, 0, defer_cb, c);
    c->t_retry = event_new(base, -1, 0, retry_cb, c);
    c->t_stop = event_new(base, -1, 0, stop_timer_cb, c);
    if (!c->queues || !c->qlens || !c->bad_until || !c->argv ||
        !c->argvlen || !c->pool || !c->ev_defer || !c->t_retry || !c->t_stop)
        goto fail;
    for (i = 0; i < c->npool; i++) {
        c->pool[i].round_q = calloc(nqueues, sizeof *c->pool[i].round_q);
        if (c->pool[i].round_q == NULL)
            goto fail;
    }
    for (i = 0; i < nqueues; i++) {
        c->qlens[i] = strlen(queues[i]);
        c->queues[i] = malloc(c->qlens[i] + 1);
        if (c->queues[i] == NULL)
            goto fail;
        memcpy(c->queues[i], queues[i], c->qlens[i] + 1);
    }

    if (redq__rel_init(c, opts) != 0 ||
        redq__stats_init(&c->stats, base, opts, stats_emit, c) != 0)
        goto fail;
    redq__conn_config_init(&cfg, opts, url, &c->log);
    cfg.load_scripts = 0; /* scripts load on first use */
    if (c->cl != NULL) {
        /* Every connection pinned to the queue's slot: the pool, the
         * control connection (CLIENT UNBLOCK must reach the same node) and
         * so every script, whose keys all share that slot. */
        if ((c->pins = calloc(c->npool + 1, sizeof *c->pins)) == NULL ||
            redq__cluster_pin_new(&c->pins[c->npool], c->cl, c->cl_slot, &cfg,
                                  ctl_up, NULL, c) != 0)
            goto fail;
        c->ctl = redq__cluster_pin_conn(c->pins[c->npool]);
    } else if (redq__conn_new(&c->ctl, base, &cfg, ctl_up, NULL, c) != 0)
        goto fail;
    cfg.want_client_id = 1; /* CLIENT UNBLOCK at stop */
    cfg.want_version = 1;   /* the pop command depends on it */
    cfg.arena_replies = 1; /* many small elements per reply */
    assign_blocks(c);
    for (i = 0; i < c->npool; i++) {
        c->pool[i].owner = c;
        if (c->cl != NULL) {
            if (redq__cluster_pin_new(&c->pins[i], c->cl, c->cl_slot, &cfg,
                                      popper_up, popper_down,
                                      &c->pool[i]) != 0)
                goto fail;
            c->pool[i].conn = redq__cluster_pin_conn(c->pins[i]);
        } else if (redq__conn_new(&c->pool[i].conn, base, &cfg, popper_up,
                                  popper_down, &c->pool[i]) != 0)
            goto fail;
    }
    redq__conn_start(c->ctl);
    for (i = 0; i < c->npool; i++)
        redq__conn_start(c->pool[i].conn);
    *out = c;
    return 0;

fail:
    consumer_free(c);
    return rc;
}


int redq_consumer_new(redq_consumer **out, struct event_base *base,
                      const redq_consumer_options *user_opts,
                      const char *const *queues,
                      size_t nqueues)
{
    redq__url url;
    redq__logger lg;
    redq__options full, *opts = &full; /* the caller's layout, defaults after */
    size_t i;
    int rc;

    if (out == NULL || base == NULL || user_opts == NULL)
        return REDQ_EINVAL;
    rc = redq__options_prepare_consumer(user_opts, &full, &url, &lg);
    if (rc != 0)
        return rc;
    rc = REDQ_EINVAL;
    if (queues == NULL || nqueues == 0 || nqueues > 10000) {
        redq__new_failed(&full, &lg, rc,
                         "%zu queues: give 1 to 10000 queue names", nqueues);
        redq__url_free(&url);
        return rc;
    }
    for (i = 0; i < nqueues; i++) {
        if (queues[i] == NULL || queues[i][0] == '\0' ||
            strlen(queues[i]) > REDQ__MAX_QUEUE_NAME) {
            redq__new_failed(&full, &lg, rc,
                             "queue %zu: a name of 1 to %d bytes is needed", i,
                             REDQ__MAX_QUEUE_NAME);
            redq__url_free(&url);
            return rc;
        }
        if (redq__key_reserved(queues[i], strlen(queues[i]))) {
            redq__new_failed(&full, &lg, rc,
                             "queue %zu (%.200s) is another queue's own key "
                             "(its due, dead, ... list): docs/DESIGN.md, "
                             "\"Key layout\"", i, queues[i]);
            redq__url_free(&url);
            return rc;
        }
    }
    if (opts->guarantee == REDQ_AT_LEAST_ONCE &&
        opts->consumer_ttl_ms < opts->visibility_timeout_ms)
        redq__log(&lg, REDQ_LOG_WARN, 0,
                  "consumer_ttl_ms %d is below visibility_timeout_ms %d: a "
                  "handler that stalls the loop is taken for dead (and its "
                  "messages retried) before its messages time out",
                  opts->consumer_ttl_ms, opts->visibility_timeout_ms);
    if (opts->on_message == NULL) {
        redq__new_failed(&full, &lg, rc,
                         "options.on_message is NULL: a consumer needs a "
                         "handler");
        redq__url_free(&url);
        return rc;
    }

    /* A cluster: an outer handle over one inner consumer per partition,
     * each pinned to its slot (lib/pconsumer.c). */
    if (url.is_cluster)
        rc = redq__pconsumer_new(out, base, opts, &url, &lg, queues, nqueues);
    else
        rc = consumer_make(out, base, opts, &url, &lg, queues, nqueues, NULL);
    redq__url_free(&url);
    return rc;
}

int redq__consumer_create(redq_consumer **out, struct event_base *base,
                          const redq__options *opts, const redq__url *url,
                          const redq__logger *lg, const char *queue,
                          const redq__inner_cfg *in)
{
    return consumer_make(out, base, opts, url, lg, &queue, 1, in);
}

int redq__consumer_redirected(redq_consumer *c, redq__conn *conn,
                              const void *reply)
{
    const redisReply *r = reply;
    (void)conn;
    if (c->cl == NULL || r == NULL || r->type != REDIS_REPLY_ERROR ||
        redq__err_cluster(r->str, (size_t)r->len) == REDQ__REDIR_NONE)
        return 0;
    /* The pinned connection itself follows a MOVED (lib/conn.c's redirect
     * hook, once the replies read are delivered); ASK, TRYAGAIN and
     * CLUSTERDOWN pass with the migration or failover. */
    redq__log(&c->log, REDQ_LOG_DEBUG, 0, "queue %s: %.100s", c->queues[0],
              r->str);
    return 1;
}

const char *redq_msg_queue(const redq_message *m)
{
    return m != NULL ? m->queue : NULL;
}

int redq_msg_partition(const redq_message *m)
{
    return m != NULL ? m->partition : -1;
}

const void *redq_msg_data(const redq_message *m)
{
    return m != NULL ? m->data : NULL;
}

size_t redq_msg_len(const redq_message *m)
{
    return m != NULL ? m->len : 0;
}

int redq_msg_attempt(const redq_message *m)
{
    return m != NULL ? m->attempt : 0;
}

const char *redq__msg_idstr(redq_message *m)
{
    if (m->id[0] == '\0' && m->idseq != 0) {
        redq__msg_id(m->idtmp, m->ch->cid, m->idseq);
        m->id = m->idtmp;
    }
    return m->id;
}

long long redq_msg_enqueued_ms(const redq_message *m)
{
    return m != NULL ? m->ts_ms : -1;
}

const char *redq_msg_id(const redq_message *m)
{
    /* The message is the caller's to read; its id is made on first use. */
    return m != NULL ? redq__msg_idstr((redq_message *)m) : NULL;
}

/* The handler is done with `m`: give back its window place (unless a
 * visibility timeout already did) and its memory. */
static void release(redq_consumer *c, redq_message *m)
{
    relq *q = &c->rq[m->qidx];
    if (m->state != M_SETTLED)
        c->unacked--;
    m->state = M_DONE;
    q->held--;
    if (q->state == Q_REMOVING && q->held == 0)
        defer(c, DEFER_REMOVE);
    chunk_put(c, m->ch);
    if (c->stopping) {
        if (c->unacked == 0)
            defer(c, DEFER_CHECK_STOP);
    } else if (c->n_idle > 0 &&
               (room(c) >= c->kick_min ||
                (c->n_idle == c->npool && room(c) > 0))) {
        /* Wait for a worthwhile batch of room while another round is out
         * (its end starts the next); with none out, any room must start
         * one, or a handler that acks one at a time would stall. */
        defer(c, DEFER_KICK);
    }
}

/*
 * The start of every call that finishes a message: NULL checks, a second
 * finish, and a consumer that is closing (still allocated: the message
 * comes off its books, Redis is not told, the close gives it back) or
 * released (the chunk is an orphan: only memory is freed, by the last
 * message of it). Returns 1 when the caller goes on with *out, else sets
 * *rc.
 */
static int finish_begin(redq_message *m, redq_consumer **out, int *rc)
{
    chunk *ch;
    redq_consumer *c;
    if (m == NULL) {
        *rc = REDQ_EINVAL;
        return 0;
    }
    if (m->state == M_DONE) {
        *rc = REDQ_EALREADY;
        return 0;
    }
    ch = m->ch;
    c = ch->owner;
    if (c == NULL) {
        m->state = M_DONE;
        if (--ch->refs == 0)
            free(ch);
        *rc = REDQ_ECLOSED;
        return 0;
    }
    if (c->closing) {
        redq__rel_forget(c, m);
        release(c, m);
        *rc = REDQ_ECLOSED;
        return 0;
    }
    *out = c;
    return 1;
}

int redq_ack(redq_message *m)
{
    redq_consumer *c;
    int rc;
    if (!finish_begin(m, &c, &rc))
        return rc;
    rc = redq__rel_ack(c, m);
    c->st.acked++;
    release(c, m);
    return rc;
}

int redq_nack(redq_message *m, const char *reason)
{
    redq_consumer *c;
    int rc;
    if (!finish_begin(m, &c, &rc))
        return rc;
    rc = redq__rel_nack(c, m, reason);
    c->st.nacked++;
    release(c, m);
    return rc;
}

int redq_reject(redq_message *m, const char *reason)
{
    redq_consumer *c;
    int rc;
    if (!finish_begin(m, &c, &rc))
        return rc;
    rc = redq__rel_reject(c, m, reason);
    c->st.rejected++;
    release(c, m);
    return rc;
}

int redq_msg_extend(redq_message *m, int ms)
{
    redq_consumer *c;
    if (m == NULL || ms < 0)
        return REDQ_EINVAL;
    if (m->state == M_DONE)
        return REDQ_EALREADY;
    c = m->ch->owner;
    if (c == NULL || c->closing)
        return REDQ_ECLOSED; /* nothing to extend: the close gave it back */
    return redq__rel_extend(c, m, ms);
}

int redq_consumer_stop(redq_consumer *c, int timeout_ms, redq_stop_cb cb,
                       void *user)
{
    int ms;
    struct timeval tv;
    if (c == NULL || cb == NULL)
        return REDQ_EINVAL;
    if (c->pc != NULL)
        return redq__pc_stop(c, timeout_ms, cb, user);
    if (c->stopping || c->closing)
        return REDQ_ECLOSED;
    ms = timeout_ms < 0 ? c->stop_timeout_ms : timeout_ms;
    c->stopping = 1;
    c->stop_cb = cb;
    c->stop_user = user;
    arm_retry(c, 0); /* sends the unblocks from the loop */
    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    event_add(c->t_stop, &tv);
    defer(c, DEFER_CHECK_STOP);
    return 0;
}

int redq_consumer_close(redq_consumer *c, redq_close_cb cb, void *user)
{
    if (c == NULL)
        return REDQ_EINVAL;
    if (c->pc != NULL)
        return redq__pc_close(c, cb, user);
    if (c->closing)
        return REDQ_ECLOSED;
    c->closing = 1;
    c->close_cb = cb;
    c->close_user = user;
    defer(c, DEFER_CLOSE);
    return 0;
}

static void close_now(redq_consumer *c)
{
    redq_close_cb cb = c->close_cb;
    void *user = c->close_user;
    size_t i;
    /* At-least-once, for at most a second before the connections go:
     * acks accepted before the close (redq_ack returned 0) are sent and
     * answered, or an ack followed by a close in the same iteration would
     * never leave; and since the handler can no longer ack what it holds
     * (redq_ack says REDQ_ECLOSED from now on), that is given back now,
     * with everything else the lists hold, and the consumer leaves the
     * consumers set (once the pops out, unblocked, have answered: none may
     * land after that). */
    if (c->reliable && !c->close_draining && redq__conn_ready(c->ctl)) {
        struct timeval tv = {1, 0};
        c->close_draining = 1;
        redq__rel_flush_acks(c);
        unblock_all(c);
        event_del(c->t_stop);
        event_add(c->t_stop, &tv);
        check_stop(c);
        return;
    }
    if (c->stopping && !c->stop_done) {
        c->stop_done = 1;
        c->stop_cb(c, REDQ_ECLOSED, c->stop_user);
    }
    /* Removals still in progress end here: confirmed ones (the drain gave
     * them back) with 0, the rest with REDQ_ECLOSED. */
    for (i = 0; i < c->nq; i++) {
        relq *q = &c->rq[i];
        if (q->state != Q_REMOVING)
            continue;
        q->state = Q_GONE;
        q->remove_cb(c, q->remove_done ? 0 : REDQ_ECLOSED, q->remove_user);
    }
    consumer_free(c);
    if (cb != NULL)
        cb(user);
}

/* ---- queues of a running consumer --------------------------------------- */

static int queue_name_ok(const redq_consumer *c, const char *queue)
{
    size_t n;
    if (queue == NULL)
        return 0;
    n = strlen(queue);
    if (n == 0 || n > REDQ__MAX_QUEUE_NAME || redq__key_reserved(queue, n)) {
        redq__log(&c->log, REDQ_LOG_WARN, REDQ_EINVAL,
                  "queue name %.200s: 1 to %d bytes, not another queue's own "
                  "key", queue, REDQ__MAX_QUEUE_NAME);
        return 0;
    }
    return 1;
}

/* The slot of `queue` that is not a tombstone, or c->nq. */
static size_t find_queue(const redq_consumer *c, const char *queue)
{
    size_t i, n = strlen(queue);
    for (i = 0; i < c->nq; i++)
        if (c->rq[i].state != Q_GONE && c->qlens[i] == n &&
            memcmp(c->queues[i], queue, n) == 0)
            break;
    return i;
}

/* Room for slot c->nq in every per-queue array (contents kept: a TAKE in
 * flight reads round_q; messages and replies name slots by index, never
 * by address). */
static int grow_queues(redq_consumer *c)
{
    size_t n = c->nq + 1, k;
    void *p;
    if ((p = realloc(c->queues, n * sizeof *c->queues)) == NULL)
        return REDQ_ENOMEM;
    c->queues = p;
    if ((p = realloc(c->qlens, n * sizeof *c->qlens)) == NULL)
        return REDQ_ENOMEM;
    c->qlens = p;
    if ((p = realloc(c->bad_until, n * sizeof *c->bad_until)) == NULL)
        return REDQ_ENOMEM;
    c->bad_until = p;
    if ((p = realloc(c->rq, n * sizeof *c->rq)) == NULL)
        return REDQ_ENOMEM;
    c->rq = p;
    memset(&c->rq[c->nq], 0, sizeof *c->rq);
    if ((p = realloc(c->argv, (6 * n + 8) * sizeof *c->argv)) == NULL)
        return REDQ_ENOMEM;
    c->argv = p;
    if ((p = realloc(c->argvlen, (6 * n + 8) * sizeof *c->argvlen)) == NULL)
        return REDQ_ENOMEM;
    c->argvlen = p;
    for (k = 0; k < c->npool; k++) {
        if ((p = realloc(c->pool[k].round_q, n * sizeof(size_t))) == NULL)
            return REDQ_ENOMEM;
        c->pool[k].round_q = p;
    }
    return 0;
}

static int add_slot(redq_consumer *c, const char *queue, size_t lq, int part);

int redq_consumer_add_queue(redq_consumer *c, const char *queue)
{
    if (c != NULL && c->pc != NULL)
        return redq__pc_add_queue(c, queue);
    if (c == NULL || !queue_name_ok(c, queue))
        return REDQ_EINVAL;
    if (c->stopping || c->closing)
        return REDQ_ECLOSED;
    if (find_queue(c, queue) < c->nq)
        return REDQ_EEXIST;
    return add_slot(c, queue, c->nq, 0);
}

int redq__consumer_add_partition(redq_consumer *c, const char *name,
                                 size_t lq, int part)
{
    if (c->stopping || c->closing || find_queue(c, name) < c->nq)
        return 0;
    return add_slot(c, name, lq, part);
}

/* A new slot for `queue`: a queue given (part 0, lq its own slot) or a
 * partition of the logical queue in slot lq. */
static int add_slot(redq_consumer *c, const char *queue, size_t lq, int part)
{
    size_t i;
    if (c->nq >= 10000 || grow_queues(c) != 0)
        return REDQ_ENOMEM;
    i = c->nq;
    c->qlens[i] = strlen(queue);
    c->bad_until[i] = 0;
    c->queues[i] = malloc(c->qlens[i] + 1);
    if (c->queues[i] == NULL)
        return REDQ_ENOMEM;
    memcpy(c->queues[i], queue, c->qlens[i] + 1);
    if (redq__rel_queue_init(c, i) != 0) {
        redq__rel_queue_free(c, i);
        free(c->queues[i]);
        return REDQ_ENOMEM;
    }
    c->rq[i].part = part;
    c->rq[i].lq = lq;
    /* No pop before its format is known (the next promote tick asks). */
    c->rq[i].fmt_known = 0;
    c->fmt_unknown++;
    c->nq++;
    c->nactive++;
    assign_blocks(c);
    /* At-least-once its holders join its consumers set first (pops skip it
     * until then); blocked pops come back to name it. */
    if (c->reliable)
        redq__rel_heartbeat_queue(c, i);
    c->pause_gen++;
    defer(c, DEFER_KICK | DEFER_WAKE);
    redq__log(&c->log, REDQ_LOG_INFO, 0, "queue %s added", queue);
    return 0;
}

static void remove_slot(redq_consumer *c, size_t i, redq_remove_cb cb,
                        void *user);
static void part_removed(redq_consumer *c, int status, void *user);

int redq_consumer_remove_queue(redq_consumer *c, const char *queue,
                               redq_remove_cb cb, void *user)
{
    size_t i;
    if (c == NULL || queue == NULL || cb == NULL)
        return REDQ_EINVAL;
    if (c->pc != NULL)
        return redq__pc_remove_queue(c, queue, cb, user);
    if (c->stopping || c->closing)
        return REDQ_ECLOSED;
    i = find_queue(c, queue);
    if (i == c->nq || c->rq[i].state != Q_ACTIVE || c->rq[i].part > 0)
        return REDQ_ENOQUEUE;
    {
        size_t k, nl = 0;
        for (k = 0; k < c->nq; k++)
            nl += c->rq[k].state == Q_ACTIVE && c->rq[k].part == 0;
        if (nl == 1)
            return REDQ_EINVAL;
        /* Its partitions go with it (their own removals, confirmed in
         * the same way; the callback is the queue's). */
        for (k = 0; k < c->nq; k++)
            if (c->rq[k].state == Q_ACTIVE && c->rq[k].part > 0 &&
                c->rq[k].lq == i)
                remove_slot(c, k, part_removed, NULL);
    }
    remove_slot(c, i, cb, user);
    return 0;
}

static void part_removed(redq_consumer *c, int status, void *user)
{
    (void)c;
    (void)status;
    (void)user;
}

/* Start the removal of slot i (active); cb when confirmed. */
static void remove_slot(redq_consumer *c, size_t i, redq_remove_cb cb,
                        void *user)
{
    relq *q = &c->rq[i];
    const char *queue = c->queues[i];
    q->state = Q_REMOVING;
    if (!q->fmt_known) { /* no promote tick will ask for it any more */
        q->fmt_known = 1;
        if (--c->fmt_unknown == 0)
            defer(c, DEFER_KICK);
    }
    q->remove_cb = cb;
    q->remove_user = user;
    c->nactive--;
    c->nremoving++;
    /* Pops begun before this may name it: the removal waits for their
     * replies (what they take is delivered as usual); blocked ones are
     * released now (retry_cb repeats an unblock that came too early). */
    q->remove_gen = ++c->pause_gen;
    assign_blocks(c);
    defer(c, DEFER_KICK | DEFER_WAKE | DEFER_REMOVE);
    redq__log(&c->log, REDQ_LOG_INFO, 0, "queue %s: removing", queue);
}

/* Move every removal on: give back a queue no pop names and nothing of
 * which is held; call the callbacks of confirmed ones (from here, the
 * loop's deferred pass, so that a callback may add or remove queues). */
static void check_removes(redq_consumer *c)
{
    size_t i, k;
    for (i = 0; i < c->nq && !c->closing; i++) {
        relq *q = &c->rq[i];
        int busy = 0;
        if (q->state != Q_REMOVING)
            continue;
        if (!q->returned) {
            for (k = 0; k < c->npool; k++) {
                popper *pp = &c->pool[k];
                if (pp->stage != R_IDLE &&
                    (int)(pp->pause_gen - q->remove_gen) < 0)
                    busy = 1;
            }
            if (busy || (c->reliable && q->held > 0))
                continue;
            redq__rel_return_queue(c, i); /* at-most-once: done at once */
        }
        if (q->remove_done) {
            redq_remove_cb cb = q->remove_cb;
            q->state = Q_GONE;
            c->nremoving--;
            cb(c, 0, q->remove_user);
        }
    }
}

const char *redq_consumer_id(const redq_consumer *c)
{
    return c != NULL ? c->id : NULL;
}

void redq__consumer_stats_fill(const redq_consumer *c, redq_consumer_stats *st)
{
    size_t i;
    if (c == NULL || st == NULL)
        return;
    if (c->pc != NULL) {
        redq__pc_stats(c, st);
        return;
    }
    *st = c->st;
    st->unacked = c->unacked;
    st->connected = 0;
    for (i = 0; i < c->npool; i++)
        if (redq__conn_ready(c->pool[i].conn))
            st->connected++;
}
