/*
 * redq stats: per queue, the ready / due / processing / delayed / dead
 * counts, live and registered consumers (one Lua script, so one moment's
 * numbers), then a SCAN for orphaned processing lists; printed as a table
 * or as JSON. Over the admin connection (admin.c); every key from the
 * library's layout (redq__key).
 */
#include "cli.h"
#include "redq_private.h" /* redq__key */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* SCAN's COUNT hint for stats' look for orphaned processing lists. */
#define ADMIN_SCAN_COUNT 1000
/* stats: reread the consumers set this many times at most when it changes
 * between reading it and counting. */
#define STATS_TRIES 3

/*
 * stats, one queue: KEYS: Q, due, delayed, dead, consumers, then hb:<h>,
 * proc:<h>, fproc:<h> for each holder h in ARGV (as SMEMBERS read them).
 * Holders that left the set meanwhile are skipped. Returns {ready, due,
 * processing, delayed, dead, live, registered, holders counted}: the
 * caller reads the set again when holders joined meanwhile (counted <
 * registered). One script, so one queue's numbers are one moment's.
 */
static const char stats_lua[] =
    "local reg = redis.call('SCARD', KEYS[5])\n"
    "local live, proc, seen = 0, 0, 0\n"
    "for i = 1, #ARGV do\n"
    "  if redis.call('SISMEMBER', KEYS[5], ARGV[i]) == 1 then\n"
    "    local k = 3 * i + 3\n"
    "    seen = seen + 1\n"
    "    if redis.call('EXISTS', KEYS[k]) == 1 then live = live + 1 end\n"
    "    proc = proc + redis.call('LLEN', KEYS[k + 1]) +\n"
    "      redis.call('LLEN', KEYS[k + 2])\n"
    "  end\n"
    "end\n"
    "return {redis.call('LLEN', KEYS[1]), redis.call('LLEN', KEYS[2]), proc,\n"
    "        redis.call('ZCARD', KEYS[3]), redis.call('LLEN', KEYS[4]),\n"
    "        live, reg, seen}\n";

enum {
    ST_READY,
    ST_DUE,
    ST_PROC,
    ST_DELAYED,
    ST_DEAD,
    ST_LIVE,
    ST_REG,
    ST_ORPHANED,
    ST_N
};

static const char *const stat_names[ST_N] = {
    "ready", "due",        "processing", "delayed",
    "dead",  "consumers", "registered", "orphaned"};
static const char *const stat_heads[ST_N] = {
    "READY", "DUE",       "PROCESSING", "DELAYED",
    "DEAD",  "CONSUMERS", "REGISTERED", "ORPHANED"};

/* A processing list whose holder is not in the consumers set: no reaper
 * looks at it, so its messages are never delivered again. */
typedef struct orphan {
    char *key;
    long long messages;
} orphan;

typedef struct qstats {
    long long val[ST_N];
    orphan *orphans;
    size_t norphans, cap;
} qstats;

static void qstats_free(qstats *st)
{
    size_t i;

    for (i = 0; i < st->norphans; i++)
        free(st->orphans[i].key);
    free(st->orphans);
    memset(st, 0, sizeof *st);
}

/* A holder id as redq makes them: "<consumer id>.<connection>", hex
 * digits, one dot, decimal digits, at most 32 bytes (lib/reliable.c). So a
 * key that merely ends like a processing list (the dead list of a queue
 * named "{a}:proc" is "{a}:proc:dead") is not taken for one of "{a}"'s. */
static int valid_holder(const char *s, size_t len)
{
    size_t i = 0, hex, dig;

    if (len == 0 || len > 32)
        return 0;
    while (i < len && ((s[i] >= '0' && s[i] <= '9') ||
                       (s[i] >= 'a' && s[i] <= 'f')))
        i++;
    hex = i;
    if (hex == 0 || i == len || s[i++] != '.')
        return 0;
    dig = i;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    return i == len && i > dig;
}

/* The holder of a processing list of the queue whose keys start with
 * `prefix` ("{Q}/"): the key is prefix "proc:" or "fproc:" holder. NULL
 * when `key` is no such list. */
static const char *proc_holder(const char *key, size_t len,
                               const char *prefix, size_t plen,
                               size_t *hlen)
{
    const char *s = key + plen;
    size_t n = len - plen, k;

    if (len <= plen || memcmp(key, prefix, plen) != 0)
        return NULL;
    if (n > 5 && !memcmp(s, "proc:", 5))
        k = 5;
    else if (n > 6 && !memcmp(s, "fproc:", 6))
        k = 6;
    else
        return NULL;
    if (!valid_holder(s + k, n - k))
        return NULL;
    *hlen = n - k;
    return s + k;
}

