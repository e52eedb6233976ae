/*
 * The admin commands' session: one redq_admin handle on the loop of a
 * cli_session (session.c), so that dead, stats, queues, peek, pause,
 * resume, recover and top share push's and pop's URL grammar, log
 * handling, --connect-timeout watchdog, signals and exit codes.
 *
 * A command is a chain of admin calls: `start` issues the first, each
 * callback checks its status with cli_adm_check and issues the next or
 * ends with cli_adm_done, which closes the handle; the loop returns once
 * the close callback has run.
 *
 * Whether the admin handle queues calls until it is connected or answers
 * them with a connection error at once is the library's business: both
 * work. A connection error before any call has succeeded starts the
 * command again ADM_RETRY_MS later, until the watchdog reports the last
 * failure the library logged, as push and pop do.
 */
#include "cli.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <event2/event.h>

#define ADM_RETRY_MS 100
/* The library's rule for queue names (redq.h: "longer than 1024"). */
#define ADM_MAX_QUEUE_NAME 1024

static void adm_closed(void *user)
{
    cli_adm *ad = user;

    ad->a = NULL;
    evtimer_del(ad->retry);
    if (ad->stop)
        ad->stop(ad);
    ad->stop = NULL;
    cli_session_closed(&ad->s);
}

static void adm_close(cli_adm *ad)
{
    evtimer_del(ad->retry);
    if (ad->a && !ad->s.closed && !ad->done) {
        ad->done = 1;
        redq_admin_close(ad->a, adm_closed, ad);
    }
}

static int adm_ever_connected(cli_session *s)
{
    return ((cli_adm *)s)->connected;
}

/* A signal, the watchdog or a failure: nothing of an admin command is
 * worth waiting for, so finishing and aborting are the same close (calls
 * not answered yet get REDQ_ECLOSED). */
static void adm_stop(cli_session *s)
{
    adm_close((cli_adm *)s);
}

static const cli_session_ops adm_ops = {adm_ever_connected, adm_stop,
                                        adm_stop, NULL};

static void adm_retry_cb(evutil_socket_t fd, short what, void *arg)
{
    cli_adm *ad = arg;

    (void)fd;
    (void)what;
    if (!ad->done && !ad->s.closed)
        ad->start(ad);
}

/* Failures that another attempt may cure. */
static int adm_transient(int status)
{
    return status == REDQ_ECONNECT || status == REDQ_ERESOLVE ||
           status == REDQ_ETIMEDOUT || status == REDQ_EDISCONNECTED;
}

/* cli.h */
int cli_adm_check(cli_adm *ad, int status, const char *errstr,
                  const char *what)
{
    const char *why = errstr && *errstr ? errstr : redq_strerror(status);

    if (status == 0) {
        ad->connected = 1;
        return 0;
    }
    if (status == REDQ_ECLOSED || ad->done || ad->s.closed)
        return -1; /* the run is ending: its cause has been reported */
    if (!ad->connected && adm_transient(status)) {
        struct timeval tv = {0, ADM_RETRY_MS * 1000};

        if (!ad->s.last_err[0] || ad->s.last_code == 0) {
            ad->s.last_code = status;
            snprintf(ad->s.last_err, sizeof ad->s.last_err, "%s", why);
        }
        evtimer_add(ad->retry, &tv);
        return -1;
    }
    if (status == REDQ_EAUTH || status == REDQ_ENOPERM) {
        cli_session_fail(&ad->s, CLI_RC_AUTH, "authentication failed: %s",
                         why);
    } else if (status == REDQ_ESELECT) {
        cli_session_fail(&ad->s, CLI_RC_CONNECT, "%s", why);
    } else if (status == REDQ_EWRONGTYPE && !strstr(why, "WRONGTYPE")) {
        cli_session_fail(&ad->s, CLI_RC_FAILED, "%s: WRONGTYPE %s", what, why);
    } else if (adm_transient(status)) {
        /* Connected once, then lost: the outcome of a change is unknown. */
        cli_session_fail(&ad->s, CLI_RC_CONNECT, "%s: %s", what, why);
    } else {
        cli_session_fail(&ad->s, CLI_RC_FAILED, "%s: %s", what, why);
    }
    return -1;
}

/* cli.h */
void cli_adm_done(cli_adm *ad, int rc)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "redq: write to stdout: %s\n", strerror(errno));
        if (rc == CLI_RC_OK)
            rc = CLI_RC_FAILED;
    }
    ad->rc = rc;
    adm_close(ad);
}

/* cli.h */
int cli_check_queue_names(const cli_options *o)
{
    int i;

    for (i = 0; i < o->nargs; i++) {
        if (!o->args[i][0])
            return cli_usage_error(o->cmd, "invalid queue name (empty)");
        if (strlen(o->args[i]) > ADM_MAX_QUEUE_NAME)
            return cli_usage_error(o->cmd,
                                   "invalid queue name (longer than %d bytes)",
                                   ADM_MAX_QUEUE_NAME);
    }
    return 0;
}

/* cli.h */
void cli_iso_utc_ms(long long ms, char *buf, size_t cap)
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

/* cli.h */
int cli_adm_run(const cli_options *o, cli_adm_start_fn start,
                cli_adm_start_fn stop, void *cmd)
{
    cli_adm *ad;
    redq_admin_options opts;
    char errbuf[512] = "";
    int rc;

    if ((rc = cli_check_queue_names(o)) != 0)
        return rc;
    if (!(ad = calloc(1, sizeof *ad))) {
        fprintf(stderr, "redq: out of memory\n");
        return CLI_RC_FAILED;
    }
    if (cli_session_init(&ad->s, o, &adm_ops) < 0 ||
        !(ad->retry = evtimer_new(ad->s.base, adm_retry_cb, ad))) {
        rc = CLI_RC_FAILED;
        goto out;
    }
    ad->start = start;
    ad->stop = stop;
    ad->cmd = cmd;
    cli_session_admin_options(&ad->s, &opts);
    opts.errbuf = errbuf;
    opts.errbuf_size = sizeof errbuf;
    ad->s.in_new = 1;
    rc = redq_admin_new(&ad->a, ad->s.base, &opts);
    ad->s.in_new = 0;
    if (rc < 0) {
        if (!ad->s.new_err[0] && errbuf[0])
            snprintf(ad->s.new_err, sizeof ad->s.new_err, "%s", errbuf);
        rc = cli_session_new_failed(&ad->s, rc);
        goto out;
    }
    cli_session_start(&ad->s);
    start(ad);
    event_base_dispatch(ad->s.base);
    rc = cli_session_exit_code(&ad->s);
    if (rc == CLI_RC_OK)
        rc = ad->rc;
out:
    if (ad->a) /* the loop ended without the close having run */
        redq_admin_close(ad->a, NULL, NULL);
    if (ad->stop)
        ad->stop(ad);
    if (ad->retry)
        event_free(ad->retry);
    cli_session_free(&ad->s);
    free(ad);
    return rc;
}
