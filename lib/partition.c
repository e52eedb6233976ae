/*
 * Partitioned queues: the one definition of a partition's name, of the
 * meta fields that say how many a queue has, and of where new ones go (see
 * lib/redq_private.h and docs/DESIGN.md, "Partitioned queues").
 *
 * A partition is an ordinary queue whose name carries a decimal hash tag,
 * so its slot (and on a cluster its master) is chosen by the tag, while
 * the logical name stays readable in it: "{T}Q~i". Everything that
 * operates on one queue (producer, consumer, scripts, a plain client's
 * LPUSH) works on a partition unchanged.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <hiredis/hiredis.h>

#include "redq_private.h"

#define NSLOTS 16384u

char *redq__partition_name(const char *q, size_t qlen, const char *tag,
                           unsigned i)
{
    char num[8];
    size_t tlen, nlen;
    char *s, *w;
    if (i >= REDQ__MAX_PARTITIONS)
        return NULL;
    if (i == 0) {
        s = malloc(qlen + 1);
        if (s != NULL) {
            memcpy(s, q, qlen);
            s[qlen] = '\0';
        }
        return s;
    }
    tlen = strlen(tag);
    nlen = (size_t)snprintf(num, sizeof num, "%u", i);
    s = malloc(tlen + qlen + nlen + 4);
    if (s == NULL)
        return NULL;
    w = s;
    *w++ = '{';
    memcpy(w, tag, tlen);
    w += tlen;
    *w++ = '}';
    memcpy(w, q, qlen);
    w += qlen;
    *w++ = '~';
    memcpy(w, num, nlen + 1);
    return s;
}

void redq__parts_init(redq__parts *pt)
{
    pt->active = 1;
    pt->total = 1;
    pt->tag[0][0] = '\0';
}

/* A decimal without sign or leading zeros ("0" itself allowed when
 * zero_ok), at most maxdig digits; its value in *v. */
static int parse_dec(const char *s, size_t n, size_t maxdig, int zero_ok,
                     unsigned long *v)
{
    size_t i;
    unsigned long x = 0;
    if (n == 0 || n > maxdig || (s[0] == '0' && (n > 1 || !zero_ok)))
        return 0;
    for (i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return 0;
        x = x * 10 + (unsigned long)(s[i] - '0');
    }
    *v = x;
    return 1;
}

int redq__parts_parse(redq__parts *pt, const char *pval, size_t plen,
                      const char *tags, size_t tlen)
{
    int bad = 0;
    size_t i = 0;
    unsigned long v;

    redq__parts_init(pt);
    if (pval != NULL) {
        if (parse_dec(pval, plen, 3, 0, &v) && v >= 1 &&
            v <= REDQ__MAX_PARTITIONS)
            pt->active = (unsigned)v;
        else
            bad = 1; /* read as 1: everything goes to Q itself */
    }
    /* Tags: decimal strings of 1..6 digits (what redq__parts_grow makes),
     * separated by single spaces; anything else ends the list. */
    while (tags != NULL && i < tlen && pt->total < REDQ__MAX_PARTITIONS) {
        size_t j = i;
        while (j < tlen && tags[j] != ' ')
            j++;
        if (!parse_dec(tags + i, j - i, REDQ__PTAG_MAX - 2, 1, &v)) {
            bad = 1;
            break;
        }
        memcpy(pt->tag[pt->total], tags + i, j - i);
        pt->tag[pt->total][j - i] = '\0';
        pt->total++;
        i = j + 1;
        if (j + 1 == tlen) { /* a trailing space */
            bad = 1;
            break;
        }
    }
    if (tags != NULL && i < tlen && pt->total >= REDQ__MAX_PARTITIONS)
        bad = 1; /* more tags than partitions can exist */
    if (pt->active > pt->total) {
        /* Fewer tags than partitions: the missing ones have no name. */
        pt->active = pt->total;
        bad = 1;
    }
    return bad ? REDQ_EPROTOCOL : 0;
}

size_t redq__parts_tags_string(const redq__parts *pt, char *out)
{
    size_t n = 0;
    unsigned i;
    for (i = 1; i < pt->total; i++) {
        size_t l = strlen(pt->tag[i]);
        if (i > 1)
            out[n++] = ' ';
        memcpy(out + n, pt->tag[i], l);
        n += l;
    }
    out[n] = '\0';
    return n;
}

/* The van der Corput sequence in base 2 over the slot space: k = 1, 2, 3,
 * ... gives 1/2, 1/4, 3/4, 1/8, ... of n: every prefix is spread evenly. */
static unsigned spread(unsigned k, unsigned n)
{
    unsigned long num = 0, den = 1;
    while (k > 0) {
        num = num * 2 + (k & 1u);
        den *= 2;
        k >>= 1;
    }
    return (unsigned)((unsigned long)n * num / den);
}

typedef struct master {
    char name[64];
    unsigned nslots;
    unsigned first; /* index into the slots-by-master array */
    unsigned parts; /* partitions of q it holds */
} master;

/* One more partition's slot: the next free slot of `pick` (its slots in
 * slots[first .. first+nslots)), starting at a spread position. */
static int free_slot_of(const master *m, const unsigned *slots,
                        const unsigned char *used, unsigned k)
{
    unsigned j, start = spread(k, m->nslots);
    for (j = 0; j < m->nslots; j++) {
        unsigned s = slots[m->first + (start + j) % m->nslots];
        if (!used[s])
            return (int)s;
    }
    return -1;
}

