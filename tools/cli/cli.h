/*
 * The redq command-line tool's internals shared between its files. Nothing
 * here is installed or seen by the library: it is the tool's own header.
 *
 * Where things are (tools/cli/):
 *   main.c     the command table, every --help text, option parsing,
 *              dispatch to a command, the exit codes
 *   session.c  what push and pop need around their handle: the event loop,
 *              signals, the --connect-timeout watchdog, the library's log
 *              lines turned into the tool's messages and exit codes
 *   push.c     redq push (arguments or stdin lines -> a producer)
 *   pop.c      redq pop (a consumer -> stdout), fast and --reliable
 *   adm.c      the same around an admin handle (redq_admin_*), for every
 *              other command: one chain of calls, then close
 *   text.c     output escaping: terminal-safe text and JSON strings
 *   dead.c     redq dead list / requeue / purge / delete
 *   stats.c    redq stats
 *   queues.c   redq queues, peek, pause, resume, recover
 *   top.c      redq top
 *   serve.c    redq serve: /metrics, the JSON API and the dashboard
 *              (dashboard/, embedded through serve_assets.h)
 * and tools/cli_lines.c, the stdin line splitting of push (fuzzed alone).
 *
 * Everything shared is named cli_*; the rest of each file is static.
 * Every file includes redq.h only (through this header), and the tool
 * links the shared library: its exported symbols are all it can use.
 * A new command is a row in main.c's table (its help, options and
 * operands), its options in main.c's parser, and a cli_cmd_* function
 * declared below.
 */
#ifndef REDQ_CLI_H
#define REDQ_CLI_H

#include "redq.h"

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/time.h>

#if defined(__GNUC__)
#define CLI_PRINTF_LIKE(fmt, args) __attribute__((format(printf, fmt, args)))
#else
#define CLI_PRINTF_LIKE(fmt, args)
#endif

/* Exit status of every command (also in --help and the README). */
enum {
    CLI_RC_OK = 0,
    CLI_RC_FAILED = 1,  /* messages failed, server error reply, I/O error */
    CLI_RC_USAGE = 2,
    CLI_RC_BADURL = 3,
    CLI_RC_CONNECT = 4, /* unreachable, or the handshake failed */
    CLI_RC_AUTH = 5
    /* 128 + N: stopped by signal N (cli_session_exit_code) */
};

/* ------------------------------------------------------------------------ */
/* Options (main.c)                                                          */
/* ------------------------------------------------------------------------ */

/* A row of the command table; defined in main.c, opaque elsewhere. */
typedef struct cli_command cli_command;

/* A command's parsed options and operands: what cli_cmd_* gets. */
typedef struct cli_options {
    const cli_command *cmd;
    const char *url;
    double connect_timeout_s;   /* 0: retry forever */
    int message_timeout_ms;     /* push; 0: wait forever */
    int replicas;               /* push --replicas; 0: the master's answer */
    int replica_timeout_ms;     /* push --replica-timeout-ms; 0: the
                                   library's */
    size_t max_pending;         /* push; 0: the library's default */
    int has_count;
    uint64_t count;             /* pop, dead list, dead requeue: -n */
    double timeout_s;           /* pop: idle time before exiting; 0: never */
    int reliable;               /* pop --reliable */
    int visibility_ms;          /* pop --visibility-ms; 0: the tool's default */
    int consumer_ttl_ms;        /* pop --consumer-ttl-ms; 0: the library's */
    int json;                   /* every reading command: --json */
    int ids;                    /* push --ids: print each message's id */
    int all;                    /* dead requeue --all */
    const char *id;             /* dead requeue, dead delete: --id */
    int interval_ms;            /* top --interval; 0: the default */
    int quiet;
    const char *serve_listen;   /* serve --listen; NULL: the default */
    const char *serve_token;    /* serve --token; NULL: none */
    int serve_interval_ms;      /* serve --interval: the page's refresh */
    char **args;                /* operands */
    int nargs;
} cli_options;

/*
 * A usage error of command `c` (NULL: of redq itself): "redq CMD: <what>",
 * a blank line, then the command's (or redq's) usage, all on stderr.
 * Returns CLI_RC_USAGE, for `return cli_usage_error(...)`.
 */
int cli_usage_error(const cli_command *c, const char *fmt, ...)
    CLI_PRINTF_LIKE(2, 3);

/*
 * The commands. Each runs one command to its end with options parsed and
 * checked by main.c, prints its output and diagnostics, and returns the
 * process's exit status (CLI_RC_*, or 128 + N after signal N).
 */
