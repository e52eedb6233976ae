/*
 * The producer's insides, shared by lib/producer.c (batches, sending,
 * replies, reports, the API) and lib/producer_queue.c (what the producer
 * learns about each queue it writes to: its format, its partitions on one
 * server, its length under max_queue_len). Nothing else includes this.
 */
#ifndef REDQ_PRODUCER_INT_H
#define REDQ_PRODUCER_INT_H

#include <stdint.h>

#include <event2/event.h>

#include "redq_private.h"

/* Room for "*<up to 20 digits>\r\n" in front of every batch. */
#define HEADER_ROOM 24

/* redq_produce_owned: payloads at least this long stay in the caller's
 * buffer and are spliced into the command when it is handed to hiredis;
 * shorter ones are copied into the batch like redq_produce's, since
 * copying a few hundred bytes costs less than one more piece to append. */
#define OWNED_SPLICE_MIN 512

enum batch_kind { B_LPUSH, B_DELAY };

enum batch_state {
    B_OPEN,     /* in the map, taking messages */
    B_SEALED,   /* in the FIFO, not written (or to be rewritten) */
    B_INFLIGHT, /* in the FIFO, written, reply awaited */
    B_ZOMBIE,   /* in flight but already reported (timeout, close): the
                   reply is awaited only to free it */
    B_STORED    /* min_replicas: the master answered the LPUSH; waiting for
                   the WAIT behind it before reporting */
};

typedef struct msg_entry {
    void *opaque;
    size_t off; /* payload offset in the batch buffer */
    size_t len;
    uint64_t seq; /* its id is "<producer id>-<seq + 1>" */
} msg_entry;

/* A message of redq_produce_owned: the caller's buffer, released by
 * free_cb after its report. Kept in a side table of the batch, in message
 * order, so that copied messages pay nothing for the feature. */
typedef struct owned_entry {
    size_t idx;        /* its index in the batch's msgs */
    void *data;
    redq_free_cb free_cb;
    void *free_user;
    int spliced;       /* not in buf: msgs[idx].off is where it goes */
} owned_entry;

typedef struct batch {
    struct redq_producer *owner;
    struct batch *prev, *next; /* FIFO, open list or free list */
    struct batch *hnext;       /* hash chain while open */
    uint32_t hash;
    int kind; /* enum batch_kind */
    enum batch_state state;
    int frames;      /* B_LPUSH to a frames queue: the buffer holds a PUSH
                        script call of frames, not an LPUSH */
    redq__qfmt *fmt; /* B_LPUSH: what is known of the queue's format */

    char *qname; /* NUL-terminated copy, for reports and map lookups */
    const char *lname; /* the logical queue (a partition's batch: its
                          queue's name, in the producer's entry of it;
                          else qname): reports and the registry say it */
    size_t qlen, qcap;

    char *buf; /* [HEADER_ROOM][$5 LPUSH][$q queue][$len payload]... */
    size_t len, cap;
    size_t start; /* where the sealed command starts (header written) */

    msg_entry *msgs;
    size_t n, mcap;
    size_t payload_bytes;

    owned_entry *own; /* owned messages, in order; released when reported */
    size_t nown, owncap;
    size_t nsplice;       /* how many of them are spliced (not in buf) */
    size_t spliced_bytes; /* their payload bytes: buf + these = the command */

    uint64_t first_seq; /* sequence number of msgs[0] */
    uint64_t first_us;  /* when msgs[0] was accepted */
    uint64_t last_us;   /* when the newest message was accepted */
    int sent_before;    /* written at least once: a rewrite is a resend */
    int unknown;        /* some write of it got no answer: it may be stored
                           (reported REDQ_PERSIST_POSSIBLY if it fails) */
    int stored;         /* the master answered it (B_STORED): a failure now
                           is reported REDQ_PERSIST_YES */
} batch;

typedef struct blist {
    batch *head, *tail;
} blist;

typedef struct flush_waiter {
    struct flush_waiter *next;
    uint64_t target_seq; /* done when every seq below it is reported */
    redq_flush_cb cb;
    void *user;
    struct redq_producer *owner;
    struct event *t_deadline; /* its own timeout_ms (NULL: none) */
} flush_waiter;

enum { DEFER_SEND = 1, DEFER_FLUSH_CHECK = 2, DEFER_CLOSE = 4 };

