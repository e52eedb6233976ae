/*
 * redq__url_parse / redq__url_free: every accepted form, every rejected form
 * (code, a telling word in the message, *out zeroed), the err buffer
 * contract, and that passwords never show up in error messages.
 */
#include <criterion/criterion.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#include "redq_private.h"

#define ERRLEN 256

/* Garbage that a zeroing failure path would have to overwrite. */
static void fill_garbage(redq__url *u)
{
    memset(u, 0xA5, sizeof *u);
}

static void assert_zeroed(const redq__url *u, const char *url)
{
    cr_assert_eq(u->is_unix, 0, "%s: is_unix not zeroed", url);
    cr_assert_null(u->host, "%s: host not zeroed", url);
    cr_assert_eq(u->port, 0, "%s: port not zeroed", url);
    cr_assert_null(u->path, "%s: path not zeroed", url);
    cr_assert_null(u->user, "%s: user not zeroed", url);
    cr_assert_null(u->password, "%s: password not zeroed", url);
    cr_assert_eq(u->db, 0, "%s: db not zeroed", url);
    cr_assert_eq(u->is_cluster, 0, "%s: is_cluster not zeroed", url);
    cr_assert_eq(u->nnodes, 0, "%s: nnodes not zeroed", url);
    cr_assert_null(u->nodes, "%s: nodes not zeroed", url);
}

static void assert_str_or_null(const char *got, const char *want,
                               const char *field, const char *url)
{
    if (want == NULL) {
        cr_assert_null(got, "%s: %s should be NULL, is \"%s\"", url, field,
                       got);
    } else {
        cr_assert_not_null(got, "%s: %s is NULL, want \"%s\"", url, field,
                           want);
        cr_assert_str_eq(got, want, "%s: %s is \"%s\", want \"%s\"", url,
                         field, got, want);
    }
}

/* Parse a redis:// URL that must be accepted and check every field. */
static void expect_tcp(const char *url, const char *host, int port,
                       const char *user, const char *password, int db)
{
    redq__url u;
    char err[ERRLEN];
    int rc;

    fill_garbage(&u);
    rc = redq__url_parse(&u, url, err, sizeof err);
    cr_assert_eq(rc, 0, "%s: rc %d (%s)", url, rc, err);
    cr_assert_str_eq(err, "", "%s: err not cleared on success", url);
    cr_assert_eq(u.is_unix, 0, "%s: is_unix", url);
    assert_str_or_null(u.host, host, "host", url);
    cr_assert_eq(u.port, port, "%s: port %d, want %d", url, u.port, port);
    cr_assert_null(u.path, "%s: path should be NULL", url);
    assert_str_or_null(u.user, user, "user", url);
    assert_str_or_null(u.password, password, "password", url);
    cr_assert_eq(u.db, db, "%s: db %d, want %d", url, u.db, db);
    redq__url_free(&u);
    assert_zeroed(&u, url);
}

/* Parse a unix:// URL that must be accepted and check every field. */
static void expect_unix(const char *url, const char *path, const char *user,
                        const char *password, int db)
{
    redq__url u;
    char err[ERRLEN];
    int rc;

    fill_garbage(&u);
    rc = redq__url_parse(&u, url, err, sizeof err);
    cr_assert_eq(rc, 0, "%s: rc %d (%s)", url, rc, err);
    cr_assert_eq(u.is_unix, 1, "%s: is_unix", url);
    cr_assert_null(u.host, "%s: host should be NULL", url);
    cr_assert_eq(u.port, 0, "%s: port %d, want 0", url, u.port);
    assert_str_or_null(u.path, path, "path", url);
    assert_str_or_null(u.user, user, "user", url);
    assert_str_or_null(u.password, password, "password", url);
    cr_assert_eq(u.db, db, "%s: db %d, want %d", url, u.db, db);
    redq__url_free(&u);
    assert_zeroed(&u, url);
}

/* The URL must be refused with REDQ_EINVAL, a message containing `word`,
 * and *out zeroed. */
static void expect_einval(const char *url, const char *word)
{
    redq__url u;
    char err[ERRLEN];
    int rc;

    fill_garbage(&u);
    memset(err, 'x', sizeof err);
    rc = redq__url_parse(&u, url, err, sizeof err);
    cr_assert_eq(rc, REDQ_EINVAL, "%s: rc %d, want REDQ_EINVAL", url, rc);
    cr_assert_not_null(memchr(err, '\0', sizeof err),
                       "%s: err not NUL-terminated", url);
    cr_assert_not_null(strstr(err, word),
                       "%s: error \"%s\" does not mention \"%s\"", url, err,
                       word);
    assert_zeroed(&u, url);
}

/* ---- accepted: redis:// ---------------------------------------------- */

Test(url_ok, host_only_defaults)
{
    expect_tcp("redis://localhost", "localhost", 6379, NULL, NULL, 0);
    expect_tcp("redis://127.0.0.1", "127.0.0.1", 6379, NULL, NULL, 0);
}

Test(url_ok, host_and_port)
{
    expect_tcp("redis://127.0.0.1:6380", "127.0.0.1", 6380, NULL, NULL, 0);
    expect_tcp("redis://h:1", "h", 1, NULL, NULL, 0);
    expect_tcp("redis://h:65535", "h", 65535, NULL, NULL, 0);
    /* Leading zeros are still decimal digits. */
    expect_tcp("redis://h:06379", "h", 6379, NULL, NULL, 0);
}

Test(url_ok, host_name_characters)
{
    expect_tcp("redis://redis-master_1.svc.cluster.local:7000",
               "redis-master_1.svc.cluster.local", 7000, NULL, NULL, 0);
    expect_tcp("redis://REDIS.Example.COM", "REDIS.Example.COM", 6379, NULL,
               NULL, 0);
}

Test(url_ok, host_name_253_chars)
{
    char url[300], host[254];

    memset(host, 'a', 253);
    host[253] = '\0';
    snprintf(url, sizeof url, "redis://%s:6379", host);
    expect_tcp(url, host, 6379, NULL, NULL, 0);
}

