/*
 * The producer's connection against a real redis-server: killed
 * connections, a server that comes up late or goes away, AUTH and ACL users,
 * unix sockets, database selection and the delivery timeout.
 */
#include <criterion/criterion.h>

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fixture.h"

TestSuite(connection, .init = fx_setup, .fini = fx_teardown, .timeout = 60);

static void new_producer(fx_tracker *t, redq_producer_options *o)
{
    int rc = fx_producer_new(t, o);
    cr_assert(rc == 0, "redq_producer_new(%s): %s", o->url ? o->url : "(null)",
              redq_err_name(rc));
}

/* Fast reconnects keep the tests short. */
static void opts_for(redq_producer_options *o, const char *url)
{
    redq_producer_options_init(o);
    o->url = url;
    o->reconnect_min_ms = 20;
    o->reconnect_max_ms = 100;
    o->log_level = REDQ_LOG_DEBUG;
}

static long long ms_between(uint64_t from_us, uint64_t to_us)
{
    return ((long long)to_us - (long long)from_us) / 1000;
}

/* The CLIENT LIST line of the client named `name`, copied into buf;
 * false when there is none. */
static bool client_line(const char *name, char *buf, size_t len)
{
    redisReply *r = fx_cmd_ok("CLIENT LIST");
    char key[96];
    snprintf(key, sizeof key, " name=%s ", name);
    const char *at = strstr(r->str, key);
    if (!at)
        return false;
    const char *start = at;
    while (start > r->str && start[-1] != '\n')
        start--;
    const char *end = strchr(at, '\n');
    size_t n = end ? (size_t)(end - start) : strlen(start);
    snprintf(buf, len, "%.*s", (int)n, start);
    return true;
}

/* Which log codes the producer reported, for failure messages. */
static const char *logged_codes(fx_tracker *t)
{
    static char buf[512];
    size_t off = 0;
    buf[0] = '\0';
    for (int i = 1; i < FX_MAX_CODE && off < sizeof buf; i++)
        if (t->log_by_code[i]) {
            int n = snprintf(buf + off, sizeof buf - off, "%s%s x%u (\"%s\")",
                             off ? ", " : "", redq_err_name(-i),
                             t->log_by_code[i], t->log_first[i]);
            if (n > 0)
                off += (size_t)n;
        }
    return off ? buf : "none";
}

static void expect_timing(fx_tracker *t, size_t from, size_t to, int lo_ms,
                          int hi_ms)
{
    for (size_t s = from; s < to; s++) {
        long long d = ms_between(t->prod_us[s], t->rep_us[s]);
        cr_assert(t->rep_us[s] + fx_clock_slack_us() >=
                          t->prod_us[s] + (uint64_t)lo_ms * 1000 &&
                      d <= hi_ms,
                  "seq %zu reported %lld ms after produce, expected %d..%d ms",
                  s, d, lo_ms, hi_ms);
    }
}

/* ---- lost connections --------------------------------------------------- */