struct redq_producer {
    struct event_base *base;
    redq__conn *conn;
    /* A partitioned or cluster producer (lib/pproducer.c): this struct is
     * then only the public face (window, counters, callbacks, id) and pp
     * does the rest through inner producers. NULL for an ordinary one. */
    redq__pprod *pp;
    /* An inner producer (lib/pproducer.c): its connection is pinned to
     * its slot (freed with the pin), it touches no key of another slot
     * (no registry ZADD), takes partition names, and numbers its ids
     * from the outer producer's counter. */
    redq__cluster_pin *pin;
    int inner;
    uint64_t *idseq; /* the outer's next_seq (inner), else &next_seq */
    redq__logger log;
    redq__scripts scripts; /* redq_produce_delayed() calls one by SHA */
    char lenhdr[32];       /* "$<len>\r\n" of the last message length */
    size_t lenhdr_n, lenhdr_of;
    char id[REDQ__INSTANCE_ID_LEN + 1]; /* the producer id (redq.h) */
    char idbuf[REDQ__MSG_ID_MAX];       /* "<id>-<n>" of the report */
    uint64_t idnum;        /* the n in idbuf (0: none yet) */
    size_t idnum_len;      /* its digits */
    redq__qfmts fmts;      /* queue formats, learnt on first use */
    redq__qfmt *lastlq;    /* the queue the caller named last (route) */
    size_t nheld;          /* keyed messages waiting for their queue's P */
    struct event *t_meta;  /* meta fields read again (redq__pr_meta_tick) */
    int reformat;          /* a PUSH found its queue plain: nothing is sent
                              until the pipeline drains, then the FIFO goes
                              again from its head (see on_batch_reply) */

    /* options */
    redq_report_cb on_report;
    void *report_user;
    redq_ready_cb on_ready;
    void *ready_user;
    size_t batch_max_msgs, batch_max_bytes;
    unsigned linger_us;
    int adaptive;
    size_t max_inflight;
    size_t max_pending_msgs, max_pending_bytes, max_message_bytes;
    uint64_t message_timeout_us;
    uint64_t span_max_us; /* how long one batch may keep taking messages */

    /* open batches: hash map by queue name + list in creation order */
    batch **buckets;
    size_t nbuckets, nopen;
    redq__iov *iov;   /* pieces of a command with spliced payloads */
    size_t iovcap;
    blist open;
    batch *last; /* the open batch used last: the one-queue fast path */

    blist fifo;       /* sealed, oldest first; in flight first */
    batch *next_unsent;
    size_t inflight;  /* batches written and awaiting a reply */

    batch *free_list;
    size_t nfree;

    size_t pending_msgs, pending_bytes;
    uint64_t next_seq;
    int want_ready;

    struct event *ev_defer;
    int defer_flags;
    struct event *t_linger;
    int linger_armed;
    struct event *t_sweep;
    int sweep_armed;

    /* max_queue_len: sending stops while a queue is that long */
    size_t max_queue_len;
    int throttled;
    char *throttle_q; /* the queue being watched (LLEN) */
    struct event *t_throttle;
    int llen_inflight;

    flush_waiter *waiters;
    struct event *t_flush; /* zero timer: flush checks in the next iteration */

    /* A "not applied, resend" error (BUSY, LOADING, ...): see on_batch_reply */
    int redo;              /* waiting for the pipeline to drain, then reset */
    int redo_code;
    char redo_msg[256];
    int careful;           /* one batch in flight until a batch succeeds */

    /* Replica-acknowledged writes (min_replicas): a WAIT is pipelined
     * behind the batches of each pump; see on_wait_reply. */
    int min_replicas;
    int replica_timeout_ms;
    size_t waits;          /* WAIT commands awaiting a reply */
    char wait_cmd[64];     /* "WAIT n ms" in RESP */
    size_t wait_len;

    int closing;
    redq_close_cb close_cb;
    void *close_user;

    redq_producer_stats st;

    /* Queues recorded in the registry (lib/registry.c), touched per batch
     * at seal time, never per message. */
    redq__registry *registry;
    redq__stats stats; /* on_stats (lib/stats.c) */
};

/* Decimal digits of v at dst, no NUL; returns how many. Runs once per
 * message (the "$<len>" of each bulk string), hence no temp buffer. */
