#!/usr/bin/env bash
# test/serve/run.sh: the tests of `redq serve` with real parts, on the build
# in $REDQ_BUILD_DIR (default build/):
#   http.test.mjs        every endpoint against a real redis-server
#   prometheus.test.mjs  promtool check metrics; a throwaway prometheus
#                        scraping it answers a queue's depth
#   dashboard.test.mjs   the page in headless chromium (puppeteer-core):
#                        depths, requeue, pause/resume of a running
#                        consumer, hostile dead letters as text; writes
#                        docs/dashboard.png (REDQ_SCREENSHOT= to skip)
# puppeteer-core comes from the committed package-lock.json (npm ci into
# test/serve/node_modules, once). Every server a test starts listens on
# 127.0.0.1 and is stopped by pid.
#
# Arguments name the tests to run (http prometheus dashboard; default all).
# Exit 0: all passed; 1: a test failed; 77: something they need is not
# installed (tools/bootstrap installs it), with what on stderr.
set -euo pipefail
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)
root=$(cd "$here/../.." && pwd -P)
export REDQ_BUILD_DIR=${REDQ_BUILD_DIR:-build}
cd "$root"

missing=""
for c in node npm redis-server redis-cli prometheus promtool; do
    command -v "$c" >/dev/null 2>&1 || missing="$missing $c"
done
[ -x "${REDQ_CHROMIUM:-/usr/bin/chromium}" ] || missing="$missing chromium"
if [ -n "$missing" ]; then
    echo "serve tests: not installed:$missing (tools/bootstrap installs them)" >&2
    exit 77
fi
if [ ! -x "$REDQ_BUILD_DIR/tools/redq" ]; then
    echo "serve tests: no $REDQ_BUILD_DIR/tools/redq (build first)" >&2
    exit 1
fi

# The driver, exactly as locked; again only when the lockfile changed.
if [ ! -f "$here/node_modules/.package-lock.json" ] ||
   [ "$here/package-lock.json" -nt "$here/node_modules/.package-lock.json" ]; then
    if ! (cd "$here" && npm ci --no-audit --no-fund --loglevel=error); then
        echo "serve tests: npm ci in test/serve failed (puppeteer-core not installable)" >&2
        exit 77
    fi
fi

rc=0
[ $# -gt 0 ] || set -- http prometheus dashboard
for t in "$@"; do
    echo "=== serve: $t.test.mjs"
    timeout 300 node "$here/$t.test.mjs" || rc=1
done
exit $rc
