/*
 * redq-bench: how fast redq moves messages, measured next to redis-benchmark
 * on the same server in the same run.
 *
 *   redq-bench MODE [--url URL] [--messages N | --seconds S] [--payload BYTES]
 *              [--pool N] [--batch N] [--linger-us N] [--rate R] [--compare]
 *              [--json] [-r N] [--queue NAME]
 *
 * MODE is produce, consume, e2e, latency, idle or memory (--help says what
 * each measures). Without --url and without $REDQ_URL a throwaway
 * redis-server is started on a free 127.0.0.1 port and stopped at exit.
 *
 * Why the comparison: the machine this runs on is small, shared and noisy,
 * and the client shares its cores with the server. An absolute msg/s figure
 * says little; the ratio to redis-benchmark measured minutes apart on the
 * same server says how close redq gets to what the server can take.
 *
 * What is measured, honestly:
 *  - The clock starts when the first message is produced (connections are
 *    made and ready before that) and stops at the last delivery report or
 *    the last consumed message.
 *  - Every message carries its sequence number and a timestamp in its first
 *    16 bytes; the rest of the payload is filler, so a payload is exactly
 *    --payload bytes. Reports and consumed messages are checked against a
 *    bitmap: a failed report, a lost or a duplicated message ends the run
 *    with exit status 1.
 *  - Latencies go into a log-linear histogram (1/64 relative resolution), so
 *    recording costs no allocation; percentiles are over all runs.
 *  - In latency mode messages are due at fixed intervals and the latency is
 *    taken from when a message was *due*, not when it was sent, so a stalled
 *    sender shows up in the figures instead of hiding (coordinated omission).
 *
 * Exit status: 0 clean, 1 a run failed (error, failed report, lost or
 * duplicated message), 2 usage or set-up error, 77 no redis-server to start
 * (meson reports the benchmark as skipped), 130 interrupted.
 */
#include "redq.h"
#include "redq_private.h" /* redq__url_parse, for the side connection */

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

#include <event2/event.h>
#include <hiredis/hiredis.h>
#include <jansson.h>

#if defined(__GNUC__)
#define PRINTF_LIKE(f, a) __attribute__((format(printf, f, a)))
#define NOINLINE __attribute__((noinline))
#else
#define PRINTF_LIKE(f, a)
#define NOINLINE
#endif

#define DEFAULT_QUEUE "redq:bench"
#define DEFAULT_MESSAGES 1000000u
#define DEFAULT_LATENCY_SECONDS 5.0
#define DEFAULT_LATENCY_RATE 10000.0
#define DEFAULT_IDLE_SECONDS 10.0

/* Bytes of every payload taken by the sequence number and the timestamp. */
#define STAMP_BYTES 16

/* Messages produced per loop iteration at most. One callback filling the
 * whole window (100000 by default) before the loop writes anything would
 * serialise producing and sending; a few thousand keeps both going. */
#define PRODUCE_CHUNK 4096

/* Idle mode: the pop timeout. Short, so that 10 s cover several timeouts
 * and the "one command per connection per timeout" claim can be counted. */
#define IDLE_POP_TIMEOUT_MS 1000

/* A run with no progress for this long has lost something: fail it. */
#define STALL_SECONDS 15
/* Handles must be connected and ready within this. */
#define CONNECT_SECONDS 10
/* Memory mode: how long the server stays paused at most (it is unpaused as
 * soon as the snapshot is taken), and how long to let writes settle. */
#define MEMORY_PAUSE_MS 60000
#define MEMORY_SETTLE_MS 200

/* redis-benchmark's multi-value LPUSH: values per command, as in issue 4. */
#define RB_VALUES 100

enum mode { M_PRODUCE, M_CONSUME, M_E2E, M_LATENCY, M_IDLE, M_MEMORY };
static const char *const mode_names[] = {"produce", "consume", "e2e",
                                         "latency", "idle",    "memory"};

enum phase { PH_CONNECT, PH_MEASURE, PH_TEARDOWN };

static volatile sig_atomic_t g_signal;

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */
/* ------------------------------------------------------------------------ */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !g_signal)
        ;
}

/* CPU seconds (user + system) used by this process so far; children (the
 * throwaway server, redis-benchmark) are not included. */
static double cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0.0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

static long long peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (long long)ru.ru_maxrss * 1024; /* Linux reports KiB */
}

/* Resident set size right now (ru_maxrss only ever grows). */
static long long current_rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    long long size = 0, resident = -1;
    long page = sysconf(_SC_PAGESIZE);
    if (f == NULL)
        return -1;
    if (fscanf(f, "%lld %lld", &size, &resident) != 2)
        resident = -1;
    fclose(f);
    return resident < 0 || page <= 0 ? -1 : resident * page;
}

static void stamp(char *payload, uint64_t seq, uint64_t ts)
{
    memcpy(payload, &seq, 8);
    memcpy(payload + 8, &ts, 8);
}

static void unstamp(const void *payload, uint64_t *seq, uint64_t *ts)
{
    memcpy(seq, payload, 8);
    memcpy(ts, (const char *)payload + 8, 8);
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Median of n values (n >= 1); v is reordered. */
static double median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}

/* ------------------------------------------------------------------------ */
/* latency histogram: log-linear, 64 sub-buckets per power of two            */
/* ------------------------------------------------------------------------ */

#define H_SUB_BITS 6
#define H_SUB (1u << H_SUB_BITS)
#define H_MAX_EXP 47 /* 2^47 ns is about 39 hours: anything above is clamped */
#define H_BUCKETS (H_SUB + (H_MAX_EXP - H_SUB_BITS + 1) * H_SUB)

typedef struct hist {
    uint64_t n, max;
    uint64_t b[H_BUCKETS];
} hist;

static unsigned ilog2_u64(uint64_t v)
{
#if defined(__GNUC__)
    return 63u - (unsigned)__builtin_clzll(v);
#else
    unsigned k = 0;
    while (v >>= 1)
        k++;
    return k;
#endif
}

static void hist_add(hist *h, uint64_t v)
{
    size_t i;
    if (v < H_SUB) {
        i = (size_t)v;
    } else {
        unsigned k = ilog2_u64(v);
        if (k > H_MAX_EXP)
            i = H_BUCKETS - 1;
        else
            i = H_SUB + (size_t)(k - H_SUB_BITS) * H_SUB +
                (size_t)((v >> (k - H_SUB_BITS)) - H_SUB);
    }
    h->b[i]++;
    h->n++;
    if (v > h->max)
        h->max = v;
}

/* The middle of bucket i. */
static uint64_t hist_bucket_value(size_t i)
{
    size_t j, k, sub;
    uint64_t width;
    if (i < H_SUB)
        return i;
    j = i - H_SUB;
    k = j / H_SUB + H_SUB_BITS;
    sub = j % H_SUB;
    width = (uint64_t)1 << (k - H_SUB_BITS);
    return ((uint64_t)(H_SUB + sub) << (k - H_SUB_BITS)) + (width - 1) / 2;
}

