/* mkdtemp, nanosleep beyond strict POSIX: before any include. */
#define _DEFAULT_SOURCE

#include "fixture_cluster.h"
#include "fixture.h"

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <arpa/inet.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#ifdef __linux__
#include <sys/prctl.h>
#endif

#define FXC_START_MS 10000
#define FXC_OK_MS 30000

static struct {
    char dir[160];
    int port[FXC_NODES];
    pid_t pid[FXC_NODES];
    char url[256];
} cx;

static void nap(int ms)
{
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) < 0 && errno == EINTR) {
    }
}

/* A port p with p and p + 10000 (the cluster bus) free on loopback now,
 * and not one of ours already. */
static bool port_free(int p)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a;
    bool ok;
    if (fd < 0)
        return false;
    memset(&a, 0, sizeof a);
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons((uint16_t)p);
    ok = bind(fd, (struct sockaddr *)&a, sizeof a) == 0;
    close(fd);
    return ok;
}

static int pick_port(void)
{
    for (int tries = 0; tries < 1000; tries++) {
        /* Both the port and its bus port (+10000) below the kernel's
         * ephemeral range (32768 and up), where the suite's own outgoing
         * connections would otherwise take them between check and bind. */
        int p = 11000 + (int)((unsigned)rand() % 10000u);
        bool taken = false;
        for (int i = 0; i < FXC_NODES; i++)
            if (cx.port[i] == p)
                taken = true;
        if (!taken && port_free(p) && port_free(p + 10000))
            return p;
    }
    cr_assert_fail("no free port pair for a cluster node");
    return 0;
}

static const char *server_bin(void)
{
    const char *bin = getenv("REDQ_TEST_REDIS_SERVER");
    cr_assert(bin && *bin, "REDQ_TEST_REDIS_SERVER is not set");
    return bin;
}

static const char *cli_bin(void)
{
    const char *cli = getenv("REDQ_TEST_REDIS_CLI");
    return cli && *cli ? cli : "redis-cli";
}

/* fork + exec, stdout/stderr to `log` (or /dev/null), dying with us. */
static pid_t spawn(const char *const *argv, const char *log)
{
    pid_t parent = getpid();
    pid_t pid = fork();
    cr_assert(pid >= 0, "fork: %s", strerror(errno));
    if (pid == 0) {
#ifdef __linux__
        prctl(PR_SET_PDEATHSIG, SIGKILL);
#endif
        if (getppid() != parent)
            _exit(126);
        int in = open("/dev/null", O_RDONLY);
        int out = log ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0600)
                      : open("/dev/null", O_WRONLY);
        if (in >= 0)
            dup2(in, STDIN_FILENO);
        if (out >= 0) {
            dup2(out, STDOUT_FILENO);
            dup2(out, STDERR_FILENO);
        }
        for (int fd = 3; fd < 1024; fd++)
            close(fd);
        union {
            const char *const *c;
            char *const *v;
        } av = {.c = argv};
        execvp(argv[0], av.v);
        _exit(127);
    }
    return pid;
}

