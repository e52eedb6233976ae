/*
 * At-least-once delivery: what happens to a message between its pop and
 * its end, and to the consumers that die holding some.
 *
 *   ready list Q --TAKE / BLMOVE--> Q:proc:<id> --ack (LREM)--> gone
 *                                        |
 *              nack, visibility timeout  +--> Q:delayed (retry, backoff)
 *              last attempt, malformed   +--> Q:dead
 *              consumer <id> died        +--> back to Q (REAP, by a live one)
 *   Q:delayed --PROMOTE when due--> Q
 *
 * All moves between keys are Lua scripts (lib/scripts.c), so none is ever
 * half done. Commands that must not be lost (acks, settles) go through an
 * outbox on the control connection and are resent if the connection drops
 * before they are answered; both are idempotent (a message no longer in
 * the processing list is left alone), so a resend cannot duplicate.
 *
 * The delivery-attempt count lives in the message itself (an envelope,
 * lib/envelope.c), so it survives retries, crashes and other consumers.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "consumer_int.h"

enum { OUT_ACK, OUT_ACKFAST, OUT_SETTLE, OUT_OTHER };

/* Room in front of an ack buffer for "*N EVALSHA sha 1 proc". */
#define NELEM(a) (sizeof(a) / sizeof((a)[0]))
#define ACK_HEADER_ROOM(proclen) (160 + (proclen))

static char *make_key(const char *q, const char *suffix, const char *id)
{
    size_t n = strlen(q) + strlen(suffix) + (id ? strlen(id) + 1 : 0) + 2;
    char *k = malloc(n);
    if (k != NULL)
        snprintf(k, n, "%s:%s%s%s", q, suffix, id ? ":" : "", id ? id : "");
    return k;
}

static uint32_t rng_next(redq_consumer *c)
{
    uint32_t x = c->rng;
    x ^= x << 13;
    x ^= x >> 17;
    x ^= x << 5;
    return c->rng = x;
}

static size_t put_bulk(char *w, const char *s, size_t len)
{
    int n = sprintf(w, "$%zu\r\n", len);
    memcpy(w + n, s, len);
    w[n + (int)len] = '\r';
    w[n + (int)len + 1] = '\n';
    return (size_t)n + len + 2;
}

/* A RESP command in one malloc'd buffer. */
static char *format_cmd(int argc, const char **argv, const size_t *lens,
                        size_t *out_len)
{
    size_t need = 24, i, off;
    char *buf;
    for (i = 0; i < (size_t)argc; i++)
        need += lens[i] + 24;
    buf = malloc(need);
    if (buf == NULL)
        return NULL;
    off = (size_t)sprintf(buf, "*%d\r\n", argc);
    for (i = 0; i < (size_t)argc; i++)
        off += put_bulk(buf + off, argv[i], lens[i]);
    *out_len = off;
    return buf;
}

/* ---- the outbox ---------------------------------------------------------- */

static void on_out_reply(redq__conn *conn, void *reply, void *arg);

static void out_append(outcmd **head, outcmd **tail, outcmd *o)
{
    o->next = NULL;
    if (*tail != NULL)
        (*tail)->next = o;
    else
        *head = o;
    *tail = o;
}

static void out_send_all(redq_consumer *c)
{
    while (c->out_head != NULL && redq__conn_ready(c->ctl)) {
        outcmd *o = c->out_head;
        if (redq__conn_send(c->ctl, o->buf, o->len, 0, on_out_reply, c) != 0)
            break;
        c->out_head = o->next;
        if (c->out_head == NULL)
            c->out_tail = NULL;
        out_append(&c->sent_head, &c->sent_tail, o);
    }
}

static void out_push2(redq_consumer *c, char *buf, size_t len, int kind,
                      char *fallback, size_t fallback_len)
{
    outcmd *o = malloc(sizeof *o);
    if (o == NULL) {
        free(buf);
        free(fallback);
        redq__log(&c->log, REDQ_LOG_ERROR, REDQ_ENOMEM,
                  "out of memory: an %s was dropped (the message will be "
                  "delivered again)", kind == OUT_ACK ? "ack" : "retry");
        return;
    }
    o->buf = buf;
    o->len = len;
    o->kind = kind;
    o->fallback = fallback;
    o->fallback_len = fallback_len;
    out_append(&c->out_head, &c->out_tail, o);
    out_send_all(c);
}

