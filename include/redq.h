/*
 * redq - message queues on Redis lists, driven by a libevent loop.
 *
 * This is the only public header. It includes no hiredis, libevent or
 * jansson header: handles are opaque and the event loop is a forward-declared
 * `struct event_base`.
 *
 * The contract, once for every function below
 * ---------------------------------------------
 * 1. A call that takes a callback either returns 0 and later calls it
 *    exactly once, or returns < 0 and never calls it.
 * 2. Callbacks run from the event loop, never from inside the call that
 *    registered them.
 * 3. Pointers handed to a callback (queue names, payloads, error strings,
 *    reports) are borrowed: valid until the callback returns.
 * 4. Data handed to redq (payloads, queue names, URLs, option strings) is
 *    copied before the call returns; the caller keeps ownership.
 * 5. On failure, out-parameters are left untouched.
 * 6. `void *user` is the last parameter of every callback and is registered
 *    in the same call as the callback itself (in an options struct: in the
 *    field next to it, one user pointer per callback).
 * 7. `redq_*_close()` is the only destructor. It is asynchronous, safe from
 *    inside any redq callback (including one for the same handle), and its
 *    callback is the last one the handle makes. Keep running the loop until
 *    it has been called: that is when the memory is released.
 * 8. Threads: redq has no global state and starts no threads. A handle
 *    belongs to the thread that runs its event_base; no function may be
 *    called for it from another thread. Different handles on different
 *    loops in different threads are independent.
 *
 * SIGPIPE: redq owns its write path. A write to a connection the server
 * has just closed would raise SIGPIPE (hiredis writes with write(2)), whose
 * default action kills the process; redq blocks SIGPIPE in the calling
 * thread around each of its writes, consumes a SIGPIPE that its own write
 * left pending, and restores the mask, so the write just fails and the
 * connection is redone. An application need not ignore SIGPIPE for redq's
 * sake, and its own signal disposition and mask are left as they were.
 *
 * redq never blocks the loop (host names are resolved with libevent's evdns,
 * connects and commands have timeouts), never prints, and never exits or
 * aborts on a runtime failure: errors are return codes, report statuses and
 * calls of the optional log callback.
 */
#ifndef REDQ_H
#define REDQ_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#if defined(REDQ_BUILDING) && defined(__GNUC__)
#define REDQ_API __attribute__((visibility("default")))
#else
#define REDQ_API
#endif

#define REDQ_VERSION_MAJOR 0
#define REDQ_VERSION_MINOR 9
#define REDQ_VERSION_PATCH 0

/** The library's version as "MAJOR.MINOR.PATCH". Static storage. */
REDQ_API const char *redq_version(void);

struct event_base;

/* ------------------------------------------------------------------------ */
/* Errors                                                                    */
/* ------------------------------------------------------------------------ */

/*
 * Every error is a negative int. The values are part of the ABI and never
 * change; new codes get new values.
 */
#define REDQ_ERRNO_MAP(XX)                                                     \
    XX(EINVAL, -1, "invalid argument")                                         \
    XX(ENOMEM, -2, "out of memory")                                            \
    XX(EFULL, -3, "producer window full; wait for on_ready")                   \
    XX(ETOOBIG, -4, "message larger than the configured maximum")              \
    XX(ECLOSED, -5, "handle is closing or closed")                             \
    XX(ECONNECT, -6, "could not connect to the server")                        \
    XX(ERESOLVE, -7, "could not resolve the server's host name")               \
    XX(EAUTH, -8, "authentication rejected by the server")                     \
    XX(ETIMEDOUT, -9, "timed out")                                             \
    XX(EDISCONNECTED, -10, "connection lost; outcome unknown")                 \
    XX(EWRONGTYPE, -11, "key holds a value of the wrong type")                 \
    XX(ESERVER, -12, "error reply from the server")                            \
    XX(EPROTOCOL, -13, "unexpected reply from the server")                     \
    XX(ESELECT, -14, "could not select the database")                          \
    XX(ENOPERM, -15, "permission denied by the server's ACL")                 \
    XX(EALREADY, -16, "message already acked or nacked")                      \
    XX(ENOMASTER, -17, "the sentinels know no master by that name")           \
    XX(ENOTREPLICATED, -18,                                                    \
       "stored on the master, not acknowledged by enough replicas")            \
    XX(ENOQUEUE, -19, "the consumer does not consume that queue")              \
    XX(EEXIST, -20, "the consumer already consumes that queue")               \
    XX(ENOTEMPTY, -21, "the queue's ready list is not empty")

enum {
    REDQ_OK = 0,
#define REDQ_XX_(name, val, msg) REDQ_##name = (val),
    REDQ_ERRNO_MAP(REDQ_XX_)
#undef REDQ_XX_
};

/** A human-readable description of `code`; never NULL, static storage.
 *  Unknown codes give "unknown error". */
REDQ_API const char *redq_strerror(int code);

/** The symbolic name of `code` ("REDQ_EFULL", "REDQ_OK"); never NULL,
 *  static storage. Unknown codes give "REDQ_EUNKNOWN". */
REDQ_API const char *redq_err_name(int code);

/* ------------------------------------------------------------------------ */
/* Options                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct redq_producer redq_producer;
typedef struct redq_consumer redq_consumer;
typedef struct redq_message redq_message;

/** Log levels for the options' log callback. */
enum {
    REDQ_LOG_ERROR = 0, /**< something failed (a connect, a command, AUTH) */
    REDQ_LOG_WARN = 1,  /**< degraded but carrying on (reconnecting, resending) */
    REDQ_LOG_INFO = 2,  /**< state changes (connected, closed) */
    REDQ_LOG_DEBUG = 3  /**< details useful when diagnosing */
};

/**
 * Diagnostics and connection state changes. `code` is 0 for plain state
 * changes and a REDQ_E* value for failures; `msg` names what failed and why
 * ("connect 127.0.0.1:6379: Connection refused") and is borrowed.
 */
typedef void (*redq_log_cb)(int level, int code, const char *msg, void *user);

/** Whether a reported message is in Redis (redq_report.persisted). */
enum {
    /** Never written to Redis, or Redis refused it (an error reply): it is
     *  not stored. */
    REDQ_PERSIST_NOT = 0,
    /** Written, but the reply was lost (the connection dropped or timed out,
     *  or the producer was closed with it in flight): it may be stored. A
     *  consumer may see it, or not. */
    REDQ_PERSIST_POSSIBLY = 1,
    /** Redis acknowledged it: it is in the list (status is 0). */
    REDQ_PERSIST_YES = 2
};

/** What a report carries. All pointers are borrowed: they are valid until
 *  the report callback returns. */
typedef struct redq_report {
    const char *queue;   /**< the queue name given to redq_produce() */
    const void *payload; /**< the message as it was sent */
    size_t len;          /**< its length in bytes */
    void *opaque;        /**< the `opaque` given to redq_produce() */
    int status;          /**< 0: Redis acknowledged it; < 0: REDQ_E* */
    const char *errstr;  /**< NULL when status is 0, else why it failed */
    int persisted;       /**< REDQ_PERSIST_*: YES when status is 0 or
                              REDQ_ENOTREPLICATED; for another failure,
                              POSSIBLY when some write of it got no answer,
                              else NOT (added in 0.2) */
    const char *id;      /**< the message's id, "<producer id>-<n>" (n from
                              1, in the order of acceptance by any produce
                              call; reports come per batch, so they are not
                              in n order across queues, partitions or
                              produce kinds): made when
                              redq_produce() accepted it, the same one a
                              consumer's redq_msg_id() shows on a frames
                              queue (REDQ_FORMAT_FRAMES) and for delayed
                              messages. Every report has one, failed or not.
                              NOTE: on a plain queue (the default) the
                              consumer never sees this id: a plain ready
                              list holds payloads only, so the consumer
                              makes its own at the first delivery. To hand
                              an id to a client and find it again on the
                              consumer side, make the queue a frames queue
                              once, before producing (redq_admin_set_format,
                              `redq format QUEUE frames`) (added in 0.9) */
} redq_report;

/** A queue's format: what its ready list holds (redq_admin_set_format()).
 *  A property of the queue, kept in Redis, read by every producer and
 *  consumer; docs/DESIGN.md, "Ids and formats". */
enum {
    /** Payloads only, byte for byte: any client can LPUSH and RPOP them.
     *  The default. A consumer makes a message's id at its first delivery
     *  ("<consumer id>-<n>") and the retries carry it. */
    REDQ_FORMAT_PLAIN = 0,
    /** Frames ("RQ1 id=<id> ts=<ms>\n<payload>"): the producer's id and
     *  the enqueue time travel with each message. Consumers deliver the
     *  payload; a value that is not a well-formed frame (a plain client's
     *  LPUSH) is delivered whole, as it is. */
    REDQ_FORMAT_FRAMES = 1
};

