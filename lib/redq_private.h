/*
 * Internals shared between the files of lib/. Nothing here is installed.
 * Shared functions are named redq__*; everything else in lib/ is static.
 */
#ifndef REDQ_PRIVATE_H
#define REDQ_PRIVATE_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include "redq.h"

#if defined(__GNUC__)
#define REDQ__PRINTF(f, a) __attribute__((format(printf, f, a)))
#define REDQ__LIKELY(x) __builtin_expect(!!(x), 1)
#define REDQ__HOT_INLINE inline __attribute__((always_inline))
#define REDQ__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define REDQ__PRINTF(f, a)
#define REDQ__LIKELY(x) (x)
#define REDQ__HOT_INLINE inline
#define REDQ__UNLIKELY(x) (x)
#endif

/* Redis refuses bulk strings above proto-max-bulk-len (512 MiB default). */
#define REDQ__MAX_BULK ((size_t)512 * 1024 * 1024)
/* Queue names are Redis keys; keep them to something sane. */
#define REDQ__MAX_QUEUE_NAME 1024

/* ---- time (lib/log.c) -------------------------------------------------- */

/** Monotonic clock in microseconds. */
uint64_t redq__now_us(void);
/** Wall-clock time in milliseconds since the epoch (for timestamps stored
 *  in messages, never for timeouts). */
long long redq__wall_ms(void);

/* ---- logging (lib/log.c) ----------------------------------------------- */

typedef struct redq__logger {
    redq_log_cb cb;
    int level;
    void *user;
    const char *prefix; /* "producer", "consumer": names the handle in msgs */
} redq__logger;

/** Format and pass a message to the logger's callback when `level` is at or
 *  below its level. Safe with a NULL callback. Never allocates: messages are
 *  cut at 512 bytes. */
void redq__log(const redq__logger *lg, int level, int code, const char *fmt,
               ...) REDQ__PRINTF(4, 5);

/* ---- errors (lib/error.c) ---------------------------------------------- */

/** Map a Redis error reply ("WRONGTYPE ...", "NOAUTH ...") to a REDQ_E*:
 *  NOAUTH/WRONGPASS -> REDQ_EAUTH, NOPERM -> REDQ_ENOPERM, ... */
int redq__err_from_reply(const char *str, size_t len);
/** Nonzero when an error reply is a passing server state (LOADING, BUSY,
 *  TRYAGAIN, MASTERDOWN) or a cluster redirect (MOVED, ASK, CLUSTERDOWN):
 *  the command did not run, and the same command later (on a redone
 *  connection, which follows a pinned slot) will work. Wait (with a
 *  backoff) and resend; never report it as a failure of the message. -OOM
 *  is not included (see lib/error.c). */
int redq__err_is_transient(const char *str, size_t len);

/* What a cluster error reply asks of the client (redq__err_cluster). */
enum {
    REDQ__REDIR_NONE = 0,   /* not a cluster redirect: the command's answer */
    REDQ__REDIR_MOVED,      /* "MOVED <slot> <host:port>" */
    REDQ__REDIR_ASK,        /* "ASK <slot> <host:port>" */
    REDQ__REDIR_TRYAGAIN,   /* "TRYAGAIN ..." */
    REDQ__REDIR_CLUSTERDOWN /* "CLUSTERDOWN ..." */
};
/** Classify an error reply (its first word, exactly) as a REDQ__REDIR_*.
 *  In every case but NONE the command did not run. */
int redq__err_cluster(const char *str, size_t len);

/* ---- options (lib/options.c) ------------------------------------------- */

/*
 * Every option of every handle, in one struct: lib/options.c fills it from
 * whichever public struct the caller gave (redq_producer_options,
 * redq_consumer_options, redq_admin_options), the defaults in the fields
 * that struct does not have, and the rest of lib/ reads only this. Field
 * names are the public ones, except the user pointers (one per callback).
 */
typedef struct redq__options {
    /* connection (every handle) */
    const char *url;
    const char *password;
    const char *client_name;
    int connect_timeout_ms;
    int command_timeout_ms;
    int reconnect_min_ms;
    int reconnect_max_ms;
    redq_log_cb log;
    int log_level;
    void *log_user;
    char *errbuf; /* NULL when the caller gave none */
    size_t errbuf_size;

    /* statistics (producer, consumer) */
    redq_stats_cb on_stats;
    void *stats_user;
    int stats_interval_ms;

    /* producer */
    redq_report_cb on_report;
    void *report_user;
    redq_ready_cb on_ready;
    void *ready_user;
    size_t batch_max_msgs;
    size_t batch_max_bytes;
    unsigned linger_us;
    int adaptive;
    size_t max_inflight_batches;
    size_t max_pending_msgs;
    size_t max_pending_bytes;
    size_t max_message_bytes;
    int message_timeout_ms;
    size_t max_queue_len;
    int min_replicas;
    int replica_timeout_ms;

    /* consumer */
    redq_message_cb on_message;
    void *message_user;
    int guarantee;
    size_t pool_size;
    size_t pop_batch;
    size_t max_unacked;
    int pop_timeout_ms;
    int stop_timeout_ms;
    int pop_mode;
    int visibility_timeout_ms;
    int max_attempts;
    int retry_base_ms;
    int retry_max_ms;
    int consumer_ttl_ms;
    int promote_interval_ms;
} redq__options;

/** The defaults of every field (what the public *_init() functions give). */
void redq__options_defaults(redq__options *o);

/** Check every field of `opts`; on a bad one return REDQ_EINVAL and write why
 *  into err (errlen bytes, NUL-terminated), naming the public field
 *  ("options.message_timeout_ms must be >= 0"). */
int redq__options_check(const redq__options *opts, char *err, size_t errlen);

struct redq__url;
struct redq__conn_config;

/** Bytes of the caller's public options struct for layout `version` (1 ..
 *  REDQ_*_OPTIONS_VERSION), 0 for a version this library does not know. */
size_t redq__producer_options_size(int version);
size_t redq__consumer_options_size(int version);
size_t redq__admin_options_size(int version);

/** What every handle's *_new does first: make its logger (*log, naming the
 *  handle: "producer", "consumer", "admin"), read the caller's options into
 *  *full (the fields of opts->version's layout, defaults for the newer ones
 *  and for the fields of the other roles: read options from *full only,
 *  never past the caller's layout), check them, parse the URL into *url
 *  (caller frees with redq__url_free), and on failure log why and write it
 *  to opts->errbuf (never quoting URL user info). On success opts->errbuf
 *  gets "". opts and full must not be NULL.
 *  Returns 0, REDQ_EINVAL or REDQ_ENOMEM. */
int redq__options_prepare_producer(const redq_producer_options *opts,
                                   redq__options *full,
                                   struct redq__url *url, redq__logger *log);
int redq__options_prepare_consumer(const redq_consumer_options *opts,
                                   redq__options *full,
                                   struct redq__url *url, redq__logger *log);
int redq__options_prepare_admin(const redq_admin_options *opts,
                                redq__options *full, struct redq__url *url,
                                redq__logger *log);
