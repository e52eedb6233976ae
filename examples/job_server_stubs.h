/*
 * TEMPORARY (removed when branches ids and lifecycle are in main): maps
 * the 1.0 API that job_server.c is written against onto what main has
 * today, so the skeleton compiles. Not a pattern to copy.
 */
#define redq_reject(msg, reason) redq_nack((msg), (reason))
#define redq_producer_flush(p, timeout_ms, cb, user) \
    ((void)(timeout_ms), redq_producer_flush((p), (cb), (user)))
#define redq_consumer_stop(c, timeout_ms, cb, user) \
    ((void)(timeout_ms), redq_consumer_stop((c), (cb), (user)))
#define redq_admin_set_format redq_admin_pause
#define REDQ_FORMAT_FRAMES 0
#define rejected nacked
#define id queue
