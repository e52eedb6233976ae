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
           has_prefix(str, len, "MASTERDOWN");
}