/**
 * One report per accepted message, exactly once, from the loop.
 *
 * status 0 means Redis answered the LPUSH that carried the message: it is in
 * the list. Any other status means redq could not confirm it:
 *   REDQ_EWRONGTYPE / REDQ_ESERVER  Redis refused the command (not stored).
 *   REDQ_ETIMEDOUT  not acknowledged within message_timeout_ms.
 *   REDQ_ECLOSED    the producer was closed before it was acknowledged.
 *   REDQ_ETOOBIG    never: too big a message is refused by redq_produce().
 *   REDQ_ENOTREPLICATED  (min_replicas) stored on the master, but fewer
 *                   replicas than asked acknowledged it in time: persisted
 *                   is REDQ_PERSIST_YES, yet a failover could still lose it.
 * report->persisted says which failures may still be in Redis: a message
 * whose command was written and never answered (in flight when the time ran
 * out or the producer closed, or on a connection that dropped before its
 * resend) is REDQ_PERSIST_POSSIBLY; one never written, or refused by Redis,
 * is REDQ_PERSIST_NOT.
 */
typedef void (*redq_report_cb)(redq_producer *p, const redq_report *report,
                               void *user);

/**
 * Called once after redq_produce() returned REDQ_EFULL, when the pending
 * messages and bytes have both dropped to half their bounds (the low-water
 * mark).
 *
 * When it is measured: after each report callback returns (not once per
 * batch of reports). The first report that leaves the window at or below
 * the mark is followed by on_ready before the next report is made, in the
 * same loop pass; with no report callback, after the batch's reports were
 * counted. From the REDQ_EFULL until on_ready, redq_produce() keeps
 * refusing with REDQ_EFULL, also when a report freed a place (hysteresis):
 * so a report callback that produces cannot keep the window above the mark
 * and postpone on_ready forever, and on_ready always finds half the window
 * free. A message that fails (timeout, close) counts as reported.
 */
typedef void (*redq_ready_cb)(redq_producer *p, void *user);

/**
 * Called for each consumed message, from the loop. The message and
 * everything read from it (redq_msg_queue/data/id) stay valid until it is
 * finished with redq_ack(), redq_nack() or redq_reject(), which may be from
 * a later loop iteration, after a stop, even after redq_consumer_close()
 * (see "Lifetimes" below). Every delivered message must be finished exactly
 * once.
 */
typedef void (*redq_message_cb)(redq_consumer *c, redq_message *msg,
                                void *user);

/**
 * Statistics of a producer or consumer as one JSON object (`len` bytes at
 * `json`, NUL-terminated, borrowed), every opts.stats_interval_ms,
 * from the loop, like librdkafka's statistics callback. Fields (all
 * numbers; counters count since the handle was created):
 *   "type"            "producer" or "consumer"
 *   "ts_ms"           wall-clock time it was made, ms since the epoch
 *   "rtt_us"          round trip of the last PING sent on the handle's
 *                     connection (the consumer's control connection), queued
 *                     behind its other commands, in microseconds; -1 until
 *                     one has been answered
 *   "rtt_avg_us"      moving average of those (weight 1/8 per sample), -1
 *   "connected"       1 when (the control) connection is up, else 0
 *   "reconnects"      connections lost (each is redone with a backoff)
 * producer:
 *   "produced"        messages accepted by redq_produce*()
 *   "stored"          reports with status 0 (Redis has them)
 *   "failed"          reports with status < 0
 *   "pending"         accepted, not reported yet (in flight or waiting)
 *   "pending_bytes"   their payload bytes
 *   "inflight_batches" commands written and not answered
 *   "batches_sent"    LPUSH (and delay) commands written, resends included
 * consumer:
 *   "pops"            pop commands sent (TAKE, BLMOVE, BLMPOP, BRPOP, RPOP)
 *   "empty_pops"      of those, answered with nothing
 *   "delivered"       messages handed to on_message (handled)
 *   "acked"           messages finished with redq_ack()
 *   "nacked"          messages finished with redq_nack()
 *   "unacked"         delivered and not finished yet (in flight)
 *   "retried", "dead_lettered", "expired", "recovered", "promoted",
 *   "returned", "rejected", "errors"   as in redq_consumer_stats
 * The counters are those of redq_producer_get_stats() and
 * redq_consumer_get_stats() at the moment the JSON is made. Unknown fields
 * may be added; never rely on their order.
 */
typedef void (*redq_stats_cb)(const char *json, size_t len, void *user);

/** How the consumer pops; REDQ_POP_AUTO picks by the server's version. */
enum {
    REDQ_POP_AUTO = 0,       /**< BLMPOP on >= 7.0, else BRPOP + RPOP count
                                  on >= 6.2, else BRPOP + pipelined RPOPs */
    REDQ_POP_BLMPOP = 1,     /**< BLMPOP timeout n q.. RIGHT COUNT c (7.0) */
    REDQ_POP_RPOP_COUNT = 2, /**< BRPOP, then RPOP queue count (6.2) */
    REDQ_POP_PIPELINED = 3   /**< BRPOP, then pipelined RPOPs (any) */
};

/** A consumer's guarantee (redq_consumer_options.guarantee). */
enum {
    /** Each pop moves the message into this consumer's processing list
     *  (BLMOVE, or a script that takes a batch); redq_ack() removes it. A
     *  consumer that dies holding it, or a handler that does not ack within
     *  visibility_timeout_ms, gets it retried; after max_attempts it is
     *  dead-lettered. Needs Redis >= 7.0 (its scripts carry flags). */
    REDQ_AT_LEAST_ONCE = 0,
    /** Plain pops (BLMPOP/BRPOP): a popped message is gone from Redis, and
     *  lost if the consumer dies before its work is done. The fastest. */
    REDQ_AT_MOST_ONCE = 1
};

/*
 * Three option structs, one per handle: redq_producer_options,
 * redq_consumer_options and redq_admin_options. Each starts with `version`
 * and the same connection block (same fields, same names, same order:
 * url .. errbuf_size, documented once, in redq_producer_options); the
 * producer and consumer then have the statistics callback, then the
 * fields of their own role. Every callback has its own user pointer, set
 * next to it.
 *
 * Versions: each struct has its own version number (REDQ_*_OPTIONS_VERSION),
 * which names its layout, hence its size. New fields are added at the end
 * only, and each addition bumps that struct's number. redq_*_new() reads
 * only the fields of the caller's version and takes the defaults for the
 * rest, so a program built against an older redq.h keeps working with a
 * newer library. Fill a struct with its *_init() macro, which passes
 * sizeof *opts to the *_init_sized() function:
 *
 *   *_init_sized(opts, size) fills the first `size` bytes of `opts` with
 *   the defaults and sets opts->version to the newest layout that fits in
 *   `size` (at most the library's version). A program built against an
 *   older redq.h then gets its own, smaller, layout and nothing beyond it
 *   is written. When size is larger than the library's struct the rest is
 *   zeroed, and opts->version tells the caller which fields this library
 *   knows. A size below version 1's leaves version 0, which redq_*_new()
 *   refuses with REDQ_EINVAL without writing errbuf (a struct that small
 *   may not even hold it). opts NULL: nothing happens.
 */

/** Version of redq_producer_options this header describes. Version 1 is
 *  the layout of 0.9.0. */
#define REDQ_PRODUCER_OPTIONS_VERSION 1
/** Version of redq_consumer_options this header describes (1: 0.9.0). */
#define REDQ_CONSUMER_OPTIONS_VERSION 1
/** Version of redq_admin_options this header describes (1: 0.9.0). */
#define REDQ_ADMIN_OPTIONS_VERSION 1

/**
 * Settings for a producer. Fill it with redq_producer_options_init(), then
 * change what you need. Strings are copied by redq_producer_new(); the
 * struct can be freed or reused once it returns.
 */
