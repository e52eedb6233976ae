/*
 * Option defaults and their validation. Defaults live here and nowhere else;
 * redq.h documents each next to its field.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "redq_private.h"

const char *redq_version(void)
{
#define REDQ__STR2(x) #x
#define REDQ__STR(x) REDQ__STR2(x)
    return REDQ__STR(REDQ_VERSION_MAJOR) "." REDQ__STR(
        REDQ_VERSION_MINOR) "." REDQ__STR(REDQ_VERSION_PATCH);
}

/* The defaults, in the library's own (newest) layout. */
static void defaults(redq_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->version = REDQ_OPTIONS_VERSION;

    opts->url = "redis://127.0.0.1:6379";
    opts->client_name = "redq";
    opts->connect_timeout_ms = 2000;
    opts->command_timeout_ms = 5000;
    opts->reconnect_min_ms = 50;
    opts->reconnect_max_ms = 2000;
    opts->log_level = REDQ_LOG_INFO;

    opts->batch_max_msgs = 1024;
    opts->batch_max_bytes = 1024 * 1024;
    opts->linger_us = 1000;
    opts->adaptive = 1;
    opts->max_inflight_batches = 32;
    opts->max_pending_msgs = 100000;
    opts->max_pending_bytes = 64 * 1024 * 1024;
    opts->max_message_bytes = 16 * 1024 * 1024;
    opts->delivery_timeout_ms = 30000;

    opts->pool_size = 1;
    opts->pop_batch = 1024;
    opts->max_unacked = 4096;
    opts->pop_timeout_ms = 5000;
    opts->stop_timeout_ms = 30000;
    opts->pop_mode = REDQ_POP_AUTO;

    opts->delivery = REDQ_AT_LEAST_ONCE;
    opts->visibility_timeout_ms = 30000;
    opts->max_attempts = 5;
    opts->retry_base_ms = 1000;
    opts->retry_max_ms = 60000;
    opts->consumer_ttl_ms = 60000;
    opts->promote_interval_ms = 200;
}

/*
 * Bytes of each layout: a version's struct ends where the next version's
 * first field starts (every version so far ends on an 8-byte boundary, so
 * there is no tail padding to lose). A new version adds a line here.
 */
size_t redq__options_size(int version)
{
    switch (version) {
    case 1:
        return offsetof(redq_options, errbuf);
    case 2:
        return offsetof(redq_options, on_stats);
    case 3:
        return sizeof(redq_options);
    default:
        return 0;
    }
}

/* The newest layout that fits in `size` bytes; 0 when none does. */
static int version_for_size(size_t size)
{
    int v;
    for (v = REDQ_OPTIONS_VERSION; v >= 1; v--)
        if (redq__options_size(v) <= size)
            return v;
    return 0;
}

void redq_options_init_sized(redq_options *opts, size_t size)
{
    redq_options d;
    int v;

    if (opts == NULL)
        return;
    /* Only the caller's own bytes are written: a program built against an
     * older redq.h has a smaller struct than ours. */
    v = version_for_size(size);
    memset(opts, 0, size);
    if (v == 0)
        return; /* version stays 0: *_new refuses it */
    defaults(&d);
    memcpy(opts, &d, redq__options_size(v));
    opts->version = v;
}

/* The 0.1 entry point: callers built against 0.1's redq.h have exactly the
 * version 1 layout. */
void(redq_options_init)(redq_options *opts)
{
    redq_options_init_sized(opts, redq__options_size(1));
}

static int bad(char *err, size_t errlen, const char *what)
{
    if (err != NULL && errlen > 0)
        snprintf(err, errlen, "%s", what);
    return REDQ_EINVAL;
}