/* `s` with Redis glob's special characters (* ? [ ] \) escaped, then
 * `tail` as it is (a pattern). A new string, or NULL. */
static char *glob_escape(const char *s, const char *tail)
{
    size_t n = strlen(s), i, o = 0;
    char *out = malloc(2 * n + strlen(tail) + 1);

    if (!out)
        return NULL;
    for (i = 0; i < n; i++) {
        if (strchr("*?[]\\", s[i]))
            out[o++] = '\\';
        out[o++] = s[i];
    }
    strcpy(out + o, tail);
    return out;
}

static int orphan_add(qstats *st, const char *key, size_t len)
{
    size_t i;

    for (i = 0; i < st->norphans; i++) /* SCAN may return a key twice */
        if (strlen(st->orphans[i].key) == len &&
            !memcmp(st->orphans[i].key, key, len))
            return 0;
    if (st->norphans == st->cap) {
        size_t cap = st->cap ? 2 * st->cap : 8;
        orphan *o = realloc(st->orphans, cap * sizeof *o);

        if (!o)
            return -1;
        st->orphans = o;
        st->cap = cap;
    }
    if (!(st->orphans[st->norphans].key = malloc(len + 1)))
        return -1;
    memcpy(st->orphans[st->norphans].key, key, len);
    st->orphans[st->norphans].key[len] = '\0';
    st->orphans[st->norphans].messages = 0;
    st->norphans++;
    return 0;
}

/*
 * Find the queue's processing lists whose holder is not registered:
 * SCAN MATCH "<prefix>*proc:*" (the prefix glob-escaped: a queue name may
 * hold * ? [), filtered to exactly proc:<holder> / fproc:<holder>; then,
 * for each, whether its holder is in the consumers set now (a holder
 * registers before it takes anything) and how many messages it holds.
 * Holders in the set are counted by the stats script instead. SCAN walks
 * the whole keyspace, in steps of ADMIN_SCAN_COUNT keys. 0, or CLI_RC_FAILED
 * (reported).
 */
static int stats_orphans(cli_admin *a, const char *queue, const char *consumers,
                         qstats *st)
{
    char *prefix = cli_queue_key(queue, ""), *pattern = NULL, cursor[32] = "0";
    char cnt[16];
    size_t plen, i, kept = 0;
    int code = CLI_RC_OK;

    if (!prefix)
        return CLI_RC_FAILED;
    plen = strlen(prefix);
    if (!(pattern = glob_escape(prefix, "*proc:*"))) {
        fprintf(stderr, "redq: out of memory\n");
        free(prefix);
        return CLI_RC_FAILED;
    }
    snprintf(cnt, sizeof cnt, "%d", ADMIN_SCAN_COUNT);
    do {
        const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", cnt};
        redisReply *r = cli_admin_cmd(a, 6, argv, NULL), *keys;

        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_ARRAY ||
            r->element[0]->len >= sizeof cursor) {
            code = cli_admin_report(a, r, "SCAN");
            freeReplyObject(r);
            break;
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
        keys = r->element[1];
        for (i = 0; i < keys->elements; i++) {
            const redisReply *k = keys->element[i];
            size_t hl;

            if (k->type == REDIS_REPLY_STRING &&
                proc_holder(k->str, k->len, prefix, plen, &hl) &&
                orphan_add(st, k->str, k->len) < 0) {
                fprintf(stderr, "redq: out of memory\n");
                code = CLI_RC_FAILED;
            }
        }
        freeReplyObject(r);
    } while (code == CLI_RC_OK && strcmp(cursor, "0") != 0);

    /* Keep the candidates whose holder is unregistered and that hold
     * messages (a key of another type is not redq's: skipped). */
    for (i = 0; i < st->norphans; i++) {
        orphan *o = &st->orphans[i];
        int keep = 0;

        if (code == CLI_RC_OK) {
            size_t hl;
            const char *h = proc_holder(o->key, strlen(o->key), prefix, plen,
                                        &hl);
            char holder[40];
            const char *ism[3] = {"SISMEMBER", consumers, holder};
            const char *llen[2] = {"LLEN", o->key};
            redisReply *m, *l = NULL;

            memcpy(holder, h, hl); /* valid_holder: at most 32 bytes */
            holder[hl] = '\0';
            m = cli_admin_cmd(a, 3, ism, NULL);
            if (!m || m->type != REDIS_REPLY_INTEGER) {
                code = cli_admin_report(a, m, consumers);
            } else if (m->integer == 0) {
                l = cli_admin_cmd(a, 2, llen, NULL);
                if (!l) {
                    code = cli_admin_report(a, NULL, o->key);
                } else if (l->type == REDIS_REPLY_INTEGER && l->integer > 0) {
                    o->messages = l->integer;
                    keep = 1;
                }
            }
            freeReplyObject(m);
            freeReplyObject(l);
        }
        if (keep)
            st->orphans[kept++] = *o;
        else
            free(o->key);
    }
    st->norphans = kept;
    for (i = 0; i < kept; i++)
        st->val[ST_ORPHANED] += st->orphans[i].messages;
    free(pattern);
    free(prefix);
    return code;
}

