/*
 * The connection layer (lib/conn.c) against real redis-server processes,
 * driven directly through redq__conn where the public handles cannot show
 * it: least-privilege ACL users, lazy script loading, permanent and passing
 * server errors, the inactivity reply deadline, hostile reply sizes and
 * SIGPIPE.
 *
 * Some tests put something of their own between redq and Redis on
 * 127.0.0.1: a relay that forwards slowly or not at all (a slow or dead
 * path, with the real server behind it), or a listening socket that answers
 * with bytes no sane server sends (our parser against hostile input). Both
 * are threads of the test process, stopped by .fini.
 *
 * This file links the internal static library (redq__ symbols), so it is
 * built into its own binary (test/redis/meson.build).
 */
#include <criterion/criterion.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <hiredis/hiredis.h>

#include "fixture.h"
#include "redq_private.h"

/* ---- a raw connection with recorded callbacks --------------------------- */

#define TC_LOGS 512

typedef struct tc {
    redq__conn *c;
    redq__logger lg;
    redq__url url;
    int ups, downs, fails;
    int last_down_code, last_fail_code;
    char last_fail_msg[300];
    char fail_msgs[4][300]; /* the first four failure messages */
    int nlog;
    int log_level[TC_LOGS];
    int log_code[TC_LOGS];
    char log_msg[TC_LOGS][320];
} tc;

static tc *g_tc[4];
static char g_users[8][32];
static int g_nusers;

static void tc_log(int level, int code, const char *msg, void *user)
{
    tc *t = user;
    if (t->nlog >= TC_LOGS)
        return;
    t->log_level[t->nlog] = level;
    t->log_code[t->nlog] = code;
    snprintf(t->log_msg[t->nlog], sizeof t->log_msg[0], "%s", msg);
    t->nlog++;
}

static void tc_up(redq__conn *c, void *arg)
{
    (void)c;
    ((tc *)arg)->ups++;
}

static void tc_down(redq__conn *c, int code, const char *msg, void *arg)
{
    tc *t = arg;
    (void)c;
    (void)msg;
    t->downs++;
    t->last_down_code = code;
}

static void tc_fail(redq__conn *c, int code, const char *msg, void *arg)
{
    tc *t = arg;
    (void)c;
    if (t->fails < 4)
        snprintf(t->fail_msgs[t->fails], sizeof t->fail_msgs[0], "%s", msg);
    t->fails++;
    t->last_fail_code = code;
    snprintf(t->last_fail_msg, sizeof t->last_fail_msg, "%s", msg);
}

typedef struct tc_opts {
    const char *name;     /* CLIENT SETNAME, NULL: none */
    int want_version;
    int want_client_id;
    int connect_timeout_ms;
    int command_timeout_ms;
} tc_opts;

static tc *tc_open(const char *url, const tc_opts *o)
{
    tc *t = calloc(1, sizeof *t);
    char err[256];
    redq__conn_config cfg;
    cr_assert_not_null(t);
    cr_assert_eq(redq__url_parse(&t->url, url, err, sizeof err), 0, "%s: %s",
                 url, err);
    t->lg.cb = tc_log;
    t->lg.level = REDQ_LOG_DEBUG;
    t->lg.user = t;
    t->lg.prefix = "conn";
    memset(&cfg, 0, sizeof cfg);
    cfg.url = &t->url;
    cfg.client_name = o->name;
    cfg.connect_timeout_ms = o->connect_timeout_ms ? o->connect_timeout_ms
                                                   : 2000;
    cfg.command_timeout_ms = o->command_timeout_ms ? o->command_timeout_ms
                                                   : 2000;
    cfg.reconnect_min_ms = 20;
    cfg.reconnect_max_ms = 100;
    cfg.log = &t->lg;
    cfg.want_version = o->want_version;
    cfg.want_client_id = o->want_client_id;
    cfg.on_fail = tc_fail;
    cr_assert_eq(redq__conn_new(&t->c, fx_base(), &cfg, tc_up, tc_down, t),
                 0);
    for (size_t i = 0; i < sizeof g_tc / sizeof g_tc[0]; i++)
        if (g_tc[i] == NULL) {
            g_tc[i] = t;
            break;
        }
    redq__conn_start(t->c);
    return t;
}

static void tc_close_all(void)
{
    for (size_t i = 0; i < sizeof g_tc / sizeof g_tc[0]; i++) {
        if (g_tc[i] == NULL)
            continue;
        redq__conn_free(g_tc[i]->c);
        redq__url_free(&g_tc[i]->url);
        free(g_tc[i]);
        g_tc[i] = NULL;
    }
}

static const char *tc_logs(const tc *t)
{
    static char buf[4096];
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 0; i < t->nlog && off < sizeof buf - 1; i++) {
        int n = snprintf(buf + off, sizeof buf - off, "\n  [%d %s] %s",
                         t->log_level[i], redq_err_name(t->log_code[i]),
                         t->log_msg[i]);
        if (n > 0)
            off += (size_t)n;
    }
    return buf;
}

/* Does any log line contain s? */
static bool tc_logged(const tc *t, const char *s)
{
    for (int i = 0; i < t->nlog; i++)
        if (strstr(t->log_msg[i], s))
            return true;
    return false;
}

static int tc_count(const tc *t, int level, int code)
{
    int n = 0;
    for (int i = 0; i < t->nlog; i++)
        if (t->log_level[i] == level && t->log_code[i] == code)
            n++;
    return n;
}

static bool cond_up(void *arg)
{
    return ((tc *)arg)->ups > 0 && redq__conn_ready(((tc *)arg)->c);
}

static bool cond_fail1(void *arg)
{
    return ((tc *)arg)->fails >= 1;
}

static bool cond_fail3(void *arg)
{
    return ((tc *)arg)->fails >= 3;
}

static bool cond_down(void *arg)
{
    return ((tc *)arg)->downs > 0;
}

