/*
 * redq dead list | requeue | purge | delete: a queue's dead letters, over
 * the admin API (redq_admin_dead, _requeue, _requeue_id, _delete_dead,
 * _purge). The library owns the key layout, the frames and the scripts
 * that move messages: the tool never spells a key or decodes a payload of
 * its own, so it cannot drift from what consumers write.
 */

#include "cli.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* `dead list` reads pages of this many entries. */
#define DEAD_PAGE 100
/* dead list: bodies are shown up to this many characters. */
#define DEAD_BODY_SHOW 160

typedef struct dead_cmd {
    const cli_options *o;
    uint64_t limit; /* dead list: entries still to show */
    uint64_t next;  /* dead list: the next index */
} dead_cmd;

/* One line of `dead list`: INDEX ATTEMPTS DEAD_TS REASON BODY. */
static void dead_print(const redq_admin_msg *m, int quiet)
{
    char ts[48] = "-", att[24] = "-";
    char *reason = NULL, *body;
    int framed = m->framed;

    if (framed) {
        snprintf(att, sizeof att, "%d", m->attempts);
        if (m->dead_ts_ms >= 0)
            cli_iso_utc_ms(m->dead_ts_ms, ts, sizeof ts);
        if (m->reason)
            reason = cli_escape_text(m->reason, strlen(m->reason), 0, 1);
    } else if (!quiet) {
        fprintf(stderr,
                "redq: dead letter %zu is not a redq frame: shown whole as "
                "BODY\n",
                m->index);
    }
    /* A payload that is not UTF-8 is binary: every byte >= 0x80 escaped. */
    body = cli_escape_text(m->data, m->len, DEAD_BODY_SHOW,
                           redq_utf8_valid(m->data, m->len));
    printf("%zu\t%s\t%s\t%s\t%s\n", m->index, att, ts,
           reason && reason[0] ? reason : "-", body ? body : "-");
    free(reason);
    free(body);
}

/* cli.h */
int cli_put_json_payload(FILE *f, const void *data, size_t len)
{
    if (redq_utf8_valid(data, len)) {
        fputs(",\"body\":", f);
        cli_put_json_bytes(f, data, len);
    } else {
        char *b = malloc(4 * ((len + 2) / 3) + 1);

        if (!b)
            return -1;
        redq_base64_encode(data, len, b);
        fprintf(f, ",\"body_b64\":\"%s\"", b);
        free(b);
    }
    return 0;
}

/* One line of `dead list --json`: {"index":N,"id":..,"attempts":..,"ts":..,
 * "dead_ts":..,"dead_reason":..,"queue":..,"body"|"body_b64":..}, fields
 * the entry lacks omitted; for one that is not a frame, "error" and the
 * whole entry as the body. -1 when out of memory. */
static int dead_print_json(const redq_admin_msg *m, const char *queue)
{
    printf("{\"index\":%zu", m->index);
    if (!m->framed) {
        fputs(",\"error\":\"not a redq frame\"", stdout);
    } else {
        if (m->id[0]) {
            fputs(",\"id\":", stdout);
            cli_put_json_string(stdout, m->id);
        }
        printf(",\"attempts\":%d", m->attempts);
        if (m->ts_ms >= 0)
            printf(",\"ts\":%lld", m->ts_ms);
        if (m->dead_ts_ms >= 0)
            printf(",\"dead_ts\":%lld", m->dead_ts_ms);
        if (m->reason && m->reason[0]) {
            fputs(",\"dead_reason\":", stdout);
            cli_put_json_string(stdout, m->reason);
        }
        /* The queue the frame says it died in; a frame without one
         * (written before frames carried it) is the queue asked about. */
        fputs(",\"queue\":", stdout);
        cli_put_json_string(stdout, m->queue ? m->queue : queue);
    }
    if (cli_put_json_payload(stdout, m->data, m->len) < 0)
        return -1;
    fputs("}\n", stdout);
    return 0;
}

/* ---- dead list ------------------------------------------------------------ */

static void list_page(cli_adm *ad);

static void list_cb(redq_admin *a, int status, const char *errstr,
                    const redq_admin_msg *msgs, size_t n, void *user)
{
    cli_adm *ad = user;
    dead_cmd *dc = ad->cmd;
    size_t i;

    (void)a;
    if (cli_adm_check(ad, status, errstr, dc->o->args[0]) < 0)
        return;
    for (i = 0; i < n && dc->limit > 0; i++, dc->limit--) {
        if (!dc->o->json) {
            dead_print(&msgs[i], dc->o->quiet);
        } else if (dead_print_json(&msgs[i], dc->o->args[0]) < 0) {
            fprintf(stderr, "redq: out of memory\n");
            cli_adm_done(ad, CLI_RC_FAILED);
            return;
        }
    }
    dc->next += n;
    if (n < DEAD_PAGE || dc->limit == 0 || ferror(stdout))
        cli_adm_done(ad, CLI_RC_OK);
    else
        list_page(ad);
}