/** A *_new failed after redq__options_prepare_*(): log `code` and the
 *  formatted reason and write it to full->errbuf (the caller's, when it
 *  gave one). Returns code. */
int redq__new_failed(const redq__options *full, const redq__logger *log,
                     int code, const char *fmt, ...) REDQ__PRINTF(4, 5);

/* lib/consumer.c: the consumer's counters, the whole struct (lib/options.c
 * wraps it as redq_consumer_get_stats_sized()). */
void redq__consumer_stats_fill(const redq_consumer *c, redq_consumer_stats *st);

/** Fill a connection config from options, a parsed URL and a logger (all
 *  borrowed). */
void redq__conn_config_init(struct redq__conn_config *cfg,
                            const redq__options *opts,
                            const struct redq__url *url,
                            const redq__logger *log);

/* ---- URLs (lib/url.c) -------------------------------------------------- */

typedef struct redq__url_node {
    char *host; /* name or IP literal, no brackets */
    int port;
} redq__url_node;

/* redq.h's redq_url_parse() is this parser: it moves the strings of a
 * redq__url into a redq_url_info, so both read every URL the same way. */

typedef struct redq__url {
    int is_unix;    /* 1 for unix://, 0 for redis:// */
    char *host;     /* redis://: name or IP literal, no brackets; else NULL */
    int port;       /* redis://: 1..65535 (default 6379); else 0 */
    char *path;     /* unix://: socket path, decoded; else NULL */
    char *user;     /* ACL user name, decoded; NULL when none (for
                       redis+sentinel://: the data nodes' user) */
    char *password; /* decoded; NULL when none (likewise) */
    int db;         /* database index, 0 by default */
    /* redis+sentinel:// only (is_sentinel 1; host and path are NULL): */
    int is_sentinel;
    size_t nsentinels;         /* 1..16 */
    redq__url_node *sentinels; /* port 26379 by default */
    char *master_name;         /* the name the sentinels know the master by */
    char *sentinel_user;       /* ?sentinel_user=, decoded; NULL when none */
    char *sentinel_password;   /* ?sentinel_password=, decoded; NULL: none */
    /* redis+cluster:// only (is_cluster 1; host and port are the first
     * seed's, path is NULL, db is 0: any other db is refused): */
    int is_cluster;
    size_t nnodes;             /* 1..64 seed nodes */
    redq__url_node *nodes;     /* port 6379 by default */
} redq__url;

/**
 * Parse `url` (see redq_producer_options.url for the forms) into *out, whose strings
 * are malloc'd and released by redq__url_free().
 * Returns 0, REDQ_EINVAL (err says what is wrong, e.g. "port 70000 out of
 * range 1-65535") or REDQ_ENOMEM. On failure *out is zeroed and owns nothing.
 */
int redq__url_parse(redq__url *out, const char *url, char *err, size_t errlen);

/** Release the strings of a parsed URL and zero it. Safe on a zeroed one. */
void redq__url_free(redq__url *u);

/* ---- name resolution (lib/resolve.c) ----------------------------------- */

struct event_base;
typedef struct redq__resolver redq__resolver;

/** Result of a lookup: status 0 and a numeric address in `ip`, or a REDQ_E*
 *  and a message. Both strings are borrowed for the call. */
typedef void (*redq__resolve_cb)(int status, const char *ip, const char *msg,
                                 void *arg);

redq__resolver *redq__resolver_new(struct event_base *base);
/** Start resolving `host`. Numeric hosts complete without DNS. The callback
 *  always runs later from the loop, never inside this call.
 *  Returns 0, or REDQ_ENOMEM. At most one lookup at a time per resolver. */
int redq__resolve(redq__resolver *r, const char *host, redq__resolve_cb cb,
                  void *arg);
/** Abandon the lookup in progress, if any: its callback will not run. */
void redq__resolve_cancel(redq__resolver *r);
void redq__resolver_free(redq__resolver *r);

/* ---- Lua scripts (lib/scripts.c) -------------------------------------- */

enum {
    REDQ__SCRIPT_TAKE,        /* batch move due/ready -> processing lists */
    REDQ__SCRIPT_ACK,         /* remove acked messages from a processing list */
    REDQ__SCRIPT_SETTLE,      /* retry (delayed zset) or dead-letter a message */
    REDQ__SCRIPT_DELAY,       /* schedule delayed frames by server time */
    REDQ__SCRIPT_PROMOTE,     /* move due delayed frames to the due list */
    REDQ__SCRIPT_REAPSCAN,    /* find holders that stopped heartbeating */
    REDQ__SCRIPT_REAP,        /* return a dead holder's messages, bounded */
    REDQ__SCRIPT_RETURN,      /* a live holder gives back (stop, lost reply) */
    REDQ__SCRIPT_HEARTBEAT,   /* register / refresh holders */
    REDQ__SCRIPT_DEADREQUEUE, /* dead letters back to due, bounded */
    REDQ__SCRIPT_ACKFAST,     /* ack the k oldest of a processing list */
    REDQ__SCRIPT_DEADONE,     /* admin: requeue/delete one dead letter by id */
    REDQ__SCRIPT_PURGE,       /* admin: delete the dead list, counted */
    REDQ__SCRIPT_SNAPSHOT,    /* admin: a queue's numbers, read only */
    REDQ__SCRIPT_PEEK,        /* admin: the next values to be taken */
    REDQ__SCRIPT_PUSH,        /* a producer's batch of frames, if the queue
                                 is still a frames queue */
    REDQ__SCRIPT_SETFORMAT,   /* admin: set a queue's format */
    REDQ__SCRIPT_COUNT
};

typedef struct redq__scripts {
    char sha[REDQ__SCRIPT_COUNT][41];
} redq__scripts;

/** The Lua source of script `which` (static storage), NULL if unknown. */
const char *redq__script_source(int which);
/** Compute every script's SHA-1, as EVALSHA names it. */
void redq__scripts_init(redq__scripts *s);

/* ---- arena-built replies (lib/reply.c) -------------------------------- */

/* The most elements one aggregate reply (array, map, set) may announce. A
 * pop of COUNT 1024 is ~1k; this leaves room for anything redq asks for and
 * caps what a hostile or broken server can make us allocate up front at
 * 8 MiB of pointers. */
#define REDQ__MAX_REPLY_ELEMENTS ((size_t)1 << 20)
/* What an arena keeps between replies: enough for a COUNT 1024 pop of small
 * messages without a malloc; anything bigger is given back after the reply. */
#define REDQ__ARENA_RETAIN ((size_t)1 << 20)

typedef struct redq__arena redq__arena;
redq__arena *redq__arena_new(void);
void redq__arena_free(redq__arena *a);
/** Make `reader` (a hiredis redisReader*, before it parsed anything) build
 *  its replies in `a`: plain redisReply structures, rewound when hiredis
 *  frees each root reply. `a` must outlive the reader. Clears the arena's
 *  error. An aggregate announcing more than REDQ__MAX_REPLY_ELEMENTS
 *  elements fails the reader (hiredis reports "Out of memory", REDIS_ERR_OOM)
 *  and redq__arena_error() then says what was refused. */
