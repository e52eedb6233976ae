/*
 * redq: the command-line tool.
 *
 *   redq push [options] QUEUE [MESSAGE...]   one message per argument, or
 *                                            one per line of stdin
 *   redq pop  [options] QUEUE...             print each message and a \n;
 *                                            --reliable: at-least-once
 *   redq dead list|requeue|purge [options] QUEUE
 *                                            QUEUE's dead letters
 *   redq stats [options] QUEUE...            ready / due / processing /
 *                                            delayed / dead counts,
 *                                            consumers, orphaned lists
 *
 * push and pop run the library the way an application would: one
 * event_base, one producer or consumer on it, signals as libevent events.
 * Nothing there blocks the loop except reads of a regular file on stdin,
 * which never wait, and writes to stdout.
 *
 * dead and stats are one-shot admin commands on keys the library derives
 * from the queue name (docs/DESIGN.md, "Key layout"). redq.h has no API for
 * them, so the tool links a static copy of the library's internals
 * (redq_private.h) and its dependencies: the URL is parsed by the
 * library's own parser, so the grammar and its errors are the same as for
 * push and pop; they talk to Redis through hiredis's blocking API ("admin
 * connection" below), with the same --connect-timeout and exit codes. Key
 * names come from the library's layout (redq__key) and dead letters are
 * the library's frames (redq__frame_parse); requeueing is the library's
 * own DEADREQUEUE script, so the tool never touches payload bytes. Every
 * change they make is one Lua script call, so each message moves
 * atomically.
 *
 * Layout: the command table and the shared option parser (getopt_long) come
 * first; a "session" holds what push and pop need around their handle (the
 * loop, signals, the connect watchdog, the log callback, the exit code);
 * then one section per command; then the admin connection and the admin
 * commands. A new command is a row in `commands[]` (a name with a space,
 * "dead list", is a sub-command), its options in the parser's switch, and a
 * cmd_* function.
 *
 * Output: pop writes payloads to stdout and nothing else; dead list and
 * stats write their listing to stdout, dead requeue/purge their one-line
 * result; every diagnostic, and push's "pushed N" summary, goes to stderr,
 * so stdout stays clean for scripts.
 *
 * Exit status (also in --help and the README):
 *   0  done          1  some messages failed, an error reply (WRONGTYPE),
 *                       or output failed
 *   2  usage         3  invalid URL
 *   4  cannot connect (or the connection could not be set up)
 *   5  authentication failed
 *   128+N  stopped by signal N (130 SIGINT, 143 SIGTERM), after finishing
 *          the messages in flight
 */
#include "redq.h"
#include "redq_private.h" /* redq__url_parse */
#include "cli_lines.h"

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
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

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
/* pop --reliable -n: the held tail is printed but not acked until the run
 * ends, so a kill makes it come back; keep it short. */
#define RELIABLE_N_WINDOW 256
/* pop --reliable: the tool acks as soon as a message is printed; only the
 * -n tail waits, for as long as the run lasts. */
#define RELIABLE_VISIBILITY_MS INT_MAX
/* Admin commands: a reply may go this long without a byte arriving (the
 * socket timeout hiredis sets); one connect attempt, with its handshake,
 * at most ADMIN_CONNECT_ATTEMPT_MS. `dead list` reads pages of
 * ADMIN_PAGE entries (requeue batches: ADMIN_REQUEUE_BATCH, below). */
#define ADMIN_COMMAND_TIMEOUT_MS 10000
#define ADMIN_CONNECT_ATTEMPT_MS 2000
#define ADMIN_PAGE 100
/* dead list: bodies are shown up to this many characters. */
#define DEAD_BODY_SHOW 160

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
    uint64_t count;             /* pop, dead list, dead requeue: -n */
    double timeout_s;           /* pop: idle time before exiting; 0: never */
    int reliable;               /* pop --reliable */
    int visibility_ms;          /* pop --visibility-ms; 0: the tool's default */
    int consumer_ttl_ms;        /* pop --consumer-ttl-ms; 0: the library's */
    int json;                   /* dead list, stats: --json */
    int all;                    /* dead requeue --all */
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
    OPT_MAX_PENDING,
    OPT_RELIABLE,
    OPT_VISIBILITY,
    OPT_CONSUMER_TTL,
    OPT_JSON,
    OPT_ALL
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
    "       (pop --reliable: what could not be written is retried)\n"          \
    "  2    usage error\n"                                                     \
    "  3    invalid URL\n"                                                     \
    "  4    could not connect to the server\n"                                 \
    "  5    authentication failed\n"                                           \
    "  130  interrupted (SIGINT; 143 for SIGTERM), after finishing the\n"       \
    "       messages in flight\n"

static int cmd_push(const cli *o);
static int cmd_pop(const cli *o);
static int cmd_dead_list(const cli *o);
static int cmd_dead_requeue(const cli *o);
static int cmd_dead_purge(const cli *o);
static int cmd_stats(const cli *o);

static const struct option push_longopts[] = {
    COMMON_LONGOPTS,
    {"delivery-timeout", required_argument, NULL, OPT_DELIVERY_TIMEOUT},
    {"max-pending", required_argument, NULL, OPT_MAX_PENDING},
    {NULL, 0, NULL, 0}};

static const struct option pop_longopts[] = {
    COMMON_LONGOPTS,
    {"count", required_argument, NULL, 'n'},
    {"timeout", required_argument, NULL, 't'},
    {"reliable", no_argument, NULL, OPT_RELIABLE},
    {"visibility-ms", required_argument, NULL, OPT_VISIBILITY},
    {"consumer-ttl-ms", required_argument, NULL, OPT_CONSUMER_TTL},
    {NULL, 0, NULL, 0}};

static const struct option dead_list_longopts[] = {
    COMMON_LONGOPTS,
    {"count", required_argument, NULL, 'n'},
    {"json", no_argument, NULL, OPT_JSON},
    {NULL, 0, NULL, 0}};

static const struct option dead_requeue_longopts[] = {
    COMMON_LONGOPTS,
    {"count", required_argument, NULL, 'n'},
    {"all", no_argument, NULL, OPT_ALL},
    {NULL, 0, NULL, 0}};

static const struct option plain_longopts[] = {COMMON_LONGOPTS,
                                               {NULL, 0, NULL, 0}};

