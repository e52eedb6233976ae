/*
 * The outsider's tests, second file (test_outsider.c has the first and the
 * rules): partitioned queues on one server, and the later rounds where
 * partitions meet ids, delays, retries, stops, flushes and removals.
 */
#include "test_outsider.h"

TestSuite(outsider_part, .init = fx_setup, .fini = fx_teardown, .timeout = 120);

/* ======================================================================== */
/* Partitioned queues on one server                                          */
/* ======================================================================== */

Test(outsider_part, set_partitions_bounds_and_previous_count)
{
    adm d;
    adm_open(&d);
    int rc = adm_set_parts(&d, "pb", 0);
    cr_assert(rc == REDQ_EINVAL || (rc == 0 && d.status == REDQ_EINVAL),
              "P=0: rc %d status %d", rc, d.status);
    rc = adm_set_parts(&d, "pb", 257);
    cr_assert(rc == REDQ_EINVAL || (rc == 0 && d.status == REDQ_EINVAL),
              "P=257: rc %d status %d", rc, d.status);
    cr_assert_eq(adm_set_parts(&d, "pb", 4), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    cr_assert_eq(d.n, 1, "previous count %llu", (unsigned long long)d.n);
    cr_assert_eq(adm_set_parts(&d, "pb", 256), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    cr_assert_eq(d.n, 4);
    cr_assert_eq(adm_set_parts(&d, "pb", 2), 0);
    cr_assert_eq(d.n, 256);
    adm_close(&d);
}

/* A producer may not use another queue's partition by name. */
Test(outsider_part, partition_names_are_reserved_for_producers)
{
    fx_tracker *t = fx_tracker_new(1);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    cr_assert_eq(redq_produce(t->p, "{1800}jobs~1", "x", 1, NULL),
                 REDQ_EINVAL);
    cr_assert_eq(redq_produce_key(t->p, "{1800}jobs~1", "k", 1, "x", 1, NULL),
                 REDQ_EINVAL);
    cr_assert_eq(redq_produce_key(t->p, "jobs", NULL, 2, "x", 1, NULL),
                 REDQ_EINVAL, "key NULL with keylen > 0");
}

/* redq_produce_key: "messages of one key keep their produce order among
 * themselves while P does not change"; consumers take "from every
 * partition"; redq_msg_queue() "is always the logical name". */
Test(outsider_part, produce_key_order_per_key_every_partition_consumed)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "kq", 4), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    size_t N = 800, K = 16;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, "kq", s, K), 0);
    cr_assert(fx_wait_reports(t, N, 10000));
    cr_assert_eq(t->failed, 0);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"kq"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 15000), "consumed %zu of %zu", c->got, N);
    fx_run_for(200);
    cr_assert_eq(c->got, N, "duplicates: %zu", c->got);
    size_t last[64];
    int part_of[64];
    for (size_t k = 0; k < K; k++) {
        last[k] = (size_t)-1;
        part_of[k] = -1;
    }
    int parts_seen[4] = {0};
    for (size_t i = 0; i < N; i++) {
        cr_assert_str_eq(c->queue[i], "kq");
        size_t s = seq_of(c->payload[i]);
        cr_assert_lt(s, N);
        size_t k = s % K;
        cr_assert_geq(c->part[i], 0);
        cr_assert_lt(c->part[i], 4, "partition %d", c->part[i]);
        parts_seen[c->part[i]]++;
        if (part_of[k] == -1)
            part_of[k] = c->part[i];
        cr_assert_eq(c->part[i], part_of[k], "key %zu in two partitions", k);
        if (last[k] != (size_t)-1)
            cr_assert_gt(s, last[k], "key %zu: %zu after %zu", k, s, last[k]);
        last[k] = s;
    }
    int used = 0;
    for (int i = 0; i < 4; i++)
        used += parts_seen[i] > 0;
    cr_assert_geq(used, 2, "16 keys over 4 partitions used only %d", used);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

typedef struct qname_check {
    size_t wrong;
} qname_check;

static qname_check QN;
static void qname_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)t;
    (void)p;
    if (strcmp(r->queue, "rp") != 0)
        QN.wrong++;
}

typedef struct part_seen {
    ctr *c;
    int part;
    size_t from;
} part_seen;

static bool saw_partition(void *arg)
{
    part_seen *w = arg;
    for (size_t i = w->from; i < w->c->got && i < CMAX; i++)
        if (w->c->part[i] == w->part)
            return true;
    return false;
}

Test(outsider_part, raise_and_lower_partitions_under_load_nothing_lost)
{
    memset(&QN, 0, sizeof QN);
    size_t N = CMAX;
    adm d;
    adm_open(&d);
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    t->on_report = qname_hook;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"rp"};
    ctr_new(c, &co, q, 1);
    loadgen g = {.t = t, .q = "rp", .cap = N, .per_tick = 3, .keyed = 1};
    loadgen_start(&g);
    loadgen_wait(&g, 300, 10000);
    cr_assert_eq(adm_set_parts(&d, "rp", 4), 0);
    cr_assert_eq(d.status, 0);
    /* "Producers and consumers see the change within a few seconds" */
    part_seen w = {c, 3, 0};
    cr_assert(fx_run_until(saw_partition, &w, 8000),
              "partition 3 never consumed within 8 s of P=4");
    cr_assert_eq(adm_set_parts(&d, "rp", 2), 0);
    cr_assert_eq(d.n, 4);
    size_t at = g.next;
    loadgen_wait(&g, at + 300, 10000);
    cr_assert_eq(adm_set_parts(&d, "rp", 1), 0);
    cr_assert_eq(d.n, 2);
    at = g.next;
    loadgen_wait(&g, at + 300, 10000);
    g.stop = 1;
    size_t n = g.next;
    cr_assert(fx_wait_reports(t, n, 20000));
    cr_assert_eq(t->failed, 0);
    cr_assert_eq(QN.wrong, 0, "%zu reports named a partition", QN.wrong);
    cr_assert(ctr_wait(c, n, 30000), "consumed %zu of %zu", c->got, n);
    fx_run_for(300);
    assert_each_once(c, n);
    loadgen_free(&g);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* A consumer started AFTER P was lowered still drains the retired
 * partitions ("consumers keep draining them"). */