static inline size_t redq__pr_put_uint(char *dst, uint64_t v)
{
    size_t n = 1;
    uint64_t t = v;
    char *w;
    while (t >= 100) {
        t /= 100;
        n += 2;
    }
    if (t >= 10)
        n++;
    w = dst + n;
    do {
        *--w = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    return n;
}

/* ---- lib/producer.c, for lib/producer_queue.c --------------------------- */

/** Write what the FIFO has for the connection (within the pipeline's
 *  room); nothing while a redo or a reformat waits. */
void redq__pr_pump(redq_producer *p);
/** Seal every open batch (into the FIFO). */
void redq__pr_seal_all(redq_producer *p);
/** Report every message of b with code/why and release it (in flight: it
 *  becomes a zombie until its reply). */
void redq__pr_fail_batch(redq_producer *p, batch *b, int code,
                         const char *why);
/** The pipeline drained after a "not applied" error: reset connection c
 *  and resend from the FIFO's head. */
void redq__pr_redo_now(redq_producer *p, redq__conn *c);
/** Write b's "*<argc>\r\n" right-aligned into its reserved room. */
void redq__pr_put_argc(batch *b);

/** on_ready if owed and the window is down to its low-water mark. */
void redq__pr_maybe_ready(redq_producer *p);
/** The number of p->idbuf ("<producer id>-<seq + 1>") for message seq. */
void redq__pr_put_id_number(redq_producer *p, uint64_t seq);
/** Start the message_timeout_ms sweep if it is not running. */
void redq__pr_arm_sweep(redq_producer *p);
/** Run work (DEFER_*) from the loop, once, soon. */
void redq__pr_defer(redq_producer *p, int flag);
/** The entry of the queue the caller named, made (and its meta read
 *  asked) on first use; NULL when out of memory. */
redq__qfmt *redq__pr_lq_lookup(redq_producer *p, const char *queue,
                               size_t qlen);
/** redq_produce once the queue is routed: copy the message into the open
 *  batch of physical queue `queue` (lq: the caller's queue, whose name
 *  reports carry; NULL: queue itself). 0 or REDQ_ENOMEM. */
int redq__pr_put_copy(redq_producer *p, redq__qfmt *lq, const char *queue,
                      size_t qlen, const void *payload, size_t len,
                      void *opaque);

/* ---- lib/producer_queue.c, for lib/producer.c --------------------------- */

/* How often the meta fields of the queues in use are read again. */
#define REDQ__PR_META_MS 2000

/** The keyed messages of f that waited for its partition count go to
 *  their partitions now (each with the id number given at acceptance). */
void redq__pr_dispatch_held(redq_producer *p, redq__qfmt *f);
/** Report (status, why) and free the held messages of every queue
 *  accepted before older_than_us (redq__now_us), oldest first. */
void redq__pr_fail_held(redq_producer *p, uint64_t older_than_us, int status,
                        const char *why);
/** The timer (t_meta, every REDQ__PR_META_MS): HMGET again the meta of
 *  every queue used since the last tick or with keyed messages waiting. */
void redq__pr_meta_tick(evutil_socket_t fd, short what, void *arg);
/** Partition i's queue name of f's queue (i = 0: the queue itself), made
 *  on first use; its length in *len. NULL when out of memory. */
const char *redq__pr_partition(redq__qfmt *f, unsigned i, size_t *len);

/** "EVALSHA <PUSH> 2 <queue> <meta>" of b in RESP at w (without the array
 *  header); returns the end. Room: the name and meta key plus 64. */
char *redq__pr_put_push_head(redq_producer *p, const batch *b, char *w);
/** Ask f's queue's format (pipelined); its answer rewrites the batches of
 *  that queue not in flight, then pumps. */
void redq__pr_learn_format(redq_producer *p, redq__qfmt *f);
/** A PUSH of b found its queue plain: b and every batch of its queue not
 *  in flight become LPUSHes; nothing is sent until the pipeline drains. */
void redq__pr_format_refused(redq_producer *p, batch *b);
/** The pipeline drained after redq__pr_format_refused: send from the
 *  head. */
void redq__pr_reformat_done(redq_producer *p);
/** A LPUSH answered a length >= max_queue_len: stop sending, watch the
 *  queue's length (LLEN) until it is below 3/4 of it. */
void redq__pr_throttle(redq_producer *p, const char *queue);
/** The watch's timer (t_throttle). */
void redq__pr_throttle_cb(evutil_socket_t fd, short what, void *arg);

#endif /* REDQ_PRODUCER_INT_H */
