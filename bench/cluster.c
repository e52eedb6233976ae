/*
 * cluster.c: what redq-bench needs for issue 11's measurements.
 *
 *  - --partitions P: the queue's partition count is set (redq_admin) before
 *    each run, after every key of the queue was deleted, so each run starts
 *    from an empty logical queue with P partitions.
 *  - A throwaway cluster: tools/cluster-local (its path is compiled in; the
 *    environment's REDQ_BENCH_CLUSTER_LOCAL overrides it), 3 masters and,
 *    with --cluster-replicas 1, a replica each.
 *  - --vs-cluster: the same mode against a throwaway single master and a
 *    throwaway cluster, alternating run by run (so a noisy neighbour hits
 *    both alike), with the median of each and their ratio. This is the
 *    measurement issue 11 asks for: does one queue spread over three
 *    masters go faster than one queue on one master, on this machine?
 */
#include "bench.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifndef BENCH_CLUSTER_LOCAL
#define BENCH_CLUSTER_LOCAL "tools/cluster-local"
#endif

/* Replies of the side connections within this long. */
#define SIDE_TIMEOUT_MS 10000

int bench_scanned(const bench_config *cfg)
{
    return cfg->servers != NULL && (cfg->servers->n > 1 || cfg->partitions > 1);
}

/* ------------------------------------------------------------------------ */
/* --partitions                                                              */
/* ------------------------------------------------------------------------ */

typedef struct setp {
    struct event_base *base;
    int done, status;
    char err[256];
} setp;

static void setp_done(redq_admin *a, int status, const char *errstr, uint64_t n,
                      void *user)
{
    setp *s = user;
    (void)a;
    (void)n;
    s->done = 1;
    s->status = status;
    if (status != 0)
        snprintf(s->err, sizeof s->err, "%s", errstr ? errstr : redq_strerror(status));
    event_base_loopbreak(s->base);
}

static void setp_closed(void *user)
{
    setp *s = user;
    s->done = 1;
    event_base_loopbreak(s->base);
}

int bench_set_partitions(const bench_config *cfg, struct event_base *base,
                         char *err, size_t errlen)
{
    redq_admin_options o;
    redq_admin *a = NULL;
    setp s;
    int rc;

    memset(&s, 0, sizeof s);
    s.base = base;
    redq_admin_options_init(&o);
    o.url = cfg->url;
    o.client_name = "redq-bench";
    if ((rc = redq_admin_new(&a, base, &o)) != 0) {
        snprintf(err, errlen, "redq_admin_new: %s", redq_strerror(rc));
        return -1;
    }
    rc = redq_admin_set_partitions(a, cfg->queue, cfg->partitions, setp_done, &s);
    if (rc != 0) {
        s.done = 1;
        s.status = rc;
        snprintf(s.err, sizeof s.err, "%s", redq_strerror(rc));
    }
    while (!s.done && !bench_signal)
        if (event_base_dispatch(base) < 0)
            break;
    rc = s.done ? s.status : REDQ_ETIMEDOUT;
    if (rc != 0)
        snprintf(err, errlen, "setting %d partitions on %s: %s", cfg->partitions,
                 cfg->queue, s.err[0] ? s.err : redq_strerror(rc));
    s.done = 0;
    if (redq_admin_close(a, setp_closed, &s) == 0)
        while (!s.done)
            if (event_base_dispatch(base) < 0)
                break;
    return rc == 0 ? 0 : -1;
}

/* ------------------------------------------------------------------------ */
/* a throwaway cluster                                                       */
/* ------------------------------------------------------------------------ */

int bench_cluster_start(bench_cluster *k, int replicas, char *err, size_t errlen)
{
    const char *tool = getenv("REDQ_BENCH_CLUSTER_LOCAL");
    char cmd[1200], line[1100];
    FILE *f;
    int st;

    memset(k, 0, sizeof *k);
    if (tool == NULL || !*tool)
        tool = BENCH_CLUSTER_LOCAL;
    snprintf(cmd, sizeof cmd, "REDQ_CLUSTER_REPLICAS=%d '%s' start", replicas, tool);
    if ((f = popen(cmd, "r")) == NULL) {
        snprintf(err, errlen, "cannot run %s", tool);
        return -1;
    }
    while (fgets(line, sizeof line, f) != NULL) {
        line[strcspn(line, "\n")] = '\0';
        if (!strncmp(line, "REDQ_URL=", 9))
            snprintf(k->url, sizeof k->url, "%.1000s", line + 9);
        else if (!strncmp(line, "REDQ_CLUSTER_DIR=", 17))
            snprintf(k->dir, sizeof k->dir, "%.500s", line + 17);
    }
    st = pclose(f);
    if (st != 0 || !k->url[0] || !k->dir[0]) {
        snprintf(err, errlen, "%s start failed (status %d)", tool, st);
        bench_cluster_stop(k);
        return -1;
    }
    return 0;
}

