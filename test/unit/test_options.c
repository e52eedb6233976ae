#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "redq_private.h"

static int check(const redq_options *o, char *err, size_t n)
{
    err[0] = '\0';
    return redq__options_check(o, err, n);
}

Test(options, defaults_are_valid_and_documented_values)
{
    redq_options o;
    char err[256];
    memset(&o, 0xab, sizeof o);
    redq_options_init(&o);
    cr_assert_eq(o.version, REDQ_OPTIONS_VERSION);
    cr_assert_str_eq(o.url, "redis://127.0.0.1:6379");
    cr_assert_eq(o.batch_max_msgs, 1024);
    cr_assert_eq(o.adaptive, 1);
    cr_assert_eq(o.delivery_timeout_ms, 30000);
    cr_assert_null(o.on_delivery);
    cr_assert_null(o.user);
    cr_assert_eq(o.pool_size, 1);
    cr_assert_eq(o.pop_mode, REDQ_POP_AUTO);
    cr_assert_eq(o.delivery, REDQ_AT_LEAST_ONCE);
    cr_assert_eq(o.max_attempts, 5);
    cr_assert_eq(o.max_queue_len, 0);
    cr_assert_eq(check(&o, err, sizeof err), 0, "%s", err);
}

Test(options, init_tolerates_null)
{
    redq_options_init_sized(NULL, sizeof(redq_options));
    (redq_options_init)(NULL);
}