Test(outsider_part, late_consumer_drains_retired_partitions)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "lp", 4), 0);
    size_t N = 400;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, "lp", s, 32), 0);
    cr_assert(fx_wait_reports(t, N, 10000));
    cr_assert_eq(t->failed, 0);
    cr_assert_eq(adm_set_parts(&d, "lp", 1), 0);
    cr_assert_eq(d.n, 4);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_MOST_ONCE);
    const char *q[] = {"lp"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 15000), "consumed %zu of %zu", c->got, N);
    assert_each_once(c, N);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* ======================================================================== */
/* Second round: partitions meet ids, delays, retries, stops; more deadlines */
/* ======================================================================== */

/* redq_report.id: "To hand an id to a client and find it again on the
 * consumer side, make the queue a frames queue once, before producing
 * (redq_admin_set_format ...)". Here the queue is also partitioned (P = 3,
 * redq_produce_key "on one server or a cluster alike"): every delivery
 * should still carry its report's id. */
Test(outsider_part, frames_partitioned_queue_msg_id_is_report_id)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "fp", 3), 0);
    cr_assert_eq(d.status, 0);
    cr_assert_eq(adm_set_format(&d, "fp", REDQ_FORMAT_FRAMES), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    size_t N = 60;
    fx_tracker *t = fx_tracker_new(N);
    byid b = {calloc(N, 64)};
    t->on_report = byid_hook;
    t->hook_arg = &b;
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++) {
        char key[24], pl[64];
        snprintf(key, sizeof key, "k%zu", s % 6);
        size_t n = fx_payload(pl, sizeof pl, "fp", s, 8);
        cr_assert_eq(redq_produce_key(t->p, "fp", key, strlen(key), pl, n,
                                      (void *)(uintptr_t)(s + 1)), 0);
    }
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->ok, N);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"fp"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 8000), "consumed %zu", c->got);
    size_t bad = 0, hdr = 0, parts[3] = {0};
    char first_bad[160] = "";
    for (size_t i = 0; i < N; i++) {
        size_t s = seq_of(c->payload[i]);
        if (strncmp(c->payload[i], "RQ1", 3) == 0)
            hdr++;
        if (c->part[i] >= 0 && c->part[i] < 3)
            parts[c->part[i]]++;
        if (s >= N || strcmp(c->id[i], b.rid[s]) != 0) {
            if (!bad++)
                snprintf(first_bad, sizeof first_bad,
                         "partition %d: id '%s', report id '%s'", c->part[i],
                         c->id[i], s < N ? b.rid[s] : "?");
        }
    }
    /* release everything first: a failed assertion must not leak */
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
    free(b.rid);
    cr_assert_eq(hdr, 0, "%zu payloads with a frame header", hdr);
    cr_assert_eq(bad, 0, "%zu of %zu deliveries without their report id "
                 "(parts %zu/%zu/%zu); first: %s", bad, N, parts[0],
                 parts[1], parts[2], first_bad);
}

/* Delayed messages on a partitioned queue: "Unkeyed (redq_produce, _owned,
 * _delayed) are spread"; consumers take from every partition and promote
 * delayed messages "within about promote_interval_ms of its due time". */
Test(outsider_part, delayed_on_partitioned_queue_all_delivered)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "dp", 3), 0);
    size_t N = 200;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.batch_max_msgs = 8; /* several batches: several partitions */
    cr_assert_eq(fx_producer_new(t, &o), 0);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"dp"};
    ctr_new(c, &co, q, 1);
    /* learn P first: a few unkeyed messages, then wait for the discovery */
    fx_run_for(2500);
    for (size_t s = 0; s < N; s++) {
        char pl[64];
        size_t n = fx_payload(pl, sizeof pl, "dp", s, 8);
        cr_assert_eq(redq_produce_delayed(t->p, "dp", pl, n, 100,
                                          (void *)(uintptr_t)(s + 1)), 0);
        if (s % 8 == 7)
            fx_run_for(5); /* let batches seal */
    }
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->failed, 0);
    cr_assert(ctr_wait(c, N, 8000), "consumed %zu of %zu", c->got, N);
    int parts[3] = {0};
    for (size_t i = 0; i < N; i++)
        if (c->part[i] >= 0 && c->part[i] < 3)
            parts[c->part[i]]++;
    assert_each_once(c, N);
    cr_assert_gt(parts[1] + parts[2], 0, "all delayed went to partition 0");
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* Retries and rejects on a partitioned queue: a nacked message comes back
 * (same partition, same id, attempt 2); a rejected one is a dead letter the
 * admin counts in the logical queue's sum. */
static int pr_calls;
static int pr_part[8], pr_attempt[8];
static char pr_id[8][64];
static void pr_on_message(redq_consumer *c, redq_message *m, void *user)
{
    (void)c;
    (void)user;
    int i = pr_calls++;
    if (i < 8) {
        pr_part[i] = redq_msg_partition(m);
        pr_attempt[i] = redq_msg_attempt(m);
        snprintf(pr_id[i], sizeof pr_id[i], "%s", redq_msg_id(m));
    }
    if (i == 0)
        redq_nack(m, "again");
    else if (i == 1)
        redq_ack(m);
    else
        redq_reject(m, "bad");
}

static bool pr_three(void *arg)
{
    (void)arg;
    return pr_calls >= 3;
}

typedef struct qinfo {
    int done, status;
    uint64_t dead, ready, processing;
    int partitions;
} qinfo;

static void qinfo_cb(redq_admin *a, int status, const char *errstr,
                     const redq_queue_info *qs, size_t n, void *user)
{
    (void)a;
    (void)errstr;
    qinfo *v = user;
    v->done = 1;
    v->status = status;
    if (n > 0) {
        v->dead = qs[0].dead;
        v->ready = qs[0].ready;
        v->processing = qs[0].processing;
        v->partitions = qs[0].partitions;
    }
}

