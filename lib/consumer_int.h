/*
 * The consumer's internals, shared by lib/consumer.c (the pop pool, rounds,
 * delivery, stop) and lib/reliable.c (processing lists, acks, retries, dead
 * letters, heartbeats, recovery, delayed promotion). Nothing else includes
 * this.
 */
#ifndef REDQ_CONSUMER_INT_H
#define REDQ_CONSUMER_INT_H

#include <stddef.h>
#include <stdint.h>

#include "redq_private.h"

struct event;

/* How long a queue holding a non-list is left out before it is rechecked. */
#define REDQ__BAD_QUEUE_RECHECK_US (5u * 1000000u)
/* At-least-once with fewer pop connections than queues: how long a popper
 * blocks on one queue before a TAKE looks at all of them (the longest an
 * idle consumer leaves a message on a queue nobody blocks on). */
#define REDQ__POLL_SLICE_MS 200

/* Where deliver()'s values come from: the ready list Q, read as the
 * queue's format last learnt (SRC_Q: pops that do not say) or as a TAKE
 * found it (SRC_Q_PLAIN, SRC_Q_FRAMES: exact, read in the same script),
 * or the due list (SRC_DUE: frames, always). */
enum { SRC_Q = 0, SRC_DUE = 1, SRC_Q_PLAIN = 2, SRC_Q_FRAMES = 3 };

/* The messages of one pop reply, then their bytes (the queue name
 * included), in one allocation. A chunk outlives its consumer while the
 * handler holds messages of it: the consumer's release orphans it (owner
 * NULL) and the last redq_ack/nack/reject frees it, so a late finish on a
 * closed consumer is a defined REDQ_ECLOSED, not a use after free. */
typedef struct chunk {
    struct chunk *prev, *next; /* live list, or free list (next only) */
    size_t refs;               /* unfinished messages + 1 while delivering */
    size_t cap;                /* bytes after the header */
    redq_consumer *owner;      /* NULL once the consumer is released */
    char cid[24];              /* the consumer's id, for the ids of its
                                  messages (they outlive it) */
} chunk;

enum msg_state {
    M_FAST,    /* at-most-once: out of Redis already */
    M_LIVE,    /* at-least-once: in this consumer's processing list */
    M_SETTLED, /* at-least-once: requeued or dead-lettered (visibility
                  timeout, stop); the handler still holds it until it acks */
    M_DONE     /* acked or nacked: a second ack is a caller bug */
};

struct redq_message;

/* One processing list: what one holder (a pool connection) took from one
 * queue, raw (from Q, "proc:<holder>") or framed (from due,
 * "fproc:<holder>"). Its order in Redis is the order of that connection's
 * pops, which is the order the client delivered them: acks in that order
 * can be checked by both ends alone (ACKFAST). */
typedef struct plist {
    char *key;
    size_t keylen;
    const char *meta;   /* the queue's meta hash (ACK counts "acked"):
                           borrowed from its relq */
    size_t metalen;
    char *ackbuf;       /* RESP args "$len\r\nraw\r\n"..., room in front */
    size_t acklen, ackcap, nacks;
    int ack_inorder;    /* every ack of this batch took the oldest live */
    size_t first_off, first_len, last_off, last_len; /* in ackbuf */
    size_t held;        /* values in the list once Redis has applied every
                           command sent or gathered so far */
    struct redq_message *head, *tail; /* live ones, delivery order */
} plist;

struct redq_message {
    chunk *ch;
    redq_consumer *owner; /* valid only while ch->owner is not NULL */
    const char *queue; /* in the chunk: outlives a removed queue, a close */
    const char *data; /* the body: into raw (raw messages) or after it */
    size_t len;
    const char *raw;  /* the message as stored in Redis */
    size_t raw_len;
    const char *id;   /* frame id; "" until redq_msg_id() formats idseq */
    uint64_t idseq;   /* no id of its own: it is "<consumer id>-<idseq>" */
    char idtmp[REDQ__MSG_ID_MAX]; /* ... formatted here on first use */
    long long ts_ms;  /* frame ts, -1 if none */
    int attempt;      /* this delivery's number, 1 for the first */
    int qidx;
    int partition;    /* of its logical queue (redq_msg_partition) */
    int framed;       /* came from the due list: raw is a frame */
    enum msg_state state;
    plist *pl;        /* at-least-once: the list it is in */
    uint64_t deadline_us;            /* visibility deadline (M_LIVE) */
    struct redq_message *prev, *next; /* live list, by deadline */
    struct redq_message *pl_prev, *pl_next; /* its plist, delivery order */
};