static const struct option stats_longopts[] = {
    COMMON_LONGOPTS,
    {"json", no_argument, NULL, OPT_JSON},
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
     "With several queues, earlier ones take priority.\n"
     "Runs until -n messages were printed, until --timeout seconds pass with\n"
     "none, or until SIGINT/SIGTERM (then it finishes what it has taken; a\n"
     "second signal exits at once).\n"
     "With -n it never takes more than COUNT messages out of the queue.\n"
     "\n"
     "Without --reliable (at-most-once, the fastest), a message is removed\n"
     "from Redis when it is popped: one that cannot be written, or that a\n"
     "killed redq had not written yet, is lost.\n"
     "\n"
     "With --reliable (at-least-once), a popped message moves to this run's\n"
     "processing list ({QUEUE}/proc:<holder>) and is acked, i.e. removed, only\n"
     "after it has been written to stdout and flushed. A redq killed at any\n"
     "moment loses nothing: its heartbeat expires --consumer-ttl-ms later and\n"
     "then a live consumer of the queue (another redq pop --reliable, or any\n"
     "at-least-once redq consumer) returns what it held to the queue, to be\n"
     "popped next, counting one attempt each. What it had printed but not\n"
     "acked yet comes back too and is printed again: the last batch written\n"
     "(acks follow each flush of stdout at once), and with -n up to the last\n"
     "256 of the COUNT, which are acked when the run ends. A message that\n"
     "cannot be written is nacked (retried after a backoff, one attempt\n"
     "counted) and the run ends with status 1.\n",
     "  -n, --count COUNT       stop after COUNT messages (default: no limit)\n"
     "  -t, --timeout SEC       stop when no message came for SEC seconds\n"
     "                          (default 0: wait forever); exit status 0\n"
     "  --reliable              at-least-once delivery (see above)\n"
     "  --consumer-ttl-ms MS    with --reliable: how long this run's heartbeat\n"
     "                          lives; a killed run's messages are requeued\n"
     "                          that long after its last beat (default 60000,\n"
     "                          at least 100)\n"
     "  --visibility-ms MS      with --reliable: retry a message printed but\n"
     "                          not acked for this long (default 2147483647:\n"
     "                          never; at least 10). A shorter one can make\n"
     "                          the -n tail print twice\n",
     ":qhn:t:", pop_longopts, 1, -1, cmd_pop},
    {"dead list", "[options] QUEUE",
     "show the dead letters of QUEUE, newest first",
     "Print the dead letters of QUEUE (the list {QUEUE}/dead; see\n"
     "docs/DESIGN.md, \"Key layout\", for names with braces), newest first,\n"
     "one per line:\n"
     "\n"
     "  INDEX<TAB>ATTEMPTS<TAB>DEAD_TS<TAB>REASON<TAB>BODY\n"
     "\n"
     "INDEX is the position in the list (0: the newest, as LINDEX counts).\n"
     "ATTEMPTS is how many deliveries were made. DEAD_TS is when it was\n"
     "dead-lettered, in ISO 8601 UTC (2025-01-31T12:00:00.123Z). REASON is\n"
     "why. BODY is the payload; bodies longer than 160 characters end in\n"
     "\"...\". In REASON and BODY a backslash, tab, newline, carriage return\n"
     "and other control bytes are escaped (\\\\ \\t \\n \\r \\xHH), and so\n"
     "is every byte >= 0x80 of a body that is not UTF-8. A field the entry\n"
     "lacks is \"-\"; an entry that is not a redq dead letter (put there by\n"
     "hand) shows all of itself as BODY, with a note on stderr.\n"
     "With --json, one JSON object per line: {\"index\",\"id\",\"attempts\",\n"
     "\"ts\",\"dead_ts\",\"dead_reason\",\"queue\",\"body\"}, fields the entry\n"
     "lacks omitted, \"body_b64\" (base64) instead of \"body\" when the payload\n"
     "is not UTF-8; for an entry that is not a dead letter, \"error\" and the\n"
     "whole entry as the body.\n"
     "The list is read in pages of 100: entries added or removed meanwhile\n"
     "may shift what a page shows.\n",
     "  -n, --count N           the N newest only (default: all)\n"
     "  --json                  one JSON object per entry (see above)\n",
     ":qhn:", dead_list_longopts, 1, 1, cmd_dead_list},
    {"dead requeue", "[options] QUEUE (--all | -n N)",
     "move dead letters of QUEUE back to the queue, oldest first",
     "Move dead letters of QUEUE back, oldest first: each goes to the end of\n"
     "QUEUE's due list (retried and requeued messages, popped before the\n"
     "messages waiting in QUEUE itself), with its attempt count reset to 0\n"
     "and its dead-letter reason, time and queue removed; its id and the\n"
     "payload are kept byte for byte. The moves are the library's own script,\n"
     "up to 1000 messages per call, each call atomic: a run that is\n"
     "interrupted or fails has moved every message either completely or not\n"
     "at all, and never one twice. An entry that is not a redq dead letter\n"
     "(put there by hand) goes back whole, as the payload.\n"
     "--all moves the dead letters there were when the command started (not\n"
     "those added meanwhile). Prints \"requeued N\" on stdout.\n",
     "  --all                   all of them\n"
     "  -n, --count N           the N oldest\n",
     ":qhn:", dead_requeue_longopts, 1, 1, cmd_dead_requeue},
    {"dead purge", "[options] QUEUE",
     "delete the dead letters of QUEUE",
     "Delete QUEUE's dead-letter list and print \"purged N\" (how many it\n"
     "held) on stdout. Atomic: dead letters added later are not touched.\n",
     "", ":qh", plain_longopts, 1, 1, cmd_dead_purge},
    {"stats", "[options] QUEUE...",
     "show ready, due, processing, delayed and dead counts, and consumers",
     "Print, for each QUEUE, a snapshot (one Lua script per queue, so the\n"
     "counts of one queue are consistent with each other; then a SCAN for\n"
     "orphaned lists):\n"
     "  READY       messages waiting in QUEUE, as producers pushed them\n"
     "  DUE         retried, recovered and requeued messages, popped first\n"
     "  PROCESSING  taken by at-least-once consumers and not acked yet (the\n"
     "              processing lists of the consumers in {QUEUE}/consumers)\n"
     "  DELAYED     scheduled and retried messages not due yet\n"
     "  DEAD        dead letters\n"
     "  CONSUMERS   live at-least-once consumer connections (heartbeat\n"
     "              present)\n"
     "  REGISTERED  consumer connections in {QUEUE}/consumers; those not live\n"
     "              have died and a live consumer will requeue what they hold\n"
     "  ORPHANED    messages in processing lists whose holder is not\n"
     "              registered: no consumer will ever return them. Each such\n"
     "              list is named below the table (and a warning goes to\n"
     "              stderr), so its messages can be moved back by hand\n"
     "Finding orphaned lists SCANs the whole database (SCAN MATCH, 1000 keys\n"
     "a step). Fast (at-most-once) consumers leave no trace and are not\n"
     "counted. Output is a table with a header line; with --json, one JSON\n"
     "object: {\"queues\":[{\"queue\":\"Q\",\"ready\":0,\"due\":0,\n"
     "\"processing\":0,\"delayed\":0,\"dead\":0,\"consumers\":0,\n"
     "\"registered\":0,\"orphaned\":0,\"orphans\":[{\"key\":\"..\",\n"
     "\"messages\":0},...]},...]}\n",
     "  --json                  one JSON object instead of the table\n",
     ":qh", stats_longopts, 1, -1, cmd_stats},
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
        fprintf(f, "  %-13s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\noptions of every command:\n" COMMON_HELP "\n" EXIT_HELP);
}

/* Does command `c` belong to the group `group` ("dead" for "dead list")?
 * Then *sub is its name in the group. */
static int in_group(const command *c, const char *group, const char **sub)
{
    size_t n = strlen(group);

    if (strncmp(c->name, group, n) != 0 || c->name[n] != ' ')
        return 0;
    *sub = c->name + n + 1;
    return 1;
}

/* `redq dead --help`: the group's commands. */
static void usage_group(FILE *f, const char *group)
{
    const char *sub;
    size_t i;

    fprintf(f, "usage: redq %s COMMAND [options] QUEUE\n"
               "       redq %s COMMAND --help\n\ncommands:\n",
            group, group);
    for (i = 0; i < NCOMMANDS; i++)
        if (in_group(&commands[i], group, &sub))
            fprintf(f, "  %-8s %s\n", sub, commands[i].summary);
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
        case OPT_RELIABLE:
            o->reliable = 1;
            break;
        case OPT_VISIBILITY:
            if (parse_u64(arg, INT_MAX, &v) < 0 || v < 10)
                return usage_error(c, "--visibility-ms: '%s' is not a number "
                                      "of milliseconds from 10", arg);
            o->visibility_ms = (int)v;
            break;
        case OPT_CONSUMER_TTL:
            if (parse_u64(arg, INT_MAX, &v) < 0 || v < 100)
                return usage_error(c, "--consumer-ttl-ms: '%s' is not a "
                                      "number of milliseconds from 100", arg);
            o->consumer_ttl_ms = (int)v;
            break;
        case OPT_JSON:
            o->json = 1;
            break;
        case OPT_ALL:
            o->all = 1;
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
    if ((o->visibility_ms || o->consumer_ttl_ms) && !o->reliable)
        return usage_error(c, "--%s needs --reliable",
                           o->visibility_ms ? "visibility-ms"
                                            : "consumer-ttl-ms");
    if (c->run == cmd_dead_requeue && o->all == o->has_count)
        return usage_error(c, o->all ? "--all and -n exclude each other"
                                     : "say how many: --all or -n N");
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
    return code == REDQ_EAUTH || code == REDQ_ENOPERM ? RC_AUTH : RC_CONNECT;
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
            if (code == REDQ_EAUTH || code == REDQ_ESELECT ||
                code == REDQ_ENOPERM)
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
    session s; /* first: the ops get a session * */
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
    session_fail(&ps->s, RC_FAILED, "%s", why);
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

static void pop_abort(session *s)
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
    session_fail(&ps->s, RC_FAILED, "write to stdout: %s", strerror(errno));
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
        code = RC_FAILED;
        goto out;
    }

    session_options(&ps.s, &opts);
    opts.on_message = pop_on_message;
    opts.pool_size = 1; /* one connection: messages come in queue order */
    opts.max_unacked = ps.window;
    opts.pop_batch = ps.window < POP_BATCH ? ps.window : POP_BATCH;
    /* Explicit both ways: the library's default may change. */
    opts.delivery = ps.reliable ? REDQ_AT_LEAST_ONCE : REDQ_AT_MOST_ONCE;
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
    free(ps.pend);
    session_free(&ps.s);
    return code;
}

