#!/usr/bin/env bash
# gpukit info end to end: text and JSON, without a driver and with the fake one, and the errors
# users see for a bad spec, a bad setting and a missing library.
set -euo pipefail
: "${GPUKIT:?}"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -qE -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }

# No driver: exit 0, and say so plainly with the reason.
GK_CUDA_LIBRARY=/nonexistent/libcuda.so.1 "$GPUKIT" info >"$tmp/out" 2>"$tmp/err"
expect "$tmp/out" "cuda   unavailable: .*/nonexistent/libcuda.so.1"
expect "$tmp/out" "no NVIDIA driver or GPU was found"
expect "$tmp/out" "^host:"
expect "$tmp/out" "cpu .* cores"
[ ! -s "$tmp/err" ] || fail "info wrote to stderr: $(cat "$tmp/err")"

GK_CUDA_LIBRARY=/nonexistent/libcuda.so.1 "$GPUKIT" info --json >"$tmp/json"
python3 - "$tmp/json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["backends"]["cuda"]["usable"] is False, d
assert "nonexistent" in d["backends"]["cuda"]["reason"], d
assert d["devices"] == [], d
assert d["host"]["cores"] >= 1 and d["host"]["memory_total_bytes"] > 0, d
PY

# One device by spec.
"$GPUKIT" info --device host >"$tmp/out"
expect "$tmp/out" "host: "
expect "$tmp/out" "memory .* total"
"$GPUKIT" info --device host --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["devices"][0]["backend"]=="host", d'

# With the fake driver the cuda backend answers.
if [ -n "${GK_TEST_FAKE_CUDA:-}" ] && [ -f "$GK_TEST_FAKE_CUDA" ]; then
    if GK_CUDA_LIBRARY="$GK_TEST_FAKE_CUDA" "$GPUKIT" info --json >"$tmp/fake.json" 2>/dev/null &&
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); sys.exit(0 if d["backends"]["cuda"]["usable"] else 3)' "$tmp/fake.json"; then
        python3 - "$tmp/fake.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
devs = [x for x in d["devices"] if x["backend"] == "cuda"]
assert devs and devs[0]["spec"] == "cuda:0" and devs[0]["total_memory_bytes"] > 0, d
PY
        GK_CUDA_LIBRARY="$GK_TEST_FAKE_CUDA" "$GPUKIT" info >"$tmp/fake.txt"
        expect "$tmp/fake.txt" "cuda   usable"
        expect "$tmp/fake.txt" "cuda:0: "
    fi
fi

# NVML: unavailable with its reason, or live values per GPU (a metric the GPU lacks is null).
GK_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1 "$GPUKIT" info >"$tmp/out"
expect "$tmp/out" "nvml   unavailable: no NVIDIA driver: .*GPU metrics are off"
if [ -n "${GK_TEST_FAKE_NVML:-}" ] && [ -f "$GK_TEST_FAKE_NVML" ]; then
    GK_NVML_LIBRARY="$GK_TEST_FAKE_NVML" "$GPUKIT" info >"$tmp/nvml.txt"
    expect "$tmp/nvml.txt" "nvml   usable \(driver [0-9.]+, [0-9]+ GPUs?\): GPU metrics are on"
    expect "$tmp/nvml.txt" "^gpus \(live, through NVML\):"
    expect "$tmp/nvml.txt" "^  gpu 0: .*GPU-"
    expect "$tmp/nvml.txt" "    memory   .* used of "
    expect "$tmp/nvml.txt" "    power    [0-9]+ W"
    GK_NVML_LIBRARY="$GK_TEST_FAKE_NVML" "$GPUKIT" info --json >"$tmp/nvml.json"
    python3 - "$tmp/nvml.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["backends"]["nvml"]["usable"] is True, d
g = d["gpus"][0]
assert g["uuid"].startswith("GPU-") and g["memory_total_bytes"] > 0, g
assert 0 <= g["utilization_gpu_ratio"] <= 1 and g["temperature_celsius"] > 0, g
PY
fi

# Errors: one line naming the thing and the fix, non-zero exit.
if "$GPUKIT" info --device tpu:0 2>"$tmp/err"; then fail "bad spec accepted"; fi
[ "$(wc -l <"$tmp/err")" -eq 1 ] || fail "expected one error line: $(cat "$tmp/err")"
expect "$tmp/err" 'unknown backend "tpu".*try auto, host, cuda:0'
if "$GPUKIT" info --device "sim:capacity=12Q" 2>"$tmp/err"; then fail "bad size accepted"; fi
expect "$tmp/err" "12Q"
if GK_SYNC_TIMEOUT=soon "$GPUKIT" info 2>"$tmp/err"; then fail "bad GK_SYNC_TIMEOUT accepted"; fi
expect "$tmp/err" 'GK_SYNC_TIMEOUT: "soon" is not a duration \(try 30s or 500ms\)'
if "$GPUKIT" info --device cuda:0 --cuda-library x 2>"$tmp/err"; then fail "unknown option accepted"; fi
expect "$tmp/err" 'unknown option "--cuda-library"'
if "$GPUKIT" --cuda-library /nonexistent/libcuda.so.1 info --device cuda:0 2>"$tmp/err"; then
    fail "missing library accepted"
fi
expect "$tmp/err" "/nonexistent/libcuda.so.1"
if "$GPUKIT" frobnicate 2>"$tmp/err"; then fail "unknown command accepted"; fi
expect "$tmp/err" 'unknown command "frobnicate"'

# Settings, help and version.
"$GPUKIT" --sync-timeout 2s info --settings >"$tmp/out"
expect "$tmp/out" "sync.timeout +GK_SYNC_TIMEOUT +--sync-timeout +2 "
"$GPUKIT" info --settings --json | python3 -c 'import json,sys; assert any(r["env"]=="GK_DEVICE" for r in json.load(sys.stdin))'
"$GPUKIT" --help | grep -q "^  info "
"$GPUKIT" info --help | grep -q "usage: gpukit info"
"$GPUKIT" --version | grep -Eq "^gpukit [0-9]+\.[0-9]+\.[0-9]+$"
"$GPUKIT" info --version | grep -Eq "^gpukit [0-9]+\.[0-9]+\.[0-9]+$"
echo "info: ok"
