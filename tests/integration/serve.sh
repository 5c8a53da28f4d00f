#!/usr/bin/env bash
# gpukit serve and gpukit sample end to end: the HTTP endpoint on a free loopback port (content
# types, OpenMetrics negotiation, /healthz, promtool lint when installed), the textfile mode, a
# clean stop on SIGTERM, and golden CSV/JSON sample lines through the fake NVML and a /proc
# fixture. Every wait is bounded.
set -euo pipefail

: "${GPUKIT:?GPUKIT must name the gpukit binary}"
: "${GK_SOURCE_DIR:?}"
: "${GK_TEST_FAKE_NVML:?}"
command -v curl >/dev/null || { echo "curl not installed: skipping"; exit 77; }

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT

fail() { echo "FAIL: $*" >&2; exit 1; }

# Waits (at most ~10 s) until a file contains a pattern.
wait_for() {
    local file=$1 pattern=$2
    for _ in $(seq 1 200); do
        grep -q -- "$pattern" "$file" 2>/dev/null && return 0
        sleep 0.05
    done
    fail "timed out waiting for '$pattern' in $file: $(cat "$file" 2>/dev/null)"
}

# Sends SIGTERM and waits (at most ~10 s) for a clean exit.
stop() {
    local pid=$1
    kill -TERM "$pid"
    for _ in $(seq 1 200); do
        if ! kill -0 "$pid" 2>/dev/null; then
            wait "$pid" || fail "gpukit serve exited with $?"
            return 0
        fi
        sleep 0.05
    done
    fail "gpukit serve did not stop on SIGTERM"
}

# --- HTTP, with the fake NVML so GPU series appear ------------------------------------------
GK_NVML_LIBRARY=$GK_TEST_FAKE_NVML "$GPUKIT" serve --listen 127.0.0.1:0 --interval 0.1 \
    2>"$tmp/serve.err" &
pids+=($!)
serve_pid=$!
wait_for "$tmp/serve.err" "serving http://127.0.0.1:"
port=$(sed -n 's|.*serving http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$tmp/serve.err")
[ -n "$port" ] || fail "no port in: $(cat "$tmp/serve.err")"
base="http://127.0.0.1:$port"

curl -sS --max-time 10 -D "$tmp/h1" -o "$tmp/m1" "$base/metrics"
grep -qi '^content-type: text/plain; version=0.0.4; charset=utf-8' "$tmp/h1" || fail "0.0.4 content type: $(cat "$tmp/h1")"
grep -q '^# TYPE gpukit_cpu_seconds_total counter$' "$tmp/m1" || fail "no cpu counter"
grep -q '^gpukit_gpu_power_watts{gpu="0",uuid="GPU-fake-0000"} 250.5$' "$tmp/m1" || fail "no GPU power"
grep -q '^gpukit_nvml_up 1$' "$tmp/m1" || fail "nvml_up"
grep -q '# EOF' "$tmp/m1" && fail "EOF in 0.0.4 output"

curl -sS --max-time 10 -D "$tmp/h2" -o "$tmp/m2" \
    -H 'Accept: application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5' "$base/metrics"
grep -qi '^content-type: application/openmetrics-text; version=1.0.0; charset=utf-8' "$tmp/h2" || fail "OpenMetrics content type"
[ "$(tail -n 1 "$tmp/m2")" = "# EOF" ] || fail "OpenMetrics must end with # EOF"

[ "$(curl -sS --max-time 10 "$base/healthz")" = "ok" ] || fail "healthz"
curl -sS --max-time 10 "$base/" | grep 'href="/metrics"' >/dev/null || fail "index page"
code=$(curl -sS --max-time 10 -o /dev/null -w '%{http_code}' "$base/nothing")
[ "$code" = 404 ] || fail "unknown path gave $code"

if command -v promtool >/dev/null; then
    promtool check metrics <"$tmp/m1" || fail "promtool check metrics"
fi
stop "$serve_pid"

# --- no driver: one clear line, host metrics still served -----------------------------------
GK_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1 "$GPUKIT" serve --listen 127.0.0.1:0 \
    --interval 0.1 2>"$tmp/nogpu.err" &
pids+=($!)
nogpu_pid=$!
wait_for "$tmp/nogpu.err" "serving http://127.0.0.1:"
[ "$(grep -c 'no NVIDIA driver' "$tmp/nogpu.err")" = 1 ] || fail "want one line about the driver: $(cat "$tmp/nogpu.err")"
port=$(sed -n 's|.*serving http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$tmp/nogpu.err")
curl -sS --max-time 10 "http://127.0.0.1:$port/metrics" | grep '^gpukit_nvml_up 0$' >/dev/null || fail "nvml_up 0"
stop "$nogpu_pid"

# --- textfile mode ---------------------------------------------------------------------------
"$GPUKIT" serve --textfile "$tmp/gpukit.prom" --interval 0.05 2>"$tmp/text.err" &
pids+=($!)
text_pid=$!
wait_for "$tmp/gpukit.prom" '^gpukit_memory_total_bytes '
stop "$text_pid"
ls "$tmp" | grep -q 'gpukit.prom.tmp' && fail "temporary textfile left behind"

# --- usage errors ----------------------------------------------------------------------------
set +e
"$GPUKIT" serve --listen nonsense 2>"$tmp/usage.err"; rc=$?
set -e
[ "$rc" = 2 ] || fail "bad --listen should exit 2, got $rc"
grep -q 'is not HOST:PORT' "$tmp/usage.err" || fail "bad --listen message"

# --- gpukit sample: golden CSV and JSON (timestamps removed) ----------------------------------
export GK_NVML_LIBRARY=$GK_TEST_FAKE_NVML GK_PROC_ROOT=$GK_SOURCE_DIR/tests/data/proc1
"$GPUKIT" sample --count 2 --interval 0.01 --csv | cut -d, -f2- >"$tmp/sample.csv"
diff -u "$GK_SOURCE_DIR/tests/data/sample_golden.csv" "$tmp/sample.csv" || fail "CSV differs"
"$GPUKIT" sample --count 1 --json | sed 's/"timestamp":"[^"]*"/"timestamp":"T"/' >"$tmp/sample.json"
diff -u "$GK_SOURCE_DIR/tests/data/sample_golden.json" "$tmp/sample.json" || fail "JSON differs"
GK_NVML_LIBRARY=/nonexistent.so "$GPUKIT" sample --count 1 --csv 2>"$tmp/s.err" | cut -d, -f2- >"$tmp/host.csv"
[ "$(wc -l <"$tmp/host.csv")" = 2 ] || fail "host-only sample: $(cat "$tmp/host.csv")"
grep -q 'no NVIDIA driver' "$tmp/s.err" || fail "host-only sample: no reason given"
echo "serve.sh: all checks passed"
