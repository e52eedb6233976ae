/*
 * redq: the command-line tool.
 *
 *   redq push [options] QUEUE [MESSAGE...]   one message per argument, or
 *                                            one per line of stdin
 *   redq pop  [options] QUEUE...             print each message and a \n
 *
 * Both run the library the way an application would: one event_base, one
 * producer or consumer on it, signals as libevent events. Nothing here
 * blocks the loop except reads of a regular file on stdin, which never wait.
 *
 * Layout: the command table and the shared option parser (getopt_long) come
 * first; a "session" holds what every command needs around its handle (the
 * loop, signals, the connect watchdog, the log callback, the exit code);
 * then one section per command. A new command (peek, stats, dead ...) is a
 * row in `commands[]`, its options in the parser's switch, and a cmd_*
 * function built on the session.
 *
 * Output: pop writes payloads to stdout and nothing else; every diagnostic,
 * and push's "pushed N" summary, goes to stderr, so stdout stays clean for
 * scripts.
 *
 * Exit status (also in --help and the README):
 *   0  done          1  some messages failed, or an error reply (WRONGTYPE)
 *   2  usage         3  invalid URL
 *   4  cannot connect (or the connection could not be set up)
 *   5  authentication failed
 *   128+N  stopped by signal N (130 SIGINT, 143 SIGTERM), after finishing
 *          the messages in flight
 */
#include "redq.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <event2/event.h>

#define DEFAULT_URL "redis://127.0.0.1:6379"

#if defined(__GNUC__)
#define PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define PRINTF_LIKE(fmt, args)
#endif

enum {
    RC_OK = 0,
    RC_FAILED = 1,  /* messages failed, server error reply, I/O error */
    RC_USAGE = 2,
    RC_BADURL = 3,
    RC_CONNECT = 4, /* unreachable, or the handshake failed */
    RC_AUTH = 5
};

/* Defaults of the tool (the library's own defaults suit servers, not a
 * command that someone waits for). */
#define DEFAULT_CONNECT_TIMEOUT_S 5.0
#define DEFAULT_DELIVERY_TIMEOUT_MS 10000
/* Messages produced per loop iteration at most, so the producer gets to
 * write batches while input is still coming. */
#define PRODUCE_CHUNK 4096
/* Bytes read from stdin per loop iteration. */
#define READ_CHUNK 65536
/* A line still without \n at this length is refused: it would fail anyway
 * (twice the library's default max_message_bytes), and buffering on would
 * let any input exhaust memory. */
#define MAX_LINE_BUFFER ((size_t)32 << 20)
/* pop's window when it must not take more than a count: the tail of the
 * count is held unacked (see pop_on_message), so this bounds that memory. */
#define POP_WINDOW 4096
#define POP_BATCH 256

/* ------------------------------------------------------------------------ */
/* Options and the command table                                             */
/* ------------------------------------------------------------------------ */

typedef struct cli {
    const struct command *cmd;
    const char *url;
    double connect_timeout_s;   /* 0: retry forever */
    int delivery_timeout_ms;    /* push; 0: wait forever */
    size_t max_pending;         /* push; 0: the library's default */
    int has_count;
    uint64_t count;             /* pop -n */
    double timeout_s;           /* pop: idle time before exiting; 0: never */
    int quiet;
    char **args;                /* operands */
    int nargs;
} cli;

typedef struct command {
    const char *name;
    const char *synopsis;  /* after "redq NAME " */
    const char *summary;   /* one line for `redq --help` */
    const char *details;   /* the command's own --help, before the options */
    const char *options;   /* its options, as help text */
    const char *shortopts; /* getopt_long's; starts with ':' */
    const struct option *longopts;
    int min_args, max_args; /* operands; max_args -1: unlimited */
    int (*run)(const cli *o);
} command;

/* Long-only options get values above any char. */
enum {
    OPT_URL = 256,
    OPT_CONNECT_TIMEOUT,
    OPT_DELIVERY_TIMEOUT,
    OPT_MAX_PENDING
};

#define COMMON_LONGOPTS                                                        \
    {"url", required_argument, NULL, OPT_URL},                                 \
        {"connect-timeout", required_argument, NULL, OPT_CONNECT_TIMEOUT},     \
        {"quiet", no_argument, NULL, 'q'}, {"help", no_argument, NULL, 'h'}

