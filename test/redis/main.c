/*
 * The redis suite's runner. Without a redis-server to start it exits with 77,
 * which meson reports as SKIP rather than a success that tested nothing.
 *
 * Each test starts its own server from its .init (see fixture.c): criterion
 * runs every test in a separate process, and some tests need a server with
 * other arguments, one that starts late, or one they stop.
 */
#include <criterion/criterion.h>

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char *argv[])
{
    const char *server = getenv("REDQ_TEST_REDIS_SERVER");
    if (!server || !*server) {
        printf("redis suite skipped: REDQ_TEST_REDIS_SERVER is not set "
               "(meson found no redis-server)\n");
        return 77;
    }
    if (access(server, X_OK) != 0) {
        printf("redis suite skipped: %s is not executable\n", server);
        return 77;
    }

    struct criterion_test_set *tests = criterion_initialize();
    /* Each test runs a redis-server next to the test process: two at a time
     * keep a 2-core machine busy without starving the timing tests. The
     * command line (--jobs, CRITERION_JOBS) still overrides this. */
    criterion_options.jobs = 2;
    criterion_options.timeout = 60;
    int result = 0;
    if (criterion_handle_args(argc, argv, true))
        result = !criterion_run_all_tests(tests);
    criterion_finalize(tests);
    return result;
}