/* A recorded reply. */
typedef struct rep {
    int done;
    int type; /* -1: NULL (connection lost) */
    long long integer;
    size_t len;
    char str[512];
} rep;

static void rep_cb(redq__conn *c, void *reply, void *arg)
{
    rep *r = arg;
    redisReply *x = reply;
    (void)c;
    r->done++;
    if (x == NULL) {
        r->type = -1;
        return;
    }
    r->type = x->type;
    r->integer = x->integer;
    r->len = x->len;
    if (x->str != NULL)
        snprintf(r->str, sizeof r->str, "%.*s",
                 (int)(x->len < 500 ? x->len : 500), x->str);
}

static bool cond_rep(void *arg)
{
    return ((rep *)arg)->done > 0;
}

static void tc_wait_up(tc *t, int ms)
{
    cr_assert(fx_run_until(cond_up, t, ms), "not ready within %d ms; log:%s",
              ms, tc_logs(t));
}

/* ---- ACL users (deleted by .fini) --------------------------------------- */

/* ACL SETUSER name reset on >pass <rules, space-separated> */
static void acl_user(const char *name, const char *pass, const char *rules)
{
    const char *argv[64];
    char *copy = strdup(rules), *save = NULL, *tok;
    char pw[128];
    int argc = 0;
    cr_assert_not_null(copy);
    snprintf(pw, sizeof pw, ">%s", pass);
    argv[argc++] = "ACL";
    argv[argc++] = "SETUSER";
    argv[argc++] = name;
    argv[argc++] = "reset";
    argv[argc++] = "on";
    argv[argc++] = pw;
    for (tok = strtok_r(copy, " ", &save); tok && argc < 64;
         tok = strtok_r(NULL, " ", &save))
        argv[argc++] = tok;
    redisReply *r = redisCommandArgv(fx_redis(), argc, argv, NULL);
    cr_assert(r && r->type == REDIS_REPLY_STATUS, "ACL SETUSER %s %s: %s",
              name, rules, r ? r->str : fx_redis()->errstr);
    freeReplyObject(r);
    free(copy);
    if (g_nusers < 8)
        snprintf(g_users[g_nusers++], sizeof g_users[0], "%s", name);
}

static void acl_delete_all(void)
{
    redisContext *ctl;
    if (g_nusers == 0)
        return;
    ctl = fx_redis();
    for (int i = 0; i < g_nusers; i++) {
        redisReply *r = redisCommand(ctl, "ACL DELUSER %s", g_users[i]);
        if (r)
            freeReplyObject(r);
    }
    g_nusers = 0;
}

static char g_url[256];

static const char *url_for(const char *user, const char *pass,
                           const char *tail)
{
    snprintf(g_url, sizeof g_url, "redis://%s:%s@127.0.0.1:%d%s", user, pass,
             fx_port(), tail ? tail : "");
    return g_url;
}

/* ---- helpers run by .fini ----------------------------------------------- */

static void relay_stop(void);
static void fake_stop(void);
static void stop_own(void);

static void fini(void)
{
    tc_close_all();
    stop_own();
    relay_stop();
    fake_stop();
    acl_delete_all();
    fx_teardown();
}

TestSuite(acl, .init = fx_setup, .fini = fini, .timeout = 60);
TestSuite(conn_layer, .init = fx_setup, .fini = fini, .timeout = 90);

/* ========================================================================= */
/* Least-privilege users                                                      */
/* ========================================================================= */

static void opts_for(redq_producer_options *o, const char *url)
{
    redq_producer_options_init(o);
    o->url = url;
    o->reconnect_min_ms = 20;
    o->reconnect_max_ms = 100;
    o->log_level = REDQ_LOG_WARN;
}

/*
 * A producer needs LPUSH and nothing else: AUTH needs no permission, CLIENT
 * SETNAME is cosmetic (warned about once per handle, not per reconnect),
 * and the scripts it may load up front are refused with one warning.
 */
Test(acl, producer_only_user_produces)
{
    acl_user("rq_prod", "Pw-prod-7f3a", "~* +lpush");
    fx_tracker *t = fx_tracker_new(40);
    redq_producer_options o;
    opts_for(&o, url_for("rq_prod", "Pw-prod-7f3a", NULL));
    cr_assert_eq(fx_producer_new(t, &o), 0);

    fx_produce_range(t, "q", 0, 20, 0);
    cr_assert(fx_wait_reports(t, 20, 5000), "%zu of 20 reports", t->reports);
    fx_assert_reported(t, 0, 20, 0);
    unsigned warned = t->log_by_code[-REDQ_ENOPERM];
    cr_assert(warned >= 1, "the refused CLIENT SETNAME was not mentioned");

    /* A reconnect says nothing new about the same refusals. */
    fx_cmd_ok("CLIENT KILL USER rq_prod");
    fx_produce_range(t, "q", 20, 40, 0);
    cr_assert(fx_wait_reports(t, 40, 5000), "%zu of 40 reports", t->reports);
    fx_assert_reported(t, 20, 40, 0);
    fx_assert_list_range("q", 0, 40);
    cr_assert_eq(t->log_by_code[-REDQ_ENOPERM], warned,
                 "warned again after a reconnect");
    cr_assert_eq(t->log_by_code[-REDQ_EAUTH], 0);
    for (int i = 0; i < FX_MAX_CODE; i++) {
        cr_assert_null(strstr(t->log_first[i], "Pw-prod-7f3a"),
                       "password in a log: %s", t->log_first[i]);
        cr_assert_null(strstr(t->log_first[i], "rq_prod"),
                       "user in a log: %s", t->log_first[i]);
    }
    redq_producer_stats st = fx_stats(t);
    cr_assert_geq(st.connects, 2);
}

/* HELLO is a no-auth command: Redis 7 runs it for any user, whatever the
 * ACL says. A server without it (renamed away, as on some managed services,
 * or before 6.2) is the way to see the fallbacks. */
static const char *const no_hello[] = {"--rename-command", "HELLO", "", NULL};