#define COMMON_HELP                                                            \
    "  --url URL               the server (default $REDQ_URL, else\n"           \
    "                          " DEFAULT_URL ")\n"                             \
    "                          redis://[[user]:password@]host[:port][/db] or\n" \
    "                          unix:///path/to/redis.sock[?db=N]\n"             \
    "  --connect-timeout SEC   give up when no connection could be made for\n"  \
    "                          this long (default 5; 0: keep trying)\n"         \
    "  -q, --quiet             no summary, no warnings; errors only\n"          \
    "  -h, --help              this text\n"

#define EXIT_HELP                                                              \
    "exit status:\n"                                                           \
    "  0    done\n"                                                            \
    "  1    some messages failed, or the server answered with an error\n"       \
    "       (e.g. WRONGTYPE: the key is not a list), or output failed\n"        \
    "  2    usage error\n"                                                     \
    "  3    invalid URL\n"                                                     \
    "  4    could not connect to the server\n"                                 \
    "  5    authentication failed\n"                                           \
    "  130  interrupted (SIGINT; 143 for SIGTERM), after finishing the\n"       \
    "       messages in flight\n"

static int cmd_push(const cli *o);
static int cmd_pop(const cli *o);

static const struct option push_longopts[] = {
    COMMON_LONGOPTS,
    {"delivery-timeout", required_argument, NULL, OPT_DELIVERY_TIMEOUT},
    {"max-pending", required_argument, NULL, OPT_MAX_PENDING},
    {NULL, 0, NULL, 0}};

static const struct option pop_longopts[] = {
    COMMON_LONGOPTS,
    {"count", required_argument, NULL, 'n'},
    {"timeout", required_argument, NULL, 't'},
    {NULL, 0, NULL, 0}};

static const command commands[] = {
    {"push", "[options] QUEUE [MESSAGE...]",
     "push messages (arguments, or lines of stdin) onto QUEUE",
     "Push each MESSAGE onto QUEUE (LPUSH, in batches), in order. Without\n"
     "MESSAGE arguments, push one message per line of stdin: the line ends at\n"
     "\\n, a \\r before it is dropped, an empty line is an empty message, and\n"
     "a last line without \\n counts. Any other byte, NUL included, is kept.\n"
     "Use -- before a MESSAGE that starts with '-'.\n"
     "When every message has been confirmed by Redis (or has failed), prints\n"
     "\"pushed N\" (the confirmed ones) on stderr.\n",
     "  --delivery-timeout MS   a message not confirmed by Redis this long\n"
     "                          after it was read fails (default 10000;\n"
     "                          0: wait forever)\n"
     "  --max-pending N         messages read but not yet confirmed, at most;\n"
     "                          reading pauses at this bound (default 100000)\n",
     ":qh", push_longopts, 1, -1, cmd_push},
    {"pop", "[options] QUEUE...",
     "pop messages from the QUEUEs and print them, one per line",
     "Pop messages (oldest first) and write each to stdout followed by \\n.\n"
     "With several queues, earlier ones take priority. A message is removed\n"
     "from Redis when it is popped: one that cannot be written is lost.\n"
     "Runs until -n messages were printed, until --timeout seconds pass with\n"
     "none, or until SIGINT/SIGTERM (then it finishes what it has taken; a\n"
     "second signal exits at once).\n"
     "With -n it never takes more than COUNT messages out of Redis.\n",
     "  -n, --count COUNT       stop after COUNT messages (default: no limit)\n"
     "  -t, --timeout SEC       stop when no message came for SEC seconds\n"
     "                          (default 0: wait forever); exit status 0\n",
     ":qhn:t:", pop_longopts, 1, -1, cmd_pop},
};

#define NCOMMANDS (sizeof commands / sizeof commands[0])

static void usage_main(FILE *f)
{
    size_t i;

    fprintf(f, "usage: redq COMMAND [options] [arguments]\n"
               "       redq COMMAND --help\n\n"
               "Message queues on Redis lists (redq %s).\n\ncommands:\n",
            redq_version());
    for (i = 0; i < NCOMMANDS; i++)
        fprintf(f, "  %-6s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\noptions of every command:\n" COMMON_HELP "\n" EXIT_HELP);
}

static void usage_command(FILE *f, const command *c)
{
    fprintf(f, "usage: redq %s %s\n\n%s\noptions:\n%s" COMMON_HELP "\n" EXIT_HELP,
            c->name, c->synopsis, c->details, c->options);
}