Test(outsider_part, nack_and_reject_on_a_high_partition)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "np", 4), 0);
    /* one key, so one partition; pick one that is not partition 0 */
    fx_tracker *t = fx_tracker_new(2);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    const char *key = NULL;
    static const char *keys[] = {"a", "b", "c", "d", "e", "f", "g", "h"};
    /* the partition of a key is slot(key) % 4; we cannot compute CRC16
     * here without the library, so produce two messages per candidate key
     * and keep going until one landed outside partition 0 */
    for (size_t i = 0; i < 2; i++)
        cr_assert_eq(redq_produce_key(t->p, "np", "zz", 2, "m", 1, NULL), 0);
    (void)key;
    (void)keys;
    cr_assert(fx_wait_reports(t, 2, 5000));
    pr_calls = 0;
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fx_url();
    co.on_message = pr_on_message;
    co.retry_base_ms = 20;
    co.retry_max_ms = 40;
    co.promote_interval_ms = 20;
    co.pop_timeout_ms = 100;
    const char *q[] = {"np"};
    redq_consumer *c;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &co, q, 1), 0);
    cr_assert(fx_run_until(pr_three, NULL, 8000), "deliveries %d", pr_calls);
    /* delivery 0 was nacked; it comes back as a later delivery with the same
     * id and attempt 2 in the same partition */
    int back = -1;
    for (int i = 1; i < 3; i++)
        if (strcmp(pr_id[i], pr_id[0]) == 0)
            back = i;
    cr_assert_neq(back, -1, "nacked message (id %s, partition %d) not back "
                  "with its id: %s, %s", pr_id[0], pr_part[0], pr_id[1],
                  pr_id[2]);
    cr_assert_eq(pr_attempt[back], 2);
    cr_assert_eq(pr_part[back], pr_part[0]);
    fx_run_for(200);
    qinfo v = {0};
    cr_assert_eq(redq_admin_queue(d.a, "np", qinfo_cb, &v), 0);
    cr_assert(fx_run_until(flag_set, &v.done, 5000));
    cr_assert_eq(v.status, 0);
    cr_assert_eq(v.partitions, 4);
    cr_assert_eq(v.dead, 1, "dead letters summed: %llu (partition %d)",
                 (unsigned long long)v.dead, pr_part[0]);
    cr_assert_eq(v.ready + v.processing, 0);
    int closed = 0;
    redq_consumer_close(c, int_closed, &closed);
    cr_assert(fx_run_until(flag_set, &closed, 5000));
    adm_close(&d);
}

/* Stop with messages held from every partition: they go back to their own
 * partitions, and a new consumer gets them all. */
Test(outsider_part, timed_out_stop_gives_back_partition_messages)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "gp", 4), 0);
    size_t N = 64;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, "gp", s, 16), 0);
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->failed, 0);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"gp"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 8000), "consumed %zu", c->got);
    cr_assert_eq(redq_consumer_stop(c->c, 50, ctr_stopped, c), 0);
    cr_assert(fx_run_until(flag_set, &c->stop_calls, 5000));
    cr_assert_eq(c->stop_status, REDQ_ETIMEDOUT);
    ctr *c2 = ctr_alloc();
    ctr_opts(&co, c2, REDQ_AT_LEAST_ONCE);
    ctr_new(c2, &co, q, 1);
    cr_assert(ctr_wait(c2, N, 8000), "given back %zu of %zu", c2->got, N);
    assert_each_once(c2, N);
    for (size_t i = 0; i < c->nheld; i++)
        cr_assert_eq(redq_ack(c->held[i]), REDQ_ETIMEDOUT);
    c->nheld = 0;
    ctr_close(c);
    ctr_close(c2);
    ctr_free(c);
    ctr_free(c2);
    adm_close(&d);
}

/* "Removing a queue removes its partitions." */
Test(outsider_part, remove_partitioned_queue_removes_its_partitions)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "rq2", 3), 0);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"rq1", "rq2"};
    ctr_new(c, &co, q, 2);
    fx_tracker *t = fx_tracker_new(60);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < 30; s++)
        cr_assert_eq(produce_keyed(t, "rq2", s, 10), 0);
    cr_assert(ctr_wait(c, 30, 8000), "consumed %zu of 30", c->got);
    cr_assert_eq(redq_consumer_remove_queue(c->c, "rq2", ctr_removed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->remove_calls, 5000));
    cr_assert_eq(c->remove_status, 0);
    for (size_t s = 30; s < 60; s++)
        cr_assert_eq(produce_keyed(t, "rq2", s, 10), 0);
    cr_assert(fx_wait_reports(t, 60, 5000));
    fx_run_for(1000);
    cr_assert_eq(c->got, 30, "removed queue's partitions still consumed: %zu",
                 c->got);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* A partitioned queue added at run time: its partitions are found too. */
Test(outsider_part, added_partitioned_queue_consumes_every_partition)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "ap", 3), 0);
    size_t N = 90;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, "ap", s, 30), 0);
    cr_assert(fx_wait_reports(t, N, 5000));
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"other"};
    ctr_new(c, &co, q, 1);
    fx_run_for(100);
    cr_assert_eq(redq_consumer_add_queue(c->c, "ap"), 0);
    cr_assert(ctr_wait(c, N, 8000), "consumed %zu of %zu", c->got, N);
    assert_each_once(c, N);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* Keyed messages waiting for the queue's partitions when the server never
 * answers: "failed by message_timeout_ms or close like any other", each
 * reported once, and a flush(-1) ends by then with 0; the counters hold
 * inside report callbacks (produced == stored + failed + pending). */
static size_t inv_bad;
static void inv_hook(fx_tracker *t, redq_producer *p, const redq_report *r)
{
    (void)t;
    (void)r;
    redq_producer_stats st;
    redq_producer_get_stats(p, &st);
    if (st.produced != st.stored + st.failed + st.pending_msgs)
        inv_bad++;
}

Test(outsider_part, keyed_waiting_for_discovery_time_out_once_each)
{
    inv_bad = 0;
    fx_tracker *t = fx_tracker_new(20);
    fl_t = t;
    t->raw = true;
    t->on_report = inv_hook;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 250;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < 20; s++) {
        char pl[64];
        size_t n = fx_payload(pl, sizeof pl, "kd", s, 8);
        cr_assert_eq(redq_produce_key(t->p, "kd", "key", 3, pl, n,
                                      (void *)(uintptr_t)(s + 1)), 0);
    }
    static fl f; /* outlives a failed assertion: close calls it later */
    memset(&f, 0, sizeof f);
    cr_assert_eq(redq_producer_flush(t->p, -1, fl_cb, &f), 0);
    bool ended = fx_run_until(flag_set, &f.calls, 5000);
    redq_producer_stats st = fx_stats(t);
    cr_assert(ended, "flush(-1) did not end within 5 s (message_timeout_ms "
              "250): reports %zu of 20, pending %zu", t->reports,
              st.pending_msgs);
    cr_assert_eq(f.status, 0);
    cr_assert_eq(f.reports_at, 20);
    cr_assert_eq(t->failed, 20);
    cr_assert_eq(t->last_fail_status, REDQ_ETIMEDOUT);
    cr_assert_eq(inv_bad, 0, "counters broken in %zu reports", inv_bad);
}

