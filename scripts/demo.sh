#!/usr/bin/env bash
# `make demo`: build gpukit in release mode and show what it sees on this machine.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/release
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" >/dev/null
echo "\$ $build/gpukit info"
"$build/gpukit" info