static void out_push(redq_consumer *c, char *buf, size_t len, int kind)
{
    out_push2(c, buf, len, kind, NULL, 0);
}

static void on_out_reply(redq__conn *conn, void *reply, void *arg)
{
    redq_consumer *c = arg;
    redisReply *r = reply;
    outcmd *o = c->sent_head;

    /* Replies come in send order: this answers the oldest sent. */
    c->sent_head = o->next;
    if (c->sent_head == NULL)
        c->sent_tail = NULL;
    if (c->closing) {
        free(o->buf);
        free(o->fallback);
        free(o);
        return;
    }
    if (r == NULL || (r->type == REDIS_REPLY_ERROR &&
                      strncmp(r->str, "NOSCRIPT", 8) == 0)) {
        /* Not answered, or the server forgot the scripts: send it again
         * once the connection is back (the handshake reloads scripts). */
        out_append(&c->out_head, &c->out_tail, o);
        if (r != NULL)
            redq__conn_reset(conn, REDQ_ESERVER, "scripts flushed; reloading");
        return;
    }
    if (o->kind == OUT_ACKFAST && r->type == REDIS_REPLY_INTEGER &&
        r->integer < 0) {
        /* The list was not as the client saw it: ack one by one. */
        out_push(c, o->fallback, o->fallback_len, OUT_ACK);
        o->fallback = NULL;
    } else if (r->type == REDIS_REPLY_ERROR)
        redq__log(&c->log, REDQ_LOG_ERROR,
                  redq__err_from_reply(r->str, (size_t)r->len), "%s: %s",
                  o->kind == OUT_ACK      ? "ack"
                  : o->kind == OUT_SETTLE ? "retry/dead-letter"
                                          : "deregister",
                  r->str);
    free(o->buf);
    free(o->fallback);
    free(o);
    if (c->stopping)
        redq__consumer_defer(c, DEFER_CHECK_STOP);
}

static void free_outcmds(outcmd *o)
{
    while (o != NULL) {
        outcmd *next = o->next;
        free(o->buf);
        free(o->fallback);
        free(o);
        o = next;
    }
}

/* ---- set-up -------------------------------------------------------------- */

static void visibility_cb(evutil_socket_t fd, short what, void *arg);
static void heartbeat_cb(evutil_socket_t fd, short what, void *arg);
static void promote_cb(evutil_socket_t fd, short what, void *arg);

int redq__rel_init(redq_consumer *c, const redq_options *o)
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
    {
        uint32_t a = rng_next(c), b = rng_next(c);
        snprintf(c->id, sizeof c->id, "%08x%08x", a ^ (uint32_t)seed, b);
    }

    c->rq = calloc(c->nq, sizeof *c->rq);
    c->t_visibility = event_new(c->base, -1, 0, visibility_cb, c);
    c->t_heartbeat = event_new(c->base, -1, 0, heartbeat_cb, c);
    c->t_promote = event_new(c->base, -1, 0, promote_cb, c);
    if (!c->rq || !c->t_visibility || !c->t_heartbeat || !c->t_promote)
        return REDQ_ENOMEM;
    for (i = 0; i < c->nq; i++) {
        relq *q = &c->rq[i];
        q->proc = make_key(c->queues[i], "proc", c->id);
        q->hb = make_key(c->queues[i], "hb", c->id);
        q->consumers = make_key(c->queues[i], "consumers", NULL);
        q->delayed = make_key(c->queues[i], "delayed", NULL);
        q->dead = make_key(c->queues[i], "dead", NULL);
        q->reaper = make_key(c->queues[i], "reaper", NULL);
        if (!q->proc || !q->hb || !q->consumers || !q->delayed || !q->dead ||
            !q->reaper)
            return REDQ_ENOMEM;
    }
    return 0;
}

