/*
 * Everything of the tool that still needs the library's internals
 * (redq_private.h), kept in this one file so that the rest of tools/cli/
 * is built on redq.h alone.
 *
 * TODO(issue 9): each part below goes once the public header offers it:
 *   - UTF-8 checks and base64 (cli_utf8_seq_len, cli_is_utf8,
 *     cli_b64_encode): lib/text.c has them; redq.h exports neither, and
 *     the issue wants them to exist once.
 *   - The orphaned processing lists of `redq stats` (cli_find_orphans): a
 *     processing list whose holder is not registered is found only by a
 *     SCAN over the keyspace, and the admin API has no call for it (nor a
 *     field in redq_queue_info). Until it has, this part keeps a small
 *     blocking hiredis connection of its own, opened after the admin
 *     handle has answered (so the URL, the server and the credentials are
 *     already known to be good), with the library's URL parser and key
 *     layout.
 */

#include "cli.h"
#include "redq_private.h" /* redq__url_parse, redq__key, redq__utf8_*, redq__b64_encode */

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <hiredis/hiredis.h>

/* SCAN's COUNT hint for the orphan search. */
#define ADMIN_SCAN_COUNT 1000

/* ---- UTF-8 and base64: the library's (lib/text.c) ------------------------ */

size_t cli_utf8_seq_len(const unsigned char *p, size_t n)
{
    return redq__utf8_seq_len(p, n);
}

int cli_is_utf8(const char *p, size_t n)
{
    return redq__utf8_valid(p, n);
}

char *cli_b64_encode(const void *p, size_t n)
{
    char *b = malloc(4 * ((n + 2) / 3) + 1);

    if (b)
        redq__b64_encode(p, n, b);
    return b;
}

/* ---- a blocking connection for the orphan search ------------------------- */

/* A blocking hiredis connection. */
typedef struct cli_admin {
    redisContext *c;
    int timeout_ms;        /* for one read or write: the socket timeout */
    char where[300];       /* "127.0.0.1:6379", "[::1]:6379", a socket path */
    char err[512];         /* why the last call failed */
} cli_admin;

/* A reply may go this long without a byte arriving (the socket timeout
 * hiredis sets); one connect attempt, with its handshake, at most
 * ADMIN_CONNECT_ATTEMPT_MS. */
#define ADMIN_COMMAND_TIMEOUT_MS 10000
#define ADMIN_CONNECT_ATTEMPT_MS 2000