Test(url_ok, db_in_path)
{
    expect_tcp("redis://h/", "h", 6379, NULL, NULL, 0);
    expect_tcp("redis://h/0", "h", 6379, NULL, NULL, 0);
    expect_tcp("redis://h/5", "h", 6379, NULL, NULL, 5);
    expect_tcp("redis://h:6380/15", "h", 6380, NULL, NULL, 15);
    expect_tcp("redis://h/2147483647", "h", 6379, NULL, NULL, INT_MAX);
}

Test(url_ok, db_in_query)
{
    expect_tcp("redis://h?db=4", "h", 6379, NULL, NULL, 4);
    expect_tcp("redis://h/?db=4", "h", 6379, NULL, NULL, 4);
    expect_tcp("redis://h:1234?db=0", "h", 1234, NULL, NULL, 0);
    /* An empty query has no parameters. */
    expect_tcp("redis://h/3?", "h", 6379, NULL, NULL, 3);
}

Test(url_ok, password_only)
{
    expect_tcp("redis://:secret@h", "h", 6379, NULL, "secret", 0);
    expect_tcp("redis://:secret@h:6380/2", "h", 6380, NULL, "secret", 2);
}

Test(url_ok, user_and_password)
{
    expect_tcp("redis://alice:secret@h", "h", 6379, "alice", "secret", 0);
    expect_tcp("redis://alice:secret@10.0.0.1:6380/7", "10.0.0.1", 6380,
               "alice", "secret", 7);
    expect_tcp("redis://alice:secret@h?db=9", "h", 6379, "alice", "secret",
               9);
}

Test(url_ok, raw_colon_and_at_in_password)
{
    /* Everything after the first ':' is the password; the user info ends at
     * the last '@' of the authority. */
    expect_tcp("redis://u:a:b@h", "h", 6379, "u", "a:b", 0);
    expect_tcp("redis://:p@ss@h", "h", 6379, NULL, "p@ss", 0);
    expect_tcp("redis://u:p@s:s@h:1/1", "h", 1, "u", "p@s:s", 1);
}

Test(url_ok, percent_decoding_userinfo)
{
    expect_tcp("redis://us%65r:p%40ss%3Aw%2Fd%3F%23%25@h", "h", 6379, "user",
               "p@ss:w/d?#%", 0);
    /* Upper and lower case hex, and bytes above 0x7f (UTF-8). */
    expect_tcp("redis://%C3%a9:%2f%2F@h", "h", 6379, "\xc3\xa9", "//", 0);
    /* '+' is not a space here (that is form encoding, not URLs). */
    expect_tcp("redis://:a+b%20c@h", "h", 6379, NULL, "a+b c", 0);
}

Test(url_ok, ipv6)
{
    expect_tcp("redis://[::1]", "::1", 6379, NULL, NULL, 0);
    expect_tcp("redis://[::1]:6380", "::1", 6380, NULL, NULL, 0);
    expect_tcp("redis://[::1]:6380/3", "::1", 6380, NULL, NULL, 3);
    expect_tcp("redis://[2001:DB8::a:1]/1", "2001:DB8::a:1", 6379, NULL,
               NULL, 1);
    expect_tcp("redis://[::ffff:192.0.2.1]", "::ffff:192.0.2.1", 6379, NULL,
               NULL, 0);
    expect_tcp("redis://u:p@[fe80::1]:7000?db=2", "fe80::1", 7000, "u", "p",
               2);
}

Test(url_ok, scheme_is_case_insensitive)
{
    expect_tcp("REDIS://h", "h", 6379, NULL, NULL, 0);
    expect_tcp("Redis://h:1/2", "h", 1, NULL, NULL, 2);
    expect_unix("UNIX:///tmp/r.sock", "/tmp/r.sock", NULL, NULL, 0);
    expect_unix("uNiX:///tmp/r.sock?db=1", "/tmp/r.sock", NULL, NULL, 1);
}

/* ---- accepted: unix:// ----------------------------------------------- */

Test(url_ok, unix_path)
{
    expect_unix("unix:///tmp/redis.sock", "/tmp/redis.sock", NULL, NULL, 0);
    expect_unix("unix:////tmp/redis.sock", "//tmp/redis.sock", NULL, NULL,
                0);
    /* '@' in a unix path is part of the path. */
    expect_unix("unix:///tmp/a@b.sock", "/tmp/a@b.sock", NULL, NULL, 0);
    /* "/0" is part of a unix path, not a database. */
    expect_unix("unix:///tmp/r.sock/0", "/tmp/r.sock/0", NULL, NULL, 0);
}

Test(url_ok, unix_db)
{
    expect_unix("unix:///tmp/redis.sock?db=3", "/tmp/redis.sock", NULL, NULL,
                3);
    expect_unix("unix:///tmp/redis.sock?db=2147483647", "/tmp/redis.sock",
                NULL, NULL, INT_MAX);
}

Test(url_ok, unix_with_userinfo)
{
    expect_unix("unix://:pw@/run/redis.sock", "/run/redis.sock", NULL, "pw",
                0);
    expect_unix("unix://bob:pw@/run/redis.sock?db=1", "/run/redis.sock",
                "bob", "pw", 1);
}

Test(url_ok, unix_percent_decoding)
{
    expect_unix("unix:///tmp/my%20sock", "/tmp/my sock", NULL, NULL, 0);
    expect_unix("unix:///tmp/a%3Fb%23c.sock?db=2", "/tmp/a?b#c.sock", NULL,
                NULL, 2);
}

Test(url_ok, unix_path_107_bytes)
{
    char url[300], path[108];

    path[0] = '/';
    memset(path + 1, 'p', 106);
    path[107] = '\0';
    snprintf(url, sizeof url, "unix://%s", path);
    expect_unix(url, path, NULL, NULL, 0);
}

