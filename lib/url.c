/*
 * Parsing of the options' url (redq_producer_options.url and the others):
 *
 *   redis://[[user]:password@]host[:port][/db][?db=N]
 *   unix://[[user]:password@]/abs/path/to.sock[?db=N]
 *   redis+sentinel://[[user]:password@]host[:port][,host[:port]]...
 *       /master_name[/db][?db=N][&sentinel_user=U][&sentinel_password=P]
 *   redis+cluster://[[user]:password@]host[:port][,host[:port]]...[/0][?db=0]
 *
 * For redis+cluster://, the hosts are seed nodes of a Redis Cluster (port
 * 6379 unless given): any one that answers CLUSTER SLOTS bootstraps the
 * slot map (lib/cluster.c). A cluster has database 0 only, so any other db
 * is refused here rather than by every node's SELECT later. host and port
 * are also set, to the first seed, for code that needs one node to talk to.
 *
 * For redis+sentinel://, the hosts are the sentinels (port 26379 unless
 * given) and the user info is for the data nodes (the master the sentinels
 * name), exactly as in redis://: it is what the queues' ACL users are. The
 * sentinels often have their own password (or none): it goes in the query,
 * sentinel_password=P and optionally sentinel_user=U, %XX-encoded like the
 * user info, never quoted in errors.
 *
 * The grammar follows RFC 3986 where it matters: the authority ends at the
 * first '/' or '?', and user, password and socket path are %XX-encoded.
 * Two deliberate leniencies, both unambiguous: the user info ends at the
 * *last* '@' of the authority (so a raw '@' in a password works, as in most
 * URL libraries), and everything after the first ':' of the user info is the
 * password (so a raw ':' in a password works too).
 *
 * Errors say what is wrong and quote the offending piece, except anything
 * that may be (part of) a password: those end up in logs.
 *
 * Nothing here touches the network; host names are checked for shape only
 * and resolved later by lib/resolve.c.
 */
#include <arpa/inet.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redq_private.h"

#define URL_DEFAULT_PORT 6379
#define URL_SENTINEL_PORT 26379
/* Sentinels in one URL, at most: a deployment has 3 or 5. */
#define URL_MAX_SENTINELS 16
/* Cluster seed nodes in one URL, at most: one reachable node is enough, a
 * few cover a node being down; a whole cluster's list is still fine. */
#define URL_MAX_SEEDS 64
/* Sentinel master names are short identifiers. */
#define URL_MAX_MASTER_NAME 128
/* The longest DNS name (RFC 1035, without the trailing dot). */
#define URL_MAX_HOST 253
/* sockaddr_un.sun_path is 108 bytes on Linux, one of them for the NUL.
 * (Some BSDs have 104; there connect() reports the problem.) */
#define URL_MAX_UNIX_PATH 107
/* How much of a bad piece to quote back in an error message. */
#define URL_QUOTE_MAX 64

/* A piece of the URL string: not NUL-terminated, never owned. */
typedef struct url_span {
    const char *p;
    size_t n;
} url_span;

static int url_fail(char *err, size_t errlen, int code, const char *fmt, ...)
    REDQ__PRINTF(4, 5);

/* Write the message into err (when there is room for one) and return code,
 * so that every error site is a single `return url_fail(...)`. */
