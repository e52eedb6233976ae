/*
 * common.c: what every mode uses and none owns: clocks, CPU and memory
 * readings, the stamp in each payload, the median of the runs, the latency
 * histogram and the bitmap of sequence numbers seen.
 *
 * Nothing here talks to Redis or to the event loop.
 */
#include "bench.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

const char *const bench_mode_names[6] = {"produce", "consume", "e2e",
                                         "latency", "idle",    "memory"};

volatile sig_atomic_t bench_signal;

/* ------------------------------------------------------------------------ */
/* small helpers                                                             */
/* ------------------------------------------------------------------------ */

uint64_t bench_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void bench_sleep_ms(long ms)
{
    struct timespec ts;
    ts.tv_sec = ms / 1000;
    ts.tv_nsec = (ms % 1000) * 1000000L;
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR && !bench_signal)
        ;
}

/* CPU seconds (user + system) used by this process so far; children (the
 * throwaway server, redis-benchmark) are not included. */
double bench_cpu_seconds(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return 0.0;
    return (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6 +
           (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

long long bench_peak_rss_bytes(void)
{
    struct rusage ru;
    if (getrusage(RUSAGE_SELF, &ru) != 0)
        return -1;
    return (long long)ru.ru_maxrss * 1024; /* Linux reports KiB */
}

/* Resident set size right now (ru_maxrss only ever grows). */
long long bench_current_rss_bytes(void)
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

void bench_stamp(char *payload, uint64_t seq, uint64_t ts)
{
    memcpy(payload, &seq, 8);
    memcpy(payload + 8, &ts, 8);
}

void bench_unstamp(const void *payload, uint64_t *seq, uint64_t *ts)
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
double bench_median(double *v, size_t n)
{
    qsort(v, n, sizeof *v, cmp_double);
    return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2.0;
}


/* ------------------------------------------------------------------------ */
/* latency histogram: log-linear, 64 sub-buckets per power of two            */
/* ------------------------------------------------------------------------ */

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

void bench_hist_add(bench_hist *h, uint64_t v)
{
    size_t i;
    if (v < BENCH_H_SUB) {
        i = (size_t)v;
    } else {
        unsigned k = ilog2_u64(v);
        if (k > BENCH_H_MAX_EXP)
            i = BENCH_H_BUCKETS - 1;
        else
            i = BENCH_H_SUB + (size_t)(k - BENCH_H_SUB_BITS) * BENCH_H_SUB +
                (size_t)((v >> (k - BENCH_H_SUB_BITS)) - BENCH_H_SUB);
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
    if (i < BENCH_H_SUB)
        return i;
    j = i - BENCH_H_SUB;
    k = j / BENCH_H_SUB + BENCH_H_SUB_BITS;
    sub = j % BENCH_H_SUB;
    width = (uint64_t)1 << (k - BENCH_H_SUB_BITS);
    return ((uint64_t)(BENCH_H_SUB + sub) << (k - BENCH_H_SUB_BITS)) + (width - 1) / 2;
}

/* The value at quantile q (0 < q <= 1), never above the exact maximum. */
uint64_t bench_hist_quantile(const bench_hist *h, double q)
{
    double want = q * (double)h->n;
    uint64_t rank = (uint64_t)want, seen = 0;
    size_t i;
    if ((double)rank < want)
        rank++;
    if (rank == 0)
        rank = 1;
    for (i = 0; i < BENCH_H_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t v = hist_bucket_value(i);
            return v < h->max ? v : h->max;
        }
    }
    return h->max;
}

void bench_hist_merge(bench_hist *into, const bench_hist *from)
{
    size_t i;
    for (i = 0; i < BENCH_H_BUCKETS; i++)
        into->b[i] += from->b[i];
    into->n += from->n;
    if (from->max > into->max)
        into->max = from->max;
}


/* ------------------------------------------------------------------------ */
/* bitmap of sequence numbers seen                                           */
/* ------------------------------------------------------------------------ */

/* Make room for bit `bit`. Grows by doubling, so --seconds runs (whose
 * message count is unknown up front) allocate O(log n) times, not per
 * message. 0 or -1 (out of memory). */
int bench_bm_reserve(bench_bitmap *b, uint64_t bit)
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
int bench_bm_test_set(bench_bitmap *b, uint64_t bit)
{
    uint64_t mask = (uint64_t)1 << (bit % 64);
    size_t i = (size_t)(bit / 64);
    if (i >= b->nwords && bench_bm_reserve(b, bit) != 0)
        return -1;
    if (b->w[i] & mask)
        return 1;
    b->w[i] |= mask;
    return 0;
}

void bench_bm_clear(bench_bitmap *b)
{
    if (b->w != NULL)
        memset(b->w, 0, b->nwords * sizeof *b->w);
}


/* ------------------------------------------------------------------------ */
/* the summary table                                                         */
/* ------------------------------------------------------------------------ */

void bench_print_count(const char *label, double v)
{
    printf("  %-26s %14.0f\n", label, v);
}