Test(url_ok, unix_path_limit_counts_decoded_bytes)
{
    /* 3 * 60 raw bytes of %41, 60 decoded: the limit is on the result. */
    char url[400], want[100];
    size_t i, n;

    n = (size_t)snprintf(url, sizeof url, "unix:///");
    for (i = 0; i < 60; i++)
        n += (size_t)snprintf(url + n, sizeof url - n, "%%41");
    want[0] = '/';
    memset(want + 1, 'A', 60);
    want[61] = '\0';
    cr_assert_gt(strlen(url), 107);
    expect_unix(url, want, NULL, NULL, 0);
}

/* ---- rejected: scheme and overall shape -------------------------------- */

Test(url_bad, no_scheme)
{
    expect_einval("", "redis://");
    expect_einval("localhost:6379", "redis://");
    expect_einval("redis:/h", "redis://");
    expect_einval("redis:h", "unix://");
    expect_einval("//h:6379", "redis://");
}

Test(url_bad, other_scheme_is_named)
{
    expect_einval("http://h", "\"http://\"");
    expect_einval("redis+unix:///tmp/s", "\"redis+unix://\"");
    expect_einval("valkey://h:6379", "valkey");
    /* Prefixes and extensions of the known schemes are other schemes. */
    expect_einval("redi://h", "\"redi://\"");
    expect_einval("redisx://h", "\"redisx://\"");
    expect_einval("uni:///tmp/s", "\"uni://\"");
    expect_einval("redis2://h", "\"redis2://\"");
}

Test(url_bad, tls_scheme)
{
    expect_einval("rediss://h:6380", "TLS (rediss://) is not supported");
    expect_einval("REDISS://h", "TLS");
}

Test(url_bad, fragment)
{
    expect_einval("redis://h#frag", "fragment");
    expect_einval("redis://h/0#", "fragment");
    expect_einval("redis://:pa#ss@h", "fragment");
    expect_einval("unix:///tmp/s.sock#x", "fragment");
}

/* ---- rejected: user info ---------------------------------------------- */

Test(url_bad, user_without_password)
{
    expect_einval("redis://alice@h", "user name without a password");
    expect_einval("redis://alice@h", "AUTH needs both");
    expect_einval("unix://alice@/tmp/s", "without a password");
}

Test(url_bad, empty_password)
{
    expect_einval("redis://:@h", "empty password");
    expect_einval("redis://alice:@h", "empty password");
    expect_einval("unix://:@/tmp/s", "empty password");
}

Test(url_bad, empty_userinfo)
{
    expect_einval("redis://@h", "'@'");
}

Test(url_bad, bad_percent_escapes)
{
    expect_einval("redis://:pw%zz@h", "percent-escape");
    expect_einval("redis://:pw%4@h", "percent-escape");
    expect_einval("redis://:pw%@h", "percent-escape");
    expect_einval("redis://:pw%4g@h", "percent-escape");
    expect_einval("redis://us%x1er:pw@h", "user name");
    expect_einval("unix:///tmp/s%2", "socket path");
    expect_einval("unix:///tmp/s%", "percent-escape");
}

Test(url_bad, decoded_nul)
{
    expect_einval("redis://:pass%00word@h", "NUL");
    expect_einval("redis://us%00er:pw@h", "NUL");
    expect_einval("unix:///tmp/s%00x", "NUL");
}

Test(url_bad, raw_slash_or_question_mark_in_password)
{
    expect_einval("redis://:pa/ss@h", "%2F");
    expect_einval("redis://u:pa?ss@h:6379/0", "percent-encode");
    expect_einval("unix://:pa/ss@/tmp/s", "%2F");
}

/* ---- rejected: host ---------------------------------------------------- */

Test(url_bad, missing_or_empty_host)
{
    expect_einval("redis://", "host");
    expect_einval("redis:///0", "host");
    expect_einval("redis://?db=1", "host");
    expect_einval("redis://:6379", "empty host");
    expect_einval("redis://:pw@", "host");
    expect_einval("redis://u:pw@:6379/0", "empty host");
}

Test(url_bad, host_characters)
{
    expect_einval("redis://ho st", "invalid character ' '");
    expect_einval("redis://h%41", "invalid character '%'");
    expect_einval("redis://h!x", "host \"h!x\"");
    expect_einval("redis://:pw@h!x:6379", "host \"h!x\"");
    /* With a ':' and no '@' it may be user:password: nothing quoted. */
    expect_einval("redis://h!x:6379", "invalid character in the host");
    expect_einval("redis://h\n", "byte 0x0a");
}

Test(url_bad, host_too_long)
{
    char url[300];

    memcpy(url, "redis://", 8);
    memset(url + 8, 'a', 254);
    url[8 + 254] = '\0';
    expect_einval(url, "253");
}

Test(url_bad, ipv6)
{
    expect_einval("redis://[::1", "']'");
    expect_einval("redis://[]", "empty IPv6");
    expect_einval("redis://[::g]", "invalid character 'g'");
    expect_einval("redis://[fe80::1%25eth0]", "IPv6");
    expect_einval("redis://[1.2.3.4]", "not a valid IPv6");
    expect_einval("redis://[:::]", "not a valid IPv6");
    expect_einval("redis://[::1]x", "after the IPv6");
    expect_einval("redis://[::1]6379", "after the IPv6");
    expect_einval("redis://[::1]:", "empty port");
}

Test(url_bad, ipv6_without_brackets)
{
    expect_einval("redis://::1", "brackets");
    expect_einval("redis://fe80::1:6379", "brackets");
    expect_einval("redis://h:1:2", "brackets");
}

/* ---- rejected: port ---------------------------------------------------- */

Test(url_bad, port)
{
    expect_einval("redis://h:", "empty port");
    expect_einval("redis://h:/0", "empty port");
    expect_einval("redis://h:0", "port out of range 1-65535");
    expect_einval("redis://:pw@h:0", "port \"0\" out of range 1-65535");
    expect_einval("redis://h:65536", "out of range 1-65535");
    expect_einval("redis://u:pw@h:70000",
                  "port \"70000\" out of range 1-65535");
    expect_einval("redis://h:99999999999999999999999", "out of range");
    expect_einval("redis://h:abc", "port is not a number");
    expect_einval("redis://:pw@h:abc", "port \"abc\" is not a number");
    expect_einval("redis://h:-1", "not a number");
    expect_einval("redis://h:+1", "not a number");
    expect_einval("redis://h: 1", "not a number");
    expect_einval("redis://h:0x10", "not a number");
    expect_einval("redis://[::1]:99999", "out of range");
}

