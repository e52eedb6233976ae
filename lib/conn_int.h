/*
 * The connection's insides, shared by lib/conn.c (the connection itself)
 * and lib/sentinel.c (where a redis+sentinel:// connection finds its
 * master). Nothing outside these two files includes this: the rest of
 * lib/ sees redq__conn through lib/redq_private.h only.
 */
#ifndef REDQ_CONN_INT_H
#define REDQ_CONN_INT_H

#include <stdint.h>
#include <sys/time.h>

#include <event2/event.h>
#include <hiredis/async.h>

#include "redq_private.h"

enum conn_state {
    ST_IDLE,
    ST_DISCOVERING, /* asking the sentinels where the master is */
    ST_RESOLVING,
    ST_CONNECTING,
    ST_HANDSHAKE,
    ST_READY,
    ST_BACKOFF
};

/* What a ring entry is, beyond its callback. */
enum {
    P_PLAIN = 0,
    P_AFTER_LOAD = 1 /* follows a lazy SCRIPT LOAD: a NOSCRIPT reply is
                        replaced by the load's own error, if it failed */
};

typedef struct pending {
    redq__reply_cb cb;
    void *arg;
    uint64_t deadline_us;
    unsigned flags; /* P_* */
    uint64_t end_off; /* c->appended once the command was in the output
                         buffer: it has left us when c->appended minus
                         the buffer's length reaches this */
} pending;

/* Handshake failures that are a passing server state, each warned about
 * once (see conn_drop). */
enum {
    TR_LOADING = 1u << 0,
    TR_BUSY = 1u << 1,
    TR_TRYAGAIN = 1u << 2,
    TR_MASTERDOWN = 1u << 3,
    TR_OOM = 1u << 4,
    TR_NOTARGET = 1u << 5 /* a pinned connection: no master known yet */
};

/* conn_drop flags: why an attempt or connection failed, beyond its code. */
enum {
    DROP_PERMANENT = 1u << 8 /* retrying will not help (WRONGPASS, NOPERM) */
    /* the low bits carry a TR_* state for transient failures */
};

struct redq__conn {
    struct event_base *base;
    redisAsyncContext *ac;
    enum conn_state state;

    /* What to connect to, copied from the URL and options. */
    int is_unix;
    char *host;
    char *path;
    int port;
    char *user;
    char *password;
    int db;
    char *client_name;
    int connect_timeout_ms;
    int command_timeout_ms;
    int reconnect_min_ms;
    int reconnect_max_ms;
    const redq__logger *log;

    redq__resolver *resolver;
    redq__arena *arena; /* replies built here when asked for (reply.c) */
    char ip[64];
    char where[300]; /* "host:port" or "unix:/path", for messages */

    struct event *t_state; /* connect deadline, or the backoff delay */
    struct event *t_cmd;   /* reply deadline of the oldest command */
    int t_cmd_armed;

    /* Outstanding commands, oldest first: a ring that grows by doubling. */
    pending *ring;
    size_t ring_cap, ring_head, ring_len;

    int dying; /* hiredis is tearing the context down: refuse sends */
    int handshake_left;
    int attempt; /* consecutive failed attempts, for the backoff */
    uint64_t ready_since_us;
    int server_version;
    int want_client_id;
    int want_version;
    int load_scripts; /* compatibility: SCRIPT LOAD all in the handshake */
    long long client_id;
    uint32_t rng;
    uint64_t activity_us; /* last time bytes came in (see on_reply) */
    long outq_seen;       /* kernel send queue at the last deadline, -1 */
    uint64_t appended;    /* bytes of commands put in this context's output
                             buffer (see mark_appended) */

    /* Lazy script loading (redq__conn_send_script). */
    uint32_t scripts_loaded;  /* bit i: SCRIPT LOAD of script i was sent on
                                 this connection and not refused */
    int load_err_set;         /* the lazy load just answered was refused... */
    char load_err[256];       /* ...with this error, for the next reply */
    char eager_err[256];      /* a handshake SCRIPT LOAD was refused: "" or
                                 its error, given instead of NOSCRIPT */