void redq__arena_attach(redq__arena *a, void *reader);
/** Why the reader attached to `a` failed, "" if the arena refused nothing
 *  since the last attach. Never NULL. */
const char *redq__arena_error(const redq__arena *a);
/** Bytes of blocks the arena holds right now (for tests: between replies it
 *  is at most REDQ__ARENA_RETAIN). */
size_t redq__arena_retained(const redq__arena *a);

/* ---- text (lib/text.c) -------------------------------------------------- */

/* UTF-8 and base64 encoding are public (redq.h: redq_utf8_valid,
 * redq_utf8_seq_len, redq_base64_encode); these internal names are the
 * same functions, kept for the library's callers and for tools not yet
 * converted to redq.h (no second implementation). */
#define redq__utf8_valid(s, len) redq_utf8_valid((s), (len))
#define redq__utf8_seq_len(p, n) redq_utf8_seq_len((p), (n))
#define redq__b64_encode(in, len, out) redq_base64_encode((in), (len), (out))

/* Standard base64 decoding (RFC 4648 section 4, with padding): returns the
 * decoded length, or -1 on invalid input (a byte outside the alphabet,
 * misplaced or missing padding, length not a multiple of 4); out needs
 * 3*(len/4) bytes. Nonzero bits under the padding are accepted (RFC 4648
 * 3.5 lets decoders choose). */
long redq__b64_decode(const char *in, size_t len, void *out);


/* ---- key layout (lib/keys.c) ------------------------------------------ */

/*
 * The one definition of where a queue's data lives. Every key of queue Q
 * hashes to Q's own Redis Cluster slot, whatever Q's name, so that a script
 * can touch all of them on one node:
 *   - Q has a hash tag ("{orders}", "jobs{x}"):  Q ":" suffix
 *   - Q has no tag and no '}':                   "{" Q "}/" suffix
 *   - otherwise (no tag, some '}'):              "{" T "}" Q "/" suffix, with
 *     T the shortest decimal string whose slot is Q's (found by search).
 * ('/' where redq made the tag, ':' where the name has its own, so the keys
 * of "a" and of "{a}" never meet.)
 * Scripts never build key names: every key they touch comes in KEYS.
 *
 * Suffixes (docs/DESIGN.md, "Key layout"):
 *   due             list   frames ready to take (retries, due delayed,
 *                          recovered, requeued dead letters); taken before Q
 *   delayed         zset   frames by due time (server clock, ms)
 *   dead            list   dead-letter frames, newest at the head
 *   consumers       set    holder ids that may hold messages
 *   reaper          string lock: who recovers dead holders this period
 *   meta            hash   queue properties (paused, format, counters)
 *   proc:<holder>   list   raw messages taken from Q by that holder
 *   fproc:<holder>  list   frames taken from due by that holder
 *   hb:<holder>     string the holder's heartbeat, with a TTL
 * Q holds payloads only, byte for byte, on a plain queue (the default);
 * frames pushed by redq producers (and any client's values) on a frames
 * queue (docs/DESIGN.md, "Ids and formats").
 */

/** The key `suffix` of queue `q` (qlen bytes), malloc'd and NUL-terminated;
 *  NULL when out of memory. */
char *redq__key(const char *q, size_t qlen, const char *suffix);
/** The Redis Cluster slot of a key (CRC16 of its hash tag or whole name,
 *  modulo 16384). */
unsigned redq__key_slot(const char *key, size_t len);
/** 1 when queue name `q` is itself one of another queue's keys (its due,
 *  dead, delayed... list: "{jobs}/due", "{orders}:dead") or has the form
 *  of another queue's partition ("{12}jobs~3", redq__partition_parse):
 *  using it as a queue would write into that queue's own keys, so it is
 *  refused. */
int redq__key_reserved(const char *q, size_t qlen);

/** Write into out (outlen bytes, NUL-terminated) the shortest decimal
 *  string whose slot is `slot` (0..16383): a hash tag that puts a key
 *  there. Returns its length, or -1 (bad slot, out too small). */
int redq__key_tag_for_slot(unsigned slot, char *out, size_t outlen);

/* ---- partitions (lib/partition.c) ------------------------------------- */

/*
 * The one definition of a partitioned queue (docs/DESIGN.md, "Partitioned
 * queues"). Logical queue Q has P partitions (1..REDQ__MAX_PARTITIONS).
 * Partition 0 is Q itself; partition i >= 1 is the ordinary queue named
 *   "{" T_i "}" Q "~" i        (T_i a decimal tag: its slot is slot(T_i))
 * Q's meta hash (redq__key(Q, "meta"), in Q's slot) holds
 *   partitions   P, the active count (absent = 1)
 *   ptags        "T_1 T_2 .. T_n", n >= P - 1: every partition ever made;
 *                those at index >= P are retired (producers no longer push
 *                to them; consumers keep draining them).
 * The Lua side names the fields once too: lib/scripts/_partitions.lua.
 */
#define REDQ__META_PARTITIONS "partitions"
#define REDQ__META_PTAGS "ptags"
#define REDQ__MAX_PARTITIONS 256
/* A tag is 1..6 decimal digits (every slot has one of at most 6). */
#define REDQ__PTAG_MAX 8
/* A partition's name is at most this much longer than its queue's:
 * "{" 6 digits "}" ... "~" 3 digits. */
#define REDQ__PARTITION_NAME_EXTRA 12

typedef struct redq__parts {
    unsigned active; /* P: partitions 0..P-1 take new messages (>= 1) */
    unsigned total;  /* partitions ever made, retired ones included
                        (>= active; 1 + the number of tags) */
    char tag[REDQ__MAX_PARTITIONS][REDQ__PTAG_MAX]; /* tag[i], i >= 1;
                        tag[0] is "" (partition 0 is Q itself) */
} redq__parts;

/** Partition i of queue q (qlen bytes) with tag `tag` (ignored for i = 0):
 *  q itself for i = 0, else "{" tag "}" q "~" i. malloc'd, NUL-terminated;
 *  NULL when out of memory or i >= REDQ__MAX_PARTITIONS. */
char *redq__partition_name(const char *q, size_t qlen, const char *tag,
                           unsigned i);
/** The partitions of a queue with no partition fields: P = 1. */
void redq__parts_init(redq__parts *pt);
/**
 * Read the meta fields (pval/plen: `partitions`, tags/tlen: `ptags`; a
 * NULL value is an absent field) into *pt. Whatever is in them, *pt is
 * usable: a bad `partitions` (not 1..256) reads as 1, a bad tag ends the
 * list there (the partitions from it on are unknown), and `active` never
 * exceeds `total`. Returns 0, or REDQ_EPROTOCOL when something was bad.
 */
/** redq__parts_parse() of the two fields as an HMGET answered them (each a
 *  hiredis redisReply*: a string, or nil, or NULL for absent). Same
 *  returns. */
int redq__parts_from_reply(redq__parts *pt, const void *pval,
                           const void *tags);
int redq__parts_parse(redq__parts *pt, const char *pval, size_t plen,
                      const char *tags, size_t tlen);