static int name_ok(const char *s)
{
    /* CLIENT SETNAME refuses spaces and newlines; keep to a safe set. */
    for (; *s != '\0'; s++) {
        char ch = *s;
        if (!((ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '-' || ch == '_' ||
              ch == '.' || ch == ':'))
            return 0;
    }
    return 1;
}

int redq__options_check(const redq_options *o, char *err, size_t errlen)
{
    if (o->version < 1 || o->version > REDQ_OPTIONS_VERSION)
        return bad(err, errlen,
                   "options.version unknown: fill options with "
                   "redq_options_init()");
    if (o->url == NULL)
        return bad(err, errlen, "options.url is NULL");
    if (o->client_name != NULL &&
        (strlen(o->client_name) > 128 || !name_ok(o->client_name)))
        return bad(err, errlen,
                   "options.client_name: at most 128 of [A-Za-z0-9-_.:]");
    if (o->connect_timeout_ms <= 0)
        return bad(err, errlen, "options.connect_timeout_ms must be > 0");
    if (o->command_timeout_ms <= 0)
        return bad(err, errlen, "options.command_timeout_ms must be > 0");
    if (o->reconnect_min_ms <= 0 || o->reconnect_max_ms < o->reconnect_min_ms)
        return bad(err, errlen,
                   "options.reconnect_min_ms must be > 0 and <= "
                   "reconnect_max_ms");
    if (o->log_level < REDQ_LOG_ERROR || o->log_level > REDQ_LOG_DEBUG)
        return bad(err, errlen, "options.log_level out of range");
    if (o->batch_max_msgs == 0 || o->batch_max_msgs > 1000000)
        return bad(err, errlen, "options.batch_max_msgs must be 1..1000000");
    if (o->batch_max_bytes < 64 || o->batch_max_bytes > REDQ__MAX_BULK)
        return bad(err, errlen,
                   "options.batch_max_bytes must be 64 B..512 MiB");
    if (o->linger_us > 60u * 1000000u)
        return bad(err, errlen, "options.linger_us must be at most 60 s");
    if (o->max_inflight_batches == 0)
        return bad(err, errlen, "options.max_inflight_batches must be > 0");
    if (o->max_pending_msgs == 0)
        return bad(err, errlen, "options.max_pending_msgs must be > 0");
    if (o->max_pending_bytes == 0)
        return bad(err, errlen, "options.max_pending_bytes must be > 0");
    if (o->max_message_bytes == 0 || o->max_message_bytes > REDQ__MAX_BULK)
        return bad(err, errlen,
                   "options.max_message_bytes must be 1 B..512 MiB (the "
                   "server's proto-max-bulk-len)");
    if (o->delivery_timeout_ms < 0)
        return bad(err, errlen, "options.delivery_timeout_ms must be >= 0");
    if (o->pool_size == 0 || o->pool_size > 1024)
        return bad(err, errlen, "options.pool_size must be 1..1024");
    if (o->pop_batch == 0 || o->pop_batch > 100000)
        return bad(err, errlen, "options.pop_batch must be 1..100000");
    if (o->max_unacked == 0)
        return bad(err, errlen, "options.max_unacked must be > 0");
    if (o->pop_timeout_ms < 10)
        return bad(err, errlen, "options.pop_timeout_ms must be >= 10");
    if (o->stop_timeout_ms < 0)
        return bad(err, errlen, "options.stop_timeout_ms must be >= 0");
    if (o->pop_mode < REDQ_POP_AUTO || o->pop_mode > REDQ_POP_PIPELINED)
        return bad(err, errlen, "options.pop_mode must be a REDQ_POP_* value");
    if (o->delivery != REDQ_AT_LEAST_ONCE && o->delivery != REDQ_AT_MOST_ONCE)
        return bad(err, errlen,
                   "options.delivery must be REDQ_AT_LEAST_ONCE or "
                   "REDQ_AT_MOST_ONCE");
    if (o->visibility_timeout_ms < 10)
        return bad(err, errlen, "options.visibility_timeout_ms must be >= 10");
    if (o->max_attempts < 1 || o->max_attempts > 1000000)
        return bad(err, errlen, "options.max_attempts must be 1..1000000");
    if (o->retry_base_ms < 0 || o->retry_max_ms < o->retry_base_ms)
        return bad(err, errlen,
                   "options.retry_base_ms must be >= 0 and <= retry_max_ms");
    if (o->consumer_ttl_ms < 100)
        return bad(err, errlen, "options.consumer_ttl_ms must be >= 100");
    if (o->promote_interval_ms < 1 || o->promote_interval_ms > 60000)
        return bad(err, errlen,
                   "options.promote_interval_ms must be 1..60000");
    if (o->stats_interval_ms < 0 || o->stats_interval_ms > 86400000)
        return bad(err, errlen,
                   "options.stats_interval_ms must be 0..86400000");
    return 0;
}

/* Does s contain tok (n bytes)? */
static char *find(char *s, const char *tok, size_t n)
{
    for (; *s != '\0'; s++)
        if (strncmp(s, tok, n) == 0)
            return s;
    return NULL;
}

/* Replace every occurrence of tok (n bytes) in msg (cap bytes) by "***". A
 * token of less than 4 bytes is replaced only where it stands quoted, so
 * that a one-letter password does not garble every word that has that
 * letter. */
static void mask(char *msg, size_t cap, const char *tok, size_t n)
{
    char *at = msg;
    if (n == 0)
        return;
    while ((at = find(at, tok, n)) != NULL) {
        size_t rest = strlen(at + n) + 1;
        if (n < 4 && !(at > msg && at[-1] == '"' && at[n] == '"')) {
            at++;
            continue;
        }
        if ((size_t)(at - msg) + 3 >= cap) {
            *at = '\0'; /* no room for the mask: cut the message here */
            return;
        }
        if ((size_t)(at - msg) + 3 + rest > cap)
            rest = cap - (size_t)(at - msg) - 3;
        memmove(at + 3, at + n, rest);
        msg[cap - 1] = '\0';
        memcpy(at, "***", 3);
        at += 3;
    }
}

/*
 * Keep URL user info and passwords out of a message. url.c does not quote
 * user info, but a URL with its host forgotten ("redis://user:secret")
 * parses the secret as a port, so this masks every part of the authority
 * that may be a secret: all of it before the last '@', or, without an '@',
 * everything after its first ':'. And the password option itself.
 */
static void scrub(char *msg, size_t cap, const char *url, const char *pw)
{
    const char *a, *end, *at, *p;

    if (pw != NULL)
        mask(msg, cap, pw, strlen(pw));
    if (url == NULL || (a = strstr(url, "://")) == NULL)
        return;
    a += 3;
    end = a + strcspn(a, "/?#");
    at = NULL;
    for (p = a; p < end; p++)
        if (*p == '@')
            at = p;
    if (at != NULL) {
        mask(msg, cap, a, (size_t)(at - a));
        end = at; /* each ':'-part of the user info too */
    } else {
        a = memchr(a, ':', (size_t)(end - a));
        if (a == NULL)
            return;
        a++;
        mask(msg, cap, a, (size_t)(end - a));
    }
    while (a < end) {
        const char *c = memchr(a, ':', (size_t)(end - a));
        if (c == NULL)
            c = end;
        mask(msg, cap, a, (size_t)(c - a));
        a = c + 1;
    }
}

static void put_err(const redq_options *opts, const char *msg)
{
    if (opts->errbuf != NULL && opts->errbuf_size > 0)
        snprintf(opts->errbuf, opts->errbuf_size, "%s", msg);
}

int redq__options_prepare_full(const redq_options *opts, redq_options *full,
                               redq__url *url, redq__logger *log,
                               const char *who)
{
    char err[512];
    redq_options o;
    int rc;
    /* An unknown version means an unknown layout: no field can be trusted,
     * not even the log callback or errbuf. */
    size_t size = redq__options_size(opts->version);

    memset(url, 0, sizeof *url);
    log->cb = size ? opts->log : NULL;
    log->level = size ? opts->log_level : REDQ_LOG_ERROR;
    log->user = size ? opts->user : NULL;
    log->prefix = who;
    if (size == 0) {
        if (opts->version > REDQ_OPTIONS_VERSION) {
            /* Built against a newer header: structs only grow at the end,
             * so this library's fields are where it expects them. */
            char msg[200];
            snprintf(msg, sizeof msg,
                     "options.version %d is newer than this library's (%d): "
                     "build against the redq.h of the library you link",
                     opts->version, REDQ_OPTIONS_VERSION);
            log->cb = opts->log;
            log->level = opts->log_level;
            log->user = opts->user;
            redq__log(log, REDQ_LOG_ERROR, REDQ_EINVAL, "%s", msg);
            put_err(opts, msg);
        } else {
            redq__log(log, REDQ_LOG_ERROR, REDQ_EINVAL,
                      "options.version unknown: fill options with "
                      "redq_options_init()");
        }
        return REDQ_EINVAL;
    }
    /* Read the caller's layout only; newer fields keep their defaults. */
    defaults(&o);
    memcpy(&o, opts, size);
    o.version = REDQ_OPTIONS_VERSION;
    if (size < redq__options_size(2))
        o.errbuf = NULL;
    else if (o.errbuf != NULL && o.errbuf_size > 0)
        o.errbuf[0] = '\0';

    err[0] = '\0';
    rc = redq__options_check(&o, err, sizeof err);
    if (rc == 0) {
        char uerr[400];
        uerr[0] = '\0';
        rc = redq__url_parse(url, o.url, uerr, sizeof uerr);
        if (rc != 0)
            snprintf(err, sizeof err, "options.url: %s", uerr);
    }
    if (rc != 0) {
        scrub(err, sizeof err, o.url, o.password);
        redq__log(log, REDQ_LOG_ERROR, rc, "%s", err);
        put_err(&o, err);
        return rc;
    }
    if (full != NULL)
        *full = o;
    return 0;
}

int redq__options_prepare(const redq_options *opts, redq__url *url,
                          redq__logger *log, const char *who)
{
    return redq__options_prepare_full(opts, NULL, url, log, who);
}

int redq__new_failed(const redq_options *opts, const redq__logger *log,
                     int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log != NULL)
        redq__log(log, REDQ_LOG_ERROR, code, "%s", msg);
    if (opts != NULL && redq__options_size(opts->version) >=
                            redq__options_size(2))
        put_err(opts, msg);
    return code;
}

