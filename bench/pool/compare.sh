#!/usr/bin/env bash
# Before and after on one machine: builds an earlier revision's library (default main) beside this
# tree's, compiles bench_pool_paths.c against each (it uses the public API only), and runs the two
# alternately, so both sets of figures come from the same run.
# Usage: bash bench/pool/compare.sh [REV] [ROUNDS] [SECTIONS]   (main, 3, ABC)
set -euo pipefail
cd "$(dirname "$0")/../.."
rev=${1:-main}
rounds=${2:-3}
sections=${3:-ABC}
base=build/bench-base
libs="-lpthread -ldl -lm -lcjson -lmicrohttpd"
rm -rf "$base/src"
mkdir -p "$base/src"
git archive "$rev" | tar -x -C "$base/src"
cmake -S "$base/src" -B "$base/build" -DCMAKE_BUILD_TYPE=Release -DGK_TESTS=OFF \
    -DGK_EXAMPLES=OFF >/dev/null
cmake --build "$base/build" -j "$(nproc)" --target gpukit_static >/dev/null
cmake -S . -B build/bench -DCMAKE_BUILD_TYPE=Release -DGK_BENCH=ON -DGK_TESTS=OFF \
    -DGK_EXAMPLES=OFF >/dev/null
cmake --build build/bench -j "$(nproc)" --target gpukit_static >/dev/null
for side in base this; do
    if [ "$side" = base ]; then inc=$base/src/include lib=$base/build/libgpukit.a; else
        inc=include lib=build/bench/libgpukit.a; fi
    # shellcheck disable=SC2086
    cc -O2 -DNDEBUG -I"$inc" -Ibench bench/pool/bench_pool_paths.c "$lib" $libs \
        -o "build/bench/bench_pool_paths.$side"
done
echo "machine: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
for i in $(seq "$rounds"); do
    echo
    echo "== $rev, round $i"
    build/bench/bench_pool_paths.base tests/data/cnn_train_trace.csv "$sections"
    echo
    echo "== this tree, round $i"
    build/bench/bench_pool_paths.this tests/data/cnn_train_trace.csv "$sections"
done