/** "T_1 T_2 .. T_n" of *pt into out (room: REDQ__MAX_PARTITIONS *
 *  REDQ__PTAG_MAX), NUL-terminated; returns its length. */
size_t redq__parts_tags_string(const redq__parts *pt, char *out);

/* Who masters a slot: "host:port" into buf (len bytes) and 0, or nonzero
 * when nobody is known (redq__cluster_slot_owner's shape). */
typedef int (*redq__slot_owner_fn)(const void *arg, unsigned slot, char *buf,
                                   size_t len);
/**
 * Make partitions up to `want` (1..REDQ__MAX_PARTITIONS) exist for queue q:
 * append tags to *pt until pt->total >= want (it never shrinks; `active`
 * is not changed). With a slot map (owner non-NULL), each new partition
 * goes to the master holding the fewest partitions of q so far (partition
 * 0 in q's slot included; ties: the master met first in slot order), in a
 * slot of that master no partition of q has: round robin over equal
 * masters, and a lopsided map still ends up even per master. Without one
 * (a single server), the slots are spread over the slot space. Two
 * partitions of one queue never share a slot. Returns 0, REDQ_EINVAL
 * (want out of range) or REDQ_ENOMEM.
 */
int redq__parts_grow(redq__parts *pt, const char *q, size_t qlen,
                     unsigned want, redq__slot_owner_fn owner,
                     const void *owner_arg);
/** If q (qlen bytes) is lexically a partition name "{digits}X~i" (X not
 *  empty, i in 1..REDQ__MAX_PARTITIONS-1 without leading zeros), return
 *  i and set *lq / *lqlen to X, the logical queue; else 0. */
unsigned redq__partition_parse(const char *q, size_t qlen, const char **lq,
                               size_t *lqlen);

/* ---- frames (lib/frame.c) ---------------------------------------------- */

/*
 * A frame carries redq's metadata with a message whose payload must stay
 * byte for byte as it was sent. Frames live in keys that redq alone writes
 * (due, delayed, dead, fproc:*), and in the ready list Q only when the
 * queue's format is frames (REDQ__META_FORMAT): the key a value came from,
 * and the queue's format, say whether it is a frame. On a plain queue a
 * user payload is never parsed, whatever it looks like; on a frames queue
 * one that does not parse is delivered whole.
 *
 *   frame  = "RQ1" 1*(SP name "=" value) LF payload
 *   value  = 1*(unreserved / "%" HEXDIG HEXDIG)   (no SP, LF or bare '%')
 *
 * Names: "id" (message id, 1-64 bytes; redq's are "<16 hex>-<n>"), "a" (deliveries already made,
 * 0..REDQ__MAX_ATTEMPTS), "ts" (first enqueued, ms since the epoch),
 * "dr" (dead-letter reason, percent-encoded), "dts" (dead-lettered at, ms),
 * "q" (the queue it died in, percent-encoded). Unknown names are skipped.
 * The payload follows the first LF verbatim: no escaping, any bytes, any
 * length. Lua reads and rewrites only the header (lib/scripts.c).
 */

/* The first bytes of every frame: the format's name and version. */
#define REDQ__FRAME_MAGIC "RQ1"
/* The largest attempts count a frame may carry. */
#define REDQ__MAX_ATTEMPTS 1000000
/* A header longer than this is malformed (reason and queue fit easily). */
#define REDQ__FRAME_MAX_HEADER 16384

typedef struct redq__frame {
    const char *body;   /* the payload, into the parsed string */
    size_t body_len;
    int attempts;       /* deliveries already made (0 when absent) */
    long long ts_ms;    /* "ts", -1 when absent */
    long long dead_ts_ms; /* "dts", -1 when absent */
    char id[65];        /* "id", "" when absent */
    const char *reason; /* "dr" still percent-encoded, into the string;
                           NULL when absent */
    size_t reason_len;
    const char *queue;  /* "q" likewise */
    size_t queue_len;
} redq__frame;

/** Parse a frame. Returns 0, or REDQ_EPROTOCOL with `err` (errlen bytes,
 *  NUL-terminated; may be NULL when errlen is 0) saying what is wrong;
 *  never reads past s + len. */
int redq__frame_parse(const char *s, size_t len, redq__frame *f, char *err,
                      size_t errlen);

/** Bytes redq__frame_build needs for these fields at most. */
size_t redq__frame_size(size_t body_len, const char *id, const char *reason,
                        const char *queue);

/** Write a frame into out (room: redq__frame_size bytes); id, reason and
 *  queue may be NULL (omitted), ts_ms/dead_ts_ms < 0 are omitted, attempts
 *  is clamped to 0..REDQ__MAX_ATTEMPTS. reason and queue are
 *  percent-encoded; id bytes outside [A-Za-z0-9._:-] are too. Returns the
 *  length written. */
size_t redq__frame_build(char *out, const void *body, size_t body_len,
                         const char *id, int attempts, long long ts_ms,
                         const char *reason, long long dead_ts_ms,
                         const char *queue);

/* ---- ids (lib/frame.c) ---------------------------------------------------
 *
 * A message id is "<instance id>-<n>": the 16 lowercase hex digits of the
 * producer (or, for a plain queue's message, of the consumer that first
 * delivered it) and a decimal sequence number from 1. At most 16 + 1 + 20
 * bytes: REDQ__MSG_ID_MAX with its NUL.
 */
#define REDQ__INSTANCE_ID_LEN 16
#define REDQ__MSG_ID_MAX 38

/** Fill out (REDQ__INSTANCE_ID_LEN + 1 bytes) with 16 random lowercase hex
 *  digits and a NUL: getrandom() where there is one, else a mix of the
 *  clocks, the pid and `salt` (the caller's address will do). */
void redq__instance_id(char *out, uintptr_t salt);
/** Write "<prefix>-<n>" into out (REDQ__MSG_ID_MAX bytes, NUL-terminated;
 *  prefix is at most REDQ__INSTANCE_ID_LEN bytes); returns its length. */
size_t redq__msg_id(char *out, const char *prefix, uint64_t n);

/* The first bytes of a frame pushed to a frames queue's ready list by a
 * producer: "RQ1 id=<id> ts=<ms>\n" (no attempts: absent is 0). Room: */
#define REDQ__READY_HEADER_MAX (3 + 4 + REDQ__MSG_ID_MAX + 4 + 20 + 1)
/** Write that header into out; returns its length. id is written as is
 *  (ids redq makes need no escaping). */
size_t redq__ready_header(char *out, const char *id, size_t idlen,
                          long long ts_ms);

/* A queue's format (redq.h, REDQ_FORMAT_*), in its meta hash's field
 * REDQ__META_FORMAT: absent (or anything but "frames") is plain. The Lua
 * side names the field once too: lib/scripts/_format.lua. */
#define REDQ__META_FORMAT "format"
#define REDQ__FORMAT_FRAMES_VALUE "frames"

/** Encode s (len bytes) into out as frame values are: printable ASCII but
 *  SP and '%' as is, every other byte as %XX (room: 3 * len). Returns the
 *  bytes written; no NUL is added. */