/* on_ready: "A message that fails (timeout, close) counts as reported." */
Test(outsider_part, on_ready_after_timeouts_free_the_window)
{
    fx_tracker *t = fx_tracker_new(20);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 200;
    o.max_pending_msgs = 8;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    size_t s = 0;
    while (fx_produce(t, "rt", s, 8) == 0)
        s++;
    cr_assert_eq(s, 8);
    cr_assert(fx_wait_ready(t, 3000), "no on_ready after timeouts");
    cr_assert_eq(t->ready, 1);
    cr_assert_leq(t->ready_stats.pending_msgs, 4);
}

/* Close from inside on_ready, with produce in it first: the produced
 * message is reported (ECLOSED or stored) before the close callback. */
static int cor_rc = 99;
static void cor_ready(redq_producer *p, void *user)
{
    (void)p;
    fx_tracker *t = user;
    t->ready++;
    cor_rc = fx_produce(t, "cr", 100, 8);
    fx_close(t);
}

Test(outsider_part, close_inside_on_ready)
{
    fx_tracker *t = fx_tracker_new(128);
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.max_pending_msgs = 10;
    o.on_ready = cor_ready;
    o.on_ready_user = t;
    cr_assert_eq(redq_producer_new(&t->p, fx_base(), &o), 0);
    /* fx_producer_new would repoint on_ready; use the tracker's report cb
     * by hand is not possible, so count via stats and the close flag */
    size_t s = 0;
    while (fx_produce(t, "cr", s, 8) == 0)
        s++;
    cr_assert_eq(s, 10);
    cr_assert(fx_wait_closed(t, 5000));
    cr_assert_eq(cor_rc, 0, "produce in on_ready: %d", cor_rc);
    cr_assert_eq(t->ready, 1);
}

/* Stop from inside on_message, then finish the message in the same
 * handler: the stop completes with 0 (it waited for that ack). */
static int sim_stop_status = 99, sim_stop_calls;
static void sim_stopped(redq_consumer *c, int status, void *user)
{
    (void)c;
    (void)user;
    sim_stop_calls++;
    sim_stop_status = status;
}
static int sim_rc_stop = 99, sim_rc_ack = 99, sim_calls;
static void sim_on_message(redq_consumer *c, redq_message *m, void *user)
{
    (void)user;
    if (sim_calls++ == 0)
        sim_rc_stop = redq_consumer_stop(c, 5000, sim_stopped, NULL);
    int rc = redq_ack(m);
    if (sim_calls == 1)
        sim_rc_ack = rc;
}

Test(outsider_part, stop_inside_on_message_then_ack)
{
    push_n("sm", 5);
    redq_consumer_options co;
    redq_consumer_options_init(&co);
    co.url = fx_url();
    co.on_message = sim_on_message;
    co.pop_timeout_ms = 100;
    const char *q[] = {"sm"};
    redq_consumer *c;
    cr_assert_eq(redq_consumer_new(&c, fx_base(), &co, q, 1), 0);
    cr_assert(fx_run_until(flag_set, &sim_stop_calls, 5000));
    cr_assert_eq(sim_rc_stop, 0);
    cr_assert_eq(sim_rc_ack, 0);
    cr_assert_eq(sim_stop_status, 0);
    /* messages a pop returned meanwhile are still delivered: all 5 (one
     * pop) were handled and acked; nothing left anywhere */
    cr_assert_eq(fx_llen("sm") + sim_calls, 5, "ready %lld, handled %d",
                 fx_llen("sm"), sim_calls);
    int closed = 0;
    redq_consumer_close(c, int_closed, &closed);
    cr_assert(fx_run_until(flag_set, &closed, 5000));
}

/* Close from inside the stop callback and from inside the remove
 * callback (contract 7). */
static int cis_closed;
static void cis_stopped(redq_consumer *c, int status, void *user)
{
    (void)status;
    (void)user;
    redq_consumer_close(c, int_closed, &cis_closed);
}

Test(outsider_part, close_inside_stop_callback)
{
    push_n("cs", 2);
    ctr *t = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, t, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"cs"};
    ctr_new(t, &co, q, 1);
    cr_assert(ctr_wait(t, 2, 5000));
    cis_closed = 0;
    cr_assert_eq(redq_consumer_stop(t->c, 1000, cis_stopped, NULL), 0);
    cr_assert(fx_run_until(flag_set, &cis_closed, 5000));
    ctr_free(t);
}

static void cir_removed(redq_consumer *c, int status, void *user)
{
    (void)status;
    (void)user;
    redq_consumer_close(c, int_closed, &cis_closed);
}

Test(outsider_part, close_inside_remove_callback)
{
    ctr *t = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, t, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"ci1", "ci2"};
    ctr_new(t, &co, q, 2);
    fx_run_for(100);
    cis_closed = 0;
    cr_assert_eq(redq_consumer_remove_queue(t->c, "ci2", cir_removed, NULL),
                 0);
    cr_assert(fx_run_until(flag_set, &cis_closed, 5000));
    ctr_free(t);
}

/* Remove then add the same queue again from the remove callback: it is
 * consumed again (a new slot). */
static void readd_removed(redq_consumer *c, int status, void *user)
{
    ctr *t = user;
    t->remove_calls++;
    t->remove_status = status;
    t->close_rc = redq_consumer_add_queue(c, "ra2");
}

Test(outsider_part, readd_queue_from_its_remove_callback)
{
    ctr *t = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, t, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"ra1", "ra2"};
    ctr_new(t, &co, q, 2);
    fx_run_for(100);
    t->close_rc = 99;
    cr_assert_eq(redq_consumer_remove_queue(t->c, "ra2", readd_removed, t),
                 0);
    cr_assert(fx_run_until(flag_set, &t->remove_calls, 5000));
    cr_assert_eq(t->remove_status, 0);
    cr_assert_eq(t->close_rc, 0, "add in the remove callback: %d",
                 t->close_rc);
    push_n("ra2", 4);
    cr_assert(ctr_wait(t, 4, 5000), "re-added queue consumed %zu", t->got);
    ctr_close(t);
    ctr_free(t);
}

