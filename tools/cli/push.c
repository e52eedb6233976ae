/*
 * redq push: the MESSAGE arguments, or one message per line of stdin, into
 * a producer, then "pushed N" on stderr once every report has come.
 *
 * Input is pumped from the loop: at most PRODUCE_CHUNK messages per
 * iteration so that the producer writes batches while input still comes,
 * and reading pauses while the library says REDQ_EFULL (its on_ready
 * resumes it), so back-pressure reaches the writer of stdin. A pipe,
 * socket or terminal is polled; a regular file is read in chunks from the
 * pump. Lines are split by tools/cli_lines.c.
 */
#include "cli.h"
#include "cli_lines.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

/* Messages produced per loop iteration at most, so the producer gets to
 * write batches while input is still coming. */
#define PRODUCE_CHUNK 4096
/* Bytes read from stdin per loop iteration. */
#define READ_CHUNK 65536
/* A line still without \n at this length is refused: it would fail anyway
 * (twice the library's default max_message_bytes), and buffering on would
 * let any input exhaust memory. */
#define MAX_LINE_BUFFER ((size_t)32 << 20)

typedef struct push_state {
    cli_session s; /* first: the ops get a cli_session * */
    redq_producer *p;
    const char *queue;

    /* Input: the MESSAGE arguments, or stdin. */
    char **msgs;
    int nmsgs, next_msg;
    int from_stdin;
    struct event *ev_in; /* readable stdin (pipe, socket, tty), or NULL */
    struct event *pump;  /* zero-timeout timer: produce (and read files) */
    char *buf;           /* stdin bytes; [off, len) not yet produced */
    size_t off, len, cap, scan; /* scan: no \n in [off, scan) */
    uint64_t line;       /* lines produced, for messages */
    int eof;
    int paused;          /* REDQ_EFULL: waiting for on_ready */
    int reading;         /* ev_in is added */
    int finishing;       /* input done; flushing or closing */

    uint64_t produced, ok, failed;
    int input_error;     /* reading stdin failed */
    int connected_once;
    int first_status;
    char first_err[512];
} push_state;

static int push_ever_connected(cli_session *s)
{
    push_state *ps = (push_state *)s;
    redq_producer_stats st;

    /* Remembered: the stats go with the producer when it closes. */
    if (!ps->connected_once && ps->p) {
        redq_producer_get_stats(ps->p, &st);
        ps->connected_once = st.connects > 0;
    }
    return ps->connected_once;
}

static void push_on_closed(void *user)
{
    push_state *ps = user;

    ps->p = NULL;
    if (ps->ev_in)
        event_del(ps->ev_in);
    evtimer_del(ps->pump);
    cli_session_closed(&ps->s);
}

static void push_abort(cli_session *s)
{
    push_state *ps = (push_state *)s;

    ps->finishing = 1;
    if (ps->ev_in)
        event_del(ps->ev_in);
    evtimer_del(ps->pump);
    push_ever_connected(s);
    if (ps->p)
        redq_producer_close(ps->p, push_on_closed, ps); /* ECLOSED: already */
}

static void push_on_flushed(redq_producer *p, int status, void *user)
{
    (void)status; /* the reports say what happened */
    push_ever_connected(user);
    redq_producer_close(p, push_on_closed, user);
}

/* No more input: wait for every report, then close. */
static void push_finish(cli_session *s)
{
    push_state *ps = (push_state *)s;

    if (ps->finishing)
        return;
    ps->finishing = 1;
    if (ps->ev_in)
        event_del(ps->ev_in);
    evtimer_del(ps->pump);
    if (redq_producer_flush(ps->p, -1, push_on_flushed, ps) < 0)
        push_abort(s);
}

static void push_on_report(redq_producer *p, const redq_report *r,
                           void *user)
{
    push_state *ps = user;

    (void)p;
    if (r->status == 0) {
        ps->ok++;
        if (ps->s.o->ids)
            printf("%s\n", r->id);
        return;
    }
    ps->failed++;
    if (!ps->first_status) {
        ps->first_status = r->status;
        snprintf(ps->first_err, sizeof ps->first_err, "%s",
                 r->errstr ? r->errstr : redq_strerror(r->status));
    }
}

static void push_schedule(push_state *ps)
{
    static const struct timeval zero = {0, 0};
    evtimer_add(ps->pump, &zero);
}

/* Produce one message. 0, 1 on REDQ_EFULL (retry after on_ready), or -1
 * when the run has to end (reported). */