enum round_stage { R_IDLE, R_BLOCKING, R_BULK, R_TYPECHECK, R_TAKE };

typedef struct popper {
    redq_consumer *owner;
    redq__conn *conn;
    enum round_stage stage;
    size_t outstanding; /* commands of this round awaiting a reply */
    size_t reserved;    /* window places this round holds */
    int unblock_sent;
    int bulk_q;         /* the queue a BRPOP round continues on */
    int bulk_framed;    /* ... on its due list (1) or on Q (0) */
    size_t *round_q;    /* TAKE: the queue index of each group it names */
    size_t nround;
    size_t block_q;     /* at-least-once: the queue this one blocks on */
    int block_short;    /* ... with a short timeout, then a TAKE: the pool
                           is smaller than the queues, so some queue has no
                           connection blocked on it and is polled */
    size_t cur_block_q; /* ... or, that one being paused, the one its
                           BLMOVE in flight is on */
    unsigned pause_gen; /* the consumer's pause_gen when its round began */
    int block_next;     /* at-least-once: the last block timed out, so
                           block again without a TAKE first */
    size_t idx;         /* in the pool */
    char holder[48];    /* at-least-once: "<consumer id>.<idx>" */
    int sync;           /* a pop's reply was lost: 1 sync needed, 2 sent */
    size_t sync_left;   /* RETURN "sync" replies still awaited */
} popper;

/* A command for the control connection, kept until Redis answered it, so
 * that a lost connection resends it (acks and settles are idempotent:
 * see lib/scripts.c). */
typedef struct outcmd {
    struct outcmd *next;
    char *buf;
    size_t len;
    int kind; /* OUT_ACK, OUT_ACKFAST, OUT_SETTLE, OUT_SYNC, OUT_OTHER,
                 OUT_REMOVE */
    void *ctx; /* OUT_SYNC: the popper; OUT_REMOVE: queue slot + 1 */
    int script; /* the REDQ__SCRIPT_* it runs (loaded on first use) */
    char *fallback; /* OUT_ACKFAST: the full ACK, if the server says -1 */
    size_t fallback_len;
} outcmd;

/* Per queue: its keys (lib/keys.c) and, at-least-once, its processing
 * lists and heartbeats, per pool connection. */
typedef struct relq {
    char *due, *delayed, *dead, *consumers, *reaper;
    char *qenc;  /* the name percent-encoded, for dead letters REAP makes */
    plist *pl;   /* at-least-once: [2k] proc, [2k + 1] fproc of popper k */
    char **hb;   /* at-least-once: hb:<holder> of popper k */
    int registered; /* its first heartbeat was acknowledged */
    char *meta;     /* the queue's meta hash (its pause flag) */
    int paused;     /* redq_admin_pause(): learnt each promote tick; no
                       pop takes from it (both modes) while set */
    size_t held;    /* delivered messages of it not finished yet */
    /* redq_consumer_remove_queue(): a slot is never reused or moved while
     * anything may name its index (messages, replies in flight), so a
     * removed queue stays in the arrays as a tombstone (Q_GONE). */
    int state;      /* Q_ACTIVE, Q_REMOVING, Q_GONE */
    unsigned remove_gen;  /* pause_gen when the remove began */
    int returned;         /* its RETURN "stop"s are queued: no heartbeats */
    size_t return_left;   /* ... and not yet answered */
    int remove_done;      /* confirmed: the callback is due */
    redq_remove_cb remove_cb;
    void *remove_user;
    int frames;     /* its format is REDQ_FORMAT_FRAMES: learnt each
                       promote tick, as paused */
    int fmt_known;  /* a promote reply (or error) came: may pop */
    /* One server, a partitioned queue: its partitions >= 1 are slots of
     * their own (added when the meta read finds them), named after it. */
    int part;       /* this slot's partition index (0: a queue given) */
    size_t lq;      /* part > 0: the slot of its logical queue */
    int pasking;    /* part 0: a read of its partition fields in flight */
} relq;

