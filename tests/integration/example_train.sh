#!/usr/bin/env bash
# examples/train end to end: it converges on host and on a sim device; a run stopped at step k
# and resumed from its checkpoint reproduces the uninterrupted loss curve bit for bit; the
# pressure policy shrinks the micro-batch (keeping the batch) when the budget drops; under
# `gpukit run` the pool and loader metrics arrive without code in the example.
set -euo pipefail
: "${GPUKIT:?}" "${GK_BINARY_DIR:?}"
train="$GK_BINARY_DIR/examples/train"
[ -x "$train" ] || { echo "examples not built (GK_EXAMPLES=OFF)"; exit 77; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }
data="$tmp/d.gkr"
common=(--data "$data" --dim 16 --max-batch 1024 --workers 2 --epochs 3)

# Generation, then convergence on host.
timeout 120 "$train" --device host --generate 40000 "${common[@]}" --loss-log "$tmp/full.log" \
    >"$tmp/host.out" 2>&1 || { cat "$tmp/host.out"; fail "host run failed"; }
expect "$tmp/host.out" "^generating 40000 records of 16 features"
expect "$tmp/host.out" "^batch 1024 (finder: "
expect "$tmp/host.out" "^converged: the loss is within 1% of the noise floor"
steps=$(wc -l <"$tmp/full.log")
[ "$steps" -eq 117 ] || fail "expected 3 epochs x 39 steps, got $steps"

# Interrupted at step 50 (checkpoints every 20), resumed: the same curve, bit for bit.
status=0
timeout 120 "$train" --device host "${common[@]}" --save-every 20 --stop-at 50 \
    --loss-log "$tmp/part.log" >"$tmp/stop.out" 2>&1 || status=$?
[ "$status" -eq 75 ] || { cat "$tmp/stop.out"; fail "--stop-at exit status $status, expected 75"; }
expect "$tmp/stop.out" "^stopped at step 50"
timeout 120 "$train" --device host "${common[@]}" --save-every 20 --resume \
    --loss-log "$tmp/part.log" >"$tmp/resume.out" 2>&1 || { cat "$tmp/resume.out"; fail "resume failed"; }
expect "$tmp/resume.out" "^resumed at step 40 from $data.ckpt"
expect "$tmp/resume.out" "^converged"
# The resumed run redoes steps 41..50; the last line per step is the curve.
awk '{l[$1] = $2} END {for (k in l) print k, l[k]}' "$tmp/part.log" | sort -n >"$tmp/resumed"
sort -n "$tmp/full.log" >"$tmp/uninterrupted"
cmp "$tmp/uninterrupted" "$tmp/resumed" || fail "resumed loss curve differs from the uninterrupted one"
# A checkpoint of another shape is refused with a message.
status=0
"$train" --device host --data "$data" --dim 16 --max-batch 512 --resume >"$tmp/bad.out" 2>&1 || status=$?
[ "$status" -eq 1 ] || fail "a mismatched checkpoint was accepted"
expect "$tmp/bad.out" "checkpoint"

# A sim device: converges; a dropping budget shrinks the micro-batch and keeps the batch.
timeout 120 "$train" --device "sim:capacity=64MiB,backed=1" --data "$data" --dim 16 \
    --max-batch 1024 --epochs 6 --squeeze 10:8K >"$tmp/sim.out" 2>&1 ||
    { cat "$tmp/sim.out"; fail "sim run failed"; }
expect "$tmp/sim.out" "^device sim:capacity=64MiB"
expect "$tmp/sim.out" "memory pressure: micro-batch now [0-9]*, [0-9]* accumulation steps keep the batch at 1024"
expect "$tmp/sim.out" "^converged"
# Without backed=1 the example says why it cannot run.
status=0
"$train" --device sim --data "$data" --dim 16 >"$tmp/unbacked.out" 2>&1 || status=$?
[ "$status" -eq 1 ] || fail "an unbacked sim device was accepted"
expect "$tmp/unbacked.out" "needs backed=1"

# Under gpukit run: the example's own metrics and the pool's and loader's automatic ones.
timeout 120 "$GPUKIT" run --interval 0.05 --out "$tmp/run.jsonl" -- "$train" --device host \
    "${common[@]}" --quiet >"$tmp/run.out" 2>"$tmp/run.err" || { cat "$tmp/run.err"; fail "gpukit run failed"; }
for m in train_loss train_step_time train_samples_per_second gpukit_alloc_reserved_bytes \
    gpukit_alloc_in_use_bytes "gpukit_loader_wait_seconds_total{device:host,loader:train}" \
    "gpukit_loader_batches_total{device:host,loader:train}"; do
    expect "$tmp/run.err" "^$m"
done
python3 - "$tmp/run.jsonl" <<'PY'
import json, sys
total = 0
for line in open(sys.argv[1]):
    r = json.loads(line)
    if r.get("type") == "metric" and r.get("name") == "gpukit_loader_batches_total":
        total += r["value"]
assert total == 117, total  # every batch the example consumed, counted by the loader itself
PY
echo "example_train: ok"