static int url_fail(char *err, size_t errlen, int code, const char *fmt, ...)
{
    va_list ap;

    if (err != NULL && errlen > 0) {
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}

/* Length to print with "%.*s" so a huge bad piece does not fill the log. */
static int quote_len(url_span s)
{
    return (int)(s.n < URL_QUOTE_MAX ? s.n : URL_QUOTE_MAX);
}

/*
 * ' "text"' for an error message, or "" when the text must not be shown:
 * without an '@' in the URL the host and port may be user info that lost
 * its host ("redis://default:hunter2" parses as host "default", port
 * "hunter2"), and no part of user info may ever be printed.
 */
static const char *shown(url_span s, int quote, char *buf, size_t len)
{
    if (!quote) {
        buf[0] = '\0';
        return buf;
    }
    snprintf(buf, len, " \"%.*s\"", quote_len(s), s.p);
    return buf;
}

/* The hint added to a host or port error when nothing may be quoted. */
#define URL_NO_AT_HINT                                                         \
    " (not shown: with no '@' it may be user:password without a host; "      \
    "write redis://user:password@host:port)"

/* ASCII-only character classes: <ctype.h> depends on the locale, and a URL
 * must mean the same thing in every process that embeds us. */
static int is_digit(unsigned char c)
{
    return c >= '0' && c <= '9';
}

static int is_alpha(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

static int hex_value(unsigned char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int lower(unsigned char c)
{
    return (c >= 'A' && c <= 'Z') ? c - 'A' + 'a' : c;
}

/* Case-insensitive compare of a span with a lower-case literal. */
static int span_is(url_span s, const char *lit)
{
    size_t i;

    if (s.n != strlen(lit))
        return 0;
    for (i = 0; i < s.n; i++)
        if (lower((unsigned char)s.p[i]) != (unsigned char)lit[i])
            return 0;
    return 1;
}

/* Describe one byte for an error message. Control bytes (a stray newline
 * from a config file is the usual one) are shown as hex, not printed raw. */
static void describe_byte(unsigned char c, char *buf, size_t len)
{
    if (c >= 0x20 && c < 0x7f)
        snprintf(buf, len, "'%c'", c);
    else
        snprintf(buf, len, "byte 0x%02x", c);
}

/* Overwrite a secret before freeing it. Through a volatile pointer so the
 * compiler cannot drop the stores as dead; best effort, not a guarantee
 * (copies may exist elsewhere, e.g. in the caller's options). */
static void wipe_free(char *s)
{
    volatile char *v = s;

    if (s == NULL)
        return;
    while (*v != '\0')
        *v++ = '\0';
    free(s);
}

static char *span_dup(url_span s)
{
    char *d = malloc(s.n + 1);

    if (d != NULL) {
        memcpy(d, s.p, s.n);
        d[s.n] = '\0';
    }
    return d;
}

enum { NUM_OK, NUM_EMPTY, NUM_NOT_DIGITS, NUM_TOO_BIG };

/*
 * Parse decimal digits only, up to max. Not strtol: it would accept
 * " +12", "0x1f" (with base 0) and silently clamp on overflow, and we would
 * rather say "port "+12" is not a number". Every byte is checked before the
 * value, so "99999999999x" is "not a number" rather than "out of range".
 */
static int parse_decimal(url_span s, long max, long *out)
{
    long v = 0;
    size_t i;

    if (s.n == 0)
        return NUM_EMPTY;
    for (i = 0; i < s.n; i++)
        if (!is_digit((unsigned char)s.p[i]))
            return NUM_NOT_DIGITS;
    for (i = 0; i < s.n; i++) {
        int d = s.p[i] - '0';
        if (v > (max - d) / 10)
            return NUM_TOO_BIG;
        v = v * 10 + d;
    }
    *out = v;
    return NUM_OK;
}

/*
 * %XX-decode s into a new string in *out. `what` names the part in errors.
 * A secret part is never quoted back. A decoded NUL is refused: the result
 * is a C string, and "pass%00word" would silently become "pass".
 */
static int decode_part(url_span s, const char *what, int secret, char **out,
                       char *err, size_t errlen)
{
    char *buf = malloc(s.n + 1);
    size_t i, j = 0;
    int rc;

    *out = NULL;
    if (buf == NULL)
        return url_fail(err, errlen, REDQ_ENOMEM,
                        "out of memory decoding the %s", what);
    for (i = 0; i < s.n; i++) {
        int hi, lo;

        if (s.p[i] != '%') {
            buf[j++] = s.p[i];
            continue;
        }
        hi = s.n - i >= 3 ? hex_value((unsigned char)s.p[i + 1]) : -1;
        lo = s.n - i >= 3 ? hex_value((unsigned char)s.p[i + 2]) : -1;
        if (hi < 0 || lo < 0) {
            url_span bad = {s.p + i, s.n - i < 3 ? s.n - i : 3};
            if (secret)
                rc = url_fail(err, errlen, REDQ_EINVAL,
                              "invalid percent-escape in the %s: '%%' must be "
                              "followed by two hex digits",
                              what);
            else
                rc = url_fail(err, errlen, REDQ_EINVAL,
                              "invalid percent-escape \"%.*s\" in the %s: '%%' "
                              "must be followed by two hex digits",
                              quote_len(bad), bad.p, what);
            goto fail;
        }
        if (hi == 0 && lo == 0) {
            rc = url_fail(err, errlen, REDQ_EINVAL,
                          "%%00 (a NUL byte) is not allowed in the %s", what);
            goto fail;
        }
        buf[j++] = (char)(hi * 16 + lo);
        i += 2;
    }
    buf[j] = '\0';
    *out = buf;
    return 0;

fail:
    buf[j] = '\0';
    if (secret)
        wipe_free(buf);
    else
        free(buf);
    return rc;
}

/*
 * "redis://" or "unix://", any case. Sets *rest to what follows "://".
 * The scheme is quoted in the error only when it looks like one: for
 * "localhost:6379" or "secret@host" there is no scheme to name, and the
 * text before "://" could hold anything.
 */
static int parse_scheme(const char *url, int *is_unix, int *is_sentinel,
                        int *is_cluster, const char **rest, char *err,
                        size_t errlen)
{
    const char *sep = strstr(url, "://");
    url_span scheme;
    size_t i;
    int plausible;

    if (sep == NULL)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "URL must start with redis://, unix://, "
                        "redis+sentinel:// or redis+cluster://");
    scheme.p = url;
    scheme.n = (size_t)(sep - url);
    *rest = sep + 3;

    if (span_is(scheme, "redis")) {
        *is_unix = 0;
        return 0;
    }
    if (span_is(scheme, "redis+sentinel")) {
        *is_unix = 0;
        *is_sentinel = 1;
        return 0;
    }
    if (span_is(scheme, "redis+cluster")) {
        *is_unix = 0;
        *is_cluster = 1;
        return 0;
    }
    if (span_is(scheme, "unix")) {
        *is_unix = 1;
        return 0;
    }
    if (span_is(scheme, "rediss"))
        return url_fail(err, errlen, REDQ_EINVAL,
                        "TLS (rediss://) is not supported; use redis:// or "
                        "unix://");

    /* RFC 3986: ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) */
    plausible = scheme.n > 0 && scheme.n <= 32 &&
                is_alpha((unsigned char)scheme.p[0]);
    for (i = 0; plausible && i < scheme.n; i++) {
        unsigned char c = (unsigned char)scheme.p[i];
        plausible = is_alpha(c) || is_digit(c) || c == '+' || c == '-' ||
                    c == '.';
    }
    if (!plausible)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "URL must start with redis://, unix://, "
                        "redis+sentinel:// or redis+cluster://");
    return url_fail(err, errlen, REDQ_EINVAL,
                    "unsupported URL scheme \"%.*s://\": URL must start with "
                    "redis://, unix://, redis+sentinel:// or redis+cluster://",
                    quote_len(scheme), scheme.p);
}

/*
 * "user:password" or ":password". AUTH with a user name needs a password
 * (Redis 6 ACLs: AUTH user pass), so a bare "user" is refused instead of
 * being dropped or sent as a password. None of it is quoted in errors: a
 * lone "xyz@" is at least as likely a password that lost its ':'.
 */
static int parse_userinfo(url_span ui, redq__url *u, char *err, size_t errlen)
{
    const char *colon = memchr(ui.p, ':', ui.n);
    url_span user, pass;
    int rc;

    if (ui.n == 0)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "empty user info before '@': write :password@ or "
                        "user:password@, or drop the '@'");
    if (colon == NULL)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "user name without a password: AUTH needs both "
                        "(write user:password@, or :password@ for the "
                        "default user)");
    user.p = ui.p;
    user.n = (size_t)(colon - ui.p);
    pass.p = colon + 1;
    pass.n = ui.n - user.n - 1;
    if (pass.n == 0)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "empty password after ':' (leave out the user info "
                        "to connect without AUTH)");

    /* An empty user (":password@") means the default user: plain AUTH. */
    if (user.n > 0) {
        rc = decode_part(user, "user name", 1, &u->user, err, errlen);
        if (rc != 0)
            return rc;
    }
    return decode_part(pass, "password", 1, &u->password, err, errlen);
}