/* Without HELLO, info and client|setname: ready anyway, version unknown
 * (said once at INFO), the name skipped with one warning. */
Test(acl, user_without_info_hello_setname_connects,
     .init = fx_setup_noserver)
{
    fx_server_start(no_hello);
    acl_user("rq_lim", "lim-pw-42", "~* +@all -info -client|setname");
    tc_opts o = {.name = "rq-lim", .want_version = 1};
    tc *t = tc_open(url_for("rq_lim", "lim-pw-42", NULL), &o);
    tc_wait_up(t, 3000);
    cr_assert_eq(redq__conn_server_version(t->c), 0);
    cr_assert_eq(t->fails, 0, "an attempt failed:%s", tc_logs(t));
    cr_assert(tc_logged(t, "version"), "unknown version not said:%s",
              tc_logs(t));
    cr_assert_eq(tc_count(t, REDQ_LOG_WARN, REDQ_ENOPERM), 1,
                 "SETNAME refusal:%s", tc_logs(t));
    cr_assert_eq(tc_count(t, REDQ_LOG_ERROR, REDQ_ENOPERM), 0);

    rep r = {0};
    const char *argv[] = {"PING"};
    cr_assert_eq(redq__conn_sendv(t->c, 1, argv, NULL, 0, rep_cb, &r), 0);
    cr_assert(fx_run_until(cond_rep, &r, 2000));
    cr_assert_str_eq(r.str, "PONG");
}

/* HELLO refused, INFO allowed: the version still comes (from INFO). */
Test(acl, version_falls_back_to_info, .init = fx_setup_noserver)
{
    fx_server_start(no_hello);
    acl_user("rq_noh", "noh-pw", "~* +@all");
    long long info0 = fx_commandstat_calls("info");
    tc_opts o = {.want_version = 1};
    tc *t = tc_open(url_for("rq_noh", "noh-pw", NULL), &o);
    tc_wait_up(t, 3000);
    cr_assert_geq(redq__conn_server_version(t->c), 60000);
    /* info0's own call, and the connection's fallback. */
    cr_assert_eq(fx_commandstat_calls("info") - info0, 2,
                 "INFO was not the fallback");
}

/* Asked for nothing: the handshake sends nothing (no INFO, no HELLO, no
 * SCRIPT LOAD); asked for the version: one HELLO and no INFO. */
Test(acl, handshake_sends_only_what_is_asked)
{
    long long info0 = fx_commandstat_calls("info");
    long long hello0 = fx_commandstat_calls("hello");
    long long load0 = fx_commandstat_calls("script|load");
    tc_opts none = {0};
    tc *a = tc_open(fx_url(), &none);
    tc_wait_up(a, 3000);
    cr_assert_eq(redq__conn_server_version(a->c), 0);
    tc_opts ver = {.want_version = 1};
    tc *b = tc_open(fx_url(), &ver);
    tc_wait_up(b, 3000);
    cr_assert_geq(redq__conn_server_version(b->c), 60000);
    cr_assert_eq(fx_commandstat_calls("hello") - hello0, 1);
    /* The four fx_commandstat_calls before this one; none from redq. */
    long long info = fx_commandstat_calls("info") - info0;
    cr_assert_eq(info, 4, "%lld INFO calls", info);
    cr_assert_eq(fx_commandstat_calls("script|load") - load0, 0);
}

/* A wrong password: a specific code at once, marked permanent, still
 * retried (and logged, not silent), and fixed server-side it connects. */
Test(acl, wrong_password_fails_fast_and_recovers)
{
    acl_user("rq_wp", "right-pw-1", "~* +@all");
    tc_opts o = {.name = "rq-wp"};
    uint64_t t0 = fx_now_us();
    tc *t = tc_open(url_for("rq_wp", "Wr0ngPw9", NULL), &o);
    cr_assert(fx_run_until(cond_fail1, t, 2000), "no failure:%s", tc_logs(t));
    cr_assert_lt(fx_now_us() - t0, 1000000u, "EAUTH took over 1 s");
    cr_assert_eq(t->last_fail_code, REDQ_EAUTH, "%s",
                 redq_err_name(t->last_fail_code));
    cr_assert_eq(redq__conn_permanent_error(t->c), REDQ_EAUTH);
    cr_assert_eq(redq__conn_last_code(t->c), REDQ_EAUTH);
    cr_assert(fx_run_until(cond_fail3, t, 3000), "not retried");
    cr_assert_geq(tc_count(t, REDQ_LOG_ERROR, REDQ_EAUTH), 1);
    for (int i = 0; i < t->nlog; i++) {
        cr_assert_null(strstr(t->log_msg[i], "Wr0ngPw9"), "%s",
                       t->log_msg[i]);
        cr_assert_null(strstr(t->log_msg[i], "rq_wp"), "%s", t->log_msg[i]);
    }
    cr_assert_null(strstr(redq__conn_last_error(t->c), "Wr0ngPw9"));

    fx_cmd_ok("ACL SETUSER rq_wp >Wr0ngPw9");
    tc_wait_up(t, 3000);
    cr_assert_eq(redq__conn_permanent_error(t->c), 0);
    cr_assert_eq(redq__conn_last_code(t->c), 0);
}

/* SELECT refused by the ACL: REDQ_ENOPERM, permanent; a database the server
 * does not have: REDQ_ESELECT, permanent. */
