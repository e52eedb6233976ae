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
    redq_options_init(NULL);
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