/* ------------------------------------------------------------------------ */
/* admin connection (dead, stats)                                           */
/* ------------------------------------------------------------------------ */

/*
 * hiredis's blocking API for the one-shot admin commands: connect (retried
 * with backoff until --connect-timeout), AUTH, SELECT, PING, then commands
 * one at a time, each reply read whole. The URL goes through the library's
 * own parser (lib/url.c), so push, pop and these accept exactly the same
 * forms and refuse them with the same words; its errors never quote a
 * password. A blocking client is right here: nothing else runs meanwhile,
 * and a host name resolved by a blocking getaddrinfo costs nobody a loop.
 */

typedef struct admin {
    redisContext *c;
    int timeout_ms;        /* for one read or write: the socket timeout */
    char where[300];       /* "127.0.0.1:6379", "[::1]:6379", a socket path */
    char err[512];         /* why the last call failed */
} admin;

static uint64_t mono_us(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

/* Milliseconds left until `deadline_us` (at least 1 while any is left). */
static int left_ms(uint64_t deadline_us)
{
    uint64_t now = mono_us(), ms;

    if (now >= deadline_us)
        return 0;
    ms = (deadline_us - now + 999) / 1000;
    return ms > INT_MAX ? INT_MAX : (int)ms;
}

static int admin_fail(admin *a, const char *fmt, ...) PRINTF_LIKE(2, 3);

static int admin_fail(admin *a, const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(a->err, sizeof a->err, fmt, ap);
    va_end(ap);
    return -1;
}

static struct timeval ms_tv(int ms)
{
    struct timeval tv;

    tv.tv_sec = ms / 1000;
    tv.tv_usec = (ms % 1000) * 1000;
    return tv;
}

/* How long one read or write may block: hiredis applies it to the socket
 * (SO_RCVTIMEO/SO_SNDTIMEO), so a silent server cannot hang the tool. */
static int admin_set_timeout(admin *a, int ms)
{
    a->timeout_ms = ms;
    if (redisSetTimeout(a->c, ms_tv(ms)) != REDIS_OK)
        return admin_fail(a, "%s: %s", a->where, a->c->errstr);
    return 0;
}

/* Send one command and read its reply (NULL: I/O failure, a->err says
 * which; the context is unusable after that). lens may be NULL for C
 * strings. */
static redisReply *admin_cmd(admin *a, int argc, const char *const *argv,
                             const size_t *lens)
{
    redisReply *r;

    errno = 0;
    /* hiredis takes const char ** but only reads the strings. */
    r = redisCommandArgv(a->c, argc, (const char **)argv, lens);
    if (r)
        return r;
    /* A socket timeout surfaces as a failed read with EAGAIN. */
    if (a->c->err == REDIS_ERR_IO && (errno == EAGAIN || errno == EWOULDBLOCK))
        admin_fail(a, "no reply from %s within %d ms", a->where,
                   a->timeout_ms);
    else if (a->c->err == REDIS_ERR_EOF)
        admin_fail(a, "%s closed the connection", a->where);
    else
        admin_fail(a, "%s: %s", a->where,
                   a->c->err ? a->c->errstr : "out of memory");
    return NULL;
}

static void admin_close(admin *a)
{
    if (a->c)
        redisFree(a->c);
    a->c = NULL;
}

/* One attempt at the socket, within `ms`. 0, or -1 with a->err. */
static int admin_open(admin *a, const redq__url *u, int ms)
{
    if (u->is_unix) {
        snprintf(a->where, sizeof a->where, "%s", u->path);
        a->c = redisConnectUnixWithTimeout(u->path, ms_tv(ms));
    } else {
        snprintf(a->where, sizeof a->where, strchr(u->host, ':') ? "[%s]:%d"
                                                                 : "%s:%d",
                 u->host, u->port);
        a->c = redisConnectWithTimeout(u->host, u->port, ms_tv(ms));
    }
    if (!a->c)
        return admin_fail(a, "out of memory");
    if (a->c->err) {
        /* "connect ": admin_connect words the final message from it. */
        admin_fail(a, "connect %s: %s", a->where, a->c->errstr);
        admin_close(a);
        return -1;
    }
    if (admin_set_timeout(a, ms) < 0) { /* the handshake too */
        admin_close(a);
        return -1;
    }
    return 0;
}

/* A command of the handshake: 0 and its reply, or -1 (I/O, a->err). */
static int admin_handshake_cmd(admin *a, int argc, const char *const *argv,
                               redisReply **out)
{
    *out = admin_cmd(a, argc, argv, NULL);
    return *out ? 0 : -1;
}

static int is_error(const redisReply *r)
{
    return r->type == REDIS_REPLY_ERROR;
}

/*
 * Connect, authenticate, select the database, PING. Returns 0, or an exit
 * code after printing why. Connection failures are retried with backoff
 * (50 ms doubling to 1 s) until --connect-timeout has passed, as push and
 * pop do; a refused password or database is final.
 */
static int admin_connect(admin *a, const cli *o)
{
    redq__url u;
    char err[300];
    uint64_t deadline = 0;
    long backoff_ms = 50;
    int code = RC_CONNECT, rc;
    redisReply *r = NULL;

    memset(a, 0, sizeof *a);
    rc = redq__url_parse(&u, o->url, err, sizeof err);
    if (rc == REDQ_ENOMEM) {
        fprintf(stderr, "redq: out of memory\n");
        return RC_FAILED;
    }
    if (rc != 0) {
        fprintf(stderr, "redq: invalid URL: %s\n", err);
        return RC_BADURL;
    }
    if (o->connect_timeout_s > 0)
        deadline = mono_us() + (uint64_t)(o->connect_timeout_s * 1e6);
    for (;;) {
        int ms = ADMIN_CONNECT_ATTEMPT_MS;

        if (deadline && left_ms(deadline) < ms)
            ms = left_ms(deadline) > 0 ? left_ms(deadline) : 1;
        if (admin_open(a, &u, ms) == 0) {
            char db[16];
            const char *auth[3] = {"AUTH", u.user ? u.user : u.password,
                                   u.password};
            const char *sel[2] = {"SELECT", db};
            const char *ping[1] = {"PING"};

            snprintf(db, sizeof db, "%d", u.db);
            if (u.password) {
                if (admin_handshake_cmd(a, u.user ? 3 : 2, auth, &r) < 0)
                    goto retry;
                if (is_error(r)) {
                    fprintf(stderr, "redq: authentication failed: %s\n",
                            r->str);
                    code = RC_AUTH;
                    goto final;
                }
                freeReplyObject(r);
                r = NULL;
            }
            if (u.db != 0) {
                if (admin_handshake_cmd(a, 2, sel, &r) < 0)
                    goto retry;
                if (is_error(r) && !strncmp(r->str, "NOAUTH", 6)) {
                    fprintf(stderr, "redq: authentication failed: %s\n",
                            r->str);
                    code = RC_AUTH;
                    goto final;
                }
                if (is_error(r)) {
                    fprintf(stderr, "redq: cannot select database %d: %s\n",
                            u.db, r->str);
                    goto final;
                }
                freeReplyObject(r);
                r = NULL;
            }
            if (admin_handshake_cmd(a, 1, ping, &r) < 0)
                goto retry;
            if (is_error(r) && (!strncmp(r->str, "NOAUTH", 6) ||
                                !strncmp(r->str, "WRONGPASS", 9))) {
                fprintf(stderr, "redq: authentication failed: %s\n", r->str);
                code = RC_AUTH;
                goto final;
            }
            if (!is_error(r)) { /* up */
                freeReplyObject(r);
                redq__url_free(&u);
                if (admin_set_timeout(a, ADMIN_COMMAND_TIMEOUT_MS) < 0) {
                    fprintf(stderr, "redq: cannot connect: %s\n", a->err);
                    admin_close(a);
                    return RC_CONNECT;
                }
                return 0;
            }
            /* LOADING, MASTERDOWN, BUSY...: may pass; try again. */
            snprintf(a->err, sizeof a->err, "%s: %s", a->where, r->str);
        }
    retry:
        freeReplyObject(r);
        r = NULL;
        admin_close(a);
        if (deadline && left_ms(deadline) == 0)
            break;
        {
            long wait = backoff_ms;
            struct timespec ts;

            if (deadline && left_ms(deadline) < wait)
                wait = left_ms(deadline);
            ts.tv_sec = wait / 1000;
            ts.tv_nsec = (wait % 1000) * 1000000L;
            while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
                ;
            backoff_ms = backoff_ms * 2 > 1000 ? 1000 : backoff_ms * 2;
        }
    }
    if (!strncmp(a->err, "connect ", 8))
        fprintf(stderr, "redq: cannot connect to %s\n", a->err + 8);
    else
        fprintf(stderr, "redq: cannot connect: %s\n", a->err);
    redq__url_free(&u);
    return RC_CONNECT;
final:
    freeReplyObject(r);
    admin_close(a);
    redq__url_free(&u);
    return code;
}

/* ---- text helpers --------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at p (at most n bytes), or 0. */
static size_t utf8_len(const unsigned char *p, size_t n)
{
    size_t len, i;
    unsigned lo = 0x80, hi = 0xbf;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf)
        len = 2;
    else if (p[0] >= 0xe0 && p[0] <= 0xef)
        len = 3;
    else if (p[0] >= 0xf0 && p[0] <= 0xf4)
        len = 4;
    else
        return 0;
    if (n < len)
        return 0;
    if (p[0] == 0xe0)
        lo = 0xa0;
    else if (p[0] == 0xed)
        hi = 0x9f; /* no surrogates */
    else if (p[0] == 0xf0)
        lo = 0x90;
    else if (p[0] == 0xf4)
        hi = 0x8f;
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (i = 2; i < len; i++)
        if (p[i] < 0x80 || p[i] > 0xbf)
            return 0;
    return len;
}