Test(acl, select_refused_or_out_of_range_is_permanent)
{
    acl_user("rq_nosel", "nosel-pw", "~* +@all -select");
    tc_opts o = {0};
    tc *t = tc_open(url_for("rq_nosel", "nosel-pw", "/1"), &o);
    cr_assert(fx_run_until(cond_fail1, t, 2000), "no failure:%s", tc_logs(t));
    cr_assert_eq(t->last_fail_code, REDQ_ENOPERM, "%s: %s",
                 redq_err_name(t->last_fail_code), t->last_fail_msg);
    cr_assert_eq(redq__conn_permanent_error(t->c), REDQ_ENOPERM);
    cr_assert_eq(t->ups, 0);

    char url[128];
    snprintf(url, sizeof url, "%s/99", fx_url());
    tc *u = tc_open(url, &o);
    cr_assert(fx_run_until(cond_fail1, u, 2000), "no failure:%s", tc_logs(u));
    cr_assert_eq(u->last_fail_code, REDQ_ESELECT);
    cr_assert_eq(redq__conn_permanent_error(u->c), REDQ_ESELECT);

    /* Through the public producer: the specific code is logged. */
    fx_tracker *p = fx_tracker_new(1);
    redq_producer_options po;
    opts_for(&po, url_for("rq_nosel", "nosel-pw", "/1"));
    cr_assert_eq(fx_producer_new(p, &po), 0);
    cr_assert(fx_wait_log_code(p, REDQ_ENOPERM, 3000), "no REDQ_ENOPERM");
}

/* ---- lazy script loading ----------------------------------------------- */

/* EVALSHA <sha of script `which`> 1 <key>: any reply but NOSCRIPT shows the
 * script was there (the arguments are nonsense to the script). */
static void send_evalsha(tc *t, int which, rep *r)
{
    redq__scripts s;
    char *cmd = NULL;
    redq__scripts_init(&s);
    const char *argv[] = {"EVALSHA", s.sha[which], "1", "rq_test_key"};
    long long n = redisFormatCommandArgv(&cmd, 4, argv, NULL);
    cr_assert_gt(n, 0);
    cr_assert_eq(redq__conn_send_script(t->c, which, cmd, (size_t)n, 0,
                                        rep_cb, r),
                 0);
    free(cmd);
}

static bool is_noscript(const rep *r)
{
    return r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "NOSCRIPT", 8);
}

Test(acl, scripts_load_lazily_once_per_connection)
{
    tc_opts o = {0};
    tc *t = tc_open(fx_url(), &o);
    tc_wait_up(t, 3000);
    long long load0 = fx_commandstat_calls("script|load");

    /* Two uses in one iteration: one load, in front of the first. */
    rep a = {0}, b = {0};
    send_evalsha(t, REDQ__SCRIPT_PROMOTE, &a);
    send_evalsha(t, REDQ__SCRIPT_PROMOTE, &b);
    cr_assert(fx_run_until(cond_rep, &b, 2000));
    cr_assert_eq(a.done, 1);
    cr_assert(!is_noscript(&a) && !is_noscript(&b), "%s / %s", a.str, b.str);
    cr_assert_eq(fx_commandstat_calls("script|load") - load0, 1);

    /* Already loaded: nothing more. */
    rep c = {0};
    send_evalsha(t, REDQ__SCRIPT_PROMOTE, &c);
    cr_assert(fx_run_until(cond_rep, &c, 2000));
    cr_assert(!is_noscript(&c));
    cr_assert_eq(fx_commandstat_calls("script|load") - load0, 1);

    /* SCRIPT FLUSH: the one NOSCRIPT clears the memory, the next use loads
     * again and works without a reconnect. */
    fx_cmd_ok("SCRIPT FLUSH");
    rep d = {0}, e = {0};
    send_evalsha(t, REDQ__SCRIPT_PROMOTE, &d);
    cr_assert(fx_run_until(cond_rep, &d, 2000));
    cr_assert(is_noscript(&d), "%s", d.str);
    send_evalsha(t, REDQ__SCRIPT_PROMOTE, &e);
    cr_assert(fx_run_until(cond_rep, &e, 2000));
    cr_assert(!is_noscript(&e), "%s", e.str);
    cr_assert_eq(fx_commandstat_calls("script|load") - load0, 2);

    /* The caller's old answer to NOSCRIPT (reset and resend) still works:
     * a new connection loads again. */
    fx_cmd_ok("SCRIPT FLUSH");
    redq__conn_reset(t->c, REDQ_ESERVER, "test reset");
    t->ups = 0;
    tc_wait_up(t, 3000);
    rep f = {0};
    send_evalsha(t, REDQ__SCRIPT_PROMOTE, &f);
    cr_assert(fx_run_until(cond_rep, &f, 2000));
    cr_assert(!is_noscript(&f), "%s", f.str);
    cr_assert_eq(fx_commandstat_calls("script|load") - load0, 3);
    cr_assert_eq(t->downs, 1);
}

/* SCRIPT LOAD refused: the command's callback is told why (NOPERM), not
 * the NOSCRIPT that follows from it; and every use asks again. */
Test(acl, refused_script_load_names_the_real_cause)
{
    acl_user("rq_nol", "nol-pw", "~* +@all -script|load");
    tc_opts o = {0};
    tc *t = tc_open(url_for("rq_nol", "nol-pw", NULL), &o);
    tc_wait_up(t, 3000);
    long long load0 = fx_commandstat_calls("script|load");
    for (int i = 0; i < 2; i++) {
        rep r = {0};
        send_evalsha(t, REDQ__SCRIPT_ACK, &r);
        cr_assert(fx_run_until(cond_rep, &r, 2000));
        cr_assert_eq(r.type, REDIS_REPLY_ERROR);
        cr_assert(!strncmp(r.str, "NOPERM", 6), "got \"%s\"", r.str);
        cr_assert_not_null(strstr(r.str, "script|load"), "got \"%s\"", r.str);
    }
    /* Refused loads are not counted as calls; the connection stayed. */
    (void)load0;
    cr_assert_eq(t->downs, 0);
}

/* ========================================================================= */
/* A relay between redq and Redis: slow, or silent                           */
/* ========================================================================= */

/* Bytes per 10 ms tick each way; 0: as fast as possible; -1: stop reading
 * (a black hole: the sockets stay open). */
static atomic_int relay_c2s, relay_s2c;
static atomic_int relay_quit;
static int relay_lfd = -1, relay_port, relay_target;
static pthread_t relay_thr;
static bool relay_running;