/* The value at quantile q (0 < q <= 1), never above the exact maximum. */
static uint64_t hist_quantile(const hist *h, double q)
{
    double want = q * (double)h->n;
    uint64_t rank = (uint64_t)want, seen = 0;
    size_t i;
    if ((double)rank < want)
        rank++;
    if (rank == 0)
        rank = 1;
    for (i = 0; i < H_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_bucket_value(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

static void hist_merge(hist *into, const hist *from)
{
    size_t i;
    for (i = 0; i < H_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->n += from->n;
    if (from->max > into->max)
        into->max = from->max;
}

/* ------------------------------------------------------------------------ */
/* bitmap of sequence numbers seen                                           */
/* ------------------------------------------------------------------------ */

typedef struct bitmap {
    uint64_t *w;
    size_t nwords;
} bitmap;

/* Make room for bit `bit`. Grows by doubling, so --seconds runs (whose
 * message count is unknown up front) allocate O(log n) times, not per
 * message. 0 or -1 (out of memory). */
static int bm_reserve(bitmap *b, uint64_t bit)
{
    size_t need = (size_t)(bit / 64) + 1, n;
    uint64_t *w;
    if (need <= b->nwords)
        return 0;
    n = b->nwords ? b->nwords * 2 : 1024;
    if (n < need)
        n = need;
    w = realloc(b->w, n * sizeof *w);
    if (w == NULL)
        return -1;
    memset(w + b->nwords, 0, (n - b->nwords) * sizeof *w);
    b->w = w;
    b->nwords = n;
    return 0;
}

/* 0: newly set, 1: was set already (a duplicate), -1: out of memory. */
static int bm_test_set(bitmap *b, uint64_t bit)
{
    uint64_t mask = (uint64_t)1 << (bit % 64);
    size_t i = (size_t)(bit / 64);
    if (i >= b->nwords && bm_reserve(b, bit) != 0)
        return -1;
    if (b->w[i] & mask)
        return 1;
    b->w[i] |= mask;
    return 0;
}

static void bm_clear(bitmap *b)
{
    if (b->w != NULL)
        memset(b->w, 0, b->nwords * sizeof *b->w);
}

/* ------------------------------------------------------------------------ */
/* where the server is                                                       */
/* ------------------------------------------------------------------------ */

typedef struct target {
    char url[1024]; /* what redq is given */
    char host[256];
    char port_str[8];
    int port;
    char path[512]; /* unix socket, or "" */
    char user[128];
    char password[256];
    int db;
    int throwaway; /* started by us */
} target;

/* The URL forms redq.h documents, parsed by the library's own parser
 * (lib/url.c), for the blocking side connection. */
static int parse_target(const char *url, target *t)
{
    redq__url u;
    int rc = -1;

    memset(t, 0, sizeof *t);
    if (strlen(url) >= sizeof t->url)
        return -1;
    strcpy(t->url, url);
    if (redq__url_parse(&u, url, NULL, 0) != 0)
        return -1;
    if (snprintf(t->host, sizeof t->host, "%s", u.host ? u.host : "") <
            (int)sizeof t->host &&
        snprintf(t->path, sizeof t->path, "%s", u.path ? u.path : "") <
            (int)sizeof t->path &&
        snprintf(t->user, sizeof t->user, "%s", u.user ? u.user : "") <
            (int)sizeof t->user &&
        snprintf(t->password, sizeof t->password, "%s",
                 u.password ? u.password : "") < (int)sizeof t->password)
        rc = 0;
    t->port = u.is_unix ? 6379 : u.port;
    t->db = u.db;
    snprintf(t->port_str, sizeof t->port_str, "%d", t->port);
    redq__url_free(&u);
    return rc;
}

/* ------------------------------------------------------------------------ */
/* the blocking side connection (setup, LLEN, INFO, RENAME, CLIENT PAUSE)    */
/* ------------------------------------------------------------------------ */

static redisContext *sync_connect(const target *t, char *err, size_t errlen)
{
    const struct timeval tv = {10, 0};
    redisContext *c = t->path[0] ? redisConnectUnixWithTimeout(t->path, tv)
                                 : redisConnectWithTimeout(t->host, t->port, tv);
    redisReply *r;

    if (c == NULL) {
        snprintf(err, errlen, "out of memory");
        return NULL;
    }
    if (c->err) {
        snprintf(err, errlen, "connect %.300s: %s", t->url, c->errstr);
        redisFree(c);
        return NULL;
    }
    redisSetTimeout(c, tv);
    if (t->password[0]) {
        const char *argv[3] = {"AUTH", t->user, t->password};
        int argc = 3;
        if (!t->user[0]) {
            argv[1] = t->password;
            argc = 2;
        }
        r = redisCommandArgv(c, argc, argv, NULL);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "AUTH: %s", r ? r->str : c->errstr);
            if (r)
                freeReplyObject(r);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    if (t->db != 0) {
        char db[16];
        const char *argv[2] = {"SELECT", db};
        snprintf(db, sizeof db, "%d", t->db);
        r = redisCommandArgv(c, 2, argv, NULL);
        if (r == NULL || r->type == REDIS_REPLY_ERROR) {
            snprintf(err, errlen, "SELECT: %s", r ? r->str : c->errstr);
            if (r)
                freeReplyObject(r);
            redisFree(c);
            return NULL;
        }
        freeReplyObject(r);
    }
    return c;
}

/* Run a command; the reply (caller frees), or NULL with err filled (an
 * error reply counts as a failure). */
static redisReply *sync_cmd(redisContext *c, char *err, size_t errlen, int argc,
                            const char **argv)
{
    redisReply *r = redisCommandArgv(c, argc, argv, NULL);
    if (r == NULL) {
        snprintf(err, errlen, "%s: %s", argv[0],
                 c->errstr[0] ? c->errstr : "no reply");
        return NULL;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        snprintf(err, errlen, "%s: %s", argv[0], r->str);
        freeReplyObject(r);
        return NULL;
    }
    return r;
}

static int sync_del(redisContext *c, const char *key, char *err, size_t errlen)
{
    const char *argv[2] = {"DEL", key};
    redisReply *r = sync_cmd(c, err, errlen, 2, argv);
    if (r == NULL)
        return -1;
    freeReplyObject(r);
    return 0;
}

static int sync_llen(redisContext *c, const char *key, long long *len,
                     char *err, size_t errlen)
{
    const char *argv[2] = {"LLEN", key};
    redisReply *r = sync_cmd(c, err, errlen, 2, argv);
    if (r == NULL)
        return -1;
    if (r->type != REDIS_REPLY_INTEGER) {
        snprintf(err, errlen, "LLEN: unexpected reply type %d", r->type);
        freeReplyObject(r);
        return -1;
    }
    *len = r->integer;
    freeReplyObject(r);
    return 0;
}

/* INFO <section> as a malloc'd string, or NULL. */
static char *sync_info(redisContext *c, const char *section, char *err,
                       size_t errlen)
{
    const char *argv[2] = {"INFO", section};
    redisReply *r = sync_cmd(c, err, errlen, 2, argv);
    char *s = NULL;
    if (r == NULL)
        return NULL;
    if (r->type == REDIS_REPLY_STRING && (s = malloc((size_t)r->len + 1)) != NULL) {
        memcpy(s, r->str, (size_t)r->len);
        s[r->len] = '\0';
    } else {
        snprintf(err, errlen, "INFO %s: unexpected reply", section);
    }
    freeReplyObject(r);
    return s;
}

/* Sum of `calls=` of the pop commands in INFO commandstats. */
static long long pop_calls(const char *info)
{
    static const char *const names[] = {"cmdstat_blmpop:", "cmdstat_brpop:",
                                        "cmdstat_rpop:", "cmdstat_lmpop:"};
    long long sum = 0;
    size_t i;
    for (i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *p = strstr(info, names[i]);
        if (p != NULL && (p = strstr(p, "calls=")) != NULL)
            sum += strtoll(p + 6, NULL, 10);
    }
    return sum;
}

/* ------------------------------------------------------------------------ */
/* the throwaway server                                                      */
/* ------------------------------------------------------------------------ */

typedef struct local_server {
    pid_t pid;
    char dir[256];
    char log[300];
} local_server;

/* A port the kernel just considered free on 127.0.0.1. Someone may take it
 * before redis-server binds it; the caller retries with another. */
static int free_port(void)
{
    struct sockaddr_in a;
    socklen_t len = sizeof a;
    int fd = socket(AF_INET, SOCK_STREAM, 0), port = -1;
    if (fd < 0)
        return -1;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (bind(fd, (struct sockaddr *)&a, sizeof a) == 0 &&
        getsockname(fd, (struct sockaddr *)&a, &len) == 0)
        port = ntohs(a.sin_port);
    close(fd);
    return port;
}

static void print_log_tail(const char *path)
{
    char buf[4096];
    FILE *f = fopen(path, "r");
    long size;
    size_t n;
    if (f == NULL)
        return;
    if (fseek(f, 0, SEEK_END) == 0 && (size = ftell(f)) > (long)sizeof buf - 1)
        fseek(f, size - (long)sizeof buf + 1, SEEK_SET);
    else
        fseek(f, 0, SEEK_SET);
    n = fread(buf, 1, sizeof buf - 1, f);
    buf[n] = '\0';
    fclose(f);
    if (n > 0)
        fprintf(stderr, "redq-bench: end of %s:\n%s\n", path, buf);
}

static int log_mentions(const char *path, const char *what)
{
    char line[1024];
    int found = 0;
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return 0;
    while (!found && fgets(line, sizeof line, f) != NULL)
        found = strstr(line, what) != NULL;
    fclose(f);
    return found;
}

/* Remove the directory we made with mkdtemp and whatever redis left in it
 * (its log, a dump if it made one). Only ever called on our own dir. */
static void remove_dir(const char *dir)
{
    DIR *d = opendir(dir);
    struct dirent *e;
    char path[600];
    if (d != NULL) {
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void server_stop(local_server *s)
{
    int i, st;
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        for (i = 0; i < 1000; i++) { /* 10 s */
            if (waitpid(s->pid, &st, WNOHANG) == s->pid)
                break;
            sleep_ms(10);
        }
        if (i == 1000) {
            fprintf(stderr, "redq-bench: redis-server %ld ignored SIGTERM; killing it\n",
                    (long)s->pid);
            kill(s->pid, SIGKILL);
            waitpid(s->pid, &st, 0);
        }
        s->pid = 0;
    }
    if (s->dir[0]) {
        remove_dir(s->dir);
        s->dir[0] = '\0';
    }
}

/* Start redis-server on a free loopback port without persistence. 0, or -1
 * with err filled; 77 when there is no redis-server to run. */
static int server_start(local_server *s, target *t, char *err, size_t errlen)
{
    const char *bin = getenv("REDQ_BENCH_REDIS_SERVER");
    const char *tmp = getenv("TMPDIR");
    int attempt;

    memset(s, 0, sizeof *s);
    if (bin == NULL || !*bin)
        bin = "redis-server";
    if (tmp == NULL || !*tmp)
        tmp = "/tmp";
    snprintf(s->dir, sizeof s->dir, "%s/redq-bench.XXXXXX", tmp);
    if (mkdtemp(s->dir) == NULL) {
        snprintf(err, errlen, "mkdtemp %s: %s", s->dir, strerror(errno));
        s->dir[0] = '\0';
        return -1;
    }
    snprintf(s->log, sizeof s->log, "%s/redis.log", s->dir);

    for (attempt = 0; attempt < 8; attempt++) {
        char port[16];
        const char *argv[] = {bin,        "--port",       port,
                              "--bind",   "127.0.0.1",    "--save",
                              "",         "--appendonly", "no",
                              "--dir",    s->dir,         "--daemonize",
                              "no",       NULL};
        uint64_t deadline;
        int p = free_port(), st;
        pid_t pid;

        if (p < 0) {
            snprintf(err, errlen, "no free port on 127.0.0.1: %s", strerror(errno));
            return -1;
        }
        snprintf(port, sizeof port, "%d", p);
        pid = fork();
        if (pid < 0) {
            snprintf(err, errlen, "fork: %s", strerror(errno));
            return -1;
        }
        if (pid == 0) {
            int fd = open(s->log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
            int nul = open("/dev/null", O_RDONLY);
            /* Own process group: a Ctrl-C reaches us, and we stop the
             * server in order. If we die anyway, so does the server. */
            setpgid(0, 0);
#ifdef __linux__
            prctl(PR_SET_PDEATHSIG, SIGTERM);
#endif
            if (fd >= 0) {
                dup2(fd, 1);
                dup2(fd, 2);
            }
            if (nul >= 0)
                dup2(nul, 0);
            execvp(bin, (char *const *)argv);
            _exit(127);
        }
        s->pid = pid;
        deadline = now_ns() + 10000000000u;
        for (;;) {
            redisContext *c;
            if (waitpid(pid, &st, WNOHANG) == pid) {
                s->pid = 0;
                if (WIFEXITED(st) && WEXITSTATUS(st) == 127) {
                    snprintf(err, errlen, "cannot run %s (set REDQ_BENCH_REDIS_SERVER or give --url)",
                             bin);
                    return 77;
                }
                break; /* lost the port, probably: try another */
            }
            c = redisConnect("127.0.0.1", p);
            if (c != NULL && !c->err) {
                redisReply *r = redisCommand(c, "PING");
                int ok = r != NULL && r->type == REDIS_REPLY_STATUS &&
                         strcmp(r->str, "PONG") == 0;
                if (r)
                    freeReplyObject(r);
                redisFree(c);
                if (ok) {
                    char url[64];
                    snprintf(url, sizeof url, "redis://127.0.0.1:%d", p);
                    parse_target(url, t);
                    t->throwaway = 1;
                    return 0;
                }
            } else if (c != NULL) {
                redisFree(c);
            }
            if (now_ns() > deadline || g_signal) {
                snprintf(err, errlen, "redis-server on port %d did not answer PING", p);
                print_log_tail(s->log);
                server_stop(s);
                return -1;
            }
            sleep_ms(20);
        }
        if (!log_mentions(s->log, "Address already in use")) {
            snprintf(err, errlen, "redis-server exited during start-up");
            print_log_tail(s->log);
            return -1;
        }
    }
    snprintf(err, errlen, "could not find a free port for redis-server");
    return -1;
}

/* ------------------------------------------------------------------------ */
/* configuration                                                             */
/* ------------------------------------------------------------------------ */

typedef struct config {
    int mode;
    const char *url;
    uint64_t messages;
    int messages_set;
    double seconds;
    int seconds_set;
    size_t payload;
    size_t pool;
    size_t batch;
    int batch_set;
    unsigned linger_us;
    int linger_set;
    size_t max_queue; /* producer max_queue_len (0: none) */
    double rate;
    int rate_set;
    int compare;
    int json;
    int runs;
    int reliable;
    const char *queue;
} config;

/* ------------------------------------------------------------------------ */
/* one run                                                                   */
/* ------------------------------------------------------------------------ */

typedef struct run {
    const config *cfg;
    struct event_base *base;
    struct event *ev_pump;   /* produce the next chunk (or the due messages) */
    struct event *ev_poll;   /* connect phase: are the handles ready yet? */
    struct event *ev_timer;  /* idle window end; memory snapshot */
    struct event *ev_watch;  /* stall detection + progress line */
    struct event *ev_sig[2]; /* SIGINT, SIGTERM */

    redq_producer *p;
    redq_consumer *c;
    int nopen; /* handles whose close callback is still to come */

    const char *pqueue; /* where the producer pushes */
    char *payload;
    size_t payload_len;

    int mode;
    int fill; /* pre-filling for consume: nothing is measured */
    int phase;
    int want_producer, want_consumer;
    uint64_t connect_deadline;

    uint64_t want;  /* messages to produce, or to consume in consume mode */
    int open_ended; /* --seconds: produce until deadline_ns */
    uint64_t deadline_ns;
    uint64_t produced, reported, consumed;
    uint64_t t0, t_last; /* first produce (or RENAME), last report/message */
    int producing_done;
    int waiting_ready;

    bitmap *seen;
    hist *lat; /* NULL: latency not recorded */

    /* latency mode */
    double interval_ns;
    uint64_t max_lag_ns;
    /* e2e, latency: most messages acknowledged and not yet consumed, i.e.
     * waiting in the Redis list */
    uint64_t max_backlog;

    /* memory mode */
    redisContext *sc;
    int snap_taken;
    long long rss_before, rss_pending;
    size_t pending_at_snap, pending_bytes_at_snap;

    /* idle mode */
    int idle_over;

    /* watchdog */
    uint64_t wd_count, wd_ns;
    int tty;
    int unexpected; /* messages that arrived after the run */

    int failed;
    char err[512];
    char last_log[512];
} run;

static void run_fail(run *r, const char *fmt, ...) PRINTF_LIKE(2, 3);

static void run_fail(run *r, const char *fmt, ...)
{
    va_list ap;
    if (!r->failed) {
        va_start(ap, fmt);
        vsnprintf(r->err, sizeof r->err, fmt, ap);
        va_end(ap);
        r->failed = 1;
    }
    if (r->phase != PH_TEARDOWN)
        event_base_loopbreak(r->base);
}

static void clear_progress(const run *r)
{
    if (r->tty)
        fputs("\r\033[K", stderr);
}

static void on_log(int level, int code, const char *msg, void *user)
{
    static const char *const names[] = {"error", "warn", "info", "debug"};
    run *r = user;
    snprintf(r->last_log, sizeof r->last_log, "%s", msg);
    clear_progress(r);
    fprintf(stderr, "redq %s: %s%s%s\n",
            level >= 0 && level <= 3 ? names[level] : "?", msg,
            code < 0 ? " " : "", code < 0 ? redq_err_name(code) : "");
}

static void schedule_pump(run *r)
{
    static const struct timeval zero = {0, 0};
    evtimer_add(r->ev_pump, &zero);
}

static void check_done(run *r)
{
    int done = 0;
    if (r->phase != PH_MEASURE || r->failed)
        return;
    switch (r->mode) {
    case M_PRODUCE:
        done = r->producing_done && r->reported == r->produced;
        break;
    case M_MEMORY:
        done = r->producing_done && r->snap_taken && r->reported == r->produced;
        break;
    case M_CONSUME:
        done = r->consumed == r->want;
        break;
    case M_E2E:
    case M_LATENCY:
        done = r->producing_done && r->reported == r->produced &&
               r->consumed == r->produced;
        break;
    case M_IDLE:
        done = r->idle_over;
        break;
    default:
        break;
    }
    if (done)
        event_base_loopbreak(r->base);
}

static void mark_producing_done(run *r)
{
    struct timeval settle = {0, MEMORY_SETTLE_MS * 1000};
    if (r->producing_done)
        return;
    r->producing_done = 1;
    r->want = r->produced;
    if (r->mode == M_MEMORY && !r->fill)
        evtimer_add(r->ev_timer, &settle);
    check_done(r);
}

/* Produce up to PRODUCE_CHUNK messages, then let the loop run. */
static void pump_cb(evutil_socket_t fd, short what, void *arg)
{
    run *r = arg;
    int i;
    (void)fd;
    (void)what;
    if (r->phase != PH_MEASURE || r->failed || r->producing_done)
        return;
    r->waiting_ready = 0;
    for (i = 0; i < PRODUCE_CHUNK; i++) {
        uint64_t t = now_ns();
        int rc;
        if (r->t0 == 0) {
            r->t0 = t;
            r->deadline_ns = t + (uint64_t)(r->cfg->seconds * 1e9);
        }
        if (r->open_ended ? t >= r->deadline_ns : r->produced >= r->want) {
            mark_producing_done(r);
            return;
        }
        stamp(r->payload, r->produced, t);
        rc = redq_produce(r->p, r->pqueue, r->payload, r->payload_len, NULL);
        if (rc == REDQ_EFULL) {
            r->waiting_ready = 1; /* on_ready pumps again */
            return;
        }
        if (rc < 0) {
            run_fail(r, "redq_produce: %s (%s)", redq_strerror(rc),
                     redq_err_name(rc));
            return;
        }
        r->produced++;
    }
    schedule_pump(r);
}

/* Latency mode: send every message that is due by now, each stamped with
 * the time it was due, then sleep until the next one is. */
static void sched_cb(evutil_socket_t fd, short what, void *arg)
{
    run *r = arg;
    uint64_t now = now_ns(), due = 0;
    (void)fd;
    (void)what;
    if (r->phase != PH_MEASURE || r->failed || r->producing_done)
        return;
    r->waiting_ready = 0;
    if (r->t0 == 0)
        r->t0 = now;
    while (r->produced < r->want) {
        int rc;
        due = r->t0 + (uint64_t)((double)r->produced * r->interval_ns);
        if (due > now)
            break;
        if (now - due > r->max_lag_ns)
            r->max_lag_ns = now - due;
        stamp(r->payload, r->produced, due);
        rc = redq_produce(r->p, r->pqueue, r->payload, r->payload_len, NULL);
        if (rc == REDQ_EFULL) {
            /* Still due: its latency keeps counting from `due`. */
            r->waiting_ready = 1;
            return;
        }
        if (rc < 0) {
            run_fail(r, "redq_produce: %s (%s)", redq_strerror(rc),
                     redq_err_name(rc));
            return;
        }
        r->produced++;
    }
    if (r->produced >= r->want) {
        mark_producing_done(r);
        return;
    }
    {
        uint64_t wait = due - now;
        struct timeval tv;
        tv.tv_sec = (time_t)(wait / 1000000000u);
        tv.tv_usec = (suseconds_t)(wait % 1000000000u / 1000u);
        evtimer_add(r->ev_pump, &tv);
    }
}

static void on_ready(redq_producer *p, void *user)
{
    run *r = user;
    (void)p;
    if (r->waiting_ready)
        schedule_pump(r);
}

static void on_delivery(redq_producer *p, const redq_report *rep, void *user)
{
    run *r = user;
    uint64_t seq, ts, t;
    (void)p;
    if (r->phase == PH_TEARDOWN)
        return; /* REDQ_ECLOSED reports of a run that failed already */
    if (rep->status != 0) {
        run_fail(r, "delivery report failed: %s (%s)",
                 rep->errstr ? rep->errstr : redq_strerror(rep->status),
                 redq_err_name(rep->status));
        return;
    }
    r->reported++;
    if (r->mode == M_PRODUCE && !r->fill) {
        t = now_ns();
        r->t_last = t;
        if (rep->len != r->payload_len) {
            run_fail(r, "report for a %zu-byte message; sent %zu", rep->len,
                     r->payload_len);
            return;
        }
        unstamp(rep->payload, &seq, &ts);
        if (seq >= r->produced) {
            run_fail(r, "report for message %llu, never produced",
                     (unsigned long long)seq);
            return;
        }
        switch (bm_test_set(r->seen, seq)) {
        case 0:
            break;
        case 1:
            run_fail(r, "second report for message %llu", (unsigned long long)seq);
            return;
        default:
            run_fail(r, "out of memory");
            return;
        }
        if (r->lat != NULL)
            hist_add(r->lat, t - ts);
    } else if (r->mode == M_MEMORY) {
        r->t_last = now_ns();
    } else if (r->reported > r->consumed &&
               r->reported - r->consumed > r->max_backlog) {
        r->max_backlog = r->reported - r->consumed;
    }
    check_done(r);
}

static void on_message(redq_consumer *c, redq_message *msg, void *user)
{
    run *r = user;
    size_t len = redq_msg_len(msg);
    uint64_t seq, ts, t = now_ns(), limit;
    int rc;
    (void)c;

    if (r->phase != PH_MEASURE) {
        /* After the run: nothing should be left to pop. */
        r->unexpected++;
        redq_ack(msg);
        return;
    }
    if (len != r->payload_len) {
        redq_ack(msg);
        run_fail(r, "consumed a %zu-byte message; expected %zu", len,
                 r->payload_len);
        return;
    }
    unstamp(redq_msg_data(msg), &seq, &ts);
    limit = r->mode == M_CONSUME ? r->want : r->produced;
    if (seq >= limit) {
        redq_ack(msg);
        run_fail(r, "consumed message %llu, which was never produced",
                 (unsigned long long)seq);
        return;
    }
    rc = bm_test_set(r->seen, seq);
    if (rc != 0) {
        redq_ack(msg);
        if (rc > 0)
            run_fail(r, "message %llu consumed twice", (unsigned long long)seq);
        else
            run_fail(r, "out of memory");
        return;
    }
    if (r->lat != NULL && r->mode != M_CONSUME)
        hist_add(r->lat, t - ts);
    r->consumed++;
    r->t_last = t;
    rc = redq_ack(msg);
    if (rc != 0) {
        run_fail(r, "redq_ack: %s", redq_strerror(rc));
        return;
    }
    check_done(r);
}

/* Connect phase: leave the loop once every handle is ready. */
static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
    run *r = arg;
    int ready = 1;
    (void)fd;
    (void)what;
    if (r->want_producer) {
        redq_producer_stats st;
        redq_producer_get_stats(r->p, &st);
        ready = ready && st.connected;
    }
    if (r->want_consumer) {
        redq_consumer_stats st;
        redq_consumer_get_stats(r->c, &st);
        ready = ready && st.connected == r->cfg->pool;
    }
    if (ready) {
        event_del(r->ev_poll);
        event_base_loopbreak(r->base);
    } else if (now_ns() > r->connect_deadline) {
        run_fail(r, "not connected to %s within %d s%s%s", r->cfg->url,
                 CONNECT_SECONDS, r->last_log[0] ? ": " : "", r->last_log);
    }
}

/* Memory mode: everything is produced and the server is paused. Take the
 * snapshot, then let the server go and drain. */
static void memory_snap(run *r)
{
    redq_producer_stats st;
    char err[256];
    const char *argv[2] = {"CLIENT", "UNPAUSE"};
    redisReply *rep;

    redq_producer_get_stats(r->p, &st);
    r->rss_pending = current_rss_bytes();
    r->pending_at_snap = st.pending_msgs;
    r->pending_bytes_at_snap = st.pending_bytes;
    r->snap_taken = 1;
    rep = sync_cmd(r->sc, err, sizeof err, 2, argv);
    if (rep == NULL) {
        run_fail(r, "%s", err);
        return;
    }
    freeReplyObject(rep);
    r->t0 = now_ns(); /* from here on it is the drain rate */
    check_done(r);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
    run *r = arg;
    (void)fd;
    (void)what;
    if (r->mode == M_MEMORY) {
        memory_snap(r);
    } else if (r->mode == M_IDLE) {
        r->idle_over = 1;
        check_done(r);
    }
}

static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
    run *r = arg;
    uint64_t t = now_ns(), count = r->produced + r->reported + r->consumed;
    (void)fd;
    (void)what;
    if (g_signal) {
        run_fail(r, "interrupted");
        return;
    }
    if (count != r->wd_count) {
        r->wd_count = count;
        r->wd_ns = t;
    } else if (r->phase == PH_MEASURE && !r->snap_taken &&
               r->mode == M_MEMORY && r->producing_done) {
        r->wd_ns = t; /* paused on purpose */
    } else if (t - r->wd_ns > (uint64_t)STALL_SECONDS * 1000000000u &&
               r->producing_done && r->reported == r->produced &&
               r->consumed < r->produced) {
        run_fail(r, "%llu of %llu acknowledged messages never reached the consumer "
                    "(nothing for %d s): lost",
                 (unsigned long long)(r->produced - r->consumed),
                 (unsigned long long)r->produced, STALL_SECONDS);
        return;
    } else if (t - r->wd_ns > (uint64_t)STALL_SECONDS * 1000000000u) {
        run_fail(r, "no progress for %d s: produced %llu, reported %llu, consumed %llu%s%s",
                 STALL_SECONDS, (unsigned long long)r->produced,
                 (unsigned long long)r->reported,
                 (unsigned long long)r->consumed, r->last_log[0] ? "; last log: " : "",
                 r->last_log);
        return;
    }
    if (r->tty && r->phase == PH_MEASURE && r->t0 != 0) {
        double el = (double)(t - r->t0) / 1e9;
        fprintf(stderr, "\r\033[K  %s%s: produced %llu  reported %llu  consumed %llu  %.0f msg/s",
                r->fill ? "filling for " : "", mode_names[r->mode],
                (unsigned long long)r->produced, (unsigned long long)r->reported,
                (unsigned long long)r->consumed,
                el > 0 ? (double)(r->mode == M_PRODUCE || r->fill ? r->reported
                                                                  : r->consumed) / el
                       : 0.0);
    }
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    run *r = arg;
    (void)what;
    g_signal = (sig_atomic_t)sig;
    run_fail(r, "interrupted");
}

static void on_p_closed(void *user)
{
    run *r = user;
    r->p = NULL;
    if (--r->nopen == 0)
        event_base_loopbreak(r->base);
}

static void on_c_closed(void *user)
{
    run *r = user;
    r->c = NULL;
    if (--r->nopen == 0)
        event_base_loopbreak(r->base);
}

static void on_c_stopped(redq_consumer *c, int status, void *user)
{
    run *r = user;
    int rc;
    if (status != 0 && status != REDQ_ECLOSED) {
        clear_progress(r);
        fprintf(stderr, "redq-bench: consumer stop: %s\n", redq_strerror(status));
    }
    rc = redq_consumer_close(c, on_c_closed, r);
    if (rc != 0 && rc != REDQ_ECLOSED) {
        fprintf(stderr, "redq-bench: redq_consumer_close: %s\n", redq_strerror(rc));
        on_c_closed(r);
    }
}

static int run_init(run *r, const config *cfg, int mode, int fill)
{
    struct event_config *ec;
    struct timeval watch = {0, 250000};

    memset(r, 0, sizeof *r);
    r->cfg = cfg;
    r->mode = mode;
    r->fill = fill;
    r->tty = isatty(STDERR_FILENO) && mode != M_IDLE;
    r->payload_len = cfg->payload;
    r->payload = malloc(cfg->payload);
    if (r->payload == NULL)
        return -1;
    memset(r->payload, 'x', cfg->payload);

    /* Latency mode needs timers finer than epoll_wait's millisecond:
     * libevent then uses a timerfd. The throughput modes use a plain base,
     * as an embedding server most likely would. */
    ec = event_config_new();
    if (ec == NULL)
        return -1;
    if (mode == M_LATENCY)
        event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER);
    r->base = event_base_new_with_config(ec);
    event_config_free(ec);
    if (r->base == NULL)
        return -1;
    r->ev_pump = evtimer_new(r->base, mode == M_LATENCY ? sched_cb : pump_cb, r);
    r->ev_poll = event_new(r->base, -1, EV_PERSIST, poll_cb, r);
    r->ev_timer = evtimer_new(r->base, timer_cb, r);
    r->ev_watch = mode == M_IDLE ? NULL
                                 : event_new(r->base, -1, EV_PERSIST, watch_cb, r);
    r->ev_sig[0] = evsignal_new(r->base, SIGINT, signal_cb, r);
    r->ev_sig[1] = evsignal_new(r->base, SIGTERM, signal_cb, r);
    if (!r->ev_pump || !r->ev_poll || !r->ev_timer ||
        (mode != M_IDLE && !r->ev_watch) || !r->ev_sig[0] || !r->ev_sig[1])
        return -1;
    evsignal_add(r->ev_sig[0], NULL);
    evsignal_add(r->ev_sig[1], NULL);
    /* No periodic timer in idle mode: it would be the only thing waking the
     * process, and the point is to see that redq does not. */
    if (r->ev_watch != NULL)
        event_add(r->ev_watch, &watch);
    r->wd_ns = now_ns();
    return 0;
}

static void run_free(run *r)
{
    size_t i;
    struct event *evs[] = {r->ev_pump, r->ev_poll, r->ev_timer, r->ev_watch,
                           r->ev_sig[0], r->ev_sig[1]};
    for (i = 0; i < sizeof evs / sizeof evs[0]; i++)
        if (evs[i] != NULL)
            event_free(evs[i]);
    if (r->base != NULL)
        event_base_free(r->base);
    free(r->payload);
}

static void fill_options(redq_options *o, const config *cfg, run *r)
{
    redq_options_init(o);
    o->url = cfg->url;
    o->client_name = "redq-bench";
    o->log = on_log;
    o->log_level = REDQ_LOG_WARN;
    o->user = r;
    o->on_delivery = on_delivery;
    o->on_ready = on_ready;
    o->on_message = on_message;
    o->pool_size = cfg->pool;
    o->stop_timeout_ms = 5000;
    /* Named either way: what a mode measures must not follow the
     * library's default. */
    o->delivery = cfg->reliable ? REDQ_AT_LEAST_ONCE : REDQ_AT_MOST_ONCE;
    if (cfg->batch_set) {
        o->batch_max_msgs = cfg->batch;
        o->pop_batch = cfg->batch;
        if (o->max_unacked < 2 * cfg->batch)
            o->max_unacked = 2 * cfg->batch;
    }
    if (cfg->linger_set)
        o->linger_us = cfg->linger_us;
    o->max_queue_len = cfg->max_queue;
    if (r->mode == M_IDLE)
        o->pop_timeout_ms = IDLE_POP_TIMEOUT_MS;
    if (r->mode == M_MEMORY && !r->fill) {
        /* Everything stays pending while the server is paused: the window
         * must hold it all, and no deadline may fire meanwhile (a missed
         * reply deadline would drop the connection and resend). */
        o->max_pending_msgs = (size_t)r->want + 1;
        o->max_pending_bytes = (size_t)r->want * cfg->payload + 1;
        if (o->max_pending_bytes < 64u * 1024 * 1024)
            o->max_pending_bytes = 64u * 1024 * 1024;
        o->command_timeout_ms = MEMORY_PAUSE_MS + 30000;
        o->delivery_timeout_ms = MEMORY_PAUSE_MS + 30000;
    }
}

static int run_loop(run *r)
{
    return event_base_dispatch(r->base);
}

/* Close whatever is open and run the loop until it is released. */
static void run_teardown(run *r)
{
    int rc;
    r->phase = PH_TEARDOWN;
    event_del(r->ev_pump);
    event_del(r->ev_poll);
    event_del(r->ev_timer);
    if (r->ev_watch != NULL)
        event_del(r->ev_watch);
    clear_progress(r);
    r->nopen = (r->p != NULL) + (r->c != NULL);
    if (r->p != NULL) {
        rc = redq_producer_close(r->p, on_p_closed, r);
        if (rc != 0) {
            fprintf(stderr, "redq-bench: redq_producer_close: %s\n", redq_strerror(rc));
            r->nopen--;
            r->p = NULL;
        }
    }
    if (r->c != NULL) {
        /* Stop first when the run went well: that is the graceful path an
         * application takes, and it must not lose or repeat anything. */
        rc = r->failed ? REDQ_ECLOSED : redq_consumer_stop(r->c, on_c_stopped, r);
        if (rc != 0)
            rc = redq_consumer_close(r->c, on_c_closed, r);
        if (rc != 0) {
            fprintf(stderr, "redq-bench: closing the consumer: %s\n", redq_strerror(rc));
            r->nopen--;
            r->c = NULL;
        }
    }
    while (r->nopen > 0)
        if (run_loop(r) != 0)
            break;
    evsignal_del(r->ev_sig[0]);
    evsignal_del(r->ev_sig[1]);
}

static int run_connect(run *r)
{
    struct timeval ms = {0, 1000};
    r->phase = PH_CONNECT;
    r->connect_deadline = now_ns() + (uint64_t)CONNECT_SECONDS * 1000000000u;
    event_add(r->ev_poll, &ms);
    run_loop(r);
    return r->failed ? -1 : 0;
}

/*
 * The measured part of every run: the loop from the first message to the
 * last. A separate, never-inlined function so that callgrind can count this
 * and nothing else (bench/callgrind.sh: --toggle-collect=redq_bench_measured).
 */
NOINLINE void redq_bench_measured(run *r);

NOINLINE void redq_bench_measured(run *r)
{
    r->phase = PH_MEASURE;
    r->wd_ns = now_ns();
    if (r->want_producer)
        schedule_pump(r);
    run_loop(r);
}

/* ------------------------------------------------------------------------ */
/* a run of each mode                                                        */
/* ------------------------------------------------------------------------ */

typedef struct result {
    double msgs_per_sec;
    uint64_t messages;
    double seconds;
    double cpu;
    /* this run's latency percentiles, us (n == 0: none recorded) */
    uint64_t lat_n;
    double lat_p50, lat_p90, lat_p99, lat_p999, lat_max;
    /* latency mode */
    double max_lag_us;
    uint64_t max_backlog;
    /* idle mode */
    long long pop_calls;
    uint64_t client_pops;
    double idle_seconds;
    /* memory mode */
    long long rss_before, rss_pending;
    size_t pending, pending_bytes;
} result;

/* Pre-fill `key` with n stamped messages through a redq producer (not
 * timed). 0 or -1 with err. */
static int fill_queue(const config *cfg, const char *key, uint64_t n,
                      char *err, size_t errlen)
{
    run r;
    redq_options o;
    bitmap none = {NULL, 0};
    int rc = -1;

    if (run_init(&r, cfg, M_PRODUCE, 1) != 0) {
        snprintf(err, errlen, "out of memory");
        goto out;
    }
    r.pqueue = key;
    r.want = n;
    r.seen = &none;
    r.want_producer = 1;
    fill_options(&o, cfg, &r);
    if ((rc = redq_producer_new(&r.p, r.base, &o)) != 0) {
        snprintf(err, errlen, "redq_producer_new: %s", redq_strerror(rc));
        rc = -1;
        goto out;
    }
    rc = -1;
    if (run_connect(&r) == 0) {
        r.phase = PH_MEASURE;
        schedule_pump(&r);
        run_loop(&r);
    }
    run_teardown(&r);
    if (r.failed)
        snprintf(err, errlen, "filling the queue: %s", r.err);
    else if (r.reported != n)
        snprintf(err, errlen, "filling the queue: %llu of %llu reported",
                 (unsigned long long)r.reported, (unsigned long long)n);
    else
        rc = 0;
out:
    run_free(&r);
    return rc;
}

static int bench_once(const config *cfg, redisContext *sc, bitmap *seen, hist *lat_all, result *res, char *err,
                      size_t errlen)
{
    run r;
    redq_options o;
    hist *lat = NULL;
    char stage[1100];
    char *info = NULL;
    long long calls0 = 0, len = -1;
    double cpu0 = 0, cpu1 = 0;
    int rc, status = -1;

    memset(res, 0, sizeof *res);
    snprintf(stage, sizeof stage, "%s:fill", cfg->queue);
    if (sync_del(sc, cfg->queue, err, errlen) != 0 ||
        sync_del(sc, stage, err, errlen) != 0)
        return -1;
    bm_clear(seen);

    if (cfg->mode == M_CONSUME &&
        fill_queue(cfg, stage, cfg->messages, err, errlen) != 0)
        return -1;

    if (run_init(&r, cfg, cfg->mode, 0) != 0) {
        snprintf(err, errlen, "out of memory");
        run_free(&r);
        return -1;
    }
    if (cfg->mode != M_IDLE && cfg->mode != M_CONSUME &&
        cfg->mode != M_MEMORY) {
        lat = calloc(1, sizeof *lat);
        if (lat == NULL) {
            snprintf(err, errlen, "out of memory");
            goto out;
        }
    }
    r.lat = lat;
    r.seen = seen;
    r.sc = sc;
    r.pqueue = cfg->queue;
    if (cfg->mode == M_LATENCY) {
        r.interval_ns = 1e9 / cfg->rate;
        r.want = cfg->messages_set ? cfg->messages
                                   : (uint64_t)(cfg->rate * cfg->seconds + 0.5);
        if (r.want == 0)
            r.want = 1;
    } else if (cfg->seconds_set && cfg->mode != M_IDLE) {
        r.open_ended = 1;
        r.want = UINT64_MAX;
    } else {
        r.want = cfg->messages;
    }
    r.want_producer = cfg->mode == M_PRODUCE || cfg->mode == M_E2E ||
                      cfg->mode == M_LATENCY || cfg->mode == M_MEMORY;
    r.want_consumer = cfg->mode == M_CONSUME || cfg->mode == M_E2E ||
                      cfg->mode == M_LATENCY || cfg->mode == M_IDLE;
    fill_options(&o, cfg, &r);

    if (r.want_consumer) {
        const char *qs[1] = {cfg->queue};
        rc = redq_consumer_new(&r.c, r.base, &o, qs, 1);
        if (rc != 0) {
            run_fail(&r, "redq_consumer_new: %s (%s)", redq_strerror(rc),
                     redq_err_name(rc));
            goto teardown;
        }
    }
    if (r.want_producer) {
        rc = redq_producer_new(&r.p, r.base, &o);
        if (rc != 0) {
            run_fail(&r, "redq_producer_new: %s (%s)", redq_strerror(rc),
                     redq_err_name(rc));
            goto teardown;
        }
    }
    if (run_connect(&r) != 0)
        goto teardown;

    if (cfg->mode == M_MEMORY) {
        char ms[16];
        const char *argv[4] = {"CLIENT", "PAUSE", ms, "WRITE"};
        redisReply *rep;
        snprintf(ms, sizeof ms, "%d", MEMORY_PAUSE_MS);
        rep = sync_cmd(sc, err, errlen, 4, argv);
        if (rep == NULL) {
            run_fail(&r, "%s", err);
            goto teardown;
        }
        freeReplyObject(rep);
        r.rss_before = current_rss_bytes();
    }
    if (cfg->mode == M_IDLE) {
        struct timeval tv;
        double s = cfg->seconds;
        info = sync_info(sc, "commandstats", err, errlen);
        if (info == NULL) {
            run_fail(&r, "%s", err);
            goto teardown;
        }
        calls0 = pop_calls(info);
        free(info);
        info = NULL;
        tv.tv_sec = (time_t)s;
        tv.tv_usec = (suseconds_t)((s - (double)tv.tv_sec) * 1e6);
        evtimer_add(r.ev_timer, &tv);
    }

    cpu0 = cpu_seconds();
    if (cfg->mode == M_CONSUME || cfg->mode == M_IDLE)
        r.t0 = now_ns();
    if (cfg->mode == M_CONSUME) {
        /* The pool is connected and blocked on the empty queue. RENAME
         * hands it the whole pre-filled list at once (Redis wakes clients
         * blocked on the new key), so the clock covers consuming only. */
        const char *argv[3] = {"RENAME", stage, cfg->queue};
        redisReply *rep = sync_cmd(sc, err, errlen, 3, argv);
        if (rep == NULL) {
            run_fail(&r, "%s", err);
            goto teardown;
        }
        freeReplyObject(rep);
    }
    redq_bench_measured(&r);
    cpu1 = cpu_seconds();
    if (cfg->mode == M_IDLE) {
        redq_consumer_stats st;
        res->idle_seconds = (double)(now_ns() - r.t0) / 1e9;
        info = sync_info(sc, "commandstats", err, errlen);
        if (info == NULL) {
            run_fail(&r, "%s", err);
            goto teardown;
        }
        res->pop_calls = pop_calls(info) - calls0;
        free(info);
        info = NULL;
        redq_consumer_get_stats(r.c, &st);
        res->client_pops = st.pops;
        r.t_last = now_ns();
    }

teardown:
    run_teardown(&r);
    if (r.failed) {
        snprintf(err, errlen, "%s", r.err);
        goto out;
    }
    if (r.unexpected > 0) {
        snprintf(err, errlen, "%llu message(s) consumed after the last one expected (duplicates)",
                 (unsigned long long)r.unexpected);
        goto out;
    }
    /* What the server holds now must agree with what was counted. */
    if (sync_llen(sc, cfg->queue, &len, err, errlen) != 0)
        goto out;
    if ((cfg->mode == M_PRODUCE || cfg->mode == M_MEMORY) &&
        (unsigned long long)len != (unsigned long long)r.produced) {
        snprintf(err, errlen, "%llu messages acknowledged but the list holds %lld",
                 (unsigned long long)r.produced, len);
        goto out;
    }
    if ((cfg->mode == M_CONSUME || cfg->mode == M_E2E ||
         cfg->mode == M_LATENCY) && len != 0) {
        snprintf(err, errlen, "%lld messages left in the queue after the run", len);
        goto out;
    }
    if (sync_del(sc, cfg->queue, err, errlen) != 0)
        goto out;
    if (cfg->mode != M_IDLE && (r.produced == 0 && r.consumed == 0)) {
        snprintf(err, errlen, "no message was moved");
        goto out;
    }

    res->messages = cfg->mode == M_CONSUME ? r.consumed : r.produced;
    res->seconds = r.t_last > r.t0 ? (double)(r.t_last - r.t0) / 1e9 : 0.0;
    res->msgs_per_sec = res->seconds > 0 ? (double)res->messages / res->seconds : 0.0;
    res->cpu = cpu1 - cpu0;
    res->max_lag_us = (double)r.max_lag_ns / 1e3;
    res->max_backlog = r.max_backlog;
    res->rss_before = r.rss_before;
    res->rss_pending = r.rss_pending;
    res->pending = r.pending_at_snap;
    res->pending_bytes = r.pending_bytes_at_snap;
    if (lat != NULL && lat->n > 0) {
        res->lat_n = lat->n;
        res->lat_p50 = (double)hist_quantile(lat, 0.50) / 1e3;
        res->lat_p90 = (double)hist_quantile(lat, 0.90) / 1e3;
        res->lat_p99 = (double)hist_quantile(lat, 0.99) / 1e3;
        res->lat_p999 = (double)hist_quantile(lat, 0.999) / 1e3;
        res->lat_max = (double)lat->max / 1e3;
        hist_merge(lat_all, lat);
    }
    err[0] = '\0';
    status = 0;
out:
    free(info);
    free(lat);
    run_free(&r);
    return status;
}

/* ------------------------------------------------------------------------ */
/* redis-benchmark                                                           */
/* ------------------------------------------------------------------------ */

typedef struct rbench {
    const char *argv[64 + RB_VALUES];
    int argc;
    char n[24], d[24], db[16], key[1100];
    char *value;
    double scale;     /* result = requests/s x scale (values per request) */
    char *exact;      /* the command line, every argument */
    char *shown;      /* the same with the values abbreviated */
} rbench;

static void rb_free(rbench *rb)
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
static int rb_build(rbench *rb, const config *cfg, const target *t,
                    uint64_t messages)
{
    const char *bin = getenv("REDQ_BENCH_REDIS_BENCHMARK");
    size_t elen = 0, ecap = 0, slen = 0, scap = 0;
    int i, multi = cfg->mode == M_PRODUCE || cfg->mode == M_CONSUME;
    uint64_t n;

    memset(rb, 0, sizeof *rb);
    if (bin == NULL || !*bin)
        bin = "redis-benchmark";
    rb->argv[rb->argc++] = bin;
    if (t->path[0]) {
        rb->argv[rb->argc++] = "-s";
        rb->argv[rb->argc++] = t->path;
    } else {
        rb->argv[rb->argc++] = "-h";
        rb->argv[rb->argc++] = t->host;
        rb->argv[rb->argc++] = "-p";
        rb->argv[rb->argc++] = t->port_str;
    }
    if (t->user[0]) {
        rb->argv[rb->argc++] = "--user";
        rb->argv[rb->argc++] = t->user;
    }
    if (t->password[0]) {
        rb->argv[rb->argc++] = "-a";
        rb->argv[rb->argc++] = t->password;
    }
    if (t->db) {
        snprintf(rb->db, sizeof rb->db, "%d", t->db);
        rb->argv[rb->argc++] = "--dbnum";
        rb->argv[rb->argc++] = rb->db;
    }
    /* As many elements as the redq run moves (at least enough requests
     * for a stable figure). */
    n = multi ? messages / RB_VALUES : messages;
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
        for (i = 0; i < RB_VALUES; i++)
            rb->argv[rb->argc++] = rb->value;
        rb->scale = RB_VALUES;
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
        if (t->password[0] && a == t->password)
            a = "***";
        if (str_append_arg(&rb->exact, &elen, &ecap, a) != 0)
            return -1;
        if (a == rb->value) {
            if (i > 0 && rb->argv[i - 1] == rb->value)
                continue;
            snprintf(shown, sizeof shown, "<%d values of %zu bytes>", RB_VALUES,
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

static int rb_run(const rbench *rb, redisContext *sc, double *per_sec,
                  char *err, size_t errlen)
{
    int pfd[2], st;
    pid_t pid;
    char *out = NULL;
    size_t len = 0, cap = 0;
    double rps = 0;

    if (sync_del(sc, rb->key, err, errlen) != 0)
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
    return sync_del(sc, rb->key, err, errlen);
}

/* ------------------------------------------------------------------------ */
/* output                                                                    */
/* ------------------------------------------------------------------------ */

static const char *latency_what(int mode)
{
    switch (mode) {
    case M_PRODUCE:
        return "redq_produce() call -> delivery report";
    case M_E2E:
        return "redq_produce() call -> consumer handler";
    case M_LATENCY:
        return "scheduled send time -> consumer handler";
    default:
        return NULL;
    }
}

static json_t *latency_json(const hist *h)
{
    json_t *o;
    if (h->n == 0)
        return json_null();
    o = json_object();
    json_object_set_new(o, "p50", json_real((double)hist_quantile(h, 0.50) / 1e3));
    json_object_set_new(o, "p90", json_real((double)hist_quantile(h, 0.90) / 1e3));
    json_object_set_new(o, "p99", json_real((double)hist_quantile(h, 0.99) / 1e3));
    json_object_set_new(o, "p999", json_real((double)hist_quantile(h, 0.999) / 1e3));
    json_object_set_new(o, "max", json_real((double)h->max / 1e3));
    json_object_set_new(o, "samples", json_integer((json_int_t)h->n));
    return o;
}

static void print_count(const char *label, double v)
{
    printf("  %-26s %14.0f\n", label, v);
}

/* ------------------------------------------------------------------------ */
/* command line                                                              */
/* ------------------------------------------------------------------------ */

static void usage(FILE *f)
{
    fprintf(f,
        "usage: redq-bench MODE [--url URL] [--messages N | --seconds S] [--payload BYTES]\n"
        "                  [--pool N] [--batch N] [--linger-us N] [--rate R] [--compare]\n"
        "                  [--json] [-r N] [--queue NAME]\n"
        "\n"
        "modes:\n"
        "  produce   one producer, a delivery report per message; msg/s = reports/s\n"
        "  consume   a consumer pool drains a pre-filled queue (the fill is not timed);\n"
        "            handler + ack per message\n"
        "  e2e       producer and consumer pool on one loop at once; msg/s = consumed/s\n"
        "            (e2e --reliable: at-least-once consumer, acks per message)\n"
        "  latency   open loop at --rate R msg/s (default 10000) for --seconds (default 5);\n"
        "            latency from each message's scheduled send time to its handler\n"
        "  idle      an idle consumer pool (pop timeout %d ms) for --seconds (default 10):\n"
        "            pop commands per connection per pop timeout, and CPU seconds used\n"
        "  memory    --messages N (default 1000000) produced while the server is paused\n"
        "            (CLIENT PAUSE WRITE): resident memory of N pending messages\n"
        "\n"
        "options:\n"
        "  --url URL        Redis (default $REDQ_URL; else a throwaway redis-server)\n"
        "  --messages N     messages per run (default 1000000)\n"
        "  --seconds S      produce for S seconds instead of a fixed count\n"
        "  --payload BYTES  message size, at least %d (default 100)\n"
        "  --pool N         consumer connections (default 1)\n"
        "  --batch N        producer batch_max_msgs and consumer pop_batch\n"
        "                   (default: the library's, 1024 and 256)\n"
        "  --linger-us N    producer linger_us (default: the library's, 1000)\n"
        "  --max-queue N    producer max_queue_len: stop sending while the list\n"
        "                   holds N; bounds e2e latency at saturation (default 0)\n"
        "  --rate R         latency mode: messages per second\n"
        "  --compare        also run the matching redis-benchmark line (produce,\n"
        "                   consume, e2e) and print the ratio\n"
        "  --json           one JSON object on stdout instead of the table\n"
        "  -r N             repeat N times; report the median, min and max\n"
        "  --queue NAME     the list to use (default " DEFAULT_QUEUE ")\n"
        "\n"
        "environment: REDQ_URL; REDQ_BENCH_REDIS_SERVER and REDQ_BENCH_REDIS_BENCHMARK\n"
        "(paths of redis-server and redis-benchmark, default: found on PATH)\n",
        IDLE_POP_TIMEOUT_MS, STAMP_BYTES);
}

static int parse_u64(const char *s, uint64_t lo, uint64_t hi, uint64_t *out)
{
    char *end;
    unsigned long long v;
    if (s == NULL || *s < '0' || *s > '9')
        return -1;
    errno = 0;
    v = strtoull(s, &end, 10);
    if (errno || *end || v < lo || v > hi)
        return -1;
    *out = v;
    return 0;
}

static int parse_pos_double(const char *s, double *out)
{
    char *end;
    double v;
    if (s == NULL || !*s)
        return -1;
    errno = 0;
    v = strtod(s, &end);
    if (errno || *end || !(v > 0) || v > 1e9)
        return -1;
    *out = v;
    return 0;
}

/* "--name value" or "--name=value": 1 with *val set (NULL when missing), 0
 * when argv[*i] is not this option. */
static int opt(int argc, char **argv, int *i, const char *name, const char **val)
{
    size_t n = strlen(name);
    const char *a = argv[*i];
    if (strncmp(a, name, n) != 0)
        return 0;
    if (a[n] == '=') {
        *val = a + n + 1;
        return 1;
    }
    if (a[n] != '\0')
        return 0;
    *val = *i + 1 < argc ? argv[++*i] : NULL;
    return 1;
}

static int parse_args(int argc, char **argv, config *cfg)
{
    int i, have_mode = 0;
    const char *env = getenv("REDQ_URL");

    memset(cfg, 0, sizeof *cfg);
    cfg->messages = DEFAULT_MESSAGES;
    cfg->payload = 100;
    cfg->pool = 1;
    cfg->runs = 1;
    cfg->rate = DEFAULT_LATENCY_RATE;
    cfg->queue = DEFAULT_QUEUE;
    if (env != NULL && *env)
        cfg->url = env;

    for (i = 1; i < argc; i++) {
        const char *v = NULL;
        uint64_t u;
        if (!strcmp(argv[i], "-h") || !strcmp(argv[i], "--help")) {
            usage(stdout);
            exit(0);
        } else if (!strcmp(argv[i], "--compare")) {
            cfg->compare = 1;
        } else if (!strcmp(argv[i], "--json")) {
            cfg->json = 1;
        } else if (!strcmp(argv[i], "--reliable")) {
            cfg->reliable = 1;
        } else if (opt(argc, argv, &i, "--url", &v)) {
            if (v == NULL || !*v)
                goto bad;
            cfg->url = v;
        } else if (opt(argc, argv, &i, "--messages", &v)) {
            if (parse_u64(v, 1, (uint64_t)1 << 40, &cfg->messages) != 0)
                goto bad;
            cfg->messages_set = 1;
        } else if (opt(argc, argv, &i, "--seconds", &v)) {
            if (parse_pos_double(v, &cfg->seconds) != 0 || cfg->seconds > 86400)
                goto bad;
            cfg->seconds_set = 1;
        } else if (opt(argc, argv, &i, "--payload", &v)) {
            if (parse_u64(v, STAMP_BYTES, (uint64_t)512 << 20, &u) != 0) {
                fprintf(stderr, "redq-bench: --payload must be %d..%d bytes: the first %d "
                                "carry the sequence number and a timestamp\n",
                        STAMP_BYTES, 512 << 20, STAMP_BYTES);
                return -1;
            }
            cfg->payload = (size_t)u;
        } else if (opt(argc, argv, &i, "--pool", &v)) {
            if (parse_u64(v, 1, 1024, &u) != 0)
                goto bad;
            cfg->pool = (size_t)u;
        } else if (opt(argc, argv, &i, "--batch", &v)) {
            if (parse_u64(v, 1, 100000, &u) != 0)
                goto bad;
            cfg->batch = (size_t)u;
            cfg->batch_set = 1;
        } else if (opt(argc, argv, &i, "--linger-us", &v)) {
            if (parse_u64(v, 0, 60000000, &u) != 0)
                goto bad;
            cfg->linger_us = (unsigned)u;
            cfg->linger_set = 1;
        } else if (opt(argc, argv, &i, "--max-queue", &v)) {
            if (parse_u64(v, 0, 1000000000, &u) != 0)
                goto bad;
            cfg->max_queue = (size_t)u;
        } else if (opt(argc, argv, &i, "--rate", &v)) {
            if (parse_pos_double(v, &cfg->rate) != 0)
                goto bad;
            cfg->rate_set = 1;
        } else if (opt(argc, argv, &i, "--queue", &v)) {
            if (v == NULL || !*v || strlen(v) > 1000)
                goto bad;
            cfg->queue = v;
        } else if (!strcmp(argv[i], "-r") || !strncmp(argv[i], "-r=", 3)) {
            v = argv[i][2] == '=' ? argv[i] + 3 : (i + 1 < argc ? argv[++i] : NULL);
            if (parse_u64(v, 1, 1000, &u) != 0)
                goto bad;
            cfg->runs = (int)u;
        } else if (argv[i][0] != '-' && !have_mode) {
            size_t m;
            for (m = 0; m < sizeof mode_names / sizeof mode_names[0]; m++)
                if (!strcmp(argv[i], mode_names[m]))
                    break;
            if (m == sizeof mode_names / sizeof mode_names[0]) {
                fprintf(stderr, "redq-bench: unknown mode '%s'\n", argv[i]);
                usage(stderr);
                return -1;
            }
            cfg->mode = (int)m;
            have_mode = 1;
        } else {
            fprintf(stderr, "redq-bench: unknown argument '%s'\n", argv[i]);
            usage(stderr);
            return -1;
        }
        continue;
    bad:
        fprintf(stderr, "redq-bench: bad or missing value for '%s'\n", argv[i]);
        usage(stderr);
        return -1;
    }
    if (!have_mode) {
        fprintf(stderr, "redq-bench: no MODE given\n");
        usage(stderr);
        return -1;
    }
    if (cfg->messages_set && cfg->seconds_set) {
        fprintf(stderr, "redq-bench: give --messages or --seconds, not both\n");
        return -1;
    }
    if (cfg->reliable && cfg->mode != M_E2E) {
        fprintf(stderr, "redq-bench: --reliable goes with e2e\n");
        return -1;
    }
    if (cfg->rate_set && cfg->mode != M_LATENCY) {
        fprintf(stderr, "redq-bench: --rate goes with latency mode\n");
        return -1;
    }
    if (cfg->compare && cfg->mode != M_PRODUCE && cfg->mode != M_CONSUME &&
        cfg->mode != M_E2E) {
        fprintf(stderr, "redq-bench: --compare has a redis-benchmark line for produce, "
                        "consume and e2e only\n");
        return -1;
    }
    if (cfg->seconds_set && (cfg->mode == M_CONSUME || cfg->mode == M_MEMORY)) {
        fprintf(stderr, "redq-bench: %s needs a message count (--messages), not --seconds\n",
                mode_names[cfg->mode]);
        return -1;
    }
    if (cfg->messages_set && cfg->mode == M_IDLE) {
        fprintf(stderr, "redq-bench: idle mode takes --seconds, not --messages\n");
        return -1;
    }
    if (cfg->mode == M_LATENCY && !cfg->seconds_set && !cfg->messages_set)
        cfg->seconds = DEFAULT_LATENCY_SECONDS;
    if (cfg->mode == M_IDLE && !cfg->seconds_set)
        cfg->seconds = DEFAULT_IDLE_SECONDS;
    if (cfg->mode == M_MEMORY &&
        cfg->messages > SIZE_MAX / (cfg->payload + 64)) {
        fprintf(stderr, "redq-bench: --messages x --payload is too large\n");
        return -1;
    }
    return 0;
}

static void on_signal(int sig)
{
    g_signal = (sig_atomic_t)sig;
}

/* ------------------------------------------------------------------------ */
/* main                                                                      */
/* ------------------------------------------------------------------------ */

int main(int argc, char **argv)
{
    config cfg;
    target tg;
    local_server srv;
    redisContext *sc = NULL;
    struct sigaction sa;
    bitmap seen = {NULL, 0};
    hist *lat_all = NULL;
    result *res = NULL;
    double *rates = NULL, *rb_rates = NULL, *tmp = NULL;
    rbench rb;
    char err[1024] = "", version[32] = "?";
    int status = 2, i, nruns = 0;
    json_t *root = NULL;

    memset(&srv, 0, sizeof srv);
    memset(&rb, 0, sizeof rb);
    if (parse_args(argc, argv, &cfg) != 0)
        return 2;

    /* hiredis writes with write(2): a server that goes away must give
     * EPIPE, not kill the benchmark. */
    signal(SIGPIPE, SIG_IGN);
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    if (cfg.url == NULL) {
        int rc = server_start(&srv, &tg, err, sizeof err);
        if (rc != 0) {
            fprintf(stderr, "redq-bench: %s\n", err);
            server_stop(&srv); /* removes the temporary directory */
            return rc == 77 ? 77 : 2;
        }
        cfg.url = tg.url;
    } else if (parse_target(cfg.url, &tg) != 0) {
        fprintf(stderr, "redq-bench: cannot parse URL '%s'\n", cfg.url);
        return 2;
    }

    sc = sync_connect(&tg, err, sizeof err);
    if (sc == NULL) {
        fprintf(stderr, "redq-bench: %s\n", err);
        goto out;
    }
    {
        char *info = sync_info(sc, "server", err, sizeof err);
        const char *v = info ? strstr(info, "redis_version:") : NULL;
        if (v != NULL)
            sscanf(v + 14, "%31[0-9.]", version);
        free(info);
    }

    lat_all = calloc(1, sizeof *lat_all);
    res = calloc((size_t)cfg.runs, sizeof *res);
    rates = calloc((size_t)cfg.runs, sizeof *rates);
    rb_rates = calloc((size_t)cfg.runs, sizeof *rb_rates);
    tmp = calloc((size_t)cfg.runs, sizeof *tmp);
    if (!lat_all || !res || !rates || !rb_rates || !tmp ||
        (!cfg.seconds_set && cfg.mode != M_IDLE && cfg.mode != M_LATENCY &&
         bm_reserve(&seen, cfg.messages) != 0)) {
        fprintf(stderr, "redq-bench: out of memory\n");
        goto out;
    }
    if (cfg.compare && rb_build(&rb, &cfg, &tg, cfg.messages) != 0) {
        fprintf(stderr, "redq-bench: out of memory\n");
        goto out;
    }

    /* Interleave redq and redis-benchmark runs, so that a noisy neighbour
     * hits both alike. */
    status = 1;
    for (i = 0; i < cfg.runs; i++) {
        err[0] = '\0';
        if (bench_once(&cfg, sc, &seen, lat_all, &res[i], err, sizeof err) != 0) {
            fprintf(stderr, "redq-bench: %s run %d: %s\n", mode_names[cfg.mode], i + 1,
                    err[0] ? err : "failed");
            goto out;
        }
        rates[i] = res[i].msgs_per_sec;
        if (cfg.compare && rb_run(&rb, sc, &rb_rates[i], err, sizeof err) != 0) {
            fprintf(stderr, "redq-bench: %s\n", err);
            goto out;
        }
        nruns++;
        if (g_signal) {
            fprintf(stderr, "redq-bench: interrupted\n");
            status = 130;
            goto out;
        }
    }

    {
        double med, mn, mx, rb_med = 0, cpu = 0, msgs = 0, secs = 0;
        size_t k;
        for (k = 0; k < (size_t)nruns; k++) {
            tmp[k] = rates[k];
            cpu += res[k].cpu;
        }
        cpu /= nruns;
        med = median(tmp, (size_t)nruns);
        mn = tmp[0];
        mx = tmp[nruns - 1];
        for (k = 0; k < (size_t)nruns; k++)
            tmp[k] = (double)res[k].messages;
        msgs = median(tmp, (size_t)nruns);
        for (k = 0; k < (size_t)nruns; k++)
            tmp[k] = res[k].seconds;
        secs = median(tmp, (size_t)nruns);
        if (cfg.compare) {
            for (k = 0; k < (size_t)nruns; k++)
                tmp[k] = rb_rates[k];
            rb_med = median(tmp, (size_t)nruns);
        }

        if (cfg.json) {
            json_t *o, *a;
            root = json_object();
            json_object_set_new(root, "mode", json_string(mode_names[cfg.mode]));
            json_object_set_new(root, "delivery",
                                json_string(cfg.reliable ? "at-least-once" : "at-most-once"));
            json_object_set_new(root, "messages", json_integer((json_int_t)msgs));
            json_object_set_new(root, "payload_bytes", json_integer((json_int_t)cfg.payload));
            json_object_set_new(root, "runs", json_integer(nruns));
            json_object_set_new(root, "seconds", json_real(secs));
            json_object_set_new(root, "msgs_per_sec", json_real(med));
            json_object_set_new(root, "msgs_per_sec_min", json_real(mn));
            json_object_set_new(root, "msgs_per_sec_max", json_real(mx));
            json_object_set_new(root, "latency_us", latency_json(lat_all));
            json_object_set_new(root, "latency_measures",
                                latency_what(cfg.mode)
                                    ? json_string(latency_what(cfg.mode))
                                    : json_null());
            json_object_set_new(root, "cpu_seconds", json_real(cpu));
            json_object_set_new(root, "cpu_us_per_msg",
                                msgs > 0 ? json_real(cpu * 1e6 / msgs) : json_null());
            json_object_set_new(root, "peak_rss_bytes", json_integer(peak_rss_bytes()));
            o = json_object();
            json_object_set_new(o, "url", json_string(tg.password[0] ? "(has a password)"
                                                                   : cfg.url));
            json_object_set_new(o, "throwaway", json_boolean(tg.throwaway));
            json_object_set_new(o, "redis_version", json_string(version));
            json_object_set_new(root, "server", o);
            o = json_object();
            json_object_set_new(o, "pool", json_integer((json_int_t)cfg.pool));
            json_object_set_new(o, "batch", cfg.batch_set ? json_integer((json_int_t)cfg.batch)
                                                          : json_null());
            json_object_set_new(o, "linger_us", cfg.linger_set
                                                    ? json_integer(cfg.linger_us)
                                                    : json_null());
            if (cfg.mode == M_LATENCY)
                json_object_set_new(o, "rate", json_real(cfg.rate));
            json_object_set_new(root, "options", o);
            a = json_array();
            for (k = 0; k < (size_t)nruns; k++) {
                o = json_object();
                json_object_set_new(o, "msgs_per_sec", json_real(rates[k]));
                json_object_set_new(o, "messages", json_integer((json_int_t)res[k].messages));
                json_object_set_new(o, "seconds", json_real(res[k].seconds));
                json_object_set_new(o, "cpu_seconds", json_real(res[k].cpu));
                if (cfg.compare)
                    json_object_set_new(o, "redis_benchmark_per_sec", json_real(rb_rates[k]));
                if (cfg.mode == M_E2E || cfg.mode == M_LATENCY)
                    json_object_set_new(o, "max_backlog",
                                        json_integer((json_int_t)res[k].max_backlog));
                if (res[k].lat_n > 0) {
                    json_t *l = json_object();
                    json_object_set_new(l, "p50", json_real(res[k].lat_p50));
                    json_object_set_new(l, "p90", json_real(res[k].lat_p90));
                    json_object_set_new(l, "p99", json_real(res[k].lat_p99));
                    json_object_set_new(l, "p999", json_real(res[k].lat_p999));
                    json_object_set_new(l, "max", json_real(res[k].lat_max));
                    json_object_set_new(o, "latency_us", l);
                } else {
                    json_object_set_new(o, "latency_us", json_null());
                }
                json_array_append_new(a, o);
            }
            json_object_set_new(root, "per_run", a);
            if (cfg.compare) {
                o = json_object();
                json_object_set_new(o, "redis_benchmark_command", json_string(rb.exact));
                json_object_set_new(o, "redis_benchmark_per_sec", json_real(rb_med));
                json_object_set_new(o, "unit", json_string(rb.scale > 1 ? "elements/s"
                                                                        : "requests/s"));
                json_object_set_new(o, "ratio", json_real(rb_med > 0 ? med / rb_med : 0));
                json_object_set_new(root, "compare", o);
            }
            if (cfg.mode == M_LATENCY) {
                double lag = 0;
                for (k = 0; k < (size_t)nruns; k++)
                    if (res[k].max_lag_us > lag)
                        lag = res[k].max_lag_us;
                o = json_object();
                json_object_set_new(o, "rate", json_real(cfg.rate));
                json_object_set_new(o, "max_send_lag_us", json_real(lag));
                json_object_set_new(root, "latency", o);
            }
            if (cfg.mode == M_IDLE) {
                const result *x = &res[nruns - 1];
                double timeouts = x->idle_seconds * 1000.0 / IDLE_POP_TIMEOUT_MS;
                o = json_object();
                json_object_set_new(o, "seconds", json_real(x->idle_seconds));
                json_object_set_new(o, "pool", json_integer((json_int_t)cfg.pool));
                json_object_set_new(o, "pop_timeout_ms", json_integer(IDLE_POP_TIMEOUT_MS));
                json_object_set_new(o, "pop_calls", json_integer(x->pop_calls));
                json_object_set_new(o, "pops_per_conn_per_timeout",
                                    json_real((double)x->pop_calls / (double)cfg.pool /
                                              timeouts));
                json_object_set_new(o, "cpu_seconds", json_real(x->cpu));
                json_object_set_new(root, "idle", o);
            }
            if (cfg.mode == M_MEMORY) {
                const result *x = &res[nruns - 1];
                double pb = (double)x->pending_bytes;
                o = json_object();
                json_object_set_new(o, "pending_msgs", json_integer((json_int_t)x->pending));
                json_object_set_new(o, "pending_payload_bytes", json_integer((json_int_t)x->pending_bytes));
                json_object_set_new(o, "rss_before_bytes", json_integer(x->rss_before));
                json_object_set_new(o, "rss_pending_bytes", json_integer(x->rss_pending));
                json_object_set_new(o, "rss_growth_per_payload_byte",
                                    pb > 0 ? json_real((double)(x->rss_pending - x->rss_before) / pb)
                                           : json_null());
                json_object_set_new(root, "memory", o);
            }
            if (json_dumpf(root, stdout, JSON_INDENT(2) | JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(10)) != 0) {
                fprintf(stderr, "redq-bench: writing JSON failed\n");
                goto out;
            }
            fputc('\n', stdout);
        } else {
            if (cfg.mode == M_IDLE)
                printf("redq-bench idle: %zu idle connection%s for %.1f s, %d run%s",
                       cfg.pool, cfg.pool == 1 ? "" : "s", cfg.seconds, nruns,
                       nruns == 1 ? "" : "s");
            else
                printf("redq-bench %s: %.0f msgs x %zu B per run, %d run%s",
                       mode_names[cfg.mode], msgs, cfg.payload, nruns, nruns == 1 ? "" : "s");
            printf("; redis %s at %s%s\n", version,
                   tg.password[0] ? "(url with password)" : cfg.url,
                   tg.throwaway ? " (throwaway)" : "");
            printf("  options: pool %zu", cfg.pool);
            if (cfg.batch_set)
                printf(", batch %zu", cfg.batch);
            else
                printf(", batch (library default)");
            if (cfg.linger_set)
                printf(", linger %u us", cfg.linger_us);
            if (cfg.max_queue)
                printf(", max queue %zu", cfg.max_queue);
            if (cfg.mode == M_LATENCY)
                printf(", rate %.0f msg/s", cfg.rate);
            printf("\n");
            printf("  %-26s %14s %14s %14s\n", "", "median", "min", "max");
            if (cfg.mode != M_IDLE)
                printf("  %-26s %14.0f %14.0f %14.0f\n",
                       cfg.mode == M_MEMORY ? "msg/s (drain after unpause)" : "msg/s", med,
                       mn, mx);
            if (cfg.compare) {
                double rmn = rb_rates[0], rmx = rb_rates[0];
                for (k = 1; k < (size_t)nruns; k++) {
                    if (rb_rates[k] < rmn)
                        rmn = rb_rates[k];
                    if (rb_rates[k] > rmx)
                        rmx = rb_rates[k];
                }
                printf("  %-26s %14.0f %14.0f %14.0f\n",
                       rb.scale > 1 ? "redis-benchmark elem/s" : "redis-benchmark req/s",
                       rb_med, rmn, rmx);
                printf("  %-26s %14.2f\n", "ratio (median/median)", rb_med > 0 ? med / rb_med : 0);
                printf("  redis-benchmark: %s\n", rb.shown);
            }
            if (lat_all->n > 0) {
                printf("  latency, us (%s, %llu samples)\n", latency_what(cfg.mode),
                       (unsigned long long)lat_all->n);
                printf("    p50 %.1f  p90 %.1f  p99 %.1f  p99.9 %.1f  max %.1f\n",
                       (double)hist_quantile(lat_all, 0.5) / 1e3,
                       (double)hist_quantile(lat_all, 0.9) / 1e3,
                       (double)hist_quantile(lat_all, 0.99) / 1e3,
                       (double)hist_quantile(lat_all, 0.999) / 1e3,
                       (double)lat_all->max / 1e3);
                if (nruns > 1) {
                    printf("    per run p50/p99:");
                    for (k = 0; k < (size_t)nruns; k++)
                        printf(" %.0f/%.0f", res[k].lat_p50, res[k].lat_p99);
                    printf("\n");
                }
            }
            if (cfg.mode == M_LATENCY) {
                double lag = 0;
                for (k = 0; k < (size_t)nruns; k++)
                    if (res[k].max_lag_us > lag)
                        lag = res[k].max_lag_us;
                printf("  %-26s %14.1f\n", "max send lag, us", lag);
            }
            if (cfg.mode == M_E2E || cfg.mode == M_LATENCY) {
                uint64_t bl = 0;
                for (k = 0; k < (size_t)nruns; k++)
                    if (res[k].max_backlog > bl)
                        bl = res[k].max_backlog;
                printf("  %-26s %14llu  (acknowledged, not yet consumed)\n",
                       "max backlog in the list", (unsigned long long)bl);
            }
            if (cfg.mode == M_IDLE) {
                const result *x = &res[nruns - 1];
                double timeouts = x->idle_seconds * 1000.0 / IDLE_POP_TIMEOUT_MS;
                printf("  %-26s %14.2f\n", "idle seconds", x->idle_seconds);
                print_count("pop commands (server)", (double)x->pop_calls);
                printf("  %-26s %14.3f  (pool %zu, pop timeout %d ms)\n",
                       "pops/connection/timeout",
                       (double)x->pop_calls / (double)cfg.pool / timeouts, cfg.pool,
                       IDLE_POP_TIMEOUT_MS);
            }
            if (cfg.mode == M_MEMORY) {
                const result *x = &res[nruns - 1];
                print_count("pending messages", (double)x->pending);
                print_count("pending payload bytes", (double)x->pending_bytes);
                print_count("RSS before, bytes", (double)x->rss_before);
                print_count("RSS with all pending", (double)x->rss_pending);
                printf("  %-26s %14.3f\n", "RSS growth / payload bytes",
                       x->pending_bytes ? (double)(x->rss_pending - x->rss_before) /
                                              (double)x->pending_bytes
                                        : 0.0);
            }
            printf("  %-26s %14.3f", "cpu seconds per run", cpu);
            if (msgs > 0 && cfg.mode != M_IDLE)
                printf("  (%.3f us/msg)", cpu * 1e6 / msgs);
            printf("\n");
            print_count("peak RSS, bytes", (double)peak_rss_bytes());
        }
    }
    status = 0;

out:
    if (root != NULL)
        json_decref(root);
    rb_free(&rb);
    free(seen.w);
    free(lat_all);
    free(res);
    free(rates);
    free(rb_rates);
    free(tmp);
    if (sc != NULL)
        redisFree(sc);
    server_stop(&srv);
    libevent_global_shutdown();
    if (g_signal && status != 0)
        status = 130;
    return status;
}