/* Owned messages that time out are freed once, after their report. */
Test(outsider_part, owned_timed_out_freed_once)
{
    memset(OW, 0, sizeof OW);
    memset(OWBUF, 0, sizeof OWBUF);
    ow_closed = 0;
    fx_tracker *t = fx_tracker_new(NOWN);
    t->raw = true;
    t->on_report = ow_report;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 150;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t i = 0; i < 10; i++)
        cr_assert_eq(own_produce(t->p, "ot", i, i % 2 ? 700 : 10), 0);
    cr_assert(fx_wait_reports(t, 10, 3000));
    size_t n = 10;
    cr_assert(fx_run_until(ow_all_freed, &n, 2000));
    for (size_t k = 0; k < 10; k++) {
        cr_assert_eq(OW[k].freed, 1);
        cr_assert_eq(OW[k].freed_before_report, 0);
        cr_assert_eq(OW[k].report_ptr_ok, 1);
    }
}

/* Owned messages to a partitioned queue: stored in the partitions, freed
 * once each, consumed byte for byte. */
Test(outsider_part, owned_on_partitioned_queue)
{
    memset(OW, 0, sizeof OW);
    memset(OWBUF, 0, sizeof OWBUF);
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "opq", 3), 0);
    fx_tracker *t = fx_tracker_new(NOWN);
    t->raw = true;
    t->on_report = ow_report;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.batch_max_msgs = 4;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t i = 0; i < 40; i++) {
        cr_assert_eq(own_produce(t->p, "opq", i, 600 + i), 0);
        if (i % 4 == 3)
            fx_run_for(2);
    }
    cr_assert(fx_wait_reports(t, 40, 5000));
    cr_assert_eq(t->failed, 0);
    size_t n = 40;
    cr_assert(fx_run_until(ow_all_freed, &n, 2000));
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"opq"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 40, 8000), "consumed %zu of 40", c->got);
    unsigned seen[40] = {0};
    for (size_t i = 0; i < 40; i++) {
        size_t len = strlen(c->payload[i]);
        cr_assert_geq(len, 600);
        size_t k = len - 600;
        cr_assert_lt(k, 40);
        for (size_t j = 0; j < len; j++)
            cr_assert_eq(c->payload[i][j], 'a' + (int)(k % 26));
        seen[k]++;
    }
    for (size_t k = 0; k < 40; k++)
        cr_assert_eq(seen[k], 1, "message %zu seen %u times", k, seen[k]);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* redq_msg_partition(NULL) is -1; accessors on NULL do not crash where the
 * header gives a value. */
Test(outsider_part, msg_partition_null)
{
    cr_assert_eq(redq_msg_partition(NULL), -1);
}

/* The same with a live server: keyed messages to a queue not seen yet,
 * flushed at once. "call cb once every message accepted so far has been
 * reported"; DESIGN: "Flush waits for ... keyed messages still waiting for
 * discovery". */
Test(outsider_part, flush_with_keyed_messages_on_a_live_server)
{
    fx_tracker *t = fx_tracker_new(20);
    fl_t = t;
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < 20; s++) {
        char pl[64];
        size_t n = fx_payload(pl, sizeof pl, "kl", s, 8);
        cr_assert_eq(redq_produce_key(t->p, "kl", "key", 3, pl, n,
                                      (void *)(uintptr_t)(s + 1)), 0);
    }
    static fl f;
    memset(&f, 0, sizeof f);
    cr_assert_eq(redq_producer_flush(t->p, -1, fl_cb, &f), 0);
    bool ended = fx_run_until(flag_set, &f.calls, 5000);
    cr_assert(ended, "flush(-1) did not end: reports %zu of 20", t->reports);
    cr_assert_eq(f.status, 0);
    cr_assert_eq(f.reports_at, 20, "flush ended before its messages' "
                 "reports (%zu)", f.reports_at);
    cr_assert_eq(t->ok, 20);
}

/* A finite flush over keyed messages that all timed out while waiting
 * for discovery: status 0 once they are reported, not REDQ_ETIMEDOUT at
 * the flush's own deadline. */
Test(outsider_part, finite_flush_with_keyed_timeouts_ends_at_the_reports)
{
    fx_tracker *t = fx_tracker_new(5);
    fl_t = t;
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = dead_url();
    o.message_timeout_ms = 150;
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < 5; s++) {
        char pl[64];
        size_t n = fx_payload(pl, sizeof pl, "kf", s, 8);
        cr_assert_eq(redq_produce_key(t->p, "kf", "key", 3, pl, n,
                                      (void *)(uintptr_t)(s + 1)), 0);
    }
    static fl f;
    memset(&f, 0, sizeof f);
    uint64_t t0 = fx_now_us();
    cr_assert_eq(redq_producer_flush(t->p, 3000, fl_cb, &f), 0);
    cr_assert(fx_run_until(flag_set, &f.calls, 5000));
    cr_assert_lt(f.at_us - t0, 1500000, "flush ended %llu us after it began:"
                 " not when its messages were reported (150 ms) but at its "
                 "own deadline", (unsigned long long)(f.at_us - t0));
    cr_assert_eq(f.status, 0, "status %d: the flush waited for messages "
                 "already reported (reports %zu at its end)", f.status,
                 f.reports_at);
}

/* ======================================================================== */
/* Third round                                                               */
/* ======================================================================== */

/* produce_owned with payload NULL and len 0 ("payload may be NULL when len
 * is 0", as redq_produce): accepted, and free_cb is called exactly once
 * ("exactly once per accepted message ... whatever the outcome"). */
static int nullfree_calls;
static void *nullfree_ptr = (void *)1;
static void nullfree(void *payload, void *user)
{
    (void)user;
    nullfree_calls++;
    nullfree_ptr = payload;
}

Test(outsider_part, owned_null_empty_payload_freed_once)
{
    fx_tracker *t = fx_tracker_new(1);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    nullfree_calls = 0;
    cr_assert_eq(redq_produce_owned(t->p, "on", NULL, 0, nullfree, NULL,
                                    NULL), 0);
    cr_assert_eq(redq_produce_owned(t->p, "on", NULL, 5, nullfree, NULL,
                                    NULL), REDQ_EINVAL);
    cr_assert(fx_wait_reports(t, 1, 5000));
    fx_run_for(50);
    cr_assert_eq(nullfree_calls, 1);
    cr_assert_null(nullfree_ptr);
    cr_assert_eq(fx_llen("on"), 1);
}

/* Delayed messages carry the producer's id on a plain queue too
 * (redq_msg_id: "On a frames queue ... and for delayed messages, the
 * producer's"). */