typedef struct redq_producer_options {
    int version; /**< set by redq_producer_options_init(); leave it alone */

    /* --- connection (the same block in all three structs) --------------- */

    /** Where Redis is (default "redis://127.0.0.1:6379"):
     *    redis://[[user]:password@]host[:port][/db]
     *    unix:///path/to/redis.sock[?db=N]
     *    redis+sentinel://[[user]:password@]host[:port][,host[:port]..]
     *        /master_name[/db][?sentinel_user=U&sentinel_password=P]
     *  The last names the sentinels (port 26379 by default) of a master
     *  they know as master_name; every connection asks them where the
     *  master is, checks ROLE, and follows failovers (+switch-master,
     *  READONLY, a lost connection). The user info authenticates to the
     *  data nodes; sentinel_user/sentinel_password (%XX-encoded) to the
     *  sentinels. Errors: REDQ_ENOMASTER (no sentinel knows the name),
     *  REDQ_EAUTH (a sentinel refused the credentials), REDQ_ECONNECT (no
     *  sentinel answered), given to the log callback; the connection
     *  keeps retrying with its backoff.
     *    redis+cluster://[[user]:password@]host[:port][,host[:port]..]
     *  A Redis Cluster: any seed that answers gives the slot map. A
     *  producer then keeps one connection per partition in use, pinned to
     *  its slot's master (following MOVED, failovers), and spreads each
     *  queue over its partitions (docs/DESIGN.md, "Partitioned queues";
     *  redq_produce_key; a producer on one server spreads them too, over
     *  its one connection). Consumers likewise keep pinned connections
     *  per partition (docs/DESIGN.md, "Consumers and admin on a
     *  cluster"); the admin routes each command by its key's slot.
     *  user, password and path may be %XX-encoded. host may be a name
     *  (resolved without blocking), an IPv4 address or [IPv6]. */
    const char *url;
    /** Password, overriding the one in the URL (default NULL). */
    const char *password;
    /** Sent with CLIENT SETNAME on every connect (default "redq"); NULL or
     *  "" sends nothing. Letters, digits and -_.: only. */
    const char *client_name;
    int connect_timeout_ms;  /**< resolve + connect + handshake (default 2000) */
    int command_timeout_ms;  /**< a reply later than this means the connection
                                  is dead: it is dropped and redone (default 5000) */
    int reconnect_min_ms;    /**< first reconnect delay (default 50) */
    int reconnect_max_ms;    /**< the backoff doubles up to this, with jitter
                                  of +-25% (default 2000) */

    redq_log_cb log;  /**< diagnostics (default NULL: none) */
    int log_level;    /**< most verbose level passed to log (default REDQ_LOG_INFO) */
    void *log_user;   /**< passed to log (default NULL) */

    /** When redq_*_new() fails, it writes why here ("options.url: port
     *  \"x\" is not a number"), NUL-terminated and cut to errbuf_size
     *  bytes; on success it writes "". The message never contains a
     *  password or other URL user info. The log callback, if any, gets the
     *  same message. (default NULL: not written) */
    char *errbuf;
    size_t errbuf_size; /**< bytes at errbuf (default 0) */

    /* --- statistics (producer and consumer) ----------------------------- */

    /** Statistics as JSON (see redq_stats_cb) (default NULL: none). */
    redq_stats_cb on_stats;
    void *on_stats_user; /**< passed to on_stats (default NULL) */
    /** How often on_stats is called, ms; 0 never (default 0). At most
     *  86400000. */
    int stats_interval_ms;

    /* --- producer ------------------------------------------------------- */

    redq_report_cb on_report; /**< per-message report (default NULL: none;
                                   the producer still waits for Redis) */
    void *on_report_user;     /**< passed to on_report (default NULL) */
    redq_ready_cb on_ready;   /**< room again after REDQ_EFULL (default NULL) */
    void *on_ready_user;      /**< passed to on_ready (default NULL) */

    size_t batch_max_msgs;    /**< messages per LPUSH, at most (default 1024) */
    size_t batch_max_bytes;   /**< bytes of RESP per LPUSH, about (default 1 MiB);
                                   a bigger message goes alone */
    unsigned linger_us;       /**< how long a message may wait for its batch
                                   to fill while earlier batches are in flight
                                   (default 1000) */
    int adaptive;             /**< 1: when nothing is in flight, send at the end
                                   of the current loop iteration instead of
                                   lingering; batches then form only under load
                                   (default 1) */
    size_t max_inflight_batches; /**< LPUSH commands awaiting a reply, at most
                                      (default 32) */
    size_t max_pending_msgs;  /**< accepted and not yet reported (default 100000) */
    size_t max_pending_bytes; /**< payload bytes of those (default 64 MiB) */
    size_t max_message_bytes; /**< larger payloads get REDQ_ETOOBIG
                                   (default 16 MiB, at most 512 MiB) */
    int message_timeout_ms;   /**< a message not acknowledged this long after
                                   redq_produce() is reported REDQ_ETIMEDOUT;
                                   0 waits forever (default 30000) */

    /* --- backpressure from the queue itself ----------------------------- */

    size_t max_queue_len;      /**< when an LPUSH reports the list at least
                                    this long, the producer stops sending
                                    until LLEN (polled every linger_us, at
                                    least 100 us) is below 3/4 of it; new
                                    messages wait in the window, so
                                    REDQ_EFULL and on_ready push back on the
                                    caller. Bounds end-to-end latency when
                                    producers outrun consumers. 0: no limit
                                    (default 0) */

    /* --- high availability ---------------------------------------------- */

    /** Replicas that must hold a batch before its reports say ok
     *  (default 0: the master's answer is enough). A `WAIT n timeout` is
     *  pipelined behind the batches written together, so no batch waits an
     *  extra round trip. Fewer replicas within replica_timeout_ms (or a
     *  WAIT refused) reports REDQ_ENOTREPLICATED with persisted
     *  REDQ_PERSIST_YES: stored on the master, which a failover before it
     *  replicates would lose. A connection lost before the WAIT answered
     *  resends the batch (a duplicate if it had replicated). 0..64. */
    int min_replicas;
    /** How long each WAIT waits for those replicas (default 1000; > 0). */
    int replica_timeout_ms;
} redq_producer_options;

/**
 * Settings for a consumer. Fill it with redq_consumer_options_init(), then
 * change what you need. Strings are copied by redq_consumer_new(); the
 * struct can be freed or reused once it returns.
 */
typedef struct redq_consumer_options {
    int version; /**< set by redq_consumer_options_init(); leave it alone */

    /* --- connection: as in redq_producer_options ------------------------ */

    const char *url;         /**< default "redis://127.0.0.1:6379" */
    const char *password;    /**< default NULL */
    const char *client_name; /**< default "redq" */
    int connect_timeout_ms;  /**< default 2000 */
    int command_timeout_ms;  /**< default 5000 */
    int reconnect_min_ms;    /**< default 50 */
    int reconnect_max_ms;    /**< default 2000 */
    redq_log_cb log;         /**< default NULL */
    int log_level;           /**< default REDQ_LOG_INFO */
    void *log_user;          /**< default NULL */
    char *errbuf;            /**< default NULL */
    size_t errbuf_size;      /**< default 0 */

    /* --- statistics: as in redq_producer_options ------------------------ */

    redq_stats_cb on_stats;  /**< default NULL */
    void *on_stats_user;     /**< default NULL */
    int stats_interval_ms;   /**< default 0 */

    /* --- consumer ------------------------------------------------------- */

    redq_message_cb on_message; /**< per-message handler (required) */
    void *on_message_user;      /**< passed to on_message (default NULL) */

    int guarantee;         /**< REDQ_AT_LEAST_ONCE or REDQ_AT_MOST_ONCE
                                (default REDQ_AT_LEAST_ONCE) */
    size_t pool_size;      /**< blocking-pop connections (default 1). With
                                1, messages are handed over in queue order;
                                with more, each pop's batch is in order but
                                batches of different connections may
                                interleave */
    size_t pop_batch;      /**< messages taken per pop under backlog, at most
                                (default 1024) */
    size_t max_unacked;    /**< delivered and not yet acked, at most: no
                                connection pops while the window is full
                                (default 4096) */
    int pop_timeout_ms;    /**< server-side block of one pop; an idle pool
                                sends one command per connection this often
                                (default 5000, at least 10) */
    int stop_timeout_ms;   /**< how long redq_consumer_stop() waits for
                                unacked messages (default 30000) */
    int pop_mode;          /**< REDQ_POP_* (at-most-once; default
                                REDQ_POP_AUTO) */

    /* --- at-least-once -------------------------------------------------- */

    int visibility_timeout_ms; /**< a message not acked this long after
                                    delivery is retried (default 30000) */
    int max_attempts;          /**< deliveries before a failing message is
                                    dead-lettered (default 5) */
    int retry_base_ms;         /**< delay before the first retry; doubles per
                                    attempt, +-20% jitter (default 1000) */
    int retry_max_ms;          /**< longest retry delay (default 60000) */
    int consumer_ttl_ms;       /**< a consumer that has not heartbeaten this
                                    long is presumed dead and its messages
                                    are requeued, counting an attempt. It
                                    beats every ttl/3 from the loop, so it
                                    must be longer than any stall of the
                                    loop (a handler that blocks); keep it
                                    above visibility_timeout_ms, or a slow
                                    handler is declared dead before its
                                    message times out (a warning is logged
                                    when it is not) (default 60000) */
    int promote_interval_ms;   /**< delayed and retried messages become ready
                                    at most about this late (default 200) */
} redq_consumer_options;

/**
 * Settings for an admin handle: the connection block only. Fill it with
 * redq_admin_options_init(). Strings are copied by redq_admin_new().
 */
typedef struct redq_admin_options {
    int version; /**< set by redq_admin_options_init(); leave it alone */

    /* --- connection: as in redq_producer_options ------------------------ */

    const char *url;         /**< default "redis://127.0.0.1:6379" */
    const char *password;    /**< default NULL */
    const char *client_name; /**< default "redq" */
    int connect_timeout_ms;  /**< default 2000 */
    int command_timeout_ms;  /**< default 5000 */
    int reconnect_min_ms;    /**< default 50 */
    int reconnect_max_ms;    /**< default 2000 */
    redq_log_cb log;         /**< default NULL */
    int log_level;           /**< default REDQ_LOG_INFO */
    void *log_user;          /**< default NULL */
    char *errbuf;            /**< default NULL */
    size_t errbuf_size;      /**< default 0 */
} redq_admin_options;

/** Fill a redq_producer_options (see "Versions" above). */
REDQ_API void redq_producer_options_init_sized(redq_producer_options *opts,
                                               size_t size);
#define redq_producer_options_init(opts)                                       \
    redq_producer_options_init_sized((opts), sizeof *(opts))
