/*
 * redq pop: a consumer whose handler writes each message and a \n to
 * stdout. Fast (at-most-once) by default, --reliable (at-least-once):
 * acked only once written and flushed. -n COUNT never takes more than
 * COUNT out of Redis; the window that makes that hold is explained above
 * pop_state.
 */
#include "cli.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>

/* pop's window when it must not take more than a count: the tail of the
 * count is held unacked (see pop_on_message), so this bounds that memory. */
#define POP_WINDOW 4096
#define POP_BATCH 256
/* pop --reliable -n: the held tail is printed but not acked until the run
 * ends, so a kill makes it come back; keep it short. */
#define RELIABLE_N_WINDOW 256
/* pop --reliable: the tool acks as soon as a message is printed; only the
 * -n tail waits, for as long as the run lasts. */
#define RELIABLE_VISIBILITY_MS INT_MAX

/*
 * Never more than COUNT out of Redis: the consumer takes messages only into
 * free places of its window (max_unacked, W here), so everything it can
 * still deliver is at most W minus what is unacked, and the total it can
 * ever deliver is at most acked + W. Acking a message only while
 * acked + 1 + W <= COUNT keeps that total within COUNT; the last W messages
 * are held unacked until the stop. W is min(COUNT, POP_WINDOW), so the
 * memory held stays bounded however large COUNT is.
 *
 * --reliable (at-least-once): a message may be acked only once it is on the
 * reader's side, written and flushed. pop_on_message writes it to stdio and
 * puts it in `pend`; the flush event (once per loop iteration, after the
 * rest of the pop's batch) flushes stdout and only then acks what was
 * pending, or under -n moves it to `held` as above. A SIGKILL at any moment
 * leaves every message not yet completely printed in the processing list,
 * from where a live consumer requeues it; what can come back although it
 * was printed is what was flushed and not yet acked in Redis: one batch,
 * plus `held`. So under -n this mode uses W = min(COUNT,
 * RELIABLE_N_WINDOW). A failed write nacks whatever may not have been shown
 * (retried after a backoff) and ends the run with status 1.
 *
 * Under -n, --reliable flushes and acks each message that is not to be held
 * at once, inside the handler. Deferred to the flush event, the acks would
 * come after the pop's round has ended with a full window, and the library
 * starts a new pop on an ack from outside its callback only once at least
 * min(W/4, pop_batch) places are free: the COUNT - W acks of a run can be
 * fewer than that, and the run would wait forever with room in its window.
 */
typedef struct pop_state {
    cli_session s; /* first: the ops get a cli_session * */
    redq_consumer *c;
    uint64_t want;     /* -n COUNT, or 0: no limit */
    uint64_t got;      /* printed */
    uint64_t acked;    /* acked, or decided to be (in pend, --reliable) */
    size_t window;     /* max_unacked */
    redq_message **held;
    size_t nheld;
    int reliable;
    redq_message **pend; /* --reliable: written, not yet flushed */
    size_t npend;
    struct event *idle;  /* --timeout */
    struct event *flush; /* flushes stdout once per loop iteration */
    int flush_pending;
    int stopping;
    int connected_once;
} pop_state;

static int pop_ever_connected(cli_session *s)
{
    pop_state *ps = (pop_state *)s;
    redq_consumer_stats st;

    if (!ps->connected_once && ps->c) {
        redq_consumer_get_stats(ps->c, &st);
        ps->connected_once = st.connects > 0;
    }
    return ps->connected_once;
}

static void pop_on_closed(void *user)
{
    pop_state *ps = user;

    ps->c = NULL;
    evtimer_del(ps->idle);
    event_del(ps->flush);
    cli_session_closed(&ps->s);
}

/* A message is on the reader's side (printed; flushed when --reliable): ack
 * it, or under -n hold it (see above). */
static void pop_printed(pop_state *ps, redq_message *m)
{
    if (ps->want == 0 || ps->stopping ||
        ps->acked + 1 + ps->window <= ps->want ||
        ps->nheld == ps->window) { /* full only after a visibility timeout */
        redq_ack(m);
        ps->acked++;
    } else {
        ps->held[ps->nheld++] = m;
    }
}

/* --reliable: the pending messages may not have reached stdout. They go
 * back to Redis (retried later), not to the reader's credit. */
static void pop_nack_pending(pop_state *ps, const char *why)
{
    char reason[300];
    size_t i;

    snprintf(reason, sizeof reason, "redq pop: %s", why);
    for (i = 0; i < ps->npend; i++)
        redq_nack(ps->pend[i], reason);
    ps->npend = 0;
}

/* Output failed (errno says why): the run ends with status 1. */
static void pop_output_failed(pop_state *ps)
{
    char why[200];

    snprintf(why, sizeof why, "write to stdout: %s", strerror(errno));
    pop_nack_pending(ps, why);
    cli_session_fail(&ps->s, CLI_RC_FAILED, "%s", why);
}

