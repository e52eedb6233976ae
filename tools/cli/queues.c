/*
 * redq queues | peek | pause | resume | recover, over the admin API, and
 * the tables that queues and top print.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* peek: how many without -n. */
#define PEEK_DEFAULT 10
/* peek: bodies are shown up to this many characters (as dead list). */
#define PEEK_BODY_SHOW 160

/* ---- tables --------------------------------------------------------------- */

/* cli.h */
int cli_table_add(cli_table *t, const char *cell)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : 64;
        char **c = realloc(t->cells, cap * sizeof *c);

        if (!c)
            return -1;
        t->cells = c;
        t->cap = cap;
    }
    if (!(t->cells[t->n] = strdup(cell ? cell : "?")))
        return -1;
    t->n++;
    return 0;
}

/* cli.h */
void cli_table_print(FILE *f, const cli_table *t)
{
    size_t w[32] = {0}, i, k, nc = t->ncols < 32 ? t->ncols : 32;

    for (i = 0; i < t->n; i++)
        if (strlen(t->cells[i]) > w[i % t->ncols % 32])
            w[i % t->ncols % 32] = strlen(t->cells[i]);
    for (i = 0; i + nc <= t->n; i += t->ncols) {
        fprintf(f, "%-*s", (int)w[0], t->cells[i]);
        for (k = 1; k < nc; k++)
            fprintf(f, "  %*s", (int)w[k], t->cells[i + k]);
        fputc('\n', f);
    }
}

/* cli.h */
void cli_table_free(cli_table *t)
{
    size_t i;

    for (i = 0; i < t->n; i++)
        free(t->cells[i]);
    free(t->cells);
    t->cells = NULL;
    t->n = t->cap = 0;
}

/* cli.h */
void cli_format_age(long long ms, char *buf, size_t cap)
{
    long long s = ms / 1000;

    if (ms < 0)
        snprintf(buf, cap, "-");
    else if (ms < 10000)
        snprintf(buf, cap, "%lld.%llds", s, (ms % 1000) / 100);
    else if (s < 3600)
        snprintf(buf, cap, "%lldm%02llds", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, cap, "%lldh%02lldm", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, cap, "%lldd%02lldh", s / 86400, s % 86400 / 3600);
}

/* ---- queues ------------------------------------------------------------------ */

static const char *const queue_heads[] = {
    "QUEUE",     "READY",      "DUE",    "PROCESSING", "DELAYED",
    "DEAD",      "CONSUMERS",  "REGISTERED", "OLDEST", "PAUSED", "FORMAT",
    "P"};
#define QUEUE_COLS (sizeof queue_heads / sizeof queue_heads[0])

static int queues_table(const redq_queue_info *q, size_t n)
{
    cli_table t = {QUEUE_COLS, 0, 0, NULL};
    size_t i, k;
    int rc = 0;

    for (k = 0; k < QUEUE_COLS; k++)
        rc |= cli_table_add(&t, queue_heads[k]);
    for (i = 0; i < n && rc == 0; i++) {
        const unsigned long long v[7] = {q[i].ready,    q[i].due,
                                         q[i].processing, q[i].delayed,
                                         q[i].dead,     q[i].consumers,
                                         q[i].registered};
        char buf[32], *name = cli_escape_text(q[i].name, strlen(q[i].name),
                                              0, 1);

        rc |= cli_table_add(&t, name);
        free(name);
        for (k = 0; k < 7; k++) {
            snprintf(buf, sizeof buf, "%llu", v[k]);
            rc |= cli_table_add(&t, buf);
        }
        cli_format_age(q[i].oldest_age_ms, buf, sizeof buf);
        rc |= cli_table_add(&t, buf);
        rc |= cli_table_add(&t, q[i].paused ? "yes" : "no");
        rc |= cli_table_add(&t, q[i].format == REDQ_FORMAT_FRAMES ? "frames"
                                                                  : "plain");
        snprintf(buf, sizeof buf, "%d", q[i].partitions);
        rc |= cli_table_add(&t, buf);
    }
    if (rc == 0)
        cli_table_print(stdout, &t);
    cli_table_free(&t);
    return rc;
}

