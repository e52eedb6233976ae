/*
 * Statistics as JSON on an interval (the options' on_stats), shared by the
 * producer and the consumer: the timer, the round-trip probe, and the
 * fields every handle reports. Each handle adds its own counters.
 *
 * The round trip is a PING on the handle's connection, sent after each
 * report and answered before the next (normally): it is queued behind the
 * handle's other commands, so it shows what the handle's own commands
 * wait, not just the network.
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "redq_private.h"

static void tick(evutil_socket_t fd, short what, void *arg)
{
    redq__stats *s = arg;
    (void)fd;
    (void)what;
    s->emit(s->handle);
}

int redq__stats_init(redq__stats *s, struct event_base *base,
                     const redq__options *o, void (*emit)(void *),
                     void *handle)
{
    struct timeval tv;
    memset(s, 0, sizeof *s);
    s->rtt_us = -1;
    s->rtt_avg_us = -1;
    if (o->on_stats == NULL || o->stats_interval_ms <= 0)
        return 0;
    s->cb = o->on_stats;
    s->user = o->stats_user;
    s->emit = emit;
    s->handle = handle;
    s->ev = event_new(base, -1, EV_PERSIST, tick, s);
    if (s->ev == NULL)
        return REDQ_ENOMEM;
    tv.tv_sec = o->stats_interval_ms / 1000;
    tv.tv_usec = (o->stats_interval_ms % 1000) * 1000;
    event_add(s->ev, &tv);
    return 0;
}

void redq__stats_free(redq__stats *s)
{
    if (s->ev != NULL)
        event_free(s->ev);
    s->ev = NULL;
}

/* The PING's reply; NULL (connection gone, handle closing) touches
 * nothing, since the handle may be freed right after its connection. */
static void on_pong(redq__conn *c, void *reply, void *arg)
{
    redq__stats *s = arg;
    redisReply *r = reply;
    long long us;
    (void)c;
    if (r == NULL)
        return;
    s->ping_out = 0;
    if (r->type == REDIS_REPLY_ERROR)
        return; /* a user without PING: no round trip, nothing else lost */
    us = (long long)(redq__now_us() - s->ping_sent_us);
    s->rtt_us = us;
    s->rtt_avg_us = s->rtt_avg_us < 0 ? us : s->rtt_avg_us + (us - s->rtt_avg_us) / 8;
}

void redq__stats_ping(redq__stats *s, redq__conn *c)
{
    const char *argv[1] = {"PING"};
    /* A PING not answered yet (a reconnect dropped it, or the server is
     * slow): send no second one; a lost one is forgotten on reconnect. */
    if (s->cb == NULL || c == NULL || !redq__conn_ready(c))
        return;
    if (s->ping_out && redq__now_us() - s->ping_sent_us < 60000000u)
        return;
    if (redq__conn_sendv(c, 1, argv, NULL, 0, on_pong, s) == 0) {
        s->ping_out = 1;
        s->ping_sent_us = redq__now_us();
    }
}

size_t redq__stats_head(const redq__stats *s, char *buf, size_t cap,
                        const char *type, int connected, uint64_t reconnects)
{
    int n = snprintf(buf, cap,
                     "{\"type\":\"%s\",\"ts_ms\":%lld,\"rtt_us\":%lld,"
                     "\"rtt_avg_us\":%lld,\"connected\":%d,"
                     "\"reconnects\":%llu",
                     type, redq__wall_ms(), s->rtt_us, s->rtt_avg_us,
                     connected ? 1 : 0, (unsigned long long)reconnects);
    return n < 0 ? 0 : (size_t)n < cap ? (size_t)n : cap - 1;
}
