/*
 * libFuzzer target: redq__url_parse (lib/url.c).
 *
 * The input, cut at its first NUL, is the URL. Checked beyond "no crash":
 * - the result is 0, REDQ_EINVAL or REDQ_ENOMEM, and the same on a second
 *   parse (no hidden state);
 * - on success: host/path/port/db are what redq_private.h promises;
 * - on failure: *out is zeroed, err is NUL-terminated within errlen, and a
 *   small err buffer gets a prefix of the same message (vsnprintf cut);
 * - on failure: err never quotes the user name or password (issue 8,
 *   item 11), see check_secrets() for what counts as those.
 * REDQ_FUZZ_NO_SECRETS=1 in the environment turns the last check off, to
 * look for other bugs while a known leak is being fixed; =hostless turns
 * off only its "redis://user:password" (no '@') half.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fuzz_util.h"
#include "redq_private.h"

#define ERRLEN 512

/* Rotate letters and digits within their class (1-9, a-f, g-z, A-F, G-Z),
 * so that a URL keeps its shape (a hex escape stays one, a digit stays a
 * digit, "%00" stays a NUL) while the bytes change. */
static char rot(char c)
{
    if (c >= '1' && c <= '9')
        return c == '9' ? '1' : c + 1;
    if (c >= 'a' && c <= 'f')
        return c == 'f' ? 'a' : c + 1;
    if (c >= 'g' && c <= 'z')
        return c == 'z' ? 'g' : c + 1;
    if (c >= 'A' && c <= 'F')
        return c == 'F' ? 'A' : c + 1;
    if (c >= 'G' && c <= 'Z')
        return c == 'Z' ? 'G' : c + 1;
    return c;
}

static int has_alnum(const char *s, size_t n)
{
    size_t i;

    for (i = 0; i < n; i++)
        if (rot(s[i]) != s[i])
            return 1;
    return 0;
}

static size_t count(const char *hay, const char *needle, size_t n)
{
    size_t k = 0, hn = strlen(hay);
    const char *p = hay;

    while ((p = fuzz_memmem(p, hn - (size_t)(p - hay), needle, n)) != NULL) {
        k++;
        p++;
    }
    return k;
}

/*
 * The password is the secret at url[p, p + n). It leaks when err shows a
 * piece of it (a window of up to 8 bytes: quotes are cut at 64 bytes and
 * may start inside it) that goes away when the URL is parsed again with
 * the password's letters and digits rotated (same shape, same error path,
 * every other byte the same), and comes back rotated in that error. A piece that stays came from elsewhere in
 * the URL or from the message text: a password "port" in "port ..." or a
 * host that repeats the password are not leaks. Passwords of fewer than 4
 * bytes are not checked (they match message text too easily), nor windows
 * without a letter or digit (rotating does not change them).
 */
static void check_secret(const char *url, size_t p, size_t n,
                         const char *err, const char *what)
{
    char *alt, err2[ERRLEN];
    redq__url u;
    size_t i, w = n < 8 ? n : 8;

    if (n < 4)
        return;
    alt = strdup(url);
    FUZZ_CHECK(alt != NULL, "out of memory");
    for (i = p; i < p + n; i++)
        alt[i] = rot(alt[i]);
    if (redq__url_parse(&u, alt, err2, sizeof err2) == 0)
        redq__url_free(&u);
    for (i = 0; i + w <= n; i++) {
        const char *win = url + p + i;
        size_t k;

        if (!has_alnum(win, w))
            continue;
        k = count(err, win, w);
        /* An echo of the password follows it: the rotated URL's error shows
         * the rotated piece. A piece of message text that the fuzzer made
         * the password imitate ("...1-65535 (not shown" for a password
         * "35 (not ") does not, even when the rotated URL takes another
         * error path and the text is gone from err2. */
        if (k > 0 && count(err2, win, w) < k &&
            count(err2, alt + p + i, w) > 0)
            FUZZ_FAIL("%s leaks into the error: url \"%s\" err \"%s\"", what,
                      url, err);
    }
    free(alt);
}

/*
 * What the user meant as user info: up to the last '@' of the authority
 * (what the parser reads), or when the authority has none, up to the first
 * '@' after "://" ("redis://:pa/ss@host": the password "pa/ss" lost its
 * authority at the raw '/', but it is still a password). What follows its
 * first ':' is the password. Without any '@', "redis://default:hunter2"
 * (issue 8, item 11) is a host-less user:password: what follows the first
 * ':' of the authority is checked too, unless it is a port (all digits).
 */
static void check_secrets(const char *url, const char *err, int hostless)
{
    const char *rest = strstr(url, "://"), *at = NULL, *colon;
    size_t n, i;

    if (rest == NULL)
        return;
    rest += 3;
    n = strcspn(rest, "/?");
    for (i = 0; i < n; i++)
        if (rest[i] == '@')
            at = rest + i;
    if (at == NULL && n > 0)
        at = strchr(rest, '@');
    if (at != NULL) {
        colon = memchr(rest, ':', (size_t)(at - rest));
        /* The user name is kept out of messages too (issue 8, item 11:
         * no part of the user info); a lone "xyz@" is as likely a
         * password that lost its ':'. */
        check_secret(url, (size_t)(rest - url),
                     (size_t)((colon != NULL ? colon : at) - rest), err,
                     "the user name");
        if (colon != NULL)
            check_secret(url, (size_t)(colon + 1 - url),
                         (size_t)(at - colon - 1), err, "the password");
        return;
    }
    if (!hostless)
        return;
    n = strcspn(rest, "/?#");
    if (n == 0 || rest[0] == '[')
        return; /* no authority, or an IPv6 literal: its ':' are no port */
    colon = memchr(rest, ':', n);
    if (colon == NULL)
        return;
    n -= (size_t)(colon + 1 - rest);
    if (strspn(colon + 1, "0123456789") >= n)
        return;
    check_secret(url, (size_t)(colon + 1 - url), n, err,
                 "the text after ':' of a host-less user:password");
}