size_t redq__pct_encode(char *out, const char *s, size_t len);
/** Decode percent-encoding of s (len bytes) into out (room: len + 1, NUL
 *  added); returns the decoded length. Malformed escapes are copied as
 *  they are. */
size_t redq__pct_decode(const char *s, size_t len, char *out);

/* ---- a handle's memory of queue formats (lib/format.c) ----------------- */

/* A keyed message of a queue whose partition count is not known yet: it
 * waits in its queue's entry (an ordinary producer on one server). */
typedef struct redq__qheld {
    struct redq__qheld *next;
    uint64_t seq;       /* its id's number, given at acceptance */
    uint64_t since_us;  /* accepted at (message_timeout_ms) */
    void *opaque;
    size_t keylen, len;
    char *key;
    char *payload;
} redq__qheld;

/** A held keyed message: copies of key and payload (malloc'd, freed by
 *  redq__qheld_free), accepted now (since_us). NULL when out of memory. */
redq__qheld *redq__qheld_new(const void *key, size_t keylen,
                             const void *payload, size_t len, void *opaque,
                             uint64_t seq);
void redq__qheld_free(redq__qheld *h);

/* A partitioned queue as an ordinary producer on one server sees it: the
 * partitions are other queue names on the same connection. */
typedef struct redq__qparts {
    redq__parts parts;   /* as the last read of the meta fields said */
    unsigned cur;        /* sticky: the partition taking unkeyed messages */
    size_t cur_sent;     /* messages given to it since it became current */
    char *pname[REDQ__MAX_PARTITIONS]; /* physical names, made on first use
                                          (pname[0] unused: Q itself) */
    size_t plen[REDQ__MAX_PARTITIONS];
} redq__qparts;

/* What a producer knows of one queue: its format (learnt at its first use
 * with one HMGET of the meta fields format, partitions, ptags; read again
 * every few seconds while the queue is in use, and when a PUSH finds the
 * format changed) and, for a queue the caller names, its partitions. */
typedef struct redq__qfmt {
    struct redq__qfmt *next; /* hash chain */
    void *owner;             /* the handle, for reply callbacks */
    uint32_t hash;
    int format;              /* REDQ_FORMAT_*, or -1 not known yet */
    int learning;            /* an HMGET is in flight */
    int used;                /* a batch was opened since the last read */
    int parts_known;         /* a read answered: pactive is the queue's */
    unsigned pactive;        /* P (1 until known; 1 for a partition) */
    redq__qparts *parts;     /* NULL while the queue has never had P > 1 */
    redq__qheld *hhead, *htail; /* keyed messages waiting for P */
    char *meta;              /* the queue's meta key (lib/keys.c) */
    size_t metalen;
    size_t qlen;
    char name[];             /* the queue, NUL-terminated */
} redq__qfmt;

typedef struct redq__qfmts {
    redq__qfmt **b;
    size_t nb, n;
} redq__qfmts;

/** The entry of queue q (qlen bytes), made (format -1, `owner` set) the
 *  first time; NULL when out of memory. One hash lookup: callers ask once
 *  per batch, never per message. */
redq__qfmt *redq__qfmt_get(redq__qfmts *t, const char *q, size_t qlen,
                           void *owner);
/** Free every entry (held messages too: report them first). */
void redq__qfmts_free(redq__qfmts *t);
/** "plain" / "frames" ("unknown" for anything else). Static storage. */
const char *redq__format_name(int format);

/* ---- connection (lib/conn.c) ------------------------------------------- */

/*
 * A connection to one Redis server that redoes itself: resolve, connect,
 * handshake, ready; on any failure it drops everything and tries again after
 * a backoff. The handshake sends only what the handle uses (a least-privilege
 * ACL user must be able to connect): AUTH if a password, SELECT if db != 0,
 * CLIENT SETNAME if a name (refused: one warning, carry on), CLIENT ID if
 * want_client_id, HELLO (falling back to INFO server, then to "unknown") if
 * want_version. Passing server states (LOADING, BUSY, TRYAGAIN, MASTERDOWN,
 * OOM) in the handshake are waited out; WRONGPASS, NOPERM, a bad db are
 * "permanent" (still retried, see redq__conn_permanent_error).
 *
 * Commands are only accepted while ready. Every command gets exactly one
 * reply callback: with the reply, or with NULL when the connection went away
 * first ("outcome unknown"). A command's reply deadline (command_timeout_ms
 * plus its extra) measures silence: it moves forward while the reply is
 * still arriving or the command is still being written.
 */
typedef struct redq__conn redq__conn;

typedef struct redq__conn_config {
    const redq__url *url;     /* borrowed during redq__conn_new only */
    const char *password;     /* overrides url->password when non-NULL */
    const char *client_name;  /* NULL or "": none */
    int connect_timeout_ms;
    int command_timeout_ms;
    int reconnect_min_ms;
    int reconnect_max_ms;
    const redq__logger *log;  /* borrowed for the connection's lifetime */
    int want_client_id;       /* learn CLIENT ID in the handshake (for now
                                 this implies want_version: the pop
                                 connections pick their pop by version) */
    int arena_replies;        /* ignored: every connection now builds its
                                 replies in an arena (lib/reply.c) */
    int load_scripts;         /* compatibility: SCRIPT LOAD every script in
                                 the handshake; a refusal is warned about
                                 once and NOSCRIPT replies then carry its
                                 error. New code: 0 and
                                 redq__conn_send_script */
    int want_version;         /* learn the server version in the handshake
                                 (HELLO, else INFO server, else unknown) */
    /* Optional: an attempt failed before the connection was ready (each
     * time; redq__conn_permanent_error says whether retrying can help).
     * Called from the loop, or from inside redq__conn_reset; do not free
     * the connection from it. */
    void (*on_fail)(redq__conn *c, int code, const char *msg, void *arg);
    /* Optional: "ask me where to connect" (a cluster's pinned connection
     * follows the master of its slot: lib/cluster.c). Called at the start
     * of every attempt, before resolving, in place of the URL's host and
     * port (TCP URLs only): fill host (hostlen bytes, NUL-terminated) and
     * *port and return 0; or return a REDQ_E* when no target is known now,
     * and the attempt fails with it (on_fail, then the usual backoff).
     * Called from the loop, never inside redq__conn_new or _start; it must
     * not free or reset the connection. */
    int (*target)(redq__conn *c, char *host, size_t hostlen, int *port,
                  void *arg);
    void *target_arg;
    /* Optional (a cluster's pinned connection): called with every error
     * reply before its callback (arg is target_arg); nonzero means "this
     * connection's slot moved": once the replies already read have been
     * delivered, the connection is redone (the target hook then names the
     * new master). Commands still in flight then get NULL, as on any lost
     * connection; the owner's "not applied" handling resends them. */
    int (*redirect)(redq__conn *c, const void *reply, void *arg);
} redq__conn_config;

/* The connection became ready (handshake done) or stopped being ready.
 * Called from the loop. `code`/`msg` say why it went down. */
typedef void (*redq__conn_up_cb)(redq__conn *c, void *arg);
typedef void (*redq__conn_down_cb)(redq__conn *c, int code, const char *msg,
                                   void *arg);