static uint64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Milliseconds left until `deadline_us` (at least 1 while any is left). */
static int left_ms(uint64_t deadline_us)
{
    uint64_t now = mono_us(), ms;

    if (now >= deadline_us)
        return 0;
    ms = (deadline_us - now + 999) / 1000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static int admin_fail(cli_admin *a, const char *fmt, ...) CLI_PRINTF_LIKE(2, 3);

static int admin_fail(cli_admin *a, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(a->err, sizeof a->err, fmt, ap);
    va_end(ap);
    return -1;
}

static struct timeval ms_tv(int ms)
{
    struct timeval tv;

    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

/* How long one read or write may block: hiredis applies it to the socket
 * (SO_RCVTIMEO/SO_SNDTIMEO), so a silent server cannot hang the tool. */
static int admin_set_timeout(cli_admin *a, int ms)
{
    a->timeout_ms = ms;
    if (redisSetTimeout(a->c, ms_tv(ms)) != REDIS_OK)
        return admin_fail(a, "%s: %s", a->where, a->c->errstr);
    return 0;
}

/* Send one command and read its reply (NULL: I/O failure, a->err says
 * which; the context is unusable after that). lens may be NULL for C
 * strings. */
static redisReply *cli_admin_cmd(cli_admin *a, int argc,
                                  const char *const *argv, const size_t *lens)
{
    redisReply *r;

    errno = 0;
    /* hiredis takes const char ** but only reads the strings. */
    r = redisCommandArgv(a->c, argc, (const char **)argv, lens);
    if (r)
        return r;
    /* A socket timeout surfaces as a failed read with EAGAIN. */
    if (a->c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
        admin_fail(a, "no reply from %s within %d ms", a->where,
                   a->timeout_ms);
    else if (a->c->err == REDIS_ERR_EOF)
        admin_fail(a, "%s closed the connection", a->where);
    else
        admin_fail(a, "%s: %s", a->where,
                   a->c->err ? a->c->errstr : "out of memory");
    return NULL;
}

static void cli_admin_close(cli_admin *a)
{
    if (a->c)
        redisFree(a->c);
    a->c = NULL;
}

/* One attempt at the socket, within `ms`. 0, or -1 with a->err. */
static int admin_open(cli_admin *a, const redq__url *u, int ms)
{
    if (u->is_unix) {
        snprintf(a->where, sizeof a->where, "%s", u->path);
        a->c = redisConnectUnixWithTimeout(u->path, ms_tv(ms));
    } else {
        snprintf(a->where, sizeof a->where, strchr(u->host, ':') ? "[%s]:%d"
                                                                 : "%s:%d",
                 u->host, u->port);
        a->c = redisConnectWithTimeout(u->host, u->port, ms_tv(ms));
    }
    if (!a->c)
        return admin_fail(a, "out of memory");
    if (a->c->err) {
        /* "connect ": cli_admin_connect words the final message from it. */
        admin_fail(a, "connect %s: %s", a->where, a->c->errstr);
        cli_admin_close(a);
        return -1;
    }
    if (admin_set_timeout(a, ms) < 0) { /* the handshake too */
        cli_admin_close(a);
        return -1;
    }
    return 0;
}

/* A command of the handshake: 0 and its reply, or -1 (I/O, a->err). */
static int admin_handshake_cmd(cli_admin *a, int argc, const char *const *argv,
                               redisReply **out)
{
    *out = cli_admin_cmd(a, argc, argv, NULL);
    return *out ? 0 : -1;
}

static int is_error(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR;
}

/*
 * Connect, authenticate, select the database, PING. Returns 0, or an exit
 * code after printing why. Connection failures are retried with backoff
 * (50 ms doubling to 1 s) until --connect-timeout has passed, as push and
 * pop do; a refused password or database is final.
 */
static int cli_admin_connect(cli_admin *a, const cli_options *o)
{
    redq__url u;
    char err[300];
    uint64_t deadline = 0;
    long backoff_ms = 50;
    int code = CLI_RC_CONNECT, rc;
    redisReply *r = NULL;

    memset(a, 0, sizeof *a);
    rc = redq__url_parse(&u, o->url, err, sizeof err);
    if (rc == REDQ_ENOMEM) {
        fprintf(stderr, "redq: out of memory\n");
        return CLI_RC_FAILED;
    }
    if (rc != 0) {
        fprintf(stderr, "redq: invalid URL: %s\n", err);
        return CLI_RC_BADURL;
    }
    if (o->connect_timeout_s > 0)
        deadline = mono_us() + (uint64_t)(o->connect_timeout_s * 1e6);
    for (;;) {
        int ms = ADMIN_CONNECT_ATTEMPT_MS;

        if (deadline && left_ms(deadline) < ms)
            ms = left_ms(deadline) > 0 ? left_ms(deadline) : 1;
        if (admin_open(a, &u, ms) == 0) {
            char db[16];
            const char *auth[3] = {"AUTH", u.user ? u.user : u.password,
                                   u.password};
            const char *sel[2] = {"SELECT", db};
            const char *ping[1] = {"PING"};

            snprintf(db, sizeof db, "%d", u.db);
            if (u.password) {
                if (admin_handshake_cmd(a, u.user ? 3 : 2, auth, &r) < 0)
                    goto retry;
                if (is_error(r)) {
                    fprintf(stderr, "redq: authentication failed: %s\n",
                            r->str);
                    code = CLI_RC_AUTH;
                    goto final;
                }
                freeReplyObject(r);
                r = NULL;
            }
            if (u.db != 0) {
                if (admin_handshake_cmd(a, 2, sel, &r) < 0)
                    goto retry;
                if (is_error(r) && !strncmp(r->str, "NOAUTH", 6)) {
                    fprintf(stderr, "redq: authentication failed: %s\n",
                            r->str);
                    code = CLI_RC_AUTH;
                    goto final;
                }
                if (is_error(r)) {
                    fprintf(stderr, "redq: cannot select database %d: %s\n",
                            u.db, r->str);
                    goto final;
                }
                freeReplyObject(r);
                r = NULL;
            }
            if (admin_handshake_cmd(a, 1, ping, &r) < 0)
                goto retry;
            if (is_error(r) && (!strncmp(r->str, "NOAUTH", 6) ||
                                !strncmp(r->str, "WRONGPASS", 9))) {
                fprintf(stderr, "redq: authentication failed: %s\n", r->str);
                code = CLI_RC_AUTH;
                goto final;
            }
            if (!is_error(r)) { /* up */
                freeReplyObject(r);
                redq__url_free(&u);
                if (admin_set_timeout(a, ADMIN_COMMAND_TIMEOUT_MS) < 0) {
                    fprintf(stderr, "redq: cannot connect: %s\n", a->err);
                    cli_admin_close(a);
                    return CLI_RC_CONNECT;
                }
                return 0;
            }
            /* LOADING, MASTERDOWN, BUSY...: may pass; try again. */
            snprintf(a->err, sizeof a->err, "%s: %s", a->where, r->str);
        }
    retry:
        freeReplyObject(r);
        r = NULL;
        cli_admin_close(a);
        if (deadline && left_ms(deadline) == 0)
            break;
        {
            long wait = backoff_ms;
            struct timespec ts;

            if (deadline && left_ms(deadline) < wait)
                wait = left_ms(deadline);
            ts.tv_sec = wait / 1000;
            ts.tv_nsec = (wait % 1000) * 1000000L;
            while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
            backoff_ms = backoff_ms * 2 > 1000 ? 1000 : backoff_ms * 2;
        }
    }
    if (!strncmp(a->err, "connect ", 8))
        fprintf(stderr, "redq: cannot connect to %s\n", a->err + 8);
    else
        fprintf(stderr, "redq: cannot connect: %s\n", a->err);
    redq__url_free(&u);
    return CLI_RC_CONNECT;
final:
    freeReplyObject(r);
    cli_admin_close(a);
    redq__url_free(&u);
    return code;
}

/* The key `suffix` of `queue` in the library's layout ("{Q}/dead", ...),
 * or NULL (reported). */
static char *cli_queue_key(const char *queue, const char *suffix)
{
    char *k = redq__key(queue, strlen(queue), suffix);

    if (!k)
        fprintf(stderr, "redq: out of memory\n");
    return k;
}

/* Report a failed admin command; CLI_RC_FAILED. `r` may be NULL (I/O error,
 * a->err) or an error reply. */
static int cli_admin_report(cli_admin *a, const redisReply *r,
                            const char *what)
{
    if (!r)
        fprintf(stderr, "redq: %s: %s\n", what, a->err);
    else if (r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "redq: %s: %s\n", what, r->str);
    else
        fprintf(stderr, "redq: %s: unexpected reply\n", what);
    return CLI_RC_FAILED;
}

/* Stdout after the listing: -1 if it could not be written (reported). */

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

static int orphan_add(cli_orphans *st, const char *key, size_t len)
{
    size_t i;

    for (i = 0; i < st->norphans; i++) /* SCAN may return a key twice */
        if (strlen(st->orphans[i].key) == len &&
            !memcmp(st->orphans[i].key, key, len))
            return 0;
    if (st->norphans == st->cap) {
        size_t cap = st->cap ? 2 * st->cap : 8;
        cli_orphan *o = realloc(st->orphans, cap * sizeof *o);

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
                         cli_orphans *st)
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
        cli_orphan *o = &st->orphans[i];
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
        st->messages += st->orphans[i].messages;
    free(pattern);
    free(prefix);
    return code;
}

/* cli.h */
void cli_orphans_free(cli_orphans *st)
{
    size_t i;

    for (i = 0; i < st->norphans; i++)
        free(st->orphans[i].key);
    free(st->orphans);
    memset(st, 0, sizeof *st);
}

/* cli.h */
int cli_find_orphans(const cli_options *o, cli_orphans *per_queue)
{
    cli_admin a;
    int code, i;

    if ((code = cli_admin_connect(&a, o)) != 0)
        return code;
    for (i = 0; i < o->nargs && code == CLI_RC_OK; i++) {
        char *consumers = cli_queue_key(o->args[i], "consumers");

        if (!consumers) {
            code = CLI_RC_FAILED;
            break;
        }
        code = stats_orphans(&a, o->args[i], consumers, &per_queue[i]);
        free(consumers);
    }
    cli_admin_close(&a);
    return code;
}