struct redq__pcons;

/* How lib/pconsumer.c makes an inner consumer: one physical queue (a
 * partition of a logical queue), its messages named by the logical queue,
 * delivered with the outer handle's pointer, and on a cluster every
 * connection pinned to the physical queue's slot. */
typedef struct redq__inner_cfg {
    redq_consumer *outer; /* on_message gets it; ids share its sequence */
    const char *lname;    /* the logical queue's name (messages carry it) */
    int part;             /* the partition's index */
    struct redq__cluster *cl; /* NULL: ordinary connections */
    unsigned slot;        /* with cl: every connection follows its master */
    const char *id;       /* the outer's instance id (holder names) */
} redq__inner_cfg;

enum { Q_ACTIVE = 0, Q_REMOVING, Q_GONE };

enum { DEFER_KICK = 1, DEFER_CHECK_STOP = 2, DEFER_CLOSE = 4,
       DEFER_FLUSH_ACKS = 8, DEFER_WAKE = 16 /* unblock pops on Q: due has
                                                frames for them to TAKE */,
       DEFER_REMOVE = 32 /* a queue's removal may progress */ };

struct redq_consumer {
    /* An outer handle (lib/pconsumer.c: a cluster URL) has only this set
     * (and id): every API call goes to it. */
    struct redq__pcons *pc;
    /* An inner one (one partition): the outer, and its logical queue. */
    redq_consumer *outer;
    char *lname;
    size_t lnlen;
    int part;
    struct redq__cluster *cl;          /* connections pinned to cl_slot */
    unsigned cl_slot;
    struct redq__cluster_pin **pins;   /* [npool] pool, [npool] control */

    struct event_base *base;
    redq__logger log;
    redq_message_cb on_message;
    void *message_user;

    char **queues;
    size_t *qlens;
    uint64_t *bad_until; /* per queue: skipped until then (wrong type) */
    size_t nq;           /* slots, removed ones (Q_GONE) included */
    size_t nactive;      /* slots that are Q_ACTIVE */
    size_t nremoving;    /* slots that are Q_REMOVING */

    popper *pool;
    size_t npool;
    redq__conn *ctl;

    size_t pop_batch, max_unacked;
    int pop_timeout_ms, stop_timeout_ms, pop_mode;

    const char **argv; /* reused for building pop commands */
    size_t *argvlen;

    size_t unacked, reserved;
    size_t n_idle;   /* poppers between rounds */
    size_t kick_min; /* room that makes it worth waking a parked popper */
    struct { chunk *head; } live;
    chunk *free_chunks;
    size_t nfree;

    struct event *ev_defer;
    int defer_flags;
    struct event *t_retry; /* unblock retries, wrong-type rechecks */

    int stopping, stop_done, stop_timed_out;
    redq_stop_cb stop_cb;
    void *stop_user;
    struct event *t_stop;

    int closing;
    int close_draining; /* closing, waiting (bounded) for its acks */
    redq_close_cb close_cb;
    void *close_user;

