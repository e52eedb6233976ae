/*
 * Error codes: one table (REDQ_ERRNO_MAP in redq.h) gives the enum, the
 * messages and the names, so they can never disagree.
 */
#include <string.h>

#include "redq_private.h"

const char *redq_strerror(int code)
{
    switch (code) {
    case REDQ_OK:
        return "success";
#define XX(name, val, msg)                                                     \
    case REDQ_##name:                                                          \
        return msg;
        REDQ_ERRNO_MAP(XX)
#undef XX
    default:
        return "unknown error";
    }
}

const char *redq_err_name(int code)
{
    switch (code) {
    case REDQ_OK:
        return "REDQ_OK";
#define XX(name, val, msg)                                                     \
    case REDQ_##name:                                                          \
        return "REDQ_" #name;
        REDQ_ERRNO_MAP(XX)
#undef XX
    default:
        return "REDQ_EUNKNOWN";
    }
}

static int has_prefix(const char *s, size_t len, const char *prefix)
{
    size_t n = strlen(prefix);
    return len >= n && memcmp(s, prefix, n) == 0 &&
           (len == n || s[n] == ' ');
}

/*
 * Redis error replies start with an upper-case code word ("WRONGTYPE
 * Operation against a key ...", "NOAUTH Authentication required."). Only the
 * ones a caller would act on differently get their own code.
 */
int redq__err_from_reply(const char *str, size_t len)
{
    if (str == NULL)
        return REDQ_EPROTOCOL;
    if (has_prefix(str, len, "WRONGTYPE"))
        return REDQ_EWRONGTYPE;
    if (has_prefix(str, len, "NOAUTH") || has_prefix(str, len, "WRONGPASS"))
        return REDQ_EAUTH;
    /* Authenticated, but this ACL user may not run the command or touch the
     * key: a configuration problem, not a wrong password. */
    if (has_prefix(str, len, "NOPERM"))
        return REDQ_ENOPERM;
    /* Before 6.0 a bad password was "ERR invalid password". */
    if (has_prefix(str, len, "ERR") && len >= 20 &&
        memcmp(str, "ERR invalid password", 20) == 0)
        return REDQ_EAUTH;
    return REDQ_ESERVER;
}

/*
 * Server states that pass by themselves: the command did not run and the same
 * command on the same (or a fresh) connection will work later.
 *   LOADING     the dataset is still being loaded (restart, AOF replay)
 *   BUSY        a script or function runs past busy-reply-threshold
 *   TRYAGAIN    a multi-key command during a cluster slot migration
 *   MASTERDOWN  a replica lost its master and replica-serve-stale-data is no
 *   MOVED, ASK, CLUSTERDOWN  a cluster's "not here" / "not now" (see
 *               redq__err_cluster): on a pinned connection, which follows
 *               its slot after a MOVED (lib/cluster.c), the same command
 *               later reaches the slot's master
 * -OOM is not here: for a command that adds data it is the answer (the
 * server is full), and only the caller knows whether its command would free
 * memory or is a handshake step that must simply wait.
 */
int redq__err_is_transient(const char *str, size_t len)
{
    if (str == NULL)
        return 0;
    return has_prefix(str, len, "LOADING") || has_prefix(str, len, "BUSY") ||
           has_prefix(str, len, "TRYAGAIN") ||
           has_prefix(str, len, "MASTERDOWN") ||
           redq__err_cluster(str, len) != REDQ__REDIR_NONE;
}

/*
 * The replies of a Redis Cluster that say "not here" or "not now" rather
 * than the command's result (see lib/cluster.c for what each one does):
 *   MOVED <slot> <host:port>  the slot has a new owner: ask it from now on
 *   ASK <slot> <host:port>    the slot is migrating and this key is already
 *                             there: ASKING, then this command, once
 *   TRYAGAIN                  a multi-key command whose keys are split by
 *                             a migration in progress
 *   CLUSTERDOWN               the cluster cannot serve the slot right now
 *                             (a failover, a majority lost)
 * The command did not run in any of these cases.
 */
int redq__err_cluster(const char *str, size_t len)
{
    if (str == NULL)
        return REDQ__REDIR_NONE;
    if (has_prefix(str, len, "MOVED"))
        return REDQ__REDIR_MOVED;
    if (has_prefix(str, len, "ASK"))
        return REDQ__REDIR_ASK;
    if (has_prefix(str, len, "TRYAGAIN"))
        return REDQ__REDIR_TRYAGAIN;
    if (has_prefix(str, len, "CLUSTERDOWN"))
        return REDQ__REDIR_CLUSTERDOWN;
    return REDQ__REDIR_NONE;
}