    unsigned transient_warned; /* TR_* states already logged at WARN */
    int setname_warned;
    int script_warned;
    int version_noted;
    int permanent;             /* last_code will not fix itself */

    int last_code;
    char last_err[256];

    redq__conn_up_cb on_up;
    redq__conn_down_cb on_down;
    redq__conn_down_cb on_fail; /* an attempt failed before ready */
    void *arg;

    /* Sentinel discovery (redis+sentinel:// URLs; see "Discovery" below).
     * host/port/ip/where then name the master last found. */
    int sentinel;
    size_t nsent;
    redq__url_node *sent;      /* the sentinels, copied */
    char *master_name;
    char *sent_user, *sent_password;
    size_t sent_first;         /* whom a round asks first: the last that
                                  answered, or the one after a bad answer */
    size_t sent_tried;         /* asked in this round */
    size_t sent_idx;           /* the one being asked */
    redq__conn *probe;         /* the connection to it */
    redq__conn *probe_dead;    /* to free from the loop, not its callback */
    struct event *ev_probe;    /* zero timer: free probe_dead, then act */
    int probe_next;            /* PROBE_* for ev_probe */
    unsigned round_flags;      /* RF_* seen in this round */
    char round_err[256];       /* the first sentinel failure of the round */
    redq__logger quiet;        /* the probes' logger: they say nothing, the
                                  round says what went wrong */
    redisAsyncContext *watch;  /* SUBSCRIBE +switch-master on a sentinel */
    size_t watch_idx;
    char found[80];            /* "host:port" the sentinels named last */

    /* The target hook (redq__conn_config.target): asked at every attempt. */
    int (*target)(redq__conn *c, char *host, size_t hostlen, int *port,
                  void *arg);
    void *target_arg;
    /* The redirect hook (redq__conn_config.redirect) and the reset it
     * asked for, run from the loop once the replies read are delivered. */
    int (*redirect)(redq__conn *c, const void *reply, void *arg);
    struct event *ev_follow;
    int follow;
};

/* ---- lib/conn.c, for lib/sentinel.c ------------------------------------- */

/** Give up on the current attempt or connection (see lib/conn.c): record
 *  why, drop the context, tell the owner, schedule the next attempt. */
void redq__cn_drop(redq__conn *c, int code, unsigned flags, const char *fmt,
                   ...) REDQ__PRINTF(4, 5);
/** A log line with the credentials blanked out (redq__cn_scrub). */
void redq__cn_log(const redq__conn *c, int level, int code, const char *fmt,
                  ...) REDQ__PRINTF(4, 5);
/** Blank out the ACL user and passwords (>= 3 bytes) in msg, in place. */
void redq__cn_scrub(const redq__conn *c, char *msg);
/** Connect to c->ip / c->path now (the address is resolved). */
void redq__cn_connect_now(redq__conn *c);
/** The resolver's callback of an attempt: connect, or drop with why. */
void redq__cn_resolved_cb(int status, const char *ip, const char *msg,
                          void *arg);
struct timeval redq__cn_tv_ms(long ms);
/** "host:port" or "unix:/path" (or the sentinel master's), for messages. */
const char *redq__cn_where(const redq__conn *c);
/** strdup that passes NULL through (NULL also when out of memory). */
char *redq__cn_strdup(const char *s);
/** Attach a hiredis async context to the loop (lib/conn.c's adapter).
 *  0 or -1. */
int redq__cn_io_attach(redisAsyncContext *ac, struct event_base *base);

/* ---- lib/sentinel.c, for lib/conn.c ------------------------------------- */

/** Start a discovery round (state ST_DISCOVERING): ask the sentinels one
 *  after the other; the first address connects, a round without one
 *  drops the attempt with the most telling reason. */
void redq__sentinel_start(redq__conn *c);
/** Stop using the current probe connection (freed from the loop). */
void redq__sentinel_retire(redq__conn *c);
/** Close the +switch-master watch, if any. */
void redq__sentinel_watch_close(redq__conn *c);
/** ev_probe's callback: free the old probe, then ask the next sentinel or
 *  connect to the master found. */
void redq__sentinel_event_cb(evutil_socket_t fd, short what, void *arg);

#endif /* REDQ_CONN_INT_H */