/* reply is a hiredis redisReply* (or NULL: connection lost, outcome unknown);
 * borrowed for the call. */
typedef void (*redq__reply_cb)(redq__conn *c, void *reply, void *arg);

int redq__conn_new(redq__conn **out, struct event_base *base,
                   const redq__conn_config *cfg, redq__conn_up_cb on_up,
                   redq__conn_down_cb on_down, void *arg);
/** Start connecting (from the loop). */
void redq__conn_start(redq__conn *c);
/** Send a preformatted RESP command. extra_timeout_ms extends the reply
 *  deadline (for blocking commands). Returns 0 (the callback will run
 *  exactly once), REDQ_EDISCONNECTED (not ready; no callback) or
 *  REDQ_ENOMEM. */
int redq__conn_send(redq__conn *c, const char *cmd, size_t len,
                    int extra_timeout_ms, redq__reply_cb cb, void *arg);
/**
 * Send a preformatted EVALSHA (or FCALL-like) command that needs Lua script
 * `script` (an index into lib/scripts.c's table, < 32) loaded. The first
 * time the script is used on this connection since it was (re)established,
 * `SCRIPT LOAD <source>` is pipelined in front of the command on the same
 * connection: order kept, no extra round trip. Loads are remembered per
 * connection; a reconnect, and any NOSCRIPT reply on it (SCRIPT FLUSH, a
 * restart behind a proxy), forget them all, so the next use loads again.
 * If that SCRIPT LOAD is refused (NOPERM, ...), the command's reply (then
 * NOSCRIPT) is replaced by the load's own error reply, verbatim ("NOPERM
 * this user has no permissions to run the 'script|load' command"), so the
 * callback sees the real cause; a command that ran anyway (another client
 * had loaded the script) gets its real reply. A passing state (LOADING) on
 * the load shows as that same state on the command. Callers that answer
 * NOSCRIPT with redq__conn_reset and a resend keep working: the resend loads
 * on the new connection.
 * Returns 0 (cb runs exactly once, for the command; the load has no
 * callback of its own), REDQ_EINVAL (unknown script), REDQ_EDISCONNECTED
 * (not ready; no callback) or REDQ_ENOMEM.
 */
int redq__conn_send_script(redq__conn *c, int script, const char *cmd,
                           size_t len, int extra_timeout_ms, redq__reply_cb cb,
                           void *arg);
/** One piece of a command for redq__conn_sendiov. */
typedef struct redq__iov {
    const char *base;
    size_t len;
} redq__iov;
/**
 * Like redq__conn_send, for a preformatted command given as n pieces in
 * order (the producer's owned payloads): each piece is copied once, straight
 * into hiredis's output buffer, and not referenced after the call. iov[0]
 * must hold at least the whole first argument (the command name) and the
 * byte after it. Returns as redq__conn_send; REDQ_EINVAL for n == 0. On an
 * error nothing was queued.
 */
int redq__conn_sendiov(redq__conn *c, const redq__iov *iov, size_t n,
                       int extra_timeout_ms, redq__reply_cb cb, void *arg);
/** Like redq__conn_send with an argv (for rare commands). */
int redq__conn_sendv(redq__conn *c, int argc, const char **argv,
                     const size_t *argvlen, int extra_timeout_ms,
                     redq__reply_cb cb, void *arg);
int redq__conn_ready(const redq__conn *c);
/** Server version as major*10000+minor*100+patch, 0 when unknown (not
 *  asked for with want_version, or HELLO and INFO both refused). */
int redq__conn_server_version(const redq__conn *c);
/** The largest major version redq__parse_version accepts. */
#define REDQ__VERSION_MAX_MAJOR 9999
/** "7.2.4" (anything after the digits is ignored; the patch may be missing)
 *  as 70204; minor and patch above 99 count as 99 (unstable builds say
 *  255.255.255). 0 ("unknown") when s is not a version or the major is above
 *  REDQ__VERSION_MAX_MAJOR. Never overflows. */
int redq__parse_version(const char *s);
/** Drop the current connection (pending callbacks get NULL) and reconnect
 *  after a backoff. Used when a reply shows the connection is unusable. */
void redq__conn_reset(redq__conn *c, int code, const char *why);
/** Free the connection. Pending callbacks run with NULL before this returns;
 *  up/down callbacks do not run any more. Not from inside a reply callback
 *  of this connection (defer it). */
void redq__conn_free(redq__conn *c);
/** The last connection error, "" if none. */
const char *redq__conn_last_error(const redq__conn *c);
/** The server's id for this connection (CLIENT ID), when want_client_id was
 *  set and the connection is ready; else -1. */
long long redq__conn_client_id(const redq__conn *c);
/** The REDQ_E* of the last failure ("" / 0 after a successful handshake):
 *  REDQ_EAUTH for WRONGPASS or NOAUTH, REDQ_ENOPERM for an ACL refusal,
 *  REDQ_ESELECT for a bad database, ... */
int redq__conn_last_code(const redq__conn *c);
/** Nonzero (the REDQ_E* code) when the connection is not ready and its last
 *  attempt failed for a reason retrying will not fix: wrong password or user
 *  (REDQ_EAUTH), an ACL refusal in AUTH/SELECT/CLIENT ID (REDQ_ENOPERM), a
 *  database the server does not have (REDQ_ESELECT). The connection keeps
 *  retrying with its backoff (the server side may be fixed), but a handle
 *  can fail fast on it. 0 otherwise. */
int redq__conn_permanent_error(const redq__conn *c);

/* ---- Redis Cluster client (lib/cluster.c) ------------------------------ */

/*
 * A router for a redis+cluster:// URL on the caller's event_base: the slot
 * map (CLUSTER SLOTS from any known node, seeds first), one shared
 * redq__conn per master made on first use, and the redirects (MOVED, ASK,
 * TRYAGAIN, CLUSTERDOWN) handled inside, so that a caller sees one reply
 * per command as from a redq__conn. Commands to one slot reach the server
 * in the order they were sent, across redirects too (docs/DESIGN.md,
 * "Cluster client"). Everything runs on the loop's thread.
 */
typedef struct redq__cluster redq__cluster;
typedef struct redq__cluster_pin redq__cluster_pin;

/* The final reply of a routed command: a hiredis redisReply* borrowed for
 * the call, or NULL (a connection was lost with the command in flight:
 * outcome unknown; or it waited past its deadline without ever being
 * sent, see redq__cluster_send). */
typedef void (*redq__cluster_reply_cb)(redq__cluster *cl, void *reply,
                                       void *arg);

/* Counters, for tests and stats. Monotonic except nodes and waiting. */
typedef struct redq__cluster_stats {
    uint64_t sent;        /* commands accepted by redq__cluster_send */
    uint64_t held;        /* of those, not sent at once (their slot had a
                             redirect outstanding, no map or owner yet) */
    uint64_t moved, ask;  /* MOVED / ASK replies followed */
    uint64_t tryagain, clusterdown; /* resent after a backoff */
    uint64_t resent;      /* sends after a redirect or backoff */
    uint64_t lost;        /* answered NULL: connection lost in flight */
    uint64_t expired;     /* answered after waiting past their deadline */
    uint64_t refreshes;   /* slot maps loaded */
    size_t nodes;         /* node connections open */
    size_t waiting;       /* commands not answered yet */
} redq__cluster_stats;