Test(connection, client_kill_midstream_loses_nothing)
{
    const size_t n = 20000;
    fx_tracker *t = fx_tracker_new(n);
    redq_producer_options o;
    opts_for(&o, fx_url());
    o.client_name = "redq-kill-test";
    o.log_level = REDQ_LOG_INFO;
    /* Small batches, few in flight: many round trips, so the kill lands in
     * the middle of the stream with commands in flight. */
    o.batch_max_msgs = 10;
    o.max_inflight_batches = 2;
    new_producer(t, &o);
    cr_assert(fx_wait_connected(t, 5000), "not connected within 5 s: %s",
              logged_codes(t));
    char line[1024];
    cr_assert(client_line("redq-kill-test", line, sizeof line),
              "no client named redq-kill-test in CLIENT LIST");

    fx_produce_range(t, "q", 0, n, 0);
    cr_assert(fx_wait_reports(t, n / 10, 10000), "%zu reports after 10 s",
              t->reports);
    size_t at_kill = t->reports;
    /* The control client is not killed: SKIPME defaults to yes. */
    long long killed = fx_cmd_int("CLIENT KILL TYPE normal");
    cr_assert(killed >= 1, "CLIENT KILL TYPE normal killed %lld clients",
              killed);
    cr_assert(at_kill < n, "all %zu delivered before the kill", n);

    cr_assert(fx_wait_reports(t, n, 30000),
              "%zu of %zu reports 30 s after the kill (%zu at the kill); "
              "log: %s",
              t->reports, n, at_kill, logged_codes(t));
    fx_assert_reported(t, 0, n, 0);
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.disconnects >= 1 && st.connects >= 2,
              "stats: disconnects %llu connects %llu",
              (unsigned long long)st.disconnects,
              (unsigned long long)st.connects);

    /* At least once: every message is in the list, duplicates allowed, and
     * first occurrences keep the produce order. */
    redisReply *r = fx_cmd("LRANGE q 0 -1");
    cr_assert(r->type == REDIS_REPLY_ARRAY && r->elements >= n,
              "q has %zu elements for %zu messages", r->elements, n);
    unsigned char *seen = calloc(n, 1);
    cr_assert(seen);
    size_t next = 0, missing = 0, strays = 0, disorder = 0;
    size_t first_disorder = 0;
    for (size_t i = r->elements; i-- > 0;) {
        redisReply *e = r->element[i];
        size_t seq = 0;
        int used = 0;
        if (e->type == REDIS_REPLY_STRING && e->len > 2 && e->str[0] == 'q' &&
            e->str[1] == '|' && sscanf(e->str + 2, "%zu|%n", &seq, &used) == 1 &&
            used > 0 && (size_t)used + 2 == e->len && seq < n) {
            if (!seen[seq]) {
                seen[seq] = 1;
                if (seq != next && disorder++ == 0)
                    first_disorder = seq;
                next = seq + 1;
            }
        } else {
            strays++;
        }
    }
    for (size_t s = 0; s < n; s++)
        missing += !seen[s];
    free(seen);
    cr_assert(strays == 0, "%zu elements in q are not messages", strays);
    cr_assert(missing == 0, "%zu of %zu messages missing from q", missing, n);
    cr_assert(disorder == 0,
              "%zu messages out of produce order (first occurrences); first: "
              "seq %zu",
              disorder, first_disorder);
}

Test(connection, server_not_up_at_start, .init = fx_setup_noserver)
{
    const size_t n = 100;
    int port = fx_free_port();
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", port);
    fx_tracker *t = fx_tracker_new(n);
    redq_producer_options o;
    opts_for(&o, url);
    new_producer(t, &o);

    fx_produce_range(t, "q", 0, n, 0);
    cr_assert(fx_wait_log_code(t, REDQ_ECONNECT, 5000),
              "no REDQ_ECONNECT logged within 5 s; log: %s", logged_codes(t));
    char portstr[16];
    snprintf(portstr, sizeof portstr, "%d", port);
    cr_assert(strstr(t->log_first[-REDQ_ECONNECT], portstr) != NULL,
              "connect failure message \"%s\" does not name the port %s",
              t->log_first[-REDQ_ECONNECT], portstr);
    cr_assert(t->reports == 0, "%zu reports without a server", t->reports);
    cr_assert(fx_stats(t).connected == 0);

    fx_server_start_on_port(port, NULL);
    cr_assert(fx_wait_reports(t, n, 10000),
              "%zu of %zu reports 10 s after the server came up; log: %s",
              t->reports, n, logged_codes(t));
    fx_assert_reported(t, 0, n, 0);
    fx_assert_list_range("q", 0, n);
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.connects >= 1 && st.connected == 1);
}

Test(connection, server_restart_is_survived)
{
    fx_tracker *t = fx_tracker_new(20);
    redq_producer_options o;
    opts_for(&o, fx_url());
    new_producer(t, &o);
    fx_produce_range(t, "q", 0, 10, 0);
    cr_assert(fx_wait_reports(t, 10, 5000), "%zu of 10 reports", t->reports);
    fx_assert_reported(t, 0, 10, 0);

    fx_server_stop();
    /* Produced while the server is down: they wait for the reconnect. */
    fx_produce_range(t, "q", 10, 20, 0);
    fx_run_for(200);
    cr_assert(t->reports == 10, "reports while the server was down");
    fx_server_restart(); /* same port, empty data set */
    cr_assert(fx_wait_reports(t, 20, 10000),
              "%zu of 20 reports 10 s after the restart; log: %s", t->reports,
              logged_codes(t));
    fx_assert_reported(t, 10, 20, 0);
    fx_assert_list_range("q", 10, 20);
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.disconnects >= 1 && st.connects >= 2,
              "stats: disconnects %llu connects %llu",
              (unsigned long long)st.disconnects,
              (unsigned long long)st.connects);
}

