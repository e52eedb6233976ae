/*
 * Partitioned queues (lib/partition.c): names, the meta fields read
 * whatever they hold, and where new partitions go.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redq_private.h"

Test(partition, names)
{
    char *s = redq__partition_name("jobs", 4, "77", 0);
    cr_assert_str_eq(s, "jobs");
    free(s);
    s = redq__partition_name("jobs", 4, "77", 3);
    cr_assert_str_eq(s, "{77}jobs~3");
    cr_assert_eq(redq__key_slot(s, strlen(s)), redq__key_slot("77", 2));
    free(s);
    s = redq__partition_name("{o}x", 4, "1", 255);
    cr_assert_str_eq(s, "{1}{o}x~255");
    free(s);
    cr_assert_null(redq__partition_name("jobs", 4, "1", 256));
    {
        char big[1024];
        memset(big, 'q', sizeof big);
        s = redq__partition_name(big, sizeof big, "123456", 255);
        cr_assert_eq(strlen(s),
                     sizeof big + strlen("{123456}~255"));
        cr_assert_leq(strlen(s), sizeof big + REDQ__PARTITION_NAME_EXTRA);
        free(s);
    }
}

Test(partition, parse_names_and_reserved)
{
    const char *lq;
    size_t n;
    cr_assert_eq(redq__partition_parse("{12}jobs~3", 10, &lq, &n), 3);
    cr_assert_eq(n, 4);
    cr_assert_eq(memcmp(lq, "jobs", 4), 0);
    cr_assert_eq(redq__partition_parse("{0}a~b~255", 10, &lq, &n), 255);
    cr_assert_eq(n, 3);
    cr_assert_eq(redq__partition_parse("{12}jobs~0", 10, NULL, NULL), 0);
    cr_assert_eq(redq__partition_parse("{12}jobs~256", 12, NULL, NULL), 0);
    cr_assert_eq(redq__partition_parse("{12}jobs~03", 11, NULL, NULL), 0);
    cr_assert_eq(redq__partition_parse("{x}jobs~3", 9, NULL, NULL), 0);
    cr_assert_eq(redq__partition_parse("{12}~3", 6, NULL, NULL), 0);
    cr_assert_eq(redq__partition_parse("jobs~3", 6, NULL, NULL), 0);
    cr_assert_eq(redq__partition_parse("{1234567}j~3", 12, NULL, NULL), 0);
    /* A producer or consumer may not use another queue's partition. */
    cr_assert(redq__key_reserved("{12}jobs~3", 10));
    cr_assert(!redq__key_reserved("{12}jobs~x", 10));
    cr_assert(!redq__key_reserved("jobs~3", 6));
    /* and its keys stay reserved as every tagged queue's are */
    cr_assert(redq__key_reserved("{12}jobs~3:due", 14));
}

Test(partition, parse_meta_values)
{
    redq__parts pt;
    char out[REDQ__MAX_PARTITIONS * REDQ__PTAG_MAX];

    cr_assert_eq(redq__parts_parse(&pt, NULL, 0, NULL, 0), 0);
    cr_assert_eq(pt.active, 1);
    cr_assert_eq(pt.total, 1);

    cr_assert_eq(redq__parts_parse(&pt, "3", 1, "5 17 99", 7), 0);
    cr_assert_eq(pt.active, 3);
    cr_assert_eq(pt.total, 4);
    cr_assert_str_eq(pt.tag[1], "5");
    cr_assert_str_eq(pt.tag[3], "99");
    redq__parts_tags_string(&pt, out);
    cr_assert_str_eq(out, "5 17 99");

    /* Lowered P: retired partitions stay known. */
    cr_assert_eq(redq__parts_parse(&pt, "1", 1, "5 17", 4), 0);
    cr_assert_eq(pt.active, 1);
    cr_assert_eq(pt.total, 3);

    /* Hostile values: always a usable reading, and flagged. */
    static const char *const badp[] = {"0", "-1", "257", "999999999999",
                                       "03", "2x", "", " 2", "1e3"};
    size_t i;
    for (i = 0; i < sizeof badp / sizeof badp[0]; i++) {
        cr_assert_eq(redq__parts_parse(&pt, badp[i], strlen(badp[i]), "1 2 3",
                                       5),
                     REDQ_EPROTOCOL, "%s", badp[i]);
        cr_assert_eq(pt.active, 1, "%s", badp[i]);
        cr_assert_eq(pt.total, 4);
    }
    /* More partitions than tags: only the named ones. */
    cr_assert_eq(redq__parts_parse(&pt, "5", 1, "1 2", 3), REDQ_EPROTOCOL);
    cr_assert_eq(pt.active, 3);
    /* A bad tag ends the list. */
    static const char *const badt[] = {"1 x 3", "1  3", "1 3 ", " 1",
                                       "1 1234567", "1 -2", "1 3\n"};
    for (i = 0; i < sizeof badt / sizeof badt[0]; i++) {
        cr_assert_eq(redq__parts_parse(&pt, "3", 1, badt[i], strlen(badt[i])),
                     REDQ_EPROTOCOL, "%s", badt[i]);
        cr_assert_leq(pt.active, pt.total);
        cr_assert_leq(pt.total, 3);
    }
    /* 300 tags: at most 256 partitions. */
    {
        char big[2000];
        size_t n = 0;
        for (i = 0; i < 300; i++)
            n += (size_t)sprintf(big + n, i ? " %zu" : "%zu", i);
        cr_assert_eq(redq__parts_parse(&pt, "256", 3, big, n),
                     REDQ_EPROTOCOL);
        cr_assert_eq(pt.total, REDQ__MAX_PARTITIONS);
        cr_assert_eq(pt.active, REDQ__MAX_PARTITIONS);
    }
}

