/*
 * A handle's memory of queue formats (REDQ_FORMAT_*) and partitions: a
 * small hash map by queue name. The producer asks it once per batch it
 * opens (and, for the queue names its caller gives, once per change of
 * queue: see lib/producer.c, route), never per message of a one-queue
 * stream.
 */
#include <stdlib.h>
#include <string.h>

#include "redq_private.h"

static uint32_t fnv(const char *s, size_t n)
{
    uint32_t h = 2166136261u;
    size_t i;
    for (i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 16777619u;
    }
    return h;
}

static int grow(redq__qfmts *t)
{
    size_t n = t->nb ? t->nb * 2 : 16, i;
    redq__qfmt **nb = calloc(n, sizeof *nb);
    if (nb == NULL)
        return REDQ_ENOMEM;
    for (i = 0; i < t->nb; i++) {
        redq__qfmt *e = t->b[i];
        while (e != NULL) {
            redq__qfmt *next = e->next;
            e->next = nb[e->hash & (n - 1)];
            nb[e->hash & (n - 1)] = e;
            e = next;
        }
    }
    free(t->b);
    t->b = nb;
    t->nb = n;
    return 0;
}

redq__qfmt *redq__qfmt_get(redq__qfmts *t, const char *q, size_t qlen,
                           void *owner)
{
    uint32_t h = fnv(q, qlen);
    redq__qfmt *e;
    if (t->nb != 0)
        for (e = t->b[h & (t->nb - 1)]; e != NULL; e = e->next)
            if (e->hash == h && e->qlen == qlen &&
                memcmp(e->name, q, qlen) == 0)
                return e;
    if (t->n >= t->nb && grow(t) != 0)
        return NULL;
    e = calloc(1, sizeof *e + qlen + 1);
    if (e == NULL)
        return NULL;
    e->meta = redq__key(q, qlen, "meta");
    if (e->meta == NULL) {
        free(e);
        return NULL;
    }
    e->metalen = strlen(e->meta);
    memcpy(e->name, q, qlen);
    e->name[qlen] = '\0';
    e->qlen = qlen;
    e->hash = h;
    e->owner = owner;
    e->format = -1;
    e->pactive = 1;
    e->next = t->b[h & (t->nb - 1)];
    t->b[h & (t->nb - 1)] = e;
    t->n++;
    return e;
}

void redq__qfmts_free(redq__qfmts *t)
{
    size_t i;
    for (i = 0; i < t->nb; i++) {
        redq__qfmt *e = t->b[i];
        while (e != NULL) {
            redq__qfmt *next = e->next;
            while (e->hhead != NULL) {
                redq__qheld *h = e->hhead;
                e->hhead = h->next;
                free(h->key);
                free(h->payload);
                free(h);
            }
            if (e->parts != NULL) {
                unsigned k;
                for (k = 0; k < REDQ__MAX_PARTITIONS; k++)
                    free(e->parts->pname[k]);
                free(e->parts);
            }
            free(e->meta);
            free(e);
            e = next;
        }
    }
    free(t->b);
    t->b = NULL;
    t->nb = t->n = 0;
}

const char *redq__format_name(int format)
{
    return format == REDQ_FORMAT_PLAIN    ? "plain"
           : format == REDQ_FORMAT_FRAMES ? "frames"
                                          : "unknown";
}