Test(outsider_part, delayed_message_on_plain_queue_has_report_id)
{
    size_t N = 5;
    fx_tracker *t = fx_tracker_new(N);
    byid b = {calloc(N, 64)};
    t->on_report = byid_hook;
    t->hook_arg = &b;
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++) {
        char pl[64];
        size_t n = fx_payload(pl, sizeof pl, "dq", s, 8);
        cr_assert_eq(redq_produce_delayed(t->p, "dq", pl, n, 50,
                                          (void *)(uintptr_t)(s + 1)), 0);
    }
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->ok, N);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_MOST_ONCE);
    const char *q[] = {"dq"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 5000));
    for (size_t i = 0; i < N; i++) {
        size_t s = seq_of(c->payload[i]);
        cr_assert_lt(s, N);
        cr_assert_str_eq(c->id[i], b.rid[s]);
    }
    ctr_close(c);
    ctr_free(c);
    free(b.rid);
}

/* G4 on a frames queue: a payload that looks like a frame is delivered
 * byte for byte (the producer wraps it), and enqueued_ms is the producer's
 * clock at acceptance. */
Test(outsider_part, frame_lookalike_payload_on_frames_queue_is_transparent)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_format(&d, "lk", REDQ_FORMAT_FRAMES), 0);
    fx_tracker *t = fx_tracker_new(3);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    static const char *pls[] = {"RQ1 id=evil-1 ts=5\nboo",
                                "RQ1 id=x ts=1\n", "RQ1 "};
    struct timeval tv;
    evutil_gettimeofday(&tv, NULL);
    long long before = (long long)tv.tv_sec * 1000 + tv.tv_usec / 1000;
    for (int i = 0; i < 3; i++)
        cr_assert_eq(redq_produce(t->p, "lk", pls[i], strlen(pls[i]),
                                  (void *)(uintptr_t)(i + 1)), 0);
    cr_assert(fx_wait_reports(t, 3, 5000));
    cr_assert_eq(t->ok, 3);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"lk"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 3, 5000));
    for (int i = 0; i < 3; i++) {
        cr_assert_str_eq(c->payload[i], pls[i]);
        cr_assert_str_neq(c->id[i], "evil-1");
        cr_assert_geq(c->enq[i], before - 1000);
        cr_assert_leq(c->enq[i], before + 10000);
    }
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* set_partitions: "One script on the queue's meta hash, so concurrent
 * calls do not interleave. n is the previous count." Two calls at once:
 * one sees 1, the other sees the first one's target. */
static adm cc_a, cc_b;
Test(outsider_part, concurrent_set_partitions_are_serialised)
{
    adm_open(&cc_a);
    adm_open(&cc_b);
    cr_assert_eq(redq_admin_set_partitions(cc_a.a, "cp", 4, adm_done, &cc_a),
                 0);
    cr_assert_eq(redq_admin_set_partitions(cc_b.a, "cp", 6, adm_done, &cc_b),
                 0);
    cr_assert(fx_run_until(flag_set, &cc_a.done, 5000));
    cr_assert(fx_run_until(flag_set, &cc_b.done, 5000));
    cr_assert_eq(cc_a.status, 0);
    cr_assert_eq(cc_b.status, 0);
    cr_assert((cc_a.n == 1 && cc_b.n == 4) || (cc_b.n == 1 && cc_a.n == 6),
              "previous counts %llu and %llu", (unsigned long long)cc_a.n,
              (unsigned long long)cc_b.n);
    adm_close(&cc_a);
    adm_close(&cc_b);
}

/* Lowering then raising P: "raising it makes partitions (new tags, or the
 * retired ones again, in order)"; redq_admin_partitions lists "Every
 * partition ... ever made, active and retired, by index". */
typedef struct plist {
    int done, status;
    size_t n;
    int retired[16];
    int index[16];
    char name[16][64];
} plist;

static void plist_cb(redq_admin *a, int status, const char *errstr,
                     const redq_partition_info *parts, size_t n, void *user)
{
    (void)a;
    (void)errstr;
    plist *l = user;
    l->done = 1;
    l->status = status;
    l->n = n;
    for (size_t i = 0; i < n && i < 16; i++) {
        l->retired[i] = parts[i].retired;
        l->index[i] = parts[i].index;
        snprintf(l->name[i], sizeof l->name[i], "%s", parts[i].name);
    }
}

Test(outsider_part, lower_then_raise_reuses_retired_partitions)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "lr", 4), 0);
    plist l1 = {0};
    cr_assert_eq(redq_admin_partitions(d.a, "lr", plist_cb, &l1), 0);
    cr_assert(fx_run_until(flag_set, &l1.done, 5000));
    cr_assert_eq(l1.n, 4);
    cr_assert_eq(adm_set_parts(&d, "lr", 2), 0);
    cr_assert_eq(d.n, 4);
    plist l2 = {0};
    cr_assert_eq(redq_admin_partitions(d.a, "lr", plist_cb, &l2), 0);
    cr_assert(fx_run_until(flag_set, &l2.done, 5000));
    cr_assert_eq(l2.n, 4, "retired partitions must still be listed");
    cr_assert_eq(l2.retired[0] + l2.retired[1], 0);
    cr_assert_eq(l2.retired[2] + l2.retired[3], 2);
    cr_assert_eq(adm_set_parts(&d, "lr", 3), 0);
    cr_assert_eq(d.n, 2);
    plist l3 = {0};
    cr_assert_eq(redq_admin_partitions(d.a, "lr", plist_cb, &l3), 0);
    cr_assert(fx_run_until(flag_set, &l3.done, 5000));
    cr_assert_eq(l3.n, 4, "a raise made a new partition instead of reusing");
    cr_assert_str_eq(l3.name[2], l1.name[2]);
    cr_assert_eq(l3.retired[2], 0);
    cr_assert_eq(l3.retired[3], 1);
    cr_assert_str_eq(l3.name[0], "lr");
    for (size_t i = 0; i < 4; i++)
        cr_assert_eq(l3.index[i], (int)i);
    adm_close(&d);
}

/* Admin close from inside one of its own callbacks (contract 7); a call
 * not yet answered gets its callback once (REDQ_ECLOSED, or its answer). */
static int ai_second_status = 99, ai_second_calls, ai_closed;
static void ai_second(redq_admin *a, int status, const char *errstr,
                      uint64_t n, void *user)
{
    (void)a;
    (void)errstr;
    (void)n;
    (void)user;
    ai_second_calls++;
    ai_second_status = status;
}
static void ai_first(redq_admin *a, int status, const char *errstr,
                     uint64_t n, void *user)
{
    (void)status;
    (void)errstr;
    (void)n;
    (void)user;
    redq_admin_close(a, int_closed, &ai_closed);
}