/** Fill a redq_consumer_options (see "Versions" above). */
REDQ_API void redq_consumer_options_init_sized(redq_consumer_options *opts,
                                               size_t size);
#define redq_consumer_options_init(opts)                                       \
    redq_consumer_options_init_sized((opts), sizeof *(opts))
/** Fill a redq_admin_options (see "Versions" above). */
REDQ_API void redq_admin_options_init_sized(redq_admin_options *opts,
                                            size_t size);
#define redq_admin_options_init(opts)                                          \
    redq_admin_options_init_sized((opts), sizeof *(opts))

/* ------------------------------------------------------------------------ */
/* Producer                                                                  */
/* ------------------------------------------------------------------------ */

/**
 * Create a producer on `base` (the caller's event_base, which must outlive
 * the producer) and start connecting. Returns at once; the connection is
 * made from the loop and redone with backoff whenever it drops. Messages
 * produced before it is up wait in the producer (bounded by the window and
 * message_timeout_ms).
 *
 * On success *out is the new producer and 0 is returned.
 * REDQ_EINVAL  out, base or opts is NULL, opts->version is not one this
 *              library knows, the URL is malformed, or an option is out of
 *              range (opts->errbuf and the log callback, if set, say which
 *              and why)
 * REDQ_ENOMEM  out of memory
 */
REDQ_API int redq_producer_new(redq_producer **out, struct event_base *base,
                               const redq_producer_options *opts);

/**
 * Queue one message for `LPUSH queue payload`. The queue name (a
 * NUL-terminated string) and the `len` bytes at `payload` are copied before
 * this returns. `payload` may be NULL when `len` is 0. `opaque` comes back in
 * the message's report.
 *
 * Messages from one producer to one queue reach Redis in the order of the
 * calls, so a consumer popping with BRPOP sees them first-in first-out.
 *
 * 0            accepted: exactly one report will follow
 * REDQ_EINVAL  p or queue is NULL, queue is empty or longer than 1024
 *              bytes, or payload is NULL with len > 0
 * REDQ_ETOOBIG len exceeds max_message_bytes or max_pending_bytes, or the
 *              value to store (for redq_produce_delayed(), the payload with
 *              its metadata) would pass Redis's 512 MiB bulk-string limit
 *              (proto-max-bulk-len): refused here rather than sent, since
 *              Redis would drop the connection on it
 * REDQ_EFULL   max_pending_msgs or max_pending_bytes reached; on_ready will be
 *              called when there is room again
 * REDQ_ECLOSED redq_producer_close() was called
 * REDQ_ENOMEM  out of memory
 * On any error no report will come for this message. REDQ_EINVAL and
 * REDQ_ETOOBIG are also logged (REDQ_LOG_WARN) with the reason.
 */
REDQ_API int redq_produce(redq_producer *p, const char *queue,
                          const void *payload, size_t len, void *opaque);

/**
 * Like redq_produce(), but the message becomes ready only `delay_ms` after
 * Redis receives it (measured with the server's clock): it waits in the
 * sorted set `<queue>:delayed` until a consumer of the queue promotes it
 * (within about promote_interval_ms of its due time). It is stored as an
 * envelope with a unique id, which consumers unwrap: the handler sees the
 * payload. The report says ok once Redis has scheduled it.
 *
 * Same return values as redq_produce(); REDQ_EINVAL also for a negative
 * delay_ms or one over 3653 days (10 years).
 */
REDQ_API int redq_produce_delayed(redq_producer *p, const char *queue,
                                  const void *payload, size_t len,
                                  long long delay_ms, void *opaque);

/** Releases a buffer handed over with redq_produce_owned(): `payload` is
 *  the pointer given there, `user` its `free_user`. */
typedef void (*redq_free_cb)(void *payload, void *user);

/**
 * Like redq_produce(), but redq takes the `len` bytes at `payload` without
 * copying them (librdkafka's RD_KAFKA_MSG_F_FREE). The queue name is still
 * copied.
 *
 * Ownership: on 0 the buffer belongs to redq until `free_cb(payload,
 * free_user)` is called. That happens exactly once per accepted message,
 * from the loop, right after the message's report callback returned (or
 * when the report would be made, when no report callback is set), whatever
 * the outcome: stored, failed, timed out, or reported REDQ_ECLOSED by
 * redq_producer_close() (then before close's callback). Until then the
 * bytes must not change: a batch resent after a reconnect is built from
 * them again. The report's `payload` is this same pointer. `free_cb` may be
 * NULL: nothing is called, and the caller must keep the buffer unchanged
 * until the report callback returned (for a static or pooled buffer).
 * On an error return nothing was taken: the buffer still belongs to the
 * caller and free_cb is not called.
 *
 * What is saved: redq_produce() copies a payload into its batch and hiredis
 * copies the batch into its output buffer; here the payload is copied only
 * once, into hiredis's output buffer, when its batch is written (and again
 * if it is resent). Payloads under 512 bytes are copied into the batch
 * instead, where one more piece would cost more than the copy; ownership is
 * the same. docs/PERFORMANCE.md, "Zero-copy produce", has measurements.
 * There is no owned variant of redq_produce_delayed(): a delayed message is
 * stored with metadata in front of it, in one value, so it is copied anyway.
 *
 * Order, batching, max_pending_*, max_message_bytes, message timeouts,
 * resends and min_replicas treat owned and copied messages alike, and both
 * may be mixed on one queue: they reach Redis in the order of the calls.
 *
 * Same return values as redq_produce().
 */
REDQ_API int redq_produce_owned(redq_producer *p, const char *queue,
                                void *payload, size_t len,
                                redq_free_cb free_cb, void *free_user,
                                void *opaque);

/**
 * Produce a message with a key: on a partitioned queue (docs/DESIGN.md,
 * "Partitioned queues"; on one server or a cluster alike) it goes to
 * partition (key's CRC16 slot, hash tags honoured) % P, P the queue's
 * active partition count, so messages of one key keep their produce order
 * among themselves while P does not change (raising or lowering P moves
 * keys to other partitions: order per key then holds only from the change
 * on). A queue's P is learnt at its first use (and read again every 2 s);
 * keyed messages produced before that answer wait in the producer
 * (accepted: counted in the window, their ids given now, failed by
 * message_timeout_ms or close like any other). On a queue of one
 * partition it is redq_produce(). key may be NULL only when keylen is 0.
 * Unkeyed messages (redq_produce, _owned, _delayed) are spread "sticky by
 * batch": one partition takes them until its batch is sealed, then the
 * next; order then holds per partition only. Reports name the queue as
 * the caller did (the logical queue), never a partition. The queue name
 * limit (1024 bytes) is the logical name's; a partition's own name is up
 * to 12 bytes longer.
 *
 * Same return values as redq_produce().
 */
REDQ_API int redq_produce_key(redq_producer *p, const char *queue,
                              const void *key, size_t keylen,
                              const void *payload, size_t len, void *opaque);

/** Called when a redq_producer_flush() ends. status is 0 when every
 *  message accepted before the call has had its report; REDQ_ETIMEDOUT when
 *  the flush's own deadline passed first (those messages stay pending and
 *  are reported later, as if there had been no flush); REDQ_ECLOSED when
 *  the producer was closed first (the reports were still all made). */
typedef void (*redq_flush_cb)(redq_producer *p, int status, void *user);

/**
 * Send whatever is batched now, without waiting for linger, and call `cb`
 * once every message accepted so far has been reported (stored or
 * failed), or when `timeout_ms` has passed, whichever comes first: a
 * container's grace period, as rd_kafka_flush(rk, timeout_ms). timeout_ms < 0
 * gives the flush no deadline of its own: message_timeout_ms still bounds
 * every message, so it ends by then. timeout_ms 0 only checks (next loop
 * iteration). A flush that times out fails nothing: the messages stay
 * pending and get their reports as usual. Messages produced after this call
 * do not delay it. Several flushes may be outstanding, each with its own
 * deadline. With nothing to wait for, `cb` runs in the next loop iteration
 * (after the loop has polled for I/O and timers), so a flush started from
 * its own callback never spins.
 *
 * REDQ_EINVAL  p or cb is NULL
 * REDQ_ECLOSED the producer is closing
 * REDQ_ENOMEM  out of memory
 */
REDQ_API int redq_producer_flush(redq_producer *p, int timeout_ms,
                                 redq_flush_cb cb, void *user);

/** Called when a producer has been released. It is the handle's last
 *  callback; the producer pointer is no longer valid. */
typedef void (*redq_close_cb)(void *user);

/**
 * Close the producer. It does not drain: every message not yet acknowledged
 * is reported with REDQ_ECLOSED (from the loop, before `cb`), the connection
 * is dropped, and `cb` (may be NULL) is called once everything is freed. From
 * this call on, redq_produce() returns REDQ_ECLOSED.
 *
 * To drain first, close from the callback of redq_producer_flush().
 *
 * 0            closing; keep running the loop until `cb`
 * REDQ_EINVAL  p is NULL
 * REDQ_ECLOSED already closing (the first call's callback stands)
 */
REDQ_API int redq_producer_close(redq_producer *p, redq_close_cb cb,
                                 void *user);