static int push_one(push_state *ps, const char *data, size_t len)
{
    int rc = redq_produce(ps->p, ps->queue, data, len, NULL);

    if (rc == 0) {
        ps->produced++;
        return 0;
    }
    if (rc == REDQ_EFULL) {
        ps->paused = 1;
        return 1;
    }
    if (rc == REDQ_EINVAL) {
        cli_session_fail(&ps->s, CLI_RC_USAGE, "invalid queue name '%s'",
                         ps->queue);
        return -1;
    }
    /* REDQ_ETOOBIG: this one fails, the others can still go. */
    ps->failed++;
    if (!ps->first_status) {
        ps->first_status = rc;
        if (ps->from_stdin)
            snprintf(ps->first_err, sizeof ps->first_err,
                     "line %llu: %s", (unsigned long long)ps->line + 1,
                     redq_strerror(rc));
        else
            snprintf(ps->first_err, sizeof ps->first_err, "%s",
                     redq_strerror(rc));
    }
    if (rc == REDQ_ENOMEM) {
        cli_session_fail(&ps->s, CLI_RC_FAILED, "%s", redq_strerror(rc));
        return -1;
    }
    return 0;
}

/* Produce the complete lines in the buffer. 0 when none is left, 1 on
 * REDQ_EFULL, 2 when this iteration's share is done and more lines wait
 * (the pump is scheduled), -1 to stop. */
static int push_lines(push_state *ps)
{
    int i;

    for (i = 0; i < PRODUCE_CHUNK; i++) {
        size_t n, next, scan = ps->scan;
        int rc;

        if (!cli_line_next(ps->buf, ps->off, &scan, ps->len, 0, &n, &next)) {
            ps->scan = scan;
            return 0;
        }
        rc = push_one(ps, ps->buf + ps->off, n);
        if (rc != 0)
            return rc;
        ps->line++;
        ps->off = ps->scan = next;
    }
    push_schedule(ps); /* more lines may be buffered: next iteration */
    return 2;
}

/* Read one chunk of stdin into the buffer. */
static void push_read(push_state *ps)
{
    ssize_t n;

    if (ps->off > 0) { /* keep the unproduced bytes at the start */
        memmove(ps->buf, ps->buf + ps->off, ps->len - ps->off);
        ps->len -= ps->off;
        ps->scan -= ps->off;
        ps->off = 0;
    }
    if (ps->cap - ps->len < READ_CHUNK) {
        size_t ncap = ps->cap ? ps->cap * 2 : 2 * READ_CHUNK;
        char *nb = realloc(ps->buf, ncap);
        if (!nb) {
            ps->input_error = 1;
            ps->eof = 1;
            fprintf(stderr, "redq: out of memory reading stdin\n");
            return;
        }
        ps->buf = nb;
        ps->cap = ncap;
    }
    /* One read per readiness (or tick): it does not block for a pipe or
     * tty that polled readable, nor for a regular file. */
    n = read(STDIN_FILENO, ps->buf + ps->len, ps->cap - ps->len);
    if (n > 0)
        ps->len += (size_t)n;
    else if (n == 0)
        ps->eof = 1;
    else if (errno != EINTR && errno != EAGAIN) {
        fprintf(stderr, "redq: read stdin: %s\n", strerror(errno));
        ps->input_error = 1;
        ps->eof = 1;
    }
}

/* Produce what there is; then read on, wait for room, or finish. */
static void push_pump(push_state *ps)
{
    int rc;

    if (ps->finishing || ps->paused)
        return;
    if (!ps->from_stdin) {
        int i;
        for (i = 0; i < PRODUCE_CHUNK && ps->next_msg < ps->nmsgs; i++) {
            const char *m = ps->msgs[ps->next_msg];
            rc = push_one(ps, m, strlen(m));
            if (rc > 0)
                return; /* on_ready resumes */
            if (rc < 0)
                return;
            ps->next_msg++;
        }
        if (ps->next_msg == ps->nmsgs)
            push_finish(&ps->s);
        else
            push_schedule(ps);
        return;
    }

    rc = push_lines(ps);
    if (rc < 0)
        return;
    if (rc > 0) {
        /* Window full (back-pressure reaches the writer), or more lines
         * buffered than one iteration produces: read on once they are
         * out. */
        if (ps->reading) {
            event_del(ps->ev_in);
            ps->reading = 0;
        }
        return;
    }
    if (ps->eof) {
        size_t n, next, scan = ps->scan;

        if (!ps->input_error &&
            cli_line_next(ps->buf, ps->off, &scan, ps->len, 1, &n, &next)) {
            /* A last line without \n. */
            rc = push_one(ps, ps->buf + ps->off, n);
            if (rc != 0)
                return;
            ps->line++;
            ps->off = ps->scan = next;
        }
        push_finish(&ps->s);
        return;
    }
    if (ps->len - ps->off > MAX_LINE_BUFFER) {
        fprintf(stderr, "redq: stdin line %llu is too long\n",
                (unsigned long long)ps->line + 1);
        ps->input_error = 1;
        push_finish(&ps->s);
        return;
    }
    if (ps->ev_in) {
        if (!ps->reading && event_add(ps->ev_in, NULL) == 0)
            ps->reading = 1;
    } else {
        push_schedule(ps); /* a file: the next tick reads on */
    }
}

