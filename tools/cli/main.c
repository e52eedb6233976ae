/*
 * redq: the command-line tool. This file: the command table with every
 * --help text, the option parser shared by the commands, and main(), which
 * picks the command and returns its exit status. The commands themselves
 * are in push.c, pop.c, dead.c, stats.c, queues.c and top.c (cli.h lists
 * every file).
 *
 *   redq push [options] QUEUE [MESSAGE...]   one message per argument, or
 *                                            one per line of stdin
 *   redq pop  [options] QUEUE...             print each message and a \n;
 *                                            --reliable: at-least-once
 *   redq dead list|requeue|purge|delete [options] QUEUE
 *                                            QUEUE's dead letters
 *   redq stats [options] QUEUE...            counts, consumers, orphans
 *   redq queues | peek | pause | resume | recover | top
 *                                            the registry, the next
 *                                            messages, pausing, recovery,
 *                                            a live table
 *
 * push and pop run the library the way an application would: one
 * event_base, one producer or consumer on it, signals as libevent events
 * (session.c). Nothing there blocks the loop except reads of a regular
 * file on stdin, which never wait, and writes to stdout.
 *
 * The other commands run the library's admin handle (redq_admin_*) the
 * same way (adm.c): the library owns the key layout, the frames and the
 * scripts, so the tool never spells a key or a format of its own; every
 * change is the library's, one script per batch, so each message moves
 * atomically, stats' orphan search (redq_admin_orphans) included.
 *
 * A new command is a row in `commands[]` (a name with a space, "dead
 * list", is a sub-command), its options in parse_args()'s switch, and a
 * cli_cmd_* function (cli.h).
 *
 * Output: pop writes payloads to stdout and nothing else; the reading
 * commands write their listing to stdout, the changing ones their
 * one-line result; every diagnostic, and push's "pushed N" summary, goes to stderr,
 * so stdout stays clean for scripts.
 *
 * Exit status (also in --help and the README; CLI_RC_* in cli.h):
 *   0  done          1  some messages failed, an error reply (WRONGTYPE),
 *                       or output failed
 *   2  usage         3  invalid URL
 *   4  cannot connect (or the connection could not be set up)
 *   5  authentication failed
 *   128+N  stopped by signal N (130 SIGINT, 143 SIGTERM), after finishing
 *          the messages in flight
 */
#include "cli.h"

#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_URL "redis://127.0.0.1:6379"

/* Defaults of the tool (the library's own defaults suit servers, not a
 * command that someone waits for). */
#define DEFAULT_CONNECT_TIMEOUT_S 5.0
#define DEFAULT_DELIVERY_TIMEOUT_MS 10000

/* ------------------------------------------------------------------------ */
/* Options and the command table                                             */
/* ------------------------------------------------------------------------ */

/* A row of the command table (typedef in cli.h). */
struct cli_command {
    const char *name;
    const char *synopsis;  /* after "redq NAME " */
    const char *summary;   /* one line for `redq --help` */
    const char *details;   /* the command's own --help, before the options */
    const char *options;   /* its options, as help text */
    const char *shortopts; /* getopt_long's; starts with ':' */
    const struct option *longopts;
    int min_args, max_args; /* operands; max_args -1: unlimited */
    int (*run)(const cli_options *o);
};