Test(outsider_part, admin_close_inside_its_callback)
{
    adm d;
    adm_open(&d);
    ai_closed = 0;
    cr_assert_eq(redq_admin_pause(d.a, "ac", 1, ai_first, NULL), 0);
    cr_assert_eq(redq_admin_purge(d.a, "ac", ai_second, NULL), 0);
    cr_assert(fx_run_until(flag_set, &ai_closed, 5000));
    cr_assert_eq(ai_second_calls, 1, "second call answered %d times",
                 ai_second_calls);
    cr_assert(ai_second_status == REDQ_ECLOSED || ai_second_status == 0,
              "status %d", ai_second_status);
}

/* At-most-once, a stop that times out while the handler holds messages:
 * redq.h says they are "given back too" -- which at-most-once would be a
 * second delivery of a message the handler is still working on. What must
 * hold either way: the stop callback once with REDQ_ETIMEDOUT, the
 * messages stay valid, finishing them returns and releases. */
Test(outsider_part, amo_timed_out_stop_holding_messages)
{
    push_n("am", 3);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_MOST_ONCE);
    const char *q[] = {"am"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, 3, 5000));
    cr_assert_eq(redq_consumer_stop(c->c, 50, ctr_stopped, c), 0);
    cr_assert(fx_run_until(flag_set, &c->stop_calls, 5000));
    cr_assert_eq(c->stop_status, REDQ_ETIMEDOUT);
    cr_assert_eq(memcmp(redq_msg_data(c->held[2]), "am|2", 4), 0);
    int rc0 = redq_ack(c->held[0]);
    int rc1 = redq_nack(c->held[1], NULL);
    int rc2 = redq_reject(c->held[2], NULL);
    c->nheld = 0;
    cr_log_info("AMO after a timed-out stop: ack %s nack %s reject %s, "
                "ready list %lld", redq_err_name(rc0), redq_err_name(rc1),
                redq_err_name(rc2), fx_llen("am"));
    cr_assert(rc0 == 0 || rc0 == REDQ_ETIMEDOUT);
    ctr_close(c);
    ctr_free(c);
}

/* The same close during a removal with nothing held (the removal may
 * already be giving the lists back when the close comes). */
Test(outsider_part, close_during_removal_nothing_held)
{
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"z1", "z2"};
    ctr_new(c, &co, q, 2);
    fx_run_for(100);
    cr_assert_eq(redq_consumer_remove_queue(c->c, "z2", ctr_removed, c), 0);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    cr_assert_eq(c->remove_calls, 1, "remove callback %d times",
                 c->remove_calls);
    cr_assert_eq(c->remove_after_close, 0, "remove callback after close cb");
    ctr_free(c);
}

/* Close during a removal at-most-once, holding a message of the queue. */
Test(outsider_part, close_during_removal_amo_held)
{
    push_n("w2", 1);
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_MOST_ONCE);
    const char *q[] = {"w1", "w2"};
    ctr_new(c, &co, q, 2);
    cr_assert(ctr_wait(c, 1, 5000));
    cr_assert_eq(redq_consumer_remove_queue(c->c, "w2", ctr_removed, c), 0);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    cr_assert_eq(c->remove_calls, 1);
    cr_assert_eq(c->remove_after_close, 0);
    cr_assert_eq(redq_ack(c->held[0]), REDQ_ECLOSED);
    c->nheld = 0;
    ctr_free(c);
}

/* Pausing a partitioned queue (DESIGN, "Admin": "redq_admin_pause sets or
 * clears the flag of every partition"): consumers take from none of its
 * partitions within about promote_interval_ms, and all again after the
 * resume. */
static int pz_done;
static void pz_cb(redq_admin *a, int status, const char *errstr, uint64_t n,
                  void *user)
{
    (void)a;
    (void)errstr;
    (void)n;
    (void)user;
    pz_done = status == 0 ? 1 : status;
}

Test(outsider_part, pause_partitioned_queue_pauses_every_partition)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "pz", 3), 0);
    pz_done = 0;
    cr_assert_eq(redq_admin_pause(d.a, "pz", 1, pz_cb, NULL), 0);
    cr_assert(fx_run_until(flag_set, &pz_done, 5000));
    cr_assert_eq(pz_done, 1);
    size_t N = 60;
    fx_tracker *t = fx_tracker_new(N);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++)
        cr_assert_eq(produce_keyed(t, "pz", s, 12), 0);
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->ok, N);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"pz"};
    ctr_new(c, &co, q, 1);
    fx_run_for(3000); /* discovery (2 s) and several promote rounds */
    int parts[3] = {0};
    for (size_t i = 0; i < c->got && i < CMAX; i++)
        if (c->part[i] >= 0 && c->part[i] < 3)
            parts[c->part[i]]++;
    cr_assert_eq(c->got, 0, "paused queue delivered %zu (partitions "
                 "%d/%d/%d)", c->got, parts[0], parts[1], parts[2]);
    pz_done = 0;
    cr_assert_eq(redq_admin_pause(d.a, "pz", 0, pz_cb, NULL), 0);
    cr_assert(fx_run_until(flag_set, &pz_done, 5000));
    cr_assert(ctr_wait(c, N, 8000), "after resume %zu of %zu", c->got, N);
    assert_each_once(c, N);
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
}

/* Close right after add_queue (its first heartbeat not acknowledged yet),
 * and add then remove at once: each callback once, close last. */
Test(outsider_part, close_right_after_add_queue)
{
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"ca1"};
    ctr_new(c, &co, q, 1);
    fx_run_for(100);
    cr_assert_eq(redq_consumer_add_queue(c->c, "ca2"), 0);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    fx_run_for(50);
    cr_assert_eq(c->closed, 1);
    ctr_free(c);
}

Test(outsider_part, add_then_remove_at_once_then_close)
{
    push_n("ar2", 3);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"ar1"};
    ctr_new(c, &co, q, 1);
    fx_run_for(100);
    cr_assert_eq(redq_consumer_add_queue(c->c, "ar2"), 0);
    cr_assert_eq(redq_consumer_remove_queue(c->c, "ar2", ctr_removed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->remove_calls, 5000));
    cr_assert_eq(c->remove_status, 0);
    fx_run_for(300);
    /* whatever was taken meanwhile was acked; the rest stays in ar2 */
    cr_assert_eq(fx_llen("ar2") + (long long)c->got, 3,
                 "ready %lld + delivered %zu != 3", fx_llen("ar2"), c->got);
    ctr_close(c);
    ctr_free(c);
}

