/*
 * redq dead list | requeue | purge: a queue's dead letters ({Q}/dead), over
 * the admin connection (admin.c).
 *
 * Every key but the ready list comes from the library's key layout
 * (redq__key, lib/keys.c), and the dead-letter entries are the library's
 * frames (redq__frame_parse, lib/frame.c): the tool never spells a key or
 * a format of its own, so it cannot drift from what consumers write.
 * Moving dead letters is the library's own DEADREQUEUE script, so a
 * requeued message is exactly what a consumer's recovery would make of it:
 * the payload is never decoded, re-encoded or even read by the tool.
 */

#include "cli.h"
#include "redq_private.h" /* redq__frame_parse, redq__script_source, ... */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* `dead list` reads pages of this many entries. */
#define ADMIN_PAGE 100
/* dead list: bodies are shown up to this many characters. */
#define DEAD_BODY_SHOW 160
/* Dead letters moved per DEADREQUEUE call: one script run each, so this
 * bounds how long the server is busy with one. */
#define ADMIN_REQUEUE_BATCH 1000

/* dead purge: KEYS[1]: the dead list. LLEN refuses a non-list before
 * anything is deleted, and the count is of what was deleted. */
static const char purge_lua[] =
    "local n = redis.call('LLEN', KEYS[1])\n"
    "redis.call('UNLINK', KEYS[1])\n"
    "return n\n";

/* "2025-01-31T12:00:00.123Z" for milliseconds since the epoch. */
static void iso_utc_ms(long long ms, char *buf, size_t cap)
{
    long long sec = ms / 1000, rem = ms % 1000;
    time_t t;
    struct tm tm;

    if (rem < 0) {
        rem += 1000;
        sec--;
    }
    t = (time_t)sec;
    if ((long long)t != sec || !gmtime_r(&t, &tm) ||
        strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(buf, cap, "%lld", ms);
        return;
    }
    snprintf(buf + strlen(buf), cap - strlen(buf), ".%03dZ", (int)rem);
}

/* A percent-encoded frame field (reason, queue) decoded into a new string
 * (*out_len bytes, NUL-terminated; it may hold NULs), or NULL. */
static char *pct_decoded(const char *s, size_t len, size_t *out_len)
{
    char *d = malloc(len + 1);

    if (d)
        *out_len = redq__pct_decode(s, len, d);
    return d;
}

/* 0 when `key` is a list or absent; else CLI_RC_FAILED, reported as the
 * WRONGTYPE it is. Checked before a script that would write to it. */
static int admin_check_list(cli_admin *a, const char *key)
{
    const char *argv[2] = {"TYPE", key};
    redisReply *r = cli_admin_cmd(a, 2, argv, NULL);
    int code = 0;

    if (!r || r->type != REDIS_REPLY_STATUS) {
        code = cli_admin_report(a, r, key);
    } else if (strcmp(r->str, "list") != 0 && strcmp(r->str, "none") != 0) {
        fprintf(stderr, "redq: WRONGTYPE %s holds a %s, not a list\n", key,
                r->str);
        code = CLI_RC_FAILED;
    }
    freeReplyObject(r);
    return code;
}

/* SCRIPT LOAD the library's script `which`; its SHA into sha. 0, or -1
 * (reported). */
static int admin_script_load(cli_admin *a, int which, char sha[41])
{
    const char *argv[3] = {"SCRIPT", "LOAD", redq__script_source(which)};
    redisReply *r = cli_admin_cmd(a, 3, argv, NULL);

    if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
        cli_admin_report(a, r, "SCRIPT LOAD");
        freeReplyObject(r);
        return -1;
    }
    memcpy(sha, r->str, 40);
    sha[40] = '\0';
    freeReplyObject(r);
    return 0;
}

/* ---- dead list ------------------------------------------------------------ */

/* One line of `dead list`: INDEX ATTEMPTS DEAD_TS REASON BODY. A value
 * that is not a frame (put there by hand) is shown whole as BODY, and
 * stderr says so. */
static void dead_print(uint64_t index, const redisReply *r, int quiet)
{
    redq__frame f;
    char err[128], ts[48], att[24];
    char *reason = NULL, *body, *dec = NULL;
    int framed = redq__frame_parse(r->str, r->len, &f, err, sizeof err) == 0;
    const char *p = framed ? f.body : r->str;
    size_t n = framed ? f.body_len : r->len, declen;

    snprintf(att, sizeof att, "-");
    snprintf(ts, sizeof ts, "-");
    if (framed) {
        snprintf(att, sizeof att, "%d", f.attempts);
        if (f.dead_ts_ms >= 0)
            iso_utc_ms(f.dead_ts_ms, ts, sizeof ts);
        if (f.reason && (dec = pct_decoded(f.reason, f.reason_len, &declen)))
            reason = cli_escape_text(dec, declen, 0, 1);
    } else if (!quiet) {
        fprintf(stderr,
                "redq: dead letter %llu is not a redq frame (%s): shown "
                "whole as BODY\n",
                (unsigned long long)index, err);
    }
    /* A payload that is not UTF-8 is binary: every byte >= 0x80 escaped. */
    body = cli_escape_text(p, n, DEAD_BODY_SHOW, cli_is_utf8(p, n));
    printf("%llu\t%s\t%s\t%s\t%s\n", (unsigned long long)index, att, ts,
           reason && reason[0] ? reason : "-", body ? body : "-");
    free(dec);
    free(reason);
    free(body);
}

