#!/usr/bin/env bash
# examples/train_torch.py under `gpukit run` with Debian's python3 and torch on the CPU: it trains
# to its loss target, shrinks to micro-batches when --squeeze cuts its memory, and the report
# shows the loader's wait, the step time, the loss, the batch model and the memory series.
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}" "${GPUKIT_LIBRARY:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }
/usr/bin/python3 -c 'import torch, numpy' 2>"$tmp/imp" ||
    { cat "$tmp/imp"; fail "Debian's python3-torch and python3-numpy are needed (scripts/deps.sh test)"; }
export PYTHONPATH="$GK_SOURCE_DIR/python" PYTHONDONTWRITEBYTECODE=1
if [ -n "${GK_SAN_PRELOAD:-}" ]; then # a sanitizer build: its runtime goes first
    export LD_PRELOAD="$GK_SAN_PRELOAD" ASAN_OPTIONS=detect_leaks=0:alloc_dealloc_mismatch=0
fi

timeout 240 "$GPUKIT" run --interval 0.1 --out "$tmp/run.jsonl" -- /usr/bin/python3 \
    "$GK_SOURCE_DIR/examples/train_torch.py" --samples 2048 --epochs 3 --workers 2 \
    --squeeze 10:3MiB --data "$tmp/stripes.gkr" >"$tmp/out" 2>"$tmp/report" ||
    { cat "$tmp/out" "$tmp/report"; fail "gpukit run -- train_torch.py failed"; }
expect "$tmp/out" "^data $tmp/stripes.gkr: 2048 records of <f4 (257,)"
expect "$tmp/out" "^batch [0-9]* (finder: [0-9] trials"
expect "$tmp/out" "memory pressure (shrink): micro-batch now [0-9]*, [0-9]* accumulation steps keep the batch"
expect "$tmp/out" "^converged: loss"
# The report: the loader's wait, the step time, the loss, the batch model, the memory series.
for m in "gpukit_loader_wait_seconds_total{device:host,loader:train}" \
    "gpukit_loader_batches_total{device:host,loader:train}" "train_step_time (ms)" "train_loss" \
    "train_samples_per_second" "gpukit_batch_size{device:unknown}" \
    "gpukit_batch_per_sample_bytes{device:unknown}" "gpukit_alloc_in_use_bytes{device:unknown,pool:custom}" \
    "gpukit_alloc_reserved_bytes{device:unknown,pool:custom}"; do
    expect "$tmp/report" "^$m "
done
steps=$(sed -n 's/.* \([0-9]*\) steps in .*/\1/p' "$tmp/out")
[ -n "$steps" ] || fail "no step count in the output"
/usr/bin/python3 - "$tmp/run.jsonl" "$steps" <<'PY'
import json, sys
batches = steps = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("type") != "metric":
        continue
    if r["name"] == "gpukit_loader_batches_total":
        batches += r["value"]  # counted by the C loader itself
    if r["name"] == "train_step_time":
        steps += 1
want = int(sys.argv[2])
assert batches == want, (batches, want)
assert steps == want, (steps, want)
PY
echo "python_example: ok"