static int listen_any(int *port)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    cr_assert_geq(fd, 0);
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof a), 0);
    cr_assert_eq(listen(fd, 8), 0);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    *port = ntohs(a.sin_port);
    return fd;
}

static int connect_port(int port)
{
    struct sockaddr_in a;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)port);
    if (connect(fd, (struct sockaddr *)&a, sizeof a) != 0) {
        close(fd);
        return -1;
    }
    return fd;
}

static bool write_all(int fd, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return false;
        p += w;
        n -= (size_t)w;
    }
    return true;
}

/* One client at a time; enough for one redq__conn. */
static void *relay_main(void *arg)
{
    (void)arg;
    static char buf[65536];
    while (!atomic_load(&relay_quit)) {
        struct pollfd lp = {relay_lfd, POLLIN, 0};
        if (poll(&lp, 1, 20) <= 0)
            continue;
        int cfd = accept(relay_lfd, NULL, NULL);
        if (cfd < 0)
            continue;
        int sfd = connect_port(relay_target);
        if (sfd < 0) {
            close(cfd);
            continue;
        }
        uint64_t tick = fx_now_us() / 10000;
        long used[2] = {0, 0};
        bool open = true;
        while (open && !atomic_load(&relay_quit)) {
            int rate[2] = {atomic_load(&relay_c2s), atomic_load(&relay_s2c)};
            int from[2] = {cfd, sfd}, to[2] = {sfd, cfd};
            uint64_t now_tick = fx_now_us() / 10000;
            if (now_tick != tick) {
                tick = now_tick;
                used[0] = used[1] = 0;
            }
            struct pollfd p[2];
            int np = 0, map[2];
            for (int d = 0; d < 2; d++)
                if (rate[d] == 0 || (rate[d] > 0 && used[d] < rate[d])) {
                    p[np].fd = from[d];
                    p[np].events = POLLIN;
                    p[np].revents = 0;
                    map[np++] = d;
                }
            if (poll(p, (nfds_t)np, 2) <= 0)
                continue;
            for (int i = 0; i < np; i++) {
                int d = map[i];
                if (!(p[i].revents & (POLLIN | POLLHUP | POLLERR)))
                    continue;
                size_t want = sizeof buf;
                if (rate[d] > 0 && (size_t)(rate[d] - used[d]) < want)
                    want = (size_t)(rate[d] - used[d]);
                ssize_t n = read(from[d], buf, want);
                if (n <= 0 || !write_all(to[d], buf, (size_t)n)) {
                    open = false;
                    break;
                }
                used[d] += n;
            }
        }
        close(cfd);
        close(sfd);
    }
    return NULL;
}

/* Start the relay to the fixture's server; returns its URL. */
static const char *relay_start(void)
{
    static char url[64];
    relay_target = fx_port();
    relay_lfd = listen_any(&relay_port);
    /* A small receive window, inherited by the accepted socket: what redq
     * sends is taken off its socket at the relay's pace, as a slow link
     * would, instead of vanishing into a multi-megabyte kernel buffer. */
    int rcv = 32768;
    setsockopt(relay_lfd, SOL_SOCKET, SO_RCVBUF, &rcv, sizeof rcv);
    atomic_store(&relay_quit, 0);
    cr_assert_eq(pthread_create(&relay_thr, NULL, relay_main, NULL), 0);
    relay_running = true;
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", relay_port);
    return url;
}

static void relay_stop(void)
{
    if (!relay_running)
        return;
    atomic_store(&relay_quit, 1);
    pthread_join(relay_thr, NULL);
    close(relay_lfd);
    relay_running = false;
}

#define BIG (4u << 20) /* 4 MiB: 2 s at 2 MB/s */

/* A reply that takes ~2 s to arrive, with a 300 ms command timeout: it keeps
 * flowing, so it must not be cut (and redone, and cut, forever). */
Test(conn_layer, slow_but_flowing_reply_is_not_cut)
{
    char *v = malloc(BIG);
    cr_assert_not_null(v);
    memset(v, 'v', BIG);
    redisReply *sr = fx_cmd_ok("SET big %b", v, (size_t)BIG);
    (void)sr;
    free(v);

    tc_opts o = {.command_timeout_ms = 300};
    tc *t = tc_open(relay_start(), &o);
    tc_wait_up(t, 3000);
    atomic_store(&relay_s2c, 20000); /* 2 MB/s */
    rep r = {0};
    const char *argv[] = {"GET", "big"};
    uint64_t t0 = fx_now_us();
    cr_assert_eq(redq__conn_sendv(t->c, 2, argv, NULL, 0, rep_cb, &r), 0);
    cr_assert(fx_run_until(cond_rep, &r, 20000), "no reply in 20 s");
    uint64_t took = fx_now_us() - t0;
    cr_assert_eq(r.type, REDIS_REPLY_STRING, "type %d (%s); log:%s", r.type,
                 r.str, tc_logs(t));
    cr_assert_eq(r.len, BIG);
    cr_assert_gt(took, 600000u, "the relay was not slow (%llu us)",
                 (unsigned long long)took);
    cr_assert_eq(t->downs, 0, "dropped:%s", tc_logs(t));
}

/* A command that takes ~2 s to write out (the peer reads slowly). */
Test(conn_layer, slow_but_flowing_write_is_not_cut)
{
    tc_opts o = {.command_timeout_ms = 300};
    tc *t = tc_open(relay_start(), &o);
    tc_wait_up(t, 3000);
    atomic_store(&relay_c2s, 20000);
    char *v = malloc(BIG);
    cr_assert_not_null(v);
    memset(v, 'w', BIG);
    const char *argv[] = {"SET", "bigw", v};
    size_t lens[] = {3, 4, BIG};
    rep r = {0};
    uint64_t t0 = fx_now_us();
    cr_assert_eq(redq__conn_sendv(t->c, 3, argv, lens, 0, rep_cb, &r), 0);
    free(v);
    cr_assert(fx_run_until(cond_rep, &r, 20000), "no reply in 20 s");
    cr_assert_eq(r.type, REDIS_REPLY_STATUS, "type %d (%s); log:%s", r.type,
                 r.str, tc_logs(t));
    cr_assert_gt(fx_now_us() - t0, 600000u, "the relay was not slow");
    cr_assert_eq(t->downs, 0, "dropped:%s", tc_logs(t));
    cr_assert_eq(fx_cmd_int("STRLEN bigw"), BIG);
}

