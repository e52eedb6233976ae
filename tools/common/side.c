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
    case REDQ_URL_CLUSTER: /* the first seed; side_servers_open() finds the rest */
        out->cluster = 1;
        /* fall through */
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

/* ------------------------------------------------------------------------ */
/* every server behind a URL, and a logical queue's keys on them             */
/* ------------------------------------------------------------------------ */

/* side.h */
void side_servers_close(side_servers *s)
{
    int i;

    for (i = 0; i < s->n; i++)
        if (s->c[i])
            redisFree(s->c[i]);
    memset(s, 0, sizeof *s);
}

/* Add node host:port (a's credentials) to s. 0, or -1 with err. */
static int add_node(side_servers *s, const side_addr *a, const char *host,
                    int port, int master, int timeout_ms, char *err,
                    size_t errlen)
{
    side_addr n = *a;
    redisContext *c;

    if (s->n == SIDE_MAX_NODES) {
        snprintf(err, errlen, "more than %d nodes", SIDE_MAX_NODES);
        return -1;
    }
    if (copy(n.host, sizeof n.host, host) < 0) {
        snprintf(err, errlen, "node address too long");
        return -1;
    }
    n.port = port;
    n.path[0] = '\0';
    n.sentinel = 0; /* no ROLE check: replicas are wanted too */
    set_where(&n);
    if (!(c = side_connect(&n, timeout_ms, err, errlen)))
        return -1;
    s->c[s->n] = c;
    s->master[s->n] = master;
    snprintf(s->where[s->n], sizeof s->where[0], "%s", n.where);
    s->n++;
    return 0;
}

/* side.h */
int side_servers_open(const side_addr *a, int timeout_ms, side_servers *s,
                      char *err, size_t errlen)
{
    const char *argv[2] = {"CLUSTER", "NODES"};
    redisContext *seed;
    redisReply *r;
    char *line, *save = NULL, *text;
    int rc = 0;

    memset(s, 0, sizeof *s);
    if (!(seed = side_connect(a, timeout_ms, err, errlen)))
        return -1;
    if (!a->cluster) {
        s->c[0] = seed;
        s->master[0] = 1;
        snprintf(s->where[0], sizeof s->where[0], "%s", a->where);
        s->n = 1;
        return 0;
    }
    r = side_cmd(seed, err, errlen, 2, argv);
    redisFree(seed);
    if (!r)
        return -1;
    if (r->type != REDIS_REPLY_STRING) {
        snprintf(err, errlen, "CLUSTER NODES: unexpected reply");
        freeReplyObject(r);
        return -1;
    }
    text = r->str;
    /* <id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong>
     * <epoch> <link-state> <slot>... : one line per node. */
    for (line = strtok_r(text, "\n", &save); line && rc == 0;
         line = strtok_r(NULL, "\n", &save)) {
        char addr[256], flags[200], link[32], host[256], *at, *colon;
        long port;

        if (sscanf(line, "%*s %255s %199s %*s %*s %*s %*s %31s", addr, flags,
                   link) != 3)
            continue;
        if (strstr(flags, "fail") || strstr(flags, "noaddr") ||
            strstr(flags, "handshake") || strcmp(link, "connected") != 0)
            continue;
        if ((at = strchr(addr, '@')))
            *at = '\0';
        if (!(colon = strrchr(addr, ':')))
            continue;
        *colon = '\0';
        port = strtol(colon + 1, NULL, 10);
        snprintf(host, sizeof host, "%s", addr[0] == '[' ? addr + 1 : addr);
        if (host[0] && host[strlen(host) - 1] == ']')
            host[strlen(host) - 1] = '\0';
        if (port < 1 || port > 65535)
            continue;
        rc = add_node(s, a, host, (int)port, strstr(flags, "master") != NULL,
                      timeout_ms, err, errlen);
    }
    freeReplyObject(r);
    if (rc == 0 && s->n == 0) {
        snprintf(err, errlen, "CLUSTER NODES lists no connected node");
        rc = -1;
    }
    if (rc != 0)
        side_servers_close(s);
    return rc;
}

/* s is all decimal digits, n >= 1 of them. */
static int all_digits(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (s[i] < '0' || s[i] > '9')
            return 0;
    return n > 0;
}

/* Does q have a hash tag of its own ("{x}" with x non-empty)? */
static int has_tag(const char *q)
{
    const char *o = strchr(q, '{'), *c = o ? strchr(o + 1, '}') : NULL;

    return c && c > o + 1;
}

