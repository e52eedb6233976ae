#include <stdio.h>
#include <string.h>

#include <criterion/criterion.h>

#include "redq_private.h"

static int check(const redq__options *o, char *err, size_t n)
{
    err[0] = '\0';
    return redq__options_check(o, err, n);
}

/* ---- the three public structs and their defaults ------------------------ */

/* The connection block: the same defaults in all three structs. */
#define EXPECT_CONN_DEFAULTS(o)                                                \
    do {                                                                       \
        cr_assert_str_eq((o).url, "redis://127.0.0.1:6379");                   \
        cr_assert_null((o).password);                                          \
        cr_assert_str_eq((o).client_name, "redq");                             \
        cr_assert_eq((o).connect_timeout_ms, 2000);                            \
        cr_assert_eq((o).command_timeout_ms, 5000);                            \
        cr_assert_eq((o).reconnect_min_ms, 50);                                \
        cr_assert_eq((o).reconnect_max_ms, 2000);                              \
        cr_assert_null((o).log);                                               \
        cr_assert_eq((o).log_level, REDQ_LOG_INFO);                            \
        cr_assert_null((o).log_user);                                          \
        cr_assert_null((o).errbuf);                                            \
        cr_assert_eq((o).errbuf_size, 0);                                      \
    } while (0)

Test(options, producer_defaults)
{
    redq_producer_options o;
    memset(&o, 0xab, sizeof o);
    redq_producer_options_init(&o);
    cr_assert_eq(o.version, REDQ_PRODUCER_OPTIONS_VERSION);
    cr_assert_eq(o.version, 1);
    EXPECT_CONN_DEFAULTS(o);
    cr_assert_null(o.on_stats);
    cr_assert_null(o.on_stats_user);
    cr_assert_eq(o.stats_interval_ms, 0);
    cr_assert_null(o.on_report);
    cr_assert_null(o.on_report_user);
    cr_assert_null(o.on_ready);
    cr_assert_null(o.on_ready_user);
    cr_assert_eq(o.batch_max_msgs, 1024);
    cr_assert_eq(o.batch_max_bytes, 1024 * 1024);
    cr_assert_eq(o.linger_us, 1000);
    cr_assert_eq(o.adaptive, 1);
    cr_assert_eq(o.max_inflight_batches, 32);
    cr_assert_eq(o.max_pending_msgs, 100000);
    cr_assert_eq(o.max_pending_bytes, 64 * 1024 * 1024);
    cr_assert_eq(o.max_message_bytes, 16 * 1024 * 1024);
    cr_assert_eq(o.message_timeout_ms, 30000);
    cr_assert_eq(o.max_queue_len, 0);
    cr_assert_eq(o.min_replicas, 0);
    cr_assert_eq(o.replica_timeout_ms, 1000);
}

Test(options, consumer_defaults)
{
    redq_consumer_options o;
    memset(&o, 0xab, sizeof o);
    redq_consumer_options_init(&o);
    cr_assert_eq(o.version, REDQ_CONSUMER_OPTIONS_VERSION);
    cr_assert_eq(o.version, 1);
    EXPECT_CONN_DEFAULTS(o);
    cr_assert_null(o.on_stats);
    cr_assert_null(o.on_stats_user);
    cr_assert_eq(o.stats_interval_ms, 0);
    cr_assert_null(o.on_message);
    cr_assert_null(o.on_message_user);
    cr_assert_eq(o.guarantee, REDQ_AT_LEAST_ONCE);
    cr_assert_eq(o.pool_size, 1);
    cr_assert_eq(o.pop_batch, 1024);
    cr_assert_eq(o.max_unacked, 4096);
    cr_assert_eq(o.pop_timeout_ms, 5000);
    cr_assert_eq(o.stop_timeout_ms, 30000);
    cr_assert_eq(o.pop_mode, REDQ_POP_AUTO);
    cr_assert_eq(o.visibility_timeout_ms, 30000);
    cr_assert_eq(o.max_attempts, 5);
    cr_assert_eq(o.retry_base_ms, 1000);
    cr_assert_eq(o.retry_max_ms, 60000);
    cr_assert_eq(o.consumer_ttl_ms, 60000);
    cr_assert_eq(o.promote_interval_ms, 200);
}

