/*
 * The session of push and pop: what a command needs around its producer
 * or consumer. One event_base; SIGINT/SIGTERM as libevent events (the
 * first finishes the run gracefully, a second aborts it); the
 * --connect-timeout watchdog; the library's log callback, which turns its
 * lines into the tool's messages and exit codes (a wrong password fails at
 * once, a refused connection only when the watchdog fires); and the exit
 * code at the end. The command supplies the handle-specific part as
 * cli_session_ops (cli.h).
 */
#include "cli.h"

#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

/* cli.h */
struct timeval cli_seconds_tv(double s)
{
    struct timeval tv;

    tv.tv_sec = (time_t)s; /* s >= 0: truncation is floor */
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

/* The library's log lines read "producer: connect 127.0.0.1:1: Connection
 * refused; retrying in 50 ms". Drop the handle prefix and what the library
 * does next: the tool decides that. */
static void clean_log_text(const char *msg, char *out, size_t cap)
{
    static const char *const prefixes[] = {"producer: ", "consumer: ",
                                           "admin: "};
    const char *semi;
    size_t i, n;

    for (i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        n = strlen(prefixes[i]);
        if (strncmp(msg, prefixes[i], n) == 0) {
            msg += n;
            break;
        }
    }
    semi = strstr(msg, "; ");
    n = semi ? (size_t)(semi - msg) : strlen(msg);
    if (n >= cap)
        n = cap - 1;
    memcpy(out, msg, n);
    out[n] = '\0';
}

int cli_exit_code_for(int code)
{
    return code == REDQ_EAUTH || code == REDQ_ENOPERM ? CLI_RC_AUTH
                                                      : CLI_RC_CONNECT;
}

/* "cannot connect to 127.0.0.1:1: Connection refused" and the like, from
 * the last failure the library logged. */
void cli_describe_connect_failure(const cli_session *s, char *out,
                                  size_t cap)
{
    const char *e = s->last_err;

    if (!e[0])
        snprintf(out, cap, "cannot connect: no connection within %g s",
                 s->o->connect_timeout_s);
    else if (s->last_code == REDQ_EAUTH)
        snprintf(out, cap, "authentication failed: %s", e);
    else if (strncmp(e, "connect ", 8) == 0)
        snprintf(out, cap, "cannot connect to %s", e + 8);
    else if (strncmp(e, "resolve ", 8) == 0)
        snprintf(out, cap, "cannot resolve %s", e + 8);
    else
        snprintf(out, cap, "cannot connect: %s", e);
}

/*
 * End the run with exit code `rc` and a one-line error. The first failure
 * stands; later ones are not printed (they are usually its consequences).
 * A handle that never connected has nothing in flight worth waiting for and
 * is closed at once; otherwise it finishes gracefully.
 */
void cli_session_fail(cli_session *s, int rc, const char *fmt, ...)
{
    va_list ap;

    if (s->fatal)
        return;
    s->fatal = rc;
    fputs("redq: ", stderr);
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    if (s->ops->ever_connected(s))
        s->ops->finish(s);
    else
        s->ops->abort(s);
}

static void session_fail_connect(cli_session *s)
{
    char text[600];

    cli_describe_connect_failure(s, text, sizeof text);
    cli_session_fail(s, cli_exit_code_for(s->last_code), "%s", text);
}

static void session_log(int level, int code, const char *msg, void *user)
{
    cli_session *s = user;
    char text[512];

    clean_log_text(msg, text, sizeof text);
    if (s->in_new) {
        snprintf(s->new_err, sizeof s->new_err, "%s", text);
        return;
    }
    if (!s->ops->ever_connected(s)) {
        /* Each failed attempt is retried by the library; the watchdog
         * reports the last one if none succeeds in time. Wrong credentials
         * or database will not fix themselves: give up at once. */
        if (level == REDQ_LOG_ERROR && code < 0) {
            s->last_code = code;
            snprintf(s->last_err, sizeof s->last_err, "%s", text);
            if (code == REDQ_EAUTH || code == REDQ_ESELECT ||
                code == REDQ_ENOPERM)
                session_fail_connect(s);
        }
        return;
    }
    if (code == REDQ_EAUTH) {
        cli_session_fail(s, CLI_RC_AUTH, "authentication failed: %s", text);
        return;
    }
    if (level == REDQ_LOG_ERROR && s->ops->on_error &&
        s->ops->on_error(s, code, text))
        return;
    if (!s->o->quiet)
        fprintf(stderr, "redq: %s\n", text);
}

static void session_watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
    cli_session *s = arg;

