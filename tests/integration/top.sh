#!/usr/bin/env bash
# gpukit top: plain lines when stdout is not a terminal (host only, and with the fake NVML), the
# live view in a terminal (through tmux when installed), and usage errors.
set -euo pipefail
: "${GPUKIT:?}"
tmp=$(mktemp -d)
session="gktop$$"
cleanup() { tmux kill-session -t "$session" 2>/dev/null || true; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
expect() { grep -q -- "$2" "$1" || { echo "--- $1:"; cat "$1"; fail "expected \"$2\" in $1"; }; }

GK_NVML_LIBRARY=/nonexistent/libnvidia-ml.so.1 timeout 30 "$GPUKIT" top --count 3 --interval 0.1 >"$tmp/plain"
[ "$(grep -c ' cpu .* mem .* GiB load ' "$tmp/plain")" -eq 3 ] || { cat "$tmp/plain"; fail "3 plain lines expected"; }
[ "$(grep -c "GPU metrics off" "$tmp/plain")" -eq 1 ] || fail "GPU metrics off must be said once"

if [ -n "${GK_TEST_FAKE_NVML:-}" ] && [ -f "$GK_TEST_FAKE_NVML" ]; then
    GK_NVML_LIBRARY="$GK_TEST_FAKE_NVML" timeout 30 "$GPUKIT" top --count 2 --interval 0.1 >"$tmp/gpu"
    expect "$tmp/gpu" "| gpu0 util  50% mem 1.0/40.0 GiB 60C 250/400W sm 1410MHz"
    expect "$tmp/gpu" "| gpu1 util  51%"
    grep -q "GPU metrics off" "$tmp/gpu" && fail "GPU metrics are on with the fake NVML"

    if command -v tmux >/dev/null; then
        tmux new-session -d -s "$session" -x 120 -y 30 \
            "GK_NVML_LIBRARY='$GK_TEST_FAKE_NVML' '$GPUKIT' top --interval 0.1 --count 20; echo TOP-EXIT=\$?; sleep 30"
        for _ in $(seq 1 100); do
            tmux capture-pane -p -t "$session" >"$tmp/screen"
            grep -q "Fake GPU 1" "$tmp/screen" && break
            sleep 0.1
        done
        expect "$tmp/screen" "^gpukit top - every 0.1s"
        expect "$tmp/screen" "^0 Fake GPU 0 .* util \[|||||"
        expect "$tmp/screen" "GPU  PID      USER"
        expect "$tmp/screen" "^cpu \["
        expect "$tmp/screen" "^load "
        tmux send-keys -t "$session" q
        for _ in $(seq 1 100); do
            tmux capture-pane -p -t "$session" >"$tmp/screen"
            grep -q "TOP-EXIT=" "$tmp/screen" && break
            sleep 0.1
        done
        expect "$tmp/screen" "TOP-EXIT=0"
    fi
fi

s=0; "$GPUKIT" top --interval 0 2>"$tmp/err" || s=$?
[ "$s" -eq 2 ] || fail "bad interval: status $s"
expect "$tmp/err" '--interval: "0" is not a number of seconds from 0.1 to 60'
s=0; "$GPUKIT" top --count many 2>"$tmp/err" || s=$?
[ "$s" -eq 2 ] || fail "bad count: status $s"
"$GPUKIT" top --help | grep -q "usage: gpukit top"
echo "top: ok"