void bench_cluster_stop(bench_cluster *k)
{
    const char *tool = getenv("REDQ_BENCH_CLUSTER_LOCAL");
    char cmd[1200];

    if (!k->dir[0])
        return;
    if (tool == NULL || !*tool)
        tool = BENCH_CLUSTER_LOCAL;
    /* The directory is one cluster-local made (printf %q of a mktemp path:
     * no quoting needed); it refuses any other. */
    snprintf(cmd, sizeof cmd, "'%s' stop '%s'", tool, k->dir);
    if (system(cmd) != 0)
        fprintf(stderr, "redq-bench: %s failed\n", cmd);
    k->dir[0] = '\0';
}

/* ------------------------------------------------------------------------ */
/* --vs-cluster                                                              */
/* ------------------------------------------------------------------------ */

/* Median, min and max of v[0..n) (v is left as it is). */
static void mmm(const double *v, int n, double *med, double *mn, double *mx)
{
    double t[1000];
    int i;
    for (i = 0; i < n; i++)
        t[i] = v[i];
    *med = bench_median(t, (size_t)n);
    *mn = t[0];
    *mx = t[n - 1];
}

/* One side of the comparison: where it goes and what its runs gave. */
typedef struct side_of {
    const char *name;
    bench_config cfg;
    bench_target tg;
    side_servers servers;
    redisContext *sc;
    double rate[1000], cpu[1000], scpu[1000];
} side_of;

static int side_open_of(side_of *s, const char *url_in, char *err, size_t errlen)
{
    char url[sizeof s->tg.url];
    /* url_in may be s->tg.url itself, which bench_parse_target clears. */
    snprintf(url, sizeof url, "%s", url_in);
    if (bench_parse_target(url, &s->tg, err, errlen) != 0)
        return -1;
    if (side_servers_open(&s->tg.addr, SIDE_TIMEOUT_MS, &s->servers, err, errlen) != 0)
        return -1;
    s->cfg.url = s->tg.url;
    s->cfg.servers = &s->servers;
    s->sc = bench_sync_connect(&s->tg, err, errlen);
    return s->sc ? 0 : -1;
}

static void side_print(side_of *s, int n, double msgs)
{
    double med, mn, mx, cpu = 0, scpu = 0;
    int i;
    mmm(s->rate, n, &med, &mn, &mx);
    for (i = 0; i < n; i++) {
        cpu += s->cpu[i] / n;
        scpu += s->scpu[i] / n;
    }
    printf("  %-34s %10.0f %10.0f %10.0f %9.3f %9.3f\n", s->name, med, mn, mx,
           cpu * 1e6 / msgs, scpu * 1e6 / msgs);
}