/* A slot map for the tests: masters own ranges given by bounds. */
typedef struct fakemap {
    unsigned n;
    unsigned upto[8]; /* master i owns [upto[i-1], upto[i]) */
} fakemap;

static int fake_owner(const void *arg, unsigned slot, char *buf, size_t len)
{
    const fakemap *m = arg;
    unsigned i;
    for (i = 0; i < m->n; i++)
        if (slot < m->upto[i]) {
            snprintf(buf, len, "127.0.0.1:%u", 7000 + i);
            return 0;
        }
    return 1;
}

static void count_per_master(const fakemap *m, const char *q,
                             const redq__parts *pt, unsigned *per)
{
    unsigned i, j, slots[REDQ__MAX_PARTITIONS];
    memset(per, 0, m->n * sizeof *per);
    for (i = 0; i < pt->total; i++) {
        const char *k = i == 0 ? q : pt->tag[i];
        unsigned s = redq__key_slot(k, strlen(k));
        char name[64];
        cr_assert_eq(fake_owner(m, s, name, sizeof name), 0);
        per[atoi(strchr(name, ':') + 1) - 7000]++;
        for (j = 0; j < i; j++)
            cr_assert_neq(slots[j], s, "partitions %u and %u share slot %u",
                          j, i, s);
        slots[i] = s;
    }
}

Test(partition, tags_round_robin_over_equal_masters)
{
    fakemap m = {3, {5461, 10923, 16384}};
    redq__parts pt;
    unsigned per[3], want;
    redq__parts_init(&pt);
    for (want = 2; want <= 12; want++) {
        cr_assert_eq(redq__parts_grow(&pt, "orders", 6, want, fake_owner, &m),
                     0);
        cr_assert_eq(pt.total, want);
        count_per_master(&m, "orders", &pt, per);
        /* Round robin: never more than one apart. */
        unsigned lo = per[0], hi = per[0], i;
        for (i = 1; i < 3; i++) {
            lo = per[i] < lo ? per[i] : lo;
            hi = per[i] > hi ? per[i] : hi;
        }
        cr_assert_leq(hi - lo, 1, "P=%u: %u %u %u", want, per[0], per[1],
                      per[2]);
    }
    /* Growing again keeps what exists. */
    {
        redq__parts copy = pt;
        cr_assert_eq(redq__parts_grow(&pt, "orders", 6, 12, fake_owner, &m), 0);
        cr_assert_eq(memcmp(&copy, &pt, sizeof pt), 0);
    }
    cr_assert_eq(redq__parts_grow(&pt, "orders", 6, 0, fake_owner, &m),
                 REDQ_EINVAL);
    cr_assert_eq(redq__parts_grow(&pt, "orders", 6, 257, fake_owner, &m),
                 REDQ_EINVAL);
}

Test(partition, tags_even_over_a_lopsided_map)
{
    /* One master with 14000 slots, two with ~1000 each. */
    fakemap m = {3, {14000, 15200, 16384}};
    redq__parts pt;
    unsigned per[3];
    redq__parts_init(&pt);
    cr_assert_eq(redq__parts_grow(&pt, "q", 1, 9, fake_owner, &m), 0);
    count_per_master(&m, "q", &pt, per);
    cr_assert_eq(per[0], 3);
    cr_assert_eq(per[1], 3);
    cr_assert_eq(per[2], 3);
    /* 256 on a master of 2 slots and one of the rest: no shared slot. */
    {
        fakemap t = {2, {2, 16384}};
        unsigned p2[2];
        redq__parts_init(&pt);
        cr_assert_eq(redq__parts_grow(&pt, "zz", 2, 256, fake_owner, &t), 0);
        count_per_master(&t, "zz", &pt, p2);
        cr_assert_leq(p2[0], 2);
        cr_assert_eq(p2[0] + p2[1], 256);
    }
}

Test(partition, tags_spread_without_a_map)
{
    redq__parts pt;
    unsigned i, j, s[16];
    redq__parts_init(&pt);
    cr_assert_eq(redq__parts_grow(&pt, "jobs", 4, 16, NULL, NULL), 0);
    for (i = 0; i < 16; i++) {
        const char *k = i == 0 ? "jobs" : pt.tag[i];
        s[i] = redq__key_slot(k, strlen(k));
    }
    /* 16 slots spread over the space: any two at least 16384/32 apart
     * (circularly). */
    for (i = 0; i < 16; i++)
        for (j = 0; j < i; j++) {
            unsigned d = s[i] > s[j] ? s[i] - s[j] : s[j] - s[i];
            if (d > 8192)
                d = 16384 - d;
            cr_assert_geq(d, 16384 / 32, "%u and %u: slots %u %u", i, j,
                          s[i], s[j]);
        }
}