#define EXPECT_BAD(field, value, word)                                         \
    do {                                                                       \
        redq_options o;                                                        \
        char err[256];                                                         \
        redq_options_init(&o);                                                 \
        o.field = value;                                                       \
        cr_assert_eq(check(&o, err, sizeof err), REDQ_EINVAL, #field);         \
        cr_assert_not_null(strstr(err, word), "%s: '%s'", #field, err);        \
    } while (0)

Test(options, out_of_range_values_are_named)
{
    EXPECT_BAD(version, 0, "version");
    EXPECT_BAD(version, REDQ_OPTIONS_VERSION + 1, "version");
    EXPECT_BAD(url, NULL, "url");
    EXPECT_BAD(client_name, "has space", "client_name");
    EXPECT_BAD(connect_timeout_ms, 0, "connect_timeout_ms");
    EXPECT_BAD(command_timeout_ms, -1, "command_timeout_ms");
    EXPECT_BAD(reconnect_min_ms, 0, "reconnect_min_ms");
    EXPECT_BAD(reconnect_max_ms, 1, "reconnect_min_ms");
    EXPECT_BAD(log_level, 9, "log_level");
    EXPECT_BAD(batch_max_msgs, 0, "batch_max_msgs");
    EXPECT_BAD(batch_max_bytes, 10, "batch_max_bytes");
    EXPECT_BAD(max_inflight_batches, 0, "max_inflight_batches");
    EXPECT_BAD(max_pending_msgs, 0, "max_pending_msgs");
    EXPECT_BAD(max_pending_bytes, 0, "max_pending_bytes");
    EXPECT_BAD(max_message_bytes, (size_t)600 << 20, "max_message_bytes");
    EXPECT_BAD(delivery_timeout_ms, -5, "delivery_timeout_ms");
    EXPECT_BAD(pool_size, 0, "pool_size");
    EXPECT_BAD(pop_batch, 0, "pop_batch");
    EXPECT_BAD(max_unacked, 0, "max_unacked");
    EXPECT_BAD(pop_timeout_ms, 5, "pop_timeout_ms");
    EXPECT_BAD(pop_mode, 7, "pop_mode");
}

Test(options, no_client_name_is_fine)
{
    redq_options o;
    char err[64];
    redq_options_init(&o);
    o.client_name = NULL;
    cr_assert_eq(check(&o, err, sizeof err), 0);
    o.client_name = "";
    cr_assert_eq(check(&o, err, sizeof err), 0);
}

/* ---- size-aware options (a program built against an older redq.h) ---- */

static union {
    redq_options o;
    unsigned char b[sizeof(redq_options) + 64];
} u;

static void expect_bytes(size_t from, size_t to, unsigned char v)
{
    size_t i;
    for (i = from; i < to; i++)
        cr_assert_eq(u.b[i], v, "byte %zu is 0x%02x, expected 0x%02x", i,
                     u.b[i], v);
}

Test(options, init_sized_writes_only_the_callers_layout)
{
    size_t v1 = redq__options_size(1);

    cr_assert(v1 > 0 && v1 < sizeof(redq_options));
    cr_assert_eq(v1, offsetof(redq_options, max_queue_len) + sizeof(size_t),
                 "version 1 ends right after max_queue_len");
    memset(u.b, 0xab, sizeof u.b);
    redq_options_init_sized(&u.o, v1);
    cr_assert_eq(u.o.version, 1);
    cr_assert_eq(u.o.batch_max_msgs, 1024);
    cr_assert_eq(u.o.promote_interval_ms, 200);
    expect_bytes(v1, sizeof u.b, 0xab);

    /* The 0.1 entry point (what an 0.1 binary calls) fills version 1. */
    memset(u.b, 0xab, sizeof u.b);
    (redq_options_init)(&u.o);
    cr_assert_eq(u.o.version, 1);
    expect_bytes(v1, sizeof u.b, 0xab);

    /* A newer program's bigger struct: ours is filled, its tail zeroed,
     * and version says which fields this library knows. */
    memset(u.b, 0xab, sizeof u.b);
    redq_options_init_sized(&u.o, sizeof(redq_options) + 32);
    cr_assert_eq(u.o.version, REDQ_OPTIONS_VERSION);
    cr_assert_null(u.o.errbuf);
    expect_bytes(sizeof(redq_options), sizeof(redq_options) + 32, 0);
    expect_bytes(sizeof(redq_options) + 32, sizeof u.b, 0xab);

    /* Smaller than any layout: zeroed, version 0, which *_new refuses. */
    memset(u.b, 0xab, sizeof u.b);
    redq_options_init_sized(&u.o, 16);
    cr_assert_eq(u.o.version, 0);
    expect_bytes(0, 16, 0);
    expect_bytes(16, sizeof u.b, 0xab);

    /* The macro passes the caller's sizeof. */
    memset(u.b, 0xab, sizeof u.b);
    redq_options_init(&u.o);
    cr_assert_eq(u.o.version, REDQ_OPTIONS_VERSION);
    expect_bytes(sizeof(redq_options), sizeof u.b, 0xab);
}

static int prepare(const redq_options *o, redq_options *full)
{
    redq__url url;
    redq__logger lg;
    int rc = redq__options_prepare_full(o, full, &url, &lg, "test");
    if (rc == 0)
        redq__url_free(&url);
    return rc;
}

Test(options, new_reads_only_the_callers_layout)
{
    redq_options full;
    /* A version 1 struct followed by bytes that would be a wild errbuf
     * pointer if the library read past it. */
    memset(u.b, 0xab, sizeof u.b);
    (redq_options_init)(&u.o);
    u.o.batch_max_msgs = 7;
    cr_assert_eq(prepare(&u.o, &full), 0);
    cr_assert_eq(full.batch_max_msgs, 7);
    cr_assert_null(full.errbuf, "errbuf taken from past the caller's struct");
    cr_assert_eq(full.errbuf_size, 0);
    cr_assert_eq(full.version, REDQ_OPTIONS_VERSION);
    expect_bytes(redq__options_size(1), sizeof u.b, 0xab);
}

typedef struct logged {
    int n;
    int code;
    char msg[512];
} logged;

static void on_log(int level, int code, const char *msg, void *user)
{
    logged *l = user;
    (void)level;
    l->n++;
    l->code = code;
    snprintf(l->msg, sizeof l->msg, "%s", msg);
}

/* Bad options: *_new's errbuf and the log get the same message, which
 * names the problem and never shows the secret. */
static void expect_err(const char *url, const char *password,
                       const char *secret, const char *word)
{
    redq_options o, full;
    char buf[256];
    logged l = {0};
    redq_options_init(&o);
    o.url = url;
    o.password = password;
    o.errbuf = buf;
    o.errbuf_size = sizeof buf;
    o.log = on_log;
    o.user = &l;
    strcpy(buf, "stale");
    cr_assert_eq(prepare(&o, &full), REDQ_EINVAL, "%s", url);
    cr_assert(buf[0] != '\0' && strcmp(buf, "stale") != 0, "%s: errbuf '%s'",
              url, buf);
    cr_assert_not_null(strstr(buf, word), "%s: '%s' lacks '%s'", url, buf,
                       word);
    cr_assert_null(strstr(buf, secret), "%s: errbuf shows the secret: '%s'",
                   url, buf);
    cr_assert_eq(l.n, 1);
    cr_assert_eq(l.code, REDQ_EINVAL);
    cr_assert_not_null(strstr(l.msg, buf), "log '%s' lacks '%s'", l.msg, buf);
}

Test(options, errbuf_says_why_and_never_shows_a_password)
{
    expect_err("redis://default:hunter2", NULL, "hunter2", "url");
    expect_err("redis://default:hunter2/0", NULL, "hunter2", "url");
    expect_err("redis://u:hunter2@:99", NULL, "hunter2", "url");
    expect_err("redis://u:hunter2@h:99999", NULL, "hunter2", "url");
    expect_err("redis://hunter2@h", NULL, "hunter2", "url");
    expect_err("redis://:pw:hunter2@h:x", NULL, "hunter2", "url");
    expect_err("redis://h:s3cr3t", "s3cr3t", "s3cr3t", "url");
    expect_err("redis://h:x", NULL, "hunter2", "port");
    expect_err("nope://h", NULL, "hunter2", "url");
}

Test(options, errbuf_on_bad_option_success_and_small_buffer)
{
    redq_options o, full;
    char buf[256], tiny[8];
    redq_options_init(&o);
    o.errbuf = buf;
    o.errbuf_size = sizeof buf;
    o.batch_max_msgs = 0;
    cr_assert_eq(prepare(&o, &full), REDQ_EINVAL);
    cr_assert_not_null(strstr(buf, "batch_max_msgs"), "'%s'", buf);

    o.batch_max_msgs = 10;
    strcpy(buf, "stale");
    cr_assert_eq(prepare(&o, &full), 0);
    cr_assert_str_eq(buf, "", "a success leaves the errbuf of a failure");

    o.url = "redis://h:x";
    o.errbuf = tiny;
    o.errbuf_size = sizeof tiny;
    memset(tiny, 'z', sizeof tiny);
    cr_assert_eq(prepare(&o, &full), REDQ_EINVAL);
    cr_assert_eq(strlen(tiny), sizeof tiny - 1, "cut and NUL-terminated");

    /* A version newer than the library (built against a newer redq.h):
     * structs only grow, so errbuf and the log are where they were, and
     * the caller is told what is wrong. */
    o.errbuf = buf;
    o.errbuf_size = sizeof buf;
    strcpy(buf, "untouched");
    o.version = 99;
    cr_assert_eq(prepare(&o, &full), REDQ_EINVAL);
    cr_assert_not_null(strstr(buf, "options.version 99 is newer"), "'%s'", buf);
    /* An older-than-known one (0, negative: not filled by init): no field
     * can be trusted, errbuf included. */
    strcpy(buf, "untouched");
    o.version = 0;
    cr_assert_eq(prepare(&o, &full), REDQ_EINVAL);
    cr_assert_str_eq(buf, "untouched");
}