/* A path that goes silent (black hole, sockets open) is still cut. */
Test(conn_layer, silent_connection_is_cut)
{
    tc_opts o = {.command_timeout_ms = 300};
    tc *t = tc_open(relay_start(), &o);
    tc_wait_up(t, 3000);
    atomic_store(&relay_s2c, -1);
    rep r = {0};
    const char *argv[] = {"PING"};
    uint64_t t0 = fx_now_us();
    cr_assert_eq(redq__conn_sendv(t->c, 1, argv, NULL, 0, rep_cb, &r), 0);
    cr_assert(fx_run_until(cond_down, t, 3000), "not cut within 3 s");
    uint64_t took = fx_now_us() - t0;
    cr_assert_eq(t->last_down_code, REDQ_ETIMEDOUT);
    cr_assert_eq(r.type, -1, "the PING got a reply");
    cr_assert(took >= 300000u - fx_clock_slack_us() && took < 1500000u,
              "cut after %llu us", (unsigned long long)took);
}

/* The silence that counts is the oldest command's: a blocked command whose
 * reply never comes is cut even while later commands keep being written out
 * behind it (their bytes moving says nothing about the reply it waits for).
 * Before, each drained write of the command behind moved the blocked one's
 * deadline, so a stream of writes kept a dead command alive without end. */
Test(conn_layer, bytes_of_later_commands_do_not_extend_a_silent_one)
{
    tc_opts o = {.command_timeout_ms = 300};
    tc *t = tc_open(relay_start(), &o);
    tc_wait_up(t, 3000);
    atomic_store(&relay_c2s, 20000); /* 2 MB/s: BIG takes ~2 s to leave */
    rep blocked = {0}, behind = {0};
    const char *bargv[] = {"BLPOP", "never:filled", "0"};
    cr_assert_eq(redq__conn_sendv(t->c, 3, bargv, NULL, 0, rep_cb, &blocked),
                 0);
    char *v = malloc(BIG);
    cr_assert_not_null(v);
    memset(v, 'b', BIG);
    const char *argv[] = {"SET", "behind", v};
    size_t lens[] = {3, 6, BIG};
    uint64_t t0 = fx_now_us();
    cr_assert_eq(redq__conn_sendv(t->c, 3, argv, lens, 0, rep_cb, &behind), 0);
    free(v);
    cr_assert(fx_run_until(cond_down, t, 5000), "not cut within 5 s");
    uint64_t took = fx_now_us() - t0;
    cr_assert_eq(t->last_down_code, REDQ_ETIMEDOUT, "log:%s", tc_logs(t));
    cr_assert_eq(blocked.type, -1, "the BLPOP got a reply");
    /* BIG at 2 MB/s is ~2 s of flowing bytes: the cut comes long before. */
    cr_assert(took >= 300000u - fx_clock_slack_us() && took < 1200000u,
              "cut after %llu us (the writes behind kept it alive)",
              (unsigned long long)took);
}

/* ========================================================================= */
/* A fake server: hostile or silent bytes                                     */
/* ========================================================================= */

static atomic_int fake_quit;
static int fake_lfd = -1, fake_port;
static pthread_t fake_thr;
static bool fake_running;
static const char *fake_answer; /* NULL: never answer */

