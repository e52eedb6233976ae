/*
 * The key layout: where a queue's data lives (see the contract in
 * lib/redq_private.h and docs/DESIGN.md, "Key layout"). This is the only
 * place that builds key names; the Lua scripts get every key in KEYS.
 *
 * The rule that shapes it: every key of a queue must hash to the queue's
 * own Redis Cluster slot, so that one script can move a message between
 * them on one node, and so that a queue named without a hash tag ("jobs")
 * still works on a cluster. Appending a suffix keeps the slot only when the
 * name has a tag; otherwise the name itself becomes the tag.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redq_private.h"

/* CRC16-CCITT (XMODEM: polynomial 0x1021, initial value 0), the checksum
 * Redis Cluster maps keys with. Bitwise: key names are built once per
 * queue, never per message, so a table would buy nothing. */
static unsigned crc16(const char *s, size_t len)
{
    unsigned crc = 0;
    size_t i;
    int b;

    for (i = 0; i < len; i++) {
        crc ^= (unsigned)(unsigned char)s[i] << 8;
        for (b = 0; b < 8; b++)
            crc = (crc & 0x8000u) ? ((crc << 1) ^ 0x1021u) : (crc << 1);
        crc &= 0xffffu;
    }
    return crc;
}

/* The hash tag of a key as Redis Cluster defines it: the bytes between
 * the first open brace and the first close brace after it, if any.
 * Returns 1 and sets *off and *n, or 0 when the key has no tag. */
static int hash_tag(const char *key, size_t len, size_t *off, size_t *n)
{
    const char *open = memchr(key, '{', len), *close;
    if (open == NULL)
        return 0;
    close = memchr(open + 1, '}', len - (size_t)(open + 1 - key));
    if (close == NULL || close == open + 1)
        return 0;
    *off = (size_t)(open + 1 - key);
    *n = (size_t)(close - open - 1);
    return 1;
}

unsigned redq__key_slot(const char *key, size_t len)
{
    size_t off, n;
    if (hash_tag(key, len, &off, &n))
        return crc16(key + off, n) & 16383u;
    return crc16(key, len) & 16383u;
}

/* The shortest decimal string with `slot`: the tag for a name that cannot
 * be its own tag. Decimal strings up to 6 digits cover every slot (a unit
 * test walks all 16384), so the search is bounded and always succeeds. */
static int tag_for_slot(unsigned slot, char *out, size_t outlen)
{
    unsigned long i;
    for (i = 0; i < 1000000ul; i++) {
        int n = snprintf(out, outlen, "%lu", i);
        if ((crc16(out, (size_t)n) & 16383u) == slot)
            return n;
    }
    return -1;
}

int redq__key_tag_for_slot(unsigned slot, char *out, size_t outlen)
{
    char tag[16];
    int n;
    if (slot > 16383u)
        return -1;
    n = tag_for_slot(slot, tag, sizeof tag);
    if (n < 0 || (size_t)n >= outlen)
        return -1;
    memcpy(out, tag, (size_t)n + 1);
    return n;
}

char *redq__key(const char *q, size_t qlen, const char *suffix)
{
    size_t off, n, slen = strlen(suffix);
    char tag[16];
    int tlen = 0;
    char *k, *w;

    if (hash_tag(q, qlen, &off, &n)) {
        tlen = -1; /* Q ":" suffix */
    } else if (memchr(q, '}', qlen) == NULL) {
        tlen = 0; /* "{" Q "}/" suffix */
    } else {
        tlen = tag_for_slot(redq__key_slot(q, qlen), tag, sizeof tag);
        if (tlen < 0)
            return NULL;
    }
    k = malloc(qlen + slen + (size_t)(tlen > 0 ? tlen : 0) + 5);
    if (k == NULL)
        return NULL;
    w = k;
    if (tlen == 0)
        *w++ = '{';
    else if (tlen > 0) {
        *w++ = '{';
        memcpy(w, tag, (size_t)tlen);
        w += tlen;
        *w++ = '}';
    }
    memcpy(w, q, qlen);
    w += qlen;
    if (tlen == 0)
        *w++ = '}';
    /* '/' after a made-up tag, ':' after the queue's own: so "{a}"'s keys
     * ("{a}:dead") are never "a"'s ("{a}/dead"). */
    *w++ = tlen >= 0 ? '/' : ':';
    memcpy(w, suffix, slen + 1);
    return k;
}

/* A suffix of the layout: one of the fixed names, or a per-holder list or
 * heartbeat ("proc:<holder>", ...). */
static int layout_suffix(const char *s, size_t n)
{
    static const char *const fixed[] = {"due",       "delayed", "dead",
                                        "consumers", "reaper",  "meta"};
    static const char *const per_holder[] = {"proc:", "fproc:", "hb:"};
    size_t i;
    for (i = 0; i < sizeof fixed / sizeof fixed[0]; i++)
        if (n == strlen(fixed[i]) && memcmp(s, fixed[i], n) == 0)
            return 1;
    for (i = 0; i < sizeof per_holder / sizeof per_holder[0]; i++) {
        size_t k = strlen(per_holder[i]);
        if (n > k && memcmp(s, per_holder[i], k) == 0)
            return 1;
    }
    return 0;
}

int redq__key_reserved(const char *q, size_t qlen)
{
    size_t i, off, n;
    /* Only a name with a hash tag can be another queue's key: every key
     * redq__key() makes has one. */
    if (!hash_tag(q, qlen, &off, &n))
        return 0;
    /* Another queue's partition ("{12}jobs~3", lib/partition.c): only the
     * producer and consumer of the logical queue write there. */
    if (redq__partition_parse(q, qlen, NULL, NULL) != 0)
        return 1;
    for (i = 0; i < qlen; i++) {
        if ((q[i] != ':' && q[i] != '/') || !layout_suffix(q + i + 1, qlen - i - 1))
            continue;
        /* q = prefix SEP suffix: is it the key `suffix` of queue prefix? */
        {
            char *k = NULL;
            size_t plen = i;
            int same;
            if (q[i] == ':') {
                k = redq__key(q, plen, "x"); /* tagged prefix: "P:x" */
            } else if (q[0] == '{') {
                /* "{X}/s" (X is the queue) or "{T}X/s": try both readings. */
                const char *close = memchr(q, '}', plen);
                if (close != NULL && (size_t)(close - q) == plen - 1)
                    k = redq__key(q + 1, plen - 2, "x");
                else if (close != NULL)
                    k = redq__key(close + 1, plen - (size_t)(close + 1 - q),
                                  "x");
            }
            if (k == NULL)
                continue;
            /* Same prefix up to the separator as redq would build. */
            same = strlen(k) == plen + 2 && memcmp(k, q, plen + 1) == 0;
            free(k);
            if (same)
                return 1;
        }
    }
    return 0;
}