/** This producer's id: 16 lowercase hex digits, random per producer, the
 *  first part of every message id it makes (redq_report.id is
 *  "<producer id>-<n>"). Static for the producer's life; NULL when p is
 *  NULL. */
REDQ_API const char *redq_producer_id(const redq_producer *p);

/** A snapshot of a producer's counters. */
typedef struct redq_producer_stats {
    uint64_t produced;        /**< messages accepted by redq_produce() */
    uint64_t stored;          /**< reports with status 0 */
    uint64_t failed;          /**< reports with status < 0 */
    uint64_t rejected_full;   /**< redq_produce() calls that got REDQ_EFULL */
    uint64_t batches_sent;    /**< LPUSH commands written (resends included) */
    uint64_t batches_resent;  /**< of those, resent after a reconnect */
    uint64_t connects;        /**< successful connects (handshake done) */
    uint64_t disconnects;     /**< connections lost or dropped */
    size_t pending_msgs;      /**< accepted, not yet reported */
    size_t pending_bytes;     /**< payload bytes of those */
    size_t inflight_batches;  /**< LPUSH commands awaiting a reply */
    int connected;            /**< 1 when the connection is up and ready */
    int throttled;            /**< 1 while a queue is at max_queue_len */
    uint64_t throttle_events; /**< times sending stopped for max_queue_len */
} redq_producer_stats;

/*
 * The counters hold at every moment, also inside a report callback: a
 * message counts in stored or failed, and leaves pending_msgs and
 * pending_bytes, just before its own report is made, so produced ==
 * stored + failed + pending_msgs always.
 */

/**
 * Copy the producer's counters into the first `size` bytes of *st: the
 * fields that fit in both the caller's and the library's struct are filled,
 * any bytes beyond the library's struct are zeroed. Use the macro
 * redq_producer_get_stats(), which passes sizeof *st, so that new counters
 * appended to the struct never overrun an older program's copy. Nothing
 * happens when p or st is NULL.
 */
REDQ_API void redq_producer_get_stats_sized(const redq_producer *p,
                                            redq_producer_stats *st,
                                            size_t size);
#define redq_producer_get_stats(p, st)                                         \
    redq_producer_get_stats_sized((p), (st), sizeof *(st))

/* ------------------------------------------------------------------------ */
/* Consumer                                                                  */
/* ------------------------------------------------------------------------ */

/**
 * Create a consumer of `queues` (nqueues names, copied) on `base`. A pool of
 * opts->pool_size connections, each reserved for blocking pops, takes
 * messages from the tail of the lists (so LPUSH + this is first-in
 * first-out) and calls opts->on_message for each. With several queues,
 * earlier ones take priority, as with `BRPOP q1 q2`.
 *
 * Order: with pool_size 1, messages of one queue reach the handler in queue
 * order (first pushed, first handled). With a larger pool, pops on
 * different connections run concurrently and their batches may interleave.
 *
 * Guarantee (opts->guarantee): at-least-once by default, where each message
 * waits in this consumer's processing list until redq_ack() (see
 * REDQ_AT_LEAST_ONCE); or at-most-once, where a popped message is gone from
 * Redis and acks only bound the window (max_unacked) and tell
 * redq_consumer_stop() when the work is done. A queue's other keys
 * (due, delayed, dead; at-least-once also processing lists, heartbeats and
 * a consumers set) hash to the queue's own cluster slot whatever its name:
 * "{jobs}/dead" for "jobs", "{orders}:dead" for "{orders}" (docs/DESIGN.md,
 * "Key layout").
 *
 * Payloads are delivered byte for byte as they were pushed, whatever they
 * look like: redq keeps its metadata (attempts, ids, reasons) in frames
 * in its own keys, and in the ready list only when the queue's format is
 * REDQ_FORMAT_FRAMES (then a value that is not a frame is delivered
 * whole).
 *
 * 0            created; connecting and popping start from the loop
 * REDQ_EINVAL  out, base, opts, queues or opts->on_message is NULL,
 *              nqueues is 0, a queue name is empty or too long, the URL or
 *              an option is invalid (the log callback says which)
 * REDQ_ENOMEM  out of memory
 */
REDQ_API int redq_consumer_new(redq_consumer **out, struct event_base *base,
                               const redq_consumer_options *opts,
                               const char *const *queues, size_t nqueues);

/*
 * Lifetimes: when each pointer dies
 * ---------------------------------
 * redq_message *msg, and the strings and bytes read from it (queue, data,
 *   id): valid from on_message until the call that finishes it
 *   (redq_ack(), redq_nack(), redq_reject()) returns, and not a moment
 *   longer. Neither a stop (also one that timed out: it gave the message
 *   back, and a later redq_ack() says REDQ_ETIMEDOUT) nor a close, nor
 *   redq_consumer_remove_queue() of its queue, ends it. After
 *   redq_consumer_close() the finishing calls (and redq_msg_extend()) return
 *   REDQ_ECLOSED and only release the message's memory, which outlives the
 *   consumer until then; the close callback does not wait for them. A
 *   message never finished is the caller's leak (its pop's memory). redq
 *   keeps no list of them for the caller: an embedder whose handlers may
 *   still hold messages at close keeps its own (as examples/job_server.c
 *   does) and finishes each, e.g. with redq_nack(), after the close.
 * redq_report (the producer's report) and every pointer in it: valid until
 *   the report callback returns.
 * Everything handed to other callbacks (queue infos, dead letters, stats
 *   JSON, error strings): valid until that callback returns.
 * redq_consumer_id(), redq_producer / consumer handles: valid until the
 *   handle's close callback.
 */

/** The queue a message came from. NUL-terminated; valid until finished. */
REDQ_API const char *redq_msg_queue(const redq_message *msg);
/** The message's bytes (followed by a NUL that is not counted, for
 *  convenience); valid until finished. */
REDQ_API const void *redq_msg_data(const redq_message *msg);
/** The message's length in bytes. */
REDQ_API size_t redq_msg_len(const redq_message *msg);

/** Which delivery of this message this is: 1 the first time, 2 on its
 *  first retry, and so on (counted across consumers and crashes: a
 *  consumer that died holding it counts as one). */
REDQ_API int redq_msg_attempt(const redq_message *msg);
/** The message's id, never empty, the same on every attempt and in its
 *  dead letter. On a frames queue (REDQ_FORMAT_FRAMES) and for delayed
 *  messages, the producer's (redq_report.id: "<producer id>-<n>"); on a
 *  plain queue, or for a value a plain client pushed onto a frames queue,
 *  one this consumer made at the first delivery ("<consumer id>-<n>",
 *  consumer id as in its holder names), which the retry carries. A message
 *  recovered from a consumer that died holding it gets a new one (the dead
 *  consumer's id for it was never written down). Valid until acked. */
REDQ_API const char *redq_msg_id(const redq_message *msg);
/** The partition of its logical queue the message came from: 0 for a
 *  queue that is not partitioned (and for partition 0, the queue's own
 *  list), i >= 1 for the physical queue "{T_i}<queue>~i" (docs/DESIGN.md,
 *  "Partitioned queues"). redq_msg_queue() is always the logical name.
 *  -1 for NULL. */
REDQ_API int redq_msg_partition(const redq_message *msg);
/** When the message was first enqueued (ms since the epoch, the clock of
 *  whoever stamped it: the producer for a frames queue's messages, the
 *  consumer for a plain queue's first retry), or -1 when unknown (a first
 *  delivery on a plain queue). */
REDQ_API long long redq_msg_enqueued_ms(const redq_message *msg);

/**
 * Finish a message successfully: at-least-once, it is removed from the
 * processing list (acks are gathered and sent once per loop iteration);
 * its memory is released and its place in the window freed. Call exactly
 * one of redq_ack() / redq_nack() / redq_reject() once per message, from
 * the loop's thread, inside the handler or later (also after a stop or a
 * close); `msg` is invalid afterwards.
 * A second call on the same message is a caller bug; it is caught
 * (REDQ_EALREADY) while other messages of the same pop are still held,
 * and undefined once all are released.
 *
 * 0              done
 * REDQ_EINVAL    msg is NULL
 * REDQ_EALREADY  msg was already acked or nacked (nothing is done)
 * REDQ_ETIMEDOUT too late: visibility_timeout_ms had passed (or a stop
 *                that timed out gave it back) and the message was already
 *                sent down the retry path; it is released all the same
 * REDQ_ECLOSED   redq_consumer_close() was called: nothing is sent (at
 *                least once the close gave the message back to its queue,
 *                or a reaper will); only its memory is released
 */
REDQ_API int redq_ack(redq_message *msg);

/**
 * Finish a message unsuccessfully: it is retried after a backoff
 * (retry_base_ms doubling up to retry_max_ms, with jitter), or, if this was
 * delivery max_attempts, moved to the queue's dead-letter list with
 * `reason` (copied, cut to its first 1024 bytes; may be NULL), the attempt
 * count and the time. Works in
 * both modes (at-most-once, the message is pushed back). `msg` is invalid
 * afterwards.
 *
 * 0, REDQ_EINVAL, REDQ_EALREADY, REDQ_ETIMEDOUT, REDQ_ECLOSED as for
 * redq_ack()
 */