/* Letters, digits, '.', '-', '_' (the '_' is not valid in DNS host names
 * but is common in container and /etc/hosts names, and harmless). */
static int check_host_name(url_span h, int quote, char *err, size_t errlen)
{
    size_t i;
    char sh[URL_QUOTE_MAX + 8];

    if (h.n > URL_MAX_HOST)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "host name is %zu characters long; at most %d are "
                        "allowed",
                        h.n, URL_MAX_HOST);
    for (i = 0; i < h.n; i++) {
        unsigned char c = (unsigned char)h.p[i];
        char what[16];

        if (is_alpha(c) || is_digit(c) || c == '.' || c == '-' || c == '_')
            continue;
        if (!quote)
            return url_fail(err, errlen, REDQ_EINVAL,
                            "invalid character in the host (letters, digits, "
                            "'.', '-' and '_' only)" URL_NO_AT_HINT);
        describe_byte(c, what, sizeof what);
        return url_fail(err, errlen, REDQ_EINVAL,
                        "invalid character %s in host%s (letters, "
                        "digits, '.', '-' and '_' only; IPv6 goes in [])",
                        what, shown(h, quote, sh, sizeof sh));
    }
    return 0;
}

/* The inside of "[...]". Checked character by character first for a precise
 * message, then by inet_pton, which also catches "[1.2.3.4]" and "[:::]".
 * Zone ids ("fe80::1%25eth0") are not supported. */
static int check_ipv6(url_span h, int quote, char *err, size_t errlen)
{
    char sh[URL_QUOTE_MAX + 8];
    char buf[INET6_ADDRSTRLEN];
    unsigned char addr[16];
    size_t i;

    if (h.n == 0)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "empty IPv6 address in \"[]\"");
    for (i = 0; i < h.n; i++) {
        unsigned char c = (unsigned char)h.p[i];
        char what[16];

        if (hex_value(c) >= 0 || c == ':' || c == '.')
            continue;
        if (!quote)
            return url_fail(err, errlen, REDQ_EINVAL,
                            "invalid character in the IPv6 address (hex "
                            "digits, ':' and '.' only)" URL_NO_AT_HINT);
        describe_byte(c, what, sizeof what);
        return url_fail(err, errlen, REDQ_EINVAL,
                        "invalid character %s in IPv6 address%s "
                        "(hex digits, ':' and '.' only)",
                        what, shown(h, quote, sh, sizeof sh));
    }
    if (h.n < sizeof buf) {
        memcpy(buf, h.p, h.n);
        buf[h.n] = '\0';
        if (inet_pton(AF_INET6, buf, addr) == 1)
            return 0;
    }
    if (!quote)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "not a valid IPv6 address" URL_NO_AT_HINT);
    return url_fail(err, errlen, REDQ_EINVAL,
                    "\"[%.*s]\" is not a valid IPv6 address", quote_len(h),
                    h.p);
}