/* cli.h */
void cli_put_queue_json(FILE *f, const redq_queue_info *q)
{
    fputs("{\"queue\":", f);
    cli_put_json_string(f, q->name);
    fprintf(f,
            ",\"ready\":%llu,\"due\":%llu,\"processing\":%llu,\"delayed\":%llu,"
            "\"dead\":%llu,\"consumers\":%llu,\"registered\":%llu",
            (unsigned long long)q->ready, (unsigned long long)q->due,
            (unsigned long long)q->processing,
            (unsigned long long)q->delayed, (unsigned long long)q->dead,
            (unsigned long long)q->consumers,
            (unsigned long long)q->registered);
    if (q->oldest_age_ms >= 0)
        fprintf(f, ",\"oldest_age_ms\":%lld", q->oldest_age_ms);
    else
        fputs(",\"oldest_age_ms\":null", f);
    fprintf(f, ",\"paused\":%s", q->paused ? "true" : "false");
    if (q->last_seen_ms >= 0)
        fprintf(f, ",\"last_seen_ms\":%lld", q->last_seen_ms);
    else
        fputs(",\"last_seen_ms\":null", f);
    fprintf(f,
            ",\"pushed\":%llu,\"taken\":%llu,\"acked\":%llu,"
            "\"retried\":%llu,\"dead_lettered\":%llu",
            (unsigned long long)q->pushed, (unsigned long long)q->taken,
            (unsigned long long)q->acked, (unsigned long long)q->retried,
            (unsigned long long)q->dead_lettered);
    fprintf(f, ",\"format\":\"%s\",\"partitions\":%d",
            q->format == REDQ_FORMAT_FRAMES ? "frames" : "plain",
            q->partitions);
}

static void queues_cb(redq_admin *a, int status, const char *errstr,
                      const redq_queue_info *q, size_t n, void *user)
{
    cli_adm *ad = user;
    size_t i;

    (void)a;
    if (cli_adm_check(ad, status, errstr, "queues") < 0)
        return;
    if (ad->s.o->json) {
        fputs("{\"queues\":[", stdout);
        for (i = 0; i < n; i++) {
            if (i)
                putchar(',');
            cli_put_queue_json(stdout, &q[i]);
            putchar('}');
        }
        fputs("]}\n", stdout);
    } else if (queues_table(q, n) < 0) {
        fprintf(stderr, "redq: out of memory\n");
        cli_adm_done(ad, CLI_RC_FAILED);
        return;
    }
    cli_adm_done(ad, CLI_RC_OK);
}

static void queues_start(cli_adm *ad)
{
    int rc = redq_admin_queues(ad->a, queues_cb, ad);

    if (rc < 0)
        cli_adm_check(ad, rc, NULL, "queues");
}

int cli_cmd_queues(const cli_options *o)
{
    return cli_adm_run(o, queues_start, NULL, NULL);
}

/* ---- peek -------------------------------------------------------------------- */

static void peek_cb(redq_admin *a, int status, const char *errstr,
                    const redq_admin_msg *m, size_t n, void *user)
{
    cli_adm *ad = user;
    const cli_options *o = ad->s.o;
    size_t i;

    (void)a;
    if (cli_adm_check(ad, status, errstr, o->args[0]) < 0)
        return;
    for (i = 0; i < n; i++) {
        if (o->json) {
            printf("{\"index\":%zu", m[i].index);
            if (m[i].id[0]) {
                fputs(",\"id\":", stdout);
                cli_put_json_string(stdout, m[i].id);
            }
            printf(",\"attempts\":%d", m[i].attempts);
            if (m[i].ts_ms >= 0)
                printf(",\"ts\":%lld", m[i].ts_ms);
            if (cli_put_json_payload(stdout, m[i].data, m[i].len) < 0) {
                fprintf(stderr, "redq: out of memory\n");
                cli_adm_done(ad, CLI_RC_FAILED);
                return;
            }
            fputs("}\n", stdout);
        } else {
            char ts[48] = "-";
            char *body = cli_escape_text(m[i].data, m[i].len, PEEK_BODY_SHOW,
                                         redq_utf8_valid(m[i].data, m[i].len));

            if (m[i].ts_ms >= 0)
                cli_iso_utc_ms(m[i].ts_ms, ts, sizeof ts);
            printf("%zu\t%d\t%s\t%s\n", m[i].index, m[i].attempts, ts,
                   body ? body : "-");
            free(body);
        }
    }
    cli_adm_done(ad, CLI_RC_OK);
}