/* A members' entry redq can have keys for: a string without NUL. */
static int usable_member(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING && strlen(e->str) == e->len;
}

/* The key kind:holder ("proc:<h>") of `queue`, or NULL. */
static char *holder_key(const char *queue, const char *kind,
                        const char *holder)
{
    size_t kl = strlen(kind), hl = strlen(holder);
    char *sfx = malloc(kl + hl + 1), *k;

    if (!sfx)
        return NULL;
    memcpy(sfx, kind, kl);
    memcpy(sfx + kl, holder, hl + 1);
    k = redq__key(queue, strlen(queue), sfx);
    free(sfx);
    return k;
}

/* One run of the stats script for the holders `mem` (SMEMBERS of the
 * consumers set); base: Q, due, delayed, dead, consumers. *again is set
 * when holders joined the set after it was read. 0, or CLI_RC_FAILED
 * (reported). */
static int stats_run(cli_admin *a, const char *queue, char *const base[5],
                     const redisReply *mem, qstats *st, int *again)
{
    static const char *const kinds[3] = {"hb:", "proc:", "fproc:"};
    size_t n = 0, i, j, nkeys;
    char **hkeys, nk[24];
    const char **argv;
    redisReply *r = NULL;
    int code = CLI_RC_OK, k;

    for (i = 0; i < mem->elements; i++)
        n += (size_t)usable_member(mem->element[i]);
    nkeys = 5 + 3 * n;
    hkeys = calloc(3 * n + 1, sizeof *hkeys);
    argv = calloc(3 + nkeys + n, sizeof *argv);
    if (!hkeys || !argv)
        goto oom;
    snprintf(nk, sizeof nk, "%zu", nkeys);
    argv[0] = "EVAL";
    argv[1] = stats_lua;
    argv[2] = nk;
    for (k = 0; k < 5; k++)
        argv[3 + k] = base[k];
    for (i = 0, j = 0; i < mem->elements; i++) {
        const redisReply *e = mem->element[i];

        if (!usable_member(e))
            continue;
        for (k = 0; k < 3; k++) {
            char *key = holder_key(queue, kinds[k], e->str);

            if (!key)
                goto oom;
            hkeys[3 * j + (size_t)k] = key;
            argv[8 + 3 * j + (size_t)k] = key;
        }
        argv[3 + nkeys + j] = e->str;
        j++;
    }
    r = cli_admin_cmd(a, (int)(3 + nkeys + n), argv, NULL);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 8) {
        code = cli_admin_report(a, r, queue);
        goto out;
    }
    for (k = 0; k < 8; k++)
        if (r->element[k]->type != REDIS_REPLY_INTEGER) {
            code = cli_admin_report(a, r, queue);
            goto out;
        }
    st->val[ST_READY] = r->element[0]->integer;
    st->val[ST_DUE] = r->element[1]->integer;
    st->val[ST_PROC] = r->element[2]->integer;
    st->val[ST_DELAYED] = r->element[3]->integer;
    st->val[ST_DEAD] = r->element[4]->integer;
    st->val[ST_LIVE] = r->element[5]->integer;
    st->val[ST_REG] = r->element[6]->integer;
    *again = r->element[7]->integer + (long long)(mem->elements - n) <
             st->val[ST_REG];
    goto out;
oom:
    fprintf(stderr, "redq: out of memory\n");
    code = CLI_RC_FAILED;
out:
    if (hkeys)
        for (i = 0; i < 3 * n; i++)
            free(hkeys[i]);
    free(hkeys);
    free(argv);
    freeReplyObject(r);
    return code;
}

/* The numbers of one queue: the stats script (every key from the
 * library's layout), then the orphan search. 0, or CLI_RC_FAILED (reported). */