    /* at-least-once (lib/reliable.c) */
    int reliable;
    char id[24];                 /* this instance, for its keys */
    relq *rq;                    /* per queue */
    redq__scripts scripts;
    int visibility_timeout_ms, max_attempts, retry_base_ms, retry_max_ms;
    int consumer_ttl_ms, promote_interval_ms;
    redq_message *live_head, *live_tail; /* M_LIVE, delivery order */
    outcmd *out_head, *out_tail;         /* not yet sent (ctl down) */
    outcmd *sent_head, *sent_tail;       /* sent, reply awaited */
    struct event *t_visibility, *t_heartbeat, *t_promote;
    uint64_t promote_at_us; /* when t_promote fires, 0 when not armed */
    int registered;         /* every queue's first heartbeat acknowledged:
                               may pop */
    int deregistered;       /* a stop has sent its RETURN "stop"s: no more
                               heartbeats, ever */
    int due_waiting;        /* PROMOTE saw frames in a due list: blocked
                               pops (which watch Q only) TAKE next */
    size_t reap_inflight;   /* reaper commands awaiting replies */
    uint32_t rng;
    redq__registry *registry; /* queues recorded for admin tools */
    unsigned pause_gen;       /* bumped when a queue's pause flag changes:
                                 a pop begun before is on stale keys */
    redq__stats stats;        /* on_stats (lib/stats.c) */
    uint64_t idseq;           /* ids made for plain queues' messages */
    uint64_t parts_at_us;     /* next read of the partition fields */
    size_t fmt_unknown;       /* queues whose format is not known yet: no
                                 pops before (lib/reliable.c) */

    redq_consumer_stats st;
};

/* ---- lib/consumer.c, for lib/pconsumer.c ---- */
/** Make an ordinary consumer of one queue from options already checked
 *  (opts, url borrowed for the call), as an inner one when `in` is not
 *  NULL. Returns 0, REDQ_EINVAL or REDQ_ENOMEM. */
int redq__consumer_create(redq_consumer **out, struct event_base *base,
                          const redq__options *opts, const redq__url *url,
                          const redq__logger *lg, const char *queue,
                          const redq__inner_cfg *in);
/** A reply on one of c's connections: 1 when c is pinned to a cluster
 *  slot and the reply says "not here / not now" (MOVED, ASK, TRYAGAIN,
 *  CLUSTERDOWN): the command did not run, and the same command later
 *  will (a MOVED makes the pinned connection follow the slot by itself:
 *  lib/conn.c). Else 0. */
int redq__consumer_redirected(redq_consumer *c, redq__conn *conn,
                              const void *reply);

/* ---- lib/pconsumer.c ---- */
/** redq_consumer_new for a redis+cluster:// URL: an outer handle over
 *  inner consumers, one per partition of each queue. */
int redq__pconsumer_new(redq_consumer **out, struct event_base *base,
                        const redq__options *opts, const redq__url *url,
                        const redq__logger *lg, const char *const *queues,
                        size_t nqueues);
int redq__pc_stop(redq_consumer *c, int timeout_ms, redq_stop_cb cb,
                  void *user);
int redq__pc_close(redq_consumer *c, redq_close_cb cb, void *user);
int redq__pc_add_queue(redq_consumer *c, const char *queue);
int redq__pc_remove_queue(redq_consumer *c, const char *queue,
                          redq_remove_cb cb, void *user);
void redq__pc_stats(const redq_consumer *c, redq_consumer_stats *st);

/* ---- lib/consumer.c, for lib/reliable.c ---- */
/** One server: partition `part` (>= 1), physical queue `name`, of the
 *  logical queue in slot `lq` was found: consume it in a slot of its own
 *  (nothing when it is there already). 0 or REDQ_ENOMEM. */
int redq__consumer_add_partition(redq_consumer *c, const char *name,
                                 size_t lq, int part);
void redq__consumer_defer(redq_consumer *c, int flag);
/** Is queue slot `i` one pops may name (active, and at-least-once
 *  registered by its first heartbeat)? */
int redq__queue_usable(const redq_consumer *c, size_t i);

/* ---- lib/reliable.c ---- */

/** Format argv (lens NULL: strlen each) and send it on `conn` as a call of
 *  Lua script `script`, loading the script on its first use there
 *  (redq__conn_send_script). Same returns. */
int redq__rel_send_script(redq__conn *conn, int script, size_t argc,
                          const char **argv, const size_t *lens,
                          int extra_timeout_ms, redq__reply_cb cb, void *arg);