static int parse_port(url_span s, int quote, int *port, char *err,
                      size_t errlen)
{
    long v = 0;
    char sh[URL_QUOTE_MAX + 8];
    const char *hint = quote ? "" : URL_NO_AT_HINT;

    switch (parse_decimal(s, 65535, &v)) {
    case NUM_EMPTY:
        return url_fail(err, errlen, REDQ_EINVAL,
                        "empty port after ':' (leave out the ':' for the "
                        "default %d)",
                        URL_DEFAULT_PORT);
    case NUM_NOT_DIGITS:
        return url_fail(err, errlen, REDQ_EINVAL, "port%s is not a number%s",
                        shown(s, quote, sh, sizeof sh), hint);
    case NUM_TOO_BIG:
        return url_fail(err, errlen, REDQ_EINVAL,
                        "port%s out of range 1-65535%s",
                        shown(s, quote, sh, sizeof sh), hint);
    default:
        break;
    }
    if (v == 0)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "port%s out of range 1-65535%s",
                        shown(s, quote, sh, sizeof sh), hint);
    *port = (int)v;
    return 0;
}

/* host, host:port, [v6] or [v6]:port; sets u->host and u->port. */
static int parse_host_port(url_span hp, int quote, int default_port,
                           char **host_out, int *port_out, char *err,
                           size_t errlen)
{
    url_span host, port = {NULL, 0};
    int has_port = 0;
    int rc;
    char sh[URL_QUOTE_MAX + 8];
    const char *hint = quote ? "" : URL_NO_AT_HINT;

    if (hp.n == 0)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "missing host: write redis://host[:port][/db]");

    if (hp.p[0] == '[') {
        const char *close = memchr(hp.p, ']', hp.n);
        url_span after;

        if (close == NULL)
            return url_fail(err, errlen, REDQ_EINVAL,
                            "IPv6 address%s has no closing ']'%s",
                            shown(hp, quote, sh, sizeof sh), hint);
        host.p = hp.p + 1;
        host.n = (size_t)(close - host.p);
        after.p = close + 1;
        after.n = hp.n - (size_t)(after.p - hp.p);
        if (after.n > 0) {
            if (after.p[0] != ':')
                return url_fail(err, errlen, REDQ_EINVAL,
                                "unexpected%s after the IPv6 address: "
                                "only :port may follow ']'%s",
                                shown(after, quote, sh, sizeof sh), hint);
            has_port = 1;
            port.p = after.p + 1;
            port.n = after.n - 1;
        }
        rc = check_ipv6(host, quote, err, errlen);
    } else {
        const char *colon = memchr(hp.p, ':', hp.n);

        host.p = hp.p;
        host.n = colon != NULL ? (size_t)(colon - hp.p) : hp.n;
        /* A second ':' can only mean a bare IPv6 address; without brackets
         * "fe80::1:6379" has no way to tell the port from the address. */
        if (colon != NULL &&
            memchr(colon + 1, ':', hp.n - host.n - 1) != NULL)
            return url_fail(err, errlen, REDQ_EINVAL,
                            "IPv6 address%s must be in brackets, e.g. "
                            "redis://[::1]:6379%s",
                            shown(hp, quote, sh, sizeof sh), hint);
        if (colon != NULL) {
            has_port = 1;
            port.p = colon + 1;
            port.n = hp.n - host.n - 1;
        }
        if (host.n == 0)
            return url_fail(err, errlen, REDQ_EINVAL,
                            "empty host: write redis://host[:port][/db]");
        rc = check_host_name(host, quote, err, errlen);
    }
    if (rc != 0)
        return rc;

    *port_out = default_port;
    if (has_port) {
        rc = parse_port(port, quote, port_out, err, errlen);
        if (rc != 0)
            return rc;
    }
    *host_out = span_dup(host);
    if (*host_out == NULL)
        return url_fail(err, errlen, REDQ_ENOMEM,
                        "out of memory copying the host");
    return 0;
}

/* A database index, 0..INT_MAX. `where` says where it came from. */
static int parse_db(url_span s, const char *where, int *db, char *err,
                    size_t errlen)
{
    long v = 0;

    switch (parse_decimal(s, INT_MAX, &v)) {
    case NUM_EMPTY:
        return url_fail(err, errlen, REDQ_EINVAL,
                        "empty database number %s", where);
    case NUM_NOT_DIGITS:
        return url_fail(err, errlen, REDQ_EINVAL,
                        "database \"%.*s\" %s is not a number", quote_len(s),
                        s.p, where);
    case NUM_TOO_BIG:
        return url_fail(err, errlen, REDQ_EINVAL,
                        "database \"%.*s\" %s is out of range 0-%d",
                        quote_len(s), s.p, where, INT_MAX);
    default:
        break;
    }
    *db = (int)v;
    return 0;
}