static void push_pump_cb(evutil_socket_t fd, short what, void *arg)
{
    push_state *ps = arg;

    (void)fd;
    (void)what;
    if (ps->from_stdin && !ps->ev_in && !ps->eof && !ps->finishing &&
        !ps->paused && ps->scan == ps->len)
        push_read(ps);
    push_pump(ps);
}

static void push_input_cb(evutil_socket_t fd, short what, void *arg)
{
    push_state *ps = arg;

    (void)fd;
    (void)what;
    if (ps->finishing || ps->paused)
        return;
    push_read(ps);
    push_pump(ps);
}

static void push_on_ready(redq_producer *p, void *user)
{
    push_state *ps = user;

    (void)p;
    ps->paused = 0;
    push_schedule(ps);
}

static const cli_session_ops push_ops = {push_ever_connected, push_finish,
                                         push_abort, NULL};

/* cli.h */
int cli_cmd_push(const cli_options *o)
{
    push_state ps;
    redq_producer_options opts;
    struct stat st;
    int rc, code;

    memset(&ps, 0, sizeof ps);
    if (cli_session_init(&ps.s, o, &push_ops) < 0) {
        cli_session_free(&ps.s);
        return CLI_RC_FAILED;
    }
    ps.queue = o->args[0];
    ps.msgs = o->args + 1;
    ps.nmsgs = o->nargs - 1;
    ps.from_stdin = ps.nmsgs == 0;
    ps.pump = evtimer_new(ps.s.base, push_pump_cb, &ps);
    if (!ps.pump) {
        code = CLI_RC_FAILED;
        goto out;
    }
    /* A pipe, socket or terminal is polled; epoll refuses regular files
     * and /dev/null, which are read in chunks from the pump instead (a
     * read of those never waits). */
    if (ps.from_stdin && fstat(STDIN_FILENO, &st) == 0 &&
        (S_ISFIFO(st.st_mode) || S_ISSOCK(st.st_mode) ||
         isatty(STDIN_FILENO))) {
        ps.ev_in = event_new(ps.s.base, STDIN_FILENO, EV_READ | EV_PERSIST,
                             push_input_cb, &ps);
        if (!ps.ev_in) {
            code = CLI_RC_FAILED;
            goto out;
        }
    }

    cli_session_producer_options(&ps.s, &opts);
    opts.on_report = push_on_report;
    opts.on_report_user = &ps;
    opts.on_ready = push_on_ready;
    opts.on_ready_user = &ps;
    opts.message_timeout_ms = o->message_timeout_ms;
    opts.min_replicas = o->replicas;
    if (o->replica_timeout_ms > 0)
        opts.replica_timeout_ms = o->replica_timeout_ms;
    if (o->max_pending) {
        opts.max_pending_msgs = o->max_pending;
    }
    ps.s.in_new = 1;
    rc = redq_producer_new(&ps.p, ps.s.base, &opts);
    ps.s.in_new = 0;
    if (rc < 0) {
        code = cli_session_new_failed(&ps.s, rc);
        goto out;
    }
    cli_session_start(&ps.s);
    push_schedule(&ps);
    event_base_dispatch(ps.s.base);

    if (ps.p) {
        fprintf(stderr, "redq: event loop ended before the producer closed\n");
        code = CLI_RC_FAILED;
        goto out;
    }
    code = cli_session_exit_code(&ps.s);
    if (ps.failed > 0 && !ps.s.fatal) {
        if (!push_ever_connected(&ps.s)) {
            char text[600];
            cli_describe_connect_failure(&ps.s, text, sizeof text);
            fprintf(stderr, "redq: %s\n", text);
            code = cli_exit_code_for(ps.s.last_code);
        } else {
            fprintf(stderr, "redq: %llu of %llu messages failed; the first: %s\n",
                    (unsigned long long)ps.failed,
                    (unsigned long long)(ps.ok + ps.failed), ps.first_err);
            if (code == CLI_RC_OK)
                code = CLI_RC_FAILED;
        }
    }
    if (ps.input_error && code == CLI_RC_OK)
        code = CLI_RC_FAILED;
    if (!o->quiet)
        fprintf(stderr, "pushed %llu\n", (unsigned long long)ps.ok);
out:
    if (ps.ev_in)
        event_free(ps.ev_in);
    if (ps.pump)
        event_free(ps.pump);
    free(ps.buf);
    cli_session_free(&ps.s);
    return code;
}