void redq__rel_free(redq_consumer *c)
{
    size_t i;
    if (c->rq != NULL) {
        for (i = 0; i < c->nq; i++) {
            relq *q = &c->rq[i];
            free(q->proc);
            free(q->hb);
            free(q->consumers);
            free(q->delayed);
            free(q->dead);
            free(q->reaper);
            free(q->ackbuf);
        }
        free(c->rq);
    }
    free_outcmds(c->out_head);
    free_outcmds(c->sent_head);
    if (c->t_visibility != NULL)
        event_free(c->t_visibility);
    if (c->t_heartbeat != NULL)
        event_free(c->t_heartbeat);
    if (c->t_promote != NULL)
        event_free(c->t_promote);
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
 * Send message `m` (body, attempt count, id) down the retry path, or to
 * the dead-letter list if this was its last attempt or `force_dead`. The
 * script takes it out of the processing list first (at-least-once) and does
 * nothing if it is no longer there.
 */
static void settle(redq_consumer *c, redq_message *m, const char *why,
                   int force_dead)
{
    relq *q = &c->rq[m->qidx];
    int dead = force_dead || m->attempt >= c->max_attempts;
    char idbuf[48], delay[24], reason[600];
    const char *id = m->id;
    const char *argv[8];
    size_t lens[8], env_len, cmd_len;
    char *env, *cmd;
    long long now = redq__wall_ms();

    if (id == NULL || id[0] == '\0') {
        /* Envelopes in the delayed zset must be distinct members. */
        snprintf(idbuf, sizeof idbuf, "%s-%08x%08x", c->id, rng_next(c),
                 rng_next(c));
        id = idbuf;
    }
    if (dead)
        snprintf(reason, sizeof reason, "%s (attempt %d of %d)", why,
                 m->attempt, c->max_attempts);
    env = redq__envelope_build(m->data, m->len, id,
                               m->ts_ms >= 0 ? m->ts_ms : now, m->attempt,
                               dead ? reason : NULL, now, m->queue, &env_len);
    if (env == NULL)
        goto nomem;
    snprintf(delay, sizeof delay, "%lld", dead ? 0 : backoff_ms(c, m->attempt));
    argv[0] = "EVALSHA";
    argv[1] = c->scripts.sha[REDQ__SCRIPT_SETTLE];
    argv[2] = "2";
    argv[3] = m->state == M_FAST ? "" : q->proc;
    argv[4] = dead ? q->dead : q->delayed;
    argv[5] = dead ? "dead" : "retry";
    argv[6] = m->raw;
    argv[7] = env;
    lens[6] = m->raw_len;
    lens[7] = env_len;
    {
        int i;
        for (i = 0; i < 6; i++)
            lens[i] = strlen(argv[i]);
    }
    {
        /* ARGV[4] (the delay) after the envelope. */
        const char *av[9];
        size_t ln[9];
        memcpy(av, argv, sizeof argv);
        memcpy(ln, lens, sizeof lens);
        av[8] = delay;
        ln[8] = strlen(delay);
        cmd = format_cmd(9, av, ln, &cmd_len);
    }
    free(env);
    if (cmd == NULL)
        goto nomem;
    if (dead) {
        c->st.dead_lettered++;
        redq__log(&c->log, REDQ_LOG_WARN, 0, "%s: dead-lettered to %s: %s",
                  m->queue, q->dead, reason);
    } else {
        c->st.retried++;
    }
    out_push(c, cmd, cmd_len, OUT_SETTLE);
    return;
nomem:
    redq__log(&c->log, REDQ_LOG_ERROR, REDQ_ENOMEM,
              "out of memory settling a message of %s%s", m->queue,
              m->state == M_FAST ? "; it is lost"
                                 : "; it stays in the processing list");
}

/* ---- messages ------------------------------------------------------------ */

int redq__rel_prepare(redq_consumer *c, redq_message *m, char *space)
{
    redq__envelope env;
    char err[256];
    int rc = redq__envelope_parse(m->raw, m->raw_len, &env, space, err,
                                  sizeof err);
    m->state = c->reliable ? M_LIVE : M_FAST;
    if (rc != 0) {
        /* Not ours to guess at: keep it whole, with the reason, for an
         * operator to look at. */
        m->data = m->raw;
        m->len = m->raw_len;
        m->id = "";
        m->ts_ms = -1;
        m->attempt = 1;
        settle(c, m, err, 1);
        return REDQ_EPROTOCOL;
    }
    m->data = env.body;
    m->len = env.body_len;
    m->attempt = env.attempts + 1;
    m->ts_ms = env.ts_ms;
    m->id = "";
    if (env.is_envelope && env.id[0] != '\0') {
        /* The id goes after the decoded body: an envelope holds both, so
         * there is room in the body space. */
        char *idp = space + env.body_len + 1;
        memcpy(idp, env.id, strlen(env.id) + 1);
        m->id = idp;
    }
    return 0;
}

static void arm_visibility(redq_consumer *c)
{
    uint64_t now, dl;
    struct timeval tv;
    if (c->live_head == NULL || event_pending(c->t_visibility, EV_TIMEOUT,
                                              NULL))
        return;
    now = redq__now_us();
    dl = c->live_head->deadline_us;
    dl = dl > now ? dl - now : 0;
    tv.tv_sec = (time_t)(dl / 1000000u);
    tv.tv_usec = (suseconds_t)(dl % 1000000u) + 1000;
    event_add(c->t_visibility, &tv);
}

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

void redq__rel_delivered(redq_consumer *c, redq_message *m)
{
    if (m->state != M_LIVE)
        return;
    /* Constant timeout, delivery order: the list stays sorted by deadline
     * and the head is always the next to expire. */
    m->deadline_us =
        redq__now_us() + (uint64_t)c->visibility_timeout_ms * 1000u;
    m->next = NULL;
    m->prev = c->live_tail;
    if (c->live_tail != NULL)
        c->live_tail->next = m;
    else
        c->live_head = m;
    c->live_tail = m;
    arm_visibility(c);
}

static void visibility_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_consumer *c = arg;
    uint64_t now = redq__now_us();
    char why[96];
    (void)fd;
    (void)what;
    snprintf(why, sizeof why, "not acked within %d ms (visibility timeout)",
             c->visibility_timeout_ms);
    while (c->live_head != NULL && c->live_head->deadline_us <= now &&
           !c->closing) {
        redq_message *m = c->live_head;
        live_remove(c, m);
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

int redq__rel_ack(redq_consumer *c, redq_message *m)
{
    relq *q;
    size_t room, need;

    int oldest;

    if (m->state == M_SETTLED)
        return REDQ_ETIMEDOUT;
    if (m->state != M_LIVE)
        return 0;
    /* With one queue the live list is that queue's processing list as
     * the client knows it: acking its head keeps a batch "in order". */
    oldest = c->nq == 1 && m == c->live_head;
    live_remove(c, m);
    q = &c->rq[m->qidx];
    room = ACK_HEADER_ROOM(strlen(q->proc));
    need = (q->acklen ? q->acklen : room) + m->raw_len + 32;
    if (need > q->ackcap) {
        size_t ncap = q->ackcap ? q->ackcap * 2 : 4096;
        char *n;
        while (ncap < need)
            ncap *= 2;
        n = realloc(q->ackbuf, ncap);
        if (n == NULL) {
            redq__log(&c->log, REDQ_LOG_ERROR, REDQ_ENOMEM,
                      "out of memory: an ack of %s was dropped (the message "
                      "stays in the processing list)", m->queue);
            return 0;
        }
        q->ackbuf = n;
        q->ackcap = ncap;
    }
    if (q->acklen == 0) {
        q->acklen = room;
        q->ack_inorder = 1;
        q->first_off = room;
        q->first_len = m->raw_len;
    }
    q->ack_inorder &= oldest;
    q->last_off = q->acklen;
    q->last_len = m->raw_len;
    q->acklen += put_bulk(q->ackbuf + q->acklen, m->raw, m->raw_len);
    q->nacks++;
    /* Gathered per loop iteration: one script call acks them all. */
    redq__consumer_defer(c, DEFER_FLUSH_ACKS);
    return 0;
}

void redq__rel_flush_acks(redq_consumer *c)
{
    size_t i;
    for (i = 0; c->rq != NULL && i < c->nq; i++) {
        relq *q = &c->rq[i];
        size_t room = ACK_HEADER_ROOM(strlen(q->proc)), hlen;
        char hdr[256 + 64];
        char *buf;
        if (q->nacks == 0)
            continue;
        /* "*<4+n> EVALSHA sha 1 proc", right-aligned before the args. */
        hlen = (size_t)snprintf(hdr, sizeof hdr, "*%zu\r\n", q->nacks + 4);
        hlen += put_bulk(hdr + hlen, "EVALSHA", 7);
        hlen += put_bulk(hdr + hlen, c->scripts.sha[REDQ__SCRIPT_ACK], 40);
        hlen += put_bulk(hdr + hlen, "1", 1);
        if (hlen + strlen(q->proc) + 16 > room) {
            redq__log(&c->log, REDQ_LOG_ERROR, REDQ_EINVAL, "ack header");
            continue;
        }
        hlen += put_bulk(hdr + hlen, q->proc, strlen(q->proc));
        memcpy(q->ackbuf + room - hlen, hdr, hlen);
        buf = malloc(q->acklen - (room - hlen));
        if (buf == NULL)
            continue; /* kept; retried at the next flush */
        memcpy(buf, q->ackbuf + room - hlen, q->acklen - (room - hlen));
        if (q->ack_inorder && q->nacks >= 4) {
            /* In delivery order: send the count and both ends only; the
             * full form waits in case the server disagrees. */
            char kbuf[24], *fast, *bulk;
            const char *argv[6];
            size_t lens[6], flen, blen, j;
            bulk = q->ackbuf + q->first_off;
            while (*bulk++ != '\n') /* skip "$<len>\r\n" */
                ;
            argv[0] = "EVALSHA";
            argv[1] = c->scripts.sha[REDQ__SCRIPT_ACKFAST];
            argv[2] = "1";
            argv[3] = q->proc;
            argv[4] = kbuf;
            snprintf(kbuf, sizeof kbuf, "%zu", q->nacks);
            for (j = 0; j < 5; j++)
                lens[j] = strlen(argv[j]);
            {
                const char *av[7];
                size_t ln[7];
                char *last = q->ackbuf + q->last_off;
                while (*last++ != '\n')
                    ;
                memcpy(av, argv, 5 * sizeof argv[0]);
                memcpy(ln, lens, 5 * sizeof lens[0]);
                av[5] = bulk;
                ln[5] = q->first_len;
                av[6] = last;
                ln[6] = q->last_len;
                fast = format_cmd(7, av, ln, &flen);
            }
            blen = q->acklen - (room - hlen);
            if (fast != NULL) {
                out_push2(c, fast, flen, OUT_ACKFAST, buf, blen);
                q->acklen = 0;
                q->nacks = 0;
                continue;
            }
        }
        out_push(c, buf, q->acklen - (room - hlen), OUT_ACK);
        q->acklen = 0;
        q->nacks = 0;
    }
}

int redq__rel_nack(redq_consumer *c, redq_message *m, const char *reason)
{
    char why[600];
    if (m->state == M_SETTLED)
        return REDQ_ETIMEDOUT;
    if (m->state == M_LIVE)
        live_remove(c, m);
    snprintf(why, sizeof why, "nack: %s", reason ? reason : "(no reason)");
    settle(c, m, why, 0);
    return 0;
}

/* ---- heartbeats, recovery, promotion ----------------------------------- */

static void ignore_reply(redq__conn *conn, void *reply, void *arg)
{
    (void)conn;
    (void)reply;
    (void)arg;
}

static void on_reap_reply(redq__conn *conn, void *reply, void *arg)
{
    redq_consumer *c = arg;
    redisReply *r = reply;
    (void)conn;
    if (c->closing || r == NULL)
        return;
    if (r->type == REDIS_REPLY_INTEGER && r->integer > 0) {
        c->st.recovered += (uint64_t)r->integer;
        redq__log(&c->log, REDQ_LOG_WARN, 0,
                  "requeued %lld messages of consumers that stopped "
                  "heartbeating",
                  r->integer);
    } else if (r->type == REDIS_REPLY_ERROR) {
        redq__rel_script_error(c, c->ctl, r->str);
    }
}

/* Registered (in <q>:consumers, with a heartbeat): from now on a crash of
 * this process leaves messages that a live consumer will find, so popping
 * may start. */
static void on_register_reply(redq__conn *conn, void *reply, void *arg)
{
    redq_consumer *c = arg;
    redisReply *r = reply;
    (void)conn;
    if (c->closing || r == NULL || r->type == REDIS_REPLY_ERROR)
        return;
    if (!c->registered) {
        c->registered = 1;
        redq__consumer_defer(c, DEFER_KICK);
    }
}

/*
 * Every consumer_ttl/3: refresh this consumer's heartbeat on every queue,
 * and try to be the one that requeues the messages of dead consumers.
 */
static void heartbeat_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_consumer *c = arg;
    char ttl[24], lock[24], maxa[24];
    struct timeval tv;
    size_t i;
    long period = c->consumer_ttl_ms / 3;
    (void)fd;
    (void)what;

    snprintf(ttl, sizeof ttl, "%d", c->consumer_ttl_ms);
    snprintf(lock, sizeof lock, "%ld", period);
    snprintf(maxa, sizeof maxa, "%d", c->max_attempts);
    for (i = 0; i < c->nq && redq__conn_ready(c->ctl); i++) {
        relq *q = &c->rq[i];
        const char *set[] = {"SET", q->hb, "1", "PX", ttl};
        const char *sadd[] = {"SADD", q->consumers, c->id};
        const char *reap[] = {"EVALSHA", c->scripts.sha[REDQ__SCRIPT_REAP],
                              "4", c->queues[i], q->consumers, q->dead,
                              q->reaper, c->id, lock, maxa};
        redq__conn_sendv(c->ctl, NELEM(set), set, NULL, 0, ignore_reply, NULL);
        redq__conn_sendv(c->ctl, NELEM(sadd), sadd, NULL, 0, on_register_reply, c);
        redq__conn_sendv(c->ctl, NELEM(reap), reap, NULL, 0, on_reap_reply, c);
    }
    tv.tv_sec = period / 1000;
    tv.tv_usec = (period % 1000) * 1000;
    event_add(c->t_heartbeat, &tv);
}

static void on_promote_reply(redq__conn *conn, void *reply, void *arg)
{
    redq_consumer *c = arg;
    redisReply *r = reply;
    long long wait = c->promote_interval_ms;
    struct timeval tv;
    (void)conn;
    if (c->closing || r == NULL)
        return;
    if (r->type == REDIS_REPLY_ARRAY && r->elements == 2 &&
        r->element[0]->type == REDIS_REPLY_INTEGER &&
        r->element[1]->type == REDIS_REPLY_INTEGER) {
        c->st.promoted += (uint64_t)r->element[0]->integer;
        if (r->element[0]->integer > 0)
            redq__consumer_defer(c, DEFER_KICK);
        /* The next one is due sooner than the poll: wake up for it. */
        if (r->element[1]->integer >= 0 && r->element[1]->integer < wait)
            wait = r->element[1]->integer;
        if (r->element[0]->integer >= 1000)
            wait = 0; /* more due than one call moves */
    } else if (r->type == REDIS_REPLY_ERROR) {
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

/* Move due delayed (and retried) messages of every queue to ready. */
static void promote_cb(evutil_socket_t fd, short what, void *arg)
{
    redq_consumer *c = arg;
    size_t i;
    (void)fd;
    (void)what;
    c->promote_at_us = 0;
    for (i = 0; i < c->nq && redq__conn_ready(c->ctl) && !c->stop_done; i++) {
        const char *argv[] = {"EVALSHA", c->scripts.sha[REDQ__SCRIPT_PROMOTE],
                              "2", c->rq[i].delayed, c->queues[i], "1000"};
        redq__conn_sendv(c->ctl, NELEM(argv), argv, NULL, 0, on_promote_reply, c);
    }
}

void redq__rel_ctl_up(redq_consumer *c)
{
    struct timeval now = {0, 0};
    out_send_all(c);
    if (c->reliable && !c->stop_done)
        event_add(c->t_heartbeat, &now);
    event_add(c->t_promote, &now);
    c->promote_at_us = redq__now_us();
}

int redq__rel_quiet(const redq_consumer *c)
{
    size_t i;
    for (i = 0; c->rq != NULL && i < c->nq; i++)
        if (c->rq[i].nacks > 0)
            return 0;
    return c->out_head == NULL && c->sent_head == NULL;
}

void redq__rel_stopped(redq_consumer *c)
{
    size_t i;
    if (!c->reliable)
        return;
    /* Leave cleanly: no heartbeat, no registration, nothing to recover.
     * Through the outbox, so that the stop completes only when Redis has
     * it and a close right after does not cut it off. */
    event_del(c->t_heartbeat);
    for (i = 0; i < c->nq; i++) {
        const char *argv[] = {"SREM", c->rq[i].consumers, c->id};
        const char *del[] = {"DEL", c->rq[i].hb};
        size_t lens[3], n;
        char *cmd;
        lens[0] = 4;
        lens[1] = strlen(argv[1]);
        lens[2] = strlen(argv[2]);
        if ((cmd = format_cmd(3, argv, lens, &n)) != NULL)
            out_push(c, cmd, n, OUT_OTHER);
        lens[0] = 3;
        lens[1] = strlen(del[1]);
        if ((cmd = format_cmd(2, del, lens, &n)) != NULL)
            out_push(c, cmd, n, OUT_OTHER);
    }
}

int redq__rel_script_error(redq_consumer *c, redq__conn *conn, const char *err)
{
    (void)c;
    if (strncmp(err, "NOSCRIPT", 8) != 0)
        return 0;
    redq__conn_reset(conn, REDQ_ESERVER, "scripts flushed; reloading them");
    return 1;
}