/*
 * "name=value&..." after '?'. db is known everywhere; sentinel_user and
 * sentinel_password only in redis+sentinel:// (u->is_sentinel). Anything
 * else is refused by name rather than ignored, so "?password=x" or
 * "?timeout=5" do not look as if they worked. Only names are quoted back,
 * never values. An empty query ("redis://host?") has no parameters and is
 * accepted.
 */
static int parse_query(url_span q, redq__url *u, int *have_db, char *err,
                       size_t errlen)
{
    const char *p = q.p;
    const char *end = q.p + q.n;

    if (q.n == 0)
        return 0;
    for (;;) {
        const char *amp = memchr(p, '&', (size_t)(end - p));
        url_span param = {p, (size_t)((amp != NULL ? amp : end) - p)};
        const char *eq = memchr(param.p, '=', param.n);
        url_span name = {param.p,
                         eq != NULL ? (size_t)(eq - param.p) : param.n};
        url_span value = {NULL, 0};
        char **secret = NULL;
        int rc;

        if (param.n == 0)
            return url_fail(err, errlen, REDQ_EINVAL,
                            "empty query parameter (a stray '&'?)");
        if (u->is_sentinel && span_is(name, "sentinel_password"))
            secret = &u->sentinel_password;
        else if (u->is_sentinel && span_is(name, "sentinel_user"))
            secret = &u->sentinel_user;
        else if (name.n != 2 || memcmp(name.p, "db", 2) != 0)
            return url_fail(err, errlen, REDQ_EINVAL,
                            "unknown query parameter \"%.*s\" (only db=N%s "
                            "is supported)",
                            quote_len(name), name.p,
                            u->is_sentinel
                                ? ", sentinel_user=U and sentinel_password=P"
                                : "");
        if (eq == NULL)
            return url_fail(err, errlen, REDQ_EINVAL,
                            "query parameter \"%.*s\" needs a value",
                            quote_len(name), name.p);
        value.p = eq + 1;
        value.n = param.n - name.n - 1;
        if (secret != NULL) {
            if (*secret != NULL)
                return url_fail(err, errlen, REDQ_EINVAL,
                                "query parameter \"%.*s\" given more than "
                                "once",
                                quote_len(name), name.p);
            if (value.n == 0)
                return url_fail(err, errlen, REDQ_EINVAL,
                                "query parameter \"%.*s\" is empty",
                                quote_len(name), name.p);
            rc = decode_part(value, secret == &u->sentinel_password
                                        ? "sentinel password"
                                        : "sentinel user name",
                             1, secret, err, errlen);
            if (rc != 0)
                return rc;
        } else {
            if (*have_db)
                return url_fail(err, errlen, REDQ_EINVAL,
                                "query parameter \"db\" given more than once");
            rc = parse_db(value, "in ?db=", &u->db, err, errlen);
            if (rc != 0)
                return rc;
            *have_db = 1;
        }
        if (amp == NULL)
            return 0;
        p = amp + 1;
    }
}

/*
 * A comma-separated node list "h1[:p1],h2[:p2],...", each like a redis://
 * host (names, IPv4, [IPv6]) with `default_port`: the sentinels of a
 * redis+sentinel:// URL, the seeds of a redis+cluster:// one. `what` names
 * them in errors ("sentinel", "cluster node"); *n counts the hosts copied
 * so far, so redq__url_free() releases them on any failure.
 */
static int parse_node_list(url_span hosts, int quote, int default_port,
                           size_t max, const char *what, const char *form,
                           redq__url_node **out, size_t *nout, char *err,
                           size_t errlen)
{
    const char *p = hosts.p, *end = hosts.p + hosts.n;
    size_t n = 1, i;

    for (i = 0; i < hosts.n; i++)
        if (hosts.p[i] == ',')
            n++;
    if (hosts.n == 0)
        return url_fail(err, errlen, REDQ_EINVAL, "missing %ss: write %s",
                        what, form);
    if (n > max)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "%zu %ss in the URL; at most %zu are allowed", n, what,
                        max);
    *out = calloc(n, sizeof **out);
    if (*out == NULL)
        return url_fail(err, errlen, REDQ_ENOMEM,
                        "out of memory copying the %ss", what);
    for (i = 0; i < n; i++) {
        const char *comma = memchr(p, ',', (size_t)(end - p));
        url_span one = {p, (size_t)((comma != NULL ? comma : end) - p)};
        int rc;

        if (one.n == 0)
            return url_fail(err, errlen, REDQ_EINVAL,
                            "empty %s address in the list (a stray ',')",
                            what);
        rc = parse_host_port(one, quote, default_port, &(*out)[i].host,
                             &(*out)[i].port, err, errlen);
        *nout = i + ((*out)[i].host != NULL ? 1 : 0);
        if (rc != 0)
            return rc;
        p = comma != NULL ? comma + 1 : end;
    }
    return 0;
}