static void *fake_main(void *arg)
{
    (void)arg;
    int fds[16];
    int n = 0;
    char buf[4096];
    while (!atomic_load(&fake_quit)) {
        struct pollfd p[17];
        p[0].fd = fake_lfd;
        p[0].events = POLLIN;
        for (int i = 0; i < n; i++) {
            p[i + 1].fd = fds[i];
            p[i + 1].events = POLLIN;
        }
        if (poll(p, (nfds_t)n + 1, 20) <= 0)
            continue;
        if ((p[0].revents & POLLIN) && n < 16) {
            int c = accept(fake_lfd, NULL, NULL);
            if (c >= 0)
                fds[n++] = c;
        }
        for (int i = 0; i < n; i++) {
            if (!(p[i + 1].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            ssize_t r = read(fds[i], buf, sizeof buf);
            if (r <= 0) {
                close(fds[i]);
                fds[i] = fds[--n];
                p[i + 1] = p[n + 1];
                i--;
                continue;
            }
            if (fake_answer != NULL)
                (void)write_all(fds[i], fake_answer, strlen(fake_answer));
        }
    }
    for (int i = 0; i < n; i++)
        close(fds[i]);
    return NULL;
}

static const char *fake_start(const char *answer)
{
    static char url[64];
    fake_answer = answer;
    fake_lfd = listen_any(&fake_port);
    atomic_store(&fake_quit, 0);
    cr_assert_eq(pthread_create(&fake_thr, NULL, fake_main, NULL), 0);
    fake_running = true;
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", fake_port);
    return url;
}

static void fake_stop(void)
{
    if (!fake_running)
        return;
    atomic_store(&fake_quit, 1);
    pthread_join(fake_thr, NULL);
    close(fake_lfd);
    fake_running = false;
}

/* "*2147483647\r\n" would have the reply arena ask for 16 GiB: refused as a
 * protocol error that drops the connection and says why. */
Test(conn_layer, absurd_reply_size_is_a_protocol_error)
{
    tc_opts o = {0}; /* no handshake commands: ready at once */
    tc *t = tc_open(fake_start("*2147483647\r\n"), &o);
    tc_wait_up(t, 3000);
    rep r = {0};
    const char *argv[] = {"PING"};
    cr_assert_eq(redq__conn_sendv(t->c, 1, argv, NULL, 0, rep_cb, &r), 0);
    cr_assert(fx_run_until(cond_down, t, 3000), "not dropped:%s", tc_logs(t));
    cr_assert_eq(t->last_down_code, REDQ_EPROTOCOL, "%s",
                 redq_err_name(t->last_down_code));
    cr_assert_eq(r.type, -1);
    cr_assert(tc_logged(t, "2147483647"), "no clear message:%s", tc_logs(t));
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    cr_assert_lt(ru.ru_maxrss, 512L * 1024, "peak RSS %ld KiB", ru.ru_maxrss);
}

/* A handshake that never answers, twice: the second message quotes the
 * first; formatting it into itself garbled it. */
Test(conn_layer, reconnect_error_text_is_not_garbled)
{
    tc_opts o = {.name = "rq-silent", .connect_timeout_ms = 150};
    tc *t = tc_open(fake_start(NULL), &o);
    cr_assert(fx_run_until(cond_fail3, t, 5000), "no failures:%s",
              tc_logs(t));
    char first[300], want[700];
    snprintf(first, sizeof first,
             "connect 127.0.0.1:%d: no handshake within 150 ms", fake_port);
    cr_assert_str_eq(t->fail_msgs[0], first);
    snprintf(want, sizeof want, "%s after %s", first, first);
    cr_assert_eq(strncmp(t->fail_msgs[1], want, strlen(want)), 0,
                 "second message garbled:\n  got  \"%s\"\n  want \"%s\"",
                 t->fail_msgs[1], want);
    cr_assert_eq(t->last_fail_code, REDQ_ETIMEDOUT);
    cr_assert_eq(redq__conn_permanent_error(t->c), 0);
}

/* ========================================================================= */
/* LOADING: a server restarting with a dataset that takes seconds to load     */
/* ========================================================================= */

static pid_t own_pid;

static void nap_ms(long ms)
{
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static pid_t spawn_server(int port, const char *dir, bool slow_load)
{
    const char *bin = getenv("REDQ_TEST_REDIS_SERVER");
    char portbuf[16], logf[600];
    snprintf(portbuf, sizeof portbuf, "%d", port);
    snprintf(logf, sizeof logf, "%s/own.log", dir);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0) {
        const char *argv[] = {bin,
                              "--port", portbuf,
                              "--bind", "127.0.0.1",
                              "--dir", dir,
                              "--save", "",
                              "--appendonly", "no",
                              "--logfile", logf,
                              "--enable-debug-command", "yes",
                              slow_load ? "--key-load-delay" : NULL,
                              "10",
                              /* serve clients (with -LOADING) while
                               * loading, not only after it */
                              "--loading-process-events-interval-bytes",
                              "1024",
                              NULL};
        union {
            const char **c;
            char *const *v;
        } av = {.c = argv};
        execv(bin, av.v);
        _exit(127);
    }
    return pid;
}

static void stop_own(void)
{
    if (own_pid > 0) {
        kill(own_pid, SIGKILL);
        waitpid(own_pid, NULL, 0);
        own_pid = 0;
    }
}

static redisContext *ctl_to(int port, int ms)
{
    uint64_t end = fx_now_us() + (uint64_t)ms * 1000;
    while (fx_now_us() < end) {
        struct timeval tv = {1, 0};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", port, tv);
        if (c && !c->err)
            return c;
        if (c)
            redisFree(c);
        nap_ms(20);
    }
    return NULL;
}

Test(conn_layer, loading_is_waited_out, .timeout = 120)
{
    /* A dataset of 30k keys: with 10 us per key it loads in ~2-3 s. */
    char dir[512];
    snprintf(dir, sizeof dir, "%s/own", fx_dir());
    mkdir(dir, 0700);
    int port = fx_free_port();
    own_pid = spawn_server(port, dir, false);
    redisContext *c = ctl_to(port, 5000);
    cr_assert_not_null(c, "own server did not come up");
    redisReply *r = redisCommand(c, "DEBUG POPULATE 30000");
    cr_assert(r && r->type == REDIS_REPLY_STATUS, "DEBUG POPULATE: %s",
              r ? r->str : c->errstr);
    freeReplyObject(r);
    r = redisCommand(c, "SAVE");
    cr_assert(r && r->type == REDIS_REPLY_STATUS);
    freeReplyObject(r);
    redisFree(c);
    stop_own();
    own_pid = spawn_server(port, dir, true);

    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    fx_tracker *t = fx_tracker_new(10);
    redq_producer_options o;
    opts_for(&o, url);
    o.reconnect_max_ms = 200;
    o.message_timeout_ms = 60000;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    fx_produce_range(t, "q", 0, 10, 0);
    bool done = fx_wait_reports(t, 10, 60000);
    /* Read the server's state before stopping it. */
    c = ctl_to(port, 2000);
    long long keys = -1, llen = -1;
    if (c) {
        r = redisCommand(c, "DBSIZE");
        if (r && r->type == REDIS_REPLY_INTEGER)
            keys = r->integer;
        if (r)
            freeReplyObject(r);
        r = redisCommand(c, "LLEN q");
        if (r && r->type == REDIS_REPLY_INTEGER)
            llen = r->integer;
        if (r)
            freeReplyObject(r);
        redisFree(c);
    }
    fx_close(t);
    fx_wait_closed(t, 5000);
    stop_own();
    cr_assert(done, "%zu of 10 reports within 60 s", t->reports);
    fx_assert_reported(t, 0, 10, 0);
    cr_assert_eq(llen, 10);
    /* The dataset, q, and q's meta hash (its "pushed" counter). */
    cr_assert_eq(keys, 30002, "dataset not loaded (%lld keys)", keys);
    /* LOADING was met, and said once (WARN), not once per attempt. */
    cr_assert_eq(t->log_by_code[-REDQ_ESERVER], 1,
                 "LOADING logged %u times at WARN (first: %s)",
                 t->log_by_code[-REDQ_ESERVER], t->log_first[-REDQ_ESERVER]);
    cr_assert_not_null(strstr(t->log_first[-REDQ_ESERVER], "LOADING"), "%s",
                       t->log_first[-REDQ_ESERVER]);
}

/*
 * BUSY in the handshake (a script runs past busy-reply-threshold: CLIENT
 * SETNAME is refused with -BUSY): waited out with the backoff, said once at
 * WARN, not permanent; ready as soon as the script is killed.
 */
static const char *const busy_args[] = {"--busy-reply-threshold", "100",
                                        NULL};

Test(conn_layer, busy_handshake_is_waited_out, .init = fx_setup_noserver)
{
    fx_server_start(busy_args);
    /* The endless script, from a socket of its own that never reads. */
    int fd = connect_port(fx_port());
    cr_assert_geq(fd, 0);
    static const char eval[] =
        "*3\r\n$4\r\nEVAL\r\n$17\r\nwhile true do end\r\n$1\r\n0\r\n";
    cr_assert(write_all(fd, eval, sizeof eval - 1));
    /* Busy once PING says so. */
    uint64_t end = fx_now_us() + 5000000u;
    bool busy = false;
    while (!busy && fx_now_us() < end) {
        redisReply *r = fx_cmd("PING");
        busy = r->type == REDIS_REPLY_ERROR && !strncmp(r->str, "BUSY", 4);
        if (!busy)
            nap_ms(20);
    }
    cr_assert(busy, "the server never became busy");

    tc_opts o = {.name = "rq-busy"};
    tc *t = tc_open(fx_url(), &o);
    cr_assert(fx_run_until(cond_fail3, t, 5000), "no failed attempts:%s",
              tc_logs(t));
    cr_assert_eq(t->ups, 0);
    cr_assert_eq(redq__conn_permanent_error(t->c), 0);
    cr_assert_eq(tc_count(t, REDQ_LOG_WARN, REDQ_ESERVER), 1,
                 "BUSY not said exactly once at WARN:%s", tc_logs(t));
    cr_assert_eq(tc_count(t, REDQ_LOG_ERROR, REDQ_ESERVER), 0, "%s",
                 tc_logs(t));
    cr_assert(tc_logged(t, "BUSY"), "%s", tc_logs(t));

    fx_cmd_ok("SCRIPT KILL");
    tc_wait_up(t, 3000);
    close(fd);
}

/* ========================================================================= */
/* SIGPIPE                                                                    */
/* ========================================================================= */

static void child_up(redq__conn *c, void *arg)
{
    (void)c;
    (*(int *)arg)++;
}

static void child_reply(redq__conn *c, void *reply, void *arg)
{
    (void)c;
    (void)reply;
    (*(int *)arg)++;
}

/* Runs in the child: a connection on the unix socket whose server end a
 * CLIENT KILL has closed, written to before it could notice (the write is
 * the first event of the next loop iteration, ahead of the read that would
 * see the close). On a unix socket that write raises SIGPIPE at once.
 * Exit 0 if still alive after 10 of them. */
static void sigpipe_child(const char *sock_path)
{
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);

    struct event_base *base = event_base_new();
    char url[600], err[256];
    redq__url u;
    snprintf(url, sizeof url, "unix://%s", sock_path);
    if (redq__url_parse(&u, url, err, sizeof err) != 0)
        _exit(10);
    redq__conn_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.url = &u;
    cfg.connect_timeout_ms = 2000;
    cfg.command_timeout_ms = 2000;
    cfg.reconnect_min_ms = 10;
    cfg.reconnect_max_ms = 20;
    int ups = 0, replies = 0;
    redq__conn *c;
    if (redq__conn_new(&c, base, &cfg, child_up, NULL, &ups) != 0)
        _exit(11);
    redq__conn_start(c);
    redisContext *ctl = redisConnectUnix(sock_path);
    if (!ctl || ctl->err)
        _exit(12);
    struct timeval tick = {0, 5000};
    for (int round = 0; round < 10; round++) {
        for (int i = 0; i < 400 && !(ups > round && redq__conn_ready(c));
             i++) {
            event_base_loopexit(base, &tick);
            event_base_dispatch(base);
        }
        if (!redq__conn_ready(c))
            _exit(13);
        redisReply *r =
            redisCommand(ctl, "CLIENT KILL TYPE normal SKIPME yes");
        if (!r || r->type != REDIS_REPLY_INTEGER || r->integer != 1)
            _exit(14);
        freeReplyObject(r);
        const char *argv[] = {"PING"};
        if (redq__conn_sendv(c, 1, argv, NULL, 0, child_reply, &replies) != 0)
            _exit(15);
        for (int i = 0; i < 400 && replies <= round; i++) {
            event_base_loopexit(base, &tick);
            event_base_dispatch(base);
        }
    }
    _exit(replies == 10 ? 0 : 16);
}

Test(conn_layer, sigpipe_does_not_kill_the_embedder)
{
    const char *sock = fx_unix_path();
    fflush(NULL);
    pid_t pid = fork();
    cr_assert_geq(pid, 0);
    if (pid == 0)
        sigpipe_child(sock);
    int status = 0;
    uint64_t end = fx_now_us() + 60000000u;
    pid_t w = 0;
    while ((w = waitpid(pid, &status, WNOHANG)) == 0 && fx_now_us() < end)
        nap_ms(10);
    if (w == 0) {
        kill(pid, SIGKILL);
        waitpid(pid, &status, 0);
        cr_assert_fail("the child did not finish within 60 s");
    }
    cr_assert(!WIFSIGNALED(status), "the child died of signal %d%s",
              WTERMSIG(status),
              WTERMSIG(status) == SIGPIPE ? " (SIGPIPE)" : "");
    cr_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0,
              "the child exited %d", WEXITSTATUS(status));
}