/* A usage error: what is wrong, then the usage, on stderr. Returns RC_USAGE. */
static int usage_error(const command *c, const char *fmt, ...) PRINTF_LIKE(2, 3);

static int usage_error(const command *c, const char *fmt, ...)
{
    va_list ap;

    fprintf(stderr, "redq%s%s: ", c ? " " : "", c ? c->name : "");
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputs("\n\n", stderr);
    if (c)
        usage_command(stderr, c);
    else
        usage_main(stderr);
    return RC_USAGE;
}

static int parse_u64(const char *s, uint64_t max, uint64_t *out)
{
    unsigned long long v;
    char *end;

    if (s[0] < '0' || s[0] > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno != 0 || *end != '\0' || v > max)
        return -1;
    *out = v;
    return 0;
}

/* Seconds: a non-negative decimal ("5", "0.25"), at most a year. */
static int parse_seconds(const char *s, double *out)
{
    double v;
    char *end;

    if ((s[0] < '0' || s[0] > '9') && s[0] != '.')
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno != 0 || *end != '\0' || !(v >= 0) || v > 365.0 * 86400)
        return -1;
    *out = v;
    return 0;
}

static struct timeval seconds_tv(double s)
{
    struct timeval tv;

    tv.tv_sec = (time_t)s; /* s >= 0: truncation is floor */
    tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
    return tv;
}

/*
 * Parse a command's options and operands (argv[0] is the command name) into
 * *o. Returns 0 to go on, RC_OK after printing --help, or RC_USAGE after
 * explaining what is wrong.
 */
