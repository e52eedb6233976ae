/*
 * Running the redq command-line tool (REDQ_TEST_CLI, set by meson) as a
 * child process in a redis-suite test, plus the server-side helpers the CLI
 * tests share.
 *
 * Each child has its stdin, stdout and stderr on pipes (stdin may instead
 * be a file, stdout may be broken on purpose) and is waited for with a
 * bound: a run that exceeds it is killed. Children die with the test
 * process (PR_SET_PDEATHSIG) and cli_reap_all() kills and frees whatever
 * is left, so call it from the suite's .fini before fx_teardown().
 */
#ifndef REDQ_TEST_CLI_CHILD_H
#define REDQ_TEST_CLI_CHILD_H

#include <criterion/criterion.h>

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "fixture.h"

typedef struct cli_child {
    pid_t pid;                 /* 0 once reaped */
    int in_fd, out_fd, err_fd; /* -1 once closed */
    const char *in;
    size_t in_len, in_off;
    char *out, *err;           /* NUL-terminated */
    size_t out_len, err_len, out_cap, err_cap;
    int code;                  /* exit status, or -signal */
    bool timed_out;            /* killed for exceeding its bound */
    uint64_t start_us, end_us;
} cli_child;

typedef struct cli_opts {
    const char *in;      /* stdin bytes (NULL: empty) */
    size_t in_len;
    const char *in_path; /* or a file to read stdin from */
    const char *url_env; /* REDQ_URL for the child (NULL: unset) */
    bool broken_stdout;  /* close the read end of stdout at once */
} cli_opts;

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

#define CLI_MAX_CHILDREN 32 /* per test; freed by cli_reap_all() */

#define assert_code(c, want)                                                   \
    cr_assert_eq((c)->code, (want), "exit %d, want %d; stderr: %s",            \
                 (c)->code, (want), (c)->err)

/* ---- child processes ----------------------------------------------------- */

/** Kill (SIGKILL) and reap every child still running, free them all. */
void cli_reap_all(void);
/** The tool's path; asserts that it is set and executable. */
const char *cli_path(void);
/** Start the tool with `args` (argv[1..]); `ro` may be NULL. */
cli_child *cli_spawn(const cli_opts *ro, const char *const *args);
/** One round for up to `ms`: write stdin, read stderr, and stdout only when
 *  `read_out`. */
void cli_pump(cli_child *c, int ms, bool read_out);
/** Milliseconds until `deadline_us` (fx_now_us() based), 0 once past. */
int cli_ms_left(uint64_t deadline_us);
/** Newlines in what stdout gave so far. */
size_t cli_count_lines(const cli_child *c);
/** Wait until stdout holds at least `lines` newlines. */
bool cli_wait_lines(cli_child *c, size_t lines, int ms);
/** Collect output until the child exits; kill it after `ms`. */
void cli_finish(cli_child *c, int ms);
/** Spawn, finish within `ms`, assert it did not time out. */
cli_child *cli_run_for(const cli_opts *ro, const char *const *args, int ms);
uint64_t cli_elapsed_ms(const cli_child *c);

/** Append n bytes to a growing NUL-terminated buffer. */
void cli_append(char **buf, size_t *len, size_t *cap, const char *data,
                size_t n);
void cli_close_fd(int *fd);

/* ---- server-side helpers ------------------------------------------------- */

void cli_nap_ms(int ms);
int cli_blocked_clients(void);
/** Wait (10 s bound) until `n` clients are blocked in the server. */
void cli_wait_blocked(int n);
/** LPUSH queue prefixFROM .. prefix(TO-1), each followed by "-" and `pad`
 *  x's when pad > 0, in chunks (so prefixFROM pops first). */
void cli_lpush_seq(const char *queue, const char *prefix, int from, int to,
                   int pad);
/** "prefixFROM\n...prefix(TO-1)\n" (malloc'd). */
char *cli_seq_text(const char *prefix, int from, int to);
/** Assert that the list `queue` holds exactly prefixFROM..prefix(TO-1) in
 *  arrival order (the first at the tail, where pops take from). */
void cli_assert_list_seq(const char *queue, const char *prefix, int from,
                         int to);

#endif