/* ---- rejected: database ------------------------------------------------ */

Test(url_bad, db_in_path)
{
    expect_einval("redis://h/abc",
                  "database \"abc\" in the path is not a number");
    expect_einval("redis://h/-1", "not a number");
    expect_einval("redis://h/1/2", "not a number");
    expect_einval("redis://h//", "not a number");
    expect_einval("redis://h/2147483648", "out of range 0-2147483647");
    expect_einval("redis://h/99999999999999999999", "out of range");
}

Test(url_bad, db_in_query)
{
    expect_einval("redis://h?db=", "empty database");
    expect_einval("redis://h?db", "needs a value");
    expect_einval("redis://h?db=x", "not a number");
    expect_einval("redis://h?db=2147483648", "out of range");
    expect_einval("unix:///tmp/s?db=abc", "not a number");
    expect_einval("unix:///tmp/s?db=-3", "not a number");
    expect_einval("unix:///tmp/s?db=", "empty database");
}

Test(url_bad, db_twice)
{
    expect_einval("redis://h/1?db=2", "both");
    expect_einval("redis://h/0?db=0", "both");
    expect_einval("redis://h?db=1&db=2", "more than once");
    expect_einval("unix:///tmp/s?db=1&db=1", "more than once");
}

Test(url_bad, unknown_query_parameter)
{
    expect_einval("redis://h?foo=1", "\"foo\"");
    expect_einval("redis://h/0?timeout=5",
                  "unknown query parameter \"timeout\"");
    expect_einval("redis://h?db=1&ssl=true", "\"ssl\"");
    expect_einval("redis://h?DB=1", "\"DB\"");
    expect_einval("unix:///tmp/s?password=x", "\"password\"");
    expect_einval("redis://h?db=1&", "empty query parameter");
    expect_einval("redis://h?&db=1", "empty query parameter");
}

/* ---- rejected: unix:// ------------------------------------------------- */

Test(url_bad, unix_needs_absolute_path)
{
    expect_einval("unix://", "absolute");
    expect_einval("unix://?db=1", "absolute");
    expect_einval("unix://:pw@", "absolute");
    expect_einval("unix://tmp/redis.sock", "absolute");
    expect_einval("unix://localhost/tmp/redis.sock", "absolute");
    expect_einval("unix://:pw@relative.sock", "absolute");
}

Test(url_bad, unix_path_too_long)
{
    char url[300];

    memcpy(url, "unix:///", 8);
    memset(url + 8, 'p', 107); /* '/' + 107 = 108 bytes */
    url[8 + 107] = '\0';
    expect_einval(url, "107");
    expect_einval(url, "108 bytes");
}

Test(url_bad, unix_path_too_long_after_decoding_is_counted_decoded)
{
    /* 100 raw chars + "%41" x 8: 108 decoded bytes. */
    char url[300];
    size_t n;

    memcpy(url, "unix:///", 8);
    memset(url + 8, 'p', 99);
    n = 8 + 99;
    memcpy(url + n, "%41%41%41%41%41%41%41%41", 24);
    url[n + 24] = '\0';
    expect_einval(url, "108 bytes");
}

/* ---- passwords are never quoted --------------------------------------- */

Test(url_bad, password_never_in_error)
{
    /* The password is "Zq9secret" or a piece of it. */
    static const char *const urls[] = {
        "redis://:Zq9secret@bad host",
        "redis://:Zq9secret@h:0",
        "redis://u:Zq9se%zzcret@h",
        "redis://u:Zq9secret%4@h",
        "redis://u:Zq9secret%00@h",
        "redis://Zq9secret@h",
        "redis://:Zq9/secret@h",
        "redis://:Zq9?secret@h",
        "redis://:Zq9#secret@h",
        "unix://:Zq9/secret@/tmp/s",
        "Zq9secret@h",
        "x:Zq9secret@h://",
        "http://:Zq9secret@h",
    };
    size_t i;

    for (i = 0; i < sizeof urls / sizeof urls[0]; i++) {
        redq__url u;
        char err[ERRLEN];
        int rc = redq__url_parse(&u, urls[i], err, sizeof err);

        cr_assert_eq(rc, REDQ_EINVAL, "%s: rc %d", urls[i], rc);
        cr_assert_neq(err[0], '\0', "%s: no message", urls[i]);
        cr_assert_null(strstr(err, "Zq9"), "%s: password in \"%s\"",
                       urls[i], err);
        cr_assert_null(strstr(err, "secret"), "%s: password in \"%s\"",
                       urls[i], err);
        assert_zeroed(&u, urls[i]);
    }
}

Test(url_bad, only_non_secret_parts_are_quoted)
{
    /* Next to a password, the bad piece (a port, a db, a parameter name) is
     * still quoted, but the password is not. */
    static const struct {
        const char *url, *quoted;
    } cases[] = {
        {"redis://:Zq9secret@h:Xport", "\"Xport\""},
        {"redis://:Zq9secret@h?db=Xdb", "\"Xdb\""},
        {"redis://:Zq9secret@h?Xparam=1", "\"Xparam\""},
        {"unix://:Zq9secret@/tmp/s?Xparam=1", "\"Xparam\""},
        {"redis://:Zq9secret@[::Xv6]", "'X'"},
    };
    size_t i;

    for (i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        redq__url u;
        char err[ERRLEN];
        int rc = redq__url_parse(&u, cases[i].url, err, sizeof err);

        cr_assert_eq(rc, REDQ_EINVAL, "%s: rc %d", cases[i].url, rc);
        cr_assert_not_null(strstr(err, cases[i].quoted),
                           "%s: \"%s\" does not quote %s", cases[i].url, err,
                           cases[i].quoted);
        cr_assert_null(strstr(err, "Zq9"), "%s: password in \"%s\"",
                       cases[i].url, err);
        assert_zeroed(&u, cases[i].url);
    }
}

