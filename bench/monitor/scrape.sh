#!/usr/bin/env bash
# Scrape cost of `gpukit serve` against node_exporter (Debian prometheus-node-exporter, when
# installed) on the same host in the same run: median curl time_total over 200 scrapes of
# /metrics, the server's CPU time per scrape and its RSS. No GPU is involved.
# Usage: scrape.sh PATH/TO/gpukit
set -euo pipefail
gpukit=${1:?usage: scrape.sh PATH/TO/gpukit}
tmp=$(mktemp -d)
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done; rm -rf "$tmp"' EXIT

# measure NAME PID URL: prints one result line and sets $median_ms, $rss_kib.
measure() {
    local name=$1 pid=$2 url=$3
    sleep 1.2 # let the server settle (two gpukit ticks)
    curl -s -o /dev/null "$url"
    local cpu0 cpu1 tck lines
    cpu0=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    for _ in $(seq 1 200); do curl -s -o /dev/null -w '%{time_total}\n' "$url"; done >"$tmp/times"
    cpu1=$(awk '{print $14 + $15}' "/proc/$pid/stat")
    tck=$(getconf CLK_TCK)
    lines=$(curl -s "$url" | wc -l)
    median_ms=$(sort -n "$tmp/times" | awk '{a[NR]=$1} END {printf "%.3f", a[int((NR+1)/2)] * 1000}')
    rss_kib=$(awk '/VmRSS/ {print $2}' "/proc/$pid/status")
    cpu_ms=$(awk -v a="$cpu0" -v b="$cpu1" -v t="$tck" 'BEGIN {printf "%.3f", (b - a) / t / 200 * 1000}')
    printf "  %-14s %6d lines  median %7.3f ms  CPU/scrape %7.3f ms  RSS %6d KiB\n" "$name" \
        "$lines" "$median_ms" "$cpu_ms" "$rss_kib"
}

echo "200 scrapes of /metrics with curl (medians)"
"$gpukit" serve --listen 127.0.0.1:0 --interval 1s 2>"$tmp/err" &
pids+=($!)
gpid=$!
for _ in $(seq 1 100); do grep -q serving "$tmp/err" && break; sleep 0.05; done
port=$(sed -n 's|.*serving http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$tmp/err")
measure "gpukit serve" "$gpid" "http://127.0.0.1:$port/metrics"
g_ms=$median_ms g_rss=$rss_kib

if command -v prometheus-node-exporter >/dev/null; then
    nport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
    prometheus-node-exporter --web.listen-address="127.0.0.1:$nport" >"$tmp/node.log" 2>&1 &
    pids+=($!)
    npid=$!
    for _ in $(seq 1 100); do curl -s -o /dev/null "http://127.0.0.1:$nport/metrics" && break; sleep 0.05; done
    measure "node_exporter" "$npid" "http://127.0.0.1:$nport/metrics"
    awk -v g="$g_ms" -v n="$median_ms" -v gr="$g_rss" -v nr="$rss_kib" \
        'BEGIN {printf "  node_exporter / gpukit: scrape time %.1fx, RSS %.1fx\n", n / g, nr / gr}'
else
    echo "  node_exporter: not installed (Debian prometheus-node-exporter)"
fi