/** Set up at-least-once state (keys, timers, id) for a new consumer. */
int redq__rel_init(redq_consumer *c, const redq__options *o);
/** Set up the keys (and, at-least-once, the processing lists) of queue
 *  slot `i`, just added (c->rq has room for it, zeroed). REDQ_ENOMEM. */
int redq__rel_queue_init(redq_consumer *c, size_t i);
/** Free what redq__rel_queue_init made for slot `i`. */
void redq__rel_queue_free(redq_consumer *c, size_t i);
/** Heartbeat queue `i` now (its first one registers it). */
void redq__rel_heartbeat_queue(redq_consumer *c, size_t i);
/** A removed queue is no longer named by any pop and nothing of it is
 *  held: give its processing lists back (RETURN "stop" per holder) and
 *  leave its consumers set; rq[i].remove_done is set when Redis answered
 *  all. At-most-once it is done at once. */
void redq__rel_return_queue(redq_consumer *c, size_t i);
/** The handler finishes a message of a closing consumer: take it off the
 *  books without telling Redis (the close gives it back). */
void redq__rel_forget(redq_consumer *c, redq_message *m);
/** Reject: straight to the dead letters (at-most-once: dropped). Returns
 *  0 or REDQ_ETIMEDOUT (visibility passed). */
int redq__rel_reject(redq_consumer *c, redq_message *m, const char *reason);
/** Free it (after the connections are gone). */
void redq__rel_free(redq_consumer *c);
/** Parse a frame taken from a due list into *m (data/len/attempt/id).
 *  Returns 0, or REDQ_EPROTOCOL for a malformed one, which has been
 *  dead-lettered whole (why in the log) and must not be delivered. */
int redq__rel_prepare(redq_consumer *c, redq_message *m, char *idspace);
/** idspace: room for a frame's id (REDQ__ID_ROOM bytes) next to it. */
#define REDQ__ID_ROOM 65
/** The message's id, formatted into m->idtmp when it has none of its own
 *  (redq_msg_id()). */
const char *redq__msg_idstr(redq_message *m);
/** Push a live message's visibility deadline to now + ms. Returns 0, or
 *  REDQ_ETIMEDOUT when it had already expired. */
int redq__rel_extend(redq_consumer *c, redq_message *m, int ms);
/** A message was handed to the handler: start its visibility clock. */
void redq__rel_delivered(redq_consumer *c, redq_message *m);
/** Ack / nack of an at-least-once or fast message (window bookkeeping is
 *  the caller's). Returns 0 or REDQ_ETIMEDOUT (visibility passed). */
int redq__rel_ack(redq_consumer *c, redq_message *m);
int redq__rel_nack(redq_consumer *c, redq_message *m, const char *reason);
/** Send gathered acks (end of a loop iteration). */
void redq__rel_flush_acks(redq_consumer *c);
/** The control connection is up: send what waited, start the timers. */
void redq__rel_ctl_up(redq_consumer *c);
/** Nothing sent to Redis is still unanswered (acks, settles). */
int redq__rel_quiet(const redq_consumer *c);
/** A stop with nothing unacked: deregister this instance (queued in the
 *  outbox; the stop waits for it like for acks). */
void redq__rel_stopped(redq_consumer *c);
/** Handle an error reply to a script on a pool connection: 1 if handled
 *  (NOSCRIPT: the connection is being redone). */
int redq__rel_script_error(redq_consumer *c, redq__conn *conn, const char *err);
/** A pop on `pp` got no reply (connection lost, deadline): what it took,
 *  if it ran, is in pp's processing lists untracked. Queue a RETURN "sync"
 *  per queue (after the acks gathered so far); pp pops again when all are
 *  answered. */
void redq__rel_sync(redq_consumer *c, popper *pp);
/** Start the stop's final step: RETURN "stop" for every holder (what the
 *  handler still holds goes back too, and is marked settled). */
void redq__rel_return_all(redq_consumer *c);

#endif /* REDQ_CONSUMER_INT_H */
