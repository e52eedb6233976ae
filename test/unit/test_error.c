#include <string.h>

#include <criterion/criterion.h>

#include "redq_private.h"

static const int all_codes[] = {
#define XX(name, val, msg) REDQ_##name,
    REDQ_ERRNO_MAP(XX)
#undef XX
};

Test(error, every_code_has_a_distinct_message_and_name)
{
    size_t i, j, n = sizeof all_codes / sizeof all_codes[0];
    for (i = 0; i < n; i++) {
        cr_assert_lt(all_codes[i], 0);
        cr_assert_str_neq(redq_strerror(all_codes[i]), "unknown error");
        cr_assert_str_neq(redq_err_name(all_codes[i]), "REDQ_EUNKNOWN");
        cr_assert_eq(strncmp(redq_err_name(all_codes[i]), "REDQ_E", 6), 0);
        for (j = 0; j < i; j++) {
            cr_assert_neq(all_codes[i], all_codes[j]);
            cr_assert_str_neq(redq_strerror(all_codes[i]),
                              redq_strerror(all_codes[j]));
        }
    }
}

Test(error, names_match_the_enum)
{
    cr_assert_str_eq(redq_err_name(REDQ_EFULL), "REDQ_EFULL");
    cr_assert_str_eq(redq_err_name(REDQ_ETOOBIG), "REDQ_ETOOBIG");
    cr_assert_str_eq(redq_err_name(REDQ_OK), "REDQ_OK");
    cr_assert_str_eq(redq_strerror(REDQ_OK), "success");
}

Test(error, unknown_codes_never_give_null)
{
    cr_assert_str_eq(redq_strerror(-9999), "unknown error");
    cr_assert_str_eq(redq_err_name(12345), "REDQ_EUNKNOWN");
}

Test(error, redis_error_replies_map_to_codes)
{
#define MAP(s) redq__err_from_reply(s, strlen(s))
    cr_assert_eq(MAP("WRONGTYPE Operation against a key holding the wrong "
                     "kind of value"),
                 REDQ_EWRONGTYPE);
    cr_assert_eq(MAP("NOAUTH Authentication required."), REDQ_EAUTH);
    cr_assert_eq(MAP("WRONGPASS invalid username-password pair or user is "
                     "disabled."),
                 REDQ_EAUTH);
    cr_assert_eq(MAP("ERR invalid password"), REDQ_EAUTH);
    cr_assert_eq(MAP("NOPERM this user has no permissions to run the 'info' "
                     "command"),
                 REDQ_ENOPERM);
    cr_assert_eq(MAP("OOM command not allowed"), REDQ_ESERVER);
    /* A prefix must be a whole word. */
    cr_assert_eq(MAP("WRONGTYPEX something"), REDQ_ESERVER);
    cr_assert_eq(redq__err_from_reply(NULL, 0), REDQ_EPROTOCOL);
#undef MAP
}

Test(error, transient_server_states)
{
#define T(s) redq__err_is_transient(s, strlen(s))
    cr_assert(T("LOADING Redis is loading the dataset in memory"));
    cr_assert(T("BUSY Redis is busy running a script."));
    cr_assert(T("TRYAGAIN Multiple keys request during rehashing of slot"));
    cr_assert(T("MASTERDOWN Link with MASTER is down"));
    cr_assert(T("LOADING"));
    /* A cluster's redirects: not applied; a pinned connection follows. */
    cr_assert(T("MOVED 3999 127.0.0.1:6381"));
    cr_assert(T("ASK 3999 127.0.0.1:6381"));
    cr_assert(T("CLUSTERDOWN The cluster is down"));
    cr_assert(!T("MOVEDX 1 a:1"));
    cr_assert(!T("OOM command not allowed when used memory > 'maxmemory'."));
    cr_assert(!T("BUSYKEY Target key name already exists."));
    cr_assert(!T("NOPERM this user has no permissions"));
    cr_assert(!T("ERR LOADING"));
    cr_assert(!T(""));
    cr_assert(!redq__err_is_transient(NULL, 0));
#undef T
}