    (void)fd;
    (void)what;
    if (!s->ops->ever_connected(s) && !s->closed)
        session_fail_connect(s);
}

static void session_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    cli_session *s = arg;

    (void)what;
    if (!s->signal) {
        s->signal = (int)sig;
        s->ops->finish(s);
    } else {
        s->ops->abort(s); /* a second signal: do not wait */
    }
}

/* The loop, signal events and the watchdog. 0, or -1 with a message. */
int cli_session_init(cli_session *s, const cli_options *o,
                     const cli_session_ops *ops)
{
    memset(s, 0, sizeof *s);
    s->o = o;
    s->ops = ops;
    s->base = event_base_new();
    if (!s->base)
        goto oom;
    s->sigint = evsignal_new(s->base, SIGINT, session_signal_cb, s);
    s->sigterm = evsignal_new(s->base, SIGTERM, session_signal_cb, s);
    s->watchdog = evtimer_new(s->base, session_watchdog_cb, s);
    if (!s->sigint || !s->sigterm || !s->watchdog)
        goto oom;
    return 0;
oom:
    fprintf(stderr, "redq: cannot set up the event loop\n");
    return -1;
}

/* Common options for any handle (the three option structs share their
 * connection block); the command sets its own on top. */
#define SESSION_OPTIONS(s, opts)                                               \
    do {                                                                       \
        double ct = (s)->o->connect_timeout_s * 1000;                          \
        int ct_ms = ct < INT_MAX ? (int)ct : INT_MAX;                          \
        (opts)->url = (s)->o->url;                                             \
        (opts)->client_name = "redq-cli";                                      \
        (opts)->log = session_log;                                             \
        (opts)->log_level = REDQ_LOG_WARN;                                     \
        (opts)->log_user = (s);                                                \
        /* One attempt must be able to time out within --connect-timeout. */  \
        if (ct_ms > 0 && ct_ms < (opts)->connect_timeout_ms)                   \
            (opts)->connect_timeout_ms = ct_ms;                                \
    } while (0)

void cli_session_producer_options(cli_session *s, redq_producer_options *opts)
{
    redq_producer_options_init(opts);
    SESSION_OPTIONS(s, opts);
}

void cli_session_consumer_options(cli_session *s, redq_consumer_options *opts)
{
    redq_consumer_options_init(opts);
    SESSION_OPTIONS(s, opts);
}

void cli_session_admin_options(cli_session *s, redq_admin_options *opts)
{
    redq_admin_options_init(opts);
    SESSION_OPTIONS(s, opts);
}

/* What a failed redq_*_new() means for the user. */
int cli_session_new_failed(cli_session *s, int rc)
{
    if (rc == REDQ_EINVAL && s->new_err[0]) {
        fprintf(stderr, "redq: invalid URL: %s\n", s->new_err);
        return CLI_RC_BADURL;
    }
    if (rc == REDQ_EINVAL) {
        fprintf(stderr, "redq: invalid queue name (empty or too long)\n");
        return CLI_RC_USAGE;
    }
    fprintf(stderr, "redq: %s\n", redq_strerror(rc));
    return CLI_RC_FAILED;
}

/* Arm signals and the watchdog; the handle exists by now. */
void cli_session_start(cli_session *s)
{
    evsignal_add(s->sigint, NULL);
    evsignal_add(s->sigterm, NULL);
    if (s->o->connect_timeout_s > 0) {
        struct timeval tv = cli_seconds_tv(s->o->connect_timeout_s);
        evtimer_add(s->watchdog, &tv);
    }
}

/* The handle is gone: nothing of ours may keep the loop alive. */
void cli_session_closed(cli_session *s)
{
    s->closed = 1;
    evsignal_del(s->sigint);
    evsignal_del(s->sigterm);
    evtimer_del(s->watchdog);
    event_base_loopexit(s->base, NULL);
}

void cli_session_free(cli_session *s)
{
    if (s->sigint)
        event_free(s->sigint);
    if (s->sigterm)
        event_free(s->sigterm);
    if (s->watchdog)
        event_free(s->watchdog);
    if (s->base)
        event_base_free(s->base);
}

/* The exit code once the loop is done, before command-specific outcomes. */
int cli_session_exit_code(const cli_session *s)
{
    if (s->fatal)
        return s->fatal;
    if (s->signal)
        return 128 + s->signal;
    return CLI_RC_OK;
}