/* ---- arguments and the err buffer -------------------------------------- */

Test(url_args, null_url)
{
    redq__url u;
    char err[ERRLEN];

    fill_garbage(&u);
    cr_assert_eq(redq__url_parse(&u, NULL, err, sizeof err), REDQ_EINVAL);
    cr_assert_not_null(strstr(err, "url"), "err: \"%s\"", err);
    assert_zeroed(&u, "(NULL)");
}

Test(url_args, null_out)
{
    char err[ERRLEN];

    cr_assert_eq(redq__url_parse(NULL, "redis://h", err, sizeof err),
                 REDQ_EINVAL);
    cr_assert_not_null(strstr(err, "out"), "err: \"%s\"", err);
    cr_assert_eq(redq__url_parse(NULL, NULL, NULL, 0), REDQ_EINVAL);
}

Test(url_args, null_err_buffer)
{
    redq__url u;

    fill_garbage(&u);
    cr_assert_eq(redq__url_parse(&u, "redis://h:0", NULL, 0), REDQ_EINVAL);
    assert_zeroed(&u, "redis://h:0");
    /* errlen is ignored when err is NULL. */
    cr_assert_eq(redq__url_parse(&u, "redis://h:0", NULL, 100), REDQ_EINVAL);
    cr_assert_eq(redq__url_parse(&u, "redis://h:7", NULL, 0), 0);
    cr_assert_eq(u.port, 7);
    redq__url_free(&u);
}

Test(url_args, zero_errlen_leaves_err_alone)
{
    redq__url u;
    char err[4] = "abc";

    cr_assert_eq(redq__url_parse(&u, "ftp://h", err, 0), REDQ_EINVAL);
    cr_assert_str_eq(err, "abc");
}

Test(url_args, short_err_buffer_is_truncated_and_terminated)
{
    redq__url u;
    char err[8];

    memset(err, 'x', sizeof err);
    cr_assert_eq(redq__url_parse(&u, "redis://:p@h:70000", err, sizeof err),
                 REDQ_EINVAL);
    cr_assert_eq(strlen(err), sizeof err - 1);
    cr_assert_str_eq(err, "port \"7");

    memset(err, 'x', sizeof err);
    cr_assert_eq(redq__url_parse(&u, "redis://h:70000", err, 1), REDQ_EINVAL);
    cr_assert_eq(err[0], '\0');
    cr_assert_eq(err[1], 'x');
}

Test(url_args, success_clears_err)
{
    redq__url u;
    char err[ERRLEN] = "stale message";

    cr_assert_eq(redq__url_parse(&u, "unix:///tmp/s", err, sizeof err), 0);
    cr_assert_str_eq(err, "");
    redq__url_free(&u);
}

Test(url_args, failure_after_allocations_still_zeroes)
{
    /* user and password are allocated before the host is checked; the
     * failure must release them (valgrind checks the "released") and leave
     * *out clean. */
    expect_einval("redis://alice:pw@bad host:6379/0", "host");
    expect_einval("redis://alice:pw@h:6379/x", "not a number");
    expect_einval("unix://alice:pw@/tmp/s?db=1&x=2", "\"x\"");
    expect_einval("unix://alice:pw@/tmp/s?db=x", "not a number");
}

/* ---- redq__url_free ---------------------------------------------------- */

Test(url_free, zeroed_struct_is_safe)
{
    redq__url u;

    memset(&u, 0, sizeof u);
    redq__url_free(&u);
    assert_zeroed(&u, "(zeroed)");
    redq__url_free(NULL);
}

Test(url_free, zeroes_and_is_idempotent)
{
    redq__url u;

    cr_assert_eq(redq__url_parse(&u, "redis://alice:pw@h:6380/3", NULL, 0),
                 0);
    cr_assert_not_null(u.host);
    cr_assert_not_null(u.user);
    cr_assert_not_null(u.password);
    redq__url_free(&u);
    assert_zeroed(&u, "after free");
    redq__url_free(&u);
    assert_zeroed(&u, "after second free");
}

Test(url_free, result_owns_copies)
{
    /* The strings are the parser's own: changing the input afterwards does
     * not change them. */
    char url[] = "redis://alice:pw@host:6380";
    redq__url u;

    cr_assert_eq(redq__url_parse(&u, url, NULL, 0), 0);
    memset(url, 'z', sizeof url - 1);
    cr_assert_str_eq(u.host, "host");
    cr_assert_str_eq(u.user, "alice");
    cr_assert_str_eq(u.password, "pw");
    redq__url_free(&u);
}

/* ---- secrets never in messages ----------------------------------------- */

/*
 * Malformed URLs that carry a user name and a password in every position a
 * parser might quote from. None of the message may contain either, nor a
 * long-enough piece of them.
 */
