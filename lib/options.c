/*
 * Option defaults and their validation. Defaults live here and nowhere else;
 * redq.h documents each next to its field.
 *
 * Three public structs (producer, consumer, admin) come in; one internal
 * struct, redq__options, goes out to the rest of lib/.
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

/* The defaults, in the library's own layout. */
void redq__options_defaults(redq__options *opts)
{
    memset(opts, 0, sizeof *opts);

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
    opts->message_timeout_ms = 30000;

    opts->pool_size = 1;
    opts->pop_batch = 1024;
    opts->max_unacked = 4096;
    opts->pop_timeout_ms = 5000;
    opts->stop_timeout_ms = 30000;
    opts->pop_mode = REDQ_POP_AUTO;

    opts->guarantee = REDQ_AT_LEAST_ONCE;
    opts->visibility_timeout_ms = 30000;
    opts->max_attempts = 5;
    opts->retry_base_ms = 1000;
    opts->retry_max_ms = 60000;
    opts->consumer_ttl_ms = 60000;
    opts->promote_interval_ms = 200;

    opts->min_replicas = 0;
    opts->replica_timeout_ms = 1000;
}

/*
 * The public structs and the internal one, field by field. Each public
 * struct starts with `version` and the same connection block, so one macro
 * copies that block whichever struct it is (either way: defaults into a
 * public struct, a public struct into redq__options).
 */
#define COPY_CONN(dst, src)                                                    \
    do {                                                                       \
        (dst)->url = (src)->url;                                               \
        (dst)->password = (src)->password;                                     \
        (dst)->client_name = (src)->client_name;                               \
        (dst)->connect_timeout_ms = (src)->connect_timeout_ms;                 \
        (dst)->command_timeout_ms = (src)->command_timeout_ms;                 \
        (dst)->reconnect_min_ms = (src)->reconnect_min_ms;                     \
        (dst)->reconnect_max_ms = (src)->reconnect_max_ms;                     \
        (dst)->log = (src)->log;                                               \
        (dst)->log_level = (src)->log_level;                                   \
        (dst)->log_user = (src)->log_user;                                     \
        (dst)->errbuf = (src)->errbuf;                                         \
        (dst)->errbuf_size = (src)->errbuf_size;                               \
    } while (0)

/* One field, public `pf` <-> internal `inf`; `to_pub` picks the way. */
#define F(pf, inf)                                                             \
    do {                                                                       \
        if (to_pub)                                                            \
            pub->pf = in->inf;                                                 \
        else                                                                   \
            in->inf = pub->pf;                                                 \
    } while (0)

/* Producer: public <-> internal. */
static void producer_copy(redq_producer_options *pub, redq__options *in,
                          int to_pub)
{
    if (to_pub)
        COPY_CONN(pub, in);
    else
        COPY_CONN(in, pub);
    F(on_stats, on_stats);
    F(on_stats_user, stats_user);
    F(stats_interval_ms, stats_interval_ms);
    F(on_report, on_report);
    F(on_report_user, report_user);
    F(on_ready, on_ready);
    F(on_ready_user, ready_user);
    F(batch_max_msgs, batch_max_msgs);
    F(batch_max_bytes, batch_max_bytes);
    F(linger_us, linger_us);
    F(adaptive, adaptive);
    F(max_inflight_batches, max_inflight_batches);
    F(max_pending_msgs, max_pending_msgs);
    F(max_pending_bytes, max_pending_bytes);
    F(max_message_bytes, max_message_bytes);
    F(message_timeout_ms, message_timeout_ms);
    F(max_queue_len, max_queue_len);
    F(min_replicas, min_replicas);
    F(replica_timeout_ms, replica_timeout_ms);
}

static void consumer_copy(redq_consumer_options *pub, redq__options *in,
                          int to_pub)
{
    if (to_pub)
        COPY_CONN(pub, in);
    else
        COPY_CONN(in, pub);
    F(on_stats, on_stats);
    F(on_stats_user, stats_user);
    F(stats_interval_ms, stats_interval_ms);
    F(on_message, on_message);
    F(on_message_user, message_user);
    F(guarantee, guarantee);
    F(pool_size, pool_size);
    F(pop_batch, pop_batch);
    F(max_unacked, max_unacked);
    F(pop_timeout_ms, pop_timeout_ms);
    F(stop_timeout_ms, stop_timeout_ms);
    F(pop_mode, pop_mode);
    F(visibility_timeout_ms, visibility_timeout_ms);
    F(max_attempts, max_attempts);
    F(retry_base_ms, retry_base_ms);
    F(retry_max_ms, retry_max_ms);
    F(consumer_ttl_ms, consumer_ttl_ms);
    F(promote_interval_ms, promote_interval_ms);
}
#undef F