static int stats_queue(cli_admin *a, const char *queue, qstats *st)
{
    static const char *const sfx[4] = {"due", "delayed", "dead",
                                       "consumers"};
    char *base[5] = {(char *)queue, NULL, NULL, NULL, NULL};
    int code = CLI_RC_OK, again = 1, tries, k;

    for (k = 0; k < 4 && code == CLI_RC_OK; k++)
        if (!(base[k + 1] = cli_queue_key(queue, sfx[k])))
            code = CLI_RC_FAILED;
    for (tries = 0; code == CLI_RC_OK && again && tries < STATS_TRIES;
         tries++) {
        const char *sm[2] = {"SMEMBERS", base[4]};
        redisReply *mem = cli_admin_cmd(a, 2, sm, NULL);

        if (!mem || mem->type != REDIS_REPLY_ARRAY)
            code = cli_admin_report(a, mem, base[4]);
        else
            code = stats_run(a, queue, base, mem, st, &again);
        freeReplyObject(mem);
    }
    if (code == CLI_RC_OK)
        code = stats_orphans(a, queue, base[4], st);
    for (k = 1; k < 5; k++)
        free(base[k]);
    return code;
}

int cli_cmd_stats(const cli_options *o)
{
    qstats *st = NULL;
    char **names = NULL;
    size_t qw = strlen("QUEUE"), w[ST_N], norph = 0, j;
    cli_admin a;
    int code, i, k;

    if ((code = cli_admin_check_queues(o)) != 0)
        return code;
    if ((code = cli_admin_connect(&a, o)) != 0)
        return code;
    st = calloc((size_t)o->nargs, sizeof *st);
    names = calloc((size_t)o->nargs, sizeof *names);
    if (!st || !names) {
        fprintf(stderr, "redq: out of memory\n");
        code = CLI_RC_FAILED;
        goto out;
    }
    /* All first: a failure prints no half table. */
    for (i = 0; i < o->nargs && code == CLI_RC_OK; i++) {
        code = stats_queue(&a, o->args[i], &st[i]);
        norph += st[i].norphans;
    }
    if (code != CLI_RC_OK)
        goto out;

    if (o->json) {
        fputs("{\"queues\":[", stdout);
        for (i = 0; i < o->nargs; i++) {
            fputs(i ? ",{\"queue\":" : "{\"queue\":", stdout);
            cli_put_json_string(stdout, o->args[i]);
            for (k = 0; k < ST_N; k++)
                printf(",\"%s\":%lld", stat_names[k], st[i].val[k]);
            fputs(",\"orphans\":[", stdout);
            for (j = 0; j < st[i].norphans; j++) {
                fputs(j ? ",{\"key\":" : "{\"key\":", stdout);
                cli_put_json_string(stdout, st[i].orphans[j].key);
                printf(",\"messages\":%lld}", st[i].orphans[j].messages);
            }
            fputs("]}", stdout);
        }
        fputs("]}\n", stdout);
    } else {
        char num[24];

        for (k = 0; k < ST_N; k++)
            w[k] = strlen(stat_heads[k]);
        for (i = 0; i < o->nargs; i++) {
            names[i] = cli_escape_text(o->args[i], strlen(o->args[i]), 0, 1);
            if (!names[i]) {
                fprintf(stderr, "redq: out of memory\n");
                code = CLI_RC_FAILED;
                goto out;
            }
            if (strlen(names[i]) > qw)
                qw = strlen(names[i]);
            for (k = 0; k < ST_N; k++) {
                size_t n = (size_t)snprintf(num, sizeof num, "%lld",
                                            st[i].val[k]);
                if (n > w[k])
                    w[k] = n;
            }
        }
        printf("%-*s", (int)qw, "QUEUE");
        for (k = 0; k < ST_N; k++)
            printf("  %*s", (int)w[k], stat_heads[k]);
        putchar('\n');
        for (i = 0; i < o->nargs; i++) {
            printf("%-*s", (int)qw, names[i]);
            for (k = 0; k < ST_N; k++)
                printf("  %*lld", (int)w[k], st[i].val[k]);
            putchar('\n');
        }
        /* Messages nobody will deliver again: name each list, so that
         * they can be moved back by hand. */
        if (norph > 0)
            printf("\norphaned processing lists (holder not registered: no "
                   "consumer will return their messages):\n");
        for (i = 0; i < o->nargs; i++)
            for (j = 0; j < st[i].norphans; j++) {
                char *key = cli_escape_text(st[i].orphans[j].key,
                                            strlen(st[i].orphans[j].key), 0, 1);

                printf("  %s\t%lld\n", key ? key : "?",
                       st[i].orphans[j].messages);
                free(key);
            }
    }
    if (norph > 0 && !o->quiet)
        fprintf(stderr,
                "redq: warning: %zu orphaned processing list%s: their "
                "messages are in no queue\n",
                norph, norph == 1 ? "" : "s");
    if (cli_admin_output_ok() < 0)
        code = CLI_RC_FAILED;
out:
    if (names)
        for (i = 0; i < o->nargs; i++)
            free(names[i]);
    free(names);
    if (st)
        for (i = 0; i < o->nargs; i++)
            qstats_free(&st[i]);
    free(st);
    cli_admin_close(&a);
    return code;
}