/* ---- delivery timeout --------------------------------------------------- */

Test(connection, delivery_timeout_without_a_server, .init = fx_setup_noserver)
{
    const size_t n = 10;
    char url[64];
    snprintf(url, sizeof url, "redis://127.0.0.1:%d", fx_free_port());
    fx_tracker *t = fx_tracker_new(n);
    redq_producer_options o;
    opts_for(&o, url);
    o.message_timeout_ms = 300;
    new_producer(t, &o);

    fx_produce_range(t, "q", 0, n, 0);
    cr_assert(fx_wait_reports(t, n, 5000), "%zu of %zu reports after 5 s",
              t->reports, n);
    fx_assert_reported(t, 0, n, REDQ_ETIMEDOUT);
    expect_timing(t, 0, n, 300, 300 + 1500);
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.failed == n && st.stored == 0 && st.pending_msgs == 0,
              "stats: failed %llu stored %llu pending %zu",
              (unsigned long long)st.failed, (unsigned long long)st.stored,
              st.pending_msgs);
}

Test(connection, delivery_timeout_after_the_server_went_away)
{
    fx_tracker *t = fx_tracker_new(11);
    redq_producer_options o;
    opts_for(&o, fx_url());
    o.message_timeout_ms = 400;
    new_producer(t, &o);
    cr_assert(fx_produce(t, "q", 0, 0) == 0);
    cr_assert(fx_wait_reports(t, 1, 5000), "no report within 5 s");
    fx_assert_reported(t, 0, 1, 0);

    fx_server_stop();
    fx_produce_range(t, "q", 1, 11, 0);
    cr_assert(fx_wait_reports(t, 11, 5000), "%zu of 11 reports after 5 s",
              t->reports);
    fx_assert_reported(t, 1, 11, REDQ_ETIMEDOUT);
    expect_timing(t, 1, 11, 400, 400 + 1500);
    cr_assert(fx_stats(t).disconnects >= 1);
}

/* ---- authentication ----------------------------------------------------- */

static const char *const requirepass[] = {"--requirepass", "secret", NULL};

static bool mentions_auth(const char *s)
{
    return fx_contains_nocase(s, "auth") || fx_contains_nocase(s, "wrongpass") ||
           fx_contains_nocase(s, "password");
}

Test(connection, wrong_password_is_reported, .init = fx_setup_noserver)
{
    fx_server_start(requirepass);
    char url[96];
    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", fx_port());
    fx_tracker *t = fx_tracker_new(5);
    redq_producer_options o;
    opts_for(&o, url);
    o.message_timeout_ms = 500;
    new_producer(t, &o);

    fx_produce_range(t, "q", 0, 5, 0);
    cr_assert(fx_wait_log_code(t, REDQ_EAUTH, 5000),
              "no REDQ_EAUTH logged within 5 s; log: %s", logged_codes(t));
    cr_assert(fx_wait_reports(t, 5, 5000), "%zu of 5 reports after 5 s",
              t->reports);
    fx_assert_reported(t, 0, 5, REDQ_ETIMEDOUT);
    expect_timing(t, 0, 5, 500, 500 + 2000);
    cr_assert(mentions_auth(t->last_errstr),
              "errstr \"%s\" does not mention the authentication failure",
              t->last_errstr);
    cr_assert(fx_llen("q") == 0);
    redq_producer_stats st = fx_stats(t);
    cr_assert(st.connected == 0 && st.connects == 0,
              "counted as connected with a wrong password");
}

