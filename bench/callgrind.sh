#!/usr/bin/env bash
# bench/callgrind.sh: client instructions per message, redq against the
# naive one-redisAsyncCommand-per-message producer (issue 4's CPU target).
#
#   bench/callgrind.sh [BUILD_DIR] [MESSAGES]     (defaults: build-bench, 200000)
#
# Starts a throwaway redis-server (tools/redis-local), then runs under
# `valgrind --tool=callgrind`:
#   redq-bench produce --messages N      (100-byte payloads, library defaults)
#   redq-bench consume --messages N      (pool 1; the pre-fill is not counted)
#   naive-producer --messages N          (window 1024)
# and prints total instructions (Ir) / N for each, and the ratio.
#
# Only the measured part is counted: --collect-atstart=no with
# --toggle-collect on redq_bench_measured / naive_measured (the functions
# that run the event loop from the first message to the last), so process
# start-up, connecting, the pre-fill and the result printing are left out.
#
# What the figure includes: every instruction the client process executes
# in that window - redq, hiredis (formatting, reply parsing), libevent, libc
# (memcpy, malloc) - and the harness's own per-message work (stamping a
# sequence number and a clock reading into each payload, the bitmap check,
# the latency histogram), which naive-producer does too (it stamps the
# same way). It does not include the kernel (syscalls count as one
# instruction each to callgrind) or the server. Under valgrind everything
# runs ~50x slower, so batches form differently than at full speed; the
# figure is a fixed-workload CPU cost, not a throughput.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(dirname "$here")
build=${1:-$root/build-bench}
n=${2:-200000}

bench=$build/bench/redq-bench
naive=$build/bench/naive-producer
for b in "$bench" "$naive"; do
    [ -x "$b" ] || { echo "callgrind.sh: $b not built (ninja -C $build)" >&2; exit 2; }
done
command -v valgrind >/dev/null || { echo "callgrind.sh: valgrind not found" >&2; exit 2; }
case $n in ''|*[!0-9]*) echo "callgrind.sh: MESSAGES must be a number" >&2; exit 2 ;; esac

out=$(mktemp -d "${TMPDIR:-/tmp}/redq-callgrind.XXXXXX")
srv=$("$root/tools/redis-local" start) || { rm -rf "$out"; exit 2; }
eval "$srv"
cleanup() {
    "$root/tools/redis-local" stop "$REDQ_REDIS_DIR" || true
    rm -rf "$out"
}
trap cleanup EXIT

# Total Ir of a callgrind out file: the `totals:` line (callgrind writes
# `summary:` too; either holds the sum of the collected events).
ir_of() {
    awk '/^totals:/ { t = $2 } /^summary:/ { s = $2 }
         END { if (t != "") print t; else if (s != "") print s; else exit 1 }' "$1"
}

run_cg() { # name toggle-function command...
    local name=$1 fn=$2
    shift 2
    if ! valgrind --tool=callgrind --callgrind-out-file="$out/$name.out" \
            --collect-atstart=no --toggle-collect="$fn" \
            "$@" >"$out/$name.log" 2>&1; then
        echo "callgrind.sh: $name failed:" >&2
        tail -n 20 "$out/$name.log" >&2
        exit 1
    fi
    ir_of "$out/$name.out"
}

echo "callgrind: $n messages of 100 bytes against $REDQ_URL (valgrind $(valgrind --version))"
prod=$(run_cg produce redq_bench_measured "$bench" produce --url "$REDQ_URL" --messages "$n")
cons=$(run_cg consume redq_bench_measured "$bench" consume --url "$REDQ_URL" --messages "$n")
naiv=$(run_cg naive naive_measured "$naive" --url "$REDQ_URL" --messages "$n")

awk -v n="$n" -v p="$prod" -v c="$cons" -v q="$naiv" 'BEGIN {
    printf "  %-34s %16s %12s\n", "", "Ir total", "Ir/message"
    printf "  %-34s %16.0f %12.0f\n", "redq-bench produce", p, p / n
    printf "  %-34s %16.0f %12.0f\n", "redq-bench consume", c, c / n
    printf "  %-34s %16.0f %12.0f\n", "naive-producer (1 LPUSH/message)", q, q / n
    printf "  redq produce / naive: %.3f (target: below 0.25)\n", p / q
}'