/* side.h */
int side_key_of_queue(const char *q, const char *key, size_t keylen,
                      int *ready_list)
{
    size_t qlen = strlen(q);
    const char *k = key, *end = key + keylen, *p;

    *ready_list = 0;
    if (keylen == qlen && memcmp(key, q, qlen) == 0) {
        *ready_list = 1;
        return 1;
    }
    /* q's own auxiliary keys */
    if (has_tag(q)) {
        if (keylen > qlen + 1 && memcmp(key, q, qlen) == 0 && key[qlen] == ':')
            return 1;
    } else if (keylen > qlen + 3 && key[0] == '{' &&
               memcmp(key + 1, q, qlen) == 0 && key[qlen + 1] == '}' &&
               key[qlen + 2] == '/') {
        return 1;
    }
    /* "{T}" then q then "/x" (a name with a '}' but no tag) or "~i[:x]" */
    if (k >= end || *k != '{')
        return 0;
    for (p = k + 1; p < end && *p != '}'; p++)
        ;
    if (p >= end || !all_digits(k + 1, (size_t)(p - k - 1)))
        return 0;
    k = p + 1;
    if ((size_t)(end - k) <= qlen || memcmp(k, q, qlen) != 0)
        return 0;
    k += qlen;
    if (*k == '/')
        return !has_tag(q) && strchr(q, '}') != NULL && end - k > 1;
    if (*k != '~')
        return 0;
    for (p = ++k; p < end && *p != ':'; p++)
        ;
    if (!all_digits(k, (size_t)(p - k)))
        return 0;
    if (p == end) {
        *ready_list = 1;
        return 1;
    }
    return end - p > 1;
}

/* "*" glob-escaped(q) "*": SCAN's MATCH pattern for q's keys (a superset,
 * filtered by side_key_of_queue). */
static char *scan_pattern(const char *q)
{
    char *pat = malloc(2 * strlen(q) + 3), *w = pat;

    if (!pat)
        return NULL;
    *w++ = '*';
    for (; *q; q++) {
        if (strchr("*?[]\\", *q))
            *w++ = '\\';
        *w++ = *q;
    }
    *w++ = '*';
    *w = '\0';
    return pat;
}

/* For every key of q on server c: DEL it (del; only the ready lists when
 * del == 2) or add its LLEN when it is a ready list (del == 0). 0, or -1
 * with err. */
static int walk_queue(redisContext *c, const char *q, int del, long long *acc,
                      char *err, size_t errlen)
{
    char cursor[32] = "0", *pat = scan_pattern(q);
    int rc = 0;

    if (!pat) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    do {
        const char *argv[6] = {"SCAN", cursor, "MATCH", pat, "COUNT", "1000"};
        redisReply *r = side_cmd(c, err, errlen, 6, argv), *keys;
        size_t i;

        if (!r) {
            rc = -1;
            break;
        }
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[1]->type != REDIS_REPLY_ARRAY) {
            snprintf(err, errlen, "SCAN: unexpected reply");
            freeReplyObject(r);
            rc = -1;
            break;
        }
        snprintf(cursor, sizeof cursor, "%s", r->element[0]->str);
        keys = r->element[1];
        for (i = 0; i < keys->elements && rc == 0; i++) {
            const char *key = keys->element[i]->str;
            size_t len = keys->element[i]->len;
            int ready;
            redisReply *x;

            if (!side_key_of_queue(q, key, len, &ready) || (del != 1 && !ready))
                continue;
            x = redisCommand(c, del ? "DEL %b" : "LLEN %b", key, len);
            if (!x || x->type != REDIS_REPLY_INTEGER) {
                snprintf(err, errlen, "%s %.*s: %s", del ? "DEL" : "LLEN",
                         (int)len, key,
                         x && x->type == REDIS_REPLY_ERROR ? x->str
                                                           : "failed");
                rc = -1;
            } else {
                *acc += del ? 1 : x->integer;
            }
            if (x)
                freeReplyObject(x);
        }
        freeReplyObject(r);
    } while (rc == 0 && strcmp(cursor, "0") != 0);
    free(pat);
    return rc;
}

/* side.h */
int side_queue_delete(side_servers *s, const char *q, int lists_only,
                      long long *deleted, char *err, size_t errlen)
{
    long long n = 0;
    int i;

    for (i = 0; i < s->n; i++)
        if (s->master[i] &&
            walk_queue(s->c[i], q, lists_only ? 2 : 1, &n, err, errlen) < 0)
            return -1;
    if (deleted)
        *deleted = n;
    return 0;
}

/* side.h */
int side_queue_len(side_servers *s, const char *q, long long *len, char *err,
                   size_t errlen)
{
    long long n = 0;
    int i;

    for (i = 0; i < s->n; i++)
        if (s->master[i] && walk_queue(s->c[i], q, 0, &n, err, errlen) < 0)
            return -1;
    *len = n;
    return 0;
}

/* side.h */
int side_servers_cpu(side_servers *s, double *seconds, char *err,
                     size_t errlen)
{
    const char *argv[2] = {"INFO", "cpu"};
    double sum = 0;
    int i;

    for (i = 0; i < s->n; i++) {
        redisReply *r = side_cmd(s->c[i], err, errlen, 2, argv);
        const char *u, *y;

        if (!r)
            return -1;
        u = r->type == REDIS_REPLY_STRING
                ? strstr(r->str, "used_cpu_user:") : NULL;
        y = r->type == REDIS_REPLY_STRING
                ? strstr(r->str, "used_cpu_sys:") : NULL;
        if (!u || !y) {
            snprintf(err, errlen, "INFO cpu of %s: no used_cpu_user/sys",
                     s->where[i]);
            freeReplyObject(r);
            return -1;
        }
        sum += strtod(u + 14, NULL) + strtod(y + 13, NULL);
        freeReplyObject(r);
    }
    *seconds = sum;
    return 0;
}