/* One line of `dead list --json`: {"index":N,"id":..,"attempts":..,"ts":..,
 * "dead_reason":..,"dead_ts":..,"queue":..,"body"|"body_b64":..}, fields
 * the frame lacks omitted; for a value that is not a frame, "error" and
 * the whole value as the body. -1 when out of memory. */
static int dead_print_json(uint64_t index, const redisReply *r)
{
    redq__frame f;
    char err[128];
    int framed = redq__frame_parse(r->str, r->len, &f, err, sizeof err) == 0;
    const char *p = framed ? f.body : r->str;
    size_t n = framed ? f.body_len : r->len;

    printf("{\"index\":%llu", (unsigned long long)index);
    if (!framed) {
        fputs(",\"error\":", stdout);
        cli_put_json_string(stdout, err);
    } else {
        const char *const names[2] = {"dead_reason", "queue"};
        const char *vals[2] = {f.reason, f.queue};
        size_t lens[2] = {f.reason_len, f.queue_len};
        int i;

        if (f.id[0]) {
            fputs(",\"id\":", stdout);
            cli_put_json_string(stdout, f.id);
        }
        printf(",\"attempts\":%d", f.attempts);
        if (f.ts_ms >= 0)
            printf(",\"ts\":%lld", f.ts_ms);
        if (f.dead_ts_ms >= 0)
            printf(",\"dead_ts\":%lld", f.dead_ts_ms);
        for (i = 0; i < 2; i++) {
            size_t dl;
            char *d;

            if (!vals[i])
                continue;
            if (!(d = pct_decoded(vals[i], lens[i], &dl)))
                return -1;
            printf(",\"%s\":", names[i]);
            cli_put_json_bytes(stdout, d, dl);
            free(d);
        }
    }
    if (cli_is_utf8(p, n)) {
        fputs(",\"body\":", stdout);
        cli_put_json_bytes(stdout, p, n);
    } else {
        char *b = malloc(4 * ((n + 2) / 3) + 1);

        if (!b)
            return -1;
        redq__b64_encode(p, n, b);
        printf(",\"body_b64\":\"%s\"", b);
        free(b);
    }
    fputs("}\n", stdout);
    return 0;
}

int cli_cmd_dead_list(const cli_options *o)
{
    uint64_t limit = o->has_count ? o->count : UINT64_MAX, idx = 0;
    cli_admin a;
    char *key;
    int code;

    if ((code = cli_admin_check_queues(o)) != 0)
        return code;
    if (limit == 0)
        return CLI_RC_OK; /* like head -n 0 */
    if (!(key = cli_queue_key(o->args[0], "dead")))
        return CLI_RC_FAILED;
    if ((code = cli_admin_connect(&a, o)) != 0) {
        free(key);
        return code;
    }
    while (idx < limit) {
        uint64_t page = limit - idx < ADMIN_PAGE ? limit - idx : ADMIN_PAGE;
        char start[24], stop[24];
        const char *argv[4] = {"LRANGE", key, start, stop};
        redisReply *r;
        size_t i, n;

        snprintf(start, sizeof start, "%llu", (unsigned long long)idx);
        snprintf(stop, sizeof stop, "%llu",
                 (unsigned long long)(idx + page - 1));
        r = cli_admin_cmd(&a, 4, argv, NULL);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            code = cli_admin_report(&a, r, key);
            freeReplyObject(r);
            break;
        }
        for (i = 0; i < r->elements && code == CLI_RC_OK; i++) {
            const redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_STRING)
                continue;
            if (!o->json) {
                dead_print(idx + i, e, o->quiet);
            } else if (dead_print_json(idx + i, e) < 0) {
                fprintf(stderr, "redq: out of memory\n");
                code = CLI_RC_FAILED;
            }
        }
        n = r->elements;
        freeReplyObject(r);
        if (code != CLI_RC_OK || ferror(stdout) || n < page)
            break;
        idx += n;
    }
    if (cli_admin_output_ok() < 0)
        code = CLI_RC_FAILED;
    cli_admin_close(&a);
    free(key);
    return code;
}

/* ---- dead requeue, dead purge --------------------------------------------- */