static void peek_start(cli_adm *ad)
{
    const cli_options *o = ad->s.o;
    size_t n = !o->has_count ? PEEK_DEFAULT
               : o->count > SIZE_MAX ? SIZE_MAX
                                     : (size_t)o->count;
    int rc = redq_admin_peek(ad->a, o->args[0], n, peek_cb, ad);

    if (rc < 0)
        cli_adm_check(ad, rc, NULL, o->args[0]);
}

int cli_cmd_peek(const cli_options *o)
{
    if (o->has_count && o->count == 0) {
        int rc = cli_check_queue_names(o);
        return rc ? rc : CLI_RC_OK;
    }
    return cli_adm_run(o, peek_start, NULL, NULL);
}

/* ---- pause, resume, recover ------------------------------------------------ */

typedef struct each_cmd {
    int next;    /* the operand being done */
    int paused;  /* pause: 1, resume: 0, recover: -1 */
} each_cmd;

static void each_next(cli_adm *ad);

static void each_cb(redq_admin *a, int status, const char *errstr,
                    uint64_t n, void *user)
{
    cli_adm *ad = user;
    each_cmd *ec = ad->cmd;
    const cli_options *o = ad->s.o;

    (void)a;
    if (cli_adm_check(ad, status, errstr, o->args[ec->next]) < 0)
        return;
    if (!o->quiet) {
        char *name = cli_escape_text(o->args[ec->next],
                                     strlen(o->args[ec->next]), 0, 1);

        if (ec->paused < 0)
            printf("recovered %llu\n", (unsigned long long)n);
        else
            printf("%s\t%s\n", ec->paused ? "paused" : "resumed",
                   name ? name : "?");
        free(name);
    }
    if (++ec->next == o->nargs)
        cli_adm_done(ad, CLI_RC_OK);
    else
        each_next(ad);
}

static void each_next(cli_adm *ad)
{
    each_cmd *ec = ad->cmd;
    const char *q = ad->s.o->args[ec->next];
    int rc = ec->paused < 0
                 ? redq_admin_recover(ad->a, q, each_cb, ad)
                 : redq_admin_pause(ad->a, q, ec->paused, each_cb, ad);

    if (rc < 0)
        cli_adm_check(ad, rc, NULL, q);
}

int cli_cmd_pause(const cli_options *o)
{
    each_cmd ec = {0, 1};
    return cli_adm_run(o, each_next, NULL, &ec);
}

int cli_cmd_resume(const cli_options *o)
{
    each_cmd ec = {0, 0};
    return cli_adm_run(o, each_next, NULL, &ec);
}

int cli_cmd_recover(const cli_options *o)
{
    each_cmd ec = {0, -1};
    return cli_adm_run(o, each_next, NULL, &ec);
}

/* ---- format ------------------------------------------------------------------ */

static void format_shown(redq_admin *a, int status, const char *errstr,
                         const redq_queue_info *q, size_t n, void *user)
{
    cli_adm *ad = user;

    (void)a;
    if (cli_adm_check(ad, status, errstr, ad->s.o->args[0]) < 0)
        return;
    printf("%s\n", n > 0 && q[0].format == REDQ_FORMAT_FRAMES ? "frames"
                                                              : "plain");
    cli_adm_done(ad, CLI_RC_OK);
}

static void format_set(redq_admin *a, int status, const char *errstr,
                       uint64_t n, void *user)
{
    cli_adm *ad = user;

    (void)a;
    (void)n;
    if (cli_adm_check(ad, status, errstr, ad->s.o->args[0]) < 0)
        return;
    printf("%s\n", ad->s.o->args[1]);
    cli_adm_done(ad, CLI_RC_OK);
}

static void format_start(cli_adm *ad)
{
    const cli_options *o = ad->s.o;
    int rc = o->nargs < 2
                 ? redq_admin_queue(ad->a, o->args[0], format_shown, ad)
                 : redq_admin_set_format(ad->a, o->args[0],
                                         strcmp(o->args[1], "frames") == 0
                                             ? REDQ_FORMAT_FRAMES
                                             : REDQ_FORMAT_PLAIN,
                                         format_set, ad);

    if (rc < 0)
        cli_adm_check(ad, rc, NULL, o->args[0]);
}

int cli_cmd_format(const cli_options *o)
{
    if (o->nargs == 2 && strcmp(o->args[1], "plain") != 0 &&
        strcmp(o->args[1], "frames") != 0)
        return cli_usage_error(o->cmd, "format '%s': plain or frames",
                               o->args[1]);
    return cli_adm_run(o, format_start, NULL, NULL);
}

