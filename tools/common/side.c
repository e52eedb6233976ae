/*
 * side.c: the blocking side connection of redq-bench and redq-demo
 * (side.h says what for, and the contract of each function).
 */
#include "side.h"

#include "redq.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>

static struct timeval ms_tv(int ms)
{
    struct timeval tv;

    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

static void nap_ms(int ms)
{
    struct timespec ts;

    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (long)(ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
        ;
}

/* snprintf that says whether it all fitted: 0, or -1 when truncated. */
static int copy(char *dst, size_t cap, const char *src)
{
    return snprintf(dst, cap, "%s", src ? src : "") < (int)cap ? 0 : -1;
}

static void set_where(side_addr *a)
{
    if (a->path[0])
        snprintf(a->where, sizeof a->where, "%s", a->path);
    else
        snprintf(a->where, sizeof a->where,
                 strchr(a->host, ':') ? "[%s]:%d" : "%s:%d", a->host,
                 a->port);
    snprintf(a->port_str, sizeof a->port_str, "%d", a->port);
}

static redisContext *connect_tcp(const char *host, int port, int timeout_ms,
                                 char *err, size_t errlen)
{
    redisContext *c = redisConnectWithTimeout(host, port, ms_tv(timeout_ms));

    if (!c) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(err, errlen, "connect %s%s%s:%d: %s",
                 strchr(host, ':') ? "[" : "", host,
                 strchr(host, ':') ? "]" : "", port, c->errstr);
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, ms_tv(timeout_ms));
    return c;
}

/* AUTH [user] password on c, when there is a password. 0, or -1 with err. */
static int auth(redisContext *c, const char *user, const char *password,
                const char *who, char *err, size_t errlen)
{
    const char *argv[3] = {"AUTH", user, password};
    char e[512];
    redisReply *r;

    if (!password || !password[0])
        return 0;
    if (!user || !user[0]) {
        argv[1] = password;
        r = side_cmd(c, e, sizeof e, 2, argv);
    } else {
        r = side_cmd(c, e, sizeof e, 3, argv);
    }
    if (!r) {
        snprintf(err, errlen, "%s: %s", who, e);
        return -1;
    }
    freeReplyObject(r);
    return 0;
}

/* Ask one sentinel for the master's address. 0 and host/port in *a, or -1
 * with err. */
static int ask_sentinel(const redq_url_info *u, const redq_url_node *s,
                        int timeout_ms, side_addr *a, char *err,
                        size_t errlen)
{
    const char *argv[3] = {"SENTINEL", "get-master-addr-by-name",
                           u->master_name};
    char who[300], e[512];
    redisContext *c;
    redisReply *r;
    int rc = -1;

    snprintf(who, sizeof who, strchr(s->host, ':') ? "sentinel [%s]:%d"
                                                   : "sentinel %s:%d",
             s->host, s->port);
    if (!(c = connect_tcp(s->host, s->port, timeout_ms, e, sizeof e))) {
        snprintf(err, errlen, "%s: %s", who, e);
        return -1;
    }
    if (auth(c, u->sentinel_user, u->sentinel_password, who, err, errlen) < 0)
        goto out;
    if (!(r = side_cmd(c, e, sizeof e, 3, argv))) {
        snprintf(err, errlen, "%s: %s", who, e);
        goto out;
    }
    if (r->type == REDIS_REPLY_NIL) {
        snprintf(err, errlen, "%s knows no master named \"%s\"", who,
                 u->master_name);
    } else if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
               r->element[0]->type != REDIS_REPLY_STRING ||
               r->element[1]->type != REDIS_REPLY_STRING) {
        snprintf(err, errlen, "%s: unexpected reply to SENTINEL "
                 "get-master-addr-by-name", who);
    } else {
        char *end;
        long port = strtol(r->element[1]->str, &end, 10);

        if (*end || port < 1 || port > 65535 ||
            copy(a->host, sizeof a->host, r->element[0]->str) < 0)
            snprintf(err, errlen, "%s: bad master address %s:%s", who,
                     r->element[0]->str, r->element[1]->str);
        else {
            a->port = (int)port;
            rc = 0;
        }
    }
    freeReplyObject(r);
out:
    redisFree(c);
    return rc;
}