int cli_cmd_push(const cli_options *o);        /* push.c */
int cli_cmd_pop(const cli_options *o);         /* pop.c */
int cli_cmd_dead_list(const cli_options *o);   /* dead.c */
int cli_cmd_dead_requeue(const cli_options *o); /* dead.c */
int cli_cmd_dead_purge(const cli_options *o);  /* dead.c */
int cli_cmd_dead_delete(const cli_options *o); /* dead.c */
int cli_cmd_stats(const cli_options *o);       /* stats.c */
int cli_cmd_queues(const cli_options *o);      /* queues.c */
int cli_cmd_peek(const cli_options *o);        /* queues.c */
int cli_cmd_pause(const cli_options *o);       /* queues.c */
int cli_cmd_resume(const cli_options *o);      /* queues.c */
int cli_cmd_recover(const cli_options *o);     /* queues.c */
int cli_cmd_format(const cli_options *o);      /* queues.c */
int cli_cmd_partitions(const cli_options *o);  /* queues.c */
int cli_cmd_top(const cli_options *o);         /* top.c */
int cli_cmd_serve(const cli_options *o);       /* serve.c */

/* ------------------------------------------------------------------------ */
/* The session of push and pop (session.c)                                   */
/* ------------------------------------------------------------------------ */

struct event;

typedef struct cli_session cli_session;

/* What the session asks of the command that owns the handle. */
typedef struct cli_session_ops {
    /* 1 once the handle has had a working connection. */
    int (*ever_connected)(cli_session *s);
    /* Take nothing more, finish what is in flight, then close. */
    void (*finish)(cli_session *s);
    /* Close now. */
    void (*abort)(cli_session *s);
    /* A connected handle logged an error: return 1 when the command made
     * it fatal (with cli_session_fail), 0 to have it printed as a warning.
     * May be NULL: every such error is a warning. */
    int (*on_error)(cli_session *s, int code, const char *text);
} cli_session_ops;

/*
 * The loop, signals, connect watchdog, log and exit code around one
 * producer or consumer. A command embeds it first in its own state, so
 * that the ops can cast the cli_session * back. Its fields are read by
 * the commands (base, o, fatal, last_code, in_new) and written only here,
 * except in_new, which the command sets around redq_*_new().
 */