static int parse_sentinels(url_span hosts, int quote, redq__url *u, char *err,
                           size_t errlen)
{
    return parse_node_list(hosts, quote, URL_SENTINEL_PORT, URL_MAX_SENTINELS,
                           "sentinel",
                           "redis+sentinel://host[:port][,host[:port]...]"
                           "/master_name",
                           &u->sentinels, &u->nsentinels, err, errlen);
}

/*
 * redis+cluster://: the seeds, then db (0 only: Redis Cluster has no other
 * database, and SELECT would fail on every node with a less useful
 * message), and host/port set to a copy of the first seed.
 */
static int parse_cluster(url_span hosts, url_span path, url_span query,
                         int quote, redq__url *u, char *err, size_t errlen)
{
    int have_query_db = 0;
    int rc;

    rc = parse_node_list(hosts, quote, URL_DEFAULT_PORT, URL_MAX_SEEDS,
                         "cluster node",
                         "redis+cluster://host[:port][,host[:port]...]",
                         &u->nodes, &u->nnodes, err, errlen);
    if (rc != 0)
        return rc;
    rc = parse_query(query, u, &have_query_db, err, errlen);
    if (rc != 0)
        return rc;
    if (path.n > 1) {
        url_span num = {path.p + 1, path.n - 1};

        if (have_query_db)
            return url_fail(err, errlen, REDQ_EINVAL,
                            "database given both in the path (/N) and as "
                            "?db=N; use one");
        rc = parse_db(num, "in the path", &u->db, err, errlen);
        if (rc != 0)
            return rc;
    }
    if (u->db != 0)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "database %d in a redis+cluster:// URL: Redis "
                        "Cluster has database 0 only (drop /N and ?db=N)",
                        u->db);
    u->host = malloc(strlen(u->nodes[0].host) + 1);
    if (u->host == NULL)
        return url_fail(err, errlen, REDQ_ENOMEM,
                        "out of memory copying the host");
    memcpy(u->host, u->nodes[0].host, strlen(u->nodes[0].host) + 1);
    u->port = u->nodes[0].port;
    return 0;
}

/* "/master_name[/db]": the name Sentinel knows the master by (letters,
 * digits and -_.: after %XX-decoding), then an optional database. */
static int parse_master_path(url_span path, redq__url *u, int have_query_db,
                             char *err, size_t errlen)
{
    url_span name, db = {NULL, 0};
    const char *slash;
    size_t i;
    int rc;

    if (path.n <= 1)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "redis+sentinel:// URL needs the master's name: "
                        "redis+sentinel://host:26379/mymaster");
    name.p = path.p + 1;
    slash = memchr(name.p, '/', path.n - 1);
    name.n = slash != NULL ? (size_t)(slash - name.p) : path.n - 1;
    if (slash != NULL) {
        db.p = slash + 1;
        db.n = path.n - 1 - name.n - 1;
    }
    if (name.n == 0)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "empty master name in the path: "
                        "redis+sentinel://host:26379/mymaster");
    rc = decode_part(name, "master name", 0, &u->master_name, err, errlen);
    if (rc != 0)
        return rc;
    if (strlen(u->master_name) > URL_MAX_MASTER_NAME)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "master name is %zu bytes long; at most %d",
                        strlen(u->master_name), URL_MAX_MASTER_NAME);
    for (i = 0; u->master_name[i] != '\0'; i++) {
        unsigned char c = (unsigned char)u->master_name[i];
        char what[16];
        if (is_alpha(c) || is_digit(c) || c == '-' || c == '_' || c == '.' ||
            c == ':')
            continue;
        describe_byte(c, what, sizeof what);
        return url_fail(err, errlen, REDQ_EINVAL,
                        "invalid character %s in the master name (letters, "
                        "digits and -_.: only)",
                        what);
    }
    if (db.p != NULL && db.n > 0) {
        if (have_query_db)
            return url_fail(err, errlen, REDQ_EINVAL,
                            "database given both in the path (/N) and as "
                            "?db=N; use one");
        return parse_db(db, "in the path", &u->db, err, errlen);
    }
    return 0;
}

/* The decoded unix socket path. The raw path starts with '/' (the authority
 * ended there), and decoding cannot change the first byte, so it is
 * absolute; only its decoded length needs checking. */
static int parse_unix_path(url_span path, redq__url *u, char *err,
                           size_t errlen)
{
    size_t len;
    int rc;

    if (path.n == 0)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "unix:// URL needs an absolute socket path, e.g. "
                        "unix:///run/redis.sock");
    rc = decode_part(path, "socket path", 0, &u->path, err, errlen);
    if (rc != 0)
        return rc;
    len = strlen(u->path);
    if (len > URL_MAX_UNIX_PATH)
        return url_fail(err, errlen, REDQ_EINVAL,
                        "socket path is %zu bytes long; a unix socket path "
                        "is at most %d",
                        len, URL_MAX_UNIX_PATH);
    return 0;
}