/* Long-only options get values above any char. */
enum {
    OPT_URL = 256,
    OPT_CONNECT_TIMEOUT,
    OPT_DELIVERY_TIMEOUT,
    OPT_REPLICAS,
    OPT_REPLICA_TIMEOUT,
    OPT_MAX_PENDING,
    OPT_RELIABLE,
    OPT_VISIBILITY,
    OPT_CONSUMER_TTL,
    OPT_JSON,
    OPT_IDS,
    OPT_ALL,
    OPT_ID,
    OPT_LISTEN,
    OPT_TOKEN,
    OPT_INTERVAL
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


static const struct option push_longopts[] = {
    COMMON_LONGOPTS,
    {"delivery-timeout", required_argument, NULL, OPT_DELIVERY_TIMEOUT},
    {"max-pending", required_argument, NULL, OPT_MAX_PENDING},
    {"replicas", required_argument, NULL, OPT_REPLICAS},
    {"replica-timeout-ms", required_argument, NULL, OPT_REPLICA_TIMEOUT},
    {"ids", no_argument, NULL, OPT_IDS},
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
    {"id", required_argument, NULL, OPT_ID},
    {NULL, 0, NULL, 0}};

static const struct option dead_delete_longopts[] = {
    COMMON_LONGOPTS,
    {"id", required_argument, NULL, OPT_ID},
    {NULL, 0, NULL, 0}};

static const struct option peek_longopts[] = {
    COMMON_LONGOPTS,
    {"count", required_argument, NULL, 'n'},
    {"json", no_argument, NULL, OPT_JSON},
    {NULL, 0, NULL, 0}};

static const struct option top_longopts[] = {
    COMMON_LONGOPTS,
    {"count", required_argument, NULL, 'n'},
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {"json", no_argument, NULL, OPT_JSON},
    {NULL, 0, NULL, 0}};

static const struct option plain_longopts[] = {COMMON_LONGOPTS,
                                               {NULL, 0, NULL, 0}};

static const struct option stats_longopts[] = {
    COMMON_LONGOPTS,
    {"json", no_argument, NULL, OPT_JSON},
    {NULL, 0, NULL, 0}};

static const struct option serve_longopts[] = {
    COMMON_LONGOPTS,
    {"listen", required_argument, NULL, OPT_LISTEN},
    {"token", required_argument, NULL, OPT_TOKEN},
    {"interval", required_argument, NULL, OPT_INTERVAL},
    {NULL, 0, NULL, 0}};

static const cli_command commands[] = {
    {"push", "[options] QUEUE [MESSAGE...]",
     "push messages (arguments, or lines of stdin) onto QUEUE",
     "Push each MESSAGE onto QUEUE (LPUSH, in batches), in order. Without\n"
     "MESSAGE arguments, push one message per line of stdin: the line ends at\n"
     "\\n, a \\r before it is dropped, an empty line is an empty message, and\n"
     "a last line without \\n counts. Any other byte, NUL included, is kept.\n"
     "Use -- before a MESSAGE that starts with '-'.\n"
     "When every message has been confirmed by Redis (or has failed), prints\n"
     "\"pushed N\" (the confirmed ones) on stderr. With --ids, each message's\n"
     "id (\"<producer id>-<n>\", n its place in the input from 1) goes to\n"
     "stdout, one per line, in input order, once Redis confirmed it.\n",
     "  --delivery-timeout MS   a message not confirmed by Redis this long\n"
     "                          after it was read fails (default 10000;\n"
     "                          0: wait forever)\n"
     "  --max-pending N         messages read but not yet confirmed, at most;\n"
     "                          reading pauses at this bound (default 100000)\n"
     "  --replicas N            a message counts as confirmed only once N\n"
     "                          replicas hold it (WAIT); fewer in time fails\n"
     "                          it (stored on the master, not replicated)\n"
     "                          (default 0: the master's answer)\n"
     "  --replica-timeout-ms MS how long to wait for those replicas\n"
     "                          (default 1000)\n"
     "  --ids                   print each confirmed message's id on stdout\n",
     ":qh", push_longopts, 1, -1, cli_cmd_push},
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
     ":qhn:t:", pop_longopts, 1, -1, cli_cmd_pop},
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
     ":qhn:", dead_list_longopts, 1, 1, cli_cmd_dead_list},
    {"dead requeue", "[options] QUEUE (--all | -n N | --id ID)",
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
     "those added meanwhile); --id ID the one with that id (see dead list\n"
     "--json), and exits 1 when there is none. Prints \"requeued N\" on\n"
     "stdout.\n",
     "  --all                   all of them\n"
     "  -n, --count N           the N oldest\n"
     "  --id ID                 the one with this id\n",
     ":qhn:", dead_requeue_longopts, 1, 1, cli_cmd_dead_requeue},
    {"dead purge", "[options] QUEUE",
     "delete the dead letters of QUEUE",
     "Delete QUEUE's dead-letter list and print \"purged N\" (how many it\n"
     "held) on stdout. Atomic: dead letters added later are not touched.\n",
     "", ":qh", plain_longopts, 1, 1, cli_cmd_dead_purge},
    {"dead delete", "[options] QUEUE --id ID",
     "delete one dead letter of QUEUE, by id",
     "Delete the dead letter of QUEUE whose id is ID (the \"id\" of dead list\n"
     "--json) and print \"deleted 1\"; when none has it, say so on stderr\n"
     "and exit 1. Atomic: the others are not touched.\n",
     "  --id ID                 the dead letter's id (required)\n",
     ":qh", dead_delete_longopts, 1, 1, cli_cmd_dead_delete},
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
     ":qh", stats_longopts, 1, -1, cli_cmd_stats},
    {"queues", "[options]",
     "list every queue producers and consumers have used, with its numbers",
     "Print every queue in the registry (the queues producers and consumers\n"
     "have used; a queue unused for a day whose keys are empty ages out),\n"
     "sorted by name, each as one snapshot:\n"
     "  READY DUE PROCESSING DELAYED DEAD CONSUMERS REGISTERED  as in stats\n"
     "  OLDEST      age of the oldest ready message when it can be known\n"
     "              (4.2s, 12m05s, 3h07m, 2d04h), else -\n"
     "  PAUSED      yes when consumers do not take from it (redq pause)\n"
     "  FORMAT      plain or frames (redq format)\n"
     "  P           active partitions (redq partitions); the numbers of a\n"
     "              partitioned queue are the sums over its partitions\n"
     "Queue names are escaped as dead list escapes text. With --json, one\n"
     "JSON object: {\"queues\":[{\"queue\":\"Q\",\"ready\":0,\"due\":0,\n"
     "\"processing\":0,\"delayed\":0,\"dead\":0,\"consumers\":0,\n"
     "\"registered\":0,\"oldest_age_ms\":N|null,\"paused\":false,\n"
     "\"last_seen_ms\":N|null,\"pushed\":0,\"taken\":0,\"acked\":0,\n"
     "\"retried\":0,\"dead_lettered\":0,\"format\":\"plain\",\"partitions\":1},\n"
     "...]}\n"
     "(last_seen_ms: when a producer\n"
     "or consumer last recorded it, ms since the epoch; pushed..dead_lettered:\n"
     "the queue's counters of messages moved, counted in Redis since the queue\n"
     "was first used: rates are their differences over time).\n",
     "  --json                  one JSON object instead of the table\n",
     ":qh", stats_longopts, 0, 0, cli_cmd_queues},
    {"peek", "[options] QUEUE",
     "show the next messages of QUEUE without taking them",
     "Print the next N messages QUEUE's consumers would take (retried and\n"
     "requeued ones first, then the oldest ready), without taking them, one\n"
     "per line:\n"
     "\n"
     "  INDEX<TAB>ATTEMPTS<TAB>TS<TAB>BODY\n"
     "\n"
     "INDEX 0 is the next to be taken. ATTEMPTS is the deliveries already\n"
     "made, TS when it was first enqueued (ISO 8601 UTC) or - when unknown.\n"
     "BODY is escaped and cut as dead list shows it. With --json, one JSON\n"
     "object per line: {\"index\",\"id\",\"attempts\",\"ts\",\"body\"} with\n"
     "\"body_b64\" instead of \"body\" when the payload is not UTF-8, fields\n"
     "it lacks omitted.\n",
     "  -n, --count N           the next N (default 10)\n"
     "  --json                  one JSON object per message\n",
     ":qhn:", peek_longopts, 1, 1, cli_cmd_peek},
    {"pause", "[options] QUEUE...",
     "stop consumers taking from the QUEUEs",
     "Pause each QUEUE: consumers of both modes stop taking from it within\n"
     "about their promote interval (1 s by default) and start again after\n"
     "redq resume. Producers are not affected: messages pushed meanwhile\n"
     "wait in the queue. Prints \"paused<TAB>QUEUE\" for each.\n",
     "", ":qh", plain_longopts, 1, -1, cli_cmd_pause},
    {"resume", "[options] QUEUE...",
     "let consumers take from the paused QUEUEs again",
     "Resume each QUEUE (see redq pause). Prints \"resumed<TAB>QUEUE\" for\n"
     "each.\n",
     "", ":qh", plain_longopts, 1, -1, cli_cmd_resume},
    {"recover", "[options] QUEUE",
     "return the messages of QUEUE's dead consumers now",
     "Move the messages held by QUEUE's dead at-least-once consumers (those\n"
     "registered whose heartbeat has expired) back to be taken first, now\n"
     "rather than at a live consumer's next heartbeat, and print\n"
     "\"recovered N\".\n",
     "", ":qh", plain_longopts, 1, 1, cli_cmd_recover},
    {"format", "[options] QUEUE [plain|frames]",
     "show or set QUEUE's format",
     "Without a format, print QUEUE's format: \"plain\" (its ready list holds\n"
     "payloads only, byte for byte: any client can LPUSH and RPOP them; the\n"
     "default) or \"frames\" (each message carries its producer's id and\n"
     "enqueue time in a frame \"RQ1 id=.. ts=..\\n<payload>\"; redq consumers\n"
     "unwrap it, and deliver a plain client's value whole). With one, set it\n"
     "and print the format it has now. frames -> plain is refused (exit 1)\n"
     "while the ready list holds messages: they are frames. Producers learn\n"
     "a queue's format when they first use it, consumers within about their\n"
     "promote interval.\n",
     "", ":qh", plain_longopts, 1, 2, cli_cmd_format},
    {"partitions", "[options] QUEUE [P]",
     "show or set the partitions of QUEUE",
     "Without P, list every partition of logical queue QUEUE ever made, one\n"
     "row each:\n"
     "  INDEX       0 .. n-1 (0 is QUEUE itself)\n"
     "  QUEUE       its physical queue, {TAG}QUEUE~INDEX for INDEX >= 1: an\n"
     "              ordinary list a plain client can LPUSH and BRPOP\n"
     "  SLOT NODE   its Redis Cluster slot and that slot's master (- on one\n"
     "              server)\n"
     "  READY PROCESSING DEAD  its numbers, as in stats\n"
     "  RETIRED     yes for INDEX >= P: producers no longer push to it,\n"
     "              consumers drain it\n"
     "With P (1 to 256), set the active count first: raising it makes\n"
     "partitions spread over the cluster's masters (or reuses retired\n"
     "ones), lowering it retires the highest; nothing moves, nothing is\n"
     "lost. Producers and consumers see it within a few seconds. With\n"
     "--json, one JSON object: {\"partitions\":[{\"index\":0,\"queue\":\"Q\",\n"
     "\"slot\":0,\"node\":\"h:p\"|null,\"ready\":0,\"processing\":0,\"dead\":0,\n"
     "\"retired\":false},...]}\n",
     "  --json                  one JSON object instead of the table\n",
     ":qh", stats_longopts, 1, 2, cli_cmd_partitions},
    {"top", "[options] [QUEUE...]",
     "a live table of the queues with their rates",
     "Every --interval, a snapshot of every registered queue (or of the\n"
     "QUEUEs), with rates from the previous one:\n"
     "  READY       ready and due messages\n"
     "  PROCESSING  taken by at-least-once consumers, not acked yet\n"
     "  DEAD        dead letters\n"
     "  IN/s        messages produced per second (the queue's pushed counter)\n"
     "  OUT/s       messages taken by consumers per second, either mode (its\n"
     "              taken counter; a retried message is taken again). Taken,\n"
     "              not acked: at-most-once consumers never ack. Both are\n"
     "              counted in Redis by every producer and consumer, so a\n"
     "              queue taking in as fast as it hands out shows both\n"
     "  READY/s PROC/s DEAD/s  how fast each of those grew (negative: shrank)\n"
     "  CONSUMERS OLDEST PAUSED  as in queues\n"
     "Rates are - on the first refresh. On a terminal the table is redrawn in\n"
     "place; otherwise each refresh is a block: a \"redq top\" line with the\n"
     "time, the table, an empty line. With --json, one JSON object per\n"
     "refresh and line: {\"ts\":MS,\"interval_ms\":MS,\"queues\":[...]}, each\n"
     "queue as in queues --json plus \"ready_rate\", \"processing_rate\",\n"
     "\"dead_rate\", \"in_rate\", \"out_rate\", \"acked_rate\" (per second,\n"
     "null on the first). Runs until SIGINT or SIGTERM (exit 130, 143), or -n refreshes\n"
     "(exit 0). A connection lost meanwhile is a warning; top goes on.\n",
     "  --interval MS           between refreshes (default 1000, at least 10)\n"
     "  -n, --count N           stop after N refreshes\n"
     "  --json                  one JSON object per refresh\n",
     ":qhn:", top_longopts, 0, -1, cli_cmd_top},
    {"serve", "[options]",
     "serve Prometheus metrics, a JSON API and a dashboard over HTTP",
     "Serve, over HTTP (one process, one Redis connection):\n"
     "  /metrics    every registered queue's depths, consumers, oldest age,\n"
     "              pause flag and counters of messages moved, in the\n"
     "              Prometheus text format\n"
     "  /           a dashboard: the queues with live depths, in/s and out/s\n"
     "              (produced and taken, from the counters), a chart of\n"
     "              those rates, dead letters, buttons to requeue, delete, purge,\n"
     "              pause and resume (all in the binary; works offline)\n"
     "  /api/...    the JSON the page reads and the POSTs it sends:\n"
     "              GET  /api/queues, /api/queues/Q,\n"
     "                   /api/queues/Q/dead?offset=&count=,\n"
     "                   /api/queues/Q/peek?count=, /api/queues/Q/partitions\n"
     "              POST /api/queues/Q/pause|resume|requeue|purge|recover,\n"
     "                   /api/queues/Q/dead/ID/requeue|delete\n"
     "              (Q and ID percent-encoded; requeue takes an optional\n"
     "              body {\"count\": N}, default all)\n"
     "Only POST changes anything; a POST needs \"Content-Type:\n"
     "application/json\" or \"X-Redq-Request: 1\", and one from another\n"
     "origin is refused (403). It listens on a loopback address unless a\n"
     "token is set; with a token, /metrics and /api need \"Authorization:\n"
     "Bearer TOKEN\" (the page asks for it). The Redis password is never\n"
     "shown. Runs until SIGINT/SIGTERM; \"listening on http://...\" on\n"
     "stderr says where (--listen 127.0.0.1:0 picks a free port).\n",
     "  --listen HOST:PORT      where to listen (default 127.0.0.1:9090;\n"
     "                          [::1]:PORT for IPv6). Not a loopback\n"
     "                          address: only with a token\n"
     "  --token T               require \"Authorization: Bearer T\" (default\n"
     "                          $REDQ_SERVE_TOKEN, which keeps it out of ps)\n"
     "  --interval MS           the page refreshes this often (default 2000,\n"
     "                          at least 200)\n",
     ":qh", serve_longopts, 0, 0, cli_cmd_serve},
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
static int in_group(const cli_command *c, const char *group, const char **sub)
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

