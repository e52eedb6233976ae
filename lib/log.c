/*
 * Diagnostics for the caller's log callback, and the monotonic clock.
 */
#include <stdio.h>
#include <time.h>

#include "redq_private.h"

uint64_t redq__now_us(void)
{
    struct timespec ts;
    /* CLOCK_MONOTONIC: timeouts and backoffs must not jump with NTP. */
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

long long redq__wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void redq__log(const redq__logger *lg, int level, int code, const char *fmt,
               ...)
{
    char msg[512];
    va_list ap;
    int n = 0;

    if (lg == NULL || lg->cb == NULL || level > lg->level)
        return;
    if (lg->prefix != NULL)
        n = snprintf(msg, sizeof msg, "%s: ", lg->prefix);
    if (n < 0 || (size_t)n >= sizeof msg)
        n = 0;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof msg - (size_t)n, fmt, ap);
    va_end(ap);
    lg->cb(level, code, msg, lg->user);
}