/*
 * Parse url into *out. See redq_private.h for the contract; in short:
 * 0, REDQ_EINVAL (err says why) or REDQ_ENOMEM, and on failure *out is
 * zeroed and owns nothing. err, when given, is always NUL-terminated: it is
 * "" on success. No side effects beyond *out and err; safe anywhere.
 */
int redq__url_parse(redq__url *out, const char *url, char *err, size_t errlen)
{
    redq__url u;
    const char *rest = NULL, *at = NULL, *qmark;
    url_span auth, tail, path, query;
    int have_query_db = 0;
    int rc;
    size_t i;

    /* Built in a local and copied out only on success, so *out is never
     * seen half-filled. */
    memset(&u, 0, sizeof u);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (out == NULL || url == NULL)
        return url_fail(err, errlen, REDQ_EINVAL, "%s is NULL",
                        out == NULL ? "out" : "url");

    rc = parse_scheme(url, &u.is_unix, &u.is_sentinel, &u.is_cluster, &rest,
                      err, errlen);
    if (rc != 0)
        goto fail;

    /* Refuse rather than drop a fragment: a '#' is far more likely a raw
     * '#' in a password than a fragment meant to be ignored. */
    if (strchr(rest, '#') != NULL) {
        rc = url_fail(err, errlen, REDQ_EINVAL,
                      "URL fragment ('#...') is not allowed; write a '#' in "
                      "a password as %%23");
        goto fail;
    }

    auth.p = rest;
    auth.n = strcspn(rest, "/?");
    tail.p = rest + auth.n;
    tail.n = strlen(tail.p);
    for (i = 0; i < auth.n; i++)
        if (auth.p[i] == '@')
            at = auth.p + i;

    /* "redis://:pa/ss@host": the authority ended at the raw '/' inside the
     * password. Say so instead of complaining about a host or port made of
     * password pieces (and quoting them). A redis:// path or query never
     * contains '@'; a unix:// path may, so there the check below does it. */
    if (at == NULL && !u.is_unix && memchr(tail.p, '@', tail.n) != NULL) {
        rc = url_fail(err, errlen, REDQ_EINVAL,
                      "'@' after the host part: percent-encode '/' as %%2F "
                      "and '?' as %%3F in the user name and password");
        goto fail;
    }

    if (at != NULL) {
        url_span ui = {auth.p, (size_t)(at - auth.p)};

        rc = parse_userinfo(ui, &u, err, errlen);
        if (rc != 0)
            goto fail;
        auth.n -= ui.n + 1;
        auth.p = at + 1;
    }

    qmark = memchr(tail.p, '?', tail.n);
    path.p = tail.p;
    path.n = qmark != NULL ? (size_t)(qmark - tail.p) : tail.n;
    query.p = qmark != NULL ? qmark + 1 : tail.p + tail.n;
    query.n = tail.n - path.n - (qmark != NULL ? 1 : 0);

    if (u.is_unix) {
        /* Nothing may sit between "//" (or the '@') and the path: not a
         * host, and not a relative path ("unix://tmp/redis.sock" would
         * otherwise mean "tmp" as a host). Not quoted: it may hold a
         * password cut short by a raw '/'. */
        if (auth.n > 0) {
            rc = url_fail(err, errlen, REDQ_EINVAL,
                          "unix:// URL takes no host and the socket path "
                          "must be absolute: unix:///run/redis.sock or "
                          "unix://:password@/run/redis.sock (percent-encode "
                          "'/' in a password as %%2F)");
            goto fail;
        }
        rc = parse_unix_path(path, &u, err, errlen);
        if (rc != 0)
            goto fail;
        rc = parse_query(query, &u, &have_query_db, err, errlen);
        if (rc != 0)
            goto fail;
    } else if (u.is_cluster) {
        int quote = at != NULL || memchr(auth.p, ':', auth.n) == NULL;
        rc = parse_cluster(auth, path, query, quote, &u, err, errlen);
        if (rc != 0)
            goto fail;
    } else if (u.is_sentinel) {
        int quote = at != NULL || memchr(auth.p, ':', auth.n) == NULL;
        rc = parse_sentinels(auth, quote, &u, err, errlen);
        if (rc != 0)
            goto fail;
        rc = parse_query(query, &u, &have_query_db, err, errlen);
        if (rc != 0)
            goto fail;
        rc = parse_master_path(path, &u, have_query_db, err, errlen);
        if (rc != 0)
            goto fail;
    } else {
        /* Quote from the host part only when it cannot be user info that
         * lost its host: after an '@', or with no ':' in it (user info is
         * always "user:password"), or a whole IPv6 literal "[...]". */
        int quote = at != NULL || memchr(auth.p, ':', auth.n) == NULL ||
                    (auth.n > 0 && auth.p[0] == '[' &&
                     memchr(auth.p, ']', auth.n) != NULL);
        rc = parse_host_port(auth, quote, URL_DEFAULT_PORT, &u.host, &u.port,
                             err, errlen);
        if (rc != 0)
            goto fail;
        rc = parse_query(query, &u, &have_query_db, err, errlen);
        if (rc != 0)
            goto fail;
        /* "" and "/" select nothing (db 0 unless ?db= says otherwise). */
        if (path.n > 1) {
            url_span num = {path.p + 1, path.n - 1};

            if (have_query_db) {
                rc = url_fail(err, errlen, REDQ_EINVAL,
                              "database given both in the path (/N) and as "
                              "?db=N; use one");
                goto fail;
            }
            rc = parse_db(num, "in the path", &u.db, err, errlen);
            if (rc != 0)
                goto fail;
        }
    }

    *out = u;
    return 0;

fail:
    redq__url_free(&u);
    return rc;
}

