/*
 * The admin handle's internals, shared by lib/admin.c (requests, snapshots,
 * dead letters, orphans) and lib/admin_parts.c (partitioned queues).
 * Nothing else includes this.
 */
#ifndef REDQ_ADMIN_INT_H
#define REDQ_ADMIN_INT_H

#include <stddef.h>
#include <stdint.h>

#include "redq_private.h"

struct event;
struct event_base;

enum areq_kind {
    K_QUEUES, K_QUEUE, K_PEEK, K_DEAD, K_REQUEUE, K_REQUEUE_ID, K_DELETE_ID,
    K_PURGE, K_PAUSE, K_RECOVER, K_METRICS, K_ORPHANS, K_RECOVER_ORPHANS,
    K_SETFORMAT, K_SETPARTS, K_PARTS
};
/* Tries of redq_admin_set_partitions when another writer changes the
 * partitions between its read and its write. */
#define SETPARTS_TRIES 10

typedef struct qsnap {
    char *name;
    size_t len;
    redq_queue_info info;
    int done;
    size_t parent; /* a partition >= 1 of snaps[parent - 1]; 0: a queue */
    int part;      /* its index */
} qsnap;

typedef struct areq areq;

/* A candidate of the orphan search: a processing list of the queue. */
typedef struct orphan_cand {
    char *key;
    size_t klen;
    char holder[40];
    int member;        /* its holder is in the consumers set (-1 unknown) */
    long long len;     /* LLEN, -1 unknown */
} orphan_cand;

/* The argument of one command's reply callback. */
typedef struct aref {
    areq *r;
    size_t i;
    char holder[48];
} aref;

struct areq {
    redq_admin *a;
    areq *prev, *next;
    int kind;
    int started, finishing;
    size_t outstanding;
    struct event *ev; /* the wait deadline, then the deferred finish */

    char *queue, *arg; /* copies of the caller's strings */
    size_t qlen;
    size_t count, offset;
    int paused;
    long long offset_ll; /* DEADONE: where to look next */
    int fmt_want;        /* redq__adm_format_parts: 1, 0, -1 (see there) */
    uint64_t n;

    union {
        redq_queues_cb queues;
        redq_msgs_cb msgs;
        redq_done_cb done;
        redq_text_cb text;
        redq_orphans_cb orphans;
        redq_partitions_cb parts;
    } cb;
    void *user;

    int status;
    char errstr[256];

    qsnap *snaps;
    size_t nsnaps;
    redq_admin_msg *msgs;
    char **bufs; /* copies msgs point into */
    size_t nmsgs;
    char *text;
    size_t textlen;

    /* The orphan search (K_ORPHANS, K_RECOVER_ORPHANS). */
    char *prefix;      /* the queue's key prefix, "{Q}/" */
    char *pattern;     /* prefix glob-escaped, then "*proc:*" */
    char cursor[32];
    orphan_cand *cands;
    size_t ncands, capcands, checks;
};

struct redq_admin {
    struct event_base *base;
    redq__logger log;
    redq__conn *conn;   /* one server (NULL on a cluster) */
    redq__cluster *cl;  /* redis+cluster://: commands routed by slot */
    redq__scripts scripts;
    int wait_ms, max_attempts;
    areq *head;
    int closing;
    redq_close_cb close_cb;
    void *close_user;
    struct event *ev_close;
};

/* ---- lib/admin.c, for lib/admin_parts.c ---- */

/** Record the request's first failure (it ends once nothing is
 *  outstanding). */
void redq__adm_fail(areq *r, int code, const char *fmt, ...) REDQ__PRINTF(3, 4);
/** Nothing outstanding: schedule the request's callback. */
void redq__adm_settle(areq *r);
/** A reply is usable, else the request is failed with why. */
int redq__adm_reply_ok(areq *r, void *rep, const char *what);
/** The argument of a command's reply callback (index i). */
aref *redq__adm_ref_new(areq *r, size_t i);
/** Send argv (lens NULL: strlen each) on the handle's connection or, on a
 *  cluster, through the router by the slot of its key; counted
 *  outstanding. Fails the request (and frees ref) on an error. */
int redq__adm_send_cmd(areq *r, int script, size_t argc, const char **argv,
                       const size_t *lens, redq__reply_cb cb, aref *ref);
/** Begin a reply callback: the request, and the ref's index (freed). */
areq *redq__adm_reply_begin(void *arg, size_t *i, char *holder);
/** Key `sfx` of queue q, or NULL with the request failed. */
char *redq__adm_qkey(areq *r, const char *q, size_t qlen, const char *sfx);
/** Add a snapshot slot for queue `name`; REDQ_ENOMEM. */
int redq__adm_snap_add(areq *r, const char *name, size_t len, long long seen);
/** Snapshot snaps[i] (SMEMBERS consumers, then SNAPSHOT). */
void redq__adm_snap_start(areq *r, size_t i);
/** The common start of every call, and the launch of its request. */
int redq__adm_submit(redq_admin *a, int kind, const char *queue, int has_cb,
                     void *user, areq **out);
int redq__adm_launch(areq *r);

/* ---- lib/admin_parts.c ---- */

/** Snapshot queue snaps[i] and each of its partitions (HMGET of its
 *  partition fields first); fold_parts sums them at the end. */
void redq__adm_snap_begin(areq *r, size_t i);
/** Sum the partitions' snapshots into their queues' and drop them. */
void redq__adm_fold_parts(areq *r);
/** K_PARTS' callback. */
void redq__adm_finish_parts(areq *r, const char *es);
/** K_PAUSE: set or clear the flag of every partition >= 1 of the queue
 *  too (consumers of a partition read its own meta). */
void redq__adm_pause_parts(areq *r);
/** Give the partitions of r->queue a format (lib/admin_parts.c): want 1
 *  frames, 0 plain, -1 the queue's own when it is frames (after new
 *  partitions were made). Sends through r; settles with it. */
void redq__adm_format_parts(areq *r, int want);
/** K_SETPARTS' first step. */
void redq__adm_setparts_read(areq *r);

#endif /* REDQ_ADMIN_INT_H */
