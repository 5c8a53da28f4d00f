#!/usr/bin/env bash
# A real Prometheus server (Debian package prometheus) on loopback scrapes two `gpukit serve`
# instances; through its HTTP API both targets must be up and a gpukit series queryable from
# both. Skipped when prometheus or curl is absent. Every wait is bounded.
set -euo pipefail
: "${GPUKIT:?GPUKIT must name the gpukit binary}"
command -v prometheus >/dev/null || { echo "prometheus not installed: skipping"; exit 77; }
command -v curl >/dev/null || { echo "curl not installed: skipping"; exit 77; }
command -v python3 >/dev/null || { echo "python3 not installed: skipping"; exit 77; }

tmp=$(mktemp -d)
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
    sleep 0.2
    for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

ports=()
for i in 1 2; do
    GK_NVML_LIBRARY=/nonexistent.so "$GPUKIT" serve --listen 127.0.0.1:0 --interval 0.5 \
        2>"$tmp/serve$i.err" &
    pids+=($!)
    for _ in $(seq 1 200); do grep -q 'serving http' "$tmp/serve$i.err" && break; sleep 0.05; done
    port=$(sed -n 's|.*serving http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$tmp/serve$i.err")
    [ -n "$port" ] || fail "gpukit serve $i did not start: $(cat "$tmp/serve$i.err")"
    ports+=("$port")
done

cat >"$tmp/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: gpukit
    static_configs:
      - targets: ['127.0.0.1:${ports[0]}', '127.0.0.1:${ports[1]}']
EOF
pport=$(free_port)
prometheus --config.file="$tmp/prometheus.yml" --storage.tsdb.path="$tmp/data" \
    --web.listen-address="127.0.0.1:$pport" >"$tmp/prom.log" 2>&1 &
pids+=($!)
api="http://127.0.0.1:$pport/api/v1"

# Both targets up (at most ~30 s).
up=0
for _ in $(seq 1 150); do
    up=$(curl -s --max-time 2 "$api/targets" | grep -o '"health":"up"' | wc -l || true)
    [ "$up" -ge 2 ] && break
    sleep 0.2
done
[ "$up" -ge 2 ] || fail "targets not up: $(curl -s --max-time 2 "$api/targets")"

# A gpukit series from both instances.
n=0
for _ in $(seq 1 50); do
    n=$(curl -s --max-time 2 "$api/query?query=gpukit_memory_total_bytes" | grep -o '"instance"' | wc -l || true)
    [ "$n" -ge 2 ] && break
    sleep 0.2
done
[ "$n" -ge 2 ] || fail "gpukit_memory_total_bytes not queryable from both targets"
curl -s --max-time 2 "$api/query?query=gpukit_nvml_up" | grep '"value":\[[0-9.]*,"0"\]' >/dev/null ||
    fail "gpukit_nvml_up should be 0 without a driver"
echo "prometheus.sh: both targets up and queryable"
