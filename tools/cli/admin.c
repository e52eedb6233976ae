/*
 * The admin connection of dead and stats, and the small helpers those
 * commands share (queue-name check, key names, error reports).
 *
 * hiredis's blocking API for the one-shot admin commands: connect (retried
 * with backoff until --connect-timeout), AUTH, SELECT, PING, then commands
 * one at a time, each reply read whole. The URL goes through the library's
 * own parser (lib/url.c), so push, pop and these accept exactly the same
 * forms and refuse them with the same words; its errors never quote a
 * password. A blocking client is right here: nothing else runs meanwhile,
 * and a host name resolved by a blocking getaddrinfo costs nobody a loop.
 */

#include "cli.h"
#include "redq_private.h" /* redq__url_parse, redq__key */

#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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
redisReply *cli_admin_cmd(cli_admin *a, int argc, const char *const *argv,
                          const size_t *lens)
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

void cli_admin_close(cli_admin *a)
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
int cli_admin_connect(cli_admin *a, const cli_options *o)
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

/* Queue names for the admin commands: the library's rule (1 to
 * REDQ__MAX_QUEUE_NAME bytes). */
int cli_admin_check_queues(const cli_options *o)
{
    int i;

    for (i = 0; i < o->nargs; i++) {
        if (!o->args[i][0])
            return cli_usage_error(o->cmd, "invalid queue name (empty)");
        if (strlen(o->args[i]) > REDQ__MAX_QUEUE_NAME)
            return cli_usage_error(o->cmd,
                                   "invalid queue name (longer than %d bytes)",
                                   REDQ__MAX_QUEUE_NAME);
    }
    return 0;
}

/* The key `suffix` of `queue` in the library's layout ("{Q}/dead", ...),
 * or NULL (reported). */
char *cli_queue_key(const char *queue, const char *suffix)
{
    char *k = redq__key(queue, strlen(queue), suffix);

    if (!k)
        fprintf(stderr, "redq: out of memory\n");
    return k;
}

/* Report a failed admin command; CLI_RC_FAILED. `r` may be NULL (I/O error,
 * a->err) or an error reply. */
int cli_admin_report(cli_admin *a, const redisReply *r, const char *what)
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
int cli_admin_output_ok(void)
{
    if (fflush(stdout) == 0 && !ferror(stdout))
        return 0;
    fprintf(stderr, "redq: write to stdout: %s\n", strerror(errno));
    return -1;
}