/*
 * [p, p+n) for a terminal and for cut/awk: backslash, tab, newline, CR and
 * every other control byte (C0, DEL, and C1 as U+0080..U+009F) escaped as
 * \\ \t \n \r \xHH. With `utf8`, well-formed UTF-8 characters are kept,
 * other bytes >= 0x80 escaped; without, every byte >= 0x80 is. At most
 * `max` characters (0: no limit), then "...". A new string, or NULL.
 */
static char *escape_text(const char *p, size_t n, size_t max, int utf8)
{
    const unsigned char *s = (const unsigned char *)p;
    size_t cap = (max && max < n ? max : n) * 4 + 8, o = 0, i = 0, chars = 0;
    char *out = malloc(cap);

    if (!out)
        return NULL;
    while (i < n) {
        size_t l = utf8 ? utf8_len(s + i, n - i) : (s[i] < 0x80);

        if (max && chars == max) {
            memcpy(out + o, "...", 3);
            o += 3;
            break;
        }
        if (s[i] == '\\' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
            out[o++] = '\\';
            out[o++] = s[i] == '\\' ? '\\'
                       : s[i] == '\t' ? 't'
                       : s[i] == '\n' ? 'n'
                                      : 'r';
            i++;
        } else if (l == 0 || s[i] < 0x20 || s[i] == 0x7f ||
                   (l == 2 && s[i] == 0xc2 && s[i + 1] < 0xa0)) {
            o += (size_t)sprintf(out + o, "\\x%02x", s[i]);
            i++;
        } else {
            memcpy(out + o, s + i, l);
            o += l;
            i += l;
        }
        chars++;
    }
    out[o] = '\0';
    return out;
}

/* [p, p+n) as a JSON string (quoted); bytes that are not UTF-8 become
 * U+FFFD, NUL and other control bytes \u00XX. */
static void put_json_bytes(FILE *f, const char *s, size_t n)
{
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;

    putc('"', f);
    while (i < n) {
        size_t l = utf8_len(p + i, n - i);

        if (p[i] == '"' || p[i] == '\\') {
            fprintf(f, "\\%c", p[i]);
        } else if (p[i] < 0x20) {
            fprintf(f, "\\u%04x", p[i]);
        } else if (l == 0) {
            fputs("\\ufffd", f);
            l = 1;
        } else {
            fwrite(p + i, 1, l, f);
        }
        i += l ? l : 1;
    }
    putc('"', f);
}

static void put_json_string(FILE *f, const char *s)
{
    put_json_bytes(f, s, strlen(s));
}

/* 1 when [p, p+n) is well-formed UTF-8 throughout. */
static int is_utf8(const char *p, size_t n)
{
    size_t i = 0;

    while (i < n) {
        size_t l = utf8_len((const unsigned char *)p + i, n - i);

        if (l == 0)
            return 0;
        i += l;
    }
    return 1;
}

/* "2025-01-31T12:00:00.123Z" for milliseconds since the epoch. */
static void iso_utc_ms(long long ms, char *buf, size_t cap)
{
    long long sec = ms / 1000, rem = ms % 1000;
    time_t t;
    struct tm tm;

    if (rem < 0) {
        rem += 1000;
        sec--;
    }
    t = (time_t)sec;
    if ((long long)t != sec || !gmtime_r(&t, &tm) ||
        strftime(buf, cap, "%Y-%m-%dT%H:%M:%S", &tm) == 0) {
        snprintf(buf, cap, "%lld", ms);
        return;
    }
    snprintf(buf + strlen(buf), cap - strlen(buf), ".%03dZ", (int)rem);
}

/* A percent-encoded frame field (reason, queue) decoded into a new string
 * (*out_len bytes, NUL-terminated; it may hold NULs), or NULL. */
static char *pct_decoded(const char *s, size_t len, size_t *out_len)
{
    char *d = malloc(len + 1);

    if (d)
        *out_len = redq__pct_decode(s, len, d);
    return d;
}

/* ---- the admin commands --------------------------------------------------- */

/*
 * Every key but the ready list comes from the library's key layout
 * (redq__key, lib/keys.c), and the dead-letter entries are the library's
 * frames (redq__frame_parse, lib/frame.c): the tool never spells a key or
 * a format of its own, so it cannot drift from what consumers write.
 * Moving dead letters is the library's own DEADREQUEUE script, so a
 * requeued message is exactly what a consumer's recovery would make of it:
 * the payload is never decoded, re-encoded or even read by the tool.
 */

/* Dead letters moved per DEADREQUEUE call: one script run each, so this
 * bounds how long the server is busy with one. */
#define ADMIN_REQUEUE_BATCH 1000
/* SCAN's COUNT hint for stats' look for orphaned processing lists. */
#define ADMIN_SCAN_COUNT 1000
/* stats: reread the consumers set this many times at most when it changes
 * between reading it and counting. */
#define STATS_TRIES 3

/* dead purge: KEYS[1]: the dead list. LLEN refuses a non-list before
 * anything is deleted, and the count is of what was deleted. */
static const char purge_lua[] =
    "local n = redis.call('LLEN', KEYS[1])\n"
    "redis.call('UNLINK', KEYS[1])\n"
    "return n\n";

/*
 * stats, one queue: KEYS: Q, due, delayed, dead, consumers, then hb:<h>,
 * proc:<h>, fproc:<h> for each holder h in ARGV (as SMEMBERS read them).
 * Holders that left the set meanwhile are skipped. Returns {ready, due,
 * processing, delayed, dead, live, registered, holders counted}: the
 * caller reads the set again when holders joined meanwhile (counted <
 * registered). One script, so one queue's numbers are one moment's.
 */