REDQ_API int redq_nack(redq_message *msg, const char *reason);

/**
 * Finish a message unsuccessfully, without retries: a poison message should
 * not cost max_attempts deliveries. At-least-once it goes straight to the
 * queue's dead-letter list in one atomic step (as a last failed attempt
 * would), with `reason` (copied, cut to 1024 bytes; may be NULL; the dead
 * letter's reason reads "rejected: <reason> (attempt N of M)") and the
 * attempt it failed on; it counts in both `rejected` and `dead_lettered`.
 * At-most-once it is dropped and counted in `rejected`. `msg` is invalid
 * afterwards.
 *
 * 0, REDQ_EINVAL, REDQ_EALREADY, REDQ_ETIMEDOUT, REDQ_ECLOSED as for
 * redq_ack()
 */
REDQ_API int redq_reject(redq_message *msg, const char *reason);

/**
 * Keep a message longer: its visibility deadline becomes `ms` from now
 * (which may be sooner or later than it was). For handlers that take long:
 * extend before the deadline passes, and the message is not retried while
 * the work goes on. The consumer's own liveness is its heartbeat (every
 * consumer_ttl_ms/3, from the loop): a handler that blocks the loop longer
 * than consumer_ttl_ms is taken for dead whatever its deadlines.
 * At-most-once it only bounds nothing and returns 0.
 *
 * 0, REDQ_EINVAL (msg NULL, ms < 0), REDQ_EALREADY, REDQ_ETIMEDOUT (the
 * deadline had already passed: the message is on its retry path),
 * REDQ_ECLOSED (the consumer is closing or closed: nothing is done; the
 * message must still be finished)
 */
REDQ_API int redq_msg_extend(redq_message *msg, int ms);

/** Called when a stop has finished. status is 0, or REDQ_ETIMEDOUT when
 *  messages were still unacked (or Redis had not confirmed the give-back)
 *  when the stop's deadline passed, or REDQ_ECLOSED when the consumer was
 *  closed first. */
typedef void (*redq_stop_cb)(redq_consumer *c, int status, void *user);

/**
 * Stop consuming gracefully: no new pops are started, blocked pops are
 * released at once (CLIENT UNBLOCK from a control connection), messages a
 * pop returned meanwhile are still delivered, and once every delivered
 * message has been acked, at-least-once, whatever this consumer's
 * processing lists still hold goes back to its queue and the consumer
 * leaves the queue's consumer set, in one atomic step per list.
 * `cb` gets 0 when Redis has confirmed all of that. When `timeout_ms`
 * (< 0: opts.stop_timeout_ms; 0: a deadline of now, so REDQ_ETIMEDOUT
 * unless Redis has confirmed everything when the timer fires) passes first, at-least-once the
 * messages the handler still holds are given back too (a later ack
 * returns REDQ_ETIMEDOUT; the message stays valid until then;
 * at-most-once they are out of Redis already and a later ack returns 0),
 * and `cb` gets REDQ_ETIMEDOUT at once:
 * something (an ack, the give-back) is not confirmed yet, and carries on
 * until close. The consumer stays valid until redq_consumer_close().
 *
 * 0            stopping
 * REDQ_EINVAL  c or cb is NULL
 * REDQ_ECLOSED already stopping or closing
 */
REDQ_API int redq_consumer_stop(redq_consumer *c, int timeout_ms,
                                redq_stop_cb cb, void *user);

/**
 * Release the consumer. Pops are abandoned at once; at-least-once, acks
 * and nacks accepted before this call are sent first and awaited for up
 * to a second, and what the processing lists still hold, the messages the
 * handler holds included, is given back to its queue (when the control
 * connection is down, a live consumer of the queue requeues it after
 * consumer_ttl_ms). At-most-once, a pop in flight may lose the messages it
 * took (stop first to avoid that). Messages the handler holds stay valid:
 * from this call on, redq_ack() / redq_nack() / redq_reject() on them
 * return REDQ_ECLOSED and only release their memory, which they must still
 * do. `cb` (may be NULL) is called when the consumer itself is freed,
 * without waiting for them; it is the consumer's last callback.
 *
 * 0            closing
 * REDQ_EINVAL  c is NULL
 * REDQ_ECLOSED already closing
 */
REDQ_API int redq_consumer_close(redq_consumer *c, redq_close_cb cb,
                                 void *user);

/** Called when redq_consumer_remove_queue() has finished: status 0, or
 *  REDQ_ECLOSED when the consumer was closed first. */
typedef void (*redq_remove_cb)(redq_consumer *c, int status, void *user);

/**
 * Start consuming `queue` (copied) too, on the running consumer, with the
 * lowest priority (after the queues it has). The same pool serves it: no
 * connection is opened. At-least-once, pops take from it once its first
 * heartbeat is acknowledged (about one round trip); pops blocked meanwhile
 * are released so they see it.
 *
 * 0              added
 * REDQ_EINVAL    c or queue NULL, queue empty, too long or another queue's
 *                own key
 * REDQ_EEXIST    already consumed by c (or its removal is still in
 *                progress: add it again after the remove callback)
 * REDQ_ECLOSED   c is stopping or closing
 * REDQ_ENOMEM    out of memory
 */
REDQ_API int redq_consumer_add_queue(redq_consumer *c, const char *queue);

/**
 * Stop consuming `queue`, on the running consumer: no pop starts on it any
 * more and pops blocked on it are released at once. Messages of it already
 * delivered stay valid and are finished as usual; once none is held and no
 * pop that named it is out, at-least-once, what its processing lists still
 * hold goes back to the queue and this consumer leaves the queue's consumer
 * set (RETURN, as a stop does, for this queue only). `cb` gets 0 when Redis
 * has confirmed that (at-most-once: when the pops that named it have
 * answered). The queue's messages never pass to another queue.
 *
 * 0              removing; `cb` follows
 * REDQ_EINVAL    c, queue or cb NULL, or queue is the last one consumed
 *                (a consumer needs one; close it instead)
 * REDQ_ENOQUEUE  c does not consume queue (or is already removing it)
 * REDQ_ECLOSED   c is stopping or closing
 */
REDQ_API int redq_consumer_remove_queue(redq_consumer *c, const char *queue,
                                        redq_remove_cb cb, void *user);

/** The consumer's instance id: 16 lowercase hex digits, random per
 *  consumer, the prefix of its holder names ("<id>.<k>") in the queues'
 *  consumer sets and processing-list keys. Valid until the close callback;
 *  NULL when c is NULL. */
REDQ_API const char *redq_consumer_id(const redq_consumer *c);

/** A snapshot of a consumer's counters. */
typedef struct redq_consumer_stats {
    uint64_t delivered;     /**< messages handed to on_message (counted as
                                 each handler call starts) */
    uint64_t acked;         /**< redq_ack() calls that finished a message */
    uint64_t pops;          /**< pop commands sent */
    uint64_t empty_pops;    /**< of those, answered with nothing */
    uint64_t connects;      /**< successful connects, all pool connections */
    uint64_t disconnects;   /**< connections lost */
    uint64_t errors;        /**< error replies (wrong type, ...) */
    uint64_t retried;       /**< messages sent down the retry path */
    uint64_t dead_lettered; /**< messages moved to the dead-letter list */
    uint64_t expired;       /**< visibility timeouts */
    uint64_t recovered;     /**< messages of dead consumers requeued by this
                                 one */
    uint64_t promoted;      /**< delayed messages made ready by this one */
    size_t unacked;         /**< delivered, not yet acked */
    size_t connected;       /**< pool connections up and ready */
    uint64_t nacked;        /**< redq_nack() calls that finished a message */
    uint64_t returned;      /**< messages this consumer gave back to their
                                 queue untouched: taken by a pop whose reply
                                 was lost, or still held at a stop */
    uint64_t rejected;      /**< redq_reject() calls that finished a message
                                 (also counted in dead_lettered when it was
                                 dead-lettered) */
} redq_consumer_stats;

/** Copy the consumer's counters into the first `size` bytes of *st, like
 *  redq_producer_get_stats_sized(). Use the macro redq_consumer_get_stats(),
 *  which passes sizeof *st. */
REDQ_API void redq_consumer_get_stats_sized(const redq_consumer *c,
                                            redq_consumer_stats *st,
                                            size_t size);
#define redq_consumer_get_stats(c, st)                                         \
    redq_consumer_get_stats_sized((c), (st), sizeof *(st))

/* ------------------------------------------------------------------------ */
/* Admin: what operators ask every day (lib/admin.c)                          */
/* ------------------------------------------------------------------------ */

/*
 * An admin handle answers operators' questions about queues and acts on
 * them, asynchronously on the caller's loop like the other handles (one
 * connection; every call takes a callback that runs exactly once, from the
 * loop). The CLI, `redq serve` and its dashboard are built on it alone.
 *
 * Queues are found without KEYS: producers and consumers record the queues
 * they use in a registry (the sorted set "redq:queues", member the queue
 * name, score the last time it was seen, ms), refreshed at most every
 * minute per queue and handle; the admin drops entries not seen for a day
 * whose keys are all empty.
 *
 * Pointers handed to callbacks (names, payloads, reasons, the arrays) are
 * borrowed until the callback returns. Every `queue` argument is copied.
 */