static int parse_args(const command *c, int argc, char **argv, cli *o,
                      int *done)
{
    const char *env = getenv("REDQ_URL");
    uint64_t v;
    int ch;

    *done = 0;
    memset(o, 0, sizeof *o);
    o->cmd = c;
    o->url = env && *env ? env : DEFAULT_URL;
    o->connect_timeout_s = DEFAULT_CONNECT_TIMEOUT_S;
    o->delivery_timeout_ms = DEFAULT_DELIVERY_TIMEOUT_MS;

    optind = 1;
    opterr = 0; /* our messages name the command */
    while ((ch = getopt_long(argc, argv, c->shortopts, c->longopts, NULL)) !=
           -1) {
        const char *arg = optarg;

        switch (ch) {
        case 'h':
            usage_command(stdout, c);
            *done = 1;
            return RC_OK;
        case 'q':
            o->quiet = 1;
            break;
        case OPT_URL:
            if (!*arg)
                return usage_error(c, "--url needs a value");
            o->url = arg;
            break;
        case OPT_CONNECT_TIMEOUT:
            if (parse_seconds(arg, &o->connect_timeout_s) < 0)
                return usage_error(c, "--connect-timeout: '%s' is not a "
                                      "number of seconds", arg);
            break;
        case OPT_DELIVERY_TIMEOUT:
            if (parse_u64(arg, INT_MAX, &v) < 0)
                return usage_error(c, "--delivery-timeout: '%s' is not a "
                                      "number of milliseconds", arg);
            o->delivery_timeout_ms = (int)v;
            break;
        case OPT_MAX_PENDING:
            if (parse_u64(arg, SIZE_MAX, &v) < 0 || v == 0)
                return usage_error(c, "--max-pending: '%s' is not a count "
                                      "above 0", arg);
            o->max_pending = (size_t)v;
            break;
        case 'n':
            if (parse_u64(arg, UINT64_MAX, &o->count) < 0)
                return usage_error(c, "-n/--count: '%s' is not a count", arg);
            o->has_count = 1;
            break;
        case 't':
            if (parse_seconds(arg, &o->timeout_s) < 0)
                return usage_error(c, "-t/--timeout: '%s' is not a number "
                                      "of seconds", arg);
            break;
        case ':':
            return usage_error(c, "option '%s' needs a value",
                               argv[optind - 1]);
        default:
            /* A short option (perhaps inside a cluster like -qx) is named
             * by optopt; a long one only by its argument. */
            if (optopt > 0 && optopt < 256 && argv[optind - 1][1] != '-')
                return usage_error(c, "unknown option '-%c'", optopt);
            return usage_error(c, "unknown option '%s'", argv[optind - 1]);
        }
    }
    o->args = argv + optind;
    o->nargs = argc - optind;
    if (o->nargs < c->min_args)
        return usage_error(c, "missing QUEUE");
    if (c->max_args >= 0 && o->nargs > c->max_args)
        return usage_error(c, "too many arguments");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* The session: loop, signals, connect watchdog, log, exit code              */
/* ------------------------------------------------------------------------ */

typedef struct session session;

typedef struct session_ops {
    /* 1 once the handle has had a working connection. */
    int (*ever_connected)(session *s);
    /* Take nothing more, finish what is in flight, then close. */
    void (*finish)(session *s);
    /* Close now. */
    void (*abort)(session *s);
    /* A connected handle logged an error: return 1 when the command made
     * it fatal (with session_fail), 0 to have it printed as a warning. */
    int (*on_error)(session *s, int code, const char *text);
} session_ops;

struct session {
    const cli *o;
    const session_ops *ops;
    struct event_base *base;
    struct event *sigint, *sigterm;
    struct event *watchdog; /* --connect-timeout */

    int signal; /* the first SIGINT/SIGTERM received, or 0 */
    int fatal;  /* exit code of the error that ended the run, or 0 */
    int closed; /* the handle's close callback has run */

    int in_new;          /* inside redq_*_new(): log lines explain its error */
    char new_err[512];
    int last_code;       /* the last failure while never connected */
    char last_err[512];
};

/* The library's log lines read "producer: connect 127.0.0.1:1: Connection
 * refused; retrying in 50 ms". Drop the handle prefix and what the library
 * does next: the tool decides that. */
static void clean_log_text(const char *msg, char *out, size_t cap)
{
    static const char *const prefixes[] = {"producer: ", "consumer: "};
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

static int exit_code_for(int code)
{
    return code == REDQ_EAUTH ? RC_AUTH : RC_CONNECT;
}

/* "cannot connect to 127.0.0.1:1: Connection refused" and the like, from
 * the last failure the library logged. */
static void describe_connect_failure(const session *s, char *out, size_t cap)
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
static void session_fail(session *s, int rc, const char *fmt, ...)
    PRINTF_LIKE(3, 4);

static void session_fail(session *s, int rc, const char *fmt, ...)
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

static void session_fail_connect(session *s)
{
    char text[600];

    describe_connect_failure(s, text, sizeof text);
    session_fail(s, exit_code_for(s->last_code), "%s", text);
}

static void session_log(int level, int code, const char *msg, void *user)
{
    session *s = user;
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
            if (code == REDQ_EAUTH || code == REDQ_ESELECT)
                session_fail_connect(s);
        }
        return;
    }
    if (code == REDQ_EAUTH) {
        session_fail(s, RC_AUTH, "authentication failed: %s", text);
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
    session *s = arg;

    (void)fd;
    (void)what;
    if (!s->ops->ever_connected(s) && !s->closed)
        session_fail_connect(s);
}

static void session_signal_cb(evutil_socket_t sig, short what, void *arg)
{
    session *s = arg;

    (void)what;
    if (!s->signal) {
        s->signal = (int)sig;
        s->ops->finish(s);
    } else {
        s->ops->abort(s); /* a second signal: do not wait */
    }
}

/* The loop, signal events and the watchdog. 0, or -1 with a message. */
static int session_init(session *s, const cli *o, const session_ops *ops)
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

/* Common options for either handle; the command sets its own on top. */
static void session_options(session *s, redq_options *opts)
{
    double ct = s->o->connect_timeout_s * 1000;
    int ct_ms = ct < INT_MAX ? (int)ct : INT_MAX;

    redq_options_init(opts);
    opts->url = s->o->url;
    opts->client_name = "redq-cli";
    opts->log = session_log;
    opts->log_level = REDQ_LOG_WARN;
    opts->user = s;
    /* One attempt must be able to time out within --connect-timeout. */
    if (ct_ms > 0 && ct_ms < opts->connect_timeout_ms)
        opts->connect_timeout_ms = ct_ms;
}

/* What a failed redq_*_new() means for the user. */
static int session_new_failed(session *s, int rc)
{
    if (rc == REDQ_EINVAL && s->new_err[0]) {
        fprintf(stderr, "redq: invalid URL: %s\n", s->new_err);
        return RC_BADURL;
    }
    if (rc == REDQ_EINVAL) {
        fprintf(stderr, "redq: invalid queue name (empty or too long)\n");
        return RC_USAGE;
    }
    fprintf(stderr, "redq: %s\n", redq_strerror(rc));
    return RC_FAILED;
}

/* Arm signals and the watchdog; the handle exists by now. */
static void session_start(session *s)
{
    evsignal_add(s->sigint, NULL);
    evsignal_add(s->sigterm, NULL);
    if (s->o->connect_timeout_s > 0) {
        struct timeval tv = seconds_tv(s->o->connect_timeout_s);
        evtimer_add(s->watchdog, &tv);
    }
}

/* The handle is gone: nothing of ours may keep the loop alive. */
static void session_closed(session *s)
{
    s->closed = 1;
    evsignal_del(s->sigint);
    evsignal_del(s->sigterm);
    evtimer_del(s->watchdog);
    event_base_loopexit(s->base, NULL);
}

static void session_free(session *s)
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
static int session_exit_code(const session *s)
{
    if (s->fatal)
        return s->fatal;
    if (s->signal)
        return 128 + s->signal;
    return RC_OK;
}

/* ------------------------------------------------------------------------ */
/* push                                                                      */
/* ------------------------------------------------------------------------ */

typedef struct push_state {
    session s; /* first: the ops get a session * */
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

static int push_ever_connected(session *s)
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
    session_closed(&ps->s);
}

static void push_abort(session *s)
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
static void push_finish(session *s)
{
    push_state *ps = (push_state *)s;

    if (ps->finishing)
        return;
    ps->finishing = 1;
    if (ps->ev_in)
        event_del(ps->ev_in);
    evtimer_del(ps->pump);
    if (redq_producer_flush(ps->p, push_on_flushed, ps) < 0)
        push_abort(s);
}

static void push_on_delivery(redq_producer *p, const redq_report *r,
                             void *user)
{
    push_state *ps = user;

    (void)p;
    if (r->status == 0) {
        ps->ok++;
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
        session_fail(&ps->s, RC_USAGE, "invalid queue name '%s'", ps->queue);
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
        session_fail(&ps->s, RC_FAILED, "%s", redq_strerror(rc));
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
        char *start, *nl;
        size_t n;
        int rc;

        if (ps->scan == ps->len)
            return 0; /* nothing new (buf may still be NULL) */
        start = ps->buf + ps->off;
        nl = memchr(ps->buf + ps->scan, '\n', ps->len - ps->scan);
        if (!nl) {
            ps->scan = ps->len;
            return 0;
        }
        n = (size_t)(nl - start);
        if (n > 0 && start[n - 1] == '\r')
            n--;
        rc = push_one(ps, start, n);
        if (rc != 0)
            return rc;
        ps->line++;
        ps->off = (size_t)(nl - ps->buf) + 1;
        ps->scan = ps->off;
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
        if (ps->len > ps->off && !ps->input_error) {
            /* A last line without \n. */
            rc = push_one(ps, ps->buf + ps->off, ps->len - ps->off);
            if (rc != 0)
                return;
            ps->line++;
            ps->off = ps->scan = ps->len;
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

static const session_ops push_ops = {push_ever_connected, push_finish,
                                     push_abort, NULL};

static int cmd_push(const cli *o)
{
    push_state ps;
    redq_options opts;
    struct stat st;
    int rc, code;

    memset(&ps, 0, sizeof ps);
    if (session_init(&ps.s, o, &push_ops) < 0) {
        session_free(&ps.s);
        return RC_FAILED;
    }
    ps.queue = o->args[0];
    ps.msgs = o->args + 1;
    ps.nmsgs = o->nargs - 1;
    ps.from_stdin = ps.nmsgs == 0;
    ps.pump = evtimer_new(ps.s.base, push_pump_cb, &ps);
    if (!ps.pump) {
        code = RC_FAILED;
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
            code = RC_FAILED;
            goto out;
        }
    }

    session_options(&ps.s, &opts);
    opts.on_delivery = push_on_delivery;
    opts.on_ready = push_on_ready;
    opts.delivery_timeout_ms = o->delivery_timeout_ms;
    if (o->max_pending) {
        opts.max_pending_msgs = o->max_pending;
    }
    ps.s.in_new = 1;
    rc = redq_producer_new(&ps.p, ps.s.base, &opts);
    ps.s.in_new = 0;
    if (rc < 0) {
        code = session_new_failed(&ps.s, rc);
        goto out;
    }
    session_start(&ps.s);
    push_schedule(&ps);
    event_base_dispatch(ps.s.base);

    if (ps.p) {
        fprintf(stderr, "redq: event loop ended before the producer closed\n");
        code = RC_FAILED;
        goto out;
    }
    code = session_exit_code(&ps.s);
    if (ps.failed > 0 && !ps.s.fatal) {
        if (!push_ever_connected(&ps.s)) {
            char text[600];
            describe_connect_failure(&ps.s, text, sizeof text);
            fprintf(stderr, "redq: %s\n", text);
            code = exit_code_for(ps.s.last_code);
        } else {
            fprintf(stderr, "redq: %llu of %llu messages failed; the first: %s\n",
                    (unsigned long long)ps.failed,
                    (unsigned long long)(ps.ok + ps.failed), ps.first_err);
            if (code == RC_OK)
                code = RC_FAILED;
        }
    }
    if (ps.input_error && code == RC_OK)
        code = RC_FAILED;
    if (!o->quiet)
        fprintf(stderr, "pushed %llu\n", (unsigned long long)ps.ok);
out:
    if (ps.ev_in)
        event_free(ps.ev_in);
    if (ps.pump)
        event_free(ps.pump);
    free(ps.buf);
    session_free(&ps.s);
    return code;
}

/* ------------------------------------------------------------------------ */
/* pop                                                                       */
/* ------------------------------------------------------------------------ */

/*
 * Never more than COUNT out of Redis: the consumer takes messages only into
 * free places of its window (max_unacked, W here), so everything it can
 * still deliver is at most W minus what is unacked, and the total it can
 * ever deliver is at most acked + W. Acking a message only while
 * acked + 1 + W <= COUNT keeps that total within COUNT; the last W messages
 * are held unacked until the stop. W is min(COUNT, POP_WINDOW), so the
 * memory held stays bounded however large COUNT is.
 */
typedef struct pop_state {
    session s; /* first: the ops get a session * */
    redq_consumer *c;
    uint64_t want;     /* -n COUNT, or 0: no limit */
    uint64_t got;      /* printed */
    uint64_t acked;
    size_t window;     /* max_unacked */
    redq_message **held;
    size_t nheld;
    struct event *idle;  /* --timeout */
    struct event *flush; /* flushes stdout once per loop iteration */
    int flush_pending;
    int stopping;
    int connected_once;
} pop_state;

static int pop_ever_connected(session *s)
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
    session_closed(&ps->s);
}

static void pop_release_held(pop_state *ps)
{
    size_t i;

    for (i = 0; i < ps->nheld; i++)
        redq_ack(ps->held[i]);
    ps->acked += ps->nheld;
    ps->nheld = 0;
}

static void pop_abort(session *s)
{
    pop_state *ps = (pop_state *)s;

    ps->stopping = 1;
    evtimer_del(ps->idle);
    pop_ever_connected(s);
    /* The consumer's close invalidates unacked messages; ack them first so
     * that nothing refers to them afterwards. */
    pop_release_held(ps);
    if (ps->c)
        redq_consumer_close(ps->c, pop_on_closed, ps); /* ECLOSED: already */
}

/* A write error ends the run: popped messages would be lost unseen. */
static int pop_check_output(pop_state *ps)
{
    if (!ferror(stdout))
        return 0;
    session_fail(&ps->s, RC_FAILED, "write to stdout: %s", strerror(errno));
    return -1;
}

static void pop_on_stopped(redq_consumer *c, int status, void *user)
{
    pop_state *ps = user;

    (void)status; /* every message was acked before or at the stop */
    if (fflush(stdout) != 0)
        pop_check_output(ps);
    pop_ever_connected(&ps->s);
    redq_consumer_close(c, pop_on_closed, ps);
}

/* Take no more: release the blocked pop, print what it still brings. */
static void pop_finish(session *s)
{
    pop_state *ps = (pop_state *)s;

    if (ps->stopping)
        return;
    ps->stopping = 1;
    evtimer_del(ps->idle);
    if (redq_consumer_stop(ps->c, pop_on_stopped, ps) < 0) {
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
    if (fflush(stdout) != 0)
        pop_check_output(ps);
}

static void pop_arm_idle(pop_state *ps)
{
    struct timeval tv;

    if (ps->s.o->timeout_s <= 0 || ps->stopping)
        return;
    tv = seconds_tv(ps->s.o->timeout_s);
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
        redq_ack(m);
        ps->acked++;
        return;
    }
    if ((len && fwrite(redq_msg_data(m), 1, len, stdout) != len) ||
        putc('\n', stdout) == EOF) {
        redq_ack(m);
        ps->acked++;
        pop_check_output(ps);
        return;
    }
    ps->got++;
    if (!ps->flush_pending) {
        /* After the rest of this pop's batch has been written. */
        ps->flush_pending = 1;
        event_active(ps->flush, EV_TIMEOUT, 0);
    }
    if (ps->want == 0 || ps->stopping ||
        ps->acked + 1 + ps->window <= ps->want) {
        redq_ack(m);
        ps->acked++;
    } else {
        ps->held[ps->nheld++] = m;
    }
    if (ps->want && ps->got == ps->want)
        pop_finish(&ps->s);
    else
        pop_arm_idle(ps);
}

/* A queue holding a string, a pop the server refuses: the command cannot
 * do what was asked, so stop (printing what was taken) and say why. */
static int pop_on_error(session *s, int code, const char *text)
{
    if (code != REDQ_EWRONGTYPE && code != REDQ_ESERVER)
        return 0;
    session_fail(s, RC_FAILED, "%s", text);
    return 1;
}

static const session_ops pop_ops = {pop_ever_connected, pop_finish,
                                    pop_abort, pop_on_error};

static int cmd_pop(const cli *o)
{
    pop_state ps;
    redq_options opts;
    int rc, code;

    if (o->has_count && o->count == 0)
        return RC_OK; /* like head -n 0 */
    memset(&ps, 0, sizeof ps);
    if (session_init(&ps.s, o, &pop_ops) < 0) {
        session_free(&ps.s);
        return RC_FAILED;
    }
    ps.want = o->has_count ? o->count : 0;
    ps.window = POP_WINDOW;
    if (ps.want && ps.want < ps.window)
        ps.window = (size_t)ps.want;
    ps.idle = evtimer_new(ps.s.base, pop_idle_cb, &ps);
    ps.flush = event_new(ps.s.base, -1, 0, pop_flush_cb, &ps);
    ps.held = ps.want ? calloc(ps.window, sizeof *ps.held) : NULL;
    if (!ps.idle || !ps.flush || (ps.want && !ps.held)) {
        fprintf(stderr, "redq: out of memory\n");
        code = RC_FAILED;
        goto out;
    }

    session_options(&ps.s, &opts);
    opts.on_message = pop_on_message;
    opts.pool_size = 1; /* one connection: messages come in queue order */
    opts.max_unacked = ps.window;
    opts.pop_batch = ps.window < POP_BATCH ? ps.window : POP_BATCH;
    ps.s.in_new = 1;
    rc = redq_consumer_new(&ps.c, ps.s.base, &opts,
                           (const char *const *)o->args, (size_t)o->nargs);
    ps.s.in_new = 0;
    if (rc < 0) {
        code = session_new_failed(&ps.s, rc);
        goto out;
    }
    session_start(&ps.s);
    pop_arm_idle(&ps);
    event_base_dispatch(ps.s.base);

    if (ps.c) {
        fprintf(stderr, "redq: event loop ended before the consumer closed\n");
        code = RC_FAILED;
        goto out;
    }
    code = session_exit_code(&ps.s);
    if (fflush(stdout) != 0 && !ps.s.fatal) {
        fprintf(stderr, "redq: write to stdout: %s\n", strerror(errno));
        code = RC_FAILED;
    }
out:
    if (ps.idle)
        event_free(ps.idle);
    if (ps.flush)
        event_free(ps.flush);
    free(ps.held);
    session_free(&ps.s);
    return code;
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const command *c = NULL;
    cli o;
    size_t i;
    int rc, done;

    /* hiredis writes with write(2); a server closing the connection must
     * not kill us (redq.h). pop's stdout going away is noticed through
     * EPIPE as well. */
    signal(SIGPIPE, SIG_IGN);

    if (argc < 2)
        return usage_error(NULL, "missing COMMAND");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        usage_main(stdout);
        return RC_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("redq %s\n", redq_version());
        return RC_OK;
    }
    for (i = 0; i < NCOMMANDS; i++)
        if (!strcmp(argv[1], commands[i].name))
            c = &commands[i];
    if (!c) {
        if (argv[1][0] == '-')
            return usage_error(NULL, "unknown option '%s'", argv[1]);
        return usage_error(NULL, "unknown command '%s'", argv[1]);
    }
    rc = parse_args(c, argc - 1, argv + 1, &o, &done);
    if (rc != 0 || done)
        return rc;
    return c->run(&o);
}
