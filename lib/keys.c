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
 * Returns 1 and sets *off/*n, or 0 when the key has no tag. */
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
