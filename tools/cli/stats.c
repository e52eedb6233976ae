/*
 * redq stats: per queue, the ready / due / processing / delayed / dead
 * counts and live and registered consumers, as the admin API's snapshot
 * (redq_admin_queue: one script per queue, so one moment's numbers), then
 * its orphaned processing lists (redq_admin_orphans: a walk of the
 * keyspace, which is why top and queues do not show them); printed as a
 * table or as JSON.
 */
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

typedef struct qstats {
    long long val[ST_N];
} qstats;

/* A processing list whose holder is not registered, and its length. */
typedef struct cli_orphan {
    char *key;
    long long messages;
} cli_orphan;

typedef struct cli_orphans {
    cli_orphan *orphans;
    size_t norphans;
    long long messages; /* the sum */
} cli_orphans;

typedef struct stats_cmd {
    const cli_options *o;
    qstats *st;
    cli_orphans *orph;
    int next; /* the operand asked for */
} stats_cmd;

static void orphans_free(cli_orphans *st)
{
    size_t i;

    for (i = 0; i < st->norphans; i++)
        free(st->orphans[i].key);
    free(st->orphans);
    memset(st, 0, sizeof *st);
}

static void stats_next(cli_adm *ad);

static void orphans_cb(redq_admin *a, int status, const char *errstr,
                       const redq_orphan *orphans, size_t n, void *user)
{
    cli_adm *ad = user;
    stats_cmd *sc = ad->cmd;
    cli_orphans *st = &sc->orph[sc->next];
    size_t i;

    (void)a;
    if (cli_adm_check(ad, status, errstr, sc->o->args[sc->next]) < 0)
        return;
    orphans_free(st); /* a start again after a lost connection */
    if (n > 0 && !(st->orphans = calloc(n, sizeof *st->orphans))) {
        fprintf(stderr, "redq: out of memory\n");
        cli_adm_done(ad, CLI_RC_FAILED);
        return;
    }
    for (i = 0; i < n; i++) {
        if (!(st->orphans[i].key = strdup(orphans[i].key))) {
            fprintf(stderr, "redq: out of memory\n");
            cli_adm_done(ad, CLI_RC_FAILED);
            return;
        }
        st->orphans[i].messages = (long long)orphans[i].messages;
        st->messages += st->orphans[i].messages;
        st->norphans++;
    }
    sc->st[sc->next].val[ST_ORPHANED] = st->messages;
    if (++sc->next == sc->o->nargs)
        cli_adm_done(ad, CLI_RC_OK);
    else
        stats_next(ad);
}

static void stats_cb(redq_admin *a, int status, const char *errstr,
                     const redq_queue_info *q, size_t n, void *user)
{
    cli_adm *ad = user;
    stats_cmd *sc = ad->cmd;
    long long *v = sc->st[sc->next].val;

    (void)a;
    if (cli_adm_check(ad, status, errstr, sc->o->args[sc->next]) < 0)
        return;
    if (n != 1) {
        fprintf(stderr, "redq: %s: no snapshot\n", sc->o->args[sc->next]);
        cli_adm_done(ad, CLI_RC_FAILED);
        return;
    }
    v[ST_READY] = (long long)q->ready;
    v[ST_DUE] = (long long)q->due;
    v[ST_PROC] = (long long)q->processing;
    v[ST_DELAYED] = (long long)q->delayed;
    v[ST_DEAD] = (long long)q->dead;
    v[ST_LIVE] = (long long)q->consumers;
    v[ST_REG] = (long long)q->registered;
    /* Then its orphaned lists: counted apart from PROCESSING, which holds
     * the registered holders' messages only. */
    if ((status = redq_admin_orphans(ad->a, sc->o->args[sc->next],
                                     orphans_cb, ad)) < 0)
        cli_adm_check(ad, status, NULL, sc->o->args[sc->next]);
}

static void stats_next(cli_adm *ad)
{
    stats_cmd *sc = ad->cmd;
    int rc = redq_admin_queue(ad->a, sc->o->args[sc->next], stats_cb, ad);

    if (rc < 0)
        cli_adm_check(ad, rc, NULL, sc->o->args[sc->next]);
}

/* A connection failure before the first answer starts over. */
static void stats_start(cli_adm *ad)
{
    ((stats_cmd *)ad->cmd)->next = 0;
    stats_next(ad);
}

int cli_cmd_stats(const cli_options *o)
{
    stats_cmd sc = {o, NULL, NULL, 0};
    cli_orphans *orph = NULL;
    char **names = NULL;
    size_t qw = strlen("QUEUE"), w[ST_N], norph = 0, j;
    int code, i, k;

    sc.st = calloc((size_t)o->nargs, sizeof *sc.st);
    orph = calloc((size_t)o->nargs, sizeof *orph);
    names = calloc((size_t)o->nargs, sizeof *names);
    sc.orph = orph;
    if (!sc.st || !orph || !names) {
        fprintf(stderr, "redq: out of memory\n");
        code = CLI_RC_FAILED;
        goto out;
    }
    /* All first: a failure prints no half table. */
    if ((code = cli_adm_run(o, stats_start, NULL, &sc)) != CLI_RC_OK)
        goto out;
    for (i = 0; i < o->nargs; i++)
        norph += orph[i].norphans;
    {
        qstats *st = sc.st;

        if (o->json) {
            fputs("{\"queues\":[", stdout);
            for (i = 0; i < o->nargs; i++) {
                fputs(i ? ",{\"queue\":" : "{\"queue\":", stdout);
                cli_put_json_string(stdout, o->args[i]);
                for (k = 0; k < ST_N; k++)
                    printf(",\"%s\":%lld", stat_names[k], st[i].val[k]);
                fputs(",\"orphans\":[", stdout);
                for (j = 0; j < orph[i].norphans; j++) {
                    fputs(j ? ",{\"key\":" : "{\"key\":", stdout);
                    cli_put_json_string(stdout, orph[i].orphans[j].key);
                    printf(",\"messages\":%lld}", orph[i].orphans[j].messages);
                }
                fputs("]}", stdout);
            }
            fputs("]}\n", stdout);
        } else {
            char num[24];

            for (k = 0; k < ST_N; k++)
                w[k] = strlen(stat_heads[k]);
            for (i = 0; i < o->nargs; i++) {
                names[i] = cli_escape_text(o->args[i], strlen(o->args[i]), 0, 1);
                if (!names[i]) {
                    fprintf(stderr, "redq: out of memory\n");
                    code = CLI_RC_FAILED;
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
                for (j = 0; j < orph[i].norphans; j++) {
                    char *key = cli_escape_text(orph[i].orphans[j].key,
                                                strlen(orph[i].orphans[j].key), 0, 1);

                    printf("  %s\t%lld\n", key ? key : "?",
                           orph[i].orphans[j].messages);
                    free(key);
                }
        }
    }
    if (norph > 0 && !o->quiet)
        fprintf(stderr,
                "redq: warning: %zu orphaned processing list%s: their "
                "messages are in no queue\n",
                norph, norph == 1 ? "" : "s");
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "redq: write to stdout failed\n");
        code = CLI_RC_FAILED;
    }
out:
    if (names)
        for (i = 0; i < o->nargs; i++)
            free(names[i]);
    free(names);
    if (orph)
        for (i = 0; i < o->nargs; i++)
            orphans_free(&orph[i]);
    free(orph);
    free(sc.st);
    return code;
}