/* Free the strings and zero *u, so a second call (or one on a struct that
 * was never parsed into) is harmless. */
void redq__url_free(redq__url *u)
{
    size_t i;

    if (u == NULL)
        return;
    free(u->host);
    free(u->path);
    free(u->user);
    wipe_free(u->password);
    for (i = 0; i < u->nsentinels; i++)
        free(u->sentinels[i].host);
    free(u->sentinels);
    for (i = 0; i < u->nnodes; i++)
        free(u->nodes[i].host);
    free(u->nodes);
    free(u->master_name);
    wipe_free(u->sentinel_user);
    wipe_free(u->sentinel_password);
    memset(u, 0, sizeof *u);
}

/* ---- the public face: redq_url_parse (redq.h) ---------------------------- */

/* redq.h. The strings of the internal parse move into *out (no copy, no
 * second parser); only the Sentinel array is rebuilt, as the public node
 * holds const strings. */
int redq_url_parse(const char *url, redq_url_info *out, char *err,
                   size_t errlen)
{
    redq__url u;
    int rc;

    if (out != NULL)
        memset(out, 0, sizeof *out);
    if (err != NULL && errlen > 0)
        err[0] = '\0';
    if (url == NULL || out == NULL) {
        if (err != NULL && errlen > 0)
            snprintf(err, errlen, "%s is NULL", url == NULL ? "url" : "out");
        return REDQ_EINVAL;
    }
    rc = redq__url_parse(&u, url, err, errlen);
    if (rc != 0)
        return rc;
    if (u.nsentinels > 0) {
        redq_url_node *nodes = calloc(u.nsentinels, sizeof *nodes);
        size_t i;

        if (nodes == NULL) {
            redq__url_free(&u);
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "out of memory");
            return REDQ_ENOMEM;
        }
        for (i = 0; i < u.nsentinels; i++) {
            nodes[i].host = u.sentinels[i].host;
            nodes[i].port = u.sentinels[i].port;
        }
        free(u.sentinels); /* the hosts now belong to nodes */
        out->sentinels = nodes;
        out->nsentinels = u.nsentinels;
    }
    if (u.nnodes > 0) {
        redq_url_node *nodes = calloc(u.nnodes, sizeof *nodes);
        size_t i;

        if (nodes == NULL) {
            redq__url_free(&u);
            redq_url_info_free(out);
            if (err != NULL && errlen > 0)
                snprintf(err, errlen, "out of memory");
            return REDQ_ENOMEM;
        }
        for (i = 0; i < u.nnodes; i++) {
            nodes[i].host = u.nodes[i].host;
            nodes[i].port = u.nodes[i].port;
        }
        free(u.nodes); /* the hosts now belong to nodes */
        out->nodes = nodes;
        out->nnodes = u.nnodes;
    }
    out->kind = u.is_cluster    ? REDQ_URL_CLUSTER
                : u.is_sentinel ? REDQ_URL_SENTINEL
                : u.is_unix   ? REDQ_URL_UNIX
                              : REDQ_URL_TCP;
    out->host = u.host;
    out->port = u.port;
    out->path = u.path;
    out->user = u.user;
    out->password = u.password;
    out->db = u.db;
    out->master_name = u.master_name;
    out->sentinel_user = u.sentinel_user;
    out->sentinel_password = u.sentinel_password;
    return 0;
}

/* redq.h. The strings were malloc'd by the parser; the struct shows them
 * const so that callers do not write into them. */
void redq_url_info_free(redq_url_info *u)
{
    size_t i;

    if (u == NULL)
        return;
    for (i = 0; i < u->nsentinels; i++)
        free((char *)u->sentinels[i].host);
    free((redq_url_node *)u->sentinels);
    for (i = 0; i < u->nnodes; i++)
        free((char *)u->nodes[i].host);
    free((redq_url_node *)u->nodes);
    free((char *)u->host);
    free((char *)u->path);
    free((char *)u->user);
    wipe_free((char *)u->password); /* secrets: not left in freed memory */
    free((char *)u->master_name);
    wipe_free((char *)u->sentinel_user);
    wipe_free((char *)u->sentinel_password);
    memset(u, 0, sizeof *u);
}