static const char stats_lua[] =
    "local reg = redis.call('SCARD', KEYS[5])\n"
    "local live, proc, seen = 0, 0, 0\n"
    "for i = 1, #ARGV do\n"
    "  if redis.call('SISMEMBER', KEYS[5], ARGV[i]) == 1 then\n"
    "    local k = 3 * i + 3\n"
    "    seen = seen + 1\n"
    "    if redis.call('EXISTS', KEYS[k]) == 1 then live = live + 1 end\n"
    "    proc = proc + redis.call('LLEN', KEYS[k + 1]) +\n"
    "      redis.call('LLEN', KEYS[k + 2])\n"
    "  end\n"
    "end\n"
    "return {redis.call('LLEN', KEYS[1]), redis.call('LLEN', KEYS[2]), proc,\n"
    "        redis.call('ZCARD', KEYS[3]), redis.call('LLEN', KEYS[4]),\n"
    "        live, reg, seen}\n";

/* Queue names for the admin commands: the library's rule (1 to
 * REDQ__MAX_QUEUE_NAME bytes). */
static int admin_check_queues(const cli *o)
{
    int i;

    for (i = 0; i < o->nargs; i++) {
        if (!o->args[i][0])
            return usage_error(o->cmd, "invalid queue name (empty)");
        if (strlen(o->args[i]) > REDQ__MAX_QUEUE_NAME)
            return usage_error(o->cmd,
                               "invalid queue name (longer than %d bytes)",
                               REDQ__MAX_QUEUE_NAME);
    }
    return 0;
}

/* The key `suffix` of `queue` in the library's layout ("{Q}/dead", ...),
 * or NULL (reported). */
static char *queue_key(const char *queue, const char *suffix)
{
    char *k = redq__key(queue, strlen(queue), suffix);

    if (!k)
        fprintf(stderr, "redq: out of memory\n");
    return k;
}

/* Report a failed admin command; RC_FAILED. `r` may be NULL (I/O error,
 * a->err) or an error reply. */
static int admin_report(admin *a, const redisReply *r, const char *what)
{
    if (!r)
        fprintf(stderr, "redq: %s: %s\n", what, a->err);
    else if (r->type == REDIS_REPLY_ERROR)
        fprintf(stderr, "redq: %s: %s\n", what, r->str);
    else
        fprintf(stderr, "redq: %s: unexpected reply\n", what);
    return RC_FAILED;
}

/* Stdout after the listing: -1 if it could not be written (reported). */
static int admin_output_ok(void)
{
    if (fflush(stdout) == 0 && !ferror(stdout))
        return 0;
    fprintf(stderr, "redq: write to stdout: %s\n", strerror(errno));
    return -1;
}

/* 0 when `key` is a list or absent; else RC_FAILED, reported as the
 * WRONGTYPE it is. Checked before a script that would write to it. */
static int admin_check_list(admin *a, const char *key)
{
    const char *argv[2] = {"TYPE", key};
    redisReply *r = admin_cmd(a, 2, argv, NULL);
    int code = 0;

    if (!r || r->type != REDIS_REPLY_STATUS) {
        code = admin_report(a, r, key);
    } else if (strcmp(r->str, "list") != 0 && strcmp(r->str, "none") != 0) {
        fprintf(stderr, "redq: WRONGTYPE %s holds a %s, not a list\n", key,
                r->str);
        code = RC_FAILED;
    }
    freeReplyObject(r);
    return code;
}

/* SCRIPT LOAD the library's script `which`; its SHA into sha. 0, or -1
 * (reported). */
static int admin_script_load(admin *a, int which, char sha[41])
{
    const char *argv[3] = {"SCRIPT", "LOAD", redq__script_source(which)};
    redisReply *r = admin_cmd(a, 3, argv, NULL);

    if (!r || r->type != REDIS_REPLY_STRING || r->len != 40) {
        admin_report(a, r, "SCRIPT LOAD");
        freeReplyObject(r);
        return -1;
    }
    memcpy(sha, r->str, 40);
    sha[40] = '\0';
    freeReplyObject(r);
    return 0;
}

/* ---- dead list ------------------------------------------------------------ */

/* One line of `dead list`: INDEX ATTEMPTS DEAD_TS REASON BODY. A value
 * that is not a frame (put there by hand) is shown whole as BODY, and
 * stderr says so. */
static void dead_print(uint64_t index, const redisReply *r, int quiet)
{
    redq__frame f;
    char err[128], ts[48], att[24];
    char *reason = NULL, *body, *dec = NULL;
    int framed = redq__frame_parse(r->str, r->len, &f, err, sizeof err) == 0;
    const char *p = framed ? f.body : r->str;
    size_t n = framed ? f.body_len : r->len, declen;

    snprintf(att, sizeof att, "-");
    snprintf(ts, sizeof ts, "-");
    if (framed) {
        snprintf(att, sizeof att, "%d", f.attempts);
        if (f.dead_ts_ms >= 0)
            iso_utc_ms(f.dead_ts_ms, ts, sizeof ts);
        if (f.reason && (dec = pct_decoded(f.reason, f.reason_len, &declen)))
            reason = escape_text(dec, declen, 0, 1);
    } else if (!quiet) {
        fprintf(stderr,
                "redq: dead letter %llu is not a redq frame (%s): shown "
                "whole as BODY\n",
                (unsigned long long)index, err);
    }
    /* A payload that is not UTF-8 is binary: every byte >= 0x80 escaped. */
    body = escape_text(p, n, DEAD_BODY_SHOW, is_utf8(p, n));
    printf("%llu\t%s\t%s\t%s\t%s\n", (unsigned long long)index, att, ts,
           reason && reason[0] ? reason : "-", body ? body : "-");
    free(dec);
    free(reason);
    free(body);
}

/* One line of `dead list --json`: {"index":N,"id":..,"attempts":..,"ts":..,
 * "dead_reason":..,"dead_ts":..,"queue":..,"body"|"body_b64":..}, fields
 * the frame lacks omitted; for a value that is not a frame, "error" and
 * the whole value as the body. -1 when out of memory. */
static int dead_print_json(uint64_t index, const redisReply *r)
{
    redq__frame f;
    char err[128];
    int framed = redq__frame_parse(r->str, r->len, &f, err, sizeof err) == 0;
    const char *p = framed ? f.body : r->str;
    size_t n = framed ? f.body_len : r->len;

    printf("{\"index\":%llu", (unsigned long long)index);
    if (!framed) {
        fputs(",\"error\":", stdout);
        put_json_string(stdout, err);
    } else {
        const char *const names[2] = {"dead_reason", "queue"};
        const char *vals[2] = {f.reason, f.queue};
        size_t lens[2] = {f.reason_len, f.queue_len};
        int i;

        if (f.id[0]) {
            fputs(",\"id\":", stdout);
            put_json_string(stdout, f.id);
        }
        printf(",\"attempts\":%d", f.attempts);
        if (f.ts_ms >= 0)
            printf(",\"ts\":%lld", f.ts_ms);
        if (f.dead_ts_ms >= 0)
            printf(",\"dead_ts\":%lld", f.dead_ts_ms);
        for (i = 0; i < 2; i++) {
            size_t dl;
            char *d;

            if (!vals[i])
                continue;
            if (!(d = pct_decoded(vals[i], lens[i], &dl)))
                return -1;
            printf(",\"%s\":", names[i]);
            put_json_bytes(stdout, d, dl);
            free(d);
        }
    }
    if (is_utf8(p, n)) {
        fputs(",\"body\":", stdout);
        put_json_bytes(stdout, p, n);
    } else {
        char *b = malloc(4 * ((n + 2) / 3) + 1);

        if (!b)
            return -1;
        redq__b64_encode(p, n, b);
        printf(",\"body_b64\":\"%s\"", b);
        free(b);
    }
    fputs("}\n", stdout);
    return 0;
}

