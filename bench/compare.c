/*
 * compare.c: --compare. The redis-benchmark line that matches a mode, run
 * on the same server between redq's runs, and its figure read from
 * redis-benchmark's --csv output.
 *
 * Why: the machine is small, shared and noisy, and the client shares its
 * cores with the server. The ratio to redis-benchmark measured minutes
 * apart on the same server says how close redq gets to what the server
 * can take; an absolute msg/s figure says little.
 */
#include "bench.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

/* ------------------------------------------------------------------------ */
/* redis-benchmark                                                           */
/* ------------------------------------------------------------------------ */

void bench_compare_free(bench_compare *rb)
{
    free(rb->value);
    free(rb->exact);
    free(rb->shown);
}

/* Append s to a growing string, single-quoting it when it needs it. */
static int str_append_arg(char **buf, size_t *len, size_t *cap, const char *s)
{
    size_t need = strlen(s) * 4 + 4, i;
    int quote = *s == '\0' || strpbrk(s, " \t\n'\"\\$`*?[]{}()<>|&;#~!") != NULL;
    char *w;
    if (*len + need + 1 > *cap) {
        size_t ncap = (*cap ? *cap * 2 : 256);
        char *nb;
        while (ncap < *len + need + 1)
            ncap *= 2;
        nb = realloc(*buf, ncap);
        if (nb == NULL)
            return -1;
        *buf = nb;
        *cap = ncap;
    }
    w = *buf + *len;
    if (*len > 0)
        *w++ = ' ';
    if (quote)
        *w++ = '\'';
    for (i = 0; s[i]; i++) {
        if (quote && s[i] == '\'') {
            memcpy(w, "'\\''", 4);
            w += 4;
        } else {
            *w++ = s[i];
        }
    }
    if (quote)
        *w++ = '\'';
    *w = '\0';
    *len = (size_t)(w - *buf);
    return 0;
}

/*
 * The redis-benchmark line that matches a mode:
 *   produce, consume: LPUSH <key> <100 values>, -P 16, one connection, and
 *     the figure is elements/s (requests/s x 100): the server's list-append
 *     limit with the same batching redq does, on as many connections.
 *   e2e: -t lpush (one value per LPUSH), -P 64 -c 50.
 */
int bench_compare_build(bench_compare *rb, const bench_config *cfg, const bench_target *t,
                    uint64_t messages)
{
    const char *bin = getenv("REDQ_BENCH_REDIS_BENCHMARK");
    size_t elen = 0, ecap = 0, slen = 0, scap = 0;
    int i, multi = cfg->mode == BENCH_PRODUCE || cfg->mode == BENCH_CONSUME;
    uint64_t n;

    memset(rb, 0, sizeof *rb);
    if (bin == NULL || !*bin)
        bin = "redis-benchmark";
    rb->argv[rb->argc++] = bin;
    if (t->addr.path[0]) {
        rb->argv[rb->argc++] = "-s";
        rb->argv[rb->argc++] = t->addr.path;
    } else {
        rb->argv[rb->argc++] = "-h";
        rb->argv[rb->argc++] = t->addr.host;
        rb->argv[rb->argc++] = "-p";
        rb->argv[rb->argc++] = t->addr.port_str;
    }
    if (t->addr.user[0]) {
        rb->argv[rb->argc++] = "--user";
        rb->argv[rb->argc++] = t->addr.user;
    }
    if (t->addr.password[0]) {
        rb->argv[rb->argc++] = "-a";
        rb->argv[rb->argc++] = t->addr.password;
    }
    if (t->addr.db) {
        snprintf(rb->db, sizeof rb->db, "%d", t->addr.db);
        rb->argv[rb->argc++] = "--dbnum";
        rb->argv[rb->argc++] = rb->db;
    }
    /* As many elements as the redq run moves (at least enough requests
     * for a stable figure). */
    n = multi ? messages / BENCH_RB_VALUES : messages;
    if (n < (multi ? 2000u : 200000u))
        n = multi ? 2000u : 200000u;
    snprintf(rb->n, sizeof rb->n, "%llu", (unsigned long long)n);
    rb->argv[rb->argc++] = "-n";
    rb->argv[rb->argc++] = rb->n;
    rb->argv[rb->argc++] = "-P";
    rb->argv[rb->argc++] = multi ? "16" : "64";
    rb->argv[rb->argc++] = "-c";
    rb->argv[rb->argc++] = multi ? "1" : "50";
    rb->argv[rb->argc++] = "-q";
    rb->argv[rb->argc++] = "--csv";
    if (multi) {
        snprintf(rb->key, sizeof rb->key, "%s:redis-benchmark", cfg->queue);
        rb->value = malloc(cfg->payload + 1);
        if (rb->value == NULL)
            return -1;
        memset(rb->value, 'x', cfg->payload);
        rb->value[cfg->payload] = '\0';
        rb->argv[rb->argc++] = "LPUSH";
        rb->argv[rb->argc++] = rb->key;
        for (i = 0; i < BENCH_RB_VALUES; i++)
            rb->argv[rb->argc++] = rb->value;
        rb->scale = BENCH_RB_VALUES;
    } else {
        /* -t lpush always pushes to "mylist". */
        snprintf(rb->key, sizeof rb->key, "mylist");
        snprintf(rb->d, sizeof rb->d, "%zu", cfg->payload);
        rb->argv[rb->argc++] = "-t";
        rb->argv[rb->argc++] = "lpush";
        rb->argv[rb->argc++] = "-d";
        rb->argv[rb->argc++] = rb->d;
        rb->scale = 1;
    }
    rb->argv[rb->argc] = NULL;

    /* `exact` is what ran (the password masked); `shown` abbreviates the
     * 100 identical values for the table. */
    for (i = 0; i < rb->argc; i++) {
        const char *a = rb->argv[i];
        char shown[96];
        if (t->addr.password[0] && a == t->addr.password)
            a = "***";
        if (str_append_arg(&rb->exact, &elen, &ecap, a) != 0)
            return -1;
        if (a == rb->value) {
            if (i > 0 && rb->argv[i - 1] == rb->value)
                continue;
            snprintf(shown, sizeof shown, "<%d values of %zu bytes>", BENCH_RB_VALUES,
                     cfg->payload);
            a = shown;
        }
        if (str_append_arg(&rb->shown, &slen, &scap, a) != 0)
            return -1;
    }
    return 0;
}

