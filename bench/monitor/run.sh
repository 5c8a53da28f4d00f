#!/usr/bin/env bash
# `make bench` hook for the monitor: the scrape cost of `gpukit serve` against node_exporter.
# (bench_monitor itself is run by scripts/bench.sh with the other bench_* programs.)
# Usage: bench/monitor/run.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: bench/monitor/run.sh BUILD_DIR}
bash "$(dirname "$0")/scrape.sh" "$build/gpukit"