/* Remove a partitioned queue while holding one of its messages, then
 * close: the remove callback once, before the close callback; the message
 * still finishes (REDQ_ECLOSED). */
Test(outsider_part, remove_partitioned_queue_held_then_close)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_parts(&d, "hp", 3), 0);
    fx_tracker *t = fx_tracker_new(12);
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < 12; s++)
        cr_assert_eq(produce_keyed(t, "hp", s, 12), 0);
    cr_assert(fx_wait_reports(t, 12, 5000));
    ctr *c = ctr_alloc();
    c->hold = 1;
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"hp0", "hp"};
    ctr_new(c, &co, q, 2);
    cr_assert(ctr_wait(c, 12, 8000), "got %zu", c->got);
    cr_assert_eq(redq_consumer_remove_queue(c->c, "hp", ctr_removed, c), 0);
    fx_run_for(100);
    cr_assert_eq(c->remove_calls, 0);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    cr_assert_eq(c->remove_calls, 1);
    cr_assert_eq(c->remove_after_close, 0);
    for (size_t i = 0; i < c->nheld; i++)
        cr_assert_eq(redq_ack(c->held[i]), REDQ_ECLOSED);
    c->nheld = 0;
    ctr_free(c);
    adm_close(&d);
}

/* Close from inside a report while keyed messages of another queue are
 * still waiting for that queue's partitions: each reported once
 * (REDQ_ECLOSED), before the close callback. */
static void close_on_first(fx_tracker *t, redq_producer *p,
                           const redq_report *r)
{
    (void)p;
    (void)r;
    if (t->reports == 1)
        fx_close(t);
}

Test(outsider_part, close_in_report_with_keyed_waiting)
{
    fx_tracker *t = fx_tracker_new(40);
    t->raw = true;
    t->on_report = close_on_first;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    cr_assert(fx_wait_connected(t, 5000));
    cr_assert_eq(redq_produce(t->p, "first", "x", 1, NULL), 0);
    for (size_t s = 0; s < 39; s++)
        cr_assert_eq(produce_keyed(t, "kw", s, 5), 0);
    cr_assert(fx_wait_closed(t, 5000));
    cr_assert_eq(t->reports, 40, "reports %zu of 40", t->reports);
    cr_assert_eq(t->reports_after_close, 0);
    cr_assert_eq(t->bad, 0, "%s", t->bad_msg);
}

/* The other order: frames first, then partitions (the partitions made by
 * the raise are parts of a frames queue). */
Test(outsider_part, frames_then_partitions_msg_id_is_report_id)
{
    adm d;
    adm_open(&d);
    cr_assert_eq(adm_set_format(&d, "fp2", REDQ_FORMAT_FRAMES), 0);
    cr_assert_eq(d.status, 0, "%s", d.err);
    cr_assert_eq(adm_set_parts(&d, "fp2", 3), 0);
    cr_assert_eq(d.status, 0);
    size_t N = 30;
    fx_tracker *t = fx_tracker_new(N);
    byid b = {calloc(N, 64)};
    t->on_report = byid_hook;
    t->hook_arg = &b;
    t->raw = true;
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    cr_assert_eq(fx_producer_new(t, &o), 0);
    for (size_t s = 0; s < N; s++) {
        char key[24], pl[64];
        snprintf(key, sizeof key, "k%zu", s % 6);
        size_t n = fx_payload(pl, sizeof pl, "fp2", s, 8);
        cr_assert_eq(redq_produce_key(t->p, "fp2", key, strlen(key), pl, n,
                                      (void *)(uintptr_t)(s + 1)), 0);
    }
    cr_assert(fx_wait_reports(t, N, 5000));
    cr_assert_eq(t->ok, N);
    ctr *c = ctr_alloc();
    redq_consumer_options co;
    ctr_opts(&co, c, REDQ_AT_LEAST_ONCE);
    const char *q[] = {"fp2"};
    ctr_new(c, &co, q, 1);
    cr_assert(ctr_wait(c, N, 8000), "consumed %zu", c->got);
    size_t bad = 0;
    int bad_part = -1;
    for (size_t i = 0; i < N; i++) {
        size_t s = seq_of(c->payload[i]);
        if (s >= N || strcmp(c->id[i], b.rid[s]) != 0) {
            bad++;
            bad_part = c->part[i];
        }
    }
    ctr_close(c);
    ctr_free(c);
    adm_close(&d);
    free(b.rid);
    cr_assert_eq(bad, 0, "%zu of %zu without their report id (e.g. "
                 "partition %d)", bad, N, bad_part);
}

/* Boundaries that must be accepted, and stop/close after close. */
Test(outsider_part, option_boundaries_accepted)
{
    redq_producer_options o;
    redq_producer_options_init(&o);
    o.url = fx_url();
    o.stats_interval_ms = 86400000;
    o.max_message_bytes = (size_t)512 << 20;
    o.min_replicas = 64;
    o.client_name = "";
    char err[256];
    o.errbuf = err;
    o.errbuf_size = sizeof err;
    fx_tracker *t = fx_tracker_new(1);
    cr_assert_eq(fx_producer_new(t, &o), 0, "%s", err);
    fx_tracker *t2 = fx_tracker_new(1);
    o.client_name = NULL;
    o.min_replicas = 0;
    cr_assert_eq(fx_producer_new(t2, &o), 0, "%s", err);
    redq_consumer_options co;
    ctr *c = ctr_alloc();
    ctr_opts(&co, c, REDQ_AT_MOST_ONCE);
    co.pop_timeout_ms = 10;
    co.errbuf = err;
    co.errbuf_size = sizeof err;
    const char *q[] = {"ob"};
    cr_assert_eq(redq_consumer_new(&c->c, fx_base(), &co, q, 1), 0, "%s",
                 err);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), 0);
    cr_assert_eq(redq_consumer_close(c->c, ctr_closed, c), REDQ_ECLOSED);
    cr_assert_eq(redq_consumer_stop(c->c, 10, ctr_stopped, c), REDQ_ECLOSED);
    cr_assert_eq(redq_consumer_add_queue(c->c, "x"), REDQ_ECLOSED);
    cr_assert(fx_run_until(flag_set, &c->closed, 5000));
    cr_assert_eq(c->closed, 1);
    cr_assert_eq(c->stop_calls, 0);
    ctr_free(c);
}