Test(options, admin_defaults)
{
    redq_admin_options o;
    memset(&o, 0xab, sizeof o);
    redq_admin_options_init(&o);
    cr_assert_eq(o.version, REDQ_ADMIN_OPTIONS_VERSION);
    cr_assert_eq(o.version, 1);
    EXPECT_CONN_DEFAULTS(o);
}

/* The connection block sits at the same offsets in all three: a program
 * may fill it with one macro, and the library copies it by name. */
Test(options, connection_block_is_the_same_in_all_three)
{
#define SAME_OFF(f)                                                            \
    do {                                                                       \
        cr_assert_eq(offsetof(redq_producer_options, f),                       \
                     offsetof(redq_consumer_options, f), #f);                  \
        cr_assert_eq(offsetof(redq_producer_options, f),                       \
                     offsetof(redq_admin_options, f), #f);                     \
    } while (0)
    SAME_OFF(version);
    SAME_OFF(url);
    SAME_OFF(password);
    SAME_OFF(client_name);
    SAME_OFF(connect_timeout_ms);
    SAME_OFF(command_timeout_ms);
    SAME_OFF(reconnect_min_ms);
    SAME_OFF(reconnect_max_ms);
    SAME_OFF(log);
    SAME_OFF(log_level);
    SAME_OFF(log_user);
    SAME_OFF(errbuf);
    SAME_OFF(errbuf_size);
    cr_assert_eq(sizeof(redq_admin_options),
                 offsetof(redq_admin_options, errbuf_size) + sizeof(size_t));
    cr_assert_eq(offsetof(redq_producer_options, on_stats),
                 offsetof(redq_consumer_options, on_stats));
#undef SAME_OFF
}

Test(options, init_tolerates_null)
{
    redq_producer_options_init_sized(NULL, sizeof(redq_producer_options));
    redq_consumer_options_init_sized(NULL, sizeof(redq_consumer_options));
    redq_admin_options_init_sized(NULL, sizeof(redq_admin_options));
}

/* ---- checks: every message names the public field ----------------------- */

#define EXPECT_BAD(field, value, word)                                         \
    do {                                                                       \
        redq__options o;                                                       \
        char err[256];                                                         \
        redq__options_defaults(&o);                                            \
        o.field = value;                                                       \
        cr_assert_eq(check(&o, err, sizeof err), REDQ_EINVAL, #field);         \
        cr_assert_not_null(strstr(err, word), "%s: '%s'", #field, err);        \
    } while (0)

Test(options, defaults_pass_the_checks)
{
    redq__options o;
    char err[256];
    redq__options_defaults(&o);
    cr_assert_eq(check(&o, err, sizeof err), 0, "%s", err);
}

Test(options, out_of_range_values_are_named)
{
    EXPECT_BAD(url, NULL, "options.url");
    EXPECT_BAD(client_name, "has space", "options.client_name");
    EXPECT_BAD(connect_timeout_ms, 0, "options.connect_timeout_ms");
    EXPECT_BAD(command_timeout_ms, -1, "options.command_timeout_ms");
    EXPECT_BAD(reconnect_min_ms, 0, "options.reconnect_min_ms");
    EXPECT_BAD(reconnect_max_ms, 1, "options.reconnect_min_ms");
    EXPECT_BAD(log_level, 9, "options.log_level");
    EXPECT_BAD(stats_interval_ms, -1, "options.stats_interval_ms");
    EXPECT_BAD(batch_max_msgs, 0, "options.batch_max_msgs");
    EXPECT_BAD(batch_max_bytes, 10, "options.batch_max_bytes");
    EXPECT_BAD(max_inflight_batches, 0, "options.max_inflight_batches");
    EXPECT_BAD(max_pending_msgs, 0, "options.max_pending_msgs");
    EXPECT_BAD(max_pending_bytes, 0, "options.max_pending_bytes");
    EXPECT_BAD(max_message_bytes, (size_t)600 << 20,
               "options.max_message_bytes");
    EXPECT_BAD(message_timeout_ms, -5, "options.message_timeout_ms");
    EXPECT_BAD(min_replicas, 65, "options.min_replicas");
    EXPECT_BAD(replica_timeout_ms, 0, "options.replica_timeout_ms");
    EXPECT_BAD(guarantee, 7, "options.guarantee");
    EXPECT_BAD(pool_size, 0, "options.pool_size");
    EXPECT_BAD(pop_batch, 0, "options.pop_batch");
    EXPECT_BAD(max_unacked, 0, "options.max_unacked");
    EXPECT_BAD(pop_timeout_ms, 5, "options.pop_timeout_ms");
    EXPECT_BAD(stop_timeout_ms, -1, "options.stop_timeout_ms");
    EXPECT_BAD(pop_mode, 7, "options.pop_mode");
    EXPECT_BAD(visibility_timeout_ms, 1, "options.visibility_timeout_ms");
    EXPECT_BAD(max_attempts, 0, "options.max_attempts");
    EXPECT_BAD(retry_max_ms, -1, "options.retry_base_ms");
    EXPECT_BAD(consumer_ttl_ms, 1, "options.consumer_ttl_ms");
    EXPECT_BAD(promote_interval_ms, 0, "options.promote_interval_ms");
}

Test(options, no_client_name_is_fine)
{
    redq__options o;
    char err[64];
    redq__options_defaults(&o);
    o.client_name = NULL;
    cr_assert_eq(check(&o, err, sizeof err), 0);
    o.client_name = "";
    cr_assert_eq(check(&o, err, sizeof err), 0);
}

/* ---- size-aware init (a program built against another redq.h) ---------- */

static unsigned char g_buf[1024];

static void expect_bytes(size_t from, size_t to, unsigned char v)
{
    size_t i;
    for (i = from; i < to; i++)
        cr_assert_eq(g_buf[i], v, "byte %zu is 0x%02x, expected 0x%02x", i,
                     g_buf[i], v);
}

/* What *_init_sized must do for one struct of `size` bytes (version 1). */
static void check_init_sized(void (*init)(void *, size_t), size_t size)
{
    cr_assert(size + 64 <= sizeof g_buf);

    /* Exactly version 1's size: all of it, nothing beyond. */
    memset(g_buf, 0xab, sizeof g_buf);
    init(g_buf, size);
    cr_assert_eq(*(int *)g_buf, 1);
    expect_bytes(size, sizeof g_buf, 0xab);

    /* A newer program's bigger struct: ours is filled, its tail zeroed,
     * and version says which fields this library knows. */
    memset(g_buf, 0xab, sizeof g_buf);
    init(g_buf, size + 32);
    cr_assert_eq(*(int *)g_buf, 1);
    expect_bytes(size, size + 32, 0);
    expect_bytes(size + 32, sizeof g_buf, 0xab);

    /* Smaller than any layout: zeroed, version 0, which *_new refuses. */
    memset(g_buf, 0xab, sizeof g_buf);
    init(g_buf, size - 8);
    cr_assert_eq(*(int *)g_buf, 0);
    expect_bytes(0, size - 8, 0);
    expect_bytes(size - 8, sizeof g_buf, 0xab);
}

static void init_p(void *o, size_t n)
{
    redq_producer_options_init_sized(o, n);
}
static void init_c(void *o, size_t n)
{
    redq_consumer_options_init_sized(o, n);
}
static void init_a(void *o, size_t n)
{
    redq_admin_options_init_sized(o, n);
}

Test(options, init_sized_writes_only_the_callers_layout)
{
    cr_assert_eq(redq__producer_options_size(1), sizeof(redq_producer_options));
    cr_assert_eq(redq__consumer_options_size(1), sizeof(redq_consumer_options));
    cr_assert_eq(redq__admin_options_size(1), sizeof(redq_admin_options));
    cr_assert_eq(redq__producer_options_size(2), 0);
    cr_assert_eq(redq__consumer_options_size(0), 0);
    cr_assert_eq(redq__admin_options_size(-1), 0);
    check_init_sized(init_p, sizeof(redq_producer_options));
    check_init_sized(init_c, sizeof(redq_consumer_options));
    check_init_sized(init_a, sizeof(redq_admin_options));

    /* The macros pass the caller's sizeof. */
    memset(g_buf, 0xab, sizeof g_buf);
    redq_consumer_options_init((redq_consumer_options *)(void *)g_buf);
    cr_assert_eq(*(int *)g_buf, REDQ_CONSUMER_OPTIONS_VERSION);
    expect_bytes(sizeof(redq_consumer_options), sizeof g_buf, 0xab);
}

/* ---- public -> internal -------------------------------------------------- */

static int dummy_a, dummy_b, dummy_c, dummy_d;

static void a_log(int l, int c, const char *m, void *u)
{
    (void)l, (void)c, (void)m, (void)u;
}
static void a_stats(const char *j, size_t n, void *u)
{
    (void)j, (void)n, (void)u;
}
static void a_report(redq_producer *p, const redq_report *r, void *u)
{
    (void)p, (void)r, (void)u;
}
static void a_ready(redq_producer *p, void *u)
{
    (void)p, (void)u;
}
static void a_message(redq_consumer *c, redq_message *m, void *u)
{
    (void)c, (void)m, (void)u;
}

/* Every field lands in its internal twin, each callback with its own user
 * pointer; the other role's fields keep their defaults. */
Test(options, producer_fields_reach_the_library)
{
    redq_producer_options o;
    redq__options f;
    redq__url url;
    redq__logger lg;
    redq_producer_options_init(&o);
    o.log = a_log;
    o.log_user = &dummy_a;
    o.on_stats = a_stats;
    o.on_stats_user = &dummy_b;
    o.stats_interval_ms = 7;
    o.on_report = a_report;
    o.on_report_user = &dummy_c;
    o.on_ready = a_ready;
    o.on_ready_user = &dummy_d;
    o.batch_max_msgs = 11;
    o.linger_us = 12;
    o.max_pending_msgs = 13;
    o.message_timeout_ms = 14;
    o.max_queue_len = 15;
    o.min_replicas = 2;
    o.replica_timeout_ms = 17;
    cr_assert_eq(redq__options_prepare_producer(&o, &f, &url, &lg), 0);
    redq__url_free(&url);
    cr_assert_eq(f.log, a_log);
    cr_assert_eq(f.log_user, &dummy_a);
    cr_assert_eq(lg.user, &dummy_a);
    cr_assert_str_eq(lg.prefix, "producer");
    cr_assert_eq(f.on_stats, a_stats);
    cr_assert_eq(f.stats_user, &dummy_b);
    cr_assert_eq(f.stats_interval_ms, 7);
    cr_assert_eq(f.on_report, a_report);
    cr_assert_eq(f.report_user, &dummy_c);
    cr_assert_eq(f.on_ready, a_ready);
    cr_assert_eq(f.ready_user, &dummy_d);
    cr_assert_eq(f.batch_max_msgs, 11);
    cr_assert_eq(f.linger_us, 12);
    cr_assert_eq(f.max_pending_msgs, 13);
    cr_assert_eq(f.message_timeout_ms, 14);
    cr_assert_eq(f.max_queue_len, 15);
    cr_assert_eq(f.min_replicas, 2);
    cr_assert_eq(f.replica_timeout_ms, 17);
    cr_assert_null(f.on_message);
    cr_assert_eq(f.max_attempts, 5);
}

Test(options, consumer_fields_reach_the_library)
{
    redq_consumer_options o;
    redq__options f;
    redq__url url;
    redq__logger lg;
    redq_consumer_options_init(&o);
    o.log = a_log;
    o.log_user = &dummy_a;
    o.on_stats = a_stats;
    o.on_stats_user = &dummy_b;
    o.on_message = a_message;
    o.on_message_user = &dummy_c;
    o.guarantee = REDQ_AT_MOST_ONCE;
    o.pool_size = 3;
    o.pop_batch = 4;
    o.max_unacked = 5;
    o.stop_timeout_ms = 6;
    o.pop_mode = REDQ_POP_PIPELINED;
    o.visibility_timeout_ms = 70;
    o.max_attempts = 8;
    o.retry_base_ms = 9;
    o.retry_max_ms = 10;
    o.consumer_ttl_ms = 1100;
    o.promote_interval_ms = 12;
    cr_assert_eq(redq__options_prepare_consumer(&o, &f, &url, &lg), 0);
    redq__url_free(&url);
    cr_assert_eq(f.log_user, &dummy_a);
    cr_assert_str_eq(lg.prefix, "consumer");
    cr_assert_eq(f.on_stats, a_stats);
    cr_assert_eq(f.stats_user, &dummy_b);
    cr_assert_eq(f.on_message, a_message);
    cr_assert_eq(f.message_user, &dummy_c);
    cr_assert_eq(f.guarantee, REDQ_AT_MOST_ONCE);
    cr_assert_eq(f.pool_size, 3);
    cr_assert_eq(f.pop_batch, 4);
    cr_assert_eq(f.max_unacked, 5);
    cr_assert_eq(f.stop_timeout_ms, 6);
    cr_assert_eq(f.pop_mode, REDQ_POP_PIPELINED);
    cr_assert_eq(f.visibility_timeout_ms, 70);
    cr_assert_eq(f.max_attempts, 8);
    cr_assert_eq(f.retry_base_ms, 9);
    cr_assert_eq(f.retry_max_ms, 10);
    cr_assert_eq(f.consumer_ttl_ms, 1100);
    cr_assert_eq(f.promote_interval_ms, 12);
    cr_assert_null(f.on_report);
    cr_assert_eq(f.message_timeout_ms, 30000);
}

Test(options, admin_fields_reach_the_library)
{
    redq_admin_options o;
    redq__options f;
    redq__url url;
    redq__logger lg;
    redq_admin_options_init(&o);
    o.url = "redis://example.invalid:7000/2";
    o.client_name = "adm";
    o.connect_timeout_ms = 123;
    o.log = a_log;
    o.log_level = REDQ_LOG_DEBUG;
    o.log_user = &dummy_a;
    cr_assert_eq(redq__options_prepare_admin(&o, &f, &url, &lg), 0);
    redq__url_free(&url);
    cr_assert_str_eq(f.url, "redis://example.invalid:7000/2");
    cr_assert_str_eq(f.client_name, "adm");
    cr_assert_eq(f.connect_timeout_ms, 123);
    cr_assert_eq(lg.cb, a_log);
    cr_assert_eq(lg.level, REDQ_LOG_DEBUG);
    cr_assert_eq(lg.user, &dummy_a);
    cr_assert_str_eq(lg.prefix, "admin");
    cr_assert_eq(f.max_attempts, 5, "the admin's reaper uses the default");
}

/* ---- errors: errbuf and log ---------------------------------------------- */

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

static int prepare_p(const redq_producer_options *o)
{
    redq__options full;
    redq__url url;
    redq__logger lg;
    int rc = redq__options_prepare_producer(o, &full, &url, &lg);
    if (rc == 0)
        redq__url_free(&url);
    return rc;
}

static int prepare_c(const redq_consumer_options *o)
{
    redq__options full;
    redq__url url;
    redq__logger lg;
    int rc = redq__options_prepare_consumer(o, &full, &url, &lg);
    if (rc == 0)
        redq__url_free(&url);
    return rc;
}

static int prepare_a(const redq_admin_options *o)
{
    redq__options full;
    redq__url url;
    redq__logger lg;
    int rc = redq__options_prepare_admin(o, &full, &url, &lg);
    if (rc == 0)
        redq__url_free(&url);
    return rc;
}

/* Bad options: *_new's errbuf and the log get the same message, which
 * names the problem and never shows the secret. */
static void expect_err(const char *url, const char *password,
                       const char *secret, const char *word)
{
    redq_producer_options o;
    char buf[256];
    logged l = {0};
    redq_producer_options_init(&o);
    o.url = url;
    o.password = password;
    o.errbuf = buf;
    o.errbuf_size = sizeof buf;
    o.log = on_log;
    o.log_user = &l;
    strcpy(buf, "stale");
    cr_assert_eq(prepare_p(&o), REDQ_EINVAL, "%s", url);
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

Test(options, errbuf_names_the_public_fields)
{
    char buf[256];
    redq_producer_options p;
    redq_consumer_options c;
    redq_admin_options a;

    redq_producer_options_init(&p);
    p.errbuf = buf;
    p.errbuf_size = sizeof buf;
    p.message_timeout_ms = -1;
    cr_assert_eq(prepare_p(&p), REDQ_EINVAL);
    cr_assert_str_eq(buf, "options.message_timeout_ms must be >= 0");

    redq_consumer_options_init(&c);
    c.errbuf = buf;
    c.errbuf_size = sizeof buf;
    c.guarantee = 2;
    cr_assert_eq(prepare_c(&c), REDQ_EINVAL);
    cr_assert_not_null(strstr(buf, "options.guarantee must be"), "'%s'", buf);

    redq_admin_options_init(&a);
    a.errbuf = buf;
    a.errbuf_size = sizeof buf;
    a.command_timeout_ms = 0;
    cr_assert_eq(prepare_a(&a), REDQ_EINVAL);
    cr_assert_not_null(strstr(buf, "options.command_timeout_ms"), "'%s'", buf);
}

Test(options, errbuf_on_bad_option_success_and_small_buffer)
{
    redq_producer_options o;
    char buf[256], tiny[8];
    redq_producer_options_init(&o);
    o.errbuf = buf;
    o.errbuf_size = sizeof buf;
    o.batch_max_msgs = 0;
    cr_assert_eq(prepare_p(&o), REDQ_EINVAL);
    cr_assert_not_null(strstr(buf, "batch_max_msgs"), "'%s'", buf);

    o.batch_max_msgs = 10;
    strcpy(buf, "stale");
    cr_assert_eq(prepare_p(&o), 0);
    cr_assert_str_eq(buf, "", "a success leaves the errbuf of a failure");

    o.url = "redis://h:x";
    o.errbuf = tiny;
    o.errbuf_size = sizeof tiny;
    memset(tiny, 'z', sizeof tiny);
    cr_assert_eq(prepare_p(&o), REDQ_EINVAL);
    cr_assert_eq(strlen(tiny), sizeof tiny - 1, "cut and NUL-terminated");
}

/* A version newer than the library (built against a newer redq.h): structs
 * only grow, so errbuf and the log are where they were, and the caller is
 * told what is wrong. An older-than-known one (0, negative: not filled by
 * init): no field can be trusted, errbuf and log included. Each struct has
 * its own version. */
Test(options, unknown_versions_are_refused_for_each_struct)
{
    char buf[256];
    logged l = {0};
    redq_producer_options p;
    redq_consumer_options c;
    redq_admin_options a;

    redq_producer_options_init(&p);
    p.errbuf = buf;
    p.errbuf_size = sizeof buf;
    p.log = on_log;
    p.log_user = &l;
    strcpy(buf, "untouched");
    p.version = REDQ_PRODUCER_OPTIONS_VERSION + 1;
    cr_assert_eq(prepare_p(&p), REDQ_EINVAL);
    cr_assert_not_null(strstr(buf, "options.version 2 is newer"), "'%s'", buf);
    cr_assert_eq(l.n, 1);
    strcpy(buf, "untouched");
    p.version = 0;
    cr_assert_eq(prepare_p(&p), REDQ_EINVAL);
    cr_assert_str_eq(buf, "untouched");
    cr_assert_eq(l.n, 1, "the log of an unknown layout was called");

    redq_consumer_options_init(&c);
    c.errbuf = buf;
    c.errbuf_size = sizeof buf;
    c.version = 99;
    cr_assert_eq(prepare_c(&c), REDQ_EINVAL);
    cr_assert_not_null(strstr(buf, "options.version 99 is newer"), "'%s'", buf);
    strcpy(buf, "untouched");
    c.version = -1;
    cr_assert_eq(prepare_c(&c), REDQ_EINVAL);
    cr_assert_str_eq(buf, "untouched");

    redq_admin_options_init(&a);
    a.errbuf = buf;
    a.errbuf_size = sizeof buf;
    a.version = 5;
    cr_assert_eq(prepare_a(&a), REDQ_EINVAL);
    cr_assert_not_null(strstr(buf, "options.version 5 is newer"), "'%s'", buf);
    strcpy(buf, "untouched");
    a.version = 0;
    cr_assert_eq(prepare_a(&a), REDQ_EINVAL);
    cr_assert_str_eq(buf, "untouched");
}
