/*
 * TEMPORARY (removed when branch ids is in main): maps the 1.0 API that
 * job_server.c is written against onto what main has today, so the
 * skeleton compiles. Not a pattern to copy.
 */
#define redq_admin_set_format redq_admin_pause
#define REDQ_FORMAT_FRAMES 0
#define id queue
