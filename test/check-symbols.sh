#!/bin/sh
# The shared library must export exactly the functions redq.h declares with
# REDQ_API, and lib/redq.map must list exactly those.
# usage: check-symbols.sh LIBREDQ.so redq.h redq.map
set -eu
lib=$1 header=$2 map=$3
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# Declarations may span lines: join the header, then pick the name before
# the first '(' of each REDQ_API declaration. A name in parentheses,
# "REDQ_API void(name)(...)", is a function that a macro of the same name
# wraps: unwrap it first. Preprocessor
# lines (the macros themselves) are dropped, continuation lines included.
sed -e '/^#.*\\$/,/[^\\]$/d' -e '/^#/d' "$header" | tr '\n' ' ' |
    sed 's/(\([a-z_][a-z0-9_]*\))[[:space:]]*(/ \1(/g' |
    grep -o 'REDQ_API[^;(]*(' |
    sed 's/($//; s/.*[ *]//' | sort -u > "$tmp/header"
sed -n 's/^[[:space:]]*\(redq_[a-z0-9_]*\);.*/\1/p' "$map" | sort -u > "$tmp/map"
nm -D --defined-only "$lib" | awk '$2 == "T" { sub(/@.*/, "", $3); print $3 }' |
    sort -u > "$tmp/lib"

rc=0
if ! diff -u "$tmp/header" "$tmp/map" > "$tmp/d1"; then
    echo "redq.h (-) and redq.map (+) disagree:"; cat "$tmp/d1"; rc=1
fi
if ! diff -u "$tmp/map" "$tmp/lib" > "$tmp/d2"; then
    echo "redq.map (-) and the library's exports (+) disagree:"; cat "$tmp/d2"; rc=1
fi
[ "$rc" -eq 0 ] && echo "symbols: $(wc -l < "$tmp/lib") exported, matching redq.h and redq.map"
exit $rc