static void check_success(const redq__url *u, const char *url,
                          const char *err)
{
    FUZZ_CHECK(err[0] == '\0', "%s: success but err \"%s\"", url, err);
    FUZZ_CHECK(u->db >= 0, "%s: db %d", url, u->db);
    if (u->is_unix) {
        FUZZ_CHECK(u->host == NULL && u->port == 0, "%s: unix with a host",
                   url);
        FUZZ_CHECK(u->path != NULL && u->path[0] == '/',
                   "%s: unix path not absolute", url);
        FUZZ_CHECK(strlen(u->path) <= 107, "%s: path of %zu bytes", url,
                   strlen(u->path));
    } else {
        FUZZ_CHECK(u->is_unix == 0, "%s: is_unix %d", url, u->is_unix);
        FUZZ_CHECK(u->path == NULL, "%s: redis:// with a path", url);
        FUZZ_CHECK(u->host != NULL && u->host[0] != '\0', "%s: no host",
                   url);
        FUZZ_CHECK(strlen(u->host) <= 253, "%s: host of %zu bytes", url,
                   strlen(u->host));
        FUZZ_CHECK(strpbrk(u->host, "/?#@[] \r\n") == NULL,
                   "%s: host \"%s\"", url, u->host);
        FUZZ_CHECK(u->port >= 1 && u->port <= 65535, "%s: port %d", url,
                   u->port);
    }
    /* AUTH user pass needs both; a password alone is the default user. */
    FUZZ_CHECK(u->user == NULL || u->password != NULL,
               "%s: user without password", url);
    FUZZ_CHECK(u->password == NULL || u->password[0] != '\0',
               "%s: empty password", url);
    FUZZ_CHECK(u->user == NULL || u->user[0] != '\0', "%s: empty user", url);
}

static int same_str(const char *a, const char *b)
{
    return (a == NULL && b == NULL) ||
           (a != NULL && b != NULL && strcmp(a, b) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int secrets = -1, hostless;
    redq__url u, u2;
    char *url, *err, small[8];
    size_t smalllen = 1 + size % sizeof small;
    int rc, rc2;

    if (secrets < 0) {
        const char *e = getenv("REDQ_FUZZ_NO_SECRETS");
        secrets = e == NULL || strcmp(e, "1") != 0;
        hostless = e == NULL || strcmp(e, "hostless") != 0;
    }
    url = fuzz_cstr(data, size);
    /* Exactly ERRLEN bytes on the heap: ASan sees a write past errlen. */
    err = malloc(ERRLEN);
    FUZZ_CHECK(url != NULL && err != NULL, "out of memory");
    memset(err, 'x', ERRLEN);

    memset(&u, 0xA5, sizeof u);
    rc = redq__url_parse(&u, url, err, ERRLEN);
    FUZZ_CHECK(rc == 0 || rc == REDQ_EINVAL || rc == REDQ_ENOMEM,
               "%s: returned %d", url, rc);
    FUZZ_CHECK(memchr(err, '\0', ERRLEN) != NULL, "%s: err not terminated",
               url);

    /* The same again, with a small err buffer: same verdict, same fields,
     * and the message cut, never overrun. */
    rc2 = redq__url_parse(&u2, url, small, smalllen);
    FUZZ_CHECK(rc2 == rc, "%s: %d then %d", url, rc, rc2);
    FUZZ_CHECK(memchr(small, '\0', smalllen) != NULL,
               "%s: small err not terminated", url);
    FUZZ_CHECK(strncmp(small, err, smalllen - 1) == 0 &&
                   strlen(small) == (strlen(err) < smalllen - 1
                                         ? strlen(err)
                                         : smalllen - 1),
               "%s: \"%s\" is not a cut of \"%s\"", url, small, err);

    if (rc == 0) {
        check_success(&u, url, err);
        FUZZ_CHECK(u.is_unix == u2.is_unix && u.port == u2.port &&
                       u.db == u2.db && same_str(u.host, u2.host) &&
                       same_str(u.path, u2.path) &&
                       same_str(u.user, u2.user) &&
                       same_str(u.password, u2.password),
                   "%s: two parses differ", url);
    } else {
        static const redq__url zero;

        FUZZ_CHECK(memcmp(&u, &zero, sizeof u) == 0,
                   "%s: *out not zeroed on failure", url);
        FUZZ_CHECK(err[0] != '\0', "%s: failure without a message", url);
        if (secrets)
            check_secrets(url, err, hostless);
    }
    redq__url_free(&u);
    redq__url_free(&u2);
    /* Freeing twice is documented as harmless. */
    redq__url_free(&u);
    free(err);
    free(url);
    return 0;
}