static void admin_copy(redq_admin_options *pub, redq__options *in, int to_pub)
{
    if (to_pub)
        COPY_CONN(pub, in);
    else
        COPY_CONN(in, pub);
}

/*
 * Bytes of each layout: a version's struct ends where the next version's
 * first field starts (when a version 2 is added, version 1's size becomes
 * the offset of its first field, so no tail padding is lost). A new version
 * adds a line here.
 */
size_t redq__producer_options_size(int version)
{
    return version == 1 ? sizeof(redq_producer_options) : 0;
}

size_t redq__consumer_options_size(int version)
{
    return version == 1 ? sizeof(redq_consumer_options) : 0;
}

size_t redq__admin_options_size(int version)
{
    return version == 1 ? sizeof(redq_admin_options) : 0;
}

/* What tells the three structs apart, for the generic code below. */
typedef struct kind {
    const char *who;  /* "producer": names the handle in messages */
    const char *init; /* the init macro, for messages */
    int version;      /* the library's newest */
    size_t (*size)(int version);
} kind;

static const kind K_PRODUCER = {"producer", "redq_producer_options_init()",
                                REDQ_PRODUCER_OPTIONS_VERSION,
                                redq__producer_options_size};
static const kind K_CONSUMER = {"consumer", "redq_consumer_options_init()",
                                REDQ_CONSUMER_OPTIONS_VERSION,
                                redq__consumer_options_size};
static const kind K_ADMIN = {"admin", "redq_admin_options_init()",
                             REDQ_ADMIN_OPTIONS_VERSION,
                             redq__admin_options_size};

/* The newest layout that fits in `size` bytes; 0 when none does. */
static int version_for_size(const kind *k, size_t size)
{
    int v;
    for (v = k->version; v >= 1; v--)
        if (k->size(v) <= size)
            return v;
    return 0;
}

/*
 * Fill the caller's `size` bytes at `opts` from `full` (the library's
 * layout of the same struct, defaults in it). Only the caller's own bytes
 * are written: a program built against an older redq.h has a smaller
 * struct than ours. `version` is every struct's first member.
 */
static void init_sized(const kind *k, void *opts, size_t size,
                       const void *full)
{
    int v = version_for_size(k, size);
    memset(opts, 0, size);
    if (v == 0)
        return; /* version stays 0: *_new refuses it */
    memcpy(opts, full, k->size(v));
    *(int *)opts = v;
}

void redq_producer_options_init_sized(redq_producer_options *opts,
                                      size_t size)
{
    redq_producer_options d;
    redq__options in;
    if (opts == NULL)
        return;
    memset(&d, 0, sizeof d);
    redq__options_defaults(&in);
    producer_copy(&d, &in, 1);
    init_sized(&K_PRODUCER, opts, size, &d);
}

void redq_consumer_options_init_sized(redq_consumer_options *opts,
                                      size_t size)
{
    redq_consumer_options d;
    redq__options in;
    if (opts == NULL)
        return;
    memset(&d, 0, sizeof d);
    redq__options_defaults(&in);
    consumer_copy(&d, &in, 1);
    init_sized(&K_CONSUMER, opts, size, &d);
}