typedef struct redq_admin redq_admin;

/** Create an admin handle on `base` with the connection options of `opts`
 *  (url, password, timeouts, log, errbuf). Same returns as
 *  redq_producer_new(). */
REDQ_API int redq_admin_new(redq_admin **out, struct event_base *base,
                            const redq_admin_options *opts);

/** Close it: calls not yet answered get REDQ_ECLOSED, then `cb` (may be
 *  NULL) is its last callback. 0, REDQ_EINVAL, REDQ_ECLOSED. */
REDQ_API int redq_admin_close(redq_admin *a, redq_close_cb cb, void *user);

/** One queue, as one consistent snapshot (one script per queue). */
typedef struct redq_queue_info {
    const char *name;          /**< the queue (borrowed) */
    uint64_t ready;            /**< in the ready list */
    uint64_t due;              /**< retried, recovered, requeued: taken first */
    uint64_t processing;       /**< taken by at-least-once consumers, unacked */
    uint64_t delayed;          /**< scheduled, not due yet */
    uint64_t dead;             /**< dead letters */
    uint64_t consumers;        /**< live consumer connections (heartbeat) */
    uint64_t registered;       /**< consumer connections registered, live or
                                    not (dead ones are recovered soon) */
    long long oldest_age_ms;   /**< age of the oldest ready message when it
                                    can be known (it carries a frame time or
                                    the queue's first-seen time), else -1 */
    int paused;                /**< 1 when consumers do not take from it */
    long long last_seen_ms;    /**< registry: last use by a producer or
                                    consumer, ms since the epoch; -1 unknown */
    /* Appended in 0.4: messages moved, counted in Redis (the queue's meta
     * hash) by every producer and consumer since the queue was first used
     * by a version that counts (or since its keys were deleted), so they
     * only grow: rates are differences over time. Each event is counted
     * when Redis applies it, in the same script or pipeline as the move
     * itself; a producer's count is sent with each batch (a batch whose
     * reply is lost with the connection may be counted though resent, or
     * the other way round: the counters are for rates, not for audits). */
    uint64_t pushed;           /**< produced: LPUSH to the ready list, or
                                    scheduled with a delay */
    uint64_t taken;            /**< popped by consumers, both modes */
    uint64_t acked;            /**< at-least-once: acked (removed from a
                                    processing list) */
    uint64_t retried;          /**< sent back to be taken again: nacks and
                                    visibility timeouts with attempts left,
                                    and messages recovered from dead
                                    consumers */
    uint64_t dead_lettered;    /**< moved to the dead-letter list */
    /* Appended in 0.9. */
    int format;                /**< REDQ_FORMAT_PLAIN or REDQ_FORMAT_FRAMES */
    /* Appended in 0.9 (issue 11). The numbers above of a partitioned queue
     * are the sums over all its partitions, retired ones included (paused
     * and format are partition 0's, the queue's own). */
    int partitions;            /**< active partitions (1: not partitioned) */
} redq_queue_info;

/** status 0 and `n` queues, or a REDQ_E* and errstr (n is then 0). */
typedef void (*redq_queues_cb)(redq_admin *a, int status, const char *errstr,
                               const redq_queue_info *queues, size_t n,
                               void *user);

/** Every queue in the registry, snapshotted, sorted by name. */
REDQ_API int redq_admin_queues(redq_admin *a, redq_queues_cb cb, void *user);
/** One queue (whether or not it is in the registry). */
REDQ_API int redq_admin_queue(redq_admin *a, const char *queue,
                              redq_queues_cb cb, void *user);

/** A message as an operator sees it. */
typedef struct redq_admin_msg {
    const void *data;      /**< the payload, byte for byte (borrowed) */
    size_t len;
    const char *id;        /**< "" when it has none */
    int attempts;          /**< deliveries already made */
    long long ts_ms;       /**< first enqueued, -1 unknown */
    const char *reason;    /**< dead letters: why (decoded), else NULL */
    long long dead_ts_ms;  /**< dead letters: when, else -1 */
    size_t index;          /**< peek: 0 is the next to be taken; dead: 0 is
                                the newest */
    /* Appended in 0.4 (fields only ever go at the end). */
    int framed;            /**< 1 when the stored value was a redq frame
                                (id, attempts, ts and the dead-letter fields
                                come from it); 0 for a raw payload, as the
                                ready list holds them, or a value put there
                                by hand (the fields above are then their
                                defaults) */
    const char *queue;     /**< dead letters: the queue the frame says it
                                died in (its "q=" field, decoded; borrowed),
                                else NULL (no such field, or not a dead
                                letter) */
} redq_admin_msg;

typedef void (*redq_msgs_cb)(redq_admin *a, int status, const char *errstr,
                             const redq_admin_msg *msgs, size_t n,
                             void *user);

/** The next `count` messages to be taken (due first, then the ready
 *  list), without taking them. */
REDQ_API int redq_admin_peek(redq_admin *a, const char *queue, size_t count,
                             redq_msgs_cb cb, void *user);
/** Dead letters, newest first, from `offset`, at most `count`. */
REDQ_API int redq_admin_dead(redq_admin *a, const char *queue, size_t offset,
                             size_t count, redq_msgs_cb cb, void *user);

/** Done: status 0 and how many messages (or queues) it concerned. */
typedef void (*redq_done_cb)(redq_admin *a, int status, const char *errstr,
                             uint64_t n, void *user);

/** Move the oldest `count` dead letters (SIZE_MAX: all there are when it
 *  starts) back to be taken first, attempts reset, payloads untouched;
 *  batches of at most 1000 per script. */
REDQ_API int redq_admin_requeue(redq_admin *a, const char *queue, size_t count,
                                redq_done_cb cb, void *user);
/** Requeue the one dead letter with this id (n is 0 when none has it). */
REDQ_API int redq_admin_requeue_id(redq_admin *a, const char *queue,
                                   const char *id, redq_done_cb cb,
                                   void *user);
/** Delete the one dead letter with this id (n is 0 when none has it). */
REDQ_API int redq_admin_delete_dead(redq_admin *a, const char *queue,
                                    const char *id, redq_done_cb cb,
                                    void *user);
/** Delete every dead letter; n is how many there were. */
REDQ_API int redq_admin_purge(redq_admin *a, const char *queue,
                              redq_done_cb cb, void *user);
/** Pause (1) or resume (0) a queue: consumers of both modes stop taking
 *  from a paused queue within about promote_interval_ms, and start again
 *  as soon after a resume; producers are not affected. */
REDQ_API int redq_admin_pause(redq_admin *a, const char *queue, int paused,
                              redq_done_cb cb, void *user);
/**
 * Set the queue's format (REDQ_FORMAT_PLAIN or REDQ_FORMAT_FRAMES; see
 * there), checked and set in one script. plain -> frames always works:
 * producers learn it when they first use the queue, and a running
 * producer within about 2 s (its periodic read of the queue's meta;
 * meanwhile its plain payloads are delivered whole with an id the
 * consumer makes); consumers within about
 * promote_interval_ms (their TAKE reads it with each pop at once).
 * frames -> plain is refused with REDQ_ENOTEMPTY ("... its ready list
 * holds 12 frames ...") unless the ready list is empty: nothing would
 * unwrap those frames. A producer whose frames arrive after the switch
 * has them refused by Redis and resends them as plain payloads, in order,
 * nothing lost. Messages in due, delayed and dead lists are frames in
 * either format and are not affected. One gap: a frame a consumer had
 * taken before the switch and that goes back untouched after it (the
 * consumer died holding it, or a stop gave back what it had not yet
 * delivered) is then delivered with its header as payload: switch while
 * the queue's consumers hold nothing (redq_queue_info.processing 0).
 * n is 1 when the format changed, 0 when it already was `format`.
 * A partitioned queue's partitions (retired ones too) get the same format:
 * each partition's scripts check their own meta hash, in their own slot;
 * a partition refusing frames -> plain fails the call with REDQ_ENOTEMPTY
 * while the others keep the change. redq_admin_set_partitions() gives new
 * partitions of a frames queue the frames format; a producer that reads
 * the new partition count before that is written (one round trip) pushes
 * plain payloads there, delivered whole with consumer-made ids.
 * REDQ_EINVAL also for an unknown format (returned by the call).
 */
REDQ_API int redq_admin_set_format(redq_admin *a, const char *queue,
                                   int format, redq_done_cb cb, void *user);

/**
 * Set the number of active partitions of logical queue `queue` (1 to 256;
 * docs/DESIGN.md, "Partitioned queues"): raising it makes partitions (new
 * tags, or the retired ones again, in order) spread over the cluster's
 * masters; lowering it retires the highest ones: producers stop pushing
 * to them, consumers drain them forever. Nothing is moved or lost. One
 * script on the queue's meta hash, so concurrent calls do not interleave.
 * n is the previous count. Producers and consumers see the change within
 * a few seconds.
 */
REDQ_API int redq_admin_set_partitions(redq_admin *a, const char *queue,
                                       int partitions, redq_done_cb cb,
                                       void *user);

