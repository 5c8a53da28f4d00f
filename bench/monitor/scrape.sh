#!/usr/bin/env bash
# Scrape cost of `gpukit serve`: median curl time_total over 200 scrapes of /metrics, the
# server's CPU time per scrape and its RSS, host-only (no GPU). Usage: scrape.sh PATH/TO/gpukit
set -euo pipefail
gpukit=${1:?usage: scrape.sh PATH/TO/gpukit}
tmp=$(mktemp -d)
"$gpukit" serve --listen 127.0.0.1:0 --interval 1s 2>"$tmp/err" &
pid=$!
trap 'kill $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do grep -q serving "$tmp/err" && break; sleep 0.05; done
port=$(sed -n 's|.*serving http://127.0.0.1:\([0-9]*\)/metrics.*|\1|p' "$tmp/err")
url="http://127.0.0.1:$port/metrics"
sleep 1.2 # let two ticks populate the registry
cpu0=$(awk '{print $14 + $15}' /proc/$pid/stat)
for _ in $(seq 1 200); do curl -s -o /dev/null -w '%{time_total}\n' "$url"; done >"$tmp/times"
cpu1=$(awk '{print $14 + $15}' /proc/$pid/stat)
tck=$(getconf CLK_TCK)
lines=$(curl -s "$url" | wc -l)
bytes=$(curl -s "$url" | wc -c)
median=$(sort -n "$tmp/times" | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}')
rss=$(awk '/VmRSS/ {print $2}' /proc/$pid/status)
echo "scrape of $lines lines ($bytes bytes), 200 scrapes with curl"
awk -v m="$median" 'BEGIN {printf "  median time_total        %8.3f ms\n", m * 1000}'
awk -v a="$cpu0" -v b="$cpu1" -v t="$tck" 'BEGIN {printf "  server CPU per scrape    %8.3f ms (includes 1 s sampling ticks)\n", (b - a) / t / 200 * 1000}'
echo "  server RSS               $((rss / 1024)) MiB ($rss KiB)"