/* ---- partitions ------------------------------------------------------------ */

static const char *const part_heads[] = {"INDEX", "QUEUE",      "SLOT",
                                         "NODE",  "READY",      "PROCESSING",
                                         "DEAD",  "RETIRED"};
#define PART_COLS (sizeof part_heads / sizeof part_heads[0])

static void parts_shown(redq_admin *a, int status, const char *errstr,
                        const redq_partition_info *p, size_t n, void *user)
{
    cli_adm *ad = user;
    cli_table t = {PART_COLS, 0, 0, NULL};
    size_t i, k;
    int rc = 0;

    (void)a;
    if (cli_adm_check(ad, status, errstr, ad->s.o->args[0]) < 0)
        return;
    if (ad->s.o->json) {
        fputs("{\"partitions\":[", stdout);
        for (i = 0; i < n; i++) {
            printf("%s{\"index\":%d,\"queue\":", i ? "," : "", p[i].index);
            cli_put_json_string(stdout, p[i].name);
            printf(",\"slot\":%d,\"node\":", p[i].slot);
            if (p[i].node != NULL)
                cli_put_json_string(stdout, p[i].node);
            else
                fputs("null", stdout);
            printf(",\"ready\":%llu,\"processing\":%llu,\"dead\":%llu,"
                   "\"retired\":%s}",
                   (unsigned long long)p[i].ready,
                   (unsigned long long)p[i].processing,
                   (unsigned long long)p[i].dead,
                   p[i].retired ? "true" : "false");
        }
        fputs("]}\n", stdout);
        cli_adm_done(ad, CLI_RC_OK);
        return;
    }
    for (k = 0; k < PART_COLS; k++)
        rc |= cli_table_add(&t, part_heads[k]);
    for (i = 0; i < n && rc == 0; i++) {
        char buf[32], *name = cli_escape_text(p[i].name, strlen(p[i].name),
                                              0, 1);
        snprintf(buf, sizeof buf, "%d", p[i].index);
        rc |= cli_table_add(&t, buf);
        rc |= cli_table_add(&t, name);
        free(name);
        snprintf(buf, sizeof buf, "%d", p[i].slot);
        rc |= cli_table_add(&t, buf);
        rc |= cli_table_add(&t, p[i].node != NULL ? p[i].node : "-");
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)p[i].ready);
        rc |= cli_table_add(&t, buf);
        snprintf(buf, sizeof buf, "%llu",
                 (unsigned long long)p[i].processing);
        rc |= cli_table_add(&t, buf);
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)p[i].dead);
        rc |= cli_table_add(&t, buf);
        rc |= cli_table_add(&t, p[i].retired ? "yes" : "no");
    }
    if (rc == 0)
        cli_table_print(stdout, &t);
    cli_table_free(&t);
    cli_adm_done(ad, rc == 0 ? CLI_RC_OK : CLI_RC_FAILED);
}

static void parts_set(redq_admin *a, int status, const char *errstr,
                      uint64_t n, void *user)
{
    cli_adm *ad = user;

    if (cli_adm_check(ad, status, errstr, ad->s.o->args[0]) < 0)
        return;
    (void)n;
    /* Then the table (or JSON) of what there is now. */
    if (redq_admin_partitions(a, ad->s.o->args[0], parts_shown, ad) < 0)
        cli_adm_check(ad, REDQ_ENOMEM, NULL, ad->s.o->args[0]);
}

static void parts_start(cli_adm *ad)
{
    const cli_options *o = ad->s.o;
    int rc = o->nargs < 2
                 ? redq_admin_partitions(ad->a, o->args[0], parts_shown, ad)
                 : redq_admin_set_partitions(ad->a, o->args[0],
                                             atoi(o->args[1]), parts_set, ad);

    if (rc < 0)
        cli_adm_check(ad, rc, NULL, o->args[0]);
}

int cli_cmd_partitions(const cli_options *o)
{
    if (o->nargs == 2) {
        char *end;
        long v = strtol(o->args[1], &end, 10);
        if (*end != '\0' || v < 1 || v > 256)
            return cli_usage_error(o->cmd, "partitions '%s': 1 to 256",
                                   o->args[1]);
    }
    return cli_adm_run(o, parts_start, NULL, NULL);
}
