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
#define REDQ__UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define REDQ__PRINTF(f, a)
#define REDQ__LIKELY(x) (x)
#define REDQ__UNLIKELY(x) (x)
#endif

/* Redis refuses bulk strings above proto-max-bulk-len (512 MiB default). */
#define REDQ__MAX_BULK ((size_t)512 * 1024 * 1024)
/* Queue names are Redis keys; keep them to something sane. */
#define REDQ__MAX_QUEUE_NAME 1024

/* ---- time (lib/log.c) -------------------------------------------------- */

/** Monotonic clock in microseconds. */
uint64_t redq__now_us(void);

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

/** Map a Redis error reply ("WRONGTYPE ...", "NOAUTH ...") to a REDQ_E*. */
int redq__err_from_reply(const char *str, size_t len);

/* ---- options (lib/options.c) ------------------------------------------- */

/** Check every field of `opts`; on a bad one return REDQ_EINVAL and write why
 *  into err (errlen bytes, NUL-terminated). */
int redq__options_check(const redq_options *opts, char *err, size_t errlen);

struct redq__url;
struct redq__conn_config;

/** What every handle's *_new does first: make its logger (*log, naming
 *  `who`, e.g. "producer"), check the options, parse the URL into *url
 *  (caller frees with redq__url_free), and on failure log why.
 *  Returns 0, REDQ_EINVAL or REDQ_ENOMEM. */
int redq__options_prepare(const redq_options *opts, struct redq__url *url,
                          redq__logger *log, const char *who);

/** Fill a connection config from options, a parsed URL and a logger (all
 *  borrowed). */
void redq__conn_config_init(struct redq__conn_config *cfg,
                            const redq_options *opts,
                            const struct redq__url *url,
                            const redq__logger *log);

/* ---- URLs (lib/url.c) -------------------------------------------------- */

typedef struct redq__url {
    int is_unix;    /* 1 for unix://, 0 for redis:// */
    char *host;     /* redis://: name or IP literal, no brackets; else NULL */
    int port;       /* redis://: 1..65535 (default 6379); else 0 */
    char *path;     /* unix://: socket path, decoded; else NULL */
    char *user;     /* ACL user name, decoded; NULL when none */
    char *password; /* decoded; NULL when none */
    int db;         /* database index, 0 by default */
} redq__url;

/**
 * Parse `url` (see redq_options.url for the forms) into *out, whose strings
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

/* ---- arena-built replies (lib/reply.c) -------------------------------- */

typedef struct redq__arena redq__arena;
redq__arena *redq__arena_new(void);
void redq__arena_free(redq__arena *a);
/** Make `reader` (a hiredis redisReader*, before it parsed anything) build
 *  its replies in `a`: plain redisReply structures, rewound when hiredis
 *  frees each root reply. `a` must outlive the reader. */
void redq__arena_attach(redq__arena *a, void *reader);

/* ---- connection (lib/conn.c) ------------------------------------------- */

/*
 * A connection to one Redis server that redoes itself: resolve, connect,
 * handshake (AUTH, SELECT, CLIENT SETNAME, INFO server), ready; on any
 * failure it drops everything and tries again after a backoff. Commands are
 * only accepted while ready. Every command gets exactly one reply callback:
 * with the reply, or with NULL when the connection went away first
 * ("outcome unknown").
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
    int want_client_id;       /* learn CLIENT ID in the handshake */
    int arena_replies;        /* build replies in an arena (lib/reply.c) */
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
/** Like redq__conn_send with an argv (for rare commands). */
int redq__conn_sendv(redq__conn *c, int argc, const char **argv,
                     const size_t *argvlen, int extra_timeout_ms,
                     redq__reply_cb cb, void *arg);
int redq__conn_ready(const redq__conn *c);
/** Server version as major*10000+minor*100+patch, 0 when unknown. */
int redq__conn_server_version(const redq__conn *c);
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
int redq__conn_last_code(const redq__conn *c);

#endif /* REDQ_PRIVATE_H */
