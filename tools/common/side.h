/*
 * side.h: a blocking side connection to the server behind a redq URL, for
 * the programs that need a few plain commands beside the library's
 * handles: redq-bench (DEL, LLEN, RENAME, INFO, CLIENT PAUSE between and
 * around what it measures) and redq-demo (DEL before, LLEN after). Built
 * into each of them from tools/common/side.c; not part of the library, and
 * not for anything on an event loop (every call blocks, up to its timeout).
 *
 * The URL is read by the library's own parser (redq_url_parse), so a side
 * connection reaches the server the handles reach, with the same
 * credentials and database, for every form redq.h documents:
 *   redis://[[user]:password@]host[:port][/db]
 *   unix:///path[?db=N]
 *   redis+sentinel://[[user]:password@]s1[:port][,s2..]/master[/db]
 *       [?sentinel_user=U&sentinel_password=P]
 * For the last, the sentinels are asked in the URL's order (SENTINEL
 * get-master-addr-by-name) and the node named is checked with ROLE before
 * it is used, as the library does; unlike the library, a side connection
 * never follows a failover: a tool that needs that opens a new one.
 */
#ifndef REDQ_TOOLS_SIDE_H
#define REDQ_TOOLS_SIDE_H

#include <stddef.h>

#include <hiredis/hiredis.h>

/* Where the side connection goes: the URL's server, or for a Sentinel URL
 * the master the sentinels named. Every string NUL-terminated, "" when the
 * URL gives none. */
typedef struct side_addr {
    char host[256];    /* TCP: the server's host (no brackets); else "" */
    int port;          /* TCP: its port; UNIX: 0 */
    char port_str[8];  /* port as text, for command lines */
    char path[512];    /* UNIX: the socket's path; else "" */
    char user[128];    /* ACL user of the data node */
    char password[256];
    int db;
    int sentinel;      /* 1: found through sentinels */
    char master_name[256]; /* sentinel: the master's name there */
    char where[600];   /* "127.0.0.1:6379", "[::1]:6379" or the socket's
                          path, for messages (no credentials) */
    int cluster;       /* 1: a redis+cluster:// URL; host/port are its first
                          seed, and side_servers_open() finds the rest */
} side_addr;

/*
 * Parse `url` and find the server: *out (zeroed first) is filled. For a
 * Sentinel URL this asks the sentinels (each within timeout_ms), which is
 * the only network traffic; the answer is not checked with ROLE until
 * side_connect. Returns 0, or -1 with err (errlen bytes) saying why: an
 * invalid URL, a part too long for side_addr, or for Sentinel "no sentinel
 * answered", an AUTH refused or an unknown master name, with the last
 * sentinel's own words.
 */
int side_resolve(const char *url, int timeout_ms, side_addr *out, char *err,
                 size_t errlen);

/*
 * Connect to *a, authenticate, SELECT its database and, when a->sentinel,
 * check with ROLE that the node is a master; every reply within timeout_ms
 * (the socket timeout stays set for later commands). Returns the context,
 * or NULL with err filled. The caller frees it with redisFree().
 */
redisContext *side_connect(const side_addr *a, int timeout_ms, char *err,
                           size_t errlen);

/*
 * side_resolve() then side_connect(), into *out (may be NULL). For a
 * Sentinel URL a node that is not (or no longer) a master is a failover
 * under way: the sentinels are asked again, up to 5 times, 200 ms apart.
 */
redisContext *side_open(const char *url, int timeout_ms, side_addr *out,
                        char *err, size_t errlen);

/*
 * Run one command; its reply (the caller frees it), or NULL with err
 * filled ("ARGV0: why"). An error reply counts as a failure and is freed.
 */
redisReply *side_cmd(redisContext *c, char *err, size_t errlen, int argc,
                     const char **argv);

/* LLEN key into *len. 0, or -1 with err. */
int side_llen(redisContext *c, const char *key, long long *len, char *err,
              size_t errlen);

/* DEL key. 0, or -1 with err. */
int side_del(redisContext *c, const char *key, char *err, size_t errlen);

/* ------------------------------------------------------------------------ */
/* every server behind a URL, and a logical queue's keys on them             */
/* ------------------------------------------------------------------------ */

#define SIDE_MAX_NODES 32

/*
 * The servers behind a URL: for redis://, unix:// and Sentinel URLs the one
 * data node; for a redis+cluster:// URL every node CLUSTER NODES (asked of
 * the first seed) lists as connected and not failed, masters and replicas,
 * each with a connection of its own. Why every node: a queue's partitions
 * are spread over the masters (so a scan for its keys must ask each), and
 * replicas burn CPU too (so the CPU of a cluster is the sum over all).
 */
typedef struct side_servers {
    int n;
    redisContext *c[SIDE_MAX_NODES];
    int master[SIDE_MAX_NODES];   /* 1: a master (for a single server, 1) */
    char where[SIDE_MAX_NODES][600];
} side_servers;

/*
 * Fill *s (zeroed first) for *a, each connection authenticated as
 * side_connect() does, replies within timeout_ms. 0, or -1 with err filled
 * (and nothing left open).
 */
int side_servers_open(const side_addr *a, int timeout_ms, side_servers *s,
                      char *err, size_t errlen);

/* Close every connection of s; safe on a zeroed or closed s. */
void side_servers_close(side_servers *s);

/*
 * Is `key` one of logical queue q's keys? q itself, its partitions
 * ("{T}" q "~" i, T and i decimal: docs/DESIGN.md "Partitions") and every
 * auxiliary key of q or of a partition (the key layout of lib/keys.c:
 * "{q}/x", "q:x" when q has its own tag, "{T}q/x", partition ":x").
 * *ready_list: set to 1 when key is a ready list (q or a partition's name).
 */
int side_key_of_queue(const char *q, const char *key, size_t keylen,
                      int *ready_list);

/*
 * Delete logical queue q's keys on every master of s (SCAN MATCH with q's
 * name, filtered by side_key_of_queue(), then DEL): with lists_only its
 * ready lists (q and its partitions: the messages waiting, nothing else),
 * else every key, the meta hash (partition count, format, counters)
 * included. *deleted (may be NULL) counts the keys. 0, or -1 with err.
 */
int side_queue_delete(side_servers *s, const char *q, int lists_only,
                      long long *deleted, char *err, size_t errlen);

/*
 * Messages ready in logical queue q: LLEN of q and of each of its
 * partitions, summed over the masters of s. 0, or -1 with err.
 */
int side_queue_len(side_servers *s, const char *q, long long *len, char *err,
                   size_t errlen);

/*
 * CPU seconds (INFO cpu: used_cpu_user + used_cpu_sys, the whole process)
 * summed over every server of s. 0, or -1 with err.
 */
int side_servers_cpu(side_servers *s, double *seconds, char *err,
                     size_t errlen);

#endif /* REDQ_TOOLS_SIDE_H */