static int run_wait(pid_t pid)
{
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

redisContext *fxc_connect(int i)
{
    struct timeval tv = {1, 0};
    if (cx.pid[i] <= 0)
        return NULL;
    redisContext *c = redisConnectWithTimeout("127.0.0.1", cx.port[i], tv);
    if (c == NULL || c->err) {
        if (c)
            redisFree(c);
        return NULL;
    }
    struct timeval ctv = {10, 0};
    redisSetTimeout(c, ctv);
    return c;
}

redisReply *fxc_cmd(int i, const char *fmt, ...)
{
    redisContext *c = fxc_connect(i);
    redisReply *r;
    va_list ap;
    if (c == NULL)
        return NULL;
    va_start(ap, fmt);
    r = redisvCommand(c, fmt, ap);
    va_end(ap);
    redisFree(c);
    return r;
}

static bool info_has(int i, const char *cmd, const char *needle)
{
    redisReply *r = fxc_cmd(i, cmd);
    bool ok = r && r->type == REDIS_REPLY_STRING && strstr(r->str, needle);
    if (r)
        freeReplyObject(r);
    return ok;
}

bool fxc_alive(int i)
{
    return cx.pid[i] > 0;
}

int fxc_port(int i)
{
    return cx.port[i];
}

const char *fxc_url(void)
{
    return cx.url;
}

void fxc_node_id(int i, char id[41])
{
    redisReply *r = fxc_cmd(i, "CLUSTER MYID");
    cr_assert(r && r->type == REDIS_REPLY_STRING && r->len == 40,
              "CLUSTER MYID on node %d", i);
    memcpy(id, r->str, 41);
    freeReplyObject(r);
}

bool fxc_is_master(int i)
{
    return cx.pid[i] > 0 && info_has(i, "INFO replication", "role:master");
}

static int node_by_port(long long port)
{
    for (int i = 0; i < FXC_NODES; i++)
        if (cx.port[i] == port)
            return i;
    return -1;
}

/* The owner of `slot` as node i says (CLUSTER SLOTS), -1 if unknown. */
static int owner_seen_by(int i, unsigned slot)
{
    redisReply *r = fxc_cmd(i, "CLUSTER SLOTS");
    int owner = -1;
    if (r && r->type == REDIS_REPLY_ARRAY)
        for (size_t k = 0; k < r->elements; k++) {
            redisReply *e = r->element[k];
            if (e->elements >= 3 && (unsigned)e->element[0]->integer <= slot &&
                slot <= (unsigned)e->element[1]->integer)
                owner = node_by_port(e->element[2]->element[1]->integer);
        }
    if (r)
        freeReplyObject(r);
    return owner;
}

int fxc_master_of_slot(unsigned slot)
{
    for (int i = 0; i < FXC_NODES; i++) {
        if (cx.pid[i] <= 0)
            continue;
        int o = owner_seen_by(i, slot);
        if (o >= 0 && fxc_is_master(o))
            return o;
    }
    return -1;
}

int fxc_replica_of(int m)
{
    char id[41];
    fxc_node_id(m, id);
    for (int i = 0; i < FXC_NODES; i++) {
        if (i == m || cx.pid[i] <= 0)
            continue;
        redisReply *r = fxc_cmd(i, "CLUSTER NODES");
        bool mine = false;
        if (r && r->type == REDIS_REPLY_STRING) {
            /* "<id> <addr> myself,slave <master id> ..." */
            char *line = strstr(r->str, "myself");
            if (line && strncmp(line, "myself,slave ", 13) == 0 &&
                strncmp(line + 13, id, 40) == 0)
                mine = true;
        }
        if (r)
            freeReplyObject(r);
        if (mine)
            return i;
    }
    return -1;
}

/* Every live node: state ok, all slots served, and the same owner for a
 * sample of slots across the whole range. */
static bool all_ok(void)
{
    int first = -1;
    for (int i = 0; i < FXC_NODES; i++) {
        if (cx.pid[i] <= 0)
            continue;
        if (!info_has(i, "CLUSTER INFO", "cluster_state:ok") ||
            !info_has(i, "CLUSTER INFO", "cluster_slots_ok:16384"))
            return false;
        if (first < 0)
            first = i;
    }
    for (unsigned s = 0; s < 16384; s += 1021) {
        int o = owner_seen_by(first, s);
        if (o < 0 || cx.pid[o] <= 0)
            return false;
        for (int i = first + 1; i < FXC_NODES; i++)
            if (cx.pid[i] > 0 && owner_seen_by(i, s) != o)
                return false;
    }
    return true;
}

void fxc_wait_ok(int timeout_ms)
{
    uint64_t deadline = fx_now_us() + (uint64_t)timeout_ms * 1000u;
    while (!all_ok()) {
        cr_assert(fx_now_us() < deadline,
                  "cluster not ok after %d ms (logs in %s)", timeout_ms,
                  cx.dir);
        nap(50);
    }
}

static void start_node(int i)
{
    char port[16], dir[200], log[220];
    snprintf(port, sizeof port, "%d", cx.port[i]);
    snprintf(dir, sizeof dir, "%s/n%d", cx.dir, i);
    snprintf(log, sizeof log, "%s/n%d.log", cx.dir, i);
    mkdir(dir, 0700);
    const char *argv[] = {server_bin(),
                          "--port", port,
                          "--bind", "127.0.0.1",
                          "--cluster-enabled", "yes",
                          "--cluster-config-file", "nodes.conf",
                          /* Fast failure detection for the SIGKILL test;
                           * a loopback cluster on a busy 2-core box still
                           * answers pings well within it. */
                          "--cluster-node-timeout", "1500",
                          /* Any replica may take over, however long it
                           * was cut off (the test kills on purpose). */
                          "--cluster-replica-validity-factor", "0",
                          /* Reshards must not move replicas around. */
                          "--cluster-allow-replica-migration", "no",
                          "--save", "",
                          "--appendonly", "no",
                          "--dir", dir,
                          "--logfile", log,
                          "--daemonize", "no",
                          "--repl-diskless-sync", "yes",
                          "--repl-diskless-sync-delay", "0",
                          NULL};
    cx.pid[i] = spawn(argv, NULL);
}

void fxc_start(void)
{
    memset(&cx, 0, sizeof cx);
    srand((unsigned)(getpid() ^ (pid_t)fx_now_us()));
    const char *tmp = getenv("TMPDIR");
    snprintf(cx.dir, sizeof cx.dir, "%s/redq-cluster-XXXXXX",
             tmp && *tmp == '/' && strlen(tmp) < 64 ? tmp : "/tmp");
    cr_assert(mkdtemp(cx.dir), "mkdtemp: %s", strerror(errno));
    for (int i = 0; i < FXC_NODES; i++)
        cx.port[i] = pick_port();
    for (int i = 0; i < FXC_NODES; i++)
        start_node(i);
    uint64_t deadline = fx_now_us() + FXC_START_MS * 1000u;
    for (int i = 0; i < FXC_NODES; i++)
        while (!info_has(i, "INFO server", "redis_version")) {
            int st;
            cr_assert(fx_now_us() < deadline, "node %d did not come up", i);
            if (waitpid(cx.pid[i], &st, WNOHANG) == cx.pid[i]) {
                /* It exited: its port (or bus port) was taken after the
                 * check. Another pair, and again. */
                cx.port[i] = 0;
                cx.port[i] = pick_port();
                start_node(i);
            }
            nap(5);
        }

    char addr[FXC_NODES][32], log[200];
    const char *argv[FXC_NODES + 8];
    size_t n = 0;
    argv[n++] = cli_bin();
    argv[n++] = "--cluster";
    argv[n++] = "create";
    for (int i = 0; i < FXC_NODES; i++) {
        snprintf(addr[i], sizeof addr[i], "127.0.0.1:%d", cx.port[i]);
        argv[n++] = addr[i];
    }
    argv[n++] = "--cluster-replicas";
    argv[n++] = "1";
    argv[n++] = "--cluster-yes";
    argv[n] = NULL;
    snprintf(log, sizeof log, "%s/create.log", cx.dir);
    int rc = run_wait(spawn(argv, log));
    cr_assert_eq(rc, 0, "redis-cli --cluster create exited %d (see %s)", rc,
                 log);
    fxc_wait_ok(FXC_OK_MS);
    snprintf(cx.url, sizeof cx.url,
             "redis+cluster://127.0.0.1:%d,127.0.0.1:%d,127.0.0.1:%d",
             cx.port[0], cx.port[1], cx.port[2]);
}

static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        char path[512];
        while ((e = readdir(d)) != NULL) {
            struct stat st;
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            snprintf(path, sizeof path, "%s/%s", dir, e->d_name);
            if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
                remove_tree(path);
            else
                unlink(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

static void stop_one(int i)
{
    if (cx.pid[i] <= 0)
        return;
    kill(cx.pid[i], SIGTERM);
    for (int k = 0; k < 500; k++) {
        if (waitpid(cx.pid[i], NULL, WNOHANG) == cx.pid[i]) {
            cx.pid[i] = 0;
            return;
        }
        nap(10);
    }
    kill(cx.pid[i], SIGKILL);
    waitpid(cx.pid[i], NULL, 0);
    cx.pid[i] = 0;
}

void fxc_stop(void)
{
    for (int i = 0; i < FXC_NODES; i++)
        stop_one(i);
    if (cx.dir[0]) {
        if (getenv("REDQ_TEST_KEEP") && *getenv("REDQ_TEST_KEEP"))
            fprintf(stderr, "redq test: kept %s\n", cx.dir);
        else
            remove_tree(cx.dir);
    }
    cx.dir[0] = '\0';
}

pid_t fxc_reshard_start(int from, int to, int nslots)
{
    char src[41], dst[41], addr[32], slots[16], log[200];
    fxc_node_id(from, src);
    fxc_node_id(to, dst);
    snprintf(addr, sizeof addr, "127.0.0.1:%d", cx.port[from]);
    snprintf(slots, sizeof slots, "%d", nslots);
    snprintf(log, sizeof log, "%s/reshard.log", cx.dir);
    const char *argv[] = {cli_bin(), "--cluster", "reshard", addr,
                          "--cluster-from", src, "--cluster-to", dst,
                          "--cluster-slots", slots, "--cluster-yes",
                          "--cluster-pipeline", "50", NULL};
    return spawn(argv, log);
}

bool fxc_child_done(pid_t pid)
{
    int st = 0;
    pid_t r = waitpid(pid, &st, WNOHANG);
    if (r == 0)
        return false;
    cr_assert_eq(r, pid, "waitpid: %s", strerror(errno));
    cr_assert(WIFEXITED(st) && WEXITSTATUS(st) == 0,
              "child %d failed (status %d; logs in %s)", (int)pid, st,
              cx.dir);
    return true;
}

static void ok_reply(redisReply *r, const char *what)
{
    cr_assert(r != NULL, "%s: no reply", what);
    cr_assert(r->type != REDIS_REPLY_ERROR, "%s: %s", what, r->str);
    freeReplyObject(r);
}

void fxc_migrate_begin(unsigned slot, int from, int to)
{
    char src[41], dst[41];
    fxc_node_id(from, src);
    fxc_node_id(to, dst);
    ok_reply(fxc_cmd(to, "CLUSTER SETSLOT %u IMPORTING %s", slot, src),
             "SETSLOT IMPORTING");
    ok_reply(fxc_cmd(from, "CLUSTER SETSLOT %u MIGRATING %s", slot, dst),
             "SETSLOT MIGRATING");
}

void fxc_migrate_keys(unsigned slot, int from, int to)
{
    for (;;) {
        redisReply *r = fxc_cmd(from, "CLUSTER GETKEYSINSLOT %u 100", slot);
        cr_assert(r && r->type == REDIS_REPLY_ARRAY, "GETKEYSINSLOT");
        size_t n = r->elements;
        for (size_t k = 0; k < n; k++)
            ok_reply(fxc_cmd(from, "MIGRATE 127.0.0.1 %d %b 0 5000",
                             cx.port[to], r->element[k]->str,
                             (size_t)r->element[k]->len),
                     "MIGRATE");
        freeReplyObject(r);
        if (n == 0)
            return;
    }
}

void fxc_migrate_end(unsigned slot, int from, int to)
{
    char dst[41];
    fxc_node_id(to, dst);
    /* The new owner first (it bumps its epoch), then the old one, then
     * the others; replicas learn it from their masters. */
    ok_reply(fxc_cmd(to, "CLUSTER SETSLOT %u NODE %s", slot, dst),
             "SETSLOT NODE (to)");
    ok_reply(fxc_cmd(from, "CLUSTER SETSLOT %u NODE %s", slot, dst),
             "SETSLOT NODE (from)");
    for (int i = 0; i < FXC_NODES; i++)
        if (i != to && i != from && fxc_is_master(i))
            ok_reply(fxc_cmd(i, "CLUSTER SETSLOT %u NODE %s", slot, dst),
                     "SETSLOT NODE (other)");
}

void fxc_wait_master(int i, int timeout_ms)
{
    uint64_t deadline = fx_now_us() + (uint64_t)timeout_ms * 1000u;
    while (!fxc_is_master(i)) {
        cr_assert(fx_now_us() < deadline, "node %d never became master", i);
        nap(20);
    }
}

/* Is replica r synced and known as a replica by its master (what a manual
 * failover needs: the master must accept r's MFSTART)? */
static bool replica_settled(int r)
{
    char rid[41], mid[41] = "";
    int m = -1;
    if (!info_has(r, "INFO replication", "master_link_status:up"))
        return false;
    fxc_node_id(r, rid);
    redisReply *e = fxc_cmd(r, "CLUSTER NODES");
    if (e && e->type == REDIS_REPLY_STRING) {
        char *line = strstr(e->str, "myself,slave ");
        if (line)
            memcpy(mid, line + 13, 40), mid[40] = '\0';
    }
    if (e)
        freeReplyObject(e);
    for (int i = 0; i < FXC_NODES && mid[0]; i++) {
        char id[41];
        if (cx.pid[i] <= 0)
            continue;
        fxc_node_id(i, id);
        if (strcmp(id, mid) == 0)
            m = i;
    }
    if (m < 0)
        return false;
    e = fxc_cmd(m, "CLUSTER REPLICAS %s", mid);
    bool ok = false;
    if (e && e->type == REDIS_REPLY_ARRAY)
        for (size_t k = 0; k < e->elements; k++)
            if (strncmp(e->element[k]->str, rid, 40) == 0)
                ok = true;
    if (e)
        freeReplyObject(e);
    return ok;
}

/* A manual failover gives up after 5 s (the replica must catch up while
 * the master pauses writes); on a loaded 2-core box that happens, so it is
 * asked again, up to 3 times. */
void fxc_failover(int r)
{
    for (int attempt = 0; attempt < 3; attempt++) {
        fxc_failover_start(r);
        uint64_t deadline = fx_now_us() + 7000000u;
        while (fx_now_us() < deadline) {
            if (fxc_is_master(r))
                return;
            nap(20);
        }
    }
    cr_assert_fail("node %d never became master after 3 CLUSTER FAILOVER", r);
}

void fxc_failover_start(int r)
{
    uint64_t deadline = fx_now_us() + 15000000u;
    while (!replica_settled(r)) {
        cr_assert(fx_now_us() < deadline, "replica %d never settled", r);
        nap(20);
    }
    ok_reply(fxc_cmd(r, "CLUSTER FAILOVER"), "CLUSTER FAILOVER");
}

void fxc_kill(int i)
{
    if (cx.pid[i] <= 0)
        return;
    kill(cx.pid[i], SIGKILL);
    waitpid(cx.pid[i], NULL, 0);
    cx.pid[i] = 0;
}

long long fxc_dbsize(void)
{
    long long n = 0;
    for (int i = 0; i < FXC_NODES; i++) {
        if (!fxc_is_master(i))
            continue;
        redisReply *r = fxc_cmd(i, "DBSIZE");
        cr_assert(r && r->type == REDIS_REPLY_INTEGER, "DBSIZE on %d", i);
        n += r->integer;
        freeReplyObject(r);
    }
    return n;
}

void fxc_flushall(void)
{
    for (int i = 0; i < FXC_NODES; i++)
        if (fxc_is_master(i))
            ok_reply(fxc_cmd(i, "FLUSHALL"), "FLUSHALL");
}