Test(url_secrets, no_message_quotes_user_info)
{
    static const char *const fmts[] = {
        /* the host forgotten: user info parsed as host:port */
        "redis://%s:%s",
        "redis://%s:%s/0",
        "redis://%s:%s?db=1",
        "redis://%s:%s:6379",
        "redis://[%s:%s",
        "redis://%s:%s]",
        /* the ':' or the '@' forgotten */
        "redis://%s%s@host",
        "redis://%s%s@",
        /* raw '/', '?', '#', '@' in the password */
        "redis://%s:%s/x@host",
        "redis://%s:%s?x@host",
        "redis://%s:%s#x@host",
        "redis://%s:%s@@host",
        /* bad escapes in user or password */
        "redis://%s%%zz:%s@host",
        "redis://%s:%s%%zz@host",
        "redis://%s:%s%%4@host",
        "redis://%s%%00:%s@host",
        "redis://%s:%s%%00@host",
        /* the rest of the URL wrong, user info fine */
        "redis://%s:%s@",
        "redis://%s:%s@ho st",
        "redis://%s:%s@h:99999",
        "redis://%s:%s@h/x",
        "redis://%s:%s@h?password=x",
        "unix://%s:%s@tmp/sock",
        "unix://%s:%s",
        "rediss://%s:%s@host",
        "http://%s:%s@host",
        "%s:%s@host:6379",
        "redis:/%s:%s@host",
        "redis://%s:%s@[::g]:1",
    };
    static const char *const creds[][2] = {
        {"dfltusr", "hunter2"}, /* not "default": the messages say "default user" */
        {"alice", "s3cr3t!word"},
        {"svc-user", "12345"},
        {"bob", "pa ss"},
        {"carol", "[::2]x"},
        {"dave", "70000"},
        {"erin", "abc.def"},
    };
    for (size_t f = 0; f < sizeof fmts / sizeof fmts[0]; f++) {
        for (size_t c = 0; c < sizeof creds / sizeof creds[0]; c++) {
            char url[256], err[512];
            redq__url u;
            int rc;
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
            snprintf(url, sizeof url, fmts[f], creds[c][0], creds[c][1]);
#pragma GCC diagnostic pop
            rc = redq__url_parse(&u, url, err, sizeof err);
            if (rc == 0) {
                redq__url_free(&u);
                continue; /* some are valid (a host named like a user) */
            }
            cr_assert_eq(rc, REDQ_EINVAL, "%s: %d", url, rc);
            cr_assert_null(strstr(err, creds[c][1]),
                           "%s: the password appears in \"%s\"", url, err);
            cr_assert_null(strstr(err, creds[c][0]),
                           "%s: the user appears in \"%s\"", url, err);
        }
    }
}

Test(url_secrets, forgotten_host_says_what_to_write)
{
    char err[512];
    redq__url u;
    cr_assert_eq(redq__url_parse(&u, "redis://default:hunter2", err,
                                 sizeof err),
                 REDQ_EINVAL);
    cr_assert_null(strstr(err, "hunter2"), "%s", err);
    cr_assert_null(strstr(err, "default"), "%s", err);
    cr_assert_not_null(strstr(err, "user:password@host"), "%s", err);
}

/* ---- redis+sentinel:// ------------------------------------------------ */

static void expect_sentinel(const char *url, size_t n, const char *h0, int p0,
                            const char *hlast, int plast, const char *master,
                            int db, const char *user, const char *password,
                            const char *suser, const char *spass)
{
    redq__url u;
    char err[ERRLEN];
    int rc;

    fill_garbage(&u);
    rc = redq__url_parse(&u, url, err, sizeof err);
    cr_assert_eq(rc, 0, "%s: rc %d (%s)", url, rc, err);
    cr_assert_eq(u.is_sentinel, 1, "%s: is_sentinel", url);
    cr_assert_eq(u.is_unix, 0, "%s: is_unix", url);
    cr_assert_null(u.host, "%s: host should be NULL", url);
    cr_assert_eq(u.nsentinels, n, "%s: %zu sentinels, want %zu", url,
                 u.nsentinels, n);
    assert_str_or_null(u.sentinels[0].host, h0, "sentinel 0", url);
    cr_assert_eq(u.sentinels[0].port, p0, "%s: port 0", url);
    assert_str_or_null(u.sentinels[n - 1].host, hlast, "last sentinel", url);
    cr_assert_eq(u.sentinels[n - 1].port, plast, "%s: last port", url);
    assert_str_or_null(u.master_name, master, "master", url);
    cr_assert_eq(u.db, db, "%s: db %d, want %d", url, u.db, db);
    assert_str_or_null(u.user, user, "user", url);
    assert_str_or_null(u.password, password, "password", url);
    assert_str_or_null(u.sentinel_user, suser, "sentinel_user", url);
    assert_str_or_null(u.sentinel_password, spass, "sentinel_password", url);
    redq__url_free(&u);
    assert_zeroed(&u, url);
    cr_assert_null(u.sentinels);
    cr_assert_null(u.master_name);
}

Test(url_sentinel, one_default_port)
{
    expect_sentinel("redis+sentinel://s1/mymaster", 1, "s1", 26379, "s1",
                    26379, "mymaster", 0, NULL, NULL, NULL, NULL);
    expect_sentinel("REDIS+SENTINEL://s1:5000/m", 1, "s1", 5000, "s1", 5000,
                    "m", 0, NULL, NULL, NULL, NULL);
}

Test(url_sentinel, several_and_ipv6)
{
    expect_sentinel("redis+sentinel://10.0.0.1:26379,[::1]:26380,h3/mm/3", 3,
                    "10.0.0.1", 26379, "h3", 26379, "mm", 3, NULL, NULL, NULL,
                    NULL);
    expect_sentinel("redis+sentinel://a,[::1]:7/mm", 2, "a", 26379, "::1", 7,
                    "mm", 0, NULL, NULL, NULL, NULL);
}

Test(url_sentinel, data_auth_and_sentinel_auth_differ)
{
    expect_sentinel("redis+sentinel://alice:p%40ss@h1,h2/orders?db=2&"
                    "sentinel_password=s%26cret&sentinel_user=watch",
                    2, "h1", 26379, "h2", 26379, "orders", 2, "alice",
                    "p@ss", "watch", "s&cret");
    expect_sentinel("redis+sentinel://h1/m?sentinel_password=x", 1, "h1",
                    26379, "h1", 26379, "m", 0, NULL, NULL, NULL, "x");
}

Test(url_sentinel, master_name_characters)
{
    expect_sentinel("redis+sentinel://h/my-master_1.a:b", 1, "h", 26379, "h",
                    26379, "my-master_1.a:b", 0, NULL, NULL, NULL, NULL);
}

