/*
 * server.c: where the server is, and the two ways redq-bench talks to it
 * besides redq itself: the blocking side connection (DEL, LLEN, INFO,
 * RENAME, CLIENT PAUSE between and around the measured part: the tools'
 * shared one, tools/common/side.c, which reads the URL with the library's
 * public parser and asks the sentinels of a redis+sentinel:// URL for the
 * master) and, without --url or $REDQ_URL, a throwaway redis-server of its
 * own.
 */
#include "bench.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#ifdef __linux__
#include <sys/prctl.h>
#endif

/* A reply may take this long (INFO and DEL of a big list included). */
#define BENCH_SIDE_TIMEOUT_MS 10000

/* ------------------------------------------------------------------------ */
/* where the server is                                                       */
/* ------------------------------------------------------------------------ */

int bench_parse_target(const char *url, bench_target *t, char *err,
                       size_t errlen)
{
    memset(t, 0, sizeof *t);
    if (strlen(url) >= sizeof t->url) {
        snprintf(err, errlen, "URL too long");
        return -1;
    }
    strcpy(t->url, url);
    return side_resolve(url, BENCH_SIDE_TIMEOUT_MS, &t->addr, err, errlen);
}


/* ------------------------------------------------------------------------ */
/* the blocking side connection (setup, LLEN, INFO, RENAME, CLIENT PAUSE)    */
/* ------------------------------------------------------------------------ */

redisContext *bench_sync_connect(bench_target *t, char *err, size_t errlen)
{
    redisContext *c = side_connect(&t->addr, BENCH_SIDE_TIMEOUT_MS, err,
                                   errlen);
    char url[sizeof t->url];

    if (c || !t->addr.sentinel)
        return c;
    /* The sentinels named a node that is no master (a failover under
     * way): ask them again, as side_open() does. */
    strcpy(url, t->url);
    if (!(c = side_open(url, BENCH_SIDE_TIMEOUT_MS, &t->addr, err, errlen)))
        return NULL;
    return c;
}

redisReply *bench_sync_cmd(redisContext *c, char *err, size_t errlen, int argc,
                           const char **argv)
{
    return side_cmd(c, err, errlen, argc, argv);
}

int bench_sync_del(redisContext *c, const char *key, char *err, size_t errlen)
{
    return side_del(c, key, err, errlen);
}

int bench_sync_llen(redisContext *c, const char *key, long long *len,
                    char *err, size_t errlen)
{
    return side_llen(c, key, len, err, errlen);
}

/* INFO <section> as a malloc'd string, or NULL. */
char *bench_sync_info(redisContext *c, const char *section, char *err,
                      size_t errlen)
{
    const char *argv[2] = {"INFO", section};
    redisReply *r = bench_sync_cmd(c, err, errlen, 2, argv);
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


/* ------------------------------------------------------------------------ */
/* the throwaway server                                                      */
/* ------------------------------------------------------------------------ */

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

void bench_server_stop(bench_server *s)
{
    int i, st;
    if (s->pid > 0) {
        kill(s->pid, SIGTERM);
        for (i = 0; i < 1000; i++) { /* 10 s */
            if (waitpid(s->pid, &st, WNOHANG) == s->pid)
                break;
            bench_sleep_ms(10);
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
int bench_server_start(bench_server *s, bench_target *t, char *err, size_t errlen)
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
        deadline = bench_now_ns() + 10000000000u;
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
                    char e[256];

                    bench_parse_target(url, t, e, sizeof e);
                    t->throwaway = 1;
                    return 0;
                }
            } else if (c != NULL) {
                redisFree(c);
            }
            if (bench_now_ns() > deadline || bench_signal) {
                snprintf(err, errlen, "redis-server on port %d did not answer PING", p);
                print_log_tail(s->log);
                bench_server_stop(s);
                return -1;
            }
            bench_sleep_ms(20);
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