/* --reliable: flush stdout, then ack what it carried. 0, or -1 when the
 * output failed (reported; those messages were nacked). */
static int pop_commit(pop_state *ps)
{
    size_t i, n = ps->npend;

    if (n == 0)
        return 0;
    if (fflush(stdout) != 0) {
        pop_output_failed(ps);
        return -1;
    }
    ps->npend = 0;
    for (i = 0; i < n; i++)
        pop_printed(ps, ps->pend[i]);
    return 0;
}

static void pop_release_held(pop_state *ps)
{
    size_t i;

    if (ps->reliable)
        pop_commit(ps); /* stopping: everything it carried is acked */
    for (i = 0; i < ps->nheld; i++)
        redq_ack(ps->held[i]);
    ps->acked += ps->nheld;
    ps->nheld = 0;
}

static void pop_abort(cli_session *s)
{
    pop_state *ps = (pop_state *)s;

    ps->stopping = 1;
    evtimer_del(ps->idle);
    pop_ever_connected(s);
    /* The consumer's close invalidates unacked messages; ack them first so
     * that nothing refers to them afterwards. (At-least-once, acks that
     * the close cuts off only mean those messages come back.) */
    pop_release_held(ps);
    if (ps->c)
        redq_consumer_close(ps->c, pop_on_closed, ps); /* ECLOSED: already */
}

/* Fast mode: a write error ends the run; popped messages would be lost
 * unseen. */
static int pop_check_output(pop_state *ps)
{
    if (!ferror(stdout))
        return 0;
    cli_session_fail(&ps->s, CLI_RC_FAILED, "write to stdout: %s",
                     strerror(errno));
    return -1;
}

static void pop_on_stopped(redq_consumer *c, int status, void *user)
{
    pop_state *ps = user;

    (void)status; /* every message was acked (or nacked) before the stop */
    if (fflush(stdout) != 0)
        pop_check_output(ps);
    pop_ever_connected(&ps->s);
    redq_consumer_close(c, pop_on_closed, ps);
}

/* Take no more: release the blocked pop, print what it still brings. */
static void pop_finish(cli_session *s)
{
    pop_state *ps = (pop_state *)s;

    if (ps->stopping)
        return;
    ps->stopping = 1;
    evtimer_del(ps->idle);
    if (redq_consumer_stop(ps->c, -1, pop_on_stopped, ps) < 0) {
        pop_abort(s);
        return;
    }
    /* After the stop: these acks must not make room for another pop. */
    pop_release_held(ps);
}

static void pop_flush_cb(evutil_socket_t fd, short what, void *arg)
{
    pop_state *ps = arg;

    (void)fd;
    (void)what;
    ps->flush_pending = 0;
    if (ps->reliable)
        pop_commit(ps);
    else if (fflush(stdout) != 0)
        pop_check_output(ps);
}

static void pop_arm_idle(pop_state *ps)
{
    struct timeval tv;

    if (ps->s.o->timeout_s <= 0 || ps->stopping)
        return;
    tv = cli_seconds_tv(ps->s.o->timeout_s);
    evtimer_add(ps->idle, &tv);
}

static void pop_idle_cb(evutil_socket_t fd, short what, void *arg)
{
    pop_state *ps = arg;

    (void)fd;
    (void)what;
    /* Idle time counts from the first connection: a slow connect is the
     * watchdog's business. */
    if (!pop_ever_connected(&ps->s)) {
        pop_arm_idle(ps);
        return;
    }
    pop_finish(&ps->s);
}

static void pop_on_message(redq_consumer *c, redq_message *m, void *user)
{
    pop_state *ps = user;
    size_t len = redq_msg_len(m);

    (void)c;
    if (ps->s.fatal) { /* output is broken: nothing more can be shown */
        if (ps->reliable) {
            redq_nack(m, "redq pop: output failed");
        } else {
            redq_ack(m);
            ps->acked++;
        }
        return;
    }
    if (ps->reliable && ps->want && ps->got >= ps->want) {
        /* Only when a visibility timeout freed a place in the window. */
        redq_nack(m, "redq pop: -n COUNT already printed");
        return;
    }
    if (ps->reliable && ps->npend == ps->window && pop_commit(ps) < 0) {
        redq_nack(m, "redq pop: output failed"); /* not expected: see W */
        return;
    }
    if ((len && fwrite(redq_msg_data(m), 1, len, stdout) != len) ||
        putc('\n', stdout) == EOF) {
        if (ps->reliable) {
            ps->pend[ps->npend++] = m;
            pop_output_failed(ps);
        } else {
            redq_ack(m);
            ps->acked++;
            pop_check_output(ps);
        }
        return;
    }
    ps->got++;
    if (!ps->flush_pending) {
        /* After the rest of this pop's batch has been written. */
        ps->flush_pending = 1;
        event_active(ps->flush, EV_TIMEOUT, 0);
    }
    if (ps->reliable && ps->want &&
        (ps->stopping || ps->acked + 1 + ps->window <= ps->want)) {
        /* Under -n, acked here and now (see above). */
        if (fflush(stdout) != 0) {
            ps->pend[ps->npend++] = m;
            pop_output_failed(ps);
            return;
        }
        redq_ack(m);
        ps->acked++;
    } else if (ps->reliable) {
        ps->pend[ps->npend++] = m;
    } else {
        pop_printed(ps, m);
    }
    if (ps->want && ps->got == ps->want)
        pop_finish(&ps->s);
    else
        pop_arm_idle(ps);
}