struct cli_session {
    const cli_options *o;
    const cli_session_ops *ops;
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

/*
 * Set up *s (zeroed first): a new event_base, the SIGINT/SIGTERM events
 * and the watchdog timer, none armed yet. Returns 0, or -1 after printing
 * why; either way the caller ends with cli_session_free(s).
 */
int cli_session_init(cli_session *s, const cli_options *o,
                     const cli_session_ops *ops);

/*
 * redq_*_options_init() and what every handle shares: the URL, the client
 * name, the log callback (log_user: s) and a connect timeout that fits in
 * --connect-timeout. The command sets its own fields on top.
 */
void cli_session_producer_options(cli_session *s,
                                  redq_producer_options *opts);
void cli_session_consumer_options(cli_session *s,
                                  redq_consumer_options *opts);
void cli_session_admin_options(cli_session *s, redq_admin_options *opts);

/* What a failed redq_*_new() (rc < 0) means for the user: printed on
 * stderr; returns the exit code. */
int cli_session_new_failed(cli_session *s, int rc);

/* Arm the signal events and the watchdog, once the handle exists. */
void cli_session_start(cli_session *s);

/*
 * End the run with exit code `rc` and a one-line error on stderr. The
 * first failure stands; later ones are not printed (they are usually its
 * consequences). A handle that never connected has nothing in flight worth
 * waiting for and is aborted at once; otherwise it finishes gracefully.
 * Safe from any library callback.
 */
void cli_session_fail(cli_session *s, int rc, const char *fmt, ...)
    CLI_PRINTF_LIKE(3, 4);

/* The handle's close callback calls this: nothing of the session may keep
 * the loop alive after it, and the loop is told to exit. */
void cli_session_closed(cli_session *s);

/* Free what cli_session_init made (any part of it may be missing). */
void cli_session_free(cli_session *s);

/* The exit code once the loop is done, before command-specific outcomes:
 * the fatal error's, else 128 + the signal, else CLI_RC_OK. */
int cli_session_exit_code(const cli_session *s);

/* "cannot connect to 127.0.0.1:1: Connection refused" and the like, from
 * the last failure the library logged, into out (cap bytes). */
void cli_describe_connect_failure(const cli_session *s, char *out,
                                  size_t cap);

/* The exit code of a connection failure with library error `code`:
 * CLI_RC_AUTH for refused credentials, CLI_RC_CONNECT otherwise. */
int cli_exit_code_for(int code);

/* s seconds (>= 0) as a timeval, for libevent timers. */
struct timeval cli_seconds_tv(double s);

/* ------------------------------------------------------------------------ */
/* The admin commands' session (adm.c)                                       */
/* ------------------------------------------------------------------------ */

typedef struct cli_adm cli_adm;

/* Issues a command's first call on ad->a; called again, after a short
 * wait, when that call failed for want of a connection and none was ever
 * made (until --connect-timeout ends the run). */
typedef void (*cli_adm_start_fn)(cli_adm *ad);

/*
 * The session (session.c) around one redq_admin handle: the loop, signals,
 * the --connect-timeout watchdog, the exit code. A command runs as a chain
 * of admin calls whose callbacks check their status with cli_adm_check and
 * end the run with cli_adm_done.
 */
struct cli_adm {
    cli_session s; /* first: the session's ops get a cli_session * */
    redq_admin *a;
    cli_adm_start_fn start;
    cli_adm_start_fn stop; /* frees what the command put on the loop */
    void *cmd;             /* the command's own state */
    struct event *retry;   /* start again after a connection failure */
    int connected;         /* some call has succeeded */
    int done;              /* cli_adm_done was called */
    int rc;                /* the command's outcome (CLI_RC_*) */
};

/*
 * Run an admin command: check the operands as queue names, open the
 * handle on a new loop, call start(ad) and run the loop until the handle
 * is closed; then stop(ad) (may be NULL), once, with the loop still there
 * for the command to free its events. Returns the exit code: a connection or usage failure's, the
 * signal's (128 + N), else the command's ad->rc.
 */
int cli_adm_run(const cli_options *o, cli_adm_start_fn start,
                cli_adm_start_fn stop, void *cmd);

/*
 * In a callback: 0 when status is 0 (the connection is known to work);
 * else -1 after dealing with the failure: a missing connection before
 * any worked is retried (start again) until the watchdog gives up; a
 * refused password ends the run with CLI_RC_AUTH; REDQ_ECLOSED (the run
 * is ending) says nothing; any other failure is printed as
 * "redq: WHAT: ERRSTR" and ends the run with CLI_RC_FAILED (a
 * WRONGTYPE reply keeps that word in the message).
 */
int cli_adm_check(cli_adm *ad, int status, const char *errstr,
                  const char *what);

/* The command is over with outcome rc: stdout is flushed (a failed write
 * makes rc CLI_RC_FAILED, reported) and the handle is closed. */
void cli_adm_done(cli_adm *ad, int rc);

/* Check the operands as queue names by the library's rule (1 to 1024
 * bytes, redq.h): 0, or a usage error's exit code. */
int cli_check_queue_names(const cli_options *o);

/* "2025-01-31T12:00:00.123Z" for milliseconds since the epoch. */
void cli_iso_utc_ms(long long ms, char *buf, size_t cap);

/* A table: ncols cells per row, the first row the header; printed with
 * the first column left-aligned and the others right-aligned, two spaces
 * apart (queues.c). */
typedef struct cli_table {
    size_t ncols;
    size_t n, cap;
    char **cells;
} cli_table;

/* Append a copy of `cell` (row after row). 0, or -1 when out of memory. */
int cli_table_add(cli_table *t, const char *cell);
void cli_table_print(FILE *f, const cli_table *t);
void cli_table_free(cli_table *t);

/* An age for a table: "-" when negative, "4.2s", "12m05s", "3h07m",
 * "2d04h". */
void cli_format_age(long long ms, char *buf, size_t cap);

/* A queue snapshot as the JSON object of `redq queues --json`, without
 * its closing brace: top adds its rates. */
void cli_put_queue_json(FILE *f, const redq_queue_info *q);

/* ------------------------------------------------------------------------ */
/* Output escaping (text.c)                                                  */
/* ------------------------------------------------------------------------ */

/*
 * [p, p+n) for a terminal and for cut/awk: backslash, tab, newline, CR and
 * every other control byte (C0, DEL, and C1 as U+0080..U+009F) escaped as
 * \\ \t \n \r \xHH. With `utf8`, well-formed UTF-8 characters are kept,
 * other bytes >= 0x80 escaped; without, every byte >= 0x80 is. At most
 * `max` characters (0: no limit), then "...". A new string, or NULL.
 */
char *cli_escape_text(const char *p, size_t n, size_t max, int utf8);

/* [s, s+n) to f as a JSON string (quoted); bytes that are not UTF-8
 * become U+FFFD, NUL and other control bytes \u00XX. */
void cli_put_json_bytes(FILE *f, const char *s, size_t n);

/* ,"body":"..." for a UTF-8 payload, else ,"body_b64":"..." (dead.c).
 * 0, or -1 when out of memory. */
int cli_put_json_payload(FILE *f, const void *data, size_t len);

/* The C string s to f as a JSON string (cli_put_json_bytes). */
void cli_put_json_string(FILE *f, const char *s);

#endif /* REDQ_CLI_H */