static int cmd_dead_list(const cli *o)
{
    uint64_t limit = o->has_count ? o->count : UINT64_MAX, idx = 0;
    admin a;
    char *key;
    int code;

    if ((code = admin_check_queues(o)) != 0)
        return code;
    if (limit == 0)
        return RC_OK; /* like head -n 0 */
    if (!(key = queue_key(o->args[0], "dead")))
        return RC_FAILED;
    if ((code = admin_connect(&a, o)) != 0) {
        free(key);
        return code;
    }
    while (idx < limit) {
        uint64_t page = limit - idx < ADMIN_PAGE ? limit - idx : ADMIN_PAGE;
        char start[24], stop[24];
        const char *argv[4] = {"LRANGE", key, start, stop};
        redisReply *r;
        size_t i, n;

        snprintf(start, sizeof start, "%llu", (unsigned long long)idx);
        snprintf(stop, sizeof stop, "%llu",
                 (unsigned long long)(idx + page - 1));
        r = admin_cmd(&a, 4, argv, NULL);
        if (!r || r->type != REDIS_REPLY_ARRAY) {
            code = admin_report(&a, r, key);
            freeReplyObject(r);
            break;
        }
        for (i = 0; i < r->elements && code == RC_OK; i++) {
            const redisReply *e = r->element[i];
            if (e->type != REDIS_REPLY_STRING)
                continue;
            if (!o->json) {
                dead_print(idx + i, e, o->quiet);
            } else if (dead_print_json(idx + i, e) < 0) {
                fprintf(stderr, "redq: out of memory\n");
                code = RC_FAILED;
            }
        }
        n = r->elements;
        freeReplyObject(r);
        if (code != RC_OK || ferror(stdout) || n < page)
            break;
        idx += n;
    }
    if (admin_output_ok() < 0)
        code = RC_FAILED;
    admin_close(&a);
    free(key);
    return code;
}

/* ---- dead requeue, dead purge --------------------------------------------- */

/* One DEADREQUEUE call: at most `max` of the oldest dead letters to the
 * back of due. Returns how many moved, and in *left how many dead letters
 * remain; -1 (reported) on failure. NOSCRIPT (the server's script cache
 * was flushed since the load) loads it again, once. */
static long long requeue_batch(admin *a, char sha[41], const char *dead,
                               const char *due, uint64_t max,
                               long long *left)
{
    char count[24];
    int tries;

    snprintf(count, sizeof count, "%llu", (unsigned long long)max);
    for (tries = 0; tries < 2; tries++) {
        const char *argv[6] = {"EVALSHA", sha, "2", dead, due, count};
        redisReply *r = admin_cmd(a, 6, argv, NULL);
        long long moved;

        if (r && r->type == REDIS_REPLY_ERROR && tries == 0 &&
            !strncmp(r->str, "NOSCRIPT", 8)) {
            freeReplyObject(r);
            if (admin_script_load(a, REDQ__SCRIPT_DEADREQUEUE, sha) < 0)
                return -1;
            continue;
        }
        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_INTEGER ||
            r->element[1]->type != REDIS_REPLY_INTEGER) {
            admin_report(a, r, dead);
            freeReplyObject(r);
            return -1;
        }
        moved = r->element[0]->integer;
        *left = r->element[1]->integer;
        freeReplyObject(r);
        return moved;
    }
    return -1; /* not reached: the second try returns */
}

static int cmd_dead_requeue(const cli *o)
{
    uint64_t limit = o->count, moved = 0;
    char *dead = NULL, *due = NULL, sha[41];
    admin a;
    int code;

    if ((code = admin_check_queues(o)) != 0)
        return code;
    if (!(dead = queue_key(o->args[0], "dead")) ||
        !(due = queue_key(o->args[0], "due"))) {
        free(dead);
        return RC_FAILED;
    }
    if ((code = admin_connect(&a, o)) != 0) {
        free(dead);
        free(due);
        return code;
    }
    /* DEADREQUEUE pops before it pushes: a due key of another type would
     * fail the push after the pop. Refuse before anything moves. */
    code = admin_check_list(&a, due);
    if (code == RC_OK && o->all) {
        /* Those there are now: a stream of new dead letters (a requeued
         * poison message dying again) must not keep this going. */
        const char *argv[2] = {"LLEN", dead};
        redisReply *r = admin_cmd(&a, 2, argv, NULL);

        if (!r || r->type != REDIS_REPLY_INTEGER)
            code = admin_report(&a, r, dead);
        else
            limit = (uint64_t)r->integer;
        freeReplyObject(r);
    }
    if (code == RC_OK && limit > 0 &&
        admin_script_load(&a, REDQ__SCRIPT_DEADREQUEUE, sha) < 0)
        code = RC_FAILED;
    while (code == RC_OK && moved < limit) {
        uint64_t batch = limit - moved < ADMIN_REQUEUE_BATCH
                             ? limit - moved
                             : ADMIN_REQUEUE_BATCH;
        long long left = 0;
        long long n = requeue_batch(&a, sha, dead, due, batch, &left);

        if (n < 0) {
            code = RC_FAILED;
            break;
        }
        moved += (uint64_t)n;
        if ((uint64_t)n < batch || left == 0)
            break; /* the list ran out */
    }
    if (!o->quiet && (code == RC_OK || moved > 0))
        printf("requeued %llu\n", (unsigned long long)moved);
    if (admin_output_ok() < 0 && code == RC_OK)
        code = RC_FAILED;
    admin_close(&a);
    free(dead);
    free(due);
    return code;
}

static int cmd_dead_purge(const cli *o)
{
    const char *argv[4];
    char *dead;
    admin a;
    redisReply *r;
    int code;

    if ((code = admin_check_queues(o)) != 0)
        return code;
    if (!(dead = queue_key(o->args[0], "dead")))
        return RC_FAILED;
    if ((code = admin_connect(&a, o)) != 0) {
        free(dead);
        return code;
    }
    argv[0] = "EVAL";
    argv[1] = purge_lua;
    argv[2] = "1";
    argv[3] = dead;
    r = admin_cmd(&a, 4, argv, NULL);
    if (!r || r->type != REDIS_REPLY_INTEGER)
        code = admin_report(&a, r, dead);
    else if (!o->quiet)
        printf("purged %lld\n", r->integer);
    freeReplyObject(r);
    if (admin_output_ok() < 0 && code == RC_OK)
        code = RC_FAILED;
    admin_close(&a);
    free(dead);
    return code;
}

/* ---- stats ------------------------------------------------------------------ */

enum {
    ST_READY,
    ST_DUE,
    ST_PROC,
    ST_DELAYED,
    ST_DEAD,
    ST_LIVE,
    ST_REG,
    ST_ORPHANED,
    ST_N
};

static const char *const stat_names[ST_N] = {
    "ready", "due",        "processing", "delayed",
    "dead",  "consumers", "registered", "orphaned"};
static const char *const stat_heads[ST_N] = {
    "READY", "DUE",       "PROCESSING", "DELAYED",
    "DEAD",  "CONSUMERS", "REGISTERED", "ORPHANED"};

/* A processing list whose holder is not in the consumers set: no reaper
 * looks at it, so its messages are never delivered again. */
typedef struct orphan {
    char *key;
    long long messages;
} orphan;

typedef struct qstats {
    long long val[ST_N];
    orphan *orphans;
    size_t norphans, cap;
} qstats;

static void qstats_free(qstats *st)
{
    size_t i;

    for (i = 0; i < st->norphans; i++)
        free(st->orphans[i].key);
    free(st->orphans);
    memset(st, 0, sizeof *st);
}

/* A holder id as redq makes them: "<consumer id>.<connection>", hex
 * digits, one dot, decimal digits, at most 32 bytes (lib/reliable.c). So a
 * key that merely ends like a processing list (the dead list of a queue
 * named "{a}:proc" is "{a}:proc:dead") is not taken for one of "{a}"'s. */
static int valid_holder(const char *s, size_t len)
{
    size_t i = 0, hex, dig;

    if (len == 0 || len > 32)
        return 0;
    while (i < len && ((s[i] >= '0' && s[i] <= '9') ||
                       (s[i] >= 'a' && s[i] <= 'f')))
        i++;
    hex = i;
    if (hex == 0 || i == len || s[i++] != '.')
        return 0;
    dig = i;
    while (i < len && s[i] >= '0' && s[i] <= '9')
        i++;
    return i == len && i > dig;
}

