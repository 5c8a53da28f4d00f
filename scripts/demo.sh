#!/usr/bin/env bash
# `make demo`: build gpukit (release), generate the training set once (cached under build/demo/),
# train the example under `gpukit run`, print the report with its advice and the HTML report's
# path.
set -euo pipefail
cd "$(dirname "$0")/.."
build=build/release
data=build/demo/train.gkr
cmake -S . -B "$build" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$build" -j "$(nproc)" >/dev/null
mkdir -p build/demo
# A file cut short by an interrupted generation fails the header check and is made again.
if [ ! -f "$data" ] || ! "$build/gpukit" data inspect "$data" >/dev/null 2>&1; then
    rm -f "$data"
    "$build/examples/train" --data "$data" --generate 1000000 --generate-only
fi
rm -f "$data.ckpt"
cmd=("$build/gpukit" run --interval 0.1 --out build/demo/run.jsonl --html build/report.html --
    "$build/examples/train" --data "$data" --epochs 40 --save-every 500)
echo "\$ ${cmd[*]}"
"${cmd[@]}"
echo
echo "HTML report: build/report.html"