void redq_admin_options_init_sized(redq_admin_options *opts, size_t size)
{
    redq_admin_options d;
    redq__options in;
    if (opts == NULL)
        return;
    memset(&d, 0, sizeof d);
    redq__options_defaults(&in);
    admin_copy(&d, &in, 1);
    init_sized(&K_ADMIN, opts, size, &d);
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

int redq__options_check(const redq__options *o, char *err, size_t errlen)
{
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
    if (o->message_timeout_ms < 0)
        return bad(err, errlen, "options.message_timeout_ms must be >= 0");
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
    if (o->guarantee != REDQ_AT_LEAST_ONCE &&
        o->guarantee != REDQ_AT_MOST_ONCE)
        return bad(err, errlen,
                   "options.guarantee must be REDQ_AT_LEAST_ONCE or "
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
    if (o->min_replicas < 0 || o->min_replicas > 64)
        return bad(err, errlen, "options.min_replicas must be 0..64");
    if (o->replica_timeout_ms <= 0)
        return bad(err, errlen, "options.replica_timeout_ms must be > 0 "
                                "(WAIT 0 would wait forever)");
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

static void put_err(const redq__options *opts, const char *msg)
{
    if (opts->errbuf != NULL && opts->errbuf_size > 0)
        snprintf(opts->errbuf, opts->errbuf_size, "%s", msg);
}

/*
 * How many bytes of the caller's struct to read: its own layout's; for a
 * version newer than ours, our whole struct (structs only grow at the end,
 * so this library's fields are where it expects them, which is enough to
 * log and write errbuf); 0 for a version below 1, whose layout is unknown:
 * no field can be trusted, not even the log callback or errbuf.
 */
static size_t read_size(const kind *k, int version, size_t ours)
{
    if (version > k->version)
        return ours;
    return version < 1 ? 0 : k->size(version);
}

/* The generic half of redq__options_prepare_*(): `full` holds the
 * defaults with the caller's fields (read_size() bytes of them) over them;
 * `version` is the caller's. */
static int prepare(const kind *k, int version, redq__options *full,
                   redq__url *url, redq__logger *log)
{
    char err[512];
    int rc;

    memset(url, 0, sizeof *url);
    log->prefix = k->who;
    log->cb = version >= 1 ? full->log : NULL;
    log->level = version >= 1 ? full->log_level : REDQ_LOG_ERROR;
    log->user = version >= 1 ? full->log_user : NULL;
    if (version < 1 || version > k->version) {
        if (version > k->version) {
            /* Built against a newer header. */
            char msg[200];
            snprintf(msg, sizeof msg,
                     "options.version %d is newer than this library's (%d): "
                     "build against the redq.h of the library you link",
                     version, k->version);
            redq__log(log, REDQ_LOG_ERROR, REDQ_EINVAL, "%s", msg);
            put_err(full, msg);
        } else {
            redq__log(log, REDQ_LOG_ERROR, REDQ_EINVAL,
                      "options.version unknown: fill options with %s",
                      k->init);
        }
        return REDQ_EINVAL;
    }
    if (full->errbuf != NULL && full->errbuf_size > 0)
        full->errbuf[0] = '\0';

    err[0] = '\0';
    rc = redq__options_check(full, err, sizeof err);
    if (rc == 0) {
        char uerr[400];
        uerr[0] = '\0';
        rc = redq__url_parse(url, full->url, uerr, sizeof uerr);
        if (rc != 0)
            snprintf(err, sizeof err, "options.url: %s", uerr);
    }
    if (rc != 0) {
        scrub(err, sizeof err, full->url, full->password);
        redq__log(log, REDQ_LOG_ERROR, rc, "%s", err);
        put_err(full, err);
        return rc;
    }
    return 0;
}

int redq__options_prepare_producer(const redq_producer_options *opts,
                                   redq__options *full, redq__url *url,
                                   redq__logger *log)
{
    redq_producer_options pub;
    redq__options_defaults(full);
    memset(&pub, 0, sizeof pub);
    producer_copy(&pub, full, 1);
    memcpy(&pub, opts, read_size(&K_PRODUCER, opts->version, sizeof pub));
    producer_copy(&pub, full, 0);
    return prepare(&K_PRODUCER, opts->version, full, url, log);
}

int redq__options_prepare_consumer(const redq_consumer_options *opts,
                                   redq__options *full, redq__url *url,
                                   redq__logger *log)
{
    redq_consumer_options pub;
    redq__options_defaults(full);
    memset(&pub, 0, sizeof pub);
    consumer_copy(&pub, full, 1);
    memcpy(&pub, opts, read_size(&K_CONSUMER, opts->version, sizeof pub));
    consumer_copy(&pub, full, 0);
    return prepare(&K_CONSUMER, opts->version, full, url, log);
}

int redq__options_prepare_admin(const redq_admin_options *opts,
                                redq__options *full, redq__url *url,
                                redq__logger *log)
{
    redq_admin_options pub;
    redq__options_defaults(full);
    memset(&pub, 0, sizeof pub);
    admin_copy(&pub, full, 1);
    memcpy(&pub, opts, read_size(&K_ADMIN, opts->version, sizeof pub));
    admin_copy(&pub, full, 0);
    return prepare(&K_ADMIN, opts->version, full, url, log);
}

int redq__new_failed(const redq__options *full, const redq__logger *log,
                     int code, const char *fmt, ...)
{
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (log != NULL)
        redq__log(log, REDQ_LOG_ERROR, code, "%s", msg);
    if (full != NULL)
        put_err(full, msg);
    return code;
}

void redq__conn_config_init(redq__conn_config *cfg, const redq__options *o,
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