static void usage_command(FILE *f, const cli_command *c)
{
    fprintf(f, "usage: redq %s %s\n\n%s\noptions:\n%s" COMMON_HELP "\n" EXIT_HELP,
            c->name, c->synopsis, c->details, c->options);
}

/* A usage error: what is wrong, then the usage, on stderr (cli.h). */
int cli_usage_error(const cli_command *c, const char *fmt, ...)
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
    return CLI_RC_USAGE;
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


/*
 * Parse a command's options and operands (argv[0] is the command name) into
 * *o. Returns 0 to go on, CLI_RC_OK after printing --help, or CLI_RC_USAGE
 * after explaining what is wrong.
 */
static int parse_args(const cli_command *c, int argc, char **argv,
                      cli_options *o, int *done)
{
    const char *env = getenv("REDQ_URL");
    uint64_t v;
    int ch;

    *done = 0;
    memset(o, 0, sizeof *o);
    o->cmd = c;
    o->url = env && *env ? env : DEFAULT_URL;
    o->connect_timeout_s = DEFAULT_CONNECT_TIMEOUT_S;
    o->message_timeout_ms = DEFAULT_DELIVERY_TIMEOUT_MS;
    o->serve_interval_ms = 2000;

    optind = 1;
    opterr = 0; /* our messages name the command */
    while ((ch = getopt_long(argc, argv, c->shortopts, c->longopts, NULL)) !=
           -1) {
        const char *arg = optarg;

        switch (ch) {
        case 'h':
            usage_command(stdout, c);
            *done = 1;
            return CLI_RC_OK;
        case 'q':
            o->quiet = 1;
            break;
        case OPT_URL:
            if (!*arg)
                return cli_usage_error(c, "--url needs a value");
            o->url = arg;
            break;
        case OPT_CONNECT_TIMEOUT:
            if (parse_seconds(arg, &o->connect_timeout_s) < 0)
                return cli_usage_error(c, "--connect-timeout: '%s' is not a "
                                          "number of seconds", arg);
            break;
        case OPT_REPLICAS:
            if (parse_u64(arg, 64, &v) < 0)
                return cli_usage_error(c, "--replicas: '%s' is not a number "
                                          "of replicas (0..64)", arg);
            o->replicas = (int)v;
            break;
        case OPT_REPLICA_TIMEOUT:
            if (parse_u64(arg, INT_MAX, &v) < 0 || v == 0)
                return cli_usage_error(c, "--replica-timeout-ms: '%s' is not "
                                          "a number of milliseconds from 1",
                                       arg);
            o->replica_timeout_ms = (int)v;
            break;
        case OPT_DELIVERY_TIMEOUT:
            if (parse_u64(arg, INT_MAX, &v) < 0)
                return cli_usage_error(c, "--delivery-timeout: '%s' is not a "
                                          "number of milliseconds", arg);
            o->message_timeout_ms = (int)v;
            break;
        case OPT_MAX_PENDING:
            if (parse_u64(arg, SIZE_MAX, &v) < 0 || v == 0)
                return cli_usage_error(c, "--max-pending: '%s' is not a count "
                                          "above 0", arg);
            o->max_pending = (size_t)v;
            break;
        case 'n':
            if (parse_u64(arg, UINT64_MAX, &o->count) < 0)
                return cli_usage_error(c, "-n/--count: '%s' is not a count",
                                       arg);
            o->has_count = 1;
            break;
        case 't':
            if (parse_seconds(arg, &o->timeout_s) < 0)
                return cli_usage_error(c, "-t/--timeout: '%s' is not a number "
                                          "of seconds", arg);
            break;
        case OPT_RELIABLE:
            o->reliable = 1;
            break;
        case OPT_VISIBILITY:
            if (parse_u64(arg, INT_MAX, &v) < 0 || v < 10)
                return cli_usage_error(c, "--visibility-ms: '%s' is not a "
                                          "number of milliseconds from 10",
                                       arg);
            o->visibility_ms = (int)v;
            break;
        case OPT_CONSUMER_TTL:
            if (parse_u64(arg, INT_MAX, &v) < 0 || v < 100)
                return cli_usage_error(c, "--consumer-ttl-ms: '%s' is not a "
                                          "number of milliseconds from 100",
                                       arg);
            o->consumer_ttl_ms = (int)v;
            break;
        case OPT_JSON:
            o->json = 1;
            break;
        case OPT_IDS:
            o->ids = 1;
            break;
        case OPT_ALL:
            o->all = 1;
            break;
        case OPT_ID:
            if (!*arg)
                return cli_usage_error(c, "--id needs a value");
            o->id = arg;
            break;
        case OPT_LISTEN:
            o->serve_listen = arg;
            break;
        case OPT_TOKEN:
            o->serve_token = arg;
            break;
        case OPT_INTERVAL:
            /* top: refreshes; serve: the page's refresh. */
            if (strcmp(c->name, "serve") == 0) {
                if (parse_u64(arg, 3600000, &v) < 0 || v < 200)
                    return cli_usage_error(c, "--interval: '%s' is not a "
                                              "number of milliseconds from "
                                              "200", arg);
                o->serve_interval_ms = (int)v;
                break;
            }
            if (parse_u64(arg, INT_MAX, &v) < 0 || v < 10)
                return cli_usage_error(c, "--interval: '%s' is not a number "
                                          "of milliseconds from 10",
                                       arg);
            o->interval_ms = (int)v;
            break;
        case ':':
            return cli_usage_error(c, "option '%s' needs a value",
                                   argv[optind - 1]);
        default:
            /* A short option (perhaps inside a cluster like -qx) is named
             * by optopt; a long one only by its argument. */
            if (optopt > 0 && optopt < 256 && argv[optind - 1][1] != '-')
                return cli_usage_error(c, "unknown option '-%c'", optopt);
            return cli_usage_error(c, "unknown option '%s'", argv[optind - 1]);
        }
    }
    o->args = argv + optind;
    o->nargs = argc - optind;
    if (o->nargs < c->min_args)
        return cli_usage_error(c, "missing QUEUE");
    if (c->max_args == 0 && o->nargs > 0)
        return cli_usage_error(c, "unexpected argument '%s'", o->args[0]);
    if (c->max_args >= 0 && o->nargs > c->max_args)
        return cli_usage_error(c, "too many arguments");
    if ((o->visibility_ms || o->consumer_ttl_ms) && !o->reliable)
        return cli_usage_error(c, "--%s needs --reliable",
                               o->visibility_ms ? "visibility-ms"
                                                : "consumer-ttl-ms");
    if (c->run == cli_cmd_dead_requeue &&
        o->all + o->has_count + (o->id != NULL) != 1)
        return cli_usage_error(c, o->all + o->has_count + (o->id != NULL)
                                      ? "--all, -n and --id exclude each other"
                                      : "say which: --all, -n N or --id ID");
    if (c->run == cli_cmd_dead_delete && !o->id)
        return cli_usage_error(c, "say which: --id ID");
    return 0;
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    const cli_command *c = NULL;
    cli_options o;
    size_t i;
    int rc, done, group = 0;

    /* hiredis writes with write(2); a server closing the connection must
     * not kill us (redq.h). pop's stdout going away is noticed through
     * EPIPE as well. */
    signal(SIGPIPE, SIG_IGN);

    if (argc < 2)
        return cli_usage_error(NULL, "missing COMMAND");
    if (!strcmp(argv[1], "-h") || !strcmp(argv[1], "--help") ||
        !strcmp(argv[1], "help")) {
        usage_main(stdout);
        return CLI_RC_OK;
    }
    if (!strcmp(argv[1], "--version")) {
        printf("redq %s\n", redq_version());
        return CLI_RC_OK;
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
            return CLI_RC_OK;
        }
        fprintf(stderr, "redq %s: %s%s%s\n\n", argv[1],
                argc > 2 ? "unknown command '" : "missing COMMAND",
                argc > 2 ? argv[2] : "", argc > 2 ? "'" : "");
        usage_group(stderr, argv[1]);
        return CLI_RC_USAGE;
    }
    if (!c) {
        if (argv[1][0] == '-')
            return cli_usage_error(NULL, "unknown option '%s'", argv[1]);
        return cli_usage_error(NULL, "unknown command '%s'", argv[1]);
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