int redq__parts_grow(redq__parts *pt, const char *q, size_t qlen,
                     unsigned want, redq__slot_owner_fn owner,
                     const void *owner_arg)
{
    unsigned char *used;
    unsigned *slots = NULL, *owner_of = NULL, i, s, nm = 0;
    master *ms = NULL;
    int rc = 0;

    if (want < 1 || want > REDQ__MAX_PARTITIONS)
        return REDQ_EINVAL;
    if (pt->total >= want)
        return 0;
    used = calloc(NSLOTS, 1);
    if (used == NULL)
        return REDQ_ENOMEM;
    used[redq__key_slot(q, qlen)] = 1;
    for (i = 1; i < pt->total; i++)
        used[redq__key_slot(pt->tag[i], strlen(pt->tag[i]))] = 1;

    if (owner != NULL) {
        /* The masters in slot order, and each one's slots. */
        char name[64];
        unsigned *fill;
        owner_of = malloc(NSLOTS * sizeof *owner_of);
        slots = malloc(NSLOTS * sizeof *slots);
        ms = calloc(NSLOTS, sizeof *ms);
        if (owner_of == NULL || slots == NULL || ms == NULL) {
            rc = REDQ_ENOMEM;
            goto out;
        }
        for (s = 0; s < NSLOTS; s++) {
            unsigned m;
            owner_of[s] = NSLOTS; /* nobody */
            if (owner(owner_arg, s, name, sizeof name) != 0)
                continue;
            for (m = 0; m < nm && strcmp(ms[m].name, name) != 0; m++)
                ;
            if (m == nm) {
                snprintf(ms[nm].name, sizeof ms[nm].name, "%s", name);
                nm++;
            }
            ms[m].nslots++;
            owner_of[s] = m;
        }
        if (nm > 0) {
            fill = calloc(nm, sizeof *fill);
            if (fill == NULL) {
                rc = REDQ_ENOMEM;
                goto out;
            }
            for (i = 0, s = 0; i < nm; i++) {
                ms[i].first = s;
                s += ms[i].nslots;
            }
            for (s = 0; s < NSLOTS; s++)
                if (owner_of[s] < NSLOTS) {
                    master *m = &ms[owner_of[s]];
                    slots[m->first + fill[owner_of[s]]++] = s;
                }
            free(fill);
            /* What q already has where. */
            if (owner_of[redq__key_slot(q, qlen)] < NSLOTS)
                ms[owner_of[redq__key_slot(q, qlen)]].parts++;
            for (i = 1; i < pt->total; i++) {
                s = redq__key_slot(pt->tag[i], strlen(pt->tag[i]));
                if (owner_of[s] < NSLOTS)
                    ms[owner_of[s]].parts++;
            }
        }
    }

    while (pt->total < want) {
        int slot = -1;
        if (nm > 0) {
            /* The master with the fewest partitions of q that still has
             * a free slot (ties: the first in slot order). */
            unsigned m, best = nm;
            for (m = 0; m < nm; m++)
                if (ms[m].parts < (best < nm ? ms[best].parts : ~0u) &&
                    free_slot_of(&ms[m], slots, used, 0) >= 0)
                    best = m;
            if (best < nm) {
                slot = free_slot_of(&ms[best], slots, used,
                                    ms[best].parts + 1);
                ms[best].parts++;
            }
        }
        if (slot < 0) {
            /* No map (or no master with room): spread from q's slot. */
            unsigned k, base = redq__key_slot(q, qlen);
            for (k = pt->total; slot < 0; k++) {
                unsigned c = (base + spread(k, NSLOTS)) % NSLOTS, j;
                for (j = 0; j < NSLOTS; j++)
                    if (!used[(c + j) % NSLOTS]) {
                        slot = (int)((c + j) % NSLOTS);
                        break;
                    }
                if (j == NSLOTS)
                    break; /* cannot happen: 256 partitions, 16384 slots */
            }
            if (slot < 0) {
                rc = REDQ_EINVAL;
                goto out;
            }
        }
        if (redq__key_tag_for_slot((unsigned)slot, pt->tag[pt->total],
                                   REDQ__PTAG_MAX) < 0) {
            rc = REDQ_EINVAL;
            goto out;
        }
        used[slot] = 1;
        pt->total++;
    }
out:
    free(used);
    free(slots);
    free(owner_of);
    free(ms);
    return rc;
}

unsigned redq__partition_parse(const char *q, size_t qlen, const char **lq,
                               size_t *lqlen)
{
    const char *close, *tilde;
    unsigned long v, i;
    if (qlen < 6 || q[0] != '{')
        return 0;
    close = memchr(q, '}', qlen);
    if (close == NULL ||
        !parse_dec(q + 1, (size_t)(close - q - 1), REDQ__PTAG_MAX - 2, 1, &v))
        return 0;
    /* The last '~': the logical name may hold '~' itself. */
    for (tilde = q + qlen - 1; tilde > close && *tilde != '~'; tilde--)
        ;
    if (tilde <= close + 1 ||
        !parse_dec(tilde + 1, (size_t)(q + qlen - tilde - 1), 3, 0, &i) ||
        i < 1 || i >= REDQ__MAX_PARTITIONS)
        return 0;
    if (lq != NULL)
        *lq = close + 1;
    if (lqlen != NULL)
        *lqlen = (size_t)(tilde - close - 1);
    return (unsigned)i;
}

int redq__parts_from_reply(redq__parts *pt, const void *pval, const void *tags)
{
    const redisReply *pv = pval, *tv = tags;
    int ps = pv != NULL && pv->type == REDIS_REPLY_STRING,
        ts = tv != NULL && tv->type == REDIS_REPLY_STRING;
    return redq__parts_parse(pt, ps ? pv->str : NULL, ps ? (size_t)pv->len : 0,
                             ts ? tv->str : NULL, ts ? (size_t)tv->len : 0);
}