/** The slot of a key: the one CRC16 of lib/keys.c (hash tags included). */
#define redq__cluster_key_slot(key, len) redq__key_slot((key), (len))

/**
 * Make a router for cfg->url (is_cluster: its seeds, user and password).
 * The rest of cfg is the template of every node connection (timeouts,
 * client name, want_version; cfg->log is borrowed for the router's
 * lifetime; on_fail, target and want_client_id are not used). Nothing
 * happens until redq__cluster_start. Returns 0 (*out set), REDQ_EINVAL
 * (not a cluster URL) or REDQ_ENOMEM (*out untouched).
 */
int redq__cluster_new(redq__cluster **out, struct event_base *base,
                      const redq__conn_config *cfg);
/** Connect to the seeds and load the slot map, from the loop. Commands may
 *  be sent before the map is known: they wait for it (within deadline). */
void redq__cluster_start(redq__cluster *cl);
/** 1 once a slot map has been loaded. */
int redq__cluster_ready(const redq__cluster *cl);
/**
 * Route a preformatted RESP command by `slot` (0..16383, normally
 * redq__cluster_key_slot of its first key). script is -1 for a plain
 * command, else a REDQ__SCRIPT_* of an EVALSHA command (loaded on each
 * node as redq__conn_send_script does). The bytes are copied and kept
 * until the final reply, to be resent after a redirect.
 * The reply deadline is command_timeout_ms + extra_timeout_ms: from the
 * call for the time it waits unsent (no owner, owner unreachable, a
 * TRYAGAIN/CLUSTERDOWN backoff, behind redirected commands of its slot),
 * and per redq__conn rules while in flight. Waiting past it answers the
 * last redirect's error reply (CLUSTERDOWN, TRYAGAIN), or NULL when the
 * command never reached a server.
 * Redirects are followed inside: MOVED (the owner of the slot is updated,
 * a refresh scheduled, the command resent), ASK (ASKING + the command on
 * that node, once), TRYAGAIN and CLUSTERDOWN (resent after 10..200 ms),
 * each command at most 16 times (then that error is its reply). A command
 * in flight on a connection that is lost is answered NULL, never resent.
 * Order: commands to one slot leave in call order; while redirected
 * commands of the slot are outstanding on the old node, later ones wait
 * and follow them to the new one. (A TRYAGAIN/CLUSTERDOWN on a pipelined
 * command cannot stop the ones already sent behind it.)
 * Returns 0 (cb runs exactly once, from the loop, never inside this call),
 * REDQ_EINVAL (bad slot, script or empty command; no callback),
 * REDQ_ECLOSED (being freed) or REDQ_ENOMEM. Safe inside a reply callback.
 */
int redq__cluster_send(redq__cluster *cl, unsigned slot, const char *cmd,
                       size_t len, int script, int extra_timeout_ms,
                       redq__cluster_reply_cb cb, void *arg);
/** A reply seen on a pinned connection (or anywhere outside the router):
 *  when it is a MOVED, the slot's owner is updated at once; MOVED,
 *  TRYAGAIN and CLUSTERDOWN also schedule a map refresh. Returns its
 *  REDQ__REDIR_* kind (NONE for anything else, NULL included). The caller
 *  then resets its pinned connection to follow the slot. */
int redq__cluster_redirected(redq__cluster *cl, const void *reply);
/** Ask for a new slot map (rate-limited: at most one per 100 ms). */
void redq__cluster_refresh(redq__cluster *cl);
/** "host:port" of the slot's master as the map says now, into buf (len
 *  bytes). 0, or REDQ_ECONNECT when no owner is known. */
int redq__cluster_slot_owner(const redq__cluster *cl, unsigned slot,
                             char *buf, size_t len);
void redq__cluster_get_stats(const redq__cluster *cl,
                             redq__cluster_stats *st);
/** Free the router: every command not answered yet gets its callback with
 *  NULL before this returns (held ones first, then those in flight as
 *  their connections close). Free its pins first. Not from inside one of
 *  its callbacks. NULL is fine. */
void redq__cluster_free(redq__cluster *cl);

/**
 * A dedicated connection (for blocking commands) that connects wherever
 * the master of `slot` is: every (re)connect asks the router's map (the
 * redq__conn_config.target hook). cfg is the connection's config (url and
 * password are the router's; target and on_fail are the pin's own);
 * up/down/arg are redq__conn_new's. Starts idle: redq__conn_start it.
 * After a MOVED on it, call redq__cluster_redirected then redq__conn_reset:
 * the next attempt goes to the new owner. A failed attempt or a lost
 * connection also refreshes the map (a failover). While no owner is known
 * an attempt fails with REDQ_ECONNECT and is retried with the backoff.
 * Returns 0, REDQ_EINVAL (bad slot) or REDQ_ENOMEM.
 */
int redq__cluster_pin_new(redq__cluster_pin **out, redq__cluster *cl,
                          unsigned slot, const redq__conn_config *cfg,
                          redq__conn_up_cb up, redq__conn_down_cb down,
                          void *arg);
/** The pinned connection (owned by the pin: never free it directly). */
redq__conn *redq__cluster_pin_conn(const redq__cluster_pin *p);
/** Free the pin and its connection (redq__conn_free rules). NULL is fine. */
void redq__cluster_pin_free(redq__cluster_pin *p);

/* ---- partitioned and cluster producers (lib/pproducer.c) -------------- */

/*
 * A producer on a redis+cluster:// URL is an outer face (the public
 * redq_producer: window, counters, callbacks, id) over one router and
 * inner ordinary producers, one per partition in use, each on a
 * connection pinned to its partition's slot (docs/DESIGN.md,
 * "Partitioned queues").
 */
typedef struct redq__pprod redq__pprod;

enum { REDQ__PP_COPY, REDQ__PP_OWNED, REDQ__PP_DELAYED, REDQ__PP_KEYED };

/** Make the partitioned side of `outer` (whose fields set_fields filled):
 *  a router for url (copied) and nothing else until the first produce.
 *  Returns 0, or a REDQ_E* (nothing left behind). */
int redq__pp_new(redq__pprod **out, redq_producer *outer,
                 struct event_base *base, const redq__options *opts,
                 const redq__url *url, const redq__logger *log);
/** A message the outer producer accepted (its checks passed): put it in a
 *  partition's inner producer (kind REDQ__PP_*; key only for KEYED).
 *  Returns 0 (the outer's counters and window then hold it) or the inner's
 *  error (not accepted). */
int redq__pp_produce(redq__pprod *pp, int kind, const char *q, size_t qlen,
                     const void *key, size_t keylen, void *payload,
                     size_t len, redq_free_cb free_cb, void *free_user,
                     long long delay_ms, void *opaque);
/** redq_producer_flush / _close of the outer (close: outer->closing is
 *  set; the outer is freed before cb runs). */