Test(url_sentinel, refused)
{
    expect_einval("redis+sentinel://h1:26379", "master");
    expect_einval("redis+sentinel://h1:26379/", "master");
    expect_einval("redis+sentinel:///m", "sentinels");
    expect_einval("redis+sentinel://h1,,h2/m", "empty sentinel");
    expect_einval("redis+sentinel://h1,/m", "empty sentinel");
    expect_einval("redis+sentinel://h1:0/m", "out of range");
    expect_einval("redis+sentinel://h1/m%20x", "master name");
    expect_einval("redis+sentinel://h1/m/x", "not a number");
    expect_einval("redis+sentinel://h1/m/1?db=2", "both");
    expect_einval("redis+sentinel://h1/m?sentinel_password=", "empty");
    expect_einval("redis+sentinel://h1/m?sentinel_password=a&"
                  "sentinel_password=b",
                  "more than once");
    expect_einval("redis+sentinel://h1/m?password=x", "unknown query");
    expect_einval("redis+sentinel://h1,h2,h3,h4,h5,h6,h7,h8,h9,h10,h11,h12,"
                  "h13,h14,h15,h16,h17/m",
                  "at most 16");
    /* Sentinel parameters mean nothing in a plain URL. */
    expect_einval("redis://h1/0?sentinel_password=x", "unknown query");
}

/* Neither password shows up in any error, whatever else is wrong. */
Test(url_sentinel, secrets_never_quoted)
{
    static const char *const bad[] = {
        "redis+sentinel://u:hunter22@h1,,h2/m?sentinel_password=sekrit99",
        "redis+sentinel://h1/m?sentinel_password=sekrit99%zz",
        "redis+sentinel://u:hunter22@h1/m?sentinel_password=sekrit99&x=1",
        "redis+sentinel://u:hunter22@h1/bad%20name?sentinel_password=sekrit99",
        "redis+sentinel://hunter22:sekrit99/m",
    };
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        redq__url u;
        char err[ERRLEN];
        int rc = redq__url_parse(&u, bad[i], err, sizeof err);
        cr_assert_eq(rc, REDQ_EINVAL, "%s: rc %d", bad[i], rc);
        cr_assert_null(strstr(err, "hunter22"), "%s: %s", bad[i], err);
        cr_assert_null(strstr(err, "sekrit99"), "%s: %s", bad[i], err);
    }
}

/* ---- redq_url_parse (redq.h): the same parser, strings moved over ---- */

Test(url_public, tcp)
{
    redq_url_info u;
    char err[ERRLEN];

    cr_assert_eq(redq_url_parse("redis://al%40ice:s%3Acret@[::1]:6380/3", &u,
                                err, sizeof err), 0, "%s", err);
    cr_assert_eq(u.kind, REDQ_URL_TCP);
    cr_assert_str_eq(u.host, "::1");
    cr_assert_eq(u.port, 6380);
    cr_assert_null(u.path);
    cr_assert_str_eq(u.user, "al@ice");
    cr_assert_str_eq(u.password, "s:cret");
    cr_assert_eq(u.db, 3);
    cr_assert_eq(u.nsentinels, 0);
    cr_assert_null(u.sentinels);
    cr_assert_null(u.master_name);
    redq_url_info_free(&u);
    cr_assert_null(u.host);
    redq_url_info_free(&u); /* twice: harmless */

    cr_assert_eq(redq_url_parse("redis://localhost", &u, NULL, 0), 0);
    cr_assert_eq(u.port, 6379);
    cr_assert_null(u.user);
    cr_assert_null(u.password);
    redq_url_info_free(&u);
}

Test(url_public, unix_socket)
{
    redq_url_info u;

    cr_assert_eq(redq_url_parse("unix:///tmp/r%20q.sock?db=2", &u, NULL, 0),
                 0);
    cr_assert_eq(u.kind, REDQ_URL_UNIX);
    cr_assert_null(u.host);
    cr_assert_eq(u.port, 0);
    cr_assert_str_eq(u.path, "/tmp/r q.sock");
    cr_assert_eq(u.db, 2);
    redq_url_info_free(&u);
}