/* side.h */
int side_resolve(const char *url, int timeout_ms, side_addr *out, char *err,
                 size_t errlen)
{
    redq_url_info u;
    char e[300];
    int rc = -1;
    size_t i;

    memset(out, 0, sizeof *out);
    if (redq_url_parse(url, &u, e, sizeof e) != 0) {
        snprintf(err, errlen, "invalid URL: %s", e);
        return -1;
    }
    if (copy(out->user, sizeof out->user, u.user) < 0 ||
        copy(out->password, sizeof out->password, u.password) < 0 ||
        copy(out->path, sizeof out->path, u.path) < 0 ||
        copy(out->master_name, sizeof out->master_name, u.master_name) < 0) {
        snprintf(err, errlen, "a part of the URL is too long");
        goto out;
    }
    out->db = u.db;
    switch (u.kind) {
    case REDQ_URL_CLUSTER: /* the first seed, until tools route by slot */
    case REDQ_URL_TCP:
        if (copy(out->host, sizeof out->host, u.host) < 0) {
            snprintf(err, errlen, "the URL's host is too long");
            goto out;
        }
        out->port = u.port;
        rc = 0;
        break;
    case REDQ_URL_UNIX:
        rc = 0;
        break;
    case REDQ_URL_SENTINEL:
        /* In turn, as the library asks them: the first that names the
         * master wins; the error kept is the last one's. */
        out->sentinel = 1;
        snprintf(err, errlen, "no sentinel in the URL");
        for (i = 0; i < u.nsentinels && rc < 0; i++)
            rc = ask_sentinel(&u, &u.sentinels[i], timeout_ms, out, err,
                              errlen);
        break;
    }
    if (rc == 0)
        set_where(out);
out:
    redq_url_info_free(&u);
    return rc;
}

/* side.h */
redisContext *side_connect(const side_addr *a, int timeout_ms, char *err,
                           size_t errlen)
{
    redisContext *c;
    redisReply *r;
    char e[512];

    if (a->path[0]) {
        c = redisConnectUnixWithTimeout(a->path, ms_tv(timeout_ms));
        if (!c) {
            snprintf(err, errlen, "out of memory");
            return NULL;
        }
        if (c->err) {
            snprintf(err, errlen, "connect %s: %s", a->where, c->errstr);
            redisFree(c);
            return NULL;
        }
        redisSetTimeout(c, ms_tv(timeout_ms));
    } else if (!(c = connect_tcp(a->host, a->port, timeout_ms, err, errlen))) {
        return NULL;
    }
    if (auth(c, a->user, a->password, a->where, err, errlen) < 0)
        goto fail;
    if (a->db != 0) {
        char db[16];
        const char *argv[2] = {"SELECT", db};

        snprintf(db, sizeof db, "%d", a->db);
        if (!(r = side_cmd(c, e, sizeof e, 2, argv))) {
            snprintf(err, errlen, "%s: %s", a->where, e);
            goto fail;
        }
        freeReplyObject(r);
    }
    if (a->sentinel) {
        /* A sentinel's answer may be stale (a failover under way, or a
         * sentinel that missed it): trust the node's own word. */
        const char *argv[1] = {"ROLE"};

        if (!(r = side_cmd(c, e, sizeof e, 1, argv))) {
            snprintf(err, errlen, "%s: %s", a->where, e);
            goto fail;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements < 1 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            strcmp(r->element[0]->str, "master") != 0) {
            snprintf(err, errlen,
                     "%s, named master \"%s\" by the sentinels, is not a "
                     "master (ROLE: %s)", a->where, a->master_name,
                     r->type == REDIS_REPLY_ARRAY && r->elements > 0 &&
                             r->element[0]->type == REDIS_REPLY_STRING
                         ? r->element[0]->str
                         : "?");
            freeReplyObject(r);
            goto fail;
        }
        freeReplyObject(r);
    }
    return c;
fail:
    redisFree(c);
    return NULL;
}

/* side.h */
redisContext *side_open(const char *url, int timeout_ms, side_addr *out,
                        char *err, size_t errlen)
{
    side_addr a;
    redisContext *c = NULL;
    int attempt;

    for (attempt = 0; attempt < 5 && !c; attempt++) {
        if (attempt > 0)
            nap_ms(200);
        if (side_resolve(url, timeout_ms, &a, err, errlen) < 0)
            return NULL;
        c = side_connect(&a, timeout_ms, err, errlen);
        if (!a.sentinel)
            break;
    }
    if (c && out)
        *out = a;
    return c;
}

/* side.h */
redisReply *side_cmd(redisContext *c, char *err, size_t errlen, int argc,
                     const char **argv)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);

    if (!r) {
        snprintf(err, errlen, "%s: %s", argv[0],
                 c->errstr[0] ? c->errstr : "no reply");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s: %s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

/* side.h */
int side_llen(redisContext *c, const char *key, long long *len, char *err,
              size_t errlen)
{
    const char *argv[2] = {"LLEN", key};
    redisReply *r = side_cmd(c, err, errlen, 2, argv);

    if (!r)
        return -1;
    if (r->type != REDIS_REPLY_INTEGER) {
        snprintf(err, errlen, "LLEN: unexpected reply type %d", r->type);
        freeReplyObject(r);
        return -1;
    }
    *len = r->integer;
    freeReplyObject(r);
    return 0;
}

/* side.h */
int side_del(redisContext *c, const char *key, char *err, size_t errlen)
{
    const char *argv[2] = {"DEL", key};
    redisReply *r = side_cmd(c, err, errlen, 2, argv);

    if (!r)
        return -1;
    freeReplyObject(r);
    return 0;
}