/* One DEADREQUEUE call: at most `max` of the oldest dead letters to the
 * back of due. Returns how many moved, and in *left how many dead letters
 * remain; -1 (reported) on failure. NOSCRIPT (the server's script cache
 * was flushed since the load) loads it again, once. */
static long long requeue_batch(cli_admin *a, char sha[41], const char *dead,
                               const char *due, uint64_t max,
                               long long *left)
{
    char count[24];
    int tries;

    snprintf(count, sizeof count, "%llu", (unsigned long long)max);
    for (tries = 0; tries < 2; tries++) {
        const char *argv[6] = {"EVALSHA", sha, "2", dead, due, count};
        redisReply *r = cli_admin_cmd(a, 6, argv, NULL);
        long long moved;

        if (r && r->type == REDIS_REPLY_ERROR && tries == 0 &&
            !strncmp(r->str, "NOSCRIPT", 8)) {
            freeReplyObject(r);
            if (admin_script_load(a, REDQ__SCRIPT_DEADREQUEUE, sha) < 0)
                return -1;
            continue;
        }
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_INTEGER ||
            r->element[1]->type != REDIS_REPLY_INTEGER) {
            cli_admin_report(a, r, dead);
            freeReplyObject(r);
            return -1;
        }
        moved = r->element[0]->integer;
        *left = r->element[1]->integer;
        freeReplyObject(r);
        return moved;
    }
    return -1; /* not reached: the second try returns */
}

int cli_cmd_dead_requeue(const cli_options *o)
{
    uint64_t limit = o->count, moved = 0;
    char *dead = NULL, *due = NULL, sha[41];
    cli_admin a;
    int code;

    if ((code = cli_admin_check_queues(o)) != 0)
        return code;
    if (!(dead = cli_queue_key(o->args[0], "dead")) ||
        !(due = cli_queue_key(o->args[0], "due"))) {
        free(dead);
        return CLI_RC_FAILED;
    }
    if ((code = cli_admin_connect(&a, o)) != 0) {
        free(dead);
        free(due);
        return code;
    }
    /* DEADREQUEUE pops before it pushes: a due key of another type would
     * fail the push after the pop. Refuse before anything moves. */
    code = admin_check_list(&a, due);
    if (code == CLI_RC_OK && o->all) {
        /* Those there are now: a stream of new dead letters (a requeued
         * poison message dying again) must not keep this going. */
        const char *argv[2] = {"LLEN", dead};
        redisReply *r = cli_admin_cmd(&a, 2, argv, NULL);

        if (!r || r->type != REDIS_REPLY_INTEGER)
            code = cli_admin_report(&a, r, dead);
        else
            limit = (uint64_t)r->integer;
        freeReplyObject(r);
    }
    if (code == CLI_RC_OK && limit > 0 &&
        admin_script_load(&a, REDQ__SCRIPT_DEADREQUEUE, sha) < 0)
        code = CLI_RC_FAILED;
    while (code == CLI_RC_OK && moved < limit) {
        uint64_t batch = limit - moved < ADMIN_REQUEUE_BATCH
                             ? limit - moved
                             : ADMIN_REQUEUE_BATCH;
        long long left = 0;
        long long n = requeue_batch(&a, sha, dead, due, batch, &left);

        if (n < 0) {
            code = CLI_RC_FAILED;
            break;
        }
        moved += (uint64_t)n;
        if ((uint64_t)n < batch || left == 0)
            break; /* the list ran out */
    }
    if (!o->quiet && (code == CLI_RC_OK || moved > 0))
        printf("requeued %llu\n", (unsigned long long)moved);
    if (cli_admin_output_ok() < 0 && code == CLI_RC_OK)
        code = CLI_RC_FAILED;
    cli_admin_close(&a);
    free(dead);
    free(due);
    return code;
}

int cli_cmd_dead_purge(const cli_options *o)
{
    const char *argv[4];
    char *dead;
    cli_admin a;
    redisReply *r;
    int code;

    if ((code = cli_admin_check_queues(o)) != 0)
        return code;
    if (!(dead = cli_queue_key(o->args[0], "dead")))
        return CLI_RC_FAILED;
    if ((code = cli_admin_connect(&a, o)) != 0) {
        free(dead);
        return code;
    }
    argv[0] = "EVAL";
    argv[1] = purge_lua;
    argv[2] = "1";
    argv[3] = dead;
    r = cli_admin_cmd(&a, 4, argv, NULL);
    if (!r || r->type != REDIS_REPLY_INTEGER)
        code = cli_admin_report(&a, r, dead);
    else if (!o->quiet)
        printf("purged %lld\n", r->integer);
    freeReplyObject(r);
    if (cli_admin_output_ok() < 0 && code == CLI_RC_OK)
        code = CLI_RC_FAILED;
    cli_admin_close(&a);
    free(dead);
    return code;
}