/* A queue holding a string, a pop the server refuses: the command cannot
 * do what was asked, so stop (printing what was taken) and say why. */
static int pop_on_error(cli_session *s, int code, const char *text)
{
    if (code != REDQ_EWRONGTYPE && code != REDQ_ESERVER)
        return 0;
    cli_session_fail(s, CLI_RC_FAILED, "%s", text);
    return 1;
}

static const cli_session_ops pop_ops = {pop_ever_connected, pop_finish,
                                        pop_abort, pop_on_error};

/* cli.h */
int cli_cmd_pop(const cli_options *o)
{
    pop_state ps;
    redq_consumer_options opts;
    int rc, code;

    if (o->has_count && o->count == 0)
        return CLI_RC_OK; /* like head -n 0 */
    memset(&ps, 0, sizeof ps);
    if (cli_session_init(&ps.s, o, &pop_ops) < 0) {
        cli_session_free(&ps.s);
        return CLI_RC_FAILED;
    }
    ps.reliable = o->reliable;
    ps.want = o->has_count ? o->count : 0;
    ps.window = POP_WINDOW;
    if (ps.reliable && ps.want && ps.window > RELIABLE_N_WINDOW)
        ps.window = RELIABLE_N_WINDOW;
    if (ps.want && ps.want < ps.window)
        ps.window = (size_t)ps.want;
    ps.idle = evtimer_new(ps.s.base, pop_idle_cb, &ps);
    ps.flush = event_new(ps.s.base, -1, 0, pop_flush_cb, &ps);
    ps.held = ps.want ? calloc(ps.window, sizeof *ps.held) : NULL;
    ps.pend = ps.reliable ? calloc(ps.window, sizeof *ps.pend) : NULL;
    if (!ps.idle || !ps.flush || (ps.want && !ps.held) ||
        (ps.reliable && !ps.pend)) {
        fprintf(stderr, "redq: out of memory\n");
        code = CLI_RC_FAILED;
        goto out;
    }

    cli_session_consumer_options(&ps.s, &opts);
    opts.on_message = pop_on_message;
    opts.on_message_user = &ps;
    opts.pool_size = 1; /* one connection: messages come in queue order */
    opts.max_unacked = ps.window;
    opts.pop_batch = ps.window < POP_BATCH ? ps.window : POP_BATCH;
    /* Explicit both ways: the library's default may change. */
    opts.guarantee = ps.reliable ? REDQ_AT_LEAST_ONCE : REDQ_AT_MOST_ONCE;
    if (ps.reliable) {
        opts.visibility_timeout_ms =
            o->visibility_ms ? o->visibility_ms : RELIABLE_VISIBILITY_MS;
        if (o->consumer_ttl_ms)
            opts.consumer_ttl_ms = o->consumer_ttl_ms;
    }
    ps.s.in_new = 1;
    rc = redq_consumer_new(&ps.c, ps.s.base, &opts,
                           (const char *const *)o->args, (size_t)o->nargs);
    ps.s.in_new = 0;
    if (rc < 0) {
        code = cli_session_new_failed(&ps.s, rc);
        goto out;
    }
    cli_session_start(&ps.s);
    pop_arm_idle(&ps);
    event_base_dispatch(ps.s.base);

    if (ps.c) {
        fprintf(stderr, "redq: event loop ended before the consumer closed\n");
        code = CLI_RC_FAILED;
        goto out;
    }
    code = cli_session_exit_code(&ps.s);
    if (fflush(stdout) != 0 && !ps.s.fatal) {
        fprintf(stderr, "redq: write to stdout: %s\n", strerror(errno));
        code = CLI_RC_FAILED;
    }
out:
    if (ps.idle)
        event_free(ps.idle);
    if (ps.flush)
        event_free(ps.flush);
    free(ps.held);
    free(ps.pend);
    cli_session_free(&ps.s);
    return code;
}