Test(connection, right_password_in_url_or_option, .init = fx_setup_noserver)
{
    fx_server_start(requirepass);
    char url[96];
    snprintf(url, sizeof url, "redis://:secret@127.0.0.1:%d", fx_port());
    fx_tracker *a = fx_tracker_new(5);
    redq_producer_options o;
    opts_for(&o, url);
    new_producer(a, &o);

    /* opts.password overrides the URL's. */
    snprintf(url, sizeof url, "redis://:wrong@127.0.0.1:%d", fx_port());
    fx_tracker *b = fx_tracker_new(10);
    opts_for(&o, url);
    o.password = "secret";
    new_producer(b, &o);

    fx_produce_range(a, "q", 0, 5, 0);
    fx_produce_range(b, "q2", 5, 10, 0);
    cr_assert(fx_wait_reports(a, 5, 5000), "URL password: %zu of 5; log: %s",
              a->reports, logged_codes(a));
    cr_assert(fx_wait_reports(b, 5, 5000), "opts.password: %zu of 5; log: %s",
              b->reports, logged_codes(b));
    fx_assert_reported(a, 0, 5, 0);
    fx_assert_reported(b, 5, 10, 0);
    fx_assert_list_range("q", 0, 5);
    fx_assert_list_range("q2", 5, 10);
    cr_assert(a->log_by_code[-REDQ_EAUTH] == 0 &&
                  b->log_by_code[-REDQ_EAUTH] == 0,
              "AUTH failures logged with the right password");
}

Test(connection, acl_user_with_encoded_password)
{
    /* '@', ':' and '/' must be %XX-encoded in the URL. */
    fx_cmd_ok("ACL SETUSER alice on >p@ss:w/rd ~* +@all");
    char url[128];
    snprintf(url, sizeof url, "redis://alice:p%%40ss%%3Aw%%2Frd@127.0.0.1:%d",
             fx_port());
    fx_tracker *t = fx_tracker_new(10);
    redq_producer_options o;
    opts_for(&o, url);
    o.client_name = "redq-alice";
    new_producer(t, &o);
    fx_produce_range(t, "q", 0, 10, 0);
    cr_assert(fx_wait_reports(t, 10, 5000), "%zu of 10 reports; log: %s",
              t->reports, logged_codes(t));
    fx_assert_reported(t, 0, 10, 0);
    fx_assert_list_range("q", 0, 10);
    char line[1024];
    cr_assert(client_line("redq-alice", line, sizeof line),
              "no client named redq-alice");
    cr_assert(strstr(line, " user=alice ") != NULL,
              "the producer is not logged in as alice: %s", line);

    /* The same user with a wrong password is refused. */
    snprintf(url, sizeof url, "redis://alice:nope@127.0.0.1:%d", fx_port());
    fx_tracker *w = fx_tracker_new(1);
    opts_for(&o, url);
    new_producer(w, &o);
    cr_assert(fx_wait_log_code(w, REDQ_EAUTH, 5000),
              "no REDQ_EAUTH for alice with a wrong password; log: %s",
              logged_codes(w));
}

/* ---- addresses and databases -------------------------------------------- */

Test(connection, unix_socket_url)
{
    char url[256];
    snprintf(url, sizeof url, "unix://%s", fx_unix_path());
    fx_tracker *t = fx_tracker_new(10);
    redq_producer_options o;
    opts_for(&o, url);
    o.client_name = "redq-unix";
    new_producer(t, &o);
    fx_produce_range(t, "q", 0, 10, 0);
    cr_assert(fx_wait_reports(t, 10, 5000), "%zu of 10 reports; log: %s",
              t->reports, logged_codes(t));
    fx_assert_reported(t, 0, 10, 0);
    fx_assert_list_range("q", 0, 10);
    char line[1024], addr[256];
    cr_assert(client_line("redq-unix", line, sizeof line),
              "no client named redq-unix");
    snprintf(addr, sizeof addr, "addr=%s:", fx_unix_path());
    cr_assert(strstr(line, addr) != NULL, "not connected over the socket: %s",
              line);
}

Test(connection, unix_socket_url_with_db)
{
    char url[256];
    snprintf(url, sizeof url, "unix://%s?db=2", fx_unix_path());
    fx_tracker *t = fx_tracker_new(5);
    redq_producer_options o;
    opts_for(&o, url);
    new_producer(t, &o);
    fx_produce_range(t, "q", 0, 5, 0);
    cr_assert(fx_wait_reports(t, 5, 5000), "%zu of 5 reports; log: %s",
              t->reports, logged_codes(t));
    fx_assert_reported(t, 0, 5, 0);
    cr_assert(fx_llen("q") == 0, "messages went to db 0");
    fx_cmd_ok("SELECT 2");
    fx_assert_list_range("q", 0, 5);
}