/** One partition of a logical queue (redq_admin_partitions). */
typedef struct redq_partition_info {
    int index;           /**< 0 .. n-1 (0 is the queue itself) */
    const char *name;    /**< its physical queue (borrowed) */
    int slot;            /**< its Redis Cluster hash slot */
    const char *node;    /**< "host:port" of the slot's master when known
                              (a cluster), else NULL */
    uint64_t ready;      /**< in its ready list */
    uint64_t processing; /**< in its registered consumers' lists */
    uint64_t dead;       /**< its dead letters */
    int retired;         /**< 1: index >= the active count (drained only) */
} redq_partition_info;

typedef void (*redq_partitions_cb)(redq_admin *a, int status,
                                   const char *errstr,
                                   const redq_partition_info *parts, size_t n,
                                   void *user);

/** Every partition of `queue` ever made, active and retired, by index (one
 *  for a queue that is not partitioned). */
REDQ_API int redq_admin_partitions(redq_admin *a, const char *queue,
                                   redq_partitions_cb cb, void *user);

/** Recover the messages of the queue's dead consumers now (instead of at
 *  the next live consumer's heartbeat); n is how many moved. */
REDQ_API int redq_admin_recover(redq_admin *a, const char *queue,
                                redq_done_cb cb, void *user);

/** A processing list whose holder is not registered (redq_admin_orphans). */
typedef struct redq_orphan {
    const char *key;      /**< the list's key (borrowed) */
    const char *holder;   /**< the holder id in it (borrowed) */
    uint64_t messages;    /**< how many it held when looked at */
} redq_orphan;

/** status 0 and `n` orphaned lists, or a REDQ_E* and errstr (n is 0). */
typedef void (*redq_orphans_cb)(redq_admin *a, int status, const char *errstr,
                                const redq_orphan *orphans, size_t n,
                                void *user);

/**
 * The queue's processing lists that hold messages but whose holder is not
 * in the queue's consumers set: no live consumer's reaper looks at them
 * (a reaper starts from the set), so their messages wait for an operator.
 * They come from a consumers set deleted or rewritten by hand, or keys
 * restored from a backup without it. A processing list is found only by
 * walking the keyspace: SCAN MATCH on the queue's key prefix (its special
 * characters escaped), one page of about 1000 keys per round trip so the
 * server is never blocked for long, then SISMEMBER and LLEN per candidate,
 * pipelined; at most 10000 candidates are looked at. Sorted by key. Costs
 * a walk of the whole keyspace: an operator's question, not a monitor's.
 */
REDQ_API int redq_admin_orphans(redq_admin *a, const char *queue,
                                redq_orphans_cb cb, void *user);

/**
 * Move the messages of the queue's orphaned lists (as redq_admin_orphans()
 * finds them) back to be taken again, as the recovery of a dead consumer
 * does: each counts the delivery it was in (a message at max_attempts is
 * dead-lettered), goes to the due list, and the empty list is gone. A
 * holder that still has a heartbeat is left alone (it is alive and will
 * register again within its heartbeat period). n is how many moved.
 * redq_admin_recover() does not do this: it stays cheap (no keyspace
 * walk); call both to recover everything.
 */
REDQ_API int redq_admin_recover_orphans(redq_admin *a, const char *queue,
                                        redq_done_cb cb, void *user);

/** Text built by the admin handle: status 0 and `len` bytes at `text`
 *  (borrowed), or an error. */
typedef void (*redq_text_cb)(redq_admin *a, int status, const char *errstr,
                             const char *text, size_t len, void *user);
/** Every registered queue in the Prometheus text exposition format
 *  (version 0.0.4): gauges redq_queue_ready{queue="..."} and the other
 *  fields of redq_queue_info, and the counters of messages moved as one
 *  counter family, redq_queue_messages_total{queue="...",event="pushed"}
 *  (events pushed, taken, acked, retried, dead_lettered), with HELP and
 *  TYPE lines; label values escaped as the format says. For an embedding
 *  server to mount on its own evhttp. */
REDQ_API int redq_admin_metrics(redq_admin *a, redq_text_cb cb, void *user);

/* ------------------------------------------------------------------------ */
/* Text helpers (lib/text.c)                                                  */
/* ------------------------------------------------------------------------ */

/*
 * Payloads are bytes and redq never re-encodes them on their way through
 * Redis. Tools that must show them as text (JSON, a web page) need to know
 * whether they are UTF-8 and, when not, a text form of the bytes: the
 * library's own checks, exported so that every tool uses the same rules.
 */

/** 1 when the `len` bytes at `s` are well-formed UTF-8 (RFC 3629: no
 *  overlong forms, no surrogates, nothing above U+10FFFF; NUL bytes are
 *  text), else 0. `s` may be NULL only when len is 0. */
REDQ_API int redq_utf8_valid(const void *s, size_t len);

/** Length (1 to 4) of the well-formed UTF-8 sequence at the start of the
 *  `len` bytes at `s`, by the same rules, or 0 when they do not start with
 *  one (or len is 0). For escaping text one character at a time. */
REDQ_API size_t redq_utf8_seq_len(const void *s, size_t len);

/** Standard base64 (RFC 4648 section 4, with padding) of `len` bytes at
 *  `in`, written to `out`, which needs 4*((len+2)/3)+1 bytes and is
 *  NUL-terminated. Returns the length written, without the NUL. */
REDQ_API size_t redq_base64_encode(const void *in, size_t len, char *out);

/* ------------------------------------------------------------------------ */
/* URLs (lib/url.c)                                                          */
/* ------------------------------------------------------------------------ */

/*
 * The library's parser of the options' url, for programs that need a
 * connection of their own to the same server (a benchmark's side
 * connection, a test's checks): they read the same URLs the same way.
 *
 * Besides the forms listed at redq_options.url, it reads a Redis Cluster:
 *    redis+cluster://[[user]:password@]host[:port][,host[:port]..]
 * The hosts are seed nodes (port 6379 by default, at most 64): any one
 * that answers bootstraps the slot map. A cluster has database 0 only: /N
 * or ?db=N other than 0 is refused (REDQ_EINVAL). Producers, consumers
 * and the admin route by slot (docs/DESIGN.md, "Cluster client").
 */

/** What a URL names. */
typedef enum redq_url_kind {
    REDQ_URL_TCP = 0,     /**< redis://host:port */
    REDQ_URL_UNIX = 1,    /**< unix:///path/to/socket */
    REDQ_URL_SENTINEL = 2, /**< redis+sentinel://s1,s2/master */
    REDQ_URL_CLUSTER = 3   /**< redis+cluster://n1:7000,n2:7001 */
} redq_url_kind;

/** A Sentinel's or a cluster seed node's address. */
typedef struct redq_url_node {
    const char *host; /**< a name or an IP literal, without brackets */
    int port;         /**< 26379 (Sentinel) or 6379 (cluster) unless the URL
                           says otherwise */
} redq_url_node;

/**
 * A parsed URL. Every string is decoded and owned by the struct: they stay
 * valid until redq_url_info_free(), which releases them all. A string the
 * URL does not give is NULL.
 */
typedef struct redq_url_info {
    redq_url_kind kind;
    const char *host;     /**< TCP: the server (no brackets); CLUSTER: the
                               first seed; else NULL */
    int port;             /**< TCP: 1..65535, 6379 by default; CLUSTER: the
                               first seed's; else 0 */
    const char *path;     /**< UNIX: the socket's path; else NULL */
    const char *user;     /**< the ACL user (Sentinel: the data nodes') */
    const char *password; /**< the password (Sentinel: the data nodes') */
    int db;               /**< the database index, 0 by default */
    /* SENTINEL only (else 0 and NULL): */
    size_t nsentinels;              /**< 1..16 */
    const redq_url_node *sentinels; /**< in the URL's order */
    const char *master_name;        /**< the master's name at the Sentinels */
    const char *sentinel_user;      /**< ?sentinel_user=, or NULL */
    const char *sentinel_password;  /**< ?sentinel_password=, or NULL */
    /* CLUSTER only (else 0 and NULL); db is always 0 there: */
    size_t nnodes;                  /**< seed nodes, 1..64 */
    const redq_url_node *nodes;     /**< in the URL's order */
} redq_url_info;

/**
 * Parse `url` into *out (the forms the options' url accepts, by the same
 * parser the handles use).
 *
 * 0            parsed; release *out with redq_url_info_free()
 * REDQ_EINVAL  url or out is NULL, or the URL is invalid: `err` (errlen
 *              bytes, NUL-terminated; may be NULL when errlen is 0) says
 *              why, e.g. "port 70000 out of range 1-65535"
 * REDQ_ENOMEM  out of memory
 * On failure *out is zeroed and owns nothing (freeing it is harmless).
 */
REDQ_API int redq_url_parse(const char *url, redq_url_info *out, char *err,
                            size_t errlen);

/** Release the strings of a parsed URL and zero it. Safe on a zeroed one
 *  and on NULL. */
REDQ_API void redq_url_info_free(redq_url_info *u);

#ifdef __cplusplus
}
#endif

#endif /* REDQ_H */