void redq__conn_config_init(redq__conn_config *cfg, const redq_options *o,
                            const redq__url *url, const redq__logger *log)
{
    memset(cfg, 0, sizeof *cfg);
    cfg->url = url;
    cfg->password = o->password;
    cfg->client_name = o->client_name;
    cfg->connect_timeout_ms = o->connect_timeout_ms;
    cfg->command_timeout_ms = o->command_timeout_ms;
    cfg->reconnect_min_ms = o->reconnect_min_ms;
    cfg->reconnect_max_ms = o->reconnect_max_ms;
    cfg->log = log;
}

/* ---- caller-allocated stats of any layout ------------------------------ */

/* Undo the rename in redq_private.h: here the public names are defined. */
#undef redq_consumer_get_stats

void redq_consumer_get_stats_sized(const redq_consumer *c,
                                   redq_consumer_stats *st, size_t size)
{
    redq_consumer_stats full;
    if (c == NULL || st == NULL)
        return;
    memset(&full, 0, sizeof full);
    redq__consumer_stats_fill(c, &full);
    if (size > sizeof full) {
        memset((char *)st + sizeof full, 0, size - sizeof full);
        size = sizeof full;
    }
    memcpy(st, &full, size);
}

void(redq_consumer_get_stats)(const redq_consumer *c, redq_consumer_stats *st)
{
    redq_consumer_get_stats_sized(c, st, REDQ__CONSUMER_STATS_V1_SIZE);
}