/* Parse redis-benchmark's --csv output: a header line, then one line per
 * test: "name","rps","avg_latency_ms",... The name of a raw command is the
 * whole command, so fields are read as quoted CSV, not split on commas. */
static int rb_parse(const char *out, double *rps)
{
    const char *line = out;
    while (line != NULL && *line) {
        const char *nl = strchr(line, '\n');
        if (*line == '"') {
            char field[2][64];
            const char *p = line;
            int nf = 0, is_header = 0;
            while (nf < 2 && *p == '"') {
                size_t o = 0;
                int first = nf == 0;
                p++;
                while (*p && (nl == NULL || p < nl)) {
                    if (*p == '"') {
                        if (p[1] == '"') {
                            p++;
                        } else {
                            break;
                        }
                    }
                    if (o + 1 < sizeof field[nf])
                        field[nf][o++] = *p;
                    p++;
                }
                field[nf][o] = '\0';
                if (*p != '"')
                    break;
                p++;
                if (first && strcmp(field[0], "test") == 0)
                    is_header = 1;
                nf++;
                if (*p == ',')
                    p++;
                else
                    break;
            }
            if (nf == 2 && !is_header) {
                char *end;
                double v = strtod(field[1], &end);
                if (end != field[1] && *end == '\0' && v > 0) {
                    *rps = v;
                    return 0;
                }
            }
        }
        line = nl ? nl + 1 : NULL;
    }
    return -1;
}

int bench_compare_run(const bench_compare *rb, redisContext *sc, double *per_sec,
                  char *err, size_t errlen)
{
    int pfd[2], st;
    pid_t pid;
    char *out = NULL;
    size_t len = 0, cap = 0;
    double rps = 0;

    if (bench_sync_del(sc, rb->key, err, errlen) != 0)
        return -1;
    if (pipe(pfd) != 0) {
        snprintf(err, errlen, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(stdout);
    fflush(stderr);
    pid = fork();
    if (pid < 0) {
        snprintf(err, errlen, "fork: %s", strerror(errno));
        close(pfd[0]);
        close(pfd[1]);
        return -1;
    }
    if (pid == 0) {
        int nul = open("/dev/null", O_RDONLY);
        if (nul >= 0)
            dup2(nul, 0);
        dup2(pfd[1], 1);
        close(pfd[0]);
        close(pfd[1]);
        execvp(rb->argv[0], (char *const *)rb->argv);
        fprintf(stderr, "redq-bench: cannot run %s: %s\n", rb->argv[0],
                strerror(errno));
        _exit(127);
    }
    close(pfd[1]);
    for (;;) {
        ssize_t k;
        if (cap - len < 4096) {
            char *n = realloc(out, cap ? cap * 2 : 8192);
            if (n == NULL)
                break;
            out = n;
            cap = cap ? cap * 2 : 8192;
        }
        k = read(pfd[0], out + len, cap - len - 1);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0)
            break;
        len += (size_t)k;
    }
    close(pfd[0]);
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    if (out != NULL)
        out[len] = '\0';
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(err, errlen, "redis-benchmark failed (%s %d)",
                 WIFEXITED(st) ? "exit status" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        free(out);
        return -1;
    }
    if (out == NULL || rb_parse(out, &rps) != 0) {
        snprintf(err, errlen, "could not read requests/s from redis-benchmark's output: %.200s",
                 out ? out : "(none)");
        free(out);
        return -1;
    }
    free(out);
    *per_sec = rps * rb->scale;
    return bench_sync_del(sc, rb->key, err, errlen);
}
