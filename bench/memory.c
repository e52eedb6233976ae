/*
 * memory.c: memory mode. The server is paused for writes (CLIENT PAUSE
 * WRITE) while --messages N are produced, so all N stay pending in the
 * producer; once writes had time to settle, the resident set size is read
 * and the server let go. The figure is RSS growth per pending payload byte;
 * the drain after the unpause gives the msg/s line.
 */
#include "bench.h"

#include <stdio.h>

/* How long the server stays paused at most (it is unpaused as soon as the
 * snapshot is taken), and how long to let writes settle. */
#define MEMORY_PAUSE_MS 60000
#define MEMORY_SETTLE_MS 200

void bench_memory_options(redq_producer_options *o, const bench_config *cfg,
                          const bench_run *r)
{
    /* Everything stays pending while the server is paused: the window
     * must hold it all, and no deadline may fire meanwhile (a missed
     * reply deadline would drop the connection and resend). */
    o->max_pending_msgs = (size_t)r->want + 1;
    o->max_pending_bytes = (size_t)r->want * cfg->payload + 1;
    if (o->max_pending_bytes < 64u * 1024 * 1024)
        o->max_pending_bytes = 64u * 1024 * 1024;
    o->command_timeout_ms = MEMORY_PAUSE_MS + 30000;
    o->message_timeout_ms = MEMORY_PAUSE_MS + 30000;
}

int bench_memory_pause(bench_run *r, redisContext *sc, char *err, size_t errlen)
{
    char ms[16];
    const char *argv[4] = {"CLIENT", "PAUSE", ms, "WRITE"};
    redisReply *rep;
    snprintf(ms, sizeof ms, "%d", MEMORY_PAUSE_MS);
    rep = bench_sync_cmd(sc, err, errlen, 4, argv);
    if (rep == NULL)
        return -1;
    freeReplyObject(rep);
    r->rss_before = bench_current_rss_bytes();
    return 0;
}

void bench_memory_produced(bench_run *r)
{
    struct timeval settle = {0, MEMORY_SETTLE_MS * 1000};
    evtimer_add(r->ev_timer, &settle);
}

/* Everything is produced and the server is paused. Take the snapshot, then
 * let the server go and drain. */
void bench_memory_timeout(bench_run *r)
{
    redq_producer_stats st;
    char err[256];
    const char *argv[2] = {"CLIENT", "UNPAUSE"};
    redisReply *rep;

    redq_producer_get_stats(r->p, &st);
    r->rss_pending = bench_current_rss_bytes();
    r->pending_at_snap = st.pending_msgs;
    r->pending_bytes_at_snap = st.pending_bytes;
    r->snap_taken = 1;
    rep = bench_sync_cmd(r->sc, err, sizeof err, 2, argv);
    if (rep == NULL) {
        bench_run_fail(r, "%s", err);
        return;
    }
    freeReplyObject(rep);
    r->t0 = bench_now_ns(); /* from here on it is the drain rate */
    bench_check_done(r);
}

void bench_memory_print(const bench_result *x)
{
    bench_print_count("pending messages", (double)x->pending);
    bench_print_count("pending payload bytes", (double)x->pending_bytes);
    bench_print_count("RSS before, bytes", (double)x->rss_before);
    bench_print_count("RSS with all pending", (double)x->rss_pending);
    printf("  %-26s %14.3f\n", "RSS growth / payload bytes",
           x->pending_bytes ? (double)(x->rss_pending - x->rss_before) /
                                  (double)x->pending_bytes
                            : 0.0);
}

json_t *bench_memory_json(const bench_result *x)
{
    double pb = (double)x->pending_bytes;
    json_t *o = json_object();
    json_object_set_new(o, "pending_msgs", json_integer((json_int_t)x->pending));
    json_object_set_new(o, "pending_payload_bytes", json_integer((json_int_t)x->pending_bytes));
    json_object_set_new(o, "rss_before_bytes", json_integer(x->rss_before));
    json_object_set_new(o, "rss_pending_bytes", json_integer(x->rss_pending));
    json_object_set_new(o, "rss_growth_per_payload_byte",
                        pb > 0 ? json_real((double)(x->rss_pending - x->rss_before) / pb)
                               : json_null());
    return o;
}
