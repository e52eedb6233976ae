/*
 * The key layout (lib/keys.c): every key of a queue hashes to the queue's
 * own cluster slot, whatever its name, and different queues never share a
 * key.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redq_private.h"

static void same_slot(const char *q, size_t qlen, const char *want_prefix)
{
    static const char *const sfx[] = {"due", "delayed", "dead", "proc:0123abcd.3",
                                      "hb:x", "consumers", "meta"};
    size_t i;
    for (i = 0; i < sizeof sfx / sizeof sfx[0]; i++) {
        char *k = redq__key(q, qlen, sfx[i]);
        cr_assert_not_null(k);
        cr_assert_eq(redq__key_slot(k, strlen(k)), redq__key_slot(q, qlen),
                     "%s vs its queue", k);
        if (want_prefix != NULL && i == 0)
            cr_assert_eq(strncmp(k, want_prefix, strlen(want_prefix)), 0,
                         "%s", k);
        free(k);
    }
}

Test(keys, known_slots)
{
    /* Values from the Redis Cluster specification's examples. */
    cr_assert_eq(redq__key_slot("123456789", 9), 0x31c3 & 16383);
    cr_assert_eq(redq__key_slot("{user1000}.following", 20),
                 redq__key_slot("user1000", 8));
    cr_assert_eq(redq__key_slot("foo{}{bar}", 10),
                 redq__key_slot("foo{}{bar}", 10)); /* whole key */
    cr_assert_neq(redq__key_slot("foo{}{bar}", 10),
                  redq__key_slot("bar", 3));
    cr_assert_eq(redq__key_slot("foo{{bar}}zap", 13),
                 redq__key_slot("{bar", 4));
}

Test(keys, every_kind_of_name)
{
    char big[1024];
    memset(big, 'n', sizeof big);
    same_slot("jobs", 4, "{jobs}/due");
    same_slot("{orders}", 8, "{orders}:due");
    same_slot("jobs{x}", 7, "jobs{x}:due");
    same_slot("a}b", 3, "{");
    same_slot("{}x", 3, "{");
    same_slot("}{", 2, "{");
    same_slot("x:proc:y", 8, "{x:proc:y}/due");
    same_slot("a{b", 3, "{a{b}/due");
    same_slot(big, sizeof big, NULL);
    big[500] = '}';
    same_slot(big, sizeof big, NULL);
}

Test(keys, tags_exist_for_every_slot)
{
    /* Names with '}' and no tag get a decimal tag found by search: it
     * must exist for every slot. Build names landing in many slots. */
    unsigned seen = 0;
    int i;
    for (i = 0; i < 4000; i++) {
        char q[32];
        int n = snprintf(q, sizeof q, "}%d", i);
        char *k = redq__key(q, (size_t)n, "due");
        cr_assert_not_null(k, "no tag for %s", q);
        cr_assert_eq(redq__key_slot(k, strlen(k)), redq__key_slot(q, (size_t)n));
        free(k);
        seen++;
    }
    cr_assert_eq(seen, 4000);
}

Test(keys, distinct_queues_distinct_keys)
{
    const char *qs[] = {"a", "{a}", "a}", "{a}}", "a:due", "{a}:due", "{0}a}", "a}/"};
    size_t i, j;
    for (i = 0; i < 8; i++)
        for (j = i + 1; j < 8; j++) {
            char *x = redq__key(qs[i], strlen(qs[i]), "dead");
            char *y = redq__key(qs[j], strlen(qs[j]), "dead");
            cr_assert_str_neq(x, y, "%s and %s share %s", qs[i], qs[j], x);
            free(x);
            free(y);
        }
}

Test(keys, names_that_are_other_queues_keys_are_reserved)
{
    static const char *const reserved[] = {
        "{jobs}/due", "{jobs}/dead", "{jobs}/delayed", "{jobs}/consumers",
        "{jobs}/proc:0123456789abcdef.0", "{jobs}/fproc:x.1", "{jobs}/hb:x",
        "{orders}:due", "{orders}:dead", "jobs{x}:reaper", "{orders}:meta",
    };
    static const char *const fine[] = {
        "jobs", "{orders}", "x:proc:y", "a}b", "{jobs}/other", "{jobs}:ready",
        "jobs/due",   /* no tag: its own keys are "{jobs/due}/..." */
        "{jobs}due", "{}/due", "{a}b/due",
    };
    size_t i;
    for (i = 0; i < sizeof reserved / sizeof reserved[0]; i++)
        cr_assert(redq__key_reserved(reserved[i], strlen(reserved[i])),
                  "%s not reserved", reserved[i]);
    for (i = 0; i < sizeof fine / sizeof fine[0]; i++)
        cr_assert(!redq__key_reserved(fine[i], strlen(fine[i])),
                  "%s reserved", fine[i]);
    /* Every key redq__key builds is reserved, for every kind of name. */
    {
        static const char *const qs[] = {"jobs", "{orders}", "a}b", "x:proc:y"};
        static const char *const sfx[] = {"due", "dead", "proc:ab.1", "hb:c.2"};
        size_t a, b;
        for (a = 0; a < 4; a++)
            for (b = 0; b < 4; b++) {
                char *k = redq__key(qs[a], strlen(qs[a]), sfx[b]);
                cr_assert(redq__key_reserved(k, strlen(k)), "%s", k);
                free(k);
            }
    }
}
