#!/usr/bin/env bash
# `make bench`: builds the benchmarks in release mode and runs each one, printing its figures.
# Results worth keeping go to docs/BENCHMARKS.md with the machine they ran on.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/bench
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release -DGK_BENCH=ON -DGK_TESTS=OFF >/dev/null
cmake --build "$build" -j "$(nproc)" >/dev/null
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, $(. /etc/os-release && echo "$PRETTY_NAME")"
for b in "$build"/bench/bench_*; do
    [ -x "$b" ] || continue
    echo
    echo "== $(basename "$b")"
    "$b"
done
for s in bench/*/run.sh; do
    [ -f "$s" ] || continue
    echo
    echo "== $s"
    bash "$s" "$build"
done