static void list_page(cli_adm *ad)
{
    dead_cmd *dc = ad->cmd;
    int rc = redq_admin_dead(ad->a, dc->o->args[0], (size_t)dc->next,
                             DEAD_PAGE, list_cb, ad);

    if (rc < 0)
        cli_adm_check(ad, rc, NULL, dc->o->args[0]);
}

int cli_cmd_dead_list(const cli_options *o)
{
    dead_cmd dc = {o, o->has_count ? o->count : UINT64_MAX, 0};

    if (o->has_count && o->count == 0) {
        int rc = cli_check_queue_names(o);
        return rc ? rc : CLI_RC_OK; /* like head -n 0 */
    }
    return cli_adm_run(o, list_page, NULL, &dc);
}

/* ---- requeue, purge, delete ------------------------------------------------ */

/* The answer of a change: "WORD N" on stdout (not with -q), or, for one
 * addressed by --id that found nothing, a note and status 1. */
static void done_cb(cli_adm *ad, int status, const char *errstr, uint64_t n,
                    const char *word)
{
    dead_cmd *dc = ad->cmd;

    if (cli_adm_check(ad, status, errstr, dc->o->args[0]) < 0)
        return;
    if (dc->o->id && n == 0) {
        fprintf(stderr, "redq: %s: no dead letter with id ", dc->o->args[0]);
        {
            char *id = cli_escape_text(dc->o->id, strlen(dc->o->id), 0, 1);
            fprintf(stderr, "%s\n", id ? id : "?");
            free(id);
        }
        cli_adm_done(ad, CLI_RC_FAILED);
        return;
    }
    if (!dc->o->quiet)
        printf("%s %llu\n", word, (unsigned long long)n);
    cli_adm_done(ad, CLI_RC_OK);
}

static void requeue_cb(redq_admin *a, int status, const char *errstr,
                       uint64_t n, void *user)
{
    (void)a;
    done_cb(user, status, errstr, n, "requeued");
}

static void purge_cb(redq_admin *a, int status, const char *errstr,
                     uint64_t n, void *user)
{
    (void)a;
    done_cb(user, status, errstr, n, "purged");
}

static void delete_cb(redq_admin *a, int status, const char *errstr,
                      uint64_t n, void *user)
{
    (void)a;
    done_cb(user, status, errstr, n, "deleted");
}

static void requeue_start(cli_adm *ad)
{
    dead_cmd *dc = ad->cmd;
    const cli_options *o = dc->o;
    int rc;

    if (o->id)
        rc = redq_admin_requeue_id(ad->a, o->args[0], o->id, requeue_cb, ad);
    else
        rc = redq_admin_requeue(ad->a, o->args[0],
                                o->all || o->count > SIZE_MAX
                                    ? SIZE_MAX
                                    : (size_t)o->count,
                                requeue_cb, ad);
    if (rc < 0)
        cli_adm_check(ad, rc, NULL, o->args[0]);
}

int cli_cmd_dead_requeue(const cli_options *o)
{
    dead_cmd dc = {o, 0, 0};

    if (o->has_count && o->count == 0 && !o->id) {
        int rc = cli_check_queue_names(o);
        if (rc == 0 && !o->quiet)
            printf("requeued 0\n");
        return rc;
    }
    return cli_adm_run(o, requeue_start, NULL, &dc);
}

static void purge_start(cli_adm *ad)
{
    dead_cmd *dc = ad->cmd;
    int rc = redq_admin_purge(ad->a, dc->o->args[0], purge_cb, ad);

    if (rc < 0)
        cli_adm_check(ad, rc, NULL, dc->o->args[0]);
}

int cli_cmd_dead_purge(const cli_options *o)
{
    dead_cmd dc = {o, 0, 0};

    return cli_adm_run(o, purge_start, NULL, &dc);
}

static void delete_start(cli_adm *ad)
{
    dead_cmd *dc = ad->cmd;
    int rc = redq_admin_delete_dead(ad->a, dc->o->args[0], dc->o->id,
                                    delete_cb, ad);

    if (rc < 0)
        cli_adm_check(ad, rc, NULL, dc->o->args[0]);
}

int cli_cmd_dead_delete(const cli_options *o)
{
    dead_cmd dc = {o, 0, 0};

    return cli_adm_run(o, delete_start, NULL, &dc);
}