int redq__pp_flush(redq__pprod *pp, int timeout_ms, redq_flush_cb cb,
                   void *user);
int redq__pp_close(redq__pprod *pp, redq_close_cb cb, void *user);
/** Add the inners' batch and connection counters into *st, and set
 *  inflight_batches, connected (the router has a map and every inner is
 *  connected) and throttled from them. */
void redq__pp_stats(const redq__pprod *pp, redq_producer_stats *st);

/* lib/producer.c's side of it. */
/** An inner producer of `outer` (opts: its own options, report to the
 *  outer's forwarder) on a connection pinned to `slot` of cl, or (cl NULL)
 *  an ordinary connection to url. Its ids are numbered from the outer's
 *  counter; it takes partition names, never touches the registry. */
int redq__producer_new_inner(redq_producer **out, redq_producer *outer,
                             const redq__options *opts, const redq__url *url,
                             redq__cluster *cl, unsigned slot);
/** Messages in p's open batch for queue q (0: none open). */
size_t redq__producer_open_count(redq_producer *p, const char *q,
                                 size_t qlen);
/** The outer accepted a message of len bytes / one of its messages has
 *  its report r (counted, then the caller's on_report with the outer, then
 *  on_ready if owed). */
void redq__producer_outer_accepted(redq_producer *p, size_t len);
void redq__producer_outer_report(redq_producer *p, const redq_report *r);
/** redq_produce's checks (window included) on p; 0 or the error. */
int redq__producer_check(redq_producer *p, const char *queue,
                         const void *payload, size_t len, size_t *qlen);
/** The counter the outer numbers its ids from (the next message's). */
uint64_t *redq__producer_seq(redq_producer *p);
/** redq_produce_key on an ordinary producer (one server), its checks
 *  passed: partition slot(key) % P of the queue's partitions; while P is
 *  not known yet the message waits in the producer (accepted: window,
 *  counters and id now). 0 or the error (not accepted). */
int redq__producer_key(redq_producer *p, const char *queue, size_t qlen,
                       const void *key, size_t keylen, const void *payload,
                       size_t len, void *opaque);
/** The outer's partitioned side, NULL for an ordinary producer. */
redq__pprod *redq__producer_pp(const redq_producer *p);
/** Free the outer face (after redq__pp_close's work). */
void redq__producer_outer_free(redq_producer *p);

/* ---- admin helpers (lib/prom.c) ---------------------------------------- */

/** Escape len bytes at s as a Prometheus label value (text format 0.0.4):
 *  backslash, double quote and line feed become \\, \" and \n; bytes that
 *  are not well-formed UTF-8 become U+FFFD. out needs 3 * len + 1 bytes; it
 *  is NUL-terminated. Returns the length written (without the NUL). */
size_t redq__prom_escape(const char *s, size_t len, char *out);

/** The Prometheus text (format 0.0.4) of n queue snapshots (lib/
 *  admin_metrics.c): *text malloc'd (not NUL-terminated), *textlen its
 *  length. Returns 0 or REDQ_ENOMEM. */
int redq__admin_metrics_text(const redq_queue_info *q, size_t n, char **text,
                             size_t *textlen);

/* ---- the queue registry (lib/registry.c) ------------------------------- */

/* The sorted set of queues in use: member the name, score last seen (ms). */
#define REDQ__REGISTRY_KEY "redq:queues"

typedef struct redq__registry redq__registry;

/** A handle's memory of what it registered; `log` is borrowed for its
 *  lifetime. NULL when out of memory (the handle then registers nothing). */
redq__registry *redq__registry_new(const redq__logger *log);
/** Free it, after the connection it used is gone (or will never answer:
 *  replies that come back NULL do not touch it). NULL is fine. */
void redq__registry_free(redq__registry *r);
/** Queue q (len bytes) is in use: the first time, and then at most once a
 *  minute, pipeline `ZADD redq:queues <now ms> q` on c when it is ready.
 *  Otherwise one hash lookup. An error reply is logged once (WARN). */
void redq__registry_touch(redq__registry *r, redq__conn *c, const char *q,
                          size_t len);

/* A registry's way to send its ZADD other than on a redq__conn (the outer
 * handle on a cluster sends it through its router, in the registry key's
 * slot): send the command (argc/argv/argvlen, as redq__conn_sendv) and
 * return 0, then call done(reply, done_arg) exactly once later, with the
 * redisReply* (borrowed) or NULL; or return nonzero (not sent, no call). */
typedef void (*redq__registry_done_fn)(void *reply, void *done_arg);
typedef int (*redq__registry_send_fn)(void *ctx, int argc, const char **argv,
                                      const size_t *argvlen,
                                      redq__registry_done_fn done,
                                      void *done_arg);
/** redq__registry_touch, sending through send(ctx, ...). r must outlive
 *  the calls of done (free it after what send uses is gone). */
void redq__registry_touch_via(redq__registry *r, redq__registry_send_fn send,
                              void *ctx, const char *q, size_t len);

/* The counters of messages moved (redq_queue_info.pushed ...): fields of a
 * queue's meta hash. Scripts count their own moves (acked, retried,
 * dead-lettered, taken by TAKE); clients count the rest with
 * redq__registry_count. */
#define REDQ__META_PUSHED "pushed"
#define REDQ__META_TAKEN "taken"
/* (REDQ__META_FORMAT, the queue's format, is with the frames below.) */

/** Pipeline `HINCRBY <q's meta> field n` on c (nothing when n is 0 or c
 *  is not ready: a count is never worth a wait). No round trip is awaited:
 *  the reply is only checked for an error, logged once (WARN). The meta
 *  key is made once per queue and kept with its registry entry. */
void redq__registry_count(redq__registry *r, redq__conn *c, const char *q,
                          size_t len, const char *field, uint64_t n);

/* ---- statistics as JSON (lib/stats.c) ----------------------------------- */

struct event;

typedef struct redq__stats {
    struct event *ev;       /* the interval timer; NULL when off */
    redq_stats_cb cb;
    void *user;
    void (*emit)(void *handle); /* builds the JSON and calls cb */
    void *handle;
    long long rtt_us, rtt_avg_us; /* -1 until a PING was answered */
    uint64_t ping_sent_us;
    int ping_out;
} redq__stats;

/** Start the timer of opts->on_stats every opts->stats_interval_ms (off
 *  when either is unset: then nothing else here does anything); emit(handle)
 *  runs on each tick. Returns 0 or REDQ_ENOMEM. */
int redq__stats_init(redq__stats *s, struct event_base *base,
                     const redq__options *opts, void (*emit)(void *),
                     void *handle);
/** Stop the timer (from the handle's free, after its connection). */
void redq__stats_free(redq__stats *s);
/** Send a PING on c to measure the round trip (one at a time). */
void redq__stats_ping(redq__stats *s, redq__conn *c);
/** Write the JSON object's opening and the common fields (no closing
 *  brace) into buf; returns the length. */
size_t redq__stats_head(const redq__stats *s, char *buf, size_t cap,
                        const char *type, int connected, uint64_t reconnects);

#endif /* REDQ_PRIVATE_H */
