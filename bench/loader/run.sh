#!/usr/bin/env bash
# Loader benchmark: `gpukit loader bench` over 64 B, 4 KiB and 1 MiB record files with 0, 1 and 2
# workers, shuffled, warm and cold page cache; each cell runs REPEAT times (default 3) and the
# median is printed, next to the single-core memcpy of the same bytes measured in the same run.
#
# A second table emulates a training step (the consumer spins STEP_US microseconds per batch,
# default 100) and reports the stall (the share of the run spent waiting in next()) and the median
# time of next(), which then mostly finds its batch ready.
#
# usage: bench/loader/run.sh [GPUKIT | BUILD_DIR] [SECONDS]   (default build/rel/gpukit)
# Files are written under $TMPDIR (448 MiB in all) and removed at the end.
set -euo pipefail
gpukit=${1:-build/rel/gpukit}
[ -d "$gpukit" ] && gpukit=$gpukit/gpukit
seconds=${2:-1}
repeat=${REPEAT:-3}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/gk-loader-bench.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

make_file() { # record size, records, path
    head -c $(($1 * $2)) /dev/urandom >"$tmp/raw"
    "$gpukit" data pack --record-size "$1" "$tmp/raw" "$3" >/dev/null
    rm -f "$tmp/raw"
}
make_file 64 1048576 "$tmp/r64.gkr"
make_file 4096 32768 "$tmp/r4k.gkr"
make_file 1048576 256 "$tmp/r1m.gkr"

echo "machine: $(lscpu | sed -n 's/^Model name: *//p'), $(nproc) CPUs, kernel $(uname -r)," \
    "THP $(sed 's/.*\[\(.*\)\].*/\1/' /sys/kernel/mm/transparent_hugepage/enabled)"
echo
echo "| records x batch | workers | cache | items/s | GB/s | us/batch | first batch ms | wait p50/p99 us | memcpy GB/s | % of memcpy |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for cell in "64 B x 256:r64.gkr:256" "4 KiB x 64:r4k.gkr:64" "1 MiB x 8:r1m.gkr:8"; do
    IFS=: read -r label file batch <<<"$cell"
    for cache in ${CACHES:-warm cold}; do
        for w in 0 1 2; do
            flag=""
            [ "$cache" = cold ] && flag="--cold"
            for i in $(seq "$repeat"); do
                "$gpukit" loader bench --file "$tmp/$file" --batch "$batch" --workers "$w" \
                    --shuffle $flag --seconds "$seconds" --json
            done >"$tmp/runs.jsonl"
            python3 - "$tmp/runs.jsonl" "$label" "$w" "$cache" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = lambda k: statistics.median(r[k] for r in runs)
ips = med("items_per_s")
ips = "%.2f M" % (ips / 1e6) if ips >= 1e6 else "%.1f k" % (ips / 1e3)
print("| %s | %s | %s | %s | %.2f | %.1f | %.2f | %.1f / %.1f | %.1f | %.0f%% |" % (
    sys.argv[2], sys.argv[3], sys.argv[4], ips,
    med("bytes_per_s") / 1e9, med("us_per_batch"), med("first_batch_s") * 1e3,
    med("wait_p50_us"), med("wait_p99_us"), med("memcpy_bytes_per_s") / 1e9,
    100 * med("ratio_to_memcpy")))
PY
        done
    done
done

step=${STEP_US:-100}
echo
echo "Consumer step of $step us per batch (warm cache, shuffled):"
echo
echo "| records x batch | workers | step us | stall | next() p50 us | us/batch |"
echo "|---|---|---|---|---|---|"
for cell in "64 B x 256:r64.gkr:256" "4 KiB x 64:r4k.gkr:64" "1 MiB x 8:r1m.gkr:8"; do
    IFS=: read -r label file batch <<<"$cell"
    for w in 0 1 2; do
        for i in $(seq "$repeat"); do
            "$gpukit" loader bench --file "$tmp/$file" --batch "$batch" --workers "$w" --shuffle \
                --seconds "$seconds" --step-us "$step" --json
        done >"$tmp/runs.jsonl"
        python3 - "$tmp/runs.jsonl" "$label" "$w" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
med = lambda k: statistics.median(r[k] for r in runs)
print("| %s | %s | %.0f | %.1f%% | %.2f | %.1f |" % (sys.argv[2], sys.argv[3], med("step_us"),
      100 * med("stall"), med("wait_p50_us"), med("us_per_batch")))
PY
    done
done

echo
py=""
for cand in python3 /usr/bin/python3; do
    if "$cand" -c "import torch, numpy" 2>/dev/null; then
        py=$cand
        break
    fi
done
if [ -n "$py" ]; then
    echo "PyTorch DataLoader on the same files (bench/loader/torch_compare.py):"
    echo
    "$py" "$(dirname "$0")/torch_compare.py" "$gpukit" "$seconds"
else
    echo "PyTorch comparison skipped: python3-torch and python3-numpy are not installed" \
        "(scripts/deps.sh bench installs them)"
fi