Test(connection, db_in_url_is_selected)
{
    char url[96];
    snprintf(url, sizeof url, "%s/3", fx_url());
    fx_tracker *t = fx_tracker_new(5);
    redq_producer_options o;
    opts_for(&o, url);
    new_producer(t, &o);
    fx_produce_range(t, "q", 0, 5, 0);
    cr_assert(fx_wait_reports(t, 5, 5000), "%zu of 5 reports; log: %s",
              t->reports, logged_codes(t));
    fx_assert_reported(t, 0, 5, 0);
    cr_assert(fx_llen("q") == 0, "messages went to db 0");
    fx_cmd_ok("SELECT 3");
    fx_assert_list_range("q", 0, 5);
}

Test(connection, unselectable_db_is_reported)
{
    /* The server has 16 databases: 99 is refused by SELECT. */
    char url[96];
    snprintf(url, sizeof url, "%s/99", fx_url());
    fx_tracker *t = fx_tracker_new(1);
    redq_producer_options o;
    opts_for(&o, url);
    o.message_timeout_ms = 300;
    int rc = fx_producer_new(t, &o);
    if (rc == REDQ_EINVAL)
        return; /* refusing it up front is fine too */
    cr_assert(rc == 0, "redq_producer_new: %s", redq_err_name(rc));
    cr_assert(fx_produce(t, "q", 0, 0) == 0);
    cr_assert(fx_wait_log_code(t, REDQ_ESELECT, 5000),
              "no REDQ_ESELECT logged within 5 s; log: %s", logged_codes(t));
    cr_assert(fx_wait_reports(t, 1, 5000), "no report within 5 s");
    fx_assert_reported(t, 0, 1, REDQ_ETIMEDOUT);
}

/* ---- a server that refuses writes -------------------------------------- */

/*
 * A replica answers LPUSH with READONLY: the batch was not applied, so the
 * producer keeps it and redoes the connection. That must back off (a fresh
 * connection to the same replica fails the same way) rather than loop, and
 * once the server takes writes again every message must arrive.
 */
Test(connection, readonly_replica_backs_off_then_delivers)
{
    fx_tracker *t = fx_tracker_new(20);
    redq_producer_options o;
    int dead = fx_free_port();
    redq_producer_stats st;

    opts_for(&o, fx_url());
    o.reconnect_min_ms = 50;
    o.reconnect_max_ms = 400;
    new_producer(t, &o);
    fx_cmd_ok("REPLICAOF 127.0.0.1 %d", dead); /* nobody there: stays read-only */
    fx_produce_range(t, "q", 0, 20, 0);
    fx_run_for(1500);
    st = fx_stats(t);
    cr_assert_eq(t->reports, 0, "reported while the server refused writes");
    cr_assert(st.connects >= 2, "never retried: %llu connects",
              (unsigned long long)st.connects);
    /* 50, 100, 200, 400, 400.. ms: about 6 in 1.5 s; a hot loop makes
     * thousands. */
    cr_assert(st.connects <= 12, "no backoff: %llu connects in 1.5 s",
              (unsigned long long)st.connects);
    fx_cmd_ok("REPLICAOF NO ONE");
    cr_assert(fx_wait_reports(t, 20, 5000), "%zu of 20 reports", t->reports);
    fx_assert_reported(t, 0, 20, 0);
    fx_assert_list_range("q", 0, 20);
}

/* ---- name resolution ---------------------------------------------------- */

/* A host name goes through evdns (from /etc/hosts here, so no packet leaves
 * the machine) before hiredis sees a numeric address. */
Test(connection, host_name_is_resolved)
{
    fx_tracker *t = fx_tracker_new(10);
    redq_producer_options o;
    char url[64];

    snprintf(url, sizeof url, "redis://localhost:%d", fx_port());
    opts_for(&o, url);
    new_producer(t, &o);
    fx_produce_range(t, "q", 0, 10, 0);
    cr_assert(fx_wait_reports(t, 10, 5000), "%zu of 10 reports; logged: %s",
              t->reports, logged_codes(t));
    fx_assert_reported(t, 0, 10, 0);
    fx_assert_list_range("q", 0, 10);
}