/* The holder of a processing list of the queue whose keys start with
 * `prefix` ("{Q}/"): the key is prefix "proc:" or "fproc:" holder. NULL
 * when `key` is no such list. */
static const char *proc_holder(const char *key, size_t len,
                               const char *prefix, size_t plen,
                               size_t *hlen)
{
    const char *s = key + plen;
    size_t n = len - plen, k;

    if (len <= plen || memcmp(key, prefix, plen) != 0)
        return NULL;
    if (n > 5 && !memcmp(s, "proc:", 5))
        k = 5;
    else if (n > 6 && !memcmp(s, "fproc:", 6))
        k = 6;
    else
        return NULL;
    if (!valid_holder(s + k, n - k))
        return NULL;
    *hlen = n - k;
    return s + k;
}

/* `s` with Redis glob's special characters (* ? [ ] \) escaped, then
 * `tail` as it is (a pattern). A new string, or NULL. */
static char *glob_escape(const char *s, const char *tail)
{
    size_t n = strlen(s), i, o = 0;
    char *out = malloc(2 * n + strlen(tail) + 1);

    if (!out)
        return NULL;
    for (i = 0; i < n; i++) {
        if (strchr("*?[]\\", s[i]))
            out[o++] = '\\';
        out[o++] = s[i];
    }
    strcpy(out + o, tail);
    return out;
}

static int orphan_add(qstats *st, const char *key, size_t len)
{
    size_t i;

    for (i = 0; i < st->norphans; i++) /* SCAN may return a key twice */
        if (strlen(st->orphans[i].key) == len &&
            !memcmp(st->orphans[i].key, key, len))
            return 0;
    if (st->norphans == st->cap) {
        size_t cap = st->cap ? 2 * st->cap : 8;
        orphan *o = realloc(st->orphans, cap * sizeof *o);

        if (!o)
            return -1;
        st->orphans = o;
        st->cap = cap;
    }
    if (!(st->orphans[st->norphans].key = malloc(len + 1)))
        return -1;
    memcpy(st->orphans[st->norphans].key, key, len);
    st->orphans[st->norphans].key[len] = '\0';
    st->orphans[st->norphans].messages = 0;
    st->norphans++;
    return 0;
}

/*
 * Find the queue's processing lists whose holder is not registered:
 * SCAN MATCH "<prefix>*proc:*" (the prefix glob-escaped: a queue name may
 * hold * ? [), filtered to exactly proc:<holder> / fproc:<holder>; then,
 * for each, whether its holder is in the consumers set now (a holder
 * registers before it takes anything) and how many messages it holds.
 * Holders in the set are counted by the stats script instead. SCAN walks
 * the whole keyspace, in steps of ADMIN_SCAN_COUNT keys. 0, or RC_FAILED
 * (reported).
 */
static int stats_orphans(admin *a, const char *queue, const char *consumers,
                         qstats *st)
{
    char *prefix = queue_key(queue, ""), *pattern = NULL, cursor[32] = "0";
    char cnt[16];
    size_t plen, i, kept = 0;
    int code = RC_OK;

    if (!prefix)
        return RC_FAILED;
    plen = strlen(prefix);
    if (!(pattern = glob_escape(prefix, "*proc:*"))) {
        fprintf(stderr, "redq: out of memory\n");
        free(prefix);
        return RC_FAILED;
    }
    snprintf(cnt, sizeof cnt, "%d", ADMIN_SCAN_COUNT);
    do {
        const char *argv[6] = {"SCAN", cursor, "MATCH", pattern, "COUNT", cnt};
        redisReply *r = admin_cmd(a, 6, argv, NULL), *keys;

        if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 2 ||
            r->element[0]->type != REDIS_REPLY_STRING ||
            r->element[1]->type != REDIS_REPLY_ARRAY ||
            r->element[0]->len >= sizeof cursor) {
            code = admin_report(a, r, "SCAN");
            freeReplyObject(r);
            break;
        }
        memcpy(cursor, r->element[0]->str, r->element[0]->len + 1);
        keys = r->element[1];
        for (i = 0; i < keys->elements; i++) {
            const redisReply *k = keys->element[i];
            size_t hl;

            if (k->type == REDIS_REPLY_STRING &&
                proc_holder(k->str, k->len, prefix, plen, &hl) &&
                orphan_add(st, k->str, k->len) < 0) {
                fprintf(stderr, "redq: out of memory\n");
                code = RC_FAILED;
            }
        }
        freeReplyObject(r);
    } while (code == RC_OK && strcmp(cursor, "0") != 0);

    /* Keep the candidates whose holder is unregistered and that hold
     * messages (a key of another type is not redq's: skipped). */
    for (i = 0; i < st->norphans; i++) {
        orphan *o = &st->orphans[i];
        int keep = 0;

        if (code == RC_OK) {
            size_t hl;
            const char *h = proc_holder(o->key, strlen(o->key), prefix, plen,
                                        &hl);
            char holder[40];
            const char *ism[3] = {"SISMEMBER", consumers, holder};
            const char *llen[2] = {"LLEN", o->key};
            redisReply *m, *l = NULL;

            memcpy(holder, h, hl); /* valid_holder: at most 32 bytes */
            holder[hl] = '\0';
            m = admin_cmd(a, 3, ism, NULL);
            if (!m || m->type != REDIS_REPLY_INTEGER) {
                code = admin_report(a, m, consumers);
            } else if (m->integer == 0) {
                l = admin_cmd(a, 2, llen, NULL);
                if (!l) {
                    code = admin_report(a, NULL, o->key);
                } else if (l->type == REDIS_REPLY_INTEGER && l->integer > 0) {
                    o->messages = l->integer;
                    keep = 1;
                }
            }
            freeReplyObject(m);
            freeReplyObject(l);
        }
        if (keep)
            st->orphans[kept++] = *o;
        else
            free(o->key);
    }
    st->norphans = kept;
    for (i = 0; i < kept; i++)
        st->val[ST_ORPHANED] += st->orphans[i].messages;
    free(pattern);
    free(prefix);
    return code;
}

/* A members' entry redq can have keys for: a string without NUL. */
static int usable_member(const redisReply *e)
{
    return e->type == REDIS_REPLY_STRING && strlen(e->str) == e->len;
}

/* The key kind:holder ("proc:<h>") of `queue`, or NULL. */
static char *holder_key(const char *queue, const char *kind,
                        const char *holder)
{
    size_t kl = strlen(kind), hl = strlen(holder);
    char *sfx = malloc(kl + hl + 1), *k;

    if (!sfx)
        return NULL;
    memcpy(sfx, kind, kl);
    memcpy(sfx + kl, holder, hl + 1);
    k = redq__key(queue, strlen(queue), sfx);
    free(sfx);
    return k;
}

/* One run of the stats script for the holders `mem` (SMEMBERS of the
 * consumers set); base: Q, due, delayed, dead, consumers. *again is set
 * when holders joined the set after it was read. 0, or RC_FAILED
 * (reported). */