int bench_vs_cluster(bench_config *cfg)
{
    static side_of one, many;
    bench_server srv;
    bench_cluster k;
    bench_bitmap seen = {NULL, 0};
    bench_hist *lat = calloc(1, sizeof *lat);
    bench_result res;
    char err[1024] = "", name[64];
    double m1, m2, x;
    int i, status = 2, n = cfg->runs;

    memset(&srv, 0, sizeof srv);
    memset(&k, 0, sizeof k);
    one.cfg = *cfg;
    many.cfg = *cfg;
    one.cfg.partitions = 0;
    if (many.cfg.partitions == 0)
        many.cfg.partitions = 6;
    one.name = "one master, P = 1";
    snprintf(name, sizeof name, "cluster, 3 masters%s, P = %d",
             cfg->cluster_replicas ? " + replicas" : "", many.cfg.partitions);
    many.name = name;
    if (lat == NULL || bench_bm_reserve(&seen, cfg->messages) != 0) {
        fprintf(stderr, "redq-bench: out of memory\n");
        goto out;
    }
    if (bench_server_start(&srv, &one.tg, err, sizeof err) != 0 ||
        side_open_of(&one, one.tg.url, err, sizeof err) != 0) {
        fprintf(stderr, "redq-bench: one master: %s\n", err);
        goto out;
    }
    one.tg.throwaway = 1;
    if (bench_cluster_start(&k, cfg->cluster_replicas, err, sizeof err) != 0 ||
        side_open_of(&many, k.url, err, sizeof err) != 0) {
        fprintf(stderr, "redq-bench: cluster: %s\n", err);
        goto out;
    }
    status = 1;
    for (i = 0; i < n; i++) {
        side_of *sides[2] = {&one, &many};
        int j;
        for (j = 0; j < 2; j++) {
            side_of *s = sides[j];
            if (bench_once(&s->cfg, s->sc, &seen, lat, &res, err, sizeof err) != 0) {
                fprintf(stderr, "redq-bench: %s, %s run %d: %s\n", s->name,
                        bench_mode_names[cfg->mode], i + 1, err);
                goto out;
            }
            s->rate[i] = res.msgs_per_sec;
            s->cpu[i] = res.cpu;
            s->scpu[i] = res.server_cpu;
            if (bench_signal) {
                status = 130;
                goto out;
            }
        }
    }
    mmm(one.rate, n, &m1, &x, &x);
    mmm(many.rate, n, &m2, &x, &x);
    if (cfg->json) {
        json_t *root = json_object(), *a;
        side_of *sides[2] = {&one, &many};
        int j;
        json_object_set_new(root, "mode", json_string(bench_mode_names[cfg->mode]));
        json_object_set_new(root, "reliable", json_boolean(cfg->reliable));
        json_object_set_new(root, "messages", json_integer((json_int_t)cfg->messages));
        json_object_set_new(root, "payload", json_integer((json_int_t)cfg->payload));
        json_object_set_new(root, "runs", json_integer(n));
        for (j = 0; j < 2; j++) {
            json_t *o = json_object();
            double med, mn, mx;
            mmm(sides[j]->rate, n, &med, &mn, &mx);
            json_object_set_new(o, "what", json_string(sides[j]->name));
            json_object_set_new(o, "msgs_per_sec", json_real(med));
            json_object_set_new(o, "msgs_per_sec_min", json_real(mn));
            json_object_set_new(o, "msgs_per_sec_max", json_real(mx));
            a = json_array();
            for (i = 0; i < n; i++) {
                json_t *r = json_object();
                json_object_set_new(r, "msgs_per_sec", json_real(sides[j]->rate[i]));
                json_object_set_new(r, "cpu_seconds", json_real(sides[j]->cpu[i]));
                json_object_set_new(r, "server_cpu_seconds", json_real(sides[j]->scpu[i]));
                json_array_append_new(a, r);
            }
            json_object_set_new(o, "per_run", a);
            json_object_set_new(root, j == 0 ? "one_master" : "cluster", o);
        }
        json_object_set_new(root, "ratio", json_real(m1 > 0 ? m2 / m1 : 0));
        json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER);
        fputc('\n', stdout);
        json_decref(root);
    } else {
        printf("redq-bench %s%s --vs-cluster: %llu msgs x %zu B per run, %d run%s each, "
               "alternating\n",
               bench_mode_names[cfg->mode], cfg->reliable ? " --reliable" : "",
               (unsigned long long)cfg->messages, cfg->payload, n, n == 1 ? "" : "s");
        printf("  %-34s %10s %10s %10s %9s %9s\n", "", "msg/s", "min", "max",
               "client", "servers");
        printf("  %-34s %10s %10s %10s %9s %9s\n", "", "median", "", "", "us/msg",
               "us/msg");
        side_print(&one, n, (double)cfg->messages);
        side_print(&many, n, (double)cfg->messages);
        printf("  %-34s %10.2f\n", "ratio cluster / one master", m1 > 0 ? m2 / m1 : 0);
        printf("  per run one/cluster msg/s:");
        for (i = 0; i < n; i++)
            printf(" %.0f/%.0f", one.rate[i], many.rate[i]);
        printf("\n  cluster: %s\n", k.url);
    }
    status = 0;
out:
    if (one.sc)
        redisFree(one.sc);
    if (many.sc)
        redisFree(many.sc);
    side_servers_close(&one.servers);
    side_servers_close(&many.servers);
    bench_cluster_stop(&k);
    bench_server_stop(&srv);
    free(seen.w);
    free(lat);
    return status;
}
