/*
 * The admin's metrics text (redq_admin_metrics): the Prometheus text format
 * 0.0.4 of a list of queue snapshots (docs/DESIGN.md, "Metrics"). Apart
 * from lib/admin.c, which gathers the snapshots, so that each stays a
 * readable size.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "redq_private.h"

typedef struct sbuf {
    char *p;
    size_t len, cap;
    int oom;
} sbuf;

static void sb_add(sbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char *p;
        while (cap < b->len + n + 1)
            cap *= 2;
        p = realloc(b->p, cap);
        if (p == NULL) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void sb_printf(sbuf *b, const char *fmt, ...) REDQ__PRINTF(2, 3);
static void sb_printf(sbuf *b, const char *fmt, ...)
{
    char tmp[512];
    va_list ap;
    int n;
    va_start(ap, fmt);
    n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n > 0)
        sb_add(b, tmp, (size_t)n < sizeof tmp ? (size_t)n : sizeof tmp - 1);
}

enum { F_U64, F_AGE, F_PAUSED, F_SEEN, F_INT };

int redq__admin_metrics_text(const redq_queue_info *qs, size_t n,
                             char **text, size_t *textlen)
{
    static const struct {
        const char *name, *help;
        int kind;
        size_t off;
    } fam[] = {
        {"redq_queue_ready", "Messages in the ready list.", F_U64,
         offsetof(redq_queue_info, ready)},
        {"redq_queue_due",
         "Retried, recovered and requeued messages, taken before the ready "
         "list.", F_U64, offsetof(redq_queue_info, due)},
        {"redq_queue_processing",
         "Messages taken by at-least-once consumers and not acked yet.",
         F_U64, offsetof(redq_queue_info, processing)},
        {"redq_queue_delayed", "Scheduled messages not due yet.", F_U64,
         offsetof(redq_queue_info, delayed)},
        {"redq_queue_dead", "Dead letters.", F_U64,
         offsetof(redq_queue_info, dead)},
        {"redq_queue_consumers",
         "Live consumer connections (with a heartbeat).", F_U64,
         offsetof(redq_queue_info, consumers)},
        {"redq_queue_consumers_registered",
         "Consumer connections registered, live or not.", F_U64,
         offsetof(redq_queue_info, registered)},
        {"redq_queue_oldest_age_seconds",
         "Age of the oldest ready message, where it can be known.", F_AGE,
         0},
        {"redq_queue_paused", "1 when consumers do not take from the queue.",
         F_PAUSED, 0},
        {"redq_queue_partitions",
         "Active partitions of the queue (1: not partitioned).", F_INT,
         offsetof(redq_queue_info, partitions)},
        {"redq_queue_last_seen_timestamp_seconds",
         "Last use by a producer or consumer (registry), seconds since the "
         "epoch.", F_SEEN, 0},
    };
    sbuf b = {0};
    size_t f, i;
    char *esc = malloc(3 * REDQ__MAX_QUEUE_NAME + 1);

    if (esc == NULL)
        return REDQ_ENOMEM;
    for (f = 0; f < sizeof fam / sizeof fam[0]; f++) {
        sb_printf(&b, "# HELP %s %s\n# TYPE %s gauge\n", fam[f].name,
                  fam[f].help, fam[f].name);
        for (i = 0; i < n; i++) {
            const redq_queue_info *q = &qs[i];
            size_t el = redq__prom_escape(q->name, strlen(q->name), esc);
            char val[48];
            switch (fam[f].kind) {
            case F_U64:
                snprintf(val, sizeof val, "%llu",
                         (unsigned long long)*(const uint64_t *)(
                             (const char *)q + fam[f].off));
                break;
            case F_AGE:
                if (q->oldest_age_ms < 0)
                    continue; /* unknown: no sample rather than a lie */
                snprintf(val, sizeof val, "%lld.%03lld",
                         q->oldest_age_ms / 1000, q->oldest_age_ms % 1000);
                break;
            case F_PAUSED:
                snprintf(val, sizeof val, "%d", q->paused ? 1 : 0);
                break;
            case F_INT:
                snprintf(val, sizeof val, "%d",
                         *(const int *)((const char *)q + fam[f].off));
                break;
            default:
                if (q->last_seen_ms < 0)
                    continue;
                snprintf(val, sizeof val, "%lld.%03lld",
                         q->last_seen_ms / 1000, q->last_seen_ms % 1000);
                break;
            }
            sb_add(&b, fam[f].name, strlen(fam[f].name));
            sb_add(&b, "{queue=\"", 8);
            sb_add(&b, esc, el);
            sb_add(&b, "\"} ", 3);
            sb_add(&b, val, strlen(val));
            sb_add(&b, "\n", 1);
        }
    }
    /* The counters of messages moved: one family, the event a label, so
     * that a rate per event is one query (rate(...[5m]) by (event)). */
    {
        static const struct {
            const char *event;
            size_t off;
        } ev[] = {
            {"pushed", offsetof(redq_queue_info, pushed)},
            {"taken", offsetof(redq_queue_info, taken)},
            {"acked", offsetof(redq_queue_info, acked)},
            {"retried", offsetof(redq_queue_info, retried)},
            {"dead_lettered", offsetof(redq_queue_info, dead_lettered)},
        };
        size_t e;
        sb_printf(&b, "# HELP redq_queue_messages_total Messages moved, by "
                      "event: pushed by producers, taken by consumers, "
                      "acked, retried (nacks, timeouts, recoveries), "
                      "dead_lettered. Counted in Redis by every client.\n"
                      "# TYPE redq_queue_messages_total counter\n");
        for (i = 0; i < n; i++) {
            const redq_queue_info *q = &qs[i];
            size_t el = redq__prom_escape(q->name, strlen(q->name), esc);
            for (e = 0; e < sizeof ev / sizeof ev[0]; e++) {
                static const char pre[] = "redq_queue_messages_total{queue=\"";
                sb_add(&b, pre, sizeof pre - 1);
                sb_add(&b, esc, el);
                sb_printf(&b, "\",event=\"%s\"} %llu\n", ev[e].event,
                          (unsigned long long)*(const uint64_t *)(
                              (const char *)q + ev[e].off));
            }
        }
    }
    free(esc);
    if (b.oom) {
        free(b.p);
        return REDQ_ENOMEM;
    }
    *text = b.p;
    *textlen = b.len;
    return 0;
}

/* ---- running requests --------------------------------------------------- */

/* Send the request's first command(s); the connection is ready. */
