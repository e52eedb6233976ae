/*
 * lib/scripts/NAME.lua as embedded by lib/scripts/gen.py: every script is
 * there, starts with its flags line, carries no comment lines (the
 * generator drops them: they are for readers of the .lua files, not bytes
 * to send with every SCRIPT LOAD), and the frame scripts speak the frame
 * format's magic as lib/frame.c defines it, and the SHAs are right.
 */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "redq_private.h"

Test(scripts, every_script_is_embedded_with_its_flags_and_no_comments)
{
    redq__scripts s;
    int i;

    redq__scripts_init(&s);
    for (i = 0; i < REDQ__SCRIPT_COUNT; i++) {
        const char *src = redq__script_source(i);
        size_t k;

        cr_assert_not_null(src, "script %d", i);
        cr_assert(strncmp(src, "#!lua", 5) == 0, "script %d: %.40s", i, src);
        cr_assert_null(strstr(src, "\n--"), "script %d keeps a comment", i);
        cr_assert_null(strstr(src, "${"), "script %d: unexpanded", i);
        cr_assert_eq(strlen(s.sha[i]), 40);
        for (k = 0; k < 40; k++)
            cr_assert(strchr("0123456789abcdef", s.sha[i][k]) != NULL);
    }
    cr_assert_null(redq__script_source(REDQ__SCRIPT_COUNT));
    cr_assert_null(redq__script_source(-1));
}

Test(scripts, frame_scripts_use_the_frame_magic)
{
    static const int framed[] = {REDQ__SCRIPT_REAP, REDQ__SCRIPT_DEADREQUEUE,
                                 REDQ__SCRIPT_DEADONE, REDQ__SCRIPT_SNAPSHOT};
    size_t i;

    for (i = 0; i < sizeof framed / sizeof framed[0]; i++)
        cr_assert_not_null(
            strstr(redq__script_source(framed[i]), "'" REDQ__FRAME_MAGIC),
            "script %d does not use '%s'", framed[i], REDQ__FRAME_MAGIC);
}

/* Helpers are included once each where named, and the includes' bytes are
 * what the scripts hold (LUA_COUNT in the scripts that count). */
Test(scripts, counting_scripts_count_with_pcall)
{
    static const int counting[] = {REDQ__SCRIPT_TAKE, REDQ__SCRIPT_ACK,
                                   REDQ__SCRIPT_ACKFAST, REDQ__SCRIPT_SETTLE,
                                   REDQ__SCRIPT_REAP};
    size_t i;

    for (i = 0; i < sizeof counting / sizeof counting[0]; i++) {
        const char *src = redq__script_source(counting[i]);
        const char *f = strstr(src, "redis.pcall('HINCRBY'");
        cr_assert_not_null(f, "script %d", counting[i]);
        cr_assert_null(strstr(f + 1, "redis.pcall('HINCRBY'"),
                       "script %d: helper included twice", counting[i]);
    }
}

/* The SHAs computed at build time are the SHA-1 of the exact bytes sent
 * with SCRIPT LOAD (the name Redis gives a script), checked here against
 * coreutils' sha1sum, an implementation that is not the generator's. A
 * wrong one would make every EVALSHA meet NOSCRIPT. */
Test(scripts, build_time_shas_are_the_sha1_of_the_sources)
{
    redq__scripts s;
    char path[] = "/tmp/redq-script-XXXXXX";
    int i;

    if (access("/usr/bin/sha1sum", X_OK) != 0)
        cr_skip_test("no /usr/bin/sha1sum");
    redq__scripts_init(&s);
    for (i = 0; i < REDQ__SCRIPT_COUNT; i++) {
        const char *src = redq__script_source(i);
        char cmd[128], got[64] = "";
        int fd;
        FILE *p;

        strcpy(path, "/tmp/redq-script-XXXXXX");
        fd = mkstemp(path);
        cr_assert(fd >= 0);
        cr_assert_eq(write(fd, src, strlen(src)), (ssize_t)strlen(src));
        close(fd);
        snprintf(cmd, sizeof cmd, "/usr/bin/sha1sum < %s", path);
        p = popen(cmd, "r");
        cr_assert_not_null(p);
        cr_assert_not_null(fgets(got, sizeof got, p));
        pclose(p);
        unlink(path);
        cr_expect(strncmp(got, s.sha[i], 40) == 0, "script %d: %.40s vs %s",
                  i, got, s.sha[i]);
    }
}
