#!/usr/bin/env bash
# gpukit run with GPUs (the fake NVML: two devices at 50%/51% utilization, 1/2 GiB of 40 GiB,
# 60/61 C, 250.5 W, two processes each): GPU series, energy, per-process peaks and the GPU
# rules in the report; --alert rules firing, recorded and reported; a bad rule refused before
# anything starts. Without a driver, GPU metrics are off and the report says why.
set -euo pipefail
: "${GPUKIT:?}" "${GK_SOURCE_DIR:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }
workload="$GK_SOURCE_DIR/tests/support/run_workload.py"

GK_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1 timeout 60 "$GPUKIT" run --out "$tmp/off.jsonl" -- \
    python3 "$workload" --steps 2 2>"$tmp/off.err"
expect "$tmp/off.err" "GPU metrics off: .*/nonexistent/libnvidia-ml.so.1"
# said once, also when alert rules run a monitor beside the sampler
GK_LOG=warn GK_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1 "$GPUKIT" run --alert 'gpukit_process_tree_threads > 9999' \
    -- true 2>"$tmp/once.err"
[ "$(grep -c "libnvidia-ml.so.1" "$tmp/once.err")" -eq 1 ] || { cat "$tmp/once.err"; fail "the missing driver must be named once"; }
"$GPUKIT" run --no-gpu -- true 2>"$tmp/nogpu.err"
expect "$tmp/nogpu.err" "GPU metrics off: turned off (--no-gpu)"

if [ -z "${GK_TEST_FAKE_NVML:-}" ] || [ ! -f "$GK_TEST_FAKE_NVML" ]; then
    echo "skipped: no fake NVML"
    exit 77
fi
export GK_NVML_LIBRARY="$GK_TEST_FAKE_NVML"

timeout 60 "$GPUKIT" run --interval 0.05 --out "$tmp/gpu.jsonl" \
    --alert 'gpu_warm: gpukit_gpu_temperature_celsius > 55' \
    --alert 'gpukit_gpu_temperature_celsius > 99 for 1h' -- \
    python3 "$workload" --burn 0.4 --steps 5 2>"$tmp/gpu.err"
expect "$tmp/gpu.err" "GPU metrics on (2 devices)"
expect "$tmp/gpu.err" '^gpukit_gpu_utilization_ratio{gpu="0"} .* 50.0%'
expect "$tmp/gpu.err" "^GPU energy: "
expect "$tmp/gpu.err" "peak GPU memory per process:"
expect "$tmp/gpu.err" 'gpu_warm{gpu="0",uuid="GPU-fake-0000"} firing (value 60)'
expect "$tmp/gpu.err" 'gpu_warm{gpu="1",uuid="GPU-fake-0001"} firing (value 61)'
grep -q "alert_2" "$tmp/gpu.err" && fail "a rule that never held fired"
"$GPUKIT" report "$tmp/gpu.jsonl" --json >"$tmp/gpu.json"
python3 - "$tmp/gpu.jsonl" "$tmp/gpu.json" <<'PY'
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
meta = recs[0]
assert meta["gpu"]["enabled"] is True and len(meta["devices"]) == 2, meta
assert meta["devices"][0]["memory_total_bytes"] == 40 << 30, meta["devices"]
d = json.load(open(sys.argv[2]))
s = {x["name"]: x for x in d["series"]}
assert abs(s['gpukit_gpu_utilization_ratio{gpu="0"}']["p50"] - 0.50) < 1e-9
assert abs(s['gpukit_gpu_memory_used_ratio{gpu="1"}']["max"] - 0.05) < 1e-9
assert abs(s['gpukit_gpu_power_watts{gpu="0"}']["mean"] - 250.5) < 1e-9
assert s['gpukit_gpu_process_memory_used_bytes{gpu="0",pid="1001"}']["max"] == 2 << 20
# one set of names: the recording has no dotted names left
assert not [n for n in s if n.startswith(("gpu.", "host.", "tree."))], list(s)
span = max(r["t"] for r in recs if r["type"] == "sample") - min(r["t"] for r in recs if r["type"] == "sample")
assert abs(d["gpu_energy_joules"] - 2 * 250.5 * span) < 1.0, (d["gpu_energy_joules"], span)
fired = [a for a in d["alerts"] if a["state"] == "firing"]
assert {a["name"] for a in fired} == {"gpu_warm"} and len(fired) == 2, d["alerts"]
PY

s=0; "$GPUKIT" run --alert 'gpukit_gpu_temperature_celsius >> 5' -- touch "$tmp/started" 2>"$tmp/bad.err" || s=$?
[ "$s" -eq 2 ] || fail "bad alert rule: status $s"
expect "$tmp/bad.err" '--alert "gpukit_gpu_temperature_celsius >> 5"'
[ ! -e "$tmp/started" ] || fail "the command ran despite a bad alert rule"
echo "run_gpu: ok"