static int stats_run(admin *a, const char *queue, char *const base[5],
                     const redisReply *mem, qstats *st, int *again)
{
    static const char *const kinds[3] = {"hb:", "proc:", "fproc:"};
    size_t n = 0, i, j, nkeys;
    char **hkeys, nk[24];
    const char **argv;
    redisReply *r = NULL;
    int code = RC_OK, k;

    for (i = 0; i < mem->elements; i++)
        n += (size_t)usable_member(mem->element[i]);
    nkeys = 5 + 3 * n;
    hkeys = calloc(3 * n + 1, sizeof *hkeys);
    argv = calloc(3 + nkeys + n, sizeof *argv);
    if (!hkeys || !argv)
        goto oom;
    snprintf(nk, sizeof nk, "%zu", nkeys);
    argv[0] = "EVAL";
    argv[1] = stats_lua;
    argv[2] = nk;
    for (k = 0; k < 5; k++)
        argv[3 + k] = base[k];
    for (i = 0, j = 0; i < mem->elements; i++) {
        const redisReply *e = mem->element[i];

        if (!usable_member(e))
            continue;
        for (k = 0; k < 3; k++) {
            char *key = holder_key(queue, kinds[k], e->str);

            if (!key)
                goto oom;
            hkeys[3 * j + (size_t)k] = key;
            argv[8 + 3 * j + (size_t)k] = key;
        }
        argv[3 + nkeys + j] = e->str;
        j++;
    }
    r = admin_cmd(a, (int)(3 + nkeys + n), argv, NULL);
    if (!r || r->type != REDIS_REPLY_ARRAY || r->elements != 8) {
        code = admin_report(a, r, queue);
        goto out;
    }
    for (k = 0; k < 8; k++)
        if (r->element[k]->type != REDIS_REPLY_INTEGER) {
            code = admin_report(a, r, queue);
            goto out;
        }
    st->val[ST_READY] = r->element[0]->integer;
    st->val[ST_DUE] = r->element[1]->integer;
    st->val[ST_PROC] = r->element[2]->integer;
    st->val[ST_DELAYED] = r->element[3]->integer;
    st->val[ST_DEAD] = r->element[4]->integer;
    st->val[ST_LIVE] = r->element[5]->integer;
    st->val[ST_REG] = r->element[6]->integer;
    *again = r->element[7]->integer + (long long)(mem->elements - n) <
             st->val[ST_REG];
    goto out;
oom:
    fprintf(stderr, "redq: out of memory\n");
    code = RC_FAILED;
out:
    if (hkeys)
        for (i = 0; i < 3 * n; i++)
            free(hkeys[i]);
    free(hkeys);
    free(argv);
    freeReplyObject(r);
    return code;
}

/* The numbers of one queue: the stats script (every key from the
 * library's layout), then the orphan search. 0, or RC_FAILED (reported). */
static int stats_queue(admin *a, const char *queue, qstats *st)
{
    static const char *const sfx[4] = {"due", "delayed", "dead",
                                       "consumers"};
    char *base[5] = {(char *)queue, NULL, NULL, NULL, NULL};
    int code = RC_OK, again = 1, tries, k;

    for (k = 0; k < 4 && code == RC_OK; k++)
        if (!(base[k + 1] = queue_key(queue, sfx[k])))
            code = RC_FAILED;
    for (tries = 0; code == RC_OK && again && tries < STATS_TRIES; tries++) {
        const char *sm[2] = {"SMEMBERS", base[4]};
        redisReply *mem = admin_cmd(a, 2, sm, NULL);

        if (!mem || mem->type != REDIS_REPLY_ARRAY)
            code = admin_report(a, mem, base[4]);
        else
            code = stats_run(a, queue, base, mem, st, &again);
        freeReplyObject(mem);
    }
    if (code == RC_OK)
        code = stats_orphans(a, queue, base[4], st);
    for (k = 1; k < 5; k++)
        free(base[k]);
    return code;
}

static int cmd_stats(const cli *o)
{
    qstats *st = NULL;
    char **names = NULL;
    size_t qw = strlen("QUEUE"), w[ST_N], norph = 0, j;
    admin a;
    int code, i, k;

    if ((code = admin_check_queues(o)) != 0)
        return code;
    if ((code = admin_connect(&a, o)) != 0)
        return code;
    st = calloc((size_t)o->nargs, sizeof *st);
    names = calloc((size_t)o->nargs, sizeof *names);
    if (!st || !names) {
        fprintf(stderr, "redq: out of memory\n");
        code = RC_FAILED;
        goto out;
    }
    /* All first: a failure prints no half table. */
    for (i = 0; i < o->nargs && code == RC_OK; i++) {
        code = stats_queue(&a, o->args[i], &st[i]);
        norph += st[i].norphans;
    }
    if (code != RC_OK)
        goto out;

    if (o->json) {
        fputs("{\"queues\":[", stdout);
        for (i = 0; i < o->nargs; i++) {
            fputs(i ? ",{\"queue\":" : "{\"queue\":", stdout);
            put_json_string(stdout, o->args[i]);
            for (k = 0; k < ST_N; k++)
                printf(",\"%s\":%lld", stat_names[k], st[i].val[k]);
            fputs(",\"orphans\":[", stdout);
            for (j = 0; j < st[i].norphans; j++) {
                fputs(j ? ",{\"key\":" : "{\"key\":", stdout);
                put_json_string(stdout, st[i].orphans[j].key);
                printf(",\"messages\":%lld}", st[i].orphans[j].messages);
            }
            fputs("]}", stdout);
        }
        fputs("]}\n", stdout);
    } else {
        char num[24];

        for (k = 0; k < ST_N; k++)
            w[k] = strlen(stat_heads[k]);
        for (i = 0; i < o->nargs; i++) {
            names[i] = escape_text(o->args[i], strlen(o->args[i]), 0, 1);
            if (!names[i]) {
                fprintf(stderr, "redq: out of memory\n");
                code = RC_FAILED;
                goto out;
            }
            if (strlen(names[i]) > qw)
                qw = strlen(names[i]);
            for (k = 0; k < ST_N; k++) {
                size_t n = (size_t)snprintf(num, sizeof num, "%lld",
                                            st[i].val[k]);
                if (n > w[k])
                    w[k] = n;
            }
        }
        printf("%-*s", (int)qw, "QUEUE");
        for (k = 0; k < ST_N; k++)
            printf("  %*s", (int)w[k], stat_heads[k]);
        putchar('\n');
        for (i = 0; i < o->nargs; i++) {
            printf("%-*s", (int)qw, names[i]);
            for (k = 0; k < ST_N; k++)
                printf("  %*lld", (int)w[k], st[i].val[k]);
            putchar('\n');
        }
        /* Messages nobody will deliver again: name each list, so that
         * they can be moved back by hand. */
        if (norph > 0)
            printf("\norphaned processing lists (holder not registered: no "
                   "consumer will return their messages):\n");
        for (i = 0; i < o->nargs; i++)
            for (j = 0; j < st[i].norphans; j++) {
                char *key = escape_text(st[i].orphans[j].key,
                                        strlen(st[i].orphans[j].key), 0, 1);

                printf("  %s\t%lld\n", key ? key : "?",
                       st[i].orphans[j].messages);
                free(key);
            }
    }
    if (norph > 0 && !o->quiet)
        fprintf(stderr,
                "redq: warning: %zu orphaned processing list%s: their "
                "messages are in no queue\n",
                norph, norph == 1 ? "" : "s");
    if (admin_output_ok() < 0)
        code = RC_FAILED;
out:
    if (names)
        for (i = 0; i < o->nargs; i++)
            free(names[i]);
    free(names);
    if (st)
        for (i = 0; i < o->nargs; i++)
            qstats_free(&st[i]);
    free(st);
    admin_close(&a);
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
    int rc, done, group = 0;

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
    for (i = 0; i < NCOMMANDS && !c; i++) {
        const char *sub;

        if (!strcmp(argv[1], commands[i].name)) {
            c = &commands[i];
        } else if (in_group(&commands[i], argv[1], &sub)) {
            /* "redq dead list ...": the sub-command's name is its argv[0]. */
            group = 1;
            if (argc > 2 && !strcmp(argv[2], sub))
                c = &commands[i];
        }
    }
    if (!c && group) {
        if (argc > 2 && (!strcmp(argv[2], "-h") || !strcmp(argv[2], "--help"))) {
            usage_group(stdout, argv[1]);
            return RC_OK;
        }
        fprintf(stderr, "redq %s: %s%s%s\n\n", argv[1],
                argc > 2 ? "unknown command '" : "missing COMMAND",
                argc > 2 ? argv[2] : "", argc > 2 ? "'" : "");
        usage_group(stderr, argv[1]);
        return RC_USAGE;
    }
    if (!c) {
        if (argv[1][0] == '-')
            return usage_error(NULL, "unknown option '%s'", argv[1]);
        return usage_error(NULL, "unknown command '%s'", argv[1]);
    }
    if (group) {
        argc--;
        argv++;
    }
    rc = parse_args(c, argc - 1, argv + 1, &o, &done);
    if (rc != 0 || done)
        return rc;
    return c->run(&o);
}