Test(url_public, sentinel)
{
    redq_url_info u;
    char err[ERRLEN];

    cr_assert_eq(redq_url_parse("redis+sentinel://:pw@s1,s2:26380,[::1]/mymaster"
                                "?sentinel_password=sp",
                                &u, err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(u.kind, REDQ_URL_SENTINEL);
    cr_assert_null(u.host);
    cr_assert_eq(u.nsentinels, 3);
    cr_assert_str_eq(u.sentinels[0].host, "s1");
    cr_assert_eq(u.sentinels[0].port, 26379);
    cr_assert_str_eq(u.sentinels[1].host, "s2");
    cr_assert_eq(u.sentinels[1].port, 26380);
    cr_assert_str_eq(u.sentinels[2].host, "::1");
    cr_assert_str_eq(u.master_name, "mymaster");
    cr_assert_str_eq(u.password, "pw");
    cr_assert_str_eq(u.sentinel_password, "sp");
    redq_url_info_free(&u);
    cr_assert_eq(u.nsentinels, 0);
    cr_assert_null(u.sentinels);
}

Test(url_public, rejected)
{
    redq_url_info u;
    char err[ERRLEN];

    memset(&u, 0xA5, sizeof u);
    cr_assert_eq(redq_url_parse("redis://h:70000", &u, err, sizeof err),
                 REDQ_EINVAL);
    cr_assert(strstr(err, "port") != NULL, "err: %s", err);
    cr_assert_null(u.host, "*out not zeroed");
    cr_assert_eq(u.kind, REDQ_URL_TCP);
    redq_url_info_free(&u);
    cr_assert_eq(redq_url_parse(NULL, &u, err, sizeof err), REDQ_EINVAL);
    cr_assert_eq(redq_url_parse("redis://h", NULL, NULL, 0), REDQ_EINVAL);
    redq_url_info_free(NULL);
}

/* ---- redis+cluster:// -------------------------------------------------- */

/* A cluster URL that must be accepted: n seeds, the first and last given. */
static void expect_cluster(const char *url, size_t n, const char *h0, int p0,
                           const char *hlast, int plast, const char *user,
                           const char *password)
{
    redq__url u;
    char err[ERRLEN];
    int rc;

    fill_garbage(&u);
    rc = redq__url_parse(&u, url, err, sizeof err);
    cr_assert_eq(rc, 0, "%s: rc %d (%s)", url, rc, err);
    cr_assert_eq(u.is_cluster, 1, "%s: is_cluster", url);
    cr_assert_eq(u.is_sentinel, 0, "%s: is_sentinel", url);
    cr_assert_eq(u.is_unix, 0, "%s: is_unix", url);
    cr_assert_eq(u.nnodes, n, "%s: %zu nodes, want %zu", url, u.nnodes, n);
    assert_str_or_null(u.nodes[0].host, h0, "node 0", url);
    cr_assert_eq(u.nodes[0].port, p0, "%s: port 0", url);
    assert_str_or_null(u.nodes[n - 1].host, hlast, "last node", url);
    cr_assert_eq(u.nodes[n - 1].port, plast, "%s: last port", url);
    /* host/port: the first seed, a copy (freed separately). */
    assert_str_or_null(u.host, h0, "host", url);
    cr_assert_neq((void *)u.host, (void *)u.nodes[0].host, "%s: aliased", url);
    cr_assert_eq(u.port, p0, "%s: port", url);
    cr_assert_null(u.path);
    cr_assert_eq(u.db, 0);
    cr_assert_eq(u.nsentinels, 0);
    assert_str_or_null(u.user, user, "user", url);
    assert_str_or_null(u.password, password, "password", url);
    redq__url_free(&u);
    assert_zeroed(&u, url);
}

Test(url_cluster, seeds_default_port_and_ipv6)
{
    expect_cluster("redis+cluster://h1", 1, "h1", 6379, "h1", 6379, NULL,
                   NULL);
    expect_cluster("REDIS+CLUSTER://10.0.0.1:7000,[::1]:7001,h3", 3,
                   "10.0.0.1", 7000, "h3", 6379, NULL, NULL);
    expect_cluster("redis+cluster://al%40ice:p:w@a:1,b:2", 2, "a", 1, "b", 2,
                   "al@ice", "p:w");
    expect_cluster("redis+cluster://:pw@a:1/?db=0", 1, "a", 1, "a", 1, NULL,
                   "pw");
    expect_cluster("redis+cluster://a:1/0", 1, "a", 1, "a", 1, NULL, NULL);
}

Test(url_cluster, sixty_four_seeds)
{
    char url[64 * 16 + 32];
    size_t n = (size_t)snprintf(url, sizeof url, "redis+cluster://");
    int i;
    for (i = 0; i < 64; i++)
        n += (size_t)snprintf(url + n, sizeof url - n, "%sh%d:%d",
                              i ? "," : "", i, 7000 + i);
    expect_cluster(url, 64, "h0", 7000, "h63", 7063, NULL, NULL);
    snprintf(url + n, sizeof url - n, ",h64");
    expect_einval(url, "at most 64");
}

Test(url_cluster, refused)
{
    /* Only database 0 exists in a cluster: said so, in both spellings. */
    expect_einval("redis+cluster://h1:7000/3", "database 0 only");
    expect_einval("redis+cluster://h1:7000?db=1", "database 0 only");
    expect_einval("redis+cluster://h1/1?db=0", "both");
    expect_einval("redis+cluster://", "missing cluster nodes");
    expect_einval("redis+cluster://h1,,h2", "stray ','");
    expect_einval("redis+cluster://h1,", "stray ','");
    expect_einval("redis+cluster://h1:0", "out of range");
    expect_einval("redis+cluster://h1?sentinel_password=x", "unknown query");
    expect_einval("redis+cluster://h1:7000/db", "not a number");
    expect_einval("rediss+cluster://h1", "unsupported URL scheme");
}

Test(url_cluster, secrets_never_quoted)
{
    static const char *const bad[] = {
        "redis+cluster://u:hunter22@h1:7000/5",
        "redis+cluster://u:hunter22@h1:99999",
        "redis+cluster://hunter22:sekrit99,h2",
        "redis+cluster://u:hunter22@h1,,h2",
        "redis+cluster://u:hunter22@h1?x=sekrit99",
    };
    size_t i;
    for (i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        redq__url u;
        char err[ERRLEN];
        int rc = redq__url_parse(&u, bad[i], err, sizeof err);
        cr_assert_eq(rc, REDQ_EINVAL, "%s: rc %d", bad[i], rc);
        cr_assert_null(strstr(err, "hunter22"), "%s: %s", bad[i], err);
        cr_assert_null(strstr(err, "sekrit99"), "%s: %s", bad[i], err);
    }
}

Test(url_public, cluster)
{
    redq_url_info u;
    char err[ERRLEN];

    cr_assert_eq(redq_url_parse("redis+cluster://:pw@n1:7000,[::1]:7001,n3",
                                &u, err, sizeof err),
                 0, "%s", err);
    cr_assert_eq(u.kind, REDQ_URL_CLUSTER);
    cr_assert_str_eq(u.host, "n1");
    cr_assert_eq(u.port, 7000);
    cr_assert_eq(u.db, 0);
    cr_assert_eq(u.nnodes, 3);
    cr_assert_str_eq(u.nodes[0].host, "n1");
    cr_assert_eq(u.nodes[0].port, 7000);
    cr_assert_str_eq(u.nodes[1].host, "::1");
    cr_assert_eq(u.nodes[1].port, 7001);
    cr_assert_str_eq(u.nodes[2].host, "n3");
    cr_assert_eq(u.nodes[2].port, 6379);
    cr_assert_str_eq(u.password, "pw");
    cr_assert_eq(u.nsentinels, 0);
    cr_assert_null(u.sentinels);
    redq_url_info_free(&u);
    cr_assert_eq(u.nnodes, 0);
    cr_assert_null(u.nodes);
    cr_assert_null(u.host);

    memset(&u, 0xA5, sizeof u);
    cr_assert_eq(redq_url_parse("redis+cluster://n1/2", &u, err, sizeof err),
                 REDQ_EINVAL);
    cr_assert_null(u.nodes, "*out not zeroed");
    cr_assert_eq(u.nnodes, 0);
}
