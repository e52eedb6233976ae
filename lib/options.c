/*
 * Option defaults and their validation. Defaults live here and nowhere else;
 * redq.h documents each next to its field.
 */
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

void redq_options_init(redq_options *opts)
{
    if (opts == NULL)
        return;
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
    opts->consumer_ttl_ms = 15000;
    opts->promote_interval_ms = 200;
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
    return 0;
}

int redq__options_prepare(const redq_options *opts, redq__url *url,
                          redq__logger *log, const char *who)
{
    char err[256];
    int rc;
    /* An unknown version means an unknown layout: no field can be trusted,
     * not even the log callback. */
    int known = opts->version >= 1 && opts->version <= REDQ_OPTIONS_VERSION;

    log->cb = known ? opts->log : NULL;
    log->level = known ? opts->log_level : REDQ_LOG_ERROR;
    log->user = known ? opts->user : NULL;
    log->prefix = who;
    err[0] = '\0';
    rc = redq__options_check(opts, err, sizeof err);
    if (rc == 0)
        rc = redq__url_parse(url, opts->url, err, sizeof err);
    if (rc != 0)
        redq__log(log, REDQ_LOG_ERROR, rc, "%s", err);
    return rc;
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
